//! The benchmark's reference programs, in an object of their own
//! (`netwatch-bench`) that only `cargo xtask bench datapath` loads: an empty
//! program (`bench_baseline`, the cost of running any program at all) and
//! the cheapest program that does something per packet (`bench_counter`,
//! one per-CPU counter increment). They are measured beside netwatch's
//! programs but are no part of them: the shipped object (`main.rs`) does
//! not hold them, so `agent`, `check` and a session never load or pin them.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{classifier, map},
    maps::PerCpuArray,
    programs::TcContext,
};
use netwatch_ebpf::veth::ACT_CONTINUE;

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

netwatch_ebpf::license_section!();

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
