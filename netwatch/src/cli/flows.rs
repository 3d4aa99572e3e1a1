//! `netwatch flows`: aggregated flows, busiest first.

use std::process::ExitCode;

use anyhow::Result;

use super::{
    source::{FilterArgs, FlowOutput, FlowSource as _, SourceArgs, open_source, print_list},
    table,
};
use crate::{
    flows::{FlowEntry, record::endpoint_text},
    render::units,
};

fn row(e: &FlowEntry) -> Vec<String> {
    let (src, dst) = if e.flows > 1 {
        (format!("({} idle flows)", e.flows), "*".to_string())
    } else {
        let mut src = endpoint_text(e.src, e.src_port, e.proto);
        let mut dst = endpoint_text(e.dst, e.dst_port, e.proto);
        e.mark_ends(&mut src, &mut dst);
        (src, dst)
    };
    // No container: a flow on a network's bridge or an uplink that no
    // container's address explains (neighbour discovery from the host…).
    let owner = e
        .container
        .clone()
        .or_else(|| e.interface.as_ref().map(|i| format!("({i})")))
        .unwrap_or_default();
    vec![
        owner,
        e.direction.to_string(),
        e.proto.to_string(),
        src,
        dst,
        e.packets.to_string(),
        units::bytes(e.bytes),
        e.verdict.to_string(),
        e.reason
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        e.peer_text().unwrap_or_default(),
    ]
}

/// The columns of the table `netwatch flows` prints.
pub const COLUMNS: [&str; 10] = [
    "CONTAINER",
    "DIR",
    "PROTO",
    "SRC",
    "DST",
    "PACKETS",
    "BYTES",
    "VERDICT",
    "REASON",
    "PEER",
];

/// The table `netwatch flows` prints.
pub fn flows_table(entries: &[FlowEntry]) -> String {
    let rows: Vec<Vec<String>> = entries.iter().map(row).collect();
    table(&COLUMNS, &rows)
}

/// Prints the flows `filter` selects.
///
/// # Errors
/// No agent answers, or it refuses the filter.
pub fn run(filter: &FilterArgs, source: &SourceArgs, output: FlowOutput) -> Result<ExitCode> {
    super::block_on(async {
        let entries = open_source(source, true)
            .await?
            .flows(&filter.filter())
            .await?;
        print_list(&entries, output, flows_table)?;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::{egress, summary, with_peer};

    #[test]
    fn the_table_shows_names_endpoints_and_human_bytes() {
        let entry = egress(
            "web",
            "front",
            ("172.19.0.2", 40312),
            ("172.19.0.3", 5432),
            1_572_864,
        );
        let text = flows_table(&[
            with_peer(entry, "db"),
            summary("web", "front", "egress", 7, 1_572_864),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("CONTAINER   DIR      PROTO   SRC"),
            "{text}"
        );
        assert!(lines[1].contains("172.19.0.2:40312"), "{text}");
        assert!(lines[1].contains("1.5 MiB"), "{text}");
        assert!(lines[1].ends_with("db"), "{text}");
        assert!(lines[2].contains("(7 idle flows)"), "{text}");
    }
}
