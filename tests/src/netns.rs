//! Network namespaces the tests create, wired as a small Docker-like host,
//! removed by RAII guards even when a test fails:
//!
//! ```text
//!   ns C (container) eth0 10.231.N.2 ─┐
//!   ns P (peer)      eth0 10.231.N.3 ─┤ br0 10.231.N.1 (gateway)   ns H (host)
//!                                     └ vc / vp host-side veths
//!   ns O (outside)   eth0 203.0.113.7 ── vo 203.0.113.1             (forwarding on)
//! ```
//!
//! Every address lives inside these namespaces; nothing is added to the
//! machine's own namespace, and the "outside world" is namespace O.

use std::{
    fs::File,
    net::Ipv4Addr,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sched::{CloneFlags, setns};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command and panics with its output when it fails.
pub fn run(args: &[&str]) -> Output {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `ip`, or `ip -n <netns>` for a namespace under /run/netns.
pub fn ip_in(netns: Option<&str>) -> Command {
    let mut command = Command::new("ip");
    if let Some(netns) = netns {
        command.args(["-n", netns]);
    }
    command
}

/// Runs `f` on a thread inside the namespace `ip netns` knows as `ns` (the
/// calling thread's namespace never changes).
fn in_named_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(format!("/run/netns/{ns}")).expect("netns file");
                setns(file, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("namespace thread panicked")
    })
}

/// Deletes namespaces, and with them their interfaces and whatever
/// programs are attached to those; errors are ignored (for `Drop`).
fn delete_namespaces(names: &[String]) {
    for ns in names {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

/// The test host.
pub struct TestHost {
    prefix: String,
    /// Third octet of 10.231.N.0/24, unique per topology in this process.
    pub subnet: u8,
}

impl TestHost {
    pub fn host_ns(&self) -> String {
        format!("{}h", self.prefix)
    }
    pub fn container_ns(&self) -> String {
        format!("{}c", self.prefix)
    }
    pub fn peer_ns(&self) -> String {
        format!("{}p", self.prefix)
    }
    pub fn outside_ns(&self) -> String {
        format!("{}o", self.prefix)
    }
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 1)
    }
    pub fn container_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 2)
    }
    pub fn peer_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 3)
    }
    pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
    /// The container's host-side veth (in ns H).
    pub const CONTAINER_VETH: &'static str = "vc";

    /// Builds the topology. Needs root and iproute2.
    pub fn create() -> TestHost {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let host = TestHost {
            prefix: format!("nwt{}x{id}", std::process::id()),
            subnet: ((std::process::id() + id) % 200 + 10) as u8,
        };
        let (h, c, p, o) = (
            host.host_ns(),
            host.container_ns(),
            host.peer_ns(),
            host.outside_ns(),
        );
        for ns in [&h, &c, &p, &o] {
            run(&["ip", "netns", "add", ns]);
        }
        let gw = format!("{}/24", host.gateway());
        let sh = |ns: &str, cmd: &str| {
            let mut args = vec!["ip", "-n", ns];
            args.extend(cmd.split_whitespace());
            run(&args);
        };
        sh(&h, "link add br0 type bridge");
        sh(&h, &format!("addr add {gw} dev br0"));
        sh(&h, "link set br0 up");
        sh(&h, "link set lo up");
        for (ns, veth, ip) in [(&c, "vc", host.container_ip()), (&p, "vp", host.peer_ip())] {
            // A 9000-byte MTU: frames past a page long are how a test gets
            // headers into page fragments (`PacketSocket::headers_in_fragments`).
            sh(
                &h,
                &format!("link add {veth} mtu 9000 type veth peer name eth0 mtu 9000 netns {ns}"),
            );
            sh(&h, &format!("link set {veth} master br0 up"));
            sh(ns, &format!("addr add {ip}/24 dev eth0"));
            sh(ns, "link set eth0 up");
            sh(ns, "link set lo up");
            sh(ns, &format!("route add default via {}", host.gateway()));
        }
        sh(
            &h,
            &format!("link add vo type veth peer name eth0 netns {o}"),
        );
        sh(&h, "addr add 203.0.113.1/24 dev vo");
        sh(&h, "link set vo up");
        sh(&o, &format!("addr add {}/24 dev eth0", Self::OUTSIDE_IP));
        sh(&o, "link set eth0 up");
        sh(&o, "link set lo up");
        sh(
            &o,
            &format!("route add 10.231.{}.0/24 via 203.0.113.1", host.subnet),
        );
        run(&[
            "ip",
            "netns",
            "exec",
            &h,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
        ]);
        host
    }

    /// Whether one ping from `ns` to `dst` is answered. Before sending, checks
    /// that the route to `dst` leaves through the namespace's own eth0, so no
    /// packet can go anywhere but the test's namespaces.
    pub fn ping(&self, ns: &str, dst: Ipv4Addr) -> bool {
        let route = run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "ip",
            "route",
            "get",
            &dst.to_string(),
        ]);
        let route = String::from_utf8_lossy(&route.stdout);
        assert!(
            route.contains("dev eth0") && !route.contains("dev lo"),
            "refusing to ping {dst} from {ns}: route is {route}"
        );
        Command::new("ip")
            .args(["netns", "exec", ns, "busybox", "ping", "-c", "1", "-W", "1"])
            .arg(dst.to_string())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// The MAC address of `eth0` in `ns`.
    pub fn mac(&self, ns: &str) -> [u8; 6] {
        let out = run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "cat",
            "/sys/class/net/eth0/address",
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(text.trim().split(':')) {
            *byte = u8::from_str_radix(part, 16).expect("MAC address");
        }
        mac
    }

    /// Runs `f` on a thread inside namespace `ns` (the calling thread's
    /// namespace never changes).
    pub fn in_ns<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        in_named_ns(ns, f)
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Deleting a namespace deletes its interfaces, which detaches any
        // program attached to them.
        delete_namespaces(&[
            self.container_ns(),
            self.peer_ns(),
            self.outside_ns(),
            self.host_ns(),
        ]);
    }
}

