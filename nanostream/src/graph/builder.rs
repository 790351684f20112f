use std::collections::HashSet;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::edge::channel::{ChunkCloner, EdgeRef, EdgeShared, EdgeSize, edge, shared_edge};
use crate::edge::channel::{DEFAULT_CAPACITY, DEFAULT_CHUNK_SIZE};
use crate::edge::routing::Policy;
use crate::error::BuildError;
use crate::graph::model::{Graph, GraphEdge, GraphNode, NodeKind};
use crate::graph::wiring::{SharedInputs, SharedPort, SharedSplit, lock};
use crate::node::{Node, Source};
use crate::policy::DeadLetter;
use crate::runtime::task::{self, Prepared};
use crate::runtime::topology::{NodePlan, Topology};
use std::hash::{Hash, Hasher};

static NEXT_BUILDER: AtomicU64 = AtomicU64::new(1);

/// The output of a node: pass it to [`TopologyBuilder::node`] or
/// [`TopologyBuilder::sink`] to make another node read it.
///
/// Passing the handle by value connects one reader. Passing it by reference
/// (`&out`) may be repeated to connect several readers, each of which gets
/// every item (fan-out by broadcast); that needs `T: Clone`, because every
/// reader receives its own copy. Items are never shared mutably between
/// branches.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
///
/// let mut g = Topology::builder();
/// let words = g.source("words", from_iter(["a", "b"].map(String::from)));
/// let upper = g.node("upper", map(|w: String| w.to_uppercase()), &words);
/// let lens = g.node("lens", map(|w: String| w.len()), &words);
/// g.sink("print_upper", for_each(|w: String| async move { println!("{w}") }), upper);
/// g.sink("print_lens", for_each(|n: usize| async move { println!("{n}") }), lens);
/// assert!(g.build().is_ok());
/// ```
pub struct Output<T> {
    pub(crate) node: usize,
    pub(crate) builder: u64,
    pub(crate) port: SharedPort<T>,
    /// Which part of a split output this handle reads.
    pub(crate) slot: Option<usize>,
    /// Set when the parts share one queue.
    pub(crate) shared: Option<Arc<SharedSplit<T>>>,
}

impl<T> Output<T> {
    /// This output, read over an edge of its own capacity; see
    /// [`Inputs::with_capacity`] (which also applies to `&output` and to
    /// several outputs at once).
    pub fn with_capacity(self, capacity: usize) -> WithCapacity<Self> {
        Inputs::<T>::with_capacity(self, capacity)
    }

    /// This output, read over a queue between tasks rather than fused; see
    /// [`Inputs::unfused`] for when to.
    pub fn unfused(self) -> Unfused<Self> {
        Inputs::<T>::unfused(self)
    }
}

impl<T> std::fmt::Debug for Output<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").field("node", &self.node).field("item", &std::any::type_name::<T>()).finish()
    }
}

/// The output of the items that came too late for a window or join; see
/// [`TopologyBuilder::window`].
pub type LateItems<T> = Output<crate::operators::Late<T>>;

/// The output of [`TopologyBuilder::node_with_dead_letters`] that carries
/// node `N`'s dead letters.
pub type DeadLetterOutput<N> = Output<DeadLetter<<N as Node>::In, <N as Node>::Error>>;

/// One edge to be created, as named by an [`Inputs`] value.
#[doc(hidden)]
pub struct Link<T> {
    node: usize,
    slot: Option<usize>,
    builder: u64,
    port: SharedPort<T>,
    shared: Option<Arc<SharedSplit<T>>>,
    cloner: Option<ChunkCloner<T>>,
    capacity: Option<usize>,
    unfused: bool,
}

/// What a node can read from: one output or several (fan-in).
///
/// Implemented for an [`Output`] by value, for `&Output<T>` when `T: Clone`
/// (so the output can also feed other nodes), for arrays and `Vec`s of those,
/// and for [`WithCapacity`].
///
/// # Examples
///
/// Fan-in from two sources of the same type, with a larger queue on one
/// edge:
///
/// ```
/// use nanostream::prelude::*;
///
/// let mut g = Topology::builder();
/// let a = g.source("a", from_iter(0..10u32));
/// let b = g.source("b", from_iter(10..20u32));
/// let both = g.node("double", map(|x: u32| x * 2), [a.with_capacity(4096), b.with_capacity(64)]);
/// g.sink("print", for_each(|x: u32| async move { println!("{x}") }), both);
/// assert!(g.build().is_ok());
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be read by a node whose input is `{T}`",
    label = "this does not produce `{T}` items",
    note = "an `Output<X>` feeds nodes whose input is `X`; `&Output<X>` also needs `X: Clone` (fan-out copies each item)"
)]
pub trait Inputs<T> {
    #[doc(hidden)]
    fn links(self) -> Vec<Link<T>>;

    /// Sets the capacity (in items) of the edges these inputs create,
    /// overriding [`TopologyBuilder::default_capacity`].
    ///
    /// An edge with its own capacity is a queue between two tasks: it is
    /// never fused (see [`unfused`](Inputs::unfused)).
    fn with_capacity(self, capacity: usize) -> WithCapacity<Self>
    where
        Self: Sized,
    {
        WithCapacity { inputs: self, capacity }
    }

