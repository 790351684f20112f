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
use crate::time::Mark;

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
    /// The edge's watermark once these items are read.
    pub(crate) mark: Mark,
}

impl<T> Chunk<T> {
    /// A chunk without items that only moves the watermark on.
    pub(crate) fn marker(mark: Mark) -> Self {
        Self { items: Vec::new(), acks: Acks::default(), mark }
    }
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
    /// The watermark of the last chunk sent; at first, what the receiver
    /// assumes before its first chunk.
    pub(crate) sent_mark: Mark,
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
                self.sent_mark = chunk.mark;
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
                    self.sent_mark = chunk.mark;
                    self.shared.queued.fetch_add(chunk.items.len(), Ordering::Relaxed);
                    queue.push(chunk);
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
    Queue(QueueReader<T>),
}

pub(crate) struct EdgeReceiver<T> {
    rx: Rx<T>,
    pub(crate) shared: Arc<EdgeShared>,
    /// The watermark of the last chunk received; before the first, one
    /// that holds the others back (the sender may well have event time).
    mark: Mark,
    /// The highest watermark received.
    high: Option<crate::time::Timestamp>,
}

impl<T> Drop for EdgeReceiver<T> {
    fn drop(&mut self) {
        if let Rx::Queue(q) = &self.rx {
            q.queue.receiver_gone(q.index);
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
            sent_mark: Mark::UNKNOWN,
        },
        EdgeReceiver { rx: Rx::Channel(rx), shared, mark: Mark::UNKNOWN, high: None },
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
            unfinished: VecDeque::new(),
            first: 0,
            done_mark: Mark::UNKNOWN,
            reading: vec![None; readers],
        }),
    });
    let shared = Arc::new(EdgeShared::default());
    let receivers = (0..readers)
        .map(|index| EdgeReceiver {
            rx: Rx::Queue(QueueReader { queue: queue.clone(), index, seen: Mark::UNKNOWN }),
            shared: shared.clone(),
            mark: Mark::UNKNOWN,
            high: None,
        })
        .collect();
    let sender = EdgeSender {
        tx: Tx::Queue(queue),
        shared,
        chunk_limit: size.chunk_limit(),
        reserving: false,
        closed: false,
        sent_mark: Mark::UNKNOWN,
    };
    (sender, receivers)
}

/// The queue behind a [`shared_edge`].
///
/// Watermarks: a reader may pass a watermark on only once every item sent
/// before it has been processed, by whichever reader took it. So the queue
/// numbers the chunks, counts the parts of each still being read (a chunk
/// given back in part is read by two readers), and gives its readers the
/// watermark of the last chunk finished together with every chunk before
/// it; a reader with nothing to do gets it in a chunk without items.
pub(crate) struct WorkQueue<T> {
    state: Mutex<QueueState<T>>,
}

struct QueueState<T> {
    chunks: VecDeque<Queued<T>>,
    slots: usize,
    counted: usize,
    sender: bool,
    receivers: usize,
    readers: Vec<Waker>,
    writer: Option<Waker>,
    /// Chunks pushed and not finished yet, oldest first.
    unfinished: VecDeque<Unfinished>,
    /// The number of the first of `unfinished`.
    first: u64,
    /// The watermark of the last chunk finished with all before it.
    done_mark: Mark,
    /// The chunk each reader is processing.
    reading: Vec<Option<u64>>,
}

struct Queued<T> {
    chunk: Chunk<T>,
    /// Whether it takes one of the sender's slots (chunks given back by a
    /// reader do not: their items were already in flight).
    counted: bool,
    seq: u64,
}

struct Unfinished {
    /// Readers processing a part of it, or the chunk waiting in the queue.
    parts: usize,
    mark: Mark,
}

impl<T> QueueState<T> {
    /// Reader `reader` finished the chunk it was processing; returns the
    /// readers to wake if that moved the watermark or ended the input.
    fn finish(&mut self, reader: usize) -> Vec<Waker> {
        let Some(seq) = self.reading.get_mut(reader).and_then(Option::take) else { return Vec::new() };
        if let Some(entry) = seq.checked_sub(self.first).and_then(|i| self.unfinished.get_mut(i as usize)) {
            entry.parts = entry.parts.saturating_sub(1);
        }
        self.settle()
    }

