//! `node_with_dead_letters`: a failing input and its error go to other nodes.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use crate::edge::acks::Acks;
use crate::edge::emitter::Emitter;
use crate::node::{Context, Node, Now};
use crate::policy::failure::{DeadLetter, Failure};
use crate::policy::layer::{Policy, WithPolicy};
use crate::runtime::step::panic_message;
use crate::sources::{SideSender, SideSource, side_output};

/// The policy that sends the items a node fails on, with the failure, to a
/// second output as [`DeadLetter`]s.
pub(crate) struct DeadLetters<In, E> {
    clone: fn(&In) -> In,
    tx: SideSender<DeadLetter<In, E>>,
    name: String,
    /// A failure found on the fast path, sent by the slow path.
    pending: Option<DeadLetter<In, E>>,
    /// The node's context: a retry policy inside notes its attempts there.
    ctx: Option<Context>,
    /// A copy of what the chunk in progress owes, for its letters: the node
    /// may keep the chunk's own (a sink that holds them until its writes
    /// are done), and a letter must owe them too. Released once the chunk
    /// is processed (at the next chunk, or when the task waits); dropped,
    /// so abandoned, if the node fails.
    chunk: Acks,
}

impl<In, E> DeadLetters<In, E> {
    fn letter(&self, input: In, failure: Failure<E>) -> DeadLetter<In, E> {
        let attempts = self.ctx.as_ref().map_or(1, Context::take_attempts);
        DeadLetter { node: self.name.clone(), input, failure, attempts }
    }
}

/// Sends a dead letter. It owes the input chunk's acknowledgements: its
/// record is done once the letter itself is delivered.
async fn send_letter<In: Send + 'static, E: Send + 'static>(
    tx: &SideSender<DeadLetter<In, E>>,
    letter: DeadLetter<In, E>,
    acks: Acks,
) {
    let node = letter.node.clone();
    tx.send(letter, acks, &node).await;
}

impl<N: Node> Policy<N> for DeadLetters<N::In, N::Error> {
    fn setup(&mut self, ctx: &Context) {
        self.name = ctx.name().to_owned();
        self.ctx = Some(ctx.clone());
    }

    fn hold(&mut self, node: &mut N, acks: Acks) -> Acks {
        // The previous chunk is processed: its letters hold their own copies.
        std::mem::replace(&mut self.chunk, acks.clone()).release();
        node.hold(acks)
    }

    async fn flush(&mut self, node: &mut N, out: &mut Emitter<N::Out>) -> Result<(), N::Error> {
        // Every chunk held so far is processed.
        std::mem::take(&mut self.chunk).release();
        node.flush(out).await
    }

    async fn process(&mut self, node: &mut N, item: N::In, out: &mut Emitter<N::Out>) -> Result<(), N::Error> {
        if let Some(letter) = self.pending.take() {
            // `item` is the copy the fast path handed over; it already failed.
            drop(item);
            send_letter(&self.tx, letter, self.chunk.clone()).await;
            return Ok(());
        }
        let keep = (self.clone)(&item);
        if let Some(ctx) = &self.ctx {
            // A count noted for an earlier item (swallowed by a policy
            // between) is not this item's.
            ctx.take_attempts();
        }
        let failure = match AssertUnwindSafe(node.process(item, out)).catch_unwind().await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => Failure::Error(error),
            Err(panic) => Failure::Panic(panic_message(&*panic)),
        };
        let letter = self.letter(keep, failure);
        send_letter(&self.tx, letter, self.chunk.clone()).await;
        Ok(())
    }

    #[inline]
    fn process_now(&mut self, node: &mut N, item: N::In) -> Now<N::In, N::Out, N::Error> {
        let keep = (self.clone)(&item);
        let failure = match std::panic::catch_unwind(AssertUnwindSafe(|| node.process_now(item))) {
            Ok(Now::Fail(error)) => Failure::Error(error),
            Ok(Now::Later(_)) => return Now::Later(keep),
            Ok(now) => return now,
            Err(panic) => Failure::Panic(panic_message(&*panic)),
        };
        // Sending may wait, so the slow path does it.
        let copy = (self.clone)(&keep);
        self.pending = Some(self.letter(keep, failure));
        Now::Later(copy)
    }
}

/// A node whose failures go to its dead letters.
pub(crate) type DeadLettering<N> = WithPolicy<DeadLetters<<N as Node>::In, <N as Node>::Error>, N>;

/// The source of a node's dead letters.
pub(crate) type Letters<N> = SideSource<DeadLetter<<N as Node>::In, <N as Node>::Error>>;

/// Builds the pair behind `node_with_dead_letters`.
pub(crate) fn dead_lettering<N>(inner: N, capacity: usize) -> (DeadLettering<N>, Letters<N>)
where
    N: Node,
    N::In: Clone,
{
    let (tx, letters) = side_output(capacity);
    let policy = DeadLetters {
        clone: <N::In as Clone>::clone,
        tx,
        name: String::new(),
        pending: None,
        ctx: None,
        chunk: Acks::default(),
    };
    (WithPolicy::new(policy, inner), letters)
}
