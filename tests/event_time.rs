//! Event time: watermarks reach every node (fused, unfused, fan-in,
//! `parallel`), idle inputs stop holding them back, event-time windows give
//! exact results with late items routed, and a shutdown never emits an open
//! window as if it were complete.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use nanostream::prelude::*;
use nanostream::{
    Now,
    acks::{AckOutcome, Acks},
    operators::{Emission, Late, Windows, then, watermarks},
    sources::from_channel,
    time::{Timed, Timestamp},
};
use tokio::sync::mpsc;

fn ms(t: i64) -> Timestamp {
    Timestamp::from_millis(t)
}

fn secs(s: i64) -> Timestamp {
    Timestamp::from_millis(s * 1000)
}

/// (key, event time in ms, value)
type Event = (u32, i64, u64);

fn event_time(e: &Event) -> Timestamp {
    ms(e.1)
}

/// Runs `g`, which must fail, naming `node` and saying `says`.
async fn fails_naming(g: nanostream::TopologyBuilder, node: &str, says: &str) {
    let error = g.build().expect("valid").run().await.expect_err("fails by default");
    let message = nanostream::error::Report::from(error).to_string();
    assert!(message.contains(node) && message.contains(says), "{message}");
}

/// Runs `g` to completion; returns the errors counted on `node`.
async fn errors_when_run(g: nanostream::TopologyBuilder, node: &str) -> u64 {
    let running = g.build().expect("valid").start();
    let monitor = running.monitor();
    running.join().await.expect("runs");
    monitor.snapshot().iter().find(|n| n.name == node).map_or(0, |n| n.errors)
}

/// Passes items on and reports every watermark it sees.
struct Probe<T> {
    seen: mpsc::UnboundedSender<Timestamp>,
    _t: std::marker::PhantomData<fn(T)>,
}

fn probe<T>() -> (Probe<T>, mpsc::UnboundedReceiver<Timestamp>) {
    let (seen, rx) = mpsc::unbounded_channel();
    (Probe { seen, _t: std::marker::PhantomData }, rx)
}

impl<T: Send + 'static> Node for Probe<T> {
    type In = T;
    type Out = T;
    type Error = Infallible;

    async fn process(&mut self, item: T, out: &mut Emitter<T>) -> Result<(), Infallible> {
        out.emit(item).await;
        Ok(())
    }

    fn process_now(&mut self, item: T) -> Now<T, T, Infallible> {
        Now::Emit(item)
    }

    async fn on_watermark(&mut self, watermark: Timestamp, _: &mut Emitter<T>) -> Result<(), Infallible> {
        let _ = self.seen.send(watermark);
        Ok(())
    }
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Timestamp>) -> Vec<Timestamp> {
    let mut seen = Vec::new();
    while let Ok(t) = rx.try_recv() {
        seen.push(t);
    }
    seen
}

/// The next watermark after the minimum (a timed input starts there).
async fn next_mark(rx: &mut mpsc::UnboundedReceiver<Timestamp>) -> Timestamp {
    loop {
        let t = rx.recv().await.expect("the probe reports until the pipeline ends");
        if t > Timestamp::MIN {
            return t;
        }
    }
}

#[tokio::test]
async fn watermarks_reach_fused_and_unfused_nodes_and_end_with_the_final_one() {
    let events: Vec<Event> = (0..10).map(|i| (0, i * 10_000, 1)).collect();
    let mut g = Topology::builder();
    // One item per chunk, so that watermarks move between items (in one
    // chunk, only the last one would show).
    g.chunk_size(1);
    let events = g.source("events", from_iter(events));
    let timed = g.node("timed", watermarks(event_time, Duration::ZERO), events);
    let (fused, mut fused_seen) = probe();
    let a = g.node("fused", fused, timed);
    let (unfused, mut unfused_seen) = probe();
    let b = g.node("unfused", unfused, a.unfused());
    g.sink("sink", for_each(|_: Timed<Event>| async {}), b);
    g.build().expect("valid").run().await.expect("runs");

    for seen in [drain(&mut fused_seen), drain(&mut unfused_seen)] {
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "watermarks only move forward: {seen:?}");
        assert_eq!(seen.last(), Some(&Timestamp::MAX), "the end of input is the final watermark");
        let finite: Vec<_> = seen.iter().filter(|t| **t > Timestamp::MIN && **t < Timestamp::MAX).collect();
        assert!(finite.len() >= 9, "the watermark moved with the events: {seen:?}");
        assert!(finite.iter().all(|t| t.as_millis() % 10_000 == 0 && **t <= secs(90)), "{seen:?}");
    }
}

#[tokio::test]
async fn where_inputs_meet_the_watermark_is_their_minimum() {
    let (a_src, a) = from_channel::<Event>(16);
    let (b_src, b) = from_channel::<Event>(16);
    let mut g = Topology::builder();
    let a_out = g.source("a", a_src);
    let a_timed = g.node("a_timed", watermarks(event_time, Duration::ZERO), a_out);
    let b_out = g.source("b", b_src);
    let b_timed = g.node("b_timed", watermarks(event_time, Duration::ZERO), b_out);
    let (meet, mut seen) = probe();
    let met = g.node("meet", meet, vec![a_timed, b_timed]);
    g.sink("sink", for_each(|_: Timed<Event>| async {}), met);
    let running = g.build().expect("valid").start();

    a.send((0, 50_000, 1)).await.expect("open");
    b.send((0, 10_000, 1)).await.expect("open");
    assert_eq!(next_mark(&mut seen).await, secs(10), "b is behind: it holds the watermark");
    b.send((0, 60_000, 1)).await.expect("open");
    assert_eq!(next_mark(&mut seen).await, secs(50), "now a is behind");
    a.send((0, 100_000, 1)).await.expect("open");
    assert_eq!(next_mark(&mut seen).await, secs(60));
    drop((a, b));
    running.join().await.expect("runs");
    assert_eq!(drain(&mut seen).last(), Some(&Timestamp::MAX));
}

