//! Ethernet frames for `BPF_PROG_TEST_RUN` tests and the reference parser.
//!
//! [`Frame`] is a small fluent builder: pick the link layer, optionally VLAN
//! tags, a network layer, a transport layer and a payload, then
//! [`Frame::build`]:
//!
//! ```
//! use std::net::Ipv4Addr;
//! use netwatch_common::flow::tcp_flags::SYN;
//! use netwatch_tests::packets::Frame;
//!
//! let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
//! let gw = [0x02, 0x42, 0x00, 0x00, 0x00, 0x01];
//! let frame = Frame::eth(mac, gw)
//!     .vlan(0x8100, 10)
//!     .ipv4(Ipv4Addr::new(172, 17, 0, 2), Ipv4Addr::new(1, 1, 1, 1))
//!     .tcp(40000, 443, SYN)
//!     .build();
//! assert_eq!(frame.len(), 14 + 4 + 20 + 20);
//! ```
//!
//! Every length, next-header chain and checksum (IPv4 header, TCP, UDP, ICMP,
//! ICMPv6 with the pseudo header) is computed at build time. The frames are
//! assembled by hand rather than with `etherparse::PacketBuilder`, because the
//! tests need frames it cannot express (any VLAN TPID, extension headers in
//! any order and number, non-first fragments without a transport header,
//! ARP with odd field values, raw field overrides); the unit tests check the
//! output against `PacketBuilder` byte for byte where it can express the
//! same frame, and parse every kind back with `etherparse::SlicedPacket`.
//!
//! Malformed frames are made by building a well-formed one and patching
//! bytes at the offsets [`Frame::assemble`] reports (see `corpus.rs`).
//!
//! The "rule N" references in the docs are the parsing rules of
//! `netwatch_common::packet`.

use std::net::{Ipv4Addr, Ipv6Addr};

use netwatch_common::packet::{
    ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN,
    ICMPV6_MLD2_REPORT, ICMPV6_NEIGHBOR_ADVERT, ICMPV6_NEIGHBOR_SOLICIT, ICMPV6_ROUTER_ADVERT,
    ICMPV6_ROUTER_SOLICIT, IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS,
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP,
};

/// A MAC address.
pub type Mac = [u8; 6];

/// ff:ff:ff:ff:ff:ff.
pub const BROADCAST: Mac = [0xff; 6];

/// Ethertype written when a frame has no network layer and no explicit
/// [`Frame::ethertype`]: 0x88b5, IEEE 802 local experimental (rule 6:
/// `Unsupported`).
pub const ETHERTYPE_EXPERIMENTAL: u16 = 0x88b5;

/// IPv6 "no next header", written after the last extension header of an
/// IPv6 packet without a transport layer.
pub const IPPROTO_NONE: u8 = 59;

/// IPv4 protocol written when an IPv4 packet has no transport layer (255,
/// reserved).
pub const IPPROTO_RESERVED: u8 = 255;

/// ICMP types used by the builder.
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// Neighbour advertisement flag bits (first byte after the ICMPv6 header).
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;

/// ARP operations.
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// One 802.1Q / 802.1ad tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    /// 0x8100 (802.1Q) or 0x88a8 (802.1ad), or anything else for tests.
    pub tpid: u16,
    /// PCP (3 bits), DEI (1 bit), VLAN id (12 bits).
    pub tci: u16,
}

/// An ARP packet. The fields are written as given, so `hlen`/`plen` need
/// not match the address lengths (rule 2 only accepts htype 1, ptype 0x0800,
/// hlen 6, plen 4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arp {
    pub htype: u16,
    pub ptype: u16,
    pub hlen: u8,
    pub plen: u8,
    pub oper: u16,
    pub sender_hw: Vec<u8>,
    pub sender_proto: Vec<u8>,
    pub target_hw: Vec<u8>,
    pub target_proto: Vec<u8>,
}

impl Arp {
    /// An Ethernet/IPv4 ARP packet (rule 2: the well-formed 28 bytes).
    pub fn eth_ipv4(
        oper: u16,
        sender_mac: Mac,
        sender_ip: Ipv4Addr,
        target_mac: Mac,
        target_ip: Ipv4Addr,
    ) -> Arp {
        Arp {
            htype: 1,
            ptype: ETHERTYPE_IPV4,
            hlen: 6,
            plen: 4,
            oper,
            sender_hw: sender_mac.to_vec(),
            sender_proto: sender_ip.octets().to_vec(),
            target_hw: target_mac.to_vec(),
            target_proto: target_ip.octets().to_vec(),
        }
    }

    /// "Who has `target_ip`? Tell `sender_ip`" (target MAC zero).
    pub fn request(sender_mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Arp {
        Arp::eth_ipv4(ARP_REQUEST, sender_mac, sender_ip, [0; 6], target_ip)
    }

    /// "`sender_ip` is at `sender_mac`", addressed to `target_mac`/`target_ip`.
    pub fn reply(
        sender_mac: Mac,
        sender_ip: Ipv4Addr,
        target_mac: Mac,
        target_ip: Ipv4Addr,
    ) -> Arp {
        Arp::eth_ipv4(ARP_REPLY, sender_mac, sender_ip, target_mac, target_ip)
    }

    /// Gratuitous ARP request: sender and target IP are both `ip`.
    pub fn gratuitous(mac: Mac, ip: Ipv4Addr) -> Arp {
        Arp::request(mac, ip, ip)
    }

    /// The wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(28);
        b.extend(self.htype.to_be_bytes());
        b.extend(self.ptype.to_be_bytes());
        b.push(self.hlen);
        b.push(self.plen);
        b.extend(self.oper.to_be_bytes());
        b.extend(&self.sender_hw);
        b.extend(&self.sender_proto);
        b.extend(&self.target_hw);
        b.extend(&self.target_proto);
        b
    }
}

/// One IPv6 extension header (rule 4). `bytes` is the whole header; its
/// first byte (next header) is filled in at build time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext {
    /// Protocol number that announces this header (0, 43, 44, 51, 60, or
    /// anything for tests).
    pub kind: u8,
    pub bytes: Vec<u8>,
}

impl Ext {
    /// Hop-by-hop options (0), 8 bytes of padding options.
    pub fn hop_by_hop() -> Ext {
        Ext::options(IPPROTO_HOPOPTS, 0)
    }

    /// Hop-by-hop options carrying a router alert (MLD, RFC 2711).
    pub fn router_alert() -> Ext {
        // next, len 0, router alert (type 5, len 2, value 0 = MLD), PadN(0).
        Ext {
            kind: IPPROTO_HOPOPTS,
            bytes: vec![0, 0, 5, 2, 0, 0, 1, 0],
        }
    }

    /// Destination options (60), 8 bytes of padding options.
    pub fn dest_opts() -> Ext {
        Ext::options(IPPROTO_DSTOPTS, 0)
    }

    /// Hop-by-hop or destination options header of `(len + 1) * 8` bytes
    /// (rule 4), filled with Pad1/PadN options.
    pub fn options(kind: u8, len: u8) -> Ext {
        let total = (usize::from(len) + 1) * 8;
        let mut bytes = vec![0, len];
        bytes.extend(pad_options(total - 2));
        Ext { kind, bytes }
    }

    /// Routing header (43): type 0, segments left 0, `(len + 1) * 8` bytes.
    pub fn routing() -> Ext {
        Ext::routing_len(0)
    }

