use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use tokio_util::sync::{CancellationToken, PollSender};

use crate::edge::{Acks, Chunk, ChunkCloner, EdgeSender};
use crate::stats::NodeStats;

/// Where a node sends its outputs.
///
/// A node receives `&mut Emitter<Out>` and calls [`emit`](Emitter::emit) for
/// each output, zero or more times per input. Outputs are buffered and moved
/// downstream in chunks: when a chunk is full, when the node has no more
/// input ready, and when the node finishes. `emit` waits when the downstream
/// edges are full, which is how back-pressure reaches a node.
///
/// # Examples
///
/// A node that splits lines into words emits several outputs per input:
///
/// ```
/// use nanostream::prelude::*;
///
/// #[node]
/// async fn words(line: String, out: &mut Emitter<String>) {
///     for word in line.split_whitespace() {
///         out.emit(word.to_owned()).await;
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use futures::StreamExt;
/// let out: Vec<_> = words()
///     .apply(futures::stream::iter(["a b".to_owned(), "c".to_owned()]))
///     .map(Result::unwrap)
///     .collect()
///     .await;
/// assert_eq!(out, ["a", "b", "c"]);
/// # }
/// ```
pub struct Emitter<T> {
    buf: Vec<T>,
    /// Acknowledgements owed by the items in `buf`.
    acks: Acks,
    /// Acknowledgements of the input chunk the node is working through.
    current: Owed,
    /// Counts input chunks, so stateful operators can tell whether they
    /// already hold the current chunk's acknowledgements.
    input_seq: u64,
    /// An empty allocation to fill next, so a flush does not allocate.
    spare: Vec<T>,
    /// Flush once `buf` holds this many items.
    limit: usize,
    /// For push sources: items go one by one through this channel to the
    /// task's pump, which batches them and flushes when nothing more is
    /// ready (the runtime cannot see a push source's own waits).
    relay: Option<PollSender<(T, Acks)>>,
    /// Park `emit` once the output is closed, so a source loop cannot spin.
    park_when_closed: bool,
    /// Closed by the node itself: drop whatever is emitted.
    discard: bool,
    port: Option<Port<T>>,
}

/// Acknowledgements an operator holds for items kept in its state.
#[derive(Debug, Default)]
pub(crate) struct Held {
    acks: Acks,
    seq: u64,
}

/// How an output spreads its items over its readers.
pub(crate) enum Policy<T> {
    /// Every reader gets every item.
    Broadcast,
    /// Whole chunks go to the readers in turn.
    RoundRobin,
    /// Each item goes to the reader `hash(key) % readers`.
    Partition(Arc<dyn Fn(&T) -> u64 + Send + Sync>),
}

impl<T> Policy<T> {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Policy::Broadcast => "broadcast",
            Policy::RoundRobin => "round-robin",
            Policy::Partition(_) => "partition",
        }
    }
}

impl<T> Clone for Policy<T> {
    fn clone(&self) -> Self {
        match self {
            Policy::Broadcast => Policy::Broadcast,
            Policy::RoundRobin => Policy::RoundRobin,
            Policy::Partition(key) => Policy::Partition(key.clone()),
        }
    }
}

pub(crate) struct Port<T> {
    edges: Vec<EdgeSender<T>>,
    cloner: Option<ChunkCloner<T>>,
    policy: Policy<T>,
    /// Broadcast: edges that already hold a copy of the chunk being sent, so
    /// an interrupted flush resumes without sending duplicates.
    sent_upto: usize,
    /// Broadcast: how many buffered items the chunk being sent holds.
    in_flight: usize,
    /// Round robin: the edge that gets the next chunk.
    next: usize,
    /// Partition: the buffer split per edge, while it is being sent.
    parts: Vec<Chunk<T>>,
    open_edges: usize,
    closed: bool,
    closed_token: CancellationToken,
    stats: Arc<NodeStats>,
}

enum Sent {
    Done,
    Pending,
    Closed,
}

