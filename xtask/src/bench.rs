//! `cargo xtask bench [NAME...] [--smoke]`: run benchmark binaries (release)
//! and join their Markdown sections into BENCHMARKS.md.
//!
//! Every benchmark binary takes `--smoke` (seconds; each configuration
//! once; numbers meaningless) and `--section FILE` (where it writes its
//! Markdown section); see `tests/src/bench.rs`. A full run writes each
//! section to `<target dir>/bench/<name>.md` and a line saying when and at
//! which commit to `<name>.run`, then rebuilds BENCHMARKS.md from a header
//! describing this machine and the sections of every benchmark in
//! [`BENCHES`] order: those run now, and those kept from earlier runs
//! (marked with their date and commit). A smoke run writes its sections
//! under `<target dir>/bench/smoke/` and leaves BENCHMARKS.md alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::cmd::Cmd;
use crate::host;
use crate::setup::{self, Scope};

/// A benchmark: its name, the package and binary that run it, what it measures.
pub struct Bench {
    pub name: &'static str,
    pub package: &'static str,
    pub bin: &'static str,
    pub what: &'static str,
    /// A full run runs it again (up to [`STEAL_ATTEMPTS`] times in all)
    /// while the hypervisor took more than [`STEAL_RETRY`] of the CPU time
    /// during it: for benchmarks short enough to repeat.
    pub rerun_under_steal: bool,
}

/// The steal share past which a [`Bench::rerun_under_steal`] benchmark is
/// run again, and how many runs it gets at most.
const STEAL_RETRY: f64 = 0.03;
const STEAL_ATTEMPTS: usize = 3;

/// Every benchmark, in the order of BENCHMARKS.md. One entry per benchmark.
pub const BENCHES: &[Bench] = &[
    Bench {
        name: "datapath",
        package: "netwatch-tests",
        bin: "bench-datapath",
        what: "ns/packet of the kernel programs (BPF_PROG_TEST_RUN): empty and counter-only \
               programs vs netwatch on an established flow, a new flow, a drop; IPv4 and IPv6",
        rerun_under_steal: true,
    },
    Bench {
        name: "throughput",
        package: "netwatch-tests",
        bin: "bench-throughput",
        what: "TCP Gbit/s (iperf3) and small-packet UDP packets/s through a container veth: \
               no program vs netwatch enforce+observe (with and without the kfree_skb kernel \
               drop program), observe-only, tcpdump",
        rerun_under_steal: false,
    },
    Bench {
        name: "pipeline",
        package: "netwatch-tests",
        bin: "bench-pipeline",
        what: "flow records/s the agent's ring buffer pipeline takes in without loss, and \
               the loss accounting above that rate",
        rerun_under_steal: false,
    },
    Bench {
        name: "scale",
        package: "netwatch-tests",
        bin: "bench-scale",
        what: "attach time and memory for 10/100/500 endpoints, reconcile after a dockerd \
               restart, agent RSS/CPU at 100k flows, start-to-enforced window",
        rerun_under_steal: false,
    },
];

/// The benchmarks for `--help`: one line each.
pub fn help_list() -> String {
    let mut text = String::from("Benchmarks (all when none is named):\n");
    for bench in BENCHES {
        text.push_str(&format!("  {:<12} {}\n", bench.name, bench.what));
    }
    text.push_str(
        "\nFull runs write BENCHMARKS.md at the workspace root; sections of benchmarks not \
         re-run are kept from <target dir>/bench/<name>.md with their date.",
    );
    text
}

/// The names [`BENCHES`] knows, for the command line's value parser.
pub fn names() -> Vec<&'static str> {
    BENCHES.iter().map(|b| b.name).collect()
}