    /// Routing header (43) of `(len + 1) * 8` bytes, segments left 0.
    pub fn routing_len(len: u8) -> Ext {
        let total = (usize::from(len) + 1) * 8;
        let mut bytes = vec![0u8; total];
        bytes[1] = len;
        Ext {
            kind: IPPROTO_ROUTING,
            bytes,
        }
    }

    /// Authentication header (51) with a 12-byte ICV: 24 bytes, payload
    /// length field 4 (rule 4: `(len + 2) * 4`).
    pub fn auth() -> Ext {
        Ext::auth_icv(12)
    }

    /// Authentication header with an ICV of `icv_len` bytes (a multiple of 4).
    pub fn auth_icv(icv_len: usize) -> Ext {
        assert!(
            icv_len.is_multiple_of(4) && icv_len <= 1008,
            "AH ICV length"
        );
        let total = 12 + icv_len;
        let mut bytes = vec![0u8; total];
        bytes[1] = u8::try_from(total / 4 - 2).expect("AH length fits");
        bytes[4..8].copy_from_slice(&0x0000_1000u32.to_be_bytes()); // SPI
        bytes[8..12].copy_from_slice(&1u32.to_be_bytes()); // sequence
        for (i, b) in bytes[12..].iter_mut().enumerate() {
            *b = 0xa0 ^ i as u8;
        }
        Ext {
            kind: IPPROTO_AH,
            bytes,
        }
    }

    /// Fragment header (44). `offset` is in 8-byte units (13 bits); offset
    /// ≠ 0 is a non-first fragment, which ends the walk (rule 4).
    pub fn fragment(offset: u16, more: bool) -> Ext {
        Ext::fragment_id(offset, more, 0x0000_abcd)
    }

    /// Fragment header with an explicit identification.
    pub fn fragment_id(offset: u16, more: bool, id: u32) -> Ext {
        let field = ((offset & 0x1fff) << 3) | u16::from(more);
        let mut bytes = vec![0, 0];
        bytes.extend(field.to_be_bytes());
        bytes.extend(id.to_be_bytes());
        Ext {
            kind: IPPROTO_FRAGMENT,
            bytes,
        }
    }

    /// Any header, bytes as given (byte 0 is still overwritten with the
    /// next header).
    pub fn raw(kind: u8, bytes: Vec<u8>) -> Ext {
        Ext { kind, bytes }
    }

    /// The default header of an extension-header protocol number: 0 →
    /// [`Ext::hop_by_hop`], 43 → [`Ext::routing`], 44 → first fragment
    /// (offset 0, more fragments), 51 → [`Ext::auth`], 60 →
    /// [`Ext::dest_opts`]; any other number gets an 8-byte header shaped
    /// like a routing header.
    pub fn of_kind(kind: u8) -> Ext {
        match kind {
            IPPROTO_HOPOPTS => Ext::hop_by_hop(),
            IPPROTO_ROUTING => Ext::routing(),
            IPPROTO_FRAGMENT => Ext::fragment(0, true),
            IPPROTO_AH => Ext::auth(),
            IPPROTO_DSTOPTS => Ext::dest_opts(),
            other => Ext::raw(other, vec![0; 8]),
        }
    }

    /// Wire length.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the header has no bytes at all (only for broken tests).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A chain of default extension headers, one per protocol number in
/// `kinds`, in that order (see [`Ext::of_kind`]).
pub fn ext_chain(kinds: &[u8]) -> Vec<Ext> {
    kinds.iter().map(|&k| Ext::of_kind(k)).collect()
}

/// `n` bytes of IPv6 padding options (Pad1 / PadN).
fn pad_options(mut n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while n > 0 {
        if n == 1 {
            out.push(0);
            n = 0;
        } else {
            let k = (n - 2).min(255);
            out.push(1);
            out.push(k as u8);
            out.extend(std::iter::repeat_n(0, k));
            n -= k + 2;
        }
    }
    out
}

#[derive(Clone, Debug)]
struct Ipv4 {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    tos: u8,
    id: u16,
    df: bool,
    mf: bool,
    frag_offset: u16,
    ttl: u8,
    options: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Ipv6 {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    traffic_class: u8,
    flow_label: u32,
    hop_limit: Option<u8>,
    exts: Vec<Ext>,
}

#[derive(Clone, Debug)]
enum Net {
    None,
    Ipv4(Ipv4),
    Ipv6(Ipv6),
    Arp(Arp),
}

#[derive(Clone, Debug)]
enum L4 {
    None,
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        window: u16,
        options: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmp {
        ty: u8,
        code: u8,
        rest: [u8; 4],
    },
    Icmpv6 {
        ty: u8,
        code: u8,
        body: Vec<u8>,
    },
    Raw(u8),
}

impl L4 {
    fn proto(&self) -> Option<u8> {
        match self {
            L4::None => None,
            L4::Tcp { .. } => Some(IPPROTO_TCP),
            L4::Udp { .. } => Some(IPPROTO_UDP),
            L4::Icmp { .. } => Some(IPPROTO_ICMP),
            L4::Icmpv6 { .. } => Some(IPPROTO_ICMPV6),
            L4::Raw(p) => Some(*p),
        }
    }
}

/// A frame under construction; see the module docs.
///
/// Methods that only make sense for one network layer (e.g. [`Frame::ihl`]
/// before [`Frame::ipv4`]) panic when misused: these are test fixtures.
#[derive(Clone, Debug)]
#[must_use]
pub struct Frame {
    src_mac: Mac,
    dst_mac: Mac,
    tags: Vec<VlanTag>,
    ethertype: Option<u16>,
    net: Net,
    l4: L4,
    proto_override: Option<u8>,
    payload: Vec<u8>,
    pad_to: usize,
}

/// A built frame and where its headers are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembled {
    pub bytes: Vec<u8>,
    /// Offset of the innermost ethertype field (12, 16, 20, ...).
    pub ethertype: usize,
    /// Offset of the network header (IPv4, IPv6, ARP or raw payload).
    pub l3: usize,
    /// Offsets of the IPv6 extension headers, in order.
    pub exts: Vec<usize>,
    /// Offset of the TCP/UDP/ICMP/ICMPv6 header, if there is one.
    pub l4: Option<usize>,
    /// End of the network packet, i.e. where link-layer padding starts.
    pub end: usize,
}

impl Frame {
    /// Start an Ethernet II frame. Note the argument order: source first
    /// (the wire has the destination first).
    pub fn eth(src_mac: Mac, dst_mac: Mac) -> Frame {
        Frame {
            src_mac,
            dst_mac,
            tags: Vec::new(),
            ethertype: None,
            net: Net::None,
            l4: L4::None,
            proto_override: None,
            payload: Vec::new(),
            pad_to: 0,
        }
    }

    /// Push a VLAN tag (outermost first; call twice for QinQ). Rule 1: one
    /// tag of TPID 0x8100 or 0x88a8 is parsed, a second one is
    /// `Unsupported`. `vid` is masked to 12 bits, PCP/DEI are 0.
    pub fn vlan(mut self, tpid: u16, vid: u16) -> Frame {
        self.tags.push(VlanTag {
            tpid,
            tci: vid & 0x0fff,
        });
        self
    }

    /// Push a VLAN tag with a raw TCI (PCP, DEI and VLAN id).
    pub fn vlan_tci(mut self, tpid: u16, tci: u16) -> Frame {
        self.tags.push(VlanTag { tpid, tci });
        self
    }

