//! The kernel's own drops against a real dockerd: a ping between
//! containers on two bridge networks, dropped by Docker's own isolation
//! rules (the DOCKER-ISOLATION chains of the main dockerd, left intact),
//! shows in `netwatch drops` as a kernel netfilter drop naming both
//! containers, while netwatch itself forwarded it; the same ping between
//! containers of one network succeeds and shows no such drop; and a drop
//! of netwatch's own (a container on an internal network pinging its
//! gateway) says `dropped_by` `netwatch` and is not reported a second time
//! as the kernel's. Traffic goes only between the test's containers and
//! the gateway of the test's internal network (the host's bridge address).

use std::{process::Command, time::Duration};

use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{TestContainer, TestNetwork, docker, require_dockerd},
    fixture::require_root,
    prometheus,
};
use serde_json::Value;

const AGENT: &str = env!("CARGO_BIN_EXE_netwatch-under-test");

fn ping(container: &TestContainer, ip: &str) -> bool {
    docker(&["exec", &container.name, "ping", "-c", "1", "-W", "1", ip]).is_ok()
}

/// `netwatch drops -o json <args…>` asked of the agent.
fn drops(agent: &AgentProcess, args: &[&str]) -> Vec<Value> {
    let out = Command::new(AGENT)
        .args(["drops", "-o", "json", "--socket"])
        .arg(agent.api_socket())
        .args(args)
        .output()
        .expect("run netwatch drops");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn field<'a>(group: &'a Value, name: &str) -> &'a str {
    group[name].as_str().unwrap_or_default()
}

/// The kernel netfilter drop group of `container`, if `drops` has one.
fn netfilter_group(groups: &[Value], container: &str) -> Option<Value> {
    groups
        .iter()
        .find(|g| {
            field(g, "container") == container && field(g, "reason") == "kernel:netfilter_drop"
        })
        .cloned()
}

fn remotes(group: &Value) -> String {
    group["remotes"].to_string()
}