#[tokio::test(start_paused = true)]
async fn an_idle_input_stops_holding_the_watermark_back_and_counts_again_when_it_speaks() {
    let idle_after = Duration::from_secs(5);
    let (a_src, a) = from_channel::<Event>(16);
    let (b_src, b) = from_channel::<Event>(16);
    let mut g = Topology::builder();
    let a_out = g.source("a", a_src);
    let a_timed = g.node("a_timed", watermarks(event_time, Duration::ZERO).idle_after(idle_after), a_out);
    let b_out = g.source("b", b_src);
    let b_timed = g.node("b_timed", watermarks(event_time, Duration::ZERO).idle_after(idle_after), b_out);
    let (meet, mut seen) = probe();
    let met = g.node("meet", meet, vec![a_timed, b_timed]);
    g.sink("sink", for_each(|_: Timed<Event>| async {}), met);
    let running = g.build().expect("valid").start();

    a.send((0, 50_000, 1)).await.expect("open");
    b.send((0, 10_000, 1)).await.expect("open");
    assert_eq!(next_mark(&mut seen).await, secs(10));
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.send((0, 55_000, 1)).await.expect("open");
    // b has been quiet for 5 s at t = 5 s: a alone decides.
    assert_eq!(next_mark(&mut seen).await, secs(55), "an idle input no longer holds the others back");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // b speaks again, behind: it counts again, and the watermark does not go
    // back.
    b.send((0, 20_000, 1)).await.expect("open");
    a.send((0, 70_000, 1)).await.expect("open");
    b.send((0, 80_000, 1)).await.expect("open");
    assert_eq!(next_mark(&mut seen).await, secs(70), "b rejoined: the minimum of both again");
    drop((a, b));
    running.join().await.expect("runs");
}

/// Counts items that arrive behind the watermark their node has already
/// seen: an edge that passed a watermark too early shows up here.
struct BehindWatermark {
    watermark: Timestamp,
    behind: Arc<Mutex<u64>>,
}

impl Node for BehindWatermark {
    type In = Timed<Event>;
    type Out = Timed<Event>;
    type Error = Infallible;

    async fn process(&mut self, item: Timed<Event>, out: &mut Emitter<Timed<Event>>) -> Result<(), Infallible> {
        if item.stamp.time < self.watermark {
            *self.behind.lock().expect("not poisoned") += 1;
        }
        out.emit(item).await;
        Ok(())
    }

    async fn on_watermark(&mut self, t: Timestamp, _: &mut Emitter<Timed<Event>>) -> Result<(), Infallible> {
        self.watermark = t;
        Ok(())
    }
}

/// Events in bounded disorder: each within `delay` of the latest before it,
/// so none is late where it starts.
fn disordered(n: i64, delay: i64, keys: u32) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let jitter = (i * 7919) % delay;
            ((i as u32 * 31) % keys, (i * 100 - jitter).max(0), (i % 5) as u64)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_workers_pass_a_watermark_on_only_after_every_item_before_it() {
    let events = disordered(20_000, 3_000, 7);
    let behind = Arc::new(Mutex::new(0));
    let mut g = Topology::builder();
    g.chunk_size(64);
    let events = g.source("events", from_iter(events));
    let timed = g.node("timed", watermarks(event_time, Duration::from_secs(3)), events);
    // Some items wait, so workers overtake each other and give chunks back.
    let worked = g.parallel(
        "work",
        4,
        || {
            then(|e: Timed<Event>| async move {
                if e.item.1 % 700 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                e
            })
        },
        timed,
    );
    let checked = g.node("check", BehindWatermark { watermark: Timestamp::MIN, behind: behind.clone() }, worked);
    let (counter, count) = nanostream::operators::count();
    g.sink("count", counter, checked);
    g.build().expect("valid").run().await.expect("runs");
    assert_eq!(count.get(), 20_000);
    assert_eq!(*behind.lock().expect("not poisoned"), 0, "no item came after a watermark that had passed it");
}

/// The results of a window node, by (key, window start, window end), as
/// the last emission for each left them; and the late items.
type Results = BTreeMap<(u32, i64, i64), u64>;

fn final_results(emitted: &[(u32, i64, i64, u64, Emission)]) -> Results {
    let mut results = Results::new();
    for &(key, start, end, value, _) in emitted {
        results.insert((key, start, end), value);
    }
    results
}

/// Runs `events` through `watermarks(delay)` and a summing window, with a
/// chunk size of `chunk`; returns every emission in order and the late
/// items' event times.
async fn run_window(
    events: Vec<Event>,
    delay: Duration,
    windows: Windows,
    chunk: usize,
) -> (Vec<(u32, i64, i64, u64, Emission)>, Vec<i64>) {
    let mut g = Topology::builder();
    g.chunk_size(chunk);
    let events = g.source("events", from_iter(events));
    let timed = g.node("timed", watermarks(event_time, delay), events);
    let sums = windows.aggregate(|e: &Timed<Event>| e.stamp, |e| e.item.0, || 0u64, |s, e| *s += e.item.2);
    let (sums, late) = g.window("sums", sums, timed);
    let (sink, results) = into_stream(1024);
    g.sink("results", sink, sums);
    let (late_sink, late_items) = into_stream(1024);
    g.sink("late", late_sink, late);
    let running = g.build().expect("valid").start();
    let emitted: Vec<_> = results
        .map(|r| (r.key, r.window.start.as_millis(), r.window.end.as_millis(), r.value, r.emission))
        .collect()
        .await;
    let late: Vec<i64> = late_items.map(|l: Late<Timed<Event>>| l.item.item.1).collect().await;
    running.join().await.expect("runs");
    (emitted, late)
}

/// Tumbling windows of 10 s, 2 s of disorder, 5 s of allowed lateness.
/// Event times in seconds: 9 and 7 are late but within lateness; 3 and 12
/// come after their windows were closed for good.
fn scripted() -> Vec<Event> {
    [(1, 1), (5, 2), (11, 3), (13, 4), (9, 5), (14, 6), (7, 7), (21, 8), (3, 9), (30, 10), (12, 11)]
        .map(|(s, v)| (0, s * 1000, v))
        .to_vec()
}

