//! Error policies: what a node does when processing an item fails.
//!
//! The default is to fail: the pipeline stops and [`Error::NodeFailed`]
//! names the node. The wrappers here change that per node:
//!
//! - [`NodeExt::skip_errors`](crate::NodeExt::skip_errors): count the error
//!   in the node's metrics, log it, drop the item, go on;
//! - [`NodeExt::retry`](crate::NodeExt::retry): try the item again with
//!   exponential backoff, up to a number of attempts;
//! - [`TopologyBuilder::node_with_dead_letters`](crate::TopologyBuilder::node_with_dead_letters):
//!   route the failing input and its error, as a [`DeadLetter`], to other
//!   nodes of the graph.
//!
//! A panic while processing an item is an error like any other: skipped or
//! dead-lettered by those policies, and a failure of the node otherwise.
//!
//! [`Error::NodeFailed`]: crate::Error::NodeFailed

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::edge::acks::Acks;
use crate::edge::emitter::Emitter;
use crate::error::BoxError;
use crate::node::{Context, Node, Now, Sink, Source};
use crate::runtime::step::panic_message;

/// Why processing an item failed: the node's error, or a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure<E> {
    /// The node returned this error.
    Error(E),
    /// The node panicked with this message.
    Panic(String),
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Error(error) => error.fmt(f),
            Failure::Panic(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// An input a node failed on, with the failure, routed by
/// [`TopologyBuilder::node_with_dead_letters`](crate::TopologyBuilder::node_with_dead_letters).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter<In, E> {
    /// The node that failed.
    pub node: String,
    /// The input it failed on.
    pub input: In,
    /// What went wrong.
    pub failure: Failure<E>,
}

fn describe<E: Into<BoxError>>(error: E) -> String {
    error.into().to_string()
}

/// A node or sink that skips items it fails on; see
/// [`NodeExt::skip_errors`](crate::NodeExt::skip_errors).
#[derive(Debug)]
pub struct SkipErrors<N> {
    inner: N,
    ctx: Option<Context>,
}

impl<N> SkipErrors<N> {
    pub(crate) fn new(inner: N) -> Self {
        Self { inner, ctx: None }
    }

    fn skipped(&self, failure: String) {
        if let Some(ctx) = &self.ctx {
            ctx.record_error();
            tracing::warn!(node = %ctx.name(), error = %failure, "skipping an item the node failed on");
        }
    }
}

impl<N: Node> Node for SkipErrors<N> {
    type In = N::In;
    type Out = N::Out;
    type Error = N::Error;

    async fn setup(&mut self, ctx: &Context) -> Result<(), N::Error> {
        self.ctx = Some(ctx.clone());
        self.inner.setup(ctx).await
    }

    async fn process(&mut self, item: N::In, out: &mut Emitter<N::Out>) -> Result<(), N::Error> {
        match AssertUnwindSafe(self.inner.process(item, out)).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.skipped(describe(error)),
            Err(panic) => self.skipped(format!("panicked: {}", panic_message(&*panic))),
        }
        Ok(())
    }

    #[inline]
    fn process_now(&mut self, item: N::In) -> Now<N::In, N::Out, N::Error> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.process_now(item))) {
            Ok(Now::Fail(error)) => {
                self.skipped(describe(error));
                Now::Nothing
            }
            Ok(now) => now,
            Err(panic) => {
                self.skipped(format!("panicked: {}", panic_message(&*panic)));
                Now::Nothing
            }
        }
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

impl<K: Sink> Sink for SkipErrors<K> {
    type In = K::In;
    type Error = K::Error;

    async fn setup(&mut self, ctx: &Context) -> Result<(), K::Error> {
        self.ctx = Some(ctx.clone());
        self.inner.setup(ctx).await
    }

    fn hold(&mut self, acks: Acks) -> Acks {
        self.inner.hold(acks)
    }

    async fn consume(&mut self, item: K::In) -> Result<(), K::Error> {
        match AssertUnwindSafe(self.inner.consume(item)).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.skipped(describe(error)),
            Err(panic) => self.skipped(format!("panicked: {}", panic_message(&*panic))),
        }
        Ok(())
    }

    #[inline]
    fn consume_now(&mut self, item: K::In) -> Now<K::In, (), K::Error> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.consume_now(item))) {
            Ok(Now::Fail(error)) => {
                self.skipped(describe(error));
                Now::Nothing
            }
            Ok(now) => now,
            Err(panic) => {
                self.skipped(format!("panicked: {}", panic_message(&*panic)));
                Now::Nothing
            }
        }
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), K::Error>> + Send {
        self.inner.flush()
    }

    fn deadline(&self) -> Option<Instant> {
        self.inner.deadline()
    }

    fn on_timer(&mut self) -> impl Future<Output = Result<(), K::Error>> + Send {
        self.inner.on_timer()
    }

    fn finish(&mut self) -> impl Future<Output = Result<(), K::Error>> + Send {
        self.inner.finish()
    }
}

