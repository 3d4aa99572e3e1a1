//! Filters as URL query strings: what the CLI sends and what the server
//! accepts, checked in one place so that `curl` users and the CLI meet the
//! same rules and the same messages.
//!
//! `container`, `service`, `project`, `network`: names, exact (`container`
//! also takes a prefix of a container's id). `verdict`: `forwarded`,
//! `dropped` or `audited`. `reason`: a drop reason (`host-access`, …).
//! `proto`: `tcp`, `udp`, `icmp`, `icmpv6`, `arp/other` or an IP protocol
//! number. `port`: 1–65535, either end. `direction`: `ingress` or
//! `egress`. `ip`: an address at either end; `cidr`: a network holding
//! either end; `from-ip`, `to-ip`: an address or network holding the
//! source, the destination. Each may be given several times (any of the
//! values matches) and with `not-` before the key (`not-cidr=10.0.0.0/8`:
//! none of those values may match). `since`, `until`: an RFC 3339 time
//! (`2025-11-27T22:10:00Z`) or a duration back from now (`90s`, `5m`,
//! `1h30m`, `5 minutes ago`), once each. `last`: how many of the flows
//! seen most recently, once.

use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use netwatch_common::{
    protocol::Protocol,
    reason::{Direction, DropReason, Verdict},
};

use crate::{
    flows::{FlowFilter, FlowReason, filter::Match},
    policy::cidr::Cidr,
};

/// The keys a filter query may hold besides [`Match::KEYS`] (and those
/// with `not-` before them).
pub const WINDOW_KEYS: [&str; 3] = ["since", "until", "last"];

/// What a negated key starts with.
pub const NOT_PREFIX: &str = "not-";

/// Why a query string was refused; each message says what to send instead.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(
        "unknown filter `{}`: the filters are container, service, project, network, verdict, reason, proto, port, direction, ip, cidr, from-ip, to-ip (each also as not-KEY), since, until and last",
        shown(.0)
    )]
    UnknownKey(String),
    #[error("filter `{}` given twice: give since, until and last once each", shown(.0))]
    Repeated(String),
    #[error("filter `{}` is empty: give a value or leave it out", shown(key))]
    Empty { key: String },
    #[error("`{}` cannot be negated: not- goes with the filters that match flows, not with since, until and last", shown(.0))]
    NotNegatable(String),
    #[error("bad {key} `{}`: {expected}", shown(value))]
    BadValue {
        key: &'static str,
        value: String,
        expected: String,
    },
}

/// Longest piece of a client's text an error message repeats.
const SHOWN_MAX: usize = 64;

/// A client's text as an error message repeats it: control characters
/// escaped (the message stays one line, in the log too) and cut at
/// [`SHOWN_MAX`] characters.
fn shown(text: &str) -> String {
    let escaped: String = text.escape_debug().collect();
    match escaped.char_indices().nth(SHOWN_MAX) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

/// The drop reasons users can name (every reason but `none`).
pub fn reason_names() -> Vec<&'static str> {
    DropReason::ALL
        .iter()
        .filter(|r| **r != DropReason::None)
        .map(|r| r.name())
        .collect()
}

/// Parses `since`: an RFC 3339 time, or a duration back from `now`.
///
/// # Errors
/// Neither form.
pub fn parse_since(text: &str, now: Timestamp) -> Result<Timestamp, QueryError> {
    parse_time("since", text, now)
}

/// Parses `since` or `until` (`key`): an RFC 3339 time, or a duration back
/// from `now`.
///
/// # Errors
/// Neither form.
pub fn parse_time(key: &'static str, text: &str, now: Timestamp) -> Result<Timestamp, QueryError> {
    let bad = || QueryError::BadValue {
        key,
        value: text.to_string(),
        expected: "give a duration back from now (30s, 5m, 1h30m) or an RFC 3339 time \
                   (2025-11-27T22:10:00Z)"
            .to_string(),
    };
    if let Ok(time) = text.parse::<Timestamp>() {
        return Ok(time);
    }
    let duration: SignedDuration = text.trim().parse().map_err(|_| bad())?;
    // `5m ago` (negative in jiff's friendly format) means the same as `5m`.
    now.checked_sub(duration.unsigned_abs()).map_err(|_| bad())
}

/// Checks a verdict name.
///
/// # Errors
/// Not `forwarded`, `dropped` or `audited`.
pub fn parse_verdict(text: &str) -> Result<Verdict, QueryError> {
    match text.parse() {
        Ok(verdict) => Ok(verdict),
        Err(_) => Err(QueryError::BadValue {
            key: "verdict",
            value: text.to_string(),
            expected: "give forwarded, dropped or audited".to_string(),
        }),
    }
}

