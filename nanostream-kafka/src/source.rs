//! The Kafka source: consume several topics in one consumer group.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use nanostream::time::Timestamp;
use nanostream::{Context, Emitter, Source, acks::Acks};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::blocking::{OffWorker, blocking};
use crate::clocks::{Clocks, EventTimeConfig, SourceTime};
use crate::codec::Decoder;
use crate::error::Error;
use crate::offsets::{BatchGuard, Offsets};
use crate::record::{Header, Record};
use crate::security::{Connection, Security};
use crate::startup::{self, Quiet, Repeats};

/// Where a partition starts being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartFrom {
    /// Resume from the group's committed offset; a partition without one
    /// starts at its earliest message. The default, and what makes restarts
    /// lose nothing.
    #[default]
    Committed,
    /// The first time this process is assigned a partition, start at its
    /// earliest message, ignoring the committed offset (to reprocess a
    /// topic). Later assignments in the same process resume from the
    /// committed offset, also when the partition moves between the parts of
    /// a source split with [`build_parts`](KafkaSourceBuilder::build_parts).
    Earliest,
    /// Like `Earliest`, but start at the end: only new messages.
    Latest,
}

/// What the source does with a message whose payload does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DecodeErrors {
    /// Fail the source, and so the pipeline (the default).
    #[default]
    Fail,
    /// Count it in the source's error metric, log it, and go on.
    Skip,
    /// Produce it unchanged (key, payload and headers) to this topic, with
    /// the decoding error in an `error` header and its origin in
    /// `source_topic`, `source_partition` and `source_offset` headers, and
    /// go on. Its offset is committed once the dead letter is delivered.
    DeadLetter(String),
}

/// Builds a [`KafkaSource`]; see [`KafkaSource::builder`].
///
/// Its `Debug` output shows every setting but the values of secrets
/// (passwords, client secrets, tokens, private keys).
#[derive(Clone)]
pub struct KafkaSourceBuilder {
    config: ClientConfig,
    topics: Vec<String>,
    start: StartFrom,
    decode_errors: DecodeErrors,
    commit_interval: Duration,
    batch: usize,
    auto_commit: bool,
    keep_payload: bool,
    startup: Startup,
    event_time: Option<EventTimeConfig>,
}

impl std::fmt::Debug for KafkaSourceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSourceBuilder")
            .field("config", &crate::secrets::Redacted(&self.config))
            .field("topics", &self.topics)
            .field("start", &self.start)
            .field("decode_errors", &self.decode_errors)
            .field("commit_interval", &self.commit_interval)
            .field("batch", &self.batch)
            .field("auto_commit", &self.auto_commit)
            .field("keep_payload", &self.keep_payload)
            .field("startup", &self.startup)
            .field("event_time", &self.event_time)
            .finish()
    }
}

/// What the source checks and waits for when it starts.
#[derive(Debug, Clone, Copy)]
struct Startup {
    timeout: Duration,
    require_brokers: bool,
    allow_missing_topics: bool,
    assignment_warning: Duration,
    until_end: bool,
}

impl KafkaSourceBuilder {
    /// Gives the source event time: each record's timestamp, with
    /// watermarks per partition that trail the latest timestamp read from
    /// it by `max_delay` (the bounded out-of-orderness). The source's
    /// watermark is the minimum over its assigned partitions, so event-time
    /// windows after it close once every partition has moved past them;
    /// each record carries its partition's watermark
    /// ([`Record::stamp`]), which is what the windows judge lateness by, so
    /// the results do not depend on how the partitions interleave.
    ///
    /// A partition that has not been read from yet holds the watermark back
    /// (one that is empty holds it back for good): see
    /// [`idle_after`](Self::idle_after). A bounded read
    /// ([`until_end`](Self::until_end)) ends with the final watermark; a
    /// shutdown does not, so open windows are not emitted and their records
    /// are read again after a restart. See [`nanostream::time`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use nanostream::prelude::*;
    /// use nanostream::operators::Windows;
    /// use nanostream_kafka::{Json, KafkaSource, Record};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let clicks = KafkaSource::builder("127.0.0.1:9092", "clicks-per-minute")
    ///     .topic("clicks")
    ///     .event_time(Duration::from_secs(5))
    ///     .idle_after(Duration::from_secs(30))
    ///     .build(Json)?;
    /// let mut g = Topology::builder();
    /// let clicks = g.source("clicks", clicks);
    /// let per_minute = Windows::tumbling(Duration::from_secs(60)).aggregate(
    ///     Record::stamp,
    ///     |r: &Record<serde_json::Value>| r.value["page"].to_string(),
    ///     || 0u64,
    ///     |n, _| *n += 1,
    /// );
    /// let (counts, late) = g.window("per_minute", per_minute, clicks);
    /// g.sink("print", for_each(|c| async move { println!("{c:?}") }), counts);
    /// g.sink("late", for_each(|l| async move { eprintln!("late: {l:?}") }), late);
    /// g.build()?.run().await?;
    /// # Ok(()) }
    /// ```
    pub fn event_time(mut self, max_delay: Duration) -> Self {
        let idle_after = self.event_time.and_then(|e| e.idle_after);
        self.event_time = Some(EventTimeConfig { max_delay, idle_after });
        self
    }

    /// With [`event_time`](Self::event_time): a partition with no new
    /// record for `after` stops holding the watermark back, and counts
    /// again from its next record. Off by default, so a quiet partition
    /// keeps windows open (results stay exact); set it when partitions can
    /// go quiet for long. Checked every
    /// [`commit_interval`](Self::commit_interval).
    pub fn idle_after(mut self, after: Duration) -> Self {
        let max_delay = self.event_time.map_or(Duration::ZERO, |e| e.max_delay);
        self.event_time = Some(EventTimeConfig { max_delay, idle_after: Some(after) });
        self
    }

    /// Keeps each message's original bytes in [`Record::payload`] beside the
    /// decoded value (a copy per message), so that a
    /// [`DeadLetterSink`](crate::DeadLetterSink) can write a record a node
    /// failed on exactly as it was read. Off by default.
    pub fn keep_payload(mut self, keep: bool) -> Self {
        self.keep_payload = keep;
        self
    }

