//! The policy of one endpoint before compilation.

use netwatch_common::endpoint::EndpointPolicy;

use super::{cidr::Cidr, rule::AllowRule};

/// What netwatch knows about one container endpoint, in the terms Docker and
/// the labels use. [`compile`](super::compile::compile) turns a set of these
/// into map entries; the [reference model](super::model::ReferenceModel)
/// decides packets from them directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
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
}
