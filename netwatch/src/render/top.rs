//! `netwatch top`'s picture: the busiest containers or flows, as rates
//! between two snapshots of the flow entries, in a table fitted to a width.
//! The loop that fetches snapshots and redraws them is `cli::top`'s.
//!
//! Rates come from differences: each flow's counts now minus its counts in
//! the previous snapshot, over the time between them. Entries are keyed by
//! (container, network, direction, addresses, ports, protocol); a summary
//! of idle flows also by its verdict, as the agent keys them. Three cases
//! keep the differences honest:
//!
//! - a flow the agent folded into a summary since the previous snapshot
//!   disappears while its summary grows by the flow's counts: those counts
//!   are taken off the summary's difference, so folding shows no burst;
//! - a flow new since the previous snapshot counts in full only if it was
//!   first seen after that snapshot (less 2 s of slack); one first seen
//!   earlier (an agent that just restarted and swept the kernel's table)
//!   counts from now on;
//! - counts never go backwards in the agent; a smaller count reads as 0.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::Duration,
};

use jiff::{Timestamp, tz::TimeZone};
use netwatch_common::{
    protocol::Protocol,
    reason::{Direction, Verdict},
};

use super::units;
use crate::flows::{FlowEntry, record::endpoint_text};

/// An address with the name its container resolved it to, if any.
fn with_name(mut address: String, name: &Option<String>) -> String {
    if let Some(name) = name {
        address.push_str(&format!(" ({name})"));
    }
    address
}

/// What `top` ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum By {
    /// One row per container: bytes sent and received per second.
    Container,
    /// One row per flow.
    Flow,
}

/// One snapshot of `top -o json`: the rows of the table, with the rates
/// as numbers per second (`null` before two snapshots).
#[derive(Debug, serde::Serialize)]
pub struct TopFrame {
    /// When the entries were fetched.
    pub time: Timestamp,
    /// What the rates are over.
    pub interval_seconds: f64,
    pub by: By,
    pub rows: Vec<Row>,
}

/// The frame of `top -o json` for `now`, with rates against `prev`.
pub fn json_frame(prev: Option<&Snapshot>, now: &Snapshot, by: By, limit: usize) -> TopFrame {
    TopFrame {
        time: now.taken,
        interval_seconds: prev.map_or(0.0, |prev| {
            now.taken.duration_since(prev.taken).as_secs_f64()
        }),
        by,
        rows: top_talkers(prev, now, by, limit),
    }
}

/// Flow entries as fetched at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub taken: Timestamp,
    pub entries: Vec<FlowEntry>,
}

impl Snapshot {
    /// Entries fetched just now.
    pub fn now(entries: Vec<FlowEntry>) -> Snapshot {
        Snapshot {
            taken: Timestamp::now(),
            entries,
        }
    }
}

/// Per-second rates over one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Rates {
    /// Bytes sent by the container (egress).
    pub tx_bytes: f64,
    /// Bytes received by the container (ingress).
    pub rx_bytes: f64,
    pub packets: f64,
    /// Packets of flows whose latest verdict is `dropped`.
    pub dropped_packets: f64,
}

impl Rates {
    pub fn bytes(&self) -> f64 {
        self.tx_bytes + self.rx_bytes
    }
}

/// The flow a [`By::Flow`] row stands for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FlowColumns {
    pub direction: Direction,
    pub proto: Protocol,
    /// `172.18.0.2:43512`, `[2001:db8::1]:443`, `(12 idle flows)`, `*`.
    pub src: String,
    pub dst: String,
    pub peer: Option<String>,
    /// `forwarded`, or `dropped: REASON`.
    pub verdict: String,
}

/// One line of the table (and of `top -o json`'s `rows`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Row {
    /// `-` for traffic no container owns.
    pub container: String,
    /// The container's networks (comma-separated), or the flow's network.
    pub network: String,
    /// `Some` for [`By::Flow`] rows.
    pub flow: Option<FlowColumns>,
    /// `None` until there are two snapshots.
    pub rates: Option<Rates>,
    /// Total bytes and packets so far.
    pub bytes: u64,
    pub packets: u64,
    /// Flows behind the row.
    pub flows: u64,
}

