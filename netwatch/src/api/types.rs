//! What the API answers with, beside [`FlowEntry`] itself: drops grouped by
//! container and reason, the lines of a live stream, the agent's status,
//! and errors.

use std::{collections::BTreeMap, net::IpAddr};

use jiff::Timestamp;
use netwatch_common::reason::{Direction, Verdict};
use serde::{Deserialize, Serialize};

use crate::flows::{FlowEntry, FlowReason, ObservedEvent, PipelineCounters};

/// Remote ends a drop group lists at most (the busiest).
pub const REMOTES_PER_GROUP: usize = 5;

/// Dropped flows of one container on one network for one reason
/// (`GET /v1/drops`, `netwatch drops`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropGroup {
    pub container: Option<String>,
    pub service: Option<String>,
    pub network: Option<String>,
    pub reason: FlowReason,
    /// `dropped`, or `audited`: forwarded under audit, which enforcement
    /// would have dropped for `reason`.
    #[serde(default = "dropped")]
    pub verdict: Verdict,
    /// `netwatch` or `kernel` (see [`FlowEntry::dropped_by`]).
    #[serde(default)]
    pub dropped_by: Option<String>,
    /// Where the deciding rule comes from (see [`FlowEntry::rule`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Packets and bytes of the dropped flows (Ethernet frames, as for
    /// flows).
    pub packets: u64,
    pub bytes: u64,
    /// How many flows (5-tuples and directions) were dropped.
    pub flows: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// The other ends of the busiest dropped flows (at most
    /// [`REMOTES_PER_GROUP`]): what the container tried to reach, or who
    /// tried to reach it, as `address[:port]/proto`, with the container's
    /// name when the other end is one on this host.
    pub remotes: Vec<String>,
}

/// The other end of a flow, as `DropGroup::remotes` shows it; `None` for a
/// summary of idle flows.
fn remote(entry: &FlowEntry) -> Option<String> {
    let (ip, port) = if entry.direction == Direction::Ingress {
        (entry.src?, entry.src_port)
    } else {
        (entry.dst?, entry.dst_port)
    };
    let icmp = entry.proto.is_icmp();
    let address = match (ip, port) {
        (_, 0) => ip.to_string(),
        (_, _) if icmp => ip.to_string(),
        (IpAddr::V6(v6), p) => format!("[{v6}]:{p}"),
        (IpAddr::V4(v4), p) => format!("{v4}:{p}"),
    };
    Some(match &entry.peer_text() {
        Some(peer) => format!("{peer} {address}/{}", entry.proto),
        None => format!("{address}/{}", entry.proto),
    })
}

fn dropped() -> Verdict {
    Verdict::Dropped
}

/// Groups the dropped and audited entries among `entries` by container,
/// network, reason and verdict; the group that dropped most packets first.
pub fn drop_groups(entries: &[FlowEntry]) -> Vec<DropGroup> {
    type Key = (Option<String>, Option<String>, FlowReason, Verdict);
    let mut groups: BTreeMap<Key, (DropGroup, Vec<(u64, String)>)> = BTreeMap::new();
    for entry in entries.iter().filter(|e| e.verdict.is_drop_like()) {
        let reason = entry.reason.clone().unwrap_or(FlowReason::Unknown);
        let key = (
            entry.container.clone(),
            entry.network.clone(),
            reason,
            entry.verdict,
        );
        let (group, remotes) = groups.entry(key.clone()).or_insert_with(|| {
            (
                DropGroup {
                    container: entry.container.clone(),
                    service: entry.service.clone(),
                    network: entry.network.clone(),
                    reason: key.2,
                    verdict: key.3,
                    dropped_by: entry.dropped_by.clone(),
                    rule: entry.rule.clone(),
                    packets: 0,
                    bytes: 0,
                    flows: 0,
                    first_seen: entry.first_seen,
                    last_seen: entry.last_seen,
                    remotes: Vec::new(),
                },
                Vec::new(),
            )
        });
        group.packets += entry.packets;
        group.bytes += entry.bytes;
        group.flows += entry.flows;
        group.first_seen = group.first_seen.min(entry.first_seen);
        group.last_seen = group.last_seen.max(entry.last_seen);
        if let Some(remote) = remote(entry) {
            remotes.push((entry.packets, remote));
        }
    }
    let mut out: Vec<DropGroup> = groups
        .into_values()
        .map(|(mut group, mut remotes)| {
            remotes.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let mut names: Vec<String> = Vec::new();
            for (_, remote) in remotes {
                if names.len() == REMOTES_PER_GROUP {
                    break;
                }
                if !names.contains(&remote) {
                    names.push(remote);
                }
            }
            group.remotes = names;
            group
        })
        .collect();
    out.sort_by(|a, b| {
        b.packets
            .cmp(&a.packets)
            .then_with(|| b.last_seen.cmp(&a.last_seen))
    });
    out
}

