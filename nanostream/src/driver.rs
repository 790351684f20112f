//! The loop each node task runs.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::sync::PollSender;

use crate::builder::{SharedInputs, SharedPort, take_inputs, take_port};
use crate::edge::{Acks, Chunk, InputSet, TryNext};
use crate::emitter::{Emitter, Port};
use crate::error::BoxError;
use crate::node::{Context, Node, Now, Sink, Source};
use crate::stats::NodeStats;

/// Why a node task ended badly.
#[derive(Debug)]
pub(crate) enum NodeFailure {
    Error(BoxError),
    Panic(String),
}

pub(crate) type NodeResult = Result<(), NodeFailure>;

/// What the runtime hands a node task when it starts.
pub(crate) struct NodeEnv {
    pub(crate) ctx: Context,
    /// Cancelled as soon as any node fails: nodes that then see their input
    /// end must not mistake it for a normal end of stream.
    pub(crate) failed: CancellationToken,
}

/// A node ready to be spawned once its edges exist.
pub(crate) type Prepared = Box<dyn FnOnce(NodeEnv) -> BoxFuture<'static, NodeResult> + Send>;

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs a node body, turning an error or a panic into a failure that is
/// published *before* the node's edges are dropped, so that downstream nodes
/// never run their final hooks on a truncated stream.
async fn guarded<F>(body: F, failed: &CancellationToken) -> NodeResult
where
    F: Future<Output = Result<(), BoxError>>,
{
    let result = match AssertUnwindSafe(body).catch_unwind().await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(error)) => NodeFailure::Error(error),
        Err(payload) => NodeFailure::Panic(panic_message(&*payload)),
    };
    failed.cancel();
    Err(result)
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

async fn node_task<N: Node>(
    mut node: N,
    mut input: InputSet<N::In>,
    mut out: Emitter<N::Out>,
    env: NodeEnv,
) -> NodeResult {
    guarded(drive_node(&mut node, &mut input, &mut out, &env), &env.failed).await
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

async fn drive_node<N: Node>(
    node: &mut N,
    input: &mut InputSet<N::In>,
    out: &mut Emitter<N::Out>,
    env: &NodeEnv,
) -> Result<(), BoxError> {
    let stats = env.ctx.stats();
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
                        node.on_timer(out).await.map_err(|e| failure(stats, e))?;
                        out.end_input();
                        continue;
                    }
                }
            }
        };
        stats.add_received(chunk.items.len(), input.queued());
        let started = Instant::now();
        out.begin_input(chunk.acks);
        let mut drained = chunk.items;
        let mut items = drained.drain(..);
        loop {
            let item = {
                let (buf, limit) = out.buffer();
                let (step, rest, filled) = process_now(node, items, std::mem::take(buf), limit);
                items = rest;
                *buf = filled;
                match step {
                    Step::Done => break,
                    Step::Full => {
                        out.flush().await;
                        continue;
                    }
                    Step::Fail(error) => return Err(failure(stats, error)),
                    Step::Later(item) => item,
                }
            };
            let mut waited = false;
            let result = {
                let mut work = pin!(node.process(item, out));
                std::future::poll_fn(|cx| {
                    let poll = work.as_mut().poll(cx);
                    waited |= poll.is_pending();
                    poll
                })
                .await
            };
            result.map_err(|e| failure(stats, e))?;
            if waited {
                // The node waited on something (I/O, a timer): its outputs
                // are no longer fresh, so do not hold them for a full chunk.
                out.flush().await;
            }
        }
        drop(items);
        out.recycle(drained);
        out.end_input();
        stats.add_busy(started.elapsed());
        if out.is_closed() {
            // Every reader is gone (the pipeline is failing): stop reading.
            return Ok(());
        }
        if due(node.deadline()) {
            node.on_timer(out).await.map_err(|e| failure(stats, e))?;
            out.end_input();
        }
    }
    if env.failed.is_cancelled() {
        return Ok(());
    }
    node.finish(out).await.map_err(|e| failure(stats, e))?;
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

