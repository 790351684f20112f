//! Start-up and what a misconfigured client says: reaching the cluster,
//! checking the topics, the end offsets of a bounded read, and librdkafka's
//! logs without floods.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;

use crate::error::Error;
use crate::security::Connection;

/// Identical client errors within this window are counted, not repeated.
const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// Logs client messages through `tracing`, each distinct message once a
/// minute: a message that repeats (the same text up to its numbers and
/// parenthesised details: a broker that refuses every reconnection, told by
/// librdkafka's log and its error callback, by every client) is counted,
/// and logged again with the count once the minute has passed.
#[derive(Default)]
pub(crate) struct Repeats {
    recent: Mutex<HashMap<String, Repeat>>,
}

/// The messages a process has seen recently, shared by all its clients.
pub(crate) fn repeats() -> &'static Repeats {
    static REPEATS: OnceLock<Repeats> = OnceLock::new();
    REPEATS.get_or_init(Repeats::default)
}

struct Repeat {
    count: u64,
    since: Instant,
}

/// Distinct messages remembered at most (the oldest is forgotten first).
const REMEMBERED: usize = 64;

/// The text of a message without what varies between repeats of it: the
/// thread prefix librdkafka puts on log lines, the numbers, and
/// parenthesised details ("after 0ms", "1 identical error(s) suppressed").
fn shape(message: &str) -> String {
    let message = match message.strip_prefix("[thrd:") {
        Some(rest) => rest.split_once("]: ").map_or(rest, |(_, text)| text),
        None => message,
    };
    let mut key = String::with_capacity(message.len());
    let (mut depth, mut in_number) = (0u32, false);
    for c in message.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            _ if c.is_ascii_digit() => {
                if !in_number {
                    key.push('#');
                }
                in_number = true;
                continue;
            }
            _ => key.push(c),
        }
        in_number = false;
    }
    key.trim().to_owned()
}

fn emit(level: tracing::Level, client: &str, message: &str) {
    match level {
        tracing::Level::ERROR => tracing::error!(client, "{message}"),
        tracing::Level::WARN => tracing::warn!(client, "{message}"),
        tracing::Level::INFO => tracing::info!(client, "{message}"),
        _ => tracing::debug!(client, "{message}"),
    }
}

impl Repeats {
    /// Logs `message` unless it repeats one logged less than a minute ago;
    /// returns whether it was logged.
    pub(crate) fn log(&self, level: tracing::Level, client: &str, message: &str) -> bool {
        self.log_as(&shape(message), level, client, message)
    }

    fn log_as(&self, key: &str, level: tracing::Level, client: &str, message: &str) -> bool {
        if level == tracing::Level::DEBUG || level == tracing::Level::TRACE {
            // Asked for (librdkafka's `debug`): every line.
            emit(level, client, message);
            return true;
        }
        // An error is not hidden behind an earlier warning of the same shape.
        let key = &format!("{level} {key}");
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(repeat) = recent.get_mut(key) {
            if repeat.since.elapsed() < REPEAT_WINDOW {
                repeat.count += 1;
                return false;
            }
            let count = std::mem::take(&mut repeat.count);
            repeat.since = Instant::now();
            drop(recent);
            if count == 0 {
                emit(level, client, message);
            } else {
                emit(
                    level,
                    client,
                    &format!("{message} (and {count} more like it in the last {}s)", REPEAT_WINDOW.as_secs()),
                );
            }
            return true;
        }
        if recent.len() >= REMEMBERED
            && let Some(oldest) = recent.iter().min_by_key(|(_, r)| r.since).map(|(k, _)| k.clone())
        {
            recent.remove(&oldest);
        }
        recent.insert(key.to_owned(), Repeat { count: 0, since: Instant::now() });
        drop(recent);
        emit(level, client, message);
        true
    }

    /// librdkafka's log callback.
    pub(crate) fn client_log(&self, client: &str, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let level = match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::Level::ERROR
            }
            RDKafkaLogLevel::Warning => tracing::Level::WARN,
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::Level::INFO,
            RDKafkaLogLevel::Debug => tracing::Level::DEBUG,
        };
        self.log_as(&shape(message), level, client, &format!("{facility}: {message}"));
    }

    /// librdkafka's error callback: the same event as a log line often, so
    /// counted with it.
    pub(crate) fn client_error(&self, client: &str, error: &KafkaError, reason: &str) {
        self.log_as(&shape(reason), tracing::Level::WARN, client, &format!("{error}: {reason}"));
    }
}

