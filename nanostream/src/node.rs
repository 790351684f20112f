use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::edge::acks::Acks;
use crate::edge::emitter::Emitter;
use crate::error::BoxError;
use crate::runtime::stats::NodeStats;
use crate::runtime::status::{Status, Stop};
use crate::time::Timestamp;

/// A processing step: reads items of type `In`, emits items of type `Out`.
///
/// This is the trait behind [`#[node]`](macro@crate::node); implement it by
/// hand for nodes with lifecycle needs. The runtime calls
/// [`setup`](Node::setup) once before the first item, [`process`](Node::process)
/// for every item in arrival order, and [`finish`](Node::finish) once when
/// every upstream node has finished, so a node can emit what it still holds.
///
/// The futures must be `Send`, because nodes run inside Tokio tasks, which
/// a multi-thread runtime moves between threads. A node runs in a task of its
/// own, or fused into the task of the node before it (see
/// [`Output::unfused`](crate::Output::unfused)); either way its hooks are
/// called in the same order, under its own name. Write the methods as
/// `async fn` in the `impl`.
///
/// # Examples
///
/// A batcher that groups items in threes and flushes its remainder at the
/// end of input:
///
/// ```
/// use nanostream::prelude::*;
/// use std::convert::Infallible;
///
/// struct Triples(Vec<u32>);
///
/// impl Node for Triples {
///     type In = u32;
///     type Out = Vec<u32>;
///     type Error = Infallible;
///
///     async fn process(&mut self, item: u32, out: &mut Emitter<Vec<u32>>) -> Result<(), Infallible> {
///         self.0.push(item);
///         if self.0.len() == 3 {
///             out.emit(std::mem::take(&mut self.0)).await;
///         }
///         Ok(())
///     }
///
///     async fn finish(&mut self, out: &mut Emitter<Vec<u32>>) -> Result<(), Infallible> {
///         if !self.0.is_empty() {
///             out.emit(std::mem::take(&mut self.0)).await;
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let nums = g.source("nums", from_iter(1..=7u32));
/// let triples = g.node("triples", Triples(Vec::new()), nums);
/// let (sink, mut results) = into_stream(16);
/// g.sink("out", sink, triples);
/// g.build()?.run().await?;
///
/// use futures::StreamExt;
/// assert_eq!(results.next().await, Some(vec![1, 2, 3]));
/// assert_eq!(results.next().await, Some(vec![4, 5, 6]));
/// assert_eq!(results.next().await, Some(vec![7]));
/// # Ok(())
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a nanostream node",
    note = "write the step as an `async fn` with `#[nanostream::node]`, use `map`/`filter`/`then`, or implement `Node`"
)]
pub trait Node: Send + 'static {
    /// The items this node reads.
    type In: Send + 'static;
    /// The items this node emits.
    type Out: Send + 'static;
    /// The error this node may fail with.
    type Error: Into<BoxError> + Send + 'static;

    /// Called once, before the first item.
    fn setup(&mut self, ctx: &Context) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Called for every input item, in the order the node receives them.
    fn process(
        &mut self,
        item: Self::In,
        out: &mut Emitter<Self::Out>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Processes an item without awaiting, when the node can: the
    /// synchronous fast path.
    ///
    /// The runtime calls it first for every item, in a tight loop over the
    /// chunk, and falls back to [`process`](Node::process) when it returns
    /// [`Now::Later`] with the item. The default always does, so a node that
    /// implements only `process` is correct; one whose work is often
    /// synchronous implements this too, to skip building a future per item.
    /// It must behave exactly like `process` on the items it handles: at
    /// most one output per item ([`Now::Emit`]); a node that emits several
    /// hands the item to `process`. `#[node]` functions that never `.await`
    /// and the closure nodes (`map`, `filter`, ...) implement it. Wrappers
    /// (error policies) forward it to the node they wrap.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    /// use nanostream::Now;
    /// use std::convert::Infallible;
    ///
    /// /// Parses numbers; skips the lines that are not.
    /// struct Numbers;
    ///
    /// impl Node for Numbers {
    ///     type In = String;
    ///     type Out = u64;
    ///     type Error = Infallible;
    ///
    ///     async fn process(&mut self, line: String, out: &mut Emitter<u64>) -> Result<(), Infallible> {
    ///         if let Ok(n) = line.trim().parse() {
    ///             out.emit(n).await;
    ///         }
    ///         Ok(())
    ///     }
    ///
    ///     fn process_now(&mut self, line: String) -> Now<String, u64, Infallible> {
    ///         match line.trim().parse() {
    ///             Ok(n) => Now::Emit(n),
    ///             Err(_) => Now::Nothing,
    ///         }
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nanostream::Error> {
    /// let mut g = Topology::builder();
    /// let lines = g.source("lines", from_iter(["1", "x", " 2"].map(String::from)));
    /// let numbers = g.node("numbers", Numbers, lines);
    /// let (sum, total) = fold(0, |a, n: u64| a + n);
    /// g.sink("sum", sum, numbers);
    /// g.build()?.run().await?;
    /// assert_eq!(total.await, Some(3));
    /// # Ok(())
    /// # }
    /// ```
    #[inline]
    fn process_now(&mut self, item: Self::In) -> Now<Self::In, Self::Out, Self::Error> {
        Now::Later(item)
    }

    /// Receives the acknowledgements owed by the chunk of input about to be
    /// processed, and returns those its outputs owe (by default, all of
    /// them): the runtime releases what it is given back once every output
    /// of the chunk is done, or at once if there is none.
    ///
    /// A node keeps acknowledgements per input with [`Emitter::hold`]
    /// (what `batch` and windows do). This hook is for a node whose work is
    /// done only later and outside the graph: a sink that writes to Kafka
    /// and waits for delivery reports, or to a database that commits every
    /// few seconds. It keeps them, returns an empty [`Acks`], and calls
    /// [`Acks::release`] once its output is really done; if that never
    /// happens (the write failed, the pipeline was cancelled), it just drops
    /// them. See [`Acks`], and [`Sink::hold`] for a sink.
    fn hold(&mut self, acks: Acks) -> Acks {
        acks
    }

    /// Called when no more input is ready, before the node waits for more:
    /// the moment to write out anything the node buffers outside the graph
    /// (a sink's client library). Outputs emitted through `out` need no
    /// such call: the runtime sends them whenever the node waits.
    fn flush(&mut self, out: &mut Emitter<Self::Out>) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = out;
        async { Ok(()) }
    }

    /// When the node next wants [`on_timer`](Node::on_timer) to run, if
    /// ever.
    ///
    /// The runtime asks after every input chunk and before it waits for
    /// input, so a timer fires on time even when no input arrives (a window
    /// closing, a partial batch going out). Uses Tokio's clock, so paused
    /// time in tests drives it.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Runs once [`deadline`](Node::deadline) has passed; may emit.
    fn on_timer(&mut self, out: &mut Emitter<Self::Out>) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = out;
        async { Ok(()) }
    }

    /// Runs when the watermark of the node's input moves forward: no item
    /// with an event time before `watermark` is expected any more (see
    /// [`time`](crate::time)). May emit; what it emits goes before the
    /// watermark, which the runtime passes on once this returns.
    ///
    /// Event-time windows and joins close what the watermark has passed
    /// here. At the end of a finite input it runs with
    /// [`Timestamp::MAX`](crate::time::Timestamp::MAX) before
    /// [`finish`](Node::finish); after a graceful shutdown it does not, so
    /// what waits on event time is not emitted as if it were complete.
    fn on_watermark(
        &mut self,
        watermark: Timestamp,
        out: &mut Emitter<Self::Out>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = (watermark, out);
        async { Ok(()) }
    }

    /// Called once after the last item, when every upstream node has
    /// finished; may still emit. Not called when the pipeline is failing.
    fn finish(&mut self, out: &mut Emitter<Self::Out>) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = out;
        async { Ok(()) }
    }
}

