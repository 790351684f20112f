//! The loop each node task runs.
//!
//! Three rules hold here by construction:
//!
//! - Every future of a node (processing an item, a timer, the final hook, a
//!   source's `run`) is polled through [`flushing`], which sends what the
//!   node emitted whenever the future waits: outputs never sit in a buffer
//!   while their node sleeps.
//! - Acknowledgements are released only on the success path, after what
//!   owes them is done; on every other path (an error, a panic, the task
//!   aborted) they are dropped, which abandons them (see [`Acks`]).
//! - A failure is recorded in the pipeline's status by the failing task
//!   itself, before its edges drop, so downstream nodes never mistake a
//!   truncated stream for a finished one and the outcome cannot miss it.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::builder::{SharedInputs, SharedPort, take_inputs, take_port};
use crate::edge::{Acks, Chunk, InputSet, TryNext};
use crate::emitter::{Emitter, Port};
use crate::error::BoxError;
use crate::node::{Context, Node, Now, Sink, Source};
use crate::stats::NodeStats;
use crate::status::Stop;

/// What the runtime hands a node task when it starts.
pub(crate) struct NodeEnv {
    pub(crate) ctx: Context,
}

impl NodeEnv {
    fn failed(&self) -> bool {
        self.ctx.has_failed()
    }
}

/// A node ready to be spawned once its edges exist.
pub(crate) type Prepared = Box<dyn FnOnce(NodeEnv) -> BoxFuture<'static, ()> + Send>;

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs a node body, recording an error or a panic in the pipeline's status
/// *before* the node's edges are dropped, so that downstream nodes never run
/// their final hooks on a truncated stream.
async fn guarded<F>(body: F, ctx: &Context)
where
    F: Future<Output = Result<(), BoxError>>,
{
    let stop = match AssertUnwindSafe(body).catch_unwind().await {
        Ok(Ok(())) => return,
        Ok(Err(source)) => Stop::Failed { node: ctx.name_arc().clone(), source },
        Err(payload) => Stop::Panicked { node: ctx.name_arc().clone(), message: panic_message(&*payload) },
    };
    ctx.status().record(stop);
}

/// Polls `work`; whenever it is about to wait, sends what the node has
/// emitted through `out` (a second handle on the node's emitter), so that
/// nothing emitted is held back while the node sleeps.
async fn flushing<F: Future, T: Send + 'static>(work: F, out: &mut Emitter<T>) -> F::Output {
    let mut work = pin!(work);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = work.as_mut().poll(cx) {
            return Poll::Ready(done);
        }
        // Back-pressure registers the waker; what cannot go now goes when
        // the task is woken again.
        let _ = out.poll_flush(cx);
        Poll::Pending
    })
    .await
}

fn make_port<T>(spec: crate::builder::PortSpec<T>, closed: CancellationToken, stats: Arc<NodeStats>) -> Port<T> {
    let mut edges = spec.edges;
    // Parts of a split output are addressed by position.
    edges.sort_by_key(|(slot, _)| *slot);
    Port::new(edges.into_iter().map(|(_, edge)| edge).collect(), spec.cloner, spec.policy, closed, stats)
}

pub(crate) fn prepare_node<N: Node>(node: N, inputs: SharedInputs<N::In>, port: SharedPort<N::Out>) -> Prepared {
    Box::new(move |env: NodeEnv| {
        let input = InputSet::new(take_inputs(&inputs));
        let out =
            Emitter::connected(make_port(take_port(&port), CancellationToken::new(), env.ctx.stats().clone()), false);
        Box::pin(node_task(node, input, out, env))
    })
}

async fn node_task<N: Node>(mut node: N, mut input: InputSet<N::In>, mut out: Emitter<N::Out>, env: NodeEnv) {
    guarded(drive_node(&mut node, &mut input, &mut out, &env), &env.ctx).await;
}

/// Where a synchronous run over a chunk stopped.
enum Step<In, E> {
    /// Every item was processed.
    Done,
    /// The output buffer is full and must be flushed before going on.
    Full,
    Fail(E),
    /// This item needs the asynchronous path.
    Later(In),
}

/// Where [`process_now`] stopped, with the iterator and buffer it owned.
type Stopped<N, I> = (Step<<N as Node>::In, <N as Node>::Error>, I, Vec<<N as Node>::Out>);

/// Processes items without awaiting for as long as the node allows.
///
/// A plain function that owns the iterator and the output buffer while it
/// runs, so the per-item loop keeps them in registers instead of writing
/// them back to the task's state on every item.
#[inline]
fn process_now<I, N>(node: &mut N, mut items: I, mut buf: Vec<N::Out>, limit: usize) -> Stopped<N, I>
where
    I: ExactSizeIterator<Item = N::In>,
    N: Node,
{
    if buf.len() >= limit {
        return (Step::Full, items, buf);
    }
    buf.reserve(items.len().min(limit - buf.len()));
    while let Some(item) = items.next() {
        match node.process_now(item) {
            Now::Emit(value) => {
                buf.push(value);
                if buf.len() >= limit {
                    return (Step::Full, items, buf);
                }
            }
            Now::Nothing => {}
            Now::Fail(error) => return (Step::Fail(error), items, buf),
            Now::Later(item) => return (Step::Later(item), items, buf),
        }
    }
    (Step::Done, items, buf)
}

