//! Saying which rule decides a verdict, in words, for `netwatch explain`.

use std::net::IpAddr;

use netwatch_common::{
    endpoint::{policy_flags, port_rule_matches},
    packet::RulePort,
    reason::{Direction, DropReason, Verdict},
    verdict::Decision,
};

use super::{Cidr, InterfacePolicy};

/// A packet as one endpoint's policy judged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judged {
    pub direction: Direction,
    /// The other end: the destination of what the endpoint sends, the
    /// source of what it receives.
    pub remote: IpAddr,
    pub proto: u8,
    /// The remote end's port, which is what allow rules match: the
    /// destination port on egress, the source port on ingress.
    pub remote_port: Option<u16>,
    /// The endpoint's own port, which published ports match.
    pub local_port: Option<u16>,
    pub decision: Decision,
}

/// The rule or label that decided `packet.decision` on the endpoint of
/// `spec` (on network `network`).
pub fn verdict_rule(
    spec: &InterfacePolicy,
    network: &str,
    host_addrs: &[IpAddr],
    packet: &Judged,
) -> String {
    let policy = &spec.policy;
    if !policy.has(policy_flags::ENFORCE) {
        return format!(
            "network {network} is observed, not enforced (not internal, no netwatch.egress=deny label): everything passes"
        );
    }
    let remote = packet.remote;
    let subnets: Vec<String> = spec.networks.iter().map(ToString::to_string).collect();
    let subnets = subnets.join(", ");
    let is_gateway = match remote {
        IpAddr::V4(v4) => policy.has(policy_flags::HAS_IPV4) && v4.octets() == policy.gateway_v4,
        IpAddr::V6(v6) => policy.has(policy_flags::HAS_IPV6) && v6.octets() == policy.gateway_v6,
    };
    let allow_rule = spec.allow.iter().find(|rule| {
        rule.cidr.contains(&remote)
            && port_rule_matches(
                &rule.to_port_rule(),
                packet.proto,
                RulePort::from_option(packet.remote_port),
            )
    });
    let ingress = packet.direction == Direction::Ingress;
    let published = spec.published.iter().find(|rule| {
        policy.has(policy_flags::PUBLISHED)
            && rule.proto == packet.proto
            && Some(rule.port) == packet.local_port
    });
    match packet.decision.reason {
        DropReason::None => {
            if let Some(rule) = published.filter(|_| ingress && allow_rule.is_none()) {
                let admitted = if rule.from_anywhere {
                    "any client"
                } else {
                    "the host only (it is bound to loopback)"
                };
                format!(
                    "port {} is published and {network} admits inbound connections to its \
                     published ports (netwatch.ingress=published): {admitted}",
                    rule.port
                )
            } else if let Some(rule) = allow_rule {
                format!("allowed by the netwatch.allow rule {rule}")
            } else if is_gateway {
                format!("{remote} is the gateway of {network}, opened by netwatch.gateway=allow")
            } else if spec.networks.iter().any(|c| c.contains(&remote)) {
                format!("{remote} is inside {network} ({subnets})")
            } else {
                Verdict::Forwarded.name().to_string()
            }
        }
        // On a macvlan network the gateway is the LAN's router, not this
        // host: the same rule, another owner.
        DropReason::HostAccess if is_gateway && policy.has(policy_flags::MACVLAN) => format!(
            "{remote} is the gateway of {network}, the LAN's router; netwatch.gateway=allow on the network would open it"
        ),
        DropReason::HostAccess if ingress && is_gateway => format!(
            "the host (gateway {remote}) cannot open connections into {network}; netwatch.gateway=allow on the network would open it"
        ),
        DropReason::HostAccess if ingress => format!(
            "the host ({remote}) cannot open connections into {network}; a netwatch.allow rule would open it"
        ),
        DropReason::HostAccess if is_gateway => format!(
            "{remote} is the gateway of {network}, that is the host; netwatch.gateway=allow on the network would open it"
        ),
        DropReason::HostAccess => {
            let listed = if host_addrs.contains(&remote) {
                "an address of this host"
            } else {
                "the host"
            };
            format!(
                "{remote} is {listed}; host access is closed on {network} (a netwatch.allow rule would open it)"
            )
        }
        DropReason::NotInNetwork if ingress => format!(
            "{remote} is outside {network} ({subnets}): nothing from outside the network reaches its endpoints unless a netwatch.allow rule covers the sender"
        ),
        DropReason::NotInNetwork => format!(
            "{remote} is outside {network} ({subnets}) and no netwatch.allow rule covers it{}",
            match packet.remote_port {
                Some(p) => format!(" on port {p}"),
                None => String::new(),
            }
        ),
        DropReason::BroadcastMulticast => format!(
            "{remote} is broadcast or multicast; only ARP and neighbour discovery leave {network}"
        ),
        other => format!("dropped as {}", other.name()),
    }
}

