//! [`BatchWriter`]: writes rows in batches, one call (one transaction) per
//! batch, and acknowledges the rows behind a batch only once its write
//! succeeded.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::ops::{Deref, Range};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::edge::acks::Acks;
use crate::edge::emitter::Emitter;
use crate::node::{Context, Node, Sink};
use crate::policy::{DeadLetter, Failure, Retry};

/// The rows of one write: a shared, read-only slice (it derefs to `[T]`),
/// cheap to clone, so that a retry or a split reuses the rows without
/// copying them.
pub struct Batch<T> {
    rows: Arc<Vec<T>>,
    range: Range<usize>,
}

impl<T> Batch<T> {
    fn new(rows: Vec<T>) -> Self {
        let range = 0..rows.len();
        Self { rows: Arc::new(rows), range }
    }

    /// The two halves of a batch of two rows or more.
    fn halves(&self) -> (Self, Self) {
        let middle = self.range.start + self.range.len() / 2;
        (
            Self { rows: self.rows.clone(), range: self.range.start..middle },
            Self { rows: self.rows.clone(), range: middle..self.range.end },
        )
    }
}

impl<T> Clone for Batch<T> {
    fn clone(&self) -> Self {
        Self { rows: self.rows.clone(), range: self.range.clone() }
    }
}

impl<T> Deref for Batch<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.rows[self.range.clone()]
    }
}

impl<T: fmt::Debug> fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Why a write failed, as the write function says: whether trying the same
/// rows again may work.
#[derive(Debug)]
#[non_exhaustive]
pub enum WriteError<E> {
    /// Trying again may work (the connection dropped, the server is
    /// restarting, a serialization failure or a deadlock): the batch is
    /// written again after a backoff, until
    /// [`give_up_after`](BatchWriter::give_up_after).
    Transient(E),
    /// Trying again would fail the same way (a constraint violation, a
    /// value the column does not take): the batch is rejected, or split to
    /// find the rows that are (see [`split_rejected`](BatchWriter::split_rejected)).
    Permanent(E),
}

/// The write function of a [`BatchWriter`]: implemented for every
/// `Fn(Batch<T>) -> impl Future<Output = Result<(), WriteError<E>>>` that
/// can be shared between tasks, with a future that does not borrow it.
pub trait WriteBatch<T>: Send + Sync + 'static {
    /// What a failed write says.
    type Error: fmt::Display + fmt::Debug + Send + Sync + 'static;
    /// The write.
    type Future: Future<Output = Result<(), WriteError<Self::Error>>> + Send + 'static;
    /// Writes `rows`, in one transaction where the store has them.
    fn write(&self, rows: Batch<T>) -> Self::Future;
}

impl<T, F, Fut, E> WriteBatch<T> for F
where
    F: Fn(Batch<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), WriteError<E>>> + Send + 'static,
    E: fmt::Display + fmt::Debug + Send + Sync + 'static,
{
    type Error = E;
    type Future = Fut;

    fn write(&self, rows: Batch<T>) -> Fut {
        self(rows)
    }
}

