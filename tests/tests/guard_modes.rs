//! Every network and endpoint is enforced, observed or unguarded, and
//! netwatch says which, truthfully, against real dockerd: `networks` never
//! says enforced where nothing is denied, a pin removed behind netwatch's
//! back turns an endpoint unguarded at once, and an internal network that
//! netwatch cannot guard is loud (a warn line in the agent's log, an entry
//! under UNGUARDED in `status`, exit status 3, a metric).

use std::{process::Command, time::Duration};

use netwatch::{
    agent::status_file::AgentStatus,
    cli::status::EXIT_UNGUARDED,
    datapath::{Hook, pins},
};
use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{TestContainer, TestNetwork, require_dockerd},
    fixture::require_root,
    netns::ScratchVeth,
    prometheus,
};
use serde_json::Value;

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");

/// `netwatch <args> --pin-root … --run-dir …` of `agent`: (exit code, stdout).
fn netwatch(agent: &AgentProcess, args: &[&str]) -> (i32, String) {
    let out = agent.netwatch(args);
    let code = out.status.code().expect("netwatch exited, not killed");
    assert!(
        code != 1 && code != 2,
        "netwatch {args:?} failed ({code}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, String::from_utf8(out.stdout).expect("UTF-8 output"))
}

/// `netwatch networks <names> -o json`, as JSON.
fn networks(agent: &AgentProcess, names: &[&str]) -> Vec<Value> {
    let mut args = vec!["networks", "-o", "json"];
    args.extend(names);
    let (_, out) = netwatch(agent, &args);
    match serde_json::from_str(&out) {
        Ok(Value::Array(networks)) => networks,
        other => panic!("networks -o json is not an array: {other:?}\n{out}"),
    }
}

fn named<'a>(networks: &'a [Value], name: &str) -> &'a Value {
    networks
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {networks:?}"))
}

fn endpoint<'a>(network: &'a Value, container: &str) -> &'a Value {
    network["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["container"] == container)
        .unwrap_or_else(|| panic!("{container} not on {}", network["name"]))
}

/// `status --network …` of these networks: (exit code, output).
fn status(agent: &AgentProcess, networks: &[&str]) -> (i32, String) {
    let mut args = vec!["status"];
    for network in networks {
        args.extend(["--network", network]);
    }
    netwatch(agent, &args)
}

#[test]
fn networks_say_enforced_observed_or_unguarded_and_never_enforced_where_nothing_is_denied() {
    require_root();
    require_dockerd();
    let internal = TestNetwork::create("gm-int", &["--internal"]);
    let public = TestNetwork::create("gm-pub", &[]);
    let inside = TestContainer::run("gm-in", &["--network", &internal.name]);
    let outside = TestContainer::run("gm-out", &["--network", &public.name]);
    let hostnet = TestContainer::run("gm-host", &["--network", "host"]);
    // Control: with nothing attached (a pin root of no agent's), the same
    // networks are unguarded, and say why.
    let empty = netwatch_tests::netns::PinDir::create();
    let out = Command::new(NETWATCH)
        .args(["networks", "-o", "json", &internal.name, "--pin-root"])
        .arg(&empty.0)
        .args(["--run-dir", "/nonexistent/netwatch-run"])
        .output()
        .expect("run netwatch networks");
    let before: Vec<Value> = serde_json::from_slice(&out.stdout).expect("networks JSON");
    let int = named(&before, &internal.name);
    assert_eq!(
        (&int["mode"], &int["why"]),
        (
            &Value::from("unguarded"),
            &Value::from(format!(
                "bridge {} not attached: no netwatch agent is running",
                internal.bridge()
            ))
        ),
        "{int}"
    );

    let mut agent = AgentProcess::start(NETWATCH, &[&internal.name, &public.name]);
    let names = [internal.name.as_str(), public.name.as_str(), "host"];
    // Both networks: the agent attaches them one after the other, and a
    // check made as soon as the internal one was enforced once found the
    // public one's endpoint not attached yet (a fresh-clone CI run).
    wait_for(
        "the internal network to be enforced and the public one observed",
        Duration::from_secs(20),
        || {
            let list = networks(&agent, &names);
            named(&list, &internal.name)["mode"] == "enforced"
                && named(&list, &public.name)["mode"] == "observed"
        },
    );
    let list = networks(&agent, &names);
    let int = named(&list, &internal.name);
    assert_eq!(
        (&int["mode"], &int["enforced"], &int["why"]),
        (
            &Value::from("enforced"),
            &Value::from(true),
            &Value::from("internal: true")
        ),
        "{int}"
    );
    assert_eq!(endpoint(int, &inside.name)["mode"], "enforced");
    let public_json = named(&list, &public.name);
    assert_eq!(
        (&public_json["mode"], &public_json["enforced"]),
        (&Value::from("observed"), &Value::from(false)),
        "both programs attached, nothing denied: observed, never enforced: {public_json}"
    );
    let observed = endpoint(public_json, &outside.name);
    assert_eq!(
        (&observed["mode"], &observed["attached"]),
        (&Value::from("observed"), &Value::from(true)),
        "{observed}"
    );
    let host = endpoint(named(&list, "host"), &hostnet.name);
    assert_eq!(host["mode"], "unguarded", "{host}");
    assert!(
        host["why"]
            .as_str()
            .unwrap()
            .starts_with("host networking: "),
        "{host}"
    );
    let (code, text) = status(&agent, &[&internal.name, &public.name]);
    assert_eq!(code, 0, "everything that must be enforced is:\n{text}");
    assert!(text.contains("unguarded      none: "), "{text}");

    // The agent dies; its pins keep enforcing, and say so. Then one of the
    // endpoint's two links is unpinned (which detaches it): that endpoint,
    // and with it the network, is unguarded from that moment, and `status`
    // says so and exits 3.
    agent.kill();
    assert_eq!(
        named(&networks(&agent, &[&internal.name]), &internal.name)["mode"],
        "enforced",
        "enforcement outlives the agent"
    );
    let veth = inside.host_veth(&internal);
    std::fs::remove_file(pins::link_path(agent.pin_root(), Hook::ToContainer, veth))
        .expect("remove a link pin");
    let list = networks(&agent, &[&internal.name]);
    let int = named(&list, &internal.name);
    let ep = endpoint(int, &inside.name);
    assert_eq!(ep["mode"], "unguarded", "{ep}");
    let why = ep["why"].as_str().unwrap();
    assert!(
        why.starts_with("veth ") && why.ends_with(" not attached: no netwatch agent is running"),
        "{why}"
    );
    assert_eq!(int["mode"], "unguarded", "{int}");
    assert_eq!(int["enforced"], false);
    let (code, text) = status(&agent, &[&internal.name]);
    assert_eq!(code, i32::from(EXIT_UNGUARDED), "{text}");
    assert!(
        text.contains(&format!(
            "  endpoint of {} on {} (bridge): veth ",
            inside.name, internal.name
        )),
        "{text}"
    );
}

