//! Why a pipeline stopped early, recorded once, read once.
//!
//! Every way a pipeline can stop early goes through [`Status::record`]: a
//! node returning an error or panicking (recorded by its own task before its
//! edges drop), [`Context::fail`](crate::Context::fail) from any thread, a
//! shutdown deadline passing, the pipeline being cancelled. The outcome of
//! the run is read from here after every task has ended, so a failure can
//! never be missed by a race with the tasks finishing: a failed pipeline
//! never reports success.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::{AbandonedReport, BoxError, Error};

/// Why a pipeline stopped before its normal end.
pub(crate) enum Stop {
    Failed { node: Arc<str>, source: BoxError },
    Panicked { node: Arc<str>, message: String },
    TimedOut { deadline: Duration, report: AbandonedReport },
    Cancelled,
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Failed { node, source } => write!(f, "node `{node}` failed: {source}"),
            Stop::Panicked { node, message } => write!(f, "node `{node}` panicked: {message}"),
            Stop::TimedOut { deadline, report } => write!(f, "shutdown deadline {deadline:?} passed: {report}"),
            Stop::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl From<Stop> for Error {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Failed { node, source } => Error::NodeFailed { node: node.to_string(), source },
            Stop::Panicked { node, message } => Error::NodePanicked { node: node.to_string(), message },
            Stop::TimedOut { deadline, report } => Error::ShutdownTimedOut { deadline, report },
            Stop::Cancelled => Error::Cancelled,
        }
    }
}

/// The shared record of a running pipeline.
#[derive(Debug, Default)]
pub(crate) struct Status {
    /// Set once anything was recorded: nodes that see their input end must
    /// not mistake it for a normal end of stream, sources stop committing.
    /// Read on hot paths, so a plain atomic (a token's check takes a lock
    /// that every node of the pipeline would share).
    flag: AtomicBool,
    /// Cancelled with `flag`, for those who wait for it.
    stopped: CancellationToken,
    first: Mutex<Option<Stop>>,
}

impl Status {
    /// Records why the pipeline stops; only the first reason is kept. The
    /// reason is stored before the token is cancelled, so whoever sees the
    /// token also finds the reason.
    pub(crate) fn record(&self, stop: Stop) {
        {
            let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
            if first.is_none() {
                tracing::debug!(reason = ?stop, "stopping the pipeline");
                *first = Some(stop);
            }
        }
        self.flag.store(true, Ordering::Release);
        self.stopped.cancel();
    }

    /// Whether anything was recorded.
    pub(crate) fn has_stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Resolves once anything is recorded.
    pub(crate) fn stopped(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.stopped.cancelled()
    }

    /// The outcome of the run, read once after every task has ended.
    pub(crate) fn outcome(&self) -> Result<(), Error> {
        match self.first.lock().unwrap_or_else(PoisonError::into_inner).take() {
            None => Ok(()),
            Some(stop) => Err(stop.into()),
        }
    }
}
