//! Per-flow accounting and ring buffer records.
//!
//! Established flows cost a map update, not a record: records are emitted
//! on a flow's first packet, on its first TCP FIN/RST, on a drop (at most one
//! per flow per drop-report interval, and at once when a flow's verdict turns
//! to dropped), and when a packet arrives more than one export interval after
//! the flow's last record. Records are submitted without waking the consumer
//! (`BPF_RB_NO_WAKEUP`) until the ring holds more than a sixteenth of its
//! size; past that each record forces a wakeup (`BPF_RB_FORCE_WAKEUP`), so
//! the agent's reader, asleep in epoll on the ring's fd, is woken once per
//! batch rather than per record (a consumer woken per record costs ~1.4 µs
//! per record on the producer's CPU) and long before the ring is full. What
//! stays under the watermark is read on the reader's timeout
//! (`flows::reader`). See [`wakeup_flags`].
//!
//! Clocks: a flow's first packet is stamped with `bpf_ktime_get_ns`
//! (CLOCK_MONOTONIC), because tests and the start-window benchmark compare
//! `first_seen_ns` with times user space reads. A later packet reads the
//! tick clock ([`clock::tick_now`]): the same clock at tick resolution (4 ms
//! at this kernel's HZ=250), as this CPU read it once in the current jiffy.
//! It lags CLOCK_MONOTONIC by up to a tick, and by more while a hypervisor
//! steals the vCPU on timekeeping duty (see `COARSE_LAG_NS`), and costs a
//! load and a compare where a clock helper costs a call (the coarse clock
//! helper it replaced: 11% of an established flow's program samples; the
//! precise one reads the TSC, 7% of its time before that). That is enough
//! for `last_seen_ns`, not for the export and drop-report intervals:
//! judged at tick resolution, an interval shorter than a tick gave at most
//! one record per flow per tick (the pipeline benchmark, exporting every
//! packet, received 9,472 of 150,000 records). So when the tick clock, or
//! the flow's own latest stamp, says an interval is within one tick of
//! running out ([`clock::entry_now`]), the packet reads the precise clock
//! and judges by that, and a record's time is the precise
//! one: records keep their exact intervals, and a flow with the default
//! 10 s interval reads the precise clock only in the last tick before its
//! export is due. `last_seen_ns` never moves back (the tick clock may read
//! before a precise stamp).

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use netwatch_common::{
    event::{EventKind, FlowEvent},
    flow::{FlowKey, FlowKey4, FlowStats, tcp_flags},
    names,
    packet::{IPPROTO_TCP, PacketSummary},
    reason::{DROP_REASON_COUNT, DropReason, Verdict},
    verdict::{Decision, packet_cacheable},
};

use crate::{
    clock, counters,
    maps::{CONFIG, EVENTS, FLOWS, FLOWS4},
};

/// A flow table's key: IPv4 flows live in `FLOWS4` under [`FlowKey4`],
/// the others in `FLOWS` under [`FlowKey`]. The accounting below is
/// written once over this trait and built once per table, so that each
/// copy looks up, inserts and reports under its own key with nothing to
/// convert on a packet that emits no record.
pub trait TableKey: Copy {
    /// The flow's entry, if its table has one.
    fn lookup(&self) -> Option<*mut FlowStats>;
    /// Inserts the flow's entry unless one exists; whether it did.
    fn insert_new(&self, stats: &FlowStats) -> bool;
    /// The flow's key as records carry it.
    fn wide(&self) -> FlowKey;
}

impl TableKey for FlowKey {
    #[inline(always)]
    fn lookup(&self) -> Option<*mut FlowStats> {
        FLOWS.get_ptr_mut(self)
    }

    #[inline(always)]
    fn insert_new(&self, stats: &FlowStats) -> bool {
        FLOWS.insert(self, stats, BPF_NOEXIST as u64).is_ok()
    }

    #[inline(always)]
    fn wide(&self) -> FlowKey {
        *self
    }
}

impl TableKey for FlowKey4 {
    #[inline(always)]
    fn lookup(&self) -> Option<*mut FlowStats> {
        FLOWS4.get_ptr_mut(self)
    }

    #[inline(always)]
    fn insert_new(&self, stats: &FlowStats) -> bool {
        FLOWS4.insert(self, stats, BPF_NOEXIST as u64).is_ok()
    }

    #[inline(always)]
    fn wide(&self) -> FlowKey {
        self.widen()
    }
}

