//! A second, private dockerd, for host states the main one must not be put
//! in (e.g. `--iptables=false`), while the main dockerd (started by `cargo
//! xtask setup`, /var/run/docker.sock) keeps running.
//!
//! Everything it owns lives under one short directory, `/run/nwd<pid>x<n>`:
//!
//! ```text
//!   d.sock         its API (-H unix://…; unix socket paths must fit 108 bytes)
//!   d.pid          --pidfile
//!   daemon.json    an empty --config-file (the host's /etc/docker/daemon.json is not read)
//!   dockerd.log    its log (the tail goes into panic messages)
//!   exec/          --exec-root: containerd's socket and state, runc state, netns mounts
//!   data/          --data-root: images, containers, the network store
//! ```
//!
//! Its default bridge network uses a bridge of its own, `nwd<pid>x<n>b`,
//! which this module creates before starting it (`-b`; dockerd picks a free
//! subnet for it as it would for docker0). Not `--bridge=none`: with the
//! bridge disabled, dockerd *deletes the host's `docker0`* at start
//! (`removeDefaultBridgeInterface` in daemon_unix.go), the main daemon's
//! default bridge, with every container port on it.
//!
//! On drop it removes its containers and networks, stops (SIGTERM, 15 s,
//! SIGKILL), and then makes sure nothing is left: no process mentioning its
//! directory (containerd, shims), no mount under it, no bridge of its
//! networks nor its default bridge, no directory. Instances of test
//! processes that died are cleaned the same way when the next one starts.
//!
//! Not meant to manage iptables in the host's namespace: with iptables on,
//! it would edit the same DOCKER chains as the main daemon (libnetwork's
//! bridge driver removes and recreates them as it starts). Start it with
//! `--iptables=false` there, or confine it to a network namespace of the
//! test's own with [`PrivateDockerd::start_in_netns`].
//!
//! # A daemon in a network namespace of its own
//!
//! [`PrivateDockerd::start_in_netns`] runs it as `nsenter
//! --net=/run/netns/<ns> dockerd …` (nsenter execs dockerd, so the child's
//! pid is dockerd's): only the network namespace changes. Its iptables
//! rules (filter and nat, with default settings), its bridges, its
//! containers' host-side veths, its routes and its `ip_forward` all live in
//! that namespace, and the host's DOCKER chains are never touched. The
//! mount namespace stays the host's, so everything else works as for a
//! daemon on the host (checked with Debian's 20.10): overlay2 under its data
//! root, containerd and runc under its exec root, the containers' sandbox
//! namespaces bind-mounted under `exec/netns`, cgroups, and bpffs at
//! /sys/fs/bpf for an agent started beside it. (`ip netns exec` would
//! instead remount /sys for the namespace, hiding /sys/fs/bpf and the
//! cgroup mounts.) What dockerd needs of the namespace it reads from
//! /proc/sys/net (`ip_forward`, the `bridge-nf-call-*` switches), which
//! follows the reading process's network namespace, and through netlink;
//! /sys/class/net, which keeps showing the host's interfaces under the
//! host's sysfs mount, it does not need. The default bridge is created
//! inside the namespace (`ip -n <ns> link add`), and the sweep deletes
//! bridges there; the namespace's name is kept in `netns` under the
//! daemon's directory so that the sweep of a dead test's daemon finds them
//! too. The namespace itself belongs to the caller (e.g.
//! `crate::host_netns::HostNetns`), which must outlive the daemon.

