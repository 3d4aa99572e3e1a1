//! The bounded fuzz runs of the test command: each cargo-fuzz target of
//! `fuzz/` for a few seconds, from its committed seed corpus.
//!
//! New inputs libFuzzer finds go to `target/fuzz-corpus/<target>/` (the
//! first corpus directory is the one it writes to), so the committed seeds
//! in `fuzz/corpus/<target>/` stay as they are. A crash fails the stage;
//! the input that crashed is in `fuzz/artifacts/<target>/`.

use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::cmd::Cmd;
use crate::host;

/// The targets, as `fuzz/Cargo.toml` names them.
pub const TARGETS: [&str; 4] = [
    "ring_buffer_record",
    "labels",
    "api_query",
    "docker_answers",
];

/// How long each target runs in the test command.
pub const TEST_RUN: Duration = Duration::from_secs(20);

/// Runs every target for `each`.
///
/// # Errors
///
/// When a target fails to build or libFuzzer finds a crash.
pub fn run_all(each: Duration) -> Result<()> {
    let root = host::workspace_root();
    let fuzz_dir = root.join("fuzz");
    for target in TARGETS {
        let found = root.join("target").join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&found).with_context(|| format!("creating {}", found.display()))?;
        let seeds = fuzz_dir.join("corpus").join(target);
        Cmd::new("cargo")
            .dir(&fuzz_dir)
            .args(["+nightly", "fuzz", "run", target])
            .arg(found.as_os_str())
            .arg(seeds.as_os_str())
            .args([
                "--",
                &format!("-max_total_time={}", each.as_secs()),
                // Quiet: libFuzzer prints a line per new coverage and per
                // newly covered function otherwise.
                "-print_final_stats=1",
                "-verbosity=0",
                "-print_funcs=0",
            ])
            .run()
            .with_context(|| {
                format!(
                    "fuzz target {target} failed: the input that crashed it is in \
                     fuzz/artifacts/{target}/; reproduce with \
                     `cd fuzz && cargo +nightly fuzz run {target} fuzz/artifacts/{target}/<file>`"
                )
            })?;
    }
    Ok(())
}
