//! Built-in operators: batching, windows, keyed state, rate limiting.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::emitter::{Emitter, Held};
use crate::node::{Context, Node, Now, Sink};

/// Groups items into `Vec`s; see [`batch`].
#[derive(Debug)]
pub struct Batch<T> {
    max_items: usize,
    max_wait: Duration,
    items: Vec<T>,
    /// When the first item of the open batch arrived.
    opened: Option<Instant>,
    held: Held,
}

/// A node that groups items into batches of at most `max_items`.
///
/// A batch is emitted when it is full, when `max_wait` has passed since its
/// first item arrived (the timer fires even if no further input comes), and
/// when the input ends. Batches are never empty.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let rows = g.source("rows", from_iter(1..=7u32));
/// let batches = g.node("batch", batch(3, Duration::from_secs(1)), rows);
/// let (sink, out) = into_stream(8);
/// g.sink("insert", sink, batches);
/// g.build()?.run().await?;
/// use futures::StreamExt;
/// assert_eq!(out.collect::<Vec<_>>().await, [vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
/// # Ok(())
/// # }
/// ```
pub fn batch<T>(max_items: usize, max_wait: Duration) -> Batch<T> {
    let max_items = max_items.max(1);
    Batch { max_items, max_wait, items: Vec::new(), opened: None, held: Held::default() }
}

impl<T> Batch<T> {
    async fn emit(&mut self, out: &mut Emitter<Vec<T>>)
    where
        T: Send + 'static,
    {
        self.opened = None;
        if self.items.is_empty() {
            return;
        }
        let next = Vec::with_capacity(self.max_items.min(1024));
        out.adopt(&mut self.held);
        out.emit(std::mem::replace(&mut self.items, next)).await;
    }
}

impl<T: Send + 'static> Node for Batch<T> {
    type In = T;
    type Out = Vec<T>;
    type Error = Infallible;

    async fn process(&mut self, item: T, out: &mut Emitter<Vec<T>>) -> Result<(), Infallible> {
        if self.items.is_empty() {
            self.opened = Some(Instant::now());
        }
        out.hold(&mut self.held);
        self.items.push(item);
        if self.items.len() >= self.max_items {
            self.emit(out).await;
        }
        Ok(())
    }

    fn deadline(&self) -> Option<Instant> {
        self.opened.map(|opened| opened + self.max_wait)
    }

    async fn on_timer(&mut self, out: &mut Emitter<Vec<T>>) -> Result<(), Infallible> {
        self.emit(out).await;
        Ok(())
    }

    async fn finish(&mut self, out: &mut Emitter<Vec<T>>) -> Result<(), Infallible> {
        self.emit(out).await;
        Ok(())
    }
}

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

/// Limits the rate of items; see [`throttle`].
#[derive(Debug)]
pub struct Throttle<T> {
    per_interval: u32,
    interval: Duration,
    tokens: u32,
    refill: Option<Instant>,
    _in: PhantomData<fn(T)>,
}

/// A node that passes at most `items` items per `interval`, delaying the
/// rest (it never drops items: upstream nodes slow down by back-pressure).
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let calls = g.source("calls", from_iter(0..25u32));
/// let limited = g.node("rate_limit", throttle(10, Duration::from_secs(1)), calls);
/// g.sink("call_api", for_each(|_: u32| async {}), limited);
/// let started = tokio::time::Instant::now();
/// g.build()?.run().await?;
/// // 25 items at 10 per second: the last batch of 5 goes out at t = 2 s.
/// assert_eq!(started.elapsed(), Duration::from_secs(2));
/// # Ok(())
/// # }
/// ```
pub fn throttle<T>(items: u32, interval: Duration) -> Throttle<T> {
    let items = items.max(1);
    Throttle { per_interval: items, interval, tokens: items, refill: None, _in: PhantomData }
}

impl<T: Send + 'static> Node for Throttle<T> {
    type In = T;
    type Out = T;
    type Error = Infallible;

    async fn process(&mut self, item: T, out: &mut Emitter<T>) -> Result<(), Infallible> {
        let now = Instant::now();
        let refill = *self.refill.get_or_insert(now + self.interval);
        if now >= refill {
            self.tokens = self.per_interval;
            self.refill = Some(now + self.interval);
        }
        if self.tokens == 0 {
            // Whatever was let through goes out before we wait.
            out.flush().await;
            tokio::time::sleep_until(refill).await;
            self.tokens = self.per_interval;
            self.refill = Some(refill + self.interval);
        }
        self.tokens -= 1;
        out.emit(item).await;
        Ok(())
    }
}

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
/// order). For results per time period, use [`tumbling`] windows.
///
/// Every input is folded into state that is only emitted at the end, so it
/// stays unacknowledged (see [`Acks`](crate::Acks)) until then: on an endless
/// source such as Kafka, nothing upstream of it is committed. Use windows
/// there, which release their inputs as each window's result is sent.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
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

