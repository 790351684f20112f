//! Built-in operators, fan-out policies, parallel workers, error policies,
//! metrics, the progress report and the test kit. Time-dependent behaviour
//! runs on paused time, so every instant asserted is exact.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use nanostream::prelude::*;
use nanostream::testing::{run_node, run_node_timed, run_source, run_subgraph};
use nanostream::{
    Error,
    error::BuildError,
    operators::{batch, count, flat_map, fold_by_key, inspect, scan_by_key, sliding, throttle, tumbling},
    policy::{DeadLetter, Failure, Retry},
};

const S: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------- batch ----------

#[tokio::test(start_paused = true)]
async fn batch_emits_full_batches_then_the_remainder_at_end_of_input() {
    let out = run_node(batch(3, secs(60)), (1..=8u32).collect()).await.expect("runs");
    assert_eq!(out, [vec![1, 2, 3], vec![4, 5, 6], vec![7, 8]]);
}

#[tokio::test(start_paused = true)]
async fn batch_emits_a_partial_batch_when_max_wait_passes_without_new_input() {
    // Two items, then silence for a minute, then one more.
    let inputs = vec![(Duration::ZERO, 1u32), (Duration::from_millis(100), 2), (secs(60), 3)];
    let out = run_node_timed(batch(10, secs(5)), inputs).await.expect("runs");
    // The first batch goes out 5 s after its first item, with no new input.
    assert_eq!(out, [(secs(5), vec![1, 2]), (secs(60), vec![3])]);
}

// ---------- windows ----------

