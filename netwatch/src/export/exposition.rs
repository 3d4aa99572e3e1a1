//! A writer for the Prometheus text exposition format, version 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>).
//!
//! Each metric family is written once, as `# HELP`, `# TYPE` and then all of
//! its samples together; label values and help texts are escaped as the
//! format requires. Metric and label names are the caller's constants and
//! are checked in debug builds only.

use std::fmt::Write as _;

/// The `Content-Type` of what [`Exposition`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (until the process that counts restarts).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl MetricKind {
    fn name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        }
    }
}

/// Text being written in the exposition format.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    /// The family whose samples are being written.
    family: Option<&'static str>,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Its samples follow
    /// with [`Exposition::sample`].
    pub fn family(&mut self, name: &'static str, kind: MetricKind, help: &str) {
        debug_assert!(valid_name(name, true), "invalid metric name {name:?}");
        debug_assert!(
            kind != MetricKind::Counter || name.ends_with("_total"),
            "counter {name} should end in _total"
        );
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_help(help, &mut self.out);
        self.out.push('\n');
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
        self.family = Some(name);
    }

    /// One sample of the current family.
    pub fn sample(&mut self, labels: &[(&'static str, &str)], value: u64) {
        if self.series(labels) {
            let _ = writeln!(self.out, " {value}");
        }
    }

    /// One sample of the current family whose value is not a whole number
    /// (seconds of CPU time, a start time with its fraction).
    pub fn sample_float(&mut self, labels: &[(&'static str, &str)], value: f64) {
        if self.series(labels) {
            if value.is_nan() {
                self.out.push_str(" NaN\n");
            } else if value.is_infinite() {
                self.out
                    .push_str(if value > 0.0 { " +Inf\n" } else { " -Inf\n" });
            } else {
                // Rust writes finite floats in plain decimal, which the
                // format reads; its `inf` and `NaN` spellings are not all.
                let _ = writeln!(self.out, " {value}");
            }
        }
    }

    /// Writes a sample's name and labels; false outside a family.
    fn series(&mut self, labels: &[(&'static str, &str)]) -> bool {
        let Some(name) = self.family else {
            debug_assert!(false, "sample outside a family");
            return false;
        };
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                debug_assert!(valid_name(label, false), "invalid label name {label:?}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label_value(value, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        true
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Escapes a help text: backslash and line feed.
pub fn escape_help(help: &str, out: &mut String) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Whether `name` is a valid metric name (`colon`: `[a-zA-Z_:][a-zA-Z0-9_:]*`)
/// or label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn valid_name(name: &str, colon: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic() || c == '_' || (colon && c == ':') || (!first && c.is_ascii_digit())
    };
    let mut chars = name.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline_only() {
        let mut out = String::new();
        escape_label_value("a\\b\"c\nd\te{}=,é", &mut out);
        assert_eq!(out, "a\\\\b\\\"c\\nd\te{}=,é");
    }

    #[test]
    fn help_escapes_backslash_and_newline_but_not_quotes() {
        let mut out = String::new();
        escape_help("say \"hi\"\\\nbye", &mut out);
        assert_eq!(out, "say \"hi\"\\\\\\nbye");
    }

    #[test]
    fn families_and_samples_are_laid_out_as_the_format_says() {
        let mut e = Exposition::new();
        e.family("x_total", MetricKind::Counter, "An x.");
        e.sample(&[("a", "1"), ("b", "q\"")], 7);
        e.family("y", MetricKind::Gauge, "A y.");
        e.sample(&[], 0);
        assert_eq!(
            e.finish(),
            "# HELP x_total An x.\n# TYPE x_total counter\nx_total{a=\"1\",b=\"q\\\"\"} 7\n\
             # HELP y A y.\n# TYPE y gauge\ny 0\n"
        );
    }

    #[test]
    fn float_samples_are_plain_decimals_and_the_formats_special_values() {
        let mut e = Exposition::new();
        e.family("z_seconds", MetricKind::Gauge, "A z.");
        for value in [0.25, 1_764_900_000.5, 3.0, f64::INFINITY, f64::NAN] {
            e.sample_float(&[], value);
        }
        assert_eq!(
            e.finish(),
            "# HELP z_seconds A z.\n# TYPE z_seconds gauge\nz_seconds 0.25\n\
             z_seconds 1764900000.5\nz_seconds 3\nz_seconds +Inf\nz_seconds NaN\n"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("netwatch_flow_bytes_total", true));
        assert!(valid_name("a:b", true));
        assert!(!valid_name("a:b", false));
        assert!(!valid_name("1a", true));
        assert!(!valid_name("", true));
        assert!(!valid_name("a-b", true));
    }
}
