//! `netwatch explain` against dockerd: the reference model's verdict and
//! rule for each kind of destination, and the kernel program agreeing with
//! it (`--from-kernel`). No packet is sent: the kernel check runs the packet
//! through BPF_PROG_TEST_RUN.

use std::process::Command;

use netwatch_tests::{
    docker::{TestContainer, TestNetwork, docker_ok, require_dockerd},
    fixture::require_root,
};
use serde_json::Value;

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");

fn explain(container: &str, destination: &str) -> Value {
    let out = Command::new(NETWATCH)
        .args([
            "explain",
            container,
            destination,
            "--from-kernel",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "explain {destination}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    all[0].clone()
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
    let gateway = docker_ok(&[
        "network",
        "inspect",
        "--format",
        "{{(index .IPAM.Config 0).Gateway}}",
        &internal.id,
    ]);

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
        assert_eq!(got["verdict"], verdict, "{destination}: {got}");
        assert_eq!(got["reason"].as_str(), reason, "{destination}: {got}");
        assert!(
            got["rule"].as_str().unwrap().contains(rule),
            "{destination}: {got}"
        );
        assert_eq!(got["kernel"]["agrees"], true, "{destination}: {got}");
    }
}
