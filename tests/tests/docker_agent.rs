//! The agent against a real dockerd: it enforces internal networks from
//! Docker's own state, follows container and network lifecycle, keeps
//! enforcing when killed, adopts on restart without duplicates, and a
//! detach leaves a clean host. Traffic goes only between test containers
//! and their network's gateway (the host's bridge address).

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use netwatch::datapath::{detach_all, pins};
use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{TestContainer, TestNetwork, docker, docker_ok, require_dockerd},
    fixture::{require_root, tcx_program_counts},
    outside::OutsideLink,
    reach::{Listeners, Netns, Outcome, Probe, assert_route_via, probe},
};

const AGENT: &str = env!("CARGO_BIN_EXE_netwatch-under-test");
const SETTLE: Duration = Duration::from_secs(10);
/// A probe that gets no answer within this is blocked.
const PROBE: Duration = Duration::from_millis(800);

fn gateway(network: &TestNetwork) -> String {
    network.ipam_field("Gateway")
}

fn ping(container: &TestContainer, ip: &str) -> bool {
    docker(&["exec", &container.name, "ping", "-c", "1", "-W", "1", ip]).is_ok()
}

fn bridge_ifindex(network: &TestNetwork) -> u32 {
    nix::net::if_::if_nametoindex(network.bridge().as_str()).expect("bridge exists")
}

fn tcx_programs(ifindex: u32) -> (usize, usize) {
    let name = nix::net::if_::if_indextoname(ifindex).expect("interface exists");
    tcx_program_counts(name.to_str().expect("interface names are UTF-8"))
}

#[test]
fn agent_enforces_internal_networks_and_follows_container_lifecycle() {
    require_root();
    require_dockerd();
    let internal = TestNetwork::create("int", &["--internal"]);
    let front = TestNetwork::create("front", &[]);
    let a = TestContainer::run("a", &["--network", &internal.name]);
    let g = TestContainer::run("g", &["--network", &front.name]);
    g.connect(&internal, &[]);
    // Control: Docker alone lets a container of an internal network reach
    // its gateway (the host), so the block below is netwatch's.
    let gw = gateway(&internal);
    assert!(ping(&a, &gw), "control: Docker alone, the gateway answers");
    let mut agent = AgentProcess::start(AGENT, &[&internal.name, &front.name]);
    let root = agent.pin_root().to_path_buf();
    let expected = |veths: &[u32]| -> BTreeSet<u32> {
        veths
            .iter()
            .copied()
            .chain([bridge_ifindex(&internal)])
            .collect()
    };

    let want = expected(&[
        a.host_veth(&internal),
        g.host_veth(&internal),
        g.host_veth(&front),
    ]);
    wait_for("the initial attachments", SETTLE, || {
        pins::attached_tc_ifindexes(&root) == want
    });
    assert!(
        !ping(&a, &gw),
        "the internal network's gateway (the host) must be unreachable"
    );
    let drop_line = format!("drop container={} network={}", a.name, internal.name);
    wait_for("the drop record in the agent's log", SETTLE, || {
        agent.log().lines().any(|l| {
            l.contains(&drop_line)
                && l.contains(&format!("dst={gw} "))
                && l.contains("proto=icmp")
                && l.contains("reason=host-access")
        })
    });
    assert!(
        ping(&a, &g.endpoint_field(&internal, "IPAddress")),
        "peers on the internal network reach each other"
    );
    assert!(
        ping(&g, &gateway(&front)),
        "a normal network is observed, not enforced"
    );

    // Start, stop, connect, disconnect.
    let b = TestContainer::run("b", &["--network", &internal.name]);
    let b_veth = b.host_veth(&internal);
    wait_for("b attached", SETTLE, || pins::veth_attached(&root, b_veth));
    docker_ok(&["stop", "-t", "0", &b.name]);
    wait_for("b's pins gone after it stopped", SETTLE, || {
        !pins::attached_tc_ifindexes(&root).contains(&b_veth)
    });
    let g_internal = g.host_veth(&internal);
    docker_ok(&["network", "disconnect", &internal.name, &g.name]);
    wait_for("g's internal endpoint detached", SETTLE, || {
        !pins::attached_tc_ifindexes(&root).contains(&g_internal)
    });
    g.connect(&internal, &[]);
    let g_internal = g.host_veth(&internal);
    wait_for("g reconnected and attached", SETTLE, || {
        pins::veth_attached(&root, g_internal)
    });
    assert_eq!(tcx_programs(g_internal), (1, 1));

    // 50 quick start/stop cycles leave exactly the live endpoints attached.
    for i in 0..50 {
        let name = format!("{}-cycle{i}", a.name);
        docker_ok(&[
            "run",
            "-d",
            "--rm",
            "--name",
            &name,
            "--network",
            &internal.name,
            netwatch_tests::docker::TEST_IMAGE,
            "sleep",
            "60",
        ]);
        docker_ok(&["rm", "-f", &name]);
    }
    let want = expected(&[a.host_veth(&internal), g_internal, g.host_veth(&front)]);
    wait_for("convergence after 50 start/stop cycles", SETTLE, || {
        pins::attached_tc_ifindexes(&root) == want
    });
    for ifindex in &want {
        assert_eq!(
            tcx_programs(*ifindex),
            (1, 1),
            "one attachment per live interface"
        );
    }
    assert!(!ping(&a, &gw), "still enforced after the churn");
    agent.kill();
}

