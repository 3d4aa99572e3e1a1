//! Frames for the classification tests: the malformed corpus, legitimate
//! non-first fragments, random mutations and random well-formed frames.
//!
//! "Rule N" refers to the parsing rules of `netwatch_common::packet`.
//!
//! Every corpus frame is a well-formed frame from `base_mac`/`v4`/`v6` to a
//! fixed peer ([`PEER_MAC`], [`PEER_V4`], [`PEER_V6`]) with exactly one
//! thing broken; after a patch the IPv4 header checksum and the transport
//! checksum are recomputed ([`refresh_checksums`]) so that nothing else is
//! wrong with it.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use netwatch_common::flow::tcp_flags::{ACK, FIN, PSH, RST, SYN, URG};
use netwatch_common::packet::{
    ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN, IPPROTO_AH,
    IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP, MAX_EXT_HEADERS,
};
use rand::Rng;
use rand::seq::IndexedRandom;

use crate::packets::{
    ALL_MLDV2_ROUTERS, ALL_NODES, ALL_ROUTERS, Arp, Assembled, BROADCAST, Ext, Frame, IPPROTO_NONE,
    Mac, NA_OVERRIDE, NA_SOLICITED, checksum, ext_chain, fix_ipv4_checksum, ipv6_multicast_mac,
    solicited_node,
};

/// Destination MAC of the corpus frames.
pub const PEER_MAC: Mac = [0x02, 0x42, 0xc0, 0x00, 0x02, 0x01];
/// Destination IPv4 address of the corpus frames (TEST-NET-1).
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Destination IPv6 address of the corpus frames (documentation prefix).
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// The kinds whose every truncation is in the corpus, in order.
pub const TRUNCATED_KINDS: [&str; 10] = [
    "ipv4-tcp",
    "ipv4-udp",
    "ipv4-icmp",
    "ipv6-tcp",
    "ipv6-udp",
    "ipv6-icmpv6",
    "arp",
    "ipv4-opts-tcp",
    "vlan-ipv4-tcp",
    "ipv6-3ext-udp",
];

fn base_builders(mac: Mac, v4: Ipv4Addr, v6: Ipv6Addr) -> Vec<(&'static str, Frame)> {
    let e4 = || Frame::eth(mac, PEER_MAC).ipv4(v4, PEER_V4);
    let e6 = || Frame::eth(mac, PEER_MAC).ipv6(v6, PEER_V6);
    let frames = vec![
        e4().tcp(40000, 80, PSH | ACK).payload_len(4),
        e4().udp(40001, 53).payload_len(4),
        e4().icmp_echo_request(0x1234, 1).payload_len(4),
        e6().tcp(40000, 443, SYN).tcp_syn_options(),
        e6().udp(40001, 53).payload_len(4),
        e6().icmpv6_echo_request(0x1234, 1).payload_len(4),
        Frame::eth(mac, BROADCAST).arp(Arp::request(mac, v4, PEER_V4)),
        // IHL 7: router alert + NOP NOP NOP EOL.
        e4().ipv4_options(&[0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00])
            .tcp(40000, 22, ACK)
            .payload_len(4),
        Frame::eth(mac, PEER_MAC)
            .vlan(ETHERTYPE_VLAN, 10)
            .ipv4(v4, PEER_V4)
            .tcp(40000, 80, SYN)
            .payload_len(4),
        e6().exts(ext_chain(&[
            IPPROTO_HOPOPTS,
            IPPROTO_ROUTING,
            IPPROTO_DSTOPTS,
        ]))
        .udp(40001, 53)
        .payload_len(4),
    ];
    TRUNCATED_KINDS.into_iter().zip(frames).collect()
}

/// The well-formed originals of the `<kind>-trunc-N` corpus entries (named
/// as in [`TRUNCATED_KINDS`]): each is `Ip` or `Arp` by the rules, without
/// link padding, and its IP length fields cover exactly the rest of the
/// frame, so every strict prefix of ≥ 14 bytes is `Invalid`.
pub fn base_frames(base_mac: Mac, v4: Ipv4Addr, v6: Ipv6Addr) -> Vec<(String, Vec<u8>)> {
    base_builders(base_mac, v4, v6)
        .into_iter()
        .map(|(n, f)| (n.to_string(), f.build()))
        .collect()
}

#[derive(Default)]
struct Corpus {
    entries: Vec<(String, Vec<u8>)>,
    names: HashSet<String>,
}

impl Corpus {
    fn add(&mut self, name: impl Into<String>, frame: Vec<u8>) {
        let name = name.into();
        assert!(
            self.names.insert(name.clone()),
            "duplicate corpus name {name}"
        );
        self.entries.push((name, frame));
    }

    /// Add `frame` after `patch`, with checksums recomputed.
    fn patched(&mut self, name: impl Into<String>, frame: &[u8], patch: impl FnOnce(&mut Vec<u8>)) {
        let mut f = frame.to_vec();
        patch(&mut f);
        refresh_checksums(&mut f);
        self.add(name, f);
    }
}

fn put16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn get16(f: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]))
}

/// Set the IP length field of the packet at `l3` so that it ends at `end`
/// (IPv4 total length or IPv6 payload length, by the version nibble).
fn set_ip_end(f: &mut [u8], l3: usize, end: usize) {
    if f[l3] >> 4 == 4 {
        put16(f, l3 + 2, (end - l3) as u16);
    } else {
        put16(f, l3 + 4, (end - l3 - 40) as u16);
    }
}

