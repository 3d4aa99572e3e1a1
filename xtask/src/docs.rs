//! `cargo xtask docs`: regenerates docs/cli.md, the command-line reference,
//! from netwatch's clap definitions (the hidden `netwatch cli-reference
//! FILE` writes it). netwatch's unit test `cli::reference` fails, naming
//! this command, when the file in the tree is not current.

use anyhow::Result;

use crate::cmd::Cmd;
use crate::host;
use crate::setup::{self, Scope};

/// # Errors
///
/// When setup or the build fails, or netwatch cannot write the file.
pub fn run() -> Result<()> {
    setup::run(Scope::Build, true)?;
    let root = host::workspace_root();
    let file = root.join("docs").join("cli.md");
    Cmd::new("cargo")
        .dir(root)
        .args(["run", "--quiet", "--release", "-p", "netwatch", "--"])
        .arg("cli-reference")
        .arg(&file)
        .run()?;
    eprintln!("docs: wrote {}", file.display());
    Ok(())
}
