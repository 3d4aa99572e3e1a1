//! The agent as a systemd service: readiness and stopping notifications on
//! a NOTIFY_SOCKET the test binds, SIGHUP (resync and flow log reopen),
//! and where its configuration comes from (flags, NETWATCH_* variables,
//! defaults).
//!
//! The agents here talk to a fake dockerd that knows no container and
//! manage one network that does not exist, so they attach nothing (and use
//! private pins and run directories, no uplink, no metrics port).

use std::{
    os::unix::net::UnixDatagram,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use netwatch::agent::status_file::AgentStatus;
use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::unique_name,
    fake_dockerd::{Answer, FakeDockerd},
    fixture::require_root,
};

const AGENT: &str = env!("CARGO_BIN_EXE_netwatch-under-test");

/// A network name no fake dockerd knows: the agent manages nothing.
const NO_NETWORK: &str = "nwtest-service-none";

/// A unix datagram socket playing systemd's notification socket; removed
/// when dropped.
struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let path = std::env::temp_dir().join(format!("{}.notify", unique_name("sd")));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket { path, socket }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temp path")
    }

    /// The next message, or None when none arrives within `timeout`.
    ///
    /// With SO_RCVTIMEO set, recv(2) fails with EINTR on any handled signal
    /// even under SA_RESTART (signal(7)), so an interrupted wait (or an
    /// early EAGAIN) goes on until the deadline; any other error fails the
    /// test by name rather than reading as "no message". A CI run once gave
    /// up on READY=1 a few seconds into its 30, with the agent's log still
    /// empty: the old `recv().ok()?` hid which error ended the wait.
    fn next(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.socket
                .set_read_timeout(Some(left))
                .expect("set a read timeout");
            match self.socket.recv(&mut buf) {
                Ok(n) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                // The loop's deadline decides, not an early wake.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading the notify socket {}: {e}", self.path.display()),
            }
        }
    }

    /// Whether a message is waiting now (without waiting for one).
    fn pending(&self) -> Option<String> {
        self.socket.set_nonblocking(true).expect("non-blocking");
        let mut buf = [0u8; 4096];
        let got = self.socket.recv(&mut buf).ok();
        self.socket.set_nonblocking(false).expect("blocking");
        got.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn has_line(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

fn agent_with(fake_host: &str, notify: &NotifySocket, extra_args: &[&str]) -> AgentProcess {
    AgentProcess::start_with_env(
        AGENT,
        &[NO_NETWORK],
        extra_args,
        &[("DOCKER_HOST", fake_host), ("NOTIFY_SOCKET", notify.path())],
    )
}

#[test]
fn ready_is_sent_after_the_first_sync_and_stopping_on_sigterm() {
    require_root();
    let fake = FakeDockerd::start();
    let notify = NotifySocket::bind();
    let mut agent = agent_with(&fake.host(), &notify, &["--resync-secs", "3600"]);
    let ready = notify
        .next(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no notification within 30 s; agent log:\n{}", agent.log()));
    assert!(has_line(&ready, "READY=1"), "first message: {ready:?}");
    assert!(
        has_line(&ready, "STATUS=synced with Docker"),
        "first message: {ready:?}"
    );
    // The status file is written at the end of a sync, before READY.
    let status = AgentStatus::read(&agent.run_dir).expect("the agent's status file");
    assert!(
        status.last_sync.is_some(),
        "READY=1 before the first sync finished"
    );
    assert!(fake.requests("/containers/json") >= 1);
    assert_eq!(notify.pending(), None, "READY=1 is sent once");

    assert!(agent.stop(), "the agent exits 0 on SIGTERM");
    let stopping = notify
        .next(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no STOPPING=1; agent log:\n{}", agent.log()));
    assert!(has_line(&stopping, "STOPPING=1"), "{stopping:?}");
}

#[test]
fn ready_waits_for_a_docker_that_accepts_but_does_not_answer_then_comes_anyway() {
    require_root();
    let fake = FakeDockerd::start();
    // Connected, and the container list never comes (as a socket-activated
    // docker.service that waits for netwatch to be ready would do).
    fake.answer("/containers/json", Answer::Endless);
    let notify = NotifySocket::bind();
    let start = Instant::now();
    let agent = agent_with(&fake.host(), &notify, &["--resync-secs", "3600"]);
    let ready = notify
        .next(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no READY=1 within 30 s; agent log:\n{}", agent.log()));
    let waited = start.elapsed();
    assert!(has_line(&ready, "READY=1"), "{ready:?}");
    assert!(
        has_line(
            &ready,
            "STATUS=waiting for Docker; enforcing what is pinned"
        ),
        "{ready:?}"
    );
    assert!(
        waited >= netwatch::agent::service::READY_WITHOUT_DOCKER_AFTER,
        "READY=1 after {waited:?}, before the sync could finish or the bound pass"
    );
    let status = AgentStatus::read(&agent.run_dir).expect("the agent's status file");
    assert_eq!(status.last_sync, None, "no sync can have finished");
}

#[test]
fn ready_comes_before_docker_answers_when_a_saved_plan_is_guarding() {
    require_root();
    let fake = FakeDockerd::start();
    fake.answer("/containers/json", Answer::Endless);
    let notify = NotifySocket::bind();
    let mut agent = agent_with(&fake.host(), &notify, &["--resync-secs", "3600"]);
    // The plan a previous agent saved (its bridge need not exist yet: the
    // agent guards it as it appears).
    agent.kill();
    let plan = serde_json::json!({
        "format": 1,
        "written_by": "a previous agent",
        "networks": [{
            "name": NO_NETWORK, "bridge": "br-0123456789ab", "internal": true,
            "deny_egress": true, "subnets": ["172.31.250.0/24"],
            "gateways": ["172.31.250.1"], "labels": {}
        }]
    });
    std::fs::create_dir_all(&agent.state_dir).unwrap();
    std::fs::write(agent.state_dir.join("plan.json"), plan.to_string()).unwrap();
    // What the first run may have said is not this run's.
    while notify.next(Duration::from_millis(1)).is_some() {}
    let start = Instant::now();
    agent.restart();
    let ready = notify
        .next(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no READY=1 within 30 s; agent log:\n{}", agent.log()));
    assert!(has_line(&ready, "READY=1"), "{ready:?}");
    assert!(
        has_line(
            &ready,
            "STATUS=guarding 1 network(s) from the saved plan; waiting for Docker"
        ),
        "{ready:?}"
    );
    assert!(
        start.elapsed() < netwatch::agent::service::READY_WITHOUT_DOCKER_AFTER,
        "READY=1 only after {:?}: a saved plan should make it ready at once",
        start.elapsed()
    );
}

#[test]
fn ready_comes_at_once_when_docker_does_not_answer() {
    require_root();
    let notify = NotifySocket::bind();
    let missing = std::env::temp_dir().join(format!("{}.sock", unique_name("nodocker")));
    let host = format!("unix://{}", missing.display());
    let start = Instant::now();
    let agent = agent_with(&host, &notify, &["--log-format", "json"]);
    let ready = notify
        .next(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no READY=1 within 30 s; agent log:\n{}", agent.log()));
    assert!(has_line(&ready, "READY=1"), "{ready:?}");
    assert!(ready.contains("STATUS=Docker does not answer"), "{ready:?}");
    assert!(
        start.elapsed() < netwatch::agent::service::READY_WITHOUT_DOCKER_AFTER,
        "READY=1 only after {:?}: the failed connection should make it ready",
        start.elapsed()
    );
    // --log-format json: every line one object, the warning among them.
    let text = agent.log();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("lost Docker"))),
        "{text}"
    );
}

#[test]
fn sighup_resyncs_with_docker_and_reopens_a_moved_flow_log() {
    require_root();
    let fake = FakeDockerd::start();
    let notify = NotifySocket::bind();
    let dir = std::env::temp_dir().join(unique_name("flowlog"));
    std::fs::create_dir_all(&dir).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let log = dir.join("flows.log");
    let log_arg = log.to_str().unwrap();
    let agent = agent_with(
        &fake.host(),
        &notify,
        &[
            "--resync-secs",
            "3600",
            "--flow-log",
            log_arg,
            "--log-format",
            "journal",
        ],
    );
    notify
        .next(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the agent never got ready; log:\n{}", agent.log()));
    assert!(log.exists(), "the flow log is created at start");
    let syncs = fake.requests("/containers/json");

    // What logrotate does: move the file away, then SIGHUP.
    std::fs::rename(&log, dir.join("flows.log.1")).unwrap();
    agent.hangup();
    // No flow record arrives (nothing is attached): only the reopen can
    // make the file again.
    wait_for(
        "the flow log reopened at its path",
        Duration::from_secs(10),
        || log.exists(),
    );
    wait_for(
        "a resync with Docker after SIGHUP",
        Duration::from_secs(10),
        || fake.requests("/containers/json") > syncs,
    );
    // --log-format journal: a priority on every line, no timestamp.
    let text = agent.log();
    assert!(
        text.contains(
            "<6>netwatch::agent::service: SIGHUP: resyncing with Docker and reopening the flow log"
        ),
        "{text}"
    );
    assert!(
        text.lines()
            .all(|l| l.starts_with('<') && !l.contains("Z INFO")),
        "{text}"
    );
}

/// `netwatch agent --print-config` with these flags and environment.
fn print_config(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(AGENT);
    command.args(["agent", "--print-config"]).args(args);
    for var in [
        "NETWATCH_RESYNC_SECS",
        "NETWATCH_NETWORKS",
        "NETWATCH_METRICS_ADDR",
        "NETWATCH_LOG_FORMAT",
    ] {
        command.env_remove(var);
    }
    command.envs(envs.iter().copied());
    command.output().expect("run netwatch agent --print-config")
}

fn config_line(output: &std::process::Output, name: &str) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find(|l| l.starts_with(&format!("{name} = ")))
        .unwrap_or_else(|| panic!("no {name} line"))
        .to_owned()
}

#[test]
fn a_flag_beats_its_environment_variable_which_beats_the_default() {
    let env = [
        ("NETWATCH_RESYNC_SECS", "7"),
        ("NETWATCH_METRICS_ADDR", "off"),
    ];
    // (flags, environment, setting, the line --print-config shows)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (&[], &[], "resync-secs", "resync-secs = 30  (default)"),
        (
            &[],
            &[],
            "metrics-addr",
            "metrics-addr = 127.0.0.1:9469  (default)",
        ),
        (
            &[],
            &env,
            "resync-secs",
            "resync-secs = 7  (env NETWATCH_RESYNC_SECS)",
        ),
        (
            &[],
            &env,
            "metrics-addr",
            "metrics-addr = off  (env NETWATCH_METRICS_ADDR)",
        ),
        (
            &["--resync-secs", "9"],
            &env,
            "resync-secs",
            "resync-secs = 9  (flag)",
        ),
        // A flag for one setting leaves the others to their variables.
        (
            &["--resync-secs", "9"],
            &env,
            "metrics-addr",
            "metrics-addr = off  (env NETWATCH_METRICS_ADDR)",
        ),
    ];
    for (flags, envs, name, expected) in cases {
        assert_eq!(
            config_line(&print_config(flags, envs), name),
            *expected,
            "flags {flags:?}, environment {envs:?}"
        );
    }
}

#[test]
fn list_variables_take_commas_and_a_flag_replaces_the_whole_list() {
    let env = [("NETWATCH_NETWORKS", "shop_db,shop_backend")];
    assert_eq!(
        config_line(&print_config(&[], &env), "network"),
        "network = shop_db,shop_backend  (env NETWATCH_NETWORKS)"
    );
    assert_eq!(
        config_line(&print_config(&["--network", "web"], &env), "network"),
        "network = web  (flag)"
    );
}

#[test]
fn a_bad_environment_value_is_refused_in_one_line_naming_the_flag() {
    let out = print_config(&[], &[("NETWATCH_RESYNC_SECS", "soon")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'soon' for '--resync-secs"),
        "{stderr}"
    );
}
