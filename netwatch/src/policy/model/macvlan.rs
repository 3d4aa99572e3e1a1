//! The macvlan programs' reference: what `macvlan_parent` (TCX egress of a
//! macvlan parent) and `macvlan_child` (TCX ingress of a child, in its
//! container's namespace) should do with a frame, written from their
//! contract (netwatch-ebpf/src/macvlan.rs, docs/drivers.md):
//!
//! - a frame's source MAC names the child that sent it, through the ports
//!   (`MACVLAN_PORTS`: parent and MAC → endpoint and its namespace
//!   cookie); a child whose endpoint has no policy is not judged;
//! - an enforcing child's frame is a forged MAC (`spoofed-mac`) when the
//!   sending socket's namespace is known to be neither the host's nor the
//!   child's own; otherwise it is judged by [`decide`] as the child's
//!   egress;
//! - on the parent, a frame whose MAC no child owns is the host's own
//!   traffic unless the sender's namespace is known not to be the host's:
//!   then an enforcing parent judges it `spoofed-mac`;
//! - on a child, a frame from a sibling (another port on the child's
//!   parent, under a policy with `MACVLAN`) is first judged as that
//!   sibling's egress, since bridge-mode siblings bypass the parent; if that
//!   drops it, that is the answer, else (forwarded or audited) the child
//!   judges it as what it receives.
//!
//! Every judgement is counted once and remembered as its flow's verdict.
//! The namespace cookies are inputs: the kernel reads them from the frame's
//! socket and from `CONFIG`.
//!
//! [`decide`]: netwatch_common::verdict::decide

use netwatch_common::{
    endpoint::{MacvlanPort, MacvlanPortKey, policy_flags},
    packet::PacketSummary,
    reason::{Direction, DropReason, Verdict},
    verdict::Decision,
};

use super::{ReferenceModel, parse};

/// The two network namespace cookies a macvlan program compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cookies {
    /// The namespace of the socket that sent the frame (the host's for a
    /// frame without one).
    pub sender: u64,
    /// The host's namespace as `CONFIG` holds it; 0: unknown.
    pub host: u64,
}

/// What a macvlan program should do with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookVerdict {
    /// The decision the returned action follows ([`Decision::FORWARD`]
    /// for a frame the program lets pass unjudged).
    pub decision: Decision,
    /// Every decision the program counts for the frame, in order: none for
    /// an unjudged frame; a sibling's egress and then the child's ingress
    /// when the sibling's judgement let it on.
    pub counted: Vec<Decision>,
}

impl HookVerdict {
    fn unjudged() -> HookVerdict {
        HookVerdict {
            decision: Decision::FORWARD,
            counted: Vec::new(),
        }
    }

    /// Whether the program should drop the frame.
    pub fn dropped(&self) -> bool {
        self.decision.verdict == Verdict::Dropped
    }
}

impl ReferenceModel {
    /// What `macvlan_parent` on parent device `parent` should do with
    /// `frame`.
    pub fn macvlan_parent(&self, parent: u32, frame: &[u8], cookies: Cookies) -> HookVerdict {
        let Some(parent_spec) = self.endpoints.get(&parent) else {
            return HookVerdict::unjudged();
        };
        let summary = parse(frame);
        let mut counted = Vec::new();
        if let Some(port) = self.port(parent, summary.src_mac) {
            let decision = self.sent_by(port, &summary, cookies, &mut counted);
            return HookVerdict { decision, counted };
        }
        let from_a_container = cookies.host != 0 && cookies.sender != cookies.host;
        if !from_a_container || !parent_spec.policy.has(policy_flags::ENFORCE) {
            return HookVerdict::unjudged();
        }
        let decision = Decision::under(&parent_spec.policy, DropReason::SpoofedMac);
        self.remember(parent, Direction::Egress, &summary, decision.verdict);
        counted.push(decision);
        HookVerdict { decision, counted }
    }

