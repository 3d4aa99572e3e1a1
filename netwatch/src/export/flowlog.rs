//! The JSON-lines flow log: every flow event the agent observes, one JSON
//! object a line (the objects `netwatch observe -o jsonl` prints), for a
//! fleet's log shipper (Vector, Fluent Bit, Promtail…) to collect.
//!
//! Rotation is size-based, as Docker's `json-file` log driver does it:
//! with `--flow-log /var/log/netwatch/flows.log --max-size 10m --max-file 3`
//! the log is `flows.log` and the rotated files are `flows.log.1` (the
//! newest) and `flows.log.2`; a rotation drops the oldest. A file is
//! rotated before a line would take it past `max-size`, so files stay
//! within it and a line is never split across two files (a single line
//! longer than `max-size` gets a file of its own). With `--max-file 1` the
//! log is truncated instead. Sizes take `k`, `m` and `g` suffixes, in
//! units of 1024 as Docker's are.
//!
//! Lines (schema/flows.schema.json, `#/$defs/flowLogLine`):
//! ```text
//! {"event":"flow-open","time":"2026-05-04T10:00:00.25Z","schema_version":1,"host":"node1","container":"web",…,"flows":1,"delta_packets":1,"delta_bytes":74}
//! {"event":"lost","count":17,"time":"2026-05-04T10:00:01Z","schema_version":1,"host":"node1"}
//! ```
//! `packets` and `bytes` are running totals; a pipeline that sums sums
//! `delta_packets` and `delta_bytes` ([`crate::flows::aggregate::Delta`]).
//! `lost` says that the writer fell behind the agent's event feed and
//! missed `count` events; they are not in the log.
//!
//! Files netwatch creates get mode 0640 (a log of who talks to whom is not
//! for every local user); an existing file keeps its mode. A file removed
//! or moved away by someone else is noticed at the next write and created
//! again. A write error is logged once (until writing works again) and
//! counted, the lines it affects are counted as unwritten, and the writer
//! keeps going: a full disk never stops the agent. Files are written on a
//! blocking thread, one batch at a time, so a slow disk never stalls the
//! agent either (the writer lags and says so with a `lost` line).

use std::{
    ffi::OsString,
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use jiff::Timestamp;
use log::{info, warn};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::{
    broadcast::error::{RecvError, TryRecvError},
    watch,
};

use crate::flows::{EventFeed, ObservedEvent};

/// `--max-size` when none is given.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;

/// `--max-file` when none is given: the log and two rotated files.
pub const DEFAULT_MAX_FILE: u32 = 3;

/// Mode of the files netwatch creates.
pub const FILE_MODE: u32 = 0o640;

/// Events written per batch (one write, usually).
const MAX_BATCH: usize = 1024;

/// Where the flow log goes and how it rotates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowLogOptions {
    /// The log; rotated files are `PATH.1` (newest) … `PATH.{max_file-1}`.
    pub path: PathBuf,
    /// Bytes a file may hold (at least 1).
    pub max_size: u64,
    /// Files kept, the log included (at least 1; 1 truncates instead of
    /// rotating).
    pub max_file: u32,
}

impl FlowLogOptions {
    /// `path` with the default limits (10 MiB, 3 files).
    pub fn new(path: impl Into<PathBuf>) -> FlowLogOptions {
        FlowLogOptions {
            path: path.into(),
            max_size: DEFAULT_MAX_SIZE,
            max_file: DEFAULT_MAX_FILE,
        }
    }

    /// The `n`th rotated file (`PATH.n`); 0 is the log itself.
    pub fn rotated_path(&self, n: u32) -> PathBuf {
        if n == 0 {
            return self.path.clone();
        }
        let mut name = OsString::from(self.path.as_os_str());
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }
}

/// A command-line value that is not a size or a file count.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidValue(String);

