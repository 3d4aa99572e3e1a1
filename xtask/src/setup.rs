//! `cargo xtask setup`: install what building and testing netwatch needs.
//!
//! Idempotent, and cheap when everything is present (a handful of probes,
//! well under 2 s), so `build`, `test`, `bench` and `run` call it every time
//! in quiet mode: it prints nothing but a summary unless it has work to do.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd::Cmd;
use crate::host;

/// bpf-linker release to build; 0.13.0 offers the `llvm-21`, `llvm-22` and
/// `llvm-23` features.
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_MAJORS: std::ops::RangeInclusive<u32> = 21..=23;

/// How often a step that talks to a mirror or crates.io is retried after its
/// first attempt fails (with 2 s, 4 s, 8 s backoff).
const RETRIES: u32 = 3;

/// TCX needs Linux 6.6; older kernels get netlink clsact (see DESIGN.md).
const TCX_KERNEL: (u32, u32) = (6, 6);

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
    // `dpkg-deb -c/-x` checks the contents of the .deb.
    ("dpkg", "dpkg-deb to check the .deb's contents"),
    // Its /usr/bin/promtool checks deploy/'s scrape config and alert rules,
    // and lints a live agent's /metrics (the deploy_configs test).
    (
        "prometheus",
        "promtool for deploy/'s Prometheus files and the metrics lint",
    ),
];

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

enum Outcome {
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

fn nightly_toolchain() -> Result<Outcome> {
    let list = Cmd::new("rustup")
        .args(["toolchain", "list"])
        .probe()
        .context("cannot list rustup toolchains (rustup comes from https://rustup.rs)")?;
    // `nightly-<host>`, possibly followed by "(default)"; a dated
    // `nightly-2026-…` is a different toolchain from `+nightly`'s.
    let found = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .find(|name| {
            name.strip_prefix("nightly-")
                .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
        });
    if let Some(name) = found {
        return Ok(Outcome::Ok(name.to_owned()));
    }
    Cmd::new("rustup")
        .args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ])
        .run_with_retries(RETRIES)
        .context("installing the nightly toolchain failed; check access to static.rust-lang.org")?;
    Ok(Outcome::Installed("nightly (with rust-src)".into()))
}

fn rust_src() -> Result<Outcome> {
    let installed = Cmd::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .probe()?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        return Ok(Outcome::Ok("installed".into()));
    }
    Cmd::new("rustup")
        .args(["component", "add", "rust-src", "--toolchain", "nightly"])
        .run_with_retries(RETRIES)
        .context("adding rust-src to nightly failed; check access to static.rust-lang.org")?;
    Ok(Outcome::Installed("rust-src for nightly".into()))
}

/// The LLVM major of `rustc +nightly -vV` ("LLVM version: 22.1.4" → 22).
fn llvm_major(version_verbose: &str) -> Result<u32> {
    version_verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next())
        .and_then(|major| major.parse().ok())
        .ok_or_else(|| anyhow!("no `LLVM version: N.…` line in `rustc +nightly -vV`"))
}

/// The nightly's own libLLVM, e.g. `<sysroot>/lib/libLLVM.so.22.1-rust-1.97.0-nightly`.
fn find_libllvm(sysroot_lib: &Path, major: u32) -> Result<PathBuf> {
    let prefix = format!("libLLVM.so.{major}");
    let mut found: Vec<PathBuf> = fs::read_dir(sysroot_lib)
        .with_context(|| format!("reading {}", sysroot_lib.display()))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix(&prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
        .map(|entry| entry.path())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        anyhow!(
            "the nightly ships no {prefix}* in {}; reinstall it with \
             `rustup toolchain uninstall nightly && rustup toolchain install nightly`",
            sysroot_lib.display()
        )
    })
}

