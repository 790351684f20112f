use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use tokio_util::sync::CancellationToken;

use crate::edge::{AckSet, Chunk, ChunkCloner, EdgeSender};
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
    /// An empty allocation to fill next, so a flush does not allocate.
    spare: Vec<T>,
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
    cloner: Option<ChunkCloner<T>>,
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
        cloner: Option<ChunkCloner<T>>,
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

impl<T: Send + 'static> Emitter<T> {
    /// An emitter that only buffers, for running a node outside a topology.
    pub(crate) fn detached() -> Self {
        Self {
            buf: Vec::new(),
            acks: AckSet::default(),
            current: AckSet::default(),
            spare: Vec::new(),
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
            spare: Vec::new(),
            limit,
            eager: source == Some(SourceFlush::WhenDownstreamIdle),
            park_when_closed: source.is_some(),
            port: Some(port),
        }
    }

    /// Sends one output downstream.
    ///
    /// The item is buffered at once; the returned future waits only when the
    /// buffer is full and the downstream edges have no room, so awaiting it
    /// is how a node feels back-pressure. Buffering is cheap: a full chunk
    /// is moved downstream in one channel operation.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the item is buffered before the future is returned, so
    /// dropping the future never loses or duplicates it; it is sent by the
    /// next flush.
    #[inline]
    pub fn emit(&mut self, item: T) -> impl Future<Output = ()> + Send + '_ {
        self.buf.push(item);
        std::future::poll_fn(move |cx| self.poll_emit(cx))
    }

    /// The buffer and the size at which it must be flushed, for loops that
    /// fill it without awaiting.
    #[inline]
    pub(crate) fn buffer(&mut self) -> (&mut Vec<T>, usize) {
        (&mut self.buf, self.limit)
    }

    #[inline]
    pub(crate) fn wants_flush(&self) -> bool {
        self.buf.len() >= self.limit || (self.eager && self.downstream_idle())
    }

    /// Flushes a buffer a source filled through [`buffer`](Self::buffer);
    /// like `emit`, parks a source whose output is closed, so that its loop
    /// cannot spin.
    pub(crate) async fn flush_or_park(&mut self) {
        std::future::poll_fn(|cx| self.poll_emit_slow(cx)).await;
    }

    #[inline]
    fn poll_emit(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.wants_flush() {
            return Poll::Ready(());
        }
        self.poll_emit_slow(cx)
    }

    #[inline(never)]
    fn poll_emit_slow(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        ready!(self.poll_flush(cx));
        if self.park_when_closed && self.is_closed() {
            // Nothing reads this output any more (the pipeline is being torn
            // down): park the source instead of letting it spin. No waker is
            // registered; the runtime stops the source by other means.
            return Poll::Pending;
        }
        Poll::Ready(())
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
    pub fn flush(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::poll_fn(move |cx| self.poll_flush(cx))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(port) = &mut self.port else { return Poll::Ready(()) };
        if self.buf.is_empty() || port.closed {
            return Poll::Ready(());
        }
        let len = self.buf.len();
        match port.policy {
            Policy::Broadcast => {
                // Edges before `sent_upto` already hold a copy of this chunk
                // (from an earlier poll), so resuming never duplicates it.
                while port.sent_upto < port.edges.len() {
                    let index = port.sent_upto;
                    let edge = &mut port.edges[index];
                    // Fast path: a slot is free. The edge has a single sender,
                    // so the slot cannot be taken before `try_send` below.
                    let fast = !edge.reserving && edge.tx.get_ref().is_some_and(|tx| tx.capacity() > 0);
                    if !fast {
                        match edge.tx.poll_reserve(cx) {
                            Poll::Pending => {
                                edge.reserving = true;
                                return Poll::Pending;
                            }
                            Poll::Ready(Err(_closed)) => {
                                port.remove_edge(index);
                                continue;
                            }
                            Poll::Ready(Ok(())) => edge.reserving = false,
                        }
                    }
                    let last = index + 1 == port.edges.len();
                    let chunk = if last {
                        let next = if self.spare.capacity() > 0 {
                            std::mem::take(&mut self.spare)
                        } else {
                            Vec::with_capacity(len)
                        };
                        Chunk {
                            items: std::mem::replace(&mut self.buf, next),
                            acks: with_current(std::mem::take(&mut self.acks), &self.current),
                        }
                    } else {
                        let Some(clone) = port.cloner else {
                            unreachable_clone();
                        };
                        Chunk { items: clone(&self.buf), acks: with_current(self.acks.clone(), &self.current) }
                    };
                    let edge = &mut port.edges[index];
                    edge.shared.queued.fetch_add(len, Ordering::Relaxed);
                    let sent = if fast {
                        edge.tx.get_ref().is_some_and(|tx| tx.try_send(chunk).is_ok())
                    } else {
                        edge.tx.send_item(chunk).is_ok()
                    };
                    if !sent {
                        edge.shared.queued.fetch_sub(len, Ordering::Relaxed);
                        port.remove_edge(index);
                        continue;
                    }
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
        Poll::Ready(())
    }

    /// Whether every node reading this output has stopped.
    pub fn is_closed(&self) -> bool {
        self.port.as_ref().is_some_and(|p| p.closed)
    }

    /// Number of outputs buffered and not yet sent.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Keeps a drained input allocation to fill next, when the node's input
    /// and output item types are the same: the memory was just read by this
    /// task, so writing into it is cheaper than into a fresh allocation.
    pub(crate) fn recycle<In: 'static>(&mut self, mut drained: Vec<In>) {
        if self.spare.capacity() == 0
            && let Some(same) = (&mut drained as &mut dyn std::any::Any).downcast_mut::<Vec<T>>()
        {
            same.clear();
            self.spare = std::mem::take(same);
        }
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
            .field("closed", &self.port.as_ref().is_some_and(|p| p.closed))
            .finish()
    }
}
