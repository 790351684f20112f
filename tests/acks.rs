//! Acknowledgements: a source's guard is released only after every item
//! derived from its batch reached a terminal state, through fan-out, fan-in,
//! filters, batches, windows, parallel workers, retries and dead letters;
//! and never counts as done when the pipeline failed.
//!
//! Each guard checks, when it is dropped, that every sink has consumed all
//! it expects from that batch; the tests assert that no guard was released
//! early and that every guard was released.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nanostream::prelude::*;
use nanostream::{
    Context, Sink, TopologyBuilder,
    acks::{AckGuard, AckOutcome, Acks},
    operators::{Windowed, batch, then, tumbling},
    policy::{DeadLetter, Retry},
    sinks::into_sink,
};

const BATCHES: u64 = 200;
const PER_BATCH: u64 = 50;

/// An item: its source batch and its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Item {
    batch: u64,
    n: u64,
}

#[derive(Default)]
struct Ledger {
    /// Items consumed per batch, over all sinks (weighted as the test says).
    consumed: HashMap<u64, u64>,
    released: Vec<u64>,
    early: Vec<(u64, u64)>,
    /// Guards abandoned: some copy was dropped without being released.
    abandoned: u64,
}

type Shared = Arc<Mutex<Ledger>>;

struct Guard {
    batch: u64,
    expected: u64,
    ledger: Shared,
}

impl AckGuard for Guard {
    fn settle(self, outcome: AckOutcome) {
        let mut ledger = self.ledger.lock().expect("not poisoned");
        if outcome == AckOutcome::Abandoned {
            ledger.abandoned += 1;
            return;
        }
        let consumed = ledger.consumed.get(&self.batch).copied().unwrap_or(0);
        if consumed != self.expected {
            ledger.early.push((self.batch, consumed));
        }
        ledger.released.push(self.batch);
    }
}

/// Emits BATCHES batches of PER_BATCH items, one guard per batch, yielding
/// between batches so batches interleave with processing.
struct Batches {
    ledger: Shared,
    /// Items each batch must deliver, over all sinks.
    expected: u64,
}

impl Source for Batches {
    type Out = Item;
    type Error = Infallible;

    async fn run(&mut self, out: &mut Emitter<Item>) -> Result<(), Infallible> {
        for batch in 0..BATCHES {
            let guard = Guard { batch, expected: self.expected, ledger: self.ledger.clone() };
            out.begin_batch(Acks::new(guard));
            for n in 0..PER_BATCH {
                out.emit(Item { batch, n }).await;
            }
            out.end_batch();
            out.flush().await;
            tokio::task::yield_now().await;
        }
        Ok(())
    }
}

/// Records items as consumed, slowly enough that chunks pile up.
fn recorder<T: Send + 'static>(
    ledger: &Shared,
    weight: impl Fn(&T) -> Vec<(u64, u64)> + Send + 'static,
) -> impl Sink<In = T> {
    let ledger = ledger.clone();
    for_each(move |item: T| {
        let counts = weight(&item);
        let ledger = ledger.clone();
        async move {
            tokio::task::yield_now().await;
            let mut ledger = ledger.lock().expect("not poisoned");
            for (batch, n) in counts {
                *ledger.consumed.entry(batch).or_default() += n;
            }
        }
    })
}

fn one(item: &Item) -> Vec<(u64, u64)> {
    vec![(item.batch, 1)]
}

fn check(ledger: &Shared) {
    let ledger = ledger.lock().expect("not poisoned");
    assert!(
        ledger.early.is_empty(),
        "guards released before their items were done: {:?}",
        &ledger.early[..ledger.early.len().min(5)]
    );
    assert_eq!(ledger.released.len() as u64, BATCHES, "every batch is eventually acknowledged");
    assert_eq!(ledger.abandoned, 0);
}

