//! One allow-list entry as written in a label: `CIDR[:port[/proto]]`.
//!
//! Accepted forms: `203.0.113.0/24`, `10.1.2.3:53/udp`, `10.0.0.0/8:5432/tcp`,
//! `fd00::/64`, `fd00::/64:443/tcp`, `[fd00::1]:53/udp`. An IPv6 address
//! followed by a port needs brackets or a prefix length, since `fd00::1:53`
//! is itself an address. `*` as the port means any port, so that "all UDP"
//! (`10.0.0.0/8:*/udp`) can be written and every rule has a spelling that
//! parses back to it.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    str::FromStr,
};

use netwatch_common::{
    endpoint::PortRule,
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
};

use super::cidr::{Cidr, CidrError};

/// Traffic to or from `cidr` with protocol `proto` and remote port `port`
/// is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllowRule {
    pub cidr: Cidr,
    /// IP protocol number; 0 = any.
    pub proto: u8,
    /// Remote TCP/UDP port; 0 = any.
    pub port: u16,
}

const SYNTAX: &str =
    "expected CIDR[:port[/proto]], e.g. 10.0.0.0/8:5432/tcp, [fd00::1]:53/udp or fd00::/64";

/// Why an allow rule was rejected. Each message names the input and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("invalid allow rule {input:?}: {SYNTAX}")]
    Syntax { input: String },
    #[error("invalid allow rule {input:?}: {reason}")]
    Cidr { input: String, reason: CidrError },
    #[error("invalid allow rule {input:?}: port must be 1-65535, or * for any port")]
    Port { input: String },
    #[error(
        "invalid allow rule {input:?}: protocol must be tcp, udp, icmp, icmpv6, any or a number 0-255"
    )]
    Proto { input: String },
    #[error(
        "invalid allow rule {input:?}: only tcp and udp have ports; write * as the port to allow all {proto} traffic"
    )]
    PortWithoutPorts { input: String, proto: String },
}

impl AllowRule {
    /// The rule as the datapath stores it in an allow-list entry.
    pub fn to_port_rule(&self) -> PortRule {
        PortRule {
            proto: self.proto,
            _pad: 0,
            port: self.port,
        }
    }
}

impl FromStr for AllowRule {
    type Err = RuleError;

    fn from_str(input: &str) -> Result<AllowRule, RuleError> {
        let (cidr, port_spec) = split_cidr(input)?;
        let (port, proto) = match port_spec {
            None => (0, 0),
            Some(spec) => parse_port_spec(input, spec)?,
        };
        Ok(AllowRule { cidr, proto, port })
    }
}

/// Separates the prefix from the `port[/proto]` part.
fn split_cidr(input: &str) -> Result<(Cidr, Option<&str>), RuleError> {
    let syntax = || RuleError::Syntax {
        input: input.to_owned(),
    };
    let cidr = |text: &str| {
        Cidr::from_str(text).map_err(|reason| RuleError::Cidr {
            input: input.to_owned(),
            reason,
        })
    };

    if let Some(bracketed) = input.strip_prefix('[') {
        let (inner, after) = bracketed.split_once(']').ok_or_else(syntax)?;
        if after.is_empty() {
            return Ok((cidr(inner)?, None));
        }
        if let Some(spec) = after.strip_prefix(':') {
            return Ok((cidr(inner)?, Some(spec)));
        }
        // `[fd00::]/64` or `[fd00::]/64:443`.
        let prefixed = after.strip_prefix('/').ok_or_else(syntax)?;
        if inner.contains('/') {
            return Err(syntax());
        }
        let (prefix, spec) = match prefixed.split_once(':') {
            Some((prefix, spec)) => (prefix, Some(spec)),
            None => (prefixed, None),
        };
        return Ok((cidr(&format!("{inner}/{prefix}"))?, spec));
    }

    if let Ok(addr) = IpAddr::from_str(input) {
        return Ok((Cidr::host(addr), None));
    }

    if let Some((addr, rest)) = input.split_once('/')
        && let Ok(ip) = IpAddr::from_str(addr)
    {
        let (prefix, spec) = match rest.split_once(':') {
            Some((prefix, spec)) => (prefix, Some(spec)),
            None => (rest, None),
        };
        // `fd00::1:53/udp`: an unbracketed IPv6 address with a port.
        if ip.is_ipv6() && !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let cidr_text = input
            .get(..addr.len() + 1 + prefix.len())
            .ok_or_else(syntax)?;
        return Ok((cidr(cidr_text)?, spec));
    }

    let (addr, spec) = match input.split_once(':') {
        Some((addr, spec)) => (addr, Some(spec)),
        None => (input, None),
    };
    if spec.is_some()
        && let Ok(v4) = Ipv4Addr::from_str(addr)
    {
        return Ok((Cidr::host(IpAddr::V4(v4)), spec));
    }
    // Not a rule; let the CIDR parser say what is wrong with the address part
    // when there is one.
    match cidr(addr) {
        Err(e) if !addr.is_empty() => Err(e),
        _ => Err(syntax()),
    }
}

