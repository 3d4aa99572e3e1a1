//! The reference parser: the numbered rules of [`netwatch_common::packet`],
//! built on etherparse's header slices.
//!
//! etherparse reads the fields; the rules decide what is acceptable. Where
//! etherparse checks something the rules do not (a zero AH payload length,
//! the exact size of ICMP timestamp messages) or leaves unchecked something
//! the rules require (IP length fields against the frame, ARP's fixed
//! hardware and protocol types, the size of a neighbour advertisement), the
//! checks are made here, around etherparse.
//!
//! A header's fields are stored only once the whole header has passed its
//! rule, so a frame that stops at a header leaves that header's fields, and
//! every later one, zero. The transport protocol of IPv6 is known only when
//! the extension header walk ends, so `proto` stays zero when the walk fails.

use etherparse::{
    ArpHardwareId, ArpPacketSlice, EtherType, Ethernet2HeaderSlice, Icmpv6Slice, IpAuthHeaderSlice,
    Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6HeaderSlice, Ipv6RawExtHeaderSlice,
    SingleVlanHeaderSlice, TcpHeaderSlice, UdpHeaderSlice,
    icmpv6::NeighborAdvertisementPayloadSlice,
};
use netwatch_common::{
    flow::family,
    packet::{
        ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN, IPPROTO_AH,
        IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6,
        IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP, MAX_EXT_HEADERS, NdKind, PacketClass,
        PacketSummary, nd_kind,
    },
};

/// Ok: how far the frame was understood (`Arp` or `Ip`); Err: where it
/// stopped (`Invalid`, `Unsupported`, `ExtHeaderLimit`).
type Step = Result<PacketClass, PacketClass>;

/// Rule 2's fixed size of an ARP packet for IPv4 over Ethernet.
const ARP_LEN: usize = 28;
/// ICMP and ICMPv6 headers (rule 5).
const ICMP_HLEN: usize = 8;

/// Parses one Ethernet frame. Never panics, whatever the bytes.
pub fn parse(frame: &[u8]) -> PacketSummary {
    let mut summary = PacketSummary::default();
    summary.class = match link_layer(frame, &mut summary) {
        Ok(class) | Err(class) => class,
    };
    summary
}

fn invalid<E>(_: E) -> PacketClass {
    PacketClass::Invalid
}

fn rest(bytes: &[u8], from: usize) -> Result<&[u8], PacketClass> {
    bytes.get(from..).ok_or(PacketClass::Invalid)
}

fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ
}

fn v4_in_16(addr: [u8; 4]) -> [u8; 16] {
    let mut out = [0; 16];
    for (o, a) in out.iter_mut().zip(addr) {
        *o = a;
    }
    out
}

/// Rules 1 and 6.
fn link_layer(frame: &[u8], s: &mut PacketSummary) -> Step {
    let eth = Ethernet2HeaderSlice::from_slice(frame).map_err(invalid)?;
    s.src_mac = eth.source();
    s.ethertype = eth.ether_type().0;
    let mut payload = rest(frame, eth.slice().len())?;
    if is_vlan(s.ethertype) {
        let tag = SingleVlanHeaderSlice::from_slice(payload).map_err(invalid)?;
        s.ethertype = tag.ether_type().0;
        payload = rest(payload, tag.slice().len())?;
        if is_vlan(s.ethertype) {
            return Err(PacketClass::Unsupported);
        }
    }
    match s.ethertype {
        ETHERTYPE_ARP => arp_packet(payload, s),
        ETHERTYPE_IPV4 => ipv4_packet(payload, s),
        ETHERTYPE_IPV6 => ipv6_packet(payload, s),
        _ => Err(PacketClass::Unsupported),
    }
}

/// Rule 2. etherparse sizes an ARP packet from its own hlen/plen fields and
/// accepts any hardware or protocol type; the rule fixes all four.
fn arp_packet(bytes: &[u8], s: &mut PacketSummary) -> Step {
    if bytes.len() < ARP_LEN {
        return Err(PacketClass::Invalid);
    }
    let arp = ArpPacketSlice::from_slice(bytes).map_err(invalid)?;
    if arp.hw_addr_type() != ArpHardwareId::ETHERNET
        || arp.proto_addr_type() != EtherType::IPV4
        || arp.hw_addr_size() != 6
        || arp.proto_addr_size() != 4
    {
        return Err(PacketClass::Invalid);
    }
    let sender_mac: [u8; 6] = arp.sender_hw_addr().try_into().map_err(invalid)?;
    let sender: [u8; 4] = arp.sender_protocol_addr().try_into().map_err(invalid)?;
    let target: [u8; 4] = arp.target_protocol_addr().try_into().map_err(invalid)?;
    s.family = family::NONE;
    s.proto = 0;
    s.arp_sender_mac = sender_mac;
    s.src = v4_in_16(sender);
    s.dst = v4_in_16(target);
    Ok(PacketClass::Arp)
}