async fn source_task<S: Source>(
    mut source: S,
    mut out: Emitter<S::Out>,
    closed: CancellationToken,
    env: NodeEnv,
) -> NodeResult {
    guarded(drive_source(&mut source, &mut out, &closed, &env), &env.failed).await
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
    let finished = if crate::node::source_flushes_itself(source) {
        tokio::select! {
            result = source.run(out) => Some(result),
            () = shutdown.cancelled(), if !cooperative => None,
            () = closed.cancelled() => None,
        }
    } else {
        // A push source: the runtime cannot see when it waits, so its items
        // go through a relay that a pump in this same task drains, sending a
        // partial chunk whenever nothing more is ready.
        let (tx, mut rx) = mpsc::channel(out.buffer().1.clamp(1, 1024));
        let mut relay = Emitter::relay(PollSender::new(tx));
        let finished = {
            let mut run = pin!(source.run(&mut relay));
            loop {
                tokio::select! {
                    biased;
                    result = &mut run => break Some(result),
                    () = shutdown.cancelled(), if !cooperative => break None,
                    () = closed.cancelled() => break None,
                    () = pump_once(&mut rx, out) => {}
                }
            }
        };
        // Whatever the source emitted before it stopped still goes out: what
        // the relay holds, then what is queued in it.
        rx.close();
        while let Ok((item, acks)) = rx.try_recv() {
            relay_one(out, item, acks).await;
        }
        let (left, acks) = relay.take_leftovers();
        out.begin_batch(acks);
        for item in left {
            relay_one(out, item, Acks::default()).await;
        }
        out.end_batch();
        finished
    };
    if let Some(result) = finished {
        result.map_err(|e| failure(env.ctx.stats(), e))?;
    }
    if env.failed.is_cancelled() {
        return Ok(());
    }
    out.flush().await;
    Ok(())
}

/// Moves what a push source relayed into its real emitter, flushing once
/// nothing more is ready. Cancel safe: items taken are already buffered.
async fn pump_once<T: Send + 'static>(rx: &mut mpsc::Receiver<(T, Acks)>, out: &mut Emitter<T>) {
    let Some((item, acks)) = rx.recv().await else {
        // The relay lives as long as the source runs: not reached.
        return std::future::pending().await;
    };
    relay_one(out, item, acks).await;
    while let Ok((item, acks)) = rx.try_recv() {
        relay_one(out, item, acks).await;
    }
    out.flush_or_park().await;
}

async fn relay_one<T: Send + 'static>(out: &mut Emitter<T>, item: T, acks: Acks) {
    let owes = !acks.is_empty();
    if owes {
        out.begin_batch(acks);
    }
    let (buf, limit) = out.buffer();
    buf.push(item);
    if buf.len() >= limit {
        out.flush_or_park().await;
    }
    if owes {
        out.end_batch();
    }
}

/// The acknowledgements of the chunk a sink is consuming, released only
/// once it has consumed all of it. If the sink fails or panics first, the
/// pipeline is marked failed *before* they drop, so that no source takes
/// them as done (and commits) in between.
struct Release<'a> {
    acks: Option<Acks>,
    failed: &'a CancellationToken,
}

impl Release<'_> {
    fn consumed(mut self) {
        self.acks = None;
    }
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if self.acks.is_some() {
            self.failed.cancel();
        }
    }
}

pub(crate) fn prepare_sink<K: Sink>(sink: K, inputs: SharedInputs<K::In>) -> Prepared {
    Box::new(move |env: NodeEnv| {
        let input = InputSet::new(take_inputs(&inputs));
        Box::pin(sink_task(sink, input, env))
    })
}

async fn sink_task<K: Sink>(mut sink: K, mut input: InputSet<K::In>, env: NodeEnv) -> NodeResult {
    guarded(drive_sink(&mut sink, &mut input, &env), &env.failed).await
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
        let release = Release { acks: Some(sink.hold(chunk.acks)), failed: &env.failed };
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
        // The sink has consumed every item: release what it did not keep.
        release.consumed();
        stats.add_busy(started.elapsed());
        if due(sink.deadline()) {
            sink.on_timer().await.map_err(|e| failure(stats, e))?;
        }
    }
    if env.failed.is_cancelled() {
        return Ok(());
    }
    sink.flush().await.map_err(|e| failure(stats, e))?;
    sink.finish().await.map_err(|e| failure(stats, e))?;
    Ok(())
}
