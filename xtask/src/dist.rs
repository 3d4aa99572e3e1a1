//! `cargo xtask dist`: what an operator installs, in `<target>/dist/`.
//!
//! - `netwatch`: the release binary. Its kernel programs are embedded
//!   (`include_bytes_aligned!` of the object netwatch's build.rs builds with
//!   aya-build), so it runs on a host without any toolchain.
//! - `netwatch_<version>-1_<arch>.deb`, built by cargo-deb from
//!   `[package.metadata.deb]` in netwatch/Cargo.toml: the binary, the
//!   systemd unit with its maintainer scripts, /etc/default/netwatch,
//!   logrotate, completions and man pages.
//! - `netwatch.service`, `completions/` (bash, zsh, fish) and `man/`
//!   (generated from the clap definitions by the binary itself:
//!   `netwatch completion SHELL`, `netwatch man DIR`).
//!
//! [`check`] takes a built .deb apart and checks what it holds; the test
//! command runs it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail, ensure};

use crate::cmd::Cmd;
use crate::host;
use crate::setup::{self, Scope};

/// Where cargo puts its output (CARGO_TARGET_DIR or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| host::workspace_root().join("target"))
}

/// The systemd unit, as shipped.
pub fn unit_source() -> PathBuf {
    host::workspace_root()
        .join("dist")
        .join("systemd")
        .join("netwatch.service")
}

/// Shells that get a completion script, and its file name.
const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "netwatch.bash"),
    ("zsh", "_netwatch"),
    ("fish", "netwatch.fish"),
];

/// Builds everything into `<target>/dist/` and returns the .deb's path.
///
/// # Errors
/// Setup, the build, generating completions or man pages, or cargo-deb fails.
pub fn run() -> Result<PathBuf> {
    setup::run(Scope::Dist, true)?;
    let root = host::workspace_root();
    Cmd::new("cargo")
        .dir(root)
        .args(["build", "--release", "-p", "netwatch"])
        .run()?;
    let release = target_dir().join("release");
    let binary = release.join("netwatch");
    // Read by cargo-deb's assets (target/release/dist-gen/…).
    let generated = release.join("dist-gen");
    let _ = fs::remove_dir_all(&generated);
    let completions = generated.join("completions");
    let man = generated.join("man");
    fs::create_dir_all(&completions)?;
    fs::create_dir_all(&man)?;
    for (shell, file) in COMPLETIONS {
        let script = Cmd::new(&binary).args(["completion", shell]).probe()?;
        ensure!(
            !script.is_empty(),
            "`netwatch completion {shell}` printed nothing"
        );
        fs::write(completions.join(file), script)?;
    }
    Cmd::new(&binary).arg("man").arg(&man).run()?;
    let pages = files_in(&man)?;
    ensure!(!pages.is_empty(), "`netwatch man` wrote no page");
    // Debian's man pages are gzipped, without name or time (reproducible).
    Cmd::new("gzip").args(["-9nf"]).args(&pages).run()?;

    let dist = target_dir().join("dist");
    let _ = fs::remove_dir_all(&dist);
    fs::create_dir_all(&dist)?;
    Cmd::new("cargo")
        .dir(root)
        .args(["deb", "-p", "netwatch", "--no-build", "-o"])
        .arg(&dist)
        .run()
        .context("cargo-deb failed")?;
    let deb = files_in(&dist)?
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("cargo-deb wrote no .deb")?;
    fs::copy(&binary, dist.join("netwatch"))?;
    fs::copy(unit_source(), dist.join("netwatch.service"))?;
    copy_dir(&completions, &dist.join("completions"))?;
    copy_dir(&man, &dist.join("man"))?;
    eprintln!("dist: wrote {}", dist.display());
    for file in files_in(&dist)? {
        eprintln!("  {}", file.display());
    }
    Ok(deb)
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    Ok(files)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for file in files_in(from)? {
        if let Some(name) = file.file_name() {
            fs::copy(&file, to.join(name))?;
        }
    }
    Ok(())
}

/// What the .deb must hold, each non-empty.
const EXPECTED: &[&str] = &[
    "usr/bin/netwatch",
    "usr/lib/systemd/system/netwatch.service",
    "usr/share/bash-completion/completions/netwatch",
    "usr/share/zsh/vendor-completions/_netwatch",
    "usr/share/fish/vendor_completions.d/netwatch.fish",
    "usr/share/man/man1/netwatch.1.gz",
    "usr/share/man/man1/netwatch-agent.1.gz",
    "usr/share/man/man1/netwatch-status.1.gz",
    "etc/default/netwatch",
    "etc/logrotate.d/netwatch",
    "usr/share/doc/netwatch/README.md",
    // What the README links to.
    "usr/share/doc/netwatch/docs/architecture.md",
    "usr/share/doc/netwatch/docs/operations.md",
    "usr/share/doc/netwatch/docs/cli.md",
];

