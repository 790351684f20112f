//! Where a node's outputs go: a buffer, moved downstream in chunks.
//!
//! The buffer is shared between the node (which fills it through
//! [`Emitter::emit`]) and the runtime driving the node, which sends it
//! downstream whenever the node waits on anything. That is what makes
//! "whatever a node has emitted reaches its edge before the node waits"
//! hold by construction, whatever the node awaits. The two never run at
//! the same time (they are one task), so the lock is never contended.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use tokio_util::sync::CancellationToken;

use crate::edge::acks::Acks;
use crate::edge::buffer::{Buffer, Owed};
use crate::edge::channel::Chunk;
use crate::edge::routing::{Delivery, Port};
use crate::runtime::stats::NodeStats;
use crate::time::{Mark, Timestamp};

/// Where a node sends its outputs.
///
/// A node receives `&mut Emitter<Out>` and calls [`emit`](Emitter::emit) for
/// each output, zero or more times per input. Outputs are buffered and moved
/// downstream in chunks: when a chunk is full, whenever the node waits on
/// anything (I/O, a timer, a slow call: the runtime sends what is buffered
/// before the node sleeps), and when the node finishes. `emit` waits when
/// the downstream edges are full, which is how back-pressure reaches a node.
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
    core: Arc<Mutex<Core<T>>>,
}

struct Core<T> {
    buffer: Buffer<T>,
    /// Counts input chunks, so stateful operators can tell whether they
    /// already hold the current chunk's acknowledgements.
    input_seq: u64,
    /// Most items in one chunk; flush once the buffer holds this many.
    limit: usize,
    /// Park `emit` once the output is closed, so a source loop cannot spin.
    park_when_closed: bool,
    output: Output<T>,
    /// The highest watermark this output has had.
    high: Option<Timestamp>,
    /// The node sets its output's watermarks itself (a source, or a node
    /// that assigns event time): the runtime does not forward its input's.
    own_marks: bool,
    /// Its own watermark moved since its statistics last showed it.
    stat_pending: bool,
}

enum Output<T> {
    /// Not connected to a topology: items stay in the buffer for the caller.
    Detached,
    Connected(Port<T>),
    /// The next node of a fused chain, run by this node's task.
    Fused(Fused<T>),
    /// Every reader has stopped: whatever is emitted is discarded, and what
    /// it owed is abandoned.
    Closed,
    /// The node ended its output ([`Emitter::close`]): the same, but a
    /// source that emits anyway is not parked.
    Ended,
}