    /// How long the source waits, when it starts, for the brokers to answer
    /// (default 30 s). Within it, a topic that does not exist fails the
    /// pipeline with [`Error::UnknownTopic`] (unless
    /// [`allow_missing_topics`](Self::allow_missing_topics)); brokers that
    /// do not answer are logged once and waited for, or fail it with
    /// [`Error::Unreachable`] with [`require_brokers`](Self::require_brokers).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup.timeout = timeout;
        self
    }

    /// Fails the pipeline with [`Error::Unreachable`] when no broker answers
    /// within the [`startup_timeout`](Self::startup_timeout), instead of
    /// waiting for them (off by default: a service may start before its
    /// cluster). Jobs that should stop rather than hang turn it on.
    pub fn require_brokers(mut self, require: bool) -> Self {
        self.startup.require_brokers = require;
        self
    }

    /// Lets the source start when a topic does not exist yet (it is read
    /// once it is created), instead of failing with
    /// [`Error::UnknownTopic`].
    pub fn allow_missing_topics(mut self, allow: bool) -> Self {
        self.startup.allow_missing_topics = allow;
        self
    }

    /// Logs a warning if the group has assigned this source no partition
    /// this long after it started to join (default 30 s): a group that
    /// cannot form, or more members than partitions.
    pub fn assignment_warning(mut self, after: Duration) -> Self {
        self.startup.assignment_warning = after;
        self
    }

    /// A bounded read: reads every partition up to the offset that was its
    /// end when the source started, then finishes, so the pipeline drains,
    /// commits and completes (a backfill, a check, "process yesterday's
    /// topic"). Partitions that were empty, or already read to their end by
    /// the group, are done at once. Needs the brokers to answer at start
    /// (else [`Error::Unreachable`]).
    ///
    /// The end offsets are the brokers' high watermarks (with the default
    /// `isolation.level=read_committed`, the last stable offsets).
    pub fn until_end(mut self, bounded: bool) -> Self {
        self.startup.until_end = bounded;
        self
    }

    /// Lets librdkafka commit consumed offsets on its own (every
    /// `auto.commit.interval.ms`, 5 s) instead of tracking acknowledgements:
    /// a little cheaper, but a crash can then lose records that were
    /// consumed and not yet delivered. Off by default; meant for pipelines
    /// that can afford loss, and for measuring what the guarantee costs.
    pub fn auto_commit(mut self, auto: bool) -> Self {
        self.auto_commit = auto;
        self
    }

    /// Subscribes to `topic` (may be called several times).
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topics.push(topic.into());
        self
    }

    /// Subscribes to every topic of `topics`.
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics.extend(topics.into_iter().map(Into::into));
        self
    }

    /// Where partitions start being read; default [`StartFrom::Committed`].
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// What to do with payloads that do not decode; default
    /// [`DecodeErrors::Fail`].
    pub fn on_decode_error(mut self, policy: DecodeErrors) -> Self {
        self.decode_errors = policy;
        self
    }

    /// How often completed offsets are committed while running (default 1
    /// s). They are also committed when partitions are revoked and on
    /// shutdown.
    pub fn commit_interval(mut self, every: Duration) -> Self {
        self.commit_interval = every;
        self
    }

    /// Encrypts the connections and logs in as `security` says (TLS, SASL);
    /// the dead-letter producer of
    /// [`DecodeErrors::DeadLetter`] connects the same way. A refusal at the
    /// security checks fails the source with [`Error::Security`].
    pub fn security(mut self, security: &Security) -> Self {
        security.apply(&mut self.config);
        self
    }

    /// Sets any librdkafka consumer property, for example
    /// `session.timeout.ms` or `security.protocol`. Overrides what the
    /// builder sets.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.config.set(key, value);
        self
    }

    /// Creates the source, decoding payloads with `decoder` (for example
    /// [`Json`](crate::Json)).
    ///
    /// # Errors
    ///
    /// No topic was given, or librdkafka rejected the configuration.
    pub fn build<T, D: Decoder<T>>(self, decoder: D) -> Result<KafkaSource<T, D>, Error> {
        let config = self.member_config(None)?;
        let dead_letters = self.dead_letter_producer(&config)?;
        self.build_member(config, decoder, dead_letters, Seen::default())
    }

    /// Creates `parts` sources that join the group as `parts` members, so
    /// that Kafka splits the assigned partitions between them, as Kafka
    /// Streams splits them between its stream threads: give each part a
    /// pipeline of its own (its chain of nodes fuses into the part's task),
    /// and the pipelines run on different cores with no hand-off between
    /// them. Each part is a source like one [`build`](Self::build) makes:
    /// it commits its own partitions' offsets only once what was derived
    /// from them is done, and when a rebalance moves partitions between the
    /// parts (or to another process), the same at-least-once rules apply.
    ///
    /// A part whose member gets no partition (more parts than partitions)
    /// emits nothing until a rebalance gives it some. The start policy holds
    /// for the process: a partition that moves from one part to another
    /// resumes from the committed offset. Keyed state (`fold_by_key`,
    /// windows) in each part's pipeline sees every item of a key only if
    /// the producers keep a key in one partition (Kafka's default
    /// partitioner does, by message key). With static group
    /// membership (`group.instance.id`), each part gets the id with `-<i>`
    /// appended.
    ///
    /// # Errors
    ///
    /// No topic or no part was given, or librdkafka rejected the
    /// configuration.
    ///
    /// # Examples
    ///
    /// One pipeline per core, each reading its share of the partitions:
    ///
    /// ```no_run
    /// use nanostream::prelude::*;
    /// use nanostream_kafka::{Json, KafkaSink, KafkaSource, Outgoing, Record};
    /// use serde_json::Value;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let parts = KafkaSource::builder("127.0.0.1:9092", "copier").topic("orders").build_parts(2, Json)?;
    /// let mut g = Topology::builder();
    /// for (i, part) in parts.into_iter().enumerate() {
    ///     let records = g.source(format!("orders[{i}]"), part);
    ///     let out = g.node(format!("wrap[{i}]"), map(|r: Record<Value>| Outgoing::new(r.value)), records);
    ///     let sink = KafkaSink::builder("127.0.0.1:9092").default_topic("copied").build(Json)?;
    ///     g.sink(format!("produce[{i}]"), sink, out);
    /// }
    /// g.build()?.run().await?;
    /// # Ok(()) }
    /// ```
    pub fn build_parts<T, D>(self, parts: usize, decoder: D) -> Result<Vec<KafkaSource<T, D>>, Error>
    where
        D: Decoder<T> + Clone,
    {
        if parts == 0 {
            return Err(Error::NoParts);
        }
        let mut sources = Vec::with_capacity(parts);
        let mut dead_letters = None;
        let seen = Seen::default();
        for part in 0..parts {
            let config = self.member_config(Some(part))?;
            if dead_letters.is_none() {
                dead_letters = self.dead_letter_producer(&config)?;
            }
            // The parts share one dead-letter producer.
            let shared = dead_letters.clone();
            sources.push(self.build_member(config, decoder.clone(), shared, seen.clone())?);
        }
        Ok(sources)
    }

    /// The consumer settings of one member of the group.
    fn member_config(&self, part: Option<usize>) -> Result<ClientConfig, Error> {
        if self.topics.is_empty() {
            return Err(Error::NoTopics);
        }
        if self.auto_commit && self.startup.until_end {
            // librdkafka would store and commit the offsets of messages read
            // past the end and never processed.
            return Err(Error::Unsupported { what: "until_end with auto_commit" });
        }
        let mut config = self.config.clone();
        if self.auto_commit {
            config.set("enable.auto.commit", "true").set("enable.auto.offset.store", "true");
        }
        if let Some(part) = part
            && let Some(instance) = config.get("group.instance.id").map(str::to_owned)
        {
            config.set("group.instance.id", format!("{instance}-{part}"));
        }
        Ok(config)
    }

    /// The producer of dead letters, if undecodable payloads go to a topic.
    fn dead_letter_producer(&self, config: &ClientConfig) -> Result<Option<(FutureProducer<Quiet>, String)>, Error> {
        let DecodeErrors::DeadLetter(topic) = &self.decode_errors else { return Ok(None) };
        // The connection settings the consumer was given (brokers, TLS,
        // SASL, ...) apply to the dead-letter producer too.
        // `config_map` masks the values of sensitive keys (passwords): read
        // each value with `get`.
        let mut producer = ClientConfig::new();
        for key in config.config_map().into_keys() {
            if CONNECTION_SETTINGS.iter().any(|prefix| key.starts_with(prefix))
                && let Some(value) = config.get(key)
            {
                producer.set(key, value);
            }
        }
        Ok(Some((producer.create_with_context::<_, FutureProducer<Quiet>>(Quiet)?, topic.clone())))
    }

    fn build_member<T, D: Decoder<T>>(
        &self,
        config: ClientConfig,
        decoder: D,
        dead_letters: Option<(FutureProducer<Quiet>, String)>,
        seen: Seen,
    ) -> Result<KafkaSource<T, D>, Error> {
        let offsets = Arc::new(Offsets::default());
        let group = config.get("group.id").unwrap_or_default().to_owned();
        let context = SourceContext {
            offsets: offsets.clone(),
            start: self.start,
            seen,
            group,
            joined: Mutex::default(),
            assigned: AtomicBool::new(false),
            connection: Connection::new(&config),
        };
        let consumer: StreamConsumer<SourceContext> = config.create_with_context(context)?;
        Ok(KafkaSource {
            consumer: OffWorker::new(Arc::new(consumer)),
            decoder,
            topics: self.topics.clone(),
            offsets,
            decode_errors: self.decode_errors.clone(),
            dead_letters: dead_letters.map(|(producer, topic)| (OffWorker::new(producer), topic)),
            commit_interval: self.commit_interval,
            batch: self.batch,
            track: !self.auto_commit,
            keep_payload: self.keep_payload,
            startup: self.startup,
            ends: HashMap::new(),
            ctx: None,
            topic_names: Vec::new(),
            clocks: self.event_time.map(Clocks::new),
            clocks_generation: 0,
            _t: PhantomData,
        })
    }
}

