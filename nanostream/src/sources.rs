//! Built-in sources.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::Poll;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::edge::emitter::Emitter;
use crate::node::{Context, Source};

/// A source that emits every item of an iterator; see [`from_iter`].
pub struct FromIter<I> {
    iter: I,
}

impl<I> std::fmt::Debug for FromIter<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromIter").field("iter", &std::any::type_name::<I>()).finish()
    }
}

/// A source that emits every item of `iter`, then finishes.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let nums = g.source("nums", from_iter(1..=4u32));
/// let (sum, total) = fold(0, |a, x: u32| a + x);
/// g.sink("sum", sum, nums);
/// g.build()?.run().await?;
/// assert_eq!(total.await, Some(10));
/// # Ok(())
/// # }
/// ```
pub fn from_iter<I>(iter: I) -> FromIter<I::IntoIter>
where
    I: IntoIterator,
{
    FromIter { iter: iter.into_iter() }
}

impl<I> Source for FromIter<I>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
{
    type Out = I::Item;
    type Error = Infallible;

    async fn run(&mut self, out: &mut Emitter<I::Item>) -> Result<(), Infallible> {
        loop {
            // Fill a chunk without awaiting, then send it.
            let iter = &mut self.iter;
            let full = out.with_buffer(|buf, limit| {
                buf.extend(iter.take(limit.saturating_sub(buf.len())));
                buf.len() >= limit
            });
            if !full {
                return Ok(());
            }
            out.flush_or_park().await;
        }
    }
}

/// How far filling a chunk got without waiting.
enum Fill {
    Full,
    Waiting,
    End,
}

/// A source that emits the items of a stream; see [`from_stream`].
pub struct FromStream<S> {
    stream: Pin<Box<S>>,
}

impl<S> std::fmt::Debug for FromStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromStream").field("stream", &std::any::type_name::<S>()).finish()
    }
}

/// A source that emits every item of a [`Stream`], then finishes.
///
/// Items are sent downstream in chunks while the stream has them ready; as
/// soon as the stream would wait, what was gathered is sent, so a slow stream
/// gets per-item latency and a fast one gets full chunks.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::sources::from_stream;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let lines = futures::stream::iter(["GET /", "POST /login"].map(String::from));
/// let mut g = Topology::builder();
/// let lines = g.source("lines", from_stream(lines));
/// g.sink("print", for_each(|l: String| async move { println!("{l}") }), lines);
/// g.build()?.run().await
/// # }
/// ```
pub fn from_stream<S>(stream: S) -> FromStream<S>
where
    S: Stream,
{
    FromStream { stream: Box::pin(stream) }
}

impl<S> Source for FromStream<S>
where
    S: Stream + Send + 'static,
    S::Item: Send + 'static,
{
    type Out = S::Item;
    type Error = Infallible;

    async fn run(&mut self, out: &mut Emitter<S::Item>) -> Result<(), Infallible> {
        loop {
            // Take what the stream has ready, up to a chunk, without waiting.
            let stream = &mut self.stream;
            let fill = std::future::poll_fn(|cx| {
                Poll::Ready(out.with_buffer(|buf, limit| {
                    while buf.len() < limit {
                        match stream.as_mut().poll_next(cx) {
                            Poll::Ready(Some(item)) => buf.push(item),
                            Poll::Ready(None) => return Fill::End,
                            Poll::Pending => return Fill::Waiting,
                        }
                    }
                    Fill::Full
                }))
            })
            .await;
            match fill {
                Fill::Full => out.flush_or_park().await,
                Fill::End => return Ok(()),
                // The runtime sends what is buffered while the stream waits.
                Fill::Waiting => match self.stream.next().await {
                    Some(item) => out.emit(item).await,
                    None => return Ok(()),
                },
            }
        }
    }
}

/// A source fed through a channel by code outside the pipeline; see
/// [`from_channel`].
#[derive(Debug)]
pub struct FromChannel<T> {
    rx: mpsc::Receiver<T>,
    ctx: Option<Context>,
}

