//! Keeping librdkafka's blocking calls off the async workers.
//!
//! A synchronous commit waits for the broker, and dropping a consumer or a
//! producer leaves the group or flushes for up to seconds. On a Tokio
//! worker that stalls every task scheduled there, and on the
//! current-thread runtime the README recommends, the whole pipeline. These
//! calls run on Tokio's blocking pool instead.

use std::ops::Deref;

/// A librdkafka client whose drop blocks: dropped on the blocking pool.
pub(crate) struct OffWorker<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> OffWorker<T> {
    pub(crate) fn new(client: T) -> Self {
        Self(Some(client))
    }
}

impl<T: Send + 'static> Deref for OffWorker<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // Taken only in `drop`.
        self.0.as_ref().expect("an OffWorker holds its client until dropped")
    }
}

impl<T: Send + 'static> Drop for OffWorker<T> {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            // If the runtime is shutting down, the pool drops it right here.
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(client))),
            Err(_) => drop(client),
        }
    }
}

/// Runs a blocking librdkafka call on the blocking pool and waits for it.
/// `None` if the runtime is shutting down and the call did not run.
pub(crate) async fn blocking<R, F>(call: F) -> Option<R>
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => Some(result),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => None,
    }
}