#[tokio::test(start_paused = true)]
async fn tumbling_windows_close_on_a_timer_and_flush_open_windows_at_the_end() {
    let per_minute = tumbling(secs(60), |page: &&str| page.to_string(), || 0u32, |n, _| *n += 1).aligned_to_start();
    let inputs = vec![(secs(0), "/a"), (secs(10), "/b"), (secs(20), "/a"), (secs(70), "/a"), (secs(130), "/b")];
    let out = run_node_timed(per_minute, inputs).await.expect("runs");
    let mut got: Vec<(Duration, String, u32, Duration, bool)> = out
        .into_iter()
        .map(|(at, w)| (at, w.key, w.value, w.end.duration_since(w.start).expect("end after start"), w.partial))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            // Window [0, 60) closes at 60 s although the next item is at 70 s.
            (secs(60), "/a".to_owned(), 2, secs(60), false),
            (secs(60), "/b".to_owned(), 1, secs(60), false),
            (secs(120), "/a".to_owned(), 1, secs(60), false),
            // Window [120, 180) is still open when the input ends at 130 s:
            // emitted, marked partial.
            (secs(130), "/b".to_owned(), 1, secs(60), true),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn sliding_windows_count_each_item_in_every_window_that_covers_it() {
    // Windows of 60 s every 30 s: an item at 40 s is in [0, 60) and [30, 90).
    let recent = sliding(secs(60), secs(30), |_: &u8| "all", || 0u32, |n, _| *n += 1).aligned_to_start();
    let inputs = vec![(secs(10), 1u8), (secs(40), 2)];
    let out = run_node_timed(recent, inputs).await.expect("runs");
    let got: Vec<(Duration, u32)> = out.into_iter().map(|(at, w)| (at, w.value)).collect();
    // [-30, 30) holds the first item and closes on its timer at 30 s; when
    // the input ends at 40 s, [0, 60) holds both and [30, 90) the second.
    assert_eq!(got, [(secs(30), 1), (secs(40), 2), (secs(40), 1)]);
}

#[tokio::test(start_paused = true)]
async fn windows_are_aligned_to_the_wall_clock_by_default() {
    let per_minute = tumbling(secs(60), |_: &u8| (), || 0u32, |n, _| *n += 1);
    let out = run_node_timed(per_minute, vec![(secs(0), 1u8)]).await.expect("runs");
    let start = out[0].1.start.duration_since(std::time::UNIX_EPOCH).expect("after the epoch");
    assert_eq!(start.as_secs() % 60, 0, "a one-minute window starts on the minute");
    assert_eq!(start.subsec_nanos(), 0);
}

// ---------- keyed state, inspect, count, throttle ----------

#[tokio::test]
async fn scan_by_key_keeps_one_state_per_key() {
    let words = ["a", "b", "a", "a", "b"].map(String::from).to_vec();
    let running = scan_by_key(
        |w: &String| w.clone(),
        || 0u32,
        |n, w| {
            *n += 1;
            Some(format!("{w}{n}"))
        },
    );
    assert_eq!(run_node(running, words).await.expect("runs"), ["a1", "b1", "a2", "a3", "b2"]);
}

#[tokio::test]
async fn fold_by_key_emits_every_key_once_at_the_end() {
    let sales = vec![("eu", 5u32), ("us", 7), ("eu", 1), ("asia", 2)];
    let totals = fold_by_key(|s: &(&str, u32)| s.0, || 0u32, |t, s| *t += s.1);
    let mut out = run_node(totals, sales).await.expect("runs");
    out.sort();
    assert_eq!(out, [("asia", 2), ("eu", 6), ("us", 7)]);
}

#[tokio::test]
async fn inspect_sees_every_item_and_count_counts_them() {
    let seen = Arc::new(AtomicU32::new(0));
    let s = seen.clone();
    let mut g = Topology::builder();
    let n = g.source("numbers", from_iter(0..10_000u32));
    let looked = g.node(
        "look",
        inspect(move |_: &u32| {
            s.fetch_add(1, Ordering::Relaxed);
        }),
        n,
    );
    let (sink, counter) = count();
    g.sink("count", sink, looked);
    g.build().expect("valid").run().await.expect("runs");
    assert_eq!(seen.load(Ordering::Relaxed), 10_000);
    assert_eq!(counter.get(), 10_000);
}

#[tokio::test(start_paused = true)]
async fn throttle_lets_through_at_most_the_rate_and_delays_the_rest() {
    let inputs = (0..25u32).map(|i| (Duration::ZERO, i)).collect();
    let out = run_node_timed(throttle(10, S), inputs).await.expect("runs");
    assert_eq!(out.len(), 25);
    let per_second: Vec<usize> = (0..3).map(|s| out.iter().filter(|(at, _)| *at == secs(s)).count()).collect();
    assert_eq!(per_second, [10, 10, 5]);
    assert!(out.iter().map(|(_, x)| *x).eq(0..25), "order is kept");
}

// ---------- fan-out policies ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_every_item_to_exactly_one_reader() {
    let mut g = Topology::builder();
    g.chunk_size(64);
    let n = g.source("numbers", from_iter(0..100_000u64));
    let parts = g.round_robin(n, 3);
    let mut counters = Vec::new();
    let mut outs = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        let c = Arc::new(AtomicU32::new(0));
        let seen = c.clone();
        outs.push(g.node(
            format!("worker_{i}"),
            inspect(move |_: &u64| {
                seen.fetch_add(1, Ordering::Relaxed);
            }),
            part,
        ));
        counters.push(c);
    }
    let (sink, out) = into_stream(1024);
    g.sink("collect", sink, outs);
    let running = g.build().expect("valid").start();
    let mut got: Vec<u64> = out.collect().await;
    running.join().await.expect("runs");
    got.sort_unstable();
    assert!(got.iter().copied().eq(0..100_000), "every item exactly once");
    for c in &counters {
        // Whole chunks go round: every reader gets a fair share.
        assert!(c.load(Ordering::Relaxed) > 10_000, "{counters:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_by_sends_each_key_to_one_reader_in_order() {
    let mut g = Topology::builder();
    g.chunk_size(16);
    let events = g.source("events", from_iter((0..30_000u32).map(|i| (i % 7, i))));
    let parts = g.partition_by(events, 3, |e: &(u32, u32)| e.0);
    // key -> (the reader that saw it, the numbers it saw in order)
    type Seen = HashMap<u32, (usize, Vec<u32>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut outs = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        let seen = seen.clone();
        outs.push(g.node(
            format!("keyed_{i}"),
            map(move |(key, n): (u32, u32)| {
                let mut seen = seen.lock().expect("not poisoned");
                let entry = seen.entry(key).or_insert((i, Vec::new()));
                assert_eq!(entry.0, i, "key {key} reached two readers");
                entry.1.push(n);
                n
            }),
            part,
        ));
    }
    let (sink, counter) = count();
    g.sink("count", sink, outs);
    g.build().expect("valid").run().await.expect("runs");
    assert_eq!(counter.get(), 30_000);
    let seen = seen.lock().expect("not poisoned");
    assert_eq!(seen.len(), 7);
    for (key, (_, ns)) in seen.iter() {
        assert!(ns.iter().copied().eq((0..30_000).filter(|i| i % 7 == *key)), "key {key} out of order");
    }
}

#[test]
fn a_split_output_needs_exactly_one_reader_per_part() {
    let mut g = Topology::builder();
    let n = g.source("numbers", from_iter(0..3u32));
    let mut parts = g.round_robin(n, 2);
    let second = parts.pop().expect("two parts");
    let first = parts.pop().expect("two parts");
    g.sink("a", for_each(|_: u32| async {}), first);
    let _unread = second;
    assert_eq!(g.build().unwrap_err(), BuildError::SplitReaders { node: "numbers".into(), part: 1, readers: 0 });
}

#[test]
fn a_split_output_cannot_also_be_read_whole() {
    let mut g = Topology::builder();
    let n = g.source("numbers", from_iter(0..3u32));
    g.sink("whole", for_each(|_: u32| async {}), &n);
    let parts = g.round_robin(n, 1);
    g.sink("part", for_each(|_: u32| async {}), parts);
    assert_eq!(g.build().unwrap_err(), BuildError::MixedFanOut { node: "numbers".into() });
}

// ---------- parallel workers ----------

#[node]
async fn slow_square(x: u64) -> u64 {
    // Later items finish sooner: outputs race past each other.
    tokio::time::sleep(Duration::from_millis(1000 - x % 1000)).await;
    x * x
}

#[tokio::test(start_paused = true)]
async fn parallel_workers_process_every_item_once() {
    let mut g = Topology::builder();
    g.chunk_size(8);
    let n = g.source("numbers", from_iter(0..2_000u64));
    let squares = g.parallel("square", 4, slow_square, n);
    let (sink, out) = into_stream(4096);
    g.sink("out", sink, squares);
    let running = g.build().expect("valid").start();
    let mut got: Vec<u64> = out.collect().await;
    running.join().await.expect("runs");
    got.sort_unstable();
    assert!(got.into_iter().eq((0..2_000u64).map(|x| x * x)));
}

#[tokio::test(start_paused = true)]
async fn parallel_ordered_keeps_input_order() {
    let out = run_subgraph((0..2_000u64).collect(), |g, input| {
        g.chunk_size(8);
        g.parallel_ordered("square", 4, slow_square, input)
    })
    .await
    .expect("runs");
    assert!(out.into_iter().eq((0..2_000u64).map(|x| x * x)));
}

#[test]
fn parallel_needs_at_least_one_worker() {
    let mut g = Topology::builder();
    let n = g.source("numbers", from_iter(0..3u32));
    let out = g.parallel("work", 0, || map(|x: u32| x), n);
    g.sink("sink", for_each(|_: u32| async {}), out);
    assert_eq!(g.build().unwrap_err(), BuildError::ZeroWorkers { node: "work".into() });
}

#[tokio::test]
async fn parallel_workers_are_named_nodes() {
    let mut g = Topology::builder();
    let n = g.source("numbers", from_iter(0..10u32));
    let out = g.parallel("work", 2, || map(|x: u32| x), n);
    g.sink("sink", for_each(|_: u32| async {}), out);
    let running = g.build().expect("valid").start();
    let names: Vec<String> = running.snapshot().into_iter().map(|n| n.name).collect();
    running.join().await.expect("runs");
    assert_eq!(names, ["numbers", "work.split", "work[0]", "work[1]", "work", "sink"]);
}

// ---------- error policies ----------

#[derive(Debug, Clone, PartialEq)]
struct BadLine(String);

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad line {:?}", self.0)
    }
}

