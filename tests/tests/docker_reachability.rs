//! The reachability matrix: the seed's compose topology (frontend; backend
//! and db internal; api-gateway on frontend+backend, auth-service on
//! backend+db), a service listening on the host, and an outside namespace
//! of the test's own (203.0.113.7, routing the container subnets back
//! through the host). Every ordered pair — container → container (each of
//! its addresses), container → each network's gateway, container → another
//! host address (203.0.113.1), container → outside, outside → container —
//! is probed over TCP, UDP and ICMP, first with Docker alone, then with the
//! netwatch agent (uplink shield on the outside link), in three host states:
//!
//! - Docker's iptables rules intact;
//! - the isolation chains flushed and FORWARD policy ACCEPT (a firewall
//!   reload, an admin's flush);
//! - a dockerd started with `--iptables=false` (a private second daemon, so
//!   the main one keeps running), FORWARD ACCEPT.
//!
//! Docker 20.10 gives containers on internal networks a default route via
//! the gateway (later releases give none; the test then adds one, as a
//! container with NET_ADMIN could), so every denial below is a packet
//! filter's and not a missing route's.
//!
//! With netwatch: every path into or out of an internal network beyond its
//! own subnet is closed (zero leaks), every intra-network path works (zero
//! false drops), paths netwatch does not govern (normal networks to the
//! host and the outside) behave exactly as without it, every closed path
//! left a drop record naming the container and the reason in the agent's
//! log (`kernel:netfilter_drop` where Docker's FORWARD rules dropped it
//! before netwatch's hook at the destination saw it), and `netwatch explain
//! --from-kernel` gives the observed verdict for every cell with the kernel
//! agreeing. The Docker-alone results are printed and written to
//! `$CARGO_TARGET_TMPDIR/reachability-<state>.md`.
//!
//! Safety: probes go only to the test's containers, the host's own
//! addresses (its bridges' gateways, 203.0.113.1) and the test's outside
//! namespace; before anything is sent, each source namespace's route to
//! each target is checked to leave through an interface of the test's.

use std::{
    collections::BTreeMap, fmt::Write as _, net::IpAddr, process::Command, sync::Mutex,
    time::Duration,
};

use netwatch::datapath::{Hook, pins};
use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{compose_env, docker_ok, require_dockerd, unique_name},
    dockerd::PrivateDockerd,
    fixture::require_root,
    hostfw::IptablesState,
    outside::OutsideLink,
    reach::{Listeners, Netns, Outcome, Probe, Proto, assert_route_via, probe_all, route_get},
};
use serde_json::Value;

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");
const COMPOSE_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/seed/docker-compose.yml"
);
/// Where every listener listens (TCP and UDP).
const PORT: u16 = 47810;
/// The reason of a drop record for a packet Docker's iptables rules dropped.
const DOCKER_FORWARD_DROP: &str = "kernel:netfilter_drop";
/// A closed path costs one timeout; all probes of a phase run at once.
const TIMEOUT: Duration = Duration::from_millis(1500);
const SETTLE: Duration = Duration::from_secs(20);

/// The three host states share the host's firewall, the outside link and
/// the docker helpers' daemon choice: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The seed's services and their networks, in compose order (a service's
/// first network is where the test points its default route when Docker
/// gives it none).
const SERVICES: [(&str, &[&str]); 4] = [
    ("frontend", &["frontend"]),
    ("api-gateway", &["frontend", "backend"]),
    ("auth-service", &["backend", "db"]),
    ("db", &["db"]),
];
const NETWORKS: [(&str, bool); 3] = [("frontend", false), ("backend", true), ("db", true)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostState {
    DockerRulesIntact,
    IsolationFlushed,
    DockerdWithoutIptables,
}

impl HostState {
    fn title(self) -> &'static str {
        match self {
            HostState::DockerRulesIntact => "Docker's rules intact",
            HostState::IsolationFlushed => "isolation chains flushed, FORWARD ACCEPT",
            HostState::DockerdWithoutIptables => "dockerd --iptables=false",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            HostState::DockerRulesIntact => "intact",
            HostState::IsolationFlushed => "flushed",
            HostState::DockerdWithoutIptables => "no-iptables",
        }
    }
}

/// A compose project of the seed file, brought down on drop.
struct Project(String);

