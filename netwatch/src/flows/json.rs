//! Flows as JSON, written by hand to the bytes serde_json writes for
//! [`FlowView`] (compact, pretty, or one compact object per line).
//!
//! A `flows -o json` at 100,000 flows spent most of the agent's time in
//! serde_json's machinery: a call per field through the formatter, each
//! string escaped byte by byte, each number and timestamp written through
//! `io::Write` adapters (measured with perf: ~50% of the query, with the
//! buffer's regrowth another ~7%). Here keys and punctuation are constant
//! bytes, strings with nothing to escape (nearly all) are copied whole,
//! numbers go through `itoa`, and the output is sized once. Values whose
//! text serde decides (enums, addresses, timestamps) are still written by
//! serde_json, one scalar each, so that their text cannot drift from what
//! [`FlowView`]'s `Serialize` writes; a test compares the two layouts on
//! every kind of value.

use serde::Serialize;

use super::aggregate::{FlowRef, FlowView};

/// How flows are laid out (mirrors [`crate::api::Layout`], which calls
/// [`write_flows`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One JSON array, no whitespace.
    Compact,
    /// One JSON array, serde_json's pretty layout (two-space indents).
    Pretty,
    /// One compact object per line.
    Lines,
}

/// Bytes of one chunk of [`stream_flows`]: big enough that handing one on
/// costs nothing next to writing it, small enough that the first reaches
/// the client while the rest are written.
pub const CHUNK_BYTES: usize = 1 << 20;

