//! Throughput of nanostream against hand-written Tokio tasks and channels.
//!
//! Workload W1: `source 0..N -> map x*3+1 -> filter even -> sink sum`.
//! Workload W1s: the same with `String` items: `i.to_string() -> parse ->
//! x*3+1 -> keep even -> sum`, so that every item is an allocation made on
//! one side and freed on the other.
//!
//! Each is run, alternating over several rounds, as:
//!
//! - nanostream with `#[node]` functions, on a 2-worker runtime, one pipeline
//!   per worker: each copy's source generates its own share of `0..N` (what
//!   a Kafka topic with several partitions gives), and its chain runs fused
//!   in one task; the sums are added up;
//! - the same with one pipeline, on the 2-worker runtime and on a
//!   current-thread runtime;
//! - hand-written, 2 workers: one task per stage, `tokio::sync::mpsc`
//!   carrying one item per send (capacity 1024);
//! - hand-written batched, 2 workers: the same with `Vec` chunks of 1024.
//!
//! Then, nanostream only, a 16-node chain and a 1-to-8 fan-out, to show how
//! the cost grows with the graph. Every run's result is checked against its
//! closed form. The last line is machine-readable:
//!
//! `ratio_vs_tokio_per_item=<a> ratio_vs_tokio_batched=<b> w1s_2w_over_1w=<c> w1s_vs_tokio_batched_2w=<d>`
//!
//! where a and b are W1 nanostream (2 pipelines, 2 workers) over the
//! hand-written per-item and batched chains, c is W1s nanostream on 2
//! workers (2 pipelines) over W1s nanostream on a current-thread runtime,
//! and d is W1s nanostream on 2 workers over the hand-written batched W1s.
//!
//! `cargo run --release --example throughput [-- --items N --rounds R --only NAME]`

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

#[node]
async fn parse(s: String) -> u64 {
    s.parse().unwrap_or(0)
}

/// The share of `0..n` that copy `copy` of `copies` generates.
fn share(n: u64, copy: u64, copies: u64) -> std::ops::Range<u64> {
    (n * copy / copies)..(n * (copy + 1) / copies)
}

/// Sum of `3x + 1` over the `x < n` for which it is even (the odd `x`).
fn w1_expected(n: u64) -> u64 {
    let k = n / 2;
    3 * k * k.saturating_sub(1) + 4 * k
}

/// W1 as `copies` pipelines, each fed its own share of `0..n`.
async fn w1_nanostream(n: u64, copies: u64) -> u64 {
    let mut g = Topology::builder();
    let mut totals = Vec::new();
    for copy in 0..copies {
        let nums = g.source(format!("numbers_{copy}"), from_iter(share(n, copy, copies)));
        let tripled = g.node(format!("triple_{copy}"), triple_plus_one(), nums);
        let even = g.node(format!("keep_even_{copy}"), keep_even(), tripled);
        let (sum, total) = fold(0u64, |a, x: u64| a + x);
        g.sink(format!("sum_{copy}"), sum, even);
        totals.push(total);
    }
    g.build().expect("valid topology").run().await.expect("runs");
    let mut sum = 0;
    for total in totals {
        sum += total.await.expect("sum");
    }
    sum
}

/// W1s as `copies` pipelines, each fed its own share of `0..n`.
async fn w1s_nanostream(n: u64, copies: u64) -> u64 {
    let mut g = Topology::builder();
    let mut totals = Vec::new();
    for copy in 0..copies {
        let strings = g.source(format!("strings_{copy}"), from_iter(share(n, copy, copies).map(|i| i.to_string())));
        let nums = g.node(format!("parse_{copy}"), parse(), strings);
        let tripled = g.node(format!("triple_{copy}"), triple_plus_one(), nums);
        let even = g.node(format!("keep_even_{copy}"), keep_even(), tripled);
        let (sum, total) = fold(0u64, |a, x: u64| a + x);
        g.sink(format!("sum_{copy}"), sum, even);
        totals.push(total);
    }
    g.build().expect("valid topology").run().await.expect("runs");
    let mut sum = 0;
    for total in totals {
        sum += total.await.expect("sum");
    }
    sum
}

