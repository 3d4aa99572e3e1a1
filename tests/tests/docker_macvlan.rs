//! macvlan networks against real dockerd: the matrix of what a container on
//! an egress-denied macvlan network reaches, with Docker alone and with
//! netwatch (IPv4 and IPv6, TCP, UDP and ICMP), frames sent past the
//! container's own egress hook (`PACKET_QDISC_BYPASS`) with a forged source
//! address or MAC, enforcement after `kill -9` of the agent, drops logged
//! with names, a container with CAP_NET_ADMIN named unguarded, and the
//! flows of an observed macvlan network named.
//!
//! The LAN is the test's own ([`Lan`]): the parent is a veth whose peer is a
//! bridge in a router namespace, with a LAN host beside it and a namespace
//! beyond the router. Routes are checked before anything is sent.

use std::{net::IpAddr, process::Command, time::Duration};

use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{TestContainer, TestNetwork, require_dockerd},
    fixture::require_root,
    lan::Lan,
    packets::Frame,
    rawframe::{Forged, assert_forged},
    reach::{
        Listeners, Netns, Outcome, PathCheck, Probe, assert_paths, assert_route_via, probe_all,
    },
};
use serde_json::Value;

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");
/// Where every listener listens.
const PORT: u16 = 4711;
/// A probe that gets no answer within this is blocked.
const TIMEOUT: Duration = Duration::from_millis(800);

/// A container's address on the macvlan network.
fn address(container: &TestContainer, network: &TestNetwork, field: &str) -> IpAddr {
    container
        .endpoint_field(network, field)
        .parse()
        .unwrap_or_else(|e| panic!("{field} of {}: {e}", container.name))
}

/// Waits until the container's IPv6 addresses are usable (duplicate address
/// detection over): a probe sent before would fail with Docker alone too.
fn wait_for_ipv6(ns: &Netns) {
    wait_for(
        "IPv6 duplicate address detection",
        Duration::from_secs(10),
        || {
            let out = ns.run_ok("ip", &["-6", "addr", "show", "dev", "eth0"]);
            !out.contains("tentative")
        },
    );
}

/// A path of the matrix: probes of every protocol from `from` to `to`.
struct Path {
    name: &'static str,
    from: Netns,
    to: Vec<IpAddr>,
}

/// Asserts each path is all open or all blocked as `open` says. Blocked
/// means no answer (a timeout: the path exists), or a send the kernel
/// refused with ENOBUFS: a drop on the macvlan parent's egress hook happens
/// on the sender's own transmit path, and a datagram socket's send then
/// fails so (measured: ICMPv6 echoes). A path without a route, or a refused
/// connection, is never taken for a block.
fn assert_matrix(state: &str, paths: &[Path], open: &[bool]) {
    let checks: Vec<PathCheck> = paths
        .iter()
        .zip(open)
        .map(|(path, &open)| PathCheck::every_protocol(path.name, &path.from, &path.to, PORT, open))
        .collect();
    assert_paths(state, &checks, TIMEOUT, |why| {
        why.starts_with("timeout") || why.contains("os error 105")
    });
}

/// A macvlan network on `lan`'s parent and subnets, with `extra` options.
fn macvlan_network(lan: &Lan, what: &str, extra: &[&str]) -> TestNetwork {
    let parent = format!("parent={}", lan.parent);
    let subnets = lan.subnet_args();
    let mut options = vec!["-d", "macvlan", "-o", &parent];
    options.extend(extra);
    options.extend(subnets.iter().map(String::as_str));
    TestNetwork::create(what, &options)
}

