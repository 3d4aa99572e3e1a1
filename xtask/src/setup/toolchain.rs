//! Toolchain steps: the nightly toolchain and rust-src, bpf-linker built
//! against the nightly's own LLVM, cargo-deb and cargo-fuzz.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd::Cmd;
use crate::host;

use super::{Outcome, RETRIES};

/// bpf-linker release to build; 0.13.0 offers the `llvm-21`, `llvm-22` and
/// `llvm-23` features.
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_MAJORS: std::ops::RangeInclusive<u32> = 21..=23;

pub(super) fn nightly_toolchain() -> Result<Outcome> {
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

pub(super) fn rust_src() -> Result<Outcome> {
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
pub(super) fn cargo_deb() -> Result<Outcome> {
    cargo_subcommand("deb", CARGO_DEB_VERSION)
}

/// cargo-fuzz release the fuzz stage of the test command uses.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-fuzz, for the bounded fuzz runs of the test command (`fuzz/`).
pub(super) fn cargo_fuzz() -> Result<Outcome> {
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

pub(super) fn bpf_linker() -> Result<Outcome> {
    let version = Cmd::new("rustc").args(["+nightly", "-vV"]).probe()?;
    let major = llvm_major(&version)?;
    if !BPF_LINKER_LLVM_MAJORS.contains(&major) {
        bail!(
            "the nightly uses LLVM {major} but bpf-linker {BPF_LINKER_VERSION} supports LLVM {}-{}: \
             install a nightly with a supported LLVM or move BPF_LINKER_VERSION in xtask/src/setup/toolchain.rs",
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
}