/// Prefixes of the librdkafka settings that say how to reach and log in to
/// the cluster, shared by consumers and producers.
const CONNECTION_SETTINGS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "client.id",
    "client.dns.lookup",
    "broker.address.",
    "security.protocol",
    "ssl.",
    "ssl_",
    "sasl.",
    "socket.",
    "api.version",
    "broker.version.fallback",
    "enable.ssl.certificate.verification",
];

/// Consumes messages from several topics in one consumer group and emits
/// them as [`Record`]s, committing an offset only once everything derived
/// from its message is done.
///
/// Messages are read in batches (as many as are ready, up to a chunk) and
/// each batch carries one acknowledgement guard through the graph; a
/// partition's offset is committed past a batch once that batch and every
/// batch before it are done (see [`Acks`]). Commits happen every
/// [`commit_interval`](KafkaSourceBuilder::commit_interval), for revoked
/// partitions before a rebalance releases them, and at shutdown.
///
/// On graceful shutdown the source stops consuming, ends its output so the
/// pipeline drains, waits until what it emitted is done, commits, and
/// leaves the group. If the pipeline fails, nothing more is committed:
/// records in flight are read again after a restart (at-least-once).
///
/// Back-pressure: when the graph is full, the source stops polling, and
/// librdkafka stops fetching once its own queue is full
/// (`queued.max.messages.kbytes`, 16 MiB by default here), so memory stays
/// bounded. A pipeline blocked longer than `max.poll.interval.ms` (5
/// minutes) loses its partitions, which is safe: they are re-read.
///
/// # Examples
///
/// ```no_run
/// use nanostream::prelude::*;
/// use nanostream_kafka::{Json, KafkaSource, Record};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let orders = KafkaSource::builder("127.0.0.1:9092", "order-totals")
///     .topics(["orders-eu", "orders-us"])
///     .build(Json)?;
///
/// let mut g = Topology::builder();
/// let orders = g.source("orders", orders);
/// g.sink("print", for_each(|r: Record<serde_json::Value>| async move {
///     println!("{}#{}@{}: {}", r.topic, r.partition, r.offset, r.value);
/// }), orders);
/// g.build()?.run().await?;
/// # Ok(()) }
/// ```
pub struct KafkaSource<T, D> {
    /// Dropped on the blocking pool: closing a consumer leaves its group.
    consumer: OffWorker<Arc<StreamConsumer<SourceContext>>>,
    decoder: D,
    topics: Vec<String>,
    offsets: Arc<Offsets>,
    decode_errors: DecodeErrors,
    dead_letters: Option<(OffWorker<FutureProducer<Quiet>>, String)>,
    commit_interval: Duration,
    batch: usize,
    /// Track acknowledgements and commit only what is done.
    track: bool,
    /// Keep each message's bytes in its record.
    keep_payload: bool,
    startup: Startup,
    /// With `until_end`: each partition's end offset at start, and whether
    /// it has been read to it.
    ends: HashMap<(Arc<str>, i32), End>,
    ctx: Option<Context>,
    /// Topic names handed out as `Arc<str>`, so records share them.
    topic_names: Vec<Arc<str>>,
    /// With event time: each partition's.
    clocks: Option<Clocks>,
    /// The assignment the clocks follow.
    clocks_generation: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T, D> std::fmt::Debug for KafkaSource<T, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource").field("topics", &self.topics).finish_non_exhaustive()
    }
}

