//! The built-in layout's promises (valid XML, nothing overlapping, every
//! name shown and escaped, deterministic).

use super::{layout::Rect, *};
use crate::{
    flows::FlowEntry,
    render::{
        dot::{DROPPED_COLOR, render_dot},
        fixtures::*,
        graph::{Graph, GraphOptions},
    },
};

fn texts(doc: &roxmltree::Document<'_>) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or_default().to_string())
        .collect()
}

fn rects_of_class(doc: &roxmltree::Document<'_>, class: &str) -> Vec<Rect> {
    let num = |n: roxmltree::Node<'_, '_>, a: &str| n.attribute(a).unwrap().parse::<f64>().unwrap();
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
        assert!(
            groups.iter().any(|g| c.x >= g.x
                && c.y >= g.y
                && c.x + c.w <= g.x + g.w
                && c.y + c.h <= g.y + g.h)
        );
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
            container: None,
            network: None,
            ..summary("x", "n", "ingress", 5, 100)
        }],
    ] {
        let svg = render_svg(&Graph::from_flows(&entries, &GraphOptions::default()));
        roxmltree::Document::parse(&svg).expect("valid XML");
    }
}

/// `NETWATCH_RENDER_SAMPLES=DIR cargo test -p netwatch render::svg`
/// writes the sample host's map as map.svg and map.dot into DIR, to
/// look at.
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
}