    /// 802.1ad outer tag (0x88a8) + 802.1Q inner tag (0x8100): rule 1
    /// makes this `Unsupported`.
    pub fn qinq(self, outer_vid: u16, inner_vid: u16) -> Frame {
        self.vlan(ETHERTYPE_QINQ, outer_vid)
            .vlan(ETHERTYPE_VLAN, inner_vid)
    }

    /// Set the innermost ethertype explicitly, overriding the one implied
    /// by the network layer (rule 6 for unknown values; e.g. an IPv4 packet
    /// under 0x86dd fails rule 4's version check).
    pub fn ethertype(mut self, ethertype: u16) -> Frame {
        self.ethertype = Some(ethertype);
        self
    }

    /// IPv4 header (rule 3): IHL 5, DF set, identification 0, TTL 64.
    pub fn ipv4(mut self, src: Ipv4Addr, dst: Ipv4Addr) -> Frame {
        self.net = Net::Ipv4(Ipv4 {
            src,
            dst,
            tos: 0,
            id: 0,
            df: true,
            mf: false,
            frag_offset: 0,
            ttl: 64,
            options: Vec::new(),
        });
        self
    }

    /// IPv6 header (rule 4): traffic class 0, flow label 0, hop limit 64
    /// (255 for neighbour discovery, 1 for MLD, unless set).
    pub fn ipv6(mut self, src: Ipv6Addr, dst: Ipv6Addr) -> Frame {
        self.net = Net::Ipv6(Ipv6 {
            src,
            dst,
            traffic_class: 0,
            flow_label: 0,
            hop_limit: None,
            exts: Vec::new(),
        });
        self
    }

    /// ARP packet under ethertype 0x0806 (rule 2).
    pub fn arp(mut self, arp: Arp) -> Frame {
        self.net = Net::Arp(arp);
        self
    }

    fn v4(&mut self) -> &mut Ipv4 {
        match &mut self.net {
            Net::Ipv4(ip) => ip,
            _ => panic!("IPv4 option on a frame without an IPv4 header"),
        }
    }

    fn v6(&mut self) -> &mut Ipv6 {
        match &mut self.net {
            Net::Ipv6(ip) => ip,
            _ => panic!("IPv6 option on a frame without an IPv6 header"),
        }
    }

    /// IPv4 TTL or IPv6 hop limit.
    pub fn hop_limit(mut self, hops: u8) -> Frame {
        match &mut self.net {
            Net::Ipv4(ip) => ip.ttl = hops,
            Net::Ipv6(ip) => ip.hop_limit = Some(hops),
            _ => panic!("hop_limit on a frame without an IP header"),
        }
        self
    }

    /// IPv4 type of service (DSCP/ECN) or IPv6 traffic class.
    pub fn tos(mut self, tos: u8) -> Frame {
        match &mut self.net {
            Net::Ipv4(ip) => ip.tos = tos,
            Net::Ipv6(ip) => ip.traffic_class = tos,
            _ => panic!("tos on a frame without an IP header"),
        }
        self
    }

    /// IPv6 flow label (20 bits).
    pub fn flow_label(mut self, label: u32) -> Frame {
        self.v6().flow_label = label & 0xf_ffff;
        self
    }

    /// IPv4 identification.
    pub fn ip_id(mut self, id: u16) -> Frame {
        self.v4().id = id;
        self
    }

    /// IPv4 don't-fragment flag (set by default).
    pub fn dont_fragment(mut self, df: bool) -> Frame {
        self.v4().df = df;
        self
    }

    /// Make the packet a fragment. `offset` is in 8-byte units (13 bits).
    /// IPv4: sets the offset and MF flag (and clears DF). IPv6: appends a
    /// fragment extension header at this point of the chain. Rules 3 and 4:
    /// offset ≠ 0 is a non-first fragment, whose transport header is not
    /// read; give it [`Frame::raw`] and a payload rather than a transport
    /// header. Offset 0 with `more` is a first fragment, parsed as usual.
    pub fn fragment(mut self, offset: u16, more: bool) -> Frame {
        match &mut self.net {
            Net::Ipv4(ip) => {
                ip.frag_offset = offset & 0x1fff;
                ip.mf = more;
                ip.df = false;
            }
            Net::Ipv6(ip) => ip.exts.push(Ext::fragment(offset, more)),
            _ => panic!("fragment on a frame without an IP header"),
        }
        self
    }

    /// IPv4 options (rule 3: skipped), padded with EOL to a multiple of 4
    /// bytes; at most 40 bytes.
    pub fn ipv4_options(mut self, options: &[u8]) -> Frame {
        let mut opts = options.to_vec();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        assert!(opts.len() <= 40, "IPv4 options are at most 40 bytes");
        self.v4().options = opts;
        self
    }

    /// IPv4 header length in 32-bit words (5..=15), made up with NOP
    /// options. For IHL < 5 build a frame and patch the byte.
    pub fn ihl(self, ihl: u8) -> Frame {
        assert!((5..=15).contains(&ihl), "IHL must be 5..=15");
        let n = usize::from(ihl - 5) * 4;
        self.ipv4_options(&vec![1; n])
    }

    /// Append an IPv6 extension header (rule 4) to the chain.
    pub fn ext(mut self, ext: Ext) -> Frame {
        self.v6().exts.push(ext);
        self
    }

    /// Append several IPv6 extension headers.
    pub fn exts(mut self, exts: impl IntoIterator<Item = Ext>) -> Frame {
        self.v6().exts.extend(exts);
        self
    }

    /// Write `proto` as the IPv4 protocol / the IPv6 next header naming the
    /// transport layer, whatever the transport layer really is. Checksums
    /// still use the real transport protocol.
    pub fn ip_proto(mut self, proto: u8) -> Frame {
        self.proto_override = Some(proto);
        self
    }

    /// TCP header (rule 5: 20 bytes, data offset 5), seq 1, ack 0, window
    /// 64240. `flags` is the flags byte (see `netwatch_common::flow::tcp_flags`).
    pub fn tcp(mut self, sport: u16, dport: u16, flags: u8) -> Frame {
        self.l4 = L4::Tcp {
            sport,
            dport,
            flags,
            seq: 1,
            ack: 0,
            window: 64240,
            options: Vec::new(),
        };
        self
    }

    fn tcp_fields(&mut self) -> (&mut u32, &mut u32, &mut u16, &mut Vec<u8>) {
        match &mut self.l4 {
            L4::Tcp {
                seq,
                ack,
                window,
                options,
                ..
            } => (seq, ack, window, options),
            _ => panic!("TCP option on a frame without a TCP header"),
        }
    }

    /// TCP sequence and acknowledgment numbers.
    pub fn tcp_seq(mut self, seq: u32, ack: u32) -> Frame {
        let (s, a, _, _) = self.tcp_fields();
        *s = seq;
        *a = ack;
        self
    }

    /// TCP window.
    pub fn tcp_window(mut self, window: u16) -> Frame {
        *self.tcp_fields().2 = window;
        self
    }

    /// TCP options (rule 5: the data offset grows and the options must be
    /// present), padded with EOL to a multiple of 4; at most 40 bytes.
    pub fn tcp_options(mut self, options: &[u8]) -> Frame {
        let mut opts = options.to_vec();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        assert!(opts.len() <= 40, "TCP options are at most 40 bytes");
        *self.tcp_fields().3 = opts;
        self
    }

