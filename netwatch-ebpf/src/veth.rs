//! The shared body of the two veth programs: look up the endpoint, parse,
//! decide, count, account the flow, hand DNS datagrams to user space, and
//! turn the decision into a TC action.

use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use netwatch_common::{
    flow::{FlowKey, FlowKey4, family},
    packet::PacketSummary,
    reason::{Direction, Verdict},
    verdict::{Decision, decide, verdict_cacheable},
};

use crate::{
    counters, dns,
    flows::{self, Flow, TableKey, record},
    maps::{AUDIT_COUNTERS, ENDPOINTS, POLICY_GEN, VERDICT_COUNTERS},
    parse::parse_skb_per_cpu,
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
///
/// An established flow whose verdict is cached in its flow entry under the
/// current policy generation costs the parse and one flow-table lookup: no
/// `ENDPOINTS` lookup, no policy tables. That skips `ENDPOINTS` too, which
/// is safe because removing or changing an endpoint's policy is a policy
/// write, after which the agent raises the generation.
#[inline(always)]
pub fn handle(ctx: &TcContext, direction: Direction) -> i32 {
    let (ifindex, tag_stripped) = skb_facts(ctx);
    // Read before any policy table: a verdict decided from tables the agent
    // is rewriting is cached under the generation from before the write,
    // which the agent raises once the write is done.
    let generation = policy_generation();
    let Some(summary) = parse_skb_per_cpu(ctx, tag_stripped) else {
        return ACT_CONTINUE;
    };
    // One fast path per flow table (see `flows::TableKey`), each under its
    // own key.
    let fast_path = if summary.family == family::IPV4 {
        let key = FlowKey4::new(ifindex, direction, summary);
        cached_packet(ctx, &key, summary, generation)
    } else {
        let key = FlowKey::new(ifindex, direction, summary);
        cached_packet(ctx, &key, summary, generation)
    };
    // Learned the hard way: handing the looked-up entry on to the slow
    // path (to save its second lookup) kept the entry pointer live across
    // `decide`, and the verifier then walked every path of it once with a
    // null and once with a valid pointer, past its one million
    // instructions. The slow path looks a known flow up again instead (a
    // changed policy costs one more lookup); a new flow, which the fast
    // path found absent, goes straight to the insert: a flag, not a
    // pointer, crosses `decide`. Nor does a key: the slow path builds its
    // own after `decide`, so that one copy of `decide` serves both tables.
    let decision = match fast_path {
        FastPath::Decided(decision) => decision,
        fast_path => {
            let Some(policy) = ENDPOINTS.get_ptr(ifindex) else {
                return ACT_CONTINUE;
            };
            // SAFETY: the pointer comes from a successful lookup and is
            // valid for this run; the policy is read, never written, here.
            let policy = unsafe { &*policy };
            let decision = decide(
                direction,
                policy,
                summary,
                &KernelTables { endpoint: ifindex },
            );
            count(decision);
            let cache_under = if verdict_cacheable(policy, summary) {
                generation
            } else {
                0
            };
            let flow = FlowOf {
                endpoint: ifindex,
                direction,
                known_absent: fast_path == FastPath::NoFlow,
            };
            flow.record(summary, decision, ctx.len() as u64, cache_under);
            decision
        }
    };
    if dns::is_dns(summary) {
        dns::record(ctx, ifindex, direction, summary, decision);
    }
    action(decision)
}

/// The flow a packet is accounted to, before its key is built.
struct FlowOf {
    /// The `ENDPOINTS` key the flow's records carry.
    endpoint: u32,
    direction: Direction,
    /// See [`Flow::known_absent`].
    known_absent: bool,
}

impl FlowOf {
    /// [`record`] under the key of the table that keeps the packet's
    /// flow (each table's own copy of it).
    #[inline(always)]
    fn record(&self, summary: &PacketSummary, decision: Decision, bytes: u64, cache_under: u64) {
        if summary.family == family::IPV4 {
            let key = FlowKey4::new(self.endpoint, self.direction, summary);
            let flow = Flow {
                key: &key,
                known_absent: self.known_absent,
            };
            record(flow, summary, decision, bytes, cache_under);
        } else {
            let key = FlowKey::new(self.endpoint, self.direction, summary);
            let flow = Flow {
                key: &key,
                known_absent: self.known_absent,
            };
            record(flow, summary, decision, bytes, cache_under);
        }
    }
}

/// What the fast path found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FastPath {
    /// The flow's cached verdict stands; the packet is counted and
    /// accounted.
    Decided(Decision),
    /// The flow is known, its cached verdict does not stand for this
    /// packet.
    NotCached,
    /// No entry for the flow (yet).
    NoFlow,
}

/// The fast path: when the packet's flow entry holds a verdict that still
/// stands for it, counts and accounts the packet and returns the verdict.
#[inline(always)]
fn cached_packet<K: TableKey>(
    ctx: &TcContext,
    key: &K,
    summary: &PacketSummary,
    generation: u64,
) -> FastPath {
    let Some(stats) = key.lookup() else {
        return FastPath::NoFlow;
    };
    // SAFETY: a successful lookup's value, valid for this run.
    let stats = unsafe { &mut *stats };
    let Some(decision) = flows::cached(stats, generation, summary) else {
        return FastPath::NotCached;
    };
    count(decision);
    flows::record_cached(key, stats, summary, decision, ctx.len() as u64);
    FastPath::Decided(decision)
}

/// The current policy generation (0 before user space first sets it:
/// nothing is cached then).
#[inline(always)]
fn policy_generation() -> u64 {
    // SAFETY: an array lookup's value, valid for this run; volatile so that
    // it is read here, before the policy tables.
    POLICY_GEN
        .get_ptr(0)
        .map_or(0, |generation| unsafe { generation.read_volatile() })
}

/// Counts a decision in the per-reason counters.
#[inline(always)]
fn count(decision: Decision) {
    if decision.verdict == Verdict::Audited {
        counters::bump(&AUDIT_COUNTERS, decision.reason);
    } else {
        counters::bump(&VERDICT_COUNTERS, decision.reason);
    }
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
    count(decision);
    let flow = FlowOf {
        endpoint,
        direction,
        known_absent: false,
    };
    flow.record(summary, decision, ctx.len() as u64, 0);
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