use std::{
    fs::File,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{
    docker::{HostOverride, TEST_IMAGE, override_host, run_docker},
    netns::ip_in,
};

/// What every instance's directory in /run starts with.
pub const PREFIX: &str = "nwd";

/// How long `start` waits for the daemon to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long drop waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The storage driver for private daemons, unless
/// `NETWATCH_TEST_DOCKERD_STORAGE` names another. overlay2 works here for a
/// second daemon whose data root is on the same ext4 as the main one's; vfs
/// (which always works) would copy each layer per container.
pub const DEFAULT_STORAGE_DRIVER: &str = "overlay2";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A running private dockerd; stopped, and everything of it removed, on
/// drop.
pub struct PrivateDockerd {
    root: PathBuf,
    host: String,
    storage_driver: String,
    child: Option<Child>,
    /// dockerd's arguments, kept to start it again the same way.
    args: Vec<String>,
    /// The network namespace (under /run/netns) it runs in, if not the
    /// host's.
    netns: Option<String>,
}

impl PrivateDockerd {
    /// Starts `dockerd` with its own roots, socket, pidfile and default
    /// bridge, and `extra_args` (e.g. `--iptables=false`), waits up to 30 s
    /// for it to answer, and loads the test image into it from the main
    /// daemon. Needs root.
    pub fn start(extra_args: &[&str]) -> PrivateDockerd {
        PrivateDockerd::start_with(None, extra_args)
    }

    /// As [`PrivateDockerd::start`], with dockerd, its default bridge, and
    /// so its networks and containers, inside the network namespace
    /// `/run/netns/<netns>` (which must outlive the daemon): there it may
    /// manage iptables (see the module's documentation).
    pub fn start_in_netns(netns: &str, extra_args: &[&str]) -> PrivateDockerd {
        assert!(
            Path::new(&netns_path(netns)).exists(),
            "no network namespace {}",
            netns_path(netns)
        );
        PrivateDockerd::start_with(Some(netns), extra_args)
    }

    fn start_with(netns: Option<&str>, extra_args: &[&str]) -> PrivateDockerd {
        assert!(
            netwatch::host::is_root(),
            "a private dockerd needs root: run the test as root"
        );
        remove_stale();
        let root = PathBuf::from(format!(
            "/run/{PREFIX}{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        if root.exists() {
            sweep(&root);
        }
        std::fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
        let _ = std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711));
        let storage_driver = std::env::var("NETWATCH_TEST_DOCKERD_STORAGE")
            .unwrap_or_else(|_| DEFAULT_STORAGE_DRIVER.to_owned());
        // The guard exists before the daemon does, so that every failure
        // below still cleans up.
        let mut daemon = PrivateDockerd {
            host: format!("unix://{}", root.join("d.sock").display()),
            root,
            storage_driver,
            child: None,
            args: Vec::new(),
            netns: netns.map(str::to_owned),
        };
        std::fs::write(daemon.root.join("daemon.json"), "{}\n").expect("write daemon.json");
        if let Some(netns) = netns {
            std::fs::write(daemon.root.join(NETNS_FILE), netns).expect("write netns");
        }
        let bridge = daemon.bridge();
        assert!(bridge.len() <= 15, "bridge name {bridge} is too long");
        let created = ip_in(netns)
            .args(["link", "add", &bridge, "type", "bridge"])
            .output()
            .expect("run ip");
        assert!(
            created.status.success(),
            "cannot create the private dockerd's bridge {bridge}: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        let log = File::create(daemon.log_path()).expect("create the dockerd log");
        let path = |name: &str| daemon.root.join(name).display().to_string();
        let mut args = vec![
            "--config-file".to_owned(),
            path("daemon.json"),
            "--data-root".to_owned(),
            path("data"),
            "--exec-root".to_owned(),
            path("exec"),
            "--pidfile".to_owned(),
            path("d.pid"),
            "-H".to_owned(),
            daemon.host.clone(),
            "--bridge".to_owned(),
            bridge,
            "--storage-driver".to_owned(),
            daemon.storage_driver.clone(),
        ];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        eprintln!(
            "starting a private dockerd{}: dockerd {}",
            netns
                .map(|ns| format!(" in netns {ns}"))
                .unwrap_or_default(),
            args.join(" ")
        );
        daemon.args = args;
        daemon.spawn(log);
        daemon.wait_until_answering();
        daemon.load_test_image();
        let subnet = daemon
            .docker(&[
                "network",
                "inspect",
                "--format",
                "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
                "bridge",
            ])
            .unwrap_or_default();
        eprintln!(
            "its default bridge network: {} on {}",
            subnet.trim(),
            daemon.bridge()
        );
        daemon
    }

    fn spawn(&mut self, log: File) {
        let mut command = match &self.netns {
            Some(netns) => {
                // nsenter enters the network namespace only and execs
                // dockerd (no fork): the child is dockerd.
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net={}", netns_path(netns)))
                    .arg("dockerd");
                command
            }
            None => Command::new("dockerd"),
        };
        let child = command
            .args(&self.args)
            // A swarm service of the locally loaded test image is then
            // started from it, never pinned to a registry digest (moby's
            // own tests set it): nothing asks a registry.
            .env("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run dockerd: {e} (Debian's docker.io provides it; `cargo xtask setup`)"
                )
            });
        self.child = Some(child);
    }

    /// SIGKILLs dockerd, as a crash or the OOM killer would, and reaps it.
    /// Its containers keep running: their shims do not depend on it.
    /// [`PrivateDockerd::start_again`] brings it back; drop cleans up
    /// either way.
    pub fn kill_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs dockerd and waits for it to exit (SIGKILL after 15 s).
    /// Without `--live-restore` it stops its containers first.
    pub fn stop_daemon(&mut self) {
        self.stop();
    }

    /// Starts dockerd again with the same directories, socket, bridge and
    /// arguments (after [`PrivateDockerd::kill_daemon`] or
    /// [`PrivateDockerd::stop_daemon`]) and waits until it answers.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the private dockerd is still running");
        let log = File::options()
            .append(true)
            .open(self.log_path())
            .expect("reopen the dockerd log");
        self.spawn(log);
        self.wait_until_answering();
    }

    /// Its `DOCKER_HOST`: `unix:///run/nwd<pid>x<n>/d.sock`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Its default bridge network's bridge, `nwd<pid>x<n>b`.
    pub fn bridge(&self) -> String {
        bridge_of(&self.root)
    }

    /// The directory that holds everything it owns.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The network namespace it runs in (a name under /run/netns), if not
    /// the host's.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    pub fn storage_driver(&self) -> &str {
        &self.storage_driver
    }

    /// The dockerd process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Makes the helpers of `crate::docker` (`docker()`, `TestNetwork`,
    /// `TestContainer`, `require_dockerd`, `compose_env`…) talk to this
    /// daemon until the guard drops. Process-wide: see
    /// `crate::docker::use_host`.
    pub fn activate(&self) -> HostOverride {
        override_host(&self.host)
    }

    /// Runs `docker args…` against this daemon; trimmed stdout, or a
    /// message with stderr.
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        docker_at(&self.host, args, None)
    }

    /// [`PrivateDockerd::docker`], given up (killed) after `limit`: for
    /// cleaning up, where a hung daemon must not hang the test.
    fn docker_within(&self, args: &[&str], limit: Duration) -> Result<String, String> {
        docker_at(&self.host, args, Some(limit))
    }

    /// [`PrivateDockerd::docker`], panicking with the message and the tail
    /// of the daemon's log on failure.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        self.docker(args)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail(30)))
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("dockerd.log")
    }

    /// The last `lines` lines of the daemon's log, headed for a message.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "--- last lines of {} ---\n{tail}",
            self.log_path().display()
        )
    }

    fn wait_until_answering(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "the private dockerd exited ({status}) while starting\n{}",
                    self.log_tail(40)
                );
            }
            if self
                .docker_within(
                    &["version", "--format", "{{.Server.Version}}"],
                    Duration::from_secs(5),
                )
                .is_ok()
            {
                eprintln!(
                    "private dockerd (pid {}, {}) answers at {} after {:?}",
                    self.pid(),
                    self.storage_driver,
                    self.host,
                    start.elapsed()
                );
                return;
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "the private dockerd did not answer at {} within {START_TIMEOUT:?}\n{}",
                    self.host,
                    self.log_tail(40)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `docker save netwatch-test:busybox` (main daemon) | `docker load`
    /// (this one).
    fn load_test_image(&self) {
        let start = Instant::now();
        let mut save = Command::new("docker")
            .args(["save", TEST_IMAGE])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run docker save: {e}"));
        let load = Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .arg("load")
            .stdin(save.stdout.take().expect("piped stdout"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run docker load: {e}"));
        let mut save_err = String::new();
        if let Some(mut stderr) = save.stderr.take() {
            let _ = stderr.read_to_string(&mut save_err);
        }
        let saved = save.wait().map(|s| s.success()).unwrap_or(false);
        assert!(
            saved,
            "`docker save {TEST_IMAGE}` from the main dockerd failed: {} (`cargo xtask setup` \
             imports the image)",
            save_err.trim()
        );
        assert!(
            load.status.success(),
            "loading {TEST_IMAGE} into the private dockerd failed: {}\n{}",
            String::from_utf8_lossy(&load.stderr).trim(),
            self.log_tail(20)
        );
        eprintln!("loaded {TEST_IMAGE} into it in {:?}", start.elapsed());
    }

    /// Removes its containers and networks, while it answers.
    fn remove_objects(&self) {
        remove_objects_at(&self.host);
    }

    /// SIGTERM, up to [`STOP_TIMEOUT`], then SIGKILL.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let start = Instant::now();
        let _ = kill(pid, Signal::SIGTERM);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => {
                    eprintln!("private dockerd stopped after {:?}", start.elapsed());
                    return;
                }
                Ok(None) if start.elapsed() < STOP_TIMEOUT => {
                    thread::sleep(Duration::from_millis(50));
                }
                _ => break,
            }
        }
        eprintln!(
            "private dockerd did not stop within {STOP_TIMEOUT:?} of SIGTERM: SIGKILL\n{}",
            self.log_tail(20)
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.log_tail(30));
        }
        if self.child.is_some() {
            self.remove_objects();
        }
        self.stop();
        sweep(&self.root);
        let left = leftovers(&self.root);
        if !left.is_empty() {
            eprintln!(
                "the private dockerd at {} left: {}",
                self.root.display(),
                left.join("; ")
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Cleaning up

/// Runs `docker args…` against `host`, killed after `limit` if given;
/// trimmed stdout, or a message with stderr.
fn docker_at(host: &str, args: &[&str], limit: Option<Duration>) -> Result<String, String> {
    let mut command = match limit {
        Some(limit) => {
            // coreutils' timeout: SIGTERM at the limit, SIGKILL 2 s later.
            let mut command = Command::new("timeout");
            command
                .args(["--kill-after=2", &format!("{}", limit.as_secs().max(1))])
                .arg("docker");
            command
        }
        None => Command::new("docker"),
    };
    command.env("DOCKER_HOST", host);
    run_docker(command, args, &format!("docker -H {host}"))
}

/// Removes every container and custom network of the daemon at `host`, if
/// it answers (each command given up after 30 s).
fn remove_objects_at(host: &str) {
    let limit = Duration::from_secs(30);
    let Ok(containers) = docker_at(host, &["ps", "-aq"], Some(limit)) else {
        return;
    };
    let ids: Vec<&str> = containers.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(&ids);
        if let Err(e) = docker_at(host, &args, Some(limit)) {
            eprintln!("private dockerd: {e}");
        }
    }
    let networks = docker_at(
        host,
        &["network", "ls", "-q", "--filter", "type=custom"],
        Some(limit),
    )
    .unwrap_or_default();
    for id in networks.split_whitespace() {
        if let Err(e) = docker_at(host, &["network", "rm", id], Some(limit)) {
            eprintln!("private dockerd: {e}");
        }
    }
}

/// The pid in `/run/nwd<pid>x<n>`'s name.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('x').next()?.parse().ok()
}

