//! Verdicts, directions and the enumerated reasons a packet is dropped.

/// Why a packet was dropped. `None` means it was forwarded.
///
/// The numeric values index the per-CPU verdict counter maps, so they are
/// stable: append new reasons, never renumber.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Forwarded = 0,
    Dropped = 1,
    /// Forwarded under audit: enforcement would have dropped it, for the
    /// decision's reason.
    Audited = 2,
}

impl Verdict {
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

/// Direction relative to the container.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by the container: the ingress hook of its host-side veth.
    Egress = 0,
    /// Received by the container: the egress hook of its host-side veth.
    Ingress = 1,
}

impl Direction {
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
}