/// One line of `GET /v1/observe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamItem {
    /// A record (`flow-open`, `flow-close`, `flow-export`, `drop`), or with
    /// `since`, a flow seen before the stream began (`flow`).
    Event(Box<ObservedEvent>),
    /// The observer fell behind and this many records passed it by.
    Lost(u64),
}

#[derive(Serialize, Deserialize)]
struct LostLine {
    event: String,
    count: u64,
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    host: String,
}

impl StreamItem {
    /// The line as sent, without its newline.
    pub fn to_line(&self) -> String {
        let json = match self {
            StreamItem::Event(event) => serde_json::to_string(event),
            StreamItem::Lost(count) => serde_json::to_string(&LostLine {
                event: "lost".into(),
                count: *count,
                schema_version: crate::flows::SCHEMA_VERSION,
                host: crate::host::host_name().to_owned(),
            }),
        };
        // Plain data (strings, numbers, timestamps): serialising cannot fail.
        json.unwrap_or_default()
    }

    /// Parses one line.
    ///
    /// # Errors
    /// Not a stream line.
    pub fn from_line(line: &str) -> Result<StreamItem, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(line)?;
        if value.get("event").and_then(|e| e.as_str()) == Some("lost") {
            let lost: LostLine = serde_json::from_value(value)?;
            return Ok(StreamItem::Lost(lost.count));
        }
        Ok(StreamItem::Event(Box::new(serde_json::from_value(value)?)))
    }
}

/// The request header with which a client asks `GET /v1/flows` for a
/// [`Layout`] other than compact; the answer carries it too, naming the
/// layout it is in (an agent that predates it sends compact JSON and no
/// such header).
pub const LAYOUT_HEADER: &str = "netwatch-layout";

