//! Built-in sinks.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures::{SinkExt as _, Stream};
use tokio::sync::{mpsc, oneshot};

mod batched;

pub use batched::{Batch, BatchError, BatchWriter, WithDeadLetters, WriteBatch, WriteError};

use crate::edge::acks::Acks;
use crate::error::BoxError;
use crate::node::{Now, Sink};

/// What a [`for_each`] closure's future may return: `()` or
/// `Result<(), E>`.
pub trait SinkOutput {
    /// The error a failing item reports.
    type Error: Into<BoxError> + Send + 'static;
    /// Converts into a result.
    fn into_result(self) -> Result<(), Self::Error>;
}

impl SinkOutput for () {
    type Error = Infallible;
    fn into_result(self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl<E: Into<BoxError> + Send + 'static> SinkOutput for Result<(), E> {
    type Error = E;
    fn into_result(self) -> Result<(), E> {
        self
    }
}

/// What a [`for_each`] closure returns: a future (of `()` or
/// `Result<(), E>`).
#[diagnostic::on_unimplemented(
    message = "`for_each` takes a closure that returns a future, and this one returns `{Self}`",
    label = "not a future",
    note = "write `|x| async move {{ ... }}`, or use `for_each_sync` for a plain closure"
)]
pub trait ForEachFuture: Future<Output: SinkOutput> + Send {}

impl<F: Future<Output: SinkOutput> + Send> ForEachFuture for F {}

/// A sink that runs an async closure per item; see [`for_each`].
pub struct ForEach<F, T> {
    f: F,
    _in: PhantomData<fn(T)>,
}

impl<F, T> std::fmt::Debug for ForEach<F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForEach").field("f", &std::any::type_name::<F>()).finish()
    }
}

/// A sink that awaits `f(item)` for every item.
///
/// The future may return `()` or `Result<(), E>`; an `Err` fails the sink
/// (and so the pipeline, reporting the sink's name).
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let names = g.source("names", from_iter(["ada", "grace"]));
/// g.sink("greet", for_each(|name: &'static str| async move { println!("hello, {name}") }), names);
/// g.build()?.run().await
/// # }
/// ```
pub fn for_each<F, T, Fut>(f: F) -> ForEach<F, T>
where
    F: FnMut(T) -> Fut + Send + 'static,
    Fut: ForEachFuture,
{
    ForEach { f, _in: PhantomData }
}

/// A sink that calls a plain (not async) closure for every item: the
/// synchronous form of [`for_each`]. The closure may return `()` or
/// `Result<(), E>`; an `Err` fails the sink.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::sinks::for_each_sync;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let names = g.source("names", from_iter(["ada", "grace"]));
/// g.sink("greet", for_each_sync(|name: &'static str| println!("hello, {name}")), names);
/// g.build()?.run().await
/// # }
/// ```
pub fn for_each_sync<F, T, R>(f: F) -> ForEachSync<F, T>
where
    F: FnMut(T) -> R + Send + 'static,
    R: SinkOutput,
{
    ForEachSync { f, _in: PhantomData }
}

/// A sink that calls a plain closure per item; see [`for_each_sync`].
pub struct ForEachSync<F, T> {
    f: F,
    _in: PhantomData<fn(T)>,
}

impl<F, T> std::fmt::Debug for ForEachSync<F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForEachSync").field("f", &std::any::type_name::<F>()).finish()
    }
}

impl<F, T, R> Sink for ForEachSync<F, T>
where
    F: FnMut(T) -> R + Send + 'static,
    T: Send + 'static,
    R: SinkOutput,
{
    type In = T;
    type Error = R::Error;

    async fn consume(&mut self, item: T) -> Result<(), Self::Error> {
        (self.f)(item).into_result()
    }

    #[inline]
    fn consume_now(&mut self, item: T) -> Now<T, (), Self::Error> {
        match (self.f)(item).into_result() {
            Ok(()) => Now::Nothing,
            Err(error) => Now::Fail(error),
        }
    }
}