impl Project {
    fn up() -> Project {
        let project = Project(unique_name("matrix"));
        let out = compose(&project.0, &["up", "-d"]);
        assert!(
            out.status.success(),
            "docker-compose up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        project
    }

    fn network(&self, short: &str) -> String {
        format!("{}_{short}", self.0)
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.0)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = compose(&self.0, &["down", "-t", "0"]);
    }
}

fn compose(project: &str, args: &[&str]) -> std::process::Output {
    Command::new("docker-compose")
        .args(["-f", COMPOSE_FILE, "-p", project])
        .args(args)
        .envs(compose_env())
        .output()
        .expect("docker-compose is installed by `cargo xtask setup`")
}

struct Network {
    short: &'static str,
    name: String,
    internal: bool,
    subnet: String,
    gateway: IpAddr,
}

struct Service {
    short: &'static str,
    container: String,
    netns: Netns,
    /// (network short name, address), in compose order.
    addresses: Vec<(&'static str, IpAddr)>,
}

struct Topology {
    networks: Vec<Network>,
    services: Vec<Service>,
}

impl Topology {
    fn discover(project: &Project) -> Topology {
        let networks = NETWORKS
            .iter()
            .map(|&(short, internal)| {
                let name = project.network(short);
                let ipam: Value = serde_json::from_str(&docker_ok(&[
                    "network",
                    "inspect",
                    "--format",
                    "{{json .IPAM.Config}}",
                    &name,
                ]))
                .unwrap();
                Network {
                    short,
                    name,
                    internal,
                    subnet: ipam[0]["Subnet"].as_str().unwrap().to_string(),
                    gateway: ipam[0]["Gateway"].as_str().unwrap().parse().unwrap(),
                }
            })
            .collect();
        let services = SERVICES
            .iter()
            .map(|&(short, nets)| {
                let container = project.container(short);
                let pid: u32 = docker_ok(&["inspect", "--format", "{{.State.Pid}}", &container])
                    .parse()
                    .unwrap();
                let attached: Value = serde_json::from_str(&docker_ok(&[
                    "inspect",
                    "--format",
                    "{{json .NetworkSettings.Networks}}",
                    &container,
                ]))
                .unwrap();
                let addresses = nets
                    .iter()
                    .map(|net| {
                        let ip = attached[project.network(net)]["IPAddress"]
                            .as_str()
                            .unwrap_or_else(|| panic!("{container} has no address on {net}"));
                        (*net, ip.parse().unwrap())
                    })
                    .collect();
                Service {
                    short,
                    container,
                    netns: Netns::of_pid(pid),
                    addresses,
                }
            })
            .collect();
        Topology { networks, services }
    }

    fn network(&self, short: &str) -> &Network {
        self.networks.iter().find(|n| n.short == short).unwrap()
    }

    fn internal(&self, short: &str) -> bool {
        self.network(short).internal
    }

    /// The network a packet from `service` to `dst` leaves by: the one
    /// whose subnet holds `dst`, else the one whose gateway the container's
    /// route goes via.
    fn egress_network(&self, service: &Service, dst: IpAddr) -> &'static str {
        if let Some((net, _)) = service
            .addresses
            .iter()
            .find(|(net, _)| contains(&self.network(net).subnet, dst))
        {
            return net;
        }
        let route =
            route_get(&service.netns, dst).unwrap_or_else(|e| panic!("{}: {e}", service.container));
        service
            .addresses
            .iter()
            .map(|(net, _)| *net)
            .find(|net| route.via == Some(self.network(net).gateway))
            .unwrap_or_else(|| {
                panic!(
                    "{} routes {dst} via none of its networks' gateways: {}",
                    service.container, route.text
                )
            })
    }

    /// Docker 20.10 gives a container on internal networks a default route
    /// through the gateway; later releases give it none. Where there is
    /// none, add one via the first network's gateway (as a container with
    /// NET_ADMIN could), so that every closed path below is closed by a
    /// packet filter, not by a missing route.
    fn ensure_default_routes(&self) {
        for service in &self.services {
            let routes = service.netns.run_ok("ip", &["route", "show", "default"]);
            if routes.trim().is_empty() {
                let gateway = self.network(service.addresses[0].0).gateway.to_string();
                service
                    .netns
                    .run_ok("ip", &["route", "add", "default", "via", &gateway]);
            }
        }
    }
}

