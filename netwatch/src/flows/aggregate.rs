//! The agent's picture of every flow: ring buffer records and sweeps of the
//! kernel's flow table merged into one entry per (endpoint, direction,
//! 5-tuple), with names attached, in bounded memory.
//!
//! Counts come from the kernel's per-flow counters, which are cumulative
//! and exact for as long as the kernel keeps the flow's entry. The kernel's
//! table is an LRU map: an entry it evicts while the flow lives comes back
//! as a new entry counting from zero, recognisable by a new first-seen time.
//! The aggregate then adds the old entry's counts to a base, so its totals
//! never go backwards, and counts the eviction.
//!
//! A flow's verdict is the latest packet's. When it changes while the flow
//! lives (a policy change), the counts under the old verdict are folded into
//! that verdict's summary and the flow counts anew under the new one, so
//! that per-verdict totals (and the metrics built on them) never go down.
//! Packets between the two observations that saw the change are counted
//! under the new verdict.
//!
//! Memory: at most `limit` flows are kept one by one, each in about 200
//! bytes (the 5-tuple, counts, times, and shared references to its
//! endpoint's names, interned once per endpoint). Beyond that the flows idle
//! longest are folded, a tenth of the limit at a time, into one summary per
//! (container, network, direction, verdict), which keeps their packets and
//! bytes; nothing grows without bound. A folded flow whose kernel entry
//! lives on is remembered (its counts at folding, ~57 bytes, for at most
//! as many flows as the kernel's table or the limit holds, whichever is
//! more; forgotten once a sweep finds the kernel entry gone): without that, the
//! next sweep or record took it for a new flow and counted its packets a
//! second time (a flood test found it).
//!
//! Learned from a benchmark: hashbrown's map doubles its table under churn
//! at the limit although it never holds more than the limit; see
//! [`FlowMap`] for why, and why an `IndexMap` does not.

use std::{borrow::Cow, collections::BTreeMap, net::IpAddr, sync::Arc};

use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};

use jiff::Timestamp;
use netwatch_common::{
    event::{EventKind, FlowEvent},
    flow::{FlowKey, FlowStats},
    protocol::Protocol,
    reason::{Direction, DropReason, Verdict},
};
use serde::{Deserialize, Serialize};

use super::{
    dns::DnsNames,
    filter::{FlowFields, FlowFilter},
    host_peer::Outcome,
    names::{FlowNames, Peer},
    reason::FlowReason,
    record::key_addresses,
};

/// One flow as users see it (`netwatch flows -o json`, the API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEntry {
    /// The layout of this record ([`super::SCHEMA_VERSION`]; the JSON
    /// Schema is schema/flow.schema.json).
    #[serde(default)]
    pub schema_version: u32,
    /// The host whose agent saw the flow ([`crate::host::host_name`]).
    #[serde(default)]
    pub host: String,
    pub container: Option<String>,
    /// The container's full id: names are reused, ids are not.
    #[serde(default)]
    pub container_id: Option<String>,
    /// The container's compose project, if compose made it.
    #[serde(default)]
    pub project: Option<String>,
    /// The container's compose service, or swarm service, if it has one.
    pub service: Option<String>,
    pub network: Option<String>,
    /// `egress`: sent by the container; `ingress`: received.
    pub direction: Direction,
    /// `None` for non-IP flows (ARP) and summaries.
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: Protocol,
    pub packets: u64,
    /// Bytes as the hook saw them: Ethernet header and everything after it.
    pub bytes: u64,
    /// Of the latest packet: `forwarded`, `dropped` or `audited`.
    pub verdict: Verdict,
    /// `None` when forwarded.
    pub reason: Option<FlowReason>,
    /// Who dropped it: `netwatch` (its own programs, `reason` is one of
    /// netwatch's) or `kernel` (the kernel's stack after netwatch, seen on
    /// `kfree_skb`: `reason` is `kernel:` and the kernel's reason name,
    /// such as `kernel:netfilter_drop` for Docker's iptables rules).
    /// `None` when forwarded.
    #[serde(default)]
    pub dropped_by: Option<String>,
    /// Where the rule that dropped it (or would have, when audited) comes
    /// from: `built-in: anti-spoofing`, `internal: true on network db`,
    /// `label netwatch.egress=deny on network front`, …; absent when
    /// forwarded or dropped by the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Who is at the other end, if netwatch can tell: a container on this
    /// host (by its address), or, at one of the host's own addresses, the
    /// `--network host` container that owns the host's socket, or else
    /// `host`.
    pub peer: Option<String>,
    /// The peer container's compose or swarm service.
    #[serde(default)]
    pub peer_service: Option<String>,
    /// `container`, `host-mode` (a `--network host` container) or `host`.
    #[serde(default)]
    pub peer_kind: Option<String>,
    /// The name the container resolved to the source or destination
    /// address (DNS answers netwatch saw on its interfaces, see
    /// [`super::dns`]); absent when it resolved none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_name: Option<String>,
    /// The published port the flow came through, or answers, as `docker
    /// port` prints its host side (`0.0.0.0:8080/tcp`); see
    /// [`FlowNames::published`].
    #[serde(default)]
    pub published: Option<String>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// The interface whose program saw the flow.
    pub interface: Option<String>,
    /// 1 for a flow; for a summary of idle flows folded together, how many.
    pub flows: u64,
}

impl FlowEntry {
    /// The peer as tables and lines show it: the container's name, with
    /// `(host mode)` after a `--network host` container's; `host`.
    pub fn peer_text(&self) -> Option<String> {
        let peer = self.peer.as_ref()?;
        Some(match self.peer_kind.as_deref() {
            Some("host-mode") => format!("{peer} (host mode)"),
            _ => peer.clone(),
        })
    }

    /// Marks both ends as tables and lines show them: the name the
    /// container resolved an address to, ` (svc.example.com)`, and the
    /// published port (see [`FlowEntry::mark_published`]).
    pub fn mark_ends(&self, src: &mut String, dst: &mut String) {
        for (end, name) in [(&mut *src, &self.src_name), (&mut *dst, &self.dst_name)] {
            if let Some(name) = name {
                end.push_str(&format!(" ({name})"));
            }
        }
        self.mark_published(src, dst);
    }

    /// Marks the container's end of a connection through a published port,
    /// as tables and lines show it: ` (published 0.0.0.0:8080/tcp)` after
    /// `dst` for what the container receives, after `src` for its answers.
    pub fn mark_published(&self, src: &mut String, dst: &mut String) {
        let Some(published) = &self.published else {
            return;
        };
        let inside = if self.direction == Direction::Ingress {
            dst
        } else {
            src
        };
        inside.push_str(&format!(" (published {published})"));
    }

    /// Dropped by the kernel's stack after netwatch (see [`super::kdrops`]),
    /// not by netwatch: no label of netwatch's changes that, and its packets
    /// count already in the flow netwatch saw them in.
    pub fn is_kernel_drop(&self) -> bool {
        self.dropped_by.as_deref() == Some(super::kdrops::DROPPED_BY_KERNEL)
    }

    /// The peer is a container on one of this host's networks (not the
    /// host, nor a container sharing the host's stack).
    pub fn peer_is_networked_container(&self) -> bool {
        self.peer.is_some() && self.peer_kind.as_deref().is_none_or(|k| k == "container")
    }
}

/// A flow as [`FlowEntry`] writes it (the same fields, in the same order,
/// to the same bytes), borrowing its strings from where the aggregate
/// keeps them: a query at 100,000 flows made a [`FlowEntry`] per flow
/// only to serialise it, a dozen strings each (~130 ms, and tens of MiB
/// at once in the agent). A test holds the two layouts together.
#[derive(Clone, Debug, Serialize)]
pub struct FlowView<'a> {
    pub schema_version: u32,
    pub host: &'a str,
    pub container: Option<&'a str>,
    pub container_id: Option<&'a str>,
    pub project: Option<&'a str>,
    pub service: Option<&'a str>,
    pub network: Option<&'a str>,
    pub direction: Direction,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: Protocol,
    pub packets: u64,
    pub bytes: u64,
    pub verdict: Verdict,
    pub reason: Option<&'a FlowReason>,
    pub dropped_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Cow<'a, str>>,
    pub peer: Option<&'a str>,
    pub peer_service: Option<&'a str>,
    pub peer_kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_name: Option<&'a str>,
    pub published: Option<&'a str>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub interface: Option<&'a str>,
    pub flows: u64,
}

impl<'a> FlowView<'a> {
    /// An entry, borrowed.
    pub fn of(e: &'a FlowEntry) -> FlowView<'a> {
        FlowView {
            schema_version: e.schema_version,
            host: &e.host,
            container: e.container.as_deref(),
            container_id: e.container_id.as_deref(),
            project: e.project.as_deref(),
            service: e.service.as_deref(),
            network: e.network.as_deref(),
            direction: e.direction,
            src: e.src,
            dst: e.dst,
            src_port: e.src_port,
            dst_port: e.dst_port,
            proto: e.proto,
            packets: e.packets,
            bytes: e.bytes,
            verdict: e.verdict,
            reason: e.reason.as_ref(),
            dropped_by: e.dropped_by.as_deref(),
            rule: e.rule.as_deref().map(Cow::Borrowed),
            peer: e.peer.as_deref(),
            peer_service: e.peer_service.as_deref(),
            peer_kind: e.peer_kind.as_deref(),
            src_name: e.src_name.as_deref(),
            dst_name: e.dst_name.as_deref(),
            published: e.published.as_deref(),
            first_seen: e.first_seen,
            last_seen: e.last_seen,
            interface: e.interface.as_deref(),
            flows: e.flows,
        }
    }

    /// The entry it shows, owned.
    pub fn to_entry(&self) -> FlowEntry {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        FlowEntry {
            schema_version: self.schema_version,
            host: self.host.to_owned(),
            container: owned(self.container),
            container_id: owned(self.container_id),
            project: owned(self.project),
            service: owned(self.service),
            network: owned(self.network),
            direction: self.direction,
            src: self.src,
            dst: self.dst,
            src_port: self.src_port,
            dst_port: self.dst_port,
            proto: self.proto,
            packets: self.packets,
            bytes: self.bytes,
            verdict: self.verdict,
            reason: self.reason.cloned(),
            dropped_by: owned(self.dropped_by),
            rule: owned(self.rule.as_deref()),
            peer: owned(self.peer),
            peer_service: owned(self.peer_service),
            peer_kind: owned(self.peer_kind),
            src_name: owned(self.src_name),
            dst_name: owned(self.dst_name),
            published: owned(self.published),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            interface: owned(self.interface),
            flows: self.flows,
        }
    }
}

/// A flow or summary where the aggregate keeps it, or a kernel drop's
/// entry: 24 bytes where a [`FlowView`] takes ~350, so that a query at
/// 100,000 flows sorts these and makes each view only as it writes it.
#[derive(Clone, Copy, Debug)]
pub struct FlowRef<'a>(Kept<'a>);

#[derive(Clone, Copy, Debug)]
enum Kept<'a> {
    Flow(&'a FlowKey, &'a Tracked),
    Entry(&'a FlowEntry),
}

