//! A ring buffer record in user-space terms: addresses, names, verdict.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netwatch_common::{
    event::{EventKind, FlowEvent},
    flow::{FlowKey, family},
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    reason::{Direction, DropReason, Verdict},
};
use serde::Serialize;

use super::names::FlowNames;

/// One decoded record, with names attached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowRecord {
    /// `flow-open`, `flow-close`, `flow-export` or `drop`.
    pub kind: &'static str,
    pub container: Option<String>,
    pub network: Option<String>,
    /// The interface whose program saw the packet.
    pub interface: Option<String>,
    /// `egress` (sent by the container) or `ingress` (aimed at it).
    pub direction: &'static str,
    pub proto: String,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub src_port: u16,
    pub dst_port: u16,
    pub packets: u64,
    pub bytes: u64,
    pub verdict: &'static str,
    /// `None` when forwarded.
    pub reason: Option<&'static str>,
    /// The container on this host at the other end, if any.
    pub peer: Option<String>,
}

/// The source and destination addresses of a key (none for non-IP flows).
pub fn key_addresses(key: &FlowKey) -> (Option<IpAddr>, Option<IpAddr>) {
    let ip = |bytes: &[u8; 16]| -> Option<IpAddr> {
        match key.family {
            family::IPV4 => Some(IpAddr::V4(Ipv4Addr::new(
                bytes[0], bytes[1], bytes[2], bytes[3],
            ))),
            family::IPV6 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
            _ => None,
        }
    };
    (ip(&key.src), ip(&key.dst))
}

/// The name of an IP protocol number as users write it.
pub fn proto_name(proto: u8, family: u8) -> String {
    match proto {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        IPPROTO_ICMP => "icmp".into(),
        IPPROTO_ICMPV6 => "icmpv6".into(),
        0 if family == family::NONE => "arp/other".into(),
        other => other.to_string(),
    }
}

/// A kernel verdict as users read it (`unknown` for a value this version
/// does not know).
pub fn verdict_name(verdict: u8) -> &'static str {
    Verdict::from_u8(verdict).map_or("unknown", Verdict::name)
}

/// A kernel drop reason as users read it: `None` when forwarded, `unknown`
/// for a value this version does not know.
pub fn reason_name(reason: u8) -> Option<&'static str> {
    match DropReason::from_u8(reason) {
        Some(DropReason::None) => None,
        Some(r) => Some(r.name()),
        None => Some("unknown"),
    }
}

impl FlowRecord {
    /// Decodes `event` and names it. Fields the kernel filled with a value
    /// this version does not know decode as "unknown", never a panic.
    pub fn new(event: &FlowEvent, names: &FlowNames) -> FlowRecord {
        let key = &event.key;
        let owner = names.owner(key);
        let (src, dst) = key_addresses(key);
        let direction = Direction::from_u8(key.direction);
        FlowRecord {
            kind: EventKind::from_u8(event.kind).map_or("unknown", EventKind::name),
            container: owner.container,
            network: owner.network,
            interface: owner.interface,
            direction: direction.map_or("unknown", Direction::name),
            proto: proto_name(key.proto, key.family),
            src,
            dst,
            src_port: key.src_port,
            dst_port: key.dst_port,
            packets: event.packets,
            bytes: event.bytes,
            verdict: verdict_name(event.verdict),
            reason: reason_name(event.reason),
            peer: names.peer(key),
        }
    }

    /// Whether the ports are ICMP's type and code (see `FlowKey`).
    fn is_icmp(&self) -> bool {
        self.proto == "icmp" || self.proto == "icmpv6"
    }

