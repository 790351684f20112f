//! Checkpoint storage: a checkpoint saved is the one loaded, in memory and
//! in the embedded file store (also after the store is reopened, as after a
//! restart); a node's state restores only into the same type and version,
//! and a changed one is a typed error naming both; damaged bytes are errors,
//! never garbage or a panic.

use std::collections::BTreeMap;

use nanostream::checkpoint::{
    Checkpoint, CheckpointStore, LocalStore, MemoryStore, StateError, StoreError, decode_state, encode_state,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Totals {
    per_key: BTreeMap<String, (u64, i64)>,
    watermark: i64,
}

/// The same state after a field was added: an old checkpoint must not
/// restore into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TotalsWithMax {
    per_key: BTreeMap<String, (u64, i64, i64)>,
    watermark: i64,
}

fn totals() -> Totals {
    let per_key = (0..50).map(|i| (format!("key-{i}"), (i, -(i as i64) * 3))).collect();
    Totals { per_key, watermark: 1_796_000_000_000 }
}

fn checkpoint(id: u64) -> Checkpoint {
    let mut checkpoint = Checkpoint::new(id);
    checkpoint.parts.insert("totals".into(), encode_state(&totals(), 1).expect("encodes"));
    checkpoint.parts.insert("consume".into(), b"partition 0 at offset 1234".to_vec());
    checkpoint
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "nanostream-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

#[test]
fn a_state_restores_into_the_same_type_and_version() {
    let bytes = encode_state(&totals(), 3).expect("encodes");
    let back: Totals = decode_state("totals", &bytes, 3).expect("decodes");
    assert_eq!(back, totals());
}

#[test]
fn a_changed_state_type_is_a_typed_error_naming_both_types() {
    let bytes = encode_state(&totals(), 1).expect("encodes");
    let error = decode_state::<TotalsWithMax>("totals", &bytes, 1).expect_err("another type");
    match &error {
        StateError::Changed { node, stored_type, expected_type, .. } => {
            assert_eq!(node, "totals");
            assert!(stored_type.ends_with("Totals"), "{stored_type}");
            assert!(expected_type.ends_with("TotalsWithMax"), "{expected_type}");
        }
        other => panic!("expected Changed, got {other:?}"),
    }
    let shown = error.to_string();
    assert!(shown.contains("node `totals`") && shown.contains("TotalsWithMax"), "{shown}");
}

#[test]
fn a_changed_version_is_a_typed_error() {
    let bytes = encode_state(&totals(), 1).expect("encodes");
    let error = decode_state::<Totals>("totals", &bytes, 2).expect_err("another version");
    assert!(matches!(error, StateError::Changed { stored_version: 1, expected_version: 2, .. }), "{error:?}");
}

#[test]
fn a_checkpoint_survives_encoding() {
    let checkpoint = checkpoint(42);
    assert_eq!(Checkpoint::decode("scope", &checkpoint.encode()).expect("decodes"), checkpoint);
    assert_eq!(Checkpoint::decode("scope", &Checkpoint::new(0).encode()).expect("decodes"), Checkpoint::new(0));
}

#[tokio::test]
async fn the_memory_store_keeps_the_latest_checkpoint_per_scope() {
    let store = MemoryStore::new();
    assert_eq!(store.load("orders/0").await.expect("loads"), None);
    store.save("orders/0", &checkpoint(1)).await.expect("saves");
    store.save("orders/0", &checkpoint(2)).await.expect("saves");
    store.save("orders/1", &checkpoint(7)).await.expect("saves");
    assert_eq!(store.load("orders/0").await.expect("loads").map(|c| c.id), Some(2));
    assert_eq!(store.load("orders/1").await.expect("loads").map(|c| c.id), Some(7));
}

#[tokio::test]
async fn the_local_store_keeps_checkpoints_across_a_reopen() {
    let dir = temp_dir("local-store");
    let path = dir.join("checkpoints.redb");
    {
        let store = LocalStore::open(&path).expect("opens");
        assert_eq!(store.load("orders/0").await.expect("loads"), None, "an empty store");
        store.save("orders/0", &checkpoint(1)).await.expect("saves");
        store.save("orders/0", &checkpoint(2)).await.expect("saves");
        store.save("orders/2", &checkpoint(9)).await.expect("saves");
    }
    // A new process opens the same file.
    let store = LocalStore::open(&path).expect("reopens");
    let loaded = store.load("orders/0").await.expect("loads").expect("a checkpoint");
    assert_eq!(loaded, checkpoint(2));
    let state: Totals = decode_state("totals", &loaded.parts["totals"], 1).expect("restores");
    assert_eq!(state, totals());
    assert_eq!(store.load("orders/2").await.expect("loads").map(|c| c.id), Some(9));
    assert_eq!(store.load("orders/1").await.expect("loads"), None);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_file_that_is_not_a_store_is_an_error_not_a_panic() {
    let dir = temp_dir("not-a-store");
    let path = dir.join("checkpoints.redb");
    std::fs::write(&path, b"this is not a database file at all, just some text").expect("writes");
    let error = LocalStore::open(&path).expect_err("not a store");
    assert!(matches!(error, StoreError::Io(_)), "{error:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

proptest! {
    /// Any bytes, decoded as a checkpoint or as a state, give a value or an
    /// error: never a panic. A damaged encoding (one byte changed) is
    /// always an error: both carry a CRC-32.
    #[test]
    fn damaged_bytes_are_errors_never_garbage(
        noise in proptest::collection::vec(any::<u8>(), 0..256),
        flip in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let _ = Checkpoint::decode("scope", &noise);
        let _ = decode_state::<Totals>("totals", &noise, 1);

        let good = checkpoint(5).encode();
        let truncated = &good[..cut.index(good.len())];
        prop_assert!(Checkpoint::decode("scope", truncated).is_err(), "a cut checkpoint decoded");

        let mut flipped = good.clone();
        let at = flip.index(flipped.len());
        flipped[at] ^= 0x5a;
        prop_assert!(Checkpoint::decode("scope", &flipped).is_err(), "a damaged checkpoint decoded");

        let state = encode_state(&totals(), 1).expect("encodes");
        let mut damaged = state.clone();
        let at = flip.index(damaged.len());
        damaged[at] ^= 0x5a;
        prop_assert!(decode_state::<Totals>("totals", &damaged, 1).is_err(), "a damaged state decoded");
    }
}
