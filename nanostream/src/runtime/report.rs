//! Snapshots of a running pipeline and the periodic progress report.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::edge::channel::EdgeRef;
use crate::graph::model::Graph;
use crate::runtime::stats::NodeStats;

/// What the runtime keeps about each node for reports.
#[derive(Debug)]
pub(crate) struct NodeInfo {
    pub(crate) name: Arc<str>,
    pub(crate) inputs: Vec<EdgeRef>,
    pub(crate) outputs: Vec<EdgeRef>,
    pub(crate) stats: Arc<NodeStats>,
}

fn queued(edges: &[EdgeRef]) -> usize {
    edges.iter().map(|e| e.shared.queued.load(Ordering::Relaxed)).sum()
}

/// The counters of one node at one moment; see
/// [`TopologyHandle::snapshot`](crate::TopologyHandle::snapshot).
///
/// With the `serde` feature it implements `serde::Serialize`, `busy` as
/// `{"secs": .., "nanos": ..}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct NodeSnapshot {
    /// The node's name.
    pub name: String,
    /// Items the node has taken from its input edges.
    pub received: u64,
    /// Items the node has sent downstream.
    pub sent: u64,
    /// Errors the node met: failures, and errors it skipped or retried.
    pub errors: u64,
    /// Items waiting on the node's input edges.
    pub queued: usize,
    /// Total capacity of the node's input edges.
    pub capacity: usize,
    /// Items waiting on the node's output edges (sent, not yet taken).
    pub queued_downstream: usize,
    /// Total capacity of the node's output edges.
    pub capacity_downstream: usize,
    /// Time the node spent working on items.
    pub busy: Duration,
    /// The watermark of the node's input (of its output, for a source or
    /// a node that sets event time itself), if its input has event time;
    /// see [`time`](crate::time).
    pub watermark: Option<crate::time::Timestamp>,
    /// How far `watermark` is behind the wall clock now (zero once it is
    /// final). Also the gauge `nanostream_node_watermark_lag_seconds`.
    pub watermark_lag: Option<Duration>,
}

impl NodeSnapshot {
    /// Share of the input capacity in use, from 0 to 1 (0 for sources).
    pub fn input_fill(&self) -> f64 {
        if self.capacity == 0 { 0.0 } else { self.queued as f64 / self.capacity as f64 }
    }

    /// Share of the output capacity in use, from 0 to 1 (0 for sinks).
    pub fn output_fill(&self) -> f64 {
        if self.capacity_downstream == 0 {
            0.0
        } else {
            self.queued_downstream as f64 / self.capacity_downstream as f64
        }
    }
}

pub(crate) fn snapshot(nodes: &[NodeInfo]) -> Vec<NodeSnapshot> {
    nodes
        .iter()
        .map(|n| NodeSnapshot {
            name: n.name.to_string(),
            received: n.stats.received.load(Ordering::Relaxed),
            sent: n.stats.sent.load(Ordering::Relaxed),
            errors: n.stats.errors.load(Ordering::Relaxed),
            queued: queued(&n.inputs),
            capacity: n.inputs.iter().map(|e| e.capacity).sum(),
            queued_downstream: queued(&n.outputs),
            capacity_downstream: n.outputs.iter().map(|e| e.capacity).sum(),
            busy: Duration::from_nanos(n.stats.busy_ns.load(Ordering::Relaxed)),
            watermark: n.stats.watermark(),
            watermark_lag: n.stats.watermark_lag(),
        })
        .collect()
}

/// A cheap, cloneable view of a running pipeline, for the places that
/// watch it (a metrics endpoint, a health check, a progress bar) while one
/// owner keeps the [`TopologyHandle`](crate::TopologyHandle) that stops it;
/// see [`TopologyHandle::monitor`](crate::TopologyHandle::monitor).
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
/// let monitor = running.monitor();
/// let watcher = tokio::spawn({
///     let monitor = monitor.clone();
///     async move {
///         monitor.finished().await;
///         monitor.snapshot()
///     }
/// });
/// running.join().await?;
/// let last = watcher.await.expect("the watcher ran");
/// assert_eq!((last[1].name.as_str(), last[1].received), ("sum", 10));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Monitor {
    pub(crate) nodes: Arc<[NodeInfo]>,
    pub(crate) graph: Arc<Graph>,
    pub(crate) done: tokio_util::sync::CancellationToken,
}

impl Monitor {
    /// The counters of every node right now; see
    /// [`TopologyHandle::snapshot`](crate::TopologyHandle::snapshot).
    pub fn snapshot(&self) -> Vec<NodeSnapshot> {
        snapshot(&self.nodes)
    }

