//! The log's format: `log` is the facade and env_logger the backend (one
//! logger for the whole binary); this module only chooses how a record is
//! written to stderr.
//!
//! - `text`: env_logger's own lines, `[2026-12-05T13:21:57Z INFO  target] message`,
//!   for a terminal or a plain file.
//! - `journal`: what journald reads well: no timestamp (the journal stamps
//!   every line itself), and each line starts with its syslog priority,
//!   `<3>` error, `<4>` warning, `<6>` info, `<7>` debug and trace, so
//!   `journalctl -p warning` filters and colours them. A message of several
//!   lines gets the prefix on each, so none of them loses its priority.
//! - `json`: one JSON object a line, `{"time":…,"level":"INFO","target":…,"message":…}`,
//!   for a log shipper.
//! - `auto` (the default): `journal` when stderr is the stream systemd set
//!   up for the service (`JOURNAL_STREAM` names stderr's device and inode, as
//!   systemd.exec(5) says to check), else `text`.
//!
//! The level filter is `RUST_LOG`'s, `info` by default.

use std::io::Write as _;

use log::Level;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `journal` when stderr goes to systemd's journal, else `text`.
    #[default]
    Auto,
    /// Timestamped lines for a terminal or a file.
    Text,
    /// `<N>` syslog priority on each line, no timestamp (journald).
    Journal,
    /// One JSON object per line (log shippers).
    Json,
}

impl LogFormat {
    /// `auto` decided: `journal` when `journal_stream` (the value of
    /// `JOURNAL_STREAM`, `DEVICE:INODE`) names `stderr` (its device and
    /// inode), else `text`.
    pub fn resolve(self, journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> LogFormat {
        if self != LogFormat::Auto {
            return self;
        }
        let named = journal_stream
            .and_then(|value| value.split_once(':'))
            .and_then(|(dev, ino)| Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?)));
        match (named, stderr) {
            (Some(named), Some(stderr)) if named == stderr => LogFormat::Journal,
            _ => LogFormat::Text,
        }
    }
}

/// The syslog priority of a level, as sd-daemon(3) prefixes take it.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// `message` as journal lines: `<N>target: line` for each of its lines.
pub fn journal_lines(level: Level, target: &str, message: &str) -> String {
    let prefix = priority(level);
    let mut out = String::new();
    for line in message.lines() {
        out.push_str(&format!("<{prefix}>{target}: {line}\n"));
    }
    if out.is_empty() {
        out.push_str(&format!("<{prefix}>{target}: \n"));
    }
    out
}

/// `message` as one JSON line.
pub fn json_line(time: jiff::Timestamp, level: Level, target: &str, message: &str) -> String {
    let line = serde_json::json!({
        "time": time.to_string(),
        "level": level.as_str(),
        "target": target,
        "message": message,
    });
    format!("{line}\n")
}

/// stderr's device and inode, to compare with `JOURNAL_STREAM`.
fn stderr_identity() -> Option<(u64, u64)> {
    let stat = nix::sys::stat::fstat(std::io::stderr()).ok()?;
    #[expect(
        clippy::useless_conversion,
        reason = "st_dev and st_ino are u64 on some targets, not on all"
    )]
    Some((u64::from(stat.st_dev), u64::from(stat.st_ino)))
}

/// Installs the logger in `format` (`auto` decided here). Call once, first.
pub fn init(format: LogFormat) {
    let journal_stream = std::env::var("JOURNAL_STREAM").ok();
    let format = format.resolve(journal_stream.as_deref(), stderr_identity());
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match format {
        LogFormat::Auto | LogFormat::Text => {}
        LogFormat::Journal => {
            builder.format(|buf, record| {
                let text =
                    journal_lines(record.level(), record.target(), &record.args().to_string());
                buf.write_all(text.as_bytes())
            });
        }
        LogFormat::Json => {
            builder.format(|buf, record| {
                let text = json_line(
                    jiff::Timestamp::now(),
                    record.level(),
                    record.target(),
                    &record.args().to_string(),
                );
                buf.write_all(text.as_bytes())
            });
        }
    }
    builder.init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_journal_only_when_journal_stream_names_stderr() {
        let auto = LogFormat::Auto;
        assert_eq!(
            auto.resolve(Some("8:12345"), Some((8, 12345))),
            LogFormat::Journal
        );
        // Inherited by a child whose stderr went elsewhere.
        assert_eq!(
            auto.resolve(Some("8:12345"), Some((8, 999))),
            LogFormat::Text
        );
        assert_eq!(auto.resolve(None, Some((8, 12345))), LogFormat::Text);
        assert_eq!(auto.resolve(Some("garbage"), Some((8, 1))), LogFormat::Text);
        // An explicit choice wins over the environment.
        assert_eq!(
            LogFormat::Json.resolve(Some("8:1"), Some((8, 1))),
            LogFormat::Json
        );
    }

    #[test]
    fn journal_lines_carry_the_priority_on_every_line_and_no_timestamp() {
        assert_eq!(
            journal_lines(Level::Warn, "netwatch::agent", "lost Docker"),
            "<4>netwatch::agent: lost Docker\n"
        );
        assert_eq!(
            journal_lines(Level::Error, "t", "one\ntwo"),
            "<3>t: one\n<3>t: two\n"
        );
        assert_eq!(priority(Level::Info), 6);
        assert_eq!(priority(Level::Trace), 7);
    }

    #[test]
    fn json_lines_are_one_object_with_time_level_target_and_message() {
        let time: jiff::Timestamp = "2026-12-05T13:00:00Z".parse().unwrap();
        let line = json_line(time, Level::Info, "netwatch::drop", "drop \"x\"\nmore");
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "2026-12-05T13:00:00Z");
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["target"], "netwatch::drop");
        assert_eq!(value["message"], "drop \"x\"\nmore");
    }
}
