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
use nanostream::{Acks, Retry, Windowed};

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
    /// Guards dropped while the pipeline was failing.
    dropped_failing: u64,
}

type Shared = Arc<Mutex<Ledger>>;

struct Guard {
    batch: u64,
    expected: u64,
    ledger: Shared,
    ctx: Context,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut ledger = self.ledger.lock().expect("not poisoned");
        if self.ctx.has_failed() {
            ledger.dropped_failing += 1;
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
    ctx: Option<Context>,
}

impl Source for Batches {
    type Out = Item;
    type Error = Infallible;

    async fn setup(&mut self, ctx: &Context) -> Result<(), Infallible> {
        self.ctx = Some(ctx.clone());
        Ok(())
    }

    async fn run(&mut self, out: &mut Emitter<Item>) -> Result<(), Infallible> {
        let ctx = self.ctx.clone().expect("set up");
        for batch in 0..BATCHES {
            let guard = Guard { batch, expected: self.expected, ledger: self.ledger.clone(), ctx: ctx.clone() };
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

    fn flushes_itself(&self) -> bool {
        true
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
    assert_eq!(ledger.dropped_failing, 0);
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
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: 3 * PER_BATCH, ctx: None });
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
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH / 2, ctx: None });
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
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH, ctx: None });
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
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH, ctx: None });
    // One long window per source batch (the key): results only at the end.
    let counted =
        g.node("window", tumbling(Duration::from_secs(3600), |i: &Item| i.batch, || 0u64, |n, _| *n += 1), items);
    g.sink("sink", recorder(&ledger, |w: &Windowed<u64, u64>| vec![(w.key, w.value)]), counted);
    run(g).await;
    check(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_workers_ordered_and_unordered_keep_acknowledgements() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: 2 * PER_BATCH, ctx: None });
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
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH, ctx: None });
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
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH, ctx: None });
    let (good, dead) = g.node_with_dead_letters("check", reject_odd(), items);
    g.sink("good", recorder(&ledger, one), good);
    g.sink("dead", recorder(&ledger, |d: &nanostream::DeadLetter<Item, String>| vec![(d.input.batch, 1)]), dead);
    run(g).await;
    check(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_never_counts_dropped_acknowledgements_as_done() {
    let ledger = Shared::default();
    let mut g = Topology::builder();
    g.chunk_size(16).default_capacity(64);
    let items = g.source("batches", Batches { ledger: ledger.clone(), expected: PER_BATCH, ctx: None });
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
    assert!(ledger.dropped_failing > 0, "in-flight batches were dropped as failing");
    assert!(!ledger.released.contains(&50), "the failing batch is never done");
}
