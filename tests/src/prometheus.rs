//! A strict parser for the Prometheus text exposition format, version 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>), to
//! check what netwatch serves on `/metrics`.
//!
//! Strict: names must match the format's patterns (checked with the
//! exporter's own `valid_name`, which has tests of its own); each family
//! has at most one `# HELP` and one `# TYPE`, the `TYPE` before the first
//! sample, and all its lines together; label values and help texts allow
//! only the format's escapes; a label or a series repeated is an error; the
//! text ends with a line feed. Anything it cannot read is an error, never
//! skipped. Histograms and summaries, which netwatch does not export, are
//! refused.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use netwatch::export::exposition::valid_name;

/// A family's `# TYPE` (`Untyped` without one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Untyped,
}

/// One metric family, with its samples in the order they came.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// Milliseconds since the epoch.
    pub timestamp: Option<i64>,
}

const BLANK: [char; 2] = [' ', '\t'];

/// The families of `text`, in the order they came.
///
/// # Errors
/// The first line that breaks the format: `line N: what`.
pub fn parse(text: &str) -> Result<Vec<Family>, String> {
    let mut families = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        line.strip_suffix('\n')
            .ok_or_else(|| "no line feed at the end".to_string())
            .and_then(|line| parse_line(line.trim_matches(BLANK), &mut families))
            .map_err(|e| format!("line {}: {e}", i + 1))?;
    }
    Ok(families)
}

fn parse_line(line: &str, families: &mut Vec<Family>) -> Result<(), String> {
    if let Some(comment) = line.strip_prefix('#') {
        let (keyword, rest) = token(comment);
        let (name, rest) = token(rest);
        match keyword {
            "HELP" => {
                let family = family(families, name)?;
                if family.help.is_some() {
                    return Err(format!("a second HELP for {name}"));
                }
                family.help = Some(unescape(rest, false)?);
            }
            "TYPE" => {
                let family = family(families, name)?;
                if family.kind != Kind::Untyped || !family.samples.is_empty() {
                    return Err(format!("TYPE for {name} after its TYPE or samples"));
                }
                family.kind = match rest {
                    "counter" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    "untyped" => Kind::Untyped,
                    other => return Err(format!("unknown or unsupported type {other:?}")),
                };
            }
            _ => {} // A comment.
        }
        return Ok(());
    }
    if line.is_empty() {
        return Ok(());
    }
    let end = line.find(|c| c == '{' || BLANK.contains(&c));
    let (name, rest) = line.split_at(end.unwrap_or(line.len()));
    let (labels, rest) = match rest.trim_start_matches(BLANK).strip_prefix('{') {
        Some(inside) => labels(inside)?,
        None => (BTreeMap::new(), rest),
    };
    if !rest.starts_with(BLANK) {
        return Err(format!("expected a blank and a value after {line:?}"));
    }
    let mut tokens = rest.split(BLANK).filter(|t| !t.is_empty());
    let value = match tokens.next().unwrap_or("") {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse()
            .ok()
            .filter(|_| {
                v.bytes()
                    .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
            })
            .ok_or_else(|| format!("invalid value {v:?}"))?,
    };
    let timestamp = match tokens.next() {
        Some(t) => Some(t.parse().map_err(|_| format!("invalid timestamp {t:?}"))?),
        None => None,
    };
    if let Some(extra) = tokens.next() {
        return Err(format!("unexpected {extra:?} after the value"));
    }
    let family = family(families, name)?;
    if family.samples.iter().any(|s| s.labels == labels) {
        return Err(format!("a second sample of {name}{labels:?}"));
    }
    family.samples.push(Sample {
        labels,
        value,
        timestamp,
    });
    Ok(())
}