#[test]
fn killed_agent_keeps_enforcing_and_a_restarted_agent_adopts_without_duplicates() {
    require_root();
    require_dockerd();
    let internal = TestNetwork::create("int", &["--internal"]);
    let a = TestContainer::run("a", &["--network", &internal.name]);
    let peer = TestContainer::run("peer", &["--network", &internal.name]);
    let gw = gateway(&internal);
    // Control: Docker alone, the gateway answers, and a container started
    // with `docker run` pings it (exit status 0): the blocks below, and
    // the late container's exit status 1, are netwatch's.
    assert!(ping(&a, &gw), "control: Docker alone, the gateway answers");
    let control = first_act_ping(&internal, &gw, "control-ping");
    assert!(
        control.contains("exit=0"),
        "control: Docker alone, a new container reaches the gateway: {control}"
    );
    let mut agent = AgentProcess::start(AGENT, &[&internal.name]);
    let root = agent.pin_root().to_path_buf();
    let a_veth = a.host_veth(&internal);
    wait_for("a attached", SETTLE, || pins::veth_attached(&root, a_veth));
    let peer_ip = peer.endpoint_field(&internal, "IPAddress");
    assert!(!ping(&a, &gw));

    // Kill the agent while the container keeps trying the host: not one of
    // 15 pings (3 s) may be answered, before, during or after the kill.
    let (name, target) = (a.name.clone(), gw.clone());
    let pinging = std::thread::spawn(move || {
        std::process::Command::new("docker")
            .args([
                "exec", &name, "ping", "-c", "15", "-i", "0.2", "-W", "1", &target,
            ])
            .output()
    });
    std::thread::sleep(Duration::from_millis(500));
    agent.kill();
    let pings = pinging.join().unwrap().expect("docker exec ping");
    let summary = String::from_utf8_lossy(&pings.stdout);
    assert!(
        !pings.status.success() && summary.contains(" 0 packets received"),
        "the host answered while the agent was killed:\n{summary}"
    );
    assert!(
        !ping(&a, &gw),
        "enforcement must outlive a SIGKILLed agent:\n{}",
        agent.log()
    );
    assert!(ping(&a, &peer_ip));

    // Churn while no agent runs: a container started now has no veth
    // program yet, but the network's bridge carries its policy, so its very
    // first packets to the host go nowhere either.
    let pings = docker(&[
        "run",
        "--rm",
        "--name",
        &format!("{}-late-ping", internal.name),
        "--network",
        &internal.name,
        netwatch_tests::docker::TEST_IMAGE,
        "ping",
        "-c",
        "5",
        "-i",
        "0.2",
        "-W",
        "1",
        &gw,
    ]);
    // busybox ping exits 1 when no reply came (2 for other failures).
    assert!(
        pings
            .as_ref()
            .is_err_and(|e| e.contains("(exit status: 1)")),
        "a container started while the agent was dead reached the host: {pings:?}"
    );
    let late = TestContainer::run("late", &["--network", &internal.name]);
    let late_veth = late.host_veth(&internal);
    assert!(
        !pins::veth_attached(&root, late_veth),
        "no agent, no veth attachment"
    );
    assert!(!ping(&late, &gw));

    agent.restart();
    wait_for("the restarted agent's first sync", SETTLE, || {
        agent.synced()
    });
    wait_for("late attached by the restarted agent", SETTLE, || {
        pins::veth_attached(&root, late_veth)
    });
    assert_eq!(tcx_programs(late_veth), (1, 1));
    assert_eq!(
        tcx_programs(a_veth),
        (1, 1),
        "no duplicate attachment after adoption"
    );
    assert_eq!(tcx_programs(bridge_ifindex(&internal)), (1, 1));
    assert!(!ping(&a, &gw));

    agent.kill();
    let removed = detach_all(&root).unwrap();
    assert!(!removed.is_empty());
    assert_eq!(tcx_programs(a_veth), (0, 0), "detach leaves the veth clean");
    assert_eq!(
        tcx_programs(bridge_ifindex(&internal)),
        (0, 0),
        "and the bridge"
    );
    assert!(!root.exists());
}

