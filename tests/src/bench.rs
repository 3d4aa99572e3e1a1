//! What every benchmark binary (`src/bin/bench-*.rs`) shares: its command
//! line, side-by-side rounds, medians and ratios, and the Markdown section
//! it contributes to BENCHMARKS.md.
//!
//! The contract with `cargo xtask bench`: each binary takes `--smoke` (a
//! run of seconds that exercises every configuration once, for the test
//! command, so benchmarks cannot rot) and `--section FILE` (where to write
//! its Markdown section; xtask joins the sections under a header naming the
//! machine and kernel). The binary prints the same section on stdout.

use std::path::PathBuf;

/// The options every benchmark binary understands.
#[derive(Debug, Clone, Default)]
pub struct BenchArgs {
    /// A quick run that checks each configuration works; numbers from it
    /// mean nothing.
    pub smoke: bool,
    /// Where to write the Markdown section.
    pub section: Option<PathBuf>,
    /// Arguments this module does not know, for the binary's own use.
    pub rest: Vec<String>,
}

impl BenchArgs {
    /// Parses `std::env::args()`; exits with a one-line error on a
    /// missing `--section` value.
    pub fn from_env() -> BenchArgs {
        match BenchArgs::parse(std::env::args().skip(1)) {
            Ok(args) => args,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
    }

    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<BenchArgs, String> {
        let mut parsed = BenchArgs::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--smoke" => parsed.smoke = true,
                "--section" => {
                    let file = args
                        .next()
                        .ok_or("--section needs a file to write the Markdown section to")?;
                    parsed.section = Some(PathBuf::from(file));
                }
                _ => parsed.rest.push(arg),
            }
        }
        Ok(parsed)
    }

    /// `full` normally, `smoke` in a smoke run.
    pub fn pick<T>(&self, full: T, smoke: T) -> T {
        if self.smoke { smoke } else { full }
    }
}

/// Moves the calling thread to nice -20 (threads and processes it starts
/// later inherit it), so that other work on the machine (a build, say)
/// disturbs the measurement less: CFS then gives the benchmark about 99% of
/// a CPU it shares with nice-0 work. Call it first thing in `main`.
///
/// # Errors
/// Without CAP_SYS_NICE.
pub fn raise_priority() -> std::io::Result<()> {
    // SAFETY: setpriority has no memory-safety preconditions; who = 0 is
    // the calling thread on Linux.
    let result = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, -20) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The median of `values` (the mean of the middle two for an even count);
/// NaN for none.
pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// The `p`th percentile by linear interpolation between closest ranks;
/// NaN for none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

/// Runs `measure` for every configuration, `rounds` times, interleaved
/// (round 1 of each, then round 2 of each, …) so that machine noise hits
/// all configurations alike. Returns the samples per configuration.
pub fn interleaved<C, E>(
    configs: &[C],
    rounds: usize,
    measure: impl FnMut(&C) -> Result<f64, E>,
) -> Result<Vec<Vec<f64>>, E> {
    Ok(interleaved_rounds(configs, rounds, measure)?.samples)
}

/// Interleaved rounds (see [`interleaved`]) with how much CPU time the
/// hypervisor took from this VM during each.
///
/// Learned the hard way: this VM's host sometimes runs something else on
/// its CPUs (steal time, up to 100% in `top` for a minute), and every
/// figure measured meanwhile reads slow, one configuration more than the
/// one next to it; round ratios of the same binary spread 56–121%. The
/// load average does not see it; `/proc/stat` does.
#[derive(Debug, Clone, PartialEq)]
pub struct Rounds {
    /// Per configuration, one sample per round.
    pub samples: Vec<Vec<f64>>,
    /// Per round, steal's share of the machine's CPU time (None where
    /// `/proc/stat` could not be read).
    pub steal: Vec<Option<f64>>,
}

impl Rounds {
    /// Which rounds to keep: those with at most `limit` steal (an unknown
    /// share counts as calm), unless that leaves fewer than `min_kept`,
    /// when every round is kept (a machine stolen from throughout still
    /// gets figures, which say so).
    pub fn calm(&self, limit: f64, min_kept: usize) -> Vec<bool> {
        let keep: Vec<bool> = self
            .steal
            .iter()
            .map(|share| share.is_none_or(|share| share <= limit))
            .collect();
        if keep.iter().filter(|&&k| k).count() < min_kept {
            vec![true; keep.len()]
        } else {
            keep
        }
    }
}

/// [`interleaved`], reading `/proc/stat` around each round.
pub fn interleaved_rounds<C, E>(
    configs: &[C],
    rounds: usize,
    mut measure: impl FnMut(&C) -> Result<f64, E>,
) -> Result<Rounds, E> {
    let mut samples = vec![Vec::with_capacity(rounds); configs.len()];
    let mut steal = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let before = cpu_ticks();
        for (config, samples) in configs.iter().zip(&mut samples) {
            samples.push(measure(config)?);
        }
        steal.push(before.zip(cpu_ticks()).and_then(|(b, a)| steal_share(b, a)));
    }
    Ok(Rounds { samples, steal })
}

/// Per configuration, the samples of the rounds `keep` marks (samples
/// taken round by round, as [`interleaved_rounds`] takes them).
pub fn keep_rounds(samples: &[Vec<f64>], keep: &[bool]) -> Vec<Vec<f64>> {
    samples
        .iter()
        .map(|per_round| {
            per_round
                .iter()
                .zip(keep)
                .filter(|(_, keep)| **keep)
                .map(|(sample, _)| *sample)
                .collect()
        })
        .collect()
}

