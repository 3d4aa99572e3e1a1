//! A flow's protocol as users name it: `tcp`, `udp`, `icmp`, `icmpv6`,
//! `arp/other` for frames without an IP header, or the IP protocol number;
//! `*` for a summary of flows of any protocol.

use crate::{
    flow::family,
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
};

/// The protocol of a flow. Build it with [`Protocol::of`] or
/// [`Protocol::number`], which never make `Other` of a named protocol's
/// number, so equal protocols compare equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    /// No IP header (ARP, or not parsed far enough to know).
    ArpOther,
    /// Any other IP protocol, by number.
    Other(u8),
    /// Flows of any protocol: a summary of several (`*`).
    Any,
}

impl Protocol {
    /// The named protocols, in the order users are told them.
    pub const NAMED: [Protocol; 5] = [
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Icmp,
        Protocol::Icmpv6,
        Protocol::ArpOther,
    ];

    /// A flow key's protocol number and [`family`].
    pub const fn of(proto: u8, family: u8) -> Protocol {
        if proto == 0 && family == family::NONE {
            Protocol::ArpOther
        } else {
            Protocol::number(proto)
        }
    }

    /// An IP protocol number.
    pub const fn number(proto: u8) -> Protocol {
        match proto {
            IPPROTO_TCP => Protocol::Tcp,
            IPPROTO_UDP => Protocol::Udp,
            IPPROTO_ICMP => Protocol::Icmp,
            IPPROTO_ICMPV6 => Protocol::Icmpv6,
            other => Protocol::Other(other),
        }
    }

    /// The name of a named protocol; `None` for a number.
    pub const fn name(self) -> Option<&'static str> {
        match self {
            Protocol::Tcp => Some("tcp"),
            Protocol::Udp => Some("udp"),
            Protocol::Icmp => Some("icmp"),
            Protocol::Icmpv6 => Some("icmpv6"),
            Protocol::ArpOther => Some("arp/other"),
            Protocol::Any => Some("*"),
            Protocol::Other(_) => None,
        }
    }

    /// ICMP or ICMPv6, whose "ports" are a type and a code.
    pub const fn is_icmp(self) -> bool {
        matches!(self, Protocol::Icmp | Protocol::Icmpv6)
    }
}

#[cfg(feature = "serde")]
mod text {
    use core::{fmt, str::FromStr};

    use super::Protocol;
    use crate::reason::UnknownName;

    impl fmt::Display for Protocol {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            // `pad`: widths and alignment (`{:<8}`) apply, to numbers too.
            match (self.name(), self) {
                (Some(name), _) => f.pad(name),
                (None, Protocol::Other(n)) => {
                    let mut digits = [0u8; 3];
                    let mut start = digits.len();
                    let mut rest = *n;
                    loop {
                        start -= 1;
                        digits[start] = b'0' + rest % 10;
                        rest /= 10;
                        if rest == 0 {
                            break;
                        }
                    }
                    f.pad(core::str::from_utf8(&digits[start..]).unwrap_or("?"))
                }
                (None, _) => Ok(()),
            }
        }
    }

    /// A name (any case), a number, or `*`; the numbers of named protocols
    /// read as those (`6` is `tcp`).
    impl FromStr for Protocol {
        type Err = UnknownName;

        fn from_str(text: &str) -> Result<Protocol, UnknownName> {
            if text == "*" {
                return Ok(Protocol::Any);
            }
            if let Some(named) = Protocol::NAMED
                .into_iter()
                .find(|p| p.name().is_some_and(|name| name.eq_ignore_ascii_case(text)))
            {
                return Ok(named);
            }
            // Digits only: `u8::from_str` would also take a `+`.
            if !text.is_empty()
                && text.bytes().all(|b| b.is_ascii_digit())
                && let Ok(n) = text.parse::<u8>()
            {
                return Ok(Protocol::number(n));
            }
            Err(UnknownName { what: "protocol" })
        }
    }

    /// As its text: `"tcp"`, `"47"`.
    impl serde::Serialize for Protocol {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            match self.name() {
                Some(name) => serializer.serialize_str(name),
                None => serializer.collect_str(self),
            }
        }
    }

    impl<'de> serde::Deserialize<'de> for Protocol {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Text;
            impl serde::de::Visitor<'_> for Text {
                type Value = Protocol;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a protocol name or number")
                }

                fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Protocol, E> {
                    text.parse()
                        .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(text), &self))
                }
            }
            deserializer.deserialize_str(Text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_of_named_protocols_are_their_names() {
        assert_eq!(Protocol::of(6, family::IPV4), Protocol::Tcp);
        assert_eq!(Protocol::of(58, family::IPV6), Protocol::Icmpv6);
        assert_eq!(Protocol::of(0, family::NONE), Protocol::ArpOther);
        assert_eq!(Protocol::of(0, family::IPV4), Protocol::Other(0));
        assert_eq!(Protocol::of(47, family::IPV6), Protocol::Other(47));
        assert!(Protocol::Icmp.is_icmp() && !Protocol::Udp.is_icmp());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_and_text_forms_are_the_names_flows_always_carried() {
        extern crate std;
        use std::string::ToString;

        for (proto, text) in [
            (Protocol::Tcp, "tcp"),
            (Protocol::Udp, "udp"),
            (Protocol::Icmp, "icmp"),
            (Protocol::Icmpv6, "icmpv6"),
            (Protocol::ArpOther, "arp/other"),
            (Protocol::Other(0), "0"),
            (Protocol::Other(47), "47"),
            (Protocol::Other(255), "255"),
            (Protocol::Any, "*"),
        ] {
            let json = serde_json::to_string(&proto).unwrap();
            assert_eq!(json, std::format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<Protocol>(&json).unwrap(), proto);
            assert_eq!(proto.to_string(), text);
            assert_eq!(std::format!("{proto:>4}|"), std::format!("{text:>4}|"));
            assert_eq!(text.parse::<Protocol>(), Ok(proto));
        }
        assert_eq!("TCP".parse::<Protocol>(), Ok(Protocol::Tcp));
        assert_eq!("17".parse::<Protocol>(), Ok(Protocol::Udp));
        for bad in ["", "+6", "256", "sctp", "-1"] {
            assert!(bad.parse::<Protocol>().is_err(), "{bad}");
        }
    }
}