/// Stops and removes private dockerds of test processes that are gone.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = owner_pid(&name)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!(
                "removing the private dockerd /run/{name} of test process {pid}, which is gone"
            );
            sweep(&entry.path());
        }
    }
}

/// Every process in /proc: its pid and its /proc directory.
fn processes() -> impl Iterator<Item = (i32, PathBuf)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
            Some((pid, entry.path()))
        })
}

/// Processes whose command line mentions `root` (dockerd, its containerd,
/// the shims): (pid, command line).
fn processes_under(root: &Path) -> Vec<(i32, String)> {
    let needle = root.display().to_string();
    let needle_slash = format!("{needle}/");
    let me = std::process::id() as i32;
    processes()
        .filter(|(pid, _)| *pid != me)
        .filter_map(|(pid, dir)| {
            let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let mentions = cmdline.split_whitespace().any(|word| {
                let word = word.trim_start_matches("unix://");
                word == needle || word.starts_with(&needle_slash)
            });
            mentions.then(|| (pid, cmdline.trim().to_owned()))
        })
        .collect()
}

/// Mount points at or under `root`, deepest first.
fn mounts_under(root: &Path) -> Vec<String> {
    let needle = root.display().to_string();
    let needle_slash = format!("{needle}/");
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<String> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| point.replace("\\040", " "))
        .filter(|point| *point == needle || point.starts_with(&needle_slash))
        .collect();
    mounts.sort_by_key(|point| std::cmp::Reverse(point.len()));
    mounts.dedup();
    mounts
}

