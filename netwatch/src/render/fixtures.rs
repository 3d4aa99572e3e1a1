//! Hand-made flow entries for tests: of this module, the CLI's tables and
//! lines, and the flow log. Directions, protocols, verdicts and reasons are
//! given as users write them and parsed into their types.

use std::net::IpAddr;

use jiff::Timestamp;
use netwatch_common::reason::Verdict;

use crate::{flows::FlowEntry, render::Snapshot};

pub fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

/// An address and a port.
pub type End<'a> = (&'a str, u16);

/// `entries` as fetched at [`at`]`(second)`.
pub fn snapshot_at(second: i64, entries: Vec<FlowEntry>) -> Snapshot {
    Snapshot {
        taken: at(second),
        entries,
    }
}

/// A forwarded flow with one packet per 100 bytes, seen from `second` 0.
pub fn flow(
    container: Option<&str>,
    network: Option<&str>,
    direction: &str,
    src: End<'_>,
    dst: End<'_>,
    proto: &str,
    bytes: u64,
) -> FlowEntry {
    FlowEntry {
        schema_version: crate::flows::SCHEMA_VERSION,
        host: String::new(),
        rule: None,
        container: container.map(String::from),
        container_id: None,
        project: None,
        service: None,
        network: network.map(String::from),
        direction: direction.parse().unwrap(),
        src: Some(src.0.parse::<IpAddr>().unwrap()),
        dst: Some(dst.0.parse::<IpAddr>().unwrap()),
        src_port: src.1,
        dst_port: dst.1,
        proto: proto.parse().unwrap(),
        packets: bytes.div_ceil(100),
        bytes,
        verdict: Verdict::Forwarded,
        reason: None,
        dropped_by: None,
        peer: None,
        peer_service: None,
        peer_kind: None,
        published: None,
        src_name: None,
        dst_name: None,
        first_seen: at(0),
        last_seen: at(10),
        interface: None,
        flows: 1,
    }
}

/// `c` on `net` sends `bytes` to `dst` over TCP.
pub fn egress(c: &str, net: &str, src: End<'_>, dst: End<'_>, bytes: u64) -> FlowEntry {
    flow(Some(c), Some(net), "egress", src, dst, "tcp", bytes)
}

/// `c` on `net` receives `bytes` from `src` over TCP.
pub fn ingress(c: &str, net: &str, src: End<'_>, dst: End<'_>, bytes: u64) -> FlowEntry {
    flow(Some(c), Some(net), "ingress", src, dst, "tcp", bytes)
}

/// What the uplink shield drops: TCP from outside to an address in a
/// protected prefix that no container holds.
pub fn shield_drop(src: End<'_>, dst: End<'_>, bytes: u64) -> FlowEntry {
    dropped(
        flow(None, None, "ingress", src, dst, "tcp", bytes),
        "protected-prefix",
    )
}

pub fn dropped(mut e: FlowEntry, reason: &str) -> FlowEntry {
    e.verdict = Verdict::Dropped;
    e.reason = Some(reason.parse().unwrap());
    e.dropped_by = Some("netwatch".to_string());
    e
}

pub fn with_peer(mut e: FlowEntry, peer: &str) -> FlowEntry {
    e.peer = Some(peer.to_string());
    e
}

pub fn with_service(mut e: FlowEntry, service: &str) -> FlowEntry {
    e.service = Some(service.to_string());
    e
}

/// A summary of `n` idle flows, as the agent folds them.
pub fn summary(c: &str, net: &str, direction: &str, n: u64, bytes: u64) -> FlowEntry {
    let nowhere = ("0.0.0.0", 0);
    FlowEntry {
        schema_version: crate::flows::SCHEMA_VERSION,
        host: String::new(),
        src: None,
        dst: None,
        flows: n,
        ..flow(Some(c), Some(net), direction, nowhere, nowhere, "*", bytes)
    }
}

/// web on the network `front`, and a server outside it talks to.
const WEB: End<'static> = ("172.20.0.2", 40000);
const SERVER: End<'static> = ("203.0.113.5", 443);

/// web sends `bytes` to the server.
pub fn web_out(bytes: u64) -> FlowEntry {
    egress("web", "front", WEB, SERVER, bytes)
}

/// web receives `bytes` from the server.
pub fn web_in(bytes: u64) -> FlowEntry {
    ingress("web", "front", SERVER, WEB, bytes)
}

/// The host's gateway address on the `bridge` network.
pub const HOST_ADDR: &str = "172.17.0.1";