/// Make `lib` hold exactly two links to `libllvm`: `libLLVM.so` (what the
/// linker looks for) and one named like the file (what the built binary's
/// NEEDED entry names and finds through its rpath). Stale `libLLVM*` links
/// from an earlier nightly are removed.
fn link_libllvm(lib: &Path, libllvm: &Path) -> Result<()> {
    fs::create_dir_all(lib).with_context(|| format!("creating {}", lib.display()))?;
    let file_name = libllvm
        .file_name()
        .context("libLLVM path has no file name")?;
    let wanted = [std::ffi::OsStr::new("libLLVM.so"), file_name];
    for entry in fs::read_dir(lib)? {
        let entry = entry?;
        let name = entry.file_name();
        let is_link = entry.file_type()?.is_symlink();
        if is_link
            && name.to_string_lossy().starts_with("libLLVM")
            && !wanted.contains(&name.as_os_str())
        {
            fs::remove_file(entry.path())?;
        }
    }
    for name in wanted {
        let link = lib.join(name);
        match fs::read_link(&link) {
            Ok(target) if target == libllvm => continue,
            Ok(_) => fs::remove_file(&link)?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("{} exists and is not a link", link.display()));
            }
        }
        symlink(libllvm, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), libllvm.display()))?;
    }
    Ok(())
}

/// cargo-deb release that `cargo xtask dist` builds the .deb with.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// cargo-deb, for the .deb of `cargo xtask dist` (and the test command,
/// which builds and checks that package).
fn cargo_deb() -> Result<Outcome> {
    cargo_subcommand("deb", CARGO_DEB_VERSION)
}

/// cargo-fuzz release the fuzz stage of the test command uses.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-fuzz, for the bounded fuzz runs of the test command (`fuzz/`).
fn cargo_fuzz() -> Result<Outcome> {
    cargo_subcommand("fuzz", CARGO_FUZZ_VERSION)
}

/// `cargo-<name>` at `version` from crates.io, installed (retried) unless
/// `cargo <name> --version` already reports it.
fn cargo_subcommand(name: &str, version: &str) -> Result<Outcome> {
    let krate = format!("cargo-{name}");
    let installed = || {
        Cmd::new("cargo")
            .args([name, "--version"])
            .probe()
            .is_ok_and(|out| out.contains(version))
    };
    if installed() {
        return Ok(Outcome::Ok(format!("{krate} {version}")));
    }
    eprintln!("          {krate}: building {version} (1-3 minutes)");
    Cmd::new("cargo")
        .args([
            "install",
            &krate,
            "--version",
            version,
            "--locked",
            "--force",
        ])
        // Outside the workspace, so its .cargo/config.toml cannot interfere.
        .dir(host::home()?)
        .run_with_retries(RETRIES)
        .with_context(|| format!("building {krate} failed; see cargo's output above"))?;
    if !installed() {
        bail!("the freshly built {krate} does not report version {version}");
    }
    Ok(Outcome::Installed(format!("{krate} {version}")))
}

