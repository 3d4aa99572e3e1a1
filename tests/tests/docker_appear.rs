//! Interfaces of drivers other than bridge, guarded from their appearance,
//! against a private dockerd (`--iptables=false`): libnetwork creates a
//! container's macvlan child in the host namespace some 200 ms before it
//! moves it into the container's namespace and the container can send
//! (docs/drivers.md, measured), and the agent attaches `macvlan_child` to
//! it there, then adopts that link under the container's namespace once
//! Docker names the container.
//!
//! The LAN is the test's own ([`Lan`]): the parent is a veth whose peer is a
//! bridge in a router namespace. Every probe goes to the router's address
//! there.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant, UNIX_EPOCH},
};

use netwatch::datapath::pinned;
use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{TestContainer, TestNetwork, docker_ok},
    dockerd::PrivateDockerd,
    fixture::require_root,
    lan::Lan,
    reach::Listeners,
    start_window::{link_pins_named, monotonic_ns, realtime_offset_ns},
};

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");
const PORT: u16 = 4712;

/// A container on `network` whose first act is a TCP connection to
/// `target:PORT`; it then says `reached` or `blocked` and sleeps.
fn probe(network: &TestNetwork, target: IpAddr) -> TestContainer {
    let script = format!(
        "nc -w 1 {target} {PORT} </dev/null && echo reached || echo blocked; exec sleep 3600"
    );
    TestContainer::run_command(
        "mvprobe",
        &["--network", &network.name],
        &["sh", "-c", &script],
    )
}

/// What the probe said: `reached` or `blocked` (the listener's greeting
/// byte, when it came, is left out).
fn outcome(container: &TestContainer) -> &'static str {
    let mut said = String::new();
    wait_for("the probe's outcome", Duration::from_secs(10), || {
        said = docker_ok(&["logs", &container.name]);
        said.contains("reached") || said.contains("blocked")
    });
    if said.contains("reached") {
        "reached"
    } else {
        "blocked"
    }
}

/// Link pins under `root` whose names start with `prefix`.
fn pins_named(root: &Path, prefix: &str) -> BTreeSet<PathBuf> {
    link_pins_named(root, |name| name.starts_with(prefix))
}

#[test]
fn a_new_macvlan_child_is_held_from_its_appearance_before_its_first_packet() {
    require_root();
    let daemon = PrivateDockerd::start(&["--iptables=false"]);
    let _uses = daemon.activate();
    let lan = Lan::create();
    let parent = format!("parent={}", lan.parent);
    let subnets = lan.subnet_args();
    let mut options = vec![
        "-d",
        "macvlan",
        "-o",
        &parent,
        "--label",
        "netwatch.egress=deny",
    ];
    options.extend(subnets.iter().map(String::as_str));
    let network = TestNetwork::create("mv-appear", &options);
    // The router is the network's gateway: host access, refused.
    let router: IpAddr = lan.v4(1).into();
    let listeners = Listeners::start(lan.router(), &[router], PORT);

    // Docker alone: the probe's first act reaches the router.
    let control = probe(&network, router);
    assert_eq!(outcome(&control), "reached", "control: Docker alone");
    assert_eq!(listeners.tcp_accepted(), 1);
    drop(control);

    let agent = AgentProcess::start(NETWATCH, &[&network.name]);
    wait_for("the agent's first sync", Duration::from_secs(30), || {
        agent.synced()
    });
    let root = agent.pin_root().to_path_buf();
    let mut windows_us = Vec::new();
    for _ in 0..3 {
        let before = pins_named(&root, "mvchild-");
        let offset = realtime_offset_ns().unwrap();
        let start_mono_ns = monotonic_ns().unwrap();
        let container = probe(&network, router);
        // The child's link, pinned under its container's namespace once
        // the agent knows the container (adopted, or attached then).
        let deadline = Instant::now() + Duration::from_secs(10);
        let pin = loop {
            if let Some(pin) = pins_named(&root, "mvchild-").difference(&before).next() {
                break pin.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the probe's child was not attached within 10 s:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        let modified = std::fs::metadata(&pin).unwrap().modified().unwrap();
        let attached_ns = modified.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128 - offset;
        assert!(
            pins_named(&root, "mvnew-").is_empty(),
            "the provisional link was adopted, not left beside a second one: {:?}\n{}",
            pins_named(&root, "mvnew-"),
            agent.log()
        );
        assert_eq!(outcome(&container), "blocked", "{}", agent.log());
        let first = pinned::read_flows(&root)
            .unwrap()
            .into_iter()
            .filter(|(key, stats)| {
                IpAddr::from(<[u8; 4]>::try_from(&key.dst[..4]).unwrap()) == router
                    && key.dst_port == PORT
                    && stats.first_seen_ns >= start_mono_ns
            })
            .map(|(_, stats)| stats.first_seen_ns)
            .min()
            .expect("the probe's first packet is in the kernel's flow table");
        windows_us.push((attached_ns - i128::from(first)) as f64 / 1e3);
        drop(container);
    }
    eprintln!("windows (µs, < 0: the child was attached before the first packet): {windows_us:?}");
    assert_eq!(listeners.tcp_accepted(), 1, "a probe reached the router");
    for window in &windows_us {
        assert!(
            *window < 0.0,
            "a child was attached after its container's first packet: {windows_us:?}\n{}",
            agent.log()
        );
    }
    let log = agent.log();
    assert!(
        log.contains("before it is moved into its container") && log.contains("adopted the link"),
        "the children were attached as they appeared and adopted:\n{log}"
    );
}
