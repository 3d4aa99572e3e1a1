//! What the children of a macvlan network send towards the LAN: the egress
//! hook of the network's parent device on the host.
//! Attach: TCX egress (kernel ≥ 6.6); loads on kernels whose TC programs
//! may call `bpf_get_netns_cookie` (6.14).

use aya_ebpf::{macros::classifier, programs::TcContext};
use netwatch_ebpf::macvlan::parent_egress;

#[classifier]
pub fn macvlan_parent(ctx: TcContext) -> i32 {
    parent_egress(&ctx)
}
