//! docs/cli.md, the command-line reference, generated from the clap
//! definitions so that it cannot drift from them: every command's `--help`
//! text as netwatch prints it, under one heading per command.
//!
//! `cargo xtask docs` writes the file (through the hidden `netwatch
//! cli-reference FILE`); the unit test below fails when the file in the
//! tree is not what the definitions make, and the test command runs it.

use std::fmt::Write as _;

/// Lines the help is wrapped at, whatever the terminal (so the file is the
/// same on every machine).
const WIDTH: usize = 100;

/// The reference for `command` (netwatch's top-level command) as Markdown.
pub fn markdown(mut command: clap::Command) -> String {
    command = hide_env_values(command.term_width(WIDTH).max_term_width(WIDTH));
    command.build();
    let name = command.get_name().to_owned();
    let mut out = String::new();
    out.push_str(&format!(
        "# `{name}` command-line reference\n\n\
         <!-- Generated from the clap definitions in netwatch/src/cli/ by `cargo xtask docs`.\n     \
         Do not edit: a unit test (cli::reference) fails when this file is not current. -->\n\n\
         Every command with every flag, its default and its `NETWATCH_*` variable, as\n\
         `{name} help COMMAND` prints it (without the values the variables have). The\n\
         [README](../README.md) shows the commands at work; [operations](operations.md)\n\
         covers the agent as a service.\n\n\
         | command | what it does |\n|---|---|\n"
    ));
    let commands = visible_commands(&command, &name);
    for (path, sub) in &commands {
        let about = sub
            .get_about()
            .map(|about| about.to_string())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| [`{path}`](#{}) | {} |",
            anchor(path),
            first_sentence(&about).replace('|', "\\|")
        );
    }
    out.push_str(&section(&name, &mut command.clone()));
    for (path, mut sub) in commands {
        out.push_str(&section(&path, &mut sub));
    }
    out
}

/// `command` and its subcommands without the values their variables have in
/// the environment of whoever generates the file (`[env: NETWATCH_X=]`).
fn hide_env_values(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| arg.hide_env_values(true))
        .mut_subcommands(hide_env_values)
}

/// `command`'s visible subcommands, depth first, with their full names
/// (`netwatch agent`); `help` is left out (it prints what is here).
fn visible_commands(command: &clap::Command, prefix: &str) -> Vec<(String, clap::Command)> {
    let mut out = Vec::new();
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let path = format!("{prefix} {}", sub.get_name());
        out.push((path.clone(), sub.clone()));
        out.extend(visible_commands(sub, &path));
    }
    out
}

fn section(path: &str, command: &mut clap::Command) -> String {
    let help = command.render_long_help().to_string();
    let help: Vec<&str> = help.lines().map(str::trim_end).collect();
    format!(
        "\n## `{path}`\n\n```text\n{}\n```\n",
        help.join("\n").trim_end()
    )
}

/// The first sentence of `text`, on one line (a row of the table of
/// contents; the section has the rest).
fn first_sentence(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match [". ", "? "].iter().filter_map(|end| line.find(end)).min() {
        Some(end) => line[..=end].to_owned(),
        None => line,
    }
}

/// The anchor GitHub gives a heading `` `netwatch agent` ``.
fn anchor(path: &str) -> String {
    path.replace(' ', "-")
}

#[cfg(test)]
mod tests {
    /// docs/cli.md is what the clap definitions make today.
    #[test]
    fn docs_cli_md_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli.md");
        let generated = crate::cli::command::cli_reference();
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        if on_disk != generated {
            let first = on_disk
                .lines()
                .zip(generated.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| on_disk.lines().count().min(generated.lines().count()));
            panic!(
                "docs/cli.md is not what netwatch's clap definitions make (first difference at \
                 line {}): run `cargo xtask docs` to regenerate it, and commit it",
                first + 1
            );
        }
    }

    #[test]
    fn every_visible_command_has_a_section_and_no_hidden_one_does() {
        let reference = crate::cli::command::cli_reference();
        for command in ["agent", "check", "networks", "flows", "explain", "status"] {
            assert!(
                reference.contains(&format!("\n## `netwatch {command}`\n")),
                "{command}"
            );
        }
        assert!(!reference.contains("## `netwatch man`"));
        assert!(!reference.contains("## `netwatch cli-reference`"));
        assert!(
            !reference.contains("[env: NETWATCH_RESYNC_SECS="),
            "env values hidden"
        );
    }
}
