//! The transport between nodes: bounded channels that carry chunks of items.
//!
//! An edge with capacity `c` and chunk limit `e = min(chunk_size, c)` is a
//! tokio mpsc channel of `c / e` chunk slots, each chunk holding at most `e`
//! items, so at most `c` items wait in the queue. The sending node may hold
//! one more chunk it is trying to send and the receiving node one chunk it is
//! working through, which gives the documented bound of `c + 2e` items per
//! edge.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// Acknowledgements owed by items in flight.
///
/// An `Acks` value holds keep-alive guards. The runtime attaches the guards
/// of every input to what a node derives from it (copies for fan-out and
/// for every chunk sent while the input is being processed), and drops them
/// once every derived item has reached a terminal state: consumed by a
/// sink, filtered out, skipped, or folded into state whose result has been
/// sent. Dropping the last copy of a guard runs its `Drop`: that is how a
/// source learns that a record is done (for example to commit a Kafka
/// offset).
///
/// Pipelines that do not use acknowledgements never see this type; its
/// empty value costs nothing.
///
/// # Examples
///
/// ```
/// use nanostream::Acks;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
///
/// struct Done(Arc<AtomicBool>);
/// impl Drop for Done {
///     fn drop(&mut self) {
///         self.0.store(true, Ordering::SeqCst);
///     }
/// }
///
/// let done = Arc::new(AtomicBool::new(false));
/// let acks = Acks::new(Done(done.clone()));
/// let copy = acks.clone();
/// drop(acks);
/// assert!(!done.load(Ordering::SeqCst), "a copy is still in flight");
/// drop(copy);
/// assert!(done.load(Ordering::SeqCst));
/// ```
#[derive(Clone, Default)]
pub struct Acks(Vec<Arc<dyn Any + Send + Sync>>);

impl Acks {
    /// Acknowledgements held by `guard`: dropped when the last copy is.
    pub fn new<G: Send + Sync + 'static>(guard: G) -> Self {
        Self(vec![Arc::new(guard)])
    }

    /// Whether there is nothing to acknowledge.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `other`'s guards to these.
    pub fn merge(&mut self, mut other: Acks) {
        self.append(&mut other);
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    pub(crate) fn extend_from(&mut self, other: &Acks) {
        self.0.extend(other.0.iter().cloned());
    }

    pub(crate) fn append(&mut self, other: &mut Acks) {
        if self.0.is_empty() {
            std::mem::swap(&mut self.0, &mut other.0);
        } else {
            self.0.append(&mut other.0);
        }
    }
}

impl std::fmt::Debug for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Acks({})", self.0.len())
    }
}

/// Copies a chunk's items for one more reader of a broadcast.
pub(crate) type ChunkCloner<T> = fn(&[T]) -> Vec<T>;

/// A batch of items moved across an edge in one channel operation.
pub(crate) struct Chunk<T> {
    pub(crate) items: Vec<T>,
    pub(crate) acks: Acks,
}

/// State shared by both ends of an edge, read by metrics and shutdown reports.
#[derive(Debug, Default)]
pub(crate) struct EdgeShared {
    /// Items sent but not yet received.
    pub(crate) queued: AtomicUsize,
}

pub(crate) struct EdgeSender<T> {
    pub(crate) tx: PollSender<Chunk<T>>,
    pub(crate) shared: Arc<EdgeShared>,
    /// Most items this edge accepts in one chunk.
    pub(crate) chunk_limit: usize,
    /// A slot reservation is under way in `tx` (it returned `Pending`).
    pub(crate) reserving: bool,
    /// The receiver is gone; nothing more is sent here.
    pub(crate) closed: bool,
}

pub(crate) struct EdgeReceiver<T> {
    rx: mpsc::Receiver<Chunk<T>>,
    pub(crate) shared: Arc<EdgeShared>,
}

/// An edge as seen by reports: its counters and its capacity.
#[derive(Debug, Clone)]
pub(crate) struct EdgeRef {
    pub(crate) shared: Arc<EdgeShared>,
    pub(crate) capacity: usize,
}

/// How an edge is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EdgeSize {
    pub(crate) capacity: usize,
    pub(crate) chunk_size: usize,
}

impl EdgeSize {
    pub(crate) fn chunk_limit(self) -> usize {
        self.chunk_size.min(self.capacity).max(1)
    }

    pub(crate) fn slots(self) -> usize {
        (self.capacity / self.chunk_limit()).max(1)
    }
}

pub(crate) fn edge<T: Send + 'static>(size: EdgeSize) -> (EdgeSender<T>, EdgeReceiver<T>) {
    let (tx, rx) = mpsc::channel(size.slots());
    let shared = Arc::new(EdgeShared::default());
    (
        EdgeSender {
            tx: PollSender::new(tx),
            shared: shared.clone(),
            chunk_limit: size.chunk_limit(),
            reserving: false,
            closed: false,
        },
        EdgeReceiver { rx, shared },
    )
}

/// What [`InputSet::try_next`] found.
pub(crate) enum TryNext<T> {
    Chunk(Chunk<T>),
    Empty,
    Closed,
}

/// All input edges of one node, read fairly.
pub(crate) struct InputSet<T> {
    edges: Vec<EdgeReceiver<T>>,
    cursor: usize,
}

impl<T> InputSet<T> {
    pub(crate) fn new(edges: Vec<EdgeReceiver<T>>) -> Self {
        Self { edges, cursor: 0 }
    }

    fn received(&mut self, chunk: &Chunk<T>, index: usize) {
        self.edges[index].shared.queued.fetch_sub(chunk.items.len(), Ordering::Relaxed);
        self.cursor = index + 1;
    }

    /// Takes a chunk that is ready now, without waiting.
    pub(crate) fn try_next(&mut self) -> TryNext<T> {
        let mut i = 0;
        while i < self.edges.len() {
            let index = (self.cursor + i) % self.edges.len();
            match self.edges[index].rx.try_recv() {
                Ok(chunk) => {
                    self.received(&chunk, index);
                    return TryNext::Chunk(chunk);
                }
                Err(mpsc::error::TryRecvError::Empty) => i += 1,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.edges.swap_remove(index);
                }
            }
        }
        if self.edges.is_empty() { TryNext::Closed } else { TryNext::Empty }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Chunk<T>>> {
        let mut i = 0;
        while i < self.edges.len() {
            let index = (self.cursor + i) % self.edges.len();
            match self.edges[index].rx.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => {
                    self.received(&chunk, index);
                    return Poll::Ready(Some(chunk));
                }
                Poll::Ready(None) => {
                    self.edges.swap_remove(index);
                }
                Poll::Pending => i += 1,
            }
        }
        if self.edges.is_empty() { Poll::Ready(None) } else { Poll::Pending }
    }

    /// Waits for the next chunk; `None` once every upstream has finished.
    ///
    /// Cancel safe: no chunk is lost if the future is dropped.
    pub(crate) async fn next(&mut self) -> Option<Chunk<T>> {
        if let TryNext::Chunk(chunk) = self.try_next() {
            return Some(chunk);
        }
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Items waiting on these edges right now.
    pub(crate) fn queued(&self) -> usize {
        self.edges.iter().map(|e| e.shared.queued.load(Ordering::Relaxed)).sum()
    }
}