#[tokio::test]
async fn tumbling_windows_close_on_the_watermark_correct_late_items_and_route_the_rest() {
    let windows = Windows::tumbling(Duration::from_secs(10)).allowed_lateness(Duration::from_secs(5));
    // One item per chunk: each watermark reaches the window right after
    // its item, so the corrections are emitted as such.
    let (emitted, late) = run_window(scripted(), Duration::from_secs(2), windows, 1).await;
    let s = |x: i64| x * 1000;
    assert_eq!(
        emitted,
        [
            (0, 0, s(10), 3, Emission::OnTime),
            (0, 0, s(10), 8, Emission::Update),
            (0, 0, s(10), 15, Emission::Update),
            (0, s(10), s(20), 13, Emission::OnTime),
            (0, s(20), s(30), 8, Emission::OnTime),
            (0, s(30), s(40), 10, Emission::OnTime),
        ]
    );
    assert_eq!(late, [s(3), s(12)], "items past the allowed lateness go to the late output");

    // In one chunk, the corrections fold into the first result; the final
    // results and the late items are the same.
    let (whole, late_whole) = run_window(scripted(), Duration::from_secs(2), windows, 1024).await;
    assert_eq!(final_results(&whole), final_results(&emitted));
    assert_eq!(late_whole, late);
    assert!(whole.iter().all(|e| e.4 == Emission::OnTime));
}

#[tokio::test]
async fn sliding_windows_count_each_item_in_every_window_that_holds_it() {
    let events: Vec<Event> = [1, 4, 6, 12].map(|s| (0, s * 1000, 1)).to_vec();
    let windows = Windows::sliding(Duration::from_secs(10), Duration::from_secs(5));
    let (emitted, late) = run_window(events, Duration::ZERO, windows, 1024).await;
    let s = |x: i64| x * 1000;
    let expected: Results = [((0, s(-5), s(5)), 2), ((0, 0, s(10)), 3), ((0, s(5), s(15)), 2), ((0, s(10), s(20)), 1)]
        .into_iter()
        .collect();
    assert_eq!(final_results(&emitted), expected);
    assert!(late.is_empty());
}

#[tokio::test]
async fn sessions_merge_when_an_item_bridges_them_and_close_a_gap_after_their_last_item() {
    // Key 0: 1 s and 9 s are two sessions until 5 s arrives and bridges
    // them; 30 s is a session of its own. Key 1: one item.
    let events: Vec<Event> =
        [(0, 1, 1), (0, 9, 2), (1, 3, 10), (0, 5, 4), (0, 30, 8)].map(|(k, s, v)| (k, s * 1000, v)).to_vec();
    let windows = Windows::session(Duration::from_secs(5));
    let (emitted, late) = run_window(events, Duration::from_secs(10), windows, 1024).await;
    let s = |x: i64| x * 1000;
    let expected: Results =
        [((0, s(1), s(14)), 7), ((0, s(30), s(35)), 8), ((1, s(3), s(8)), 10)].into_iter().collect();
    assert_eq!(final_results(&emitted), expected);
    assert!(late.is_empty());
}

#[tokio::test]
async fn whole_windows_come_out_as_one_item_per_window() {
    let events: Vec<Event> = [(0, 1, 1), (1, 2, 2), (2, 3, 3), (0, 12, 4)].map(|(k, s, v)| (k, s * 1000, v)).to_vec();
    let mut g = Topology::builder();
    let events = g.source("events", from_iter(events));
    let timed = g.node("timed", watermarks(event_time, Duration::ZERO), events);
    let sums = Windows::tumbling(Duration::from_secs(10))
        .aggregate(|e: &Timed<Event>| e.stamp, |e| e.item.0, || 0u64, |s, e| *s += e.item.2)
        .whole_windows();
    let (sums, late) = g.window("sums", sums, timed);
    let (sink, results) = into_stream(16);
    g.sink("results", sink, sums);
    g.sink("late", for_each(|_| async {}), late);
    g.build().expect("valid").run().await.expect("runs");
    let batches: Vec<_> = results.collect().await;
    assert_eq!(batches.len(), 2);
    let mut first = batches[0].results.clone();
    first.sort();
    assert_eq!(batches[0].window.start, secs(0));
    assert_eq!(first, [(0, 1), (1, 2), (2, 3)]);
    assert_eq!(batches[1].results, [(0, 4)]);
}

#[tokio::test]
async fn a_window_without_a_late_output_fails_on_a_late_item_and_skip_errors_counts_it() {
    let events: Vec<Event> = [30, 1].map(|s| (0, s * 1000, 1)).to_vec();
    let build = |skip: bool| {
        let mut g = Topology::builder();
        let events = g.source("events", from_iter(events.clone()));
        let timed = g.node("timed", watermarks(event_time, Duration::ZERO), events);
        let counts = Windows::tumbling(Duration::from_secs(10)).aggregate(
            |e: &Timed<Event>| e.stamp,
            |_| (),
            || 0u32,
            |n, _| *n += 1,
        );
        let (sink, results) = into_stream(16);
        if skip {
            let counted = g.node("counts", counts.skip_errors(), timed);
            g.sink("results", sink, counted);
        } else {
            let counted = g.node("counts", counts, timed);
            g.sink("results", sink, counted);
        }
        (g, results)
    };
    fails_naming(build(false).0, "counts", "too late").await;
    let (g, results) = build(true);
    assert_eq!(errors_when_run(g, "counts").await, 1, "the skipped late item is counted");
    assert_eq!(results.count().await, 1);
}

/// Batches of events, each with an acknowledgement guard whose outcome is
/// recorded; then waits until the pipeline is stopped.
struct Batches {
    batches: Vec<Vec<Event>>,
    outcomes: Arc<Mutex<HashMap<usize, AckOutcome>>>,
}

impl Source for Batches {
    type Out = Event;
    type Error = Infallible;

