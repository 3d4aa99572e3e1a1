//! From the first packet: the agent attaches to a container's veth as the
//! kernel announces it (before the container runs), and after a reboot it
//! guards the bridges and veths of its saved plan while dockerd restores
//! `--restart always` containers, long before dockerd's API answers.
//!
//! Every block is shown next to its control: the same probe, in the same
//! host state, gets through with Docker alone.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Mutex,
    time::Duration,
};

use netwatch::datapath::{detach_all, pinned};
use netwatch_common::reason::DropReason;
use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{TestContainer, TestNetwork, require_dockerd},
    dockerd::PrivateDockerd,
    hostfw::IptablesState,
    outside::OutsideLink,
    reach::Listeners,
    start_window::{HostListener, probe_start, probe_start_enforced},
};

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");

/// The tests here switch the process-wide Docker daemon
/// ([`PrivateDockerd::activate`]): one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn gateway(network: &TestNetwork) -> Ipv4Addr {
    network
        .ipam_field("Gateway")
        .parse()
        .expect("the network's gateway")
}

#[test]
fn a_new_containers_veth_is_enforced_before_its_first_packet() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_dockerd();
    let internal = TestNetwork::create("window", &["--internal"]);
    let gateway = gateway(&internal);
    let mut host = HostListener::bind(Ipv4Addr::UNSPECIFIED).unwrap();
    let port = host.port();

    // Docker alone: a container's first act reaches the host.
    drop(probe_start(&internal, gateway, port).unwrap().0);
    assert_eq!(
        host.accepted(),
        1,
        "control: with Docker alone the probe should reach the host at {gateway}:{port}"
    );

    let agent = AgentProcess::start(NETWATCH, &[&internal.name]);
    wait_for("the agent's first sync", Duration::from_secs(30), || {
        agent.synced()
    });
    let starts = 10;
    let mut windows = Vec::new();
    for _ in 0..starts {
        let window = probe_start_enforced(&internal, gateway, port, agent.pin_root())
            .unwrap()
            .expect("the probe's first packet is in the kernel's flow table");
        windows.push(window);
    }
    eprintln!("windows (µs, ≤ 0: veth attached before the first packet): {windows:?}");
    assert_eq!(host.accepted(), 1, "a probe reached the host with netwatch");
    for window in &windows {
        assert!(
            window.window_us <= 0.0 && window.first_on_veth,
            "a container sent before its veth was attached: {windows:?}\n{}",
            agent.log()
        );
    }
    assert!(
        agent.log().contains("no container named yet"),
        "the veths were attached as they appeared, not on Docker's events:\n{}",
        agent.log()
    );
}

/// A container restored at boot whose first act is a connection to the
/// host (its gateway) and one to the outside.
fn first_act(gateway: Ipv4Addr, outside: IpAddr, port: u16) -> String {
    format!(
        "nc -w 1 {gateway} {port} </dev/null; nc -w 1 {outside} {port} </dev/null; exec sleep 3600"
    )
}

/// Stops dockerd (its containers stop with it) and deletes the networks'
/// bridges, as a reboot leaves the host for the next boot.
fn power_off(dockerd: &mut PrivateDockerd, bridges: &[String]) {
    dockerd.stop_daemon();
    for bridge in bridges {
        let deleted = std::process::Command::new("ip")
            .args(["link", "del", bridge])
            .status()
            .expect("run ip");
        assert!(deleted.success(), "cannot delete bridge {bridge}");
    }
}

/// Kernel flow-table entries (under `pin_root`) of packets to `dst:port`
/// that netwatch dropped, counted.
fn dropped_to(pin_root: &std::path::Path, dst: Ipv4Addr, port: u16) -> u64 {
    pinned::read_flows(pin_root)
        .unwrap_or_default()
        .iter()
        .filter(|(key, stats)| {
            key.dst[..4] == dst.octets()
                && key.dst_port == port
                && stats.reason != DropReason::None as u8
        })
        .map(|(_, stats)| stats.packets)
        .sum()
}

