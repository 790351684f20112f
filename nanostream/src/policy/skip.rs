//! `skip_errors`: count the error, drop the item, go on.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use crate::edge::emitter::Emitter;
use crate::node::{Context, Node, Now};
use crate::policy::failure::describe;
use crate::policy::layer::Policy;
use crate::runtime::step::panic_message;

/// The policy that skips the items a node fails on (an error or a panic);
/// see [`NodeExt::skip_errors`](crate::NodeExt::skip_errors).
#[derive(Debug, Default)]
pub struct SkipErrors {
    ctx: Option<Context>,
}

impl SkipErrors {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn skipped(&self, failure: String) {
        if let Some(ctx) = &self.ctx {
            ctx.record_error();
            tracing::warn!(node = %ctx.name(), error = %failure, "skipping an item the node failed on");
        }
    }
}

impl<N: Node> Policy<N> for SkipErrors {
    fn setup(&mut self, ctx: &Context) {
        self.ctx = Some(ctx.clone());
    }

    async fn process(&mut self, node: &mut N, item: N::In, out: &mut Emitter<N::Out>) -> Result<(), N::Error> {
        match AssertUnwindSafe(node.process(item, out)).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.skipped(describe(error)),
            Err(panic) => self.skipped(format!("panicked: {}", panic_message(&*panic))),
        }
        Ok(())
    }

    #[inline]
    fn process_now(&mut self, node: &mut N, item: N::In) -> Now<N::In, N::Out, N::Error> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| node.process_now(item))) {
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
}