/// Where a node's output is handed to the next node of a fused chain (see
/// `fused.rs`), in the manner of a `futures` `Sink` of chunks: the emitter
/// waits for [`poll_ready`](Stage::poll_ready), hands over a chunk with
/// [`start_send`](Stage::start_send), and drives the stage with
/// [`poll_flush`](Stage::poll_flush) whenever its own node is about to wait.
pub(crate) trait Stage<T>: Send {
    /// Drives the chunk in hand; ready once the stage can take another.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StageStopped>>;
    /// Hands over a chunk; only after `poll_ready` returned `Ok`.
    fn start_send(&mut self, chunk: Chunk<T>);
    /// The empty allocation of the last chunk the stage finished, if it kept
    /// it, for the emitter to fill next.
    fn recycle(&mut self) -> Vec<T>;
    /// Drives everything the stage has in hand, and what it emitted through
    /// the rest of the chain, and fires its due timers; ready when all of it
    /// is done. Arms the stage's timer when it has one. `idle` says that the
    /// task is about to wait (the head of the chain has nothing more ready),
    /// the moment for each node of the chain to write out what it buffers
    /// outside the graph ([`Node::flush`](crate::Node::flush)); otherwise
    /// the flush is one of many while the chain is busy.
    fn poll_flush(&mut self, cx: &mut Context<'_>, idle: bool) -> Poll<Result<(), StageStopped>>;
    /// The input ended: runs the stage's final hook, then closes the rest of
    /// the chain.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StageStopped>>;
}

/// A fused stage stopped for good: it failed (and recorded why in the
/// pipeline's status), or every reader after it stopped.
#[derive(Debug)]
pub(crate) struct StageStopped;

/// A fused output: the stage, and what a port would also have.
pub(crate) struct Fused<T> {
    stage: Box<dyn Stage<T>>,
    closed_token: CancellationToken,
    stats: Arc<NodeStats>,
    /// The watermark of the last chunk handed over.
    sent_mark: Mark,
}

impl<T> Fused<T> {
    pub(crate) fn new(stage: Box<dyn Stage<T>>, closed_token: CancellationToken, stats: Arc<NodeStats>) -> Self {
        // What the stage assumes before its first chunk.
        Self { stage, closed_token, stats, sent_mark: Mark::UNKNOWN }
    }
}

/// The acknowledgements of inputs a node keeps in its state (a batch, a
/// window, a running total), until it emits what it made of them.
///
/// A node that emits later from what it read now must keep those inputs
/// from counting as done in between (a Kafka source would commit them, and
/// a crash would lose them). [`Emitter::hold`] adds the current input's
/// acknowledgements (once per input chunk, however many items of it the
/// node keeps); [`Emitter::adopt`] makes what the node emits next owe them,
/// so they are done once that is. Dropping a `Held` that still holds some
/// abandons them (see [`Acks`]). Acknowledgements travel with chunks, so
/// holding an item keeps its whole input chunk from being done until what
/// the node makes of every item it kept from that chunk is. The built-in
/// batches, windows and keyed folds work this way.
///
/// # Examples
///
/// A node that emits the sum of every three items:
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::acks::Held;
/// use std::convert::Infallible;
///
/// #[derive(Default)]
/// struct SumOfThree {
///     sum: u32,
///     count: u32,
///     held: Held,
/// }
///
/// impl Node for SumOfThree {
///     type In = u32;
///     type Out = u32;
///     type Error = Infallible;
///
///     async fn process(&mut self, x: u32, out: &mut Emitter<u32>) -> Result<(), Infallible> {
///         // `x` is done only once the sum that includes it is.
///         out.hold(&mut self.held);
///         self.sum += x;
///         self.count += 1;
///         if self.count == 3 {
///             out.adopt(&mut self.held);
///             out.emit(std::mem::take(&mut self.sum)).await;
///             self.count = 0;
///         }
///         Ok(())
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let nums = g.source("nums", from_iter(1..=6u32));
/// let sums = g.node("sums", SumOfThree::default(), nums);
/// let (sink, results) = into_stream(4);
/// g.sink("out", sink, sums);
/// g.build()?.run().await?;
/// use futures::StreamExt;
/// assert_eq!(results.collect::<Vec<_>>().await, [6, 15]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct Held {
    acks: Acks,
    seq: u64,
}

impl Held {
    /// Whether it holds no acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }

    /// A copy of what it holds, for an output that owes it too (a join's
    /// pair) while the state keeps holding it.
    pub(crate) fn copy(&self) -> Acks {
        self.acks.clone()
    }

    /// Adds what `other` holds: for state that merges (session windows).
    pub fn merge(&mut self, other: Held) {
        self.acks.merge(other.acks);
        // The same input chunk held twice is harmless (both copies are
        // released together); holding it again is what must not be missed.
        self.seq = 0;
    }
}

impl<T> Core<T> {
    /// Sets the output's watermark, which never goes back: a lower one
    /// (an input that was idle speaking again) keeps the highest so far.
    fn set_mark(&mut self, mark: Mark) {
        let mark = match mark {
            Mark::At(t) => {
                let high = self.high.map_or(t, |h| h.max(t));
                self.high = Some(high);
                Mark::At(high)
            }
            other => other,
        };
        if self.buffer.marks.latest() != mark {
            self.buffer.set_mark(mark);
        }
    }

    fn close_output(&mut self, how: Output<T>) {
        // Every reader after a fused output stopped: say so, as a port does
        // when its last edge closes. (Not when the node ends its own output.)
        if let (Output::Fused(fused), Output::Closed) = (&self.output, &how) {
            fused.closed_token.cancel();
        }
        self.output = how;
        self.buffer.discard();
    }

    /// Whether a split chunk is waiting in the port for some of its readers
    /// (its items are no longer in the buffer).
    fn port_has_parts(&self) -> bool {
        matches!(&self.output, Output::Connected(port) if !port.parts.is_empty())
    }

