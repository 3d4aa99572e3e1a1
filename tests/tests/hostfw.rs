//! `netwatch_tests::hostfw`: the guard puts the `filter` and `nat` tables
//! back exactly as they were (compared as `iptables-save` output without
//! comments and counters) after Docker's isolation chains were flushed and
//! the FORWARD policy set to ACCEPT.
//!
//! Most of it runs in a namespace of the test's own, loaded with a
//! Docker-like ruleset or with a copy of the host's; one test does the round
//! trip on the host itself, for a few milliseconds.

use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Instant,
};

use netwatch_tests::{
    fixture::require_root,
    hostfw::{IptablesState, iptables, iptables_restore, iptables_save, normalize},
    netns::run,
    reach::Netns,
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A namespace of the test's own, deleted on drop.
struct TestNs {
    name: String,
    ns: Option<Netns>,
}

impl TestNs {
    fn create() -> TestNs {
        require_root();
        let name = format!(
            "nwf{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        TestNs {
            ns: Some(Netns::named(&name)),
            name,
        }
    }

    fn ns(&self) -> &Netns {
        self.ns.as_ref().unwrap()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        self.ns = None;
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// What Docker 20.10 sets up for docker0 and one internal network, plus a
/// rule with a comment.
const DOCKER_LIKE: &str = r#"*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A INPUT -i lo -m comment --comment "netwatch test rule" -j ACCEPT
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 ! -s 172.30.0.0/24 -o br-0123456789ab -j DROP
-A DOCKER-ISOLATION-STAGE-1 ! -d 172.30.0.0/24 -i br-0123456789ab -j DROP
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"#;

fn chain_rules(ns: &Netns, chain: &str) -> String {
    iptables(ns, &["-S", chain]).unwrap()
}

fn forward_policy(ns: &Netns) -> String {
    iptables(ns, &["-S", "FORWARD"])
        .unwrap()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// save → flush isolation → FORWARD ACCEPT → drop, in `ns`; checks the
/// intermediate state and the exact restore.
fn round_trip(ns: &Netns) {
    let before = normalize(&iptables_save(ns));
    {
        let state = IptablesState::save_in(ns);
        assert_eq!(normalize(state.saved()), before);
        state.flush_docker_isolation();
        state.forward_policy_accept();
        for chain in ["DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2"] {
            assert_eq!(chain_rules(ns, chain).trim(), format!("-N {chain}"));
        }
        assert_eq!(forward_policy(ns), "-P FORWARD ACCEPT");
        assert_ne!(normalize(&iptables_save(ns)), before);
    }
    assert_eq!(normalize(&iptables_save(ns)), before);
}

#[test]
fn a_docker_like_ruleset_is_restored_exactly() {
    let ns = TestNs::create();
    iptables_restore(ns.ns(), DOCKER_LIKE).unwrap();
    let loaded = normalize(&iptables_save(ns.ns()));
    assert!(
        loaded.contains("--comment \"netwatch test rule\""),
        "{loaded}"
    );
    round_trip(ns.ns());
    // The restored rules are the loaded ones, counters and comments aside.
    let expected: Vec<&str> = DOCKER_LIKE.lines().map(|l| l.trim_end()).collect();
    let expected = normalize(&expected.join("\n"));
    // iptables-save prints tables in its own order: compare per table.
    let mut got: Vec<&str> = loaded.lines().collect();
    let mut want: Vec<&str> = expected.lines().collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn the_guard_restores_when_the_test_panics() {
    let ns = TestNs::create();
    iptables_restore(ns.ns(), DOCKER_LIKE).unwrap();
    let before = normalize(&iptables_save(ns.ns()));
    let handle = ns.ns().clone();
    let result = std::panic::catch_unwind(move || {
        let state = IptablesState::save_in(&handle);
        state.flush_docker_isolation();
        state.forward_policy_accept();
        panic!("a failing test");
    });
    assert!(result.is_err());
    assert_eq!(normalize(&iptables_save(ns.ns())), before);
}

#[test]
fn flushing_without_docker_chains_says_why() {
    let ns = TestNs::create();
    let handle = ns.ns().clone();
    let panic = std::panic::catch_unwind(move || {
        let state = IptablesState::save_in(&handle);
        state.flush_docker_isolation();
    })
    .unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("cannot flush DOCKER-ISOLATION-STAGE-1"),
        "{message}"
    );
}

#[test]
fn a_copy_of_the_host_ruleset_round_trips_in_a_namespace() {
    let host_rules = iptables_save(&Netns::host());
    assert!(
        host_rules.contains(":DOCKER-ISOLATION-STAGE-1"),
        "the host has no Docker isolation chains: is dockerd running (`cargo xtask setup`)?"
    );
    let ns = TestNs::create();
    iptables_restore(ns.ns(), &host_rules).unwrap();
    assert_eq!(normalize(&iptables_save(ns.ns())), normalize(&host_rules));
    round_trip(ns.ns());
}

#[test]
fn the_host_ruleset_is_restored_exactly() {
    require_root();
    let host = Netns::host();
    assert!(
        iptables_save(&host).contains(":DOCKER-ISOLATION-STAGE-1"),
        "the host has no Docker isolation chains: is dockerd running (`cargo xtask setup`)?"
    );
    let start = Instant::now();
    round_trip(&host);
    eprintln!(
        "host isolation flushed and FORWARD ACCEPT, then restored, within {:?}",
        start.elapsed()
    );
}
