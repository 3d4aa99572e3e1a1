//! `netwatch explain` against dockerd: the path of a packet through
//! netwatch's hooks (source veth, uplink shield, destination veth), the
//! verdict and rule at each, and the kernel programs agreeing with the
//! reference model (`--from-kernel`). No packet is sent: the kernel check
//! runs each hop's frame through BPF_PROG_TEST_RUN, and routes are only
//! looked up.

use std::{
    path::Path,
    process::{Command, Output},
};

use netwatch::datapath::{Attachment, Datapath, LoadOptions};
use netwatch_tests::{
    docker::{TestContainer, TestNetwork, require_dockerd},
    fixture::require_root,
    netns::{PinDir, ScratchVeth},
};
use serde_json::Value;

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");

fn netwatch(args: &[&str]) -> Output {
    Command::new(NETWATCH).args(args).output().unwrap()
}

/// `explain SOURCE DESTINATION --from-kernel -o json [--pin-root DIR]`,
/// which must succeed (so every kernel check agrees).
fn explain_in(pin_root: Option<&Path>, source: &str, destination: &str) -> Value {
    let mut args = vec![
        "explain",
        source,
        destination,
        "--from-kernel",
        "-o",
        "json",
    ];
    let root;
    if let Some(dir) = pin_root {
        root = dir.display().to_string();
        args.extend(["--pin-root", &root]);
    }
    let out = netwatch(&args);
    assert!(
        out.status.success(),
        "explain {source} {destination}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(got.is_object(), "one object: {got}");
    got
}

/// [`explain_in`] with a pin root that holds nothing: no uplink shield,
/// whatever an agent on this machine has attached.
fn explain(source: &str, destination: &str) -> Value {
    let empty = PinDir::create();
    explain_in(Some(&empty.0), source, destination)
}

/// Each hop as (hook, verdict, reason).
fn hops(got: &Value) -> Vec<(String, String, Option<String>)> {
    got["hops"]
        .as_array()
        .unwrap_or_else(|| panic!("no hops: {got}"))
        .iter()
        .map(|h| {
            (
                h["hook"].as_str().unwrap().to_owned(),
                h["verdict"].as_str().unwrap().to_owned(),
                h["reason"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn hop(hook: &str, verdict: &str, reason: Option<&str>) -> (String, String, Option<String>) {
    (hook.into(), verdict.into(), reason.map(str::to_owned))
}

fn container_ip(container: &TestContainer, network: &TestNetwork) -> String {
    container.endpoint_field(network, "IPAddress")
}

/// The overall verdict, reason and rule, and that the kernel agreed.
fn assert_verdict(got: &Value, verdict: &str, reason: Option<&str>, rule: &str) {
    assert_eq!(got["verdict"], verdict, "{got}");
    assert_eq!(got["reason"].as_str(), reason, "{got}");
    assert!(got["rule"].as_str().unwrap().contains(rule), "{got}");
    assert_eq!(got["kernel_agrees"], true, "{got}");
}

#[test]
fn explain_names_the_deciding_rule_and_the_kernel_agrees() {
    require_root();
    require_dockerd();
    let internal = TestNetwork::create(
        "int",
        &[
            "--internal",
            "--label",
            "netwatch.allow=198.51.100.0/24:443/tcp",
        ],
    );
    let a = TestContainer::run("a", &["--network", &internal.name]);
    let b = TestContainer::run("b", &["--network", &internal.name]);
    let gateway = internal.ipam_field("Gateway");

    let cases = [
        (
            format!("{gateway}:53/udp"),
            "dropped",
            Some("host-access"),
            "gateway",
        ),
        (format!("{}:5432", b.name), "forwarded", None, "inside"),
        (
            "203.0.113.7:443".to_string(),
            "dropped",
            Some("not-in-network"),
            "outside",
        ),
        (
            "198.51.100.20:443/tcp".to_string(),
            "forwarded",
            None,
            "netwatch.allow rule 198.51.100.0/24:443/tcp",
        ),
        (
            "198.51.100.20:80".to_string(),
            "dropped",
            Some("not-in-network"),
            "no netwatch.allow rule",
        ),
    ];
    for (destination, verdict, reason, rule) in cases {
        let got = explain(&a.name, &destination);
        assert_verdict(&got, verdict, reason, rule);
        assert_eq!(got["source"], a.name.as_str(), "{got}");
        assert_eq!(got["destination"], destination.as_str(), "{got}");
        assert_eq!(got["hops"][0]["hook"], "from-container", "{got}");
        assert_eq!(got["hops"][0]["network"], internal.name.as_str(), "{got}");
        assert_eq!(got["hops"][0]["kernel"]["agrees"], true, "{got}");
    }
    let to_peer = explain(&a.name, &format!("{}:5432", b.name));
    assert_eq!(
        hops(&to_peer),
        [
            hop("from-container", "forwarded", None),
            hop("to-container", "forwarded", None)
        ],
        "{to_peer}"
    );
    assert_eq!(to_peer["hops"][1]["container"], b.name.as_str());

    let table = netwatch(&["explain", &a.name, &format!("{gateway}:53/udp")]);
    assert!(table.status.success());
    let table = String::from_utf8_lossy(&table.stdout);
    let src = container_ip(&a, &internal);
    assert_eq!(
        table.lines().next(),
        Some(format!("{src} -> {gateway}:53/udp: dropped (host-access)").as_str()),
        "{table}"
    );
}

#[test]
fn container_to_a_container_on_another_internal_network() {
    require_root();
    require_dockerd();
    let first = TestNetwork::create("int1", &["--internal"]);
    let second = TestNetwork::create("int2", &["--internal"]);
    let normal = TestNetwork::create("normal", &[]);
    let db = TestContainer::run("db", &["--network", &second.name]);
    let inside = TestContainer::run("inside", &["--network", &first.name]);
    let web = TestContainer::run("web", &["--network", &normal.name]);
    let db_ip = container_ip(&db, &second);

    let got = explain(&inside.name, &format!("{}:5432", db.name));
    assert_verdict(
        &got,
        "dropped",
        Some("not-in-network"),
        &format!("{db_ip} is outside {}", first.name),
    );
    assert_eq!(
        hops(&got),
        [
            hop("from-container", "dropped", Some("not-in-network")),
            hop("to-container", "dropped", Some("not-in-network"))
        ],
        "dropped at the source, and the destination would drop it too: {got}"
    );

    let web_ip = container_ip(&web, &normal);
    let got = explain(&web.name, &format!("{db_ip}:5432"));
    assert_verdict(
        &got,
        "dropped",
        Some("not-in-network"),
        &format!("{web_ip} is outside {}", second.name),
    );
    assert_eq!(
        hops(&got),
        [
            hop("from-container", "forwarded", None),
            hop("to-container", "dropped", Some("not-in-network"))
        ],
        "{got}"
    );
    assert!(
        got["hops"][0]["rule"]
            .as_str()
            .unwrap()
            .contains("observed, not enforced"),
        "{got}"
    );
}

#[test]
fn from_outside_the_uplink_shield_decides_first() {
    require_root();
    require_dockerd();
    let backend = TestNetwork::create("back", &["--internal"]);
    let db = TestContainer::run("db", &["--network", &backend.name]);
    let db_ip = container_ip(&db, &backend);
    let subnet = backend.ipam_field("Subnet");
    let destination = format!("{}:5432", db.name);

    let uplink = ScratchVeth::create("x");
    let pins = PinDir::create();
    let ifindex = nix::net::if_::if_nametoindex(uplink.name.as_str()).unwrap();
    let mut datapath = Datapath::load(&LoadOptions {
        pin_root: Some(pins.0.clone()),
        ..LoadOptions::default()
    })
    .unwrap();
    assert_eq!(
        datapath.attach_uplink(&uplink.name, ifindex).unwrap(),
        Attachment::Attached
    );
    drop(datapath);

    let got = explain_in(Some(&pins.0), "203.0.113.7", &destination);
    assert_verdict(
        &got,
        "dropped",
        Some("protected-prefix"),
        &format!(
            "{db_ip} is inside protected prefix {subnet} of internal network {}: the uplink shield drops it",
            backend.name
        ),
    );
    assert_eq!(got["src"], "203.0.113.7");
    assert_eq!(got["dst"], db_ip.as_str());
    assert_eq!(got["hops"][0]["interface"], uplink.name.as_str(), "{got}");
    assert_eq!(got["hops"][0]["kernel"]["agrees"], true, "{got}");
    assert_eq!(
        got["hops"][0]["kernel"]["reason"], "protected-prefix",
        "{got}"
    );
    assert_eq!(
        hops(&got),
        [
            hop("uplink", "dropped", Some("protected-prefix")),
            hop("to-container", "dropped", Some("not-in-network"))
        ],
        "{got}"
    );

    let got = explain("203.0.113.7", &destination);
    assert_verdict(
        &got,
        "dropped",
        Some("not-in-network"),
        "nothing from outside the network reaches its endpoints",
    );
    assert_eq!(
        hops(&got),
        [
            hop("uplink", "skipped", None),
            hop("to-container", "dropped", Some("not-in-network"))
        ],
        "{got}"
    );
    assert!(
        got["hops"][0]["rule"]
            .as_str()
            .unwrap()
            .contains("no uplink shield is attached"),
        "{got}"
    );
    assert_eq!(got["hops"][0]["kernel"], Value::Null, "{got}");
}

#[test]
fn the_host_cannot_open_connections_into_an_internal_network() {
    require_root();
    require_dockerd();
    let backend = TestNetwork::create("back", &["--internal"]);
    let db = TestContainer::run("db", &["--network", &backend.name]);
    let gateway = backend.ipam_field("Gateway");

    let got = explain("host", &format!("{}:5432", db.name));
    assert_verdict(
        &got,
        "dropped",
        Some("host-access"),
        &format!(
            "the host (gateway {gateway}) cannot open connections into {}",
            backend.name
        ),
    );
    assert_eq!(got["source"], "host");
    assert_eq!(
        got["src"],
        gateway.as_str(),
        "the host sends from the gateway"
    );
    assert_eq!(
        hops(&got),
        [hop("to-container", "dropped", Some("host-access"))],
        "{got}"
    );
}

#[test]
fn an_internal_container_without_a_default_route_cannot_address_the_outside() {
    require_root();
    require_dockerd();
    let backend = TestNetwork::create("back", &["--internal"]);
    let db = TestContainer::run("db", &["--network", &backend.name]);
    // Docker 20.10 gives an internal network's containers a default route
    // through the gateway (measured here); without it they have no route
    // out at all.
    if db.nsenter(&["ip", "route"]).contains("default") {
        db.nsenter(&["ip", "route", "del", "default"]);
    }

    let got = explain(&db.name, "203.0.113.7:443");
    assert_eq!(got["verdict"], "unroutable", "{got}");
    assert_eq!(got["reason"], Value::Null, "{got}");
    assert_eq!(
        got["rule"],
        format!("{} has no route to 203.0.113.7", db.name).as_str(),
        "{got}"
    );
    assert_eq!(got["hops"], serde_json::json!([]), "{got}");
    assert_eq!(got["kernel_agrees"], Value::Null, "no hop to check: {got}");
}

#[test]
fn explain_errors_are_one_actionable_line() {
    require_root();
    require_dockerd();
    let backend = TestNetwork::create("back", &["--internal"]);
    let db = TestContainer::run("db", &["--network", &backend.name]);
    let db_ip = container_ip(&db, &backend);
    for (args, expected) in [
        (
            vec!["explain", "nwtest-no-such-container", "203.0.113.7"],
            "no running container named",
        ),
        (
            vec!["explain", "203.0.113.7", "198.51.100.1:80"],
            "is not on any Docker network of this host",
        ),
        (
            vec!["explain", "2001:db8::7", &db_ip],
            "give both in one family",
        ),
    ] {
        let out = netwatch(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    }
}
