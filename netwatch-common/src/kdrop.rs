//! Drops that are not netwatch's: the kernel's own, seen on the
//! `skb:kfree_skb` tracepoint (a `tp_btf` program, `kernel_drops`), for
//! packets to or from a guarded container's address.
//!
//! The tracepoint's BTF arguments are `(struct sk_buff *skb, void
//! *location, enum skb_drop_reason reason)` since Linux 5.17, with `struct
//! sock *rx_sk` appended in 6.12 (the classic tracefs record has other
//! offsets: on 6.18 `skbaddr` 8, `location` 16, `rx_sk` 24, `protocol` 32,
//! `reason` 36 — another reason to take the BTF arguments by position).
//! Rust eBPF programs have no CO-RE, so user space reads the `sk_buff` and
//! `net_device` field offsets from the running kernel's BTF at load time
//! and hands them to the program in [`KernelDropConfig`]; reason numbers
//! are named from the same BTF (`enum skb_drop_reason`), never from a
//! table compiled in.
//!
//! Every layout here is asserted, as for the other contract types.

use crate::{assert_layout, user_pod};

/// `EventKind` value of a [`KernelDropEvent`] (its first byte, as in
/// `FlowEvent`).
pub const KIND_KERNEL_DROP: u8 = 5;

/// How many reason values the program ignores at most (see
/// [`KernelDropConfig::skip`]).
pub const SKIP_REASONS: usize = 8;

/// Unused slot of [`KernelDropConfig::skip`].
pub const NO_REASON: u32 = u32::MAX;

/// Offsets of the kernel structures the program reads, from the running
/// kernel's BTF, and the reasons it ignores. The single entry of
/// `KDROP_CONFIG`; all zero (as before user space wrote it) turns the
/// program into a no-op.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelDropConfig {
    /// `sk_buff.head` (`unsigned char *`).
    pub skb_head: u32,
    /// `sk_buff.network_header` (`__u16`, from `head`).
    pub skb_network_header: u32,
    /// `sk_buff.protocol` (`__be16`).
    pub skb_protocol: u32,
    /// `sk_buff.tail` (`sk_buff_data_t`: on 64-bit kernels a `u32` offset
    /// from `head`, the end of the linear data): the program reads no
    /// header bytes past it.
    pub skb_tail: u32,
    /// `sk_buff.dev` (`struct net_device *`).
    pub skb_dev: u32,
    /// `net_device.ifindex` (`int`).
    pub dev_ifindex: u32,
    /// Reason values not recorded (`SKB_NOT_DROPPED_YET`, `SKB_CONSUMED`,
    /// `SKB_DROP_REASON_NOT_SPECIFIED`: not drops, or drops that say
    /// nothing; `TC_INGRESS`, `TC_EGRESS`, `XDP`: a BPF program's verdict,
    /// which is how netwatch's own drops reach `kfree_skb`, recorded by
    /// netwatch itself); [`NO_REASON`] in unused slots.
    pub skip: [u32; SKIP_REASONS],
    /// 0 until user space filled the offsets, then [`KernelDropConfig::ENABLED`]
    /// or [`KernelDropConfig::ENABLED_SPAN`].
    pub enabled: u32,
}
assert_layout!(KernelDropConfig, size = 60, align = 4);

impl Default for KernelDropConfig {
    fn default() -> Self {
        KernelDropConfig {
            skb_head: 0,
            skb_network_header: 0,
            skb_protocol: 0,
            skb_tail: 0,
            skb_dev: 0,
            dev_ifindex: 0,
            skip: [NO_REASON; SKIP_REASONS],
            enabled: 0,
        }
    }
}

impl KernelDropConfig {
    /// `enabled`: the offsets are filled; the program reads `protocol`,
    /// `network_header`, `tail` and `head` one at a time.
    pub const ENABLED: u32 = 1;
    /// `enabled`: the offsets are filled, and those four fields lie
    /// within [`KernelDropConfig::SKB_SPAN`] bytes of the first of them
    /// ([`KernelDropConfig::fits_span`]): the program reads them with one
    /// `bpf_probe_read_kernel` instead of three (each call costs tens of
    /// nanoseconds, and the program runs on every freed skb of the
    /// machine).
    pub const ENABLED_SPAN: u32 = 2;
    /// Where the three fields must start within the span (an 8-byte field
    /// may start at its last offset: the program reads 8 bytes more).
    pub const SKB_SPAN: u32 = 32;

    /// Offset in `sk_buff` of the first of `protocol`, `network_header`,
    /// `tail` and `head`.
    #[inline(always)]
    pub fn span_start(&self) -> u32 {
        self.skb_protocol
            .min(self.skb_network_header)
            .min(self.skb_tail)
            .min(self.skb_head)
    }

    /// Whether `protocol`, `network_header`, `tail` and `head` all start
    /// less than [`KernelDropConfig::SKB_SPAN`] bytes after
    /// [`KernelDropConfig::span_start`] (Linux 6.18: 176, 180, 184 and
    /// 192).
    pub fn fits_span(&self) -> bool {
        let start = self.span_start();
        [
            self.skb_protocol,
            self.skb_network_header,
            self.skb_tail,
            self.skb_head,
        ]
        .iter()
        .all(|offset| offset - start < Self::SKB_SPAN)
    }

    /// Whether `reason` is one the program ignores.
    #[inline(always)]
    pub fn skips(&self, reason: u32) -> bool {
        // Unrolled: a loop over the array is what the verifier would
        // have to walk; eight compares are cheaper and obvious.
        self.skip[0] == reason
            || self.skip[1] == reason
            || self.skip[2] == reason
            || self.skip[3] == reason
            || self.skip[4] == reason
            || self.skip[5] == reason
            || self.skip[6] == reason
            || self.skip[7] == reason
    }
}

