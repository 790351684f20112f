//! Throughput of nanostream against hand-written Tokio tasks and channels.
//!
//! Workload W1: `source 0..N -> map x*3+1 -> filter even -> sink sum`, run
//! three ways on the same 2-worker runtime, alternating over several rounds:
//!
//! - nanostream, with `#[node]` functions;
//! - hand-written: one task per stage, `tokio::sync::mpsc` carrying one `u64`
//!   per send (capacity 1024);
//! - hand-written batched: the same with `Vec<u64>` chunks of 1024.
//!
//! Then, nanostream only, a 16-node chain and a 1-to-8 fan-out, to show how
//! the cost grows with the graph. Every run's result is checked against its
//! closed form. The last line is machine-readable.
//!
//! `cargo run --release --example throughput [-- --items N --rounds R]`

use std::time::Instant;

use nanostream::prelude::*;
use tokio::sync::mpsc;

#[node]
async fn triple_plus_one(x: u64) -> u64 {
    x * 3 + 1
}

#[node]
async fn keep_even(x: u64) -> Option<u64> {
    x.is_multiple_of(2).then_some(x)
}

#[node]
async fn plus_one(x: u64) -> u64 {
    x + 1
}

/// Sum of `3x + 1` over the `x < n` for which it is even (the odd `x`).
fn w1_expected(n: u64) -> u64 {
    let k = n / 2;
    3 * k * k.saturating_sub(1) + 4 * k
}

async fn w1_nanostream(n: u64) -> u64 {
    let mut g = Topology::builder();
    let nums = g.source("numbers", from_iter(0..n));
    let tripled = g.node("triple", triple_plus_one(), nums);
    let even = g.node("keep_even", keep_even(), tripled);
    let (sum, total) = fold(0u64, |a, x: u64| a + x);
    g.sink("sum", sum, even);
    g.build().expect("valid topology").run().await.expect("runs");
    total.await.expect("sum")
}

async fn w1_per_item(n: u64) -> u64 {
    let (tx1, mut rx1) = mpsc::channel::<u64>(1024);
    let (tx2, mut rx2) = mpsc::channel::<u64>(1024);
    let (tx3, mut rx3) = mpsc::channel::<u64>(1024);
    let source = tokio::spawn(async move {
        for x in 0..n {
            if tx1.send(x).await.is_err() {
                break;
            }
        }
    });
    let map = tokio::spawn(async move {
        while let Some(x) = rx1.recv().await {
            if tx2.send(x * 3 + 1).await.is_err() {
                break;
            }
        }
    });
    let filter = tokio::spawn(async move {
        while let Some(x) = rx2.recv().await {
            if x % 2 == 0 && tx3.send(x).await.is_err() {
                break;
            }
        }
    });
    let sink = tokio::spawn(async move {
        let mut sum = 0u64;
        while let Some(x) = rx3.recv().await {
            sum += x;
        }
        sum
    });
    let (a, b, c, sum) = tokio::join!(source, map, filter, sink);
    a.and(b).and(c).expect("stage task");
    sum.expect("sink task")
}