/// A source fed by the returned [`mpsc::Sender`]: the way to inject items
/// into a running pipeline from other async code.
///
/// Returns the source and its sender, in that order, as every constructor
/// that returns a node and a handle on it does (`fold`, `into_stream`,
/// `count`).
///
/// The source finishes when every sender has been dropped. On graceful
/// shutdown it stops accepting new items (sends fail from then on), emits
/// what was already accepted, and finishes: nothing that `send` accepted is
/// lost. `capacity` bounds the channel, so a slow pipeline makes `send` wait.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::sources::from_channel;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let (orders, tx) = from_channel::<u32>(16);
/// let mut g = Topology::builder();
/// let orders = g.source("orders", orders);
/// let (sum, total) = fold(0, |a, x: u32| a + x);
/// g.sink("sum", sum, orders);
/// let running = g.build()?.start();
///
/// for order in [5, 10, 20] {
///     tx.send(order).await.expect("pipeline accepts orders");
/// }
/// drop(tx); // no more orders: the source finishes
/// running.join().await?;
/// assert_eq!(total.await, Some(35));
/// # Ok(())
/// # }
/// ```
pub fn from_channel<T>(capacity: usize) -> (FromChannel<T>, mpsc::Sender<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (FromChannel { rx, ctx: None }, tx)
}

impl<T: Send + 'static> Source for FromChannel<T> {
    type Out = T;
    type Error = Infallible;

    async fn setup(&mut self, ctx: &Context) -> Result<(), Infallible> {
        self.ctx = Some(ctx.clone());
        Ok(())
    }

    async fn run(&mut self, out: &mut Emitter<T>) -> Result<(), Infallible> {
        let mut closing = false;
        loop {
            if !closing && self.ctx.as_ref().is_some_and(Context::is_shutdown_requested) {
                // Refuse new items, then drain the accepted ones.
                closing = true;
                self.rx.close();
            }
            // Take what is ready, up to a chunk, without waiting.
            let rx = &mut self.rx;
            let fill = out.with_buffer(|buf, limit| {
                while buf.len() < limit {
                    match rx.try_recv() {
                        Ok(item) => buf.push(item),
                        Err(mpsc::error::TryRecvError::Disconnected) => return Fill::End,
                        Err(mpsc::error::TryRecvError::Empty) => return Fill::Waiting,
                    }
                }
                Fill::Full
            });
            let item = match fill {
                Fill::Full => {
                    out.flush_or_park().await;
                    continue;
                }
                Fill::End => break,
                Fill::Waiting => {
                    // The runtime sends what is buffered while this waits.
                    let shutdown = async {
                        match &self.ctx {
                            Some(ctx) => ctx.shutdown_requested().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        biased;
                        item = self.rx.recv() => match item {
                            Some(item) => item,
                            None => break,
                        },
                        () = shutdown, if !closing => continue,
                    }
                }
            };
            out.emit(item).await;
        }
        Ok(())
    }

    fn cooperative_shutdown(&self) -> bool {
        true
    }
}

/// The sending half of a second output of a node (dead letters, late
/// items): each item travels with the acknowledgements it owes, and is done
/// once delivered from there.
pub(crate) struct SideSender<T> {
    tx: mpsc::Sender<(T, crate::acks::Acks)>,
}

impl<T> Clone for SideSender<T> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

impl<T: Send + 'static> SideSender<T> {
    /// Sends `item`; waits while the second output is full. If nothing
    /// reads it any more (the pipeline is stopping), the item is dropped and
    /// what it owes is abandoned.
    pub(crate) async fn send(&self, item: T, acks: crate::acks::Acks, node: &str) {
        if self.tx.send((item, acks)).await.is_err() {
            tracing::debug!(node = %node, "second output closed; the pipeline is stopping");
        }
    }
}

/// The source that emits what a node sends to its second output.
pub(crate) struct SideSource<T> {
    rx: mpsc::Receiver<(T, crate::acks::Acks)>,
}

/// A second output of a node, holding at most `capacity` items.
pub(crate) fn side_output<T>(capacity: usize) -> (SideSender<T>, SideSource<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (SideSender { tx }, SideSource { rx })
}

impl<T: Send + 'static> Source for SideSource<T> {
    type Out = T;
    type Error = Infallible;

    async fn run(&mut self, out: &mut Emitter<T>) -> Result<(), Infallible> {
        loop {
            let (item, mut acks) = match self.rx.try_recv() {
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
            out.emit(item).await;
        }
    }

    /// Ends when the node ends (its sender drops), not on shutdown: an
    /// item already sent here is never dropped.
    fn cooperative_shutdown(&self) -> bool {
        true
    }
}