/// The decision cached in a flow entry for this packet, when it still
/// stands: decided under the current policy generation `generation` (0:
/// none yet), for a packet whose verdict inputs are all in the flow key
/// ([`netwatch_common::verdict::verdict_cacheable`]) plus the source MAC, which must be the one it
/// was decided for.
#[inline(always)]
pub fn cached(stats: &FlowStats, generation: u64, s: &PacketSummary) -> Option<Decision> {
    // SAFETY: a field of a live map value; volatile so that the generation
    // is read before the verdict it guards (see `record_entry`).
    let cached_gen = unsafe { (&raw const stats.policy_gen).read_volatile() };
    if generation == 0 || cached_gen != generation || !same_src_mac(stats, s) {
        return None;
    }
    if !packet_cacheable(s) {
        return None;
    }
    // Learned the hard way: `DropReason::from_u8` indexes a const array,
    // which put a `.rodata` map into the object (one more map that is in
    // no contract and never pinned). Range checks and a transmute do not.
    let (verdict, reason) = (stats.verdict, stats.reason);
    if verdict > Verdict::Audited as u8 || u32::from(reason) >= DROP_REASON_COUNT {
        return None;
    }
    // SAFETY: both enums are `repr(u8)` with the contiguous values
    // 0..=Audited and 0..DROP_REASON_COUNT (reason.rs's tests check that
    // every reason's value is its index), and both bytes were checked to
    // lie in those ranges just above.
    unsafe {
        Some(Decision {
            verdict: core::mem::transmute::<u8, Verdict>(verdict),
            reason: core::mem::transmute::<u8, DropReason>(reason),
        })
    }
}

/// Whether the packet comes from the MAC its flow's verdict was cached
/// for, compared as one 4-byte and one 2-byte load per side: `==` on the
/// arrays loaded and shifted both together byte by byte, 32 instructions
/// on every cached packet where this takes 6.
#[inline(always)]
fn same_src_mac(stats: &FlowStats, s: &PacketSummary) -> bool {
    let words = |mac: *const [u8; 6]| {
        let at = mac.cast::<u8>();
        // SAFETY: both fields lie at a 4-byte offset of a struct aligned
        // to 8 (checked below), so both loads are aligned and inside the
        // 6-byte field.
        unsafe { (at.cast::<u32>().read(), at.add(4).cast::<u16>().read()) }
    };
    words(&raw const stats.src_mac) == words(&raw const s.src_mac)
}
const _: () = assert!(core::mem::offset_of!(PacketSummary, src_mac) % 4 == 0);
const _: () = assert!(core::mem::align_of::<PacketSummary>() >= 4);

/// The flow a packet is accounted to.
pub struct Flow<'a, K: TableKey> {
    pub key: &'a K,
    /// A lookup earlier in this run found no entry: a new flow skips
    /// looking again and inserts (a flow another CPU inserted meanwhile
    /// makes the insert fail, as a second lookup would have raced too).
    pub known_absent: bool,
}

