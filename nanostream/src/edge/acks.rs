//! Acknowledgements: how a source learns that what it emitted is done.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// How the items behind an acknowledgement guard ended; see [`Acks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckOutcome {
    /// Every copy of the guard was released by the code that owned it:
    /// every item derived from the guarded input reached a terminal state
    /// (consumed by a sink, filtered, skipped by a policy, dead-lettered, or
    /// folded into state whose result was delivered).
    Done,
    /// At least one copy was dropped without being released: its task was
    /// aborted, its pipeline cancelled or failed, its runtime dropped. Some
    /// derived item may not have been processed, so the input must not be
    /// taken as done (a Kafka source does not commit past it).
    Abandoned,
}

/// What a source learns when the items it guarded are settled; see
/// [`Acks::new`].
///
/// Implemented for any `FnOnce(AckOutcome) + Send + 'static` closure.
pub trait AckGuard: Send + 'static {
    /// Called exactly once, when the last copy of the guard is released or
    /// dropped.
    fn settle(self, outcome: AckOutcome);
}

impl<F: FnOnce(AckOutcome) + Send + 'static> AckGuard for F {
    fn settle(self, outcome: AckOutcome) {
        self(outcome)
    }
}

/// The object-safe form of [`AckGuard`].
trait Settle: Send {
    fn settle_boxed(self: Box<Self>, outcome: AckOutcome);
}

impl<G: AckGuard> Settle for G {
    fn settle_boxed(self: Box<Self>, outcome: AckOutcome) {
        (*self).settle(outcome);
    }
}

/// One guard, shared by every copy of it.
struct AckState {
    /// Set by a copy dropped without being released.
    abandoned: AtomicBool,
    /// Taken when the last copy goes. A mutex only so that the state is
    /// `Sync`; it is never contended.
    guard: Mutex<Option<Box<dyn Settle>>>,
}

impl Drop for AckState {
    fn drop(&mut self) {
        // The last copy is gone. `Arc`'s drop orders every copy's store to
        // `abandoned` before this point.
        let guard = self.guard.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(guard) = guard {
            let outcome = if self.abandoned.load(Ordering::Relaxed) { AckOutcome::Abandoned } else { AckOutcome::Done };
            guard.settle_boxed(outcome);
        }
    }
}

/// One copy of a guard. Dropping it marks the guard abandoned; releasing it
/// does not.
struct Ack(Option<Arc<AckState>>);

impl Ack {
    fn release(mut self) {
        // Dropping the `Arc` itself, not `self`, leaves `abandoned` alone.
        drop(self.0.take());
    }
}

impl Clone for Ack {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            state.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

/// Acknowledgements owed by items in flight.
///
/// A source that wants to know when its input is done (a Kafka source, to
/// commit offsets) creates an `Acks` with a guard and emits its items with
/// it ([`Emitter::begin_batch`](crate::Emitter::begin_batch)). The runtime
/// attaches copies of the guards of every input to what a node derives from
/// it (for every chunk sent while the input is processed, for each reader
/// of a broadcast, for state a window or batch keeps), and settles the
/// guard once its last copy is gone.
///
/// # The rule
///
/// An acknowledgement counts as **done** only when the code that owns a copy
/// says so explicitly, with [`release`](Acks::release): the runtime does it
/// when a sink has consumed an item, when a node filtered it or a policy
/// skipped it, when a dead letter carrying it was delivered, when state it
/// was folded into was delivered. A copy that is dropped any other way — its
/// task aborted, its pipeline cancelled or failed, its runtime dropped, a
/// panic unwinding through it — makes the guard [`AckOutcome::Abandoned`],
/// whatever happens to the other copies. A source must never treat an
/// abandoned input as done (the Kafka source does not commit its partition
/// past it).
///
/// A sink that keeps acknowledgements beyond a call ([`Sink::hold`](crate::Sink::hold))
/// releases them when its output is really done (a delivery confirmed, a
/// transaction committed), and simply drops them otherwise.
///
/// Pipelines that do not use acknowledgements never see this type; its
/// empty value costs nothing.
///
/// # Examples
///
/// ```
/// use nanostream::acks::{AckOutcome, Acks};
/// use std::sync::{Arc, Mutex};
///
/// let outcomes = Arc::new(Mutex::new(Vec::new()));
/// let guard = |log: Arc<Mutex<Vec<AckOutcome>>>| move |outcome| log.lock().unwrap().push(outcome);
///
/// let acks = Acks::new(guard(outcomes.clone()));
/// let copy = acks.clone();
/// acks.release();
/// assert!(outcomes.lock().unwrap().is_empty(), "a copy is still in flight");
/// copy.release();
/// assert_eq!(*outcomes.lock().unwrap(), [AckOutcome::Done]);
///
/// // A copy dropped without being released abandons the guard.
/// let acks = Acks::new(guard(outcomes.clone()));
/// let copy = acks.clone();
/// drop(copy);
/// acks.release();
/// assert_eq!(outcomes.lock().unwrap()[1], AckOutcome::Abandoned);
/// ```
#[derive(Clone, Default)]
pub struct Acks(Vec<Ack>);

impl Acks {
    /// Acknowledgements settled through `guard` once the last copy is
    /// released (done) or dropped (abandoned).
    pub fn new<G: AckGuard>(guard: G) -> Self {
        let state = AckState { abandoned: AtomicBool::new(false), guard: Mutex::new(Some(Box::new(guard))) };
        Self(vec![Ack(Some(Arc::new(state)))])
    }

    /// Whether there is nothing to acknowledge.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `other`'s guards to these.
    pub fn merge(&mut self, mut other: Acks) {
        self.append(&mut other);
    }

    /// Says that every item these acknowledgements were owed for is done.
    ///
    /// Each guard is settled as [`AckOutcome::Done`] once its last copy is
    /// released, unless some copy was dropped without release.
    pub fn release(mut self) {
        self.release_all();
    }

    /// Releases every guard held, leaving this empty.
    pub(crate) fn release_all(&mut self) {
        for ack in self.0.drain(..) {
            ack.release();
        }
    }

    pub(crate) fn extend_from(&mut self, other: &Acks) {
        self.0.extend(other.0.iter().cloned());
    }

    pub(crate) fn append(&mut self, other: &mut Acks) {
        if self.0.is_empty() {
            std::mem::swap(&mut self.0, &mut other.0);
        } else {
            self.0.append(&mut other.0);
        }
    }
}

impl std::fmt::Debug for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Acks({})", self.0.len())
    }
}