    async fn run(&mut self, out: &mut Emitter<Event>) -> Result<(), Infallible> {
        for (i, batch) in std::mem::take(&mut self.batches).into_iter().enumerate() {
            let outcomes = self.outcomes.clone();
            out.begin_batch(Acks::new(move |outcome| {
                outcomes.lock().expect("not poisoned").insert(i, outcome);
            }));
            out.emit_all(batch).await;
            out.end_batch();
            // Each batch in a chunk of its own.
            out.flush().await;
        }
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_shutdown_never_emits_an_open_event_time_window_and_leaves_its_inputs_undone() {
    let outcomes = Arc::new(Mutex::new(HashMap::new()));
    // Batch 0 is all in window [0, 10 s); batch 1's item at 25 s closes it
    // and opens [20 s, 30 s), which is still open at the shutdown.
    let batches = vec![vec![(0, 1_000, 1), (0, 2_000, 2)], vec![(0, 25_000, 4)]];
    let mut g = Topology::builder();
    let events = g.source("events", Batches { batches, outcomes: outcomes.clone() });
    let timed = g.node("timed", watermarks(event_time, Duration::ZERO), events);
    let sums = Windows::tumbling(Duration::from_secs(10)).aggregate(
        |e: &Timed<Event>| e.stamp,
        |e| e.item.0,
        || 0u64,
        |s, e| *s += e.item.2,
    );
    let (sums, late) = g.window("sums", sums, timed.unfused());
    let (sink, mut results) = into_stream(16);
    g.sink("results", sink, sums);
    g.sink("late", for_each(|_| async {}), late);
    let running = g.build().expect("valid").start();

    let first = results.next().await.expect("the closed window comes out");
    assert_eq!((first.window.start, first.value), (secs(0), 3));
    running.shutdown(Duration::from_secs(5)).await.expect("graceful");
    assert!(results.next().await.is_none(), "the open window is not emitted as if complete");
    let outcomes = outcomes.lock().expect("not poisoned").clone();
    assert_eq!(outcomes.get(&0), Some(&AckOutcome::Done), "the closed window's inputs are done");
    assert_eq!(outcomes.get(&1), Some(&AckOutcome::Abandoned), "the open window's input is re-read after a restart");
}

#[tokio::test]
async fn the_snapshot_shows_each_nodes_watermark_and_its_lag() {
    let now = Timestamp::now().as_millis();
    let events: Vec<Event> = vec![(0, now - 60_000, 1)];
    let (src, tx) = from_channel::<Event>(4);
    let mut g = Topology::builder();
    let events_out = g.source("events", src);
    let timed = g.node("timed", watermarks(event_time, Duration::ZERO), events_out);
    let (meet, mut seen) = probe();
    let probed = g.node("probe", meet, timed.unfused());
    g.sink("sink", for_each(|_: Timed<Event>| async {}), probed);
    let topology: nanostream::Topology = g.build().expect("valid");
    let running = topology.start();
    for e in events {
        tx.send(e).await.expect("open");
    }
    assert_eq!(next_mark(&mut seen).await, ms(now - 60_000));
    let snapshot = running.snapshot();
    let node = snapshot.iter().find(|n| n.name == "probe").expect("listed");
    assert_eq!(node.watermark, Some(ms(now - 60_000)));
    let lag = node.watermark_lag.expect("a lag with a watermark");
    assert!(lag >= Duration::from_secs(60) && lag < Duration::from_secs(600), "{lag:?}");
    let source = snapshot.iter().find(|n| n.name == "events").expect("listed");
    assert_eq!(source.watermark, None, "a source without event time has none");
    drop(tx);
    running.join().await.expect("runs");
}

// ---------------------------------------------------------------------------
// Randomized: the same final results as an in-memory reference, whatever the
// chunking, fusion, interleaving of partitions, `parallel` workers and
// threads. `NANOSTREAM_RANDOM_CASES` sets the number of cases,
// `NANOSTREAM_RANDOM_SEED` replays a run; the seed is printed.

mod randomized {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    #[derive(Debug, Clone, Copy)]
    enum Kind {
        Tumbling(i64),
        Sliding(i64, i64),
        Session(i64),
    }

    #[derive(Debug, Clone)]
    struct Case {
        partitions: Vec<Vec<Event>>,
        delay: i64,
        lateness: i64,
        kind: Kind,
        chunk: usize,
        fusion: bool,
        /// How the items travel to the window.
        route: Route,
        threads: usize,
    }

    /// Between the partitions and the window: directly (fan-in), through
    /// `parallel` or `parallel_ordered` workers, or split round robin or by
    /// key over copies of a node and merged again.
    #[derive(Debug, Clone, Copy)]
    enum Route {
        Direct,
        Parallel(usize),
        Ordered(usize),
        RoundRobin(usize),
        ByKey(usize),
    }

    /// One partition: times that mostly advance, within `delay` of disorder,
    /// and now and then an item far behind (late).
    fn partition(delay: i64) -> impl Strategy<Value = Vec<Event>> {
        prop::collection::vec((0u32..4, 0i64..2_000, 0i64..=delay, 1u64..10, 0u8..10, 0i64..30_000), 0..60).prop_map(
            move |steps| {
                let mut now = 0;
                steps
                    .into_iter()
                    .map(|(key, step, jitter, v, late, behind)| {
                        now += step;
                        let t = if late == 0 { now - delay - behind } else { now - jitter };
                        (key, t, v)
                    })
                    .collect()
            },
        )
    }

    fn case() -> impl Strategy<Value = Case> {
        let kind = prop_oneof![
            prop_oneof![Just(2_000i64), Just(5_000)].prop_map(Kind::Tumbling),
            prop_oneof![Just((6_000i64, 2_000i64)), Just((6_000, 3_000))].prop_map(|(s, h)| Kind::Sliding(s, h)),
            (1_000i64..4_000).prop_map(Kind::Session),
        ];
        (prop_oneof![Just(0i64), Just(1_000), Just(3_000)], prop_oneof![Just(0i64), Just(2_000)], kind).prop_flat_map(
            |(delay, lateness, kind)| {
                (
                    prop::collection::vec(partition(delay), 1..4),
                    prop_oneof![Just(1usize), Just(3), Just(64), Just(1024)],
                    any::<bool>(),
                    prop_oneof![
                        Just(Route::Direct),
                        (1usize..4).prop_map(Route::Parallel),
                        (1usize..4).prop_map(Route::Ordered),
                        (2usize..4).prop_map(Route::RoundRobin),
                        (2usize..4).prop_map(Route::ByKey),
                    ],
                    1usize..3,
                )
                    .prop_map(move |(partitions, chunk, fusion, route, threads)| Case {
                        partitions,
                        delay,
                        lateness,
                        kind,
                        chunk,
                        fusion,
                        route,
                        threads,
                    })
            },
        )
    }

    /// The reference: each item is judged by its own partition's watermark
    /// before it; the items not too late are summed per key and window.
    fn reference(case: &Case) -> (Results, Vec<i64>) {
        let mut included: Vec<(Event, Vec<(i64, i64)>)> = Vec::new();
        let mut late = Vec::new();
        for events in &case.partitions {
            let mut high: Option<i64> = None;
            for &e in events {
                let wm = high.map_or(i64::MIN, |h| h - case.delay);
                high = Some(high.map_or(e.1, |h| h.max(e.1)));
                let t = e.1;
                match case.kind {
                    Kind::Tumbling(size) | Kind::Sliding(size, _) => {
                        let slide = match case.kind {
                            Kind::Sliding(_, slide) => slide,
                            _ => size,
                        };
                        let mut windows = Vec::new();
                        let mut start = t.div_euclid(slide) * slide;
                        while start > t - size {
                            if start + size + case.lateness > wm {
                                windows.push((start, start + size));
                            }
                            start -= slide;
                        }
                        if windows.is_empty() {
                            late.push(t);
                        } else {
                            included.push((e, windows));
                        }
                    }
                    Kind::Session(gap) => {
                        if t.saturating_add(gap + case.lateness) <= wm {
                            late.push(t);
                        } else {
                            included.push((e, Vec::new()));
                        }
                    }
                }
            }
        }
        let mut results = Results::new();
        match case.kind {
            Kind::Session(gap) => {
                let mut by_key: BTreeMap<u32, Vec<(i64, u64)>> = BTreeMap::new();
                for (e, _) in &included {
                    by_key.entry(e.0).or_default().push((e.1, e.2));
                }
                for (key, mut items) in by_key {
                    items.sort();
                    let mut current: Option<(i64, i64, u64)> = None;
                    for (t, v) in items {
                        current = match current {
                            Some((start, end, sum)) if t < end => Some((start, end.max(t + gap), sum + v)),
                            Some((start, end, sum)) => {
                                results.insert((key, start, end), sum);
                                Some((t, t + gap, v))
                            }
                            None => Some((t, t + gap, v)),
                        };
                    }
                    if let Some((start, end, sum)) = current {
                        results.insert((key, start, end), sum);
                    }
                }
            }
            _ => {
                for (e, windows) in &included {
                    for &(start, end) in windows {
                        *results.entry((e.0, start, end)).or_default() += e.2;
                    }
                }
            }
        }
        late.sort();
        (results, late)
    }

    /// What the emissions leave: the last result per key and window; for
    /// sessions, a result replaces the key's earlier ones it overlaps.
    fn final_view(emitted: &[(u32, i64, i64, u64, Emission)], sessions: bool) -> Results {
        let mut results = Results::new();
        for &(key, start, end, value, _) in emitted {
            if sessions {
                results.retain(|&(k, s, e), _| !(k == key && s < end && start < e));
            }
            results.insert((key, start, end), value);
        }
        results
    }

    async fn run(case: &Case) -> (Vec<(u32, i64, i64, u64, Emission)>, Vec<i64>) {
        let delay = Duration::from_millis(case.delay as u64);
        let mut g = Topology::builder();
        g.chunk_size(case.chunk).fusion(case.fusion);
        let timed: Vec<_> = case
            .partitions
            .iter()
            .enumerate()
            .map(|(i, events)| {
                let events = g.source(format!("p{i}"), from_iter(events.clone()));
                g.node(format!("timed{i}"), watermarks(event_time, delay), events)
            })
            .collect();
        // Some items wait, so copies overtake each other.
        let work = || {
            then(|e: Timed<Event>| async move {
                if e.item.1 % 3 == 0 {
                    tokio::task::yield_now().await;
                }
                e
            })
        };
        let input = match case.route {
            Route::Direct => timed,
            Route::Parallel(n) => vec![g.parallel("work", n, work, timed)],
            Route::Ordered(n) => vec![g.parallel_ordered("work", n, work, timed)],
            Route::RoundRobin(n) | Route::ByKey(n) => {
                let merged = g.node("merged", map(|e: Timed<Event>| e), timed);
                let parts = match case.route {
                    Route::RoundRobin(_) => g.round_robin(merged, n),
                    _ => g.partition_by(merged, n, |e: &Timed<Event>| e.item.0),
                };
                parts.into_iter().enumerate().map(|(i, part)| g.node(format!("work[{i}]"), work(), part)).collect()
            }
        };
        let lateness = Duration::from_millis(case.lateness as u64);
        let windows = match case.kind {
            Kind::Tumbling(size) => Windows::tumbling(Duration::from_millis(size as u64)),
            Kind::Sliding(size, slide) => {
                Windows::sliding(Duration::from_millis(size as u64), Duration::from_millis(slide as u64))
            }
            Kind::Session(gap) => Windows::session(Duration::from_millis(gap as u64)),
        }
        .allowed_lateness(lateness);
        let sums = windows.aggregate(|e: &Timed<Event>| e.stamp, |e| e.item.0, || 0u64, |s, e| *s += e.item.2);
        let (sums, late) = g.window("sums", sums, input);
        let (sink, results) = into_stream(64);
        g.sink("results", sink, sums);
        let (late_sink, late_items) = into_stream(64);
        g.sink("late", late_sink, late);
        let running = g.build().expect("valid").start();
        let (emitted, late) = tokio::join!(
            results
                .map(|r| (r.key, r.window.start.as_millis(), r.window.end.as_millis(), r.value, r.emission))
                .collect::<Vec<_>>(),
            late_items.map(|l: Late<Timed<Event>>| l.item.item.1).collect::<Vec<_>>(),
        );
        running.join().await.expect("runs");
        (emitted, late)
    }

    fn check(case: &Case) -> Result<(), TestCaseError> {
        let runtime = if case.threads > 1 {
            tokio::runtime::Builder::new_multi_thread().worker_threads(case.threads).enable_all().build()
        } else {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        }
        .expect("a runtime");
        let (emitted, mut late) = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), run(case)).await.expect("the pipeline never sticks")
        });
        let (expected, expected_late) = reference(case);
        late.sort();
        prop_assert_eq!(late, expected_late, "late items");
        prop_assert_eq!(final_view(&emitted, matches!(case.kind, Kind::Session(_))), expected, "window results");
        Ok(())
    }

    #[test]
    fn event_time_windows_match_a_reference_whatever_the_chunking_interleaving_and_cores() {
        super::run_cases("event time", 200, case(), |case| check(&case));
    }
}