    /// Keeps these edges as queues between tasks, even where the nodes
    /// could be fused.
    ///
    /// A node that reads one output, alone, by value, runs in the task of
    /// the node before it (the two are *fused*): each chunk goes from one to
    /// the other by a function call, with no queue and no hand-off between
    /// threads, which is the cheapest way to run a chain of steps. Cut the
    /// chain with `unfused` to run the two sides on different cores at the
    /// same time (pipeline parallelism) when both sides are heavy and the
    /// items are cheap to move, or to put a queue in front of a node whose
    /// speed varies. Fan-out, fan-in, [`TopologyBuilder::parallel`] and the
    /// split outputs are queues anyway.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    ///
    /// let mut g = Topology::builder();
    /// let lines = g.source("lines", from_iter(["a b", "c"].map(String::from)));
    /// // "parse" runs in the task of "lines"; "count" gets a task of its own.
    /// let words = g.node("parse", map(|l: String| l.split(' ').count()), lines);
    /// let (count, _total) = fold(0, |a, n: usize| a + n);
    /// g.sink("count", count, words.unfused());
    /// assert!(g.build().is_ok());
    /// ```
    fn unfused(self) -> Unfused<Self>
    where
        Self: Sized,
    {
        Unfused { inputs: self }
    }
}

#[diagnostic::do_not_recommend]
impl<T> Inputs<T> for Output<T> {
    fn links(self) -> Vec<Link<T>> {
        vec![Link {
            node: self.node,
            slot: self.slot,
            builder: self.builder,
            port: self.port,
            shared: self.shared,
            cloner: None,
            capacity: None,
            unfused: false,
        }]
    }
}

#[diagnostic::do_not_recommend]
impl<T: Clone> Inputs<T> for &Output<T> {
    fn links(self) -> Vec<Link<T>> {
        vec![Link {
            node: self.node,
            slot: self.slot,
            builder: self.builder,
            port: self.port.clone(),
            shared: self.shared.clone(),
            cloner: Some(<[T]>::to_vec),
            capacity: None,
            unfused: false,
        }]
    }
}

#[diagnostic::do_not_recommend]
impl<T, I: Inputs<T>, const N: usize> Inputs<T> for [I; N] {
    fn links(self) -> Vec<Link<T>> {
        self.into_iter().flat_map(Inputs::links).collect()
    }
}

#[diagnostic::do_not_recommend]
impl<T, I: Inputs<T>> Inputs<T> for Vec<I> {
    fn links(self) -> Vec<Link<T>> {
        self.into_iter().flat_map(Inputs::links).collect()
    }
}

/// Inputs with an explicit edge capacity; see [`Inputs::with_capacity`].
#[derive(Debug)]
pub struct WithCapacity<I> {
    inputs: I,
    capacity: usize,
}

#[diagnostic::do_not_recommend]
impl<T, I: Inputs<T>> Inputs<T> for WithCapacity<I> {
    fn links(self) -> Vec<Link<T>> {
        let mut links = self.inputs.links();
        for link in &mut links {
            link.capacity = Some(self.capacity);
        }
        links
    }
}

/// Inputs kept as queues between tasks; see [`Inputs::unfused`].
#[derive(Debug)]
pub struct Unfused<I> {
    inputs: I,
}

#[diagnostic::do_not_recommend]
impl<T, I: Inputs<T>> Inputs<T> for Unfused<I> {
    fn links(self) -> Vec<Link<T>> {
        let mut links = self.inputs.links();
        for link in &mut links {
            link.unfused = true;
        }
        links
    }
}

/// A node whose inputs are connected later with [`TopologyBuilder::connect`].
///
/// Created by [`TopologyBuilder::placeholder`]; lets a graph be declared in
/// any order.
pub struct Placeholder<T> {
    node: usize,
    builder: u64,
    inputs: SharedInputs<T>,
}

impl<T> std::fmt::Debug for Placeholder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placeholder").field("node", &self.node).field("item", &std::any::type_name::<T>()).finish()
    }
}

struct NodeEntry {
    name: String,
    kind: NodeKind,
    launch: Prepared,
    /// Set when the node's output was split: the policy and the number of
    /// parts.
    split: Option<(&'static str, usize)>,
}

struct EdgeEntry {
    from: usize,
    to: usize,
    slot: Option<usize>,
    capacity: Option<usize>,
    /// The user asked for a queue here.
    unfused: bool,
    /// One of the parts of a shared split.
    shared: bool,
    make: Box<dyn FnOnce(EdgeSize) -> Arc<EdgeShared> + Send>,
    /// Instead of `make`: joins the reader to the task of the writer, with
    /// the given chunk size.
    fuse: Box<dyn FnOnce(usize) + Send>,
}

/// Wires nodes into a [`Topology`].
///
/// Add sources, nodes and sinks by name; each returns the handle its readers
/// connect to. Mistakes (a repeated name, a node without input, an output
/// nobody reads, a cycle, a zero capacity) are reported by
/// [`build`](TopologyBuilder::build) as a [`BuildError`], never as a panic.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
///
/// #[node]
/// async fn triple(x: u64) -> u64 {
///     x * 3 + 1
/// }
///
/// #[node]
/// async fn keep_even(x: u64) -> Option<u64> {
///     (x % 2 == 0).then_some(x)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let nums = g.source("numbers", from_iter(0..1_000u64));
/// let t = g.node("triple", triple(), nums);
/// let e = g.node("keep_even", keep_even(), t);
/// let (sum, total) = fold(0, |acc, x: u64| acc + x);
/// g.sink("sum", sum, e);
/// g.build()?.run().await?;
/// assert_eq!(total.await, Some((0..1_000u64).map(|x| x * 3 + 1).filter(|x| x % 2 == 0).sum()));
/// # Ok(())
/// # }
/// ```
pub struct TopologyBuilder {
    id: u64,
    nodes: Vec<NodeEntry>,
    edges: Vec<EdgeEntry>,
    default_capacity: usize,
    chunk_size: usize,
    progress: Option<std::time::Duration>,
    fusion: bool,
    /// Links that are not edges (a node and its dead-letter source), shown
    /// in graph exports only.
    side_edges: Vec<(usize, usize, &'static str)>,
    errors: Vec<BuildError>,
}

impl std::fmt::Debug for TopologyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopologyBuilder")
            .field("nodes", &self.nodes.iter().map(|n| &n.name).collect::<Vec<_>>())
            .field("edges", &self.edges.len())
            .field("default_capacity", &self.default_capacity)
            .field("chunk_size", &self.chunk_size)
            .finish()
    }
}