impl std::error::Error for BadLine {}

#[node]
async fn parse(line: String) -> Result<u32, BadLine> {
    if line == "boom" {
        panic!("cannot handle {line}");
    }
    line.parse().map_err(|_| BadLine(line))
}

fn lines() -> Vec<String> {
    ["1", "x", "2", "boom", "3", "y"].map(String::from).to_vec()
}

#[tokio::test]
async fn skip_errors_drops_failing_items_counts_them_and_goes_on() {
    let mut g = Topology::builder();
    let input = g.source("lines", from_iter(lines()));
    let nums = g.node("parse", parse().skip_errors(), input);
    let (sum, total) = fold(0u32, |a, x: u32| a + x);
    g.sink("sum", sum, nums);
    let running = g.build().expect("valid").start();
    let handle_snapshot = {
        let running = running;
        let before = running.snapshot();
        assert_eq!(before[1].name, "parse");
        running.join().await.expect("the pipeline never stops");
        before
    };
    drop(handle_snapshot);
    // Two parse errors and one panic were skipped.
    assert_eq!(total.await, Some(6));
}

#[tokio::test]
async fn skipped_errors_are_counted_in_the_node_metrics() {
    let mut g = Topology::builder();
    let input = g.source("lines", from_iter(lines()));
    let nums = g.node("parse", parse().skip_errors(), input);
    let (sink, out) = into_stream(16);
    g.sink("sum", sink, nums);
    let running = g.build().expect("valid").start();
    let got: Vec<u32> = out.collect().await;
    // The sink has every output, so `parse` is done: read its counters.
    let snapshot = running.snapshot();
    running.join().await.expect("runs");
    assert_eq!(got, [1, 2, 3]);
    let parse = &snapshot[1];
    assert_eq!((parse.received, parse.sent, parse.errors), (6, 3, 3));
}

