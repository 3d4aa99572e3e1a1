//! What a parser extracts from a frame: the input of the verdict function.
//!
//! Two parsers fill a [`PacketSummary`]: the kernel's (`netwatch-ebpf`,
//! bounds-checked loads) and the reference model's (user space, etherparse).
//! They are written independently and must agree on every frame; the
//! differential test checks that. Both follow these rules:
//!
//! 1. Ethernet needs 14 bytes. Ethertype 0x8100 or 0x88a8 is one VLAN tag
//!    (4 more bytes); a second tag of either type is `Unsupported`.
//! 2. ARP (0x0806) needs 28 bytes with htype 1, ptype 0x0800, hlen 6, plen 4.
//!    `src`/`dst` hold the sender/target IPv4 address.
//! 3. IPv4 (0x0800) needs 20 bytes, version 4, IHL ≥ 5, total length ≥ IHL·4
//!    and ≤ the bytes present after the link header. A fragment offset ≠ 0
//!    is a non-first fragment: no L4 header is read. Options are skipped.
//! 4. IPv6 (0x86dd) needs 40 bytes, version 6, 40 + payload length ≤ the bytes
//!    present. Hop-by-hop (0), routing (43) and destination options (60)
//!    headers take (len+1)·8 bytes, AH (51) (len+2)·4, fragment (44) 8; at
//!    most [`MAX_EXT_HEADERS`] are walked, one more is `ExtHeaderLimit`. A
//!    fragment header with offset ≠ 0 ends the walk (non-first fragment).
//! 5. Every header after the IP header must fit inside the IP packet's
//!    declared length, else `Invalid`. TCP needs 20 bytes, data offset ≥ 5
//!    and its options present; UDP 8; ICMP (in IPv4 only) and ICMPv6 (in IPv6
//!    only) 8, and a neighbour advertisement 24 (it carries the target).
//!    Other protocols are not parsed past the IP header.
//! 6. Every other ethertype is `Unsupported`; a header cut short or with
//!    impossible values is `Invalid`.

use crate::assert_layout;

/// Most IPv6 extension headers walked before giving up.
pub const MAX_EXT_HEADERS: usize = 8;

pub const ETH_HLEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_DSTOPTS: u8 = 60;

/// ICMPv6 types treated as neighbour discovery / multicast listener messages.
pub const ICMPV6_MLD_QUERY: u8 = 130;
pub const ICMPV6_MLD_REPORT: u8 = 131;
pub const ICMPV6_MLD_DONE: u8 = 132;
pub const ICMPV6_ROUTER_SOLICIT: u8 = 133;
pub const ICMPV6_ROUTER_ADVERT: u8 = 134;
pub const ICMPV6_NEIGHBOR_SOLICIT: u8 = 135;
pub const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
pub const ICMPV6_REDIRECT: u8 = 137;
pub const ICMPV6_MLD2_REPORT: u8 = 143;

/// How far a frame could be understood.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PacketClass {
    /// A header is cut short or carries impossible values.
    #[default]
    Invalid = 0,
    /// A well-formed ARP packet for IPv4 over Ethernet.
    Arp = 1,
    /// An IPv4 or IPv6 packet whose headers were all understood.
    Ip = 2,
    /// An ethertype that is not parsed, or VLAN inside VLAN.
    Unsupported = 3,
    /// More IPv6 extension headers than [`MAX_EXT_HEADERS`].
    ExtHeaderLimit = 4,
}

/// Neighbour discovery role of an ICMPv6 packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NdKind {
    /// Not neighbour discovery (or not ICMPv6 at all).
    #[default]
    None = 0,
    /// Router solicitation, neighbour solicitation or an MLD message.
    Solicit = 1,
    /// Neighbour advertisement; `nd_target` holds the advertised address.
    Advert = 2,
}

