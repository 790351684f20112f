//! [`KafkaCheckpointStore`]: checkpoints in a Kafka topic, which every
//! member of a consumer group can reach.

use std::collections::HashMap;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use nanostream::checkpoint::{Checkpoint, CheckpointStore, StoreError};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::error::Error;
use crate::security::Security;

/// Keeps checkpoints in a Kafka topic, one record per checkpoint keyed by
/// its scope: every process of a consumer group can reach it, so the state
/// of a partition's pipeline can be loaded by whichever member is given
/// the partition. Make the topic compacted (`cleanup.policy=compact`) so
/// that it keeps about one record per scope; [`create_topic`](Self::create_topic)
/// does.
///
/// A save waits until the brokers acknowledged the record (`acks=all`,
/// idempotent producer). A load reads the topic's partitions up to their
/// end and keeps the last record of the scope, so it sees every save that
/// returned before it started.
///
/// # Examples
///
/// ```no_run
/// use nanostream::checkpoint::{Checkpoint, CheckpointStore};
/// use nanostream_kafka::KafkaCheckpointStore;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = KafkaCheckpointStore::new("127.0.0.1:9092", "orders-app.checkpoints")?;
/// store.create_topic(3).await?;
/// store.save("orders/0", &Checkpoint::new(1)).await?;
/// assert_eq!(store.load("orders/0").await?.map(|c| c.id), Some(1));
/// # Ok(()) }
/// ```
pub struct KafkaCheckpointStore {
    config: ClientConfig,
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaCheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaCheckpointStore")
            .field("config", &crate::secrets::Redacted(&self.config))
            .field("topic", &self.topic)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl KafkaCheckpointStore {
    /// A store in `topic` of the cluster at `brokers`, connecting in
    /// plaintext; see [`with_security`](Self::with_security).
    ///
    /// # Errors
    ///
    /// librdkafka rejected the configuration.
    pub fn new(brokers: &str, topic: impl Into<String>) -> Result<Self, Error> {
        Self::with_security(brokers, topic, &Security::plaintext())
    }

    /// A store in `topic`, connecting as `security` says.
    ///
    /// # Errors
    ///
    /// librdkafka rejected the configuration.
    pub fn with_security(brokers: &str, topic: impl Into<String>, security: &Security) -> Result<Self, Error> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        security.apply(&mut config);
        let mut producer = config.clone();
        producer
            .set("acks", "all")
            .set("enable.idempotence", "true")
            // One record per request: checkpoints are few and large, and
            // the end offsets a load reads up to stay exact.
            .set("linger.ms", "0")
            .set("batch.num.messages", "1")
            .set("message.timeout.ms", "30000");
        Ok(Self { producer: producer.create()?, config, topic: topic.into(), timeout: Duration::from_secs(30) })
    }

    /// Creates the topic, compacted, with `partitions` partitions, unless it
    /// exists.
    ///
    /// # Errors
    ///
    /// The brokers did not answer, or refused to create it.
    pub async fn create_topic(&self, partitions: i32) -> Result<(), Error> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::types::RDKafkaErrorCode;
        let admin: AdminClient<DefaultClientContext> = self.config.create()?;
        let topic =
            NewTopic::new(&self.topic, partitions.max(1), TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        for result in admin.create_topics([&topic], &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(rdkafka::error::KafkaError::AdminOp(code).into()),
            }
        }
        Ok(())
    }

    /// Reads every partition of the topic up to its end, keeping the last
    /// record of `scope`.
    fn read_latest(
        config: &ClientConfig,
        topic: &str,
        scope: &str,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>, Error> {
        let consumer: BaseConsumer = config
            .clone()
            .set("group.id", "nanostream-checkpoint-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut ends = HashMap::new();
        let mut assignment = TopicPartitionList::new();
        for partition in partitions {
            let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
            if high > low {
                ends.insert(partition, high);
                assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
            }
        }
        if ends.is_empty() {
            return Ok(None);
        }
        consumer.assign(&assignment)?;
        let deadline = std::time::Instant::now() + timeout;
        let mut latest = None;
        while !ends.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Unreachable {
                    waited: timeout,
                    last_error: Some(format!("reading checkpoints from `{topic}` did not reach its end")),
                    source: rdkafka::error::KafkaError::NoMessageReceived,
                });
            }
            let Some(message) = consumer.poll(left.min(Duration::from_millis(200))) else { continue };
            let message = message?;
            if message.key() == Some(scope.as_bytes()) {
                latest = message.payload().map(<[u8]>::to_vec);
            }
            if ends.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
                ends.remove(&message.partition());
            }
        }
        Ok(latest)
    }
}

fn store_error(error: impl Into<Error>) -> StoreError {
    StoreError::Io(Box::new(error.into()))
}

impl CheckpointStore for KafkaCheckpointStore {
    fn save<'a>(&'a self, scope: &'a str, checkpoint: &'a Checkpoint) -> BoxFuture<'a, Result<(), StoreError>> {
        let bytes = checkpoint.encode();
        async move {
            let record = FutureRecord::to(&self.topic).key(scope).payload(&bytes);
            self.producer.send(record, self.timeout).await.map(drop).map_err(|(error, _)| store_error(error))
        }
        .boxed()
    }

    fn load<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<Option<Checkpoint>, StoreError>> {
        let (config, topic, owned_scope, timeout) =
            (self.config.clone(), self.topic.clone(), scope.to_owned(), self.timeout);
        async move {
            let read =
                tokio::task::spawn_blocking(move || Self::read_latest(&config, &topic, &owned_scope, timeout)).await;
            let bytes = match read {
                Ok(result) => result.map_err(store_error)?,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(_) => return Err(StoreError::Io("the runtime is shutting down".into())),
            };
            bytes.map(|bytes| Checkpoint::decode(scope, &bytes)).transpose()
        }
        .boxed()
    }
}
