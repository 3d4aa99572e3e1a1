//! Host firewall states for the reachability matrix, restored exactly when
//! the guard drops (even when the test panics):
//!
//! - [`IptablesState::flush_docker_isolation`] +
//!   [`IptablesState::forward_policy_accept`]: Docker's isolation chains
//!   flushed and the FORWARD policy ACCEPT, i.e. a host whose Docker
//!   isolation was switched off by hand;
//! - [`IptablesState::forward_policy_accept`] alone, for a host whose dockerd
//!   does not manage iptables (`--iptables=false`, see `crate::dockerd`).
//!
//! The guard saves the `filter` and `nat` tables with `iptables-save` and
//! puts them back with `iptables-restore`, which replaces both tables
//! atomically. Rules another process (e.g. the main dockerd creating a
//! network for a concurrent test) adds or removes in those tables while the
//! guard lives are undone by the restore: keep the guarded stretch short.
//!
//! Two guards must not overlap on one namespace, or the later restore
//! puts back the other's modified state: [`IptablesState::save_in`] takes a
//! lock of the namespace, shared by every test process of the machine, and
//! waits (up to 10 min) for another guard to drop. One guard at a time per
//! test, then; a test that also needs the outside link takes this guard
//! first (as the reachability matrix does), so two such tests cannot wait
//! on each other.
//!
//! IPv4 only: Docker 20.10 does not manage ip6tables unless told to.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use crate::reach::{Netns, NsLock};

/// How long a guard waits for another one of the same namespace.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(600);

/// Docker's isolation chains.
pub const ISOLATION_CHAINS: [&str; 2] = ["DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2"];

/// The tables saved and restored.
pub const TABLES: [&str; 2] = ["filter", "nat"];

/// The saved `filter` and `nat` tables of a namespace (normally the host's);
/// restored on drop.
pub struct IptablesState {
    ns: Netns,
    saved: String,
    restored: bool,
    /// Docker bridges the saved rules name that existed when they were
    /// saved: their rules are not restored if the bridge is gone by then.
    bridges_at_save: Vec<String>,
    _lock: NsLock,
}

impl IptablesState {
    /// Saves the host's tables (the namespace of the calling thread, which
    /// for a test is the host's).
    pub fn save() -> IptablesState {
        IptablesState::save_in(&Netns::host())
    }

    /// Saves the tables of `ns` (a namespace of the test's own, to try
    /// things out without touching the host).
    pub fn save_in(ns: &Netns) -> IptablesState {
        let lock = ns.lock("iptables-state", "the iptables guard", WAIT_FOR_OTHERS);
        let saved = iptables_save(ns);
        let mut state = IptablesState {
            ns: ns.clone(),
            saved,
            restored: false,
            bridges_at_save: Vec::new(),
            _lock: lock,
        };
        let mut named: Vec<&str> = state
            .saved
            .split_whitespace()
            .filter(|word| is_docker_bridge(word))
            .collect();
        named.sort_unstable();
        named.dedup();
        let existing: Vec<String> = named
            .into_iter()
            .filter(|b| state.bridge_exists(b))
            .map(str::to_owned)
            .collect();
        state.bridges_at_save = existing;
        state
    }

    /// What was saved (`iptables-save` output of both tables).
    pub fn saved(&self) -> &str {
        &self.saved
    }

    /// `iptables -F` for both Docker isolation chains. Panics, saying why,
    /// when a chain does not exist (a dockerd that does not manage
    /// iptables).
    pub fn flush_docker_isolation(&self) {
        for chain in ISOLATION_CHAINS {
            iptables(&self.ns, &["-w", "-t", "filter", "-F", chain]).unwrap_or_else(|e| {
                panic!("cannot flush {chain} (does dockerd manage iptables here?): {e}")
            });
        }
    }

