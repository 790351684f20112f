//! `BatchWriter`: rows written in batches by size and time, transient
//! errors retried with backoff, acknowledgements released only once the
//! write that holds a row returned `Ok` (and in order), rejected rows split
//! out and failed, skipped or dead-lettered, and the in-flight limit held.
//!
//! Targeted tests first, then a randomized one (proptest) over batch sizes,
//! in-flight limits, poisoned rows and flaky writes, checked against what
//! must hold whatever happens: every row stored exactly once or
//! dead-lettered, every acknowledgement done, none early.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nanostream::TopologyBuilder;
use nanostream::acks::{AckGuard, AckOutcome, Acks};
use nanostream::policy::DeadLetter;
use nanostream::prelude::*;
use nanostream::sinks::{Batch, BatchWriter, WriteError};
use proptest::prelude::*;
use tokio::time::Instant;

/// A row: an order id and an amount; a negative amount breaks the store's
/// check constraint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    id: u32,
    amount: i64,
}

fn rows(n: u32) -> Vec<Row> {
    (0..n).map(|id| Row { id, amount: i64::from(id) }).collect()
}

/// A stand-in for a table: what was committed, write by write, and the
/// acknowledgements the source saw settle.
#[derive(Default)]
struct Ledger {
    /// Ids committed, in commit order (a transaction per successful write).
    stored: Vec<u32>,
    /// Rows per successful write.
    writes: Vec<usize>,
    /// Write calls, failed ones included.
    attempts: u32,
    /// Writes running now, and the most at once.
    running: usize,
    most_running: usize,
    /// Ids whose dead letter was consumed.
    dead: Vec<u32>,
    /// Per guard: its outcome and whether each of its rows was stored or
    /// dead-lettered when it settled.
    settled: BTreeMap<usize, (AckOutcome, bool)>,
    /// The order guards settled in.
    order: Vec<usize>,
    /// When each successful write committed (Tokio's clock).
    commit_times: Vec<Instant>,
}

type Shared = Arc<Mutex<Ledger>>;

fn lock(ledger: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().expect("not poisoned")
}

/// How the fake store behaves.
#[derive(Debug, Clone, Copy)]
struct Behaviour {
    /// Each write takes this long.
    latency: Duration,
    /// Every `flaky`-th write call (counting from 1) fails with a transient
    /// error, if set.
    flaky: Option<u32>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self { latency: Duration::from_millis(1), flaky: None }
    }
}

/// The write function of the fake store.
fn store(
    ledger: &Shared,
    behaviour: Behaviour,
) -> impl Fn(Batch<Row>) -> futures::future::BoxFuture<'static, Result<(), WriteError<String>>> + Send + Sync + 'static
{
    let ledger = ledger.clone();
    move |batch: Batch<Row>| {
        let ledger = ledger.clone();
        Box::pin(async move {
            let attempt = {
                let mut l = lock(&ledger);
                l.attempts += 1;
                l.running += 1;
                l.most_running = l.most_running.max(l.running);
                l.attempts
            };
            tokio::time::sleep(behaviour.latency).await;
            let mut l = lock(&ledger);
            l.running -= 1;
            if behaviour.flaky.is_some_and(|every| attempt % every == 0) {
                return Err(WriteError::Transient(format!("connection reset (attempt {attempt})")));
            }
            if let Some(bad) = batch.iter().find(|r| r.amount < 0) {
                return Err(WriteError::Permanent(format!("order {} violates check amount >= 0", bad.id)));
            }
            l.stored.extend(batch.iter().map(|r| r.id));
            l.writes.push(batch.len());
            l.commit_times.push(Instant::now());
            Ok(())
        })
    }
}

struct Guard {
    index: usize,
    ids: Vec<u32>,
    ledger: Shared,
}

impl AckGuard for Guard {
    fn settle(self, outcome: AckOutcome) {
        let mut l = lock(&self.ledger);
        let accounted = self.ids.iter().all(|id| l.stored.contains(id) || l.dead.contains(id));
        l.settled.insert(self.index, (outcome, accounted));
        l.order.push(self.index);
    }
}

/// Emits `rows` in groups of `per_guard`, each group under one guard,
/// waiting `gap` between groups.
struct Guarded {
    rows: Vec<Row>,
    per_guard: usize,
    gap: Duration,
    ledger: Shared,
}

impl Source for Guarded {
    type Out = Row;
    type Error = Infallible;

