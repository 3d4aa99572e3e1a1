//! The agent's flow pipeline, shared between the loop that drains the ring
//! buffer and the API that answers queries: the aggregate, the names it
//! resolves keys with, and a broadcast of every record for live observers.
//!
//! Queries sweep the kernel's flow table first (at most every
//! [`SWEEP_MIN_INTERVAL`]), so the counts they return are the kernel's
//! exact per-flow counters, not the last record's.

use std::{
    sync::{Arc, Mutex, MutexGuard, RwLock},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use log::{debug, warn};
use netwatch_common::{
    event::{EventKind, FlowEvent},
    flow::{FlowKey, FlowStats},
    kdrop::KernelDropEvent,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::aggregate::FlowRef;
use super::dns::{DnsCounters, DnsEntry, DnsLog};
use super::filter::AmbiguousContainer;
use super::host_peer::SocketOwners;
use super::kdrops::KernelDrops;
use super::reader::DrainClock;
use super::{Aggregator, Clock, FlowEntry, FlowFilter, FlowNames, PipelineCounters};
use crate::datapath::{CapturedDns, DatapathError, DropReasonNames};

/// Queries closer together than this share one sweep of the kernel table.
pub const SWEEP_MIN_INTERVAL: Duration = Duration::from_millis(100);

/// How long the flows of a container that is gone are kept after its last
/// packet, unless `agent --forget-gone-after` says otherwise.
pub const DEFAULT_FORGET_GONE_AFTER: Duration = Duration::from_secs(3600);

/// Flows kept one by one unless `--flow-limit` says otherwise.
pub const DEFAULT_FLOW_LIMIT: usize = 100_000;

/// Records buffered per live observer; a slower observer misses records
/// (and is told how many), the pipeline never waits for it.
///
/// The feeds carry `Arc`s: a broadcast channel allocates and writes all its
/// slots when made, observed or not, and with the records themselves in
/// them (~430 bytes each) the two feeds were 3.5 MiB of every agent's
/// resident memory (measured with heaptrack and /proc/PID/smaps); each
/// observer's copy of a record is then a count, not its strings.
const OBSERVER_BUFFER: usize = 4096;

/// A live feed of flow records (see [`Pipeline::subscribe`]).
pub type EventFeed = broadcast::Receiver<Arc<ObservedEvent>>;
/// A live feed of DNS queries and answers (see [`Pipeline::subscribe_dns`]).
pub type DnsFeed = broadcast::Receiver<Arc<DnsEntry>>;

/// One record as a live observer sees it (`netwatch observe`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedEvent {
    /// `flow-open`, `flow-close`, `flow-export` or `drop`.
    pub event: String,
    /// When the kernel saw the packet that made the record (its clock,
    /// not the agent's read, which comes up to
    /// [`super::reader::READ_TIMEOUT`] later).
    pub time: Timestamp,
    #[serde(flatten)]
    pub flow: FlowEntry,
    /// What this event adds to the flow's earlier events
    /// ([`super::aggregate::Delta`]): sum these, not `packets` and `bytes`,
    /// which are running totals.
    #[serde(default)]
    pub delta_packets: u64,
    #[serde(default)]
    pub delta_bytes: u64,
}

/// Reads the kernel's flow table (the pinned map for the agent, the loaded
/// one for a standalone session).
pub type FlowTableReader =
    Box<dyn Fn() -> Result<Vec<(FlowKey, FlowStats)>, DatapathError> + Send + Sync>;

/// See the module documentation.
pub struct Pipeline {
    aggregate: Mutex<Aggregator>,
    names: RwLock<FlowNames>,
    observers: broadcast::Sender<Arc<ObservedEvent>>,
    flow_table: FlowTableReader,
    last_sweep: Mutex<Option<Instant>>,
    /// Asks who owns a host socket (see [`super::host_peer`]).
    socket_owners: Option<Arc<dyn SocketOwners>>,
    /// The kernel's own drops (see [`super::kdrops`]).
    kernel_drops: Mutex<KernelDrops>,
    /// DNS queries and answers (see [`super::dns`]).
    dns: Mutex<DnsLog>,
    dns_observers: broadcast::Sender<Arc<DnsEntry>>,
    /// See [`Pipeline::forget_gone_after`].
    forget_gone_after: Duration,
    /// Ticked by the [`super::RecordReader`] at each drain.
    drain_clock: DrainClock,
}

impl Pipeline {
    /// A pipeline keeping at most `flow_limit` flows one by one.
    /// Deltas count from now ([`super::aggregate::Delta`]).
    pub fn new(flow_limit: usize, flow_table: FlowTableReader) -> Pipeline {
        let started = Clock::monotonic_ns();
        let mut aggregate = Aggregator::new(flow_limit);
        aggregate.count_deltas_from(started);
        let mut kernel_drops = KernelDrops::default();
        kernel_drops.count_deltas_from(started);
        Pipeline {
            aggregate: Mutex::new(aggregate),
            names: RwLock::new(FlowNames::default()),
            observers: broadcast::channel(OBSERVER_BUFFER).0,
            flow_table,
            last_sweep: Mutex::new(None),
            socket_owners: None,
            kernel_drops: Mutex::new(kernel_drops),
            dns: Mutex::new(DnsLog::default()),
            dns_observers: broadcast::channel(OBSERVER_BUFFER).0,
            forget_gone_after: DEFAULT_FORGET_GONE_AFTER,
            drain_clock: DrainClock::default(),
        }
    }

    /// Flows, summaries and kernel drops of a container that is gone are
    /// forgotten `after` its last packet (checked at each sweep), and its
    /// metric series with them: on a host that runs many short-lived
    /// containers (CI with `--rm`) they would otherwise grow without bound.
    pub fn forget_gone_after(mut self, after: Duration) -> Pipeline {
        self.forget_gone_after = after;
        self
    }

    /// Names the host end of flows after the `--network host` container
    /// that owns the socket, asking `owners` (see [`super::host_peer`]).
    pub fn with_socket_owners(mut self, owners: Option<Arc<dyn SocketOwners>>) -> Pipeline {
        self.socket_owners = owners;
        self
    }

    /// What [`Pipeline::with_socket_owners`] set.
    pub fn socket_owners(&self) -> Option<Arc<dyn SocketOwners>> {
        self.socket_owners.clone()
    }

    /// The capacity of the kernel's flow table (see
    /// [`Aggregator::set_kernel_table_entries`]).
    pub fn set_kernel_table_entries(&self, entries: usize) {
        self.aggregate().set_kernel_table_entries(entries);
    }

    fn aggregate(&self) -> MutexGuard<'_, Aggregator> {
        // A panic while holding the lock cannot leave the aggregate
        // inconsistent in a way worse than a lost update: keep going.
        self.aggregate.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the names keys resolve to (after each sync with Docker).
    pub fn set_names(&self, names: FlowNames) {
        *self.names.write().unwrap_or_else(|e| e.into_inner()) = names;
    }

    /// Merges records taken from the ring buffer, passes each to live
    /// observers, and returns the drops among them (for the log). A record
    /// it cannot read is counted as malformed, not returned.
    ///
    /// With no live observer (no `observe`, no flow log) only drops are
    /// described: the other records are merged without building what an
    /// observer would see (see [`Aggregator::record_silently`]), which made
    /// up most of the cost per record.
    pub fn ingest(&self, events: &[FlowEvent]) -> Vec<ObservedEvent> {
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        let clock = Clock::now();
        let mut drops = Vec::new();
        let mut aggregate = self.aggregate();
        // Read once per batch: an observer that subscribes meanwhile sees
        // records from the next batch on, as if it had come a moment later.
        let observed = self.observers.receiver_count() > 0;
        for event in events {
            let drop = event.kind == EventKind::Drop as u8;
            if !observed && !drop {
                aggregate.record_silently(event, &names, &clock);
                continue;
            }
            let Some((flow, delta)) = aggregate.record(event, &names, &clock) else {
                continue;
            };
            let observed_event = ObservedEvent {
                event: EventKind::from_u8(event.kind)
                    .map_or("unknown", EventKind::name)
                    .to_string(),
                time: clock.wall(event.last_seen_ns),
                flow,
                delta_packets: delta.packets,
                delta_bytes: delta.bytes,
            };
            if !observed {
                drops.push(observed_event);
                continue;
            }
            if drop {
                drops.push(observed_event.clone());
            }
            // An observer that went meanwhile is not an error.
            let _ = self.observers.send(Arc::new(observed_event));
        }
        drops
    }

    /// Names kernel drop reasons as the running kernel does (from its BTF,
    /// when the kernel drop program was attached).
    pub fn set_kernel_drop_reasons(&self, reasons: DropReasonNames) {
        self.kernel_drops().set_reasons(reasons);
    }

    fn kernel_drops(&self) -> MutexGuard<'_, KernelDrops> {
        self.kernel_drops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Merges records of the kernel drop program and passes each entry
    /// they touch to live observers as a `drop`; returns those (for the
    /// log).
    pub fn ingest_kernel_drops(&self, events: &[KernelDropEvent]) -> Vec<ObservedEvent> {
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        let clock = Clock::now();
        let mut kernel_drops = self.kernel_drops();
        // Kernel drops before the aggregate, as everywhere both are held.
        let mut aggregate = self.aggregate();
        let malformed_before = kernel_drops.malformed;
        let mut drops = Vec::new();
        for event in events {
            for (flow, delta) in kernel_drops.record(event, &names, &aggregate.dns_names, &clock) {
                let observed = ObservedEvent {
                    event: EventKind::Drop.name().to_string(),
                    time: clock.wall(event.last_seen_ns),
                    flow,
                    delta_packets: delta.packets,
                    delta_bytes: delta.bytes,
                };
                drops.push(observed.clone());
                let _ = self.observers.send(Arc::new(observed));
            }
        }
        aggregate.counters.records += events.len() as u64;
        aggregate.counters.malformed += kernel_drops.malformed - malformed_before;
        drops
    }

    fn dns(&self) -> MutexGuard<'_, DnsLog> {
        self.dns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes DNS records from the kernel: lists queries and answers,
    /// passes each to live DNS observers, and remembers which names each
    /// container resolved (flows take their peers' names from there).
    /// Ingest these before the flow records of the same drain, so that a
    /// connection made right after its answer is named from its first
    /// record.
    pub fn ingest_dns(&self, records: &[CapturedDns]) {
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        let clock = Clock::now();
        let mut dns = self.dns();
        let mut learned = Vec::new();
        for record in records {
            let Some(recorded) = dns.record(record, &names, &clock) else {
                continue;
            };
            learned.extend(recorded.learned);
            let _ = self.dns_observers.send(Arc::new(recorded.entry));
        }
        drop(dns);
        if learned.is_empty() {
            return;
        }
        let mut aggregate = self.aggregate();
        for learned in learned {
            for (address, expires_ns) in learned.addresses {
                aggregate
                    .dns_names
                    .learn(&learned.container, address, &learned.name, expires_ns);
            }
        }
    }

    /// The DNS queries kept that `filter` selects (by container, service
    /// and network), oldest first.
    pub fn dns_entries(&self, filter: &FlowFilter) -> Vec<DnsEntry> {
        self.dns()
            .entries()
            .filter(|e| filter.matches_dns(e))
            .cloned()
            .collect()
    }

    /// A live feed of DNS queries and answers from now on (an answer comes
    /// as its query's entry again, completed).
    pub fn subscribe_dns(&self) -> DnsFeed {
        self.dns_observers.subscribe()
    }

    /// What the DNS log counted.
    pub fn dns_counters(&self) -> DnsCounters {
        self.dns().counters
    }

    /// Counts malformed records reported by the ring buffer reader.
    pub fn count_malformed(&self, malformed: u64) {
        self.aggregate().counters.malformed += malformed;
    }

    /// Merges the kernel's flow table now, unless it was merged less than
    /// [`SWEEP_MIN_INTERVAL`] ago.
    pub fn sweep(&self) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < SWEEP_MIN_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let entries = match (self.flow_table)() {
            Ok(entries) => entries,
            Err(e) => {
                warn!("cannot read the kernel's flow table: {e}");
                return;
            }
        };
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        let clock = Clock::now();
        let cutoff = Timestamp::now()
            .checked_sub(self.forget_gone_after)
            .unwrap_or(Timestamp::MIN);
        let present = |container: &str| !names.is_gone(container);
        // Kernel drops before the aggregate, as everywhere both are held.
        let forgotten_drops = self.kernel_drops().forget_gone(present, cutoff);
        let mut aggregate = self.aggregate();
        for (key, stats) in &entries {
            aggregate.sweep_entry(key, stats, &names, &clock);
        }
        aggregate.finish_sweep();
        let forgotten = aggregate.forget_gone(present, cutoff) + forgotten_drops;
        if forgotten > 0 {
            debug!("forgot {forgotten} flows and drop records of containers that are gone");
        }
    }

    /// The flows `filter` selects, with the kernel's current counts.
    pub fn flows(&self, filter: &FlowFilter) -> Vec<FlowEntry> {
        self.sweep();
        let mut entries = self.aggregate().entries(filter);
        let kernel: Vec<FlowEntry> = self
            .kernel_drops()
            .entries()
            .filter(|e| filter.matches(*e))
            .cloned()
            .collect();
        if !kernel.is_empty() {
            entries.extend(kernel);
            entries = super::aggregate::busiest_first(entries);
        }
        entries
    }

    /// Calls `show` with the flows `filter` selects, busiest first and as
    /// [`FlowFilter::finish`] leaves them, with the kernel's current
    /// counts, borrowed where they are kept: what a query serialises,
    /// without an entry per flow. The aggregate is locked while `show`
    /// runs (records wait, in the ring buffer, as they did while the
    /// entries were built).
    ///
    /// # Errors
    /// An ambiguous container id prefix.
    pub fn show_flows<T>(
        &self,
        filter: &FlowFilter,
        show: impl FnOnce(Vec<FlowRef<'_>>) -> T,
    ) -> Result<T, AmbiguousContainer> {
        self.sweep();
        // Kernel drops before the aggregate, as everywhere both are held.
        let kernel_drops = self.kernel_drops();
        let aggregate = self.aggregate();
        let flows: Vec<FlowRef<'_>> = aggregate
            .refs()
            .chain(kernel_drops.entries().map(FlowRef::entry))
            .filter(|flow| filter.matches(flow))
            .collect();
        let flows = filter.finish(super::aggregate::busiest_first(flows))?;
        Ok(show(flows))
    }

    /// What metrics show of every flow, with the kernel's current counts,
    /// without building an entry per flow: `flows` gets the sums of
    /// netwatch's flows and summaries ([`super::aggregate::Aggregator::sum_series`]),
    /// `kernel_drop` each of the kernel's own drops.
    pub fn sum_series(
        &self,
        flows: impl FnMut(super::aggregate::SeriesSum<'_>),
        mut kernel_drop: impl FnMut(&FlowEntry),
    ) {
        self.sweep();
        self.kernel_drops().entries().for_each(&mut kernel_drop);
        self.aggregate().sum_series(flows);
    }

    /// A live feed of every record from now on.
    pub fn subscribe(&self) -> EventFeed {
        self.observers.subscribe()
    }

    /// What the pipeline counted so far.
    pub fn counters(&self) -> PipelineCounters {
        self.aggregate().counters
    }

    /// How regularly the reader drains the rings into this pipeline.
    pub fn drain_clock(&self) -> &DrainClock {
        &self.drain_clock
    }

    /// Flows kept one by one now.
    pub fn tracked_flows(&self) -> usize {
        self.aggregate().len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use netwatch_common::{
        flow::family,
        packet::IPPROTO_UDP,
        reason::{Direction, DropReason, Verdict},
    };

    use super::*;
    use crate::flows::filter::Match;

    fn key() -> FlowKey {
        let mut key = FlowKey {
            ifindex: 3,
            direction: Direction::Egress as u8,
            family: family::IPV4,
            proto: IPPROTO_UDP,
            src_port: 5000,
            dst_port: 53,
            ..FlowKey::default()
        };
        key.src[..4].copy_from_slice(&[172, 30, 0, 2]);
        key.dst[..4].copy_from_slice(&[203, 0, 113, 7]);
        key
    }

    #[test]
    fn records_reach_observers_and_queries_see_the_kernels_counts() {
        let table: FlowTableReader = Box::new(|| {
            Ok(vec![(
                key(),
                FlowStats {
                    packets: 9,
                    bytes: 900,
                    first_seen_ns: 10,
                    last_seen_ns: 90,
                    verdict: Verdict::Dropped as u8,
                    reason: DropReason::NotInNetwork as u8,
                    ..FlowStats::default()
                },
            )])
        });
        let pipeline = Pipeline::new(100, table);
        let mut observer = pipeline.subscribe();
        let drop = FlowEvent {
            kind: EventKind::Drop as u8,
            verdict: Verdict::Dropped as u8,
            reason: DropReason::NotInNetwork as u8,
            key: key(),
            packets: 1,
            bytes: 100,
            first_seen_ns: 10,
            last_seen_ns: 10,
            ..FlowEvent::default()
        };
        let drops = pipeline.ingest(&[drop]);
        assert_eq!(drops.len(), 1);
        let seen = observer.try_recv().unwrap();
        assert_eq!(seen.event, "drop");
        // The packet's time (10 ns after boot), not the time of the drain.
        assert!(
            Timestamp::now().duration_since(seen.time) > jiff::SignedDuration::from_secs(1),
            "{}",
            seen.time
        );
        assert_eq!(seen.flow.reason, Some("not-in-network".parse().unwrap()));
        let flows = pipeline.flows(&FlowFilter::default());
        assert_eq!(flows.len(), 1);
        assert_eq!((flows[0].packets, flows[0].bytes), (9, 900));
        assert_eq!(pipeline.counters().records, 1);
    }

    #[test]
    fn records_taken_with_no_observer_leave_their_delta_to_the_next_described_event() {
        let pipeline = Pipeline::new(100, Box::new(|| Ok(Vec::new())));
        // Began after the pipeline: every packet counts in some delta.
        let first = Clock::monotonic_ns() + 1_000;
        let record = |kind: EventKind, packets: u64| FlowEvent {
            kind: kind as u8,
            verdict: Verdict::Forwarded as u8,
            reason: DropReason::None as u8,
            key: key(),
            packets,
            bytes: packets * 100,
            first_seen_ns: first,
            last_seen_ns: first + packets,
            ..FlowEvent::default()
        };
        // Nobody watches: merged silently, nothing described.
        let taken = pipeline.ingest(&[
            record(EventKind::FlowOpen, 1),
            record(EventKind::FlowExport, 5),
            record(EventKind::FlowExport, 9),
        ]);
        assert!(taken.is_empty());
        assert_eq!(pipeline.counters().records, 3);
        assert_eq!(pipeline.flows(&FlowFilter::default())[0].packets, 9);

        let mut observer = pipeline.subscribe();
        pipeline.ingest(&[record(EventKind::FlowExport, 12)]);
        let seen = observer.try_recv().unwrap();
        assert_eq!(
            (seen.flow.packets, seen.delta_packets, seen.delta_bytes),
            (12, 12, 1200),
            "the first described event carries what the silent ones took in"
        );
        pipeline.ingest(&[record(EventKind::FlowExport, 15)]);
        assert_eq!(observer.try_recv().unwrap().delta_packets, 3);

        // The observer goes, records come, another observer comes.
        drop(observer);
        pipeline.ingest(&[record(EventKind::FlowExport, 20)]);
        let mut observer = pipeline.subscribe();
        pipeline.ingest(&[record(EventKind::FlowClose, 22)]);
        let seen = observer.try_recv().unwrap();
        assert_eq!((seen.event.as_str(), seen.delta_packets), ("flow-close", 7));
        assert!(
            observer.try_recv().is_err(),
            "one event per described record"
        );
    }

    /// Records of flows on three veths, one dropped, and a kernel drop.
    pub(crate) fn busy_pipeline() -> Pipeline {
        let pipeline = Pipeline::new(4, Box::new(|| Ok(Vec::new())));
        pipeline.set_names(FlowNames::new(&crate::flows::names::tests::state(), &[]));
        let records: Vec<FlowEvent> = (0..8u16)
            .map(|i| {
                let mut event = FlowEvent {
                    kind: EventKind::FlowExport as u8,
                    verdict: Verdict::Forwarded as u8,
                    reason: DropReason::None as u8,
                    key: key(),
                    packets: u64::from(i) + 1,
                    bytes: (u64::from(i) + 1) * 100,
                    first_seen_ns: 10,
                    last_seen_ns: 10 + u64::from(i),
                    ..FlowEvent::default()
                };
                event.key.src_port = 5000 + i;
                event.key.ifindex = [31, 7, 3][usize::from(i % 3)];
                if i == 5 {
                    event.kind = EventKind::Drop as u8;
                    event.verdict = Verdict::Dropped as u8;
                    event.reason = DropReason::NotInNetwork as u8;
                }
                event
            })
            .collect();
        pipeline.ingest(&records);
        pipeline.set_kernel_drop_reasons(netfilter_drop_names());
        pipeline.ingest_kernel_drops(&[netfilter_drop()]);
        pipeline
    }

    /// A kernel drop (reason 12, see [`netfilter_drop_names`]) of [`key`]'s
    /// flow: 2 packets, 200 bytes.
    fn netfilter_drop() -> netwatch_common::kdrop::KernelDropEvent {
        use netwatch_common::kdrop::{KIND_KERNEL_DROP, KernelDropEvent, KernelDropKey};
        let k = key();
        KernelDropEvent {
            kind: KIND_KERNEL_DROP,
            src_endpoint: 3,
            key: KernelDropKey {
                family: k.family,
                proto: k.proto,
                reason: 12,
                src_port: k.src_port,
                dst_port: k.dst_port,
                src: k.src,
                dst: k.dst,
                ..KernelDropKey::default()
            },
            packets: 2,
            bytes: 200,
            ..KernelDropEvent::default()
        }
    }

    fn netfilter_drop_names() -> DropReasonNames {
        DropReasonNames::new([(12, "SKB_DROP_REASON_NETFILTER_DROP".to_string())])
    }

    #[test]
    fn flows_laid_out_where_they_are_kept_are_the_bytes_of_their_entries() {
        use crate::api::Layout;
        let pipeline = busy_pipeline();
        let all = FlowFilter::default();
        let entries = pipeline.flows(&all);
        assert!(entries.iter().any(|e| e.flows > 1), "a summary too");
        assert!(entries.iter().any(FlowEntry::is_kernel_drop));
        for layout in [Layout::Compact, Layout::Pretty, Layout::Lines] {
            assert_eq!(
                pipeline.show_flows(&all, |flows| layout.write(&flows)),
                Ok(layout.write(&entries)),
                "{layout:?}"
            );
            assert_eq!(
                pipeline.show_flows(&all, |flows| layout.write_flows(&flows)),
                Ok(layout.write(&entries)),
                "{layout:?}, written by hand"
            );
        }
        let dropped = FlowFilter::with(Match::Verdict(Verdict::Dropped));
        let shown = pipeline
            .show_flows(&dropped, |flows| {
                flows
                    .iter()
                    .map(|f| f.view().to_entry())
                    .collect::<Vec<_>>()
            })
            .unwrap();
        assert_eq!(shown, dropped.finish(pipeline.flows(&dropped)).unwrap());
        assert_eq!(shown.len(), 2, "netwatch's drop and the kernel's");
    }

    #[test]
    fn drops_are_described_for_the_log_even_with_no_observer() {
        let pipeline = Pipeline::new(100, Box::new(|| Ok(Vec::new())));
        let drop = FlowEvent {
            kind: EventKind::Drop as u8,
            verdict: Verdict::Dropped as u8,
            reason: DropReason::NotInNetwork as u8,
            key: key(),
            packets: 2,
            bytes: 200,
            first_seen_ns: Clock::monotonic_ns() + 1_000,
            last_seen_ns: Clock::monotonic_ns() + 2_000,
            ..FlowEvent::default()
        };
        let drops = pipeline.ingest(&[drop]);
        assert_eq!(drops.len(), 1);
        assert_eq!(
            (drops[0].event.as_str(), drops[0].delta_packets),
            ("drop", 2)
        );
    }

    #[test]
    fn kernel_drops_reach_observers_and_queries_beside_netwatchs_own_flows() {
        use netwatch_common::kdrop::KernelDropEvent;
        let pipeline = Pipeline::new(100, Box::new(|| Ok(Vec::new())));
        pipeline.set_kernel_drop_reasons(netfilter_drop_names());
        let mut observer = pipeline.subscribe();
        let event = netfilter_drop();
        let malformed = KernelDropEvent { kind: 9, ..event };
        let drops = pipeline.ingest_kernel_drops(&[event, malformed]);
        assert_eq!(drops.len(), 1);
        let seen = observer.try_recv().unwrap();
        assert_eq!(seen.event, "drop");
        assert_eq!(
            seen.flow.reason,
            Some("kernel:netfilter_drop".parse().unwrap())
        );
        assert_eq!(seen.flow.dropped_by.as_deref(), Some("kernel"));
        let dropped = FlowFilter::with(Match::Verdict("dropped".parse().unwrap()));
        let flows = pipeline.flows(&dropped);
        assert_eq!(flows.len(), 1);
        assert_eq!((flows[0].packets, flows[0].direction.name()), (2, "egress"));
        let forwarded = FlowFilter::with(Match::Verdict("forwarded".parse().unwrap()));
        assert!(pipeline.flows(&forwarded).is_empty());
        assert_eq!(pipeline.counters().malformed, 1);
    }

    #[test]
    fn a_flow_is_named_from_its_containers_dns_answer_even_when_the_answer_comes_later() {
        use simple_dns::RCODE;

        use crate::flows::dns::tests::{a, answer, captured, query};
        use crate::flows::names::tests::state;

        let pipeline = Pipeline::new(100, Box::new(|| Ok(Vec::new())));
        pipeline.set_names(FlowNames::new(&state(), &[]));
        let mut web = FlowEvent {
            kind: EventKind::FlowOpen as u8,
            verdict: Verdict::Forwarded as u8,
            reason: DropReason::None as u8,
            key: FlowKey {
                ifindex: 31,
                direction: Direction::Egress as u8,
                family: family::IPV4,
                proto: netwatch_common::packet::IPPROTO_TCP,
                src_port: 40000,
                dst_port: 443,
                ..FlowKey::default()
            },
            packets: 1,
            bytes: 74,
            first_seen_ns: 2_000,
            last_seen_ns: 2_000,
            ..FlowEvent::default()
        };
        web.key.src[..4].copy_from_slice(&[172, 30, 0, 2]);
        web.key.dst[..4].copy_from_slice(&[203, 0, 113, 8]);
        let mut observer = pipeline.subscribe();
        pipeline.ingest(&[web]);
        assert_eq!(observer.try_recv().unwrap().flow.dst_name, None);

        let on_postgres = |mut record: crate::datapath::CapturedDns| {
            record.header.endpoint = 31;
            record
        };
        pipeline.ingest_dns(&[
            on_postgres(captured(query(7, "svc.netwatch.test"), true, 1_000)),
            on_postgres(captured(
                answer(
                    7,
                    "svc.netwatch.test",
                    RCODE::NoError,
                    vec![a("svc.netwatch.test", [203, 0, 113, 8], 300)],
                ),
                false,
                1_500,
            )),
        ]);
        let listed = pipeline.dns_entries(&FlowFilter::default());
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].container.as_deref(), Some("postgres"));
        web.kind = EventKind::FlowExport as u8;
        web.last_seen_ns = 3_000;
        pipeline.ingest(&[web]);
        let named = observer.try_recv().unwrap();
        assert_eq!(named.flow.dst_name.as_deref(), Some("svc.netwatch.test"));
        assert_eq!(named.flow.src_name, None);
        assert!(
            named.log_line().ends_with(" dst_name=svc.netwatch.test"),
            "{}",
            named.log_line()
        );

        // A flow that starts after the name expired is not named.
        let mut late = web;
        late.kind = EventKind::FlowOpen as u8;
        late.key.src_port = 40001;
        late.first_seen_ns = 1_500 + 300_000_000_000 + 1;
        late.last_seen_ns = late.first_seen_ns;
        pipeline.ingest(&[late]);
        assert_eq!(observer.try_recv().unwrap().flow.dst_name, None);
    }
}
