//! The reference verdict model: what the datapath should decide for a frame.
//!
//! It shares only [`netwatch_common::verdict::decide`] with the kernel. It
//! parses with its own parser ([`parse`]) and answers the decision's prefix
//! lookups by scanning the endpoint specs as written, never the compiled
//! tables, so a disagreement with the datapath points at the kernel's
//! parsing, the policy compiler or the map encoding. The uplink shield,
//! which parses headers of its own, has its own model ([`uplink_verdict`]);
//! the macvlan programs, which find the judged endpoint by source MAC and
//! namespace, are modelled in [`macvlan`]; the kernel drop program (on
//! `kfree_skb`, not a verdict but a record of the kernel's own drops) in
//! [`kdrop`].

pub mod kdrop;
pub mod macvlan;
mod parse;
#[cfg(test)]
pub(crate) mod test_frames;
mod uplink;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Mutex, PoisonError},
};

use netwatch_common::{
    endpoint::{MacvlanPort, MacvlanPortKey, port_rule_matches},
    flow::{FlowKey, family},
    packet::{PacketSummary, RulePort},
    reason::{Direction, Verdict},
    verdict::{Decision, PolicyTables, decide},
};

pub use self::{parse::parse, uplink::uplink_verdict};
use super::spec::InterfacePolicy;

/// Decides frames from uncompiled endpoint specs.
///
/// Like the kernel's flow table, it remembers the verdict of the latest
/// packet of every flow it decided, because an answer from a published port
/// passes only when the inbound flow it answers was let in. Unlike the
/// kernel's, its memory never evicts.
#[derive(Debug, Default)]
pub struct ReferenceModel {
    endpoints: HashMap<u32, InterfacePolicy>,
    host_addrs: Vec<IpAddr>,
    /// `MACVLAN_PORTS` as the agent's plan writes it.
    macvlan_ports: HashMap<MacvlanPortKey, MacvlanPort>,
    flows: Mutex<HashMap<FlowKey, Verdict>>,
}

impl ReferenceModel {
    /// A model of the given endpoints (keyed by their ifindex; a later spec
    /// for the same ifindex replaces an earlier one) and host addresses.
    pub fn new(
        endpoints: impl IntoIterator<Item = InterfacePolicy>,
        host_addrs: impl IntoIterator<Item = IpAddr>,
    ) -> ReferenceModel {
        ReferenceModel {
            endpoints: endpoints
                .into_iter()
                .map(|spec| (spec.ifindex, spec))
                .collect(),
            host_addrs: host_addrs.into_iter().collect(),
            macvlan_ports: HashMap::new(),
            flows: Mutex::default(),
        }
    }

    /// This model with `ports` as the macvlan children it knows: which
    /// endpoint owns which MAC on which parent, and in which namespace.
    pub fn with_macvlan_ports(
        mut self,
        ports: impl IntoIterator<Item = (MacvlanPortKey, MacvlanPort)>,
    ) -> ReferenceModel {
        self.macvlan_ports = ports.into_iter().collect();
        self
    }

    /// The spec of the endpoint behind `ifindex`, if netwatch manages it.
    pub fn endpoint(&self, ifindex: u32) -> Option<&InterfacePolicy> {
        self.endpoints.get(&ifindex)
    }

    /// What the datapath should do with `frame` seen on the host veth
    /// `ifindex`; `None` when no endpoint sits behind it (not managed, so
    /// the datapath lets it pass untouched).
    pub fn decide(&self, ifindex: u32, direction: Direction, frame: &[u8]) -> Option<Decision> {
        self.judge(ifindex, direction, &parse(frame))
    }

    /// [`decide`] for endpoint `ifindex` on a parsed frame, remembering the
    /// flow's verdict as the kernel's flow table does.
    fn judge(
        &self,
        ifindex: u32,
        direction: Direction,
        summary: &PacketSummary,
    ) -> Option<Decision> {
        let spec = self.endpoints.get(&ifindex)?;
        let mut flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        let tables = SpecTables {
            spec,
            host_addrs: &self.host_addrs,
            flows: &flows,
        };
        let decision = decide(direction, &spec.policy, summary, &tables);
        flows.insert(FlowKey::new(ifindex, direction, summary), decision.verdict);
        Some(decision)
    }

