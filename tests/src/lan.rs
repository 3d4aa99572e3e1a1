//! A LAN of the test's own for macvlan networks: the macvlan parent is a
//! veth on the host whose peer plugs into a bridge in a "router"
//! namespace; a second namespace is a LAN host on the same bridge, and a
//! third lies "beyond" the router (routed, outside the LAN's subnet).
//!
//! ```text
//!  host namespace        namespace <name>r (router)            namespace <name>h (LAN host)
//!  <name>p ─── veth ──── lan0 ─┐                               eth0 S.50, S6::50
//!  (the macvlan parent)        br  S.1, S6::1 ──── h0 ─── veth ─┘
//!                              b0  203.0.113.1, 2001:db8:7::1 ── veth ── eth0 203.0.113.7,
//!                                                               2001:db8:7::7
//!                                                               namespace <name>b (beyond)
//! ```
//!
//! S is a /24 of 198.18.0.0/15 and S6 a /64 of fd00:18::/32, both picked
//! from the process id and a counter, so that parallel test processes do
//! not ask Docker for overlapping subnets. Nothing of it is routed from the
//! host: only the containers of a macvlan network on the parent reach it.
//! Dropping the guard deletes the three namespaces (and with them every
//! interface, the parent included); [`Lan::create`] first removes LANs of
//! test processes that are gone.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{netns::run, reach::Netns};

/// What the names of every LAN's namespaces and parent start with.
pub const PREFIX: &str = "nwl";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A LAN behind a macvlan parent; removed on drop.
pub struct Lan {
    name: String,
    /// The macvlan parent: a host interface (`-o parent=…`).
    pub parent: String,
    /// The third octet group: the LAN is 198.<18 + k / 256>.<k % 256>.0/24.
    k: u32,
    router: Option<Netns>,
    host: Option<Netns>,
    beyond: Option<Netns>,
}