/// The malformed-frame corpus: every frame is `Invalid`, `Unsupported` or
/// `ExtHeaderLimit` by the rules, so never allowed on an enforced endpoint.
/// Source MAC/IP are `base_mac`/`v4`/`v6` (the ARP sender too), so only the
/// malformation can be the reason for a drop. Names are unique; prefixes:
///
/// - `runt-N` (N = 0..14): the first N bytes of an IPv4/TCP frame (rule 1).
///   Note that `BPF_PROG_TEST_RUN` itself may refuse frames shorter than 14
///   bytes.
/// - `<kind>-trunc-N`: every prefix of ≥ 14 bytes of the [`base_frames`]
///   (rules 1-4: a VLAN tag, an IP header, or the declared IP length cut).
/// - `ipv4-ihl-N` (0..4), `ipv4-ihl-N-past-totlen`, `ipv4-totlen-lt-ihl-N`,
///   `ipv4-opts-totlen-lt-ihl-N`, `ipv4-totlen-gt-frame-N`,
///   `ipv4-padded-totlen-gt-frame-N`, `ipv4-version-N` (rule 3).
/// - `ipv6-paylen-gt-frame-N`, `ipv6-3ext-paylen-gt-frame-N`,
///   `ipv6-version-N` (rule 4); `version-mismatch-*`: an IPv6 packet under
///   0x0800 and an IPv4 packet under 0x86dd.
/// - `tcp-doff-N` / `ipv6-tcp-doff-N` (data offset < 5),
///   `tcp-doff-past-N` / `ipv6-tcp-doff-past-N` (options not present)
///   (rule 5).
/// - `<kind>-l4-short-K`: the IP packet (IP length adjusted, frame cut)
///   holds only K bytes of the transport header; `<kind>-l4-beyond-iplen-K`:
///   the same IP length but the rest of the frame kept as link padding, so
///   the header's bytes exist but lie outside the declared packet (rule 5).
///   `ipv4-frag0-udp-l4-short-K` / `ipv6-frag0-udp-l4-short-K`: the same in
///   first fragments.
/// - `nd-advert-short-K` (K < 24 bytes of ICMPv6),
///   `nd-advert-beyond-iplen-K` (rule 5).
/// - `ipv6-ext-limit-*`: 9, 10 and 20 extension headers (rule 4,
///   `ExtHeaderLimit`); `ipv6-ext-overrun-*`: an extension header length
///   running past the payload; `ipv6-ext-cut-<ext>-K`: the payload ends K
///   bytes into an extension header (rules 4, 5).
/// - `ethertype-XXXX`, `vlan-ethertype-XXXX`: unknown ethertypes carrying
///   a valid IPv4/TCP packet (rule 6; 0x9100 is not a VLAN TPID here).
/// - `vlan-in-vlan-*`: two (or three) tags (rule 1, `Unsupported`).
/// - `arp-htype-N`, `arp-ptype-XXXX`, `arp-hlen-N`, `arp-plen-N`,
///   `arp-hlen-8-long-addrs` (rule 2; cut-short ARP is `arp-trunc-N`).
pub fn malformed_corpus(base_mac: Mac, v4: Ipv4Addr, v6: Ipv6Addr) -> Vec<(String, Vec<u8>)> {
    let mut c = Corpus::default();
    let bases = base_builders(base_mac, v4, v6);
    let base = |kind: &str| -> &Frame {
        &bases
            .iter()
            .find(|(n, _)| *n == kind)
            .expect("known base kind")
            .1
    };
    let e4 = || Frame::eth(base_mac, PEER_MAC).ipv4(v4, PEER_V4);
    let e6 = || Frame::eth(base_mac, PEER_MAC).ipv6(v6, PEER_V6);

    // Rule 1: runts.
    let v4tcp = base("ipv4-tcp").assemble();
    for n in 0..14 {
        c.add(format!("runt-{n}"), v4tcp.bytes[..n].to_vec());
    }

    // Rules 1-4: every truncation of the base frames.
    for (kind, frame) in &bases {
        let full = frame.build();
        for n in 14..full.len() {
            c.add(format!("{kind}-trunc-{n}"), full[..n].to_vec());
        }
    }

    // Rule 3: IPv4 header fields.
    let (f, l3) = (&v4tcp.bytes, v4tcp.l3);
    let totlen = usize::from(get16(f, l3 + 2).unwrap());
    for ihl in 0..5u8 {
        c.patched(format!("ipv4-ihl-{ihl}"), f, |f| f[l3] = 0x40 | ihl);
    }
    for ihl in 6..=15u8 {
        if usize::from(ihl) * 4 > totlen {
            c.patched(format!("ipv4-ihl-{ihl}-past-totlen"), f, |f| {
                f[l3] = 0x40 | ihl;
            });
        }
    }
    for tl in [0u16, 1, 19] {
        c.patched(format!("ipv4-totlen-lt-ihl-{tl}"), f, |f| {
            put16(f, l3 + 2, tl)
        });
    }
    let opts = base("ipv4-opts-tcp").assemble();
    let ihl_bytes = usize::from(opts.bytes[opts.l3] & 0x0f) * 4;
    for tl in [20, ihl_bytes as u16 - 1] {
        c.patched(format!("ipv4-opts-totlen-lt-ihl-{tl}"), &opts.bytes, |f| {
            put16(f, opts.l3 + 2, tl);
        });
    }
    let present = (f.len() - l3) as u16;
    for tl in [present + 1, present + 4, 1500, 0xffff] {
        c.patched(format!("ipv4-totlen-gt-frame-{tl}"), f, |f| {
            put16(f, l3 + 2, tl)
        });
    }
    let padded = base("ipv4-tcp").clone().pad_to(60).build();
    let present_padded = (padded.len() - l3) as u16;
    c.patched(
        format!("ipv4-padded-totlen-gt-frame-{}", present_padded + 1),
        &padded,
        |f| put16(f, l3 + 2, present_padded + 1),
    );
    for ver in (0..16u8).filter(|&v| v != 4) {
        c.patched(format!("ipv4-version-{ver}"), f, |f| {
            f[l3] = (ver << 4) | (f[l3] & 0x0f);
        });
    }

    // Rule 4: IPv6 header fields.
    let v6udp = base("ipv6-udp").assemble();
    let (f6, l3_6) = (&v6udp.bytes, v6udp.l3);
    let pl = get16(f6, l3_6 + 4).unwrap();
    for p in [pl + 1, pl + 8, 0xffff] {
        c.patched(format!("ipv6-paylen-gt-frame-{p}"), f6, |f| {
            put16(f, l3_6 + 4, p)
        });
    }
    let ext3 = base("ipv6-3ext-udp").assemble();
    let pl3 = get16(&ext3.bytes, ext3.l3 + 4).unwrap();
    c.patched(
        format!("ipv6-3ext-paylen-gt-frame-{}", pl3 + 1),
        &ext3.bytes,
        |f| put16(f, ext3.l3 + 4, pl3 + 1),
    );
    for ver in (0..16u8).filter(|&v| v != 6) {
        c.patched(format!("ipv6-version-{ver}"), f6, |f| {
            f[l3_6] = (ver << 4) | (f[l3_6] & 0x0f);
        });
    }
    c.add(
        "version-mismatch-ipv6-in-0800",
        base("ipv6-udp").clone().ethertype(ETHERTYPE_IPV4).build(),
    );
    c.add(
        "version-mismatch-ipv4-in-86dd",
        base("ipv4-tcp").clone().ethertype(ETHERTYPE_IPV6).build(),
    );

    // Rule 5: TCP data offset.
    let bare_tcp = e4().tcp(40000, 80, SYN).assemble();
    let l4 = bare_tcp.l4.unwrap();
    for d in 0..5u8 {
        c.patched(format!("tcp-doff-{d}"), &v4tcp.bytes, |f| {
            f[v4tcp.l4.unwrap() + 12] = d << 4;
        });
    }
    for d in 6..16u8 {
        c.patched(format!("tcp-doff-past-{d}"), &bare_tcp.bytes, |f| {
            f[l4 + 12] = d << 4;
        });
    }
    let v6tcp = base("ipv6-tcp").assemble();
    let l4_6 = v6tcp.l4.unwrap();
    let doff6 = v6tcp.bytes[l4_6 + 12] >> 4;
    for d in [0u8, 4] {
        c.patched(format!("ipv6-tcp-doff-{d}"), &v6tcp.bytes, |f| {
            f[l4_6 + 12] = d << 4;
        });
    }
    for d in doff6 + 1..16 {
        c.patched(format!("ipv6-tcp-doff-past-{d}"), &v6tcp.bytes, |f| {
            f[l4_6 + 12] = d << 4;
        });
    }

    // Rule 5: transport headers cut short inside a correct-length packet.
    let l4_required = |a: &Assembled| -> usize {
        let l4 = a.l4.expect("has a transport header");
        match proto_of(&a.bytes, a) {
            IPPROTO_TCP => usize::from(a.bytes[l4 + 12] >> 4) * 4,
            _ => 8,
        }
    };
    for kind in [
        "ipv4-tcp",
        "ipv4-udp",
        "ipv4-icmp",
        "ipv6-tcp",
        "ipv6-udp",
        "ipv6-icmpv6",
        "ipv4-opts-tcp",
        "vlan-ipv4-tcp",
        "ipv6-3ext-udp",
    ] {
        let a = base(kind).assemble();
        let l4 = a.l4.unwrap();
        for k in 0..l4_required(&a) {
            let end = l4 + k;
            c.patched(format!("{kind}-l4-short-{k}"), &a.bytes, |f| {
                set_ip_end(f, a.l3, end);
                f.truncate(end);
            });
            c.patched(format!("{kind}-l4-beyond-iplen-{k}"), &a.bytes, |f| {
                set_ip_end(f, a.l3, end);
            });
        }
    }
    let frag4 = e4()
        .fragment(0, true)
        .udp(40001, 53)
        .payload_len(16)
        .assemble();
    let frag6 = e6()
        .fragment(0, true)
        .udp(40001, 53)
        .payload_len(16)
        .assemble();
    for (name, a) in [("ipv4", &frag4), ("ipv6", &frag6)] {
        let l4 = a.l4.unwrap();
        for k in [0, 4, 7] {
            c.patched(format!("{name}-frag0-udp-l4-short-{k}"), &a.bytes, |f| {
                set_ip_end(f, a.l3, l4 + k);
                f.truncate(l4 + k);
            });
        }
    }

    // Rule 5: neighbour advertisement without the whole target.
    let na = Frame::eth(base_mac, PEER_MAC)
        .ipv6(v6, PEER_V6)
        .neighbor_advert(v6, NA_SOLICITED | NA_OVERRIDE, Some(base_mac))
        .assemble();
    let na_l4 = na.l4.unwrap();
    for k in 0..24 {
        c.patched(format!("nd-advert-short-{k}"), &na.bytes, |f| {
            set_ip_end(f, na.l3, na_l4 + k);
            f.truncate(na_l4 + k);
        });
    }
    for k in [8, 20, 23] {
        c.patched(format!("nd-advert-beyond-iplen-{k}"), &na.bytes, |f| {
            set_ip_end(f, na.l3, na_l4 + k);
        });
    }

    // Rule 4: too many extension headers.
    let cycle = [
        IPPROTO_HOPOPTS,
        IPPROTO_DSTOPTS,
        IPPROTO_ROUTING,
        IPPROTO_AH,
        IPPROTO_DSTOPTS,
        IPPROTO_ROUTING,
        IPPROTO_DSTOPTS,
        IPPROTO_ROUTING,
        IPPROTO_DSTOPTS,
    ];
    let many = |n: usize| -> Vec<u8> {
        let mut kinds = vec![IPPROTO_HOPOPTS];
        kinds.extend(cycle[1..].iter().copied().cycle().take(n - 1));
        kinds
    };
    let limit = MAX_EXT_HEADERS + 1;
    for (name, kinds) in [
        (format!("ipv6-ext-limit-{limit}"), many(limit)),
        (format!("ipv6-ext-limit-{}", limit + 1), many(limit + 1)),
        ("ipv6-ext-limit-20".to_string(), many(20)),
        (
            format!("ipv6-ext-limit-{limit}-dstopts"),
            vec![IPPROTO_DSTOPTS; limit],
        ),
        (format!("ipv6-ext-limit-{limit}-frag0"), {
            let mut k = many(limit);
            k[1] = IPPROTO_FRAGMENT;
            k
        }),
    ] {
        c.add(
            name,
            e6().exts(ext_chain(&kinds))
                .udp(40001, 53)
                .payload_len(4)
                .build(),
        );
    }
    c.add(
        format!("ipv6-ext-limit-{limit}-tcp"),
        e6().exts(ext_chain(&many(limit)))
            .tcp(40000, 80, SYN)
            .build(),
    );
    c.add(
        format!("ipv6-ext-limit-{limit}-no-next"),
        e6().exts(ext_chain(&many(limit))).build(),
    );
    // The one-too-many header is a non-first fragment: the limit is hit
    // before the fragment header could end the walk.
    c.add(
        format!("ipv6-ext-limit-{limit}-frag-nonfirst-last"),
        e6().exts(ext_chain(&many(MAX_EXT_HEADERS)))
            .fragment(10, false)
            .raw(IPPROTO_UDP)
            .payload_len(16)
            .build(),
    );

    // Rules 4, 5: extension header lengths past the payload, payload ending
    // inside an extension header.
    for (ename, kind) in [
        ("hbh", IPPROTO_HOPOPTS),
        ("routing", IPPROTO_ROUTING),
        ("dstopts", IPPROTO_DSTOPTS),
        ("ah", IPPROTO_AH),
        ("frag", IPPROTO_FRAGMENT),
    ] {
        let a = e6()
            .ext(Ext::of_kind(kind))
            .udp(40001, 53)
            .payload_len(4)
            .assemble();
        let off = a.exts[0];
        let remaining = a.end - off;
        if kind != IPPROTO_FRAGMENT {
            // Smallest length field whose header ends past the payload.
            let len = if kind == IPPROTO_AH {
                (remaining + 1).div_ceil(4) - 2
            } else {
                (remaining + 1).div_ceil(8) - 1
            } as u8;
            c.patched(format!("ipv6-ext-overrun-{ename}"), &a.bytes, |f| {
                f[off + 1] = len
            });
            c.patched(format!("ipv6-ext-overrun-{ename}-max"), &a.bytes, |f| {
                f[off + 1] = 0xff;
            });
            c.patched(
                format!("ipv6-ext-overrun-{ename}-in-frame"),
                &a.bytes,
                |f| {
                    f[off + 1] = len;
                    f.resize(f.len() + 64, 0);
                },
            );
        }
        let ext_len = a.exts.get(1).copied().or(a.l4).unwrap() - off;
        for k in 0..ext_len {
            c.patched(format!("ipv6-ext-cut-{ename}-{k}"), &a.bytes, |f| {
                set_ip_end(f, a.l3, off + k);
                f.truncate(off + k);
            });
        }
    }
    let third = ext3.exts[2];
    c.patched("ipv6-ext-overrun-third-of-3", &ext3.bytes, |f| {
        let remaining = ext3.end - third;
        f[third + 1] = ((remaining + 1).div_ceil(8) - 1) as u8;
    });

    // Rule 6: unknown ethertypes, with a valid IPv4/TCP packet inside.
    let ip = base("ipv4-tcp").ip_packet();
    for et in [
        0x88cc, 0x8847, 0x0000, 0xffff, 0x9000, 0x05dc, 0x0600, 0x8035, 0x0842, 0x8863, 0x88e5,
        0x88b5, 0x0805, 0x9100,
    ] {
        c.add(
            format!("ethertype-{et:04x}"),
            Frame::eth(base_mac, PEER_MAC)
                .ethertype(et)
                .payload(&ip)
                .build(),
        );
    }
    for et in [0x88cc, 0x9100, 0x8847] {
        c.add(
            format!("vlan-ethertype-{et:04x}"),
            Frame::eth(base_mac, PEER_MAC)
                .vlan(ETHERTYPE_VLAN, 10)
                .ethertype(et)
                .payload(&ip)
                .build(),
        );
    }
    // 0x9100 as an outer "TPID" before a real 0x0800.
    c.add(
        "ethertype-9100-tag-ipv4",
        Frame::eth(base_mac, PEER_MAC)
            .vlan(0x9100, 10)
            .ipv4(v4, PEER_V4)
            .tcp(40000, 80, SYN)
            .build(),
    );

    // Rule 1: VLAN inside VLAN.
    for (outer, inner) in [
        (ETHERTYPE_VLAN, ETHERTYPE_VLAN),
        (ETHERTYPE_QINQ, ETHERTYPE_VLAN),
        (ETHERTYPE_VLAN, ETHERTYPE_QINQ),
        (ETHERTYPE_QINQ, ETHERTYPE_QINQ),
    ] {
        c.add(
            format!("vlan-in-vlan-{outer:04x}-{inner:04x}"),
            Frame::eth(base_mac, PEER_MAC)
                .vlan(outer, 100)
                .vlan(inner, 10)
                .ipv4(v4, PEER_V4)
                .tcp(40000, 80, SYN)
                .build(),
        );
    }
    c.add(
        "vlan-in-vlan-88a8-8100-ipv6",
        Frame::eth(base_mac, PEER_MAC)
            .qinq(100, 10)
            .ipv6(v6, PEER_V6)
            .udp(40001, 53)
            .build(),
    );
    c.add(
        "vlan-in-vlan-88a8-8100-arp",
        Frame::eth(base_mac, BROADCAST)
            .qinq(100, 10)
            .arp(Arp::request(base_mac, v4, PEER_V4))
            .build(),
    );
    c.add(
        "vlan-in-vlan-triple",
        Frame::eth(base_mac, PEER_MAC)
            .vlan(ETHERTYPE_QINQ, 100)
            .vlan(ETHERTYPE_VLAN, 10)
            .vlan(ETHERTYPE_VLAN, 11)
            .ipv4(v4, PEER_V4)
            .tcp(40000, 80, SYN)
            .build(),
    );
    // Second tag present but the frame ends inside it.
    c.add(
        "vlan-in-vlan-8100-8100-cut",
        Frame::eth(base_mac, PEER_MAC)
            .vlan(ETHERTYPE_VLAN, 100)
            .ethertype(ETHERTYPE_VLAN)
            .payload(&[0x00])
            .build(),
    );

    // Rule 2: ARP fields.
    let arp = base("arp").assemble();
    let al3 = arp.l3;
    for v in [0u16, 6, 0x0100, 0xffff] {
        c.patched(format!("arp-htype-{v}"), &arp.bytes, |f| put16(f, al3, v));
    }
    for v in [ETHERTYPE_IPV6, 0x0000, 0x0008, ETHERTYPE_ARP, 0xffff] {
        c.patched(format!("arp-ptype-{v:04x}"), &arp.bytes, |f| {
            put16(f, al3 + 2, v)
        });
    }
    for v in [0u8, 4, 5, 7, 8, 16, 255] {
        c.patched(format!("arp-hlen-{v}"), &arp.bytes, |f| f[al3 + 4] = v);
    }
    for v in [0u8, 3, 5, 6, 16, 255] {
        c.patched(format!("arp-plen-{v}"), &arp.bytes, |f| f[al3 + 5] = v);
    }
    let mut long = Arp::request(base_mac, v4, PEER_V4);
    long.hlen = 8;
    long.sender_hw.extend([0, 0]);
    long.target_hw.extend([0, 0]);
    c.add(
        "arp-hlen-8-long-addrs",
        Frame::eth(base_mac, BROADCAST).arp(long).build(),
    );

    c.entries
}

