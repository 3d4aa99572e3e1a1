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
    host_netns::HostNetns,
    hostfw::IptablesState,
    outside::OutsideLink,
    reach::{Listeners, Netns, assert_route_via},
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
/// bridges, as a reboot leaves the host for the next boot; a host that is a
/// namespace of the test's also loses its firewall (dockerd puts its rules
/// back as it starts).
fn power_off(boot: &mut Boot, bridges: &[String]) {
    boot.dockerd.stop_daemon();
    for bridge in bridges {
        boot.host.run_ok("ip", &["link", "del", bridge]);
    }
    if let Some(netns) = &boot.netns {
        netns.power_off_firewall();
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

/// Which of Docker's rules stand on the host that reboots.
#[derive(Clone, Copy, Debug)]
enum DockerRules {
    /// None: a private dockerd on the machine with `--iptables=false` and
    /// FORWARD accepting, so netwatch alone holds. (On the machine, a
    /// private dockerd that manages iptables would share the DOCKER chains
    /// with the main daemon, and libnetwork's bridge driver removes and
    /// recreates them as it starts: under the other tests running beside
    /// this one.)
    None,
    /// Docker's own, with default settings: a private dockerd managing
    /// iptables inside a network namespace of the test's that plays the
    /// host (`HostNetns`), with the agent, the "host" listener and the
    /// outside link there too. Its rules are put back as it starts, as on
    /// a real boot: isolation, FORWARD DROP, masquerading.
    Intact,
}

/// The host that reboots: its dockerd, and the namespace it runs in.
/// Fields drop in order: the daemon (and everything of it) before its
/// namespace.
struct Boot {
    dockerd: PrivateDockerd,
    /// The machine's namespace, or the one of `netns`.
    host: Netns,
    netns: Option<HostNetns>,
}

impl Boot {
    fn start(rules: DockerRules) -> Boot {
        match rules {
            DockerRules::None => Boot {
                dockerd: PrivateDockerd::start(&["--iptables=false"]),
                host: Netns::host(),
                netns: None,
            },
            DockerRules::Intact => {
                let netns = HostNetns::create();
                Boot {
                    dockerd: PrivateDockerd::start_in_netns(netns.name(), &[]),
                    host: netns.netns().clone(),
                    netns: Some(netns),
                }
            }
        }
    }

    /// The outside world, joined to the host.
    fn outside(&self) -> OutsideLink {
        match &self.netns {
            Some(netns) => OutsideLink::create_in(netns.name()),
            None => OutsideLink::create(),
        }
    }

    /// An agent for `networks`, in the host's namespace.
    fn agent(&self, networks: &[&str]) -> AgentProcess {
        match &self.netns {
            Some(netns) => AgentProcess::start_in_netns(NETWATCH, netns.name(), networks),
            None => AgentProcess::start(NETWATCH, networks),
        }
    }
}

/// The reboot simulation of issue 13: an internal and an egress-denied
/// network with `--restart always` containers whose first act is to reach
/// the host (their gateway) and the outside. A reboot with Docker alone
/// lets them through (the control); the same reboot with the agent started
/// first from its saved plan, every pin of it removed, lets nothing out.
fn restored_containers_get_nothing_out(rules: DockerRules) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut boot = Boot::start(rules);
    let _active = boot.dockerd.activate();
    let firewall = matches!(rules, DockerRules::None).then(|| {
        let firewall = IptablesState::save();
        firewall.forward_policy_accept();
        firewall
    });
    let outside = boot.outside();
    let internal = TestNetwork::create("boot-int", &["--internal"]);
    let denied = TestNetwork::create("boot-deny", &["--label", "netwatch.egress=deny"]);
    outside.add_route_via_host(&denied.ipam_field("Subnet"));
    let mut host = boot
        .host
        .run(|| HostListener::bind(Ipv4Addr::UNSPECIFIED))
        .unwrap();
    let port = host.port();
    let beyond = Listeners::start(outside.netns(), &[outside.outside_ip()], port);
    let bridges = [internal.bridge(), denied.bridge()];
    let gateways = [gateway(&internal), gateway(&denied)];
    let Some(IpAddr::V4(outside_v4)) = Some(outside.outside_ip()) else {
        panic!("the outside address is IPv4");
    };
    // Before anything is sent: the gateways are the host's own addresses,
    // and the outside is behind the test's veth.
    for gateway in gateways {
        assert_route_via(&boot.host, gateway.into(), &["lo"]);
    }
    assert_route_via(&boot.host, outside_v4.into(), &[outside.host_ifname()]);
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
    power_off(&mut boot, &bridges);
    boot.dockerd.start_again();
    wait_for(
        "the restored containers' first acts with Docker alone",
        Duration::from_secs(30),
        || {
            let now = reached(&mut host);
            now.0 >= before.0 + 2 && now.1 > before.1
        },
    );

    // With netwatch: an agent that saw the networks once saves its plan.
    let mut agent = boot.agent(&[&internal.name, &denied.name]);
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
    power_off(&mut boot, &bridges);
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
    boot.dockerd.start_again();
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
        "restored containers reached the host or the outside ({rules:?} Docker rules); \
         agent log:\n{}",
        agent.log()
    );
    let log = agent.log();
    assert!(
        log.contains("from the saved plan, before Docker answered"),
        "the bridges were attached before Docker answered:\n{log}"
    );
    if let DockerRules::Intact = rules {
        // Docker's rules were in place again as the containers came back.
        let rules = boot.host.run_ok("iptables-save", &[]);
        for bridge in &bridges {
            assert!(
                rules.contains(&format!("-i {bridge} ")),
                "no rule of Docker's for {bridge} in the host's namespace:\n{rules}"
            );
        }
        assert!(
            rules.contains(":FORWARD DROP") && rules.contains("DOCKER-ISOLATION-STAGE-1"),
            "Docker's isolation and FORWARD policy in the host's namespace:\n{rules}"
        );
    }
    drop(firewall);
}

