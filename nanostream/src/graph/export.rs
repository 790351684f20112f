//! Graph export: Graphviz DOT and Mermaid.

use std::fmt::Write as _;

use crate::graph::model::{Graph, NodeKind};

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

/// The nodes of each task that runs more than one (a fused chain), by the
/// index of the task's first node; every other node is a task alone.
fn fused_tasks(graph: &Graph) -> Vec<(usize, Vec<usize>)> {
    let mut tasks: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        match tasks.iter_mut().find(|(task, _)| *task == node.task) {
            Some((_, members)) => members.push(i),
            None => tasks.push((node.task, vec![i])),
        }
    }
    tasks.retain(|(_, members)| members.len() > 1);
    tasks
}

/// The graph in DOT; `counts`, when given, is a second line for each
/// node's label (its live counts).
pub(crate) fn to_dot(graph: &Graph, counts: Option<&[String]>) -> String {
    let mut out = String::from("digraph nanostream {\n    rankdir=LR;\n");
    let dot_node = |out: &mut String, indent: &str, i: usize| {
        let node = &graph.nodes[i];
        let shape = match node.kind {
            NodeKind::Source => "invhouse",
            NodeKind::Node => "box",
            NodeKind::Sink => "house",
            NodeKind::Placeholder => "ellipse",
        };
        let _ = match counts.and_then(|c| c.get(i)) {
            Some(count) => writeln!(
                out,
                "{indent}{} [shape={shape}, label={}];",
                dot_quote(&node.name),
                dot_quote(&format!("{}\n{count}", node.name))
            ),
            None => writeln!(out, "{indent}{} [shape={shape}];", dot_quote(&node.name)),
        };
    };
    let fused = fused_tasks(graph);
    for (i, node) in graph.nodes.iter().enumerate() {
        if !fused.iter().any(|(task, _)| *task == node.task) {
            dot_node(&mut out, "    ", i);
        }
    }
    // A fused chain is one task: drawn as a box around its nodes.
    for (n, (task, members)) in fused.iter().enumerate() {
        let label = format!("task {}", graph.nodes[*task].name);
        let _ =
            writeln!(out, "    subgraph cluster_{n} {{\n        label={};\n        style=dashed;", dot_quote(&label));
        for &i in members {
            dot_node(&mut out, "        ", i);
        }
        out.push_str("    }\n");
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

/// The graph as a Mermaid flowchart; `counts` as for [`to_dot`].
pub(crate) fn to_mermaid(graph: &Graph, counts: Option<&[String]>) -> String {
    let mut out = String::from("flowchart LR\n");
    let mermaid_node = |out: &mut String, indent: &str, i: usize| {
        let name = match counts.and_then(|c| c.get(i)) {
            Some(count) => mermaid_text(&format!("{}<br/>{count}", graph.nodes[i].name)),
            None => mermaid_text(&graph.nodes[i].name),
        };
        let _ = match graph.nodes[i].kind {
            NodeKind::Source => writeln!(out, "{indent}n{i}[/\"{name}\"/]"),
            NodeKind::Node => writeln!(out, "{indent}n{i}[\"{name}\"]"),
            NodeKind::Sink => writeln!(out, "{indent}n{i}[\\\"{name}\"\\]"),
            NodeKind::Placeholder => writeln!(out, "{indent}n{i}([\"{name}\"])"),
        };
    };
    let fused = fused_tasks(graph);
    for (i, node) in graph.nodes.iter().enumerate() {
        if !fused.iter().any(|(task, _)| *task == node.task) {
            mermaid_node(&mut out, "    ", i);
        }
    }
    for (n, (task, members)) in fused.iter().enumerate() {
        let label = mermaid_text(&format!("task {}", graph.nodes[*task].name));
        let _ = writeln!(out, "    subgraph t{n}[\"{label}\"]");
        for &i in members {
            mermaid_node(&mut out, "        ", i);
        }
        out.push_str("    end\n");
    }
    for edge in &graph.edges {
        let _ = writeln!(out, "    n{} -->|\"{}\"| n{}", edge.from, mermaid_text(&edge.label()), edge.to);
    }
    out
}
