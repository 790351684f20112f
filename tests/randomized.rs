//! The randomized proof of "nothing lost, nothing stuck".
//!
//! Each case is a random graph built from the whole operator set (map,
//! filter, flat-map, batch, tumbling and sliding windows, `fold_by_key`,
//! `parallel` and `parallel_ordered` with stateless or stateful workers,
//! broadcast, round-robin, `partition_by`, fan-in, `skip_errors`, `retry`,
//! dead letters, sinks that consume at once, slowly, or hold their
//! acknowledgements until a later flush), fed by one or two ledger sources
//! (pulled in a tight loop, or pushed with waits) that give every batch of
//! items an acknowledgement guard. Faults are injected at random: an error,
//! a panic or a `Context::fail` at item k of a node, the `run()` future
//! dropped at a random moment, a graceful `shutdown(deadline)`.
//!
//! Every item carries the ids of the source items it derives from
//! (`Tracked`). The ledger counts, per source item, the live items derived
//! from it and the terminal events they reached (consumed by a sink,
//! filtered, skipped); a reference model computes how many terminal events
//! each source item must reach when everything completes. After each case:
//!
//! - (a, c) a guard settled as done only when every item derived from its
//!   batch was terminal: no derived item alive, every expected terminal
//!   event reached, whether the run succeeded, failed or was cancelled;
//! - (b) on `Ok`, every sink received exactly the expected multiset;
//! - (d) the run ended within a bound (never hangs), and every guard was
//!   settled once the runtime was dropped (nothing stuck);
//! - (e) never `Ok` after an injected failure fired.
//!
//! `NANOSTREAM_RANDOM_CASES` sets the number of cases (CI runs the
//! default), `NANOSTREAM_RANDOM_SEED` replays a run; the seed is printed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nanostream::prelude::*;
use nanostream::{
    Context, Error, Now, Sink, TopologyBuilder,
    acks::{AckOutcome, Acks},
    operators::{batch, filter_map, flat_map, fold_by_key, sliding, then, tumbling},
    policy::{DeadLetter, Retry},
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

type Origin = u32;

// ---------------------------------------------------------------------------
// The ledger: what happened to every source item.

#[derive(Default)]
struct Ledger {
    /// Per source item: live items derived from it.
    live: Vec<AtomicI64>,
    /// Per source item: terminal events reached by items derived from it.
    terminal: Vec<AtomicU64>,
    /// Per source item: whether its source emitted it.
    emitted: Vec<AtomicBool>,
    /// Per source item: the terminal events it must reach in a complete run.
    expected_terminal: Mutex<Vec<u64>>,
    /// Per sink and source item: arrivals.
    arrivals: Mutex<HashMap<(usize, Origin), u64>>,
    guards: AtomicU64,
    /// Batches whose source reached `end_batch`.
    completed: Mutex<std::collections::HashSet<u64>>,
    settled: Mutex<Vec<(u64, AckOutcome)>>,
    violations: Mutex<Vec<String>>,
    fault_fired: AtomicBool,
}

impl Ledger {
    fn new(origins: usize) -> Self {
        Self {
            live: (0..origins).map(|_| AtomicI64::new(0)).collect(),
            terminal: (0..origins).map(|_| AtomicU64::new(0)).collect(),
            emitted: (0..origins).map(|_| AtomicBool::new(false)).collect(),
            ..Self::default()
        }
    }

    fn violation(&self, what: String) {
        self.violations.lock().expect("not poisoned").push(what);
    }

    fn terminal(&self, origin: Origin) {
        self.terminal[origin as usize].fetch_add(1, Ordering::SeqCst);
    }

    /// A guard of `origins` settles.
    fn settle(&self, batch: u64, origins: &[Origin], outcome: AckOutcome) {
        self.settled.lock().expect("not poisoned").push((batch, outcome));
        if outcome != AckOutcome::Done {
            return;
        }
        let expected = self.expected_terminal.lock().expect("not poisoned");
        for &o in origins {
            let live = self.live[o as usize].load(Ordering::SeqCst);
            let terminal = self.terminal[o as usize].load(Ordering::SeqCst);
            if live != 0 || terminal != expected[o as usize] {
                self.violation(format!(
                    "batch {batch} settled done while item {o} had {live} live derived items and \
                     {terminal} of {} terminal events",
                    expected[o as usize]
                ));
            }
        }
    }
}

/// An item, carrying the source items it derives from. Creating, cloning
/// and dropping it keeps the ledger's live counts.
struct Tracked {
    origins: Vec<Origin>,
    ledger: Arc<Ledger>,
}

impl Tracked {
    fn new(origin: Origin, ledger: &Arc<Ledger>) -> Self {
        ledger.live[origin as usize].fetch_add(1, Ordering::SeqCst);
        Self { origins: vec![origin], ledger: ledger.clone() }
    }

    fn empty(ledger: &Arc<Ledger>) -> Self {
        Self { origins: Vec::new(), ledger: ledger.clone() }
    }

    /// Takes `other`'s source items (a fold).
    fn merge(mut self, mut other: Tracked) -> Self {
        self.origins.append(&mut other.origins);
        self
    }

    /// Adds copies of `other`'s source items (a window, which keeps the
    /// item only by reference).
    fn absorb(&mut self, other: &Tracked) {
        for &o in &other.origins {
            self.ledger.live[o as usize].fetch_add(1, Ordering::SeqCst);
            self.origins.push(o);
        }
    }

    /// Drops the source items `drop_it` says, as terminal (a filter).
    fn retain(&mut self, drop_it: impl Fn(Origin) -> bool) {
        let ledger = &self.ledger;
        self.origins.retain(|&o| {
            if drop_it(o) {
                ledger.terminal(o);
                ledger.live[o as usize].fetch_sub(1, Ordering::SeqCst);
                false
            } else {
                true
            }
        });
    }

    /// Every source item reached a terminal state here.
    fn terminate(self) {
        for &o in &self.origins {
            self.ledger.terminal(o);
        }
    }

    fn first(&self) -> Origin {
        self.origins.first().copied().unwrap_or(0)
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        for &o in &self.origins {
            self.ledger.live[o as usize].fetch_add(1, Ordering::SeqCst);
        }
        Self { origins: self.origins.clone(), ledger: self.ledger.clone() }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        for &o in &self.origins {
            self.ledger.live[o as usize].fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tracked{:?}", self.origins)
    }
}

fn hashed(salt: u32, origin: Origin) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    (salt, origin).hash(&mut h);
    h.finish()
}

/// Whether a salted per-item choice picks `origin` (about one in four).
fn picked(salt: u32, origin: Origin) -> bool {
    hashed(salt, origin).is_multiple_of(4)
}

// ---------------------------------------------------------------------------
// Cases.

#[derive(Debug, Clone)]
enum Op {
    Map { input: usize },
    Filter { input: usize, salt: u32 },
    FlatMap { input: usize, copies: u64 },
    Batch { input: usize, max: usize, wait_ms: u64 },
    Tumbling { input: usize, size_ms: u64, keys: u32 },
    Sliding { input: usize, slide_ms: u64, ratio: u64, keys: u32 },
    FoldByKey { input: usize, keys: u32 },
    Parallel { input: usize, workers: usize, ordered: bool, slow: bool, batch: Option<usize> },
    Split { input: usize, parts: usize, by_key: bool },
    FanIn { a: usize, b: usize },
    SkipErrors { input: usize, salt: u32, panic: bool },
    Retry { input: usize, fails: u32 },
    DeadLetters { input: usize, salt: u32, panic: bool },
}

#[derive(Debug, Clone, Copy)]
enum SinkKind {
    Immediate,
    Slow,
    /// Keeps items and their acknowledgements until no input is ready.
    Holding,
    /// `Holding` behind an error policy (which never fires): the policy
    /// layer must hand the sink its acknowledgements and its `flush`.
    HoldingBehindPolicy,
}

#[derive(Debug, Clone, Copy)]
enum FaultKind {
    Error,
    Panic,
    ContextFail,
}

#[derive(Debug, Clone)]
struct Fault {
    output: usize,
    at: u64,
    kind: FaultKind,
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Run to completion.
    Complete,
    /// Drop the `run()` future after this many milliseconds.
    Cancel { after_ms: u64 },
    /// Shut down gracefully after `after_ms`, with a deadline.
    Shutdown { after_ms: u64, deadline_ms: u64 },
}

#[derive(Debug, Clone)]
struct Case {
    /// Items of each source (the second may have none).
    items: [u32; 2],
    /// Items per acknowledgement guard.
    per_guard: u32,
    /// Sources push (waiting between items) rather than pull.
    push: [bool; 2],
    chunk: usize,
    capacity: usize,
    ops: Vec<Op>,
    extra_sinks: Vec<(usize, SinkKind)>,
    sink_kinds: Vec<SinkKind>,
    fault: Option<Fault>,
    ending: Ending,
    /// Chains of one-to-one nodes run fused in one task (the default), or
    /// every node in its own task.
    fusion: bool,
}

fn sink_kind() -> impl Strategy<Value = SinkKind> {
    prop_oneof![
        Just(SinkKind::Immediate),
        Just(SinkKind::Slow),
        Just(SinkKind::Holding),
        Just(SinkKind::HoldingBehindPolicy)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let i = any::<usize>();
    prop_oneof![
        i.prop_map(|input| Op::Map { input }),
        (i, any::<u32>()).prop_map(|(input, salt)| Op::Filter { input, salt }),
        (i, 2..=3u64).prop_map(|(input, copies)| Op::FlatMap { input, copies }),
        (i, 1..=6usize, 1..=40u64).prop_map(|(input, max, wait_ms)| Op::Batch { input, max, wait_ms }),
        (i, 1..=40u64, 1..=4u32).prop_map(|(input, size_ms, keys)| Op::Tumbling { input, size_ms, keys }),
        (i, 1..=20u64, 1..=3u64, 1..=4u32).prop_map(|(input, slide_ms, ratio, keys)| Op::Sliding {
            input,
            slide_ms,
            ratio,
            keys
        }),
        (i, 1..=4u32).prop_map(|(input, keys)| Op::FoldByKey { input, keys }),
        (i, 1..=4usize, any::<bool>(), any::<bool>(), prop::option::of(1..=4usize))
            .prop_map(|(input, workers, ordered, slow, batch)| Op::Parallel { input, workers, ordered, slow, batch }),
        (i, 2..=3usize, any::<bool>()).prop_map(|(input, parts, by_key)| Op::Split { input, parts, by_key }),
        (i, any::<usize>()).prop_map(|(a, b)| Op::FanIn { a, b }),
        (i, any::<u32>(), any::<bool>()).prop_map(|(input, salt, panic)| Op::SkipErrors { input, salt, panic }),
        (i, 1..=2u32).prop_map(|(input, fails)| Op::Retry { input, fails }),
        (i, any::<u32>(), any::<bool>()).prop_map(|(input, salt, panic)| Op::DeadLetters { input, salt, panic }),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    let kind = prop_oneof![Just(FaultKind::Error), Just(FaultKind::Panic), Just(FaultKind::ContextFail)];
    (any::<usize>(), 1..=150u64, kind).prop_map(|(output, at, kind)| Fault { output, at, kind })
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![
        3 => Just(Ending::Complete),
        1 => (0..=200u64).prop_map(|after_ms| Ending::Cancel { after_ms }),
        1 => (0..=200u64, 1..=400u64).prop_map(|(after_ms, deadline_ms)| Ending::Shutdown { after_ms, deadline_ms }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (0..=120u32, prop_oneof![Just(0u32), 1..=80u32]),
        1..=12u32,
        any::<[bool; 2]>(),
        1..=16usize,
        1..=48usize,
        prop::collection::vec(op(), 0..=7),
        prop::collection::vec((any::<usize>(), sink_kind()), 0..=2),
        prop::collection::vec(sink_kind(), 1..=4),
        prop::option::weighted(0.3, fault()),
        ending(),
        any::<bool>(),
    )
        .prop_map(
            |(items, per_guard, push, chunk, capacity, ops, extra_sinks, sink_kinds, fault, ending, fusion)| Case {
                items: [items.0, items.1],
                per_guard,
                push,
                chunk,
                capacity,
                ops,
                extra_sinks,
                sink_kinds,
                fault,
                ending,
                fusion,
            },
        )
}

// ---------------------------------------------------------------------------
// Nodes of the cases.

/// Emits its items, one acknowledgement guard per `per_guard` items.
struct LedgerSource {
    origins: std::ops::Range<Origin>,
    per_guard: u32,
    push: bool,
    ledger: Arc<Ledger>,
}

impl Source for LedgerSource {
    type Out = Tracked;
    type Error = Infallible;

    async fn run(&mut self, out: &mut Emitter<Tracked>) -> Result<(), Infallible> {
        let all: Vec<Origin> = self.origins.clone().collect();
        for (batch, origins) in all.chunks(self.per_guard as usize).enumerate() {
            let emitted = Arc::new(Mutex::new(Vec::new()));
            let (ledger, mine) = (self.ledger.clone(), emitted.clone());
            let id = u64::from(self.origins.start) * 1_000 + batch as u64;
            ledger.guards.fetch_add(1, Ordering::SeqCst);
            out.begin_batch(Acks::new(move |outcome| {
                let origins = mine.lock().expect("not poisoned").clone();
                ledger.settle(id, &origins, outcome);
            }));
            for &o in origins {
                // Recorded before the item is buffered: a source stopped in
                // between never owns an unrecorded item.
                emitted.lock().expect("not poisoned").push(o);
                self.ledger.emitted[o as usize].store(true, Ordering::SeqCst);
                out.emit(Tracked::new(o, &self.ledger)).await;
                if self.push && o % 3 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            out.end_batch();
            self.ledger.completed.lock().expect("not poisoned").insert(id);
            if self.push {
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }
}

/// Fails on the items `picked` chooses: as an error or a panic. Under
/// `skip_errors` such an item is terminal; under dead letters it goes on.
struct FailOn {
    salt: u32,
    panic: bool,
    skipped: bool,
}

impl Node for FailOn {
    type In = Tracked;
    type Out = Tracked;
    type Error = String;

    async fn process(&mut self, item: Tracked, out: &mut Emitter<Tracked>) -> Result<(), String> {
        match self.process_now(item) {
            Now::Emit(item) => {
                out.emit(item).await;
                Ok(())
            }
            Now::Fail(error) => Err(error),
            Now::Nothing | Now::Later(_) => Ok(()),
        }
    }

    fn process_now(&mut self, item: Tracked) -> Now<Tracked, Tracked, String> {
        if !item.origins.iter().any(|&o| picked(self.salt, o)) {
            return Now::Emit(item);
        }
        if self.skipped {
            item.clone().terminate();
        }
        drop(item);
        if self.panic {
            panic!("injected panic");
        }
        Now::Fail("injected error".into())
    }
}

/// Fails every item's first `fails` attempts.
struct Flaky {
    fails: u32,
    attempts: HashMap<Vec<Origin>, u32>,
}

impl Node for Flaky {
    type In = Tracked;
    type Out = Tracked;
    type Error = String;

    async fn process(&mut self, item: Tracked, out: &mut Emitter<Tracked>) -> Result<(), String> {
        tokio::task::yield_now().await;
        let attempts = self.attempts.entry(item.origins.clone()).or_default();
        *attempts += 1;
        if *attempts <= self.fails {
            return Err("try again".into());
        }
        out.emit(item).await;
        Ok(())
    }
}

/// The injected failure: at its `at`-th item.
struct Sabotage {
    at: u64,
    seen: u64,
    kind: FaultKind,
    ledger: Arc<Ledger>,
    ctx: Option<Context>,
}

impl Node for Sabotage {
    type In = Tracked;
    type Out = Tracked;
    type Error = String;

    async fn setup(&mut self, ctx: &Context) -> Result<(), String> {
        self.ctx = Some(ctx.clone());
        Ok(())
    }

    async fn process(&mut self, item: Tracked, out: &mut Emitter<Tracked>) -> Result<(), String> {
        self.seen += 1;
        if self.seen == self.at {
            self.ledger.fault_fired.store(true, Ordering::SeqCst);
            match self.kind {
                FaultKind::Error => return Err("injected failure".into()),
                FaultKind::Panic => panic!("injected failure"),
                FaultKind::ContextFail => {
                    if let Some(ctx) = &self.ctx {
                        ctx.fail("injected failure");
                    }
                }
            }
        }
        out.emit(item).await;
        Ok(())
    }
}

/// Records arrivals: at once, slowly, or when no input is ready (keeping
/// items and acknowledgements until then).
struct Recorder {
    id: usize,
    kind: SinkKind,
    ledger: Arc<Ledger>,
    kept: Vec<Tracked>,
    held: Vec<Acks>,
}

impl Recorder {
    fn arrive(&self, item: Tracked) {
        {
            let mut arrivals = self.ledger.arrivals.lock().expect("not poisoned");
            for &o in &item.origins {
                *arrivals.entry((self.id, o)).or_default() += 1;
            }
        }
        item.terminate();
    }
}

impl Sink for Recorder {
    type In = Tracked;
    type Error = Infallible;

    fn hold(&mut self, acks: Acks) -> Acks {
        match self.kind {
            SinkKind::Holding | SinkKind::HoldingBehindPolicy => {
                self.held.push(acks);
                Acks::default()
            }
            _ => acks,
        }
    }

    async fn consume(&mut self, item: Tracked) -> Result<(), Infallible> {
        match self.kind {
            SinkKind::Immediate => self.arrive(item),
            SinkKind::Slow => {
                tokio::time::sleep(Duration::from_millis(1)).await;
                self.arrive(item);
            }
            SinkKind::Holding | SinkKind::HoldingBehindPolicy => self.kept.push(item),
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Infallible> {
        for item in std::mem::take(&mut self.kept) {
            self.arrive(item);
        }
        for acks in self.held.drain(..) {
            acks.release();
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Building a case, with its reference model.

/// An output of the graph, with what the reference model says it carries.
struct Stream {
    output: Output<Tracked>,
    /// Per source item: how many derived items come out here.
    counts: Vec<u64>,
    /// Items may hold several source items.
    merged: bool,
    readers: usize,
}

struct Built {
    topology: Topology,
    /// Per sink: its expected arrivals per source item.
    sinks: Vec<Vec<u64>>,
    expected_terminal: Vec<u64>,
}

fn merge_vec(ledger: &Arc<Ledger>) -> impl FnMut(Vec<Tracked>) -> Tracked + Send + 'static {
    let ledger = ledger.clone();
    move |items: Vec<Tracked>| items.into_iter().fold(Tracked::empty(&ledger), Tracked::merge)
}

/// Adds a window node on `input` and a node that takes each result's value.
fn window_values<N>(g: &mut TopologyBuilder, name: String, window: N, input: &Stream, copies: u64) -> Stream
where
    N: Node<In = Tracked, Out = nanostream::operators::Windowed<u32, Tracked>>,
{
    let windows = g.node(name.clone(), window, &input.output);
    let output =
        g.node(format!("{name}.value"), map(|w: nanostream::operators::Windowed<u32, Tracked>| w.value), windows);
    Stream { output, counts: input.counts.iter().map(|c| c * copies).collect(), merged: true, readers: 0 }
}

fn build(case: &Case, ledger: &Arc<Ledger>) -> Built {
    let origins = (case.items[0] + case.items[1]) as usize;
    let mut g = Topology::builder();
    g.chunk_size(case.chunk).default_capacity(case.capacity).fusion(case.fusion);
    let mut streams: Vec<Stream> = Vec::new();
    let mut terminal = vec![0u64; origins];
    let mut start = 0;
    for (i, &n) in case.items.iter().enumerate() {
        if n == 0 && i > 0 {
            continue;
        }
        let source = LedgerSource {
            origins: start..start + n,
            per_guard: case.per_guard,
            push: case.push[i],
            ledger: ledger.clone(),
        };
        let mut counts = vec![0; origins];
        for o in start..start + n {
            counts[o as usize] = 1;
        }
        streams.push(Stream { output: g.source(format!("source{i}"), source), counts, merged: false, readers: 0 });
        start += n;
    }
    for (i, op) in case.ops.iter().enumerate() {
        let name = format!("op{i}");
        let pick = |streams: &mut Vec<Stream>, index: usize| {
            let index = index % streams.len();
            streams[index].readers += 1;
            index
        };
        let stream = match op.clone() {
            Op::Map { input } => {
                let s = pick(&mut streams, input);
                let output = g.node(name, map(|t: Tracked| t), &streams[s].output);
                Stream { output, counts: streams[s].counts.clone(), merged: streams[s].merged, readers: 0 }
            }
            Op::Filter { input, salt } => {
                let s = pick(&mut streams, input);
                let mut counts = streams[s].counts.clone();
                for (o, count) in counts.iter_mut().enumerate() {
                    if picked(salt, o as Origin) {
                        terminal[o] += *count;
                        *count = 0;
                    }
                }
                let filtered = filter_map(move |mut t: Tracked| {
                    t.retain(|o| picked(salt, o));
                    (!t.origins.is_empty()).then_some(t)
                });
                let output = g.node(name, filtered, &streams[s].output);
                Stream { output, counts, merged: streams[s].merged, readers: 0 }
            }
            Op::FlatMap { input, copies } => {
                let s = pick(&mut streams, input);
                let counts = streams[s].counts.iter().map(|c| c * copies).collect();
                let output = g.node(name, flat_map(move |t: Tracked| vec![t; copies as usize]), &streams[s].output);
                Stream { output, counts, merged: streams[s].merged, readers: 0 }
            }
            Op::Batch { input, max, wait_ms } => {
                let s = pick(&mut streams, input);
                let batches = g.node(name.clone(), batch(max, Duration::from_millis(wait_ms)), &streams[s].output);
                let output = g.node(format!("{name}.merge"), map(merge_vec(ledger)), batches);
                Stream { output, counts: streams[s].counts.clone(), merged: true, readers: 0 }
            }
            Op::Tumbling { input, size_ms: slide_ms, keys } | Op::Sliding { input, slide_ms, ratio: 1, keys } => {
                let s = pick(&mut streams, input);
                let l = ledger.clone();
                let window = tumbling(
                    Duration::from_millis(slide_ms),
                    move |t: &Tracked| t.first() % keys,
                    move || Tracked::empty(&l),
                    |acc: &mut Tracked, t: &Tracked| acc.absorb(t),
                );
                window_values(&mut g, name, window, &streams[s], 1)
            }
            Op::Sliding { input, slide_ms, ratio, keys } => {
                let s = pick(&mut streams, input);
                let l = ledger.clone();
                let window = sliding(
                    Duration::from_millis(slide_ms * ratio),
                    Duration::from_millis(slide_ms),
                    move |t: &Tracked| t.first() % keys,
                    move || Tracked::empty(&l),
                    |acc: &mut Tracked, t: &Tracked| acc.absorb(t),
                );
                // Every item falls in `ratio` windows.
                window_values(&mut g, name, window, &streams[s], ratio)
            }
            Op::FoldByKey { input, keys } => {
                let s = pick(&mut streams, input);
                let l = ledger.clone();
                let folded = fold_by_key(
                    move |t: &Tracked| t.first() % keys,
                    move || Tracked::empty(&l),
                    |acc: &mut Tracked, t: Tracked| {
                        let merged = std::mem::replace(acc, Tracked::empty(&t.ledger)).merge(t);
                        *acc = merged;
                    },
                );
                let per_key = g.node(name.clone(), folded, &streams[s].output);
                let output = g.node(format!("{name}.value"), map(|(_, t): (u32, Tracked)| t), per_key);
                Stream { output, counts: streams[s].counts.clone(), merged: true, readers: 0 }
            }
            Op::Parallel { input, workers, ordered, slow, batch: inner_batch } => {
                let s = pick(&mut streams, input);
                let from = &streams[s].output;
                let output = match (inner_batch, ordered) {
                    (Some(max), ordered) => {
                        let make = move || batch(max, Duration::from_millis(20));
                        let batches = if ordered {
                            g.parallel_ordered(name.clone(), workers, make, from)
                        } else {
                            g.parallel(name.clone(), workers, make, from)
                        };
                        g.node(format!("{name}.merge"), map(merge_vec(ledger)), batches)
                    }
                    (None, ordered) => {
                        let make = move || {
                            then(move |t: Tracked| async move {
                                if slow {
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                                t
                            })
                        };
                        if ordered {
                            g.parallel_ordered(name, workers, make, from)
                        } else {
                            g.parallel(name, workers, make, from)
                        }
                    }
                };
                let merged = streams[s].merged || inner_batch.is_some();
                Stream { output, counts: streams[s].counts.clone(), merged, readers: 0 }
            }
            Op::Split { input, parts, by_key } => {
                let s = pick(&mut streams, input);
                let whole = g.node(format!("{name}.in"), map(|t: Tracked| t), &streams[s].output);
                let split = if by_key {
                    g.partition_by(whole, parts, |t: &Tracked| t.first())
                } else {
                    g.round_robin(whole, parts)
                };
                let branches: Vec<_> = split
                    .into_iter()
                    .enumerate()
                    .map(|(p, part)| g.node(format!("{name}.part{p}"), map(|t: Tracked| t), part))
                    .collect();
                let output = g.node(name, map(|t: Tracked| t), branches);
                Stream { output, counts: streams[s].counts.clone(), merged: streams[s].merged, readers: 0 }
            }
            Op::FanIn { a, b } => {
                let a = pick(&mut streams, a);
                let b = pick(&mut streams, b);
                let counts = if a == b {
                    streams[a].counts.iter().map(|c| c * 2).collect()
                } else {
                    streams[a].counts.iter().zip(&streams[b].counts).map(|(x, y)| x + y).collect()
                };
                let merged = streams[a].merged || streams[b].merged;
                let output = g.node(name, map(|t: Tracked| t), [&streams[a].output, &streams[b].output]);
                Stream { output, counts, merged, readers: 0 }
            }
            Op::SkipErrors { input, salt, panic } => {
                let s = pick(&mut streams, input);
                // Items of several source items fail together: only on
                // streams of single ones is what is skipped known ahead.
                if streams[s].merged {
                    let output = g.node(name, map(|t: Tracked| t), &streams[s].output);
                    Stream { output, counts: streams[s].counts.clone(), merged: true, readers: 0 }
                } else {
                    let mut counts = streams[s].counts.clone();
                    for (o, count) in counts.iter_mut().enumerate() {
                        if picked(salt, o as Origin) {
                            terminal[o] += *count;
                            *count = 0;
                        }
                    }
                    let node = FailOn { salt, panic, skipped: true }.skip_errors();
                    let output = g.node(name, node, &streams[s].output);
                    Stream { output, counts, merged: false, readers: 0 }
                }
            }
            Op::Retry { input, fails } => {
                let s = pick(&mut streams, input);
                let node = Flaky { fails, attempts: HashMap::new() }
                    .retry(Retry::attempts(fails + 1).backoff(Duration::from_millis(1)));
                let output = g.node(name, node, &streams[s].output);
                Stream { output, counts: streams[s].counts.clone(), merged: streams[s].merged, readers: 0 }
            }
            Op::DeadLetters { input, salt, panic } => {
                let s = pick(&mut streams, input);
                let node = FailOn { salt, panic, skipped: false };
                let (out, letters) = g.node_with_dead_letters(name.clone(), node, &streams[s].output);
                let letters =
                    g.node(format!("{name}.letters"), map(|letter: DeadLetter<Tracked, String>| letter.input), letters);
                let output = g.node(format!("{name}.rejoined"), map(|t: Tracked| t), [out, letters]);
                Stream { output, counts: streams[s].counts.clone(), merged: streams[s].merged, readers: 0 }
            }
        };
        streams.push(stream);
    }
    if let Some(fault) = &case.fault {
        let s = fault.output % streams.len();
        streams[s].readers += 1;
        let sabotage = Sabotage { at: fault.at, seen: 0, kind: fault.kind, ledger: ledger.clone(), ctx: None };
        let output = g.node("sabotage", sabotage, &streams[s].output);
        let (counts, merged) = (streams[s].counts.clone(), streams[s].merged);
        streams.push(Stream { output, counts, merged, readers: 0 });
    }
    let mut readers: Vec<(usize, SinkKind)> = Vec::new();
    for (i, stream) in streams.iter().enumerate() {
        if stream.readers == 0 {
            readers.push((i, case.sink_kinds[i % case.sink_kinds.len()]));
        }
    }
    for &(s, kind) in &case.extra_sinks {
        readers.push((s % streams.len(), kind));
    }
    let mut sinks = Vec::new();
    for (id, (s, kind)) in readers.into_iter().enumerate() {
        let recorder = Recorder { id, kind, ledger: ledger.clone(), kept: Vec::new(), held: Vec::new() };
        if let SinkKind::HoldingBehindPolicy = kind {
            g.sink(format!("sink{id}"), recorder.skip_errors(), &streams[s].output);
        } else {
            g.sink(format!("sink{id}"), recorder, &streams[s].output);
        }
        for (o, count) in streams[s].counts.iter().enumerate() {
            terminal[o] += count;
        }
        sinks.push(streams[s].counts.clone());
    }
    Built { topology: g.build().expect("a valid random graph"), sinks, expected_terminal: terminal }
}

// ---------------------------------------------------------------------------
// Running and checking a case.

/// What a run ended with.
#[derive(Debug)]
enum Ended {
    Ok,
    Failed(Error),
    Cancelled,
    Hung,
}

async fn run_case(case: &Case, topology: Topology, bound: Duration) -> Ended {
    let work = async move {
        match case.ending {
            Ending::Complete => topology.run().await.map_or_else(Ended::Failed, |()| Ended::Ok),
            Ending::Cancel { after_ms } => tokio::select! {
                result = topology.run() => result.map_or_else(Ended::Failed, |()| Ended::Ok),
                () = tokio::time::sleep(Duration::from_millis(after_ms)) => Ended::Cancelled,
            },
            Ending::Shutdown { after_ms, deadline_ms } => {
                let running = topology.start();
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                running.shutdown(Duration::from_millis(deadline_ms)).await.map_or_else(Ended::Failed, |()| Ended::Ok)
            }
        }
    };
    tokio::time::timeout(bound, work).await.unwrap_or(Ended::Hung)
}

/// Runs one case on a fresh runtime and checks (a) to (e).
fn check(case: &Case, threads: usize) -> Result<Ended, TestCaseError> {
    let origins = (case.items[0] + case.items[1]) as usize;
    let ledger = Arc::new(Ledger::new(origins));
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
    .expect("runtime");
    let built = runtime.block_on(async { build(case, &ledger) });
    *ledger.expected_terminal.lock().expect("not poisoned") = built.expected_terminal.clone();
    // Paused time jumps to the bound at once if the pipeline hangs.
    let bound = if threads == 1 { Duration::from_secs(3_600) } else { Duration::from_secs(60) };
    let ended = runtime.block_on(run_case(case, built.topology, bound));
    // Every task, and everything they hold, goes with the runtime.
    drop(runtime);

    let violations = ledger.violations.lock().expect("not poisoned").clone();
    prop_assert!(violations.is_empty(), "(a/c) {} violations, first: {:?}", violations.len(), violations.first());
    prop_assert!(!matches!(ended, Ended::Hung), "(d) the run did not end within {bound:?}");
    let settled = ledger.settled.lock().expect("not poisoned").clone();
    let guards = ledger.guards.load(Ordering::SeqCst);
    prop_assert_eq!(settled.len() as u64, guards, "(d) every guard is settled once the runtime is gone");
    let fired = ledger.fault_fired.load(Ordering::SeqCst);
    match &ended {
        Ended::Ok => {
            prop_assert!(!fired, "(e) Ok although an injected failure fired");
            // Nothing stuck: every guard of a successful run is done, but
            // for a batch a graceful shutdown cut short (the source was
            // stopped between `begin_batch` and `end_batch`).
            let completed = ledger.completed.lock().expect("not poisoned");
            let shutdown = matches!(case.ending, Ending::Shutdown { .. });
            for (batch, outcome) in &settled {
                let cut_short = shutdown && !completed.contains(batch);
                prop_assert!(
                    *outcome == AckOutcome::Done || cut_short,
                    "nothing stuck: batch {} of a successful run was {:?}",
                    batch,
                    outcome
                );
            }
            let arrivals = ledger.arrivals.lock().expect("not poisoned");
            for (sink, expected) in built.sinks.iter().enumerate() {
                for (o, &count) in expected.iter().enumerate() {
                    let emitted = ledger.emitted[o].load(Ordering::SeqCst);
                    let want = if emitted { count } else { 0 };
                    let got = arrivals.get(&(sink, o as Origin)).copied().unwrap_or(0);
                    prop_assert_eq!(got, want, "(b) sink{} received item {} {} times", sink, o, got);
                }
            }
            if matches!(case.ending, Ending::Complete) {
                prop_assert!(ledger.emitted.iter().all(|e| e.load(Ordering::SeqCst)), "a complete run emits all");
            }
        }
        Ended::Failed(Error::ShutdownTimedOut { .. }) => {
            prop_assert!(matches!(case.ending, Ending::Shutdown { .. }), "a deadline only in a shutdown");
        }
        Ended::Failed(error) => {
            prop_assert!(fired, "failed without an injected failure: {error}");
        }
        Ended::Cancelled | Ended::Hung => {}
    }
    Ok(ended)
}

fn cases_from_env(default: u32) -> u32 {
    std::env::var("NANOSTREAM_RANDOM_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn seed_from_env() -> u64 {
    std::env::var("NANOSTREAM_RANDOM_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        nanos.as_nanos() as u64
    })
}

/// Runs `cases` random cases on `threads` worker threads, reproducibly from
/// the printed seed, and prints what ran.
fn suite(name: &str, threads: usize, default_cases: u32) {
    // Injected panics are expected; keep the output for real ones.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload().downcast_ref::<&str>().copied().unwrap_or_default();
        if !message.starts_with("injected") {
            previous(info);
        }
    }));
    let cases = cases_from_env(default_cases);
    let seed = seed_from_env();
    println!("{name}: {cases} cases, NANOSTREAM_RANDOM_SEED={seed} NANOSTREAM_RANDOM_CASES={cases}");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 2_000, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let tally: Mutex<HashMap<String, u64>> = Mutex::default();
    let result = runner.run(&case(), |case| {
        let ended = check(&case, threads)?;
        let kind = match ended {
            Ended::Ok => "ok",
            Ended::Failed(Error::ShutdownTimedOut { .. }) => "shutdown deadline passed",
            Ended::Failed(_) => "failed (injected)",
            Ended::Cancelled => "cancelled",
            Ended::Hung => "hung",
        };
        *tally.lock().expect("not poisoned").entry(kind.to_owned()).or_default() += 1;
        Ok(())
    });
    println!("{name}: outcomes {:?}", tally.lock().expect("not poisoned"));
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, case)) => {
            panic!("{name} failed (NANOSTREAM_RANDOM_SEED={seed}): {reason}\nminimal case: {case:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("{name} aborted (NANOSTREAM_RANDOM_SEED={seed}): {reason}"),
    }
}

/// Deterministic: one thread, paused time, so a seed replays exactly.
#[test]
fn random_pipelines_on_one_thread_lose_nothing_and_never_stick() {
    suite("one thread", 1, 300);
}

/// Real concurrency on two worker threads and real time.
#[test]
fn random_pipelines_on_two_threads_lose_nothing_and_never_stick() {
    suite("two threads", 2, 60);
}