/// Takes `deb` apart in a scratch directory and checks it: the files of
/// [`EXPECTED`] are there and not empty, the maintainer scripts enable the
/// unit, the binary runs (`--version`, and `check`, which loads every
/// embedded program through the verifier, when `root`), and the unit
/// passes `systemd-analyze verify` against the package's own binary and
/// man pages.
///
/// # Errors
/// At the first thing that is missing or wrong.
pub fn check(deb: &Path, root: bool) -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("netwatch-dist-check-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    let result = check_in(deb, root, &scratch);
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn check_in(deb: &Path, root: bool, scratch: &Path) -> Result<()> {
    let tree = scratch.join("root");
    let control = scratch.join("control");
    fs::create_dir_all(scratch)?;
    Cmd::new("dpkg-deb").arg("-x").arg(deb).arg(&tree).run()?;
    Cmd::new("dpkg-deb")
        .arg("-e")
        .arg(deb)
        .arg(&control)
        .run()?;
    let listing = Cmd::new("dpkg-deb").arg("-c").arg(deb).probe()?;
    for path in EXPECTED {
        ensure!(
            listing.contains(&format!("./{path}")),
            "{} lacks {path} (dpkg-deb -c)",
            deb.display()
        );
        let len = fs::metadata(tree.join(path))
            .with_context(|| format!("{path} is not in the extracted package"))?
            .len();
        ensure!(len > 0, "{path} is empty in {}", deb.display());
    }
    // systemd refuses a unit file for its API file system /sys/fs/bpf:
    // shipping one would stop netwatch.service from starting.
    ensure!(
        !listing.contains("sys-fs-bpf.mount"),
        "the package ships sys-fs-bpf.mount, which systemd refuses (API file system)"
    );
    let postinst = fs::read_to_string(control.join("postinst")).context("no postinst")?;
    ensure!(
        postinst.contains("deb-systemd-helper enable netwatch.service"),
        "postinst does not enable netwatch.service"
    );
    ensure!(
        fs::read_to_string(control.join("conffiles"))?.contains("/etc/default/netwatch"),
        "/etc/default/netwatch is not a conffile"
    );

    let binary = tree.join("usr/bin/netwatch");
    let version = Cmd::new(&binary).arg("--version").probe()?;
    let expected = format!("netwatch {}", env!("CARGO_PKG_VERSION"));
    ensure!(
        version.trim() == expected,
        "`netwatch --version` printed {version:?}, not {expected:?}"
    );
    if root {
        // Loads every embedded program through the verifier (nothing is
        // attached): proof that the binary carries its kernel programs.
        let out = Cmd::new(&binary)
            .args(["check", "-o", "json"])
            .probe_any_status()?;
        let checks: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("`netwatch check -o json` printed {out:?}"))?;
        let programs = checks
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["check"] == "programs");
        match programs {
            Some(p) if p["result"] == "ok" => {}
            other => bail!("the packaged binary's programs did not load: {other:?}"),
        }
    }
    verify_unit(&tree, scratch)?;
    eprintln!(
        "dist check: {} holds {} expected files, runs ({}), and its unit verifies",
        deb.display(),
        EXPECTED.len(),
        version.trim()
    );
    Ok(())
}

/// `systemd-analyze verify` on the packaged unit. The check resolves
/// ExecStart on this host, where the package is not installed (and must
/// not be: no systemd runs here), so the unit is verified with ExecStart
/// pointing at the extracted binary (the path itself is checked above) and
/// MANPATH at the package's man pages, which its `Documentation=man:…`
/// must name.
fn verify_unit(tree: &Path, scratch: &Path) -> Result<()> {
    let Some(analyze) = host::which("systemd-analyze") else {
        bail!(
            "systemd-analyze is missing, so the unit cannot be verified: \
             `apt-get install systemd` (cargo xtask setup installs it)"
        );
    };
    let unit = fs::read_to_string(tree.join("usr/lib/systemd/system/netwatch.service"))?;
    ensure!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/bin/netwatch agent"),
        "the unit does not run /usr/bin/netwatch agent"
    );
    let binary = tree.join("usr/bin/netwatch");
    let rewritten = unit.replace(
        "ExecStart=/usr/bin/netwatch",
        &format!("ExecStart={}", binary.display()),
    );
    let dir = scratch.join("verify");
    fs::create_dir_all(&dir)?;
    let copy = dir.join("netwatch.service");
    fs::write(&copy, rewritten)?;
    // verify exits 0 with warnings on stderr too: any output is a failure.
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .env("MANPATH", tree.join("usr/share/man"))
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .context("running systemd-analyze verify")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("+ MANPATH=… systemd-analyze verify {}", copy.display());
    ensure!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify failed on netwatch.service ({}): {}",
        out.status,
        stderr.trim()
    );
    Ok(())
}
