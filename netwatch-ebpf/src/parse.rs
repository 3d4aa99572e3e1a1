//! The kernel's frame parser, following the rules in
//! `netwatch_common::packet`. Every read goes through [`Packet::read`], which
//! checks bounds; every length field is checked against what is present
//! before it is used, and the extension-header walk is bounded.

use netwatch_common::{
    flow::family,
    packet::{
        ETH_HLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN,
        ICMPV6_NEIGHBOR_ADVERT, IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS,
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP, MAX_EXT_HEADERS,
        PacketClass, PacketSummary, nd_kind,
    },
};

use core::mem::MaybeUninit;

use aya_ebpf::programs::TcContext;

use crate::{
    bytes::zeroed_by_words,
    maps::PACKET_SUMMARY,
    packet::{Packet, Skb},
};

/// [`parse`] for a TC program's skb (see [`Packet`] for why through the
/// load-bytes helper), into `out` on the caller's stack.
#[inline(always)]
pub fn parse_skb<'a>(
    ctx: &TcContext,
    tag_stripped: bool,
    out: &'a mut MaybeUninit<PacketSummary>,
) -> &'a PacketSummary {
    parse(ctx, tag_stripped, out)
}

/// [`parse_skb`] into this CPU's `PACKET_SUMMARY` entry, for the veth
/// programs: the verifier does not track a map value's contents, so every
/// path through the parser ends in the same state and the code after it
/// is verified once, not once per kind of packet. With the summary on the
/// stack, the cached-verdict path took the verifier from 122,000 to
/// 624,000 instructions for `from_container` (Linux 6.18); with it here,
/// 23,500. `None` only if the lookup fails, which a one-entry array never
/// does.
///
/// Learned the hard way: LLVM may read a field of the summary twice and
/// rely on both reads agreeing, which the verifier cannot know of two
/// reads of a map value; in `macvlan_child` that made it walk a path that
/// cannot happen and refuse the program ("bitwise operator on pointer").
/// A volatile copy back onto the stack would prevent that, but takes the
/// programs past the 512-byte stack. So the macvlan programs keep their
/// summary on the stack (they have no cached-verdict path to multiply),
/// and every program's load is checked by the datapath tests.
#[inline(always)]
pub fn parse_skb_per_cpu(ctx: &TcContext, tag_stripped: bool) -> Option<&'static PacketSummary> {
    let slot = PACKET_SUMMARY.get_ptr_mut(0)?;
    // SAFETY: this CPU's entry of a per-CPU array, valid for the run and
    // used by no one else meanwhile (see `PACKET_SUMMARY`); `parse` zeroes
    // it before anything reads it.
    let out = unsafe { &mut *slot.cast::<MaybeUninit<PacketSummary>>() };
    Some(parse(&Skb::of(ctx), tag_stripped, out))
}

// The summary is zeroed with 8-byte stores (`bytes::zeroed_by_words`
// takes 8-byte words for a type aligned to 8).
const _: () = assert!(core::mem::align_of::<PacketSummary>() == 8);

#[inline(always)]
fn be16(hi: u8, lo: u8) -> u16 {
    u16::from_be_bytes([hi, lo])
}

#[inline(always)]
fn is_vlan_tpid(ethertype: u16) -> bool {
    ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ
}

/// Parses a frame into `s`. `tag_stripped` says the stack already removed
/// one VLAN tag into skb metadata (`__sk_buff.vlan_present`). Every
/// interface's receive path does so, in software and whatever the
/// device's rx-vlan offload says, for the outer 802.1Q or 802.1ad tag
/// before the TC ingress hook runs (`skb_vlan_untag` in
/// `__netif_receive_skb_core`); a bridge forwards the frame with the tag
/// still in metadata, so the next port's TC egress hook sees it there too.
/// A double-tagged frame arrives with one tag left in the data.
/// BPF_PROG_TEST_RUN cannot set `vlan_present`: `tests/tests/vlan_veth.rs`
/// sends tagged frames across a real veth for this path.
/// `out` need not be initialised: it is zeroed first.
#[inline(always)]
pub fn parse<'a, P: Packet>(
    p: &P,
    tag_stripped: bool,
    out: &'a mut MaybeUninit<PacketSummary>,
) -> &'a PacketSummary {
    // SAFETY: every field of PacketSummary is valid as all zero bits (its
    // Default value: integers, byte arrays, `false` and the enums' zero
    // variants).
    let s = unsafe { zeroed_by_words(out) };
    parse_frame(p, tag_stripped, s);
    s
}