/// Whether an ICMPv6 type is let through as neighbour discovery. Router
/// advertisements and redirects are not: a container has no business sending
/// them, and they then meet the ordinary (multicast) rules.
pub const fn nd_kind(icmpv6_type: u8) -> NdKind {
    match icmpv6_type {
        ICMPV6_NEIGHBOR_ADVERT => NdKind::Advert,
        ICMPV6_ROUTER_SOLICIT
        | ICMPV6_NEIGHBOR_SOLICIT
        | ICMPV6_MLD_QUERY
        | ICMPV6_MLD_REPORT
        | ICMPV6_MLD_DONE
        | ICMPV6_MLD2_REPORT => NdKind::Solicit,
        _ => NdKind::None,
    }
}

/// The facts a parser extracts from one frame. Fields past the point where
/// parsing stopped keep their zero values.
///
/// `repr(C, align(8))` so that the kernel's parser can zero it with a few
/// 8-byte stores ([`PacketSummary`] is all zeros when every field is zero):
/// `PacketSummary::default()` compiled for BPF into a call of a `memset`
/// subprogram storing one byte per loop iteration, some 290 instructions
/// and 16% of an established flow's time (perf, Linux 6.18).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketSummary {
    pub class: PacketClass,
    /// [`crate::flow::family`] value.
    pub family: u8,
    /// Innermost ethertype (after at most one VLAN tag).
    pub ethertype: u16,
    /// At a 4-byte offset, as in a flow entry: the kernel's cached-verdict
    /// check compares the two as one 4-byte and one 2-byte load each
    /// (netwatch-ebpf `flows::same_src_mac`).
    pub src_mac: [u8; 6],
    /// IP protocol of the transport header (after extension headers).
    pub proto: u8,
    /// A TCP or UDP header was read, so the ports are real.
    pub has_ports: bool,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// TCP/UDP ports, or ICMP type (`src_port`) and code (`dst_port`).
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub nd: NdKind,
    pub arp_sender_mac: [u8; 6],
    pub nd_target: [u8; 16],
    /// Frame offset of a UDP datagram's payload, and its length as the IP
    /// header declares it (0 when not UDP). Filled by the kernel's parser
    /// only, for the DNS records; no verdict depends on them, so the
    /// reference parser leaves them 0.
    pub udp_payload: u32,
    pub udp_payload_len: u32,
}
assert_layout!(PacketSummary, size = 80, align = 8);
const _: () = assert!(core::mem::offset_of!(PacketSummary, src_mac) == 4);

impl PacketSummary {
    /// The port of one side as the allow-list's port rules see it.
    #[inline(always)]
    pub const fn rule_port(&self, of_source: bool) -> RulePort {
        if !self.has_ports {
            RulePort::NONE
        } else if of_source {
            RulePort::of(self.src_port)
        } else {
            RulePort::of(self.dst_port)
        }
    }

    /// The port of the remote side, if the packet carries ports.
    pub const fn port(&self, of_source: bool) -> Option<u16> {
        if !self.has_ports {
            None
        } else if of_source {
            Some(self.src_port)
        } else {
            Some(self.dst_port)
        }
    }
}

/// A packet's port for the allow-list's port rules, or none (ICMP, a
/// fragment): an `Option<u16>` that is defined whichever it holds.
///
/// Learned the hard way: passed as an `Option<u16>`, a `None`'s port was
/// left unwritten in a stack slot, the rule match masked that slot before
/// looking at whether there was a port, and where the slot held a pointer
/// on that path the verifier refused `macvlan_child` ("bitwise operator
/// &= on pointer prohibited"). It took an unrelated change elsewhere in
/// the program to make the compiler lay the slot out that way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RulePort(u32);

impl RulePort {
    /// No port.
    pub const NONE: RulePort = RulePort(u32::MAX);

    #[inline(always)]
    pub const fn of(port: u16) -> RulePort {
        RulePort(port as u32)
    }

    /// `port`, or [`RulePort::NONE`].
    #[inline(always)]
    pub const fn from_option(port: Option<u16>) -> RulePort {
        match port {
            Some(port) => RulePort::of(port),
            None => RulePort::NONE,
        }
    }

    /// Whether this is port `port` (never, for [`RulePort::NONE`]).
    #[inline(always)]
    pub const fn is(self, port: u16) -> bool {
        self.0 == port as u32
    }
}
