//! How an output reaches its readers: every reader gets every item
//! (broadcast), chunks go to each reader in turn (round robin), or each item
//! goes to the reader its key picks (partition).

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio_util::sync::CancellationToken;

use crate::edge::acks::Acks;
use crate::edge::buffer::Buffer;
use crate::edge::channel::{Chunk, ChunkCloner, EdgeSender, Sent};
use crate::runtime::stats::NodeStats;
use crate::time::Mark;

/// How an output spreads its items over its readers.
pub(crate) enum Policy<T> {
    /// Every reader gets every item.
    Broadcast,
    /// Whole chunks go to the readers in turn.
    RoundRobin,
    /// Each item goes to the reader `hash(key) % readers`.
    Partition(Arc<dyn Fn(&T) -> u64 + Send + Sync>),
}

impl<T> Policy<T> {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Policy::Broadcast => "broadcast",
            Policy::RoundRobin => "round-robin",
            Policy::Partition(_) => "partition",
        }
    }
}

impl<T> Clone for Policy<T> {
    fn clone(&self) -> Self {
        match self {
            Policy::Broadcast => Policy::Broadcast,
            Policy::RoundRobin => Policy::RoundRobin,
            Policy::Partition(key) => Policy::Partition(key.clone()),
        }
    }
}

pub(crate) struct Port<T> {
    edges: Vec<EdgeSender<T>>,
    cloner: Option<ChunkCloner<T>>,
    policy: Policy<T>,
    /// Broadcast: edges that already hold a copy of the chunk being sent, so
    /// an interrupted flush resumes without sending duplicates.
    sent_upto: usize,
    /// Broadcast: how many buffered items the chunk being sent holds.
    in_flight: usize,
    /// Round robin: the edge that gets the next chunk.
    next: usize,
    /// Partition: the chunk split per edge, while it is being sent.
    pub(crate) parts: Vec<Chunk<T>>,
    open_edges: usize,
    closed_token: CancellationToken,
    pub(crate) stats: Arc<NodeStats>,
}

impl<T> Port<T> {
    pub(crate) fn new(
        edges: Vec<EdgeSender<T>>,
        cloner: Option<ChunkCloner<T>>,
        policy: Policy<T>,
        closed_token: CancellationToken,
        stats: Arc<NodeStats>,
    ) -> Self {
        let open_edges = edges.len();
        Self {
            edges,
            cloner,
            policy,
            sent_upto: 0,
            in_flight: 0,
            next: 0,
            parts: Vec::new(),
            open_edges,
            closed_token,
            stats,
        }
    }

    pub(crate) fn chunk_limit(&self) -> usize {
        self.edges.iter().map(|e| e.chunk_limit).min().unwrap_or(usize::MAX)
    }

    /// Marks an edge closed; returns whether every edge is (and then says
    /// so through the port's token).
    fn close_edge(&mut self, index: usize) -> bool {
        let edge = &mut self.edges[index];
        if !edge.closed {
            edge.closed = true;
            self.open_edges -= 1;
        }
        if self.open_edges == 0 {
            self.closed_token.cancel();
        }
        self.open_edges == 0
    }
}

/// What sending one chunk to a port's readers did.
pub(crate) enum Delivery {
    Sent(usize),
    /// Every reader is gone.
    Closed,
}

