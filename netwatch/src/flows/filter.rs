//! Which flows a query wants: the CLI's filter flags, carried to the agent
//! as a URL query string, applied in one place.
//!
//! A filter is a list of [`Term`]s and a time window. Terms of one kind
//! (`container`, `cidr`, …) are ORed: a flow passes when one of them
//! matches. Different kinds are ANDed. A negated term (`--not --cidr
//! 10.0.0.0/8`) must not match: negated terms leave out every flow that
//! one of them matches. `--since`/`--until` keep the flows seen in the
//! window; `--last N` keeps the N seen most recently.

use std::net::IpAddr;

use jiff::Timestamp;
use netwatch_common::{
    protocol::Protocol,
    reason::{Direction, Verdict},
};

use super::{
    FlowReason, ObservedEvent,
    aggregate::{FlowEntry, FlowView},
    dns::DnsEntry,
};
use crate::policy::cidr::Cidr;

/// What one filter flag asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// A container's name (exact), or a prefix of its id (lower-case hex).
    Container(String),
    /// Compose service, or swarm service.
    Service(String),
    /// Compose project (`com.docker.compose.project`).
    Project(String),
    /// The host that saw the flow (the kernel's hostname): a flow log
    /// gathered from several hosts answers for one.
    Host(String),
    /// Docker network name.
    Network(String),
    Verdict(Verdict),
    /// A drop reason (`host-access`, `kernel:netfilter_drop`, …).
    Reason(FlowReason),
    Proto(Protocol),
    /// Either end's port.
    Port(u16),
    Direction(Direction),
    /// Either end is this address.
    Ip(IpAddr),
    /// Either end lies in this network.
    Cidr(Cidr),
    /// The source lies in this network (an address is a /32 or /128).
    FromIp(Cidr),
    /// The destination lies in this network.
    ToIp(Cidr),
}

impl Match {
    /// Every kind's key: the query-string key and the CLI flag (`--key`).
    pub const KEYS: [&'static str; 14] = [
        "container",
        "service",
        "project",
        "host",
        "network",
        "verdict",
        "reason",
        "proto",
        "port",
        "direction",
        "ip",
        "cidr",
        "from-ip",
        "to-ip",
    ];

    /// The kind's key (one of [`Match::KEYS`]).
    pub fn key(&self) -> &'static str {
        match self {
            Match::Container(_) => "container",
            Match::Service(_) => "service",
            Match::Project(_) => "project",
            Match::Host(_) => "host",
            Match::Network(_) => "network",
            Match::Verdict(_) => "verdict",
            Match::Reason(_) => "reason",
            Match::Proto(_) => "proto",
            Match::Port(_) => "port",
            Match::Direction(_) => "direction",
            Match::Ip(_) => "ip",
            Match::Cidr(_) => "cidr",
            Match::FromIp(_) => "from-ip",
            Match::ToIp(_) => "to-ip",
        }
    }

    /// The value as the query string carries it (and `parse` reads it).
    pub fn value_text(&self) -> String {
        match self {
            Match::Container(s)
            | Match::Service(s)
            | Match::Project(s)
            | Match::Host(s)
            | Match::Network(s) => s.clone(),
            Match::Verdict(v) => v.to_string(),
            Match::Reason(r) => r.to_string(),
            Match::Proto(p) => p.to_string(),
            Match::Port(p) => p.to_string(),
            Match::Direction(d) => d.to_string(),
            Match::Ip(ip) => ip.to_string(),
            Match::Cidr(c) | Match::FromIp(c) | Match::ToIp(c) => c.to_string(),
        }
    }

    /// Whether it looks at addresses or ports, which a summary of idle
    /// flows does not have.
    fn needs_tuple(&self) -> bool {
        matches!(
            self,
            Match::Port(_) | Match::Ip(_) | Match::Cidr(_) | Match::FromIp(_) | Match::ToIp(_)
        )
    }

    /// Whether `e` matches.
    pub fn matches(&self, e: &impl FlowFields) -> bool {
        let is = |want: &str, have: Option<&str>| have == Some(want);
        let (src, dst) = e.ends();
        let ends = [src, dst];
        match self {
            Match::Container(want) => {
                is(want, e.container())
                    || (is_id_prefix(want)
                        && e.container_id()
                            .is_some_and(|id| id.starts_with(want.as_str())))
            }
            Match::Service(want) => is(want, e.service()),
            Match::Project(want) => is(want, e.project()),
            Match::Host(want) => e.host() == want,
            Match::Network(want) => is(want, e.network()),
            Match::Verdict(want) => e.verdict() == *want,
            Match::Reason(want) => e.reason() == Some(want),
            Match::Proto(want) => e.proto() == *want,
            Match::Port(p) => e.ports().0 == *p || e.ports().1 == *p,
            Match::Direction(want) => e.direction() == *want,
            Match::Ip(want) => ends.contains(&Some(*want)),
            Match::Cidr(net) => ends.iter().flatten().any(|ip| net.contains(ip)),
            Match::FromIp(net) => src.is_some_and(|ip| net.contains(&ip)),
            Match::ToIp(net) => dst.is_some_and(|ip| net.contains(&ip)),
        }
    }

    /// Whether a DNS query matches; `None` for the kinds that are the
    /// flows' only (a DNS query has no project, ports or direction).
    fn matches_dns(&self, e: &DnsEntry) -> Option<bool> {
        let is = |want: &str, have: &Option<String>| have.as_deref() == Some(want);
        Some(match self {
            Match::Container(want) => is(want, &e.container),
            Match::Service(want) => is(want, &e.service),
            Match::Network(want) => is(want, &e.network),
            Match::Verdict(want) => e.verdict == *want,
            _ => return None,
        })
    }
}

