//! `netwatch check`: can this host run netwatch, and can it guard the
//! networks this host has?

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::OutputFormat;
use crate::{
    datapath::{Datapath, LoadOptions},
    docker::{Client, Inventory},
    guard, host,
};

/// One line of the report.
#[derive(Serialize)]
struct Finding {
    check: String,
    /// `result` is not `fail`.
    ok: bool,
    /// `ok`, `warn` (netwatch runs, but something is not guarded) or
    /// `fail`.
    result: &'static str,
    detail: String,
}

impl Finding {
    fn new(check: &str, ok: bool, detail: String) -> Finding {
        Finding {
            check: check.to_owned(),
            ok,
            result: if ok { "ok" } else { "fail" },
            detail,
        }
    }

    fn warn(check: &str, detail: String) -> Finding {
        Finding {
            check: check.to_owned(),
            ok: true,
            result: "warn",
            detail,
        }
    }
}

/// How long `check` waits for Docker.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(10);

/// One finding per network driver this host has networks of: `ok` where
/// netwatch has a hook, `warn` where it has none but no network of that
/// driver asks to deny anything, `fail` where an internal or egress-denied
/// network of that driver cannot be guarded.
fn driver_findings(inventory: &Inventory) -> Vec<Finding> {
    let mut by_driver: BTreeMap<&str, (usize, Vec<&str>)> = BTreeMap::new();
    for network in &inventory.networks {
        let entry = by_driver.entry(network.driver.as_str()).or_default();
        entry.0 += 1;
        if guard::denied_by(network).is_some() {
            entry.1.push(network.name.as_str());
        }
    }
    by_driver
        .into_iter()
        .map(|(driver, (count, denied))| {
            let check = format!("driver {driver}");
            let networks = if count == 1 {
                "1 network".to_owned()
            } else {
                format!("{count} networks")
            };
            match guard::driver_hook(driver) {
                Ok(hook) => Finding::new(&check, true, format!("{networks}: guarded at {hook}")),
                Err(why) if denied.is_empty() => Finding::warn(
                    &check,
                    format!("{networks}, none internal: unguarded: {why}"),
                ),
                Err(why) => Finding::new(
                    &check,
                    false,
                    format!(
                        "{networks}; internal or egress-denied and NOT guarded: {}: {why}",
                        denied.join(", ")
                    ),
                ),
            }
        })
        .collect()
}

