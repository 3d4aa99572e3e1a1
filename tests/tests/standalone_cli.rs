//! `netwatch observe --standalone` without an agent: it attaches
//! observe-only programs for its own lifetime, streams what it sees, and a
//! SIGKILL leaves every veth as it was and nothing pinned.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use netwatch::host::interfaces::{MacAddr, host_veth};
use netwatch_tests::{
    agent::wait_for,
    docker::{TestContainer, TestNetwork, docker_ok, require_dockerd},
    fixture::{require_root, tcx_program_counts},
};
use serde_json::Value;

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");

/// The child, killed on drop even when the test fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_killed_standalone_observer_leaves_no_trace() {
    require_root();
    require_dockerd();
    let network = TestNetwork::create("standalone", &["--internal"]);
    let a = TestContainer::run("a", &["--network", &network.name]);
    let b = TestContainer::run("b", &["--network", &network.name]);
    let mac: MacAddr = a.endpoint_field(&network, "MacAddress").parse().unwrap();
    let veth = host_veth(a.pid(), mac).unwrap().ifname;
    let before = tcx_program_counts(&veth);
    let pins_before = netwatch_tests::netns::bpffs_entries_but_other_tests();

    let mut child = Child(
        Command::new(NETWATCH)
            .args([
                "observe",
                "--standalone",
                "-o",
                "jsonl",
                "--container",
                &a.name,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(
        "the session's programs on a's veth",
        Duration::from_secs(10),
        || tcx_program_counts(&veth) == (before.0 + 1, before.1 + 1),
    );
    let (lines, received) = mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let b_ip = b.endpoint_field(&network, "IPAddress");
    docker_ok(&["exec", &a.name, "ping", "-c", "2", "-W", "1", &b_ip]);
    let event: Value = serde_json::from_str(
        &received
            .recv_timeout(Duration::from_secs(3))
            .expect("an event within the drain interval"),
    )
    .unwrap();
    assert_eq!(event["container"], a.name.as_str(), "{event}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.0.wait();
    wait_for(
        "the links to go with the process",
        Duration::from_secs(5),
        || tcx_program_counts(&veth) == before,
    );
    assert_eq!(
        netwatch_tests::netns::bpffs_entries_but_other_tests(),
        pins_before,
        "nothing was pinned"
    );
}
