//! The verdict function: packet summary + endpoint policy → verdict, reason.
//!
//! The kernel programs and the user-space reference model both call
//! [`decide`]; they differ only in how they parse ([`crate::packet`]) and how
//! they look up prefixes ([`PolicyTables`]: BPF maps in the kernel, the
//! uncompiled rule lists in the model). So the differential test checks what
//! kernel code most often gets wrong — bounded parsing and map encoding —
//! while the policy itself exists once.

use crate::{
    endpoint::{EndpointPolicy, policy_flags},
    flow::family,
    packet::{NdKind, PacketClass, PacketSummary},
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
        port: Option<u16>,
    ) -> bool;
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
    Decision::from_reason(drop_reason(direction, policy, pkt, tables))
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
        (&pkt.dst, pkt.port(false))
    } else {
        (&pkt.src, pkt.port(true))
    };
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
