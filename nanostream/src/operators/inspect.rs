//! `inspect`: looks at items as they pass.

use std::convert::Infallible;
use std::marker::PhantomData;

use crate::edge::emitter::Emitter;
use crate::node::{Node, Now};

/// A node that calls a function on every item and passes it on; see
/// [`inspect`].
pub struct Inspect<F, T> {
    f: F,
    _in: PhantomData<fn(T)>,
}

impl<F, T> std::fmt::Debug for Inspect<F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspect").field("f", &std::any::type_name::<F>()).finish()
    }
}

/// A node that calls `f` on every item, then passes the item on unchanged:
/// for logging, assertions or side counters.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::operators::inspect;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
/// let out: Vec<u32> = inspect(|x: &u32| println!("saw {x}"))
///     .apply(futures::stream::iter([1, 2]))
///     .map(Result::unwrap)
///     .collect()
///     .await;
/// assert_eq!(out, [1, 2]);
/// # }
/// ```
pub fn inspect<F, T>(f: F) -> Inspect<F, T>
where
    F: FnMut(&T) + Send + 'static,
{
    Inspect { f, _in: PhantomData }
}

impl<F, T> Node for Inspect<F, T>
where
    F: FnMut(&T) + Send + 'static,
    T: Send + 'static,
{
    type In = T;
    type Out = T;
    type Error = Infallible;

    async fn process(&mut self, item: T, out: &mut Emitter<T>) -> Result<(), Infallible> {
        (self.f)(&item);
        out.emit(item).await;
        Ok(())
    }

    #[inline]
    fn process_now(&mut self, item: T) -> Now<T, T, Infallible> {
        (self.f)(&item);
        Now::Emit(item)
    }
}
