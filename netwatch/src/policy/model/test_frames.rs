//! Hand-built frames for tests: byte by byte, so that a test can produce
//! exactly the malformed header it is about (checksums are left zero; no
//! rule reads them).

pub const MAC_A: [u8; 6] = [0x02, 0x42, 0xac, 0x14, 0x00, 0x02];
pub const MAC_B: [u8; 6] = [0x02, 0x42, 0xac, 0x14, 0x00, 0x03];
const MAC_DST: [u8; 6] = [0x02, 0x42, 0x00, 0x00, 0x00, 0x01];

/// An Ethernet frame from `src_mac`.
pub fn eth(src_mac: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = MAC_DST.to_vec();
    f.extend(src_mac);
    f.extend(ethertype.to_be_bytes());
    f.extend(payload);
    f
}

/// An Ethernet frame with one tag of type `tpid` in front of `ethertype`.
pub fn eth_vlan(src_mac: [u8; 6], tpid: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut tagged = vec![0x20, 0x0a];
    tagged.extend(ethertype.to_be_bytes());
    tagged.extend(payload);
    eth(src_mac, tpid, &tagged)
}

/// An ARP request for IPv4 over Ethernet.
pub fn arp(sender_mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    p.extend(sender_mac);
    p.extend(sender);
    p.extend([0; 6]);
    p.extend(target);
    p
}

/// An IPv4 packet without options or fragmentation.
pub fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    ipv4_with(&[], 0, proto, src, dst, payload)
}

/// An IPv4 packet with `options` (a multiple of 4 bytes) and the raw 16-bit
/// flags/fragment-offset field `frag`.
pub fn ipv4_with(
    options: &[u8],
    frag: u16,
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    payload: &[u8],
) -> Vec<u8> {
    let header_len = 20 + options.len();
    let total = (header_len + payload.len()) as u16;
    let mut p = vec![0x40 | (header_len / 4) as u8, 0];
    p.extend(total.to_be_bytes());
    p.extend([0x12, 0x34]);
    p.extend(frag.to_be_bytes());
    p.extend([64, proto, 0, 0]);
    p.extend(src);
    p.extend(dst);
    p.extend(options);
    p.extend(payload);
    p
}

/// An IPv6 packet; `payload` includes any extension headers.
pub fn ipv6(next: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend((payload.len() as u16).to_be_bytes());
    p.extend([next, 64]);
    p.extend(src);
    p.extend(dst);
    p.extend(payload);
    p
}

/// A hop-by-hop, routing or destination options header of (len+1)·8 bytes.
pub fn ext(next: u8, len: u8) -> Vec<u8> {
    let mut h = vec![next, len];
    h.resize((usize::from(len) + 1) * 8, 0);
    h
}

/// An authentication header of (len+2)·4 bytes.
pub fn ah(next: u8, len: u8) -> Vec<u8> {
    let mut h = vec![next, len];
    h.resize((usize::from(len) + 2) * 4, 0);
    h
}

/// An IPv6 fragment header; `offset` in 8-byte units.
pub fn frag6(next: u8, offset: u16, more: bool) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend(((offset << 3) | u16::from(more)).to_be_bytes());
    h.extend([0, 0, 0, 7]);
    h
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = sport.to_be_bytes().to_vec();
    h.extend(dport.to_be_bytes());
    h.extend(((8 + payload.len()) as u16).to_be_bytes());
    h.extend([0, 0]);
    h.extend(payload);
    h
}

/// A TCP header with `flags` in byte 13 and `options` (a multiple of 4 bytes).
pub fn tcp(sport: u16, dport: u16, flags: u8, options: &[u8]) -> Vec<u8> {
    let mut h = sport.to_be_bytes().to_vec();
    h.extend(dport.to_be_bytes());
    h.extend([0, 0, 0, 1, 0, 0, 0, 0]);
    h.push((((20 + options.len()) / 4) as u8) << 4);
    h.push(flags);
    h.extend([0xff, 0xff, 0, 0, 0, 0]);
    h.extend(options);
    h
}

/// An ICMP or ICMPv6 message: type, code, checksum, then `body`.
pub fn icmp(icmp_type: u8, code: u8, body: &[u8]) -> Vec<u8> {
    let mut h = vec![icmp_type, code, 0, 0];
    h.extend(body);
    h
}
