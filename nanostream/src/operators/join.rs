//! Interval joins: two keyed streams joined on event time, their state
//! bounded by the watermark.

use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

use crate::edge::emitter::{Emitter, Held};
use crate::node::{Context, Node};
use crate::operators::event_window::{LateOutput, LateRoute, LateSender, WindowError};
use crate::time::{EventTime, Stamp, Timestamp, millis};

/// An item of either input of a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side<L, R> {
    /// From the left input.
    Left(L),
    /// From the right input.
    Right(R),
}

/// How far apart in event time two items may be to join; see
/// [`IntervalJoin::between`].
#[derive(Debug, Clone, Copy)]
pub struct JoinSpec {
    before: i64,
    after: i64,
}

/// The left input of a join being built: its time and key.
#[derive(Debug)]
pub struct LeftSpec<L, LT, LK> {
    spec: JoinSpec,
    time: LT,
    key: LK,
    _l: PhantomData<fn(L)>,
}

/// An inner join: emits `(left, right)` for every match.
#[derive(Debug)]
pub struct Inner;

/// A left outer join: also emits `(left, None)` for a left item that
/// matched nothing once the watermark has passed its interval.
#[derive(Debug)]
pub struct LeftOuter;

/// What a join emits; [`Inner`] or [`LeftOuter`].
pub trait JoinMode<L, R>: Send + 'static {
    /// The items the join emits.
    type Out: Send + 'static;
    /// A match.
    fn pair(left: L, right: R) -> Self::Out;
    /// A left item that matched nothing, if the mode emits it.
    fn unmatched(left: L) -> Option<Self::Out>;
}

impl<L: Send + 'static, R: Send + 'static> JoinMode<L, R> for Inner {
    type Out = (L, R);

    fn pair(left: L, right: R) -> (L, R) {
        (left, right)
    }

    fn unmatched(_: L) -> Option<(L, R)> {
        None
    }
}

impl<L: Send + 'static, R: Send + 'static> JoinMode<L, R> for LeftOuter {
    type Out = (L, Option<R>);

    fn pair(left: L, right: R) -> (L, Option<R>) {
        (left, Some(right))
    }

    fn unmatched(left: L) -> Option<(L, Option<R>)> {
        Some((left, None))
    }
}

/// An item kept for matches still to come.
struct Kept<T> {
    item: T,
    time: Timestamp,
    held: Held,
    matched: bool,
}

/// Two keyed streams joined on event time; see [`IntervalJoin::between`].
pub struct IntervalJoin<L, R, K, LT, LK, RT, RK, M = Inner> {
    spec: JoinSpec,
    left_time: LT,
    left_key: LK,
    right_time: RT,
    right_key: RK,
    lefts: HashMap<K, Vec<Kept<L>>>,
    rights: HashMap<K, Vec<Kept<R>>>,
    /// The earliest time a kept item may be forgotten.
    next_forget: Timestamp,
    watermark: Timestamp,
    late: LateRoute<Side<L, R>>,
    _mode: PhantomData<fn() -> M>,
}

impl<L, R, K, LT, LK, RT, RK, M> std::fmt::Debug for IntervalJoin<L, R, K, LT, LK, RT, RK, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntervalJoin")
            .field("spec", &self.spec)
            .field("left_keys", &self.lefts.len())
            .field("right_keys", &self.rights.len())
            .field("watermark", &self.watermark)
            .finish()
    }
}

