//! "The outside world" for Docker end-to-end tests: a namespace of the
//! test's own, joined to the machine's host namespace by a veth pair.
//!
//! ```text
//!   host namespace                              namespace nwo<pid>
//!   nwo<pid>h 203.0.113.1/24  ───── veth ─────  eth0 203.0.113.7/24
//!   (route 203.0.113.0/24 dev nwo<pid>h)        routes to container subnets
//!                                               via 203.0.113.1 (add_route_via_host)
//! ```
//!
//! Containers reach 203.0.113.7 through the host's routing; the namespace
//! answers them through the routes a test adds. Deleting the veth removes
//! the host address and route with it.
//!
//! Only one such link can exist on a machine at a time (the host route to
//! 203.0.113.0/24 is unique): [`OutsideLink::create`] waits for a link of
//! another test (of this process or another) to go away, and removes links
//! and namespaces of test processes that died.
//!
//! [`OutsideLink::create_in`] builds the same link from a network namespace
//! of the test's own that plays the host (`crate::host_netns::HostNetns`):
//! the "host" side, its address and its route are then in that namespace,
//! nothing is added to the machine's, and no lock is needed.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    process::Command,
    time::Duration,
};

use crate::{
    netns::{ip_in, run},
    reach::{Netns, NsLock},
};

/// The name every outside namespace and host-side veth starts with.
pub const PREFIX: &str = "nwo";

/// How long `create` waits for another test's link to go away.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(300);

/// The outside namespace and its veth to the host, removed on drop.
pub struct OutsideLink {
    name: String,
    host_ifname: String,
    host_ifindex: u32,
    /// The namespace playing the host (a name under /run/netns), or none
    /// for the machine's own.
    host_ns: Option<String>,
    netns: Option<Netns>,
    _lock: Option<NsLock>,
}