    /// The node's statistics, for a connected output.
    fn stats(&self) -> Option<&Arc<NodeStats>> {
        match &self.output {
            Output::Connected(port) => Some(&port.stats),
            Output::Fused(fused) => Some(&fused.stats),
            _ => None,
        }
    }

    /// Whether every reader has stopped.
    fn is_closed(&self) -> bool {
        matches!(self.output, Output::Closed)
    }

    /// Whether what is emitted is discarded.
    fn discards(&self) -> bool {
        matches!(self.output, Output::Closed | Output::Ended)
    }

    fn end_input(&mut self) {
        let closed = self.discards();
        let buffer = &mut self.buffer;
        if !buffer.items.is_empty() {
            // The outputs still buffered carry what the input owes.
            buffer.current.move_into(&mut buffer.acks);
        } else if closed {
            // Its outputs were discarded: not done.
            buffer.current = Owed::default();
        } else {
            // Every output derived from the input went out with a copy of its
            // acknowledgements, or there was none: it is done here.
            buffer.current.input.release_all();
            buffer.current.adopted.release_all();
        }
    }
}

impl<T: Send + 'static> Core<T> {
    /// Sends everything buffered, chunk by chunk, and what an interrupted
    /// flush left half-sent.
    fn poll_flush(&mut self, cx: &mut Context<'_>, idle: bool) -> Poll<()> {
        if self.stat_pending {
            self.stat_pending = false;
            if let Some(stats) = self.stats() {
                stats.publish_watermark();
            }
        }
        if let Output::Fused(fused) = &mut self.output {
            return match fused.poll_flush(&mut self.buffer, self.limit, cx, idle) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(())) => Poll::Ready(()),
                Poll::Ready(Err(StageStopped)) => {
                    self.close_output(Output::Closed);
                    Poll::Ready(())
                }
            };
        }
        while !self.buffer.items.is_empty() || self.port_has_parts() {
            let port = match &mut self.output {
                Output::Detached => return Poll::Ready(()),
                Output::Closed | Output::Ended => {
                    self.buffer.discard();
                    return Poll::Ready(());
                }
                Output::Connected(port) => port,
                Output::Fused(_) => unreachable!("handled above"),
            };
            match ready!(port.poll_send_chunk(&mut self.buffer, self.limit, cx)) {
                Delivery::Sent(items) => port.stats.add_sent(items),
                Delivery::Closed => self.close_output(Output::Closed),
            }
        }
        if let Output::Connected(port) = &mut self.output
            && let Delivery::Closed = ready!(port.poll_send_marks(self.buffer.marks.latest(), cx))
        {
            self.close_output(Output::Closed);
        }
        Poll::Ready(())
    }
}

impl<T: Send + 'static> Fused<T> {
    /// Hands every buffered chunk to the stage, then drives it.
    fn poll_flush(
        &mut self,
        buffer: &mut Buffer<T>,
        limit: usize,
        cx: &mut Context<'_>,
        idle: bool,
    ) -> Poll<Result<(), StageStopped>> {
        loop {
            ready!(self.stage.poll_ready(cx))?;
            if buffer.spare.capacity() == 0 {
                buffer.spare = self.stage.recycle();
            }
            if buffer.items.is_empty() {
                let mark = buffer.marks.latest();
                if mark == self.sent_mark {
                    break;
                }
                // Nothing buffered: the watermark goes on alone.
                self.sent_mark = mark;
                self.stage.start_send(Chunk::marker(mark));
                continue;
            }
            // A fused chain never waits on a channel, so it would never give
            // its worker back to the runtime: count each chunk against the
            // task's budget as a channel operation does.
            let coop = ready!(tokio::task::coop::poll_proceed(cx));
            let n = buffer.items.len().min(limit);
            let chunk = buffer.take_front(n);
            self.sent_mark = chunk.mark;
            self.stage.start_send(chunk);
            self.stats.add_sent(n);
            coop.made_progress();
        }
        self.stage.poll_flush(cx, idle)
    }
}

