//! An empty TC program, loaded only by `cargo xtask bench datapath` so that
//! the cost of netwatch's programs is reported beside the cost of running
//! any program at all. Never attached.

use aya_ebpf::{macros::classifier, programs::TcContext};
use netwatch_ebpf::veth::ACT_CONTINUE;

#[classifier]
pub fn bench_baseline(_ctx: TcContext) -> i32 {
    ACT_CONTINUE
}
