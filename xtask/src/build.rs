//! `cargo xtask build`: setup if something is missing, then a release build
//! of the workspace (netwatch's build.rs builds the eBPF programs).

use anyhow::Result;

use crate::cmd::Cmd;
use crate::host;
use crate::setup::{self, Scope};

/// # Errors
///
/// When setup cannot provide the toolchain pieces or the build fails.
pub fn run(cargo_args: &[String]) -> Result<()> {
    setup::run(Scope::Build, true)?;
    Cmd::new("cargo")
        .dir(host::workspace_root())
        .args(["build", "--release"])
        .args(cargo_args)
        .run()
}