/// Parses `port[/proto]` into (port, proto).
fn parse_port_spec(input: &str, spec: &str) -> Result<(u16, u8), RuleError> {
    let (port_text, proto_text) = match spec.split_once('/') {
        Some((port, proto)) => (port, Some(proto)),
        None => (spec, None),
    };
    let port = if port_text == "*" {
        0
    } else {
        parse_decimal(port_text)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0)
            .ok_or_else(|| RuleError::Port {
                input: input.to_owned(),
            })?
    };
    let proto = match proto_text {
        None => 0,
        Some(text) => parse_proto(text).ok_or_else(|| RuleError::Proto {
            input: input.to_owned(),
        })?,
    };
    // A port rule on a protocol without ports would never match (the
    // datapath reads ports from TCP and UDP only): refuse it rather than
    // silently allow nothing.
    if port != 0 && !matches!(proto, 0 | IPPROTO_TCP | IPPROTO_UDP) {
        return Err(RuleError::PortWithoutPorts {
            input: input.to_owned(),
            proto: proto_name(proto),
        });
    }
    Ok((port, proto))
}

/// Digits only: `u32::from_str` would also take a sign.
fn parse_decimal(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    u32::from_str(text).ok()
}

fn parse_proto(text: &str) -> Option<u8> {
    match text.to_ascii_lowercase().as_str() {
        "any" => Some(0),
        "tcp" => Some(IPPROTO_TCP),
        "udp" => Some(IPPROTO_UDP),
        "icmp" => Some(IPPROTO_ICMP),
        "icmpv6" => Some(IPPROTO_ICMPV6),
        _ => parse_decimal(text).and_then(|n| u8::try_from(n).ok()),
    }
}

