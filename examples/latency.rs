//! End-to-end latency at a low rate: one item every millisecond through
//! three nodes for five seconds.
//!
//! Each item carries the instant it was created; the sink records how long
//! it took to arrive. Chunked edges must not hold a lone item back waiting
//! for a chunk to fill, so latency stays at the cost of three task hand-offs.
//!
//! `cargo run --release --example latency [-- --seconds S]`

use std::time::{Duration, Instant};

use nanostream::prelude::*;

/// A reading taken by the source.
struct Reading {
    created: Instant,
    value: u64,
}

/// Emits one reading per millisecond for `seconds`.
#[node]
async fn ticker(seconds: &u64, out: &mut Emitter<Reading>) {
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + Duration::from_secs(*seconds);
    let mut value = 0;
    while Instant::now() < end {
        interval.tick().await;
        out.emit(Reading { created: Instant::now(), value }).await;
        value += 1;
    }
}

#[node]
async fn scale(r: Reading) -> Reading {
    Reading { value: r.value * 3, ..r }
}

#[node]
async fn offset(r: Reading) -> Reading {
    Reading { value: r.value + 1, ..r }
}

#[node]
async fn check(r: Reading) -> Reading {
    assert_eq!(r.value % 3, 1);
    r
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::main(worker_threads = 2)]
async fn main() -> Result<(), nanostream::Error> {
    let mut seconds = 5;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--seconds", Some(v)) => seconds = v.parse().expect("--seconds takes a number"),
            _ => panic!("usage: latency [--seconds S]"),
        }
    }

    let mut g = Topology::builder();
    let readings = g.source("ticker", ticker(seconds));
    let scaled = g.node("scale", scale(), readings);
    let offset = g.node("offset", offset(), scaled);
    let checked = g.node("check", check(), offset);
    let (record, latencies) = fold(Vec::new(), |mut all: Vec<Duration>, r: Reading| {
        all.push(r.created.elapsed());
        all
    });
    g.sink("record", record, checked);
    g.build()?.run().await?;

    let mut latencies = latencies.await.unwrap_or_default();
    latencies.sort();
    if latencies.is_empty() {
        println!("no items");
        return Ok(());
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("items: {} (one per ms through 3 nodes)", latencies.len());
    println!(
        "latency p50 = {:.0} µs, p99 = {:.0} µs, max = {:.0} µs",
        us(percentile(&latencies, 0.50)),
        us(percentile(&latencies, 0.99)),
        us(latencies[latencies.len() - 1]),
    );
    Ok(())
}
