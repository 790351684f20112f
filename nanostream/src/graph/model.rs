//! The graph a topology was built from: its nodes, its edges, which nodes
//! share a task. Kept for graph exports and reports.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Source,
    Node,
    Sink,
    Placeholder,
}

#[derive(Debug)]
pub(crate) struct GraphNode {
    pub(crate) name: String,
    pub(crate) kind: NodeKind,
    /// The node whose task this node runs in (itself, unless fused).
    pub(crate) task: usize,
}

#[derive(Debug)]
pub(crate) struct GraphEdge {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) capacity: usize,
    /// How the sending node spreads items, when it has several readers.
    pub(crate) policy: Option<String>,
    /// The reader runs in the writer's task: no queue.
    pub(crate) fused: bool,
}

impl GraphEdge {
    pub(crate) fn label(&self) -> String {
        if self.fused {
            return "fused".to_owned();
        }
        match &self.policy {
            Some(policy) if self.capacity == 0 => policy.clone(),
            Some(policy) => format!("{policy}, capacity {}", self.capacity),
            None => format!("capacity {}", self.capacity),
        }
    }
}

/// The wiring of a topology.
#[derive(Debug)]
pub(crate) struct Graph {
    pub(crate) nodes: Vec<GraphNode>,
    pub(crate) edges: Vec<GraphEdge>,
}
