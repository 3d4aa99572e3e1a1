//! Audit mode against a real dockerd: an audited network drops nothing and
//! records what enforcement would drop, with the reason; switching it to
//! enforcement closes the same path; a container audited by its own label
//! gets out under enforcement while its neighbour does not. Traffic goes only to the test's
//! container and its outside namespace (203.0.113.7), whose route is
//! checked first.

use std::{net::IpAddr, process::Command, time::Duration};

use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{TestContainer, TestNetwork, require_dockerd},
    fixture::{require_root, tcx_program_counts},
    outside::OutsideLink,
    reach::{Listeners, Netns, Outcome, Probe, assert_route_via, probe},
};

const AGENT: &str = env!("CARGO_BIN_EXE_netwatch-under-test");
const SETTLE: Duration = Duration::from_secs(20);
/// A probe that gets no answer within this is blocked.
const PROBE: Duration = Duration::from_millis(1000);
const PORT: u16 = 47820;

/// `netwatch <command> -o json <args…>` asked of `agent`'s API.
fn ask_json(agent: &AgentProcess, command: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(AGENT)
        .args([command, "-o", "json"])
        .args(args)
        .arg("--socket")
        .arg(agent.api_socket())
        .output()
        .unwrap_or_else(|e| panic!("run netwatch {command}: {e}"));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "netwatch {command} -o json: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn an_audited_network_drops_nothing_records_what_enforcement_would_and_enforcement_then_drops_it() {
    require_root();
    require_dockerd();
    let outside = OutsideLink::create();
    let outside_ip = IpAddr::V4(OutsideLink::OUTSIDE_IP);
    let _listeners = Listeners::start(outside.netns(), &[outside_ip], PORT);
    let network = TestNetwork::create("audit", &["--label", "netwatch.egress=deny"]);
    let container = TestContainer::run("audited", &["--network", &network.name]);
    let inside = Netns::of_pid(container.pid());
    assert_route_via(&inside, outside_ip, &["eth0"]);
    let reach_outside = || probe(&Probe::tcp(&inside, outside_ip, PORT), PROBE);
    assert_eq!(
        reach_outside(),
        Outcome::Reached,
        "Docker alone lets it out"
    );

    let mut agent = AgentProcess::start_with_args(AGENT, &[&network.name], &[], &["--audit"]);
    wait_for("the agent's first sync", SETTLE, || agent.synced());
    let veth = nix::net::if_::if_indextoname(container.host_veth(&network)).expect("veth");
    let veth = veth.to_str().expect("UTF-8 name").to_owned();
    wait_for("the veth attached", SETTLE, || {
        tcx_program_counts(&veth) == (1, 1)
    });
    assert_eq!(reach_outside(), Outcome::Reached, "audit drops nothing");
    let audited_rule = format!(
        "label netwatch.egress=deny, audited (agent --audit) on network {}",
        network.name
    );
    let is_audited = |f: &serde_json::Value| {
        f["direction"] == "egress"
            && f["dst"] == outside_ip.to_string()
            && f["verdict"] == "audited"
            && f["reason"] == "not-in-network"
            && f["rule"] == audited_rule.as_str()
    };
    wait_for(
        "the audited flow, with the reason it would have had",
        SETTLE,
        || {
            agent
                .flows_json(&["--container", &container.name])
                .iter()
                .any(is_audited)
        },
    );
    let drops = ask_json(&agent, "drops", &["--container", &container.name]);
    assert!(
        drops.as_array().is_some_and(|d| d
            .iter()
            .any(|g| g["verdict"] == "audited" && g["reason"] == "not-in-network")),
        "drops lists it as audited: {drops}"
    );
    // Twice more, so the destination is no one-off to `advise`.
    for _ in 0..2 {
        assert_eq!(reach_outside(), Outcome::Reached, "audit drops nothing");
    }
    let rule = format!("{outside_ip}:{PORT}/tcp");
    let mut advice = serde_json::Value::Null;
    wait_for("advise to propose the observed destination", SETTLE, || {
        advice = ask_json(&agent, "advise", &["--network", &network.name]);
        advice["services"].as_array().is_some_and(|services| {
            services.iter().any(|s| {
                s["allow"] == serde_json::json!([rule])
                    && s["containers"] == serde_json::json!([container.name])
            })
        })
    });
    assert_eq!(
        advice["networks"],
        serde_json::json!([{
            "network": network.name,
            "compose_key": null,
            "labels": {"netwatch.egress": "deny"}
        }]),
        "{advice}"
    );
    let snippet = Command::new(AGENT)
        .args(["advise", "--network", &network.name, "--socket"])
        .arg(agent.api_socket())
        .output()
        .expect("run netwatch advise");
    let snippet = String::from_utf8_lossy(&snippet.stdout);
    eprintln!("$ netwatch advise --network {}\n{snippet}", network.name);
    assert!(
        snippet.contains(&format!("netwatch.allow: \"{rule}\"")),
        "the compose snippet carries the rule:\n{snippet}"
    );
    // The preview: the snippet as a file; the audited flow would pass.
    // In the agent's run directory, which goes with it.
    let file = agent.api_socket().with_file_name("advised.yml");
    std::fs::write(&file, snippet.as_bytes()).expect("write the snippet");
    let check = Command::new(AGENT)
        .args(["advise", "--check"])
        .arg(&file)
        .args(["-o", "json", "--container", &container.name, "--socket"])
        .arg(agent.api_socket())
        .output()
        .expect("run netwatch advise --check");
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap_or_else(|e| {
        panic!(
            "advise --check -o json: {e}: {}",
            String::from_utf8_lossy(&check.stderr)
        )
    });
    assert!(
        check.status.success(),
        "nothing that passes now would be dropped: {report}"
    );
    assert!(
        report["changes"]
            .as_array()
            .is_some_and(|changes| changes.iter().any(|c| c["remote"]
                == format!("{outside_ip}:{PORT}/tcp").as_str()
                && c["now"] == "audited"
                && c["then"] == "forwarded")),
        "the audited flow would pass with the advice applied: {report}"
    );
    // The advice applied: a container of the same network with the
    // proposed label.
    let allow_label = format!("netwatch.allow={rule}");
    let advised = TestContainer::run(
        "advised",
        &["--network", &network.name, "--label", &allow_label],
    );
    let advised_inside = Netns::of_pid(advised.pid());
    assert_route_via(&advised_inside, outside_ip, &["eth0"]);
    let status = agent.netwatch(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("ON (--audit)"), "{status}");
    assert!(
        agent.log().contains(&format!(
            "{} on {} (audited: nothing dropped)",
            container.name, network.name
        )),
        "the attach line says audited:\n{}",
        agent.log()
    );

    // Enforcement on the same pins: the same path closes.
    agent.kill();
    agent.restart_with_args(&[]);
    wait_for("the enforcing agent's first sync", SETTLE, || {
        agent.synced()
    });
    wait_for("the same path, now dropped", SETTLE, || {
        reach_outside() == Outcome::Blocked("timeout".into())
    });
    assert_eq!(
        probe(&Probe::tcp(&advised_inside, outside_ip, PORT), PROBE),
        Outcome::Reached,
        "the advised flow passes under enforcement"
    );
    let other_port = probe(&Probe::tcp(&advised_inside, outside_ip, PORT + 1), PROBE);
    assert_eq!(
        other_port,
        Outcome::Blocked("timeout".into()),
        "what was not advised is still dropped"
    );
    // A container audited by its own label, on the same network, under
    // the same enforcing agent: it gets out, recorded as audited with the
    // rule naming its label, while its unlabelled neighbour stays blocked
    // (the bridge records the audited one's routed traffic; the
    // neighbour's own veth still drops).
    let own = TestContainer::run(
        "own-audit",
        &[
            "--network",
            &network.name,
            "--label",
            "netwatch.egress=audit",
        ],
    );
    let own_inside = Netns::of_pid(own.pid());
    assert_route_via(&own_inside, outside_ip, &["eth0"]);
    wait_for(
        "the container audited by its label to get out",
        SETTLE,
        || probe(&Probe::tcp(&own_inside, outside_ip, PORT), PROBE) == Outcome::Reached,
    );
    assert_eq!(
        reach_outside(),
        Outcome::Blocked("timeout".into()),
        "its unlabelled neighbour is still dropped"
    );
    let own_rule = format!(
        "label netwatch.egress=deny, audited (label netwatch.egress=audit on container {}) on \
         network {}",
        own.name, network.name
    );
    wait_for("its audited flow, naming its label", SETTLE, || {
        agent
            .flows_json(&["--container", &own.name])
            .iter()
            .any(|f| {
                f["dst"] == outside_ip.to_string()
                    && f["verdict"] == "audited"
                    && f["reason"] == "not-in-network"
                    && f["rule"] == own_rule.as_str()
            })
    });
    assert!(
        agent.log().contains(&format!(
            "veth of {} on {} (audited by its label netwatch.egress=audit: nothing dropped)",
            own.name, network.name
        )),
        "the attach line says why it is audited:\n{}",
        agent.log()
    );
    let networks = agent.netwatch(&["networks", "-o", "json", &network.name]);
    let networks = String::from_utf8_lossy(&networks.stdout);
    eprintln!("$ netwatch networks -o json {}\n{networks}", network.name);
    assert!(
        networks.contains(&format!(
            "label netwatch.egress=audit on container {}: nothing is dropped",
            own.name
        )),
        "networks names the container's audit: {networks}"
    );
    wait_for("a drop record of it", SETTLE, || {
        agent
            .flows_json(&["--container", &container.name])
            .iter()
            .any(|f| {
                f["dst"] == outside_ip.to_string()
                    && f["verdict"] == "dropped"
                    && f["reason"] == "not-in-network"
                    && f["rule"]
                        == format!("label netwatch.egress=deny on network {}", network.name)
                            .as_str()
            })
    });
}
