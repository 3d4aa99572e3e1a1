//! `netwatch observe`: flow and drop records as they happen, one line each.

use std::process::ExitCode;

use anyhow::{Result, bail};
use futures_util::StreamExt as _;
use jiff::tz::TimeZone;
use netwatch_common::{
    protocol::Protocol,
    reason::{Direction, Verdict},
};

use super::{
    signals,
    source::{FilterArgs, FlowOutput, FlowSource as _, SourceArgs, open_source, print},
};
use crate::{api::StreamItem, flows::ObservedEvent, render::units};

/// `web 172.19.0.2:40312`, the address alone for an end with no name, the
/// name alone for a flow without addresses (ARP).
fn end(name: Option<&str>, ip: Option<std::net::IpAddr>, port: u16, proto: Protocol) -> String {
    let address = crate::flows::record::endpoint_text(ip, port, proto);
    match (name, ip) {
        (Some(name), None) => name.to_string(),
        (Some(name), Some(_)) => format!("{name} {address}"),
        (None, _) => address,
    }
}

/// One event as a line for people:
/// `Nov 27 22:10:05.123  flow-open   web 172.19.0.2:40312 -> db 172.19.0.3:5432  tcp  FORWARDED  egress on front  1 pkts 74 B`.
pub fn event_line(event: &ObservedEvent, tz: &TimeZone) -> String {
    let f = &event.flow;
    let peer = f.peer_text();
    let (src_name, dst_name) = if f.direction == Direction::Ingress {
        (peer.as_deref(), f.container.as_deref())
    } else {
        (f.container.as_deref(), peer.as_deref())
    };
    let time = event
        .time
        .to_zoned_datetime(tz.clone())
        .strftime("%b %e %H:%M:%S%.3f")
        .to_string();
    let verdict = match (f.verdict, &f.reason) {
        (Verdict::Dropped, Some(reason)) => format!("DROPPED ({reason})"),
        (Verdict::Audited, Some(reason)) => format!("AUDITED ({reason})"),
        (verdict, _) => verdict.name().to_uppercase(),
    };
    let mut src = end(src_name, f.src, f.src_port, f.proto);
    let mut dst = end(dst_name, f.dst, f.dst_port, f.proto);
    f.mark_ends(&mut src, &mut dst);
    let rule = f
        .rule
        .as_deref()
        .map(|rule| format!("  [{rule}]"))
        .unwrap_or_default();
    format!(
        "{time}  {:<11} {src} -> {dst}  {}  {verdict}  {} on {}  {} pkts {}{rule}",
        event.event,
        f.proto,
        f.direction,
        f.network.as_deref().unwrap_or("-"),
        f.packets,
        units::bytes(f.bytes),
    )
}

fn line(item: &StreamItem, output: FlowOutput, tz: &TimeZone) -> String {
    match (item, output) {
        (_, FlowOutput::Json | FlowOutput::Jsonl) => item.to_line(),
        (StreamItem::Event(event), FlowOutput::Table) => event_line(event, tz),
        (StreamItem::Lost(count), FlowOutput::Table) => {
            format!("{count} events lost: this observer fell behind")
        }
    }
}

/// Prints events until Ctrl-C (or SIGTERM), or until `count` events were
/// shown.
///
/// # Errors
/// No agent answers, it refuses the filter, or it ends the stream.
pub fn run(
    filter: &FilterArgs,
    source: &SourceArgs,
    output: FlowOutput,
    count: Option<u64>,
) -> Result<ExitCode> {
    let tz = TimeZone::system();
    super::block_on(async {
        let source = open_source(source, false).await?;
        let mut events = source.observe(&filter.filter()).await?;
        let mut stop = std::pin::pin!(signals::terminated());
        let mut shown = 0u64;
        while count.is_none_or(|count| shown < count) {
            let item = tokio::select! {
                item = events.next() => item,
                () = &mut stop => break,
            };
            let Some(item) = item else {
                if filter.filter.until.is_some() {
                    // With --until the agent sends the window's flows only.
                    break;
                }
                bail!("the agent ended the stream (did it stop?)");
            };
            let item = item?;
            if matches!(item, StreamItem::Event(_)) {
                shown += 1;
            }
            if !print(&(line(&item, output, &tz) + "\n"))? {
                break;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Flow and drop records live from the running agent, one line each,
/// until Ctrl-C or --count, like `hubble observe`.
///
/// Events: flow-open (a flow's first packet), flow-close (its first
/// TCP FIN or RST), flow-export (an active flow, at most once per
/// export interval), drop (rate-limited per flow). The counts on a
/// line are the flow's totals so far. A record reaches you within
/// about 250 ms (the agent reads the kernel's ring buffer 4 times a
/// second). With --since or --last, the flows seen since then (the
/// last N) are printed first (event `flow`); with --until, only those
/// flows are printed, and observe exits. When this command cannot keep up, the agent skips
/// records for it and says how many: `N events lost` (jsonl:
/// {"event":"lost","count":N}).
///
/// Examples:
///   sudo netwatch observe
///   sudo netwatch observe --container web --verdict dropped
///   sudo netwatch observe --proto tcp --port 5432 --count 10
///   sudo netwatch observe --project shop --direction egress --not --cidr 10.0.0.0/8
///   sudo netwatch observe --last 20 --not --verdict forwarded
///   sudo netwatch observe -o jsonl | jq -c 'select(.event == "drop")'
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct ObserveArgs {
    #[command(flatten)]
    pub filter: super::source::FilterArgs,
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Output format: one line per event for people, or one JSON
    /// object per line (json and jsonl are the same here).
    #[arg(short, long, value_enum, default_value_t = super::source::FlowOutput::Table)]
    pub output: super::source::FlowOutput,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::{dropped, flow};

    #[test]
    fn a_line_names_both_ends_the_verdict_and_the_reason() {
        let event = ObservedEvent {
            event: "drop".into(),
            time: "2025-11-27T22:10:05.123Z".parse().unwrap(),
            flow: dropped(
                flow(
                    Some("db"),
                    Some("app_db"),
                    "egress",
                    ("172.19.0.2", 40312),
                    ("172.19.0.1", 53),
                    "udp",
                    74,
                ),
                "host-access",
            ),
            delta_packets: 1,
            delta_bytes: 74,
        };
        assert_eq!(
            event_line(&event, &TimeZone::UTC),
            "Nov 27 22:10:05.123  drop        db 172.19.0.2:40312 -> 172.19.0.1:53  udp  \
             DROPPED (host-access)  egress on app_db  1 pkts 74 B"
        );
        let mut ingress = event.clone();
        ingress.flow.direction = Direction::Ingress;
        ingress.flow.peer = Some("web".into());
        ingress.flow.verdict = Verdict::Forwarded;
        ingress.flow.reason = None;
        let text = event_line(&ingress, &TimeZone::UTC);
        assert!(
            text.contains("web 172.19.0.2:40312 -> db 172.19.0.1:53  udp  FORWARDED  ingress"),
            "{text}"
        );
        assert_eq!(
            line(&StreamItem::Lost(3), FlowOutput::Jsonl, &TimeZone::UTC),
            format!(
                r#"{{"event":"lost","count":3,"schema_version":1,"host":"{}"}}"#,
                crate::host::host_name()
            )
        );
    }
}
