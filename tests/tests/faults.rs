//! Faults around a running agent: it is SIGKILLed in the middle of traffic
//! and of a burst of container churn, and the dockerd it follows goes away
//! and comes back with its containers on new veths (or not at all).
//!
//! What must hold through every fault: not one packet from a network whose
//! egress netwatch denies reaches the host or the outside (listeners count
//! what arrives, a prober inside the network keeps trying all along; the
//! kill test's network is denied by label, not `--internal`, and Docker
//! alone lets its prober through first, so the block is netwatch's; the
//! dockerd test's daemon runs without iptables), allowed long-lived
//! TCP streams are never cut, and once the agent runs and Docker answers
//! again, exactly the live endpoints carry exactly one program per
//! direction.
//!
//! Safety: probes and streams go only to the test's containers, the host's
//! own addresses (its bridges' gateways, 203.0.113.1 of the test's outside
//! link) and the test's outside namespace; each source's route to each
//! target is checked to leave through an interface of the test's before
//! anything is sent.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{ErrorKind, Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use netwatch::datapath::pins;
use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{TestContainer, TestNetwork, docker_ok, require_dockerd},
    dockerd::PrivateDockerd,
    fixture::{require_root, tcx_program_counts},
    outside::OutsideLink,
    reach::{Listeners, Netns, Outcome, Probe, assert_route_via, probe, probe_all, snmp},
};

const AGENT: &str = env!("CARGO_BIN_EXE_netwatch-under-test");
/// Where the listeners that count escapes listen (TCP and UDP).
const PORT: u16 = 47850;
/// Where the long-lived streams' servers listen.
const STREAM_PORT: u16 = 47851;
/// One prober batch: every blocked probe costs this much.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// For "eventually" conditions: the machine has two cores and other test
/// runs share it.
const SETTLE: Duration = Duration::from_secs(45);

/// Both tests use the outside link or switch the docker helpers to a
/// private dockerd, which are process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn gateway(network: &TestNetwork) -> IpAddr {
    network.ipam_field("Gateway").parse().unwrap()
}

fn address(container: &TestContainer, network: &TestNetwork) -> IpAddr {
    container
        .endpoint_field(network, "IPAddress")
        .parse()
        .unwrap()
}

fn ifindex(name: &str) -> u32 {
    nix::net::if_::if_nametoindex(name).unwrap_or_else(|e| panic!("no interface {name}: {e}"))
}

fn tcx_programs(ifindex: u32) -> (usize, usize) {
    match nix::net::if_::if_indextoname(ifindex) {
        Ok(name) => tcx_program_counts(name.to_str().expect("interface names are UTF-8")),
        Err(_) => (0, 0),
    }
}

/// The interfaces enslaved to `bridge` (the host veths of its endpoints),
/// by ifindex: Docker's endpoints as the kernel sees them, independent of
/// what Docker or the agent say.
fn bridge_ports(bridge: &str) -> BTreeSet<u32> {
    std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .into_iter()
        .flatten()
        .flatten()
        // A port listed a moment ago may be gone already.
        .filter_map(|port| nix::net::if_::if_nametoindex(port.file_name().as_os_str()).ok())
        .collect()
}

/// Docker 20.10 gives a container on an internal network a default route
/// through the gateway; later releases give it none. Where there is none,
/// add one (as a container with NET_ADMIN could), so that every denial is a
/// packet filter's and not a missing route's.
fn ensure_default_route(ns: &Netns, via: IpAddr) {
    if ns
        .run_ok("ip", &["route", "show", "default"])
        .trim()
        .is_empty()
    {
        ns.run_ok("ip", &["route", "add", "default", "via", &via.to_string()]);
    }
}

// ---------------------------------------------------------------------------
// A prober that never stops trying

/// What a [`Prober`] saw.
#[derive(Debug, Default)]
struct Tally {
    attempts: usize,
    batches: usize,
    /// Probes that got through, described.
    reached: Vec<String>,
    /// Why the others did not, with how often.
    reasons: BTreeMap<String, usize>,
}

/// Runs the same batch of probes (all at once, [`PROBE_TIMEOUT`] each) over
/// and over on its own thread until stopped.
struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Tally>>,
}

