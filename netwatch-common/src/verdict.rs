//! The verdict function: packet summary + endpoint policy → verdict, reason.
//!
//! The kernel programs and the user-space reference model both call
//! [`decide`]; they differ only in how they parse ([`crate::packet`]) and how
//! they look up prefixes ([`PolicyTables`]: BPF maps in the kernel, the
//! uncompiled rule lists in the model). So the differential test checks what
//! kernel code most often gets wrong — bounded parsing and map encoding —
//! while the policy itself exists once.

use crate::{
    endpoint::{EndpointPolicy, policy_flags, published_access},
    flow::family,
    packet::{NdKind, PacketClass, PacketSummary, RulePort},
    reason::{Direction, DropReason, Verdict},
};

/// Address lookups the verdict needs. Addresses are 16 bytes; IPv4 uses the
/// first 4.
pub trait PolicyTables {
    /// Whether `addr` lies in one of the endpoint's network prefixes.
    fn in_network(&self, scope: u32, family: u8, addr: &[u8; 16]) -> bool;
    /// Whether `addr` is one of the host's own addresses.
    fn is_host_address(&self, family: u8, addr: &[u8; 16]) -> bool;
    /// Whether an allow-list entry of the scope covers `addr` with a port
    /// rule matching `proto` and `port`.
    fn allow_listed(
        &self,
        scope: u32,
        family: u8,
        addr: &[u8; 16],
        proto: u8,
        port: RulePort,
    ) -> bool;
    /// The published port `addr`:`port`/`proto` (a container's side) of the
    /// judging policy: its [`published_access`] bits, `None` when no
    /// container behind the policy publishes it. Asked only under
    /// [`policy_flags::PUBLISHED`].
    fn published(&self, family: u8, addr: &[u8; 16], proto: u8, port: u16) -> Option<u32>;
    /// Whether the flow `pkt` (sent by the endpoint) answers was let in:
    /// the latest packet of the inbound flow with the same addresses and
    /// ports the other way round was forwarded. The kernel asks its flow
    /// table; a flow the table has evicted answers `false`, which drops,
    /// never opens.
    fn answers_forwarded_inbound(&self, pkt: &PacketSummary) -> bool;
}

/// Outcome for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: DropReason,
}

impl Decision {
    pub const FORWARD: Decision = Decision {
        verdict: Verdict::Forwarded,
        reason: DropReason::None,
    };

    /// The decision `policy` makes for a packet with `reason`: forwarded
    /// for `DropReason::None`; for any other reason dropped, or audited
    /// under [`policy_flags::AUDIT`].
    #[inline(always)]
    pub const fn under(policy: &EndpointPolicy, reason: DropReason) -> Decision {
        match reason {
            DropReason::None => Decision::FORWARD,
            reason if policy.has(policy_flags::AUDIT) => Decision {
                verdict: Verdict::Audited,
                reason,
            },
            reason => Decision {
                verdict: Verdict::Dropped,
                reason,
            },
        }
    }

    /// Forwarded for `DropReason::None`, dropped for any other reason.
    #[inline(always)]
    pub const fn from_reason(reason: DropReason) -> Decision {
        match reason {
            DropReason::None => Decision::FORWARD,
            reason => Decision {
                verdict: Verdict::Dropped,
                reason,
            },
        }
    }
}

/// Whether [`decide`]'s answer for `pkt` depends only on the policy tables
/// and on what a flow entry holds of the packet: its flow key (endpoint,
/// direction, family, protocol, ethertype, ports, addresses) and its source
/// MAC. Then the kernel may cache the answer in the flow entry for the
/// flow's later packets, under the policy generation it was decided in.
///
/// Not for: packets that are not fully parsed IP with a TCP/UDP header
/// (the class, the ARP sender MAC, the neighbour-discovery target and a
/// non-first fragment's missing ports are not in the key); and policies
/// with [`policy_flags::PUBLISHED`], whose answers from a published port
/// depend on another flow's entry, which changes or is evicted without any
/// policy write.
#[inline(always)]
pub fn verdict_cacheable(policy: &EndpointPolicy, pkt: &PacketSummary) -> bool {
    !policy.has(policy_flags::PUBLISHED) && packet_cacheable(pkt)
}