/// A prefix the uplink shield protects, and the network it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedPrefix {
    pub cidr: Cidr,
    pub network: String,
    /// Docker's `internal: true` (else the network asked with
    /// `netwatch.egress=deny`).
    pub internal: bool,
}

impl ProtectedPrefix {
    fn owner(&self) -> String {
        if self.internal {
            format!("internal network {}", self.network)
        } else {
            format!("network {} (netwatch.egress=deny)", self.network)
        }
    }
}

/// What the uplink shield decides for an inbound packet from `src` to
/// `dst`: the kernel program's rule (netwatch-ebpf `uplink.rs`), written
/// again over the prefixes as listed so that `--from-kernel` compares two
/// implementations. The destination is looked at first.
pub fn uplink_decision(src: IpAddr, dst: IpAddr, protected: &[ProtectedPrefix]) -> Decision {
    let covers = |ip: &IpAddr| protected.iter().any(|p| p.cidr.contains(ip));
    Decision::from_reason(if covers(&dst) {
        DropReason::ProtectedPrefix
    } else if covers(&src) {
        DropReason::SpoofedSource
    } else {
        DropReason::None
    })
}

/// The protected prefix that decided the uplink shield's `decision`, in
/// words.
pub fn uplink_rule(
    src: IpAddr,
    dst: IpAddr,
    protected: &[ProtectedPrefix],
    decision: Decision,
) -> String {
    let covering = |ip: &IpAddr| protected.iter().find(|p| p.cidr.contains(ip));
    match (decision.reason, covering(&dst), covering(&src)) {
        (DropReason::ProtectedPrefix, Some(prefix), _) => format!(
            "{dst} is inside protected prefix {} of {}: the uplink shield drops it",
            prefix.cidr,
            prefix.owner()
        ),
        (DropReason::SpoofedSource, _, Some(prefix)) => format!(
            "{src} is inside protected prefix {} of {}, which lives only behind this host's bridge: the uplink shield drops it as spoofed",
            prefix.cidr,
            prefix.owner()
        ),
        (DropReason::None, None, None) if protected.is_empty() => {
            "the uplink shield protects no prefix (no network denies egress): it passes everything"
                .to_string()
        }
        (DropReason::None, None, None) => {
            let listed: Vec<String> = protected.iter().map(|p| p.cidr.to_string()).collect();
            format!(
                "neither {src} nor {dst} is inside a protected prefix ({}): the uplink shield passes it",
                listed.join(", ")
            )
        }
        (reason, _, _) => format!("the uplink shield decided {}", reason.name()),
    }
}

#[cfg(test)]
mod tests {
    use netwatch_common::{
        endpoint::EndpointPolicy,
        packet::{IPPROTO_TCP, IPPROTO_UDP},
    };

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn backend(flags: u32) -> InterfacePolicy {
        InterfacePolicy {
            ifindex: 22,
            policy: EndpointPolicy {
                flags: flags | policy_flags::HAS_IPV4,
                scope: 22,
                ipv4: [172, 21, 0, 3],
                gateway_v4: [172, 21, 0, 1],
                mac: [2, 0x42, 0xac, 0x15, 0, 3],
                ..EndpointPolicy::default()
            },
            networks: vec!["172.21.0.0/16".parse().unwrap()],
            published: Vec::new(),
            allow: vec!["198.51.100.0/24:443/tcp".parse().unwrap()],
        }
    }

    fn judged(direction: Direction, remote: &str, port: Option<u16>, reason: DropReason) -> Judged {
        Judged {
            direction,
            remote: ip(remote),
            proto: IPPROTO_TCP,
            remote_port: port,
            local_port: Some(80),
            decision: Decision::from_reason(reason),
        }
    }

    fn rule(packet: &Judged) -> String {
        verdict_rule(
            &backend(policy_flags::ENFORCE),
            "backend",
            &[ip("10.99.0.1")],
            packet,
        )
    }

    #[test]
    fn an_inbound_connection_to_a_published_port_names_the_label_that_admits_it() {
        let mut spec = backend(policy_flags::ENFORCE | policy_flags::PUBLISHED);
        spec.published = vec![crate::policy::PublishedRule {
            addr: ip("172.21.0.3"),
            proto: IPPROTO_TCP,
            port: 80,
            from_anywhere: true,
        }];
        let inbound_from = |spec: &InterfacePolicy, client: &str| {
            let packet = judged(Direction::Ingress, client, Some(40000), DropReason::None);
            verdict_rule(spec, "backend", &[], &packet)
        };
        assert_eq!(
            inbound_from(&spec, "203.0.113.7"),
            "port 80 is published and backend admits inbound connections to its published ports \
             (netwatch.ingress=published): any client"
        );
        spec.published[0].from_anywhere = false;
        let said = inbound_from(&spec, "172.21.0.1");
        assert!(
            said.ends_with("the host only (it is bound to loopback)"),
            "{said}"
        );
    }