/// How [`NodeExt::retry`](crate::NodeExt::retry) retries a failing item.
///
/// After a failed attempt it waits `backoff`, doubling the wait after every
/// further failure up to `max_backoff`; after `attempts` failed attempts in
/// all, the last error fails the node (or is handled by an outer policy
/// such as `skip_errors`).
///
/// # Examples
///
/// ```
/// use nanostream::Retry;
/// use std::time::Duration;
///
/// let retry = Retry::attempts(5).backoff(Duration::from_millis(20)).max_backoff(Duration::from_secs(1));
/// assert_eq!(retry.delay_after(1), Duration::from_millis(20));
/// assert_eq!(retry.delay_after(3), Duration::from_millis(80));
/// assert_eq!(retry.delay_after(10), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
}

impl Retry {
    /// At most `attempts` attempts per item (at least 1), waiting 100 ms
    /// after the first failure and at most 10 s between attempts.
    pub fn attempts(attempts: u32) -> Self {
        Self { attempts: attempts.max(1), backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(10) }
    }

    /// The wait after the first failed attempt.
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The longest wait between attempts.
    pub fn max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// The wait after the `failures`-th failed attempt (counting from 1).
    pub fn delay_after(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// A node or sink that retries failing items; see
/// [`NodeExt::retry`](crate::NodeExt::retry).
#[derive(Debug)]
pub struct WithRetry<N> {
    inner: N,
    policy: Retry,
    ctx: Option<Context>,
    /// The fast path already failed once on the item it hands to the slow
    /// path.
    failed_once: bool,
}

impl<N> WithRetry<N> {
    pub(crate) fn new(inner: N, policy: Retry) -> Self {
        Self { inner, policy, ctx: None, failed_once: false }
    }
}

/// Records a failed attempt and waits before the next one.
async fn retry_later(policy: Retry, ctx: Option<&Context>, failures: u32, error: &str) {
    let delay = policy.delay_after(failures);
    if let Some(ctx) = ctx {
        ctx.record_error();
        tracing::warn!(node = %ctx.name(), attempt = failures, error = %error, ?delay, "retrying an item the node failed on");
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

impl<N> Node for WithRetry<N>
where
    N: Node,
    N::In: Clone,
{
    type In = N::In;
    type Out = N::Out;
    type Error = N::Error;

    async fn setup(&mut self, ctx: &Context) -> Result<(), N::Error> {
        self.ctx = Some(ctx.clone());
        self.inner.setup(ctx).await
    }

    async fn process(&mut self, item: N::In, out: &mut Emitter<N::Out>) -> Result<(), N::Error> {
        let mut failures = 0;
        if std::mem::take(&mut self.failed_once) {
            failures = 1;
            retry_later(self.policy, self.ctx.as_ref(), failures, "failed on the fast path").await;
        }
        loop {
            match self.inner.process(item.clone(), out).await {
                Ok(()) => return Ok(()),
                Err(error) if failures + 1 >= self.policy.attempts => return Err(error),
                Err(error) => {
                    failures += 1;
                    retry_later(self.policy, self.ctx.as_ref(), failures, &describe(error)).await;
                }
            }
        }
    }

    #[inline]
    fn process_now(&mut self, item: N::In) -> Now<N::In, N::Out, N::Error> {
        let keep = item.clone();
        match self.inner.process_now(item) {
            Now::Fail(error) if self.policy.attempts > 1 => {
                drop(error);
                self.failed_once = true;
                Now::Later(keep)
            }
            Now::Later(_) => Now::Later(keep),
            now => now,
        }
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

impl<K> Sink for WithRetry<K>
where
    K: Sink,
    K::In: Clone,
{
    type In = K::In;
    type Error = K::Error;

    async fn setup(&mut self, ctx: &Context) -> Result<(), K::Error> {
        self.ctx = Some(ctx.clone());
        self.inner.setup(ctx).await
    }

    fn hold(&mut self, acks: Acks) -> Acks {
        self.inner.hold(acks)
    }

    async fn consume(&mut self, item: K::In) -> Result<(), K::Error> {
        let mut failures = 0;
        loop {
            match self.inner.consume(item.clone()).await {
                Ok(()) => return Ok(()),
                Err(error) if failures + 1 >= self.policy.attempts => return Err(error),
                Err(error) => {
                    failures += 1;
                    retry_later(self.policy, self.ctx.as_ref(), failures, &describe(error)).await;
                }
            }
        }
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), K::Error>> + Send {
        self.inner.flush()
    }

    fn deadline(&self) -> Option<Instant> {
        self.inner.deadline()
    }

    fn on_timer(&mut self) -> impl Future<Output = Result<(), K::Error>> + Send {
        self.inner.on_timer()
    }

    fn finish(&mut self) -> impl Future<Output = Result<(), K::Error>> + Send {
        self.inner.finish()
    }
}

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
