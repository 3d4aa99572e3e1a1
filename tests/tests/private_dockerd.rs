//! A private dockerd started with `--iptables=false` next to the main one:
//! the docker helpers talk to it while activated, its bridge gets no
//! iptables rule, and once dropped nothing of it is left (processes, mounts,
//! bridges, directories, its socket).

use std::{path::Path, process::Command};

use netwatch_tests::{
    docker::{
        TEST_IMAGE, TestContainer, TestNetwork, compose_env, current_host, docker, docker_ok,
        require_dockerd,
    },
    dockerd::{PrivateDockerd, leftovers},
    fixture::require_root,
};

/// docker0's ifindex, if the host has one (the main daemon's default bridge).
fn docker0() -> Option<String> {
    std::fs::read_to_string("/sys/class/net/docker0/ifindex").ok()
}

fn host_rules() -> String {
    let mut rules = String::new();
    for table in ["filter", "nat"] {
        let output = Command::new("iptables")
            .args(["-w", "-t", table, "-S"])
            .output()
            .expect("iptables");
        assert!(output.status.success());
        rules.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    rules
}

#[test]
fn a_private_dockerd_without_iptables_leaves_nothing_behind() {
    require_root();
    require_dockerd();
    let docker0_before = docker0();
    let daemon = PrivateDockerd::start(&["--iptables=false"]);
    let root = daemon.root().to_owned();
    // A second dockerd must leave the main one's default bridge alone
    // (with --bridge=none it would delete docker0).
    assert_eq!(docker0(), docker0_before, "docker0 changed");
    assert!(daemon.host().starts_with("unix:///run/nwd"));
    let dockerd_pid = daemon.pid();
    let containerd = Command::new("pgrep")
        .args(["-P", &dockerd_pid.to_string(), "containerd"])
        .output()
        .unwrap();
    let containerd_pid = String::from_utf8_lossy(&containerd.stdout)
        .trim()
        .to_owned();
    assert!(
        !containerd_pid.is_empty(),
        "the private dockerd runs no containerd of its own"
    );
    let bridges;
    {
        let _active = daemon.activate();
        assert_eq!(current_host().as_deref(), Some(daemon.host()));
        assert_eq!(compose_env()[0].1, daemon.host());
        // The helpers now talk to the private daemon: it has the image, and
        // its own networks only.
        require_dockerd();
        docker_ok(&["image", "inspect", TEST_IMAGE]);
        assert_eq!(
            docker_ok(&["info", "--format", "{{.Driver}}"]),
            daemon.storage_driver()
        );
        // Its default network uses its own bridge.
        assert_eq!(
            docker_ok(&[
                "network",
                "inspect",
                "--format",
                r#"{{index .Options "com.docker.network.bridge.name"}}"#,
                "bridge"
            ]),
            daemon.bridge()
        );
        let internal = TestNetwork::create("priv-int", &["--internal"]);
        let container = TestContainer::run("priv", &["--network", &internal.name]);
        assert!(container.pid() > 0);
        // A second network and container, left for the daemon's drop to
        // remove.
        let other = TestNetwork::create("priv-left", &[]);
        let left = TestContainer::run("priv-left", &["--network", &other.name]);
        // And one on its default bridge.
        let on_default = TestContainer::run("priv-default", &[]);
        bridges = vec![internal.bridge(), other.bridge(), daemon.bridge()];
        for bridge in &bridges {
            assert!(
                Path::new(&format!("/sys/class/net/{bridge}")).exists(),
                "no bridge {bridge}"
            );
        }
        let rules = host_rules();
        for bridge in &bridges {
            assert!(
                !rules.contains(bridge.as_str()),
                "a dockerd with --iptables=false added rules for {bridge}:\n{rules}"
            );
        }
        // The main daemon does not see them.
        let main_now = Command::new("docker")
            .args(["network", "ls", "--format", "{{.Name}}"])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&main_now.stdout).contains(&internal.name));
        drop(container);
        drop(internal);
        std::mem::forget(left);
        std::mem::forget(on_default);
        std::mem::forget(other);
    }
    assert_eq!(current_host(), None);
    drop(daemon);
    let left = leftovers(&root);
    assert!(left.is_empty(), "left behind: {left:?}");
    for bridge in &bridges {
        assert!(
            !Path::new(&format!("/sys/class/net/{bridge}")).exists(),
            "bridge {bridge} is still there"
        );
    }
    for pid in [dockerd_pid.to_string(), containerd_pid] {
        assert!(
            !Path::new(&format!("/proc/{pid}/cmdline")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .is_empty(),
            "process {pid} still runs"
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&root.display().to_string()),
        "mounts under {} are left",
        root.display()
    );
    assert_eq!(docker0(), docker0_before, "docker0 changed");
    // The helpers talk to the main daemon again, which still answers.
    docker(&["version"]).expect("the main dockerd answers");
}

#[test]
fn a_daemon_that_cannot_start_says_why_and_leaves_nothing() {
    require_root();
    let docker0_before = docker0();
    let panic = std::panic::catch_unwind(|| PrivateDockerd::start(&["--no-such-flag"]))
        .map(|_| ())
        .unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("exited") && message.contains("no-such-flag"),
        "{message}"
    );
    let root = message
        .split_whitespace()
        .find_map(|word| word.strip_suffix("/dockerd.log"))
        .expect("the message names the log");
    let left = leftovers(Path::new(root));
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(docker0(), docker0_before, "docker0 changed");
}