/// The packet's half of [`verdict_cacheable`].
#[inline(always)]
pub fn packet_cacheable(pkt: &PacketSummary) -> bool {
    pkt.class == PacketClass::Ip && pkt.has_ports && pkt.nd == NdKind::None
}

/// Decides one packet. `direction` is relative to the container.
///
/// An endpoint without `ENFORCE` is observed only: everything is forwarded.
#[inline(always)]
pub fn decide<T: PolicyTables>(
    direction: Direction,
    policy: &EndpointPolicy,
    pkt: &PacketSummary,
    tables: &T,
) -> Decision {
    if !policy.has(policy_flags::ENFORCE) {
        return Decision::FORWARD;
    }
    Decision::under(policy, drop_reason(direction, policy, pkt, tables))
}

#[inline(always)]
fn drop_reason<T: PolicyTables>(
    direction: Direction,
    policy: &EndpointPolicy,
    pkt: &PacketSummary,
    tables: &T,
) -> DropReason {
    match pkt.class {
        PacketClass::Invalid => return DropReason::InvalidHeader,
        PacketClass::Unsupported => return DropReason::UnsupportedProtocol,
        PacketClass::ExtHeaderLimit => return DropReason::ExtensionHeaderLimit,
        PacketClass::Arp | PacketClass::Ip => {}
    }
    let egress = direction == Direction::Egress;
    // A network-wide policy (on a bridge) cannot know each container's MAC;
    // it checks that sources lie inside the network instead.
    let network_wide = policy.has(policy_flags::NETWORK_WIDE);
    if egress && !network_wide && pkt.src_mac != policy.mac {
        return DropReason::SpoofedMac;
    }
    if pkt.class == PacketClass::Arp {
        if egress {
            if !network_wide && pkt.arp_sender_mac != policy.mac {
                return DropReason::SpoofedMac;
            }
            if v4(&pkt.src) != [0; 4] && !is_own_source(policy, family::IPV4, &pkt.src, tables) {
                return DropReason::SpoofedSource;
            }
        }
        return DropReason::None;
    }

    // Neighbour discovery and MLD: link-local control traffic that IPv6 needs
    // to work at all; only what the container says about itself is checked.
    if pkt.nd != NdKind::None {
        if egress {
            if pkt.src != [0; 16] && !is_own_source(policy, family::IPV6, &pkt.src, tables) {
                return DropReason::SpoofedSource;
            }
            if pkt.nd == NdKind::Advert
                && !is_own_source(policy, family::IPV6, &pkt.nd_target, tables)
            {
                return DropReason::SpoofedSource;
            }
        }
        return DropReason::None;
    }

    if egress && !is_own_source(policy, pkt.family, &pkt.src, tables) {
        return DropReason::SpoofedSource;
    }

    let (remote, port) = if egress {
        (&pkt.dst, pkt.rule_port(false))
    } else {
        (&pkt.src, pkt.rule_port(true))
    };
    if policy.has(policy_flags::PUBLISHED) && through_published_port(egress, policy, pkt, tables) {
        return DropReason::None;
    }
    // An allow-list entry beats host access; being in the network and being
    // allow-listed both forward, so the cheaper network lookup goes first.
    let allow_listed = || tables.allow_listed(policy.scope, pkt.family, remote, pkt.proto, port);
    if is_gateway(policy, pkt.family, remote) {
        return if policy.has(policy_flags::GATEWAY_ACCESS) || allow_listed() {
            DropReason::None
        } else {
            DropReason::HostAccess
        };
    }
    if tables.is_host_address(pkt.family, remote) {
        return if allow_listed() {
            DropReason::None
        } else {
            DropReason::HostAccess
        };
    }
    if tables.in_network(policy.scope, pkt.family, remote) || allow_listed() {
        return DropReason::None;
    }
    if is_broadcast_or_multicast(pkt.family, remote) {
        return DropReason::BroadcastMulticast;
    }
    DropReason::NotInNetwork
}