/// Why a [`BatchWriter`] failed: the error the pipeline fails with, naming
/// the node (the runtime adds it) and, when one row is to blame, the row.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError<E> {
    /// The store rejected rows with a permanent error.
    #[error("{} rejected after {attempts} attempt(s): {error}", what(*rows, row.as_deref()))]
    Rejected {
        /// How many rows: 1 once a batch is split down to the row to blame.
        rows: usize,
        /// The row (its `Debug` output, cut to 300 characters) when `rows`
        /// is 1.
        row: Option<String>,
        /// Attempts made on these rows.
        attempts: u32,
        /// The error of the last attempt.
        error: Arc<E>,
    },
    /// Transient errors went on for longer than
    /// [`give_up_after`](BatchWriter::give_up_after).
    #[error(
        "writing a batch of {rows} row(s) kept failing for {}s ({attempts} attempts); the last error: {error}",
        waited.as_secs()
    )]
    GaveUp {
        /// The rows of the batch.
        rows: usize,
        /// Attempts made.
        attempts: u32,
        /// How long it was retried.
        waited: Duration,
        /// The error of the last attempt.
        error: E,
    },
    /// A write did not finish within
    /// [`give_up_after`](BatchWriter::give_up_after) of the batch's first
    /// attempt (a connection that hangs without failing).
    #[error("writing a batch of {rows} row(s) did not finish within {}s ({attempts} attempts)", waited.as_secs())]
    TimedOut {
        /// The rows of the batch.
        rows: usize,
        /// Attempts made, the last one cut off.
        attempts: u32,
        /// How long it was tried.
        waited: Duration,
    },
    /// The write function panicked.
    #[error("writing a batch panicked: {0}")]
    Panicked(String),
    /// The write was cancelled: the runtime is shutting down.
    #[error("writing a batch was cancelled: the runtime is shutting down")]
    Cancelled,
}

fn what(rows: usize, row: Option<&str>) -> String {
    match row {
        Some(row) => format!("row {row} was"),
        None => format!("a batch of {rows} row(s) was"),
    }
}

/// The settings of a [`BatchWriter`].
#[derive(Debug, Clone, Copy)]
struct Settings {
    max_rows: usize,
    max_wait: Duration,
    in_flight: usize,
    backoff: Retry,
    give_up_after: Duration,
    split: bool,
    skip_rejected: bool,
}

/// A sink that writes rows in batches with one async function, for a
/// database or any store that takes many rows in one call: nanostream
/// batches, retries and acknowledges; the function only writes.
///
/// - **Batching**: a batch is written once it has
///   [`max_rows`](Self::max_rows) rows, or [`max_wait`](Self::max_wait)
///   after its first row, and at the end of input.
/// - **Acknowledgements**: the rows' acknowledgements (a Kafka source's
///   offsets) are released only once the write of every batch holding
///   them returned `Ok`, in the order the batches were made, so a source
///   commits nothing that is not stored. (Rows sent to a dead-letter
///   output are done once their dead letters are, which may be after
///   later batches.) A write that never succeeds
///   leaves them unreleased: the rows are read again after a restart. Make
///   the write idempotent (an upsert by primary key) and a re-read row is
///   harmless.
/// - **Retries**: a [`WriteError::Transient`] error writes the same batch
///   again after a backoff (100 ms, doubling up to 5 s), for up to
///   [`give_up_after`](Self::give_up_after) (60 s) from its first attempt;
///   then the writer fails with [`BatchError::GaveUp`], or
///   [`BatchError::TimedOut`] if a write hangs past it. While it retries, back-pressure holds the
///   pipeline: nothing is lost, nothing piles up.
/// - **Rejected rows**: a [`WriteError::Permanent`] error rejects the batch.
///   With [`split_rejected`](Self::split_rejected) the batch is written
///   again in halves, down to the rows to blame, so that the others are
///   stored. A rejected row fails the pipeline with
///   [`BatchError::Rejected`] naming it, is skipped with
///   [`skip_rejected`](Self::skip_rejected), or goes to a dead-letter
///   output with [`dead_letters`](Self::dead_letters).
/// - **Concurrency**: up to [`in_flight`](Self::in_flight) batches are
///   written at once (1 by default); give the function a connection pool
///   of at least that size. Batches written at once may be stored in
///   another order than they were made (one is retried while the next
///   commits): with more than one in flight, make overwrites independent
///   of order, for example an upsert that keeps the row with the higher
///   source offset.
///
/// Rejected rows are handled by the writer's own settings above, not by an
/// error policy wrapped around it (`skip_errors`, `retry`,
/// `sink_with_dead_letters`): a rejection is known only when its batch's
/// write ends, after the rows were consumed, so such a policy would act on
/// whichever row came next.
///
/// The function gets a [`Batch`] (it derefs to `[T]`) and returns a future
/// that does not borrow the writer (`'static`): clone the pool or client
/// into it. Any client library works. Its error's `Display` is what the
/// pipeline's error, the logs and dead letters show: make it say what the
/// store said (wrap a client error whose own `Display` is terse).
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::sinks::{BatchWriter, WriteError};
/// use std::sync::{Arc, Mutex};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// // A stand-in for a database table.
/// let table = Arc::new(Mutex::new(Vec::new()));
/// let db = table.clone();
/// let writer = BatchWriter::new(move |rows: nanostream::sinks::Batch<u32>| {
///     let db = db.clone();
///     async move {
///         // One transaction per batch, in a real store.
///         db.lock().unwrap().extend(rows.iter().copied());
///         Ok::<_, WriteError<std::io::Error>>(())
///     }
/// })
/// .max_rows(100);
///
/// let mut g = Topology::builder();
/// let rows = g.source("rows", from_iter(0..250u32));
/// g.sink("store", writer, rows);
/// g.build()?.run().await?;
/// assert_eq!(table.lock().unwrap().len(), 250);
/// # Ok(())
/// # }
/// ```
pub struct BatchWriter<T, W: WriteBatch<T>> {
    write: Arc<W>,
    settings: Settings,
    state: State<T, W::Error>,
}