impl Lan {
    /// Where "beyond the router" is.
    pub const BEYOND_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
    pub const BEYOND_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 7);

    /// Creates the LAN. Needs root and iproute2.
    pub fn create() -> Lan {
        remove_stale();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{pid}x{n}");
        // The guard exists first: a failure half way removes what was made.
        let mut lan = Lan {
            parent: format!("{name}p"),
            k: (pid.wrapping_mul(4).wrapping_add(n)) % 512,
            name,
            router: None,
            host: None,
            beyond: None,
        };
        let (router, host, beyond) = (lan.ns("r"), lan.ns("h"), lan.ns("b"));
        for ns in [&router, &host, &beyond] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        lan.router = Some(Netns::named(&router));
        lan.host = Some(Netns::named(&host));
        lan.beyond = Some(Netns::named(&beyond));
        let pair = |a: &str, a_ns: Option<&str>, b: &str, b_ns: &str| {
            let mut args = vec!["ip", "link", "add", a];
            if let Some(ns) = a_ns {
                args.extend(["netns", ns]);
            }
            args.extend(["type", "veth", "peer", "name", b, "netns", b_ns]);
            run(&args);
        };
        pair(&lan.parent, None, "lan0", &router);
        run(&["ip", "link", "set", &lan.parent, "up"]);
        pair("h0", Some(&router), "eth0", &host);
        pair("b0", Some(&router), "eth0", &beyond);
        let r = |args: &[&str]| {
            let mut all = vec!["ip", "-n", &router];
            all.extend(args);
            run(&all);
        };
        r(&["link", "add", "name", "lanbr", "type", "bridge"]);
        for port in ["lan0", "h0"] {
            r(&["link", "set", port, "master", "lanbr"]);
            r(&["link", "set", port, "up"]);
        }
        r(&["link", "set", "lanbr", "up"]);
        r(&["link", "set", "b0", "up"]);
        let (router_v4, router_v6) = (lan.v4(1), lan.v6(1));
        r(&["addr", "add", &format!("{router_v4}/24"), "dev", "lanbr"]);
        r(&[
            "addr",
            "add",
            &format!("{router_v6}/64"),
            "dev",
            "lanbr",
            "nodad",
        ]);
        r(&["addr", "add", "203.0.113.1/24", "dev", "b0"]);
        r(&["addr", "add", "2001:db8:7::1/64", "dev", "b0", "nodad"]);
        for forwarding in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            run(&["ip", "netns", "exec", &router, "sysctl", "-qw", forwarding]);
        }
        let eth0 = |ns: &str, v4: String, v6: String| {
            run(&["ip", "-n", ns, "addr", "add", &v4, "dev", "eth0"]);
            run(&["ip", "-n", ns, "addr", "add", &v6, "dev", "eth0", "nodad"]);
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        };
        eth0(
            &host,
            format!("{}/24", lan.v4(50)),
            format!("{}/64", lan.v6(0x50)),
        );
        eth0(
            &beyond,
            format!("{}/24", Self::BEYOND_V4),
            format!("{}/64", Self::BEYOND_V6),
        );
        run(&[
            "ip",
            "-n",
            &beyond,
            "route",
            "add",
            "default",
            "via",
            "203.0.113.1",
        ]);
        run(&[
            "ip",
            "-n",
            &beyond,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:7::1",
        ]);
        lan
    }

    fn ns(&self, role: &str) -> String {
        format!("{}{role}", self.name)
    }

    /// Host `n` of the LAN's IPv4 subnet (1: the router, 50: the LAN host).
    pub fn v4(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18 + (self.k / 256) as u8, (self.k % 256) as u8, n)
    }

    /// Host `n` of the LAN's IPv6 subnet (1: the router, 0x50: the LAN host).
    pub fn v6(&self, n: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x18, self.k as u16, 0, 0, 0, 0, n)
    }

    /// `--subnet`/`--gateway` arguments for `docker network create`.
    pub fn subnet_args(&self) -> Vec<String> {
        vec![
            "--subnet".into(),
            format!("{}/24", self.v4(0)),
            "--gateway".into(),
            self.v4(1).to_string(),
            "--ipv6".into(),
            "--subnet".into(),
            format!("{}/64", self.v6(0)),
            "--gateway".into(),
            self.v6(1).to_string(),
        ]
    }

    pub fn router(&self) -> &Netns {
        self.router.as_ref().expect("created")
    }

    pub fn host(&self) -> &Netns {
        self.host.as_ref().expect("created")
    }

    pub fn beyond(&self) -> &Netns {
        self.beyond.as_ref().expect("created")
    }

    /// The MAC of the router's bridge (what containers send routed frames to).
    pub fn router_mac(&self) -> [u8; 6] {
        link_mac(self.router(), "lanbr")
    }

    /// The LAN host's MAC.
    pub fn host_mac(&self) -> [u8; 6] {
        link_mac(self.host(), "eth0")
    }

    /// Any address of the LAN's subnets, or beyond.
    pub fn all(&self) -> Vec<IpAddr> {
        vec![
            self.v4(1).into(),
            self.v4(50).into(),
            Self::BEYOND_V4.into(),
            self.v6(1).into(),
            self.v6(0x50).into(),
            Self::BEYOND_V6.into(),
        ]
    }
}

/// The MAC of interface `ifname` of `ns` (asked with `ip`: /sys shows the
/// namespace sysfs was mounted in, not the thread's).
fn link_mac(ns: &Netns, ifname: &str) -> [u8; 6] {
    let text = ns.run_ok("ip", &["-o", "link", "show", "dev", ifname]);
    let address = text
        .split_whitespace()
        .skip_while(|word| *word != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC for {ifname} in {}: {text}", ns.describe()));
    mac(address)
}

fn mac(text: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (byte, part) in out.iter_mut().zip(text.trim().split(':')) {
        *byte = u8::from_str_radix(part, 16).unwrap_or_else(|e| panic!("MAC {text:?}: {e}"));
    }
    out
}

impl Drop for Lan {
    fn drop(&mut self) {
        remove(&self.name);
    }
}

/// Deletes LAN `name`'s namespaces (their interfaces go with them, and the
/// parent with its peer) and the parent, if it is still there.
fn remove(name: &str) {
    for role in ["r", "h", "b"] {
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("{name}{role}")])
            .output();
    }
    let _ = Command::new("ip")
        .args(["link", "del", &format!("{name}p")])
        .output();
}

/// Removes the LANs of test processes that are gone.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    let mut stale: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let lan = name.strip_suffix(['r', 'h', 'b'])?;
            let (pid, _) = lan.strip_prefix(PREFIX)?.split_once('x')?;
            let pid: u32 = pid.parse().ok()?;
            (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then(|| lan.to_owned())
        })
        .collect();
    stale.sort();
    stale.dedup();
    for lan in stale {
        eprintln!("removing LAN {lan}, left by a test process that is gone");
        remove(&lan);
    }
}