/// Fails the first `failures` attempts at every item.
struct Flaky {
    failures: u32,
    attempts: Arc<AtomicU32>,
}

impl Node for Flaky {
    type In = u32;
    type Out = u32;
    type Error = String;

    async fn process(&mut self, item: u32, out: &mut Emitter<u32>) -> Result<(), String> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) % (self.failures + 1);
        if attempt < self.failures {
            return Err(format!("attempt {attempt} failed"));
        }
        out.emit(item).await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn retry_succeeds_after_backing_off_exponentially() {
    let attempts = Arc::new(AtomicU32::new(0));
    let flaky = Flaky { failures: 2, attempts: attempts.clone() };
    let node = flaky.retry(Retry::attempts(3).backoff(Duration::from_millis(100)));
    let out = run_node_timed(node, vec![(Duration::ZERO, 7)]).await.expect("runs");
    // Waits 100 ms after the first failure and 200 ms after the second.
    assert_eq!(out, [(Duration::from_millis(300), 7)]);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn retry_gives_up_after_the_last_attempt_and_fails_the_node() {
    let attempts = Arc::new(AtomicU32::new(0));
    let flaky = Flaky { failures: 5, attempts: attempts.clone() };
    let node = flaky.retry(Retry::attempts(3).backoff(Duration::from_millis(10)));
    let error = run_node(node, vec![1]).await.expect_err("still failing after 3 attempts");
    let Error::NodeFailed { node, source } = error else { panic!("expected NodeFailed") };
    assert_eq!((node.as_str(), source.to_string().as_str()), ("node", "attempt 2 failed"));
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn retry_then_skip_skips_what_retrying_cannot_fix() {
    let flaky = Flaky { failures: 5, attempts: Arc::default() };
    let node = flaky.retry(Retry::attempts(2).backoff(Duration::from_millis(10))).skip_errors();
    assert_eq!(run_node(node, vec![1, 2]).await.expect("runs"), Vec::<u32>::new());
}

#[tokio::test]
async fn dead_letters_carry_the_input_and_its_failure_as_typed_values() {
    let mut g = Topology::builder();
    let input = g.source("lines", from_iter(lines()));
    let (nums, rejected) = g.node_with_dead_letters("parse", parse(), input);
    let (sum, total) = fold(0u32, |a, x: u32| a + x);
    g.sink("sum", sum, nums);
    let (store, dead) = into_stream(16);
    g.sink("rejected", store, rejected);
    let running = g.build().expect("valid").start();
    let dead: Vec<DeadLetter<String, BadLine>> = dead.collect().await;
    running.join().await.expect("the pipeline never stops");
    assert_eq!(total.await, Some(6));
    let summary: Vec<(&str, &str, String)> =
        dead.iter().map(|d| (d.node.as_str(), d.input.as_str(), d.failure.to_string())).collect();
    assert_eq!(
        summary,
        [
            ("parse", "x", r#"bad line "x""#.to_owned()),
            ("parse", "boom", "panicked: cannot handle boom".to_owned()),
            ("parse", "y", r#"bad line "y""#.to_owned()),
        ]
    );
    assert_eq!(dead[0].failure, Failure::Error(BadLine("x".into())));
}

#[test]
fn dead_letters_must_be_read() {
    let mut g = Topology::builder();
    let input = g.source("lines", from_iter(lines()));
    let (nums, _ignored) = g.node_with_dead_letters("parse", parse(), input);
    g.sink("sum", for_each(|_: u32| async {}), nums);
    assert_eq!(g.build().unwrap_err(), BuildError::UnreadOutput { node: "parse.dead_letters".into() });
}

// ---------- metrics, progress, graph ----------

#[tokio::test]
async fn snapshot_counts_items_in_and_out_of_every_node() {
    let mut g = Topology::builder();
    let n = g.source("numbers", from_iter(0..1_000u32));
    let even = g.node("even", filter(|x: &u32| x.is_multiple_of(2)), n);
    let (sink, out) = into_stream(2_000);
    g.sink("out", sink, even);
    let running = g.build().expect("valid").start();
    let got = out.collect::<Vec<_>>().await.len();
    let s = running.snapshot();
    running.join().await.expect("runs");
    assert_eq!(got, 500);
    let counts: Vec<(&str, u64, u64)> = s.iter().map(|n| (n.name.as_str(), n.received, n.sent)).collect();
    assert_eq!(counts, [("numbers", 0, 1_000), ("even", 1_000, 500), ("out", 500, 0)]);
}

#[test]
fn node_counters_go_through_the_metrics_facade() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        rt.block_on(async {
            let mut g = Topology::builder();
            let input = g.source("lines", from_iter(lines()));
            let nums = g.node("parse", parse().skip_errors(), input);
            g.sink("sink", for_each(|_: u32| async {}), nums);
            g.build().expect("valid").run().await.expect("runs");
        });
    });
    let mut values = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let node = key.key().labels().find(|l| l.key() == "node").map(|l| l.value().to_owned());
        if let (Some(node), DebugValue::Counter(n)) = (node, value) {
            values.insert((key.key().name().to_owned(), node), n);
        }
    }
    let get = |name: &str, node: &str| values.get(&(name.to_owned(), node.to_owned())).copied();
    assert_eq!(get("nanostream_node_received_items_total", "parse"), Some(6));
    assert_eq!(get("nanostream_node_sent_items_total", "parse"), Some(3));
    assert_eq!(get("nanostream_node_errors_total", "parse"), Some(3));
    assert_eq!(get("nanostream_node_received_items_total", "sink"), Some(3));
}

