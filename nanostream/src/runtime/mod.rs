//! The runtime: the task each node (or fused chain) runs, the stages of a
//! fused chain, the supervisor that stops everything at the first failure,
//! the handle users hold, and the statistics and reports.

pub(crate) mod fused;
pub(crate) mod report;
pub(crate) mod stats;
pub(crate) mod status;
pub(crate) mod step;
pub(crate) mod task;
pub(crate) mod topology;
