use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use crate::edge::{AckSet, Chunk, EdgeSender};
use crate::stats::NodeStats;

/// Where a node sends its outputs.
///
/// A node receives `&mut Emitter<Out>` and calls [`emit`](Emitter::emit) for
/// each output, zero or more times per input. Outputs are buffered and moved
/// downstream in chunks: when a chunk is full, when the node has no more
/// input ready, and when the node finishes. `emit` waits when the downstream
/// edges are full, which is how back-pressure reaches a node.
///
/// # Examples
///
/// A node that splits lines into words emits several outputs per input:
///
/// ```
/// use nanostream::prelude::*;
///
/// #[node]
/// async fn words(line: String, out: &mut Emitter<String>) {
///     for word in line.split_whitespace() {
///         out.emit(word.to_owned()).await;
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use futures::StreamExt;
/// let out: Vec<_> = words()
///     .apply(futures::stream::iter(["a b".to_owned(), "c".to_owned()]))
///     .map(Result::unwrap)
///     .collect()
///     .await;
/// assert_eq!(out, ["a", "b", "c"]);
/// # }
/// ```
pub struct Emitter<T> {
    buf: Vec<T>,
    /// Acknowledgements owed by the items in `buf`.
    acks: AckSet,
    /// Acknowledgements of the input chunk the node is working through.
    current: AckSet,
    /// Flush once `buf` holds this many items.
    limit: usize,
    /// Flush a partial chunk as soon as a downstream node is waiting for input
    /// (used by push sources, whose waits the runtime cannot see).
    eager: bool,
    /// Park `emit` once the output is closed, so a source loop cannot spin.
    park_when_closed: bool,
    port: Option<Port<T>>,
}

pub(crate) struct Port<T> {
    edges: Vec<EdgeSender<T>>,
    cloner: Option<fn(&T) -> T>,
    policy: Policy,
    /// Edges that already hold a copy of the chunk being broadcast, so an
    /// interrupted flush resumes without sending duplicates.
    sent_upto: usize,
    closed: bool,
    closed_token: CancellationToken,
    stats: Arc<NodeStats>,
}

/// How a source's emitter decides to send a partial chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceFlush {
    /// As soon as a downstream node waits for input (natural batching).
    WhenDownstreamIdle,
    /// Only when full or flushed explicitly: the source flushes itself.
    Explicit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    Broadcast,
}

impl<T> Port<T> {
    pub(crate) fn new(
        edges: Vec<EdgeSender<T>>,
        cloner: Option<fn(&T) -> T>,
        policy: Policy,
        closed_token: CancellationToken,
        stats: Arc<NodeStats>,
    ) -> Self {
        Self { edges, cloner, policy, sent_upto: 0, closed: false, closed_token, stats }
    }

    fn downstream_idle(&self) -> bool {
        self.edges.iter().any(|e| e.shared.receiver_idle.load(Ordering::Relaxed))
    }

    fn chunk_limit(&self) -> usize {
        self.edges.iter().map(|e| e.chunk_limit).min().unwrap_or(usize::MAX)
    }

    fn remove_edge(&mut self, index: usize) {
        self.edges.remove(index);
        if self.edges.is_empty() {
            self.closed = true;
            self.closed_token.cancel();
        }
    }
}

fn with_current(acks: AckSet, current: &AckSet) -> AckSet {
    let mut acks = acks;
    if !current.is_empty() {
        acks.extend_from(current);
    }
    acks
}

impl<T> Emitter<T> {
    /// An emitter that only buffers, for running a node outside a topology.
    pub(crate) fn detached() -> Self {
        Self {
            buf: Vec::new(),
            acks: AckSet::default(),
            current: AckSet::default(),
            limit: usize::MAX,
            eager: false,
            park_when_closed: false,
            port: None,
        }
    }

    pub(crate) fn connected(port: Port<T>, source: Option<SourceFlush>) -> Self {
        let limit = port.chunk_limit();
        Self {
            buf: Vec::new(),
            acks: AckSet::default(),
            current: AckSet::default(),
            limit,
            eager: source == Some(SourceFlush::WhenDownstreamIdle),
            park_when_closed: source.is_some(),
            port: Some(port),
        }
    }