#[test]
fn a_ping_between_two_bridge_networks_dropped_by_dockers_isolation_rules_shows_as_a_kernel_drop() {
    require_root();
    require_dockerd();
    let rules = Command::new("iptables")
        .args(["-S", "DOCKER-ISOLATION-STAGE-1"])
        .output()
        .expect("iptables");
    assert!(
        rules.status.success() && String::from_utf8_lossy(&rules.stdout).contains("STAGE-2"),
        "Docker's isolation rules are missing (dockerd with iptables: true is needed): {}",
        String::from_utf8_lossy(&rules.stderr)
    );
    let left = TestNetwork::create("kdl", &[]);
    let right = TestNetwork::create("kdr", &[]);
    let a = TestContainer::run("a", &["--network", &left.name]);
    let c = TestContainer::run("c", &["--network", &left.name]);
    let b = TestContainer::run("b", &["--network", &right.name]);
    let internal = TestNetwork::create("kdi", &["--internal"]);
    let d = TestContainer::run("d", &["--network", &internal.name]);
    let gateway = internal.ipam_field("Gateway");
    let b_ip = b.endpoint_field(&right, "IPAddress");
    let c_ip = c.endpoint_field(&left, "IPAddress");
    let flow_log = std::env::temp_dir().join(format!("{}.flows.log", a.name));
    let _ = std::fs::remove_file(&flow_log);
    let agent = AgentProcess::start_with_args(
        AGENT,
        &[&left.name, &right.name, &internal.name],
        &[],
        &["--flow-log", flow_log.to_str().expect("UTF-8 path")],
    );
    wait_for("the agent's first sync", Duration::from_secs(30), || {
        agent.synced()
    });
    assert!(
        agent
            .log()
            .contains("the kernel's own drops of guarded containers' packets: recorded"),
        "the kernel drop program is not attached:\n{}",
        agent.log()
    );
    let status = agent.netwatch(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("kernel drops") && l.contains("recorded (kfree_skb")),
        "status does not say the kernel's drops are recorded:\n{status}"
    );

    // Negative control: on one network Docker lets the ping through, and
    // nothing is recorded as a kernel drop for it.
    assert!(ping(&a, &c_ip), "a cannot ping c on its own network");
    // Docker's isolation drops the ping to the other network.
    assert!(
        !ping(&a, &b_ip),
        "a reached b across networks: isolation is off"
    );
    // netwatch drops d's ping to the host (its TC program's verdict also
    // reaches kfree_skb, as TC_INGRESS).
    wait_for("d's veth enforced", Duration::from_secs(20), || {
        !ping(&d, &gateway)
    });

    let mut groups = Vec::new();
    wait_for(
        "the kernel drop in `drops`",
        Duration::from_secs(10),
        || {
            groups = drops(&agent, &[]);
            netfilter_group(&groups, &a.name).is_some()
                && netfilter_group(&groups, &b.name).is_some()
                && groups.iter().any(|g| field(g, "container") == d.name)
        },
    );
    let sender = netfilter_group(&groups, &a.name).unwrap();
    assert_eq!(field(&sender, "dropped_by"), "kernel", "{sender:#}");
    assert_eq!(field(&sender, "network"), left.name, "{sender:#}");
    assert!(sender["packets"].as_u64() >= Some(1), "{sender:#}");
    assert!(
        remotes(&sender).contains(&b.name) && remotes(&sender).contains(&b_ip),
        "the sender's drop does not name the receiver: {sender:#}"
    );
    let receiver = netfilter_group(&groups, &b.name).unwrap();
    assert_eq!(field(&receiver, "network"), right.name, "{receiver:#}");
    assert!(
        remotes(&receiver).contains(&a.name),
        "the receiver's drop does not name the sender: {receiver:#}"
    );
    assert!(
        groups
            .iter()
            .all(|g| !remotes(g).contains(&c_ip) && field(g, "container") != c.name),
        "the ping on one network shows as a drop: {groups:#?}"
    );
    let own = groups
        .iter()
        .find(|g| field(g, "container") == d.name && field(g, "reason") == "host-access");
    assert_eq!(
        own.map(|g| field(g, "dropped_by")),
        Some("netwatch"),
        "{groups:#?}"
    );
    assert!(
        groups
            .iter()
            .all(|g| field(g, "container") != d.name || field(g, "dropped_by") == "netwatch"),
        "netwatch's own drop is reported again as the kernel's: {groups:#?}"
    );
    // The table, as people read it.
    let table = Command::new(AGENT)
        .args(["drops", "--socket"])
        .arg(agent.api_socket())
        .output()
        .expect("run netwatch drops");
    let table = String::from_utf8_lossy(&table.stdout);
    eprintln!("{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&a.name) && l.contains("kernel:netfilter_drop")),
        "{table}"
    );
    // The filter takes kernel reasons, and netwatch's own drops are not
    // mixed in.
    let filtered = drops(
        &agent,
        &["--reason", "kernel:netfilter_drop", "--container", &a.name],
    );
    assert_eq!(filtered.len(), 1, "{filtered:#?}");

    // netwatch forwarded the ping on a's veth: its flow says so.
    let flows = agent.flows_json(&["--container", &a.name, "--proto", "icmp"]);
    let forwarded = flows.iter().find(|f| {
        field(f, "dst") == b_ip && field(f, "verdict") == "forwarded" && f["dropped_by"].is_null()
    });
    assert!(forwarded.is_some(), "{flows:#?}");
    let kernel = flows
        .iter()
        .find(|f| field(f, "dst") == b_ip && field(f, "dropped_by") == "kernel");
    assert!(kernel.is_some(), "{flows:#?}");

    // The flow log has the drop as `observe -o jsonl` prints it.
    let mut lines = String::new();
    wait_for(
        "the kernel drop in the flow log",
        Duration::from_secs(5),
        || {
            lines = std::fs::read_to_string(&flow_log).unwrap_or_default();
            lines.lines().any(|l| {
                let v: Value = serde_json::from_str(l).unwrap_or_default();
                field(&v, "event") == "drop"
                    && field(&v, "container") == a.name
                    && field(&v, "reason") == "kernel:netfilter_drop"
                    && field(&v, "dropped_by") == "kernel"
                    && field(&v, "peer") == b.name
            })
        },
    );
    let _ = std::fs::remove_file(&flow_log);

    // Metrics: the kernel's drop has its own family, out of the flow totals.
    let addr = netwatch::agent::status_file::AgentStatus::read(&agent.run_dir)
        .and_then(|s| s.metrics_addr)
        .expect("the agent says where metrics are served");
    let families = prometheus::parse(&prometheus::scrape(&addr)).expect("metrics parse");
    let kernel = families
        .iter()
        .find(|f| f.name == "netwatch_kernel_drop_packets_total")
        .expect("netwatch_kernel_drop_packets_total");
    assert!(
        kernel
            .samples
            .iter()
            .any(|s| s.labels.get("container") == Some(&a.name)
                && s.labels.get("reason").map(String::as_str) == Some("kernel:netfilter_drop")
                && s.value >= 1.0),
        "{kernel:#?}"
    );
}