#[inline(always)]
fn parse_frame<P: Packet>(p: &P, tag_stripped: bool, s: &mut PacketSummary) {
    let len = p.frame_len();
    let Some(eth) = p.read::<[u8; ETH_HLEN]>(0) else {
        return;
    };
    s.src_mac = [eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]];
    let mut ethertype = be16(eth[12], eth[13]);
    let mut off = ETH_HLEN;
    if is_vlan_tpid(ethertype) {
        if tag_stripped {
            s.ethertype = ethertype;
            s.class = PacketClass::Unsupported;
            return;
        }
        let Some(tag) = p.read::<[u8; 4]>(off) else {
            return;
        };
        ethertype = be16(tag[2], tag[3]);
        off += 4;
        if is_vlan_tpid(ethertype) {
            s.ethertype = ethertype;
            s.class = PacketClass::Unsupported;
            return;
        }
    }
    s.ethertype = ethertype;
    match ethertype {
        ETHERTYPE_ARP => parse_arp(p, off, s),
        ETHERTYPE_IPV4 => parse_ipv4(p, off, len, s),
        ETHERTYPE_IPV6 => parse_ipv6(p, off, len, s),
        _ => s.class = PacketClass::Unsupported,
    }
}

#[inline(always)]
fn parse_arp<P: Packet>(p: &P, off: usize, s: &mut PacketSummary) {
    let Some(arp) = p.read::<[u8; 28]>(off) else {
        return;
    };
    let htype = be16(arp[0], arp[1]);
    let ptype = be16(arp[2], arp[3]);
    if htype != 1 || ptype != ETHERTYPE_IPV4 || arp[4] != 6 || arp[5] != 4 {
        return;
    }
    s.arp_sender_mac = [arp[8], arp[9], arp[10], arp[11], arp[12], arp[13]];
    s.src[..4].copy_from_slice(&arp[14..18]);
    s.dst[..4].copy_from_slice(&arp[24..28]);
    s.class = PacketClass::Arp;
}

#[inline(always)]
fn parse_ipv4<P: Packet>(p: &P, off: usize, len: usize, s: &mut PacketSummary) {
    let Some(ip) = p.read::<[u8; 20]>(off) else {
        return;
    };
    let version = ip[0] >> 4;
    let header_len = ((ip[0] & 0x0f) as usize) * 4;
    let total_len = be16(ip[2], ip[3]) as usize;
    if version != 4 || header_len < 20 || total_len < header_len || off + total_len > len {
        return;
    }
    s.family = family::IPV4;
    s.proto = ip[9];
    s.src[..4].copy_from_slice(&ip[12..16]);
    s.dst[..4].copy_from_slice(&ip[16..20]);
    let fragment_offset = be16(ip[6], ip[7]) & 0x1fff;
    if fragment_offset != 0 {
        s.class = PacketClass::Ip;
        return;
    }
    parse_l4(p, off + header_len, off + total_len, s);
}

