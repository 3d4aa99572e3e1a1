//! Which flows a query wants: the CLI's filter flags, carried to the agent
//! as a URL query string, applied in one place.

use jiff::Timestamp;
use netwatch_common::{protocol::Protocol, reason::Verdict};
use serde::{Deserialize, Serialize};

use super::{FlowReason, aggregate::FlowEntry, dns::DnsEntry};

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
    /// `forwarded`, `dropped` or `audited`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// A drop reason (`host-access`, `kernel:netfilter_drop`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<FlowReason>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `arp/other`, a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<Protocol>,
    /// Either end's port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Flows seen at or after this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
}

impl FlowFilter {
    pub fn matches(&self, e: &FlowEntry) -> bool {
        self.matches_place(&e.container, &e.service, &e.network, e.verdict)
            && self
                .reason
                .as_ref()
                .is_none_or(|want| e.reason.as_ref() == Some(want))
            && self.proto.is_none_or(|want| e.proto == want)
            && self
                .port
                .is_none_or(|p| e.flows == 1 && (e.src_port == p || e.dst_port == p))
            && self.since.is_none_or(|since| e.last_seen >= since)
    }

    /// For DNS queries: container, service, network, verdict and time
    /// (the query's); the other fields are the flows'.
    pub fn matches_dns(&self, e: &DnsEntry) -> bool {
        self.matches_place(&e.container, &e.service, &e.network, e.verdict)
            && self.since.is_none_or(|since| e.time >= since)
    }

    fn matches_place(
        &self,
        container: &Option<String>,
        service: &Option<String>,
        network: &Option<String>,
        verdict: Verdict,
    ) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| {
            want.as_deref()
                .is_none_or(|want| have.as_deref() == Some(want))
        };
        same(&self.container, container)
            && same(&self.service, service)
            && same(&self.network, network)
            && self.verdict.is_none_or(|want| want == verdict)
    }
}

#[cfg(test)]
mod tests {
    use netwatch_common::reason::{Direction, DropReason};

    use super::*;

    fn entry() -> FlowEntry {
        FlowEntry {
            schema_version: crate::flows::SCHEMA_VERSION,
            host: String::new(),
            rule: None,
            container: Some("web".into()),
            container_id: None,
            project: None,
            service: Some("frontend".into()),
            network: Some("app_front".into()),
            direction: Direction::Egress,
            src: Some("172.30.0.2".parse().unwrap()),
            dst: Some("172.30.0.3".parse().unwrap()),
            src_port: 40000,
            dst_port: 5432,
            proto: Protocol::Tcp,
            packets: 1,
            bytes: 60,
            verdict: Verdict::Dropped,
            reason: Some(DropReason::NotInNetwork.into()),
            dropped_by: None,
            peer: None,
            peer_service: None,
            peer_kind: None,
            published: None,
            src_name: None,
            dst_name: None,
            first_seen: Timestamp::from_second(100).unwrap(),
            last_seen: Timestamp::from_second(200).unwrap(),
            interface: None,
            flows: 1,
        }
    }

    /// Filters each of which leaves out an entry of container `web`, not of
    /// service `backend`, whose verdict is not `other_verdict`, seen before
    /// second `after`.
    fn place_cases(other_verdict: Verdict, after: i64) -> Vec<FlowFilter> {
        vec![
            FlowFilter {
                container: Some("db".into()),
                ..FlowFilter::default()
            },
            FlowFilter {
                service: Some("backend".into()),
                ..FlowFilter::default()
            },
            FlowFilter {
                verdict: Some(other_verdict),
                ..FlowFilter::default()
            },
            FlowFilter {
                since: Some(Timestamp::from_second(after).unwrap()),
                ..FlowFilter::default()
            },
        ]
    }

    #[test]
    fn every_field_narrows_and_an_empty_filter_passes_all() {
        let e = entry();
        assert!(FlowFilter::default().matches(&e));
        let mut cases = place_cases(Verdict::Forwarded, 201);
        cases.extend([
            FlowFilter {
                reason: Some(DropReason::HostAccess.into()),
                ..FlowFilter::default()
            },
            FlowFilter {
                proto: Some(Protocol::Udp),
                ..FlowFilter::default()
            },
            FlowFilter {
                port: Some(53),
                ..FlowFilter::default()
            },
        ]);
        for filter in cases {
            assert!(!filter.matches(&e), "{filter:?}");
        }
        let wanted = FlowFilter {
            container: Some("web".into()),
            port: Some(5432),
            reason: Some(DropReason::NotInNetwork.into()),
            since: Some(Timestamp::from_second(150).unwrap()),
            ..FlowFilter::default()
        };
        assert!(wanted.matches(&e));
    }

    #[test]
    fn dns_queries_narrow_by_place_verdict_and_time() {
        let query = DnsEntry::example();
        assert!(FlowFilter::default().matches_dns(&query));
        let wanted = FlowFilter {
            container: Some("web".into()),
            network: Some("front".into()),
            verdict: Some(Verdict::Forwarded),
            since: Some(Timestamp::from_second(100).unwrap()),
            // Flow-only fields do not apply to DNS queries.
            proto: Some(Protocol::Tcp),
            ..FlowFilter::default()
        };
        assert!(wanted.matches_dns(&query));
        for filter in place_cases(Verdict::Dropped, 101) {
            assert!(!filter.matches_dns(&query), "{filter:?}");
        }
    }
}
