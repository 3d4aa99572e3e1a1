//! A container on an internal network that tries to get out: malformed
//! frames from a raw socket, and — with CAP_NET_ADMIN — routes of its own,
//! spoofed source addresses and a spoofed MAC. With netwatch enforcing,
//! nothing it sends arrives anywhere it may not.
//!
//! Traffic goes only to the test's own containers, their network's gateway
//! and the test's own "outside" namespace (203.0.113.7, routed through the
//! host; checked with `ip route get` before anything is sent).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use netwatch::{
    datapath::pins,
    endpoint::{MacAddr, host_veth},
};
use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    corpus::malformed_corpus,
    docker::{TestContainer, TestNetwork, docker, require_dockerd},
    fixture::require_root,
    hostfw::IptablesState,
    outside::OutsideLink,
    packets::{Frame, Mac},
    rawframe::PacketSocket,
    reach::{Listeners, Netns, assert_route_via, snmp},
};

const AGENT: &str = env!("CARGO_BIN_EXE_netwatch-under-test");
const SETTLE: Duration = Duration::from_secs(10);

fn mac(container: &TestContainer, network: &TestNetwork) -> Mac {
    let mac: MacAddr = container
        .endpoint_field(network, "MacAddress")
        .parse()
        .unwrap();
    mac.0
}

fn ipv4(container: &TestContainer, network: &TestNetwork) -> Ipv4Addr {
    container
        .endpoint_field(network, "IPAddress")
        .parse()
        .unwrap()
}

/// Starts an agent for `network` and waits until both containers' veths
/// carry netwatch.
fn enforcing(network: &TestNetwork, containers: &[&TestContainer]) -> AgentProcess {
    let agent = AgentProcess::start(AGENT, &[&network.name]);
    let root = agent.pin_root().to_path_buf();
    let veths: Vec<u32> = containers
        .iter()
        .map(|c| {
            host_veth(c.pid(), MacAddr(mac(c, network)))
                .unwrap()
                .ifindex
        })
        .collect();
    wait_for("the containers' veths attached", SETTLE, || {
        veths.iter().all(|v| pins::veth_attached(&root, *v))
    });
    agent
}

#[test]
fn malformed_frames_from_a_containers_raw_socket_never_reach_its_peer() {
    require_root();
    require_dockerd();
    let net = TestNetwork::create("int", &["--internal"]);
    let attacker = TestContainer::run("attacker", &["--network", &net.name]);
    let peer = TestContainer::run("peer", &["--network", &net.name]);
    let _agent = enforcing(&net, &[&attacker, &peer]);
    let (attacker_mac, peer_mac) = (mac(&attacker, &net), mac(&peer, &net));
    let (attacker_ip, peer_ip) = (ipv4(&attacker, &net), ipv4(&peer, &net));
    let send = Netns::of_pid(attacker.pid())
        .run(|| PacketSocket::bind("eth0"))
        .expect("a packet socket on the attacker's eth0");
    let watch = Netns::of_pid(peer.pid())
        .run(|| PacketSocket::bind("eth0"))
        .expect("a packet socket on the peer's eth0");

    // The watch sees what does pass: a well-formed datagram to the peer.
    const MARK: &[u8] = b"netwatch-hostile-control";
    let control = Frame::eth(attacker_mac, peer_mac)
        .ipv4(attacker_ip, peer_ip)
        .udp(40000, 9)
        .payload(MARK)
        .build();
    send.send(&control).expect("send the control frame");
    assert!(
        watch.wait_for(Duration::from_secs(2), |f| f.ends_with(MARK)),
        "a well-formed frame from the attacker never reached the peer: the watch is blind"
    );

    // Every malformed frame, addressed to the peer's MAC, from the
    // attacker's own addresses (so that nothing but the malformation is
    // wrong with it).
    let mut corpus = malformed_corpus(attacker_mac, attacker_ip, Ipv6Addr::LOCALHOST);
    for (_, frame) in &mut corpus {
        if frame.len() >= 6 {
            frame[..6].copy_from_slice(&peer_mac);
        }
    }
    let mut sent = 0;
    let mut refused = 0;
    for (_, frame) in &corpus {
        match send.send(frame) {
            Ok(_) => sent += 1,
            // Runts shorter than an Ethernet header: the kernel refuses
            // them before any hook.
            Err(_) => refused += 1,
        }
    }
    eprintln!(
        "{} malformed frames: {sent} sent, {refused} refused by the kernel",
        corpus.len()
    );
    assert!(sent > 1000, "most of the corpus goes out: {sent}");
    let arrived: Vec<Vec<u8>> = watch
        .received_until(Instant::now() + Duration::from_secs(1))
        .into_iter()
        // Unicast from the attacker to the peer: the attacker sends no such
        // frame of its own (it never talks to the peer), so any is ours.
        .filter(|f| f.len() >= 12 && f[..6] == peer_mac && f[6..12] == attacker_mac)
        .filter(|f| !f.ends_with(MARK))
        .collect();
    let names: Vec<&str> = arrived
        .iter()
        .filter_map(|f| {
            corpus
                .iter()
                .find(|(_, c)| c == f)
                .map(|(name, _)| name.as_str())
        })
        .collect();
    assert!(
        arrived.is_empty(),
        "{} malformed frames reached the peer (known: {names:?}); first: {:02x?}",
        arrived.len(),
        arrived.first()
    );
}

/// Runs a shell command in `container`; its output whatever the status.
fn sh(container: &TestContainer, script: &str) -> String {
    match docker(&["exec", &container.name, "sh", "-c", script]) {
        Ok(out) | Err(out) => out,
    }
}