/// Sends one chunk on one edge if it has room; `make` builds the chunk only
/// once room is certain.
fn send_on<T: Send + 'static>(edge: &mut EdgeSender<T>, cx: &mut Context<'_>, make: impl FnOnce() -> Chunk<T>) -> Sent {
    // Fast path: a slot is free. The edge has a single sender, so the slot
    // cannot be taken before `try_send` below.
    let fast = !edge.reserving && edge.tx.get_ref().is_some_and(|tx| tx.capacity() > 0);
    if !fast {
        match edge.tx.poll_reserve(cx) {
            Poll::Pending => {
                edge.reserving = true;
                return Sent::Pending;
            }
            Poll::Ready(Err(_closed)) => return Sent::Closed,
            Poll::Ready(Ok(())) => edge.reserving = false,
        }
    }
    let chunk = make();
    let len = chunk.items.len();
    edge.shared.queued.fetch_add(len, Ordering::Relaxed);
    let sent = if fast {
        edge.tx.get_ref().is_some_and(|tx| tx.try_send(chunk).is_ok())
    } else {
        edge.tx.send_item(chunk).is_ok()
    };
    if sent {
        Sent::Done
    } else {
        edge.shared.queued.fetch_sub(len, Ordering::Relaxed);
        Sent::Closed
    }
}

impl<T> Port<T> {
    pub(crate) fn new(
        edges: Vec<EdgeSender<T>>,
        cloner: Option<ChunkCloner<T>>,
        policy: Policy<T>,
        closed_token: CancellationToken,
        stats: Arc<NodeStats>,
    ) -> Self {
        let open_edges = edges.len();
        Self {
            edges,
            cloner,
            policy,
            sent_upto: 0,
            in_flight: 0,
            next: 0,
            parts: Vec::new(),
            open_edges,
            closed: false,
            closed_token,
            stats,
        }
    }

    fn chunk_limit(&self) -> usize {
        self.edges.iter().map(|e| e.chunk_limit).min().unwrap_or(usize::MAX)
    }

    fn close_edge(&mut self, index: usize) {
        let edge = &mut self.edges[index];
        if !edge.closed {
            edge.closed = true;
            self.open_edges -= 1;
        }
        if self.open_edges == 0 {
            self.closed = true;
            self.closed_token.cancel();
        }
    }
}

/// Moves the first `n` buffered items out as a chunk, leaving a recycled or
/// fresh allocation. Items emitted after an interrupted flush began stay for
/// the next flush. A function over the fields, so the port stays borrowed.
fn take_front<T>(buf: &mut Vec<T>, spare: &mut Vec<T>, acks: &mut Acks, current: &Owed, n: usize) -> Chunk<T> {
    let mut next = if spare.capacity() > 0 { std::mem::take(spare) } else { Vec::with_capacity(n) };
    if buf.len() > n {
        next.extend(buf.drain(n..));
    }
    Chunk { items: std::mem::replace(buf, next), acks: with_current(std::mem::take(acks), current) }
}

fn with_current(acks: Acks, current: &Owed) -> Acks {
    let mut acks = acks;
    if !current.input.is_empty() {
        acks.extend_from(&current.input);
    }
    if !current.adopted.is_empty() {
        acks.extend_from(&current.adopted);
    }
    acks
}

/// What everything emitted right now owes: the acknowledgements of the
/// input being processed, and those an operator adopted from its state.
/// Kept apart so that holding the input's acknowledgements never copies
/// adopted ones (which would compound copies at every hold).
#[derive(Debug, Default)]
struct Owed {
    input: Acks,
    adopted: Acks,
}

impl Owed {
    fn clear(&mut self) {
        self.input.clear();
        self.adopted.clear();
    }

    fn move_into(&mut self, acks: &mut Acks) {
        acks.append(&mut self.input);
        acks.append(&mut self.adopted);
    }
}

impl<T> Emitter<T> {
    /// An emitter that only buffers, for running a node outside a topology.
    pub(crate) fn detached() -> Self {
        Self {
            buf: Vec::new(),
            acks: Acks::default(),
            current: Owed::default(),
            input_seq: 0,
            spare: Vec::new(),
            limit: usize::MAX,
            relay: None,
            park_when_closed: false,
            discard: false,
            port: None,
        }
    }

