//! Host steps: bpffs mounted, and the Debian packages the tests and
//! benchmarks need.

use std::fs;

use anyhow::{Context as _, Result, bail};

use crate::cmd::Cmd;

use super::{Outcome, RETRIES};

/// Debian packages the tests and benchmarks need, each with why.
const PACKAGES: &[(&str, &str)] = &[
    // `ip netns`, veth pairs, bridges and `ip route get` in the namespace tests.
    (
        "iproute2",
        "namespaces, veths and bridges for the namespace tests",
    ),
    // Inspect programs, maps and links when a datapath test fails (Debian's
    // 7.1 shows TCX links as `type 11`; tests use the kernel's link list).
    ("bpftool", "inspecting loaded programs, maps and links"),
    // Real TCP throughput through an attached program (benchmarks, e2e).
    ("iperf3", "throughput through attached programs"),
    // Seeing what actually crossed a test veth when a reachability test fails.
    ("tcpdump", "packet captures on test interfaces"),
    // `cargo xtask bench datapath` profiles an established flow with
    // `perf record` to show where its time goes.
    ("linux-perf", "profiling the datapath benchmark"),
    // No image can be pulled: the e2e tests build their container image from
    // /bin/busybox (sh, nc, ping, ip, sleep) with `docker import`.
    ("busybox-static", "rootfs of the locally built test image"),
    // dockerd (Debian's 20.10, API 1.41) for the Docker end-to-end tests.
    ("docker.io", "dockerd for the Docker end-to-end tests"),
    // Runs the seed-style compose files (format 3.8) with `internal: true`.
    ("docker-compose", "compose files in the end-to-end tests"),
    // Small traffic generators and servers run inside test namespaces.
    ("python3", "traffic helpers inside test namespaces"),
    // `systemd-analyze verify` checks the units `cargo xtask dist` ships.
    ("systemd", "systemd-analyze verify on netwatch's units"),
    // `netwatch map --format svg` lays the map out with Graphviz's `dot`
    // when it is installed; the test of that branch needs it.
    ("graphviz", "dot for the Graphviz branch of netwatch map"),
    // `dpkg-deb -c/-x` checks the contents of the .deb.
    ("dpkg", "dpkg-deb to check the .deb's contents"),
    // Its /usr/bin/promtool checks deploy/'s scrape config and alert rules,
    // and lints a live agent's /metrics (the deploy_configs test).
    (
        "prometheus",
        "promtool for deploy/'s Prometheus files and the metrics lint",
    ),
];

fn bpffs_mounted() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    Ok(mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"/sys/fs/bpf") && fields.get(2) == Some(&"bpf")
    }))
}

pub(super) fn bpffs(root: bool) -> Result<Outcome> {
    if bpffs_mounted()? {
        return Ok(Outcome::Ok("mounted at /sys/fs/bpf".into()));
    }
    if !root {
        return Ok(Outcome::Skipped(
            "bpffs is not mounted at /sys/fs/bpf and mounting it needs root: \
             run `cargo xtask setup` as root"
                .into(),
        ));
    }
    fs::create_dir_all("/sys/fs/bpf").context("creating /sys/fs/bpf")?;
    Cmd::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .run()?;
    Ok(Outcome::Installed("mounted bpffs at /sys/fs/bpf".into()))
}

/// The packages of [`PACKAGES`] that dpkg does not have installed.
fn missing_packages() -> Result<Vec<&'static str>> {
    let stdout = Cmd::new("dpkg-query")
        .args(["-W", "-f=${Package}\t${Status}\n"])
        .args(PACKAGES.iter().map(|(name, _)| *name))
        .probe_any_status()
        .context(
            "dpkg-query is missing: this is not a Debian system; install the packages by hand",
        )?;
    // dpkg-query exits 1 when a package is unknown; its stdout still lists the rest.
    let installed: Vec<&str> = stdout
        .lines()
        .filter_map(|line| {
            let (name, status) = line.split_once('\t')?;
            let words: Vec<&str> = status.split_whitespace().collect();
            (words.get(1) == Some(&"ok") && words.get(2) == Some(&"installed")).then_some(name)
        })
        .collect();
    Ok(PACKAGES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !installed.contains(name))
        .collect())
}

pub(super) fn packages(root: bool) -> Result<Outcome> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        return Ok(Outcome::Ok(format!("{} installed", PACKAGES.len())));
    }
    let why = |name: &str| {
        PACKAGES
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, why)| *why)
    };
    if !root {
        return Ok(Outcome::Skipped(format!(
            "missing {} and apt-get needs root: run `cargo xtask setup` as root",
            missing.join(", ")
        )));
    }
    for name in &missing {
        eprintln!("          installing {name}: {}", why(name));
    }
    let apt = |args: &[&str]| {
        Cmd::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-o", "DPkg::Lock::Timeout=120"])
            .args(args)
    };
    apt(&["update"]).run_with_retries(RETRIES).context(
        "`apt-get update` failed; check /etc/apt/sources.list* and the network path to the mirror",
    )?;
    let install = apt(&[
        "install",
        "-y",
        "--no-install-recommends",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    ])
    .args(&missing)
    .run_with_retries(RETRIES);
    let still_missing = missing_packages()?;
    match install {
        Ok(()) if still_missing.is_empty() => Ok(Outcome::Installed(missing.join(", "))),
        Ok(()) => bail!(
            "apt-get succeeded but {} still not installed; try `apt-get install {}` by hand",
            still_missing.join(", "),
            still_missing.join(" ")
        ),
        Err(e) => Err(e.context(format!(
            "could not install {}; apt-get's messages above say why (a mirror refusing a file \
             usually passes after a while: re-run `cargo xtask setup`)",
            still_missing.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_list_has_no_duplicates() {
        let mut names: Vec<&str> = PACKAGES.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PACKAGES.len());
    }
}
