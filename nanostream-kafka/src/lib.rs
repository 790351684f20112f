//! Kafka sources and sinks for [nanostream](https://docs.rs/nanostream).
//!
//! Listen to several topics at once, transform and aggregate the messages in
//! a nanostream graph, and write the results back to Kafka or anywhere else,
//! without losing data when the process dies:
//!
//! - [`KafkaSource`] consumes many topics in one consumer group, decodes
//!   payloads with a [codec](Decoder) (JSON, bincode, UTF-8, raw bytes, or
//!   your own), and commits an offset only once everything derived from its
//!   message has been delivered, filtered out, dead-lettered or folded into
//!   a result that was delivered (at-least-once).
//! - [`KafkaSink`] produces without awaiting each delivery, turns a full
//!   local queue into back-pressure, and flushes on shutdown.
//! - To scale past one machine, run more copies of the same program with
//!   the same group id: Kafka splits the partitions between them.
//!
//! # Examples
//!
//! Copy JSON objects from two topics to a third, tagging each with its
//! source topic:
//!
//! ```no_run
//! use nanostream::prelude::*;
//! use nanostream_kafka::{Json, KafkaSink, KafkaSource, Outgoing, Record};
//! use serde_json::{Map, Value};
//!
//! #[node]
//! async fn tag(record: Record<Map<String, Value>>) -> Outgoing<Map<String, Value>> {
//!     let mut object = record.value;
//!     object.insert("source_topic".into(), Value::from(&*record.topic));
//!     let message = Outgoing::new(object);
//!     match record.key {
//!         Some(key) => message.with_key(key),
//!         None => message,
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let source = KafkaSource::builder("127.0.0.1:9092", "tagger").topics(["a", "b"]).build(Json)?;
//! let sink = KafkaSink::builder("127.0.0.1:9092").default_topic("tagged").build(Json)?;
//!
//! let mut g = Topology::builder();
//! let records = g.source("consume", source);
//! let tagged = g.node("tag", tag(), records);
//! g.sink("produce", sink, tagged);
//! g.build()?.run().await?;
//! # Ok(()) }
//! ```

mod blocking;
#[cfg(feature = "checkpoint")]
mod checkpoints;
mod clocks;
mod codec;
mod dead_letters;
mod error;
mod offsets;
mod record;
mod secrets;
mod security;
mod sink;
mod source;
mod startup;

#[cfg(feature = "checkpoint")]
pub use checkpoints::KafkaCheckpointStore;
pub use codec::{Bincode, Decoder, EncodeWith, Encoder, Json, Raw, Utf8, encode_with};
pub use dead_letters::DeadLetterSink;
pub use error::Error;
pub use record::{Header, Outgoing, Record};
pub use security::{Scram, Security};
pub use sink::{Deliveries, KafkaSink, KafkaSinkBuilder};
pub use source::{DecodeErrors, KafkaSource, KafkaSourceBuilder, StartFrom};
