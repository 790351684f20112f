//! `count`: a sink that counts what it consumes.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::node::{Now, Sink};

/// A handle to the number of items a [`count`] sink has consumed.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// The number of items consumed so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A sink that counts items; see [`count`].
#[derive(Debug)]
pub struct Count<T> {
    counter: Counter,
    _in: PhantomData<fn(T)>,
}

/// A sink that counts the items it consumes; the [`Counter`] can be read at
/// any time, also while the pipeline runs.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::operators::count;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let n = g.source("numbers", from_iter(0..1000u32));
/// let (sink, counter) = count();
/// g.sink("count", sink, n);
/// g.build()?.run().await?;
/// assert_eq!(counter.get(), 1000);
/// # Ok(())
/// # }
/// ```
pub fn count<T>() -> (Count<T>, Counter) {
    let counter = Counter::default();
    (Count { counter: counter.clone(), _in: PhantomData }, counter)
}

impl<T: Send + 'static> Sink for Count<T> {
    type In = T;
    type Error = Infallible;

    async fn consume(&mut self, _item: T) -> Result<(), Infallible> {
        self.counter.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    #[inline]
    fn consume_now(&mut self, _item: T) -> Now<T, (), Infallible> {
        self.counter.0.fetch_add(1, Ordering::Relaxed);
        Now::Nothing
    }
}
