//! IPv6 on real containers: the reachability matrix's IPv6 rows, on an
//! internal network with IPv6 (two containers, `a` and `b`), the host (the
//! network's IPv6 gateway and the outside link's 2001:db8:7e57::1) and an
//! outside namespace of the test's own (2001:db8:7e57::7, routing the
//! network's prefix back through the host). From `a`: to its neighbour, to
//! the gateway, to the other host address, to the outside, and to its
//! neighbour from a forged source (an address of the network that is not
//! `a`'s, added to its interface as a container with NET_ADMIN could); from
//! the outside: to `a`. TCP and UDP, ICMPv6 where no forged source is
//! involved.
//!
//! Docker 20.10 manages no ip6tables rules (only with the experimental
//! `ip6tables` option) and gives an internal network's containers an IPv6
//! default route through the gateway: with Docker alone every one of these
//! paths is open, in both host states — Docker's rules intact, and its
//! isolation chains flushed with FORWARD ACCEPT. With the agent, only the
//! neighbour is reachable, and every closed path left a drop record naming
//! `a`. Where a Docker of the future closes a path itself with its rules
//! intact, that cell proves nothing there and is listed, not counted; with
//! the rules flushed, every cell must be open without netwatch.
//!
//! Safety: probes go only to the test's containers, the host's own
//! addresses and the test's outside namespace; each source's route to each
//! target is checked to leave through an interface of the test's before
//! anything is sent.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{TestContainer, TestNetwork, require_dockerd},
    fixture::{require_root, tcx_program_counts},
    hostfw::IptablesState,
    outside::OutsideLink,
    reach::{Listeners, Netns, Outcome, Probe, Proto, assert_route_via, probe_all},
};

const AGENT: &str = env!("CARGO_BIN_EXE_netwatch-under-test");
const PORT: u16 = 47816;
/// A closed path costs one timeout; all probes of a phase run at once.
const TIMEOUT: Duration = Duration::from_millis(1500);
const SETTLE: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostState {
    DockerRulesIntact,
    IsolationFlushed,
}

/// One probe and what netwatch promises for it.
struct Cell {
    what: String,
    probe: Probe,
    /// Must work with netwatch (inside the network) or must not.
    open: bool,
    /// For a closed cell: the address a drop record of `a` names as the
    /// other end (or, for the forged source, as its source).
    recorded: IpAddr,
}

/// The network's IPv6 prefix: per process, so that a leftover of another
/// run cannot collide silently (Docker refuses an overlapping pool loudly).
fn prefix() -> (String, Ipv6Addr) {
    let tag = (std::process::id() & 0xffff) as u16;
    let base = Ipv6Addr::new(0xfd6e, 0x7761, tag, 0, 0, 0, 0, 0);
    (format!("{base}/64"), base)
}

fn in_prefix(base: Ipv6Addr, host: u16) -> Ipv6Addr {
    let mut segments = base.segments();
    segments[7] = host;
    Ipv6Addr::from(segments)
}

fn ipv6_of(container: &TestContainer, network: &TestNetwork) -> IpAddr {
    container
        .endpoint_field(network, "GlobalIPv6Address")
        .parse()
        .unwrap_or_else(|e| panic!("{} has no IPv6 address: {e}", container.name))
}

#[test]
fn an_internal_ipv6_network_reaches_only_its_own_prefix_where_docker_alone_leaves_it_open() {
    require_root();
    require_dockerd();
    for state in [HostState::DockerRulesIntact, HostState::IsolationFlushed] {
        run_matrix(state);
    }
}

