//! The subcommands, one file each.

pub mod check;
pub mod detach;
pub mod status;

/// How a subcommand prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON document.
    Json,
}
