//! The kernel drop program's reference: what `kernel_drops` (on the
//! `kfree_skb` tracepoint, netwatch-ebpf/src/kdrop.rs) must record for a
//! packet the kernel frees, written from its contract, not its code.
//!
//! The contract, given the skb's protocol and the bytes from its network
//! header to the end of its linear data:
//! - only `ETH_P_IP` and `ETH_P_IPV6` are read, and only when their fixed
//!   header (20 bytes for IPv4, options not looked at; 40 for IPv6) lies
//!   in those bytes; then the version nibble must match;
//! - nothing is recorded unless the source or the destination is a guarded
//!   address (its endpoint's ifindex goes into the record);
//! - the key is (family, protocol or next header, source, destination,
//!   ports): TCP and UDP ports, or ICMP type and code (for either ICMP
//!   protocol number in either family), read at `ihl * 4` for IPv4 and at
//!   40 for IPv6 whatever the next header is (an IPv6 packet behind
//!   extension headers is keyed by the first one, without ports); a
//!   non-first IPv4 fragment has no ports, nor has a packet whose ports lie
//!   past the data;
//! - the byte count is the IP length field (IPv4 total length, IPv6
//!   payload length + 40), whatever the packet really holds.
//!
//! The program reads with `bpf_probe_read_kernel`, which reads kernel
//! memory, not the packet: before it stopped at the linear data's end
//! (`sk_buff.tail`), a header cut short was read on into what the buffer
//! held before, and this model's oracle test found keys made of an earlier
//! packet's bytes.

use std::{collections::HashMap, net::IpAddr};

use netwatch_common::{
    flow::family,
    kdrop::KernelDropKey,
    packet::{
        ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
    },
};

/// What the kernel drop program must do with one freed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelDropOutcome {
    /// Counted under [`ModelDrop::key`].
    Recorded(ModelDrop),
    /// Not counted, and why.
    NotRecorded(NotRecorded),
}

/// Why a freed packet is not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotRecorded {
    /// The skb's protocol is neither IPv4 nor IPv6.
    NotIp,
    /// The fixed header does not lie in the data.
    Truncated,
    /// The version nibble does not match the skb's protocol.
    WrongVersion,
    /// Neither address is guarded.
    Unguarded,
}

/// One record as the program must make it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelDrop {
    /// The key, with `reason` 0 (the reason is the kernel's).
    pub key: KernelDropKey,
    /// The IP length field's count.
    pub bytes: u64,
    /// Ifindex of the endpoint owning the source (0: unguarded).
    pub src_endpoint: u32,
    /// The same for the destination.
    pub dst_endpoint: u32,
    /// False when the packet has ports (or ICMP type and code) but they
    /// lie past the data: the key has ports 0.
    pub ports_in_data: bool,
}

/// The guarded addresses (`GUARDED`): address → its endpoint's ifindex.
pub type Guarded = HashMap<IpAddr, u32>;

