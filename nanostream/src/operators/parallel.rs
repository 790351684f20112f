//! The nodes behind `TopologyBuilder::parallel_ordered`: number the items,
//! process them in several workers, put the results back in order.
//!
//! Order of what a worker emits from a timer or its final hook: after the
//! output of the last input that worker had processed when the timer fired,
//! as soon as that output is out (at once if it already is, or if the
//! worker had processed none). Acknowledgements of inputs a worker keeps in its
//! state travel with what it eventually emits from them, as in any node.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::edge::acks::Acks;
use crate::edge::emitter::{Emitter, Held};
use crate::node::{Context, Node, Now};
use crate::time::Timestamp;

/// What a worker produced.
pub(crate) enum Seq<O> {
    /// The common case: one output for input `seq`, no allocation.
    One(u64, O),
    Zero(u64),
    Many(u64, Vec<O>),
    /// Outputs of a timer or the final hook, released once input `after`
    /// (the last one the worker processed) has gone out, or at once if
    /// `None`.
    Tail {
        after: Option<u64>,
        outputs: Vec<O>,
    },
}

/// How far the numbering may run ahead of the outputs put back in order:
/// while one worker is stuck on an item, the others stop taking new ones
/// once this many items are numbered after it, so what `Reorder` holds
/// stays bounded.
pub(crate) struct Window {
    size: u64,
    /// The number of the oldest item whose output has not gone out.
    released: AtomicU64,
    room: Notify,
}

impl Window {
    pub(crate) fn new(size: usize) -> Arc<Self> {
        Arc::new(Self { size: size.max(1) as u64, released: AtomicU64::new(0), room: Notify::new() })
    }

    fn admits(&self, seq: u64) -> bool {
        seq < self.released.load(Ordering::Acquire) + self.size
    }

    fn release_upto(&self, next: u64) {
        self.released.store(next, Ordering::Release);
        self.room.notify_one();
    }
}

/// Numbers items in arrival order, no further than the window allows.
pub(crate) struct Sequencer<T> {
    next: u64,
    window: Arc<Window>,
    _in: PhantomData<fn(T)>,
}

impl<T> Sequencer<T> {
    pub(crate) fn new(window: Arc<Window>) -> Self {
        Self { next: 0, window, _in: PhantomData }
    }
}

impl<T: Send + 'static> Node for Sequencer<T> {
    type In = T;
    type Out = (u64, T);
    type Error = Infallible;

    async fn process(&mut self, item: T, out: &mut Emitter<(u64, T)>) -> Result<(), Infallible> {
        // `notify_one` keeps a permit when nobody waits: no wake-up is lost
        // between the check and the wait.
        while !self.window.admits(self.next) {
            self.window.room.notified().await;
        }
        let seq = self.next;
        self.next += 1;
        out.emit((seq, item)).await;
        Ok(())
    }

    #[inline]
    fn process_now(&mut self, item: T) -> Now<T, (u64, T), Infallible> {
        if !self.window.admits(self.next) {
            return Now::Later(item);
        }
        let seq = self.next;
        self.next += 1;
        Now::Emit((seq, item))
    }
}

/// Runs a node on numbered items and numbers its outputs.
///
/// The inner node emits into a detached emitter that is given the input's
/// acknowledgements for each call, so what it holds in state (a batch, a
/// window) keeps them; what it emits is moved to the real output together
/// with what it owes.
pub(crate) struct Sequenced<N: Node> {
    inner: N,
    local: Emitter<N::Out>,
    /// The last input this worker processed.
    last: Option<u64>,
}

impl<N: Node> Sequenced<N> {
    pub(crate) fn new(inner: N) -> Self {
        Self { inner, local: Emitter::detached(), last: None }
    }

    /// Emits what a timer or the final hook of the inner node produced.
    async fn emit_tail(&mut self, out: &mut Emitter<Seq<N::Out>>) {
        let (outputs, mut owed) = self.local.take_detached();
        if outputs.is_empty() {
            // Adopted from state but nothing came of it: done, as a filtered
            // item is.
            owed.release();
            return;
        }
        out.owe(&mut owed);
        out.emit(Seq::Tail { after: self.last, outputs }).await;
    }
}

impl<N: Node> Node for Sequenced<N> {
    type In = (u64, N::In);
    type Out = Seq<N::Out>;
    type Error = N::Error;

    fn setup(&mut self, ctx: &Context) -> impl Future<Output = Result<(), N::Error>> + Send {
        self.inner.setup(ctx)
    }

    async fn process(&mut self, (seq, item): (u64, N::In), out: &mut Emitter<Seq<N::Out>>) -> Result<(), N::Error> {
        self.last = Some(seq);
        self.local.begin_input(out.current_acks());
        self.inner.process(item, &mut self.local).await?;
        let (mut outputs, mut owed) = self.local.take_detached();
        let numbered = match outputs.len() {
            0 => Seq::Zero(seq),
            1 => match outputs.pop() {
                Some(one) => Seq::One(seq, one),
                None => Seq::Zero(seq),
            },
            _ => Seq::Many(seq, outputs),
        };
        out.owe(&mut owed);
        out.emit(numbered).await;
        Ok(())
    }