/// What filters read of a flow: the same for a [`FlowEntry`] and for the
/// aggregate's borrowed [`FlowView`], so that a query filters flows where
/// they are kept, without building an entry per flow.
pub trait FlowFields {
    fn host(&self) -> &str;
    fn container(&self) -> Option<&str>;
    fn container_id(&self) -> Option<&str>;
    fn project(&self) -> Option<&str>;
    fn service(&self) -> Option<&str>;
    fn network(&self) -> Option<&str>;
    fn direction(&self) -> Direction;
    /// Source and destination addresses.
    fn ends(&self) -> (Option<IpAddr>, Option<IpAddr>);
    /// Source and destination ports.
    fn ports(&self) -> (u16, u16);
    fn proto(&self) -> Protocol;
    fn bytes(&self) -> u64;
    fn verdict(&self) -> Verdict;
    fn reason(&self) -> Option<&FlowReason>;
    fn first_seen(&self) -> Timestamp;
    fn last_seen(&self) -> Timestamp;
    /// 1 for a flow, more for a summary.
    fn flows(&self) -> u64;
}

/// [`FlowFields`] of a type with [`FlowEntry`]'s field names (its strings
/// owned or borrowed).
macro_rules! flow_fields {
    ($($t:ty),*) => {$(
        impl FlowFields for $t {
            fn host(&self) -> &str {
                &self.host
            }
            fn container(&self) -> Option<&str> {
                self.container.as_deref()
            }
            fn container_id(&self) -> Option<&str> {
                self.container_id.as_deref()
            }
            fn project(&self) -> Option<&str> {
                self.project.as_deref()
            }
            fn service(&self) -> Option<&str> {
                self.service.as_deref()
            }
            fn network(&self) -> Option<&str> {
                self.network.as_deref()
            }
            fn direction(&self) -> Direction {
                self.direction
            }
            fn ends(&self) -> (Option<IpAddr>, Option<IpAddr>) {
                (self.src, self.dst)
            }
            fn ports(&self) -> (u16, u16) {
                (self.src_port, self.dst_port)
            }
            fn proto(&self) -> Protocol {
                self.proto
            }
            fn bytes(&self) -> u64 {
                self.bytes
            }
            fn verdict(&self) -> Verdict {
                self.verdict
            }
            fn reason(&self) -> Option<&FlowReason> {
                self.reason.as_ref().map(std::borrow::Borrow::borrow)
            }
            fn first_seen(&self) -> Timestamp {
                self.first_seen
            }
            fn last_seen(&self) -> Timestamp {
                self.last_seen
            }
            fn flows(&self) -> u64 {
                self.flows
            }
        }
    )*};
}

