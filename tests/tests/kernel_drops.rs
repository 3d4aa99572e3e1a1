//! The kernel drop program (`kernel_drops` on `kfree_skb`), on the kernel,
//! without Docker: the kernel's own drops of a guarded address's packets
//! are recorded with the kernel's reason; drops of other packets are not.

use std::{
    net::{Ipv4Addr, UdpSocket},
    time::{Duration, Instant},
};

use netwatch::{
    datapath::{Datapath, LoadOptions, read_kernel_layout},
    policy::compile,
};
use netwatch_common::{
    flow::family,
    kdrop::{KernelDropConfig, KernelDropEvent},
    packet::IPPROTO_UDP,
};
use netwatch_tests::{
    fixture::{endpoint_spec, require_root},
    netns::TestHost,
};

/// Sends one UDP datagram from namespace `ns` to `dst:port` (a closed port:
/// the receiving kernel drops it with `NO_SOCKET`). `dst` is on the
/// namespace's own /24, which the test created. Always from port 40123, so
/// that repeated datagrams share a rate-limiting key.
fn udp_from(host: &TestHost, ns: &str, dst: Ipv4Addr, port: u16) {
    assert_eq!(dst.octets()[..3], [10, 231, host.subnet], "not ours: {dst}");
    host.in_ns(ns, || {
        let socket = UdpSocket::bind("0.0.0.0:40123").expect("udp socket");
        socket.send_to(b"netwatch", (dst, port)).expect("send");
    });
}

/// Drains the kernel drop records for up to `wait`, until one matches.
fn drain_until(
    datapath: &mut Datapath,
    wait: Duration,
    mut wanted: impl FnMut(&KernelDropEvent) -> bool,
) -> Vec<KernelDropEvent> {
    let start = Instant::now();
    let mut all = Vec::new();
    loop {
        let (events, malformed) = datapath.drain_kernel_drops().expect("drain");
        assert_eq!(malformed, 0);
        all.extend(events);
        if all.iter().any(&mut wanted) || start.elapsed() > wait {
            return all;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_guarded_addresses_packet_dropped_for_no_socket_is_recorded_with_the_kernels_reason() {
    require_root();
    let (layout, reasons) = read_kernel_layout().expect("the kernel's BTF");
    // The program reads protocol, network_header and head with one helper
    // call where they lie close together (Linux 6.18); the event below
    // proves that path read them right.
    assert_eq!(
        layout.enabled,
        KernelDropConfig::ENABLED_SPAN,
        "sk_buff's protocol, network_header and head ({}, {}, {}) do not fit one span",
        layout.skb_protocol,
        layout.skb_network_header,
        layout.skb_head
    );
    let no_socket = (0..200u32)
        .find(|v| reasons.name(*v).to_string() == "kernel:no_socket")
        .expect("the kernel names NO_SOCKET");
    let host = TestHost::create();
    let mut spec = endpoint_spec(0);
    spec.ifindex = 4242;
    spec.policy.ipv4 = host.container_ip().octets();
    let tables = compile(&[spec], &[]).expect("compiles");
    let mut datapath = Datapath::load(&LoadOptions::default()).expect("programs load");
    datapath.apply(&tables).expect("maps");
    datapath.attach_kernel_drops().expect("attach kfree_skb");
    assert!(datapath.kernel_drops_attached());

    // Unguarded both ways: the gateway drops a datagram from the peer.
    udp_from(&host, &host.peer_ns(), host.gateway(), 9);
    // Guarded destination: the container drops one from the peer.
    udp_from(&host, &host.peer_ns(), host.container_ip(), 9);
    let is_ours = |e: &KernelDropEvent| {
        e.dst_endpoint == 4242 && e.key.reason == no_socket && e.key.proto == IPPROTO_UDP
    };
    let events = drain_until(&mut datapath, Duration::from_secs(3), is_ours);
    let ours: Vec<&KernelDropEvent> = events.iter().filter(|e| is_ours(e)).collect();
    assert_eq!(ours.len(), 1, "{events:#?}");
    let event = ours[0];
    assert_eq!(event.key.family, family::IPV4);
    assert_eq!(event.key.src[..4], host.peer_ip().octets());
    assert_eq!(event.key.dst[..4], host.container_ip().octets());
    assert_eq!((event.key.dst_port, event.src_endpoint), (9, 0));
    assert_eq!(event.packets, 1);
    // The IP packet: 20 + 8 + 8 bytes.
    assert_eq!(event.bytes, 36, "{event:?}");
    assert_ne!(event.location, 0);
    // Read only when a record is due: the interface the container's kernel
    // dropped it on, its own eth0.
    let container_eth0 = host.in_ns(&host.container_ns(), || {
        nix::net::if_::if_nametoindex("eth0").expect("the container's eth0")
    });
    assert_eq!(event.dev_ifindex, container_eth0, "{event:?}");
    assert!(
        events
            .iter()
            .all(|e| e.key.dst[..4] != host.gateway().octets()),
        "a drop between unguarded addresses was recorded: {events:#?}"
    );

    // Rate-limited per key: a second drop within the report interval is
    // counted, not recorded; the next record carries both.
    udp_from(&host, &host.peer_ns(), host.container_ip(), 9);
    std::thread::sleep(Duration::from_millis(300));
    let again = drain_until(&mut datapath, Duration::ZERO, is_ours);
    assert!(again.iter().all(|e| !is_ours(e)), "{again:#?}");
    std::thread::sleep(Duration::from_millis(800));
    udp_from(&host, &host.peer_ns(), host.container_ip(), 9);
    let later = drain_until(&mut datapath, Duration::from_secs(3), is_ours);
    let counted: Vec<u64> = later
        .iter()
        .filter(|e| is_ours(e))
        .map(|e| e.packets)
        .collect();
    assert_eq!(counted, vec![3], "{later:#?}");

    // Detached: nothing more.
    datapath.detach_kernel_drops().expect("detach");
    std::thread::sleep(Duration::from_millis(1100));
    udp_from(&host, &host.peer_ns(), host.container_ip(), 10);
    let after = drain_until(&mut datapath, Duration::from_millis(500), |_| false);
    assert!(after.is_empty(), "{after:#?}");
}
