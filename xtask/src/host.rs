//! Facts about this machine and this checkout that several subcommands need.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// The workspace root (the parent of `xtask/`); every cargo command runs here.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// Effective uid from /proc/self/status (std has no geteuid; no libc crate).
pub fn euid() -> Result<u32> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .context("no effective uid in /proc/self/status")
}

pub fn is_root() -> Result<bool> {
    Ok(euid()? == 0)
}

/// Fail with one line unless we are root. `what` completes "… needs root to …".
pub fn require_root(command: &str, what: &str) -> Result<()> {
    if !is_root()? {
        bail!(
            "`{command}` needs root to {what}; run it as root (uid {} now)",
            euid()?
        );
    }
    Ok(())
}

pub fn home() -> Result<PathBuf> {
    env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// `$CARGO_HOME`, else `~/.cargo` (where `cargo install` puts binaries).
pub fn cargo_home() -> Result<PathBuf> {
    match env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(home()?.join(".cargo")),
    }
}

/// `$HOME/.cache/netwatch`: the bpf-linker stamp and LLVM prefix live here.
pub fn cache_dir() -> Result<PathBuf> {
    Ok(home()?.join(".cache").join("netwatch"))
}

/// The first `name` on PATH, like `command -v`.
pub fn which(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