    /// An emitter for a push source: every item goes through `relay`.
    pub(crate) fn relay(relay: PollSender<(T, Acks)>) -> Self {
        let mut emitter = Self::detached();
        emitter.limit = 1;
        emitter.relay = Some(relay);
        emitter
    }

    pub(crate) fn connected(port: Port<T>, source: bool) -> Self {
        let limit = port.chunk_limit();
        Self {
            buf: Vec::new(),
            acks: Acks::default(),
            current: Owed::default(),
            input_seq: 0,
            spare: Vec::new(),
            limit,
            relay: None,
            park_when_closed: source,
            discard: false,
            port: Some(port),
        }
    }

    /// Whether every node reading this output has stopped.
    pub fn is_closed(&self) -> bool {
        self.port.as_ref().is_some_and(|p| p.closed)
    }

    /// Number of outputs buffered and not yet sent.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Marks the start of an input chunk whose acknowledgements every output
    /// emitted from now on owes.
    pub(crate) fn begin_input(&mut self, acks: Acks) {
        self.current.input = acks;
        self.input_seq += 1;
    }

    /// Marks the end of the current input chunk.
    pub(crate) fn end_input(&mut self) {
        if self.buf.is_empty() {
            // Every output derived from the chunk has been sent with a copy of
            // its acknowledgements (or there was none): release ours.
            self.current.clear();
        } else {
            self.current.move_into(&mut self.acks);
        }
    }

    /// A copy of the acknowledgements owed by the input being processed.
    ///
    /// A node that keeps an input in its own state beyond the call (to emit
    /// something from it later) keeps this copy with it, and hands it back
    /// with [`begin_batch`](Emitter::begin_batch) when it emits; the
    /// built-in windows and batches do so. See [`Acks`].
    pub fn current_acks(&self) -> Acks {
        self.current.input.clone()
    }

    /// Makes every item emitted from now until [`end_batch`](Emitter::end_batch)
    /// owe `acks` (each chunk sent meanwhile carries a copy).
    ///
    /// Sources that track acknowledgements call it around the items of one
    /// batch they read (one guard per batch, not per item); nodes call it
    /// before emitting from state. Inside a node's `process`, the batch also
    /// ends with the input chunk.
    pub fn begin_batch(&mut self, acks: Acks) {
        let mut acks = acks;
        self.current.adopted.append(&mut acks);
    }

    /// Ends what [`begin_batch`](Emitter::begin_batch) began: the
    /// acknowledgements now travel with the buffered items, or are released
    /// if every item already went out with a copy.
    pub fn end_batch(&mut self) {
        self.end_input();
    }

    /// Attaches acknowledgements to the buffered outputs.
    pub(crate) fn owe(&mut self, acks: &mut Acks) {
        self.acks.append(acks);
    }

    /// Adds the current input chunk's acknowledgements to what an operator
    /// holds in state (once per chunk), for operators that keep items beyond
    /// the chunk: windows, batches, keyed folds.
    pub(crate) fn hold(&self, held: &mut Held) {
        if held.seq != self.input_seq {
            held.seq = self.input_seq;
            if !self.current.input.is_empty() {
                held.acks.extend_from(&self.current.input);
            }
        }
    }

    /// Makes everything emitted from now until the end of the current input
    /// (or timer, or final hook) owe what `held` holds: every chunk sent
    /// meanwhile carries a copy.
    pub(crate) fn adopt(&mut self, held: &mut Held) {
        self.current.adopted.append(&mut held.acks);
        held.seq = 0;
    }

    /// Keeps a drained input allocation to fill next, when the node's input
    /// and output item types are the same: the memory was just read by this
    /// task, so writing into it is cheaper than into a fresh allocation.
    pub(crate) fn recycle<In: 'static>(&mut self, mut drained: Vec<In>)
    where
        T: 'static,
    {
        if self.spare.capacity() == 0
            && let Some(same) = (&mut drained as &mut dyn std::any::Any).downcast_mut::<Vec<T>>()
        {
            same.clear();
            self.spare = std::mem::take(same);
        }
    }