/// What the program must record for a packet freed with skb protocol
/// `protocol` (an ethertype) whose bytes from the network header on are
/// `ip` (to the end of the packet's data).
pub fn kernel_drop(protocol: u16, ip: &[u8], guarded: &Guarded) -> KernelDropOutcome {
    let (version, header, fam) = match protocol {
        ETHERTYPE_IPV4 => (4, 20, family::IPV4),
        ETHERTYPE_IPV6 => (6, 40, family::IPV6),
        _ => return NotRecorded::NotIp.into(),
    };
    if ip.len() < header {
        return NotRecorded::Truncated.into();
    }
    if ip[0] >> 4 != version {
        return NotRecorded::WrongVersion.into();
    }
    let mut key = KernelDropKey {
        family: fam,
        ..KernelDropKey::default()
    };
    let (bytes, l4) = if fam == family::IPV4 {
        key.proto = ip[9];
        key.src[..4].copy_from_slice(&ip[12..16]);
        key.dst[..4].copy_from_slice(&ip[16..20]);
        let fragment_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
        let l4 = (fragment_offset == 0).then(|| usize::from(ip[0] & 0x0f) * 4);
        (u64::from(u16::from_be_bytes([ip[2], ip[3]])), l4)
    } else {
        key.proto = ip[6];
        key.src.copy_from_slice(&ip[8..24]);
        key.dst.copy_from_slice(&ip[24..40]);
        (u64::from(u16::from_be_bytes([ip[4], ip[5]])) + 40, Some(40))
    };
    let endpoint = |addr: &[u8; 16]| {
        let addr: IpAddr = if fam == family::IPV4 {
            <[u8; 4]>::try_from(&addr[..4]).unwrap_or_default().into()
        } else {
            (*addr).into()
        };
        guarded.get(&addr).copied().unwrap_or(0)
    };
    let (src_endpoint, dst_endpoint) = (endpoint(&key.src), endpoint(&key.dst));
    if src_endpoint == 0 && dst_endpoint == 0 {
        return NotRecorded::Unguarded.into();
    }
    let ports_len = match key.proto {
        IPPROTO_TCP | IPPROTO_UDP => 4,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => 2,
        _ => 0,
    };
    let mut ports_in_data = true;
    if let Some(l4) = l4.filter(|_| ports_len > 0) {
        match ip.get(l4..l4 + ports_len) {
            Some([src_port_hi, src_port_lo, dst_port_hi, dst_port_lo]) => {
                key.src_port = u16::from_be_bytes([*src_port_hi, *src_port_lo]);
                key.dst_port = u16::from_be_bytes([*dst_port_hi, *dst_port_lo]);
            }
            Some([icmp_type, icmp_code]) => {
                key.src_port = u16::from(*icmp_type);
                key.dst_port = u16::from(*icmp_code);
            }
            _ => ports_in_data = false,
        }
    }
    KernelDropOutcome::Recorded(ModelDrop {
        key,
        bytes,
        src_endpoint,
        dst_endpoint,
        ports_in_data,
    })
}

