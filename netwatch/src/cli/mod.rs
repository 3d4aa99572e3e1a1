//! The subcommands, one file each.

pub mod advise;
pub mod agent;
pub mod check;
pub mod command;
pub mod detach;
pub mod dns;
pub mod drops;
pub mod explain;
pub mod flows;
pub mod inspect;
pub mod map;
pub mod networks;
pub mod observe;
pub mod reference;
pub mod signals;
pub mod source;
pub mod status;
pub mod top;

/// `error` and its causes on one line, `: `-separated, like anyhow's
/// `{:#}`, but without a cause whose text the line already holds: many of
/// netwatch's errors (and bollard's) already show their source in their own
/// message, and anyhow would print it twice. Line breaks inside a message
/// (a daemon's error text) become spaces.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace(['\n', '\r'], " ")
}

/// How a subcommand prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON document.
    Json,
}

/// Columns padded to their widest cell, three spaces apart, like `docker
/// ps`; the last column is not padded. Empty cells print as `-`.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |text: &str| {
        if text.is_empty() {
            "-".to_owned()
        } else {
            text.to_owned()
        }
    };
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell(text).chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (text, width)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(text);
            } else {
                out.push_str(&format!("{text:<width$}   "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push_str(&line(row.iter().map(|t| cell(t)).collect()));
    }
    out
}

/// Runs a future to completion on a single-threaded runtime (the CLI talks
/// to dockerd one request at a time).
///
/// # Errors
///
/// When the runtime cannot be built, or as `future` fails.
pub fn block_on<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read the answer: {source}")]
    struct ShowsItsSource {
        source: std::io::Error,
    }

    #[test]
    fn an_error_that_shows_its_source_is_printed_once_on_one_line() {
        let error = anyhow::Error::new(ShowsItsSource {
            source: std::io::Error::other("bad\nbytes"),
        })
        .context("taking the snapshot");
        assert_eq!(
            one_line(&error),
            "taking the snapshot: cannot read the answer: bad bytes"
        );
    }
}
