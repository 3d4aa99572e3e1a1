//! Verdicts, directions and the enumerated reasons a packet is dropped.

/// Why a packet was dropped. `None` means it was forwarded.
///
/// The numeric values index the per-CPU verdict counter maps, so they are
/// stable: append new reasons, never renumber.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum DropReason {
    /// Not dropped.
    None = 0,
    /// The remote address (destination on egress, source on ingress) is
    /// outside the network's prefixes and not allow-listed.
    NotInNetwork = 1,
    /// The remote address is the network's gateway or another address of the
    /// host, and the network has not opted in.
    HostAccess = 2,
    /// The source IP (or ARP sender IP, or ND target) is not the endpoint's own.
    SpoofedSource = 3,
    /// The source MAC (or ARP sender MAC) is not the endpoint's own.
    SpoofedMac = 4,
    /// A header is truncated or carries impossible values (IHL < 5, lengths
    /// beyond the frame, TCP data offset < 5, …).
    InvalidHeader = 5,
    /// An ethertype netwatch does not parse, or VLAN inside VLAN.
    UnsupportedProtocol = 6,
    /// Broadcast or multicast that is not ARP or neighbour discovery.
    BroadcastMulticast = 7,
    /// More IPv6 extension headers than the parser walks.
    ExtensionHeaderLimit = 8,
    /// Uplink: an inbound packet aimed at a protected (internal) prefix.
    ProtectedPrefix = 9,
}

/// Number of `DropReason` values; the length of the counter maps.
pub const DROP_REASON_COUNT: u32 = 10;

impl DropReason {
    /// Every reason, in numeric order.
    pub const ALL: [DropReason; DROP_REASON_COUNT as usize] = [
        DropReason::None,
        DropReason::NotInNetwork,
        DropReason::HostAccess,
        DropReason::SpoofedSource,
        DropReason::SpoofedMac,
        DropReason::InvalidHeader,
        DropReason::UnsupportedProtocol,
        DropReason::BroadcastMulticast,
        DropReason::ExtensionHeaderLimit,
        DropReason::ProtectedPrefix,
    ];

    /// The name users see in the CLI, logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::None => "none",
            DropReason::NotInNetwork => "not-in-network",
            DropReason::HostAccess => "host-access",
            DropReason::SpoofedSource => "spoofed-source",
            DropReason::SpoofedMac => "spoofed-mac",
            DropReason::InvalidHeader => "invalid-header",
            DropReason::UnsupportedProtocol => "unsupported-protocol",
            DropReason::BroadcastMulticast => "broadcast-multicast",
            DropReason::ExtensionHeaderLimit => "extension-header-limit",
            DropReason::ProtectedPrefix => "protected-prefix",
        }
    }

    /// Decodes a value read from a map or event; unknown values are `None`.
    pub const fn from_u8(value: u8) -> Option<DropReason> {
        if (value as u32) < DROP_REASON_COUNT {
            Some(DropReason::ALL[value as usize])
        } else {
            None
        }
    }
}

/// What happened to a packet.
///
/// Ordered by name (`audited`, `dropped`, `forwarded`), as lists and
/// tables sorted by verdict have always shown them.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum Verdict {
    Forwarded = 0,
    Dropped = 1,
    /// Forwarded under audit: enforcement would have dropped it, for the
    /// decision's reason.
    Audited = 2,
}

impl Verdict {
    /// Every verdict, in numeric order.
    pub const ALL: [Verdict; 3] = [Verdict::Forwarded, Verdict::Dropped, Verdict::Audited];

    pub const fn from_u8(value: u8) -> Option<Verdict> {
        match value {
            0 => Some(Verdict::Forwarded),
            1 => Some(Verdict::Dropped),
            2 => Some(Verdict::Audited),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Forwarded => "forwarded",
            Verdict::Dropped => "dropped",
            Verdict::Audited => "audited",
        }
    }

    /// Dropped, or would have been (audited): what `drops` lists and drop
    /// records are emitted for.
    pub const fn is_drop_like(self) -> bool {
        !matches!(self, Verdict::Forwarded)
    }
}

impl Ord for Verdict {
    fn cmp(&self, other: &Verdict) -> core::cmp::Ordering {
        let rank = |v: &Verdict| match v {
            Verdict::Audited => 0,
            Verdict::Dropped => 1,
            Verdict::Forwarded => 2,
        };
        rank(self).cmp(&rank(other))
    }
}