impl<F, T, Fut> Sink for ForEach<F, T>
where
    F: FnMut(T) -> Fut + Send + 'static,
    T: Send + 'static,
    Fut: Future + Send,
    Fut::Output: SinkOutput,
{
    type In = T;
    type Error = <Fut::Output as SinkOutput>::Error;

    async fn consume(&mut self, item: T) -> Result<(), Self::Error> {
        (self.f)(item).await.into_result()
    }
}

/// A sink that folds every item into one value; see [`fold`].
pub struct Fold<F, A, T> {
    f: F,
    acc: Option<A>,
    tx: Option<oneshot::Sender<A>>,
    _in: PhantomData<fn(T)>,
}

impl<F, A, T> std::fmt::Debug for Fold<F, A, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fold")
            .field("f", &std::any::type_name::<F>())
            .field("acc", &std::any::type_name::<A>())
            .finish()
    }
}

/// The value a [`fold`] sink produced; resolves when the sink finishes.
#[derive(Debug)]
pub struct FoldResult<A> {
    rx: oneshot::Receiver<A>,
}

impl<A> Future for FoldResult<A> {
    type Output = Option<A>;

    /// Resolves to `Some(value)` after the sink ran its final hook, or `None`
    /// if the pipeline failed or was aborted before that.
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<A>> {
        Pin::new(&mut self.rx).poll(cx).map(Result::ok)
    }
}

/// A sink that folds every item into an accumulator, starting from `init`,
/// and hands the final value to the returned [`FoldResult`].
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let words = g.source("words", from_iter(["to", "be", "or", "not"]));
/// let (longest, result) = fold(0usize, |best, w: &str| best.max(w.len()));
/// g.sink("longest", longest, words);
/// g.build()?.run().await?;
/// assert_eq!(result.await, Some(3));
/// # Ok(())
/// # }
/// ```
pub fn fold<F, A, T>(init: A, f: F) -> (Fold<F, A, T>, FoldResult<A>)
where
    F: FnMut(A, T) -> A + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    (Fold { f, acc: Some(init), tx: Some(tx), _in: PhantomData }, FoldResult { rx })
}

impl<F, A, T> Sink for Fold<F, A, T>
where
    F: FnMut(A, T) -> A + Send + 'static,
    A: Send + 'static,
    T: Send + 'static,
{
    type In = T;
    type Error = Infallible;

    async fn consume(&mut self, item: T) -> Result<(), Infallible> {
        if let Now::Fail(never) = self.consume_now(item) {
            match never {}
        }
        Ok(())
    }

    #[inline]
    fn consume_now(&mut self, item: T) -> Now<T, (), Infallible> {
        if let Some(acc) = self.acc.take() {
            self.acc = Some((self.f)(acc, item));
        }
        Now::Nothing
    }

    async fn finish(&mut self) -> Result<(), Infallible> {
        if let (Some(acc), Some(tx)) = (self.acc.take(), self.tx.take()) {
            // The receiver may have been dropped: nobody wants the value.
            let _ = tx.send(acc);
        }
        Ok(())
    }
}

/// A sink that forwards into a [`futures::Sink`]; see [`into_sink`].
pub struct IntoSink<S, T> {
    sink: S,
    /// Acknowledgements of the chunk being fed.
    current: Acks,
    /// Acknowledgements of earlier chunks, fed but not yet flushed.
    unflushed: Acks,
    /// Items fed since the last flush.
    fed: usize,
    _in: PhantomData<fn(T)>,
}

/// Most items an [`IntoSink`] feeds before it flushes its sink, so that the
/// acknowledgements it keeps until a flush stay few.
const FLUSH_EVERY: usize = 1 << 16;

impl<S, T> std::fmt::Debug for IntoSink<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntoSink").field("sink", &std::any::type_name::<S>()).finish()
    }
}