fn networks_json(agent: &AgentProcess, name: &str) -> Value {
    let out = agent.netwatch(&["networks", "-o", "json", name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    list[0].clone()
}

#[test]
fn an_egress_denied_macvlan_network_holds_against_routes_forged_frames_and_kill_9() {
    require_root();
    require_dockerd();
    let lan = Lan::create();
    let network = macvlan_network(&lan, "mv-deny", &["--label", "netwatch.egress=deny"]);
    let a = TestContainer::run("mv-a", &["--network", &network.name]);
    let b = TestContainer::run("mv-b", &["--network", &network.name]);
    let (a_ns, b_ns) = (Netns::of_pid(a.pid()), Netns::of_pid(b.pid()));
    wait_for_ipv6(&a_ns);
    wait_for_ipv6(&b_ns);
    let a_ips = [
        address(&a, &network, "IPAddress"),
        address(&a, &network, "GlobalIPv6Address"),
    ];
    let b_ips = [
        address(&b, &network, "IPAddress"),
        address(&b, &network, "GlobalIPv6Address"),
    ];
    let router = [lan.v4(1).into(), lan.v6(1).into()];
    let lan_host = [lan.v4(50).into(), lan.v6(0x50).into()];
    let beyond = [Lan::BEYOND_V4.into(), Lan::BEYOND_V6.into()];
    // Everything the container is about to send goes out of its eth0, to
    // the test's own LAN (and from there only to the test's namespaces).
    for dst in b_ips.iter().chain(&router).chain(&lan_host).chain(&beyond) {
        assert_route_via(&a_ns, *dst, &["eth0"]);
    }
    let _listen = [
        Listeners::start(&b_ns, &b_ips, PORT),
        Listeners::start(&a_ns, &a_ips, PORT),
        Listeners::start(lan.router(), &router, PORT),
        Listeners::start(lan.beyond(), &beyond, PORT),
    ];
    let lan_host_listener = Listeners::start(lan.host(), &lan_host, PORT);
    let beyond_listener = Listeners::start(lan.beyond(), &[Lan::BEYOND_V4.into()], PORT + 1);
    let paths = [
        Path {
            name: "container → sibling on the network",
            from: a_ns.clone(),
            to: b_ips.to_vec(),
        },
        Path {
            name: "container → LAN host in the subnet",
            from: a_ns.clone(),
            to: lan_host.to_vec(),
        },
        Path {
            name: "LAN host → container",
            from: lan.host().clone(),
            to: a_ips.to_vec(),
        },
        Path {
            name: "container → the LAN's router (its gateway)",
            from: a_ns.clone(),
            to: router.to_vec(),
        },
        Path {
            name: "container → beyond the router",
            from: a_ns.clone(),
            to: beyond.to_vec(),
        },
        Path {
            name: "beyond the router → container",
            from: lan.beyond().clone(),
            to: a_ips.to_vec(),
        },
    ];
    let IpAddr::V4(a_v4) = a_ips[0] else {
        unreachable!()
    };
    let a_mac = a.endpoint_field(&network, "MacAddress");
    let a_mac: [u8; 6] = parse_mac(&a_mac);
    let udp = |src_mac: [u8; 6], dst_mac: [u8; 6], src, dst, port| {
        Frame::eth(src_mac, dst_mac)
            .ipv4(src, dst)
            .udp(40000, port)
            .payload(b"nwforged")
            .build()
    };
    let forged = [
        Forged {
            what: "to the LAN host, another source address",
            frame: udp(a_mac, lan.host_mac(), lan.v4(77), lan.v4(50), PORT),
            lands_at: &lan_host_listener,
        },
        Forged {
            what: "to the LAN host, another source MAC",
            frame: udp(
                [0x06, 1, 2, 3, 4, 5],
                lan.host_mac(),
                a_v4,
                lan.v4(50),
                PORT,
            ),
            lands_at: &lan_host_listener,
        },
        Forged {
            what: "beyond the router",
            frame: udp(a_mac, lan.router_mac(), a_v4, Lan::BEYOND_V4, PORT + 1),
            lands_at: &beyond_listener,
        },
    ];

    // Docker alone: every path is open, and so is every forged frame.
    assert_matrix("Docker alone", &paths, &[true; 6]);
    assert_forged("Docker alone", &a_ns, "eth0", &forged, TIMEOUT, true);

    // netwatch: the container keeps its network and the LAN's subnet, and
    // loses the router and everything beyond it, both ways.
    let mut agent = AgentProcess::start(NETWATCH, &[&network.name]);
    wait_for(
        "the macvlan network enforced",
        Duration::from_secs(20),
        || networks_json(&agent, &network.name)["mode"] == "enforced",
    );
    let open = [true, true, true, false, false, false];
    assert_matrix("netwatch", &paths, &open);
    assert_forged("netwatch", &a_ns, "eth0", &forged, TIMEOUT, false);
    wait_for(
        "the drop records in the log",
        Duration::from_secs(5),
        || {
            let log = agent.log();
            log.contains(&format!(
                "drop container={} network={} interface=eth0 direction=egress",
                a.name, network.name
            )) && log.contains("reason=not-in-network")
                && log.contains("reason=spoofed-mac")
        },
    );

    // kill -9: the pins keep holding.
    agent.kill();
    assert_matrix("netwatch killed", &paths, &open);
}

fn parse_mac(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).unwrap_or_else(|e| panic!("MAC {text:?}: {e}"));
    }
    mac
}

