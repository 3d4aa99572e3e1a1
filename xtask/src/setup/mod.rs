//! `cargo xtask setup`: install what building and testing netwatch needs.
//!
//! Idempotent, and cheap when everything is present (a handful of probes,
//! well under 2 s), so `build`, `test`, `bench` and `run` call it every time
//! in quiet mode: it prints nothing but a summary unless it has work to do.
//!
//! One file per kind of step: [`toolchain`] (nightly, rust-src, bpf-linker,
//! cargo-deb, cargo-fuzz), [`packages`] (bpffs and the Debian packages) and
//! [`dockerd`] (dockerd, its repair, the test image, stale bridge rules).

mod dockerd;
mod packages;
mod toolchain;

use std::fs;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::host;

pub use dockerd::missing_bridges_in_rules;
use dockerd::{dockerd, stale_bridge_rules, test_image};
use packages::{bpffs, packages};
use toolchain::{bpf_linker, cargo_deb, cargo_fuzz, nightly_toolchain, rust_src};

/// How often a step that talks to a mirror or crates.io is retried after its
/// first attempt fails (with 2 s, 4 s, 8 s backoff).
const RETRIES: u32 = 3;

/// TCX needs Linux 6.6; older kernels get netlink clsact (see DESIGN.md).
const TCX_KERNEL: (u32, u32) = (6, 6);

/// Which steps a caller needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Toolchain pieces only (`build`, `run`): no root needed.
    Build,
    /// The toolchain and cargo-deb (`dist`): no root needed.
    Dist,
    /// Everything (`setup`, `test`, `bench`).
    Full,
}

pub(super) enum Outcome {
    Ok(String),
    Installed(String),
    Warning(String),
    /// Required but not done because we are not root.
    Skipped(String),
}

struct Report {
    quiet: bool,
    failed: Vec<&'static str>,
    installed: usize,
}

impl Report {
    fn record(&mut self, step: &'static str, result: Result<Outcome>) {
        let (status, detail) = match result {
            Ok(Outcome::Ok(detail)) => {
                if self.quiet {
                    return;
                }
                ("ok", detail)
            }
            Ok(Outcome::Installed(detail)) => {
                self.installed += 1;
                ("installed", detail)
            }
            Ok(Outcome::Warning(detail)) => ("warning", detail),
            Ok(Outcome::Skipped(detail)) => {
                self.failed.push(step);
                ("SKIPPED", detail)
            }
            Err(e) => {
                self.failed.push(step);
                ("FAILED", format!("{e:#}"))
            }
        };
        eprintln!("{status:<9} {step}: {detail}");
    }
}

/// Run the setup steps for `scope`. With `quiet`, steps that are already
/// fine print nothing and a one-line summary closes the run.
///
/// # Errors
///
/// When a required step failed or was skipped for lack of root; each such
/// step has printed a line saying what to do.
pub fn run(scope: Scope, quiet: bool) -> Result<()> {
    let start = Instant::now();
    if std::env::consts::OS != "linux" {
        bail!(
            "netwatch needs Linux (eBPF, TCX, bpffs); this is {}",
            std::env::consts::OS
        );
    }
    let root = host::is_root()?;
    let mut report = Report {
        quiet,
        failed: Vec::new(),
        installed: 0,
    };

    report.record("platform", platform(root));
    if let Some(warning) = kernel_warning() {
        report.record("kernel", Ok(Outcome::Warning(warning)));
    }

    let nightly = nightly_toolchain();
    let have_nightly = nightly.is_ok();
    report.record("nightly toolchain", nightly);
    if have_nightly {
        report.record("rust-src (nightly)", rust_src());
        report.record("bpf-linker", bpf_linker());
        report.record("cargo-fuzz", cargo_fuzz());
    } else {
        for step in ["rust-src (nightly)", "bpf-linker", "cargo-fuzz"] {
            report.record(
                step,
                Ok(Outcome::Skipped("needs the nightly toolchain".into())),
            );
        }
    }

    if scope != Scope::Build {
        report.record("cargo-deb", cargo_deb());
    }
    if scope == Scope::Full {
        report.record("bpffs", bpffs(root));
        report.record("debian packages", packages(root));
        let dockerd = dockerd(root);
        let docker_up = matches!(dockerd, Ok(Outcome::Ok(_) | Outcome::Installed(_)));
        report.record("dockerd", dockerd);
        if docker_up {
            report.record("test image", test_image());
            report.record("stale bridge rules", stale_bridge_rules());
        } else {
            report.record("test image", Ok(Outcome::Skipped("needs dockerd".into())));
        }
    }

    let took = host::secs(start.elapsed());
    if !report.failed.is_empty() {
        bail!(
            "setup incomplete after {took}: {} (see the lines above for what to do)",
            report.failed.join(", ")
        );
    }
    match (quiet, report.installed) {
        (true, 0) => eprintln!("setup: everything present ({took})"),
        (_, 0) => eprintln!("setup: everything present, nothing installed ({took})"),
        (_, n) => eprintln!("setup: done, {n} step(s) installed something ({took})"),
    }
    Ok(())
}

fn platform(root: bool) -> Result<Outcome> {
    let kernel = kernel_release().unwrap_or_else(|_| "unknown".into());
    let arch = std::env::consts::ARCH;
    if root {
        Ok(Outcome::Ok(format!(
            "linux {arch}, kernel {kernel}, running as root"
        )))
    } else {
        // Not an error by itself: the root-only steps below say whether
        // they had anything to do.
        Ok(Outcome::Warning(format!(
            "linux {arch}, kernel {kernel}, not root (uid {}): the bpffs mount and \
             apt-get install steps can only check, not fix",
            host::euid()?
        )))
    }
}

fn kernel_release() -> Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_owned())
}

fn kernel_warning() -> Option<String> {
    let release = kernel_release().ok()?;
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    ((major, minor) < TCX_KERNEL).then(|| {
        format!(
            "kernel {release} predates TCX ({}.{}); netwatch falls back to clsact and \
             the TCX tests will fail",
            TCX_KERNEL.0, TCX_KERNEL.1
        )
    })
}
