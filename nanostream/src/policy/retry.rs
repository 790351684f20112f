//! `retry`: try a failing item again with exponential backoff.

use std::time::Duration;

use crate::edge::emitter::Emitter;
use crate::node::{Context, Node, Now};
use crate::policy::failure::describe;
use crate::policy::layer::Policy;

/// How [`NodeExt::retry`](crate::NodeExt::retry) retries a failing item.
///
/// After a failed attempt it waits `backoff`, doubling the wait after every
/// further failure up to `max_backoff`; after `attempts` failed attempts in
/// all, the last error fails the node (or is handled by an outer policy
/// such as `skip_errors`).
///
/// # Examples
///
/// ```
/// use nanostream::policy::Retry;
/// use std::time::Duration;
///
/// let retry = Retry::attempts(5).backoff(Duration::from_millis(20)).max_backoff(Duration::from_secs(1));
/// assert_eq!(retry.delay_after(1), Duration::from_millis(20));
/// assert_eq!(retry.delay_after(3), Duration::from_millis(80));
/// assert_eq!(retry.delay_after(10), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
}

impl Retry {
    /// At most `attempts` attempts per item (at least 1), waiting 100 ms
    /// after the first failure and at most 10 s between attempts.
    pub fn attempts(attempts: u32) -> Self {
        Self { attempts: attempts.max(1), backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(10) }
    }

    /// The wait after the first failed attempt.
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The longest wait between attempts.
    pub fn max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// The wait after the `failures`-th failed attempt (counting from 1).
    pub fn delay_after(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// The policy that retries the items a node fails on; see
/// [`NodeExt::retry`](crate::NodeExt::retry).
#[derive(Debug)]
pub struct Retrying {
    policy: Retry,
    ctx: Option<Context>,
    /// The fast path already failed once on the item it hands to the slow
    /// path.
    failed_once: bool,
}

impl Retrying {
    pub(crate) fn new(policy: Retry) -> Self {
        Self { policy, ctx: None, failed_once: false }
    }
}

/// Records a failed attempt and waits before the next one.
async fn retry_later(policy: Retry, ctx: Option<&Context>, failures: u32, error: &str) {
    let delay = policy.delay_after(failures);
    if let Some(ctx) = ctx {
        ctx.record_error();
        tracing::warn!(node = %ctx.name(), attempt = failures, error = %error, ?delay, "retrying an item the node failed on");
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

impl<N> Policy<N> for Retrying
where
    N: Node,
    N::In: Clone,
{
    fn setup(&mut self, ctx: &Context) {
        self.ctx = Some(ctx.clone());
    }

    async fn process(&mut self, node: &mut N, item: N::In, out: &mut Emitter<N::Out>) -> Result<(), N::Error> {
        let mut failures = 0;
        if std::mem::take(&mut self.failed_once) {
            failures = 1;
            retry_later(self.policy, self.ctx.as_ref(), failures, "failed on the fast path").await;
        }
        loop {
            match node.process(item.clone(), out).await {
                Ok(()) => return Ok(()),
                Err(error) if failures + 1 >= self.policy.attempts => {
                    if let Some(ctx) = &self.ctx {
                        ctx.note_attempts(failures + 1);
                    }
                    return Err(error);
                }
                Err(error) => {
                    failures += 1;
                    retry_later(self.policy, self.ctx.as_ref(), failures, &describe(error)).await;
                }
            }
        }
    }

    #[inline]
    fn process_now(&mut self, node: &mut N, item: N::In) -> Now<N::In, N::Out, N::Error> {
        let keep = item.clone();
        match node.process_now(item) {
            Now::Fail(error) if self.policy.attempts > 1 => {
                drop(error);
                self.failed_once = true;
                Now::Later(keep)
            }
            Now::Later(_) => Now::Later(keep),
            now => now,
        }
    }
}