/// Parses a size as Docker's `--log-opt max-size` does: a number of bytes
/// with an optional `k`, `m` or `g` suffix (units of 1024; `kb`, `KiB`,
/// `b` and upper case are accepted too), e.g. `10m`, `512k`, `1.5g`.
/// Meant for clap: `#[arg(value_parser = parse_size)]`.
///
/// # Errors
/// Anything else, zero, or more than `u64::MAX` bytes; the message is one
/// line.
pub fn parse_size(text: &str) -> Result<u64, InvalidValue> {
    let invalid = |why: &str| {
        InvalidValue(format!(
            "{why}: expected a number of bytes with an optional k, m or g suffix, e.g. 10m"
        ))
    };
    let text = text.trim();
    let number_end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let suffix = suffix.trim_start();
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || (number.contains('.') && fraction.is_empty()) {
        return Err(invalid(&format!("`{text}` is not a size")));
    }
    if fraction.contains('.') || fraction.len() > 18 {
        return Err(invalid(&format!("`{number}` is not a number")));
    }
    let unit: u128 = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(invalid(&format!("unknown unit `{suffix}` in `{text}`"))),
    };
    let too_large = || invalid(&format!("`{text}` is too large"));
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let fraction_value: u128 = if fraction.is_empty() {
        0
    } else {
        // At most 18 digits: fits, and so does the product below.
        let digits: u128 = fraction.parse().map_err(|_| too_large())?;
        digits * unit / 10u128.pow(fraction.len() as u32)
    };
    let bytes = whole
        .checked_mul(unit)
        .and_then(|b| b.checked_add(fraction_value))
        .and_then(|b| u64::try_from(b).ok())
        .ok_or_else(too_large)?;
    if bytes == 0 {
        return Err(InvalidValue(format!(
            "`{text}` leaves no room for a line: give at least 1 byte"
        )));
    }
    Ok(bytes)
}

