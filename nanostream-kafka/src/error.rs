use nanostream::error::BoxError;

/// What can go wrong in a Kafka source or sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// librdkafka reported an error (configuration, connection, ...). The
    /// value of a secret setting is never in it.
    #[error(transparent)]
    Kafka(rdkafka::error::KafkaError),
    /// A [`DeadLetterSink`](crate::DeadLetterSink) was given a record
    /// without its original bytes: the source needs
    /// [`keep_payload`](crate::KafkaSourceBuilder::keep_payload).
    #[error(
        "the record at `{topic}` partition {partition} offset {offset} has no original payload to write as a dead letter; \
         build the source with keep_payload(true)"
    )]
    NoPayload {
        /// Its topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
    },
    /// Settings that cannot go together.
    #[error("{what} is not supported")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
    },
    /// A source was built without any topic.
    #[error("a Kafka source needs at least one topic")]
    NoTopics,
    /// No broker answered within the start-up deadline
    /// ([`KafkaSourceBuilder::startup_timeout`](crate::KafkaSourceBuilder::startup_timeout)),
    /// with [`require_brokers`](crate::KafkaSourceBuilder::require_brokers)
    /// on or a bounded read asked for.
    #[error("no Kafka broker answered within {}s{}", waited.as_secs(), last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Unreachable {
        /// How long the source waited.
        waited: std::time::Duration,
        /// The client's last connection error, if it reported one.
        last_error: Option<String>,
        /// librdkafka's answer to the last request.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The brokers refused the connection at its security checks: a TLS
    /// handshake that failed (a certificate not trusted or not valid for
    /// the host, a client certificate missing or rejected) or a failed SASL
    /// login. Not retried: trying again cannot fix settings. See
    /// [`Security`](crate::Security).
    #[error("the connection to Kafka failed its security checks (not retried): {reason}")]
    Security {
        /// librdkafka's description of the failure.
        reason: String,
    },
    /// A topic the source subscribes to does not exist.
    #[error("topic `{topic}` does not exist")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// [`build_parts`](crate::KafkaSourceBuilder::build_parts) was asked for
    /// no part.
    #[error("a Kafka source split into parts needs at least one part")]
    NoParts,
    /// A message's payload did not decode (with [`DecodeErrors::Fail`](crate::DecodeErrors::Fail)).
    #[error("message at `{topic}` partition {partition} offset {offset} does not decode")]
    Decode {
        /// Its topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// Why it does not decode.
        #[source]
        source: BoxError,
    },
    /// A dead letter could not be delivered.
    #[error("a dead letter could not be delivered: {0}")]
    DeadLetter(String),
    /// A value could not be encoded.
    #[error("a value for topic `{topic}` could not be encoded")]
    Encode {
        /// The topic it was for.
        topic: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A message has no topic and the sink has no default topic.
    #[error("a message has no topic and the sink has no default topic")]
    NoTopic,
    /// The broker did not accept a message after librdkafka's retries.
    #[error("a message to `{topic}` was not delivered: {message}")]
    Delivery {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        message: String,
    },
    /// The node was run without its setup (a bug in a custom runtime).
    #[error("the Kafka node was run before its setup")]
    NotSetUp,
}

impl From<rdkafka::error::KafkaError> for Error {
    /// Keeps librdkafka's error, without the value of a secret setting:
    /// librdkafka puts the offending value in configuration errors.
    fn from(error: rdkafka::error::KafkaError) -> Self {
        use rdkafka::error::KafkaError;
        match error {
            KafkaError::ClientConfig(code, description, key, value) if crate::secrets::is_secret(&key) => {
                let description =
                    if value.is_empty() { description } else { description.replace(&value, "[redacted]") };
                Self::Kafka(KafkaError::ClientConfig(code, description, key, "[redacted]".to_owned()))
            }
            other => Self::Kafka(other),
        }
    }
}
