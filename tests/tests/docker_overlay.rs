//! Overlay networks against a real (private) dockerd in a single-node swarm
//! advertised on a veth of the test's own ([`Swarm`]): what a container on
//! an internal overlay reaches and what its forged frames reach, with
//! Docker alone and with netwatch, and after `kill -9` of the agent; an
//! egress-denied overlay whose containers' way out (their docker_gwbridge
//! leg) is held; the flows of an observed overlay, its gateway legs and a
//! swarm service's task named; a new container's sandbox veth held from
//! its appearance, and its docker_gwbridge leg not yet.
//!
//! Every address is in 198.18.0.0/15 (the swarm's) or the host's own; the
//! routes are checked before anything is sent. Tests run one at a time:
//! the machine has one `docker_gwbridge`.

use std::{
    net::Ipv4Addr,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use netwatch::datapath::pins;
use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{HostOverride, TEST_IMAGE, TestContainer, TestNetwork, docker_ok, unique_name},
    dockerd::PrivateDockerd,
    fixture::require_root,
    packets::Frame,
    rawframe::{Forged, assert_forged},
    reach::{
        Listeners, Netns, Outcome, PathCheck, Probe, assert_paths, assert_route_via, probe_all,
    },
    swarm::{GATEWAY_BRIDGE, Swarm},
};
use serde_json::Value;

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");
/// Where every listener listens.
const PORT: u16 = 4712;
/// A probe that gets no answer within this is blocked.
const TIMEOUT: Duration = Duration::from_millis(800);

static SERIAL: Mutex<()> = Mutex::new(());

/// A private dockerd (`--iptables=false`) in a single-node swarm, the
/// docker helpers talking to it. Fields drop in order: the swarm first,
/// the daemon last, and only then may the next test make its own.
struct Node {
    swarm: Swarm,
    _uses: HostOverride,
    daemon: PrivateDockerd,
    _serial: MutexGuard<'static, ()>,
}

fn node() -> Node {
    require_root();
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let daemon = PrivateDockerd::start(&["--iptables=false"]);
    let uses = daemon.activate();
    Node {
        swarm: Swarm::init(&daemon),
        _uses: uses,
        daemon,
        _serial: serial,
    }
}

fn ipv4(container: &TestContainer, network: &TestNetwork) -> Ipv4Addr {
    let text = container.endpoint_field(network, "IPAddress");
    text.parse()
        .unwrap_or_else(|e| panic!("IPAddress {text:?} of {}: {e}", container.name))
}

fn mac(container: &TestContainer, network: &TestNetwork) -> [u8; 6] {
    let text = container.endpoint_field(network, "MacAddress");
    let mac: netwatch::host::interfaces::MacAddr = text
        .parse()
        .unwrap_or_else(|e| panic!("MacAddress of {}: {e}", container.name));
    mac.0
}

/// `netwatch <args…>` against the agent's pins and the test's dockerd;
/// stdout as JSON.
fn netwatch_json(agent: &AgentProcess, args: &[&str]) -> Value {
    let out = agent.netwatch(args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "netwatch {args:?}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `netwatch networks -o json NAME`: that network's object.
fn network_json(agent: &AgentProcess, name: &str) -> Value {
    netwatch_json(agent, &["networks", "-o", "json", name])[0].clone()
}

/// The endpoint of `container` in a `networks -o json` object.
fn endpoint<'a>(network: &'a Value, container: &str) -> &'a Value {
    network["endpoints"]
        .as_array()
        .and_then(|all| all.iter().find(|e| e["container"] == container))
        .unwrap_or_else(|| panic!("{container} is not listed: {network}"))
}

/// Asserts every path reached, or blocked by a timeout (it exists and
/// something drops it silently), as it says.
fn assert_matrix(state: &str, paths: &[PathCheck]) {
    assert_paths(state, paths, TIMEOUT, |why| why.starts_with("timeout"));
}

