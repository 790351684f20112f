//! Kafka round trip: nanostream against a hand-written rdkafka loop.
//!
//! Preloads small JSON messages into a 3-partition topic, then, alternating
//! over rounds on the same broker and in the same process, copies them to
//! an output topic with the `kafka_etl` transformation (parse, add
//! `"source_topic"`, re-encode, same key):
//!
//! - nanostream: `KafkaSource -> #[node] tag -> KafkaSink` (the source
//!   decodes JSON objects, the node adds the field, the sink encodes), with
//!   at-least-once acknowledgement tracking (offsets committed only once the
//!   output is delivered);
//! - nanostream with `auto_commit(true)` (no acknowledgement tracking), to
//!   show what the guarantee costs;
//! - hand-written: one consumer loop that parses, tags and hands each
//!   message to a `ThreadedProducer`, never awaiting a delivery.
//!
//! Each run is a process of its own (this program, started with `--child`),
//! measured from start to clean exit as a user pays for it: creating the
//! clients, joining the consumer group, copying every message, then
//! stopping cleanly (nanostream: a graceful shutdown that drains and
//! commits; hand-written: a final commit and a producer flush). Wall time
//! and the child's user + system CPU time (read from the kernel once it has
//! exited) are taken for the whole process; then the output topic is read
//! back and must hold every message. The broker runs on the same cores, so
//! CPU per message is the fairer figure.
//!
//! It prints the median over the rounds (and the best round) of messages/s
//! and CPU time per message for each, and the ratios of nanostream to the
//! hand-written loop.
//!
//! ```text
//! scripts/broker.sh start   # prints HOST:PORT
//! cargo run --release --example kafka_bench -- --brokers HOST:PORT [--messages N] [--rounds R] [--workers W] [--parts P]
//! cargo run --release --example kafka_bench --features mimalloc -- --brokers HOST:PORT
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use nanostream::prelude::*;
use nanostream_kafka::{Json, KafkaSink, KafkaSource, Outgoing, Record};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde_json::{Map, Value};

/// With `--features mimalloc`, both sides run on mimalloc instead of the
/// system allocator (see the README: glibc's malloc makes frees of memory
/// allocated on another thread, as in any multi-task pipeline, contend).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ALLOCATOR: &str = if cfg!(feature = "mimalloc") { "mimalloc" } else { "system (glibc malloc)" };

#[derive(Debug, Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// Messages to preload and copy.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Rounds; each round runs every variant once, in alternating order.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Use this already loaded 3-partition topic (holding `--messages`
    /// messages) instead of preloading a new one (for profiling).
    #[arg(long)]
    input: Option<String>,
    /// Run only the variants whose name contains this (for profiling).
    #[arg(long)]
    only: Option<String>,
    /// Worker threads of the Tokio runtime the nanostream pipelines run on.
    /// The default, 1, gives them as many application threads as the
    /// hand-written loop has; 2 shows what spreading one broker-bound
    /// pipeline over both cores costs in CPU.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Split the nanostream source into this many parts (members of the
    /// group), each driving a pipeline of its own (`build_parts`).
    #[arg(long, default_value_t = 1)]
    parts: usize,
    /// Chunk size of the nanostream graph (items handed from node to node
    /// at a time).
    #[arg(long, default_value_t = 1024)]
    chunk: usize,
    /// Internal: run one variant in this process (0, 1 or 2) and exit.
    #[arg(long, hide = true)]
    child: Option<usize>,
    /// Internal: the output topic of a `--child` run.
    #[arg(long, hide = true)]
    output: Option<String>,
}