/// Rule 3. etherparse checks version, IHL and that the IHL's bytes are
/// present, not the total length.
fn ipv4_packet(bytes: &[u8], s: &mut PacketSummary) -> Step {
    let ip = Ipv4HeaderSlice::from_slice(bytes).map_err(invalid)?;
    let header_len = ip.slice().len();
    let total_len = usize::from(ip.total_len());
    if total_len < header_len || total_len > bytes.len() {
        return Err(PacketClass::Invalid);
    }
    s.family = family::IPV4;
    s.proto = ip.protocol().0;
    s.src = v4_in_16(ip.source());
    s.dst = v4_in_16(ip.destination());
    if ip.fragments_offset().value() != 0 {
        return Ok(PacketClass::Ip);
    }
    // Rule 5: what follows must fit in the declared length, not merely in
    // the frame (which may carry Ethernet padding).
    let l4 = bytes
        .get(header_len..total_len)
        .ok_or(PacketClass::Invalid)?;
    transport_header(family::IPV4, s.proto, l4, s)
}

/// Rule 4. etherparse checks the version only.
fn ipv6_packet(bytes: &[u8], s: &mut PacketSummary) -> Step {
    let ip = Ipv6HeaderSlice::from_slice(bytes).map_err(invalid)?;
    let header_len = ip.slice().len();
    let packet = bytes
        .get(..header_len + usize::from(ip.payload_length()))
        .ok_or(PacketClass::Invalid)?;
    s.family = family::IPV6;
    s.src = ip.source();
    s.dst = ip.destination();

    let mut next = ip.next_header().0;
    let mut remaining = rest(packet, header_len)?;
    let mut walked = 0;
    while is_extension_header(next) {
        if walked == MAX_EXT_HEADERS {
            return Err(PacketClass::ExtHeaderLimit);
        }
        walked += 1;
        match extension_header(next, remaining)? {
            Extension::Skip { len, next: after } => {
                remaining = rest(remaining, len)?;
                next = after;
            }
            Extension::NonFirstFragment {
                next: payload_proto,
            } => {
                s.proto = payload_proto;
                return Ok(PacketClass::Ip);
            }
        }
    }
    s.proto = next;
    transport_header(family::IPV6, next, remaining, s)
}

fn is_extension_header(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS
    )
}

enum Extension {
    Skip { len: usize, next: u8 },
    NonFirstFragment { next: u8 },
}

/// One extension header at the start of `bytes`, which ends where the IPv6
/// payload length says the packet ends.
fn extension_header(kind: u8, bytes: &[u8]) -> Result<Extension, PacketClass> {
    match kind {
        IPPROTO_FRAGMENT => {
            let frag = Ipv6FragmentHeaderSlice::from_slice(bytes).map_err(invalid)?;
            let next = frag.next_header().0;
            if frag.fragment_offset().value() != 0 {
                Ok(Extension::NonFirstFragment { next })
            } else {
                Ok(Extension::Skip {
                    len: frag.slice().len(),
                    next,
                })
            }
        }
        IPPROTO_AH => match IpAuthHeaderSlice::from_slice(bytes) {
            Ok(ah) => Ok(Extension::Skip {
                len: ah.slice().len(),
                next: ah.next_header().0,
            }),
            // etherparse refuses an AH payload length of 0 (too short for
            // RFC 4302's sequence number); rule 4 sizes it (0+2)·4 = 8 bytes
            // like any other value.
            Err(_) => match bytes {
                [next, 0, _, _, _, _, _, _, ..] => Ok(Extension::Skip {
                    len: 8,
                    next: *next,
                }),
                _ => Err(PacketClass::Invalid),
            },
        },
        _ => {
            let ext = Ipv6RawExtHeaderSlice::from_slice(bytes).map_err(invalid)?;
            Ok(Extension::Skip {
                len: ext.slice().len(),
                next: ext.next_header().0,
            })
        }
    }
}

