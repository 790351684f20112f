//! `skip_errors`: count the error, drop the item, go on.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::time::Instant;

use crate::edge::acks::Acks;
use crate::edge::emitter::Emitter;
use crate::node::{Context, Node, Now, Sink};
use crate::runtime::step::panic_message;

use crate::policy::failure::describe;

/// A node or sink that skips items it fails on; see
/// [`NodeExt::skip_errors`](crate::NodeExt::skip_errors).
#[derive(Debug)]
pub struct SkipErrors<N> {
    inner: N,
    ctx: Option<Context>,
}

impl<N> SkipErrors<N> {
    pub(crate) fn new(inner: N) -> Self {
        Self { inner, ctx: None }
    }

    fn skipped(&self, failure: String) {
        if let Some(ctx) = &self.ctx {
            ctx.record_error();
            tracing::warn!(node = %ctx.name(), error = %failure, "skipping an item the node failed on");
        }
    }
}

impl<N: Node> Node for SkipErrors<N> {
    type In = N::In;
    type Out = N::Out;
    type Error = N::Error;

    async fn setup(&mut self, ctx: &Context) -> Result<(), N::Error> {
        self.ctx = Some(ctx.clone());
        self.inner.setup(ctx).await
    }

    async fn process(&mut self, item: N::In, out: &mut Emitter<N::Out>) -> Result<(), N::Error> {
        match AssertUnwindSafe(self.inner.process(item, out)).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.skipped(describe(error)),
            Err(panic) => self.skipped(format!("panicked: {}", panic_message(&*panic))),
        }
        Ok(())
    }

    #[inline]
    fn process_now(&mut self, item: N::In) -> Now<N::In, N::Out, N::Error> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.process_now(item))) {
            Ok(Now::Fail(error)) => {
                self.skipped(describe(error));
                Now::Nothing
            }
            Ok(now) => now,
            Err(panic) => {
                self.skipped(format!("panicked: {}", panic_message(&*panic)));
                Now::Nothing
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.inner.deadline()
    }

    fn on_timer(&mut self, out: &mut Emitter<N::Out>) -> impl Future<Output = Result<(), N::Error>> + Send {
        self.inner.on_timer(out)
    }

    fn finish(&mut self, out: &mut Emitter<N::Out>) -> impl Future<Output = Result<(), N::Error>> + Send {
        self.inner.finish(out)
    }
}

impl<K: Sink> Sink for SkipErrors<K> {
    type In = K::In;
    type Error = K::Error;

    async fn setup(&mut self, ctx: &Context) -> Result<(), K::Error> {
        self.ctx = Some(ctx.clone());
        self.inner.setup(ctx).await
    }

    fn hold(&mut self, acks: Acks) -> Acks {
        self.inner.hold(acks)
    }

    async fn consume(&mut self, item: K::In) -> Result<(), K::Error> {
        match AssertUnwindSafe(self.inner.consume(item)).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.skipped(describe(error)),
            Err(panic) => self.skipped(format!("panicked: {}", panic_message(&*panic))),
        }
        Ok(())
    }

    #[inline]
    fn consume_now(&mut self, item: K::In) -> Now<K::In, (), K::Error> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.consume_now(item))) {
            Ok(Now::Fail(error)) => {
                self.skipped(describe(error));
                Now::Nothing
            }
            Ok(now) => now,
            Err(panic) => {
                self.skipped(format!("panicked: {}", panic_message(&*panic)));
                Now::Nothing
            }
        }
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), K::Error>> + Send {
        self.inner.flush()
    }

    fn deadline(&self) -> Option<Instant> {
        self.inner.deadline()
    }

    fn on_timer(&mut self) -> impl Future<Output = Result<(), K::Error>> + Send {
        self.inner.on_timer()
    }

    fn finish(&mut self) -> impl Future<Output = Result<(), K::Error>> + Send {
        self.inner.finish()
    }
}
