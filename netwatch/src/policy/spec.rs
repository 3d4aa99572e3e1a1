//! The policy of one attached interface before compilation.

#[cfg(doc)]
use netwatch_common::endpoint::policy_flags;
use std::net::IpAddr;

use netwatch_common::endpoint::{EndpointPolicy, published_access};

use super::{cidr::Cidr, rule::AllowRule};

/// The policy of one interface netwatch attaches to (a container's veth,
/// macvlan child or sandbox veth; a bridge, macvlan parent or a bridge port
/// no container is named for yet), in the terms Docker and the labels use. [`compile`](super::compile::compile) turns a set of these
/// into map entries; the [reference model](super::model::ReferenceModel)
/// decides packets from them directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfacePolicy {
    /// Host-side veth ifindex: the key of the endpoint's `ENDPOINTS` entry.
    pub ifindex: u32,
    /// The datapath's per-endpoint record. `policy.scope` selects the
    /// endpoint's NET and ALLOW entries; endpoints that share a scope must
    /// share `networks` and `allow`.
    pub policy: EndpointPolicy,
    /// The Docker network's subnets (IPv4 and IPv6).
    pub networks: Vec<Cidr>,
    /// Allow-list rules from the network's labels.
    pub allow: Vec<AllowRule>,
    /// Published ports behind the policy that its network admits inbound
    /// connections to (`netwatch.ingress=published`): the container's own
    /// for an endpoint, every container's on the network for its bridge.
    /// Used only when the policy carries [`policy_flags::PUBLISHED`].
    pub published: Vec<PublishedRule>,
}

/// One published port as the datapath sees it: the container's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublishedRule {
    /// The container's address Docker delivers to.
    pub addr: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// The container's port.
    pub port: u16,
    /// Bound where clients beyond the host reach it (not loopback only).
    pub from_anywhere: bool,
}

impl PublishedRule {
    /// The `published_access` bits of the rule.
    pub fn access(&self) -> u32 {
        if self.from_anywhere {
            published_access::FROM_ANYWHERE
        } else {
            0
        }
    }
}