impl KafkaSource<(), ()> {
    /// Starts configuring a source that joins consumer group `group` on the
    /// brokers `brokers` (`host:port[,host:port...]`).
    ///
    /// The builder sets `bootstrap.servers`, `group.id`,
    /// `enable.auto.commit=false` (the source commits),
    /// `enable.auto.offset.store=false`, `auto.offset.reset=earliest`,
    /// `queued.max.messages.kbytes=16384` and
    /// `statistics.interval.ms=5000` (consumer lag is published as the
    /// `nanostream_kafka_consumer_lag` gauge); [`set`](KafkaSourceBuilder::set)
    /// overrides any of them.
    pub fn builder(brokers: &str, group: &str) -> KafkaSourceBuilder {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("queued.max.messages.kbytes", "16384")
            .set("statistics.interval.ms", "5000");
        KafkaSourceBuilder {
            config,
            topics: Vec::new(),
            start: StartFrom::Committed,
            decode_errors: DecodeErrors::Fail,
            commit_interval: Duration::from_secs(1),
            batch: 1024,
            auto_commit: false,
            keep_payload: false,
            startup: Startup {
                timeout: Duration::from_secs(30),
                require_brokers: false,
                allow_missing_topics: false,
                assignment_warning: Duration::from_secs(30),
                until_end: false,
            },
            event_time: None,
        }
    }
}

/// The partitions a process has been assigned before, shared by the parts
/// of a split source: a partition that moves between parts resumes from the
/// committed offset, whatever the start policy.
type Seen = Arc<Mutex<HashSet<(String, i32)>>>;

/// Reacts to rebalances and statistics.
pub(crate) struct SourceContext {
    offsets: Arc<Offsets>,
    start: StartFrom,
    /// Partitions this process (any part of a split source) has been
    /// assigned before.
    seen: Seen,
    group: String,
    /// When the source started to join the group.
    joined: Mutex<Option<Instant>>,
    /// Partitions were assigned at least once.
    assigned: AtomicBool,
    /// Refusals at the security checks, and the latest error.
    connection: Connection,
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        startup::repeats().client_log("consumer", level, fac, log_message);
        self.connection.client_log(fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        startup::repeats().client_error("consumer", &error, reason);
        self.connection.client_error(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal partition; lag -1 is unknown.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!(
                        "nanostream_kafka_consumer_lag",
                        "group" => self.group.clone(),
                        "topic" => topic.clone(),
                        "partition" => partition.to_string()
                    )
                    .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl SourceContext {
    /// Commits what is done in revoked partitions before another member
    /// takes them over.
    ///
    /// Asynchronously, because rebalance callbacks run inside the source's
    /// poll, on an async worker. librdkafka serves the commit before the
    /// unassignment that follows and sends it with the current generation,
    /// ahead of the rejoin; if it fails anyway, the new owner reads those
    /// records again (duplicates, never loss).
    fn commit(&self, consumer: &BaseConsumer<Self>, only: &TopicPartitionList) {
        let offsets = self.offsets.take_committable(Some(only));
        if offsets.count() > 0
            && let Err(error) = consumer.commit(&offsets, CommitMode::Async)
        {
            tracing::warn!(%error, "committing offsets of revoked partitions failed; they will be read again");
        }
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if self.start != StartFrom::Committed {
                    let offset = if self.start == StartFrom::Earliest { Offset::Beginning } else { Offset::End };
                    let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
                    for mut elem in tpl.elements() {
                        if seen.insert((elem.topic().to_owned(), elem.partition())) {
                            let _ = elem.set_offset(offset);
                        }
                    }
                }
                self.offsets.assign(tpl);
                if self.assigned.swap(true, Ordering::AcqRel) {
                    tracing::info!(group = %self.group, partitions = tpl.count(), "partitions assigned");
                } else {
                    let joined = *self.joined.lock().unwrap_or_else(PoisonError::into_inner);
                    let after = joined.map(|at| at.elapsed().as_secs_f64()).unwrap_or_default();
                    tracing::info!(
                        group = %self.group,
                        partitions = tpl.count(),
                        "partitions assigned, {after:.1}s after joining the group"
                    );
                }
                if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Commit what is done before another member takes over;
                // what is still in flight will be read again there.
                self.commit(consumer, tpl);
                self.offsets.forget(tpl);
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() }
            }
            other => {
                // librdkafka asks to drop the whole assignment: forget its
                // offsets too, so that no late acknowledgement is committed
                // for partitions this member no longer owns.
                tracing::error!(error = ?other, "rebalance failed; dropping the assignment");
                self.offsets.forget_all();
                consumer.unassign()
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "applying a rebalance failed");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(error) = result {
            tracing::warn!(%error, partitions = offsets.count(), "an offset commit failed; it is retried");
            self.offsets.uncommit(offsets);
        }
    }
}

/// A partition's end, for a bounded read.
#[derive(Debug, Clone, Copy)]
struct End {
    /// One past the last offset to read.
    end: i64,
    done: bool,
}

/// What a bounded read does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Read,
    /// The partition's last message to read: read it, then the partition is
    /// done.
    ReadLast,
    /// Past the end: not read (not tracked, so not committed either).
    Skip,
}

