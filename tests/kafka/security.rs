//! Kafka over TLS and SASL, for real: the source and sink against test
//! brokers behind a TLS-terminating proxy (stunnel), which
//! `scripts/tls.sh` starts (through ./scripts/test.sh). Without it these
//! tests fail with a message saying so.
//!
//! What is proven here: a round trip over TLS and over mutual TLS (with an
//! encrypted client key); a wrong CA, a missing client certificate and a
//! refused SASL login fail at once with `Error::Security` naming the
//! problem; a plaintext client against the TLS port fails with an error
//! that says to use TLS; no password appears in any output. What is not:
//! a SASL login that succeeds, because the test broker's SASL answers
//! every handshake with "Unsupported SASL mechanism" (see the README's
//! Security section).

#[path = "common.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nanostream::prelude::*;
use nanostream_kafka::{Json, KafkaSink, KafkaSource, Outgoing, Record, Scram, Security, StartFrom};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// Where the TLS test setup runs. Fails (never skips) without it.
struct Setup {
    /// TLS, server certificate signed by `ca.pem`.
    tls: String,
    /// Mutual TLS: the client must show a certificate `ca.pem` signed.
    mtls: String,
    dir: PathBuf,
}

fn setup() -> Setup {
    captured_logs();
    let var = |name: &str| match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{name} is not set: the security tests need the TLS test brokers. Run the tests with \
             ./scripts/test.sh, which starts them, or run `scripts/tls.sh start` and export the \
             variables it prints."
        ),
    };
    Setup {
        tls: var("NANOSTREAM_TEST_TLS_BROKERS"),
        mtls: var("NANOSTREAM_TEST_MTLS_BROKERS"),
        dir: PathBuf::from(var("NANOSTREAM_TEST_TLS_DIR")),
    }
}

impl Setup {
    fn file(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        assert!(path.exists(), "{} is missing: scripts/tls.sh makes it", path.display());
        path
    }

    fn key_password(&self) -> String {
        std::fs::read_to_string(self.file("client.key.password")).expect("readable").trim().to_owned()
    }

    /// Settings for an admin client over mutual TLS (to create topics).
    fn mutual_admin(&self) -> ClientConfig {
        let mut admin = ClientConfig::new();
        admin
            .set("security.protocol", "ssl")
            .set("ssl.ca.location", self.file("ca.pem").display().to_string())
            .set("ssl.certificate.location", self.file("client.pem").display().to_string())
            .set("ssl.key.location", self.file("client.key").display().to_string())
            .set("ssl.key.password", self.key_password());
        admin
    }

    fn mutual(&self) -> Security {
        Security::tls(self.file("ca.pem"))
            .client_certificate(self.file("client.pem"), self.file("client.key"))
            .key_password(self.key_password())
    }
}

/// Everything this test binary logs, at every level, from every thread.
fn captured_logs() -> &'static common::Captured {
    static CAPTURED: OnceLock<common::Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| common::capture_logs(tracing::Level::TRACE))
}

fn logs() -> String {
    captured_logs().text()
}

async fn create_topic(brokers: &str, security: &ClientConfig, name: &str, partitions: i32) {
    let mut config = security.clone();
    config.set("bootstrap.servers", brokers);
    let admin: AdminClient<DefaultClientContext> = config.create().expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))))
        .await
        .unwrap_or_else(|e| panic!("cannot reach the TLS test broker at {brokers} to create topic {name}: {e}"));
    for result in results {
        result.unwrap_or_else(|(topic, e)| panic!("creating topic {topic} failed: {e}"));
    }
}

/// Produces `values` through a sink built with `security`, one record per
/// batch (the test broker's end offsets are right only then), and returns
/// how many were delivered.
async fn produce(brokers: &str, security: &Security, topic: &str, values: Vec<u64>) -> u64 {
    let sink = KafkaSink::builder(brokers)
        .security(security)
        .default_topic(topic)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .build(Json)
        .expect("sink");
    let delivered = sink.deliveries();
    let mut g = Topology::builder();
    let values = g.source("values", from_iter(values));
    let messages = g.node("wrap", map(|v: u64| Outgoing::new(v).with_key(v.to_string())), values);
    g.sink("produce", sink, messages);
    tokio::time::timeout(Duration::from_secs(60), g.build().expect("valid").run())
        .await
        .expect("producing over TLS completes")
        .expect("runs");
    delivered.get()
}