    /// Sends one output downstream.
    ///
    /// The item is buffered; the call waits only when the buffer is full and
    /// the downstream edges have no room, so awaiting it is how a node feels
    /// back-pressure.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an item passed to `emit` is never lost or duplicated if
    /// the future is dropped; it stays buffered and is sent by the next
    /// flush.
    pub async fn emit(&mut self, item: T) {
        self.buf.push(item);
        if self.buf.len() >= self.limit || (self.eager && self.downstream_idle()) {
            self.flush().await;
            if self.park_when_closed && self.is_closed() {
                // Nothing reads this output any more (the pipeline is being
                // torn down): park the node instead of letting it spin.
                std::future::pending::<()>().await;
            }
        }
    }

    fn downstream_idle(&self) -> bool {
        self.port.as_ref().is_some_and(Port::downstream_idle)
    }

    /// Sends the buffered outputs now, even if the chunk is not full.
    ///
    /// The runtime already flushes when a node has no more input ready and
    /// when it finishes; call this from a long-running source or node before
    /// it waits on something slow, so that outputs are not held back.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped, the items not yet sent stay
    /// buffered and no downstream node receives a chunk twice.
    pub async fn flush(&mut self) {
        let Some(port) = &mut self.port else { return };
        if self.buf.is_empty() || port.closed {
            return;
        }
        let len = self.buf.len();
        match port.policy {
            Policy::Broadcast => {
                while port.sent_upto < port.edges.len() {
                    let index = port.sent_upto;
                    let Ok(permit) = port.edges[index].tx.reserve().await else {
                        port.remove_edge(index);
                        continue;
                    };
                    let last = index + 1 == port.edges.len();
                    let chunk = if last {
                        Chunk {
                            items: std::mem::replace(&mut self.buf, Vec::with_capacity(len)),
                            acks: with_current(std::mem::take(&mut self.acks), &self.current),
                        }
                    } else {
                        let Some(clone) = port.cloner else {
                            unreachable_clone();
                        };
                        Chunk {
                            items: self.buf.iter().map(clone).collect(),
                            acks: with_current(self.acks.clone(), &self.current),
                        }
                    };
                    port.edges[index].shared.queued.fetch_add(len, Ordering::Relaxed);
                    permit.send(chunk);
                    port.sent_upto += 1;
                }
                port.sent_upto = 0;
            }
        }
        if port.closed {
            // Every reader is gone; what is left can never be delivered.
            self.buf.clear();
            self.acks.clear();
        } else {
            port.stats.sent.fetch_add(len as u64, Ordering::Relaxed);
        }
    }

    /// Whether every node reading this output has stopped.
    pub fn is_closed(&self) -> bool {
        self.port.as_ref().is_some_and(|p| p.closed)
    }

    /// Number of outputs buffered and not yet sent.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Marks the start of an input chunk whose acknowledgements every output
    /// emitted from now on owes.
    pub(crate) fn begin_input(&mut self, acks: AckSet) {
        self.current = acks;
    }

    /// Marks the end of the current input chunk.
    pub(crate) fn end_input(&mut self) {
        if self.buf.is_empty() {
            // Every output derived from the chunk has been sent with a copy of
            // its acknowledgements (or there was none): release ours.
            self.current.clear();
        } else {
            self.acks.append(&mut self.current);
        }
    }

    /// Takes what a detached emitter buffered.
    pub(crate) fn drain_detached(&mut self) -> std::vec::Drain<'_, T> {
        self.buf.drain(..)
    }
}

#[cold]
fn unreachable_clone() -> ! {
    // A port only gets a second reader through `&Output<T>`, which requires
    // `T: Clone` and registers the clone function.
    unreachable!("nanostream: broadcast to several readers without a clone function")
}

impl<T> std::fmt::Debug for Emitter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("item", &std::any::type_name::<T>())
            .field("buffered", &self.buf.len())
            .field("limit", &self.limit)
            .field("closed", &self.is_closed())
            .finish()
    }
}