impl<T, D> KafkaSource<T, D> {
    /// Asks the brokers for the topics, and for a bounded read their end
    /// offsets, within the start-up deadline.
    async fn check_cluster(&mut self) -> Result<(), Error> {
        let consumer = Arc::clone(&self.consumer);
        let topics = self.topics.clone();
        let startup = self.startup;
        let mut check = pin!(blocking(move || {
            let connection = &consumer.context().connection;
            let partitions =
                startup::partitions(&*consumer, &topics, startup.timeout, startup.allow_missing_topics, connection)?;
            if startup.until_end {
                startup::bounds(&*consumer, &partitions, startup.timeout, connection)
            } else {
                Ok(Vec::new())
            }
        }));
        // librdkafka queues the client's log lines and errors for the
        // consumer's poll (rdkafka's `log.queue`): serve them meanwhile, so
        // that a refusal at the security checks is heard and ends the
        // check at once. Nothing is subscribed yet, so no message comes.
        let ctx = self.ctx.clone().ok_or(Error::NotSetUp)?;
        let mut events = self.consumer.stream();
        let checked = loop {
            tokio::select! {
                checked = &mut check => break checked,
                Some(event) = events.next() => {
                    if let Err(error) = event {
                        // Logged and counted, or fatal, as while it runs.
                        consumer_error(error, &ctx, startup::repeats())?;
                    }
                }
            }
        };
        drop(events);
        match checked {
            // The runtime is shutting down.
            None => Ok(()),
            Some(Ok(bounds)) => {
                for (topic, partition, low, high) in bounds {
                    let topic = self.topic_name(&topic);
                    self.ends.insert((topic, partition), End { end: high, done: high <= low });
                }
                if self.startup.until_end {
                    let to_read = self.ends.values().filter(|e| !e.done).count();
                    tracing::info!(
                        partitions = self.ends.len(),
                        to_read,
                        "bounded read: reading up to the end offsets of now"
                    );
                }
                Ok(())
            }
            Some(Err(Error::Unreachable { waited, last_error, source }))
                if !self.startup.require_brokers && !self.startup.until_end =>
            {
                tracing::warn!(
                    error = %source,
                    last_error = last_error.as_deref().unwrap_or("none"),
                    "no Kafka broker answered within {}s; still trying (require_brokers(true) fails instead)",
                    waited.as_secs()
                );
                Ok(())
            }
            Some(Err(error)) => Err(error),
        }
    }

    /// For a bounded read, what to do with `offset` of `partition`.
    fn bound(&mut self, topic: &Arc<str>, partition: i32, offset: i64) -> Bound {
        if !self.startup.until_end {
            return Bound::Read;
        }
        // A partition that did not exist at start was empty then.
        let Some(end) = self.ends.get_mut(&(topic.clone(), partition)) else { return Bound::Skip };
        if end.done {
            return Bound::Skip;
        }
        if offset >= end.end {
            // Past the end: everything before it was delivered first (a
            // partition is read in order), whether or not the last offset
            // before the end was a message (a transaction marker is not).
            end.done = true;
            return Bound::Skip;
        }
        // Done once the batch holding it is registered (`read_to_end_of`).
        if offset + 1 >= end.end { Bound::ReadLast } else { Bound::Read }
    }

    /// Stops fetching a partition read to its end.
    fn pause(&self, topic: &str, partition: i32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        if let Err(error) = self.consumer.pause(&tpl) {
            tracing::debug!(%error, topic, partition, "pausing a partition read to its end failed");
        }
    }

    /// For a bounded read: marks a partition read to its end once the batch
    /// holding its last message is registered (not before: a revocation
    /// while the batch was read drops that message, and it is read again).
    fn read_to_end_of(&mut self, topic: &Arc<str>, partition: i32) {
        if let Some(end) = self.ends.get_mut(&(topic.clone(), partition)) {
            end.done = true;
            self.pause(topic, partition);
        }
    }

    /// For a bounded read: whether every partition this source reads is
    /// read to its end (every partition there is, or every partition the
    /// group assigned it). Never while it holds no partition: a rebalance
    /// empties the assignment for a moment, and a member left without
    /// partitions waits for some.
    fn read_to_end(&self) -> bool {
        if self.ends.values().all(|e| e.done) {
            return true;
        }
        let assigned = self.offsets.assigned();
        !assigned.is_empty() && assigned.iter().all(|key| self.ends.get(key).is_none_or(|e| e.done))
    }

    /// For a bounded read: marks done the assigned partitions whose
    /// position (what was consumed, markers included) or, when resuming
    /// from the group's offsets, committed offset is at their end already:
    /// no message may come from them.
    async fn check_ends(&mut self) {
        if let Ok(positions) = self.consumer.position() {
            let mut reached = Vec::new();
            for elem in positions.elements() {
                let Offset::Offset(at) = elem.offset() else { continue };
                let key = (self.topic_name(elem.topic()), elem.partition());
                if self.ends.get(&key).is_some_and(|e| !e.done && at >= e.end) {
                    reached.push(key);
                }
            }
            for (topic, partition) in reached {
                self.read_to_end_of(&topic, partition);
            }
        }
        if self.consumer.context().start == StartFrom::Committed {
            self.check_committed().await;
        }
    }

    /// For a bounded read: marks done the assigned partitions the group has
    /// already committed up to their end (no message comes from them).
    async fn check_committed(&mut self) {
        let mut open = TopicPartitionList::new();
        for key in self.offsets.assigned() {
            if self.ends.get(&key).is_some_and(|e| !e.done) {
                open.add_partition(&key.0, key.1);
            }
        }
        if open.count() == 0 {
            return;
        }
        let consumer = Arc::clone(&self.consumer);
        let timeout = self.startup.timeout;
        let Some(Ok(committed)) = blocking(move || consumer.committed_offsets(open, timeout)).await else { return };
        for elem in committed.elements() {
            let Offset::Offset(at) = elem.offset() else { continue };
            let key = (self.topic_name(elem.topic()), elem.partition());
            if let Some(end) = self.ends.get_mut(&key)
                && at >= end.end
                && !end.done
            {
                end.done = true;
                self.pause(elem.topic(), elem.partition());
            }
        }
    }

