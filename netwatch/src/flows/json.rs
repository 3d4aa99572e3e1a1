//! Flows as JSON, written by hand to the bytes serde_json writes for
//! [`FlowView`] (compact, pretty, or one compact object per line).
//!
//! A `flows -o json` at 100,000 flows spent most of the agent's time in
//! serde_json's machinery: a call per field through the formatter, each
//! string escaped byte by byte, each number and timestamp written through
//! `io::Write` adapters (measured with perf: ~50% of the query, with the
//! buffer's regrowth another ~7%). Here keys and punctuation are constant
//! bytes, strings with nothing to escape (nearly all) are copied whole,
//! numbers go through `itoa`, and the output is sized once. Timestamps
//! (RFC 3339, as jiff prints them) and IPv4 addresses are written here too
//! (through serde_json and jiff's printer they were a sixth of a query);
//! enums are written by serde_json once per value a query meets and copied
//! after that, so that their text cannot drift from what [`FlowView`]'s
//! `Serialize` writes. A test compares the two layouts on every kind of
//! value.

use std::net::IpAddr;

use jiff::Timestamp;
use netwatch_common::{
    protocol::Protocol,
    reason::{Direction, Verdict},
};
use serde::Serialize;

use super::FlowReason;
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
    emit: impl FnMut(Vec<u8>),
) {
    // Pretty or not is decided at compile time: each key is then a copy of
    // a known length (a call to memcpy per key was a tenth of a query).
    match shape {
        Shape::Pretty => stream::<true>(shape, flows, chunk_bytes, emit),
        Shape::Compact | Shape::Lines => stream::<false>(shape, flows, chunk_bytes, emit),
    }
}

