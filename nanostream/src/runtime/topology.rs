use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::edge::channel::EdgeRef;
use crate::error::{AbandonedNode, AbandonedReport, Error};
use crate::graph::model::Graph;
use crate::node::Context;
use crate::runtime::report::{NodeInfo, NodeSnapshot};
use crate::runtime::stats::NodeStats;
use crate::runtime::status::{Status, Stop};
use crate::runtime::step::panic_message;
use crate::runtime::task::{NodeEnv, Prepared};

/// A checked graph of nodes, ready to run.
///
/// Made by [`TopologyBuilder::build`](crate::TopologyBuilder::build). [`run`](Topology::run) it to completion,
/// or [`start`](Topology::start) it in the background and keep the
/// [`TopologyHandle`] to shut it down.
pub struct Topology {
    nodes: Vec<NodePlan>,
    /// The order to start the nodes in.
    order: Vec<usize>,
    graph: Arc<Graph>,
    progress: Option<Duration>,
}

/// A node ready to start, with the edges reports look at.
pub(crate) struct NodePlan {
    pub(crate) name: String,
    pub(crate) launch: Prepared,
    pub(crate) inputs: Vec<EdgeRef>,
    pub(crate) outputs: Vec<EdgeRef>,
    /// The node whose task this node runs in (itself, unless fused).
    pub(crate) task: usize,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology").field("graph", &self.graph).finish()
    }
}

impl Topology {
    pub(crate) fn new(nodes: Vec<NodePlan>, order: Vec<usize>, graph: Graph, progress: Option<Duration>) -> Self {
        Self { nodes, order, graph: Arc::new(graph), progress }
    }

    /// Runs the pipeline until every source has finished and every item has
    /// been processed, then returns.
    ///
    /// End of input cascades downstream: a node finishes (running its final
    /// hook) once all its upstream nodes have finished and it has processed
    /// everything they sent. `topology.run().await` is the same as
    /// `topology.start().join().await`.
    ///
    /// # Cancellation
    ///
    /// Dropping the returned future before it completes cancels the
    /// pipeline: every node task is aborted, and nothing that was not
    /// finished is acknowledged as done (a Kafka source commits nothing for
    /// it; see [`Acks`](crate::acks::Acks)). So `run()` composes with other async
    /// code: in a `tokio::select!` with other services, under
    /// `tokio::time::timeout`, or in a task that gets aborted. To stop
    /// gracefully instead, use [`start`](Topology::start) and
    /// [`TopologyHandle::shutdown`].
    ///
    /// ```
    /// use nanostream::prelude::*;
    /// use nanostream::sources::from_stream;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nanostream::Error> {
    /// let mut g = Topology::builder();
    /// let ticks = g.source("ticks", from_stream(futures::stream::repeat(1u64)));
    /// g.sink("ignore", for_each(|_: u64| async {}), ticks);
    /// let pipeline = g.build()?;
    ///
    /// tokio::select! {
    ///     result = pipeline.run() => result?,
    ///     () = tokio::time::sleep(Duration::from_millis(10)) => {
    ///         // The endless pipeline was cancelled when `run()` was dropped.
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// If a node returns an error or panics, every other node is stopped,
    /// no final hook runs, and the error names the node:
    /// [`Error::NodeFailed`] or [`Error::NodePanicked`]. A failure is never
    /// reported as success, even when every node finishes right after it.
    ///
    /// # Panics
    ///
    /// Panics if called outside a Tokio runtime, like `tokio::spawn`.
    pub async fn run(self) -> Result<(), Error> {
        self.start().join().await
    }

