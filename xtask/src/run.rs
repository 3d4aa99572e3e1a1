//! `cargo xtask run -- <args>`: build and run the netwatch binary (release).

use anyhow::Result;

use crate::cmd::Cmd;
use crate::host;
use crate::setup::{self, Scope};

/// # Errors
///
/// When setup or the build fails, or netwatch exits non-zero (its exit code
/// becomes ours).
pub fn run(netwatch_args: &[String]) -> Result<()> {
    // Only the toolchain pieces: `run -- --help` must work without root;
    // netwatch itself says when it needs root or bpffs.
    setup::run(Scope::Build, true)?;
    Cmd::new("cargo")
        .dir(host::workspace_root())
        .args(["run", "--release", "-p", "netwatch", "--"])
        .args(netwatch_args)
        .inherit_stdin()
        .run()
}
