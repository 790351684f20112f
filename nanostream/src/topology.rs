use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::builder::TopologyBuilder;
use crate::driver::{NodeEnv, NodeFailure, NodeResult, Prepared, panic_message};
use crate::edge::EdgeRef;
use crate::error::{AbandonedNode, AbandonedReport, Error};
use crate::node::{Context, Fatal};
use crate::report::{NodeInfo, NodeSnapshot};
use crate::stats::NodeStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Source,
    Node,
    Sink,
    Placeholder,
}

#[derive(Debug)]
pub(crate) struct GraphNode {
    pub(crate) name: String,
    pub(crate) kind: NodeKind,
}

#[derive(Debug)]
pub(crate) struct GraphEdge {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) capacity: usize,
    /// How the sending node spreads items, when it has several readers.
    pub(crate) policy: Option<String>,
}

impl GraphEdge {
    pub(crate) fn label(&self) -> String {
        match &self.policy {
            Some(policy) if self.capacity == 0 => policy.clone(),
            Some(policy) => format!("{policy}, capacity {}", self.capacity),
            None => format!("capacity {}", self.capacity),
        }
    }
}

/// The wiring of a topology, kept for reports and exports.
#[derive(Debug)]
pub(crate) struct Graph {
    pub(crate) nodes: Vec<GraphNode>,
    pub(crate) edges: Vec<GraphEdge>,
}

/// A checked graph of nodes, ready to run.
///
/// Made by [`TopologyBuilder::build`]. [`run`](Topology::run) it to completion,
/// or [`start`](Topology::start) it in the background and keep the
/// [`TopologyHandle`] to shut it down.
pub struct Topology {
    nodes: Vec<NodePlan>,
    graph: Graph,
    progress: Option<Duration>,
}

/// A node ready to start, with the edges reports look at.
pub(crate) struct NodePlan {
    pub(crate) name: String,
    pub(crate) launch: Prepared,
    pub(crate) inputs: Vec<EdgeRef>,
    pub(crate) outputs: Vec<EdgeRef>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology").field("graph", &self.graph).finish()
    }
}

#[derive(Default)]
struct Outcome {
    error: Option<Error>,
    abandoned: Option<AbandonedReport>,
}

impl Topology {
    /// Starts wiring a new topology.
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::new()
    }

    pub(crate) fn new(nodes: Vec<NodePlan>, graph: Graph, progress: Option<Duration>) -> Self {
        Self { nodes, graph, progress }
    }

    /// Runs the pipeline until every source has finished and every item has
    /// been processed, then returns.
    ///
    /// End of input cascades downstream: a node finishes (running its final
    /// hook) once all its upstream nodes have finished and it has processed
    /// everything they sent. `topology.run().await` is the same as
    /// `topology.start().join().await`.
    ///
    /// # Errors
    ///
    /// If a node returns an error or panics, every other node is stopped,
    /// no final hook runs, and the error names the node:
    /// [`Error::NodeFailed`] or [`Error::NodePanicked`].
    ///
    /// # Panics
    ///
    /// Panics if called outside a Tokio runtime, like `tokio::spawn`.
    pub async fn run(self) -> Result<(), Error> {
        self.start().join().await
    }

    /// Spawns every node as a Tokio task and returns at once.
    ///
    /// Each node runs in its own task inside a `tracing` span named after the
    /// node; built with `--cfg tokio_unstable`, the task itself carries the
    /// node's name too (visible in tokio-console). Dropping the handle
    /// detaches the pipeline; it keeps running.
    ///
    /// # Panics
    ///
    /// Panics if called outside a Tokio runtime, like `tokio::spawn`.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nanostream::Error> {
    /// let (tx, events) = from_channel::<String>(64);
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
        let failed = CancellationToken::new();
        let abort = CancellationToken::new();
        let fatal = Arc::new(Fatal::default());
        let mut set = JoinSet::new();
        let mut ids = HashMap::with_capacity(self.nodes.len());
        let mut infos = Vec::with_capacity(self.nodes.len());
        for (index, plan) in self.nodes.into_iter().enumerate() {
            let name: Arc<str> = plan.name.into();
            let stats = Arc::new(NodeStats::new(&name));
            let env = NodeEnv {
                ctx: Context::new(name.clone(), shutdown.clone(), failed.clone(), stats.clone(), fatal.clone()),
                failed: failed.clone(),
            };
            let span = tracing::info_span!("node", name = %name);
            let task = spawn_named(&mut set, &name, (plan.launch)(env).instrument(span));
            ids.insert(task.id(), index);
            infos.push(NodeInfo { name, inputs: plan.inputs, outputs: plan.outputs, stats });
        }
        let nodes: Arc<[NodeInfo]> = infos.into();
        let done = CancellationToken::new();
        if let Some(every) = self.progress {
            let span = tracing::info_span!("nanostream_progress");
            tokio::spawn(crate::report::report_progress(nodes.clone(), every, done.clone()).instrument(span));
        }
        let span = tracing::info_span!("nanostream_supervisor");
        let supervisor = tokio::spawn(
            supervise(set, ids, nodes.clone(), failed, fatal, abort.clone(), done.clone()).instrument(span),
        );
        TopologyHandle { shutdown, abort, done, supervisor, nodes }
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
        crate::graph::to_dot(&self.graph)
    }

    /// The graph as a Mermaid flowchart, with node names and edge
    /// capacities.
    pub fn to_mermaid(&self) -> String {
        crate::graph::to_mermaid(&self.graph)
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
fn spawn_named<F>(set: &mut JoinSet<NodeResult>, name: &str, task: F) -> tokio::task::AbortHandle
where
    F: std::future::Future<Output = NodeResult> + Send + 'static,
{
    set.build_task().name(name).spawn(task).expect("tokio failed to spawn a node task")
}

#[cfg(not(tokio_unstable))]
fn spawn_named<F>(set: &mut JoinSet<NodeResult>, _name: &str, task: F) -> tokio::task::AbortHandle
where
    F: std::future::Future<Output = NodeResult> + Send + 'static,
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

async fn supervise(
    mut set: JoinSet<NodeResult>,
    ids: HashMap<tokio::task::Id, usize>,
    nodes: Arc<[NodeInfo]>,
    failed: CancellationToken,
    fatal: Arc<Fatal>,
    abort: CancellationToken,
    done: CancellationToken,
) -> Outcome {
    // Stops the progress reporter however this function ends.
    let _done = done.drop_guard();
    let mut running = vec![true; nodes.len()];
    let mut outcome = Outcome::default();
    let mut fatal_seen = false;
    loop {
        let joined = tokio::select! {
            joined = set.join_next_with_id() => joined,
            () = fatal.reported(), if !fatal_seen => {
                // A node failed through `Context::fail`, past its policies.
                fatal_seen = true;
                if let Some((node, source)) = fatal.take()
                    && outcome.error.is_none()
                {
                    tracing::debug!(node = %node, "node failed; stopping the pipeline");
                    outcome.error = Some(Error::NodeFailed { node: node.to_string(), source });
                }
                failed.cancel();
                set.abort_all();
                continue;
            }
            () = abort.cancelled(), if outcome.abandoned.is_none() => {
                let report = abandoned(&nodes, &running);
                tracing::warn!(%report, "shutdown deadline passed; aborting nodes");
                outcome.abandoned = Some(report);
                failed.cancel();
                set.abort_all();
                continue;
            }
        };
        let Some(joined) = joined else { break };
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(error) => {
                let id = error.id();
                if error.is_panic() {
                    (id, Err(NodeFailure::Panic(panic_message(&*error.into_panic()))))
                } else {
                    // Cancelled: aborted by this supervisor.
                    (id, Ok(()))
                }
            }
        };
        let Some(&index) = ids.get(&id) else { continue };
        running[index] = false;
        if let Err(failure) = result {
            let node = nodes[index].name.to_string();
            if outcome.error.is_none() {
                tracing::debug!(node = %node, "node failed; stopping the pipeline");
                outcome.error = Some(match failure {
                    NodeFailure::Error(source) => Error::NodeFailed { node, source },
                    NodeFailure::Panic(message) => Error::NodePanicked { node, message },
                });
            }
            failed.cancel();
            set.abort_all();
        }
    }
    outcome
}

