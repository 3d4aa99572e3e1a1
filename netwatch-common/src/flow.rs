//! The per-flow table: one entry per (endpoint, direction, 5-tuple).

use crate::{
    assert_layout,
    packet::{ETHERTYPE_IPV4, PacketSummary},
    reason::Direction,
    user_pod,
};

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
            src: addr_by_words(&s.src),
            dst: addr_by_words(&s.dst),
        }
    }

    /// The key of the flow this one answers: the same endpoint, the other
    /// direction, the ends swapped. Meaningful for packets with ports (for
    /// ICMP the "ports" are type and code).
    #[inline(always)]
    pub fn answered(&self) -> FlowKey {
        FlowKey {
            direction: answering(self.direction),
            src_port: self.dst_port,
            dst_port: self.src_port,
            src: self.dst,
            dst: self.src,
            ..*self
        }
    }
}

/// The direction (as u8) of the flow answering one of `direction`.
#[inline(always)]
fn answering(direction: u8) -> u8 {
    if direction == Direction::Egress as u8 {
        Direction::Ingress as u8
    } else {
        Direction::Egress as u8
    }
}

/// Key of the `FLOWS4` LRU hash map: an IPv4 flow's [`FlowKey`] in 20
/// bytes (its family is IPv4 and its ethertype 0x0800 by construction).
///
/// Why a table of its own: the kernel hashes (jhash2) and compares the
/// whole key on every lookup, and an established flow's packet is little
/// more than that lookup. The per-flow floor program read 80–84 ns per
/// established IPv4 packet under the 48-byte key and 66–67 ns under this
/// one, alternated in one run (`bench-datapath`); IPv6 addresses alone
/// take 32 bytes, so IPv6 and non-IP flows keep [`FlowKey`] in `FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey4 {
    /// Host-side veth ifindex of the endpoint.
    pub ifindex: u32,
    /// [`crate::reason::Direction`] as u8.
    pub direction: u8,
    /// IP protocol number.
    pub proto: u8,
    pub _pad: u16,
    pub src_port: u16,
    pub dst_port: u16,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}
assert_layout!(FlowKey4, size = 20, align = 4);

impl FlowKey4 {
    /// The key of the flow a parsed IPv4 packet belongs to (only
    /// meaningful when `s.family` is [`family::IPV4`]).
    #[inline(always)]
    pub fn new(ifindex: u32, direction: Direction, s: &PacketSummary) -> FlowKey4 {
        FlowKey4 {
            ifindex,
            direction: direction as u8,
            proto: s.proto,
            _pad: 0,
            src_port: s.src_port,
            dst_port: s.dst_port,
            src: addr4_by_word(&s.src),
            dst: addr4_by_word(&s.dst),
        }
    }

    /// [`FlowKey::answered`] of this key.
    #[inline(always)]
    pub fn answered(&self) -> FlowKey4 {
        FlowKey4 {
            direction: answering(self.direction),
            src_port: self.dst_port,
            dst_port: self.src_port,
            src: self.dst,
            dst: self.src,
            ..*self
        }
    }

    /// The same flow's [`FlowKey`], as records and user space know it.
    #[inline(always)]
    pub fn widen(&self) -> FlowKey {
        // As words: a zeroed byte array with bytes copied in became a
        // byte-loop subprogram in the kernel program.
        let wide = |a: [u8; 4]| {
            // SAFETY: any 16 bytes are a valid `[u8; 16]`.
            unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>([u32::from_ne_bytes(a), 0, 0, 0]) }
        };
        let (src, dst) = (wide(self.src), wide(self.dst));
        FlowKey {
            ifindex: self.ifindex,
            direction: self.direction,
            family: family::IPV4,
            proto: self.proto,
            _pad: 0,
            ethertype: ETHERTYPE_IPV4,
            src_port: self.src_port,
            dst_port: self.dst_port,
            _pad2: [0; 2],
            src,
            dst,
        }
    }
}