async fn run(g: TopologyBuilder) {
    tokio::time::timeout(Duration::from_secs(60), g.build().expect("valid").run())
        .await
        .expect("in time")
        .expect("runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_and_fan_in_release_a_batch_after_every_branch_consumed_it() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    // Two branches into one sink, plus a third branch into its own sink:
    // every batch owes 3 × PER_BATCH consumptions.
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: 3 * PER_BATCH });
    let a = g.node("a", map(|i: Item| i), &items);
    let b = g.node("b", map(|i: Item| i), &items);
    g.sink("merged", recorder(&ledger, one), [a, b]);
    g.sink("direct", recorder(&ledger, one), &items);
    run(g).await;
    check(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_items_are_terminal() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH / 2 });
    let even = g.node("even", filter(|i: &Item| i.n.is_multiple_of(2)), items);
    g.sink("sink", recorder(&ledger, one), even);
    run(g).await;
    check(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_hold_their_inputs_until_the_batch_is_consumed() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH });
    // Batches of 7 straddle the source's batches of 50.
    let grouped = g.node("batch", batch(7, Duration::from_secs(60)), items);
    g.sink("sink", recorder(&ledger, |b: &Vec<Item>| b.iter().map(|i| (i.batch, 1)).collect()), grouped);
    run(g).await;
    check(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_hold_their_inputs_until_the_window_result_is_consumed() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH });
    // One long window per source batch (the key): results only at the end.
    let counted =
        g.node("window", tumbling(Duration::from_secs(3600), |i: &Item| i.batch, || 0u64, |n, _| *n += 1), items);
    g.sink("sink", recorder(&ledger, |w: &Windowed<u64, u64>| vec![(w.key, w.value)]), counted);
    run(g).await;
    check(&ledger);
}

/// Event time: item `k` of the whole stream happened at `k` seconds.
fn stamped(i: &Item) -> nanostream::time::Timestamp {
    nanostream::time::Timestamp::from_millis((i.batch * PER_BATCH + i.n) as i64 * 1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_time_windows_hold_their_inputs_until_the_result_that_includes_them_is_consumed() {
    use nanostream::operators::{WindowResult, Windows, watermarks};
    use nanostream::time::Timed;
    use std::collections::BTreeMap;
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH });
    let timed = g.node("timed", watermarks(stamped, Duration::from_secs(1)), items);
    // Windows of 7 s straddle the source's batches of 50; the watermark
    // closes them as the input goes, not only at its end.
    let windows = Windows::tumbling(Duration::from_secs(7)).aggregate(
        |i: &Timed<Item>| i.stamp,
        |_| (),
        BTreeMap::<u64, u64>::new,
        |counts, i| *counts.entry(i.item.batch).or_default() += 1,
    );
    let (counted, late) = g.window("window", windows, timed);
    g.sink(
        "sink",
        recorder(&ledger, |w: &WindowResult<(), BTreeMap<u64, u64>>| w.value.iter().map(|(b, n)| (*b, *n)).collect()),
        counted.unfused(),
    );
    g.sink("late", recorder(&ledger, |_: &nanostream::operators::Late<Timed<Item>>| Vec::new()), late);
    run(g).await;
    check(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_workers_ordered_and_unordered_keep_acknowledgements() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: 2 * PER_BATCH });
    let unordered = g.parallel("unordered", 3, || map(|i: Item| i), &items);
    let ordered = g.parallel_ordered("ordered", 3, || map(|i: Item| i), &items);
    g.sink("u", recorder(&ledger, one), unordered);
    g.sink("o", recorder(&ledger, one), ordered);
    run(g).await;
    check(&ledger);
}

/// Fails every item's first attempt.
struct FailOnce(std::collections::HashSet<Item>);

impl Node for FailOnce {
    type In = Item;
    type Out = Item;
    type Error = String;

    async fn process(&mut self, item: Item, out: &mut Emitter<Item>) -> Result<(), String> {
        if self.0.insert(item) {
            return Err(format!("first attempt at {item:?}"));
        }
        out.emit(item).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_items_keep_their_batch_unacknowledged_until_they_succeed() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH });
    let retried =
        g.node("flaky", FailOnce(Default::default()).retry(Retry::attempts(2).backoff(Duration::ZERO)), items);
    g.sink("sink", recorder(&ledger, one), retried);
    run(g).await;
    check(&ledger);
}