    /// `iptables -P FORWARD ACCEPT`.
    pub fn forward_policy_accept(&self) {
        iptables(&self.ns, &["-w", "-t", "filter", "-P", "FORWARD", "ACCEPT"])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Puts the saved tables back now (drop does it too, once), less the
    /// rules of Docker bridges that existed when they were saved and are
    /// gone now: another test's network removed meanwhile must not get its
    /// rules back (a stale MASQUERADE rewrites the traffic of any later
    /// network with the same subnet).
    pub fn restore(&mut self) -> Result<(), String> {
        self.restored = true;
        let rules = without_rules_of_missing_bridges(&self.saved, |bridge| {
            !self.bridges_at_save.iter().any(|b| b == bridge) || self.bridge_exists(bridge)
        });
        iptables_restore(&self.ns, &rules)
    }

    fn bridge_exists(&self, bridge: &str) -> bool {
        self.ns
            .run(|| nix::net::if_::if_nametoindex(bridge).is_ok())
    }
}

/// `br-` and 12 hex digits: the bridge of a user-defined Docker network.
fn is_docker_bridge(word: &str) -> bool {
    word.strip_prefix("br-")
        .is_some_and(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `dump` (iptables-save output) without the rules that name a Docker
/// bridge (`br-` and 12 hex digits) for which `exists` says no.
fn without_rules_of_missing_bridges(dump: &str, exists: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(dump.len());
    for line in dump.lines() {
        let stale = line.starts_with("-A ")
            && line
                .split_whitespace()
                .any(|word| is_docker_bridge(word) && !exists(word));
        if !stale {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod restore_tests {
    use super::*;

    #[test]
    fn rules_of_bridges_removed_meanwhile_are_not_restored() {
        let dump = "*nat\n:POSTROUTING ACCEPT [0:0]\n\
                    -A POSTROUTING -s 172.27.0.0/16 ! -o br-76c11a802abb -j MASQUERADE\n\
                    -A POSTROUTING -s 172.28.0.0/16 ! -o br-e01f9afbd9b7 -j MASQUERADE\n\
                    -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\nCOMMIT\n";
        let kept = without_rules_of_missing_bridges(dump, |b| b == "br-e01f9afbd9b7");
        assert_eq!(
            kept,
            "*nat\n:POSTROUTING ACCEPT [0:0]\n\
             -A POSTROUTING -s 172.28.0.0/16 ! -o br-e01f9afbd9b7 -j MASQUERADE\n\
             -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\nCOMMIT\n"
        );
    }
}

impl Drop for IptablesState {
    fn drop(&mut self) {
        if self.restored {
            return;
        }
        if let Err(e) = self.restore() {
            eprintln!(
                "CANNOT RESTORE THE IPTABLES RULES of {:?}: {e}\nthe saved rules were:\n{}",
                self.ns, self.saved
            );
            // A test that leaves the host's firewall changed has failed,
            // whatever it asserted; when it is failing already, the line
            // above says it and a second panic would abort the process.
            if !std::thread::panicking() {
                panic!(
                    "the iptables rules of {:?} could not be restored: {e}",
                    self.ns
                );
            }
        }
    }
}

/// Runs `iptables args…` in `ns`; stdout, or a message with stderr.
pub fn iptables(ns: &Netns, args: &[&str]) -> Result<String, String> {
    let output = ns
        .output("iptables", args)
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`iptables {}` in {ns:?} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `iptables-save` of the `filter` and `nat` tables of `ns`.
pub fn iptables_save(ns: &Netns) -> String {
    let mut saved = String::new();
    for table in TABLES {
        let output = ns
            .output("iptables-save", &["-t", table])
            .unwrap_or_else(|e| panic!("cannot run iptables-save: {e}"));
        assert!(
            output.status.success(),
            "iptables-save -t {table} in {ns:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        saved.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    saved
}

/// `iptables-restore` of `rules` (whole tables, replaced atomically) in
/// `ns`.
pub fn iptables_restore(ns: &Netns, rules: &str) -> Result<(), String> {
    let output = ns
        .run(|| {
            let mut child = Command::new("iptables-restore")
                .arg("-w")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(rules.as_bytes())?;
            child.wait_with_output()
        })
        .map_err(|e| format!("cannot run iptables-restore: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables-restore in {ns:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `iptables-save` output without what changes by itself: comment lines
/// (`# Generated by … on <date>`) and packet/byte counters (`[12:3456]`).
pub fn normalize(saved: &str) -> String {
    saved
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let line = line.trim_end();
            match (line.starts_with(':'), line.rfind(" [")) {
                (true, Some(at)) if line.ends_with(']') => &line[..at],
                _ => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_drops_comments_and_counters() {
        let saved = "# Generated by iptables-save v1.8.9 (nf_tables) on Thu Nov 27 21:00:00 2025\n\
                     *filter\n\
                     :INPUT ACCEPT [12:3456]\n\
                     :DOCKER - [0:0]\n\
                     -A FORWARD -j DOCKER-USER\n\
                     COMMIT\n\
                     # Completed on Thu Nov 27 21:00:00 2025\n";
        assert_eq!(
            normalize(saved),
            "*filter\n:INPUT ACCEPT\n:DOCKER -\n-A FORWARD -j DOCKER-USER\nCOMMIT"
        );
    }
}
