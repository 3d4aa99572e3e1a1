//! A single-node swarm on a private dockerd, for overlay networks: advertised
//! on a veth of the test's own, with every address Docker hands out in the
//! benchmarking range 198.18.0.0/15. Never on the main dockerd, which other
//! tests use.
//!
//! ```text
//!   host namespace
//!   nws<pid>x<n>  198.19.255.<4m+1>/30  ─ veth ─  nws<pid>x<n>p (no address)
//!                 (--advertise-addr, --listen-addr …:2377)
//!   docker_gwbridge 198.19.254.<64q>/26     created before `swarm init`
//!   overlays: /24s of --default-addr-pool 198.18.128.0/17
//! ```
//!
//! `m` and `q` come from the process id, so that concurrent test processes
//! on one machine are unlikely to ask for the same host route; only one
//! swarm at a time can exist, though (the bridge name `docker_gwbridge` is
//! the host's, not the daemon's): [`Swarm::init`] takes a machine-wide
//! lock and waits for another test's swarm to go. Dropping the guard
//! leaves the swarm (which removes what is left of its services and
//! overlays), removes docker_gwbridge and the veth; [`Swarm::init`] first removes what
//! a test process that died left.

use std::{
    net::Ipv4Addr,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::{
    docker::{TestNetwork, run_docker, unique_name},
    dockerd::PrivateDockerd,
    netns::run,
    reach::{Netns, NsLock},
};

/// The bridge Docker gives overlay containers their way out on.
pub const GATEWAY_BRIDGE: &str = "docker_gwbridge";
/// What the advertised veth's name starts with.
pub const PREFIX: &str = "nws";
/// How long `init` waits for another test's swarm to go.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(300);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A single-node swarm on a private dockerd; left, and everything of it
/// removed, on drop (before the daemon's own guard drops).
pub struct Swarm {
    /// The daemon's `DOCKER_HOST`.
    host: String,
    veth: String,
    /// The advertised address.
    pub address: Ipv4Addr,
    /// docker_gwbridge's subnet and gateway (an address of the host).
    pub gateway_bridge_subnet: String,
    pub gateway_bridge_gateway: Ipv4Addr,
    _lock: NsLock,
}

impl Swarm {
    /// Creates the veth and docker_gwbridge, then `docker swarm init` on
    /// `daemon`. Needs root and iproute2.
    pub fn init(daemon: &PrivateDockerd) -> Swarm {
        let lock = Netns::host().lock(
            "swarm",
            "the machine's one test swarm (docker_gwbridge)",
            WAIT_FOR_OTHERS,
        );
        remove_stale();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let m = (pid.wrapping_add(n) % 64) as u8;
        let q = (pid.wrapping_add(n) % 4) as u8;
        let address = Ipv4Addr::new(198, 19, 255, 4 * m + 1);
        let gateway_bridge_gateway = Ipv4Addr::new(198, 19, 254, 64 * q + 1);
        // The guard exists before anything is made: a failure half way
        // removes what was.
        let swarm = Swarm {
            host: daemon.host().to_owned(),
            veth: format!("{PREFIX}{pid}x{n}"),
            address,
            gateway_bridge_subnet: format!("198.19.254.{}/26", 64 * q),
            gateway_bridge_gateway,
            _lock: lock,
        };
        let peer = format!("{}p", swarm.veth);
        run(&[
            "ip",
            "link",
            "add",
            &swarm.veth,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{address}/30"),
            "dev",
            &swarm.veth,
        ]);
        for link in [swarm.veth.as_str(), &peer] {
            run(&["ip", "link", "set", link, "up"]);
        }
        let gateway = gateway_bridge_gateway.to_string();
        swarm.docker_ok(&[
            "network",
            "create",
            "--subnet",
            &swarm.gateway_bridge_subnet,
            "--gateway",
            &gateway,
            "-o",
            "com.docker.network.bridge.name=docker_gwbridge",
            "-o",
            "com.docker.network.bridge.enable_icc=false",
            "-o",
            "com.docker.network.bridge.enable_ip_masquerade=true",
            GATEWAY_BRIDGE,
        ]);
        let advertise = address.to_string();
        let listen = format!("{address}:2377");
        swarm.docker_ok(&[
            "swarm",
            "init",
            "--advertise-addr",
            &advertise,
            "--listen-addr",
            &listen,
            "--default-addr-pool",
            "198.18.128.0/17",
            "--default-addr-pool-mask-length",
            "24",
        ]);
        eprintln!(
            "single-node swarm on {address} ({}), docker_gwbridge {}",
            swarm.veth, swarm.gateway_bridge_subnet
        );
        swarm
    }

    /// `docker args…` against the swarm's daemon.
    fn docker(&self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new("docker");
        command.env("DOCKER_HOST", &self.host);
        run_docker(command, args, &format!("docker -H {}", self.host))
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        self.docker(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `docker network create -d overlay --attachable <options…>`, removed
    /// on drop (talks to the daemon the docker helpers use: activate
    /// `daemon` first).
    pub fn overlay(&self, what: &str, options: &[&str]) -> TestNetwork {
        let mut all = vec!["-d", "overlay", "--attachable"];
        all.extend(options);
        TestNetwork::create(what, &all)
    }

    /// `docker service create` of one `sleep` task of the test image on
    /// `network`, removed on drop (before its network, when declared
    /// after it). No registry is asked: the daemon prefers its local image
    /// and the client does not resolve it.
    pub fn service(&self, what: &str, network: &TestNetwork) -> TestService {
        let service = TestService {
            name: unique_name(what),
            host: self.host.clone(),
        };
        self.docker_ok(&[
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            // `sleep` ignores SIGTERM: no 10 s wait for it on removal.
            "--stop-grace-period",
            "0s",
            "--name",
            &service.name,
            "--network",
            &network.name,
            crate::docker::TEST_IMAGE,
            "sleep",
            "3600",
        ]);
        service
    }
}

/// A swarm service; removed on drop, waiting (up to 10 s) for its task
/// containers to go so that its network can be removed next.
pub struct TestService {
    pub name: String,
    host: String,
}

impl Drop for TestService {
    fn drop(&mut self) {
        let docker = |args: &[&str]| {
            let mut command = Command::new("docker");
            command.env("DOCKER_HOST", &self.host);
            run_docker(command, args, &format!("docker -H {}", self.host))
        };
        if let Err(e) = docker(&["service", "rm", &self.name]) {
            eprintln!("cannot remove service {}: {e}", self.name);
            return;
        }
        let filter = format!("label=com.docker.swarm.service.name={}", self.name);
        for _ in 0..100 {
            match docker(&["ps", "-aq", "--filter", &filter]) {
                Ok(left) if !left.is_empty() => std::thread::sleep(Duration::from_millis(100)),
                _ => return,
            }
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if let Err(e) = self.docker(&["swarm", "leave", "--force"]) {
            eprintln!("cannot leave the test swarm: {e}");
        }
        // Its legs go with the containers; retried while they go.
        for _ in 0..50 {
            if self.docker(&["network", "rm", GATEWAY_BRIDGE]).is_ok()
                || !interface_exists(GATEWAY_BRIDGE)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for link in [self.veth.as_str(), GATEWAY_BRIDGE] {
            if interface_exists(link) {
                let _ = Command::new("ip").args(["link", "del", link]).output();
            }
        }
    }
}

fn interface_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Removes the veths of test processes that are gone and a docker_gwbridge
/// that no dockerd owns (the machine's own dockerd never runs a swarm in
/// these tests, and the caller holds the swarm lock).
fn remove_stale() {
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split('x').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("removing {name}, left by test process {pid}, which is gone");
                let _ = Command::new("ip").args(["link", "del", &name]).output();
            }
        }
    }
    if interface_exists(GATEWAY_BRIDGE) {
        let main = Command::new("docker")
            .env_remove("DOCKER_HOST")
            .args(["network", "ls", "--format", "{{.Name}}"])
            .output();
        let owned = matches!(&main, Ok(o) if String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|n| n == GATEWAY_BRIDGE));
        assert!(
            !owned,
            "the machine's dockerd has a {GATEWAY_BRIDGE} network (is it in a swarm?): refusing \
             to make a test swarm beside it"
        );
        eprintln!("removing {GATEWAY_BRIDGE}, left by a test swarm that is gone");
        let _ = Command::new("ip")
            .args(["link", "del", GATEWAY_BRIDGE])
            .output();
    }
}
