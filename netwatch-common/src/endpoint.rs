//! Per-endpoint policy and the prefix tables it refers to.
//!
//! `ENDPOINTS` maps the host-side veth ifindex to an [`EndpointPolicy`].
//! The policy's `scope` selects this endpoint's entries in the LPM tries
//! (`NET_V4`/`NET_V6`: the network's own prefixes; `ALLOW_V4`/`ALLOW_V6`:
//! allow-listed prefixes with their port rules): a trie key is the scope
//! followed by the address, and its prefix length is 32 + the CIDR length, so
//! one trie serves every endpoint without entries of one leaking into another.

use crate::{assert_layout, packet::RulePort, user_pod};

/// Bits of [`EndpointPolicy::flags`].
pub mod policy_flags {
    /// Drop what the policy does not allow. Without it the endpoint is only
    /// observed: every packet is forwarded and recorded.
    pub const ENFORCE: u32 = 1 << 0;
    /// The network opted in to reaching the host gateway (and being reached
    /// from it).
    pub const GATEWAY_ACCESS: u32 = 1 << 1;
    /// `ipv4`/`gateway_v4` are set.
    pub const HAS_IPV4: u32 = 1 << 2;
    /// `ipv6`/`gateway_v6` are set.
    pub const HAS_IPV6: u32 = 1 << 3;
    /// The policy guards a whole network from its bridge device rather than
    /// one endpoint from its veth: instead of the endpoint's own MAC and
    /// addresses, sources must lie in the network. Attached to the bridge
    /// when the network appears, it holds routed traffic (to the host and
    /// the outside, and from them) before any container's veth is known,
    /// which closes the window between a container's start and its veth's
    /// attachment.
    pub const NETWORK_WIDE: u32 = 1 << 4;
    /// The policy guards a macvlan child: it is keyed by the child's
    /// ifindex in the container's namespace (where `to_container` sits on
    /// its ingress), and `parent` names the parent device on the host, so
    /// that frames from a sibling child (found in `MACVLAN_PORTS` by their
    /// source MAC) are also judged as the sibling's egress there: bridge-mode
    /// siblings exchange frames without passing the parent's egress hook.
    pub const MACVLAN: u32 = 1 << 5;
    /// Containers behind the policy publish ports on the host and their
    /// network accepts inbound connections to them
    /// (`netwatch.ingress=published`): the policy's entries in `PUBLISHED`
    /// are open to inbound packets, and what a container sends from such a
    /// port passes when it answers an inbound flow that was let in. Only
    /// the policies that carry it pay for the lookups.
    pub const PUBLISHED: u32 = 1 << 6;
    /// With `ENFORCE`: judge every packet as enforcement would, but drop
    /// nothing; what enforcement would drop is forwarded with the verdict
    /// `Audited` and the reason it would have had (`netwatch.egress=audit`,
    /// `agent --audit`).
    pub const AUDIT: u32 = 1 << 7;
    /// Every defined bit; the agent refuses to write others.
    pub const ALL: u32 =
        ENFORCE | GATEWAY_ACCESS | HAS_IPV4 | HAS_IPV6 | NETWORK_WIDE | MACVLAN | PUBLISHED | AUDIT;
}

/// The policy of one container endpoint, keyed by its host-side veth ifindex
/// in `ENDPOINTS`. Addresses are in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// [`policy_flags`] bits.
    pub flags: u32,
    /// Selects this endpoint's entries in the NET and ALLOW tries.
    pub scope: u32,
    pub ipv4: [u8; 4],
    pub gateway_v4: [u8; 4],
    pub ipv6: [u8; 16],
    pub gateway_v6: [u8; 16],
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// With [`policy_flags::MACVLAN`]: the host ifindex of the child's
    /// parent device; else 0.
    pub parent: u32,
}
assert_layout!(EndpointPolicy, size = 60, align = 4);

impl EndpointPolicy {
    pub const fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// LPM trie key data for IPv4: scope then address. Prefix length = 32 + CIDR bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ScopedV4 {
    /// The scope in big-endian byte order (any fixed order works since it is
    /// always matched in full; big-endian keeps `bpftool map dump` readable).
    pub scope: [u8; 4],
    pub addr: [u8; 4],
}
assert_layout!(ScopedV4, size = 8, align = 1);

/// LPM trie key data for IPv6: scope then address. Prefix length = 32 + CIDR bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ScopedV6 {
    pub scope: [u8; 4],
    pub addr: [u8; 16],
}
assert_layout!(ScopedV6, size = 20, align = 1);

/// Bits of the trie key taken by the scope.
pub const SCOPE_BITS: u32 = 32;

/// Value of a NET trie entry (presence is what matters).
pub const NET_MEMBER: u32 = 1;

/// One `[:port[/proto]]` part of an allow-list entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortRule {
    /// IP protocol number; 0 = any protocol.
    pub proto: u8,
    pub _pad: u8,
    /// Remote port in host byte order; 0 = any port. Only TCP and UDP carry
    /// ports, so a rule with a port never matches other protocols or
    /// non-first fragments.
    pub port: u16,
}
assert_layout!(PortRule, size = 4, align = 2);

/// Most port rules one allow-listed prefix can carry.
pub const MAX_PORT_RULES: usize = 8;

/// Value of an ALLOW trie entry.
///
/// An LPM lookup returns only the longest matching prefix, so the policy
/// compiler stores in each prefix the rules of every shorter prefix that
/// covers it: the kernel then needs exactly one lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowRules {
    /// Number of valid entries in `rules`.
    pub count: u32,
    pub rules: [PortRule; MAX_PORT_RULES],
}
assert_layout!(AllowRules, size = 36, align = 4);

