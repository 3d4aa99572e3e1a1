//! What a macvlan child receives (from the LAN or from a sibling): the
//! ingress hook of the child's interface, inside its container's namespace.
//! Attach: TCX ingress (kernel ≥ 6.6); loads on kernels whose TC programs
//! may call `bpf_get_netns_cookie` (6.14).

use aya_ebpf::{macros::classifier, programs::TcContext};
use netwatch_ebpf::macvlan::child_ingress;

#[classifier]
pub fn macvlan_child(ctx: TcContext) -> i32 {
    child_ingress(&ctx)
}