fn proto_of(f: &[u8], a: &Assembled) -> u8 {
    match a.exts.last() {
        Some(&last) => f[last],
        None if f[a.l3] >> 4 == 4 => f[a.l3 + 9],
        None => f[a.l3 + 6],
    }
}

/// Non-first fragments (IPv4 and IPv6) from `base_mac`/`v4`/`v6` to the
/// peer. They are legitimate IP packets without ports (rules 3, 4: no
/// transport header is read, whatever the fragment data looks like), so
/// they belong in the valid table, classified `Ip` with `has_ports` false.
pub fn fragment_cases(base_mac: Mac, v4: Ipv4Addr, v6: Ipv6Addr) -> Vec<(String, Vec<u8>)> {
    let e4 = || Frame::eth(base_mac, PEER_MAC).ipv4(v4, PEER_V4);
    let e6 = || Frame::eth(base_mac, PEER_MAC).ipv6(v6, PEER_V6);
    // Fragment data that would be a malformed TCP header if it were read.
    let bad_tcp = [0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x00, 0x02];
    let cases = vec![
        (
            "frag-ipv4-tcp-offset-1",
            e4().fragment(1, true).raw(IPPROTO_TCP).payload_len(16),
        ),
        (
            "frag-ipv4-tcp-last",
            e4().fragment(185, false).raw(IPPROTO_TCP).payload_len(100),
        ),
        (
            "frag-ipv4-udp-middle",
            e4().fragment(2, true).raw(IPPROTO_UDP).payload_len(16),
        ),
        (
            "frag-ipv4-icmp",
            e4().fragment(3, false).raw(IPPROTO_ICMP).payload_len(8),
        ),
        (
            "frag-ipv4-gre",
            e4().fragment(4, false).raw(47).payload_len(8),
        ),
        ("frag-ipv4-empty", e4().fragment(5, false).raw(IPPROTO_TCP)),
        (
            "frag-ipv4-short-data",
            e4().fragment(6, false).raw(IPPROTO_UDP).payload_len(3),
        ),
        (
            "frag-ipv4-tcp-doff-0-data",
            e4().fragment(7, true).raw(IPPROTO_TCP).payload(&bad_tcp),
        ),
        (
            "frag-ipv4-max-offset",
            e4().fragment(0x1fff, false).raw(IPPROTO_UDP).payload_len(8),
        ),
        (
            "frag-ipv4-opts",
            e4().ihl(8)
                .fragment(9, false)
                .raw(IPPROTO_TCP)
                .payload_len(8),
        ),
        (
            "frag-ipv4-padded",
            e4().fragment(10, false)
                .raw(IPPROTO_UDP)
                .payload_len(4)
                .pad_to(60),
        ),
        (
            "frag-vlan-ipv4-tcp",
            Frame::eth(base_mac, PEER_MAC)
                .vlan(ETHERTYPE_VLAN, 10)
                .ipv4(v4, PEER_V4)
                .fragment(11, false)
                .raw(IPPROTO_TCP)
                .payload_len(8),
        ),
        (
            "frag-ipv6-tcp-offset-1",
            e6().fragment(1, true).raw(IPPROTO_TCP).payload_len(16),
        ),
        (
            "frag-ipv6-tcp-last",
            e6().fragment(185, false).raw(IPPROTO_TCP).payload_len(100),
        ),
        (
            "frag-ipv6-udp-middle",
            e6().fragment(2, true).raw(IPPROTO_UDP).payload_len(16),
        ),
        (
            "frag-ipv6-icmpv6",
            e6().fragment(3, false).raw(IPPROTO_ICMPV6).payload_len(4),
        ),
        ("frag-ipv6-empty", e6().fragment(5, false).raw(IPPROTO_TCP)),
        (
            "frag-ipv6-tcp-doff-0-data",
            e6().fragment(7, true).raw(IPPROTO_TCP).payload(&bad_tcp),
        ),
        (
            "frag-ipv6-max-offset",
            e6().fragment(0x1fff, false).raw(IPPROTO_UDP).payload_len(8),
        ),
        (
            "frag-ipv6-after-hbh-dstopts",
            e6().ext(Ext::hop_by_hop())
                .ext(Ext::dest_opts())
                .fragment(10, true)
                .raw(IPPROTO_UDP)
                .payload_len(16),
        ),
        (
            // The fragment data starts like more extension headers; the
            // walk ends at the fragment header all the same.
            "frag-ipv6-next-dstopts",
            e6().fragment(12, false).raw(IPPROTO_DSTOPTS).payload(&[
                IPPROTO_UDP,
                0,
                1,
                4,
                0,
                0,
                0,
                0,
                0x9c,
                0x40,
                0,
                53,
                0,
                16,
                0,
                0,
            ]),
        ),
        (
            "frag-ipv6-eighth-header",
            e6().exts(ext_chain(&[
                IPPROTO_HOPOPTS,
                IPPROTO_DSTOPTS,
                IPPROTO_ROUTING,
                IPPROTO_DSTOPTS,
                IPPROTO_ROUTING,
                IPPROTO_AH,
                IPPROTO_DSTOPTS,
            ]))
            .fragment(13, false)
            .raw(IPPROTO_TCP)
            .payload_len(8),
        ),
        (
            "frag-ipv6-padded",
            e6().fragment(14, false)
                .raw(IPPROTO_UDP)
                .payload_len(4)
                .pad_to(80),
        ),
        (
            "frag-vlan-ipv6-udp",
            Frame::eth(base_mac, PEER_MAC)
                .vlan(ETHERTYPE_QINQ, 10)
                .ipv6(v6, PEER_V6)
                .fragment(15, true)
                .raw(IPPROTO_UDP)
                .payload_len(16),
        ),
    ];
    cases
        .into_iter()
        .map(|(n, f)| (n.to_string(), f.build()))
        .collect()
}

