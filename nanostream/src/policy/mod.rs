//! Error policies: what a node does when processing an item fails.
//!
//! The default is to fail: the pipeline stops and [`Error::NodeFailed`]
//! names the node. The wrappers here change that per node:
//!
//! - [`NodeExt::skip_errors`](crate::NodeExt::skip_errors): count the error
//!   in the node's metrics, log it, drop the item, go on;
//! - [`NodeExt::retry`](crate::NodeExt::retry): try the item again with
//!   exponential backoff, up to a number of attempts;
//! - [`TopologyBuilder::node_with_dead_letters`](crate::TopologyBuilder::node_with_dead_letters):
//!   route the failing input and its error, as a [`DeadLetter`], to other
//!   nodes of the graph.
//!
//! A panic while processing an item is an error like any other: skipped or
//! dead-lettered by those policies, and a failure of the node otherwise.
//!
//! [`Error::NodeFailed`]: crate::Error::NodeFailed

pub(crate) mod dead_letter;
mod failure;
mod retry;
mod skip;

pub use failure::{DeadLetter, Failure};
pub use retry::{Retry, WithRetry};
pub use skip::SkipErrors;