    fn topic_name(&mut self, topic: &str) -> Arc<str> {
        if let Some(name) = self.topic_names.iter().find(|n| &***n == topic) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(topic);
        self.topic_names.push(name.clone());
        name
    }

    /// Commits what is done without waiting for the broker; a failure comes
    /// back through the commit callback, which takes the offsets back.
    fn commit_async(&self) {
        if !self.track {
            return;
        }
        let offsets = self.offsets.take_committable(None);
        if offsets.count() > 0
            && let Err(error) = self.consumer.commit(&offsets, CommitMode::Async)
        {
            tracing::warn!(%error, "committing offsets failed; they are retried");
            self.offsets.uncommit(&offsets);
        }
    }

    /// Commits what is done and waits for the broker, off the async
    /// workers.
    async fn commit_sync(&self) {
        if !self.track {
            return;
        }
        let offsets = self.offsets.take_committable(None);
        if offsets.count() == 0 {
            return;
        }
        let consumer = Arc::clone(&self.consumer);
        let committed = blocking(move || consumer.commit(&offsets, CommitMode::Sync).map_err(|e| (e, offsets))).await;
        if let Some(Err((error, offsets))) = committed {
            tracing::warn!(%error, "committing offsets failed; they are read again after a restart");
            self.offsets.uncommit(&offsets);
        }
    }
}

/// Fails on a fatal consumer error; logs and counts the others (a broker
/// going away, an unknown topic), which librdkafka recovers from itself.
fn consumer_error(error: KafkaError, ctx: &Context, repeats: &Repeats) -> Result<(), Error> {
    match error {
        KafkaError::MessageConsumption(code) => {
            ctx.record_error();
            repeats.log(tracing::Level::WARN, "consumer", &format!("consumer error, librdkafka keeps trying: {code}"));
            Ok(())
        }
        fatal => Err(fatal.into()),
    }
}

fn headers_of(message: &BorrowedMessage<'_>) -> Vec<Header> {
    message
        .headers()
        .map(|headers| {
            headers.iter().map(|h| Header { key: h.key.to_owned(), value: h.value.map(<[u8]>::to_vec) }).collect()
        })
        .unwrap_or_default()
}

/// Drops what a batch read from partitions revoked while it was read:
/// whoever owns them now reads them again from the committed offset, dead
/// letters included (these are dropped before they are ever sent).
fn drop_stale<T>(
    stale: &[(Arc<str>, i32)],
    records: &mut Vec<Record<T>>,
    letters: &mut Vec<(Arc<str>, i32, Delivery)>,
) {
    if stale.is_empty() {
        return;
    }
    let is_stale = |topic: &Arc<str>, partition: i32| stale.iter().any(|(t, p)| *p == partition && *t == *topic);
    records.retain(|r| !is_stale(&r.topic, r.partition));
    letters.retain(|(topic, partition, _)| !is_stale(topic, *partition));
    tracing::debug!(partitions = stale.len(), "dropping records of revoked partitions");
}

/// The delivery of a dead letter, and what its message's batch owes until
/// then.
type DeadLetterDelivery = futures::future::BoxFuture<'static, (Result<(), String>, Acks)>;
type Delivery = futures::future::BoxFuture<'static, Result<(), String>>;