// ---------------------------------------------------------------------------
// Locating fields (best effort, for mutation and checksum refresh).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// Ethertype or VLAN TPID (u16).
    EtherType,
    /// IPv4 version + IHL byte.
    Ipv4VerIhl,
    Ipv4TotalLen,
    /// IPv4 flags + fragment offset (u16).
    Ipv4Frag,
    /// IPv4 protocol / IPv6 next header in any header (u8).
    NextHeader,
    /// IPv6 version/traffic class byte.
    Ipv6Version,
    Ipv6PayloadLen,
    /// Extension header length byte.
    ExtLen,
    /// Fragment header offset + M flag (u16).
    ExtFrag,
    /// TCP data offset byte.
    TcpDataOffset,
    TcpFlags,
    UdpLen,
    IcmpType,
    ArpHtype,
    ArpPtype,
    ArpHlen,
    ArpPlen,
}

#[derive(Default)]
struct Layout {
    fields: Vec<(Field, usize)>,
    l3: Option<usize>,
    /// IPv4 or IPv6 (4/6), 0 otherwise.
    family: u8,
    /// Declared end of the IP packet, clamped to the frame.
    ip_end: usize,
    /// Transport protocol and header offset (not for non-first fragments;
    /// the offset may be the end of the frame).
    l4: Option<(u8, usize)>,
    /// IPv6 extension headers walked: kind, offset, size.
    exts: Vec<(u8, usize, usize)>,
}

fn is_ext(nh: u8) -> bool {
    matches!(
        nh,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS
    )
}

fn locate(f: &[u8]) -> Layout {
    let mut lay = Layout::default();
    let Some(mut et) = get16(f, 12) else {
        return lay;
    };
    let mut off = 12;
    lay.fields.push((Field::EtherType, off));
    for _ in 0..3 {
        if !matches!(et, ETHERTYPE_VLAN | ETHERTYPE_QINQ) {
            break;
        }
        match get16(f, off + 4) {
            Some(inner) => {
                off += 4;
                et = inner;
                lay.fields.push((Field::EtherType, off));
            }
            None => return lay,
        }
    }
    let l3 = off + 2;
    lay.l3 = Some(l3);
    match et {
        ETHERTYPE_IPV4 if f.len() >= l3 + 20 => {
            lay.family = 4;
            lay.fields.extend([
                (Field::Ipv4VerIhl, l3),
                (Field::Ipv4TotalLen, l3 + 2),
                (Field::Ipv4Frag, l3 + 6),
                (Field::NextHeader, l3 + 9),
            ]);
            let tl = usize::from(get16(f, l3 + 2).unwrap_or(0));
            lay.ip_end = (l3 + tl).min(f.len());
            let hlen = usize::from(f[l3] & 0x0f) * 4;
            let frag = get16(f, l3 + 6).unwrap_or(0) & 0x1fff;
            if hlen >= 20 && frag == 0 && l3 + hlen <= f.len() {
                lay.l4 = Some((f[l3 + 9], l3 + hlen));
            }
        }
        ETHERTYPE_IPV6 if f.len() >= l3 + 40 => {
            lay.family = 6;
            lay.fields.extend([
                (Field::Ipv6Version, l3),
                (Field::Ipv6PayloadLen, l3 + 4),
                (Field::NextHeader, l3 + 6),
            ]);
            let pl = usize::from(get16(f, l3 + 4).unwrap_or(0));
            lay.ip_end = (l3 + 40 + pl).min(f.len());
            let mut nh = f[l3 + 6];
            let mut off = l3 + 40;
            let mut walked = 0;
            let mut ended = false;
            while is_ext(nh) && off + 2 <= f.len() && walked < 32 {
                lay.fields.push((Field::NextHeader, off));
                let len = usize::from(f[off + 1]);
                let size = match nh {
                    IPPROTO_FRAGMENT => {
                        if off + 4 <= f.len() {
                            lay.fields.push((Field::ExtFrag, off + 2));
                            if get16(f, off + 2).unwrap_or(0) >> 3 != 0 {
                                ended = true;
                            }
                        }
                        8
                    }
                    IPPROTO_AH => {
                        lay.fields.push((Field::ExtLen, off + 1));
                        (len + 2) * 4
                    }
                    _ => {
                        lay.fields.push((Field::ExtLen, off + 1));
                        (len + 1) * 8
                    }
                };
                lay.exts.push((nh, off, size));
                nh = f[off];
                off += size;
                walked += 1;
                if ended {
                    break;
                }
            }
            if !ended && !is_ext(nh) && off <= f.len() {
                lay.l4 = Some((nh, off));
            }
        }
        ETHERTYPE_ARP => {
            lay.fields.extend(
                [
                    (Field::ArpHtype, l3),
                    (Field::ArpPtype, l3 + 2),
                    (Field::ArpHlen, l3 + 4),
                    (Field::ArpPlen, l3 + 5),
                ]
                .into_iter()
                .filter(|&(_, o)| o + 2 <= f.len()),
            );
        }
        _ => {}
    }
    if let Some((proto, l4)) = lay.l4 {
        let more: &[(Field, usize)] = match proto {
            IPPROTO_TCP => &[(Field::TcpDataOffset, 12), (Field::TcpFlags, 13)],
            IPPROTO_UDP => &[(Field::UdpLen, 4)],
            IPPROTO_ICMP | IPPROTO_ICMPV6 => &[(Field::IcmpType, 0)],
            _ => &[],
        };
        lay.fields.extend(
            more.iter()
                .map(|&(k, o)| (k, l4 + o))
                .filter(|&(_, o)| o + 2 <= f.len()),
        );
    }
    lay
}

