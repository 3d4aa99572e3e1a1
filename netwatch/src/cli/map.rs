//! `netwatch map`: the host's who-talks-to-whom picture, as Graphviz DOT or
//! SVG (drawn by Graphviz when it is installed, else by netwatch itself).

use std::{collections::BTreeSet, path::Path, process::ExitCode};

use anyhow::{Context as _, Result};
use log::warn;

mod graphviz;

use graphviz::render_svg_preferring_graphviz;

use super::source::{FilterArgs, FlowSource as _, SourceArgs, open_source};
use crate::{
    agent::docker_state::host_state,
    host,
    render::{Graph, GraphOptions, render_dot, render_svg},
};

/// What `map` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MapFormat {
    /// Scalable Vector Graphics, for a browser.
    Svg,
    /// Graphviz source, for `dot` and friends.
    Dot,
    /// The graph itself: nodes, networks and edges.
    Json,
}

/// The host's addresses, the networks' gateways and which networks are
/// internal, from Docker; without Docker, only the host's own addresses.
fn graph_options() -> GraphOptions {
    let mut options = GraphOptions {
        host_addrs: host::addresses(),
        title: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| format!("netwatch map · {}", h.trim())),
        ..GraphOptions::default()
    };
    match super::networks::snapshot() {
        Ok(snapshot) => {
            let state = host_state(&snapshot, Vec::new());
            options.internal_networks = state
                .networks
                .iter()
                .filter(|n| n.internal)
                .map(|n| n.name.clone())
                .collect::<BTreeSet<_>>();
            options.host_addrs.extend(
                state
                    .networks
                    .iter()
                    .flat_map(|n| n.gateways.iter().copied()),
            );
        }
        Err(e) => warn!(
            "without Docker's networks the map cannot mark internal ones: {}",
            super::one_line(&e)
        ),
    }
    options
}

/// Draws the flows `filter` selects.
///
/// # Errors
/// No agent answers, or the output file cannot be written.
pub fn run(
    filter: &FilterArgs,
    source: &SourceArgs,
    format: MapFormat,
    builtin: bool,
    out: Option<&Path>,
) -> Result<ExitCode> {
    let flows = super::block_on(async {
        open_source(source, true)
            .await?
            .flows(&filter.filter())
            .await
    })?;
    let graph = Graph::from_flows(&flows, &graph_options());
    let text = match format {
        MapFormat::Dot => render_dot(&graph),
        MapFormat::Svg if builtin => render_svg(&graph),
        MapFormat::Svg => render_svg_preferring_graphviz(&graph),
        MapFormat::Json => serde_json::to_string_pretty(&graph)?,
    };
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => {
            super::source::print(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Draw who talks to whom on this host: containers grouped by network,
/// the host, and the outside grouped by prefix, with edges weighted by
/// bytes and dropped edges marked in red with their reason. Writes SVG
/// (drawn by Graphviz's `dot` when installed, else by netwatch's own
/// layout), Graphviz DOT, or the graph as JSON. Asks the running agent.
///
/// Examples:
///   sudo netwatch map > host.svg
///   sudo netwatch map --network shop_backend --since 1h -o dot | dot -Tpng > backend.png
///   sudo netwatch map --builtin --out host.svg
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct MapArgs {
    #[command(flatten)]
    pub filter: super::source::FilterArgs,
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = super::map::MapFormat::Svg)]
    pub output: super::map::MapFormat,
    /// Draw the SVG with netwatch's own layout even if Graphviz is installed.
    #[arg(long)]
    pub builtin: bool,
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "PATH")]
    pub out: Option<std::path::PathBuf>,
}
