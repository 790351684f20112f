//! Fused chains: a node joined to the node before it by a one-to-one edge
//! runs inside that node's task, as a [`Stage`] of its output.
//!
//! The upstream emitter hands each chunk it would have sent over a channel
//! to the stage instead, and the stage runs its node's per-item step over
//! the chunk at once, writing into its own emitter, which may feed the next
//! stage. No queue, no wake-up and no cross-core hand-off between them: a
//! chain of `map`s costs about what a hand-written loop over a `Vec` costs.
//!
//! Each stage keeps what a node task gives its node: its own name (in
//! errors, panics and metrics), `setup` before anything else, the
//! synchronous fast path with the asynchronous fallback, timers, `finish`
//! after the last item, acknowledgements released only on the success path,
//! and "flush before waiting": while a stage's future waits, what the stage
//! emitted moves on downstream. Back-pressure needs no queue here: a stage
//! that cannot take a chunk keeps its upstream emitter's `flush` pending,
//! which is where its node awaits.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context as TaskCx, Poll, ready};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

use crate::edge::acks::Acks;
use crate::edge::channel::{Chunk, GiveBack};
use crate::edge::emitter::{Emitter, Stage, StageStopped};
use crate::node::{Context, Node};
use crate::runtime::stats::{BusyClock, Started};
use crate::runtime::status::Stop;
use crate::runtime::step::{Step, failure, panic_message, process_now};
use crate::time::{Mark, Timestamp};

type Panic = Box<dyn Any + Send>;
/// A call into the node that needs the asynchronous path: the node is moved
/// into the future while it runs and comes back with its result.
type Call<N, E> = BoxFuture<'static, Result<(N, Result<(), E>), Panic>>;

/// The items of a chunk not processed yet.
enum Items<T> {
    /// A whole chunk as it arrived.
    Fresh(Vec<T>),
    /// What was left when processing stopped part way, last item first (so
    /// that taking the next one is a `pop`, and the allocation stays), and
    /// the chunk's own allocation, to recycle when the chunk is done.
    Rest { stack: Vec<T>, drained: Vec<T> },
}

/// Keeps a drained chunk's allocation for the emitter before the stage,
/// which would otherwise allocate one for every chunk (and a large
/// allocation for every chunk makes the system allocator consolidate what
/// the items freed, every time).
fn give_back<T>(slot: &mut Vec<T>, mut drained: Vec<T>) {
    drained.clear();
    *slot = drained;
}

/// The items of a reversed `Vec`, in their original order.
struct Popping<'a, T>(&'a mut Vec<T>);

impl<T> Iterator for Popping<'_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        self.0.pop()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.0.len(), Some(self.0.len()))
    }
}

impl<T> ExactSizeIterator for Popping<'_, T> {}

/// What to do when a call finishes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    Setup,
    /// A timer, or the final hook: end what it emitted.
    EndInput,
    /// The node saw a watermark: end what it emitted, then pass the
    /// watermark on after it.
    Watermark(Mark),
}

/// Where a stage is in its life.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// The final hook ran (or was skipped); flushing and closing downstream.
    Closing,
    Closed,
}

fn guarded<F: Future + Send + 'static>(work: F, span: &tracing::Span) -> BoxFuture<'static, Result<F::Output, Panic>> {
    AssertUnwindSafe(work.instrument(span.clone())).catch_unwind().boxed()
}

/// A call kept in a slot allocated once (see [`NodeStage`]).
type Slot<F> = Pin<Box<Option<F>>>;

/// How a call ended: the node back with its result, or a panic.
type Called<N, E> = Result<(N, Result<(), E>), Panic>;

/// Polls the call in `slot` inside the node's span, catching a panic, and
/// empties the slot once the call is over. Ready with the node and its
/// result, or with a panic.
fn poll_slot<N, E, F>(slot: &mut Slot<F>, span: &tracing::Span, cx: &mut TaskCx<'_>) -> Poll<Called<N, E>>
where
    F: Future<Output = (N, Result<(), E>)>,
{
    let polled = {
        let _entered = span.enter();
        let call = slot.as_mut().as_pin_mut().expect("nanostream: a call in progress");
        std::panic::catch_unwind(AssertUnwindSafe(|| call.poll(cx)))
    };
    match polled {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(done)) => {
            slot.set(None);
            Poll::Ready(Ok(done))
        }
        Err(panic) => {
            slot.set(None);
            Poll::Ready(Err(panic))
        }
    }
}

/// What a stage and its node share: the name for errors, the timer.
struct Shared {
    ctx: Context,
    busy: BusyClock,
    timer: Option<Pin<Box<Sleep>>>,
    /// The node's span: its code runs in it, as in a task of its own.
    span: tracing::Span,
}