const GROUP_SETTINGS: [(&str, &str); 2] = [("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "500")];

/// User + system CPU time of the children of this process that have
/// exited and been waited for.
fn children_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // cutime and cstime are fields 16 and 17; here indices 13 and 14. Linux
    // reports them in clock ticks of 1/100 s.
    Duration::from_millis((ticks(13) + ticks(14)) * 10)
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

async fn create_topic(brokers: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin client");
    let results = admin
        .create_topics([&NewTopic::new(name, 3, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("broker reachable");
    for result in results {
        result.expect("topic created");
    }
}

/// Counts deliveries.
struct Counting(Arc<AtomicU64>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if result.is_ok() {
            self.0.fetch_add(1, Ordering::Relaxed);
        } else {
            eprintln!("delivery failed: {result:?}");
        }
    }
}

fn producer(brokers: &str, delivered: Arc<AtomicU64>) -> ThreadedProducer<Counting> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create_with_context(Counting(delivered))
        .expect("producer")
}

fn send_all(producer: &ThreadedProducer<Counting>, mut record: BaseRecord<'_, [u8], [u8]>) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((error, _)) => panic!("produce failed: {error}"),
        }
    }
}

fn preload(brokers: &str, topic: &str, n: u64) {
    let delivered = Arc::new(AtomicU64::new(0));
    let producer = producer(brokers, delivered.clone());
    for i in 0..n {
        let key = format!("user-{}", i % 1000);
        let payload = format!(r#"{{"id":{i},"user":"user-{}","amount":{}}}"#, i % 1000, i % 997);
        send_all(&producer, BaseRecord::to(topic).key(key.as_bytes()).payload(payload.as_bytes()));
    }
    producer.flush(Duration::from_secs(120)).expect("preloaded");
    assert_eq!(delivered.load(Ordering::Relaxed), n, "every preloaded message delivered");
}

/// The transformation both sides apply.
fn tag_bytes(payload: &[u8], topic: &str) -> Option<Vec<u8>> {
    let mut object: Map<String, Value> = serde_json::from_slice(payload).ok()?;
    object.insert("source_topic".to_owned(), Value::String(topic.to_owned()));
    serde_json::to_vec(&object).ok()
}

/// The nanostream way: the source decodes JSON objects, the sink encodes
/// them; the node only adds the field.
#[node]
async fn tag(record: Record<Map<String, Value>>) -> Outgoing<Map<String, Value>> {
    let mut object = record.value;
    object.insert("source_topic".to_owned(), Value::String(record.topic.to_string()));
    let message = Outgoing::new(object);
    match record.key {
        Some(key) => message.with_key(key),
        None => message,
    }
}

async fn run_nanostream(args: &Args, input: &str, output: &str, auto_commit: bool) {
    let (brokers, n, parts) = (args.brokers.as_str(), args.messages, args.parts);
    let mut source = KafkaSource::builder(brokers, &unique("bench-nano")).topic(input).auto_commit(auto_commit);
    for (k, v) in GROUP_SETTINGS {
        source = source.set(k, v);
    }
    let sources = source.build_parts(parts, Json).expect("source");
    let mut g = Topology::builder();
    g.chunk_size(args.chunk);
    let mut delivered = Vec::new();
    for (i, source) in sources.into_iter().enumerate() {
        let sink = KafkaSink::builder(brokers).default_topic(output).set("linger.ms", "5").build(Json).expect("sink");
        delivered.push(sink.deliveries());
        let records = g.source(format!("consume[{i}]"), source);
        let tagged = g.node(format!("tag[{i}]"), tag(), records);
        g.sink(format!("produce[{i}]"), sink, tagged);
    }
    let running = g.build().expect("valid").start();
    while delivered.iter().map(|d| d.get()).sum::<u64>() < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.shutdown(Duration::from_secs(60)).await.expect("clean shutdown");
}

fn run_hand_written(brokers: &str, input: &str, output: &str, n: u64) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("bench-hand"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true");
    for (k, v) in GROUP_SETTINGS {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    consumer.subscribe(&[input]).expect("subscribe");
    let delivered = Arc::new(AtomicU64::new(0));
    let producer = producer(brokers, delivered.clone());
    let mut consumed = 0;
    while consumed < n {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = message.expect("consumed");
        consumed += 1;
        if let Some(value) = tag_bytes(message.payload().unwrap_or_default(), message.topic()) {
            let mut record = BaseRecord::to(output).payload(&value[..]);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            send_all(&producer, record);
        }
    }
    // A clean stop: every delivery confirmed, the position committed.
    producer.flush(Duration::from_secs(60)).expect("deliveries confirmed");
    assert_eq!(delivered.load(Ordering::Relaxed), n, "every message delivered");
    consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync).expect("final commit");
    consumer.unsubscribe();
}

/// Runs one variant in this process, from start to clean exit.
fn child(args: &Args, variant: usize) {
    let output = args.output.as_deref().expect("--child needs --output");
    let input = args.input.as_deref().expect("--child needs --input");
    match variant {
        0 | 1 => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.workers)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(run_nanostream(args, input, output, variant == 1));
        }
        _ => run_hand_written(&args.brokers, input, output, args.messages),
    }
}

