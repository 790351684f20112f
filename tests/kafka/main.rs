//! Kafka sources and sinks against a real Kafka-compatible broker (Tansu).
//! Run through ./scripts/test.sh, which starts the broker; without one these
//! tests fail with a message saying so.

mod checkpoints;
mod common;
mod event_time;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use nanostream::prelude::*;
use nanostream::{Error, Sink, TopologyBuilder, TopologyHandle, operators::then};
use nanostream_kafka::{
    Bincode, DecodeErrors, Decoder, Json, KafkaSink, KafkaSource, KafkaSourceBuilder, Outgoing, Raw, Record, StartFrom,
    Utf8, encode_with,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

fn source(group: &str, topics: &[&str]) -> KafkaSourceBuilder {
    let mut builder = KafkaSource::builder(&brokers(), group).topics(topics.iter().copied());
    for (k, v) in GROUP_SETTINGS {
        builder = builder.set(k, v);
    }
    builder
}

/// Runs `source` into a stream, takes `n` records, shuts down gracefully.
async fn consume_n<T: Send + 'static, D: Decoder<T>>(source: KafkaSource<T, D>, n: usize) -> Vec<Record<T>> {
    let mut g = Topology::builder();
    let records = g.source("consume", source);
    let (sink, stream) = into_stream(n.max(1) * 2);
    g.sink("collect", sink, records);
    let running = g.build().expect("valid").start();
    let got: Vec<Record<T>> =
        tokio::time::timeout(Duration::from_secs(60), stream.take(n).collect()).await.expect("records arrive in time");
    running.shutdown(Duration::from_secs(30)).await.expect("shuts down cleanly");
    got
}

async fn read(topic: &str, partitions: i32, expected: usize) -> Vec<Read> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_exactly(&topic, partitions, expected)).await.expect("reader")
}

