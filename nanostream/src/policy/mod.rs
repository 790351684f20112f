//! Error policies: what a node does when processing an item fails.
//!
//! The default is to fail: the pipeline stops and [`Error::NodeFailed`]
//! names the node. The wrappers here change that per node:
//!
//! - [`NodeExt::skip_errors`](crate::NodeExt::skip_errors): count the error
//!   in the node's metrics, log it, drop the item, go on;
//! - [`NodeExt::retry`](crate::NodeExt::retry): try the item again with
//!   exponential backoff, up to a number of attempts;
//! - [`TopologyBuilder::node_with_dead_letters`](crate::TopologyBuilder::node_with_dead_letters)
//!   and [`sink_with_dead_letters`](crate::TopologyBuilder::sink_with_dead_letters):
//!   route the failing input and its error, as a [`DeadLetter`], to other
//!   nodes of the graph.
//!
//! Each is a [`Policy`]: a layer around a node's per-item step, written
//! once for every node and sink ([`WithPolicy`] forwards the rest of the
//! node's lifecycle). [`NodeExt::with_policy`](crate::NodeExt::with_policy)
//! applies a policy of your own.
//!
//! A panic while processing an item is an error like any other: skipped or
//! dead-lettered by those policies, and a failure of the node otherwise.
//!
//! [`Error::NodeFailed`]: crate::Error::NodeFailed

pub(crate) mod dead_letter;
mod failure;
mod layer;
mod retry;
mod skip;

pub use failure::{DeadLetter, Failure};
pub use layer::{Policy, WithPolicy};
pub use retry::{Retry, Retrying};
pub use skip::SkipErrors;
