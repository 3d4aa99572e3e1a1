//! The flow log read back: `netwatch flows --from-log PATH` answers flow
//! queries from the log the agent wrote ([`super::flowlog`]), without an
//! agent.
//!
//! It reads the rotated files (`PATH.2`, `PATH.1`: the highest number is
//! the oldest) and then `PATH`, and keeps each flow's latest event: its
//! `packets` and `bytes` are the flow's running totals, so the latest
//! holds the most. A flow is its host, container, network, interface,
//! direction, 5-tuple and who dropped it (netwatch or the kernel), as the
//! agent keeps them apart. `lost` lines (the writer fell behind) are
//! skipped and counted; so are lines that are not flow-log lines, and a
//! last line cut short (the agent was writing it). Files logrotate
//! compressed (`PATH.3.gz`) are not read: they are named in the summary.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufRead, BufReader},
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use jiff::Timestamp;
use netwatch_common::{protocol::Protocol, reason::Direction};

use crate::flows::{FlowEntry, ObservedEvent};

/// What tells two flows apart in the log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FlowId {
    host: String,
    container: Option<String>,
    network: Option<String>,
    interface: Option<String>,
    direction: Direction,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    ports: (u16, u16),
    proto: Protocol,
    dropped_by: Option<String>,
}

impl FlowId {
    fn of(flow: &FlowEntry) -> FlowId {
        FlowId {
            host: flow.host.clone(),
            // Names are reused, ids are not; a line from before ids has a
            // name only.
            container: flow.container_id.clone().or_else(|| flow.container.clone()),
            network: flow.network.clone(),
            interface: flow.interface.clone(),
            direction: flow.direction,
            src: flow.src,
            dst: flow.dst,
            ports: (flow.src_port, flow.dst_port),
            proto: flow.proto,
            dropped_by: flow.dropped_by.clone(),
        }
    }
}

/// The log read back: the latest event of each flow, and what was
/// skipped.
#[derive(Debug, Default)]
pub struct Replay {
    /// Events after this time are left out (`--until`): counts are as of
    /// the flow's latest event before it.
    until: Option<Timestamp>,
    /// The files read, oldest first.
    pub files: Vec<PathBuf>,
    /// Rotated files compressed by logrotate, not read.
    pub compressed: Vec<PathBuf>,
    /// Flow events read.
    pub events: u64,
    /// `lost` lines, and the events they say the agent could not log.
    pub lost_lines: u64,
    pub lost_events: u64,
    /// Lines that are no flow-log line, skipped.
    pub unreadable: u64,
    /// Files whose last line was cut short (no line feed, not JSON).
    pub truncated: u64,
    latest: HashMap<FlowId, ObservedEvent>,
}

impl Replay {
    /// An empty replay that leaves out events after `until`.
    pub fn new(until: Option<Timestamp>) -> Replay {
        Replay {
            until,
            ..Replay::default()
        }
    }

