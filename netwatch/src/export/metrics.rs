//! Prometheus metrics: per-container flow totals, the datapath's verdict
//! counters, and the health of the pipeline that carries records to user
//! space, served as text (exposition format 0.0.4) on `GET /metrics`.
//!
//! The agent serves them on [`DEFAULT_METRICS_ADDR`] (`127.0.0.1:9469`,
//! loopback only) unless told otherwise; anything but `/metrics` answers 404.
//!
//! # Metrics
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `netwatch_flow_bytes_total`, `netwatch_flow_packets_total` | counter | `container`, `service`, `network`, `direction`, `verdict` |
//! | `netwatch_dropped_packets_total` | counter | `hook`, `reason` |
//! | `netwatch_kernel_drop_packets_total`, `netwatch_kernel_drop_bytes_total` | counter | `container`, `service`, `network`, `direction`, `reason` (`kernel:…`) |
//! | `netwatch_forwarded_packets_total` | counter | `hook` |
//! | `netwatch_ringbuf_lost_records_total`, `netwatch_flow_table_inserts_total` | counter | |
//! | `netwatch_dns_records_total` | counter | `outcome` (`recorded`, `rate_limited`, `lost`, `truncated`) |
//! | `netwatch_pipeline_records_total`, `netwatch_pipeline_malformed_records_total` | counter | |
//! | `netwatch_flow_evictions_total`, `netwatch_flows_summarised_total` | counter | |
//! | `netwatch_host_mode_peers_total`, `netwatch_host_peer_lookup_failures_total` | counter | |
//! | `netwatch_tracked_flows` | gauge | |
//! | `netwatch_attached_interfaces` | gauge | `hook` |
//! | `netwatch_network_mode`, `netwatch_endpoint_mode` | gauge (1 per network / endpoint) | `network`, `driver`, `mode` / `container`, `network`, `mode` |
//! | `netwatch_unguarded_denied` | gauge | `kind` (`network`, `endpoint`) |
//! | `netwatch_unguarded_alarm` | gauge (1 per alarm) | `network`, `driver`, `container` (`""` for the network itself) |
//! | `netwatch_flow_log_lines_total`, `…_lost_events_total`, `…_write_errors_total`, `…_unwritten_lines_total`, `…_rotations_total` | counter | (with `--flow-log`) |
//! | `netwatch_build_info` | gauge (1) | `version`, `commit` (`""` unless the build set `NETWATCH_BUILD_COMMIT`) |
//! | `process_cpu_seconds_total` | counter | |
//! | `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_start_time_seconds`, `process_open_fds`, `process_max_fds` | gauge | |
//!
//! Flow totals are the sums, per label set, of the flows `netwatch flows`
//! shows (summaries of idle flows included), so they match it exactly.
//! They are per container: traffic between two containers of this host
//! counts for both, as the sender's egress and the receiver's ingress, so
//! sum over one direction (or filter on one container) for host totals.
//! Cardinality is bounded by the containers and networks the agent has
//! seen in the last `--forget-gone-after` (1h): there are no per-port,
//! per-address or per-interface labels, and the flows of a container that
//! is gone are forgotten that long after its last packet, their series
//! with them ([`crate::flows::Pipeline::forget_gone_after`]).
//! Flows that belong to no container on this host (packets the uplink
//! shield dropped on their way to an unknown address) have `container=""`
//! (and `network=""` when no network is known). `service` is the compose
//! service, or swarm service (`""` for containers of neither); it is a
//! function of the container, so it adds no series. `verdict` is the verdict the packets
//! got: a flow whose verdict changes (a policy change while it lives) keeps
//! what it counted under the old verdict there and counts on under the new
//! one, so every series only grows.
//!
//! `mode` is `enforced`, `observed` or `unguarded`, as `netwatch networks`
//! says (see [`crate::guard`]); each network and endpoint has one series,
//! whose `mode` label changes with its mode, and series of networks and
//! containers that are gone disappear with them.
//! `netwatch_unguarded_denied` counts the networks and endpoints whose
//! policy denies something (internal, `netwatch.egress=deny`) but that
//! netwatch does not enforce: alert on it being above zero;
//! `netwatch_unguarded_alarm` has one series for each of them, to name
//! them in the alert.
//!
//! `hook` is `tc` for the TCX programs on container veths and network
//! bridges (which share one set of verdict counters) and `uplink` for the
//! XDP shield on uplinks. Drop reasons are the names `netwatch drops`
//! shows; every reason is exported for both hooks, zero or not, so that
//! `rate()` and alerts see a series from the start.
//!
//! The `process_*` families are named and meant as Prometheus' client
//! libraries export them (see [`super::process`]), so dashboards and alerts
//! written for any exporter's process apply; `process_max_fds` is left out
//! when the limit is unlimited.

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, warn};
use netwatch_common::reason::DropReason;
use tokio::net::TcpListener;

