//! Behaviour of the core runtime: back-pressure, delivery, completion,
//! shutdown, failures and wiring errors. Counts are exact; quiescence is
//! reached with paused time (a sleep on a paused clock returns only once
//! every other task is idle), never with wall-clock sleeps.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use nanostream::prelude::*;
use nanostream::{
    Error, Sink,
    error::{AbandonedNode, BuildError},
    operators::then,
    sinks::into_sink,
    sources::{from_channel, from_stream},
};
use tokio::sync::Semaphore;

/// Lets every other task run until it blocks.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A sink that takes a permit from `gate` before consuming each item.
struct GatedSink {
    gate: Arc<Semaphore>,
    seen: Arc<AtomicUsize>,
}

impl Sink for GatedSink {
    type In = u64;
    type Error = Infallible;

    async fn consume(&mut self, _item: u64) -> Result<(), Infallible> {
        self.gate.acquire().await.expect("gate is never closed").forget();
        self.seen.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn back_pressure_stalls_the_source_at_the_documented_bound() {
    const CAPACITY: usize = 8;
    const CHUNK: usize = 4;
    const N: u64 = 10_000;
    let pulled = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let seen = Arc::new(AtomicUsize::new(0));

    let mut g = Topology::builder();
    g.chunk_size(CHUNK).default_capacity(CAPACITY);
    let counter = pulled.clone();
    let nums = g.source(
        "numbers",
        from_iter((0..N).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })),
    );
    // Queues between three tasks, not a fused chain: this test is about the
    // bound of an edge.
    let doubled = g.node("double", map(|x: u64| x * 2), nums.unfused());
    g.sink("stalled", GatedSink { gate: gate.clone(), seen: seen.clone() }, doubled.unfused());
    let running = g.build().expect("valid topology").start();

    settle().await;
    // The sink holds one chunk and is stuck on its first item; each of the
    // two edges queues CAPACITY items; `double` holds one full output chunk
    // it cannot send; the source holds one full chunk it cannot send.
    let expected = CHUNK + CAPACITY + CHUNK + CAPACITY + CHUNK;
    assert_eq!(pulled.load(Ordering::SeqCst), expected);
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    // The documented bound is c + 2e per edge.
    assert!(expected <= 2 * (CAPACITY + 2 * CHUNK));

    // Still waiting, not finished, and nothing more was pulled.
    settle().await;
    assert!(!running.is_finished());
    assert_eq!(pulled.load(Ordering::SeqCst), expected);

    // Release exactly one item: exactly one more slot's worth moves.
    gate.add_permits(1);
    settle().await;
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    gate.add_permits(N as usize);
    running.join().await.expect("pipeline completes");
    assert_eq!(seen.load(Ordering::SeqCst), N as usize);
    assert_eq!(pulled.load(Ordering::SeqCst), N as usize);
}

