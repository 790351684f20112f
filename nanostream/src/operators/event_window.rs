//! Keyed windows on event time: tumbling, sliding and session windows,
//! closed by the watermark, with allowed lateness and a late-data output.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

use crate::edge::emitter::{Emitter, Held};
use crate::node::{Context, Node};
use crate::sources::SideSender;
use crate::time::{EventTime, Stamp, Timestamp, millis};

/// A window of event time: from `start` (included) to `end` (excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TimeWindow {
    /// The first instant in the window.
    pub start: Timestamp,
    /// The first instant after the window.
    pub end: Timestamp,
}

/// Why a window result was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Emission {
    /// The watermark passed the window's end: the first result.
    OnTime,
    /// A late item within the allowed lateness changed a window that had
    /// already been emitted: this corrected result replaces the earlier one
    /// (upsert by key and window start).
    Update,
}

/// The result of one key in one event-time window.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct WindowResult<K, A> {
    /// The key.
    pub key: K,
    /// The window.
    pub window: TimeWindow,
    /// The aggregate of the key's items in the window.
    pub value: A,
    /// First result, or a correction.
    pub emission: Emission,
}

/// Every key's result in one event-time window, emitted together (see
/// [`EventWindow::whole_windows`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct WindowBatch<K, A> {
    /// The window.
    pub window: TimeWindow,
    /// Each key with its aggregate, in no particular order.
    pub results: Vec<(K, A)>,
    /// First results, or corrections (then `results` holds every key of the
    /// window again, corrected).
    pub emission: Emission,
}

/// An item that came too late for its windows: the watermark of its input
/// had passed the end of every window it belongs to by more than the
/// allowed lateness.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Late<T> {
    /// The item.
    pub item: T,
    /// Its event time, and the watermark it was judged by.
    pub stamp: Stamp,
    /// The node it was late for.
    pub node: String,
}

/// An item too late for its windows, on a window without a late output
/// (see [`TopologyBuilder::window`](crate::TopologyBuilder::window)): the
/// node's error policy decides (skip it, dead-letter it, or stop).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WindowError {
    /// The item's time function returned `None`.
    #[error("the item has no usable event time")]
    NoEventTime,
    /// The item came after its windows were closed for good.
    #[error("item at {time} is too late: the watermark {watermark} passed its windows and their allowed lateness")]
    TooLate {
        /// The item's event time.
        time: Timestamp,
        /// The watermark it was judged by.
        watermark: Timestamp,
    },
}

/// Where a window or join sends its late items, and by what it judges
/// them.
pub(crate) struct LateRoute<T> {
    to: Option<SideSender<Late<T>>>,
    node: String,
}

impl<T> LateRoute<T> {
    pub(crate) fn new() -> Self {
        Self { to: None, node: String::new() }
    }

    pub(crate) fn set_node(&mut self, ctx: &Context) {
        self.node = ctx.name().to_owned();
    }

    pub(crate) fn route_to(&mut self, to: LateSender<T>) {
        self.to = Some(to.0);
    }
}

impl<T: Send + 'static> LateRoute<T> {
    /// The watermark an item is judged by: its own input's when it was
    /// read, if known (the same whatever the interleaving with other
    /// inputs and the chunking), else the node's.
    pub(crate) fn judge(stamp: Stamp, watermark: Timestamp) -> Timestamp {
        if stamp.watermark == Timestamp::MIN { watermark } else { stamp.watermark }
    }

    /// Sends a late item to the late output, owing the acknowledgements of
    /// the input being processed; without one, the item is an error for
    /// the node's policy.
    pub(crate) async fn send<O>(
        &self,
        item: T,
        time: Timestamp,
        watermark: Timestamp,
        out: &Emitter<O>,
    ) -> Result<(), WindowError> {
        match &self.to {
            Some(to) => {
                let stamp = Stamp { time, watermark };
                to.send(Late { item, stamp, node: self.node.clone() }, out.current_acks(), &self.node).await;
                Ok(())
            }
            None => Err(WindowError::TooLate { time, watermark }),
        }
    }
}