    /// Typical SYN options: MSS 1460, SACK permitted, timestamps, NOP,
    /// window scale 7 (20 bytes, data offset 10).
    pub fn tcp_syn_options(self) -> Frame {
        self.tcp_options(&[
            2, 4, 0x05, 0xb4, // MSS 1460
            4, 2, // SACK permitted
            8, 10, 0, 0, 0, 1, 0, 0, 0, 0, // timestamps
            1, // NOP
            3, 3, 7, // window scale 7
        ])
    }

    /// UDP header (rule 5: 8 bytes).
    pub fn udp(mut self, sport: u16, dport: u16) -> Frame {
        self.l4 = L4::Udp { sport, dport };
        self
    }

    /// ICMP header (rule 5: 8 bytes, IPv4 only) with the 4 bytes after the
    /// checksum given.
    pub fn icmp(mut self, ty: u8, code: u8, rest: [u8; 4]) -> Frame {
        self.l4 = L4::Icmp { ty, code, rest };
        self
    }

    /// ICMP echo request (type 8).
    pub fn icmp_echo_request(self, id: u16, seq: u16) -> Frame {
        self.icmp(ICMP_ECHO_REQUEST, 0, id_seq(id, seq))
    }

    /// ICMP echo reply (type 0).
    pub fn icmp_echo_reply(self, id: u16, seq: u16) -> Frame {
        self.icmp(ICMP_ECHO_REPLY, 0, id_seq(id, seq))
    }

    /// ICMP destination unreachable (type 3) quoting `quoted` (normally the
    /// offending IP header + 8 bytes, see [`Frame::ip_packet`]) as payload.
    pub fn icmp_dest_unreachable(self, code: u8, quoted: &[u8]) -> Frame {
        self.icmp(ICMP_DEST_UNREACHABLE, code, [0; 4])
            .payload(quoted)
    }

    /// ICMPv6 header (rule 5: 8 bytes, IPv6 only). `body` is everything
    /// after type, code and checksum (so at least 4 bytes for a valid
    /// message); [`Frame::payload`] is appended after it.
    pub fn icmpv6(mut self, ty: u8, code: u8, body: &[u8]) -> Frame {
        self.l4 = L4::Icmpv6 {
            ty,
            code,
            body: body.to_vec(),
        };
        self
    }

    /// ICMPv6 echo request (128).
    pub fn icmpv6_echo_request(self, id: u16, seq: u16) -> Frame {
        self.icmpv6(ICMPV6_ECHO_REQUEST, 0, &id_seq(id, seq))
    }

    /// ICMPv6 echo reply (129).
    pub fn icmpv6_echo_reply(self, id: u16, seq: u16) -> Frame {
        self.icmpv6(ICMPV6_ECHO_REPLY, 0, &id_seq(id, seq))
    }

    /// Router solicitation (133, `NdKind::Solicit`), with a source
    /// link-layer address option if `slla` is given.
    pub fn router_solicit(self, slla: Option<Mac>) -> Frame {
        let mut body = vec![0; 4];
        push_lla(&mut body, 1, slla);
        self.icmpv6(ICMPV6_ROUTER_SOLICIT, 0, &body)
    }

    /// Router advertisement (134, not neighbour discovery for the verdict):
    /// cur hop limit 64, `lifetime` seconds, optional SLLA option.
    pub fn router_advert(self, lifetime: u16, slla: Option<Mac>) -> Frame {
        let mut body = vec![64, 0];
        body.extend(lifetime.to_be_bytes());
        body.extend([0; 8]); // reachable time, retrans timer
        push_lla(&mut body, 1, slla);
        self.icmpv6(ICMPV6_ROUTER_ADVERT, 0, &body)
    }

    /// Neighbour solicitation (135, `NdKind::Solicit`) for `target`, with a
    /// source link-layer address option if `slla` is given.
    pub fn neighbor_solicit(self, target: Ipv6Addr, slla: Option<Mac>) -> Frame {
        let mut body = vec![0; 4];
        body.extend(target.octets());
        push_lla(&mut body, 1, slla);
        self.icmpv6(ICMPV6_NEIGHBOR_SOLICIT, 0, &body)
    }

    /// Neighbour advertisement (136, `NdKind::Advert`): `flags` (see
    /// [`NA_SOLICITED`] etc.), the 16-byte target at offset 8 of the ICMPv6
    /// header (rule 5: an advertisement needs 24 bytes), and a target
    /// link-layer address option if `tlla` is given.
    pub fn neighbor_advert(self, target: Ipv6Addr, flags: u8, tlla: Option<Mac>) -> Frame {
        let mut body = vec![flags, 0, 0, 0];
        body.extend(target.octets());
        push_lla(&mut body, 2, tlla);
        self.icmpv6(ICMPV6_NEIGHBOR_ADVERT, 0, &body)
    }

    /// MLDv2 report (143, `NdKind::Solicit`) with one CHANGE_TO_EXCLUDE
    /// record per group. Add [`Ext::router_alert`] yourself (or use
    /// [`mldv2_report`]).
    pub fn mldv2_report(self, groups: &[Ipv6Addr]) -> Frame {
        let mut body = vec![0, 0];
        body.extend(
            u16::try_from(groups.len())
                .expect("group count")
                .to_be_bytes(),
        );
        for g in groups {
            body.extend([4, 0, 0, 0]); // CHANGE_TO_EXCLUDE, no aux, no sources
            body.extend(g.octets());
        }
        self.icmpv6(ICMPV6_MLD2_REPORT, 0, &body)
    }

    /// No transport header: the IP protocol / last next header is `proto`
    /// and the payload follows the IP header directly (rule 5: "other
    /// protocols are not parsed past the IP header", e.g. 47 GRE, 132 SCTP,
    /// or the data of a non-first fragment).
    pub fn raw(mut self, proto: u8) -> Frame {
        self.l4 = L4::Raw(proto);
        self
    }

    /// Payload after the last header.
    pub fn payload(mut self, payload: &[u8]) -> Frame {
        self.payload = payload.to_vec();
        self
    }

    /// `len` payload bytes 0, 1, 2, ... (wrapping).
    pub fn payload_len(mut self, len: usize) -> Frame {
        self.payload = (0..len).map(|i| i as u8).collect();
        self
    }

    /// Pad the frame with zeros to at least `len` bytes (e.g. 60, the
    /// Ethernet minimum). The padding is not part of the IP packet: rules 3
    /// and 4 only require the IP lengths to be ≤ the bytes present.
    pub fn pad_to(mut self, len: usize) -> Frame {
        self.pad_to = len;
        self
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        self.assemble().bytes
    }

    /// The network packet without the link header and padding (e.g. to
    /// quote it in an ICMP error).
    pub fn ip_packet(&self) -> Vec<u8> {
        let a = self.assemble();
        a.bytes[a.l3..a.end].to_vec()
    }