#[test]
fn pins_removed_behind_the_agents_back_are_put_back_and_reported_on_the_next_resync() {
    require_root();
    require_dockerd();
    let internal = TestNetwork::create("int", &["--internal"]);
    let a = TestContainer::run("a", &["--network", &internal.name]);
    let agent = AgentProcess::start(AGENT, &[&internal.name]);
    let root = agent.pin_root().to_path_buf();
    let a_veth = a.host_veth(&internal);
    wait_for("a attached", SETTLE, || pins::veth_attached(&root, a_veth));
    wait_for("the agent's first sync", SETTLE, || agent.synced());
    let gw = gateway(&internal);
    assert!(!ping(&a, &gw));

    // Unlinking a link pin drops the last reference to the link: the
    // kernel detaches the program. A removed map pin leaves the map alive
    // (the agent and the programs hold it) but unreachable for the next
    // agent. The agent is frozen meanwhile: a resync (on any Docker event
    // of the parallel tests) would repair before the detach can be seen.
    agent.pause();
    let links: Vec<std::path::PathBuf> = [
        pins::link_path(&root, netwatch::datapath::Hook::FromContainer, a_veth),
        pins::link_path(&root, netwatch::datapath::Hook::ToContainer, a_veth),
    ]
    .into();
    for link in &links {
        std::fs::remove_file(link).unwrap();
    }
    let flows_map = pins::maps_dir(&root).join("FLOWS");
    std::fs::remove_file(&flows_map).unwrap();
    wait_for("the kernel to let go of a's programs", SETTLE, || {
        tcx_programs(a_veth) == (0, 0)
    });
    agent.resume();

    // The agent resyncs every 2 s here.
    wait_for("the links pinned again", SETTLE, || {
        links.iter().all(|l| l.exists())
    });
    wait_for("the map pinned again", SETTLE, || flows_map.exists());
    assert_eq!(tcx_programs(a_veth), (1, 1), "attached again, once");
    assert!(!ping(&a, &gw), "enforcing again");
    wait_for("the repairs in the status file", SETTLE, || {
        netwatch::agent::status_file::AgentStatus::read(&agent.run_dir)
            .is_some_and(|s| s.repairs == 2)
    });
    let log = agent.log();
    assert!(
        log.contains("attached again to veth of")
            && log.contains("its pinned links were removed behind the agent's back")
            && log.contains(
                "pinned again maps whose pins were removed behind the agent's back: FLOWS"
            ),
        "{log}"
    );
}

/// `docker run --rm` of a container on `network` whose first act is
/// `ping -c 3 -W 1 <gw>`: ping's summary and its exit status (`exit=N`).
fn first_act_ping(network: &TestNetwork, gw: &str, what: &str) -> String {
    let name = format!("{}-{what}", network.name);
    docker_ok(&[
        "run",
        "--rm",
        "--name",
        &name,
        "--network",
        &network.name,
        netwatch_tests::docker::TEST_IMAGE,
        "sh",
        "-c",
        &format!("ping -c 3 -W 1 {gw}; echo exit=$?"),
    ])
}

#[test]
fn a_container_sending_in_its_first_millisecond_cannot_reach_the_host() {
    require_root();
    require_dockerd();
    let internal = TestNetwork::create("int", &["--internal"]);
    let gw = gateway(&internal);
    // Docker alone: the gateway answers a container's first pings.
    let alone = first_act_ping(&internal, &gw, "alone");
    assert!(
        alone.contains(" 3 packets received") && alone.contains("exit=0"),
        "control: with Docker alone {gw} should answer: {alone}"
    );

    let agent = AgentProcess::start(AGENT, &[&internal.name]);
    let root = agent.pin_root().to_path_buf();
    let bridge = bridge_ifindex(&internal);
    wait_for("the bridge attached", SETTLE, || {
        pins::veth_attached(&root, bridge)
    });
    // The container's first act is a ping to the gateway: it must go
    // unanswered (not fail some other way). Two things hold it, each with
    // the network's network-wide policy: the bridge's programs, and the
    // veth's, attached as Docker enslaves it (before the container runs);
    // breaking only one left this passing, breaking the policy they share
    // failed it. The bridge alone is shown by
    // `killed_agent_keeps_enforcing_…`, whose late container starts with
    // no agent to attach its veth.
    let first = first_act_ping(&internal, &gw, "first");
    assert!(
        first.contains(" 0 packets received") && first.contains("exit=1"),
        "a ping sent at start reached the host, or did not run: {first}"
    );

    // How long a new container's veth waits for its own programs.
    let c = TestContainer::run("c", &["--network", &internal.name]);
    let c_veth = c.host_veth(&internal);
    let window = wait_for("c attached", SETTLE, || pins::veth_attached(&root, c_veth));
    println!("veth attached {window:?} after `docker run -d` returned");
}