/// Which windows; see [`Windows::tumbling`], [`Windows::sliding`] and
/// [`Windows::session`].
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    kind: Kind,
    lateness: i64,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Windows of `size` starting every `slide` (tumbling when equal),
    /// aligned to the epoch; milliseconds.
    Fixed { size: i64, slide: i64 },
    /// Per key, items less than `gap` apart; milliseconds.
    Session { gap: i64 },
}

impl Windows {
    /// Consecutive windows of `size`, aligned to the epoch (one-minute
    /// windows start on the minute).
    pub fn tumbling(size: Duration) -> Self {
        Self::sliding(size, size)
    }

    /// Windows of `size` starting every `slide`, aligned to the epoch: each
    /// item counts in `size / slide` of them. A `slide` of zero, or larger
    /// than `size`, is taken as `size`.
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        let size = millis(size).max(1);
        let slide = millis(slide);
        let slide = if slide <= 0 || slide > size { size } else { slide };
        Self { kind: Kind::Fixed { size, slide }, lateness: 0 }
    }

    /// Session windows: per key, items less than `gap` apart belong to one
    /// window, which ends `gap` after its last item. A late item may join
    /// two sessions into one; the result then carries the merged window.
    pub fn session(gap: Duration) -> Self {
        Self { kind: Kind::Session { gap: millis(gap).max(1) }, lateness: 0 }
    }

    /// How long after a window's end a late item still updates it: the
    /// window is emitted again, corrected, as an [`Emission::Update`].
    /// Later items go to the late output. Zero by default.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = millis(lateness).max(0);
        self
    }

    /// The window node: `time` reads each item's event time (a
    /// [`Timestamp`], or a [`Stamp`] such as the one
    /// [`watermarks`](crate::operators::watermarks) and the Kafka source
    /// give), `key` its key, and each key's aggregate in a window starts
    /// from `init()` and takes each item with `update(&mut aggregate,
    /// &item)`.
    ///
    /// Results come out when the watermark passes a window's end, one
    /// [`WindowResult`] per key. Add the node with
    /// [`TopologyBuilder::window`](crate::TopologyBuilder::window) to get
    /// the late items on a second output. The aggregate should not depend
    /// on the order of the items (a sum, a count, a max): items from
    /// different partitions arrive in an order that varies from run to run.
    ///
    /// # Examples
    ///
    /// Sums per key in 10-second windows, from events that arrive out of
    /// order:
    ///
    /// ```
    /// use nanostream::prelude::*;
    /// use nanostream::operators::{watermarks, Windows};
    /// use nanostream::time::{Timed, Timestamp};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nanostream::Error> {
    /// // (key, event time in ms, value)
    /// let events = [("a", 1_000, 1), ("b", 4_000, 2), ("a", 12_000, 3), ("a", 9_000, 4)];
    /// let mut g = Topology::builder();
    /// let events = g.source("events", from_iter(events));
    /// let timed = g.node(
    ///     "timed",
    ///     watermarks(|e: &(&str, i64, u32)| Timestamp::from_millis(e.1), Duration::from_secs(5)),
    ///     events,
    /// );
    /// let sums = Windows::tumbling(Duration::from_secs(10)).aggregate(
    ///     |e: &Timed<(&str, i64, u32)>| e.stamp,
    ///     |e| e.item.0,
    ///     || 0,
    ///     |sum: &mut u32, e| *sum += e.item.2,
    /// );
    /// let (sums, late) = g.window("sums", sums, timed);
    /// let (sink, results) = into_stream(16);
    /// g.sink("results", sink, sums);
    /// g.sink("late", for_each(|_| async {}), late);
    /// g.build()?.run().await?;
    ///
    /// use futures::StreamExt;
    /// let mut sums: Vec<_> = results.map(|r| (r.window.start.as_millis(), r.key, r.value)).collect().await;
    /// sums.sort();
    /// // 9 s came after 12 s, but within the 5 s the watermark trails by.
    /// assert_eq!(sums, [(0, "a", 5), (0, "b", 2), (10_000, "a", 3)]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn aggregate<T, K, A, TF, R, KF, I, U>(
        self,
        time: TF,
        key: KF,
        init: I,
        update: U,
    ) -> EventWindow<T, K, A, TF, KF, I, U, PerKey>
    where
        TF: FnMut(&T) -> R + Send + 'static,
        R: EventTime,
        KF: FnMut(&T) -> K + Send + 'static,
        I: FnMut() -> A + Send + 'static,
        U: FnMut(&mut A, &T) + Send + 'static,
    {
        EventWindow {
            spec: self,
            time,
            key,
            init,
            update,
            panes: BTreeMap::new(),
            sessions: HashMap::new(),
            next_session_end: Timestamp::MAX,
            next_session_forget: Timestamp::MAX,
            watermark: Timestamp::MIN,
            late: LateRoute::new(),
            _shape: PhantomData,
        }
    }
}