mod joins {
    use super::*;
    use nanostream::operators::{IntervalJoin, Side};

    /// (id, key, event time in ms)
    type Item = (u32, u32, i64);

    fn time(i: &Item) -> Timestamp {
        ms(i.2)
    }

    /// Joins `lefts` and `rights` (each a list of partitions), a right item
    /// matching a left one of its key from 1 s before to 2 s after it.
    /// Returns the pairs of ids (`None` for an unmatched left with `outer`)
    /// and the ids of the late items.
    pub(super) async fn run_join(
        lefts: Vec<Vec<Item>>,
        rights: Vec<Vec<Item>>,
        delay: Duration,
        chunk: usize,
        outer: bool,
    ) -> (Vec<(u32, Option<u32>)>, Vec<u32>) {
        let mut g = Topology::builder();
        g.chunk_size(chunk);
        let timed = |g: &mut nanostream::TopologyBuilder, side: &str, parts: Vec<Vec<Item>>| {
            parts
                .into_iter()
                .enumerate()
                .map(|(i, items)| {
                    let items = g.source(format!("{side}{i}"), from_iter(items));
                    g.node(format!("{side}{i}_timed"), watermarks(time, delay), items)
                })
                .collect::<Vec<_>>()
        };
        let l = timed(&mut g, "l", lefts);
        let r = timed(&mut g, "r", rights);
        let join = IntervalJoin::between(Duration::from_secs(1), Duration::from_secs(2))
            .left(|i: &Timed<Item>| i.stamp, |i| i.item.1)
            .right(|i: &Timed<Item>| i.stamp, |i| i.item.1);
        let (pairs_sink, pairs) = into_stream(1024);
        let late = if outer {
            let (joined, late) = g.join("join", join.left_outer(), l, r);
            let ids = g.node(
                "ids",
                map(|(l, r): (Timed<Item>, Option<Timed<Item>>)| (l.item.0, r.map(|r| r.item.0))),
                joined,
            );
            g.sink("pairs", pairs_sink, ids);
            late
        } else {
            let (joined, late) = g.join("join", join, l, r);
            let ids = g.node("ids", map(|(l, r): (Timed<Item>, Timed<Item>)| (l.item.0, Some(r.item.0))), joined);
            g.sink("pairs", pairs_sink, ids);
            late
        };
        let (late_sink, late_items) = into_stream(1024);
        g.sink("late", late_sink, late);
        let running = g.build().expect("valid").start();
        let (mut pairs, mut late) = tokio::join!(
            pairs.collect::<Vec<_>>(),
            late_items
                .map(|l: Late<Side<Timed<Item>, Timed<Item>>>| match l.item {
                    Side::Left(i) | Side::Right(i) => i.item.0,
                })
                .collect::<Vec<_>>(),
        );
        running.join().await.expect("runs");
        pairs.sort();
        late.sort();
        (pairs, late)
    }