impl Default for TopologyBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl Topology {
    /// Starts wiring a new topology.
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::new()
    }
}

impl TopologyBuilder {
    /// An empty builder; the same as [`Topology::builder`].
    pub fn new() -> Self {
        Self {
            id: NEXT_BUILDER.fetch_add(1, Ordering::Relaxed),
            nodes: Vec::new(),
            edges: Vec::new(),
            default_capacity: DEFAULT_CAPACITY,
            chunk_size: DEFAULT_CHUNK_SIZE,
            progress: None,
            fusion: true,
            side_edges: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Sets the capacity, in items, of every edge that does not set its own
    /// with [`Inputs::with_capacity`]. Default: [`DEFAULT_CAPACITY`].
    pub fn default_capacity(&mut self, capacity: usize) -> &mut Self {
        self.default_capacity = capacity;
        self
    }

    /// Sets the most items moved across an edge in one chunk. Default:
    /// [`DEFAULT_CHUNK_SIZE`].
    ///
    /// Larger chunks amortise the cost of a channel operation over more
    /// items; an edge whose capacity is smaller than the chunk size uses
    /// chunks of its capacity. A chunk is also sent early when the node that
    /// fills it has no more input ready, so small chunks never wait to fill.
    pub fn chunk_size(&mut self, chunk_size: usize) -> &mut Self {
        self.chunk_size = chunk_size;
        self
    }

    /// Whether chains of nodes joined one-to-one run fused in one task (the
    /// default), or every node in its own task. See [`Inputs::unfused`] for
    /// what fusion is and when to cut a chain; turning it off everywhere is
    /// for comparing the two, or for looking at every node's queue.
    pub fn fusion(&mut self, on: bool) -> &mut Self {
        self.fusion = on;
        self
    }

    /// Logs a progress report every `every` while the pipeline runs, one
    /// line per report, nothing when no item moved:
    ///
    /// ```text
    /// lines 13.0k (6.0k/s) | parse 12.9k (6.0k/s, 3 errors) | store 12.0k (5.5k/s, bottleneck: queue 100%)
    /// ```
    ///
    /// Per node, in the order they were added: the running total (what a
    /// source sent, what any other node received) and its rate, its errors,
    /// and for the node that holds the pipeline back, why (its queue's fill,
    /// or for a fused node its busy share).
    ///
    /// Reports are `tracing` events at `INFO` level with target
    /// `nanostream::progress` and a `bottleneck` field (the node's name, or
    /// `none`). Off by default.
    pub fn report_progress(&mut self, every: std::time::Duration) -> &mut Self {
        self.progress = Some(every);
        self
    }

    fn add_node(&mut self, name: String, kind: NodeKind, launch: Prepared) -> usize {
        self.nodes.push(NodeEntry { name, kind, launch, split: None });
        self.nodes.len() - 1
    }

    fn output<T>(&self, node: usize, port: SharedPort<T>) -> Output<T> {
        Output { node, builder: self.id, port, slot: None, shared: None }
    }

    fn connect_links<T: Send + 'static>(&mut self, to: usize, links: Vec<Link<T>>, inputs: &SharedInputs<T>) {
        for link in links {
            if link.builder != self.id {
                self.errors.push(BuildError::ForeignOutput { node: self.nodes[to].name.clone() });
                continue;
            }
            if let Some(cloner) = link.cloner {
                lock(&link.port).cloner = Some(cloner);
            }
            let port = link.port;
            let inputs = inputs.clone();
            let slot = link.slot;
            let split = link.shared;
            let fuse = {
                let (port, inputs) = (port.clone(), inputs.clone());
                Box::new(move |chunk_size| {
                    lock(&port).chunk_size = chunk_size;
                    lock(&inputs).fused_from = Some(port);
                })
            };
            self.edges.push(EdgeEntry {
                from: link.node,
                to,
                slot,
                capacity: link.capacity,
                unfused: link.unfused,
                shared: split.is_some(),
                fuse,
                make: Box::new(move |size| {
                    let rx = match split {
                        None => {
                            let (tx, rx) = edge(size);
                            lock(&port).edges.push((slot.unwrap_or(0), tx));
                            rx
                        }
                        Some(split) => {
                            let mut receivers = lock(&split.receivers);
                            let receivers = receivers.get_or_insert_with(|| {
                                let (tx, receivers) = shared_edge(size, split.readers);
                                lock(&port).edges.push((0, tx));
                                receivers
                            });
                            // Validation gave every part exactly one reader.
                            receivers.pop().expect("a shared split has a receiver per part")
                        }
                    };
                    let shared = rx.shared.clone();
                    lock(&inputs).receivers.push(rx);
                    shared
                }),
            });
        }
    }

    /// Adds a source: a node without input.
    ///
    /// See [`from_iter`](crate::sources::from_iter), [`from_stream`](crate::sources::from_stream),
    /// [`from_channel`](crate::sources::from_channel) and the [`Source`] trait.
    pub fn source<S: Source>(&mut self, name: impl Into<String>, source: S) -> Output<S::Out> {
        let port: SharedPort<S::Out> = Arc::default();
        let p = port.clone();
        let id = self.add_node(name.into(), NodeKind::Source, task::prepare_source(source, p));
        self.output(id, port)
    }

    /// Adds a node that reads `inputs` and returns its output.
    pub fn node<N: Node>(&mut self, name: impl Into<String>, node: N, inputs: impl Inputs<N::In>) -> Output<N::Out> {
        let port: SharedPort<N::Out> = Arc::default();
        let receivers: SharedInputs<N::In> = Arc::default();
        let (p, r) = (port.clone(), receivers.clone());
        let id = self.add_node(name.into(), NodeKind::Node, task::prepare_node(node, r, p));
        self.connect_links(id, inputs.links(), &receivers);
        self.output(id, port)
    }

    /// Adds a sink: a node without output that reads `inputs` (a
    /// [`Sink`](crate::Sink), or a node wrapped in an error policy).
    pub fn sink<K>(&mut self, name: impl Into<String>, sink: K, inputs: impl Inputs<K::In>)
    where
        K: Node<Out = Infallible>,
    {
        self.add_sink(name.into(), sink, inputs);
    }

    fn add_sink<K>(&mut self, name: String, sink: K, inputs: impl Inputs<K::In>) -> usize
    where
        K: Node<Out = Infallible>,
    {
        let receivers: SharedInputs<K::In> = Arc::default();
        let r = receivers.clone();
        let id = self.add_node(name, NodeKind::Sink, task::prepare_sink(sink, r));
        self.connect_links(id, inputs.links(), &receivers);
        id
    }

    fn split<T>(&mut self, output: Output<T>, parts: usize, policy: Policy<T>) -> Vec<Output<T>> {
        let label = policy.label();
        lock(&output.port).policy = policy;
        self.parts(output, parts, label, None)
    }

    /// Splits an output into `parts` outputs that take items from one shared
    /// queue: each chunk goes to whichever reader asks first, and a reader
    /// that finds an item slow gives the rest of its chunk back, so that
    /// `parts` slow items are in progress whenever that many are queued.
    fn share<T>(&mut self, output: Output<T>, parts: usize) -> Vec<Output<T>> {
        let split = Arc::new(SharedSplit { readers: parts, receivers: Mutex::new(None) });
        self.parts(output, parts, "shared queue", Some(split))
    }

    /// The handles of the parts of a split output.
    fn parts<T>(
        &mut self,
        output: Output<T>,
        parts: usize,
        label: &'static str,
        shared: Option<Arc<SharedSplit<T>>>,
    ) -> Vec<Output<T>> {
        if output.builder == self.id {
            self.nodes[output.node].split = Some((label, parts));
        }
        (0..parts)
            .map(|i| Output {
                node: output.node,
                builder: output.builder,
                port: output.port.clone(),
                slot: Some(i),
                shared: shared.clone(),
            })
            .collect()
    }

    /// Splits an output into `parts` outputs that share its items: whole
    /// chunks go to each part in turn (round robin), so every item reaches
    /// exactly one reader.
    ///
    /// Use it to spread work over copies of a node or of a whole chain (see
    /// also [`parallel`](TopologyBuilder::parallel)). Each part must be read
    /// by exactly one node. Items need not be `Clone`.
    ///
    /// One pipeline per core: the chain of one-to-one nodes after each part
    /// runs fused in a task of its own, so `parts` copies of a chain are
    /// `parts` pipelines that a multi-thread runtime runs on different
    /// workers, each item handled from the split to the end of its chain on
    /// one core. Where the input already comes in shares (Kafka partitions,
    /// files), give each copy its own source instead, and nothing crosses
    /// cores at all.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    ///
    /// let mut g = Topology::builder();
    /// let jobs = g.source("jobs", from_iter(0..100u32));
    /// let parts = g.round_robin(jobs, 2);
    /// let mut done = Vec::new();
    /// for (i, part) in parts.into_iter().enumerate() {
    ///     done.push(g.node(format!("work_{i}"), map(|x: u32| x * 2), part));
    /// }
    /// g.sink("print", for_each(|x: u32| async move { println!("{x}") }), done);
    /// assert!(g.build().is_ok());
    /// ```
    pub fn round_robin<T>(&mut self, output: Output<T>, parts: usize) -> Vec<Output<T>> {
        self.split(output, parts, Policy::RoundRobin)
    }

    /// Splits an output into `parts` outputs by key: every item goes to part
    /// `hash(key(item)) % parts`, so all items with the same key reach the
    /// same reader, in order.
    ///
    /// Each part must be read by exactly one node. The hash is stable for a
    /// given build of the program.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    ///
    /// let mut g = Topology::builder();
    /// let words = g.source("words", from_iter(["a", "b", "a"].map(String::from)));
    /// let parts = g.partition_by(words, 2, |w: &String| w.clone());
    /// let counts: Vec<_> = parts
    ///     .into_iter()
    ///     .enumerate()
    ///     .map(|(i, part)| g.node(format!("count_{i}"), map(|w: String| (w, 1u32)), part))
    ///     .collect();
    /// g.sink("print", for_each(|(w, n): (String, u32)| async move { println!("{w} {n}") }), counts);
    /// assert!(g.build().is_ok());
    /// ```
    pub fn partition_by<T, K, F>(&mut self, output: Output<T>, parts: usize, key: F) -> Vec<Output<T>>
    where
        K: Hash,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        let hash = move |item: &T| {
            let mut hasher = std::hash::DefaultHasher::new();
            key(item).hash(&mut hasher);
            hasher.finish()
        };
        self.split(output, parts, Policy::Partition(Arc::new(hash)))
    }