#[test]
fn an_internal_overlay_keeps_its_containers_together_and_drops_forged_frames_even_after_kill_9() {
    let node = node();
    let swarm = &node.swarm;
    let network = swarm.overlay("ovl-int", &["--internal"]);
    let a = TestContainer::run("ov-a", &["--network", &network.name]);
    let b = TestContainer::run("ov-b", &["--network", &network.name]);
    let (a_ns, b_ns) = (Netns::of_pid(a.pid()), Netns::of_pid(b.pid()));
    let (a_ip, b_ip) = (ipv4(&a, &network), ipv4(&b, &network));
    let gateway: Ipv4Addr = network.ipam_field("Gateway").parse().expect("a gateway");
    // The overlay's gateway address is on br0 in its sandbox: all the
    // container has on eth0 (internal: no other route).
    for dst in [b_ip, gateway] {
        assert_route_via(&a_ns, dst.into(), &["eth0"]);
    }
    let b_listener = Listeners::start(&b_ns, &[b_ip.into()], PORT);
    let paths = |open_gateway: bool| {
        [
            PathCheck::every_protocol(
                "container → peer on the overlay",
                &a_ns,
                &[b_ip.into()],
                PORT,
                true,
            ),
            PathCheck {
                name: "peer → container",
                probes: vec![Probe::icmp(&b_ns, a_ip.into())],
                open: true,
            },
            PathCheck {
                name: "container → the overlay's gateway (its sandbox)",
                probes: vec![Probe::icmp(&a_ns, gateway.into())],
                open: open_gateway,
            },
        ]
    };
    let (a_mac, b_mac) = (mac(&a, &network), mac(&b, &network));
    let udp = |src_mac: [u8; 6], src: Ipv4Addr| {
        Frame::eth(src_mac, b_mac)
            .ipv4(src, b_ip)
            .udp(40000, PORT)
            .payload(b"nwforged")
            .build()
    };
    let [o1, o2, o3, _] = a_ip.octets();
    let forged = [
        Forged {
            what: "another source address (in the overlay)",
            frame: udp(a_mac, Ipv4Addr::new(o1, o2, o3, 77)),
            lands_at: &b_listener,
        },
        Forged {
            what: "another source MAC",
            frame: udp([0x06, 1, 2, 3, 4, 5], a_ip),
            lands_at: &b_listener,
        },
    ];

    // Docker alone: the overlay works, its gateway answers, and forged
    // frames arrive.
    assert_matrix("Docker alone", &paths(true));
    assert_forged("Docker alone", &a_ns, "eth0", &forged, TIMEOUT, true);

    let mut agent = AgentProcess::start(NETWATCH, &[&network.name]);
    wait_for("the overlay enforced", Duration::from_secs(20), || {
        network_json(&agent, &network.name)["mode"] == "enforced"
    });
    let json = network_json(&agent, &network.name);
    for container in [&a, &b] {
        let endpoint = endpoint(&json, &container.name);
        assert_eq!(endpoint["mode"], "enforced", "{json}");
        assert_eq!(endpoint["host_ifname"], Value::Null, "{json}");
        let sandbox = endpoint["overlay"]["sandbox"].as_str().unwrap_or_default();
        assert!(
            sandbox.starts_with(&node.daemon.root().display().to_string()),
            "the sandbox is under the private dockerd's exec-root: {json}"
        );
    }
    assert_matrix("netwatch", &paths(false));
    assert_forged("netwatch", &a_ns, "eth0", &forged, TIMEOUT, false);
    let a_veth = endpoint(&json, &a.name)["overlay"]["ifname"]
        .as_str()
        .expect("the sandbox veth's name")
        .to_owned();
    wait_for("the drops, named", Duration::from_secs(5), || {
        let log = agent.log();
        let named = format!(
            "drop container={} network={} interface={a_veth} direction=egress",
            a.name, network.name
        );
        log.contains(&named)
            && log.contains("reason=spoofed-source")
            && log.contains("reason=spoofed-mac")
            && log.contains("reason=host-access")
    });

    // kill -9: the pins keep enforcing.
    agent.kill();
    assert_matrix("netwatch killed", &paths(false));
    assert_forged("netwatch killed", &a_ns, "eth0", &forged, TIMEOUT, false);
}

/// The docker_gwbridge leg of `container`: its address there, from the
/// only answer that lists it (`GET /networks/docker_gwbridge`).
fn gateway_leg(container_id: &str) -> Ipv4Addr {
    let format = format!("{{{{(index .Containers \"{container_id}\").IPv4Address}}}}");
    let text = docker_ok(&["network", "inspect", "--format", &format, GATEWAY_BRIDGE]);
    let address = text.split('/').next().unwrap_or_default();
    address
        .parse()
        .unwrap_or_else(|e| panic!("{GATEWAY_BRIDGE} leg of {container_id}: {text:?}: {e}"))
}