impl IntervalJoin<(), (), (), (), (), (), ()> {
    /// Joins a left item at `t` with every right item of the same key whose
    /// event time is within `[t - before, t + after]`.
    ///
    /// Add the join with
    /// [`TopologyBuilder::join`](crate::TopologyBuilder::join), which reads
    /// both inputs and gives the late items a second output. Each item is
    /// kept until the watermark passes the end of the interval it can
    /// still match in (`t + after` for a left item, `t + before` for a right
    /// one), so the state stays bounded by the watermark. An item is late
    /// if the watermark of its own input had passed its time when it was
    /// read ([`Stamp`]): it could have missed matches, so it goes to the
    /// late output instead. Matches among the items that are not late are
    /// all found, whatever the order they arrive in.
    ///
    /// # Examples
    ///
    /// Payments within a minute after their order:
    ///
    /// ```
    /// use nanostream::prelude::*;
    /// use nanostream::operators::{IntervalJoin, watermarks};
    /// use nanostream::time::{Timed, Timestamp};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nanostream::Error> {
    /// // (order id, time in s)
    /// let orders = [(1u32, 0i64), (2, 10)];
    /// // (order id, time in s, amount)
    /// let payments = [(1u32, 30i64, 5u64), (2, 200, 7)];
    /// let at = |s: i64| Timestamp::from_millis(s * 1000);
    /// let mut g = Topology::builder();
    /// let orders = g.source("orders", from_iter(orders));
    /// let orders = g.node("orders_timed", watermarks(move |o: &(u32, i64)| at(o.1), Duration::ZERO), orders);
    /// let payments = g.source("payments", from_iter(payments));
    /// let payments = g.node("payments_timed", watermarks(move |p: &(u32, i64, u64)| at(p.1), Duration::ZERO), payments);
    /// let paid = IntervalJoin::between(Duration::ZERO, Duration::from_secs(60))
    ///     .left(|o: &Timed<(u32, i64)>| o.stamp, |o| o.item.0)
    ///     .right(|p: &Timed<(u32, i64, u64)>| p.stamp, |p| p.item.0);
    /// let (paid, late) = g.join("paid", paid, orders, payments);
    /// let (sink, pairs) = into_stream(8);
    /// g.sink("pairs", sink, paid);
    /// g.sink("late", for_each(|_| async {}), late);
    /// g.build()?.run().await?;
    ///
    /// use futures::StreamExt;
    /// let pairs: Vec<(u32, u64)> = pairs.map(|(o, p)| (o.item.0, p.item.2)).collect().await;
    /// assert_eq!(pairs, [(1, 5)], "order 2 was paid too late");
    /// # Ok(())
    /// # }
    /// ```
    pub fn between(before: Duration, after: Duration) -> JoinSpec {
        JoinSpec { before: millis(before), after: millis(after) }
    }
}

impl JoinSpec {
    /// The left input: `time` reads an item's event time, `key` its key.
    pub fn left<L, K, LT, TL, LK>(self, time: LT, key: LK) -> LeftSpec<L, LT, LK>
    where
        LT: FnMut(&L) -> TL + Send + 'static,
        TL: EventTime,
        LK: FnMut(&L) -> K + Send + 'static,
    {
        LeftSpec { spec: self, time, key, _l: PhantomData }
    }
}

impl<L, LT, LK> LeftSpec<L, LT, LK> {
    /// The right input: `time` reads an item's event time, `key` its key
    /// (of the same type as the left's).
    pub fn right<R, K, RT, TR, RK>(self, time: RT, key: RK) -> IntervalJoin<L, R, K, LT, LK, RT, RK, Inner>
    where
        RT: FnMut(&R) -> TR + Send + 'static,
        TR: EventTime,
        RK: FnMut(&R) -> K + Send + 'static,
    {
        IntervalJoin {
            spec: self.spec,
            left_time: self.time,
            left_key: self.key,
            right_time: time,
            right_key: key,
            lefts: HashMap::new(),
            rights: HashMap::new(),
            next_forget: Timestamp::MAX,
            watermark: Timestamp::MIN,
            late: LateRoute::new(),
            _mode: PhantomData,
        }
    }
}

impl<L, R, K, LT, LK, RT, RK> IntervalJoin<L, R, K, LT, LK, RT, RK, Inner> {
    /// Also emits `(left, None)` for each left item that matched nothing,
    /// once the watermark has passed its interval.
    pub fn left_outer(self) -> IntervalJoin<L, R, K, LT, LK, RT, RK, LeftOuter> {
        IntervalJoin {
            spec: self.spec,
            left_time: self.left_time,
            left_key: self.left_key,
            right_time: self.right_time,
            right_key: self.right_key,
            lefts: self.lefts,
            rights: self.rights,
            next_forget: self.next_forget,
            watermark: self.watermark,
            late: self.late,
            _mode: PhantomData,
        }
    }
}

fn plus(t: Timestamp, ms: i64) -> Timestamp {
    Timestamp::from_millis(t.as_millis().saturating_add(ms))
}

/// The kept items of the other side within `from..=to`, marked matched,
/// each with a copy of what it holds. Gathered before any await: the state
/// is not held across them (its items need not be `Sync`).
fn gather<T: Clone>(kept: Option<&mut Vec<Kept<T>>>, from: Timestamp, to: Timestamp) -> Vec<(T, crate::acks::Acks)> {
    let Some(kept) = kept else { return Vec::new() };
    kept.iter_mut()
        .filter(|k| k.time >= from && k.time <= to)
        .map(|k| {
            k.matched = true;
            (k.item.clone(), k.held.copy())
        })
        .collect()
}

