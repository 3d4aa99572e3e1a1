//! Per-CPU counters: no atomics needed, user space sums the CPUs.

use aya_ebpf::maps::PerCpuArray;
use netwatch_common::reason::DropReason;

use crate::maps::{FLOWS_INSERTED, RINGBUF_LOST};

#[inline(always)]
pub fn bump(map: &PerCpuArray<u64>, reason: DropReason) {
    if let Some(slot) = map.get_ptr_mut(reason as u32) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU
        // array, so it is valid and only this CPU writes it.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub fn ringbuf_lost() {
    bump_one(&RINGBUF_LOST);
}

#[inline(always)]
pub fn flow_inserted() {
    bump_one(&FLOWS_INSERTED);
}

#[inline(always)]
fn bump_one(map: &PerCpuArray<u64>) {
    if let Some(slot) = map.get_ptr_mut(0) {
        // SAFETY: as above.
        unsafe { *slot += 1 };
    }
}
