//! Which consumed offsets are done, and which can be committed.
//!
//! Every batch of messages the source emits registers, per partition, the
//! last offset it holds. The batch's guard travels with everything derived
//! from its messages (as nanostream [`Acks`](nanostream::Acks)); when the
//! last copy drops, the batch is done. Per partition, the committable offset
//! is one past the last offset of the longest run of done batches, in the
//! order they were read: a batch that finishes early waits for the ones
//! before it, so nothing is committed past a record still in flight.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use nanostream::Context;
use rdkafka::{Offset, TopicPartitionList};

type Key = (Arc<str>, i32);

#[derive(Debug)]
struct Log {
    /// Distinguishes this assignment of the partition from earlier ones, so
    /// guards from before a revocation cannot touch it.
    id: u64,
    /// Sequence number of `pending[0]`.
    base: u64,
    /// Last offset of each batch not yet done in order, and whether it is
    /// done.
    pending: VecDeque<(i64, bool)>,
    /// One past the last offset of the done prefix.
    completed: Option<i64>,
    /// What was last committed.
    committed: Option<i64>,
}

impl Log {
    fn done(&mut self, seq: u64) {
        let Some(index) = seq.checked_sub(self.base) else { return };
        if let Some(entry) = self.pending.get_mut(index as usize) {
            entry.1 = true;
        }
        while let Some(&(last, true)) = self.pending.front() {
            self.completed = Some(last + 1);
            self.pending.pop_front();
            self.base += 1;
        }
    }
}

#[derive(Debug, Default)]
struct State {
    logs: HashMap<Key, Log>,
    next_id: u64,
}

/// The offsets of one source.
#[derive(Debug, Default)]
pub(crate) struct Offsets {
    state: Mutex<State>,
    ctx: OnceLock<Context>,
}

impl Offsets {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_context(&self, ctx: &Context) {
        let _ = self.ctx.set(ctx.clone());
    }

    /// Once the pipeline fails, dropped guards do not mean done and nothing
    /// may be committed.
    pub(crate) fn failed(&self) -> bool {
        self.ctx.get().is_some_and(Context::has_failed)
    }

    /// Registers a batch holding, per partition, records up to the given last
    /// offset; the guard marks them done when dropped.
    pub(crate) fn batch(self: &Arc<Self>, parts: &[(Arc<str>, i32, i64)]) -> BatchGuard {
        let mut state = self.lock();
        let mut entries = Vec::with_capacity(parts.len());
        for (topic, partition, last) in parts {
            let key = (topic.clone(), *partition);
            if !state.logs.contains_key(&key) {
                state.next_id += 1;
                let id = state.next_id;
                state.logs.insert(
                    key.clone(),
                    Log { id, base: 0, pending: VecDeque::new(), completed: None, committed: None },
                );
            }
            let Some(log) = state.logs.get_mut(&key) else { continue };
            let seq = log.base + log.pending.len() as u64;
            log.pending.push_back((*last, false));
            entries.push((key, log.id, seq));
        }
        BatchGuard { offsets: self.clone(), entries }
    }

    /// Offsets that can be committed (optionally only for `only`), which
    /// are then taken as committed.
    pub(crate) fn take_committable(&self, only: Option<&TopicPartitionList>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        if self.failed() {
            return tpl;
        }
        let mut state = self.lock();
        for ((topic, partition), log) in state.logs.iter_mut() {
            if let Some(only) = only
                && only.find_partition(topic, *partition).is_none()
            {
                continue;
            }
            if let Some(completed) = log.completed
                && log.committed < Some(completed)
            {
                // Adding to a fresh list only fails for invalid offsets.
                if tpl.add_partition_offset(topic, *partition, Offset::Offset(completed)).is_ok() {
                    log.committed = Some(completed);
                }
            }
        }
        tpl
    }

    /// Takes back offsets whose commit failed, so the next commit retries
    /// them.
    pub(crate) fn uncommit(&self, failed: &TopicPartitionList) {
        let mut state = self.lock();
        for elem in failed.elements() {
            if let Some(log) = state.logs.get_mut(&(Arc::from(elem.topic()), elem.partition())) {
                log.committed = None;
            }
        }
    }

    /// Forgets revoked partitions; their guards become no-ops.
    pub(crate) fn forget(&self, revoked: &TopicPartitionList) {
        let mut state = self.lock();
        for elem in revoked.elements() {
            state.logs.remove(&(Arc::from(elem.topic()), elem.partition()));
        }
    }

    /// Whether every batch emitted so far is done.
    pub(crate) fn all_done(&self) -> bool {
        self.lock().logs.values().all(|log| log.pending.is_empty())
    }
}

/// Marks a batch done when the last copy drops.
#[derive(Debug)]
pub(crate) struct BatchGuard {
    offsets: Arc<Offsets>,
    entries: Vec<(Key, u64, u64)>,
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        if self.offsets.failed() {
            return;
        }
        let mut state = self.offsets.lock();
        for (key, id, seq) in &self.entries {
            if let Some(log) = state.logs.get_mut(key)
                && log.id == *id
            {
                log.done(*seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committable(offsets: &Offsets) -> Vec<(String, i32, i64)> {
        let mut out: Vec<_> = offsets
            .take_committable(None)
            .elements()
            .iter()
            .map(|e| {
                let Offset::Offset(o) = e.offset() else { panic!("offset") };
                (e.topic().to_owned(), e.partition(), o)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn commits_only_past_contiguously_done_batches() {
        let offsets = Arc::new(Offsets::default());
        let t: Arc<str> = Arc::from("t");
        let a = offsets.batch(&[(t.clone(), 0, 9)]);
        let b = offsets.batch(&[(t.clone(), 0, 19)]);
        let c = offsets.batch(&[(t.clone(), 0, 29), (t.clone(), 1, 4)]);
        drop(b);
        assert!(committable(&offsets).is_empty(), "b is done but a is not");
        drop(a);
        assert_eq!(committable(&offsets), [("t".into(), 0, 20)]);
        assert!(committable(&offsets).is_empty(), "already committed");
        assert!(!offsets.all_done());
        drop(c);
        assert_eq!(committable(&offsets), [("t".into(), 0, 30), ("t".into(), 1, 5)]);
        assert!(offsets.all_done());
    }

    #[test]
    fn guards_from_a_revoked_assignment_do_not_touch_a_new_one() {
        let offsets = Arc::new(Offsets::default());
        let t: Arc<str> = Arc::from("t");
        let old = offsets.batch(&[(t.clone(), 0, 9)]);
        let mut revoked = TopicPartitionList::new();
        revoked.add_partition("t", 0);
        offsets.forget(&revoked);
        let new = offsets.batch(&[(t.clone(), 0, 99)]);
        drop(old);
        assert!(committable(&offsets).is_empty());
        drop(new);
        assert_eq!(committable(&offsets), [("t".into(), 0, 100)]);
    }
}