/// The boot runs on a private dockerd with `--iptables=false` and FORWARD
/// accepting: no rule of Docker's stands, netwatch alone holds. (A private
/// dockerd that manages iptables shares the host's DOCKER chains with the
/// main daemon, and libnetwork's bridge driver removes and recreates them
/// as it starts: under the other tests running beside this one.)
#[test]
fn after_a_reboot_restored_containers_get_nothing_out_before_dockerd_answers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut dockerd = PrivateDockerd::start(&["--iptables=false"]);
    let _active = dockerd.activate();
    let firewall = IptablesState::save();
    firewall.forward_policy_accept();
    let outside = OutsideLink::create();
    let internal = TestNetwork::create("boot-int", &["--internal"]);
    let denied = TestNetwork::create("boot-deny", &["--label", "netwatch.egress=deny"]);
    outside.add_route_via_host(&denied.ipam_field("Subnet"));
    let mut host = HostListener::bind(Ipv4Addr::UNSPECIFIED).unwrap();
    let port = host.port();
    let beyond = Listeners::start(outside.netns(), &[outside.outside_ip()], port);
    let bridges = [internal.bridge(), denied.bridge()];
    let gateways = [gateway(&internal), gateway(&denied)];
    let Some(IpAddr::V4(outside_v4)) = Some(outside.outside_ip()) else {
        panic!("the outside address is IPv4");
    };
    let _containers: Vec<TestContainer> = [&internal, &denied]
        .iter()
        .zip(gateways)
        .map(|(network, gateway)| {
            TestContainer::run_command(
                "restored",
                &["--restart", "always", "--network", &network.name],
                &["sh", "-c", &first_act(gateway, outside.outside_ip(), port)],
            )
        })
        .collect();
    let reached = |host: &mut HostListener| (host.accepted(), beyond.tcp_accepted());
    wait_for(
        "the containers' first acts with Docker alone",
        Duration::from_secs(20),
        || {
            let (host_count, beyond_count) = reached(&mut host);
            host_count >= 2 && beyond_count >= 1
        },
    );

    // Control: a reboot with Docker alone. Restored containers reach the
    // host (both networks) and the outside (the egress-denied one: Docker
    // sees a plain network).
    let before = reached(&mut host);
    power_off(&mut dockerd, &bridges);
    dockerd.start_again();
    wait_for(
        "the restored containers' first acts with Docker alone",
        Duration::from_secs(30),
        || {
            let now = reached(&mut host);
            now.0 >= before.0 + 2 && now.1 > before.1
        },
    );

    // With netwatch: an agent that saw the networks once saves its plan.
    let mut agent = AgentProcess::start(NETWATCH, &[&internal.name, &denied.name]);
    wait_for("the agent's first sync", Duration::from_secs(30), || {
        agent.synced()
    });
    let plan = std::fs::read_to_string(agent.state_dir.join("plan.json")).expect("saved plan");
    for bridge in &bridges {
        assert!(plan.contains(bridge.as_str()), "{bridge} in {plan}");
    }
    // The reboot: agent and dockerd gone, every pin gone, bridges gone.
    agent.kill();
    detach_all(agent.pin_root()).expect("removing every pin");
    power_off(&mut dockerd, &bridges);
    let before = reached(&mut host);
    agent.restart();
    wait_for(
        "the agent reading its saved plan",
        Duration::from_secs(10),
        || {
            agent
                .log()
                .contains("guarding 2 network(s) as their bridges")
        },
    );
    dockerd.start_again();
    wait_for(
        "the restored containers' first acts, dropped",
        Duration::from_secs(30),
        || {
            gateways
                .iter()
                .all(|gw| dropped_to(agent.pin_root(), *gw, port) > 0)
                && dropped_to(agent.pin_root(), outside_v4, port) > 0
        },
    );
    // Each probe's first packet was dropped; one that got through before
    // would have completed its handshake by now.
    let after = reached(&mut host);
    assert_eq!(
        after,
        before,
        "restored containers reached the host or the outside; agent log:\n{}",
        agent.log()
    );
    let log = agent.log();
    assert!(
        log.contains("from the saved plan, before Docker answered"),
        "the bridges were attached before Docker answered:\n{log}"
    );
    drop(firewall);
}
