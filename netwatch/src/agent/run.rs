//! The agent's main loop: sync with Docker, follow its events, resync
//! periodically, reconnect with backoff, and leave enforcement pinned when
//! it stops.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt as _;
use log::{info, warn};

use super::{
    AttachPace, NetworkState, ReconcileMemory, UplinkChoice,
    docker_state::host_state,
    guard_watch::GuardWatch,
    lock, plan,
    port_guard::{PortGuard, Source},
    reconcile::pending_attaches,
    reconcile_remembering,
    sandbox_guard::SandboxGuard,
    saved_plan::{self, Loaded, SavedPlan},
    serving::{Served, Serving},
    status_file::AgentStatus,
    uplinks,
};
use crate::{
    api::ApiListener,
    datapath::{Datapath, LoadOptions, pinned},
    docker::{Client, Snapshot},
    export::{FlowLog, METRICS_PATH, MetricsSource},
    flows::{
        FlowNames, Pipeline, RecordReader,
        host_peer::{host_peers, open_socket_owners},
    },
    guard::{self, AgentView},
    host,
    host::{
        links::{self, LinkEvent},
        rcu::RcuKnob,
    },
};

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Full resync with Docker at least this often, events or not.
    pub resync_interval: Duration,
    /// Capacity of the kernel flow table.
    pub flow_table_entries: u32,
    /// Where links and maps are pinned.
    pub pin_root: PathBuf,
    /// Where the lock and status file live.
    pub run_dir: PathBuf,
    /// What outlives a reboot: the last plan ([`saved_plan`]).
    pub state_dir: PathBuf,
    /// Manage only these networks (empty: every bridge network).
    pub networks: Vec<String>,
    /// Where the uplink shield goes.
    pub uplinks: UplinkChoice,
    /// Flows the agent keeps one by one; idle ones beyond are summarised.
    pub flow_limit: usize,
    /// How long the flows of a container that is gone stay
    /// (`--forget-gone-after`).
    pub forget_gone_after: Duration,
    /// Attach the kernel drop program (`--kernel-drops on`).
    pub kernel_drops: bool,
    /// Audit every network whose policy denies something instead of
    /// enforcing it (`--audit`): nothing is dropped, would-be drops are
    /// recorded as audited.
    pub audit: bool,
    /// Expedite RCU grace periods while attaches are pending
    /// (`--expedite-attach`, [`crate::host::rcu`]).
    pub expedite_attach: bool,
    /// DNS records per second per CPU (`--dns-rate`); 0: none.
    pub dns_rate: u64,
    /// Where the API is served (normally `<run_dir>/api.sock`).
    pub api_socket: PathBuf,
    /// The group allowed to use the API (socket mode 0660); `None`: root
    /// only (0600).
    pub api_group: Option<String>,
    /// Where Prometheus metrics are served; `None`: not at all.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The JSON-lines flow log, if one is wanted.
    pub flow_log: Option<crate::export::FlowLogOptions>,
}

/// What the agent's loop carries from one sync to the next: its options,
/// the pipeline it names flows for, and the kernel, Docker and guard state
/// it keeps right. Docker, netlink and attach work block this loop's
/// thread; the records and every answer are handled on others (the
/// [`RecordReader`]'s, [`Serving`]'s).
struct Agent {
    options: AgentOptions,
    pipeline: Arc<Pipeline>,
    datapath: Datapath,
    links: LinkFeed,
    memory: ReconcileMemory,
    watch: GuardWatch,
    status: AgentStatus,
    pace: AttachPace,
}

