//! The edges between nodes: acknowledgements, the bounded channels that
//! carry chunks between tasks, and the emitter through which a node's
//! outputs reach its channels (routed by broadcast, round robin or key) or
//! the next node of its fused chain.

pub(crate) mod acks;
pub(crate) mod buffer;
pub(crate) mod channel;
pub(crate) mod emitter;
pub(crate) mod routing;
