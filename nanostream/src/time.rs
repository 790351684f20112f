//! Event time: when something happened, as opposed to when nanostream
//! sees it.
//!
//! An item's event time is a [`Timestamp`] (milliseconds since the Unix
//! epoch, as Kafka record timestamps are). A *watermark* says how far event
//! time has progressed on an edge: "no item older than this is expected any
//! more". Sources start them ([`watermarks`](crate::operators::watermarks), or
//! the Kafka source per partition), the runtime carries them with the chunks
//! through every node, fused or not, takes the minimum where edges meet, and
//! hands them to [`Node::on_watermark`](crate::Node::on_watermark), where the
//! event-time windows close.
//!
//! # The rules
//!
//! - A watermark never goes back on an edge.
//! - Where several edges meet, a node's watermark is the minimum over its
//!   inputs that have one. An input that has gone *idle* (its source saw no
//!   item for a while) does not hold the others back, and counts again once
//!   it speaks. An input whose source never declared event time does not
//!   count either.
//! - A source whose input is exhausted ends with the final watermark,
//!   [`Timestamp::MAX`], which closes every window. A source stopped by a
//!   shutdown does not: what waits on a watermark stays open, and the
//!   acknowledgements of its inputs stay unreleased, so that a Kafka source
//!   re-reads them after a restart.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in event time: milliseconds since the Unix epoch.
///
/// # Examples
///
/// ```
/// use nanostream::time::Timestamp;
/// use std::time::Duration;
///
/// let t = Timestamp::from_millis(10_500);
/// assert_eq!(t + Duration::from_secs(1), Timestamp::from_millis(11_500));
/// assert_eq!(t.as_millis(), 10_500);
/// assert_eq!(t.to_string(), "10500ms");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest timestamp: a watermark that lets nothing through.
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    /// The latest timestamp: the final watermark, sent when an input is
    /// exhausted.
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    /// The timestamp `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The wall clock now.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// `self - d`, saturating at [`MIN`](Self::MIN).
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(millis(d)))
    }

    /// `self + d`, saturating at [`MAX`](Self::MAX).
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(millis(d)))
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, d: Duration) -> Timestamp {
        self.saturating_add(d)
    }
}

impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;

    fn sub(self, d: Duration) -> Timestamp {
        self.saturating_sub(d)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(after) => Self(millis(after)),
            Err(before) => Self(-millis(before.duration())),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::MIN => f.write_str("-inf"),
            Self::MAX => f.write_str("+inf"),
            Self(ms) => write!(f, "{ms}ms"),
        }
    }
}

/// An item's event time, and the watermark of its own input (its Kafka
/// partition, its source) just before it was read.
///
/// The second half is what makes late data deterministic: an event-time
/// window decides that an item is too late against the watermark its own
/// input had reached, not against how far the other inputs got by the time
/// the item arrived, which depends on how partitions interleave and how
/// items are chunked. [`watermarks`](crate::operators::watermarks) and the
/// Kafka source stamp items this way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stamp {
    /// When the item happened.
    pub time: Timestamp,
    /// The watermark of the item's own input before it; [`Timestamp::MIN`]
    /// when not known.
    pub watermark: Timestamp,
}

impl Stamp {
    /// A stamp without a known input watermark.
    pub const fn at(time: Timestamp) -> Self {
        Self { time, watermark: Timestamp::MIN }
    }
}

/// An item with its [`Stamp`]: what
/// [`watermarks`](crate::operators::watermarks) emits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Timed<T> {
    /// When the item happened, and its input's watermark then.
    pub stamp: Stamp,
    /// The item.
    pub item: T,
}

impl<T> Timed<T> {
    /// The same stamp on another item: for a `map` that keeps event time.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Timed<U> {
        Timed { stamp: self.stamp, item: f(self.item) }
    }
}