#[inline]
fn consume_now<I, K>(sink: &mut K, mut items: I) -> (Step<K::In, K::Error>, I)
where
    I: Iterator<Item = K::In>,
    K: Sink,
{
    while let Some(item) = items.next() {
        match sink.consume_now(item) {
            Now::Emit(()) | Now::Nothing => {}
            Now::Fail(error) => return (Step::Fail(error), items),
            Now::Later(item) => return (Step::Later(item), items),
        }
    }
    (Step::Done, items)
}

/// What woke a node that was waiting for input.
enum Wake<T> {
    Chunk(Chunk<T>),
    Closed,
    Timer,
}

/// Waits for the next chunk, or for the node's deadline if it has one.
async fn next_or_timer<T>(input: &mut InputSet<T>, deadline: Option<Instant>) -> Wake<T> {
    let next = async {
        match input.next().await {
            Some(chunk) => Wake::Chunk(chunk),
            None => Wake::Closed,
        }
    };
    match deadline {
        None => next.await,
        Some(deadline) => tokio::select! {
            biased;
            wake = next => wake,
            () = tokio::time::sleep_until(deadline) => Wake::Timer,
        },
    }
}

fn due(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| d <= Instant::now())
}

/// Counts an error against the node before it is returned.
fn failure<E: Into<BoxError>>(stats: &NodeStats, error: E) -> BoxError {
    stats.add_error();
    error.into()
}

/// Runs a node's timer, then ends what it emitted.
async fn fire_timer<N: Node>(node: &mut N, out: &mut Emitter<N::Out>, stats: &NodeStats) -> Result<(), BoxError> {
    let mut flusher = out.handle();
    flushing(node.on_timer(out), &mut flusher).await.map_err(|e| failure(stats, e))?;
    out.end_input();
    Ok(())
}

async fn drive_node<N: Node>(
    node: &mut N,
    input: &mut InputSet<N::In>,
    out: &mut Emitter<N::Out>,
    env: &NodeEnv,
) -> Result<(), BoxError> {
    let stats = env.ctx.stats();
    let mut flusher = out.handle();
    let shared = input.shared_queue();
    node.setup(&env.ctx).await.map_err(|e| failure(stats, e))?;
    loop {
        let chunk = match input.try_next() {
            TryNext::Chunk(chunk) => chunk,
            TryNext::Closed => break,
            TryNext::Empty => {
                // Nothing more is ready: send what we hold before waiting, so
                // a lone item is never kept back waiting for a chunk to fill.
                out.flush().await;
                match next_or_timer(input, node.deadline()).await {
                    Wake::Chunk(chunk) => chunk,
                    Wake::Closed => break,
                    Wake::Timer => {
                        fire_timer(node, out, stats).await?;
                        continue;
                    }
                }
            }
        };
        stats.add_received(chunk.items.len(), input.queued());
        let started = Instant::now();
        let mut drained = chunk.items;
        let mut items = drained.drain(..);
        let mut acks = Some(chunk.acks);
        loop {
            let run = |buf: &mut Vec<N::Out>, limit| {
                let (step, rest, filled) = process_now(node, items, std::mem::take(buf), limit);
                *buf = filled;
                (step, rest)
            };
            let (step, rest) = match acks.take() {
                Some(acks) => out.begin_input_with(acks, run),
                None => out.with_buffer(run),
            };
            items = rest;
            let item = match step {
                Step::Done => break,
                Step::Full => {
                    out.flush().await;
                    continue;
                }
                Step::Fail(error) => return Err(failure(stats, error)),
                Step::Later(item) => item,
            };
            let mut gave_back = false;
            let result = {
                let mut work = pin!(node.process(item, out));
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(result) = work.as_mut().poll(cx) {
                        return Poll::Ready(result);
                    }
                    // The node waits on this item. Readers of a shared input
                    // (`parallel` workers) give back the rest of the chunk,
                    // so idle workers take those items now.
                    if let Some(shared) = &shared
                        && !gave_back
                        && items.len() > 0
                    {
                        gave_back = true;
                        shared.give_back(Chunk { items: items.by_ref().collect(), acks: flusher.current_acks() });
                    }
                    let _ = flusher.poll_flush(cx);
                    Poll::Pending
                })
                .await
            };
            result.map_err(|e| failure(stats, e))?;
        }
        drop(items);
        let closed = out.end_input_recycling(drained);
        stats.add_busy(started.elapsed());
        if closed {
            // Every reader is gone (the pipeline is failing): stop reading.
            return Ok(());
        }
        if due(node.deadline()) {
            fire_timer(node, out, stats).await?;
        }
    }
    if env.failed() {
        // The input ended because the pipeline is stopping, not because it
        // is complete: no final hook, and what the node holds is abandoned.
        return Ok(());
    }
    flushing(node.finish(out), &mut flusher).await.map_err(|e| failure(stats, e))?;
    out.end_input();
    out.flush().await;
    Ok(())
}