/// A veth pair in the host namespace, up, without addresses, deleted (with
/// its peer) on drop: an interface a test hands to netwatch as an uplink.
pub struct ScratchVeth {
    pub name: String,
}

impl ScratchVeth {
    /// `tag` (one or two letters) keeps the names of different tests of
    /// one process apart: `nw<tag><pid>a` and its peer `nw<tag><pid>b`.
    pub fn create(tag: &str) -> ScratchVeth {
        let pid = std::process::id();
        let name = format!("nw{tag}{pid}a");
        let peer = format!("nw{tag}{pid}b");
        // A pair left by an earlier run of a process with the same pid.
        let _ = Command::new("ip").args(["link", "del", &name]).output();
        // The guard exists first: a half-made pair is still deleted.
        let veth = ScratchVeth { name };
        run(&[
            "ip", "link", "add", &veth.name, "type", "veth", "peer", "name", &peer,
        ]);
        run(&["ip", "link", "set", &veth.name, "up"]);
        veth
    }
}

impl Drop for ScratchVeth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

/// A private bpffs directory for a test's pins, removed with everything in
/// it when dropped.
pub struct PinDir(pub std::path::PathBuf);

impl PinDir {
    /// A fresh directory; first removes those of earlier test processes
    /// that died without dropping theirs (their pinned links would keep
    /// programs attached).
    pub fn create() -> PinDir {
        remove_stale_pin_dirs();
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        PinDir(
            std::path::Path::new(netwatch::datapath::pins::BPFFS)
                .join(format!("netwatch-test-{}-{id}", std::process::id())),
        )
    }
}

const PIN_DIR_PREFIX: &str = "netwatch-test-";

/// The pid in a `netwatch-test-<pid>-<n>` directory name.
fn pin_dir_owner(name: &str) -> Option<u32> {
    name.strip_prefix(PIN_DIR_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// What is in bpffs's top directory, but for the pin directories of other
/// test processes (which come and go while this one runs): what a test that
/// must pin nothing compares before and after.
pub fn bpffs_entries_but_other_tests() -> std::collections::BTreeSet<String> {
    let bpffs = std::path::Path::new(netwatch::datapath::pins::BPFFS);
    std::fs::read_dir(bpffs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| pin_dir_owner(name).is_none_or(|pid| pid == std::process::id()))
        .collect()
}

fn remove_stale_pin_dirs() {
    let bpffs = std::path::Path::new(netwatch::datapath::pins::BPFFS);
    for entry in std::fs::read_dir(bpffs).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(pin_dir_owner) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!(
                "removing {} of a test process that is gone",
                entry.path().display()
            );
            let _ = netwatch::datapath::detach_all(&entry.path());
        }
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = netwatch::datapath::detach_all(&self.0);
    }
}

