//! Processing an item whose node future completes at once does not allocate:
//! allocations scale with the number of chunks, not of items.
//!
//! dhat's counting allocator is this test binary's global allocator, so the
//! count covers everything the runtime does.

use nanostream::prelude::*;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Takes the synchronous fast path: its body never awaits.
#[node]
async fn triple(x: u64) -> u64 {
    x * 3 + 1
}

/// Takes the asynchronous path (it awaits), but the future is ready at once.
#[node]
async fn keep_even(x: u64) -> Option<u64> {
    std::future::ready(()).await;
    x.is_multiple_of(2).then_some(x)
}

#[test]
fn per_item_processing_does_not_allocate() {
    const N: u64 = 1_000_000;
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");

    let before = dhat::HeapStats::get().total_blocks;
    let total = rt.block_on(async {
        let mut g = Topology::builder();
        let nums = g.source("numbers", from_iter(0..N));
        let tripled = g.node("triple", triple(), nums);
        let even = g.node("keep_even", keep_even(), tripled);
        let (sum, total) = fold(0u64, |a, x: u64| a + x);
        g.sink("sum", sum, even);
        g.build().expect("valid").run().await.expect("runs");
        total.await.expect("sum")
    });
    let allocations = dhat::HeapStats::get().total_blocks - before;

    let k = N / 2;
    assert_eq!(total, 3 * k * (k - 1) + 4 * k);
    // About 1,000 chunks cross each of the three edges. Per-item allocation
    // would mean at least a million allocations.
    let chunks = N / nanostream::topology::DEFAULT_CHUNK_SIZE as u64;
    println!("{allocations} allocations for {N} items ({chunks} chunks per edge)");
    assert!(allocations < 4 * chunks + 200, "{allocations} allocations for {N} items");
}