#[test]
fn network_labels_deny_egress_open_the_gateway_and_bad_values_are_reported() {
    require_root();
    require_dockerd();
    let denied = TestNetwork::create("denied", &["--label", "netwatch.egress=deny"]);
    let opened = TestNetwork::create(
        "opened",
        &["--internal", "--label", "netwatch.gateway=allow"],
    );
    let garbled = TestNetwork::create("garbled", &["--label", "netwatch.egress=sometimes"]);
    let d = TestContainer::run("d", &["--network", &denied.name]);
    let o = TestContainer::run("o", &["--network", &opened.name]);
    let g = TestContainer::run("g", &["--network", &garbled.name]);
    let agent = AgentProcess::start(AGENT, &[&denied.name, &opened.name, &garbled.name]);
    let root = agent.pin_root().to_path_buf();
    for (c, n) in [(&d, &denied), (&o, &opened), (&g, &garbled)] {
        let ifindex = c.host_veth(n);
        wait_for("attached", SETTLE, || pins::veth_attached(&root, ifindex));
    }
    assert!(
        !ping(&d, &gateway(&denied)),
        "netwatch.egress=deny holds a normal network"
    );
    assert!(
        ping(&o, &gateway(&opened)),
        "netwatch.gateway=allow opens the gateway"
    );
    assert!(
        !ping(&g, &gateway(&garbled)),
        "an unreadable value falls back to deny"
    );
    let status = netwatch::agent::status_file::AgentStatus::read(&agent.run_dir).unwrap();
    assert_eq!(
        status.label_problems.len(),
        1,
        "{:?}",
        status.label_problems
    );
    assert!(
        status.label_problems[0].contains(&garbled.name)
            && status.label_problems[0].contains("netwatch.egress=\"sometimes\""),
        "{:?}",
        status.label_problems
    );
}

#[test]
fn agent_shields_the_named_uplink_and_lets_go_of_it_when_it_disappears() {
    require_root();
    require_dockerd();
    let network = TestNetwork::create("shielded", &["--internal"]);
    let uplink = netwatch_tests::netns::ScratchVeth::create("u");
    let ifindex = nix::net::if_::if_nametoindex(uplink.name.as_str()).unwrap();
    let agent = AgentProcess::start_with_uplinks(AGENT, &[&network.name], &[&uplink.name]);
    wait_for("the agent's first sync", SETTLE, || agent.synced());
    let pin = pins::link_path(agent.pin_root(), netwatch::datapath::Hook::Uplink, ifindex);
    wait_for("the uplink link pin", SETTLE, || pin.exists());
    let status = netwatch::agent::status_file::AgentStatus::read(&agent.run_dir).unwrap();
    assert_eq!(
        status.uplinks,
        vec![format!("{} (ifindex {ifindex})", uplink.name)]
    );
    assert!(
        agent
            .log()
            .contains(&format!("attached to uplink {}", uplink.name)),
        "{}",
        agent.log()
    );
    // Only the uplink, none of Docker's interfaces, carries XDP.
    assert_eq!(
        pins::attached_uplink_ifindexes(agent.pin_root()),
        BTreeSet::from([ifindex])
    );

    drop(uplink);
    wait_for("the shield to be let go", SETTLE, || !pin.exists());
    // The status file is written at the end of the sync that let go of the
    // pin: wait for it rather than read what the sync before wrote.
    let vanished = || {
        netwatch::agent::status_file::AgentStatus::read(&agent.run_dir)
            .is_some_and(|s| s.refused.iter().any(|r| r.contains("no such interface")))
    };
    wait_for("a named uplink that vanished reported", SETTLE, vanished);
}