#[tokio::test(start_paused = true)]
async fn back_pressure_stalls_a_fused_chain_at_one_chunk() {
    const CHUNK: usize = 4;
    const N: u64 = 10_000;
    let pulled = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let seen = Arc::new(AtomicUsize::new(0));

    let mut g = Topology::builder();
    g.chunk_size(CHUNK);
    let counter = pulled.clone();
    let nums = g.source(
        "numbers",
        from_iter((0..N).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })),
    );
    let doubled = g.node("double", map(|x: u64| x * 2), nums);
    g.sink("stalled", GatedSink { gate: gate.clone(), seen: seen.clone() }, doubled);
    let topology = g.build().expect("valid topology");
    assert!(topology.to_dot().contains(r#""numbers" -> "double" [label="fused"];"#));
    let running = topology.start();

    settle().await;
    // One task, no queue: the chunk the sink is stuck in is all there is.
    assert_eq!(pulled.load(Ordering::SeqCst), CHUNK);
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    settle().await;
    assert!(!running.is_finished());
    assert_eq!(pulled.load(Ordering::SeqCst), CHUNK);

    // The sink finishes its chunk: exactly one more chunk moves.
    gate.add_permits(CHUNK);
    settle().await;
    assert_eq!(seen.load(Ordering::SeqCst), CHUNK);
    assert_eq!(pulled.load(Ordering::SeqCst), 2 * CHUNK);

    gate.add_permits(N as usize);
    running.join().await.expect("pipeline completes");
    assert_eq!(seen.load(Ordering::SeqCst), N as usize);
    assert_eq!(pulled.load(Ordering::SeqCst), N as usize);
}

/// A long chain fuses into one task and costs in proportion to its length
/// (a chunk visits each node a fixed number of times, whatever the length).
#[tokio::test]
async fn a_chain_of_forty_nodes_runs_fused() {
    let mut g = Topology::builder();
    g.chunk_size(64);
    let mut out = g.source("numbers", from_iter(0..100_000u64));
    for i in 0..40 {
        out = g.node(format!("plus_one_{i}"), map(|x: u64| x + 1), out);
    }
    let (sum, total) = fold(0u64, |a, x: u64| a + x);
    g.sink("sum", sum, out);
    let topology = g.build().expect("valid topology");
    assert_eq!(topology.to_dot().matches("[label=\"fused\"]").count(), 41);
    topology.run().await.expect("runs");
    assert_eq!(total.await, Some((0..100_000u64).map(|x| x + 40).sum()));
}

/// Copies of a chain after a split are one fused task each: one pipeline
/// per core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_a_chain_after_a_split_run_as_one_task_each() {
    let mut g = Topology::builder();
    let nums = g.source("numbers", from_iter(0..100_000u64));
    let mut totals = Vec::new();
    for (i, part) in g.round_robin(nums, 2).into_iter().enumerate() {
        let tripled = g.node(format!("triple_{i}"), map(|x: u64| x * 3), part);
        let plus = g.node(format!("plus_one_{i}"), map(|x: u64| x + 1), tripled);
        let (sum, total) = fold(0u64, |a, x: u64| a + x);
        g.sink(format!("sum_{i}"), sum, plus);
        totals.push(total);
    }
    let topology = g.build().expect("valid topology");
    let dot = topology.to_dot();
    for i in 0..2 {
        assert!(dot.contains(&format!("label=\"task triple_{i}\"")), "{dot}");
        assert!(dot.contains(&format!("\"triple_{i}\" -> \"plus_one_{i}\" [label=\"fused\"]")), "{dot}");
        assert!(dot.contains(&format!("\"plus_one_{i}\" -> \"sum_{i}\" [label=\"fused\"]")), "{dot}");
    }
    topology.run().await.expect("runs");
    let mut all = 0;
    for total in totals {
        let part = total.await.expect("a sum");
        assert!(part > 0, "each copy did some of the work");
        all += part;
    }
    assert_eq!(all, (0..100_000u64).map(|x| x * 3 + 1).sum());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_and_fan_in_deliver_every_item_exactly_once_in_edge_order() {
    const N: u64 = 200_000;
    let mut g = Topology::builder();
    let nums = g.source("numbers", from_iter(0..N));
    let evens = g.node("evens", map(|x: u64| 2 * x), &nums);
    let odds = g.node("odds", map(|x: u64| 2 * x + 1), &nums);
    let merged = g.node("merge", map(|x: u64| x), [evens, odds]);
    let (sink, results) = into_stream(1024);
    g.sink("collect", sink, merged);
    let running = g.build().expect("valid topology").start();

    let received: Vec<u64> = results.collect().await;
    running.join().await.expect("pipeline completes");

    assert_eq!(received.len(), 2 * N as usize);
    let mut seen = vec![false; 2 * N as usize];
    for &x in &received {
        assert!(!seen[x as usize], "{x} delivered twice");
        seen[x as usize] = true;
    }
    assert!(seen.iter().all(|s| *s), "some item was lost");
    // Each branch is a single task reading one edge: its order is kept.
    let evens: Vec<u64> = received.iter().copied().filter(|x| x % 2 == 0).collect();
    let odds: Vec<u64> = received.iter().copied().filter(|x| x % 2 == 1).collect();
    assert!(evens.windows(2).all(|w| w[0] < w[1]));
    assert!(odds.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_gives_each_branch_its_own_copy() {
    let mut g = Topology::builder();
    let words = g.source("words", from_iter(["a", "b"].map(String::from)));
    // One branch mutates its items; the other must not see that.
    let shouted = g.node(
        "shout",
        map(|mut w: String| {
            w.make_ascii_uppercase();
            w
        }),
        &words,
    );
    let (upper_sink, upper) = into_stream(8);
    let (plain_sink, plain) = into_stream(8);
    g.sink("upper", upper_sink, shouted);
    g.sink("plain", plain_sink, &words);
    g.build().expect("valid topology").run().await.expect("runs");
    assert_eq!(upper.collect::<Vec<_>>().await, ["A", "B"]);
    assert_eq!(plain.collect::<Vec<_>>().await, ["a", "b"]);
}

/// Groups items in threes; the final hook emits the remainder.
struct Triples(Vec<u32>);

impl Node for Triples {
    type In = u32;
    type Out = Vec<u32>;
    type Error = Infallible;

    async fn process(&mut self, item: u32, out: &mut Emitter<Vec<u32>>) -> Result<(), Infallible> {
        self.0.push(item);
        if self.0.len() == 3 {
            out.emit(std::mem::take(&mut self.0)).await;
        }
        Ok(())
    }

    async fn finish(&mut self, out: &mut Emitter<Vec<u32>>) -> Result<(), Infallible> {
        if !self.0.is_empty() {
            out.emit(std::mem::take(&mut self.0)).await;
        }
        Ok(())
    }
}

/// Counts batches and, in its final hook, emits the count.
#[derive(Default)]
struct CountThenReport(u32);

impl Node for CountThenReport {
    type In = Vec<u32>;
    type Out = String;
    type Error = Infallible;

    async fn process(&mut self, batch: Vec<u32>, out: &mut Emitter<String>) -> Result<(), Infallible> {
        self.0 += 1;
        out.emit(format!("{batch:?}")).await;
        Ok(())
    }

    async fn finish(&mut self, out: &mut Emitter<String>) -> Result<(), Infallible> {
        out.emit(format!("{} batches", self.0)).await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn finite_source_completes_and_final_hooks_cascade_in_order() {
    let mut g = Topology::builder();
    let nums = g.source("numbers", from_iter(1..=10u32));
    let triples = g.node("triples", Triples(Vec::new()), nums);
    let report = g.node("report", CountThenReport::default(), triples);
    let (sink, lines) = into_stream(64);
    g.sink("lines", sink, report);
    g.build().expect("valid topology").run().await.expect("completes");
    assert_eq!(lines.collect::<Vec<_>>().await, ["[1, 2, 3]", "[4, 5, 6]", "[7, 8, 9]", "[10]", "4 batches"]);
}

#[tokio::test(start_paused = true)]
async fn a_lone_item_is_not_held_back_waiting_for_a_chunk_to_fill() {
    let (events, tx) = from_channel::<u32>(8);
    let mut g = Topology::builder();
    g.chunk_size(1024);
    let events = g.source("events", events);
    let plus = g.node("plus_one", map(|x: u32| x + 1), events);
    let (sink, mut out) = into_stream(8);
    g.sink("out", sink, plus);
    let running = g.build().expect("valid topology").start();

    tx.send(41).await.expect("running");
    settle().await;
    // Delivered although the chunk holds one item and the source is open.
    assert_eq!(futures::FutureExt::now_or_never(out.next()), Some(Some(42)));
    drop(tx);
    running.join().await.expect("completes");
}

/// Emits one item, then waits forever.
struct EmitThenWait;

impl Source for EmitThenWait {
    type Out = u32;
    type Error = Infallible;

    async fn run(&mut self, out: &mut Emitter<u32>) -> Result<(), Infallible> {
        out.emit(7).await;
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_push_source_item_is_not_held_back_while_the_source_waits() {
    let mut g = Topology::builder();
    let n = g.source("waits", EmitThenWait);
    let (sink, mut out) = into_stream(8);
    g.sink("out", sink, n);
    let running = g.build().expect("valid topology").start();
    settle().await;
    assert_eq!(futures::FutureExt::now_or_never(out.next()), Some(Some(7)));
    running.shutdown(Duration::from_secs(1)).await.expect("stops the waiting source");
}

/// A source that counts every item it emits, forever.
struct Endless {
    emitted: Arc<AtomicUsize>,
}

impl Source for Endless {
    type Out = u64;
    type Error = Infallible;

    async fn run(&mut self, out: &mut Emitter<u64>) -> Result<(), Infallible> {
        let mut n = 0;
        loop {
            // Counted before `emit`, which buffers the item on its first poll.
            self.emitted.fetch_add(1, Ordering::SeqCst);
            out.emit(n).await;
            n += 1;
            if n % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_every_emitted_item_and_runs_final_hooks() {
    let emitted = Arc::new(AtomicUsize::new(0));
    let (reached, mut reached_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut g = Topology::builder();
    g.default_capacity(64).chunk_size(16);
    let nums = g.source("endless", Endless { emitted: emitted.clone() });
    let slowish = g.node(
        "signal",
        map(move |x: u64| {
            if x == 10_000 {
                let _ = reached.try_send(());
            }
            x
        }),
        nums,
    );
    let (count, total) = fold(0usize, |n, _x: u64| n + 1);
    g.sink("count", count, slowish);
    let running = g.build().expect("valid topology").start();

    reached_rx.recv().await.expect("the pipeline reaches item 10000");
    running.shutdown(Duration::from_secs(30)).await.expect("shuts down within the deadline");
    let total = total.await.expect("the sink's final hook ran");
    assert!(total > 10_000);
    assert_eq!(total, emitted.load(Ordering::SeqCst), "every emitted item was delivered");
}

#[tokio::test(start_paused = true)]
async fn shutdown_deadline_aborts_a_node_that_refuses_to_stop_and_reports_it() {
    let mut g = Topology::builder();
    g.chunk_size(2).default_capacity(4);
    let nums = g.source("numbers", from_iter(0..10u32));
    let stuck = g.node(
        "stuck",
        then(|x: u32| async move {
            if x == 0 {
                std::future::pending::<()>().await;
            }
            x
        }),
        nums.unfused(),
    );
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    let (count, total) = fold(0u32, move |n, _x: u32| {
        f.store(true, Ordering::SeqCst);
        n + 1
    });
    g.sink("count", count, stuck.unfused());
    let running = g.build().expect("valid topology").start();
    settle().await;

    let error = running.shutdown(Duration::from_millis(250)).await.expect_err("the deadline passes");
    let Error::ShutdownTimedOut { deadline, report } = error else {
        panic!("expected ShutdownTimedOut, got {error:?}");
    };
    assert_eq!(deadline, Duration::from_millis(250));
    // `stuck` holds [0, 1]; its edge queues [2, 3] and [4, 5]; the source is
    // blocked flushing [6, 7]; the sink waits for input.
    let names: Vec<(&str, usize)> =
        report.nodes.iter().map(|n: &AbandonedNode| (n.name.as_str(), n.queued_items)).collect();
    assert_eq!(names, [("numbers", 0), ("stuck", 4), ("count", 0)]);
    assert_eq!(report.queued_items(), 4);
    assert!(!finished.load(Ordering::SeqCst));
    assert_eq!(total.await, None, "no final hook runs on an aborted pipeline");
}

#[tokio::test(start_paused = true)]
async fn shutdown_deadline_reports_every_node_of_a_fused_task() {
    let mut g = Topology::builder();
    g.chunk_size(2);
    let nums = g.source("numbers", from_iter(0..10u32));
    let stuck = g.node(
        "stuck",
        then(|x: u32| async move {
            if x == 0 {
                std::future::pending::<()>().await;
            }
            x
        }),
        nums,
    );
    let (count, total) = fold(0u32, |n, _x: u32| n + 1);
    g.sink("count", count, stuck);
    let running = g.build().expect("valid topology").start();
    settle().await;

    let error = running.shutdown(Duration::from_millis(250)).await.expect_err("the deadline passes");
    let Error::ShutdownTimedOut { report, .. } = error else {
        panic!("expected ShutdownTimedOut, got {error:?}");
    };
    // One task runs the three nodes: all three were abandoned, with no queue.
    let names: Vec<(&str, usize)> =
        report.nodes.iter().map(|n: &AbandonedNode| (n.name.as_str(), n.queued_items)).collect();
    assert_eq!(names, [("numbers", 0), ("stuck", 0), ("count", 0)]);
    assert_eq!(total.await, None, "no final hook runs on an aborted pipeline");
}

#[derive(Debug)]
struct ParseError(String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot parse {:?}", self.0)
    }
}

impl std::error::Error for ParseError {}

#[node]
async fn parse(line: String) -> Result<u32, ParseError> {
    line.parse().map_err(|_| ParseError(line))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_error_stops_the_pipeline_and_names_the_node() {
    let mut g = Topology::builder();
    // An endless source: the pipeline only ends because the error stops it.
    let lines =
        g.source("lines", from_iter((0u64..).map(|i| if i == 5_000 { "oops".to_owned() } else { i.to_string() })));
    let nums = g.node("parse", parse(), lines);
    let (sum, total) = fold(0u64, |a, x: u32| a + u64::from(x));
    g.sink("sum", sum, nums);
    let error = g.build().expect("valid").run().await.expect_err("parse fails");
    match &error {
        Error::NodeFailed { node, source } => {
            assert_eq!(node, "parse");
            assert_eq!(source.to_string(), r#"cannot parse "oops""#);
        }
        other => panic!("expected NodeFailed, got {other:?}"),
    }
    assert_eq!(error.to_string(), "node `parse` failed");
    assert_eq!(total.await, None, "the sink's final hook does not run after a failure");
}

/// On one thread the downstream sink sees its input close before the
/// supervisor aborts it: only the failure flag keeps it from finishing.
#[tokio::test(start_paused = true)]
async fn a_failure_upstream_never_runs_downstream_final_hooks() {
    let mut g = Topology::builder();
    let lines = g.source("lines", from_iter(["1", "2", "x", "4"].map(String::from)));
    let nums = g.node("parse", parse(), lines);
    let (sum, total) = fold(0u64, |a, x: u32| a + u64::from(x));
    g.sink("sum", sum, nums);
    let error = g.build().expect("valid").run().await.expect_err("parse fails");
    assert!(matches!(&error, Error::NodeFailed { node, .. } if node == "parse"), "{error:?}");
    assert_eq!(total.await, None, "the sink's final hook must not run after a failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_node_is_reported_with_its_name_and_message() {
    let mut g = Topology::builder();
    let nums = g.source("numbers", from_iter(0u64..));
    let bad = g.node(
        "explode",
        map(|x: u64| {
            if x == 1_000 {
                panic!("boom at {x}");
            }
            x
        }),
        nums,
    );
    let (sum, total) = fold(0u64, |a, x: u64| a + x);
    g.sink("sum", sum, bad);
    let error = g.build().expect("valid").run().await.expect_err("panics");
    match error {
        Error::NodePanicked { node, message } => {
            assert_eq!(node, "explode");
            assert_eq!(message, "boom at 1000");
        }
        other => panic!("expected NodePanicked, got {other:?}"),
    }
    assert_eq!(total.await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_is_reported_and_the_source_is_stopped() {
    let mut g = Topology::builder();
    let nums = g.source("numbers", from_iter(0u64..));
    g.sink(
        "store",
        for_each(|x: u64| async move { if x == 3 { Err(format!("disk full at {x}")) } else { Ok(()) } }),
        nums,
    );
    let error = g.build().expect("valid").run().await.expect_err("sink fails");
    let Error::NodeFailed { node, source } = error else {
        panic!("expected NodeFailed");
    };
    assert_eq!(node, "store");
    assert_eq!(source.to_string(), "disk full at 3");
}

fn sink_u32() -> impl Sink<In = u32> {
    for_each(|_: u32| async {})
}

#[test]
fn build_rejects_a_duplicate_name() {
    let mut g = Topology::builder();
    let a = g.source("same", from_iter(0..1u32));
    g.sink("same", sink_u32(), a);
    assert_eq!(g.build().unwrap_err(), BuildError::DuplicateName { name: "same".into() });
}

#[test]
fn build_rejects_an_empty_name() {
    let mut g = Topology::builder();
    let a = g.source("", from_iter(0..1u32));
    g.sink("sink", sink_u32(), a);
    assert_eq!(g.build().unwrap_err(), BuildError::EmptyName);
}

#[test]
fn build_rejects_a_cycle() {
    let mut g = Topology::builder();
    let (loop_in, looped) = g.placeholder::<u32>("loop");
    let a = g.source("a", from_iter(0..1u32));
    let step = g.node("step", map(|x: u32| x + 1), [a, looped]);
    let again = g.node("again", map(|x: u32| x), &step);
    g.connect(&loop_in, again);
    g.sink("sink", sink_u32(), &step);
    let error = g.build().unwrap_err();
    assert_eq!(error, BuildError::Cycle { nodes: vec!["loop".into(), "step".into(), "again".into(), "loop".into()] });
    assert_eq!(error.to_string(), "nodes form a cycle: loop -> step -> again -> loop");
}

#[test]
fn build_rejects_zero_capacity_on_an_edge_and_as_default() {
    let mut g = Topology::builder();
    let a = g.source("a", from_iter(0..1u32));
    g.sink("sink", sink_u32(), a.with_capacity(0));
    assert_eq!(g.build().unwrap_err(), BuildError::ZeroCapacity { node: "sink".into() });

    let mut g = Topology::builder();
    g.default_capacity(0);
    let a = g.source("a", from_iter(0..1u32));
    g.sink("sink", sink_u32(), a);
    assert_eq!(g.build().unwrap_err(), BuildError::ZeroCapacity { node: "sink".into() });
}

#[test]
fn build_rejects_zero_chunk_size() {
    let mut g = Topology::builder();
    g.chunk_size(0);
    let a = g.source("a", from_iter(0..1u32));
    g.sink("sink", sink_u32(), a);
    assert_eq!(g.build().unwrap_err(), BuildError::ZeroChunkSize);
}

#[test]
fn build_rejects_a_node_without_input() {
    let mut g = Topology::builder();
    let a = g.source("a", from_iter(0..1u32));
    g.sink("sink", sink_u32(), a);
    g.sink("orphan", sink_u32(), Vec::<Output<u32>>::new());
    assert_eq!(g.build().unwrap_err(), BuildError::NoInput { node: "orphan".into() });
}

#[test]
fn build_rejects_a_placeholder_that_is_never_connected() {
    let mut g = Topology::builder();
    let (_never, out) = g.placeholder::<u32>("later");
    g.sink("sink", sink_u32(), out);
    assert_eq!(g.build().unwrap_err(), BuildError::NoInput { node: "later".into() });
}

#[test]
fn build_rejects_an_output_nobody_reads() {
    let mut g = Topology::builder();
    let a = g.source("a", from_iter(0..1u32));
    let _forgotten = g.node("double", map(|x: u32| x * 2), &a);
    g.sink("sink", sink_u32(), &a);
    assert_eq!(g.build().unwrap_err(), BuildError::UnreadOutput { node: "double".into() });
}

#[test]
fn build_rejects_an_output_of_another_builder() {
    let mut other = Topology::builder();
    let foreign = other.source("a", from_iter(0..1u32));
    let mut g = Topology::builder();
    g.sink("sink", sink_u32(), foreign);
    assert_eq!(g.build().unwrap_err(), BuildError::ForeignOutput { node: "sink".into() });
}

#[test]
fn build_rejects_an_empty_topology() {
    assert_eq!(Topology::builder().build().unwrap_err(), BuildError::Empty);
}

#[tokio::test(start_paused = true)]
async fn from_channel_delivers_everything_accepted_before_shutdown() {
    let (source, tx) = from_channel::<u32>(100);
    let mut g = Topology::builder();
    let items = g.source("inject", source);
    let (sum, total) = fold(0u32, |a, x: u32| a + x);
    g.sink("sum", sum, items);
    let running = g.build().expect("valid").start();
    for i in 1..=100 {
        tx.send(i).await.expect("accepted");
    }
    running.shutdown(Duration::from_secs(1)).await.expect("drains");
    assert_eq!(total.await, Some(5050));
    assert!(tx.send(1).await.is_err(), "no item is accepted after shutdown");
}

#[tokio::test(start_paused = true)]
async fn into_sink_and_into_stream_interoperate_with_futures() {
    let (tx, rx) = futures::channel::mpsc::channel::<u32>(4);
    let mut g = Topology::builder();
    let a = g.source("a", from_stream(futures::stream::iter(1..=5u32)));
    g.sink("forward", into_sink(tx), a);
    let running = g.build().expect("valid").start();
    assert_eq!(rx.collect::<Vec<_>>().await, [1, 2, 3, 4, 5]);
    running.join().await.expect("completes");
}

#[tokio::test(start_paused = true)]
async fn topology_can_be_awaited_directly() {
    let mut g = Topology::builder();
    let a = g.source("a", from_iter(0..3u32));
    let (sum, total) = fold(0u32, |a, x: u32| a + x);
    g.sink("sum", sum, a);
    g.build().expect("valid").await.expect("runs");
    assert_eq!(total.await, Some(3));
}

#[test]
fn graph_exports_name_every_node_and_edge_and_show_fused_tasks() {
    let mut g = Topology::builder();
    let a = g.source("numbers", from_iter(0..3u32));
    let b = g.node("double \"x\"", map(|x: u32| x * 2), a.with_capacity(16));
    let c = g.node("triple", map(|x: u32| x * 3), b);
    g.sink("print", sink_u32(), c.unfused());
    let t = g.build().expect("valid");
    let dot = t.to_dot();
    assert!(dot.contains(r#""numbers" [shape=invhouse];"#), "{dot}");
    assert!(dot.contains(r#""numbers" -> "double \"x\"" [label="capacity 16"];"#), "{dot}");
    assert!(dot.contains(r#""double \"x\"" -> "triple" [label="fused"];"#), "{dot}");
    let default_edge = format!(r#""triple" -> "print" [label="capacity {}"];"#, nanostream::topology::DEFAULT_CAPACITY);
    assert!(dot.contains(&default_edge), "{dot}");
    // The fused pair is drawn as one task.
    let cluster = "    subgraph cluster_0 {\n        label=\"task double \\\"x\\\"\";\n        style=dashed;\n        \"double \\\"x\\\"\" [shape=box];\n        \"triple\" [shape=box];\n    }\n";
    assert!(dot.contains(cluster), "{dot}");
    let mermaid = t.to_mermaid();
    assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
    assert!(mermaid.contains("    subgraph t0[\"task double #quot;x#quot;\"]\n        n1[\"double #quot;x#quot;\"]\n        n2[\"triple\"]\n    end\n"), "{mermaid}");
    assert!(mermaid.contains("n0 -->|\"capacity 16\"| n1"), "{mermaid}");
    assert!(mermaid.contains("n1 -->|\"fused\"| n2"), "{mermaid}");
}

/// Records the `name` field of every span opened while it is the default.
#[derive(Default)]
struct SpanNames(std::sync::Mutex<Vec<(String, String)>>, AtomicUsize);

impl tracing::Subscriber for SpanNames {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        struct Name(Option<String>);
        impl tracing::field::Visit for Name {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "name" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut name = Name(None);
        span.record(&mut name);
        if let Some(name) = name.0 {
            self.0.lock().expect("not poisoned").push((span.metadata().name().to_owned(), name));
        }
        tracing::span::Id::from_u64(self.1.fetch_add(1, Ordering::Relaxed) as u64 + 1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn every_node_task_runs_in_a_span_named_after_the_node() {
    let recorder = Arc::new(SpanNames::default());
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let mut g = Topology::builder();
    let a = g.source("numbers", from_iter(0..3u32));
    let b = g.node("double", map(|x: u32| x * 2), a);
    g.sink("print", sink_u32(), b);
    g.build().expect("valid").run().await.expect("runs");
    // Fused into one task, each node still has its own span.
    let mut spans = recorder.0.lock().expect("not poisoned").clone();
    spans.sort();
    let expected: Vec<(String, String)> =
        ["double", "numbers", "print"].iter().map(|n| ("node".to_owned(), (*n).to_owned())).collect();
    assert_eq!(spans, expected);
}