    async fn run(&mut self, out: &mut Emitter<Row>) -> Result<(), Infallible> {
        for (index, group) in self.rows.chunks(self.per_guard.max(1)).enumerate() {
            let guard = Guard { index, ids: group.iter().map(|r| r.id).collect(), ledger: self.ledger.clone() };
            out.begin_batch(Acks::new(guard));
            for row in group {
                out.emit(row.clone()).await;
            }
            out.end_batch();
            out.flush().await;
            if !self.gap.is_zero() {
                tokio::time::sleep(self.gap).await;
            }
        }
        Ok(())
    }
}

fn guarded(g: &mut TopologyBuilder, ledger: &Shared, rows: Vec<Row>, per_guard: usize, gap: Duration) -> Output<Row> {
    g.source("orders", Guarded { rows, per_guard, gap, ledger: ledger.clone() })
}

/// Every guard settled as done, each after all its rows were accounted for.
fn all_done(ledger: &Shared, guards: usize) {
    let l = lock(ledger);
    assert_eq!(l.settled.len(), guards, "every guard settled: {:?}", l.settled);
    for (index, (outcome, accounted)) in &l.settled {
        assert_eq!(*outcome, AckOutcome::Done, "guard {index}");
        assert!(accounted, "guard {index} was done before its rows were stored");
    }
}

/// Records each dead letter's row as dead-lettered.
fn rejects(ledger: &Shared) -> impl nanostream::Sink<In = DeadLetter<Row, Arc<String>>> {
    let ledger = ledger.clone();
    for_each(move |letter: DeadLetter<Row, Arc<String>>| {
        let ledger = ledger.clone();
        async move { lock(&ledger).dead.push(letter.input.id) }
    })
}

async fn run(g: TopologyBuilder) -> Result<(), nanostream::Error> {
    tokio::time::timeout(Duration::from_secs(600), g.build().expect("valid").run()).await.expect("finishes")
}

#[tokio::test(start_paused = true)]
async fn rows_go_out_in_full_batches_and_the_rest_at_the_end() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    let orders = guarded(&mut g, &ledger, rows(2_500), 100, Duration::ZERO);
    g.sink("store", BatchWriter::new(store(&ledger, Behaviour::default())).max_rows(1_000), orders);
    run(g).await.expect("runs");
    let l = lock(&ledger);
    assert_eq!(l.writes, [1_000, 1_000, 500]);
    assert_eq!(l.stored, (0..2_500).collect::<Vec<_>>(), "every row once, in order");
    drop(l);
    all_done(&ledger, 25);
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_goes_out_max_wait_after_its_first_row() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    // A row every 30 ms; batches wait at most 100 ms.
    let orders = guarded(&mut g, &ledger, rows(10), 1, Duration::from_millis(30));
    let writer = BatchWriter::new(store(&ledger, Behaviour { latency: Duration::ZERO, flaky: None }))
        .max_rows(1_000)
        .max_wait(Duration::from_millis(100));
    g.sink("store", writer, orders);
    let started = Instant::now();
    run(g).await.expect("runs");
    let l = lock(&ledger);
    // Rows at 0, 30, 60, 90 ms go out at 100 ms; 120..210 at 220; 240, 270
    // at the end of input (300 ms).
    assert_eq!(l.writes, [4, 4, 2]);
    let at: Vec<u128> = l.commit_times.iter().map(|t| (*t - started).as_millis()).collect();
    assert_eq!(&at[..2], [100, 220]);
    drop(l);
    all_done(&ledger, 10);
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_with_backoff_and_the_rows_written_once() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    let orders = guarded(&mut g, &ledger, rows(10), 10, Duration::ZERO);
    // The first write fails, and every second attempt after it.
    let fails = Arc::new(AtomicU32::new(0));
    let inner = store(&ledger, Behaviour { latency: Duration::ZERO, flaky: None });
    let counted = fails.clone();
    let writer = BatchWriter::new(move |batch: Batch<Row>| {
        let failing = counted.fetch_add(1, Ordering::SeqCst) < 3;
        let write = inner(batch);
        async move {
            if failing {
                return Err(WriteError::Transient("server closed the connection".to_owned()));
            }
            write.await
        }
    })
    .backoff(Duration::from_millis(100), Duration::from_secs(5));
    g.sink("store", writer, orders);
    let started = Instant::now();
    run(g).await.expect("runs");
    // Three failures: waits of 100, 200 and 400 ms before the fourth try.
    assert_eq!(fails.load(Ordering::SeqCst), 4);
    let l = lock(&ledger);
    assert_eq!(l.stored, (0..10).collect::<Vec<_>>());
    assert_eq!((*l.commit_times.first().expect("a commit") - started).as_millis(), 700);
    drop(l);
    all_done(&ledger, 1);
}

