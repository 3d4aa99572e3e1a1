//! The ring buffer reader: a thread of its own that sleeps in epoll on the
//! flow ring's fd and hands what the kernel recorded to the [`Pipeline`]
//! in batches.
//!
//! The kernel wakes it once the ring holds a sixteenth of its size (see
//! netwatch-ebpf flows.rs), so under load it reads big batches long before
//! the ring is full, and at rest it costs nothing; records that stay under
//! the watermark (a quiet host) are read at the latest after
//! [`READ_TIMEOUT`]. Nothing that waits on Docker, netlink or an attach runs
//! here: before, the agent drained on a 250 ms tick of its main loop, and a
//! slow Docker call or reconcile delayed the drain while the ring filled.
//!
//! DNS and kernel drop records are read at each wakeup too (DNS first, so a
//! connection made right after its answer is named from its first record).

use std::{
    io,
    os::fd::AsFd as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use log::{info, warn};
use netwatch_common::{event::FlowEvent, kdrop::KernelDropEvent};
use nix::{
    errno::Errno,
    sys::{
        epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout},
        eventfd::{EfdFlags, EventFd},
    },
};
use serde::{Deserialize, Serialize};

use super::{ObservedEvent, Pipeline};
use crate::datapath::{CapturedDns, RecordRings};

/// The longest a record waits in a ring that stays under the wakeup
/// watermark. DNS and kernel drop records, which never wake the reader,
/// wait as long: their rings hold well over that much at their rates.
/// It also bounds the gap between two drains ([`DrainClock`]) to what the
/// agent promises (under 50 ms, with room for a busy CPU to schedule the
/// reader late); 40 wakeups a second of an idle reader
/// cost nothing measurable (`bench-scale`'s idle CPU).
pub const READ_TIMEOUT: Duration = Duration::from_millis(25);

/// Records taken from a ring before they are ingested: bounds the memory a
/// drain holds and how long the pipeline's lock is held at once (a query
/// waits at most one batch), while a ring with more is read again at once.
const BATCH: usize = 8192;

/// Drop records logged per [`DROP_LOG_WINDOW`]; the rest are summarised in
/// one line, so a scan of thousands of addresses cannot flood the log.
const DROP_LINES_PER_WINDOW: usize = 100;
const DROP_LOG_WINDOW: Duration = Duration::from_millis(250);

const STOP: u64 = 1;
const EVENTS: u64 = 0;

/// What the reader did so far (for benchmarks and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Flow, DNS and kernel drop records handed to the pipeline.
    pub records: u64,
    /// Records of the wrong size (a kernel/user version mismatch).
    pub malformed: u64,
    /// Times epoll woke the reader because the kernel said so.
    pub wakeups: u64,
    /// Times it woke on [`READ_TIMEOUT`].
    pub timeouts: u64,
    /// Time spent taking records out of the rings, and in the pipeline.
    pub drain_ns: u64,
    pub ingest_ns: u64,
    /// The reader thread's CPU time in the pipeline: `ingest_ns` less
    /// the time the thread waited for a CPU (a busy or stolen core).
    pub ingest_cpu_ns: u64,
    /// The most flow records one drain took.
    pub max_batch: u64,
}

#[derive(Default)]
struct Counters {
    records: AtomicU64,
    malformed: AtomicU64,
    wakeups: AtomicU64,
    timeouts: AtomicU64,
    drain_ns: AtomicU64,
    ingest_ns: AtomicU64,
    ingest_cpu_ns: AtomicU64,
    max_batch: AtomicU64,
}

/// See the module documentation. Dropping it stops the thread after one
/// last read.
pub struct RecordReader {
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl RecordReader {
    /// Starts reading `rings` into `pipeline`; with `log_drops`, drop
    /// records are logged (target `netwatch::drop`), at most
    /// [`DROP_LINES_PER_WINDOW`] lines per [`DROP_LOG_WINDOW`].
    ///
    /// # Errors
    /// The epoll instance, the eventfd or the thread cannot be created.
    pub fn start(
        rings: RecordRings,
        pipeline: Arc<Pipeline>,
        log_drops: bool,
    ) -> io::Result<RecordReader> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let stop = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        // Edge-triggered: the reader reads until the ring is empty after
        // each wakeup, and then wants to sleep until the kernel wakes it
        // again. Level-triggered, epoll would report the ring readable
        // again for every record submitted without a wakeup, and the
        // reader would spin on a trickle instead of taking batches.
        epoll.add(
            rings.events_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, EVENTS),
        )?;
        epoll.add(stop.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, STOP))?;
        let counters = Arc::new(Counters::default());
        let mut reader = Reader {
            rings,
            pipeline,
            counters: Arc::clone(&counters),
            drops: log_drops.then(DropLog::new),
            events: Vec::with_capacity(BATCH),
            dns: Vec::new(),
            kernel_drops: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("ring reader".into())
            .spawn(move || reader.run(&epoll))?;
        Ok(RecordReader {
            stop,
            thread: Some(thread),
            counters,
        })
    }

    /// What it did so far.
    pub fn stats(&self) -> ReaderStats {
        let c = &self.counters;
        ReaderStats {
            records: c.records.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            wakeups: c.wakeups.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            drain_ns: c.drain_ns.load(Ordering::Relaxed),
            ingest_ns: c.ingest_ns.load(Ordering::Relaxed),
            ingest_cpu_ns: c.ingest_cpu_ns.load(Ordering::Relaxed),
            max_batch: c.max_batch.load(Ordering::Relaxed),
        }
    }

    /// Stops the thread after it read what the rings hold now; returns
    /// what it did.
    pub fn stop(mut self) -> ReaderStats {
        self.finish();
        self.stats()
    }

    fn finish(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if let Err(e) = self.stop.write(1) {
            // The thread learns of a stop only through the eventfd:
            // joining now would hang. It holds nothing but fds and the
            // pipeline, so it is left to end with the process.
            warn!("cannot stop the ring reader ({e}); leaving it running");
            return;
        }
        if thread.join().is_err() {
            warn!("the ring reader panicked");
        }
    }
}