#[test]
fn an_internal_macvlan_network_keeps_the_lan_but_not_its_router() {
    require_root();
    require_dockerd();
    let lan = Lan::create();
    let network = macvlan_network(&lan, "mv-int", &["--internal"]);
    let a = TestContainer::run("mv-ia", &["--network", &network.name]);
    let a_ns = Netns::of_pid(a.pid());
    wait_for_ipv6(&a_ns);
    let router = [lan.v4(1).into(), lan.v6(1).into()];
    let lan_host = [lan.v4(50).into(), lan.v6(0x50).into()];
    for dst in router.iter().chain(&lan_host) {
        assert_route_via(&a_ns, *dst, &["eth0"]);
    }
    let _listen = [
        Listeners::start(lan.router(), &router, PORT),
        Listeners::start(lan.host(), &lan_host, PORT),
    ];
    let paths = [
        Path {
            name: "container → LAN host",
            from: a_ns.clone(),
            to: lan_host.to_vec(),
        },
        Path {
            name: "container → the LAN's router",
            from: a_ns.clone(),
            to: router.to_vec(),
        },
    ];
    // Docker's internal macvlan network only takes the default route away:
    // the router answers on the LAN.
    assert_matrix("Docker alone", &paths, &[true, true]);
    let agent = AgentProcess::start(NETWATCH, &[&network.name]);
    wait_for(
        "the macvlan network enforced",
        Duration::from_secs(20),
        || networks_json(&agent, &network.name)["mode"] == "enforced",
    );
    assert_matrix("netwatch", &paths, &[true, false]);
}