/// Checks a drop reason name.
///
/// # Errors
/// Not a reason netwatch drops for.
pub fn parse_reason(text: &str) -> Result<FlowReason, QueryError> {
    match text.parse() {
        // `unknown` is what a drop group without a reason says, not a
        // reason to ask for.
        Ok(FlowReason::Unknown) | Err(_) => Err(QueryError::BadValue {
            key: "reason",
            value: text.to_string(),
            expected: format!(
                "give one of {}, or a kernel drop reason (kernel:netfilter_drop, kernel:no_socket, …)",
                reason_names().join(", ")
            ),
        }),
        Ok(reason) => Ok(reason),
    }
}

/// Checks a protocol: a name, or a number (6, 17, 1 and 58 become their
/// names, as flows carry them).
///
/// # Errors
/// Neither a known name nor a number up to 255.
pub fn parse_proto(text: &str) -> Result<Protocol, QueryError> {
    match text.parse() {
        // `*` is what a summary of flows says, not a protocol to ask for.
        Ok(Protocol::Any) | Err(_) => Err(QueryError::BadValue {
            key: "proto",
            value: text.to_string(),
            expected: format!(
                "give one of {} or an IP protocol number",
                Protocol::NAMED
                    .iter()
                    .filter_map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
        Ok(proto) => Ok(proto),
    }
}

/// Checks a port.
///
/// # Errors
/// Not a number from 1 to 65535.
pub fn parse_port(text: &str) -> Result<u16, QueryError> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| QueryError::BadValue {
            key: "port",
            value: text.to_string(),
            expected: "give a port number from 1 to 65535".to_string(),
        })
}

/// Checks a direction.
///
/// # Errors
/// Not `ingress` or `egress`.
pub fn parse_direction(text: &str) -> Result<Direction, QueryError> {
    text.parse().map_err(|_| QueryError::BadValue {
        key: "direction",
        value: text.to_string(),
        expected: "give ingress (what containers received) or egress (what they sent)".to_string(),
    })
}

/// Checks an address (`ip`).
///
/// # Errors
/// Not an IPv4 or IPv6 address; a network says to use `cidr`.
pub fn parse_ip(text: &str) -> Result<IpAddr, QueryError> {
    text.parse().map_err(|_| QueryError::BadValue {
        key: "ip",
        value: text.to_string(),
        expected: if text.contains('/') {
            format!(
                "give one address (172.30.0.2, fd00::2); for a network use --cidr {}",
                shown(text)
            )
        } else {
            "give an IPv4 or IPv6 address (172.30.0.2, fd00::2)".to_string()
        },
    })
}

/// Checks a network (`cidr`, and `from-ip`/`to-ip`, which take an address
/// as well).
///
/// # Errors
/// Not an address with an optional prefix length that fits its family.
pub fn parse_cidr(key: &'static str, text: &str) -> Result<Cidr, QueryError> {
    text.parse().map_err(|_| QueryError::BadValue {
        key,
        value: text.to_string(),
        expected: "give an address and a prefix length, 0-32 for IPv4 (10.0.0.0/8) or 0-128 for \
                   IPv6 (fd00::/64)"
            .to_string(),
    })
}

/// Checks `last`.
///
/// # Errors
/// Not a number of flows, 1 or more.
pub fn parse_last(text: &str) -> Result<usize, QueryError> {
    text.parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| QueryError::BadValue {
            key: "last",
            value: text.to_string(),
            expected: "give how many flows, 1 or more".to_string(),
        })
}

/// Parses the value of filter `key` (one of [`Match::KEYS`]).
///
/// # Errors
/// The value does not parse; the message says what to give.
pub fn parse_match(key: &str, value: &str) -> Result<Match, QueryError> {
    Ok(match key {
        "container" => Match::Container(value.to_string()),
        "service" => Match::Service(value.to_string()),
        "project" => Match::Project(value.to_string()),
        "host" => Match::Host(value.to_string()),
        "network" => Match::Network(value.to_string()),
        "verdict" => Match::Verdict(parse_verdict(value)?),
        "reason" => Match::Reason(parse_reason(value)?),
        "proto" => Match::Proto(parse_proto(value)?),
        "port" => Match::Port(parse_port(value)?),
        "direction" => Match::Direction(parse_direction(value)?),
        "ip" => Match::Ip(parse_ip(value)?),
        "cidr" => Match::Cidr(parse_cidr("cidr", value)?),
        "from-ip" => Match::FromIp(parse_cidr("from-ip", value)?),
        "to-ip" => Match::ToIp(parse_cidr("to-ip", value)?),
        other => return Err(QueryError::UnknownKey(other.to_string())),
    })
}