/// Parses `--max-file`: how many files to keep, the log included (≥ 1).
///
/// # Errors
/// Not a whole number from 1 to 4294967295; the message is one line.
pub fn parse_max_file(text: &str) -> Result<u32, InvalidValue> {
    match text.trim().parse::<u32>() {
        Ok(0) => Err(InvalidValue(
            "keep at least 1 file (1: the log alone, truncated when full)".to_string(),
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(InvalidValue(format!(
            "`{text}` is not a number of files (a whole number, at least 1)"
        ))),
    }
}

/// What the writer counted, shared with metrics while it runs.
#[derive(Debug, Default)]
pub struct FlowLogCounters {
    lines: AtomicU64,
    lost_events: AtomicU64,
    write_errors: AtomicU64,
    unwritten_lines: AtomicU64,
    rotations: AtomicU64,
}

/// A reading of [`FlowLogCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowLogStats {
    /// Lines written (`lost` lines included).
    pub lines: u64,
    /// Events the writer fell too far behind to see (reported in `lost`
    /// lines).
    pub lost_events: u64,
    /// Failed opens, writes and rotations.
    pub write_errors: u64,
    /// Lines that a failed open or write kept out of the log.
    pub unwritten_lines: u64,
    pub rotations: u64,
}

impl FlowLogCounters {
    pub fn stats(&self) -> FlowLogStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FlowLogStats {
            lines: get(&self.lines),
            lost_events: get(&self.lost_events),
            write_errors: get(&self.write_errors),
            unwritten_lines: get(&self.unwritten_lines),
            rotations: get(&self.rotations),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowLogLine {
    /// Shared with the pipeline's feed and its other observers.
    Event(Arc<ObservedEvent>),
    /// `count` events were missed.
    Lost { count: u64, time: Timestamp },
}

#[derive(Serialize)]
struct LostLine {
    event: &'static str,
    count: u64,
    time: Timestamp,
    schema_version: u32,
    host: &'static str,
}

impl FlowLogLine {
    /// The line's JSON and its line feed.
    fn encode(&self) -> serde_json::Result<Vec<u8>> {
        let mut line = match self {
            FlowLogLine::Event(event) => serde_json::to_vec(&**event)?,
            FlowLogLine::Lost { count, time } => serde_json::to_vec(&LostLine {
                event: "lost",
                count: *count,
                time: *time,
                schema_version: crate::flows::SCHEMA_VERSION,
                host: crate::host::host_name(),
            })?,
        };
        line.push(b'\n');
        Ok(line)
    }
}

/// The file being written.
#[derive(Debug)]
struct Current {
    file: File,
    /// Bytes in it.
    size: u64,
    /// Which file it is, to notice it being moved or removed.
    dev: u64,
    ino: u64,
    /// It ends in a partial line (a write that failed half way): start
    /// with a line feed so the next line stands alone.
    needs_newline: bool,
}

/// A flow log writer. [`FlowLog::run`] feeds it from the agent's event
/// broadcast; [`FlowLog::write`] writes lines directly (blocking).
#[derive(Debug)]
pub struct FlowLog {
    options: FlowLogOptions,
    current: Option<Current>,
    counters: Arc<FlowLogCounters>,
    /// Writing fails now: the error was logged.
    failing: bool,
    /// Rotating fails now: the error was logged.
    rotation_failing: bool,
    /// Changes when the file must be closed and opened again (SIGHUP).
    reopen: Option<watch::Receiver<u64>>,
}

impl FlowLog {
    /// Opens (or creates) the log, appending to what it holds.
    ///
    /// # Errors
    /// `max_size` or `max_file` is 0, or the file cannot be opened: its
    /// directory is missing or not writable. Call this at startup so a bad
    /// `--flow-log` stops the agent with a clear error.
    pub fn open(options: FlowLogOptions) -> io::Result<FlowLog> {
        if options.max_size == 0 || options.max_file == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the flow log needs a max size and a max file count of at least 1",
            ));
        }
        let current = open_current(&options.path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open the flow log {}: {e}", options.path.display()),
            )
        })?;
        Ok(FlowLog {
            options,
            current: Some(current),
            counters: Arc::default(),
            failing: false,
            rotation_failing: false,
            reopen: None,
        })
    }

    /// Closes the file and opens `path` again whenever `reopen` changes
    /// (the agent's SIGHUP), so that after logrotate moved the file away the
    /// new one exists at once, before the next line.
    #[must_use]
    pub fn reopen_on(mut self, reopen: watch::Receiver<u64>) -> FlowLog {
        self.reopen = Some(reopen);
        self
    }

    /// Closes the current file and opens the path again (creating it).
    /// Errors are logged and counted; the next write tries again.
    pub fn reopen(&mut self) {
        self.current = None;
        match open_current(&self.options.path) {
            Ok(current) => {
                self.current = Some(current);
                info!("flow log {}: reopened", self.options.path.display());
            }
            Err(e) => self.failed(&e, 0),
        }
    }

    /// What the writer counted; hand it to the metrics source.
    pub fn counters(&self) -> Arc<FlowLogCounters> {
        Arc::clone(&self.counters)
    }

    pub fn options(&self) -> &FlowLogOptions {
        &self.options
    }

    /// Writes events as they arrive until the sender side closes (the
    /// pipeline is gone). A lag becomes a `lost` line. Dropping the future
    /// is safe: every batch is written before the next is awaited.
    pub async fn run(self, mut events: EventFeed) {
        let mut log = self;
        let mut reopen = log.reopen.take();
        loop {
            let mut batch = Vec::new();
            let mut closed = false;
            let reopened = async {
                match &mut reopen {
                    Some(receiver) => receiver.changed().await,
                    None => std::future::pending().await,
                }
            };
            let received = tokio::select! {
                received = events.recv() => received,
                changed = reopened => {
                    if changed.is_err() {
                        reopen = None;
                        continue;
                    }
                    match tokio::task::spawn_blocking(move || {
                        log.reopen();
                        log
                    })
                    .await
                    {
                        Ok(back) => log = back,
                        Err(e) => {
                            warn!("flow log: the writer stopped: {e}");
                            return;
                        }
                    }
                    continue;
                }
            };
            match received {
                Ok(event) => batch.push(FlowLogLine::Event(event)),
                Err(RecvError::Lagged(count)) => batch.push(log.lost(count)),
                Err(RecvError::Closed) => return,
            }
            while batch.len() < MAX_BATCH {
                match events.try_recv() {
                    Ok(event) => batch.push(FlowLogLine::Event(event)),
                    Err(TryRecvError::Lagged(count)) => batch.push(log.lost(count)),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => {
                        closed = true;
                        break;
                    }
                }
            }
            let written = tokio::task::spawn_blocking(move || {
                log.write(&batch);
                log
            })
            .await;
            match written {
                Ok(back) => log = back,
                Err(e) => {
                    warn!("flow log: the writer stopped: {e}");
                    return;
                }
            }
            if closed {
                return;
            }
        }
    }

    fn lost(&self, count: u64) -> FlowLogLine {
        FlowLogCounters::add(&self.counters.lost_events, count);
        FlowLogLine::Lost {
            count,
            time: Timestamp::now(),
        }
    }

    /// Writes `lines` (blocking), rotating as needed. Errors are logged
    /// and counted, never returned.
    pub fn write(&mut self, lines: &[FlowLogLine]) {
        let encoded: Vec<Vec<u8>> = lines
            .iter()
            .filter_map(|line| match line.encode() {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    // Cannot happen with these types; count it if it does.
                    self.failed(&io::Error::other(e), 1);
                    None
                }
            })
            .collect();
        self.write_encoded(&encoded);
    }

    fn write_encoded(&mut self, lines: &[Vec<u8>]) {
        if lines.is_empty() {
            return;
        }
        if let Err(e) = self.ensure_current() {
            self.failed(&e, lines.len() as u64);
            return;
        }
        let mut pending = Vec::new();
        let mut pending_lines = 0u64;
        // After a failed rotation, the rest of the batch is appended.
        let mut may_rotate = true;
        for (i, line) in lines.iter().enumerate() {
            let Some(current) = &self.current else {
                // A failed flush or rotation closed the file.
                self.unwritten((lines.len() - i) as u64);
                return;
            };
            let size = current.size + pending.len() as u64;
            if may_rotate && size > 0 && size + line.len() as u64 > self.options.max_size {
                if !self.flush(&mut pending, &mut pending_lines) {
                    self.unwritten((lines.len() - i) as u64);
                    return;
                }
                may_rotate = self.rotate();
                if self.current.is_none() {
                    self.unwritten((lines.len() - i) as u64);
                    return;
                }
            }
            if pending.is_empty() && self.current.as_ref().is_some_and(|c| c.needs_newline) {
                pending.push(b'\n');
            }
            pending.extend_from_slice(line);
            pending_lines += 1;
        }
        if self.flush(&mut pending, &mut pending_lines) && self.failing {
            info!("flow log {}: writing again", self.options.path.display());
            self.failing = false;
        }
    }

    /// Writes what is pending to the current file; on an error closes it
    /// and counts the pending lines as unwritten.
    fn flush(&mut self, pending: &mut Vec<u8>, pending_lines: &mut u64) -> bool {
        if pending.is_empty() {
            return true;
        }
        let Some(current) = &mut self.current else {
            return false;
        };
        let result = current.file.write_all(pending);
        let lines = std::mem::take(pending_lines);
        let bytes = std::mem::take(pending);
        match result {
            Ok(()) => {
                current.size += bytes.len() as u64;
                current.needs_newline = false;
                FlowLogCounters::add(&self.counters.lines, lines);
                true
            }
            Err(e) => {
                // Part of it may be in the file; the reopened file starts
                // with a line feed if so.
                self.current = None;
                self.failed(&e, lines);
                false
            }
        }
    }

    /// Opens the log again if it is closed (after an error) or if the path
    /// no longer names the file being written (moved or removed).
    fn ensure_current(&mut self) -> io::Result<()> {
        if let Some(current) = &self.current {
            match fs::metadata(&self.options.path) {
                Ok(meta) if meta.dev() == current.dev && meta.ino() == current.ino => {
                    return Ok(());
                }
                _ => info!(
                    "flow log {}: moved or removed by someone else; starting it again",
                    self.options.path.display()
                ),
            }
        }
        self.current = None;
        self.current = Some(open_current(&self.options.path)?);
        Ok(())
    }

    /// Shifts `PATH.n` to `PATH.n+1` (dropping the oldest) and `PATH` to
    /// `PATH.1`, then starts a new `PATH`; with one file, truncates.
    /// On a failure to shift, keeps appending to the current file (past
    /// `max_size`) and tries again in the next batch. Returns whether it
    /// rotated.
    fn rotate(&mut self) -> bool {
        let result = if self.options.max_file <= 1 {
            self.truncate()
        } else {
            self.shift()
        };
        match result {
            Ok(()) => {
                FlowLogCounters::add(&self.counters.rotations, 1);
                if self.rotation_failing {
                    info!("flow log {}: rotating again", self.options.path.display());
                    self.rotation_failing = false;
                }
                true
            }
            Err(e) => {
                FlowLogCounters::add(&self.counters.write_errors, 1);
                if !self.rotation_failing {
                    warn!(
                        "flow log {}: cannot rotate: {e}; appending past the size limit until \
                         rotating works again",
                        self.options.path.display()
                    );
                    self.rotation_failing = true;
                }
                false
            }
        }
    }

    fn truncate(&mut self) -> io::Result<()> {
        let Some(current) = &mut self.current else {
            return Ok(());
        };
        current.file.set_len(0)?;
        current.size = 0;
        current.needs_newline = false;
        Ok(())
    }

    fn shift(&mut self) -> io::Result<()> {
        let last = self.options.max_file - 1;
        ignore_missing(fs::remove_file(self.options.rotated_path(last)))?;
        for n in (1..last).rev() {
            ignore_missing(fs::rename(
                self.options.rotated_path(n),
                self.options.rotated_path(n + 1),
            ))?;
        }
        fs::rename(&self.options.path, self.options.rotated_path(1))?;
        // The old file is PATH.1 now: never write to it again.
        self.current = None;
        self.current = Some(open_current(&self.options.path)?);
        Ok(())
    }

    fn unwritten(&self, lines: u64) {
        FlowLogCounters::add(&self.counters.unwritten_lines, lines);
    }

    fn failed(&mut self, e: &io::Error, lines: u64) {
        FlowLogCounters::add(&self.counters.write_errors, 1);
        self.unwritten(lines);
        if !self.failing {
            warn!(
                "flow log {}: {e}; lines are counted and skipped until writing works again",
                self.options.path.display()
            );
            self.failing = true;
        }
    }
}