fn contains(cidr: &str, ip: IpAddr) -> bool {
    let cidr: netwatch::policy::Cidr = cidr.parse().unwrap();
    cidr.contains(&ip)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum From {
    Service(usize),
    Outside,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum To {
    /// A service's address on a network.
    Service(usize, &'static str),
    Gateway(&'static str),
    HostAddress,
    Outside,
}

/// What netwatch promises for a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Inside one network: must work.
    Open,
    /// Into or out of an internal network beyond its subnets: must fail.
    Closed,
    /// A normal network's traffic to the host or the outside: netwatch
    /// observes it; it must behave exactly as without netwatch.
    NotGoverned,
}

#[derive(Clone, Debug)]
struct Cell {
    from: From,
    to: To,
    proto: Proto,
    src: IpAddr,
    dst: IpAddr,
    expect: Expect,
    /// The container a drop record must name, and its direction.
    owner: Option<(usize, &'static str)>,
    /// The deny happens only after the packet crossed the host's FORWARD
    /// chain (at the destination's bridge or veth), where Docker's rules may
    /// already have dropped it.
    denied_after_forward: bool,
    /// A row of the summary table.
    class: &'static str,
}

impl Cell {
    fn label(&self, topo: &Topology) -> String {
        let from = match self.from {
            From::Service(s) => topo.services[s].short.to_string(),
            From::Outside => "outside".to_string(),
        };
        let to = match self.to {
            To::Service(s, net) => format!("{}@{net}", topo.services[s].short),
            To::Gateway(net) => format!("gateway@{net}"),
            To::HostAddress => "host 203.0.113.1".to_string(),
            To::Outside => "outside".to_string(),
        };
        format!("{from} -> {to} {} ({})", self.proto, self.dst)
    }

    fn destination_arg(&self) -> String {
        match self.proto {
            Proto::Icmp => self.dst.to_string(),
            Proto::Tcp => format!("{}:{PORT}/tcp", self.dst),
            Proto::Udp => format!("{}:{PORT}/udp", self.dst),
        }
    }
}

fn cells(topo: &Topology, outside: &OutsideLink) -> Vec<Cell> {
    let mut out = Vec::new();
    let protos = [Proto::Tcp, Proto::Udp, Proto::Icmp];
    for (s, service) in topo.services.iter().enumerate() {
        let mut targets: Vec<(To, IpAddr)> = Vec::new();
        for (d, peer) in topo.services.iter().enumerate().filter(|(d, _)| *d != s) {
            for &(net, ip) in &peer.addresses {
                targets.push((To::Service(d, net), ip));
            }
        }
        for network in &topo.networks {
            targets.push((To::Gateway(network.short), network.gateway));
        }
        targets.push((To::HostAddress, outside.host_ip()));
        targets.push((To::Outside, outside.outside_ip()));
        for (to, dst) in targets {
            let out_net = topo.egress_network(service, dst);
            let src = service
                .addresses
                .iter()
                .find(|(net, _)| *net == out_net)
                .unwrap()
                .1;
            let source_internal = topo.internal(out_net);
            let (expect, owner, after_forward, class) = match to {
                To::Service(_, net) if net == out_net => (
                    Expect::Open,
                    None,
                    false,
                    "container → container, same network",
                ),
                To::Service(d, net) => {
                    if source_internal {
                        (
                            Expect::Closed,
                            Some((s, "egress")),
                            false,
                            "internal → container on another network",
                        )
                    } else if topo.internal(net) {
                        (
                            Expect::Closed,
                            Some((d, "ingress")),
                            true,
                            "normal network → internal container (routed by the host)",
                        )
                    } else {
                        (Expect::NotGoverned, None, false, "normal → normal network")
                    }
                }
                To::Gateway(net) if source_internal && net == out_net => (
                    Expect::Closed,
                    Some((s, "egress")),
                    false,
                    "internal → its own gateway (the host)",
                ),
                To::Gateway(_) | To::HostAddress if source_internal => (
                    Expect::Closed,
                    Some((s, "egress")),
                    false,
                    "internal → another host address",
                ),
                To::Outside if source_internal => (
                    Expect::Closed,
                    Some((s, "egress")),
                    false,
                    "internal → outside",
                ),
                To::Gateway(_) | To::HostAddress => {
                    (Expect::NotGoverned, None, false, "normal → host")
                }
                To::Outside => (Expect::NotGoverned, None, false, "normal → outside"),
            };
            for proto in protos {
                out.push(Cell {
                    from: From::Service(s),
                    to,
                    proto,
                    src,
                    dst,
                    expect,
                    owner,
                    denied_after_forward: after_forward,
                    class,
                });
            }
        }
    }
    for (d, service) in topo.services.iter().enumerate() {
        for &(net, dst) in &service.addresses {
            let (expect, owner, class) = if topo.internal(net) {
                (
                    Expect::Closed,
                    Some((d, "ingress")),
                    "outside → internal container",
                )
            } else {
                (
                    Expect::NotGoverned,
                    None,
                    "outside → normal-network container",
                )
            };
            for proto in protos {
                out.push(Cell {
                    from: From::Outside,
                    to: To::Service(d, net),
                    proto,
                    src: outside.outside_ip(),
                    dst,
                    expect,
                    owner,
                    // The uplink shield acts before the stack routes it.
                    denied_after_forward: false,
                    class,
                });
            }
        }
    }
    out
}

fn probes(topo: &Topology, outside: &OutsideLink, cells: &[Cell]) -> Vec<Probe> {
    cells
        .iter()
        .map(|cell| {
            let from = match cell.from {
                From::Service(s) => &topo.services[s].netns,
                From::Outside => outside.netns(),
            };
            match cell.proto {
                Proto::Tcp => Probe::tcp(from, cell.dst, PORT),
                Proto::Udp => Probe::udp(from, cell.dst, PORT),
                Proto::Icmp => Probe::icmp(from, cell.dst),
            }
        })
        .collect()
}

/// The safety check: every probe's route leaves its namespace through an
/// interface the test made (a container's eth*, the outside's eth0).
fn check_routes(probes: &[Probe]) {
    let mut seen = std::collections::HashSet::new();
    for probe in probes {
        if seen.insert((probe.from.inode(), probe.dst)) {
            assert_route_via(&probe.from, probe.dst, &["eth"]);
        }
    }
}

/// The drop lines of the agent's log (see `ObservedEvent::log_line`).
fn drop_lines(log: &str) -> Vec<BTreeMap<String, String>> {
    log.lines()
        .filter_map(|line| line.split_once(" drop container="))
        .map(|(_, rest)| {
            format!("container={rest}")
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn record_for<'a>(
    records: &'a [BTreeMap<String, String>],
    topo: &Topology,
    cell: &Cell,
) -> Option<&'a BTreeMap<String, String>> {
    let (owner, direction) = cell.owner?;
    let dst = match cell.proto {
        Proto::Icmp => cell.dst.to_string(),
        _ => format!("{}:{PORT}", cell.dst),
    };
    records.iter().find(|r| {
        r.get("container") == Some(&topo.services[owner].container)
            && r.get("direction").map(String::as_str) == Some(direction)
            && r.get("proto").map(String::as_str) == Some(&cell.proto.to_string())
            && r.get("dst") == Some(&dst)
    })
}

fn explain(agent: &AgentProcess, topo: &Topology, cells: &[Cell]) -> Vec<Value> {
    let run = |cell: &Cell| -> Value {
        let source = match cell.from {
            From::Service(s) => topo.services[s].container.clone(),
            From::Outside => cell.src.to_string(),
        };
        let out = Command::new(NETWATCH)
            .args(["explain", &source, &cell.destination_arg(), "--from-kernel"])
            .args(["-o", "json", "--pin-root"])
            .arg(agent.pin_root())
            .envs(compose_env())
            .output()
            .unwrap();
        let parsed = serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null);
        if parsed.is_null() {
            Value::String(format!(
                "explain failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        } else {
            parsed
        }
    };
    // A few at a time: each one loads the programs for its kernel check.
    let mut results = vec![Value::Null; cells.len()];
    for (chunk_cells, chunk_out) in cells.chunks(8).zip(results.chunks_mut(8)) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunk_cells
                .iter()
                .map(|cell| scope.spawn(move || run(cell)))
                .collect();
            for (slot, handle) in chunk_out.iter_mut().zip(handles) {
                *slot = handle.join().unwrap();
            }
        });
    }
    results
}

fn word(reached: bool) -> &'static str {
    if reached { "open" } else { "closed" }
}

fn run_matrix(state: HostState) {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let daemon = (state == HostState::DockerdWithoutIptables)
        .then(|| PrivateDockerd::start(&["--iptables=false"]));
    let _daemon_choice = daemon.as_ref().map(PrivateDockerd::activate);
    require_dockerd();

    let project = Project::up();
    // After `up`: Docker writes its rules for the project's networks then.
    let firewall = IptablesState::save();
    match state {
        HostState::DockerRulesIntact => {}
        HostState::IsolationFlushed => {
            firewall.flush_docker_isolation();
            firewall.forward_policy_accept();
        }
        HostState::DockerdWithoutIptables => firewall.forward_policy_accept(),
    }
    let topo = Topology::discover(&project);
    topo.ensure_default_routes();
    let outside = OutsideLink::create();
    for network in &topo.networks {
        outside.add_route_via_host(&network.subnet);
    }
    let mut host_addresses: Vec<IpAddr> = topo.networks.iter().map(|n| n.gateway).collect();
    host_addresses.push(outside.host_ip());
    let _listeners: Vec<Listeners> = topo
        .services
        .iter()
        .map(|s| Listeners::start(&s.netns, &["0.0.0.0".parse().unwrap()], PORT))
        .chain([
            Listeners::start(&Netns::host(), &host_addresses, PORT),
            Listeners::start(outside.netns(), &[outside.outside_ip()], PORT),
        ])
        .collect();

    let cells = cells(&topo, &outside);
    let probes = probes(&topo, &outside, &cells);
    check_routes(&probes);
    let docker_alone = probe_all(&probes, TIMEOUT);

    let names: Vec<&str> = topo.networks.iter().map(|n| n.name.as_str()).collect();
    let agent = AgentProcess::start_with_uplinks(NETWATCH, &names, &[outside.host_ifname()]);
    wait_for("the agent's first sync", SETTLE, || agent.synced());
    let uplink_pin = pins::link_path(agent.pin_root(), Hook::Uplink, outside.host_ifindex());
    wait_for("the uplink shield", SETTLE, || uplink_pin.exists());
    // Every endpoint of the project: 6 veths, plus the 2 internal bridges.
    wait_for("every veth and internal bridge attached", SETTLE, || {
        pins::attached_tc_ifindexes(agent.pin_root()).len() == 8
    });
    let with_netwatch = probe_all(&probes, TIMEOUT);
    // Wait until every closed cell has its drop record (or SETTLE passes; the
    // cells still without one fail below, named). netwatch's own drops come
    // through its ring within 25 ms; the drops Docker's FORWARD rules made
    // first come from the kernel drop program, reported once per key per
    // drop-report interval (1 s), so later: a check that stops waiting at
    // the first kind sees the second kind or not by chance.
    let deadline = std::time::Instant::now() + SETTLE;
    let records = loop {
        let records = drop_lines(&agent.log());
        let complete = cells.iter().all(|cell| {
            cell.expect != Expect::Closed || record_for(&records, &topo, cell).is_some()
        });
        if complete || std::time::Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let explained = explain(&agent, &topo, &cells);

    let mut failures = Vec::new();
    let (mut closed, mut recorded, mut by_docker) = (0, 0, 0);
    let mut classes: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for (i, cell) in cells.iter().enumerate() {
        let label = cell.label(&topo);
        let before = docker_alone[i].reached();
        let after = with_netwatch[i].reached();
        let entry = classes.entry(cell.class).or_default();
        entry.0 += 1;
        entry.1 += usize::from(before);
        entry.2 += usize::from(after);
        match cell.expect {
            Expect::Open if !after => failures.push(format!(
                "FALSE DROP {label}: {} with netwatch",
                with_netwatch[i]
            )),
            Expect::Closed if after => failures.push(format!("LEAK {label}: open with netwatch")),
            Expect::NotGoverned if before != after => failures.push(format!(
                "CHANGED {label}: {} without netwatch, {} with",
                docker_alone[i], with_netwatch[i]
            )),
            _ => {}
        }
        // Where Docker's own rules are gone, Docker alone leaves every
        // cell netwatch closes open: the block is netwatch's, not theirs.
        if state != HostState::DockerRulesIntact && cell.expect == Expect::Closed && !before {
            failures.push(format!(
                "CONTROL {label}: {} with Docker alone, though its rules are gone",
                docker_alone[i]
            ));
        }
        // A block counts only as a timeout on a path that exists (routes
        // were checked): a refusal or an unreachable error is something
        // else answering.
        if cell.expect == Expect::Closed
            && let Outcome::Blocked(why) = &with_netwatch[i]
            && !why.starts_with("timeout")
        {
            failures.push(format!(
                "NOT A SILENT DROP {label}: {} with netwatch",
                with_netwatch[i]
            ));
        }
        // Drop records: every closed path, whoever closed it. Where Docker's
        // FORWARD rules drop the packet before it reaches netwatch's hook at
        // the destination, the kernel drop program records it as theirs.
        let record = record_for(&records, &topo, cell);
        let docker_dropped_first = cell.denied_after_forward && !before;
        if cell.expect == Expect::Closed {
            closed += 1;
            match record {
                Some(_) if docker_dropped_first => by_docker += 1,
                Some(_) => recorded += 1,
                None => failures.push(format!("NO DROP RECORD {label}")),
            }
        }
        // explain: the observed verdict, the kernel agreeing, and the
        // record's reason where the packet was not rewritten by NAT.
        let e = &explained[i];
        let verdict = e["verdict"].as_str().unwrap_or("?");
        let wanted = if cell.expect == Expect::Closed {
            "dropped"
        } else {
            "forwarded"
        };
        if verdict != wanted || e["kernel_agrees"] != Value::Bool(true) {
            failures.push(format!(
                "EXPLAIN {label}: verdict {verdict} (want {wanted}), kernel_agrees {}: {e}",
                e["kernel_agrees"]
            ));
        }
        if let Some(record) = record {
            let unrewritten = record
                .get("src")
                .is_some_and(|src| src.split(':').next() == Some(&cell.src.to_string()));
            // explain judges by netwatch's policy; a packet Docker dropped
            // first never met it.
            let (want, source) = if docker_dropped_first {
                (
                    Some(DOCKER_FORWARD_DROP),
                    "Docker's FORWARD rules dropped it first",
                )
            } else {
                (e["reason"].as_str(), "explain")
            };
            if unrewritten && record.get("reason").map(String::as_str) != want {
                failures.push(format!(
                    "REASON {label}: record says {:?}, want {want:?} ({source})",
                    record.get("reason"),
                ));
            }
        }
    }

    let mut table = format!(
        "### {}\n\n| path | probes | Docker alone: open | with netwatch: open |\n|---|---|---|---|\n",
        state.title()
    );
    for (class, (n, before, after)) in &classes {
        writeln!(table, "| {class} | {n} | {before} | {after} |").unwrap();
    }
    writeln!(
        table,
        "\n{closed} closed paths, each with a drop record naming the container: {recorded} \
         dropped by netwatch, {by_docker} by Docker's FORWARD rules before reaching \
         netwatch (`{DOCKER_FORWARD_DROP}`); \
         `explain --from-kernel` checked on all {} cells.",
        cells.len()
    )
    .unwrap();
    let mut detail = String::new();
    for (i, cell) in cells.iter().enumerate() {
        writeln!(
            detail,
            "{:<60} docker alone: {:<6} with netwatch: {:<6} expected: {:?}",
            cell.label(&topo),
            word(docker_alone[i].reached()),
            word(with_netwatch[i].reached()),
            cell.expect
        )
        .unwrap();
    }
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("reachability-{}.md", state.slug()));
    std::fs::write(&path, format!("{table}\n```\n{detail}```\n")).unwrap();
    println!("{table}\n{detail}");
    assert!(
        failures.is_empty(),
        "{} of {} cells failed in state '{}':\n{}\n\nagent log:\n{}",
        failures.len(),
        cells.len(),
        state.title(),
        failures.join("\n"),
        agent.log()
    );
}

#[test]
fn matrix_holds_with_dockers_rules_intact() {
    run_matrix(HostState::DockerRulesIntact);
}

#[test]
fn matrix_holds_with_the_isolation_chains_flushed_and_forward_accept() {
    run_matrix(HostState::IsolationFlushed);
}

#[test]
fn matrix_holds_with_dockerd_started_without_iptables() {
    run_matrix(HostState::DockerdWithoutIptables);
}