/// Counts the messages of a 3-partition topic, reading until `n` are seen
/// (or nothing more comes for 10 s).
fn count_messages(brokers: &str, topic: &str, n: u64) -> u64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("bench-check"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut partitions = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        partitions.add_partition_offset(topic, p, rdkafka::Offset::Beginning).expect("valid offset");
    }
    consumer.assign(&partitions).expect("assign");
    let mut seen = 0;
    let mut last = Instant::now();
    while seen < n && last.elapsed() < Duration::from_secs(10) {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            message.expect("read back");
            seen += 1;
            last = Instant::now();
        }
    }
    seen
}

/// Runs one variant as a child process; returns its wall and CPU time.
fn measure(args: &Args, input: &str, variant: usize) -> (Duration, Duration) {
    let output = unique("bench-out");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(create_topic(&args.brokers, &output));
    let exe = std::env::current_exe().expect("own path");
    let cpu = children_cpu_time();
    let started = Instant::now();
    let status = std::process::Command::new(exe)
        .args(["--brokers", &args.brokers, "--input", input, "--output", &output])
        .args(["--messages", &args.messages.to_string(), "--workers", &args.workers.to_string()])
        .args(["--parts", &args.parts.to_string(), "--chunk", &args.chunk.to_string()])
        .args(["--child", &variant.to_string()])
        .status()
        .expect("child runs");
    let wall = started.elapsed();
    let cpu = children_cpu_time() - cpu;
    assert!(status.success(), "the child run failed: {status}");
    let copied = count_messages(&args.brokers, &output, args.messages);
    assert_eq!(copied, args.messages, "every message reached the output topic");
    (wall, cpu)
}

fn main() {
    let args = Args::parse();
    if let Some(variant) = args.child {
        child(&args, variant);
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let input = match &args.input {
        Some(input) => input.clone(),
        None => {
            let input = unique("bench-in");
            rt.block_on(create_topic(&args.brokers, &input));
            eprintln!("preloading {} messages into {input} (3 partitions)...", args.messages);
            preload(&args.brokers, &input, args.messages);
            input
        }
    };

    let names = ["nanostream (at-least-once)", "nanostream (auto commit)", "hand-written rdkafka loop"];
    let mut results: Vec<Vec<(Duration, Duration)>> = vec![Vec::new(); names.len()];
    for round in 0..args.rounds {
        let mut order = [0, 1, 2];
        if round % 2 == 1 {
            order.reverse();
        }
        for variant in order {
            if args.only.as_ref().is_some_and(|only| !names[variant].contains(only.as_str())) {
                continue;
            }
            let (wall, cpu) = measure(&args, &input, variant);
            eprintln!(
                "round {round}: {:<28} {:>9.0} msg/s  {:>6.2} µs CPU/msg",
                names[variant],
                args.messages as f64 / wall.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / args.messages as f64
            );
            results[variant].push((wall, cpu));
        }
    }

    if args.only.is_some() {
        return;
    }
    // Medians over the rounds (the machine and the broker are shared, so
    // single runs are noisy), and the best round of each for reference.
    let summary = |r: &[(Duration, Duration)]| {
        let per_message = |d: Duration| d.as_secs_f64() * 1e6 / args.messages as f64;
        let mut rates: Vec<f64> = r.iter().map(|x| args.messages as f64 / x.0.as_secs_f64()).collect();
        let mut cpus: Vec<f64> = r.iter().map(|x| per_message(x.1)).collect();
        rates.sort_by(f64::total_cmp);
        cpus.sort_by(f64::total_cmp);
        let median =
            |v: &[f64]| if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
        (median(&rates), median(&cpus), rates[rates.len() - 1], cpus[0])
    };
    println!(
        "{} messages, input topic with 3 partitions, {} rounds, allocator: {ALLOCATOR}, nanostream on {} Tokio worker(s) in {} pipeline(s); each run a process timed from start to clean exit",
        args.messages, args.rounds, args.workers, args.parts
    );
    println!();
    println!(
        "| pipeline | messages/s (median) | CPU µs/message (median) | messages/s (best) | CPU µs/message (best) |"
    );
    println!("|---|---:|---:|---:|---:|");
    let rows: Vec<(f64, f64, f64, f64)> = results.iter().map(|r| summary(r)).collect();
    for (name, (rate, cpu, best_rate, best_cpu)) in names.iter().zip(&rows) {
        println!("| {name} | {rate:.0} | {cpu:.2} | {best_rate:.0} | {best_cpu:.2} |");
    }
    println!();
    println!(
        "ratio_throughput={:.2} ratio_cpu_per_message={:.2} ack_tracking_throughput_cost={:.2}",
        rows[0].0 / rows[2].0,
        rows[0].1 / rows[2].1,
        rows[0].0 / rows[1].0
    );
}
