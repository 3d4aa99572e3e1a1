//! The map drawn by Graphviz (`dot -Tsvg`) instead, when it is installed:
//! its general layered layout copes better with large dense meshes. It
//! runs a program, so it lives with the command, not in `render` (which
//! is pure: data in, text out).

use std::{
    io::{Read, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::render::{Graph, render_dot, render_svg};

/// How long Graphviz may take before it is given up on.
const GRAPHVIZ_TIMEOUT: Duration = Duration::from_secs(20);

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
    use crate::render::fixtures::shop_graph;

    fn texts(doc: &roxmltree::Document<'_>) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| n.text().unwrap_or_default().to_string())
            .collect()
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
}