/// Whether `pkt` belongs to a connection to a published port behind the
/// policy (`netwatch.ingress=published`): inbound to the container's
/// address and port, from a client its binding admits; or sent from that
/// address and port as the answer to an inbound flow that was let in. A
/// container cannot open a connection of its own from a published port:
/// nothing came in for it to answer.
#[inline(always)]
fn through_published_port<T: PolicyTables>(
    egress: bool,
    policy: &EndpointPolicy,
    pkt: &PacketSummary,
    tables: &T,
) -> bool {
    if egress {
        let Some(own_port) = pkt.port(true) else {
            return false;
        };
        return tables
            .published(pkt.family, &pkt.src, pkt.proto, own_port)
            .is_some()
            && tables.answers_forwarded_inbound(pkt);
    }
    let Some(own_port) = pkt.port(false) else {
        return false;
    };
    let Some(access) = tables.published(pkt.family, &pkt.dst, pkt.proto, own_port) else {
        return false;
    };
    access & published_access::FROM_ANYWHERE != 0
        || is_gateway(policy, pkt.family, &pkt.src)
        || tables.is_host_address(pkt.family, &pkt.src)
}

#[inline(always)]
fn v4(addr: &[u8; 16]) -> [u8; 4] {
    [addr[0], addr[1], addr[2], addr[3]]
}

/// IPv6 link-local unicast, fe80::/10.
#[inline(always)]
pub fn is_link_local_v6(addr: &[u8; 16]) -> bool {
    addr[0] == 0xfe && addr[1] & 0xc0 == 0x80
}

/// Whether `addr` may be the source of what the endpoint sends: its own
/// address — or, for a network-wide policy, any address of the network — and
/// for IPv6 also any link-local address. The kernel picks the link-local
/// address of a container's interface, so netwatch cannot know it in
/// advance; link-local sources are accepted, and their destinations still
/// meet the usual rules.
#[inline(always)]
fn is_own_source<T: PolicyTables>(
    policy: &EndpointPolicy,
    fam: u8,
    addr: &[u8; 16],
    tables: &T,
) -> bool {
    if fam == family::IPV6 && is_link_local_v6(addr) {
        return true;
    }
    if policy.has(policy_flags::NETWORK_WIDE) {
        return tables.in_network(policy.scope, fam, addr);
    }
    match fam {
        family::IPV4 => policy.has(policy_flags::HAS_IPV4) && v4(addr) == policy.ipv4,
        family::IPV6 => policy.has(policy_flags::HAS_IPV6) && *addr == policy.ipv6,
        _ => false,
    }
}

#[inline(always)]
fn is_gateway(policy: &EndpointPolicy, fam: u8, addr: &[u8; 16]) -> bool {
    match fam {
        family::IPV4 => {
            policy.has(policy_flags::HAS_IPV4)
                && policy.gateway_v4 != [0; 4]
                && v4(addr) == policy.gateway_v4
        }
        family::IPV6 => {
            policy.has(policy_flags::HAS_IPV6)
                && policy.gateway_v6 != [0; 16]
                && *addr == policy.gateway_v6
        }
        _ => false,
    }
}

/// IPv4 limited broadcast or multicast (224.0.0.0/4); IPv6 multicast (ff00::/8).
#[inline(always)]
pub fn is_broadcast_or_multicast(fam: u8, addr: &[u8; 16]) -> bool {
    match fam {
        family::IPV4 => v4(addr) == [255; 4] || addr[0] & 0xf0 == 0xe0,
        family::IPV6 => addr[0] == 0xff,
        _ => false,
    }
}

