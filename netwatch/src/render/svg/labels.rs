//! Text in the built-in SVG map: how wide it runs (measured without a
//! font), the lines in each node's box, and where each edge's label goes
//! without covering another label, a box or the title.

use super::layout::{EdgeGeometry, LABEL_GAP, LabelSpot, Layout, Point, Rect, bezier};
use crate::render::{
    dot::edge_label_lines,
    graph::{Graph, Node, NodeKind},
    units,
};

/// Average advance of a character, as a fraction of the font size (a little
/// generous for DejaVu Sans, so that text stays inside its box).
const CHAR_EM: f64 = 0.62;
pub(super) const NAME_SIZE: f64 = 12.0;
const SMALL_SIZE: f64 = 10.0;
pub(super) const LABEL_SIZE: f64 = 10.0;
pub(super) const LABEL_LINE: f64 = 12.0;
/// Up to this many edges, labels also avoid covering other edges.
const MAX_EDGES_AVOIDED: usize = 300;

/// How wide `text` runs at font `size`, without a font at hand.
pub(super) fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * CHAR_EM
}

/// The lines of text in a node's box.
pub(super) fn node_lines(node: &Node) -> Vec<(String, f64)> {
    let mut lines = vec![(node.label.clone(), NAME_SIZE)];
    if let Some(detail) = &node.detail {
        lines.push((detail.clone(), SMALL_SIZE));
    }
    if node.kind == NodeKind::Container {
        lines.push((
            format!(
                "↑ {}  ↓ {}",
                units::bytes(node.sent),
                units::bytes(node.received)
            ),
            SMALL_SIZE,
        ));
    }
    lines
}

pub(super) fn node_height(node: &Node) -> f64 {
    let lines = node_lines(node);
    12.0 + lines.iter().map(|(_, size)| size + 4.0).sum::<f64>()
}

pub(super) fn node_width(node: &Node) -> f64 {
    node_lines(node)
        .iter()
        .map(|(text, size)| text_width(text, *size))
        .fold(0.0, f64::max)
        + 24.0
}

pub(super) fn label_size(lines: &[String]) -> (f64, f64) {
    let w = lines
        .iter()
        .map(|l| text_width(l, LABEL_SIZE))
        .fold(0.0, f64::max)
        + 8.0;
    (w, lines.len() as f64 * LABEL_LINE + 4.0)
}

/// Points along every edge, to tell how many edges a label would cover.
fn samples(geometry: &[EdgeGeometry]) -> Vec<(usize, Point)> {
    const N: usize = 24;
    geometry
        .iter()
        .enumerate()
        .flat_map(|(k, g)| (1..N).map(move |i| (k, bezier(&g.points, i as f64 / N as f64))))
        .collect()
}

/// Puts the `w`×`h` label of edge `k` where it covers no other label,
/// node, network box or the title, and as few other edges as it can,
/// staying on its own edge where possible: the candidates are points along
/// the curve around its middle (for arcs: just outside the arc's outermost
/// point, so that the arc stays visible), then spots moved up or down from
/// there at a cost. Each other edge covered costs 1. `None` when every
/// candidate collides. Deterministic.
fn place_label(
    k: usize,
    geometry: &EdgeGeometry,
    (w, h): (f64, f64),
    taken: &[Rect],
    samples: &[(usize, Point)],
) -> Option<Rect> {
    let at = |p: Point| Rect {
        x: p.x - w / 2.0,
        y: p.y - h / 2.0,
        w,
        h,
    };
    let p = &geometry.points;
    // (spot, cost before counting covered edges)
    let (mut candidates, home, off_curve): (Vec<(Rect, f64)>, Rect, f64) = match geometry.spot {
        LabelSpot::OnCurve => {
            let along = [0.5, 0.42, 0.58, 0.34, 0.66, 0.26, 0.74, 0.18, 0.82]
                .iter()
                .enumerate()
                .map(|(i, &t)| (at(bezier(p, t)), 0.05 * i as f64))
                .collect();
            // Off the curve costs more than covering one other edge on it.
            (along, at(bezier(p, 0.5)), 1.2)
        }
        LabelSpot::LeftOf(bound) => {
            let apex = bezier(p, 0.5);
            let home = at(Point {
                x: (apex.x - LABEL_GAP).min(bound) - w / 2.0,
                y: apex.y,
            });
            (vec![(home, 0.0)], home, 0.0)
        }
        LabelSpot::RightOf(bound) => {
            let apex = bezier(p, 0.5);
            let home = at(Point {
                x: (apex.x + LABEL_GAP).max(bound) + w / 2.0,
                y: apex.y,
            });
            (vec![(home, 0.0)], home, 0.0)
        }
    };
    for step in 1..=40 {
        let k = f64::from((step + 1) / 2);
        let dy = if step % 2 == 1 { k } else { -k } * (LABEL_LINE / 2.0);
        let spot = Rect {
            y: home.y + dy,
            ..home
        };
        candidates.push((spot, off_curve + 0.2 * k));
    }
    let inside =
        |r: &Rect, q: &Point| q.x >= r.x && q.x <= r.x + r.w && q.y >= r.y && q.y <= r.y + r.h;
    let mut best: Option<(f64, Rect)> = None;
    for (spot, cost) in candidates {
        if taken.iter().any(|t| t.overlaps(&spot)) {
            continue;
        }
        let mut covered: Vec<usize> = samples
            .iter()
            .filter(|(edge, q)| *edge != k && inside(&spot, q))
            .map(|(edge, _)| *edge)
            .collect();
        covered.dedup();
        let cost = cost + covered.len() as f64;
        if best.is_none_or(|(c, _)| cost < c) {
            best = Some((cost, spot));
        }
    }
    best.map(|(_, spot)| spot)
}

/// An edge's label and where it goes.
pub(super) struct PlacedLabel {
    pub(super) edge: usize,
    pub(super) lines: Vec<String>,
    pub(super) spot: Rect,
}

/// Places the label of every edge that has room: drops first, then by
/// bytes, so that when the picture is too crowded for all of them, the
/// thinnest edges' labels are left out (their tooltips still say it all).
/// `top` is the y under the title, which no label covers.
pub(super) fn place_labels(
    graph: &Graph,
    layout: &Layout,
    geometry: &[EdgeGeometry],
    top: f64,
) -> Vec<PlacedLabel> {
    let mut label_order: Vec<usize> = (0..graph.edges.len()).collect();
    label_order.sort_by_key(|&k| {
        let e = &graph.edges[k];
        (!e.dropped, std::cmp::Reverse(e.bytes), k)
    });
    let mut taken: Vec<Rect> = layout.boxes.clone();
    taken.extend(&layout.groups);
    taken.push(Rect {
        x: 0.0,
        y: 0.0,
        w: f64::MAX / 4.0,
        h: top - 8.0,
    });
    // Counting the edges under each spot costs edges² × spots: beyond a
    // few hundred edges, labels only avoid each other and the boxes.
    let samples = if geometry.len() <= MAX_EDGES_AVOIDED {
        samples(geometry)
    } else {
        Vec::new()
    };
    let mut labels = Vec::with_capacity(label_order.len());
    for &k in &label_order {
        let lines = edge_label_lines(&graph.edges[k]);
        if let Some(spot) = place_label(k, &geometry[k], label_size(&lines), &taken, &samples) {
            taken.push(spot);
            labels.push(PlacedLabel {
                edge: k,
                lines,
                spot,
            });
        }
    }
    labels
}