/// A pipeline running in the background, returned by [`Topology::start`].
#[derive(Debug)]
pub struct TopologyHandle {
    shutdown: CancellationToken,
    abort: CancellationToken,
    done: CancellationToken,
    supervisor: JoinHandle<Outcome>,
    nodes: Arc<[NodeInfo]>,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcome").field("error", &self.error).field("abandoned", &self.abandoned).finish()
    }
}

fn resolve(joined: Result<Outcome, tokio::task::JoinError>, deadline: Option<Duration>) -> Result<(), Error> {
    let outcome = match joined {
        Ok(outcome) => outcome,
        Err(error) if error.is_panic() => {
            return Err(Error::NodePanicked {
                node: "<supervisor>".to_owned(),
                message: panic_message(&*error.into_panic()),
            });
        }
        Err(_) => return Err(Error::Cancelled),
    };
    if let Some(error) = outcome.error {
        return Err(error);
    }
    match (outcome.abandoned, deadline) {
        (Some(report), Some(deadline)) => Err(Error::ShutdownTimedOut { deadline, report }),
        _ => Ok(()),
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
        crate::report::snapshot(&self.nodes)
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
        self.supervisor.is_finished()
    }

    /// Waits until the pipeline has finished.
    ///
    /// # Errors
    ///
    /// The same as [`Topology::run`].
    pub async fn join(self) -> Result<(), Error> {
        resolve(self.supervisor.await, None)
    }

    /// Stops the pipeline gracefully, waiting at most `deadline`.
    ///
    /// Sources stop producing; every item already produced flows through the
    /// graph and final hooks run, as at a normal end of input. If that takes
    /// longer than `deadline`, the nodes still running are aborted and the
    /// error reports them.
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownTimedOut`] when the deadline passed, listing the
    /// abandoned nodes and the items queued on their inputs; a node failure
    /// during the drain is returned as from [`Topology::run`].
    pub async fn shutdown(mut self, deadline: Duration) -> Result<(), Error> {
        self.shutdown.cancel();
        match tokio::time::timeout(deadline, &mut self.supervisor).await {
            Ok(joined) => resolve(joined, None),
            Err(_elapsed) => {
                self.abort.cancel();
                resolve(self.supervisor.await, Some(deadline))
            }
        }
    }
}