/// One result per key: a [`WindowResult`] (the default).
#[derive(Debug)]
pub struct PerKey;

/// One [`WindowBatch`] per window; see [`EventWindow::whole_windows`].
#[derive(Debug)]
pub struct WholeWindow;

/// How a window's results are emitted: [`PerKey`] or [`WholeWindow`].
pub trait Shape<K, A>: Send + 'static {
    /// What the window node emits.
    type Out: Send + 'static;
    /// Whether a correction carries every key of the window.
    const WHOLE: bool;
    /// Shapes one window's results.
    fn shape(window: TimeWindow, emission: Emission, results: Vec<(K, A)>) -> Vec<Self::Out>;
}

impl<K: Send + 'static, A: Send + 'static> Shape<K, A> for PerKey {
    type Out = WindowResult<K, A>;
    const WHOLE: bool = false;

    fn shape(window: TimeWindow, emission: Emission, results: Vec<(K, A)>) -> Vec<Self::Out> {
        results.into_iter().map(|(key, value)| WindowResult { key, window, value, emission }).collect()
    }
}

impl<K: Send + 'static, A: Send + 'static> Shape<K, A> for WholeWindow {
    type Out = WindowBatch<K, A>;
    const WHOLE: bool = true;

    fn shape(window: TimeWindow, emission: Emission, results: Vec<(K, A)>) -> Vec<Self::Out> {
        vec![WindowBatch { window, results, emission }]
    }
}

/// One fixed window: every key's aggregate.
struct Pane<K, A> {
    keys: HashMap<K, A>,
    held: Held,
    emitted: bool,
}

/// One session of one key: its items, folded when it is emitted (sessions
/// merge, and aggregates need not).
struct Session<T> {
    start: Timestamp,
    /// The last item's time plus the gap.
    end: Timestamp,
    items: Vec<(Timestamp, T)>,
    held: Held,
    /// A result of it (or of a session merged into it) went out.
    emitted: bool,
    /// It changed since its last result.
    dirty: bool,
}

/// Keyed event-time windows; see [`Windows`].
pub struct EventWindow<T, K, A, TF, KF, I, U, S = PerKey> {
    spec: Windows,
    time: TF,
    key: KF,
    init: I,
    update: U,
    /// Fixed windows by (end, start): the next to close first.
    panes: BTreeMap<(Timestamp, Timestamp), Pane<K, A>>,
    sessions: HashMap<K, Vec<Session<T>>>,
    /// The earliest end of a session not emitted yet.
    next_session_end: Timestamp,
    /// The earliest time an emitted session is forgotten.
    next_session_forget: Timestamp,
    /// The input's watermark.
    watermark: Timestamp,
    late: LateRoute<T>,
    _shape: PhantomData<fn() -> S>,
}

impl<T, K, A, TF, KF, I, U, S> std::fmt::Debug for EventWindow<T, K, A, TF, KF, I, U, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventWindow")
            .field("spec", &self.spec)
            .field("open_windows", &self.panes.len())
            .field("keys_with_sessions", &self.sessions.len())
            .field("watermark", &self.watermark)
            .finish()
    }
}

