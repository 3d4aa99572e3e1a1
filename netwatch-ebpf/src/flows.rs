//! Per-flow accounting and ring buffer records.
//!
//! Established flows cost a map update, not a record: records are emitted
//! on a flow's first packet, on its first TCP FIN/RST, on a drop (at most one
//! per flow per drop-report interval, and at once when a flow's verdict turns
//! to dropped), and when a packet arrives more than one export interval after
//! the flow's last record. Records are submitted without waking the consumer
//! (`BPF_RB_NO_WAKEUP`): the agent polls on a timer, which keeps the
//! producer's per-record cost low.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use netwatch_common::{
    event::{EventKind, FlowEvent},
    flow::{FlowKey, FlowStats, tcp_flags},
    packet::{IPPROTO_TCP, PacketSummary},
    verdict::Decision,
};

use crate::{
    counters,
    maps::{CONFIG, EVENTS, FLOWS},
};

/// Accounts one packet of `bytes` bytes to its flow and emits a record when
/// one is due.
#[inline(always)]
pub fn record(key: &FlowKey, s: &PacketSummary, decision: Decision, bytes: u64) {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let flags = if s.proto == IPPROTO_TCP {
        s.tcp_flags
    } else {
        0
    };
    let verdict = decision.verdict as u8;
    let Some(stats) = FLOWS.get_ptr_mut(key) else {
        let stats = FlowStats {
            packets: 1,
            bytes,
            first_seen_ns: now,
            last_seen_ns: now,
            last_report_ns: now,
            tcp_flags: flags,
            verdict,
            reason: decision.reason as u8,
            _pad: [0; 5],
        };
        // Another CPU may have inserted the flow meanwhile; losing this one
        // packet's count is the price of not taking a lock.
        if FLOWS.insert(key, stats, BPF_NOEXIST as u64).is_ok() {
            counters::flow_inserted();
        }
        let kind = if decision.verdict.is_drop_like() {
            EventKind::Drop
        } else {
            EventKind::FlowOpen
        };
        emit(kind, decision, key, &stats);
        return;
    };
    // SAFETY: the pointer comes from a successful map lookup and stays valid
    // for this program run; counters shared across CPUs use atomic adds, the
    // other fields are last-writer-wins.
    let stats = unsafe { &mut *stats };
    // The BPF target has no `AtomicU64::fetch_add` (rustc gives it no atomic
    // read-modify-write), but the intrinsic lowers to the BPF atomic add
    // instruction.
    // SAFETY: the fields are u64 in a map value, 8-byte aligned.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut stats.packets, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut stats.bytes, bytes);
    }
    stats.last_seen_ns = now;
    let previous_flags = stats.tcp_flags;
    let previous_verdict = stats.verdict;
    stats.tcp_flags = previous_flags | flags;
    stats.verdict = verdict;
    stats.reason = decision.reason as u8;

    let config = CONFIG.get(0).copied().unwrap_or_default();
    let since_report = now.saturating_sub(stats.last_report_ns);
    let closing = tcp_flags::FIN | tcp_flags::RST;
    let kind = if decision.verdict.is_drop_like() {
        (previous_verdict != verdict || since_report >= config.drop_report_interval())
            .then_some(EventKind::Drop)
    } else if flags & closing != 0 && previous_flags & closing == 0 {
        Some(EventKind::FlowClose)
    } else if since_report >= config.export_interval() {
        Some(EventKind::FlowExport)
    } else {
        None
    };
    if let Some(kind) = kind {
        stats.last_report_ns = now;
        emit(kind, decision, key, stats);
    }
}

#[inline(always)]
fn emit(kind: EventKind, decision: Decision, key: &FlowKey, stats: &FlowStats) {
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        counters::ringbuf_lost();
        return;
    };
    entry.write(FlowEvent {
        kind: kind as u8,
        verdict: decision.verdict as u8,
        reason: decision.reason as u8,
        tcp_flags: stats.tcp_flags,
        _pad: [0; 4],
        key: *key,
        packets: stats.packets,
        bytes: stats.bytes,
        first_seen_ns: stats.first_seen_ns,
        last_seen_ns: stats.last_seen_ns,
    });
    entry.submit(BPF_RB_NO_WAKEUP as u64);
}
