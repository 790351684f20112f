//! Event time against the real broker: per-partition watermarks from record
//! timestamps, a quiet partition, exact window results, late records routed,
//! and offsets committed only once the windows of their records are out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nanostream::operators::{Emission, Late, Windows};
use nanostream::prelude::*;
use nanostream_kafka::{Json, KafkaSource, Record};
use rdkafka::producer::{FutureRecord, Producer};
use serde::{Deserialize, Serialize};

use crate::common::*;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Sale {
    key: String,
    v: u64,
}

/// A record to produce: partition, timestamp (ms), key, value.
type Planned = (i32, i64, &'static str, u64);
/// Sums per (window start, key).
type Sums = BTreeMap<(i64, String), u64>;
/// Window results as delivered: start, key, sum, why.
type Delivered = Arc<Mutex<Vec<(i64, String, u64, Emission)>>>;

const SECOND: i64 = 1_000;
/// Event times start here, so that the broker keeps them as given.
const BASE: i64 = 1_700_000_000_000;

/// Partition 2 speaks only early (up to 20.5 s) and then goes quiet; 0 and
/// 1 go on to 66 s and 69 s, out of order within 5 s, and each has one
/// record far behind its partition (late for good). Produced in two
/// phases: what happened before 30 s, then the rest.
fn plan() -> (Vec<Planned>, Vec<Planned>) {
    let mut plan = Vec::new();
    for i in 0..12i64 {
        let keys = ["a", "b", "c"];
        // Partition 0: mostly in order, every third record 4 s behind.
        let t0 = i * 6 * SECOND - if i % 3 == 2 { 4 * SECOND } else { 0 };
        plan.push((0, t0, keys[(i % 3) as usize], (i + 1) as u64));
        // Partition 1: the same times shifted by 3 s, keys reversed.
        let t1 = i * 6 * SECOND + 3 * SECOND - if i % 4 == 3 { 2 * SECOND } else { 0 };
        plan.push((1, t1, keys[(2 - i % 3) as usize], 10 * (i + 1) as u64));
    }
    for i in 0..6i64 {
        plan.push((2, i * 4 * SECOND + 500, ["b", "c"][(i % 2) as usize], 100));
    }
    // Far behind their partitions: late.
    plan.push((0, 2 * SECOND, "a", 1_000));
    plan.push((1, 5 * SECOND, "b", 1_000));
    // Each partition's last records push it to 66 s and 69 s.
    plan.push((0, 66 * SECOND, "a", 7));
    plan.push((1, 69 * SECOND, "c", 7));
    let late = plan.len() - 4;
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for (i, p) in plan.into_iter().enumerate() {
        if p.1 < 30 * SECOND && i < late { first.push(p) } else { second.push(p) }
    }
    (first, second)
}

/// The records of `plan` in partition order, with their offsets.
fn offsets(plan: &[Planned]) -> Vec<(i32, i64, Planned)> {
    let mut next = [0i64; 3];
    plan.iter()
        .map(|&p| {
            let offset = next[p.0 as usize];
            next[p.0 as usize] += 1;
            (p.0, offset, p)
        })
        .collect()
}

async fn produce_plan(topic: &str, plan: &[Planned]) {
    let producer = unbatched_producer();
    for &(partition, t, key, v) in plan {
        let payload = serde_json::to_vec(&Sale { key: key.into(), v }).expect("json");
        let record = FutureRecord::<(), _>::to(topic).partition(partition).timestamp(BASE + t).payload(&payload);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("delivered");
    }
    producer.flush(Duration::from_secs(10)).expect("flushed");
}

/// Tumbling windows of 10 s; each record judged by its own partition's
/// watermark (latest time in the partition before it, minus 5 s). Returns
/// the sums per (window start, key) of the windows the watermark `upto`
/// closes, and the late records.
fn reference(plan: &[Planned], upto: i64) -> (Sums, BTreeSet<(i32, i64)>) {
    let mut high: [Option<i64>; 3] = [None; 3];
    let mut sums = BTreeMap::new();
    let mut late = BTreeSet::new();
    for &(p, t, key, v) in plan {
        let watermark = high[p as usize].map_or(i64::MIN, |h| h - 5 * SECOND);
        high[p as usize] = Some(high[p as usize].map_or(t, |h| h.max(t)));
        let start = t.div_euclid(10 * SECOND) * 10 * SECOND;
        if start + 10 * SECOND <= watermark {
            late.insert((p, t));
            continue;
        }
        if start + 10 * SECOND <= upto {
            *sums.entry((start, key.to_owned())).or_default() += v;
        }
    }
    (sums, late)
}

/// Late records as delivered: partition, offset, time (ms).
type LateSeen = Arc<Mutex<Vec<(i32, i64, i64)>>>;

/// Tumbling windows of 10 s over the topic's sales, with event time per
/// partition (5 s of disorder, idle after 1 s); what the sinks deliver is
/// recorded as they deliver it.
fn pipeline(topic: &str, group: &str, until_end: bool) -> (nanostream::TopologyBuilder, Delivered, LateSeen) {
    let mut builder = KafkaSource::builder(&brokers(), group)
        .topic(topic)
        .event_time(Duration::from_secs(5))
        .idle_after(Duration::from_secs(1))
        .commit_interval(Duration::from_millis(200))
        .until_end(until_end);
    for (k, v) in GROUP_SETTINGS {
        builder = builder.set(k, v);
    }
    let source = builder.build::<Sale, _>(Json).expect("source");
    let mut g = Topology::builder();
    let sales = g.source("sales", source);
    let sums = Windows::tumbling(Duration::from_secs(10)).aggregate(
        Record::stamp,
        |r: &Record<Sale>| r.value.key.clone(),
        || 0u64,
        |sum, r| *sum += r.value.v,
    );
    let (sums, late) = g.window("sums", sums, sales);
    let delivered: Delivered = Arc::default();
    let seen = delivered.clone();
    g.sink(
        "store",
        for_each(move |r: nanostream::operators::WindowResult<String, u64>| {
            let seen = seen.clone();
            async move {
                let start = r.window.start.as_millis() - BASE;
                seen.lock().expect("not poisoned").push((start, r.key, r.value, r.emission));
            }
        }),
        sums,
    );
    let late_seen: LateSeen = Arc::default();
    let late_store = late_seen.clone();
    g.sink(
        "late",
        for_each(move |l: Late<Record<Sale>>| {
            let late_store = late_store.clone();
            async move {
                let r = l.item;
                late_store.lock().expect("not poisoned").push((r.partition, r.offset, r.timestamp.unwrap_or(0) - BASE));
            }
        }),
        late,
    );
    (g, delivered, late_seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_over_three_partitions_match_a_reference_with_a_quiet_partition_and_late_records_routed() {
    let topic = unique("event-time");
    create_topic(&topic, 3).await;
    let (first, second) = plan();
    produce_plan(&topic, &first).await;
    let plan: Vec<Planned> = first.iter().chain(&second).copied().collect();
    let group = unique("event-time");

    let (g, delivered, late_seen) = pipeline(&topic, &group, false);
    let running = g.build().expect("valid").start();
    // The first phase is read (and held by its open windows) before the
    // second is produced, so the two are acknowledged apart.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while running.snapshot().iter().find(|n| n.name == "sales").map_or(0, |n| n.sent) < first.len() as u64 {
        assert!(tokio::time::Instant::now() < deadline, "the first phase was not read in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    produce_plan(&topic, &second).await;

    // Partitions 0 and 1 reach 66 s and 69 s: with partition 2 quiet (and
    // idle after 1 s), the watermark reaches 61 s and closes every window
    // up to [50 s, 60 s); without idleness, partition 2 (20.5 s) would hold
    // it at 15.5 s.
    let (expected, expected_late) = reference(&plan, 61 * SECOND);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got: BTreeSet<(i64, String)> =
            delivered.lock().expect("not poisoned").iter().map(|(s, k, _, _)| (*s, k.clone())).collect();
        if expected.keys().all(|k| got.contains(k)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "windows up to 60 s did not all close in time: got {got:?}, expected {:?}",
            expected.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the commits of what is delivered happen, then stop.
    tokio::time::sleep(Duration::from_millis(600)).await;
    running.shutdown(Duration::from_secs(30)).await.expect("graceful");

    let delivered = delivered.lock().expect("not poisoned").clone();
    let mut results = BTreeMap::new();
    for (start, key, value, _) in &delivered {
        results.insert((*start, key.clone()), *value);
    }
    assert_eq!(results, expected, "every closed window, exactly; the open one [60 s, 70 s) not emitted");
    let late: BTreeSet<(i32, i64)> = late_seen.lock().expect("not poisoned").iter().map(|&(p, _, t)| (p, t)).collect();
    assert_eq!(late, expected_late, "the late records went to the late output");

    // Nothing committed before its window's result was delivered: every
    // record below a committed offset is in a delivered window, or was
    // routed late.
    let (g2, t2) = (group.clone(), topic.clone());
    let committed = tokio::task::spawn_blocking(move || committed(&g2, &t2, 3)).await.expect("reader");
    let closed: BTreeSet<(i64, String)> = results.keys().cloned().collect();
    let late_offsets: BTreeSet<(i32, i64)> =
        late_seen.lock().expect("not poisoned").iter().map(|&(p, o, _)| (p, o)).collect();
    for (p, offset, (_, t, key, _)) in offsets(&plan) {
        if offset >= committed[p as usize] {
            continue;
        }
        let start = t.div_euclid(10 * SECOND) * 10 * SECOND;
        assert!(
            closed.contains(&(start, key.to_owned())) || late_offsets.contains(&(p, offset)),
            "partition {p} offset {offset} (at {t} ms) was committed before its window was delivered"
        );
    }
    let quiet = first.iter().filter(|p| p.0 == 2).count() as i64;
    assert_eq!(committed[2], quiet, "the quiet partition's records, all in delivered windows, are committed");
    let open: Vec<_> = offsets(&plan).into_iter().filter(|(_, _, (_, t, _, _))| *t >= 60 * SECOND).collect();
    for (p, offset, _) in open {
        assert!(offset >= committed[p as usize], "a record of the open window was committed: {committed:?}");
    }

    // Restarted in the same group, a bounded read re-reads what was not
    // committed, the open window's records included, and its final
    // watermark closes that window: exactly as the reference has it.
    let (g, delivered, _) = pipeline(&topic, &group, true);
    tokio::time::timeout(Duration::from_secs(90), g.build().expect("valid").run())
        .await
        .expect("a bounded read completes")
        .expect("runs");
    let reopened: Sums = delivered
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|(start, ..)| *start >= 60 * SECOND)
        .map(|(start, key, value, _)| ((*start, key.clone()), *value))
        .collect();
    let (all, _) = reference(&plan, i64::MAX);
    let expected_open: Sums = all.into_iter().filter(|((start, _), _)| *start >= 60 * SECOND).collect();
    assert!(!expected_open.is_empty());
    assert_eq!(reopened, expected_open, "the window left open at the shutdown, complete after the restart");
}
