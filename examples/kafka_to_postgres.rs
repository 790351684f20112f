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
//! CONFLICT (order_id) DO UPDATE ... WHERE <newer>`: one round trip and one
//! transaction per batch, and an older version of an order never replaces
//! a newer one. Errors about the data (a constraint violation, a value out
//! of range) reject the rows to blame; every other error (the connection,
//! the server) is retried with backoff on a new connection. See
//! `orders.rs` for what both database examples share.

#[path = "orders.rs"]
mod orders;

use std::fmt;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use nanostream::sinks::{Batch, WriteError};
use orders::{Common, Row, checked_table, latest_per_order, newer_than_stored};
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
                     amount BIGINT NOT NULL CHECK (amount >= 0),
                     source_topic TEXT NOT NULL,
                     source_partition INTEGER NOT NULL,
                     source_offset BIGINT NOT NULL
                 );
                 CREATE OR REPLACE VIEW {table}_customer_totals AS
                     SELECT customer, count(*) AS orders, sum(amount) AS total FROM {table} GROUP BY customer;"
            ))
            .await?;
        let upsert = format!(
            "INSERT INTO {table} (order_id, customer, amount, source_topic, source_partition, source_offset)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::integer[], $6::bigint[])
             ON CONFLICT (order_id) DO UPDATE SET customer = excluded.customer, amount = excluded.amount,
                 source_topic = excluded.source_topic, source_partition = excluded.source_partition,
                 source_offset = excluded.source_offset
             WHERE {}",
            newer_than_stored(table)
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
        let ids: Vec<&str> = latest.iter().map(|r| r.value.order_id.as_str()).collect();
        let customers: Vec<&str> = latest.iter().map(|r| r.value.customer.as_str()).collect();
        let amounts: Vec<i64> = latest.iter().map(|r| r.value.amount).collect();
        let topics: Vec<&str> = latest.iter().map(|r| &*r.topic).collect();
        let partitions: Vec<i32> = latest.iter().map(|r| r.partition).collect();
        let offsets: Vec<i64> = latest.iter().map(|r| r.offset).collect();
        let columns: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
            [&ids, &customers, &amounts, &topics, &partitions, &offsets];
        let written = client.execute(&upsert, &columns).await;
        // Keep the connection unless it broke.
        if !client.is_closed() {
            *slot = Some((client, upsert));
        }
        written.map(drop)
    }
}

/// A new connection, with `statement` prepared on it. Connecting gives up
/// after 10 s, and a connection whose server stopped answering is noticed
/// by TCP keepalives within about a minute (a write that hangs longer is
/// cut off by the writer's `give_up_after`).
async fn connect(dsn: &str, statement: &str) -> Result<(Client, Statement), tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = dsn.parse()?;
    config
        .connect_timeout(Duration::from_secs(10))
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(3);
    let (client, connection) = config.connect(NoTls).await?;
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

/// Whether the rows are to blame: only errors about the data are
/// permanent (22: data exception; 23: integrity constraint violation, a
/// check or a foreign key; 21000: cardinality). Everything else is about
/// the connection or the server (refused, reset, shutting down, read-only
/// after a failover, a password rotated, a lock or statement timeout, a
/// table missing) and is retried until the writer gives up and stops the
/// pipeline: no row goes to the dead letters for it.
fn classify(error: tokio_postgres::Error) -> WriteError<PgError> {
    let rows_to_blame = error
        .code()
        .map(tokio_postgres::error::SqlState::code)
        .is_some_and(|code| code.starts_with("22") || code.starts_with("23") || code == "21000");
    let error = PgError(error);
    if rows_to_blame { WriteError::Permanent(error) } else { WriteError::Transient(error) }
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