impl Drop for RecordReader {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The reader thread's state.
struct Reader {
    rings: RecordRings,
    pipeline: Arc<Pipeline>,
    counters: Arc<Counters>,
    drops: Option<DropLog>,
    // Reused from drain to drain: no allocation per batch.
    events: Vec<FlowEvent>,
    dns: Vec<CapturedDns>,
    kernel_drops: Vec<KernelDropEvent>,
}

impl Reader {
    fn run(&mut self, epoll: &Epoll) {
        let timeout = EpollTimeout::try_from(READ_TIMEOUT).unwrap_or(EpollTimeout::from(100u8));
        let mut ready = [EpollEvent::empty(); 2];
        loop {
            let n = match epoll.wait(&mut ready, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    // Not expected from a valid epoll fd; reading on a
                    // timer keeps records flowing rather than losing them.
                    warn!(
                        "the ring reader cannot wait in epoll ({e}); reading every {READ_TIMEOUT:?}"
                    );
                    std::thread::sleep(READ_TIMEOUT);
                    0
                }
            };
            self.pipeline.drain_clock().tick();
            let stopping = ready[..n].iter().any(|e| e.data() == STOP);
            if n == 0 {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
            } else if ready[..n].iter().any(|e| e.data() == EVENTS) {
                self.counters.wakeups.fetch_add(1, Ordering::Relaxed);
            }
            // Until a batch comes back short: the ring is empty then, and
            // the next record past the watermark wakes the reader again.
            while self.read_batch() {}
            if let Some(drops) = &mut self.drops {
                drops.tick(Instant::now());
            }
            if stopping {
                if let Some(drops) = &mut self.drops {
                    drops.flush();
                }
                return;
            }
        }
    }

    /// Reads one batch from each ring into the pipeline; whether a ring
    /// had more than a batch.
    fn read_batch(&mut self) -> bool {
        let start = Instant::now();
        self.dns.clear();
        self.events.clear();
        self.kernel_drops.clear();
        let dns = self.rings.drain_dns(&mut self.dns, BATCH);
        let events = self.rings.drain_events(&mut self.events, BATCH);
        let kernel_drops = self.rings.drain_kernel_drops(&mut self.kernel_drops, BATCH);
        let drained = Instant::now();
        let cpu_before = thread_cpu_time();
        let malformed = dns.malformed + events.malformed + kernel_drops.malformed;
        if malformed > 0 {
            warn!(
                "{malformed} ring buffer records had the wrong size (a kernel/user version mismatch?)"
            );
            self.pipeline.count_malformed(malformed);
        }
        if !self.dns.is_empty() {
            self.pipeline.ingest_dns(&self.dns);
        }
        let mut drops = if self.events.is_empty() {
            Vec::new()
        } else {
            self.pipeline.ingest(&self.events)
        };
        if !self.kernel_drops.is_empty() {
            drops.extend(self.pipeline.ingest_kernel_drops(&self.kernel_drops));
        }
        let ingested = Instant::now();
        let cpu_ingest = thread_cpu_time().saturating_sub(cpu_before);
        if let Some(log) = &mut self.drops {
            log.log(&drops, ingested);
        }
        let c = &self.counters;
        let records = dns.records + events.records + kernel_drops.records;
        c.records.fetch_add(records as u64, Ordering::Relaxed);
        c.malformed.fetch_add(malformed, Ordering::Relaxed);
        c.drain_ns
            .fetch_add(nanos(drained - start), Ordering::Relaxed);
        c.ingest_ns
            .fetch_add(nanos(ingested - drained), Ordering::Relaxed);
        c.ingest_cpu_ns
            .fetch_add(nanos(cpu_ingest), Ordering::Relaxed);
        c.max_batch
            .fetch_max(events.records as u64, Ordering::Relaxed);
        let full = |d: crate::datapath::Drained| d.records + d.malformed as usize >= BATCH;
        full(dns) || full(events) || full(kernel_drops)
    }
}

