//! Nodes made from closures.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;

use crate::edge::emitter::Emitter;
use crate::node::{Node, Now};

/// Forwards every item unchanged; the body of a placeholder.
pub(crate) struct Identity<T>(pub(crate) PhantomData<fn(T) -> T>);

impl<T: Send + 'static> Node for Identity<T> {
    type In = T;
    type Out = T;
    type Error = Infallible;

    async fn process(&mut self, item: T, out: &mut Emitter<T>) -> Result<(), Infallible> {
        out.emit(item).await;
        Ok(())
    }

    #[inline]
    fn process_now(&mut self, item: T) -> Now<T, T, Infallible> {
        Now::Emit(item)
    }
}

macro_rules! closure_debug {
    ($name:ident) => {
        impl<F, In> std::fmt::Debug for $name<F, In> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).field("f", &std::any::type_name::<F>()).finish()
            }
        }
    };
}

/// A node that applies a function to every item; see [`map`].
pub struct Map<F, In> {
    f: F,
    _in: PhantomData<fn(In)>,
}
closure_debug!(Map);

/// A node that applies `f` to every item.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
/// let out: Vec<u32> = map(|x: u32| x + 1)
///     .apply(futures::stream::iter([1, 2]))
///     .map(Result::unwrap)
///     .collect()
///     .await;
/// assert_eq!(out, [2, 3]);
/// # }
/// ```
pub fn map<F, In, Out>(f: F) -> Map<F, In>
where
    F: FnMut(In) -> Out + Send + 'static,
{
    Map { f, _in: PhantomData }
}

impl<F, In, Out> Node for Map<F, In>
where
    F: FnMut(In) -> Out + Send + 'static,
    In: Send + 'static,
    Out: Send + 'static,
{
    type In = In;
    type Out = Out;
    type Error = Infallible;

    async fn process(&mut self, item: In, out: &mut Emitter<Out>) -> Result<(), Infallible> {
        out.emit((self.f)(item)).await;
        Ok(())
    }

    #[inline]
    fn process_now(&mut self, item: In) -> Now<In, Out, Infallible> {
        Now::Emit((self.f)(item))
    }
}

/// A node that keeps the items a predicate accepts; see [`filter`].
pub struct Filter<F, In> {
    f: F,
    _in: PhantomData<fn(In)>,
}
closure_debug!(Filter);

/// A node that keeps only the items for which `f` returns `true`.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
/// let out: Vec<u32> = filter(|x: &u32| x % 2 == 0)
///     .apply(futures::stream::iter(1..=6))
///     .map(Result::unwrap)
///     .collect()
///     .await;
/// assert_eq!(out, [2, 4, 6]);
/// # }
/// ```
pub fn filter<F, T>(f: F) -> Filter<F, T>
where
    F: FnMut(&T) -> bool + Send + 'static,
{
    Filter { f, _in: PhantomData }
}

impl<F, T> Node for Filter<F, T>
where
    F: FnMut(&T) -> bool + Send + 'static,
    T: Send + 'static,
{
    type In = T;
    type Out = T;
    type Error = Infallible;

    async fn process(&mut self, item: T, out: &mut Emitter<T>) -> Result<(), Infallible> {
        if (self.f)(&item) {
            out.emit(item).await;
        }
        Ok(())
    }

    #[inline]
    fn process_now(&mut self, item: T) -> Now<T, T, Infallible> {
        if (self.f)(&item) { Now::Emit(item) } else { Now::Nothing }
    }
}

/// A node that maps and filters in one step; see [`filter_map`].
pub struct FilterMap<F, In> {
    f: F,
    _in: PhantomData<fn(In)>,
}
closure_debug!(FilterMap);