/// What a writer holds between calls.
struct State<T, E> {
    /// Rows of the batch being filled.
    rows: Vec<T>,
    /// What they owe.
    owed: Acks,
    /// When its first row came.
    first_row_at: Option<Instant>,
    /// The acknowledgements of the input chunk being consumed; each batch
    /// that takes a row of it holds a copy.
    chunk: Acks,
    /// The current batch holds a copy of `chunk`.
    chunk_in_batch: bool,
    /// Writes started and not yet settled, oldest first.
    writing: VecDeque<Writing<T, E>>,
    /// When to look at finished writes if no input comes, and the wait
    /// before that.
    look_at: Option<Instant>,
    look_every: Duration,
    ctx: Option<Context>,
}

/// A batch being written.
struct Writing<T, E> {
    batch: Batch<T>,
    owed: Acks,
    task: Task<Outcome<E>>,
}

/// A spawned write, aborted if the writer is dropped (the pipeline was
/// torn down): its rows stay unacknowledged.
struct Task<R>(JoinHandle<R>);

impl<R> Drop for Task<R> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How the writes of a batch ended.
struct Outcome<E> {
    /// Parts rejected with a permanent error: their rows, as a range of the
    /// batch's rows.
    rejected: Vec<(Range<usize>, u32, Arc<E>)>,
    /// Transient errors outlasted `give_up_after`.
    gave_up: Option<(u32, Duration, E)>,
    /// A write outlasted `give_up_after`.
    timed_out: Option<(u32, Duration)>,
}

/// How soon a writer with writes in flight looks at them when no input
/// comes, to release the acknowledgements of those that finished; the wait
/// doubles while none finishes, up to [`LOOK_AT_MOST`].
const LOOK_FIRST: Duration = Duration::from_millis(5);
const LOOK_AT_MOST: Duration = Duration::from_millis(200);

impl<T, W, E> BatchWriter<T, W>
where
    T: Send + Sync + 'static,
    W: WriteBatch<T, Error = E>,
    E: fmt::Display + fmt::Debug + Send + Sync + 'static,
{
    /// A writer that writes each batch with `write`: batches of up to 1,000
    /// rows, sent at the latest 100 ms after their first row, one at a time.
    pub fn new(write: W) -> Self {
        Self {
            write: Arc::new(write),
            settings: Settings {
                max_rows: 1000,
                max_wait: Duration::from_millis(100),
                in_flight: 1,
                backoff: Retry::attempts(u32::MAX)
                    .backoff(Duration::from_millis(100))
                    .max_backoff(Duration::from_secs(5)),
                give_up_after: Duration::from_secs(60),
                split: false,
                skip_rejected: false,
            },
            state: State {
                rows: Vec::new(),
                owed: Acks::default(),
                first_row_at: None,
                chunk: Acks::default(),
                chunk_in_batch: false,
                writing: VecDeque::new(),
                look_at: None,
                look_every: LOOK_FIRST,
                ctx: None,
            },
        }
    }
}

