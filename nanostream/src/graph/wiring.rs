//! The slots through which a node finds its edges when it starts: filled by
//! the builder as it creates the edges, emptied by the node's task (or, for
//! a fused node, by the stage it becomes).

use std::sync::{Arc, Mutex, PoisonError};

use crate::edge::channel::{ChunkCloner, DEFAULT_CHUNK_SIZE, EdgeReceiver, EdgeSender};
use crate::edge::emitter::Stage;
use crate::edge::routing::Policy;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sending side of a node as it is wired.
pub(crate) struct PortSpec<T> {
    /// Each edge with the split output it belongs to (0 when not split).
    pub(crate) edges: Vec<(usize, EdgeSender<T>)>,
    pub(crate) cloner: Option<ChunkCloner<T>>,
    pub(crate) policy: Policy<T>,
    /// The node this output is fused with, once that node has started.
    pub(crate) fused: Option<Box<dyn Stage<T>>>,
    /// The chunk size of a fused output.
    pub(crate) chunk_size: usize,
}

impl<T> Default for PortSpec<T> {
    fn default() -> Self {
        Self { edges: Vec::new(), cloner: None, policy: Policy::Broadcast, fused: None, chunk_size: DEFAULT_CHUNK_SIZE }
    }
}

/// The receiving side of a node as it is wired.
pub(crate) struct InputSpec<T> {
    pub(crate) receivers: Vec<EdgeReceiver<T>>,
    /// Set when the node is fused with the node before it: that node's
    /// output, where the node's stage goes.
    pub(crate) fused_from: Option<SharedPort<T>>,
}

impl<T> Default for InputSpec<T> {
    fn default() -> Self {
        Self { receivers: Vec::new(), fused_from: None }
    }
}

pub(crate) type SharedPort<T> = Arc<Mutex<PortSpec<T>>>;

/// The parts of an output shared by several readers (`parallel`): one queue
/// they all take from, made when the first of their edges is.
pub(crate) struct SharedSplit<T> {
    pub(crate) readers: usize,
    pub(crate) receivers: Mutex<Option<Vec<EdgeReceiver<T>>>>,
}
pub(crate) type SharedInputs<T> = Arc<Mutex<InputSpec<T>>>;

pub(crate) fn take_port<T>(port: &SharedPort<T>) -> PortSpec<T> {
    std::mem::take(&mut *lock(port))
}

pub(crate) fn take_inputs<T>(inputs: &SharedInputs<T>) -> InputSpec<T> {
    std::mem::take(&mut *lock(inputs))
}

/// Puts a fused node's stage where the node before it will find it.
pub(crate) fn fuse_into<T>(port: &SharedPort<T>, stage: Box<dyn Stage<T>>) {
    lock(port).fused = Some(stage);
}