    /// Drops the finished chunks at the front; wakes every reader if that
    /// moved the watermark or ended the input.
    fn settle(&mut self) -> Vec<Waker> {
        let before = self.done_mark;
        while self.unfinished.front().is_some_and(|e| e.parts == 0) {
            if let Some(entry) = self.unfinished.pop_front() {
                self.done_mark = entry.mark;
                self.first += 1;
            }
        }
        let ended = !self.sender && self.unfinished.is_empty();
        if self.done_mark != before || ended { std::mem::take(&mut self.readers) } else { Vec::new() }
    }
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

    /// The sender's chunk.
    fn push(&self, chunk: Chunk<T>) {
        let readers = {
            let mut state = self.lock();
            let seq = state.first + state.unfinished.len() as u64;
            if chunk.items.is_empty() {
                // Only a watermark: finished as soon as what came before is.
                state.unfinished.push_back(Unfinished { parts: 0, mark: chunk.mark });
                state.settle()
            } else {
                state.unfinished.push_back(Unfinished { parts: 1, mark: chunk.mark });
                state.counted += 1;
                state.chunks.push_back(Queued { chunk, counted: true, seq });
                std::mem::take(&mut state.readers)
            }
        };
        readers.into_iter().for_each(Waker::wake);
    }

    /// The rest of the chunk reader `reader` is processing, for the others.
    fn give_back(&self, reader: usize, chunk: Chunk<T>) {
        let readers = {
            let mut state = self.lock();
            let seq = match state.reading.get(reader).copied().flatten() {
                Some(seq) => seq,
                None => {
                    // Not expected: a reader gives back only what it is
                    // processing. Counted as a chunk of its own.
                    let seq = state.first + state.unfinished.len() as u64;
                    let mark = state.done_mark;
                    state.unfinished.push_back(Unfinished { parts: 0, mark });
                    seq
                }
            };
            if let Some(entry) = seq.checked_sub(state.first).and_then(|i| state.unfinished.get_mut(i as usize)) {
                entry.parts += 1;
            }
            state.chunks.push_front(Queued { chunk, counted: false, seq });
            std::mem::take(&mut state.readers)
        };
        readers.into_iter().for_each(Waker::wake);
    }

