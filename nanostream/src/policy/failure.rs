//! What a failure is: the node's error or a panic, and the dead letter that carries it.

use std::fmt;

use crate::error::BoxError;

/// Why processing an item failed: the node's error, or a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure<E> {
    /// The node returned this error.
    Error(E),
    /// The node panicked with this message.
    Panic(String),
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Error(error) => error.fmt(f),
            Failure::Panic(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// An input a node failed on, with the failure, routed by
/// [`TopologyBuilder::node_with_dead_letters`](crate::TopologyBuilder::node_with_dead_letters).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter<In, E> {
    /// The node that failed.
    pub node: String,
    /// The input it failed on.
    pub input: In,
    /// What went wrong.
    pub failure: Failure<E>,
    /// How many times the item was tried: more than 1 when a
    /// [`retry`](crate::NodeExt::retry) policy inside the dead-letter one
    /// tried it again before giving up.
    pub attempts: u32,
}

pub(crate) fn describe<E: Into<BoxError>>(error: E) -> String {
    error.into().to_string()
}