impl<T> Emitter<T> {
    fn new(mut core: Core<T>) -> Self {
        if !core.park_when_closed && !matches!(core.output, Output::Detached) {
            // A node's output says nothing about event time before its
            // input has: it holds the nodes after it back until then. (A
            // source has no event time unless it sets watermarks itself.)
            core.buffer.set_mark(Mark::UNKNOWN);
        }
        Self { core: Arc::new(Mutex::new(core)) }
    }

    fn lock(&self) -> MutexGuard<'_, Core<T>> {
        // A panic never unwinds while the lock is held by the runtime's own
        // code; a node's panic inside `process_now` leaves a consistent
        // buffer behind.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An emitter not connected to any topology: items accumulate and are
    /// taken with [`drain_detached`](Self::drain_detached).
    pub(crate) fn detached() -> Self {
        Self::new(Core {
            buffer: Buffer::new(),
            input_seq: 0,
            limit: usize::MAX,
            park_when_closed: false,
            output: Output::Detached,
            high: None,
            own_marks: false,
            stat_pending: false,
        })
    }

    pub(crate) fn connected(port: Port<T>, source: bool) -> Self {
        let limit = port.chunk_limit();
        Self::new(Core {
            buffer: Buffer::new(),
            input_seq: 0,
            limit,
            park_when_closed: source,
            output: Output::Connected(port),
            high: None,
            own_marks: false,
            stat_pending: false,
        })
    }

    /// An emitter whose output is the next node of a fused chain; `limit` is
    /// the chunk size.
    pub(crate) fn fused(fused: Fused<T>, limit: usize, source: bool) -> Self {
        Self::new(Core {
            buffer: Buffer::new(),
            input_seq: 0,
            limit,
            park_when_closed: source,
            output: Output::Fused(fused),
            high: None,
            own_marks: false,
            stat_pending: false,
        })
    }

    /// A second handle on the same buffer, for the runtime to flush while the
    /// node holds the first one.
    pub(crate) fn handle(&self) -> Self {
        Self { core: self.core.clone() }
    }

    /// Whether every node reading this output has stopped.
    pub fn is_closed(&self) -> bool {
        self.lock().is_closed()
    }

    /// Number of outputs buffered and not yet sent.
    pub fn buffered(&self) -> usize {
        self.lock().buffer.items.len()
    }

    /// Declares that no item with an event time before `watermark` will be
    /// emitted here any more (late items aside): the watermark of this
    /// output, for the nodes after it.
    ///
    /// For sources, and nodes that assign event time: once a node calls it
    /// (or [`mark_idle`](Emitter::mark_idle)), the runtime stops passing its
    /// input's watermark on, and the node's own are what the nodes after
    /// it see. A source with event time calls it before it emits anything
    /// (with [`Timestamp::MIN`] if it knows nothing yet): until then its
    /// output counts as having no event time, which holds nothing back. The watermark travels after every item emitted before the
    /// call. It never goes back: a lower one is ignored. Most pipelines get
    /// their watermarks from [`watermarks`](crate::operators::watermarks) or
    /// the Kafka source instead; see [`time`](crate::time).
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    /// use nanostream::time::Timestamp;
    /// use std::convert::Infallible;
    ///
    /// /// Readings that come in order of time, one per second.
    /// struct Readings(i64);
    ///
    /// impl Source for Readings {
    ///     type Out = (Timestamp, f64);
    ///     type Error = Infallible;
    ///
    ///     async fn run(&mut self, out: &mut Emitter<(Timestamp, f64)>) -> Result<(), Infallible> {
    ///         // Event time from the start.
    ///         out.advance_watermark(Timestamp::MIN);
    ///         for second in 0..self.0 {
    ///             let at = Timestamp::from_millis(second * 1000);
    ///             out.emit((at, 20.0)).await;
    ///             // In order: nothing before `at` will follow.
    ///             out.advance_watermark(at);
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// # let _ = Readings(3);
    /// ```
    pub fn advance_watermark(&mut self, watermark: Timestamp) {
        let mut core = self.lock();
        core.own_marks = true;
        core.set_mark(Mark::At(watermark));
        if let (Mark::At(t), Some(stats)) = (core.buffer.marks.latest(), core.stats()) {
            // Noted now; published in the metrics at the next flush.
            stats.store_watermark(t);
            core.stat_pending = true;
        }
    }