/// Why the inner loop returned.
enum Stop {
    /// Asked to stop.
    Signal,
    /// Docker went away: reconnect.
    Docker(String),
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Docker events that change what should be attached.
fn event_filters() -> HashMap<String, Vec<String>> {
    HashMap::from([
        (
            "type".to_string(),
            vec!["container".into(), "network".into()],
        ),
        (
            "event".to_string(),
            // `remove` and `update`: a swarm network removed or changed
            // (a manager's events; this node's own are create, connect,
            // disconnect and destroy).
            [
                "start",
                "die",
                "destroy",
                "connect",
                "disconnect",
                "create",
                "remove",
                "update",
            ]
            .map(String::from)
            .to_vec(),
        ),
    ])
}

/// Runs the agent until `shutdown` resolves (the binary passes SIGTERM or
/// SIGINT). Enforcement stays in place when it returns: links and maps are
/// pinned.
///
/// # Errors
/// Another agent runs, the programs cannot be loaded, or the status file
/// cannot be written.
pub async fn run(options: AgentOptions, shutdown: impl Future<Output = ()>) -> Result<()> {
    let _lock = lock::acquire(&options.run_dir)?;
    // Whether or not this start asks for it: an earlier one that did may
    // have been killed mid-attach.
    if let Err(e) = RcuKnob::host(&options.run_dir).restore_leftover() {
        warn!("cannot put back the RCU setting an earlier agent changed: {e}");
    }
    // Bound before anything is loaded: a bad --api-group or a socket that
    // another process serves stops the agent here.
    let api = ApiListener::bind(&options.api_socket, options.api_group.as_deref())
        .context("setting up the API socket")?;
    let metrics_listener = options
        .metrics_addr
        .map(|addr| {
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("binding the metrics listener to {addr} (--metrics-addr)"))
        })
        .transpose()?;
    let flow_log = options
        .flow_log
        .clone()
        .map(|o| {
            let path = o.path.clone();
            FlowLog::open(o).with_context(|| format!("opening the flow log {}", path.display()))
        })
        .transpose()?;
    let mut datapath = Datapath::load(&LoadOptions {
        flow_table_entries: options.flow_table_entries,
        pin_root: Some(options.pin_root.clone()),
    })
    .context("loading the datapath")?;
    info!(
        "agent started (pid {}), pins under {}, uplink shield on: {}",
        std::process::id(),
        options.pin_root.display(),
        options.uplinks
    );
    for (map, why) in datapath.maps_to_replace() {
        warn!(
            "pinned map {map} does not fit this build ({why}): a new one takes its place once \
             this agent holds the policy; until then the programs an earlier agent attached \
             keep enforcing with it"
        );
    }
    let pace = AttachPace::new(options.expedite_attach, &options.run_dir);
    let links = LinkFeed::start(&options, &mut datapath, &pace);
    let mut status = AgentStatus {
        pid: std::process::id(),
        started_at: unix_now(),
        api_socket: Some(options.api_socket.display().to_string()),
        managed_networks: options.networks.clone(),
        ..AgentStatus::default()
    };
    status
        .write(&options.run_dir)
        .context("writing the agent status file")?;
    let root = options.pin_root.clone();
    // Opened here, in the host's network namespace: the sockets of the
    // host's stack are the ones to look up.
    let pipeline = Arc::new(
        Pipeline::new(
            options.flow_limit,
            Box::new(move || pinned::read_flows(&root)),
        )
        .with_socket_owners(open_socket_owners())
        .forget_gone_after(options.forget_gone_after),
    );
    pipeline.set_kernel_table_entries(crate::datapath::kernel_flow_capacity(
        options.flow_table_entries,
    ));
    if options.audit {
        warn!(
            "audit mode (--audit): every network is audited, not enforced; nothing is dropped, \
             what enforcement would drop is recorded as audited"
        );
        status.audit = true;
    }
    // Observation only, never pinned: it goes with this process.
    let kernel_drops = options.kernel_drops.then(|| datapath.attach_kernel_drops());
    match kernel_drops {
        None => {
            info!("the kernel's own drops are not recorded (--kernel-drops off)");
            status.kernel_drops = Some("off (--kernel-drops off)".into());
        }
        Some(Ok(reasons)) => {
            let what = format!(
                "recorded (kfree_skb, {} reasons named by this kernel)",
                reasons.all().len()
            );
            info!("the kernel's own drops of guarded containers' packets: {what}");
            status.kernel_drops = Some(what);
            pipeline.set_kernel_drop_reasons(reasons);
        }
        Some(Err(e)) => {
            warn!("the kernel's own drops are not recorded: {e}");
            status.kernel_drops = Some(format!("not recorded: {e}"));
        }
    }
    let dns = if options.dns_rate == 0 {
        datapath.disable_dns_records()
    } else {
        datapath.enable_dns_records(options.dns_rate, 0)
    };
    match dns {
        Ok(()) if options.dns_rate == 0 => info!("DNS is not recorded (--dns-rate 0)"),
        Ok(()) => info!(
            "DNS queries and answers on guarded veths: recorded, at most {} a second per CPU",
            options.dns_rate
        ),
        Err(e) => warn!("DNS is not recorded: {e}"),
    }
    // Its own thread, woken by the kernel in batches (see flows::reader):
    // nothing the loop below waits for delays it.
    let rings = datapath
        .record_rings()
        .context("opening the ring buffers")?;
    let _reader = RecordReader::start(rings, pipeline.clone(), true)
        .context("starting the ring buffer reader")?;
    let watch = GuardWatch::default();
    let metrics = match metrics_listener {
        Some(listener) => {
            let mut source = MetricsSource::agent(pipeline.clone(), options.pin_root.clone())
                .with_guard(watch.shared());
            if let Some(log) = &flow_log {
                source = source.with_flow_log(log.counters());
            }
            match listener.local_addr() {
                Ok(addr) => {
                    info!("metrics: serving http://{addr}{METRICS_PATH}");
                    status.metrics_addr = Some(addr.to_string());
                }
                Err(e) => warn!("metrics: cannot read the bound address: {e}"),
            }
            Some((listener, source))
        }
        None => None,
    };
    let flow_log = flow_log.map(|log| {
        let log = log.reopen_on(super::service::hangups());
        info!(
            "flow log: writing {} (rotated at {} bytes, {} files)",
            log.options().path.display(),
            log.options().max_size,
            log.options().max_file
        );
        log
    });
    // Before the API answers: whoever asks it can read where the metrics
    // are (the listener is bound; a connection waits in its backlog).
    let _ = status.write(&options.run_dir);
    // On a thread of their own: an answer never waits for the loop below.
    let serving = Serving::start(
        Served {
            api,
            flow_limit: options.flow_limit,
            metrics,
            flow_log,
        },
        pipeline.clone(),
    )?;
    let mut agent = Agent {
        options,
        pipeline,
        datapath,
        links,
        memory: ReconcileMemory::default(),
        watch,
        status,
        pace,
    };
    // At boot dockerd starts after netwatch is ready; with a saved plan the
    // agent guards its networks' bridges and veths as dockerd creates them,
    // so it is ready now rather than after a sync Docker cannot give yet.
    if let Some(networks) = agent.links.guarding_saved_plan() {
        info!("ready before Docker answers: guarding {networks} network(s) from the saved plan");
        super::service::ready(&format!(
            "guarding {networks} network(s) from the saved plan; waiting for Docker"
        ));
    }
    let ready_anyway = tokio::spawn(super::service::ready_without_docker_after_timeout());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Duration::from_secs(1);
    // When Docker was lost: an operator reading the log after "lost Docker"
    // must be able to tell that the agent follows Docker again.
    let mut lost_at: Option<std::time::Instant> = None;
    'docker: loop {
        let connected = tokio::select! {
            connected = agent.guarding_links(Client::connect()) => connected,
            () = &mut shutdown => break,
        };
        let stop = match connected {
            Ok(client) => {
                backoff = Duration::from_secs(1);
                if let Some(lost_at) = lost_at.take() {
                    info!(
                        "reconnected to Docker (API {}) after {:.1?} away; resyncing",
                        client.api_version(),
                        lost_at.elapsed()
                    );
                }
                agent.status.docker_api_version = Some(client.api_version().to_string());
                agent.status.docker_error = None;
                tokio::select! {
                    stop = agent.follow(&client) => stop,
                    () = &mut shutdown => Stop::Signal,
                }
            }
            Err(e) => Stop::Docker(e.to_string()),
        };
        match stop {
            Stop::Signal => break,
            Stop::Docker(error) => {
                lost_at.get_or_insert_with(std::time::Instant::now);
                warn!(
                    "lost Docker ({error}); enforcement stays as pinned; retrying in {backoff:?}"
                );
                // After the warning, so the log says why before READY=1.
                super::service::ready(&format!(
                    "Docker does not answer ({error}); enforcing what is pinned"
                ));
                agent.status.docker_error = Some(error);
                let _ = agent.status.write(&agent.options.run_dir);
                tokio::select! {
                    () = agent.guarding_links(tokio::time::sleep(backoff)) => {}
                    () = &mut shutdown => break 'docker,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    ready_anyway.abort();
    serving.stop().await;
    info!("agent stopping; enforcement stays pinned (`netwatch detach` removes it)");
    Ok(())
}

impl Agent {
    /// Follows Docker: subscribes to events first (so nothing between the
    /// snapshot and the subscription is missed), syncs, then syncs again on
    /// every burst of events and every resync interval; in between, guards
    /// interfaces as they appear.
    async fn follow(&mut self, client: &Client) -> Stop {
        let mut events = client.docker().events(Some(EventsOptions {
            filters: Some(event_filters()),
            ..EventsOptions::default()
        }));
        // The first tick is immediate: that is the initial sync.
        let mut resync = tokio::time::interval(self.options.resync_interval);
        let mut hangups = super::service::hangups();
        loop {
            let due = tokio::select! {
                // SIGHUP: resync now.
                Ok(()) = hangups.changed() => true,
                event = events.next() => match event {
                    Some(Ok(_)) => {
                        // Coalesce a burst: take what is already queued, then sync once.
                        while let Some(Some(Ok(_))) = futures_util::FutureExt::now_or_never(events.next()) {}
                        true
                    }
                    Some(Err(e)) => return Stop::Docker(e.to_string()),
                    None => return Stop::Docker("the event stream ended".to_string()),
                },
                _ = resync.tick() => true,
                changed = self.links.next() => {
                    self.links.handle(changed, &mut self.datapath, &self.pace);
                    false
                }
            };
            if due {
                match self.sync(client).await {
                    Ok(()) => super::service::ready("synced with Docker"),
                    Err(e) => return Stop::Docker(e),
                }
            }
        }
    }

    /// Awaits `work` while guarding new interfaces ([`LinkFeed`]): at boot
    /// the agent waits here for a dockerd that restores containers before
    /// it answers. (Records are read on the [`RecordReader`]'s thread and
    /// answers given on [`Serving`]'s whatever Docker does: while dockerd
    /// restarts, hangs, each request taking up to [`crate::docker`]'s 30 s
    /// timeout, or answers nonsense.)
    async fn guarding_links<T>(&mut self, work: impl Future<Output = T>) -> T {
        guarding_links(work, &mut self.datapath, &mut self.links, &self.pace).await
    }
}

/// [`Agent::guarding_links`], for a caller that holds other parts of the
/// agent borrowed (a sync).
async fn guarding_links<T>(
    work: impl Future<Output = T>,
    datapath: &mut Datapath,
    links: &mut LinkFeed,
    pace: &AttachPace,
) -> T {
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            changed = links.next() => links.handle(changed, datapath, pace),
        }
    }
}

/// The interfaces the kernel announces, and the guard that attaches to
/// bridges and ports of known networks as they appear (see
/// [`super::port_guard`]).
struct LinkFeed {
    events: Option<tokio::sync::mpsc::UnboundedReceiver<LinkEvent>>,
    guard: PortGuard,
    /// Overlays' sandbox veths (known from the last sync only: the saved
    /// plan keeps bridge networks).
    sandboxes: SandboxGuard,
    host_addrs: Vec<std::net::IpAddr>,
    /// What was last written to the state directory.
    saved: Option<SavedPlan>,
    plan_path: PathBuf,
}

impl LinkFeed {
    /// Listens for interfaces, reads the saved plan, and guards what of it
    /// exists already. Nothing here stops the agent: without the listener
    /// it attaches on Docker's events, without a plan once Docker answers.
    fn start(options: &AgentOptions, datapath: &mut Datapath, pace: &AttachPace) -> LinkFeed {
        let plan_path = saved_plan::path(&options.state_dir);
        let events = match links::watch() {
            Ok(events) => Some(events),
            Err(e) => {
                warn!(
                    "cannot listen for new interfaces ({e}); containers are attached on \
                     Docker's events only, after their first packets"
                );
                None
            }
        };
        let managed =
            |n: &NetworkState| options.networks.is_empty() || options.networks.contains(&n.name);
        let (saved, networks) = match saved_plan::load(&plan_path) {
            Loaded::Whole(plan) => {
                let networks: Vec<NetworkState> =
                    plan.networks().into_iter().filter(managed).collect();
                info!(
                    "saved plan {}: guarding {} network(s) as their bridges and veths appear, \
                     before Docker answers",
                    plan_path.display(),
                    networks.len()
                );
                (Some(plan), networks)
            }
            Loaded::Missing => {
                warn!(
                    "no saved plan at {} (first start, or a wiped state directory): networks are \
                     guarded once Docker answers",
                    plan_path.display()
                );
                (None, Vec::new())
            }
            Loaded::Salvaged { plan, problem } => {
                let networks: Vec<NetworkState> =
                    plan.networks().into_iter().filter(managed).collect();
                warn!(
                    "saved plan {}: {problem}; guarding only the {} network(s) it marks as \
                     internal, with no exceptions, until Docker answers",
                    plan_path.display(),
                    networks.len()
                );
                (None, networks)
            }
            Loaded::Unreadable(why) => {
                warn!(
                    "saved plan {} is unreadable ({why}); networks are guarded once Docker \
                     answers",
                    plan_path.display()
                );
                (None, Vec::new())
            }
        };
        let mut feed = LinkFeed {
            events,
            guard: PortGuard::new(networks, Source::SavedPlan),
            sandboxes: SandboxGuard::default(),
            host_addrs: host::addresses(),
            saved,
            plan_path,
        };
        feed.guard_existing(datapath, pace);
        feed
    }

