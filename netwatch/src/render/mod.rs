//! Pictures and tables drawn from flow entries, for `netwatch map` and
//! `netwatch top`: functions from `&[FlowEntry]` to text. Nothing here talks
//! to the agent, the kernel or the terminal; the CLI fetches entries, hands
//! them over and shows what comes back.
//!
//! - [`graph`]: who talks to whom, built from flow entries ([`Graph::from_flows`]).
//! - [`dot`]: that graph as Graphviz DOT.
//! - [`svg`]: that graph as SVG, laid out here (no Graphviz needed), or by
//!   Graphviz when it is installed.
//! - [`top`]: top talkers between two snapshots, as a table.
//! - [`units`]: human byte counts and rates.

pub mod dot;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod graph;
pub mod svg;
pub mod top;
pub mod units;

pub use dot::render_dot;
pub use graph::{Edge, Graph, GraphOptions, Network, Node, NodeKind};
pub use svg::render_svg;
pub use top::{
    By, FlowColumns, Rates, Row, Snapshot, TopFrame, fit, json_frame, render_frame, render_table,
    top_talkers,
};
