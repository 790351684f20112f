//! Stream processing for data that is not "Big", but big enough.
//!
//! nanostream lets you write each step of a data pipeline as a plain
//! `async fn`, wire the steps into a directed graph with sources and sinks,
//! and `.await` the whole pipeline inside your own Tokio runtime, next to
//! your other async services. No cluster, no configuration files.
//!
//! - A chain of nodes joined one-to-one runs *fused* in one Tokio task, each
//!   chunk handed from node to node by a function call; elsewhere (fan-out,
//!   fan-in, splits) nodes run in their own tasks joined by bounded
//!   channels, so a slow node slows its producers down instead of letting
//!   memory grow. See [`Output::unfused`].
//! - Items move in chunks while your code stays per item, so a graph costs
//!   little more than the code in its nodes.
//! - Any `Send + 'static` value can flow; edges are typed at compile time.
//! - A node that fails or panics stops the pipeline and is reported by name.
//!
//! # Quick start
//!
//! ```
//! use nanostream::prelude::*;
//!
//! #[node]
//! async fn triple(x: u64) -> u64 {
//!     x * 3 + 1
//! }
//!
//! #[node]
//! async fn keep_even(x: u64) -> Option<u64> {
//!     (x % 2 == 0).then_some(x)
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), nanostream::error::Report> {
//!     let mut g = Topology::builder();
//!     let nums = g.source("numbers", from_iter(0..1_000u64));
//!     let t = g.node("triple", triple(), nums);
//!     let e = g.node("keep_even", keep_even(), t);
//!     g.sink("print", for_each(|x: u64| async move { println!("{x}") }), e);
//!     // A failure prints its cause too: "node `triple` failed: ...".
//!     g.build()?.run().await?;
//!     Ok(())
//! }
//! ```
//!
//! # Writing nodes
//!
//! [`#[node]`](macro@node) turns an `async fn` into a constructor of a node;
//! the shape of the function decides the kind of node (map, filter,
//! fallible, one-to-many, source, sink, with configuration and state). For
//! full control implement [`Node`], [`Source`] or [`Sink`], whose lifecycle
//! hooks run before the first item and after the last. Closures work too:
//! [`map`](operators::map), [`filter`](operators::filter),
//! [`filter_map`](operators::filter_map), [`flat_map`](operators::flat_map),
//! [`then`](operators::then) and [`for_each`](sinks::for_each).
//!
//! Every node is also usable outside a topology, as an adapter over any
//! [`futures::Stream`] ([`NodeExt::apply`]), so it can be unit-tested alone.
//!
//! # Wiring
//!
//! [`TopologyBuilder`] adds named nodes. Reading an output by reference from
//! several nodes broadcasts every item to each (fan-out); a node may read
//! several outputs of the same type (fan-in). Edge capacity is
//! [`DEFAULT_CAPACITY`](topology::DEFAULT_CAPACITY) items unless set per builder or per edge.
//!
//! # Back-pressure bound
//!
//! An edge of capacity `c` queues at most `c` items, in chunks of at most
//! `e = min(chunk_size, c)` items. Besides its queue, the node feeding an edge
//! holds at most one chunk it is trying to send, and the node reading it
//! holds at most one chunk it is working through, so at most `c + 2e` items
//! are in flight per edge (plus what a node keeps in its own state).
//!
//! # Running
//!
//! [`Topology::run`] returns once every source has finished and every item
//! has been processed; [`Topology::start`] returns a [`TopologyHandle`] for
//! graceful shutdown with a deadline. Dropping the `run()` future or the
//! handle cancels the pipeline, so it composes with `tokio::select!`,
//! timeouts and aborted tasks; [`TopologyHandle::detach`] lets it run on its
//! own. A failure is never reported as success.
//!
//! Whatever a node has emitted reaches its edge before the node waits on
//! anything: the runtime sends a node's buffered outputs whenever the node's
//! future waits (on I/O, a timer, back-pressure).
//!
//! # Acknowledgements
//!
//! Sources that need to know when their input is done (a Kafka source, to
//! commit offsets) attach [`Acks`](acks::Acks) to what they emit. An acknowledgement
//! counts as done only when the code that owns it releases it; a copy
//! dropped any other way (a task aborted, the pipeline cancelled or failed,
//! the runtime dropped) makes it abandoned. See [`Acks`](acks::Acks) for the rule.
//!
//! # Where things are
//!
//! The crate root holds what every pipeline touches: [`Topology`] and its
//! [`TopologyBuilder`] and [`TopologyHandle`], [`Output`], the traits
//! [`Node`], [`Source`], [`Sink`] and [`NodeExt`], [`Emitter`],
//! [`Context`], [`Now`], [`Error`] and [`#[node]`](macro@node). The rest is
//! namespaced:
//!
//! | module | what |
//! |---|---|
//! | [`prelude`] | the dozen names most pipelines need, glob-importable beside `futures::prelude::*` |
//! | [`operators`] | `map`, `filter`, `batch`, windows, keyed state, `throttle`, ... |
//! | [`sources`] | `from_iter`, `from_stream`, `from_channel` |
//! | [`sinks`] | `for_each`, `fold`, `into_sink`, `into_stream` |
//! | [`policy`] | error policies: skip, retry, dead letters, your own |
//! | [`acks`] | acknowledgements, and holding them in a node's state |
//! | [`topology`] | the types behind the builder's and the handle's methods |
//! | [`error`] | the error types |
//! | [`testing`] | running a node or a subgraph in a test |
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::unwrap_used)]