#[test]
fn a_published_port_on_a_network_that_denies_egress_is_listed_and_warned_about() {
    require_root();
    require_dockerd();
    let denied = TestNetwork::create("pubdeny", &["--label", "netwatch.egress=deny"]);
    let open = TestNetwork::create("pubopen", &[]);
    // A host port of Docker's choosing on loopback: nothing is sent to it.
    let web = TestContainer::run(
        "pubweb",
        &["--network", &denied.name, "-p", "127.0.0.1::80"],
    );
    let other = TestContainer::run(
        "pubother",
        &["--network", &open.name, "-p", "127.0.0.1::81"],
    );
    // `80/tcp -> 127.0.0.1:49153`
    let docker_port = docker_ok(&["port", &web.name, "80/tcp"]);
    let host_side = docker_port
        .lines()
        .next()
        .and_then(|line| line.rsplit(' ').next())
        .unwrap_or_else(|| panic!("docker port printed {docker_port:?}"))
        .to_owned();
    let published = format!("{host_side}/tcp");

    let agent = AgentProcess::start(AGENT, &[&denied.name, &open.name]);
    wait_for("the agent's first sync", SETTLE, || agent.synced());
    let inspect = agent.netwatch(&["inspect", "-o", "json", &web.name]);
    let report: serde_json::Value = serde_json::from_slice(&inspect.stdout)
        .unwrap_or_else(|e| panic!("inspect: {e}: {}", String::from_utf8_lossy(&inspect.stderr)));
    assert_eq!(
        report["published"],
        serde_json::json!([{"published": published, "container_port": "80/tcp"}]),
        "as `docker port` printed it: {docker_port}"
    );
    let networks = agent.netwatch(&["networks", "-o", "json", &denied.name]);
    let networks: serde_json::Value =
        serde_json::from_slice(&networks.stdout).unwrap_or_else(|e| {
            panic!(
                "networks: {e}: {}",
                String::from_utf8_lossy(&networks.stderr)
            )
        });
    let listed = networks[0]["endpoints"]
        .as_array()
        .and_then(|all| all.iter().find(|e| e["container"] == web.name.as_str()))
        .unwrap_or_else(|| panic!("{} is not listed: {networks}", web.name));
    assert_eq!(
        listed["published"],
        serde_json::json!([format!("{published} -> 80/tcp")]),
        "published through its only network"
    );
    let warning = format!(
        "container {} publishes {published} but network {} denies egress",
        web.name, denied.name
    );
    wait_for("the warning", SETTLE, || agent.log().contains(&warning));
    // Another sync (a container starts): the warning stands, once.
    let syncs = agent.syncs();
    let _third = TestContainer::run("pubthird", &["--network", &denied.name]);
    wait_for("a resync", SETTLE, || agent.syncs() > syncs);
    assert_eq!(
        agent.log().matches(&warning).count(),
        1,
        "warned once, not at every sync:\n{}",
        agent.log()
    );
    assert!(
        !agent
            .log()
            .contains(&format!("container {} publishes", other.name)),
        "a port published on an open network is no problem:\n{}",
        agent.log()
    );
    let status = agent.netwatch(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("published") && l.contains(&warning)),
        "{status}"
    );
}

/// A container answering `+` (the probes' greeting) to every TCP connection on port 80,
/// publishing it on the outside link's host address and on loopback, ports
/// of Docker's choosing (and whatever `more` options add); and those two
/// host ports.
fn published_listener(
    what: &str,
    network: &TestNetwork,
    more: &[&str],
) -> (TestContainer, u16, u16) {
    let publish = format!("{}::80", OutsideLink::HOST_IP);
    let mut options = vec![
        "--network",
        &network.name,
        "-p",
        &publish,
        "-p",
        "127.0.0.1::80",
    ];
    options.extend_from_slice(more);
    let container = TestContainer::run_command(
        what,
        &options,
        &["sh", "-c", "while true; do echo + | nc -l -p 80; done"],
    );
    // `80/tcp -> 203.0.113.1:32770`, one line per binding.
    let docker_port = docker_ok(&["port", &container.name, "80/tcp"]);
    let port_on = |address: &str| -> u16 {
        docker_port
            .lines()
            .filter_map(|line| line.rsplit(' ').next())
            .find_map(|at| at.strip_prefix(address)?.strip_prefix(':')?.parse().ok())
            .unwrap_or_else(|| panic!("no binding on {address} in {docker_port:?}"))
    };
    (
        container,
        port_on(&OutsideLink::HOST_IP.to_string()),
        port_on("127.0.0.1"),
    )
}

