//! The reachability probes and listeners of `netwatch_tests::reach`, between
//! two namespaces of the test's own joined by a veth:
//!
//! ```text
//!   ns A  va 10.232.1.1/24  fd00:232::1/64 ──── vb 10.232.1.2/24 (+ .3)  fd00:232::2/64  ns B
//! ```
//!
//! Every address lives only inside these two namespaces; every probe goes
//! from A to B (or to an absent host of A's subnet, which no one answers).
//!
//! The last test checks `netwatch_tests::outside`: the host's veth to an
//! "outside" namespace of the test's own on 203.0.113.0/24, probed from the
//! host after checking that the route leads into that veth.

use std::{
    net::IpAddr,
    path::Path,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use netwatch_tests::{
    fixture::require_root,
    netns::run,
    outside::OutsideLink,
    reach::{
        Listeners, Netns, Outcome, Probe, Proto, assert_route_via, probe, probe_all, route_dev,
        route_get,
    },
};

const TIMEOUT: Duration = Duration::from_millis(1000);

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Two namespaces joined by a veth, deleted on drop.
struct Pair {
    a: Netns,
    b: Netns,
    /// Last, so the handles close before the namespaces are deleted.
    names: Cleanup,
}

const A_IP: &str = "10.232.1.1";
const B_IP: &str = "10.232.1.2";
/// A second address of B.
const B_IP2: &str = "10.232.1.3";
const A_IP6: &str = "fd00:232::1";
const B_IP6: &str = "fd00:232::2";

impl Pair {
    fn create() -> Pair {
        require_root();
        remove_stale();
        let prefix = format!(
            "nwr{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let names = [format!("{prefix}a"), format!("{prefix}b")];
        for name in &names {
            run(&["ip", "netns", "add", name]);
        }
        // The guard exists before anything can fail half-way.
        let names = Cleanup(names);
        let [na, nb] = &names.0;
        let sh = |ns: &str, cmd: &str| {
            let mut args = vec!["ip", "-n", ns];
            args.extend(cmd.split_whitespace());
            run(&args);
        };
        sh(
            na,
            &format!("link add va type veth peer name vb netns {nb}"),
        );
        // Links up before addresses: an IPv6 address added while its link
        // has no carrier joins its solicited-node group only some time
        // after the carrier comes up, and a neighbour solicitation sent
        // meanwhile is lost (the first probe then costs a 1 s retransmit).
        for (ns, dev) in [(na, "va"), (nb, "vb")] {
            sh(ns, &format!("link set {dev} up"));
            sh(ns, "link set lo up");
        }
        sh(na, &format!("addr add {A_IP}/24 dev va"));
        sh(na, &format!("addr add {A_IP6}/64 dev va nodad"));
        sh(nb, &format!("addr add {B_IP}/24 dev vb"));
        sh(nb, &format!("addr add {B_IP2}/24 dev vb"));
        sh(nb, &format!("addr add {B_IP6}/64 dev vb nodad"));
        Pair {
            a: Netns::named(na),
            b: Netns::named(nb),
            names,
        }
    }

    /// Before probing from A: the target must go out through A's veth.
    fn check_route(&self, dst: IpAddr) {
        assert_route_via(&self.a, dst, &["va"]);
    }
}

struct Cleanup([String; 2]);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// Deletes `nwr<pid>…` namespaces of test processes that are gone.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("nwr")
            .and_then(|rest| rest.split('x').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing namespace {name} left by an earlier test run");
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

fn blocked_because(outcome: &Outcome, why: &str) -> bool {
    matches!(outcome, Outcome::Blocked(reason) if reason.contains(why))
}

#[test]
fn tcp_udp_and_icmp_reach_a_listener() {
    let pair = Pair::create();
    let b = ip(B_IP);
    pair.check_route(b);
    let listeners = Listeners::start(&pair.b, &[b], 7001);
    let probes = [
        Probe::tcp(&pair.a, b, 7001),
        Probe::udp(&pair.a, b, 7001),
        Probe::icmp(&pair.a, b),
    ];
    let start = Instant::now();
    let outcomes = probe_all(&probes, TIMEOUT);
    eprintln!("3 reachable probes: {:?}", start.elapsed());
    assert_eq!(outcomes, vec![Outcome::Reached; 3]);
    assert_eq!(listeners.tcp_accepted(), 1);
    assert!(listeners.udp_received() >= 1);
    // Reached probes return as soon as they are answered.
    assert!(start.elapsed() < TIMEOUT / 2, "{:?}", start.elapsed());
}

#[test]
fn a_wildcard_listener_answers_from_the_address_it_was_sent_to() {
    let pair = Pair::create();
    let listeners = Listeners::start(&pair.b, &[ip("0.0.0.0"), ip("::")], 7002);
    let mut probes = Vec::new();
    for dst in [B_IP, B_IP2, B_IP6] {
        let dst = ip(dst);
        pair.check_route(dst);
        for proto in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
            probes.push(Probe {
                from: pair.a.clone(),
                dst,
                proto,
                port: 7002,
                src_port: 0,
                src_addr: None,
            });
        }
    }
    let outcomes = probe_all(&probes, TIMEOUT);
    for (probe, outcome) in probes.iter().zip(&outcomes) {
        assert_eq!(outcome, &Outcome::Reached, "{probe}");
    }
    assert_eq!(listeners.tcp_accepted(), 3);
    drop(listeners);
    // Stopped: the port is closed again.
    pair.check_route(ip(B_IP));
    let outcome = probe(&Probe::tcp(&pair.a, ip(B_IP), 7002), TIMEOUT);
    assert!(blocked_because(&outcome, "refused"), "{outcome}");
}

#[test]
fn ipv6_probes_reach_a_listener() {
    let pair = Pair::create();
    let b = ip(B_IP6);
    pair.check_route(b);
    let _listeners = Listeners::start(&pair.b, &[b], 7003);
    let outcomes = probe_all(
        &[
            Probe::tcp(&pair.a, b, 7003),
            Probe::udp(&pair.a, b, 7003),
            Probe::icmp(&pair.a, b),
        ],
        TIMEOUT,
    );
    assert_eq!(outcomes, vec![Outcome::Reached; 3]);
}

#[test]
fn a_port_without_listener_is_refused_quickly() {
    let pair = Pair::create();
    let b = ip(B_IP);
    pair.check_route(b);
    let _listeners = Listeners::start(&pair.b, &[b], 7004);
    let start = Instant::now();
    let outcomes = probe_all(
        &[
            Probe::tcp(&pair.a, b, 7999),
            Probe::udp(&pair.a, b, 7999),
            // The listener's address, on another port.
            Probe::tcp(&pair.a, b, 7005),
        ],
        TIMEOUT,
    );
    let elapsed = start.elapsed();
    eprintln!("refused probes: {outcomes:?} in {elapsed:?}");
    for outcome in &outcomes {
        assert!(blocked_because(outcome, "refused"), "{outcome}");
    }
    // Answered by a refusal, not left to time out (a liveness bound; the
    // figure is printed above).
    assert!(elapsed < TIMEOUT / 2, "{elapsed:?}");
}

#[test]
fn an_absent_host_is_blocked_after_the_timeout() {
    let pair = Pair::create();
    let absent = ip("10.232.1.77");
    pair.check_route(absent);
    for proto in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
        let start = Instant::now();
        let outcome = probe(
            &Probe {
                from: pair.a.clone(),
                dst: absent,
                proto,
                port: 7006,
                src_port: 0,
                src_addr: None,
            },
            TIMEOUT,
        );
        let elapsed = start.elapsed();
        eprintln!("{proto} to an absent host: {outcome} after {elapsed:?}");
        assert!(blocked_because(&outcome, "timeout"), "{proto}: {outcome}");
        // The probe waits in whole milliseconds (poll timeouts round down),
        // so it may give up a moment before the full timeout.
        assert!(
            elapsed + Duration::from_millis(20) >= TIMEOUT
                && elapsed < TIMEOUT + Duration::from_millis(300),
            "{proto}: {elapsed:?}"
        );
    }
}

#[test]
fn a_hundred_blocked_probes_take_about_one_timeout() {
    let pair = Pair::create();
    let mut probes = Vec::new();
    for host in 100..200u8 {
        let dst = IpAddr::from([10, 232, 1, host]);
        let proto = [Proto::Tcp, Proto::Udp, Proto::Icmp][usize::from(host % 3)];
        probes.push(Probe {
            from: pair.a.clone(),
            dst,
            proto,
            port: 7007,
            src_port: 0,
            src_addr: None,
        });
    }
    pair.check_route(ip("10.232.1.100"));
    pair.check_route(ip("10.232.1.199"));
    let start = Instant::now();
    let outcomes = probe_all(&probes, TIMEOUT);
    let elapsed = start.elapsed();
    eprintln!("100 blocked probes: {elapsed:?}");
    for (probe, outcome) in probes.iter().zip(&outcomes) {
        assert!(blocked_because(outcome, "timeout"), "{probe}: {outcome}");
    }
    assert!(
        elapsed < TIMEOUT + Duration::from_millis(500),
        "100 blocked probes took {elapsed:?}"
    );
}

#[test]
fn a_mixed_batch_of_150_probes_takes_about_one_timeout() {
    let pair = Pair::create();
    let b = ip(B_IP);
    pair.check_route(b);
    pair.check_route(ip("10.232.1.150"));
    let _listeners = Listeners::start(&pair.b, &[b], 7008);
    let mut probes = Vec::new();
    let mut expected = Vec::new();
    for i in 0..150u8 {
        let proto = [Proto::Tcp, Proto::Udp, Proto::Icmp][usize::from(i % 3)];
        let (dst, port, reached) = match i % 5 {
            0 | 1 => (b, 7008, true),
            2 => (b, 7009, proto == Proto::Icmp),
            _ => (IpAddr::from([10, 232, 1, 100 + i % 50]), 7008, false),
        };
        probes.push(Probe {
            from: pair.a.clone(),
            dst,
            proto,
            port,
            src_port: 0,
            src_addr: None,
        });
        expected.push(reached);
    }
    let start = Instant::now();
    let outcomes = probe_all(&probes, TIMEOUT);
    let elapsed = start.elapsed();
    eprintln!("150 mixed probes: {elapsed:?}");
    for ((probe, outcome), reached) in probes.iter().zip(&outcomes).zip(expected) {
        assert_eq!(outcome.reached(), reached, "{probe}: {outcome}");
    }
    assert!(
        elapsed < TIMEOUT + Duration::from_millis(500),
        "{elapsed:?}"
    );
}

#[test]
fn route_checks_name_the_device_and_refuse_others() {
    let pair = Pair::create();
    assert_eq!(route_dev(&pair.a, ip(B_IP)).unwrap(), "va");
    // The namespace's own address is local.
    assert_eq!(route_dev(&pair.a, ip(A_IP)).unwrap(), "lo");
    // No route at all: `ip` says so, and the assertion refuses.
    let error = route_dev(&pair.a, ip("203.0.113.7")).unwrap_err();
    assert!(error.contains("unreachable"), "{error}");
    let panic = std::panic::catch_unwind(|| assert_route_via(&pair.a, ip("203.0.113.7"), &["va"]))
        .unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("refusing to send to 203.0.113.7"),
        "{message}"
    );
    let panic =
        std::panic::catch_unwind(|| assert_route_via(&pair.a, ip(B_IP), &["eth"])).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("leaves through va"), "{message}");
    // Handles to the same namespace compare equal.
    assert_eq!(pair.a, Netns::named(&pair.names.0[0]));
    assert!(pair.a != pair.b);
    assert!(Netns::host() != pair.a);
}