/// Runs every check; exits non-zero when one fails.
///
/// # Errors
/// Only when the report cannot be printed.
pub fn run(output: OutputFormat) -> Result<ExitCode> {
    let mut findings = Vec::new();
    let root = host::is_root();
    findings.push(Finding::new(
        "root",
        root,
        if root {
            "running as root".into()
        } else {
            "netwatch loads BPF programs: run it as root (sudo netwatch check)".into()
        },
    ));
    let kernel = host::kernel_release();
    let tcx = kernel.as_ref().is_some_and(|k| k.at_least(6, 6));
    findings.push(Finding::new(
        "kernel",
        tcx,
        match &kernel {
            Some(k) if tcx => format!("Linux {k}: TCX attachments available"),
            Some(k) => format!("Linux {k}: netwatch needs Linux 6.6 or newer (TCX)"),
            None => "cannot read /proc/sys/kernel/osrelease".into(),
        },
    ));
    let btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    findings.push(Finding::new(
        "btf",
        btf,
        if btf {
            "/sys/kernel/btf/vmlinux present".into()
        } else {
            "no kernel BTF at /sys/kernel/btf/vmlinux: use a kernel built with CONFIG_DEBUG_INFO_BTF".into()
        },
    ));
    let bpffs = host::bpffs_mounted();
    findings.push(Finding::new(
        "bpffs",
        bpffs,
        if bpffs {
            "mounted at /sys/fs/bpf (pins survive the agent)".into()
        } else {
            "not mounted: run `mount -t bpf bpf /sys/fs/bpf`".into()
        },
    ));
    if root {
        match Datapath::load(&LoadOptions::default()) {
            Ok(datapath) => {
                findings.push(Finding::new(
                    "programs",
                    true,
                    "the verifier accepted from_container, to_container and uplink".to_string(),
                ));
                findings.push(match datapath.macvlan_support() {
                    Ok(()) => Finding::new(
                        "macvlan",
                        true,
                        "the verifier accepted macvlan_parent and macvlan_child".to_string(),
                    ),
                    Err(why) => {
                        Finding::warn("macvlan", format!("{why}: macvlan networks stay unguarded"))
                    }
                });
            }
            Err(e) => findings.push(Finding::new("programs", false, e.to_string())),
        }
    }
    let inventory = super::block_on(async {
        match tokio::time::timeout(DOCKER_TIMEOUT, async {
            let client = Client::connect().await?;
            Ok::<_, anyhow::Error>(Inventory::load(&client).await?)
        })
        .await
        {
            Ok(result) => result,
            Err(_) => anyhow::bail!(
                "Docker did not answer within {} s",
                DOCKER_TIMEOUT.as_secs()
            ),
        }
    });
    match inventory {
        Ok(inventory) => findings.extend(driver_findings(&inventory)),
        Err(e) => findings.push(Finding::warn(
            "docker",
            format!(
                "{}; the network drivers were not checked",
                super::one_line(&e)
            ),
        )),
    }
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&findings)?),
        OutputFormat::Table => {
            let width = findings.iter().map(|f| f.check.len()).max().unwrap_or(0);
            println!("{:<width$} {:<6} DETAIL", "CHECK", "RESULT");
            for f in &findings {
                let result = if f.ok { f.result } else { "FAIL" };
                println!("{:<width$} {:<6} {}", f.check, result, f.detail);
            }
        }
    }
    Ok(if findings.iter().all(|f| f.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Check that this host can run netwatch: root, kernel version and
/// features, bpffs, and that the kernel's verifier accepts every
/// netwatch program. Loads the programs, attaches nothing, and unloads
/// them on exit.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = super::OutputFormat::Table)]
    pub output: super::OutputFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_driver_says_whether_it_is_guarded_and_an_internal_unguardable_network_fails() {
        let mut inventory = crate::docker::captured::inventory(&[]);
        let lines = |inventory: &Inventory| -> Vec<(String, &'static str)> {
            driver_findings(inventory)
                .into_iter()
                .map(|f| (f.check, f.result))
                .collect()
        };
        assert_eq!(
            lines(&inventory),
            [
                ("driver bridge".to_owned(), "ok"),
                ("driver host".to_owned(), "warn"),
                ("driver null".to_owned(), "warn"),
            ]
        );
        // nwcap-back is internal: as an ipvlan network it cannot be guarded.
        let back = inventory
            .networks
            .iter_mut()
            .find(|n| n.name == "nwcap-back")
            .unwrap();
        back.driver = "ipvlan".into();
        let findings = driver_findings(&inventory);
        let ipvlan = findings
            .iter()
            .find(|f| f.check == "driver ipvlan")
            .unwrap();
        assert_eq!(ipvlan.result, "fail");
        assert!(!ipvlan.ok);
        assert!(
            ipvlan.detail.starts_with(
                "1 network; internal or egress-denied and NOT guarded: nwcap-back: ipvlan: "
            ),
            "{}",
            ipvlan.detail
        );
    }

    #[test]
    fn captured_overlay_and_macvlan_networks_have_hooks_and_unhooked_drivers_warn() {
        let findings = driver_findings(&crate::docker::captured::drivers::full_inventory());
        let lines: Vec<(&str, &str)> = findings
            .iter()
            .map(|f| (f.check.as_str(), f.result))
            .collect();
        assert_eq!(
            lines,
            [
                ("driver bridge", "ok"),
                ("driver host", "warn"),
                ("driver ipvlan", "warn"),
                ("driver macvlan", "ok"),
                ("driver null", "warn"),
                ("driver overlay", "ok"),
            ]
        );
        let detail = |check: &str| {
            let finding = findings.iter().find(|f| f.check == check).unwrap();
            assert_eq!(finding.ok, finding.result != "fail", "{check}");
            finding.detail.clone()
        };
        for (check, expected) in [
            (
                "driver macvlan",
                "3 networks: guarded at the parent device's egress",
            ),
            (
                "driver overlay",
                "3 networks: guarded at each container's veth where it ends in the overlay's \
                 sandbox namespace",
            ),
            (
                "driver ipvlan",
                "1 network, none internal: unguarded: ipvlan: ",
            ),
            ("driver bridge", "2 networks: guarded at "),
        ] {
            let detail = detail(check);
            assert!(detail.starts_with(expected), "{check}: {detail}");
        }
    }
}