/// Accounts one packet of `bytes` bytes to its flow and emits a record when
/// one is due. `cache_under`: the policy generation to cache the decision
/// under in the flow entry, 0 for a decision that must not be cached (which
/// also clears a cached one: the entry's verdict is always the latest
/// packet's).
#[inline(always)]
pub fn record<K: TableKey>(
    flow: Flow<K>,
    s: &PacketSummary,
    decision: Decision,
    bytes: u64,
    cache_under: u64,
) {
    let key = flow.key;
    let flags = if s.proto == IPPROTO_TCP {
        s.tcp_flags
    } else {
        0
    };
    let verdict = decision.verdict as u8;
    let existing = if flow.known_absent {
        None
    } else {
        key.lookup()
    };
    let Some(stats) = existing else {
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        let stats = FlowStats {
            packets: 1,
            bytes,
            first_seen_ns: now,
            last_seen_ns: now,
            last_report_ns: now,
            policy_gen: cache_under,
            tcp_flags: flags,
            verdict,
            reason: decision.reason as u8,
            _pad: 0,
            src_mac: s.src_mac,
            _pad2: 0,
            _pad3: 0,
        };
        // Another CPU may have inserted the flow meanwhile; losing this one
        // packet's count is the price of not taking a lock.
        if key.insert_new(&stats) {
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
    // for this program run.
    let stats = unsafe { &mut *stats };
    let previous_verdict = stats.verdict;
    // The generation is written last and read first (`cached`): a reader
    // on another CPU that sees it current sees this verdict or a later one
    // decided under the same generation for the same key and MAC, which is
    // the same verdict.
    // SAFETY: fields of a live map value.
    unsafe { (&raw mut stats.policy_gen).write_volatile(0) };
    stats.verdict = verdict;
    stats.reason = decision.reason as u8;
    set_src_mac(stats, &s.src_mac);
    // SAFETY: as above.
    unsafe { (&raw mut stats.policy_gen).write_volatile(cache_under) };
    update(key, stats, flags, decision, previous_verdict, bytes);
}

/// [`record`] for a packet whose decision came from its flow entry
/// `stats` (which the decision leaves as it is).
#[inline(always)]
pub fn record_cached<K: TableKey>(
    key: &K,
    stats: &mut FlowStats,
    s: &PacketSummary,
    decision: Decision,
    bytes: u64,
) {
    let flags = if s.proto == IPPROTO_TCP {
        s.tcp_flags
    } else {
        0
    };
    let previous_verdict = stats.verdict;
    update(key, stats, flags, decision, previous_verdict, bytes);
}

/// Counts a packet into an existing flow entry and emits a record when
/// one is due.
#[inline(always)]
fn update<K: TableKey>(
    key: &K,
    stats: &mut FlowStats,
    flags: u8,
    decision: Decision,
    previous_verdict: u8,
    bytes: u64,
) {
    let verdict = decision.verdict as u8;
    // Counters shared across CPUs use atomic adds, the other fields are
    // last-writer-wins.
    add_shared(&mut stats.packets, 1);
    add_shared(&mut stats.bytes, bytes);
    let tick = clock::tick_now();
    let previous_flags = stats.tcp_flags;
    if previous_flags | flags != previous_flags {
        stats.tcp_flags = previous_flags | flags;
    }

    let config = CONFIG.get(0).copied().unwrap_or_default();
    let closing = tcp_flags::FIN | tcp_flags::RST;
    let drop_like = decision.verdict.is_drop_like();
    let interval = if drop_like {
        config.drop_report_interval()
    } else {
        config.export_interval()
    };
    // The tick clock lags: when the interval may have run out by the
    // precise clock, ask that one (see the module docs).
    let last_report = stats.last_report_ns;
    let now = clock::entry_now(tick, stats.last_seen_ns, last_report, interval);
    stats.last_seen_ns = now;
    let interval_due = now.saturating_sub(last_report) >= interval;
    let kind = if drop_like {
        (previous_verdict != verdict || interval_due).then_some(EventKind::Drop)
    } else if flags & closing != 0 && previous_flags & closing == 0 {
        Some(EventKind::FlowClose)
    } else if interval_due {
        Some(EventKind::FlowExport)
    } else {
        None
    };
    if let Some(kind) = kind {
        stats.last_report_ns = now;
        emit(kind, decision, key, stats);
    }
}

/// `stats.src_mac = *mac` as one 4-byte and one 2-byte store: the plain
/// assignment became a call to a byte-loop `memmove` subprogram (see
/// `bytes`). Volatile, so that LLVM cannot merge the stores back into one.
#[inline(always)]
fn set_src_mac(stats: &mut FlowStats, mac: &[u8; 6]) {
    let head = u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let tail = u16::from_ne_bytes([mac[4], mac[5]]);
    let at = (&raw mut stats.src_mac).cast::<u8>();
    // SAFETY: `src_mac` lies at a 4-byte offset of an 8-aligned struct
    // (checked below), so both stores are aligned and inside the field.
    unsafe {
        at.cast::<u32>().write_volatile(head);
        at.add(4).cast::<u16>().write_volatile(tail);
    }
}
const _: () = assert!(core::mem::offset_of!(FlowStats, src_mac) % 4 == 0);
const _: () = assert!(core::mem::align_of::<FlowStats>() == 8);

/// Adds `n` to a counter other CPUs add to as well (a field of a shared
/// map value).
///
/// The BPF target has no `AtomicU64::fetch_add` (rustc gives it no atomic
/// read-modify-write), but the intrinsic lowers to the BPF atomic add
/// instruction.
#[inline(always)]
pub fn add_shared(counter: &mut u64, n: u64) {
    // SAFETY: a `&mut u64` is valid and 8-byte aligned.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n) };
}

#[inline(always)]
fn emit<K: TableKey>(kind: EventKind, decision: Decision, key: &K, stats: &FlowStats) {
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
        key: key.wide(),
        packets: stats.packets,
        bytes: stats.bytes,
        first_seen_ns: stats.first_seen_ns,
        last_seen_ns: stats.last_seen_ns,
    });
    entry.submit(wakeup_flags());
}

/// Bytes waiting in `EVENTS` past which a record wakes the reader.
const WAKEUP_WATERMARK: u64 = names::EVENTS_BYTES as u64 / 16;

/// How a record is submitted: without a wakeup while the ring holds at most
/// [`WAKEUP_WATERMARK`] bytes, with a forced one past it.
///
/// `bpf_ringbuf_query(BPF_RB_AVAIL_DATA)` (Linux ≥ 5.8, as the ring buffer
/// itself) reads the producer and consumer positions without a lock, so the
/// answer may be a record or two stale: harmless here, the next record asks
/// again. A forced wakeup only queues an irq_work, which is a no-op while
/// one is pending, so a ring that stays above the watermark while the reader
/// catches up costs one wakeup per irq_work run, not per record. The
/// default (flags 0) would wake the reader whenever it had caught up, that
/// is per record at low rates.
#[inline(always)]
fn wakeup_flags() -> u64 {
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) > WAKEUP_WATERMARK {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}
