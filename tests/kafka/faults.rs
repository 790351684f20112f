//! Fault injection with librdkafka's mock cluster, where the real broker
//! cannot fail on demand: produce errors, a broker going down and coming
//! back. Nothing may be lost.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nanostream::prelude::*;
use nanostream_kafka::{KafkaSink, KafkaSource, Outgoing, Raw, Record, StartFrom};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Message, Offset, TopicPartitionList};

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(3).expect("mock cluster");
    for topic in ["in", "out"] {
        cluster.create_topic(topic, 3, 3).expect("topic");
    }
    cluster
}

async fn produce(brokers: &str, topic: &str, ids: std::ops::Range<u64>) {
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().expect("producer");
    let mut deliveries = Vec::new();
    for i in ids {
        let payload = i.to_string();
        deliveries.push(producer.send_result(FutureRecord::<(), _>::to(topic).payload(&payload)).expect("queued"));
    }
    for d in deliveries {
        d.await.expect("delivered").expect("delivered");
    }
    producer.flush(Duration::from_secs(10)).expect("flushed");
}

fn read_ids(brokers: &str, topic: &str, expected: usize) -> BTreeSet<u64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", "verify").create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("offset");
    }
    consumer.assign(&tpl).expect("assign");
    let mut ids = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            ids.insert(std::str::from_utf8(m.payload().unwrap_or_default()).expect("utf8").parse().expect("id"));
        }
    }
    ids
}

/// Copies `in` to `out` (incrementing nothing: the payload is the id).
fn pipeline(brokers: &str, start: StartFrom) -> nanostream::Topology {
    copier(brokers, "copier", start, Duration::from_secs(1))
}

/// Copies `in` to `out` in consumer group `group`.
fn copier(brokers: &str, group: &str, start: StartFrom, commit_interval: Duration) -> nanostream::Topology {
    let source = KafkaSource::builder(brokers, group)
        .topic("in")
        .start_from(start)
        .commit_interval(commit_interval)
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .build(Raw)
        .expect("source");
    let sink = KafkaSink::builder(brokers).default_topic("out").build(Raw).expect("sink");
    let mut g = Topology::builder();
    let records = g.source("consume", source);
    let copies = g.node("copy", map(|r: Record<Vec<u8>>| Outgoing::new(r.value)), records);
    g.sink("produce", sink, copies);
    g.build().expect("valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_are_retried_and_nothing_is_lost() {
    const N: u64 = 5_000;
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    produce(&brokers, "in", 0..N).await;
    // The next produce requests fail with retriable errors.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 10]
            .iter()
            .chain(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 10])
            .copied()
            .collect::<Vec<_>>(),
    );
    let running = pipeline(&brokers, StartFrom::Committed).start();
    let b = brokers.clone();
    let ids = tokio::task::spawn_blocking(move || read_ids(&b, "out", N as usize)).await.expect("reader");
    running.shutdown(Duration::from_secs(30)).await.expect("shuts down");
    println!("produce errors: inputs={N} distinct outputs={}", ids.len());
    assert!(ids.iter().copied().eq(0..N), "every id delivered despite produce errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_going_down_and_back_loses_nothing() {
    const N: u64 = 20_000;
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    produce(&brokers, "in", 0..N / 2).await;
    let running = pipeline(&brokers, StartFrom::Committed).start();
    // Take a broker down while the pipeline works, then bring it back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.broker_down(2).expect("down");
    produce_while_down(&brokers, N / 2..N).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.broker_up(2).expect("up");
    let b = brokers.clone();
    let ids = tokio::task::spawn_blocking(move || read_ids(&b, "out", N as usize)).await.expect("reader");
    running.shutdown(Duration::from_secs(30)).await.expect("shuts down");
    println!("broker down: inputs={N} distinct outputs={}", ids.len());
    assert!(ids.iter().copied().eq(0..N), "every id delivered across the outage");
}