/// Parses a query string (without the `?`) into a filter. An empty string
/// is the empty filter.
///
/// # Errors
/// An unknown key, a repeated or negated `since`, `until` or `last`, an
/// empty value, or a value that does not parse; the message names it and
/// says what to give.
pub fn parse_filter(query: &str, now: Timestamp) -> Result<FlowFilter, QueryError> {
    // form_urlencoded (under serde_urlencoded) never fails on a
    // `Vec<(String, String)>`: bad escapes are kept as they are.
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let mut filter = FlowFilter::default();
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in &pairs {
        let (negated, base) = match key.strip_prefix(NOT_PREFIX) {
            Some(base) => (true, base),
            None => (false, key.as_str()),
        };
        let window = WINDOW_KEYS.iter().find(|k| **k == base);
        if window.is_none() && !Match::KEYS.contains(&base) {
            return Err(QueryError::UnknownKey(key.clone()));
        }
        if value.is_empty() {
            return Err(QueryError::Empty { key: key.clone() });
        }
        let Some(window) = window else {
            let what = parse_match(base, value)?;
            filter
                .terms
                .push(crate::flows::filter::Term { negated, what });
            continue;
        };
        if negated {
            return Err(QueryError::NotNegatable(key.clone()));
        }
        if seen.contains(window) {
            return Err(QueryError::Repeated(key.clone()));
        }
        seen.push(window);
        match *window {
            "since" => filter.since = Some(parse_time("since", value, now)?),
            "until" => filter.until = Some(parse_time("until", value, now)?),
            _ => filter.last = Some(parse_last(value)?),
        }
    }
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && until < since
    {
        return Err(QueryError::BadValue {
            key: "until",
            value: until.to_string(),
            expected: format!("give a time after since ({since})"),
        });
    }
    Ok(filter)
}

