//! Entry point on the `kfree_skb` BTF tracepoint: the kernel's own drops
//! of guarded containers' packets (Linux ≥ 5.17 for the drop reason).

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use netwatch_ebpf::kdrop::on_kfree_skb;

#[btf_tracepoint(function = "kfree_skb")]
pub fn kernel_drops(ctx: BtfTracePointContext) -> i32 {
    let _ = on_kfree_skb(&ctx);
    0
}