/// Rule 5. `l4` ends at the IP packet's declared end.
fn transport_header(ip_family: u8, proto: u8, l4: &[u8], s: &mut PacketSummary) -> Step {
    match (ip_family, proto) {
        (_, IPPROTO_TCP) => {
            let tcp = TcpHeaderSlice::from_slice(l4).map_err(invalid)?;
            s.src_port = tcp.source_port();
            s.dst_port = tcp.destination_port();
            s.has_ports = true;
            s.tcp_flags = tcp_flags_byte(&tcp);
        }
        (_, IPPROTO_UDP) => {
            let udp = UdpHeaderSlice::from_slice(l4).map_err(invalid)?;
            s.src_port = udp.source_port();
            s.dst_port = udp.destination_port();
            s.has_ports = true;
        }
        (family::IPV4, IPPROTO_ICMP) => {
            // Not Icmpv4Slice: it requires timestamp messages (type 13/14,
            // code 0) to be exactly 20 bytes, where rule 5 asks for 8.
            let [icmp_type, code, ..] = l4.get(..ICMP_HLEN).ok_or(PacketClass::Invalid)? else {
                return Err(PacketClass::Invalid);
            };
            s.src_port = u16::from(*icmp_type);
            s.dst_port = u16::from(*code);
        }
        (family::IPV6, IPPROTO_ICMPV6) => {
            let icmp = Icmpv6Slice::from_slice(l4).map_err(invalid)?;
            let nd = nd_kind(icmp.type_u8());
            // etherparse reads an advert's target only for code 0 (RFC 4861);
            // the rule needs it whatever the code.
            if nd == NdKind::Advert {
                let advert = NeighborAdvertisementPayloadSlice::from_slice(icmp.payload())
                    .map_err(invalid)?;
                s.nd_target = advert.target_address().octets();
            }
            s.src_port = u16::from(icmp.type_u8());
            s.dst_port = u16::from(icmp.code_u8());
            s.nd = nd;
        }
        _ => {}
    }
    Ok(PacketClass::Ip)
}