/// The name of the running task container of swarm service `service`.
fn task_of(service: &str) -> String {
    let filter = format!("label=com.docker.swarm.service.name={service}");
    let mut found = String::new();
    wait_for(
        "the service's task running",
        Duration::from_secs(30),
        || {
            found = docker_ok(&["ps", "--filter", &filter, "--format", "{{.Names}}"]);
            !found.is_empty()
        },
    );
    found.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn an_egress_denied_overlay_holds_its_containers_way_out_through_docker_gwbridge() {
    let node = node();
    let swarm = &node.swarm;
    let network = swarm.overlay("ovl-deny", &["--label", "netwatch.egress=deny"]);
    let d = TestContainer::run("ov-d", &["--network", &network.name]);
    let e = TestContainer::run("ov-e", &["--network", &network.name]);
    let (d_ns, e_ns) = (Netns::of_pid(d.pid()), Netns::of_pid(e.pid()));
    let e_ip = ipv4(&e, &network);
    let d_leg = gateway_leg(&d.id);
    // The way out: eth1, docker_gwbridge's gateway, an address of the host
    // (a bridge this test made).
    let host_gateway = swarm.gateway_bridge_gateway;
    assert_route_via(&d_ns, e_ip.into(), &["eth0"]);
    assert_route_via(&d_ns, host_gateway.into(), &["eth1"]);
    assert_route_via(&Netns::host(), d_leg.into(), &[GATEWAY_BRIDGE]);
    let _listen = [
        Listeners::start(&e_ns, &[e_ip.into()], PORT),
        Listeners::start(&Netns::host(), &[host_gateway.into()], PORT),
        Listeners::start(&d_ns, &[d_leg.into()], PORT),
    ];
    let paths = |open_way_out: bool| {
        [
            PathCheck::every_protocol(
                "container → peer on the overlay",
                &d_ns,
                &[e_ip.into()],
                PORT,
                true,
            ),
            PathCheck::every_protocol(
                "container → the host, out through its docker_gwbridge leg",
                &d_ns,
                &[host_gateway.into()],
                PORT,
                open_way_out,
            ),
            PathCheck::every_protocol(
                "the host → the container's docker_gwbridge leg",
                &Netns::host(),
                &[d_leg.into()],
                PORT,
                open_way_out,
            ),
        ]
    };
    assert_matrix("Docker alone", &paths(true));

    let agent = AgentProcess::start(NETWATCH, &[&network.name]);
    wait_for("the overlay enforced", Duration::from_secs(20), || {
        network_json(&agent, &network.name)["mode"] == "enforced"
    });
    assert_matrix("netwatch", &paths(false));
    let legs = network_json(&agent, GATEWAY_BRIDGE);
    let leg = endpoint(&legs, &d.name);
    assert_eq!(leg["mode"], "enforced", "{legs}");
    assert_eq!(
        leg["why"],
        format!(
            "the way out of overlay {} (label netwatch.egress=deny)",
            network.name
        ),
        "{legs}"
    );
    assert_eq!(
        legs["mode"], "observed",
        "docker_gwbridge itself denies nothing"
    );
    // Both ways the other end is the host (docker_gwbridge's gateway).
    wait_for("the drops, named", Duration::from_secs(5), || {
        let log = agent.log();
        ["egress", "ingress"].iter().all(|direction| {
            log.lines().any(|line| {
                line.contains(&format!(
                    "drop container={} network={GATEWAY_BRIDGE} interface=veth",
                    d.name
                )) && line.contains(&format!("direction={direction} "))
                    && line.contains("reason=host-access")
            })
        })
    });
}

#[test]
fn an_observed_overlay_names_its_flows_its_gateway_legs_and_a_service_task() {
    let node = node();
    let swarm = &node.swarm;
    let network = swarm.overlay("ovl-obs", &[]);
    let c = TestContainer::run("ov-c", &["--network", &network.name]);
    let service = swarm.service("ov-svc", &network);
    let task = task_of(&service.name);
    let task_pid: u32 = docker_ok(&["inspect", "--format", "{{.State.Pid}}", &task])
        .parse()
        .expect("the task's pid");
    let task_ip: Ipv4Addr = docker_ok(&[
        "inspect",
        "--format",
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            network.name
        ),
        &task,
    ])
    .parse()
    .expect("the task's address");
    let (c_ns, task_ns) = (Netns::of_pid(c.pid()), Netns::of_pid(task_pid));
    let host_gateway = swarm.gateway_bridge_gateway;
    assert_route_via(&c_ns, task_ip.into(), &["eth0"]);
    assert_route_via(&c_ns, host_gateway.into(), &["eth1"]);
    let _listen = [
        Listeners::start(&task_ns, &[task_ip.into()], PORT),
        Listeners::start(&Netns::host(), &[host_gateway.into()], PORT),
    ];

    let agent = AgentProcess::start(NETWATCH, &[&network.name]);
    wait_for(
        "the overlay and its legs observed",
        Duration::from_secs(20),
        || {
            let overlay = network_json(&agent, &network.name);
            let legs = network_json(&agent, GATEWAY_BRIDGE);
            overlay["mode"] == "observed"
                && overlay["endpoints"].as_array().map(Vec::len) == Some(2)
                && legs["endpoints"]
                    .as_array()
                    .is_some_and(|e| e.iter().filter(|e| e["mode"] == "observed").count() == 2)
        },
    );
    let overlay = network_json(&agent, &network.name);
    assert_eq!(
        endpoint(&overlay, &task)["service"],
        service.name.as_str(),
        "{overlay}"
    );
    let legs = network_json(&agent, GATEWAY_BRIDGE);
    for name in [&c.name, &task] {
        let leg = endpoint(&legs, name);
        assert!(
            leg["host_ifname"]
                .as_str()
                .is_some_and(|v| v.starts_with("veth")),
            "{legs}"
        );
    }
    let outcomes = probe_all(
        &[
            Probe::tcp(&c_ns, task_ip.into(), PORT),
            Probe::tcp(&c_ns, host_gateway.into(), PORT),
        ],
        TIMEOUT,
    );
    assert!(outcomes.iter().all(Outcome::reached), "{outcomes:?}");
    let flows = || agent.flows_json(&["--proto", "tcp"]);
    let has = |flows: &[Value], container: &str, network: &str, direction: &str, dst: Ipv4Addr| {
        flows.iter().any(|f| {
            f["container"] == container
                && f["network"] == network
                && f["direction"] == direction
                && f["dst"] == dst.to_string()
                && f["dst_port"] == PORT
                && f["verdict"] == "forwarded"
        })
    };
    wait_for("the flows, named", Duration::from_secs(10), || {
        let flows = flows();
        has(&flows, &c.name, &network.name, "egress", task_ip)
            && has(&flows, &task, &network.name, "ingress", task_ip)
            && has(&flows, &c.name, GATEWAY_BRIDGE, "egress", host_gateway)
    });
    let flows = flows();
    let to_task = flows
        .iter()
        .find(|f| f["container"] == c.name.as_str() && f["dst"] == task_ip.to_string())
        .expect("c's flow to the task");
    assert_eq!(to_task["peer"], task.as_str(), "{to_task}");
    let at_task = flows
        .iter()
        .find(|f| f["container"] == task.as_str() && f["direction"] == "ingress")
        .expect("the task's flow");
    assert_eq!(at_task["service"], service.name.as_str(), "{at_task}");
    assert_eq!(at_task["peer"], c.name.as_str(), "{at_task}");

    // `status` names what it attached in the sandbox by container.
    let status = netwatch_json(&agent, &["status", "-o", "json"]);
    let attached = status["attached"].as_array().expect("attached");
    for (container, on) in [(&c.name, &network.name), (&task, &network.name)] {
        let whose = format!("{container} on {on}");
        let found = attached.iter().find(|a| a["endpoint"] == whose.as_str());
        let found = found.unwrap_or_else(|| panic!("{whose} not in {status}"));
        assert!(found["netns"].is_u64(), "{found}");
        assert!(
            found["ifname"]
                .as_str()
                .is_some_and(|n| n.ends_with("(in sandbox)")),
            "{found}"
        );
    }
    let leg = format!("{} on {GATEWAY_BRIDGE}", c.name);
    assert!(
        attached
            .iter()
            .any(|a| a["endpoint"] == leg.as_str() && a["netns"].is_null()),
        "{status}"
    );

    // The container goes: the agent follows Docker's events and takes
    // its pins in the sandbox away.
    let sandbox_veth = &endpoint(&overlay, &c.name)["overlay"];
    let (netns, ifindex) = (
        sandbox_veth["netns_cookie"].as_u64().expect("a cookie"),
        sandbox_veth["ifindex"].as_u64().expect("an ifindex") as u32,
    );
    assert!(pins::sandbox_veth_attached(
        agent.pin_root(),
        netns,
        ifindex
    ));
    docker_ok(&["rm", "-f", &c.name]);
    // The agent logs the detach once both pins are gone. Not the pins
    // first: `sandbox_veth_attached` turns false with the first pin
    // removed, and removing the second (a TCX detach under rtnl, while
    // dockerd tears the sandbox down) took long enough on a loaded CI run
    // that the log line was not there yet.
    let logged =
        format!("detached netwatch from sandbox veth ifindex {ifindex} of namespace {netns}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.log().contains(&logged) {
        assert!(
            Instant::now() < deadline,
            "no {logged:?} in the agent's log within 10 s:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !pins::attached_sandbox_veths(agent.pin_root()).contains(&(netns, ifindex)),
        "a pin of the sandbox veth is left after the logged detach"
    );
}

/// A container whose first act is `ping -c 400 -i 0.005 <to>` on
/// `network`: how many echoes were answered (each 5 ms apart).
fn answered_from_the_start(network: &TestNetwork, to: Ipv4Addr) -> u32 {
    let name = unique_name("ov-first");
    let id = docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        &network.name,
        TEST_IMAGE,
        "ping",
        "-c",
        "400",
        "-i",
        "0.005",
        "-W",
        "1",
        &to.to_string(),
    ]);
    let container = TestContainer { name, id };
    docker_ok(&["wait", &container.id]);
    let logs = docker_ok(&["logs", &container.id]);
    let line = logs
        .lines()
        .find(|l| l.contains("packets received"))
        .unwrap_or_else(|| panic!("no ping summary in {logs}"));
    line.split(", ")
        .nth(1)
        .and_then(|part| part.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {line:?}"))
}

