//! Running nodes outside a topology, on plain streams.

use std::collections::VecDeque;
use std::pin::Pin;

use futures::{Stream, StreamExt};

use crate::edge::emitter::Emitter;
use std::convert::Infallible;
use std::future::Future;

use crate::node::{Context, Node};
use crate::policy::{Policy, Retry, Retrying, SkipErrors, WithPolicy};

enum Phase {
    Setup,
    Running,
    Done,
}

struct Apply<N: Node, S> {
    node: N,
    input: Pin<Box<S>>,
    out: Emitter<N::Out>,
    ready: VecDeque<Result<N::Out, N::Error>>,
    phase: Phase,
}

/// What every node (sinks included) can do: take an error policy
/// ([`skip_errors`](NodeExt::skip_errors), [`retry`](NodeExt::retry), a
/// [`Policy`] of your own), or run outside any topology, on a plain stream
/// ([`apply`](NodeExt::apply), [`consume_all`](NodeExt::consume_all)):
/// handy for unit-testing a node, or for reusing one in existing async
/// code.
pub trait NodeExt: Node + Sized {
    /// Runs the node over `input`: the returned stream yields every output in
    /// order, then the outputs of the final hook.
    ///
    /// An error from the node is yielded in place and processing goes on
    /// with the next item, so the caller decides what an error means; an
    /// error from `setup` ends the stream after it is yielded.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    /// use futures::StreamExt;
    ///
    /// #[node]
    /// async fn parse(line: String) -> Result<u32, std::num::ParseIntError> {
    ///     line.trim().parse()
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let lines = ["1", "x", " 3"].map(String::from);
    /// let out: Vec<_> = parse().apply(futures::stream::iter(lines)).collect().await;
    /// assert_eq!(out[0], Ok(1));
    /// assert!(out[1].is_err());
    /// assert_eq!(out[2], Ok(3));
    /// # }
    /// ```
    fn apply<S>(self, input: S) -> impl Stream<Item = Result<Self::Out, Self::Error>>
    where
        S: Stream<Item = Self::In>,
    {
        let state = Apply {
            node: self,
            input: Box::pin(input),
            out: Emitter::detached(),
            ready: VecDeque::new(),
            phase: Phase::Setup,
        };
        futures::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(item) = st.ready.pop_front() {
                    return Some((item, st));
                }
                match st.phase {
                    Phase::Setup => {
                        st.phase = Phase::Running;
                        let ctx = Context::detached(std::any::type_name::<Self>());
                        if let Err(error) = st.node.setup(&ctx).await {
                            st.ready.push_back(Err(error));
                            st.phase = Phase::Done;
                        }
                    }
                    Phase::Running => {
                        let result = match st.input.next().await {
                            Some(item) => st.node.process(item, &mut st.out).await,
                            None => {
                                st.phase = Phase::Done;
                                match st.node.flush(&mut st.out).await {
                                    Ok(()) => st.node.finish(&mut st.out).await,
                                    Err(error) => Err(error),
                                }
                            }
                        };
                        let Apply { out, ready, .. } = &mut st;
                        ready.extend(out.drain_detached().into_iter().map(Ok));
                        if let Err(error) = result {
                            ready.push_back(Err(error));
                        }
                    }
                    Phase::Done => return None,
                }
            }
        })
    }

    /// Skips the items this node fails on (an error or a panic): each is
    /// counted in the node's error metric and logged with the node's name,
    /// and processing goes on.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    ///
    /// #[node]
    /// async fn parse(line: String) -> Result<u32, std::num::ParseIntError> {
    ///     line.parse()
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nanostream::Error> {
    /// let mut g = Topology::builder();
    /// let lines = g.source("lines", from_iter(["1", "x", "3"].map(String::from)));
    /// let nums = g.node("parse", parse().skip_errors(), lines);
    /// let (sum, total) = fold(0, |a, x: u32| a + x);
    /// g.sink("sum", sum, nums);
    /// let running = g.build()?.start();
    /// running.join().await?;
    /// assert_eq!(total.await, Some(4));
    /// # Ok(())
    /// # }
    /// ```
    fn skip_errors(self) -> WithPolicy<SkipErrors, Self> {
        self.with_policy(SkipErrors::new())
    }

    /// Retries an item the node fails on, with exponential backoff, as
    /// `policy` says; an item that still fails after the last attempt fails
    /// the node (combine with [`skip_errors`](NodeExt::skip_errors) to skip
    /// it instead). Every failed attempt counts in the node's error metric.
    ///
    /// Outputs a failed attempt emitted before failing are not taken back,
    /// so a retried node should emit only once it has succeeded.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::{prelude::*, policy::Retry};
    /// use std::time::Duration;
    ///
    /// #[node]
    /// async fn lookup(id: u32) -> Result<String, std::io::Error> {
    ///     // a call to a flaky service
    ///     Ok(format!("user-{id}"))
    /// }
    ///
    /// let node = lookup().retry(Retry::attempts(3).backoff(Duration::from_millis(50)));
    /// # let _ = node;
    /// ```
    fn retry(self, policy: Retry) -> WithPolicy<Retrying, Self>
    where
        Self::In: Clone,
    {
        self.with_policy(Retrying::new(policy))
    }

    /// Wraps the node in an error policy of your own; see [`Policy`].
    fn with_policy<P: Policy<Self>>(self, policy: P) -> WithPolicy<P, Self> {
        WithPolicy::new(policy, self)
    }

    /// Feeds every item of `input` to a sink (a node without output), then
    /// runs its final hook.
    ///
    /// # Errors
    ///
    /// The first error of the sink; the remaining items are not consumed.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (sum, total) = fold(0, |a, x: u32| a + x);
    /// sum.consume_all(futures::stream::iter([1, 2, 3])).await.unwrap();
    /// assert_eq!(total.await, Some(6));
    /// # }
    /// ```
    fn consume_all<S>(mut self, input: S) -> impl Future<Output = Result<(), Self::Error>>
    where
        Self: Node<Out = Infallible>,
        S: Stream<Item = Self::In>,
    {
        async move {
            let ctx = Context::detached(std::any::type_name::<Self>());
            let mut out = Emitter::detached();
            self.setup(&ctx).await?;
            let mut input = std::pin::pin!(input);
            while let Some(item) = input.next().await {
                self.process(item, &mut out).await?;
            }
            self.flush(&mut out).await?;
            self.finish(&mut out).await
        }
    }
}

impl<N: Node> NodeExt for N {}
