//! Checkpoints in a Kafka topic, against the test broker: the latest save
//! of each scope is what a load returns, also from another store (another
//! process of the group), and a scope never saved loads as nothing.

use nanostream::checkpoint::{Checkpoint, CheckpointStore, decode_state, encode_state};
use nanostream_kafka::KafkaCheckpointStore;

use crate::common::{brokers, unique};

fn checkpoint(id: u64, total: i64) -> Checkpoint {
    let mut checkpoint = Checkpoint::new(id);
    checkpoint.parts.insert("totals".into(), encode_state(&total, 1).expect("encodes"));
    checkpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_checkpoint_of_each_scope_is_loaded_by_any_member() {
    let topic = unique("checkpoints");
    let store = KafkaCheckpointStore::new(&brokers(), &topic).expect("store");
    store.create_topic(3).await.expect("creates the topic");
    store.create_topic(3).await.expect("an existing topic is fine");
    assert_eq!(store.load("orders/0").await.expect("loads"), None, "nothing saved yet");

    for id in 1..=5 {
        store.save("orders/0", &checkpoint(id, 100 * id as i64)).await.expect("saves");
    }
    store.save("orders/1", &checkpoint(1, -7)).await.expect("saves");
    store.save("payments/0", &checkpoint(3, 42)).await.expect("saves");

    // Another member of the group: a store of its own.
    let other = KafkaCheckpointStore::new(&brokers(), &topic).expect("store");
    let latest = other.load("orders/0").await.expect("loads").expect("a checkpoint");
    assert_eq!(latest.id, 5);
    assert_eq!(decode_state::<i64>("totals", &latest.parts["totals"], 1).expect("restores"), 500);
    assert_eq!(other.load("orders/1").await.expect("loads").map(|c| c.id), Some(1));
    assert_eq!(other.load("payments/0").await.expect("loads").map(|c| c.id), Some(3));
    assert_eq!(other.load("orders/2").await.expect("loads"), None);
}
