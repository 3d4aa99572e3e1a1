//! The `netwatch` command: argument parsing and dispatch only.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use netwatch::cli::{self, OutputFormat};

/// eBPF network isolation enforcer and traffic observer for Docker hosts.
///
/// netwatch loads TC(X) programs onto the host side of container veths and an
/// XDP program onto the uplink, enforces what Docker's `internal: true`
/// promises in the kernel datapath itself, and records per-container flows.
#[derive(Parser)]
#[command(name = "netwatch", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that this host can run netwatch: root, kernel version and
    /// features, bpffs, and that the kernel's verifier accepts every
    /// netwatch program. Loads the programs, attaches nothing, and unloads
    /// them on exit.
    Check {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Show whether the agent runs, what is attached where, and what was
    /// dropped and why (read from the pinned maps, so it works whether or
    /// not the agent is up).
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Remove everything netwatch attached or pinned (/sys/fs/bpf/netwatch):
    /// links first, which detaches the programs from every interface, then
    /// programs and maps. Reports what it removed. Enforcement stops.
    Detach {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { output } => cli::check::run(output),
        Command::Detach { output } => cli::detach::run(output),
        Command::Status { output } => cli::status::run(output),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("netwatch: {error:#}");
            ExitCode::FAILURE
        }
    }
}