impl PartialOrd for Verdict {
    fn partial_cmp(&self, other: &Verdict) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Direction relative to the container (ordered by name too: `egress`
/// first).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum Direction {
    /// Sent by the container: the ingress hook of its host-side veth.
    Egress = 0,
    /// Received by the container: the egress hook of its host-side veth.
    Ingress = 1,
}

impl Direction {
    /// Both directions, in numeric order.
    pub const ALL: [Direction; 2] = [Direction::Egress, Direction::Ingress];

    pub const fn from_u8(value: u8) -> Option<Direction> {
        match value {
            0 => Some(Direction::Egress),
            1 => Some(Direction::Ingress),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        }
    }
}

/// A name that is none of a type's names (see the `FromStr` impls).
#[cfg(feature = "serde")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownName {
    /// What was expected: `verdict`, `direction`, `drop reason`, `protocol`.
    pub what: &'static str,
}

#[cfg(feature = "serde")]
impl core::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "not a {}", self.what)
    }
}

#[cfg(feature = "serde")]
impl core::error::Error for UnknownName {}

/// `Display` and `FromStr` by `name()`, the same names serde writes.
#[cfg(feature = "serde")]
macro_rules! by_name {
    ($($ty:ident: $what:literal),+ $(,)?) => {
        $(
            impl core::fmt::Display for $ty {
                fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    // `pad`: widths and alignment (`{:<8}`) apply.
                    f.pad(self.name())
                }
            }

            impl core::str::FromStr for $ty {
                type Err = UnknownName;

                fn from_str(text: &str) -> Result<$ty, UnknownName> {
                    $ty::ALL
                        .into_iter()
                        .find(|v| v.name() == text)
                        .ok_or(UnknownName { what: $what })
                }
            }
        )+
    };
}

#[cfg(feature = "serde")]
by_name!(DropReason: "drop reason", Verdict: "verdict", Direction: "direction");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_through_their_counter_index() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
            assert_eq!(DropReason::from_u8(i as u8), Some(*reason));
        }
        assert_eq!(DropReason::from_u8(DROP_REASON_COUNT as u8), None);
    }

    #[test]
    fn reason_names_are_unique() {
        for a in DropReason::ALL {
            for b in DropReason::ALL {
                assert!(a == b || a.name() != b.name());
            }
        }
    }

    /// The serde form of every variant is the name users have always seen
    /// (`name()`, checked against the literal strings), and reads back.
    #[cfg(feature = "serde")]
    #[test]
    fn serde_names_are_the_user_facing_names_and_round_trip() {
        extern crate std;
        use std::string::ToString;

        fn check<T>(value: T, expected: &str)
        where
            T: serde::Serialize
                + serde::de::DeserializeOwned
                + core::fmt::Display
                + core::str::FromStr
                + PartialEq
                + core::fmt::Debug,
            <T as core::str::FromStr>::Err: core::fmt::Debug,
        {
            let json = serde_json::to_string(&value).unwrap();
            assert_eq!(json, std::format!("\"{expected}\""));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), value);
            assert_eq!(value.to_string(), expected);
            assert_eq!(
                std::format!("{value:<24}|"),
                std::format!("{expected:<24}|")
            );
            assert_eq!(expected.parse::<T>().unwrap(), value);
        }
        let reasons = [
            "none",
            "not-in-network",
            "host-access",
            "spoofed-source",
            "spoofed-mac",
            "invalid-header",
            "unsupported-protocol",
            "broadcast-multicast",
            "extension-header-limit",
            "protected-prefix",
        ];
        for (reason, name) in DropReason::ALL.into_iter().zip(reasons) {
            check(reason, name);
        }
        for (verdict, name) in Verdict::ALL
            .into_iter()
            .zip(["forwarded", "dropped", "audited"])
        {
            check(verdict, name);
        }
        for (direction, name) in Direction::ALL.into_iter().zip(["egress", "ingress"]) {
            check(direction, name);
        }
        assert!("Dropped".parse::<Verdict>().is_err());
        let mut by_name = Verdict::ALL;
        by_name.sort();
        assert!(by_name.windows(2).all(|w| w[0].name() < w[1].name()));
        assert!(serde_json::from_str::<Direction>("\"out\"").is_err());
    }
}