/// Connects from the host to `127.0.0.1:port`, which `docker-proxy` relays
/// from the network's gateway, until the listener's greeting comes back.
/// (The listener restarts `nc` between connections: a relay that finds none
/// closes at once, and is tried again.)
fn wait_for_relay(what: &str, port: u16) {
    wait_for(what, SETTLE, || {
        let Ok(mut relayed) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let mut greeting = [0u8; 1];
        std::io::Read::read_exact(&mut relayed, &mut greeting).is_ok() && greeting == *b"+"
    });
}

#[test]
fn an_enforced_network_labelled_ingress_published_admits_its_published_ports_only() {
    require_root();
    require_dockerd();
    let outside = OutsideLink::create();
    let host_ip = IpAddr::V4(OutsideLink::HOST_IP);
    let outside_ip = IpAddr::V4(OutsideLink::OUTSIDE_IP);
    assert_route_via(outside.netns(), host_ip, &["eth0"]);
    let network = TestNetwork::create(
        "pubonly",
        &[
            "--label",
            "netwatch.egress=deny",
            "--label",
            "netwatch.ingress=published",
        ],
    );
    // 81 is published too, with nothing listening: the port the container
    // tries to open connections of its own from.
    let publish_81 = format!("{}::81", OutsideLink::HOST_IP);
    let (shop, shop_port, shop_loopback) =
        published_listener("pubonlyweb", &network, &["-p", &publish_81]);
    let inside = Netns::of_pid(shop.pid());
    assert_route_via(&inside, outside_ip, &["eth0"]);
    let outside_listeners = Listeners::start(outside.netns(), &[outside_ip], 7081);
    let from_outside = || probe(&Probe::tcp(outside.netns(), host_ip, shop_port), PROBE);
    let its_own = || probe(&Probe::tcp(&inside, outside_ip, 7081), PROBE);
    let from_published_port = || probe(&Probe::tcp(&inside, outside_ip, 7081).from_port(81), PROBE);

    // Docker alone: the published port answers, and the container opens
    // connections to the outside, from any port.
    wait_for(
        "the listener, through Docker's published port",
        SETTLE,
        || from_outside().reached(),
    );
    wait_for_relay("docker-proxy's relay, Docker alone", shop_loopback);
    assert_eq!(
        its_own(),
        Outcome::Reached,
        "Docker alone: its own connection"
    );
    assert_eq!(
        from_published_port(),
        Outcome::Reached,
        "Docker alone: a connection from its published port 81"
    );

    let agent = AgentProcess::start(AGENT, &[&network.name]);
    wait_for("the agent's first sync", SETTLE, || agent.synced());
    wait_for("the veth attached", SETTLE, || {
        tcx_programs(shop.host_veth(&network)) == (1, 1)
    });
    let accepted_before = outside_listeners.tcp_accepted();
    assert_eq!(
        from_outside(),
        Outcome::Reached,
        "the published port admits a client outside the network"
    );
    wait_for_relay(
        "docker-proxy's relay from the gateway, under enforcement",
        shop_loopback,
    );
    assert_eq!(
        its_own(),
        Outcome::Blocked("timeout".into()),
        "a connection of its own to the outside is still egress, dropped"
    );
    assert_eq!(
        from_published_port(),
        Outcome::Blocked("timeout".into()),
        "a connection from a published port answers nothing that came in: dropped"
    );
    assert_eq!(
        outside_listeners.tcp_accepted(),
        accepted_before,
        "nothing of the container's own reached the outside"
    );
    let log = agent.log();
    assert!(
        log.contains("enforced, published ports open"),
        "the attach line says the published ports are open:\n{log}"
    );
    assert!(
        !log.contains(&format!("denies egress: clients outside {}", network.name)),
        "a labelled network's published ports are not warned about:\n{log}"
    );
    let flows = agent.flows_json(&["--container", &shop.name]);
    assert!(
        flows.iter().any(|f| f["direction"] == "ingress"
            && f["dst_port"] == 80
            && f["src"] == outside_ip.to_string()
            && f["verdict"] == "forwarded"),
        "the inbound connection, forwarded: {flows:?}"
    );
    assert!(
        flows.iter().any(|f| f["direction"] == "egress"
            && f["src_port"] == 81
            && f["dst"] == outside_ip.to_string()
            && f["verdict"] == "dropped"),
        "the connection from port 81, dropped: {flows:?}"
    );
}

