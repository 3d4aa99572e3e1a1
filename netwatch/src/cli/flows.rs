//! `netwatch flows`: aggregated flows, busiest first.

use std::{path::Path, process::ExitCode};

use anyhow::Result;

use super::{
    source::{FilterArgs, FlowOutput, FlowSource as _, SourceArgs, open_source, print_list},
    table,
};
use crate::{
    api::FlowsAnswer,
    export::replay,
    flows::{FlowEntry, FlowFilter, record::endpoint_text},
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

/// The flows `filter` selects from the flow log at `path` and its rotated
/// files, as the agent would list them; what was read and skipped goes to
/// stderr.
///
/// # Errors
/// No log there, it cannot be read, or a container id prefix is ambiguous.
pub fn flows_from_log(path: &Path, filter: &FlowFilter) -> Result<Vec<FlowEntry>> {
    let replay = replay::replay(path, filter.until)?;
    eprintln!("netwatch: {}", replay.summary());
    let entries = replay
        .flows()
        .into_iter()
        .filter(|e| filter.matches(e))
        .collect();
    Ok(filter.finish(entries)?)
}

/// Prints the flows `filter` selects, from the agent or with `from_log`
/// from its flow log.
///
/// # Errors
/// No agent answers, or it refuses the filter; the log cannot be read.
pub fn run(
    filter: &FilterArgs,
    source: &SourceArgs,
    from_log: Option<&Path>,
    output: FlowOutput,
) -> Result<ExitCode> {
    let filter = filter.filter();
    let entries = match (from_log, output.layout()) {
        (Some(path), _) => flows_from_log(path, &filter)?,
        (None, Some(layout)) => {
            let entries = super::block_on(async {
                match open_source(source, true)
                    .await?
                    .flows_laid_out(&filter, layout)
                    .await?
                {
                    FlowsAnswer::LaidOut(answer) => {
                        // Printed as it comes; a closed pipe (`| head`)
                        // is not an error.
                        answer.copy_to(&mut std::io::stdout().lock()).await?;
                        Ok(None)
                    }
                    FlowsAnswer::Entries(entries) => Ok::<_, anyhow::Error>(Some(entries)),
                }
            })?;
            let Some(entries) = entries else {
                return Ok(ExitCode::SUCCESS);
            };
            entries
        }
        (None, None) => {
            super::block_on(async { open_source(source, true).await?.flows(&filter).await })?
        }
    };
    print_list(&entries, output, flows_table)?;
    Ok(ExitCode::SUCCESS)
}

/// Aggregated flows from the running agent: per container, direction
/// and 5-tuple, who talked to whom, how much, and what was dropped and
/// why; the busiest first.
///
/// DIR is `egress` for what the container sent and `ingress` for what
/// it received; traffic between two containers of this host shows at
/// both ends. PEER names the container at the other end when it is one
/// of this host's. VERDICT and REASON are those of the flow's latest
/// packet. Flows the agent folded together to stay within its
/// --flow-limit show as `(N idle flows)`.
///
/// What is counted: PACKETS and BYTES are what netwatch's hooks on the
/// container's host-side veth saw, whole Ethernet frames without FCS:
/// per packet, 14 (Ethernet) + 20 (IPv4; 40 for IPv6, more with
/// options or extension headers) + the L4 header + payload, where the
/// L4 header is 8 for UDP and ICMP, and 20-60 for TCP (32 with the
/// timestamps Linux sends by default, 40 on a SYN). So N UDP datagrams
/// of S bytes over IPv4 count exactly N packets and N x (S + 42) bytes.
/// TCP crosses a veth segmentation-offloaded: a "packet" is what the
/// hook sees, and a GSO burst of up to 64 KiB is one packet with one
/// set of headers; a transfer of B bytes counts B + 66 per packet
/// (IPv4, timestamps) plus 8 for the SYN, and fewer packets than a
/// physical wire would carry. A segment retransmitted after it
/// crossed the hook counts again, as it would on a wire. The table
/// shows bytes in binary units (KiB, MiB); JSON has them exact.
///
/// Filters: a flag given twice matches either value (--port 80 --port
/// 443); different flags must all match; --not before a filter flag
/// leaves out what it matches, as in `hubble observe`. --container
/// takes a name or an id prefix. --since/--until keep the flows seen
/// in that window (first packet before --until, last one after
/// --since), with their whole counts; --last N keeps the N seen most
/// recently, listed oldest first.
///
/// Asks the running agent (`netwatch agent`) over its API socket, or
/// with --from-log reads the agent's flow log (rotated files
/// included): each flow as its latest event in the log counts it, so
/// packets after a flow's last logged event are missing (an active
/// flow is logged at least every 10 s, and when it closes).
///
/// Examples:
///   sudo netwatch flows
///   sudo netwatch flows --container web --since 5m
///   sudo netwatch flows --container 3f2a --last 20
///   sudo netwatch flows --verdict dropped --reason host-access
///   sudo netwatch flows --proto udp --port 53 -o json | jq '.[] | {container, dst, packets}'
///   sudo netwatch flows --service api -o jsonl >> flows.jsonl
///   # What did project shop talk to between 10:00 and 10:05 (UTC),
///   # outbound, outside 10.0.0.0/8? Live, then from the flow log:
///   sudo netwatch flows --project shop --direction egress --not --cidr 10.0.0.0/8 \
///       --since 2026-12-06T10:00:00Z --until 2026-12-06T10:05:00Z
///   netwatch flows --from-log /var/log/netwatch/flows.log --project shop \
///       --direction egress --not --cidr 10.0.0.0/8 \
///       --since 2026-12-06T10:00:00Z --until 2026-12-06T10:05:00Z
///   sudo netwatch flows --ip 172.30.0.2 --not --port 53 --not --port 123
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct FlowsArgs {
    #[command(flatten)]
    pub filter: super::source::FilterArgs,
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// Answer from the agent's flow log instead of the agent (`netwatch
    /// agent --flow-log PATH`), its rotated files PATH.N included: each
    /// flow as its latest event in the log has it. No agent or root
    /// needed beyond reading the files.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["socket", "standalone"])]
    pub from_log: Option<std::path::PathBuf>,
    /// Output format: table, a JSON array of flows, or one JSON
    /// object per line.
    #[arg(short, long, value_enum, default_value_t = super::source::FlowOutput::Table)]
    pub output: super::source::FlowOutput,
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