/// Recompute, in place, the IPv4 header checksum and the TCP/UDP/ICMP/
/// ICMPv6 checksum of a frame, as far as its own (possibly broken) length
/// fields allow; the transport checksum covers the bytes from the transport
/// header to the declared end of the IP packet. Never panics; leaves what
/// it cannot make sense of alone.
pub fn refresh_checksums(f: &mut [u8]) {
    let lay = locate(f);
    let Some(l3) = lay.l3 else { return };
    if lay.family == 4 {
        fix_ipv4_checksum(f, l3);
    }
    let Some((proto, l4)) = lay.l4 else { return };
    let end = lay.ip_end;
    let at = match proto {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        IPPROTO_ICMP if lay.family == 4 => 2,
        IPPROTO_ICMPV6 if lay.family == 6 => 2,
        _ => return,
    };
    if l4 + at + 2 > end {
        return;
    }
    f[l4 + at] = 0;
    f[l4 + at + 1] = 0;
    let seg = &f[l4..end];
    let mut pseudo = Vec::with_capacity(40 + seg.len());
    if proto != IPPROTO_ICMP {
        if lay.family == 4 {
            pseudo.extend(&f[l3 + 12..l3 + 20]);
            pseudo.extend([0, proto]);
            pseudo.extend((seg.len() as u16).to_be_bytes());
        } else {
            pseudo.extend(&f[l3 + 8..l3 + 40]);
            pseudo.extend((seg.len() as u32).to_be_bytes());
            pseudo.extend([0, 0, 0, proto]);
        }
    }
    pseudo.extend(seg);
    let mut c = checksum(&pseudo);
    if proto == IPPROTO_UDP && c == 0 {
        c = 0xffff;
    }
    f[l4 + at..l4 + at + 2].copy_from_slice(&c.to_be_bytes());
}

// ---------------------------------------------------------------------------
// Mutation.

const ETHERTYPES: [u16; 12] = [
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ETHERTYPE_ARP,
    ETHERTYPE_VLAN,
    ETHERTYPE_QINQ,
    0x9100,
    0x0000,
    0xffff,
    0x05dc,
    0x0600,
    0x88cc,
    0x8847,
];

const PROTOS: [u8; 15] = [0, 1, 6, 17, 43, 44, 50, 51, 58, 59, 60, 47, 132, 135, 255];

const ICMP_TYPES: [u8; 14] = [
    0, 3, 8, 11, 128, 129, 130, 131, 133, 134, 135, 136, 143, 255,
];

fn set16(f: &mut [u8], at: usize, v: u16) {
    if at + 2 <= f.len() {
        put16(f, at, v);
    }
}

/// Pick from the boundary values (or sometimes a random value) of a field.
fn interesting<R: Rng>(f: &mut [u8], field: Field, at: usize, lay: &Layout, rng: &mut R) {
    let l3 = lay.l3.unwrap_or(0);
    let present = f.len().saturating_sub(l3);
    let random = rng.random_ratio(1, 6);
    match field {
        Field::EtherType => {
            let v = if random {
                rng.random()
            } else {
                *ETHERTYPES.choose(rng).unwrap()
            };
            set16(f, at, v);
        }
        Field::Ipv4VerIhl => {
            let v = if random {
                rng.random()
            } else if rng.random_bool(0.7) {
                0x40 | [0u8, 1, 4, 5, 6, 15].choose(rng).unwrap()
            } else {
                ([0u8, 6, 15].choose(rng).unwrap() << 4) | 5
            };
            f[at] = v;
        }
        Field::Ipv4TotalLen => {
            let ihl = usize::from(f[l3] & 0x0f) * 4;
            let p = present as u16;
            let opts = [
                0,
                1,
                19,
                20,
                (ihl as u16).wrapping_sub(1),
                ihl as u16,
                p.wrapping_sub(1),
                p,
                p.wrapping_add(1),
                0xffff,
            ];
            let v = if random {
                rng.random()
            } else {
                *opts.choose(rng).unwrap()
            };
            set16(f, at, v);
        }
        Field::Ipv4Frag => {
            let opts = [
                0x0000, 0x2000, 0x4000, 0x0001, 0x2001, 0x1fff, 0x3fff, 0xffff, 0x8000,
            ];
            let v = if random {
                rng.random()
            } else {
                *opts.choose(rng).unwrap()
            };
            set16(f, at, v);
        }
        Field::NextHeader => {
            f[at] = if random {
                rng.random()
            } else {
                *PROTOS.choose(rng).unwrap()
            };
        }
        Field::Ipv6Version => {
            let v = if random {
                rng.random_range(0..16)
            } else {
                *[0u8, 4, 6, 15].choose(rng).unwrap()
            };
            f[at] = (v << 4) | (f[at] & 0x0f);
        }
        Field::Ipv6PayloadLen => {
            let exact = present.saturating_sub(40) as u16;
            let opts = [
                0,
                1,
                7,
                8,
                exact.wrapping_sub(1),
                exact,
                exact.wrapping_add(1),
                exact.wrapping_add(8),
                0xffff,
            ];
            let v = if random {
                rng.random()
            } else {
                *opts.choose(rng).unwrap()
            };
            set16(f, at, v);
        }
        Field::ExtLen => {
            f[at] = if random {
                rng.random()
            } else {
                *[0u8, 1, 2, 3, 0x7f, 0xff].choose(rng).unwrap()
            };
        }
        Field::ExtFrag => {
            let opts = [0x0000, 0x0001, 0x0008, 0x0009, 0xfff8, 0xfff9];
            let v = if random {
                rng.random()
            } else {
                *opts.choose(rng).unwrap()
            };
            set16(f, at, v);
        }
        Field::TcpDataOffset => {
            let d = if random {
                rng.random_range(0..16)
            } else {
                *[0u8, 1, 4, 5, 6, 15].choose(rng).unwrap()
            };
            f[at] = (d << 4) | (f[at] & 0x0f);
        }
        Field::TcpFlags => {
            f[at] = if random {
                rng.random()
            } else {
                *[0u8, SYN, SYN | ACK, RST, FIN | ACK, 0x3f, 0xff]
                    .choose(rng)
                    .unwrap()
            };
        }
        Field::UdpLen => {
            let v = *[0u16, 7, 8, 9, 0xffff].choose(rng).unwrap();
            set16(f, at, v);
        }
        Field::IcmpType => {
            f[at] = if random {
                rng.random()
            } else {
                *ICMP_TYPES.choose(rng).unwrap()
            };
        }
        Field::ArpHtype => set16(f, at, *[0u16, 1, 6, 0x0100, 0xffff].choose(rng).unwrap()),
        Field::ArpPtype => set16(
            f,
            at,
            *[ETHERTYPE_IPV4, ETHERTYPE_IPV6, 0, 0x0008]
                .choose(rng)
                .unwrap(),
        ),
        Field::ArpHlen => f[at] = *[0u8, 4, 6, 7, 255].choose(rng).unwrap(),
        Field::ArpPlen => f[at] = *[0u8, 3, 4, 5, 16, 255].choose(rng).unwrap(),
    }
}

/// A random mutation of `frame` for the differential fuzz test: 1 to 3 of
/// bit flips, byte overwrites, truncation (anywhere, or just around a
/// header field), extension with random bytes, IP length fields set to the
/// bytes present, and — most often — an "interesting" field (ethertype/
/// TPID, IHL, total length, fragment field, payload length, next header,
/// extension header length, TCP data offset and flags, ICMP type, ARP
/// fields) set to a boundary value. Works on any input, even empty.
pub fn mutate(frame: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    let mut f = frame.to_vec();
    let rounds = rng.random_range(1..=3);
    for _ in 0..rounds {
        let lay = locate(&f);
        match rng.random_range(0..16) {
            0 | 1 if !f.is_empty() => {
                for _ in 0..rng.random_range(1..=4) {
                    let i = rng.random_range(0..f.len());
                    f[i] ^= 1 << rng.random_range(0..8);
                }
            }
            2 if !f.is_empty() => {
                for _ in 0..rng.random_range(1..=4) {
                    let i = rng.random_range(0..f.len());
                    f[i] = rng.random();
                }
            }
            3 if !f.is_empty() => {
                let n = rng.random_range(0..f.len());
                f.truncate(n);
            }
            4 => {
                let extra = rng.random_range(1..=64);
                f.extend((0..extra).map(|_| rng.random::<u8>()));
            }
            5 if !lay.fields.is_empty() => {
                // Cut just around a header field or the transport header.
                let mut points: Vec<usize> = lay.fields.iter().map(|&(_, o)| o).collect();
                points.extend(lay.l3);
                if let Some((_, l4)) = lay.l4 {
                    points.extend([l4, l4 + 8, l4 + 20, l4 + 24]);
                }
                let p = *points.choose(rng).unwrap();
                let n = (p + rng.random_range(0..3)).saturating_sub(1);
                f.truncate(n);
            }
            6 if lay.family != 0 => {
                // Make the IP length match the bytes present.
                let l3 = lay.l3.unwrap();
                let present = f.len() - l3;
                if lay.family == 4 {
                    set16(&mut f, l3 + 2, present.min(0xffff) as u16);
                } else {
                    set16(
                        &mut f,
                        l3 + 4,
                        present.saturating_sub(40).min(0xffff) as u16,
                    );
                }
            }
            7 if !lay.exts.is_empty() => {
                // Repeat an extension header (towards the walk limit).
                let l3 = lay.l3.unwrap();
                let &(kind, off, size) = lay.exts.choose(rng).unwrap();
                if off + size <= f.len() {
                    let copy = f[off..off + size].to_vec();
                    let n = rng.random_range(1..=MAX_EXT_HEADERS + 2);
                    f[off] = kind;
                    let mut at = off + size;
                    for i in 0..n {
                        let mut c = copy.clone();
                        if i + 1 < n {
                            c[0] = kind;
                        }
                        f.splice(at..at, c);
                        at += size;
                    }
                    if let Some(pl) = get16(&f, l3 + 4) {
                        set16(&mut f, l3 + 4, pl.wrapping_add((n * size) as u16));
                    }
                }
            }
            _ if !lay.fields.is_empty() => {
                let &(field, at) = lay.fields.choose(rng).unwrap();
                interesting(&mut f, field, at, &lay, rng);
            }
            _ if !f.is_empty() => {
                let i = rng.random_range(0..f.len());
                f[i] ^= 1 << rng.random_range(0..8);
            }
            _ => f.extend((0..rng.random_range(1..=20)).map(|_| rng.random::<u8>())),
        }
    }
    f
}

