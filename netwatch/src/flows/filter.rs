//! Which flows a query wants: the CLI's filter flags, carried to the agent
//! as a URL query string, applied in one place.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{aggregate::FlowEntry, dns::DnsEntry};

/// Every field narrows the selection; an empty filter lets all through.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFilter {
    /// Container name (exact).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Service: compose service, or swarm service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Docker network name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `forwarded` or `dropped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// A drop reason (`host-access`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Either end's port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Flows seen at or after this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
}

impl FlowFilter {
    pub fn matches(&self, e: &FlowEntry) -> bool {
        let same = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|want| have == Some(want))
        };
        self.matches_place(&e.container, &e.service, &e.network, &e.verdict)
            && same(&self.reason, e.reason.as_deref())
            && same(&self.proto, Some(e.proto.as_str()))
            && self
                .port
                .is_none_or(|p| e.flows == 1 && (e.src_port == p || e.dst_port == p))
            && self.since.is_none_or(|since| e.last_seen >= since)
    }

    /// For DNS queries: container, service, network, verdict and time
    /// (the query's); the other fields are the flows'.
    pub fn matches_dns(&self, e: &DnsEntry) -> bool {
        self.matches_place(&e.container, &e.service, &e.network, &e.verdict)
            && self.since.is_none_or(|since| e.time >= since)
    }

    fn matches_place(
        &self,
        container: &Option<String>,
        service: &Option<String>,
        network: &Option<String>,
        verdict: &str,
    ) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| {
            want.as_deref()
                .is_none_or(|want| have.as_deref() == Some(want))
        };
        same(&self.container, container)
            && same(&self.service, service)
            && same(&self.network, network)
            && self.verdict.as_deref().is_none_or(|want| want == verdict)
    }
}