fn bpf_linker() -> Result<Outcome> {
    let version = Cmd::new("rustc").args(["+nightly", "-vV"]).probe()?;
    let major = llvm_major(&version)?;
    if !BPF_LINKER_LLVM_MAJORS.contains(&major) {
        bail!(
            "the nightly uses LLVM {major} but bpf-linker {BPF_LINKER_VERSION} supports LLVM {}-{}: \
             install a nightly with a supported LLVM or move BPF_LINKER_VERSION in xtask/src/setup.rs",
            BPF_LINKER_LLVM_MAJORS.start(),
            BPF_LINKER_LLVM_MAJORS.end()
        );
    }
    let sysroot = Cmd::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .probe()?;
    let libllvm = find_libllvm(&Path::new(sysroot.trim()).join("lib"), major)?;
    let file_name = libllvm
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();

    let cache = host::cache_dir()?;
    let prefix = cache.join(format!("llvm-{major}"));
    link_libllvm(&prefix.join("lib"), &libllvm)?;

    let stamp_path = cache.join("bpf-linker.stamp");
    let stamp = format!(
        "bpf-linker {BPF_LINKER_VERSION} --features llvm-{major}\nLLVM_PREFIX={}\nlibLLVM={}\n",
        prefix.display(),
        libllvm.display()
    );
    let binary = host::cargo_home()?.join("bin").join("bpf-linker");
    let version_ok = || {
        Cmd::new(&binary)
            .arg("--version")
            .probe()
            .map(|out| out.contains(BPF_LINKER_VERSION))
    };

    let rebuild_because = if !binary.is_file() {
        Some("not installed".to_owned())
    } else if fs::read_to_string(&stamp_path).ok().as_deref() != Some(stamp.as_str()) {
        Some(format!(
            "{} missing or built for another libLLVM",
            stamp_path.display()
        ))
    } else {
        match version_ok() {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "`bpf-linker --version` is not {BPF_LINKER_VERSION}"
            )),
            Err(e) => Some(format!("{e:#}")),
        }
    };

    let outcome = if let Some(reason) = rebuild_because {
        eprintln!("          bpf-linker: {reason}; building it against {file_name} (1-2 minutes)");
        Cmd::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--force",
                "--locked",
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            // Outside the workspace, so its .cargo/config.toml cannot interfere.
            .dir(host::home()?)
            .run_with_retries(RETRIES)
            .context("building bpf-linker failed; see cargo's output above")?;
        if !version_ok().context("the freshly built bpf-linker does not run")? {
            bail!("the freshly built bpf-linker does not report version {BPF_LINKER_VERSION}");
        }
        fs::create_dir_all(&cache)?;
        fs::write(&stamp_path, &stamp)
            .with_context(|| format!("writing {}", stamp_path.display()))?;
        Outcome::Installed(format!(
            "bpf-linker {BPF_LINKER_VERSION} for LLVM {major} ({file_name})"
        ))
    } else {
        Outcome::Ok(format!(
            "{BPF_LINKER_VERSION} for LLVM {major} ({file_name})"
        ))
    };

    // aya-build runs `bpf-linker` from PATH.
    match host::which("bpf-linker") {
        None => bail!(
            "{} is not on PATH, and the eBPF build runs `bpf-linker` from PATH: \
             export PATH=\"{}:$PATH\"",
            binary.display(),
            binary.parent().unwrap_or(Path::new("")).display()
        ),
        Some(first) if fs::canonicalize(&first).ok() != fs::canonicalize(&binary).ok() => {
            eprintln!(
                "warning   bpf-linker: PATH finds {} before {}; the eBPF build will use that one",
                first.display(),
                binary.display()
            );
            Ok(outcome)
        }
        Some(_) => Ok(outcome),
    }
}

fn bpffs_mounted() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    Ok(mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"/sys/fs/bpf") && fields.get(2) == Some(&"bpf")
    }))
}