impl<'a> FlowRef<'a> {
    pub fn entry(entry: &'a FlowEntry) -> FlowRef<'a> {
        FlowRef(Kept::Entry(entry))
    }

    /// What users see of it.
    pub fn view(self) -> FlowView<'a> {
        match self.0 {
            Kept::Flow(key, tracked) => tracked.view(key),
            Kept::Entry(entry) => FlowView::of(entry),
        }
    }

    /// Asks the CPU to fetch where the flow is kept, so that it is in
    /// the cache when its view is made a few flows later: a query writes
    /// flows busiest first, in no order of the map's, and waiting for each
    /// flow's slot was most of making its view.
    pub fn prefetch(self) {
        #[cfg(target_arch = "x86_64")]
        if let Kept::Flow(key, tracked) = self.0 {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let tracked: *const Tracked = tracked;
            let tracked = tracked.cast::<i8>();
            // SAFETY: a prefetch only hints; it reads nothing the program
            // sees and cannot fault. The addresses are a live key's and the
            // three cache lines of its flow's, whose size
            // `a_flow_is_kept_in_128_bytes_and_its_times_round_trip` bounds.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(key).cast::<i8>());
                _mm_prefetch::<_MM_HINT_T0>(tracked);
                _mm_prefetch::<_MM_HINT_T0>(tracked.wrapping_add(64));
                _mm_prefetch::<_MM_HINT_T0>(tracked.wrapping_add(127));
            }
        }
    }

    /// Its view without the `rule` (see [`Tracked::view_with`]).
    fn lite(self) -> FlowView<'a> {
        match self.0 {
            Kept::Flow(key, tracked) => tracked.view_with(key, false),
            Kept::Entry(entry) => FlowView::of(entry),
        }
    }
}

impl Serialize for FlowRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.view().serialize(serializer)
    }
}

/// What filters read, from the view without its rule.
impl FlowFields for FlowRef<'_> {
    fn host(&self) -> &str {
        self.lite().host
    }
    fn container(&self) -> Option<&str> {
        self.lite().container
    }
    fn container_id(&self) -> Option<&str> {
        self.lite().container_id
    }
    fn project(&self) -> Option<&str> {
        self.lite().project
    }
    fn service(&self) -> Option<&str> {
        self.lite().service
    }
    fn network(&self) -> Option<&str> {
        self.lite().network
    }
    fn direction(&self) -> Direction {
        self.lite().direction
    }
    fn ends(&self) -> (Option<IpAddr>, Option<IpAddr>) {
        let view = self.lite();
        (view.src, view.dst)
    }
    fn ports(&self) -> (u16, u16) {
        let view = self.lite();
        (view.src_port, view.dst_port)
    }
    fn proto(&self) -> Protocol {
        self.lite().proto
    }
    // What every query reads of every flow (to filter and sort), read
    // without making a view.
    fn bytes(&self) -> u64 {
        match self.0 {
            Kept::Flow(_, t) => t.total().1 - t.verdict_start_bytes,
            Kept::Entry(e) => e.bytes,
        }
    }
    fn verdict(&self) -> Verdict {
        self.lite().verdict
    }
    fn reason(&self) -> Option<&FlowReason> {
        self.lite().reason
    }
    fn first_seen(&self) -> Timestamp {
        match self.0 {
            Kept::Flow(_, t) => t.first_seen.get(),
            Kept::Entry(e) => e.first_seen,
        }
    }
    fn last_seen(&self) -> Timestamp {
        match self.0 {
            Kept::Flow(_, t) => t.last_seen.get(),
            Kept::Entry(e) => e.last_seen,
        }
    }
    fn flows(&self) -> u64 {
        match self.0 {
            Kept::Flow(..) => 1,
            Kept::Entry(e) => e.flows,
        }
    }
}

/// Turns kernel times (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) into wall-clock
/// timestamps.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock nanoseconds at monotonic zero.
    offset_ns: i128,
}

impl Clock {
    /// Reads both clocks now.
    pub fn now() -> Clock {
        Clock {
            offset_ns: Timestamp::now().as_nanosecond() - i128::from(Clock::monotonic_ns()),
        }
    }

    /// The kernel's monotonic clock now, as its records carry it (0 if it
    /// cannot be read).
    pub fn monotonic_ns() -> u64 {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .ok()
            .and_then(|t| {
                u64::try_from(t.tv_sec())
                    .ok()
                    .zip(u64::try_from(t.tv_nsec()).ok())
            })
            .map_or(0, |(sec, nsec)| sec * 1_000_000_000 + nsec)
    }

    /// A clock whose monotonic zero is `wall` (for tests).
    pub fn at(wall: Timestamp) -> Clock {
        Clock {
            offset_ns: wall.as_nanosecond(),
        }
    }

    pub fn wall(&self, monotonic_ns: u64) -> Timestamp {
        Timestamp::from_nanosecond(self.offset_ns + i128::from(monotonic_ns))
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

/// What the pipeline counted, for `status` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineCounters {
    /// Ring buffer records taken.
    pub records: u64,
    /// Records of the wrong size or with unknown values.
    pub malformed: u64,
    /// Live flows whose kernel entry was evicted and came back.
    pub kernel_evictions: u64,
    /// Flows folded into summaries to stay within the limit.
    pub summarised: u64,
    /// Flows whose host end a `--network host` container's socket was
    /// found to own (see [`super::host_peer`]).
    #[serde(default)]
    pub host_mode_peers: u64,
    /// Lookups of a host socket's owner that failed (logged; the flow's
    /// peer is then `host`).
    #[serde(default)]
    pub host_peer_lookup_failures: u64,
}

/// The names of the endpoint and direction a flow was seen at: the same for
/// all of that endpoint's flows, so stored once and shared.
#[derive(Debug, Hash, PartialEq, Eq)]
struct Labels {
    container: Option<String>,
    container_id: Option<String>,
    service: Option<String>,
    project: Option<String>,
    network: Option<String>,
    interface: Option<String>,
    direction: Direction,
    /// What asks for the network's policy ([`super::names::FlowOwner`]).
    policy: Option<String>,
}

/// One flow, compactly: the strings of [`FlowEntry`] are made only when a
/// query asks.
///
/// 128 bytes, and an entry of the aggregate's [`FlowMap`] 184 with its key
/// and hash (plus 9 bytes a slot of its index table): at 100,000 flows the
/// map is most of the agent's memory (31.6 MiB of heaptrack's 53 MiB at
/// 192 bytes a flow, before what few flows have went into [`Ends`] and the
/// times into [`Wall`]).
#[derive(Clone, Debug)]
struct Tracked {
    labels: Arc<Labels>,
    peer: Option<Arc<Peer>>,
    /// The published port and DNS names, for the flows that have any.
    ends: Option<Box<Ends>>,
    /// [`DnsNames::generation`] when the names of [`Ends`] were last
    /// looked up ([`NEVER_ASKED`]: never).
    dns_asked: u64,
    first_seen: Wall,
    last_seen: Wall,
    /// Of the latest packet.
    verdict: Verdict,
    reason: DropReason,
    /// First-seen time of the kernel entry the counts come from.
    kernel_first_ns: u64,
    kernel_packets: u64,
    kernel_bytes: u64,
    /// Counts of earlier kernel entries of the same flow.
    base_packets: u64,
    base_bytes: u64,
    /// The flow's totals when its current verdict began; what it shows is
    /// the counts since.
    verdict_start_packets: u64,
    verdict_start_bytes: u64,
    /// The flow's totals as of its latest event.
    reported: Reported,
}

/// What a [`Tracked`] flow may have that most have not: one box, 8 bytes in
/// each flow, where the three took 48.
#[derive(Clone, Debug, Default)]
struct Ends {
    /// Looked up once per flow, like the peer.
    published: Option<Arc<str>>,
    /// DNS names of the addresses, once the container resolved them.
    src_name: Option<Arc<str>>,
    dst_name: Option<Arc<str>>,
}

/// The [`Ends`] of a flow that has none.
static NO_ENDS: Ends = Ends {
    published: None,
    src_name: None,
    dst_name: None,
};

/// [`Tracked::dns_asked`] of a flow whose names were never looked up.
const NEVER_ASKED: u64 = u64::MAX;

/// A wall-clock time in 8 bytes where a [`Timestamp`] takes 16:
/// nanoseconds since the Unix epoch, which an `i64` holds from 1677 to
/// 2262 (times beyond are held at the nearest end, still in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Wall(i64);

impl Wall {
    fn of(time: Timestamp) -> Wall {
        let ns = time.as_nanosecond();
        Wall(i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX }))
    }

    /// [`Wall::of`] `clock.wall(monotonic_ns)`, without making the
    /// [`Timestamp`]: that divides an `i128`, which was a tenth of a new
    /// flow's ingest (twice per new flow, once per record).
    fn at(clock: &Clock, monotonic_ns: u64) -> Wall {
        let ns = clock.offset_ns + i128::from(monotonic_ns);
        match i64::try_from(ns) {
            Ok(ns) => Wall(ns),
            // Beyond 1677..2262: rare enough for the slow way.
            Err(_) => Wall::of(clock.wall(monotonic_ns)),
        }
    }

    fn get(self) -> Timestamp {
        // Every i64 of nanoseconds is within jiff's range, and the two
        // parts of a truncating division share their sign, as `new` wants
        // them (`from_nanosecond` divides an i128: each query made two per
        // flow).
        Timestamp::new(self.0 / 1_000_000_000, (self.0 % 1_000_000_000) as i32)
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

impl Tracked {
    fn ends(&self) -> &Ends {
        self.ends.as_deref().unwrap_or(&NO_ENDS)
    }

    fn total(&self) -> (u64, u64) {
        (
            self.base_packets + self.kernel_packets,
            self.base_bytes + self.kernel_bytes,
        )
    }

    /// What users see of it.
    fn entry(&self, key: &FlowKey) -> FlowEntry {
        self.view(key).to_entry()
    }

    /// What users see of it, borrowed.
    fn view<'a>(&'a self, key: &FlowKey) -> FlowView<'a> {
        self.view_with(key, true)
    }

    /// [`Tracked::view`]; without the `rule` (a string made per drop)
    /// unless `rule`: what filters and sorting read.
    fn view_with<'a>(&'a self, key: &FlowKey, rule: bool) -> FlowView<'a> {
        let (src, dst) = key_addresses(key);
        let (packets, bytes) = self.total();
        let labels = &*self.labels;
        FlowView {
            schema_version: super::SCHEMA_VERSION,
            host: crate::host::host_name(),
            container: labels.container.as_deref(),
            container_id: labels.container_id.as_deref(),
            project: labels.project.as_deref(),
            service: labels.service.as_deref(),
            network: labels.network.as_deref(),
            direction: labels.direction,
            src,
            dst,
            src_port: key.src_port,
            dst_port: key.dst_port,
            proto: Protocol::of(key.proto, key.family),
            packets: packets - self.verdict_start_packets,
            bytes: bytes - self.verdict_start_bytes,
            verdict: self.verdict,
            reason: FlowReason::of_static(self.reason),
            dropped_by: (self.verdict == Verdict::Dropped)
                .then_some(super::kdrops::DROPPED_BY_NETWATCH),
            rule: Some(self.reason)
                .filter(|reason| rule && self.verdict.is_drop_like() && *reason != DropReason::None)
                .and_then(|reason| {
                    super::names::rule_of(
                        labels.network.as_deref(),
                        labels.policy.as_deref(),
                        reason,
                    )
                })
                .map(Cow::Owned),
            peer: self.peer.as_deref().map(|p| p.name.as_str()),
            peer_service: self.peer.as_deref().and_then(|p| p.service.as_deref()),
            peer_kind: self.peer.as_deref().map(|p| p.kind.name()),
            published: self.ends().published.as_deref(),
            src_name: self.ends().src_name.as_deref(),
            dst_name: self.ends().dst_name.as_deref(),
            first_seen: self.first_seen.get(),
            last_seen: self.last_seen.get(),
            interface: labels.interface.as_deref(),
            flows: 1,
        }
    }
}