    /// Remembers a verdict reached without [`decide`] (the macvlan
    /// programs' own drops), as the kernel's flow table does.
    fn remember(
        &self,
        ifindex: u32,
        direction: Direction,
        summary: &PacketSummary,
        verdict: Verdict,
    ) {
        self.flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(FlowKey::new(ifindex, direction, summary), verdict);
    }
}

impl Clone for ReferenceModel {
    fn clone(&self) -> ReferenceModel {
        ReferenceModel {
            endpoints: self.endpoints.clone(),
            host_addrs: self.host_addrs.clone(),
            macvlan_ports: self.macvlan_ports.clone(),
            flows: Mutex::new(
                self.flows
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            ),
        }
    }
}

/// Lookups by linear scan over one endpoint's rules as written.
struct SpecTables<'a> {
    spec: &'a InterfacePolicy,
    host_addrs: &'a [IpAddr],
    /// The latest verdict of every flow decided so far.
    flows: &'a HashMap<FlowKey, Verdict>,
}

/// The address a summary holds for `fam`; IPv4 sits in the first 4 bytes.
fn ip_of(fam: u8, addr: &[u8; 16]) -> Option<IpAddr> {
    match fam {
        family::IPV4 => {
            let [a, b, c, d, ..] = *addr;
            Some(IpAddr::from([a, b, c, d]))
        }
        family::IPV6 => Some(IpAddr::from(*addr)),
        _ => None,
    }
}

impl PolicyTables for SpecTables<'_> {
    fn in_network(&self, scope: u32, fam: u8, addr: &[u8; 16]) -> bool {
        scope == self.spec.policy.scope
            && ip_of(fam, addr).is_some_and(|ip| self.spec.networks.iter().any(|n| n.contains(&ip)))
    }

    fn is_host_address(&self, fam: u8, addr: &[u8; 16]) -> bool {
        ip_of(fam, addr).is_some_and(|ip| self.host_addrs.contains(&ip))
    }

    fn allow_listed(
        &self,
        scope: u32,
        fam: u8,
        addr: &[u8; 16],
        proto: u8,
        port: RulePort,
    ) -> bool {
        scope == self.spec.policy.scope
            && ip_of(fam, addr).is_some_and(|ip| {
                self.spec.allow.iter().any(|rule| {
                    rule.cidr.contains(&ip) && port_rule_matches(&rule.to_port_rule(), proto, port)
                })
            })
    }

    fn published(&self, fam: u8, addr: &[u8; 16], proto: u8, port: u16) -> Option<u32> {
        let addr = ip_of(fam, addr)?;
        self.spec
            .published
            .iter()
            .filter(|rule| rule.addr == addr && rule.proto == proto && rule.port == port)
            .map(|rule| rule.access())
            .reduce(|a, b| a | b)
    }

    fn answers_forwarded_inbound(&self, pkt: &PacketSummary) -> bool {
        let inbound = FlowKey::new(self.spec.ifindex, Direction::Egress, pkt).answered();
        self.flows.get(&inbound) == Some(&Verdict::Forwarded)
    }
}

#[cfg(test)]
mod tests {
    use netwatch_common::{
        endpoint::{EndpointPolicy, policy_flags},
        packet::{ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_TCP, IPPROTO_UDP},
        reason::{DropReason, Verdict},
    };

    use super::{test_frames::*, *};

    const IFINDEX: u32 = 42;
    const OWN_V4: [u8; 4] = [172, 20, 0, 2];
    const GW_V4: [u8; 4] = [172, 20, 0, 1];
    const PEER_V4: [u8; 4] = [172, 20, 0, 3];
    const HOST_V4: [u8; 4] = [192, 168, 1, 10];
    const OUTSIDE_V4: [u8; 4] = [8, 8, 8, 8];
    const DNS_V4: [u8; 4] = [1, 1, 1, 1];

