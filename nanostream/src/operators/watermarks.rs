//! `watermarks`: event time and watermarks for a source that has none.

use std::marker::PhantomData;
use std::time::Duration;

use tokio::time::Instant;

use crate::edge::emitter::Emitter;
use crate::node::{Context, Node};
use crate::time::{EventTime, NoEventTime, Stamp, Timed, Timestamp};

/// Reads each item's event time and starts watermarks; see [`watermarks`].
pub struct Watermarks<T, F> {
    time: F,
    max_delay: Duration,
    idle_after: Option<Duration>,
    /// The latest event time seen.
    high: Option<Timestamp>,
    /// The first watermark (the minimum) is out.
    started: bool,
    /// When the last item came, for idleness.
    last_item: Option<Instant>,
    idle: bool,
    _in: PhantomData<fn(T)>,
}

impl<T, F> std::fmt::Debug for Watermarks<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watermarks")
            .field("max_delay", &self.max_delay)
            .field("idle_after", &self.idle_after)
            .field("high", &self.high)
            .field("idle", &self.idle)
            .finish()
    }
}

/// Gives a stream event time: reads each item's time with `time`, emits it
/// as a [`Timed`] item, and declares watermarks that trail the latest time
/// seen by `max_delay` (the bounded out-of-orderness: an item may come up to
/// `max_delay` after a later one and still count as on time).
///
/// Place it right after a source (it fuses with it, so it costs no extra
/// task); the Kafka source does the same per partition by itself. Each item
/// is stamped with the watermark reached before it ([`Stamp`]), which is
/// what the event-time windows judge lateness by. An item whose time
/// function returns `None` fails the node with [`NoEventTime`]: wrap the
/// node in `skip_errors()` or dead letters to let such items go.
///
/// When the input ends, the final watermark closes every window; after a
/// graceful shutdown it does not (see [`time`](crate::time)).
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::operators::watermarks;
/// use nanostream::time::{Timed, Timestamp};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let clicks = [(1_000, "a"), (3_000, "b"), (2_000, "c")];
/// let mut g = Topology::builder();
/// let clicks = g.source("clicks", from_iter(clicks));
/// let timed = g.node(
///     "timed",
///     watermarks(|c: &(i64, &str)| Timestamp::from_millis(c.0), Duration::from_secs(5)),
///     clicks,
/// );
/// let (sink, out) = into_stream(8);
/// g.sink("out", sink, timed);
/// g.build()?.run().await?;
///
/// use futures::StreamExt;
/// let out: Vec<Timed<(i64, &str)>> = out.collect().await;
/// // "c" came after "b" (3 s), so the watermark before it was 3 s - 5 s.
/// assert_eq!(out[2].stamp.watermark, Timestamp::from_millis(-2_000));
/// # Ok(())
/// # }
/// ```
pub fn watermarks<T, F, R>(time: F, max_delay: Duration) -> Watermarks<T, F>
where
    F: FnMut(&T) -> R + Send + 'static,
    R: EventTime,
{
    Watermarks {
        time,
        max_delay,
        idle_after: None,
        high: None,
        started: false,
        last_item: None,
        idle: false,
        _in: PhantomData,
    }
}

impl<T, F> Watermarks<T, F> {
    /// Declares the input idle once no item has come for `after`, so that
    /// nodes reading it together with other inputs stop waiting for it; it
    /// counts again from its next item. Off by default: a quiet input holds
    /// every window after it open.
    pub fn idle_after(mut self, after: Duration) -> Self {
        self.idle_after = Some(after);
        self
    }

    fn watermark(&self) -> Timestamp {
        self.high.map_or(Timestamp::MIN, |high| high.saturating_sub(self.max_delay))
    }
}

impl<T, F, R> Node for Watermarks<T, F>
where
    T: Send + 'static,
    F: FnMut(&T) -> R + Send + 'static,
    R: EventTime,
{
    type In = T;
    type Out = Timed<T>;
    type Error = NoEventTime;

    async fn setup(&mut self, _ctx: &Context) -> Result<(), NoEventTime> {
        self.last_item = Some(Instant::now());
        Ok(())
    }

    async fn process(&mut self, item: T, out: &mut Emitter<Timed<T>>) -> Result<(), NoEventTime> {
        let time = (self.time)(&item).event_time().ok_or(NoEventTime)?.time;
        let before = self.watermark();
        out.emit(Timed { stamp: Stamp { time, watermark: before }, item }).await;
        self.high = Some(self.high.map_or(time, |high| high.max(time)));
        if self.idle_after.is_some() {
            self.last_item = Some(Instant::now());
        }
        let after = self.watermark();
        if after > before || self.idle || !self.started {
            self.idle = false;
            self.started = true;
            out.advance_watermark(after);
        }
        Ok(())
    }

    fn deadline(&self) -> Option<Instant> {
        if !self.started {
            // Hold the nodes after this one back from the start, not from
            // the first item.
            return Some(Instant::now());
        }
        if self.idle {
            return None;
        }
        // A timeout too long to represent never fires.
        self.last_item?.checked_add(self.idle_after?)
    }

    async fn on_timer(&mut self, out: &mut Emitter<Timed<T>>) -> Result<(), NoEventTime> {
        if !self.started {
            self.started = true;
            out.advance_watermark(self.watermark());
            return Ok(());
        }
        if let (Some(last), Some(after)) = (self.last_item, self.idle_after)
            && last.checked_add(after).is_some_and(|at| at <= Instant::now())
        {
            self.idle = true;
            out.mark_idle();
        }
        Ok(())
    }
}
