//! DNS messages crossing a guarded veth, copied to user space (see
//! netwatch-common's `dns`).
//!
//! A packet that is not UDP to or from port 53 costs one test of the
//! parser's UDP payload offset and two port compares. A DNS datagram
//! costs a config lookup, a per-CPU token bucket, and a ring buffer
//! reservation with one `bpf_skb_load_bytes` of at most
//! `DNS_PAYLOAD_MAX` bytes straight into it (the record is larger than
//! the 512-byte BPF stack, so it never lives there).
//!
//! Minimum kernel: 5.8 (ring buffer).

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP, helpers::bpf_ktime_get_ns, helpers::bpf_skb_load_bytes,
    programs::TcContext,
};
use core::ffi::c_void;
use netwatch_common::{
    dns::{DNS_PAYLOAD_MAX, DNS_PORT, DnsRecord, DnsRecordHeader, KIND_DNS, counter},
    packet::PacketSummary,
    reason::Direction,
    verdict::Decision,
};

use crate::maps::{DNS_BUCKETS, DNS_CONFIG, DNS_COUNTERS, DNS_EVENTS};

/// Whether a parsed packet is a DNS datagram (UDP, port 53 at either end).
#[inline(always)]
pub fn is_dns(s: &PacketSummary) -> bool {
    s.udp_payload != 0 && (s.src_port == DNS_PORT || s.dst_port == DNS_PORT)
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(slot) = DNS_COUNTERS.get_ptr_mut(index) {
        // SAFETY: a successful lookup in a per-CPU array: valid, and only
        // this CPU writes it.
        unsafe { *slot += 1 };
    }
}

/// Copies a DNS datagram's header facts and payload into `DNS_EVENTS`,
/// unless records are off or this CPU's bucket is empty.
#[inline(always)]
pub fn record(
    ctx: &TcContext,
    endpoint: u32,
    direction: Direction,
    s: &PacketSummary,
    decision: Decision,
) {
    let Some(config) = DNS_CONFIG.get(0) else {
        return;
    };
    if config.enabled == 0 || s.udp_payload_len == 0 {
        return;
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(bucket) = DNS_BUCKETS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU array entry from a successful lookup; only this CPU
    // touches it while the program runs (programs are not preempted by
    // themselves on one CPU).
    if !unsafe { &mut *bucket }.take(now, config) {
        bump(counter::RATE_LIMITED);
        return;
    }
    let captured = if s.udp_payload_len > DNS_PAYLOAD_MAX as u32 {
        bump(counter::TRUNCATED);
        DNS_PAYLOAD_MAX as u32
    } else {
        s.udp_payload_len
    };
    let Some(mut entry) = DNS_EVENTS.reserve::<DnsRecord>(0) else {
        bump(counter::LOST);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points at a reserved ring buffer slot of the
    // record's size; the header is written whole, the payload by the
    // helper below within its bounds.
    unsafe {
        (*record).header = DnsRecordHeader {
            kind: KIND_DNS,
            direction: direction as u8,
            verdict: decision.verdict as u8,
            family: s.family,
            endpoint,
            time_ns: now,
            src: s.src,
            dst: s.dst,
            src_port: s.src_port,
            dst_port: s.dst_port,
            proto: s.proto,
            _pad: 0,
            captured: captured as u16,
            message_len: s.udp_payload_len.min(u32::from(u16::MAX)) as u16,
            reason: decision.reason as u8,
            _pad2: 0,
            _pad3: 0,
        };
    }
    // The verifier wants the length proven within 1..=DNS_PAYLOAD_MAX at
    // the call, whatever the compiler made of the clamp above.
    let len = captured & (DNS_PAYLOAD_MAX as u32 * 2 - 1);
    if len == 0 || len > DNS_PAYLOAD_MAX as u32 {
        entry.discard(0);
        return;
    }
    // SAFETY: the destination is the record's payload array, `len` bytes
    // of which fit; the helper checks the skb's bounds itself.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast::<c_void>(),
            s.udp_payload,
            (*record).payload.as_mut_ptr().cast::<c_void>(),
            len,
        )
    };
    if ret != 0 {
        entry.discard(0);
        return;
    }
    entry.submit(u64::from(BPF_RB_NO_WAKEUP));
    bump(counter::SUBMITTED);
}