#[node]
async fn reject_odd(item: Item) -> Result<Item, String> {
    if item.n.is_multiple_of(2) { Ok(item) } else { Err("odd".to_owned()) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_items_are_done_once_the_dead_letter_is_consumed() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH });
    let (good, dead) = g.node_with_dead_letters("check", reject_odd(), items);
    g.sink("good", recorder(&ledger, one), good);
    g.sink("dead", recorder(&ledger, |d: &DeadLetter<Item, String>| vec![(d.input.batch, 1)]), dead);
    run(g).await;
    check(&ledger);
}

/// Records even items, fails on odd ones: a sink whose writes can fail.
fn store_even(ledger: &Shared) -> impl Sink<In = Item, Error = String> {
    struct StoreEven(Shared);
    impl Sink for StoreEven {
        type In = Item;
        type Error = String;
        async fn consume(&mut self, item: Item) -> Result<(), String> {
            tokio::task::yield_now().await;
            if !item.n.is_multiple_of(2) {
                return Err("odd".to_owned());
            }
            *self.0.lock().expect("not poisoned").consumed.entry(item.batch).or_default() += 1;
            Ok(())
        }
    }
    StoreEven(ledger.clone())
}

/// A sink takes the same dead-letter policy as a node: an item it fails to
/// write is done once its dead letter is, a written one once it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sinks_dead_lettered_items_are_done_once_the_dead_letter_is_consumed() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH });
    let dead = g.sink_with_dead_letters("store", store_even(&ledger), items);
    g.sink("dead", recorder(&ledger, |d: &DeadLetter<Item, String>| vec![(d.input.batch, 1)]), dead);
    run(g).await;
    check(&ledger);
    let consumed: u64 = ledger.lock().expect("not poisoned").consumed.values().sum();
    assert_eq!(consumed, BATCHES * PER_BATCH, "every item written or dead-lettered, once");
}

/// A sink that keeps each chunk's acknowledgements until it commits still
/// owes a chunk's dead letters: the chunk is done once its stored items are
/// committed *and* its letters are consumed, not when the sink commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holding_sinks_dead_letters_owe_the_chunk_it_keeps() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH });
    let mut store = Transactional::new(&ledger, 2);
    store.fail_odd = true;
    let dead = g.sink_with_dead_letters("store", store, items);
    // Slow letters: a letter still in flight when the sink commits shows up
    // as a batch released early.
    let slow = |d: &DeadLetter<Item, String>| vec![(d.input.batch, 1)];
    g.sink("dead", recorder(&ledger, slow), dead.with_capacity(4));
    run(g).await;
    check(&ledger);
}

/// A policy of the user's own, written once, wraps a node and a sink alike
/// and keeps their acknowledgements: here it skips the odd items.
struct SkipOdd;

impl<N: Node<In = Item>> nanostream::policy::Policy<N> for SkipOdd {
    async fn process(&mut self, node: &mut N, item: Item, out: &mut Emitter<N::Out>) -> Result<(), N::Error> {
        if item.n.is_multiple_of(2) { node.process(item, out).await } else { Ok(()) }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_policy_wraps_nodes_and_sinks_and_keeps_acknowledgements() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    // The node's policy skips the odd items; renumbered, half of the rest
    // are odd again and the sink's policy skips them; the sink holds what it
    // stores until it commits (Transactional). What is left: n % 4 == 0.
    let expected = (0..PER_BATCH).filter(|n| n % 4 == 0).count() as u64;
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected });
    let halved = g.node("halve", map(|i: Item| i).with_policy(SkipOdd), items);
    let renumbered = g.node("renumber", map(|i: Item| Item { batch: i.batch, n: i.n / 2 }), halved);
    g.sink("store", Transactional::new(&ledger, 3).with_policy(SkipOdd), renumbered);
    run(g).await;
    check(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_never_counts_dropped_acknowledgements_as_done() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH });
    let failing = g.node(
        "fails_midway",
        then(|i: Item| async move {
            if i.batch == 50 {
                // Let other items get in flight, then fail.
                tokio::task::yield_now().await;
                panic!("fails at batch 50");
            }
            i
        }),
        items,
    );
    g.sink("sink", recorder(&ledger, one), failing);
    let error = g.build().expect("valid").run().await.expect_err("fails");
    assert!(matches!(error, nanostream::Error::NodePanicked { .. }), "{error:?}");
    let ledger = ledger.lock().expect("not poisoned");
    assert!(ledger.early.is_empty(), "no batch counted done early: {:?}", ledger.early);
    assert!(ledger.abandoned > 0, "in-flight batches were abandoned, not done");
    assert!(!ledger.released.contains(&50), "the failing batch is never done");
}