#[test]
fn a_new_containers_sandbox_veth_is_enforced_before_its_first_packet_and_its_gateway_leg_is_not_yet()
 {
    let node = node();
    let swarm = &node.swarm;
    let internal = swarm.overlay("ovl-win", &["--internal"]);
    let denied = swarm.overlay("ovl-wout", &["--label", "netwatch.egress=deny"]);
    let gateway: Ipv4Addr = internal.ipam_field("Gateway").parse().expect("a gateway");
    // Docker alone: the overlay's gateway (its sandbox's br0) answers a
    // container's first pings.
    let alone = answered_from_the_start(&internal, gateway);
    assert!(
        alone > 0,
        "control: with Docker alone {gateway} should answer a new container's pings"
    );
    let agent = AgentProcess::start(NETWATCH, &[&internal.name, &denied.name]);
    wait_for("the agent synced", Duration::from_secs(20), || {
        agent.synced()
    });
    // The sandbox veth is attached as it is enslaved to br0 in the
    // sandbox, before the container runs: not one echo is answered, in
    // each of three starts.
    let answered: Vec<u32> = (0..3)
        .map(|_| answered_from_the_start(&internal, gateway))
        .collect();
    assert_eq!(
        answered,
        [0, 0, 0],
        "a new container's pings to its overlay's gateway were answered before its sandbox \
         veth was attached\n{}",
        agent.log()
    );
    // By the guard, not by a reconcile on Docker's `connect` event (which
    // comes early enough too, most of the time).
    let log = agent.log();
    assert!(
        log.lines().any(|line| line.contains(&format!(
            "of network {}, no container named yet (enforced network-wide)",
            internal.name
        )) && line.ends_with("as it appeared")),
        "the sandbox veths were attached as they appeared, not on Docker's events:\n{log}"
    );
    // The docker_gwbridge leg is attached on Docker's events still (which
    // overlay's container a new leg serves is not known as it appears,
    // docs/drivers.md): the host answers until then.
    let leg: Vec<u32> = (0..3)
        .map(|_| answered_from_the_start(&denied, swarm.gateway_bridge_gateway))
        .collect();
    assert!(
        leg.iter().all(|&n| n < 400),
        "docker_gwbridge leg: a container's pings were answered throughout: {leg:?}\n{}",
        agent.log()
    );
    eprintln!(
        "answered before the agent attached (5 ms per echo): Docker alone {alone}; sandbox veth \
         {answered:?}; docker_gwbridge leg {:?} ms",
        leg.iter().map(|n| n * 5).collect::<Vec<_>>()
    );
}
