//! Aggregate Kafka events into a database: count events per key per
//! one-minute window and upsert the counts into SQLite.
//!
//! ```text
//! cargo run --release --example kafka_to_sqlite -- --brokers 127.0.0.1:9092 --group counts \
//!     --input clicks,views --db counts.sqlite
//! ```
//!
//! Events are JSON messages; the key counted is the message key (or
//! `"(none)"`). Counts go to the table
//! `event_counts(window_start, key, events)`, one row per window and key,
//! added to when a window is written in several parts (at shutdown and
//! after a restart). Offsets are committed only once the counts they
//! contributed to are in the database, so a crash loses nothing; events in
//! flight at a crash are counted again after the restart (at-least-once).
//!
//! On SIGINT or SIGTERM, open windows are written, offsets committed, and
//! the program exits with status 0.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use nanostream::prelude::*;
use nanostream::{
    Sink,
    operators::{Windowed, batch, tumbling},
};
use nanostream_kafka::{Json, KafkaSource, Record};
use rusqlite::Connection;
use serde_json::Value;

/// Count Kafka events per key per window into SQLite.
#[derive(Debug, Parser)]
struct Args {
    /// Kafka bootstrap servers, `HOST:PORT[,HOST:PORT...]`.
    #[arg(long)]
    brokers: String,
    /// Consumer group.
    #[arg(long)]
    group: String,
    /// Input topics, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    input: Vec<String>,
    /// SQLite database file (created if missing).
    #[arg(long)]
    db: String,
    /// Window length in seconds.
    #[arg(long, default_value_t = 60)]
    window_secs: u64,
}

/// Writes batches of window counts in one transaction each. The records
/// behind a batch are acknowledged once `consume` returns, that is once the
/// transaction is committed.
struct Upsert {
    db: Connection,
}

impl Upsert {
    fn open(path: &str) -> rusqlite::Result<Self> {
        let db = Connection::open(path)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS event_counts (
                 window_start TEXT NOT NULL,
                 key TEXT NOT NULL,
                 events INTEGER NOT NULL,
                 PRIMARY KEY (window_start, key)
             );",
        )?;
        Ok(Self { db })
    }
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest / 60 % 60, rest % 60)
}

impl Sink for Upsert {
    type In = Vec<Windowed<String, u64>>;
    type Error = rusqlite::Error;

    async fn consume(&mut self, counts: Vec<Windowed<String, u64>>) -> Result<(), rusqlite::Error> {
        // A short, local write: done inline rather than on a blocking thread.
        let tx = self.db.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO event_counts (window_start, key, events) VALUES (?1, ?2, ?3)
                 ON CONFLICT (window_start, key) DO UPDATE SET events = events + excluded.events",
            )?;
            for w in &counts {
                upsert.execute((rfc3339(w.start), &w.key, w.value as i64))?;
            }
        }
        tx.commit()
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let source = KafkaSource::builder(&args.brokers, &args.group)
        .topics(&args.input)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .build(Json)?;
    let per_window = tumbling(
        Duration::from_secs(args.window_secs.max(1)),
        |event: &Record<Value>| {
            event.key.as_deref().map_or_else(|| "(none)".to_owned(), |k| String::from_utf8_lossy(k).into_owned())
        },
        || 0u64,
        |n, _| *n += 1,
    );

    let mut g = Topology::builder();
    let events = g.source("consume", source);
    let counts = g.node("count_per_window", per_window, events);
    let batches = g.node("batch", batch(500, Duration::from_secs(1)), counts);
    g.sink("upsert", Upsert::open(&args.db)?, batches);
    let running = g.build()?.start();
    eprintln!("kafka_to_sqlite: {} -> {} ({} s windows)", args.input.join(","), args.db, args.window_secs);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        () = running.finished() => return Ok(running.join().await?),
    }
    eprintln!("stopping: writing open windows and committing");
    running.shutdown(Duration::from_secs(60)).await?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kafka_to_sqlite: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kafka_to_sqlite: {error}");
            ExitCode::FAILURE
        }
    }
}
