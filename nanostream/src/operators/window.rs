//! `tumbling` and `sliding`: keyed windows on processing time.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::hash::Hash;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::edge::emitter::{Emitter, Held};
use crate::node::{Context, Node};

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
    /// Emitted before the window's end, because the input ended: the
    /// aggregate covers only part of the window's time (`end` is then when
    /// the window would have closed).
    pub partial: bool,
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
/// the input ends, marked [`partial`](Windowed::partial). Results of one
/// window come out in no particular order. For windows on the time the
/// events happened, closed by watermarks, see
/// [`Windows`](crate::operators::Windows).
///
/// # Examples
///
/// Page views per page per minute:
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::operators::tumbling;
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
/// use nanostream::operators::sliding;
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
            let partial = self.end_instant(index).is_some_and(|end| end > now);
            out.adopt(&mut held);
            for (key, value) in keys {
                out.emit(Windowed { key, start, end, value, partial }).await;
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