impl AllowRules {
    /// Whether a packet of `proto` whose remote port is `port` matches one
    /// of the rules.
    #[inline(always)]
    pub fn matches(&self, proto: u8, port: RulePort) -> bool {
        let mut i = 0;
        while i < MAX_PORT_RULES {
            if (i as u32) < self.count {
                let rule = &self.rules[i];
                if port_rule_matches(rule, proto, port) {
                    return true;
                }
            }
            i += 1;
        }
        false
    }
}

/// The matching rule for one allow-list port rule, shared by the kernel (over
/// compiled trie entries) and the reference model (over the rules as written).
#[inline(always)]
pub fn port_rule_matches(rule: &PortRule, proto: u8, port: RulePort) -> bool {
    let proto_ok = rule.proto == 0 || rule.proto == proto;
    let port_ok = rule.port == 0 || port.is(rule.port);
    proto_ok && port_ok
}

/// Key of `MACVLAN_PORTS`: a macvlan child by its parent and MAC. MACs are
/// only unique per LAN, so the parent is part of the key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacvlanPortKey {
    /// The parent device's ifindex on the host.
    pub parent: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
assert_layout!(MacvlanPortKey, size = 12, align = 4);

impl MacvlanPortKey {
    pub const fn new(parent: u32, mac: [u8; 6]) -> MacvlanPortKey {
        MacvlanPortKey {
            parent,
            mac,
            _pad: [0; 2],
        }
    }
}

/// Value of `MACVLAN_PORTS`: which endpoint a macvlan child's MAC belongs
/// to, and the network namespace it lives in.
///
/// The parent's egress hook is where everything a child sends towards the
/// LAN can be judged: a child's own egress hook is skipped by any socket
/// with `PACKET_QDISC_BYPASS` (which needs only CAP_NET_RAW, a Docker
/// default), and macvlan does not check source MACs on transmit. The MAC
/// names the sender; the namespace cookie of the sending socket
/// (`bpf_get_netns_cookie`) says whether the frame really came from that
/// container (measured: see docs/drivers.md).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MacvlanPort {
    /// The child's key in `ENDPOINTS` (its ifindex in its namespace).
    pub endpoint: u32,
    pub _pad: u32,
    /// The cookie of the container's network namespace (`SO_NETNS_COOKIE`).
    pub netns_cookie: u64,
}
assert_layout!(MacvlanPort, size = 16, align = 8);

impl MacvlanPort {
    pub const fn new(endpoint: u32, netns_cookie: u64) -> MacvlanPort {
        MacvlanPort {
            endpoint,
            _pad: 0,
            netns_cookie,
        }
    }
}

/// Key of `PUBLISHED`: one port a container publishes on the host, as the
/// container sees it (Docker's DNAT and `docker-proxy` deliver to the
/// container's own address and port), under the policy that judges it: the
/// endpoint's own, and its network's network-wide policy on the bridge,
/// which sees the same packets routed to and from the host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublishedKey {
    /// The judging policy's `ENDPOINTS` key (a veth's or a bridge's ifindex).
    pub ifindex: u32,
    /// The container's port, host byte order.
    pub port: u16,
    /// IP protocol number (TCP or UDP).
    pub proto: u8,
    /// `flow::family` of `addr`.
    pub family: u8,
    /// The container's address; IPv4 in the first 4 bytes, the rest zero.
    pub addr: [u8; 16],
}
assert_layout!(PublishedKey, size = 24, align = 4);

/// Bits of a `PUBLISHED` value: who may open a connection to the port.
pub mod published_access {
    /// Any client: the port is bound to an address clients outside the host
    /// reach (`0.0.0.0`, `::`, or one of the host's non-loopback addresses).
    /// Without it the port is bound to loopback only, and only the host (its
    /// addresses, among them the gateway that `docker-proxy` connects from)
    /// may open connections to it: a client that routes straight to the
    /// container's address, which Docker 20.10's FORWARD rules let through
    /// whatever the binding (moby#45610), is not one.
    pub const FROM_ANYWHERE: u32 = 1 << 0;
}

/// Global datapath settings, the single entry of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathConfig {
    /// How often an active flow is exported to the ring buffer; 0 = default.
    pub export_interval_ns: u64,
    /// Least time between two drop records of one flow; 0 = default.
    pub drop_report_interval_ns: u64,
    /// The cookie of the host's network namespace, where the agent runs.
    /// `bpf_get_netns_cookie` on a TC skb answers the namespace of the
    /// packet's socket, or this one when it has none (forwarded frames,
    /// ARP the kernel sends): a frame on a macvlan parent with this cookie
    /// is the host's, not a container's. 0: unknown (nothing is judged by
    /// it).
    pub host_netns_cookie: u64,
}
assert_layout!(DatapathConfig, size = 24, align = 8);

/// Default active-flow export interval.
pub const DEFAULT_EXPORT_INTERVAL_NS: u64 = 10_000_000_000;
/// Default least time between two drop records of one flow.
pub const DEFAULT_DROP_REPORT_INTERVAL_NS: u64 = 1_000_000_000;

impl DatapathConfig {
    pub const fn export_interval(&self) -> u64 {
        if self.export_interval_ns == 0 {
            DEFAULT_EXPORT_INTERVAL_NS
        } else {
            self.export_interval_ns
        }
    }

    pub const fn drop_report_interval(&self) -> u64 {
        if self.drop_report_interval_ns == 0 {
            DEFAULT_DROP_REPORT_INTERVAL_NS
        } else {
            self.drop_report_interval_ns
        }
    }
}

user_pod!(
    EndpointPolicy,
    ScopedV4,
    ScopedV6,
    PortRule,
    AllowRules,
    MacvlanPortKey,
    MacvlanPort,
    PublishedKey,
    DatapathConfig
);