/// The machine's (steal, total) CPU ticks so far, from the first line of
/// `/proc/stat` (None where it cannot be read). `cargo xtask bench` reads
/// the same line for whole benchmarks (xtask does not link this crate).
pub fn cpu_ticks() -> Option<(u64, u64)> {
    steal_and_total(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// (steal, total) from the text of `/proc/stat`: its first line's user,
/// nice, system, idle, iowait, irq, softirq and steal ticks (guest time is
/// counted in user and nice already).
fn steal_and_total(stat: &str) -> Option<(u64, u64)> {
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .take(8)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let steal = *ticks.get(7)?;
    Some((steal, ticks.iter().sum()))
}

/// Steal as a share of all CPU time between two [`cpu_ticks`] readings.
pub fn steal_share(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.1.checked_sub(before.1)?;
    let steal = after.0.checked_sub(before.0)?;
    (total > 0).then(|| steal as f64 / total as f64)
}

/// A Markdown table.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; panics when its width differs from the headers' (a bug
    /// in the benchmark, not input).
    pub fn row(&mut self, cells: Vec<String>) -> &mut Table {
        assert_eq!(cells.len(), self.headers.len(), "table row width");
        self.rows.push(cells);
        self
    }

    pub fn to_markdown(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut out = line(&self.headers);
        out.push_str(&line(&vec!["---".to_owned(); self.headers.len()]));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// `value / baseline` as `0.97x`.
pub fn ratio(value: f64, baseline: f64) -> String {
    format!("{:.2}x", value / baseline)
}

/// One benchmark's part of BENCHMARKS.md.
#[derive(Debug, Clone)]
pub struct Section {
    title: String,
    body: String,
}

impl Section {
    pub fn new(title: &str) -> Section {
        Section {
            title: title.to_owned(),
            body: String::new(),
        }
    }

    /// A paragraph of prose (what is measured, how, what the goal is).
    pub fn text(&mut self, text: &str) -> &mut Section {
        self.body.push_str(text.trim());
        self.body.push_str("\n\n");
        self
    }

    pub fn table(&mut self, table: &Table) -> &mut Section {
        self.body.push_str(&table.to_markdown());
        self.body.push('\n');
        self
    }

    pub fn to_markdown(&self) -> String {
        format!("## {}\n\n{}", self.title, self.body)
    }

    /// Prints the section and, when asked, writes it to `--section`.
    pub fn emit(&self, args: &BenchArgs) -> std::io::Result<()> {
        let markdown = self.to_markdown();
        print!("{markdown}");
        if let Some(path) = &args.section {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, &markdown)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles_interpolate_between_ranks() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 100.0), 5.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.0), 1.0);
        assert!(
            (percentile(&(1..=100).map(f64::from).collect::<Vec<_>>(), 99.0) - 99.01).abs() < 1e-9
        );
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn rounds_interleave_configurations() {
        let mut order = Vec::new();
        let samples = interleaved(&["a", "b"], 3, |c| {
            order.push(*c);
            Ok::<_, ()>(order.len() as f64)
        })
        .unwrap();
        assert_eq!(order, ["a", "b", "a", "b", "a", "b"]);
        assert_eq!(samples, [vec![1.0, 3.0, 5.0], vec![2.0, 4.0, 6.0]]);
    }

    #[test]
    fn rounds_with_steal_over_the_limit_are_left_out_of_every_configuration() {
        let rounds = Rounds {
            samples: vec![vec![1.0, 2.0, 3.0, 4.0], vec![5.0, 6.0, 7.0, 8.0]],
            steal: vec![Some(0.0), Some(0.2), None, Some(0.03)],
        };
        let keep = rounds.calm(0.03, 2);
        assert_eq!(keep, [true, false, true, true]);
        assert_eq!(
            keep_rounds(&rounds.samples, &keep),
            [vec![1.0, 3.0, 4.0], vec![5.0, 7.0, 8.0]]
        );
        // Too few calm rounds left: all are kept.
        assert_eq!(rounds.calm(0.0, 3), [true; 4]);
    }

    #[test]
    fn steal_is_the_eighth_tick_count_of_the_first_line_of_proc_stat() {
        let stat = "cpu  10 20 30 40 50 60 70 80 90 100\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(steal_and_total(stat), Some((80, 360)));
        assert_eq!(steal_and_total("intr 1 2 3\n"), None);
        assert_eq!(steal_share((80, 360), (90, 460)), Some(0.1));
        assert_eq!(steal_share((80, 360), (80, 360)), None);
        assert!(cpu_ticks().is_some(), "/proc/stat unreadable on Linux");
    }

    #[test]
    fn arguments_split_into_shared_and_own() {
        let args = BenchArgs::parse(
            ["--smoke", "--section", "/tmp/x.md", "--flows", "10"].map(String::from),
        )
        .unwrap();
        assert!(args.smoke);
        assert_eq!(args.section, Some(PathBuf::from("/tmp/x.md")));
        assert_eq!(args.rest, ["--flows", "10"]);
        assert!(BenchArgs::parse(["--section".to_owned()]).is_err());
        assert_eq!(args.pick(100, 1), 1);
    }

    #[test]
    fn sections_render_markdown_tables() {
        let mut table = Table::new(&["config", "Gbit/s", "vs none"]);
        table.row(vec!["none".into(), "10.0".into(), ratio(10.0, 10.0)]);
        table.row(vec!["netwatch".into(), "9.8".into(), ratio(9.8, 10.0)]);
        let mut section = Section::new("Throughput");
        section.text("Measured side by side.").table(&table);
        assert_eq!(
            section.to_markdown(),
            "## Throughput\n\nMeasured side by side.\n\n\
             | config | Gbit/s | vs none |\n| --- | --- | --- |\n\
             | none | 10.0 | 1.00x |\n| netwatch | 9.8 | 0.98x |\n\n"
        );
    }
}