/// Emits a pair owing both of its items: a copy of what each holds.
async fn emit_pair<O: Send + 'static>(out: &mut Emitter<O>, mut owed: crate::acks::Acks, held: &Held, pair: O) {
    owed.merge(held.copy());
    out.owe(&mut owed);
    out.emit(pair).await;
}

impl<L, R, K, LT, TL, LK, RT, TR, RK, M> IntervalJoin<L, R, K, LT, LK, RT, RK, M>
where
    L: Clone + Send + 'static,
    R: Clone + Send + 'static,
    K: Hash + Eq + Send + 'static,
    LT: FnMut(&L) -> TL + Send + 'static,
    TL: EventTime,
    LK: FnMut(&L) -> K + Send + 'static,
    RT: FnMut(&R) -> TR + Send + 'static,
    TR: EventTime,
    RK: FnMut(&R) -> K + Send + 'static,
    M: JoinMode<L, R>,
{
    /// The item's time if it is on time, or `Err` once it is sent to the
    /// late output: late if the watermark of its own input had passed its
    /// time when it was read (or the join's, if that is not known). Its
    /// matches may then have been forgotten already; so may they if the
    /// join's own watermark passed it (an input that was idle speaking
    /// again).
    async fn on_time(
        &mut self,
        stamp: Option<Stamp>,
        item: Side<L, R>,
        out: &mut Emitter<M::Out>,
    ) -> Result<Result<(Timestamp, Side<L, R>), ()>, WindowError> {
        let stamp = stamp.ok_or(WindowError::NoEventTime)?;
        let judge = LateRoute::<Side<L, R>>::judge(stamp, self.watermark);
        if stamp.time < judge || stamp.time < self.watermark {
            self.late.send(item, stamp.time, judge.max(self.watermark), out).await?;
            return Ok(Err(()));
        }
        Ok(Ok((stamp.time, item)))
    }

    async fn left(&mut self, item: L, out: &mut Emitter<M::Out>) -> Result<(), WindowError> {
        let stamp = (self.left_time)(&item).event_time();
        let Ok((time, Side::Left(item))) = self.on_time(stamp, Side::Left(item), out).await? else { return Ok(()) };
        let key = (self.left_key)(&item);
        // Right items at `t - before ..= t + after`.
        let (from, to) = (plus(time, -self.spec.before), plus(time, self.spec.after));
        let mut kept = Kept { item, time, held: Held::default(), matched: false };
        out.hold(&mut kept.held);
        let matches = gather(self.rights.get_mut(&key), from, to);
        kept.matched = !matches.is_empty();
        for (right, owed) in matches {
            emit_pair(out, owed, &kept.held, M::pair(kept.item.clone(), right)).await;
        }
        self.next_forget = self.next_forget.min(to);
        self.lefts.entry(key).or_default().push(kept);
        Ok(())
    }

    async fn right(&mut self, item: R, out: &mut Emitter<M::Out>) -> Result<(), WindowError> {
        let stamp = (self.right_time)(&item).event_time();
        let Ok((time, Side::Right(item))) = self.on_time(stamp, Side::Right(item), out).await? else { return Ok(()) };
        let key = (self.right_key)(&item);
        // Left items at `tl` match if `tl - before <= t <= tl + after`.
        let (from, to) = (plus(time, -self.spec.after), plus(time, self.spec.before));
        let mut kept = Kept { item, time, held: Held::default(), matched: false };
        out.hold(&mut kept.held);
        for (left, owed) in gather(self.lefts.get_mut(&key), from, to) {
            emit_pair(out, owed, &kept.held, M::pair(left, kept.item.clone())).await;
        }
        self.next_forget = self.next_forget.min(to);
        self.rights.entry(key).or_default().push(kept);
        Ok(())
    }

    /// Forgets what no item still to come can match: a left item once the
    /// watermark passed `t + after` (emitting it unmatched, in a left outer
    /// join), a right item once it passed `t + before`.
    async fn forget(&mut self, watermark: Timestamp, out: &mut Emitter<M::Out>) {
        self.watermark = self.watermark.max(watermark);
        let watermark = self.watermark;
        // The final watermark forgets everything, intervals that reach the
        // end of time included.
        let all = watermark == Timestamp::MAX;
        if self.next_forget >= watermark && !all {
            return;
        }
        let (before, after) = (self.spec.before, self.spec.after);
        let mut next = Timestamp::MAX;
        let mut done: Vec<Held> = Vec::new();
        let mut unmatched = Vec::new();
        for lefts in self.lefts.values_mut() {
            lefts.retain_mut(|l| {
                let until = plus(l.time, after);
                if until < watermark || all {
                    if l.matched {
                        done.push(std::mem::take(&mut l.held));
                    } else {
                        unmatched.push((l.item.clone(), std::mem::take(&mut l.held)));
                    }
                    false
                } else {
                    next = next.min(until);
                    true
                }
            });
        }
        for rights in self.rights.values_mut() {
            rights.retain_mut(|r| {
                let until = plus(r.time, before);
                if until < watermark || all {
                    done.push(std::mem::take(&mut r.held));
                    false
                } else {
                    next = next.min(until);
                    true
                }
            });
        }
        self.lefts.retain(|_, v| !v.is_empty());
        self.rights.retain(|_, v| !v.is_empty());
        self.next_forget = next;
        // What each forgotten item emitted owes its own copies: its own
        // hold is done now, with what this call emits.
        for mut held in done {
            out.adopt(&mut held);
        }
        for (left, mut held) in unmatched {
            out.adopt(&mut held);
            if let Some(row) = M::unmatched(left) {
                out.emit(row).await;
            }
        }
    }
}