#[test]
fn watermarks_and_their_lag_go_through_the_metrics_facade() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use nanostream::operators::watermarks;
    use nanostream::time::Timestamp;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let an_hour_ago = Timestamp::now().as_millis() - 3_600_000;
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        rt.block_on(async {
            let mut g = Topology::builder();
            let times = g.source("times", from_iter([an_hour_ago, an_hour_ago + 1_000]));
            let timed = g.node("timed", watermarks(|t: &i64| Timestamp::from_millis(*t), Duration::ZERO), times);
            let probed = g.node("after", map(|t| t), timed.unfused());
            g.sink("sink", for_each(|_| async {}), probed);
            g.build().expect("valid").run().await.expect("runs");
        });
    });
    let mut gauges = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let node = key.key().labels().find(|l| l.key() == "node").map(|l| l.value().to_owned());
        if let (Some(node), DebugValue::Gauge(v)) = (node, value) {
            gauges.insert((key.key().name().to_owned(), node), v.into_inner());
        }
    }
    let get = |name: &str, node: &str| gauges.get(&(name.to_owned(), node.to_owned())).copied();
    // The assigner's own watermark, after its last item.
    assert_eq!(get("nanostream_node_watermark_milliseconds", "timed"), Some((an_hour_ago + 1_000) as f64));
    let lag = get("nanostream_node_watermark_lag_seconds", "timed").expect("a lag gauge");
    assert!((3_590.0..3_700.0).contains(&lag), "about an hour behind: {lag}");
    // The node after it ends at the final watermark: no lag.
    assert_eq!(get("nanostream_node_watermark_lag_seconds", "after"), Some(0.0));
}

