//! `netwatch top`: live top talkers, by container or by flow.

use std::{process::ExitCode, time::Duration};

use anyhow::{Result, bail};

use super::source::{FilterArgs, FlowSource as _, SourceArgs, open_source};
use crate::render::{By, TopOptions, run_top};

/// Refreshes until `q`/Ctrl-C (in a terminal) or prints plain snapshots.
///
/// # Errors
/// No agent answers, or the interval is zero.
pub fn run(
    filter: &FilterArgs,
    source: &SourceArgs,
    by: By,
    interval_secs: f64,
    once: bool,
    limit: usize,
) -> Result<ExitCode> {
    if !(interval_secs.is_finite() && interval_secs >= 0.1) {
        bail!("--interval must be at least 0.1 seconds");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let agent = runtime.block_on(open_source(source, false))?;
    let filter = filter.filter();
    let fetch = || runtime.block_on(agent.flows(&filter));
    run_top(
        fetch,
        &TopOptions {
            interval: Duration::from_secs_f64(interval_secs),
            by,
            once,
            limit,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