#[test]
fn a_net_admin_container_on_a_guarded_macvlan_network_is_named_unguarded() {
    require_root();
    require_dockerd();
    let lan = Lan::create();
    let network = macvlan_network(&lan, "mv-na", &["--internal"]);
    let plain = TestContainer::run("mv-plain", &["--network", &network.name]);
    let admin = TestContainer::run(
        "mv-admin",
        &["--network", &network.name, "--cap-add", "NET_ADMIN"],
    );
    let agent = AgentProcess::start(NETWATCH, &[&network.name]);
    let endpoint_mode = |json: &Value, container: &str| -> (String, String) {
        let endpoint = json["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .find(|e| e["container"] == container)
            .unwrap_or_else(|| panic!("{container} not listed: {json}"));
        (
            endpoint["mode"].as_str().unwrap_or_default().to_owned(),
            endpoint["why"].as_str().unwrap_or_default().to_owned(),
        )
    };
    wait_for(
        "the plain container enforced",
        Duration::from_secs(20),
        || endpoint_mode(&networks_json(&agent, &network.name), &plain.name).0 == "enforced",
    );
    let json = networks_json(&agent, &network.name);
    let (mode, why) = endpoint_mode(&json, &admin.name);
    assert_eq!(mode, "unguarded", "{json}");
    assert!(
        why.starts_with("the container has CAP_NET_ADMIN: "),
        "{why}"
    );
    assert_eq!(json["mode"], "unguarded", "{json}");
    let out = agent.netwatch(&["status", "--network", &network.name]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains(&format!(
            "endpoint of {} on {} (macvlan): the container has CAP_NET_ADMIN",
            admin.name, network.name
        )),
        "{text}"
    );

    // What NET_ADMIN allows: a second port on the same parent, with a MAC
    // netwatch does not know. What it sends towards the LAN is still
    // dropped on the parent (a container's frame with an unknown MAC).
    let admin_ns = Netns::of_pid(admin.pid());
    let lan_host: IpAddr = lan.v4(50).into();
    let _listen = Listeners::start(lan.host(), &[lan_host], PORT);
    assert_route_via(&admin_ns, lan_host, &["eth0"]);
    let through = |what: &str| {
        probe_all(&[Probe::tcp(&admin_ns, lan_host, PORT)], TIMEOUT)
            .pop()
            .map(|o| (what.to_owned(), o))
    };
    let (what, outcome) = through("eth0").unwrap();
    assert!(outcome.reached(), "{what}: {outcome}");
    let eth1 = format!("{}/24", lan.v4(61));
    admin_ns.run_ok(
        "ip",
        &[
            "link", "add", "link", "eth0", "name", "eth1", "type", "macvlan", "mode", "bridge",
        ],
    );
    admin_ns.run_ok("ip", &["addr", "add", &eth1, "dev", "eth1"]);
    admin_ns.run_ok("ip", &["link", "set", "eth1", "up"]);
    admin_ns.run_ok(
        "ip",
        &["route", "add", &format!("{lan_host}/32"), "dev", "eth1"],
    );
    assert_route_via(&admin_ns, lan_host, &["eth1"]);
    let (what, outcome) = through("a port of its own").unwrap();
    assert!(
        matches!(&outcome, Outcome::Blocked(why) if why.starts_with("timeout") || why.contains("os error 105")),
        "{what}: {outcome}"
    );
    wait_for(
        "the drop of the unknown MAC, logged",
        Duration::from_secs(5),
        || {
            agent.log().contains(&format!(
                "interface={} direction=egress proto=tcp src={}",
                lan.parent,
                lan.v4(61)
            )) && agent.log().contains("reason=spoofed-mac")
        },
    );
}

#[test]
fn flows_on_an_observed_macvlan_network_are_named() {
    require_root();
    require_dockerd();
    let lan = Lan::create();
    let network = macvlan_network(&lan, "mv-obs", &[]);
    let a = TestContainer::run("mv-oa", &["--network", &network.name]);
    let b = TestContainer::run("mv-ob", &["--network", &network.name]);
    let (a_ns, b_ns) = (Netns::of_pid(a.pid()), Netns::of_pid(b.pid()));
    let b_v4 = address(&b, &network, "IPAddress");
    let lan_host: IpAddr = lan.v4(50).into();
    for dst in [b_v4, lan_host] {
        assert_route_via(&a_ns, dst, &["eth0"]);
    }
    let _listen = [
        Listeners::start(&b_ns, &[b_v4], PORT),
        Listeners::start(lan.host(), &[lan_host], PORT),
    ];
    let agent = AgentProcess::start(NETWATCH, &[&network.name]);
    wait_for(
        "the macvlan network observed",
        Duration::from_secs(20),
        || networks_json(&agent, &network.name)["mode"] == "observed",
    );
    let outcomes = probe_all(
        &[
            Probe::tcp(&a_ns, b_v4, PORT),
            Probe::tcp(&a_ns, lan_host, PORT),
        ],
        TIMEOUT,
    );
    assert!(outcomes.iter().all(Outcome::reached), "{outcomes:?}");
    let flows = || agent.flows_json(&["--proto", "tcp"]);
    let has =
        |flows: &[Value], container: &str, direction: &str, dst: IpAddr, peer: Option<&str>| {
            flows.iter().any(|f| {
                f["container"] == container
                    && f["network"] == network.name.as_str()
                    && f["direction"] == direction
                    && f["dst"] == dst.to_string()
                    && f["dst_port"] == PORT
                    && f["verdict"] == "forwarded"
                    && peer.is_none_or(|p| f["peer"] == p)
            })
        };
    wait_for("the flows, named", Duration::from_secs(10), || {
        let flows = flows();
        has(&flows, &a.name, "egress", b_v4, Some(&b.name))
            && has(&flows, &b.name, "ingress", b_v4, Some(&a.name))
            && has(&flows, &a.name, "egress", lan_host, None)
    });
}

#[test]
fn netwatch_allow_opens_one_port_beyond_the_router_on_macvlan() {
    require_root();
    require_dockerd();
    let lan = Lan::create();
    let allow = format!("netwatch.allow={}:{PORT}/tcp", Lan::BEYOND_V4);
    let network = macvlan_network(
        &lan,
        "mv-allow",
        &["--label", "netwatch.egress=deny", "--label", &allow],
    );
    let a = TestContainer::run("mv-aa", &["--network", &network.name]);
    let a_ns = Netns::of_pid(a.pid());
    let beyond: IpAddr = Lan::BEYOND_V4.into();
    assert_route_via(&a_ns, beyond, &["eth0"]);
    let _listen = Listeners::start(lan.beyond(), &[beyond], PORT);
    let probes = [
        Probe::tcp(&a_ns, beyond, PORT),
        Probe::udp(&a_ns, beyond, PORT),
        Probe::icmp(&a_ns, beyond),
    ];
    let reached = || -> Vec<bool> {
        probe_all(&probes, TIMEOUT)
            .iter()
            .map(Outcome::reached)
            .collect()
    };
    assert_eq!(reached(), [true, true, true], "Docker alone");
    let agent = AgentProcess::start(NETWATCH, &[&network.name]);
    wait_for(
        "the macvlan network enforced",
        Duration::from_secs(20),
        || networks_json(&agent, &network.name)["mode"] == "enforced",
    );
    assert_eq!(
        reached(),
        [true, false, false],
        "only the allow-listed TCP port beyond the router"
    );

    // `explain` follows the same packets through the macvlan hooks, and the
    // kernel's programs agree with the model on each.
    let b = TestContainer::run("mv-ab", &["--network", &network.name]);
    let explain = |to: &str| -> String {
        let out = Command::new(NETWATCH)
            .args(["explain", &a.name, to, "--from-kernel", "--pin-root"])
            .arg(agent.pin_root())
            .output()
            .expect("run netwatch explain");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.contains("agrees") && !text.contains("disagrees"),
            "explain {to}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let parent_hop = format!(
        "macvlan-parent {} ({} on {})",
        lan.parent, a.name, network.name
    );
    let allowed = explain(&format!("{beyond}:{PORT}/tcp"));
    assert!(
        allowed.contains(&format!(
            "{parent_hop}: forwarded — allowed by the netwatch.allow rule"
        )),
        "{allowed}"
    );
    let denied = explain(&format!("{beyond}:{PORT}/udp"));
    assert!(
        denied.contains(&format!("{parent_hop}: dropped (not-in-network)")),
        "{denied}"
    );
    let router = explain(&lan.v4(1).to_string());
    assert!(router.contains("the LAN's router"), "{router}");
    let sibling = explain(&format!("{}:{PORT}/tcp", b.name));
    assert!(
        sibling.contains(&format!(
            "macvlan-child eth0 (in {}) ({} on {}): forwarded",
            b.name, a.name, network.name
        )),
        "a sibling's frames are judged on the receiver's hook: {sibling}"
    );
}

#[test]
fn a_macvlan_containers_first_packets_are_held_on_its_parent() {
    require_root();
    require_dockerd();
    let lan = Lan::create();
    let network = macvlan_network(&lan, "mv-first", &["--label", "netwatch.egress=deny"]);
    let beyond = Lan::BEYOND_V4.to_string();
    // The container's first act is a ping beyond the router: its child is
    // not attached yet, nor its MAC known; the parent must hold it.
    // (exit status, stdout, stderr) of a container that only pings.
    let first_ping = |what: &str| {
        let name = netwatch_tests::docker::unique_name(what);
        let out = netwatch_tests::docker::docker_command()
            .args(["run", "--rm", "--name", &name, "--network", &network.name])
            .args([
                netwatch_tests::docker::TEST_IMAGE,
                "ping",
                "-c",
                "3",
                "-W",
                "1",
            ])
            .arg(&beyond)
            .output()
            .expect("run docker");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let alone = first_ping("mv-alone");
    assert!(
        alone.0 == Some(0) && alone.1.contains("3 packets received"),
        "Docker alone: a new container's pings beyond the router are answered: {alone:?}"
    );
    let agent = AgentProcess::start(NETWATCH, &[&network.name]);
    let parent = nix::net::if_::if_nametoindex(lan.parent.as_str()).expect("the parent");
    wait_for("the parent attached", Duration::from_secs(20), || {
        netwatch::datapath::pins::parent_attached(agent.pin_root(), parent)
    });
    let first = first_ping("mv-first");
    // No answer: either nothing came back, or the parent's drop failed the
    // send (ENOBUFS, busybox says so and stops); never an error of another
    // kind.
    let (code, stdout, stderr) = &first;
    assert!(
        *code == Some(1)
            && (stdout.contains(" 0 packets received")
                || stderr.contains("No buffer space available")),
        "with netwatch, a ping sent at start got an answer (or failed otherwise): {first:?}"
    );
}
