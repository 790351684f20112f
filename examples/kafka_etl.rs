//! Kafka ETL: copy JSON objects from several topics to one, tagging each
//! with the topic it came from; route what is not a JSON object to a
//! dead-letter topic. Loses nothing when killed: offsets are committed only
//! once the output (or the dead letter) is delivered.
//!
//! ```text
//! cargo run --release --example kafka_etl -- --brokers 127.0.0.1:9092 --group etl \
//!     --input orders-eu,orders-us --output orders --dead-letter orders-dlq
//! ```
//!
//! - every message of every input topic that is a JSON object is produced to
//!   the output topic unchanged, with one added field `"source_topic"`, and
//!   the same key and headers;
//! - any other message goes to the dead-letter topic with its original
//!   bytes, key and headers, plus `error`, `node`, `source_topic`,
//!   `source_partition` and `source_offset` headers (`DeadLetterSink`);
//! - a progress line goes to stderr every few seconds, and the source's
//!   logs (joining the group, partitions assigned, client errors, each
//!   distinct one once) go there too (`RUST_LOG` sets the filter, `info` by
//!   default);
//! - on SIGINT or SIGTERM it stops consuming, lets everything in flight
//!   reach Kafka, commits, and exits with status 0;
//! - with `--until-end` it reads every partition up to the end it had at
//!   start, then drains, commits and exits with status 0;
//! - if no broker answers within `--startup-timeout` seconds, or an input
//!   topic does not exist, it exits with status 1 and says why;
//! - `--set KEY=VALUE` (any number) passes librdkafka settings (TLS, SASL)
//!   to the consumer and both producers; a password or key given this way
//!   appears in none of its output, at any `RUST_LOG` level.
//!
//! Run more copies with the same `--group` to split the partitions.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use nanostream::TopologyHandle;
use nanostream::prelude::*;
use nanostream_kafka::{DeadLetterSink, KafkaSink, KafkaSource, Outgoing, Raw, Record};
use serde_json::{Map, Value};

/// Copy JSON objects between Kafka topics, tagging them with their source.
///
/// (No `Debug`: the settings may hold secrets.)
#[derive(Parser)]
struct Args {
    /// Kafka bootstrap servers, `HOST:PORT[,HOST:PORT...]`.
    #[arg(long)]
    brokers: String,
    /// Consumer group; copies with the same group split the partitions.
    #[arg(long)]
    group: String,
    /// Input topics, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    input: Vec<String>,
    /// Output topic.
    #[arg(long)]
    output: String,
    /// Topic for messages that are not JSON objects.
    #[arg(long = "dead-letter")]
    dead_letter: String,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    progress_every: u64,
    /// Seconds a graceful shutdown may take before it is aborted.
    #[arg(long, default_value_t = 60)]
    shutdown_deadline: u64,
    /// Read every partition up to the end it has now, then stop.
    #[arg(long)]
    until_end: bool,
    /// Seconds to wait for the brokers at start before giving up.
    #[arg(long, default_value_t = 10)]
    startup_timeout: u64,
    /// A librdkafka setting, `KEY=VALUE`, for the consumer, the producer and
    /// the dead-letter producer alike (TLS, SASL, tuning); repeatable.
    /// Secrets given this way appear in no output.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

/// `KEY=VALUE`, split at the first `=`.
fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err("expected KEY=VALUE".to_owned()),
    }
}

/// Why a message is rejected.
#[derive(Debug)]
struct NotAnObject(String);

impl std::fmt::Display for NotAnObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotAnObject {}

/// Adds `"source_topic"` to a JSON object, keeping key and headers.
#[node]
async fn tag(record: Record<Vec<u8>>, output: &str) -> Result<Outgoing<Vec<u8>>, NotAnObject> {
    let mut object: Map<String, Value> = match serde_json::from_slice::<Value>(&record.value) {
        Ok(Value::Object(object)) => object,
        Ok(other) => return Err(NotAnObject(format!("not a JSON object but {}", kind(&other)))),
        Err(error) => return Err(NotAnObject(format!("not JSON: {error}"))),
    };
    object.insert("source_topic".to_owned(), Value::String(record.topic.to_string()));
    let value = serde_json::to_vec(&object).map_err(|e| NotAnObject(format!("cannot re-encode: {e}")))?;
    let mut message = Outgoing::new(value).to_topic(output);
    message.key = record.key;
    message.headers = record.headers;
    Ok(message)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

async fn shutdown_signal() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            eprintln!("cannot listen for SIGTERM: {error}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Prints a progress line every `every`; never returns.
async fn report_progress(running: &TopologyHandle, deliveries: &nanostream_kafka::Deliveries, every: Duration) {
    let started = Instant::now();
    let (mut last, mut last_at) = (0, Instant::now());
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let nodes = running.snapshot();
        let sent = |name: &str| nodes.iter().find(|n| n.name == name).map_or(0, |n| n.sent);
        let consumed = sent("consume");
        let rate = (consumed - last) as f64 / last_at.elapsed().as_secs_f64();
        eprintln!(
            "[{:>5.0}s] consumed={consumed} produced={} dead_letters={} rate={rate:.0}/s",
            started.elapsed().as_secs_f64(),
            deliveries.get(),
            sent("tag.dead_letters"),
        );
        (last, last_at) = (consumed, Instant::now());
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut source = KafkaSource::builder(&args.brokers, &args.group);
    let (mut sink, mut letters) = (KafkaSink::builder(&args.brokers), KafkaSink::builder(&args.brokers));
    for (key, value) in &args.settings {
        source = source.set(key, value.as_str());
        sink = sink.set(key, value.as_str());
        letters = letters.set(key, value.as_str());
    }
    let source = source
        .topics(&args.input)
        // Small groups rebalance in seconds rather than tens of seconds.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        // A job: fail rather than wait for a cluster that is not there.
        .require_brokers(true)
        .startup_timeout(Duration::from_secs(args.startup_timeout))
        .until_end(args.until_end)
        // The dead-letter sink writes rejected messages as they were read.
        .keep_payload(true)
        .build(Raw)?;
    let sink = sink.build(Raw)?;
    let deliveries = sink.deliveries();

    let mut g = Topology::builder();
    let records = g.source("consume", source);
    let (tagged, rejected) = g.node_with_dead_letters("tag", tag(args.output.clone()), records);
    g.sink("produce", sink, tagged);
    // Rejected messages, unchanged, with why and where from in headers: the
    // same format as messages the source could not decode.
    let dead_letters = DeadLetterSink::new(letters, &args.dead_letter)?;
    g.sink("dead_letters", dead_letters, rejected);
    let running = g.build()?.start();
    eprintln!(
        "kafka_etl: {} -> {} (dead letters to {}), group {}",
        args.input.join(","),
        args.output,
        args.dead_letter,
        args.group
    );

    let signal = tokio::select! {
        signal = shutdown_signal() => Some(signal),
        () = running.finished() => None,
        () = report_progress(&running, &deliveries, Duration::from_secs(args.progress_every.max(1))) => None,
    };
    match signal {
        Some(signal) => {
            eprintln!("{signal}: stopping consumption, draining, committing");
            running.shutdown(Duration::from_secs(args.shutdown_deadline)).await?;
            eprintln!("stopped cleanly: {} messages produced", deliveries.get());
        }
        // The pipeline ended on its own: read to the end, or failed.
        None => {
            running.join().await?;
            eprintln!("read to the end: {} messages produced", deliveries.get());
        }
    }
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
            eprintln!("kafka_etl: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kafka_etl: {error}");
            let mut source = error.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