/// A sink that writes items in transactions: items count as consumed only
/// when it commits, every `every` chunks and at the end, and it keeps the
/// acknowledgements of uncommitted chunks until then.
struct Transactional {
    ledger: Shared,
    every: usize,
    uncommitted: Vec<Item>,
    held: Vec<Acks>,
    /// Refuses the odd items.
    fail_odd: bool,
}

impl Transactional {
    fn new(ledger: &Shared, every: usize) -> Self {
        Self { ledger: ledger.clone(), every, uncommitted: Vec::new(), held: Vec::new(), fail_odd: false }
    }

    fn commit(&mut self) {
        let mut ledger = self.ledger.lock().expect("not poisoned");
        for item in self.uncommitted.drain(..) {
            *ledger.consumed.entry(item.batch).or_default() += 1;
        }
        drop(ledger);
        for acks in self.held.drain(..) {
            acks.release();
        }
    }
}

impl Sink for Transactional {
    type In = Item;
    type Error = String;

    fn hold(&mut self, acks: Acks) -> Acks {
        // The chunks before this one have been consumed in full.
        if self.held.len() >= self.every {
            self.commit();
        }
        self.held.push(acks);
        Acks::default()
    }

    async fn consume(&mut self, item: Item) -> Result<(), String> {
        tokio::task::yield_now().await;
        if self.fail_odd && !item.n.is_multiple_of(2) {
            return Err("odd".to_owned());
        }
        self.uncommitted.push(item);
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), String> {
        self.commit();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_errors_and_retry_keep_what_the_sink_they_wrap_holds() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: 2 * PER_BATCH });
    g.sink("skipping", Transactional::new(&ledger, 5).skip_errors(), &items);
    g.sink("retrying", Transactional::new(&ledger, 3).retry(Retry::attempts(3)), &items);
    run(g).await;
    check(&ledger);
}

/// A `futures::Sink` that buffers what it is fed and writes it (counts it as
/// consumed) only when flushed or closed.
struct Buffered {
    ledger: Shared,
    buffer: Vec<Item>,
}

impl Buffered {
    fn write(&mut self) {
        let mut ledger = self.ledger.lock().expect("not poisoned");
        for item in self.buffer.drain(..) {
            *ledger.consumed.entry(item.batch).or_default() += 1;
        }
    }
}

impl futures::Sink<Item> for Buffered {
    type Error = Infallible;

    fn poll_ready(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn start_send(self: std::pin::Pin<&mut Self>, item: Item) -> Result<(), Infallible> {
        self.get_mut().buffer.push(item);
        Ok(())
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.get_mut().write();
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.poll_flush(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn into_sink_releases_items_once_its_sink_flushed_them() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH });
    g.sink("buffered", into_sink(Buffered { ledger: ledger.clone(), buffer: Vec::new() }), items);
    run(g).await;
    check(&ledger);
}

/// Consumes items until `at`, where it fails: with an error, a panic, or a
/// failure through `Context::fail` (then also returning an error, which
/// `skip_errors` swallows).
struct FailsAt {
    ledger: Shared,
    at: Item,
    how: &'static str,
    ctx: Option<Context>,
}

impl Sink for FailsAt {
    type In = Item;
    type Error = String;

    async fn setup(&mut self, ctx: &Context) -> Result<(), String> {
        self.ctx = Some(ctx.clone());
        Ok(())
    }