impl<T, D> Source for KafkaSource<T, D>
where
    T: Send + 'static,
    D: Decoder<T>,
{
    type Out = Record<T>;
    type Error = Error;

    async fn setup(&mut self, ctx: &Context) -> Result<(), Error> {
        self.offsets.set_context(ctx);
        self.ctx = Some(ctx.clone());
        let connection = &self.consumer.context().connection;
        connection.set_context(ctx);
        connection.check()?;
        self.check_cluster().await?;
        let group = self.consumer.context().group.clone();
        tracing::info!(node = %ctx.name(), "joining group {group} for topics {}", self.topics.join(", "));
        *self.consumer.context().joined.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&topics)?;
        Ok(())
    }

    async fn run(&mut self, out: &mut Emitter<Record<T>>) -> Result<(), Error> {
        let ctx = self.ctx.clone().ok_or(Error::NotSetUp)?;
        let consumer = Arc::clone(&self.consumer);
        let mut stream = consumer.stream();
        let mut shutdown = pin!(ctx.shutdown_requested());
        let mut commit_tick = tokio::time::interval(self.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let assignment_warning = tokio::time::sleep(self.startup.assignment_warning);
        let mut assignment_warning = pin!(assignment_warning);
        let mut warned = false;
        let mut dead_letters: FuturesUnordered<DeadLetterDelivery> = FuturesUnordered::new();
        let mut batch_letters: Vec<(Arc<str>, i32, Delivery)> = Vec::new();
        let mut records: Vec<Record<T>> = Vec::with_capacity(self.batch);
        let mut parts: Vec<(Arc<str>, i32, i64)> = Vec::new();
        // Partitions whose last message to read is in this batch.
        let mut last_of: Vec<(Arc<str>, i32)> = Vec::new();
        // A message read after a rebalance, waiting for the next batch.
        let mut carried = None;
        // Whether the input was read to its end (not stopped).
        let mut exhausted = false;
        if self.clocks.is_some() {
            // Event time from the start: hold the nodes after this back
            // until the partitions speak.
            out.advance_watermark(Timestamp::MIN);
        }
        loop {
            let first = match carried.take() {
                Some(message) => Some(message),
                None => tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    Some((delivered, acks)) = dead_letters.next(), if !dead_letters.is_empty() => {
                        delivered.map_err(Error::DeadLetter)?;
                        acks.release();
                        continue;
                    }
                    _ = commit_tick.tick() => {
                        self.commit_async();
                        self.advance_time(out);
                        if self.startup.until_end {
                            self.check_ends().await;
                            if self.read_to_end() {
                                tracing::info!("bounded read: every partition read to its end");
                                exhausted = true;
                                break;
                            }
                        }
                        continue;
                    }
                    () = &mut assignment_warning, if !warned => {
                        warned = true;
                        if self.offsets.assigned().is_empty() {
                            tracing::warn!(
                                group = %consumer.context().group,
                                topics = %self.topics.join(", "),
                                "no partition assigned {}s after joining the group: is the group able to form, \
                                 and are there fewer members than partitions?",
                                self.startup.assignment_warning.as_secs()
                            );
                        }
                        continue;
                    }
                    // Back-pressure: with a batch of dead letters waiting for
                    // delivery, read no more until some are delivered.
                    message = stream.next(), if dead_letters.len() < self.batch => message,
                },
            };
            let Some(first) = first else { break };
            // Rebalances run inside `stream.next()`: everything in this batch
            // is read within one generation of the assignment.
            let generation = self.offsets.generation();
            // Take what else is ready now, up to one batch, without waiting.
            let mut next = Some(first);
            while let Some(result) = next.take() {
                let message = match result {
                    Ok(message) => Some(message),
                    Err(error) => {
                        consumer_error(error, &ctx, startup::repeats())?;
                        None
                    }
                };
                let message = match message {
                    Some(message) => {
                        let topic = self.topic_name(message.topic());
                        match self.bound(&topic, message.partition(), message.offset()) {
                            Bound::Read => Some(message),
                            Bound::ReadLast => {
                                last_of.push((topic.clone(), message.partition()));
                                Some(message)
                            }
                            Bound::Skip => None,
                        }
                    }
                    None => None,
                };
                if let Some(message) = message {
                    let topic = self.topic_name(message.topic());
                    let (partition, offset) = (message.partition(), message.offset());
                    match parts.iter_mut().find(|(t, p, _)| *p == partition && **t == *topic) {
                        Some(part) => part.2 = offset,
                        None => parts.push((topic.clone(), partition, offset)),
                    }
                    let payload = message.payload().unwrap_or_default();
                    let timestamp = message.timestamp().to_millis();
                    let read_watermark = self.clocks.as_mut().map(|c| c.read(&topic, partition, timestamp));
                    match self.decoder.decode(payload) {
                        Ok(value) => records.push(Record {
                            topic,
                            partition,
                            offset,
                            key: message.key().map(<[u8]>::to_vec),
                            headers: headers_of(&message),
                            timestamp,
                            read_watermark,
                            value,
                            payload: self.keep_payload.then(|| Arc::from(payload)),
                        }),
                        Err(error) => match &self.decode_errors {
                            DecodeErrors::Fail => {
                                return Err(Error::Decode {
                                    topic: topic.to_string(),
                                    partition,
                                    offset,
                                    source: error,
                                });
                            }
                            DecodeErrors::Skip => {
                                ctx.record_error();
                                tracing::warn!(%topic, partition, offset, %error, "skipping a message that does not decode");
                            }
                            DecodeErrors::DeadLetter(_) => {
                                ctx.record_error();
                                let letter = self.dead_letter(&message, &error.to_string());
                                batch_letters.push((topic, partition, letter));
                            }
                        },
                    }
                }
                // A batch at most; and at most a batch of dead letters
                // waiting for delivery, counting those of earlier batches.
                if records.len() + batch_letters.len() < self.batch
                    && batch_letters.len() + dead_letters.len() < self.batch
                {
                    next = stream.next().now_or_never().flatten();
                    if next.is_some() && self.offsets.generation() != generation {
                        // The assignment changed: this message starts the
                        // next batch.
                        carried = next.take();
                    }
                }
            }
            let acks = if self.track {
                let (guard, stale) = self.offsets.batch(&parts, generation);
                drop_stale(&stale, &mut records, &mut batch_letters);
                last_of.retain(|(t, p)| !stale.iter().any(|(st, sp)| st == t && sp == p));
                Acks::new::<BatchGuard>(guard)
            } else {
                Acks::default()
            };
            parts.clear();
            for (topic, partition) in std::mem::take(&mut last_of) {
                self.read_to_end_of(&topic, partition);
            }
            // A dead letter's message is done once the letter is delivered.
            for (_, _, delivery) in batch_letters.drain(..) {
                let owed = acks.clone();
                dead_letters.push(Box::pin(async move { (delivery.await, owed) }));
            }
            out.begin_batch(acks);
            out.emit_all(records.drain(..)).await;
            // The watermark moves on after the records it follows.
            self.advance_time(out);
            out.end_batch();
            // Send what is buffered before waiting for more (a full batch
            // has mostly been sent in chunks already).
            out.flush().await;
            if self.startup.until_end && self.read_to_end() {
                tracing::info!("bounded read: every partition read to its end");
                exhausted = true;
                break;
            }
        }
        if exhausted && self.clocks.is_some() {
            // Everything there was to read is read: the final watermark
            // closes what waits on event time. (Not after a shutdown.)
            out.advance_watermark(Timestamp::MAX);
        }
        // Stop consuming; let the graph drain; commit once all is done.
        out.close().await;
        drop(carried);
        while let Some((delivered, acks)) = dead_letters.next().await {
            delivered.map_err(Error::DeadLetter)?;
            acks.release();
        }
        if self.track {
            // Keep serving the group (rebalances, heartbeats) while the graph
            // drains, without reading more: a message that still arrives is
            // not tracked, so it is read again after a restart.
            let pausing = Arc::clone(&self.consumer);
            blocking(move || {
                if let Ok(assignment) = pausing.assignment() {
                    let _ = pausing.pause(&assignment);
                }
            })
            .await;
            let mut poll = tokio::time::interval(Duration::from_millis(10));
            while !self.offsets.all_done() && !ctx.has_failed() {
                tokio::select! {
                    _ = poll.tick() => {}
                    message = stream.next() => {
                        if let Some(Err(error)) = message {
                            consumer_error(error, &ctx, startup::repeats())?;
                        }
                    }
                }
            }
        }
        self.commit_sync().await;
        let consumer = Arc::clone(&self.consumer);
        blocking(move || consumer.unsubscribe()).await;
        Ok(())
    }

    fn cooperative_shutdown(&self) -> bool {
        true
    }
}

impl<T, D> KafkaSource<T, D> {
    /// With event time: follows the assignment, and sets the output's
    /// watermark from the partitions' (or marks it idle).
    fn advance_time(&mut self, out: &mut Emitter<Record<T>>)
    where
        T: Send + 'static,
    {
        let Some(clocks) = &mut self.clocks else { return };
        let generation = self.offsets.generation();
        if generation != self.clocks_generation {
            self.clocks_generation = generation;
            clocks.assign(&self.offsets.assigned());
        }
        match clocks.watermark() {
            SourceTime::At(t) => out.advance_watermark(t),
            SourceTime::Idle if generation == 0 => {} // not assigned yet: hold back
            SourceTime::Idle => out.mark_idle(),
        }
    }

