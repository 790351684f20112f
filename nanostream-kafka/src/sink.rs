//! The Kafka sink: produce without awaiting each delivery.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use nanostream::{Context, Now, Sink, acks::Acks};
use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::Notify;

use crate::blocking::OffWorker;
use crate::codec::Encoder;
use crate::error::Error;
use crate::record::Outgoing;
use crate::security::{Connection, Security};
use crate::startup;

/// Builds a [`KafkaSink`]; see [`KafkaSink::builder`].
///
/// Its `Debug` output shows every setting but the values of secrets
/// (passwords, client secrets, tokens, private keys).
#[derive(Clone)]
pub struct KafkaSinkBuilder {
    config: ClientConfig,
    default_topic: Option<String>,
}

impl std::fmt::Debug for KafkaSinkBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSinkBuilder")
            .field("config", &crate::secrets::Redacted(&self.config))
            .field("default_topic", &self.default_topic)
            .finish()
    }
}

impl KafkaSinkBuilder {
    /// The topic of messages that do not name one.
    pub fn default_topic(mut self, topic: impl Into<String>) -> Self {
        self.default_topic = Some(topic.into());
        self
    }

    /// Encrypts the connections and logs in as `security` says (TLS, SASL).
    /// A refusal at the security checks fails the sink with
    /// [`Error::Security`].
    pub fn security(mut self, security: &Security) -> Self {
        security.apply(&mut self.config);
        self
    }

    /// Sets any librdkafka producer property, for example `linger.ms`,
    /// `compression.type` or `acks`.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.config.set(key, value);
        self
    }

    /// Creates the sink, encoding values with `encoder` (for example
    /// [`Json`](crate::Json)).
    ///
    /// # Errors
    ///
    /// librdkafka rejected the configuration.
    pub fn build<T, E: Encoder<T>>(self, encoder: E) -> Result<KafkaSink<T, E>, Error> {
        let shared = Arc::new(Shared::default());
        let connection = Connection::new(&self.config);
        let producer = self.config.create_with_context(SinkContext { shared: shared.clone(), connection })?;
        Ok(KafkaSink {
            producer: OffWorker::new(producer),
            encoder,
            default_topic: self.default_topic,
            shared,
            current: Arc::default(),
            copies: Vec::new(),
            buf: Vec::new(),
            _t: PhantomData,
        })
    }
}

/// What the messages of one input chunk owe: the chunk's acknowledgements,
/// shared by its messages (each holds an `Arc` until its delivery report).
///
/// Released when the last message goes, if the chunk was fed to librdkafka
/// in full and every delivery succeeded; abandoned otherwise (a failed
/// delivery, the sink failing half-way through the chunk, the pipeline
/// torn down with messages in flight).
#[derive(Default)]
struct Owed {
    acks: Acks,
    /// Every message of the chunk was handed to librdkafka (or skipped by
    /// the sink's error policy for a fault of its own).
    complete: AtomicBool,
    /// A delivery failed, or a message of the chunk was not produced because
    /// an earlier delivery had failed.
    failed: AtomicBool,
    /// Nothing is released once the pipeline has failed.
    ctx: Option<Context>,
}

impl Owed {
    fn new(acks: Acks, ctx: Option<Context>) -> Self {
        Self { acks, complete: AtomicBool::new(false), failed: AtomicBool::new(false), ctx }
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        let acks = std::mem::take(&mut self.acks);
        if self.complete.load(Ordering::Acquire)
            && !self.failed.load(Ordering::Acquire)
            && !self.ctx.as_ref().is_some_and(Context::has_failed)
        {
            acks.release();
        }
    }
}

#[derive(Default)]
struct Shared {
    /// Delivery failures not yet reported by the sink.
    failures: Mutex<Vec<Error>>,
    failed: AtomicBool,
    delivered: AtomicU64,
    /// The sink's context once it runs in a topology.
    ctx: OnceLock<Context>,
    /// Set while the sink waits for room in librdkafka's queue.
    waiting: AtomicBool,
    room: Notify,
}