/// Echo requests and TCP connections (handshakes completed) that arrived
/// in the outside namespace.
const ARRIVED: [(&str, &str); 2] = [("Icmp", "InEchos"), ("Tcp", "PassiveOpens")];

/// Everything an attacker with CAP_NET_ADMIN tries, each a way out: its
/// own route to the outside through the gateway, a source address from the
/// outside's range, the peer's address as its source (a route `src`, so
/// that every tool uses it), and a spoofed MAC. Each way sends an ICMP echo
/// and a TCP connection attempt to the outside (busybox `nc` has no UDP;
/// the reachability matrix covers UDP).
fn escape_attempts(outside: Ipv4Addr, gateway: Ipv4Addr, peer: Ipv4Addr, port: u16) -> String {
    let send = format!("ping -c 1 -W 1 {outside}; echo escape | nc -w 1 {outside} {port}; ");
    let route = |src: &str| format!("ip route replace 203.0.113.0/24 via {gateway}{src}; ");
    [
        format!("{}{send}", route("")),
        format!(
            "ip addr add 203.0.113.99/32 dev eth0; {}{send}",
            route(" src 203.0.113.99")
        ),
        format!(
            "ip addr add {peer}/32 dev eth0; {}{send}",
            route(&format!(" src {peer}"))
        ),
        format!(
            "ip route del 203.0.113.0/24; ip link set eth0 down; \
             ip link set eth0 address 02:42:de:ad:be:ef; ip link set eth0 up; \
             ip route add default via {gateway}; {}{send}",
            route("")
        ),
    ]
    .join("")
}

#[test]
fn a_container_with_net_admin_cannot_spoof_or_route_its_way_out_of_an_internal_network() {
    require_root();
    require_dockerd();
    let net = TestNetwork::create("int", &["--internal"]);
    let peer = TestContainer::run("peer", &["--network", &net.name]);
    let attacker =
        |what: &str| TestContainer::run(what, &["--network", &net.name, "--cap-add", "NET_ADMIN"]);
    let gateway: Ipv4Addr = peer.endpoint_field(&net, "Gateway").parse().unwrap();
    let subnet = netwatch_tests::docker::docker_ok(&[
        "network",
        "inspect",
        "--format",
        "{{(index .IPAM.Config 0).Subnet}}",
        &net.id,
    ]);
    let peer_ip = ipv4(&peer, &net);

    // Without Docker's isolation rules (a firewall reload, an admin's
    // flush), an internal network is open to the outside: the attempts
    // below get out unless netwatch holds.
    let firewall = IptablesState::save();
    firewall.flush_docker_isolation();
    firewall.forward_policy_accept();
    let outside = OutsideLink::create();
    outside.add_route_via_host(&subnet);
    const PORT: u16 = 7707;
    let listeners = Listeners::start(
        outside.netns(),
        &[IpAddr::V4(OutsideLink::OUTSIDE_IP)],
        PORT,
    );
    let counts = || ARRIVED.map(|counter| snmp(outside.netns(), counter));
    let since = |before: [u64; 2]| {
        let now = counts();
        [now[0] - before[0], now[1] - before[1]]
    };

    // Without netwatch: the attempts of a first attacker get out, so the
    // test can tell.
    let before = attacker("before");
    let before_ns = Netns::of_pid(before.pid());
    let start = counts();
    sh(
        &before,
        &format!("ip route add 203.0.113.0/24 via {gateway}"),
    );
    assert_route_via(&before_ns, IpAddr::V4(OutsideLink::OUTSIDE_IP), &["eth0"]);
    sh(
        &before,
        &escape_attempts(OutsideLink::OUTSIDE_IP, gateway, peer_ip, PORT),
    );
    let [echo, syn] = since(start);
    // Every way gets its echo request out; not every handshake can finish
    // (the outside answers a spoofed source where that source really is).
    assert!(
        echo >= 4 && syn >= 1,
        "without netwatch every way should get out (echo requests {echo} of 4, connections {syn})"
    );
    drop(listeners);

    // With netwatch: a second attacker, the same attempts, nothing out.
    let target = attacker("target");
    let agent = enforcing(&net, &[&target, &peer]);
    let listeners = Listeners::start(
        outside.netns(),
        &[IpAddr::V4(OutsideLink::OUTSIDE_IP)],
        PORT,
    );
    let target_ns = Netns::of_pid(target.pid());
    let start = counts();
    sh(
        &target,
        &format!("ip route add 203.0.113.0/24 via {gateway}"),
    );
    assert_route_via(&target_ns, IpAddr::V4(OutsideLink::OUTSIDE_IP), &["eth0"]);
    let transcript = sh(
        &target,
        &escape_attempts(OutsideLink::OUTSIDE_IP, gateway, peer_ip, PORT),
    );
    // Late packets (retransmitted SYNs) have a moment to arrive.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        (since(start), listeners.tcp_accepted()),
        ([0, 0], 0),
        "something got out of the internal network ([echo requests, connections], accepted):\n{transcript}\nagent log:\n{}",
        agent.log()
    );
    let log = agent.log();
    for reason in ["not-in-network", "spoofed-source", "spoofed-mac"] {
        let attacker_field = format!("container={} ", target.name);
        let reason_field = format!("reason={reason} ");
        assert!(
            log.lines()
                .any(|l| l.contains(&attacker_field) && l.contains(&reason_field)),
            "no drop record with reason {reason} for the attacker in:\n{log}"
        );
    }
}