    #[inline]
    fn process_now(&mut self, (seq, item): (u64, N::In)) -> Now<(u64, N::In), Seq<N::Out>, N::Error> {
        match self.inner.process_now(item) {
            Now::Emit(value) => {
                self.last = Some(seq);
                Now::Emit(Seq::One(seq, value))
            }
            Now::Nothing => {
                self.last = Some(seq);
                Now::Emit(Seq::Zero(seq))
            }
            Now::Fail(error) => Now::Fail(error),
            Now::Later(item) => Now::Later((seq, item)),
        }
    }

    fn hold(&mut self, acks: Acks) -> Acks {
        self.inner.hold(acks)
    }

    async fn flush(&mut self, out: &mut Emitter<Seq<N::Out>>) -> Result<(), N::Error> {
        self.inner.flush(&mut self.local).await?;
        self.emit_tail(out).await;
        Ok(())
    }

    fn deadline(&self) -> Option<Instant> {
        self.inner.deadline()
    }

    async fn on_timer(&mut self, out: &mut Emitter<Seq<N::Out>>) -> Result<(), N::Error> {
        self.inner.on_timer(&mut self.local).await?;
        self.emit_tail(out).await;
        Ok(())
    }

    async fn on_watermark(&mut self, watermark: Timestamp, out: &mut Emitter<Seq<N::Out>>) -> Result<(), N::Error> {
        self.inner.on_watermark(watermark, &mut self.local).await?;
        self.emit_tail(out).await;
        Ok(())
    }

    async fn finish(&mut self, out: &mut Emitter<Seq<N::Out>>) -> Result<(), N::Error> {
        self.inner.finish(&mut self.local).await?;
        self.emit_tail(out).await;
        Ok(())
    }
}

/// Emits numbered outputs in number order, each worker's timer outputs
/// right after the input they follow.
pub(crate) struct Reorder<O> {
    next: u64,
    /// Outputs that arrived before their turn, with the acknowledgements of
    /// the chunk they came in.
    early: BTreeMap<u64, (Seq<O>, Held)>,
    /// Timer outputs waiting for the input they follow.
    tails: BTreeMap<u64, Vec<(Vec<O>, Held)>>,
    window: Arc<Window>,
}

impl<O> Reorder<O> {
    pub(crate) fn new(window: Arc<Window>) -> Self {
        Self { next: 0, early: BTreeMap::new(), tails: BTreeMap::new(), window }
    }
}

async fn release<O: Send + 'static>(numbered: Seq<O>, out: &mut Emitter<O>) {
    match numbered {
        Seq::One(_, value) => out.emit(value).await,
        Seq::Many(_, values) | Seq::Tail { outputs: values, .. } => {
            for value in values {
                out.emit(value).await;
            }
        }
        Seq::Zero(_) => {}
    }
}

impl<O: Send + 'static> Reorder<O> {
    /// Emits the timer outputs that follow input `seq`.
    async fn release_tails(&mut self, seq: u64, out: &mut Emitter<O>) {
        for (outputs, mut held) in self.tails.remove(&seq).unwrap_or_default() {
            out.adopt(&mut held);
            for value in outputs {
                out.emit(value).await;
            }
        }
    }
}

impl<O: Send + 'static> Node for Reorder<O> {
    type In = Seq<O>;
    type Out = O;
    type Error = Infallible;

    async fn process(&mut self, numbered: Seq<O>, out: &mut Emitter<O>) -> Result<(), Infallible> {
        let seq = match &numbered {
            Seq::One(seq, _) | Seq::Zero(seq) | Seq::Many(seq, _) => *seq,
            Seq::Tail { after, .. } => {
                match *after {
                    Some(after) if after >= self.next => {
                        // The input it follows has not gone out yet.
                        let mut held = Held::default();
                        out.hold(&mut held);
                        if let Seq::Tail { outputs, .. } = numbered {
                            self.tails.entry(after).or_default().push((outputs, held));
                        }
                    }
                    _ => release(numbered, out).await,
                }
                return Ok(());
            }
        };
        if seq != self.next {
            let mut held = Held::default();
            out.hold(&mut held);
            self.early.insert(seq, (numbered, held));
            return Ok(());
        }
        release(numbered, out).await;
        self.release_tails(seq, out).await;
        self.next += 1;
        while let Some((numbered, mut held)) = self.early.remove(&self.next) {
            out.adopt(&mut held);
            release(numbered, out).await;
            self.release_tails(self.next, out).await;
            self.next += 1;
        }
        self.window.release_upto(self.next);
        Ok(())
    }

    async fn finish(&mut self, out: &mut Emitter<O>) -> Result<(), Infallible> {
        // Every input has come (only a failed worker leaves gaps, and then
        // this does not run): emit what is left, in order.
        let mut keys: Vec<u64> = self.early.keys().chain(self.tails.keys()).copied().collect();
        keys.sort_unstable();
        keys.dedup();
        for seq in keys {
            if let Some((numbered, mut held)) = self.early.remove(&seq) {
                out.adopt(&mut held);
                release(numbered, out).await;
            }
            self.release_tails(seq, out).await;
        }
        Ok(())
    }
}