use super::{
    exposition::{CONTENT_TYPE as EXPOSITION_CONTENT_TYPE, Exposition, MetricKind},
    flowlog::{FlowLogCounters, FlowLogStats},
    process::{BuildInfo, ProcessStats, read_process_stats},
};
use crate::{
    accept::accept_connections,
    datapath::{Hook, pinned, pinned::PinnedCounters, pins},
    flows::{FlowEntry, Pipeline, PipelineCounters},
    guard::Assessment,
};

/// Where the agent serves metrics by default: loopback only, so exposing
/// them beyond the host is an explicit choice (`--metrics-addr`).
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9469));

/// The one path served.
pub const METRICS_PATH: &str = "/metrics";

/// Connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 64;

/// A client has this long to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the pipeline reports about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub counters: PipelineCounters,
    /// Flows kept one by one now.
    pub tracked_flows: u64,
}

/// Interfaces with netwatch programs attached, by hook kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttachCounts {
    /// Container veths, network bridges, macvlan parents and children with
    /// a TCX program.
    pub tc: u64,
    /// Uplinks with the XDP shield.
    pub uplink: u64,
}

/// Everything one scrape shows. A part that is `None` is left out of the
/// output (e.g. no datapath counters when nothing is pinned).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    pub build: Option<BuildInfo>,
    pub process: Option<ProcessStats>,
    /// The sums of every flow and summary per series.
    pub flows: Option<FlowTotals>,
    pub pipeline: Option<PipelineStats>,
    pub datapath: Option<PinnedCounters>,
    pub attachments: Option<AttachCounts>,
    pub flow_log: Option<FlowLogStats>,
    /// What is guarded, as of the agent's last sync.
    pub guard: Option<Assessment>,
}

type Collector<T> = Box<dyn Fn() -> T + Send + Sync>;

/// Where a scrape's numbers come from: one closure per part, each called
/// on every scrape (on a blocking thread: they may read maps and bpffs).
///
/// The agent wires it with [`MetricsSource::agent`]; tests and other
/// callers can feed any part with the `with_*` methods.
#[derive(Default)]
pub struct MetricsSource {
    build: Option<BuildInfo>,
    process: Option<Collector<Option<ProcessStats>>>,
    flows: Option<Collector<FlowTotals>>,
    pipeline: Option<Collector<PipelineStats>>,
    datapath: Option<Collector<Option<PinnedCounters>>>,
    attachments: Option<Collector<AttachCounts>>,
    flow_log: Option<Arc<FlowLogCounters>>,
    guard: Option<Collector<Option<Assessment>>>,
}

impl MetricsSource {
    /// A source with no parts: renders nothing.
    pub fn new() -> MetricsSource {
        MetricsSource::default()
    }

    /// The agent's source: flows and pipeline counters from `pipeline`,
    /// datapath counters and attachments from what is pinned under
    /// `pin_root`.
    pub fn agent(pipeline: Arc<Pipeline>, pin_root: PathBuf) -> MetricsSource {
        MetricsSource::new()
            .with_build_info(BuildInfo::CURRENT)
            .with_process(PathBuf::from("/proc"))
            .with_pipeline(pipeline)
            .with_pins(pin_root)
    }

    /// `netwatch_build_info` with `build`'s labels.
    pub fn with_build_info(mut self, build: BuildInfo) -> MetricsSource {
        self.build = Some(build);
        self
    }

    /// The `process_*` metrics of the process reading them, from `proc`
    /// (`/proc`). A failed read is logged (once until a read works again)
    /// and leaves them out of that scrape.
    pub fn with_process(mut self, proc: PathBuf) -> MetricsSource {
        let failing = AtomicBool::new(false);
        self.process = Some(Box::new(move || match read_process_stats(&proc) {
            Ok(stats) => {
                failing.store(false, Ordering::Relaxed);
                Some(stats)
            }
            Err(e) => {
                if !failing.swap(true, Ordering::Relaxed) {
                    warn!("metrics: cannot read this process's figures: {e}");
                }
                None
            }
        }));
        self
    }

    /// Flows and counters of `pipeline`.
    pub fn with_pipeline(mut self, pipeline: Arc<Pipeline>) -> MetricsSource {
        let stats = Arc::clone(&pipeline);
        self.flows = Some(Box::new(move || FlowTotals::of_pipeline(&pipeline)));
        self.with_pipeline_stats(move || PipelineStats {
            counters: stats.counters(),
            tracked_flows: u64::try_from(stats.tracked_flows()).unwrap_or(u64::MAX),
        })
    }

