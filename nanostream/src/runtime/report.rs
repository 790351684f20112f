//! Snapshots of a running pipeline and the periodic progress report.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::edge::channel::EdgeRef;
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
        })
        .collect()
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

/// One line of the progress report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProgressLine {
    pub(crate) node: String,
    pub(crate) in_per_sec: f64,
    pub(crate) out_per_sec: f64,
    pub(crate) queue_fill: f64,
    pub(crate) busy: f64,
    pub(crate) bottleneck: bool,
}

pub(crate) fn progress(before: &[NodeSnapshot], now: &[NodeSnapshot], elapsed: Duration) -> Vec<ProgressLine> {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let slow = bottleneck(before, now, elapsed);
    now.iter()
        .zip(before)
        .enumerate()
        .map(|(i, (n, b))| ProgressLine {
            node: n.name.clone(),
            in_per_sec: (n.received - b.received) as f64 / secs,
            out_per_sec: (n.sent - b.sent) as f64 / secs,
            queue_fill: n.input_fill(),
            busy: ((n.busy - b.busy).as_secs_f64() / secs).min(1.0),
            bottleneck: slow == Some(i),
        })
        .collect()
}

pub(crate) fn log_progress(lines: &[ProgressLine]) {
    for line in lines {
        tracing::info!(
            target: "nanostream::progress",
            node = %line.node,
            in_per_sec = format_args!("{:.0}", line.in_per_sec),
            out_per_sec = format_args!("{:.0}", line.out_per_sec),
            queue = format_args!("{:.0}%", line.queue_fill * 100.0),
            busy = format_args!("{:.0}%", line.busy * 100.0),
            bottleneck = line.bottleneck,
            "{}{}",
            line.node,
            if line.bottleneck { " <- bottleneck" } else { "" },
        );
    }
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
        log_progress(&progress(&before, &now, at - last));
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
    fn progress_reports_rates_over_the_interval() {
        let mut before = node("parse", 0, 100, 0, 100);
        before.received = 100;
        before.sent = 50;
        let mut now = before.clone();
        now.received = 1_100;
        now.sent = 550;
        now.busy = Duration::from_millis(500);
        let lines = progress(&[before], &[now], Duration::from_secs(2));
        assert_eq!(lines[0].in_per_sec, 500.0);
        assert_eq!(lines[0].out_per_sec, 250.0);
        assert_eq!(lines[0].busy, 0.25);
        assert!(!lines[0].bottleneck);
    }
}