fn run_matrix(state: HostState) {
    eprintln!("--- IPv6 rows, {state:?}");
    let outside = OutsideLink::create();
    outside.add_ipv6();
    let (subnet, base) = prefix();
    let network = TestNetwork::create("v6int", &["--internal", "--ipv6", "--subnet", &subnet]);
    outside.add_route_via_host(&subnet);
    let a = TestContainer::run("v6a", &["--network", &network.name]);
    let b = TestContainer::run("v6b", &["--network", &network.name]);
    let (a_ip, b_ip) = (ipv6_of(&a, &network), ipv6_of(&b, &network));
    // Docker gives the bridge the prefix's first address.
    let gateway = IpAddr::V6(in_prefix(base, 1));
    let a_ns = Netns::of_pid(a.pid());
    let b_ns = Netns::of_pid(b.pid());
    let forged = IpAddr::V6(in_prefix(base, 0x99));
    // Deprecated (preferred_lft 0), so the kernel never picks it as a
    // source by itself; a probe that binds it sends from it.
    let forged_cidr = format!("{forged}/128");
    a_ns.run_ok(
        "ip",
        &[
            "-6",
            "addr",
            "add",
            &forged_cidr,
            "dev",
            "eth0",
            "nodad",
            "preferred_lft",
            "0",
        ],
    );
    let host_ip6 = IpAddr::V6(OutsideLink::HOST_IP6);
    let outside_ip6 = IpAddr::V6(OutsideLink::OUTSIDE_IP6);
    for dst in [gateway, host_ip6, outside_ip6] {
        assert_route_via(&a_ns, dst, &["eth0"]);
    }
    assert_route_via(outside.netns(), a_ip, &["eth0"]);
    wait_for(
        "the bridge's IPv6 gateway address to be usable",
        SETTLE,
        || {
            let held = Netns::host().run_ok(
                "ip",
                &["-6", "-o", "addr", "show", "dev", &network.bridge()],
            );
            held.contains(&format!(" {gateway}/")) && !held.contains("tentative")
        },
    );
    let _listeners = [
        Listeners::start(&a_ns, &[a_ip], PORT),
        Listeners::start(&b_ns, &[b_ip], PORT),
        Listeners::start(&Netns::host(), &[gateway, host_ip6], PORT),
        Listeners::start(outside.netns(), &[outside_ip6], PORT),
    ];

    let mut cells = Vec::new();
    let mut add = |what: &str, probe: Probe, open: bool, recorded: IpAddr| {
        cells.push(Cell {
            what: format!("{what}: {probe}"),
            probe,
            open,
            recorded,
        });
    };
    for proto in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
        let from_a = |dst: IpAddr| Probe {
            proto,
            ..Probe::tcp(&a_ns, dst, PORT)
        };
        add("a → its neighbour", from_a(b_ip), true, b_ip);
        add(
            "a → the gateway (the host)",
            from_a(gateway),
            false,
            gateway,
        );
        add(
            "a → another host address",
            from_a(host_ip6),
            false,
            host_ip6,
        );
        add("a → the outside", from_a(outside_ip6), false, outside_ip6);
        let from_outside = Probe {
            proto,
            ..Probe::tcp(outside.netns(), a_ip, PORT)
        };
        add("the outside → a", from_outside, false, outside_ip6);
        if proto != Proto::Icmp {
            let spoofed = from_a(b_ip).from_addr(forged);
            add(
                "a → its neighbour from a forged source",
                spoofed,
                false,
                forged,
            );
        }
    }

    let mut firewall = IptablesState::save();
    if state == HostState::IsolationFlushed {
        firewall.flush_docker_isolation();
        firewall.forward_policy_accept();
    }
    let probes: Vec<Probe> = cells.iter().map(|c| c.probe.clone()).collect();
    let alone = probe_all(&probes, TIMEOUT);
    let mut exempt = Vec::new();
    for (cell, outcome) in cells.iter().zip(&alone) {
        eprintln!("Docker alone: {} — {outcome}", cell.what);
        if !outcome.reached() {
            assert!(
                state == HostState::DockerRulesIntact && !cell.open,
                "without netwatch, {} must be open ({state:?}): {outcome}",
                cell.what
            );
            exempt.push(cell.what.clone());
        }
    }
    assert!(
        exempt.len() < cells.len() / 2,
        "Docker alone closed most IPv6 paths; this test proves little here: {exempt:?}"
    );

    let agent = AgentProcess::start(AGENT, &[&network.name]);
    wait_for("the agent's first sync", SETTLE, || agent.synced());
    wait_for("both veths attached", SETTLE, || {
        [&a, &b].iter().all(|c| {
            let veth = nix::net::if_::if_indextoname(c.host_veth(&network)).expect("veth exists");
            tcx_program_counts(veth.to_str().expect("UTF-8 name")) == (1, 1)
        })
    });
    let guarded = probe_all(&probes, TIMEOUT);
    for ((cell, outcome), before) in cells.iter().zip(&guarded).zip(&alone) {
        eprintln!("with netwatch: {} — {outcome}", cell.what);
        if cell.open {
            assert_eq!(
                *outcome,
                Outcome::Reached,
                "{} must stay open; a's drops: {:?}",
                cell.what,
                agent
                    .flows_json(&["--container", &a.name])
                    .iter()
                    .filter(|f| f["verdict"] == "dropped")
                    .collect::<Vec<_>>()
            );
        } else if before.reached() {
            assert!(
                matches!(outcome, Outcome::Blocked(why) if why.starts_with("timeout")),
                "{} must be closed by netwatch (a drop gives no answer): {outcome}",
                cell.what
            );
        }
    }
    let mut flows = Vec::new();
    let unrecorded = |flows: &[serde_json::Value]| -> Vec<String> {
        cells
            .iter()
            .filter(|c| !c.open)
            .filter(|c| {
                !flows.iter().any(|f| {
                    f["verdict"] == "dropped"
                        && (f["src"] == c.recorded.to_string()
                            || f["dst"] == c.recorded.to_string())
                })
            })
            .map(|c| c.what.clone())
            .collect()
    };
    wait_for("a drop record of a for every closed cell", SETTLE, || {
        flows = agent.flows_json(&["--container", &a.name]);
        unrecorded(&flows).is_empty()
    });
    assert!(
        flows
            .iter()
            .any(|f| f["src"] == forged.to_string() && f["reason"] == "spoofed-source"),
        "the forged source is named as such: {flows:?}"
    );
    firewall
        .restore()
        .expect("the saved iptables rules come back");
}