    /// How many networks of a saved plan the feed guards as their
    /// interfaces appear; `None` when it has no plan, or no listener to see
    /// them appear.
    fn guarding_saved_plan(&self) -> Option<usize> {
        (self.events.is_some()
            && self.guard.source() == Source::SavedPlan
            && !self.guard.is_empty())
        .then(|| self.guard.len())
    }

    /// The next batch of announcements (never, once the listener is gone).
    async fn next(&mut self) -> Vec<LinkEvent> {
        let Some(events) = &mut self.events else {
            return std::future::pending().await;
        };
        match events.recv().await {
            Some(first) => {
                let mut batch = vec![first];
                while let Ok(more) = events.try_recv() {
                    batch.push(more);
                }
                batch
            }
            None => {
                self.events = None;
                std::future::pending().await
            }
        }
    }

    fn handle(&mut self, batch: Vec<LinkEvent>, datapath: &mut Datapath, pace: &AttachPace) {
        if batch.contains(&LinkEvent::Overrun) {
            warn!("the kernel dropped interface notifications; listing every interface");
            self.guard_existing(datapath, pace);
            self.sandboxes
                .guard_existing(datapath, &self.host_addrs, pace);
            return;
        }
        let mut here = Vec::new();
        let mut elsewhere = Vec::new();
        for event in batch {
            match event {
                LinkEvent::Changed(link) => here.push(link),
                LinkEvent::ChangedIn { nsid, link } => elsewhere.push((nsid, link)),
                LinkEvent::Overrun => {}
            }
        }
        self.guard.guard(&here, datapath, &self.host_addrs, pace);
        self.sandboxes
            .guard(&elsewhere, datapath, &self.host_addrs, pace);
    }