#[tokio::test(start_paused = true)]
async fn a_store_that_stays_down_fails_the_pipeline_after_give_up_after_and_nothing_is_done() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    let orders = guarded(&mut g, &ledger, rows(20), 5, Duration::ZERO);
    let writer =
        BatchWriter::new(|_: Batch<Row>| async { Err(WriteError::Transient("connection refused".to_owned())) })
            .max_rows(10)
            .give_up_after(Duration::from_secs(10));
    g.sink("store", writer, orders);
    let error = run(g).await.expect_err("the store never comes back");
    let shown = format!("{error}: {}", std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default());
    assert!(shown.contains("store"), "names the node: {shown}");
    assert!(shown.contains("kept failing") && shown.contains("connection refused"), "{shown}");
    let l = lock(&ledger);
    assert!(l.settled.values().all(|(outcome, _)| *outcome == AckOutcome::Abandoned), "{:?}", l.settled);
}

#[tokio::test(start_paused = true)]
async fn a_write_that_hangs_is_cut_off_at_give_up_after() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    let orders = guarded(&mut g, &ledger, rows(5), 5, Duration::ZERO);
    let writer = BatchWriter::new(|_: Batch<Row>| std::future::pending::<Result<(), WriteError<String>>>())
        .give_up_after(Duration::from_secs(10));
    g.sink("store", writer, orders);
    let started = Instant::now();
    let error = run(g).await.expect_err("the write never returns");
    let shown = format!("{error}: {}", std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default());
    assert!(shown.contains("did not finish within 10s"), "{shown}");
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(lock(&ledger).settled.get(&0).map(|s| s.0), Some(AckOutcome::Abandoned));
}

#[tokio::test(start_paused = true)]
async fn an_endless_max_wait_batches_by_size_only() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    let orders = guarded(&mut g, &ledger, rows(25), 1, Duration::from_secs(1));
    let writer = BatchWriter::new(store(&ledger, Behaviour::default())).max_rows(10).max_wait(Duration::MAX);
    g.sink("store", writer, orders);
    run(g).await.expect("runs");
    assert_eq!(lock(&ledger).writes, [10, 10, 5], "full batches, the rest at the end of input");
    all_done(&ledger, 25);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_row_fails_the_pipeline_naming_the_node_and_the_row() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    let mut input = rows(100);
    input[37].amount = -5;
    let orders = guarded(&mut g, &ledger, input, 10, Duration::ZERO);
    let writer = BatchWriter::new(store(&ledger, Behaviour::default())).max_rows(25).split_rejected(true);
    g.sink("store_orders", writer, orders);
    let error = run(g).await.expect_err("a row breaks the constraint");
    let shown = format!("{error}: {}", std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default());
    assert!(shown.contains("store_orders"), "names the node: {shown}");
    assert!(shown.contains("Row { id: 37, amount: -5 }"), "names the row: {shown}");
    assert!(shown.contains("violates check"), "{shown}");
    let l = lock(&ledger);
    assert!(!l.stored.contains(&37));
    // Guard 3 (rows 30..40) is never done.
    assert_ne!(l.settled.get(&3).map(|s| s.0), Some(AckOutcome::Done));
}

#[tokio::test(start_paused = true)]
async fn split_rejected_stores_the_good_rows_and_dead_letters_only_the_poisoned_ones() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    let mut input = rows(200);
    for bad in [3, 64, 65, 199] {
        input[bad].amount = -1;
    }
    let orders = guarded(&mut g, &ledger, input, 20, Duration::ZERO);
    let writer = BatchWriter::new(store(&ledger, Behaviour::default())).max_rows(50).split_rejected(true);
    let rejected = g.node("store", writer.dead_letters(), orders);
    let dead_ledger = ledger.clone();
    g.sink(
        "rejects",
        for_each(move |letter: DeadLetter<Row, Arc<String>>| {
            let ledger = dead_ledger.clone();
            async move {
                assert_eq!(letter.node, "store");
                assert!(letter.failure.to_string().contains("violates check"), "{}", letter.failure);
                lock(&ledger).dead.push(letter.input.id);
            }
        }),
        rejected,
    );
    run(g).await.expect("runs");
    let l = lock(&ledger);
    assert_eq!(l.dead, [3, 64, 65, 199]);
    let stored: BTreeSet<u32> = l.stored.iter().copied().collect();
    assert_eq!(stored.len(), l.stored.len(), "no row stored twice");
    assert_eq!(stored, (0..200).filter(|i| ![3, 64, 65, 199].contains(i)).collect());
    drop(l);
    all_done(&ledger, 10);
}

