//! Writing the built-in SVG map: every element, in drawing order, from the
//! boxes, curves and label spots laid out before.

use std::fmt::Write as _;

use super::{
    labels::{LABEL_LINE, LABEL_SIZE, NAME_SIZE, PlacedLabel, node_lines},
    layout::{EdgeGeometry, Layout, MARGIN, Point},
};
use crate::render::{
    dot::{DROPPED_COLOR, FORWARDED_COLOR, edge_tooltip, network_label, node_name, penwidth},
    graph::{Graph, NodeKind},
    units,
};

const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";

/// XML-escaped text (also safe inside attribute values).
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 does not allow.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A coordinate or size with at most one decimal, which is all a picture
/// needs and keeps the document short.
fn f(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r == r.trunc() {
        format!("{}", r as i64)
    } else {
        format!("{r:.1}")
    }
}

/// `lines` centred on `x`, each `(text, font size)`, the first bold when it
/// is a name.
fn text_lines(out: &mut String, x: f64, first_baseline: f64, lines: &[(String, f64)], attrs: &str) {
    let mut y = first_baseline;
    for (i, (text, size)) in lines.iter().enumerate() {
        if i > 0 {
            y += size + 4.0;
        }
        let weight = if i == 0 && *size == NAME_SIZE {
            " font-weight=\"bold\""
        } else {
            " fill=\"#4a5568\""
        };
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" font-size=\"{}\" text-anchor=\"middle\"{weight}{attrs}>{}</text>",
            f(x),
            f(y),
            f(*size),
            esc(text)
        );
    }
}

fn node_style(kind: NodeKind) -> (&'static str, &'static str, &'static str) {
    // (fill, stroke, dash)
    match kind {
        NodeKind::Container => ("#ffffff", "#2b6cb0", ""),
        NodeKind::Host => ("#fefcbf", "#975a16", ""),
        NodeKind::Outside | NodeKind::OtherOutside => ("#edf2f7", "#4a5568", ""),
        _ => ("#f7fafc", "#a0aec0", " stroke-dasharray=\"4 3\""),
    }
}

/// The class of a node's group, for styling and for tests.
fn kind_class(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Container => "container",
        NodeKind::Host => "host",
        NodeKind::Outside => "outside",
        NodeKind::OtherOutside => "other-outside",
        NodeKind::Multicast => "multicast",
        NodeKind::LinkLocal => "link-local",
        NodeKind::NonIp => "non-ip",
        NodeKind::IdleFlows => "idle-flows",
    }
}

/// The XML declaration, the `<svg>` element `width`×`height`, a white
/// background, and the `header` lines (text, font size) at the top left.
pub(super) fn document_start(out: &mut String, width: f64, height: f64, header: &[(String, f64)]) {
    let _ = writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"{FONT}\">",
        w = f(width),
        h = f(height),
    );
    let _ = writeln!(out, "<title>netwatch map</title>");
    let _ = writeln!(
        out,
        "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>"
    );
    let mut y = MARGIN;
    for (text, size) in header {
        y += size;
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" font-size=\"{}\"{}>{}</text>",
            f(MARGIN),
            f(y),
            f(*size),
            if *size > 12.0 {
                " font-weight=\"bold\""
            } else {
                " fill=\"#4a5568\""
            },
            esc(text)
        );
        y += 8.0;
    }
}

/// What an empty map says under its header, at `top`.
pub(super) fn no_flows(out: &mut String, top: f64) {
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#718096\">no flows</text>",
        f(MARGIN),
        f(top + 12.0)
    );
}

/// The box of every network, with its name.
pub(super) fn networks(out: &mut String, graph: &Graph, layout: &Layout) {
    for (network, r) in graph.networks.iter().zip(&layout.groups) {
        let (fill, stroke) = if network.internal {
            ("#fff5f5", "#c53030")
        } else {
            ("#f0f4f8", "#9aa5b1")
        };
        let _ = writeln!(
            out,
            "<g class=\"network\"><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"8\" fill=\"{fill}\" stroke=\"{stroke}\"/>",
            f(r.x),
            f(r.y),
            f(r.w),
            f(r.h)
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{stroke}\" font-weight=\"bold\">{}</text></g>",
            f(r.x + 10.0),
            f(r.y + 16.0),
            esc(&network_label(network.name.as_deref(), network.internal))
        );
    }
}

