use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use metrics::{Counter, Gauge};

/// Counters one node updates once per chunk, mirrored to the `metrics`
/// facade so that any exporter (Prometheus, StatsD, ...) sees them.
#[derive(Debug)]
pub(crate) struct NodeStats {
    pub(crate) received: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) busy_ns: AtomicU64,
    /// Attempts made on the item the node last gave up on (a retry policy
    /// notes them for a dead-letter policy around it); 0 when unknown.
    pub(crate) attempts: AtomicU32,
    /// The last watermark of the node's input, in milliseconds since the
    /// epoch; `i64::MIN` before the first.
    pub(crate) watermark: AtomicI64,
    handles: Handles,
}

#[derive(Debug)]
struct Handles {
    received: Counter,
    sent: Counter,
    errors: Counter,
    busy_us: Counter,
    queued: Gauge,
    watermark: Gauge,
    watermark_lag: Gauge,
}

/// Metric names, all labelled with `node`.
pub(crate) const RECEIVED: &str = "nanostream_node_received_items_total";
pub(crate) const SENT: &str = "nanostream_node_sent_items_total";
pub(crate) const ERRORS: &str = "nanostream_node_errors_total";
pub(crate) const BUSY: &str = "nanostream_node_busy_microseconds_total";
pub(crate) const QUEUED: &str = "nanostream_node_queued_items";
pub(crate) const WATERMARK: &str = "nanostream_node_watermark_milliseconds";
pub(crate) const WATERMARK_LAG: &str = "nanostream_node_watermark_lag_seconds";

impl NodeStats {
    pub(crate) fn new(node: &str) -> Self {
        let label = || ("node", node.to_owned());
        Self::with(Handles {
            received: metrics::counter!(RECEIVED, &[label()]),
            sent: metrics::counter!(SENT, &[label()]),
            errors: metrics::counter!(ERRORS, &[label()]),
            busy_us: metrics::counter!(BUSY, &[label()]),
            queued: metrics::gauge!(QUEUED, &[label()]),
            watermark: metrics::gauge!(WATERMARK, &[label()]),
            watermark_lag: metrics::gauge!(WATERMARK_LAG, &[label()]),
        })
    }

    /// Statistics that go nowhere, for nodes running outside a topology.
    pub(crate) fn detached() -> Self {
        Self::with(Handles {
            received: Counter::noop(),
            sent: Counter::noop(),
            errors: Counter::noop(),
            busy_us: Counter::noop(),
            queued: Gauge::noop(),
            watermark: Gauge::noop(),
            watermark_lag: Gauge::noop(),
        })
    }

    fn with(handles: Handles) -> Self {
        Self {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            attempts: AtomicU32::new(0),
            watermark: AtomicI64::new(i64::MIN),
            handles,
        }
    }

    pub(crate) fn add_received(&self, items: usize, queued_after: usize) {
        self.received.fetch_add(items as u64, Ordering::Relaxed);
        self.handles.received.increment(items as u64);
        self.handles.queued.set(queued_after as f64);
    }

    /// Items waiting on the node's input edges, after it took a chunk.
    pub(crate) fn set_queued(&self, queued: usize) {
        self.handles.queued.set(queued as f64);
    }

    /// The node's watermark moved to `t`.
    pub(crate) fn set_watermark(&self, t: crate::time::Timestamp) {
        self.store_watermark(t);
        self.publish_watermark();
    }

    /// Notes the node's watermark without publishing it (cheap enough for
    /// every item).
    pub(crate) fn store_watermark(&self, t: crate::time::Timestamp) {
        self.watermark.store(t.as_millis(), Ordering::Relaxed);
    }

    /// Publishes the noted watermark, and its lag, in the metrics facade.
    pub(crate) fn publish_watermark(&self) {
        if let Some(t) = self.watermark()
            && t < crate::time::Timestamp::MAX
        {
            self.handles.watermark.set(t.as_millis() as f64);
        }
        self.watermark_lag();
    }

    /// The node's input watermark, if it has one.
    pub(crate) fn watermark(&self) -> Option<crate::time::Timestamp> {
        match self.watermark.load(Ordering::Relaxed) {
            i64::MIN => None,
            ms => Some(crate::time::Timestamp::from_millis(ms)),
        }
    }

    /// How far the input watermark is behind the wall clock (zero once it
    /// is final), refreshed in the metrics facade; `None` without one.
    pub(crate) fn watermark_lag(&self) -> Option<std::time::Duration> {
        let t = self.watermark()?;
        let behind = crate::time::Timestamp::now().as_millis().saturating_sub(t.as_millis()).max(0);
        let lag = std::time::Duration::from_millis(behind as u64);
        self.handles.watermark_lag.set(lag.as_secs_f64());
        Some(lag)
    }

    pub(crate) fn add_sent(&self, items: usize) {
        self.sent.fetch_add(items as u64, Ordering::Relaxed);
        self.handles.sent.increment(items as u64);
    }

    pub(crate) fn add_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.handles.errors.increment(1);
    }

    /// Adds the time since `started`, for a sampled chunk, as the time of
    /// all the chunks it stands for.
    pub(crate) fn add_busy_since(&self, started: Started) {
        if let Some(at) = started.0 {
            self.add_busy(at.elapsed() * BusyClock::EVERY);
        }
    }

    pub(crate) fn add_busy(&self, busy: std::time::Duration) {
        let ns = busy.as_nanos() as u64;
        let before = self.busy_ns.fetch_add(ns, Ordering::Relaxed);
        // Report whole microseconds as they accumulate.
        let us = (before + ns) / 1_000 - before / 1_000;
        if us > 0 {
            self.handles.busy_us.increment(us);
        }
    }
}

/// Times one chunk in [`EVERY`](BusyClock::EVERY) for a node's busy time:
/// reading the clock costs about as much as running a chunk of cheap items
/// through a fused chain, and a sample is enough for reports.
#[derive(Debug, Default)]
pub(crate) struct BusyClock {
    chunks: u32,
}

/// When a sampled chunk started; nothing for the others.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started(Option<tokio::time::Instant>);

impl BusyClock {
    /// One chunk timed for this many.
    pub(crate) const EVERY: u32 = 8;

    /// A chunk starts; the first of every `EVERY` is timed.
    pub(crate) fn start(&mut self) -> Started {
        let timed = self.chunks.is_multiple_of(Self::EVERY);
        self.chunks = self.chunks.wrapping_add(1);
        Started(timed.then(tokio::time::Instant::now))
    }
}