#[test]
fn an_internal_network_netwatch_cannot_guard_is_a_warning_a_status_entry_and_exit_3() {
    require_root();
    require_dockerd();
    // ipvlan: Docker creates the network (its containers cannot start on
    // this kernel, which has no ipvlan driver), and netwatch has no hook.
    let parent = ScratchVeth::create("gi");
    let ipvlan = TestNetwork::create(
        "gm-ipv",
        &[
            "-d",
            "ipvlan",
            "-o",
            &format!("parent={}", parent.name),
            "--internal",
        ],
    );
    // A normal bridge network labelled to deny egress, managed by nobody:
    // the agent runs for the ipvlan network only.
    let denied = TestNetwork::create("gm-deny", &["--label", "netwatch.egress=deny"]);
    let member = TestContainer::run("gm-den", &["--network", &denied.name]);
    let agent = AgentProcess::start(NETWATCH, &[&ipvlan.name]);
    wait_for("the agent's first sync", Duration::from_secs(20), || {
        agent.synced()
    });
    wait_for(
        "the agent's warning about the ipvlan network",
        Duration::from_secs(10),
        || agent.log().contains("WARN"),
    );
    let log = agent.log();
    let warned = format!("unguarded: network {} (ipvlan): ipvlan: ", ipvlan.name);
    assert!(
        log.lines()
            .any(|l| l.contains(" WARN ") && l.contains(&warned)),
        "{log}"
    );
    let not_managed = format!(
        "unguarded: endpoint of {} on {} (bridge): not managed: the agent runs with --network {}",
        member.name, denied.name, ipvlan.name
    );
    assert!(log.contains(&not_managed), "{log}");
    // Logged once, not per sync (the agent resyncs every 2 s).
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(agent.log().matches(&warned).count(), 1, "{}", agent.log());

    let (code, text) = status(&agent, &[&ipvlan.name, &denied.name]);
    assert_eq!(code, i32::from(EXIT_UNGUARDED), "{text}");
    let heading = text
        .lines()
        .position(|l| l.starts_with("UNGUARDED "))
        .unwrap_or_else(|| panic!("no UNGUARDED heading:\n{text}"));
    let listed: Vec<&str> = text.lines().skip(heading + 1).take(3).collect();
    for expected in [
        format!("  network {} (ipvlan): ipvlan: ", ipvlan.name),
        format!("  network {} (bridge): not managed: ", denied.name),
        format!(
            "  endpoint of {} on {} (bridge): not managed: ",
            member.name, denied.name
        ),
    ] {
        assert!(
            listed.iter().any(|l| l.starts_with(&expected)),
            "{expected:?} not under UNGUARDED: {listed:?}"
        );
    }
    // The agent's own account, in its status file, and its metrics.
    let account = AgentStatus::read(&agent.run_dir).expect("status file");
    assert!(
        account.unguarded.iter().any(|a| a.network == ipvlan.name),
        "{account:?}"
    );
    let addr = account.metrics_addr.expect("metrics served");
    let families = prometheus::parse(&prometheus::scrape(&addr)).expect("exposition parses");
    let unguarded = families
        .iter()
        .find(|f| f.name == "netwatch_unguarded_denied")
        .expect("netwatch_unguarded_denied");
    let networks_sample = unguarded
        .samples
        .iter()
        .find(|s| s.labels.get("kind").map(String::as_str) == Some("network"))
        .expect("kind=network");
    assert!(networks_sample.value >= 2.0, "{unguarded:?}");
}