impl FlowKey {
    /// The `FLOWS4` key of an IPv4 flow; `None` for the flows `FLOWS`
    /// keeps (IPv6, not IP).
    pub fn narrow(&self) -> Option<FlowKey4> {
        if self.family != family::IPV4 {
            return None;
        }
        let word = |a: &[u8; 16]| [a[0], a[1], a[2], a[3]];
        Some(FlowKey4 {
            ifindex: self.ifindex,
            direction: self.direction,
            proto: self.proto,
            _pad: 0,
            src_port: self.src_port,
            dst_port: self.dst_port,
            src: word(&self.src),
            dst: word(&self.dst),
        })
    }
}

/// The first four bytes of a 16-byte address field of [`PacketSummary`]
/// (an IPv4 address) as one 4-byte load (see [`addr_by_words`]).
#[inline(always)]
fn addr4_by_word(field: &[u8; 16]) -> [u8; 4] {
    // SAFETY: as in `addr_by_words`: the field is 4-aligned.
    let word = unsafe { field.as_ptr().cast::<u32>().read_volatile() };
    word.to_ne_bytes()
}

/// A copy of a 16-byte address field of [`PacketSummary`] as four 4-byte
/// loads. Why: LLVM's BPF backend copies a `[u8; 16]` one byte at a time
/// (32 instructions, twice per key in `from_container`'s established
/// path), because the array itself is only byte-aligned; the summary puts
/// its addresses on 4-byte boundaries (checked below). The loads are
/// volatile: plain ones, where the program had read the same address
/// before (the published-port path builds a second key), were merged back
/// into a call to a byte-loop `memmove` subprogram.
#[inline(always)]
fn addr_by_words(field: &[u8; 16]) -> [u8; 16] {
    let words = field.as_ptr().cast::<u32>();
    // SAFETY: only ever called on `PacketSummary::src`/`dst`, which lie at
    // 4-byte offsets of a struct aligned to 8, so each pointer is 4-aligned
    // for a `u32` read of 4 of the field's 16 bytes.
    let words = unsafe {
        [
            words.read_volatile(),
            words.add(1).read_volatile(),
            words.add(2).read_volatile(),
            words.add(3).read_volatile(),
        ]
    };
    // SAFETY: any 16 bytes are a valid `[u8; 16]`.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(words) }
}
const _: () = assert!(core::mem::offset_of!(PacketSummary, src) % 4 == 0);
const _: () = assert!(core::mem::offset_of!(PacketSummary, dst) % 4 == 0);
const _: () = assert!(core::mem::align_of::<PacketSummary>() >= 4);

/// Value of the `FLOWS` map. Times are CLOCK_MONOTONIC nanoseconds:
/// `first_seen_ns` exact (`bpf_ktime_get_ns`), the others read at tick
/// resolution (the kernel's tick clock, netwatch-ebpf `clock`; see its
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
    /// Padding as whole words: a `[u8; 6]` zeroed in the kernel program
    /// becomes a call to a byte-loop `memset` subprogram (see
    /// `shipped_programs_call_no_byte_loop_subprograms`).
    pub _pad2: u16,
    pub _pad3: u32,
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

user_pod!(FlowKey, FlowKey4, FlowStats);

/// How far the programs' tick clock (netwatch-ebpf `clock`: the precise
/// time each CPU read once in the current jiffy) is taken to lag
/// `bpf_ktime_get_ns`: one tick at the lowest common `HZ` (100; 4 ms at
/// this machine's 250). Jiffies move with the coarse clock
/// (CLOCK_MONOTONIC_COARSE, which the programs read before), so what
/// follows holds for both.
///
/// Learned the hard way: that is not a bound. Only the CPU on timekeeping
/// duty advances the coarse clock; when a hypervisor takes that vCPU away
/// (steal time), the coarse clock stands still until it runs again or
/// another CPU takes the duty over (Linux 6.x does after five stalled
/// ticks), while the precise clock keeps going. A pipeline benchmark
/// exporting every packet lost 0.8% of its records to such a stall on a
/// loaded VM. See [`report_needs_precise_clock`] for what keeps short
/// intervals exact anyway.
pub const COARSE_LAG_NS: u64 = 10_000_000;

