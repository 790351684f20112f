//! `throttle`: lets at most so many items through per interval.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::time::Duration;

use tokio::time::Instant;

use crate::edge::emitter::Emitter;
use crate::node::Node;

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
/// use nanostream::operators::throttle;
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
