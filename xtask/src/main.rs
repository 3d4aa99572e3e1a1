//! netwatch's developer tasks: `cargo xtask <setup|build|dist|test|bench|run|docs>`.
//!
//! This file only parses the command line and dispatches; each subcommand
//! lives in its own module.

mod bench;
mod build;
mod cmd;
mod dist;
mod docs;
mod fuzz;
mod host;
mod leftovers;
mod run;
mod setup;
mod test;

use std::process::ExitCode;

use clap::{
    CommandFactory as _, FromArgMatches as _, Parser, Subcommand, builder::PossibleValuesParser,
};

use crate::cmd::CommandFailed;

/// Developer tasks for netwatch. Every external command is echoed as
/// `+ command` before it runs; a failure names the command and its exit code.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    /// Also echo the read-only probes (dpkg-query, rustup component list, …).
    #[arg(short, long, global = true)]
    verbose: bool,

    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing netwatch needs; idempotent.
    ///
    /// One line per step (ok / installed / warning / SKIPPED / FAILED):
    /// the nightly toolchain and its rust-src component; bpf-linker 0.13.0
    /// built against the nightly's own libLLVM (rebuilt when the nightly's
    /// LLVM changes; stamp in ~/.cache/netwatch/bpf-linker.stamp);
    /// cargo-deb 3.8.0 (the .deb); bpffs at /sys/fs/bpf; the Debian
    /// packages the tests use (iproute2, bpftool, iperf3, tcpdump,
    /// linux-perf, busybox-static, docker.io, docker-compose, python3,
    /// systemd, dpkg).
    /// Mounting bpffs and apt-get need root: without root those steps only
    /// check, and setup exits non-zero if they have work left. Downloads are
    /// retried 3 times with backoff. Takes well under 2 s when everything is
    /// present. When dockerd does not answer, setup (as root) starts
    /// `dockerd` in the background (log: /tmp/netwatch-dockerd.log) and waits
    /// up to 30 s for it; then it imports the test image
    /// netwatch-test:busybox from busybox-static if it is missing.
    Setup,

    /// Release build of the workspace, kernel programs included.
    ///
    /// Runs the toolchain part of `setup` first (quiet; it installs only
    /// what is missing), then `cargo build --release [ARGS]`.
    Build {
        /// Extra arguments for `cargo build`, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },

    /// Build what an operator installs, into <target>/dist/.
    ///
    /// Runs the toolchain part of `setup` plus cargo-deb (installed with
    /// retries when missing), then: the release `netwatch` binary (its
    /// kernel programs embedded: it runs without a toolchain), completions
    /// for bash, zsh and fish and man pages generated from its clap
    /// definitions, and the .deb (cargo-deb) holding them with the systemd
    /// unit netwatch.service, /etc/default/netwatch and a logrotate file.
    /// Then takes the .deb apart and checks it (as `cargo xtask test` does).
    Dist,

    /// Run every check and test: the command CI runs (needs root).
    ///
    /// In order, stopping at the first failure: `setup` (quiet, installs only
    /// what is missing); `cargo fmt --all -- --check`; `cargo clippy
    /// --workspace --exclude netwatch-ebpf --all-targets -- -D warnings`;
    /// clippy for netwatch-ebpf on bpfel-unknown-none with the nightly
    /// (target dir target/ebpf-clippy); `cargo test --workspace --exclude
    /// netwatch-ebpf --release [ARGS]` (the kernel crate only builds for the
    /// BPF target; the tests run its programs through BPF_PROG_TEST_RUN);
    /// `dist` (the .deb built and checked as `cargo xtask dist` does);
    /// every benchmark of `cargo xtask bench` with `--smoke` (seconds each;
    /// fails when one fails, never on its numbers); each cargo-fuzz target
    /// of fuzz/ for 20 s from its seed corpus (`cargo xtask fuzz`, started
    /// at nice 19 once the tests are built, so it runs beside them; its log
    /// is <target>/fuzz-beside-tests.log); last, a check that the
    /// tests and benchmarks left nothing behind that was not there before
    /// them: no netwatch program, bpffs pin, network namespace, interface,
    /// or `nwtest-…` container or network. Prints the time of each stage
    /// and the total.
    ///
    /// Example: `cargo xtask test -- -p netwatch-tests -- --nocapture`
    Test {
        /// Extra arguments for `cargo test`, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },

    /// Run benchmarks and write BENCHMARKS.md (needs root).
    ///
    /// Runs the named benchmarks (all when none is named) in release
    /// builds, each with `--section <target dir>/bench/<name>.md`, then
    /// writes BENCHMARKS.md at the workspace root: the machine (CPU, cores,
    /// memory, kernel), date and commit, and the section of every benchmark,
    /// those not re-run kept from earlier runs with their date. Each
    /// benchmark sets up its own namespaces and programs and removes them.
    /// With `--smoke` each runs for seconds (every configuration once,
    /// numbers meaningless, as in `cargo xtask test`) and BENCHMARKS.md is
    /// left alone.
    ///
    /// Example: `cargo xtask bench datapath --smoke`
    Bench {
        /// Which benchmarks (see the list below); all when none is given.
        #[arg(value_parser = PossibleValuesParser::new(bench::names()))]
        names: Vec<String>,
        /// Seconds-long runs that only check every configuration works.
        #[arg(long)]
        smoke: bool,
        /// Extra arguments for every benchmark binary, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },

    /// Run each cargo-fuzz target of fuzz/ from its seed corpus.
    ///
    /// The fuzz stage of `cargo xtask test`, which runs it beside the
    /// tests. New inputs go to target/fuzz-corpus/<target>/, a crashing one
    /// to fuzz/artifacts/<target>/.
    Fuzz {
        /// How long each target runs.
        #[arg(long, default_value_t = fuzz::TEST_RUN.as_secs())]
        seconds: u64,
    },

    /// Build and run netwatch (release) with the given arguments.
    ///
    /// Runs the toolchain part of `setup` first, then `cargo run --release
    /// -p netwatch -- ARGS`; netwatch's exit code becomes ours.
    ///
    /// Example: `cargo xtask run -- --help`
    Run {
        /// Arguments for netwatch.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },

    /// Regenerate docs/cli.md from netwatch's clap definitions.
    ///
    /// Runs `netwatch cli-reference docs/cli.md` (a release build, after the
    /// toolchain part of `setup`). The test command's unit tests fail when
    /// docs/cli.md is not what the definitions make, naming this command.
    Docs,
}

fn main() -> ExitCode {
    // The help lists the benchmarks of bench::BENCHES with what each measures.
    let matches = Cli::command()
        .mut_subcommand("bench", |bench| bench.after_help(bench::help_list()))
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    cmd::set_verbose(cli.verbose);
    let result = match &cli.command {
        Task::Setup => setup::run(setup::Scope::Full, false),
        Task::Build { args } => build::run(args),
        Task::Dist => dist::run().and_then(|deb| dist::check(&deb, host::is_root()?)),
        Task::Test { args } => test::run(args),
        Task::Bench { names, smoke, args } => bench::run(names, *smoke, args),
        Task::Fuzz { seconds } => fuzz::run_all(std::time::Duration::from_secs(*seconds)),
        Task::Run { args } => run::run(args),
        Task::Docs => docs::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            // Hand on a failed command's exit code (e.g. netwatch's own).
            let code = e
                .chain()
                .find_map(|cause| cause.downcast_ref::<CommandFailed>())
                .map_or(1, CommandFailed::exit_code);
            ExitCode::from(u8::try_from(code).ok().filter(|&c| c != 0).unwrap_or(1))
        }
    }
}
