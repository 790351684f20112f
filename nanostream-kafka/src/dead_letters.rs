//! One dead-letter format: the sink that writes the records nodes failed on
//! as the source writes the messages that do not decode.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use nanostream::acks::Acks;
use nanostream::policy::DeadLetter;
use nanostream::{Context, Sink};
use tokio::time::Instant;

use crate::codec::Raw;
use crate::error::Error;
use crate::record::{Header, Outgoing, Record};
use crate::sink::{KafkaSink, KafkaSinkBuilder};

/// Writes the records a node failed on to a dead-letter topic, in the
/// format the source uses for messages that do not decode
/// ([`DecodeErrors::DeadLetter`](crate::DecodeErrors::DeadLetter)), so one
/// topic holds one format:
///
/// - the original key, payload bytes and headers of the message;
/// - an `error` header with the failure, a `node` header with the node
///   that failed, an `attempts` header (more than 1 when a retry policy
///   inside tried again), and `source_topic`, `source_partition` and
///   `source_offset` headers saying where the message was read.
///
/// The payload is written as it was read, so the source must keep it:
/// [`KafkaSourceBuilder::keep_payload`](crate::KafkaSourceBuilder::keep_payload).
/// A record without it fails the sink with [`Error::NoPayload`]. Like
/// [`KafkaSink`], a dead letter's record is done (its offset committed)
/// only once the letter is delivered.
///
/// # Examples
///
/// ```no_run
/// use nanostream::prelude::*;
/// use nanostream_kafka::{DeadLetterSink, Json, KafkaSink, KafkaSource, Outgoing, Record};
/// use serde_json::Value;
///
/// #[node]
/// async fn total(order: Record<Value>) -> Result<Outgoing<Value>, String> {
///     let amount = order.value["amount"].as_f64().ok_or("no amount")?;
///     Ok(Outgoing::new(Value::from(amount * 1.2)))
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let brokers = "127.0.0.1:9092";
/// let orders = KafkaSource::builder(brokers, "totals").topic("orders").keep_payload(true).build(Json)?;
/// let mut g = Topology::builder();
/// let records = g.source("orders", orders);
/// let (totals, failed) = g.node_with_dead_letters("total", total(), records);
/// g.sink("produce", KafkaSink::builder(brokers).default_topic("totals").build(Json)?, totals);
/// g.sink("dead_letters", DeadLetterSink::new(KafkaSink::builder(brokers), "orders-dlq")?, failed);
/// g.build()?.run().await?;
/// # Ok(()) }
/// ```
pub struct DeadLetterSink<T, E> {
    inner: KafkaSink<Vec<u8>, Raw>,
    topic: String,
    _letters: PhantomData<fn(T, E)>,
}

impl<T, E> fmt::Debug for DeadLetterSink<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterSink").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl<T, E> DeadLetterSink<T, E> {
    /// A sink producing to `topic` with the connection settings of
    /// `producer` (brokers, TLS, SASL, `linger.ms`...).
    ///
    /// # Errors
    ///
    /// librdkafka rejected the configuration.
    pub fn new(producer: KafkaSinkBuilder, topic: impl Into<String>) -> Result<Self, Error> {
        let topic = topic.into();
        Ok(Self { inner: producer.default_topic(topic.clone()).build(Raw)?, topic, _letters: PhantomData })
    }
}

impl<T, E: fmt::Display> DeadLetterSink<T, E> {
    fn letter(&self, letter: DeadLetter<Record<T>, E>) -> Result<Outgoing<Vec<u8>>, Error> {
        let record = letter.input;
        let Some(payload) = record.payload else {
            return Err(Error::NoPayload {
                topic: record.topic.to_string(),
                partition: record.partition,
                offset: record.offset,
            });
        };
        let mut headers = record.headers;
        headers.extend([
            Header::new("error", letter.failure.to_string()),
            Header::new("node", letter.node),
            Header::new("attempts", letter.attempts.to_string()),
            Header::new("source_topic", record.topic.to_string()),
            Header::new("source_partition", record.partition.to_string()),
            Header::new("source_offset", record.offset.to_string()),
        ]);
        let mut message = Outgoing::new(payload.to_vec()).to_topic(self.topic.clone());
        message.key = record.key;
        message.headers = headers;
        Ok(message)
    }
}

impl<T, E> Sink for DeadLetterSink<T, E>
where
    T: Send + 'static,
    E: fmt::Display + Send + 'static,
{
    type In = DeadLetter<Record<T>, E>;
    type Error = Error;

    fn setup(&mut self, ctx: &Context) -> impl Future<Output = Result<(), Error>> + Send {
        Sink::setup(&mut self.inner, ctx)
    }

    fn hold(&mut self, acks: Acks) -> Acks {
        Sink::hold(&mut self.inner, acks)
    }

    async fn consume(&mut self, letter: DeadLetter<Record<T>, E>) -> Result<(), Error> {
        let message = self.letter(letter)?;
        self.inner.consume(message).await
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        Sink::flush(&mut self.inner)
    }

    fn deadline(&self) -> Option<Instant> {
        Sink::deadline(&self.inner)
    }

    fn on_timer(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        Sink::on_timer(&mut self.inner)
    }

    fn finish(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        Sink::finish(&mut self.inner)
    }
}