/// What an item's event time can be read from: a [`Timestamp`], a
/// [`Stamp`], a [`SystemTime`], or an `Option`/`Result` of one.
///
/// `None` (or an `Err`) means the item has no usable time: the node that
/// needed it fails on the item with [`NoEventTime`], and its error policy
/// decides what happens (skip it, dead-letter it, or stop).
pub trait EventTime {
    /// The event time, if there is one.
    fn event_time(self) -> Option<Stamp>;
}

impl EventTime for Timestamp {
    fn event_time(self) -> Option<Stamp> {
        Some(Stamp::at(self))
    }
}

impl EventTime for Stamp {
    fn event_time(self) -> Option<Stamp> {
        Some(self)
    }
}

impl EventTime for SystemTime {
    fn event_time(self) -> Option<Stamp> {
        Some(Stamp::at(self.into()))
    }
}

impl<X: EventTime> EventTime for Option<X> {
    fn event_time(self) -> Option<Stamp> {
        self.and_then(EventTime::event_time)
    }
}

impl<X: EventTime, E> EventTime for Result<X, E> {
    fn event_time(self) -> Option<Stamp> {
        self.ok().and_then(EventTime::event_time)
    }
}

/// An item had no usable event time (its time function returned `None`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the item has no usable event time")]
#[non_exhaustive]
pub struct NoEventTime;

/// The watermark carried by a chunk: what its edge says about event time
/// once the chunk's items are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Mark {
    /// The edge has no event time (its source never declared one).
    #[default]
    Untimed,
    /// No item older than this will come on the edge (late items aside).
    At(Timestamp),
    /// The edge's source has seen nothing for a while: it does not hold
    /// the others back.
    Idle,
}

impl Mark {
    /// The final watermark.
    pub(crate) const END: Mark = Mark::At(Timestamp::MAX);
    /// What an edge says before its first chunk: nothing has been ruled
    /// out yet, so it holds the others back.
    pub(crate) const UNKNOWN: Mark = Mark::At(Timestamp::MIN);

    /// Combines the marks of the edges that meet at a node.
    pub(crate) fn min_of(marks: impl IntoIterator<Item = Mark>) -> Mark {
        let mut idle = false;
        let mut at: Option<Timestamp> = None;
        for mark in marks {
            match mark {
                Mark::Untimed => {}
                Mark::Idle => idle = true,
                Mark::At(t) => at = Some(at.map_or(t, |a| a.min(t))),
            }
        }
        match (at, idle) {
            // The final watermark only once no input is merely quiet: an
            // idle one may still speak.
            (Some(Timestamp::MAX), true) => Mark::Idle,
            (Some(t), _) => Mark::At(t),
            (None, true) => Mark::Idle,
            (None, false) => Mark::Untimed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_ignores_idle_and_untimed_edges() {
        let t = Timestamp::from_millis;
        assert_eq!(Mark::min_of([Mark::At(t(5)), Mark::Idle, Mark::At(t(3)), Mark::Untimed]), Mark::At(t(3)));
        assert_eq!(Mark::min_of([Mark::Idle, Mark::Untimed]), Mark::Idle);
        assert_eq!(Mark::min_of([Mark::Untimed]), Mark::Untimed);
        assert_eq!(Mark::min_of([Mark::END, Mark::At(t(1))]), Mark::At(t(1)));
        assert_eq!(Mark::min_of([]), Mark::Untimed);
        assert_eq!(Mark::min_of([Mark::END, Mark::Idle]), Mark::Idle, "an idle input has not ended");
    }

    #[test]
    fn timestamps_convert_from_the_wall_clock_before_and_after_the_epoch() {
        assert_eq!(Timestamp::from(UNIX_EPOCH + Duration::from_millis(1500)), Timestamp::from_millis(1500));
        assert_eq!(Timestamp::from(UNIX_EPOCH - Duration::from_millis(20)), Timestamp::from_millis(-20));
        assert_eq!(Timestamp::MAX + Duration::from_secs(1), Timestamp::MAX);
    }
}
