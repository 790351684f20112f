use std::sync::atomic::AtomicU64;

/// Counters one node updates once per chunk.
#[derive(Debug, Default)]
pub(crate) struct NodeStats {
    pub(crate) received: AtomicU64,
    pub(crate) sent: AtomicU64,
}