impl<L, R, K, LT, TL, LK, RT, TR, RK, M> Node for IntervalJoin<L, R, K, LT, LK, RT, RK, M>
where
    L: Clone + Send + 'static,
    R: Clone + Send + 'static,
    K: Hash + Eq + Send + 'static,
    LT: FnMut(&L) -> TL + Send + 'static,
    TL: EventTime,
    LK: FnMut(&L) -> K + Send + 'static,
    RT: FnMut(&R) -> TR + Send + 'static,
    TR: EventTime,
    RK: FnMut(&R) -> K + Send + 'static,
    M: JoinMode<L, R>,
{
    type In = Side<L, R>;
    type Out = M::Out;
    type Error = WindowError;

    async fn setup(&mut self, ctx: &Context) -> Result<(), WindowError> {
        self.late.set_node(ctx);
        Ok(())
    }

    async fn process(&mut self, item: Side<L, R>, out: &mut Emitter<M::Out>) -> Result<(), WindowError> {
        match item {
            Side::Left(l) => self.left(l, out).await,
            Side::Right(r) => self.right(r, out).await,
        }
    }

    async fn on_watermark(&mut self, watermark: Timestamp, out: &mut Emitter<M::Out>) -> Result<(), WindowError> {
        self.forget(watermark, out).await;
        Ok(())
    }
}

impl<L, R, K, LT, LK, RT, RK, M> LateOutput for IntervalJoin<L, R, K, LT, LK, RT, RK, M>
where
    Self: Node,
    L: Send + 'static,
    R: Send + 'static,
{
    type Item = Side<L, R>;

    fn route_late(&mut self, to: LateSender<Side<L, R>>) {
        self.late.route_to(to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timed;

    fn at(ms: i64) -> Timed<u32> {
        Timed { stamp: Stamp { time: Timestamp::from_millis(ms), watermark: Timestamp::MIN }, item: 0 }
    }

    #[tokio::test]
    async fn state_is_forgotten_once_the_watermark_passes_the_interval() {
        let mut join = IntervalJoin::between(Duration::from_millis(10), Duration::from_millis(20))
            .left(|l: &Timed<u32>| l.stamp, |l| l.item)
            .right(|r: &Timed<u32>| r.stamp, |r| r.item);
        let mut out = Emitter::detached();
        for t in 0..100 {
            join.process(Side::Left(at(t * 100)), &mut out).await.expect("on time");
            join.process(Side::Right(at(t * 100 + 5)), &mut out).await.expect("on time");
            join.on_watermark(Timestamp::from_millis(t * 100), &mut out).await.expect("no error");
            let kept: usize =
                join.lefts.values().map(Vec::len).sum::<usize>() + join.rights.values().map(Vec::len).sum::<usize>();
            assert!(kept <= 2, "only what the watermark has not passed is kept: {kept} at {t}");
        }
        assert_eq!(out.drain_detached().len(), 100, "each left item met its right one");
    }
}