    /// What `macvlan_child` on child `ifindex` should do with `frame`.
    pub fn macvlan_child(&self, ifindex: u32, frame: &[u8], cookies: Cookies) -> HookVerdict {
        let Some(own) = self.endpoints.get(&ifindex) else {
            return HookVerdict::unjudged();
        };
        let summary = parse(frame);
        let mut counted = Vec::new();
        if own.policy.has(policy_flags::MACVLAN)
            && let Some(port) = self.port(own.policy.parent, summary.src_mac)
            && port.endpoint != ifindex
        {
            let sent = self.sent_by(port, &summary, cookies, &mut counted);
            if sent.verdict == Verdict::Dropped {
                return HookVerdict {
                    decision: sent,
                    counted,
                };
            }
        }
        let decision = self
            .judge(ifindex, Direction::Ingress, &summary)
            .unwrap_or(Decision::FORWARD);
        counted.push(decision);
        HookVerdict { decision, counted }
    }

    fn port(&self, parent: u32, mac: [u8; 6]) -> Option<MacvlanPort> {
        self.macvlan_ports
            .get(&MacvlanPortKey::new(parent, mac))
            .copied()
    }

    /// The decision on `summary` as sent by `port`'s endpoint, counted in
    /// `counted` when that endpoint has a policy.
    fn sent_by(
        &self,
        port: MacvlanPort,
        summary: &PacketSummary,
        cookies: Cookies,
        counted: &mut Vec<Decision>,
    ) -> Decision {
        let Some(sender) = self.endpoints.get(&port.endpoint) else {
            return Decision::FORWARD;
        };
        // Known to come from another namespace than the host's and the
        // child's own: some other container wrote the child's MAC.
        let forged = cookies.host != 0
            && cookies.sender != cookies.host
            && port.netns_cookie != 0
            && cookies.sender != port.netns_cookie;
        let decision = if sender.policy.has(policy_flags::ENFORCE) && forged {
            let decision = Decision::under(&sender.policy, DropReason::SpoofedMac);
            self.remember(port.endpoint, Direction::Egress, summary, decision.verdict);
            decision
        } else {
            self.judge(port.endpoint, Direction::Egress, summary)
                .unwrap_or(Decision::FORWARD)
        };
        counted.push(decision);
        decision
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use netwatch_common::{
        endpoint::EndpointPolicy,
        packet::{ETHERTYPE_IPV4, IPPROTO_UDP},
    };

    use super::{super::test_frames::*, *};
    use crate::policy::InterfacePolicy;

    const PARENT: u32 = 60;
    const CHILD: u32 = 61;
    const SIBLING: u32 = 62;
    const CHILD_NETNS: u64 = 1001;
    const SIBLING_NETNS: u64 = 1002;
    const HOST_NETNS: u64 = 1;
    const CHILD_V4: [u8; 4] = [172, 20, 0, 2];
    const SIBLING_V4: [u8; 4] = [172, 20, 0, 3];

    fn spec(ifindex: u32, flags: u32, mac: [u8; 6], ipv4: [u8; 4]) -> InterfacePolicy {
        InterfacePolicy {
            ifindex,
            policy: EndpointPolicy {
                flags: flags | policy_flags::HAS_IPV4,
                scope: 3,
                ipv4,
                mac,
                parent: PARENT,
                ..EndpointPolicy::default()
            },
            networks: vec!["172.20.0.0/16".parse().expect("cidr")],
            published: Vec::new(),
            allow: Vec::new(),
        }
    }

    fn port(mac: [u8; 6], endpoint: u32, netns_cookie: u64) -> (MacvlanPortKey, MacvlanPort) {
        (
            MacvlanPortKey::new(PARENT, mac),
            MacvlanPort::new(endpoint, netns_cookie),
        )
    }

    /// An enforcing parent, child (MAC_A) and sibling (MAC_B, `sibling`'s
    /// flags) on it.
    fn model(sibling: u32) -> ReferenceModel {
        let enforce = policy_flags::ENFORCE | policy_flags::MACVLAN;
        ReferenceModel::new(
            [
                spec(
                    PARENT,
                    policy_flags::ENFORCE | policy_flags::NETWORK_WIDE,
                    [0; 6],
                    [0; 4],
                ),
                spec(CHILD, enforce, MAC_A, CHILD_V4),
                spec(SIBLING, sibling | policy_flags::MACVLAN, MAC_B, SIBLING_V4),
            ],
            [IpAddr::from([192, 168, 1, 10])],
        )
        .with_macvlan_ports([
            port(MAC_A, CHILD, CHILD_NETNS),
            port(MAC_B, SIBLING, SIBLING_NETNS),
        ])
    }

    fn udp_v4(mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        eth(
            mac,
            ETHERTYPE_IPV4,
            &ipv4(IPPROTO_UDP, src, dst, &udp(40000, 53, b"q")),
        )
    }

    fn reasons(verdict: &HookVerdict) -> Vec<(Verdict, DropReason)> {
        verdict
            .counted
            .iter()
            .map(|d| (d.verdict, d.reason))
            .collect()
    }

    const FROM_CHILD: Cookies = Cookies {
        sender: CHILD_NETNS,
        host: HOST_NETNS,
    };
    const FROM_SIBLING: Cookies = Cookies {
        sender: SIBLING_NETNS,
        host: HOST_NETNS,
    };

    #[test]
    fn a_childs_frame_on_the_parent_is_its_egress_unless_another_namespace_sent_it() {
        let m = model(policy_flags::ENFORCE);
        let to_peer = udp_v4(MAC_A, CHILD_V4, SIBLING_V4);
        let own = m.macvlan_parent(PARENT, &to_peer, FROM_CHILD);
        assert_eq!(reasons(&own), [(Verdict::Forwarded, DropReason::None)]);
        let forged = m.macvlan_parent(PARENT, &to_peer, FROM_SIBLING);
        assert!(forged.dropped());
        assert_eq!(
            reasons(&forged),
            [(Verdict::Dropped, DropReason::SpoofedMac)]
        );
        for unknown in [
            Cookies {
                sender: HOST_NETNS,
                host: HOST_NETNS,
            },
            Cookies {
                sender: SIBLING_NETNS,
                host: 0,
            },
        ] {
            let verdict = m.macvlan_parent(PARENT, &to_peer, unknown);
            assert_eq!(verdict.decision, Decision::FORWARD, "{unknown:?}");
        }
    }

    #[test]
    fn an_unknown_mac_on_the_parent_is_dropped_only_when_a_container_sent_it() {
        let m = model(policy_flags::ENFORCE);
        let unknown = udp_v4([2, 0, 0, 0, 0, 0x77], CHILD_V4, SIBLING_V4);
        let verdict = m.macvlan_parent(PARENT, &unknown, FROM_SIBLING);
        assert_eq!(
            reasons(&verdict),
            [(Verdict::Dropped, DropReason::SpoofedMac)]
        );
        let host = Cookies {
            sender: HOST_NETNS,
            host: HOST_NETNS,
        };
        assert_eq!(
            m.macvlan_parent(PARENT, &unknown, host),
            HookVerdict::unjudged()
        );
    }

    #[test]
    fn a_siblings_frame_is_judged_as_its_egress_before_the_childs_ingress() {
        let to_child = udp_v4(MAC_B, SIBLING_V4, CHILD_V4);
        let spoofing = udp_v4(MAC_B, [172, 20, 0, 9], CHILD_V4);
        let enforced = model(policy_flags::ENFORCE);
        let passed = enforced.macvlan_child(CHILD, &to_child, FROM_SIBLING);
        assert_eq!(passed.counted.len(), 2, "egress, then ingress");
        let dropped = enforced.macvlan_child(CHILD, &spoofing, FROM_SIBLING);
        assert_eq!(
            reasons(&dropped),
            [(Verdict::Dropped, DropReason::SpoofedSource)]
        );
        let audited = model(policy_flags::ENFORCE | policy_flags::AUDIT);
        let verdict = audited.macvlan_child(CHILD, &spoofing, FROM_SIBLING);
        assert_eq!(
            reasons(&verdict),
            [
                (Verdict::Audited, DropReason::SpoofedSource),
                (Verdict::Forwarded, DropReason::None)
            ],
            "an audited sender's frame goes on to the child's own judgement"
        );
    }
}
