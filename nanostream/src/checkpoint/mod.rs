//! Checkpoints: the state of a pipeline's stateful nodes and its sources'
//! positions at one consistent cut, and where they are kept.
//!
//! This module holds what does not depend on how the cut is taken: the
//! [`Checkpoint`] value, the [`CheckpointStore`] trait, the versioned
//! encoding of one node's state ([`encode_state`], [`decode_state`]), and
//! with the `redb` feature an embedded store for single-process jobs
//! ([`LocalStore`]).
//!
//! A node's state is encoded with serde and bincode inside an envelope
//! that names the state's type and a version its node declares: a
//! checkpoint written by an older build whose state type changed fails to
//! restore with [`StateError::Changed`] naming both, instead of decoding
//! into garbage.

use std::collections::BTreeMap;
use std::fmt;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[cfg(feature = "redb")]
mod local;
#[cfg(feature = "redb")]
pub use local::LocalStore;

/// One consistent cut of a pipeline: every stateful node's state and every
/// source's position, each encoded by its owner, under the node's name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Checkpoint {
    /// Grows by one with every checkpoint of a scope.
    pub id: u64,
    /// Each part's bytes, by node name.
    pub parts: BTreeMap<String, Vec<u8>>,
}

/// What starts an encoded checkpoint: "nanostream checkpoint".
const CHECKPOINT_MAGIC: &[u8; 4] = b"NSCP";

impl Checkpoint {
    /// An empty checkpoint numbered `id`.
    pub fn new(id: u64) -> Self {
        Self { id, parts: BTreeMap::new() }
    }

    /// The checkpoint as bytes, for a store that keeps bytes: a header with
    /// a format version, the id, each part's name and bytes, and a CRC-32
    /// of it all.
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self.parts.iter().map(|(name, part)| 16 + name.len() + part.len()).sum();
        let mut bytes = Vec::with_capacity(18 + size);
        bytes.extend_from_slice(CHECKPOINT_MAGIC);
        bytes.extend_from_slice(&FORMAT.to_le_bytes());
        bytes.extend_from_slice(&self.id.to_le_bytes());
        bytes.extend_from_slice(&(self.parts.len() as u64).to_le_bytes());
        for (name, part) in &self.parts {
            bytes.extend_from_slice(&(name.len() as u64).to_le_bytes());
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
            bytes.extend_from_slice(part);
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Reads what [`encode`](Self::encode) wrote (for `scope`, which the
    /// error names).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unreadable`] if the bytes are not an encoded
    /// checkpoint of this format.
    pub fn decode(scope: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        let unreadable = |reason: &str| StoreError::Unreadable { scope: scope.to_owned(), reason: reason.to_owned() };
        let bytes = checked(bytes).ok_or_else(|| unreadable("damaged: its checksum does not match"))?;
        let rest = bytes.strip_prefix(CHECKPOINT_MAGIC.as_slice()).ok_or_else(|| unreadable("not a checkpoint"))?;
        let (format, rest) = split_u16(rest).ok_or_else(|| unreadable("cut short"))?;
        if format != FORMAT {
            return Err(unreadable(&format!("format {format}, this build reads {FORMAT}")));
        }
        let (id, rest) = split_u64(rest).ok_or_else(|| unreadable("cut short"))?;
        let (count, mut rest) = split_u64(rest).ok_or_else(|| unreadable("cut short"))?;
        let mut parts = BTreeMap::new();
        for _ in 0..count {
            let (name, after) = split_bytes(rest).ok_or_else(|| unreadable("cut short"))?;
            let (part, after) = split_bytes(after).ok_or_else(|| unreadable("cut short"))?;
            let name = std::str::from_utf8(name).map_err(|_| unreadable("a part name is not UTF-8"))?;
            parts.insert(name.to_owned(), part.to_vec());
            rest = after;
        }
        if !rest.is_empty() {
            return Err(unreadable("bytes left over"));
        }
        Ok(Self { id, parts })
    }
}

/// Keeps checkpoints in memory: for tests, and for jobs that only need
/// state to survive a pipeline restarted in the same process.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    checkpoints: std::sync::Arc<std::sync::Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl CheckpointStore for MemoryStore {
    fn save<'a>(&'a self, scope: &'a str, checkpoint: &'a Checkpoint) -> BoxFuture<'a, Result<(), StoreError>> {
        let bytes = checkpoint.encode();
        self.checkpoints.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(scope.to_owned(), bytes);
        Box::pin(async { Ok(()) })
    }

    fn load<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<Option<Checkpoint>, StoreError>> {
        let bytes = self.checkpoints.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(scope).cloned();
        Box::pin(async move { bytes.map(|bytes| Checkpoint::decode(scope, &bytes)).transpose() })
    }
}

/// Where checkpoints are kept, by scope (a pipeline: one job, or one Kafka
/// partition's pipeline, which moves between processes with its
/// partition). A store keeps the latest complete checkpoint of each scope;
/// saving one replaces the previous atomically, so a reader sees one or the
/// other, never a mix.
pub trait CheckpointStore: Send + Sync + 'static {
    /// Saves `checkpoint` as the latest of `scope`.
    fn save<'a>(&'a self, scope: &'a str, checkpoint: &'a Checkpoint) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The latest checkpoint of `scope`, if there is one.
    fn load<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<Option<Checkpoint>, StoreError>>;
}

