//! The shared body of the two veth programs: look up the endpoint, parse,
//! decide, count, account the flow, hand DNS datagrams to user space, and
//! turn the decision into a TC action.

use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use netwatch_common::{
    flow::FlowKey,
    packet::PacketSummary,
    reason::{Direction, Verdict},
    verdict::{Decision, decide},
};

use crate::{
    counters, dns,
    flows::record,
    maps::{AUDIT_COUNTERS, ENDPOINTS, VERDICT_COUNTERS},
    parse::parse,
    tables::KernelTables,
};

/// Returned for packets netwatch lets through: `TCX_NEXT` (-1) hands the
/// packet to the next program on the hook, so netwatch composes with other
/// TCX users; with a legacy clsact attachment the same value is
/// `TC_ACT_UNSPEC`, which also lets the packet continue.
pub const ACT_CONTINUE: i32 = -1;
/// Returned for dropped packets.
pub const ACT_DROP: i32 = TC_ACT_SHOT;

/// Handles one packet on a container's host-side veth. This is the one place
/// where a decision becomes a TC action.
#[inline(always)]
pub fn handle(ctx: &TcContext, direction: Direction) -> i32 {
    let (ifindex, tag_stripped) = skb_facts(ctx);
    let Some(policy) = ENDPOINTS.get_ptr(ifindex) else {
        return ACT_CONTINUE;
    };
    // SAFETY: the pointer comes from a successful lookup and is valid for
    // this run; the policy is read, never written, here.
    let policy = unsafe { &*policy };
    let mut summary = PacketSummary::default();
    parse(ctx, tag_stripped, &mut summary);
    let decision = account(
        ctx,
        ifindex,
        direction,
        &summary,
        decide(
            direction,
            policy,
            &summary,
            &KernelTables { endpoint: ifindex },
        ),
    );
    if dns::is_dns(&summary) {
        dns::record(ctx, ifindex, direction, &summary, decision);
    }
    action(decision)
}

/// The skb's interface and whether the stack already took a VLAN tag off.
#[inline(always)]
pub fn skb_facts(ctx: &TcContext) -> (u32, bool) {
    // SAFETY: ctx.skb.skb is the program's context pointer, valid for the run.
    unsafe {
        let skb = &*ctx.skb.skb;
        (skb.ifindex, skb.vlan_present != 0)
    }
}

/// Counts a decision and accounts its flow to endpoint `endpoint` (the
/// `ENDPOINTS` key the flow's records carry). Returns the decision.
#[inline(always)]
pub fn account(
    ctx: &TcContext,
    endpoint: u32,
    direction: Direction,
    summary: &PacketSummary,
    decision: Decision,
) -> Decision {
    if decision.verdict == Verdict::Audited {
        counters::bump(&AUDIT_COUNTERS, decision.reason);
    } else {
        counters::bump(&VERDICT_COUNTERS, decision.reason);
    }
    let key = FlowKey::new(endpoint, direction, summary);
    record(&key, summary, decision, ctx.len() as u64);
    decision
}

/// The TC action for a decision.
#[inline(always)]
pub fn action(decision: Decision) -> i32 {
    match decision.verdict {
        Verdict::Forwarded | Verdict::Audited => ACT_CONTINUE,
        Verdict::Dropped => ACT_DROP,
    }
}