    /// The reference: items judged late by their own partition's watermark
    /// (latest time before minus `delay`); pairs among the others.
    pub(super) fn reference(
        lefts: &[Vec<Item>],
        rights: &[Vec<Item>],
        delay: i64,
        outer: bool,
    ) -> (Vec<(u32, Option<u32>)>, Vec<u32>) {
        let mut late = Vec::new();
        let mut keep = |parts: &[Vec<Item>]| {
            let mut kept = Vec::new();
            for items in parts {
                let mut high: Option<i64> = None;
                for &i in items {
                    let wm = high.map_or(i64::MIN, |h| h - delay);
                    high = Some(high.map_or(i.2, |h| h.max(i.2)));
                    if i.2 < wm { late.push(i.0) } else { kept.push(i) }
                }
            }
            kept
        };
        let (l, r) = (keep(lefts), keep(rights));
        let mut pairs = Vec::new();
        for a in &l {
            let mut matched = false;
            for b in r.iter().filter(|b| b.1 == a.1 && b.2 >= a.2 - 1_000 && b.2 <= a.2 + 2_000) {
                matched = true;
                pairs.push((a.0, Some(b.0)));
            }
            if outer && !matched {
                pairs.push((a.0, None));
            }
        }
        pairs.sort();
        late.sort();
        (pairs, late)
    }

    #[tokio::test]
    async fn an_interval_join_pairs_items_of_a_key_within_the_interval_and_routes_late_ones() {
        // Times in ms. Left 1 (key 0, 10 s) meets right 11 (9.5 s) and 12
        // (11.9 s), not 13 (12.5 s: too far after). Right 14 comes after its
        // input reached 20 s, with 1 s of allowed disorder: late.
        let lefts = vec![vec![(1, 0, 10_000), (2, 1, 10_000), (3, 0, 30_000)]];
        let rights = vec![vec![(11, 0, 9_500), (12, 0, 11_900), (13, 0, 12_500), (15, 0, 20_000), (14, 0, 10_000)]];
        let delay = Duration::from_secs(1);
        for chunk in [1, 1024] {
            let (pairs, late) = run_join(lefts.clone(), rights.clone(), delay, chunk, false).await;
            assert_eq!(pairs, [(1, Some(11)), (1, Some(12))]);
            assert_eq!(late, [14]);
            let (pairs, late) = run_join(lefts.clone(), rights.clone(), delay, chunk, true).await;
            assert_eq!(pairs, [(1, Some(11)), (1, Some(12)), (2, None), (3, None)], "left outer: unmatched too");
            assert_eq!(late, [14]);
            assert_eq!(reference(&lefts, &rights, 1_000, true), (pairs, late));
        }
    }
}

mod randomized_joins {
    use super::joins::{reference, run_join};
    use proptest::prelude::*;
    use std::time::Duration;

    type Item = (u32, u32, i64);

    fn partitions(first_id: u32) -> impl Strategy<Value = Vec<Vec<Item>>> {
        prop::collection::vec(prop::collection::vec((0u32..3, 0i64..1_500, 0i64..1_000, 0u8..8), 0..25), 1..3).prop_map(
            move |parts| {
                let mut id = first_id;
                parts
                    .into_iter()
                    .map(|steps| {
                        let mut now = 0;
                        steps
                            .into_iter()
                            .map(|(key, step, jitter, late)| {
                                now += step;
                                id += 1;
                                let t = if late == 0 { now - 5_000 } else { now - jitter };
                                (id, key, t)
                            })
                            .collect()
                    })
                    .collect()
            },
        )
    }

    #[test]
    fn interval_joins_match_a_reference_whatever_the_chunking_and_interleaving() {
        let strategy =
            (partitions(0), partitions(10_000), prop_oneof![Just(1usize), Just(4), Just(1024)], any::<bool>());
        super::run_cases("joins", 100, strategy, |(lefts, rights, chunk, outer)| {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
            let got = runtime.block_on(run_join(lefts.clone(), rights.clone(), Duration::from_secs(1), chunk, outer));
            prop_assert_eq!(got, reference(&lefts, &rights, 1_000, outer));
            Ok(())
        });
    }
}

