//! `node_with_dead_letters`: a failing input and its error go to other nodes.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::edge::acks::Acks;
use crate::edge::emitter::Emitter;
use crate::node::{Context, Node, Now, Source};
use crate::runtime::step::panic_message;

use crate::policy::failure::{DeadLetter, Failure};

type Letter<N> = (DeadLetter<<N as Node>::In, <N as Node>::Error>, Acks);

/// A node whose failures become [`DeadLetter`]s on a second output.
pub(crate) struct DeadLettering<N: Node> {
    inner: N,
    clone: fn(&N::In) -> N::In,
    tx: mpsc::Sender<Letter<N>>,
    name: String,
    /// A failure found on the fast path, sent by the slow path.
    pending: Option<DeadLetter<N::In, N::Error>>,
}

impl<N: Node> DeadLettering<N> {
    fn letter(&self, input: N::In, failure: Failure<N::Error>) -> DeadLetter<N::In, N::Error> {
        DeadLetter { node: self.name.clone(), input, failure }
    }
}

/// Sends a dead letter. It owes the input chunk's acknowledgements: its
/// record is done once the letter itself is delivered.
async fn send_letter<In, E>(tx: &mpsc::Sender<(DeadLetter<In, E>, Acks)>, letter: DeadLetter<In, E>, acks: Acks) {
    if let Err(mpsc::error::SendError((letter, _))) = tx.send((letter, acks)).await {
        tracing::debug!(node = %letter.node, "dead letter output closed; the pipeline is stopping");
    }
}

impl<N: Node> Node for DeadLettering<N> {
    type In = N::In;
    type Out = N::Out;
    type Error = N::Error;

    async fn setup(&mut self, ctx: &Context) -> Result<(), N::Error> {
        self.name = ctx.name().to_owned();
        self.inner.setup(ctx).await
    }

    async fn process(&mut self, item: N::In, out: &mut Emitter<N::Out>) -> Result<(), N::Error> {
        if let Some(letter) = self.pending.take() {
            // `item` is the copy the fast path handed over; it already failed.
            drop(item);
            send_letter(&self.tx, letter, out.current_acks()).await;
            return Ok(());
        }
        let keep = (self.clone)(&item);
        let failure = match AssertUnwindSafe(self.inner.process(item, out)).catch_unwind().await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => Failure::Error(error),
            Err(panic) => Failure::Panic(panic_message(&*panic)),
        };
        let letter = self.letter(keep, failure);
        send_letter(&self.tx, letter, out.current_acks()).await;
        Ok(())
    }

    #[inline]
    fn process_now(&mut self, item: N::In) -> Now<N::In, N::Out, N::Error> {
        let keep = (self.clone)(&item);
        let failure = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.process_now(item))) {
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

    fn deadline(&self) -> Option<Instant> {
        self.inner.deadline()
    }

    fn on_timer(&mut self, out: &mut Emitter<N::Out>) -> impl Future<Output = Result<(), N::Error>> + Send {
        self.inner.on_timer(out)
    }

    fn finish(&mut self, out: &mut Emitter<N::Out>) -> impl Future<Output = Result<(), N::Error>> + Send {
        self.inner.finish(out)
    }
}

/// The source that emits a node's dead letters.
pub(crate) struct LetterSource<In, E> {
    rx: mpsc::Receiver<(DeadLetter<In, E>, Acks)>,
}

impl<In: Send + 'static, E: Send + 'static> Source for LetterSource<In, E> {
    type Out = DeadLetter<In, E>;
    type Error = std::convert::Infallible;

    async fn run(&mut self, out: &mut Emitter<DeadLetter<In, E>>) -> Result<(), Self::Error> {
        loop {
            let (letter, mut acks) = match self.rx.try_recv() {
                Ok(next) => next,
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
                Err(mpsc::error::TryRecvError::Empty) => {
                    out.flush().await;
                    match self.rx.recv().await {
                        Some(next) => next,
                        None => return Ok(()),
                    }
                }
            };
            out.owe(&mut acks);
            out.emit(letter).await;
        }
    }

    /// Ends when the failing node ends (its sender drops), not on shutdown:
    /// a dead letter already produced is never dropped.
    fn cooperative_shutdown(&self) -> bool {
        true
    }
}

/// Builds the pair behind `node_with_dead_letters`.
pub(crate) fn dead_lettering<N>(inner: N, capacity: usize) -> (DeadLettering<N>, LetterSource<N::In, N::Error>)
where
    N: Node,
    N::In: Clone,
{
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        DeadLettering { inner, clone: <N::In as Clone>::clone, tx, name: String::new(), pending: None },
        LetterSource { rx },
    )
}