/// A store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be read or written.
    #[error("the checkpoint store failed: {0}")]
    Io(#[source] crate::error::BoxError),
    /// What the store holds for the scope is not a checkpoint this version
    /// of nanostream can read.
    #[error("the checkpoint of `{scope}` cannot be read: {reason}")]
    Unreadable {
        /// The scope.
        scope: String,
        /// Why.
        reason: String,
    },
}

/// What starts an encoded state: "nanostream state".
const MAGIC: &[u8; 4] = b"NSST";
/// The envelope's own layout version.
const FORMAT: u16 = 1;

/// Encodes one node's state: an envelope naming its type and the version
/// its node declares, the state in bincode, and a CRC-32 of it all.
///
/// # Errors
///
/// The state does not serialize.
pub fn encode_state<S: Serialize>(state: &S, version: u32) -> Result<Vec<u8>, StateError> {
    let type_name = std::any::type_name::<S>();
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT.to_le_bytes());
    bytes.extend_from_slice(&version.to_le_bytes());
    let name_len = u16::try_from(type_name.len()).unwrap_or(u16::MAX);
    bytes.extend_from_slice(&name_len.to_le_bytes());
    bytes.extend_from_slice(&type_name.as_bytes()[..usize::from(name_len)]);
    bincode::serde::encode_into_std_write(state, &mut bytes, bincode::config::standard())
        .map_err(|error| StateError::Encode { type_name, reason: error.to_string() })?;
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// The bytes before a trailing CRC-32 of them, if it matches.
fn checked(bytes: &[u8]) -> Option<&[u8]> {
    let (body, crc) = bytes.split_last_chunk::<4>()?;
    (crc32fast::hash(body) == u32::from_le_bytes(*crc)).then_some(body)
}

/// Decodes what [`encode_state`] wrote, for node `node`, checking that it
/// was written for the same type and version.
///
/// # Errors
///
/// [`StateError::Changed`] if the type or version differ,
/// [`StateError::Corrupt`] if the bytes are not an encoded state or do not
/// decode in full.
pub fn decode_state<S: DeserializeOwned>(node: &str, bytes: &[u8], version: u32) -> Result<S, StateError> {
    let corrupt = |reason: &str| StateError::Corrupt { node: node.to_owned(), reason: reason.to_owned() };
    let bytes = checked(bytes).ok_or_else(|| corrupt("damaged: its checksum does not match"))?;
    let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(|| corrupt("not a nanostream state"))?;
    let (format, rest) = split_u16(rest).ok_or_else(|| corrupt("cut short"))?;
    if format != FORMAT {
        return Err(corrupt(&format!("envelope format {format}, this build reads {FORMAT}")));
    }
    let (stored_version, rest) = split_u32(rest).ok_or_else(|| corrupt("cut short"))?;
    let (name_len, rest) = split_u16(rest).ok_or_else(|| corrupt("cut short"))?;
    let (name, payload) = rest.split_at_checked(usize::from(name_len)).ok_or_else(|| corrupt("cut short"))?;
    let stored_type = String::from_utf8_lossy(name).into_owned();
    let expected_type = std::any::type_name::<S>();
    if stored_type != expected_type || stored_version != version {
        return Err(StateError::Changed {
            node: node.to_owned(),
            stored_type,
            stored_version,
            expected_type,
            expected_version: version,
        });
    }
    let (state, read) = bincode::serde::decode_from_slice(payload, bincode::config::standard())
        .map_err(|error| corrupt(&format!("{error}; was the state type changed without changing its version?")))?;
    if read != payload.len() {
        return Err(corrupt(&format!(
            "{} bytes left over; was the state type changed without changing its version?",
            payload.len() - read
        )));
    }
    Ok(state)
}

fn split_u16(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<2>()?;
    Some((u16::from_le_bytes(*head), rest))
}

fn split_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*head), rest))
}

/// A length (u64) and that many bytes.
fn split_bytes(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = split_u64(bytes)?;
    rest.split_at_checked(usize::try_from(len).ok()?)
}

fn split_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), rest))
}

/// A node's state could not be encoded or restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The checkpoint was written for another state type or version: the
    /// node's state type changed since. Start from an empty state (a new
    /// consumer group, or the old checkpoints deleted) or keep the old
    /// type.
    #[error(
        "the checkpoint of node `{node}` holds state of type `{stored_type}` version {stored_version}, \
         but the node now keeps `{expected_type}` version {expected_version}"
    )]
    Changed {
        /// The node.
        node: String,
        /// The type the checkpoint was written for.
        stored_type: String,
        /// The version it was written with.
        stored_version: u32,
        /// The node's state type now.
        expected_type: &'static str,
        /// The node's version now.
        expected_version: u32,
    },
    /// The bytes are not a state this build can read.
    #[error("the checkpoint of node `{node}` cannot be decoded: {reason}")]
    Corrupt {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// A state did not serialize.
    #[error("a state of type `{type_name}` does not serialize: {reason}")]
    Encode {
        /// Its type.
        type_name: &'static str,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "checkpoint {} ({} parts)", self.id, self.parts.len())
    }
}
