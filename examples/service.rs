//! A service that feeds a pipeline and lets people watch it: the shape a
//! service team would copy.
//!
//! One axum server, next to the pipeline in the same Tokio runtime:
//!
//! - `POST /events` takes lines `user,action` and sends each into the
//!   pipeline (`from_channel`); when the pipeline is full, the request waits
//!   (back-pressure reaches the client);
//! - `GET /totals` returns the running count per action, as JSON;
//! - `GET /metrics` serves every node's counters to Prometheus, through
//!   the `metrics-exporter-prometheus` recorder of the `metrics` facade
//!   (`nanostream_node_received_items_total{node="parse"}` and the others);
//! - `GET /graph` (DOT) and `GET /graph.mmd` (Mermaid) draw the graph with
//!   live counts per node; `GET /snapshot` gives the same counts as JSON.
//!
//! SIGINT or SIGTERM stops the server, lets the pipeline drain what it
//! accepted, and exits 0.
//!
//! ```text
//! cargo run --example service -- --listen 127.0.0.1:3000
//! curl -X POST --data-binary $'ada,login\ngrace,login\nada,logout' http://127.0.0.1:3000/events
//! curl http://127.0.0.1:3000/totals
//! curl http://127.0.0.1:3000/metrics
//! curl http://127.0.0.1:3000/graph | dot -Tsvg > graph.svg
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use clap::Parser;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use nanostream::operators::scan_by_key;
use nanostream::prelude::*;
use nanostream::topology::Monitor;
use tokio::sync::mpsc;

/// Serve a pipeline over HTTP, with its metrics and its graph.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (port 0 picks a free one; the address is
    /// printed).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// Seconds the pipeline may take to drain at shutdown.
    #[arg(long, default_value_t = 10)]
    shutdown_deadline: u64,
}

/// Why a line is not an event.
#[derive(Debug)]
struct BadEvent(String);

impl std::fmt::Display for BadEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not `user,action`: {:?}", self.0)
    }
}

impl std::error::Error for BadEvent {}

/// `user,action` into `(action, user)`.
#[node]
async fn parse(line: String) -> Result<(String, String), BadEvent> {
    match line.split_once(',') {
        Some((user, action)) if !user.trim().is_empty() && !action.trim().is_empty() => {
            Ok((action.trim().to_owned(), user.trim().to_owned()))
        }
        _ => Err(BadEvent(line)),
    }
}

type Totals = Arc<Mutex<BTreeMap<String, u64>>>;

#[derive(Clone)]
struct App {
    events: mpsc::Sender<String>,
    totals: Totals,
    monitor: Monitor,
    prometheus: PrometheusHandle,
}

async fn post_events(State(app): State<App>, body: String) -> (StatusCode, String) {
    let mut accepted = 0;
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        // Waits while the pipeline is full: back-pressure reaches the client.
        if app.events.send(line.to_owned()).await.is_err() {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("stopping; accepted {accepted}\n"));
        }
        accepted += 1;
    }
    (StatusCode::ACCEPTED, format!("accepted {accepted}\n"))
}

async fn get_totals(State(app): State<App>) -> String {
    let totals = app.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    serde_json::to_string(&totals).unwrap_or_default()
}

async fn get_snapshot(State(app): State<App>) -> String {
    serde_json::to_string(&app.monitor.snapshot()).unwrap_or_default()
}

async fn shutdown_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run(args: Args) -> Result<(), nanostream::error::Report> {
    // The recorder goes in before the pipeline starts, so that every
    // node's counters reach it.
    let prometheus = PrometheusBuilder::new().install_recorder()?;

    let mut g = Topology::builder();
    g.report_progress(Duration::from_secs(10));
    let (lines, events) = nanostream::sources::from_channel::<String>(1024);
    let lines = g.source("http", lines);
    let parsed = g.node("parse", parse().skip_errors(), lines);
    // The running count of each action, emitted as it changes.
    let count = scan_by_key(
        |(action, _): &(String, String)| action.clone(),
        || (String::new(), 0u64),
        |(name, n): &mut (String, u64), (action, _user): (String, String)| {
            *n += 1;
            *name = action;
            Some((name.clone(), *n))
        },
    );
    let counted = g.node("count", count, parsed);
    let totals = Totals::default();
    let store = totals.clone();
    g.sink(
        "totals",
        for_each(move |(action, n): (String, u64)| {
            store.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(action, n);
            async {}
        }),
        counted,
    );
    let running = g.build()?.start();

    let app = App { events, totals, monitor: running.monitor(), prometheus };
    let router = Router::new()
        .route("/events", post(post_events))
        .route("/totals", get(get_totals))
        .route("/snapshot", get(get_snapshot))
        .route("/metrics", get(|State(app): State<App>| async move { app.prometheus.render() }))
        .route("/graph", get(|State(app): State<App>| async move { app.monitor.to_dot() }))
        .route("/graph.mmd", get(|State(app): State<App>| async move { app.monitor.to_mermaid() }))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    eprintln!("service: listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router).with_graceful_shutdown(shutdown_signal()).await?;

    // The server is down and its senders dropped: the source ends once the
    // pipeline has taken what was accepted.
    eprintln!("service: stopping; draining what was accepted");
    running.shutdown(Duration::from_secs(args.shutdown_deadline)).await?;
    eprintln!("service: stopped cleanly");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("service: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            eprintln!("service: {report}");
            ExitCode::FAILURE
        }
    }
}