#[test]
fn a_connection_through_a_published_port_carries_it_and_an_enforced_network_drops_it() {
    require_root();
    require_dockerd();
    let outside = OutsideLink::create();
    let host_ip = IpAddr::V4(OutsideLink::HOST_IP);
    assert_route_via(outside.netns(), host_ip, &["eth0"]);
    let open = TestNetwork::create("pubflow", &[]);
    let denied = TestNetwork::create("pubdrop", &["--label", "netwatch.egress=deny"]);
    let (web, web_port, web_loopback) = published_listener("pubflowweb", &open, &[]);
    let (shop, shop_port, _) = published_listener("pubdropweb", &denied, &[]);
    let from_outside = |port: u16| probe(&Probe::tcp(outside.netns(), host_ip, port), PROBE);
    // Docker alone: both published ports answer from the outside.
    wait_for(
        "the listeners, through Docker's published ports",
        SETTLE,
        || from_outside(web_port).reached() && from_outside(shop_port).reached(),
    );

    let agent = AgentProcess::start(AGENT, &[&open.name, &denied.name]);
    wait_for("the agent's first sync", SETTLE, || agent.synced());
    wait_for("the veths attached", SETTLE, || {
        tcx_programs(web.host_veth(&open)) == (1, 1)
            && tcx_programs(shop.host_veth(&denied)) == (1, 1)
    });
    assert!(
        from_outside(web_port).reached(),
        "an open network's published port still answers"
    );
    // From the host to the loopback binding: docker-proxy relays it, from
    // the network's gateway.
    wait_for_relay("a connection relayed by docker-proxy", web_loopback);
    let blocked = from_outside(shop_port);
    assert_eq!(
        blocked,
        Outcome::Blocked("timeout".into()),
        "the enforced network's published port: its answers are egress, dropped"
    );
    let published = format!("{}:{web_port}/tcp", OutsideLink::HOST_IP);
    let mut flows = Vec::new();
    let relayed_by = format!("127.0.0.1:{web_loopback}/tcp");
    let gateway = gateway(&open);
    let from_gateway =
        |f: &serde_json::Value| f["src"] == gateway.as_str() || f["dst"] == gateway.as_str();
    wait_for("both connections' flows", SETTLE, || {
        flows = agent.flows_json(&["--container", &web.name]);
        flows
            .iter()
            .filter(|f| f["dst_port"] == 80 || f["src_port"] == 80)
            .count()
            >= 4
    });
    for flow in flows
        .iter()
        .filter(|f| f["dst_port"] == 80 || f["src_port"] == 80)
    {
        let expected = if from_gateway(flow) {
            &relayed_by
        } else {
            &published
        };
        assert_eq!(flow["published"], expected.as_str(), "{flow}");
        assert_eq!(flow["proto"], "tcp");
    }
    assert!(
        flows
            .iter()
            .any(|f| from_gateway(f) && f["published"] == relayed_by.as_str()),
        "docker-proxy's relay from {gateway}: {flows:?}"
    );
    // The flows come busiest first, so docker-proxy's relay (ingress from
    // the gateway, also to port 80) may come before the outside's: pick the
    // one that did not come from the gateway (CI once had the relay first).
    let inbound = flows
        .iter()
        .find(|f| f["direction"] == "ingress" && f["dst_port"] == 80 && !from_gateway(f))
        .unwrap_or_else(|| panic!("no inbound flow other than the relay: {flows:?}"));
    assert_eq!(
        inbound["src"],
        OutsideLink::OUTSIDE_IP.to_string(),
        "{inbound}"
    );
    let table = agent.flows(&["--container", &web.name]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains(&format!(":80 (published {published})")),
        "{}",
        String::from_utf8_lossy(&table.stdout)
    );
    assert!(
        agent.log().contains(&format!(
            "{}:{shop_port}/tcp but network {} denies egress",
            OutsideLink::HOST_IP,
            denied.name
        )),
        "{}",
        agent.log()
    );
}

/// Puts `/sys/kernel/rcu_expedited` back as the test found it, however the
/// test ends.
struct RcuKnobAsFound(String);

const RCU_EXPEDITED: &str = "/sys/kernel/rcu_expedited";

impl RcuKnobAsFound {
    fn set_to(value: &str) -> RcuKnobAsFound {
        let found = std::fs::read_to_string(RCU_EXPEDITED)
            .expect("this test needs /sys/kernel/rcu_expedited")
            .trim()
            .to_owned();
        let guard = RcuKnobAsFound(found);
        std::fs::write(RCU_EXPEDITED, value).expect("setting rcu_expedited");
        guard
    }

    fn now() -> String {
        std::fs::read_to_string(RCU_EXPEDITED)
            .unwrap()
            .trim()
            .to_owned()
    }
}

