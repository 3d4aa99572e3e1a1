//! The kernel's own drops of guarded containers' packets, from the
//! `kfree_skb` BTF tracepoint (see netwatch-common's `kdrop`).
//!
//! Per call: one config lookup and a reason check; for IPv4 and IPv6
//! packets, two `bpf_probe_read_kernel`s (the skb's protocol, head,
//! network header and tail offsets in one, then the IP header, never past
//! the linear data's end) and two `GUARDED` lookups. Only packets whose
//! source or destination is a guarded container's address go further:
//! they are counted in `KDROPS` and
//! reported at most once per key per drop-report interval, submitted
//! without waking the reader, as flow records are.
//!
//! Field offsets come from [`KernelDropConfig`], which user space fills from
//! the running kernel's BTF: this program has no CO-RE.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_NO_WAKEUP},
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    programs::BtfTracePointContext,
};
use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    mem::MaybeUninit,
};
use netwatch_common::{
    flow::family,
    kdrop::{
        GuardedAddr, KIND_KERNEL_DROP, KernelDropConfig, KernelDropEvent, KernelDropKey,
        KernelDropStats,
    },
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
};

use crate::{
    bytes::zeroed_by_words,
    clock, counters,
    maps::{CONFIG, GUARDED, KDROP_CONFIG, KDROP_EVENTS, KDROPS},
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Option<T> {
    let at = base.wrapping_add(u64::from(offset));
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly
    // on a bad one; nothing is dereferenced directly.
    unsafe { bpf_probe_read_kernel(at as *const T) }.ok()
}

/// Records one call of the tracepoint when it is a drop worth reporting.
#[inline(always)]
pub fn on_kfree_skb(ctx: &BtfTracePointContext) -> Option<()> {
    let config = KDROP_CONFIG.get(0)?;
    if config.enabled == 0 {
        return None;
    }
    let reason: u64 = ctx.arg(2);
    let reason = reason as u32;
    if config.skips(reason) {
        return None;
    }
    let skb: u64 = ctx.arg(0);
    let (protocol, head, network, tail) = skb_headers(skb, config)?;
    let protocol = u16::from_be(protocol);
    let ip = head.wrapping_add(u64::from(network));
    // Bytes from the network header to the end of the linear data. The
    // helper reads kernel memory, not the packet: past `tail` it would
    // read what the buffer held before (an earlier packet's bytes), so
    // nothing is read there (the oracle in tests/tests/kernel_drops.rs
    // found such keys). A header outside the linear data (in a fragment,
    // before the stack pulled it) is not recorded.
    let available = u64::from(tail).checked_sub(u64::from(network))?;
    let mut key = MaybeUninit::uninit();
    // SAFETY: a key is integers and byte arrays, valid as all zero bits.
    let key = unsafe { zeroed_by_words::<KernelDropKey>(&mut key) };
    key.reason = reason;
    let bytes;
    let l4 = match protocol {
        ETH_P_IP => {
            if available < 20 {
                return None;
            }
            let hdr: [u8; 20] = read(ip, 0)?;
            if hdr[0] >> 4 != 4 {
                return None;
            }
            key.family = family::IPV4;
            key.proto = hdr[9];
            key.src[..4].copy_from_slice(&hdr[12..16]);
            key.dst[..4].copy_from_slice(&hdr[16..20]);
            bytes = u64::from(u16::from_be_bytes([hdr[2], hdr[3]]));
            // A non-first fragment carries no ports.
            let fragment_offset = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff;
            (fragment_offset == 0).then(|| u64::from(hdr[0] & 0x0f) * 4)
        }
        ETH_P_IPV6 => {
            if available < 40 {
                return None;
            }
            let hdr: [u8; 40] = read(ip, 0)?;
            if hdr[0] >> 4 != 6 {
                return None;
            }
            key.family = family::IPV6;
            key.proto = hdr[6];
            key.src.copy_from_slice(&hdr[8..24]);
            key.dst.copy_from_slice(&hdr[24..40]);
            bytes = u64::from(u16::from_be_bytes([hdr[4], hdr[5]])) + 40;
            Some(40)
        }
        _ => return None,
    };
    let guarded = |addr: &[u8; 16]| {
        let key = GuardedAddr::new(key.family, *addr);
        // SAFETY: a hash map lookup; the value is copied out at once.
        unsafe { GUARDED.get(key) }.copied().unwrap_or(0)
    };
    let src_endpoint = guarded(&key.src);
    let dst_endpoint = guarded(&key.dst);
    if src_endpoint == 0 && dst_endpoint == 0 {
        return None;
    }
    // Ports (or ICMP type and code) only where they lie in the linear
    // data: else the key has none, as a non-first fragment's.
    if let Some(l4) = l4 {
        match key.proto {
            IPPROTO_TCP | IPPROTO_UDP if l4 + 4 <= available => {
                let ports: [u8; 4] = read(ip + l4, 0)?;
                key.src_port = u16::from_be_bytes([ports[0], ports[1]]);
                key.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
            }
            IPPROTO_ICMP | IPPROTO_ICMPV6 if l4 + 2 <= available => {
                let icmp: [u8; 2] = read(ip + l4, 0)?;
                key.src_port = u16::from(icmp[0]);
                key.dst_port = u16::from(icmp[1]);
            }
            _ => {}
        }
    }
    let location: u64 = ctx.arg(1);
    account(
        key,
        bytes,
        KernelDropEvent {
            kind: KIND_KERNEL_DROP,
            src_endpoint,
            dst_endpoint,
            location,
            key: *key,
            ..KernelDropEvent::default()
        },
        || {
            let dev: u64 = read(skb, config.skb_dev).unwrap_or(0);
            if dev == 0 {
                0
            } else {
                read::<u32>(dev, config.dev_ifindex).unwrap_or(0)
            }
        },
    );
    Some(())
}

/// The skb's `protocol` (big-endian), `head`, `network_header` and `tail`: one
/// `bpf_probe_read_kernel` of the span that holds all four where user
/// space found the kernel's layout allows it
/// ([`KernelDropConfig::ENABLED_SPAN`]), four where it does not.
///
/// Learned the hard way: with the offsets checked against the span here,
/// LLVM checked one copy of a value and indexed with another, and the
/// verifier refused an "unbounded variable-offset read from stack". User
/// space checks them instead, and the masks below are the bounds the
/// verifier sees (they change nothing for offsets that fit).
#[inline(always)]
fn skb_headers(skb: u64, config: &KernelDropConfig) -> Option<(u16, u64, u16, u32)> {
    const SPAN: usize = KernelDropConfig::SKB_SPAN as usize;
    if config.enabled != KernelDropConfig::ENABLED_SPAN {
        return Some((
            read(skb, config.skb_protocol)?,
            read(skb, config.skb_head)?,
            read(skb, config.skb_network_header)?,
            read(skb, config.skb_tail)?,
        ));
    }
    let start = config.span_start();
    let span: [u8; SPAN + 8] = read(skb, start)?;
    let at = |offset: u32| {
        let within = (offset.wrapping_sub(start) as usize) & (SPAN - 1);
        span.as_ptr().wrapping_add(within)
    };
    // SAFETY: each field starts below SPAN (masked) and is at most 8
    // bytes long, inside the SPAN + 8 bytes read; the fields are plain
    // integers (and a pointer read as one), copied unaligned.
    unsafe {
        Some((
            at(config.skb_protocol).cast::<u16>().read_unaligned(),
            at(config.skb_head).cast::<u64>().read_unaligned(),
            at(config.skb_network_header).cast::<u16>().read_unaligned(),
            at(config.skb_tail).cast::<u32>().read_unaligned(),
        ))
    }
}

/// Counts the drop under its key and reports it when one is due, with the
/// interface `dev_ifindex` reads: two more helper calls, paid only for a
/// record, not for every drop the record counts.
#[inline(always)]
fn account(
    key: &KernelDropKey,
    bytes: u64,
    mut event: KernelDropEvent,
    dev_ifindex: impl FnOnce() -> u32,
) {
    let stats = match KDROPS.get_ptr_mut(key) {
        Some(stats) => {
            // SAFETY: the pointer comes from a successful lookup and stays
            // valid for this run; counters use atomic adds, the times are
            // last-writer-wins.
            let stats = unsafe { &mut *stats };
            // SAFETY: u64 fields of a map value, 8-byte aligned.
            unsafe {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut stats.packets, 1);
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut stats.bytes, bytes);
            }
            let interval = CONFIG
                .get(0)
                .copied()
                .unwrap_or_default()
                .drop_report_interval();
            // The flows' tick clock, judged the same way (`clock::entry_now`):
            // the precise clock only when the report may be due. A profile
            // of a drop flood put two fifths of this program's samples in
            // the precise clock it read on every drop (its fenced TSC read
            // also waits for the loads before it). Learned the hard way: a
            // tracing program may not call `bpf_ktime_get_coarse_ns`
            // ("program of this type cannot use helper"); `bpf_jiffies64`
            // it may. Unlike the TC programs, this one may be preempted
            // (it runs with migration disabled) or run from an interrupt,
            // so it may meet this CPU's tick clock half written: the cost
            // is a stamp off by up to a tick, or one more precise read.
            let last_report = stats.last_report_ns;
            let now =
                clock::entry_now(clock::tick_now(), stats.last_seen_ns, last_report, interval);
            stats.last_seen_ns = now;
            if now.saturating_sub(last_report) < interval {
                return;
            }
            stats.last_report_ns = now;
            *stats
        }
        None => {
            // SAFETY: bpf_ktime_get_ns has no preconditions.
            let now = unsafe { bpf_ktime_get_ns() };
            let stats = KernelDropStats {
                packets: 1,
                bytes,
                first_seen_ns: now,
                last_seen_ns: now,
                last_report_ns: now,
            };
            // Another CPU may have inserted it meanwhile: one packet's
            // count is the price of not taking a lock.
            let _ = KDROPS.insert(key, stats, u64::from(BPF_NOEXIST));
            stats
        }
    };
    event.dev_ifindex = dev_ifindex();
    event.packets = stats.packets;
    event.bytes = stats.bytes;
    event.first_seen_ns = stats.first_seen_ns;
    event.last_seen_ns = stats.last_seen_ns;
    let Some(mut entry) = KDROP_EVENTS.reserve::<KernelDropEvent>(0) else {
        counters::ringbuf_lost();
        return;
    };
    entry.write(event);
    entry.submit(u64::from(BPF_RB_NO_WAKEUP));
}