/// A node without input: produces items until it is done.
///
/// # Shutdown
///
/// When the pipeline is asked to shut down gracefully, the runtime stops
/// polling [`run`](Source::run) and drains what the source has already
/// emitted; nothing emitted is lost. A batch of acknowledgements the source
/// began ([`Emitter::begin_batch`]) and had not ended is abandoned, not done
/// (see [`Acks`]): the runtime cannot tell whether it covered items the
/// source never emitted. A source that must do work of its own on shutdown,
/// or finish its batches, returns `true` from
/// [`cooperative_shutdown`](Source::cooperative_shutdown) and watches
/// [`Context::shutdown_requested`] itself.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use std::convert::Infallible;
///
/// struct Countdown(u32);
///
/// impl Source for Countdown {
///     type Out = u32;
///     type Error = Infallible;
///
///     async fn run(&mut self, out: &mut Emitter<u32>) -> Result<(), Infallible> {
///         while self.0 > 0 {
///             out.emit(self.0).await;
///             self.0 -= 1;
///         }
///         Ok(())
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let n = g.source("countdown", Countdown(3));
/// let (total, sum) = fold(0, |acc, x: u32| acc + x);
/// g.sink("sum", total, n);
/// g.build()?.run().await?;
/// assert_eq!(sum.await, Some(6));
/// # Ok(())
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a nanostream source",
    note = "use `from_iter`, `from_stream`, `from_channel`, an `async fn` with `#[nanostream::node]` and an `&mut Emitter<_>` parameter, or implement `Source`"
)]
pub trait Source: Send + 'static {
    /// The items this source emits.
    type Out: Send + 'static;
    /// The error this source may fail with.
    type Error: Into<BoxError> + Send + 'static;

    /// Called once, before [`run`](Source::run).
    fn setup(&mut self, ctx: &Context) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Emits items until the source is exhausted.
    fn run(&mut self, out: &mut Emitter<Self::Out>) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether this source handles graceful shutdown itself.
    ///
    /// `false` (the default): on shutdown the runtime stops polling
    /// [`run`](Source::run) and keeps what was emitted. `true`: the runtime
    /// lets `run` continue, and the source is expected to return soon after
    /// [`Context::shutdown_requested`] resolves.
    fn cooperative_shutdown(&self) -> bool {
        false
    }
}

