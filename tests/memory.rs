//! Memory stays bounded when the sink is much slower than the source: the
//! number of items in flight never exceeds the documented bound of
//! `capacity + 2 × chunk` per edge.
//!
//! Peak RSS of this run is reported in the README; measure it with
//! `/usr/bin/time -v cargo test --release -p nanostream-tests --test memory`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nanostream::Sink;
use nanostream::prelude::*;

/// A sink that yields to the scheduler every few items, so it is far slower
/// than the source, and records the most items ever in flight.
struct SlowSink {
    pulled: Arc<AtomicUsize>,
    consumed: usize,
    max_in_flight: Arc<AtomicUsize>,
}

impl Sink for SlowSink {
    type In = u64;
    type Error = Infallible;

    async fn consume(&mut self, _item: u64) -> Result<(), Infallible> {
        if self.consumed.is_multiple_of(16) {
            tokio::task::yield_now().await;
        }
        // Items pulled from the source iterator and not yet fully consumed:
        // everything in buffers, queues and in hand.
        let in_flight = self.pulled.load(Ordering::SeqCst) - self.consumed;
        self.max_in_flight.fetch_max(in_flight, Ordering::Relaxed);
        self.consumed += 1;
        Ok(())
    }
}

/// Runs `0..n -> triple -> plus_one -> slow sink`, fused or as four tasks
/// joined by queues; returns the most items ever in flight.
async fn run_chain(n: usize, fusion: bool) -> usize {
    let pulled = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let mut g = Topology::builder();
    g.fusion(fusion);
    let counter = pulled.clone();
    let nums = g.source(
        "numbers",
        from_iter((0..n as u64).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })),
    );
    let a = g.node("triple", map(|x: u64| x * 3), nums);
    let b = g.node("plus_one", map(|x: u64| x + 1), a);
    g.sink("slow", SlowSink { pulled: pulled.clone(), consumed: 0, max_in_flight: max_in_flight.clone() }, b);
    g.build().expect("valid topology").run().await.expect("runs");
    assert_eq!(pulled.load(Ordering::SeqCst), n);
    max_in_flight.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_in_flight_never_exceed_the_documented_bound() {
    const N: usize = 10_000_000;
    const EDGES: usize = 3;
    // Three queues between four tasks: the bound is per edge.
    let max = run_chain(N, false).await;
    let capacity = nanostream::topology::DEFAULT_CAPACITY;
    let chunk = nanostream::topology::DEFAULT_CHUNK_SIZE.min(capacity);
    let bound = EDGES * (capacity + 2 * chunk);
    println!("max in flight: {max} items (bound {bound}) over {N} items");
    assert!(max <= bound, "{max} items in flight exceeds the bound {bound}");
    // The sink really was the bottleneck: the graph filled up.
    assert!(max > capacity, "the sink was not slow enough to fill the edges ({max})");
}

/// The same chain fused into one task holds one chunk, in the sink's hands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fused_chain_holds_at_most_one_chunk() {
    const N: usize = 1_000_000;
    let max = run_chain(N, true).await;
    let chunk = nanostream::topology::DEFAULT_CHUNK_SIZE;
    println!("max in flight: {max} items (one chunk: {chunk}) over {N} items");
    assert_eq!(max, chunk, "a fused chain holds exactly the chunk being consumed");
}