    /// Declares this output idle: it has nothing to say about event time
    /// for now, so nodes that read it with others do not wait for it. The
    /// next [`advance_watermark`](Emitter::advance_watermark) makes it count
    /// again. See [`time`](crate::time).
    pub fn mark_idle(&mut self) {
        let mut core = self.lock();
        core.own_marks = true;
        core.set_mark(Mark::Idle);
    }

    /// Whether the node sets its output's watermarks itself.
    pub(crate) fn owns_marks(&self) -> bool {
        self.lock().own_marks
    }

    /// Passes the watermark of the node's input on, unless the node sets
    /// its own (the final one always goes on).
    pub(crate) fn forward_mark(&mut self, mark: Mark) {
        let mut core = self.lock();
        if !core.own_marks || mark == Mark::END {
            core.set_mark(mark);
        }
    }

    /// Marks the start of an input chunk whose acknowledgements every output
    /// emitted from now on owes.
    pub(crate) fn begin_input(&mut self, acks: Acks) {
        self.begin_input_with(acks, |_, _| ());
    }

    /// Marks the end of the current input chunk (or timer, or final hook).
    pub(crate) fn end_input(&mut self) {
        self.lock().end_input();
    }

    /// Starts an input chunk and fills the buffer from it without awaiting,
    /// under one lock: the per-chunk fast path.
    #[inline]
    pub(crate) fn begin_input_with<R>(&mut self, acks: Acks, fill: impl FnOnce(&mut Vec<T>, usize) -> R) -> R {
        let mut core = self.lock();
        core.buffer.current.input = acks;
        core.input_seq += 1;
        let limit = core.limit;
        fill(&mut core.buffer.items, limit)
    }

    /// Ends an input chunk, keeping its drained allocation to fill next when
    /// the node's input and output types are the same (the memory was just
    /// read by this task, so writing into it is cheaper than into a fresh
    /// allocation). Returns whether every reader has stopped.
    pub(crate) fn end_input_recycling<In: 'static>(&mut self, mut drained: Vec<In>) -> bool
    where
        T: 'static,
    {
        let mut core = self.lock();
        if core.buffer.spare.capacity() == 0
            && let Some(same) = (&mut drained as &mut dyn std::any::Any).downcast_mut::<Vec<T>>()
        {
            same.clear();
            core.buffer.spare = std::mem::take(same);
        }
        core.end_input();
        core.is_closed()
    }

    /// Gives up what the current input owes: the pipeline is torn down, so
    /// the input is not done.
    pub(crate) fn abandon_input(&mut self) {
        let mut core = self.lock();
        core.buffer.current = Owed::default();
    }

    /// Ends the current input; returns whether every reader has stopped.
    pub(crate) fn end_input_closed(&mut self) -> bool {
        let mut core = self.lock();
        core.end_input();
        core.is_closed()
    }

    /// A copy of the acknowledgements owed by the input being processed.
    ///
    /// A node that keeps an input in its own state beyond the call (to emit
    /// something from it later) keeps this copy with it, and hands it back
    /// with [`begin_batch`](Emitter::begin_batch) when it emits; the
    /// built-in windows and batches do so. A copy that is dropped instead
    /// makes the input abandoned, never done (see [`Acks`]).
    pub fn current_acks(&self) -> Acks {
        self.lock().buffer.current.input.clone()
    }

    /// Makes every item emitted from now until [`end_batch`](Emitter::end_batch)
    /// owe `acks` (each chunk sent meanwhile carries a copy).
    ///
    /// Sources that track acknowledgements call it around the items of one
    /// batch they read (one guard per batch, not per item); nodes call it
    /// before emitting from state.
    pub fn begin_batch(&mut self, acks: Acks) {
        let mut acks = acks;
        self.lock().buffer.current.adopted.append(&mut acks);
    }

    /// Gives up a batch a source began and never ended (the runtime stopped
    /// polling it): its acknowledgements are abandoned, since the source may
    /// have meant them for items it never emitted. What it did emit is still
    /// delivered.
    pub(crate) fn abandon_batch(&mut self) {
        drop(std::mem::take(&mut self.lock().buffer.current.adopted));
    }