/// The result of one key in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Windowed<K, A> {
    /// The key.
    pub key: K,
    /// When the window opened (wall clock).
    pub start: SystemTime,
    /// When the window closed (wall clock).
    pub end: SystemTime,
    /// The aggregate of the key's items in the window.
    pub value: A,
}

/// Keyed windows over processing time; see [`tumbling`] and [`sliding`].
pub struct Window<T, K, A, KF, I, U> {
    size: Duration,
    slide: Duration,
    key: KF,
    init: I,
    update: U,
    /// Window 0 starts here; set at setup, aligned to the wall clock.
    origin: Option<(Instant, SystemTime)>,
    /// Align windows to when the node starts instead of to the wall clock.
    from_start: bool,
    open: BTreeMap<i64, (HashMap<K, A>, Held)>,
    _in: PhantomData<fn(T)>,
}

impl<T, K, A, KF, I, U> std::fmt::Debug for Window<T, K, A, KF, I, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("size", &self.size)
            .field("slide", &self.slide)
            .field("open", &self.open.len())
            .finish()
    }
}

/// Keyed tumbling windows over processing time: consecutive windows of
/// `size`, aligned to the wall clock (one-minute windows start on the
/// minute). Each item is added to its key's aggregate in the current
/// window with `update(&mut aggregate, &item)`, the aggregate starting from
/// `init()`.
///
/// When a window ends, one [`Windowed`] result per key is emitted, on a
/// timer, even if no further input arrives. Open windows are emitted when
/// the input ends. Results of one window come out in no particular order.
///
/// # Examples
///
/// Page views per page per minute:
///
/// ```
/// use nanostream::prelude::*;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let views = ["/a", "/b", "/a"].map(String::from);
/// let mut g = Topology::builder();
/// let views = g.source("views", from_iter(views));
/// let per_minute = tumbling(Duration::from_secs(60), |page: &String| page.clone(), || 0u64, |n, _| *n += 1);
/// let counts = g.node("per_minute", per_minute, views);
/// let (sink, results) = into_stream(16);
/// g.sink("results", sink, counts);
/// g.build()?.run().await?;
///
/// use futures::StreamExt;
/// let mut counts: Vec<_> = results.map(|w| (w.key, w.value)).collect().await;
/// counts.sort();
/// assert_eq!(counts, [("/a".into(), 2), ("/b".into(), 1)]);
/// # Ok(())
/// # }
/// ```
pub fn tumbling<T, K, A, KF, I, U>(size: Duration, key: KF, init: I, update: U) -> Window<T, K, A, KF, I, U>
where
    KF: FnMut(&T) -> K + Send + 'static,
    I: FnMut() -> A + Send + 'static,
    U: FnMut(&mut A, &T) + Send + 'static,
{
    sliding(size, size, key, init, update)
}

/// Keyed sliding windows over processing time: windows of `size` starting
/// every `slide`, so each item counts in `size / slide` overlapping windows
/// (for example the last 5 minutes, every minute). Otherwise like
/// [`tumbling`].
///
/// A `slide` of zero is taken as `size` (tumbling windows).
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use std::time::Duration;
///
/// // Errors per service over the last 5 minutes, updated every minute.
/// let recent_errors = sliding(
///     Duration::from_secs(300),
///     Duration::from_secs(60),
///     |service: &String| service.clone(),
///     || 0u32,
///     |n, _| *n += 1,
/// );
/// # let _ = recent_errors;
/// ```
pub fn sliding<T, K, A, KF, I, U>(
    size: Duration,
    slide: Duration,
    key: KF,
    init: I,
    update: U,
) -> Window<T, K, A, KF, I, U>
where
    KF: FnMut(&T) -> K + Send + 'static,
    I: FnMut() -> A + Send + 'static,
    U: FnMut(&mut A, &T) + Send + 'static,
{
    let size = size.max(Duration::from_nanos(1));
    let slide = if slide.is_zero() { size } else { slide.min(size) };
    Window { size, slide, key, init, update, origin: None, from_start: false, open: BTreeMap::new(), _in: PhantomData }
}