/// The reboot with no rule of Docker's standing: netwatch alone holds.
#[test]
fn after_a_reboot_restored_containers_get_nothing_out_with_no_docker_rules() {
    restored_containers_get_nothing_out(DockerRules::None);
}

/// The reboot with Docker's own rules in place, as Docker puts them back
/// at boot (dockerd and the agent in a namespace playing the host).
#[test]
fn after_a_reboot_restored_containers_get_nothing_out_with_dockers_rules_intact() {
    restored_containers_get_nothing_out(DockerRules::Intact);
}

/// Upgrades: an agent finds pins of an older layout — maps of another
/// shape, stamped with another layout — and takes them over under load:
/// every link is switched to its programs in place (the same link, never
/// detached), the old maps' pins are replaced by maps of its layout, and
/// a container probing the host the whole time never gets through.
#[test]
fn pins_of_an_older_layout_are_replaced_in_place_under_load() {
    use netwatch::datapath::{Hook, pins, stamps};
    use netwatch_common::names;

    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_dockerd();
    let internal = TestNetwork::create("upgrade", &["--internal"]);
    let gateway = gateway(&internal);
    let mut host = HostListener::bind(Ipv4Addr::UNSPECIFIED).unwrap();
    let port = host.port();
    let _prober = TestContainer::run_command(
        "prober",
        &["--network", &internal.name],
        &[
            "sh",
            "-c",
            // `timeout`: a connection that got through ends too, whether or
            // not the host side ever closes it.
            &format!("while true; do timeout 1 nc {gateway} {port} </dev/null; done"),
        ],
    );
    // Control: with Docker alone the prober gets through.
    wait_for(
        "the prober reaching the host with Docker alone",
        Duration::from_secs(20),
        || host.accepted() > 0,
    );

    // The "older" agent: another flow-table capacity, and its stamp made
    // an older layout's.
    let mut agent = AgentProcess::start_with_args(
        NETWATCH,
        &[&internal.name],
        &[],
        &["--flow-table-entries", "4096"],
    );
    let root = agent.pin_root().to_path_buf();
    let veth_pin = || {
        pins::pinned_links(&root)
            .into_iter()
            .find(|l| l.netns.is_none() && l.program == Hook::FromContainer.program_name())
            .map(|l| pins::links_dir(&root).join(l.pin_name()))
    };
    wait_for(
        "the prober's veth attached",
        Duration::from_secs(30),
        || veth_pin().is_some() && pins::attached_tc_ifindexes(&root).len() == 2,
    );
    let dropped = || dropped_to(&root, gateway, port);
    let before = dropped();
    wait_for(
        "the prober's attempts dropped",
        Duration::from_secs(10),
        || dropped() > before,
    );
    let reached = host.accepted();
    agent.kill();
    assert_eq!(stamps(&root), [netwatch::datapath::LAYOUT]);
    std::fs::rename(
        root.join(format!("layout-{}", netwatch::datapath::LAYOUT)),
        root.join("layout-0"),
    )
    .expect("making the pins an older layout's");
    let links_before: Vec<(std::path::PathBuf, (u32, u32))> = pins::pinned_links(&root)
        .iter()
        .map(|l| {
            let path = pins::links_dir(&root).join(l.pin_name());
            let ids = netwatch::datapath::pinned::link_ids(&path).unwrap();
            (path, ids)
        })
        .collect();
    let flows_pin = pins::maps_dir(&root).join(names::MAP_FLOWS);
    assert_eq!(
        netwatch::datapath::pinned::map_capacity(&flows_pin).unwrap(),
        4096
    );

    // The newer agent: default settings.
    agent.restart_with_args(&[]);
    wait_for(
        "the newer agent's first sync",
        Duration::from_secs(30),
        || agent.synced(),
    );
    wait_for("the take-over", Duration::from_secs(10), || {
        agent.log().contains("took over")
    });
    let log = agent.log();
    for line in log
        .lines()
        .filter(|l| l.contains("does not fit") || l.contains("took over"))
    {
        eprintln!("{line}");
    }
    assert!(
        log.contains("layout 0 (this one is layout 1)"),
        "the old layout was named:\n{log}"
    );
    assert_eq!(stamps(&root), [netwatch::datapath::LAYOUT]);
    assert_eq!(
        netwatch::datapath::pinned::map_capacity(&flows_pin).unwrap(),
        netwatch_common::names::FLOWS_MAX_ENTRIES,
        "the flow table's pin names a map of this build's layout"
    );
    for (path, (link, program)) in &links_before {
        let (link_now, program_now) = netwatch::datapath::pinned::link_ids(path)
            .unwrap_or_else(|e| panic!("{} was detached: {e}", path.display()));
        assert_eq!(link_now, *link, "{} is the same link", path.display());
        assert_ne!(
            program_now,
            *program,
            "{} runs the newer agent's program",
            path.display()
        );
    }
    // The new programs enforce (with the new maps' policy), and nothing
    // got through at any point.
    let before = dropped();
    wait_for(
        "the prober's attempts dropped by the newer programs",
        Duration::from_secs(10),
        || dropped() > before,
    );
    assert_eq!(
        host.accepted(),
        reached,
        "the prober reached the host during the upgrade:\n{log}"
    );
}
