//! The map as Graphviz DOT: one cluster per network, containers as rounded
//! boxes inside, external nodes as ellipses, edges labelled with their byte
//! count (and drop reason), pen width growing with the log of the bytes,
//! dropped traffic red and dashed.

use std::fmt::Write as _;

use super::{
    graph::{Edge, Graph, Node, NodeKind},
    units,
};
use crate::flows::FlowReason;

/// Forwarded edges.
pub(crate) const FORWARDED_COLOR: &str = "#4a5568";
/// Dropped edges and their labels.
pub(crate) const DROPPED_COLOR: &str = "#d62728";
/// Most services listed on an edge label.
pub(crate) const LABEL_SERVICES: usize = 2;

/// Line width for an edge carrying `bytes`: 1 up to 1 KiB, one more per
/// factor of ten, at most 8 (1 MiB ≈ 4, 1 GiB ≈ 7).
pub fn penwidth(bytes: u64) -> f64 {
    let decades = (bytes.max(1) as f64).log10() - 3.0;
    (1.0 + decades).clamp(1.0, 8.0)
}

/// The lines of an edge's label: `1.2 MiB · tcp/5432`, and for drops
/// `dropped: host-access` first.
pub fn edge_label_lines(edge: &Edge) -> Vec<String> {
    let mut lines = Vec::new();
    if edge.dropped {
        lines.push(format!(
            "dropped: {}",
            edge.reason.as_ref().unwrap_or(&FlowReason::Unknown)
        ));
    }
    let mut first = units::bytes(edge.bytes);
    let shown: Vec<&str> = edge
        .services
        .iter()
        .take(LABEL_SERVICES)
        .map(String::as_str)
        .collect();
    if !shown.is_empty() {
        first.push_str(" · ");
        first.push_str(&shown.join(", "));
        if edge.services.len() > shown.len() {
            let _ = write!(first, " +{}", edge.services.len() - shown.len());
        }
    }
    lines.push(first);
    lines
}

/// A longer description of an edge (tooltips).
pub fn edge_tooltip(graph: &Graph, edge: &Edge) -> String {
    let from = &graph.nodes[edge.from];
    let to = &graph.nodes[edge.to];
    let mut text = format!(
        "{} → {}: {} in {} packets, {}",
        node_name(from),
        node_name(to),
        units::bytes(edge.bytes),
        edge.packets,
        match edge.flows {
            1 => "1 flow".to_string(),
            n => format!("{n} flows"),
        }
    );
    if let Some(reason) = &edge.reason {
        let _ = write!(text, "; dropped: {reason}");
    }
    if !edge.services.is_empty() {
        let _ = write!(text, "; {}", edge.services.join(", "));
    }
    text
}

/// `web (frontend)`, `host`, `203.0.113.0/24`.
pub fn node_name(node: &Node) -> String {
    match (&node.kind, &node.network) {
        (NodeKind::Container, Some(network)) => format!("{} ({network})", node.label),
        _ => node.label.clone(),
    }
}

/// A group's label: `network backend · internal`.
pub fn network_label(name: Option<&str>, internal: bool) -> String {
    match (name, internal) {
        (Some(name), true) => format!("network {name} · internal"),
        (Some(name), false) => format!("network {name}"),
        (None, _) => "network unknown".to_string(),
    }
}

/// A double-quoted DOT string.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn node_statement(out: &mut String, indent: &str, node: &Node) {
    let mut label = node.label.clone();
    if let Some(detail) = &node.detail {
        label.push('\n');
        label.push_str(detail);
    }
    let tooltip = format!(
        "{}: sent {}, received {}",
        node_name(node),
        units::bytes(node.sent),
        units::bytes(node.received)
    );
    let style = match node.kind {
        NodeKind::Container => {
            r##"shape=box, style="rounded,filled", fillcolor="#ffffff", color="#2b6cb0""##
        }
        NodeKind::Host => r##"shape=house, style=filled, fillcolor="#fefcbf", color="#975a16""##,
        NodeKind::Outside | NodeKind::OtherOutside => {
            r##"shape=ellipse, style=filled, fillcolor="#edf2f7", color="#4a5568""##
        }
        _ => r##"shape=ellipse, style="filled,dashed", fillcolor="#f7fafc", color="#a0aec0""##,
    };
    let _ = writeln!(
        out,
        "{indent}{} [label={}, tooltip={}, {style}];",
        quote(&node.id),
        quote(&label),
        quote(&tooltip)
    );
}

