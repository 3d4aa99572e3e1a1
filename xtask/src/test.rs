//! `cargo xtask test`: the one test command (README and `.ci/run` call it).
//!
//! Stages run in order and the first failure stops the run: setup (quiet,
//! installs only what is missing), rustfmt, clippy for the host crates,
//! clippy for the eBPF crate on its own target, then `cargo test` of the
//! host crates in release mode (the differential test pushes 100k+ packets
//! through the programs), a smoke run of every benchmark (seconds each:
//! every configuration once, so the benchmarks cannot rot; their numbers
//! are not checked), and last a check that the Docker tests left no
//! `nwtest-…` container or network behind.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::bench;
use crate::cmd::Cmd;
use crate::host;
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
            "cargo test",
            "",
            Box::new(|| {
                cargo()
                    .args(["test", "--workspace", "--exclude", EBPF_CRATE, "--release"])
                    .args(cargo_test_args)
                    .run()
            }),
        ),
        (
            "benchmark smoke",
            "a benchmark failed in its smoke run; run `cargo xtask bench NAME --smoke` to see it alone",
            Box::new(|| {
                let all: Vec<&bench::Bench> = bench::BENCHES.iter().collect();
                bench::run_benches(&all, true, &[])
            }),
        ),
        (
            "docker leftovers",
            "a test fixture did not clean up; `docker rm -f` / `docker network rm` them",
            Box::new(docker_leftovers),
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

/// What the Docker test fixtures (`tests/src/docker.rs`) create is named
/// `nwtest-…` and must be gone once the tests are over.
const DOCKER_FIXTURE_PREFIX: &str = "nwtest-";

/// Fails when a test left a container or network behind.
fn docker_leftovers() -> Result<()> {
    let list = |args: &[&str]| -> Result<Vec<String>> {
        Ok(Cmd::new("docker")
            .args(args)
            .probe()?
            .lines()
            .filter(|name| name.starts_with(DOCKER_FIXTURE_PREFIX))
            .map(str::to_owned)
            .collect())
    };
    let filter = format!("name={DOCKER_FIXTURE_PREFIX}");
    let containers = list(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"])?;
    let networks = list(&[
        "network",
        "ls",
        "--filter",
        &filter,
        "--format",
        "{{.Name}}",
    ])?;
    if containers.is_empty() && networks.is_empty() {
        eprintln!("no test containers or networks left");
        return Ok(());
    }
    anyhow::bail!(
        "left behind: containers [{}], networks [{}]",
        containers.join(", "),
        networks.join(", ")
    )
}

fn summary(times: &[(&str, Duration)], total: Duration) -> String {
    let stages: Vec<String> = times
        .iter()
        .map(|(name, took)| format!("{name} {}", host::secs(*took)))
        .collect();
    format!("test: total {} ({})", host::secs(total), stages.join(", "))
}
