//! Running external commands: every command that changes something or does
//! the real work is echoed before it runs (`+ cmd args`), and a failure names
//! the command and its exit code.
//!
//! Read-only probes (`dpkg-query`, `rustup component list`, …) are echoed
//! only with `--verbose`, so that `cargo xtask setup` stays one line per step;
//! a failing probe still names its command line in the error.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result};

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Echo read-only probes too (`--verbose`).
pub fn set_verbose(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
}

fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// An external command that exited unsuccessfully. `main` turns it into the
/// process exit code, so `cargo xtask run` exits like netwatch did.
#[derive(Debug)]
pub struct CommandFailed {
    pub cmdline: String,
    pub status: ExitStatus,
    /// The command's stderr, for probes whose output was captured.
    pub stderr: Option<String>,
}

impl CommandFailed {
    /// The exit code to hand on (128 + signal for a killed command).
    pub fn exit_code(&self) -> i32 {
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 1,
        }
    }
}

impl fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => {
                write!(f, "command `{}` failed with exit code {code}", self.cmdline)?
            }
            (None, Some(signal)) => write!(
                f,
                "command `{}` was killed by signal {signal}",
                self.cmdline
            )?,
            (None, None) => write!(f, "command `{}` failed ({})", self.cmdline, self.status)?,
        }
        if let Some(stderr) = self
            .stderr
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            write!(f, ": {stderr}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CommandFailed {}

/// A command line plus the environment variables it sets explicitly (shown
/// in the echo) and its working directory.
#[derive(Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
    inherit_stdin: bool,
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            dir: None,
            inherit_stdin: false,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    pub fn dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Let the command read our stdin (only `cargo xtask run`: netwatch may
    /// be interactive). Everything else gets /dev/null, so nothing can wait
    /// for input in CI.
    pub fn inherit_stdin(mut self) -> Self {
        self.inherit_stdin = true;
        self
    }

    /// The command line as a shell would take it, with its explicit
    /// environment variables in front.
    pub fn cmdline(&self) -> String {
        let mut words: Vec<String> = self
            .envs
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), quote(&v.to_string_lossy())))
            .collect();
        words.push(quote(&self.program.to_string_lossy()));
        words.extend(self.args.iter().map(|a| quote(&a.to_string_lossy())));
        words.join(" ")
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        command.stdin(if self.inherit_stdin {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
        command
    }

    fn spawn_error(&self) -> String {
        format!(
            "could not start `{}` (is `{}` installed and on PATH?)",
            self.cmdline(),
            self.program.to_string_lossy()
        )
    }

    /// Echo, run with inherited stdout/stderr, and fail unless it exits 0.
    pub fn run(&self) -> Result<()> {
        eprintln!("+ {}", self.cmdline());
        let status = self
            .command()
            .status()
            .with_context(|| self.spawn_error())?;
        if status.success() {
            Ok(())
        } else {
            Err(CommandFailed {
                cmdline: self.cmdline(),
                status,
                stderr: None,
            }
            .into())
        }
    }

    /// [`Cmd::run`], retried `retries` more times with 2 s, 4 s, 8 s … between
    /// attempts (for anything that talks to a mirror or crates.io).
    pub fn run_with_retries(&self, retries: u32) -> Result<()> {
        let mut delay = Duration::from_secs(2);
        let mut attempt = 1;
        loop {
            match self.run() {
                Ok(()) => return Ok(()),
                Err(e) if attempt <= retries => {
                    eprintln!(
                        "  attempt {attempt}/{} failed ({e:#}); retrying in {} s",
                        retries + 1,
                        delay.as_secs()
                    );
                    thread::sleep(delay);
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(e.context(format!("gave up after {} attempts", retries + 1)));
                }
            }
        }
    }

    /// Run a read-only probe and return its stdout even when it exits
    /// non-zero (dpkg-query exits 1 when one of several packages is unknown).
    pub fn probe_any_status(&self) -> Result<String> {
        if verbose() {
            eprintln!("+ {}", self.cmdline());
        }
        let mut command = self.command();
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let output = command.output().with_context(|| self.spawn_error())?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Run a read-only probe and return its stdout; a non-zero exit is an
    /// error that carries the command's stderr.
    pub fn probe(&self) -> Result<String> {
        if verbose() {
            eprintln!("+ {}", self.cmdline());
        }
        let mut command = self.command();
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let output = command.output().with_context(|| self.spawn_error())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(CommandFailed {
                cmdline: self.cmdline(),
                status: output.status,
                stderr: Some(String::from_utf8_lossy(&output.stderr).into_owned()),
            }
            .into())
        }
    }
}

/// Quote a word for a POSIX shell if it needs it.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_quotes_what_needs_it() {
        let cmd = Cmd::new("dpkg-query")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-W", "-f=${Status}\n", "it's"]);
        assert_eq!(
            cmd.cmdline(),
            "DEBIAN_FRONTEND=noninteractive dpkg-query -W '-f=${Status}\n' 'it'\\''s'"
        );
    }
}