mod adapt;
#[cfg(feature = "checkpoint")]
pub mod checkpoint;
mod edge;
pub mod error;
mod graph;
mod node;
pub mod operators;
pub mod policy;
mod runtime;
pub mod sinks;
pub mod sources;
pub mod testing;
pub mod time;

pub use adapt::NodeExt;
pub use edge::emitter::Emitter;
pub use error::Error;
pub use graph::builder::{Output, TopologyBuilder};
pub use node::{Context, Node, Now, Sink, Source};
pub use runtime::topology::{Topology, TopologyHandle};

/// Acknowledgements: how a source learns that what it emitted is done.
///
/// See [`Acks`](acks::Acks) for the rule, and [`Held`](acks::Held) for a
/// node that keeps inputs in its state.
pub mod acks {
    pub use crate::edge::acks::{AckGuard, AckOutcome, Acks};
    pub use crate::edge::emitter::Held;
}

/// The types behind [`TopologyBuilder`]'s and [`TopologyHandle`]'s methods:
/// what can feed a node, edge settings, placeholders, snapshots.
pub mod topology {
    pub use crate::edge::channel::{DEFAULT_CAPACITY, DEFAULT_CHUNK_SIZE};
    pub use crate::graph::builder::{DeadLetterOutput, Inputs, LateItems, Placeholder, Unfused, WithCapacity};
    pub use crate::runtime::report::{Monitor, NodeSnapshot};
}