/// `decide()` rule by rule, against hand-made tables; the differential test
/// compares the kernel with the model over many packets, these pin down
/// what the model itself says.
#[cfg(test)]
mod tests {
    use super::*;

    const WEB_MAC: [u8; 6] = [2, 0x42, 172, 20, 0, 2];
    const SCOPE: u32 = 7;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..4].copy_from_slice(&a);
        out
    }

    /// The network 172.20.0.0/16 and fd00:20::/64, host 10.0.0.5, and an
    /// allow-list entry 203.0.113.7:443/tcp.
    struct Tables;

    impl PolicyTables for Tables {
        fn in_network(&self, scope: u32, family: u8, addr: &[u8; 16]) -> bool {
            scope == SCOPE
                && match family {
                    family::IPV4 => addr[0] == 172 && addr[1] == 20,
                    family::IPV6 => addr[..8] == [0xfd, 0, 0, 0x20, 0, 0, 0, 0],
                    _ => false,
                }
        }
        fn is_host_address(&self, family: u8, addr: &[u8; 16]) -> bool {
            family == family::IPV4 && addr[..4] == [10, 0, 0, 5]
        }
        fn allow_listed(
            &self,
            scope: u32,
            family: u8,
            addr: &[u8; 16],
            proto: u8,
            port: RulePort,
        ) -> bool {
            scope == SCOPE
                && family == family::IPV4
                && addr[..4] == [203, 0, 113, 7]
                && proto == 6
                && port.is(443)
        }
        /// web's 80/tcp published to anyone, its 8443/tcp on loopback only.
        fn published(&self, family: u8, addr: &[u8; 16], proto: u8, port: u16) -> Option<u32> {
            if family != family::IPV4 || addr[..4] != [172, 20, 0, 2] {
                return None;
            }
            match (proto, port) {
                (6, 80) => Some(published_access::FROM_ANYWHERE),
                (6, 8443) => Some(0),
                _ => None,
            }
        }
        /// Only 198.51.100.1 has connected in.
        fn answers_forwarded_inbound(&self, pkt: &PacketSummary) -> bool {
            pkt.dst[..4] == [198, 51, 100, 1]
        }
    }

    fn policy(flags: u32) -> EndpointPolicy {
        EndpointPolicy {
            flags: flags | policy_flags::HAS_IPV4 | policy_flags::HAS_IPV6,
            scope: SCOPE,
            ipv4: [172, 20, 0, 2],
            gateway_v4: [172, 20, 0, 1],
            ipv6: [0xfd, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            mac: WEB_MAC,
            ..EndpointPolicy::default()
        }
    }

    fn enforced() -> EndpointPolicy {
        policy(policy_flags::ENFORCE)
    }

    /// A TCP packet from web (172.20.0.2) to `dst:port`.
    fn tcp_from_web(dst: [u8; 4], port: u16) -> PacketSummary {
        PacketSummary {
            class: PacketClass::Ip,
            src_mac: WEB_MAC,
            family: family::IPV4,
            proto: 6,
            src: v4([172, 20, 0, 2]),
            dst: v4(dst),
            src_port: 40000,
            dst_port: port,
            has_ports: true,
            ..PacketSummary::default()
        }
    }

    fn reason(direction: Direction, policy: &EndpointPolicy, pkt: &PacketSummary) -> DropReason {
        decide(direction, policy, pkt, &Tables).reason
    }

    /// Each packet's reason under `policy`, with what the case is.
    fn expect(policy: &EndpointPolicy, cases: &[(&str, Direction, PacketSummary, DropReason)]) {
        for (what, direction, pkt, expected) in cases {
            assert_eq!(reason(*direction, policy, pkt), *expected, "{what}");
        }
    }

    /// `pkt` as received by web from `src` (MAC `mac`), source port `port`.
    fn received(mut pkt: PacketSummary, src: [u8; 4], mac: [u8; 6], port: u16) -> PacketSummary {
        pkt.src = v4(src);
        pkt.src_mac = mac;
        pkt.src_port = port;
        pkt.dst = v4([172, 20, 0, 2]);
        pkt
    }

    use Direction::{Egress, Ingress};
    use DropReason as R;

    #[test]
    fn an_observed_endpoint_forwards_even_what_enforcement_would_drop() {
        let mut spoofed = tcp_from_web([8, 8, 4, 4], 53);
        spoofed.src_mac = [2, 0, 0, 0, 0, 9];
        let decision = decide(Egress, &policy(0), &spoofed, &Tables);
        assert_eq!(decision, Decision::FORWARD);
        let decision = decide(Egress, &enforced(), &spoofed, &Tables);
        assert_eq!(decision.reason, R::SpoofedMac, "the same packet, enforced");
        assert_eq!(decision.verdict, Verdict::Dropped);
    }

    #[test]
    fn what_stays_in_the_network_passes_and_what_leaves_it_is_not_in_network() {
        let outsider = [2, 0, 0, 0, 0, 1];
        expect(
            &enforced(),
            &[
                (
                    "to a neighbour",
                    Egress,
                    tcp_from_web([172, 20, 0, 3], 80),
                    R::None,
                ),
                (
                    "to the outside",
                    Egress,
                    tcp_from_web([198, 51, 100, 1], 80),
                    R::NotInNetwork,
                ),
                (
                    "from the outside",
                    Ingress,
                    received(tcp_from_web([0; 4], 80), [198, 51, 100, 1], outsider, 80),
                    R::NotInNetwork,
                ),
            ],
        );
    }

    #[test]
    fn a_sender_must_use_its_own_mac_and_address() {
        let neighbour_mac = [2, 0x42, 172, 20, 0, 3];
        let mut forged_mac = tcp_from_web([172, 20, 0, 3], 80);
        forged_mac.src_mac = neighbour_mac;
        let mut forged_ip = tcp_from_web([172, 20, 0, 3], 80);
        forged_ip.src = v4([172, 20, 0, 3]);
        let from_neighbour = received(
            tcp_from_web([0; 4], 80),
            [172, 20, 0, 3],
            neighbour_mac,
            40000,
        );
        expect(
            &enforced(),
            &[
                ("a neighbour's MAC", Egress, forged_mac, R::SpoofedMac),
                ("a neighbour's address", Egress, forged_ip, R::SpoofedSource),
                (
                    "what it receives is not judged by its MAC",
                    Ingress,
                    from_neighbour,
                    R::None,
                ),
            ],
        );
    }

    #[test]
    fn a_network_wide_policy_accepts_any_source_of_the_network_and_no_other() {
        let mut neighbour = tcp_from_web([172, 20, 0, 9], 80);
        neighbour.src = v4([172, 20, 0, 3]);
        neighbour.src_mac = [2, 0, 0, 0, 0, 3];
        let mut foreign = neighbour;
        foreign.src = v4([10, 1, 2, 3]);
        expect(
            &policy(policy_flags::ENFORCE | policy_flags::NETWORK_WIDE),
            &[
                (
                    "any source of the network, any MAC",
                    Egress,
                    neighbour,
                    R::None,
                ),
                ("a source outside it", Egress, foreign, R::SpoofedSource),
            ],
        );
    }

    #[test]
    fn the_gateway_and_the_host_are_host_access_unless_opened_or_allow_listed() {
        let to_gateway = tcp_from_web([172, 20, 0, 1], 22);
        let to_host = tcp_from_web([10, 0, 0, 5], 22);
        expect(
            &enforced(),
            &[("the gateway", Egress, to_gateway, R::HostAccess)],
        );
        expect(
            &policy(policy_flags::ENFORCE | policy_flags::GATEWAY_ACCESS),
            &[
                ("the gateway, opened", Egress, to_gateway, R::None),
                (
                    "another host address stays closed",
                    Egress,
                    to_host,
                    R::HostAccess,
                ),
            ],
        );
    }

    #[test]
    fn an_allow_list_entry_opens_its_address_and_port_only() {
        let reply = received(
            tcp_from_web([0; 4], 40000),
            [203, 0, 113, 7],
            [2, 0, 0, 0, 0, 1],
            443,
        );
        expect(
            &enforced(),
            &[
                (
                    "its address and port",
                    Egress,
                    tcp_from_web([203, 0, 113, 7], 443),
                    R::None,
                ),
                (
                    "another port",
                    Egress,
                    tcp_from_web([203, 0, 113, 7], 80),
                    R::NotInNetwork,
                ),
                (
                    "another address",
                    Egress,
                    tcp_from_web([203, 0, 113, 8], 443),
                    R::NotInNetwork,
                ),
                ("the reply", Ingress, reply, R::None),
            ],
        );
    }

    #[test]
    fn broadcast_and_multicast_beyond_the_network_are_their_own_reason() {
        let mut broadcast = tcp_from_web([255, 255, 255, 255], 67);
        broadcast.proto = 17;
        let mut multicast = broadcast;
        multicast.dst = v4([239, 1, 2, 3]);
        expect(
            &enforced(),
            &[
                (
                    "limited broadcast",
                    Egress,
                    broadcast,
                    R::BroadcastMulticast,
                ),
                ("multicast", Egress, multicast, R::BroadcastMulticast),
            ],
        );
    }

    #[test]
    fn arp_is_judged_by_its_sender_mac_and_address() {
        let arp = PacketSummary {
            class: PacketClass::Arp,
            src_mac: WEB_MAC,
            arp_sender_mac: WEB_MAC,
            src: v4([172, 20, 0, 2]),
            dst: v4([172, 20, 0, 1]),
            ..PacketSummary::default()
        };
        let mut poison = arp;
        poison.arp_sender_mac = [2, 0, 0, 0, 0, 66];
        let mut claim = arp;
        claim.src = v4([172, 20, 0, 1]);
        let mut probe = arp;
        probe.src = v4([0, 0, 0, 0]);
        expect(
            &enforced(),
            &[
                ("its own", Egress, arp, R::None),
                ("another sender MAC", Egress, poison, R::SpoofedMac),
                (
                    "claiming the gateway's address",
                    Egress,
                    claim,
                    R::SpoofedSource,
                ),
                ("an address probe (sender 0.0.0.0)", Egress, probe, R::None),
            ],
        );
    }

    #[test]
    fn ipv6_link_local_sources_and_neighbour_discovery_about_oneself_pass() {
        let mut link_local = [0u8; 16];
        link_local[..2].copy_from_slice(&[0xfe, 0x80]);
        link_local[15] = 2;
        let solicit = PacketSummary {
            class: PacketClass::Ip,
            src_mac: WEB_MAC,
            family: family::IPV6,
            proto: 58,
            src: link_local,
            dst: [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1],
            nd: NdKind::Solicit,
            ..PacketSummary::default()
        };
        let mut lying = solicit;
        lying.nd = NdKind::Advert;
        lying.nd_target = [0xfd, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
        expect(
            &enforced(),
            &[
                (
                    "a solicitation from its link-local address",
                    Egress,
                    solicit,
                    R::None,
                ),
                (
                    "advertising a neighbour's address",
                    Egress,
                    lying,
                    R::SpoofedSource,
                ),
            ],
        );
    }

    #[test]
    fn packets_that_were_not_understood_are_dropped_with_why() {
        for (class, expected) in [
            (PacketClass::Invalid, R::InvalidHeader),
            (PacketClass::Unsupported, R::UnsupportedProtocol),
            (PacketClass::ExtHeaderLimit, R::ExtensionHeaderLimit),
        ] {
            let pkt = PacketSummary {
                class,
                ..tcp_from_web([172, 20, 0, 3], 80)
            };
            expect(
                &enforced(),
                &[
                    ("sent", Egress, pkt, expected),
                    ("received", Ingress, pkt, expected),
                ],
            );
        }
    }

    #[test]
    fn a_published_port_admits_inbound_connections_and_their_answers_only() {
        let published = policy(policy_flags::ENFORCE | policy_flags::PUBLISHED);
        let outsider = [2, 0, 0, 0, 0, 1];
        let client = [198, 51, 100, 1];
        let inbound = |port: u16| {
            let mut pkt = received(tcp_from_web([0; 4], 0), client, outsider, 40000);
            pkt.dst_port = port;
            pkt
        };
        let answer = |to: [u8; 4], from_port: u16| {
            let mut pkt = tcp_from_web(to, 40000);
            pkt.src_port = from_port;
            pkt
        };
        let mut to_neighbour_address = inbound(80);
        to_neighbour_address.dst = v4([172, 20, 0, 9]);
        expect(
            &published,
            &[
                (
                    "inbound to the published port",
                    Ingress,
                    inbound(80),
                    R::None,
                ),
                (
                    "inbound to another port",
                    Ingress,
                    inbound(81),
                    R::NotInNetwork,
                ),
                (
                    "inbound to the port on an address that is not the endpoint's",
                    Ingress,
                    to_neighbour_address,
                    R::NotInNetwork,
                ),
                (
                    "the answer to a client that came in",
                    Egress,
                    answer(client, 80),
                    R::None,
                ),
                (
                    "from the published port to a client that never came in",
                    Egress,
                    answer([198, 51, 100, 2], 80),
                    R::NotInNetwork,
                ),
                (
                    "a connection of its own to the client, from another port",
                    Egress,
                    answer(client, 40001),
                    R::NotInNetwork,
                ),
            ],
        );
        expect(
            &enforced(),
            &[
                (
                    "without the flag the published port stays closed",
                    Ingress,
                    inbound(80),
                    R::NotInNetwork,
                ),
                (
                    "and so do its answers",
                    Egress,
                    answer(client, 80),
                    R::NotInNetwork,
                ),
            ],
        );
    }

    #[test]
    fn a_port_published_on_loopback_only_admits_the_host_and_no_one_else() {
        let published = policy(policy_flags::ENFORCE | policy_flags::PUBLISHED);
        let host_mac = [2, 0, 0, 0, 0, 0x10];
        let from = |src: [u8; 4]| {
            let mut pkt = received(tcp_from_web([0; 4], 0), src, host_mac, 40000);
            pkt.dst_port = 8443;
            pkt
        };
        expect(
            &published,
            &[
                (
                    "docker-proxy from the gateway",
                    Ingress,
                    from([172, 20, 0, 1]),
                    R::None,
                ),
                ("a host address", Ingress, from([10, 0, 0, 5]), R::None),
                (
                    "a client routing straight to the container",
                    Ingress,
                    from([198, 51, 100, 1]),
                    R::NotInNetwork,
                ),
            ],
        );
    }

    #[test]
    fn an_audited_policy_judges_like_enforcement_and_drops_nothing() {
        let audited = policy(policy_flags::ENFORCE | policy_flags::AUDIT);
        let outside = tcp_from_web([198, 51, 100, 1], 80);
        assert_eq!(
            decide(Egress, &audited, &outside, &Tables),
            Decision {
                verdict: Verdict::Audited,
                reason: R::NotInNetwork
            }
        );
        let neighbour = tcp_from_web([172, 20, 0, 3], 80);
        assert_eq!(
            decide(Egress, &audited, &neighbour, &Tables),
            Decision::FORWARD
        );
        assert_eq!(
            decide(Egress, &policy(policy_flags::AUDIT), &outside, &Tables),
            Decision::FORWARD,
            "audit without ENFORCE is observation: nothing to audit"
        );
    }
}
