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

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::edge::acks::Acks;
use crate::edge::channel::{Chunk, InputSet, TryNext};
use crate::edge::emitter::{Emitter, Fused, Port};
use crate::error::BoxError;
use crate::graph::wiring::{PortSpec, SharedInputs, SharedPort, fuse_into, take_inputs, take_port};
use crate::node::{Context, Node, Sink, Source};
use crate::runtime::fused::{node_stage, sink_stage};
use crate::runtime::stats::{BusyClock, NodeStats};
use crate::runtime::status::Stop;
use crate::runtime::step::{Step, consume_now, failure, panic_message, process_now};

/// What the runtime hands a node task when it starts.
pub(crate) struct NodeEnv {
    pub(crate) ctx: Context,
}

impl NodeEnv {
    fn failed(&self) -> bool {
        self.ctx.has_failed()
    }
}

/// A node ready to start once its edges exist: returns its task, or `None`
/// when the node joined the task of the node before it (a fused chain).
/// Nodes are started from the last to the first, so that a fused node's
/// stage is in place when the node before it makes its output.
pub(crate) type Prepared = Box<dyn FnOnce(NodeEnv) -> Option<BoxFuture<'static, ()>> + Send>;

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

/// The emitter of a node: into a fused stage, or onto its edges.
fn make_output<T: Send + 'static>(
    spec: PortSpec<T>,
    closed: CancellationToken,
    stats: Arc<NodeStats>,
    source: bool,
) -> Emitter<T> {
    if let Some(stage) = spec.fused {
        return Emitter::fused(Fused::new(stage, closed, stats), spec.chunk_size, source);
    }
    let mut edges = spec.edges;
    // Parts of a split output are addressed by position.
    edges.sort_by_key(|(slot, _)| *slot);
    let port = Port::new(edges.into_iter().map(|(_, edge)| edge).collect(), spec.cloner, spec.policy, closed, stats);
    Emitter::connected(port, source)
}

pub(crate) fn prepare_node<N: Node>(node: N, inputs: SharedInputs<N::In>, port: SharedPort<N::Out>) -> Prepared {
    Box::new(move |env: NodeEnv| {
        let inputs = take_inputs(&inputs);
        let out = make_output(take_port(&port), CancellationToken::new(), env.ctx.stats().clone(), false);
        if let Some(upstream) = inputs.fused_from {
            fuse_into(&upstream, node_stage(node, out, env.ctx));
            return None;
        }
        Some(Box::pin(node_task(node, InputSet::new(inputs.receivers), out, env)))
    })
}

async fn node_task<N: Node>(mut node: N, mut input: InputSet<N::In>, mut out: Emitter<N::Out>, env: NodeEnv) {
    guarded(drive_node(&mut node, &mut input, &mut out, &env), &env.ctx).await;
}

/// What woke a node that was waiting for input.
enum Wake<T> {
    Chunk(Chunk<T>),
    Closed,
    Timer,
    /// Every reader of the node's output has stopped.
    OutputClosed,
}

/// Waits for the next chunk, or for the node's deadline if it has one.
///
/// Meanwhile `downstream` drives the fused chain after the node, if any (its
/// timers fire, what it holds moves on); it resolves once every reader of
/// the node's output has stopped.
async fn next_or_timer<T>(
    input: &mut InputSet<T>,
    deadline: Option<Instant>,
    downstream: impl Future<Output = ()>,
) -> Wake<T> {
    let next = async {
        match input.next().await {
            Some(chunk) => Wake::Chunk(chunk),
            None => Wake::Closed,
        }
    };
    let timer = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        wake = next => wake,
        () = timer => Wake::Timer,
        () = downstream => Wake::OutputClosed,
    }
}

fn due(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| d <= Instant::now())
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
    let mut busy = BusyClock::default();
    node.setup(&env.ctx).await.map_err(|e| failure(stats, e))?;
    // A fused chain after the node sets up now, not at the first item.
    out.flush().await;
    loop {
        let chunk = match input.try_next() {
            TryNext::Chunk(chunk) => chunk,
            TryNext::Closed => break,
            TryNext::Empty => {
                // Nothing more is ready: send what we hold before waiting, so
                // a lone item is never kept back waiting for a chunk to fill.
                out.flush().await;
                let deadline = node.deadline();
                let mut downstream = out.handle();
                match next_or_timer(input, deadline, std::future::poll_fn(|cx| downstream.poll_drive(cx))).await {
                    Wake::Chunk(chunk) => chunk,
                    Wake::Closed => break,
                    // The pipeline is failing: stop reading.
                    Wake::OutputClosed => return Ok(()),
                    Wake::Timer => {
                        fire_timer(node, out, stats).await?;
                        continue;
                    }
                }
            }
        };
        stats.add_received(chunk.items.len(), input.queued());
        let started = busy.start();
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
                    out.flush_busy().await;
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
        stats.add_busy_since(started);
        if closed {
            // Every reader is gone (the pipeline is failing): stop reading.
            return Ok(());
        }
        if out.should_pass_on() {
            // A fused chain takes this chunk's outputs now (its timers and
            // sinks keep pace with the input); a full buffer goes out before
            // the next input's acknowledgements are installed.
            out.flush_busy().await;
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
    out.close_downstream().await;
    Ok(())
}

pub(crate) fn prepare_source<S: Source>(source: S, port: SharedPort<S::Out>) -> Prepared {
    Box::new(move |env: NodeEnv| {
        let closed = CancellationToken::new();
        let out = make_output(take_port(&port), closed.clone(), env.ctx.stats().clone(), true);
        Some(Box::pin(source_task(source, out, closed, env)))
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
    // A fused chain after the source sets up now, not at the first item.
    out.flush().await;
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
    out.close_downstream().await;
    Ok(())
}

pub(crate) fn prepare_sink<K: Sink>(sink: K, inputs: SharedInputs<K::In>) -> Prepared {
    Box::new(move |env: NodeEnv| {
        let inputs = take_inputs(&inputs);
        if let Some(upstream) = inputs.fused_from {
            fuse_into(&upstream, sink_stage(sink, env.ctx));
            return None;
        }
        Some(Box::pin(sink_task(sink, InputSet::new(inputs.receivers), env)))
    })
}

async fn sink_task<K: Sink>(mut sink: K, mut input: InputSet<K::In>, env: NodeEnv) {
    guarded(drive_sink(&mut sink, &mut input, &env), &env.ctx).await;
}

async fn drive_sink<K: Sink>(sink: &mut K, input: &mut InputSet<K::In>, env: &NodeEnv) -> Result<(), BoxError> {
    let stats = env.ctx.stats();
    let mut busy = BusyClock::default();
    sink.setup(&env.ctx).await.map_err(|e| failure(stats, e))?;
    loop {
        let chunk = match input.try_next() {
            TryNext::Chunk(chunk) => chunk,
            TryNext::Closed => break,
            TryNext::Empty => {
                sink.flush().await.map_err(|e| failure(stats, e))?;
                match next_or_timer(input, sink.deadline(), std::future::pending()).await {
                    Wake::Chunk(chunk) => chunk,
                    Wake::Closed | Wake::OutputClosed => break,
                    Wake::Timer => {
                        sink.on_timer().await.map_err(|e| failure(stats, e))?;
                        continue;
                    }
                }
            }
        };
        stats.add_received(chunk.items.len(), input.queued());
        let started = busy.start();
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
        stats.add_busy_since(started);
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