impl Shared {
    fn new(ctx: Context) -> Self {
        let span = tracing::info_span!("node", name = %ctx.name());
        Self { ctx, busy: BusyClock::default(), timer: None, span }
    }
}

impl Shared {
    fn fail<E: Into<crate::error::BoxError>>(&self, error: E) -> StageStopped {
        let source = failure(self.ctx.stats(), error);
        self.ctx.status().record(Stop::Failed { node: self.ctx.name_arc().clone(), source });
        StageStopped
    }

    fn panicked(&self, payload: &Panic) -> StageStopped {
        self.ctx
            .status()
            .record(Stop::Panicked { node: self.ctx.name_arc().clone(), message: panic_message(&**payload) });
        StageStopped
    }

    /// Whether `deadline` has passed; if not, arms the timer so that the
    /// task wakes when it does.
    fn due(&mut self, deadline: Option<Instant>, cx: &mut TaskCx<'_>) -> bool {
        let Some(deadline) = deadline else {
            self.timer = None;
            return false;
        };
        if deadline <= Instant::now() {
            return true;
        }
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

/// Makes `node` a stage of the emitter before it, writing into `out`.
///
/// `give_back` is the shared input of a `parallel` worker: while the node
/// waits on one item, the rest of its chunk goes back there, so that idle
/// workers take those items now.
pub(crate) fn node_stage<N: Node>(
    node: N,
    out: Emitter<N::Out>,
    ctx: Context,
    give_back: Option<GiveBack<N::In>>,
) -> Box<dyn Stage<N::In>> {
    let mut stage = NodeStage::new(node, out, ctx, process_call::<N>, flush_call::<N>);
    stage.give_back = give_back;
    Box::new(stage)
}

/// A node's `flush`, run whenever its task is about to wait after some
/// input: kept in an allocation made once, like the items' futures.
async fn flush_call<N: Node>(mut node: N, mut out: Emitter<N::Out>) -> (N, Result<(), N::Error>) {
    let result = node.flush(&mut out).await;
    (node, result)
}

/// The asynchronous path for one item: the node moves into the future and
/// comes back with the result.
async fn process_call<N: Node>(mut node: N, item: N::In, mut out: Emitter<N::Out>) -> (N, Result<(), N::Error>) {
    let result = node.process(item, &mut out).await;
    (node, result)
}

/// A [`Node`] (or a sink: a node without output) running as a stage of the
/// emitter before it. `F` is the future of [`process_call`] and `G` that of
/// [`flush_call`]: each kept in one allocation made once, so that an item
/// whose future is ready at once costs no allocation.
pub(crate) struct NodeStage<N: Node, F, G> {
    /// `None` while a call holds it.
    node: Option<N>,
    out: Emitter<N::Out>,
    work: NodeWork<N>,
    /// The item in progress on the asynchronous path.
    item: Slot<F>,
    make: fn(N, N::In, Emitter<N::Out>) -> F,
    /// The node's `flush` in progress.
    flushing: Slot<G>,
    make_flush: fn(N, Emitter<N::Out>) -> G,
    /// An empty allocation for the rest of an interrupted chunk.
    stack: Vec<N::In>,
    /// The allocation of the last chunk, for the emitter before this stage.
    returned: Vec<N::In>,
    /// See [`node_stage`].
    give_back: Option<GiveBack<N::In>>,
    /// With `give_back`: a copy of what the chunk in progress owes, for the
    /// items given back (the node's `hold` may keep the chunk's own).
    /// Released once the chunk is processed.
    chunk_acks: Option<Acks>,
    /// Processed input since the node's last `flush`.
    dirty: bool,
    /// The watermark of the chunk in progress.
    chunk_mark: Mark,
    /// The input's watermark, as last applied.
    input_mark: Mark,
    /// The last watermark the node saw in `on_watermark`.
    watermark: Option<Timestamp>,
    phase: Phase,
    shared: Shared,
}

enum NodeWork<N: Node> {
    Idle,
    Chunk {
        items: Items<N::In>,
        acks: Option<Acks>,
        started: Started,
    },
    /// An item on the asynchronous path (in `item`), then the rest of its
    /// chunk.
    Item {
        rest: Items<N::In>,
        started: Started,
    },
    /// The node's `flush` (in `flushing`).
    Flush,
    /// The input's watermark after the chunk just processed.
    Mark(Mark),
    Call {
        call: Call<N, N::Error>,
        after: After,
    },
}

impl<N: Node, F, G> NodeStage<N, F, G>
where
    F: Future<Output = (N, Result<(), N::Error>)> + Send + 'static,
    G: Future<Output = (N, Result<(), N::Error>)> + Send + 'static,
{
    fn new(
        node: N,
        out: Emitter<N::Out>,
        ctx: Context,
        make: fn(N, N::In, Emitter<N::Out>) -> F,
        make_flush: fn(N, Emitter<N::Out>) -> G,
    ) -> Self {
        let shared = Shared::new(ctx);
        let setup_ctx = shared.ctx.clone();
        let call = guarded(
            async move {
                let mut node = node;
                let result = node.setup(&setup_ctx).await;
                (node, result)
            },
            &shared.span,
        );
        Self {
            node: None,
            out,
            work: NodeWork::Call { call, after: After::Setup },
            item: Box::pin(None),
            make,
            flushing: Box::pin(None),
            make_flush,
            stack: Vec::new(),
            returned: Vec::new(),
            give_back: None,
            chunk_acks: None,
            dirty: false,
            chunk_mark: Mark::UNKNOWN,
            input_mark: Mark::UNKNOWN,
            watermark: None,
            phase: Phase::Open,
            shared,
        }
    }

    fn call<C>(&mut self, make: impl FnOnce(N, Emitter<N::Out>) -> C) -> Call<N, N::Error>
    where
        C: Future<Output = (N, Result<(), N::Error>)> + Send + 'static,
    {
        let node = self.node.take().expect("nanostream: a fused node is called while a call holds it");
        guarded(make(node, self.out.handle()), &self.shared.span)
    }

    fn timer(&mut self) -> Call<N, N::Error> {
        self.call(|mut node, mut out| async move {
            let result = node.on_timer(&mut out).await;
            (node, result)
        })
    }

    fn on_watermark(&mut self, watermark: Timestamp) -> Call<N, N::Error> {
        self.call(move |mut node, mut out| async move {
            let result = node.on_watermark(watermark, &mut out).await;
            (node, result)
        })
    }

    fn finish(&mut self) -> Call<N, N::Error> {
        self.call(|mut node, mut out| async move {
            let result = node.finish(&mut out).await;
            (node, result)
        })
    }

    /// A call into the node is over: the node is back, or it panicked or
    /// failed (recorded, and the stage stops).
    fn called(&mut self, done: Called<N, N::Error>) -> Result<(), StageStopped> {
        match done {
            Err(panic) => Err(self.shared.panicked(&panic)),
            Ok((node, result)) => {
                self.node = Some(node);
                result.map_err(|error| self.shared.fail(error))
            }
        }
    }

    /// Runs the work in hand until it is done or must wait.
    fn drive(&mut self, cx: &mut TaskCx<'_>) -> Poll<Result<(), StageStopped>> {
        loop {
            match std::mem::replace(&mut self.work, NodeWork::Idle) {
                NodeWork::Idle => return Poll::Ready(Ok(())),
                NodeWork::Chunk { items, acks, started } => {
                    let node = self.node.as_mut().expect("nanostream: a fused node is missing between calls");
                    let entered = self.shared.span.enter();
                    let ran = run_now(node, &mut self.out, items, acks, &mut self.stack);
                    drop(entered);
                    let (step, rest) = match ran {
                        Ok(ran) => ran,
                        Err(panic) => return Poll::Ready(Err(self.shared.panicked(&panic))),
                    };
                    match step {
                        Step::Done => {
                            let drained = match rest {
                                Items::Fresh(drained) => drained,
                                Items::Rest { stack, drained } => {
                                    self.stack = stack;
                                    drained
                                }
                            };
                            self.dirty = true;
                            let given_back = self.chunk_acks.take();
                            if self.shared.ctx.has_failed() {
                                // Torn down meanwhile: nothing new is done.
                                self.out.abandon_input();
                            } else if let Some(acks) = given_back {
                                acks.release();
                            }
                            // The emitter before this stage gets the allocation
                            // back for its next chunk, unless it has not taken
                            // the last one: then this node's own output may.
                            let closed = if self.returned.capacity() == 0 {
                                give_back(&mut self.returned, drained);
                                self.out.end_input_closed()
                            } else {
                                self.out.end_input_recycling(drained)
                            };
                            self.shared.ctx.stats().add_busy_since(started);
                            if closed {
                                return Poll::Ready(Err(StageStopped));
                            }
                            self.work = NodeWork::Mark(self.chunk_mark);
                        }
                        Step::Full => {
                            self.work = NodeWork::Chunk { items: rest, acks: None, started };
                            ready!(self.out.poll_flush_busy(cx));
                            if self.out.is_closed() {
                                return Poll::Ready(Err(StageStopped));
                            }
                        }
                        Step::Fail(error) => return Poll::Ready(Err(self.shared.fail(error))),
                        Step::Later(item) => {
                            let node = self.node.take().expect("nanostream: a fused node is missing between calls");
                            self.item.set(Some((self.make)(node, item, self.out.handle())));
                            self.work = NodeWork::Item { rest, started };
                        }
                    }
                }
                NodeWork::Item { rest, started } => {
                    match poll_slot(&mut self.item, &self.shared.span, cx) {
                        Poll::Pending => {
                            let mut rest = rest;
                            if let (Some(queue), Items::Rest { stack, .. }) = (&self.give_back, &mut rest)
                                && !stack.is_empty()
                            {
                                // Idle workers take the rest of the chunk now.
                                let mut items = std::mem::take(stack);
                                items.reverse();
                                let acks = self.chunk_acks.clone().unwrap_or_else(|| self.out.current_acks());
                                queue.give_back(Chunk { items, acks, mark: self.chunk_mark });
                            }
                            self.work = NodeWork::Item { rest, started };
                            // The node waits: what it emitted goes on meanwhile.
                            let _ = self.out.poll_flush(cx);
                            return Poll::Pending;
                        }
                        Poll::Ready(done) => {
                            self.called(done)?;
                            self.work = NodeWork::Chunk { items: rest, acks: None, started };
                        }
                    }
                }
                NodeWork::Flush => match poll_slot(&mut self.flushing, &self.shared.span, cx) {
                    Poll::Pending => {
                        self.work = NodeWork::Flush;
                        let _ = self.out.poll_flush(cx);
                        return Poll::Pending;
                    }
                    Poll::Ready(done) => {
                        self.called(done)?;
                        if self.out.end_input_closed() {
                            return Poll::Ready(Err(StageStopped));
                        }
                    }
                },
                NodeWork::Mark(mark) => {
                    if mark == self.input_mark {
                        continue;
                    }
                    self.input_mark = mark;
                    match mark {
                        Mark::At(t)
                            if t > Timestamp::MIN
                                && self.watermark.is_none_or(|seen| t > seen)
                                && !self.shared.ctx.has_failed() =>
                        {
                            self.watermark = Some(t);
                            if !self.out.owns_marks() {
                                // A node that sets its own shows those.
                                self.shared.ctx.stats().set_watermark(t);
                            }
                            let call = self.on_watermark(t);
                            self.work = NodeWork::Call { call, after: After::Watermark(mark) };
                        }
                        _ => self.out.forward_mark(mark),
                    }
                }
                NodeWork::Call { mut call, after } => match call.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.work = NodeWork::Call { call, after };
                        // The node waits: what it emitted goes on meanwhile.
                        let _ = self.out.poll_flush(cx);
                        return Poll::Pending;
                    }
                    Poll::Ready(done) => {
                        self.called(done)?;
                        if after != After::Setup && self.out.end_input_closed() {
                            return Poll::Ready(Err(StageStopped));
                        }
                        if let After::Watermark(mark) = after {
                            self.out.forward_mark(mark);
                        }
                    }
                },
            }
        }
    }
}