impl From<NotRecorded> for KernelDropOutcome {
    fn from(why: NotRecorded) -> KernelDropOutcome {
        KernelDropOutcome::NotRecorded(why)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const G4: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
    const O4: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 9);
    const G6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6b64, 0, 0, 0, 0, 0, 2);
    const O6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6b64, 0, 0, 0, 0, 0, 9);

    fn guarded() -> Guarded {
        [(IpAddr::from(G4), 7), (IpAddr::from(G6), 8)].into()
    }

    /// An IPv4 header (`ihl` words, total length `len`) from `src` to
    /// `dst`, followed by `l4`.
    fn ipv4(ihl: u8, proto: u8, src: Ipv4Addr, dst: Ipv4Addr, l4: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; usize::from(ihl) * 4];
        h[0] = 0x40 | ihl;
        let len = (h.len() + l4.len()) as u16;
        h[2..4].copy_from_slice(&len.to_be_bytes());
        h[9] = proto;
        h[12..16].copy_from_slice(&src.octets());
        h[16..20].copy_from_slice(&dst.octets());
        h.extend_from_slice(l4);
        h
    }

    fn ipv6(next: u8, src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        h[6] = next;
        h[8..24].copy_from_slice(&src.octets());
        h[24..40].copy_from_slice(&dst.octets());
        h.extend_from_slice(payload);
        h
    }

    fn recorded(outcome: KernelDropOutcome) -> ModelDrop {
        match outcome {
            KernelDropOutcome::Recorded(drop) => drop,
            other => panic!("expected a record, got {other:?}"),
        }
    }

    #[test]
    fn a_guarded_ipv4_destination_is_recorded_with_ports_and_the_total_length() {
        let p = ipv4(
            5,
            IPPROTO_UDP,
            O4,
            G4,
            &[0x9c, 0x40, 0, 53, 0, 12, 0, 0, 1, 2],
        );
        let drop = recorded(kernel_drop(ETHERTYPE_IPV4, &p, &guarded()));
        assert_eq!((drop.src_endpoint, drop.dst_endpoint), (0, 7));
        assert_eq!(drop.key.family, family::IPV4);
        assert_eq!(drop.key.proto, IPPROTO_UDP);
        assert_eq!(drop.key.src[..4], O4.octets());
        assert_eq!(drop.key.dst, {
            let mut a = [0; 16];
            a[..4].copy_from_slice(&G4.octets());
            a
        });
        assert_eq!((drop.key.src_port, drop.key.dst_port), (40000, 53));
        assert_eq!(drop.key.reason, 0);
        assert_eq!(drop.bytes, 30);
        assert!(drop.ports_in_data);
    }

    #[test]
    fn ipv4_ports_are_read_after_the_options_and_not_in_later_fragments() {
        let mut p = ipv4(7, IPPROTO_TCP, G4, O4, &[0, 80, 0x1f, 0x90]);
        let drop = recorded(kernel_drop(ETHERTYPE_IPV4, &p, &guarded()));
        assert_eq!((drop.key.src_port, drop.key.dst_port), (80, 8080));
        assert_eq!(drop.src_endpoint, 7);
        // Fragment offset 1 (8 bytes in), more-fragments set.
        p[6..8].copy_from_slice(&0x2001u16.to_be_bytes());
        let drop = recorded(kernel_drop(ETHERTYPE_IPV4, &p, &guarded()));
        assert_eq!(
            (drop.key.src_port, drop.key.dst_port, drop.ports_in_data),
            (0, 0, true)
        );
        // A first fragment (offset 0, more fragments) keeps its ports.
        p[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
        assert_eq!(
            recorded(kernel_drop(ETHERTYPE_IPV4, &p, &guarded()))
                .key
                .src_port,
            80
        );
    }

    #[test]
    fn an_ihl_below_five_reads_the_ports_inside_the_ip_header() {
        // IHL 0: the "ports" are the header's first four bytes; the program
        // does not check the IHL, and the model says what that reads.
        let mut p = ipv4(5, IPPROTO_UDP, O4, G4, &[0, 1, 0, 2]);
        p[0] = 0x40;
        let drop = recorded(kernel_drop(ETHERTYPE_IPV4, &p, &guarded()));
        assert_eq!(
            (drop.key.src_port, drop.key.dst_port),
            (0x4000, u16::from_be_bytes([p[2], p[3]]))
        );
    }

    #[test]
    fn icmp_type_and_code_go_in_the_ports_whichever_family_carries_them() {
        let p = ipv4(5, IPPROTO_ICMP, G4, O4, &[3, 3, 0, 0]);
        let drop = recorded(kernel_drop(ETHERTYPE_IPV4, &p, &guarded()));
        assert_eq!((drop.key.src_port, drop.key.dst_port), (3, 3));
        let p = ipv4(5, IPPROTO_ICMPV6, G4, O4, &[128, 0]);
        let drop = recorded(kernel_drop(ETHERTYPE_IPV4, &p, &guarded()));
        assert_eq!((drop.key.src_port, drop.key.dst_port), (128, 0));
        let p = ipv6(IPPROTO_ICMP, O6, G6, &[8, 0, 0, 0]);
        let drop = recorded(kernel_drop(ETHERTYPE_IPV6, &p, &guarded()));
        assert_eq!((drop.key.src_port, drop.key.dst_port), (8, 0));
        assert_eq!(drop.dst_endpoint, 8);
    }

    #[test]
    fn ipv6_ports_are_read_at_forty_and_an_extension_header_keys_without_ports() {
        let p = ipv6(IPPROTO_TCP, G6, O6, &[0x9c, 0x41, 1, 187, 0, 0, 0, 0]);
        let drop = recorded(kernel_drop(ETHERTYPE_IPV6, &p, &guarded()));
        assert_eq!(drop.key.family, family::IPV6);
        assert_eq!((drop.key.src_port, drop.key.dst_port), (40001, 443));
        assert_eq!(drop.key.src, G6.octets());
        assert_eq!(drop.bytes, 48);
        // Hop-by-hop options (next header 0) in front of UDP: no ports.
        let p = ipv6(0, G6, O6, &[IPPROTO_UDP, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2]);
        let drop = recorded(kernel_drop(ETHERTYPE_IPV6, &p, &guarded()));
        assert_eq!(
            (drop.key.proto, drop.key.src_port, drop.key.dst_port),
            (0, 0, 0)
        );
    }

    #[test]
    fn the_byte_count_is_the_length_field_not_the_bytes_present() {
        let mut p = ipv4(5, IPPROTO_UDP, O4, G4, &[0, 1, 0, 2]);
        p[2..4].copy_from_slice(&9000u16.to_be_bytes());
        assert_eq!(
            recorded(kernel_drop(ETHERTYPE_IPV4, &p, &guarded())).bytes,
            9000
        );
        let mut p = ipv6(IPPROTO_UDP, O6, G6, &[0, 1, 0, 2]);
        p[4..6].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(
            recorded(kernel_drop(ETHERTYPE_IPV6, &p, &guarded())).bytes,
            65575
        );
    }

    #[test]
    fn nothing_is_recorded_for_other_protocols_wrong_versions_or_unguarded_addresses() {
        let g = guarded();
        let v4 = ipv4(5, IPPROTO_UDP, O4, G4, &[0, 1, 0, 2]);
        let v6 = ipv6(IPPROTO_UDP, O6, G6, &[0, 1, 0, 2]);
        assert_eq!(kernel_drop(0x0806, &v4, &g), NotRecorded::NotIp.into());
        // Long enough for an IPv6 header, but version 4.
        let v4_long = ipv4(5, IPPROTO_UDP, O4, G4, &[0; 24]);
        assert_eq!(
            kernel_drop(ETHERTYPE_IPV6, &v4_long, &g),
            NotRecorded::WrongVersion.into()
        );
        assert_eq!(
            kernel_drop(ETHERTYPE_IPV4, &v6, &g),
            NotRecorded::WrongVersion.into()
        );

        let neither = ipv4(5, IPPROTO_UDP, O4, O4, &[0, 1, 0, 2]);
        assert_eq!(
            kernel_drop(ETHERTYPE_IPV4, &neither, &g),
            NotRecorded::Unguarded.into()
        );
        // An IPv4-mapped IPv6 address is not the guarded IPv4 address.
        let mapped = ipv6(IPPROTO_UDP, G4.to_ipv6_mapped(), O6, &[0, 1, 0, 2]);
        assert_eq!(
            kernel_drop(ETHERTYPE_IPV6, &mapped, &g),
            NotRecorded::Unguarded.into()
        );
    }

    #[test]
    fn nothing_is_read_past_the_data_a_short_header_is_not_recorded_and_ports_past_it_are_zero() {
        let g = guarded();
        let v4 = ipv4(5, IPPROTO_TCP, O4, G4, &[0, 1, 0, 2]);
        for short in [&v4[..19], &v4[..1], &[][..]] {
            assert_eq!(
                kernel_drop(ETHERTYPE_IPV4, short, &g),
                NotRecorded::Truncated.into()
            );
        }
        // Short, whatever its version says.
        assert_eq!(
            kernel_drop(ETHERTYPE_IPV4, &[0x65], &g),
            NotRecorded::Truncated.into()
        );
        let v6 = ipv6(IPPROTO_UDP, O6, G6, &[0, 1, 0, 2]);
        assert_eq!(
            kernel_drop(ETHERTYPE_IPV6, &v6[..39], &g),
            NotRecorded::Truncated.into()
        );
        // The addresses are there, the ports are not (only 3 of 4 bytes):
        // recorded without ports.
        let drop = recorded(kernel_drop(ETHERTYPE_IPV4, &v4[..23], &g));
        assert!(!drop.ports_in_data);
        assert_eq!((drop.key.src_port, drop.key.dst_port), (0, 0));
        assert_eq!(drop.dst_endpoint, 7);
        let drop = recorded(kernel_drop(ETHERTYPE_IPV6, &v6[..43], &g));
        assert!(!drop.ports_in_data);
        assert_eq!((drop.key.src_port, drop.key.dst_port), (0, 0));
        // ICMP needs only its type and code.
        let icmp = ipv4(5, IPPROTO_ICMP, G4, O4, &[3, 1]);
        let drop = recorded(kernel_drop(ETHERTYPE_IPV4, &icmp, &g));
        assert_eq!(
            (drop.key.src_port, drop.key.dst_port, drop.ports_in_data),
            (3, 1, true)
        );
    }
}
