//! Traffic sent by a container: the ingress hook of its host-side veth.
//! Attach: TCX ingress (kernel ≥ 6.6) or clsact ingress.

use aya_ebpf::{macros::classifier, programs::TcContext};
use netwatch_common::reason::Direction;
use netwatch_ebpf::veth::handle;

#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    handle(&ctx, Direction::Egress)
}
