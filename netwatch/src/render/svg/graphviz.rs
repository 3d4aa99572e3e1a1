//! The map drawn by Graphviz (`dot -Tsvg`) instead, when it is installed:
//! its general layered layout copes better with large dense meshes.

use std::{
    io::{Read, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::render_svg;
use crate::render::{dot::render_dot, graph::Graph};

/// How long Graphviz may take before it is given up on.
const GRAPHVIZ_TIMEOUT: Duration = Duration::from_secs(20);

/// Renders `dot` with Graphviz (`dot -Tsvg`, found on `PATH`), or `None`
/// when Graphviz is not installed, fails, prints no SVG, or takes longer
/// than 20 seconds.
pub fn render_svg_with_graphviz(dot: &str) -> Option<String> {
    render_with_program("dot", dot)
}

pub(super) fn render_with_program(program: &str, dot: &str) -> Option<String> {
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