    /// Datapath counters and attachments pinned under `pin_root`. A pinned
    /// map that cannot be read is logged (once until it can be read again)
    /// and its metrics are left out of that scrape.
    pub fn with_pins(self, pin_root: PathBuf) -> MetricsSource {
        let links_root = pin_root.clone();
        let failing = AtomicBool::new(false);
        self.with_datapath_counters(move || match pinned::read_counters(&pin_root) {
            Ok(counters) => {
                failing.store(false, Ordering::Relaxed);
                counters
            }
            Err(e) => {
                if !failing.swap(true, Ordering::Relaxed) {
                    warn!("metrics: cannot read the pinned datapath counters: {e}");
                }
                None
            }
        })
        .with_attachments(move || attach_counts(&pins::pinned_links(&links_root)))
    }

    /// What is guarded: the latest assessment the agent published (`None`
    /// before its first sync: the guard metrics are left out).
    pub fn with_guard(
        mut self,
        shared: crate::agent::guard_watch::SharedAssessment,
    ) -> MetricsSource {
        self.guard = Some(Box::new(move || {
            shared.lock().ok().and_then(|latest| latest.clone())
        }));
        self
    }

    /// Counters of the flow log writer.
    pub fn with_flow_log(mut self, counters: Arc<FlowLogCounters>) -> MetricsSource {
        self.flow_log = Some(counters);
        self
    }

    pub fn with_flows(
        mut self,
        flows: impl Fn() -> Vec<FlowEntry> + Send + Sync + 'static,
    ) -> MetricsSource {
        self.flows = Some(Box::new(move || FlowTotals::of(&flows())));
        self
    }

    pub fn with_pipeline_stats(
        mut self,
        stats: impl Fn() -> PipelineStats + Send + Sync + 'static,
    ) -> MetricsSource {
        self.pipeline = Some(Box::new(stats));
        self
    }

    /// `None` from the closure: nothing pinned (yet); the datapath metrics
    /// are left out.
    pub fn with_datapath_counters(
        mut self,
        counters: impl Fn() -> Option<PinnedCounters> + Send + Sync + 'static,
    ) -> MetricsSource {
        self.datapath = Some(Box::new(counters));
        self
    }

    pub fn with_attachments(
        mut self,
        attachments: impl Fn() -> AttachCounts + Send + Sync + 'static,
    ) -> MetricsSource {
        self.attachments = Some(Box::new(attachments));
        self
    }

    /// Calls every part now. May block (map reads, a flow-table sweep).
    pub fn collect(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            build: self.build,
            process: self.process.as_ref().and_then(|f| f()),
            flows: self.flows.as_ref().map(|f| f()),
            pipeline: self.pipeline.as_ref().map(|f| f()),
            datapath: self.datapath.as_ref().and_then(|f| f()),
            attachments: self.attachments.as_ref().map(|f| f()),
            flow_log: self.flow_log.as_ref().map(|c| c.stats()),
            guard: self.guard.as_ref().and_then(|f| f()),
        }
    }

    /// [`render`] of [`MetricsSource::collect`].
    pub fn render(&self) -> String {
        render(&self.collect())
    }
}

/// Counts interfaces (not links: a veth has two TC links) by hook kind.
pub fn attach_counts(links: &[pins::PinnedLink]) -> AttachCounts {
    let uplink_program = Hook::Uplink.program_name();
    let (uplink, tc): (BTreeSet<u32>, BTreeSet<(Option<u64>, u32)>) = (
        links
            .iter()
            .filter(|l| l.program == uplink_program)
            .map(|l| l.ifindex)
            .collect(),
        links
            .iter()
            .filter(|l| l.program != uplink_program)
            .map(|l| (l.netns, l.ifindex))
            .collect(),
    );
    AttachCounts {
        tc: tc.len() as u64,
        uplink: uplink.len() as u64,
    }
}

/// Flow totals per label set: container, service, network, direction,
/// verdict (as label values: series sort by them).
type FlowSeries<'a> = (&'a str, &'a str, &'a str, &'static str, &'static str);

/// Sums flows per label set: (packets, bytes).
pub fn flow_totals(flows: &[FlowEntry]) -> BTreeMap<FlowSeries<'_>, (u64, u64)> {
    let mut totals: BTreeMap<FlowSeries<'_>, (u64, u64)> = BTreeMap::new();
    // The kernel's own drops have metrics of their own: their packets
    // already count in the flow netwatch saw them in (often forwarded).
    for flow in flows.iter().filter(|f| !f.is_kernel_drop()) {
        let series = (
            flow.container.as_deref().unwrap_or(""),
            flow.service.as_deref().unwrap_or(""),
            flow.network.as_deref().unwrap_or(""),
            flow.direction.name(),
            flow.verdict.name(),
        );
        let total = totals.entry(series).or_default();
        total.0 = total.0.saturating_add(flow.packets);
        total.1 = total.1.saturating_add(flow.bytes);
    }
    totals
}

/// The flow families' values: sums per label set, of netwatch's flows and
/// of the kernel's own drops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowTotals {
    flows: BTreeMap<OwnedSeries<&'static str>, (u64, u64)>,
    kernel_drops: BTreeMap<OwnedSeries<String>, (u64, u64)>,
}

