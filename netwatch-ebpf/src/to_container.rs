//! Traffic delivered to a container: the egress hook of its host-side veth.
//! Attach: TCX egress (kernel ≥ 6.6) or clsact egress.

use aya_ebpf::{macros::classifier, programs::TcContext};
use netwatch_common::reason::Direction;
use netwatch_ebpf::veth::handle;

#[classifier]
pub fn to_container(ctx: TcContext) -> i32 {
    handle(&ctx, Direction::Ingress)
}
