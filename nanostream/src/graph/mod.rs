//! The graph and its validation: the builder users wire nodes with, the
//! checks `build` runs, which edges fuse, the slots through which each node
//! finds its edges, and the exports (DOT, Mermaid).

pub(crate) mod builder;
pub(crate) mod export;
pub(crate) mod model;
pub(crate) mod wiring;