    /// Reads one line. `complete`: it ended with a line feed (a partial
    /// last line that does not parse counts as truncated, not unreadable).
    pub fn read_line(&mut self, line: &[u8], complete: bool) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
            if complete {
                self.unreadable += 1;
            } else {
                self.truncated += 1;
            }
            return;
        };
        if value.get("event").and_then(|e| e.as_str()) == Some("lost") {
            self.lost_lines += 1;
            self.lost_events += value
                .get("count")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            return;
        }
        let Ok(event) = serde_json::from_value::<ObservedEvent>(value) else {
            self.unreadable += 1;
            return;
        };
        self.events += 1;
        if self.until.is_some_and(|until| event.time > until) {
            return;
        }
        let id = FlowId::of(&event.flow);
        match self.latest.get(&id) {
            // The same time: the later line was written later.
            Some(seen) if seen.time > event.time => {}
            _ => {
                self.latest.insert(id, event);
            }
        }
    }

    /// Reads every line of `reader`.
    ///
    /// # Errors
    /// Reading fails.
    pub fn read(&mut self, mut reader: impl BufRead) -> io::Result<()> {
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            let complete = line.last() == Some(&b'\n');
            self.read_line(&line, complete);
        }
    }

    /// Each flow as its latest event has it, busiest first (as the agent
    /// lists them).
    pub fn flows(&self) -> Vec<FlowEntry> {
        let mut flows: Vec<FlowEntry> = self.latest.values().map(|e| e.flow.clone()).collect();
        flows.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.last_seen.cmp(&b.last_seen)));
        flows
    }

    /// One line for stderr: what was read and what was skipped.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "read {} events of {} flows from {}",
            self.events,
            self.latest.len(),
            self.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if self.lost_lines > 0 {
            text.push_str(&format!(
                "; skipped {} `lost` lines: the agent could not log {} events",
                self.lost_lines, self.lost_events
            ));
        }
        if self.unreadable > 0 {
            text.push_str(&format!(
                "; skipped {} lines that are not flow-log lines",
                self.unreadable
            ));
        }
        if self.truncated > 0 {
            text.push_str(&format!(
                "; skipped {} last lines cut short (being written)",
                self.truncated
            ));
        }
        if !self.compressed.is_empty() {
            text.push_str(&format!(
                "; not read (compressed; gunzip them to include them): {}",
                self.compressed
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        text
    }
}

/// The flow log at `path` and its rotated files, oldest first (`PATH.3`,
/// `PATH.2`, `PATH.1`, `PATH`), and the rotated files logrotate compressed
/// (`PATH.4.gz`).
///
/// # Errors
/// The directory cannot be read.
pub fn log_files(path: &Path) -> io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut rotated: Vec<(u64, PathBuf)> = Vec::new();
    let mut compressed: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(name))
            .and_then(|f| f.strip_prefix('.'))
        else {
            continue;
        };
        let (number, gz) = match rest.strip_suffix(".gz") {
            Some(number) => (number, true),
            None => (rest, false),
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(n) = number.parse::<u64>() else {
            continue;
        };
        let file = dir.join(&file_name);
        if gz {
            compressed.push((n, file));
        } else {
            rotated.push((n, file));
        }
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    compressed.sort_by_key(|c| std::cmp::Reverse(c.0));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, f)| f).collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    Ok((files, compressed.into_iter().map(|(_, f)| f).collect()))
}