/// How a list is laid out as JSON.
///
/// The CLI prints `flows -o json` and `-o jsonl` as the agent wrote them:
/// parsing 100,000 flows (~50 MB) only to write them again took the CLI
/// longer than the agent's whole query. One writer for both sides keeps
/// the bytes the same as when the CLI wrote them itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One line (what the API answers by default).
    Compact,
    /// Indented, as `-o json` prints.
    Pretty,
    /// One compact object per line, as `-o jsonl` prints.
    Lines,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Compact => "compact",
            Layout::Pretty => "pretty",
            Layout::Lines => "lines",
        }
    }

    pub fn from_name(name: &str) -> Option<Layout> {
        [Layout::Compact, Layout::Pretty, Layout::Lines]
            .into_iter()
            .find(|l| l.name() == name)
    }

    /// `items` in this layout, ending with a newline (lines: each line);
    /// no items as lines is nothing at all.
    pub fn write<T: Serialize>(self, items: &[T]) -> Vec<u8> {
        let mut out = Vec::new();
        // Plain data (strings, numbers, timestamps): serialising into a
        // Vec cannot fail.
        match self {
            Layout::Compact => {
                let _ = serde_json::to_writer(&mut out, items);
                out.push(b'\n');
            }
            Layout::Pretty => {
                let _ = serde_json::to_writer_pretty(&mut out, items);
                out.push(b'\n');
            }
            Layout::Lines => {
                for item in items {
                    let _ = serde_json::to_writer(&mut out, item);
                    out.push(b'\n');
                }
            }
        }
        out
    }

    /// [`Layout::write`] of the flows' views, the same bytes, written by
    /// hand (see [`crate::flows::json`]): what `/v1/flows` answers.
    pub fn write_flows(self, flows: &[crate::flows::aggregate::FlowRef<'_>]) -> Vec<u8> {
        crate::flows::json::write_flows(self.shape(), flows)
    }

    /// [`Layout::write_flows`] in pieces of about
    /// [`crate::flows::json::CHUNK_BYTES`], each handed to `emit` as soon
    /// as it is written.
    pub fn stream_flows(
        self,
        flows: &[crate::flows::aggregate::FlowRef<'_>],
        emit: impl FnMut(Vec<u8>),
    ) {
        use crate::flows::json::{CHUNK_BYTES, stream_flows};
        stream_flows(self.shape(), flows, CHUNK_BYTES, emit);
    }

    pub(crate) fn shape(self) -> crate::flows::json::Shape {
        use crate::flows::json::Shape;
        match self {
            Layout::Compact => Shape::Compact,
            Layout::Pretty => Shape::Pretty,
            Layout::Lines => Shape::Lines,
        }
    }
}

/// What the API counted about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCounters {
    /// Requests answered (any status).
    pub requests: u64,
    /// Requests answered with 4xx: bad query, unknown path, wrong method.
    pub bad_requests: u64,
    /// Connections closed because what came was not HTTP, too large, or
    /// too slow (a header not complete within 10 s); hyper answers 400,
    /// 431 or 408 where it still can.
    pub malformed_requests: u64,
    /// Connections that failed otherwise (an I/O error). A client that
    /// goes away, e.g. ending an `observe` stream, is not counted.
    pub connection_errors: u64,
    /// Connections refused because too many were open.
    pub refused_connections: u64,
    /// Request handlers that panicked (the agent carries on; this should
    /// stay 0).
    pub panics: u64,
    /// Live `observe` streams now.
    pub observers: u64,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiStatus {
    pub pid: u32,
    pub version: String,
    pub started_at: Timestamp,
    /// Where the API is served.
    pub socket: String,
    /// Flows kept one by one now, and at most.
    pub tracked_flows: usize,
    pub flow_limit: usize,
    pub counters: PipelineCounters,
    pub api: ApiCounters,
    /// What the DNS log counted (an older agent has none: zeros).
    #[serde(default)]
    pub dns: crate::flows::dns::DnsCounters,
    /// How regularly the ring buffers are read (an older agent has none:
    /// zeros).
    #[serde(default)]
    pub drains: crate::flows::reader::DrainGaps,
}

/// The body of every error answer: one line that says what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use netwatch_common::protocol::Protocol;

    use super::*;

    fn flow(
        container: &str,
        reason: Option<&str>,
        dst: &str,
        port: u16,
        packets: u64,
    ) -> FlowEntry {
        FlowEntry {
            schema_version: crate::flows::SCHEMA_VERSION,
            host: String::new(),
            rule: None,
            container: Some(container.into()),
            container_id: None,
            project: None,
            service: None,
            network: Some("int".into()),
            direction: Direction::Egress,
            src: Some("172.30.0.2".parse().unwrap()),
            dst: Some(dst.parse().unwrap()),
            src_port: 40000,
            dst_port: port,
            proto: Protocol::Tcp,
            packets,
            bytes: packets * 60,
            verdict: if reason.is_some() {
                Verdict::Dropped
            } else {
                Verdict::Forwarded
            },
            reason: reason.map(|r| r.parse().unwrap()),
            dropped_by: None,
            peer: None,
            peer_service: None,
            peer_kind: None,
            published: None,
            src_name: None,
            dst_name: None,
            first_seen: Timestamp::from_second(100 + packets as i64).unwrap(),
            last_seen: Timestamp::from_second(200 + packets as i64).unwrap(),
            interface: None,
            flows: 1,
        }
    }

    #[test]
    fn drops_are_grouped_by_container_network_and_reason_busiest_first() {
        let entries = [
            flow("web", Some("host-access"), "172.30.0.1", 53, 2),
            flow("web", Some("host-access"), "172.30.0.1", 80, 5),
            flow("web", Some("not-in-network"), "203.0.113.7", 443, 1),
            flow("db", Some("host-access"), "172.30.0.1", 22, 9),
            flow("web", None, "172.30.0.3", 5432, 100),
        ];
        let groups = drop_groups(&entries);
        let shape: Vec<(&str, String, u64, u64)> = groups
            .iter()
            .map(|g| {
                (
                    g.container.as_deref().unwrap(),
                    g.reason.to_string(),
                    g.packets,
                    g.flows,
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("db", "host-access".to_string(), 9, 1),
                ("web", "host-access".to_string(), 7, 2),
                ("web", "not-in-network".to_string(), 1, 1)
            ]
        );
        assert_eq!(
            groups[1].remotes,
            ["172.30.0.1:80/tcp", "172.30.0.1:53/tcp"]
        );
        assert_eq!(groups[1].first_seen, Timestamp::from_second(102).unwrap());
        assert_eq!(groups[1].last_seen, Timestamp::from_second(205).unwrap());
    }

    #[test]
    fn layouts_write_what_serde_json_writes_with_a_newline_after_each_document() {
        let entries = [
            flow("web", None, "172.30.0.3", 5432, 1),
            flow("db", Some("host-access"), "172.30.0.1", 53, 2),
        ];
        let text =
            |layout: Layout, items: &[FlowEntry]| String::from_utf8(layout.write(items)).unwrap();
        assert_eq!(
            text(Layout::Pretty, &entries),
            serde_json::to_string_pretty(&entries).unwrap() + "\n"
        );
        assert_eq!(
            text(Layout::Compact, &entries),
            serde_json::to_string(&entries).unwrap() + "\n"
        );
        let lines = text(Layout::Lines, &entries);
        let parsed: Vec<FlowEntry> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(parsed, entries);
        assert!(lines.ends_with("}\n"));
        assert_eq!(text(Layout::Pretty, &[]), "[]\n");
        assert_eq!(text(Layout::Lines, &[]), "");
        for layout in [Layout::Compact, Layout::Pretty, Layout::Lines] {
            assert_eq!(Layout::from_name(layout.name()), Some(layout));
        }
        assert_eq!(Layout::from_name("yaml"), None);
    }

    #[test]
    fn stream_lines_round_trip() {
        let event = StreamItem::Event(Box::new(ObservedEvent {
            event: "flow-open".into(),
            time: Timestamp::from_second(300).unwrap(),
            flow: flow("web", None, "172.30.0.3", 5432, 1),
            delta_packets: 1,
            delta_bytes: 60,
        }));
        let line = event.to_line();
        assert!(!line.contains('\n'));
        assert!(line.contains(r#""event":"flow-open""#), "{line}");
        assert!(line.contains(r#""container":"web""#), "{line}");
        assert_eq!(StreamItem::from_line(&line).unwrap(), event);
        let lost = StreamItem::Lost(12);
        assert_eq!(
            lost.to_line(),
            format!(
                r#"{{"event":"lost","count":12,"schema_version":1,"host":"{}"}}"#,
                crate::host::host_name()
            )
        );
        // As clients before schema 1 sent it.
        assert_eq!(
            StreamItem::from_line(r#"{"event":"lost","count":12}"#).unwrap(),
            lost
        );
        assert_eq!(StreamItem::from_line(&lost.to_line()).unwrap(), lost);
        assert!(StreamItem::from_line("{").is_err());
    }
}