    /// What a relay emitter still holds, with what it owes.
    pub(crate) fn take_leftovers(&mut self) -> (Vec<T>, Acks) {
        let acks = with_current(std::mem::take(&mut self.acks), &self.current);
        self.current.clear();
        (std::mem::take(&mut self.buf), acks)
    }

    /// Takes what a detached emitter buffered.
    pub(crate) fn drain_detached(&mut self) -> std::vec::Drain<'_, T> {
        self.buf.drain(..)
    }
}

impl<T: Send + 'static> Emitter<T> {
    /// Sends one output downstream.
    ///
    /// The item is buffered at once; the returned future waits only when the
    /// buffer is full and the downstream edges have no room, so awaiting it
    /// is how a node feels back-pressure. Buffering is cheap: a full chunk
    /// is moved downstream in one channel operation.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the item is buffered before the future is returned, so
    /// dropping the future never loses or duplicates it; it is sent by the
    /// next flush.
    #[inline]
    pub fn emit(&mut self, item: T) -> impl Future<Output = ()> + Send + '_ {
        self.buf.push(item);
        std::future::poll_fn(move |cx| self.poll_emit(cx))
    }

    /// The buffer and the size at which it must be flushed, for loops that
    /// fill it without awaiting.
    #[inline]
    pub(crate) fn buffer(&mut self) -> (&mut Vec<T>, usize) {
        (&mut self.buf, self.limit)
    }

    #[inline]
    pub(crate) fn wants_flush(&self) -> bool {
        self.buf.len() >= self.limit
    }

    /// Flushes a buffer a source filled through [`buffer`](Self::buffer);
    /// like `emit`, parks a source whose output is closed, so that its loop
    /// cannot spin.
    pub(crate) async fn flush_or_park(&mut self) {
        std::future::poll_fn(|cx| self.poll_emit_slow(cx)).await;
    }

    #[inline]
    fn poll_emit(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.wants_flush() {
            return Poll::Ready(());
        }
        self.poll_emit_slow(cx)
    }

    #[inline(never)]
    fn poll_emit_slow(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        ready!(self.poll_flush(cx));
        if self.park_when_closed && self.is_closed() {
            // Nothing reads this output any more (the pipeline is being torn
            // down): park the source instead of letting it spin. No waker is
            // registered; the runtime stops the source by other means.
            return Poll::Pending;
        }
        Poll::Ready(())
    }

    /// Ends this output: sends what is buffered, then tells every reader
    /// that no more items will come, as if the node had finished.
    ///
    /// For sources that must keep running after their output ends (for
    /// example to wait for acknowledgements and commit). Items emitted after
    /// `close` are discarded.
    pub async fn close(&mut self) {
        self.flush().await;
        self.port = None;
        self.discard = true;
        self.buf.clear();
    }

    /// Sends the buffered outputs now, even if the chunk is not full.
    ///
    /// The runtime already flushes when a node has no more input ready and
    /// when it finishes; call this from a long-running source or node before
    /// it waits on something slow, so that outputs are not held back.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped, the items not yet sent stay
    /// buffered and no downstream node receives a chunk twice.
    pub fn flush(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::poll_fn(move |cx| self.poll_flush(cx))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(relay) = &mut self.relay {
            while !self.buf.is_empty() {
                match relay.poll_reserve(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => {
                        let item = self.buf.remove(0);
                        let acks = if self.buf.is_empty() {
                            with_current(std::mem::take(&mut self.acks), &self.current)
                        } else {
                            with_current(self.acks.clone(), &self.current)
                        };
                        if relay.send_item((item, acks)).is_err() {
                            self.buf.clear();
                        }
                    }
                    Poll::Ready(Err(_)) => {
                        // The pump is gone: the source is being stopped.
                        self.buf.clear();
                        self.acks.clear();
                    }
                }
            }
            return Poll::Ready(());
        }
        let Some(port) = &mut self.port else {
            if self.discard {
                self.buf.clear();
                self.acks.clear();
            }
            return Poll::Ready(());
        };
        if port.closed {
            // Every reader is gone; what is left can never be delivered.
            self.buf.clear();
            self.acks.clear();
            return Poll::Ready(());
        }
        let mut sent_items = 0;
        match &port.policy {
            Policy::Broadcast => {
                if port.sent_upto == 0 {
                    port.in_flight = self.buf.len();
                }
                let n = port.in_flight;
                if n == 0 {
                    return Poll::Ready(());
                }
                while port.sent_upto < port.edges.len() {
                    let index = port.sent_upto;
                    if !port.edges[index].closed {
                        let last = port.edges[index + 1..].iter().all(|e| e.closed);
                        let sent = if last {
                            send_on(&mut port.edges[index], cx, || {
                                take_front(&mut self.buf, &mut self.spare, &mut self.acks, &self.current, n)
                            })
                        } else {
                            let Some(clone) = port.cloner else { unreachable_clone() };
                            let (buf, acks, current) = (&self.buf, &self.acks, &self.current);
                            send_on(&mut port.edges[index], cx, || Chunk {
                                items: clone(&buf[..n]),
                                acks: with_current(acks.clone(), current),
                            })
                        };
                        match sent {
                            Sent::Pending => return Poll::Pending,
                            Sent::Closed => port.close_edge(index),
                            Sent::Done => {}
                        }
                    }
                    port.sent_upto += 1;
                }
                port.sent_upto = 0;
                sent_items = n;
            }
            Policy::RoundRobin => {
                let n = self.buf.len();
                if n == 0 {
                    return Poll::Ready(());
                }
                while !port.closed {
                    let index = port.next % port.edges.len();
                    if port.edges[index].closed {
                        port.next += 1;
                        continue;
                    }
                    match send_on(&mut port.edges[index], cx, || {
                        take_front(&mut self.buf, &mut self.spare, &mut self.acks, &self.current, n)
                    }) {
                        Sent::Pending => return Poll::Pending,
                        Sent::Closed => port.close_edge(index),
                        Sent::Done => {
                            port.next += 1;
                            sent_items = n;
                            break;
                        }
                    }
                }
            }
            Policy::Partition(key) => {
                if port.parts.is_empty() {
                    let len = self.buf.len();
                    if len == 0 {
                        return Poll::Ready(());
                    }
                    // Split once and keep the parts in the port, so an
                    // interrupted flush resumes where it stopped.
                    let n = port.edges.len();
                    let Chunk { items, acks } =
                        take_front(&mut self.buf, &mut self.spare, &mut self.acks, &self.current, len);
                    let mut parts: Vec<Chunk<T>> = (0..n)
                        .map(|_| Chunk { items: Vec::with_capacity(len / n + 1), acks: Acks::default() })
                        .collect();
                    for item in items {
                        let slot = (key(&item) % n as u64) as usize;
                        parts[slot].items.push(item);
                    }
                    for part in &mut parts {
                        if !part.items.is_empty() {
                            part.acks.extend_from(&acks);
                        }
                    }
                    port.parts = parts;
                }
                for index in 0..port.parts.len() {
                    if port.parts[index].items.is_empty() || port.edges[index].closed {
                        continue;
                    }
                    let part = &mut port.parts[index];
                    let part_len = part.items.len();
                    let empty = || Chunk { items: Vec::new(), acks: Acks::default() };
                    match send_on(&mut port.edges[index], cx, || std::mem::replace(part, empty())) {
                        Sent::Pending => return Poll::Pending,
                        Sent::Closed => port.close_edge(index),
                        Sent::Done => sent_items += part_len,
                    }
                }
                port.parts.clear();
            }
        }
        if port.closed {
            self.buf.clear();
            self.acks.clear();
            port.parts.clear();
        } else {
            port.stats.add_sent(sent_items);
        }
        Poll::Ready(())
    }
}

#[cold]
fn unreachable_clone() -> ! {
    // A port only gets a second reader through `&Output<T>`, which requires
    // `T: Clone` and registers the clone function.
    unreachable!("nanostream: broadcast to several readers without a clone function")
}

impl<T> std::fmt::Debug for Emitter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("item", &std::any::type_name::<T>())
            .field("buffered", &self.buf.len())
            .field("limit", &self.limit)
            .field("closed", &self.port.as_ref().is_some_and(|p| p.closed))
            .finish()
    }
}