flow_fields!(FlowEntry, FlowView<'_>);

/// Whether a `container` value can be a prefix of a container id: Docker's
/// ids are lower-case hex.
pub fn is_id_prefix(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One filter flag and its value, perhaps negated (`--not`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub negated: bool,
    pub what: Match,
}

/// An empty filter lets all through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// Terms of one kind are ORed, kinds are ANDed, negated terms must not
    /// match.
    pub terms: Vec<Term>,
    /// Flows seen at or after this time (their last packet).
    pub since: Option<Timestamp>,
    /// Flows seen at or before this time (their first packet).
    pub until: Option<Timestamp>,
    /// Of the flows selected, the N seen most recently.
    pub last: Option<usize>,
}

/// A container id prefix that more than one container's flows have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "container id prefix `{prefix}` matches {} containers ({}): give more of the id, or the name",
    ids.len(),
    ids.join(", ")
)]
pub struct AmbiguousContainer {
    pub prefix: String,
    /// The first 12 characters of each id it matches, as `docker ps`
    /// shows them.
    pub ids: Vec<String>,
}

impl FlowFilter {
    /// The filter with one term.
    pub fn with(what: Match) -> FlowFilter {
        FlowFilter::default().and(what)
    }

    /// This filter and `what` too.
    #[must_use]
    pub fn and(mut self, what: Match) -> FlowFilter {
        self.terms.push(Term {
            negated: false,
            what,
        });
        self
    }

    /// This filter, leaving out what `what` matches.
    #[must_use]
    pub fn and_not(mut self, what: Match) -> FlowFilter {
        self.terms.push(Term {
            negated: true,
            what,
        });
        self
    }

    /// Whether a live stream starts with the flows seen before it
    /// ([`history_events`]).
    pub fn wants_history(&self) -> bool {
        self.since.is_some() || self.until.is_some() || self.last.is_some()
    }

    /// Whether live records follow the history: not with `until`, which
    /// ends the window.
    pub fn wants_live(&self) -> bool {
        self.until.is_none()
    }

    /// Whether the filter can only select forwarded flows (`drops` has
    /// none to show then).
    pub fn only_forwarded(&self) -> bool {
        let verdicts: Vec<Verdict> = self
            .terms
            .iter()
            .filter_map(|t| match (&t.what, t.negated) {
                (Match::Verdict(v), false) => Some(*v),
                _ => None,
            })
            .collect();
        let negated_drops = self
            .terms
            .iter()
            .any(|t| t.negated && matches!(t.what, Match::Verdict(v) if v.is_drop_like()));
        (!verdicts.is_empty() && verdicts.iter().all(|v| !v.is_drop_like()))
            || (negated_drops
                && Verdict::ALL.iter().filter(|v| v.is_drop_like()).all(|v| {
                    self.terms
                        .iter()
                        .any(|t| t.negated && t.what == Match::Verdict(*v))
                }))
    }

    /// Terms pass when `test` says so: a positive term when it or another
    /// of its kind matches, a negated one when it does not. `test` answers
    /// `None` for a kind that does not apply, which passes.
    fn passes(&self, test: impl Fn(&Match) -> Option<bool>) -> bool {
        self.terms.iter().all(|t| match (t.negated, test(&t.what)) {
            (_, None) | (false, Some(true)) => true,
            (true, Some(matched)) => !matched,
            (false, Some(false)) => self.terms.iter().any(|other| {
                !other.negated
                    && other.what.key() == t.what.key()
                    && test(&other.what) == Some(true)
            }),
        })
    }

    pub fn matches(&self, e: &impl FlowFields) -> bool {
        // A summary of idle flows has no addresses or ports to look at:
        // a filter on them, negated or not, leaves it out.
        if e.flows() != 1 && self.terms.iter().any(|t| t.what.needs_tuple()) {
            return false;
        }
        self.since.is_none_or(|since| e.last_seen() >= since)
            && self.until.is_none_or(|until| e.first_seen() <= until)
            && self.passes(|what| Some(what.matches(e)))
    }

    /// For DNS queries: container (by name), service, network, verdict
    /// and time (the query's); the other kinds are the flows'.
    pub fn matches_dns(&self, e: &DnsEntry) -> bool {
        self.since.is_none_or(|since| e.time >= since)
            && self.until.is_none_or(|until| e.time <= until)
            && self.passes(|what| what.matches_dns(e))
    }

