//! `netwatch drops`: what was dropped, by container, network and reason.

use std::process::ExitCode;

use anyhow::{Result, bail};
use jiff::Timestamp;
use netwatch_common::reason::Verdict;

use super::{
    source::{FilterArgs, FlowOutput, FlowSource as _, SourceArgs, ago, open_source, print_list},
    table,
};
use crate::{api::DropGroup, render::units};

/// The table `netwatch drops` prints.
pub fn drops_table(groups: &[DropGroup], now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.container.clone().unwrap_or_default(),
                g.network.clone().unwrap_or_default(),
                if g.verdict == Verdict::Audited {
                    format!("{} (audited)", g.reason)
                } else {
                    g.reason.to_string()
                },
                g.rule.clone().unwrap_or_else(|| "-".into()),
                g.flows.to_string(),
                g.packets.to_string(),
                units::bytes(g.bytes),
                ago(g.last_seen, now),
                g.remotes.join(", "),
            ]
        })
        .collect();
    table(
        &[
            "CONTAINER",
            "NETWORK",
            "REASON",
            "RULE",
            "FLOWS",
            "PACKETS",
            "BYTES",
            "LAST SEEN",
            "REMOTES",
        ],
        &rows,
    )
}

/// Prints the drops `filter` selects.
///
/// # Errors
/// `--verdict forwarded`, no agent answers, or it refuses the filter.
pub fn run(filter: &FilterArgs, source: &SourceArgs, output: FlowOutput) -> Result<ExitCode> {
    if filter.filter.only_forwarded() {
        bail!(
            "drops lists dropped and audited flows only: leave out --verdict forwarded (or use \
             `netwatch flows`)"
        );
    }
    super::block_on(async {
        let groups = open_source(source, true)
            .await?
            .drops(&filter.filter())
            .await?;
        print_list(&groups, output, |groups| {
            drops_table(groups, Timestamp::now())
        })?;
        Ok(ExitCode::SUCCESS)
    })
}

/// What the running agent saw dropped, grouped by container, network
/// and reason: how many flows, packets and bytes, when last, and the
/// busiest remote ends (what the container tried to reach, or who
/// tried to reach it).
///
/// Reasons: not-in-network (outside the network's subnets),
/// host-access (the host, gateway included), spoofed-source,
/// spoofed-mac, invalid-header, unsupported-protocol,
/// broadcast-multicast, extension-header-limit, protected-prefix (the
/// uplink shield). Counts are Ethernet frames, as for `netwatch flows`.
///
/// Examples:
///   sudo netwatch drops
///   sudo netwatch drops --since 10m
///   sudo netwatch drops --network app_db --reason host-access -o json
///   sudo netwatch drops --project shop --not --reason kernel:no_socket
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct DropsArgs {
    #[command(flatten)]
    pub filter: super::source::FilterArgs,
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// Output format: table, a JSON array of groups, or one JSON
    /// object per line.
    #[arg(short, long, value_enum, default_value_t = super::source::FlowOutput::Table)]
    pub output: super::source::FlowOutput,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_container_reason_and_what_was_tried() {
        let group = DropGroup {
            container: Some("db".into()),
            service: Some("backend".into()),
            network: Some("app_db".into()),
            reason: "host-access".parse().unwrap(),
            verdict: "dropped".parse().unwrap(),
            dropped_by: Some("netwatch".into()),
            rule: Some("internal: true on network app_db".into()),
            packets: 3,
            bytes: 294,
            flows: 1,
            first_seen: Timestamp::from_second(100).unwrap(),
            last_seen: Timestamp::from_second(190).unwrap(),
            remotes: vec!["172.19.0.1:53/udp".into()],
        };
        let text = drops_table(&[group], Timestamp::from_second(200).unwrap());
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("CONTAINER   NETWORK   REASON"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("db          app_db    host-access"),
            "{text}"
        );
        assert!(lines[1].contains("294 B"), "{text}");
        assert!(lines[1].contains("10s ago"), "{text}");
        assert!(lines[1].ends_with("172.19.0.1:53/udp"), "{text}");
    }
}