fn bpffs(root: bool) -> Result<Outcome> {
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

fn packages(root: bool) -> Result<Outcome> {
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

/// Where a dockerd that setup starts writes its log.
const DOCKERD_LOG: &str = "/tmp/netwatch-dockerd.log";

/// How long setup waits for a dockerd it started to answer.
const DOCKERD_WAIT: Duration = Duration::from_secs(30);

/// The image the Docker tests run (`tests/src/docker.rs` names it too).
const TEST_IMAGE: &str = "netwatch-test:busybox";

/// The busybox applets the test image links (busybox-static's /bin/busybox).
const TEST_IMAGE_APPLETS: &[&str] = &["sh", "nc", "ping", "ip", "sleep", "cat", "echo"];

/// dockerd's version, when it answers.
fn docker_server() -> Result<String> {
    let version = Cmd::new("docker")
        .args([
            "version",
            "--format",
            "{{.Server.Version}} (API {{.Server.APIVersion}})",
        ])
        .probe()?;
    Ok(version.trim().to_owned())
}

/// Make sure dockerd answers. When it does not, start `dockerd` itself in
/// the background (not through its service: on these machines
/// /usr/sbin/policy-rc.d forbids starting services, and there may be no
/// systemd), in its own process group so that ^C on a test run does not
/// stop it, and wait for it to answer.
///
/// One failure is repaired: dockerd 20.10.24 (Debian's) panics at startup
/// in libnetwork's `reservePools` when its network store holds a network
/// without IPAM data, which is what a dockerd killed while creating a
/// network leaves (moby#45057, fixed upstream after 20.10.24). Nothing but
/// moving the store aside lets it start again, so setup does that — keeping
/// the old store next to it — and says which networks were in it.
fn dockerd(root: bool) -> Result<Outcome> {
    let not_answering = match docker_server() {
        Ok(version) => return Ok(Outcome::Ok(format!("running, Docker {version}"))),
        Err(e) => format!("{e:#}"),
    };
    if !root {
        return Ok(Outcome::Skipped(format!(
            "dockerd does not answer ({not_answering}) and starting it needs root: \
             run `cargo xtask setup` as root"
        )));
    }
    let dockerd = host::which("dockerd")
        .or_else(|| Some(PathBuf::from("/usr/sbin/dockerd")).filter(|p| p.is_file()))
        .context(
            "dockerd does not answer and there is no dockerd binary; `apt-get install docker.io`",
        )?;
    match start_dockerd(&dockerd)? {
        DockerdStart::Answering(outcome) => Ok(outcome),
        DockerdStart::Exited(status) if network_store_panic() => {
            let moved = move_network_store_aside()?;
            eprintln!(
                "dockerd panicked restoring its network store (moby#45057: a network left \
                 half-created by a killed dockerd); moved it to {} — networks it held: {}; \
                 starting dockerd again",
                moved.display(),
                store_network_names(&moved).join(", ")
            );
            remove_orphans_of(&moved);
            match start_dockerd(&dockerd)? {
                DockerdStart::Answering(outcome) => Ok(outcome),
                DockerdStart::Exited(again) => bail!(
                    "dockerd exited ({status}), and again ({again}) with a fresh network \
                     store; its log is {DOCKERD_LOG}"
                ),
            }
        }
        DockerdStart::Exited(status) => {
            bail!("dockerd exited ({status}) right after starting; its log is {DOCKERD_LOG}")
        }
    }
}

/// libnetwork's persistent store of networks and endpoints.
const DOCKER_NETWORK_STORE: &str = "/var/lib/docker/network/files/local-kv.db";

enum DockerdStart {
    Answering(Outcome),
    Exited(std::process::ExitStatus),
}

/// Starts dockerd and waits for it to answer or exit.
fn start_dockerd(dockerd: &Path) -> Result<DockerdStart> {
    let log = fs::File::create(DOCKERD_LOG).with_context(|| format!("creating {DOCKERD_LOG}"))?;
    eprintln!("+ {} >{DOCKERD_LOG} 2>&1 &", dockerd.display());
    let mut child = Command::new(dockerd)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("could not start {}", dockerd.display()))?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(DockerdStart::Exited(status));
        }
        if let Ok(version) = docker_server() {
            return Ok(DockerdStart::Answering(Outcome::Installed(format!(
                "started dockerd (pid {}) after {}, Docker {version}; log in {DOCKERD_LOG}",
                child.id(),
                host::secs(start.elapsed())
            ))));
        }
        if start.elapsed() > DOCKERD_WAIT {
            // Do not leave a half-started daemon holding its pid file.
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "dockerd did not answer within {} s, so it was stopped; see why in {DOCKERD_LOG}",
                DOCKERD_WAIT.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Whether the dockerd that just exited died of moby#45057.
fn network_store_panic() -> bool {
    fs::read_to_string(DOCKERD_LOG).is_ok_and(|log| is_network_store_panic(&log))
}

fn is_network_store_panic(log: &str) -> bool {
    log.contains("panic: runtime error: index out of range")
        && log.contains("libnetwork.(*controller).reservePools")
}

/// Renames the network store to `local-kv.db.netwatch-moved-<unix time>`.
fn move_network_store_aside() -> Result<PathBuf> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let moved = PathBuf::from(format!(
        "{DOCKER_NETWORK_STORE}.netwatch-moved-{since_epoch}"
    ));
    fs::rename(DOCKER_NETWORK_STORE, &moved).with_context(|| {
        format!(
            "dockerd cannot start with its network store {DOCKER_NETWORK_STORE} \
             (moby#45057) and moving it aside failed"
        )
    })?;
    Ok(moved)
}

/// What the networks and sandboxes of a moved-aside store left on the host:
/// no dockerd will ever delete them, since the new store does not know them
/// (and dockerd was not running, so no container uses them). Their bridges
/// (`br-` + the first 12 hex digits of the network id) still hold the old
/// subnets' routes; the sandboxes' namespaces, bind-mounted under
/// /run/docker/netns, keep the containers' veths alive.
///
/// Their iptables rules go too: a stale `POSTROUTING -s <subnet> ! -o
/// br-<old> -j MASQUERADE` rewrites the source of every packet bridged
/// inside a new network that gets the same subnet (br_netfilter sends
/// bridged packets through iptables), so containers see each other as the
/// gateway.
fn remove_orphans_of(store: &Path) {
    let mut bridges = Vec::new();
    for id in store_values(store, "id") {
        let is_network_id = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
        if is_network_id {
            bridges.push(format!("br-{}", &id[..12]));
        }
    }
    for bridge in &bridges {
        if Path::new("/sys/class/net").join(bridge).exists() {
            eprintln!("+ ip link del {bridge}   (bridge of a network in the moved store)");
            if let Err(e) = Cmd::new("ip").args(["link", "del", bridge]).probe() {
                eprintln!("could not delete {bridge}: {e:#}");
            }
        }
    }
    delete_rules_naming(&bridges);
    let sandboxes = Path::new("/run/docker/netns");
    for entry in fs::read_dir(sandboxes).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_name() == "default" {
            continue;
        }
        // Unmounting drops the namespace (and with it the veth end in it);
        // a file that was never mounted is just removed.
        let _ = Cmd::new("umount").arg(path.as_os_str()).probe();
        let _ = fs::remove_file(&path);
    }
}