type SummaryKey = (Option<String>, Option<String>, Direction, Verdict);

/// What a flow's event adds to the totals of its earlier events: summing
/// the deltas of a flow's events gives what it carried (unlike its
/// `packets` and `bytes`, running totals that a log pipeline must not sum).
///
/// Counted from when this agent first saw the flow: a flow that began
/// before the agent started (an earlier agent may have logged it) counts
/// from its counts then, and a flow folded into a summary (`--flow-limit`)
/// that comes back counts from its counts at the fold. What a flow carried
/// after its last event is in no delta until its next event; every flow
/// the kernel still holds gets one at least every export interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub packets: u64,
    pub bytes: u64,
}

/// A flow's totals as of its latest event: what its next [`Delta`] counts
/// from. Shared by the flows and the kernel's drops, so both count alike.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Reported {
    packets: u64,
    bytes: u64,
}

impl Reported {
    /// Nothing of these totals goes into a delta.
    pub(super) fn at(packets: u64, bytes: u64) -> Reported {
        Reported { packets, bytes }
    }

    /// What the totals added since the latest event; they become the
    /// latest.
    pub(super) fn advance(&mut self, packets: u64, bytes: u64) -> Delta {
        let delta = Delta {
            packets: packets.saturating_sub(self.packets),
            bytes: bytes.saturating_sub(self.bytes),
        };
        *self = Reported { packets, bytes };
        delta
    }
}

/// Since when (monotonic ns, the agent's start) counts go into deltas: a
/// flow whose kernel entry began before then carries its counts at first
/// sight in none, since an earlier agent may have logged them.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DeltasFrom(pub(super) u64);

impl DeltasFrom {
    /// Where a kernel entry first seen now starts counting from.
    pub(super) fn first_sight(self, first_seen_ns: u64, packets: u64, bytes: u64) -> Reported {
        if first_seen_ns < self.0 {
            Reported::at(packets, bytes)
        } else {
            Reported::default()
        }
    }
}

/// What a flow folded into a summary had counted from its kernel entry.
#[derive(Clone, Copy, Debug)]
struct Folded {
    kernel_first_ns: u64,
    packets: u64,
    bytes: u64,
    /// Found in the kernel's table by the current sweep.
    seen: bool,
    /// To go in the next trim ([`FoldedFlows::trim`]).
    forgotten: bool,
}

/// What a flow's record or sweep entry finds among the folded flows.
enum Returning {
    /// Not folded (or folded from an older kernel entry: forgotten now).
    New,
    /// Folded, and nothing came since: it stays folded.
    StillFolded,
    /// Folded, and it carried more since: no longer folded; what it had
    /// counted at folding (packets, bytes), which its summary holds.
    Back(u64, u64),
}

/// Folded flows whose kernel entry may live on, oldest fold first (the
/// oldest are forgotten first), at most `capacity` after each fold or
/// forget (a tenth more within one).
///
/// Known by a 64-bit hash of their key, not the 48-byte key: an agent at
/// its flow limit keeps folding, and with the keys this held up to 24 MiB
/// at the default 100,000 (a map slot of 81 bytes, and 56 per place in a
/// queue of the fold order, which could be twice as long). Now an entry
/// of 48 bytes and an index slot of 9, about 7 MB, and the map's own
/// order is the fold order. Nothing is removed one by one: a flow that
/// comes back is marked forgotten, and forgotten and oldest go in one pass
/// that rebuilds the index table. Removed one by one from a `HashMap`, as
/// they were, they left deleted slots that doubled its table under churn
/// (5.4 → 10.7 MB), as in the flows' map ([`FlowMap`]). Two keys of one id
/// would also need the same kernel first-seen time to be taken for each
/// other (see `Aggregator::update`), and with a few hundred thousand ids
/// in a 64-bit space the chance that any two share one is already about
/// one in a billion.
#[derive(Debug)]
struct FoldedFlows {
    by_id: indexmap::IndexMap<u64, Folded, foldhash::fast::RandomState>,
    /// Entries of `by_id` marked forgotten since the last pass.
    forgotten: usize,
    capacity: usize,
    ids: foldhash::quality::RandomState,
}

impl FoldedFlows {
    fn new(capacity: usize) -> FoldedFlows {
        FoldedFlows {
            by_id: indexmap::IndexMap::default(),
            forgotten: 0,
            capacity,
            ids: foldhash::quality::RandomState::default(),
        }
    }

    fn id(&self, key: &FlowKey) -> u64 {
        use std::hash::BuildHasher as _;
        self.ids.hash_one(key)
    }

    /// Whether a flow the aggregate does not keep, seen again in the
    /// kernel entry first seen at `first_seen_ns` with `packets`, was
    /// folded, and whether it stays so.
    fn returning(&mut self, key: &FlowKey, first_seen_ns: u64, packets: u64) -> Returning {
        // Every new flow asks: an agent that never folded hashes nothing.
        if self.by_id.is_empty() {
            return Returning::New;
        }
        let id = self.id(key);
        let Some(folded) = self.by_id.get_mut(&id).filter(|f| !f.forgotten) else {
            return Returning::New;
        };
        if folded.kernel_first_ns != first_seen_ns {
            // A new kernel entry: a new flow.
            folded.forgotten = true;
            self.forgotten += 1;
            return Returning::New;
        }
        if packets <= folded.packets {
            folded.seen = true;
            return Returning::StillFolded;
        }
        folded.forgotten = true;
        self.forgotten += 1;
        Returning::Back(folded.packets, folded.bytes)
    }

    /// Remembers `tracked`, a flow folded or forgotten while its kernel
    /// entry may live on (see [`Aggregator::set_kernel_table_entries`]).
    /// Call [`FoldedFlows::trim`] after a batch.
    fn remember(&mut self, key: &FlowKey, tracked: &Tracked) {
        let folded = Folded {
            kernel_first_ns: tracked.kernel_first_ns,
            packets: tracked.kernel_packets,
            bytes: tracked.kernel_bytes,
            seen: false,
            forgotten: false,
        };
        // A flow folded before keeps the place of its first fold, and goes
        // a little early (as it did with a queue of the fold order).
        if let Some(earlier) = self.by_id.insert(self.id(key), folded)
            && earlier.forgotten
        {
            self.forgotten -= 1;
        }
        // A batch larger than a tenth of the capacity (forgetting many
        // containers' flows at once) is trimmed on the way.
        if self.by_id.len() > self.capacity + self.capacity / 10 {
            self.trim();
        }
    }

    /// Drops the forgotten, and the oldest beyond the capacity, in one
    /// pass over the map.
    fn trim(&mut self) {
        if self.by_id.len() <= self.capacity && self.forgotten == 0 {
            return;
        }
        let mut oldest = (self.by_id.len() - self.forgotten).saturating_sub(self.capacity);
        self.by_id.retain(|_, folded| {
            if folded.forgotten {
                return false;
            }
            if oldest > 0 {
                oldest -= 1;
                return false;
            }
            true
        });
        self.forgotten = 0;
    }

    /// Forgets those the last sweep did not find in the kernel's table.
    fn keep_seen(&mut self) {
        self.by_id
            .retain(|_, f| !f.forgotten && std::mem::take(&mut f.seen));
        self.forgotten = 0;
    }

    #[cfg(test)]
    fn contains(&self, key: &FlowKey) -> bool {
        self.by_id
            .get(&self.id(key))
            .is_some_and(|folded| !folded.forgotten)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_id.len() - self.forgotten
    }
}

/// The flows kept one by one.
///
/// Not a `HashMap`: under churn at the limit hashbrown's map doubled its
/// table although it never held more than the limit (a removed entry's
/// slot is marked deleted, not empty, when its probe group is full, which
/// at ~87% load is nearly every group; deleted slots give back no room,
/// and once the room runs out with more than half the slots live it
/// resizes to twice the slots instead of cleaning in place, and
/// `shrink_to` does not clean a table of the same size either). At the
/// default 100,000 that was 262,144 slots of ~177 bytes: a default agent
/// taking 200,000 flows peaked near 89 MiB where 100,000 flows take 60.
/// An `IndexMap` keeps the entries in one vector and a table of 8-byte
/// indices beside it, and a removal in one pass (`extract_if`: folding,
/// forgetting) rebuilds that table from scratch, so no deleted slot
/// outlives it and nothing here is removed any other way. Measured beside
/// the `HashMap`, runs alternated: bench-scale's churn peak 89.3 → 63.4
/// MiB and 100,000 flows 61.2 → 56.6 MiB; in process (`bench_user`), a
/// new flow's ingest at the limit 841–914 → 670–715 ns (the deleted slots
/// had lengthened every probe) and a sweep of 100,000 kernel entries plus
/// a query 59–94 → 52–56 ms, though a lookup reads the index table too.
type FlowMap = indexmap::IndexMap<FlowKey, Tracked, foldhash::fast::RandomState>;

/// Every flow the agent knows, bounded.
#[derive(Debug)]
pub struct Aggregator {
    limit: usize,
    flows: FlowMap,
    summaries: BTreeMap<SummaryKey, FlowEntry>,
    folded: FoldedFlows,
    /// Interned endpoint names and peer names; entries no flow uses any
    /// more are dropped after each sweep.
    labels: HashSet<Arc<Labels>>,
    /// The interned names of a container veth's flows by (ifindex,
    /// direction), for the names of [`FlowNames::generation`] `.0`: a new
    /// flow there takes them without building its owner's strings.
    labels_by_veth: (u64, HashMap<(u32, u8), Arc<Labels>>),
    /// Which names each container resolved to which addresses.
    pub dns_names: DnsNames,
    peers: HashSet<Arc<Peer>>,
    pub counters: PipelineCounters,
    deltas_from: DeltasFrom,
}

impl Aggregator {
    /// Keeps at most `limit` flows one by one (at least 1).
    pub fn new(limit: usize) -> Aggregator {
        Aggregator {
            limit: limit.max(1),
            flows: FlowMap::default(),
            summaries: BTreeMap::new(),
            folded: FoldedFlows::new(limit.max(1)),
            labels: HashSet::new(),
            labels_by_veth: (0, HashMap::new()),
            peers: HashSet::new(),
            dns_names: DnsNames::default(),
            counters: PipelineCounters::default(),
            deltas_from: DeltasFrom::default(),
        }
    }

