//! Adopting enforcement on the seed's compose topology (frontend; backend
//! and db internal; api-gateway on frontend+backend, auth-service on
//! backend+db), with the frontend network labelled netwatch.egress=deny:
//! run in audit mode with traffic from each service, take `advise`'s
//! snippet as a compose override, preview it with `advise --check`,
//! recreate the stack with it, and run the same traffic under enforcement.
//! Traffic goes only to the project's containers, their gateway (the
//! host's bridge address) and the test's outside namespace (203.0.113.7),
//! whose route is checked first.

use std::{net::IpAddr, process::Command, time::Duration};

use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    compose::{Project, SEED, SEED_SERVICES},
    docker::{docker_ok, require_dockerd},
    fixture::{require_root, tcx_program_counts},
    outside::OutsideLink,
    reach::{Listeners, Outcome, Probe, assert_route_via, probe},
};
use serde_json::Value;

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");
/// The stack's own policy: its public network denies egress.
const FRONTEND_DENY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/seed/frontend-egress-deny.yml"
);
const SETTLE: Duration = Duration::from_secs(20);
/// A probe that gets no answer within this is blocked.
const PROBE: Duration = Duration::from_millis(1000);
/// What api-gateway needs outside (reached three times).
const NEEDED: u16 = 47830;
/// What frontend reaches once: a one-off that advise does not propose.
const ONE_OFF: u16 = 47831;

/// `netwatch <args…>` asked of `agent`'s API.
fn ask(agent: &AgentProcess, args: &[&str]) -> std::process::Output {
    Command::new(NETWATCH)
        .args(args)
        .arg("--socket")
        .arg(agent.api_socket())
        .output()
        .unwrap_or_else(|e| panic!("run netwatch {args:?}: {e}"))
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The gateway (the host's bridge address) of `network`.
fn gateway(network: &str) -> IpAddr {
    docker_ok(&[
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
        network,
    ])
    .trim()
    .parse()
    .expect("a gateway address")
}

/// The stack's traffic: api-gateway reaches what it needs outside,
/// frontend a one-off outside, auth-service its internal network's
/// gateway, db auth-service on their network.
struct Traffic<'a> {
    project: &'a Project,
    outside: IpAddr,
}

impl Traffic<'_> {
    fn api_gateway_needed(&self) -> Outcome {
        probe(
            &Probe::tcp(&self.project.netns("api-gateway"), self.outside, NEEDED),
            PROBE,
        )
    }

    fn frontend_one_off(&self) -> Outcome {
        probe(
            &Probe::tcp(&self.project.netns("frontend"), self.outside, ONE_OFF),
            PROBE,
        )
    }

    fn auth_to_gateway(&self) -> Outcome {
        let backend = gateway(&self.project.network("backend"));
        probe(
            &Probe::icmp(&self.project.netns("auth-service"), backend),
            PROBE,
        )
    }

    fn db_to_auth(&self, auth_listener: &Listeners) -> Outcome {
        probe(
            &Probe::tcp(
                &self.project.netns("db"),
                auth_listener.addrs()[0],
                auth_listener.port(),
            ),
            PROBE,
        )
    }
}

fn auth_on_db(project: &Project) -> IpAddr {
    docker_ok(&[
        "inspect",
        "--format",
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            project.network("db")
        ),
        &project.container("auth-service"),
    ])
    .trim()
    .parse()
    .expect("auth-service's address on db")
}

fn wait_attached(project: &Project) {
    for veth in project.veths(&SEED_SERVICES) {
        wait_for(&format!("{veth} attached"), SETTLE, || {
            tcx_program_counts(&veth) == (1, 1)
        });
    }
}