/// Produces without waiting for deliveries (a broker is down; they complete
/// once it is back).
async fn produce_while_down(brokers: &str, ids: std::ops::Range<u64>) {
    let brokers = brokers.to_owned();
    tokio::spawn(async move { produce(&brokers, "in", ids).await });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_starts_after_the_messages_already_there() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    produce(&brokers, "in", 0..100).await;
    let running = pipeline(&brokers, StartFrom::Latest).start();
    // Once the group has its partitions, new messages flow; old ones never.
    let b = brokers.clone();
    let feeder = tokio::spawn(async move {
        for i in 1_000.. {
            produce(&b, "in", i..i + 1).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let b = brokers.clone();
    let ids = tokio::task::spawn_blocking(move || read_ids(&b, "out", 5)).await.expect("reader");
    feeder.abort();
    running.shutdown(Duration::from_secs(30)).await.expect("shuts down");
    assert!(ids.len() >= 5, "new messages arrived: {ids:?}");
    assert!(ids.iter().all(|id| *id >= 1_000), "no message produced before the start: {ids:?}");
}

/// Dead letters waiting for delivery hold the source back: with the
/// dead-letter topic's broker answering after 3 s, the source reads at most
/// one batch (1,024 messages) of undecodable messages, not all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_waiting_for_delivery_hold_the_source_back() {
    const N: u64 = 5_000;
    let cluster = MockCluster::new(2).expect("mock cluster");
    cluster.create_topic("in", 1, 1).expect("topic");
    cluster.create_topic("dlq", 1, 1).expect("topic");
    cluster.partition_leader("in", 0, Some(1)).expect("leader");
    cluster.partition_leader("dlq", 0, Some(2)).expect("leader");
    cluster.coordinator(MockCoordinator::Group("dlq-pressure".into()), 1).expect("coordinator");
    let brokers = cluster.bootstrap_servers();
    produce(&brokers, "in", 0..N).await;
    cluster.broker_round_trip_time(2, Duration::from_secs(3)).expect("rtt");

    // Ids are not JSON objects: every message is a dead letter.
    let source = KafkaSource::builder(&brokers, "dlq-pressure")
        .topic("in")
        .on_decode_error(nanostream_kafka::DecodeErrors::DeadLetter("dlq".into()))
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .build(nanostream_kafka::Json)
        .expect("source");
    let mut g = Topology::builder();
    let records = g.source("consume", source);
    g.sink("ignore", for_each(|_: Record<serde_json::Map<String, serde_json::Value>>| async {}), records);
    let running = g.build().expect("valid").start();
    let read = || running.snapshot()[0].errors;
    let started = Instant::now();
    while read() == 0 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Well within the first delivery round trip.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let held_back = read();
    cluster.broker_round_trip_time(2, Duration::ZERO).expect("rtt");
    while read() < N && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = read();
    running.shutdown(Duration::from_secs(30)).await.expect("shuts down");
    println!("dead letters: read {held_back} of {N} while deliveries were pending, then {all}");
    assert!((1..=1_024).contains(&held_back), "read {held_back} undecodable messages with their dead letters pending");
    assert_eq!(all, N, "every message was read once deliveries completed");
    let b = brokers.clone();
    let letters = tokio::task::spawn_blocking(move || read_ids_raw(&b, "dlq", 1, N as usize)).await.expect("reader");
    assert_eq!(letters, N as usize, "every undecodable message reached the dead-letter topic");
}

/// How many messages `topic` holds (up to `expected`), read from the start.
fn read_ids_raw(brokers: &str, topic: &str, partitions: i32, expected: usize) -> usize {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", "verify-raw").create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("offset");
    }
    consumer.assign(&tpl).expect("assign");
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while n < expected && Instant::now() < deadline {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            n += 1;
        }
    }
    n
}

/// Measures the longest gap between ticks of a 10 ms timer on the current
/// runtime, until `stop` is set.
fn ticker(stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let mut longest = Duration::ZERO;
        while !stop.load(Ordering::SeqCst) {
            let before = Instant::now();
            tokio::time::sleep(Duration::from_millis(10)).await;
            longest = longest.max(before.elapsed());
        }
        longest
    })
}

/// Copies `in` to `out`, committing only at rebalances and shutdown.
fn rarely_committing_pipeline(brokers: &str) -> nanostream::Topology {
    copier(brokers, "patient", StartFrom::Committed, Duration::from_secs(3_600))
}

