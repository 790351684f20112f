//! What `kafka_to_postgres` and `kafka_to_sqlite` share: the command line,
//! the orders read from Kafka, and the pipeline around the write function,
//! which is all that differs between them.
//!
//! Orders are JSON objects `{"order_id": str, "customer": str, "amount":
//! int}` (amounts in cents). Each is upserted by `order_id` into the table,
//! so a re-read order (after a crash, a rebalance) overwrites itself and is
//! never counted twice; per-customer totals are a view over the stored
//! rows. Offsets are committed only once the batch holding an order is
//! committed in the database.

use std::fmt;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use nanostream::prelude::*;
use nanostream::sinks::{Batch, BatchWriter, WriteError};
use nanostream_kafka::{DeadLetterSink, DecodeErrors, Json, KafkaSink, KafkaSource, Record};
use serde::Deserialize;

/// The command line both examples take, besides where the database is.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Kafka bootstrap servers, `HOST:PORT[,HOST:PORT...]`.
    #[arg(long)]
    pub brokers: String,
    /// Consumer group.
    #[arg(long)]
    pub group: String,
    /// Input topics, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub input: Vec<String>,
    /// The table orders are upserted into (created if missing), with a view
    /// `<table>_customer_totals`.
    #[arg(long)]
    pub table: String,
    /// A topic for what cannot be stored: payloads that are not orders, and
    /// orders the table rejects (a constraint). Without it, either stops
    /// the program with an error naming the record.
    #[arg(long)]
    pub dead_letters: Option<String>,
    /// The most orders in one transaction.
    #[arg(long, default_value_t = 1000)]
    pub batch_rows: usize,
    /// How long a batch waits for more orders, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub max_wait_ms: u64,
    /// Transactions written at once (they may commit in another order;
    /// each row keeps its source offset, and an upsert never replaces a
    /// newer version with an older one).
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
}

/// An order as it arrives.
#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    /// The primary key.
    pub order_id: String,
    /// Who placed it.
    pub customer: String,
    /// In cents; the table rejects a negative amount.
    pub amount: i64,
}

/// A row to store: the order and where it was read.
pub type Row = Record<Order>;

/// The last version of each order in a batch, in batch order: one
/// statement may touch a row only once, and the latest read wins.
pub fn latest_per_order(rows: &[Row]) -> Vec<&Row> {
    let mut seen = std::collections::HashSet::new();
    let mut latest: Vec<&Row> = rows.iter().rev().filter(|r| seen.insert(&r.value.order_id)).collect();
    latest.reverse();
    latest
}

/// The condition under which an upsert replaces a stored order: the new
/// version was read from another partition, or later in the same one. So a
/// batch written after a later one (several in flight) or an old record
/// read again after a restart never puts an older version back.
pub fn newer_than_stored(table: &str) -> String {
    format!(
        "{table}.source_topic IS DISTINCT FROM excluded.source_topic \
         OR {table}.source_partition IS DISTINCT FROM excluded.source_partition \
         OR {table}.source_offset <= excluded.source_offset"
    )
}

/// Runs the pipeline: orders from Kafka, upserted in batches with `write`,
/// until the input ends or SIGINT/SIGTERM (then it drains, commits the
/// offsets of what was stored, and returns).
pub async fn run<W, Fut, E>(
    program: &str,
    common: Common,
    target: &str,
    write: W,
) -> Result<(), Box<dyn std::error::Error>>
where
    W: Fn(Batch<Row>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), WriteError<E>>> + Send + 'static,
    E: fmt::Display + fmt::Debug + Send + Sync + 'static,
{
    let mut source = KafkaSource::builder(&common.brokers, &common.group)
        .topics(&common.input)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    source = match &common.dead_letters {
        Some(topic) => source.keep_payload(true).on_decode_error(DecodeErrors::DeadLetter(topic.clone())),
        None => source.on_decode_error(DecodeErrors::Fail),
    };
    let writer = BatchWriter::new(write)
        .max_rows(common.batch_rows)
        .max_wait(Duration::from_millis(common.max_wait_ms))
        .in_flight(common.in_flight)
        .split_rejected(true);

    let mut g = Topology::builder();
    let orders = g.source("consume", source.build(Json)?);
    match &common.dead_letters {
        Some(topic) => {
            let rejected = g.node("upsert", writer.dead_letters(), orders);
            let letters = DeadLetterSink::new(KafkaSink::builder(&common.brokers), topic.clone())?;
            g.sink("dead_letters", letters, rejected);
        }
        None => g.sink("upsert", writer, orders),
    }
    let running = g.build()?.start();
    eprintln!("{program}: {} -> {target}", common.input.join(","));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        () = running.finished() => return Ok(running.join().await?),
    }
    eprintln!("{program}: stopping: writing what was read, committing");
    running.shutdown(Duration::from_secs(60)).await?;
    eprintln!("{program}: stopped");
    Ok(())
}

/// Runs `main` on a multi-thread runtime, with logs from `RUST_LOG`;
/// prints an error and fails if it does.
pub fn run_main<F>(program: &str, main: F) -> ExitCode
where
    F: Future<Output = Result<(), Box<dyn std::error::Error>>>,
{
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{program}: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut message = error.to_string();
            let mut cause = error.source();
            while let Some(inner) = cause {
                message.push_str(&format!(": {inner}"));
                cause = inner.source();
            }
            eprintln!("{program}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A table name as SQL takes it: letters, digits and `_` only.
pub fn checked_table(table: &str) -> Result<&str, String> {
    let valid = !table.is_empty()
        && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !table.starts_with(|c: char| c.is_ascii_digit());
    if valid { Ok(table) } else { Err(format!("--table {table:?}: use letters, digits and _ only")) }
}