/// Every edge with its arrowhead and tooltip: heavy ones first so that thin
/// ones stay visible, drops on top.
pub(super) fn edges(out: &mut String, graph: &Graph, geometry: &[EdgeGeometry]) {
    let mut order: Vec<usize> = (0..graph.edges.len()).collect();
    order.sort_by_key(|&k| {
        let e = &graph.edges[k];
        (e.dropped, std::cmp::Reverse(e.bytes), k)
    });
    for &k in &order {
        let edge = &graph.edges[k];
        let [p0, p1, p2, p3] = geometry[k].points;
        let width = penwidth(edge.bytes);
        let color = if edge.dropped {
            DROPPED_COLOR
        } else {
            FORWARDED_COLOR
        };
        // The arrowhead ends at p3; the line stops at its base.
        let (dx, dy) = (p3.x - p2.x, p3.y - p2.y);
        let len = (dx * dx + dy * dy).sqrt().max(1e-6);
        let (ux, uy) = (dx / len, dy / len);
        let head = 7.0 + 1.5 * width;
        let half = 3.5 + 0.9 * width;
        let base = Point {
            x: p3.x - ux * head,
            y: p3.y - uy * head,
        };
        let p2_moved = Point {
            x: p2.x - ux * head,
            y: p2.y - uy * head,
        };
        let _ = writeln!(
            out,
            "<g class=\"edge{}\"><title>{}</title>",
            if edge.dropped { " dropped" } else { "" },
            esc(&edge_tooltip(graph, edge))
        );
        let _ = writeln!(
            out,
            "<path d=\"M{} {} C{} {} {} {} {} {}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"{}\" stroke-opacity=\"0.85\"{}/>",
            f(p0.x),
            f(p0.y),
            f(p1.x),
            f(p1.y),
            f(p2_moved.x),
            f(p2_moved.y),
            f(base.x),
            f(base.y),
            f(width),
            if edge.dropped {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "<polygon points=\"{},{} {},{} {},{}\" fill=\"{color}\"/></g>",
            f(p3.x),
            f(p3.y),
            f(base.x - uy * half),
            f(base.y + ux * half),
            f(base.x + uy * half),
            f(base.y - ux * half),
        );
    }
}

/// Every node's box, lines of text and tooltip.
pub(super) fn nodes(out: &mut String, graph: &Graph, layout: &Layout) {
    for (i, node) in graph.nodes.iter().enumerate() {
        let r = layout.boxes[i];
        let (fill, stroke, dash) = node_style(node.kind);
        let radius = if node.kind == NodeKind::Container {
            6.0
        } else {
            r.h / 2.0
        };
        let _ = writeln!(
            out,
            "<g class=\"node {}\"><title>{}</title>",
            kind_class(node.kind),
            esc(&format!(
                "{}: sent {}, received {}",
                node_name(node),
                units::bytes(node.sent),
                units::bytes(node.received)
            ))
        );
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"{}\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.5\"{dash}/>",
            f(r.x),
            f(r.y),
            f(r.w),
            f(r.h),
            f(radius)
        );
        text_lines(
            out,
            r.x + r.w / 2.0,
            r.y + 6.0 + NAME_SIZE,
            &node_lines(node),
            "",
        );
        out.push_str("</g>\n");
    }
}

/// The edges' labels, on a white background; drawn last, on top of
/// everything.
pub(super) fn labels(out: &mut String, graph: &Graph, labels: &[PlacedLabel]) {
    for PlacedLabel {
        edge: k,
        lines,
        spot: r,
    } in labels
    {
        let edge = &graph.edges[*k];
        let color = if edge.dropped {
            DROPPED_COLOR
        } else {
            "#2d3748"
        };
        let _ = writeln!(
            out,
            "<g class=\"label\"><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"3\" fill=\"#ffffff\" fill-opacity=\"0.9\"/>",
            f(r.x),
            f(r.y),
            f(r.w),
            f(r.h)
        );
        for (j, line) in lines.iter().enumerate() {
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" font-size=\"{}\" text-anchor=\"middle\" fill=\"{color}\">{}</text>",
                f(r.x + r.w / 2.0),
                f(r.y + 2.0 + LABEL_LINE * (j as f64 + 1.0) - 2.5),
                f(LABEL_SIZE),
                esc(line)
            );
        }
        out.push_str("</g>\n");
    }
}

/// What the lines and their widths mean, at `legend_y`.
pub(super) fn legend(out: &mut String, legend_y: f64) {
    let y = legend_y;
    let x = MARGIN;
    let _ = writeln!(
        out,
        "<g class=\"legend\" font-size=\"10\" fill=\"#4a5568\"><path d=\"M{} {} h28\" stroke=\"{FORWARDED_COLOR}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">forwarded</text><path d=\"M{} {} h28\" stroke=\"{DROPPED_COLOR}\" stroke-width=\"2\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{}\">dropped (reason)</text><text x=\"{}\" y=\"{}\">line width grows with the log of bytes · ↑ sent ↓ received</text></g>",
        f(x),
        f(y),
        f(x + 34.0),
        f(y + 3.5),
        f(x + 100.0),
        f(y),
        f(x + 134.0),
        f(y + 3.5),
        f(x + 240.0),
        f(y + 3.5),
    );
}