/// Reads `topic` to its end through a source built with `security`.
async fn read_all(brokers: &str, security: &Security, topic: &str) -> Vec<u64> {
    let source = KafkaSource::builder(brokers, &common::unique("tls-reader"))
        .security(security)
        .topic(topic)
        .require_brokers(true);
    read_to_end(source).await
}

/// Runs a bounded read from the earliest offsets with `source`; the
/// values read.
async fn read_to_end(source: nanostream_kafka::KafkaSourceBuilder) -> Vec<u64> {
    let source = source
        .start_from(StartFrom::Earliest)
        .until_end(true)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .build(Json)
        .expect("source");
    let mut g = Topology::builder();
    let records = g.source("consume", source);
    let (sink, stream) = into_stream(100_000);
    g.sink("collect", sink, records);
    tokio::time::timeout(Duration::from_secs(90), g.build().expect("valid").run())
        .await
        .expect("a bounded read over TLS completes")
        .expect("runs");
    stream.map(|r: Record<u64>| r.value).collect().await
}

/// Runs a source built with `security` against `brokers` until it fails;
/// returns the Kafka error and how long it took.
async fn source_failure(brokers: &str, security: &Security) -> (nanostream_kafka::Error, Duration) {
    let source = KafkaSource::builder(brokers, &common::unique("refused"))
        .security(security)
        .topic("anything")
        .build(Json)
        .expect("source");
    let mut g = Topology::builder();
    let records = g.source("consume", source);
    g.sink("drop", for_each(|_: Record<u64>| async {}), records);
    failure_of(g).await
}

async fn failure_of(g: nanostream::TopologyBuilder) -> (nanostream_kafka::Error, Duration) {
    let (error, took, _) = failure_and_outputs(g).await;
    (error, took)
}

/// Like [`failure_of`], with what the pipeline shows of itself while it
/// runs: its snapshot and graph exports.
async fn failure_and_outputs(g: nanostream::TopologyBuilder) -> (nanostream_kafka::Error, Duration, String) {
    let started = Instant::now();
    let topology = g.build().expect("valid");
    let exports = format!("{}\n{}", topology.to_dot(), topology.to_mermaid());
    let running = topology.start();
    let outputs = format!("{exports}\n{:?}", running.snapshot());
    let error = tokio::time::timeout(Duration::from_secs(60), running.join())
        .await
        .expect("fails instead of retrying forever")
        .expect_err("the connection is refused");
    let cause = std::error::Error::source(&error).unwrap_or_else(|| panic!("{error} has a cause"));
    let kafka =
        cause.downcast_ref::<nanostream_kafka::Error>().unwrap_or_else(|| panic!("{error}: {cause} is a Kafka error"));
    // Rebuild an owned copy through its message (the error is not Clone).
    let owned = match kafka {
        nanostream_kafka::Error::Security { reason } => nanostream_kafka::Error::Security { reason: reason.clone() },
        other => panic!("{error}: expected Error::Security, got {other:?}"),
    };
    (owned, started.elapsed(), outputs)
}