/// Where [`run_now`] stopped, with the items left (all of them drained
/// when the chunk is done).
type Ran<N> = (Step<<N as Node>::In, <N as Node>::Error>, Items<<N as Node>::In>);

/// Runs the synchronous path over a chunk; a panic of the node is caught
/// inside the emitter's lock and returned, so that it never unwinds through
/// the runtime's code (nor the emitters of the stages before this one).
/// `spare` is an empty allocation to keep the rest of a chunk in.
fn run_now<N: Node>(
    node: &mut N,
    out: &mut Emitter<N::Out>,
    items: Items<N::In>,
    acks: Option<Acks>,
    spare: &mut Vec<N::In>,
) -> Result<Ran<N>, Panic> {
    let run = |buf: &mut Vec<N::Out>, limit: usize| match items {
        Items::Fresh(mut drained) => {
            let (step, drain, filled) = process_now(node, drained.drain(..), std::mem::take(buf), limit);
            *buf = filled;
            if let Step::Done = step {
                drop(drain);
                return (step, Items::Fresh(drained));
            }
            let mut stack = std::mem::take(spare);
            stack.extend(drain);
            stack.reverse();
            (step, Items::Rest { stack, drained })
        }
        Items::Rest { mut stack, drained } => {
            let (step, _, filled) = process_now(node, Popping(&mut stack), std::mem::take(buf), limit);
            *buf = filled;
            (step, Items::Rest { stack, drained })
        }
    };
    let run = |buf: &mut Vec<N::Out>, limit: usize| std::panic::catch_unwind(AssertUnwindSafe(|| run(buf, limit)));
    match acks {
        Some(acks) => out.begin_input_with(acks, run),
        None => out.with_buffer(run),
    }
}

