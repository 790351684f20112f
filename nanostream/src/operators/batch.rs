//! `batch`: groups items into `Vec`s by count or time.

use std::convert::Infallible;
use std::time::Duration;

use tokio::time::Instant;

use crate::edge::emitter::{Emitter, Held};
use crate::node::Node;

/// Groups items into `Vec`s; see [`batch`].
#[derive(Debug)]
pub struct Batch<T> {
    max_items: usize,
    max_wait: Duration,
    items: Vec<T>,
    /// When the first item of the open batch arrived.
    opened: Option<Instant>,
    held: Held,
}

/// A node that groups items into batches of at most `max_items`.
///
/// A batch is emitted when it is full, when `max_wait` has passed since its
/// first item arrived (the timer fires even if no further input comes), and
/// when the input ends. Batches are never empty.
///
/// # Examples
///
/// ```
/// use nanostream::prelude::*;
/// use nanostream::operators::batch;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nanostream::Error> {
/// let mut g = Topology::builder();
/// let rows = g.source("rows", from_iter(1..=7u32));
/// let batches = g.node("batch", batch(3, Duration::from_secs(1)), rows);
/// let (sink, out) = into_stream(8);
/// g.sink("insert", sink, batches);
/// g.build()?.run().await?;
/// use futures::StreamExt;
/// assert_eq!(out.collect::<Vec<_>>().await, [vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
/// # Ok(())
/// # }
/// ```
pub fn batch<T>(max_items: usize, max_wait: Duration) -> Batch<T> {
    let max_items = max_items.max(1);
    Batch { max_items, max_wait, items: Vec::new(), opened: None, held: Held::default() }
}

impl<T> Batch<T> {
    async fn emit(&mut self, out: &mut Emitter<Vec<T>>)
    where
        T: Send + 'static,
    {
        self.opened = None;
        if self.items.is_empty() {
            return;
        }
        let next = Vec::with_capacity(self.max_items.min(1024));
        out.adopt(&mut self.held);
        out.emit(std::mem::replace(&mut self.items, next)).await;
    }
}

impl<T: Send + 'static> Node for Batch<T> {
    type In = T;
    type Out = Vec<T>;
    type Error = Infallible;

    async fn process(&mut self, item: T, out: &mut Emitter<Vec<T>>) -> Result<(), Infallible> {
        if self.items.is_empty() {
            self.opened = Some(Instant::now());
        }
        out.hold(&mut self.held);
        self.items.push(item);
        if self.items.len() >= self.max_items {
            self.emit(out).await;
        }
        Ok(())
    }

    fn deadline(&self) -> Option<Instant> {
        self.opened.map(|opened| opened + self.max_wait)
    }

    async fn on_timer(&mut self, out: &mut Emitter<Vec<T>>) -> Result<(), Infallible> {
        self.emit(out).await;
        Ok(())
    }

    async fn finish(&mut self, out: &mut Emitter<Vec<T>>) -> Result<(), Infallible> {
        self.emit(out).await;
        Ok(())
    }
}
