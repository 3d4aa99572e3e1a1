//! The errors users meet: one line that says what to do, and a non-zero
//! exit. Runs the real command line (`netwatch-under-test`).

use std::process::{Command, Output};

use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{TestNetwork, require_dockerd},
    fixture::require_root,
};

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");

fn netwatch(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(NETWATCH)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run netwatch")
}

/// Asserts a failure whose stderr is exactly one line containing `needle`.
fn assert_one_line_error(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "expected a failure, got {output:?}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(
        lines[0].contains(needle),
        "expected {needle:?} in {:?}",
        lines[0]
    );
}

#[test]
fn docker_socket_missing_says_to_start_dockerd() {
    let out = netwatch(
        &["networks"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_one_line_error(&out, "no such file; is dockerd running?");
}

#[test]
fn unknown_container_and_network_are_named() {
    require_root();
    require_dockerd();
    let out = netwatch(&["inspect", "nwtest-there-is-no-such-container"], &[]);
    assert_one_line_error(&out, "nwtest-there-is-no-such-container");
    let out = netwatch(&["networks", "nwtest-there-is-no-such-network"], &[]);
    assert_one_line_error(&out, "docker network ls");
}

#[test]
fn a_second_agent_is_refused_while_one_runs() {
    require_root();
    require_dockerd();
    let network = TestNetwork::create("solo", &["--internal"]);
    let agent = AgentProcess::start(NETWATCH, &[&network.name]);
    wait_for(
        "the first agent's sync",
        std::time::Duration::from_secs(10),
        || agent.synced(),
    );
    let run_dir = agent.run_dir.to_str().unwrap().to_string();
    let out = netwatch(
        &[
            "agent",
            "--run-dir",
            &run_dir,
            "--pin-root",
            "/sys/fs/bpf/netwatch-test-second",
        ],
        &[],
    );
    assert_one_line_error(&out, "another netwatch agent is already running");
    assert!(!std::path::Path::new("/sys/fs/bpf/netwatch-test-second").exists());
}

#[test]
fn bad_flags_are_refused_before_anything_is_loaded() {
    let out = netwatch(&["agent", "--resync-secs", "0"], &[]);
    assert!(!out.status.success());
    let out = netwatch(&["agent", "--uplink", "none", "--uplink", "eth0"], &[]);
    assert_one_line_error(&out, "--uplink none turns the shield off");
    let out = netwatch(&["status", "-o", "yaml"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}

/// Runs netwatch as root with `drop` (setpriv names: `bpf`, `net_admin`…)
/// removed from its bounding set, so that it starts without them.
fn netwatch_without(drop: &[&str], args: &[&str]) -> Output {
    let caps = drop
        .iter()
        .map(|c| format!("-{c}"))
        .collect::<Vec<_>>()
        .join(",");
    Command::new("setpriv")
        .args(["--bounding-set", &caps, "--inh-caps", &caps, "--", NETWATCH])
        .args(args)
        .output()
        .expect("run setpriv (util-linux)")
}

#[test]
fn enforcement_commands_without_their_capabilities_say_which_and_leave_nothing() {
    require_root();
    let pins = netwatch_tests::netns::PinDir::create();
    let run_dir = std::env::temp_dir().join(format!("netwatch-caps-{}", std::process::id()));
    let pin_root = pins.0.to_str().unwrap();
    let run_dir_arg = run_dir.to_str().unwrap();
    let agent = [
        "agent",
        "--uplink",
        "none",
        "--pin-root",
        pin_root,
        "--run-dir",
        run_dir_arg,
        "--metrics-addr",
        "off",
    ];
    // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON (as in the
    // kernel): drop it too to see them missing.
    let out = netwatch_without(&["bpf", "sys_admin"], &agent);
    assert_one_line_error(
        &out,
        "lacks CAP_BPF, CAP_SYS_ADMIN: run netwatch as root, or in a container with --cap-add BPF --cap-add SYS_ADMIN",
    );
    let out = netwatch_without(&["net_admin", "perfmon", "sys_admin"], &agent);
    assert_one_line_error(&out, "lacks CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN");
    let out = netwatch_without(&["sys_ptrace"], &agent);
    assert_one_line_error(&out, "lacks CAP_SYS_PTRACE");
    assert!(!pins.0.exists(), "nothing pinned");
    assert!(!run_dir.exists(), "no run directory");

    let out = netwatch_without(&["sys_admin"], &["flows", "--standalone"]);
    assert_one_line_error(&out, "lacks CAP_SYS_ADMIN");
    let out = netwatch_without(&["net_admin"], &["detach"]);
    assert_one_line_error(&out, "netwatch detach needs CAP_BPF, CAP_NET_ADMIN");
    let out = netwatch_without(&["bpf", "sys_admin"], &["status"]);
    assert_one_line_error(&out, "netwatch status needs CAP_BPF");
    let out = netwatch_without(&["sys_admin"], &["explain", "a", "b"]);
    assert_one_line_error(&out, "netwatch explain needs CAP_SYS_ADMIN, CAP_BPF");
}
