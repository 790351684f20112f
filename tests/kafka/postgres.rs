//! Orders from Kafka into PostgreSQL for real: the `kafka_to_postgres`
//! example runs as a process against the test broker and a PostgreSQL
//! server started by `scripts/postgres.sh` (through ./scripts/test.sh), and
//! the table is checked row by row: for a known input, after a SIGKILL and
//! a restart, while the database goes away for seconds, and with a row the
//! table rejects. `kafka_to_sqlite`, the same pipeline with another write
//! function, gets the known-input check too. Without a broker or a server
//! these tests fail with a message saying so.

#[path = "common.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// One test at a time: they share the server, and one stops it.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

fn dsn() -> String {
    match std::env::var("NANOSTREAM_TEST_POSTGRES") {
        Ok(dsn) if !dsn.is_empty() => dsn,
        _ => panic!(
            "NANOSTREAM_TEST_POSTGRES is not set: the database tests need a PostgreSQL server. Run the \
             tests with ./scripts/test.sh, which starts one, or run `scripts/postgres.sh start` and export \
             NANOSTREAM_TEST_POSTGRES=<the connection string it prints>."
        ),
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
    let binary = target.join("debug/examples").join(name);
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p nanostream-examples --example {name}` \
         (scripts/test.sh does)",
        binary.display()
    );
    binary
}

/// `scripts/postgres.sh down` or `up`.
fn server(command: &str) {
    let status =
        Command::new(workspace().join("scripts/postgres.sh")).arg(command).status().expect("scripts/postgres.sh runs");
    assert!(status.success(), "scripts/postgres.sh {command} failed");
}

async fn db() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&dsn(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server ({}): {e}", dsn()));
    tokio::spawn(connection);
    client
}

/// A table's rows: order id -> (customer, amount). Empty if it does not
/// exist yet.
async fn rows(table: &str) -> BTreeMap<String, (String, i64)> {
    let client = db().await;
    match client.query(&format!("SELECT order_id, customer, amount FROM {table}"), &[]).await {
        Ok(rows) => rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect(),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => BTreeMap::new(),
        Err(e) => panic!("reading {table}: {e}"),
    }
}

/// The per-customer totals view: customer -> (orders, total).
async fn totals(table: &str) -> BTreeMap<String, (i64, i64)> {
    let client = db().await;
    let query = format!("SELECT customer, orders, total::bigint FROM {table}_customer_totals");
    let rows = client.query(&query, &[]).await.unwrap_or_else(|e| panic!("reading the view: {e}"));
    rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect()
}

/// Orders `o-<i>` for `ids`, each sent `versions` times with a growing
/// amount, keyed by order id (so its versions stay in one partition, in
/// order). Returns what the table must hold: the last version of each.
async fn produce_orders(
    topic: &str,
    ids: std::ops::Range<u32>,
    versions: u32,
    amount: impl Fn(u32, u32) -> i64,
) -> BTreeMap<String, (String, i64)> {
    let mut expected = BTreeMap::new();
    let mut messages = Vec::new();
    for version in 0..versions {
        for i in ids.clone() {
            let (id, customer, amount) = (format!("o-{i}"), format!("c-{}", i % 17), amount(i, version));
            let json = format!(r#"{{"order_id":"{id}","customer":"{customer}","amount":{amount}}}"#);
            messages.push((Some(id.clone()), json.into_bytes()));
            expected.insert(id, (customer, amount));
        }
    }
    produce(topic, messages).await;
    expected
}

fn totals_of(rows: &BTreeMap<String, (String, i64)>) -> BTreeMap<String, (i64, i64)> {
    let mut totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (customer, amount) in rows.values() {
        let entry = totals.entry(customer.clone()).or_default();
        entry.0 += 1;
        entry.1 += amount;
    }
    totals
}

/// A running example process, its stderr kept.
struct Running {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(binary: &str, args: &[String]) -> Self {
        let mut child = Command::new(example(binary))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} starts: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().expect("not poisoned").push(line);
            }
        });
        Self { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().expect("not poisoned").join("\n")
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself; its status code.
    fn exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("waitable") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "did not exit within {within:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status code.
    fn terminate(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
        let code = self.exit(Duration::from_secs(90));
        (code, self.log())
    }
}

fn postgres_args(group: &str, inputs: &[&str], table: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["--brokers", &brokers(), "--group", group, "--input", &inputs.join(","), "--table", table]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
    args.extend(["--postgres".to_owned(), dsn()]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// Polls the table until it equals `expected`.
async fn wait_for_table(table: &str, expected: &BTreeMap<String, (String, i64)>, running: &Running) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let now = rows(table).await;
        if &now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{table} never matched: {} rows of {}; log:\n{}",
            now.len(),
            expected.len(),
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many rows `table` has (0 if it does not exist yet).
async fn count(client: &tokio_postgres::Client, table: &str) -> usize {
    match client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await {
        Ok(row) => usize::try_from(row.get::<_, i64>(0)).unwrap_or_default(),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => 0,
        Err(e) => panic!("counting {table}: {e}"),
    }
}

/// Polls the table's row count (often: the example is fast) until it
/// reaches `at_least`.
async fn wait_for_count(table: &str, at_least: usize, running: &Running) {
    let client = db().await;
    let deadline = Instant::now() + Duration::from_secs(180);
    while count(&client, table).await < at_least {
        assert!(Instant::now() < deadline, "{table} never reached {at_least} rows; log:\n{}", running.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn table_name(prefix: &str) -> String {
    unique(prefix).replace('-', "_")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_holds_the_latest_version_of_each_order_and_the_totals_follow() {
    let _serial = serial().await;
    let (eu, us, group, table) = (unique("pg-eu"), unique("pg-us"), unique("pg"), table_name("orders"));
    create_topic(&eu, 3).await;
    create_topic(&us, 2).await;
    let mut expected = produce_orders(&eu, 0..1_500, 3, |i, v| i64::from(i * 10 + v)).await;
    expected.extend(produce_orders(&us, 1_500..2_000, 2, |i, v| i64::from(i + v * 1_000)).await);

    let running = Running::start("kafka_to_postgres", &postgres_args(&group, &[&eu, &us], &table, &[]));
    wait_for_table(&table, &expected, &running).await;
    let (code, log) = running.terminate();
    assert_eq!(code, Some(0), "SIGTERM drains and exits 0; log:\n{log}");
    assert_eq!(rows(&table).await, expected);
    assert_eq!(totals(&table).await, totals_of(&expected), "the view sums the stored rows");
    println!(
        "kafka_to_postgres: {} orders from 6,500 records, {} customers",
        expected.len(),
        totals_of(&expected).len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_sqlite_is_the_same_pipeline_with_another_write_function() {
    let _serial = serial().await;
    let (input, group) = (unique("lite-in"), unique("lite"));
    create_topic(&input, 3).await;
    let expected = produce_orders(&input, 0..1_000, 2, |i, v| i64::from(i * 3 + v)).await;
    let dir = std::env::temp_dir().join(unique("kafka-to-sqlite"));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("orders.sqlite");
    let args: Vec<String> = ["--brokers", &brokers(), "--group", &group, "--input", &input, "--table", "orders"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(["--db".to_owned(), path.display().to_string()])
        .collect();
    let running = Running::start("kafka_to_sqlite", &args);
    let read = || -> BTreeMap<String, (String, i64)> {
        let Ok(db) = rusqlite::Connection::open(&path) else { return BTreeMap::new() };
        let Ok(mut query) = db.prepare("SELECT order_id, customer, amount FROM orders") else { return BTreeMap::new() };
        query
            .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .map(|rows| rows.filter_map(Result::ok).collect())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while read() != expected {
        assert!(Instant::now() < deadline, "the SQLite table never matched; log:\n{}", running.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, log) = running.terminate();
    assert_eq!(code, Some(0), "log:\n{log}");
    let db = rusqlite::Connection::open(&path).expect("opens");
    let customers: i64 =
        db.query_row("SELECT count(*) FROM orders_customer_totals", [], |r| r.get(0)).expect("the view");
    assert_eq!(customers as usize, totals_of(&expected).len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_leave_the_table_equal_to_an_uninterrupted_run() {
    let _serial = serial().await;
    const N: u32 = 30_000;
    let input = unique("pg-kill-in");
    create_topic(&input, 3).await;
    let expected = produce_orders(&input, 0..N, 2, |i, v| i64::from(i % 1_000 + v * 7)).await;

    // Uninterrupted.
    let (calm_group, calm) = (unique("pg-calm"), table_name("calm"));
    let running = Running::start("kafka_to_postgres", &postgres_args(&calm_group, &[&input], &calm, &[]));
    wait_for_table(&calm, &expected, &running).await;
    let (code, log) = running.terminate();
    assert_eq!(code, Some(0), "log:\n{log}");

    // Killed a third of the way, then restarted.
    let (group, killed) = (unique("pg-kill"), table_name("killed"));
    // Smaller batches, four in flight (they may commit out of order: the
    // upsert keeps the newer version).
    let args = postgres_args(&group, &[&input], &killed, &["--batch-rows", "200", "--in-flight", "4"]);
    let first = Running::start("kafka_to_postgres", &args);
    wait_for_count(&killed, N as usize / 10, &first).await;
    first.kill();
    let at_kill = count(&db().await, &killed).await;
    assert!(at_kill < N as usize, "killed mid-stream ({at_kill} of {N} orders stored)");
    let second = Running::start("kafka_to_postgres", &args);
    wait_for_table(&killed, &expected, &second).await;
    let (code, log) = second.terminate();
    assert_eq!(code, Some(0), "log:\n{log}");

    let (calm_rows, killed_rows) = (rows(&calm).await, rows(&killed).await);
    println!(
        "sigkill: {} records, {} orders; uninterrupted table {} rows, killed at {at_kill} rows and restarted: {} rows, \
         identical: {}",
        2 * N,
        expected.len(),
        calm_rows.len(),
        killed_rows.len(),
        calm_rows == killed_rows
    );
    assert_eq!(calm_rows, expected);
    assert_eq!(killed_rows, calm_rows, "the restarted run's table equals the uninterrupted one");
    assert_eq!(totals(&killed).await, totals(&calm).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_for_seconds_loses_nothing() {
    let _serial = serial().await;
    let (input, group, table) = (unique("pg-away-in"), unique("pg-away"), table_name("away"));
    create_topic(&input, 3).await;
    let mut expected = produce_orders(&input, 0..5_000, 1, |i, _| i64::from(i)).await;
    let running = Running::start("kafka_to_postgres", &postgres_args(&group, &[&input], &table, &[]));
    wait_for_table(&table, &expected, &running).await;

    server("down");
    expected.extend(produce_orders(&input, 5_000..10_000, 1, |i, _| i64::from(i)).await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    server("up");

    wait_for_table(&table, &expected, &running).await;
    let (code, log) = running.terminate();
    assert_eq!(code, Some(0), "log:\n{log}");
    assert!(log.contains("retrying"), "it retried while the server was down; log:\n{log}");
    println!("database away for 4 s: {} orders stored, none lost", rows(&table).await.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_table_rejects_stops_the_example_with_an_error_naming_the_node_and_the_row() {
    let _serial = serial().await;
    let (input, group, table) = (unique("pg-bad-in"), unique("pg-bad"), table_name("bad"));
    create_topic(&input, 1).await;
    produce_orders(&input, 0..300, 1, |i, _| if i == 137 { -500 } else { i64::from(i) }).await;
    let mut running = Running::start("kafka_to_postgres", &postgres_args(&group, &[&input], &table, &[]));
    let code = running.exit(Duration::from_secs(60));
    let log = running.log();
    assert_eq!(code, Some(1), "log:\n{log}");
    println!("the error: {}", log.lines().last().unwrap_or_default());
    assert!(log.contains("upsert"), "names the node; log:\n{log}");
    assert!(log.contains("order_id: \"o-137\""), "names the row; log:\n{log}");
    assert!(log.contains("check constraint"), "says why; log:\n{log}");
    assert!(!rows(&table).await.contains_key("o-137"));
    // Nothing of the rejected batch was acknowledged: offsets stop before it.
    let committed = committed(&group, &input, 1);
    assert!(committed[0] <= 137, "committed past the rejected row: {committed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dead_letters_a_rejected_row_goes_to_the_topic_and_the_rest_is_stored() {
    let _serial = serial().await;
    let (input, dlq, group, table) = (unique("pg-dl-in"), unique("pg-dl"), unique("pg-dl"), table_name("dl"));
    create_topic(&input, 2).await;
    create_topic(&dlq, 1).await;
    let mut expected = produce_orders(&input, 0..400, 1, |i, _| if i == 42 { -1 } else { i64::from(i) }).await;
    expected.remove("o-42");
    produce(&input, [(Some("junk".to_owned()), b"not an order".to_vec())]).await;

    let args = postgres_args(&group, &[&input], &table, &["--dead-letters", &dlq]);
    let running = Running::start("kafka_to_postgres", &args);
    wait_for_table(&table, &expected, &running).await;
    let letters = tokio::task::spawn_blocking(move || read_exactly(&dlq, 1, 2)).await.expect("reader");
    let (code, log) = running.terminate();
    assert_eq!(code, Some(0), "log:\n{log}");

    let rejected = letters.iter().find(|l| l.key.as_deref() == Some("o-42")).expect("the rejected order");
    assert_eq!(rejected.text(), r#"{"order_id":"o-42","customer":"c-8","amount":-1}"#, "its original bytes");
    assert_eq!(rejected.header("node"), Some("upsert"));
    assert!(rejected.header("error").is_some_and(|e| e.contains("check constraint")), "{rejected:?}");
    let junk = letters.iter().find(|l| l.key.as_deref() == Some("junk")).expect("the payload that is not an order");
    assert_eq!(junk.text(), "not an order");
}