impl Drop for RcuKnobAsFound {
    fn drop(&mut self) {
        let _ = std::fs::write(RCU_EXPEDITED, &self.0);
    }
}

#[test]
fn expedite_attach_sets_the_rcu_knob_only_while_attaching_and_the_next_start_undoes_a_killed_ones()
{
    require_root();
    require_dockerd();
    let _knob = RcuKnobAsFound::set_to("0");
    let internal = TestNetwork::create("rcu", &["--internal"]);
    let a = TestContainer::run("a", &["--network", &internal.name]);
    let mut agent =
        AgentProcess::start_with_args(AGENT, &[&internal.name], &[], &["--expedite-attach"]);
    let root = agent.pin_root().to_path_buf();
    let a_veth = a.host_veth(&internal);
    wait_for("a attached", SETTLE, || pins::veth_attached(&root, a_veth));
    wait_for("the first sync", SETTLE, || agent.synced());
    // Bridge and veth at least: the first sync attached both.
    let log = agent.log();
    let expedited = log
        .lines()
        .find(|l| l.contains("expedited RCU grace periods (/sys/kernel/rcu_expedited = 1, was 0)"))
        .unwrap_or_else(|| panic!("the attach was not expedited:\n{log}"));
    assert!(
        expedited.contains("pending attach(es)") || expedited.contains("saved network(s)"),
        "{expedited}"
    );
    assert_eq!(
        RcuKnobAsFound::now(),
        "0",
        "put back after the attach:\n{log}"
    );
    let saved = agent.run_dir.join("rcu_expedited.saved");
    assert!(!saved.exists(), "nothing left to restore");

    // A resync with nothing to attach leaves the knob alone.
    let syncs = agent.syncs();
    wait_for("two more syncs", SETTLE, || agent.syncs() >= syncs + 2);
    let times = agent.log().matches("expedited RCU grace periods").count();
    assert_eq!(
        times,
        log.matches("expedited RCU grace periods").count(),
        "expedited again with nothing to attach:\n{}",
        agent.log()
    );

    // A container started now is attached by whichever comes first: the
    // guard, as its veth appears (usually), or a sync on Docker's event
    // (on a loaded machine). Either attach is expedited: the guard's was
    // not, and a boot's burst of restored containers went at the normal
    // pace.
    let c = TestContainer::run("c", &["--network", &internal.name]);
    let c_veth = c.host_veth(&internal);
    wait_for("c attached", SETTLE, || pins::veth_attached(&root, c_veth));
    let log = agent.log();
    let lines: Vec<&str> = log.lines().collect();
    let attach = lines
        .iter()
        .position(|l| l.contains("attached to") && l.contains(&format!("ifindex {c_veth})")))
        .unwrap_or_else(|| panic!("no line attaching ifindex {c_veth}:\n{log}"));
    let expedited = lines[..attach]
        .iter()
        .rev()
        .take_while(|l| !l.contains("attached to") && !l.contains("reconciled:"))
        .any(|l| l.contains("expedited RCU grace periods"));
    assert!(
        expedited,
        "the attach of c's veth was not expedited: {}\n{log}",
        lines[attach]
    );
    assert_eq!(RcuKnobAsFound::now(), "0", "put back after it:\n{log}");

    // As if SIGKILLed mid-attach: the knob left at 1 with the saved value.
    agent.kill();
    std::fs::write(RCU_EXPEDITED, "1").unwrap();
    std::fs::write(&saved, "0").unwrap();
    // The next start puts it back even without the flag.
    agent.restart_with_args(&[]);
    wait_for("the restarted agent's first sync", SETTLE, || {
        agent.synced()
    });
    assert_eq!(RcuKnobAsFound::now(), "0", "{}", agent.log());
    assert!(
        agent
            .log()
            .contains("restored /sys/kernel/rcu_expedited to 0: an earlier agent set it"),
        "{}",
        agent.log()
    );
    assert!(!saved.exists());
    // Without the flag, a new container's attach is not expedited.
    let before = agent.log().matches("expedited RCU grace periods").count();
    let b = TestContainer::run("b", &["--network", &internal.name]);
    let b_veth = b.host_veth(&internal);
    wait_for("b attached", SETTLE, || pins::veth_attached(&root, b_veth));
    assert_eq!(
        agent.log().matches("expedited RCU grace periods").count(),
        before,
        "expedited without --expedite-attach:\n{}",
        agent.log()
    );
    assert_eq!(RcuKnobAsFound::now(), "0");
}