/// Opens a flow log, opening `options.path` first and returning its error
/// (so the caller can refuse to start), then writes every event from
/// `events` until the sender closes. See [`FlowLog::run`].
///
/// # Errors
/// The log cannot be opened.
pub async fn write_flow_log(events: EventFeed, options: FlowLogOptions) -> io::Result<()> {
    FlowLog::open(options)?.run(events).await;
    Ok(())
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Opens `path` for appending, creating it with [`FILE_MODE`] (whatever
/// the umask) if it does not exist.
fn open_current(path: &Path) -> io::Result<Current> {
    let created = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path);
    let file = match created {
        Ok(file) => {
            file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
            file
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            OpenOptions::new().read(true).append(true).open(path)?
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let size = meta.len();
    let needs_newline = size > 0 && !ends_with_newline(&file, size);
    Ok(Current {
        file,
        size,
        dev: meta.dev(),
        ino: meta.ino(),
        needs_newline,
    })
}

fn ends_with_newline(file: &File, size: u64) -> bool {
    use std::os::unix::fs::FileExt as _;
    let mut last = [0u8];
    // Unreadable: assume the worst, an extra empty line is harmless.
    file.read_at(&mut last, size - 1).is_ok_and(|n| n == 1) && last[0] == b'\n'
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::render::fixtures::{at, egress};

    /// A directory removed when the test ends.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "netwatch-flowlog-{name}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// A log at `flows.log` in this directory, with these limits.
        fn options(&self, max_size: u64, max_file: u32) -> FlowLogOptions {
            FlowLogOptions {
                path: self.0.join("flows.log"),
                max_size,
                max_file,
            }
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn event(n: u64) -> ObservedEvent {
        let mut flow = egress(
            "web",
            "front",
            ("172.30.0.2", 40000),
            ("172.30.0.3", 80),
            n * 1000,
        );
        // Sequence numbers of different widths: lines of different lengths.
        flow.packets = n;
        ObservedEvent {
            event: "flow-open".to_string(),
            time: at(0),
            flow,
            delta_packets: 1,
            delta_bytes: 60,
        }
    }

    fn lines(n: std::ops::Range<u64>) -> Vec<FlowLogLine> {
        n.map(|i| FlowLogLine::Event(Arc::new(event(i)))).collect()
    }

    fn line_len(n: u64) -> u64 {
        FlowLogLine::Event(Arc::new(event(n)))
            .encode()
            .unwrap()
            .len() as u64
    }

    /// The sequence numbers in a file, checking that every line is whole.
    fn sequence(path: &Path) -> Vec<u64> {
        let text = fs::read_to_string(path).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{path:?} ends mid-line"
        );
        text.lines()
            .map(|line| {
                let event: ObservedEvent = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{path:?}: {e}: {line:?}"));
                event.flow.packets
            })
            .collect()
    }

    #[test]
    fn reopen_starts_a_new_file_at_the_path_of_one_moved_away() {
        let dir = TempDir::new("reopen");
        let options = dir.options(1 << 20, 3);
        let mut log = FlowLog::open(options.clone()).unwrap();
        log.write(&lines(0..2));
        let moved = dir.0.join("flows.log.moved");
        fs::rename(&options.path, &moved).unwrap();
        log.reopen();
        assert!(options.path.exists(), "reopened before any line is written");
        log.write(&lines(2..3));
        assert_eq!(sequence(&moved), [0, 1]);
        assert_eq!(sequence(&options.path), [2]);
    }

    #[test]
    fn sizes_parse_like_dockers() {
        for (text, bytes) in [
            ("10m", 10 << 20),
            ("10M", 10 << 20),
            ("10mb", 10 << 20),
            ("10MiB", 10 << 20),
            ("10 m", 10 << 20),
            ("512k", 512 << 10),
            ("1g", 1 << 30),
            ("1.5m", 3 << 19),
            ("100", 100),
            ("100b", 100),
            ("1", 1),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for text in [
            "",
            "m",
            "10x",
            "10mm",
            "0",
            "0k",
            "-1",
            "1.2.3",
            "1.",
            ".5m",
            "99999999999g",
        ] {
            let error = parse_size(text).expect_err(text).to_string();
            assert!(!error.contains('\n'), "{error}");
            assert!(!error.is_empty());
        }
        assert!(
            parse_size("10x")
                .unwrap_err()
                .to_string()
                .contains("unknown unit `x`")
        );
        assert_eq!(parse_max_file("3"), Ok(3));
        assert!(parse_max_file("0").is_err());
        assert!(parse_max_file("three").is_err());
    }

    #[test]
    fn rotation_keeps_max_file_files_within_max_size_newest_last() {
        let dir = TempDir::new("rotate");
        let options = dir.options(3 * line_len(500) + 10, 3);
        let mut log = FlowLog::open(options.clone()).unwrap();
        // One batch and many small ones: rotation happens inside a batch too.
        log.write(&lines(0..20));
        for i in 20..40 {
            log.write(&lines(i..i + 1));
        }
        let files: Vec<PathBuf> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 3, "{files:?}");
        for n in 0..3 {
            let size = fs::metadata(options.rotated_path(n)).unwrap().len();
            assert!(size <= options.max_size, "file {n}: {size}");
        }
        // Oldest to newest: PATH.2, PATH.1, PATH, a contiguous run ending
        // with the last line written.
        let kept: Vec<u64> = [2, 1, 0]
            .iter()
            .flat_map(|n| sequence(&options.rotated_path(*n)))
            .collect();
        assert_eq!(kept.last(), Some(&39));
        let first = kept[0];
        assert_eq!(kept, (first..40).collect::<Vec<_>>());
        // Each rotated file was full: one more line would not have fitted.
        for n in [1, 2] {
            let size = fs::metadata(options.rotated_path(n)).unwrap().len();
            assert!(size + line_len(10) > options.max_size);
        }
        let stats = log.counters().stats();
        assert_eq!(stats.lines, 40);
        assert!(stats.rotations >= 3, "{stats:?}");
        assert_eq!(stats.write_errors, 0);
    }

    #[test]
    fn one_file_is_truncated_instead_of_rotated() {
        let dir = TempDir::new("truncate");
        let options = dir.options(2 * line_len(10) + 1, 1);
        let mut log = FlowLog::open(options.clone()).unwrap();
        log.write(&lines(10..15));
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);
        assert_eq!(sequence(&options.path), vec![14]);
    }

    #[test]
    fn a_line_longer_than_max_size_gets_a_file_of_its_own() {
        let dir = TempDir::new("long");
        let options = dir.options(50, 4);
        let mut log = FlowLog::open(options.clone()).unwrap();
        log.write(&lines(1..4));
        assert_eq!(sequence(&options.rotated_path(2)), vec![1]);
        assert_eq!(sequence(&options.rotated_path(1)), vec![2]);
        assert_eq!(sequence(&options.path), vec![3]);
    }

    #[test]
    fn new_files_are_0640_and_an_existing_log_is_appended_to() {
        let dir = TempDir::new("mode");
        let options = dir.options(10 * line_len(1), 2);
        // A log ending in a partial line (an earlier run died mid-write).
        fs::write(&options.path, b"{\"event\":\"flow-op").unwrap();
        fs::set_permissions(&options.path, fs::Permissions::from_mode(0o600)).unwrap();
        let mut log = FlowLog::open(options.clone()).unwrap();
        log.write(&lines(1..3));
        let text = fs::read_to_string(&options.path).unwrap();
        let mut text_lines = text.lines();
        assert_eq!(text_lines.next(), Some("{\"event\":\"flow-op"));
        assert_eq!(
            text_lines.count(),
            2,
            "new lines start on a line of their own"
        );
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&options.path),
            0o600,
            "an existing file keeps its mode"
        );
        log.write(&lines(3..12));
        assert_eq!(log.counters().stats().rotations, 1);
        assert_eq!(mode(&options.path), FILE_MODE);
        assert_eq!(mode(&options.rotated_path(1)), 0o600);
    }

    #[test]
    fn a_removed_log_is_started_again() {
        let dir = TempDir::new("removed");
        let options = FlowLogOptions::new(dir.0.join("flows.log"));
        let mut log = FlowLog::open(options.clone()).unwrap();
        log.write(&lines(1..3));
        fs::remove_file(&options.path).unwrap();
        log.write(&lines(3..5));
        assert_eq!(sequence(&options.path), vec![3, 4]);
    }

    #[test]
    fn write_errors_are_counted_and_writing_resumes() {
        let dir = TempDir::new("errors");
        let sub = dir.0.join("sub");
        fs::create_dir(&sub).unwrap();
        let options = FlowLogOptions::new(sub.join("flows.log"));
        let mut log = FlowLog::open(options.clone()).unwrap();
        log.write(&lines(1..3));
        fs::remove_dir_all(&sub).unwrap();
        log.write(&lines(3..6));
        log.write(&lines(6..7));
        let stats = log.counters().stats();
        assert_eq!(stats.write_errors, 2);
        assert_eq!(stats.unwritten_lines, 4);
        assert_eq!(stats.lines, 2);
        fs::create_dir(&sub).unwrap();
        log.write(&lines(7..8));
        assert_eq!(sequence(&options.path), vec![7]);
        assert_eq!(log.counters().stats().lines, 3);
    }

    #[test]
    fn a_failed_rotation_keeps_appending_and_is_retried_next_batch() {
        let dir = TempDir::new("norotate");
        let options = dir.options(2 * line_len(1) + 1, 2);
        // Something in the way of PATH.1 that cannot be removed as a file.
        fs::create_dir(options.rotated_path(1)).unwrap();
        fs::write(options.rotated_path(1).join("x"), b"x").unwrap();
        let mut log = FlowLog::open(options.clone()).unwrap();
        log.write(&lines(1..6));
        let stats = log.counters().stats();
        assert_eq!((stats.lines, stats.unwritten_lines), (5, 0));
        assert_eq!(
            (stats.write_errors, stats.rotations),
            (1, 0),
            "one try per batch"
        );
        assert_eq!(sequence(&options.path), vec![1, 2, 3, 4, 5]);
        fs::remove_dir_all(options.rotated_path(1)).unwrap();
        log.write(&lines(6..7));
        assert_eq!(sequence(&options.rotated_path(1)), vec![1, 2, 3, 4, 5]);
        assert_eq!(sequence(&options.path), vec![6]);
        assert_eq!(log.counters().stats().rotations, 1);
    }

    #[test]
    fn a_full_disk_is_counted_not_fatal() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        let mut log = FlowLog::open(FlowLogOptions::new(full)).unwrap();
        log.write(&lines(1..4));
        log.write(&lines(4..5));
        let stats = log.counters().stats();
        assert_eq!(
            (stats.lines, stats.write_errors, stats.unwritten_lines),
            (0, 2, 4)
        );
    }

    #[test]
    fn opening_where_no_file_can_be_made_fails_at_once() {
        let error = FlowLog::open(FlowLogOptions::new("/nonexistent-dir/flows.log")).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent-dir/flows.log"),
            "{error}"
        );
        let zero = FlowLogOptions {
            max_file: 0,
            ..FlowLogOptions::new("/tmp/x")
        };
        assert_eq!(
            FlowLog::open(zero).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[tokio::test]
    async fn a_lagging_writer_logs_how_many_events_it_lost() {
        let dir = TempDir::new("lag");
        let options = FlowLogOptions::new(dir.0.join("flows.log"));
        let (sender, receiver) = tokio::sync::broadcast::channel(4);
        for i in 0..10 {
            sender.send(Arc::new(event(i))).unwrap();
        }
        drop(sender);
        let log = FlowLog::open(options.clone()).unwrap();
        let counters = log.counters();
        log.run(receiver).await;
        let text = fs::read_to_string(&options.path).unwrap();
        let values: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(values.len(), 5, "{text}");
        assert_eq!(values[0]["event"], "lost");
        assert_eq!(values[0]["count"], 6);
        assert!(values[0]["time"].as_str().unwrap().ends_with('Z'));
        assert!(
            text.starts_with("{\"event\":\"lost\",\"count\":6,\"time\":"),
            "{text}"
        );
        let kept: Vec<u64> = values[1..]
            .iter()
            .map(|v| v["packets"].as_u64().unwrap())
            .collect();
        assert_eq!(kept, vec![6, 7, 8, 9]);
        let stats = counters.stats();
        assert_eq!((stats.lines, stats.lost_events), (5, 6));
    }

    #[test]
    fn the_writer_can_be_spawned() {
        fn spawnable<F: std::future::Future + Send + 'static>(_: &F) {}
        let (_sender, receiver) = tokio::sync::broadcast::channel::<Arc<ObservedEvent>>(1);
        spawnable(&write_flow_log(receiver, FlowLogOptions::new("/dev/null")));
    }

    #[tokio::test]
    async fn events_are_written_as_they_arrive() {
        let dir = TempDir::new("live");
        let options = FlowLogOptions::new(dir.0.join("flows.log"));
        let (sender, receiver) = tokio::sync::broadcast::channel(16);
        let task = tokio::spawn(write_flow_log(receiver, options.clone()));
        sender.send(Arc::new(event(1))).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while fs::read_to_string(&options.path).map_or(true, |t| t.is_empty()) {
            assert!(std::time::Instant::now() < deadline, "not written");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(sequence(&options.path), vec![1]);
        drop(sender);
        task.await.unwrap().unwrap();
    }
}
