//! The loop each task runs: a source's (`drive_source`), or that of a node
//! or sink reading its edges (`drive_input`), which hands each chunk to the
//! node's stage (`runtime/fused.rs`): one processing model, whether a node
//! has a task of its own or runs fused in the task before it.
//!
//! Three rules hold here by construction:
//!
//! - Every future of a node (processing an item, a timer, the final hook, a
//!   source's `run`) is polled so that what the node emitted is sent
//!   whenever the future waits (`flushing` here, the stages' own polling
//!   there): outputs never sit in a buffer while their node sleeps.
//! - Acknowledgements are released only on the success path, after what
//!   owes them is done; on every other path (an error, a panic, the task
//!   aborted) they are dropped, which abandons them (see [`Acks`]).
//! - A failure is recorded in the pipeline's status by the failing task
//!   itself, before its edges drop, so downstream nodes never mistake a
//!   truncated stream for a finished one and the outcome cannot miss it.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::edge::channel::{InputSet, TryNext};
use crate::edge::emitter::{Emitter, Fused, Stage};
use crate::edge::routing::Port;
use crate::error::BoxError;
use crate::graph::wiring::{PortSpec, SharedInputs, SharedPort, fuse_into, take_inputs, take_port};
use crate::node::{Context, Node, Source};
use crate::runtime::fused::node_stage;
use crate::runtime::stats::NodeStats;
use crate::runtime::status::Stop;
use crate::runtime::step::{failure, panic_message};
use crate::time::Mark;

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
            fuse_into(&upstream, node_stage(node, out, env.ctx, None));
            return None;
        }
        let input = InputSet::new(inputs.receivers);
        let stage = node_stage(node, out, env.ctx.clone(), input.shared_queue());
        Some(Box::pin(input_task(stage, input, env)))
    })
}

/// The task of a node or sink that reads edges: it takes chunks from its
/// input and hands them to the node's stage, the same code a fused node
/// runs in the task of the node before it.
async fn input_task<T>(mut stage: Box<dyn Stage<T>>, mut input: InputSet<T>, env: NodeEnv) {
    guarded(drive_input(&mut *stage, &mut input, &env), &env.ctx).await;
}

async fn drive_input<T>(stage: &mut dyn Stage<T>, input: &mut InputSet<T>, env: &NodeEnv) -> Result<(), BoxError> {
    // A stage that stops has recorded why (its failure), or every reader
    // after it stopped (the pipeline is failing): either way, stop reading.
    macro_rules! or_stop {
        ($poll:expr) => {
            if std::future::poll_fn($poll).await.is_err() {
                return Ok(());
            }
        };
    }
    // Sets the node (and the chain after it) up before the first item.
    or_stop!(|cx| stage.poll_flush(cx, true));
    loop {
        let chunk = match input.try_next() {
            TryNext::Chunk(chunk) => chunk,
            TryNext::Closed => break,
            TryNext::Empty => {
                // Nothing more is ready: what the node holds goes out (and a
                // sink writes what it buffers) before waiting.
                or_stop!(|cx| stage.poll_flush(cx, true));
                // Meanwhile the stage's timers fire and a chain after it is
                // driven; this resolves only if the stage stops.
                let stopped = std::future::poll_fn(|cx| match stage.poll_flush(cx, true) {
                    Poll::Ready(Ok(())) | Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(_)) => Poll::Ready(()),
                });
                tokio::select! {
                    biased;
                    next = input.next() => match next {
                        Some(chunk) => chunk,
                        None => break,
                    },
                    () = stopped => return Ok(()),
                }
            }
        };
        or_stop!(|cx| stage.poll_ready(cx));
        stage.start_send(chunk);
        env.ctx.stats().set_queued(input.queued());
        or_stop!(|cx| stage.poll_ready(cx));
    }
    if env.failed() {
        // The input ended because the pipeline is stopping, not because it
        // is complete: no final hook, and what the node holds is abandoned.
        return Ok(());
    }
    or_stop!(|cx| stage.poll_close(cx));
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
        Some(result) => {
            result.map_err(|e| failure(env.ctx.stats(), e))?;
            if !env.ctx.is_shutdown_requested() {
                // The input is exhausted: the final watermark closes what
                // waits on event time. (Not after a shutdown: what was not
                // read would have belonged there.)
                out.forward_mark(Mark::END);
            }
        }
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

/// A sink is a node without output: its stage writes into an emitter that
/// nothing reads (it never emits), and releases what each chunk owes once
/// the chunk is consumed.
pub(crate) fn prepare_sink<K: Node<Out = Infallible>>(sink: K, inputs: SharedInputs<K::In>) -> Prepared {
    Box::new(move |env: NodeEnv| {
        let inputs = take_inputs(&inputs);
        let out = Emitter::detached();
        if let Some(upstream) = inputs.fused_from {
            fuse_into(&upstream, node_stage(sink, out, env.ctx, None));
            return None;
        }
        let stage = node_stage(sink, out, env.ctx.clone(), None);
        Some(Box::pin(input_task(stage, InputSet::new(inputs.receivers), env)))
    })
}
