//! Fault injection with librdkafka's mock cluster, where the real broker
//! cannot fail on demand: produce errors, a broker going down and coming
//! back. Nothing may be lost.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nanostream::prelude::*;
use nanostream_kafka::{KafkaSink, KafkaSource, Outgoing, Raw, Record, StartFrom};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
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
    let source = KafkaSource::builder(brokers, "copier")
        .topic("in")
        .start_from(start)
        .set("session.timeout.ms", "6000")
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