fn proto_name(proto: u8) -> String {
    match proto {
        0 => "any".to_owned(),
        IPPROTO_TCP => "tcp".to_owned(),
        IPPROTO_UDP => "udp".to_owned(),
        IPPROTO_ICMP => "icmp".to_owned(),
        IPPROTO_ICMPV6 => "icmpv6".to_owned(),
        n => n.to_string(),
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let is_host = self.cidr.prefix_len() == if self.cidr.is_ipv4() { 32 } else { 128 };
        let has_port_spec = self.port != 0 || self.proto != 0;
        match (is_host, self.cidr.addr()) {
            (true, IpAddr::V6(addr)) if has_port_spec => write!(f, "[{addr}]")?,
            (true, addr) => write!(f, "{addr}")?,
            (false, _) => write!(f, "{}", self.cidr)?,
        }
        if !has_port_spec {
            return Ok(());
        }
        match self.port {
            0 => f.write_str(":*")?,
            port => write!(f, ":{port}")?,
        }
        if self.proto != 0 {
            write!(f, "/{}", proto_name(self.proto))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> AllowRule {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> RuleError {
        match s.parse::<AllowRule>() {
            Ok(r) => panic!("{s} parsed as {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_the_documented_forms() {
        let cases = [
            ("203.0.113.0/24", "203.0.113.0/24", 0, 0),
            ("10.0.0.0/8:5432/tcp", "10.0.0.0/8", IPPROTO_TCP, 5432),
            ("10.1.2.3:53/udp", "10.1.2.3/32", IPPROTO_UDP, 53),
            ("10.1.2.3:53", "10.1.2.3/32", 0, 53),
            ("10.1.2.3", "10.1.2.3/32", 0, 0),
            ("fd00::/64", "fd00::/64", 0, 0),
            ("fd00::/64:443/tcp", "fd00::/64", IPPROTO_TCP, 443),
            ("[fd00::1]:53/udp", "fd00::1/128", IPPROTO_UDP, 53),
            ("[fd00::1]", "fd00::1/128", 0, 0),
            ("[fd00::]/64:443", "fd00::/64", 0, 443),
            ("[fd00::]/64", "fd00::/64", 0, 0),
            ("fd00::1", "fd00::1/128", 0, 0),
            ("10.0.0.0/8:*/udp", "10.0.0.0/8", IPPROTO_UDP, 0),
            ("10.0.0.0/8:*/icmp", "10.0.0.0/8", IPPROTO_ICMP, 0),
            ("fd00::/8:*/icmpv6", "fd00::/8", IPPROTO_ICMPV6, 0),
            ("10.0.0.0/8:*/47", "10.0.0.0/8", 47, 0),
            ("10.0.0.0/8:80/any", "10.0.0.0/8", 0, 80),
            ("10.0.0.0/8:80/TCP", "10.0.0.0/8", IPPROTO_TCP, 80),
            ("10.0.0.0/8:80/6", "10.0.0.0/8", IPPROTO_TCP, 80),
            ("10.0.0.0/8:65535/udp", "10.0.0.0/8", IPPROTO_UDP, 65535),
            ("10.9.9.9/8:1", "10.0.0.0/8", 0, 1),
        ];
        for (input, c, proto, port) in cases {
            let want = AllowRule {
                cidr: cidr(c),
                proto,
                port,
            };
            assert_eq!(rule(input), want, "{input}");
        }
    }

    #[test]
    fn rejects_bad_rules() {
        assert!(matches!(err("10.0.0.0/8:0/tcp"), RuleError::Port { .. }));
        assert!(matches!(
            err("10.0.0.0/8:65536/tcp"),
            RuleError::Port { .. }
        ));
        assert!(matches!(
            err("10.0.0.0/8:99999999999"),
            RuleError::Port { .. }
        ));
        assert!(matches!(err("10.0.0.0/8:"), RuleError::Port { .. }));
        assert!(matches!(err("10.0.0.0/8:+53"), RuleError::Port { .. }));
        assert!(matches!(err("10.0.0.0/8:53/"), RuleError::Proto { .. }));
        assert!(matches!(err("10.0.0.0/8:53/sctp"), RuleError::Proto { .. }));
        assert!(matches!(err("10.0.0.0/8:53/256"), RuleError::Proto { .. }));
        assert!(matches!(
            err("10.0.0.0/8:8/icmp"),
            RuleError::PortWithoutPorts { .. }
        ));
        assert!(matches!(
            err("[fd00::1]:8/icmpv6"),
            RuleError::PortWithoutPorts { .. }
        ));
        assert!(matches!(
            err("10.0.0.0/8:80/47"),
            RuleError::PortWithoutPorts { .. }
        ));
        assert!(matches!(err("10.0.0.0/33:53"), RuleError::Cidr { .. }));
        assert!(matches!(err("10.0.0/8"), RuleError::Cidr { .. }));
        assert!(matches!(err("fd00::1:53/udp"), RuleError::Syntax { .. }));
        assert!(matches!(err("[fd00::1:53/udp"), RuleError::Syntax { .. }));
        assert!(matches!(err("[fd00::1]53"), RuleError::Syntax { .. }));
        assert!(matches!(err("[fd00::/64]/64"), RuleError::Syntax { .. }));
        assert!(matches!(err(""), RuleError::Syntax { .. }));
        assert!(matches!(err(":53"), RuleError::Syntax { .. }));
    }

    #[test]
    fn error_messages_are_one_line_and_say_what_is_expected() {
        assert_eq!(
            err("10.0.0.0/33:53").to_string(),
            r#"invalid allow rule "10.0.0.0/33:53": invalid CIDR "10.0.0.0/33": prefix length must be 0-32 for IPv4"#
        );
        assert_eq!(
            err("10.0.0.0/8:0").to_string(),
            r#"invalid allow rule "10.0.0.0/8:0": port must be 1-65535, or * for any port"#
        );
        assert_eq!(
            err("10.0.0.0/8:8/icmp").to_string(),
            r#"invalid allow rule "10.0.0.0/8:8/icmp": only tcp and udp have ports; write * as the port to allow all icmp traffic"#
        );
        assert!(
            err("fd00::1:53/udp")
                .to_string()
                .contains("[fd00::1]:53/udp")
        );
        for bad in ["", "x", "10.0.0.0/8:53/sctp", "fd00::1:53/udp"] {
            assert!(!err(bad).to_string().contains('\n'), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "203.0.113.0/24",
            "10.0.0.0/8:5432/tcp",
            "10.1.2.3:53/udp",
            "10.1.2.3:53",
            "10.1.2.3",
            "fd00::/64",
            "fd00::/64:443/tcp",
            "[fd00::1]:53/udp",
            "fd00::1",
            "10.0.0.0/8:*/udp",
            "10.0.0.0/8:*/47",
            "[fd00::1]:*/icmpv6",
        ] {
            assert_eq!(rule(s).to_string(), s);
        }
        for s in [
            "[fd00::]/64:443",
            "10.0.0.0/8:80/any",
            "10.0.0.0/8:*",
            "[fd00::1]",
        ] {
            assert_eq!(rule(&rule(s).to_string()), rule(s), "{s}");
        }
    }

    #[test]
    fn port_rule_carries_proto_and_port() {
        let r = rule("10.0.0.0/8:5432/tcp").to_port_rule();
        assert_eq!((r.proto, r.port, r._pad), (IPPROTO_TCP, 5432, 0));
    }
}
