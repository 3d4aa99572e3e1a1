//! A network namespace of the test's own that plays a whole Docker host:
//! a private dockerd managing iptables runs inside it
//! (`crate::dockerd::PrivateDockerd::start_in_netns`), with the agent under
//! test beside it (`crate::agent::AgentProcess::start_in_netns`), so that
//! Docker's own rules can be in place without touching the machine's DOCKER
//! chains, which the main dockerd and the other tests use.
//!
//! ```text
//!   namespace nwh<pid>x<n> ("the host")          namespace nwh<pid>x<n>o
//!   lo up, ip_forward 0 until dockerd sets it     (crate::outside::OutsideLink::create_in)
//!   dockerd's bridges, veths, iptables rules
//!   outside 203.0.113.1/24 ────── veth ─────────  eth0 203.0.113.7/24
//! ```
//!
//! Both are created with `ip netns add`, so they are reached by name under
//! /run/netns (for `nsenter --net=…` and `ip -n …`). Nothing is added to the
//! machine's namespace. Namespaces of test processes that died are removed
//! when the next one is created.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{netns::run, reach::Netns};

/// What every such namespace's name starts with.
pub const PREFIX: &str = "nwh";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The filter and nat tables of a host that has just booted: no rule, no
/// chain but the built-in ones, every policy ACCEPT.
const EMPTY_TABLES: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
    :OUTPUT ACCEPT [0:0]\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n\
    :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";

/// The namespace playing the host; deleted on drop (its interfaces go with
/// it once no process is left in it: drop the daemon and the agent first).
pub struct HostNetns {
    name: String,
    netns: Option<Netns>,
}

impl HostNetns {
    /// Creates `nwh<pid>x<n>`, with its loopback up and IPv4 forwarding
    /// off, as a host boots (a new namespace inherits the machine's
    /// `ip_forward`): dockerd turns it on, and then sets the FORWARD policy
    /// to DROP, as it does on a real host. Needs root and iproute2.
    pub fn create() -> HostNetns {
        remove_stale();
        let name = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // The guard exists before the first command, so that a failure half
        // way removes what was created.
        let mut host = HostNetns {
            name: name.clone(),
            netns: None,
        };
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        host.netns = Some(Netns::named(&name));
        host.set_ip_forward(false);
        host
    }

    /// Its name under /run/netns.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A handle to it, for listeners, routes and commands run inside.
    pub fn netns(&self) -> &Netns {
        self.netns.as_ref().expect("the namespace exists")
    }

    /// What a power cut leaves of its firewall for the next boot: the filter
    /// and nat tables emptied (policies ACCEPT) and IPv4 forwarding off.
    /// dockerd puts its rules back as it starts.
    pub fn power_off_firewall(&self) {
        self.netns().run(|| {
            let mut restore = Command::new("iptables-restore")
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run iptables-restore");
            restore
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(EMPTY_TABLES.as_bytes())
                .expect("write to iptables-restore");
            let output = restore.wait_with_output().expect("iptables-restore");
            assert!(
                output.status.success(),
                "iptables-restore in netns {} failed: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            );
        });
        self.set_ip_forward(false);
    }

    fn set_ip_forward(&self, on: bool) {
        let setting = format!("net.ipv4.ip_forward={}", u8::from(on));
        self.netns().run_ok("sysctl", &["-q", "-w", &setting]);
    }
}

impl Drop for HostNetns {
    fn drop(&mut self) {
        // Close the handle first: an open nsfs file keeps the namespace.
        self.netns = None;
        remove(&self.name);
        if Path::new(&format!("/run/netns/{}", self.name)).exists() {
            eprintln!("cannot remove netns {}: check `ip netns list`", self.name);
        }
    }
}

fn remove(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// The pid in `nwh<pid>x<n>` (and its outside namespace's `nwh<pid>x<n>o`).
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('x').next()?.parse().ok()
}

/// Removes namespaces of test processes that died without removing them.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = owner_pid(&name)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!("removing netns {name}, left by test process {pid} that is gone");
            remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_pid() {
        assert_eq!(owner_pid("nwh123x0"), Some(123));
        assert_eq!(owner_pid("nwh123x0o"), Some(123));
        assert_eq!(owner_pid("nwhx"), None);
        assert_eq!(owner_pid("nwo123"), None);
    }
}