    /// Spawns the pipeline's Tokio tasks and returns at once: one per node,
    /// or per fused chain of nodes (see [`Output::unfused`](crate::Output::unfused)).
    ///
    /// Each node's code runs inside a `tracing` span named after the node,
    /// fused or not; built with `--cfg tokio_unstable`, each task carries the
    /// name of its first node too (visible in tokio-console).
    ///
    /// The pipeline lives as long as its handle: dropping the
    /// [`TopologyHandle`] before the pipeline finished cancels it, as
    /// dropping [`run`](Topology::run) does. To let it run on its own, call
    /// [`TopologyHandle::detach`].
    ///
    /// # Panics
    ///
    /// Panics if called outside a Tokio runtime, like `tokio::spawn`.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    /// use nanostream::sources::from_channel;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nanostream::Error> {
    /// let (events, tx) = from_channel::<String>(64);
    /// let mut g = Topology::builder();
    /// let events = g.source("events", events);
    /// g.sink("log", for_each(|e: String| async move { println!("{e}") }), events);
    /// let running = g.build()?.start();
    ///
    /// tx.send("hello".to_owned()).await.expect("pipeline is running");
    /// // Stop the source, drain what was sent, give up after five seconds.
    /// running.shutdown(Duration::from_secs(5)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start(self) -> TopologyHandle {
        let shutdown = CancellationToken::new();
        let status = Arc::new(Status::default());
        let deadline = Arc::new(DeadlineRequest::default());
        let mut set = JoinSet::new();
        let mut ids = HashMap::with_capacity(self.nodes.len());
        let mut tasks = Vec::with_capacity(self.nodes.len());
        let mut infos = Vec::with_capacity(self.nodes.len());
        let mut launches = Vec::with_capacity(self.nodes.len());
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for (index, plan) in self.nodes.into_iter().enumerate() {
            let name: Arc<str> = plan.name.into();
            let stats = Arc::new(NodeStats::new(&name));
            let env = NodeEnv { ctx: Context::new(name.clone(), shutdown.clone(), status.clone(), stats.clone()) };
            members[plan.task].push(index);
            launches.push(Some((plan.launch, env)));
            infos.push(NodeInfo { name, inputs: plan.inputs, outputs: plan.outputs, stats });
        }
        // Readers first: a fused node puts its stage in place before the
        // node before it makes its output.
        for index in self.order {
            let Some((launch, env)) = launches[index].take() else { continue };
            let Some(task) = launch(env) else { continue };
            let name = &infos[index].name;
            let span = tracing::info_span!("node", name = %name);
            let task = spawn_named(&mut set, name, task.instrument(span));
            ids.insert(task.id(), std::mem::take(&mut members[index]));
            tasks.push(task);
        }
        let nodes: Arc<[NodeInfo]> = infos.into();
        let done = CancellationToken::new();
        if let Some(every) = self.progress {
            let span = tracing::info_span!("nanostream_progress");
            tokio::spawn(crate::runtime::report::report_progress(nodes.clone(), every, done.clone()).instrument(span));
        }
        let detached = Arc::new(AtomicBool::new(false));
        let span = tracing::info_span!("nanostream_supervisor");
        let supervisor = tokio::spawn(
            Supervisor {
                set,
                ids,
                nodes: nodes.clone(),
                status: status.clone(),
                deadline: deadline.clone(),
                detached: detached.clone(),
            }
            .run(done.clone())
            .instrument(span),
        );
        let graph = self.graph;
        TopologyHandle { shutdown, deadline, done, supervisor: Some(supervisor), nodes, graph, status, tasks, detached }
    }
}

impl Topology {
    /// The graph in Graphviz DOT, with node names and edge capacities.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    ///
    /// let mut g = Topology::builder();
    /// let n = g.source("numbers", from_iter(0..3u8));
    /// g.sink("print", for_each(|x: u8| async move { println!("{x}") }), n);
    /// let dot = g.build().unwrap().to_dot();
    /// assert!(dot.contains(r#""numbers" -> "print""#));
    /// ```
    pub fn to_dot(&self) -> String {
        crate::graph::export::to_dot(&self.graph, None)
    }

    /// The graph as a Mermaid flowchart, with node names and edge
    /// capacities.
    pub fn to_mermaid(&self) -> String {
        crate::graph::export::to_mermaid(&self.graph, None)
    }
}

impl IntoFuture for Topology {
    type Output = Result<(), Error>;
    type IntoFuture = BoxFuture<'static, Result<(), Error>>;

    /// `topology.await` is the same as `topology.run().await`.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

#[cfg(tokio_unstable)]
fn spawn_named<F>(set: &mut JoinSet<()>, name: &str, task: F) -> AbortHandle
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    set.build_task().name(name).spawn(task).expect("tokio failed to spawn a node task")
}

#[cfg(not(tokio_unstable))]
fn spawn_named<F>(set: &mut JoinSet<()>, _name: &str, task: F) -> AbortHandle
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    set.spawn(task)
}

fn abandoned(nodes: &[NodeInfo], running: &[bool]) -> AbandonedReport {
    AbandonedReport {
        nodes: nodes
            .iter()
            .zip(running)
            .filter(|(_, running)| **running)
            .map(|(node, _)| AbandonedNode {
                name: node.name.to_string(),
                queued_items: node.inputs.iter().map(|e| e.shared.queued.load(Ordering::Relaxed)).sum(),
            })
            .collect(),
    }
}