    /// Ends what [`begin_batch`](Emitter::begin_batch) began: the
    /// acknowledgements now travel with the buffered items, or are released
    /// if every item already went out with a copy (or there was none).
    pub fn end_batch(&mut self) {
        let mut core = self.lock();
        let mut adopted = std::mem::take(&mut core.buffer.current.adopted);
        if !core.buffer.items.is_empty() {
            core.buffer.acks.append(&mut adopted);
        } else if core.discards() {
            drop(adopted);
        } else {
            adopted.release_all();
        }
    }

    /// Attaches acknowledgements to the outputs buffered or emitted next.
    pub(crate) fn owe(&mut self, acks: &mut Acks) {
        self.lock().buffer.acks.append(acks);
    }

    /// Adds the acknowledgements of the input being processed to `held`
    /// (once per input chunk), for a node that keeps something of the input
    /// in its state to emit later; see [`Held`].
    pub fn hold(&self, held: &mut Held) {
        let core = self.lock();
        if held.seq != core.input_seq {
            held.seq = core.input_seq;
            if !core.buffer.current.input.is_empty() {
                held.acks.extend_from(&core.buffer.current.input);
            }
        }
    }

    /// Makes everything emitted from now until the end of the current input
    /// (or timer, or final hook) owe what `held` holds, and empties `held`:
    /// those acknowledgements are done once what is emitted is. See
    /// [`Held`].
    pub fn adopt(&mut self, held: &mut Held) {
        self.lock().buffer.current.adopted.append(&mut held.acks);
        held.seq = 0;
    }

    /// Takes what a detached emitter buffered.
    pub(crate) fn drain_detached(&mut self) -> Vec<T> {
        std::mem::take(&mut self.lock().buffer.items)
    }

    /// Takes what a detached emitter buffered during one input, with what
    /// those items owe: the acknowledgements adopted from state. The copy of
    /// the input's own acknowledgements that the emitter was given is
    /// released: the caller's emitter holds the input's.
    pub(crate) fn take_detached(&mut self) -> (Vec<T>, Acks) {
        let buffer = &mut self.lock().buffer;
        let mut owed = std::mem::take(&mut buffer.acks);
        owed.append(&mut buffer.current.adopted);
        buffer.current.input.release_all();
        (std::mem::take(&mut buffer.items), owed)
    }

    /// Fills the buffer without awaiting: `fill` gets the buffer and the
    /// size at which it must be flushed.
    #[inline]
    pub(crate) fn with_buffer<R>(&mut self, fill: impl FnOnce(&mut Vec<T>, usize) -> R) -> R {
        let mut core = self.lock();
        let limit = core.limit;
        fill(&mut core.buffer.items, limit)
    }
}

