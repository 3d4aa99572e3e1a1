//! The bounded fuzz runs of the test command: each cargo-fuzz target of
//! `fuzz/` for a few seconds, from its committed seed corpus.
//!
//! New inputs libFuzzer finds go to `target/fuzz-corpus/<target>/` (the
//! first corpus directory is the one it writes to), so the committed seeds
//! in `fuzz/corpus/<target>/` stay as they are. A crash fails the stage;
//! the input that crashed is in `fuzz/artifacts/<target>/`.
//!
//! The test command runs this stage beside the tests ([`Beside`]): the
//! tests spend most of their time waiting on probes and dockerd, and the
//! fuzz build and runs (about 9 minutes alone) fill the idle CPU at the
//! lowest priority instead of adding to the run.

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

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
/// How long one input may run before libFuzzer reports it as a hang.
const PER_INPUT_TIMEOUT: Duration = Duration::from_secs(25);

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
                // An input that runs this long is a hang, reported as a
                // crash with its input saved (libFuzzer's default is 20
                // minutes). Wall-clock seconds: generous, because the test
                // command runs the fuzzers at nice 19 beside the tests,
                // where one parse of a few hundred bytes may wait its turn.
                &format!("-timeout={}", PER_INPUT_TIMEOUT.as_secs()),
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

/// The fuzz stage running in the background, in a process group of its
/// own at nice 19 so that the tests always come first: `cargo xtask fuzz`
/// (this same binary), its output in a log file. cargo-fuzz builds in
/// `fuzz/target`, so it never waits on the lock `cargo test` holds on the
/// workspace's target dir while the tests run.
pub struct Beside {
    child: Option<Child>,
    log: PathBuf,
}

impl Beside {
    /// Starts every target for `each`, in the background.
    ///
    /// # Errors
    ///
    /// When the log cannot be created or the process cannot start.
    pub fn start(each: Duration) -> Result<Self> {
        let log = crate::dist::target_dir().join("fuzz-beside-tests.log");
        if let Some(dir) = log.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let xtask = std::env::current_exe().context("finding the xtask binary")?;
        eprintln!(
            "+ nice -n 19 {} fuzz --seconds {} >{} 2>&1 &  (beside the tests)",
            xtask.display(),
            each.as_secs(),
            log.display()
        );
        let child = Command::new("nice")
            .args(["-n", "19"])
            .arg(&xtask)
            .args(["fuzz", "--seconds", &each.as_secs().to_string()])
            .current_dir(host::workspace_root())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("could not start the fuzz stage (is `nice` on PATH?)")?;
        Ok(Self {
            child: Some(child),
            log,
        })
    }

    /// Waits for the background stage and reports it: each target's command
    /// and how many inputs libFuzzer ran when it passed, the end of its log
    /// when it failed.
    ///
    /// # Errors
    ///
    /// When a target failed to build or crashed.
    pub fn finish(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("the fuzz stage was not started");
        };
        let status = child.wait().context("waiting for the fuzz stage")?;
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        if status.success() {
            for line in log
                .lines()
                .filter(|l| l.starts_with("+ ") || l.starts_with("stat::number_of_executed_units"))
            {
                eprintln!("  {line}");
            }
            eprintln!(
                "fuzz: passed beside the tests; whole log: {}",
                self.log.display()
            );
            return Ok(());
        }
        let lines: Vec<&str> = log.lines().collect();
        for line in &lines[lines.len().saturating_sub(80)..] {
            eprintln!("  {line}");
        }
        bail!(
            "the fuzz stage failed ({status}); its whole log is {}",
            self.log.display()
        )
    }
}

impl Drop for Beside {
    /// A stage before it failed: the fuzz run (cargo, rustc, libFuzzer) is
    /// stopped with it, not left running on the machine.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("fuzz: stopping the background fuzz stage");
                let _ = Command::new("kill")
                    .args(["-TERM", "--", &format!("-{}", child.id())])
                    .status();
            }
            let _ = child.wait();
        }
    }
}
