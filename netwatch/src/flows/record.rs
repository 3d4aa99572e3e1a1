//! Kernel values as users read them: addresses, endpoints, and the drop
//! log line. (Protocols, verdicts and reasons are typed: netwatch-common's
//! `Protocol`, `Verdict` and `DropReason`, and [`super::FlowReason`].)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netwatch_common::{
    flow::{FlowKey, family},
    protocol::Protocol,
    reason::Verdict,
};

use super::pipeline::ObservedEvent;

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

impl ObservedEvent {
    /// One log line: `key=value` pairs, names first; `packets` is the
    /// flow's count so far. ICMP shows its type and code instead of ports.
    pub fn log_line(&self) -> String {
        let f = &self.flow;
        let icmp = f.proto.is_icmp();
        let endpoint = |ip: Option<IpAddr>, port: u16| match ip {
            Some(_) => endpoint_text(ip, port, f.proto),
            None => "-".to_string(),
        };
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
        let icmp_fields = if icmp {
            format!(" type={} code={}", f.src_port, f.dst_port)
        } else {
            String::new()
        };
        format!(
            "{}{} container={} network={} interface={} direction={} proto={} src={} dst={}{icmp_fields} reason={} packets={} peer={}{}{}{}{}",
            self.event,
            // An audited record is a drop that did not happen: say so first.
            if f.verdict == Verdict::Audited {
                " audited"
            } else {
                ""
            },
            or_dash(&f.container),
            or_dash(&f.network),
            or_dash(&f.interface),
            f.direction,
            f.proto,
            endpoint(f.src, f.src_port),
            endpoint(f.dst, f.dst_port),
            f.reason
                .as_ref()
                .map_or_else(|| "-".to_string(), ToString::to_string),
            f.packets,
            or_dash(&f.peer),
            f.peer_kind
                .as_deref()
                .filter(|_| f.peer.is_some())
                .map(|kind| format!(" peer_kind={kind}"))
                .unwrap_or_default(),
            f.published
                .as_deref()
                .map(|published| format!(" published={published}"))
                .unwrap_or_default(),
            f.rule
                .as_deref()
                .map(|rule| format!(" rule=\"{rule}\""))
                .unwrap_or_default(),
            [("src_name", &f.src_name), ("dst_name", &f.dst_name)]
                .iter()
                .filter_map(|(key, name)| name.as_ref().map(|name| format!(" {key}={name}")))
                .collect::<String>(),
        )
    }
}

/// An address and port as people read them: `10.0.0.2:80`, `[fd00::2]:80`;
/// the address alone without a port, and for ICMP, whose "ports" are its
/// type and code (see `FlowKey`); `*` without an address (summaries, ARP).
pub fn endpoint_text(ip: Option<IpAddr>, port: u16, proto: Protocol) -> String {
    match ip {
        None => "*".to_string(),
        Some(ip) if port == 0 || proto.is_icmp() => ip.to_string(),
        Some(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        Some(IpAddr::V4(v4)) => format!("{v4}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use netwatch_common::{
        event::{EventKind, FlowEvent},
        packet::{IPPROTO_ICMP, IPPROTO_TCP},
        reason::{Direction, DropReason},
    };

    use super::*;
    use crate::flows::Pipeline;

    #[test]
    fn endpoints_read_as_address_and_port_and_icmp_shows_no_port() {
        let v4: IpAddr = "172.19.0.2".parse().unwrap();
        let v6: IpAddr = "fd00::2".parse().unwrap();
        assert_eq!(endpoint_text(Some(v4), 53, Protocol::Udp), "172.19.0.2:53");
        assert_eq!(endpoint_text(Some(v6), 53, Protocol::Udp), "[fd00::2]:53");
        assert_eq!(endpoint_text(Some(v4), 8, Protocol::Icmp), "172.19.0.2");
        assert_eq!(endpoint_text(Some(v6), 128, Protocol::Icmpv6), "fd00::2");
        assert_eq!(endpoint_text(Some(v4), 0, Protocol::ArpOther), "172.19.0.2");
        assert_eq!(endpoint_text(None, 0, Protocol::Any), "*");
    }

    #[test]
    fn unknown_families_have_no_addresses_and_other_protocols_a_number() {
        assert_eq!(Protocol::of(99, family::IPV4).to_string(), "99");
        let key = FlowKey {
            family: 3,
            ..FlowKey::default()
        };
        assert_eq!(key_addresses(&key), (None, None));
    }

    #[test]
    fn a_drop_reads_as_a_log_line() {
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
        let drop = |key: FlowKey| {
            let pipeline = Pipeline::new(10, Box::new(|| Ok(Vec::new())));
            let event = FlowEvent {
                kind: EventKind::Drop as u8,
                verdict: Verdict::Dropped as u8,
                reason: DropReason::NotInNetwork as u8,
                key,
                packets: 3,
                first_seen_ns: 1,
                last_seen_ns: 2,
                ..FlowEvent::default()
            };
            pipeline.ingest(&[event]).remove(0).log_line()
        };
        assert_eq!(
            drop(key),
            "drop container=- network=- interface=- direction=egress proto=tcp \
             src=172.30.0.2:40000 dst=203.0.113.7:443 reason=not-in-network packets=3 peer=-"
        );
        let mut echo = key;
        echo.proto = IPPROTO_ICMP;
        echo.src_port = 8;
        echo.dst_port = 0;
        let line = drop(echo);
        assert!(
            line.contains("src=172.30.0.2 dst=203.0.113.7 type=8 code=0 reason="),
            "{line}"
        );
    }

    #[test]
    fn a_host_mode_peer_says_so_in_the_log_line_and_tables() {
        let pipeline = Pipeline::new(10, Box::new(|| Ok(Vec::new())));
        let mut observed = pipeline.ingest(&[FlowEvent {
            kind: EventKind::Drop as u8,
            verdict: Verdict::Dropped as u8,
            reason: DropReason::HostAccess as u8,
            packets: 1,
            ..FlowEvent::default()
        }]);
        let mut event = observed.remove(0);
        event.flow.peer = Some("exporter".into());
        event.flow.peer_kind = Some("host-mode".into());
        assert!(
            event
                .log_line()
                .ends_with(" peer=exporter peer_kind=host-mode"),
            "{}",
            event.log_line()
        );
        assert_eq!(
            event.flow.peer_text().as_deref(),
            Some("exporter (host mode)")
        );
        event.flow.peer = Some("host".into());
        event.flow.peer_kind = Some("host".into());
        assert!(event.log_line().ends_with(" peer=host peer_kind=host"));
        assert_eq!(event.flow.peer_text().as_deref(), Some("host"));
        assert!(!event.flow.peer_is_networked_container());
    }
}