/// (id, key, time in ms)
type Guarded = (u32, u32, i64);

/// Emits each item with an acknowledgement guard of its own (recorded by
/// id), then waits until the pipeline stops.
struct EachGuarded {
    items: Vec<(u32, u32, i64)>,
    outcomes: Arc<Mutex<HashMap<u32, AckOutcome>>>,
}

impl Source for EachGuarded {
    type Out = (u32, u32, i64);
    type Error = Infallible;

    async fn run(&mut self, out: &mut Emitter<(u32, u32, i64)>) -> Result<(), Infallible> {
        for item in std::mem::take(&mut self.items) {
            let outcomes = self.outcomes.clone();
            out.begin_batch(Acks::new(move |outcome| {
                outcomes.lock().expect("not poisoned").insert(item.0, outcome);
            }));
            out.emit(item).await;
            out.end_batch();
            out.flush().await;
        }
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_pair_owes_both_of_its_items_until_it_is_delivered() {
    use nanostream::operators::IntervalJoin;
    // (id, key, time in ms): left 1 meets right 2; 3 and 4 (another key)
    // move both watermarks far past 1's interval, so the join forgets 1
    // while the pair is still waiting for the sink.
    let outcomes: Arc<Mutex<HashMap<u32, AckOutcome>>> = Arc::default();
    let mut g = Topology::builder();
    // The pair leaves the join's buffer as soon as it is emitted: only
    // what it owes keeps 1 from being done.
    g.chunk_size(1);
    let left = g.source("left", EachGuarded { items: vec![(1, 0, 0), (3, 9, 100_000)], outcomes: outcomes.clone() });
    let right =
        g.source("right", EachGuarded { items: vec![(2, 0, 1_000), (4, 8, 100_000)], outcomes: outcomes.clone() });
    let time = |i: &(u32, u32, i64)| ms(i.2);
    let left = g.node("left_timed", watermarks(time, Duration::ZERO), left);
    let right = g.node("right_timed", watermarks(time, Duration::ZERO), right);
    let join = IntervalJoin::between(Duration::ZERO, Duration::from_secs(10))
        .left(|i: &Timed<(u32, u32, i64)>| i.stamp, |i| i.item.1)
        .right(|i: &Timed<(u32, u32, i64)>| i.stamp, |i| i.item.1);
    let (pairs, late) = g.join("join", join, left, right);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let open = gate.clone();
    let (sink, mut delivered) = into_stream(4);
    let held = g.node(
        "gate",
        then(move |pair: (Timed<Guarded>, Timed<Guarded>)| {
            let gate = gate.clone();
            async move {
                gate.acquire().await.expect("open").forget();
                (pair.0.item.0, pair.1.item.0)
            }
        }),
        pairs.unfused(),
    );
    g.sink("pairs", sink, held);
    g.sink("late", for_each(|_| async {}), late);
    let running = g.build().expect("valid").start();

    // Wait until the join has seen the watermark pass 1's interval.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while running.snapshot().iter().find(|n| n.name == "join").and_then(|n| n.watermark) < Some(secs(90)) {
        assert!(tokio::time::Instant::now() < deadline, "the watermark did not get through");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(outcomes.lock().expect("not poisoned").get(&1), None, "1 is forgotten, but its pair is not delivered");
    assert_eq!(outcomes.lock().expect("not poisoned").get(&2), None);
    open.add_permits(1);
    assert_eq!(delivered.next().await, Some((1, 2)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while outcomes.lock().expect("not poisoned").get(&1).is_none() {
        assert!(tokio::time::Instant::now() < deadline, "1 is done once its pair is");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(outcomes.lock().expect("not poisoned").get(&1), Some(&AckOutcome::Done));
    running.shutdown(Duration::from_secs(5)).await.expect("graceful");
}

/// Runs `cases` random cases of `strategy` (`NANOSTREAM_RANDOM_CASES`
/// overrides the number), reproducibly from a seed that is printed
/// (`NANOSTREAM_RANDOM_SEED` replays it).
fn run_cases<S: proptest::strategy::Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
    let cases = std::env::var("NANOSTREAM_RANDOM_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_cases);
    let seed: u64 = std::env::var("NANOSTREAM_RANDOM_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
    });
    println!("{name}: {cases} cases, NANOSTREAM_RANDOM_SEED={seed} NANOSTREAM_RANDOM_CASES={cases}");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 1_000, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    match runner.run(&strategy, test) {
        Ok(()) => {}
        Err(TestError::Fail(reason, case)) => {
            panic!("{name} failed (NANOSTREAM_RANDOM_SEED={seed}): {reason}\nminimal case: {case:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("{name} aborted (NANOSTREAM_RANDOM_SEED={seed}): {reason}"),
    }
}

#[tokio::test]
async fn an_item_without_a_usable_time_follows_the_error_policy() {
    let times = [Some(1_000i64), None, Some(2_000)];
    let build = |skip: bool| {
        let mut g = Topology::builder();
        let times = g.source("times", from_iter(times));
        let time = |t: &Option<i64>| t.map(ms);
        let (sink, out) = into_stream(8);
        if skip {
            let timed = g.node("timed", watermarks(time, Duration::ZERO).skip_errors(), times);
            g.sink("out", sink, timed);
        } else {
            let timed = g.node("timed", watermarks(time, Duration::ZERO), times);
            g.sink("out", sink, timed);
        }
        (g, out)
    };
    fails_naming(build(false).0, "timed", "no usable event time").await;
    let (g, out) = build(true);
    assert_eq!(errors_when_run(g, "timed").await, 1);
    let times: Vec<_> = out.map(|t: Timed<Option<i64>>| t.item).collect().await;
    assert_eq!(times, [Some(1_000), Some(2_000)]);
}

// ---------------------------------------------------------------------------
// Edge cases found in review.

#[tokio::test(start_paused = true)]
async fn an_idle_input_never_lets_the_final_watermark_through_while_it_is_open() {
    // `done` ends (final watermark); `quiet` speaks once and goes idle, but
    // is still open: the node after them must not see the end.
    let (quiet_src, quiet) = from_channel::<Event>(4);
    let mut g = Topology::builder();
    let done = g.source("done", from_iter([(0, 1_000, 1)]));
    let done = g.node("done_timed", watermarks(event_time, Duration::ZERO), done);
    let quiet_out = g.source("quiet", quiet_src);
    let quiet_timed =
        g.node("quiet_timed", watermarks(event_time, Duration::ZERO).idle_after(Duration::from_secs(1)), quiet_out);
    let (meet, mut seen) = probe();
    let met = g.node("meet", meet, vec![done, quiet_timed]);
    g.sink("sink", for_each(|_: Timed<Event>| async {}), met);
    let running = g.build().expect("valid").start();
    quiet.send((0, 5_000, 1)).await.expect("open");
    assert_eq!(next_mark(&mut seen).await, secs(5), "`done` ended: `quiet` alone decides");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(drain(&mut seen).iter().all(|t| *t < Timestamp::MAX), "idle is not ended");
    quiet.send((0, 7_000, 1)).await.expect("open");
    assert_eq!(next_mark(&mut seen).await, secs(7), "it speaks again and counts");
    drop(quiet);
    running.join().await.expect("runs");
    assert_eq!(drain(&mut seen).last(), Some(&Timestamp::MAX));
}

#[tokio::test]
async fn a_silent_source_without_event_time_holds_nothing_back() {
    // `control` has no event time and says nothing: the timed input alone
    // sets the watermark where they meet.
    let (control_src, control_tx) = from_channel::<Timed<Event>>(4);
    let (timed_src, timed_tx) = from_channel::<Event>(4);
    let mut g = Topology::builder();
    let control = g.source("control", control_src);
    let timed_out = g.source("timed", timed_src);
    let timed = g.node("timed_marks", watermarks(event_time, Duration::ZERO), timed_out);
    let (meet, mut seen) = probe();
    let met = g.node("meet", meet, vec![control, timed]);
    g.sink("sink", for_each(|_: Timed<Event>| async {}), met);
    let running = g.build().expect("valid").start();
    timed_tx.send((0, 9_000, 1)).await.expect("open");
    let mark = tokio::time::timeout(Duration::from_secs(10), next_mark(&mut seen)).await;
    assert_eq!(mark.ok(), Some(secs(9)), "the silent untimed input held the watermark back");
    drop((control_tx, timed_tx));
    running.join().await.expect("runs");
}

#[tokio::test]
async fn a_late_item_opening_a_closed_window_within_lateness_is_emitted_at_once() {
    let (src, tx) = from_channel::<Event>(4);
    let mut g = Topology::builder();
    let events = g.source("events", src);
    let timed = g.node("timed", watermarks(event_time, Duration::ZERO), events);
    let sums = Windows::tumbling(Duration::from_secs(10)).allowed_lateness(Duration::from_secs(20)).aggregate(
        |e: &Timed<Event>| e.stamp,
        |e| e.item.0,
        || 0u64,
        |s, e| *s += e.item.2,
    );
    let (sums, late) = g.window("sums", sums, timed);
    let (sink, mut results) = into_stream(8);
    g.sink("results", sink, sums);
    g.sink("late", for_each(|_| async {}), late);
    let running = g.build().expect("valid").start();
    tx.send((0, 30_000, 1)).await.expect("open");
    // The watermark is at 30 s; [10 s, 20 s) never had an item, but 12 s
    // is within its lateness.
    tx.send((0, 12_000, 5)).await.expect("open");
    let first = tokio::time::timeout(Duration::from_secs(10), results.next()).await.expect("at once");
    let first = first.expect("a result");
    assert_eq!((first.window.start, first.value, first.emission), (secs(10), 5, Emission::OnTime));
    drop(tx);
    running.join().await.expect("runs");
}

#[tokio::test]
async fn times_at_the_ends_of_the_range_are_not_usable_and_never_hang_a_window() {
    let events: Vec<Event> = vec![(0, i64::MIN, 1), (0, 1_000, 2), (0, i64::MAX, 3)];
    let mut g = Topology::builder();
    let events = g.source("events", from_iter(events));
    let timed = g.node("timed", watermarks(event_time, Duration::ZERO), events);
    let sums = Windows::tumbling(Duration::from_secs(1)).aggregate(
        |e: &Timed<Event>| e.stamp,
        |e| e.item.0,
        || 0u64,
        |s, e| *s += e.item.2,
    );
    let sums = g.node("sums", sums.skip_errors(), timed);
    let (sink, results) = into_stream(8);
    g.sink("results", sink, sums);
    let running = g.build().expect("valid").start();
    let monitor = running.monitor();
    tokio::time::timeout(Duration::from_secs(10), running.join()).await.expect("no hang").expect("runs");
    let values: Vec<u64> = results.map(|r| r.value).collect().await;
    assert_eq!(values, [2]);
    assert_eq!(monitor.snapshot().iter().find(|n| n.name == "sums").map(|n| n.errors), Some(2));
}

#[tokio::test]
async fn a_left_outer_join_whose_interval_reaches_the_end_of_time_still_ends() {
    let lefts = vec![vec![(1u32, 0u32, 1_000i64)]];
    let mut g = Topology::builder();
    let l = g.source("l", from_iter(lefts.into_iter().flatten()));
    let l = g.node("l_timed", watermarks(|i: &(u32, u32, i64)| ms(i.2), Duration::ZERO), l);
    let r = g.source("r", from_iter(Vec::<(u32, u32, i64)>::new()));
    let r = g.node("r_timed", watermarks(|i: &(u32, u32, i64)| ms(i.2), Duration::ZERO), r);
    let join = nanostream::operators::IntervalJoin::between(Duration::ZERO, Duration::MAX)
        .left(|i: &Timed<(u32, u32, i64)>| i.stamp, |i| i.item.1)
        .right(|i: &Timed<(u32, u32, i64)>| i.stamp, |i| i.item.1)
        .left_outer();
    let (joined, late) = g.join("join", join, l, r);
    let (sink, rows) = into_stream(8);
    g.sink("rows", sink, joined);
    g.sink("late", for_each(|_| async {}), late);
    g.build().expect("valid").run().await.expect("runs");
    let rows: Vec<(u32, bool)> = rows.map(|(l, r)| (l.item.0, r.is_some())).collect().await;
    assert_eq!(rows, [(1, false)], "the unmatched left row comes out at the end");
}
