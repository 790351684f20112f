//! Helpers for tests against the real test broker, shared by several test
//! targets (each uses a part of them).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// The broker the tests use. Fails (never skips) when none is configured.
pub fn brokers() -> String {
    match std::env::var("NANOSTREAM_TEST_BROKERS") {
        Ok(brokers) if !brokers.is_empty() => brokers,
        _ => panic!(
            "NANOSTREAM_TEST_BROKERS is not set: the Kafka tests need a running broker. \
             Run the tests with ./scripts/test.sh, which installs and starts one, or run \
             `scripts/broker.sh start` and export NANOSTREAM_TEST_BROKERS=<the address it prints>."
        ),
    }
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    format!("{prefix}-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Client settings that make consumer groups join in seconds on the test
/// broker (see BROKER.md).
pub const GROUP_SETTINGS: [(&str, &str); 2] = [("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "500")];

pub async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers()).create().expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test broker at {} to create topic {name}: {e}", brokers()));
    for result in results {
        result.unwrap_or_else(|(topic, e)| panic!("creating topic {topic} failed: {e}"));
    }
}

pub fn producer() -> FutureProducer {
    ClientConfig::new().set("bootstrap.servers", brokers()).set("linger.ms", "5").create().expect("producer")
}

/// Produces every `(key, payload)` to `topic` and waits for all deliveries.
pub async fn produce(topic: &str, messages: impl IntoIterator<Item = (Option<String>, Vec<u8>)>) {
    produce_with(producer(), topic, messages).await;
}

/// Like [`produce`], one record per batch: the test broker's high watermark
/// (the end offset a bounded read stops at) is right only then (BROKER.md).
pub async fn produce_unbatched(topic: &str, messages: impl IntoIterator<Item = (Option<String>, Vec<u8>)>) {
    produce_with(unbatched_producer(), topic, messages).await;
}

/// A producer that sends one record per batch (see [`produce_unbatched`]).
pub fn unbatched_producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .create()
        .expect("producer")
}

async fn produce_with(
    producer: FutureProducer,
    topic: &str,
    messages: impl IntoIterator<Item = (Option<String>, Vec<u8>)>,
) {
    let mut deliveries = Vec::new();
    for (key, payload) in messages {
        let mut record = FutureRecord::to(topic).payload(&payload);
        if let Some(key) = &key {
            record = record.key(key);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((_, returned)) => {
                    record = returned;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    for delivery in deliveries {
        delivery.await.expect("delivered").expect("delivered");
    }
    producer.flush(Duration::from_secs(10)).expect("flushed");
}

/// A message read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Read {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub partition: i32,
}

impl Read {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Reads every partition of `topic` from the beginning, without a group,
/// until `expected` messages have come or `timeout` passes.
pub fn read_topic(topic: &str, partitions: i32, expected: usize, timeout: Duration) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("offset");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < expected && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("readable");
            out.push(Read {
                key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: message.payload().unwrap_or_default().to_vec(),
                headers: message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                partition: message.partition(),
            });
        }
    }
    out
}

/// Reads until `expected` messages, then for `settle` more to catch extras.
pub fn read_exactly(topic: &str, partitions: i32, expected: usize) -> Vec<Read> {
    let mut got = read_topic(topic, partitions, expected, Duration::from_secs(60));
    assert_eq!(got.len(), expected, "messages in {topic}");
    got.extend(read_topic_after(topic, partitions, &got));
    got
}

/// Anything beyond what was already read (there should be nothing).
fn read_topic_after(topic: &str, partitions: i32, already: &[Read]) -> Vec<Read> {
    let all = read_topic(topic, partitions, already.len() + 1, Duration::from_secs(2));
    all.into_iter().skip(already.len()).collect()
}

#[allow(dead_code)]
pub fn headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new(), |h, (k, v)| h.insert(Header { key: k, value: Some(*v) }))
}

/// The offsets `group` has committed for partitions `0..partitions` of
/// `topic` (-1 where it has committed nothing).
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers()).set("group.id", group).create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let offsets = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
    (0..partitions)
        .map(|p| match offsets.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// A writer that keeps what a test binary's `tracing` subscriber writes.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }

    /// How many bytes were written so far.
    pub fn len(&self) -> usize {
        self.0.lock().expect("not poisoned").len()
    }
}

/// Makes the global subscriber of this test binary one that keeps every
/// line up to `level`, from every thread (librdkafka calls back on its
/// own); call it once per binary, from a `OnceLock`.
pub fn capture_logs(level: tracing::Level) -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber =
        tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).with_max_level(level).finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber of this binary");
    captured
}