/// Key of `GUARDED`: a guarded container's address. IPv4 addresses occupy
/// the first 4 bytes of `addr`, the rest is zero (as in `FlowKey`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GuardedAddr {
    /// `crate::flow::family` value (4 or 6).
    pub family: u8,
    /// Padding as whole fields: a zeroed `[u8; 3]` became a call to a
    /// byte-loop `memset` subprogram in `kernel_drops`, twice per drop.
    pub _pad: u8,
    pub _pad2: u16,
    pub addr: [u8; 16],
}
assert_layout!(GuardedAddr, size = 20, align = 2);

impl GuardedAddr {
    #[inline(always)]
    pub fn new(family: u8, addr: [u8; 16]) -> GuardedAddr {
        GuardedAddr {
            family,
            _pad: 0,
            _pad2: 0,
            addr,
        }
    }
}

/// Key of `KDROPS`, the rate limiter and counters of kernel drops: one
/// entry per (addresses, protocol, ports, reason). ICMP carries its type
/// and code in the ports, as in `FlowKey`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KernelDropKey {
    pub family: u8,
    pub proto: u8,
    pub _pad: u16,
    /// `enum skb_drop_reason` value.
    pub reason: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}
assert_layout!(KernelDropKey, size = 44, align = 4);

/// Value of `KDROPS`. Times are `bpf_ktime_get_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelDropStats {
    pub packets: u64,
    /// IP packet lengths (IPv4 total length, IPv6 payload length + 40),
    /// summed: `skb->len` at a drop depends on which header the kernel had
    /// pulled (a datagram dropped for NO_SOCKET has lost its IP and UDP
    /// headers), the IP header's length does not.
    pub bytes: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub last_report_ns: u64,
}
assert_layout!(KernelDropStats, size = 40, align = 8);

/// One record of the `KDROP_EVENTS` ring buffer: at most one per
/// `KDROPS` key per drop-report interval (the one that netwatch's own drop
/// records use).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelDropEvent {
    /// [`KIND_KERNEL_DROP`].
    pub kind: u8,
    /// Padding as whole fields (see [`GuardedAddr`]).
    pub _pad: u8,
    pub _pad1: u16,
    /// Host-side ifindex (`ENDPOINTS` key) of the guarded endpoint whose
    /// address is the source, 0 when the source is not guarded.
    pub src_endpoint: u32,
    /// The same for the destination.
    pub dst_endpoint: u32,
    /// ifindex of `skb->dev` at the drop, in whatever namespace it lives
    /// (0 when the skb had no device).
    pub dev_ifindex: u32,
    /// The kernel address that dropped it (`location`), for symbolising
    /// with /proc/kallsyms.
    pub location: u64,
    pub key: KernelDropKey,
    pub _pad2: u32,
    pub packets: u64,
    pub bytes: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}
assert_layout!(KernelDropEvent, size = 104, align = 8);

impl KernelDropEvent {
    /// Decodes a record read from the ring buffer; `None` for the wrong
    /// size or kind (a kernel/user version mismatch).
    pub fn from_bytes(bytes: &[u8]) -> Option<KernelDropEvent> {
        if bytes.len() != core::mem::size_of::<KernelDropEvent>() || bytes[0] != KIND_KERNEL_DROP {
            return None;
        }
        // SAFETY: the length is checked above; the type is repr(C), made of
        // integers and byte arrays only, so any bit pattern is valid, and
        // read_unaligned has no alignment requirement.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<KernelDropEvent>()) })
    }
}

user_pod!(
    KernelDropConfig,
    GuardedAddr,
    KernelDropKey,
    KernelDropStats,
    KernelDropEvent
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skb_fields_are_read_in_one_span_only_when_all_four_start_inside_it() {
        let layout = |protocol, network_header, tail, head| KernelDropConfig {
            skb_protocol: protocol,
            skb_network_header: network_header,
            skb_tail: tail,
            skb_head: head,
            ..KernelDropConfig::default()
        };
        // Linux 6.18's layout.
        assert!(layout(176, 180, 184, 192).fits_span());
        assert_eq!(layout(176, 180, 184, 192).span_start(), 176);
        // In any order; the last may start at the span's last byte.
        assert!(layout(200, 169, 180, 176).fits_span());
        assert_eq!(layout(200, 169, 180, 176).span_start(), 169);
        assert!(layout(100, 104, 110, 131).fits_span());
        assert!(!layout(100, 104, 110, 132).fits_span());
        assert!(!layout(176, 180, 232, 192).fits_span());
    }

    #[test]
    fn kernel_drop_records_decode_only_at_their_size_and_kind() {
        let event = KernelDropEvent {
            kind: KIND_KERNEL_DROP,
            src_endpoint: 7,
            packets: 2,
            ..KernelDropEvent::default()
        };
        // SAFETY: repr(C) plain data without padding holes.
        let bytes: [u8; 104] = unsafe { core::mem::transmute(event) };
        assert_eq!(KernelDropEvent::from_bytes(&bytes), Some(event));
        assert_eq!(KernelDropEvent::from_bytes(&bytes[..103]), None);
        let mut other = bytes;
        other[0] = 4;
        assert_eq!(KernelDropEvent::from_bytes(&other), None);
    }

    #[test]
    fn only_listed_reasons_are_skipped() {
        let mut config = KernelDropConfig::default();
        assert!(!config.skips(2));
        config.skip[7] = 2;
        assert!(config.skips(2));
        assert!(!config.skips(12));
    }
}
