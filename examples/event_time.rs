//! Event-time windows, checked against a plain in-memory reference.
//!
//! Generates events from several partitions, each out of order within a
//! bounded delay, with some events far behind their partition (late beyond
//! the allowed lateness); runs per-key tumbling and session windows through
//! nanostream; computes the same windows with plain loops; and compares.
//! The last line is
//!
//! ```text
//! event_time windows=<n> mismatches=<m> late_routed=<k>
//! ```
//!
//! where `n` counts the (key, window) results compared, `m` must be 0, and
//! `k` is the number of events routed to the late outputs, which must equal
//! the number generated past the allowed lateness.
//!
//! ```text
//! cargo run --release --example event_time -- --events 1000000 --partitions 4 --seed 7
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use nanostream::operators::{Late, WindowResult, Windows, watermarks};
use nanostream::prelude::*;
use nanostream::time::{Timed, Timestamp};

#[derive(Parser, Debug)]
#[command(about = "Event-time windows against an in-memory reference")]
struct Args {
    /// Events in total, over all partitions.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Partitions (sources), each with its own watermarks.
    #[arg(long, default_value_t = 4)]
    partitions: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 500)]
    keys: u32,
    /// Seed of the generator.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// An event: its id, key, event time (ms) and value.
#[derive(Debug, Clone, Copy)]
struct Event {
    id: u64,
    key: u32,
    at: i64,
    value: u64,
}

const SECOND: i64 = 1_000;
/// How far out of order events may come within a partition.
const DELAY: i64 = 3 * SECOND;
const LATENESS: i64 = 2 * SECOND;
const WINDOW: i64 = 10 * SECOND;
const GAP: i64 = 4 * SECOND;

/// A small deterministic generator (xorshift), so runs are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Each partition's events: time advances, each event up to `DELAY` behind
/// the latest so far (on time), and about one in 200 far behind (late
/// beyond the lateness for both window kinds). Returns the partitions and
/// the ids of the late events.
fn generate(args: &Args) -> (Vec<Vec<Event>>, BTreeSet<u64>) {
    let mut rng = Rng(args.seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let per_partition = args.events / args.partitions.max(1);
    let mut late = BTreeSet::new();
    let mut id = 0;
    let partitions = (0..args.partitions)
        .map(|_| {
            let mut now: i64 = 0;
            let mut high: i64 = 0;
            (0..per_partition)
                .map(|_| {
                    now += rng.below(40) as i64;
                    let at = if high > 60 * SECOND && rng.below(200) == 0 {
                        // Past any window it could belong to, and its
                        // lateness, by at least a second.
                        late.insert(id);
                        high - DELAY - WINDOW.max(GAP) - LATENESS - SECOND - rng.below(20_000) as i64
                    } else {
                        now - rng.below(DELAY as u64) as i64
                    };
                    high = high.max(at);
                    let event = Event { id, key: rng.below(u64::from(args.keys)) as u32, at, value: rng.below(100) };
                    id += 1;
                    event
                })
                .collect()
        })
        .collect();
    (partitions, late)
}

/// Final results per (key, window start, window end).
type Results = BTreeMap<(u32, i64, i64), u64>;

/// The reference: each event judged by its own partition's watermark (the
/// latest time before it, minus the delay); the rest summed per key in
/// tumbling windows and in sessions.
fn reference(partitions: &[Vec<Event>]) -> (Results, Results, BTreeSet<u64>, BTreeSet<u64>) {
    let mut tumbling = Results::new();
    let mut in_sessions: BTreeMap<u32, Vec<(i64, u64)>> = BTreeMap::new();
    let (mut late_tumbling, mut late_sessions) = (BTreeSet::new(), BTreeSet::new());
    for events in partitions {
        let mut high: Option<i64> = None;
        for e in events {
            let watermark = high.map_or(i64::MIN, |h| h - DELAY);
            high = Some(high.map_or(e.at, |h| h.max(e.at)));
            let start = e.at.div_euclid(WINDOW) * WINDOW;
            if start + WINDOW + LATENESS <= watermark {
                late_tumbling.insert(e.id);
            } else {
                *tumbling.entry((e.key, start, start + WINDOW)).or_default() += e.value;
            }
            if e.at + GAP + LATENESS <= watermark {
                late_sessions.insert(e.id);
            } else {
                in_sessions.entry(e.key).or_default().push((e.at, e.value));
            }
        }
    }
    let mut sessions = Results::new();
    for (key, mut events) in in_sessions {
        events.sort();
        let mut current: Option<(i64, i64, u64)> = None;
        for (at, value) in events {
            current = match current {
                Some((start, end, sum)) if at < end => Some((start, end.max(at + GAP), sum + value)),
                Some((start, end, sum)) => {
                    sessions.insert((key, start, end), sum);
                    Some((at, at + GAP, value))
                }
                None => Some((at, at + GAP, value)),
            };
        }
        if let Some((start, end, sum)) = current {
            sessions.insert((key, start, end), sum);
        }
    }
    (tumbling, sessions, late_tumbling, late_sessions)
}

/// What a stream of results leaves: the last per key and window; for
/// sessions, a result replaces the earlier ones of its key it overlaps.
fn final_view(emitted: &[WindowResult<u32, u64>], sessions: bool) -> Results {
    // Per key, its windows so far.
    let mut by_key: BTreeMap<u32, Vec<(i64, i64, u64)>> = BTreeMap::new();
    for r in emitted {
        let (start, end) = (r.window.start.as_millis(), r.window.end.as_millis());
        let windows = by_key.entry(r.key).or_default();
        if sessions {
            windows.retain(|&(s, e, _)| !(s < end && start < e));
        } else {
            windows.retain(|&(s, e, _)| (s, e) != (start, end));
        }
        windows.push((start, end, r.value));
    }
    by_key.into_iter().flat_map(|(key, windows)| windows.into_iter().map(move |(s, e, v)| ((key, s, e), v))).collect()
}

/// Keys whose results differ between `got` and `expected`.
fn mismatches(got: &Results, expected: &Results) -> usize {
    let keys: BTreeSet<_> = got.keys().chain(expected.keys()).collect();
    keys.into_iter().filter(|k| got.get(k) != expected.get(k)).count()
}

type Collected<T> = Arc<Mutex<Vec<T>>>;
type LateEvents = Collected<Late<Timed<Event>>>;

fn collect<T: Send + 'static>(into: &Collected<T>) -> impl nanostream::Sink<In = T> {
    let into = into.clone();
    nanostream::sinks::for_each_sync(move |item: T| into.lock().expect("not poisoned").push(item))
}