/// Container, service, network, direction, and the verdict or reason.
type OwnedSeries<T> = (String, String, String, &'static str, T);
type BorrowedSeries<'a, T> = (&'a str, &'a str, &'a str, &'static str, T);

impl FlowTotals {
    /// The totals of `flows` (every flow and summary, kernel drops
    /// included).
    pub fn of(flows: &[FlowEntry]) -> FlowTotals {
        fn owned<T: Ord>(
            totals: BTreeMap<BorrowedSeries<'_, T>, (u64, u64)>,
        ) -> BTreeMap<OwnedSeries<T>, (u64, u64)> {
            totals
                .into_iter()
                .map(|((c, s, n, d, last), sum)| {
                    ((c.to_owned(), s.to_owned(), n.to_owned(), d, last), sum)
                })
                .collect()
        }
        FlowTotals {
            flows: owned(flow_totals(flows)),
            kernel_drops: owned(kernel_drop_totals(flows)),
        }
    }

    /// The totals of every flow `pipeline` holds, summed where they are
    /// kept ([`Pipeline::sum_series`]): a scrape at 100,000 flows costs a
    /// sweep of the kernel table and a walk of the flows, not an entry
    /// per flow.
    pub fn of_pipeline(pipeline: &Pipeline) -> FlowTotals {
        let mut totals = FlowTotals::default();
        let mut kernel_drops = Vec::new();
        pipeline.sum_series(
            |sum| {
                totals.add_flows(
                    (
                        sum.container.unwrap_or(""),
                        sum.service.unwrap_or(""),
                        sum.network.unwrap_or(""),
                        sum.direction.name(),
                        sum.verdict.name(),
                    ),
                    (sum.packets, sum.bytes),
                );
            },
            |entry| kernel_drops.push(entry.clone()),
        );
        let kernel = FlowTotals::of(&kernel_drops);
        for (series, sum) in kernel.flows {
            let (c, s, n, d, v) = series;
            totals.add_flows((&c, &s, &n, d, v), sum);
        }
        totals.kernel_drops = kernel.kernel_drops;
        totals
    }

    fn add_flows(&mut self, series: FlowSeries<'_>, (packets, bytes): (u64, u64)) {
        // Called once per endpoint, direction and verdict, not per flow.
        let (c, s, n, d, v) = series;
        let total = self
            .flows
            .entry((c.to_owned(), s.to_owned(), n.to_owned(), d, v))
            .or_default();
        total.0 = total.0.saturating_add(packets);
        total.1 = total.1.saturating_add(bytes);
    }
}

impl From<Vec<FlowEntry>> for FlowTotals {
    fn from(flows: Vec<FlowEntry>) -> FlowTotals {
        FlowTotals::of(&flows)
    }
}

/// The snapshot in the text exposition format.
pub fn render(snapshot: &MetricsSnapshot) -> String {
    let mut out = Exposition::new();
    if let Some(flows) = &snapshot.flows {
        render_flows(&mut out, flows);
    }
    if let Some(counters) = &snapshot.datapath {
        render_datapath(&mut out, counters);
    }
    if let Some(stats) = &snapshot.pipeline {
        render_pipeline(&mut out, stats);
    }
    if let Some(attachments) = &snapshot.attachments {
        out.family(
            "netwatch_attached_interfaces",
            MetricKind::Gauge,
            "Interfaces with netwatch programs attached (pinned), by hook: tc (container \
             veths and network bridges, TCX) or uplink (XDP shield).",
        );
        out.sample(&[("hook", "tc")], attachments.tc);
        out.sample(&[("hook", "uplink")], attachments.uplink);
    }
    if let Some(stats) = &snapshot.flow_log {
        render_flow_log(&mut out, stats);
    }
    if let Some(assessment) = &snapshot.guard {
        render_guard(&mut out, assessment);
    }
    if let Some(build) = &snapshot.build {
        out.family(
            "netwatch_build_info",
            MetricKind::Gauge,
            "Always 1, labelled with the running agent's version and commit (empty when the \
             build did not record one), to join on or count versions across a fleet.",
        );
        out.sample(&[("version", build.version), ("commit", build.commit)], 1);
    }
    if let Some(process) = &snapshot.process {
        render_process(&mut out, process);
    }
    out.finish()
}

fn render_process(out: &mut Exposition, process: &ProcessStats) {
    out.family(
        "process_cpu_seconds_total",
        MetricKind::Counter,
        "User and system CPU time the agent spent, in seconds.",
    );
    out.sample_float(&[], process.cpu_seconds);
    let gauges = [
        (
            "process_resident_memory_bytes",
            "Resident memory of the agent, in bytes.",
            Some(process.resident_memory_bytes),
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory of the agent, in bytes.",
            Some(process.virtual_memory_bytes),
        ),
        (
            "process_open_fds",
            "File descriptors the agent has open.",
            Some(process.open_fds),
        ),
        (
            "process_max_fds",
            "The agent's limit on open file descriptors (soft limit).",
            process.max_fds,
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(value) = value {
            out.family(name, MetricKind::Gauge, help);
            out.sample(&[], value);
        }
    }
    out.family(
        "process_start_time_seconds",
        MetricKind::Gauge,
        "When the agent started, in seconds since the Unix epoch.",
    );
    out.sample_float(&[], process.start_time_seconds);
}

fn render_guard(out: &mut Exposition, assessment: &Assessment) {
    out.family(
        "netwatch_network_mode",
        MetricKind::Gauge,
        "1 for each Docker network, labelled with how netwatch guards it: enforced (its \
         policy denies something and is applied), observed (programs attached, nothing \
         denied) or unguarded (`netwatch networks` says why).",
    );
    for network in &assessment.networks {
        out.sample(
            &[
                ("network", &network.name),
                ("driver", &network.driver),
                ("mode", network.guard.mode.name()),
            ],
            1,
        );
    }
    out.family(
        "netwatch_endpoint_mode",
        MetricKind::Gauge,
        "1 for each container endpoint (and each container in host or none network mode), \
         labelled with how netwatch guards it.",
    );
    for network in &assessment.networks {
        for endpoint in &network.endpoints {
            out.sample(
                &[
                    ("container", &endpoint.container),
                    ("network", &network.name),
                    ("mode", endpoint.guard.mode.name()),
                ],
                1,
            );
        }
    }
    let alarms = assessment.alarms();
    let networks = alarms.iter().filter(|a| a.container.is_none()).count();
    out.family(
        "netwatch_unguarded_denied",
        MetricKind::Gauge,
        "Networks and endpoints whose policy denies something (internal: true, \
         netwatch.egress=deny) but that netwatch does not enforce; anything above 0 is an \
         isolation promise nobody keeps.",
    );
    out.sample(&[("kind", "network")], networks as u64);
    out.sample(&[("kind", "endpoint")], (alarms.len() - networks) as u64);
    out.family(
        "netwatch_unguarded_alarm",
        MetricKind::Gauge,
        "1 for each network (container=\"\") and endpoint counted in \
         netwatch_unguarded_denied, so that an alert can name them.",
    );
    for alarm in &alarms {
        out.sample(
            &[
                ("network", &alarm.network),
                ("driver", &alarm.driver),
                ("container", alarm.container.as_deref().unwrap_or("")),
            ],
            1,
        );
    }
}

/// The kernel's own drops per label set: container, service, network,
/// direction, reason (as label values: series sort by them).
type KernelDropSeries<'a> = (&'a str, &'a str, &'a str, &'static str, String);

/// Sums the kernel's own drops per label set: (packets, bytes).
pub fn kernel_drop_totals(flows: &[FlowEntry]) -> BTreeMap<KernelDropSeries<'_>, (u64, u64)> {
    let mut totals: BTreeMap<KernelDropSeries<'_>, (u64, u64)> = BTreeMap::new();
    for flow in flows.iter().filter(|f| f.is_kernel_drop()) {
        let series = (
            flow.container.as_deref().unwrap_or(""),
            flow.service.as_deref().unwrap_or(""),
            flow.network.as_deref().unwrap_or(""),
            flow.direction.name(),
            flow.reason
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        );
        let total = totals.entry(series).or_default();
        total.0 = total.0.saturating_add(flow.packets);
        total.1 = total.1.saturating_add(flow.bytes);
    }
    totals
}

/// Rendered after the flow families, and only when there are kernel drops
/// (a host whose kernel cannot run the program has none).
fn render_kernel_drops(out: &mut Exposition, flows: &FlowTotals) {
    let totals = &flows.kernel_drops;
    if totals.is_empty() {
        return;
    }
    let families = [
        (
            "netwatch_kernel_drop_bytes_total",
            "Bytes (IP packets)",
            true,
        ),
        ("netwatch_kernel_drop_packets_total", "Packets", false),
    ];
    for (name, what, bytes) in families {
        out.family(
            name,
            MetricKind::Counter,
            &format!(
                "{what} of guarded containers that the kernel itself dropped after netwatch \
                 (kfree_skb), by container, service, network, direction and the kernel's \
                 reason (kernel:netfilter_drop: Docker's iptables rules)."
            ),
        );
        for ((container, service, network, direction, reason), (packets, bytes_total)) in totals {
            out.sample(
                &[
                    ("container", container.as_str()),
                    ("service", service.as_str()),
                    ("network", network.as_str()),
                    ("direction", direction),
                    ("reason", reason.as_str()),
                ],
                if bytes { *bytes_total } else { *packets },
            );
        }
    }
}

fn render_flows(out: &mut Exposition, flows: &FlowTotals) {
    let totals = &flows.flows;
    let help = |what: &str| {
        format!(
            "{what} of the flows netwatch tracks, by container, service, network, \
             direction (egress: sent by the container) and the flow's latest verdict; \
             container=\"\" for flows of no container on this host."
        )
    };
    let families = [
        (
            "netwatch_flow_bytes_total",
            "Bytes (Ethernet header included)",
            true,
        ),
        ("netwatch_flow_packets_total", "Packets", false),
    ];
    for (name, what, bytes) in families {
        out.family(name, MetricKind::Counter, &help(what));
        for ((container, service, network, direction, verdict), (packets, bytes_total)) in totals {
            out.sample(
                &[
                    ("container", container.as_str()),
                    ("service", service.as_str()),
                    ("network", network.as_str()),
                    ("direction", direction),
                    ("verdict", verdict),
                ],
                if bytes { *bytes_total } else { *packets },
            );
        }
    }
    render_kernel_drops(out, flows);
}

fn render_datapath(out: &mut Exposition, counters: &PinnedCounters) {
    let hooks = [("tc", &counters.verdicts), ("uplink", &counters.uplink)];
    out.family(
        "netwatch_dropped_packets_total",
        MetricKind::Counter,
        "Packets the datapath dropped, by hook (tc: container veths and network bridges; \
         uplink: XDP shield) and reason.",
    );
    for (hook, counts) in hooks {
        for reason in DropReason::ALL {
            if reason == DropReason::None {
                continue;
            }
            let count = counts.get(reason as usize).copied().unwrap_or(0);
            out.sample(&[("hook", hook), ("reason", reason.name())], count);
        }
    }
    out.family(
        "netwatch_audited_packets_total",
        MetricKind::Counter,
        "Packets audit let through (netwatch.egress=audit, agent --audit), by the reason \
         enforcement would have dropped them for.",
    );
    for reason in DropReason::ALL {
        if reason == DropReason::None {
            continue;
        }
        let count = counters
            .audited
            .as_ref()
            .and_then(|counts| counts.get(reason as usize).copied())
            .unwrap_or(0);
        out.sample(&[("reason", reason.name())], count);
    }
    out.family(
        "netwatch_forwarded_packets_total",
        MetricKind::Counter,
        "Packets the datapath let through, by hook.",
    );
    for (hook, counts) in hooks {
        let index = DropReason::None as usize;
        out.sample(&[("hook", hook)], counts.get(index).copied().unwrap_or(0));
    }
    out.family(
        "netwatch_ringbuf_lost_records_total",
        MetricKind::Counter,
        "Flow records the datapath could not hand to user space because the ring buffer \
         was full.",
    );
    out.sample(&[], counters.ringbuf_lost);
    if let Some(dns) = counters.dns {
        out.family(
            "netwatch_dns_records_total",
            MetricKind::Counter,
            "DNS messages on guarded veths, by what became of them: recorded (handed to \
             the agent), rate_limited (beyond --dns-rate on a CPU), lost (the DNS ring \
             buffer was full); truncated counts recorded ones cut at 512 bytes.",
        );
        for (outcome, count) in [
            ("recorded", dns.submitted),
            ("rate_limited", dns.rate_limited),
            ("lost", dns.lost),
            ("truncated", dns.truncated),
        ] {
            out.sample(&[("outcome", outcome)], count);
        }
    }
    if let Some(inserted) = counters.flows_inserted {
        out.family(
            "netwatch_flow_table_inserts_total",
            MetricKind::Counter,
            "Entries the datapath created in the kernel's flow table (one per new flow); \
             beyond its capacity (--flow-table-entries) each insert evicts the least \
             recently used entry, so inserts minus capacity bounds the evictions.",
        );
        out.sample(&[], inserted);
    }
}

fn render_pipeline(out: &mut Exposition, stats: &PipelineStats) {
    let c = &stats.counters;
    let counters: [(&'static str, &str, u64); 6] = [
        (
            "netwatch_pipeline_records_total",
            "Ring buffer records the agent took.",
            c.records,
        ),
        (
            "netwatch_pipeline_malformed_records_total",
            "Ring buffer records of the wrong size or with unknown values.",
            c.malformed,
        ),
        (
            "netwatch_flow_evictions_total",
            "Live flows whose kernel flow-table entry was evicted (LRU) and came back; \
             their counts are kept.",
            c.kernel_evictions,
        ),
        (
            "netwatch_flows_summarised_total",
            "Idle flows folded into per-container summaries to keep the agent's memory \
             within --flow-limit.",
            c.summarised,
        ),
        (
            "netwatch_host_mode_peers_total",
            "Flows whose host end a --network host container's socket was found to own \
             (named after it instead of `host`).",
            c.host_mode_peers,
        ),
        (
            "netwatch_host_peer_lookup_failures_total",
            "Lookups of a host socket's owner (sock_diag) that failed; those flows' peer \
             is `host`.",
            c.host_peer_lookup_failures,
        ),
    ];
    for (name, help, value) in counters {
        out.family(name, MetricKind::Counter, help);
        out.sample(&[], value);
    }
    out.family(
        "netwatch_tracked_flows",
        MetricKind::Gauge,
        "Flows the agent keeps one by one now (summaries not counted).",
    );
    out.sample(&[], stats.tracked_flows);
}

fn render_flow_log(out: &mut Exposition, stats: &FlowLogStats) {
    let counters: [(&'static str, &str, u64); 5] = [
        (
            "netwatch_flow_log_lines_total",
            "Lines written to the flow log.",
            stats.lines,
        ),
        (
            "netwatch_flow_log_lost_events_total",
            "Flow events the flow log writer fell too far behind to see.",
            stats.lost_events,
        ),
        (
            "netwatch_flow_log_write_errors_total",
            "Failed writes, opens and rotations of the flow log.",
            stats.write_errors,
        ),
        (
            "netwatch_flow_log_unwritten_lines_total",
            "Lines that failed writes or opens kept out of the flow log.",
            stats.unwritten_lines,
        ),
        (
            "netwatch_flow_log_rotations_total",
            "Times the flow log was rotated.",
            stats.rotations,
        ),
    ];
    for (name, help, value) in counters {
        out.family(name, MetricKind::Counter, help);
        out.sample(&[], value);
    }
}

/// Serves `GET /metrics` on `listener` until the future is dropped.
///
/// HTTP/1.1 with keep-alive; `HEAD` is answered too, other methods on
/// `/metrics` get 405 and other paths 404. Each scrape collects `source`
/// on a blocking thread, so a slow flow-table sweep never stalls the
/// runtime. At most 64 connections are served at once. Dropping the
/// future closes every connection.
///
/// # Errors
/// Only an error that makes the listener unusable (e.g. a closed socket);
/// per-connection errors and running out of file descriptors are logged
/// and served through.
pub async fn serve_metrics(listener: TcpListener, source: MetricsSource) -> io::Result<()> {
    let source = Arc::new(source);
    let ended = accept_connections(
        "metrics",
        &listener,
        MAX_CONNECTIONS,
        std::future::pending(),
        &(),
        |stream| {
            let source = Arc::clone(&source);
            async move {
                let service = service_fn(move |request| respond(request, Arc::clone(&source)));
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    debug!("metrics: connection ended: {e}");
                }
            }
        },
    )
    .await;
    ended.result
}

async fn respond(
    request: Request<Incoming>,
    source: Arc<MetricsSource>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != METRICS_PATH {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "netwatch serves metrics at /metrics\n",
        ));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response
            .headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    match tokio::task::spawn_blocking(move || source.render()).await {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(EXPOSITION_CONTENT_TYPE),
            );
            Ok(response)
        }
        Err(e) => {
            warn!("metrics: collecting failed: {e}");
            Ok(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "collecting metrics failed; see the agent's log\n",
            ))
        }
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    // What `render` writes is parsed and checked in tests/tests/export.rs,
    // with the strict parser of the tests crate.
    use super::*;
    use crate::flows::FlowFilter;

    #[test]
    fn kernel_drops_have_their_own_families_and_stay_out_of_the_flow_totals() {
        use crate::render::fixtures::{dropped, egress};
        let forwarded = egress("a", "left", ("172.18.0.2", 8), ("172.19.0.2", 0), 840);
        let mut kernel = dropped(forwarded.clone(), "kernel:netfilter_drop");
        kernel.dropped_by = Some("kernel".into());
        let flows = vec![forwarded, kernel];
        let totals = flow_totals(&flows);
        assert_eq!(totals.len(), 1);
        assert_eq!(totals.values().next(), Some(&(9, 840)));
        let text = MetricsSource::new()
            .with_flows(move || flows.clone())
            .render();
        assert!(
            text.contains(
                "netwatch_kernel_drop_packets_total{container=\"a\",service=\"\",\
                 network=\"left\",direction=\"egress\",reason=\"kernel:netfilter_drop\"} 9"
            ),
            "{text}"
        );
        assert!(!text.contains("verdict=\"dropped\""), "{text}");
    }

    #[test]
    fn totals_summed_where_the_flows_are_kept_are_the_totals_of_their_entries() {
        let pipeline = crate::flows::pipeline::tests::busy_pipeline();
        let totals = FlowTotals::of_pipeline(&pipeline);
        assert_eq!(
            totals,
            FlowTotals::of(&pipeline.flows(&FlowFilter::default()))
        );
        assert!(totals.flows.len() >= 2, "{totals:?}");
        assert_eq!(totals.kernel_drops.len(), 1, "{totals:?}");
    }

    #[test]
    fn an_empty_source_renders_nothing_and_missing_parts_are_left_out() {
        assert_eq!(MetricsSource::new().render(), "");
        let text = MetricsSource::new()
            .with_flows(Vec::new)
            .with_attachments(|| AttachCounts { tc: 2, uplink: 0 })
            .with_datapath_counters(|| None)
            .render();
        assert!(text.contains("# TYPE netwatch_flow_bytes_total counter"));
        assert!(text.contains("\nnetwatch_attached_interfaces{hook=\"tc\"} 2\n"));
        assert!(
            !text.contains("netwatch_dropped_packets_total"),
            "nothing pinned"
        );
    }

    #[test]
    fn build_info_and_the_process_are_rendered_as_client_libraries_name_them() {
        let text = MetricsSource::new()
            .with_build_info(BuildInfo {
                version: "1.2.3",
                commit: "0abc",
            })
            .with_process(PathBuf::from("/proc"))
            .render();
        assert!(
            text.lines()
                .any(|l| l == "netwatch_build_info{version=\"1.2.3\",commit=\"0abc\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE netwatch_build_info gauge\n"),
            "{text}"
        );
        for (family, kind) in [
            ("process_cpu_seconds_total", "counter"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_virtual_memory_bytes", "gauge"),
            ("process_start_time_seconds", "gauge"),
            ("process_open_fds", "gauge"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "{family} in\n{text}"
            );
        }
        let resident: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("a whole number of resident bytes in\n{text}"));
        assert!(resident > 0);
        assert_eq!(BuildInfo::CURRENT.version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn a_process_that_cannot_be_read_is_left_out() {
        let text = MetricsSource::new()
            .with_process(PathBuf::from("/nonexistent-proc"))
            .render();
        assert_eq!(text, "");
    }

    #[test]
    fn the_server_can_be_spawned() {
        fn spawnable<F: std::future::Future + Send + 'static>(_: &F) {}
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let listener = TcpListener::from_std(listener).unwrap();
        spawnable(&serve_metrics(listener, MetricsSource::new()));
    }

    #[test]
    fn every_network_and_endpoint_has_its_mode_and_unguarded_denials_are_counted() {
        use crate::guard::{EndpointGuard, Guard, Mode, NetworkGuard};
        let guard = |mode| Guard {
            mode,
            why: "w".into(),
        };
        let endpoint = |container: &str, mode| EndpointGuard {
            container: container.into(),
            container_id: container.into(),
            veth: None,
            macvlan: None,
            overlay: None,
            attached: false,
            guard: guard(mode),
        };
        let assessment = Assessment {
            networks: vec![
                NetworkGuard {
                    id: "1".into(),
                    name: "back".into(),
                    driver: "macvlan".into(),
                    denied_by: Some("internal: true"),
                    guard: guard(Mode::Unguarded),
                    endpoints: vec![endpoint("db", Mode::Unguarded)],
                },
                NetworkGuard {
                    id: "2".into(),
                    name: "front".into(),
                    driver: "bridge".into(),
                    denied_by: None,
                    guard: guard(Mode::Observed),
                    endpoints: vec![endpoint("web", Mode::Observed)],
                },
            ],
        };
        let shared = std::sync::Arc::new(std::sync::Mutex::new(None));
        let source = MetricsSource::new().with_guard(std::sync::Arc::clone(&shared));
        assert_eq!(source.render(), "", "nothing before the agent's first sync");
        *shared.lock().unwrap() = Some(assessment);
        let text = source.render();
        for line in [
            "netwatch_network_mode{network=\"back\",driver=\"macvlan\",mode=\"unguarded\"} 1",
            "netwatch_network_mode{network=\"front\",driver=\"bridge\",mode=\"observed\"} 1",
            "netwatch_endpoint_mode{container=\"db\",network=\"back\",mode=\"unguarded\"} 1",
            "netwatch_endpoint_mode{container=\"web\",network=\"front\",mode=\"observed\"} 1",
            "netwatch_unguarded_denied{kind=\"network\"} 1",
            "netwatch_unguarded_denied{kind=\"endpoint\"} 1",
            "netwatch_unguarded_alarm{network=\"back\",driver=\"macvlan\",container=\"\"} 1",
            "netwatch_unguarded_alarm{network=\"back\",driver=\"macvlan\",container=\"db\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn attachments_count_interfaces_not_links() {
        let link = |ifindex, program: &str| pins::PinnedLink {
            ifindex,
            program: program.to_string(),
            netns: None,
        };
        let links = [
            link(7, Hook::FromContainer.program_name()),
            link(7, Hook::ToContainer.program_name()),
            link(8, Hook::FromContainer.program_name()),
            link(2, Hook::Uplink.program_name()),
        ];
        assert_eq!(attach_counts(&links), AttachCounts { tc: 2, uplink: 1 });
    }
}
