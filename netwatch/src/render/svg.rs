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
//! layered layout; [`render_svg_preferring_graphviz`] uses it when present.

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{Read, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{
    dot::{
        DROPPED_COLOR, FORWARDED_COLOR, edge_label_lines, edge_tooltip, network_label, node_name,
        penwidth, render_dot,
    },
    graph::{Graph, Node, NodeKind},
    units,
};

const MARGIN: f64 = 20.0;
const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";
/// Average advance of a character, as a fraction of the font size (a little
/// generous for DejaVu Sans, so that text stays inside its box).
const CHAR_EM: f64 = 0.62;
const NAME_SIZE: f64 = 12.0;
const SMALL_SIZE: f64 = 10.0;
const LABEL_SIZE: f64 = 10.0;
const LABEL_LINE: f64 = 12.0;
/// Padding inside a network box.
const GROUP_PAD: f64 = 12.0;
const GROUP_HEADER: f64 = 24.0;
const GROUP_GAP: f64 = 18.0;
const NODE_GAP: f64 = 10.0;
const EXTERNAL_GAP: f64 = 14.0;
/// Between an arc's label and the column it runs beside.
const LABEL_GAP: f64 = 4.0;
/// Up to this many edges, labels also avoid covering other edges.
const MAX_EDGES_AVOIDED: usize = 300;
/// How long Graphviz may take before it is given up on.
const GRAPHVIZ_TIMEOUT: Duration = Duration::from_secs(20);

fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * CHAR_EM
}

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

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Rect {
    fn overlaps(&self, other: &Rect) -> bool {
        self.x < other.x + other.w
            && other.x < self.x + self.w
            && self.y < other.y + other.h
            && other.y < self.y + self.h
    }

    fn center_y(&self) -> f64 {
        self.y + self.h / 2.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Side {
    Left,
    Right,
}

#[derive(Clone, Copy, Debug)]
struct Point {
    x: f64,
    y: f64,
}

/// Where an edge runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// Container → external or external → container.
    Across,
    /// Between two containers: an arc left of the stack.
    LeftArc,
    /// Between two external nodes: an arc right of them.
    RightArc,
}

/// The lines of text in a node's box.
fn node_lines(node: &Node) -> Vec<(String, f64)> {
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

fn node_height(node: &Node) -> f64 {
    let lines = node_lines(node);
    12.0 + lines.iter().map(|(_, size)| size + 4.0).sum::<f64>()
}

fn node_width(node: &Node) -> f64 {
    node_lines(node)
        .iter()
        .map(|(text, size)| text_width(text, *size))
        .fold(0.0, f64::max)
        + 24.0
}

struct Layout {
    width: f64,
    height: f64,
    /// Per node.
    boxes: Vec<Rect>,
    /// Per network.
    groups: Vec<Rect>,
    /// Y of the legend, under everything else.
    legend_y: f64,
    /// Labels of arcs left of the containers end before this x…
    left_bound: f64,
    /// …and those right of the external nodes start after this one.
    right_bound: f64,
}

struct EdgeGeometry {
    /// Cubic Bézier: start, two control points, end (the arrow's tip).
    points: [Point; 4],
    spot: LabelSpot,
}

/// Where an edge's label goes.
#[derive(Clone, Copy, Debug)]
enum LabelSpot {
    /// Centred on the curve, near its middle.
    OnCurve,
    /// Just outside the arc's outermost point, and with its right edge at
    /// most at this x (arcs left of the containers).
    LeftOf(f64),
    /// The same, with its left edge at least at this x (arcs right of the
    /// external nodes).
    RightOf(f64),
}

fn bezier(p: &[Point; 4], t: f64) -> Point {
    let u = 1.0 - t;
    let (a, b, c, d) = (u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t);
    Point {
        x: a * p[0].x + b * p[1].x + c * p[2].x + d * p[3].x,
        y: a * p[0].y + b * p[1].y + c * p[2].y + d * p[3].y,
    }
}

fn route(graph: &Graph, from: usize, to: usize) -> Route {
    let container = |n: usize| graph.nodes[n].kind == NodeKind::Container;
    match (container(from), container(to)) {
        (true, true) => Route::LeftArc,
        (false, false) => Route::RightArc,
        _ => Route::Across,
    }
}

fn label_size(lines: &[String]) -> (f64, f64) {
    let w = lines
        .iter()
        .map(|l| text_width(l, LABEL_SIZE))
        .fold(0.0, f64::max)
        + 8.0;
    (w, lines.len() as f64 * LABEL_LINE + 4.0)
}

/// How far an arc bulges out of its column: more for longer spans, and more
/// for each further edge between the same two nodes.
fn bulge(span: f64, rank: usize) -> f64 {
    40.0 + (span * 0.35).min(260.0) + 22.0 * rank as f64
}

/// For each edge, its rank among edges joining the same two nodes (either
/// direction).
fn pair_ranks(graph: &Graph) -> Vec<usize> {
    let mut seen: HashMap<(usize, usize), usize> = HashMap::new();
    graph
        .edges
        .iter()
        .map(|e| {
            let pair = (e.from.min(e.to), e.from.max(e.to));
            let rank = seen.entry(pair).or_default();
            *rank += 1;
            *rank - 1
        })
        .collect()
}

fn layout(graph: &Graph, top: f64) -> Layout {
    let n = graph.nodes.len();
    let mut boxes = vec![Rect::default(); n];
    let container_w = graph
        .nodes
        .iter()
        .filter(|node| node.kind == NodeKind::Container)
        .map(node_width)
        .chain(graph.networks.iter().map(|net| {
            text_width(&network_label(net.name.as_deref(), net.internal), NAME_SIZE) + 8.0
                - 2.0 * GROUP_PAD
        }))
        .fold(140.0, f64::max);
    let external_w = graph
        .externals()
        .map(|i| node_width(&graph.nodes[i]))
        .fold(130.0, f64::max);

    // Vertical positions, which the arcs' bulges depend on.
    let mut groups = Vec::with_capacity(graph.networks.len());
    let mut y = top;
    for network in &graph.networks {
        let group_top = y;
        y += GROUP_HEADER;
        for &i in &network.nodes {
            let h = node_height(&graph.nodes[i]);
            boxes[i] = Rect {
                x: 0.0,
                y,
                w: container_w,
                h,
            };
            y += h + NODE_GAP;
        }
        y += GROUP_PAD - NODE_GAP;
        groups.push(Rect {
            x: 0.0,
            y: group_top,
            w: container_w + 2.0 * GROUP_PAD,
            h: y - group_top,
        });
        y += GROUP_GAP;
    }
    let left_bottom = y - GROUP_GAP;

    // External nodes level with the containers they talk to, in that order.
    let mut wanted: Vec<(f64, usize)> = graph
        .externals()
        .map(|i| {
            let ys: Vec<f64> = graph
                .edges
                .iter()
                .filter_map(|e| match (e.from == i, e.to == i) {
                    (true, false) => Some(e.to),
                    (false, true) => Some(e.from),
                    _ => None,
                })
                .filter(|&other| graph.nodes[other].kind == NodeKind::Container)
                .map(|other| boxes[other].center_y())
                .collect();
            let centre = if ys.is_empty() {
                f64::INFINITY
            } else {
                ys.iter().sum::<f64>() / ys.len() as f64
            };
            (centre, i)
        })
        .collect();
    wanted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut next_free = top;
    for (centre, i) in wanted {
        let h = node_height(&graph.nodes[i]);
        let want = if centre.is_finite() {
            centre - h / 2.0
        } else {
            next_free
        };
        let y = want.max(next_free);
        boxes[i] = Rect {
            x: 0.0,
            y,
            w: external_w,
            h,
        };
        next_free = y + h + EXTERNAL_GAP;
    }
    let right_bottom = next_free - EXTERNAL_GAP;

    // Room for arcs and their labels on both sides, and for labels between
    // the columns.
    let ranks = pair_ranks(graph);
    let (mut left_room, mut right_room, mut across) = (0.0_f64, 0.0_f64, 0.0_f64);
    for (edge, rank) in graph.edges.iter().zip(&ranks) {
        let (label_w, _) = label_size(&edge_label_lines(edge));
        let span = (boxes[edge.from].center_y() - boxes[edge.to].center_y()).abs();
        let apex = 0.75 * bulge(span, *rank);
        match route(graph, edge.from, edge.to) {
            Route::LeftArc => {
                let reach = (apex - GROUP_PAD).max(0.0) + LABEL_GAP + label_w;
                left_room = left_room.max(reach + 8.0);
            }
            Route::RightArc => {
                let reach = apex + LABEL_GAP + label_w;
                right_room = right_room.max(reach + 8.0);
            }
            Route::Across => across = across.max(label_w),
        }
    }
    let group_x = MARGIN + left_room;
    for network in &graph.networks {
        for &i in &network.nodes {
            boxes[i].x = group_x + GROUP_PAD;
        }
    }
    for group in &mut groups {
        group.x = group_x;
    }
    let has_containers = !graph.networks.is_empty();
    let has_externals = graph.externals().next().is_some();
    let left_right = if has_containers {
        group_x + container_w + 2.0 * GROUP_PAD
    } else {
        MARGIN
    };
    let external_x = if has_containers && has_externals {
        // Room for two labels side by side, so that labels of crossing
        // edges can slide along their curves past each other.
        left_right + (2.0 * across + 40.0).clamp(220.0, 480.0)
    } else {
        left_right
    };
    for i in graph.externals() {
        boxes[i].x = external_x;
    }
    let right_edge = if has_externals {
        external_x + external_w + right_room
    } else {
        left_right
    };
    let legend_y = left_bottom.max(right_bottom).max(top) + 24.0;
    Layout {
        width: (right_edge + MARGIN).max(420.0),
        height: legend_y + 40.0,
        boxes,
        groups,
        legend_y,
        left_bound: group_x - LABEL_GAP,
        right_bound: external_x + external_w + LABEL_GAP,
    }
}

/// (node, side) → [(other end's y, edge, whether the edge starts here)]
type Attached = HashMap<(usize, Side), Vec<(f64, usize, bool)>>;

/// Attachment points: each node spreads the edges on one side along it, in
/// the order of the other ends' heights.
fn ports(graph: &Graph, layout: &Layout) -> Vec<(Point, Point)> {
    let side_of = |edge_from: usize, edge_to: usize, node: usize| -> Side {
        match route(graph, edge_from, edge_to) {
            Route::LeftArc => Side::Left,
            Route::RightArc => Side::Right,
            Route::Across if graph.nodes[node].kind == NodeKind::Container => Side::Right,
            Route::Across => Side::Left,
        }
    };
    let mut attached: Attached = HashMap::new();
    for (k, e) in graph.edges.iter().enumerate() {
        for (node, other, start) in [(e.from, e.to, true), (e.to, e.from, false)] {
            attached
                .entry((node, side_of(e.from, e.to, node)))
                .or_default()
                .push((layout.boxes[other].center_y(), k, start));
        }
    }
    let mut out = vec![(Point { x: 0.0, y: 0.0 }, Point { x: 0.0, y: 0.0 }); graph.edges.len()];
    let mut keys: Vec<&(usize, Side)> = attached.keys().collect();
    keys.sort_by_key(|(node, side)| (*node, *side == Side::Right));
    for key in keys {
        let (node, side) = *key;
        let mut list = attached[key].clone();
        list.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)));
        let r = layout.boxes[node];
        let x = if side == Side::Left { r.x } else { r.x + r.w };
        for (slot, (_, k, start)) in list.iter().enumerate() {
            let y = r.y + r.h * (slot as f64 + 1.0) / (list.len() as f64 + 1.0);
            let p = Point { x, y };
            if *start {
                out[*k].0 = p;
            } else {
                out[*k].1 = p;
            }
        }
    }
    out
}