/// A client context that only logs, without floods: for the producers of
/// dead letters.
#[derive(Default)]
pub(crate) struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        repeats().client_log("dead-letter producer", level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        repeats().client_error("dead-letter producer", &error, reason);
    }
}

/// The partitions of `topics`, asked of the brokers for up to `timeout`.
/// A topic the cluster does not have is an error, or with `allow_missing`
/// a warning (it has no partition yet).
///
/// # Errors
///
/// [`Error::Unreachable`] if no broker answered in time,
/// [`Error::Security`] as soon as the brokers refuse the connection at its
/// security checks, [`Error::UnknownTopic`] for the first topic the cluster
/// does not have.
pub(crate) fn partitions<C, K>(
    consumer: &K,
    topics: &[String],
    timeout: Duration,
    allow_missing: bool,
    connection: &Connection,
) -> Result<Vec<(String, i32)>, Error>
where
    C: rdkafka::consumer::ConsumerContext,
    K: Consumer<C>,
{
    let mut partitions = Vec::new();
    for topic in topics {
        let metadata = ask(timeout, connection, |wait| consumer.fetch_metadata(Some(topic), wait))?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        let missing = match found {
            None => true,
            Some(t) => {
                matches!(t.error(), Some(code) if RDKafkaErrorCode::from(code) == RDKafkaErrorCode::UnknownTopicOrPartition)
                    || t.partitions().is_empty()
            }
        };
        match (missing, found) {
            (true, _) if allow_missing => {
                tracing::warn!(%topic, "topic does not exist yet; it is read once it is created")
            }
            (true, _) => return Err(Error::UnknownTopic { topic: topic.clone() }),
            (false, Some(t)) => partitions.extend(t.partitions().iter().map(|p| (topic.clone(), p.id()))),
            (false, None) => {}
        }
    }
    Ok(partitions)
}

/// How long one request of the start-up checks waits before the client's
/// connection errors are looked at again.
const ASK_SLICE: Duration = Duration::from_secs(1);

/// Asks the brokers with `request` (given how long it may wait) until they
/// answer or `timeout` passes, stopping as soon as they refuse the
/// connection at its security checks.
fn ask<R>(
    timeout: Duration,
    connection: &Connection,
    mut request: impl FnMut(Duration) -> KafkaResult<R>,
) -> Result<R, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        connection.check()?;
        let started = Instant::now();
        let left = deadline.saturating_duration_since(started);
        match request(left.min(ASK_SLICE)) {
            Ok(answer) => return Ok(answer),
            Err(source) if Instant::now() >= deadline => {
                connection.check()?;
                return Err(Error::Unreachable { waited: timeout, last_error: connection.why_unreachable(), source });
            }
            Err(_) => {
                // A request that failed at once must not spin.
                let pause = Duration::from_millis(100).saturating_sub(started.elapsed());
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
            }
        }
    }
}

/// Each partition's first and one-past-last offsets, as the brokers
/// report them now (the low and high watermarks).
pub(crate) fn bounds<C, K>(
    consumer: &K,
    partitions: &[(String, i32)],
    timeout: Duration,
    connection: &Connection,
) -> Result<Vec<(String, i32, i64, i64)>, Error>
where
    C: rdkafka::consumer::ConsumerContext,
    K: Consumer<C>,
{
    partitions
        .iter()
        .map(|(topic, partition)| {
            let (low, high) = ask(timeout, connection, |wait| consumer.fetch_watermarks(topic, *partition, wait))?;
            Ok((topic.clone(), *partition, low, high))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_that_differ_only_in_numbers_and_details_are_one_message() {
        let log = "[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: \
                   Connection refused (after 0ms in state CONNECT, 1 identical error(s) suppressed)";
        let error = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused \
                     (after 12ms in state CONNECT)";
        assert_eq!(shape(log), shape(error));
        assert_ne!(shape("broker down"), shape("topic unknown"));
    }

    #[test]
    fn a_repeated_message_is_logged_once_then_counted() {
        let repeats = Repeats::default();
        assert!(repeats.log(tracing::Level::WARN, "consumer", "connect failed after 1ms"));
        for ms in 2..100 {
            assert!(!repeats.log(tracing::Level::WARN, "consumer", &format!("connect failed after {ms}ms")));
        }
        // Another message is logged; the first stays counted.
        assert!(repeats.log(tracing::Level::WARN, "consumer", "all brokers down"));
        assert!(!repeats.log(tracing::Level::WARN, "producer", "connect failed after 7ms"));
    }
}
