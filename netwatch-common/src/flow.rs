//! The per-flow table: one entry per (endpoint, direction, 5-tuple).

use crate::{assert_layout, packet::PacketSummary, reason::Direction, user_pod};

/// `FlowKey::family` values.
pub mod family {
    /// Not IP (ARP) or not parsed far enough to know.
    pub const NONE: u8 = 0;
    pub const IPV4: u8 = 4;
    pub const IPV6: u8 = 6;
}

/// Key of the `FLOWS` LRU hash map.
///
/// IPv4 and ARP addresses occupy the first 4 bytes of `src`/`dst`, the rest
/// is zero. For ICMP and ICMPv6 `src_port` is the type and `dst_port` the
/// code. Non-first fragments and protocols without ports have ports 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Host-side veth ifindex of the endpoint.
    pub ifindex: u32,
    /// [`crate::reason::Direction`] as u8.
    pub direction: u8,
    /// [`family`] value.
    pub family: u8,
    /// IP protocol number (0 when there is no IP header).
    pub proto: u8,
    pub _pad: u8,
    /// Innermost ethertype, host byte order.
    pub ethertype: u16,
    pub src_port: u16,
    pub dst_port: u16,
    pub _pad2: [u8; 2],
    pub src: [u8; 16],
    pub dst: [u8; 16],
}
assert_layout!(FlowKey, size = 48, align = 4);

impl FlowKey {
    /// The key of the flow a parsed packet belongs to.
    #[inline(always)]
    pub fn new(ifindex: u32, direction: Direction, s: &PacketSummary) -> FlowKey {
        FlowKey {
            ifindex,
            direction: direction as u8,
            family: s.family,
            proto: s.proto,
            _pad: 0,
            ethertype: s.ethertype,
            src_port: s.src_port,
            dst_port: s.dst_port,
            _pad2: [0; 2],
            src: s.src,
            dst: s.dst,
        }
    }

    /// The key of the flow this one answers: the same endpoint, the other
    /// direction, the ends swapped. Meaningful for packets with ports (for
    /// ICMP the "ports" are type and code).
    #[inline(always)]
    pub fn answered(&self) -> FlowKey {
        let direction = if self.direction == Direction::Egress as u8 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        FlowKey {
            direction: direction as u8,
            src_port: self.dst_port,
            dst_port: self.src_port,
            src: self.dst,
            dst: self.src,
            ..*self
        }
    }
}

/// Value of the `FLOWS` map. Times are CLOCK_MONOTONIC nanoseconds:
/// `first_seen_ns` exact (`bpf_ktime_get_ns`), the others read at tick
/// resolution (`bpf_ktime_get_coarse_ns`, Linux ≥ 5.11; see the kernel's
/// flows.rs), never before `first_seen_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub packets: u64,
    pub bytes: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// When the last ring buffer record for this flow was emitted.
    pub last_report_ns: u64,
    /// The policy generation (`POLICY_GEN`) under which `verdict` and
    /// `reason` were decided for a packet whose every verdict input is in
    /// the key, plus `src_mac`: later packets of the flow with that source
    /// MAC take the verdict from here while the generation is current,
    /// instead of walking the policy tables. 0: not cached (the latest
    /// packet's verdict stands for it alone).
    pub policy_gen: u64,
    /// OR of every TCP flag byte seen.
    pub tcp_flags: u8,
    /// Verdict of the latest packet ([`crate::reason::Verdict`] as u8).
    pub verdict: u8,
    /// Drop reason of the latest packet ([`crate::reason::DropReason`] as u8).
    pub reason: u8,
    pub _pad: u8,
    /// Source MAC of the packet whose verdict is cached (a verdict input
    /// the key does not hold: a spoofed MAC must not hit the cache).
    pub src_mac: [u8; 6],
    pub _pad2: [u8; 6],
}
assert_layout!(FlowStats, size = 64, align = 8);

/// TCP flag bits as in the TCP header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

user_pod!(FlowKey, FlowStats);
