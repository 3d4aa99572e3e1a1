//! IP prefixes as users write them (`10.0.0.0/8`, `fd00::/64`, `10.1.2.3`).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// An IPv4 or IPv6 prefix. The address never has bits set past the prefix
/// length, so two spellings of one prefix compare equal and the address can
/// go into an LPM trie key as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a CIDR was rejected. Each message names the input and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error(
        "invalid CIDR {input:?}: expected an IPv4 or IPv6 address, optionally followed by /prefix-length (e.g. 10.0.0.0/8 or fd00::/64)"
    )]
    Address { input: String },
    #[error("invalid CIDR {input:?}: prefix length must be 0-{max} for {family}")]
    PrefixLength {
        input: String,
        max: u8,
        family: &'static str,
    },
}

impl Cidr {
    /// The prefix of `addr` with `prefix_len` bits; host bits are cleared.
    ///
    /// # Errors
    ///
    /// [`CidrError::PrefixLength`] when `prefix_len` exceeds the family's
    /// address width.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Cidr, CidrError> {
        let max = max_prefix_len(&addr);
        if prefix_len > max {
            return Err(CidrError::PrefixLength {
                input: format!("{addr}/{prefix_len}"),
                max,
                family: family_name(&addr),
            });
        }
        Ok(Cidr {
            addr: masked(addr, prefix_len),
            prefix_len,
        })
    }

    /// The prefix that holds exactly `addr`.
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            addr,
            prefix_len: max_prefix_len(&addr),
        }
    }

    /// The first address of the prefix (host bits are zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `addr` lies in the prefix; an address of the other family never does.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                masked(*addr, self.prefix_len) == self.addr
            }
            _ => false,
        }
    }

    /// Whether every address of `other` lies in `self`.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.prefix_len <= other.prefix_len && self.contains(&other.addr)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Cidr, CidrError> {
        let (addr_text, prefix_text) = match input.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (input, None),
        };
        let addr = IpAddr::from_str(addr_text).map_err(|_| CidrError::Address {
            input: input.to_owned(),
        })?;
        let Some(prefix_text) = prefix_text else {
            return Ok(Cidr::host(addr));
        };
        let max = max_prefix_len(&addr);
        let prefix_error = || CidrError::PrefixLength {
            input: input.to_owned(),
            max,
            family: family_name(&addr),
        };
        // `u8::from_str` takes a leading '+', which is not CIDR notation.
        if prefix_text.is_empty() || !prefix_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(prefix_error());
        }
        let prefix_len = u8::from_str(prefix_text).map_err(|_| prefix_error())?;
        if prefix_len > max {
            return Err(prefix_error());
        }
        Ok(Cidr {
            addr: masked(addr, prefix_len),
            prefix_len,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

fn max_prefix_len(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn family_name(addr: &IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// `addr` with every bit past `prefix_len` cleared; `prefix_len` is at most
/// the address width.
fn masked(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_prefixes_and_bare_addresses() {
        let c = cidr("10.0.0.0/8");
        assert_eq!(c.addr(), ip("10.0.0.0"));
        assert_eq!(c.prefix_len(), 8);
        assert_eq!(cidr("fd00::/64").prefix_len(), 64);
        assert_eq!(cidr("10.1.2.3"), cidr("10.1.2.3/32"));
        assert_eq!(cidr("fd00::1"), cidr("fd00::1/128"));
        assert_eq!(cidr("0.0.0.0/0").prefix_len(), 0);
        assert_eq!(cidr("::/0").prefix_len(), 0);
    }

    #[test]
    fn masks_host_bits() {
        assert_eq!(cidr("10.1.2.3/8").addr(), ip("10.0.0.0"));
        assert_eq!(cidr("10.1.2.3/8"), cidr("10.0.0.0/8"));
        assert_eq!(cidr("fd00::abcd/112").addr(), ip("fd00::"));
        assert_eq!(cidr("255.255.255.255/0").addr(), ip("0.0.0.0"));
        assert_eq!(cidr("10.1.2.3/31").addr(), ip("10.1.2.2"));
        assert_eq!(
            Cidr::new(ip("fd00::ffff"), 120).map(|c| c.addr()),
            Ok(ip("fd00::ff00"))
        );
    }

    #[test]
    fn rejects_bad_input_with_a_message_that_says_what_is_expected() {
        let msg = |s: &str| match s.parse::<Cidr>() {
            Ok(c) => panic!("{s} parsed as {c}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            msg("10.0.0.0/33"),
            r#"invalid CIDR "10.0.0.0/33": prefix length must be 0-32 for IPv4"#
        );
        assert_eq!(
            msg("fd00::/129"),
            r#"invalid CIDR "fd00::/129": prefix length must be 0-128 for IPv6"#
        );
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0.0/x",
        ] {
            assert!(msg(bad).contains("prefix length must be 0-32"), "{bad}");
        }
        for bad in [
            "",
            "/8",
            "10.0.0/8",
            "example.com",
            "10.0.0.0.0",
            "[fd00::]/64",
        ] {
            assert!(
                msg(bad).contains("expected an IPv4 or IPv6 address"),
                "{bad}"
            );
        }
        assert!(Cidr::new(ip("10.0.0.0"), 33).is_err());
    }

    #[test]
    fn contains_respects_family_and_prefix() {
        let c = cidr("10.1.0.0/16");
        assert!(c.contains(&ip("10.1.255.255")));
        assert!(c.contains(&ip("10.1.0.0")));
        assert!(!c.contains(&ip("10.2.0.0")));
        assert!(!c.contains(&ip("::ffff:10.1.0.1")));
        assert!(cidr("0.0.0.0/0").contains(&ip("1.2.3.4")));
        assert!(!cidr("0.0.0.0/0").contains(&ip("::1")));
        assert!(cidr("::/0").contains(&ip("::1")));
        assert!(cidr("fd00::/8").contains(&ip("fdff::1")));
        assert!(!cidr("fd00::/8").contains(&ip("fe00::1")));
        assert!(cidr("10.0.0.0/8").covers(&cidr("10.1.0.0/16")));
        assert!(!cidr("10.1.0.0/16").covers(&cidr("10.0.0.0/8")));
        assert!(cidr("10.1.0.0/16").covers(&cidr("10.1.0.0/16")));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "10.0.0.0/8",
            "fd00::/64",
            "10.1.2.3/32",
            "::/0",
            "0.0.0.0/0",
        ] {
            assert_eq!(cidr(s).to_string(), s);
            assert_eq!(cidr(&cidr(s).to_string()), cidr(s));
        }
        assert_eq!(cidr("10.1.2.3").to_string(), "10.1.2.3/32");
    }
}