/// Identifies a flow across snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FlowId<'a> {
    container: Option<&'a str>,
    network: Option<&'a str>,
    direction: Direction,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    src_port: u16,
    dst_port: u16,
    proto: Protocol,
    /// Only for summaries, which the agent keys by verdict too.
    summary_verdict: Option<Verdict>,
}

fn is_summary(e: &FlowEntry) -> bool {
    e.flows > 1 || e.proto == Protocol::Any
}

fn flow_id(e: &FlowEntry) -> FlowId<'_> {
    FlowId {
        container: e.container.as_deref(),
        network: e.network.as_deref(),
        direction: e.direction,
        src: e.src,
        dst: e.dst,
        src_port: e.src_port,
        dst_port: e.dst_port,
        proto: e.proto,
        summary_verdict: is_summary(e).then_some(e.verdict),
    }
}

/// (container, network, direction, verdict): where the agent folds a flow.
type SummaryOf<'a> = (Option<&'a str>, Option<&'a str>, Direction, Verdict);

fn summary_of(e: &FlowEntry) -> SummaryOf<'_> {
    (
        e.container.as_deref(),
        e.network.as_deref(),
        e.direction,
        e.verdict,
    )
}

/// How much a new flow may predate the previous snapshot and still count
/// in full (clocks, sweep intervals).
const NEW_FLOW_SLACK: jiff::SignedDuration = jiff::SignedDuration::from_secs(2);

/// Bytes and packets of each entry of `now` since `prev`, by index.
fn deltas(prev: &Snapshot, now: &Snapshot) -> Vec<(u64, u64)> {
    let before: HashMap<FlowId<'_>, &FlowEntry> =
        prev.entries.iter().map(|e| (flow_id(e), e)).collect();
    let present: std::collections::HashSet<FlowId<'_>> = now.entries.iter().map(flow_id).collect();
    let mut folded: HashMap<SummaryOf<'_>, (u64, u64)> = HashMap::new();
    for e in &prev.entries {
        if !is_summary(e) && !present.contains(&flow_id(e)) {
            let sum = folded.entry(summary_of(e)).or_default();
            sum.0 += e.bytes;
            sum.1 += e.packets;
        }
    }
    let cutoff = prev.taken.checked_sub(NEW_FLOW_SLACK).unwrap_or(prev.taken);
    now.entries
        .iter()
        .map(|e| {
            let (mut bytes, mut packets) = match before.get(&flow_id(e)) {
                Some(old) => (
                    e.bytes.saturating_sub(old.bytes),
                    e.packets.saturating_sub(old.packets),
                ),
                None if is_summary(e) || e.first_seen >= cutoff => (e.bytes, e.packets),
                None => (0, 0),
            };
            if is_summary(e) {
                let (b, p) = folded.get(&summary_of(e)).copied().unwrap_or_default();
                bytes = bytes.saturating_sub(b);
                packets = packets.saturating_sub(p);
            }
            (bytes, packets)
        })
        .collect()
}

fn verdict_text(e: &FlowEntry) -> String {
    match (e.verdict, &e.reason) {
        (Verdict::Dropped | Verdict::Audited, Some(reason)) => format!("{}: {reason}", e.verdict),
        (verdict, _) => verdict.to_string(),
    }
}

