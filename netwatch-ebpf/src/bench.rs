//! The benchmarks' reference programs, in an object of their own
//! (`netwatch-bench`) that only the benchmarks load:
//! - `bench_baseline`, empty: the cost of running any program at all;
//! - `bench_counter`, one per-CPU counter increment: the cheapest program
//!   that does something per packet;
//! - `bench_headers`: netwatch's header parse and the counter;
//! - `bench_flow`: that parse and per-flow counters in an LRU table;
//! - `bench_kfree`, on the `kfree_skb` BTF tracepoint (Linux ≥ 5.5): a
//!   counter on the kernel drop program's hook.
//!
//! The TC ones need what netwatch's veth programs need (TCX, Linux 6.6, to
//! be attached as they are). They are measured beside netwatch's programs
//! but are no part of them: the shipped object (`main.rs`) does not hold
//! them, so `agent`, `check` and a session never load or pin them.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::{btf_tracepoint, classifier, map},
    maps::{LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, TcContext},
};
use core::mem::MaybeUninit;

use netwatch_common::{
    flow::{FlowKey, FlowKey4, FlowStats, family},
    names,
    reason::Direction,
};
use netwatch_ebpf::{
    bytes::zeroed_by_words,
    flows::add_shared,
    parse::parse_skb_per_cpu,
    veth::{ACT_CONTINUE, skb_facts},
};

/// Packets `bench_counter` saw, one entry per CPU.
#[map]
static BENCH_COUNTER: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[classifier]
pub fn bench_baseline(_ctx: TcContext) -> i32 {
    ACT_CONTINUE
}

#[classifier]
pub fn bench_counter(_ctx: TcContext) -> i32 {
    if let Some(slot) = BENCH_COUNTER.get_ptr_mut(0) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU
        // array, so it is valid and only this CPU writes it.
        unsafe { *slot += 1 };
    }
    ACT_CONTINUE
}

/// The floor for any program that judges a packet by its headers: the
/// veth programs' parse (skb facts, the per-CPU summary, the Ethernet, IP
/// and transport headers) and the counter, without flow table or policy.
/// Counting only parsed packets keeps the parse from being optimized away.
#[classifier]
pub fn bench_headers(ctx: TcContext) -> i32 {
    let (_ifindex, tag_stripped) = skb_facts(&ctx);
    if let Some(summary) = parse_skb_per_cpu(&ctx, tag_stripped)
        && summary.has_ports
        && let Some(slot) = BENCH_COUNTER.get_ptr_mut(0)
    {
        // SAFETY: as in `bench_counter`.
        unsafe { *slot += 1 };
    }
    ACT_CONTINUE
}

const FLOW_VALUE_WORDS: usize = core::mem::size_of::<FlowStats>() / 8;

/// `bench_flow`'s counts of one flow: a value the size of netwatch's
/// `FlowStats` (packets and bytes, the rest zero).
type Counts = [u64; FLOW_VALUE_WORDS];

/// `bench_flow`'s flow tables, as netwatch keeps its flows: IPv4 flows
/// under `FlowKey4` (`FLOWS4`), the others under `FlowKey` (`FLOWS`), with
/// a value of netwatch's size and as many entries as netwatch's. The
/// value's size matters to a new flow: the table element is header, key
/// and value, and a 16-byte value made it two cache lines where
/// netwatch's is three (about 60 ns more for a new flow's insert into cold
/// memory, measured side by side).
#[map]
static BENCH_FLOWS4: LruHashMap<FlowKey4, Counts> =
    LruHashMap::with_max_entries(names::FLOWS_MAX_ENTRIES, 0);
#[map]
static BENCH_FLOWS: LruHashMap<FlowKey, Counts> =
    LruHashMap::with_max_entries(names::FLOWS_MAX_ENTRIES, 0);

/// The floor for any program that keeps netwatch's per-flow state:
/// `bench_headers` plus one lookup in an LRU table under netwatch's flow
/// key and two atomic adds to the flow's counters (an insert for a new
/// flow). No policy, no clock, no records.
#[classifier]
pub fn bench_flow(ctx: TcContext) -> i32 {
    let (ifindex, tag_stripped) = skb_facts(&ctx);
    let Some(summary) = parse_skb_per_cpu(&ctx, tag_stripped) else {
        return ACT_CONTINUE;
    };
    if !summary.has_ports {
        return ACT_CONTINUE;
    }
    // One direction for both hooks: a reply's key differs by its order of
    // addresses and ports anyway.
    let bytes = u64::from(ctx.len());
    if summary.family == family::IPV4 {
        let key = FlowKey4::new(ifindex, Direction::Egress, summary);
        count_flow(&BENCH_FLOWS4, &key, bytes);
    } else {
        let key = FlowKey::new(ifindex, Direction::Egress, summary);
        count_flow(&BENCH_FLOWS, &key, bytes);
    }
    if let Some(slot) = BENCH_COUNTER.get_ptr_mut(0) {
        // SAFETY: as in `bench_counter`.
        unsafe { *slot += 1 };
    }
    ACT_CONTINUE
}

/// Counts a packet of `bytes` into flow `key` of `table`, inserting it
/// when it is new.
#[inline(always)]
fn count_flow<K>(table: &LruHashMap<K, Counts>, key: &K, bytes: u64) {
    match table.get_ptr_mut(key) {
        Some(counts) => {
            // SAFETY: a successful lookup's value, valid for this run.
            let counts = unsafe { &mut *counts };
            add_shared(&mut counts[0], 1);
            add_shared(&mut counts[1], bytes);
        }
        None => {
            // Zeroed in place: an array literal, or one returned by value,
            // became a call to a byte-loop `memset` subprogram, which
            // netwatch's programs do not make.
            let mut counts = MaybeUninit::uninit();
            // SAFETY: an array of integers is valid as all zero bits.
            let counts = unsafe { zeroed_by_words::<Counts>(&mut counts) };
            counts[0] = 1;
            counts[1] = bytes;
            let _ = table.insert(key, counts, u64::from(BPF_NOEXIST));
        }
    }
}

/// The floor on `kernel_drops`' hook: one counter increment per
/// `kfree_skb` of the machine, the tracepoint's own cost included.
#[btf_tracepoint(function = "kfree_skb")]
pub fn bench_kfree(_ctx: BtfTracePointContext) -> i32 {
    if let Some(slot) = BENCH_COUNTER.get_ptr_mut(0) {
        // SAFETY: as in `bench_counter`.
        unsafe { *slot += 1 };
    }
    0
}

netwatch_ebpf::license_section!();

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