impl<T, K, A, TF, KF, I, U> EventWindow<T, K, A, TF, KF, I, U, PerKey> {
    /// Emits each closed window as one [`WindowBatch`] holding every key's
    /// result, so that a sink can write a window in one transaction.
    pub fn whole_windows(self) -> EventWindow<T, K, A, TF, KF, I, U, WholeWindow> {
        EventWindow {
            spec: self.spec,
            time: self.time,
            key: self.key,
            init: self.init,
            update: self.update,
            panes: self.panes,
            sessions: self.sessions,
            next_session_end: self.next_session_end,
            next_session_forget: self.next_session_forget,
            watermark: self.watermark,
            late: self.late,
            _shape: PhantomData,
        }
    }
}

/// A node with a second output for late items:
/// [`TopologyBuilder::window`](crate::TopologyBuilder::window) wires it.
pub trait LateOutput: Node {
    /// The items that can be late.
    type Item: Send + 'static;
    #[doc(hidden)]
    fn route_late(&mut self, to: LateSender<Self::Item>);
}

/// Where a node sends its late items.
#[doc(hidden)]
pub struct LateSender<T>(pub(crate) SideSender<Late<T>>);

impl<T, K, A, TF, KF, I, U, S, R> LateOutput for EventWindow<T, K, A, TF, KF, I, U, S>
where
    Self: Node,
    T: Send + 'static,
    TF: FnMut(&T) -> R + Send + 'static,
    R: EventTime,
{
    type Item = T;

    fn route_late(&mut self, to: LateSender<T>) {
        self.late.route_to(to);
    }
}

impl<P, N> LateOutput for crate::policy::WithPolicy<P, N>
where
    Self: Node,
    N: LateOutput,
{
    type Item = N::Item;

    fn route_late(&mut self, to: LateSender<N::Item>) {
        self.inner_mut().route_late(to);
    }
}

