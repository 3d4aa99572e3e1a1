//! The seed's compose topology (frontend; backend and db internal; an
//! api-gateway on frontend+backend, an auth-service on backend+db) through
//! the real command line: `netwatch networks -o json` lists every endpoint
//! with its compose service and the veth the kernel says it has, and with
//! the agent running the internal networks read as enforced.

use std::{process::Command, time::Duration};

use netwatch::host::interfaces::{MacAddr, host_veth};
use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    compose::{Project, SEED},
    docker::{docker_ok, require_dockerd},
    fixture::require_root,
};
use serde_json::Value;

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");

fn networks_json(networks: &[String]) -> Vec<Value> {
    let mut args = vec!["networks", "-o", "json"];
    args.extend(networks.iter().map(String::as_str));
    let out = Command::new(NETWATCH).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn networks_json_lists_the_seed_topology_with_the_right_veths() {
    require_root();
    require_dockerd();
    let project = Project::up("seed", &[SEED]);
    // The compose project name carries the `nwtest` prefix without dashes.
    assert!(
        project.name.starts_with("nwtest-"),
        "leftover checks find it"
    );
    let names: Vec<String> = ["frontend", "backend", "db"]
        .iter()
        .map(|n| project.network(n))
        .collect();
    let expected = [
        ("frontend", vec!["api-gateway", "frontend"]),
        ("backend", vec!["api-gateway", "auth-service"]),
        ("db", vec!["auth-service", "db"]),
    ];

    let json = networks_json(&names);
    assert_eq!(json.len(), 3);
    for (short, services) in &expected {
        let network = json
            .iter()
            .find(|n| n["name"] == project.network(short).as_str())
            .unwrap();
        assert_eq!(network["internal"], *short != "frontend", "{short}");
        let endpoints = network["endpoints"].as_array().unwrap();
        let mut got: Vec<&str> = endpoints
            .iter()
            .map(|e| e["service"].as_str().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(&got, services, "services on {short}");
        for endpoint in endpoints {
            let container = endpoint["container"].as_str().unwrap();
            let pid: u32 = docker_ok(&["inspect", "--format", "{{.State.Pid}}", container])
                .parse()
                .unwrap();
            let mac: MacAddr = endpoint["mac"].as_str().unwrap().parse().unwrap();
            let veth = host_veth(pid, mac).unwrap();
            assert_eq!(
                endpoint["host_ifname"],
                veth.ifname.as_str(),
                "{container} on {short}"
            );
            assert_eq!(
                endpoint["host_ifindex"], veth.ifindex,
                "{container} on {short}"
            );
        }
    }

    // With the agent running, the internal networks are enforced.
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let agent = AgentProcess::start(NETWATCH, &name_refs);
    wait_for("the agent's first sync", Duration::from_secs(10), || {
        agent.synced()
    });
    // `networks` reads the default pin root; the agent pins elsewhere, so
    // ask about its pins directly.
    let attached = netwatch::datapath::pins::attached_tc_ifindexes(agent.pin_root());
    let json = networks_json(&names);
    for network in &json {
        for endpoint in network["endpoints"].as_array().unwrap() {
            let ifindex = endpoint["host_ifindex"].as_u64().unwrap() as u32;
            assert!(
                attached.contains(&ifindex),
                "{} not attached",
                endpoint["container"]
            );
        }
    }
}