impl<T, W: WriteBatch<T>> BatchWriter<T, W> {
    /// The most rows in one batch (at least 1; 1,000 by default).
    pub fn max_rows(mut self, rows: usize) -> Self {
        self.settings.max_rows = rows.max(1);
        self
    }

    /// How long a batch waits for more rows after its first (100 ms by
    /// default): the longest a row waits before it is written.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.settings.max_wait = wait;
        self
    }

    /// How many batches may be written at once (at least 1; 1 by
    /// default). Acknowledgements are still released in order.
    pub fn in_flight(mut self, batches: usize) -> Self {
        self.settings.in_flight = batches.max(1);
        self
    }

    /// The wait after the first transient failure of a batch, doubling up
    /// to `max` (100 ms and 5 s by default).
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.settings.backoff = Retry::attempts(u32::MAX).backoff(first).max_backoff(max);
        self
    }

    /// How long a batch may take, from its first attempt, its retries and
    /// (with [`split_rejected`](Self::split_rejected)) its halves included,
    /// before the writer fails with [`BatchError::GaveUp`] or
    /// [`BatchError::TimedOut`] (60 s by default; `Duration::MAX`: no limit).
    pub fn give_up_after(mut self, after: Duration) -> Self {
        self.settings.give_up_after = after;
        self
    }

    /// Splits a batch rejected with a permanent error into halves and
    /// writes them again, down to single rows, so that only the rows to
    /// blame are rejected and the rest is stored. Off by default: a
    /// rejection costs about two writes per row of the batch, so turn it
    /// on where one bad row must not hold back the others.
    pub fn split_rejected(mut self, split: bool) -> Self {
        self.settings.split = split;
        self
    }

    /// Skips rejected rows instead of failing: each is logged with its
    /// error and counted in the node's errors, and its acknowledgements are
    /// released as if it were written.
    pub fn skip_rejected(mut self) -> Self {
        self.settings.skip_rejected = true;
        self
    }

    /// Sends rejected rows to an output, each as a [`DeadLetter`] with the
    /// error (shared by the rows of a part rejected together), instead of
    /// failing: add the result with [`TopologyBuilder::node`](crate::TopologyBuilder::node)
    /// and read its output like any other (a dead-letter topic, a table of
    /// rejects). A row's acknowledgements are done once its dead letter is.
    ///
    /// # Examples
    ///
    /// ```
    /// use nanostream::prelude::*;
    /// use nanostream::sinks::{Batch, BatchWriter, WriteError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nanostream::Error> {
    /// // A store that rejects any batch holding a negative number.
    /// let writer = BatchWriter::new(|rows: Batch<i64>| async move {
    ///     match rows.iter().find(|r| **r < 0) {
    ///         Some(r) => Err(WriteError::Permanent(format!("{r} violates the check constraint"))),
    ///         None => Ok(()),
    ///     }
    /// })
    /// .split_rejected(true);
    ///
    /// let mut g = Topology::builder();
    /// let rows = g.source("rows", from_iter([1, 2, -3, 4]));
    /// let rejected = g.node("store", writer.dead_letters(), rows);
    /// let (sink, dead) = into_stream(8);
    /// g.sink("rejects", sink, rejected);
    /// g.build()?.run().await?;
    ///
    /// use futures::StreamExt;
    /// let dead: Vec<_> = dead.collect().await;
    /// assert_eq!(dead.len(), 1);
    /// assert_eq!(dead[0].input, -3);
    /// assert_eq!(dead[0].failure.to_string(), "-3 violates the check constraint");
    /// # Ok(())
    /// # }
    /// ```
    pub fn dead_letters(self) -> WithDeadLetters<T, W> {
        WithDeadLetters(self)
    }
}

