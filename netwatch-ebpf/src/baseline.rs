//! The benchmark's reference programs, loaded only so that `cargo xtask
//! bench datapath` can report netwatch's cost beside the cost of running
//! any program at all (`bench_baseline`, empty) and of the cheapest program
//! that does something per packet (`bench_counter`, one per-CPU counter
//! increment). Never attached.

use aya_ebpf::{macros::classifier, programs::TcContext};
use netwatch_ebpf::{maps::BENCH_COUNTER, veth::ACT_CONTINUE};

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
