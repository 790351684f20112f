//! The nodes behind `TopologyBuilder::parallel_ordered`: number the items,
//! process them in several workers, put the results back in order.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;

use tokio::time::Instant;

use crate::emitter::{Emitter, Held};
use crate::node::{Context, Node, Now};

/// What a worker produced for one numbered input.
pub(crate) enum Seq<O> {
    /// The common case: one output, no allocation.
    One(u64, O),
    Zero(u64),
    Many(u64, Vec<O>),
    /// Outputs of a worker's timers and final hook, after every numbered
    /// output.
    Tail(Vec<O>),
}

/// Numbers items in arrival order.
pub(crate) struct Sequencer<T> {
    next: u64,
    _in: PhantomData<fn(T)>,
}

impl<T> Sequencer<T> {
    pub(crate) fn new() -> Self {
        Self { next: 0, _in: PhantomData }
    }
}

impl<T: Send + 'static> Node for Sequencer<T> {
    type In = T;
    type Out = (u64, T);
    type Error = Infallible;

    async fn process(&mut self, item: T, out: &mut Emitter<(u64, T)>) -> Result<(), Infallible> {
        if let Now::Emit(numbered) = self.process_now(item) {
            out.emit(numbered).await;
        }
        Ok(())
    }

    #[inline]
    fn process_now(&mut self, item: T) -> Now<T, (u64, T), Infallible> {
        let seq = self.next;
        self.next += 1;
        Now::Emit((seq, item))
    }
}

/// Runs a node on numbered items and numbers its outputs.
pub(crate) struct Sequenced<N: Node> {
    inner: N,
    local: Emitter<N::Out>,
}

impl<N: Node> Sequenced<N> {
    pub(crate) fn new(inner: N) -> Self {
        Self { inner, local: Emitter::detached() }
    }

    fn collected(&mut self) -> Vec<N::Out> {
        self.local.drain_detached().collect()
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
        self.inner.process(item, &mut self.local).await?;
        let mut outputs = self.collected();
        let numbered = match outputs.len() {
            0 => Seq::Zero(seq),
            1 => match outputs.pop() {
                Some(one) => Seq::One(seq, one),
                None => Seq::Zero(seq),
            },
            _ => Seq::Many(seq, outputs),
        };
        out.emit(numbered).await;
        Ok(())
    }

    #[inline]
    fn process_now(&mut self, (seq, item): (u64, N::In)) -> Now<(u64, N::In), Seq<N::Out>, N::Error> {
        match self.inner.process_now(item) {
            Now::Emit(value) => Now::Emit(Seq::One(seq, value)),
            Now::Nothing => Now::Emit(Seq::Zero(seq)),
            Now::Fail(error) => Now::Fail(error),
            Now::Later(item) => Now::Later((seq, item)),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.inner.deadline()
    }

    async fn on_timer(&mut self, out: &mut Emitter<Seq<N::Out>>) -> Result<(), N::Error> {
        self.inner.on_timer(&mut self.local).await?;
        let outputs = self.collected();
        if !outputs.is_empty() {
            out.emit(Seq::Tail(outputs)).await;
        }
        Ok(())
    }

    async fn finish(&mut self, out: &mut Emitter<Seq<N::Out>>) -> Result<(), N::Error> {
        self.inner.finish(&mut self.local).await?;
        let outputs = self.collected();
        if !outputs.is_empty() {
            out.emit(Seq::Tail(outputs)).await;
        }
        Ok(())
    }
}

/// Emits numbered outputs in number order.
pub(crate) struct Reorder<O> {
    next: u64,
    /// Outputs that arrived before their turn, with the acknowledgements of
    /// the chunk they came in.
    early: BTreeMap<u64, (Seq<O>, Held)>,
    tails: Vec<O>,
    tail_acks: Held,
}

impl<O> Reorder<O> {
    pub(crate) fn new() -> Self {
        Self { next: 0, early: BTreeMap::new(), tails: Vec::new(), tail_acks: Held::default() }
    }
}

async fn release<O: Send + 'static>(numbered: Seq<O>, out: &mut Emitter<O>) {
    match numbered {
        Seq::One(_, value) => out.emit(value).await,
        Seq::Many(_, values) => {
            for value in values {
                out.emit(value).await;
            }
        }
        Seq::Zero(_) | Seq::Tail(_) => {}
    }
}

impl<O: Send + 'static> Node for Reorder<O> {
    type In = Seq<O>;
    type Out = O;
    type Error = Infallible;

    async fn process(&mut self, numbered: Seq<O>, out: &mut Emitter<O>) -> Result<(), Infallible> {
        let seq = match &numbered {
            Seq::One(seq, _) | Seq::Zero(seq) | Seq::Many(seq, _) => *seq,
            Seq::Tail(_) => {
                out.hold(&mut self.tail_acks);
                if let Seq::Tail(values) = numbered {
                    self.tails.extend(values);
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
        self.next += 1;
        while let Some((numbered, mut held)) = self.early.remove(&self.next) {
            out.adopt(&mut held);
            release(numbered, out).await;
            self.next += 1;
        }
        Ok(())
    }

    async fn finish(&mut self, out: &mut Emitter<O>) -> Result<(), Infallible> {
        // Only a failed worker leaves gaps; emit what there is, in order.
        for (_, (numbered, mut held)) in std::mem::take(&mut self.early) {
            out.adopt(&mut held);
            release(numbered, out).await;
        }
        out.adopt(&mut self.tail_acks);
        for value in std::mem::take(&mut self.tails) {
            out.emit(value).await;
        }
        Ok(())
    }
}