/// The labels after `{`, up to `}`, and what follows.
fn labels(mut rest: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches(BLANK);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let end = rest.find(['=', ',', '}', '"', ' ', '\t']);
        let (label, after) = rest.split_at(end.unwrap_or(rest.len()));
        if !valid_name(label, false) || label.starts_with("__") {
            return Err(format!("invalid label name {label:?}"));
        }
        let value = after.trim_start_matches(BLANK).strip_prefix('=');
        let value = value.and_then(|v| v.trim_start_matches(BLANK).strip_prefix('"'));
        let value = value.ok_or_else(|| format!("no =\"…\" after label {label}"))?;
        let mut escaped = false;
        let close = value.char_indices().find_map(|(i, c)| {
            let close = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            close.then_some(i)
        });
        let close = close.ok_or_else(|| format!("unclosed value of {label}"))?;
        if labels
            .insert(label.to_string(), unescape(&value[..close], true)?)
            .is_some()
        {
            return Err(format!("label {label} twice"));
        }
        rest = value[close + 1..].trim_start_matches(BLANK);
        match rest.strip_prefix(',') {
            Some(after) => rest = after,
            None if rest.starts_with('}') => {}
            None => return Err(format!("expected , or }} after label {label}")),
        }
    }
}

/// The family a line about `name` belongs to: the current one, or a new one
/// if no line was about `name` yet.
fn family<'a>(families: &'a mut Vec<Family>, name: &str) -> Result<&'a mut Family, String> {
    if !valid_name(name, true) {
        return Err(format!("invalid metric name {name:?}"));
    }
    match families.iter().rposition(|f| f.name == name) {
        Some(i) if i + 1 == families.len() => {}
        Some(_) => return Err(format!("the lines of {name} are not together")),
        None => families.push(Family {
            name: name.to_string(),
            kind: Kind::Untyped,
            help: None,
            samples: Vec::new(),
        }),
    }
    Ok(families.last_mut().expect("the family was found or added"))
}

/// The first blank-separated token of `text`, and the rest after blanks.
fn token(text: &str) -> (&str, &str) {
    let text = text.trim_start_matches(BLANK);
    let (token, rest) = text.split_at(text.find(BLANK).unwrap_or(text.len()));
    (token, rest.trim_start_matches(BLANK))
}

/// Undoes `\\` and `\n`, and `\"` in label values; any other escape is an
/// error.
fn unescape(text: &str, label_value: bool) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if label_value => out.push('"'),
            next => {
                return Err(format!(
                    "invalid escape \\{} in {text:?}",
                    next.unwrap_or(' ')
                ));
            }
        }
    }
    Ok(out)
}

/// `GET /metrics` from `addr` (`host:port`): the body, de-chunked. Panics
/// unless the answer is `200`.
pub fn scrape(addr: &str) -> String {
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to metrics at {addr}: {e}"));
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the answer");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    dechunk(body)
}

