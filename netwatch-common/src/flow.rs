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
            src: addr_by_words(&s.src),
            dst: addr_by_words(&s.dst),
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

user_pod!(FlowKey, FlowStats);

/// How far `bpf_ktime_get_coarse_ns` is taken to lag `bpf_ktime_get_ns`:
/// one tick at the lowest common `HZ` (100; 4 ms at this machine's 250).
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
