//! The `netwatch` command line: argument parsing and dispatch only.

use std::process::ExitCode;

use crate::cli::{self, agent::AgentArgs};
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// eBPF network isolation enforcer and traffic observer for Docker hosts.
///
/// netwatch loads TC(X) programs onto the host side of container veths and an
/// XDP program onto the uplink, enforces what Docker's `internal: true`
/// promises in the kernel datapath itself, and records per-container flows.
#[derive(Parser)]
#[command(name = "netwatch", version)]
struct Cli {
    /// How log lines are written to stderr: `text` (timestamped), `journal`
    /// (a `<N>` syslog priority on each line and no timestamp, for
    /// journald), `json` (one object per line, for log shippers), or `auto`:
    /// `journal` when stderr is systemd's journal stream (JOURNAL_STREAM),
    /// else `text`. The level comes from RUST_LOG (default `info`).
    #[arg(long, global = true, value_enum, env = "NETWATCH_LOG_FORMAT", default_value_t = crate::logging::LogFormat::Auto)]
    log_format: crate::logging::LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Agent(AgentArgs),
    Check(crate::cli::check::CheckArgs),
    Status(crate::cli::status::StatusArgs),
    Explain(crate::cli::explain::ExplainArgs),
    Detach(crate::cli::detach::DetachArgs),
    Networks(crate::cli::networks::NetworksArgs),
    Map(crate::cli::map::MapArgs),
    Top(crate::cli::top::TopArgs),
    Flows(crate::cli::flows::FlowsArgs),
    Dns(crate::cli::dns::DnsArgs),
    Drops(crate::cli::drops::DropsArgs),
    Advise(crate::cli::advise::AdviseArgs),
    Observe(crate::cli::observe::ObserveArgs),
    /// Print a shell completion script for bash, zsh or fish.
    ///
    /// Examples:
    ///   netwatch completion bash > /etc/bash_completion.d/netwatch
    ///   netwatch completion zsh > "${fpath[1]}/_netwatch"
    ///   netwatch completion fish > ~/.config/fish/completions/netwatch.fish
    #[command(verbatim_doc_comment)]
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write netwatch's man pages (netwatch.1 and one per subcommand) into
    /// DIR (packaging).
    #[command(hide = true)]
    Man {
        /// The directory to write them to (it must exist).
        dir: std::path::PathBuf,
    },
    /// Write the command-line reference (Markdown, every command's help)
    /// to FILE: docs/cli.md, which `cargo xtask docs` regenerates.
    #[command(hide = true)]
    CliReference {
        /// The file to write.
        file: std::path::PathBuf,
    },
    Inspect(crate::cli::inspect::InspectArgs),
}

/// The agent's settings as `name = value  (source)` lines, one per flag,
/// in the order of `--help`: what `--print-config` shows. The source is
/// `flag`, `env NETWATCH_…`, `default`, or `unset`.
pub fn effective_config(agent: &clap::ArgMatches) -> String {
    let command = Cli::command();
    let Some(definition) = command.find_subcommand("agent") else {
        return String::new();
    };
    let mut out = String::new();
    for arg in definition.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "print_config" | "help" | "log_format") || arg.get_long().is_none() {
            continue;
        }
        let name = arg.get_long().unwrap_or(id);
        let values: Vec<String> = agent
            .get_raw(id)
            .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let source = match agent.value_source(id) {
            Some(clap::parser::ValueSource::CommandLine) => "flag".to_owned(),
            Some(clap::parser::ValueSource::EnvVariable) => format!(
                "env {}",
                arg.get_env()
                    .map(|e| e.to_string_lossy())
                    .unwrap_or_default()
            ),
            Some(clap::parser::ValueSource::DefaultValue) => "default".to_owned(),
            _ => "unset".to_owned(),
        };
        out.push_str(&format!("{name} = {}  ({source})\n", values.join(",")));
    }
    out
}

/// docs/cli.md: every visible command's help, from these definitions.
pub fn cli_reference() -> String {
    cli::reference::markdown(Cli::command())
}

/// Parses the command line and runs the subcommand: the whole `netwatch`
/// binary (the test suite runs the same code under another binary name).
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    crate::logging::init(cli.log_format);
    let result = match cli.command {
        Command::Agent(AgentArgs {
            print_config: true, ..
        }) => {
            let agent = matches.subcommand_matches("agent").unwrap_or(&matches);
            print!("{}", effective_config(agent));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completion { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "netwatch", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => clap_mangen::generate_to(Cli::command(), &dir)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| anyhow::anyhow!("writing man pages to {}: {e}", dir.display())),
        Command::CliReference { file } => std::fs::write(&file, cli_reference())
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display())),
        Command::Agent(args) => args.options().and_then(cli::agent::run_agent),
        Command::Check(args) => cli::check::run(args.output),
        Command::Detach(args) => cli::detach::run(args.output),
        Command::Explain(args) => cli::explain::run(
            &args.source,
            &args.destination,
            args.from_kernel,
            args.output,
            &args.pin_root,
        ),
        Command::Status(args) => {
            cli::status::run(args.output, &args.networks, &args.pin_root, &args.run_dir)
        }
        Command::Networks(args) => {
            cli::networks::run(&args.networks, args.output, &args.pin_root, &args.run_dir)
        }
        Command::Inspect(args) => {
            cli::inspect::run(&args.container, args.output, &args.pin_root, &args.run_dir)
        }
        Command::Flows(args) => cli::flows::run(
            &args.filter,
            &args.source,
            args.from_log.as_deref(),
            args.output,
        ),
        Command::Dns(args) => cli::dns::run(&args.filter, args.socket, args.follow, args.output),
        Command::Drops(args) => cli::drops::run(&args.filter, &args.source, args.output),
        Command::Advise(args) => cli::advise::run(
            &args.filter,
            &args.source,
            args.output,
            args.check.as_deref(),
        ),
        Command::Map(args) => cli::map::run(
            &args.filter,
            &args.source,
            args.output,
            args.builtin,
            args.out.as_deref(),
        ),
        Command::Top(args) => cli::top::run(
            &args.filter,
            &args.source,
            args.by,
            args.interval,
            args.once,
            args.limit,
            args.output,
        ),
        Command::Observe(args) => {
            cli::observe::run(&args.filter, &args.source, args.output, args.count)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("netwatch: {}", cli::one_line(&error));
            ExitCode::FAILURE
        }
    }
}
