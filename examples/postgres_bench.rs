//! What `BatchWriter` costs over a hand-written tokio-postgres loop: the
//! same rows upserted with the same statement, batch size and connection,
//! in the same run, alternating which goes first.
//!
//! ```text
//! cargo run --release --example postgres_bench -- --postgres "host=127.0.0.1 port=5432 user=app dbname=shop"
//! ```
//!
//! Each round upserts `--rows` new rows into an empty table both ways: the
//! hand-written loop formats a batch of rows, builds the column arrays and
//! executes `INSERT ... SELECT FROM UNNEST(...) ON CONFLICT DO UPDATE`;
//! the pipeline generates the same rows in a source and a `BatchWriter`
//! writes them with the same code. It creates and drops its own tables and
//! prints `ratio_rows_per_s=<pipeline / hand-written, median of the
//! rounds>` as its last line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use nanostream::prelude::*;
use nanostream::sinks::{Batch, BatchWriter, WriteError};
use tokio_postgres::{Client, NoTls, Statement};

/// Upserts rows through a BatchWriter and by hand; prints the ratio.
#[derive(Debug, Parser)]
struct Args {
    /// libpq-style connection string.
    #[arg(long)]
    postgres: String,
    /// Rows per round and way.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Rows per statement, both ways.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Rounds (each runs both ways).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

type Row = (String, String, i64);

fn row(i: u64) -> Row {
    (format!("order-{i}"), format!("customer-{}", i % 1_000), (i % 10_000) as i64)
}

/// Upserts `rows` with one statement: the code both ways share.
async fn upsert(client: &Client, statement: &Statement, rows: &[Row]) -> Result<u64, tokio_postgres::Error> {
    let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let customers: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    let amounts: Vec<i64> = rows.iter().map(|r| r.2).collect();
    client.execute(statement, &[&ids, &customers, &amounts]).await
}

async fn hand_written(client: &Client, statement: &Statement, args: &Args) -> Result<(), tokio_postgres::Error> {
    let mut start = 0;
    while start < args.rows {
        let end = (start + args.batch as u64).min(args.rows);
        let rows: Vec<Row> = (start..end).map(row).collect();
        upsert(client, statement, &rows).await?;
        start = end;
    }
    Ok(())
}

async fn pipeline(client: Arc<Client>, statement: Statement, args: &Args) -> Result<(), nanostream::Error> {
    let writer = BatchWriter::new(move |rows: Batch<Row>| {
        let (client, statement) = (client.clone(), statement.clone());
        async move { upsert(&client, &statement, &rows).await.map(drop).map_err(WriteError::Permanent) }
    })
    .max_rows(args.batch)
    .max_wait(Duration::from_secs(1));
    let mut g = Topology::builder();
    let rows = g.source("rows", from_iter(0..args.rows));
    let rows = g.node("format", map(row), rows);
    g.sink("upsert", writer, rows);
    g.build()?.run().await
}

async fn count(client: &Client, table: &str) -> Result<i64, tokio_postgres::Error> {
    Ok(client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.get(0))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn bench(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let (client, connection) = tokio_postgres::connect(&args.postgres, NoTls).await?;
    tokio::spawn(connection);
    let client = Arc::new(client);
    let (sink_table, hand_table) =
        (format!("bench_sink_{}", std::process::id()), format!("bench_hand_{}", std::process::id()));
    for table in [&sink_table, &hand_table] {
        client
            .batch_execute(&format!(
                "CREATE TABLE {table} (order_id TEXT PRIMARY KEY, customer TEXT NOT NULL, amount BIGINT NOT NULL)"
            ))
            .await?;
    }
    let statement = |table: &str| {
        format!(
            "INSERT INTO {table} (order_id, customer, amount)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
             ON CONFLICT (order_id) DO UPDATE SET customer = EXCLUDED.customer, amount = EXCLUDED.amount"
        )
    };
    let sink_statement = client.prepare(&statement(&sink_table)).await?;
    let hand_statement = client.prepare(&statement(&hand_table)).await?;

    let result: Result<(), Box<dyn std::error::Error>> = async {
        let mut ratios = Vec::new();
        for round in 0..args.rounds {
            client.batch_execute(&format!("TRUNCATE {sink_table}; TRUNCATE {hand_table}")).await?;
            let mut sink_secs = 0.0;
            let mut hand_secs = 0.0;
            for way in [round % 2, 1 - round % 2] {
                let started = Instant::now();
                if way == 0 {
                    pipeline(client.clone(), sink_statement.clone(), &args).await?;
                    sink_secs = started.elapsed().as_secs_f64();
                } else {
                    hand_written(&client, &hand_statement, &args).await?;
                    hand_secs = started.elapsed().as_secs_f64();
                }
            }
            let (sink_rows, hand_rows) = (count(&client, &sink_table).await?, count(&client, &hand_table).await?);
            assert_eq!((sink_rows as u64, hand_rows as u64), (args.rows, args.rows), "every row stored both ways");
            let (sink_rate, hand_rate) = (args.rows as f64 / sink_secs, args.rows as f64 / hand_secs);
            println!(
                "round {round}: batch_writer={:.0} rows/s hand_written={:.0} rows/s ratio={:.3}",
                sink_rate,
                hand_rate,
                sink_rate / hand_rate
            );
            ratios.push(sink_rate / hand_rate);
        }
        println!("rows={} batch={} rounds={}", args.rows, args.batch, args.rounds);
        println!("ratio_rows_per_s={:.3}", median(ratios));
        Ok(())
    }
    .await;
    client.batch_execute(&format!("DROP TABLE IF EXISTS {sink_table}; DROP TABLE IF EXISTS {hand_table}")).await?;
    result
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("postgres_bench: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("postgres_bench: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
