//! Where everything goes in the built-in SVG map: the boxes of networks,
//! containers and external nodes, and the curve of every edge (see the
//! module docs of [`super`] for the shape).

use std::collections::HashMap;

use super::labels::{NAME_SIZE, label_size, node_height, node_width, text_width};
use crate::render::{
    dot::{edge_label_lines, network_label},
    graph::{Graph, NodeKind},
};

pub(super) const MARGIN: f64 = 20.0;
/// Padding inside a network box.
const GROUP_PAD: f64 = 12.0;
const GROUP_HEADER: f64 = 24.0;
const GROUP_GAP: f64 = 18.0;
const NODE_GAP: f64 = 10.0;
const EXTERNAL_GAP: f64 = 14.0;
/// Between an arc's label and the column it runs beside.
pub(super) const LABEL_GAP: f64 = 4.0;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Rect {
    pub(super) x: f64,
    pub(super) y: f64,
    pub(super) w: f64,
    pub(super) h: f64,
}

impl Rect {
    pub(super) fn overlaps(&self, other: &Rect) -> bool {
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
pub(super) struct Point {
    pub(super) x: f64,
    pub(super) y: f64,
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

pub(super) struct Layout {
    pub(super) width: f64,
    pub(super) height: f64,
    /// Per node.
    pub(super) boxes: Vec<Rect>,
    /// Per network.
    pub(super) groups: Vec<Rect>,
    /// Y of the legend, under everything else.
    pub(super) legend_y: f64,
    /// Labels of arcs left of the containers end before this x…
    pub(super) left_bound: f64,
    /// …and those right of the external nodes start after this one.
    pub(super) right_bound: f64,
}

pub(super) struct EdgeGeometry {
    /// Cubic Bézier: start, two control points, end (the arrow's tip).
    pub(super) points: [Point; 4],
    pub(super) spot: LabelSpot,
}

/// Where an edge's label goes.
#[derive(Clone, Copy, Debug)]
pub(super) enum LabelSpot {
    /// Centred on the curve, near its middle.
    OnCurve,
    /// Just outside the arc's outermost point, and with its right edge at
    /// most at this x (arcs left of the containers).
    LeftOf(f64),
    /// The same, with its left edge at least at this x (arcs right of the
    /// external nodes).
    RightOf(f64),
}

pub(super) fn bezier(p: &[Point; 4], t: f64) -> Point {
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

/// The boxes of every network and node, with `top` the y under the title.
pub(super) fn layout(graph: &Graph, top: f64) -> Layout {
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

/// The curve of every edge, between the ports of its two nodes.
pub(super) fn geometry(graph: &Graph, layout: &Layout) -> Vec<EdgeGeometry> {
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
