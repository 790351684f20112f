//! Upsert orders from Kafka into SQLite: `kafka_to_postgres` with another
//! write function (the rest is in `orders.rs`, shared by both).
//!
//! ```text
//! cargo run --release --example kafka_to_sqlite -- --brokers 127.0.0.1:9092 --group orders \
//!     --input orders-eu,orders-us --db orders.sqlite --table orders
//! ```
//!
//! Each batch is one SQLite transaction of `INSERT ... ON CONFLICT
//! (order_id) DO UPDATE`, run on Tokio's blocking pool. A busy or locked
//! database is retried with backoff; other errors (a constraint violation)
//! reject the rows to blame.

#[path = "orders.rs"]
mod orders;

use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use clap::Parser;
use nanostream::sinks::{Batch, WriteError};
use orders::{Common, Row, checked_table, latest_per_order, newer_than_stored};
use rusqlite::{Connection, ErrorCode};

/// Upsert orders from Kafka into SQLite.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// The SQLite database file (created if missing).
    #[arg(long)]
    db: String,
}

fn open(path: &str, table: &str) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    db.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (
             order_id TEXT PRIMARY KEY,
             customer TEXT NOT NULL,
             amount INTEGER NOT NULL CHECK (amount >= 0),
             source_topic TEXT NOT NULL,
             source_partition INTEGER NOT NULL,
             source_offset INTEGER NOT NULL
         );
         CREATE VIEW IF NOT EXISTS {table}_customer_totals AS
             SELECT customer, count(*) AS orders, sum(amount) AS total FROM {table} GROUP BY customer;"
    ))?;
    Ok(db)
}

/// Upserts the latest version of each order of `rows` in one transaction.
fn write(db: &mut Connection, upsert: &str, rows: &[Row]) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    {
        let mut statement = tx.prepare_cached(upsert)?;
        for row in latest_per_order(rows) {
            let order = &row.value;
            statement.execute((
                &order.order_id,
                &order.customer,
                order.amount,
                &*row.topic,
                row.partition,
                row.offset,
            ))?;
        }
    }
    tx.commit()
}

/// A busy or locked database may work on the next try; nothing else does.
fn classify(error: rusqlite::Error) -> WriteError<rusqlite::Error> {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => WriteError::Transient(error),
        _ => WriteError::Permanent(error),
    }
}

async fn main_async(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let table = checked_table(&args.common.table)?.to_owned();
    let db = Arc::new(Mutex::new(open(&args.db, &table)?));
    let upsert: Arc<str> = format!(
        "INSERT INTO {table} (order_id, customer, amount, source_topic, source_partition, source_offset)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (order_id) DO UPDATE SET customer = excluded.customer, amount = excluded.amount,
             source_topic = excluded.source_topic, source_partition = excluded.source_partition,
             source_offset = excluded.source_offset
         WHERE {}",
        newer_than_stored(&table)
    )
    .into();
    let write = move |rows: Batch<Row>| {
        let (db, upsert) = (db.clone(), upsert.clone());
        async move {
            // A short, local write, but blocking: off the async workers.
            let written = tokio::task::spawn_blocking(move || {
                let mut db = db.lock().unwrap_or_else(PoisonError::into_inner);
                write(&mut db, &upsert, &rows)
            })
            .await;
            match written {
                Ok(result) => result.map_err(classify),
                // The runtime is shutting down: the batch is written again
                // after a restart.
                Err(_) => Err(WriteError::Transient(rusqlite::Error::InvalidQuery)),
            }
        }
    };
    orders::run("kafka_to_sqlite", args.common, &format!("SQLite {} table {table}", args.db), write).await
}

fn main() -> ExitCode {
    let args = Args::parse();
    orders::run_main("kafka_to_sqlite", main_async(args))
}