/// The graph as a Graphviz `digraph`, laid out left to right.
pub fn render_dot(graph: &Graph) -> String {
    let mut out = String::new();
    out.push_str("digraph netwatch {\n");
    out.push_str("  graph [rankdir=LR, fontname=\"Helvetica\", fontsize=12, nodesep=0.35, ranksep=1.4, newrank=true");
    if let Some(title) = &graph.title {
        let _ = write!(out, ", label={}, labelloc=t", quote(title));
    }
    out.push_str("];\n");
    out.push_str("  node [fontname=\"Helvetica\", fontsize=11];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=9, arrowsize=0.7];\n");
    for (i, network) in graph.networks.iter().enumerate() {
        let _ = writeln!(out, "  subgraph \"cluster_{i}\" {{");
        let _ = writeln!(
            out,
            "    graph [label={}, style=\"rounded,filled\", fillcolor=\"{}\", color=\"{}\", labeljust=l];",
            quote(&network_label(network.name.as_deref(), network.internal)),
            if network.internal {
                "#fff5f5"
            } else {
                "#f0f4f8"
            },
            if network.internal {
                "#c53030"
            } else {
                "#9aa5b1"
            },
        );
        for &n in &network.nodes {
            node_statement(&mut out, "    ", &graph.nodes[n]);
        }
        out.push_str("  }\n");
    }
    for n in graph.externals() {
        node_statement(&mut out, "  ", &graph.nodes[n]);
    }
    for edge in &graph.edges {
        let color = if edge.dropped {
            DROPPED_COLOR
        } else {
            FORWARDED_COLOR
        };
        let _ = write!(
            out,
            "  {} -> {} [label={}, tooltip={}, penwidth={:.1}, color=\"{color}\", fontcolor=\"{color}\"",
            quote(&graph.nodes[edge.from].id),
            quote(&graph.nodes[edge.to].id),
            quote(&edge_label_lines(edge).join("\n")),
            quote(&edge_tooltip(graph, edge)),
            penwidth(edge.bytes),
        );
        if edge.dropped {
            out.push_str(", style=dashed");
        }
        out.push_str("];\n");
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::render::{
        fixtures::*,
        graph::{Graph, GraphOptions},
    };

    /// Braces outside quoted strings balance, quotes close, and every
    /// edge's ends are declared as nodes. Returns (declared, edges).
    fn check_dot(dot: &str) -> (HashSet<String>, Vec<(String, String)>) {
        let mut depth = 0i32;
        let (mut in_quote, mut escaped) = (false, false);
        for c in dot.chars() {
            match (in_quote, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (true, false, '"') => in_quote = false,
                (false, _, '"') => in_quote = true,
                (false, _, '{') => depth += 1,
                (false, _, '}') => {
                    depth -= 1;
                    assert!(depth >= 0, "unbalanced braces");
                }
                _ => {}
            }
        }
        assert_eq!(depth, 0, "unbalanced braces");
        assert!(!in_quote, "unclosed quote");
        let quoted_start = |line: &str| -> Option<(String, usize)> {
            let line = line.trim_start();
            let rest = line.strip_prefix('"')?;
            let mut out = String::new();
            let mut chars = rest.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.push(chars.next()?.1),
                    '"' => return Some((out, line.len() - rest.len() + i + 1)),
                    c => out.push(c),
                }
            }
            None
        };
        let (mut nodes, mut edges) = (HashSet::new(), Vec::new());
        for line in dot.lines() {
            let Some((first, end)) = quoted_start(line) else {
                continue;
            };
            let rest = &line.trim_start()[end..];
            if let Some(rest) = rest.strip_prefix(" -> ") {
                let (second, _) = quoted_start(rest).expect("edge target");
                edges.push((first, second));
            } else if rest.starts_with(" [") {
                nodes.insert(first);
            }
        }
        for (a, b) in &edges {
            assert!(
                nodes.contains(a) && nodes.contains(b),
                "{a} -> {b} undeclared"
            );
        }
        (nodes, edges)
    }

    #[test]
    fn dot_is_well_formed_with_clusters_and_declared_nodes() {
        let g = Graph::from_flows(&shop(), &GraphOptions::default());
        let dot = render_dot(&g);
        let (nodes, edges) = check_dot(&dot);
        assert_eq!(nodes.len(), g.nodes.len());
        assert_eq!(edges.len(), g.edges.len());
        assert_eq!(dot.matches("subgraph \"cluster_").count(), g.networks.len());
        assert!(dot.contains("label=\"network shop_backend\""));
        assert!(dot.starts_with("digraph netwatch {\n") && dot.ends_with("}\n"));
    }

    #[test]
    fn dropped_edges_are_red_dashed_with_their_reason() {
        let g = Graph::from_flows(&shop(), &GraphOptions::default());
        let dot = render_dot(&g);
        let dropped: Vec<&str> = dot.lines().filter(|l| l.contains("style=dashed")).collect();
        assert_eq!(dropped.len(), g.edges.iter().filter(|e| e.dropped).count());
        for line in &dropped {
            assert!(
                line.contains(DROPPED_COLOR) && line.contains("dropped: "),
                "{line}"
            );
        }
        assert!(dot.contains("label=\"dropped: host-access\\n720 B · udp/53\""));
        for line in dot
            .lines()
            .filter(|l| l.contains(" -> ") && !l.contains("dashed"))
        {
            assert!(line.contains(FORWARDED_COLOR), "{line}");
        }
    }

    #[test]
    fn names_are_quoted_and_escaped() {
        let entries = [egress(
            "we\"ird\\name {x}",
            "net; evil",
            ("172.20.0.2", 1),
            ("203.0.113.1", 2),
            10,
        )];
        let options = GraphOptions {
            title: Some("a \"title\"".into()),
            internal_networks: ["net; evil".to_string()].into(),
            ..GraphOptions::default()
        };
        let dot = render_dot(&Graph::from_flows(&entries, &options));
        let (nodes, _) = check_dot(&dot);
        assert!(
            nodes.contains("container:net; evil/we\"ird\\name {x}"),
            "{nodes:?}"
        );
        assert!(dot.contains("label=\"network net; evil · internal\""));
    }

    #[test]
    fn penwidth_grows_with_the_log_of_bytes() {
        assert_eq!(penwidth(0), 1.0);
        assert_eq!(penwidth(1000), 1.0);
        assert!((penwidth(1_000_000) - 4.0).abs() < 1e-9);
        assert_eq!(penwidth(u64::MAX), 8.0);
        assert!(penwidth(10_000) < penwidth(100_000));
    }

    #[test]
    fn an_empty_graph_is_an_empty_digraph() {
        let dot = render_dot(&Graph::default());
        check_dot(&dot);
        assert!(!dot.contains("->"));
    }
}