impl<T, K, A, TF, KF, I, U, S> EventWindow<T, K, A, TF, KF, I, U, S>
where
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + 'static,
    A: Clone + Send + 'static,
    KF: FnMut(&T) -> K + Send + 'static,
    I: FnMut() -> A + Send + 'static,
    U: FnMut(&mut A, &T) + Send + 'static,
    S: Shape<K, A>,
{
    async fn emit(out: &mut Emitter<S::Out>, window: TimeWindow, emission: Emission, results: Vec<(K, A)>) {
        out.emit_all(S::shape(window, emission, results)).await;
    }

    /// Adds an item to the fixed windows it belongs to that are still kept;
    /// `Err` with the item if there is none.
    async fn add_fixed(&mut self, item: T, stamp: Stamp, judge: Timestamp, out: &mut Emitter<S::Out>) -> Result<(), T> {
        let Kind::Fixed { size, slide } = self.spec.kind else { return Err(item) };
        let t = stamp.time.as_millis();
        // Times this close to the ends of the range have no window.
        let Some(last_start) = t.div_euclid(slide).checked_mul(slide).filter(|s| s.checked_add(size).is_some()) else {
            return Err(item);
        };
        let mut added = false;
        let mut start = last_start;
        while start > t.saturating_sub(size) {
            let window = TimeWindow {
                start: Timestamp::from_millis(start),
                end: Timestamp::from_millis(start.saturating_add(size)),
            };
            start = start.saturating_sub(slide);
            let keep_until = window.end.as_millis().saturating_add(self.spec.lateness);
            if keep_until <= judge.as_millis() || keep_until <= self.watermark.as_millis() {
                continue;
            }
            added = true;
            let pane = self.panes.entry((window.end, window.start)).or_insert_with(|| Pane {
                keys: HashMap::new(),
                held: Held::default(),
                emitted: false,
            });
            out.hold(&mut pane.held);
            let key = (self.key)(&item);
            let aggregate = pane.keys.entry(key.clone()).or_insert_with(&mut self.init);
            (self.update)(aggregate, &item);
            if pane.emitted || window.end <= self.watermark {
                // Closed already: the result goes out now, owing the item (a
                // correction if the window was out, else its first).
                let emission = if pane.emitted { Emission::Update } else { Emission::OnTime };
                pane.emitted = true;
                out.adopt(&mut pane.held);
                let results = if S::WHOLE {
                    pane.keys.iter().map(|(k, a)| (k.clone(), a.clone())).collect()
                } else {
                    vec![(key, aggregate.clone())]
                };
                Self::emit(out, window, emission, results).await;
            }
        }
        if added { Ok(()) } else { Err(item) }
    }

    /// Adds an item to its key's sessions, merging those it joins; `Err`
    /// with the item if it is too late.
    async fn add_to_session(
        &mut self,
        item: T,
        stamp: Stamp,
        judge: Timestamp,
        out: &mut Emitter<S::Out>,
    ) -> Result<(), T> {
        let Kind::Session { gap } = self.spec.kind else { return Err(item) };
        let t = stamp.time;
        let end = Timestamp::from_millis(t.as_millis().saturating_add(gap));
        let keep_until = end.as_millis().saturating_add(self.spec.lateness);
        if keep_until <= judge.as_millis() || keep_until <= self.watermark.as_millis() {
            return Err(item);
        }
        let key = (self.key)(&item);
        let sessions = self.sessions.entry(key.clone()).or_default();
        let mut merged =
            Session { start: t, end, items: vec![(t, item)], held: Held::default(), emitted: false, dirty: true };
        out.hold(&mut merged.held);
        let mut i = 0;
        while i < sessions.len() {
            let s = &sessions[i];
            if s.start < merged.end && merged.start < s.end {
                let s = sessions.swap_remove(i);
                merged.start = merged.start.min(s.start);
                merged.end = merged.end.max(s.end);
                merged.items.extend(s.items);
                merged.held.merge(s.held);
                merged.emitted |= s.emitted;
                // The session grew: look again from the start.
                i = 0;
            } else {
                i += 1;
            }
        }
        let closed = merged.end <= self.watermark;
        if closed {
            // Closed already: its result goes out now (a correction if a
            // session it joined was out, else its first).
            let emission = if merged.emitted { Emission::Update } else { Emission::OnTime };
            merged.emitted = true;
            merged.dirty = false;
            out.adopt(&mut merged.held);
            let window = TimeWindow { start: merged.start, end: merged.end };
            let value = fold(&mut self.init, &mut self.update, &mut merged.items);
            Self::emit(out, window, emission, vec![(key, value)]).await;
        }
        if closed {
            self.next_session_forget = self.next_session_forget.min(self.spec.session_forget(merged.end));
        } else {
            self.next_session_end = self.next_session_end.min(merged.end);
        }
        sessions.push(merged);
        Ok(())
    }

    /// Emits what the watermark closed, and forgets what it passed by more
    /// than the allowed lateness.
    async fn close(&mut self, watermark: Timestamp, out: &mut Emitter<S::Out>) {
        self.watermark = self.watermark.max(watermark);
        let watermark = self.watermark;
        let lateness = self.spec.lateness;
        let forget = |end: Timestamp| end.as_millis().saturating_add(lateness) <= watermark.as_millis();
        let spec = self.spec;
        let session_forget = |end: Timestamp| spec.session_forget(end) <= watermark;
        // Fixed windows, by end.
        let mut due = Vec::new();
        for (&(end, start), pane) in self.panes.range_mut(..(watermark, Timestamp::MAX)) {
            if end > watermark {
                break;
            }
            if !pane.emitted {
                pane.emitted = true;
                let mut held = std::mem::take(&mut pane.held);
                let results: Vec<(K, A)> = if forget(end) {
                    pane.keys.drain().collect()
                } else {
                    pane.keys.iter().map(|(k, a)| (k.clone(), a.clone())).collect()
                };
                due.push((TimeWindow { start, end }, results, std::mem::take(&mut held)));
            }
        }
        for (window, results, mut held) in due {
            out.adopt(&mut held);
            Self::emit(out, window, Emission::OnTime, results).await;
        }
        while let Some((&(end, _), _)) = self.panes.first_key_value() {
            if !forget(end) {
                break;
            }
            self.panes.pop_first();
        }
        // Sessions, if one may have closed.
        if self.next_session_end <= watermark || self.next_session_forget <= watermark {
            let mut next = Timestamp::MAX;
            let mut next_forget = Timestamp::MAX;
            let mut due = Vec::new();
            for (key, sessions) in &mut self.sessions {
                for s in sessions.iter_mut() {
                    if s.end <= watermark && s.dirty {
                        let emission = if s.emitted { Emission::Update } else { Emission::OnTime };
                        s.emitted = true;
                        s.dirty = false;
                        let value = fold(&mut self.init, &mut self.update, &mut s.items);
                        let window = TimeWindow { start: s.start, end: s.end };
                        due.push((window, key.clone(), value, std::mem::take(&mut s.held), emission));
                    } else if s.end > watermark {
                        next = next.min(s.end);
                    }
                }
                sessions.retain(|s| !session_forget(s.end));
                for s in sessions.iter().filter(|s| s.emitted) {
                    next_forget = next_forget.min(spec.session_forget(s.end));
                }
            }
            self.sessions.retain(|_, sessions| !sessions.is_empty());
            self.next_session_end = next;
            self.next_session_forget = next_forget;
            for (window, key, value, mut held, emission) in due {
                out.adopt(&mut held);
                Self::emit(out, window, emission, vec![(key, value)]).await;
            }
        }
    }
}