    /// Reader `reader` finished what it had and takes the next chunk: one
    /// with items, or without, to pass a watermark on (`seen` is the last
    /// it passed). `None` once the sender is gone and every chunk finished.
    fn poll_pop(&self, reader: usize, seen: &mut Mark, cx: Option<&mut Context<'_>>) -> Poll<Option<Chunk<T>>> {
        let mut state = self.lock();
        let wake = state.finish(reader);
        let mut writer = None;
        let popped = match state.chunks.pop_front() {
            Some(queued) => {
                if queued.counted {
                    state.counted -= 1;
                    writer = state.writer.take();
                }
                if let Some(slot) = state.reading.get_mut(reader) {
                    *slot = Some(queued.seq);
                }
                let mut chunk = queued.chunk;
                // What is known to be finished, not the chunk's own: other
                // readers may still be on chunks before it.
                chunk.mark = state.done_mark;
                *seen = state.done_mark;
                Poll::Ready(Some(chunk))
            }
            None if state.done_mark != *seen => {
                *seen = state.done_mark;
                Poll::Ready(Some(Chunk::marker(state.done_mark)))
            }
            None if !state.sender && state.unfinished.is_empty() => Poll::Ready(None),
            None => {
                if let Some(cx) = cx
                    && !state.readers.iter().any(|w| w.will_wake(cx.waker()))
                {
                    state.readers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        };
        drop(state);
        wake.into_iter().for_each(Waker::wake);
        if let Some(writer) = writer {
            writer.wake();
        }
        popped
    }

    fn sender_gone(&self) {
        let readers = {
            let mut state = self.lock();
            state.sender = false;
            std::mem::take(&mut state.readers)
        };
        readers.into_iter().for_each(Waker::wake);
    }

    /// Reader `reader` is gone: what it was processing counts as finished,
    /// so that the others are not left waiting for it (it only goes while
    /// the pipeline is torn down).
    fn receiver_gone(&self, reader: usize) {
        let (writer, readers) = {
            let mut state = self.lock();
            state.receivers -= 1;
            let readers = state.finish(reader);
            (if state.receivers == 0 { state.writer.take() } else { None }, readers)
        };
        if let Some(writer) = writer {
            writer.wake();
        }
        readers.into_iter().for_each(Waker::wake);
    }
}

/// One reader of a [`WorkQueue`].
struct QueueReader<T> {
    queue: Arc<WorkQueue<T>>,
    index: usize,
    /// The last watermark this reader passed on.
    seen: Mark,
}

impl<T> EdgeReceiver<T> {
    fn try_recv(&mut self) -> Result<Chunk<T>, mpsc::error::TryRecvError> {
        match &mut self.rx {
            Rx::Channel(rx) => rx.try_recv(),
            Rx::Queue(q) => match q.queue.poll_pop(q.index, &mut q.seen, None) {
                Poll::Ready(Some(chunk)) => Ok(chunk),
                Poll::Ready(None) => Err(mpsc::error::TryRecvError::Disconnected),
                Poll::Pending => Err(mpsc::error::TryRecvError::Empty),
            },
        }
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Chunk<T>>> {
        match &mut self.rx {
            Rx::Channel(rx) => rx.poll_recv(cx),
            Rx::Queue(q) => q.queue.poll_pop(q.index, &mut q.seen, Some(cx)),
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
    /// The last watermarks of the edges that have ended. One that ended
    /// without the final watermark (its source was stopped) keeps holding
    /// the others back: what it would have sent is not known.
    ended: Vec<Mark>,
}

impl<T> InputSet<T> {
    pub(crate) fn new(edges: Vec<EdgeReceiver<T>>) -> Self {
        Self { edges, cursor: 0, ended: Vec::new() }
    }

    /// Notes a chunk from edge `index`, and gives it the watermark of the
    /// whole input: the minimum over the edges.
    fn received(&mut self, chunk: &mut Chunk<T>, index: usize) {
        self.edges[index].shared.queued.fetch_sub(chunk.items.len(), Ordering::Relaxed);
        self.cursor = index + 1;
        let edge = &mut self.edges[index];
        edge.mark = chunk.mark;
        if let Mark::At(t) = chunk.mark {
            edge.high = Some(edge.high.map_or(t, |h| h.max(t)));
        }
        if self.edges.len() > 1 || !self.ended.is_empty() {
            chunk.mark = Mark::min_of(self.edges.iter().map(|e| e.mark).chain(self.ended.iter().copied()));
        }
    }

    /// An edge ended: after the final watermark it no longer counts; after
    /// anything else (its source was stopped), it holds the others back at
    /// the furthest it got, idle or not: what it would have sent is not
    /// known.
    fn remove(&mut self, index: usize) {
        let edge = self.edges.swap_remove(index);
        let last = match edge.mark {
            Mark::Untimed => Mark::Untimed,
            end if end == Mark::END => end,
            _ => Mark::At(edge.high.unwrap_or(crate::time::Timestamp::MIN)),
        };
        self.ended.push(last);
    }

    /// Takes a chunk that is ready now, without waiting.
    pub(crate) fn try_next(&mut self) -> TryNext<T> {
        let mut i = 0;
        while i < self.edges.len() {
            let index = (self.cursor + i) % self.edges.len();
            match self.edges[index].try_recv() {
                Ok(mut chunk) => {
                    self.received(&mut chunk, index);
                    return TryNext::Chunk(chunk);
                }
                Err(mpsc::error::TryRecvError::Empty) => i += 1,
                Err(mpsc::error::TryRecvError::Disconnected) => self.remove(index),
            }
        }
        if self.edges.is_empty() { TryNext::Closed } else { TryNext::Empty }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Chunk<T>>> {
        let mut i = 0;
        while i < self.edges.len() {
            let index = (self.cursor + i) % self.edges.len();
            match self.edges[index].poll_recv(cx) {
                Poll::Ready(Some(mut chunk)) => {
                    self.received(&mut chunk, index);
                    return Poll::Ready(Some(chunk));
                }
                Poll::Ready(None) => self.remove(index),
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
            Rx::Queue(q) => Some(GiveBack { queue: q.queue.clone(), reader: q.index, shared: e.shared.clone() }),
            Rx::Channel(_) => None,
        })
    }
}

/// Puts chunks back at the front of a shared input; see
/// [`InputSet::shared_queue`].
pub(crate) struct GiveBack<T> {
    queue: Arc<WorkQueue<T>>,
    reader: usize,
    shared: Arc<EdgeShared>,
}

impl<T> GiveBack<T> {
    pub(crate) fn give_back(&self, chunk: Chunk<T>) {
        self.shared.queued.fetch_add(chunk.items.len(), Ordering::Relaxed);
        self.queue.give_back(self.reader, chunk);
    }
}