    /// Resolves once every node has finished (or was aborted).
    pub fn finished(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.done.clone().cancelled_owned()
    }

    /// Whether every node has finished.
    pub fn is_finished(&self) -> bool {
        self.done.is_cancelled()
    }

    /// The graph in Graphviz DOT, as
    /// [`Topology::to_dot`](crate::Topology::to_dot) draws it, each node
    /// with its live counts (`in 12.3k, out 12.1k, 3 errors`).
    pub fn to_dot(&self) -> String {
        crate::graph::export::to_dot(&self.graph, Some(&self.counts()))
    }

    /// The graph as a Mermaid flowchart, each node with its live counts.
    pub fn to_mermaid(&self) -> String {
        crate::graph::export::to_mermaid(&self.graph, Some(&self.counts()))
    }

    fn counts(&self) -> Vec<String> {
        self.snapshot()
            .iter()
            .map(|n| {
                let mut count = match (n.received, n.capacity) {
                    // A source.
                    (0, 0) => format!("out {}", human(n.sent as f64)),
                    _ if n.capacity_downstream == 0 && n.sent == 0 => format!("in {}", human(n.received as f64)),
                    _ => format!("in {}, out {}", human(n.received as f64), human(n.sent as f64)),
                };
                if n.errors > 0 {
                    count.push_str(&format!(", {}", errors(n.errors)));
                }
                count
            })
            .collect()
    }
}

/// How hard a node holds back the nodes before it, from 0 to 1: the fill
/// of its input queue, or, for a node fused into the task of the node
/// before it (no queue in between), the share of the interval it was busy.
fn pressure(before: &NodeSnapshot, now: &NodeSnapshot, secs: f64) -> f64 {
    if now.capacity > 0 {
        now.input_fill()
    } else if now.received > 0 {
        ((now.busy - before.busy).as_secs_f64() / secs).min(1.0)
    } else {
        // A source.
        0.0
    }
}

/// The node holding the pipeline back: the one under the most pressure
/// among those whose own output is not backed up (a node whose output is
/// full is waiting on something further downstream). `None` when no node is
/// under pressure of at least one half.
pub(crate) fn bottleneck(before: &[NodeSnapshot], now: &[NodeSnapshot], elapsed: Duration) -> Option<usize> {
    let secs = elapsed.as_secs_f64().max(1e-9);
    now.iter()
        .zip(before)
        .map(|(n, b)| pressure(b, n, secs))
        .enumerate()
        .zip(now)
        .filter(|((_, pressure), n)| *pressure >= 0.5 && n.output_fill() < 0.5)
        .max_by(|((_, a), _), ((_, b), _)| a.total_cmp(b))
        .map(|((i, _), _)| i)
}

fn errors(n: u64) -> String {
    if n == 1 { "1 error".to_owned() } else { format!("{n} errors") }
}

/// A count for people: `950`, `12.3k`, `4.56M`.
fn human(n: f64) -> String {
    match n {
        n if n < 1e3 => format!("{n:.0}"),
        n if n < 1e6 => format!("{:.1}k", n / 1e3),
        n if n < 1e9 => format!("{:.2}M", n / 1e6),
        n => format!("{:.2}G", n / 1e9),
    }
}

/// One progress report: a compact line over every node, and which node
/// holds the pipeline back, if one does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProgressReport {
    pub(crate) line: String,
    pub(crate) bottleneck: Option<String>,
}

