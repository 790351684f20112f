//! Graph export: Graphviz DOT and Mermaid.

use std::fmt::Write as _;

use crate::topology::{Graph, NodeKind};

fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) fn to_dot(graph: &Graph) -> String {
    let mut out = String::from("digraph nanostream {\n    rankdir=LR;\n");
    for node in &graph.nodes {
        let shape = match node.kind {
            NodeKind::Source => "invhouse",
            NodeKind::Node => "box",
            NodeKind::Sink => "house",
            NodeKind::Placeholder => "ellipse",
        };
        let _ = writeln!(out, "    {} [shape={shape}];", dot_quote(&node.name));
    }
    for edge in &graph.edges {
        let _ = writeln!(
            out,
            "    {} -> {} [label={}];",
            dot_quote(&graph.nodes[edge.from].name),
            dot_quote(&graph.nodes[edge.to].name),
            dot_quote(&edge.label()),
        );
    }
    out.push_str("}\n");
    out
}

fn mermaid_text(s: &str) -> String {
    s.replace('"', "#quot;")
}

pub(crate) fn to_mermaid(graph: &Graph) -> String {
    let mut out = String::from("flowchart LR\n");
    for (i, node) in graph.nodes.iter().enumerate() {
        let name = mermaid_text(&node.name);
        let _ = match node.kind {
            NodeKind::Source => writeln!(out, "    n{i}[/\"{name}\"/]"),
            NodeKind::Node => writeln!(out, "    n{i}[\"{name}\"]"),
            NodeKind::Sink => writeln!(out, "    n{i}[\\\"{name}\"\\]"),
            NodeKind::Placeholder => writeln!(out, "    n{i}([\"{name}\"])"),
        };
    }
    for edge in &graph.edges {
        let _ = writeln!(out, "    n{} -->|\"{}\"| n{}", edge.from, mermaid_text(&edge.label()), edge.to);
    }
    out
}