/// Turns an `async fn` into a node constructor.
///
/// The function keeps its name and visibility but now returns a node value
/// (an `impl Node`, `impl Source` or `impl Sink`) that can be added to a
/// topology, or used as a stream adapter through [`NodeExt::apply`]. The
/// shape of the function decides what kind of node it is:
///
/// | function | kind |
/// |---|---|
/// | `async fn f(x: In) -> Out` | map: one output per input |
/// | `async fn f(x: In) -> Option<Out>` | filter/map: `None` emits nothing |
/// | `async fn f(x: In) -> Result<Out, E>` (or `Result<Option<Out>, E>`) | fallible map |
/// | `async fn f(x: In, out: &mut Emitter<Out>)` | zero or more outputs per input |
/// | `async fn f(out: &mut Emitter<Out>)` | source: emits until it returns |
/// | `async fn f(x: In)` (or `-> Result<(), E>`) | sink |
///
/// Parameters are told apart by their types:
///
/// - one parameter taken **by value** is the input item;
/// - **`&T`** parameters are configuration: they become arguments of the
///   constructor (by value, `String` for `&str`) and are lent to every call;
/// - **`&mut T`** parameters (other than the emitter) are state kept across
///   items, starting from `T::default()`;
/// - **`&mut Emitter<Out>`** is where a node emits 0..n outputs.
///
/// The return types are recognised by name (`Option`, `Result`): an alias
/// named `Result` with one parameter (`anyhow::Result<T>`,
/// `std::io::Result<T>`) is fallible, its error type found through the
/// alias; an alias by another name is taken as a plain output type. The function may not be
/// generic, take `self`, or hold non-`Send` values across an `.await` (every
/// node runs inside a Tokio task). Errors from a fallible node fail the pipeline,
/// reporting the node's name.
///
/// The optional argument `#[node(crate = path)]` names the nanostream crate
/// when it is re-exported under another path.
///
/// # Examples
///
/// Configuration and state:
///
/// ```
/// use nanostream::prelude::*;
/// use std::collections::HashMap;
///
/// /// Emits `(word, count so far)` for words at least `min_len` long.
/// #[node]
/// async fn running_count(
///     word: String,
///     min_len: &usize,
///     counts: &mut HashMap<String, u64>,
/// ) -> Option<(String, u64)> {
///     if word.len() < *min_len {
///         return None;
///     }
///     let n = counts.entry(word.clone()).or_default();
///     *n += 1;
///     Some((word, *n))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
/// let words = ["a", "stream", "of", "stream", "words"].map(String::from);
/// let out: Vec<_> = running_count(3)
///     .apply(futures::stream::iter(words))
///     .map(Result::unwrap)
///     .collect()
///     .await;
/// assert_eq!(out, [("stream".into(), 1), ("stream".into(), 2), ("words".into(), 1)]);
/// # }
/// ```
///
/// A source with a configuration parameter:
///
/// ```
/// use nanostream::prelude::*;
///
/// #[node]
/// async fn countdown(from: &u32, out: &mut Emitter<u32>) {
///     for n in (1..=*from).rev() {
///         out.emit(n).await;
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let n = g.source("countdown", countdown(3));
/// g.sink("print", for_each(|n: u32| async move { println!("{n}") }), n);
/// g.build()?.run().await
/// # }
/// ```
pub use nanostream_macros::node;

/// The names most pipelines need: `use nanostream::prelude::*;`.
///
/// It can be glob-imported next to `futures::prelude::*`: it leaves out
/// [`Sink`] (name the trait as `nanostream::Sink` to implement one); the
/// rest of the operators, sources and sinks are in [`operators`],
/// [`sources`] and [`sinks`].
pub mod prelude {
    pub use crate::operators::{filter, map};
    pub use crate::sinks::{fold, for_each, into_stream};
    pub use crate::sources::from_iter;
    pub use crate::{Emitter, Node, NodeExt, Output, Source, Topology, node};
}

#[doc(hidden)]
pub mod __private {
    pub use crate::{Emitter, Node, Now, Sink, Source};

    /// The parts of a `Result` type, found through any alias of it
    /// (`anyhow::Result<T>`): what `#[node]` names a fallible function's
    /// error type by.
    pub trait ResultParts {
        /// The error type.
        type Err;
    }

    impl<T, E> ResultParts for core::result::Result<T, E> {
        type Err = E;
    }
    pub use core::convert::Infallible;
    pub use core::default::Default;
    pub use core::future::Future;
    pub use core::marker::Send;
    pub use core::option::Option;
    pub use core::result::Result;
    pub use std::string::String;

    /// What `#[node]` expands to when the function it annotates is
    /// rejected: a node of the right shape that never runs (the crate does
    /// not compile), so that callers get no follow-on errors.
    pub struct Unbuilt<I, O>(core::marker::PhantomData<fn(I) -> O>);

    impl<I, O> Unbuilt<I, O> {
        /// The stub.
        pub fn new() -> Self {
            Self(core::marker::PhantomData)
        }
    }

    impl<I, O> Default for Unbuilt<I, O> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<I: Send + 'static, O: Send + 'static> crate::Node for Unbuilt<I, O> {
        type In = I;
        type Out = O;
        type Error = Infallible;

        async fn process(&mut self, _: I, _: &mut crate::Emitter<O>) -> Result<(), Infallible> {
            unreachable!("a rejected #[node] function does not compile")
        }
    }

    impl<I: Send + 'static, O: Send + 'static> crate::Source for Unbuilt<I, O> {
        type Out = O;
        type Error = Infallible;

        async fn run(&mut self, _: &mut crate::Emitter<O>) -> Result<(), Infallible> {
            unreachable!("a rejected #[node] function does not compile")
        }
    }
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