// ---------------------------------------------------------------------------
// Random well-formed frames.

/// Ports that a random frame uses a third of the time.
pub const INTERESTING_PORTS: [u16; 16] = [
    0, 1, 22, 53, 67, 68, 80, 123, 443, 546, 547, 1023, 1024, 5353, 8080, 65535,
];

fn pick_mac<R: Rng>(rng: &mut R, macs: &[Mac]) -> Mac {
    match macs.choose(rng) {
        Some(m) if rng.random_ratio(9, 10) => *m,
        _ => {
            let mut m: Mac = rng.random();
            m[0] = (m[0] & 0xfe) | 0x02; // locally administered unicast
            m
        }
    }
}

fn pick_v4<R: Rng>(rng: &mut R, pool: &[Ipv4Addr]) -> Ipv4Addr {
    match pool.choose(rng) {
        Some(a) if rng.random_ratio(4, 5) => *a,
        _ => Ipv4Addr::from(rng.random::<u32>()),
    }
}

fn pick_v6<R: Rng>(rng: &mut R, pool: &[Ipv6Addr]) -> Ipv6Addr {
    match pool.choose(rng) {
        Some(a) if rng.random_ratio(4, 5) => *a,
        _ if rng.random_bool(0.5) => {
            // Link-local with a random interface id.
            Ipv6Addr::from((0xfe80u128 << 112) | u128::from(rng.random::<u64>()))
        }
        _ => Ipv6Addr::from(rng.random::<u128>()),
    }
}

fn pick_port<R: Rng>(rng: &mut R) -> u16 {
    if rng.random_ratio(1, 3) {
        *INTERESTING_PORTS.choose(rng).unwrap()
    } else {
        rng.random()
    }
}

fn pick_flags<R: Rng>(rng: &mut R) -> u8 {
    if rng.random_bool(0.5) {
        rng.random()
    } else {
        *[
            SYN,
            SYN | ACK,
            ACK,
            PSH | ACK,
            FIN | ACK,
            RST,
            RST | ACK,
            URG | ACK,
        ]
        .choose(rng)
        .unwrap()
    }
}

fn random_payload<R: Rng>(rng: &mut R, max: usize) -> Vec<u8> {
    let n = rng.random_range(0..=max);
    (0..n).map(|_| rng.random()).collect()
}

/// TCP, UDP or ICMP(v6) on top of an IP header.
fn random_l4<R: Rng>(rng: &mut R, f: Frame, v6: bool) -> Frame {
    let payload = random_payload(rng, 64);
    let f = match rng.random_range(0..3) {
        0 => {
            let f = f.tcp(pick_port(rng), pick_port(rng), pick_flags(rng));
            let f = f.tcp_seq(rng.random(), rng.random());
            match rng.random_range(0..3) {
                0 => f.tcp_syn_options(),
                1 => {
                    let n = rng.random_range(0..=40);
                    f.tcp_options(&vec![1; n])
                }
                _ => f,
            }
        }
        1 => f.udp(pick_port(rng), pick_port(rng)),
        _ if v6 => {
            if rng.random_bool(0.5) {
                f.icmpv6_echo_request(rng.random(), rng.random())
            } else {
                f.icmpv6_echo_reply(rng.random(), rng.random())
            }
        }
        _ => {
            if rng.random_bool(0.5) {
                f.icmp_echo_request(rng.random(), rng.random())
            } else {
                f.icmp_echo_reply(rng.random(), rng.random())
            }
        }
    };
    f.payload(&payload)
}