    /// Flows that began before `monotonic_ns` (the agent's start) carry
    /// their counts until then in no [`Delta`]: an earlier agent may have
    /// logged them.
    pub fn count_deltas_from(&mut self, monotonic_ns: u64) {
        self.deltas_from = DeltasFrom(monotonic_ns);
    }

    /// The capacity of the kernel's flow table (`--flow-table-entries`):
    /// no more folded flows can still have an entry there. Remembered are
    /// the last folded, as many as that or the limit, whichever is more:
    /// the kernel keeps the most recently used entries, which are among the
    /// last folded but not necessarily the very last (a batch is folded in
    /// no order), and between sweeps nothing tells which ones they are.
    pub fn set_kernel_table_entries(&mut self, entries: usize) {
        self.folded.capacity = entries.max(self.limit);
    }

    /// Flows kept one by one now.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Merges one ring buffer record; returns the flow as it stands now
    /// (what `observe` shows) and what it adds since the flow's last
    /// described record, or `None` for a record it cannot read.
    pub fn record(
        &mut self,
        event: &FlowEvent,
        names: &FlowNames,
        clock: &Clock,
    ) -> Option<(FlowEntry, Delta)> {
        let stats = self.readable(event)?;
        let described = self
            .update(&event.key, &stats, names, clock)
            .map(|tracked| {
                let (packets, bytes) = tracked.total();
                let delta = tracked.reported.advance(packets, bytes);
                (tracked.entry(&event.key), delta)
            });
        self.enforce_limit();
        described
    }

    /// Merges one ring buffer record that nobody is shown (no observer, no
    /// flow log): no [`FlowEntry`] is built, which is most of a described
    /// record's cost (a dozen strings). Its counts go into no [`Delta`]
    /// yet: the flow's next described record carries them, so the deltas
    /// an observer sums still add up to what the flow carried since it was
    /// last described.
    pub fn record_silently(&mut self, event: &FlowEvent, names: &FlowNames, clock: &Clock) {
        let Some(stats) = self.readable(event) else {
            return;
        };
        self.update(&event.key, &stats, names, clock);
        self.enforce_limit();
    }

    /// Counts a record, and reads its counts unless it is malformed.
    fn readable(&mut self, event: &FlowEvent) -> Option<FlowStats> {
        self.counters.records += 1;
        if EventKind::from_u8(event.kind).is_none()
            || Verdict::from_u8(event.verdict).is_none()
            || DropReason::from_u8(event.reason).is_none()
            || Direction::from_u8(event.key.direction).is_none()
        {
            self.counters.malformed += 1;
            return None;
        }
        Some(FlowStats {
            packets: event.packets,
            bytes: event.bytes,
            first_seen_ns: event.first_seen_ns,
            last_seen_ns: event.last_seen_ns,
            verdict: event.verdict,
            reason: event.reason,
            tcp_flags: event.tcp_flags,
            ..FlowStats::default()
        })
    }

    /// Merges one entry of the kernel's flow table (a sweep).
    pub fn sweep_entry(
        &mut self,
        key: &FlowKey,
        stats: &FlowStats,
        names: &FlowNames,
        clock: &Clock,
    ) {
        self.update(key, stats, names, clock);
    }

    /// Call after a sweep: folds flows beyond the limit into summaries and
    /// forgets names no flow uses.
    pub fn finish_sweep(&mut self) {
        // A folded flow the kernel no longer holds can only come back as a
        // new entry (a new first-seen time), which is a new flow.
        self.folded.keep_seen();
        self.enforce_limit();
        // The cache holds a reference of its own: emptied first, so names
        // no flow uses go (it fills again from the next new flows).
        self.labels_by_veth.1.clear();
        self.labels.retain(|l| Arc::strong_count(l) > 1);
        self.peers.retain(|p| Arc::strong_count(p) > 1);
    }

    /// Merges `stats` into the flow of `key` with one lookup of the flow
    /// (this runs per record); returns the flow, or `None` when the values
    /// are unknown or the flow was folded and nothing came since.
    fn update(
        &mut self,
        key: &FlowKey,
        stats: &FlowStats,
        names: &FlowNames,
        clock: &Clock,
    ) -> Option<&mut Tracked> {
        let (Some(direction), Some(verdict), Some(reason)) = (
            Direction::from_u8(key.direction),
            Verdict::from_u8(stats.verdict),
            DropReason::from_u8(stats.reason),
        ) else {
            // Values this version does not know (a kernel table written by
            // another version's programs): as a record with them would be.
            self.counters.malformed += 1;
            return None;
        };
        let Aggregator {
            flows,
            summaries,
            folded,
            labels,
            labels_by_veth,
            peers,
            dns_names,
            counters,
            deltas_from,
            ..
        } = self;
        let tracked = match flows.entry(*key) {
            indexmap::map::Entry::Occupied(entry) => entry.into_mut(),
            indexmap::map::Entry::Vacant(entry) => {
                // Most new flows were never folded: one lookup, no removal.
                let counted = match folded.returning(key, stats.first_seen_ns, stats.packets) {
                    Returning::StillFolded => return None,
                    Returning::Back(packets, bytes) => Some((packets, bytes)),
                    Returning::New => None,
                };
                let interned = Interned {
                    labels,
                    labels_by_veth,
                    peers,
                    counters,
                };
                let mut tracked = new_tracked(
                    interned,
                    key,
                    (direction, verdict, reason),
                    stats,
                    names,
                    clock,
                );
                if let Some((packets, bytes)) = counted {
                    // Its summary has these: the flow shows what came since.
                    tracked.kernel_packets = packets;
                    tracked.kernel_bytes = bytes;
                    tracked.verdict_start_packets = packets;
                    tracked.verdict_start_bytes = bytes;
                    tracked.reported = Reported::at(packets, bytes);
                } else {
                    tracked.reported =
                        deltas_from.first_sight(stats.first_seen_ns, stats.packets, stats.bytes);
                }
                entry.insert(tracked)
            }
        };
        if tracked.ends().src_name.is_none()
            && tracked.ends().dst_name.is_none()
            && tracked.dns_asked != dns_names.generation()
        {
            // Until the container resolves one of them: its answer may be
            // drained after the flow's first record.
            let (src_name, dst_name) = dns_names.ends(
                tracked.labels.container.as_deref(),
                key,
                stats.first_seen_ns,
            );
            if src_name.is_some() || dst_name.is_some() {
                let ends = tracked.ends.get_or_insert_default();
                (ends.src_name, ends.dst_name) = (src_name, dst_name);
            }
            tracked.dns_asked = dns_names.generation();
        }
        if stats.first_seen_ns != tracked.kernel_first_ns {
            if stats.first_seen_ns < tracked.kernel_first_ns {
                // An older copy (a record taken before the latest sweep).
                return Some(tracked);
            }
            tracked.base_packets += tracked.kernel_packets;
            tracked.base_bytes += tracked.kernel_bytes;
            tracked.kernel_first_ns = stats.first_seen_ns;
            tracked.kernel_packets = 0;
            tracked.kernel_bytes = 0;
            counters.kernel_evictions += 1;
        }
        let (before_packets, before_bytes) = tracked.total();
        // Counts only grow within one kernel entry; a record read after a
        // sweep may carry older ones.
        tracked.kernel_packets = tracked.kernel_packets.max(stats.packets);
        tracked.kernel_bytes = tracked.kernel_bytes.max(stats.bytes);
        let last_seen = Wall::at(clock, stats.last_seen_ns);
        if last_seen < tracked.last_seen {
            return Some(tracked);
        }
        tracked.last_seen = last_seen;
        if (verdict, reason) == (tracked.verdict, tracked.reason) {
            return Some(tracked);
        }
        // The verdict changed: what was counted until now stays under the
        // old one.
        let mut segment = tracked.entry(key);
        segment.packets = before_packets - tracked.verdict_start_packets;
        segment.bytes = before_bytes - tracked.verdict_start_bytes;
        tracked.verdict_start_packets = before_packets;
        tracked.verdict_start_bytes = before_bytes;
        tracked.verdict = verdict;
        tracked.reason = reason;
        if segment.packets > 0 {
            fold(summaries, segment);
        }
        Some(tracked)
    }

    /// Beyond the limit, folds the longest idle flows until a tenth of the
    /// limit is free again: finding them walks every flow, so doing it per
    /// new flow at the limit made each record cost milliseconds (measured:
    /// ~15 ms at 100,000 flows, so the agent took ~64 new flows/s); in
    /// batches it is paid once per limit/10 new flows.
    fn enforce_limit(&mut self) {
        if self.flows.len() <= self.limit {
            return;
        }
        let low_water = self.limit - (self.limit / 10).max(1).min(self.limit - 1);
        let excess = self.flows.len() - low_water;
        // Which flows are the `excess` longest idle is decided on their
        // times alone (8 bytes a flow, where collecting their keys too took
        // 56 and a lookup to remove each), and they are taken out in one
        // pass over the map.
        let mut longest_idle =
            Oldest::among(self.flows.values().map(|t| t.last_seen).collect(), excess);
        let Aggregator {
            flows,
            summaries,
            folded,
            counters,
            ..
        } = self;
        let taken = flows.extract_if(.., |_, t| longest_idle.takes(t.last_seen));
        // The summary each (names, verdict) folds into, once one flow of
        // them has been folded: the others add their counts to it without
        // making an entry (a dozen strings) to fold, which was most of the
        // cost of folding (the first of each still folds whole, so a new
        // summary is made from the same flow as before).
        let mut folded_into: HashMap<(*const Labels, Verdict), SummaryKey> = HashMap::new();
        for (key, tracked) in taken {
            folded.remember(&key, &tracked);
            counters.summarised += 1;
            // Labels stay interned (`self.labels`) until the next sweep:
            // no address is reused while `folded_into` lives.
            let group = (Arc::as_ptr(&tracked.labels), tracked.verdict);
            if let Some(summary) = folded_into
                .get(&group)
                .and_then(|summary_key| summaries.get_mut(summary_key))
            {
                let (packets, bytes) = tracked.total();
                add_to_summary(
                    summary,
                    (
                        packets - tracked.verdict_start_packets,
                        bytes - tracked.verdict_start_bytes,
                    ),
                    (tracked.first_seen.get(), tracked.last_seen.get()),
                );
                continue;
            }
            let entry = tracked.entry(&key);
            folded_into.insert(group, summary_key(&entry));
            fold(summaries, entry);
        }
        folded.trim();
    }

    /// Forgets the flows and summaries of containers that are gone (`is_present`
    /// says no) and sent or received nothing since `cutoff`: their metric
    /// series end with them, so a host that runs many short-lived
    /// containers keeps a bounded set. A forgotten flow that the kernel
    /// still holds is remembered as folded, so a later sweep does not
    /// count it again. Returns how many flows and summaries it forgot.
    pub fn forget_gone(&mut self, is_present: impl Fn(&str) -> bool, cutoff: Timestamp) -> usize {
        let gone = |container: Option<&str>, last_seen: Timestamp| {
            container.is_some_and(|c| !is_present(c)) && last_seen < cutoff
        };
        // Taken out in one pass, as folding does: removed one by one they
        // would leave deleted slots in the index table (see [`FlowMap`]).
        let mut forgotten = 0;
        for (key, tracked) in self.flows.extract_if(.., |_, t| {
            gone(t.labels.container.as_deref(), t.last_seen.get())
        }) {
            self.folded.remember(&key, &tracked);
            forgotten += 1;
        }
        self.folded.trim();
        let summaries_before = self.summaries.len();
        self.summaries
            .retain(|_, summary| !gone(summary.container.as_deref(), summary.last_seen));
        forgotten + summaries_before - self.summaries.len()
    }