/// Two namespaces whose stacks stay silent, joined by a bridge in a third,
/// for tests that send raw frames and account for every effect of each:
///
/// ```text
///   ns C eth0 ── vc ┐
///                   br0 (ns H)
///   ns P eth0 ── vp ┘
/// ```
///
/// No interface has an address, ARP or IPv6, forwarding is off, no
/// namespace has a route, the bridge learns nothing (every frame is
/// flooded to the other port) and hands nothing to netfilter: whatever
/// arrives anywhere is a frame the test sent, nothing answers it, and no
/// frame can leave these namespaces. Removed on drop.
pub struct QuietBridge {
    prefix: String,
    /// Whether br_netfilter's hooks run on the bridge (the module is
    /// loaded; Docker loads it): they see every frame, even with the
    /// iptables switches off (see their use in `vlan_veth`).
    pub br_netfilter: bool,
}

impl QuietBridge {
    pub fn host_ns(&self) -> String {
        format!("{}h", self.prefix)
    }
    pub fn container_ns(&self) -> String {
        format!("{}c", self.prefix)
    }
    pub fn peer_ns(&self) -> String {
        format!("{}p", self.prefix)
    }
    /// C's host-side veth (in ns H).
    pub const CONTAINER_VETH: &'static str = "vc";

    /// Builds it, with `container_mac` on C's eth0 and `peer_mac` on P's.
    /// Needs root and iproute2.
    pub fn create(container_mac: [u8; 6], peer_mac: [u8; 6]) -> QuietBridge {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        // The guard exists before anything it removes.
        let mut bridge = QuietBridge {
            prefix: format!("nwq{}x{id}", std::process::id()),
            br_netfilter: false,
        };
        let (h, c, p) = (bridge.host_ns(), bridge.container_ns(), bridge.peer_ns());
        let sh = |ns: &str, cmd: &str| {
            let mut args = vec!["ip", "-n", ns];
            args.extend(cmd.split_whitespace());
            run(&args);
        };
        for ns in [&h, &c, &p] {
            run(&["ip", "netns", "add", ns]);
            // Before any interface exists, so that every one is made (or
            // moved in) without IPv6 and sends no autoconfiguration.
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
                "net.ipv4.ip_forward=0",
            ]);
        }
        // Without snooping: with it, the bridge joins 224.0.0.106 (all
        // snoopers) and sends IGMP reports from 0.0.0.0 out of its ports
        // for a few seconds after it comes up, which arrive at C and P
        // among the test's frames (seen in a full test run).
        sh(&h, "link add br0 type bridge stp_state 0 mcast_snooping 0");
        sh(&h, "link set br0 arp off up");
        for (ns, veth, mac) in [(&c, "vc", container_mac), (&p, "vp", peer_mac)] {
            // A 9000-byte MTU: frames past a page long are how a test gets
            // headers into page fragments (`PacketSocket::headers_in_fragments`).
            sh(
                &h,
                &format!("link add {veth} mtu 9000 type veth peer name eth0 mtu 9000 netns {ns}"),
            );
            sh(&h, &format!("link set {veth} master br0 arp off up"));
            sh(
                &h,
                &format!("link set {veth} type bridge_slave learning off"),
            );
            let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
            sh(
                ns,
                &format!("link set eth0 address {} arp off up", mac.join(":")),
            );
        }
        // br_netfilter's switches are per namespace and on by default where
        // the module is loaded (Docker loads it): they would hand IP frames
        // to iptables, which drops malformed ones before they reach the
        // other port.
        bridge.br_netfilter = bridge.in_ns(&h, || {
            let mut found = false;
            for table in ["iptables", "ip6tables", "arptables"] {
                let path = format!("/proc/sys/net/bridge/bridge-nf-call-{table}");
                if std::path::Path::new(&path).exists() {
                    std::fs::write(&path, "0").unwrap_or_else(|e| panic!("{path}: {e}"));
                    found = true;
                }
            }
            found
        });
        for ns in [&h, &c, &p] {
            for family in ["-4", "-6"] {
                let routes = run(&["ip", "-n", ns, family, "route", "show"]);
                assert!(
                    routes.stdout.is_empty(),
                    "{ns} has routes: {}",
                    String::from_utf8_lossy(&routes.stdout)
                );
            }
        }
        bridge
    }

    /// Runs `f` on a thread inside namespace `ns` (the calling thread's
    /// namespace never changes).
    pub fn in_ns<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        in_named_ns(ns, f)
    }
}

impl Drop for QuietBridge {
    fn drop(&mut self) {
        // Deleting a namespace deletes its interfaces, which detaches any
        // program attached to them.
        delete_namespaces(&[self.container_ns(), self.peer_ns(), self.host_ns()]);
    }
}
