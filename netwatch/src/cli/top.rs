//! `netwatch top`: the loop that fetches flow entries every interval and
//! shows `render::top`'s table of the busiest containers or flows, as plain
//! snapshots or (in a terminal) on a screen of its own (`screen`).

mod screen;

use std::{
    io::{self, IsTerminal, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Result, bail};
use crossterm::terminal;

use super::source::{FilterArgs, FlowSource as _, SourceArgs, open_source};
use crate::{
    flows::FlowEntry,
    render::{By, Snapshot, json_frame, render_frame},
};

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
    output: TopOutput,
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
            output,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// How `top` runs (see [`run_top`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopOptions {
    /// Time between snapshots.
    pub interval: Duration,
    pub by: By,
    /// Print one table (rates over one interval) and stop.
    pub once: bool,
    /// Rows at most (a terminal also limits them to its height).
    pub limit: usize,
    pub output: TopOutput,
}

/// How `top` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TopOutput {
    /// The table (full-screen on a terminal).
    #[default]
    Table,
    /// One JSON object per snapshot and line ([`crate::render::TopFrame`]),
    /// never full-screen.
    Json,
}

impl Default for TopOptions {
    fn default() -> TopOptions {
        TopOptions {
            interval: Duration::from_secs(2),
            by: By::Container,
            once: false,
            limit: 20,
            output: TopOutput::Table,
        }
    }
}

/// Runs `netwatch top`: fetches entries every `interval` and shows the
/// busiest containers or flows.
///
/// - On a terminal (and without `once`): a full-screen view on the
///   alternate screen that redraws in place, hides the cursor, and fits the
///   terminal's size. `q`, Esc or Ctrl-C quit; `c` and `f` switch between
///   containers and flows. The terminal is restored on every way out:
///   those keys, an error, a panic in `fetch`, and SIGINT, SIGTERM or
///   SIGHUP (handlers for those stay installed for the rest of the process:
///   the first one ends the loop at its next check, within 100 ms unless
///   `fetch` is busy; a second one exits at once). Fetch errors after the
///   first are shown in the header while the loop goes on.
/// - Otherwise (a pipe, a file, or `once`): plain text, no escape
///   sequences; one snapshot per interval, separated by a blank line, the
///   first after one interval (rates need two snapshots). With `once`, one
///   snapshot and return. Later fetch errors go to stderr and the loop goes
///   on (with `once`, they are returned); a closed pipe ends it quietly.
///
/// # Errors
///
/// When the first fetch fails, or the terminal cannot be set up or written.
pub fn run_top(
    mut fetch: impl FnMut() -> anyhow::Result<Vec<FlowEntry>>,
    options: &TopOptions,
) -> anyhow::Result<()> {
    let first = Snapshot::now(fetch()?);
    let stdout = io::stdout();
    if !options.once && options.output == TopOutput::Table && stdout.is_terminal() {
        screen::interactive(first, fetch, options)
    } else {
        let width = terminal::size()
            .ok()
            .filter(|_| stdout.is_terminal())
            .map(|(w, _)| usize::from(w))
            .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
            .unwrap_or(120);
        let frames = if options.once { Some(1) } else { None };
        match plain(&mut stdout.lock(), first, fetch, options, width, frames) {
            Err(e)
                if e.downcast_ref::<io::Error>()
                    .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
            {
                Ok(())
            }
            other => other,
        }
    }
}

/// Plain snapshots to `out`: `frames` of them, or forever.
fn plain<W: Write>(
    out: &mut W,
    first: Snapshot,
    mut fetch: impl FnMut() -> anyhow::Result<Vec<FlowEntry>>,
    options: &TopOptions,
    width: usize,
    frames: Option<usize>,
) -> anyhow::Result<()> {
    let mut prev = first;
    let mut written = 0;
    while frames.is_none_or(|n| written < n) {
        std::thread::sleep(options.interval);
        let now = match fetch() {
            Ok(entries) => Snapshot::now(entries),
            Err(e) if options.once => return Err(e),
            Err(e) => {
                eprintln!("netwatch top: {}", super::one_line(&e));
                continue;
            }
        };
        match options.output {
            TopOutput::Table => {
                if written > 0 {
                    out.write_all(b"\n")?;
                }
                let frame = render_frame(
                    Some(&prev),
                    &now,
                    options.by,
                    options.interval,
                    options.limit,
                    width,
                );
                out.write_all(frame.as_bytes())?;
            }
            TopOutput::Json => {
                let frame = json_frame(Some(&prev), &now, options.by, options.limit);
                serde_json::to_writer(&mut *out, &frame)?;
                out.write_all(b"\n")?;
            }
        }
        out.flush()?;
        written += 1;
        prev = now;
    }
    Ok(())
}