/// A sink that feeds every item into a [`futures::Sink`].
///
/// Items are fed without flushing each one; the sink is flushed whenever no
/// more input is ready (and at least every 65,536 items), and closed at the
/// end of input. An item counts as done (see [`Acks`]) only once a flush or
/// the close that follows it succeeded. An error from the sink fails the
/// node.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::sinks::into_sink;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let (tx, rx) = futures::channel::mpsc::channel::<u8>(16);
/// let mut g = Topology::builder();
/// let bytes = g.source("bytes", from_iter([1u8, 2, 3]));
/// g.sink("forward", into_sink(tx), bytes);
/// g.build()?.run().await?;
/// use futures::StreamExt;
/// assert_eq!(rx.collect::<Vec<_>>().await, [1, 2, 3]);
/// # Ok(())
/// # }
/// ```
pub fn into_sink<S, T>(sink: S) -> IntoSink<S, T>
where
    S: futures::Sink<T> + Unpin + Send + 'static,
{
    IntoSink { sink, current: Acks::default(), unflushed: Acks::default(), fed: 0, _in: PhantomData }
}

impl<S, T> Sink for IntoSink<S, T>
where
    S: futures::Sink<T> + Unpin + Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    T: Send + 'static,
{
    type In = T;
    type Error = S::Error;

    fn hold(&mut self, acks: Acks) -> Acks {
        // The previous chunk has been fed in full; it is done once flushed.
        let fed = std::mem::replace(&mut self.current, acks);
        self.unflushed.merge(fed);
        Acks::default()
    }

    async fn consume(&mut self, item: T) -> Result<(), S::Error> {
        self.sink.feed(item).await?;
        self.fed += 1;
        if self.fed >= FLUSH_EVERY {
            self.sink.flush().await?;
            self.fed = 0;
            // Earlier chunks are fed in full and flushed: done. The current
            // chunk is not fed in full yet: keep its guards.
            std::mem::take(&mut self.unflushed).release();
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), S::Error> {
        self.sink.flush().await?;
        self.fed = 0;
        // Called when no input is ready, so the current chunk is fed in full.
        std::mem::take(&mut self.unflushed).release();
        std::mem::take(&mut self.current).release();
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), S::Error> {
        self.sink.close().await?;
        std::mem::take(&mut self.unflushed).release();
        std::mem::take(&mut self.current).release();
        Ok(())
    }
}

/// A sink that hands items to an [`OutputStream`]; see [`into_stream`].
#[derive(Debug)]
pub struct IntoStream<T> {
    tx: Option<mpsc::Sender<T>>,
}

/// The items an [`into_stream`] sink received, as a [`Stream`].
///
/// The stream ends when the sink finishes (or the pipeline stops).
#[derive(Debug)]
pub struct OutputStream<T> {
    rx: mpsc::Receiver<T>,
}

impl<T> Stream for OutputStream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<T>> {
        self.rx.poll_recv(cx)
    }
}

/// A sink whose items the caller reads as a [`Stream`].
///
/// At most `capacity` items wait in the stream: a reader that falls behind
/// slows the pipeline down (back-pressure) rather than letting memory grow.
/// If the stream is dropped, the sink discards further items.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use futures::StreamExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let nums = g.source("nums", from_iter(1..=3u32));
/// let squares = g.node("square", map(|x: u32| x * x), nums);
/// let (sink, results) = into_stream(16);
/// g.sink("results", sink, squares);
/// let running = g.build()?.start();
/// assert_eq!(results.collect::<Vec<_>>().await, [1, 4, 9]);
/// running.join().await
/// # }
/// ```
pub fn into_stream<T>(capacity: usize) -> (IntoStream<T>, OutputStream<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (IntoStream { tx: Some(tx) }, OutputStream { rx })
}

impl<T: Send + 'static> Sink for IntoStream<T> {
    type In = T;
    type Error = Infallible;

    async fn consume(&mut self, item: T) -> Result<(), Infallible> {
        if let Some(tx) = &self.tx
            && tx.send(item).await.is_err()
        {
            // The reader went away; it asked for no more items.
            self.tx = None;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), Infallible> {
        self.tx = None;
        Ok(())
    }
}