/// Reads the flow log at `path` with its rotated files, leaving out events
/// after `until`.
///
/// # Errors
/// Neither the log nor a rotated file is there, or one cannot be read.
pub fn replay(path: &Path, until: Option<Timestamp>) -> Result<Replay> {
    let (files, compressed) = log_files(path).with_context(|| {
        format!(
            "cannot list the flow log's directory for {}",
            path.display()
        )
    })?;
    if files.is_empty() {
        bail!(
            "no flow log at {} (nor rotated files {0}.1, …): give the path the agent writes \
             (netwatch agent --flow-log, NETWATCH_FLOW_LOG)",
            path.display()
        );
    }
    let mut replay = Replay::new(until);
    for file in &files {
        let reader = File::open(file)
            .map(BufReader::new)
            .with_context(|| format!("cannot open {}", file.display()))?;
        replay
            .read(reader)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    replay.files = files;
    replay.compressed = compressed;
    Ok(replay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::{egress, with_peer};

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("netwatch-replay-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// An event of a flow from `src_port`, with these totals, at second `at`.
    fn event(src_port: u16, packets: u64, at: i64) -> String {
        let mut flow = with_peer(
            egress(
                "web",
                "front",
                ("172.19.0.2", src_port),
                ("172.19.0.3", 80),
                0,
            ),
            "db",
        );
        flow.packets = packets;
        flow.bytes = packets * 100;
        flow.last_seen = Timestamp::from_second(at).unwrap();
        let event = ObservedEvent {
            event: "flow-export".into(),
            time: Timestamp::from_second(at).unwrap(),
            flow,
            delta_packets: 1,
            delta_bytes: 100,
        };
        serde_json::to_string(&event).unwrap() + "\n"
    }

    fn packets_by_port(replay: &Replay) -> Vec<(u16, u64)> {
        let mut flows: Vec<(u16, u64)> = replay
            .flows()
            .iter()
            .map(|f| (f.src_port, f.packets))
            .collect();
        flows.sort_unstable();
        flows
    }

    #[test]
    fn the_rotated_files_are_read_oldest_first_and_each_flows_latest_event_wins() {
        let dir = TempDir::new("rotated");
        let log = dir.0.join("flows.log");
        let write = |suffix: &str, text: String| {
            let mut name = log.clone().into_os_string();
            name.push(suffix);
            std::fs::write(name, text).unwrap();
        };
        // PATH.2 is the oldest. Port 1's latest event is in PATH, port 2's
        // in PATH.1; port 3 is only in PATH.2.
        write(
            ".2",
            event(1, 1, 100) + &event(3, 7, 101) + &event(2, 1, 102),
        );
        write(".1", event(1, 5, 110) + &event(2, 4, 111));
        write("", event(1, 9, 120));
        // Not the log's: another file, and a compressed rotation.
        write(".bak", event(4, 1, 130));
        write(".3.gz", "\u{1f}\u{8b}".to_string());
        let replay = replay(&log, None).unwrap();
        assert_eq!(packets_by_port(&replay), [(1, 9), (2, 4), (3, 7)]);
        let names: Vec<String> = replay
            .files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["flows.log.2", "flows.log.1", "flows.log"]);
        assert_eq!(replay.events, 6);
        assert!(
            replay.summary().contains("flows.log.3.gz"),
            "{}",
            replay.summary()
        );
        // Until second 111: as the log stood then.
        let then = super::replay(&log, Some(Timestamp::from_second(111).unwrap())).unwrap();
        assert_eq!(packets_by_port(&then), [(1, 5), (2, 4), (3, 7)]);
    }

    #[test]
    fn a_log_gathered_from_two_hosts_keeps_their_flows_apart_and_host_selects_one() {
        use crate::flows::filter::{FlowFilter, Match};
        let on = |host: &str, packets: u64| {
            let mut line: serde_json::Value =
                serde_json::from_str(&event(1, packets, 100)).unwrap();
            line["host"] = host.into();
            line.to_string() + "\n"
        };
        let dir = TempDir::new("hosts");
        let log = dir.0.join("flows.log");
        std::fs::write(&log, on("node1", 3) + &on("node2", 8)).unwrap();
        let replay = replay(&log, None).unwrap();
        let flows = replay.flows();
        assert_eq!(flows.len(), 2, "the same flow on two hosts is two flows");
        let node2: Vec<_> = flows
            .iter()
            .filter(|f| FlowFilter::with(Match::Host("node2".into())).matches(*f))
            .collect();
        assert_eq!(node2.len(), 1);
        assert_eq!((node2[0].host.as_str(), node2[0].packets), ("node2", 8));
    }

    #[test]
    fn lost_lines_garbage_and_a_line_cut_short_are_skipped_and_counted() {
        let mut replay = Replay::new(None);
        let lost = r#"{"event":"lost","count":17,"time":"2026-05-04T10:00:01Z","schema_version":1,"host":"n"}"#;
        let cut = event(2, 3, 105);
        let text = event(1, 2, 100)
            + lost
            + "\n"
            + "not json\n"
            + "{\"event\":\"flow-open\"}\n"
            + &event(1, 4, 110)
            + &cut[..cut.len() / 2];
        replay.read(text.as_bytes()).unwrap();
        assert_eq!(packets_by_port(&replay), [(1, 4)]);
        assert_eq!((replay.lost_lines, replay.lost_events), (1, 17));
        assert_eq!(replay.unreadable, 2, "not JSON, and JSON but no event");
        assert_eq!(replay.truncated, 1);
        let summary = replay.summary();
        assert!(
            summary.contains("skipped 1 `lost` lines: the agent could not log 17 events"),
            "{summary}"
        );
        assert!(summary.contains("1 last lines cut short"), "{summary}");
        // A complete last line without its line feed still counts.
        let mut replay = Replay::new(None);
        replay.read(event(1, 2, 100).trim_end().as_bytes()).unwrap();
        assert_eq!(
            (packets_by_port(&replay), replay.truncated),
            (vec![(1, 2)], 0)
        );
    }

    #[test]
    fn a_missing_log_says_which_path_to_give() {
        let dir = TempDir::new("missing");
        let error = replay(&dir.0.join("flows.log"), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("give the path the agent writes"), "{error}");
    }
}