    /// Produces a dead letter for `message`.
    fn dead_letter(&self, message: &BorrowedMessage<'_>, error: &str) -> Delivery {
        let Some((producer, topic)) = &self.dead_letters else {
            return Box::pin(async { Err("no dead letter topic".to_owned()) });
        };
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for h in original.iter() {
                headers = headers.insert(rdkafka::message::Header { key: h.key, value: h.value });
            }
        }
        let node = self.ctx.as_ref().map(|ctx| ctx.name().to_owned()).unwrap_or_default();
        let origin = [
            ("error", error.to_owned()),
            ("node", node),
            ("attempts", "1".to_owned()),
            ("source_topic", message.topic().to_owned()),
            ("source_partition", message.partition().to_string()),
            ("source_offset", message.offset().to_string()),
        ];
        for (key, value) in &origin {
            headers = headers.insert(rdkafka::message::Header { key, value: Some(value.as_bytes()) });
        }
        let (producer, topic) = (FutureProducer::clone(producer), topic.clone());
        let payload = message.payload().unwrap_or_default().to_vec();
        let key = message.key().map(<[u8]>::to_vec);
        Box::pin(async move {
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&topic).payload(&payload[..]).headers(headers);
            if let Some(key) = &key {
                record = record.key(&key[..]);
            }
            let delivery = loop {
                match producer.send_result(record) {
                    Ok(delivery) => break delivery,
                    // The local queue is full: wait for room rather than fail.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        record = returned;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((error, _)) => return Err(error.to_string()),
                }
            };
            match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, _))) => Err(error.to_string()),
                Err(_) => Err("the producer was dropped".to_owned()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use nanostream::acks::{AckGuard, AckOutcome};
    use rdkafka::mocking::MockCluster;

    use super::*;

    fn record(topic: &Arc<str>, partition: i32, offset: i64) -> Record<()> {
        Record {
            topic: topic.clone(),
            partition,
            offset,
            key: None,
            headers: Vec::new(),
            timestamp: None,
            read_watermark: None,
            value: (),
            payload: None,
        }
    }

    #[test]
    fn records_and_dead_letters_of_revoked_partitions_are_dropped_unsent() {
        let t: Arc<str> = Arc::from("t");
        let sent = Arc::new(AtomicBool::new(false));
        let letter = |sent: &Arc<AtomicBool>| -> Delivery {
            let sent = sent.clone();
            Box::pin(async move {
                sent.store(true, Ordering::SeqCst);
                Ok(())
            })
        };
        let mut records = vec![record(&t, 0, 5), record(&t, 1, 7)];
        let mut letters = vec![(t.clone(), 0, letter(&sent)), (t.clone(), 1, letter(&Arc::default()))];
        drop_stale(&[(t.clone(), 0)], &mut records, &mut letters);
        assert_eq!(records.iter().map(|r| r.partition).collect::<Vec<_>>(), [1]);
        assert_eq!(letters.iter().map(|l| l.1).collect::<Vec<_>>(), [1]);
        assert!(!sent.load(Ordering::SeqCst), "the dead letter of the revoked partition is never produced");
    }

    #[test]
    fn a_bounded_read_with_auto_commit_is_refused() {
        let builder = KafkaSource::builder("127.0.0.1:1", "g").topic("t").until_end(true).auto_commit(true);
        assert!(matches!(builder.build(crate::Utf8), Err(Error::Unsupported { .. })));
    }

    #[tokio::test]
    async fn a_source_split_into_parts_makes_one_member_per_part() {
        let builder = KafkaSource::builder("127.0.0.1:1", "g").topic("t").set("group.instance.id", "job");
        assert!(matches!(builder.clone().build_parts(0, crate::Utf8), Err(Error::NoParts)));
        let ids: Vec<String> = (0..3)
            .map(|part| {
                builder.member_config(Some(part)).expect("config").get("group.instance.id").unwrap_or("").to_owned()
            })
            .collect();
        assert_eq!(ids, ["job-0", "job-1", "job-2"], "static members get ids of their own");
        let parts = builder.build_parts(3, crate::Utf8).expect("parts");
        assert_eq!(parts.len(), 3);
        // The start policy holds for the process: the parts share what has
        // been assigned before, so a partition moving between them resumes
        // from the committed offset.
        let seen = |part: &KafkaSource<String, crate::Utf8>| Arc::clone(&part.consumer.context().seen);
        assert!(parts.iter().all(|part| Arc::ptr_eq(&seen(part), &seen(&parts[0]))));
    }

    #[test]
    fn a_failed_rebalance_forgets_the_offsets_of_the_dropped_assignment() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 2, 1).expect("topic");
        let offsets = Arc::new(Offsets::default());
        let context = SourceContext {
            offsets: offsets.clone(),
            start: StartFrom::Committed,
            seen: Seen::default(),
            group: "g".into(),
            joined: Mutex::default(),
            assigned: AtomicBool::new(false),
            connection: Connection::default(),
        };
        let consumer: BaseConsumer<SourceContext> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "g")
            .create_with_context(context)
            .expect("consumer");
        let mut assigned = TopicPartitionList::new();
        assigned.add_partition("t", 0);
        assigned.add_partition("t", 1);
        consumer.context().rebalance(&consumer, RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, &mut assigned);
        let t: Arc<str> = Arc::from("t");
        let (guard, stale) = offsets.batch(&[(t.clone(), 0, 9), (t.clone(), 1, 4)], offsets.generation());
        assert!(stale.is_empty());
        // The group failed to rebalance: librdkafka asks to drop everything.
        let mut failed = assigned.clone();
        consumer.context().rebalance(&consumer, RDKafkaRespErr::RD_KAFKA_RESP_ERR__FAIL, &mut failed);
        // A batch read before, done after, must not be committed for
        // partitions this member no longer owns.
        guard.settle(AckOutcome::Done);
        assert_eq!(offsets.take_committable(None).count(), 0);
        assert!(offsets.all_done());
    }
}