#[test]
fn a_stack_run_in_audit_mode_then_enforced_with_the_advised_labels_drops_only_what_was_not_advised()
{
    require_root();
    require_dockerd();
    let outside = OutsideLink::create();
    let outside_ip = IpAddr::V4(OutsideLink::OUTSIDE_IP);
    let _needed = Listeners::start(outside.netns(), &[outside_ip], NEEDED);
    let _one_off = Listeners::start(outside.netns(), &[outside_ip], ONE_OFF);
    let mut project = Project::up("adopt", &[SEED, FRONTEND_DENY]);
    assert!(
        project.name.starts_with("nwtest-"),
        "leftover checks find it"
    );
    let traffic = Traffic {
        project: &project,
        outside: outside_ip,
    };
    assert_route_via(&project.netns("api-gateway"), outside_ip, &["eth"]);
    assert_route_via(&project.netns("frontend"), outside_ip, &["eth0"]);
    let auth_listener = Listeners::start(
        &project.netns("auth-service"),
        &[auth_on_db(&project)],
        47832,
    );
    // Docker alone: every path of the traffic is open.
    assert_eq!(
        traffic.api_gateway_needed(),
        Outcome::Reached,
        "Docker alone"
    );
    assert_eq!(traffic.frontend_one_off(), Outcome::Reached, "Docker alone");
    assert_eq!(traffic.auth_to_gateway(), Outcome::Reached, "Docker alone");
    assert_eq!(
        traffic.db_to_auth(&auth_listener),
        Outcome::Reached,
        "Docker alone"
    );

    let networks: Vec<String> = ["frontend", "backend", "db"]
        .iter()
        .map(|k| project.network(k))
        .collect();
    let network_refs: Vec<&str> = networks.iter().map(String::as_str).collect();
    let mut agent = AgentProcess::start_with_args(NETWATCH, &network_refs, &[], &["--audit"]);
    wait_for("the agent's first sync", SETTLE, || agent.synced());
    wait_attached(&project);

    // Audit: the same traffic all passes.
    for _ in 0..3 {
        assert_eq!(
            traffic.api_gateway_needed(),
            Outcome::Reached,
            "audit drops nothing"
        );
    }
    assert_eq!(
        traffic.frontend_one_off(),
        Outcome::Reached,
        "audit drops nothing"
    );
    assert_eq!(
        traffic.auth_to_gateway(),
        Outcome::Reached,
        "audit drops nothing"
    );
    assert_eq!(
        traffic.db_to_auth(&auth_listener),
        Outcome::Reached,
        "audit drops nothing"
    );
    wait_for("every would-be drop recorded as audited", SETTLE, || {
        let flows = json(&ask(&agent, &["flows", "-o", "json"]));
        let audited = |name: &str, dst: &str| {
            flows.as_array().is_some_and(|flows| {
                flows.iter().any(|f| {
                    f["container"] == name
                        && f["direction"] == "egress"
                        && f["dst"] == dst
                        && f["verdict"] == "audited"
                })
            })
        };
        audited(&project.container("api-gateway"), &outside_ip.to_string())
            && audited(&project.container("frontend"), &outside_ip.to_string())
            && audited(
                &project.container("auth-service"),
                &gateway(&project.network("backend")).to_string(),
            )
    });
    let dropped = json(&ask(
        &agent,
        &["flows", "-o", "json", "--verdict", "dropped"],
    ));
    assert_eq!(
        dropped,
        serde_json::json!([]),
        "audit mode dropped something"
    );

    // The advice, as a compose override file.
    let advice = json(&ask(&agent, &["advise", "-o", "json"]));
    let needed_rule = format!("{outside_ip}:{NEEDED}/tcp");
    assert_eq!(
        advice["services"],
        serde_json::json!([{
            "service": "api-gateway",
            "containers": [project.container("api-gateway")],
            "allow": [needed_rule],
        }]),
        "only what api-gateway needed, no wider: {advice}"
    );
    assert_eq!(
        advice["networks"],
        serde_json::json!([{
            "network": project.network("frontend"),
            "compose_key": "frontend",
            "labels": {"netwatch.egress": "deny"},
        }]),
        "{advice}"
    );
    let not_advised = advice["not_advised"].to_string();
    assert!(not_advised.contains("one-off"), "{not_advised}");
    assert!(not_advised.contains("to the host"), "{not_advised}");
    let snippet = ask(&agent, &["advise"]);
    let snippet = String::from_utf8_lossy(&snippet.stdout).into_owned();
    eprintln!("$ netwatch advise\n{snippet}");
    let advised = agent.api_socket().with_file_name("advised.yml");
    // Debian's docker-compose 1.29 reads a file without `version:` as the
    // version 1 format, where top-level keys are services.
    std::fs::write(&advised, format!("version: \"3.8\"\n{snippet}")).expect("write the override");

    // The preview: what passes now and would be dropped, and what the
    // advice lets through.
    let check = ask(
        &agent,
        &[
            "advise",
            "--check",
            advised.to_str().expect("UTF-8 path"),
            "-o",
            "json",
        ],
    );
    let table = ask(
        &agent,
        &["advise", "--check", advised.to_str().expect("UTF-8 path")],
    );
    eprintln!(
        "$ netwatch advise --check advised.yml\n{}",
        String::from_utf8_lossy(&table.stdout)
    );
    let report = json(&check);
    assert_eq!(
        check.status.code(),
        Some(1),
        "audited flows that would be dropped make --check fail: {report}"
    );
    let changed = |name: &str, now: &str, then: &str, remote: &str| {
        report["changes"].as_array().is_some_and(|changes| {
            changes.iter().any(|c| {
                c["container"] == name
                    && c["now"] == now
                    && c["then"] == then
                    && c["remote"] == remote
            })
        })
    };
    assert!(
        changed(
            &project.container("api-gateway"),
            "audited",
            "forwarded",
            &needed_rule
        ),
        "{report}"
    );
    assert!(
        changed(
            &project.container("frontend"),
            "audited",
            "dropped",
            &format!("{outside_ip}:{ONE_OFF}/tcp")
        ),
        "{report}"
    );
    assert!(
        changed(
            &project.container("auth-service"),
            "audited",
            "dropped",
            &format!("{}/icmp", gateway(&project.network("backend")))
        ),
        "{report}"
    );

    // Applied: the stack recreated with the override, the agent enforcing.
    drop(auth_listener);
    agent.kill();
    project.recreate(&[SEED, FRONTEND_DENY, advised.to_str().expect("UTF-8 path")]);
    let traffic = Traffic {
        project: &project,
        outside: outside_ip,
    };
    agent.restart_with_args(&[]);
    wait_for("the enforcing agent's first sync", SETTLE, || {
        agent.synced()
    });
    wait_attached(&project);
    let auth_listener = Listeners::start(
        &project.netns("auth-service"),
        &[auth_on_db(&project)],
        47832,
    );
    for _ in 0..3 {
        assert_eq!(
            traffic.api_gateway_needed(),
            Outcome::Reached,
            "the advised flow passes under enforcement"
        );
    }
    assert_eq!(
        traffic.db_to_auth(&auth_listener),
        Outcome::Reached,
        "within a network nothing changes"
    );
    assert_eq!(
        traffic.frontend_one_off(),
        Outcome::Blocked("timeout".into()),
        "what was not advised is dropped"
    );
    assert_eq!(
        traffic.auth_to_gateway(),
        Outcome::Blocked("timeout".into()),
        "the host stays closed"
    );
    wait_for("the drops recorded, with their rule", SETTLE, || {
        let dropped = json(&ask(
            &agent,
            &["flows", "-o", "json", "--verdict", "dropped"],
        ));
        let dropped = dropped.as_array().cloned().unwrap_or_default();
        dropped.iter().any(|f| {
            f["container"] == project.container("frontend").as_str()
                && f["dst_port"] == ONE_OFF
                && f["rule"]
                    == format!(
                        "label netwatch.egress=deny on network {}",
                        project.network("frontend")
                    )
                    .as_str()
        }) && dropped
            .iter()
            .any(|f| f["container"] == project.container("auth-service").as_str())
    });
    let dropped = json(&ask(
        &agent,
        &["flows", "-o", "json", "--verdict", "dropped"],
    ));
    let advised_drops: Vec<&Value> = dropped
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| {
            f["container"] == project.container("api-gateway").as_str()
                || f["container"] == project.container("db").as_str()
        })
        .collect();
    assert!(
        advised_drops.is_empty(),
        "zero drops of the advised and in-network flows: {advised_drops:?}"
    );
}