/// Byte 13 of the TCP header, rebuilt from etherparse's flag accessors.
fn tcp_flags_byte(tcp: &TcpHeaderSlice<'_>) -> u8 {
    [
        tcp.fin(),
        tcp.syn(),
        tcp.rst(),
        tcp.psh(),
        tcp.ack(),
        tcp.urg(),
        tcp.ece(),
        tcp.cwr(),
    ]
    .iter()
    .enumerate()
    .fold(0, |byte, (bit, &set)| byte | (u8::from(set) << bit))
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;
    use netwatch_common::packet::{ETHERTYPE_VLAN, ICMPV6_NEIGHBOR_SOLICIT};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::{super::test_frames::*, *};

    const SRC4: [u8; 4] = [172, 20, 0, 2];
    const DST4: [u8; 4] = [172, 20, 0, 3];

    fn src6() -> [u8; 16] {
        let mut a = [0; 16];
        a[..2].copy_from_slice(&[0xfd, 0x00]);
        a[15] = 2;
        a
    }

    fn dst6() -> [u8; 16] {
        let mut a = src6();
        a[15] = 3;
        a
    }

    /// What a frame from `MAC_A` with `ethertype` gives before its payload is read.
    fn link_only(ethertype: u16, class: PacketClass) -> PacketSummary {
        PacketSummary {
            class,
            src_mac: MAC_A,
            ethertype,
            ..PacketSummary::default()
        }
    }

    fn ip4(class: PacketClass, proto: u8) -> PacketSummary {
        PacketSummary {
            family: family::IPV4,
            proto,
            src: v4_in_16(SRC4),
            dst: v4_in_16(DST4),
            ..link_only(ETHERTYPE_IPV4, class)
        }
    }

    fn ip6(class: PacketClass, proto: u8) -> PacketSummary {
        PacketSummary {
            family: family::IPV6,
            proto,
            src: src6(),
            dst: dst6(),
            ..link_only(ETHERTYPE_IPV6, class)
        }
    }

    fn with_ports(s: PacketSummary, src_port: u16, dst_port: u16) -> PacketSummary {
        PacketSummary {
            src_port,
            dst_port,
            has_ports: true,
            ..s
        }
    }

    fn v4_frame(payload_proto: u8, l4: &[u8]) -> Vec<u8> {
        eth(MAC_A, ETHERTYPE_IPV4, &ipv4(payload_proto, SRC4, DST4, l4))
    }

    fn v6_frame(next: u8, payload: &[u8]) -> Vec<u8> {
        eth(MAC_A, ETHERTYPE_IPV6, &ipv6(next, src6(), dst6(), payload))
    }

    fn set_total_len(frame: &mut [u8], total: u16) {
        frame[16..18].copy_from_slice(&total.to_be_bytes());
    }

    // Rule 1.

    #[test]
    fn ethernet_needs_14_bytes() {
        let frame = v4_frame(IPPROTO_UDP, &udp(1, 2, &[]));
        assert_eq!(parse(&frame[..13]), PacketSummary::default());
        assert_eq!(parse(&[]), PacketSummary::default());
        assert_eq!(
            parse(&frame[..14]),
            link_only(ETHERTYPE_IPV4, PacketClass::Invalid)
        );
    }

    #[test]
    fn one_vlan_tag_of_either_type_is_skipped() {
        for tpid in [ETHERTYPE_VLAN, ETHERTYPE_QINQ] {
            let frame = eth_vlan(
                MAC_A,
                tpid,
                ETHERTYPE_IPV4,
                &ipv4(IPPROTO_UDP, SRC4, DST4, &udp(5, 6, b"x")),
            );
            assert_eq!(
                parse(&frame),
                with_ports(ip4(PacketClass::Ip, IPPROTO_UDP), 5, 6),
                "{tpid:#x}"
            );
            // A tag cut short: the outer ethertype was read, nothing more.
            for len in 14..18 {
                assert_eq!(
                    parse(&frame[..len]),
                    link_only(tpid, PacketClass::Invalid),
                    "{tpid:#x} {len}"
                );
            }
        }
    }

    #[test]
    fn a_second_vlan_tag_is_unsupported() {
        for inner in [ETHERTYPE_VLAN, ETHERTYPE_QINQ] {
            let mut inner_tag = vec![0, 5];
            inner_tag.extend(ETHERTYPE_IPV4.to_be_bytes());
            inner_tag.extend(ipv4(IPPROTO_UDP, SRC4, DST4, &udp(5, 6, &[])));
            let frame = eth_vlan(MAC_A, ETHERTYPE_QINQ, inner, &inner_tag);
            assert_eq!(parse(&frame), link_only(inner, PacketClass::Unsupported));
        }
    }

    #[test]
    fn agrees_with_frames_built_by_etherparse() {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .single_vlan(etherparse::VlanId::try_new(10).expect("vlan id"))
            .ipv4(SRC4, DST4, 64)
            .tcp(1234, 443, 7, 1000)
            .syn()
            .ece()
            .write(&mut frame, b"hello")
            .expect("builds");
        assert_eq!(
            parse(&frame),
            PacketSummary {
                tcp_flags: 0x42,
                ..with_ports(ip4(PacketClass::Ip, IPPROTO_TCP), 1234, 443)
            }
        );

        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(src6(), dst6(), 64)
            .udp(53, 5353)
            .write(&mut frame, b"answer")
            .expect("builds");
        assert_eq!(
            parse(&frame),
            with_ports(ip6(PacketClass::Ip, IPPROTO_UDP), 53, 5353)
        );

        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(src6(), dst6(), 255)
            .icmpv6_echo_request(1, 2)
            .write(&mut frame, &[])
            .expect("builds");
        assert_eq!(
            parse(&frame),
            PacketSummary {
                src_port: 128,
                ..ip6(PacketClass::Ip, IPPROTO_ICMPV6)
            }
        );
    }

    // Rule 2.

    #[test]
    fn arp_for_ipv4_over_ethernet() {
        let frame = eth(MAC_A, ETHERTYPE_ARP, &arp(MAC_B, SRC4, DST4));
        let want = PacketSummary {
            family: family::NONE,
            proto: 0,
            src: v4_in_16(SRC4),
            dst: v4_in_16(DST4),
            arp_sender_mac: MAC_B,
            ..link_only(ETHERTYPE_ARP, PacketClass::Arp)
        };
        assert_eq!(parse(&frame), want);
        // Ethernet padding after the 28 bytes changes nothing.
        let mut padded = frame.clone();
        padded.resize(60, 0);
        assert_eq!(parse(&padded), want);
        assert_eq!(
            parse(&frame[..frame.len() - 1]),
            link_only(ETHERTYPE_ARP, PacketClass::Invalid)
        );
    }

    #[test]
    fn arp_of_other_kinds_is_invalid() {
        // (byte, value): htype 6, ptype IPv6, hlen 8, plen 16, hlen 0.
        for (at, value) in [(1, 6), (2, 0x86), (4, 8), (5, 16), (4, 0)] {
            let mut packet = arp(MAC_B, SRC4, DST4);
            packet[at] = value;
            packet.resize(80, 0);
            let frame = eth(MAC_A, ETHERTYPE_ARP, &packet);
            assert_eq!(
                parse(&frame),
                link_only(ETHERTYPE_ARP, PacketClass::Invalid),
                "byte {at} = {value}"
            );
        }
    }

    // Rule 3.

    #[test]
    fn ipv4_transport_headers() {
        let frame = v4_frame(IPPROTO_TCP, &tcp(40000, 80, 0x12, &[]));
        assert_eq!(
            parse(&frame),
            PacketSummary {
                tcp_flags: 0x12,
                ..with_ports(ip4(PacketClass::Ip, IPPROTO_TCP), 40000, 80)
            }
        );
        let frame = v4_frame(IPPROTO_UDP, &udp(68, 67, &[0; 300]));
        assert_eq!(
            parse(&frame),
            with_ports(ip4(PacketClass::Ip, IPPROTO_UDP), 68, 67)
        );
        let frame = v4_frame(IPPROTO_ICMP, &icmp(8, 0, &[0, 1, 0, 1]));
        assert_eq!(
            parse(&frame),
            PacketSummary {
                src_port: 8,
                ..ip4(PacketClass::Ip, IPPROTO_ICMP)
            }
        );
        let frame = v4_frame(IPPROTO_ICMP, &icmp(3, 3, &[0; 4]));
        assert_eq!((parse(&frame).src_port, parse(&frame).dst_port), (3, 3));
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let packet = ipv4_with(
            &[1, 1, 1, 0, 1, 1, 1, 0],
            0,
            IPPROTO_UDP,
            SRC4,
            DST4,
            &udp(7, 9, &[]),
        );
        let frame = eth(MAC_A, ETHERTYPE_IPV4, &packet);
        assert_eq!(
            parse(&frame),
            with_ports(ip4(PacketClass::Ip, IPPROTO_UDP), 7, 9)
        );
    }

    #[test]
    fn ipv4_header_checks() {
        let good = v4_frame(IPPROTO_UDP, &udp(7, 9, &[]));
        let invalid = link_only(ETHERTYPE_IPV4, PacketClass::Invalid);
        assert_eq!(parse(&good[..14 + 19]), invalid);

        let mut bad_version = good.clone();
        bad_version[14] = 0x65;
        assert_eq!(parse(&bad_version), invalid);

        for ihl in 0..5 {
            let mut short_ihl = good.clone();
            short_ihl[14] = 0x40 | ihl;
            assert_eq!(parse(&short_ihl), invalid, "ihl {ihl}");
        }

        // IHL 15 (60 bytes) with only 28 bytes of packet.
        let mut long_ihl = good.clone();
        long_ihl[14] = 0x4f;
        assert_eq!(parse(&long_ihl), invalid);

        let mut total_below_header = good.clone();
        set_total_len(&mut total_below_header, 19);
        assert_eq!(parse(&total_below_header), invalid);

        let mut total_beyond_frame = good.clone();
        set_total_len(&mut total_beyond_frame, 29);
        assert_eq!(parse(&total_beyond_frame), invalid);
    }

    #[test]
    fn ipv4_transport_must_fit_the_declared_length() {
        // 6 bytes of UDP declared, 8 present plus padding: the UDP header is cut.
        let mut frame = v4_frame(IPPROTO_UDP, &udp(7, 9, &[]));
        set_total_len(&mut frame, 26);
        frame.resize(60, 0);
        assert_eq!(parse(&frame), ip4(PacketClass::Invalid, IPPROTO_UDP));

        // Padding after a complete packet is fine.
        let mut padded = v4_frame(IPPROTO_UDP, &udp(7, 9, &[]));
        padded.resize(60, 0xee);
        assert_eq!(
            parse(&padded),
            with_ports(ip4(PacketClass::Ip, IPPROTO_UDP), 7, 9)
        );

        let icmp_short = v4_frame(IPPROTO_ICMP, &[8, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse(&icmp_short), ip4(PacketClass::Invalid, IPPROTO_ICMP));
        let udp_short = v4_frame(IPPROTO_UDP, &[0, 7, 0, 9, 0, 8, 0]);
        assert_eq!(parse(&udp_short), ip4(PacketClass::Invalid, IPPROTO_UDP));
    }

    #[test]
    fn ipv4_non_first_fragments_carry_no_transport_fields() {
        let l4 = tcp(40000, 80, 0x02, &[]);
        for frag in [1, 0x2001, 0x1fff, 0x4001] {
            let packet = ipv4_with(&[], frag, IPPROTO_TCP, SRC4, DST4, &l4);
            let frame = eth(MAC_A, ETHERTYPE_IPV4, &packet);
            assert_eq!(
                parse(&frame),
                ip4(PacketClass::Ip, IPPROTO_TCP),
                "{frag:#x}"
            );
        }
        // Even a non-first fragment too short for any transport header.
        let packet = ipv4_with(&[], 185, IPPROTO_UDP, SRC4, DST4, &[1]);
        let frame = eth(MAC_A, ETHERTYPE_IPV4, &packet);
        assert_eq!(parse(&frame), ip4(PacketClass::Ip, IPPROTO_UDP));
        // First fragment (MF set, offset 0) and DF: transport is read.
        for frag in [0x2000, 0x4000] {
            let packet = ipv4_with(&[], frag, IPPROTO_TCP, SRC4, DST4, &l4);
            let frame = eth(MAC_A, ETHERTYPE_IPV4, &packet);
            assert!(parse(&frame).has_ports, "{frag:#x}");
        }
    }

    #[test]
    fn icmpv4_timestamp_needs_only_8_bytes() {
        // etherparse's Icmpv4Slice wants exactly 20 bytes for type 13 code 0.
        for body in [&[0u8; 4][..], &[0; 20], &[0; 100]] {
            let frame = v4_frame(IPPROTO_ICMP, &icmp(13, 0, body));
            assert_eq!(
                parse(&frame),
                PacketSummary {
                    src_port: 13,
                    ..ip4(PacketClass::Ip, IPPROTO_ICMP)
                }
            );
        }
    }

    #[test]
    fn other_protocols_stop_at_the_ip_header() {
        for proto in [IPPROTO_ICMPV6, 47, 50, 132, 255, IPPROTO_HOPOPTS] {
            let frame = v4_frame(proto, &[]);
            assert_eq!(parse(&frame), ip4(PacketClass::Ip, proto), "{proto}");
        }
        let frame = v6_frame(IPPROTO_ICMP, &[]);
        assert_eq!(parse(&frame), ip6(PacketClass::Ip, IPPROTO_ICMP));
        for proto in [50, 59, 135, 253] {
            let frame = v6_frame(proto, &[]);
            assert_eq!(parse(&frame), ip6(PacketClass::Ip, proto), "{proto}");
        }
    }

    // Rule 4.

    #[test]
    fn ipv6_header_checks() {
        let good = v6_frame(IPPROTO_UDP, &udp(1, 2, &[]));
        let invalid = link_only(ETHERTYPE_IPV6, PacketClass::Invalid);
        assert_eq!(parse(&good[..14 + 39]), invalid);
        let mut bad_version = good.clone();
        bad_version[14] = 0x40;
        assert_eq!(parse(&bad_version), invalid);
        // Payload length one beyond the frame.
        let mut long = good.clone();
        long[18..20].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(parse(&long), invalid);
        // Shorter than the UDP header behind it; padding does not count.
        let mut short = good.clone();
        short[18..20].copy_from_slice(&7u16.to_be_bytes());
        short.resize(100, 0);
        assert_eq!(parse(&short), ip6(PacketClass::Invalid, IPPROTO_UDP));
        // Payload length 0 (a jumbogram) is not special.
        let mut zero = good;
        zero[18..20].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(parse(&zero), ip6(PacketClass::Invalid, IPPROTO_UDP));
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        let mut payload = ext(IPPROTO_ROUTING, 0);
        payload.extend(ext(IPPROTO_FRAGMENT, 2));
        payload.extend(frag6(IPPROTO_AH, 0, true));
        payload.extend(ah(IPPROTO_DSTOPTS, 4));
        payload.extend(ext(IPPROTO_TCP, 1));
        payload.extend(tcp(22, 50000, 0x11, &[1, 1, 1, 1]));
        let frame = v6_frame(IPPROTO_HOPOPTS, &payload);
        assert_eq!(
            parse(&frame),
            PacketSummary {
                tcp_flags: 0x11,
                ..with_ports(ip6(PacketClass::Ip, IPPROTO_TCP), 22, 50000)
            }
        );
    }

    #[test]
    fn ah_with_payload_length_zero_is_8_bytes() {
        // etherparse's IpAuthHeaderSlice rejects it; rule 4 sizes it (0+2)·4.
        let mut payload = ah(IPPROTO_UDP, 0);
        assert_eq!(payload.len(), 8);
        payload.extend(udp(1, 2, &[]));
        let frame = v6_frame(IPPROTO_AH, &payload);
        assert_eq!(
            parse(&frame),
            with_ports(ip6(PacketClass::Ip, IPPROTO_UDP), 1, 2)
        );
        // Cut inside it.
        let frame = v6_frame(IPPROTO_AH, &payload[..7]);
        assert_eq!(parse(&frame), ip6(PacketClass::Invalid, 0));
        // Exactly the AH and nothing after: the walk ended, UDP is missing.
        let frame = v6_frame(IPPROTO_AH, &payload[..8]);
        assert_eq!(parse(&frame), ip6(PacketClass::Invalid, IPPROTO_UDP));
    }

    #[test]
    fn extension_headers_must_fit_the_declared_length() {
        for (kind, header) in [
            (IPPROTO_HOPOPTS, ext(IPPROTO_UDP, 2)),
            (IPPROTO_ROUTING, ext(IPPROTO_UDP, 0)),
            (IPPROTO_DSTOPTS, ext(IPPROTO_UDP, 255)),
            (IPPROTO_AH, ah(IPPROTO_UDP, 3)),
            (IPPROTO_FRAGMENT, frag6(IPPROTO_UDP, 0, false)),
        ] {
            let mut frame = v6_frame(kind, &header[..header.len() - 1]);
            // Bytes after the declared end do not help.
            frame.extend([0; 64]);
            frame.extend(vec![0; header.len()]);
            assert_eq!(parse(&frame), ip6(PacketClass::Invalid, 0), "{kind}");
        }
    }

    #[test]
    fn at_most_eight_extension_headers() {
        let chain = |n: usize| {
            let mut payload = Vec::new();
            for i in 0..n {
                let next = if i + 1 == n {
                    IPPROTO_UDP
                } else {
                    IPPROTO_DSTOPTS
                };
                payload.extend(ext(next, 0));
            }
            payload.extend(udp(1, 2, &[]));
            v6_frame(if n == 0 { IPPROTO_UDP } else { IPPROTO_DSTOPTS }, &payload)
        };
        for n in 0..=MAX_EXT_HEADERS {
            assert_eq!(
                parse(&chain(n)),
                with_ports(ip6(PacketClass::Ip, IPPROTO_UDP), 1, 2),
                "{n}"
            );
        }
        assert_eq!(
            parse(&chain(MAX_EXT_HEADERS + 1)),
            ip6(PacketClass::ExtHeaderLimit, 0)
        );
        // The ninth header hits the limit before its own length is checked.
        let nine = chain(MAX_EXT_HEADERS + 1);
        let cut = 14 + 40 + MAX_EXT_HEADERS * 8 + 1;
        let mut truncated = nine[..cut].to_vec();
        truncated[18..20].copy_from_slice(&((cut - 54) as u16).to_be_bytes());
        assert_eq!(parse(&truncated), ip6(PacketClass::ExtHeaderLimit, 0));
    }

    #[test]
    fn ipv6_fragments() {
        let mut first = frag6(IPPROTO_UDP, 0, true);
        first.extend(udp(1, 2, &[]));
        assert_eq!(
            parse(&v6_frame(IPPROTO_FRAGMENT, &first)),
            with_ports(ip6(PacketClass::Ip, IPPROTO_UDP), 1, 2)
        );
        // A non-first fragment ends the walk, whatever follows.
        let mut later = frag6(IPPROTO_TCP, 1, false);
        later.extend([0xff; 3]);
        assert_eq!(
            parse(&v6_frame(IPPROTO_FRAGMENT, &later)),
            ip6(PacketClass::Ip, IPPROTO_TCP)
        );
        let mut later_ext = ext(IPPROTO_FRAGMENT, 0);
        later_ext.extend(frag6(IPPROTO_DSTOPTS, 100, true));
        assert_eq!(
            parse(&v6_frame(IPPROTO_HOPOPTS, &later_ext)),
            ip6(PacketClass::Ip, IPPROTO_DSTOPTS)
        );
    }

    #[test]
    fn icmpv6_and_neighbour_discovery() {
        let ns = v6_frame(IPPROTO_ICMPV6, &icmp(ICMPV6_NEIGHBOR_SOLICIT, 0, &[0; 20]));
        assert_eq!(
            parse(&ns),
            PacketSummary {
                src_port: 135,
                nd: NdKind::Solicit,
                ..ip6(PacketClass::Ip, IPPROTO_ICMPV6)
            }
        );
        let mut na_body = vec![0x60, 0, 0, 0];
        na_body.extend(src6());
        let na = v6_frame(IPPROTO_ICMPV6, &icmp(136, 0, &na_body));
        let want = PacketSummary {
            src_port: 136,
            nd: NdKind::Advert,
            nd_target: src6(),
            ..ip6(PacketClass::Ip, IPPROTO_ICMPV6)
        };
        assert_eq!(parse(&na), want);
        // The target is read whatever the code.
        let na_code = v6_frame(IPPROTO_ICMPV6, &icmp(136, 9, &na_body));
        assert_eq!(
            parse(&na_code),
            PacketSummary {
                dst_port: 9,
                ..want
            }
        );
        let na_short = v6_frame(IPPROTO_ICMPV6, &icmp(136, 0, &na_body[..19]));
        assert_eq!(parse(&na_short), ip6(PacketClass::Invalid, IPPROTO_ICMPV6));

        for (ty, nd) in [
            (130, NdKind::Solicit),
            (131, NdKind::Solicit),
            (132, NdKind::Solicit),
            (133, NdKind::Solicit),
            (134, NdKind::None),
            (137, NdKind::None),
            (143, NdKind::Solicit),
            (128, NdKind::None),
            (1, NdKind::None),
        ] {
            let frame = v6_frame(IPPROTO_ICMPV6, &icmp(ty, 0, &[0; 4]));
            let s = parse(&frame);
            assert_eq!(
                (s.class, s.nd, s.src_port, s.has_ports),
                (PacketClass::Ip, nd, u16::from(ty), false),
                "{ty}"
            );
        }
        let short = v6_frame(IPPROTO_ICMPV6, &icmp(135, 0, &[0; 3]));
        assert_eq!(parse(&short), ip6(PacketClass::Invalid, IPPROTO_ICMPV6));
    }

    // Rule 5.

    #[test]
    fn tcp_header_checks() {
        let with_options = v4_frame(IPPROTO_TCP, &tcp(1, 2, 0xff, &[2, 4, 5, 0xb4]));
        assert_eq!(
            parse(&with_options),
            PacketSummary {
                tcp_flags: 0xff,
                ..with_ports(ip4(PacketClass::Ip, IPPROTO_TCP), 1, 2)
            }
        );
        let truncated = v4_frame(IPPROTO_TCP, &tcp(1, 2, 0x02, &[])[..19]);
        assert_eq!(parse(&truncated), ip4(PacketClass::Invalid, IPPROTO_TCP));
        for offset in 0..5u8 {
            let mut header = tcp(1, 2, 0x02, &[]);
            header[12] = offset << 4;
            let frame = v4_frame(IPPROTO_TCP, &header);
            assert_eq!(
                parse(&frame),
                ip4(PacketClass::Invalid, IPPROTO_TCP),
                "{offset}"
            );
        }
        // Options announced but missing.
        let mut header = tcp(1, 2, 0x02, &[]);
        header[12] = 6 << 4;
        header.extend([1, 1, 1]);
        let frame = v4_frame(IPPROTO_TCP, &header);
        assert_eq!(parse(&frame), ip4(PacketClass::Invalid, IPPROTO_TCP));
    }

    // Rule 6.

    #[test]
    fn other_ethertypes_are_unsupported() {
        for ethertype in [0x88cc, 0x0842, 0x9100, 0x0040, 0x05dc, 0x8035, 0x88e5] {
            let frame = eth(MAC_A, ethertype, &[0; 46]);
            assert_eq!(
                parse(&frame),
                link_only(ethertype, PacketClass::Unsupported),
                "{ethertype:#x}"
            );
            // Even with nothing after the link header.
            assert_eq!(
                parse(&frame[..14]),
                link_only(ethertype, PacketClass::Unsupported)
            );
        }
    }

    // Robustness.

    fn sample_frames() -> Vec<Vec<u8>> {
        let mut ext_chain = ext(IPPROTO_FRAGMENT, 1);
        ext_chain.extend(frag6(IPPROTO_AH, 0, true));
        ext_chain.extend(ah(IPPROTO_TCP, 0));
        ext_chain.extend(tcp(1, 2, 0x10, &[1, 1, 1, 0]));
        let mut na_body = vec![0; 4];
        na_body.extend(dst6());
        vec![
            v4_frame(IPPROTO_TCP, &tcp(1, 2, 0x02, &[2, 4, 5, 0xb4])),
            v4_frame(IPPROTO_UDP, &udp(1, 2, b"payload")),
            v4_frame(IPPROTO_ICMP, &icmp(8, 0, &[0; 12])),
            eth(
                MAC_A,
                ETHERTYPE_IPV4,
                &ipv4_with(&[1; 8], 0, IPPROTO_UDP, SRC4, DST4, &udp(1, 2, &[])),
            ),
            eth(MAC_A, ETHERTYPE_ARP, &arp(MAC_A, SRC4, DST4)),
            eth_vlan(
                MAC_A,
                ETHERTYPE_VLAN,
                ETHERTYPE_IPV6,
                &ipv6(IPPROTO_UDP, src6(), dst6(), &udp(1, 2, &[])),
            ),
            v6_frame(IPPROTO_HOPOPTS, &ext_chain),
            v6_frame(IPPROTO_ICMPV6, &icmp(136, 0, &na_body)),
        ]
    }

    #[test]
    fn every_truncation_parses_without_panicking() {
        for frame in sample_frames() {
            let full = parse(&frame);
            assert_ne!(full.class, PacketClass::Invalid, "{frame:02x?}");
            for len in 0..frame.len() {
                let cut = parse(&frame[..len]);
                assert!(
                    cut.class == PacketClass::Invalid || cut.class == PacketClass::Unsupported,
                    "{len}: {cut:?}"
                );
            }
        }
    }

    #[test]
    fn random_and_mutated_bytes_parse_without_panicking() {
        let mut rng = StdRng::seed_from_u64(0x7061_7273_6572);
        let mut classes = [0usize; 5];
        for _ in 0..5_000 {
            let len = rng.random_range(0..200);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Give the random bytes a known ethertype most of the time, so
            // that the deeper parsers see them too.
            if len >= 14 && rng.random_bool(0.8) {
                let ethertypes = [
                    ETHERTYPE_IPV4,
                    ETHERTYPE_IPV6,
                    ETHERTYPE_ARP,
                    ETHERTYPE_VLAN,
                ];
                let e = ethertypes[rng.random_range(0..ethertypes.len())];
                bytes[12..14].copy_from_slice(&e.to_be_bytes());
            }
            classes[parse(&bytes).class as usize] += 1;
        }
        let samples = sample_frames();
        for _ in 0..5_000 {
            let mut frame = samples[rng.random_range(0..samples.len())].clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..frame.len());
                frame[at] = rng.random();
            }
            classes[parse(&frame).class as usize] += 1;
        }
        // The inputs reached every outcome but the extension header limit.
        assert!(classes[..4].iter().all(|&n| n > 0), "{classes:?}");
    }
}
