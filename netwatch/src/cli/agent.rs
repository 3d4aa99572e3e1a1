//! `netwatch agent`: the host service.

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::{
    agent::{AgentOptions, run},
    datapath::pins,
    host,
};

/// Runs the agent until SIGTERM/SIGINT.
///
/// # Errors
/// Not root, no bpffs, a kernel without TCX, another agent running, or the
/// programs cannot be loaded.
pub fn run_agent(options: AgentOptions) -> Result<ExitCode> {
    host::require_capabilities("netwatch agent", host::ATTACH_CAPABILITIES)
        .map_err(anyhow::Error::msg)?;
    if !host::bpffs_mounted() {
        bail!(
            "no bpffs at {}: mount it with `mount -t bpf bpf {}` so enforcement can outlive the agent",
            pins::BPFFS,
            pins::BPFFS
        );
    }
    match host::kernel_release() {
        Some(k) if !k.at_least(6, 6) => {
            bail!("Linux {k} is too old: netwatch needs 6.6 or newer (TCX attachments)")
        }
        _ => {}
    }
    if options.resync_interval.is_zero() {
        bail!("--resync-secs must be at least 1");
    }
    super::block_on(async {
        let shutdown = super::signals::install()?;
        crate::agent::service::install_hangup_handler()?;
        let shutdown = async {
            shutdown.await;
            crate::agent::service::stopping();
        };
        run(options, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}