    /// What is left to do once `matches` chose `entries`: refuse a
    /// container id prefix that two containers' flows share, and keep the
    /// `last` seen most recently (then oldest first). Without `last` the
    /// order is kept.
    ///
    /// # Errors
    /// An ambiguous container id prefix.
    pub fn finish<F: FlowFields>(&self, mut entries: Vec<F>) -> Result<Vec<F>, AmbiguousContainer> {
        for term in &self.terms {
            let Match::Container(prefix) = &term.what else {
                continue;
            };
            if term.negated
                || !is_id_prefix(prefix)
                || entries
                    .iter()
                    .any(|e| e.container() == Some(prefix.as_str()))
            {
                continue;
            }
            let mut ids: Vec<&str> = entries
                .iter()
                .filter_map(FlowFields::container_id)
                .filter(|id| id.starts_with(prefix.as_str()))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.len() > 1 {
                return Err(AmbiguousContainer {
                    prefix: prefix.clone(),
                    ids: ids.iter().map(|id| id.chars().take(12).collect()).collect(),
                });
            }
        }
        if let Some(last) = self.last {
            // Most recent first, then the oldest of those first.
            entries.sort_by_key(|e| std::cmp::Reverse(e.last_seen()));
            entries.truncate(last);
            entries.reverse();
        }
        Ok(entries)
    }
}