#[test]
fn the_outside_link_joins_the_host_to_a_namespace_of_the_test() {
    require_root();
    let host = Netns::host();
    let outside_ip = ip("203.0.113.7");
    let (ifname, name) = {
        let start = Instant::now();
        let link = OutsideLink::create();
        eprintln!("outside link created in {:?}", start.elapsed());
        assert_eq!(link.host_ifname(), format!("nwo{}h", std::process::id()));
        assert_eq!(link.outside_ip(), outside_ip);
        assert_eq!(link.host_ip(), ip("203.0.113.1"));
        let ifindex: u32 =
            std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", link.host_ifname()))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
        assert_eq!(link.host_ifindex(), ifindex);
        // Before sending anything: the host reaches 203.0.113.7, and an
        // absent 203.0.113.9, through the link; the namespace reaches the
        // host's end through its eth0.
        assert_route_via(&host, outside_ip, &[link.host_ifname()]);
        assert_route_via(&host, ip("203.0.113.9"), &[link.host_ifname()]);
        assert_route_via(link.netns(), link.host_ip(), &["eth0"]);
        let _listeners = Listeners::start(link.netns(), &[outside_ip], 7010);
        let probes = [
            Probe::tcp(&host, outside_ip, 7010),
            Probe::udp(&host, outside_ip, 7010),
            Probe::icmp(&host, outside_ip),
            Probe::tcp(&host, outside_ip, 7011),
            Probe::icmp(&host, ip("203.0.113.9")),
        ];
        let outcomes = probe_all(&probes, TIMEOUT);
        assert_eq!(outcomes[..3], vec![Outcome::Reached; 3]);
        assert!(blocked_because(&outcomes[3], "refused"), "{}", outcomes[3]);
        assert!(blocked_because(&outcomes[4], "timeout"), "{}", outcomes[4]);
        // Routes back to container subnets go through the host.
        link.add_route_via_host("10.232.200.0/24");
        let back = route_get(link.netns(), ip("10.232.200.5")).unwrap();
        assert_eq!(back.dev, "eth0");
        assert_eq!(back.via, Some(link.host_ip()));
        (link.host_ifname().to_owned(), link.name().to_owned())
    };
    // Gone with its address and route, and the lock is free again.
    assert!(!Path::new(&format!("/sys/class/net/{ifname}")).exists());
    assert!(!Path::new(&format!("/run/netns/{name}")).exists());
    let after = route_dev(&host, outside_ip).unwrap_or_default();
    assert!(
        !after.starts_with("nwo"),
        "203.0.113.7 still goes to {after}"
    );
    let again = OutsideLink::create();
    assert_eq!(again.host_ifname(), ifname);
}