/// Whether a packet of an existing flow must read the precise clock to
/// judge whether `interval_ns` has run out since the flow's last record:
/// when by the coarse clock, or by the flow's own latest stamp
/// (`last_seen_ns`, which may come from the precise clock), the interval
/// is within [`COARSE_LAG_NS`] of running out.
///
/// Taking the later of the two makes an interval no longer than
/// `COARSE_LAG_NS` (the benchmarks' 1 ns export interval) always judged
/// by the precise clock, however far the coarse one has fallen behind; a
/// longer interval (the default 10 s) is judged late by at most the
/// coarse clock's stall, never early.
#[inline(always)]
pub fn report_needs_precise_clock(
    coarse_now_ns: u64,
    last_seen_ns: u64,
    last_report_ns: u64,
    interval_ns: u64,
) -> bool {
    coarse_now_ns
        .max(last_seen_ns)
        .saturating_add(COARSE_LAG_NS)
        >= last_report_ns.saturating_add(interval_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::IPPROTO_TCP;

    /// An IPv4 TCP packet as the kernel's parser leaves it (the rest of
    /// each address field zero, the ethertype IPv4's).
    fn ipv4_summary() -> PacketSummary {
        let mut s = PacketSummary {
            ethertype: ETHERTYPE_IPV4,
            family: family::IPV4,
            proto: IPPROTO_TCP,
            src_port: 40312,
            dst_port: 443,
            has_ports: true,
            ..PacketSummary::default()
        };
        s.src[..4].copy_from_slice(&[172, 19, 0, 2]);
        s.dst[..4].copy_from_slice(&[203, 0, 113, 7]);
        s
    }

    #[test]
    fn an_ipv4_flows_short_key_widens_to_the_key_records_and_user_space_use() {
        let s = ipv4_summary();
        let short = FlowKey4::new(7, Direction::Egress, &s);
        let full = FlowKey::new(7, Direction::Egress, &s);
        assert_eq!(short.widen(), full);
        assert_eq!(full.narrow(), Some(short));
        assert_eq!(short.answered().widen(), full.answered());
    }

    #[test]
    fn only_ipv4_flows_have_a_short_key() {
        let mut v6 = ipv4_summary();
        v6.family = family::IPV6;
        v6.ethertype = crate::packet::ETHERTYPE_IPV6;
        v6.src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        assert_eq!(FlowKey::new(7, Direction::Ingress, &v6).narrow(), None);
        let mut arp = ipv4_summary();
        arp.family = family::NONE;
        arp.ethertype = crate::packet::ETHERTYPE_ARP;
        assert_eq!(FlowKey::new(7, Direction::Ingress, &arp).narrow(), None);
    }

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;

    #[test]
    fn a_short_interval_reads_the_precise_clock_even_while_the_coarse_clock_stalls() {
        let last_report = 100 * S;
        // The previous packet stamped the flow with the precise clock; the
        // coarse one has not moved for 50 ms (its timekeeping vCPU stolen).
        let coarse = last_report - 50 * MS;
        assert!(report_needs_precise_clock(
            coarse,
            last_report,
            last_report,
            1
        ));
        assert!(report_needs_precise_clock(
            coarse,
            last_report,
            last_report,
            COARSE_LAG_NS
        ));
    }

    #[test]
    fn a_long_interval_reads_the_precise_clock_only_in_its_last_tick() {
        let last_report = 100 * S;
        let interval = 10 * S;
        let due = last_report + interval;
        assert!(!report_needs_precise_clock(
            last_report + 5 * S,
            last_report + 5 * S,
            last_report,
            interval
        ));
        assert!(!report_needs_precise_clock(
            due - COARSE_LAG_NS - 1,
            last_report,
            last_report,
            interval
        ));
        assert!(report_needs_precise_clock(
            due - COARSE_LAG_NS,
            last_report,
            last_report,
            interval
        ));
        // A stamp from the precise clock counts even when the coarse one
        // lags behind it.
        assert!(report_needs_precise_clock(
            last_report,
            due - 1,
            last_report,
            interval
        ));
    }

    #[test]
    fn times_near_the_end_of_the_clock_do_not_wrap() {
        assert!(report_needs_precise_clock(u64::MAX - 1, 0, 0, u64::MAX));
        assert!(!report_needs_precise_clock(0, 0, u64::MAX, 1));
    }
}
