//! The subcommands, one file each.

pub mod agent;
pub mod check;
pub mod command;
pub mod detach;
pub mod drops;
pub mod explain;
pub mod flows;
pub mod inspect;
pub mod map;
pub mod networks;
pub mod observe;
pub mod signals;
pub mod source;
pub mod status;
pub mod top;

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
