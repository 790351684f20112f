//! Which consumed offsets are done, and which can be committed.
//!
//! Every batch of messages the source emits registers, per partition, the
//! last offset it holds. The batch's guard travels with everything derived
//! from its messages (as nanostream [`Acks`](nanostream::acks::Acks)); when the
//! last copy drops, the batch is done. Per partition, the committable offset
//! is one past the last offset of the longest run of done batches, in the
//! order they were read: a batch that finishes early waits for the ones
//! before it, so nothing is committed past a record still in flight.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use nanostream::{
    Context,
    acks::{AckGuard, AckOutcome},
};
use rdkafka::{Offset, TopicPartitionList};

type Key = (Arc<str>, i32);

#[derive(Debug)]
struct Log {
    /// Distinguishes this assignment of the partition from earlier ones, so
    /// guards from before a revocation cannot touch it.
    id: u64,
    /// The rebalance generation in which the partition was assigned.
    since: u64,
    /// Sequence number of `pending[0]`.
    base: u64,
    /// Last offset of each batch not yet done in order, and how it ended.
    pending: VecDeque<(i64, Settled)>,
    /// One past the last offset of the done prefix.
    completed: Option<i64>,
    /// What was last committed.
    committed: Option<i64>,
}

/// Where a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    InFlight,
    Done,
    /// Some of its records were dropped unfinished (a task aborted, the
    /// pipeline cancelled or failed): the partition is never committed past
    /// it while this process owns it.
    Abandoned,
}

impl Log {
    fn settle(&mut self, seq: u64, outcome: Settled) {
        let Some(index) = seq.checked_sub(self.base) else { return };
        if let Some(entry) = self.pending.get_mut(index as usize) {
            entry.1 = outcome;
        }
        while let Some(&(last, Settled::Done)) = self.pending.front() {
            self.completed = Some(last + 1);
            self.pending.pop_front();
            self.base += 1;
        }
    }

    /// Whether no batch is still in flight.
    fn settled(&self) -> bool {
        self.pending.iter().all(|(_, state)| *state != Settled::InFlight)
    }
}

#[derive(Debug, Default)]
struct State {
    logs: HashMap<Key, Log>,
    next_id: u64,
}

impl State {
    fn open(&mut self, key: Key, since: u64) {
        self.next_id += 1;
        let log = Log { id: self.next_id, since, base: 0, pending: VecDeque::new(), completed: None, committed: None };
        self.logs.insert(key, log);
    }
}

/// The offsets of one source.
#[derive(Debug, Default)]
pub(crate) struct Offsets {
    state: Mutex<State>,
    /// Counts assignments and revocations. A batch is read within one
    /// generation; if the generation moved on before the batch is
    /// registered, its records of partitions revoked (or revoked and
    /// assigned again) in between are stale.
    generation: AtomicU64,
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

    /// The current rebalance generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Starts tracking newly assigned partitions.
    pub(crate) fn assign(&self, assigned: &TopicPartitionList) {
        let mut state = self.lock();
        let since = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        for elem in assigned.elements() {
            let key = (Arc::from(elem.topic()), elem.partition());
            if !state.logs.contains_key(&key) {
                state.open(key, since);
            }
        }
    }

    /// Registers a batch read in `generation` holding, per partition,
    /// records up to the given last offset; the guard marks them done when
    /// dropped.
    ///
    /// Partitions revoked since `generation` (even if assigned again) are
    /// left out and returned: their records are stale, and another member
    /// (or this one, from the committed offset) reads them again.
    pub(crate) fn batch(
        self: &Arc<Self>,
        parts: &[(Arc<str>, i32, i64)],
        generation: u64,
    ) -> (BatchGuard, Vec<(Arc<str>, i32)>) {
        let mut state = self.lock();
        let mut entries = Vec::with_capacity(parts.len());
        let mut stale = Vec::new();
        for (topic, partition, last) in parts {
            let key = (topic.clone(), *partition);
            let Some(log) = state.logs.get_mut(&key).filter(|log| log.since <= generation) else {
                stale.push(key);
                continue;
            };
            let seq = log.base + log.pending.len() as u64;
            log.pending.push_back((*last, Settled::InFlight));
            entries.push((key, log.id, seq));
        }
        (BatchGuard { offsets: self.clone(), entries }, stale)
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
        self.generation.fetch_add(1, Ordering::AcqRel);
        for elem in revoked.elements() {
            state.logs.remove(&(Arc::from(elem.topic()), elem.partition()));
        }
    }

    /// Forgets every partition (the whole assignment was dropped).
    pub(crate) fn forget_all(&self) {
        let mut state = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        state.logs.clear();
    }

    /// The partitions assigned now.
    pub(crate) fn assigned(&self) -> Vec<Key> {
        self.lock().logs.keys().cloned().collect()
    }

    /// Whether every batch emitted so far is settled: done, or abandoned
    /// (then never committed past).
    pub(crate) fn all_done(&self) -> bool {
        self.lock().logs.values().all(Log::settled)
    }
}

/// Settles a batch when its acknowledgements are: done once every record
/// of it is, abandoned if any copy was dropped unfinished.
#[derive(Debug)]
pub(crate) struct BatchGuard {
    offsets: Arc<Offsets>,
    entries: Vec<(Key, u64, u64)>,
}

