//! Run a node or a small subgraph on a `Vec` of inputs and collect what it
//! emits, in a real topology (chunked edges, timers, final hooks), so that
//! what a test sees is what production does.
//!
//! Windows, batches and other timers run on Tokio's clock: in a
//! `#[tokio::test(start_paused = true)]` test, [`run_node_timed`] feeds items
//! at chosen instants and time jumps ahead instantly, deterministically.
//!
//! # Examples
//!
//! ```
//! use nanostream::prelude::*;
//! use nanostream::operators::tumbling;
//! use nanostream::testing;
//! use std::time::Duration;
//!
//! #[node]
//! async fn shout(s: String) -> String {
//!     s.to_uppercase()
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), nanostream::Error> {
//! let out = testing::run_node(shout(), vec!["a".into(), "b".into()]).await?;
//! assert_eq!(out, ["A", "B"]);
//!
//! // Two items 10 s apart fall in different one-minute windows only if a
//! // minute boundary lies between them; 90 s apart, always.
//! let per_minute = tumbling(Duration::from_secs(60), |_: &u8| (), || 0u32, |n, _| *n += 1);
//! let out = testing::run_node_timed(per_minute, vec![(Duration::ZERO, 1), (Duration::from_secs(90), 2)]).await?;
//! assert_eq!(out.iter().map(|(_, w)| w.value).sum::<u32>(), 2);
//! assert_eq!(out.len(), 2);
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use tokio::time::Instant;

use crate::edge::emitter::Emitter;
use crate::error::Error;
use crate::graph::builder::{Output, TopologyBuilder};
use crate::node::{Node, Source};
use crate::sinks::fold;
use crate::sources::from_iter;

/// Runs `node` on `inputs` in a topology and returns everything it emitted,
/// including what its final hook emits.
///
/// # Errors
///
/// The node's failure, as [`Topology::run`](crate::Topology::run) reports it.
pub async fn run_node<N: Node>(node: N, inputs: Vec<N::In>) -> Result<Vec<N::Out>, Error> {
    run_subgraph(inputs, |g, input| g.node("node", node, input)).await
}

/// Runs the subgraph that `build` wires onto an input carrying `inputs`, and
/// returns everything that reaches the output `build` returns.
///
/// # Errors
///
/// A wiring mistake in the subgraph, or a node failure.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::testing;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let out = testing::run_subgraph(vec![1u32, 2, 3], |g, input| {
///     let doubled = g.node("double", map(|x: u32| x * 2), input);
///     g.node("odd_only", filter(|x: &u32| *x != 4), doubled)
/// })
/// .await?;
/// assert_eq!(out, [2, 6]);
/// # Ok(())
/// # }
/// ```
pub async fn run_subgraph<In, Out, F>(inputs: Vec<In>, build: F) -> Result<Vec<Out>, Error>
where
    In: Send + 'static,
    Out: Send + 'static,
    F: FnOnce(&mut TopologyBuilder, Output<In>) -> Output<Out>,
{
    let mut g = TopologyBuilder::new();
    let input = g.source("input", from_iter(inputs));
    let output = build(&mut g, input);
    let (collect, collected) = fold(Vec::new(), |mut all: Vec<Out>, x| {
        all.push(x);
        all
    });
    g.sink("output", collect, output);
    g.build()?.run().await?;
    Ok(collected.await.unwrap_or_default())
}

/// Runs `source` to its end and returns what it emitted.
///
/// # Errors
///
/// The source's failure.
pub async fn run_source<S: Source>(source: S) -> Result<Vec<S::Out>, Error> {
    let mut g = TopologyBuilder::new();
    let output = g.source("source", source);
    let (collect, collected) = fold(Vec::new(), |mut all: Vec<S::Out>, x| {
        all.push(x);
        all
    });
    g.sink("output", collect, output);
    g.build()?.run().await?;
    Ok(collected.await.unwrap_or_default())
}

/// Feeds each input at its offset from the start (in the order given,
/// waiting on Tokio's clock), and returns every output with the offset at
/// which it came out.
///
/// With paused time (`#[tokio::test(start_paused = true)]`) the waits take
/// no real time and the offsets are exact, so window and timer behaviour
/// can be asserted precisely. Offsets that go backwards are fed at once.
///
/// # Errors
///
/// The node's failure.
pub async fn run_node_timed<N: Node>(
    node: N,
    inputs: Vec<(Duration, N::In)>,
) -> Result<Vec<(Duration, N::Out)>, Error> {
    let started = Instant::now();
    let mut g = TopologyBuilder::new();
    let input = g.source("input", Timed { started, inputs: inputs.into_iter() });
    let output = g.node("node", node, input);
    let (collect, collected) = fold(Vec::new(), move |mut all: Vec<(Duration, N::Out)>, x| {
        all.push((started.elapsed(), x));
        all
    });
    g.sink("output", collect, output);
    g.build()?.run().await?;
    Ok(collected.await.unwrap_or_default())
}

/// Emits items at given offsets from `started`.
struct Timed<T> {
    started: Instant,
    inputs: std::vec::IntoIter<(Duration, T)>,
}

impl<T: Send + 'static> Source for Timed<T> {
    type Out = T;
    type Error = std::convert::Infallible;

    async fn run(&mut self, out: &mut Emitter<T>) -> Result<(), Self::Error> {
        for (offset, item) in self.inputs.by_ref() {
            tokio::time::sleep_until(self.started + offset).await;
            out.emit(item).await;
            // Each item is delivered at its own instant (the runtime sends
            // what is buffered before the next sleep).
        }
        Ok(())
    }
}
