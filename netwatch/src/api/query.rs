//! Filters as URL query strings: what the CLI sends and what the server
//! accepts, checked in one place so that `curl` users and the CLI meet the
//! same rules and the same messages.
//!
//! `container`, `service`, `network`: names, exact. `verdict`: `forwarded`
//! or `dropped`. `reason`: a drop reason (`host-access`, …). `proto`:
//! `tcp`, `udp`, `icmp`, `icmpv6`, `arp/other` or an IP protocol number.
//! `port`: 1–65535, either end. `since`: an RFC 3339 time
//! (`2025-11-27T22:10:00Z`) or a duration back from now (`90s`, `5m`,
//! `1h30m`, `5 minutes ago`).

use jiff::{SignedDuration, Timestamp};
use netwatch_common::{
    protocol::Protocol,
    reason::{DropReason, Verdict},
};

use crate::flows::{FlowFilter, FlowReason};

/// The keys a filter query may hold.
pub const FILTER_KEYS: [&str; 8] = [
    "container",
    "service",
    "network",
    "verdict",
    "reason",
    "proto",
    "port",
    "since",
];

/// Why a query string was refused; each message says what to send instead.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(
        "unknown filter `{}`: the filters are container, service, network, verdict, reason, proto, port and since",
        shown(.0)
    )]
    UnknownKey(String),
    #[error("filter `{}` given twice: give each filter once", shown(.0))]
    Repeated(String),
    #[error("filter `{}` is empty: give a value or leave it out", shown(key))]
    Empty { key: String },
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
    let bad = || QueryError::BadValue {
        key: "since",
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

/// Parses a query string (without the `?`) into a filter. An empty string
/// is the empty filter.
///
/// # Errors
/// An unknown or repeated key, an empty value, or a value that does not
/// parse; the message names it and says what to give.
pub fn parse_filter(query: &str, now: Timestamp) -> Result<FlowFilter, QueryError> {
    // form_urlencoded (under serde_urlencoded) never fails on a
    // `Vec<(String, String)>`: bad escapes are kept as they are.
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let mut filter = FlowFilter::default();
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in &pairs {
        let Some(known) = FILTER_KEYS.iter().find(|k| **k == key) else {
            return Err(QueryError::UnknownKey(key.clone()));
        };
        if seen.contains(known) {
            return Err(QueryError::Repeated(key.clone()));
        }
        seen.push(known);
        if value.is_empty() {
            return Err(QueryError::Empty { key: key.clone() });
        }
        match *known {
            "container" => filter.container = Some(value.clone()),
            "service" => filter.service = Some(value.clone()),
            "network" => filter.network = Some(value.clone()),
            "verdict" => filter.verdict = Some(parse_verdict(value)?),
            "reason" => filter.reason = Some(parse_reason(value)?),
            "proto" => filter.proto = Some(parse_proto(value)?),
            "port" => filter.port = Some(parse_port(value)?),
            _ => filter.since = Some(parse_since(value, now)?),
        }
    }
    Ok(filter)
}

/// The query string for `filter` (empty for the empty filter); `since` is
/// sent as an RFC 3339 time.
pub fn filter_query(filter: &FlowFilter) -> String {
    // Strings, a u16 and a timestamp: serde_urlencoded takes them all.
    serde_urlencoded::to_string(filter).unwrap_or_default()
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
            "container=a&container=b%0A",
            &format!("verdict={}", "x".repeat(10_000)),
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
            container: Some("web 1".into()),
            service: Some("front&end".into()),
            network: Some("app_front".into()),
            verdict: Some(Verdict::Dropped),
            reason: Some(DropReason::HostAccess.into()),
            proto: Some(Protocol::Udp),
            port: Some(53),
            since: Some("2025-11-27T22:05:00Z".parse().unwrap()),
        };
        let query = filter_query(&filter);
        assert!(
            query.contains("verdict=dropped&reason=host-access&proto=udp"),
            "{query}"
        );
        assert_eq!(parse_filter(&query, now()), Ok(filter));
        let kernel = FlowFilter {
            reason: Some(FlowReason::kernel("netfilter_drop")),
            proto: Some(Protocol::Other(47)),
            ..FlowFilter::default()
        };
        let query = filter_query(&kernel);
        assert_eq!(query, "reason=kernel%3Anetfilter_drop&proto=47");
        assert_eq!(parse_filter(&query, now()), Ok(kernel));
        assert_eq!(filter_query(&FlowFilter::default()), "");
        assert_eq!(parse_filter("", now()), Ok(FlowFilter::default()));
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
        assert!(error("port=80&port=81").contains("given twice"));
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
