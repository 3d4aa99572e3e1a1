//! DNS messages crossing a guarded interface, handed to user space.
//!
//! The veth programs copy every UDP datagram with port 53 at either end
//! (queries and answers, whatever the verdict: a dropped query is what an
//! exfiltration attempt from an internal network looks like) into the
//! `DNS_EVENTS` ring buffer: a fixed [`DnsRecordHeader`] and the first
//! [`DNS_PAYLOAD_MAX`] bytes of the UDP payload. Parsing the DNS message is
//! user space's job; the kernel only bounds, counts and rate-limits.
//!
//! The rate limit is a token bucket per CPU ([`DnsBucket`] in
//! `DNS_BUCKETS`) configured by [`DnsConfig`]: a DNS flood spends its own
//! bucket and its own ring buffer, never the flow records' (`EVENTS`).
//!
//! Every layout here is asserted, as for the other contract types.

use crate::{assert_layout, user_pod};

/// `EventKind` value of a DNS record (its first byte, as in `FlowEvent`).
pub const KIND_DNS: u8 = 6;

/// The UDP port DNS servers listen on.
pub const DNS_PORT: u16 = 53;

/// Most payload bytes a record carries: the classic DNS-over-UDP limit
/// (RFC 1035 §4.2.1). Longer (EDNS) answers are cut there and counted as
/// truncated; user space parses what fits.
pub const DNS_PAYLOAD_MAX: usize = 512;

/// Default records per second per CPU when [`DnsConfig`] says 0.
pub const DEFAULT_DNS_RATE: u64 = 1_000;
/// Default burst (records) when [`DnsConfig`] says 0.
pub const DEFAULT_DNS_BURST: u64 = 200;

/// The single entry of `DNS_CONFIG`. All zero (as before user space wrote
/// it) turns DNS records off: a datapath loaded by something that does
/// not read them (`check`, benchmarks) does not fill their ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsConfig {
    /// Nanoseconds of credit one record costs: 1e9 / records per second.
    pub cost_ns: u64,
    /// Most credit a CPU's bucket holds: burst × `cost_ns`.
    pub burst_ns: u64,
    /// 1 when records are wanted.
    pub enabled: u32,
    pub _pad: [u8; 4],
}
assert_layout!(DnsConfig, size = 24, align = 8);

impl DnsConfig {
    /// `rate` records per second per CPU, bursts of `burst`; 0 picks the
    /// defaults.
    pub const fn new(rate: u64, burst: u64) -> DnsConfig {
        let rate = if rate == 0 { DEFAULT_DNS_RATE } else { rate };
        let burst = if burst == 0 { DEFAULT_DNS_BURST } else { burst };
        let cost_ns = 1_000_000_000 / rate;
        let cost_ns = if cost_ns == 0 { 1 } else { cost_ns };
        DnsConfig {
            cost_ns,
            burst_ns: cost_ns.saturating_mul(burst),
            enabled: 1,
            _pad: [0; 4],
        }
    }
}

/// One CPU's token bucket (the single entry of the per-CPU `DNS_BUCKETS`):
/// credit grows with time up to `burst_ns`, a record spends `cost_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsBucket {
    pub credit_ns: u64,
    pub last_ns: u64,
}
assert_layout!(DnsBucket, size = 16, align = 8);

impl DnsBucket {
    /// Whether a record may go at `now`; spends its cost if so. A first
    /// call (`last_ns` 0) starts with a full bucket.
    #[inline(always)]
    pub fn take(&mut self, now: u64, config: &DnsConfig) -> bool {
        let elapsed = if self.last_ns == 0 {
            config.burst_ns
        } else {
            now.saturating_sub(self.last_ns)
        };
        self.last_ns = now;
        let credit = self.credit_ns.saturating_add(elapsed);
        self.credit_ns = if credit > config.burst_ns {
            config.burst_ns
        } else {
            credit
        };
        if self.credit_ns < config.cost_ns {
            return false;
        }
        self.credit_ns -= config.cost_ns;
        true
    }
}

/// Indexes of the per-CPU `DNS_COUNTERS`.
pub mod counter {
    /// Records submitted.
    pub const SUBMITTED: u32 = 0;
    /// Messages not recorded because the CPU's bucket was empty.
    pub const RATE_LIMITED: u32 = 1;
    /// Messages not recorded because the ring buffer was full.
    pub const LOST: u32 = 2;
    /// Records whose payload was cut at `DNS_PAYLOAD_MAX`.
    pub const TRUNCATED: u32 = 3;
    /// Entries of the map.
    pub const COUNT: u32 = 4;
}