impl<N: Node, F, G> Stage<N::In> for NodeStage<N, F, G>
where
    F: Future<Output = (N, Result<(), N::Error>)> + Send + 'static,
    G: Future<Output = (N, Result<(), N::Error>)> + Send + 'static,
{
    fn poll_ready(&mut self, cx: &mut TaskCx<'_>) -> Poll<Result<(), StageStopped>> {
        ready!(self.drive(cx))?;
        let deadline = self.node.as_ref().and_then(Node::deadline);
        if self.phase == Phase::Open && self.shared.due(deadline, cx) {
            // A timer keeps its time while input keeps coming.
            ready!(tokio::task::coop::poll_proceed(cx)).made_progress();
            let call = self.timer();
            self.work = NodeWork::Call { call, after: After::EndInput };
            ready!(self.drive(cx))?;
        }
        if self.out.should_pass_on() {
            // The last chunk's outputs go on before the next chunk begins.
            ready!(self.out.poll_flush_busy(cx));
            if self.out.is_closed() {
                return Poll::Ready(Err(StageStopped));
            }
        }
        Poll::Ready(Ok(()))
    }

    fn recycle(&mut self) -> Vec<N::In> {
        std::mem::take(&mut self.returned)
    }

    fn start_send(&mut self, chunk: Chunk<N::In>) {
        debug_assert!(matches!(self.work, NodeWork::Idle), "a stage takes a chunk only when ready");
        if chunk.items.is_empty() {
            // Only a watermark: nothing to process, hold or release.
            self.work = NodeWork::Mark(chunk.mark);
            return;
        }
        self.chunk_mark = chunk.mark;
        self.shared.ctx.stats().add_received(chunk.items.len(), 0);
        let node = self.node.as_mut().expect("nanostream: a fused node is missing between calls");
        if self.give_back.is_some() {
            self.chunk_acks = Some(chunk.acks.clone());
        }
        let acks = node.hold(chunk.acks);
        self.work =
            NodeWork::Chunk { items: Items::Fresh(chunk.items), acks: Some(acks), started: self.shared.busy.start() };
    }

    fn poll_flush(&mut self, cx: &mut TaskCx<'_>, idle: bool) -> Poll<Result<(), StageStopped>> {
        loop {
            ready!(self.drive(cx))?;
            if idle && self.dirty && self.phase == Phase::Open {
                self.dirty = false;
                if self.shared.ctx.has_failed() {
                    // Nothing is written out, so nothing is done, once the
                    // pipeline is failing.
                    continue;
                }
                // The task has nothing more ready: the moment for the node
                // to write out what it buffers outside the graph.
                let node = self.node.take().expect("nanostream: a fused node is missing between calls");
                self.flushing.set(Some((self.make_flush)(node, self.out.handle())));
                self.work = NodeWork::Flush;
                continue;
            }
            ready!(if idle { self.out.poll_flush(cx) } else { self.out.poll_flush_busy(cx) });
            if self.out.is_closed() {
                return Poll::Ready(Err(StageStopped));
            }
            let deadline = self.node.as_ref().and_then(Node::deadline);
            if self.phase == Phase::Open && self.shared.due(deadline, cx) {
                // Counted against the task's budget, so that a deadline that
                // stays in the past cannot keep the task from yielding.
                ready!(tokio::task::coop::poll_proceed(cx)).made_progress();
                let call = self.timer();
                self.work = NodeWork::Call { call, after: After::EndInput };
                continue;
            }
            return Poll::Ready(Ok(()));
        }
    }

    fn poll_close(&mut self, cx: &mut TaskCx<'_>) -> Poll<Result<(), StageStopped>> {
        loop {
            ready!(self.poll_flush(cx, true))?;
            match self.phase {
                Phase::Open => {
                    self.phase = Phase::Closing;
                    self.shared.timer = None;
                    if !self.shared.ctx.has_failed() {
                        let call = self.finish();
                        self.work = NodeWork::Call { call, after: After::EndInput };
                    }
                }
                Phase::Closing => {
                    if self.shared.ctx.has_failed() {
                        // No final hooks once the pipeline is failing.
                        self.phase = Phase::Closed;
                        continue;
                    }
                    ready!(self.out.poll_close_downstream(cx))?;
                    self.phase = Phase::Closed;
                }
                Phase::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}
