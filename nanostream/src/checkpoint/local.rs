//! [`LocalStore`]: checkpoints in an embedded database file (redb).

use std::path::Path;
use std::sync::Arc;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use redb::{Database, ReadableDatabase as _, TableDefinition};

use super::{Checkpoint, CheckpointStore, StoreError};

const CHECKPOINTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("nanostream_checkpoints");

/// Keeps checkpoints in one file on the local disk, for jobs that run in
/// one process: an embedded, transactional key-value store
/// ([redb](https://docs.rs/redb)), written with a durable commit per
/// checkpoint, so a checkpoint that was saved survives a crash of the
/// process or the machine. Processes that share partitions (a consumer
/// group over several machines) need a store they can all reach instead.
///
/// # Examples
///
/// ```
/// use nanostream::checkpoint::{Checkpoint, CheckpointStore, LocalStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("nanostream-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let store = LocalStore::open(dir.join("checkpoints.redb"))?;
/// let mut checkpoint = Checkpoint::new(7);
/// checkpoint.parts.insert("count".into(), vec![1, 2, 3]);
/// store.save("orders/0", &checkpoint).await?;
/// assert_eq!(store.load("orders/0").await?, Some(checkpoint));
/// assert_eq!(store.load("orders/1").await?, None);
/// # drop(store);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LocalStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore").finish_non_exhaustive()
    }
}

impl LocalStore {
    /// Opens the store in `path`, creating the file if it does not exist.
    ///
    /// # Errors
    ///
    /// The file cannot be created or opened (another process holds it
    /// open, or it is not a store).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let db = Database::create(path.as_ref()).map_err(|error| StoreError::Io(error.into()))?;
        Ok(Self { db: Arc::new(db) })
    }
}

fn io(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Io(Box::new(error.into()))
}

impl CheckpointStore for LocalStore {
    fn save<'a>(&'a self, scope: &'a str, checkpoint: &'a Checkpoint) -> BoxFuture<'a, Result<(), StoreError>> {
        let (db, scope, bytes) = (self.db.clone(), scope.to_owned(), checkpoint.encode());
        blocking(move || {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut table = tx.open_table(CHECKPOINTS).map_err(io)?;
                table.insert(scope.as_str(), bytes.as_slice()).map_err(io)?;
            }
            tx.commit().map_err(io)
        })
        .boxed()
    }

    fn load<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<Option<Checkpoint>, StoreError>> {
        let (db, scope) = (self.db.clone(), scope.to_owned());
        blocking(move || {
            let tx = db.begin_read().map_err(io)?;
            let table = match tx.open_table(CHECKPOINTS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(error) => return Err(io(error)),
            };
            match table.get(scope.as_str()).map_err(io)? {
                Some(bytes) => Checkpoint::decode(&scope, bytes.value()).map(Some),
                None => Ok(None),
            }
        })
        .boxed()
    }
}

/// Runs a blocking store call on Tokio's blocking pool.
async fn blocking<R: Send + 'static>(
    call: impl FnOnce() -> Result<R, StoreError> + Send + 'static,
) -> Result<R, StoreError> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(StoreError::Io("the runtime is shutting down".into())),
    }
}
