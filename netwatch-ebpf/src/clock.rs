//! The established flows' clock: CLOCK_MONOTONIC as this CPU first read
//! it in the current jiffy.
//!
//! Learned from a profile: on this AMD EPYC host (SRSO "Safe RET"), every
//! helper call the kernel does not inline pays for its returns, and
//! `bpf_ktime_get_coarse_ns` (two calls deep: `ktime_get_coarse_ts64`)
//! took 11% of an established IPv4 packet's program samples and 1.7% of
//! all in its own body. The verifier inlines `bpf_jiffies64` on 64-bit
//! kernels as one load of `jiffies_64` (Linux ≥ 5.5), so a packet reads
//! the precise clock only when the jiffy it runs in is not the one this
//! CPU cached it in, at most once per tick per CPU (250 times a second at
//! HZ=250), and otherwise reads the cache.
//!
//! The time it gives lags the precise clock by at most what the coarse
//! clock lags it (see `netwatch_common::flow::COARSE_LAG_NS`): jiffies and
//! the coarse clock move together, at the timekeeping CPU's tick, and the
//! cached time was read after the jiffy began.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_ns};
use netwatch_common::flow::report_needs_precise_clock;

use crate::maps::TICK_CLOCK;

/// One CPU's cache: the jiffy it was filled in and what `bpf_ktime_get_ns`
/// read then. All zero at load: a jiffy of 0 (five minutes after boot,
/// where `INITIAL_JIFFIES` wraps) would read a time of 0 for one tick,
/// which the flows' `last_seen_ns` (never moving back) absorbs.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TickClock {
    pub jiffy: u64,
    pub ns: u64,
}

/// CLOCK_MONOTONIC at tick resolution, see the module docs.
///
/// A TC program runs to its end on one CPU before that CPU runs another
/// (as for `PACKET_SUMMARY`), so no other TC program tears the two fields
/// of this CPU's entry while it is read. `kernel_drops` may (see kdrop.rs):
/// a torn entry gives a time off by up to a tick, which the callers'
/// precise-clock check and never-moving-back `last_seen_ns` absorb.
#[inline(always)]
pub fn tick_now() -> u64 {
    // SAFETY: bpf_jiffies64 has no preconditions (Linux ≥ 5.5).
    let jiffy = unsafe { bpf_jiffies64() };
    let Some(cache) = TICK_CLOCK.get_ptr_mut(0) else {
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        return unsafe { bpf_ktime_get_ns() };
    };
    // SAFETY: this CPU's entry of a per-CPU array, valid for the run and
    // written by no one else meanwhile (see above).
    let cache = unsafe { &mut *cache };
    if cache.jiffy != jiffy {
        // SAFETY: as above.
        cache.ns = unsafe { bpf_ktime_get_ns() };
        cache.jiffy = jiffy;
    }
    cache.ns
}

/// The time to stamp a packet of an entry (a flow's, a kernel drop key's)
/// with, and to judge its report interval by: `tick` (what [`tick_now`]
/// read), or the precise clock when by `tick` or the entry's own latest
/// stamp `last_seen_ns` the interval `interval_ns` since `last_report_ns`
/// may have run out ([`report_needs_precise_clock`]); never before
/// `last_seen_ns`.
///
/// The tick is the caller's to read: in the flows' `update` it is read
/// before the TCP flags and the config, and reading it here instead (after
/// them) took `macvlan_child`'s verifier walk from 250,036 to 278,543
/// instructions.
#[inline(always)]
pub fn entry_now(tick: u64, last_seen_ns: u64, last_report_ns: u64, interval_ns: u64) -> u64 {
    let now = if report_needs_precise_clock(tick, last_seen_ns, last_report_ns, interval_ns) {
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        unsafe { bpf_ktime_get_ns() }
    } else {
        tick
    };
    now.max(last_seen_ns)
}
