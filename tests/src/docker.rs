//! Docker fixtures: networks and containers that remove themselves, even
//! when a test panics.
//!
//! Every object is named `nwtest-<pid>-<n>-<what>`, so what a test run
//! creates is recognisable, and [`require_dockerd`] removes what a killed
//! earlier run (whose pid is gone) left behind. Containers run the locally
//! built `netwatch-test:busybox` image (`cargo xtask setup` imports it) and
//! only `sleep`: these fixtures send no traffic.

use std::path::Path;
use std::process::Command;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The image `cargo xtask setup` builds from busybox-static.
pub const TEST_IMAGE: &str = "netwatch-test:busybox";

/// What every fixture name starts with.
pub const PREFIX: &str = "nwtest-";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The dockerd every helper here talks to instead of the default one (see
/// [`use_host`]); `None`: the environment's (normally
/// /var/run/docker.sock).
static HOST_OVERRIDE: RwLock<Option<String>> = RwLock::new(None);

/// Makes [`docker`] and everything built on it (fixtures, [`require_dockerd`],
/// [`docker_command`], [`compose_command`], [`compose_env`]) talk to the
/// dockerd at `host` (a `DOCKER_HOST` value such as `unix:///run/…/d.sock`),
/// or again to the default one with `None`. Returns the previous setting.
///
/// The setting is process-wide: a test binary whose tests run in parallel
/// threads must not mix tests for two daemons. Prefer the guard
/// [`override_host`] (or `PrivateDockerd::activate`).
pub fn use_host(host: Option<String>) -> Option<String> {
    let mut current = HOST_OVERRIDE.write().unwrap_or_else(|e| e.into_inner());
    std::mem::replace(&mut *current, host)
}

/// The `DOCKER_HOST` set by [`use_host`], if any.
pub fn current_host() -> Option<String> {
    HOST_OVERRIDE
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Sets [`use_host`] until dropped, then restores what was there before.
#[must_use = "the override ends when the guard is dropped"]
pub struct HostOverride {
    previous: Option<String>,
}

/// [`use_host`]`(Some(host))` as a guard.
pub fn override_host(host: &str) -> HostOverride {
    HostOverride {
        previous: use_host(Some(host.to_owned())),
    }
}

impl Drop for HostOverride {
    fn drop(&mut self) {
        use_host(self.previous.take());
    }
}

/// The environment to give any process that talks to dockerd (the
/// `docker` or `docker-compose` commands, an agent) so that it talks to the
/// same daemon as these helpers: `DOCKER_HOST` when overridden, else
/// nothing.
pub fn compose_env() -> Vec<(String, String)> {
    current_host()
        .map(|host| vec![("DOCKER_HOST".to_owned(), host)])
        .unwrap_or_default()
}

/// `Command::new(program)` with [`compose_env`] applied.
fn command_for_daemon(program: &str) -> Command {
    let mut command = Command::new(program);
    command.envs(compose_env());
    command
}

/// `docker`, talking to the daemon the helpers use.
pub fn docker_command() -> Command {
    command_for_daemon("docker")
}

/// `docker-compose`, talking to the daemon the helpers use.
pub fn compose_command() -> Command {
    command_for_daemon("docker-compose")
}

/// Runs `command` (`docker`, or a command wrapping it) with `args`: its
/// trimmed stdout, or a message that shows it as `` `{shown_as} args…` ``
/// with its exit status and stderr.
pub fn run_docker(mut command: Command, args: &[&str], shown_as: &str) -> Result<String, String> {
    let shown = format!("{shown_as} {}", args.join(" "));
    let output = command
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "`{shown}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Runs `docker args…`; its trimmed stdout, or a message with its stderr.
pub fn docker(args: &[&str]) -> Result<String, String> {
    run_docker(docker_command(), args, "docker")
}

/// [`docker`], panicking with the message on failure.
pub fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// A fresh name `nwtest-<pid>-<n>-<what>`.
pub fn unique_name(what: &str) -> String {
    format!(
        "{PREFIX}{}-{}-{what}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Fails the test, saying how to start dockerd, unless dockerd answers and
/// the test image exists. Also removes fixtures of test runs that died
/// without cleaning up.
pub fn require_dockerd() {
    if let Err(e) = docker(&["version", "--format", "{{.Server.APIVersion}}"]) {
        if let Some(host) = current_host() {
            panic!("the dockerd at {host} (set with docker::use_host) does not answer: {e}");
        }
        panic!(
            "dockerd does not answer, and this test needs it ({e}). Start it with \
             `cargo xtask setup` as root (it runs dockerd in the background, log in \
             /tmp/netwatch-dockerd.log), or `dockerd >/tmp/netwatch-dockerd.log 2>&1 &`"
        );
    }
    if docker(&["image", "inspect", "--format", "{{.Id}}", TEST_IMAGE]).is_err() {
        panic!("the image {TEST_IMAGE} is missing: `cargo xtask setup` builds it");
    }
    remove_stale();
}

/// The pid in a fixture name `nwtest-<pid>-…`.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes containers and networks of earlier test processes that are gone.
fn remove_stale() {
    let stale = |names: String| -> Vec<String> {
        names
            .lines()
            .filter(|name| {
                owner_pid(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            })
            .map(str::to_owned)
            .collect()
    };
    let containers = docker(&[
        "ps",
        "-a",
        "--filter",
        "name=nwtest-",
        "--format",
        "{{.Names}}",
    ]);
    for name in stale(containers.unwrap_or_default()) {
        eprintln!("removing container {name} left by an earlier test run");
        let _ = docker(&["rm", "-f", &name]);
    }
    let networks = docker(&[
        "network",
        "ls",
        "--filter",
        "name=nwtest-",
        "--format",
        "{{.Name}}",
    ]);
    for name in stale(networks.unwrap_or_default()) {
        eprintln!("removing network {name} left by an earlier test run");
        let _ = docker(&["network", "rm", &name]);
    }
}

/// A Docker network, removed on drop.
pub struct TestNetwork {
    pub name: String,
    pub id: String,
}

impl TestNetwork {
    /// `docker network create <options…> nwtest-…-<what>`.
    pub fn create(what: &str, options: &[&str]) -> TestNetwork {
        let name = unique_name(what);
        let mut args = vec!["network", "create"];
        args.extend_from_slice(options);
        args.push(&name);
        let id = docker_ok(&args);
        TestNetwork { name, id }
    }

    /// A field of its first IPAM config, e.g. `Subnet` or `Gateway`.
    pub fn ipam_field(&self, field: &str) -> String {
        docker_ok(&[
            "network",
            "inspect",
            "--format",
            &format!("{{{{(index .IPAM.Config 0).{field}}}}}"),
            &self.id,
        ])
    }

    /// The bridge device Docker made for it (`br-` and 12 characters of
    /// the id, unless the options named one).
    pub fn bridge(&self) -> String {
        let option = docker_ok(&[
            "network",
            "inspect",
            "--format",
            r#"{{index .Options "com.docker.network.bridge.name"}}"#,
            &self.id,
        ]);
        if option.is_empty() || option == "<no value>" {
            format!("br-{}", &self.id[..12])
        } else {
            option
        }
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        if docker(&["network", "rm", &self.id]).is_ok() {
            return;
        }
        // Still in use: remove this run's containers on it, then retry.
        let attached = docker(&[
            "network",
            "inspect",
            "--format",
            "{{range .Containers}}{{.Name}} {{end}}",
            &self.id,
        ])
        .unwrap_or_default();
        for name in attached
            .split_whitespace()
            .filter(|n| n.starts_with(PREFIX))
        {
            let _ = docker(&["rm", "-f", name]);
        }
        if let Err(e) = docker(&["network", "rm", &self.id]) {
            eprintln!("cannot remove test network {}: {e}", self.name);
        }
    }
}

/// A running container (`sleep`), removed with `docker rm -f` on drop.
pub struct TestContainer {
    pub name: String,
    pub id: String,
}

impl TestContainer {
    /// `docker run -d --name nwtest-…-<what> <options…> netwatch-test:busybox
    /// sleep 3600`.
    pub fn run(what: &str, options: &[&str]) -> TestContainer {
        // The guard exists before `docker run`: a run that fails after
        // creating the container still has it removed.
        let mut container = TestContainer {
            name: unique_name(what),
            id: String::new(),
        };
        let mut args = vec!["run", "-d", "--name", &container.name];
        args.extend_from_slice(options);
        args.extend_from_slice(&[TEST_IMAGE, "sleep", "3600"]);
        container.id = docker_ok(&args);
        container
    }

    /// `docker run -d --name nwtest-…-<what> <options…>
    /// netwatch-test:busybox <command…>`.
    pub fn run_command(what: &str, options: &[&str], command: &[&str]) -> TestContainer {
        Self::try_run_command(what, options, command).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`TestContainer::run_command`], or `docker run`'s error (for
    /// benchmarks, which report instead of panicking). A container Docker
    /// created before failing is still removed.
    pub fn try_run_command(
        what: &str,
        options: &[&str],
        command: &[&str],
    ) -> Result<TestContainer, String> {
        let mut container = TestContainer {
            name: unique_name(what),
            id: String::new(),
        };
        let mut args = vec!["run", "-d", "--name", &container.name];
        args.extend_from_slice(options);
        args.push(TEST_IMAGE);
        args.extend_from_slice(command);
        container.id = docker(&args)?;
        Ok(container)
    }

    /// `docker network connect <options…> <network> <this>`.
    pub fn connect(&self, network: &TestNetwork, options: &[&str]) {
        let mut args = vec!["network", "connect"];
        args.extend_from_slice(options);
        args.extend_from_slice(&[&network.name, &self.name]);
        docker_ok(&args);
    }

    /// The container's init process on the host.
    pub fn pid(&self) -> u32 {
        let pid = docker_ok(&["inspect", "--format", "{{.State.Pid}}", &self.name]);
        pid.parse()
            .ok()
            .filter(|&pid| pid > 0)
            .unwrap_or_else(|| panic!("container {} has no pid ({pid:?})", self.name))
    }

    /// One field of this container's endpoint on `network` (`IPAddress`,
    /// `MacAddress`, `Gateway`, …), as `docker inspect` gives it.
    pub fn endpoint_field(&self, network: &TestNetwork, field: &str) -> String {
        docker_ok(&[
            "inspect",
            "--format",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").{field}}}}}",
                network.name
            ),
            &self.name,
        ])
    }

    /// The ifindex of the host end of this container's veth on `network`
    /// (found in its namespace by its MAC, as the agent finds it).
    pub fn host_veth(&self, network: &TestNetwork) -> u32 {
        let mac: netwatch::host::interfaces::MacAddr = self
            .endpoint_field(network, "MacAddress")
            .parse()
            .expect("a MAC address");
        netwatch::host::interfaces::host_veth(self.pid(), mac)
            .expect("host veth")
            .ifindex
    }

    /// `docker inspect`'s `NetworkSettings.Networks`, as JSON.
    pub fn networks_json(&self) -> String {
        docker_ok(&[
            "inspect",
            "--format",
            "{{json .NetworkSettings.Networks}}",
            &self.name,
        ])
    }

    /// Runs `args` in the container's network and mount namespaces (the
    /// mount namespace too, so that /sys shows the container's interfaces:
    /// sysfs answers for the namespace it was mounted in).
    pub fn nsenter(&self, args: &[&str]) -> String {
        let pid = self.pid().to_string();
        let output = Command::new("nsenter")
            .args(["-t", &pid, "-n", "-m"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run nsenter: {e}"));
        assert!(
            output.status.success(),
            "nsenter -t {pid} -n -m {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        if let Err(e) = docker(&["rm", "-f", &self.name])
            && !e.contains("No such container")
        {
            eprintln!("cannot remove test container {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_pid() {
        let name = unique_name("web");
        assert!(name.starts_with(&format!("nwtest-{}-", std::process::id())));
        assert!(name.ends_with("-web"));
        assert_eq!(owner_pid(&name), Some(std::process::id()));
        assert_eq!(owner_pid("nwtest-x-1"), None);
        assert_eq!(owner_pid("other-1-2"), None);
    }

    #[test]
    fn the_host_override_sets_docker_host_and_restores() {
        // The only test of this binary that touches the override.
        assert_eq!(current_host(), None);
        assert!(compose_env().is_empty());
        {
            let _outer = override_host("unix:///run/a.sock");
            assert_eq!(
                compose_env(),
                vec![("DOCKER_HOST".to_owned(), "unix:///run/a.sock".to_owned())]
            );
            {
                let _inner = override_host("unix:///run/b.sock");
                let command = docker_command();
                let env: Vec<_> = command.get_envs().collect();
                assert_eq!(
                    env,
                    vec![(
                        std::ffi::OsStr::new("DOCKER_HOST"),
                        Some(std::ffi::OsStr::new("unix:///run/b.sock"))
                    )]
                );
            }
            assert_eq!(current_host().as_deref(), Some("unix:///run/a.sock"));
        }
        assert_eq!(current_host(), None);
        assert_eq!(docker_command().get_envs().count(), 0);
    }

    #[test]
    fn run_docker_names_the_command_as_shown() {
        // Stand-ins for docker: the output and messages, not the program.
        let mut echo = Command::new("sh");
        echo.args(["-c", "echo \"  $0 out  \"; echo err >&2"]);
        assert_eq!(run_docker(echo, &["a"], "docker"), Ok("a out".to_owned()));
        let mut fail = Command::new("sh");
        fail.args(["-c", "echo ' why ' >&2; exit 3"]);
        assert_eq!(
            run_docker(fail, &["ps", "-aq"], "docker -H unix:///x"),
            Err("`docker -H unix:///x ps -aq` failed (exit status: 3): why".to_owned())
        );
        let missing = Command::new("/nonexistent/docker");
        let e = run_docker(missing, &["ps"], "docker").unwrap_err();
        assert!(e.starts_with("cannot run `docker ps`: "), "{e}");
    }
}