impl<T, W: WriteBatch<T>> fmt::Debug for BatchWriter<T, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchWriter")
            .field("settings", &self.settings)
            .field("buffered", &self.state.rows.len())
            .field("writing", &self.state.writing.len())
            .finish_non_exhaustive()
    }
}

/// A [`BatchWriter`] whose rejected rows go to an output; see
/// [`BatchWriter::dead_letters`].
pub struct WithDeadLetters<T, W: WriteBatch<T>>(BatchWriter<T, W>);

impl<T, W: WriteBatch<T>> fmt::Debug for WithDeadLetters<T, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WithDeadLetters").field(&self.0).finish()
    }
}

/// A batch whose writes ended, to settle.
struct Finished<T, E> {
    batch: Batch<T>,
    owed: Acks,
    outcome: Result<Outcome<E>, BatchError<E>>,
}

impl<T, W, E> BatchWriter<T, W>
where
    T: Send + Sync + 'static,
    W: WriteBatch<T, Error = E>,
    E: fmt::Display + fmt::Debug + Send + Sync + 'static,
{
    /// Keeps the acknowledgements of the chunk about to be consumed; the
    /// previous chunk's rows are all in batches, which hold copies.
    fn hold_chunk(&mut self, acks: Acks) -> Acks {
        let previous = std::mem::replace(&mut self.state.chunk, acks);
        previous.release();
        self.state.chunk_in_batch = false;
        Acks::default()
    }

    /// No more input is ready: every row of the current chunk is in a
    /// batch, which holds a copy of its acknowledgements, so the writer
    /// lets go of its own (else the chunk would wait for the next input to
    /// be done).
    fn input_idle(&mut self) {
        self.state.chunk.release_all();
        self.state.chunk_in_batch = false;
    }

    fn push(&mut self, row: T) {
        let state = &mut self.state;
        if !state.chunk_in_batch {
            state.owed.extend_from(&state.chunk);
            state.chunk_in_batch = true;
        }
        if state.rows.is_empty() {
            state.first_row_at = Some(Instant::now());
        }
        state.rows.push(row);
    }

    fn batch_is_full(&self) -> bool {
        self.state.rows.len() >= self.settings.max_rows
    }

    fn batch_is_due(&self) -> bool {
        self.due_at().is_some_and(|due| due <= Instant::now())
    }

    /// When the current batch must go out (`None`: no batch, or a wait
    /// too long to count, as `Duration::MAX` says "by size only").
    fn due_at(&self) -> Option<Instant> {
        self.state.first_row_at.and_then(|at| at.checked_add(self.settings.max_wait))
    }

    fn can_start(&self) -> bool {
        self.state.writing.len() < self.settings.in_flight
    }

    /// Starts writing the current batch (there must be room).
    fn start(&mut self) {
        let state = &mut self.state;
        if state.rows.is_empty() {
            return;
        }
        let batch = Batch::new(std::mem::take(&mut state.rows));
        let owed = std::mem::take(&mut state.owed);
        state.first_row_at = None;
        state.chunk_in_batch = false;
        let node = state.ctx.as_ref().map_or_else(String::new, |ctx| ctx.name().to_owned());
        let span = tracing::debug_span!("batch_write", node = %node, rows = batch.len());
        let write = write_all(self.write.clone(), batch.clone(), self.settings, state.ctx.clone());
        let task = Task(spawn_named(&node, write.instrument(span)));
        state.writing.push_back(Writing { batch, owed, task });
        if state.look_at.is_none() {
            state.look_every = LOOK_FIRST;
            state.look_at = Some(Instant::now() + LOOK_FIRST);
        }
    }

    /// The oldest write, once it has finished.
    async fn oldest(&mut self) -> Option<Finished<T, E>> {
        let writing = self.state.writing.front_mut()?;
        let outcome = (&mut writing.task.0).await;
        let Writing { batch, owed, .. } = self.state.writing.pop_front()?;
        Some(Finished { batch, owed, outcome: joined(outcome) })
    }

    /// The oldest write, if it has finished.
    fn oldest_now(&mut self) -> Option<Finished<T, E>> {
        if !self.state.writing.front()?.task.0.is_finished() {
            return None;
        }
        self.oldest().now_or_never().flatten()
    }

    /// Moves on after an input chunk or a timer (`all`: at the end of
    /// input, writing what is left and waiting for every write): a due or
    /// full batch is started, after waiting for room, and the writes that
    /// finished are settled, in order.
    async fn progress(&mut self, all: bool) -> Result<Vec<Settled<T, E>>, BatchError<E>> {
        let mut settled = Vec::new();
        loop {
            let start = !self.state.rows.is_empty() && (all || self.batch_is_full() || self.batch_is_due());
            if start && self.can_start() {
                self.start();
                continue;
            }
            let finished = if start || all { self.oldest().await } else { self.oldest_now() };
            match finished {
                Some(finished) => settled.push(self.settle(finished)?),
                None => break,
            }
        }
        let state = &mut self.state;
        state.look_every = if settled.is_empty() { (state.look_every * 2).min(LOOK_AT_MOST) } else { LOOK_FIRST };
        state.look_at = (!state.writing.is_empty()).then(|| Instant::now() + state.look_every);
        if all {
            self.input_idle();
        }
        Ok(settled)
    }

    fn deadline(&self) -> Option<Instant> {
        match (self.due_at(), self.state.look_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A finished batch: written (its acknowledgements released), failed
    /// for good (an error), or with rejected rows for the caller.
    fn settle(&self, finished: Finished<T, E>) -> Result<Settled<T, E>, BatchError<E>> {
        let Finished { batch, owed, outcome } = finished;
        let outcome = outcome?;
        if let Some((attempts, waited, error)) = outcome.gave_up {
            return Err(BatchError::GaveUp { rows: batch.len(), attempts, waited, error });
        }
        if let Some((attempts, waited)) = outcome.timed_out {
            return Err(BatchError::TimedOut { rows: batch.len(), attempts, waited });
        }
        if outcome.rejected.is_empty() {
            owed.release();
            return Ok(Settled::Written);
        }
        Ok(Settled::Rejected { batch, parts: outcome.rejected, owed })
    }
}

/// What became of a batch; see [`BatchWriter::settle`].
enum Settled<T, E> {
    Written,
    Rejected { batch: Batch<T>, parts: Vec<(Range<usize>, u32, Arc<E>)>, owed: Acks },
}

/// A row as an error names it: its `Debug` output, cut to 300 characters.
fn describe<T: fmt::Debug>(row: &T) -> String {
    let mut text = format!("{row:?}");
    if text.len() > 300 {
        let cut = (0..=300).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Writes a batch: retries transient errors, and with `split` writes the
/// halves of a rejected batch again, down to the rows to blame.
async fn write_all<T, W: WriteBatch<T>>(
    write: Arc<W>,
    batch: Batch<T>,
    settings: Settings,
    ctx: Option<Context>,
) -> Outcome<W::Error> {
    let mut outcome = Outcome { rejected: Vec::new(), gave_up: None, timed_out: None };
    // One budget for the batch, its halves included.
    let started = Instant::now();
    let deadline = started.checked_add(settings.give_up_after);
    // Parts to write, the next last.
    let mut parts = vec![batch];
    while let Some(part) = parts.pop() {
        match attempt(&*write, &part, settings, (started, deadline), ctx.as_ref()).await {
            Attempt::Written => {}
            Attempt::GaveUp(attempts, waited, error) => {
                outcome.gave_up = Some((attempts, waited, error));
                return outcome;
            }
            Attempt::TimedOut(attempts, waited) => {
                outcome.timed_out = Some((attempts, waited));
                return outcome;
            }
            Attempt::Rejected(_, error) if settings.split && part.len() > 1 => {
                if let Some(ctx) = &ctx {
                    tracing::debug!(node = %ctx.name(), rows = part.len(), %error, "a batch was rejected; writing its halves");
                }
                let (first, second) = part.halves();
                parts.push(second);
                parts.push(first);
            }
            Attempt::Rejected(attempts, error) => {
                outcome.rejected.push((part.range.clone(), attempts, Arc::new(error)))
            }
        }
    }
    outcome
}

enum Attempt<E> {
    Written,
    Rejected(u32, E),
    GaveUp(u32, Duration, E),
    TimedOut(u32, Duration),
}

/// Writes one part, again after each transient error, until the batch's
/// deadline (`give_up_after` from its first attempt; `None`: never), which
/// also cuts off a write that hangs.
async fn attempt<T, W: WriteBatch<T>>(
    write: &W,
    part: &Batch<T>,
    settings: Settings,
    (started, deadline): (Instant, Option<Instant>),
    ctx: Option<&Context>,
) -> Attempt<W::Error> {
    let mut failures = 0u32;
    loop {
        let written = write.write(part.clone());
        let result = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, written).await {
                Ok(result) => result,
                Err(_) => return Attempt::TimedOut(failures + 1, started.elapsed()),
            },
            None => written.await,
        };
        match result {
            Ok(()) => return Attempt::Written,
            Err(WriteError::Permanent(error)) => return Attempt::Rejected(failures + 1, error),
            Err(WriteError::Transient(error)) => {
                failures += 1;
                let delay = settings.backoff.delay_after(failures);
                let waited = started.elapsed();
                if deadline.is_some_and(|deadline| Instant::now() + delay >= deadline) {
                    return Attempt::GaveUp(failures, waited, error);
                }
                if let Some(ctx) = ctx {
                    ctx.record_error();
                    tracing::warn!(node = %ctx.name(), attempt = failures, %error, ?delay, rows = part.len(), "writing a batch failed; retrying");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn joined<R, E>(result: Result<R, tokio::task::JoinError>) -> Result<R, BatchError<E>> {
    result.map_err(|error| {
        if error.is_panic() {
            let panic = error.into_panic();
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".to_owned());
            BatchError::Panicked(message)
        } else {
            BatchError::Cancelled
        }
    })
}

/// Spawns a write, named after its node where tokio supports names.
#[cfg(tokio_unstable)]
fn spawn_named<F>(node: &str, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let name = format!("{node}.write");
    match tokio::task::Builder::new().name(&name).spawn(future) {
        Ok(handle) => handle,
        Err(error) => panic!("tokio failed to spawn {name}: {error}"),
    }
}

#[cfg(not(tokio_unstable))]
fn spawn_named<F>(_node: &str, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future)
}

impl<T, W, E> Sink for BatchWriter<T, W>
where
    T: fmt::Debug + Send + Sync + 'static,
    W: WriteBatch<T, Error = E>,
    E: fmt::Display + fmt::Debug + Send + Sync + 'static,
{
    type In = T;
    type Error = BatchError<E>;

    async fn setup(&mut self, ctx: &Context) -> Result<(), Self::Error> {
        self.state.ctx = Some(ctx.clone());
        Ok(())
    }

    fn hold(&mut self, acks: Acks) -> Acks {
        self.hold_chunk(acks)
    }

    async fn consume(&mut self, row: T) -> Result<(), Self::Error> {
        self.push(row);
        if self.batch_is_full() { self.progress_here(false).await } else { Ok(()) }
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        self.input_idle();
        self.progress_here(false).await
    }

    fn deadline(&self) -> Option<Instant> {
        BatchWriter::deadline(self)
    }

    async fn on_timer(&mut self) -> Result<(), Self::Error> {
        self.progress_here(false).await
    }

    async fn finish(&mut self) -> Result<(), Self::Error> {
        self.progress_here(true).await
    }
}

impl<T, W, E> BatchWriter<T, W>
where
    T: fmt::Debug + Send + Sync + 'static,
    W: WriteBatch<T, Error = E>,
    E: fmt::Display + fmt::Debug + Send + Sync + 'static,
{
    /// [`progress`](Self::progress) for a writer without a dead-letter
    /// output: a rejected row fails it, or is skipped.
    async fn progress_here(&mut self, all: bool) -> Result<(), BatchError<E>> {
        for settled in self.progress(all).await? {
            let Settled::Rejected { batch, parts, owed } = settled else { continue };
            if !self.settings.skip_rejected {
                let (range, attempts, error) = &parts[0];
                let row = (range.len() == 1).then(|| describe(&batch.rows[range.start]));
                return Err(BatchError::Rejected { rows: range.len(), row, attempts: *attempts, error: error.clone() });
            }
            for (range, attempts, error) in &parts {
                for row in &batch.rows[range.clone()] {
                    if let Some(ctx) = &self.state.ctx {
                        ctx.record_error();
                        tracing::warn!(node = %ctx.name(), attempts, %error, row = %describe(row), "skipping a rejected row");
                    }
                }
            }
            owed.release();
        }
        Ok(())
    }
}

impl<T, W, E> Node for WithDeadLetters<T, W>
where
    T: Clone + Send + Sync + 'static,
    W: WriteBatch<T, Error = E>,
    E: fmt::Display + fmt::Debug + Send + Sync + 'static,
{
    type In = T;
    type Out = DeadLetter<T, Arc<E>>;
    type Error = BatchError<E>;

    async fn setup(&mut self, ctx: &Context) -> Result<(), Self::Error> {
        self.0.state.ctx = Some(ctx.clone());
        Ok(())
    }

    fn hold(&mut self, acks: Acks) -> Acks {
        self.0.hold_chunk(acks)
    }

    async fn process(&mut self, row: T, out: &mut Emitter<Self::Out>) -> Result<(), Self::Error> {
        self.0.push(row);
        if self.0.batch_is_full() { self.progress(false, out).await } else { Ok(()) }
    }

    async fn flush(&mut self, out: &mut Emitter<Self::Out>) -> Result<(), Self::Error> {
        self.0.input_idle();
        self.progress(false, out).await
    }

    fn deadline(&self) -> Option<Instant> {
        self.0.deadline()
    }

    async fn on_timer(&mut self, out: &mut Emitter<Self::Out>) -> Result<(), Self::Error> {
        self.progress(false, out).await
    }

    async fn finish(&mut self, out: &mut Emitter<Self::Out>) -> Result<(), Self::Error> {
        self.progress(true, out).await
    }
}

impl<T, W, E> WithDeadLetters<T, W>
where
    T: Clone + Send + Sync + 'static,
    W: WriteBatch<T, Error = E>,
    E: fmt::Display + fmt::Debug + Send + Sync + 'static,
{
    /// [`BatchWriter::progress`], emitting rejected rows as dead letters
    /// that owe their batch's acknowledgements.
    async fn progress(&mut self, all: bool, out: &mut Emitter<DeadLetter<T, Arc<E>>>) -> Result<(), BatchError<E>> {
        let node = self.0.state.ctx.as_ref().map_or_else(String::new, |ctx| ctx.name().to_owned());
        for settled in self.0.progress(all).await? {
            let Settled::Rejected { batch, parts, owed } = settled else { continue };
            out.begin_batch(owed);
            for (range, attempts, error) in parts {
                for row in &batch.rows[range] {
                    if let Some(ctx) = &self.0.state.ctx {
                        ctx.record_error();
                    }
                    let letter = DeadLetter {
                        node: node.clone(),
                        input: row.clone(),
                        failure: Failure::Error(error.clone()),
                        attempts,
                    };
                    out.emit(letter).await;
                }
            }
            out.end_batch();
        }
        Ok(())
    }
}