/// `cargo xtask bench`: setup, then [`run_benches`], then (unless smoke)
/// BENCHMARKS.md.
///
/// # Errors
/// Without root, for an unknown benchmark, or when a benchmark fails.
pub fn run(names: &[String], smoke: bool, args: &[String]) -> Result<()> {
    host::require_root(
        "cargo xtask bench",
        "load BPF programs and create network namespaces",
    )?;
    let selected = select(names)?;
    setup::run(Scope::Full, true)?;
    let load = run_benches(&selected, smoke, args)?;
    if smoke {
        eprintln!("bench: smoke run; BENCHMARKS.md left as it was");
        return Ok(());
    }
    let path = host::workspace_root().join("BENCHMARKS.md");
    let ran: Vec<&str> = selected.iter().map(|b| b.name).collect();
    fs::write(&path, benchmarks_md(&bench_dir()?, &ran, &load)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

/// The benchmarks `names` select, in [`BENCHES`] order; all for none.
fn select(names: &[String]) -> Result<Vec<&'static Bench>> {
    for name in names {
        if !BENCHES.iter().any(|b| b.name == name) {
            bail!(
                "unknown benchmark `{name}`; known: {}",
                self::names().join(", ")
            );
        }
    }
    Ok(BENCHES
        .iter()
        .filter(|b| names.is_empty() || names.iter().any(|n| n == b.name))
        .collect())
}

/// Builds the benchmarks' binaries (release) in one cargo call, then runs
/// each with `--section` (and `--smoke`), stopping at the first failure.
/// A full run first waits for the machine to settle after the build (see
/// [`settle`]). Returns the load average (1, 5, 15 min) just before the
/// first benchmark. The test command's smoke stage calls this with every
/// benchmark.
///
/// # Errors
/// The build fails or a benchmark exits non-zero (named in the error).
pub fn run_benches(benches: &[&Bench], smoke: bool, args: &[String]) -> Result<String> {
    let root = host::workspace_root();
    let mut build = Cmd::new("cargo").dir(root).args(["build", "--release"]);
    for bench in benches {
        build = build.args(["-p", bench.package, "--bin", bench.bin]);
    }
    build.run().context("building the benchmarks")?;
    if !smoke {
        settle(SETTLE_LOAD, SETTLE_MAX);
    }
    // Other work on the machine disturbs benchmarks; say how busy it was.
    let load = load_average().join(" ");
    let target = target_dir()?;
    let dir = if smoke {
        bench_dir()?.join("smoke")
    } else {
        bench_dir()?
    };
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for bench in benches {
        let section = dir.join(format!("{}.md", bench.name));
        let _ = fs::remove_file(&section);
        eprintln!(
            "==> bench {}{}: {}",
            bench.name,
            if smoke { " (smoke)" } else { "" },
            bench.what
        );
        let start = Instant::now();
        // Steal shares of the runs so far (None where unreadable).
        let mut steals: Vec<Option<f64>> = Vec::new();
        loop {
            let ticks_before = cpu_ticks();
            let mut cmd = Cmd::new(target.join("release").join(bench.bin))
                .dir(root)
                .arg("--section")
                .arg(&section);
            if smoke {
                cmd = cmd.arg("--smoke");
            }
            cmd.args(args).run().with_context(|| {
                format!(
                    "benchmark `{}` failed{}",
                    bench.name,
                    if smoke { " in its smoke run" } else { "" }
                )
            })?;
            if !section.is_file() {
                bail!(
                    "benchmark `{}` exited 0 but wrote no section to {}",
                    bench.name,
                    section.display()
                );
            }
            let steal = ticks_before
                .zip(cpu_ticks())
                .and_then(|(before, after)| steal_share(before, after));
            let again = !smoke
                && bench.rerun_under_steal
                && steal.is_some_and(|share| share > STEAL_RETRY)
                && steals.len() + 1 < STEAL_ATTEMPTS;
            if !again {
                if let (false, Some(share)) = (smoke, steal) {
                    append_steal(&section, share, &steals)?;
                }
                break;
            }
            eprintln!(
                "bench {}: the hypervisor took {:.1}% of the CPU time during it; running it again",
                bench.name,
                steal.unwrap_or(0.0) * 100.0
            );
            steals.push(steal);
        }
        eprintln!(
            "bench {}: done in {}",
            bench.name,
            host::secs(start.elapsed())
        );
        if !smoke {
            fs::write(
                dir.join(format!("{}.run", bench.name)),
                format!("{} at commit {}\n", utc_now()?, git_commit()),
            )?;
        }
    }
    Ok(load)
}

/// The 1-minute load average a full run waits for before its first
/// benchmark, and how long it waits at most.
const SETTLE_LOAD: f64 = 1.0;
const SETTLE_MAX: Duration = Duration::from_secs(150);

/// Waits (at most `max`) until the 1-minute load average is below `load`.
/// The build that precedes the benchmarks keeps both cores busy, and the
/// first section measured right after it ran slow: the datapath section's
/// empty program took 79 ns per test run where quiet runs take 47. Says
/// how long it waited, or that it gave up (a busy machine still gets its
/// benchmarks, with the load in BENCHMARKS.md's header).
fn settle(load: f64, max: Duration) {
    let start = Instant::now();
    let one_minute = || {
        load_average()
            .first()
            .and_then(|l| l.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    while one_minute() >= load && start.elapsed() < max {
        std::thread::sleep(Duration::from_secs(2));
    }
    let now = one_minute();
    if now < load {
        eprintln!(
            "bench: load average {now:.2} after waiting {} for the machine to settle",
            host::secs(start.elapsed())
        );
    } else {
        eprintln!(
            "bench: load average still {now:.2} after {}; benchmarking anyway",
            host::secs(start.elapsed())
        );
    }
}

/// The machine's CPU time so far, in clock ticks: (steal, total), from
/// `/proc/stat` (None where it cannot be read).
fn cpu_ticks() -> Option<(u64, u64)> {
    steal_and_total(&fs::read_to_string("/proc/stat").ok()?)
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
fn steal_share(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.1.checked_sub(before.1)?;
    let steal = after.0.checked_sub(before.0)?;
    (total > 0).then(|| steal as f64 / total as f64)
}

/// Appends to a full run's section how much CPU time the hypervisor took
/// while it ran. Learned the hard way: two full runs in a row put
/// established flows at 132-137 ns where the same binary, run alone
/// minutes before, read 79; `top` showed 100% steal meanwhile, and
/// `/proc/stat` counted about a minute of it over the run. A figure taken
/// while the host runs something else on this VM's CPUs reads slow, and
/// the section should say so.
fn append_steal(section: &Path, share: f64, earlier: &[Option<f64>]) -> Result<()> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(section)
        .with_context(|| format!("opening {}", section.display()))?;
    write!(file, "\n{}\n", steal_text(share, earlier))
        .with_context(|| format!("writing {}", section.display()))
}

/// The sentence [`append_steal`] writes.
fn steal_text(share: f64, earlier: &[Option<f64>]) -> String {
    let mut text = format!(
        "Hypervisor steal while this benchmark ran: {:.1}% of the CPU time of this \
         machine's cores (`/proc/stat`): time the host ran something else on this VM's \
         CPUs, during which every figure above reads slow.",
        share * 100.0
    );
    if !earlier.is_empty() {
        let shares: Vec<String> = earlier
            .iter()
            .map(|s| s.map_or("unknown".to_owned(), |s| format!("{:.1}%", s * 100.0)))
            .collect();
        text.push_str(&format!(
            " This is run {} of it: the earlier runs had {} steal (more than {:.0}%), \
             and were run again.",
            earlier.len() + 1,
            shares.join(", "),
            STEAL_RETRY * 100.0
        ));
    }
    text
}

/// `/proc/loadavg`'s 1, 5 and 15 minute figures (empty if unreadable).
fn load_average() -> Vec<String> {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .map(str::to_owned)
        .collect()
}

/// Cargo's target directory (honours CARGO_TARGET_DIR and cargo config).
fn target_dir() -> Result<PathBuf> {
    let metadata = Cmd::new("cargo")
        .dir(host::workspace_root())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .probe()?;
    let key = "\"target_directory\":\"";
    let start = metadata
        .find(key)
        .context("no target_directory in `cargo metadata`")?
        + key.len();
    let end = metadata[start..]
        .find('"')
        .context("unterminated target_directory")?;
    Ok(PathBuf::from(&metadata[start..start + end]))
}

fn bench_dir() -> Result<PathBuf> {
    Ok(target_dir()?.join("bench"))
}

fn utc_now() -> Result<String> {
    Ok(Cmd::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .probe()?
        .trim()
        .to_owned())
}

/// The checked-out commit, `-dirty` when the tree has changes.
fn git_commit() -> String {
    let root = host::workspace_root();
    let commit = Cmd::new("git")
        .dir(root)
        .args(["rev-parse", "--short=12", "HEAD"])
        .probe()
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let dirty = Cmd::new("git")
        .dir(root)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .probe()
        .is_ok_and(|s| !s.trim().is_empty());
    if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    }
}

/// BENCHMARKS.md: the machine, then every benchmark's section that exists
/// in `dir`, in [`BENCHES`] order; those not in `ran` are marked as kept
/// from an earlier run.
fn benchmarks_md(dir: &Path, ran: &[&str], load: &str) -> Result<String> {
    let mut out = String::from("# netwatch benchmarks\n\n");
    out.push_str(&format!(
        "Generated by `cargo xtask bench` on {} at commit {}.\n\n",
        utc_now()?,
        git_commit()
    ));
    out.push_str(&machine(load)?);
    out.push_str(
        "Reproduce (as root): `cargo xtask bench` runs every benchmark; `cargo xtask bench \
         NAME…` runs some (the others keep their sections from earlier runs, marked with \
         their date); `cargo xtask bench --help` lists them. Each benchmark alternates its \
         configurations round by round in one run, so machine noise hits them alike, and \
         reports medians. `cargo xtask test` runs each in `--smoke` mode (seconds, numbers \
         meaningless) so they cannot rot.\n\n",
    );
    for bench in BENCHES {
        let section = dir.join(format!("{}.md", bench.name));
        let Ok(text) = fs::read_to_string(&section) else {
            continue;
        };
        if ran.contains(&bench.name) {
            out.push_str(text.trim_end());
        } else {
            let when = fs::read_to_string(dir.join(format!("{}.run", bench.name)))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "an unknown date".to_owned());
            // After the section's heading line: say it was not re-run.
            let (heading, body) = text.split_once('\n').unwrap_or((&text, ""));
            out.push_str(heading);
            out.push_str(&format!(
                "\n\n_Kept from an earlier run ({when}); not re-run this time._\n"
            ));
            out.push_str(body.trim_end());
        }
        out.push_str("\n\n");
    }
    Ok(out.trim_end().to_owned() + "\n")
}

/// The machine section of the header: CPU, cores, memory, kernel, and the
/// load average just before the first benchmark (after the build and the
/// wait for the machine to settle).
fn machine(load: &str) -> Result<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let meminfo = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let kernel =
        fs::read_to_string("/proc/sys/kernel/osrelease").context("reading the kernel release")?;
    Ok(format!(
        "| machine | |\n| --- | --- |\n| CPU | {model} |\n| cores | {cores} |\n\
         | memory | {:.1} GiB |\n| kernel | Linux {} |\n\
         | load average before the first benchmark (1, 5, 15 min) | {load} |\n\n",
        mem_kib as f64 / (1024.0 * 1024.0),
        kernel.trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_selection_keeps_list_order() {
        let mut names = names();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BENCHES.len());
        let all = select(&[]).unwrap();
        assert_eq!(all.len(), BENCHES.len());
        let last = BENCHES.last().unwrap().name.to_owned();
        let first = BENCHES[0].name.to_owned();
        let picked: Vec<&str> = select(&[last.clone(), first.clone()])
            .unwrap()
            .iter()
            .map(|b| b.name)
            .collect();
        if first != last {
            assert_eq!(picked, [first.as_str(), last.as_str()]);
        }
        assert!(select(&["nosuch".to_owned()]).is_err());
    }

    #[test]
    fn steal_is_read_from_the_first_line_of_proc_stat() {
        let stat = "cpu  4623183 3913322 1635664 2467147 39421 0 109904 60813 0 0\n\
                    cpu0 2242367 1913216 801680 1335254 11741 0 90478 29544 0 0\n";
        let (steal, total) = steal_and_total(stat).expect("parsed");
        assert_eq!(steal, 60813);
        assert_eq!(
            total,
            4623183 + 3913322 + 1635664 + 2467147 + 39421 + 109904 + 60813
        );
        assert_eq!(steal_and_total("cpu0 1 2 3\n"), None, "no total line");
        assert_eq!(steal_and_total("cpu  1 2 3\n"), None, "no steal field");
        let share = steal_share((100, 1_000), (150, 2_000)).expect("a share");
        assert!((share - 0.05).abs() < 1e-9, "{share}");
        assert_eq!(
            steal_share((100, 1_000), (100, 1_000)),
            None,
            "no time passed"
        );
    }

    #[test]
    fn kept_sections_are_marked_with_their_run() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (a, b) = (BENCHES[0].name, BENCHES[1].name);
        fs::write(dir.join(format!("{a}.md")), "## A\n\nnew numbers\n").unwrap();
        fs::write(dir.join(format!("{b}.md")), "## B\n\nold numbers\n").unwrap();
        fs::write(
            dir.join(format!("{b}.run")),
            "2026-01-01 00:00 UTC at commit abc\n",
        )
        .unwrap();
        let md = benchmarks_md(&dir, &[a], "0.10 0.20 0.30").unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(md.starts_with("# netwatch benchmarks\n"), "{md}");
        assert!(md.contains("| cores |"), "{md}");
        assert!(md.contains("| 0.10 0.20 0.30 |"), "{md}");
        let a_at = md.find("## A\n\nnew numbers").expect("section A");
        let b_at = md
            .find("## B\n\n_Kept from an earlier run (2026-01-01 00:00 UTC at commit abc); not re-run this time._\n\nold numbers")
            .expect("section B, marked");
        assert!(a_at < b_at, "sections in BENCHES order");
    }
}