    fn own_v6() -> [u8; 16] {
        v6("fd00:20::2")
    }

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<std::net::Ipv6Addr>()
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .octets()
    }

    fn model(flags: u32) -> ReferenceModel {
        let spec = InterfacePolicy {
            ifindex: IFINDEX,
            policy: EndpointPolicy {
                flags,
                scope: 3,
                ipv4: OWN_V4,
                gateway_v4: GW_V4,
                ipv6: own_v6(),
                gateway_v6: v6("fd00:20::1"),
                mac: MAC_A,
                _pad: [0; 2],
                parent: 0,
            },
            networks: vec![
                "172.20.0.0/16".parse().expect("cidr"),
                "fd00:20::/64".parse().expect("cidr"),
            ],
            published: Vec::new(),
            allow: vec!["1.1.1.1:53/udp".parse().expect("rule")],
        };
        ReferenceModel::new([spec], [IpAddr::from(HOST_V4), IpAddr::from(GW_V4)])
    }

    fn enforced() -> ReferenceModel {
        model(policy_flags::ENFORCE | policy_flags::HAS_IPV4 | policy_flags::HAS_IPV6)
    }

    fn udp_v4(mac: [u8; 6], src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
        eth(
            mac,
            ETHERTYPE_IPV4,
            &ipv4(IPPROTO_UDP, src, dst, &udp(40000, dport, b"q")),
        )
    }

    fn reason(model: &ReferenceModel, direction: Direction, frame: &[u8]) -> DropReason {
        match model.decide(IFINDEX, direction, frame) {
            Some(d) => {
                assert_eq!(d.verdict == Verdict::Dropped, d.reason != DropReason::None);
                d.reason
            }
            None => panic!("endpoint {IFINDEX} not managed"),
        }
    }

    #[test]
    fn unmanaged_interfaces_have_no_decision() {
        assert_eq!(enforced().decide(7, Direction::Egress, &[]), None);
    }

    #[test]
    fn observe_only_endpoints_forward_everything() {
        let m = model(policy_flags::HAS_IPV4);
        let frame = udp_v4(MAC_B, OUTSIDE_V4, OUTSIDE_V4, 1);
        assert_eq!(
            m.decide(IFINDEX, Direction::Egress, &frame),
            Some(Decision::FORWARD)
        );
        assert_eq!(
            m.decide(IFINDEX, Direction::Egress, &[1, 2, 3]),
            Some(Decision::FORWARD)
        );
    }

    #[test]
    fn internal_network_egress() {
        let m = enforced();
        let egress = |frame: &[u8]| reason(&m, Direction::Egress, frame);
        assert_eq!(
            egress(&udp_v4(MAC_A, OWN_V4, PEER_V4, 80)),
            DropReason::None
        );
        assert_eq!(
            egress(&udp_v4(MAC_A, OWN_V4, OUTSIDE_V4, 80)),
            DropReason::NotInNetwork
        );
        assert_eq!(egress(&udp_v4(MAC_A, OWN_V4, DNS_V4, 53)), DropReason::None);
        assert_eq!(
            egress(&udp_v4(MAC_A, OWN_V4, DNS_V4, 54)),
            DropReason::NotInNetwork
        );
        let dns_over_tcp = eth(
            MAC_A,
            ETHERTYPE_IPV4,
            &ipv4(IPPROTO_TCP, OWN_V4, DNS_V4, &tcp(40000, 53, 0x02, &[])),
        );
        assert_eq!(egress(&dns_over_tcp), DropReason::NotInNetwork);
        assert_eq!(
            egress(&udp_v4(MAC_A, OWN_V4, GW_V4, 53)),
            DropReason::HostAccess
        );
        assert_eq!(
            egress(&udp_v4(MAC_A, OWN_V4, HOST_V4, 22)),
            DropReason::HostAccess
        );
        assert_eq!(
            egress(&udp_v4(MAC_A, PEER_V4, PEER_V4, 80)),
            DropReason::SpoofedSource
        );
        assert_eq!(
            egress(&udp_v4(MAC_B, OWN_V4, PEER_V4, 80)),
            DropReason::SpoofedMac
        );
        assert_eq!(
            egress(&udp_v4(MAC_A, OWN_V4, [255; 4], 67)),
            DropReason::BroadcastMulticast
        );
        assert_eq!(
            egress(&eth(MAC_A, ETHERTYPE_ARP, &arp(MAC_A, OWN_V4, GW_V4))),
            DropReason::None
        );
        assert_eq!(
            egress(&eth(MAC_A, ETHERTYPE_ARP, &arp(MAC_A, PEER_V4, GW_V4))),
            DropReason::SpoofedSource
        );
        let v6_peer = eth(
            MAC_A,
            ETHERTYPE_IPV6,
            &ipv6(IPPROTO_UDP, own_v6(), v6("fd00:20::3"), &udp(1, 2, &[])),
        );
        assert_eq!(egress(&v6_peer), DropReason::None);
        let v6_out = eth(
            MAC_A,
            ETHERTYPE_IPV6,
            &ipv6(IPPROTO_UDP, own_v6(), v6("2001:db8::1"), &udp(1, 2, &[])),
        );
        assert_eq!(egress(&v6_out), DropReason::NotInNetwork);
        assert_eq!(
            egress(&udp_v4(MAC_A, OWN_V4, PEER_V4, 80)[..40]),
            DropReason::InvalidHeader
        );
        assert_eq!(
            egress(&eth(MAC_A, 0x88cc, &[0; 46])),
            DropReason::UnsupportedProtocol
        );
    }

    #[test]
    fn internal_network_ingress() {
        let m = enforced();
        let ingress = |frame: &[u8]| reason(&m, Direction::Ingress, frame);
        assert_eq!(
            ingress(&udp_v4(MAC_B, PEER_V4, OWN_V4, 80)),
            DropReason::None
        );
        assert_eq!(
            ingress(&udp_v4(MAC_B, OUTSIDE_V4, OWN_V4, 80)),
            DropReason::NotInNetwork
        );
        assert_eq!(
            ingress(&udp_v4(MAC_B, GW_V4, OWN_V4, 80)),
            DropReason::HostAccess
        );
        // The allow-list matches the remote side's port: a reply from 1.1.1.1:53.
        let reply = eth(
            MAC_B,
            ETHERTYPE_IPV4,
            &ipv4(IPPROTO_UDP, DNS_V4, OWN_V4, &udp(53, 40000, b"a")),
        );
        assert_eq!(ingress(&reply), DropReason::None);
    }

    #[test]
    fn gateway_access_opt_in() {
        let m =
            model(policy_flags::ENFORCE | policy_flags::HAS_IPV4 | policy_flags::GATEWAY_ACCESS);
        assert_eq!(
            reason(&m, Direction::Egress, &udp_v4(MAC_A, OWN_V4, GW_V4, 53)),
            DropReason::None
        );
        assert_eq!(
            reason(&m, Direction::Egress, &udp_v4(MAC_A, OWN_V4, HOST_V4, 53)),
            DropReason::HostAccess
        );
    }

    #[test]
    fn lookups_stay_in_their_scope_and_family() {
        let m = enforced();
        let Some(spec) = m.endpoint(IFINDEX) else {
            panic!("endpoint missing");
        };
        let tables = SpecTables {
            spec,
            host_addrs: &m.host_addrs,
            flows: &HashMap::new(),
        };
        let peer = {
            let mut a = [0; 16];
            a[..4].copy_from_slice(&PEER_V4);
            a
        };
        assert!(tables.in_network(3, family::IPV4, &peer));
        assert!(!tables.in_network(4, family::IPV4, &peer));
        assert!(!tables.in_network(3, family::NONE, &peer));
        assert!(!tables.in_network(3, family::IPV6, &peer));
        let dns = {
            let mut a = [0; 16];
            a[..4].copy_from_slice(&DNS_V4);
            a
        };
        assert!(tables.allow_listed(3, family::IPV4, &dns, IPPROTO_UDP, RulePort::of(53)));
        assert!(!tables.allow_listed(4, family::IPV4, &dns, IPPROTO_UDP, RulePort::of(53)));
        assert!(!tables.allow_listed(3, family::IPV4, &dns, IPPROTO_UDP, RulePort::NONE));
    }
}