    /// Calls `sum` once per set of flows and summaries that share their
    /// container, service, network, direction and verdict, with their
    /// packets and bytes (one set may come in several calls).
    ///
    /// What metrics need, without a [`FlowEntry`] per flow: flows of one
    /// endpoint and direction share their names ([`Labels`]), so they are
    /// summed by that shared reference and the names are looked at once per
    /// endpoint. Building every entry instead made a scrape at 100,000
    /// flows allocate a million strings (~130 ms and tens of MiB at once).
    pub fn sum_series(&self, mut sum: impl FnMut(SeriesSum<'_>)) {
        let mut by_labels: HashMap<(usize, Verdict), (&Labels, u64, u64)> = HashMap::new();
        for tracked in self.flows.values() {
            let (packets, bytes) = tracked.total();
            let labels = &*tracked.labels;
            let (_, p, b) = by_labels
                .entry((Arc::as_ptr(&tracked.labels) as usize, tracked.verdict))
                .or_insert((labels, 0, 0));
            *p = p.saturating_add(packets - tracked.verdict_start_packets);
            *b = b.saturating_add(bytes - tracked.verdict_start_bytes);
        }
        for ((_, verdict), (labels, packets, bytes)) in by_labels {
            sum(SeriesSum {
                container: labels.container.as_deref(),
                service: labels.service.as_deref(),
                network: labels.network.as_deref(),
                direction: labels.direction,
                verdict,
                packets,
                bytes,
            });
        }
        for summary in self.summaries.values() {
            sum(SeriesSum::of(summary));
        }
    }

    /// Every flow and summary, where it is kept, in no particular order.
    pub fn refs(&self) -> impl Iterator<Item = FlowRef<'_>> {
        self.flows
            .iter()
            .map(|(key, t)| FlowRef(Kept::Flow(key, t)))
            .chain(self.summaries.values().map(FlowRef::entry))
    }

    /// The flows and summaries `filter` lets through, busiest first.
    pub fn entries(&self, filter: &FlowFilter) -> Vec<FlowEntry> {
        let out: Vec<FlowEntry> = self
            .flows
            .iter()
            .map(|(key, t)| t.entry(key))
            .chain(self.summaries.values().cloned())
            .filter(|e| filter.matches(e))
            .collect();
        busiest_first(out)
    }
}

/// Which `count` members of a set are the oldest by a time of theirs,
/// decided on their times alone, so that they can be taken out in one pass
/// over the set (`extract_if`, `retain`).
pub(super) struct Oldest<T> {
    /// The newest time among them.
    newest: T,
    /// How many members at exactly `newest` are among them still to take:
    /// as many as it takes (which of them is no matter, as for any other
    /// tie).
    at_newest: usize,
}

impl<T: Ord + Copy> Oldest<T> {
    /// The `count` oldest of the members whose times are `times` (one per
    /// member; `1 <= count <= times.len()`).
    pub(super) fn among(mut times: Vec<T>, count: usize) -> Oldest<T> {
        let (_, &mut newest, _) = times.select_nth_unstable(count - 1);
        let at_newest = count - times[..count].iter().filter(|&&t| t < newest).count();
        Oldest { newest, at_newest }
    }

    /// Whether the member at `time` is one of them; ask once per member.
    pub(super) fn takes(&mut self, time: T) -> bool {
        time < self.newest
            || (time == self.newest && self.at_newest > 0 && {
                self.at_newest -= 1;
                true
            })
    }
}

/// The packets and bytes of flows that share the labels of a metric
/// series ([`Aggregator::sum_series`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesSum<'a> {
    pub container: Option<&'a str>,
    pub service: Option<&'a str>,
    pub network: Option<&'a str>,
    pub direction: Direction,
    pub verdict: Verdict,
    pub packets: u64,
    pub bytes: u64,
}

impl SeriesSum<'_> {
    /// One entry's share.
    pub fn of(entry: &FlowEntry) -> SeriesSum<'_> {
        SeriesSum {
            container: entry.container.as_deref(),
            service: entry.service.as_deref(),
            network: entry.network.as_deref(),
            direction: entry.direction,
            verdict: entry.verdict,
            packets: entry.packets,
            bytes: entry.bytes,
        }
    }
}

/// `entries` ordered by bytes, most first, then by last packet, oldest
/// first; entries equal in both keep their order.
///
/// Sorted through a small index rather than in place: a `FlowEntry` is a
/// few hundred bytes, and sorting 100,000 of them in place spent most of a
/// `flows` query moving them (measured: a third of its time in memmove).
pub fn busiest_first<F: FlowFields>(entries: Vec<F>) -> Vec<F> {
    let mut order: Vec<(u64, Timestamp, usize)> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.bytes(), e.last_seen(), i))
        .collect();
    order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut slots: Vec<Option<F>> = entries.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|(_, _, i)| slots[i].take())
        .collect()
}

/// The aggregate's interned names and its counters, lent to
/// [`new_tracked`] while the flow map is borrowed for the new flow's entry.
struct Interned<'a> {
    labels: &'a mut HashSet<Arc<Labels>>,
    labels_by_veth: &'a mut (u64, HashMap<(u32, u8), Arc<Labels>>),
    peers: &'a mut HashSet<Arc<Peer>>,
    counters: &'a mut PipelineCounters,
}

fn new_tracked(
    interned: Interned<'_>,
    key: &FlowKey,
    (direction, verdict, reason): (Direction, Verdict, DropReason),
    stats: &FlowStats,
    names: &FlowNames,
    clock: &Clock,
) -> Tracked {
    let Interned {
        labels: interned_labels,
        labels_by_veth,
        peers,
        counters,
    } = interned;
    let intern = |interned_labels: &mut HashSet<Arc<Labels>>| {
        let owner = names.owner(key);
        let labels = Labels {
            container: owner.container,
            container_id: owner.container_id,
            service: owner.service,
            project: owner.project,
            network: owner.network,
            interface: owner.interface,
            direction,
            policy: owner.policy,
        };
        match interned_labels.get(&labels) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared = Arc::new(labels);
                interned_labels.insert(Arc::clone(&shared));
                shared
            }
        }
    };
    let labels = if names.owner_by_interface(key.ifindex) {
        if labels_by_veth.0 != names.generation() {
            *labels_by_veth = (names.generation(), HashMap::new());
        }
        Arc::clone(
            labels_by_veth
                .1
                .entry((key.ifindex, key.direction))
                .or_insert_with(|| intern(interned_labels)),
        )
    } else {
        intern(interned_labels)
    };
    // Looked up once per flow: the name stays with the flow even when
    // the host socket it came from is gone.
    let (peer, outcome) = names.peer(key);
    match outcome {
        Outcome::Named => counters.host_mode_peers += 1,
        Outcome::Failed => counters.host_peer_lookup_failures += 1,
        Outcome::NotAsked | Outcome::Host => {}
    }
    let peer = peer.map(|peer| match peers.get(&peer) {
        Some(shared) => Arc::clone(shared),
        None => {
            let shared = Arc::new(peer);
            peers.insert(Arc::clone(&shared));
            shared
        }
    });
    let first_seen = Wall::at(clock, stats.first_seen_ns);
    Tracked {
        labels,
        peer,
        ends: names.published(key).map(|published| {
            Box::new(Ends {
                published: Some(published.into()),
                ..Ends::default()
            })
        }),
        dns_asked: NEVER_ASKED,
        first_seen,
        last_seen: first_seen,
        verdict,
        reason,
        kernel_first_ns: stats.first_seen_ns,
        kernel_packets: 0,
        kernel_bytes: 0,
        base_packets: 0,
        base_bytes: 0,
        verdict_start_packets: 0,
        verdict_start_bytes: 0,
        reported: Reported::default(),
    }
}

fn summary_key(entry: &FlowEntry) -> SummaryKey {
    (
        entry.container.clone(),
        entry.network.clone(),
        entry.direction,
        entry.verdict,
    )
}

/// Adds one flow's counts and times to a summary of flows.
fn add_to_summary(
    summary: &mut FlowEntry,
    (packets, bytes): (u64, u64),
    (first_seen, last_seen): (Timestamp, Timestamp),
) {
    summary.packets += packets;
    summary.bytes += bytes;
    summary.flows += 1;
    summary.first_seen = summary.first_seen.min(first_seen);
    summary.last_seen = summary.last_seen.max(last_seen);
}

/// Adds `entry` to its summary (container, network, direction, verdict).
fn fold(summaries: &mut BTreeMap<SummaryKey, FlowEntry>, entry: FlowEntry) {
    let key = summary_key(&entry);
    match summaries.get_mut(&key) {
        Some(summary) => add_to_summary(
            summary,
            (entry.packets, entry.bytes),
            (entry.first_seen, entry.last_seen),
        ),
        None => {
            let summary = FlowEntry {
                src: None,
                dst: None,
                src_port: 0,
                dst_port: 0,
                proto: Protocol::Any,
                peer: None,
                peer_service: None,
                peer_kind: None,
                published: None,
                src_name: None,
                dst_name: None,
                reason: entry
                    .reason
                    .clone()
                    .filter(|_| entry.verdict.is_drop_like()),
                ..entry
            };
            summaries.insert(key, summary);
        }
    }
}

#[cfg(test)]
mod tests {
    use netwatch_common::{flow::family, packet::IPPROTO_TCP};

    use super::*;

    fn key(port: u16) -> FlowKey {
        let mut key = FlowKey {
            ifindex: 7,
            direction: Direction::Egress as u8,
            family: family::IPV4,
            proto: IPPROTO_TCP,
            src_port: port,
            dst_port: 80,
            ..FlowKey::default()
        };
        key.src[..4].copy_from_slice(&[172, 30, 0, 2]);
        key.dst[..4].copy_from_slice(&[172, 30, 0, 3]);
        key
    }

    fn stats(first: u64, last: u64, packets: u64, bytes: u64) -> FlowStats {
        FlowStats {
            packets,
            bytes,
            first_seen_ns: first,
            last_seen_ns: last,
            ..FlowStats::default()
        }
    }

    fn clock() -> Clock {
        Clock::at(Timestamp::from_second(1_800_000_000).unwrap())
    }

    fn export(port: u16, first: u64, last: u64, packets: u64) -> FlowEvent {
        FlowEvent {
            kind: EventKind::FlowExport as u8,
            key: key(port),
            packets,
            bytes: packets * 100,
            first_seen_ns: first,
            last_seen_ns: last,
            ..FlowEvent::default()
        }
    }

