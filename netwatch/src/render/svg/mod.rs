//! The map as SVG, laid out here so that no Graphviz is needed, or by
//! Graphviz when it is installed.
//!
//! The built-in layout is deterministic (the same graph gives the same
//! bytes) and made for the shape these pictures have — a few networks of a
//! few containers each, talking to each other and to a few outside classes:
//!
//! - Left column: one box per network, stacked, each holding its containers
//!   stacked (rounded boxes with the container name, its service,
//!   and bytes sent ↑ and received ↓).
//! - Right column: external nodes (host, outside prefixes, …), each placed
//!   level with the containers it talks to where space allows.
//! - Edges between the columns are horizontal S-curves; edges between two
//!   containers are arcs on the left of the stack (longer spans bulge
//!   further, so nothing crosses a box); edges between external nodes are
//!   arcs on the right. Each node spreads its edges along its side in the
//!   order of their other ends, which keeps parallel edges from crossing.
//! - Width grows with the log of the bytes; dropped traffic is red and
//!   dashed with its reason in the label. Labels sit on their own edge
//!   where they can, on a white background, never over another label, a
//!   node or a network's box, and over as few other edges as they can
//!   (drops and heavy edges choose first; in a picture too crowded for all
//!   labels the thinnest edges go without). Every node and edge carries a
//!   tooltip (`<title>`) with the full numbers.
//! - Beyond a few dozen containers in a dense mesh the left arcs get
//!   crowded; Graphviz's general layout copes better there.
//!
//! Graphviz (`dot -Tsvg`) draws the DOT of [`super::dot`] with the general
//! layered layout; `netwatch map` runs it when present
//! (`crate::cli::map`, which runs programs; this module does not).

mod emit;
mod labels;
mod layout;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use labels::place_labels;
use layout::{MARGIN, geometry, layout};

use super::{
    graph::{Graph, NodeKind},
    units,
};

/// The graph as a standalone SVG document, laid out here (see the module
/// docs). Deterministic: the same graph gives the same text.
pub fn render_svg(graph: &Graph) -> String {
    let header = header_lines(graph);
    let top = MARGIN + header.iter().map(|(_, s)| s + 8.0).sum::<f64>() + 8.0;
    let layout = layout(graph, top);
    let geometry = geometry(graph, &layout);
    let labels = place_labels(graph, &layout, &geometry, top);
    // Labels of arcs may reach past the boxes: the picture grows to hold them.
    let (width, legend_y) = labels
        .iter()
        .fold((layout.width, layout.legend_y), |(w, y), label| {
            let r = &label.spot;
            (w.max(r.x + r.w + MARGIN), y.max(r.y + r.h + 20.0))
        });
    let height = legend_y + (layout.height - layout.legend_y);

    let mut out = String::new();
    emit::document_start(&mut out, width, height, &header);
    if graph.nodes.is_empty() {
        emit::no_flows(&mut out, top);
    }
    emit::networks(&mut out, graph, &layout);
    emit::edges(&mut out, graph, &geometry);
    emit::nodes(&mut out, graph, &layout);
    emit::labels(&mut out, graph, &labels);
    emit::legend(&mut out, legend_y);
    out.push_str("</svg>\n");
    out
}

/// The lines above the picture, each `(text, font size)`: the graph's title
/// if it has one, and a summary of what it shows.
fn header_lines(graph: &Graph) -> Vec<(String, f64)> {
    let mut header = Vec::new();
    if let Some(title) = &graph.title {
        header.push((title.clone(), 15.0));
    }
    let containers = graph
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Container)
        .count();
    let mut summary = format!(
        "{} on {} · {} in {}",
        plural(containers, "container", "containers"),
        plural(graph.networks.len(), "network", "networks"),
        units::bytes(graph.total_bytes()),
        plural(graph.edges.len(), "edge", "edges"),
    );
    let dropped = graph.dropped_bytes();
    if dropped > 0 {
        let _ = write!(summary, " · {} dropped", units::bytes(dropped));
    }
    header.push((summary, 11.0));
    header
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
