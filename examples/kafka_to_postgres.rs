//! Upsert orders from Kafka into PostgreSQL, without losing one when the
//! process dies or the database goes away.
//!
//! ```text
//! cargo run --release --example kafka_to_postgres -- --brokers 127.0.0.1:9092 --group orders \
//!     --input orders-eu,orders-us --postgres "host=127.0.0.1 port=5432 user=app dbname=shop" \
//!     --table orders
//! ```
//!
//! Each batch is one statement, `INSERT ... SELECT FROM UNNEST(...) ON
//! CONFLICT (order_id) DO UPDATE`: one round trip and one transaction per
//! batch. Connection errors and PostgreSQL's transient states (connection
//! exceptions, serialization failures, deadlocks, a server shutting down
//! or starting) are retried with backoff on a new connection; other errors
//! (a constraint violation) reject the rows to blame. See `orders.rs` for
//! what both database examples share.

#[path = "orders.rs"]
mod orders;

use std::fmt;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser;
use nanostream::sinks::{Batch, WriteError};
use orders::{Common, Row, checked_table, latest_per_order};
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Statement};

/// Upsert orders from Kafka into PostgreSQL.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// libpq-style connection string, e.g. `host=127.0.0.1 port=5432
    /// user=app dbname=shop`.
    #[arg(long)]
    postgres: String,
}

/// Connections, one per write in flight, each made again when it breaks.
struct Pool {
    dsn: String,
    upsert: String,
    slots: Vec<Mutex<Option<(Client, Statement)>>>,
    next: AtomicUsize,
}

impl Pool {
    /// Creates the table and the view, and checks the server answers.
    async fn open(dsn: &str, table: &str, size: usize) -> Result<Arc<Self>, tokio_postgres::Error> {
        let (client, _) = connect(dsn, "SELECT 1").await?;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                     order_id TEXT PRIMARY KEY,
                     customer TEXT NOT NULL,
                     amount BIGINT NOT NULL CHECK (amount >= 0)
                 );
                 CREATE OR REPLACE VIEW {table}_customer_totals AS
                     SELECT customer, count(*) AS orders, sum(amount) AS total FROM {table} GROUP BY customer;"
            ))
            .await?;
        let upsert = format!(
            "INSERT INTO {table} (order_id, customer, amount)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
             ON CONFLICT (order_id) DO UPDATE SET customer = EXCLUDED.customer, amount = EXCLUDED.amount"
        );
        let slots = (0..size.max(1)).map(|_| Mutex::new(None)).collect();
        Ok(Arc::new(Self { dsn: dsn.to_owned(), upsert, slots, next: AtomicUsize::new(0) }))
    }

    /// Upserts the latest version of each order of `rows` in one statement.
    async fn write(&self, rows: &[Row]) -> Result<(), tokio_postgres::Error> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut slot = slot.lock().await;
        let (client, upsert) = match slot.take() {
            Some((client, upsert)) if !client.is_closed() => (client, upsert),
            _ => connect(&self.dsn, &self.upsert).await?,
        };
        let latest = latest_per_order(rows);
        let ids: Vec<&str> = latest.iter().map(|o| o.order_id.as_str()).collect();
        let customers: Vec<&str> = latest.iter().map(|o| o.customer.as_str()).collect();
        let amounts: Vec<i64> = latest.iter().map(|o| o.amount).collect();
        let written = client.execute(&upsert, &[&ids, &customers, &amounts]).await;
        // Keep the connection unless it broke.
        if !client.is_closed() {
            *slot = Some((client, upsert));
        }
        written.map(drop)
    }
}

/// A new connection, with `statement` prepared on it.
async fn connect(dsn: &str, statement: &str) -> Result<(Client, Statement), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "a PostgreSQL connection ended");
        }
    });
    let prepared = client.prepare(statement).await?;
    Ok((client, prepared))
}

/// A PostgreSQL error as the logs and dead letters show it: the server's
/// message, code and detail (tokio-postgres' own `Display` says only "db
/// error" and keeps them in its source).
#[derive(Debug)]
struct PgError(tokio_postgres::Error);

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                write!(f, "{} {}: {}", db.severity(), db.code().code(), db.message())?;
                if let Some(detail) = db.detail() {
                    write!(f, " ({detail})")?;
                }
                Ok(())
            }
            None => {
                write!(f, "{}", self.0)?;
                let mut source = std::error::Error::source(&self.0);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
        }
    }
}

/// Whether trying again may work: the connection (no SQLSTATE: refused,
/// reset, closed), or a state PostgreSQL says is transient.
fn classify(error: tokio_postgres::Error) -> WriteError<PgError> {
    let transient = match error.code().map(tokio_postgres::error::SqlState::code) {
        None => true,
        Some(code) => {
            // 08: connection exception; 53: insufficient resources;
            // 57P01-03: shutting down, crashed, starting up; 40001:
            // serialization failure; 40P01: deadlock.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "40001"
                || code == "40P01"
        }
    };
    let error = PgError(error);
    if transient { WriteError::Transient(error) } else { WriteError::Permanent(error) }
}

async fn main_async(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let table = checked_table(&args.common.table)?.to_owned();
    let pool = Pool::open(&args.postgres, &table, args.common.in_flight).await?;
    let write = move |rows: Batch<Row>| {
        let pool = pool.clone();
        async move { pool.write(&rows).await.map_err(classify) }
    };
    orders::run("kafka_to_postgres", args.common, &format!("PostgreSQL table {table}"), write).await
}

fn main() -> ExitCode {
    let args = Args::parse();
    orders::run_main("kafka_to_postgres", main_async(args))
}