    /// A folded flow is remembered in a map entry of 48 bytes: its hash,
    /// id and [`Folded`] (see [`FoldedFlows`]).
    #[test]
    fn a_folded_flow_is_remembered_by_id_in_48_bytes() {
        assert_eq!(std::mem::size_of::<Folded>(), 32);
        let mut agg = Aggregator::new(10);
        agg.sweep_entry(
            &key(1),
            &stats(50, 1, 1, 100),
            &FlowNames::default(),
            &clock(),
        );
        let template = agg.flows[&key(1)].clone();
        let tracked = |first| Tracked {
            kernel_first_ns: first,
            ..template.clone()
        };
        let mut folded = FoldedFlows::new(2);
        for port in 1..=3 {
            folded.remember(&key(port), &tracked(u64::from(port)));
        }
        folded.trim();
        // The oldest went beyond the capacity; the others are found by key.
        assert!(!folded.contains(&key(1)));
        assert!(folded.contains(&key(2)) && folded.contains(&key(3)));
        assert!(matches!(
            folded.returning(&key(2), 2, 1),
            Returning::StillFolded
        ));
        assert!(folded.contains(&key(2)), "nothing came since: still folded");
        assert!(matches!(
            folded.returning(&key(3), 3, 5),
            Returning::Back(1, 100)
        ));
        assert!(!folded.contains(&key(3)));
        assert!(matches!(folded.returning(&key(2), 9, 1), Returning::New));
        assert!(!folded.contains(&key(2)), "a new kernel entry: forgotten");
        // Folded again, a flow is remembered again; the forgotten take no
        // room after the next trim.
        folded.remember(&key(3), &tracked(3));
        assert!(folded.contains(&key(3)));
        folded.trim();
        assert_eq!((folded.len(), folded.by_id.len()), (1, 1));
    }

    /// The aggregate's map holds one per flow: bytes here are most of the
    /// agent's memory at 100,000 flows (see [`Tracked`]).
    #[test]
    fn a_flow_is_kept_in_128_bytes_and_its_times_round_trip() {
        assert!(
            std::mem::size_of::<Tracked>() <= 128,
            "{}",
            std::mem::size_of::<Tracked>()
        );
        for time in [
            Timestamp::UNIX_EPOCH,
            Timestamp::from_nanosecond(1_700_000_000_123_456_789).unwrap(),
            Timestamp::from_nanosecond(-5).unwrap(),
        ] {
            assert_eq!(Wall::of(time).get(), time);
        }
        assert!(Wall::of(Timestamp::MAX) > Wall::of(Timestamp::UNIX_EPOCH));
        assert!(Wall::of(Timestamp::MIN) < Wall::of(Timestamp::UNIX_EPOCH));
        for ns in [
            i64::MIN,
            i64::MIN + 1,
            -1_000_000_001,
            -999_999_999,
            -1,
            0,
            1,
            999_999_999,
            1_000_000_000,
            1_700_000_000_123_456_789,
            i64::MAX,
        ] {
            assert_eq!(
                Wall(ns).get(),
                Timestamp::from_nanosecond(i128::from(ns)).unwrap(),
                "{ns}"
            );
        }
    }

    /// A kernel time's wall time, as flows keep it, is what the clock
    /// says, held at the ends of an i64 beyond them (and the epoch beyond
    /// jiff's range, as the clock says then).
    #[test]
    fn kernel_times_become_the_clocks_wall_times() {
        let walls = [
            Timestamp::UNIX_EPOCH,
            Timestamp::from_nanosecond(1_700_000_000_123_456_789).unwrap(),
            Timestamp::from_nanosecond(-1_234_567_891).unwrap(),
            Timestamp::from_nanosecond(i128::from(i64::MAX) - 10).unwrap(),
            Timestamp::from_nanosecond(i128::from(i64::MIN)).unwrap(),
            Timestamp::MAX,
            Timestamp::MIN,
        ];
        for wall in walls {
            let clock = Clock::at(wall);
            for monotonic_ns in [0, 1, 11, 999_999_999, 1_000_000_000, u64::MAX / 2, u64::MAX] {
                assert_eq!(
                    Wall::at(&clock, monotonic_ns),
                    Wall::of(clock.wall(monotonic_ns)),
                    "{wall} + {monotonic_ns} ns"
                );
            }
        }
        let clock = Clock::now();
        let monotonic_ns = Clock::monotonic_ns();
        assert_eq!(
            Wall::at(&clock, monotonic_ns),
            Wall::of(clock.wall(monotonic_ns))
        );
    }

    #[test]
    fn a_flows_event_deltas_sum_to_its_total_across_sweeps_and_kernel_evictions() {
        let mut agg = Aggregator::new(10);
        let names = FlowNames::default();
        let delta = |agg: &mut Aggregator, event: &FlowEvent| {
            let (_, delta) = agg.record(event, &names, &clock()).unwrap();
            (delta.packets, delta.bytes)
        };
        assert_eq!(delta(&mut agg, &export(1, 100, 110, 2)), (2, 200));
        // A sweep moves the totals on; the next event carries what the
        // sweep saw too, as no event had it yet.
        agg.sweep_entry(&key(1), &stats(100, 120, 5, 500), &names, &clock());
        assert_eq!(delta(&mut agg, &export(1, 100, 130, 6)), (4, 400));
        // An older copy adds nothing.
        assert_eq!(delta(&mut agg, &export(1, 100, 125, 5)), (0, 0));
        // The kernel's entry was evicted and began again at 1.
        assert_eq!(delta(&mut agg, &export(1, 900, 910, 1)), (1, 100));
        let total = agg.entries(&FlowFilter::default())[0].packets;
        assert_eq!(total, 2 + 4 + 1, "the deltas sum to the total");
    }

    #[test]
    fn flows_list_busiest_first_then_oldest_and_equal_ones_keep_their_order() {
        use crate::render::fixtures::{at, egress};
        let flow = |name: &str, bytes: u64, last: i64| {
            let mut e = egress(name, "n", ("10.0.0.1", 1), ("10.0.0.2", 2), bytes);
            e.last_seen = at(last);
            e
        };
        let sorted = busiest_first(vec![
            flow("small", 10, 1),
            flow("big-late", 500, 9),
            flow("tie-a", 100, 5),
            flow("big-early", 500, 2),
            flow("tie-b", 100, 5),
        ]);
        let names: Vec<_> = sorted
            .iter()
            .map(|e| e.container.as_deref().unwrap())
            .collect();
        assert_eq!(names, ["big-early", "big-late", "tie-a", "tie-b", "small"]);
    }

    #[test]
    fn a_flow_older_than_the_agent_counts_its_deltas_from_first_sight() {
        let mut agg = Aggregator::new(10);
        agg.count_deltas_from(1_000);
        let names = FlowNames::default();
        // Began before the agent started: an earlier agent may have logged
        // its 40 packets.
        let (_, first) = agg
            .record(&export(1, 500, 1_100, 40), &names, &clock())
            .unwrap();
        assert_eq!(first, Delta::default());
        let (_, next) = agg
            .record(&export(1, 500, 1_200, 43), &names, &clock())
            .unwrap();
        assert_eq!((next.packets, next.bytes), (3, 300));
        // Began after: all of it.
        let (_, new) = agg
            .record(&export(2, 1_050, 1_100, 7), &names, &clock())
            .unwrap();
        assert_eq!((new.packets, new.bytes), (7, 700));
    }

    #[test]
    fn a_gone_containers_flows_and_summaries_are_forgotten_once_idle_and_not_counted_again() {
        let mut agg = Aggregator::new(1);
        let names = FlowNames::new(&crate::flows::names::tests::state(), &[]);
        let at = |ns: u64| clock().wall(ns);
        // Two flows of postgres (veth 31, see the names' test state): the
        // limit of 1 folds the older into a summary.
        let mut old = export(1, 100, 200, 5);
        old.key.ifindex = 31;
        let mut newer = export(2, 300, 400, 7);
        newer.key.ifindex = 31;
        agg.record(&old, &names, &clock()).unwrap();
        agg.record(&newer, &names, &clock()).unwrap();
        let all = agg.entries(&FlowFilter::default());
        assert_eq!(all.len(), 2, "one flow and one summary");
        assert!(
            all.iter()
                .all(|e| e.container.as_deref() == Some("postgres"))
        );

        // Present: kept, however old.
        assert_eq!(agg.forget_gone(|_| true, at(10_000)), 0);
        // Gone but seen after the cutoff: kept.
        assert_eq!(agg.forget_gone(|_| false, at(350)), 1, "only the summary");
        // Gone and idle since before the cutoff: forgotten.
        assert_eq!(agg.forget_gone(|_| false, at(10_000)), 1);
        assert!(agg.entries(&FlowFilter::default()).is_empty());
        // The kernel still holds the flow with nothing new: not counted
        // again by the next sweep.
        let mut kernel = stats(300, 400, 7, 700);
        kernel.verdict = Verdict::Forwarded as u8;
        agg.sweep_entry(&newer.key, &kernel, &names, &clock());
        agg.finish_sweep();
        assert!(agg.entries(&FlowFilter::default()).is_empty());
    }

    #[test]
    fn sweeps_and_records_merge_into_growing_exact_counts() {
        let mut agg = Aggregator::new(10);
        let names = FlowNames::default();
        agg.sweep_entry(&key(1), &stats(100, 200, 3, 300), &names, &clock());
        let event = FlowEvent {
            kind: EventKind::FlowExport as u8,
            key: key(1),
            packets: 2,
            bytes: 200,
            first_seen_ns: 100,
            last_seen_ns: 150,
            ..FlowEvent::default()
        };
        agg.record(&event, &names, &clock()).unwrap();
        let all = agg.entries(&FlowFilter::default());
        assert_eq!(all.len(), 1);
        assert_eq!(
            (all[0].packets, all[0].bytes),
            (3, 300),
            "an older record never lowers the counts"
        );
        assert_eq!(all[0].direction, Direction::Egress);
        assert_eq!(all[0].verdict, Verdict::Forwarded);
        assert_eq!(all[0].reason, None);
    }

    #[test]
    fn an_evicted_kernel_entry_adds_to_the_flow_instead_of_resetting_it() {
        let mut agg = Aggregator::new(10);
        let names = FlowNames::default();
        agg.sweep_entry(&key(1), &stats(100, 200, 10, 1000), &names, &clock());
        agg.sweep_entry(&key(1), &stats(500, 600, 4, 400), &names, &clock());
        let all = agg.entries(&FlowFilter::default());
        assert_eq!((all[0].packets, all[0].bytes), (14, 1400));
        assert_eq!(agg.counters.kernel_evictions, 1);
    }

    #[test]
    fn beyond_the_limit_the_longest_idle_flows_are_summarised_not_lost() {
        let mut agg = Aggregator::new(3);
        let names = FlowNames::default();
        for (port, last) in [(1, 300), (2, 100), (3, 200), (4, 400)] {
            agg.sweep_entry(&key(port), &stats(50, last, 1, 100), &names, &clock());
        }
        agg.finish_sweep();
        // Down to the low-water mark (the limit less a tenth, at least one).
        assert_eq!(agg.len(), 2);
        assert_eq!(agg.counters.summarised, 2);
        let all = agg.entries(&FlowFilter::default());
        let kept: Vec<u16> = all
            .iter()
            .filter(|e| e.flows == 1)
            .map(|e| e.src_port)
            .collect();
        assert!(kept.contains(&1) && kept.contains(&4), "{kept:?}");
        let summary = all.iter().find(|e| e.flows == 2).unwrap();
        assert_eq!((summary.packets, summary.bytes), (2, 200));
        assert_eq!(summary.proto, Protocol::Any);
        assert_eq!(all.iter().map(|e| e.bytes).sum::<u64>(), 400);
    }