/// `flows` as `shape`, ending with a newline (lines: each line); no flows
/// as lines is nothing at all. The bytes [`crate::api::Layout::write`]
/// makes of the same flows' views.
pub fn write_flows(shape: Shape, flows: &[FlowRef<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    stream_flows(shape, flows, usize::MAX, |chunk| {
        out.extend_from_slice(&chunk)
    });
    out
}

/// [`write_flows`] in pieces: `emit` gets the bytes each time about
/// `chunk_bytes` are written (whole flows; the last piece may be empty of
/// flows but is never empty), so that they can be sent while the rest are
/// written. A piece is reserved at its size once: pages it never touches
/// cost no memory, and a buffer that grew by doubling copied tens of MiB
/// at 100,000 flows.
pub fn stream_flows(
    shape: Shape,
    flows: &[FlowRef<'_>],
    chunk_bytes: usize,
    mut emit: impl FnMut(Vec<u8>),
) {
    // Bytes a flow takes in the pretty layout, about (measured: ~840 at
    // 100,000 flows of one container), with room to spare.
    const BYTES_PER_FLOW: usize = 1024;
    let reserve = flows
        .len()
        .saturating_mul(BYTES_PER_FLOW)
        .min(chunk_bytes.saturating_add(BYTES_PER_FLOW))
        + 4;
    let mut writer = Writer {
        out: Vec::with_capacity(reserve),
        pretty: shape == Shape::Pretty,
        first: true,
    };
    let mut flush = |writer: &mut Writer| {
        if writer.out.len() >= chunk_bytes {
            emit(std::mem::replace(
                &mut writer.out,
                Vec::with_capacity(reserve),
            ));
        }
    };
    match shape {
        Shape::Compact | Shape::Pretty => {
            writer.out.push(b'[');
            for (i, flow) in flows.iter().enumerate() {
                if i > 0 {
                    writer.out.push(b',');
                }
                if writer.pretty {
                    writer.out.extend_from_slice(b"\n  ");
                }
                writer.flow(&flow.view());
                flush(&mut writer);
            }
            if writer.pretty && !flows.is_empty() {
                writer.out.push(b'\n');
            }
            writer.out.extend_from_slice(b"]\n");
        }
        Shape::Lines => {
            for flow in flows {
                writer.flow(&flow.view());
                writer.out.push(b'\n');
                flush(&mut writer);
            }
        }
    }
    if !writer.out.is_empty() {
        emit(writer.out);
    }
}

/// Writes a field's key with one copy of constant bytes (a key written
/// piece by piece was the writer's largest cost).
macro_rules! key {
    ($writer:expr, $name:literal) => {
        $writer.key(
            concat!(",\"", $name, "\":"),
            concat!(",\n    \"", $name, "\": "),
        )
    };
}

struct Writer {
    out: Vec<u8>,
    pretty: bool,
    /// No field written yet in the current object.
    first: bool,
}

impl Writer {
    /// One object, the fields in [`FlowView`]'s order, skipped where its
    /// `skip_serializing_if` skips them.
    fn flow(&mut self, v: &FlowView<'_>) {
        self.out.push(b'{');
        self.first = true;
        key!(self, "schema_version");
        self.number(u64::from(v.schema_version));
        key!(self, "host");
        self.string(v.host);
        key!(self, "container");
        self.opt_string(v.container);
        key!(self, "container_id");
        self.opt_string(v.container_id);
        key!(self, "project");
        self.opt_string(v.project);
        key!(self, "service");
        self.opt_string(v.service);
        key!(self, "network");
        self.opt_string(v.network);
        key!(self, "direction");
        self.scalar(&v.direction);
        key!(self, "src");
        self.scalar(&v.src);
        key!(self, "dst");
        self.scalar(&v.dst);
        key!(self, "src_port");
        self.number(u64::from(v.src_port));
        key!(self, "dst_port");
        self.number(u64::from(v.dst_port));
        key!(self, "proto");
        self.scalar(&v.proto);
        key!(self, "packets");
        self.number(v.packets);
        key!(self, "bytes");
        self.number(v.bytes);
        key!(self, "verdict");
        self.scalar(&v.verdict);
        key!(self, "reason");
        self.scalar(&v.reason);
        key!(self, "dropped_by");
        self.opt_string(v.dropped_by);
        if let Some(rule) = &v.rule {
            key!(self, "rule");
            self.string(rule);
        }
        key!(self, "peer");
        self.opt_string(v.peer);
        key!(self, "peer_service");
        self.opt_string(v.peer_service);
        key!(self, "peer_kind");
        self.opt_string(v.peer_kind);
        if let Some(name) = v.src_name {
            key!(self, "src_name");
            self.string(name);
        }
        if let Some(name) = v.dst_name {
            key!(self, "dst_name");
            self.string(name);
        }
        key!(self, "published");
        self.opt_string(v.published);
        key!(self, "first_seen");
        self.scalar(&v.first_seen);
        key!(self, "last_seen");
        self.scalar(&v.last_seen);
        key!(self, "interface");
        self.opt_string(v.interface);
        key!(self, "flows");
        self.number(v.flows);
        if self.pretty {
            self.out.extend_from_slice(b"\n  ");
        }
        self.out.push(b'}');
    }

    /// A field's key, from [`key!`]: `,"name":` or its pretty form, without
    /// the comma for the object's first. Field names are plain ASCII.
    fn key(&mut self, compact: &'static str, pretty: &'static str) {
        let key = if self.pretty { pretty } else { compact };
        let key = if self.first { &key[1..] } else { key };
        self.first = false;
        self.out.extend_from_slice(key.as_bytes());
    }

    fn number(&mut self, n: u64) {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    fn opt_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.string(s),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// `s` quoted and escaped as serde_json escapes it: `"`, `\` and the
    /// control characters below 0x20 (`\n`-style where JSON has a short
    /// form, `\u00XX` otherwise); everything else, UTF-8 included, as is.
    fn string(&mut self, s: &str) {
        self.out.push(b'"');
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b >= 0x20 && b != b'"' && b != b'\\' {
                continue;
            }
            self.out.extend_from_slice(&bytes[start..i]);
            start = i + 1;
            match b {
                b'"' => self.out.extend_from_slice(b"\\\""),
                b'\\' => self.out.extend_from_slice(b"\\\\"),
                b'\x08' => self.out.extend_from_slice(b"\\b"),
                b'\x0c' => self.out.extend_from_slice(b"\\f"),
                b'\n' => self.out.extend_from_slice(b"\\n"),
                b'\r' => self.out.extend_from_slice(b"\\r"),
                b'\t' => self.out.extend_from_slice(b"\\t"),
                _ => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    self.out.extend_from_slice(b"\\u00");
                    self.out.push(HEX[usize::from(b >> 4)]);
                    self.out.push(HEX[usize::from(b & 0xf)]);
                }
            }
        }
        self.out.extend_from_slice(&bytes[start..]);
        self.out.push(b'"');
    }

    /// A value whose text serde decides, written by serde_json (a scalar
    /// or null: the same in every layout).
    fn scalar<T: Serialize>(&mut self, value: &T) {
        // Writing a scalar into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, value);
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use jiff::Timestamp;
    use netwatch_common::{
        protocol::Protocol,
        reason::{Direction, DropReason, Verdict},
    };

    use super::*;
    use crate::api::Layout;
    use crate::flows::{FlowEntry, FlowReason};

    /// Every field set, and strings that need every kind of escape.
    fn odd() -> FlowEntry {
        FlowEntry {
            schema_version: 1,
            host: "host \"one\" \\ é ☃".into(),
            container: Some("web\n\t\r\x08\x0c\x01\x1f\x7f".into()),
            container_id: Some("0123abcd".into()),
            project: Some("shop".into()),
            service: Some("front/end".into()),
            network: Some("net".into()),
            direction: Direction::Ingress,
            src: Some("2001:db8::1".parse::<IpAddr>().unwrap()),
            dst: Some("203.0.113.7".parse::<IpAddr>().unwrap()),
            src_port: 65535,
            dst_port: 0,
            proto: Protocol::number(47),
            packets: u64::MAX,
            bytes: 0,
            verdict: Verdict::Dropped,
            reason: Some(FlowReason::Netwatch(DropReason::NotInNetwork)),
            dropped_by: Some("netwatch".into()),
            rule: Some("internal: true on network \"db\"".into()),
            peer: Some("db".into()),
            peer_service: Some("postgres".into()),
            peer_kind: Some("container".into()),
            src_name: Some("a.example".into()),
            dst_name: Some("b.example".into()),
            published: Some("0.0.0.0:8080/tcp".into()),
            first_seen: Timestamp::from_second(1_700_000_000).unwrap(),
            last_seen: Timestamp::from_nanosecond(1_700_000_001_123_450_000).unwrap(),
            interface: Some("veth0".into()),
            flows: 3,
        }
    }

    /// Nothing optional set; a kernel reason.
    fn plain() -> FlowEntry {
        FlowEntry {
            schema_version: 1,
            host: String::new(),
            container: None,
            container_id: None,
            project: None,
            service: None,
            network: None,
            direction: Direction::Egress,
            src: None,
            dst: None,
            src_port: 1,
            dst_port: 2,
            proto: Protocol::number(6),
            packets: 1,
            bytes: 60,
            verdict: Verdict::Audited,
            reason: Some("kernel:netfilter_drop".parse().unwrap()),
            dropped_by: None,
            rule: None,
            peer: None,
            peer_service: None,
            peer_kind: None,
            src_name: None,
            dst_name: None,
            published: None,
            first_seen: Timestamp::UNIX_EPOCH,
            last_seen: Timestamp::from_nanosecond(1).unwrap(),
            interface: None,
            flows: 1,
        }
    }

    #[test]
    fn flows_written_by_hand_are_the_bytes_serde_writes() {
        let mut forwarded = plain();
        forwarded.verdict = Verdict::Forwarded;
        forwarded.reason = None;
        forwarded.proto = Protocol::number(17);
        for entries in [
            vec![],
            vec![odd()],
            vec![plain()],
            vec![odd(), plain(), forwarded],
        ] {
            let refs: Vec<FlowRef<'_>> = entries.iter().map(FlowRef::entry).collect();
            for layout in [Layout::Compact, Layout::Pretty, Layout::Lines] {
                let by_hand = layout.write_flows(&refs);
                let by_serde = layout.write(&entries);
                assert_eq!(
                    String::from_utf8_lossy(&by_hand),
                    String::from_utf8_lossy(&by_serde),
                    "{layout:?}"
                );
                // In pieces of a flow or so: the same bytes, no empty piece.
                let mut pieces = Vec::new();
                stream_flows(layout.shape(), &refs, 100, |p| pieces.push(p));
                assert!(pieces.iter().all(|p| !p.is_empty()), "{layout:?}");
                assert_eq!(pieces.concat(), by_serde, "{layout:?} in pieces");
            }
        }
    }
}