/// What the kernel knows about a DNS message, before its bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsRecordHeader {
    /// [`KIND_DNS`].
    pub kind: u8,
    /// `crate::reason::Direction` as u8 (egress: sent by the container).
    pub direction: u8,
    /// `crate::reason::Verdict` as u8: what netwatch did with the packet.
    pub verdict: u8,
    /// `crate::flow::family` value.
    pub family: u8,
    /// Host-side veth ifindex of the endpoint (`ENDPOINTS` key).
    pub endpoint: u32,
    /// `bpf_ktime_get_ns` when the program saw the packet.
    pub time_ns: u64,
    /// IPv4 addresses in the first 4 bytes, the rest zero.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol (UDP).
    pub proto: u8,
    pub _pad: u8,
    /// Payload bytes that follow in [`DnsRecord::payload`].
    pub captured: u16,
    /// The DNS message's length in the datagram (more than `captured`
    /// when it was cut).
    pub message_len: u16,
    /// `crate::reason::DropReason` as u8.
    pub reason: u8,
    /// Padding as whole words (see `FlowStats::_pad2`).
    pub _pad2: u8,
    pub _pad3: u32,
}
assert_layout!(DnsRecordHeader, size = 64, align = 8);

/// One record of the `DNS_EVENTS` ring buffer. Bytes of `payload` past
/// `header.captured` are whatever the ring buffer held (never read).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    pub header: DnsRecordHeader,
    pub payload: [u8; DNS_PAYLOAD_MAX],
}
assert_layout!(DnsRecord, size = 64 + DNS_PAYLOAD_MAX, align = 8);

impl DnsRecordHeader {
    /// Decodes a record read from the ring buffer: the header and the
    /// captured payload. `None` for the wrong size or kind (a kernel/user
    /// version mismatch) or a captured length past the payload.
    pub fn from_bytes(bytes: &[u8]) -> Option<(DnsRecordHeader, &[u8])> {
        if bytes.len() != core::mem::size_of::<DnsRecord>() || bytes[0] != KIND_DNS {
            return None;
        }
        // SAFETY: the length is checked above; the header is repr(C) made
        // of integers and byte arrays only, so any bit pattern is valid,
        // and read_unaligned has no alignment requirement.
        let header = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<DnsRecordHeader>()) };
        let start = core::mem::size_of::<DnsRecordHeader>();
        let payload = bytes.get(start..start + usize::from(header.captured))?;
        Some((header, payload))
    }
}

user_pod!(DnsConfig, DnsBucket);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_only_at_their_size_and_kind_within_the_payload() {
        let mut bytes = [0u8; 64 + DNS_PAYLOAD_MAX];
        bytes[0] = KIND_DNS;
        bytes[4] = 7;
        bytes[54..56].copy_from_slice(&3u16.to_ne_bytes());
        bytes[64..67].copy_from_slice(b"abc");
        let (header, payload) = DnsRecordHeader::from_bytes(&bytes).unwrap();
        assert_eq!(header.endpoint, 7);
        assert_eq!(payload, b"abc");
        assert!(DnsRecordHeader::from_bytes(&bytes[..100]).is_none());
        bytes[54..56].copy_from_slice(&600u16.to_ne_bytes());
        assert!(DnsRecordHeader::from_bytes(&bytes).is_none());
        bytes[54..56].copy_from_slice(&0u16.to_ne_bytes());
        bytes[0] = 5;
        assert!(DnsRecordHeader::from_bytes(&bytes).is_none());
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let config = DnsConfig::new(10, 3);
        assert_eq!(config.cost_ns, 100_000_000);
        let mut bucket = DnsBucket::default();
        let start = 5_000_000_000;
        let allowed = (0..10).filter(|_| bucket.take(start, &config)).count();
        assert_eq!(allowed, 3);
        // A tenth of a second buys one more, not more.
        assert!(bucket.take(start + 100_000_000, &config));
        assert!(!bucket.take(start + 100_000_000, &config));
        // A long pause refills up to the burst only.
        let later = start + 60_000_000_000;
        let allowed = (0..10).filter(|_| bucket.take(later, &config)).count();
        assert_eq!(allowed, 3);
    }
}