/// Flows seen before a live stream began, as its first events (`flow`),
/// oldest first: what `observe --since`, `--last` and `--until` print
/// before (or, with `--until`, instead of) the live records.
pub fn history_events(mut entries: Vec<FlowEntry>) -> Vec<ObservedEvent> {
    entries.sort_by_key(|e| e.last_seen);
    entries
        .into_iter()
        .map(|flow| ObservedEvent {
            event: "flow".into(),
            time: flow.last_seen,
            flow,
            // History, not traffic: its counts were in the events that
            // made it.
            delta_packets: 0,
            delta_bytes: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use netwatch_common::reason::DropReason;

    use super::*;

    const WEB_ID: &str = "3f2a9c0d1e2b3f2a9c0d1e2b3f2a9c0d1e2b3f2a9c0d1e2b3f2a9c0d1e2b3f2a";

    fn entry() -> FlowEntry {
        FlowEntry {
            schema_version: crate::flows::SCHEMA_VERSION,
            host: "node1".into(),
            rule: None,
            container: Some("web".into()),
            container_id: Some(WEB_ID.into()),
            project: Some("shop".into()),
            service: Some("frontend".into()),
            network: Some("app_front".into()),
            direction: Direction::Egress,
            src: Some("172.30.0.2".parse().unwrap()),
            dst: Some("10.1.2.3".parse().unwrap()),
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

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    /// For every kind: a value the entry has and one it has not.
    fn kinds() -> Vec<(Match, Match)> {
        vec![
            (
                Match::Container("web".into()),
                Match::Container("db".into()),
            ),
            (
                Match::Container("3f2a".into()),
                Match::Container("3f2b".into()),
            ),
            (
                Match::Service("frontend".into()),
                Match::Service("backend".into()),
            ),
            (Match::Project("shop".into()), Match::Project("blog".into())),
            (Match::Host("node1".into()), Match::Host("node2".into())),
            (
                Match::Network("app_front".into()),
                Match::Network("app_db".into()),
            ),
            (
                Match::Verdict(Verdict::Dropped),
                Match::Verdict(Verdict::Forwarded),
            ),
            (
                Match::Reason(DropReason::NotInNetwork.into()),
                Match::Reason(DropReason::HostAccess.into()),
            ),
            (Match::Proto(Protocol::Tcp), Match::Proto(Protocol::Udp)),
            (Match::Port(5432), Match::Port(53)),
            (Match::Port(40000), Match::Port(40001)),
            (
                Match::Direction(Direction::Egress),
                Match::Direction(Direction::Ingress),
            ),
            (
                Match::Ip("10.1.2.3".parse().unwrap()),
                Match::Ip("10.1.2.4".parse().unwrap()),
            ),
            (
                Match::Ip("172.30.0.2".parse().unwrap()),
                Match::Ip("172.30.0.3".parse().unwrap()),
            ),
            (
                Match::Cidr(cidr("10.0.0.0/8")),
                Match::Cidr(cidr("192.168.0.0/16")),
            ),
            (
                Match::Cidr(cidr("172.30.0.0/24")),
                Match::Cidr(cidr("fd00::/8")),
            ),
            (
                Match::FromIp(cidr("172.30.0.0/16")),
                Match::FromIp(cidr("10.0.0.0/8")),
            ),
            (
                Match::ToIp(cidr("10.1.2.3")),
                Match::ToIp(cidr("172.30.0.2")),
            ),
        ]
    }

    #[test]
    fn every_kind_matches_its_value_and_refuses_another_and_not_inverts_it() {
        let e = entry();
        assert!(FlowFilter::default().matches(&e));
        for (yes, no) in kinds() {
            assert!(FlowFilter::with(yes.clone()).matches(&e), "{yes:?}");
            assert!(!FlowFilter::with(no.clone()).matches(&e), "{no:?}");
            assert!(
                !FlowFilter::default().and_not(yes.clone()).matches(&e),
                "not {yes:?}"
            );
            assert!(
                FlowFilter::default().and_not(no.clone()).matches(&e),
                "not {no:?}"
            );
            assert!(Match::KEYS.contains(&yes.key()));
        }
    }

    #[test]
    fn values_of_one_kind_are_ored_and_kinds_are_anded() {
        let e = entry();
        for (yes, no) in kinds() {
            // Either value of one kind: passes, in both orders.
            assert!(
                FlowFilter::with(no.clone()).and(yes.clone()).matches(&e),
                "{no:?} or {yes:?}"
            );
            assert!(
                FlowFilter::with(yes.clone()).and(no.clone()).matches(&e),
                "{yes:?} or {no:?}"
            );
        }
        // Two kinds: both must match.
        let web = Match::Container("web".into());
        assert!(
            FlowFilter::with(web.clone())
                .and(Match::Port(5432))
                .matches(&e)
        );
        assert!(
            !FlowFilter::with(web.clone())
                .and(Match::Port(53))
                .matches(&e)
        );
        assert!(
            FlowFilter::with(web.clone())
                .and(Match::Port(53))
                .and(Match::Port(5432))
                .and(Match::Direction(Direction::Egress))
                .matches(&e)
        );
        // `--ip` and `--cidr` are two kinds: ANDed.
        assert!(
            !FlowFilter::with(Match::Ip("172.30.0.2".parse().unwrap()))
                .and(Match::Cidr(cidr("192.168.0.0/16")))
                .matches(&e)
        );
    }

    #[test]
    fn negated_values_each_leave_out_what_they_match() {
        let e = entry();
        // Outside 10.0.0.0/8 or outside 192.168.0.0/16: the entry's
        // destination is in the first, so it is left out.
        let outside_private = FlowFilter::default()
            .and_not(Match::Cidr(cidr("192.168.0.0/16")))
            .and_not(Match::Cidr(cidr("10.0.0.0/8")));
        assert!(!outside_private.matches(&e));
        // A flag and its negation together: this port but not that one.
        let f = FlowFilter::with(Match::Port(5432)).and_not(Match::Port(40001));
        assert!(f.matches(&e));
        let f = FlowFilter::with(Match::Port(5432)).and_not(Match::Port(40000));
        assert!(!f.matches(&e));
        // The question: project shop, outbound, outside 10/8.
        let question = FlowFilter::with(Match::Project("shop".into()))
            .and(Match::Direction(Direction::Egress))
            .and_not(Match::Cidr(cidr("10.0.0.0/8")));
        assert!(!question.matches(&e));
        let mut outside = e.clone();
        outside.dst = Some("203.0.113.7".parse().unwrap());
        assert!(question.matches(&outside));
    }

    #[test]
    fn since_and_until_keep_the_flows_seen_in_the_window() {
        let e = entry(); // seen from second 100 to 200
        let at = |s| Some(Timestamp::from_second(s).unwrap());
        let window = |since, until| FlowFilter {
            since: at(since),
            until: at(until),
            ..FlowFilter::default()
        };
        assert!(window(150, 160).matches(&e), "inside");
        assert!(window(50, 100).matches(&e), "ends at its first packet");
        assert!(window(200, 300).matches(&e), "starts at its last packet");
        assert!(!window(201, 300).matches(&e), "after it");
        assert!(!window(0, 99).matches(&e), "before it");
    }

    #[test]
    fn address_and_port_filters_leave_out_summaries_of_idle_flows() {
        let mut summary = entry();
        summary.flows = 7;
        summary.src = None;
        summary.dst = None;
        assert!(FlowFilter::with(Match::Container("web".into())).matches(&summary));
        for what in [Match::Port(5432), Match::Cidr(cidr("10.0.0.0/8"))] {
            assert!(!FlowFilter::with(what.clone()).matches(&summary));
            assert!(!FlowFilter::default().and_not(what).matches(&summary));
        }
    }

    #[test]
    fn a_container_id_prefix_must_name_one_container() {
        let web = entry();
        let mut other = entry();
        other.container = Some("api".into());
        other.container_id = Some(format!("3f2b{}", &WEB_ID[4..]));
        let both = vec![web.clone(), other.clone()];
        let by = |prefix: &str| FlowFilter::with(Match::Container(prefix.into()));
        assert_eq!(
            by("3f2a").finish(both.clone()).unwrap().len(),
            2,
            "kept as given"
        );
        let error = by("3f2").finish(both.clone()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "container id prefix `3f2` matches 2 containers (3f2a9c0d1e2b, 3f2b9c0d1e2b): give \
             more of the id, or the name"
        );
        // A name wins over an id prefix, and a negated prefix is no question.
        let mut named = other.clone();
        named.container = Some("3f2".into());
        assert!(by("3f2").finish(vec![web.clone(), named]).is_ok());
        let not = FlowFilter::default().and_not(Match::Container("3f2".into()));
        assert!(not.finish(both).is_ok());
        // Only hex can be an id: `web` is a name only.
        assert!(!by("we").matches(&web));
        assert!(by(&WEB_ID[..12]).matches(&web));
        assert!(
            !by(&WEB_ID[1..12]).matches(&web),
            "a prefix, not a substring"
        );
    }

    #[test]
    fn last_keeps_the_flows_seen_most_recently_oldest_first() {
        let seen = |port: u16, last: i64| {
            let mut e = entry();
            e.src_port = port;
            e.last_seen = Timestamp::from_second(last).unwrap();
            e
        };
        let entries = vec![seen(1, 300), seen(2, 100), seen(3, 500), seen(4, 400)];
        let last = |n| FlowFilter {
            last: Some(n),
            ..FlowFilter::default()
        };
        let ports = |f: FlowFilter| -> Vec<u16> {
            f.finish(entries.clone())
                .unwrap()
                .iter()
                .map(|e| e.src_port)
                .collect()
        };
        assert_eq!(ports(last(2)), [4, 3]);
        assert_eq!(ports(last(10)), [2, 1, 4, 3]);
        assert_eq!(ports(FlowFilter::default()), [1, 2, 3, 4], "order kept");
    }

    #[test]
    fn only_forwarded_says_when_drops_has_nothing_to_show() {
        let forwarded = Match::Verdict(Verdict::Forwarded);
        assert!(FlowFilter::with(forwarded.clone()).only_forwarded());
        assert!(
            !FlowFilter::with(forwarded)
                .and(Match::Verdict(Verdict::Dropped))
                .only_forwarded()
        );
        assert!(!FlowFilter::default().only_forwarded());
        let neither = FlowFilter::default()
            .and_not(Match::Verdict(Verdict::Dropped))
            .and_not(Match::Verdict(Verdict::Audited));
        assert!(neither.only_forwarded());
        assert!(
            !FlowFilter::default()
                .and_not(Match::Verdict(Verdict::Dropped))
                .only_forwarded()
        );
    }

    #[test]
    fn dns_queries_narrow_by_place_verdict_and_time() {
        let query = DnsEntry::example();
        assert!(FlowFilter::default().matches_dns(&query));
        let wanted = FlowFilter {
            since: Some(Timestamp::from_second(100).unwrap()),
            ..FlowFilter::with(Match::Container("web".into()))
                .and(Match::Network("front".into()))
                .and(Match::Verdict(Verdict::Forwarded))
                // Flow-only kinds do not apply to DNS queries.
                .and(Match::Proto(Protocol::Tcp))
                .and_not(Match::Port(53))
        };
        assert!(wanted.matches_dns(&query));
        for filter in [
            FlowFilter::with(Match::Container("db".into())),
            FlowFilter::with(Match::Service("backend".into())),
            FlowFilter::with(Match::Verdict(Verdict::Dropped)),
            FlowFilter::default().and_not(Match::Container("web".into())),
            FlowFilter {
                since: Some(Timestamp::from_second(101).unwrap()),
                ..FlowFilter::default()
            },
            FlowFilter {
                until: Some(Timestamp::from_second(99).unwrap()),
                ..FlowFilter::default()
            },
        ] {
            assert!(!filter.matches_dns(&query), "{filter:?}");
        }
    }
}
