//! `cargo xtask test`: the one test command (README and `.ci/run` call it).
//!
//! Stages run in order and the first failure stops the run: setup (quiet,
//! installs only what is missing), rustfmt, clippy for the host crates,
//! clippy for the eBPF crate on its own target, then `cargo test` of the
//! host crates in release mode (the differential test pushes 100k+ packets
//! through the programs; built first, then run while the fuzz stage runs
//! beside it at the lowest priority), the .deb, a smoke run of every benchmark (seconds each:
//! every configuration once, so the benchmarks cannot rot; their numbers
//! are not checked), and last a check that the tests and benchmarks left
//! nothing behind (see `leftovers.rs`).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::bench;
use crate::cmd::Cmd;
use crate::fuzz;
use crate::host;
use crate::leftovers::HostSnapshot;
use crate::setup::{self, Scope};

/// The kernel crate builds only for the BPF target with the nightly (it
/// uses `#![feature]`, `no_std`, `no_main`; the workspace keeps it out of
/// `default-members` for that reason), so the host stages exclude it: it is
/// linted by its own clippy stage and tested through BPF_PROG_TEST_RUN by
/// netwatch-tests, on the object netwatch's build.rs builds.
const EBPF_CRATE: &str = "netwatch-ebpf";

type Stage<'a> = (&'static str, &'static str, Box<dyn Fn() -> Result<()> + 'a>);

/// # Errors
///
/// When not root, or at the first stage that fails.
pub fn run(cargo_test_args: &[String]) -> Result<()> {
    host::require_root(
        "cargo xtask test",
        "load BPF programs, create network namespaces and run dockerd",
    )?;
    let start = Instant::now();
    let root = host::workspace_root();
    let cargo = || Cmd::new("cargo").dir(root);
    let before_tests = std::cell::OnceCell::new();
    // Dropped at the end of `run`: a run that fails before the fuzz stage
    // stops the background fuzzing with it.
    let fuzz_beside: RefCell<Option<fuzz::Beside>> = RefCell::new(None);

    let stages: Vec<Stage<'_>> = vec![
        ("setup", "", Box::new(|| setup::run(Scope::Full, true))),
        (
            "rustfmt",
            "run `cargo fmt --all` to fix",
            Box::new(|| cargo().args(["fmt", "--all", "--", "--check"]).run()),
        ),
        (
            "clippy",
            "fix the warnings above",
            Box::new(|| {
                cargo()
                    .args([
                        "clippy",
                        "--workspace",
                        "--exclude",
                        EBPF_CRATE,
                        "--all-targets",
                    ])
                    .args(["--", "-D", "warnings"])
                    .run()
            }),
        ),
        (
            "clippy (eBPF, bpfel-unknown-none)",
            "fix the warnings above",
            Box::new(|| {
                cargo()
                    // Its own target dir, so the host build is not invalidated.
                    .env("CARGO_TARGET_DIR", root.join("target").join("ebpf-clippy"))
                    .args(["+nightly", "clippy", "--package", EBPF_CRATE])
                    .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
                    .args(["--", "-D", "warnings"])
                    .run()
            }),
        ),
        (
            "cargo test (build)",
            "",
            Box::new(|| {
                cargo()
                    .args(["test", "--workspace", "--exclude", EBPF_CRATE, "--release"])
                    .args(["--no-run"])
                    .args(cargo_build_args(cargo_test_args))
                    .run()?;
                // From here on the CPU is mostly idle while tests wait on
                // probes and dockerd: the fuzz stage fills it.
                *fuzz_beside.borrow_mut() = Some(fuzz::Beside::start(fuzz::TEST_RUN)?);
                Ok(())
            }),
        ),
        (
            "cargo test",
            "",
            Box::new(|| {
                let _ = before_tests.set(HostSnapshot::take()?);
                // `--workspace`, not the default members: those leave out
                // netwatch-tests (root, namespaces, dockerd), which this
                // stage is here to run.
                cargo()
                    .args(["test", "--workspace", "--exclude", EBPF_CRATE, "--release"])
                    .args(cargo_test_args)
                    .run()
            }),
        ),
        (
            "dist",
            "`cargo xtask dist` builds and checks the .deb alone",
            Box::new(|| crate::dist::run().and_then(|deb| crate::dist::check(&deb, true))),
        ),
        (
            "benchmark smoke",
            "a benchmark failed in its smoke run; run `cargo xtask bench NAME --smoke` to see it alone",
            Box::new(|| {
                let all: Vec<&bench::Bench> = bench::BENCHES.iter().collect();
                bench::run_benches(&all, true, &[]).map(|_| ())
            }),
        ),
        (
            "fuzz (ran beside the tests)",
            "run `cargo xtask fuzz` to run it alone",
            Box::new(|| match fuzz_beside.borrow_mut().take() {
                Some(beside) => beside.finish(),
                None => anyhow::bail!("the fuzz stage was never started"),
            }),
        ),
        (
            "leftovers",
            "a test did not clean up after itself: remove what is named above",
            Box::new(|| match before_tests.get() {
                Some(before) => before.check_nothing_new(),
                None => anyhow::bail!("no snapshot of the host was taken before the tests"),
            }),
        ),
    ];

    let count = stages.len();
    let mut times: Vec<(&str, Duration)> = Vec::new();
    for (i, (name, hint, stage)) in stages.iter().enumerate() {
        eprintln!("==> [{}/{count}] {name}", i + 1);
        let stage_start = Instant::now();
        let result = stage();
        times.push((name, stage_start.elapsed()));
        if let Err(e) = result {
            eprintln!("{}", summary(&times, start.elapsed()));
            let hint = if hint.is_empty() {
                String::new()
            } else {
                format!(" ({hint})")
            };
            return Err(e.context(format!("test stage `{name}` failed{hint}")));
        }
    }
    eprintln!("{}", summary(&times, start.elapsed()));
    eprintln!(
        "test: all {count} stages passed in {}",
        host::secs(start.elapsed())
    );
    Ok(())
}

/// The part of `cargo test`'s extra arguments that selects what is built
/// (everything before a `--`, which starts the test binaries' own).
fn cargo_build_args(cargo_test_args: &[String]) -> &[String] {
    let end = cargo_test_args
        .iter()
        .position(|a| a == "--")
        .unwrap_or(cargo_test_args.len());
    &cargo_test_args[..end]
}

fn summary(times: &[(&str, Duration)], total: Duration) -> String {
    let stages: Vec<String> = times
        .iter()
        .map(|(name, took)| format!("{name} {}", host::secs(*took)))
        .collect();
    format!("test: total {} ({})", host::secs(total), stages.join(", "))
}