impl OutsideLink {
    pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
    pub const PREFIX_LEN: u8 = 24;
    /// The link's IPv6 addresses, once [`OutsideLink::add_ipv6`] added them
    /// (2001:db8::/32 is for documentation: no real host has it).
    pub const HOST_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x7e57, 0, 0, 0, 0, 1);
    pub const OUTSIDE_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x7e57, 0, 0, 0, 0, 7);
    pub const PREFIX_LEN6: u8 = 64;

    /// Creates namespace `nwo<pid>` and the veth `nwo<pid>h` (host side,
    /// 203.0.113.1/24) ↔ `eth0` (namespace side, 203.0.113.7/24), after
    /// checking that 203.0.113.7 is not routed to some other interface of
    /// the host. Needs root and iproute2; must be called from a thread in
    /// the host namespace.
    pub fn create() -> OutsideLink {
        let lock = Netns::host().lock(
            "outside-link",
            "the outside link (203.0.113.0/24 on the host)",
            WAIT_FOR_OTHERS,
        );
        remove_stale();
        let name = format!("{PREFIX}{}", std::process::id());
        let host_ifname = format!("{name}h");
        OutsideLink::build(name, host_ifname, None, Some(lock))
    }

    /// As [`OutsideLink::create`], with the host side in the network
    /// namespace `/run/netns/<host_ns>` (of the test's own, playing the
    /// host): the outside namespace is `<host_ns>o` and the host-side veth
    /// `outside`. The caller removes namespaces of dead test processes
    /// (`crate::host_netns`).
    pub fn create_in(host_ns: &str) -> OutsideLink {
        OutsideLink::build(
            format!("{host_ns}o"),
            "outside".to_owned(),
            Some(host_ns.to_owned()),
            None,
        )
    }

    fn build(
        name: String,
        host_ifname: String,
        host_ns: Option<String>,
        lock: Option<NsLock>,
    ) -> OutsideLink {
        let ip = |args: &[&str]| {
            let mut command = vec!["ip"];
            if let Some(host_ns) = &host_ns {
                command.extend(["-n", host_ns]);
            }
            command.extend(args);
            run(&command);
        };
        // Before creating anything: 203.0.113.7 must not already lead to
        // an interface (a stale link would have been removed above).
        let before = host_route_dev(host_ns.as_deref());
        if let Some(dev) = &before {
            assert!(
                !dev.starts_with(PREFIX),
                "203.0.113.7 is routed to {dev} on the host, the outside link of another test \
                 run that is still alive: stop it first"
            );
            assert!(
                !is_connected_route(host_ns.as_deref(), dev),
                "the host already has 203.0.113.0/24 on {dev}: refusing to add the test's \
                 outside link on top of it"
            );
        }
        // The guard exists before the first command, so that a failure half
        // way removes what was created.
        let mut link = OutsideLink {
            name: name.clone(),
            host_ifname: host_ifname.clone(),
            host_ifindex: 0,
            host_ns: host_ns.clone(),
            netns: None,
            _lock: lock,
        };
        run(&["ip", "netns", "add", &name]);
        ip(&[
            "link",
            "add",
            &host_ifname,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &name,
        ]);
        let host_cidr = format!("{}/{}", Self::HOST_IP, Self::PREFIX_LEN);
        ip(&["addr", "add", &host_cidr, "dev", &host_ifname]);
        ip(&["link", "set", &host_ifname, "up"]);
        let outside_cidr = format!("{}/{}", Self::OUTSIDE_IP, Self::PREFIX_LEN);
        run(&[
            "ip",
            "-n",
            &name,
            "addr",
            "add",
            &outside_cidr,
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &name, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        link.host_ifindex = ifindex(host_ns.as_deref(), &host_ifname)
            .unwrap_or_else(|| panic!("no ifindex for {host_ifname}"));
        link.netns = Some(Netns::named(&name));
        let after = host_route_dev(host_ns.as_deref());
        assert_eq!(
            after.as_deref(),
            Some(host_ifname.as_str()),
            "after creating the outside link, the host{} still does not route 203.0.113.7 \
             through {host_ifname} (some more specific route wins?)",
            host_ns
                .as_deref()
                .map(|ns| format!(" (netns {ns})"))
                .unwrap_or_default()
        );
        link
    }

    /// In the outside namespace, `ip route add <cidr> via 203.0.113.1` (or
    /// via 2001:db8:7e57::1 for an IPv6 `cidr`): the way back to a (Docker
    /// container) subnet, through the host.
    pub fn add_route_via_host(&self, cidr: &str) {
        let via = if cidr.contains(':') {
            Self::HOST_IP6.to_string()
        } else {
            Self::HOST_IP.to_string()
        };
        run(&["ip", "-n", &self.name, "route", "add", cidr, "via", &via]);
    }

    /// Gives the link IPv6 too: 2001:db8:7e57::1/64 on the host side,
    /// 2001:db8:7e57::7/64 in the namespace (no duplicate address
    /// detection, so both are usable at once), after checking that no
    /// interface of the host has an address in 2001:db8:7e57::/64; and
    /// checks afterwards that the host routes 2001:db8:7e57::7 through this
    /// link. Removed with the link.
    pub fn add_ipv6(&self) {
        let outside: IpAddr = Self::OUTSIDE_IP6.into();
        let host_ns = self.host_ns.as_deref();
        let held = ip_in(host_ns)
            .args(["-6", "-o", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if let Some(line) = held.lines().find(|l| l.contains(" 2001:db8:7e57:")) {
            panic!("the host already has an address of 2001:db8:7e57::/64: {line}");
        }
        let mut host = vec!["ip"];
        if let Some(ns) = host_ns {
            host.extend(["-n", ns]);
        }
        let host_cidr = format!("{}/{}", Self::HOST_IP6, Self::PREFIX_LEN6);
        host.extend(["addr", "add", &host_cidr, "dev", &self.host_ifname, "nodad"]);
        run(&host);
        let outside_cidr = format!("{}/{}", Self::OUTSIDE_IP6, Self::PREFIX_LEN6);
        run(&[
            "ip",
            "-n",
            &self.name,
            "addr",
            "add",
            &outside_cidr,
            "dev",
            "eth0",
            "nodad",
        ]);
        assert_eq!(
            host_route_dev_to(host_ns, outside).as_deref(),
            Some(self.host_ifname.as_str()),
            "after adding IPv6 to the outside link, the host does not route {outside} through it"
        );
    }

    /// The namespace's name (`nwo<pid>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host-side veth, `nwo<pid>h`.
    pub fn host_ifname(&self) -> &str {
        &self.host_ifname
    }

    pub fn host_ifindex(&self) -> u32 {
        self.host_ifindex
    }

    /// A handle to the outside namespace (for listeners and probes).
    pub fn netns(&self) -> &Netns {
        self.netns.as_ref().expect("the outside namespace exists")
    }

    /// 203.0.113.7, the outside namespace's address.
    pub fn outside_ip(&self) -> IpAddr {
        Self::OUTSIDE_IP.into()
    }

    /// 203.0.113.1, the host's address on the link.
    pub fn host_ip(&self) -> IpAddr {
        Self::HOST_IP.into()
    }
}

impl Drop for OutsideLink {
    fn drop(&mut self) {
        // Deleting the veth first removes both ends, the host address and
        // the host route at once, even while someone still holds a handle
        // to the namespace (which keeps it alive after `ip netns del`).
        remove(&self.name, &self.host_ifname, self.host_ns.as_deref());
        if ifindex(self.host_ns.as_deref(), &self.host_ifname).is_some() {
            eprintln!(
                "cannot remove the outside link {}: check `ip -br link`",
                self.host_ifname
            );
        }
    }
}

/// The ifindex of `ifname` in `host_ns` (or the machine's namespace), if
/// it exists.
fn ifindex(host_ns: Option<&str>, ifname: &str) -> Option<u32> {
    let Some(_) = host_ns else {
        return std::fs::read_to_string(format!("/sys/class/net/{ifname}/ifindex"))
            .ok()
            .and_then(|text| text.trim().parse().ok());
    };
    let output = ip_in(host_ns)
        .args(["-o", "link", "show", "dev", ifname])
        .output()
        .ok()?;
    // "7: outside@if2: <…"
    String::from_utf8_lossy(&output.stdout)
        .split(':')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Removes the link `host_ifname` (in `host_ns`, or the machine's
/// namespace) and the namespace `name`, if present.
fn remove(name: &str, host_ifname: &str, host_ns: Option<&str>) {
    if ifindex(host_ns, host_ifname).is_some() {
        let _ = ip_in(host_ns).args(["link", "del", host_ifname]).output();
    }
    if Path::new(&format!("/run/netns/{name}")).exists() {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
    }
}

/// The pid in `nwo<pid>` or `nwo<pid>h`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    rest.strip_suffix('h').unwrap_or(rest).parse().ok()
}

fn is_dead(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes links and namespaces of test processes that died without
/// cleaning up.
fn remove_stale() {
    let mut names: Vec<String> = Vec::new();
    for dir in ["/sys/class/net", "/run/netns"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            names.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    let mut pids: Vec<u32> = names.iter().filter_map(|name| owner_pid(name)).collect();
    pids.sort();
    pids.dedup();
    for pid in pids.into_iter().filter(|&pid| is_dead(pid)) {
        eprintln!(
            "removing the outside link {PREFIX}{pid}, left by test process {pid} that is gone"
        );
        let name = format!("{PREFIX}{pid}");
        remove(&name, &format!("{name}h"), None);
    }
}

/// The host's (or `host_ns`'s) output interface for 203.0.113.7, if it has
/// a route at all.
fn host_route_dev(host_ns: Option<&str>) -> Option<String> {
    host_route_dev_to(host_ns, OutsideLink::OUTSIDE_IP.into())
}

/// The interface the host routes `dst` through, if any.
fn host_route_dev_to(host_ns: Option<&str>, dst: IpAddr) -> Option<String> {
    let output = ip_in(host_ns)
        .args(["route", "get", &dst.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip route get`: {e}"));
    let text = String::from_utf8_lossy(&output.stdout);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "dev")?;
    words.next().map(str::to_owned)
}

/// Whether the host has an address of 203.0.113.0/24 on `dev` (a connected
/// route, as opposed to leaving through the default route).
fn is_connected_route(host_ns: Option<&str>, dev: &str) -> bool {
    let output = ip_in(host_ns)
        .args(["-4", "-o", "addr", "show", "dev", dev])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    output.contains(" 203.0.113.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_pid() {
        assert_eq!(owner_pid("nwo123"), Some(123));
        assert_eq!(owner_pid("nwo123h"), Some(123));
        assert_eq!(owner_pid("nwox"), None);
        assert_eq!(owner_pid("eth0"), None);
    }
}