    /// The frame's bytes and the offsets of its headers.
    pub fn assemble(&self) -> Assembled {
        let mut b = Vec::with_capacity(128);
        b.extend(self.dst_mac);
        b.extend(self.src_mac);
        for tag in &self.tags {
            b.extend(tag.tpid.to_be_bytes());
            b.extend(tag.tci.to_be_bytes());
        }
        let ethertype = self.ethertype.unwrap_or(match self.net {
            Net::None => ETHERTYPE_EXPERIMENTAL,
            Net::Ipv4(_) => ETHERTYPE_IPV4,
            Net::Ipv6(_) => ETHERTYPE_IPV6,
            Net::Arp(_) => ETHERTYPE_ARP,
        });
        let ethertype_off = b.len();
        b.extend(ethertype.to_be_bytes());
        let l3 = b.len();
        let mut exts = Vec::new();
        let mut l4 = None;
        match &self.net {
            Net::None | Net::Arp(_) => {
                assert!(
                    matches!(self.l4, L4::None),
                    "a transport header needs an IP header"
                );
                if let Net::Arp(arp) = &self.net {
                    b.extend(arp.to_bytes());
                }
                b.extend(&self.payload);
            }
            Net::Ipv4(ip) => {
                let real = self.l4.proto().unwrap_or(IPPROTO_RESERVED);
                let proto = self.proto_override.unwrap_or(real);
                let seg = self.segment(&Pseudo::V4 {
                    src: ip.src,
                    dst: ip.dst,
                    proto: real,
                });
                let hlen = 20 + ip.options.len();
                let total = u16::try_from(hlen + seg.len()).expect("IPv4 packet too long");
                let mut h = Vec::with_capacity(hlen);
                h.push(0x40 | (hlen / 4) as u8);
                h.push(ip.tos);
                h.extend(total.to_be_bytes());
                h.extend(ip.id.to_be_bytes());
                let flags = (u16::from(ip.df) << 14) | (u16::from(ip.mf) << 13);
                h.extend((flags | ip.frag_offset).to_be_bytes());
                h.push(ip.ttl);
                h.push(proto);
                h.extend([0, 0]);
                h.extend(ip.src.octets());
                h.extend(ip.dst.octets());
                h.extend(&ip.options);
                let c = checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                b.extend(h);
                if self.has_l4_header() {
                    l4 = Some(b.len());
                }
                b.extend(seg);
            }
            Net::Ipv6(ip) => {
                let real = self.l4.proto().unwrap_or(IPPROTO_NONE);
                let last = self.proto_override.unwrap_or(real);
                let seg = self.segment(&Pseudo::V6 {
                    src: ip.src,
                    dst: ip.dst,
                    proto: real,
                });
                let ext_len: usize = ip.exts.iter().map(Ext::len).sum();
                let plen = u16::try_from(ext_len + seg.len()).expect("IPv6 payload too long");
                let hop_limit = ip.hop_limit.unwrap_or(match &self.l4 {
                    L4::Icmpv6 { ty: 133..=137, .. } => 255,
                    L4::Icmpv6 {
                        ty: 130..=132 | 143,
                        ..
                    } => 1,
                    _ => 64,
                });
                let first = ip.exts.first().map_or(last, |e| e.kind);
                let word = (6u32 << 28) | (u32::from(ip.traffic_class) << 20) | ip.flow_label;
                b.extend(word.to_be_bytes());
                b.extend(plen.to_be_bytes());
                b.push(first);
                b.push(hop_limit);
                b.extend(ip.src.octets());
                b.extend(ip.dst.octets());
                for (i, ext) in ip.exts.iter().enumerate() {
                    exts.push(b.len());
                    let next = ip.exts.get(i + 1).map_or(last, |e| e.kind);
                    let start = b.len();
                    b.extend(&ext.bytes);
                    if let Some(nh) = b.get_mut(start) {
                        *nh = next;
                    }
                }
                if self.has_l4_header() {
                    l4 = Some(b.len());
                }
                b.extend(seg);
            }
        }
        let end = b.len();
        if b.len() < self.pad_to {
            b.resize(self.pad_to, 0);
        }
        Assembled {
            bytes: b,
            ethertype: ethertype_off,
            l3,
            exts,
            l4,
            end,
        }
    }

    fn has_l4_header(&self) -> bool {
        !matches!(self.l4, L4::None | L4::Raw(_))
    }

    /// Transport header + payload, checksum filled in.
    fn segment(&self, pseudo: &Pseudo) -> Vec<u8> {
        let mut s = Vec::new();
        // Offset of the checksum field, and whether it covers a pseudo header.
        let (at, pseudo_header) = match &self.l4 {
            L4::None | L4::Raw(_) => {
                s.extend(&self.payload);
                return s;
            }
            L4::Tcp {
                sport,
                dport,
                flags,
                seq,
                ack,
                window,
                options,
            } => {
                s.extend(sport.to_be_bytes());
                s.extend(dport.to_be_bytes());
                s.extend(seq.to_be_bytes());
                s.extend(ack.to_be_bytes());
                s.push((((20 + options.len()) / 4) << 4) as u8);
                s.push(*flags);
                s.extend(window.to_be_bytes());
                s.extend([0, 0, 0, 0]); // checksum, urgent pointer
                s.extend(options);
                (16, true)
            }
            L4::Udp { sport, dport } => {
                s.extend(sport.to_be_bytes());
                s.extend(dport.to_be_bytes());
                let len = u16::try_from(8 + self.payload.len()).unwrap_or(0);
                s.extend(len.to_be_bytes());
                s.extend([0, 0]);
                (6, true)
            }
            L4::Icmp { ty, code, rest } => {
                s.extend([*ty, *code, 0, 0]);
                s.extend(rest);
                (2, false)
            }
            L4::Icmpv6 { ty, code, body } => {
                s.extend([*ty, *code, 0, 0]);
                s.extend(body);
                (2, true)
            }
        };
        s.extend(&self.payload);
        let mut c = if pseudo_header {
            checksum_with(pseudo.sum(s.len()), &s)
        } else {
            checksum(&s)
        };
        if matches!(self.l4, L4::Udp { .. }) && c == 0 {
            c = 0xffff;
        }
        s[at..at + 2].copy_from_slice(&c.to_be_bytes());
        s
    }
}

fn id_seq(id: u16, seq: u16) -> [u8; 4] {
    let [a, b] = id.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    [a, b, c, d]
}

/// ND link-layer address option (type 1 source, 2 target).
fn push_lla(body: &mut Vec<u8>, ty: u8, mac: Option<Mac>) {
    if let Some(mac) = mac {
        body.extend([ty, 1]);
        body.extend(mac);
    }
}

enum Pseudo {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        proto: u8,
    },
}

impl Pseudo {
    fn sum(&self, len: usize) -> u64 {
        let mut p = Vec::with_capacity(40);
        match self {
            Pseudo::V4 { src, dst, proto } => {
                p.extend(src.octets());
                p.extend(dst.octets());
                p.extend([0, *proto]);
                p.extend((len as u16).to_be_bytes());
            }
            Pseudo::V6 { src, dst, proto } => {
                p.extend(src.octets());
                p.extend(dst.octets());
                p.extend((len as u32).to_be_bytes());
                p.extend([0, 0, 0, *proto]);
            }
        }
        sum16(0, &p)
    }
}