    #[test]
    fn egress_rules_name_the_destination() {
        assert_eq!(
            rule(&judged(
                Direction::Egress,
                "203.0.113.7",
                Some(443),
                DropReason::NotInNetwork
            )),
            "203.0.113.7 is outside backend (172.21.0.0/16) and no netwatch.allow rule covers it on port 443"
        );
        assert_eq!(
            rule(&judged(
                Direction::Egress,
                "172.21.0.1",
                Some(53),
                DropReason::HostAccess
            )),
            "172.21.0.1 is the gateway of backend, that is the host; netwatch.gateway=allow on the network would open it"
        );
        assert_eq!(
            rule(&judged(
                Direction::Egress,
                "198.51.100.20",
                Some(443),
                DropReason::None
            )),
            "allowed by the netwatch.allow rule 198.51.100.0/24:443/tcp"
        );
    }

    #[test]
    fn ingress_rules_name_the_sender() {
        assert_eq!(
            rule(&judged(
                Direction::Ingress,
                "203.0.113.7",
                Some(40000),
                DropReason::NotInNetwork
            )),
            "203.0.113.7 is outside backend (172.21.0.0/16): nothing from outside the network reaches its endpoints unless a netwatch.allow rule covers the sender"
        );
        assert_eq!(
            rule(&judged(
                Direction::Ingress,
                "172.21.0.1",
                Some(40000),
                DropReason::HostAccess
            )),
            "the host (gateway 172.21.0.1) cannot open connections into backend; netwatch.gateway=allow on the network would open it"
        );
        assert_eq!(
            rule(&judged(
                Direction::Ingress,
                "10.99.0.1",
                Some(40000),
                DropReason::HostAccess
            )),
            "the host (10.99.0.1) cannot open connections into backend; a netwatch.allow rule would open it"
        );
        assert_eq!(
            rule(&judged(
                Direction::Ingress,
                "172.21.0.2",
                Some(40000),
                DropReason::None
            )),
            "172.21.0.2 is inside backend (172.21.0.0/16)"
        );
        // Allow rules match the sender's port on ingress: a connection from
        // an ephemeral port is not the allowed service answering.
        let mut from_service = judged(
            Direction::Ingress,
            "198.51.100.20",
            Some(443),
            DropReason::None,
        );
        assert!(rule(&from_service).contains("netwatch.allow rule"));
        from_service.proto = IPPROTO_UDP;
        assert_eq!(rule(&from_service), "forwarded");
    }

    #[test]
    fn observed_networks_pass_everything_both_ways() {
        let spec = backend(0);
        for direction in [Direction::Egress, Direction::Ingress] {
            let packet = judged(direction, "203.0.113.7", None, DropReason::None);
            assert!(verdict_rule(&spec, "front", &[], &packet).contains("observed, not enforced"));
        }
    }

    fn protected() -> Vec<ProtectedPrefix> {
        vec![
            ProtectedPrefix {
                cidr: "172.21.0.0/16".parse().unwrap(),
                network: "backend".into(),
                internal: true,
            },
            ProtectedPrefix {
                cidr: "172.22.0.0/16".parse().unwrap(),
                network: "locked".into(),
                internal: false,
            },
        ]
    }

    #[test]
    fn the_uplink_looks_at_the_destination_first() {
        let protected = protected();
        let cases = [
            ("203.0.113.7", "172.21.0.3", DropReason::ProtectedPrefix),
            ("172.22.0.9", "172.21.0.3", DropReason::ProtectedPrefix),
            ("172.22.0.9", "203.0.113.8", DropReason::SpoofedSource),
            ("203.0.113.7", "198.51.100.1", DropReason::None),
        ];
        for (src, dst, reason) in cases {
            assert_eq!(
                uplink_decision(ip(src), ip(dst), &protected),
                Decision::from_reason(reason),
                "{src} -> {dst}"
            );
        }
    }

    #[test]
    fn uplink_rules_name_the_prefix_and_its_network() {
        let protected = protected();
        let rule = |src: &str, dst: &str| {
            let (src, dst) = (ip(src), ip(dst));
            uplink_rule(src, dst, &protected, uplink_decision(src, dst, &protected))
        };
        assert_eq!(
            rule("203.0.113.7", "172.21.0.3"),
            "172.21.0.3 is inside protected prefix 172.21.0.0/16 of internal network backend: the uplink shield drops it"
        );
        assert_eq!(
            rule("172.22.0.9", "203.0.113.8"),
            "172.22.0.9 is inside protected prefix 172.22.0.0/16 of network locked (netwatch.egress=deny), which lives only behind this host's bridge: the uplink shield drops it as spoofed"
        );
        assert_eq!(
            rule("203.0.113.7", "198.51.100.1"),
            "neither 203.0.113.7 nor 198.51.100.1 is inside a protected prefix (172.21.0.0/16, 172.22.0.0/16): the uplink shield passes it"
        );
        let (src, dst) = (ip("203.0.113.7"), ip("172.20.0.2"));
        assert!(uplink_rule(src, dst, &[], uplink_decision(src, dst, &[])).contains("no prefix"));
    }
}
