//! The agent's own process as Prometheus' client libraries report theirs
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`…), read
//! from `/proc/self`, so the standard dashboards and alerts for exporters
//! work on netwatch too, and the build it runs as (`netwatch_build_info`).

use std::{fs, io, path::Path};

use nix::unistd::{SysconfVar, sysconf};

/// The version and commit of this build, as `netwatch_build_info` labels
/// them. The commit is whatever the packager set in
/// `NETWATCH_BUILD_COMMIT` at build time (empty without it): reading git
/// from the build script would rebuild the crate on every commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: &'static str,
    pub commit: &'static str,
}

impl BuildInfo {
    /// This binary's.
    pub const CURRENT: BuildInfo = BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        commit: match option_env!("NETWATCH_BUILD_COMMIT") {
            Some(commit) => commit,
            None => "",
        },
    };
}

/// One reading of the process's resources.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time.
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    /// Since the Unix epoch.
    pub start_time_seconds: f64,
    pub open_fds: u64,
    /// The soft limit (`ulimit -n`); `None` when unlimited.
    pub max_fds: Option<u64>,
}

/// What the parts of `/proc/self/stat` we need say, in the kernel's units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StatFields {
    utime_ticks: u64,
    stime_ticks: u64,
    /// Clock ticks after boot.
    starttime_ticks: u64,
    vsize_bytes: u64,
    rss_pages: u64,
}

/// Reads this process's figures from `proc` (`/proc`).
///
/// # Errors
/// A file of `/proc` that cannot be read or does not say what proc(5) says
/// it does.
pub fn read_process_stats(proc: &Path) -> io::Result<ProcessStats> {
    let stat = parse_stat(&fs::read_to_string(proc.join("self/stat"))?)?;
    let boot_time = parse_boot_time(&fs::read_to_string(proc.join("stat"))?)?;
    let ticks = sysconf_value(SysconfVar::CLK_TCK)? as f64;
    let page_size = sysconf_value(SysconfVar::PAGE_SIZE)?;
    let open_fds = fs::read_dir(proc.join("self/fd"))?.count() as u64;
    let max_fds = parse_max_open_files(&fs::read_to_string(proc.join("self/limits"))?)?;
    Ok(ProcessStats {
        cpu_seconds: (stat.utime_ticks + stat.stime_ticks) as f64 / ticks,
        resident_memory_bytes: stat.rss_pages.saturating_mul(page_size),
        virtual_memory_bytes: stat.vsize_bytes,
        start_time_seconds: boot_time as f64 + stat.starttime_ticks as f64 / ticks,
        open_fds,
        max_fds,
    })
}

fn sysconf_value(var: SysconfVar) -> io::Result<u64> {
    match sysconf(var) {
        Ok(Some(value)) if value > 0 => Ok(value as u64),
        Ok(_) => Err(invalid(format!("sysconf({var:?}) has no value"))),
        Err(e) => Err(io::Error::from(e)),
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Fields of proc(5)'s `/proc/pid/stat`. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(text: &str) -> io::Result<StatFields> {
    let after_comm = text
        .rfind(')')
        .map(|end| &text[end + 1..])
        .ok_or_else(|| invalid("/proc/self/stat has no command name".into()))?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // proc(5) numbers fields from 1; the first after the name is 3.
    let field = |number: usize| -> io::Result<u64> {
        fields
            .get(number - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| invalid(format!("/proc/self/stat: no field {number}")))
    };
    Ok(StatFields {
        utime_ticks: field(14)?,
        stime_ticks: field(15)?,
        starttime_ticks: field(22)?,
        vsize_bytes: field(23)?,
        rss_pages: field(24)?,
    })
}

/// `btime` of `/proc/stat`: boot time, in seconds since the epoch.
fn parse_boot_time(text: &str) -> io::Result<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| invalid("/proc/stat has no btime".into()))
}

/// The soft limit on `Max open files` in `/proc/self/limits`.
fn parse_max_open_files(text: &str) -> io::Result<Option<u64>> {
    let soft = text
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| invalid("/proc/self/limits has no Max open files".into()))?;
    if soft == "unlimited" {
        return Ok(None);
    }
    soft.parse()
        .map(Some)
        .map_err(|_| invalid(format!("/proc/self/limits: open files limit {soft:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis_of_the_name() {
        // A name with a space and a `)` of its own, as a thread may set it.
        let line = "4242 (tokio) runtime) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 130 0 0 20 0 6 0 77000 123456789 3000 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 17 0 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(line).unwrap(),
            StatFields {
                utime_ticks: 250,
                stime_ticks: 130,
                starttime_ticks: 77000,
                vsize_bytes: 123_456_789,
                rss_pages: 3000,
            }
        );
        assert!(parse_stat("4242 tokio S 1").is_err());
        assert!(parse_stat("4242 (tokio) S 1 2").is_err(), "too short");
    }

    #[test]
    fn boot_time_and_the_open_files_limit_are_found_by_their_names() {
        let stat = "cpu  1 2 3\nintr 5\nctxt 9\nbtime 1764900000\nprocesses 77\n";
        assert_eq!(parse_boot_time(stat).unwrap(), 1_764_900_000);
        assert!(parse_boot_time("cpu 1 2 3\n").is_err());
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95000                95000                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits).unwrap(), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited).unwrap(), None);
        assert!(parse_max_open_files("Max processes 1 1 processes\n").is_err());
    }

    #[test]
    fn this_process_reads_as_running_since_boot_with_memory_and_files() {
        let stats = read_process_stats(Path::new("/proc")).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            stats.start_time_seconds > 1.0e9 && stats.start_time_seconds <= now + 1.0,
            "{stats:?}"
        );
        assert!(stats.cpu_seconds >= 0.0, "{stats:?}");
        assert!(stats.resident_memory_bytes > 0, "{stats:?}");
        assert!(
            stats.virtual_memory_bytes >= stats.resident_memory_bytes,
            "{stats:?}"
        );
        // stdin, stdout, stderr and the directory being read, at least.
        assert!(stats.open_fds >= 3, "{stats:?}");
        assert!(
            stats.max_fds.is_none_or(|max| max >= stats.open_fds),
            "{stats:?}"
        );
    }
}
