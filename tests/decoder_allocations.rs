//! Hostile payloads cannot make a decoder allocate far beyond their size:
//! a bincode length prefix claiming gigabytes is a decode error, not an
//! abort. dhat's counting allocator is this binary's global allocator, and
//! its one test measures the peak heap while decoding.

use std::collections::HashMap;

use nanostream_kafka::{Bincode, Decoder, Json};
use serde::{Deserialize, Serialize};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Order {
    id: u64,
    customer: String,
    lines: Vec<(String, u32)>,
    tags: HashMap<String, i64>,
    raw: Vec<u8>,
}

/// bincode's varint for `n` as a u64 (marker 253, then 8 bytes).
fn claim(n: u64) -> Vec<u8> {
    let mut bytes = vec![253u8];
    bytes.extend_from_slice(&n.to_le_bytes());
    bytes
}

/// The peak heap while running `f`, beyond what was live before.
fn peak_during<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = dhat::HeapStats::get();
    // dhat keeps a running maximum: start from what is live now.
    let base = before.curr_bytes as u64;
    let result = f();
    let after = dhat::HeapStats::get();
    (result, (after.max_bytes as u64).saturating_sub(base))
}

#[test]
fn length_prefixes_claiming_gigabytes_are_decode_errors_within_a_bounded_heap() {
    let _profiler = dhat::Profiler::builder().testing().build();
    const BOUND: u64 = 4 << 20;
    let gigabytes = 1u64 << 40;
    let mut string_field = 7u64.to_le_bytes()[..1].to_vec();
    string_field.extend(claim(gigabytes));
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("a string", claim(gigabytes)),
        ("a string, at u64::MAX", claim(u64::MAX)),
        ("a field of a struct", string_field),
        ("a vector", [claim(gigabytes), vec![1, 2, 3]].concat()),
        ("a map", [claim(gigabytes), vec![1]].concat()),
    ];
    for (what, bytes) in &hostile {
        let (results, peak) = peak_during(|| {
            [
                Decoder::<String>::decode(&Bincode, bytes).is_err(),
                Decoder::<Vec<u8>>::decode(&Bincode, bytes).is_err(),
                Decoder::<Vec<String>>::decode(&Bincode, bytes).is_err(),
                Decoder::<HashMap<u64, String>>::decode(&Bincode, bytes).is_err(),
                Decoder::<Order>::decode(&Bincode, bytes).is_err(),
                Decoder::<Order>::decode(&Json, bytes).is_err(),
            ]
        });
        assert!(results.iter().all(|failed| *failed), "{what}: every decoder refuses it");
        assert!(peak < BOUND, "{what}: {peak} bytes allocated for a {}-byte payload", bytes.len());
        println!("{what}: {} bytes, peak heap while decoding {peak} bytes", bytes.len());
    }

    // A valid large value still decodes: 5 MB of text.
    let big = "x".repeat(5 << 20);
    let bytes = bincode::serde::encode_to_vec(&big, bincode::config::standard()).expect("encodes");
    let decoded: String = Bincode.decode(&bytes).expect("a valid value decodes");
    assert_eq!(decoded.len(), big.len());
}