fn geometry(graph: &Graph, layout: &Layout) -> Vec<EdgeGeometry> {
    let ranks = pair_ranks(graph);
    let ports = ports(graph, layout);
    graph
        .edges
        .iter()
        .zip(ports)
        .zip(ranks)
        .map(
            |((edge, (a, b)), rank)| match route(graph, edge.from, edge.to) {
                Route::Across => {
                    let dx = (b.x - a.x) / 2.0;
                    EdgeGeometry {
                        points: [
                            a,
                            Point {
                                x: a.x + dx,
                                y: a.y,
                            },
                            Point {
                                x: b.x - dx,
                                y: b.y,
                            },
                            b,
                        ],
                        spot: LabelSpot::OnCurve,
                    }
                }
                route => {
                    let span = (layout.boxes[edge.from].center_y()
                        - layout.boxes[edge.to].center_y())
                    .abs();
                    let out = if route == Route::LeftArc { -1.0 } else { 1.0 };
                    let reach = out * bulge(span, rank);
                    // A loop onto the same node still needs two distinct ends.
                    let (a, b) = if edge.from == edge.to {
                        (
                            Point {
                                x: a.x,
                                y: a.y - 6.0,
                            },
                            Point {
                                x: b.x,
                                y: b.y + 6.0,
                            },
                        )
                    } else {
                        (a, b)
                    };
                    EdgeGeometry {
                        points: [
                            a,
                            Point {
                                x: a.x + reach,
                                y: a.y,
                            },
                            Point {
                                x: b.x + reach,
                                y: b.y,
                            },
                            b,
                        ],
                        spot: if route == Route::LeftArc {
                            LabelSpot::LeftOf(layout.left_bound)
                        } else {
                            LabelSpot::RightOf(layout.right_bound)
                        },
                    }
                }
            },
        )
        .collect()
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

fn f(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r == r.trunc() {
        format!("{}", r as i64)
    } else {
        format!("{r:.1}")
    }
}

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

/// The graph as a standalone SVG document, laid out here (see the module
/// docs). Deterministic: the same graph gives the same text.
pub fn render_svg(graph: &Graph) -> String {
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
    let top = MARGIN + header.iter().map(|(_, s)| s + 8.0).sum::<f64>() + 8.0;
    let layout = layout(graph, top);
    let geometry = geometry(graph, &layout);

    // Edges draw heavy ones first so that thin ones stay visible, drops on
    // top. Labels are placed drops first, then by bytes: when the picture
    // is too crowded for all of them, the thinnest edges' labels are left
    // out (their tooltips still say it all).
    let mut order: Vec<usize> = (0..graph.edges.len()).collect();
    order.sort_by_key(|&k| {
        let e = &graph.edges[k];
        (e.dropped, std::cmp::Reverse(e.bytes), k)
    });
    let mut label_order = order.clone();
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
        samples(&geometry)
    } else {
        Vec::new()
    };
    let mut labels: Vec<(usize, Vec<String>, Rect)> = Vec::with_capacity(order.len());
    for &k in &label_order {
        let lines = edge_label_lines(&graph.edges[k]);
        if let Some(r) = place_label(k, &geometry[k], label_size(&lines), &taken, &samples) {
            taken.push(r);
            labels.push((k, lines, r));
        }
    }
    let (width, legend_y) = labels
        .iter()
        .fold((layout.width, layout.legend_y), |(w, y), (_, _, r)| {
            (w.max(r.x + r.w + MARGIN), y.max(r.y + r.h + 20.0))
        });
    let height = legend_y + (layout.height - layout.legend_y);

    let mut out = String::new();
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
    for (text, size) in &header {
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
    if graph.nodes.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#718096\">no flows</text>",
            f(MARGIN),
            f(top + 12.0)
        );
    }

    // Networks.
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

    // Edges.
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

    // Nodes.
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
            &mut out,
            r.x + r.w / 2.0,
            r.y + 6.0 + NAME_SIZE,
            &node_lines(node),
            "",
        );
        out.push_str("</g>\n");
    }

    // Edge labels, on top of everything.
    for (k, lines, r) in &labels {
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

    // Legend.
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
    out.push_str("</svg>\n");
    out
}

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

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Renders `dot` with Graphviz (`dot -Tsvg`, found on `PATH`), or `None`
/// when Graphviz is not installed, fails, prints no SVG, or takes longer
/// than 20 seconds.
pub fn render_svg_with_graphviz(dot: &str) -> Option<String> {
    render_with_program("dot", dot)
}

