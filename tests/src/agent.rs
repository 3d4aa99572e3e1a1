//! The agent as a separate process, killed (with SIGKILL) and its pins
//! removed when the guard drops, even when a test fails.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::netns::PinDir;

/// A running `netwatch agent` limited to some networks, with private pins
/// and run directory.
pub struct AgentProcess {
    binary: PathBuf,
    child: Option<Child>,
    pub pins: PinDir,
    pub run_dir: PathBuf,
    /// The agent's `--state-dir` (its saved plan), kept across
    /// [`AgentProcess::restart`]s like a host's /var/lib/netwatch.
    pub state_dir: PathBuf,
    networks: Vec<String>,
    uplinks: Vec<String>,
    /// More `netwatch agent` arguments (e.g. `--api-group`).
    extra_args: Vec<String>,
    /// Environment variables set last (e.g. `DOCKER_HOST`, `NOTIFY_SOCKET`).
    envs: Vec<(String, String)>,
    /// The network namespace (a name under /run/netns) it runs in, if not
    /// the test process's.
    netns: Option<String>,
    log: PathBuf,
}

impl AgentProcess {
    /// Starts `binary` (an integration test's
    /// `env!("CARGO_BIN_EXE_netwatch-under-test")`) as an agent for
    /// `networks`, with a 2 s resync and no uplink shield (the default would
    /// put it on the machine's real uplink).
    pub fn start(binary: &str, networks: &[&str]) -> AgentProcess {
        AgentProcess::start_with_uplinks(binary, networks, &[])
    }

    /// As [`AgentProcess::start`], with the uplink shield on `uplinks`
    /// (interfaces the test created).
    pub fn start_with_uplinks(binary: &str, networks: &[&str], uplinks: &[&str]) -> AgentProcess {
        AgentProcess::start_with_args(binary, networks, uplinks, &[])
    }

    /// As [`AgentProcess::start_with_uplinks`], with more `netwatch agent`
    /// arguments.
    pub fn start_with_args(
        binary: &str,
        networks: &[&str],
        uplinks: &[&str],
        extra_args: &[&str],
    ) -> AgentProcess {
        AgentProcess::start_full(binary, networks, uplinks, extra_args, &[])
    }

    /// As [`AgentProcess::start_with_args`] with no uplink, and with these
    /// environment variables (they win over the docker helpers' own).
    pub fn start_with_env(
        binary: &str,
        networks: &[&str],
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> AgentProcess {
        AgentProcess::start_full(binary, networks, &[], extra_args, envs)
    }

    /// As [`AgentProcess::start`], inside the network namespace
    /// `/run/netns/<netns>` (where a private dockerd runs, see
    /// `crate::host_netns`): started as `nsenter --net=/run/netns/<netns>
    /// netwatch agent …`, which changes the network namespace only (bpffs,
    /// /run and the run, state and pin directories stay the host's) and
    /// execs the agent, so [`AgentProcess::pid`] is the agent's. Every
    /// [`AgentProcess::restart`] runs there too; [`AgentProcess::netwatch`]
    /// and [`AgentProcess::flows`] still run in the test's namespace.
    pub fn start_in_netns(binary: &str, netns: &str, networks: &[&str]) -> AgentProcess {
        AgentProcess::start_full_in(Some(netns), binary, networks, &[], &[], &[])
    }

    /// As [`AgentProcess::start_in_netns`], with more `netwatch agent`
    /// arguments and environment variables.
    pub fn start_in_netns_with(
        binary: &str,
        netns: &str,
        networks: &[&str],
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> AgentProcess {
        AgentProcess::start_full_in(Some(netns), binary, networks, &[], extra_args, envs)
    }

    fn start_full(
        binary: &str,
        networks: &[&str],
        uplinks: &[&str],
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> AgentProcess {
        AgentProcess::start_full_in(None, binary, networks, uplinks, extra_args, envs)
    }

    fn start_full_in(
        netns: Option<&str>,
        binary: &str,
        networks: &[&str],
        uplinks: &[&str],
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> AgentProcess {
        let pins = PinDir::create();
        let run_dir = std::env::temp_dir().join(format!(
            "netwatch-agent-test-{}",
            pins.0.file_name().unwrap().to_string_lossy()
        ));
        let log = run_dir.with_extension("log");
        let state_dir = run_dir.with_extension("state");
        let mut agent = AgentProcess {
            binary: PathBuf::from(binary),
            child: None,
            pins,
            run_dir,
            state_dir,
            networks: networks.iter().map(|s| s.to_string()).collect(),
            uplinks: uplinks.iter().map(|s| s.to_string()).collect(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            netns: netns.map(str::to_owned),
            log,
        };
        agent.restart();
        agent
    }

    /// Starts the agent process again (after [`AgentProcess::kill`]) with
    /// other extra arguments than before: another build's settings on the
    /// same pins, run and state directories.
    pub fn restart_with_args(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        self.restart();
    }

    /// Starts the agent process again (after [`AgentProcess::kill`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the agent is still running");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net=/run/netns/{netns}"))
                    .arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        command
            .arg("agent")
            .arg("--pin-root")
            .arg(&self.pins.0)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .env("RUST_LOG", "info")
            // The daemon the docker helpers use (a test's private dockerd).
            .envs(crate::docker::compose_env())
            .stdout(Stdio::null())
            .stderr(log);
        for network in &self.networks {
            command.args(["--network", network]);
        }
        if self.uplinks.is_empty() {
            command.args(["--uplink", "none"]);
        }
        for uplink in &self.uplinks {
            command.args(["--uplink", uplink]);
        }
        // A 2 s resync unless the test sets its own.
        if !self.extra_args.iter().any(|a| a == "--resync-secs") {
            command.args(["--resync-secs", "2"]);
        }
        // Agents of parallel tests must not fight over the default port.
        if !self.extra_args.iter().any(|a| a == "--metrics-addr") {
            command.args(["--metrics-addr", "127.0.0.1:0"]);
        }
        command.args(&self.extra_args);
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));
        self.child = Some(command.spawn().expect("start the agent"));
    }

    /// SIGKILL, as an OOM killer or an admin would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the agent is frozen (as a hung or descheduled agent would
    /// be) until [`AgentProcess::resume`]; its pinned programs go on
    /// enforcing. A frozen agent still dies on [`AgentProcess::kill`].
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGHUP, as `systemctl reload` or logrotate's postrotate sends it.
    pub fn hangup(&self) {
        self.signal(nix::sys::signal::Signal::SIGHUP);
    }

    /// SIGCONT after [`AgentProcess::pause`].
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let child = self.child.as_ref().expect("the agent runs");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal)
            .unwrap_or_else(|e| panic!("cannot send {signal} to the agent: {e}"));
    }

