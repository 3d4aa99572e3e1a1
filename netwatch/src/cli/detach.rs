//! `netwatch detach`: remove everything netwatch attached or pinned.

use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::OutputFormat;
use crate::{
    datapath::{detach_all, pins},
    host,
};

#[derive(Serialize)]
struct Report {
    pin_root: String,
    removed: Vec<String>,
}

/// Removes every pin under the pin root: links first (which detaches the
/// programs from their interfaces), then programs and maps.
///
/// # Errors
/// Not root, or a pin that cannot be removed.
pub fn run(output: OutputFormat) -> Result<ExitCode> {
    host::require_capabilities(
        "netwatch detach",
        &[host::Capability::Bpf, host::Capability::NetAdmin],
    )
    .map_err(anyhow::Error::msg)?;
    let root = pins::root();
    let removed = detach_all(&root)?;
    let report = Report {
        pin_root: root.display().to_string(),
        removed: removed.iter().map(|p| p.display().to_string()).collect(),
    };
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Table if report.removed.is_empty() => {
            println!(
                "nothing to detach: no netwatch pins under {}",
                report.pin_root
            );
        }
        OutputFormat::Table => {
            println!(
                "removed {} pins under {}:",
                report.removed.len(),
                report.pin_root
            );
            for path in &report.removed {
                println!("  {path}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Remove everything netwatch attached or pinned (/sys/fs/bpf/netwatch):
/// links first, which detaches the programs from every interface, then
/// programs and maps. Reports what it removed. Enforcement stops.
#[derive(clap::Args)]
pub struct DetachArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = super::OutputFormat::Table)]
    pub output: super::OutputFormat,
}