impl<T: Send + 'static> Port<T> {
    /// Sends the first chunk of `buffer` to the readers, as the policy says.
    pub(crate) fn poll_send_chunk(
        &mut self,
        buffer: &mut Buffer<T>,
        limit: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Delivery> {
        let sent = match &self.policy {
            Policy::Broadcast => {
                if self.sent_upto == 0 {
                    self.in_flight = buffer.items.len().min(limit);
                }
                let n = self.in_flight;
                let mut taken = false;
                while self.sent_upto < self.edges.len() {
                    let index = self.sent_upto;
                    if !self.edges[index].closed {
                        // The last open reader takes the items themselves; the
                        // others get copies.
                        let last = self.edges[index + 1..].iter().all(|e| e.closed);
                        let cloner = self.cloner;
                        let sent = self.edges[index].poll_send(cx, || {
                            if last {
                                // Taken out of the buffer even if the reader
                                // turns out to be gone.
                                taken = true;
                                buffer.take_front(n)
                            } else {
                                let Some(clone) = cloner else { unreachable_clone() };
                                buffer.clone_front(n, clone)
                            }
                        });
                        match sent {
                            Sent::Pending => return Poll::Pending,
                            Sent::Closed => {
                                if self.close_edge(index) {
                                    return Poll::Ready(Delivery::Closed);
                                }
                            }
                            Sent::Done => {}
                        }
                    }
                    self.sent_upto += 1;
                }
                self.sent_upto = 0;
                if !taken {
                    // The reader that was to take the items had stopped: the
                    // others have copies, and its share is not done.
                    drop(buffer.take_front(n));
                }
                n
            }
            Policy::RoundRobin => {
                let n = buffer.items.len().min(limit);
                loop {
                    let index = self.next % self.edges.len();
                    if self.edges[index].closed {
                        self.next += 1;
                        continue;
                    }
                    match self.edges[index].poll_send(cx, || buffer.take_front(n)) {
                        Sent::Pending => return Poll::Pending,
                        Sent::Closed => {
                            if self.close_edge(index) {
                                return Poll::Ready(Delivery::Closed);
                            }
                        }
                        Sent::Done => {
                            self.next += 1;
                            break n;
                        }
                    }
                }
            }
            Policy::Partition(key) => {
                if self.parts.is_empty() {
                    let n = buffer.items.len().min(limit);
                    let Chunk { items, acks, mark } = buffer.take_front(n);
                    let readers = self.edges.len();
                    // Split once and keep the parts in the port, so that an
                    // interrupted flush resumes where it stopped.
                    let mut parts: Vec<Chunk<T>> = (0..readers)
                        .map(|_| Chunk { items: Vec::with_capacity(n / readers + 1), acks: Acks::default(), mark })
                        .collect();
                    for item in items {
                        let slot = (key(&item) % readers as u64) as usize;
                        parts[slot].items.push(item);
                    }
                    for part in &mut parts {
                        if !part.items.is_empty() {
                            part.acks.extend_from(&acks);
                        }
                    }
                    // Every part with items carries a copy.
                    acks.release();
                    self.parts = parts;
                }
                let mut sent = 0;
                for index in 0..self.parts.len() {
                    if self.parts[index].items.is_empty() || self.edges[index].closed {
                        continue;
                    }
                    let part = &mut self.parts[index];
                    let len = part.items.len();
                    let mark = part.mark;
                    let empty = || Chunk::marker(mark);
                    match self.edges[index].poll_send(cx, || std::mem::replace(part, empty())) {
                        Sent::Pending => return Poll::Pending,
                        Sent::Closed => {
                            if self.close_edge(index) {
                                self.parts.clear();
                                return Poll::Ready(Delivery::Closed);
                            }
                        }
                        Sent::Done => sent += len,
                    }
                }
                // A part for a reader that has stopped is dropped: abandoned.
                self.parts.clear();
                sent
            }
        };
        Poll::Ready(Delivery::Sent(sent))
    }
}

impl<T: Send + 'static> Port<T> {
    /// Sends `mark` on every open edge that has not had it yet, in a chunk
    /// without items: only once nothing is buffered, so that the mark comes
    /// after every item emitted before it.
    pub(crate) fn poll_send_marks(&mut self, mark: Mark, cx: &mut Context<'_>) -> Poll<Delivery> {
        for index in 0..self.edges.len() {
            let edge = &mut self.edges[index];
            if edge.closed || edge.sent_mark == mark {
                continue;
            }
            match edge.poll_send(cx, || Chunk::marker(mark)) {
                Sent::Pending => return Poll::Pending,
                Sent::Closed => {
                    if self.close_edge(index) {
                        return Poll::Ready(Delivery::Closed);
                    }
                }
                Sent::Done => {}
            }
        }
        Poll::Ready(Delivery::Sent(0))
    }
}

#[cold]
fn unreachable_clone() -> ! {
    // A port only gets a second reader through `&Output<T>`, which requires
    // `T: Clone` and registers the clone function.
    unreachable!("nanostream: broadcast to several readers without a clone function")
}