pub(crate) fn prepare_source<S: Source>(source: S, port: SharedPort<S::Out>) -> Prepared {
    Box::new(move |env: NodeEnv| {
        let closed = CancellationToken::new();
        let out = Emitter::connected(make_port(take_port(&port), closed.clone(), env.ctx.stats().clone()), true);
        Box::pin(source_task(source, out, closed, env))
    })
}

async fn source_task<S: Source>(mut source: S, mut out: Emitter<S::Out>, closed: CancellationToken, env: NodeEnv) {
    guarded(drive_source(&mut source, &mut out, &closed, &env), &env.ctx).await;
}

async fn drive_source<S: Source>(
    source: &mut S,
    out: &mut Emitter<S::Out>,
    closed: &CancellationToken,
    env: &NodeEnv,
) -> Result<(), BoxError> {
    source.setup(&env.ctx).await.map_err(|e| failure(env.ctx.stats(), e))?;
    let cooperative = source.cooperative_shutdown();
    let shutdown = env.ctx.shutdown_token();
    let mut flusher = out.handle();
    let finished = tokio::select! {
        result = flushing(source.run(out), &mut flusher) => Some(result),
        () = shutdown.cancelled(), if !cooperative => None,
        () = closed.cancelled() => None,
    };
    match finished {
        Some(result) => result.map_err(|e| failure(env.ctx.stats(), e))?,
        // Stopped from outside between `begin_batch` and `end_batch`: that
        // batch is not complete.
        None => out.abandon_batch(),
    }
    if env.failed() {
        return Ok(());
    }
    // What the source emitted before it stopped still goes out.
    out.end_input();
    out.flush().await;
    Ok(())
}

pub(crate) fn prepare_sink<K: Sink>(sink: K, inputs: SharedInputs<K::In>) -> Prepared {
    Box::new(move |env: NodeEnv| {
        let input = InputSet::new(take_inputs(&inputs));
        Box::pin(sink_task(sink, input, env))
    })
}

async fn sink_task<K: Sink>(mut sink: K, mut input: InputSet<K::In>, env: NodeEnv) {
    guarded(drive_sink(&mut sink, &mut input, &env), &env.ctx).await;
}

async fn drive_sink<K: Sink>(sink: &mut K, input: &mut InputSet<K::In>, env: &NodeEnv) -> Result<(), BoxError> {
    let stats = env.ctx.stats();
    sink.setup(&env.ctx).await.map_err(|e| failure(stats, e))?;
    loop {
        let chunk = match input.try_next() {
            TryNext::Chunk(chunk) => chunk,
            TryNext::Closed => break,
            TryNext::Empty => {
                sink.flush().await.map_err(|e| failure(stats, e))?;
                match next_or_timer(input, sink.deadline()).await {
                    Wake::Chunk(chunk) => chunk,
                    Wake::Closed => break,
                    Wake::Timer => {
                        sink.on_timer().await.map_err(|e| failure(stats, e))?;
                        continue;
                    }
                }
            }
        };
        stats.add_received(chunk.items.len(), input.queued());
        let started = Instant::now();
        // Released once every item of the chunk is consumed; on any early
        // return (an error, a panic, the task aborted) dropped: not done.
        let consumed: Acks = sink.hold(chunk.acks);
        let mut items = chunk.items.into_iter();
        loop {
            let (step, rest) = consume_now(sink, items);
            items = rest;
            match step {
                Step::Done => break,
                Step::Full => unreachable!("a sink has no output buffer"),
                Step::Fail(error) => return Err(failure(stats, error)),
                Step::Later(item) => sink.consume(item).await.map_err(|e| failure(stats, e))?,
            }
        }
        if env.failed() {
            // The pipeline failed meanwhile (perhaps this sink said so with
            // `Context::fail` about an item its policy then skipped): from
            // then on nothing is released as done.
            drop(consumed);
        } else {
            consumed.release();
        }
        stats.add_busy(started.elapsed());
        if due(sink.deadline()) {
            sink.on_timer().await.map_err(|e| failure(stats, e))?;
        }
    }
    if env.failed() {
        return Ok(());
    }
    sink.flush().await.map_err(|e| failure(stats, e))?;
    sink.finish().await.map_err(|e| failure(stats, e))?;
    Ok(())
}
