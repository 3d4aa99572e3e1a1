//! macvlan networks: a child has no host-side veth, so netwatch judges its
//! traffic where nothing can go around it (measured on Linux 6.18, see
//! docs/drivers.md):
//!
//! - everything children send towards the LAN crosses the parent's egress
//!   hook (`macvlan_parent`), also frames sent with `PACKET_QDISC_BYPASS`,
//!   which skip the child's own egress hook, and frames with any source
//!   MAC (macvlan does not check it on transmit). There the source MAC
//!   names the child, and the namespace of the sending socket says whether
//!   the frame really is that child's;
//! - everything delivered to a child crosses the child's ingress hook
//!   (`macvlan_child`), including what bridge-mode siblings send it
//!   directly (sibling broadcasts never touch the parent). There the child
//!   judges what it receives, and a frame whose source MAC is a sibling's is
//!   also judged as that sibling's egress.
//!
//! Both programs call `bpf_get_netns_cookie` on a TC skb, which kernels
//! before 6.14 refuse in TC programs: user space loads them apart from the
//! bridge programs, and on such kernels macvlan networks stay unguarded,
//! named as such.

use core::mem::MaybeUninit;

use aya_ebpf::{helpers::bpf_get_netns_cookie, programs::TcContext};
use netwatch_common::{
    endpoint::{EndpointPolicy, MacvlanPort, MacvlanPortKey, policy_flags},
    packet::PacketSummary,
    reason::{Direction, DropReason, Verdict},
    verdict::{Decision, decide},
};

use crate::{
    maps::{CONFIG, ENDPOINTS, MACVLAN_PORTS},
    parse::parse_skb,
    tables::KernelTables,
    veth::{ACT_CONTINUE, account, action, skb_facts},
};

/// The child that owns `mac` on `parent`, if netwatch knows one.
#[inline(always)]
fn port(parent: u32, mac: [u8; 6]) -> Option<MacvlanPort> {
    let key = MacvlanPortKey {
        parent,
        mac,
        _pad: [0; 2],
    };
    // SAFETY: a successful lookup's value is valid for this run; it is
    // copied out at once.
    MACVLAN_PORTS.get_ptr(key).map(|p| unsafe { *p })
}

fn policy(endpoint: u32) -> Option<&'static EndpointPolicy> {
    // SAFETY: as for every ENDPOINTS lookup: valid for this run, only read.
    ENDPOINTS.get_ptr(endpoint).map(|p| unsafe { &*p })
}

/// The namespace cookie of the socket that sent the frame, and the host's.
#[inline(always)]
fn cookies(ctx: &TcContext) -> (u64, u64) {
    // SAFETY: the helper takes the program's own context pointer.
    let sender = unsafe { bpf_get_netns_cookie(ctx.skb.skb as *mut _) };
    let host = CONFIG.get(0).copied().unwrap_or_default().host_netns_cookie;
    (sender, host)
}

/// Whether a frame carrying `port`'s MAC was sent from another container's
/// namespace than `port`'s: a forged source MAC. Frames without a socket
/// (forwarded, or ARP the kernel sends) report the host's namespace and
/// cannot be told apart; their MAC is the kernel's own choice.
#[inline(always)]
fn forged(sender: u64, host: u64, port: &MacvlanPort) -> bool {
    host != 0 && sender != host && port.netns_cookie != 0 && sender != port.netns_cookie
}

/// The decision on what `endpoint` (owning `port`) sends.
#[inline(always)]
fn judge_sender(
    ctx: &TcContext,
    summary: &PacketSummary,
    port: &MacvlanPort,
    cookies: (u64, u64),
) -> Decision {
    let Some(sender) = policy(port.endpoint) else {
        return Decision::FORWARD;
    };
    let decision = if sender.has(policy_flags::ENFORCE) && forged(cookies.0, cookies.1, port) {
        Decision::under(sender, DropReason::SpoofedMac)
    } else {
        decide(
            Direction::Egress,
            sender,
            summary,
            &KernelTables {
                endpoint: port.endpoint,
            },
        )
    };
    account(ctx, port.endpoint, Direction::Egress, summary, decision)
}

/// TCX egress of a macvlan parent: what children send towards the LAN.
#[inline(always)]
pub fn parent_egress(ctx: &TcContext) -> i32 {
    let (parent, tag_stripped) = skb_facts(ctx);
    let Some(parent_policy) = policy(parent) else {
        return ACT_CONTINUE;
    };
    let mut summary = MaybeUninit::uninit();
    let summary = parse_skb(ctx, tag_stripped, &mut summary);
    let cookies = cookies(ctx);
    if let Some(port) = port(parent, summary.src_mac) {
        return action(judge_sender(ctx, summary, &port, cookies));
    }
    // No child has this MAC: the host's own traffic on its interface, or a
    // container hiding behind a MAC netwatch does not know (a forged one, a
    // macvlan port it made itself, a child not attached yet). On a parent
    // whose network denies egress, a container's frame is dropped.
    let (sender, host) = cookies;
    if host == 0 || sender == host || !parent_policy.has(policy_flags::ENFORCE) {
        return ACT_CONTINUE;
    }
    let decision = Decision::under(parent_policy, DropReason::SpoofedMac);
    action(account(ctx, parent, Direction::Egress, summary, decision))
}

/// TCX ingress of a macvlan child (in its container's namespace): what the
/// child receives, and, when a sibling sent it, what the sibling sends.
#[inline(always)]
pub fn child_ingress(ctx: &TcContext) -> i32 {
    let (ifindex, tag_stripped) = skb_facts(ctx);
    let Some(own) = policy(ifindex) else {
        return ACT_CONTINUE;
    };
    let mut summary = MaybeUninit::uninit();
    let summary = parse_skb(ctx, tag_stripped, &mut summary);
    if own.has(policy_flags::MACVLAN)
        && let Some(port) = port(own.parent, summary.src_mac)
        && port.endpoint != ifindex
    {
        let sent = judge_sender(ctx, summary, &port, cookies(ctx));
        if sent.verdict == Verdict::Dropped {
            // An audited sender's frame goes on to be judged as what the
            // child receives, like a forwarded one.
            return action(sent);
        }
    }
    let decision = decide(
        Direction::Ingress,
        own,
        summary,
        &KernelTables { endpoint: ifindex },
    );
    action(account(ctx, ifindex, Direction::Ingress, summary, decision))
}