#[node]
async fn tag_source(record: Record<Map<String, Value>>) -> Outgoing<Map<String, Value>> {
    let mut object = record.value;
    object.insert("source_topic".into(), Value::from(&*record.topic));
    let message = Outgoing::new(object);
    match record.key {
        Some(key) => message.with_key(key),
        None => message,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_topic_consume_transform_produce_delivers_the_exact_message_set() {
    let (a, b, out) = (unique("orders-eu"), unique("orders-us"), unique("tagged"));
    create_topic(&a, 3).await;
    create_topic(&b, 2).await;
    create_topic(&out, 3).await;
    produce(&a, (0..300).map(|i| (Some(format!("eu-{i}")), format!(r#"{{"id":"eu-{i}","n":{i}}}"#).into_bytes())))
        .await;
    produce(&b, (0..200).map(|i| (Some(format!("us-{i}")), format!(r#"{{"id":"us-{i}","n":{i}}}"#).into_bytes())))
        .await;

    let src = source(&unique("tagger"), &[&a, &b]).build(Json).expect("source");
    let sink = KafkaSink::builder(&brokers()).default_topic(&out).build(Json).expect("sink");
    let mut g = Topology::builder();
    let records = g.source("consume", src);
    let tagged = g.node("tag", tag_source(), records);
    g.sink("produce", sink, tagged);
    let running = g.build().expect("valid").start();
    let got = read(&out, 3, 500).await;
    running.shutdown(Duration::from_secs(30)).await.expect("shuts down");

    let mut seen = BTreeSet::new();
    for message in &got {
        let value: Value = serde_json::from_slice(&message.payload).expect("JSON");
        let id = value["id"].as_str().expect("id").to_owned();
        let expected_topic = if id.starts_with("eu") { &a } else { &b };
        assert_eq!(value["source_topic"], Value::from(expected_topic.as_str()), "{value}");
        assert_eq!(message.key.as_deref(), Some(id.as_str()), "the key is kept");
        assert!(seen.insert(id.clone()), "{id} produced twice");
    }
    let expected: BTreeSet<String> =
        (0..300).map(|i| format!("eu-{i}")).chain((0..200).map(|i| format!("us-{i}"))).collect();
    assert_eq!(seen, expected);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    celsius: f64,
    tags: Vec<String>,
}

fn readings() -> Vec<Reading> {
    (0..50u32)
        .map(|i| Reading {
            sensor: format!("s{i}"),
            celsius: f64::from(i) / 4.0,
            tags: vec!["lab".into(); i as usize % 3],
        })
        .collect()
}

/// Produces `values` with `encoder` through a KafkaSink, then reads them
/// back with `decoder` through a KafkaSource.
async fn round_trip<T, E, D>(values: Vec<T>, encoder: E, decoder: D) -> Vec<T>
where
    T: Send + 'static,
    E: nanostream_kafka::Encoder<T>,
    D: Decoder<T>,
{
    let topic = unique("codec");
    create_topic(&topic, 1).await;
    let n = values.len();
    let sink = KafkaSink::builder(&brokers()).default_topic(&topic).build(encoder).expect("sink");
    let mut g = Topology::builder();
    let values = g.source("values", from_iter(values));
    let messages = g.node("wrap", map(Outgoing::new), values);
    g.sink("produce", sink, messages);
    g.build().expect("valid").run().await.expect("produces");

    let src = source(&unique("codec"), &[&topic]).build(decoder).expect("source");
    consume_n(src, n).await.into_iter().map(|r| r.value).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips_through_the_broker() {
    assert_eq!(round_trip(readings(), Json, Json).await, readings());
    assert_eq!(round_trip(readings(), Bincode, Bincode).await, readings());
    let texts: Vec<String> = vec!["plain".into(), "ünïcödé".into(), String::new()];
    assert_eq!(round_trip(texts.clone(), Utf8, Utf8).await, texts);
    let bytes: Vec<Vec<u8>> = vec![vec![0, 159, 255], vec![], b"raw".to_vec()];
    assert_eq!(round_trip(bytes.clone(), Raw, Raw).await, bytes);
    // A format of our own: `name=value`.
    let pairs: Vec<(String, u32)> = vec![("a".into(), 1), ("b".into(), 22)];
    let encoder = encode_with(|(k, v): &(String, u32), buf: &mut Vec<u8>| {
        buf.extend_from_slice(format!("{k}={v}").as_bytes());
        Ok::<(), Infallible>(())
    });
    let decoder = |bytes: &[u8]| -> Result<(String, u32), Box<dyn std::error::Error + Send + Sync>> {
        let text = std::str::from_utf8(bytes)?;
        let (k, v) = text.split_once('=').ok_or("no `=`")?;
        Ok((k.to_owned(), v.parse()?))
    };
    assert_eq!(round_trip(pairs.clone(), encoder, decoder).await, pairs);
}

/// 30 messages, every 10th not JSON.
async fn mixed_topic() -> String {
    let topic = unique("mixed");
    create_topic(&topic, 1).await;
    produce(
        &topic,
        (0..30).map(|i| {
            let payload = if i % 10 == 3 { format!("not json {i}") } else { format!(r#"{{"n":{i}}}"#) };
            (Some(format!("k{i}")), payload.into_bytes())
        }),
    )
    .await;
    topic
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_does_not_decode_fails_the_pipeline_by_default() {
    let topic = mixed_topic().await;
    let src = source(&unique("strict"), &[&topic]).build::<Value, _>(Json).expect("source");
    let mut g = Topology::builder();
    let records = g.source("consume", src);
    g.sink("drop", for_each(|_: Record<Value>| async {}), records);
    let error = tokio::time::timeout(Duration::from_secs(60), g.build().expect("valid").run())
        .await
        .expect("fails in time")
        .expect_err("the bad payload fails the pipeline");
    let Error::NodeFailed { node, source } = error else { panic!("expected NodeFailed") };
    assert_eq!(node, "consume");
    assert!(source.to_string().contains("partition 0 offset 3 does not decode"), "{source}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_payloads_are_counted_and_the_rest_delivered() {
    let topic = mixed_topic().await;
    let src =
        source(&unique("skip"), &[&topic]).on_decode_error(DecodeErrors::Skip).build::<Value, _>(Json).expect("source");
    let mut g = Topology::builder();
    let records = g.source("consume", src);
    let (sink, stream) = into_stream(64);
    g.sink("collect", sink, records);
    let running = g.build().expect("valid").start();
    let got: Vec<Record<Value>> =
        tokio::time::timeout(Duration::from_secs(60), stream.take(27).collect()).await.expect("in time");
    let errors = running.snapshot()[0].errors;
    running.shutdown(Duration::from_secs(30)).await.expect("shuts down");
    let ns: Vec<i64> = got.iter().map(|r| r.value["n"].as_i64().expect("n")).collect();
    assert_eq!(ns, (0..30).filter(|i| i % 10 != 3).collect::<Vec<_>>());
    assert_eq!(errors, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_payloads_go_to_the_dead_letter_topic_with_their_error() {
    let topic = mixed_topic().await;
    let dlq = unique("dlq");
    create_topic(&dlq, 1).await;
    let src = source(&unique("dlq"), &[&topic])
        .on_decode_error(DecodeErrors::DeadLetter(dlq.clone()))
        .build::<Value, _>(Json)
        .expect("source");
    let got = consume_n(src, 27).await;
    assert_eq!(got.len(), 27);
    let dead = read(&dlq, 1, 3).await;
    // (key, payload, source offset, source topic)
    type Summary<'a> = (Option<&'a str>, String, Option<&'a str>, Option<&'a str>);
    let summary: Vec<Summary<'_>> = dead
        .iter()
        .map(|d| (d.key.as_deref(), d.text(), d.header("source_offset"), d.header("source_topic")))
        .collect();
    assert_eq!(
        summary,
        [
            (Some("k3"), "not json 3".to_owned(), Some("3"), Some(topic.as_str())),
            (Some("k13"), "not json 13".to_owned(), Some("13"), Some(topic.as_str())),
            (Some("k23"), "not json 23".to_owned(), Some("23"), Some(topic.as_str())),
        ]
    );
    assert!(dead[0].header("error").is_some_and(|e| e.contains("expected ident")), "{:?}", dead[0].headers);
}

/// Takes a permit per item from a gate the test controls.
struct Gated(Arc<Semaphore>);

impl Sink for Gated {
    type In = Record<String>;
    type Error = Infallible;

    async fn consume(&mut self, _: Record<String>) -> Result<(), Infallible> {
        self.0.acquire().await.expect("open").forget();
        Ok(())
    }
}

async fn stable_count(handle: &TopologyHandle, node: usize) -> u64 {
    let mut last = u64::MAX;
    loop {
        let now = handle.snapshot()[node].sent;
        if now == last && now > 0 {
            return now;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_stops_the_source_at_the_edge_bound() {
    let topic = unique("backlog");
    create_topic(&topic, 2).await;
    produce(&topic, (0..20_000).map(|i| (None, format!("m{i}").into_bytes()))).await;
    let gate = Arc::new(Semaphore::new(0));
    let src = source(&unique("slow"), &[&topic]).build(Utf8).expect("source");
    let mut g = Topology::builder();
    g.default_capacity(256).chunk_size(64);
    let records = g.source("consume", src);
    g.sink("slow", Gated(gate.clone()), records);
    let running = g.build().expect("valid").start();

    let emitted = tokio::time::timeout(Duration::from_secs(60), stable_count(&running, 0)).await.expect("settles");
    // The sink holds one chunk, the edge queues its capacity, the source
    // holds at most one chunk: it stopped reading from Kafka there.
    assert!(emitted <= 256 + 2 * 64, "the source emitted {emitted} items into a stalled graph");
    assert!(!running.is_finished());

    gate.add_permits(1_000_000);
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while running.snapshot()[1].received < 20_000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(drained.is_ok(), "every message arrives once the sink speeds up");
    running.shutdown(Duration::from_secs(30)).await.expect("shuts down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_routes_by_topic_key_and_headers_per_message() {
    let (even, odd) = (unique("even"), unique("odd"));
    create_topic(&even, 1).await;
    create_topic(&odd, 1).await;
    let sink = KafkaSink::builder(&brokers()).build(Utf8).expect("sink");
    let (e, o) = (even.clone(), odd.clone());
    let mut g = Topology::builder();
    let n = g.source("numbers", from_iter(0..10u32));
    let messages = g.node(
        "route",
        map(move |i: u32| {
            Outgoing::new(format!("v{i}"))
                .to_topic(if i.is_multiple_of(2) { &e } else { &o })
                .with_key(format!("k{i}"))
                .with_header("parity", if i.is_multiple_of(2) { "even" } else { "odd" })
        }),
        n,
    );
    g.sink("produce", sink, messages);
    g.build().expect("valid").run().await.expect("delivers everything before finishing");
    let evens = read(&even, 1, 5).await;
    let odds = read(&odd, 1, 5).await;
    assert_eq!(evens.iter().map(Read::text).collect::<Vec<_>>(), ["v0", "v2", "v4", "v6", "v8"]);
    assert_eq!(
        odds.iter().map(|m| m.key.clone().unwrap_or_default()).collect::<Vec<_>>(),
        ["k1", "k3", "k5", "k7", "k9"]
    );
    assert!(odds.iter().all(|m| m.header("parity") == Some("odd")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_producer_queue_is_back_pressure_not_an_error() {
    let topic = unique("tiny-queue");
    create_topic(&topic, 1).await;
    let sink = KafkaSink::builder(&brokers())
        .default_topic(&topic)
        .set("queue.buffering.max.messages", "5")
        .build(Utf8)
        .expect("sink");
    let mut g = Topology::builder();
    let n = g.source("numbers", from_iter(0..2_000u32));
    let messages = g.node("wrap", map(|i: u32| Outgoing::new(i.to_string())), n);
    g.sink("produce", sink, messages);
    g.build().expect("valid").run().await.expect("no QueueFull error reaches the pipeline");
    assert_eq!(read(&topic, 1, 2_000).await.len(), 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_group_resumes_after_what_it_committed() {
    let topic = unique("resume");
    create_topic(&topic, 2).await;
    produce(&topic, (0..100).map(|i| (None, format!("first {i}").into_bytes()))).await;
    let group = unique("resume");
    let first = consume_n(source(&group, &[&topic]).build(Utf8).expect("source"), 100).await;
    assert_eq!(first.len(), 100);

    produce(&topic, (0..40).map(|i| (None, format!("second {i}").into_bytes()))).await;
    let second = consume_n(source(&group, &[&topic]).build(Utf8).expect("source"), 40).await;
    let mut texts: Vec<String> = second.into_iter().map(|r| r.value).collect();
    texts.sort();
    let mut expected: Vec<String> = (0..40).map(|i| format!("second {i}")).collect();
    expected.sort();
    assert_eq!(texts, expected, "only the new messages: the first run committed on shutdown");

    // Earliest replays from the beginning regardless of the commits.
    let replay =
        consume_n(source(&group, &[&topic]).start_from(StartFrom::Earliest).build(Utf8).expect("source"), 140).await;
    assert_eq!(replay.len(), 140);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pipeline_commits_everything_it_delivered() {
    let (input, output) = (unique("idle-in"), unique("idle-out"));
    create_topic(&input, 1).await;
    create_topic(&output, 1).await;
    let group = unique("idle");
    let source = source(&group, &[&input]).commit_interval(Duration::from_millis(100)).build(Utf8).expect("source");
    let sink = KafkaSink::builder(&brokers()).default_topic(&output).build(Utf8).expect("sink");
    let mut g = Topology::builder();
    let records = g.source("consume", source);
    let messages = g.node("forward", map(|r: Record<String>| Outgoing::new(r.value)), records);
    g.sink("produce", sink, messages);
    let running = g.build().expect("valid").start();

    produce(&input, (0..10).map(|i| (None, format!("m{i}").into_bytes()))).await;
    assert_eq!(read(&output, 1, 10).await.len(), 10);
    // Nothing else arrives, yet the last batch must be committed: no node
    // may hold its acknowledgements back until more input comes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (group, input) = (group.clone(), input.clone());
        let offsets = tokio::task::spawn_blocking(move || committed(&group, &input, 1)).await.expect("reader");
        if offsets == [10] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the group committed {offsets:?} while idle, expected [10]");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.shutdown(Duration::from_secs(30)).await.expect("shuts down cleanly");
}

/// A pipeline dropped mid-way, then its (current-thread) runtime, commits
/// nothing it did not finish: the consumer's close commits only what sinks
/// consumed. The runtime drops tasks in the order they were spawned, so the
/// source runs both first and last.
#[test]
fn dropping_a_running_pipeline_commits_nothing_unfinished() {
    for source_last in [false, true] {
        teardown(source_last);
    }
}

/// `records -> slow -> store`, the store counting what it consumed and
/// saying when it reached 50.
fn slow_store(
    g: &mut TopologyBuilder,
    records: Output<Record<Vec<u8>>>,
    processed: &Arc<std::sync::atomic::AtomicUsize>,
    reached: &Arc<tokio::sync::Notify>,
) {
    let slow = g.node(
        "slow",
        then(|r: Record<Vec<u8>>| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            r.offset
        }),
        records,
    );
    let (count, note) = (processed.clone(), reached.clone());
    let store = for_each(move |_offset: i64| {
        if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 50 {
            note.notify_one();
        }
        async {}
    });
    g.sink("store", store, slow);
}

fn teardown(source_last: bool) {
    const N: usize = 500;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let topic = unique("teardown");
    let group = unique("teardown-group");
    let processed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    runtime.block_on(async {
        create_topic(&topic, 1).await;
        produce(&topic, (0..N).map(|i| (None, i.to_string().into_bytes()))).await;
        let reached = Arc::new(tokio::sync::Notify::new());
        let consume = source(&group, &[&topic]).build(Raw).expect("source");
        // Tasks are spawned in the order nodes are added.
        let mut g = Topology::builder();
        if source_last {
            let (records_in, records) = g.placeholder("records");
            slow_store(&mut g, records, &processed, &reached);
            let consumed = g.source("consume", consume);
            g.connect(&records_in, consumed);
        } else {
            let records = g.source("consume", consume);
            slow_store(&mut g, records, &processed, &reached);
        }
        let pipeline = g.build().expect("valid");
        tokio::select! {
            result = pipeline.run() => panic!("the pipeline ended by itself: {result:?}"),
            () = reached.notified() => {}
        }
    });
    // The `run()` future is gone; now the runtime and every task with it.
    drop(runtime);
    let processed = processed.load(std::sync::atomic::Ordering::SeqCst);
    let committed = committed(&group, &topic, 1)[0];
    println!(
        "teardown (source last: {source_last}): {N} messages, {processed} processed, committed offset {committed}"
    );
    assert!(processed < N, "stopped before the end");
    assert!(committed <= processed as i64, "committed offset {committed} past the {processed} processed messages");
}

/// What each part of a split source saw: (part, partition, offset, value).
type Seen = Arc<std::sync::Mutex<Vec<(usize, i32, i64, String)>>>;

/// Starts one pipeline per part of `parts`, each recording what it reads as
/// part `first + i`.
fn start_parts(parts: Vec<KafkaSource<String, Utf8>>, first: usize, seen: &Seen) -> TopologyHandle {
    let mut g = Topology::builder();
    for (i, part) in parts.into_iter().enumerate() {
        let id = first + i;
        let records = g.source(format!("consume[{id}]"), part);
        let seen = seen.clone();
        g.sink(
            format!("record[{id}]"),
            for_each(move |r: Record<String>| {
                let seen = seen.clone();
                async move { seen.lock().expect("not poisoned").push((id, r.partition, r.offset, r.value)) }
            }),
            records,
        );
    }
    g.build().expect("valid").start()
}

/// Produces waves of messages until `done` holds of what was seen, or
/// fails after 120 s; `produced` counts the messages produced.
async fn produce_until(
    topic: &str,
    produced: &mut u64,
    seen: &Seen,
    what: &str,
    done: impl Fn(&[(usize, i32, i64, String)], u64) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let wave = (*produced..*produced + 40).map(|i| (Some(format!("k{i}")), format!("m{i}").into_bytes()));
        produce(topic, wave).await;
        *produced += 40;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if done(&seen.lock().expect("not poisoned"), *produced) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within 120 s");
    }
}

/// The parts of a split source are members of one group: Kafka gives each
/// its own partitions, each part drives a pipeline of its own, and when a
/// member joins and leaves (a rebalance), partitions move between the
/// pipelines with nothing lost and every offset committed in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_source_runs_one_pipeline_per_share_of_partitions_across_rebalances() {
    let topic = unique("split");
    create_topic(&topic, 4).await;
    let group = unique("split");
    let seen = Seen::default();
    let parts =
        source(&group, &[&topic]).commit_interval(Duration::from_millis(200)).build_parts(2, Utf8).expect("parts");
    assert_eq!(parts.len(), 2);
    let first = start_parts(parts, 0, &seen);
    let mut produced = 0;
    let parts_seen = |seen: &[(usize, i32, i64, String)], part: usize| seen.iter().any(|s| s.0 == part);
    produce_until(&topic, &mut produced, &seen, "both parts read", |s, _| parts_seen(s, 0) && parts_seen(s, 1)).await;

    // A third member joins: a rebalance hands it some partitions.
    let joiner =
        source(&group, &[&topic]).commit_interval(Duration::from_millis(200)).build_parts(1, Utf8).expect("part");
    let second = start_parts(joiner, 2, &seen);
    produce_until(&topic, &mut produced, &seen, "the joining member reads", |s, _| parts_seen(s, 2)).await;
    // It leaves: its partitions go back to the first two parts.
    second.shutdown(Duration::from_secs(30)).await.expect("the joiner shuts down cleanly");
    let left = seen.lock().expect("not poisoned").len();
    produce_until(&topic, &mut produced, &seen, "every message read", |s, produced| {
        let values: BTreeSet<&str> = s.iter().map(|x| x.3.as_str()).collect();
        s.len() > left && values.len() as u64 == produced
    })
    .await;
    first.shutdown(Duration::from_secs(30)).await.expect("shuts down cleanly");

    let seen = seen.lock().expect("not poisoned").clone();
    let values: BTreeSet<String> = seen.iter().map(|s| s.3.clone()).collect();
    let expected: BTreeSet<String> = (0..produced).map(|i| format!("m{i}")).collect();
    assert_eq!(values, expected, "every message was read (at least once)");
    // Everything read is committed: each partition's offset is one past the
    // last record it holds.
    let mut ends = [0i64; 4];
    for (_, partition, offset, _) in &seen {
        ends[*partition as usize] = ends[*partition as usize].max(offset + 1);
    }
    let (g, t) = (group.clone(), topic.clone());
    let committed = tokio::task::spawn_blocking(move || committed(&g, &t, 4)).await.expect("reader");
    assert_eq!(committed, ends, "every partition committed to its end");
}

/// A source whose topic does not exist fails the pipeline at start, with
/// the topic's name, instead of running silently forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_fails_the_pipeline_at_start() {
    let topic = unique("missing");
    let mut g = Topology::builder();
    let records = g.source("consume", source(&unique("missing"), &[&topic]).build(Utf8).expect("source"));
    g.sink("drop", for_each(|_: Record<String>| async {}), records);
    let error = tokio::time::timeout(Duration::from_secs(30), g.build().expect("valid").run())
        .await
        .expect("fails fast")
        .expect_err("the topic does not exist");
    let cause = std::error::Error::source(&error).expect("a cause");
    assert!(
        matches!(cause.downcast_ref::<nanostream_kafka::Error>(), Some(nanostream_kafka::Error::UnknownTopic { topic: t }) if *t == topic),
        "{error}: {cause}"
    );
}

/// With `require_brokers`, brokers that do not answer fail the pipeline
/// within the start-up deadline with a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_brokers_fail_the_pipeline_within_the_startup_timeout() {
    let source = KafkaSource::builder("127.0.0.1:1", "nobody")
        .topic("anything")
        .require_brokers(true)
        .startup_timeout(Duration::from_secs(2))
        .build(Utf8)
        .expect("source");
    let mut g = Topology::builder();
    let records = g.source("consume", source);
    g.sink("drop", for_each(|_: Record<String>| async {}), records);
    let started = std::time::Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(20), g.build().expect("valid").run())
        .await
        .expect("fails fast")
        .expect_err("nothing listens there");
    let cause = std::error::Error::source(&error).expect("a cause");
    assert!(
        matches!(cause.downcast_ref::<nanostream_kafka::Error>(), Some(nanostream_kafka::Error::Unreachable { .. })),
        "{error}: {cause}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "failed after {:?}", started.elapsed());
}

/// Runs a bounded read of `topic` in `group` to completion; returns the
/// values read.
async fn read_to_end(group: &str, topic: &str) -> Vec<String> {
    let source = source(group, &[topic]).until_end(true).commit_interval(Duration::from_millis(100)).build(Utf8);
    let mut g = Topology::builder();
    let records = g.source("consume", source.expect("source"));
    let (sink, stream) = into_stream(100_000);
    g.sink("collect", sink, records);
    tokio::time::timeout(Duration::from_secs(90), g.build().expect("valid").run())
        .await
        .expect("a bounded read completes on its own")
        .expect("runs");
    stream.map(|r: Record<String>| r.value).collect().await
}

/// A bounded read reads every partition up to the end it had at start,
/// commits, and completes; run again in the same group, it reads only what
/// came since, and with nothing new it completes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_read_completes_at_the_end_offsets_of_its_start() {
    let topic = unique("bounded");
    create_topic(&topic, 3).await;
    produce_unbatched(&topic, (0..300).map(|i| (Some(format!("k{i}")), format!("a{i}").into_bytes()))).await;
    let group = unique("bounded");

    let mut first = read_to_end(&group, &topic).await;
    first.sort();
    let mut expected: Vec<String> = (0..300).map(|i| format!("a{i}")).collect();
    expected.sort();
    assert_eq!(first, expected, "every message, once");
    let (g, t) = (group.clone(), topic.clone());
    let committed: i64 = tokio::task::spawn_blocking(move || committed(&g, &t, 3)).await.expect("reader").iter().sum();
    assert_eq!(committed, 300, "committed to the end");

    produce_unbatched(&topic, (0..50).map(|i| (Some(format!("k{i}")), format!("b{i}").into_bytes()))).await;
    let mut second = read_to_end(&group, &topic).await;
    second.sort();
    let mut expected: Vec<String> = (0..50).map(|i| format!("b{i}")).collect();
    expected.sort();
    assert_eq!(second, expected, "only what came since the last run");

    assert!(read_to_end(&group, &topic).await.is_empty(), "nothing new: done at once");
}

/// The source says when it joins, when partitions arrive (and how long that
/// took), and warns when a member gets none: here two members share a
/// one-partition topic, so one of them waits with nothing.
/// Everything logged by this test binary, from every thread (librdkafka
/// serves a rebalance on whichever thread polls the consumer's queue).
fn captured_logs() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| capture_logs(tracing::Level::INFO))
}

#[test]
fn the_source_logs_joining_assignment_and_a_member_left_without_partitions() {
    let all = captured_logs();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let topic = unique("lonely");
        create_topic(&topic, 1).await;
        let group = unique("lonely");
        let parts =
            source(&group, &[&topic]).assignment_warning(Duration::from_secs(30)).build_parts(2, Utf8).expect("parts");
        let mut g = Topology::builder();
        for (i, part) in parts.into_iter().enumerate() {
            let records = g.source(format!("consume[{i}]"), part);
            g.sink(format!("drop[{i}]"), for_each(|_: Record<String>| async {}), records);
        }
        let running = g.build().expect("valid").start();
        // This test's lines: those naming its group.
        let ours = || all.text().lines().filter(|l| l.contains(&group)).collect::<Vec<_>>().join("\n");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while !(ours().contains("no partition assigned") && ours().contains("partitions assigned,")) {
            assert!(tokio::time::Instant::now() < deadline, "no warning or no assignment; log:\n{}", ours());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running.shutdown(Duration::from_secs(30)).await.expect("shuts down cleanly");
        let log = ours();
        assert_eq!(log.matches(&format!("joining group {group} for topics {topic}")).count(), 2, "{log}");
        assert!(log.contains("partitions assigned,") && log.contains("after joining the group"), "{log}");
        assert_eq!(log.matches("no partition assigned 30s after joining the group").count(), 1, "{log}");
    });
}

#[node]
async fn check_amount(record: Record<Value>) -> Result<Outgoing<Value>, String> {
    match record.value["amount"].as_i64() {
        Some(amount) if amount >= 0 => Ok(Outgoing::new(record.value)),
        _ => Err(format!("bad amount in {}", record.value)),
    }
}

/// Messages that do not decode (the source's dead letters) and records a
/// node failed on (`DeadLetterSink`) land in one dead-letter topic in one
/// format: original bytes and key, and the same headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_kinds_of_dead_letters_share_one_format() {
    let (input, output, dlq) = (unique("dl-in"), unique("dl-out"), unique("dl-dlq"));
    create_topic(&input, 1).await;
    create_topic(&output, 1).await;
    create_topic(&dlq, 1).await;
    // 0..30: every 10th does not decode, every 10th + 5 has a bad amount.
    let payload = |i: u64| match i % 10 {
        0 => format!("not json {i}"),
        5 => format!(r#"{{"id":{i},"amount":-1}}"#),
        _ => format!(r#"{{"id":{i},"amount":{i}}}"#),
    };
    produce(&input, (0..30).map(|i| (Some(format!("k{i}")), payload(i).into_bytes()))).await;

    let source = source(&unique("dl"), &[&input])
        .on_decode_error(DecodeErrors::DeadLetter(dlq.clone()))
        .keep_payload(true)
        .build(Json)
        .expect("source");
    let mut g = Topology::builder();
    let records = g.source("consume", source);
    // Bad amounts are tried three times before they become dead letters.
    let check = check_amount().retry(nanostream::policy::Retry::attempts(3).backoff(Duration::ZERO));
    let (good, failed) = g.node_with_dead_letters("check", check, records);
    g.sink("produce", KafkaSink::builder(&brokers()).default_topic(&output).build(Json).expect("sink"), good);
    let dead_letters = nanostream_kafka::DeadLetterSink::new(KafkaSink::builder(&brokers()), &dlq).expect("sink");
    g.sink("dead_letters", dead_letters, failed);
    let running = g.build().expect("valid").start();
    let dead = read(&dlq, 1, 6).await;
    assert_eq!(read(&output, 1, 24).await.len(), 24);
    running.shutdown(Duration::from_secs(30)).await.expect("shuts down cleanly");

    let names = |d: &Read| d.headers.iter().map(|(k, _)| k.clone()).collect::<BTreeSet<_>>();
    let expected: BTreeSet<String> =
        ["error", "node", "attempts", "source_topic", "source_partition", "source_offset"].map(String::from).into();
    for letter in &dead {
        let i: u64 = letter.key.as_deref().and_then(|k| k.strip_prefix('k')).and_then(|k| k.parse().ok()).expect("key");
        assert_eq!(letter.payload, payload(i).into_bytes(), "the original bytes");
        assert_eq!(names(letter), expected, "one set of headers for both kinds");
        assert_eq!(letter.header("node"), Some(if i.is_multiple_of(10) { "consume" } else { "check" }));
        assert_eq!(letter.header("source_topic"), Some(input.as_str()));
        assert_eq!(letter.header("source_offset"), Some(i.to_string().as_str()));
        assert_eq!(letter.header("attempts"), Some(if i.is_multiple_of(10) { "1" } else { "3" }));
        assert!(!letter.header("error").unwrap_or_default().is_empty());
    }
    let mut keys: Vec<String> = dead.iter().filter_map(|d| d.key.clone()).collect();
    keys.sort();
    assert_eq!(keys, ["k0", "k10", "k15", "k20", "k25", "k5"]);
}