/// A node without output: consumes items.
///
/// A sink *is* a node: every `Sink` is a [`Node`] whose output is
/// [`Infallible`] (it never emits), so a sink runs with the same lifecycle
/// as any node (`setup`, the fast path, timers, `flush` before waiting,
/// `finish`), fused or in a task of its own, and the error policies of
/// [`NodeExt`](crate::NodeExt) wrap sinks as they wrap nodes. This trait
/// only spares a sink the output it does not have: implement `consume`
/// instead of `process`. (A type implements either `Sink` or `Node`, not
/// both.)
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::Sink;
/// use std::convert::Infallible;
///
/// #[derive(Default)]
/// struct Longest(String);
///
/// impl Sink for Longest {
///     type In = String;
///     type Error = Infallible;
///
///     async fn consume(&mut self, word: String) -> Result<(), Infallible> {
///         if word.len() > self.0.len() {
///             self.0 = word;
///         }
///         Ok(())
///     }
///
///     async fn finish(&mut self) -> Result<(), Infallible> {
///         println!("longest word: {}", self.0);
///         Ok(())
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let words = g.source("words", from_iter(["a", "abc", "ab"].map(String::from)));
/// g.sink("longest", Longest::default(), words);
/// g.build()?.run().await
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a nanostream sink",
    note = "use `for_each`, `fold`, `into_sink`, `into_stream`, an `async fn` with `#[nanostream::node]` and no output, or implement `Sink`"
)]
pub trait Sink: Send + 'static {
    /// The items this sink consumes.
    type In: Send + 'static;
    /// The error this sink may fail with.
    type Error: Into<BoxError> + Send + 'static;

    /// Called once, before the first item.
    fn setup(&mut self, ctx: &Context) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Called for every input item.
    fn consume(&mut self, item: Self::In) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Receives the acknowledgements owed by the chunk of items about to be
    /// consumed, and returns those the runtime should release once every
    /// item of the chunk is consumed (by default, all of them). If the sink
    /// fails before that, the runtime drops them instead: not done.
    ///
    /// A sink whose items are only done later (a Kafka producer waiting for
    /// delivery reports, a database writer that commits every few seconds)
    /// keeps them, returns an empty [`Acks`], and calls [`Acks::release`]
    /// once its output is really done; if that never happens (the write
    /// failed, the pipeline was cancelled), it just drops them. See [`Acks`].
    fn hold(&mut self, acks: Acks) -> Acks {
        acks
    }

    /// Consumes an item without awaiting, when the sink can: the
    /// synchronous fast path, as [`Node::process_now`] is for nodes. The
    /// default hands every item to [`consume`](Sink::consume)
    /// ([`Now::Later`]); a sink that can often finish an item at once
    /// returns [`Now::Nothing`] for it, or [`Now::Fail`].
    #[inline]
    fn consume_now(&mut self, item: Self::In) -> Now<Self::In, (), Self::Error> {
        Now::Later(item)
    }

    /// Called when no more input is ready, before the sink waits for more:
    /// the moment to write out anything the sink buffers.
    fn flush(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    /// When the sink next wants [`on_timer`](Sink::on_timer) to run; see
    /// [`Node::deadline`].
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Runs once [`deadline`](Sink::deadline) has passed.
    fn on_timer(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    /// Called once after the last item. Not called when the pipeline is
    /// failing.
    fn finish(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }
}

/// Every sink is a node that never emits: one lifecycle for both.
impl<K: Sink> Node for K {
    type In = K::In;
    type Out = Infallible;
    type Error = K::Error;

    fn setup(&mut self, ctx: &Context) -> impl Future<Output = Result<(), Self::Error>> + Send {
        Sink::setup(self, ctx)
    }

    fn process(
        &mut self,
        item: K::In,
        _: &mut Emitter<Infallible>,
    ) -> impl Future<Output = Result<(), K::Error>> + Send {
        self.consume(item)
    }

    #[inline]
    fn process_now(&mut self, item: K::In) -> Now<K::In, Infallible, K::Error> {
        match self.consume_now(item) {
            Now::Emit(()) | Now::Nothing => Now::Nothing,
            Now::Fail(error) => Now::Fail(error),
            Now::Later(item) => Now::Later(item),
        }
    }

    fn hold(&mut self, acks: Acks) -> Acks {
        Sink::hold(self, acks)
    }

    fn flush(&mut self, _: &mut Emitter<Infallible>) -> impl Future<Output = Result<(), K::Error>> + Send {
        Sink::flush(self)
    }

    fn deadline(&self) -> Option<Instant> {
        Sink::deadline(self)
    }

    fn on_timer(&mut self, _: &mut Emitter<Infallible>) -> impl Future<Output = Result<(), K::Error>> + Send {
        Sink::on_timer(self)
    }

    fn finish(&mut self, _: &mut Emitter<Infallible>) -> impl Future<Output = Result<(), K::Error>> + Send {
        Sink::finish(self)
    }
}

/// What [`Node::process_now`] (or [`Sink::consume_now`]) did with an item.
#[derive(Debug)]
pub enum Now<In, Out, E> {
    /// The item produced this output.
    Emit(Out),
    /// The item produced no output.
    Nothing,
    /// Processing the item failed.
    Fail(E),
    /// The item needs the asynchronous path; here it is back.
    Later(In),
}

/// What a node knows about where it runs.
#[derive(Debug, Clone)]
pub struct Context {
    name: Arc<str>,
    shutdown: CancellationToken,
    status: Arc<Status>,
    stats: Arc<NodeStats>,
}

impl Context {
    pub(crate) fn new(name: Arc<str>, shutdown: CancellationToken, status: Arc<Status>, stats: Arc<NodeStats>) -> Self {
        Self { name, shutdown, status, stats }
    }

    /// A context for a node running outside a topology.
    pub(crate) fn detached(name: &str) -> Self {
        Self::new(name.into(), CancellationToken::new(), Arc::default(), Arc::new(NodeStats::detached()))
    }

    /// Whether the pipeline is being torn down: a node failed, a shutdown
    /// deadline passed, or the pipeline was cancelled (its `run()` future or
    /// its handle dropped).
    ///
    /// From then on nothing new is acknowledged as done; a source that
    /// commits progress (Kafka offsets) stops committing.
    pub fn has_failed(&self) -> bool {
        self.status.has_stopped()
    }

    /// Fails the whole pipeline with `error`, whatever error policy wraps
    /// this node, as if the node had returned it: the other nodes are
    /// stopped and `run()` reports it with this node's name (unless another
    /// node failed first).
    ///
    /// This is for failures that no policy may skip, typically found outside
    /// the call that handles an item: a Kafka sink learning that librdkafka
    /// gave up on a delivery must not let `skip_errors` turn that into a
    /// committed offset. From the moment it is called,
    /// [`has_failed`](Context::has_failed) is true, and the pipeline's
    /// outcome is an error even if every node finishes right after. Can be
    /// called from any thread; only the first failure of a pipeline is kept.
    pub fn fail(&self, error: impl Into<BoxError>) {
        self.status.record(Stop::Failed { node: self.name.clone(), source: error.into() });
    }

    pub(crate) fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// Notes how many attempts were made on an item the node gives up on
    /// (a retry policy does, for a dead-letter policy around it).
    pub(crate) fn note_attempts(&self, attempts: u32) {
        self.stats.attempts.store(attempts, std::sync::atomic::Ordering::Relaxed);
    }

    /// The attempts noted for the item given up on last (1 when none were
    /// noted), and forgets them.
    pub(crate) fn take_attempts(&self) -> u32 {
        self.stats.attempts.swap(0, std::sync::atomic::Ordering::Relaxed).max(1)
    }

    /// Counts an error the node handled itself (skipped or retried), in the
    /// node's error metric.
    pub fn record_error(&self) {
        self.stats.add_error();
    }

    pub(crate) fn stats(&self) -> &Arc<NodeStats> {
        &self.stats
    }

    /// The node's name in its topology.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// Resolves once the pipeline has been asked to shut down gracefully.
    ///
    /// Sources that return `true` from [`Source::cooperative_shutdown`] use it
    /// to know when to stop; the future can be cloned into the source's own
    /// state because it owns what it needs.
    pub fn shutdown_requested(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shutdown.clone().cancelled_owned()
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Whether graceful shutdown has been requested.
    pub fn is_shutdown_requested(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}
