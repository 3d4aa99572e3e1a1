//! What the test suite must leave as it found it. Taken just before
//! `cargo test` and compared after it: a netwatch program still loaded, a
//! pin in bpffs, a network namespace, an interface, a Docker test
//! container or network, or iptables rules of a bridge that is gone, that
//! were not there before are a leak, named in the failure; so is a host
//! firewall the tests weakened and did not restore: another FORWARD policy,
//! or a rule of FORWARD or of Docker's isolation chains that no longer
//! names an interface and is gone (a test that flushes Docker's rules must
//! put them back). Comparing with
//! the state before (instead of expecting an empty host) keeps a
//! developer's own agent or namespaces from failing the run.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::cmd::Cmd;

/// Program names netwatch's objects hold (netwatch-common's `names::PROG_*`;
/// the `bench_*` ones are in the benchmark's own object).
const NETWATCH_PROGRAMS: &[&str] = &[
    "from_container",
    "to_container",
    "uplink",
    "macvlan_parent",
    "macvlan_child",
    "kernel_drops",
    "bench_baseline",
    "bench_counter",
    "bench_headers",
    "bench_flow",
    "bench_kfree",
];

/// What the Docker test fixtures (`tests/src/docker.rs`) create is named
/// `nwtest-…`.
const DOCKER_FIXTURE_PREFIX: &str = "nwtest-";

const BPFFS: &str = "/sys/fs/bpf";
const NETNS_DIR: &str = "/run/netns";
const INTERFACES_DIR: &str = "/sys/class/net";

/// The host's state as far as leaks are concerned.
#[derive(Debug, Default)]
pub struct HostSnapshot {
    /// `id name` of every loaded netwatch program.
    programs: BTreeSet<String>,
    /// Every file under bpffs.
    pins: BTreeSet<String>,
    namespaces: BTreeSet<String>,
    interfaces: BTreeSet<String>,
    docker: BTreeSet<String>,
    /// Bridges that iptables rules name but that do not exist (a dockerd
    /// stopped before it removed a network's rules).
    stale_rules: BTreeSet<String>,
    /// The firewall's shape: `policy FORWARD DROP` and the rules of
    /// FORWARD and Docker's isolation chains that name no interface (one
    /// bridge's rules come and go with its network).
    firewall: BTreeSet<String>,
}

impl HostSnapshot {
    /// # Errors
    ///
    /// When bpftool or docker cannot be asked.
    pub fn take() -> Result<HostSnapshot> {
        Ok(HostSnapshot {
            programs: netwatch_programs()?,
            pins: files_under(Path::new(BPFFS)),
            namespaces: names_in(Path::new(NETNS_DIR)),
            interfaces: names_in(Path::new(INTERFACES_DIR)),
            docker: docker_fixtures()?,
            stale_rules: crate::setup::missing_bridges_in_rules()
                .into_iter()
                .collect(),
            firewall: firewall_shape(),
        })
    }

    /// Fails naming everything that exists now and did not in `self`.
    ///
    /// # Errors
    ///
    /// When something was left behind, or the state cannot be read.
    pub fn check_nothing_new(&self) -> Result<()> {
        let now = HostSnapshot::take()?;
        let mut leaks = Vec::new();
        let mut report = |what: &str, new: Vec<String>| {
            if !new.is_empty() {
                leaks.push(format!("{what}: {}", new.join(", ")));
            }
        };
        report(
            "netwatch programs (id name)",
            added(&self.programs, &now.programs),
        );
        report("pins", added(&self.pins, &now.pins));
        report(
            "network namespaces",
            added(&self.namespaces, &now.namespaces),
        );
        report("interfaces", added(&self.interfaces, &now.interfaces));
        report(
            "docker containers/networks",
            added(&self.docker, &now.docker),
        );
        report(
            "iptables rules of bridges that are gone",
            added(&self.stale_rules, &now.stale_rules),
        );
        let weakened = weakened(&self.firewall, &now.firewall);
        if !weakened.is_empty() {
            leaks.push(format!(
                "the host firewall is not as it was, gone: {} (now: {})",
                weakened.join(", "),
                now.firewall.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if leaks.is_empty() {
            eprintln!(
                "nothing left behind: no new netwatch program, pin, namespace, interface, \
                 test container or network, and the host firewall as it was"
            );
            return Ok(());
        }
        bail!("left behind: {}", leaks.join("; "))
    }
}

/// Docker's chains whose interface-free rules are part of the firewall's
/// shape.
const FIREWALL_CHAINS: &[&str] = &[
    "FORWARD",
    "DOCKER-ISOLATION-STAGE-1",
    "DOCKER-ISOLATION-STAGE-2",
];

/// The filter table's FORWARD policy and the interface-free rules of
/// [`FIREWALL_CHAINS`]; empty where iptables cannot be asked (no dockerd
/// ever ran, so nothing to compare).
fn firewall_shape() -> BTreeSet<String> {
    shape_with(|chain| Cmd::new("iptables").args(["-S", chain]).probe().ok())
}

/// [`firewall_shape`] from `list`, which gives a chain's `iptables -S`
/// listing (`None`: no such chain).
fn shape_with(list: impl Fn(&str) -> Option<String>) -> BTreeSet<String> {
    FIREWALL_CHAINS
        .iter()
        .filter_map(|chain| list(chain))
        .flat_map(|listing| shape_of(&listing))
        .collect()
}

/// What of the firewall's shape `before` is gone `now`: a test that
/// weakened the host and did not put it back. Rules added are no leak
/// (Docker adds its own as networks come).
fn weakened(before: &BTreeSet<String>, now: &BTreeSet<String>) -> Vec<String> {
    before.difference(now).cloned().collect()
}

/// The lines of an `iptables -S CHAIN` listing that make the firewall's
/// shape: policies (`-P`) and rules (`-A`) without `-i`/`-o`.
fn shape_of(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter(|line| line.starts_with("-P ") || line.starts_with("-A "))
        .filter(|line| {
            !line
                .split_whitespace()
                .any(|word| word == "-i" || word == "-o")
        })
        .map(str::to_owned)
        .collect()
}

fn added(before: &BTreeSet<String>, now: &BTreeSet<String>) -> Vec<String> {
    now.difference(before).cloned().collect()
}

fn netwatch_programs() -> Result<BTreeSet<String>> {
    let json = Cmd::new("bpftool")
        .args(["--json", "prog", "show"])
        .probe()
        .context("listing BPF programs with bpftool")?;
    let programs: Vec<serde_json::Value> =
        serde_json::from_str(&json).context("reading bpftool's JSON")?;
    Ok(programs
        .iter()
        .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str()?)))
        .filter(|(_, name)| NETWATCH_PROGRAMS.contains(name))
        .map(|(id, name)| format!("{id} {name}"))
        .collect())
}

fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path.clone());
            }
            files.insert(path.display().to_string());
        }
    }
    files
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

fn docker_fixtures() -> Result<BTreeSet<String>> {
    let filter = format!("name={DOCKER_FIXTURE_PREFIX}");
    let list = |what: &str, args: &[&str]| -> Result<Vec<String>> {
        Ok(Cmd::new("docker")
            .args(args)
            .probe()?
            .lines()
            .filter(|name| name.starts_with(DOCKER_FIXTURE_PREFIX))
            .map(|name| format!("{what} {name}"))
            .collect())
    };
    let mut all = list(
        "container",
        &["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
    )?;
    all.extend(list(
        "network",
        &[
            "network",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Name}}",
        ],
    )?);
    Ok(all.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_firewalls_shape_is_its_policy_and_rules_of_no_one_bridge() {
        let listing = "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n\
                       -A FORWARD -j DOCKER-ISOLATION-STAGE-1\n\
                       -A FORWARD -o br-fa33e02185ac -j DOCKER\n\
                       -A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n";
        assert_eq!(
            shape_of(listing),
            [
                "-P FORWARD DROP",
                "-A FORWARD -j DOCKER-USER",
                "-A FORWARD -j DOCKER-ISOLATION-STAGE-1"
            ]
        );
        let before: BTreeSet<String> = shape_of(listing).into_iter().collect();
        let flushed: BTreeSet<String> = shape_of("-P FORWARD ACCEPT\n").into_iter().collect();
        assert_eq!(
            before.difference(&flushed).count(),
            3,
            "a flushed FORWARD with policy ACCEPT loses all three"
        );
    }

    #[test]
    fn a_flushed_isolation_chain_or_an_accepting_forward_is_a_weakened_firewall() {
        let docker = |chain: &str| -> Option<String> {
            Some(
                match chain {
                    "FORWARD" => {
                        "-P FORWARD DROP\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n"
                    }
                    "DOCKER-ISOLATION-STAGE-1" => {
                        "-N DOCKER-ISOLATION-STAGE-1\n\
                         -A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2\n\
                         -A DOCKER-ISOLATION-STAGE-1 -j RETURN\n"
                    }
                    "DOCKER-ISOLATION-STAGE-2" => {
                        "-N DOCKER-ISOLATION-STAGE-2\n\
                         -A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP\n\
                         -A DOCKER-ISOLATION-STAGE-2 -j RETURN\n"
                    }
                    _ => return None,
                }
                .to_owned(),
            )
        };
        let before = shape_with(docker);
        assert!(
            before.contains("-A DOCKER-ISOLATION-STAGE-2 -j RETURN"),
            "{before:?}"
        );
        let flushed = shape_with(|chain| {
            if chain == "DOCKER-ISOLATION-STAGE-2" {
                Some("-N DOCKER-ISOLATION-STAGE-2\n".to_owned())
            } else {
                docker(chain)
            }
        });
        assert_eq!(
            weakened(&before, &flushed),
            ["-A DOCKER-ISOLATION-STAGE-2 -j RETURN"]
        );
        let accepting = shape_with(|chain| {
            docker(chain).map(|l| l.replace("-P FORWARD DROP", "-P FORWARD ACCEPT"))
        });
        assert_eq!(weakened(&before, &accepting), ["-P FORWARD DROP"]);
        // A rule Docker added for a new network weakens nothing.
        let more = shape_with(|chain| {
            docker(chain).map(|l| {
                if chain == "FORWARD" {
                    l + "-A FORWARD -j DOCKER-USER\n"
                } else {
                    l
                }
            })
        });
        assert!(weakened(&before, &more).is_empty());
    }

    #[test]
    fn only_what_is_new_counts_as_left_behind() {
        let before: BTreeSet<String> = ["lo", "eth0", "docker0"].map(String::from).into();
        let now: BTreeSet<String> = ["lo", "eth0", "nwt1x2c"].map(String::from).into();
        assert_eq!(added(&before, &now), ["nwt1x2c"]);
    }
}