/// Live top talkers, by container (bytes sent and received per second)
/// or by flow, refreshing in place in a terminal (q or Ctrl-C quits; c
/// and f switch the view); plain snapshots, one per interval, when the
/// output is not a terminal. Asks the running agent.
///
/// Examples:
///   sudo netwatch top
///   sudo netwatch top --by flow --network shop_backend
///   sudo netwatch top --once --interval 5 > snapshot.txt
///   sudo netwatch top --no-stream -o json | jq '.rows[0]'
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct TopArgs {
    #[command(flatten)]
    pub filter: super::source::FilterArgs,
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// Rank containers or flows.
    #[arg(long, value_enum, default_value_t = crate::render::By::Container)]
    pub by: crate::render::By,
    /// Seconds between refreshes (rates are over this interval).
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// Print one table (rates over one interval) and exit; `--no-stream`
    /// as `docker stats` calls it.
    #[arg(long, visible_alias = "no-stream")]
    pub once: bool,
    /// Rows at most.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// `table`, or `json`: one object per snapshot and line (`time`,
    /// `interval_seconds`, `by`, `rows` with `rates` in bytes and packets
    /// per second), for scripts.
    #[arg(short, long, value_enum, default_value_t = TopOutput::Table)]
    pub output: TopOutput,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::{snapshot_at, web_in, web_out};

    /// Two plain snapshots, 5 ms apart, of web sending and receiving more
    /// each time, printed as `output`.
    fn two_snapshots(output: TopOutput) -> String {
        let mut n = 0u64;
        let fetch = || {
            n += 1;
            Ok(vec![web_out(1_000 * n), web_in(5_000 * n)])
        };
        let options = TopOptions {
            interval: Duration::from_millis(5),
            output,
            ..TopOptions::default()
        };
        let mut out = Vec::new();
        let first = snapshot_at(0, vec![web_out(0), web_in(0)]);
        plain(&mut out, first, fetch, &options, 80, Some(2)).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_output_has_no_escape_sequences_and_separates_snapshots() {
        let text = two_snapshots(TopOutput::Table);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(!text.contains('\r'));
        let frames: Vec<&str> = text.split("\n\nnetwatch top").collect();
        assert_eq!(frames.len(), 2, "{text}");
        assert!(text.starts_with("netwatch top · by container · every 5ms · "));
        assert_eq!(text.matches("CONTAINER").count(), 2);
        assert!(text.lines().all(|l| l.chars().count() <= 80));
    }

    #[test]
    fn json_output_is_one_object_per_snapshot_with_rates_per_second() {
        let text = two_snapshots(TopOutput::Json);
        let frames: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(frames.len(), 2, "{text}");
        let row = &frames[0]["rows"][0];
        assert_eq!(frames[0]["by"], "container");
        assert_eq!(row["container"], "web");
        assert!(row["rates"]["tx_bytes"].as_f64().unwrap() > 0.0, "{row}");
        assert_eq!(row["bytes"], 6_000, "{row}");
    }

    #[test]
    fn fetch_errors_after_the_first_do_not_stop_plain_output() {
        let mut calls = 0;
        let fetch = || {
            calls += 1;
            if calls == 1 {
                anyhow::bail!("agent restarting")
            }
            Ok(vec![web_out(10)])
        };
        let options = TopOptions {
            interval: Duration::from_millis(1),
            ..TopOptions::default()
        };
        let mut out = Vec::new();
        plain(
            &mut out,
            snapshot_at(0, vec![]),
            fetch,
            &options,
            80,
            Some(1),
        )
        .unwrap();
        assert!(String::from_utf8(out).unwrap().contains("web"));
        // With `once` there is no second chance.
        let once = TopOptions {
            once: true,
            ..options
        };
        let fetch = || anyhow::bail!("agent gone");
        let err = plain(
            &mut Vec::new(),
            snapshot_at(0, vec![]),
            fetch,
            &once,
            80,
            Some(1),
        );
        assert_eq!(err.unwrap_err().to_string(), "agent gone");
    }

    #[test]
    fn a_failing_first_fetch_is_an_error() {
        let options = TopOptions {
            once: true,
            ..TopOptions::default()
        };
        let err = run_top(|| anyhow::bail!("no agent"), &options).unwrap_err();
        assert_eq!(err.to_string(), "no agent");
    }
}
