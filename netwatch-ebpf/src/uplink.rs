//! The uplink shield: XDP on the host's uplink interface(s) drops inbound
//! packets aimed at protected prefixes (internal networks' subnets) before
//! the stack routes them, and packets claiming to come from such a prefix
//! (which only exist behind this host's bridges). Everything else passes:
//! the uplink carries the host's own traffic, which netwatch does not judge.
//! Dropped packets are parsed in full and accounted like a veth drop (flow
//! table entry keyed by the uplink's ifindex, direction ingress, and a
//! rate-limited drop record), so the agent can name the container they were
//! aimed at; passing packets cost only the two prefix lookups.
//! Reads headers straight from packet memory (no `xdp.frags`: the whole
//! frame lies between `data` and `data_end`).

use core::mem::MaybeUninit;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use netwatch_common::{
    flow::{FlowKey, family},
    packet::{ETH_HLEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN},
    reason::{Direction, DropReason},
    verdict::Decision,
};
use netwatch_ebpf::{
    counters,
    flows::{Flow, record},
    maps::{PROTECTED_V4, PROTECTED_V6, UPLINK_COUNTERS},
    packet::{Linear, Packet},
    parse::parse,
};

use aya_ebpf::maps::lpm_trie::Key;

#[xdp]
pub fn uplink(ctx: XdpContext) -> u32 {
    let frame = Linear::of_xdp(&ctx);
    let reason = classify(&frame);
    counters::bump(&UPLINK_COUNTERS, reason);
    if reason == DropReason::None {
        return xdp_action::XDP_PASS;
    }
    let mut summary = MaybeUninit::uninit();
    let summary = parse(&frame, false, &mut summary);
    // SAFETY: ctx.ctx is the program's context pointer, valid for the run.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let key = FlowKey::new(ifindex, Direction::Ingress, summary);
    let flow = Flow {
        key: &key,
        known_absent: false,
    };
    record(
        flow,
        summary,
        Decision::from_reason(reason),
        frame.frame_len() as u64,
        0,
    );
    xdp_action::XDP_DROP
}

#[inline(always)]
fn classify(ctx: &Linear) -> DropReason {
    let Some((fam, src, dst)) = addresses(ctx) else {
        return DropReason::None;
    };
    if is_protected(fam, &dst) {
        DropReason::ProtectedPrefix
    } else if is_protected(fam, &src) {
        DropReason::SpoofedSource
    } else {
        DropReason::None
    }
}

#[inline(always)]
fn is_protected(fam: u8, addr: &[u8; 16]) -> bool {
    if fam == family::IPV4 {
        let key = Key::new(32, [addr[0], addr[1], addr[2], addr[3]]);
        PROTECTED_V4.get(key).is_some()
    } else {
        PROTECTED_V6.get(Key::new(128, *addr)).is_some()
    }
}

/// Source and destination of an IPv4/IPv6 packet behind at most one VLAN
/// tag; `None` for anything else (which passes).
#[inline(always)]
fn addresses(ctx: &Linear) -> Option<(u8, [u8; 16], [u8; 16])> {
    let eth = ctx.read::<[u8; ETH_HLEN]>(0)?;
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let mut off = ETH_HLEN;
    if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        let tag = ctx.read::<[u8; 4]>(off)?;
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        off += 4;
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = ctx.read::<[u8; 20]>(off)?;
            src[..4].copy_from_slice(&ip[12..16]);
            dst[..4].copy_from_slice(&ip[16..20]);
            Some((family::IPV4, src, dst))
        }
        ETHERTYPE_IPV6 => {
            let ip = ctx.read::<[u8; 40]>(off)?;
            src.copy_from_slice(&ip[8..24]);
            dst.copy_from_slice(&ip[24..40]);
            Some((family::IPV6, src, dst))
        }
        _ => None,
    }
}
