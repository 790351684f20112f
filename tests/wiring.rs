//! Random wiring, valid or not, never panics: the builder returns a typed
//! `BuildError`, or a topology that runs to completion without an error
//! (within 30 s).
//!
//! Each case is a random program of builder calls over a pool of outputs:
//! sources, nodes and sinks reading any earlier outputs (by value or by
//! reference), splits (round robin, by key) read by any number of nodes,
//! `parallel` with zero or more workers, placeholders connected later (or
//! never, or into a cycle), empty and repeated names, zero capacities and
//! chunk sizes, outputs left unread. `NANOSTREAM_RANDOM_CASES` sets the
//! number of cases, `NANOSTREAM_RANDOM_SEED` replays a run; the seed is
//! printed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nanostream::error::BuildError;
use nanostream::prelude::*;
use nanostream::sinks::for_each_sync;
use nanostream::topology::Placeholder;
use nanostream::{Error, Output, TopologyBuilder};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// One builder call. Indices pick among the outputs made so far (modulo
/// their number); names come from a small set, so some repeat.
#[derive(Debug, Clone)]
enum Op {
    Source { name: u8, items: u8 },
    Node { name: u8, inputs: Vec<(usize, bool)>, capacity: Option<usize> },
    Sink { name: u8, inputs: Vec<(usize, bool)> },
    RoundRobin { input: usize, parts: usize },
    ByKey { input: usize, parts: usize },
    Parallel { name: u8, workers: usize, inputs: Vec<(usize, bool)> },
    Placeholder { name: u8 },
    Connect { placeholder: usize, inputs: Vec<(usize, bool)> },
}

fn inputs() -> impl Strategy<Value = Vec<(usize, bool)>> {
    prop_oneof![
        1 => Just(Vec::new()),
        8 => prop::collection::vec((any::<usize>(), any::<bool>()), 1..3),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..200, 0u8..20).prop_map(|(name, items)| Op::Source { name, items }),
        4 => (0u8..200, inputs(), prop::option::of(0usize..3)).prop_map(|(name, inputs, capacity)| Op::Node { name, inputs, capacity }),
        3 => (0u8..200, inputs()).prop_map(|(name, inputs)| Op::Sink { name, inputs }),
        1 => (any::<usize>(), 0usize..3).prop_map(|(input, parts)| Op::RoundRobin { input, parts }),
        1 => (any::<usize>(), 0usize..3).prop_map(|(input, parts)| Op::ByKey { input, parts }),
        1 => (0u8..200, prop_oneof![1 => Just(0usize), 4 => 1usize..3], inputs())
            .prop_map(|(name, workers, inputs)| Op::Parallel { name, workers, inputs }),
        1 => (0u8..200).prop_map(|name| Op::Placeholder { name }),
        1 => (any::<usize>(), inputs()).prop_map(|(placeholder, inputs)| Op::Connect { placeholder, inputs }),
    ]
}

#[derive(Debug, Clone)]
struct Program {
    ops: Vec<Op>,
    chunk: usize,
    /// End with a sink reading every output still in the pool, so that
    /// more programs are valid.
    close: bool,
}

fn program() -> impl Strategy<Value = Program> {
    (
        // A source or two first, then anything.
        (prop::collection::vec((0u8..200, 0u8..20), 0..3), prop::collection::vec(op(), 0..12)).prop_map(
            |(sources, ops)| {
                sources.into_iter().map(|(name, items)| Op::Source { name, items }).chain(ops).collect::<Vec<_>>()
            },
        ),
        prop_oneof![1 => Just(0usize), 3 => Just(1), 3 => Just(4), 3 => Just(1024)],
        prop::bool::weighted(0.8),
    )
        .prop_map(|(ops, chunk, close)| Program { ops, chunk, close })
}

/// A name from the small set; 0 is the empty name.
fn name(n: u8) -> String {
    if n == 0 { String::new() } else { format!("n{n}") }
}

