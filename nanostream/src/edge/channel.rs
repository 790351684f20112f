//! The transport between nodes: bounded channels that carry chunks of items.
//!
//! An edge with capacity `c` and chunk limit `e = min(chunk_size, c)` is a
//! tokio mpsc channel of `c / e` chunk slots, each chunk holding at most `e`
//! items, so at most `c` items wait in the queue. The sending node may hold
//! one more chunk it is trying to send and the receiving node one chunk it is
//! working through, which gives the documented bound of `c + 2e` items per
//! edge.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::edge::acks::Acks;

/// Edge capacity used when neither the edge nor the builder sets one.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Most items moved across an edge in one chunk, unless the builder sets it.
pub const DEFAULT_CHUNK_SIZE: usize = 1024;

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

/// What trying to send a chunk on an edge did.
pub(crate) enum Sent {
    Done,
    Pending,
    Closed,
}

enum Tx<T> {
    Channel(PollSender<Chunk<T>>),
    Queue(Arc<WorkQueue<T>>),
}

pub(crate) struct EdgeSender<T> {
    tx: Tx<T>,
    shared: Arc<EdgeShared>,
    /// Most items this edge accepts in one chunk.
    pub(crate) chunk_limit: usize,
    /// A slot reservation is under way in `tx` (it returned `Pending`).
    reserving: bool,
    /// The receiver is gone; nothing more is sent here.
    pub(crate) closed: bool,
}

impl<T: Send + 'static> EdgeSender<T> {
    /// Sends one chunk if the edge has room; `make` builds the chunk only
    /// once room is certain, so that an edge without room never holds items.
    pub(crate) fn poll_send(&mut self, cx: &mut Context<'_>, make: impl FnOnce() -> Chunk<T>) -> Sent {
        match &mut self.tx {
            Tx::Channel(tx) => {
                // Fast path: a slot is free. The edge has a single sender, so
                // the slot cannot be taken before `try_send` below. A closed
                // channel still reports capacity: check, so that no chunk is
                // made for a reader that is gone.
                let fast = !self.reserving && tx.get_ref().is_some_and(|tx| tx.capacity() > 0 && !tx.is_closed());
                if !fast {
                    match tx.poll_reserve(cx) {
                        Poll::Pending => {
                            self.reserving = true;
                            return Sent::Pending;
                        }
                        Poll::Ready(Err(_closed)) => return Sent::Closed,
                        Poll::Ready(Ok(())) => self.reserving = false,
                    }
                }
                let chunk = make();
                let len = chunk.items.len();
                self.shared.queued.fetch_add(len, Ordering::Relaxed);
                let sent = if fast {
                    tx.get_ref().is_some_and(|tx| tx.try_send(chunk).is_ok())
                } else {
                    tx.send_item(chunk).is_ok()
                };
                if sent {
                    Sent::Done
                } else {
                    self.shared.queued.fetch_sub(len, Ordering::Relaxed);
                    Sent::Closed
                }
            }
            Tx::Queue(queue) => match queue.poll_room(cx) {
                Poll::Pending => Sent::Pending,
                Poll::Ready(false) => Sent::Closed,
                Poll::Ready(true) => {
                    let chunk = make();
                    self.shared.queued.fetch_add(chunk.items.len(), Ordering::Relaxed);
                    queue.push(chunk, true);
                    Sent::Done
                }
            },
        }
    }
}

impl<T> Drop for EdgeSender<T> {
    fn drop(&mut self) {
        if let Tx::Queue(queue) = &self.tx {
            queue.sender_gone();
        }
    }
}

enum Rx<T> {
    Channel(mpsc::Receiver<Chunk<T>>),
    Queue(Arc<WorkQueue<T>>),
}

pub(crate) struct EdgeReceiver<T> {
    rx: Rx<T>,
    pub(crate) shared: Arc<EdgeShared>,
}

impl<T> Drop for EdgeReceiver<T> {
    fn drop(&mut self) {
        if let Rx::Queue(queue) = &self.rx {
            queue.receiver_gone();
        }
    }
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
            tx: Tx::Channel(PollSender::new(tx)),
            shared: shared.clone(),
            chunk_limit: size.chunk_limit(),
            reserving: false,
            closed: false,
        },
        EdgeReceiver { rx: Rx::Channel(rx), shared },
    )
}