    async fn consume(&mut self, item: Item) -> Result<(), String> {
        if item == self.at {
            match self.how {
                "panic" => panic!("broken at {item:?}"),
                "fail" => self.ctx.as_ref().expect("set up").fail(format!("lost {item:?}")),
                _ => {}
            }
            return Err(format!("broken at {item:?}"));
        }
        *self.ledger.lock().expect("not poisoned").consumed.entry(item.batch).or_default() += 1;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_never_releases_the_chunk_it_failed_in() {
    for how in ["error", "panic", "fail"] {
        let ledger = Shared::default();
        let mut g = Topology::builder();
        g.chunk_size(16).default_capacity(64);
        let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH });
        // The last item of batch 50: the chunk holding it holds the last
        // copy of that batch's guard.
        let at = Item { batch: 50, n: PER_BATCH - 1 };
        let sink = FailsAt { ledger: ledger.clone(), at, how, ctx: None };
        if how == "fail" {
            // `Context::fail` gets past the policy.
            g.sink("sink", sink.skip_errors(), items);
        } else {
            g.sink("sink", sink, items);
        }
        let error = g.build().expect("valid").run().await.expect_err("fails");
        match (how, &error) {
            ("panic", nanostream::Error::NodePanicked { node, .. }) => assert_eq!(node, "sink"),
            ("error" | "fail", nanostream::Error::NodeFailed { node, source }) => {
                assert_eq!(node, "sink");
                let expected = if how == "fail" { "lost" } else { "broken" };
                assert!(source.to_string().starts_with(expected), "{how}: {source}");
            }
            _ => panic!("{how}: unexpected {error:?}"),
        }
        let ledger = ledger.lock().expect("not poisoned");
        assert!(ledger.early.is_empty(), "{how}: a batch counted done early: {:?}", ledger.early);
        assert!(!ledger.released.contains(&50), "{how}: the batch the sink failed in is never done");
    }
}

/// A node of a user's own that keeps inputs in its state: sums of three.
#[derive(Default)]
struct SumOfThree {
    sum: u64,
    count: u32,
    held: nanostream::acks::Held,
}

impl Node for SumOfThree {
    type In = u64;
    type Out = u64;
    type Error = Infallible;

    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), Infallible> {
        out.hold(&mut self.held);
        self.sum += x;
        self.count += 1;
        if self.count == 3 {
            out.adopt(&mut self.held);
            out.emit(std::mem::take(&mut self.sum)).await;
            self.count = 0;
        }
        Ok(())
    }
}

/// Emits `1..=n`, each item under its own guard, which logs how it settled.
struct Logged {
    n: u64,
    log: Arc<Mutex<Vec<String>>>,
}

impl Source for Logged {
    type Out = u64;
    type Error = Infallible;

    async fn run(&mut self, out: &mut Emitter<u64>) -> Result<(), Infallible> {
        for i in 1..=self.n {
            let log = self.log.clone();
            out.begin_batch(Acks::new(move |outcome: AckOutcome| {
                log.lock().expect("not poisoned").push(format!("{i}: {outcome:?}"));
            }));
            out.emit(i).await;
            out.end_batch();
            // One item per chunk: acknowledgements travel per chunk.
            out.flush().await;
        }
        Ok(())
    }
}

/// With `Held`, a user's node keeps its inputs from counting as done until
/// what it made of them is delivered, and what it never emits is abandoned.
#[tokio::test]
async fn a_users_node_holds_acknowledgements_until_it_emits() {
    for fused in [true, false] {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut g = Topology::builder();
        g.fusion(fused);
        let items = g.source("items", Logged { n: 7, log: log.clone() });
        let sums = g.node("sums", SumOfThree::default(), items);
        let sink_log = log.clone();
        g.sink(
            "sums_out",
            for_each(move |sum: u64| {
                let log = sink_log.clone();
                async move { log.lock().expect("not poisoned").push(format!("sum {sum}")) }
            }),
            sums,
        );
        g.build().expect("valid").run().await.expect("runs");
        let log = log.lock().expect("not poisoned").clone();
        let at = |entry: &str| log.iter().position(|e| e == entry).unwrap_or_else(|| panic!("{entry} in {log:?}"));
        for i in 1..=3 {
            assert!(at(&format!("{i}: Done")) > at("sum 6"), "fused: {fused}: {log:?}");
        }
        for i in 4..=6 {
            assert!(at(&format!("{i}: Done")) > at("sum 15"), "fused: {fused}: {log:?}");
        }
        // Item 7 was kept and never emitted: when the node is dropped, so
        // are its acknowledgements.
        assert!(log.contains(&"7: Abandoned".to_owned()), "fused: {fused}: {log:?}");
        assert_eq!(log.len(), 9, "fused: {fused}: {log:?}");
    }
}