/// An HTTP/1.1 body, de-chunked when it came in chunks.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_string();
        };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if size == 0 {
            return out;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_with_help_type_labels_values_and_timestamps() {
        let text = "# A comment.\n\
                    # HELP x_total Say \\\\ and \\n, \"quoted\".\n\
                    # TYPE x_total counter\n\
                    x_total{a=\"1\",b=\"q\\\"\\\\\\n\"} 7\n\
                    \tx_total { a = \"2\" , } 1e3 1700000000000 \n\
                    \n\
                    y:z +Inf\n\
                    y:z{a=\"\"} -Inf\n\
                    # HELP g\n\
                    # TYPE g gauge\n\
                    g{c=\"x\",b=\"{,=}\"} NaN\n";
        let families = parse(text).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["x_total", "y:z", "g"]);
        let x = &families[0];
        assert_eq!(x.kind, Kind::Counter);
        assert_eq!(x.help.as_deref(), Some("Say \\ and \n, \"quoted\"."));
        let labels: Vec<(&str, &str)> = x.samples[0]
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(labels, [("a", "1"), ("b", "q\"\\\n")]);
        assert_eq!((x.samples[0].value, x.samples[0].timestamp), (7.0, None));
        assert_eq!(x.samples[1].labels.len(), 1);
        assert_eq!(
            (x.samples[1].value, x.samples[1].timestamp),
            (1000.0, Some(1_700_000_000_000))
        );
        let y = &families[1];
        assert_eq!((y.kind, y.help.as_deref()), (Kind::Untyped, None));
        assert_eq!(y.samples[0].value, f64::INFINITY);
        assert_eq!(y.samples[1].value, f64::NEG_INFINITY);
        assert_eq!(y.samples[1].labels["a"], "");
        let g = &families[2];
        assert_eq!((g.kind, g.help.as_deref()), (Kind::Gauge, Some("")));
        assert!(g.samples[0].value.is_nan());
        assert_eq!(g.samples[0].labels["b"], "{,=}");
        assert_eq!(parse("").unwrap(), []);
    }

    #[test]
    fn anything_off_the_format_is_an_error() {
        for (text, expected) in [
            ("x 1", "line 1: no line feed at the end"),
            ("x 1\ny 2", "line 2: no line feed"),
            ("1x 1\n", "line 1: invalid metric name \"1x\""),
            ("{a=\"1\"} 1\n", "invalid metric name \"\""),
            ("x-y 1\n", "invalid metric name \"x-y\""),
            ("é 1\n", "invalid metric name \"é\""),
            ("x{a:b=\"1\"} 1\n", "invalid label name \"a:b\""),
            ("x{é=\"1\"} 1\n", "invalid label name \"é\""),
            ("x{__a=\"1\"} 1\n", "invalid label name \"__a\""),
            ("x{1a=\"1\"} 1\n", "invalid label name \"1a\""),
            ("x{,} 1\n", "invalid label name \"\""),
            ("x{a=1} 1\n", "no =\"…\" after label a"),
            ("x{a=\"1} 1\n", "unclosed value of a"),
            ("x{a=\"1\" b=\"2\"} 1\n", "expected , or } after label a"),
            ("x{a=\"1\"\n", "expected , or }"),
            ("x{a=\"\\t\"} 1\n", "invalid escape \\t"),
            ("x{a=\"\\\"} 1\n", "unclosed value"),
            ("x{a=\"1\",a=\"2\"} 1\n", "label a twice"),
            ("x{a=\"1\"}1\n", "expected a blank and a value"),
            ("x\n", "expected a blank and a value"),
            ("x \n", "expected a blank and a value"),
            ("x one\n", "invalid value \"one\""),
            ("x inf\n", "invalid value \"inf\""),
            ("x Inf\n", "invalid value \"Inf\""),
            ("x infinity\n", "invalid value \"infinity\""),
            ("x nan\n", "invalid value \"nan\""),
            ("x 0x10\n", "invalid value \"0x10\""),
            ("x 1e\n", "invalid value \"1e\""),
            ("x 1 2.5\n", "invalid timestamp \"2.5\""),
            ("x 1 2 3\n", "unexpected \"3\" after the value"),
            ("x 1\r\n", "invalid value \"1\\r\""),
            ("# HELP x a\n# HELP x b\n", "line 2: a second HELP for x"),
            ("# HELP x a \\q\n", "invalid escape \\q"),
            ("# HELP x a \\\"\n", "invalid escape \\\""),
            ("# HELP x a \\\n", "invalid escape \\ "),
            ("# HELP 9 a\n", "invalid metric name \"9\""),
            ("# TYPE x counter\n# TYPE x counter\n", "TYPE for x after"),
            (
                "x 1\n# TYPE x gauge\n",
                "line 2: TYPE for x after its TYPE or samples",
            ),
            (
                "# TYPE x counters\n",
                "unknown or unsupported type \"counters\"",
            ),
            ("# TYPE x histogram\n", "unsupported type \"histogram\""),
            ("# TYPE x summary\n", "unsupported type \"summary\""),
            ("# TYPE x\n", "unsupported type \"\""),
            (
                "x 1\ny 1\nx{a=\"1\"} 2\n",
                "line 3: the lines of x are not together",
            ),
            (
                "x 1\ny 1\n# HELP x late\n",
                "the lines of x are not together",
            ),
            (
                "x{a=\"1\"} 1\nx{a=\"1\"} 2\n",
                "line 2: a second sample of x",
            ),
            ("x 1\nx 1 5\n", "a second sample of x"),
        ] {
            match parse(text) {
                Ok(families) => panic!("{text:?} parsed: {families:?}"),
                Err(e) => assert!(e.contains(expected), "{text:?}: {e}"),
            }
        }
    }
}