/// Builds the program. The outputs are kept in a pool; one read by value
/// leaves the pool (a later reference to it reads another one).
fn build(program: &Program, consumed: &Arc<AtomicU64>) -> TopologyBuilder {
    let mut g = Topology::builder();
    g.chunk_size(program.chunk);
    let mut pool: Vec<Option<Output<u32>>> = Vec::new();
    let mut placeholders: Vec<Placeholder<u32>> = Vec::new();
    // Picks inputs: by value takes the output out of the pool, by reference
    // broadcasts it.
    fn pick(pool: &mut [Option<Output<u32>>], wanted: &[(usize, bool)]) -> (Vec<Output<u32>>, Vec<usize>) {
        let (mut owned, mut by_ref) = (Vec::new(), Vec::new());
        for &(i, by_value) in wanted {
            let live: Vec<usize> = (0..pool.len()).filter(|&k| pool[k].is_some()).collect();
            if live.is_empty() {
                break;
            }
            let k = live[i % live.len()];
            if by_value {
                owned.extend(pool[k].take());
            } else if !by_ref.contains(&k) {
                by_ref.push(k);
            }
        }
        (owned, by_ref)
    }
    /// Calls `wire` with the owned inputs, or with the references when
    /// nothing is read by value (one kind per call).
    macro_rules! with_inputs {
        ($owned:expr, $by_ref:expr, |$i:ident| $call:expr) => {{
            let (owned, by_ref) = ($owned, $by_ref);
            if !owned.is_empty() || by_ref.is_empty() {
                let $i = owned;
                $call
            } else {
                let $i: Vec<&Output<u32>> = by_ref.iter().filter_map(|&k: &usize| pool[k].as_ref()).collect();
                $call
            }
        }};
    }
    for op in &program.ops {
        match op {
            Op::Source { name: n, items } => {
                pool.push(Some(g.source(name(*n), from_iter(0..u32::from(*items)))));
            }
            Op::Node { name: n, inputs, capacity } => {
                let (owned, by_ref) = pick(&mut pool, inputs);
                let out = match capacity {
                    Some(c) if !owned.is_empty() => {
                        let owned: Vec<_> = owned.into_iter().map(|o| o.with_capacity(*c)).collect();
                        g.node(name(*n), map(|x: u32| x), owned)
                    }
                    _ => with_inputs!(owned, by_ref, |i| g.node(name(*n), map(|x: u32| x), i)),
                };
                pool.push(Some(out));
            }
            Op::Sink { name: n, inputs } => {
                let (owned, by_ref) = pick(&mut pool, inputs);
                let consumed = consumed.clone();
                let sink = for_each_sync(move |_: u32| {
                    consumed.fetch_add(1, Ordering::Relaxed);
                });
                with_inputs!(owned, by_ref, |i| g.sink(name(*n), sink, i));
            }
            Op::RoundRobin { input, parts } | Op::ByKey { input, parts } => {
                let live: Vec<usize> = (0..pool.len()).filter(|&k| pool[k].is_some()).collect();
                if live.is_empty() {
                    continue;
                }
                let Some(out) = pool[live[input % live.len()]].take() else { continue };
                let split = match op {
                    Op::RoundRobin { .. } => g.round_robin(out, *parts),
                    _ => g.partition_by(out, *parts, |x: &u32| *x),
                };
                pool.extend(split.into_iter().map(Some));
            }
            Op::Parallel { name: n, workers, inputs } => {
                let (owned, by_ref) = pick(&mut pool, inputs);
                let out = with_inputs!(owned, by_ref, |i| g.parallel(name(*n), *workers, || map(|x: u32| x), i));
                pool.push(Some(out));
            }
            Op::Placeholder { name: n } => {
                let (placeholder, out) = g.placeholder::<u32>(name(*n));
                placeholders.push(placeholder);
                pool.push(Some(out));
            }
            Op::Connect { placeholder, inputs } => {
                if placeholders.is_empty() {
                    continue;
                }
                let (owned, by_ref) = pick(&mut pool, inputs);
                let target = &placeholders[placeholder % placeholders.len()];
                with_inputs!(owned, by_ref, |i| g.connect(target, i));
            }
        }
    }
    if program.close {
        let rest: Vec<Output<u32>> = pool.into_iter().flatten().collect();
        if !rest.is_empty() {
            let consumed = consumed.clone();
            let sink = for_each_sync(move |_: u32| {
                consumed.fetch_add(1, Ordering::Relaxed);
            });
            g.sink("closing", sink, rest);
        }
    }
    g
}

fn check(program: &Program) -> Result<String, TestCaseError> {
    let consumed = Arc::new(AtomicU64::new(0));
    let g = build(program, &consumed);
    let topology = match g.build() {
        Err(error) => {
            // A typed error with a message.
            prop_assert!(!error.to_string().is_empty());
            let _: &BuildError = &error;
            let kind = format!("{error:?}");
            return Ok(kind.split([' ', '{', '(']).next().unwrap_or_default().to_owned());
        }
        Ok(topology) => topology,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let ran: Result<Result<(), Error>, _> =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), topology.run()).await });
    match ran {
        Err(_) => prop_assert!(false, "a topology that built did not finish"),
        Ok(Err(error)) => prop_assert!(false, "a topology that built failed: {error}"),
        Ok(Ok(())) => {}
    }
    Ok("ran".to_owned())
}

#[test]
fn random_wiring_never_panics_and_either_fails_to_build_with_a_typed_error_or_runs() {
    let cases = std::env::var("NANOSTREAM_RANDOM_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let seed: u64 = std::env::var("NANOSTREAM_RANDOM_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
    });
    println!("wiring: {cases} cases, NANOSTREAM_RANDOM_SEED={seed} NANOSTREAM_RANDOM_CASES={cases}");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let tally = std::sync::Mutex::new(std::collections::BTreeMap::<String, u64>::new());
    let result = runner.run(&program(), |program| {
        let outcome = check(&program)?;
        *tally.lock().expect("not poisoned").entry(outcome).or_default() += 1;
        Ok(())
    });
    println!("wiring: outcomes {:?}", tally.lock().expect("not poisoned"));
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, program)) => {
            panic!("failed (NANOSTREAM_RANDOM_SEED={seed}): {reason}\nminimal program: {program:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("aborted (NANOSTREAM_RANDOM_SEED={seed}): {reason}"),
    }
}
