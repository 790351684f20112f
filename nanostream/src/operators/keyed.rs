//! `fold_by_key` and `scan_by_key`: state per key.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::marker::PhantomData;

use crate::edge::emitter::{Emitter, Held};
use crate::node::{Node, Now};

/// Keeps a state per key and emits from it; see [`scan_by_key`].
pub struct ScanByKey<T, K, S, KF, I, F> {
    key: KF,
    init: I,
    f: F,
    states: HashMap<K, S>,
    _in: PhantomData<fn(T)>,
}

impl<T, K, S, KF, I, F> std::fmt::Debug for ScanByKey<T, K, S, KF, I, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanByKey").field("keys", &self.states.len()).finish()
    }
}

/// A stateful node keyed by `key(item)`: each key has its own state,
/// created with `init()`; `f(&mut state, item)` updates it and may emit an
/// output.
///
/// State lives in memory: after a restart it starts again from `init()`.
///
/// # Examples
///
/// Running count of events per user:
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::operators::scan_by_key;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
/// let clicks = ["ann", "bob", "ann"].map(String::from);
/// let counts = scan_by_key(
///     |user: &String| user.clone(),
///     || 0u32,
///     |n, user: String| {
///         *n += 1;
///         Some((user, *n))
///     },
/// );
/// let out: Vec<_> = counts.apply(futures::stream::iter(clicks)).map(Result::unwrap).collect().await;
/// assert_eq!(out, [("ann".into(), 1), ("bob".into(), 1), ("ann".into(), 2)]);
/// # }
/// ```
pub fn scan_by_key<T, K, S, Out, KF, I, F>(key: KF, init: I, f: F) -> ScanByKey<T, K, S, KF, I, F>
where
    KF: FnMut(&T) -> K + Send + 'static,
    I: FnMut() -> S + Send + 'static,
    F: FnMut(&mut S, T) -> Option<Out> + Send + 'static,
{
    ScanByKey { key, init, f, states: HashMap::new(), _in: PhantomData }
}

impl<T, K, S, Out, KF, I, F> Node for ScanByKey<T, K, S, KF, I, F>
where
    T: Send + 'static,
    K: Hash + Eq + Send + 'static,
    S: Send + 'static,
    Out: Send + 'static,
    KF: FnMut(&T) -> K + Send + 'static,
    I: FnMut() -> S + Send + 'static,
    F: FnMut(&mut S, T) -> Option<Out> + Send + 'static,
{
    type In = T;
    type Out = Out;
    type Error = Infallible;

    async fn process(&mut self, item: T, out: &mut Emitter<Out>) -> Result<(), Infallible> {
        if let Now::Emit(value) = self.process_now(item) {
            out.emit(value).await;
        }
        Ok(())
    }

    #[inline]
    fn process_now(&mut self, item: T) -> Now<T, Out, Infallible> {
        let state = self.states.entry((self.key)(&item)).or_insert_with(&mut self.init);
        match (self.f)(state, item) {
            Some(value) => Now::Emit(value),
            None => Now::Nothing,
        }
    }
}

/// Folds items per key and emits every key's result at the end; see
/// [`fold_by_key`].
pub struct FoldByKey<T, K, S, KF, I, F> {
    key: KF,
    init: I,
    f: F,
    states: HashMap<K, S>,
    held: Held,
    _in: PhantomData<fn(T)>,
}

impl<T, K, S, KF, I, F> std::fmt::Debug for FoldByKey<T, K, S, KF, I, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoldByKey").field("keys", &self.states.len()).finish()
    }
}

/// A node that folds every item into the state of its key, and emits
/// `(key, state)` for every key when the input ends (in no particular
/// order). For results per time period, use [`tumbling`](crate::operators::tumbling) windows.
///
/// Every input is folded into state that is only emitted at the end, so it
/// stays unacknowledged (see [`Acks`](crate::acks::Acks)) until then: on an endless
/// source such as Kafka, nothing upstream of it is committed. Use windows
/// there, which release their inputs as each window's result is sent.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::operators::fold_by_key;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
/// let sales = [("eu", 5u32), ("us", 7), ("eu", 1)];
/// let totals = fold_by_key(|s: &(&str, u32)| s.0, || 0u32, |total, s| *total += s.1);
/// let mut out: Vec<_> = totals.apply(futures::stream::iter(sales)).map(Result::unwrap).collect().await;
/// out.sort();
/// assert_eq!(out, [("eu", 6), ("us", 7)]);
/// # }
/// ```
pub fn fold_by_key<T, K, S, KF, I, F>(key: KF, init: I, f: F) -> FoldByKey<T, K, S, KF, I, F>
where
    KF: FnMut(&T) -> K + Send + 'static,
    I: FnMut() -> S + Send + 'static,
    F: FnMut(&mut S, T) + Send + 'static,
{
    FoldByKey { key, init, f, states: HashMap::new(), held: Held::default(), _in: PhantomData }
}

impl<T, K, S, KF, I, F> Node for FoldByKey<T, K, S, KF, I, F>
where
    T: Send + 'static,
    K: Hash + Eq + Send + 'static,
    S: Send + 'static,
    KF: FnMut(&T) -> K + Send + 'static,
    I: FnMut() -> S + Send + 'static,
    F: FnMut(&mut S, T) + Send + 'static,
{
    type In = T;
    type Out = (K, S);
    type Error = Infallible;

    async fn process(&mut self, item: T, out: &mut Emitter<(K, S)>) -> Result<(), Infallible> {
        out.hold(&mut self.held);
        let state = self.states.entry((self.key)(&item)).or_insert_with(&mut self.init);
        (self.f)(state, item);
        Ok(())
    }

    async fn finish(&mut self, out: &mut Emitter<(K, S)>) -> Result<(), Infallible> {
        out.adopt(&mut self.held);
        for entry in std::mem::take(&mut self.states) {
            out.emit(entry).await;
        }
        Ok(())
    }
}