fn render_with_program(program: &str, dot: &str) -> Option<String> {
    let mut child = Command::new(program)
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // Write and read on separate threads: a large graph fills both pipes.
    let mut stdin = child.stdin.take()?;
    let input = dot.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let deadline = Instant::now() + GRAPHVIZ_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let _ = writer.join();
    let text = reader.join().ok()?.ok()?;
    (status?.success() && text.contains("<svg")).then_some(text)
}

/// Graphviz's rendering of the graph when Graphviz is installed and works,
/// otherwise [`render_svg`]'s.
pub fn render_svg_preferring_graphviz(graph: &Graph) -> String {
    render_svg_with_graphviz(&render_dot(graph)).unwrap_or_else(|| render_svg(graph))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flows::FlowEntry,
        render::{
            fixtures::*,
            graph::{Graph, GraphOptions},
        },
    };

    fn shop_graph() -> Graph {
        let options = GraphOptions {
            host_addrs: vec![HOST_ADDR.parse().unwrap()],
            internal_networks: ["shop_backend".to_string()].into(),
            title: Some("netwatch map · test host".into()),
            ..GraphOptions::default()
        };
        Graph::from_flows(&shop(), &options)
    }

    fn texts(doc: &roxmltree::Document<'_>) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| n.text().unwrap_or_default().to_string())
            .collect()
    }

    fn rects_of_class(doc: &roxmltree::Document<'_>, class: &str) -> Vec<Rect> {
        let num =
            |n: roxmltree::Node<'_, '_>, a: &str| n.attribute(a).unwrap().parse::<f64>().unwrap();
        doc.descendants()
            .filter(|g| {
                g.has_tag_name("g")
                    && g.attribute("class")
                        .is_some_and(|c| c.split(' ').any(|c| c == class))
            })
            .map(|g| {
                let r = g.children().find(|c| c.has_tag_name("rect")).unwrap();
                Rect {
                    x: num(r, "x"),
                    y: num(r, "y"),
                    w: num(r, "width"),
                    h: num(r, "height"),
                }
            })
            .collect()
    }

    #[test]
    fn svg_is_valid_xml_naming_every_container_and_network() {
        let g = shop_graph();
        let svg = render_svg(&g);
        let doc = roxmltree::Document::parse(&svg).expect("valid XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let texts = texts(&doc);
        for node in &g.nodes {
            assert!(texts.contains(&node.label), "{} missing", node.label);
        }
        for name in [
            "shop-web-1",
            "shop-api-1",
            "shop-db-1",
            "shop-cache-1",
            "monitor",
        ] {
            assert!(texts.iter().any(|t| t == name), "{name}");
        }
        assert!(texts.contains(&"network shop_backend · internal".to_string()));
        assert!(texts.contains(&"dropped: host-access".to_string()));
        let nodes = doc
            .descendants()
            .filter(|n| n.attribute("class").is_some_and(|c| c.starts_with("node ")))
            .count();
        assert_eq!(nodes, g.nodes.len());
        let edges: Vec<_> = doc
            .descendants()
            .filter(|n| n.attribute("class").is_some_and(|c| c.starts_with("edge")))
            .collect();
        assert_eq!(edges.len(), g.edges.len());
        let dashed = edges
            .iter()
            .filter(|e| e.attribute("class") == Some("edge dropped"))
            .filter(|e| {
                e.children().any(|c| {
                    c.attribute("stroke-dasharray").is_some()
                        && c.attribute("stroke") == Some(DROPPED_COLOR)
                })
            })
            .count();
        assert_eq!(dashed, g.edges.iter().filter(|e| e.dropped).count());
    }

    #[test]
    fn boxes_and_labels_stay_apart_and_inside_the_picture() {
        let svg = render_svg(&shop_graph());
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let root = doc.root_element();
        let (w, h): (f64, f64) = (
            root.attribute("width").unwrap().parse().unwrap(),
            root.attribute("height").unwrap().parse().unwrap(),
        );
        let nodes = rects_of_class(&doc, "node");
        let labels = rects_of_class(&doc, "label");
        let all: Vec<Rect> = nodes.iter().chain(&labels).copied().collect();
        for (i, a) in all.iter().enumerate() {
            assert!(
                a.x >= 0.0 && a.y >= 0.0 && a.x + a.w <= w && a.y + a.h <= h,
                "{a:?} outside {w}x{h}"
            );
            for b in &all[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
        }
        let groups = rects_of_class(&doc, "network");
        for label in &labels {
            assert!(
                groups.iter().all(|g| !g.overlaps(label)),
                "{label:?} on a network"
            );
        }
        // Containers sit inside their network's box.
        let containers = rects_of_class(&doc, "container");
        for c in &containers {
            assert!(groups.iter().any(|g| c.x >= g.x
                && c.y >= g.y
                && c.x + c.w <= g.x + g.w
                && c.y + c.h <= g.y + g.h));
        }
    }

    #[test]
    fn a_crowded_picture_leaves_labels_out_rather_than_overlapping() {
        let mut entries = Vec::new();
        for net in 0..3u8 {
            for a in 0..8u8 {
                let me = format!("172.2{net}.0.{}", a + 2);
                for b in (0..8u8).filter(|&b| b != a) {
                    let peer = format!("172.2{net}.0.{}", b + 2);
                    let bytes = 1000 * u64::from(a + b + 1);
                    entries.push(egress(
                        &format!("c{net}-{a}"),
                        &format!("n{net}"),
                        (&me, 40000),
                        (&peer, 80),
                        bytes,
                    ));
                }
                for o in 0..4u8 {
                    let dst = format!("198.{o}.{a}.1");
                    entries.push(egress(
                        &format!("c{net}-{a}"),
                        &format!("n{net}"),
                        (&me, 40000),
                        (&dst, 443),
                        500,
                    ));
                }
            }
        }
        let g = Graph::from_flows(&entries, &GraphOptions::default());
        assert!(g.edges.len() > 150);
        let svg = render_svg(&g);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let labels = rects_of_class(&doc, "label");
        assert!(!labels.is_empty() && labels.len() <= g.edges.len());
        let nodes = rects_of_class(&doc, "node");
        for (i, a) in labels.iter().enumerate() {
            for b in labels[i + 1..].iter().chain(&nodes) {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn names_are_escaped() {
        let entries = [egress(
            "<b>&\"x'",
            "n<1>",
            ("172.20.0.2", 1),
            ("203.0.113.1", 2),
            10,
        )];
        let svg = render_svg(&Graph::from_flows(&entries, &GraphOptions::default()));
        let doc = roxmltree::Document::parse(&svg).expect("valid XML");
        assert!(texts(&doc).contains(&"<b>&\"x'".to_string()));
    }

    #[test]
    fn rendering_is_deterministic_and_handles_empty_and_tiny_graphs() {
        let g = shop_graph();
        assert_eq!(render_svg(&g), render_svg(&g));
        let empty = render_svg(&Graph::default());
        let doc = roxmltree::Document::parse(&empty).unwrap();
        assert!(texts(&doc).contains(&"no flows".to_string()));
        // Only external nodes (an uplink drop), and a container alone.
        for entries in [
            vec![shield_drop(("192.0.2.66", 1), ("172.21.0.9", 22), 60)],
            vec![summary("lonely", "n", "egress", 3, 100)],
            // Folded flows no container owns: a loop on the idle node.
            vec![FlowEntry {
                schema_version: crate::flows::SCHEMA_VERSION,
                host: String::new(),
                container: None,
                container_id: None,
                project: None,
                network: None,
                ..summary("x", "n", "ingress", 5, 100)
            }],
        ] {
            let svg = render_svg(&Graph::from_flows(&entries, &GraphOptions::default()));
            roxmltree::Document::parse(&svg).expect("valid XML");
        }
    }

    #[test]
    fn without_graphviz_the_map_is_drawn_by_netwatch_itself() {
        assert_eq!(render_with_program("/nonexistent/dot", "digraph {}"), None);
        assert!(render_svg(&shop_graph()).contains("<svg"));
    }

    /// Graphviz's branch, for real: `cargo xtask setup` installs it, and
    /// its absence fails this test rather than skipping the branch.
    #[test]
    fn with_graphviz_the_map_is_laid_out_by_dot_and_draws_every_container() {
        let version = std::process::Command::new("dot").arg("-V").output();
        assert!(
            version.is_ok_and(|out| out.status.success()),
            "Graphviz's dot cannot run: run `cargo xtask setup`, which installs Debian's \
             graphviz, to test the map's Graphviz branch"
        );
        let svg = render_svg_with_graphviz(&render_dot(&shop_graph()))
            .expect("dot is installed but rejected the DOT");
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..roxmltree::ParsingOptions::default()
        };
        let doc =
            roxmltree::Document::parse_with_options(&svg, options).expect("Graphviz's SVG parses");
        let texts = texts(&doc);
        for name in ["shop-web-1", "shop-db-1", "monitor"] {
            assert!(texts.iter().any(|t| t == name), "{name}");
        }
        assert_eq!(
            render_svg_preferring_graphviz(&shop_graph()),
            svg,
            "preferring Graphviz takes dot's drawing when dot is there"
        );
    }

    /// `NETWATCH_RENDER_SAMPLES=DIR cargo test -p netwatch render::svg`
    /// writes the sample host's map as map.svg, map.dot and (with
    /// Graphviz) map-graphviz.svg into DIR, to look at.
    #[test]
    fn write_samples_when_asked() {
        let Some(dir) = std::env::var_os("NETWATCH_RENDER_SAMPLES") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        let g = shop_graph();
        std::fs::write(dir.join("map.svg"), render_svg(&g)).unwrap();
        let dot = render_dot(&g);
        std::fs::write(dir.join("map.dot"), &dot).unwrap();
        if let Some(svg) = render_svg_with_graphviz(&dot) {
            std::fs::write(dir.join("map-graphviz.svg"), svg).unwrap();
        }
    }
}