    /// SIGTERM, as a service manager stops it; waits up to 10 s for it to
    /// exit (then SIGKILL). Returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Runs `netwatch <args…> --pin-root … --run-dir …` with this agent's
    /// binary, pins and run directory, against the dockerd the docker
    /// helpers use.
    pub fn netwatch(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.binary)
            .args(args)
            .arg("--pin-root")
            .arg(self.pin_root())
            .arg("--run-dir")
            .arg(&self.run_dir)
            .envs(crate::docker::compose_env())
            .output()
            .expect("run netwatch")
    }

    /// `netwatch flows -o json <args…>` asked of this agent's API: the
    /// flows, or none when it does not answer (yet).
    pub fn flows_json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let out = self.flows(&[&["-o", "json"], args].concat());
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// `netwatch flows <args…>` asked of this agent's API.
    pub fn flows(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.binary)
            .arg("flows")
            .args(args)
            .arg("--socket")
            .arg(self.api_socket())
            .output()
            .expect("run netwatch flows")
    }

    /// The agent's API socket (`api.sock` in its run directory).
    pub fn api_socket(&self) -> PathBuf {
        self.run_dir.join("api.sock")
    }

    /// Whether the running agent process has finished a sync with Docker.
    pub fn synced(&self) -> bool {
        let Some(child) = &self.child else {
            return false;
        };
        netwatch::agent::status_file::AgentStatus::read(&self.run_dir)
            .is_some_and(|s| s.pid == child.id() && s.last_sync.is_some())
    }

    /// How many syncs with Docker the running agent process has finished.
    pub fn syncs(&self) -> u64 {
        let Some(child) = &self.child else {
            return 0;
        };
        netwatch::agent::status_file::AgentStatus::read(&self.run_dir)
            .filter(|s| s.pid == child.id())
            .map_or(0, |s| s.syncs)
    }

    /// The running agent process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn pin_root(&self) -> &Path {
        &self.pins.0
    }

    /// The agent's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.run_dir);
        let _ = std::fs::remove_dir_all(&self.state_dir);
        let _ = std::fs::remove_file(&self.log);
        // `pins` drops next and detaches everything this agent pinned.
    }
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after
/// `timeout`. Returns how long it took.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if condition() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