struct SinkContext {
    shared: Arc<Shared>,
    /// Refusals at the security checks.
    connection: Connection,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        startup::repeats().client_log("producer", level, fac, log_message);
        self.connection.client_log(fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        startup::repeats().client_error("producer", &error, reason);
        self.connection.client_error(&error, reason);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Arc<Owed>;

    fn delivery(&self, result: &DeliveryResult<'_>, owed: Arc<Owed>) {
        match result {
            Ok(_) => {
                self.shared.delivered.fetch_add(1, Ordering::Relaxed);
                drop(owed);
            }
            Err((error, message)) => {
                let failure = || Error::Delivery { topic: message.topic().to_owned(), message: error.to_string() };
                // librdkafka has given up on this message. Fail the pipeline
                // before anything else happens to its acknowledgements, and
                // whatever policy wraps the sink: skipping it would let its
                // record be committed although its output is lost.
                if let Some(ctx) = self.shared.ctx.get() {
                    ctx.fail(failure());
                }
                // Its chunk's acknowledgements are abandoned, never released.
                owed.failed.store(true, Ordering::Release);
                drop(owed);
                self.shared.failures.lock().unwrap_or_else(PoisonError::into_inner).push(failure());
                self.shared.failed.store(true, Ordering::Release);
            }
        }
        if self.shared.waiting.load(Ordering::Acquire) {
            self.shared.room.notify_one();
        }
    }
}

/// Produces [`Outgoing`] messages to Kafka.
///
/// Messages are handed to librdkafka without waiting for each delivery:
/// librdkafka batches them, and delivery reports are tracked concurrently.
/// When librdkafka's local queue is full (`queue.buffering.max.messages`),
/// the sink waits for room, which slows the graph down (back-pressure)
/// instead of failing. At the end of input, everything in flight is flushed.
///
/// A record's acknowledgement is released only once every message derived
/// from it is delivered. A message that cannot be delivered (librdkafka
/// retries for `delivery.timeout.ms`, 5 minutes by default) fails the
/// pipeline, whatever error policy wraps the sink (see [`Context::fail`]):
/// its record is never acknowledged, so it is read again after a restart.
/// Errors about one item (it cannot be encoded, it names no topic) are
/// ordinary errors of the sink that policies such as `skip_errors` apply to.
///
/// # Examples
///
/// ```no_run
/// use nanostream::prelude::*;
/// use nanostream_kafka::{Json, KafkaSink, Outgoing};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sink = KafkaSink::builder("127.0.0.1:9092").default_topic("greetings").build(Json)?;
/// let mut g = Topology::builder();
/// let names = g.source("names", from_iter(["ada", "grace"]));
/// let messages = g.node("greet", map(|n: &str| Outgoing::new(format!("hello {n}")).with_key(n)), names);
/// g.sink("kafka", sink, messages);
/// g.build()?.run().await?;
/// # Ok(()) }
/// ```
pub struct KafkaSink<T, E> {
    /// Dropped on the blocking pool: dropping a producer joins its polling
    /// thread and flushes.
    producer: OffWorker<ThreadedProducer<SinkContext>>,
    encoder: E,
    default_topic: Option<String>,
    shared: Arc<Shared>,
    current: Arc<Owed>,
    /// Copies of `current` made in bursts: each message takes one. Cloning
    /// one at a time would bounce the reference count's cache line between
    /// this task and librdkafka's thread, which drops the copies.
    copies: Vec<Arc<Owed>>,
    buf: Vec<u8>,
    _t: PhantomData<fn(T)>,
}

impl<T, E> std::fmt::Debug for KafkaSink<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").field("default_topic", &self.default_topic).finish_non_exhaustive()
    }
}

impl KafkaSink<(), ()> {
    /// Starts configuring a sink producing to the brokers `brokers`.
    pub fn builder(brokers: &str) -> KafkaSinkBuilder {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        KafkaSinkBuilder { config, default_topic: None }
    }
}

/// Reads how many messages a [`KafkaSink`] has delivered, also while it
/// runs inside a topology; see [`KafkaSink::deliveries`].
#[derive(Clone)]
pub struct Deliveries(Arc<Shared>);

impl Deliveries {
    /// Messages confirmed delivered so far.
    pub fn get(&self) -> u64 {
        self.0.delivered.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Deliveries").field(&self.get()).finish()
    }
}

impl<T, E> KafkaSink<T, E> {
    /// A handle to the number of messages this sink has delivered, to read
    /// after the sink has been added to a topology.
    pub fn deliveries(&self) -> Deliveries {
        Deliveries(self.shared.clone())
    }
}

impl Shared {
    /// The next delivery failure not yet reported.
    fn take_failure(&self) -> Result<(), Error> {
        if !self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let failure = failures.pop();
        if failures.is_empty() {
            self.failed.store(false, Ordering::Release);
        }
        failure.map_or(Ok(()), Err)
    }

    /// Waits until a delivery report frees room in librdkafka's queue.
    async fn wait_for_room(&self) {
        self.waiting.store(true, Ordering::Release);
        // Deliveries notify; the timeout covers a report that raced the flag.
        let _ = tokio::time::timeout(Duration::from_millis(10), self.room.notified()).await;
        self.waiting.store(false, Ordering::Release);
    }
}

