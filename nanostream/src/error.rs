//! Errors returned by building and running a topology.

use std::time::Duration;

/// A boxed error that any node error converts into.
///
/// Node authors return their own error types; the runtime boxes them when it
/// reports a failure, so `anyhow::Error`, `std::io::Error`, a `String` and any
/// other type convertible into this box all work.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error and its causes, for `main` to return: `Result<(), Report>`
/// prints the whole chain when it fails, where a plain [`Error`] prints
/// only its own line through `Display`, or its fields through `Debug`.
///
/// Any error converts into it with `?`.
///
/// # Examples
///
/// ```
/// use nanostream::error::Report;
/// use nanostream::prelude::*;
///
/// #[node]
/// async fn parse(line: String) -> Result<u32, std::num::ParseIntError> {
///     line.parse()
/// }
///
/// async fn pipeline() -> Result<(), Report> {
///     let mut g = Topology::builder();
///     let lines = g.source("lines", from_iter(["1", "x"].map(String::from)));
///     let numbers = g.node("parse", parse(), lines);
///     g.sink("print", for_each(|n: u32| async move { println!("{n}") }), numbers);
///     g.build()?.run().await?;
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let report = pipeline().await.expect_err("`x` is not a number");
/// assert_eq!(report.to_string(), "node `parse` failed: invalid digit found in string");
/// assert_eq!(format!("{report:?}"), "node `parse` failed\n\nCaused by:\n    invalid digit found in string");
/// # }
/// ```
pub struct Report(BoxError);

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Report {
    fn from(error: E) -> Self {
        Self(Box::new(error))
    }
}

impl Report {
    fn causes(&self) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
        let mut next = self.0.source();
        std::iter::from_fn(move || {
            let cause = next?;
            next = cause.source();
            Some(cause)
        })
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        for cause in self.causes() {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let causes: Vec<_> = self.causes().collect();
        if !causes.is_empty() {
            write!(f, "\n\nCaused by:")?;
            for (i, cause) in causes.iter().enumerate() {
                if causes.len() > 1 {
                    write!(f, "\n    {i}: {cause}")?;
                } else {
                    write!(f, "\n    {cause}")?;
                }
            }
        }
        Ok(())
    }
}

/// Everything that can go wrong when a topology is built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The graph was wired incorrectly; nothing was started.
    #[error(transparent)]
    Build(#[from] BuildError),

    /// A node returned an error; the rest of the pipeline was stopped.
    #[error("node `{node}` failed")]
    NodeFailed {
        /// The name of the node that failed.
        node: String,
        /// The error the node returned.
        #[source]
        source: BoxError,
    },

    /// A node panicked; the rest of the pipeline was stopped.
    #[error("node `{node}` panicked: {message}")]
    NodePanicked {
        /// The name of the node that panicked.
        node: String,
        /// The panic message, when it was a string.
        message: String,
    },

    /// The pipeline's tasks were cancelled from outside before it finished,
    /// for example because its Tokio runtime shut down.
    #[error("the pipeline was cancelled before it finished")]
    Cancelled,

    /// Graceful shutdown did not finish within its deadline, so the remaining
    /// nodes were aborted.
    #[error("shutdown did not finish within {deadline:?}; aborted {}", .report)]
    ShutdownTimedOut {
        /// The deadline that passed.
        deadline: Duration,
        /// What was abandoned.
        report: AbandonedReport,
    },
}

/// What a shutdown abandoned when its deadline passed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AbandonedReport {
    /// Nodes that had not finished, in topology order.
    pub nodes: Vec<AbandonedNode>,
}

impl AbandonedReport {
    /// Total number of items that were queued on the input edges of the
    /// abandoned nodes (items a node held in hand are not counted).
    pub fn queued_items(&self) -> usize {
        self.nodes.iter().map(|n| n.queued_items).sum()
    }
}

impl std::fmt::Display for AbandonedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.nodes.is_empty() {
            return f.write_str("no nodes");
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{}` ({} queued items)", node.name, node.queued_items)?;
        }
        Ok(())
    }
}

/// A node that was still running when a shutdown deadline passed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AbandonedNode {
    /// The node's name.
    pub name: String,
    /// Items waiting on the node's input edges when it was aborted.
    pub queued_items: usize,
}

/// A wiring mistake found by [`TopologyBuilder::build`](crate::TopologyBuilder::build).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two nodes were given the same name.
    #[error("node name `{name}` is used twice")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A node name was empty.
    #[error("a node name is empty")]
    EmptyName,
    /// Edges form a cycle; the names list the cycle in order.
    #[error("nodes form a cycle: {}", .nodes.join(" -> "))]
    Cycle {
        /// The nodes on the cycle, the first repeated at the end.
        nodes: Vec<String>,
    },
    /// An edge or the topology default was given a capacity of zero.
    #[error("edge into node `{node}` has capacity 0; capacities must be at least 1")]
    ZeroCapacity {
        /// The node the edge feeds.
        node: String,
    },
    /// The chunk size was set to zero.
    #[error("chunk size is 0; it must be at least 1")]
    ZeroChunkSize,
    /// A node or sink has no input edge (for example an empty list of
    /// inputs, or a placeholder that was never connected).
    #[error("node `{node}` has no input")]
    NoInput {
        /// The node without input.
        node: String,
    },
    /// A node's output is not read by any node or sink.
    #[error("the output of node `{node}` is not read by any node; connect it or end it with a sink")]
    UnreadOutput {
        /// The node whose output nobody reads.
        node: String,
    },
    /// A split output (round robin or partition) must have exactly one
    /// reader per part.
    #[error("part {part} of the split output of node `{node}` has {readers} readers; each part needs exactly one")]
    SplitReaders {
        /// The node whose output was split.
        node: String,
        /// The part, counted from 0.
        part: usize,
        /// How many nodes read it.
        readers: usize,
    },
    /// An output was both split and read whole.
    #[error("the output of node `{node}` is split, so it cannot also be read whole")]
    MixedFanOut {
        /// The node whose output was split.
        node: String,
    },
    /// A parallel node was given zero workers.
    #[error("parallel node `{node}` needs at least one worker")]
    ZeroWorkers {
        /// The parallel node.
        node: String,
    },
    /// An output handle of another builder was used.
    #[error("node `{node}` reads an output that belongs to another topology builder")]
    ForeignOutput {
        /// The node that was given the foreign output.
        node: String,
    },
    /// The topology has no node at all.
    #[error("the topology is empty")]
    Empty,
}
