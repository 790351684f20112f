//! An error policy is a layer around a node's per-item step, written once
//! for every node and sink: [`WithPolicy`] forwards the rest of the node's
//! lifecycle, so a policy says only what it does with an item.

use std::future::Future;

use tokio::time::Instant;

use crate::edge::acks::Acks;
use crate::edge::emitter::Emitter;
use crate::node::{Context, Node, Now};
use crate::time::Timestamp;

/// What happens around a node's per-item step when it fails: skip the item,
/// retry it, send it to a dead-letter output.
///
/// A policy is written once and wraps any [`Node`] (every sink is one):
/// [`WithPolicy`] gives it the item and the node, and forwards the rest of
/// the node's lifecycle (setup, timers, `flush`, `finish`, acknowledgements)
/// unchanged (a policy may look at the per-chunk ones too). The built-in policies are [`SkipErrors`](super::SkipErrors)
/// and [`Retrying`](super::Retrying), applied with
/// [`NodeExt::skip_errors`](crate::NodeExt::skip_errors) and
/// [`NodeExt::retry`](crate::NodeExt::retry); [`NodeExt::with_policy`](crate::NodeExt::with_policy)
/// applies one of your own.
///
/// # Examples
///
/// A policy that gives up on an item after a deadline instead of waiting
/// for a slow node:
///
/// ```
/// use nanostream::policy::Policy;
/// use nanostream::prelude::*;
/// use nanostream::Now;
/// use std::time::Duration;
///
/// struct TimeLimit(Duration);
///
/// impl<N: Node> Policy<N> for TimeLimit {
///     async fn process(&mut self, node: &mut N, item: N::In, out: &mut Emitter<N::Out>) -> Result<(), N::Error> {
///         match tokio::time::timeout(self.0, node.process(item, out)).await {
///             Ok(result) => result,
///             Err(_) => {
///                 tracing::warn!("an item took too long; skipped");
///                 Ok(())
///             }
///         }
///     }
///
///     fn process_now(&mut self, node: &mut N, item: N::In) -> Now<N::In, N::Out, N::Error> {
///         // What finishes at once cannot take too long.
///         node.process_now(item)
///     }
/// }
///
/// #[node]
/// async fn slow(x: u32) -> u32 {
///     if x == 2 {
///         tokio::time::sleep(Duration::from_secs(60)).await;
///     }
///     x
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let xs = g.source("xs", from_iter(1..=3u32));
/// let ys = g.node("slow", slow().with_policy(TimeLimit(Duration::from_secs(1))), xs);
/// let (sum, total) = fold(0, |a, x: u32| a + x);
/// g.sink("sum", sum, ys);
/// g.build()?.run().await?;
/// assert_eq!(total.await, Some(4));
/// # Ok(())
/// # }
/// ```
pub trait Policy<N: Node>: Send + 'static {
    /// Called once with the node's context, before the node's own `setup`.
    fn setup(&mut self, ctx: &Context) {
        let _ = ctx;
    }

    /// The asynchronous path for one item: calls the node's
    /// [`process`](Node::process) as the policy says.
    fn process(
        &mut self,
        node: &mut N,
        item: N::In,
        out: &mut Emitter<N::Out>,
    ) -> impl Future<Output = Result<(), N::Error>> + Send;

    /// Sees the acknowledgements of the chunk of input about to be
    /// processed and hands them to the node's [`hold`](Node::hold) (the
    /// default), for a policy that must know what the chunk owes even when
    /// the node keeps it (dead letters owe it too).
    fn hold(&mut self, node: &mut N, acks: Acks) -> Acks {
        node.hold(acks)
    }

    /// Calls the node's [`flush`](Node::flush) (the default), when the
    /// task is about to wait: every chunk held so far has been processed.
    fn flush(&mut self, node: &mut N, out: &mut Emitter<N::Out>) -> impl Future<Output = Result<(), N::Error>> + Send {
        node.flush(out)
    }

    /// The synchronous fast path for one item: calls the node's
    /// [`process_now`](Node::process_now) as the policy says, with the same
    /// contract. The default hands every item to
    /// [`process`](Policy::process).
    #[inline]
    fn process_now(&mut self, node: &mut N, item: N::In) -> Now<N::In, N::Out, N::Error> {
        let _ = node;
        Now::Later(item)
    }
}

/// A node wrapped in a [`Policy`]; see [`NodeExt::with_policy`](crate::NodeExt::with_policy).
#[derive(Debug)]
pub struct WithPolicy<P, N> {
    policy: P,
    node: N,
}

impl<P, N> WithPolicy<P, N> {
    pub(crate) fn new(policy: P, node: N) -> Self {
        Self { policy, node }
    }

    pub(crate) fn inner_mut(&mut self) -> &mut N {
        &mut self.node
    }
}

impl<P: Policy<N>, N: Node> Node for WithPolicy<P, N> {
    type In = N::In;
    type Out = N::Out;
    type Error = N::Error;

    async fn setup(&mut self, ctx: &Context) -> Result<(), N::Error> {
        self.policy.setup(ctx);
        self.node.setup(ctx).await
    }

    fn process(&mut self, item: N::In, out: &mut Emitter<N::Out>) -> impl Future<Output = Result<(), N::Error>> + Send {
        self.policy.process(&mut self.node, item, out)
    }

    #[inline]
    fn process_now(&mut self, item: N::In) -> Now<N::In, N::Out, N::Error> {
        self.policy.process_now(&mut self.node, item)
    }

    fn hold(&mut self, acks: Acks) -> Acks {
        self.policy.hold(&mut self.node, acks)
    }

    fn flush(&mut self, out: &mut Emitter<N::Out>) -> impl Future<Output = Result<(), N::Error>> + Send {
        self.policy.flush(&mut self.node, out)
    }

    fn deadline(&self) -> Option<Instant> {
        self.node.deadline()
    }

    fn on_timer(&mut self, out: &mut Emitter<N::Out>) -> impl Future<Output = Result<(), N::Error>> + Send {
        self.node.on_timer(out)
    }

    fn on_watermark(
        &mut self,
        watermark: Timestamp,
        out: &mut Emitter<N::Out>,
    ) -> impl Future<Output = Result<(), N::Error>> + Send {
        self.node.on_watermark(watermark, out)
    }

    fn finish(&mut self, out: &mut Emitter<N::Out>) -> impl Future<Output = Result<(), N::Error>> + Send {
        self.node.finish(out)
    }
}