/// Deletes every iptables and ip6tables rule that names one of
/// `interfaces`; returns how many.
fn delete_rules_naming(interfaces: &[String]) -> usize {
    let mut deleted = 0;
    for (tool, save) in [
        ("iptables", "iptables-save"),
        ("ip6tables", "ip6tables-save"),
    ] {
        let Ok(rules) = Cmd::new(save).probe() else {
            continue;
        };
        for (table, rule) in rules_naming(&rules, interfaces) {
            eprintln!("+ {tool} -t {table} -D {rule}");
            let args: Vec<&str> = rule.split_whitespace().collect();
            match Cmd::new(tool).args(["-t", &table, "-D"]).args(args).probe() {
                Ok(_) => deleted += 1,
                Err(e) => eprintln!("could not delete the rule: {e:#}"),
            }
        }
    }
    deleted
}

/// Docker's rules for bridges that no longer exist: a dockerd killed (or a
/// private test daemon stopped) before it removed a network's rules leaves
/// them, and a stale `POSTROUTING -s <subnet> ! -o br-<gone> -j MASQUERADE`
/// rewrites the source of every packet bridged inside any later network
/// with that subnet (br_netfilter sends bridged packets through iptables):
/// containers then see each other as the gateway. Docker writes a bridge's
/// rules after creating it and removes them before deleting it, so with no
/// network being made, a rule naming a missing `br-…` is stale.
fn stale_bridge_rules() -> Result<Outcome> {
    let missing = missing_bridges_in_rules();
    if missing.is_empty() {
        return Ok(Outcome::Ok("no rules for missing bridges".into()));
    }
    let deleted = delete_rules_naming(&missing);
    Ok(Outcome::Installed(format!(
        "deleted {deleted} iptables rules of bridges that no longer exist: {}",
        missing.join(", ")
    )))
}