fn sum16(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn checksum_with(initial: u64, data: &[u8]) -> u16 {
    fold(sum16(initial, data))
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    checksum_with(0, data)
}

/// Recompute the IPv4 header checksum of the header at `l3` in `frame`
/// after patching it (uses the IHL when it is 5..=15 and fits, else 20
/// bytes; does nothing when fewer than 20 bytes are there).
pub fn fix_ipv4_checksum(frame: &mut [u8], l3: usize) {
    let Some(h) = frame.get_mut(l3..) else { return };
    if h.len() < 20 {
        return;
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let hlen = if ihl >= 20 && ihl <= h.len() { ihl } else { 20 };
    h[10] = 0;
    h[11] = 0;
    let c = checksum(&h[..hlen]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The solicited-node multicast address of `addr` (ff02::1:ffXX:XXXX).
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet address of an IPv6 multicast group (33:33 + low 32 bits).
pub fn ipv6_multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// ff02::1, all nodes.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// ff02::2, all routers.
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// ff02::16, all MLDv2-capable routers.
pub const ALL_MLDV2_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16);

/// Broadcast ARP request from `sender_mac`/`sender_ip` for `target_ip`
/// (rule 2).
pub fn arp_request(sender_mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    Frame::eth(sender_mac, BROADCAST)
        .arp(Arp::request(sender_mac, sender_ip, target_ip))
        .build()
}

/// Unicast ARP reply "`sender_ip` is at `sender_mac`" to `target_mac`/
/// `target_ip` (rule 2).
pub fn arp_reply(
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    Frame::eth(sender_mac, target_mac)
        .arp(Arp::reply(sender_mac, sender_ip, target_mac, target_ip))
        .build()
}

/// Neighbour solicitation for `target` sent to its solicited-node group
/// (hop limit 255; SLLA option unless `src` is :: as in DAD).
pub fn neighbor_solicitation(src_mac: Mac, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node(target);
    let slla = (!src.is_unspecified()).then_some(src_mac);
    Frame::eth(src_mac, ipv6_multicast_mac(group))
        .ipv6(src, group)
        .neighbor_solicit(target, slla)
        .build()
}

/// Neighbour advertisement for `target` (hop limit 255, TLLA option
/// `src_mac`): solicited+override to a unicast `dst`, override only to a
/// multicast one (unsolicited).
pub fn neighbor_advertisement(
    src_mac: Mac,
    src: Ipv6Addr,
    dst_mac: Mac,
    dst: Ipv6Addr,
    target: Ipv6Addr,
) -> Vec<u8> {
    let flags = if dst.is_multicast() {
        NA_OVERRIDE
    } else {
        NA_SOLICITED | NA_OVERRIDE
    };
    Frame::eth(src_mac, dst_mac)
        .ipv6(src, dst)
        .neighbor_advert(target, flags, Some(src_mac))
        .build()
}

/// Router solicitation to ff02::2 with an SLLA option.
pub fn router_solicitation(src_mac: Mac, src: Ipv6Addr) -> Vec<u8> {
    Frame::eth(src_mac, ipv6_multicast_mac(ALL_ROUTERS))
        .ipv6(src, ALL_ROUTERS)
        .router_solicit(Some(src_mac))
        .build()
}

/// Router advertisement to ff02::1 (lifetime 1800 s, SLLA option).
pub fn router_advertisement(src_mac: Mac, src: Ipv6Addr) -> Vec<u8> {
    Frame::eth(src_mac, ipv6_multicast_mac(ALL_NODES))
        .ipv6(src, ALL_NODES)
        .router_advert(1800, Some(src_mac))
        .build()
}

/// MLDv2 report to ff02::16 joining `groups`, hop limit 1, behind a
/// hop-by-hop header with a router alert (rule 4: one extension header).
pub fn mldv2_report(src_mac: Mac, src: Ipv6Addr, groups: &[Ipv6Addr]) -> Vec<u8> {
    Frame::eth(src_mac, ipv6_multicast_mac(ALL_MLDV2_ROUTERS))
        .ipv6(src, ALL_MLDV2_ROUTERS)
        .ext(Ext::router_alert())
        .mldv2_report(groups)
        .build()
}

/// Lowercase hex, no separators: paste it into [`from_hex`] to turn a
/// failing generated case into a fixed one.
pub fn hex(frame: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(frame.len() * 2);
    for b in frame {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parse hex (either case). Whitespace, `:`, `-` and `_` are ignored, as is
/// a leading `0x`, so tcpdump/wireshark dumps without offsets also work.
/// Panics on anything else or an odd number of digits (test fixture).
pub fn from_hex(s: &str) -> Vec<u8> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let digits: Vec<u8> = s
        .chars()
        .filter(|c| !(c.is_whitespace() || matches!(c, ':' | '-' | '_')))
        .map(|c| match c.to_digit(16) {
            Some(d) => d as u8,
            None => panic!("from_hex: not a hex digit: {c:?}"),
        })
        .collect();
    assert!(
        digits.len().is_multiple_of(2),
        "from_hex: odd number of hex digits ({})",
        digits.len()
    );
    digits.chunks_exact(2).map(|p| (p[0] << 4) | p[1]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        ArpHardwareId, ArpOperation, ArpPacket, EtherType, IpNumber, LinkExtSlice, NetSlice,
        PacketBuilder, SlicedPacket, TransportSlice,
    };
    use netwatch_common::flow::tcp_flags::{ACK, SYN};

    const A: Mac = [0x02, 0x42, 0xac, 0x11, 0, 2];
    const B: Mac = [0x02, 0x42, 0xac, 0x11, 0, 3];
    const V4A: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
    const V4B: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
    const V6A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    const V6B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);

    fn sliced(frame: &[u8]) -> SlicedPacket<'_> {
        SlicedPacket::from_ethernet(frame)
            .unwrap_or_else(|e| panic!("etherparse rejects {}: {e:?}", hex(frame)))
    }

    fn pb_vec<F>(f: F) -> Vec<u8>
    where
        F: FnOnce(&mut Vec<u8>),
    {
        let mut v = Vec::new();
        f(&mut v);
        v
    }

    #[test]
    fn matches_packet_builder_ipv4_tcp() {
        let payload = [9u8; 7];
        let ours = Frame::eth(A, B)
            .ipv4(V4A, V4B)
            .tcp(40000, 80, SYN | ACK)
            .tcp_seq(1, 77)
            .payload(&payload)
            .build();
        let theirs = pb_vec(|v| {
            PacketBuilder::ethernet2(A, B)
                .ipv4(V4A.octets(), V4B.octets(), 64)
                .tcp(40000, 80, 1, 64240)
                .syn()
                .ack(77)
                .write(v, &payload)
                .unwrap()
        });
        assert_eq!(hex(&ours), hex(&theirs));
    }

    #[test]
    fn matches_packet_builder_udp_icmp_vlan_arp_v6() {
        let p = [1u8, 2, 3];
        let ours = Frame::eth(A, B)
            .vlan(0x8100, 0x123)
            .ipv4(V4A, V4B)
            .udp(53, 5353)
            .payload(&p)
            .build();
        let theirs = pb_vec(|v| {
            PacketBuilder::ethernet2(A, B)
                .single_vlan(0x123.try_into().unwrap())
                .ipv4(V4A.octets(), V4B.octets(), 64)
                .udp(53, 5353)
                .write(v, &p)
                .unwrap()
        });
        assert_eq!(hex(&ours), hex(&theirs), "vlan udp");

        let ours = Frame::eth(A, B)
            .ipv4(V4A, V4B)
            .icmp_echo_request(7, 9)
            .payload(&p)
            .build();
        let theirs = pb_vec(|v| {
            PacketBuilder::ethernet2(A, B)
                .ipv4(V4A.octets(), V4B.octets(), 64)
                .icmpv4_echo_request(7, 9)
                .write(v, &p)
                .unwrap()
        });
        assert_eq!(hex(&ours), hex(&theirs), "icmp echo");

        let ours = Frame::eth(A, B)
            .ipv6(V6A, V6B)
            .udp(546, 547)
            .payload(&p)
            .build();
        let theirs = pb_vec(|v| {
            PacketBuilder::ethernet2(A, B)
                .ipv6(V6A.octets(), V6B.octets(), 64)
                .udp(546, 547)
                .write(v, &p)
                .unwrap()
        });
        assert_eq!(hex(&ours), hex(&theirs), "ipv6 udp");

        let ours = Frame::eth(A, B)
            .ipv6(V6A, V6B)
            .icmpv6_echo_reply(1, 2)
            .payload(&p)
            .build();
        let theirs = pb_vec(|v| {
            PacketBuilder::ethernet2(A, B)
                .ipv6(V6A.octets(), V6B.octets(), 64)
                .icmpv6_echo_reply(1, 2)
                .write(v, &p)
                .unwrap()
        });
        assert_eq!(hex(&ours), hex(&theirs), "icmpv6 echo");

        let ours = arp_request(A, V4A, V4B);
        let theirs = pb_vec(|v| {
            PacketBuilder::ethernet2(A, BROADCAST)
                .arp(
                    ArpPacket::new(
                        ArpHardwareId::ETHERNET,
                        EtherType::IPV4,
                        ArpOperation::REQUEST,
                        &A,
                        &V4A.octets(),
                        &[0; 6],
                        &V4B.octets(),
                    )
                    .unwrap(),
                )
                .write(v)
                .unwrap()
        });
        assert_eq!(hex(&ours), hex(&theirs), "arp");
    }

    fn transport(frame: &[u8]) -> Option<TransportSlice<'_>> {
        sliced(frame).transport
    }

    #[test]
    fn ipv4_kinds_parse_back() {
        let f = Frame::eth(A, B)
            .ipv4(V4A, V4B)
            .tcp(1, 2, 0x3f)
            .tcp_syn_options()
            .payload_len(5)
            .build();
        let s = sliced(&f);
        let Some(NetSlice::Ipv4(ip)) = &s.net else {
            panic!()
        };
        assert_eq!(ip.header().source_addr(), V4A);
        assert_eq!(ip.header().destination_addr(), V4B);
        let Some(TransportSlice::Tcp(t)) = &s.transport else {
            panic!()
        };
        assert_eq!((t.source_port(), t.destination_port()), (1, 2));
        assert_eq!(t.data_offset(), 10);
        assert_eq!(t.payload().len(), 5);
        assert!(t.syn() && t.fin() && t.ack() && t.urg());
        // TCP checksum checked by etherparse's own computation.
        let h = t.to_header();
        assert_eq!(
            h.checksum,
            h.calc_checksum_ipv4(&ip.header().to_header(), t.payload())
                .unwrap()
        );
        assert_eq!(
            ip.header().header_checksum(),
            ip.header().to_header().calc_header_checksum()
        );

        let f = Frame::eth(A, B)
            .ipv4(V4A, V4B)
            .ihl(15)
            .udp(9, 10)
            .payload_len(3)
            .build();
        let s = sliced(&f);
        let Some(NetSlice::Ipv4(ip)) = &s.net else {
            panic!()
        };
        assert_eq!(ip.header().ihl(), 15);
        assert_eq!(
            ip.header().header_checksum(),
            ip.header().to_header().calc_header_checksum()
        );
        let Some(TransportSlice::Udp(u)) = &s.transport else {
            panic!()
        };
        assert_eq!(u.destination_port(), 10);
        assert_eq!(
            u.checksum(),
            u.to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), u.payload())
                .unwrap()
        );

        let inner = Frame::eth(B, A)
            .ipv4(V4B, V4A)
            .udp(53, 40000)
            .payload_len(8)
            .ip_packet();
        let f = Frame::eth(A, B)
            .ipv4(V4A, V4B)
            .icmp_dest_unreachable(3, &inner[..28])
            .build();
        let Some(TransportSlice::Icmpv4(i)) = transport(&f) else {
            panic!()
        };
        assert_eq!((i.type_u8(), i.code_u8()), (3, 3));
        assert_eq!(i.payload(), &inner[..28]);
        assert_eq!(
            i.checksum(),
            i.header().icmp_type.calc_checksum(i.payload())
        );

        let f = Frame::eth(A, B)
            .ipv4(V4A, V4B)
            .icmp_echo_reply(1, 1)
            .build();
        let Some(TransportSlice::Icmpv4(i)) = transport(&f) else {
            panic!()
        };
        assert_eq!(i.type_u8(), 0);

        for proto in [47u8, 132] {
            let f = Frame::eth(A, B)
                .ipv4(V4A, V4B)
                .raw(proto)
                .payload_len(12)
                .build();
            let s = sliced(&f);
            let Some(NetSlice::Ipv4(ip)) = &s.net else {
                panic!()
            };
            assert_eq!(ip.header().protocol(), IpNumber(proto));
            assert_eq!(ip.payload().payload.len(), 12);
        }
    }

    #[test]
    fn ipv4_fragments_parse_back() {
        let first = Frame::eth(A, B)
            .ipv4(V4A, V4B)
            .fragment(0, true)
            .udp(1, 2)
            .payload_len(16)
            .build();
        let s = sliced(&first);
        let Some(NetSlice::Ipv4(ip)) = &s.net else {
            panic!()
        };
        assert!(ip.header().more_fragments());
        assert_eq!(ip.header().fragments_offset().value(), 0);
        assert!(ip.is_payload_fragmented());

        let later = Frame::eth(A, B)
            .ipv4(V4A, V4B)
            .fragment(3, false)
            .raw(IPPROTO_UDP)
            .payload_len(10)
            .build();
        let s = sliced(&later);
        let Some(NetSlice::Ipv4(ip)) = &s.net else {
            panic!()
        };
        assert!(!ip.header().more_fragments());
        assert_eq!(ip.header().fragments_offset().value(), 3);
        assert_eq!(ip.payload().payload.len(), 10);
        assert!(s.transport.is_none());
        assert_eq!(
            ip.header().header_checksum(),
            ip.header().to_header().calc_header_checksum()
        );
    }

    #[test]
    fn ipv6_kinds_parse_back() {
        let f = Frame::eth(A, B)
            .ipv6(V6A, V6B)
            .tcp(443, 50000, ACK)
            .payload_len(3)
            .build();
        let s = sliced(&f);
        let Some(NetSlice::Ipv6(ip)) = &s.net else {
            panic!()
        };
        let Some(TransportSlice::Tcp(t)) = &s.transport else {
            panic!()
        };
        let h = t.to_header();
        assert_eq!(
            h.checksum,
            h.calc_checksum_ipv6(&ip.header().to_header(), t.payload())
                .unwrap()
        );

        let target = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0xab, 0xcdef);
        let ns = neighbor_solicitation(A, V6A, target);
        let s = sliced(&ns);
        assert_eq!(&ns[..6], &[0x33, 0x33, 0xff, 0xab, 0xcd, 0xef]);
        let Some(NetSlice::Ipv6(ip)) = &s.net else {
            panic!()
        };
        assert_eq!(
            ip.header().destination_addr(),
            "ff02::1:ffab:cdef".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(ip.header().hop_limit(), 255);
        let Some(TransportSlice::Icmpv6(i)) = &s.transport else {
            panic!()
        };
        assert_eq!(i.type_u8(), 135);
        assert_eq!(&i.slice()[8..24], &target.octets());
        assert_eq!(
            i.checksum(),
            i.icmp_type()
                .calc_checksum(V6A.octets(), ip.header().destination(), i.payload())
                .unwrap()
        );

        let na = neighbor_advertisement(A, V6A, B, V6B, V6A);
        let Some(TransportSlice::Icmpv6(i)) = transport(&na) else {
            panic!()
        };
        assert_eq!(i.type_u8(), 136);
        assert_eq!(&i.slice()[8..24], &V6A.octets());
        assert_eq!(i.slice()[4], NA_SOLICITED | NA_OVERRIDE);
        assert_eq!(i.slice().len(), 32);

        for (frame, ty) in [
            (router_solicitation(A, V6A), 133),
            (router_advertisement(A, V6A), 134),
        ] {
            let Some(TransportSlice::Icmpv6(i)) = transport(&frame) else {
                panic!()
            };
            assert_eq!(i.type_u8(), ty);
        }

        let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb);
        let mld = mldv2_report(A, V6A, &[group]);
        let s = sliced(&mld);
        let Some(NetSlice::Ipv6(ip)) = &s.net else {
            panic!()
        };
        assert_eq!(ip.header().hop_limit(), 1);
        assert_eq!(ip.extensions().first_header(), Some(IpNumber(0)));
        assert_eq!(&ip.extensions().slice()[2..4], &[5, 2]);
        let Some(TransportSlice::Icmpv6(i)) = &s.transport else {
            panic!()
        };
        assert_eq!(i.type_u8(), 143);
        assert_eq!(&i.slice()[12..28], &group.octets());
        assert_eq!(
            i.checksum(),
            i.icmp_type()
                .calc_checksum(V6A.octets(), ip.header().destination(), i.payload())
                .unwrap()
        );
    }

    #[test]
    fn ipv6_ext_chains_parse_back() {
        // etherparse requires hop-by-hop first; the builder does not.
        let kinds = [0u8, 60, 43, 51, 60, 44];
        let a = Frame::eth(A, B)
            .ipv6(V6A, V6B)
            .exts(ext_chain(&kinds))
            .udp(1000, 2000)
            .payload_len(4)
            .assemble();
        assert_eq!(a.exts.len(), kinds.len());
        let s = sliced(&a.bytes);
        let Some(NetSlice::Ipv6(ip)) = &s.net else {
            panic!()
        };
        let seen: Vec<u8> = ip
            .extensions()
            .clone()
            .into_iter()
            .map(|e| match e {
                etherparse::Ipv6ExtensionSlice::HopByHop(_) => 0,
                etherparse::Ipv6ExtensionSlice::Routing(_) => 43,
                etherparse::Ipv6ExtensionSlice::Fragment(_) => 44,
                etherparse::Ipv6ExtensionSlice::DestinationOptions(_) => 60,
                etherparse::Ipv6ExtensionSlice::Authentication(_) => 51,
            })
            .collect();
        assert_eq!(seen, kinds);
        assert_eq!(ip.payload().ip_number, IpNumber::UDP);
        // first fragment: etherparse treats it as fragmented
        assert!(ip.is_payload_fragmented());
        assert_eq!(a.l4, Some(a.end - 12));

        // Without the fragment header, the UDP header is reached.
        let f = Frame::eth(A, B)
            .ipv6(V6A, V6B)
            .exts(ext_chain(&[0, 43, 60]))
            .udp(1000, 2000)
            .payload_len(4)
            .build();
        let Some(TransportSlice::Udp(u)) = transport(&f) else {
            panic!()
        };
        assert_eq!(u.destination_port(), 2000);

        let later = Frame::eth(A, B)
            .ipv6(V6A, V6B)
            .ext(Ext::dest_opts())
            .fragment(100, true)
            .raw(IPPROTO_TCP)
            .payload_len(24)
            .build();
        let s = sliced(&later);
        let Some(NetSlice::Ipv6(ip)) = &s.net else {
            panic!()
        };
        assert!(ip.is_payload_fragmented());
        assert_eq!(ip.payload().ip_number, IpNumber::TCP);
        assert_eq!(ip.payload().payload.len(), 24);
    }

    #[test]
    fn vlan_and_ethertypes() {
        let f = Frame::eth(A, B)
            .vlan(0x88a8, 5)
            .ipv4(V4A, V4B)
            .udp(1, 2)
            .build();
        assert_eq!(&f[12..16], &[0x88, 0xa8, 0, 5]);
        assert_eq!(&f[16..18], &[0x08, 0x00]);
        let s = sliced(&f);
        assert_eq!(s.link_exts.len(), 1);
        assert!(matches!(s.transport, Some(TransportSlice::Udp(_))));

        let a = Frame::eth(A, B)
            .qinq(100, 200)
            .ipv6(V6A, V6B)
            .udp(1, 2)
            .assemble();
        assert_eq!((a.ethertype, a.l3), (20, 22));
        let s = sliced(&a.bytes);
        assert_eq!(s.link_exts.len(), 2);
        let LinkExtSlice::Vlan(outer) = &s.link_exts[0] else {
            panic!()
        };
        assert_eq!(outer.vlan_identifier().value(), 100);
        assert!(matches!(s.transport, Some(TransportSlice::Udp(_))));

        let f = Frame::eth(A, B).ethertype(0x88cc).payload_len(30).build();
        assert_eq!(f.len(), 44);
        assert_eq!(&f[12..14], &[0x88, 0xcc]);
        assert_eq!(&f[..6], &B);
        assert_eq!(&f[6..12], &A);

        let f = Frame::eth(A, B)
            .arp(Arp::reply(A, V4A, B, V4B))
            .pad_to(60)
            .build();
        assert_eq!(f.len(), 60);
        let Some(NetSlice::Arp(arp)) = sliced(&f).net else {
            panic!()
        };
        assert_eq!(arp.operation(), ArpOperation::REPLY);
        assert_eq!(arp.sender_protocol_addr(), &V4A.octets());
        assert_eq!(arp.target_hw_addr(), &B);
    }

    #[test]
    fn hex_round_trip() {
        let f = Frame::eth(A, B).ipv4(V4A, V4B).udp(1, 2).build();
        let h = hex(&f);
        assert_eq!(h.len(), f.len() * 2);
        assert_eq!(from_hex(&h), f);
        assert_eq!(
            from_hex(" 0x0A:bc-de_f0 \n12"),
            vec![0x0a, 0xbc, 0xde, 0xf0, 0x12]
        );
        assert_eq!(from_hex(""), Vec::<u8>::new());
    }

    #[test]
    #[should_panic(expected = "odd number")]
    fn from_hex_rejects_odd() {
        from_hex("abc");
    }

    #[test]
    fn checksum_known_value() {
        // RFC 1071 example.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
        let mut f = Frame::eth(A, B).ipv4(V4A, V4B).udp(1, 2).build();
        let before = f.clone();
        f[24] ^= 0xff;
        f[25] ^= 0xff;
        fix_ipv4_checksum(&mut f, 14);
        assert_eq!(f, before);
    }
}