impl Prober {
    fn start(probes: Vec<Probe>) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("prober".into())
            .spawn(move || {
                let mut tally = Tally::default();
                while !flag.load(Ordering::Relaxed) {
                    let outcomes = probe_all(&probes, PROBE_TIMEOUT);
                    tally.batches += 1;
                    tally.attempts += outcomes.len();
                    for (probe, outcome) in probes.iter().zip(outcomes) {
                        match outcome {
                            Outcome::Reached => tally.reached.push(probe.to_string()),
                            Outcome::Blocked(why) => *tally.reasons.entry(why).or_default() += 1,
                        }
                    }
                }
                tally
            })
            .expect("spawn the prober");
        Prober {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().expect("not finished yet").join() {
            Ok(tally) => tally,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Long-lived streams

/// A TCP connection from a client namespace to a server namespace carrying
/// data continuously (8 KiB writes every 2 ms) on two threads of the test;
/// the reader counts bytes and the longest wait between two reads.
struct Stream {
    what: String,
    received: Arc<AtomicU64>,
    /// Longest wait between two successful reads, in milliseconds.
    longest_gap_ms: Arc<AtomicU64>,
    error: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    client: TcpStream,
}

impl Stream {
    fn open(what: &str, server: &Netns, server_ip: IpAddr, client: &Netns) -> Stream {
        let dst = SocketAddr::new(server_ip, STREAM_PORT);
        // A socket stays in the namespace it was created in, whichever
        // thread uses it later.
        let listener = server
            .run(|| TcpListener::bind(dst))
            .unwrap_or_else(|e| panic!("{what}: cannot listen on {dst} in {server:?}: {e}"));
        let sending = client
            .run(|| TcpStream::connect_timeout(&dst, Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("{what}: cannot connect to {dst} from {client:?}: {e}"));
        let (receiving, _) = listener.accept().expect("accept the stream");
        drop(listener);
        let mut stream = Stream {
            what: what.to_owned(),
            received: Arc::default(),
            longest_gap_ms: Arc::default(),
            error: Arc::default(),
            stop: Arc::default(),
            threads: Vec::new(),
            client: sending.try_clone().expect("clone the client socket"),
        };
        let (stop, error) = (stream.stop.clone(), stream.error.clone());
        stream.threads.push(
            thread::Builder::new()
                .name(format!("{what} writer"))
                .spawn(move || write_until_stopped(sending, &stop, &error))
                .expect("spawn a writer"),
        );
        let (stop, error) = (stream.stop.clone(), stream.error.clone());
        let (received, gap) = (stream.received.clone(), stream.longest_gap_ms.clone());
        stream.threads.push(
            thread::Builder::new()
                .name(format!("{what} reader"))
                .spawn(move || read_until_stopped(receiving, &stop, &error, &received, &gap))
                .expect("spawn a reader"),
        );
        stream
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn error(&self) -> Option<String> {
        self.error.lock().unwrap().clone()
    }

    /// Stops both ends; the first error either end met, if any, and the
    /// longest gap between reads.
    fn finish(mut self) -> (Option<String>, Duration) {
        self.close();
        (
            self.error().map(|e| format!("{}: {e}", self.what)),
            Duration::from_millis(self.longest_gap_ms.load(Ordering::Relaxed)),
        )
    }

    fn close(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.shutdown(Shutdown::Both);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.close();
    }
}

fn note(error: &Mutex<Option<String>>, what: String) {
    error.lock().unwrap().get_or_insert(what);
}

fn write_until_stopped(mut socket: TcpStream, stop: &AtomicBool, error: &Mutex<Option<String>>) {
    // A stream held by a drop fills its buffers within a second or so and
    // then blocks the writer: that is a cut, not back pressure.
    let _ = socket.set_write_timeout(Some(Duration::from_secs(3)));
    let chunk = [0x5au8; 8192];
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = socket.write_all(&chunk) {
            if !stop.load(Ordering::Relaxed) {
                note(error, format!("write failed: {e}"));
            }
            return;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

fn read_until_stopped(
    mut socket: TcpStream,
    stop: &AtomicBool,
    error: &Mutex<Option<String>>,
    received: &AtomicU64,
    longest_gap_ms: &AtomicU64,
) {
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; 65536];
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match socket.read(&mut buf) {
            Ok(0) => {
                if !stop.load(Ordering::Relaxed) {
                    note(error, "the connection was closed (EOF)".into());
                }
                return;
            }
            Ok(n) => {
                received.fetch_add(n as u64, Ordering::Relaxed);
                longest_gap_ms.fetch_max(last.elapsed().as_millis() as u64, Ordering::Relaxed);
                last = Instant::now();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                if !stop.load(Ordering::Relaxed) {
                    note(error, format!("read failed: {e}"));
                }
                return;
            }
        }
    }
}

/// The byte counts of `streams` now.
fn sample(streams: &[&Stream]) -> Vec<u64> {
    streams.iter().map(|s| s.received()).collect()
}

// ---------------------------------------------------------------------------
// Checks

/// Every ifindex with a pinned link under `root`, with the ones that are
/// not in `want` or lack one program per direction, described.
fn attachment_problems(root: &std::path::Path, want: &BTreeSet<u32>) -> Vec<String> {
    let pinned = pins::attached_tc_ifindexes(root);
    let mut problems = Vec::new();
    for stale in pinned.difference(want) {
        let exists = nix::net::if_::if_indextoname(*stale).is_ok();
        problems.push(format!(
            "ifindex {stale} is pinned but no live endpoint ({})",
            if exists {
                "the interface exists"
            } else {
                "the interface is gone"
            }
        ));
    }
    for missing in want.difference(&pinned) {
        problems.push(format!(
            "ifindex {missing} is a live endpoint but not pinned"
        ));
    }
    for ifindex in want.intersection(&pinned) {
        if !pins::veth_attached(root, *ifindex) {
            problems.push(format!("ifindex {ifindex} lacks one of its two link pins"));
        }
        let programs = tcx_programs(*ifindex);
        if programs != (1, 1) {
            problems.push(format!(
                "ifindex {ifindex} carries {programs:?} TCX programs (ingress, egress), not (1, 1)"
            ));
        }
    }
    problems
}

fn assert_all_blocked(tally: &Tally, what: &str) {
    assert!(
        tally.reached.is_empty(),
        "{what}: {} probes got through: {:?}",
        tally.reached.len(),
        &tally.reached[..tally.reached.len().min(20)]
    );
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn agent_killed_during_traffic_and_container_churn_lets_nothing_escape_cuts_no_stream_and_converges_on_restart()
 {
    require_root();
    require_dockerd();
    let _serial = serial();
    let started = Instant::now();
    let outside = OutsideLink::create();
    // Egress denied by netwatch's label, not `--internal`: Docker alone lets
    // its containers reach the host and the outside (checked below), so
    // every block is netwatch's.
    let denied = TestNetwork::create("denied", &["--label", "netwatch.egress=deny"]);
    let front = TestNetwork::create("front", &[]);
    // The outside namespace answers the containers through the host.
    outside.add_route_via_host(&front.ipam_field("Subnet"));
    let prober = TestContainer::run("prober", &["--network", &denied.name]);
    let server = TestContainer::run("srv", &["--network", &denied.name]);
    let client = TestContainer::run("cli", &["--network", &denied.name]);
    let leaver = TestContainer::run("leaver", &["--network", &front.name]);

    let gw = gateway(&denied);
    let front_gw = gateway(&front);
    let prober_ns = Netns::of_pid(prober.pid());
    ensure_default_route(&prober_ns, gw);
    let targets_on_host = [gw, front_gw, outside.host_ip()];
    let targets: Vec<IpAddr> = targets_on_host
        .iter()
        .copied()
        .chain([outside.outside_ip()])
        .collect();
    for &target in &targets {
        assert_route_via(&prober_ns, target, &["eth"]);
    }
    let leaver_ns = Netns::of_pid(leaver.pid());
    assert_route_via(&leaver_ns, outside.outside_ip(), &["eth"]);
    let host_listeners = Listeners::start(&Netns::host(), &targets_on_host, PORT);
    let outside_listeners = Listeners::start(outside.netns(), &[outside.outside_ip()], PORT);
    // Docker alone: every probe of the prober gets through.
    let alone = probe_all(&probes_to(&prober_ns, &targets), PROBE_TIMEOUT);
    assert!(
        alone.iter().all(|o| o.reached()),
        "control: with Docker alone the prober should reach the host and the outside: {alone:?}"
    );
    let mut agent = AgentProcess::start(AGENT, &[&denied.name, &front.name]);
    let root = agent.pin_root().to_path_buf();
    let (denied_bridge, front_bridge) = (denied.bridge(), front.bridge());
    let want = || -> BTreeSet<u32> {
        let mut want = bridge_ports(&denied_bridge);
        want.extend(bridge_ports(&front_bridge));
        // An egress-denied network's bridge holds its routed egress even
        // before a new endpoint's veth is attached; a normal network's does
        // not.
        want.insert(ifindex(&denied_bridge));
        want
    };
    wait_for("the initial attachments", SETTLE, || {
        attachment_problems(&root, &want()).is_empty()
    });
    wait_for("the agent's first sync", SETTLE, || agent.synced());
    // What the control delivered (taken once the agent holds the network,
    // long after the control's last answer): escapes are counted from here.
    let (alone_tcp, alone_udp) = (
        host_listeners.tcp_accepted() + outside_listeners.tcp_accepted(),
        host_listeners.udp_received() + outside_listeners.udp_received(),
    );
    let echoes_alone = snmp(outside.netns(), ("Icmp", "InEchos"));
    let server_ns = Netns::of_pid(server.pid());
    let server_ip = address(&server, &denied);

    // Allowed all along: container to container inside the egress-denied
    // network, and a normal network's container to the outside.
    let inside = Stream::open(
        "internal peer stream",
        &server_ns,
        server_ip,
        &Netns::of_pid(client.pid()),
    );
    let outward = Stream::open(
        "normal network to outside stream",
        outside.netns(),
        outside.outside_ip(),
        &leaver_ns,
    );
    let streams = [&inside, &outward];
    let prober_run = Prober::start(probes_to(&prober_ns, &targets));
    thread::sleep(Duration::from_secs(2));
    let at_start = sample(&streams);

    // The burst: containers come and go before, while and after the agent
    // is dead. The ones attached before the kill and removed while it is
    // dead leave pins that only the restarted agent can clean up.
    let churn = |i: usize| TestContainer::run(&format!("churn{i}"), &["--network", &denied.name]);
    let remove = |c: &TestContainer| docker_ok(&["rm", "-f", &c.name]);
    let stop = |c: &TestContainer| docker_ok(&["stop", "-t", "0", &c.name]);
    let mut burst: Vec<TestContainer> = (0..6).map(churn).collect();
    let attached_before_kill: Vec<u32> = burst[..3].iter().map(|c| c.host_veth(&denied)).collect();
    wait_for("the first churned containers attached", SETTLE, || {
        attached_before_kill
            .iter()
            .all(|i| pins::veth_attached(&root, *i))
    });
    stop(&burst[3]);
    remove(&burst[4]);

    agent.kill();
    let killed_at = Instant::now();
    let at_kill = sample(&streams);
    burst.extend((6..12).map(churn));
    remove(&burst[0]);
    stop(&burst[1]);
    remove(&burst[6]);
    stop(&burst[7]);
    let late_veth = burst[8].host_veth(&denied);
    assert!(
        !pins::veth_attached(&root, late_veth),
        "no agent, no veth attachment"
    );
    thread::sleep(Duration::from_secs(1));
    let dead_for = killed_at.elapsed();
    let at_restart = sample(&streams);
    let pins_at_restart = pins::attached_tc_ifindexes(&root);

    agent.restart();
    let restarted_at = Instant::now();
    // The churn goes on while the restarted agent takes its first look.
    let (synced_after, more) = thread::scope(|scope| {
        let churning = scope.spawn(|| {
            let more: Vec<TestContainer> = (12..14).map(churn).collect();
            remove(&burst[2]);
            more
        });
        wait_for("the restarted agent's first sync", SETTLE, || {
            agent.synced()
        });
        let synced_after = restarted_at.elapsed();
        match churning.join() {
            Ok(more) => (synced_after, more),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    burst.extend(more);
    wait_for("convergence on the live endpoints", SETTLE, || {
        attachment_problems(&root, &want()).is_empty()
    });
    let converged_after = restarted_at.elapsed();
    thread::sleep(Duration::from_secs(2));
    let tally = prober_run.finish();
    let at_end = sample(&streams);
    let (inside_error, inside_gap) = inside.finish();
    let (outward_error, outward_gap) = outward.finish();

    let escapes_tcp = host_listeners.tcp_accepted() + outside_listeners.tcp_accepted() - alone_tcp;
    let escapes_udp = host_listeners.udp_received() + outside_listeners.udp_received() - alone_udp;
    let escapes_icmp = snmp(outside.netns(), ("Icmp", "InEchos")) - echoes_alone;
    println!(
        "prober: {} attempts in {} batches over {:?}; blocked because {:?}",
        tally.attempts,
        tally.batches,
        started.elapsed(),
        tally.reasons
    );
    println!(
        "escapes: tcp {escapes_tcp}, udp {escapes_udp}, icmp echo requests seen outside \
         {escapes_icmp}, probes answered {}",
        tally.reached.len()
    );
    println!(
        "stream bytes (internal, outward): start {at_start:?}, kill {at_kill:?}, restart \
         {at_restart:?}, end {at_end:?}; longest read gaps {inside_gap:?}, {outward_gap:?}"
    );
    println!(
        "agent dead for {dead_for:?}; from its restart: first sync after {synced_after:?}, \
         the live endpoints exactly attached after {converged_after:?} (the churn after the \
         restart included)"
    );
    println!(
        "pins at restart {pins_at_restart:?}, live endpoints now {:?}",
        want()
    );

    assert_all_blocked(
        &tally,
        "from the egress-denied network to the host and outside",
    );
    assert_eq!(
        (escapes_tcp, escapes_udp, escapes_icmp),
        (0, 0, 0),
        "packets from the egress-denied network arrived at the host or outside (tcp, udp, icmp)"
    );
    // 12 probes a batch, about three batches a second.
    assert!(
        tally.attempts >= 12 * 20,
        "the prober barely ran: {tally:?}"
    );
    assert!(
        tally.reasons.keys().all(|why| why.starts_with("timeout")),
        "every probe must have been sent and dropped on the way, not refused locally: {:?}",
        tally.reasons
    );
    for (stream, error) in [
        (&"internal peer", &inside_error),
        (&"outward", &outward_error),
    ] {
        assert_eq!(error, &None, "the {stream} stream was cut");
    }
    for (i, what) in ["internal peer", "outward"].iter().enumerate() {
        assert!(
            at_start[i] > 0
                && at_kill[i] > at_start[i]
                && at_restart[i] > at_kill[i]
                && at_end[i] > at_restart[i],
            "the {what} stream stalled: bytes at start, kill, restart, end: {} {} {} {}",
            at_start[i],
            at_kill[i],
            at_restart[i],
            at_end[i]
        );
    }
    for (what, gap) in [("internal peer", inside_gap), ("outward", outward_gap)] {
        assert!(
            gap < Duration::from_secs(2),
            "the {what} stream stood still for {gap:?}"
        );
    }
    for gone in &attached_before_kill {
        assert!(
            !pins::attached_tc_ifindexes(&root).contains(gone),
            "ifindex {gone} of a removed container is still pinned"
        );
    }
    assert!(
        !pins_at_restart.is_disjoint(&attached_before_kill.iter().copied().collect()),
        "the removed containers' pins were already gone before the restart: the test did not \
         leave stale pins to clean up"
    );
    assert!(
        pins::veth_attached(&root, late_veth),
        "a container started while the agent was dead is attached"
    );

    // Enforcement after the restart, from a container the dead agent never
    // saw: the host denied, the peer reached.
    assert_enforced(
        &burst[8],
        &server,
        &denied,
        &[front_gw, outside.host_ip()],
        "after the agent's restart",
    );
    assert_eq!(
        (
            host_listeners.tcp_accepted() + outside_listeners.tcp_accepted() - alone_tcp,
            host_listeners.udp_received() + outside_listeners.udp_received() - alone_udp
        ),
        (0, 0),
        "the host or the outside accepted a connection or datagram since the agent held the \
         network"
    );
}

/// `iptables -I FORWARD -i BR -o BR -j ACCEPT` until dropped. The main
/// dockerd sets the FORWARD policy to DROP and loads br_netfilter
/// (bridge-nf-call-iptables=1), so traffic *between two ports of one
/// bridge* crosses FORWARD too; Docker adds this rule for each of its own
/// networks, a dockerd with `--iptables=false` does not. Without it, peers
/// on the private daemon's network could not reach each other, netwatch or
/// not.
struct BridgeForwardAccept(String);

impl BridgeForwardAccept {
    fn insert(bridge: &str) -> BridgeForwardAccept {
        let rule = BridgeForwardAccept(bridge.to_owned());
        rule.iptables("-I");
        rule
    }

    fn iptables(&self, op: &str) {
        let bridge = self.0.as_str();
        let output = std::process::Command::new("iptables")
            .args([
                "-w", op, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT",
            ])
            .output()
            .expect("iptables");
        assert!(
            output.status.success() || thread::panicking(),
            "iptables {op} FORWARD for {bridge}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for BridgeForwardAccept {
    fn drop(&mut self) {
        self.iptables("-D");
    }
}

/// `docker inspect` of a container's state: (status, pid).
fn state(container: &TestContainer) -> (String, u32) {
    let text = docker_ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.Pid}}",
        &container.name,
    ]);
    let (status, pid) = text.split_once(' ').expect("status and pid");
    (status.to_owned(), pid.parse().expect("a pid"))
}

/// Waits until each of `containers` runs a process other than its pid in
/// `before` (a restart-always container started again by dockerd).
fn wait_restarted(containers: &[&TestContainer], before: &[(String, u32)]) {
    wait_for("the restart-always containers back", SETTLE, || {
        containers.iter().zip(before).all(
            |(c, (_, old))| matches!(state(c), (status, pid) if status == "running" && pid != *old),
        )
    });
}

/// From `prober`'s namespace as it is now: `network`'s gateway and the
/// other host addresses `more_host` answer no TCP, UDP or ICMP probe, and
/// `peer` (a listener in its namespace) answers TCP. `when` is for messages.
fn assert_enforced(
    prober: &TestContainer,
    peer: &TestContainer,
    network: &TestNetwork,
    more_host: &[IpAddr],
    when: &str,
) {
    let ns = Netns::of_pid(prober.pid());
    let gw = gateway(network);
    ensure_default_route(&ns, gw);
    let peer_ip = address(peer, network);
    let host: Vec<IpAddr> = [gw].iter().chain(more_host).copied().collect();
    for &target in host.iter().chain([&peer_ip]) {
        assert_route_via(&ns, target, &["eth"]);
    }
    let _listeners = Listeners::start(&Netns::of_pid(peer.pid()), &[peer_ip], PORT);
    let outcomes = probe_all(&probes_to(&ns, &host), Duration::from_secs(1));
    assert!(
        outcomes.iter().all(|o| !o.reached()),
        "{when}: the host answered probes from {}: {outcomes:?}",
        prober.name
    );
    let to_peer = probe(&Probe::tcp(&ns, peer_ip, PORT), Duration::from_secs(3));
    assert!(
        to_peer.reached(),
        "{when}: {} could not reach its peer {}: {to_peer}",
        prober.name,
        peer.name
    );
}

/// TCP, UDP and ICMP probes from `from` to each of `targets` (on [`PORT`]).
fn probes_to(from: &Netns, targets: &[IpAddr]) -> Vec<Probe> {
    targets
        .iter()
        .flat_map(|&dst| {
            [
                Probe::tcp(from, dst, PORT),
                Probe::udp(from, dst, PORT),
                Probe::icmp(from, dst),
            ]
        })
        .collect()
}

/// dockerd is SIGKILLed (a crash, the OOM killer), not stopped: a dockerd
/// stopped with SIGTERM without `--live-restore` stops every container
/// first, leaving nothing to enforce, while a crashed one leaves them
/// running, unsupervised, which is the window where enforcement must hold.
/// Started again (without `--live-restore`), Docker 20.10 stops the
/// containers it finds running, starts the `--restart always` ones again on
/// new veths and leaves one without a restart policy exited: stale pins on
/// veths that are gone, and new veths the agent has never seen. Then the
/// same with a SIGTERM stop, which stops the containers first, and an agent
/// that reconnects on its own (backoff from 1 s).
#[test]
fn dockerd_crashed_or_stopped_and_started_again_keeps_enforcing_and_the_agent_reconciles_new_and_gone_veths()
 {
    require_root();
    let _serial = serial();
    let mut daemon = PrivateDockerd::start(&["--iptables=false"]);
    let _active = daemon.activate();
    require_dockerd();
    let internal = TestNetwork::create("int", &["--internal"]);
    let other = TestNetwork::create("other", &[]);
    let bridge = internal.bridge();
    let _forward = BridgeForwardAccept::insert(&bridge);
    // `sleep` as PID 1 ignores SIGTERM: without a short stop timeout the
    // restarted dockerd would wait 10 s for each before answering.
    let always = [
        "--network",
        internal.name.as_str(),
        "--restart",
        "always",
        "--stop-timeout",
        "1",
    ];
    let prober = TestContainer::run("prober", &always);
    let peer = TestContainer::run("peer", &always);
    let keep = TestContainer::run("keep", &always);
    let gone = TestContainer::run(
        "gone",
        &["--network", &internal.name, "--stop-timeout", "1"],
    );
    let gw = gateway(&internal);
    let other_gw = gateway(&other);
    let host_listeners = Listeners::start(&Netns::host(), &[gw, other_gw], PORT);
    // Control: with Docker alone (no rules of its own, FORWARD accepted on
    // the bridge) the prober reaches both gateways, so every block below is
    // netwatch's.
    {
        let prober_ns = Netns::of_pid(prober.pid());
        ensure_default_route(&prober_ns, gw);
        for target in [gw, other_gw] {
            assert_route_via(&prober_ns, target, &["eth"]);
            let alone = probe(
                &Probe::tcp(&prober_ns, target, PORT),
                Duration::from_secs(3),
            );
            assert!(
                alone.reached(),
                "control: with Docker alone the prober should reach {target}: {alone}"
            );
        }
    }
    let (alone_tcp, alone_udp) = (host_listeners.tcp_accepted(), host_listeners.udp_received());
    let agent = AgentProcess::start(AGENT, &[&internal.name]);
    let root = agent.pin_root().to_path_buf();
    let want = || -> BTreeSet<u32> {
        let mut want = bridge_ports(&bridge);
        want.insert(ifindex(&bridge));
        want
    };
    wait_for("the initial attachments", SETTLE, || {
        attachment_problems(&root, &want()).is_empty()
    });
    wait_for("the agent's first sync", SETTLE, || agent.synced());
    let containers = [&prober, &peer, &keep, &gone];
    let old_veths = bridge_ports(&bridge);
    assert_eq!(old_veths.len(), containers.len());
    let before: Vec<(String, u32)> = containers.iter().map(|c| state(c)).collect();

    // The old namespaces are held only as long as needed: a held namespace
    // keeps its veth, and so a port on the bridge, after Docker let go of it.
    let (old_prober_run, peer_during_outage) = {
        let prober_ns = Netns::of_pid(prober.pid());
        ensure_default_route(&prober_ns, gw);
        let peer_ip = address(&peer, &internal);
        for target in [gw, other_gw, peer_ip] {
            assert_route_via(&prober_ns, target, &["eth"]);
        }
        let peer_listeners = Listeners::start(&Netns::of_pid(peer.pid()), &[peer_ip], PORT);
        let old_prober_run = Prober::start(probes_to(&prober_ns, &[gw, other_gw]));
        thread::sleep(Duration::from_secs(1));

        daemon.kill_daemon();
        wait_for("the agent to notice", SETTLE, || {
            agent.log().contains("lost Docker")
        });
        let peer_probe = probe(
            &Probe::tcp(&prober_ns, peer_ip, PORT),
            Duration::from_secs(3),
        );
        thread::sleep(Duration::from_secs(2));
        drop(peer_listeners);
        // Without Docker the agent still reads the ring buffer: the
        // prober's denied attempts are logged as they happen, by the names
        // of the last sync.
        let log = agent.log();
        let outage = &log[log.find("lost Docker").unwrap_or(0)..];
        assert!(
            outage.contains(&format!("drop container={}", prober.name)),
            "no drop record was logged while dockerd was down:\n{log}"
        );
        (old_prober_run, peer_probe)
    };
    assert!(
        peer_during_outage.reached(),
        "the peer was unreachable while dockerd was down: {peer_during_outage}"
    );

    // Frozen, the agent cannot attach anything: the restarted containers'
    // new veths are held by the bridge's program alone.
    agent.pause();
    let restart = Instant::now();
    daemon.start_again();
    let answered_after = restart.elapsed();
    wait_restarted(&[&prober, &peer, &keep], &before);
    let back_after = restart.elapsed();
    let restarts: Vec<String> = containers
        .iter()
        .map(|c| docker_ok(&["inspect", "--format", "{{.RestartCount}}", &c.name]))
        .collect();
    let states: Vec<(String, u32)> = containers.iter().map(|c| state(c)).collect();
    // The old prober's namespace, alive only through the prober's handle,
    // still holds its old address, which Docker may have given to another
    // container by now: let it go before probing from the new ones.
    let tally = old_prober_run.finish();
    wait_for("the old veths gone", SETTLE, || {
        bridge_ports(&bridge).is_disjoint(&old_veths)
    });
    let new_prober_veth = prober.host_veth(&internal);
    assert!(
        !pins::veth_attached(&root, new_prober_veth),
        "a frozen agent attached the new veth"
    );
    assert_enforced(
        &prober,
        &peer,
        &internal,
        &[other_gw],
        "restarted, before the agent attached the new veths",
    );

    agent.resume();
    let resumed = Instant::now();
    wait_for("the agent's log to say it reconnected", SETTLE, || {
        agent.log().contains("reconnected to Docker")
    });
    let reconnected_after = resumed.elapsed();
    wait_for("convergence on the live endpoints", SETTLE, || {
        attachment_problems(&root, &want()).is_empty()
    });
    let converged_after = resumed.elapsed();
    let resumed_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - resumed.elapsed().as_secs();
    // The status file is written just after the reconcile that the pins
    // show.
    wait_for(
        "the status file to show a sync since the resume",
        SETTLE,
        || {
            netwatch::agent::status_file::AgentStatus::read(&agent.run_dir).is_some_and(|s| {
                s.docker_error.is_none() && s.last_sync.is_some_and(|t| t >= resumed_unix)
            })
        },
    );
    let new_veths = bridge_ports(&bridge);

    println!(
        "states before {before:?}, after the restart {states:?} (restart counts \
         {restarts:?}); veths {old_veths:?} -> {new_veths:?}"
    );
    println!(
        "old prober (its container's old namespace, across the crash and restart): {} \
         attempts in {} batches, blocked because {:?}",
        tally.attempts, tally.batches, tally.reasons
    );
    println!(
        "escapes: tcp {}, udp {}, probes answered {}",
        host_listeners.tcp_accepted() - alone_tcp,
        host_listeners.udp_received() - alone_udp,
        tally.reached.len()
    );
    println!(
        "dockerd answered {answered_after:?} after its restart, containers running again \
         after {back_after:?}; from the agent's resume: reconnected after \
         {reconnected_after:?}, converged after {converged_after:?}"
    );

    assert_all_blocked(
        &tally,
        "from the internal network to the host, around the crash",
    );
    assert_eq!(
        (
            host_listeners.tcp_accepted() - alone_tcp,
            host_listeners.udp_received() - alone_udp
        ),
        (0, 0),
        "packets from the internal network arrived at the host (tcp, udp)"
    );
    assert!(tally.attempts >= 6 * 10, "the prober barely ran: {tally:?}");
    assert_eq!(
        states[3].0, "exited",
        "the container without a restart policy came back: {states:?}"
    );
    assert!(
        new_veths.is_disjoint(&old_veths) && new_veths.len() == 3,
        "the restarted containers should be on new veths only: {old_veths:?} -> {new_veths:?}"
    );
    let pinned = pins::attached_tc_ifindexes(&root);
    assert!(
        pinned.is_disjoint(&old_veths),
        "pins of veths that are gone remain: {pinned:?} (old veths {old_veths:?})"
    );

    assert_enforced(
        &prober,
        &peer,
        &internal,
        &[other_gw],
        "after the agent reconciled",
    );

    // Stopped the way a service manager stops it: dockerd stops its
    // containers, comes back and starts the restart-always ones on new
    // veths again; the agent, running all along, reconnects on its own.
    let before: Vec<(String, u32)> = containers.iter().map(|c| state(c)).collect();
    let stopped_veths = bridge_ports(&bridge);
    let losses = agent.log().matches("lost Docker").count();
    let stop = Instant::now();
    daemon.stop_daemon();
    wait_for("the agent to notice the stop", SETTLE, || {
        agent.log().matches("lost Docker").count() > losses
    });
    daemon.start_again();
    wait_restarted(&[&prober, &peer, &keep], &before);
    let back_again_after = stop.elapsed();
    wait_for(
        "the agent's log to say it reconnected again",
        SETTLE,
        || agent.log().matches("reconnected to Docker").count() == 2,
    );
    let reconnected_again_after = stop.elapsed();
    wait_for("convergence after the stop and start", SETTLE, || {
        attachment_problems(&root, &want()).is_empty()
    });
    let converged_again_after = stop.elapsed();
    let restarted_veths = bridge_ports(&bridge);
    println!(
        "dockerd stopped and started: containers back after {back_again_after:?}, the agent \
         reconnected after {reconnected_again_after:?} and converged after \
         {converged_again_after:?} (from the SIGTERM); veths {stopped_veths:?} -> \
         {restarted_veths:?}"
    );
    assert!(
        restarted_veths.is_disjoint(&stopped_veths) && restarted_veths.len() == 3,
        "the restarted containers should be on new veths only: {stopped_veths:?} -> \
         {restarted_veths:?}"
    );
    assert!(
        pins::attached_tc_ifindexes(&root).is_disjoint(&stopped_veths),
        "pins of veths that are gone remain"
    );
    assert_enforced(
        &prober,
        &peer,
        &internal,
        &[other_gw],
        "after the second reconcile",
    );
    assert_eq!(
        (
            host_listeners.tcp_accepted() - alone_tcp,
            host_listeners.udp_received() - alone_udp
        ),
        (0, 0),
        "packets from the internal network arrived at the host (tcp, udp)"
    );
}