    /// Adds `workers` copies of a node, each its own task, that share the
    /// items of `inputs`; their outputs merge into the returned output in no
    /// particular order.
    ///
    /// `make` builds each copy. The copies are named `name[0]`,
    /// `name[1]`, ...; they take chunks of items from one queue filled by a
    /// splitter `name.split`, and `name` merges their outputs. A copy that
    /// has to wait on an item (an HTTP call, a database look-up) gives the
    /// rest of its chunk back to the queue before it waits, so with `workers`
    /// copies and at least that many items queued, `workers` items are in
    /// progress whatever the chunk size; fast items still move in whole
    /// chunks. Use it when one node is the bottleneck and its work can be
    /// spread over cores or overlapped; for outputs in input order, see
    /// [`parallel_ordered`](TopologyBuilder::parallel_ordered).
    ///
    /// Each copy keeps its own state: items are not split by key, so a
    /// stateful node (a batch, a window) sees an arbitrary share of them.
    /// Use [`partition_by`](TopologyBuilder::partition_by) to keep a key on
    /// one copy.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    /// use nanostream::operators::count;
    ///
    /// #[node]
    /// async fn expensive(x: u64) -> u64 {
    ///     (0..1_000).fold(x, |acc, i| acc.wrapping_mul(31).wrapping_add(i))
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nanostream::Error> {
    /// let mut g = Topology::builder();
    /// let nums = g.source("numbers", from_iter(0..10_000u64));
    /// let hashed = g.parallel("expensive", 4, expensive, nums);
    /// let (sink, counter) = count();
    /// g.sink("count", sink, hashed);
    /// g.build()?.run().await?;
    /// assert_eq!(counter.get(), 10_000);
    /// # Ok(())
    /// # }
    /// ```
    pub fn parallel<N, F>(
        &mut self,
        name: impl Into<String>,
        workers: usize,
        mut make: F,
        inputs: impl Inputs<N::In>,
    ) -> Output<N::Out>
    where
        N: Node,
        F: FnMut() -> N,
    {
        let name = name.into();
        if workers == 0 {
            self.errors.push(BuildError::ZeroWorkers { node: name.clone() });
        }
        let split = self.node(format!("{name}.split"), crate::operators::closures::Identity(PhantomData), inputs);
        let parts = self.share(split, workers);
        let outs: Vec<Output<N::Out>> =
            parts.into_iter().enumerate().map(|(i, part)| self.node(format!("{name}[{i}]"), make(), part)).collect();
        self.node(name, crate::operators::closures::Identity(PhantomData), outs)
    }

    /// Like [`parallel`](TopologyBuilder::parallel), but the outputs come out
    /// in the order of the inputs that produced them.
    ///
    /// Items are numbered by `name.split` and put back in order by `name`,
    /// which holds early results until the ones before them arrive. Memory
    /// stays bounded: `name.split` numbers at most `capacity + (workers + 2)
    /// × chunk` items past the oldest one whose output has not gone out (the
    /// builder's capacity and chunk size when this is called), so a worker
    /// stuck on one item holds the others back instead of letting results
    /// pile up.
    ///
    /// What a copy emits from a timer or its final hook (a batch or window
    /// closing) comes out after the outputs of the last input that copy had
    /// processed when the timer fired, as soon as those are out (at once if
    /// they already are, or if it had processed none): timer outputs flow
    /// while the input goes on, never ahead of the input they follow. Acknowledgements of items a copy holds in its state stay
    /// held until what it emits from them is delivered.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    ///
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), nanostream::Error> {
    /// let mut g = Topology::builder();
    /// let nums = g.source("numbers", from_iter(0..10_000u64));
    /// let squares = g.parallel_ordered("square", 3, || map(|x: u64| x * x), nums);
    /// let (sink, out) = into_stream(64);
    /// g.sink("out", sink, squares);
    /// let running = g.build()?.start();
    /// use futures::StreamExt;
    /// let squares: Vec<u64> = out.collect().await;
    /// running.join().await?;
    /// assert!(squares.iter().copied().eq((0..10_000u64).map(|x| x * x)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn parallel_ordered<N, F>(
        &mut self,
        name: impl Into<String>,
        workers: usize,
        mut make: F,
        inputs: impl Inputs<N::In>,
    ) -> Output<N::Out>
    where
        N: Node,
        F: FnMut() -> N,
    {
        use crate::operators::parallel::{Reorder, Sequenced, Sequencer, Window};
        let name = name.into();
        if workers == 0 {
            self.errors.push(BuildError::ZeroWorkers { node: name.clone() });
        }
        let window = Window::new(self.default_capacity + (workers + 2) * self.chunk_size);
        let numbered = self.node(format!("{name}.split"), Sequencer::new(window.clone()), inputs);
        let parts = self.share(numbered, workers);
        let outs: Vec<_> = parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| self.node(format!("{name}[{i}]"), Sequenced::new(make()), part))
            .collect();
        self.node(name, Reorder::new(window), outs)
    }

    /// Adds a node whose failures do not stop the pipeline: each input the
    /// node fails on (error or panic) becomes a [`DeadLetter`] carrying the
    /// input and the failure, on the second returned output.
    ///
    /// The dead letters come out of a source named `name.dead_letters`,
    /// which must be read like any output (typically by a sink that stores
    /// them). The node keeps a copy of every input while processing it, hence
    /// `N::In: Clone`.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    ///
    /// #[node]
    /// async fn parse(line: String) -> Result<u32, std::num::ParseIntError> {
    ///     line.trim().parse()
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nanostream::Error> {
    /// let mut g = Topology::builder();
    /// let lines = g.source("lines", from_iter(["1", "two", "3"].map(String::from)));
    /// let (numbers, rejected) = g.node_with_dead_letters("parse", parse(), lines);
    /// let (sum, total) = fold(0, |a, x: u32| a + x);
    /// g.sink("sum", sum, numbers);
    /// let (store, dead) = into_stream(16);
    /// g.sink("rejected", store, rejected);
    /// g.build()?.run().await?;
    ///
    /// assert_eq!(total.await, Some(4));
    /// use futures::StreamExt;
    /// let dead: Vec<_> = dead.collect().await;
    /// assert_eq!(dead[0].input, "two");
    /// assert_eq!(dead[0].failure.to_string(), "invalid digit found in string");
    /// # Ok(())
    /// # }
    /// ```
    pub fn node_with_dead_letters<N>(
        &mut self,
        name: impl Into<String>,
        node: N,
        inputs: impl Inputs<N::In>,
    ) -> (Output<N::Out>, DeadLetterOutput<N>)
    where
        N: Node,
        N::In: Clone,
    {
        let name = name.into();
        let capacity = self.default_capacity.clamp(1, 1024);
        let (node, letters) = crate::policy::dead_letter::dead_lettering(node, capacity);
        let out = self.node(name.clone(), node, inputs);
        let dead = self.source(format!("{name}.dead_letters"), letters);
        self.side_edges.push((out.node, dead.node, "dead letters"));
        (out, dead)
    }

    /// Adds a sink whose failures do not stop the pipeline: each input the
    /// sink fails to write (error or panic) becomes a [`DeadLetter`], as
    /// with [`node_with_dead_letters`](TopologyBuilder::node_with_dead_letters),
    /// on the returned output. An input's acknowledgements are done once it
    /// is written, or once its dead letter is.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    ///
    /// #[node]
    /// async fn store(order: u32) -> Result<(), String> {
    ///     if order % 2 == 0 { Ok(()) } else { Err(format!("order {order} rejected")) }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nanostream::Error> {
    /// let mut g = Topology::builder();
    /// let orders = g.source("orders", from_iter(1..=4u32));
    /// let rejected = g.sink_with_dead_letters("store", store(), orders);
    /// let (keep, dead) = into_stream(16);
    /// g.sink("rejected", keep, rejected);
    /// g.build()?.run().await?;
    ///
    /// use futures::StreamExt;
    /// let dead: Vec<_> = dead.map(|letter| letter.input).collect().await;
    /// assert_eq!(dead, [1, 3]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn sink_with_dead_letters<K>(
        &mut self,
        name: impl Into<String>,
        sink: K,
        inputs: impl Inputs<K::In>,
    ) -> DeadLetterOutput<K>
    where
        K: Node<Out = Infallible>,
        K::In: Clone,
    {
        let name = name.into();
        let capacity = self.default_capacity.clamp(1, 1024);
        let (sink, letters) = crate::policy::dead_letter::dead_lettering(sink, capacity);
        let id = self.add_sink(name.clone(), sink, inputs);
        let dead = self.source(format!("{name}.dead_letters"), letters);
        self.side_edges.push((id, dead.node, "dead letters"));
        dead
    }

    /// Adds an event-time window node (see
    /// [`Windows`](crate::operators::Windows)) with a second output for the
    /// items that came too late for it: each as a
    /// [`Late`](crate::operators::Late), on an output named `name.late`,
    /// which must be read like any output. A late item's acknowledgements
    /// are done once the late item is.
    ///
    /// Added with [`node`](TopologyBuilder::node) instead, a window fails on
    /// a late item with [`WindowError::TooLate`](crate::operators::WindowError::TooLate),
    /// which its error policy handles: late items are never dropped
    /// silently.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    /// use nanostream::operators::{Windows, watermarks};
    /// use nanostream::time::{Timed, Timestamp};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nanostream::Error> {
    /// // Event times in seconds; 2 comes long after 30.
    /// let times = [1i64, 30, 2];
    /// let mut g = Topology::builder();
    /// let times = g.source("times", from_iter(times));
    /// let timed = g.node("timed", watermarks(|s: &i64| Timestamp::from_millis(s * 1000), Duration::ZERO), times);
    /// let counts = Windows::tumbling(Duration::from_secs(10))
    ///     .aggregate(|t: &Timed<i64>| t.stamp, |_| (), || 0u32, |n, _| *n += 1);
    /// let (counts, late) = g.window("counts", counts, timed);
    /// let (results, counted) = into_stream(8);
    /// g.sink("counted", results, counts);
    /// let (late_sink, late_items) = into_stream(8);
    /// g.sink("late", late_sink, late);
    /// g.build()?.run().await?;
    ///
    /// use futures::StreamExt;
    /// assert_eq!(counted.count().await, 2);
    /// let late: Vec<_> = late_items.map(|l| l.item.item).collect().await;
    /// assert_eq!(late, [2]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn window<W>(
        &mut self,
        name: impl Into<String>,
        mut window: W,
        inputs: impl Inputs<W::In>,
    ) -> (Output<W::Out>, LateItems<W::Item>)
    where
        W: crate::operators::LateOutput,
    {
        let name = name.into();
        let capacity = self.default_capacity.clamp(1, 1024);
        let (tx, late) = crate::sources::side_output(capacity);
        window.route_late(crate::operators::LateSender(tx));
        let out = self.node(name.clone(), window, inputs);
        let late = self.source(format!("{name}.late"), late);
        self.side_edges.push((out.node, late.node, "late items"));
        (out, late)
    }

    /// Adds a join of two inputs (see
    /// [`IntervalJoin`](crate::operators::IntervalJoin)): the items of
    /// `left` and `right` reach it as a [`Side`](crate::operators::Side),
    /// through two small nodes named `name.left` and `name.right`, and the
    /// items that came too late go to the second output, as with
    /// [`window`](TopologyBuilder::window).
    pub fn join<L, R, J>(
        &mut self,
        name: impl Into<String>,
        join: J,
        left: impl Inputs<L>,
        right: impl Inputs<R>,
    ) -> (Output<J::Out>, LateItems<crate::operators::Side<L, R>>)
    where
        L: Send + 'static,
        R: Send + 'static,
        J: crate::operators::LateOutput<Item = crate::operators::Side<L, R>, In = crate::operators::Side<L, R>>,
    {
        use crate::operators::{Side, map};
        let name = name.into();
        let l = self.node(format!("{name}.left"), map(Side::<L, R>::Left), left);
        let r = self.node(format!("{name}.right"), map(Side::<L, R>::Right), right);
        self.window(name, join, vec![l, r])
    }

    /// Adds a pass-through node whose inputs are connected later with
    /// [`connect`](TopologyBuilder::connect), so nodes can be declared before
    /// the nodes that feed them.
    ///
    /// A placeholder that is never connected is a
    /// [`BuildError::NoInput`]; connections that close a loop are a
    /// [`BuildError::Cycle`].
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    ///
    /// let mut g = Topology::builder();
    /// let (rejected_in, rejected) = g.placeholder::<String>("rejected");
    /// g.sink("log_rejected", for_each(|r: String| async move { eprintln!("{r}") }), rejected);
    ///
    /// let lines = g.source("lines", from_iter(["1", "x"].map(String::from)));
    /// let bad = g.node("bad", filter(|l: &String| l.parse::<u32>().is_err()), lines);
    /// g.connect(&rejected_in, bad);
    /// assert!(g.build().is_ok());
    /// ```
    pub fn placeholder<T: Send + 'static>(&mut self, name: impl Into<String>) -> (Placeholder<T>, Output<T>) {
        let port: SharedPort<T> = Arc::default();
        let receivers: SharedInputs<T> = Arc::default();
        let (p, r) = (port.clone(), receivers.clone());
        let id = self.add_node(
            name.into(),
            NodeKind::Placeholder,
            task::prepare_node(crate::operators::closures::Identity(PhantomData), r, p),
        );
        (Placeholder { node: id, builder: self.id, inputs: receivers }, self.output(id, port))
    }

    /// Connects `inputs` to a placeholder; may be called more than once to
    /// fan in.
    pub fn connect<T: Send + 'static>(&mut self, placeholder: &Placeholder<T>, inputs: impl Inputs<T>) {
        if placeholder.builder != self.id {
            self.errors.push(BuildError::ForeignOutput { node: format!("placeholder #{}", placeholder.node) });
            return;
        }
        self.connect_links(placeholder.node, inputs.links(), &placeholder.inputs);
    }

    fn validate(&self) -> Result<(), BuildError> {
        if let Some(error) = self.errors.first() {
            return Err(error.clone());
        }
        if self.nodes.is_empty() {
            return Err(BuildError::Empty);
        }
        if self.chunk_size == 0 {
            return Err(BuildError::ZeroChunkSize);
        }
        let mut seen = HashSet::new();
        for node in &self.nodes {
            if node.name.is_empty() {
                return Err(BuildError::EmptyName);
            }
            if !seen.insert(node.name.as_str()) {
                return Err(BuildError::DuplicateName { name: node.name.clone() });
            }
        }
        for edge in &self.edges {
            if edge.capacity.unwrap_or(self.default_capacity) == 0 {
                return Err(BuildError::ZeroCapacity { node: self.nodes[edge.to].name.clone() });
            }
        }
        let mut has_input = vec![false; self.nodes.len()];
        let mut has_reader = vec![false; self.nodes.len()];
        for edge in &self.edges {
            has_input[edge.to] = true;
            has_reader[edge.from] = true;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.kind != NodeKind::Source && !has_input[i] {
                return Err(BuildError::NoInput { node: node.name.clone() });
            }
            if node.kind != NodeKind::Sink && !has_reader[i] {
                return Err(BuildError::UnreadOutput { node: node.name.clone() });
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let out: Vec<&EdgeEntry> = self.edges.iter().filter(|e| e.from == i).collect();
            match node.split {
                None => {
                    if out.iter().any(|e| e.slot.is_some()) {
                        return Err(BuildError::MixedFanOut { node: node.name.clone() });
                    }
                }
                Some((_, parts)) => {
                    if out.iter().any(|e| e.slot.is_none()) {
                        return Err(BuildError::MixedFanOut { node: node.name.clone() });
                    }
                    for part in 0..parts {
                        let readers = out.iter().filter(|e| e.slot == Some(part)).count();
                        if readers != 1 {
                            return Err(BuildError::SplitReaders { node: node.name.clone(), part, readers });
                        }
                    }
                }
            }
        }
        if let Some(cycle) = self.find_cycle() {
            return Err(BuildError::Cycle { nodes: cycle.into_iter().map(|i| self.nodes[i].name.clone()).collect() });
        }
        Ok(())
    }

    /// Depth-first search for a back edge; returns the loop's nodes with the
    /// first repeated at the end.
    fn find_cycle(&self) -> Option<Vec<usize>> {
        let n = self.nodes.len();
        let mut next = vec![Vec::new(); n];
        for edge in &self.edges {
            next[edge.from].push(edge.to);
        }
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut mark = vec![Mark::New; n];
        for start in 0..n {
            if mark[start] != Mark::New {
                continue;
            }
            // (node, index of the next successor to visit)
            let mut stack = vec![(start, 0usize)];
            mark[start] = Mark::Open;
            while let Some(&mut (node, ref mut at)) = stack.last_mut() {
                if let Some(&succ) = next[node].get(*at) {
                    *at += 1;
                    match mark[succ] {
                        Mark::New => {
                            mark[succ] = Mark::Open;
                            stack.push((succ, 0));
                        }
                        Mark::Open => {
                            let from = stack.iter().position(|&(n, _)| n == succ).unwrap_or(0);
                            let mut cycle: Vec<usize> = stack[from..].iter().map(|&(n, _)| n).collect();
                            cycle.push(succ);
                            return Some(cycle);
                        }
                        Mark::Done => {}
                    }
                } else {
                    mark[node] = Mark::Done;
                    stack.pop();
                }
            }
        }
        None
    }

    /// Checks the wiring and creates the edges.
    ///
    /// # Errors
    ///
    /// Returns the first [`BuildError`] found: a repeated or empty name, a
    /// node without input, an output nobody reads, a cycle, a zero capacity
    /// or chunk size, or an output handle from another builder.
    pub fn build(self) -> Result<Topology, BuildError> {
        self.validate()?;
        let n = self.nodes.len();
        let mut out_degree = vec![0usize; n];
        let mut in_degree = vec![0usize; n];
        for edge in &self.edges {
            out_degree[edge.from] += 1;
            in_degree[edge.to] += 1;
        }
        // One-to-one edges between nodes that take part in chains: the
        // reader runs in the writer's task.
        let chains = |kind: NodeKind, reads: bool| match kind {
            NodeKind::Source => !reads,
            NodeKind::Node => true,
            NodeKind::Sink => reads,
            NodeKind::Placeholder => false,
        };
        let fusable = |edge: &EdgeEntry| {
            self.fusion
                && chains(self.nodes[edge.from].kind, false)
                && chains(self.nodes[edge.to].kind, true)
                && out_degree[edge.from] == 1
                && in_degree[edge.to] == 1
                && self.nodes[edge.from].split.is_none()
                && edge.slot.is_none()
                && !edge.shared
                && !edge.unfused
                && edge.capacity.is_none()
        };
        let fused: Vec<bool> = self.edges.iter().map(fusable).collect();
        // Each node's task is named after the first node of its chain.
        let mut fused_from = vec![None; n];
        for (edge, &fused) in self.edges.iter().zip(&fused) {
            if fused {
                fused_from[edge.to] = Some(edge.from);
            }
        }
        let task: Vec<usize> = (0..n)
            .map(|mut i| {
                while let Some(before) = fused_from[i] {
                    i = before;
                }
                i
            })
            .collect();
        let order = self.start_order();
        let mut graph = Graph {
            nodes: self
                .nodes
                .iter()
                .zip(&task)
                .map(|(n, &task)| GraphNode { name: n.name.clone(), kind: n.kind, task })
                .collect(),
            edges: Vec::with_capacity(self.edges.len()),
        };
        let mut node_inputs: Vec<Vec<EdgeRef>> = vec![Vec::new(); n];
        let mut node_outputs: Vec<Vec<EdgeRef>> = vec![Vec::new(); n];
        for (edge, fused) in self.edges.into_iter().zip(fused) {
            if fused {
                (edge.fuse)(self.chunk_size);
                graph.edges.push(GraphEdge { from: edge.from, to: edge.to, capacity: 0, policy: None, fused: true });
                continue;
            }
            let size =
                EdgeSize { capacity: edge.capacity.unwrap_or(self.default_capacity), chunk_size: self.chunk_size };
            let shared = (edge.make)(size);
            node_inputs[edge.to].push(EdgeRef { shared: shared.clone(), capacity: size.capacity });
            // The parts of a shared split are one queue: count it once.
            if !node_outputs[edge.from].iter().any(|e| Arc::ptr_eq(&e.shared, &shared)) {
                node_outputs[edge.from].push(EdgeRef { shared, capacity: size.capacity });
            }
            let policy = match (self.nodes[edge.from].split, edge.slot) {
                (Some((label, parts)), Some(slot)) => Some(format!("{label} {}/{parts}", slot + 1)),
                _ if out_degree[edge.from] > 1 => Some("broadcast".to_owned()),
                _ => None,
            };
            graph.edges.push(GraphEdge { from: edge.from, to: edge.to, capacity: size.capacity, policy, fused: false });
        }
        for &(from, to, label) in &self.side_edges {
            graph.edges.push(GraphEdge { from, to, capacity: 0, policy: Some(label.to_owned()), fused: false });
        }
        let nodes = self
            .nodes
            .into_iter()
            .zip(node_inputs.into_iter().zip(node_outputs))
            .zip(task)
            .map(|((entry, (inputs, outputs)), task)| NodePlan {
                name: entry.name,
                launch: entry.launch,
                inputs,
                outputs,
                task,
            })
            .collect();
        Ok(Topology::new(nodes, order, graph, self.progress))
    }

    /// The order to start the nodes in: every reader before the nodes it
    /// reads (the graph has no cycle), so that a fused node's stage exists
    /// when the node before it makes its output.
    fn start_order(&self) -> Vec<usize> {
        let n = self.nodes.len();
        let mut readers_left = vec![0usize; n];
        let mut writers = vec![Vec::new(); n];
        for edge in &self.edges {
            readers_left[edge.from] += 1;
            writers[edge.to].push(edge.from);
        }
        let mut ready: Vec<usize> = (0..n).filter(|&i| readers_left[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(node) = ready.pop() {
            order.push(node);
            for &writer in &writers[node] {
                readers_left[writer] -= 1;
                if readers_left[writer] == 0 {
                    ready.push(writer);
                }
            }
        }
        order
    }
}