async fn w1_batched(n: u64) -> u64 {
    const CHUNK: usize = 1024;
    const SLOTS: usize = 16;
    let (tx1, mut rx1) = mpsc::channel::<Vec<u64>>(SLOTS);
    let (tx2, mut rx2) = mpsc::channel::<Vec<u64>>(SLOTS);
    let (tx3, mut rx3) = mpsc::channel::<Vec<u64>>(SLOTS);
    let source = tokio::spawn(async move {
        let mut x = 0;
        while x < n {
            let end = (x + CHUNK as u64).min(n);
            if tx1.send((x..end).collect()).await.is_err() {
                break;
            }
            x = end;
        }
    });
    let map = tokio::spawn(async move {
        while let Some(mut chunk) = rx1.recv().await {
            for x in &mut chunk {
                *x = *x * 3 + 1;
            }
            if tx2.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let filter = tokio::spawn(async move {
        while let Some(mut chunk) = rx2.recv().await {
            chunk.retain(|x| x % 2 == 0);
            if tx3.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let sink = tokio::spawn(async move {
        let mut sum = 0u64;
        while let Some(chunk) = rx3.recv().await {
            sum += chunk.iter().sum::<u64>();
        }
        sum
    });
    let (a, b, c, sum) = tokio::join!(source, map, filter, sink);
    a.and(b).and(c).expect("stage task");
    sum.expect("sink task")
}

async fn chain16(n: u64) -> u64 {
    let mut g = Topology::builder();
    let mut out = g.source("numbers", from_iter(0..n));
    for i in 0..16 {
        out = g.node(format!("plus_one_{i}"), plus_one(), out);
    }
    let (sum, total) = fold(0u64, |a, x: u64| a + x);
    g.sink("sum", sum, out);
    g.build().expect("valid topology").run().await.expect("runs");
    total.await.expect("sum")
}

async fn fan_out8(n: u64) -> u64 {
    let mut g = Topology::builder();
    let nums = g.source("numbers", from_iter(0..n));
    let mut totals = Vec::new();
    for i in 0..8 {
        let (sum, total) = fold(0u64, |a, x: u64| a + x);
        g.sink(format!("sum_{i}"), sum, &nums);
        totals.push(total);
    }
    g.build().expect("valid topology").run().await.expect("runs");
    let mut all = 0;
    for total in totals {
        all += total.await.expect("sum");
    }
    all
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

struct Args {
    items: u64,
    rounds: usize,
    /// Run only the case whose name contains this (for profiling).
    only: Option<String>,
}

fn args() -> Args {
    let mut parsed = Args { items: 20_000_000, rounds: 5, only: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--items" => parsed.items = value.parse().expect("--items takes a number"),
            "--rounds" => parsed.rounds = value.parse().expect("--rounds takes a number"),
            "--only" => parsed.only = Some(value),
            other => panic!("unknown flag {other}; expected --items N, --rounds R or --only NAME"),
        }
    }
    parsed
}

fn main() {
    let Args { items: n, rounds, only } = args();
    // The per-item baseline is ~50x slower: give it fewer items so a round
    // takes similar time. Rates are per second, so they compare directly.
    let n_per_item = (n / 10).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");

    let cases: [(&str, u64, u64); 5] = [
        ("W1 nanostream", n, w1_expected(n)),
        ("W1 tokio mpsc per item", n_per_item, w1_expected(n_per_item)),
        ("W1 tokio mpsc Vec<u64> x1024", n, w1_expected(n)),
        ("chain of 16 nodes (nanostream)", n, (0..n).map(|x| x + 16).sum()),
        ("fan-out 1 -> 8 (nanostream)", n, 8 * (n * n.saturating_sub(1) / 2)),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        for (i, &(name, items, expected)) in cases.iter().enumerate() {
            if only.as_ref().is_some_and(|only| !name.contains(only.as_str())) {
                continue;
            }
            let start = Instant::now();
            let got = rt.block_on(async {
                match i {
                    0 => w1_nanostream(items).await,
                    1 => w1_per_item(items).await,
                    2 => w1_batched(items).await,
                    3 => chain16(items).await,
                    _ => fan_out8(items).await,
                }
            });
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(got, expected, "{name}: wrong result");
            rates[i].push(items as f64 / secs);
            eprintln!("round {round}: {name:<32} {:>8.1} M items/s", items as f64 / secs / 1e6);
        }
    }

    if only.is_some() {
        return;
    }
    let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
    println!("machine: {} logical CPUs, tokio multi-thread runtime with 2 workers", num_cpus());
    println!("items per run: {n} ({n_per_item} for the per-item baseline); median of {rounds} rounds");
    println!();
    println!("| workload | median items/s |");
    println!("|---|---:|");
    for ((name, _, _), rate) in cases.iter().zip(&medians) {
        println!("| {name} | {:.1} M |", rate / 1e6);
    }
    println!();
    println!(
        "ratio_vs_tokio_per_item={:.2} ratio_vs_tokio_batched={:.2}",
        medians[0] / medians[1],
        medians[0] / medians[2]
    );
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