/// The report of an interval, or `None` when nothing moved in it.
///
/// Per node, in topology order: the running total (what a source sent,
/// what any other node received) and its rate over the interval, its
/// errors if any, and, for the bottleneck, why (its queue's fill, or its
/// busy share when it is fused and has no queue).
pub(crate) fn progress(before: &[NodeSnapshot], now: &[NodeSnapshot], elapsed: Duration) -> Option<ProgressReport> {
    let moved = now.iter().zip(before).any(|(n, b)| n.received != b.received || n.sent != b.sent);
    if !moved {
        return None;
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let slow = bottleneck(before, now, elapsed);
    let parts: Vec<String> = now
        .iter()
        .zip(before)
        .enumerate()
        .map(|(i, (n, b))| {
            let (total, delta) =
                if n.received == 0 { (n.sent, n.sent - b.sent) } else { (n.received, n.received - b.received) };
            let mut part = format!("{} {} ({}/s", n.name, human(total as f64), human(delta as f64 / secs));
            if n.errors > 0 {
                part.push_str(&format!(", {}", errors(n.errors)));
            }
            if slow == Some(i) {
                if n.capacity > 0 {
                    part.push_str(&format!(", bottleneck: queue {:.0}%", n.input_fill() * 100.0));
                } else {
                    let busy = ((n.busy - b.busy).as_secs_f64() / secs).min(1.0);
                    part.push_str(&format!(", bottleneck: busy {:.0}%", busy * 100.0));
                }
            }
            part.push(')');
            part
        })
        .collect();
    Some(ProgressReport { line: parts.join(" | "), bottleneck: slow.map(|i| now[i].name.clone()) })
}

pub(crate) fn log_progress(report: &ProgressReport) {
    tracing::info!(
        target: "nanostream::progress",
        bottleneck = report.bottleneck.as_deref().unwrap_or("none"),
        "{}",
        report.line,
    );
}

/// Logs progress every `every` until `done` is cancelled.
pub(crate) async fn report_progress(
    nodes: Arc<[NodeInfo]>,
    every: Duration,
    done: tokio_util::sync::CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    interval.tick().await;
    let mut before = snapshot(&nodes);
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = done.cancelled() => return,
        }
        let now = snapshot(&nodes);
        let at = tokio::time::Instant::now();
        if let Some(report) = progress(&before, &now, at - last) {
            log_progress(&report);
        }
        before = now;
        last = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, queued: usize, capacity: usize, down: usize, down_capacity: usize) -> NodeSnapshot {
        NodeSnapshot {
            name: name.into(),
            received: 0,
            sent: 0,
            errors: 0,
            queued,
            capacity,
            queued_downstream: down,
            capacity_downstream: down_capacity,
            busy: Duration::ZERO,
            watermark: None,
            watermark_lag: None,
        }
    }

    #[test]
    fn bottleneck_is_the_full_node_whose_output_is_not_backed_up() {
        // source -> parse -> store: store is slow, so both queues are full;
        // parse is blocked by store, store is the one to blame.
        let second = Duration::from_secs(1);
        let nodes = [node("source", 0, 0, 90, 100), node("parse", 90, 100, 100, 100), node("store", 100, 100, 0, 0)];
        assert_eq!(bottleneck(&nodes, &nodes, second), Some(2));
        // A middle node that is slow: its input is full, its output empty.
        let nodes = [node("source", 0, 0, 100, 100), node("parse", 100, 100, 3, 100), node("store", 3, 100, 0, 0)];
        assert_eq!(bottleneck(&nodes, &nodes, second), Some(1));
        // Nothing is backed up: no bottleneck.
        let nodes = [node("source", 0, 0, 10, 100), node("store", 10, 100, 0, 0)];
        assert_eq!(bottleneck(&nodes, &nodes, second), None);
    }

    #[test]
    fn in_a_fused_chain_the_bottleneck_is_the_node_busy_most_of_the_time() {
        // source -> parse -> store in one task: no queues; store was busy
        // 900 ms of the second, parse 50 ms.
        let second = Duration::from_secs(1);
        let before = [node("source", 0, 0, 0, 0), node("parse", 0, 0, 0, 0), node("store", 0, 0, 0, 0)];
        let mut now = before.clone();
        now[1].received = 100;
        now[1].busy = Duration::from_millis(50);
        now[2].received = 100;
        now[2].busy = Duration::from_millis(900);
        assert_eq!(bottleneck(&before, &now, second), Some(2));
        now[2].busy = Duration::from_millis(300);
        assert_eq!(bottleneck(&before, &now, second), None);
    }

    #[test]
    fn progress_is_one_line_of_totals_and_rates_and_nothing_when_idle() {
        let second = Duration::from_secs(2);
        let mut source = node("lines", 0, 0, 0, 100);
        source.sent = 1_000;
        let mut parse = node("parse", 0, 100, 0, 100);
        parse.received = 1_000;
        let mut store = node("store", 0, 100, 0, 0);
        store.received = 900;
        let before = [source.clone(), parse.clone(), store.clone()];
        source.sent = 13_000;
        parse.received = 12_900;
        parse.errors = 3;
        store.received = 12_000;
        store.queued = 100;
        let now = [source, parse, store];
        let report = progress(&before, &now, second).expect("something moved");
        assert_eq!(
            report.line,
            "lines 13.0k (6.0k/s) | parse 12.9k (6.0k/s, 3 errors) | store 12.0k (5.5k/s, bottleneck: queue 100%)"
        );
        assert_eq!(report.bottleneck.as_deref(), Some("store"));
        assert_eq!(progress(&now, &now, second), None, "nothing when idle");
    }
}