impl AckGuard for BatchGuard {
    fn settle(self, outcome: AckOutcome) {
        let outcome = match outcome {
            // Once the pipeline failed nothing more is taken as done.
            AckOutcome::Done if !self.offsets.failed() => Settled::Done,
            AckOutcome::Done => return,
            _ => Settled::Abandoned,
        };
        let mut state = self.offsets.lock();
        for ((topic, partition), id, seq) in &self.entries {
            if let Some(log) = state.logs.get_mut(&(topic.clone(), *partition))
                && log.id == *id
            {
                if outcome == Settled::Abandoned {
                    tracing::warn!(
                        %topic,
                        partition,
                        committed = ?log.completed,
                        "records were dropped unfinished; this partition is not committed past them"
                    );
                }
                log.settle(*seq, outcome);
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

    fn assigned(partitions: &[i32]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition("t", *p);
        }
        tpl
    }

    fn batch(offsets: &Arc<Offsets>, parts: &[(Arc<str>, i32, i64)]) -> BatchGuard {
        let (guard, stale) = offsets.batch(parts, offsets.generation());
        assert!(stale.is_empty());
        guard
    }

    #[test]
    fn commits_only_past_contiguously_done_batches() {
        let offsets = Arc::new(Offsets::default());
        offsets.assign(&assigned(&[0, 1]));
        let t: Arc<str> = Arc::from("t");
        let a = batch(&offsets, &[(t.clone(), 0, 9)]);
        let b = batch(&offsets, &[(t.clone(), 0, 19)]);
        let c = batch(&offsets, &[(t.clone(), 0, 29), (t.clone(), 1, 4)]);
        b.settle(AckOutcome::Done);
        assert!(committable(&offsets).is_empty(), "b is done but a is not");
        a.settle(AckOutcome::Done);
        assert_eq!(committable(&offsets), [("t".into(), 0, 20)]);
        assert!(committable(&offsets).is_empty(), "already committed");
        assert!(!offsets.all_done());
        c.settle(AckOutcome::Done);
        assert_eq!(committable(&offsets), [("t".into(), 0, 30), ("t".into(), 1, 5)]);
        assert!(offsets.all_done());
    }

    #[test]
    fn an_abandoned_batch_is_never_committed_past() {
        let offsets = Arc::new(Offsets::default());
        offsets.assign(&assigned(&[0, 1]));
        let t: Arc<str> = Arc::from("t");
        let a = batch(&offsets, &[(t.clone(), 0, 9)]);
        let b = batch(&offsets, &[(t.clone(), 0, 19), (t.clone(), 1, 4)]);
        let c = batch(&offsets, &[(t.clone(), 0, 29)]);
        a.settle(AckOutcome::Done);
        b.settle(AckOutcome::Abandoned);
        c.settle(AckOutcome::Done);
        assert_eq!(
            committable(&offsets),
            [("t".into(), 0, 10)],
            "stops before the abandoned batch, on both partitions"
        );
        assert!(offsets.all_done(), "an abandoned batch is settled: shutdown does not wait for it");
        let d = batch(&offsets, &[(t.clone(), 0, 39)]);
        d.settle(AckOutcome::Done);
        assert!(committable(&offsets).is_empty());
    }

    #[test]
    fn guards_from_a_revoked_assignment_do_not_touch_a_new_one() {
        let offsets = Arc::new(Offsets::default());
        offsets.assign(&assigned(&[0]));
        let t: Arc<str> = Arc::from("t");
        let old = batch(&offsets, &[(t.clone(), 0, 9)]);
        offsets.forget(&assigned(&[0]));
        offsets.assign(&assigned(&[0]));
        let new = batch(&offsets, &[(t.clone(), 0, 99)]);
        old.settle(AckOutcome::Done);
        assert!(committable(&offsets).is_empty());
        new.settle(AckOutcome::Done);
        assert_eq!(committable(&offsets), [("t".into(), 0, 100)]);
    }

    #[test]
    fn a_batch_read_across_a_revocation_leaves_out_the_revoked_partitions() {
        let offsets = Arc::new(Offsets::default());
        offsets.assign(&assigned(&[0, 1]));
        let t: Arc<str> = Arc::from("t");
        let read_in = offsets.generation();
        // While the batch was being read, partition 0 was revoked, and
        // (eager protocol) partitions 0 and 1 assigned again.
        offsets.forget(&assigned(&[0]));
        offsets.assign(&assigned(&[0]));
        let (guard, stale) = offsets.batch(&[(t.clone(), 0, 50), (t.clone(), 1, 7)], read_in);
        assert_eq!(stale, [(t.clone(), 0)]);
        guard.settle(AckOutcome::Done);
        assert_eq!(committable(&offsets), [("t".into(), 1, 8)], "nothing committed for the stale partition 0");
        // Partition 0's new assignment starts clean.
        let fresh = batch(&offsets, &[(t.clone(), 0, 3)]);
        fresh.settle(AckOutcome::Done);
        assert_eq!(committable(&offsets), [("t".into(), 0, 4)]);
    }

    #[test]
    fn a_batch_of_a_partition_no_longer_assigned_is_not_tracked() {
        let offsets = Arc::new(Offsets::default());
        offsets.assign(&assigned(&[0]));
        let t: Arc<str> = Arc::from("t");
        let read_in = offsets.generation();
        offsets.forget(&assigned(&[0]));
        let (guard, stale) = offsets.batch(&[(t.clone(), 0, 50)], read_in);
        assert_eq!(stale, [(t.clone(), 0)]);
        guard.settle(AckOutcome::Done);
        assert!(committable(&offsets).is_empty());
        assert!(offsets.all_done());
    }
}
