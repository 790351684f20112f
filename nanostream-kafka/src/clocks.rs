//! Event time per partition: each assigned partition's watermark trails the
//! latest record timestamp read from it, and the source's watermark is the
//! minimum over the partitions that are not idle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use nanostream::time::Timestamp;
use tokio::time::Instant;

/// How a source derives watermarks; see
/// [`KafkaSourceBuilder::event_time`](crate::KafkaSourceBuilder::event_time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventTimeConfig {
    pub(crate) max_delay: Duration,
    pub(crate) idle_after: Option<Duration>,
}

/// The watermark `max_delay` behind the latest time seen.
fn trailing(high: Option<Timestamp>, max_delay: Duration) -> Timestamp {
    high.map_or(Timestamp::MIN, |high| high.saturating_sub(max_delay))
}

/// One partition's event time.
#[derive(Debug)]
struct Clock {
    /// The latest record timestamp read.
    high: Option<Timestamp>,
    /// When a record last came (or the partition was assigned).
    last: Instant,
    idle: bool,
}

/// The source's watermark now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceTime {
    At(Timestamp),
    /// Every assigned partition is idle, or none is assigned.
    Idle,
}

/// The clocks of the partitions a source reads.
#[derive(Debug)]
pub(crate) struct Clocks {
    config: EventTimeConfig,
    parts: HashMap<(Arc<str>, i32), Clock>,
}

impl Clocks {
    pub(crate) fn new(config: EventTimeConfig) -> Self {
        Self { config, parts: HashMap::new() }
    }

    /// Notes a record read from a partition, and returns the partition's
    /// watermark before it.
    pub(crate) fn read(&mut self, topic: &Arc<str>, partition: i32, timestamp: Option<i64>) -> Timestamp {
        let now = Instant::now();
        let clock = self.parts.entry((topic.clone(), partition)).or_insert_with(|| Clock {
            high: None,
            last: now,
            idle: false,
        });
        let before = trailing(clock.high, self.config.max_delay);
        if let Some(ms) = timestamp {
            let t = Timestamp::from_millis(ms);
            clock.high = Some(clock.high.map_or(t, |high| high.max(t)));
        }
        clock.last = now;
        clock.idle = false;
        before
    }

    /// Follows the assignment: a new partition starts with no event time
    /// (it holds the others back until it speaks or goes idle), a revoked
    /// one stops counting.
    pub(crate) fn assign(&mut self, assigned: &[(Arc<str>, i32)]) {
        let now = Instant::now();
        self.parts.retain(|key, _| assigned.contains(key));
        for key in assigned {
            self.parts.entry(key.clone()).or_insert_with(|| Clock { high: None, last: now, idle: false });
        }
    }

    /// The source's watermark: the minimum over the partitions that have
    /// not been quiet for the idle timeout.
    pub(crate) fn watermark(&mut self) -> SourceTime {
        let now = Instant::now();
        let idle_after = self.config.idle_after;
        let mut min: Option<Timestamp> = None;
        for clock in self.parts.values_mut() {
            if let Some(after) = idle_after
                && clock.last.checked_add(after).is_some_and(|at| at <= now)
            {
                clock.idle = true;
            }
            if clock.idle {
                continue;
            }
            let w = trailing(clock.high, self.config.max_delay);
            min = Some(min.map_or(w, |m| m.min(w)));
        }
        match min {
            Some(t) => SourceTime::At(t),
            None => SourceTime::Idle,
        }
    }

    /// A partition's watermark, for tests.
    #[cfg(test)]
    fn partition(&self, topic: &Arc<str>, partition: i32) -> Option<Timestamp> {
        self.parts.get(&(topic.clone(), partition)).map(|c| trailing(c.high, self.config.max_delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_source_watermark_is_the_minimum_over_partitions_that_are_not_idle() {
        let topic: Arc<str> = Arc::from("t");
        let mut clocks = Clocks::new(EventTimeConfig {
            max_delay: Duration::from_secs(1),
            idle_after: Some(Duration::from_secs(10)),
        });
        clocks.assign(&[(topic.clone(), 0), (topic.clone(), 1)]);
        assert_eq!(clocks.watermark(), SourceTime::At(Timestamp::MIN), "a partition not heard from holds back");
        assert_eq!(clocks.read(&topic, 0, Some(5_000)), Timestamp::MIN);
        assert_eq!(clocks.read(&topic, 0, Some(3_000)), Timestamp::from_millis(4_000), "the watermark before");
        assert_eq!(clocks.partition(&topic, 0), Some(Timestamp::from_millis(4_000)));
        clocks.read(&topic, 1, Some(2_000));
        assert_eq!(clocks.watermark(), SourceTime::At(Timestamp::from_millis(1_000)));
        tokio::time::sleep(Duration::from_secs(6)).await;
        clocks.read(&topic, 0, Some(9_000));
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Partition 1 has been quiet for 11 s: partition 0 alone decides.
        assert_eq!(clocks.watermark(), SourceTime::At(Timestamp::from_millis(8_000)));
        clocks.read(&topic, 1, Some(2_500));
        assert_eq!(clocks.watermark(), SourceTime::At(Timestamp::from_millis(1_500)), "it counts again");
        clocks.assign(&[(topic.clone(), 0)]);
        assert_eq!(clocks.watermark(), SourceTime::At(Timestamp::from_millis(8_000)), "revoked: no longer counts");
        clocks.assign(&[]);
        assert_eq!(clocks.watermark(), SourceTime::Idle, "nothing assigned holds nothing back");
    }
}
