//! Every decoder survives hostile bytes: random payloads, and valid ones
//! mutated (bytes flipped, cut short, a huge length prefix spliced in),
//! decode to a value or a decode error, never a panic or an abort; valid
//! payloads round-trip.
//!
//! `NANOSTREAM_FUZZ_CASES` sets the cases per strategy (each case goes
//! through every decoder); `NANOSTREAM_RANDOM_SEED` replays a run; the seed
//! is printed.

use std::collections::BTreeMap;

use nanostream_kafka::{Bincode, Decoder, Json, Raw, Utf8};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    lines: Vec<(String, u32)>,
    note: Option<String>,
    tags: BTreeMap<String, i64>,
    raw: Vec<u8>,
}

fn order() -> impl Strategy<Value = Order> {
    (
        any::<u64>(),
        ".{0,12}",
        prop::collection::vec((".{0,8}", any::<u32>()), 0..4),
        prop::option::of(".{0,8}"),
        prop::collection::btree_map(".{0,6}", any::<i64>(), 0..3),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(id, customer, lines, note, tags, raw)| Order { id, customer, lines, note, tags, raw })
}

/// How a valid payload is damaged.
#[derive(Debug, Clone)]
enum Damage {
    Flip(usize, u8),
    Cut(usize),
    /// A varint length prefix claiming `claim` bytes, spliced in.
    Claim(usize, u64),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Damage::Flip(at, b)),
        any::<usize>().prop_map(Damage::Cut),
        (any::<usize>(), prop_oneof![Just(u64::MAX), Just(1u64 << 40), Just(1u64 << 32), any::<u64>()])
            .prop_map(|(at, n)| Damage::Claim(at, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, damage: &[Damage]) -> Vec<u8> {
    for d in damage {
        let len = bytes.len().max(1);
        match *d {
            Damage::Flip(at, b) => {
                if !bytes.is_empty() {
                    bytes[at % len] = b;
                }
            }
            Damage::Cut(at) => bytes.truncate(at % len),
            Damage::Claim(at, n) => {
                let at = at % len.min(bytes.len() + 1).max(1);
                let mut claim = vec![253u8];
                claim.extend_from_slice(&n.to_le_bytes());
                bytes.splice(at.min(bytes.len())..at.min(bytes.len()), claim);
            }
        }
    }
    bytes
}

/// Runs every decoder on `bytes`: each returns, Ok or Err.
fn decode_all(bytes: &[u8]) {
    let _ = Decoder::<serde_json::Value>::decode(&Json, bytes);
    let _ = Decoder::<Order>::decode(&Json, bytes);
    let _ = Decoder::<Order>::decode(&Bincode, bytes);
    let _ = Decoder::<Vec<String>>::decode(&Bincode, bytes);
    let _ = Decoder::<String>::decode(&Bincode, bytes);
    let _ = Decoder::<(u8, Option<Vec<u64>>)>::decode(&Bincode, bytes);
    let _ = Decoder::<String>::decode(&Utf8, bytes);
    assert_eq!(Decoder::<Vec<u8>>::decode(&Raw, bytes).ok().as_deref(), Some(bytes));
}

fn run<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let cases = std::env::var("NANOSTREAM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let seed: u64 = std::env::var("NANOSTREAM_RANDOM_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
    });
    println!("{name}: {cases} inputs, NANOSTREAM_RANDOM_SEED={seed} NANOSTREAM_FUZZ_CASES={cases}");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    match runner.run(&strategy, test) {
        Ok(()) => {}
        Err(TestError::Fail(reason, input)) => {
            panic!("{name} failed (NANOSTREAM_RANDOM_SEED={seed}): {reason}\nminimal input: {input:?}")
        }
        Err(TestError::Abort(reason)) => panic!("{name} aborted (NANOSTREAM_RANDOM_SEED={seed}): {reason}"),
    }
}

#[test]
fn random_bytes_decode_or_fail_cleanly_in_every_decoder() {
    run("random bytes", prop::collection::vec(any::<u8>(), 0..512), |bytes| {
        decode_all(&bytes);
        Ok(())
    });
}

#[test]
fn damaged_valid_payloads_decode_or_fail_cleanly_and_intact_ones_round_trip() {
    let strategy = (order(), any::<bool>(), prop::collection::vec(damage(), 0..4));
    run("damaged payloads", strategy, |(order, json, damage)| {
        let bytes = if json {
            serde_json::to_vec(&order).expect("encodes")
        } else {
            bincode::serde::encode_to_vec(&order, bincode::config::standard()).expect("encodes")
        };
        if damage.is_empty() {
            let decoded: Order = if json { Json.decode(&bytes) } else { Bincode.decode(&bytes) }.expect("round trip");
            prop_assert_eq!(decoded, order);
        }
        decode_all(&apply(bytes, &damage));
        Ok(())
    });
}