/// The query string for `filter` (empty for the empty filter); `since` and
/// `until` are sent as RFC 3339 times.
pub fn filter_query(filter: &FlowFilter) -> String {
    let mut pairs: Vec<(String, String)> = filter
        .terms
        .iter()
        .map(|t| {
            let key = if t.negated {
                format!("{NOT_PREFIX}{}", t.what.key())
            } else {
                t.what.key().to_string()
            };
            (key, t.what.value_text())
        })
        .collect();
    let times = [("since", filter.since), ("until", filter.until)];
    for (key, time) in times {
        if let Some(time) = time {
            pairs.push((key.to_string(), time.to_string()));
        }
    }
    if let Some(last) = filter.last {
        pairs.push(("last".to_string(), last.to_string()));
    }
    // Pairs of strings: serde_urlencoded takes them all.
    serde_urlencoded::to_string(&pairs).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_repeat_hostile_text_on_one_short_line() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        for query in [
            "con%0Atainer=a",
            "port=1%0D%0Ainjected",
            "since=1m&since=b%0A",
            &format!("verdict={}", "x".repeat(10_000)),
            // A network given as an address: the hint repeats it (found by
            // the api_query fuzz target).
            "ip=10.0.0.0/8%0Ainjected",
            &format!("ip=10.0.0.0/{}", "9".repeat(10_000)),
        ] {
            let message = parse_filter(query, now).unwrap_err().to_string();
            assert!(!message.contains(['\n', '\r']), "{message:?}");
            assert!(
                message.len() < 400,
                "{} bytes: {message:.80}",
                message.len()
            );
        }
    }

    fn now() -> Timestamp {
        "2025-11-27T22:10:00Z".parse().unwrap()
    }

    #[test]
    fn every_filter_round_trips_through_the_query_string() {
        let filter = FlowFilter {
            since: Some("2025-11-27T22:05:00Z".parse().unwrap()),
            until: Some("2025-11-27T22:07:00Z".parse().unwrap()),
            last: Some(20),
            ..FlowFilter::with(Match::Container("web 1".into()))
                .and(Match::Container("3f2a".into()))
                .and(Match::Service("front&end".into()))
                .and(Match::Project("shop".into()))
                .and(Match::Network("app_front".into()))
                .and(Match::Verdict(Verdict::Dropped))
                .and(Match::Reason(DropReason::HostAccess.into()))
                .and(Match::Proto(Protocol::Udp))
                .and(Match::Port(53))
                .and(Match::Direction(Direction::Ingress))
                .and(Match::Ip("fd00::2".parse().unwrap()))
                .and_not(Match::Cidr("10.0.0.0/8".parse().unwrap()))
                .and(Match::FromIp("172.30.0.2".parse().unwrap()))
                .and_not(Match::ToIp("fd00::/64".parse().unwrap()))
        };
        let query = filter_query(&filter);
        assert!(
            query.contains("verdict=dropped&reason=host-access&proto=udp"),
            "{query}"
        );
        assert!(query.contains("&not-cidr=10.0.0.0%2F8&"), "{query}");
        assert_eq!(parse_filter(&query, now()), Ok(filter));
        let kernel = FlowFilter::with(Match::Reason(FlowReason::kernel("netfilter_drop")))
            .and(Match::Proto(Protocol::Other(47)));
        let query = filter_query(&kernel);
        assert_eq!(query, "reason=kernel%3Anetfilter_drop&proto=47");
        assert_eq!(parse_filter(&query, now()), Ok(kernel));
        assert_eq!(filter_query(&FlowFilter::default()), "");
        assert_eq!(parse_filter("", now()), Ok(FlowFilter::default()));
    }

    #[test]
    fn queries_of_older_clients_mean_what_they_meant() {
        // Before repeatable and negated filters: one value per key.
        let old = "container=web&verdict=dropped&port=5432&since=2025-11-27T22:05:00Z";
        let expected = FlowFilter {
            since: Some("2025-11-27T22:05:00Z".parse().unwrap()),
            ..FlowFilter::with(Match::Container("web".into()))
                .and(Match::Verdict(Verdict::Dropped))
                .and(Match::Port(5432))
        };
        assert_eq!(parse_filter(old, now()), Ok(expected));
    }

    #[test]
    fn since_takes_a_duration_or_a_time() {
        assert_eq!(
            parse_since("5m", now()).unwrap(),
            "2025-11-27T22:05:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_since("1h30m", now()).unwrap(),
            "2025-11-27T20:40:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_since("2025-11-27T23:10:00+01:00", now()).unwrap(),
            now()
        );
        assert_eq!(
            parse_since("5 minutes ago", now()),
            parse_since("5m", now())
        );
        for bad in ["", "yesterday", "5 parsecs"] {
            assert!(parse_since(bad, now()).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_queries_say_what_to_give() {
        let error = |q: &str| parse_filter(q, now()).unwrap_err().to_string();
        assert!(error("contaner=web").contains("unknown filter `contaner`"));
        assert!(error("since=5m&since=1h").contains("given twice"));
        assert!(error("last=1&last=2").contains("given twice"));
        assert!(error("not-since=5m").contains("cannot be negated"));
        assert!(error("not-contaner=web").contains("unknown filter `not-contaner`"));
        assert_eq!(
            error("cidr=10.0.0.0/33"),
            "bad cidr `10.0.0.0/33`: give an address and a prefix length, 0-32 for IPv4 \
             (10.0.0.0/8) or 0-128 for IPv6 (fd00::/64)"
        );
        assert!(error("from-ip=fd00::/129").contains("0-128 for IPv6"));
        assert!(error("ip=10.0.0.0/8").contains("for a network use --cidr 10.0.0.0/8"));
        assert!(error("ip=web").contains("IPv4 or IPv6 address"));
        assert!(error("direction=outbound").contains("give ingress"));
        assert!(error("last=0").contains("1 or more"));
        assert!(error("last=-3").contains("1 or more"));
        assert!(error("until=later").contains("bad until"));
        assert!(
            error("since=2025-11-27T22:05:00Z&until=2025-11-27T22:00:00Z")
                .contains("give a time after since")
        );
        assert!(error("port=http").contains("from 1 to 65535"));
        assert!(error("port=0").contains("from 1 to 65535"));
        assert!(error("verdict=denied").contains("forwarded, dropped or audited"));
        assert!(error("reason=firewall").contains("host-access"));
        assert!(error("reason=kernel:").contains("kernel:netfilter_drop"));
        assert!(error("reason=kernel:NETFILTER_DROP").contains("kernel drop reason"));
        assert_eq!(
            parse_reason("kernel:netfilter_drop").map(|r| r.to_string()),
            Ok("kernel:netfilter_drop".to_string())
        );
        assert!(error("reason=unknown").contains("host-access"));
        assert!(error("reason=none").contains("host-access"));
        assert!(error("proto=*").contains("tcp, udp"));
        assert!(error("proto=sctpx").contains("tcp, udp"));
        assert!(error("since=soon").contains("RFC 3339"));
        assert!(error("container=").contains("is empty"));
    }

    #[test]
    fn protocol_numbers_become_names() {
        assert_eq!(parse_proto("6").unwrap().to_string(), "tcp");
        assert_eq!(parse_proto("UDP").unwrap().to_string(), "udp");
        assert_eq!(parse_proto("47").unwrap().to_string(), "47");
        assert_eq!(parse_proto("arp/other").unwrap(), Protocol::ArpOther);
        assert!(!reason_names().contains(&"none"));
    }
}