    /// One log line: `key=value` pairs, names first. ICMP shows its type
    /// and code instead of ports.
    pub fn log_line(&self) -> String {
        let icmp = self.is_icmp();
        let endpoint = |ip: Option<IpAddr>, port: u16| match ip {
            Some(_) => endpoint_text(ip, port, &self.proto),
            None => "-".to_string(),
        };
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
        let icmp_fields = if icmp {
            format!(" type={} code={}", self.src_port, self.dst_port)
        } else {
            String::new()
        };
        format!(
            "{} container={} network={} interface={} direction={} proto={} src={} dst={}{icmp_fields} reason={} packets={} peer={}",
            self.kind,
            or_dash(&self.container),
            or_dash(&self.network),
            or_dash(&self.interface),
            self.direction,
            self.proto,
            endpoint(self.src, self.src_port),
            endpoint(self.dst, self.dst_port),
            self.reason.unwrap_or("-"),
            self.packets,
            or_dash(&self.peer),
        )
    }
}

/// An address and port as people read them: `10.0.0.2:80`, `[fd00::2]:80`;
/// the address alone without a port, and for ICMP, whose "ports" are its
/// type and code (see `FlowKey`); `*` without an address (summaries, ARP).
pub fn endpoint_text(ip: Option<IpAddr>, port: u16, proto: &str) -> String {
    match ip {
        None => "*".to_string(),
        Some(ip) if port == 0 || proto.starts_with("icmp") => ip.to_string(),
        Some(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        Some(IpAddr::V4(v4)) => format!("{v4}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_read_as_address_and_port_and_icmp_shows_no_port() {
        let v4: IpAddr = "172.19.0.2".parse().unwrap();
        let v6: IpAddr = "fd00::2".parse().unwrap();
        assert_eq!(endpoint_text(Some(v4), 53, "udp"), "172.19.0.2:53");
        assert_eq!(endpoint_text(Some(v6), 53, "udp"), "[fd00::2]:53");
        assert_eq!(endpoint_text(Some(v4), 8, "icmp"), "172.19.0.2");
        assert_eq!(endpoint_text(Some(v6), 128, "icmpv6"), "fd00::2");
        assert_eq!(endpoint_text(Some(v4), 0, "arp/other"), "172.19.0.2");
        assert_eq!(endpoint_text(None, 0, "*"), "*");
    }

    #[test]
    fn unknown_kernel_values_decode_without_panicking() {
        let event = FlowEvent {
            kind: 200,
            verdict: 9,
            reason: 250,
            key: FlowKey {
                direction: 7,
                family: 3,
                proto: 99,
                ..FlowKey::default()
            },
            ..FlowEvent::default()
        };
        let record = FlowRecord::new(&event, &FlowNames::default());
        assert_eq!(
            (record.kind, record.verdict, record.direction),
            ("unknown", "unknown", "unknown")
        );
        assert_eq!(record.reason, Some("unknown"));
        assert_eq!((record.src, record.dst), (None, None));
        assert_eq!(record.proto, "99");
        assert!(record.log_line().starts_with("unknown container=- "));
    }

    #[test]
    fn a_drop_record_reads_as_a_log_line() {
        let mut key = FlowKey {
            ifindex: 5,
            direction: Direction::Egress as u8,
            family: family::IPV4,
            proto: IPPROTO_TCP,
            src_port: 40000,
            dst_port: 443,
            ..FlowKey::default()
        };
        key.src[..4].copy_from_slice(&[172, 30, 0, 2]);
        key.dst[..4].copy_from_slice(&[203, 0, 113, 7]);
        let event = FlowEvent {
            kind: EventKind::Drop as u8,
            verdict: Verdict::Dropped as u8,
            reason: DropReason::NotInNetwork as u8,
            key,
            packets: 3,
            ..FlowEvent::default()
        };
        let line = FlowRecord::new(&event, &FlowNames::default()).log_line();
        assert_eq!(
            line,
            "drop container=- network=- interface=- direction=egress proto=tcp \
             src=172.30.0.2:40000 dst=203.0.113.7:443 reason=not-in-network packets=3 peer=-"
        );
        let mut echo = event;
        echo.key.proto = IPPROTO_ICMP;
        echo.key.src_port = 8;
        echo.key.dst_port = 0;
        let line = FlowRecord::new(&echo, &FlowNames::default()).log_line();
        assert!(
            line.contains("src=172.30.0.2 dst=203.0.113.7 type=8 code=0 reason="),
            "{line}"
        );
    }
}