/// Returns a delivery failure not yet reported, as the error of the message
/// being consumed. That message is then not produced: its chunk is not done
/// even if a policy skips the error.
fn report_failure(shared: &Shared, current: &Owed) -> Result<(), Error> {
    let reported = shared.take_failure();
    if reported.is_err() {
        current.failed.store(true, Ordering::Release);
    }
    reported
}

impl<T, E> KafkaSink<T, E> {
    /// Marks the current chunk as fed in full and starts the next.
    fn next_chunk(&mut self, next: Owed) {
        self.current.complete.store(true, Ordering::Release);
        self.copies.clear();
        self.current = Arc::new(next);
    }

    /// Encodes `message` and hands it to librdkafka, once.
    fn try_send(&mut self, message: Outgoing<T>) -> Sent<T>
    where
        E: Encoder<T>,
    {
        if let Err(error) = report_failure(&self.shared, &self.current) {
            return Sent::Failed(error);
        }
        let Some(topic) = message.topic.as_deref().or(self.default_topic.as_deref()) else {
            return Sent::Failed(Error::NoTopic);
        };
        self.buf.clear();
        let payload = match self.encoder.encode(&message.value, &mut self.buf) {
            Ok(payload) => payload,
            Err(source) => return Sent::Failed(Error::Encode { topic: topic.to_owned(), source }),
        };
        let mut headers = None;
        for h in &message.headers {
            let all = headers.take().unwrap_or_else(OwnedHeaders::new);
            headers = Some(all.insert(KafkaHeader { key: &h.key, value: h.value.as_deref() }));
        }
        if self.copies.is_empty() {
            self.copies.extend(std::iter::repeat_with(|| self.current.clone()).take(64));
        }
        let owed = self.copies.pop().unwrap_or_else(|| self.current.clone());
        let mut record = BaseRecord::with_opaque_to(topic, owed).payload(payload);
        if let Some(key) = &message.key {
            record = record.key(&key[..]);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        if let Some(partition) = message.partition {
            record = record.partition(partition);
        }
        match self.producer.send(record) {
            Ok(()) => Sent::Done,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                // Its copy of the acknowledgements goes back to the pool.
                self.copies.push(returned.delivery_opaque);
                Sent::Full(message)
            }
            Err((error, _)) => Sent::Failed(error.into()),
        }
    }
}

/// What handing a message to librdkafka did.
enum Sent<T> {
    Done,
    /// librdkafka's queue is full: here is the message back.
    Full(Outgoing<T>),
    Failed(Error),
}

impl<T, E> Sink for KafkaSink<T, E>
where
    T: Send + 'static,
    E: Encoder<T>,
{
    type In = Outgoing<T>;
    type Error = Error;

    async fn setup(&mut self, ctx: &Context) -> Result<(), Error> {
        let _ = self.shared.ctx.set(ctx.clone());
        let connection = &self.producer.context().connection;
        connection.set_context(ctx);
        connection.check()
    }

    fn hold(&mut self, acks: Acks) -> Acks {
        // The previous chunk was fed in full. Every message produced from
        // this one keeps a copy until it is delivered.
        self.next_chunk(Owed::new(acks, self.shared.ctx.get().cloned()));
        Acks::default()
    }

    async fn consume(&mut self, message: Outgoing<T>) -> Result<(), Error> {
        let mut message = message;
        loop {
            match self.try_send(message) {
                Sent::Done => return Ok(()),
                Sent::Failed(error) => return Err(error),
                Sent::Full(returned) => {
                    // librdkafka's queue is full: wait for deliveries to make
                    // room. This is where back-pressure reaches the graph.
                    message = returned;
                    self.shared.wait_for_room().await;
                }
            }
        }
    }

    /// Hands the message to librdkafka without waiting, unless its queue is
    /// full: then the runtime waits in [`consume`](Sink::consume).
    fn consume_now(&mut self, message: Outgoing<T>) -> Now<Outgoing<T>, (), Error> {
        match self.try_send(message) {
            Sent::Done => Now::Nothing,
            Sent::Failed(error) => Now::Fail(error),
            Sent::Full(message) => Now::Later(message),
        }
    }

    async fn flush(&mut self) -> Result<(), Error> {
        // No more input for now, so the last chunk was fed in full. Messages
        // in flight keep their own copies of its acknowledgements; the sink
        // must not keep one (which would hold its records back until more
        // input arrives).
        self.next_chunk(Owed::default());
        self.shared.take_failure()
    }

    async fn finish(&mut self) -> Result<(), Error> {
        // Wait for every delivery report.
        while self.producer.in_flight_count() > 0 {
            self.shared.take_failure()?;
            self.shared.wait_for_room().await;
        }
        self.shared.take_failure()
    }
}