/// An edge read by several nodes that share its items: each chunk goes to
/// whichever reader takes it first, and a reader that finds an item slow
/// gives the rest of its chunk back for the others
/// ([`InputSet::shared_queue`]). `parallel` reads its input this way.
pub(crate) fn shared_edge<T: Send + 'static>(size: EdgeSize, readers: usize) -> (EdgeSender<T>, Vec<EdgeReceiver<T>>) {
    let queue = Arc::new(WorkQueue {
        state: Mutex::new(QueueState {
            chunks: VecDeque::new(),
            slots: size.slots(),
            counted: 0,
            sender: true,
            receivers: readers,
            readers: Vec::new(),
            writer: None,
        }),
    });
    let shared = Arc::new(EdgeShared::default());
    let receivers =
        (0..readers).map(|_| EdgeReceiver { rx: Rx::Queue(queue.clone()), shared: shared.clone() }).collect();
    let sender =
        EdgeSender { tx: Tx::Queue(queue), shared, chunk_limit: size.chunk_limit(), reserving: false, closed: false };
    (sender, receivers)
}

/// The queue behind a [`shared_edge`].
pub(crate) struct WorkQueue<T> {
    state: Mutex<QueueState<T>>,
}

struct QueueState<T> {
    /// Chunks, and whether each takes one of the sender's slots (chunks given
    /// back by a reader do not: their items were already in flight).
    chunks: VecDeque<(Chunk<T>, bool)>,
    slots: usize,
    counted: usize,
    sender: bool,
    receivers: usize,
    readers: Vec<Waker>,
    writer: Option<Waker>,
}

impl<T> WorkQueue<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the sender may push a chunk now: `Ready(false)` once every
    /// reader is gone.
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = self.lock();
        if state.receivers == 0 {
            return Poll::Ready(false);
        }
        if state.counted < state.slots {
            return Poll::Ready(true);
        }
        state.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    fn push(&self, chunk: Chunk<T>, counted: bool) {
        let readers = {
            let mut state = self.lock();
            if counted {
                state.counted += 1;
                state.chunks.push_back((chunk, true));
            } else {
                state.chunks.push_front((chunk, false));
            }
            std::mem::take(&mut state.readers)
        };
        readers.into_iter().for_each(Waker::wake);
    }

    fn poll_pop(&self, cx: Option<&mut Context<'_>>) -> Poll<Option<Chunk<T>>> {
        let mut state = self.lock();
        if let Some((chunk, counted)) = state.chunks.pop_front() {
            let writer = if counted {
                state.counted -= 1;
                state.writer.take()
            } else {
                None
            };
            drop(state);
            if let Some(writer) = writer {
                writer.wake();
            }
            return Poll::Ready(Some(chunk));
        }
        if !state.sender {
            return Poll::Ready(None);
        }
        if let Some(cx) = cx
            && !state.readers.iter().any(|w| w.will_wake(cx.waker()))
        {
            state.readers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    fn sender_gone(&self) {
        let readers = {
            let mut state = self.lock();
            state.sender = false;
            std::mem::take(&mut state.readers)
        };
        readers.into_iter().for_each(Waker::wake);
    }

    fn receiver_gone(&self) {
        let writer = {
            let mut state = self.lock();
            state.receivers -= 1;
            if state.receivers == 0 { state.writer.take() } else { None }
        };
        if let Some(writer) = writer {
            writer.wake();
        }
    }
}

impl<T> EdgeReceiver<T> {
    fn try_recv(&mut self) -> Result<Chunk<T>, mpsc::error::TryRecvError> {
        match &mut self.rx {
            Rx::Channel(rx) => rx.try_recv(),
            Rx::Queue(queue) => match queue.poll_pop(None) {
                Poll::Ready(Some(chunk)) => Ok(chunk),
                Poll::Ready(None) => Err(mpsc::error::TryRecvError::Disconnected),
                Poll::Pending => Err(mpsc::error::TryRecvError::Empty),
            },
        }
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Chunk<T>>> {
        match &mut self.rx {
            Rx::Channel(rx) => rx.poll_recv(cx),
            Rx::Queue(queue) => queue.poll_pop(Some(cx)),
        }
    }
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
            match self.edges[index].try_recv() {
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
            match self.edges[index].poll_recv(cx) {
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

    /// For a node that shares its input with other readers (a `parallel`
    /// worker): where to give back what it has not started, for the others
    /// to take.
    pub(crate) fn shared_queue(&self) -> Option<GiveBack<T>> {
        self.edges.iter().find_map(|e| match &e.rx {
            Rx::Queue(queue) => Some(GiveBack { queue: queue.clone(), shared: e.shared.clone() }),
            Rx::Channel(_) => None,
        })
    }
}

/// Puts chunks back at the front of a shared input; see
/// [`InputSet::shared_queue`].
pub(crate) struct GiveBack<T> {
    queue: Arc<WorkQueue<T>>,
    shared: Arc<EdgeShared>,
}

impl<T> GiveBack<T> {
    pub(crate) fn give_back(&self, chunk: Chunk<T>) {
        self.shared.queued.fetch_add(chunk.items.len(), Ordering::Relaxed);
        self.queue.push(chunk, false);
    }
}