    /// Flows of several endpoints (a veth's, the same container's seen at
    /// its bridge, an unknown interface's) and verdicts, folded in one
    /// batch: each summary holds exactly its folded flows' counts and
    /// times, and takes its names from one of them.
    #[test]
    fn a_batch_of_folded_flows_sums_into_one_summary_per_container_network_direction_verdict() {
        use crate::flows::names::tests::state;
        let names = FlowNames::new(&state(), &[]);
        let mut agg = Aggregator::new(20);
        let verdicts = [
            (Verdict::Forwarded, DropReason::None),
            (Verdict::Dropped, DropReason::NotInNetwork),
            (Verdict::Audited, DropReason::HostAccess),
            (Verdict::Dropped, DropReason::SpoofedSource),
        ];
        for port in 1..=60u16 {
            let mut key = key(port);
            key.ifindex = [31, 30, 7][usize::from(port % 3)];
            let (verdict, reason) = verdicts[usize::from(port % 4)];
            let n = u64::from(port);
            let stats = FlowStats {
                verdict: verdict as u8,
                reason: reason as u8,
                ..stats(1_000 + n * 7, 5_000 + (n * 7919) % 1_000, n, n * 61)
            };
            agg.sweep_entry(&key, &stats, &names, &clock());
        }
        let before = agg.entries(&FlowFilter::default());
        assert_eq!(before.len(), 60);
        agg.finish_sweep();
        assert_eq!(agg.len(), 18);
        assert_eq!(agg.counters.summarised, 42);
        let after = agg.entries(&FlowFilter::default());
        let kept: Vec<u16> = after
            .iter()
            .filter(|e| e.src.is_some())
            .map(|e| e.src_port)
            .collect();
        assert_eq!(kept.len(), 18);
        let mut expected: BTreeMap<SummaryKey, Vec<&FlowEntry>> = BTreeMap::new();
        for entry in before.iter().filter(|e| !kept.contains(&e.src_port)) {
            expected.entry(summary_key(entry)).or_default().push(entry);
        }
        let summaries: Vec<&FlowEntry> = after.iter().filter(|e| e.src.is_none()).collect();
        assert_eq!(summaries.len(), expected.len());
        assert!(expected.values().any(|folded| folded.len() > 2));
        for summary in summaries {
            let folded = &expected[&summary_key(summary)];
            assert_eq!(summary.flows, folded.len() as u64);
            assert_eq!(
                summary.packets,
                folded.iter().map(|e| e.packets).sum::<u64>()
            );
            assert_eq!(summary.bytes, folded.iter().map(|e| e.bytes).sum::<u64>());
            assert_eq!(
                Some(summary.first_seen),
                folded.iter().map(|e| e.first_seen).min()
            );
            assert_eq!(
                Some(summary.last_seen),
                folded.iter().map(|e| e.last_seen).max()
            );
            let from = folded
                .iter()
                .find(|e| e.interface == summary.interface && e.reason == summary.reason)
                .unwrap_or_else(|| panic!("{summary:?} is none of its flows'"));
            assert_eq!(
                (&summary.container_id, &summary.rule, &summary.dropped_by),
                (&from.container_id, &from.rule, &from.dropped_by)
            );
        }
    }

    #[test]
    fn a_folded_flow_the_kernel_still_holds_is_not_counted_again_by_the_next_sweep() {
        let mut agg = Aggregator::new(2);
        let names = FlowNames::default();
        for (port, last) in [(1, 100), (2, 200), (3, 300)] {
            agg.sweep_entry(&key(port), &stats(50, last, 1, 100), &names, &clock());
        }
        agg.finish_sweep();
        assert_eq!((agg.len(), agg.counters.summarised), (1, 2));
        let totals = |agg: &Aggregator| {
            let all = agg.entries(&FlowFilter::default());
            (
                all.iter().map(|e| e.packets).sum::<u64>(),
                all.iter().map(|e| e.flows).sum::<u64>(),
            )
        };
        assert_eq!(totals(&agg), (3, 3));
        // The kernel still holds all three, unchanged: nothing moves.
        for (port, last) in [(1, 100), (2, 200), (3, 300)] {
            agg.sweep_entry(&key(port), &stats(50, last, 1, 100), &names, &clock());
        }
        agg.finish_sweep();
        assert_eq!((agg.len(), totals(&agg)), (1, (3, 3)));
        // Flow 1 carries two more packets: counted once, as the flow's own.
        agg.sweep_entry(&key(1), &stats(50, 400, 3, 300), &names, &clock());
        agg.finish_sweep();
        assert_eq!(totals(&agg).0, 5);
        let flow1 = agg
            .entries(&FlowFilter::default())
            .into_iter()
            .find(|e| e.src_port == 1)
            .unwrap();
        assert_eq!((flow1.packets, flow1.bytes, flow1.flows), (2, 200, 1));
        // Flow 2's entry is gone from the kernel: forgotten, and a new
        // entry of it is a new flow with all its packets.
        agg.sweep_entry(&key(1), &stats(50, 400, 3, 300), &names, &clock());
        agg.sweep_entry(&key(3), &stats(50, 300, 1, 100), &names, &clock());
        agg.finish_sweep();
        assert!(!agg.folded.contains(&key(2)));
        assert!(agg.folded.len() <= agg.folded.capacity);
        agg.sweep_entry(&key(2), &stats(900, 900, 1, 100), &names, &clock());
        agg.finish_sweep();
        assert_eq!(totals(&agg).0, 6);
    }

    #[test]
    fn folded_flows_are_remembered_up_to_the_kernel_tables_capacity() {
        let mut agg = Aggregator::new(2);
        agg.set_kernel_table_entries(5);
        assert_eq!(agg.folded.capacity, 5);
        let names = FlowNames::default();
        for port in 1..=20 {
            agg.sweep_entry(
                &key(port),
                &stats(50, u64::from(port), 1, 100),
                &names,
                &clock(),
            );
        }
        agg.finish_sweep();
        assert_eq!((agg.len(), agg.counters.summarised), (1, 19));
        assert_eq!(agg.folded.len(), 5);
    }

    #[test]
    fn at_the_limit_a_tenth_is_folded_at_once_so_the_next_new_flows_fold_nothing() {
        let mut agg = Aggregator::new(100);
        let names = FlowNames::default();
        let record = |agg: &mut Aggregator, port: u16| {
            let event = FlowEvent {
                kind: EventKind::FlowOpen as u8,
                key: key(port),
                packets: 1,
                bytes: 100,
                first_seen_ns: u64::from(port),
                last_seen_ns: u64::from(port),
                ..FlowEvent::default()
            };
            agg.record(&event, &names, &clock()).unwrap();
        };
        for port in 1..=101 {
            record(&mut agg, port);
        }
        assert_eq!(agg.len(), 90, "folded down to 90% of the limit");
        assert_eq!(agg.counters.summarised, 11);
        let kept: Vec<u16> = agg.flows.keys().map(|k| k.src_port).collect();
        assert!(kept.iter().all(|p| *p > 11), "the oldest went: {kept:?}");
        for port in 102..=111 {
            record(&mut agg, port);
        }
        assert_eq!(agg.len(), 100);
        assert_eq!(agg.counters.summarised, 11, "nothing more until the limit");
        let total: u64 = agg
            .entries(&FlowFilter::default())
            .iter()
            .map(|e| e.packets)
            .sum();
        assert_eq!(total, 111, "folded flows keep their counts");
    }

    /// hashbrown's map doubled its table here (see [`FlowMap`]): a default
    /// agent under churn peaked at 89 MiB where 100,000 flows take 60.
    #[test]
    fn churn_at_the_limit_never_grows_the_flows_or_the_folded_flows_table() {
        let limit = 10_000;
        let mut agg = Aggregator::new(limit);
        let names = FlowNames::default();
        let mut capacity_at_limit = None;
        let mut folded_capacity_when_full = None;
        for n in 0..200_000_u32 {
            let mut key = key(n as u16);
            key.dst[2..4].copy_from_slice(&((n >> 16) as u16).to_be_bytes());
            let event = FlowEvent {
                kind: EventKind::FlowOpen as u8,
                key,
                packets: 1,
                bytes: 100,
                first_seen_ns: u64::from(n) + 1,
                last_seen_ns: u64::from(n) + 1,
                ..FlowEvent::default()
            };
            agg.record_silently(&event, &names, &clock());
            if agg.len() == limit && capacity_at_limit.is_none() {
                capacity_at_limit = Some((agg.flows.capacity(), n));
            }
            if agg.folded.len() == limit && folded_capacity_when_full.is_none() {
                folded_capacity_when_full = Some(agg.folded.by_id.capacity());
            }
        }
        assert_eq!(
            Some(agg.folded.by_id.capacity()),
            folded_capacity_when_full,
            "folding grew the folded flows' table"
        );
        let (capacity, filled_at) = capacity_at_limit.expect("the map reached the limit");
        assert!(agg.counters.summarised > 150_000, "it churned");
        assert_eq!(
            agg.flows.capacity(),
            capacity,
            "{} new flows past the limit (filled after {filled_at}) grew the table",
            200_000 - filled_at
        );
    }

    #[test]
    fn a_flow_whose_verdict_changes_keeps_what_it_counted_under_each_verdict() {
        let mut agg = Aggregator::new(10);
        let names = FlowNames::default();
        agg.sweep_entry(&key(1), &stats(100, 200, 10, 1000), &names, &clock());
        let dropped = FlowStats {
            verdict: Verdict::Dropped as u8,
            reason: DropReason::NotInNetwork as u8,
            ..stats(100, 300, 14, 1400)
        };
        agg.sweep_entry(&key(1), &dropped, &names, &clock());
        let by_verdict = |agg: &Aggregator, verdict: &str| -> (u64, u64) {
            agg.entries(&FlowFilter::default())
                .iter()
                .filter(|e| e.verdict.name() == verdict)
                .fold((0, 0), |(p, b), e| (p + e.packets, b + e.bytes))
        };
        assert_eq!(by_verdict(&agg, "forwarded"), (10, 1000));
        assert_eq!(by_verdict(&agg, "dropped"), (4, 400));
        // And back: neither total ever goes down.
        agg.sweep_entry(&key(1), &stats(100, 400, 20, 2000), &names, &clock());
        assert_eq!(by_verdict(&agg, "forwarded"), (16, 1600));
        assert_eq!(by_verdict(&agg, "dropped"), (4, 400));
        let live = agg
            .entries(&FlowFilter::default())
            .into_iter()
            .find(|e| e.src.is_some())
            .unwrap();
        assert_eq!((live.src_port, live.verdict.name()), (1, "forwarded"));
        assert_eq!((live.packets, live.bytes), (6, 600));
    }

