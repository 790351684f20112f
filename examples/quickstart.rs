//! Quick start: analyse a day of web server access logs in memory.
//!
//! The example generates 500,000 access-log lines (a few of them garbled),
//! then runs this pipeline:
//!
//! ```text
//!                        ┌─> by_status ──> status_counts
//! log_lines ─> parse ────┼─> slow ───────┐
//!                        └─> failures ───┴─> alerts ──> alert_counts
//! ```
//!
//! `parse` fans out to three branches (each gets every request); `alerts`
//! fans in the slow and failed requests. Run it with
//! `cargo run --release --example quickstart`.

use std::collections::HashMap;
use std::time::Instant;

use nanostream::prelude::*;

/// One parsed access-log line.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    status: u16,
    millis: u32,
}

/// Parses `"<time> <method> <path> <status> <millis>ms"`; garbled lines are
/// dropped (returning `None` filters them out).
#[node]
async fn parse(line: String) -> Option<Request> {
    let mut fields = line.split(' ');
    let _time = fields.next()?;
    let method = fields.next()?.to_owned();
    let path = fields.next()?.to_owned();
    let status = fields.next()?.parse().ok()?;
    let millis = fields.next()?.strip_suffix("ms")?.parse().ok()?;
    Some(Request { method, path, status, millis })
}

/// `"2xx"`, `"4xx"`, ... for a status code.
#[node]
async fn by_status(request: Request) -> String {
    format!("{}xx", request.status / 100)
}

/// Requests slower than the configured threshold, as alerts.
#[node]
async fn slow(request: Request, threshold_ms: &u32) -> Option<String> {
    (request.millis > *threshold_ms).then(|| format!("slow    {} {}", request.method, request.path))
}

/// Server errors, as alerts.
#[node]
async fn failures(request: Request) -> Option<String> {
    (request.status >= 500).then(|| format!("failing {} {}", request.method, request.path))
}

/// Counts alerts per kind and path; keeps its counts across items and
/// forwards the running count.
#[node]
async fn alerts(alert: String, seen: &mut HashMap<String, u64>) -> (String, u64) {
    let n = seen.entry(alert.clone()).or_default();
    *n += 1;
    (alert, *n)
}

/// A deterministic generator of realistic log lines (no randomness crate).
fn log_lines(count: usize) -> impl Iterator<Item = String> + Send {
    const PATHS: [&str; 8] =
        ["/", "/login", "/api/users", "/api/orders", "/api/orders/42", "/static/app.js", "/search", "/checkout"];
    const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..count).map(move |i| {
        // xorshift64: cheap, deterministic pseudo-random numbers.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let r = state;
        if r.is_multiple_of(200) {
            return format!("garbled line #{i}");
        }
        let path = PATHS[(r >> 8) as usize % PATHS.len()];
        let method = METHODS[(r >> 16) as usize % METHODS.len()];
        let status = match (r >> 24) % 100 {
            0..=84 => 200,
            85..=89 => 301,
            90..=96 => 404,
            _ => 503,
        };
        let millis = (r >> 32) % 400 + if path == "/checkout" { (r >> 40) % 800 } else { 0 };
        let (h, m, s) = (i / 3600 % 24, i / 60 % 60, i % 60);
        format!("2026-11-26T{h:02}:{m:02}:{s:02}Z {method} {path} {status} {millis}ms")
    })
}

#[tokio::main]
async fn main() -> Result<(), nanostream::error::Report> {
    const LINES: usize = 500_000;
    let started = Instant::now();

    let mut g = Topology::builder();
    let lines = g.source("log_lines", from_iter(log_lines(LINES)));
    let requests = g.node("parse", parse(), lines);

    // Fan-out: every request goes to all three branches.
    let classes = g.node("by_status", by_status(), &requests);
    let slow = g.node("slow", slow(600), &requests);
    let failed = g.node("failures", failures(), &requests);

    // Fan-in: one node reads both alert streams.
    let alert_counts = g.node("alerts", alerts(), [slow, failed]);

    let (status_sink, status_counts) = fold(HashMap::<String, u64>::new(), |mut counts, class: String| {
        *counts.entry(class).or_default() += 1;
        counts
    });
    g.sink("status_counts", status_sink, classes);
    let (alert_sink, top_alerts) = fold(HashMap::<String, u64>::new(), |mut latest, (alert, n): (String, u64)| {
        latest.insert(alert, n);
        latest
    });
    g.sink("alert_counts", alert_sink, alert_counts);

    g.build()?.run().await?;
    let elapsed = started.elapsed();

    let status_counts = status_counts.await.unwrap_or_default();
    let parsed: u64 = status_counts.values().sum();
    println!("{LINES} log lines, {parsed} parsed, {} garbled", LINES as u64 - parsed);
    let mut classes: Vec<_> = status_counts.into_iter().collect();
    classes.sort();
    for (class, n) in classes {
        println!("  {class}: {n:>7}");
    }
    let mut alerts: Vec<_> = top_alerts.await.unwrap_or_default().into_iter().collect();
    alerts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    println!("top alerts:");
    for (alert, n) in alerts.iter().take(5) {
        println!("  {n:>6}  {alert}");
    }
    println!(
        "processed in {:.0} ms ({:.1} M lines/s)",
        elapsed.as_secs_f64() * 1e3,
        LINES as f64 / elapsed.as_secs_f64() / 1e6
    );
    Ok(())
}