#[tokio::test(start_paused = true)]
async fn without_split_the_whole_rejected_batch_is_dead_lettered() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    let mut input = rows(30);
    input[12].amount = -1;
    let orders = guarded(&mut g, &ledger, input, 30, Duration::ZERO);
    let writer = BatchWriter::new(store(&ledger, Behaviour::default())).max_rows(10);
    let rejected = g.node("store", writer.dead_letters(), orders);
    g.sink("rejects", rejects(&ledger), rejected);
    run(g).await.expect("runs");
    let l = lock(&ledger);
    assert_eq!(l.dead, (10..20).collect::<Vec<_>>());
    assert_eq!(l.stored, (0..10).chain(20..30).collect::<Vec<_>>());
    drop(l);
    all_done(&ledger, 1);
}

#[tokio::test(start_paused = true)]
async fn skip_rejected_releases_the_rows_and_counts_them() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    let mut input = rows(40);
    input[5].amount = -1;
    let orders = guarded(&mut g, &ledger, input, 40, Duration::ZERO);
    let writer =
        BatchWriter::new(store(&ledger, Behaviour::default())).max_rows(8).split_rejected(true).skip_rejected();
    g.sink("store", writer, orders);
    let topology = g.build().expect("valid");
    let running = topology.start();
    running.finished().await;
    let errors: u64 = running.snapshot().iter().filter(|s| s.name == "store").map(|s| s.errors).sum();
    running.join().await.expect("runs");
    assert_eq!(errors, 1, "the skipped row is counted");
    let l = lock(&ledger);
    assert_eq!(l.stored.len(), 39);
    assert!(!l.stored.contains(&5));
    assert_eq!(l.settled.get(&0).map(|s| s.0), Some(AckOutcome::Done));
}

#[tokio::test(start_paused = true)]
async fn acknowledgements_follow_the_order_of_batches_even_when_writes_finish_out_of_order() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    let orders = guarded(&mut g, &ledger, rows(40), 10, Duration::ZERO);
    // Batch k takes (4 - k) × 50 ms: the last starts last and ends first.
    let inner = store(&ledger, Behaviour { latency: Duration::ZERO, flaky: None });
    let (running, most) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (now, top) = (running.clone(), most.clone());
    let writer = BatchWriter::new(move |batch: Batch<Row>| {
        let delay = Duration::from_millis(50 * (4 - u64::from(batch[0].id / 10)));
        let write = inner(batch);
        let (now, top) = (now.clone(), top.clone());
        async move {
            top.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            now.fetch_sub(1, Ordering::SeqCst);
            write.await
        }
    })
    .max_rows(10)
    .in_flight(4);
    g.sink("store", writer, orders);
    run(g).await.expect("runs");
    let l = lock(&ledger);
    assert_eq!(l.stored[..10], (30..40).collect::<Vec<_>>(), "the last batch committed first");
    assert_eq!(most.load(Ordering::SeqCst), 4, "four writes at once");
    assert_eq!(l.order, [0, 1, 2, 3], "acknowledged in order");
    drop(l);
    all_done(&ledger, 4);
}

#[tokio::test(start_paused = true)]
async fn no_more_writes_than_in_flight_run_at_once() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    let orders = guarded(&mut g, &ledger, rows(1_000), 7, Duration::ZERO);
    let writer = BatchWriter::new(store(&ledger, Behaviour { latency: Duration::from_millis(20), flaky: None }))
        .max_rows(10)
        .in_flight(3);
    g.sink("store", writer, orders);
    run(g).await.expect("runs");
    let l = lock(&ledger);
    assert_eq!(l.most_running, 3);
    assert_eq!(l.writes.len(), 100);
    drop(l);
    all_done(&ledger, 143);
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_torn_down_mid_write_aborts_the_write_and_leaves_its_rows_unacknowledged() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    let orders = guarded(&mut g, &ledger, rows(10), 10, Duration::ZERO);
    let aborted = Arc::new(AtomicU32::new(0));
    let dropped = aborted.clone();
    let writer = BatchWriter::new(move |_: Batch<Row>| {
        struct OnDrop(Arc<AtomicU32>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let on_drop = OnDrop(dropped.clone());
        async move {
            let _on_drop = on_drop;
            std::future::pending::<Result<(), WriteError<String>>>().await
        }
    })
    .max_rows(5);
    g.sink("store", writer, orders);
    let running = g.build().expect("valid").start();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(running);
    // The aborted tasks drop their futures on the next turn of the runtime.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(aborted.load(Ordering::SeqCst), 1, "the running write was aborted (the second never started)");
    let l = lock(&ledger);
    assert_eq!(l.settled.get(&0).map(|s| s.0), Some(AckOutcome::Abandoned));
}