/// The `limit` busiest containers or flows of `now`, with rates since
/// `prev` (none without it), busiest first: by bytes per second, then by
/// total bytes, then by name.
pub fn top_talkers(prev: Option<&Snapshot>, now: &Snapshot, by: By, limit: usize) -> Vec<Row> {
    let seconds = prev.map(|p| (now.taken.duration_since(p.taken).as_secs_f64()).max(0.001));
    let deltas = match prev {
        Some(p) => deltas(p, now),
        None => vec![(0, 0); now.entries.len()],
    };
    let rates_of = |e: &FlowEntry, (bytes, packets): (u64, u64)| {
        seconds.map(|s| {
            let bytes = bytes as f64 / s;
            let packets = packets as f64 / s;
            Rates {
                tx_bytes: if e.direction == Direction::Ingress {
                    0.0
                } else {
                    bytes
                },
                rx_bytes: if e.direction == Direction::Ingress {
                    bytes
                } else {
                    0.0
                },
                packets,
                dropped_packets: if e.verdict == Verdict::Dropped {
                    packets
                } else {
                    0.0
                },
            }
        })
    };
    let mut rows: Vec<Row> = match by {
        By::Flow => now
            .entries
            .iter()
            .zip(&deltas)
            .map(|(e, d)| Row {
                container: e.container.clone().unwrap_or_else(|| "-".to_string()),
                network: e.network.clone().unwrap_or_else(|| "-".to_string()),
                flow: Some(FlowColumns {
                    direction: e.direction,
                    proto: e.proto,
                    src: if is_summary(e) {
                        format!("({} idle flows)", e.flows)
                    } else {
                        with_name(endpoint_text(e.src, e.src_port, e.proto), &e.src_name)
                    },
                    dst: with_name(endpoint_text(e.dst, e.dst_port, e.proto), &e.dst_name),
                    peer: e.peer_text(),
                    verdict: verdict_text(e),
                }),
                rates: rates_of(e, *d),
                bytes: e.bytes,
                packets: e.packets,
                flows: e.flows.max(1),
            })
            .collect(),
        By::Container => {
            let mut by_container: BTreeMap<Option<&str>, (Row, Vec<&str>)> = BTreeMap::new();
            for (e, d) in now.entries.iter().zip(&deltas) {
                let (row, networks) =
                    by_container
                        .entry(e.container.as_deref())
                        .or_insert_with(|| {
                            (
                                Row {
                                    container: e
                                        .container
                                        .clone()
                                        .unwrap_or_else(|| "-".to_string()),
                                    network: String::new(),
                                    flow: None,
                                    rates: seconds.map(|_| Rates::default()),
                                    bytes: 0,
                                    packets: 0,
                                    flows: 0,
                                },
                                Vec::new(),
                            )
                        });
                if let Some(network) = e.network.as_deref()
                    && !networks.contains(&network)
                {
                    networks.push(network);
                }
                if let (Some(total), Some(r)) = (row.rates.as_mut(), rates_of(e, *d)) {
                    total.tx_bytes += r.tx_bytes;
                    total.rx_bytes += r.rx_bytes;
                    total.packets += r.packets;
                    total.dropped_packets += r.dropped_packets;
                }
                row.bytes += e.bytes;
                row.packets += e.packets;
                row.flows += e.flows.max(1);
            }
            by_container
                .into_values()
                .map(|(mut row, mut networks)| {
                    networks.sort_unstable();
                    row.network = if networks.is_empty() {
                        "-".to_string()
                    } else {
                        networks.join(",")
                    };
                    row
                })
                .collect()
        }
    };
    rows.sort_by(|a, b| {
        let rate = |r: &Row| r.rates.map_or(0.0, |r| r.bytes());
        rate(b)
            .total_cmp(&rate(a))
            .then(b.bytes.cmp(&a.bytes))
            .then(a.container.cmp(&b.container))
    });
    rows.truncate(limit);
    rows
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

struct Column {
    header: &'static str,
    align: Align,
    /// Numbers have a fixed width; text columns share what is left.
    fixed: Option<usize>,
    /// Text columns: narrowest useful width.
    min: usize,
    /// Columns go, highest number first, when the width cannot hold them
    /// all; 0 never goes. From [`NICE_TO_HAVE`] up they also go before an
    /// essential column's text would be cut.
    priority: u8,
}

const fn text(header: &'static str, min: usize, priority: u8) -> Column {
    Column {
        header,
        align: Align::Left,
        fixed: None,
        min,
        priority,
    }
}

const fn number(header: &'static str, width: usize, priority: u8) -> Column {
    Column {
        header,
        align: Align::Right,
        fixed: Some(width),
        min: width,
        priority,
    }
}

const SEPARATOR: &str = "  ";
/// Columns of this priority and above give way to the text of others.
const NICE_TO_HAVE: u8 = 3;

fn rate_cell(rates: Option<Rates>, pick: impl Fn(&Rates) -> String) -> String {
    rates.map_or_else(|| "-".to_string(), |r| pick(&r))
}

fn columns_and_cells(rows: &[Row], by: By) -> (Vec<Column>, Vec<Vec<String>>) {
    match by {
        By::Container => (
            vec![
                text("CONTAINER", 10, 0),
                text("NETWORK", 7, 2),
                number("TX/s", 10, 0),
                number("RX/s", 10, 0),
                number("PKT/s", 7, 3),
                number("DROP/s", 7, 1),
                number("FLOWS", 6, 4),
                number("TOTAL", 8, 5),
            ],
            rows.iter()
                .map(|r| {
                    vec![
                        r.container.clone(),
                        r.network.clone(),
                        rate_cell(r.rates, |r| units::byte_rate(r.tx_bytes)),
                        rate_cell(r.rates, |r| units::byte_rate(r.rx_bytes)),
                        rate_cell(r.rates, |r| units::packet_rate(r.packets)),
                        rate_cell(r.rates, |r| units::packet_rate(r.dropped_packets)),
                        units::count(r.flows),
                        units::bytes(r.bytes),
                    ]
                })
                .collect(),
        ),
        By::Flow => (
            vec![
                text("CONTAINER", 8, 0),
                text("DIR", 3, 2),
                text("PROTO", 4, 4),
                text("SOURCE", 12, 0),
                text("DESTINATION", 12, 0),
                text("PEER", 6, 5),
                number("RATE", 10, 0),
                number("PKT/s", 7, 6),
                number("TOTAL", 8, 7),
                text("VERDICT", 9, 1),
            ],
            rows.iter()
                .map(|r| {
                    // Every row of a by-flow table has its flow.
                    let flow = r.flow.as_ref();
                    let column =
                        |text: fn(&FlowColumns) -> String| flow.map(text).unwrap_or_default();
                    vec![
                        r.container.clone(),
                        column(|f| match f.direction {
                            Direction::Egress => "out".to_string(),
                            Direction::Ingress => "in".to_string(),
                        }),
                        column(|f| f.proto.to_string()),
                        column(|f| f.src.clone()),
                        column(|f| f.dst.clone()),
                        flow.and_then(|f| f.peer.clone())
                            .unwrap_or_else(|| "-".to_string()),
                        rate_cell(r.rates, |r| units::byte_rate(r.bytes())),
                        rate_cell(r.rates, |r| units::packet_rate(r.packets)),
                        units::bytes(r.bytes),
                        column(|f| f.verdict.clone()),
                    ]
                })
                .collect(),
        ),
    }
}

/// `text` cut to `width` characters, with `…` marking the cut.
pub fn fit(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// Width of column `i` with nothing cut.
fn wanted_width(columns: &[Column], cells: &[Vec<String>], i: usize) -> usize {
    let c = &columns[i];
    match c.fixed {
        Some(w) => w.max(c.header.len()),
        None => cells
            .iter()
            .map(|row| row[i].chars().count())
            .chain([c.header.len(), c.min])
            .max()
            .unwrap_or(c.min),
    }
}

/// Removes the optional column with the highest priority number, if one
/// of at least `priority` is left.
fn drop_column(columns: &mut Vec<Column>, cells: &mut [Vec<String>], priority: u8) -> bool {
    let Some((drop, _)) = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.priority >= priority.max(1))
        .max_by_key(|(i, c)| (c.priority, *i))
    else {
        return false;
    };
    columns.remove(drop);
    for row in cells {
        row.remove(drop);
    }
    true
}

/// The rows as fixed columns in at most `width` characters per line (the
/// narrowest table still has its essential columns and is cut to `width`).
/// Text columns grow to fit their longest cell while the width allows,
/// and are cut with `…` beyond it. When the width is short, columns of
/// lesser importance go first, and the nice-to-have ones (packets, totals,
/// peer, …) go before an essential column's text would be cut. Lines end
/// without trailing spaces.
pub fn render_table(rows: &[Row], by: By, width: usize) -> String {
    let (mut columns, mut cells) = columns_and_cells(rows, by);
    let separators = |n: usize| SEPARATOR.len() * n.saturating_sub(1);
    let needed = |columns: &[Column]| {
        columns
            .iter()
            .map(|c| c.min.max(c.header.len()))
            .sum::<usize>()
            + separators(columns.len())
    };
    while needed(&columns) > width && drop_column(&mut columns, &mut cells, 1) {}
    let uncut = |columns: &[Column], cells: &[Vec<String>]| {
        (0..columns.len())
            .map(|i| wanted_width(columns, cells, i))
            .sum::<usize>()
            + separators(columns.len())
    };
    while uncut(&columns, &cells) > width && drop_column(&mut columns, &mut cells, NICE_TO_HAVE) {}
    let mut widths: Vec<usize> = columns.iter().map(|c| c.min.max(c.header.len())).collect();
    let wanted: Vec<usize> = (0..columns.len())
        .map(|i| wanted_width(&columns, &cells, i))
        .collect();
    let mut spare = width.saturating_sub(needed(&columns));
    while spare > 0 {
        let mut grew = false;
        for (w, want) in widths.iter_mut().zip(&wanted) {
            if spare > 0 && *w < *want {
                *w += 1;
                spare -= 1;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    let line = |texts: Vec<&str>| {
        let mut out = String::new();
        for (i, ((text, col), w)) in texts.iter().zip(&columns).zip(&widths).enumerate() {
            if i > 0 {
                out.push_str(SEPARATOR);
            }
            let text = fit(text, *w);
            match col.align {
                Align::Left => out.push_str(&format!("{text:<w$}")),
                Align::Right => out.push_str(&format!("{text:>w$}")),
            }
        }
        fit(out.trim_end(), width) + "\n"
    };
    let mut out = line(columns.iter().map(|c| c.header).collect());
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn by_name(by: By) -> &'static str {
    match by {
        By::Container => "container",
        By::Flow => "flow",
    }
}

/// The lines above the table: what is shown, when, and host-wide totals.
fn header(prev: Option<&Snapshot>, now: &Snapshot, by: By, interval: Duration) -> Vec<String> {
    let time = now
        .taken
        .to_zoned_datetime(TimeZone::system())
        .strftime("%H:%M:%S");
    let mut lines = vec![format!(
        "netwatch top · by {} · every {} · {time}",
        by_name(by),
        humantime(interval)
    )];
    let containers = {
        let mut names: Vec<&str> = now
            .entries
            .iter()
            .filter_map(|e| e.container.as_deref())
            .collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    };
    let flows: u64 = now.entries.iter().map(|e| e.flows.max(1)).sum();
    let totals = match prev {
        Some(_) => {
            let all = top_talkers(prev, now, By::Flow, usize::MAX);
            let sum = |f: fn(&Rates) -> f64| {
                all.iter()
                    .filter_map(|r| r.rates.as_ref())
                    .map(f)
                    .sum::<f64>()
            };
            format!(
                "TX {}  RX {}  drops {}",
                units::byte_rate(sum(|r| r.tx_bytes)),
                units::byte_rate(sum(|r| r.rx_bytes)),
                units::packet_rate(sum(|r| r.dropped_packets)),
            )
        }
        None => "measuring rates…".to_string(),
    };
    lines.push(format!(
        "{totals} · {} flows · {} containers",
        units::count(flows),
        containers
    ));
    lines
}

fn humantime(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// One frame: header, blank line, table; every line at most `width`.
pub fn render_frame(
    prev: Option<&Snapshot>,
    now: &Snapshot,
    by: By,
    interval: Duration,
    limit: usize,
    width: usize,
) -> String {
    let mut out = String::new();
    for line in header(prev, now, by, interval) {
        out.push_str(&fit(&line, width));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&render_table(&top_talkers(prev, now, by, limit), by, width));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::*;

    #[test]
    fn rates_are_differences_over_the_interval() {
        let prev = snapshot_at(10, vec![web_out(1_000), web_in(10_000)]);
        let now = snapshot_at(12, vec![web_out(5_000), web_in(30_000)]);
        let rows = top_talkers(Some(&prev), &now, By::Container, 10);
        assert_eq!(rows.len(), 1);
        let r = rows[0].rates.unwrap();
        assert_eq!((r.tx_bytes, r.rx_bytes), (2_000.0, 10_000.0));
        // One packet per 100 bytes: (40 + 200) packets in 2 s.
        assert_eq!(r.packets, 120.0);
        assert_eq!(r.dropped_packets, 0.0);
        assert_eq!((rows[0].bytes, rows[0].flows), (35_000, 2));
        assert_eq!(rows[0].network, "front");

        let flows = top_talkers(Some(&prev), &now, By::Flow, 10);
        assert_eq!(flows.len(), 2);
        assert_eq!(
            flows[0].flow.as_ref().unwrap().direction,
            Direction::Ingress
        );
        assert_eq!(flows[0].rates.unwrap().bytes(), 10_000.0);
        assert_eq!(flows[1].rates.unwrap().bytes(), 2_000.0);
        assert_eq!(flows[1].flow.as_ref().unwrap().src, "172.20.0.2:40000");
    }

    #[test]
    fn without_a_previous_snapshot_there_are_no_rates() {
        let now = snapshot_at(12, vec![web_out(5_000)]);
        let rows = top_talkers(None, &now, By::Container, 10);
        assert_eq!(rows[0].rates, None);
        let table = render_table(&rows, By::Container, 100);
        assert!(table.lines().nth(1).unwrap().contains(" -  "), "{table}");
    }

    #[test]
    fn new_flows_count_in_full_only_when_they_began_after_the_previous_snapshot() {
        let mut fresh = web_out(4_000);
        fresh.first_seen = at(11);
        let mut old = web_in(900_000);
        old.first_seen = at(0);
        let prev = snapshot_at(10, vec![]);
        let now = snapshot_at(12, vec![fresh, old]);
        let r = top_talkers(Some(&prev), &now, By::Container, 10)[0]
            .rates
            .unwrap();
        assert_eq!((r.tx_bytes, r.rx_bytes), (2_000.0, 0.0));
    }

    #[test]
    fn folding_into_a_summary_is_no_burst() {
        let other = egress(
            "web",
            "front",
            ("172.20.0.2", 40001),
            ("203.0.113.9", 443),
            50_000,
        );
        let prev = snapshot_at(
            10,
            vec![
                web_out(1_000),
                other,
                summary("web", "front", "egress", 3, 70_000),
            ],
        );
        // `other` (50 000 bytes) was folded, and grew by 2 000 before that.
        let now = snapshot_at(
            12,
            vec![
                web_out(3_000),
                summary("web", "front", "egress", 4, 122_000),
            ],
        );
        let r = top_talkers(Some(&prev), &now, By::Container, 10)[0]
            .rates
            .unwrap();
        assert_eq!(r.tx_bytes, (2_000.0 + 2_000.0) / 2.0);
    }

    #[test]
    fn counts_that_go_backwards_read_as_zero_and_drops_are_counted() {
        let prev = snapshot_at(
            10,
            vec![web_out(5_000), dropped(web_in(1_000), "not-in-network")],
        );
        let now = snapshot_at(
            11,
            vec![web_out(4_000), dropped(web_in(1_500), "not-in-network")],
        );
        let rows = top_talkers(Some(&prev), &now, By::Flow, 10);
        let out = rows
            .iter()
            .find(|r| r.flow.as_ref().unwrap().direction == Direction::Egress)
            .unwrap();
        assert_eq!(out.rates.unwrap().bytes(), 0.0);
        let drop = rows
            .iter()
            .find(|r| r.flow.as_ref().unwrap().direction == Direction::Ingress)
            .unwrap();
        assert_eq!(drop.rates.unwrap().dropped_packets, 5.0);
        assert_eq!(
            drop.flow.as_ref().unwrap().verdict,
            "dropped: not-in-network"
        );
    }

    #[test]
    fn busiest_first_and_limited() {
        let entries = shop();
        let prev = snapshot_at(
            0,
            entries
                .iter()
                .cloned()
                .map(|mut e| {
                    e.bytes /= 2;
                    e.packets /= 2;
                    e
                })
                .collect(),
        );
        let now = snapshot_at(10, entries);
        let rows = top_talkers(Some(&prev), &now, By::Container, 3);
        let names: Vec<&str> = rows.iter().map(|r| r.container.as_str()).collect();
        assert_eq!(names, ["shop-web-1", "shop-api-1", "shop-db-1"]);
        assert_eq!(rows[1].network, "shop_backend,shop_frontend");
        let all = top_talkers(Some(&prev), &now, By::Container, 100);
        assert_eq!(
            all.last().unwrap().container,
            "-",
            "the uplink drop has no container"
        );
        let flows = top_talkers(Some(&prev), &now, By::Flow, 100);
        assert_eq!(flows.len(), now.entries.len());
        for pair in flows.windows(2) {
            assert!(pair[0].rates.unwrap().bytes() >= pair[1].rates.unwrap().bytes());
        }
        let idle = flows.iter().find(|r| r.flows == 40).unwrap();
        assert_eq!(idle.flow.as_ref().unwrap().src, "(40 idle flows)");
    }

    #[test]
    fn tables_fit_the_width_in_fixed_columns() {
        let entries = shop();
        let prev = snapshot_at(0, vec![]);
        let now = snapshot_at(2, entries);
        for by in [By::Container, By::Flow] {
            let rows = top_talkers(Some(&prev), &now, by, 100);
            for width in [30, 50, 72, 80, 100, 120, 160, 240] {
                let table = render_table(&rows, by, width);
                assert_eq!(table.lines().count(), rows.len() + 1);
                for line in table.lines() {
                    assert!(line.chars().count() <= width, "{width}: {line:?}");
                    assert_eq!(line, line.trim_end());
                }
                // Columns line up: every right-aligned rate ends where its
                // header does.
                let header = table.lines().next().unwrap();
                let rate = if by == By::Container { "TX/s" } else { "RATE" };
                if let Some(end) = header.find(rate).map(|i| i + rate.len()) {
                    for line in table.lines().skip(1) {
                        let before: String = line.chars().take(end).collect();
                        assert!(before.ends_with("/s"), "{width}: {line:?}");
                    }
                }
            }
        }
        let wide = render_table(
            &top_talkers(Some(&prev), &now, By::Flow, 100),
            By::Flow,
            240,
        );
        let header = wide.lines().next().unwrap();
        for column in columns_and_cells(&[], By::Flow).0 {
            assert!(header.contains(column.header), "{header}");
        }
        assert!(wide.contains("[fe80::42:acff:fe15:4]:5353"));
        let narrow = render_table(
            &top_talkers(Some(&prev), &now, By::Container, 100),
            By::Container,
            50,
        );
        let header = narrow.lines().next().unwrap();
        assert!(header.contains("CONTAINER") && header.contains("TX/s") && header.contains("RX/s"));
        assert!(
            !header.contains("TOTAL"),
            "least important columns go first: {header}"
        );
    }

    #[test]
    fn long_names_are_cut_with_an_ellipsis() {
        let mut e = web_out(100);
        e.container = Some("a-very-long-container-name-from-compose-1".into());
        let rows = top_talkers(None, &snapshot_at(0, vec![e]), By::Container, 10);
        let table = render_table(&rows, By::Container, 72);
        assert!(table.contains('…'), "{table}");
        assert!(table.lines().all(|l| l.chars().count() <= 72));
    }

    #[test]
    fn frames_have_a_header_with_totals() {
        let prev = snapshot_at(10, vec![web_out(1_000), web_in(1_000)]);
        let now = snapshot_at(12, vec![web_out(3_048), web_in(1_000)]);
        let frame = render_frame(Some(&prev), &now, By::Flow, Duration::from_secs(2), 10, 100);
        let second = frame.lines().nth(1).unwrap();
        assert_eq!(
            second,
            "TX 1.0 KiB/s  RX 0 B/s  drops 0/s · 2 flows · 1 containers"
        );
        assert!(
            frame
                .lines()
                .next()
                .unwrap()
                .starts_with("netwatch top · by flow · every 2s · ")
        );
        let first = render_frame(None, &now, By::Container, Duration::from_secs(2), 10, 100);
        assert!(first.contains("measuring rates…"));
    }
}
