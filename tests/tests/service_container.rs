//! The agent as a container, the way docs/operations.md documents it: host network
//! and pid namespaces, bpffs and the Docker socket mounted, and only the
//! capabilities it needs (SYS_ADMIN, which the kernel takes for BPF and
//! PERFMON too, NET_ADMIN, SYS_PTRACE) instead of `--privileged`.
//! No image can be pulled here, so the image is `docker import`ed from a
//! root filesystem holding the netwatch binary and the shared libraries
//! `ldd` says it needs, nothing else (its kernel programs are embedded).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use netwatch::agent::status_file::AgentStatus;
use netwatch_tests::{
    agent::wait_for,
    docker::{
        TestContainer, TestNetwork, compose_env, current_host, docker, docker_ok, require_dockerd,
        unique_name,
    },
    fixture::require_root,
    netns::PinDir,
};

const AGENT: &str = env!("CARGO_BIN_EXE_netwatch-under-test");

/// Removed (files, image, container) on drop, even when the test fails.
struct Cleanup {
    dirs: Vec<PathBuf>,
    image: Option<String>,
    container: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(container) = &self.container {
            let _ = docker(&["rm", "-f", container]);
        }
        if let Some(image) = &self.image {
            let _ = docker(&["rmi", "-f", image]);
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The files `binary` loads: what `ldd` lists with a path.
fn shared_libraries(binary: &str) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    assert!(out.status.success(), "ldd {binary} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Imports an image whose root filesystem is `/usr/bin/netwatch` (this
/// test's binary) and its shared libraries.
fn import_agent_image(work: &Path, image: &str) {
    let rootfs = work.join("rootfs");
    let bin = rootfs.join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(AGENT, bin.join("netwatch")).unwrap();
    for library in shared_libraries(AGENT) {
        let inside = rootfs.join(library.strip_prefix("/").unwrap());
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        // Follow links: the image gets the file under the name ldd gave.
        std::fs::copy(&library, &inside).unwrap();
    }
    std::fs::create_dir_all(rootfs.join("run/netwatch")).unwrap();
    let tarball = work.join("rootfs.tar");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    docker_ok(&[
        "import",
        "--change",
        r#"ENTRYPOINT ["/usr/bin/netwatch"]"#,
        "--change",
        r#"CMD ["agent"]"#,
        tarball.to_str().unwrap(),
        image,
    ]);
}

/// The Docker socket the helpers talk to, to mount into the container.
fn docker_socket() -> String {
    current_host()
        .and_then(|host| host.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned())
}

#[test]
fn the_agent_runs_as_a_container_with_three_capabilities_and_enforces_an_internal_network() {
    require_root();
    require_dockerd();
    let work = std::env::temp_dir().join(unique_name("agent-image"));
    let run_dir = std::env::temp_dir().join(unique_name("agent-run"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&run_dir).unwrap();
    let image = format!("{}:test", unique_name("agent-image"));
    let mut cleanup = Cleanup {
        dirs: vec![work.clone(), run_dir.clone()],
        image: None,
        container: None,
    };
    import_agent_image(&work, &image);
    cleanup.image = Some(image.clone());

    let internal = TestNetwork::create("svc-int", &["--internal"]);
    let guarded = TestContainer::run("svc-c", &["--network", &internal.name]);
    // Dropped after the container (declared later, dropped first), so the
    // pins it leaves are removed.
    let pins = PinDir::create();
    let name = unique_name("agent");
    cleanup.container = Some(name.clone());
    let socket = docker_socket();
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        // What `--privileged` would give, cut down to what the agent
        // needs (and what this machine allows: its bounding set lacks
        // CAP_SYS_RESOURCE, so runc cannot start a --privileged container
        // here). Docker 20.10 does not know CAP_BPF and CAP_PERFMON;
        // CAP_SYS_ADMIN stands in for both in the kernel, and Docker's
        // default seccomp profile allows bpf() and setns() with it.
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_ADMIN",
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "SYS_PTRACE",
        "--network",
        "host",
        "--pid",
        "host",
        "-v",
        "/sys/fs/bpf:/sys/fs/bpf",
        "-v",
        &format!("{socket}:/var/run/docker.sock"),
        "-v",
        &format!("{}:/run/netwatch", run_dir.display()),
        &image,
        "agent",
        "--network",
        &internal.name,
        "--uplink",
        "none",
        "--metrics-addr",
        "off",
        "--pin-root",
        pins.0.to_str().unwrap(),
    ]);
    let logs = || docker(&["logs", &name]).unwrap_or_else(|e| e);
    let logs_all = || {
        let out = Command::new("docker")
            .envs(compose_env())
            .args(["logs", &name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned() + &logs()
    };
    wait_for(
        "the containerised agent's first sync",
        Duration::from_secs(60),
        || AgentStatus::read(&run_dir).is_some_and(|s| s.last_sync.is_some()),
    );

    // Judged from the host, with the pins the container made: every
    // endpoint of the internal network enforced (exit status 0).
    let status = Command::new(AGENT)
        .args(["status", "--network", &internal.name, "--pin-root"])
        .arg(&pins.0)
        .arg("--run-dir")
        .arg(&run_dir)
        .envs(compose_env())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&status.stdout).into_owned();
    assert_eq!(
        status.status.code(),
        Some(0),
        "status:\n{shown}\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&status.stderr),
        logs_all()
    );
    assert!(
        shown.contains(&guarded.name) || logs_all().contains(&guarded.name),
        "the agent attached to {}:\n{shown}\n{}",
        guarded.name,
        logs_all()
    );

    // `docker stop` sends SIGTERM: the agent exits 0, enforcement stays.
    docker_ok(&["stop", "--time", "20", &name]);
    let exit = docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(exit, "0", "agent log:\n{}", logs_all());
    assert!(
        logs_all().contains("agent stopping; enforcement stays pinned"),
        "{}",
        logs_all()
    );
    drop(guarded);
}