/// Records the line and the bottleneck of every progress event.
#[derive(Default)]
struct Progress(Mutex<Vec<(String, String)>>);

impl tracing::Subscriber for Progress {
    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        meta.target() == "nanostream::progress"
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        #[derive(Default)]
        struct Fields(String, String);
        impl tracing::field::Visit for Fields {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "bottleneck" {
                    self.1 = value.to_owned();
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0.lock().expect("not poisoned").push((fields.0, fields.1));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The progress report is one line per report, every node with its total
/// and rate, the slow sink marked as the bottleneck.
#[test]
fn progress_report_marks_the_slow_sink_as_the_bottleneck() {
    let progress = Arc::new(Progress::default());
    let _guard = tracing::subscriber::set_default(progress.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime");
    rt.block_on(async {
        let mut g = Topology::builder();
        g.report_progress(S).default_capacity(64).chunk_size(8);
        let n = g.source("numbers", from_iter(0..200u32));
        let doubled = g.node("double", map(|x: u32| x * 2), n);
        g.sink("slow_store", for_each(|_: u32| tokio::time::sleep(Duration::from_millis(100))), doubled);
        g.build().expect("valid").run().await.expect("runs");
    });
    let events = progress.0.lock().expect("not poisoned").clone();
    assert!(!events.is_empty(), "progress was reported");
    for (line, _) in &events {
        let nodes: Vec<&str> = line.split(" | ").map(|part| part.split(' ').next().unwrap_or("")).collect();
        assert_eq!(nodes, ["numbers", "double", "slow_store"], "one line, each node once: {line}");
        assert!(line.contains("/s"), "rates beside totals: {line}");
    }
    let marked: Vec<&str> = events.iter().map(|(_, b)| b.as_str()).filter(|b| *b != "none").collect();
    assert!(!marked.is_empty(), "a bottleneck was marked: {events:?}");
    assert!(marked.iter().all(|n| *n == "slow_store"), "{events:?}");
    assert!(events.iter().any(|(line, _)| line.contains("slow_store") && line.contains("bottleneck:")), "{events:?}");
}

#[test]
fn graph_exports_show_fan_out_policies_and_dead_letters() {
    let mut g = Topology::builder();
    let input = g.source("lines", from_iter(lines()));
    let (nums, rejected) = g.node_with_dead_letters("parse", parse(), input);
    let parts = g.partition_by(nums, 2, |x: &u32| *x);
    g.sink("a", for_each(|_: DeadLetter<String, BadLine>| async {}), &rejected);
    g.sink("b", for_each(|_: DeadLetter<String, BadLine>| async {}), &rejected);
    let [p0, p1]: [Output<u32>; 2] = parts.try_into().expect("two parts");
    g.sink("p0", for_each(|_: u32| async {}), p0);
    g.sink("p1", for_each(|_: u32| async {}), p1);
    let t = g.build().expect("valid");
    let dot = t.to_dot();
    assert!(dot.contains(r#""parse" -> "p0" [label="partition 1/2, capacity 4096"];"#), "{dot}");
    assert!(dot.contains(r#""parse" -> "p1" [label="partition 2/2, capacity 4096"];"#), "{dot}");
    assert!(dot.contains(r#""parse.dead_letters" -> "a" [label="broadcast, capacity 4096"];"#), "{dot}");
    assert!(dot.contains(r#""parse" -> "parse.dead_letters" [label="dead letters"];"#), "{dot}");
    let mermaid = t.to_mermaid();
    assert!(mermaid.contains("-->|\"partition 1/2, capacity 4096\"|"), "{mermaid}");
    assert!(mermaid.contains("-->|\"dead letters\"|"), "{mermaid}");
}

// ---------- test kit ----------

#[tokio::test]
async fn the_test_kit_runs_sources_nodes_and_subgraphs() {
    assert_eq!(run_source(from_iter(0..3u8)).await.expect("runs"), [0, 1, 2]);
    let batched = run_node(batch(2, secs(1)), vec![1, 2, 3]).await.expect("runs");
    assert_eq!(batched, [vec![1, 2], vec![3]]);
    let out = run_subgraph(vec!["a b", "c"], |g, lines| {
        let words = g.node("split", flat_map(|l: &str| l.split(' ').map(str::to_owned).collect::<Vec<_>>()), lines);
        g.node("upper", map(|w: String| w.to_uppercase()), words)
    })
    .await
    .expect("runs");
    assert_eq!(out, ["A", "B", "C"]);
}

#[tokio::test]
async fn the_test_kit_reports_node_failures() {
    let error = run_node(parse(), vec!["1".into(), "x".into()]).await.expect_err("fails");
    assert!(matches!(error, Error::NodeFailed { .. }), "{error:?}");
}

/// Snapshots serialise (the `serde` feature), for a service to serve them
/// as JSON; a `Monitor` gives them to whoever watches, while the handle
/// stays with its owner.
#[tokio::test]
async fn snapshots_serialise_and_a_monitor_watches_while_the_owner_keeps_the_handle() {
    let mut g = Topology::builder();
    let n = g.source("numbers", from_iter(0..10u32));
    let (sum, total) = fold(0, |a, x: u32| a + x);
    g.sink("sum", sum, n);
    let running = g.build().expect("valid").start();
    let monitor = running.monitor();
    let watcher = tokio::spawn({
        let monitor = monitor.clone();
        async move {
            monitor.finished().await;
            serde_json::to_value(monitor.snapshot()).expect("serialises")
        }
    });
    running.join().await.expect("runs");
    assert_eq!(total.await, Some(45));
    assert!(monitor.is_finished());
    let json = watcher.await.expect("the watcher ran");
    assert_eq!(json[0]["name"], "numbers");
    assert_eq!(json[0]["sent"], 10);
    assert_eq!(json[1]["name"], "sum");
    assert_eq!(json[1]["received"], 10);
    assert!(json[1]["busy"]["secs"].is_u64(), "{json}");
}

/// A dead letter says how many times its item was tried: once, or as many
/// times as a retry policy inside the dead-letter one tried it.
#[tokio::test(start_paused = true)]
async fn dead_letters_count_the_attempts_a_retry_policy_made() {
    #[node]
    async fn parse(line: String) -> Result<u32, std::num::ParseIntError> {
        line.trim().parse()
    }
    for (tries, expected) in [(None, 1), (Some(3), 3)] {
        let mut g = Topology::builder();
        let lines = g.source("lines", from_iter(["1", "x", "3"].map(String::from)));
        let (numbers, rejected) = match tries {
            None => g.node_with_dead_letters("parse", parse(), lines),
            Some(n) => g.node_with_dead_letters("parse", parse().retry(Retry::attempts(n)), lines),
        };
        let (sum, total) = fold(0, |a, x: u32| a + x);
        g.sink("sum", sum, numbers);
        let (store, dead) = into_stream(16);
        g.sink("rejected", store, rejected);
        g.build().expect("valid").run().await.expect("runs");
        assert_eq!(total.await, Some(4));
        let dead: Vec<DeadLetter<String, std::num::ParseIntError>> = dead.collect().await;
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].input.as_str(), dead[0].attempts), ("x", expected), "tries: {tries:?}");
    }
}