/// How regularly the rings are drained: the reader ticks it at every
/// wakeup, by the kernel or on [`READ_TIMEOUT`]. A gap longer than the
/// timeout means the reader's thread did not get to run (a CPU starved,
/// the pipeline's lock held too long): nothing the agent waits for
/// (Docker, netlink, an attach) may cause one. Shown in `/v1/status`.
#[derive(Debug)]
pub struct DrainClock {
    since: Instant,
    /// Nanoseconds from `since` to the last tick.
    last_ns: AtomicU64,
    longest_gap_ns: AtomicU64,
    ticks: AtomicU64,
}

/// What a [`DrainClock`] measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainGaps {
    /// Times the reader drained the rings.
    pub drains: u64,
    /// The longest time between two drains, in microseconds.
    pub longest_gap_us: u64,
    /// How long ago the last drain was, in microseconds.
    pub since_last_us: u64,
}

impl Default for DrainClock {
    fn default() -> Self {
        DrainClock {
            since: Instant::now(),
            last_ns: AtomicU64::new(0),
            longest_gap_ns: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
        }
    }
}

impl DrainClock {
    /// A drain starts now.
    pub fn tick(&self) {
        self.tick_at(Instant::now());
    }

    fn tick_at(&self, now: Instant) {
        let now = nanos(now.saturating_duration_since(self.since));
        let last = self.last_ns.swap(now, Ordering::Relaxed);
        // The first gap is measured from the first drain, not from when the
        // clock was made (the reader may start later).
        if self.ticks.fetch_add(1, Ordering::Relaxed) > 0 {
            self.longest_gap_ns
                .fetch_max(now.saturating_sub(last), Ordering::Relaxed);
        }
    }

    pub fn gaps(&self) -> DrainGaps {
        self.gaps_at(Instant::now())
    }

    fn gaps_at(&self, now: Instant) -> DrainGaps {
        let us = |ns: u64| ns / 1000;
        let drains = self.ticks.load(Ordering::Relaxed);
        let now = nanos(now.saturating_duration_since(self.since));
        DrainGaps {
            drains,
            longest_gap_us: us(self.longest_gap_ns.load(Ordering::Relaxed)),
            since_last_us: if drains == 0 {
                0
            } else {
                us(now.saturating_sub(self.last_ns.load(Ordering::Relaxed)))
            },
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The calling thread's CPU time (zero if the clock cannot be read, which
/// Linux does not refuse for the calling thread). One system call (the
/// vDSO has no thread CPU clock): the reader pays it per batch, not per
/// record.
pub fn thread_cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(Duration::ZERO, Duration::from)
}

/// Logs drop records, at most [`DROP_LINES_PER_WINDOW`] per window; the
/// rest are counted and summarised when the window ends.
struct DropLog {
    window_start: Instant,
    logged: usize,
    suppressed: usize,
}

impl DropLog {
    fn new() -> DropLog {
        DropLog {
            window_start: Instant::now(),
            logged: 0,
            suppressed: 0,
        }
    }

    fn log(&mut self, drops: &[ObservedEvent], now: Instant) {
        self.tick(now);
        for record in drops {
            if self.logged < DROP_LINES_PER_WINDOW {
                info!(target: "netwatch::drop", "{}", record.log_line());
                self.logged += 1;
            } else {
                self.suppressed += 1;
            }
        }
    }

    /// Ends the window once it is over.
    fn tick(&mut self, now: Instant) {
        if now.duration_since(self.window_start) >= DROP_LOG_WINDOW {
            self.flush();
            self.window_start = now;
            self.logged = 0;
        }
    }

    fn flush(&mut self) {
        if self.suppressed > 0 {
            info!(
                target: "netwatch::drop",
                "… and {} more drop records in the last {DROP_LOG_WINDOW:?} (counted in `netwatch status`)",
                self.suppressed
            );
            self.suppressed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_clock_keeps_the_longest_gap_between_drains_not_before_the_first() {
        let clock = DrainClock::default();
        let t0 = clock.since + Duration::from_secs(5);
        assert_eq!(clock.gaps_at(t0).drains, 0);
        clock.tick_at(t0);
        clock.tick_at(t0 + Duration::from_millis(30));
        clock.tick_at(t0 + Duration::from_millis(100));
        clock.tick_at(t0 + Duration::from_millis(110));
        let gaps = clock.gaps_at(t0 + Duration::from_millis(125));
        assert_eq!(gaps.drains, 4);
        assert_eq!(gaps.longest_gap_us, 70_000, "{gaps:?}");
        assert_eq!(gaps.since_last_us, 15_000, "{gaps:?}");
    }
}