/// A random well-formed frame: IPv4 TCP/UDP/ICMP echo/ICMP unreachable
/// (quoting a packet)/other protocols, IPv4 with options, first and
/// non-first IPv4 fragments, IPv6 TCP/UDP/ICMPv6 echo, NS/NA/RS/RA/MLDv2,
/// IPv6 behind 1..=`MAX_EXT_HEADERS` extension headers (hop-by-hop first
/// when present), first and non-first IPv6 fragments, ARP request/reply/
/// gratuitous; a fifth of them behind one VLAN tag (0x8100 or 0x88a8) and a
/// tenth padded to 60 bytes or more. MACs and addresses come from the pools
/// (sometimes random ones), ports are random or from [`INTERESTING_PORTS`],
/// TCP flags are random.
///
/// By the rules all of these are `Ip` or `Arp`, except about 1 in 25 that
/// is deliberately `Unsupported` (QinQ-tagged or an unknown ethertype).
pub fn random_valid_frame(
    rng: &mut impl Rng,
    macs: &[Mac],
    v4s: &[Ipv4Addr],
    v6s: &[Ipv6Addr],
) -> Vec<u8> {
    let src_mac = pick_mac(rng, macs);
    let dst_mac = if rng.random_ratio(1, 10) {
        BROADCAST
    } else {
        pick_mac(rng, macs)
    };
    let unsupported = rng.random_ratio(1, 25);
    if unsupported && rng.random_bool(0.5) {
        let et = *[0x88cc, 0x8847, 0x88b5, 0x9000, 0x0000, 0xffff]
            .choose(rng)
            .unwrap();
        return Frame::eth(src_mac, dst_mac)
            .ethertype(et)
            .payload(&random_payload(rng, 64))
            .build();
    }
    let tags: Vec<(u16, u16)> = if unsupported {
        vec![
            (ETHERTYPE_QINQ, rng.random_range(0..4096)),
            (ETHERTYPE_VLAN, rng.random_range(0..4096)),
        ]
    } else if rng.random_ratio(1, 5) {
        let tpid = *[ETHERTYPE_VLAN, ETHERTYPE_QINQ].choose(rng).unwrap();
        vec![(tpid, rng.random_range(0..4096))]
    } else {
        Vec::new()
    };
    let eth = |dst: Mac| {
        tags.iter()
            .fold(Frame::eth(src_mac, dst), |f, &(tpid, vid)| {
                f.vlan(tpid, vid)
            })
    };
    let f = eth(dst_mac);
    let (s4, d4) = (pick_v4(rng, v4s), pick_v4(rng, v4s));
    let (s6, d6) = (pick_v6(rng, v6s), pick_v6(rng, v6s));
    let f = match rng.random_range(0..15) {
        0..=2 => random_l4(rng, f.ipv4(s4, d4), false),
        3 => {
            // ICMP error quoting a packet that went the other way.
            let inner = random_l4(rng, Frame::eth(dst_mac, src_mac).ipv4(d4, s4), false);
            let quoted = inner.ip_packet();
            let n = quoted.len().min(28 + rng.random_range(0..32));
            f.ipv4(s4, d4)
                .icmp_dest_unreachable(rng.random_range(0..16), &quoted[..n])
        }
        4 => {
            let proto = loop {
                let p = if rng.random_bool(0.5) {
                    *[2u8, 4, 41, 47, 50, 51, 58, 89, 103, 112, 132, 0, 59, 255]
                        .choose(rng)
                        .unwrap()
                } else {
                    rng.random()
                };
                if !matches!(p, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP) {
                    break p;
                }
            };
            f.ipv4(s4, d4).raw(proto).payload(&random_payload(rng, 64))
        }
        5 => {
            let ihl = rng.random_range(6..=15);
            random_l4(rng, f.ipv4(s4, d4).ihl(ihl), false)
        }
        6 => {
            let f = f.ipv4(s4, d4).ip_id(rng.random());
            if rng.random_bool(0.5) {
                random_l4(rng, f.fragment(0, true), false)
            } else {
                let proto = *[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, 47]
                    .choose(rng)
                    .unwrap();
                f.fragment(rng.random_range(1..0x2000), rng.random())
                    .raw(proto)
                    .payload(&random_payload(rng, 64))
            }
        }
        7..=8 => random_l4(rng, f.ipv6(s6, d6), true),
        9 => {
            let target = pick_v6(rng, v6s);
            let lla = rng.random_bool(0.8).then_some(src_mac);
            let to = |group: Ipv6Addr| eth(ipv6_multicast_mac(group)).ipv6(s6, group);
            match rng.random_range(0..6) {
                0 => to(solicited_node(target)).neighbor_solicit(target, lla),
                1 => f.ipv6(s6, d6).neighbor_solicit(target, lla),
                2 => {
                    let flags = *[NA_SOLICITED | NA_OVERRIDE, NA_OVERRIDE, 0, 0xe0]
                        .choose(rng)
                        .unwrap();
                    if rng.random_bool(0.5) {
                        f.ipv6(s6, d6).neighbor_advert(target, flags, lla)
                    } else {
                        to(ALL_NODES).neighbor_advert(target, flags, lla)
                    }
                }
                3 => to(ALL_ROUTERS).router_solicit(lla),
                4 => to(ALL_NODES).router_advert(rng.random(), lla),
                _ => to(ALL_MLDV2_ROUTERS)
                    .ext(Ext::router_alert())
                    .mldv2_report(&[solicited_node(s6), pick_v6(rng, v6s)]),
            }
        }
        10..=11 => {
            let n = rng.random_range(1..=MAX_EXT_HEADERS);
            let mut kinds = Vec::with_capacity(n);
            if rng.random_bool(0.5) {
                kinds.push(IPPROTO_HOPOPTS);
            }
            while kinds.len() < n {
                kinds.push(
                    *[
                        IPPROTO_ROUTING,
                        IPPROTO_DSTOPTS,
                        IPPROTO_AH,
                        IPPROTO_FRAGMENT,
                    ]
                    .choose(rng)
                    .unwrap(),
                );
            }
            let exts = kinds.iter().map(|&k| match k {
                IPPROTO_HOPOPTS | IPPROTO_DSTOPTS => Ext::options(k, rng.random_range(0..3)),
                IPPROTO_ROUTING => Ext::routing_len(rng.random_range(0..3)),
                IPPROTO_AH => Ext::auth_icv(4 * rng.random_range(0..5)),
                _ => Ext::fragment_id(0, rng.random(), rng.random()),
            });
            let exts: Vec<Ext> = exts.collect();
            let f = f.ipv6(s6, d6).exts(exts);
            if rng.random_ratio(1, 4) {
                let proto = *[IPPROTO_NONE, 47, 132, IPPROTO_ICMP].choose(rng).unwrap();
                f.raw(proto).payload(&random_payload(rng, 32))
            } else {
                random_l4(rng, f, true)
            }
        }
        12 => {
            let mut f = f.ipv6(s6, d6);
            for _ in 0..rng.random_range(0..3) {
                f = f.ext(Ext::dest_opts());
            }
            let proto = *[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6, IPPROTO_DSTOPTS]
                .choose(rng)
                .unwrap();
            f.fragment(rng.random_range(1..0x2000), rng.random())
                .raw(proto)
                .payload(&random_payload(rng, 64))
        }
        _ => {
            let arp = match rng.random_range(0..3) {
                0 => Arp::request(src_mac, s4, d4),
                1 => Arp::reply(src_mac, s4, dst_mac, d4),
                _ => Arp::gratuitous(src_mac, s4),
            };
            f.arp(arp)
        }
    };
    let f = if rng.random_ratio(1, 10) {
        f.pad_to(rng.random_range(60..=80))
    } else {
        f
    };
    f.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::hex;
    use netwatch_common::packet::PacketClass;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const MAC: Mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
    const V4: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
    const V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xdead, 0, 0, 0, 0, 0, 2);

    /// An independent, test-only implementation of rules 1-6, only as far
    /// as the class goes (the reference parser lives elsewhere).
    fn classify(f: &[u8]) -> PacketClass {
        use PacketClass::*;
        let Some(mut et) = get16(f, 12) else {
            return Invalid;
        };
        let mut l3 = 14;
        if matches!(et, ETHERTYPE_VLAN | ETHERTYPE_QINQ) {
            let Some(inner) = get16(f, 16) else {
                return Invalid;
            };
            if matches!(inner, ETHERTYPE_VLAN | ETHERTYPE_QINQ) {
                return Unsupported;
            }
            et = inner;
            l3 = 18;
        }
        let avail = f.len() - l3;
        let (proto, l4, end, v6) = match et {
            ETHERTYPE_ARP => {
                if avail < 28 {
                    return Invalid;
                }
                let ok = get16(f, l3) == Some(1)
                    && get16(f, l3 + 2) == Some(ETHERTYPE_IPV4)
                    && f[l3 + 4] == 6
                    && f[l3 + 5] == 4;
                return if ok { Arp } else { Invalid };
            }
            ETHERTYPE_IPV4 => {
                if avail < 20 || f[l3] >> 4 != 4 {
                    return Invalid;
                }
                let ihl = usize::from(f[l3] & 0x0f) * 4;
                let tl = usize::from(get16(f, l3 + 2).unwrap());
                if ihl < 20 || tl < ihl || tl > avail {
                    return Invalid;
                }
                if get16(f, l3 + 6).unwrap() & 0x1fff != 0 {
                    return Ip;
                }
                (f[l3 + 9], l3 + ihl, l3 + tl, false)
            }
            ETHERTYPE_IPV6 => {
                if avail < 40 || f[l3] >> 4 != 6 {
                    return Invalid;
                }
                let end = l3 + 40 + usize::from(get16(f, l3 + 4).unwrap());
                if end > f.len() {
                    return Invalid;
                }
                let mut nh = f[l3 + 6];
                let mut off = l3 + 40;
                let mut walked = 0;
                while is_ext(nh) {
                    if walked == MAX_EXT_HEADERS {
                        return ExtHeaderLimit;
                    }
                    let need = if nh == IPPROTO_FRAGMENT { 8 } else { 2 };
                    if off + need > end {
                        return Invalid;
                    }
                    let size = match nh {
                        IPPROTO_FRAGMENT => 8,
                        IPPROTO_AH => (usize::from(f[off + 1]) + 2) * 4,
                        _ => (usize::from(f[off + 1]) + 1) * 8,
                    };
                    if off + size > end {
                        return Invalid;
                    }
                    if nh == IPPROTO_FRAGMENT && get16(f, off + 2).unwrap() >> 3 != 0 {
                        return Ip;
                    }
                    nh = f[off];
                    off += size;
                    walked += 1;
                }
                (nh, off, end, true)
            }
            _ => return Unsupported,
        };
        let need = match proto {
            IPPROTO_TCP => {
                if l4 + 20 > end {
                    return Invalid;
                }
                let doff = usize::from(f[l4 + 12] >> 4) * 4;
                if doff < 20 {
                    return Invalid;
                }
                doff
            }
            IPPROTO_UDP => 8,
            IPPROTO_ICMP if !v6 => 8,
            IPPROTO_ICMPV6 if v6 => {
                if l4 < end && f[l4] == netwatch_common::packet::ICMPV6_NEIGHBOR_ADVERT {
                    24
                } else {
                    8
                }
            }
            _ => 0,
        };
        if l4 + need > end { Invalid } else { Ip }
    }

    fn corpus() -> Vec<(String, Vec<u8>)> {
        malformed_corpus(MAC, V4, V6)
    }

    #[test]
    fn classifier_sanity() {
        for (name, f) in base_frames(MAC, V4, V6) {
            let want = if name == "arp" {
                PacketClass::Arp
            } else {
                PacketClass::Ip
            };
            assert_eq!(classify(&f), want, "{name} {}", hex(&f));
        }
    }

    #[test]
    fn corpus_is_never_allowed_by_the_rules() {
        for (name, f) in corpus() {
            let class = classify(&f);
            assert!(
                matches!(
                    class,
                    PacketClass::Invalid | PacketClass::Unsupported | PacketClass::ExtHeaderLimit
                ),
                "{name} classified {class:?}: {}",
                hex(&f)
            );
        }
    }

    #[test]
    fn corpus_classes_where_specific() {
        let c = corpus();
        let class_of = |n: &str| classify(&c.iter().find(|(x, _)| x == n).unwrap().1);
        assert_eq!(class_of("ipv6-ext-limit-9"), PacketClass::ExtHeaderLimit);
        assert_eq!(class_of("ipv6-ext-limit-20"), PacketClass::ExtHeaderLimit);
        assert_eq!(
            class_of("ipv6-ext-limit-9-frag-nonfirst-last"),
            PacketClass::ExtHeaderLimit
        );
        assert_eq!(class_of("ethertype-88cc"), PacketClass::Unsupported);
        assert_eq!(class_of("vlan-in-vlan-8100-8100"), PacketClass::Unsupported);
        assert_eq!(class_of("ipv4-ihl-4"), PacketClass::Invalid);
        assert_eq!(class_of("nd-advert-short-23"), PacketClass::Invalid);
        assert_eq!(class_of("ipv4-udp-l4-short-7"), PacketClass::Invalid);
    }

    #[test]
    fn corpus_names_unique_and_sources_set() {
        let c = corpus();
        let names: HashSet<&str> = c.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), c.len());
        for (name, f) in &c {
            if f.len() >= 12 {
                assert_eq!(&f[6..12], &MAC, "{name}: source MAC");
            }
            let lay = locate(f);
            if name.starts_with("version-mismatch-") {
                continue;
            }
            if let (Some(l3), 4) = (lay.l3, lay.family) {
                assert_eq!(&f[l3 + 12..l3 + 16], &V4.octets(), "{name}: source IPv4");
            }
            if let (Some(l3), 6) = (lay.l3, lay.family) {
                assert_eq!(&f[l3 + 8..l3 + 24], &V6.octets(), "{name}: source IPv6");
            }
        }
    }

    #[test]
    fn corpus_covers_every_category() {
        let c = corpus();
        let count = |prefix: &str| c.iter().filter(|(n, _)| n.starts_with(prefix)).count();
        for n in 0..14 {
            assert!(
                c.iter()
                    .any(|(x, f)| *x == format!("runt-{n}") && f.len() == n)
            );
        }
        for kind in TRUNCATED_KINDS {
            assert!(count(&format!("{kind}-trunc-")) > 0, "{kind}");
        }
        for (prefix, at_least) in [
            ("ipv4-ihl-", 5),
            ("ipv4-totlen-lt-ihl-", 1),
            ("ipv4-opts-totlen-lt-ihl-", 1),
            ("ipv4-totlen-gt-frame-", 1),
            ("ipv6-paylen-gt-frame-", 1),
            ("ipv4-version-", 15),
            ("ipv6-version-", 15),
            ("version-mismatch-", 2),
            ("tcp-doff-", 5),
            ("tcp-doff-past-", 10),
            ("ipv6-tcp-doff-past-", 1),
            ("ipv4-tcp-l4-short-", 20),
            ("ipv4-udp-l4-short-", 8),
            ("ipv4-icmp-l4-short-", 8),
            ("ipv6-tcp-l4-short-", 20),
            ("ipv6-udp-l4-short-", 8),
            ("ipv6-icmpv6-l4-short-", 8),
            ("ipv4-udp-l4-beyond-iplen-", 8),
            ("nd-advert-short-", 24),
            ("ipv6-ext-limit-9", 1),
            ("ipv6-ext-limit-20", 1),
            ("ipv6-ext-overrun-", 4),
            ("ipv6-ext-cut-", 5),
            ("ethertype-88cc", 1),
            ("ethertype-8847", 1),
            ("ethertype-0000", 1),
            ("ethertype-ffff", 1),
            ("ethertype-9000", 1),
            ("vlan-in-vlan-8100-8100", 1),
            ("vlan-in-vlan-88a8-8100", 1),
            ("vlan-in-vlan-8100-88a8", 1),
            ("arp-htype-", 1),
            ("arp-ptype-", 1),
            ("arp-hlen-", 1),
            ("arp-plen-", 1),
            ("arp-trunc-", 14),
        ] {
            assert!(
                count(prefix) >= at_least,
                "{prefix}: {} < {at_least}",
                count(prefix)
            );
        }
    }

    #[test]
    fn truncations_are_prefixes_of_the_originals() {
        let bases = base_frames(MAC, V4, V6);
        let c = corpus();
        for (kind, full) in &bases {
            let prefix = format!("{kind}-trunc-");
            let cut: Vec<_> = c
                .iter()
                .filter(|(n, _)| {
                    n.strip_prefix(&prefix)
                        .is_some_and(|r| r.parse::<usize>().is_ok())
                })
                .collect();
            assert_eq!(cut.len(), full.len() - 14, "{kind}: one per length");
            for (name, f) in cut {
                let n: usize = name[prefix.len()..].parse().unwrap();
                assert_eq!(f.len(), n, "{name}");
                assert!(f.len() < full.len(), "{name}");
                assert_eq!(&full[..n], &f[..], "{name}");
            }
        }
    }

    #[test]
    fn fragment_cases_are_valid_non_first_fragments() {
        let cases = fragment_cases(MAC, V4, V6);
        assert!(cases.len() >= 20);
        let names: HashSet<&str> = cases.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), cases.len());
        for (name, f) in &cases {
            assert_eq!(classify(f), PacketClass::Ip, "{name} {}", hex(f));
            let lay = locate(f);
            assert!(lay.l4.is_none(), "{name}: no transport header");
            assert_eq!(&f[6..12], &MAC);
            // etherparse agrees it is a fragment.
            let s = etherparse::SlicedPacket::from_ethernet(f).unwrap();
            let fragmented = match s.net {
                Some(etherparse::NetSlice::Ipv4(ip)) => ip.is_payload_fragmented(),
                Some(etherparse::NetSlice::Ipv6(ip)) => ip.is_payload_fragmented(),
                _ => false,
            };
            assert!(fragmented, "{name}");
        }
    }

    #[test]
    fn refresh_checksums_matches_builder() {
        for (name, f) in base_frames(MAC, V4, V6)
            .into_iter()
            .chain(fragment_cases(MAC, V4, V6))
        {
            let mut g = f.clone();
            // Scramble the checksums, then recompute.
            let lay = locate(&g);
            if let (Some(l3), 4) = (lay.l3, lay.family) {
                g[l3 + 10] ^= 0x5a;
            }
            if let Some((p, l4)) = lay.l4 {
                let at = match p {
                    IPPROTO_TCP => 16,
                    IPPROTO_UDP => 6,
                    _ => 2,
                };
                g[l4 + at] ^= 0xa5;
            }
            refresh_checksums(&mut g);
            assert_eq!(hex(&g), hex(&f), "{name}");
        }
    }

    #[test]
    fn random_valid_frames_are_valid() {
        let mut rng = StdRng::seed_from_u64(7);
        let macs = [MAC, [0x02, 0x42, 0xac, 0x11, 0, 3]];
        let v4s = [V4, Ipv4Addr::new(10, 0, 0, 1)];
        let v6s = [V6, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2)];
        let mut seen = [0usize; 5];
        for i in 0..10_000 {
            let f = random_valid_frame(&mut rng, &macs, &v4s, &v6s);
            let class = classify(&f);
            seen[class as usize] += 1;
            assert!(
                matches!(
                    class,
                    PacketClass::Ip | PacketClass::Arp | PacketClass::Unsupported
                ),
                "#{i} {class:?}: {}",
                hex(&f)
            );
            // etherparse accepts the ones the rules accept (its only
            // stricter check: hop-by-hop first, which the generator keeps).
            // etherparse also parses AH and IGMP, ICMP in IPv6, ICMPv6 in
            // IPv4, and extension headers inside IPv6 fragment data; the
            // rules do not.
            let lay = locate(&f);
            let other = match (lay.family, lay.l4) {
                (4, Some((p, _))) => matches!(p, IPPROTO_AH | 2 | IPPROTO_ICMPV6),
                (6, Some((p, _))) => matches!(p, 2 | IPPROTO_ICMP),
                _ => false,
            } || lay
                .exts
                .last()
                .is_some_and(|&(k, off, _)| k == IPPROTO_FRAGMENT && is_ext(f[off]));
            if class != PacketClass::Unsupported && !other {
                etherparse::SlicedPacket::from_ethernet(&f)
                    .unwrap_or_else(|e| panic!("#{i} {e:?}: {}", hex(&f)));
            }
        }
        assert!(seen[PacketClass::Ip as usize] > 7000, "{seen:?}");
        assert!(seen[PacketClass::Arp as usize] > 300, "{seen:?}");
        assert!(seen[PacketClass::Unsupported as usize] < 1000, "{seen:?}");
    }

    #[test]
    fn random_valid_frames_with_empty_pools() {
        let mut rng = StdRng::seed_from_u64(8);
        for _ in 0..1000 {
            let f = random_valid_frame(&mut rng, &[], &[], &[]);
            assert!(f.len() >= 14);
        }
    }

    #[test]
    fn mutate_never_panics_and_varies() {
        let mut rng = StdRng::seed_from_u64(42);
        let macs = [MAC];
        let mut seeds: Vec<Vec<u8>> = corpus().into_iter().map(|(_, f)| f).collect();
        seeds.extend(base_frames(MAC, V4, V6).into_iter().map(|(_, f)| f));
        seeds.push(Vec::new());
        let mut changed = 0;
        let mut classes = [0usize; 5];
        for i in 0..10_000 {
            let base = if i % 2 == 0 {
                random_valid_frame(&mut rng, &macs, &[V4], &[V6])
            } else {
                seeds[i % seeds.len()].clone()
            };
            let m = mutate(&base, &mut rng);
            // Mutating a mutation must work too.
            let m2 = mutate(&m, &mut rng);
            refresh_checksums(&mut m2.clone());
            classes[classify(&m2) as usize] += 1;
            changed += usize::from(m != base);
        }
        assert!(changed > 9_000, "{changed}");
        // The mutations reach every class.
        assert!(classes.iter().all(|&n| n > 10), "{classes:?}");
    }
}