fn stream<const PRETTY: bool>(
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
    let mut writer = Writer::<PRETTY> {
        out: Vec::with_capacity(reserve),
        memo: Memo::default(),
    };
    let mut flush = |writer: &mut Writer<PRETTY>| {
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
                prefetch_ahead(flows, i);
                if i > 0 {
                    writer.out.push(b',');
                }
                if PRETTY {
                    writer.out.extend_from_slice(b"\n  ");
                }
                writer.flow(&flow.view());
                flush(&mut writer);
            }
            if PRETTY && !flows.is_empty() {
                writer.out.push(b'\n');
            }
            writer.out.extend_from_slice(b"]\n");
        }
        Shape::Lines => {
            for (i, flow) in flows.iter().enumerate() {
                prefetch_ahead(flows, i);
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

/// How many flows ahead of the one being written are fetched: writing
/// one takes about as long as fetching one from memory.
const PREFETCH_AHEAD: usize = 4;

fn prefetch_ahead(flows: &[FlowRef<'_>], i: usize) {
    if let Some(ahead) = flows.get(i + PREFETCH_AHEAD) {
        ahead.prefetch();
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

struct Writer<const PRETTY: bool> {
    out: Vec<u8>,
    memo: Memo,
}

/// The text serde_json wrote for the last value of each enum field: most
/// flows of a query share them.
#[derive(Default)]
struct Memo {
    direction: Remembered<Direction>,
    proto: Remembered<Protocol>,
    verdict: Remembered<Verdict>,
    reason: Remembered<Option<FlowReason>>,
}

struct Remembered<T> {
    value: Option<T>,
    text: Vec<u8>,
}

impl<T> Default for Remembered<T> {
    fn default() -> Self {
        Remembered {
            value: None,
            text: Vec::new(),
        }
    }
}

impl<T> Remembered<T> {
    /// Writes `value` as serde_json does, asking it only when `value` is
    /// not the last one (`is_last` says); `own` keeps it.
    fn write<V: Serialize + ?Sized>(
        &mut self,
        out: &mut Vec<u8>,
        value: &V,
        is_last: impl FnOnce(&T) -> bool,
        own: impl FnOnce() -> T,
    ) {
        if !self.value.as_ref().is_some_and(is_last) {
            self.text.clear();
            // Writing a scalar into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.text, value);
            self.value = Some(own());
        }
        out.extend_from_slice(&self.text);
    }
}

impl<const PRETTY: bool> Writer<PRETTY> {
    /// One object, the fields in [`FlowView`]'s order, skipped where its
    /// `skip_serializing_if` skips them.
    fn flow(&mut self, v: &FlowView<'_>) {
        // The first key, without its comma.
        self.out.extend_from_slice(if PRETTY {
            b"{\n    \"schema_version\": "
        } else {
            b"{\"schema_version\":"
        });
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
        let direction = v.direction;
        self.memo.direction.write(
            &mut self.out,
            &direction,
            |last| *last == direction,
            || direction,
        );
        key!(self, "src");
        self.address(v.src);
        key!(self, "dst");
        self.address(v.dst);
        key!(self, "src_port");
        self.number(u64::from(v.src_port));
        key!(self, "dst_port");
        self.number(u64::from(v.dst_port));
        key!(self, "proto");
        let proto = v.proto;
        self.memo
            .proto
            .write(&mut self.out, &proto, |last| *last == proto, || proto);
        key!(self, "packets");
        self.number(v.packets);
        key!(self, "bytes");
        self.number(v.bytes);
        key!(self, "verdict");
        let verdict = v.verdict;
        self.memo
            .verdict
            .write(&mut self.out, &verdict, |last| *last == verdict, || verdict);
        key!(self, "reason");
        let reason = v.reason;
        self.memo.reason.write(
            &mut self.out,
            &reason,
            |last| last.as_ref() == reason,
            || reason.cloned(),
        );
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
        self.timestamp(v.first_seen);
        key!(self, "last_seen");
        self.timestamp(v.last_seen);
        key!(self, "interface");
        self.opt_string(v.interface);
        key!(self, "flows");
        self.number(v.flows);
        if PRETTY {
            self.out.extend_from_slice(b"\n  ");
        }
        self.out.push(b'}');
    }

    /// A field's key, from [`key!`]: `,"name":` or its pretty form.
    /// Field names are plain ASCII.
    fn key(&mut self, compact: &'static str, pretty: &'static str) {
        self.out
            .extend_from_slice(if PRETTY { pretty } else { compact }.as_bytes());
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
        while let Some(at) = first_to_escape(&bytes[start..]) {
            let i = start + at;
            self.out.extend_from_slice(&bytes[start..i]);
            start = i + 1;
            match bytes[i] {
                b'"' => self.out.extend_from_slice(b"\\\""),
                b'\\' => self.out.extend_from_slice(b"\\\\"),
                b'\x08' => self.out.extend_from_slice(b"\\b"),
                b'\x0c' => self.out.extend_from_slice(b"\\f"),
                b'\n' => self.out.extend_from_slice(b"\\n"),
                b'\r' => self.out.extend_from_slice(b"\\r"),
                b'\t' => self.out.extend_from_slice(b"\\t"),
                b => {
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

    /// An address as serde writes it (its `Display` text, quoted), or
    /// null. IPv4, nearly every flow's, digit by digit.
    fn address(&mut self, ip: Option<IpAddr>) {
        match ip {
            None => self.out.extend_from_slice(b"null"),
            Some(IpAddr::V4(v4)) => {
                self.out.push(b'"');
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.out.push(b'.');
                    }
                    self.out
                        .extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
                }
                self.out.push(b'"');
            }
            Some(ip @ IpAddr::V6(_)) => {
                use std::io::Write as _;
                // Writing into a Vec cannot fail.
                let _ = write!(self.out, "\"{ip}\"");
            }
        }
    }

    /// A timestamp as jiff prints it (RFC 3339 in UTC, the fraction of a
    /// second to as many digits as it takes, none for a whole second):
    /// years 0 to 9999 here, others (which jiff writes with a sign and six
    /// digits) by serde_json.
    fn timestamp(&mut self, t: Timestamp) {
        // Seconds and nanoseconds share their sign: floor both.
        let (mut second, mut nano) = (t.as_second(), t.subsec_nanosecond());
        if nano < 0 {
            second -= 1;
            nano += 1_000_000_000;
        }
        let days = second.div_euclid(86_400);
        let of_day = second.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            let _ = serde_json::to_writer(&mut self.out, &t);
            return;
        }
        let mut text = *b"\"0000-00-00T00:00:00";
        let mut put = |at: usize, digits: usize, mut n: u32| {
            for i in (at..at + digits).rev() {
                text[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(1, 4, year as u32);
        put(6, 2, month);
        put(9, 2, day);
        put(12, 2, of_day / 3600);
        put(15, 2, of_day / 60 % 60);
        put(18, 2, of_day % 60);
        self.out.extend_from_slice(&text);
        if nano != 0 {
            let mut fraction = *b".000000000";
            let mut n = nano as u32;
            for digit in fraction[1..].iter_mut().rev() {
                *digit = b'0' + (n % 10) as u8;
                n /= 10;
            }
            let digits = 9 - fraction[1..]
                .iter()
                .rev()
                .take_while(|&&d| d == b'0')
                .count();
            self.out.extend_from_slice(&fraction[..=digits]);
        }
        self.out.extend_from_slice(b"Z\"");
    }
}

/// Where the first byte of `bytes` that JSON escapes is (`"`, `\`, or a
/// control character), eight bytes at a time: nearly every string has
/// none, and a test of each byte was a fifth of a query.
fn first_to_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let escapes = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in chunks.by_ref() {
        let word = u64::from_ne_bytes(chunk.try_into().unwrap_or_default());
        // A byte of `x` is zero where the high bit of this is set (the
        // classic test; it may also flag a byte right after a zero one,
        // which only sends this chunk to the exact test below).
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
        let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
        let quote = zero(word ^ (ONES * u64::from(b'"')));
        let backslash = zero(word ^ (ONES * u64::from(b'\\')));
        if below_space | quote | backslash != 0
            && let Some(at) = chunk.iter().position(|&b| escapes(b))
        {
            return Some(offset + at);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| escapes(b))
        .map(|at| offset + at)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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

    /// Entries that differ from `odd()` and `plain()` in one value each,
    /// in an order where each enum field changes and changes back.
    fn variants() -> Vec<FlowEntry> {
        let mut entries = Vec::new();
        let times = [
            0,
            1,
            -1,
            999_999_999,
            -999_999_999,
            1_000_000_000,
            -1_000_000_001,
            1_700_000_000_100_000_000,
            1_700_000_000_120_000_000,
            1_700_000_000_123_000_000,
            1_700_000_000_123_400_000,
            1_700_000_000_123_450_000,
            1_700_000_000_123_456_000,
            1_700_000_000_123_456_700,
            1_700_000_000_123_456_780,
            1_700_000_000_123_456_789,
            // 1600-02-29, 2000-02-29, 2100-03-01: leap years and not.
            -11_670_912_000_000_000_000,
            951_782_400_000_000_001,
            4_107_542_400_000_000_000,
            // The ends of an i64 of nanoseconds (as flows keep times).
            i128::from(i64::MIN),
            i128::from(i64::MAX),
        ];
        let mut seconds: Vec<Timestamp> = times
            .into_iter()
            .map(|ns| Timestamp::from_nanosecond(ns).unwrap())
            .collect();
        // Years 0 and 9999, before year 0 (a sign and six digits), and
        // jiff's ends.
        seconds.extend(
            [
                "0000-01-01T00:00:00Z",
                "0000-12-31T23:59:59.5Z",
                "-000001-12-31T23:59:59.999999999Z",
                "9999-12-30T21:59:59.000000001Z",
            ]
            .map(|t| t.parse::<Timestamp>().unwrap()),
        );
        seconds.extend([Timestamp::MIN, Timestamp::MAX]);
        for (i, time) in seconds.into_iter().enumerate() {
            let mut entry = if i % 2 == 0 { odd() } else { plain() };
            entry.first_seen = time;
            entry.last_seen = time;
            entries.push(entry);
        }
        for address in [
            "::",
            "::1",
            "fe80::1:2",
            "2001:db8:0:0:1:0:0:1",
            "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff",
            "::ffff:192.0.2.1",
            "64:ff9b::192.0.2.33",
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "192.168.100.10",
        ] {
            let mut entry = odd();
            entry.src = Some(address.parse().unwrap());
            entry.dst = None;
            entries.push(entry);
        }
        for (verdict, reason, direction, proto) in [
            (Verdict::Forwarded, None, Direction::Egress, 6),
            (
                Verdict::Dropped,
                Some(FlowReason::Unknown),
                Direction::Egress,
                17,
            ),
            (
                Verdict::Dropped,
                Some("kernel:netfilter_drop".parse().unwrap()),
                Direction::Ingress,
                17,
            ),
            (
                Verdict::Dropped,
                Some("kernel:no_socket".parse().unwrap()),
                Direction::Ingress,
                1,
            ),
            (
                Verdict::Audited,
                Some(FlowReason::Netwatch(DropReason::HostAccess)),
                Direction::Egress,
                58,
            ),
            (Verdict::Forwarded, None, Direction::Egress, 6),
            (
                Verdict::Dropped,
                Some(FlowReason::Unknown),
                Direction::Ingress,
                0,
            ),
        ] {
            let mut entry = plain();
            (entry.verdict, entry.reason, entry.direction) = (verdict, reason, direction);
            entry.proto = Protocol::number(proto);
            entries.push(entry);
        }
        // Strings that need escaping at every place of an eight-byte word,
        // and long clean ones.
        for at in 0..20 {
            for special in ["\"", "\\", "\n", "\x1f", "\x7f", "é", "☃"] {
                let mut entry = plain();
                let text = format!("{}{special}{}", "a".repeat(at), "b".repeat(19 - at));
                entry.container = Some(text.clone());
                entry.host = text;
                entries.push(entry);
            }
        }
        let mut entry = plain();
        entry.container_id = Some("0123456789abcdef".repeat(4));
        entry.host = "\"".repeat(17);
        entries.push(entry);
        entries
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
            variants(),
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