/// A shutdown deadline that passed: set once, by the handle.
#[derive(Debug, Default)]
struct DeadlineRequest {
    passed: Mutex<Option<Duration>>,
    token: CancellationToken,
}

impl DeadlineRequest {
    fn request(&self, deadline: Duration) {
        *self.passed.lock().unwrap_or_else(PoisonError::into_inner) = Some(deadline);
        self.token.cancel();
    }

    fn deadline(&self) -> Duration {
        self.passed.lock().unwrap_or_else(PoisonError::into_inner).unwrap_or_default()
    }
}

/// Waits for the node tasks, stops them all at the first failure, and
/// reads the outcome once every task has ended.
struct Supervisor {
    set: JoinSet<()>,
    /// Each task's nodes: the first node of a fused chain, then the rest.
    ids: HashMap<tokio::task::Id, Vec<usize>>,
    nodes: Arc<[NodeInfo]>,
    status: Arc<Status>,
    deadline: Arc<DeadlineRequest>,
    detached: Arc<AtomicBool>,
}

impl Supervisor {
    async fn run(mut self, done: CancellationToken) -> Result<(), Error> {
        // Stops the progress reporter however this function ends.
        let _done = done.drop_guard();
        let mut running = vec![true; self.nodes.len()];
        let mut stopping = false;
        let mut deadline_seen = false;
        loop {
            let joined = tokio::select! {
                joined = self.set.join_next_with_id() => joined,
                () = self.status.stopped(), if !stopping => {
                    // A node failed (or the pipeline is being cancelled):
                    // stop the others.
                    stopping = true;
                    self.set.abort_all();
                    continue;
                }
                () = self.deadline.token.cancelled(), if !deadline_seen => {
                    deadline_seen = true;
                    let report = abandoned(&self.nodes, &running);
                    tracing::warn!(%report, "shutdown deadline passed; aborting nodes");
                    self.status.record(Stop::TimedOut { deadline: self.deadline.deadline(), report });
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            let id = match joined {
                Ok((id, ())) => id,
                Err(error) => {
                    let id = error.id();
                    // A node task catches its own panics; this is a panic in
                    // the runtime's code around it. Aborted tasks need no
                    // record: they were aborted because of one.
                    if error.is_panic() {
                        let node = self
                            .ids
                            .get(&id)
                            .and_then(|nodes| nodes.first())
                            .map_or_else(|| "<unknown>".into(), |&i| self.nodes[i].name.clone());
                        self.status.record(Stop::Panicked { node, message: panic_message(&*error.into_panic()) });
                    }
                    id
                }
            };
            for &index in self.ids.get(&id).into_iter().flatten() {
                running[index] = false;
            }
        }
        let outcome = self.status.outcome();
        if let Err(error) = &outcome
            && self.detached.load(Ordering::Acquire)
        {
            tracing::error!(%error, "a detached pipeline stopped");
        }
        outcome
    }
}

/// A pipeline running in the background, returned by [`Topology::start`].
///
/// The pipeline lives as long as this handle: dropping it before the
/// pipeline has finished cancels the pipeline (every node task is aborted
/// and nothing unfinished is acknowledged as done), so that a pipeline never
/// outlives the code that started it by accident. [`join`](Self::join) and
/// [`shutdown`](Self::shutdown) consume the handle and wait; dropping their
/// futures cancels too. [`detach`](Self::detach) lets the pipeline run on
/// its own.
#[derive(Debug)]
pub struct TopologyHandle {
    shutdown: CancellationToken,
    deadline: Arc<DeadlineRequest>,
    done: CancellationToken,
    /// `None` once detached.
    supervisor: Option<JoinHandle<Result<(), Error>>>,
    nodes: Arc<[NodeInfo]>,
    graph: Arc<Graph>,
    status: Arc<Status>,
    tasks: Vec<AbortHandle>,
    detached: Arc<AtomicBool>,
}

impl Drop for TopologyHandle {
    fn drop(&mut self) {
        let Some(supervisor) = &self.supervisor else { return };
        if supervisor.is_finished() {
            return;
        }
        // Dropped while running: cancel. Recorded first, so that every node
        // and source sees the pipeline as stopping before its task goes.
        self.status.record(Stop::Cancelled);
        for task in &self.tasks {
            task.abort();
        }
        supervisor.abort();
    }
}

fn resolve(joined: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    match joined {
        Ok(outcome) => outcome,
        Err(error) if error.is_panic() => {
            Err(Error::NodePanicked { node: "<supervisor>".to_owned(), message: panic_message(&*error.into_panic()) })
        }
        Err(_) => Err(Error::Cancelled),
    }
}

impl TopologyHandle {
    /// Asks the pipeline to stop gracefully and returns at once: sources stop
    /// producing, everything already produced is processed, final hooks run.
    /// Await [`join`](TopologyHandle::join) to wait for the end.
    pub fn request_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// The counters of every node right now, in the order the nodes were
    /// added: items received and sent, errors, queue depth and busy time.
    ///
    /// The same numbers go to the [`metrics`](https://docs.rs/metrics)
    /// facade as they change (`nanostream_node_received_items_total`,
    /// `nanostream_node_sent_items_total`, `nanostream_node_errors_total`,
    /// `nanostream_node_busy_microseconds_total`,
    /// `nanostream_node_queued_items`, each labelled `node`), so installing
    /// any `metrics` exporter before starting the pipeline publishes them.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nanostream::Error> {
    /// let mut g = Topology::builder();
    /// let n = g.source("numbers", from_iter(0..10u32));
    /// let (sum, _total) = fold(0, |a, x: u32| a + x);
    /// g.sink("sum", sum, n);
    /// let running = g.build()?.start();
    /// let snapshot = running.snapshot();
    /// assert_eq!(snapshot[1].name, "sum");
    /// running.join().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn snapshot(&self) -> Vec<NodeSnapshot> {
        crate::runtime::report::snapshot(&self.nodes)
    }

    /// A cloneable view of the pipeline (snapshots, the end) for other
    /// places to watch it while this handle keeps the right to stop it.
    pub fn monitor(&self) -> crate::runtime::report::Monitor {
        crate::runtime::report::Monitor {
            nodes: self.nodes.clone(),
            graph: self.graph.clone(),
            done: self.done.clone(),
        }
    }

    /// Resolves once every node has finished (or was aborted), without
    /// consuming the handle: then [`join`](TopologyHandle::join) returns at
    /// once with the outcome. Useful to wait for either a signal or the end
    /// of the pipeline.
    pub fn finished(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.done.clone().cancelled_owned()
    }

    /// Whether every node has finished.
    pub fn is_finished(&self) -> bool {
        self.supervisor.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits until the pipeline has finished.
    ///
    /// Dropping the returned future before it completes cancels the
    /// pipeline, as dropping [`Topology::run`] does.
    ///
    /// # Errors
    ///
    /// The same as [`Topology::run`].
    pub async fn join(mut self) -> Result<(), Error> {
        let Some(supervisor) = self.supervisor.as_mut() else { return Err(Error::Cancelled) };
        resolve(supervisor.await)
    }

    /// Lets the pipeline run on its own: dropping the handle no longer
    /// cancels it. It runs until its sources end (or it fails); a failure is
    /// then logged as a `tracing` error, since nobody waits for it.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    /// use nanostream::sources::from_channel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nanostream::Error> {
    /// let (events, tx) = from_channel::<u32>(16);
    /// let mut g = Topology::builder();
    /// let events = g.source("events", events);
    /// let (sum, total) = fold(0, |a, x: u32| a + x);
    /// g.sink("sum", sum, events);
    /// g.build()?.start().detach();
    ///
    /// tx.send(42).await.expect("the detached pipeline is running");
    /// drop(tx);
    /// assert_eq!(total.await, Some(42));
    /// # Ok(())
    /// # }
    /// ```
    pub fn detach(mut self) {
        self.detached.store(true, Ordering::Release);
        self.supervisor = None;
    }

    /// Stops the pipeline gracefully, waiting at most `deadline`.
    ///
    /// Sources stop producing; every item already produced flows through the
    /// graph and final hooks run, as at a normal end of input. If that takes
    /// longer than `deadline`, the nodes still running are aborted and the
    /// error reports them; what they had not finished is not acknowledged.
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownTimedOut`] when the deadline passed, listing the
    /// abandoned nodes and the items queued on their inputs; a node failure
    /// during the drain is returned as from [`Topology::run`].
    pub async fn shutdown(mut self, deadline: Duration) -> Result<(), Error> {
        self.shutdown.cancel();
        let Some(supervisor) = self.supervisor.as_mut() else { return Err(Error::Cancelled) };
        match tokio::time::timeout(deadline, &mut *supervisor).await {
            Ok(joined) => resolve(joined),
            Err(_elapsed) => {
                self.deadline.request(deadline);
                resolve(supervisor.await)
            }
        }
    }
}