#[inline(always)]
fn parse_ipv6<P: Packet>(p: &P, off: usize, len: usize, s: &mut PacketSummary) {
    // The fixed fields, then the addresses straight into the summary (see
    // `Packet::read_into`). They cannot fail to read once the length
    // check passed: `len` counts the whole frame and `Skb` reads past its
    // linear part through the helper.
    let Some(ip) = p.read::<[u8; 8]>(off) else {
        return;
    };
    let payload_len = be16(ip[4], ip[5]) as usize;
    if ip[0] >> 4 != 6 || off + 40 + payload_len > len {
        return;
    }
    if !p.read_into(off + 8, &mut s.src) || !p.read_into(off + 24, &mut s.dst) {
        return;
    }
    s.family = family::IPV6;
    let limit = off + 40 + payload_len;
    let mut next = ip[6];
    let mut cur = off + 40;
    for _ in 0..MAX_EXT_HEADERS {
        let ext_len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {
                let Some(hdr) = p.read_far::<[u8; 2]>(cur) else {
                    return;
                };
                let ext_len = if next == IPPROTO_AH {
                    (hdr[1] as usize + 2) * 4
                } else {
                    (hdr[1] as usize + 1) * 8
                };
                if cur + ext_len > limit {
                    return;
                }
                next = hdr[0];
                ext_len
            }
            IPPROTO_FRAGMENT => {
                if cur + 8 > limit {
                    return;
                }
                let Some(frag) = p.read_far::<[u8; 8]>(cur) else {
                    return;
                };
                next = frag[0];
                if be16(frag[2], frag[3]) >> 3 != 0 {
                    // Non-first fragment: the payload is not a header.
                    s.proto = next;
                    s.class = PacketClass::Ip;
                    return;
                }
                8
            }
            _ => {
                s.proto = next;
                parse_l4(p, cur, limit, s);
                return;
            }
        };
        cur += ext_len;
    }
    if is_ext_header(next) {
        // The transport protocol was never reached: proto stays 0.
        s.class = PacketClass::ExtHeaderLimit;
    } else {
        s.proto = next;
        parse_l4(p, cur, limit, s);
    }
}

#[inline(always)]
fn is_ext_header(proto: u8) -> bool {
    matches!(
        proto,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
    )
}

/// Parses the transport header at `off`, which must fit before `limit` (the
/// end of the IP packet as its header declares it).
#[inline(always)]
fn parse_l4<P: Packet>(p: &P, off: usize, limit: usize, s: &mut PacketSummary) {
    let proto = s.proto;
    match proto {
        IPPROTO_TCP => {
            if off + 20 > limit {
                return;
            }
            // Ports, data offset and flags: the first 14 of the 20 bytes
            // the check above requires.
            let Some(tcp) = p.read::<[u8; 14]>(off) else {
                return;
            };
            let data_offset = (tcp[12] >> 4) as usize * 4;
            if data_offset < 20 || off + data_offset > limit {
                return;
            }
            s.src_port = be16(tcp[0], tcp[1]);
            s.dst_port = be16(tcp[2], tcp[3]);
            s.tcp_flags = tcp[13];
            s.has_ports = true;
        }
        IPPROTO_UDP => {
            if off + 8 > limit {
                return;
            }
            let Some(udp) = p.read::<[u8; 8]>(off) else {
                return;
            };
            s.src_port = be16(udp[0], udp[1]);
            s.dst_port = be16(udp[2], udp[3]);
            s.has_ports = true;
            s.udp_payload = (off + 8) as u32;
            s.udp_payload_len = (limit - off - 8) as u32;
        }
        // ICMP only inside IPv4 and ICMPv6 only inside IPv6 (rule 5).
        IPPROTO_ICMP | IPPROTO_ICMPV6 if (proto == IPPROTO_ICMP) == (s.family == family::IPV4) => {
            if off + 8 > limit {
                return;
            }
            // Type and code: the first 2 of the 8 bytes checked above.
            let Some(icmp) = p.read::<[u8; 2]>(off) else {
                return;
            };
            s.src_port = icmp[0] as u16;
            s.dst_port = icmp[1] as u16;
            if proto == IPPROTO_ICMPV6 {
                s.nd = nd_kind(icmp[0]);
                if icmp[0] == ICMPV6_NEIGHBOR_ADVERT {
                    if off + 24 > limit {
                        return;
                    }
                    let Some(target) = p.read_far::<[u8; 16]>(off + 8) else {
                        return;
                    };
                    // Volatile: a plain store of the array became a call to a
                    // byte-loop `memmove` subprogram in `uplink`.
                    // SAFETY: a field of the summary, valid for writes.
                    unsafe { (&raw mut s.nd_target).write_volatile(target) };
                }
            }
        }
        _ => {}
    }
    s.class = PacketClass::Ip;
}