    fn guard_existing(&mut self, datapath: &mut Datapath, pace: &AttachPace) {
        if self.guard.is_empty() {
            return;
        }
        match links::links_now() {
            Ok(all) => {
                self.guard.guard(&all, datapath, &self.host_addrs, pace);
            }
            Err(e) => warn!("cannot list interfaces: {e}"),
        }
    }

    /// After a sync: guard the synced networks from now on, and keep them
    /// on disk when they changed.
    fn synced(&mut self, networks: &[NetworkState], deny_egress: impl Fn(&NetworkState) -> bool) {
        let plan = SavedPlan::of(networks, deny_egress);
        self.guard.set_networks(networks.to_vec(), Source::LastSync);
        self.sandboxes.set_networks(networks);
        if self.saved.as_ref() != Some(&plan) {
            match plan.save(&self.plan_path) {
                Ok(()) => info!(
                    "saved the plan of {} bridge network(s) to {}",
                    plan.networks.len(),
                    self.plan_path.display()
                ),
                Err(e) => warn!(
                    "cannot save the plan to {} ({e}); after a reboot, networks are guarded \
                     only once Docker answers",
                    self.plan_path.display()
                ),
            }
            self.saved = Some(plan);
        }
    }
}

/// The macvlan children attached as they appeared whose device still
/// exists, wherever it is now; the pins of those whose device is gone are
/// removed (the kernel detached their links with the device).
fn provisional_children(datapath: &Datapath) -> Vec<super::ProvisionalChild> {
    let Some(root) = datapath.pin_root() else {
        return Vec::new();
    };
    let (live, defunct) = crate::datapath::provisional::provisional_links(root);
    for pin in defunct {
        match std::fs::remove_file(&pin) {
            Ok(()) => info!(
                "removed {}: the macvlan child it was attached to is gone",
                pin.display()
            ),
            Err(e) => warn!("cannot remove {}: {e}", pin.display()),
        }
    }
    live.iter()
        .map(|p| super::ProvisionalChild {
            parent: p.pin.parent,
            ifindex: p.link.ifindex,
        })
        .collect()
}

/// Logs each of `now` that was not in `before` (a warning stands once, not
/// at every sync).
fn warn_of_new(now: &[String], before: &[String]) {
    for line in now.iter().filter(|line| !before.contains(line)) {
        warn!("{line}");
    }
}

impl Agent {
    /// One full sync: snapshot Docker, plan, find the uplinks, name what
    /// the ring buffer records come from, reconcile, and judge what is
    /// guarded.
    async fn sync(&mut self, client: &Client) -> Result<(), String> {
        let Agent {
            options,
            pipeline,
            datapath,
            links,
            memory,
            watch,
            status,
            pace,
        } = self;
        let snapshot = guarding_links(Snapshot::take(client), datapath, links, pace)
            .await
            .map_err(|e| e.to_string())?;
        let mut state = host_state(&snapshot, host::addresses());
        state.audit_all = options.audit;
        state.provisional_children = provisional_children(datapath);
        // Docker's own interfaces never get the shield, managed or not; nor do
        // macvlan parents, which carry a LAN whose hosts may be inside a
        // network (the shield would drop what they send it).
        let docker_interfaces: Vec<u32> = state
            .networks
            .iter()
            .filter_map(|n| n.bridge.as_ref().or(n.macvlan_parent.as_ref()))
            .map(|(_, ifindex)| *ifindex)
            .chain(
                state
                    .endpoints
                    .iter()
                    .filter(|e| e.macvlan.is_none() && e.overlay.is_none())
                    .map(|e| e.host_ifindex),
            )
            .collect();
        if !options.networks.is_empty() {
            let agent = AgentView {
                running: true,
                managed: options.networks.clone(),
                attach_failures: Default::default(),
            };
            let inventory = &snapshot.inventory;
            state.networks.retain(|n| {
                inventory
                    .network(&n.name)
                    .is_some_and(|network| agent.manages_in(inventory, network))
            });
        }
        let mut plan = plan(&state);
        links.host_addrs.clone_from(&state.host_addrs);
        links.synced(&state.networks, |n| {
            let bridge = n.bridge.as_ref().map(|(_, ifindex)| *ifindex);
            plan.bridges.iter().any(|t| Some(t.ifindex) == bridge)
        });
        let (uplinks, uplink_problems) = uplinks::resolve(&options.uplinks, &docker_interfaces);
        plan.uplinks = uplinks;
        // Named before anything is attached: the reader takes the records
        // of an interface this sync attaches while the sync goes on (with
        // the attaches after it, a drop could be logged with the names of
        // the sync before, which do not know the interface).
        let host_peers = host_peers(
            &snapshot.inventory,
            &state.host_addrs,
            pipeline.socket_owners(),
        );
        pipeline.set_names(FlowNames::new(&state, &plan.uplinks).with_host_peers(host_peers));
        let problems: Vec<String> = plan
            .label_problems
            .iter()
            .map(ToString::to_string)
            .collect();
        warn_of_new(&problems, &status.label_problems);
        status.label_problems = problems;
        warn_of_new(&plan.published_dropped, &status.published_dropped);
        status.published_dropped = plan.published_dropped.clone();
        status.attach_failures.clear();
        let reconciled = {
            let _expedited = pace.expedite(|| {
                let pending = pending_attaches(datapath.pin_root()?, &plan);
                (pending > 0).then(|| format!("{pending} pending attach(es)"))
            });
            reconcile_remembering(datapath, &plan, memory)
        };
        match reconciled {
            Ok(report) => {
                status.repairs += (report.repaired.len() + report.repinned_maps.len()) as u64;
                status.attach_failures = report
                    .failures()
                    .map(|(target, netns, why)| {
                        let key = guard::attach_key(netns, target.ifindex);
                        (key, format!("attaching failed: {why}"))
                    })
                    .collect();
                let refused: Vec<String> = report
                    .failures()
                    .map(|(target, _, why)| format!("{} ({}): {why}", target.what, target.ifname))
                    .chain(uplink_problems)
                    .collect();
                for problem in refused.iter().filter(|p| !status.refused.contains(p)) {
                    warn!("refused: {problem}");
                }
                status.refused = refused;
            }
            Err(e) => {
                warn!("reconcile failed: {e}");
                status.refused = vec![e.to_string()];
            }
        }
        if let Some(root) = datapath.pin_root() {
            let agent = AgentView {
                running: true,
                managed: options.networks.clone(),
                attach_failures: status.attach_failures.clone(),
            };
            let assessment = guard::assess(&snapshot, &guard::Pins(root), &agent);
            status.unguarded = watch.update(assessment, std::time::Instant::now());
        }
        status.uplinks = plan
            .uplinks
            .iter()
            .map(|t| format!("{} (ifindex {})", t.ifname, t.ifindex))
            .collect();
        status.last_sync = Some(unix_now());
        status.syncs += 1;
        if let Err(e) = status.write(&options.run_dir) {
            warn!("cannot write the status file: {e}");
        }
        Ok(())
    }
}