/// librdkafka's blocking calls (committing when partitions are revoked and
/// at shutdown, leaving the group, closing the consumer, dropping the
/// producers) never run on the async worker: on the current-thread runtime
/// the README recommends, a 10 ms ticker keeps ticking through a rebalance,
/// a graceful shutdown and a cancellation while every broker round trip
/// takes a second.
#[test]
fn kafka_calls_never_block_the_runtime() {
    const RTT: Duration = Duration::from_secs(1);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let cluster = MockCluster::new(1).expect("mock cluster");
    for topic in ["in", "out"] {
        cluster.create_topic(topic, 2, 1).expect("topic");
    }
    let brokers = cluster.bootstrap_servers();
    let (rebalance_gap, shutdown_gap, cancel_gap) = runtime.block_on(async {
        produce(&brokers, "in", 0..1_000).await;
        let running = rarely_committing_pipeline(&brokers).start();
        let b = brokers.clone();
        let copied = tokio::task::spawn_blocking(move || read_ids(&b, "out", 1_000)).await.expect("reader");
        assert_eq!(copied.len(), 1_000);
        cluster.broker_round_trip_time(1, RTT).expect("rtt");

        // A second member joins: the pipeline's partitions are revoked
        // (committing what is done) and reassigned.
        let stop = Arc::new(AtomicBool::new(false));
        let ticks = ticker(stop.clone());
        let (b, member_stop) = (brokers.clone(), stop.clone());
        let member = std::thread::spawn(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &b)
                .set("group.id", "patient")
                .set("session.timeout.ms", "10000")
                .set("heartbeat.interval.ms", "500")
                .create()
                .expect("member");
            consumer.subscribe(&["in"]).expect("subscribe");
            while !member_stop.load(Ordering::SeqCst) {
                let _ = consumer.poll(Duration::from_millis(50));
            }
        });
        tokio::time::sleep(Duration::from_secs(8)).await;
        stop.store(true, Ordering::SeqCst);
        let rebalance_gap = ticks.await.expect("ticker");
        member.join().expect("member thread");

        let stop = Arc::new(AtomicBool::new(false));
        let ticks = ticker(stop.clone());
        running.shutdown(Duration::from_secs(60)).await.expect("shuts down");
        // Closing the consumer and the producers goes on in the background.
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::SeqCst);
        let shutdown_gap = ticks.await.expect("ticker");

        // Cancelled: the handle is dropped while consuming.
        cluster.broker_round_trip_time(1, Duration::ZERO).expect("rtt");
        let running = rarely_committing_pipeline(&brokers).start();
        tokio::time::sleep(Duration::from_secs(5)).await;
        cluster.broker_round_trip_time(1, RTT).expect("rtt");
        let stop = Arc::new(AtomicBool::new(false));
        let ticks = ticker(stop.clone());
        drop(running);
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::SeqCst);
        let cancel_gap = ticks.await.expect("ticker");
        (rebalance_gap, shutdown_gap, cancel_gap)
    });
    println!("longest ticker gap: rebalance {rebalance_gap:?}, shutdown {shutdown_gap:?}, cancellation {cancel_gap:?}");
    for (what, gap) in [("rebalance", rebalance_gap), ("shutdown", shutdown_gap), ("cancellation", cancel_gap)] {
        assert!(gap < RTT / 2, "the runtime stalled for {gap:?} during the {what} (broker round trip {RTT:?})");
    }
}

/// A delivery that fails while the pipeline shuts down makes `shutdown()`
/// return the failure, never `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_failing_during_shutdown_fails_the_shutdown() {
    let cluster = MockCluster::new(2).expect("mock cluster");
    for (topic, broker) in [("in", 1), ("out", 2)] {
        cluster.create_topic(topic, 1, 1).expect("topic");
        cluster.partition_leader(topic, 0, Some(broker)).expect("leader");
    }
    cluster.coordinator(MockCoordinator::Group("failing".into()), 1).expect("coordinator");
    let brokers = cluster.bootstrap_servers();
    produce(&brokers, "in", 0..100).await;
    let source = KafkaSource::builder(&brokers, "failing")
        .topic("in")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .build(Raw)
        .expect("source");
    let sink =
        KafkaSink::builder(&brokers).default_topic("out").set("message.timeout.ms", "1000").build(Raw).expect("sink");
    let delivered = sink.deliveries();
    let mut g = Topology::builder();
    let records = g.source("consume", source);
    let copies = g.node("copy", map(|r: Record<Vec<u8>>| Outgoing::new(r.value)), records);
    g.sink("produce", sink, copies);
    let running = g.build().expect("valid").start();
    let started = Instant::now();
    while delivered.get() < 100 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(delivered.get(), 100);
    // The output broker goes away; new input arrives; then shut down: its
    // deliveries time out while the pipeline drains.
    cluster.broker_down(2).expect("down");
    produce(&brokers, "in", 100..110).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    match running.shutdown(Duration::from_secs(30)).await {
        Err(nanostream::Error::NodeFailed { node, source }) => {
            assert_eq!(node, "produce");
            println!("shutdown failed as it should: {source}");
        }
        other => panic!("a failed delivery during shutdown must fail it, got {other:?}"),
    }
}