/// A node that emits `x` for every item for which `f` returns `Some(x)`.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::operators::filter_map;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
/// let out: Vec<u32> = filter_map(|s: &'static str| s.parse::<u32>().ok())
///     .apply(futures::stream::iter(["1", "x", "3"]))
///     .map(Result::unwrap)
///     .collect()
///     .await;
/// assert_eq!(out, [1, 3]);
/// # }
/// ```
pub fn filter_map<F, In, Out>(f: F) -> FilterMap<F, In>
where
    F: FnMut(In) -> Option<Out> + Send + 'static,
{
    FilterMap { f, _in: PhantomData }
}

impl<F, In, Out> Node for FilterMap<F, In>
where
    F: FnMut(In) -> Option<Out> + Send + 'static,
    In: Send + 'static,
    Out: Send + 'static,
{
    type In = In;
    type Out = Out;
    type Error = Infallible;

    async fn process(&mut self, item: In, out: &mut Emitter<Out>) -> Result<(), Infallible> {
        if let Some(value) = (self.f)(item) {
            out.emit(value).await;
        }
        Ok(())
    }

    #[inline]
    fn process_now(&mut self, item: In) -> Now<In, Out, Infallible> {
        match (self.f)(item) {
            Some(value) => Now::Emit(value),
            None => Now::Nothing,
        }
    }
}

/// A node that emits every item of an iterator per input; see [`flat_map`].
pub struct FlatMap<F, In> {
    f: F,
    _in: PhantomData<fn(In)>,
}
closure_debug!(FlatMap);

/// A node that emits every element of the iterator `f` returns for an item.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::operators::flat_map;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
/// let out: Vec<char> = flat_map(|s: &'static str| s.chars().collect::<Vec<_>>())
///     .apply(futures::stream::iter(["ab", "c"]))
///     .map(Result::unwrap)
///     .collect()
///     .await;
/// assert_eq!(out, ['a', 'b', 'c']);
/// # }
/// ```
pub fn flat_map<F, In, I>(f: F) -> FlatMap<F, In>
where
    F: FnMut(In) -> I + Send + 'static,
    I: IntoIterator,
{
    FlatMap { f, _in: PhantomData }
}

impl<F, In, I> Node for FlatMap<F, In>
where
    F: FnMut(In) -> I + Send + 'static,
    In: Send + 'static,
    I: IntoIterator,
    I::IntoIter: Send,
    I::Item: Send + 'static,
{
    type In = In;
    type Out = I::Item;
    type Error = Infallible;

    async fn process(&mut self, item: In, out: &mut Emitter<I::Item>) -> Result<(), Infallible> {
        for value in (self.f)(item) {
            out.emit(value).await;
        }
        Ok(())
    }
}

/// A node that awaits a future per item; see [`then`].
pub struct Then<F, In> {
    f: F,
    _in: PhantomData<fn(In)>,
}
closure_debug!(Then);

/// A node that awaits the future `f` returns for each item and emits its
/// output: an asynchronous [`map`].
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::operators::then;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
/// let out: Vec<u64> = then(|x: u64| async move {
///         tokio::task::yield_now().await;
///         x * 10
///     })
///     .apply(futures::stream::iter([1, 2]))
///     .map(Result::unwrap)
///     .collect()
///     .await;
/// assert_eq!(out, [10, 20]);
/// # }
/// ```
pub fn then<F, In, Fut>(f: F) -> Then<F, In>
where
    F: FnMut(In) -> Fut + Send + 'static,
    Fut: Future + Send,
{
    Then { f, _in: PhantomData }
}

impl<F, In, Fut> Node for Then<F, In>
where
    F: FnMut(In) -> Fut + Send + 'static,
    In: Send + 'static,
    Fut: Future + Send,
    Fut::Output: Send + 'static,
{
    type In = In;
    type Out = Fut::Output;
    type Error = Infallible;

    async fn process(&mut self, item: In, out: &mut Emitter<Fut::Output>) -> Result<(), Infallible> {
        let value = (self.f)(item).await;
        out.emit(value).await;
        Ok(())
    }
}