impl Windows {
    /// Whether every window of an item at `t`, and its lateness, lies
    /// within the range of timestamps.
    fn representable(&self, t: Timestamp) -> bool {
        let reach = match self.kind {
            Kind::Fixed { size, slide } => size.saturating_add(slide),
            Kind::Session { gap } => gap.saturating_mul(2),
        }
        .saturating_add(self.lateness);
        let t = t.as_millis();
        t.checked_sub(reach).is_some() && t.checked_add(reach).is_some()
    }

    /// When a session ending at `end` can be forgotten: once no item that
    /// is not too late could join it any more. An item at `t` is too late
    /// once the watermark passes `t + gap + lateness`, and joins a session
    /// only if `t < end`: so `end + gap + lateness`.
    fn session_forget(&self, end: Timestamp) -> Timestamp {
        let gap = match self.kind {
            Kind::Session { gap } => gap,
            Kind::Fixed { .. } => 0,
        };
        Timestamp::from_millis(end.as_millis().saturating_add(gap).saturating_add(self.lateness))
    }
}

/// Folds a session's items in event-time order.
fn fold<T, A>(init: &mut impl FnMut() -> A, update: &mut impl FnMut(&mut A, &T), items: &mut [(Timestamp, T)]) -> A {
    items.sort_by_key(|(t, _)| *t);
    let mut value = init();
    for (_, item) in items.iter() {
        update(&mut value, item);
    }
    value
}

impl<T, K, A, TF, KF, I, U, S, R> Node for EventWindow<T, K, A, TF, KF, I, U, S>
where
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + 'static,
    A: Clone + Send + 'static,
    TF: FnMut(&T) -> R + Send + 'static,
    R: EventTime,
    KF: FnMut(&T) -> K + Send + 'static,
    I: FnMut() -> A + Send + 'static,
    U: FnMut(&mut A, &T) + Send + 'static,
    S: Shape<K, A>,
{
    type In = T;
    type Out = S::Out;
    type Error = WindowError;

    async fn setup(&mut self, ctx: &Context) -> Result<(), WindowError> {
        self.late.set_node(ctx);
        Ok(())
    }

    async fn process(&mut self, item: T, out: &mut Emitter<S::Out>) -> Result<(), WindowError> {
        let stamp = (self.time)(&item).event_time().ok_or(WindowError::NoEventTime)?;
        if !self.spec.representable(stamp.time) {
            // A time at the very ends of the range (a sentinel) has no
            // window: no usable event time.
            return Err(WindowError::NoEventTime);
        }
        let judge = LateRoute::<T>::judge(stamp, self.watermark);
        let added = match self.spec.kind {
            Kind::Fixed { .. } => self.add_fixed(item, stamp, judge, out).await,
            Kind::Session { .. } => self.add_to_session(item, stamp, judge, out).await,
        };
        let Err(item) = added else { return Ok(()) };
        self.late.send(item, stamp.time, judge.max(self.watermark), out).await
    }

    async fn on_watermark(&mut self, watermark: Timestamp, out: &mut Emitter<S::Out>) -> Result<(), WindowError> {
        self.close(watermark, out).await;
        Ok(())
    }
}