#[tokio::main]
async fn main() -> Result<(), nanostream::error::Report> {
    let args = Args::parse();
    let started = Instant::now();
    let (partitions, generated_late) = generate(&args);
    let events: usize = partitions.iter().map(Vec::len).sum();

    let mut g = Topology::builder();
    let timed: Vec<_> = partitions
        .iter()
        .enumerate()
        .map(|(i, events)| {
            let events = g.source(format!("partition[{i}]"), from_iter(events.clone()));
            let at = |e: &Event| Timestamp::from_millis(e.at);
            g.node(format!("timed[{i}]"), watermarks(at, Duration::from_millis(DELAY as u64)), events)
        })
        .collect();
    let lateness = Duration::from_millis(LATENESS as u64);
    let time = |e: &Timed<Event>| e.stamp;
    let key = |e: &Timed<Event>| e.item.key;
    let add = |sum: &mut u64, e: &Timed<Event>| *sum += e.item.value;
    let tumbling = Windows::tumbling(Duration::from_millis(WINDOW as u64)).allowed_lateness(lateness).aggregate(
        time,
        key,
        || 0u64,
        add,
    );
    let sessions = Windows::session(Duration::from_millis(GAP as u64)).allowed_lateness(lateness).aggregate(
        time,
        key,
        || 0u64,
        add,
    );
    let (tumbled, tumbling_late) = g.window("tumbling", tumbling, timed.iter().collect::<Vec<_>>());
    let (sessioned, session_late) = g.window("sessions", sessions, timed.iter().collect::<Vec<_>>());
    let (tumbling_results, session_results): (Collected<_>, Collected<_>) = Default::default();
    let (late_t, late_s): (LateEvents, LateEvents) = Default::default();
    g.sink("tumbling_results", collect(&tumbling_results), tumbled);
    g.sink("session_results", collect(&session_results), sessioned);
    g.sink("tumbling_late", collect(&late_t), tumbling_late);
    g.sink("session_late", collect(&late_s), session_late);
    let pipeline = g.build()?;
    let ran = Instant::now();
    pipeline.run().await?;
    let ran = ran.elapsed();

    let (expected_tumbling, expected_sessions, expected_late_t, expected_late_s) = reference(&partitions);
    let got_tumbling = final_view(&tumbling_results.lock().expect("not poisoned"), false);
    let got_sessions = final_view(&session_results.lock().expect("not poisoned"), true);
    let ids = |late: &LateEvents| -> BTreeSet<u64> {
        late.lock().expect("not poisoned").iter().map(|l| l.item.item.id).collect()
    };
    let (routed_t, routed_s) = (ids(&late_t), ids(&late_s));
    let late_mismatches = routed_t.symmetric_difference(&generated_late).count()
        + routed_s.symmetric_difference(&generated_late).count()
        + expected_late_t.symmetric_difference(&generated_late).count()
        + expected_late_s.symmetric_difference(&generated_late).count();
    let windows = expected_tumbling.len() + expected_sessions.len();
    let mismatched =
        mismatches(&got_tumbling, &expected_tumbling) + mismatches(&got_sessions, &expected_sessions) + late_mismatches;
    let routed: BTreeSet<u64> = routed_t.union(&routed_s).copied().collect();
    println!(
        "{events} events in {} partitions ({} generated late), pipeline {:.2} s, total {:.2} s",
        partitions.len(),
        generated_late.len(),
        ran.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "tumbling: {} windows, {} late routed; sessions: {} windows, {} late routed",
        expected_tumbling.len(),
        routed_t.len(),
        expected_sessions.len(),
        routed_s.len()
    );
    println!("event_time windows={windows} mismatches={mismatched} late_routed={}", routed.len());
    Ok(())
}
