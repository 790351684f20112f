//! What flows out of a Kafka source and into a Kafka sink.

use std::sync::Arc;

use nanostream::time::{Stamp, Timestamp};

/// A message header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub key: String,
    /// The header's value, if any.
    pub value: Option<Vec<u8>>,
}

impl Header {
    /// A header with a value.
    pub fn new(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into(), value: Some(value.into()) }
    }
}

/// A consumed message: the decoded payload with where it came from.
///
/// Its `Debug` output puts where it was read, its key and its value first
/// (a key that is UTF-8 shown as text), so that an error naming a record
/// says which one even when cut short.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Record<T> {
    /// The topic it was read from.
    pub topic: Arc<str>,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its headers.
    pub headers: Vec<Header>,
    /// Its timestamp in milliseconds since the epoch, if the broker gave one.
    pub timestamp: Option<i64>,
    /// With [`event_time`](crate::KafkaSourceBuilder::event_time): the
    /// watermark its partition had reached just before it was read.
    pub read_watermark: Option<Timestamp>,
    /// The decoded payload.
    pub value: T,
    /// The payload's original bytes, kept with
    /// [`keep_payload`](crate::KafkaSourceBuilder::keep_payload) (for
    /// [`DeadLetterSink`](crate::DeadLetterSink), which writes them back).
    pub payload: Option<Arc<[u8]>>,
}

/// Bytes as `Debug` shows them: the text if they are UTF-8.
struct Bytes<'a>(&'a [u8]);

impl std::fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(text) => text.fmt(f),
            Err(_) => self.0.fmt(f),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Record<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("key", &self.key.as_deref().map(Bytes))
            .field("value", &self.value)
            .field("headers", &self.headers)
            .field("timestamp", &self.timestamp)
            .field("read_watermark", &self.read_watermark)
            .field("payload", &self.payload.as_ref().map(|p| format!("{} bytes", p.len())))
            .finish()
    }
}

impl<T> Record<T> {
    /// The first header named `key`, if any.
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers.iter().find(|h| h.key == key).and_then(|h| h.value.as_deref())
    }

    /// Its event time (the record's timestamp) and the watermark its
    /// partition had reached before it: what the event-time windows judge it
    /// by. `None` without a timestamp.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::operators::Windows;
    /// use nanostream_kafka::Record;
    /// use std::time::Duration;
    ///
    /// // Orders per customer per minute, by the time the records were made.
    /// let per_minute = Windows::tumbling(Duration::from_secs(60)).aggregate(
    ///     Record::stamp,
    ///     |r: &Record<(String, u64)>| r.value.0.clone(),
    ///     || 0u64,
    ///     |n, _| *n += 1,
    /// );
    /// # let _ = per_minute;
    /// ```
    pub fn stamp(&self) -> Option<Stamp> {
        let time = Timestamp::from_millis(self.timestamp?);
        Some(Stamp { time, watermark: self.read_watermark.unwrap_or(Timestamp::MIN) })
    }

    /// The same record around another value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Record<U> {
        Record {
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            key: self.key,
            headers: self.headers,
            timestamp: self.timestamp,
            read_watermark: self.read_watermark,
            value: f(self.value),
            payload: self.payload,
        }
    }
}

/// A message to produce: the value, and optionally its topic, key, headers
/// and partition. Without a topic, the sink's default topic is used.
///
/// # Examples
///
/// ```
/// use nanostream_kafka::Outgoing;
///
/// let message = Outgoing::new("hello").to_topic("greetings").with_key("user-1").with_header("source", "web");
/// assert_eq!(message.topic.as_deref(), Some("greetings"));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Outgoing<T> {
    /// The value, encoded by the sink's encoder.
    pub value: T,
    /// The topic; the sink's default topic when `None`.
    pub topic: Option<String>,
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The headers.
    pub headers: Vec<Header>,
    /// The partition; chosen by the partitioner (from the key) when `None`.
    pub partition: Option<i32>,
}

impl<T> Outgoing<T> {
    /// A message with only a value.
    pub fn new(value: T) -> Self {
        Self { value, topic: None, key: None, headers: Vec::new(), partition: None }
    }

    /// Sends it to `topic`.
    pub fn to_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Gives it a key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Sends it to `partition`.
    pub fn to_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

impl<T> From<T> for Outgoing<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}
