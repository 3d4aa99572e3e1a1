//! Traffic delivered to a container: the egress hook of its host-side veth.
//! Attach: TCX egress (kernel ≥ 6.6) or clsact egress.

use aya_ebpf::{macros::classifier, programs::TcContext};
use netwatch_common::reason::Direction;
use netwatch_ebpf::veth::handle;

// `#[classifier]` wraps this function in the program's entry point;
// inlined there on purpose: LLVM left the body as a BPF subprogram once the
// veth path had a copy per flow table, and the call cost an established
// flow's packet about 10 ns (bench-datapath, alternated runs).
#[classifier]
#[inline(always)]
pub fn to_container(ctx: TcContext) -> i32 {
    handle(&ctx, Direction::Ingress)
}
