//! The uplink shield's reference verdict: what the XDP program on an
//! uplink should decide for a frame, written from its contract rather than
//! its code (netwatch-ebpf/src/uplink.rs parses headers of its own, not
//! with the veth programs' parser, so it needs an oracle of its own).
//!
//! The contract: the source and destination of an IPv4 or IPv6 packet,
//! behind at most one VLAN tag (802.1Q or 802.1ad), are read from their
//! fixed offsets; a destination in a protected prefix is dropped as
//! `protected-prefix`, else a source in one as `spoofed-source`; anything
//! else passes (`none`): other ethertypes, frames too short to hold the
//! addresses, a second tag. Nothing else of the header is checked, since
//! the shield judges where a packet goes, not whether it is well formed;
//! the stack behind it does that.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netwatch_common::{
    packet::{ETH_HLEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN},
    reason::DropReason,
};

use crate::policy::Cidr;

/// The uplink shield's verdict for `frame` with `protected` prefixes.
pub fn uplink_verdict(protected: &[Cidr], frame: &[u8]) -> DropReason {
    let Some((src, dst)) = addresses(frame) else {
        return DropReason::None;
    };
    let protects = |addr: &IpAddr| protected.iter().any(|cidr| cidr.contains(addr));
    if protects(&dst) {
        DropReason::ProtectedPrefix
    } else if protects(&src) {
        DropReason::SpoofedSource
    } else {
        DropReason::None
    }
}

fn addresses(frame: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let ethertype_at = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
    };
    let mut ethertype = ethertype_at(12)?;
    let mut ip = ETH_HLEN;
    if matches!(ethertype, ETHERTYPE_VLAN | ETHERTYPE_QINQ) {
        ethertype = ethertype_at(ETH_HLEN + 2)?;
        ip += 4;
    }
    match ethertype {
        ETHERTYPE_IPV4 => {
            let header: [u8; 20] = frame.get(ip..ip + 20)?.try_into().ok()?;
            let addr = |at: usize| -> IpAddr {
                Ipv4Addr::from(<[u8; 4]>::try_from(&header[at..at + 4]).unwrap_or_default()).into()
            };
            Some((addr(12), addr(16)))
        }
        ETHERTYPE_IPV6 => {
            let header: [u8; 40] = frame.get(ip..ip + 40)?.try_into().ok()?;
            let addr = |at: usize| -> IpAddr {
                Ipv6Addr::from(<[u8; 16]>::try_from(&header[at..at + 16]).unwrap_or_default())
                    .into()
            };
            Some((addr(8), addr(24)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ethertypes: &[u16], ip_header: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        for (i, t) in ethertypes.iter().enumerate() {
            if i > 0 {
                f.extend_from_slice(&[0, 1]); // tag control information
            }
            f.extend_from_slice(&t.to_be_bytes());
        }
        f.extend_from_slice(ip_header);
        f
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0x45; 20];
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        h
    }

    fn internal() -> Vec<Cidr> {
        vec![
            "172.30.0.0/16".parse().unwrap(),
            "fd00:30::/64".parse().unwrap(),
        ]
    }

    #[test]
    fn inbound_to_a_protected_prefix_is_dropped_and_claims_from_one_are_spoofed() {
        let p = internal();
        let v4 = |src, dst| frame(&[ETHERTYPE_IPV4], &ipv4(src, dst));
        assert_eq!(
            uplink_verdict(&p, &v4([203, 0, 113, 7], [172, 30, 0, 2])),
            DropReason::ProtectedPrefix
        );
        assert_eq!(
            uplink_verdict(&p, &v4([172, 30, 0, 2], [203, 0, 113, 7])),
            DropReason::SpoofedSource
        );
        assert_eq!(
            uplink_verdict(&p, &v4([172, 30, 0, 2], [172, 30, 0, 3])),
            DropReason::ProtectedPrefix,
            "the destination is judged first"
        );
        assert_eq!(
            uplink_verdict(&p, &v4([203, 0, 113, 7], [10, 0, 0, 1])),
            DropReason::None
        );
    }

    #[test]
    fn one_vlan_tag_is_looked_through_and_a_second_is_not() {
        let p = internal();
        let h = ipv4([203, 0, 113, 7], [172, 30, 0, 2]);
        assert_eq!(
            uplink_verdict(&p, &frame(&[ETHERTYPE_VLAN, ETHERTYPE_IPV4], &h)),
            DropReason::ProtectedPrefix
        );
        assert_eq!(
            uplink_verdict(&p, &frame(&[ETHERTYPE_QINQ, ETHERTYPE_IPV4], &h)),
            DropReason::ProtectedPrefix
        );
        assert_eq!(
            uplink_verdict(
                &p,
                &frame(&[ETHERTYPE_QINQ, ETHERTYPE_VLAN, ETHERTYPE_IPV4], &h)
            ),
            DropReason::None
        );
    }

    #[test]
    fn ipv6_and_frames_too_short_for_the_addresses() {
        let p = internal();
        let mut h = vec![0x60; 40];
        h[8..24].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        h[24..40].copy_from_slice(&"fd00:30::2".parse::<Ipv6Addr>().unwrap().octets());
        let f = frame(&[ETHERTYPE_IPV6], &h);
        assert_eq!(uplink_verdict(&p, &f), DropReason::ProtectedPrefix);
        assert_eq!(uplink_verdict(&p, &f[..f.len() - 1]), DropReason::None);
        let f4 = frame(&[ETHERTYPE_IPV4], &ipv4([1, 2, 3, 4], [172, 30, 0, 2]));
        assert_eq!(uplink_verdict(&p, &f4[..33]), DropReason::None);
        assert_eq!(uplink_verdict(&p, &f4[..5]), DropReason::None);
    }
}
