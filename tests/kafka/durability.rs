//! At-least-once delivery with real processes and a real broker: the
//! `kafka_etl` example is killed (SIGKILL), stopped (SIGTERM), scaled out
//! and fed poison messages, and the output is checked for loss. Each test
//! prints its counts. The tests run one at a time: each starts several
//! pipelines and the machine has two cores.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// Tests here start several pipelines each: run them one at a time.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The `kafka_etl` example binary, built by `cargo test --workspace` (and by
/// scripts/test.sh).
fn etl_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let binary = target.join("debug/examples/kafka_etl");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p nanostream-examples --example kafka_etl` \
         (scripts/test.sh and `cargo test --workspace` do)",
        binary.display()
    );
    binary
}

/// Latest progress line of a running `kafka_etl`.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    consumed: u64,
    produced: u64,
    dead_letters: u64,
}

struct Etl {
    child: Child,
    progress: Arc<Mutex<Progress>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Etl {
    fn start(group: &str, inputs: &[&str], output: &str, dlq: &str) -> Self {
        let mut child = Command::new(etl_binary())
            .args(["--brokers", &brokers(), "--group", group, "--input", &inputs.join(",")])
            .args(["--output", output, "--dead-letter", dlq, "--progress-every", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kafka_etl starts");
        let progress = Arc::new(Mutex::new(Progress::default()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped");
        let (p, l) = (progress.clone(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let field = |name: &str| {
                    line.split_whitespace().find_map(|f| f.strip_prefix(name)).and_then(|v| v.parse::<u64>().ok())
                };
                if let (Some(consumed), Some(produced), Some(dead_letters)) =
                    (field("consumed="), field("produced="), field("dead_letters="))
                {
                    *p.lock().expect("not poisoned") = Progress { consumed, produced, dead_letters };
                }
                l.lock().expect("not poisoned").push(line);
            }
        });
        Self { child, progress, log }
    }

    fn progress(&self) -> Progress {
        *self.progress.lock().expect("not poisoned")
    }

    fn wait_until(&self, what: &str, done: impl Fn(Progress) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done(self.progress()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        self.log.lock().expect("not poisoned").join("\n")
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// SIGTERM; returns the exit status code.
    fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.try_wait().expect("waitable") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "kafka_etl did not stop after SIGTERM; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `{"id":i}` for every i, keyed by i.
async fn produce_ids(topic: &str, ids: std::ops::Range<u64>) {
    produce(topic, ids.map(|i| (Some(i.to_string()), format!(r#"{{"id":{i}}}"#).into_bytes()))).await;
}

/// Reads `topic` from the beginning until nothing new comes for `idle` or
/// `until` says it has everything, and counts each id.
fn read_ids(topic: &str, partitions: i32, until: impl Fn(&HashMap<u64, u32>) -> bool) -> (HashMap<u64, u32>, u64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("verify"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("offset");
    }
    consumer.assign(&tpl).expect("assign");
    let (mut ids, mut total) = (HashMap::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last_new = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(message) => {
                let message = message.expect("readable");
                let value: serde_json::Value =
                    serde_json::from_slice(message.payload().unwrap_or_default()).expect("JSON");
                *ids.entry(value["id"].as_u64().expect("an id")).or_insert(0) += 1;
                total += 1;
                last_new = Instant::now();
            }
            None if until(&ids) && last_new.elapsed() > Duration::from_secs(3) => break,
            None => {}
        }
        if Instant::now() > deadline {
            break;
        }
    }
    (ids, total)
}

fn report(test: &str, inputs: u64, ids: &HashMap<u64, u32>, total: u64, dead_letters: u64) -> u64 {
    let missing = (0..inputs).filter(|i| !ids.contains_key(i)).count();
    let duplicates = total - ids.len() as u64;
    println!(
        "{test}: inputs={inputs} outputs={total} distinct={} missing={missing} duplicates={duplicates} dead_letters={dead_letters}",
        ids.len()
    );
    assert_eq!(missing, 0, "{missing} input ids never reached the output");
    duplicates
}

fn all_present(n: u64) -> impl Fn(&HashMap<u64, u32>) -> bool {
    move |ids| ids.len() as u64 >= n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_loses_nothing() {
    let _serial = serial().await;
    const N: u64 = 200_000;
    let (input, output, dlq, group) = (unique("crash-in"), unique("crash-out"), unique("crash-dlq"), unique("crash"));
    create_topic(&input, 3).await;
    create_topic(&output, 3).await;
    create_topic(&dlq, 1).await;
    produce_ids(&input, 0..N).await;

    let first = Etl::start(&group, &[&input], &output, &dlq);
    first.wait_until("a third of the input", |p| p.produced >= N / 3);
    let at_kill = first.progress();
    first.kill();

    let second = Etl::start(&group, &[&input], &output, &dlq);
    let (ids, total) = tokio::task::spawn_blocking({
        let output = output.clone();
        move || read_ids(&output, 3, all_present(N))
    })
    .await
    .expect("reader");
    assert_eq!(second.terminate(), Some(0), "the restarted process stops cleanly");
    println!("killed at consumed={} produced={}", at_kill.consumed, at_kill.produced);
    report("sigkill", N, &ids, total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_commits_so_a_restart_duplicates_nothing() {
    let _serial = serial().await;
    const N: u64 = 200_000;
    let (input, output, dlq, group) = (unique("term-in"), unique("term-out"), unique("term-dlq"), unique("term"));
    create_topic(&input, 3).await;
    create_topic(&output, 3).await;
    create_topic(&dlq, 1).await;
    produce_ids(&input, 0..N).await;

    let first = Etl::start(&group, &[&input], &output, &dlq);
    first.wait_until("a third of the input", |p| p.produced >= N / 3);
    assert_eq!(first.terminate(), Some(0), "SIGTERM exits with status 0");

    let second = Etl::start(&group, &[&input], &output, &dlq);
    let (ids, total) = tokio::task::spawn_blocking({
        let output = output.clone();
        move || read_ids(&output, 3, all_present(N))
    })
    .await
    .expect("reader");
    assert_eq!(second.terminate(), Some(0));
    let duplicates = report("sigterm", N, &ids, total, 0);
    // Everything the first process consumed was delivered and committed
    // before it exited: the restart re-reads nothing.
    assert_eq!(duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_split_six_partitions_and_survive_losing_one() {
    let _serial = serial().await;
    const N: u64 = 120_000;
    let (input, output, dlq, group) = (unique("scale-in"), unique("scale-out"), unique("scale-dlq"), unique("scale"));
    create_topic(&input, 6).await;
    create_topic(&output, 3).await;
    create_topic(&dlq, 1).await;

    let processes: Vec<Etl> = (0..3).map(|_| Etl::start(&group, &[&input], &output, &dlq)).collect();
    // Feed the topic while the group forms, so every member gets work.
    let feeding = tokio::spawn({
        let input = input.clone();
        async move {
            for start in (0..N).step_by(2_000) {
                produce_ids(&input, start..start + 2_000).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    for p in &processes {
        p.wait_until("every process to get partitions", |p| p.consumed > 0);
    }
    let mut processes = processes.into_iter();
    let victim = processes.next().expect("three");
    let consumed_by_victim = victim.progress().consumed;
    victim.kill();
    feeding.await.expect("fed");

    let (ids, total) = tokio::task::spawn_blocking({
        let output = output.clone();
        move || read_ids(&output, 3, all_present(N))
    })
    .await
    .expect("reader");
    for p in processes {
        assert_eq!(p.terminate(), Some(0));
    }
    println!("the killed process had consumed {consumed_by_victim}");
    report("scale-out", N, &ids, total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_topic_and_the_pipeline_goes_on() {
    let _serial = serial().await;
    const N: u64 = 100_000;
    let (input, output, dlq, group) =
        (unique("poison-in"), unique("poison-out"), unique("poison-dlq"), unique("poison"));
    create_topic(&input, 3).await;
    create_topic(&output, 3).await;
    create_topic(&dlq, 1).await;
    // 1% malformed: every 100th message is not a JSON object.
    produce(
        &input,
        (0..N).map(|i| {
            let payload = match i % 200 {
                0 => format!("garbage {i}"),
                100 => format!("[{i}]"),
                _ => format!(r#"{{"id":{i}}}"#),
            };
            (Some(i.to_string()), payload.into_bytes())
        }),
    )
    .await;
    let bad: Vec<u64> = (0..N).filter(|i| i % 100 == 0).collect();

    let mut etl = Etl::start(&group, &[&input], &output, &dlq);
    let good = N - bad.len() as u64;
    let (ids, total) = tokio::task::spawn_blocking({
        let output = output.clone();
        move || read_ids(&output, 3, move |ids| ids.len() as u64 >= good)
    })
    .await
    .expect("reader");
    let dead = tokio::task::spawn_blocking({
        let dlq = dlq.clone();
        let expected = bad.len();
        move || read_exactly(&dlq, 1, expected)
    })
    .await
    .expect("reader");
    assert!(etl.child_running(), "the pipeline is still running");
    etl.wait_until("progress to count every dead letter", |p| p.dead_letters == 1_000);
    assert_eq!(etl.terminate(), Some(0));

    let missing_good = (0..N).filter(|i| i % 100 != 0 && !ids.contains_key(i)).count();
    let mut dead_keys: Vec<u64> =
        dead.iter().map(|d| d.key.as_deref().and_then(|k| k.parse().ok()).expect("key")).collect();
    dead_keys.sort_unstable();
    println!(
        "poison: inputs={N} good={good} outputs={total} duplicates={} dead_letters={} missing_good={missing_good}",
        total - ids.len() as u64,
        dead.len()
    );
    assert_eq!(missing_good, 0);
    assert!(ids.keys().all(|i| i % 100 != 0), "no malformed message reached the output");
    assert_eq!(dead_keys, bad, "every malformed message is in the dead-letter topic");
    assert!(dead.iter().all(|d| d.header("error").is_some()), "each carries its error");
    assert!(dead.iter().all(|d| d.header("node") == Some("tag")), "and the node that failed");
    assert!(dead.iter().all(|d| d.header("source_topic") == Some(input.as_str())), "and where it was read");
    assert_eq!(dead.iter().find(|d| d.key.as_deref() == Some("0")).map(Read::text).as_deref(), Some("garbage 0"));
}

impl Etl {
    fn child_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Etl {
    /// A failing test must not leave processes behind.
    fn drop(&mut self) {
        if self.child_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `kafka_etl`'s arguments for a bounded copy from `input` to `output`,
/// dead letters to `dlq`, then `extra`.
fn bounded_etl_args(group: &str, input: &str, output: &str, dlq: &str, extra: &[&str]) -> Vec<String> {
    let brokers = brokers();
    let base = ["--brokers", &brokers, "--group", group, "--input", input, "--output", output, "--dead-letter", dlq];
    base.iter().chain(&["--until-end"]).chain(extra).map(|s| (*s).to_owned()).collect()
}

/// Runs `kafka_etl` with `args` to its exit (at most `limit`); returns its
/// exit code, how long it ran, and its stderr lines.
fn run_etl(args: Vec<String>, limit: Duration) -> (Option<i32>, Duration, Vec<String>) {
    let (code, elapsed, _, stderr) = run_etl_with(args, &[], limit);
    (code, elapsed, stderr)
}

/// The same with environment variables; returns stdout's lines too.
fn run_etl_with(
    args: Vec<String>,
    envs: &[(&str, &str)],
    limit: Duration,
) -> (Option<i32>, Duration, Vec<String>, Vec<String>) {
    let started = Instant::now();
    let mut child = Command::new(etl_binary())
        .args(&args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kafka_etl starts");
    let lines = |pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || BufReader::new(pipe).lines().map_while(Result::ok).collect::<Vec<_>>())
    };
    let stdout = lines(Box::new(child.stdout.take().expect("piped")));
    let stderr = lines(Box::new(child.stderr.take().expect("piped")));
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitable") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kafka_etl {args:?} still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    (status.code(), elapsed, stdout.join().expect("reader"), stderr.join().expect("reader"))
}

/// Secrets given with `--set` appear nowhere in `kafka_etl`'s output at
/// `RUST_LOG=trace` with librdkafka's own debug logs on: not when it runs
/// to the end, not when it cannot log in, not in a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_given_with_set_appear_in_no_output() {
    let _serial = serial().await;
    let (input, output, dlq, group) =
        (unique("secret-in"), unique("secret-out"), unique("secret-dlq"), unique("secret"));
    create_topic(&input, 1).await;
    create_topic(&output, 1).await;
    create_topic(&dlq, 1).await;
    produce_unbatched(&input, (0..20).map(|i| (Some(i.to_string()), format!(r#"{{"id":{i}}}"#).into_bytes()))).await;
    let base = |extra: &[&str]| {
        let mut args =
            bounded_etl_args(&group, &input, &output, &dlq, &["--startup-timeout", "3", "--set", "debug=all"]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let secret = "hunter2-7f3a9c";
    let runs = [
        // Plaintext: the password is set but unused; the copy succeeds.
        (base(&["--set", &format!("sasl.password={secret}"), "--set", "sasl.username=alice"]), Some(0)),
        // A SASL login the broker refuses: the source fails at once.
        (
            base(&[
                "--set",
                "security.protocol=sasl_plaintext",
                "--set",
                "sasl.mechanism=PLAIN",
                "--set",
                "sasl.username=alice",
                "--set",
                &format!("sasl.password={secret}"),
            ]),
            Some(1),
        ),
        // A setting librdkafka rejects, carrying the secret as its value:
        // an inline private key that is not one.
        (base(&["--set", "security.protocol=ssl", "--set", &format!("ssl.key.pem={secret}")]), Some(1)),
    ];
    for (args, expected) in runs {
        let (code, _, stdout, stderr) =
            tokio::task::spawn_blocking(move || run_etl_with(args, &[("RUST_LOG", "trace")], Duration::from_secs(120)))
                .await
                .expect("runner");
        let all = [stdout, stderr].concat().join("\n");
        assert_eq!(code, expected, "exit status; output:\n{all}");
        assert!(all.lines().count() > 1 || expected == Some(1), "it said something:\n{all}");
        assert!(!all.contains(secret), "the secret leaked:\n{all}");
    }
}

/// `--until-end` copies what the input held at start, then drains,
/// commits and exits 0 on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_end_copies_what_was_there_and_exits_zero() {
    let _serial = serial().await;
    const N: u64 = 2_000;
    let (input, output, dlq, group) =
        (unique("bounded-in"), unique("bounded-out"), unique("bounded-dlq"), unique("bounded"));
    create_topic(&input, 3).await;
    create_topic(&output, 3).await;
    create_topic(&dlq, 1).await;
    // One record per batch: the test broker's end offsets are right only
    // then (BROKER.md).
    produce_unbatched(&input, (0..N).map(|i| (Some(i.to_string()), format!(r#"{{"id":{i}}}"#).into_bytes()))).await;
    let args = bounded_etl_args(&group, &input, &output, &dlq, &[]);
    let (code, elapsed, log) =
        tokio::task::spawn_blocking(move || run_etl(args, Duration::from_secs(120))).await.expect("runner");
    assert_eq!(code, Some(0), "exit status; log:\n{}", log.join("\n"));
    let (ids, total) = tokio::task::spawn_blocking({
        let output = output.clone();
        move || read_ids(&output, 3, all_present(N))
    })
    .await
    .expect("reader");
    assert_eq!(ids.len() as u64, N, "every message copied");
    assert_eq!(total, N, "each once: the run drained and committed before it exited");
    let committed: i64 =
        tokio::task::spawn_blocking(move || committed(&group, &input, 3)).await.expect("reader").iter().sum();
    assert_eq!(committed, N as i64, "committed to the end");
    println!("until_end: {N} messages copied in {elapsed:?}");
}

/// Pointed at a port where nothing listens, or at a topic that does not
/// exist, `kafka_etl` exits non-zero within 30 s with one clear error line
/// and no flood of log lines on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_etl_exits_non_zero_fast_with_a_clear_error() {
    let _serial = serial().await;
    let brokers = brokers();
    let missing = unique("no-such-topic");
    let cases: [(&str, &str, &str); 2] =
        [("127.0.0.1:1", "in", "no Kafka broker answered"), (&brokers, &missing, "does not exist")];
    for (at, input, says) in cases {
        let args = ["--brokers", at, "--group", "g", "--input", input, "--output", "o", "--dead-letter", "d"];
        let (code, elapsed, log) = run_etl(args.map(str::to_owned).to_vec(), Duration::from_secs(60));
        let text = log.join("\n");
        assert_ne!(code, Some(0), "{args:?} must fail; log:\n{text}");
        assert!(elapsed < Duration::from_secs(30), "{args:?} took {elapsed:?}");
        assert!(log.len() <= 15, "{} lines for {args:?}:\n{text}", log.len());
        let clear = log.iter().filter(|line| line.starts_with("kafka_etl: ") && line.contains("failed")).count();
        assert_eq!(clear, 1, "one error line for {args:?}:\n{text}");
        assert!(text.contains(says), "{args:?} should say {says:?}:\n{text}");
        println!("{at} {input}: exit {code:?} after {elapsed:?}, {} lines", log.len());
    }
}

/// A message as it is on the broker, bytes and all.
#[derive(Debug, Clone, PartialEq)]
struct RawMessage {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Reads `expected` messages of a one-partition `topic` as they are.
fn read_raw(topic: &str, expected: usize) -> Vec<RawMessage> {
    use rdkafka::message::Headers;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("raw-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).expect("offset");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < expected && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("readable");
            let headers = message
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
                .unwrap_or_default();
            out.push(RawMessage {
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    out
}

/// Poison records never stop the pipeline: a key and a header value that
/// are not UTF-8 and a header without a value go through untouched; a
/// payload near the size limit and one that is not UTF-8 go to the
/// dead-letter topic with their original bytes; what follows still flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dead_letters_with_their_bytes_and_the_rest_flows() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureRecord, Producer};
    let _serial = serial().await;
    let (input, output, dlq, group) =
        (unique("poison-in"), unique("poison-out"), unique("poison-dlq"), unique("poison"));
    for topic in [&input, &output, &dlq] {
        create_topic(topic, 1).await;
    }
    let huge = vec![b'x'; 900_000];
    let not_utf8 = vec![0xff, 0x00, 0x80];
    let odd_key = vec![0xff, 0xfe, b'k'];
    let odd_header = vec![0xc3, 0x28];
    let producer = unbatched_producer();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "bin", value: Some(&odd_header) })
        .insert(Header { key: "empty", value: None::<&[u8]> });
    type Produced<'a> = (Option<&'a [u8]>, &'a [u8], Option<OwnedHeaders>);
    let messages: Vec<Produced> = vec![
        (Some(&odd_key), br#"{"id":1}"#, Some(headers)),
        (None, &huge, None),
        (None, &not_utf8, None),
        (None, br#"{"id":4}"#, None),
    ];
    for (key, payload, headers) in messages {
        let mut record = FutureRecord::<[u8], [u8]>::to(&input).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("delivered");
    }
    producer.flush(Duration::from_secs(10)).expect("flushed");

    let args = bounded_etl_args(&group, &input, &output, &dlq, &[]);
    let (code, _, _, log) =
        tokio::task::spawn_blocking(move || run_etl_with(args, &[], Duration::from_secs(120))).await.expect("runner");
    assert_eq!(code, Some(0), "the poison did not stop it; log:\n{}", log.join("\n"));

    let (out, letters) =
        tokio::task::spawn_blocking(move || (read_raw(&output, 2), read_raw(&dlq, 2))).await.expect("reader");
    assert_eq!(out.len(), 2, "both objects copied");
    assert_eq!(out[0].key.as_deref(), Some(&odd_key[..]), "the key, byte for byte");
    assert_eq!(
        out[0].headers,
        [("bin".to_owned(), Some(odd_header.clone())), ("empty".to_owned(), None)],
        "the headers, byte for byte, the one without a value included"
    );
    assert!(String::from_utf8_lossy(&out[1].payload).contains(r#""id":4"#), "what follows the poison flows");
    assert_eq!(letters.len(), 2, "both poison payloads dead-lettered");
    assert_eq!(letters[0].payload, huge, "the large payload, as it was");
    assert_eq!(letters[1].payload, not_utf8, "the payload that is not UTF-8, as it was");
    for letter in &letters {
        assert!(letter.headers.iter().any(|(k, v)| k == "error" && v.is_some()), "{:?}", letter.headers);
    }
}