/// A compose shop on one host: web (frontend), api (frontend and backend),
/// db and cache (backend, internal), a monitor on the default bridge, an
/// uplink drop, and what Docker hosts carry besides (ARP, mDNS, idle flow
/// summaries).
pub fn shop() -> Vec<FlowEntry> {
    const WEB: &str = "172.20.0.2";
    const API_FRONT: &str = "172.20.0.3";
    const API_BACK: &str = "172.21.0.2";
    const DB: &str = "172.21.0.3";
    const CACHE: &str = "172.21.0.4";
    const MONITOR: &str = "172.17.0.5";
    let web = |e| with_service(e, "web");
    let api = |e| with_service(e, "api");
    let db = |e| with_service(e, "db");
    let cache = |e| with_service(e, "cache");
    let mut arp = flow(
        Some("shop-web-1"),
        Some("shop_frontend"),
        "egress",
        ("0.0.0.0", 0),
        ("0.0.0.0", 0),
        "arp/other",
        420,
    );
    arp.src = None;
    arp.dst = None;
    vec![
        // Clients reach web through its published port.
        web(ingress(
            "shop-web-1",
            "shop_frontend",
            ("198.51.100.23", 51234),
            (WEB, 80),
            180_000,
        )),
        web(egress(
            "shop-web-1",
            "shop_frontend",
            (WEB, 80),
            ("198.51.100.23", 51234),
            9_800_000,
        )),
        web(ingress(
            "shop-web-1",
            "shop_frontend",
            ("198.51.100.77", 40100),
            (WEB, 80),
            52_000,
        )),
        web(egress(
            "shop-web-1",
            "shop_frontend",
            (WEB, 80),
            ("198.51.100.77", 40100),
            2_100_000,
        )),
        // web → api, seen at both ends.
        web(with_peer(
            egress(
                "shop-web-1",
                "shop_frontend",
                (WEB, 43000),
                (API_FRONT, 8080),
                240_000,
            ),
            "shop-api-1",
        )),
        api(with_peer(
            ingress(
                "shop-api-1",
                "shop_frontend",
                (WEB, 43000),
                (API_FRONT, 8080),
                240_000,
            ),
            "shop-web-1",
        )),
        api(with_peer(
            egress(
                "shop-api-1",
                "shop_frontend",
                (API_FRONT, 8080),
                (WEB, 43000),
                7_600_000,
            ),
            "shop-web-1",
        )),
        web(with_peer(
            ingress(
                "shop-web-1",
                "shop_frontend",
                (API_FRONT, 8080),
                (WEB, 43000),
                7_600_000,
            ),
            "shop-api-1",
        )),
        // api → db and cache on the internal backend.
        api(with_peer(
            egress(
                "shop-api-1",
                "shop_backend",
                (API_BACK, 50500),
                (DB, 5432),
                310_000,
            ),
            "shop-db-1",
        )),
        db(with_peer(
            egress(
                "shop-db-1",
                "shop_backend",
                (DB, 5432),
                (API_BACK, 50500),
                5_300_000,
            ),
            "shop-api-1",
        )),
        api(with_peer(
            egress(
                "shop-api-1",
                "shop_backend",
                (API_BACK, 50600),
                (CACHE, 6379),
                44_000,
            ),
            "shop-cache-1",
        )),
        cache(with_peer(
            egress(
                "shop-cache-1",
                "shop_backend",
                (CACHE, 6379),
                (API_BACK, 50600),
                96_000,
            ),
            "shop-api-1",
        )),
        // What the internal network stops.
        db(dropped(
            egress(
                "shop-db-1",
                "shop_backend",
                (DB, 41000),
                ("203.0.113.10", 443),
                3_960,
            ),
            "not-in-network",
        )),
        db(dropped(
            flow(
                Some("shop-db-1"),
                Some("shop_backend"),
                "egress",
                (DB, 53001),
                ("172.21.0.1", 53),
                "udp",
                720,
            ),
            "host-access",
        )),
        cache(dropped(
            flow(
                Some("shop-cache-1"),
                Some("shop_backend"),
                "egress",
                (CACHE, 40000),
                ("198.51.100.53", 53),
                "udp",
                1_440,
            ),
            "not-in-network",
        )),
        cache(dropped(
            flow(
                Some("shop-cache-1"),
                Some("shop_backend"),
                "egress",
                ("fe80::42:acff:fe15:4", 5353),
                ("ff02::fb", 5353),
                "udp",
                2_300,
            ),
            "broadcast-multicast",
        )),
        // The monitor on the default bridge.
        egress(
            "monitor",
            "bridge",
            (MONITOR, 39000),
            ("203.0.113.140", 443),
            61_000,
        ),
        ingress(
            "monitor",
            "bridge",
            ("203.0.113.140", 443),
            (MONITOR, 39000),
            1_900_000,
        ),
        egress(
            "monitor",
            "bridge",
            (MONITOR, 39100),
            ("192.0.2.151", 443),
            12_000,
        ),
        ingress(
            "monitor",
            "bridge",
            ("192.0.2.151", 443),
            (MONITOR, 39100),
            350_000,
        ),
        egress(
            "monitor",
            "bridge",
            (MONITOR, 39200),
            (HOST_ADDR, 9100),
            8_000,
        ),
        ingress(
            "monitor",
            "bridge",
            (HOST_ADDR, 9100),
            (MONITOR, 39200),
            640_000,
        ),
        // The uplink shield: something outside aiming at the backend.
        shield_drop(("192.0.2.66", 55000), ("172.21.0.9", 22), 360),
        arp,
        web(summary(
            "shop-web-1",
            "shop_frontend",
            "egress",
            40,
            880_000,
        )),
    ]
}

/// The sample host's map: [`shop`]'s flows, `shop_backend` internal.
pub fn shop_graph() -> crate::render::Graph {
    let options = crate::render::GraphOptions {
        host_addrs: vec![HOST_ADDR.parse().unwrap()],
        internal_networks: ["shop_backend".to_string()].into(),
        title: Some("netwatch map · test host".into()),
        ..crate::render::GraphOptions::default()
    };
    crate::render::Graph::from_flows(&shop(), &options)
}