impl<T: Send + 'static> Emitter<T> {
    /// Sends one output downstream: `out.emit(item).await`.
    ///
    /// The item is buffered when the future is first polled; the future
    /// waits only when the buffer is full and the downstream edges have no
    /// room, so awaiting it is how a node feels back-pressure. Buffering is
    /// cheap: a full chunk is moved downstream in one channel operation. A
    /// call that is not awaited emits nothing (and the compiler warns).
    ///
    /// # Cancel safety
    ///
    /// Once polled, the item is buffered: dropping the future then never
    /// loses or duplicates it (the next flush sends it). A future dropped
    /// before it was ever polled emits nothing.
    #[inline]
    #[must_use = "`emit` does nothing unless awaited: write `out.emit(item).await`"]
    pub fn emit(&mut self, item: T) -> impl Future<Output = ()> + Send + '_ {
        let mut item = Some(item);
        std::future::poll_fn(move |cx| {
            if let Some(item) = item.take() {
                let full = {
                    let mut core = self.lock();
                    core.buffer.items.push(item);
                    core.buffer.items.len() >= core.limit
                };
                if !full {
                    return Poll::Ready(());
                }
            }
            self.poll_emit_slow(cx)
        })
    }

    /// Sends every item of `items` downstream, in order: the same as
    /// calling [`emit`](Emitter::emit) for each, but whole chunks are
    /// filled at a time, so a source that reads a batch emits it at the cost
    /// of a copy.
    ///
    /// # Cancel safety
    ///
    /// Items taken from the iterator are buffered before the future waits,
    /// so dropping the future loses none of those; the items the iterator
    /// still holds are dropped with it.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    ///
    /// #[node]
    /// async fn digits(line: String, out: &mut Emitter<u32>) {
    ///     out.emit_all(line.chars().filter_map(|c| c.to_digit(10))).await;
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use futures::StreamExt;
    /// let out: Vec<u32> = digits().apply(futures::stream::iter(["a1b2".to_owned()])).map(Result::unwrap).collect().await;
    /// assert_eq!(out, [1, 2]);
    /// # }
    /// ```
    pub async fn emit_all<I>(&mut self, items: I)
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send,
    {
        let mut items = items.into_iter();
        loop {
            let full = self.with_buffer(|buf, limit| {
                buf.extend(items.by_ref().take(limit.saturating_sub(buf.len())));
                buf.len() >= limit
            });
            if !full {
                return;
            }
            std::future::poll_fn(|cx| self.poll_emit_slow(cx)).await;
        }
    }

    /// Flushes a buffer filled through [`with_buffer`](Self::with_buffer);
    /// like `emit`, parks a source whose output is closed, so that its loop
    /// cannot spin.
    pub(crate) async fn flush_or_park(&mut self) {
        std::future::poll_fn(|cx| self.poll_emit_slow(cx)).await;
    }

    #[inline(never)]
    fn poll_emit_slow(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut core = self.lock();
        ready!(core.poll_flush(cx, false));
        if core.park_when_closed && core.is_closed() {
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
    /// `close` are discarded, and what they owe is abandoned.
    pub async fn close(&mut self) {
        self.flush().await;
        self.close_downstream().await;
        self.lock().close_output(Output::Ended);
    }

    /// Ends the input of a fused chain after this output: each node of it
    /// runs its final hook, in order. Nothing to do for an output that is
    /// not fused (its readers see the end when the edges drop).
    pub(crate) fn close_downstream(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::poll_fn(move |cx| self.poll_close_downstream(cx).map(|_| ()))
    }

    pub(crate) fn poll_close_downstream(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StageStopped>> {
        let mut core = self.lock();
        ready!(core.poll_flush(cx, true));
        if core.is_closed() {
            return Poll::Ready(Err(StageStopped));
        }
        let Output::Fused(fused) = &mut core.output else { return Poll::Ready(Ok(())) };
        let closed = ready!(fused.stage.poll_close(cx));
        if closed.is_err() {
            core.close_output(Output::Closed);
        }
        Poll::Ready(closed)
    }

    /// Sends the buffered outputs now, even if the chunk is not full.
    ///
    /// The runtime already flushes whenever a node waits on anything, when
    /// it has no more input ready and when it finishes; calling this is
    /// rarely needed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped, the items not yet sent stay
    /// buffered and no downstream node receives a chunk twice; the next
    /// flush sends them.
    pub fn flush(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::poll_fn(move |cx| self.poll_flush(cx))
    }

    /// Flushes because the node is about to wait.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.lock().poll_flush(cx, true)
    }

    /// Flushes while the node is busy (its buffer is full, or a fused chain
    /// after it takes the chunk just processed).
    pub(crate) fn poll_flush_busy(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.lock().poll_flush(cx, false)
    }

    /// Whether the buffer holds a whole chunk, or anything and the output is
    /// a fused chain: then what the node emitted for one input goes on
    /// before the next input begins, so that one input's outputs never carry
    /// the acknowledgements of the next.
    pub(crate) fn should_pass_on(&self) -> bool {
        let core = self.lock();
        let buffered = core.buffer.items.len();
        buffered > 0 && (matches!(core.output, Output::Fused(_)) || buffered >= core.limit)
    }
}

impl<T> std::fmt::Debug for Emitter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = self.lock();
        f.debug_struct("Emitter")
            .field("item", &std::any::type_name::<T>())
            .field("buffered", &core.buffer.items.len())
            .field("limit", &core.limit)
            .field("closed", &core.is_closed())
            .finish()
    }
}