    #[test]
    fn flows_of_one_endpoint_share_its_names_until_none_is_left() {
        let mut agg = Aggregator::new(1);
        let names = FlowNames::default();
        for port in 1..=3 {
            agg.sweep_entry(
                &key(port),
                &stats(50, 50 + u64::from(port), 1, 100),
                &names,
                &clock(),
            );
        }
        assert_eq!(agg.labels.len(), 1);
        assert_eq!(Arc::strong_count(agg.labels.iter().next().unwrap()), 4);
        agg.finish_sweep();
        assert_eq!(agg.len(), 1);
        assert_eq!(Arc::strong_count(agg.labels.iter().next().unwrap()), 2);
        let mut other = key(9);
        other.ifindex = 8;
        agg.sweep_entry(&other, &stats(50, 900, 1, 100), &names, &clock());
        agg.finish_sweep();
        assert_eq!(
            agg.labels.len(),
            1,
            "the first endpoint's names went with its last flow"
        );
    }

    #[test]
    fn a_veths_new_flows_take_its_names_from_the_latest_snapshot() {
        use crate::flows::names::tests::state;
        let mut agg = Aggregator::new(10);
        let before = FlowNames::new(&state(), &[]);
        let mut renamed = state();
        for endpoint in &mut renamed.endpoints {
            if endpoint.host_ifindex == 31 {
                endpoint.container = "renamed".into();
            }
        }
        let after = FlowNames::new(&renamed, &[]);
        let on_veth = |port: u16| {
            let mut event = export(port, 100, 110, 1);
            event.key.ifindex = 31;
            event
        };
        let container = |agg: &mut Aggregator, port: u16, names: &FlowNames| {
            let (entry, _) = agg.record(&on_veth(port), names, &clock()).unwrap();
            entry.container
        };
        assert_eq!(container(&mut agg, 1, &before).as_deref(), Some("postgres"));
        assert_eq!(container(&mut agg, 2, &before).as_deref(), Some("postgres"));
        assert_eq!(container(&mut agg, 3, &after).as_deref(), Some("renamed"));
        assert_eq!(agg.labels.len(), 2, "one interned copy per owner");
        agg.finish_sweep();
        assert_eq!(agg.labels.len(), 2, "both still used by flows");
    }

    /// Every field set (and the optional ones that are left out when
    /// empty present), so that each one's place is checked.
    fn full_entry() -> FlowEntry {
        use crate::render::fixtures::{dropped, egress, with_peer, with_service};
        let mut entry = with_service(
            with_peer(
                dropped(
                    egress(
                        "web",
                        "front",
                        ("172.30.0.2", 40000),
                        ("172.30.0.3", 443),
                        900,
                    ),
                    "host-access",
                ),
                "db",
            ),
            "api",
        );
        entry.host = "h1".into();
        entry.container_id = Some("3f2a".repeat(16));
        entry.project = Some("shop".into());
        entry.dropped_by = Some("netwatch".into());
        entry.rule = Some("internal: true on network front".into());
        entry.peer_service = Some("postgres".into());
        entry.peer_kind = Some("container".into());
        entry.src_name = Some("a.example".into());
        entry.dst_name = Some("b.example".into());
        entry.published = Some("0.0.0.0:8080/tcp".into());
        entry.interface = Some("veth1".into());
        entry
    }

    #[test]
    fn a_borrowed_view_writes_the_same_json_as_its_entry() {
        let entry = full_entry();
        let view = FlowView::of(&entry);
        assert_eq!(
            serde_json::to_string(&view).unwrap(),
            serde_json::to_string(&entry).unwrap()
        );
        assert_eq!(view.to_entry(), entry);
        let mut bare = entry.clone();
        (bare.rule, bare.src_name, bare.dst_name, bare.reason) = (None, None, None, None);
        assert_eq!(
            serde_json::to_string(&FlowView::of(&bare)).unwrap(),
            serde_json::to_string(&bare).unwrap()
        );
    }

    #[test]
    fn the_aggregates_views_are_its_entries_borrowed() {
        let mut agg = Aggregator::new(2);
        let names = FlowNames::new(&crate::flows::names::tests::state(), &[]);
        for port in 1..=3 {
            let mut event = export(port, 100, 100 + u64::from(port), u64::from(port));
            event.key.ifindex = 31;
            agg.record(&event, &names, &clock()).unwrap();
        }
        let mut dropped = FlowEvent {
            kind: EventKind::Drop as u8,
            verdict: Verdict::Dropped as u8,
            reason: DropReason::SpoofedSource as u8,
            ..export(4, 100, 200, 1)
        };
        dropped.key.ifindex = 31;
        agg.record(&dropped, &names, &clock()).unwrap();
        let filter = FlowFilter::default();
        let refs = busiest_first(agg.refs().collect());
        let entries = agg.entries(&filter);
        assert!(entries.iter().any(|e| e.flows > 1), "a summary too");
        assert!(
            entries.iter().any(|e| e.rule.is_some()),
            "a drop's rule too"
        );
        assert_eq!(
            refs.iter().map(|r| r.view().to_entry()).collect::<Vec<_>>(),
            entries
        );
        assert_eq!(
            serde_json::to_string(&refs).unwrap(),
            serde_json::to_string(&entries).unwrap()
        );
    }

    #[test]
    fn series_sums_are_the_sums_of_the_entries() {
        let mut agg = Aggregator::new(3);
        let names = FlowNames::new(&crate::flows::names::tests::state(), &[]);
        for (port, ifindex) in [(1, 31), (2, 31), (3, 7), (4, 31), (5, 7)] {
            let mut event = export(port, 100, 100 + u64::from(port), u64::from(port));
            event.key.ifindex = ifindex;
            agg.record(&event, &names, &clock()).unwrap();
        }
        // A verdict change leaves counts under both verdicts.
        let mut changed = export(4, 100, 300, 9);
        (changed.key.ifindex, changed.verdict, changed.reason) =
            (31, Verdict::Dropped as u8, DropReason::NotInNetwork as u8);
        agg.record(&changed, &names, &clock()).unwrap();
        type Series = (Option<String>, Option<String>, Direction, Verdict);
        let mut by_sums: BTreeMap<Series, (u64, u64)> = BTreeMap::new();
        agg.sum_series(|sum| {
            let total = by_sums
                .entry((
                    sum.container.map(str::to_owned),
                    sum.network.map(str::to_owned),
                    sum.direction,
                    sum.verdict,
                ))
                .or_default();
            total.0 += sum.packets;
            total.1 += sum.bytes;
        });
        let mut by_entries: BTreeMap<Series, (u64, u64)> = BTreeMap::new();
        for e in agg.entries(&FlowFilter::default()) {
            let total = by_entries
                .entry((e.container, e.network, e.direction, e.verdict))
                .or_default();
            total.0 += e.packets;
            total.1 += e.bytes;
        }
        assert_eq!(by_sums, by_entries);
        assert!(by_sums.len() >= 2, "{by_sums:?}");
    }

    #[test]
    fn unreadable_records_are_counted_not_merged() {
        let mut agg = Aggregator::new(10);
        let event = FlowEvent {
            kind: 99,
            ..FlowEvent::default()
        };
        assert!(
            agg.record(&event, &FlowNames::default(), &clock())
                .is_none()
        );
        assert_eq!(agg.counters.malformed, 1);
        assert!(agg.is_empty());
    }

    /// Lines as the API, `-o json` and the flow log wrote them before the
    /// fields were typed read back, and write the same bytes again.
    #[test]
    fn json_written_before_the_types_reads_back_and_writes_the_same_bytes() {
        let tail = r#""peer":null,"peer_service":null,"peer_kind":null,"published":null,"first_seen":"2025-11-27T22:10:00Z","last_seen":"2025-11-27T22:10:05Z","interface":"veth1","flows":1}"#;
        let lines = [
            (
                r#"{"container":"web","service":null,"network":"front","direction":"egress","src":"172.30.0.2","dst":"203.0.113.7","src_port":40000,"dst_port":443,"proto":"tcp","packets":3,"bytes":180,"verdict":"audited","reason":"not-in-network","dropped_by":null,"rule":"label netwatch.egress=audit on network front","#,
                (
                    Direction::Egress,
                    Protocol::Tcp,
                    Verdict::Audited,
                    Some(FlowReason::Netwatch(DropReason::NotInNetwork)),
                ),
            ),
            (
                r#"{"container":"db","service":null,"network":"back","direction":"ingress","src":"172.31.0.9","dst":"172.31.0.2","src_port":8,"dst_port":0,"proto":"icmp","packets":1,"bytes":98,"verdict":"dropped","reason":"kernel:netfilter_drop","dropped_by":"kernel","#,
                (
                    Direction::Ingress,
                    Protocol::Icmp,
                    Verdict::Dropped,
                    Some(FlowReason::kernel("netfilter_drop")),
                ),
            ),
            (
                r#"{"container":null,"service":null,"network":null,"direction":"ingress","src":null,"dst":null,"src_port":0,"dst_port":0,"proto":"arp/other","packets":2,"bytes":84,"verdict":"forwarded","reason":null,"dropped_by":null,"#,
                (
                    Direction::Ingress,
                    Protocol::ArpOther,
                    Verdict::Forwarded,
                    None,
                ),
            ),
            (
                r#"{"container":"web","service":null,"network":"front","direction":"egress","src":null,"dst":null,"src_port":0,"dst_port":0,"proto":"*","packets":9,"bytes":900,"verdict":"dropped","reason":"host-access","dropped_by":"netwatch","#,
                (
                    Direction::Egress,
                    Protocol::Any,
                    Verdict::Dropped,
                    Some(FlowReason::Netwatch(DropReason::HostAccess)),
                ),
            ),
            (
                r#"{"container":"vpn","service":null,"network":"front","direction":"egress","src":"fd00::2","dst":"fd00::3","src_port":0,"dst_port":0,"proto":"47","packets":1,"bytes":90,"verdict":"forwarded","reason":null,"dropped_by":null,"#,
                (
                    Direction::Egress,
                    Protocol::Other(47),
                    Verdict::Forwarded,
                    None,
                ),
            ),
        ];
        let first = lines[0].0;
        for (head, (direction, proto, verdict, reason)) in lines {
            let line = format!("{head}{tail}");
            let entry: FlowEntry = serde_json::from_str(&line).expect(&line);
            assert_eq!(
                (
                    entry.direction,
                    entry.proto,
                    entry.verdict,
                    entry.reason.clone()
                ),
                (direction, proto, verdict, reason)
            );
            // Written again, the fields it had keep their bytes and order;
            // the identity fields of schema 1 are added, empty (a line
            // from before versioning reads as version 0).
            let with_identity = line
                .replacen(
                    r#"{"container":"#,
                    r#"{"schema_version":0,"host":"","container":"#,
                    1,
                )
                .replacen(
                    r#","service":"#,
                    r#","container_id":null,"project":null,"service":"#,
                    1,
                );
            assert_eq!(serde_json::to_string(&entry).unwrap(), with_identity);
        }
        let bad = format!(
            "{}{tail}",
            first.replace(r#""verdict":"audited""#, r#""verdict":"denied""#)
        );
        assert!(serde_json::from_str::<FlowEntry>(&bad).is_err());
    }
}