fn reason(error: &nanostream_kafka::Error) -> &str {
    match error {
        nanostream_kafka::Error::Security { reason } => reason,
        other => panic!("expected Error::Security, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_over_tls_delivers_every_record() {
    let setup = setup();
    let security = Security::tls(setup.file("ca.pem"));
    let topic = common::unique("tls");
    let mut admin = ClientConfig::new();
    admin.set("security.protocol", "ssl").set("ssl.ca.location", setup.file("ca.pem").display().to_string());
    create_topic(&setup.tls, &admin, &topic, 2).await;
    let values: Vec<u64> = (0..300).collect();
    assert_eq!(produce(&setup.tls, &security, &topic, values.clone()).await, 300, "every record delivered");
    let read: BTreeSet<u64> = read_all(&setup.tls, &security, &topic).await.into_iter().collect();
    assert_eq!(read, values.into_iter().collect::<BTreeSet<_>>(), "read back over TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_over_mutual_tls_with_an_encrypted_client_key() {
    let setup = setup();
    let security = setup.mutual();
    let topic = common::unique("mtls");
    let admin = setup.mutual_admin();
    create_topic(&setup.mtls, &admin, &topic, 1).await;
    let values: Vec<u64> = (1000..1200).collect();
    assert_eq!(produce(&setup.mtls, &security, &topic, values.clone()).await, 200, "every record delivered");
    let mut read = read_all(&setup.mtls, &security, &topic).await;
    read.sort_unstable();
    assert_eq!(read, values, "read back over mutual TLS, in order within the partition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_fails_the_source_at_once_naming_the_certificate_check() {
    let setup = setup();
    let (error, took) = source_failure(&setup.tls, &Security::tls(setup.file("other-ca.pem"))).await;
    let reason = reason(&error);
    assert!(reason.contains("certificate verify failed"), "{error}");
    assert!(error.to_string().contains("security checks"), "{error}");
    // Not the start-up deadline (30 s by default) nor a retry loop: the
    // first refused handshake ends it.
    assert!(took < Duration::from_secs(25), "failed after {took:?}");
}

/// The system's roots (librdkafka's `probe`) do not include the test CA:
/// the same refusal, which also shows that setting is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_roots_do_not_trust_a_private_ca() {
    let setup = setup();
    let (error, took) = source_failure(&setup.tls, &Security::tls_with_system_roots()).await;
    assert!(reason(&error).contains("certificate verify failed"), "{error}");
    assert!(took < Duration::from_secs(25), "failed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_fails_the_sink_at_once() {
    let setup = setup();
    let sink = KafkaSink::builder(&setup.tls)
        .security(&Security::tls(setup.file("other-ca.pem")))
        .default_topic(common::unique("never"))
        .build(Json)
        .expect("sink");
    let mut g = Topology::builder();
    let values = g.source("values", from_iter(0..10u64));
    let messages = g.node("wrap", map(Outgoing::new), values);
    g.sink("produce", sink, messages);
    let (error, took) = failure_of(g).await;
    assert!(reason(&error).contains("certificate verify failed"), "{error}");
    // librdkafka's own message timeout is 300 s.
    assert!(took < Duration::from_secs(25), "failed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_without_a_client_certificate_is_refused_at_once() {
    let setup = setup();
    let (error, took) = source_failure(&setup.mtls, &Security::tls(setup.file("ca.pem"))).await;
    assert!(reason(&error).contains("certificate required"), "{error}");
    assert!(took < Duration::from_secs(25), "failed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_against_the_tls_port_fails_saying_to_use_tls() {
    let setup = setup();
    let source = KafkaSource::builder(&setup.tls, &common::unique("plaintext"))
        .topic("anything")
        .require_brokers(true)
        .startup_timeout(Duration::from_secs(3))
        .build(Json)
        .expect("source");
    let mut g = Topology::builder();
    let records = g.source("consume", source);
    g.sink("drop", for_each(|_: Record<u64>| async {}), records);
    let error = tokio::time::timeout(Duration::from_secs(30), g.build().expect("valid").run())
        .await
        .expect("fails within the start-up deadline")
        .expect_err("the TLS port does not speak plaintext");
    let cause = std::error::Error::source(&error).expect("a cause");
    let kafka = cause.downcast_ref::<nanostream_kafka::Error>().expect("a Kafka error");
    assert!(matches!(kafka, nanostream_kafka::Error::Unreachable { .. }), "{kafka:?}");
    let shown = kafka.to_string();
    assert!(shown.contains("brokers expect TLS") && shown.contains("Security::tls"), "{shown}");
}

/// The test broker answers every SASL handshake with "Unsupported SASL
/// mechanism": a refused login. Over mutual TLS, for SCRAM-SHA-512,
/// SCRAM-SHA-256 and PLAIN, through the sink and the source,
/// it fails at once, names SASL, and the password is in no output: not in
/// the errors, not in any log line at TRACE, not in the `Debug` output of
/// the settings and builders, not in the pipeline's snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sasl_login_fails_at_once_and_no_secret_appears_anywhere() {
    let logs_before = captured_logs().len();
    let setup = setup();
    let password = "hunter2-sasl-7a1f";
    let key_password = setup.key_password();
    let logins = [
        setup.mutual().sasl_scram(Scram::Sha512, "alice", password),
        setup.mutual().sasl_scram(Scram::Sha256, "alice", password),
        setup.mutual().sasl_plain("alice", password),
    ];
    for security in logins {
        let source_builder = KafkaSource::builder(&setup.mtls, &common::unique("sasl")).security(&security).topic("t");
        let sink_builder = KafkaSink::builder(&setup.mtls).security(&security);
        let shown = format!("{security:?} {security:#?} {source_builder:?} {sink_builder:#?}");

        let (error, took) = source_failure(&setup.mtls, &security).await;
        assert!(reason(&error).contains("SASL"), "{error}");
        assert!(took < Duration::from_secs(25), "failed after {took:?}");

        let sink = sink_builder.default_topic("t").build(Json).expect("sink");
        let mut g = Topology::builder();
        let values = g.source("values", from_iter(0..5u64));
        let messages = g.node("wrap", map(Outgoing::new), values);
        g.sink("produce", sink, messages);
        let (sink_error, _, outputs) = failure_and_outputs(g).await;
        assert!(reason(&sink_error).contains("SASL"), "{sink_error}");

        let everything = format!("{shown}\n{error}\n{error:?}\n{sink_error}\n{sink_error:?}\n{outputs}");
        for secret in [password, key_password.as_str()] {
            assert!(!everything.contains(secret), "a secret leaked:\n{everything}");
        }
        assert!(everything.contains("[redacted]"), "{everything}");
    }
    let logs = logs();
    let ours = &logs[logs_before.min(logs.len())..];
    assert!(ours.contains("SASL"), "the refusal is logged");
    assert!(!logs.contains(password) && !logs.contains(&key_password), "a secret is in the logs");
}

/// The dead-letter producer the source makes for payloads that do not
/// decode connects as the source does: over mutual TLS here, with the
/// encrypted client key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_produced_over_the_same_mutual_tls() {
    let setup = setup();
    let security = setup.mutual();
    let (input, dlq) = (common::unique("mtls-in"), common::unique("mtls-dlq"));
    let admin = setup.mutual_admin();
    create_topic(&setup.mtls, &admin, &input, 1).await;
    create_topic(&setup.mtls, &admin, &dlq, 1).await;
    // Ten numbers and two payloads that are not JSON, through the sink.
    let payloads: Vec<Vec<u8>> =
        (0..10u64).map(|i| i.to_string().into_bytes()).chain([b"not json".to_vec(), b"{".to_vec()]).collect();
    let sink = KafkaSink::builder(&setup.mtls)
        .security(&security)
        .default_topic(&input)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .build(nanostream_kafka::Raw)
        .expect("sink");
    let mut g = Topology::builder();
    let payloads = g.source("payloads", from_iter(payloads));
    let messages = g.node("wrap", map(Outgoing::new), payloads);
    g.sink("produce", sink, messages);
    tokio::time::timeout(Duration::from_secs(60), g.build().expect("valid").run())
        .await
        .expect("completes")
        .expect("runs");

    let source = KafkaSource::builder(&setup.mtls, &common::unique("mtls-dl"))
        .security(&security)
        .topic(&input)
        .on_decode_error(nanostream_kafka::DecodeErrors::DeadLetter(dlq.clone()));
    let mut good = read_to_end(source).await;
    good.sort_unstable();
    assert_eq!(good, (0..10).collect::<Vec<_>>(), "every good payload decoded");

    // Read until both letters came (the test broker's end offsets are
    // wrong for batched records, which the dead-letter producer sends).
    let letters = KafkaSource::builder(&setup.mtls, &common::unique("mtls-dl-read"))
        .security(&security)
        .topic(&dlq)
        .start_from(StartFrom::Earliest)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .build(nanostream_kafka::Raw)
        .expect("source");
    let mut g = Topology::builder();
    let records = g.source("consume", letters);
    let (collect, stream) = into_stream(1_000);
    g.sink("collect", collect, records);
    let running = g.build().expect("valid").start();
    let letters: Vec<Record<Vec<u8>>> = tokio::time::timeout(Duration::from_secs(90), stream.take(2).collect())
        .await
        .expect("both dead letters arrive");
    running.shutdown(Duration::from_secs(30)).await.expect("shuts down cleanly");
    let stream = futures::stream::iter(letters);
    let mut dead: Vec<Vec<u8>> = stream.map(|r: Record<Vec<u8>>| r.value).collect().await;
    dead.sort();
    assert_eq!(dead, vec![b"not json".to_vec(), b"{".to_vec()], "both dead letters, byte for byte, over mutual TLS");
}
