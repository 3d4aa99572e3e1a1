//! Which flows a query wants: the CLI's filter flags, carried to the agent
//! as a URL query string, applied in one place.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::aggregate::FlowEntry;

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
        same(&self.container, e.container.as_deref())
            && same(&self.service, e.service.as_deref())
            && same(&self.network, e.network.as_deref())
            && same(&self.verdict, Some(e.verdict.as_str()))
            && same(&self.reason, e.reason.as_deref())
            && same(&self.proto, Some(e.proto.as_str()))
            && self
                .port
                .is_none_or(|p| e.flows == 1 && (e.src_port == p || e.dst_port == p))
            && self.since.is_none_or(|since| e.last_seen >= since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> FlowEntry {
        FlowEntry {
            container: Some("web".into()),
            service: Some("frontend".into()),
            network: Some("app_front".into()),
            direction: "egress".into(),
            src: Some("172.30.0.2".parse().unwrap()),
            dst: Some("172.30.0.3".parse().unwrap()),
            src_port: 40000,
            dst_port: 5432,
            proto: "tcp".into(),
            packets: 1,
            bytes: 60,
            verdict: "dropped".into(),
            reason: Some("not-in-network".into()),
            dropped_by: None,
            peer: None,
            peer_service: None,
            peer_kind: None,
            published: None,
            first_seen: Timestamp::from_second(100).unwrap(),
            last_seen: Timestamp::from_second(200).unwrap(),
            interface: None,
            flows: 1,
        }
    }

    #[test]
    fn every_field_narrows_and_an_empty_filter_passes_all() {
        let e = entry();
        assert!(FlowFilter::default().matches(&e));
        let cases = [
            FlowFilter {
                container: Some("db".into()),
                ..FlowFilter::default()
            },
            FlowFilter {
                service: Some("backend".into()),
                ..FlowFilter::default()
            },
            FlowFilter {
                verdict: Some("forwarded".into()),
                ..FlowFilter::default()
            },
            FlowFilter {
                reason: Some("host-access".into()),
                ..FlowFilter::default()
            },
            FlowFilter {
                proto: Some("udp".into()),
                ..FlowFilter::default()
            },
            FlowFilter {
                port: Some(53),
                ..FlowFilter::default()
            },
            FlowFilter {
                since: Some(Timestamp::from_second(201).unwrap()),
                ..FlowFilter::default()
            },
        ];
        for filter in cases {
            assert!(!filter.matches(&e), "{filter:?}");
        }
        let wanted = FlowFilter {
            container: Some("web".into()),
            port: Some(5432),
            reason: Some("not-in-network".into()),
            since: Some(Timestamp::from_second(150).unwrap()),
            ..FlowFilter::default()
        };
        assert!(wanted.matches(&e));
    }
}