/// W1 as one plain loop, the floor for one core.
async fn w1_loop(n: u64) -> u64 {
    let mut sum = 0u64;
    for x in 0..std::hint::black_box(n) {
        let y = x * 3 + 1;
        if y.is_multiple_of(2) {
            sum += y;
        }
    }
    sum
}

/// W1s as one plain loop, the floor for one core.
async fn w1s_loop(n: u64) -> u64 {
    let mut sum = 0u64;
    for i in 0..std::hint::black_box(n) {
        let s = std::hint::black_box(i.to_string());
        let y = s.parse::<u64>().unwrap_or(0) * 3 + 1;
        if y.is_multiple_of(2) {
            sum += y;
        }
    }
    sum
}

async fn w1s_per_item(n: u64) -> u64 {
    let (tx0, mut rx0) = mpsc::channel::<String>(1024);
    let (tx1, mut rx1) = mpsc::channel::<u64>(1024);
    let (tx2, mut rx2) = mpsc::channel::<u64>(1024);
    let (tx3, mut rx3) = mpsc::channel::<u64>(1024);
    let source = tokio::spawn(async move {
        for i in 0..n {
            if tx0.send(i.to_string()).await.is_err() {
                break;
            }
        }
    });
    let parse = tokio::spawn(async move {
        while let Some(s) = rx0.recv().await {
            if tx1.send(s.parse().unwrap_or(0)).await.is_err() {
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
    let (a, b, c, d, sum) = tokio::join!(source, parse, map, filter, sink);
    a.and(b).and(c).and(d).expect("stage task");
    sum.expect("sink task")
}

async fn w1s_batched(n: u64) -> u64 {
    const CHUNK: u64 = 1024;
    const SLOTS: usize = 16;
    let (tx0, mut rx0) = mpsc::channel::<Vec<String>>(SLOTS);
    let (tx1, mut rx1) = mpsc::channel::<Vec<u64>>(SLOTS);
    let (tx2, mut rx2) = mpsc::channel::<Vec<u64>>(SLOTS);
    let (tx3, mut rx3) = mpsc::channel::<Vec<u64>>(SLOTS);
    let source = tokio::spawn(async move {
        let mut x = 0;
        while x < n {
            let end = (x + CHUNK).min(n);
            if tx0.send((x..end).map(|i| i.to_string()).collect()).await.is_err() {
                break;
            }
            x = end;
        }
    });
    let parse = tokio::spawn(async move {
        while let Some(chunk) = rx0.recv().await {
            let parsed = chunk.iter().map(|s| s.parse().unwrap_or(0)).collect();
            if tx1.send(parsed).await.is_err() {
                break;
            }
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
    let (a, b, c, d, sum) = tokio::join!(source, parse, map, filter, sink);
    a.and(b).and(c).and(d).expect("stage task");
    sum.expect("sink task")
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
    let mut parsed = Args { items: 100_000_000, rounds: 5, only: None };
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

/// Which runtime a case runs on.
#[derive(Clone, Copy, PartialEq)]
enum Runtime {
    TwoWorkers,
    CurrentThread,
}

/// One measured case.
struct Case {
    name: &'static str,
    items: u64,
    expected: u64,
    runtime: Runtime,
    run: fn(u64) -> futures::future::BoxFuture<'static, u64>,
}

fn main() {
    use futures::FutureExt;
    let Args { items: n, rounds, only } = args();
    // The per-item baselines are ~50x slower, the String workloads ~20x:
    // they get fewer items so a round takes similar time. Rates are per
    // second, so they compare directly.
    let n_per_item = (n / 10).max(1);
    let n_strings = (n / 10).max(1);
    let n_strings_per_item = (n / 40).max(1);
    let two =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let one = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");

    let cases = [
        Case {
            name: "W1 nanostream, 2 pipelines, 2 workers",
            items: n,
            expected: w1_expected(n),
            runtime: Runtime::TwoWorkers,
            run: |n| w1_nanostream(n, 2).boxed(),
        },
        Case {
            name: "W1 tokio mpsc per item, 2 workers",
            items: n_per_item,
            expected: w1_expected(n_per_item),
            runtime: Runtime::TwoWorkers,
            run: |n| w1_per_item(n).boxed(),
        },
        Case {
            name: "W1 tokio mpsc Vec<u64> x1024, 2 workers",
            items: n,
            expected: w1_expected(n),
            runtime: Runtime::TwoWorkers,
            run: |n| w1_batched(n).boxed(),
        },
        Case {
            name: "W1 nanostream, 1 pipeline, 2 workers",
            items: n,
            expected: w1_expected(n),
            runtime: Runtime::TwoWorkers,
            run: |n| w1_nanostream(n, 1).boxed(),
        },
        Case {
            name: "W1 nanostream, current thread",
            items: n,
            expected: w1_expected(n),
            runtime: Runtime::CurrentThread,
            run: |n| w1_nanostream(n, 1).boxed(),
        },
        Case {
            name: "W1s nanostream, 2 pipelines, 2 workers",
            items: n_strings,
            expected: w1_expected(n_strings),
            runtime: Runtime::TwoWorkers,
            run: |n| w1s_nanostream(n, 2).boxed(),
        },
        Case {
            name: "W1s nanostream, current thread",
            items: n_strings,
            expected: w1_expected(n_strings),
            runtime: Runtime::CurrentThread,
            run: |n| w1s_nanostream(n, 1).boxed(),
        },
        Case {
            name: "W1s tokio mpsc per item, 2 workers",
            items: n_strings_per_item,
            expected: w1_expected(n_strings_per_item),
            runtime: Runtime::TwoWorkers,
            run: |n| w1s_per_item(n).boxed(),
        },
        Case {
            name: "W1s tokio mpsc Vec<String> x1024, 2 workers",
            items: n_strings,
            expected: w1_expected(n_strings),
            runtime: Runtime::TwoWorkers,
            run: |n| w1s_batched(n).boxed(),
        },
        Case {
            name: "W1 plain loop, one thread (reference)",
            items: n,
            expected: w1_expected(n),
            runtime: Runtime::CurrentThread,
            run: |n| w1_loop(n).boxed(),
        },
        Case {
            name: "W1s plain loop, one thread (reference)",
            items: n_strings,
            expected: w1_expected(n_strings),
            runtime: Runtime::CurrentThread,
            run: |n| w1s_loop(n).boxed(),
        },
        Case {
            name: "chain of 16 nodes (nanostream, fused)",
            items: n,
            expected: (0..n).map(|x| x + 16).sum(),
            runtime: Runtime::TwoWorkers,
            run: |n| chain16(n).boxed(),
        },
        Case {
            name: "fan-out 1 -> 8 (nanostream)",
            items: n,
            expected: 8 * (n * n.saturating_sub(1) / 2),
            runtime: Runtime::TwoWorkers,
            run: |n| fan_out8(n).boxed(),
        },
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        for (i, case) in cases.iter().enumerate() {
            if only.as_ref().is_some_and(|only| !case.name.contains(only.as_str())) {
                continue;
            }
            let start = Instant::now();
            let run = (case.run)(case.items);
            let got = match case.runtime {
                Runtime::TwoWorkers => two.block_on(run),
                Runtime::CurrentThread => one.block_on(run),
            };
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(got, case.expected, "{}: wrong result", case.name);
            rates[i].push(case.items as f64 / secs);
            eprintln!("round {round}: {:<44} {:>8.1} M items/s", case.name, case.items as f64 / secs / 1e6);
        }
    }

    if only.is_some() {
        return;
    }
    let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
    println!("machine: {} logical CPUs", num_cpus());
    println!(
        "items per run: W1 {n} ({n_per_item} per-item baseline), W1s {n_strings} ({n_strings_per_item} per-item baseline); median of {rounds} rounds"
    );
    println!();
    println!("| workload | median items/s |");
    println!("|---|---:|");
    for (case, rate) in cases.iter().zip(&medians) {
        println!("| {} | {:.1} M |", case.name, rate / 1e6);
    }
    println!();
    println!(
        "ratio_vs_tokio_per_item={:.2} ratio_vs_tokio_batched={:.2} w1s_2w_over_1w={:.2} w1s_vs_tokio_batched_2w={:.2}",
        medians[0] / medians[1],
        medians[0] / medians[2],
        medians[5] / medians[6],
        medians[5] / medians[8],
    );
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