/// Container ids the instance at `root` knows (runc state directories and
/// container directories).
fn container_ids(root: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for dir in ["exec/runtime-runc/moby", "data/containers"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            ids.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())),
            );
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// Processes in the cgroup of one of `ids` (container processes, which
/// outlive a killed shim).
fn container_processes(ids: &[String]) -> Vec<i32> {
    if ids.is_empty() {
        return Vec::new();
    }
    processes()
        .filter(|(_, dir)| {
            let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
            ids.iter().any(|id| cgroup.contains(id.as_str()))
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// The file under an instance's directory naming the network namespace it
/// runs in, if not the host's.
const NETNS_FILE: &str = "netns";

fn netns_path(netns: &str) -> String {
    format!("/run/netns/{netns}")
}

/// The network namespace the instance at `root` runs in, if not the
/// host's (and if it still exists).
fn netns_of(root: &Path) -> Option<String> {
    let name = std::fs::read_to_string(root.join(NETNS_FILE)).ok()?;
    let name = name.trim().to_owned();
    Path::new(&netns_path(&name)).exists().then_some(name)
}

/// The interfaces of a network namespace (the host's: /sys/class/net;
/// another's: `ip -n <netns> -o link show`).
fn interfaces(netns: Option<&str>) -> Vec<String> {
    let Some(netns) = netns else {
        return std::fs::read_dir("/sys/class/net")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
    };
    let output = ip_in(Some(netns))
        .args(["-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // "4: br-0123456789ab: <BROADCAST,…" or "5: veth1@if4: <…"
    output
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect()
}

/// The default bridge of the instance at `root`: its directory's name and
/// `b`.
fn bridge_of(root: &Path) -> String {
    format!(
        "{}b",
        root.file_name().unwrap_or_default().to_string_lossy()
    )
}

/// Bridges of the instance at `root` that exist (in its network
/// namespace): its default bridge, and those (`br-<12 hex>`) of networks in
/// its network store.
fn bridges_of(root: &Path) -> Vec<String> {
    let interfaces = interfaces(netns_of(root).as_deref());
    let mut bridges = Vec::new();
    let default = bridge_of(root);
    if interfaces.contains(&default) {
        bridges.push(default);
    }
    let store = std::fs::read(root.join("data/network/files/local-kv.db")).unwrap_or_default();
    if store.is_empty() {
        return bridges;
    }
    bridges.extend(interfaces.into_iter().filter(|name| {
        name.strip_prefix("br-")
            .is_some_and(|id| id.len() == 12 && store.windows(id.len()).any(|w| w == id.as_bytes()))
    }));
    bridges
}

fn kill_all(pids: &[i32]) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

fn wait_gone(root: &Path, timeout: Duration) {
    let start = Instant::now();
    while !processes_under(root).is_empty() && start.elapsed() < timeout {
        thread::sleep(Duration::from_millis(50));
    }
}

/// Makes sure nothing of the instance at `root` is left: processes
/// mentioning it (and their containers' processes and cgroups), mounts under
/// it, bridges of its networks, the directory itself.
fn sweep(root: &Path) {
    // A dockerd still answering (of a dead test process): removing its
    // containers with `rm -f` is much faster than letting SIGTERM stop them
    // (10 s each for a `sleep` that ignores SIGTERM as pid 1).
    let socket = root.join("d.sock");
    if socket.exists() {
        remove_objects_at(&format!("unix://{}", socket.display()));
    }
    let ids = container_ids(root);
    // A dockerd still running (of a dead test process): SIGTERM first, so
    // it can stop containerd itself.
    let mut stopping = false;
    for (pid, cmdline) in processes_under(root) {
        if cmdline.starts_with("dockerd") || cmdline.contains("/dockerd ") {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            stopping = true;
        }
    }
    if stopping {
        wait_gone(root, STOP_TIMEOUT);
    }
    let left = processes_under(root);
    if !left.is_empty() {
        for (pid, cmdline) in &left {
            eprintln!("killing {pid} ({cmdline}), left by the private dockerd");
        }
        kill_all(&left.iter().map(|(pid, _)| *pid).collect::<Vec<_>>());
        wait_gone(root, Duration::from_secs(5));
    }
    let orphans = container_processes(&ids);
    if !orphans.is_empty() {
        eprintln!("killing container processes {orphans:?}, left by the private dockerd");
        kill_all(&orphans);
        thread::sleep(Duration::from_millis(200));
    }
    // Sockets of killed shims: containerd 1.6 puts them in
    // /run/containerd/s/<sha256 of "<containerd socket>/moby/<id>">, which
    // a shim removes only when it exits by itself.
    let containerd_socket = root.join("exec/containerd/containerd.sock");
    for id in &ids {
        let key = format!("{}/moby/{id}", containerd_socket.display());
        if let Some(hash) = sha256_hex(&key) {
            let socket = Path::new("/run/containerd/s").join(hash);
            if socket.exists() {
                let _ = std::fs::remove_file(&socket);
            }
        }
    }
    // Empty cgroups of its containers (runc removes them when it deletes a
    // container; not when its shim was killed).
    if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
        for controller in controllers.flatten() {
            for id in &ids {
                let dir = controller.path().join("docker").join(id);
                if dir.is_dir() {
                    let _ = std::fs::remove_dir(&dir);
                }
            }
        }
    }
    for point in mounts_under(root) {
        let output = Command::new("umount").args(["-l", &point]).output();
        if !matches!(&output, Ok(o) if o.status.success()) {
            eprintln!("cannot unmount {point}: {output:?}");
        }
    }
    let netns = netns_of(root);
    for bridge in bridges_of(root) {
        if bridge != bridge_of(root) {
            eprintln!("removing bridge {bridge} of the private dockerd");
        }
        let _ = ip_in(netns.as_deref())
            .args(["link", "del", &bridge])
            .output();
    }
    if root.exists()
        && let Err(e) = std::fs::remove_dir_all(root)
    {
        eprintln!("cannot remove {}: {e}", root.display());
    }
}

/// SHA-256 of `text` in hex, by `sha256sum` (coreutils).
fn sha256_hex(text: &str) -> Option<String> {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(text.as_bytes()).ok()?;
    let output = child.wait_with_output().ok()?;
    let hex = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()?
        .to_owned();
    (hex.len() == 64).then_some(hex)
}

/// What is left of the instance that lived at `root`: processes mentioning
/// it, mounts under it, bridges of its networks, the directory and socket.
/// Empty after a clean drop.
pub fn leftovers(root: &Path) -> Vec<String> {
    let mut left: Vec<String> = processes_under(root)
        .into_iter()
        .map(|(pid, cmdline)| format!("process {pid}: {cmdline}"))
        .collect();
    left.extend(mounts_under(root).into_iter().map(|m| format!("mount {m}")));
    left.extend(bridges_of(root).into_iter().map(|b| format!("bridge {b}")));
    if root.join("d.sock").exists() {
        left.push(format!("socket {}", root.join("d.sock").display()));
    }
    if root.exists() {
        left.push(format!("directory {}", root.display()));
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_pid() {
        assert_eq!(owner_pid("nwd123x0"), Some(123));
        assert_eq!(owner_pid("nwd123"), Some(123));
        assert_eq!(owner_pid("nwdx"), None);
        assert_eq!(owner_pid("docker"), None);
    }

    #[test]
    fn the_socket_path_fits_a_unix_address() {
        // /run/nwd<pid up to 7 digits>x<n>/d.sock, and containerd's socket
        // under the exec root.
        let root = format!("/run/{PREFIX}{}x{}", u32::MAX, u32::MAX);
        assert!(format!("{root}/d.sock").len() < 108);
        assert!(format!("{root}/exec/containerd/containerd-debug.sock").len() < 108);
    }
}