impl<T, K, A, KF, I, U> Window<T, K, A, KF, I, U> {
    /// Starts the first window when the node starts, instead of aligning
    /// windows to the wall clock: windows then begin at fixed offsets from
    /// the start of the pipeline, which makes tests with paused time exact.
    pub fn aligned_to_start(mut self) -> Self {
        self.from_start = true;
        self
    }

    fn origin(&mut self) -> (Instant, SystemTime) {
        *self.origin.get_or_insert_with(|| {
            let now = Instant::now();
            let wall = SystemTime::now();
            if self.from_start {
                return (now, wall);
            }
            // Align window starts to multiples of `slide` since the epoch.
            let since_epoch = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
            let offset = Duration::from_nanos((since_epoch.as_nanos() % self.slide.as_nanos()) as u64);
            match (now.checked_sub(offset), wall.checked_sub(offset)) {
                (Some(start), Some(wall_start)) => (start, wall_start),
                _ => (now, wall),
            }
        })
    }

    /// Offset of window `index`'s start from the origin.
    fn start_offset(&self, index: i64) -> i128 {
        i128::from(index) * self.slide.as_nanos() as i128
    }

    fn end_instant(&self, index: i64) -> Option<Instant> {
        let (origin, _) = self.origin?;
        let end = self.start_offset(index) + self.size.as_nanos() as i128;
        Some(origin + Duration::from_nanos(end.max(0) as u64))
    }

    fn wall(&self, offset: i128) -> SystemTime {
        let (_, wall) = self.origin.unwrap_or((Instant::now(), UNIX_EPOCH));
        if offset >= 0 {
            wall + Duration::from_nanos(offset as u64)
        } else {
            wall.checked_sub(Duration::from_nanos(offset.unsigned_abs() as u64)).unwrap_or(wall)
        }
    }

    /// Emits and forgets every window for which `close` says so.
    async fn close(&mut self, out: &mut Emitter<Windowed<K, A>>, all: bool)
    where
        K: Send + 'static,
        A: Send + 'static,
    {
        let now = Instant::now();
        while let Some((&index, _)) = self.open.first_key_value() {
            if !all && self.end_instant(index).is_some_and(|end| end > now) {
                break;
            }
            let Some((_, (keys, mut held))) = self.open.pop_first() else { break };
            let start = self.wall(self.start_offset(index));
            let end = self.wall(self.start_offset(index) + self.size.as_nanos() as i128);
            out.adopt(&mut held);
            for (key, value) in keys {
                out.emit(Windowed { key, start, end, value }).await;
            }
        }
    }
}

impl<T, K, A, KF, I, U> Node for Window<T, K, A, KF, I, U>
where
    T: Send + 'static,
    K: Hash + Eq + Send + 'static,
    A: Send + 'static,
    KF: FnMut(&T) -> K + Send + 'static,
    I: FnMut() -> A + Send + 'static,
    U: FnMut(&mut A, &T) + Send + 'static,
{
    type In = T;
    type Out = Windowed<K, A>;
    type Error = Infallible;

    async fn setup(&mut self, _ctx: &Context) -> Result<(), Infallible> {
        self.origin();
        Ok(())
    }

    async fn process(&mut self, item: T, out: &mut Emitter<Windowed<K, A>>) -> Result<(), Infallible> {
        let (origin, _) = self.origin();
        let at = Instant::now().saturating_duration_since(origin).as_nanos() as i128;
        let slide = self.slide.as_nanos() as i128;
        let size = self.size.as_nanos() as i128;
        // Windows [w * slide, w * slide + size) that contain `at`.
        let last = at.div_euclid(slide);
        let first = (at - size).div_euclid(slide) + 1;
        for index in first..=last {
            let (keys, held) = self.open.entry(index as i64).or_insert_with(|| (HashMap::new(), Held::default()));
            out.hold(held);
            // The key is computed per window (usually one), so it need not
            // be `Clone`.
            let aggregate = keys.entry((self.key)(&item)).or_insert_with(&mut self.init);
            (self.update)(aggregate, &item);
        }
        Ok(())
    }

    fn deadline(&self) -> Option<Instant> {
        self.open.first_key_value().and_then(|(&index, _)| self.end_instant(index))
    }

    async fn on_timer(&mut self, out: &mut Emitter<Windowed<K, A>>) -> Result<(), Infallible> {
        self.close(out, false).await;
        Ok(())
    }

    async fn finish(&mut self, out: &mut Emitter<Windowed<K, A>>) -> Result<(), Infallible> {
        self.close(out, true).await;
        Ok(())
    }
}