/// The Docker bridges (`br-…`) that iptables or ip6tables rules name but
/// that do not exist, sorted, once each.
pub fn missing_bridges_in_rules() -> Vec<String> {
    let dump = Cmd::new("iptables-save").probe().unwrap_or_default()
        + &Cmd::new("ip6tables-save").probe().unwrap_or_default();
    let mut missing: Vec<String> = dump
        .split_whitespace()
        .filter(|word| is_docker_bridge_name(word))
        .filter(|name| !Path::new("/sys/class/net").join(name).exists())
        .map(str::to_owned)
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// `br-` and 12 hex digits: the bridge of a user-defined Docker network.
fn is_docker_bridge_name(word: &str) -> bool {
    word.strip_prefix("br-")
        .is_some_and(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The rules of an `iptables-save` dump that name one of `interfaces`, as
/// (table, rule without its `-A`): what `iptables -t table -D rule` takes.
fn rules_naming(dump: &str, interfaces: &[String]) -> Vec<(String, String)> {
    let mut table = String::new();
    let mut rules = Vec::new();
    for line in dump.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = name.trim().to_owned();
        } else if let Some(rule) = line.strip_prefix("-A ")
            && rule
                .split_whitespace()
                .any(|word| interfaces.iter().any(|i| i == word))
        {
            rules.push((table.clone(), rule.to_owned()));
        }
    }
    rules
}

/// The network names a store mentions, for the message (the store is a
/// bbolt file of JSON values; a name we cannot read is simply not listed).
fn store_network_names(store: &Path) -> Vec<String> {
    store_values(store, "name")
}

/// Every string value of `key` in a store's JSON values, sorted, once each.
fn store_values(store: &Path, key: &str) -> Vec<String> {
    let bytes = fs::read(store).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let needle = format!("\"{key}\":\"");
    let mut names: Vec<String> = text
        .match_indices(&needle)
        .filter_map(|(at, key)| {
            let rest = &text[at + key.len()..];
            let name = &rest[..rest.find('"')?];
            (!name.is_empty() && name.len() < 256).then(|| name.to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Make sure the image the Docker tests run exists: no image can be pulled
/// here, so it is imported from a rootfs holding busybox-static's
/// /bin/busybox and links for the applets the tests use.
fn test_image() -> Result<Outcome> {
    let present = Cmd::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", TEST_IMAGE])
        .probe();
    if present.is_ok() {
        return Ok(Outcome::Ok(format!("{TEST_IMAGE} present")));
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        bail!("building {TEST_IMAGE} needs /bin/busybox: `apt-get install busybox-static`");
    }
    let work = std::env::temp_dir().join(format!("netwatch-test-image-{}", std::process::id()));
    let result = build_test_image(busybox, &work);
    let _ = fs::remove_dir_all(&work);
    result?;
    Ok(Outcome::Installed(format!(
        "imported {TEST_IMAGE} (busybox-static: {})",
        TEST_IMAGE_APPLETS.join(", ")
    )))
}

fn build_test_image(busybox: &Path, work: &Path) -> Result<()> {
    let rootfs = work.join("rootfs");
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    fs::copy(busybox, bin.join("busybox"))
        .with_context(|| format!("copying {}", busybox.display()))?;
    for applet in TEST_IMAGE_APPLETS {
        symlink("busybox", bin.join(applet))?;
    }
    let tarball = work.join("rootfs.tar");
    Cmd::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .run()?;
    Cmd::new("docker")
        .args(["import", "--change", r#"CMD ["/bin/sh"]"#])
        .args(["--message", "netwatch test image: Debian busybox-static"])
        .arg(&tarball)
        .arg(TEST_IMAGE)
        .run()?;
    // A dynamically linked busybox would import fine and fail in every
    // test: check, and do not leave a broken image that looks present.
    let check = Cmd::new("docker")
        .args(["run", "--rm", "--network", "none", TEST_IMAGE, "echo", "ok"])
        .run();
    if let Err(e) = check {
        let _ = Cmd::new("docker").args(["rmi", TEST_IMAGE]).run();
        return Err(e.context(format!(
            "{TEST_IMAGE} does not run; is /bin/busybox the static one (busybox-static)?"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustc_version() {
        let vv =
            "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(vv).unwrap(), 22);
        assert!(llvm_major("rustc 1.97.0\n").is_err());
    }

    #[test]
    fn package_list_has_no_duplicates() {
        let mut names: Vec<&str> = PACKAGES.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PACKAGES.len());
    }

    #[test]
    fn recognises_the_network_store_panic_of_a_killed_dockerd() {
        let log = "level=info msg=\"Starting up\"\n\
                   panic: runtime error: index out of range [0] with length 0\n\n\
                   goroutine 1 [running]:\n\
                   github.com/docker/libnetwork.(*controller).reservePools(0x55aa5695ce70?)\n";
        assert!(is_network_store_panic(log));
        assert!(!is_network_store_panic(
            "level=fatal msg=\"failed to start daemon: pid file found\""
        ));
        assert!(!is_network_store_panic(
            "panic: runtime error: index out of range [0] with length 0\nmain.main()"
        ));
    }

    #[test]
    fn finds_the_rules_of_removed_bridges_in_an_iptables_dump() {
        let dump = "# Generated by iptables-save\n*filter\n:FORWARD DROP [0:0]\n\
                    -A FORWARD -o br-76c11a802abb -j DOCKER\n\
                    -A FORWARD -o br-76c11a802abbX -j DOCKER\n\
                    -A FORWARD -o docker0 -j DOCKER\nCOMMIT\n*nat\n\
                    -A POSTROUTING -s 172.27.0.0/16 ! -o br-76c11a802abb -j MASQUERADE\nCOMMIT\n";
        let rules = rules_naming(dump, &["br-76c11a802abb".to_owned()]);
        assert_eq!(
            rules,
            [
                (
                    "filter".to_owned(),
                    "FORWARD -o br-76c11a802abb -j DOCKER".to_owned()
                ),
                (
                    "nat".to_owned(),
                    "POSTROUTING -s 172.27.0.0/16 ! -o br-76c11a802abb -j MASQUERADE".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn docker_bridge_names_are_br_and_twelve_hex_digits() {
        assert!(is_docker_bridge_name("br-a26ad16a8b5c"));
        assert!(!is_docker_bridge_name("br-a26ad16a8b5"));
        assert!(!is_docker_bridge_name("br-a26ad16a8b5cX"));
        assert!(!is_docker_bridge_name("docker0"));
        assert!(!is_docker_bridge_name("br-lan"));
    }

    #[test]
    fn lists_the_networks_a_moved_store_held() {
        let dir = std::env::temp_dir().join(format!("xtask-store-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let store = dir.join("local-kv.db");
        let mut bytes = b"\0\x01bolt{\"id\":\"ab\",\"name\":\"nwtest-1-a\",\"x\":1}".to_vec();
        bytes
            .extend_from_slice(b"\xff\0{\"name\":\"bridge\"}{\"name\":\"nwtest-1-a\"}{\"name\":\"");
        fs::write(&store, bytes).unwrap();
        let names = store_network_names(&store);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names, ["bridge", "nwtest-1-a"]);
    }
}