/// One random case: what the writer is given, how the store behaves.
#[derive(Debug, Clone)]
struct Case {
    rows: u32,
    poisoned: Vec<u32>,
    per_guard: usize,
    max_rows: usize,
    in_flight: usize,
    split: bool,
    flaky: Option<u32>,
    latency_ms: u64,
    gap_ms: u64,
}

fn cases() -> impl Strategy<Value = Case> {
    (1u32..300)
        .prop_flat_map(|rows| {
            (
                Just(rows),
                proptest::collection::vec(0..rows, 0..4),
                1usize..40,
                1usize..64,
                1usize..5,
                any::<bool>(),
                proptest::option::of(2u32..6),
                0u64..5,
                0u64..3,
            )
        })
        .prop_map(|(rows, poisoned, per_guard, max_rows, in_flight, split, flaky, latency_ms, gap_ms)| Case {
            rows,
            poisoned,
            per_guard,
            max_rows,
            in_flight,
            split,
            flaky,
            latency_ms,
            gap_ms,
        })
}

fn check_case(case: &Case) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
    runtime.block_on(async {
        let ledger = Shared::default();
        let mut input = rows(case.rows);
        for p in &case.poisoned {
            input[*p as usize].amount = -1;
        }
        let mut g = Topology::builder();
        let orders = guarded(&mut g, &ledger, input.clone(), case.per_guard, Duration::from_millis(case.gap_ms));
        let behaviour = Behaviour { latency: Duration::from_millis(case.latency_ms), flaky: case.flaky };
        let writer = BatchWriter::new(store(&ledger, behaviour))
            .max_rows(case.max_rows)
            .in_flight(case.in_flight)
            .split_rejected(case.split)
            .max_wait(Duration::from_millis(7));
        let rejected = g.node("store", writer.dead_letters(), orders);
        g.sink("rejects", rejects(&ledger), rejected);
        run(g).await.map_err(|e| TestCaseError::fail(format!("the pipeline failed: {e}")))?;
        let l = lock(&ledger);
        let stored: BTreeSet<u32> = l.stored.iter().copied().collect();
        let dead: BTreeSet<u32> = l.dead.iter().copied().collect();
        prop_assert_eq!(stored.len(), l.stored.len(), "a row stored twice");
        prop_assert_eq!(dead.len(), l.dead.len(), "a row dead-lettered twice");
        prop_assert!(stored.is_disjoint(&dead), "a row both stored and dead-lettered");
        let all: BTreeSet<u32> = stored.union(&dead).copied().collect();
        prop_assert_eq!(all, (0..case.rows).collect::<BTreeSet<_>>(), "a row lost");
        let poisoned: BTreeSet<u32> = case.poisoned.iter().copied().collect();
        prop_assert!(poisoned.is_subset(&dead), "a poisoned row stored");
        if case.split {
            prop_assert_eq!(&dead, &poisoned, "only the poisoned rows are dead-lettered");
        }
        prop_assert!(l.most_running <= case.in_flight, "{} writes at once", l.most_running);
        let guards = (case.rows as usize).div_ceil(case.per_guard);
        prop_assert_eq!(l.settled.len(), guards, "every guard settled");
        for (index, (outcome, accounted)) in &l.settled {
            prop_assert_eq!(*outcome, AckOutcome::Done, "guard {}", index);
            prop_assert!(*accounted, "guard {} done before its rows were stored", index);
        }
        if dead.is_empty() {
            // Written batches are acknowledged in order. (A dead letter owes
            // its batch's acknowledgements until it is consumed downstream,
            // so with dead letters a later batch may be done first.)
            prop_assert_eq!(&l.order, &(0..guards).collect::<Vec<_>>(), "guards settled out of order");
        }
        Ok(())
    })
}

#[test]
fn random_cases_store_or_dead_letter_every_row_once_and_acknowledge_everything_in_order() {
    let cases_to_run = std::env::var("NANOSTREAM_RANDOM_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256);
    let seed = std::env::var("NANOSTREAM_RANDOM_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    println!("batch writer: {cases_to_run} random cases, NANOSTREAM_RANDOM_SEED={seed}");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = ProptestConfig { cases: cases_to_run, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(
        config,
        proptest::test_runner::TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &seed_bytes),
    );
    if let Err(error) = runner.run(&cases(), |case| check_case(&case)) {
        panic!("{error} (rerun with NANOSTREAM_RANDOM_SEED={seed})");
    }
}
