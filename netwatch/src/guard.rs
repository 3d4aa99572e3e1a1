//! Whether netwatch guards each Docker network and endpoint, and why not.
//!
//! Every network and every endpoint is in one of three [`Mode`]s, and
//! everything netwatch reports (`networks`, `inspect`, `status`, `check`,
//! the metrics and the agent's log) takes it from [`assess`]:
//!
//! - `enforced`: its policy denies something (`internal: true`,
//!   `netwatch.egress=deny`) and the programs that apply it are attached;
//! - `observed`: the programs are attached and the policy denies nothing:
//!   every packet passes and is recorded;
//! - `unguarded`: no netwatch program sees its traffic, with a one-line
//!   `why` (no hook for the driver, host networking, the veth was not found,
//!   the attachment failed, no agent runs, the agent does not manage it…).
//!
//! A network is only as guarded as its weakest part: an internal network is
//! `enforced` when its bridge carries the network-wide policy and every
//! endpoint is enforced, and `unguarded` (naming the part) otherwise. An
//! overlay endpoint of a network that denies egress is enforced only when
//! its container's way out, its `docker_gwbridge` leg, is held too. A
//! network or endpoint whose policy denies something but that is not
//! enforced is an [`Alarm`]: the agent warns about it, `status` lists it
//! and exits non-zero.
//!
//! The assessment reads the kernel's side from the pins (an interface is
//! attached when both TC links are pinned for it), so the agent and a CLI
//! run without an agent judge alike; the agent's own account
//! ([`AgentView`]: is one running, which networks it manages, which
//! attachments failed and why) only sharpens the `why`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::agent::{lock, status_file::AgentStatus};
use crate::datapath::pins;
use crate::docker::{Container, Endpoint, Inventory, Network, Snapshot};
use crate::host::interfaces::{HostVeth, MacvlanChild, SandboxVeth};
use crate::policy::labels::{container_labels, network_labels};

/// How far netwatch guards a network or an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The policy denies something and the programs applying it are attached.
    Enforced,
    /// The programs are attached and judge as enforcement would, but drop
    /// nothing: what they would drop is recorded as audited
    /// (`netwatch.egress=audit`).
    Audited,
    /// The programs are attached; the policy denies nothing.
    Observed,
    /// No netwatch program sees this traffic.
    Unguarded,
}

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::Enforced,
        Mode::Audited,
        Mode::Observed,
        Mode::Unguarded,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Mode::Enforced => "enforced",
            Mode::Audited => "audited",
            Mode::Observed => "observed",
            Mode::Unguarded => "unguarded",
        }
    }
}

impl Mode {
    /// Whether the network's policy is applied as asked: enforced, or
    /// audited because audit was asked for. Anything else is an alarm.
    pub const fn applies_policy(self) -> bool {
        matches!(self, Mode::Enforced | Mode::Audited)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mode and the one line that explains it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    pub mode: Mode,
    pub why: String,
}

impl Guard {
    /// Enforced, or audited when what asked for it is the audit label.
    fn enforced(why: impl Into<String>) -> Guard {
        let why = why.into();
        let mode = if why.starts_with(EGRESS_AUDIT) {
            Mode::Audited
        } else {
            Mode::Enforced
        };
        Guard { mode, why }
    }

    fn observed() -> Guard {
        Guard {
            mode: Mode::Observed,
            why: NOTHING_DENIED.to_owned(),
        }
    }

    fn unguarded(why: impl Into<String>) -> Guard {
        Guard {
            mode: Mode::Unguarded,
            why: why.into(),
        }
    }
}

const NOTHING_DENIED: &str = "nothing denied: not internal, no netwatch.egress=deny";

/// What an enforced overlay network that is not `internal` does not hold:
/// a running agent attaches a new container's sandbox veth as it appears
/// in the sandbox, before the container runs, but its `docker_gwbridge`
/// leg (its way out) on Docker's events, since nothing in the leg's
/// appearance says which overlay's container it serves (measured: ~15 ms,
/// at most 170 ms of 20 starts; docs/drivers.md). An internal overlay has
/// no leg.
const OVERLAY_START_WINDOW: &str = "a new container's way out (its docker_gwbridge leg) is \
     attached on Docker's events: its packets to the host and outside before that (~15 ms) are \
     not judged";

/// Why a container with CAP_NET_ADMIN on a macvlan network is unguarded even
/// with every program attached (measured: docs/drivers.md).
const NET_ADMIN_ON_MACVLAN: &str = "the container has CAP_NET_ADMIN: on a macvlan network it can \
     add ports to the parent that no netwatch hook sees, take another host's MAC, or change its \
     port's mode";

/// Where netwatch can attach for endpoints of networks of `driver`, or why
/// it cannot. The `Ok` text names the hook (for `check` and the drivers
/// table in docs/enforcement.md).
pub fn driver_hook(driver: &str) -> Result<&'static str, String> {
    match driver {
        "bridge" => Ok("each container's host veth, and the bridge for network-wide policy (TCX)"),
        "macvlan" => Ok(
            "the parent device's egress on the host and each child's ingress in its container \
             (TCX; Linux ≥ 6.14)",
        ),
        "ipvlan" => Err(
            "ipvlan: containers' interfaces have no host-side veth, and netwatch has no ipvlan \
             hook yet"
                .to_owned(),
        ),
        "overlay" => Ok(
            "each container's veth where it ends in the overlay's sandbox namespace, and its \
             docker_gwbridge leg (TCX)",
        ),
        "host" => Err(
            "host networking: the container shares the host's network stack; there is no \
             interface of its own to attach to"
                .to_owned(),
        ),
        "null" => Err(
            "no networking (--network none): only loopback, so nothing leaves the container, \
             and there is no interface to attach to"
                .to_owned(),
        ),
        other => Err(format!("driver {other}: netwatch has no hook for it")),
    }
}

/// What a running agent says about itself, as far as guarding goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentView {
    /// An agent holds the lock.
    pub running: bool,
    /// The networks it manages (`--network`); empty: every one it can.
    pub managed: Vec<String>,
    /// Interfaces its last reconciliation could not attach, by
    /// [`attach_key`], with why.
    pub attach_failures: BTreeMap<String, String>,
}

impl AgentView {
    /// The view of the agent whose lock and status file are in `run_dir`.
    pub fn read(run_dir: &Path) -> AgentView {
        if !lock::agent_running(run_dir) {
            return AgentView::default();
        }
        let status = AgentStatus::read(run_dir).unwrap_or_default();
        AgentView {
            running: true,
            managed: status.managed_networks,
            attach_failures: status.attach_failures,
        }
    }

    fn manages(&self, network: &str) -> bool {
        !self.running || self.managed.is_empty() || self.managed.iter().any(|n| n == network)
    }

    /// Whether the agent manages `network` of `inventory`: it is one of
    /// its `--network`s, or it is `docker_gwbridge` and one of them is an
    /// overlay (whose containers leave through their legs there).
    pub fn manages_in(&self, inventory: &Inventory, network: &Network) -> bool {
        self.manages(&network.name)
            || (network.is_gateway_bridge()
                && inventory
                    .networks
                    .iter()
                    .any(|n| n.driver == "overlay" && self.manages(&n.name)))
    }

    fn not_managed(&self) -> String {
        format!(
            "not managed: the agent runs with --network {}",
            self.managed.join(" --network ")
        )
    }

    /// Why `what` (e.g. `veth vethab12`), with [`attach_key`] `key`,
    /// carries no programs.
    fn not_attached(&self, what: &str, key: &str) -> String {
        match self.attach_failures.get(key) {
            Some(why) => format!("{what} not attached: {why}"),
            None if !self.running => format!("{what} not attached: no netwatch agent is running"),
            None => format!("{what} not attached yet: the agent attaches it at its next sync"),
        }
    }
}

/// What the kernel holds, as far as guarding goes.
pub trait KernelView {
    /// Both TC programs are attached to interface `ifindex`.
    fn attached(&self, ifindex: u32) -> bool;
    /// `macvlan_parent` is attached to host interface `ifindex`.
    fn parent_attached(&self, ifindex: u32) -> bool;
    /// `macvlan_child` is attached to interface `ifindex` of the namespace
    /// whose cookie is `netns`.
    fn child_attached(&self, netns: u64, ifindex: u32) -> bool;
    /// Both TC programs are attached to veth `ifindex` of the overlay
    /// sandbox namespace whose cookie is `netns`.
    fn sandbox_attached(&self, netns: u64, ifindex: u32) -> bool;
    /// The ifindex of host interface `ifname`, if it exists.
    fn ifindex(&self, ifname: &str) -> Option<u32>;
}

/// The kernel as netwatch's pins under a root show it (an interface is
/// attached when both of its TC links are pinned: netwatch pins every link
/// it makes, and a link whose pin is removed detaches).
pub struct Pins<'a>(pub &'a Path);

impl KernelView for Pins<'_> {
    fn attached(&self, ifindex: u32) -> bool {
        pins::veth_attached(self.0, ifindex)
    }

    fn parent_attached(&self, ifindex: u32) -> bool {
        pins::parent_attached(self.0, ifindex)
    }

    fn child_attached(&self, netns: u64, ifindex: u32) -> bool {
        pins::child_attached(self.0, netns, ifindex)
    }

    fn sandbox_attached(&self, netns: u64, ifindex: u32) -> bool {
        pins::sandbox_veth_attached(self.0, netns, ifindex)
    }

    fn ifindex(&self, ifname: &str) -> Option<u32> {
        nix::net::if_::if_nametoindex(ifname).ok()
    }
}

/// The guard of one network and its endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkGuard {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// What asks netwatch to deny traffic on this network (`internal: true`
    /// or `netwatch.egress=deny`); `None`: nothing, it is only observed.
    pub denied_by: Option<&'static str>,
    #[serde(flatten)]
    pub guard: Guard,
    /// Sorted by container name. For the `host` and `none` networks: the
    /// containers in that network mode.
    pub endpoints: Vec<EndpointGuard>,
}

/// The guard of one container's endpoint on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointGuard {
    pub container: String,
    pub container_id: String,
    /// The host veth netwatch attaches to, when there is one.
    pub veth: Option<HostVeth>,
    /// The macvlan child netwatch attaches to, when there is one.
    pub macvlan: Option<MacvlanChild>,
    /// The overlay sandbox veth netwatch attaches to, when there is one.
    pub overlay: Option<SandboxVeth>,
    /// Every program this endpoint needs is pinned (both on `veth`; the
    /// child's and its parent's for a macvlan endpoint; both on `overlay`,
    /// and on its container's docker_gwbridge leg when the overlay denies
    /// egress).
    pub attached: bool,
    #[serde(flatten)]
    pub guard: Guard,
}

/// Something whose policy denies traffic but that netwatch does not enforce.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Alarm {
    pub network: String,
    pub driver: String,
    /// `None`: the network as a whole.
    pub container: Option<String>,
    pub why: String,
}

impl fmt::Display for Alarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.container {
            Some(container) => write!(
                f,
                "endpoint of {container} on {} ({}): {}",
                self.network, self.driver, self.why
            ),
            None => write!(
                f,
                "network {} ({}): {}",
                self.network, self.driver, self.why
            ),
        }
    }
}

/// The guard of every network of a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Assessment {
    /// In the inventory's order (by name).
    pub networks: Vec<NetworkGuard>,
}

impl Assessment {
    pub fn network(&self, id: &str) -> Option<&NetworkGuard> {
        self.networks.iter().find(|n| n.id == id)
    }

    /// The guard of `container_id`'s endpoint on network `network_id`.
    pub fn endpoint(&self, network_id: &str, container_id: &str) -> Option<&EndpointGuard> {
        self.network(network_id)?
            .endpoints
            .iter()
            .find(|e| e.container_id == container_id)
    }

    /// Networks and endpoints whose policy denies something but that are
    /// not enforced: networks first, then endpoints, each sorted.
    pub fn alarms(&self) -> Vec<Alarm> {
        let mut networks = BTreeSet::new();
        let mut endpoints = BTreeSet::new();
        for network in self.networks.iter().filter(|n| n.denied_by.is_some()) {
            if !network.guard.mode.applies_policy() {
                networks.insert(Alarm {
                    network: network.name.clone(),
                    driver: network.driver.clone(),
                    container: None,
                    why: network.guard.why.clone(),
                });
            }
            for endpoint in &network.endpoints {
                if !endpoint.guard.mode.applies_policy() {
                    endpoints.insert(Alarm {
                        network: network.name.clone(),
                        driver: network.driver.clone(),
                        container: Some(endpoint.container.clone()),
                        why: endpoint.guard.why.clone(),
                    });
                }
            }
        }
        networks.into_iter().chain(endpoints).collect()
    }

    /// Unguarded networks and endpoints whose policy denies nothing: told,
    /// not alarming (a container in host mode, a macvlan network nobody
    /// asked netwatch to isolate).
    pub fn unguarded_by_choice(&self) -> Vec<Alarm> {
        let mut out = Vec::new();
        for network in self.networks.iter().filter(|n| n.denied_by.is_none()) {
            let endpoints: Vec<&EndpointGuard> = network
                .endpoints
                .iter()
                .filter(|e| e.guard.mode == Mode::Unguarded)
                .collect();
            if endpoints.is_empty() && network.guard.mode == Mode::Unguarded {
                out.push(Alarm {
                    network: network.name.clone(),
                    driver: network.driver.clone(),
                    container: None,
                    why: network.guard.why.clone(),
                });
            }
            for endpoint in endpoints {
                out.push(Alarm {
                    network: network.name.clone(),
                    driver: network.driver.clone(),
                    container: Some(endpoint.container.clone()),
                    why: endpoint.guard.why.clone(),
                });
            }
        }
        out
    }

    /// How many networks are in each mode.
    pub fn network_modes(&self) -> BTreeMap<Mode, usize> {
        let mut counts: BTreeMap<Mode, usize> = Mode::ALL.iter().map(|m| (*m, 0)).collect();
        for network in &self.networks {
            *counts.entry(network.guard.mode).or_default() += 1;
        }
        counts
    }
}

/// What asks netwatch to deny traffic on `network`, if anything. A
/// `netwatch.egress` value netwatch cannot read denies, as the policy
/// compiler treats it.
pub fn denied_by(network: &Network) -> Option<&'static str> {
    if network.internal {
        return Some(INTERNAL);
    }
    let asked = network_labels(&network.name, false, &network.labels, &mut Vec::new());
    if asked.audit {
        return Some(EGRESS_AUDIT);
    }
    asked.deny_egress.then_some(EGRESS_DENY)
}

const INTERNAL: &str = "internal: true";
const EGRESS_DENY: &str = "label netwatch.egress=deny";
const EGRESS_AUDIT: &str =
    "label netwatch.egress=audit: nothing is dropped, what enforcement would drop is recorded";

/// Judges every network of `snapshot` against what `kernel` holds and what
/// `agent` said of itself.
pub fn assess(snapshot: &Snapshot, kernel: &dyn KernelView, agent: &AgentView) -> Assessment {
    let inventory = &snapshot.inventory;
    let networks = inventory
        .networks
        .iter()
        .map(|network| {
            let judge = NetworkJudge {
                snapshot,
                kernel,
                agent,
                network,
                denied: denied_by(network),
                hook: driver_hook(&network.driver),
                managed: agent.manages_in(inventory, network),
                macvlan_parent: macvlan_parent_name(network)
                    .map(|name| (kernel.ifindex(&name), name)),
            };
            let endpoints: Vec<EndpointGuard> = match network.driver.as_str() {
                "host" | "null" => {
                    let mode = if network.driver == "host" {
                        "host"
                    } else {
                        "none"
                    };
                    let why = judge.hook.clone().err().unwrap_or_default();
                    inventory
                        .containers
                        .iter()
                        .filter(|c| c.network_mode == mode)
                        .map(|c| without_endpoint(c, &why))
                        .collect()
                }
                _ => inventory
                    .endpoints_on(&network.id)
                    .map(|(container, endpoint)| judge.endpoint(container, endpoint))
                    .collect(),
            };
            NetworkGuard {
                id: network.id.clone(),
                name: network.name.clone(),
                driver: network.driver.clone(),
                denied_by: judge.denied,
                guard: judge.network(&endpoints),
                endpoints,
            }
        })
        .collect();
    Assessment { networks }
}

/// The key of an interface in [`AgentView::attach_failures`]: its ifindex,
/// and for an interface in a container's namespace (a macvlan child) that
/// namespace's cookie, since its ifindex is only unique there.
pub fn attach_key(netns: Option<u64>, ifindex: u32) -> String {
    match netns {
        Some(netns) => format!("{netns}:{ifindex}"),
        None => ifindex.to_string(),
    }
}

/// The name of macvlan network `network`'s parent device on the host: the
/// `parent` option, else the dummy link Docker makes itself
/// (`dm-<12 characters of the id>`). `None` for other drivers.
pub fn macvlan_parent_name(network: &Network) -> Option<String> {
    (network.driver == "macvlan").then(|| {
        network
            .parent
            .clone()
            .unwrap_or_else(|| format!("dm-{}", network.id.get(..12).unwrap_or(&network.id)))
    })
}

/// Everything judging one network's parts needs.
struct NetworkJudge<'a> {
    snapshot: &'a Snapshot,
    kernel: &'a dyn KernelView,
    agent: &'a AgentView,
    network: &'a Network,
    denied: Option<&'static str>,
    hook: Result<&'static str, String>,
    managed: bool,
    /// For a macvlan network: its parent's ifindex (`None`: not on this
    /// host) and name.
    macvlan_parent: Option<(Option<u32>, String)>,
}

impl NetworkJudge<'_> {
    /// The mode of an endpoint whose programs are all attached.
    fn attached(&self) -> Guard {
        match self.denied {
            Some(why) => Guard::enforced(why),
            None => Guard::observed(),
        }
    }

    /// The mode of `container`'s endpoint whose programs are all attached:
    /// the network's, or audited where the container's own
    /// `netwatch.egress=audit` applies ([`crate::policy::labels::ContainerLabels::audits_on`]).
    fn attached_for(&self, container: &Container) -> Guard {
        let own = container_labels(&container.name, &container.labels, &mut Vec::new());
        let asked = network_labels(
            &self.network.name,
            self.network.internal,
            &self.network.labels,
            &mut Vec::new(),
        );
        if own.audits_on(&asked, self.network.internal) {
            return Guard {
                mode: Mode::Audited,
                why: format!(
                    "label netwatch.egress=audit on container {}: nothing is dropped, what \
                     enforcement would drop is recorded",
                    container.name
                ),
            };
        }
        self.attached()
    }

    fn endpoint(&self, container: &Container, endpoint: &Endpoint) -> EndpointGuard {
        let mut judged = EndpointGuard {
            container: container.name.clone(),
            container_id: container.id.clone(),
            veth: None,
            macvlan: None,
            overlay: None,
            attached: false,
            guard: Guard::unguarded(String::new()),
        };
        judged.guard = if let Err(why) = &self.hook {
            Guard::unguarded(why.clone())
        } else if !self.managed {
            Guard::unguarded(self.agent.not_managed())
        } else if endpoint.driver == "macvlan" {
            self.macvlan_endpoint(container, endpoint, &mut judged)
        } else if endpoint.driver == "overlay" {
            self.overlay_endpoint(container, endpoint, &mut judged)
        } else {
            self.veth_endpoint(container, endpoint, &mut judged)
        };
        judged
    }

    fn overlay_endpoint(
        &self,
        container: &Container,
        endpoint: &Endpoint,
        judged: &mut EndpointGuard,
    ) -> Guard {
        let veth = match self.snapshot.sandbox_veth(container, endpoint) {
            Ok(veth) => veth,
            Err(e) => return Guard::unguarded(format!("sandbox veth not found: {e}")),
        };
        judged.overlay = Some(veth.clone());
        judged.attached = self
            .kernel
            .sandbox_attached(veth.netns_cookie, veth.ifindex);
        if !judged.attached {
            let key = attach_key(Some(veth.netns_cookie), veth.ifindex);
            return Guard::unguarded(
                self.agent
                    .not_attached(&format!("sandbox veth {}", veth.ifname), &key),
            );
        }
        if self.denied.is_some()
            && let Some(why) = self.way_out_unguarded(container)
        {
            judged.attached = false;
            return Guard::unguarded(why);
        }
        self.attached_for(container)
    }

    /// Why the docker_gwbridge leg of `container` (its way out of a
    /// non-internal overlay) carries no programs, if it has one that
    /// does not.
    fn way_out_unguarded(&self, container: &Container) -> Option<String> {
        let inventory = &self.snapshot.inventory;
        let gwbridge = inventory.networks.iter().find(|n| n.is_gateway_bridge())?;
        let leg = container
            .endpoints
            .iter()
            .find(|e| e.network_id == gwbridge.id)?;
        let prefix = "its way out, the docker_gwbridge leg";
        if !self.agent.manages_in(inventory, gwbridge) {
            return Some(format!("{prefix}, is {}", self.agent.not_managed()));
        }
        let veth = match self.snapshot.veth(container, leg) {
            Ok(veth) => veth,
            Err(e) => return Some(format!("{prefix}: host veth not found: {e}")),
        };
        if self.kernel.attached(veth.ifindex) {
            return None;
        }
        let key = attach_key(None, veth.ifindex);
        Some(format!(
            "{prefix}: {}",
            self.agent
                .not_attached(&format!("veth {}", veth.ifname), &key)
        ))
    }

    /// For a `docker_gwbridge` leg: the overlay networks of its container
    /// that deny egress (the leg is their way out, so it denies it too),
    /// with what denies it.
    fn held_by(&self, container: &Container) -> Vec<(&str, &'static str)> {
        if !self.network.is_gateway_bridge() {
            return Vec::new();
        }
        let inventory = &self.snapshot.inventory;
        container
            .endpoints
            .iter()
            .filter_map(|e| inventory.network(&e.network_id))
            .filter(|n| n.driver == "overlay" && self.agent.manages_in(inventory, n))
            .filter_map(|n| Some((n.name.as_str(), denied_by(n)?)))
            .collect()
    }

    fn veth_endpoint(
        &self,
        container: &Container,
        endpoint: &Endpoint,
        judged: &mut EndpointGuard,
    ) -> Guard {
        let veth = match self.snapshot.veth(container, endpoint) {
            Ok(veth) => veth,
            Err(e) => return Guard::unguarded(format!("host veth not found: {e}")),
        };
        judged.veth = Some(veth.clone());
        judged.attached = self.kernel.attached(veth.ifindex);
        if !judged.attached {
            let key = attach_key(None, veth.ifindex);
            return Guard::unguarded(
                self.agent
                    .not_attached(&format!("veth {}", veth.ifname), &key),
            );
        }
        let held = self.held_by(container);
        if let Some((overlay, why)) = held.first() {
            let own = container_labels(&container.name, &container.labels, &mut Vec::new());
            let audited = held.iter().all(|(_, why)| *why == EGRESS_AUDIT)
                || (own.audit && held.iter().all(|(_, why)| *why != INTERNAL));
            return Guard {
                mode: if audited {
                    Mode::Audited
                } else {
                    Mode::Enforced
                },
                why: format!("the way out of overlay {overlay} ({why})"),
            };
        }
        self.attached_for(container)
    }

    fn macvlan_endpoint(
        &self,
        container: &Container,
        endpoint: &Endpoint,
        judged: &mut EndpointGuard,
    ) -> Guard {
        let child = match self.snapshot.macvlan_child(container, endpoint) {
            Ok(child) => child,
            Err(e) => return Guard::unguarded(format!("macvlan interface not found: {e}")),
        };
        judged.macvlan = Some(child.clone());
        if let Some((Some(parent), name)) = &self.macvlan_parent
            && child.parent_ifindex != *parent
        {
            return Guard::unguarded(format!(
                "its macvlan {} hangs off ifindex {}, not the network's parent {name}",
                child.ifname, child.parent_ifindex
            ));
        }
        judged.attached = self
            .kernel
            .child_attached(child.netns_cookie, child.ifindex);
        if !judged.attached {
            let key = attach_key(Some(child.netns_cookie), child.ifindex);
            return Guard::unguarded(
                self.agent
                    .not_attached(&format!("macvlan {}", child.ifname), &key),
            );
        }
        // What the child sends to the LAN is judged on its parent.
        if let Some(guard) = self.parent_unguarded() {
            judged.attached = false;
            return guard;
        }
        if container.net_admin {
            return Guard::unguarded(NET_ADMIN_ON_MACVLAN);
        }
        self.attached_for(container)
    }

    /// Why the network's macvlan parent carries no program, if it does not.
    fn parent_unguarded(&self) -> Option<Guard> {
        let (ifindex, name) = self.macvlan_parent.as_ref()?;
        let Some(ifindex) = ifindex else {
            return Some(Guard::unguarded(format!(
                "parent {name} not found on this host"
            )));
        };
        if self.kernel.parent_attached(*ifindex) {
            return None;
        }
        let key = attach_key(None, *ifindex);
        Some(Guard::unguarded(
            self.agent.not_attached(&format!("parent {name}"), &key),
        ))
    }

    fn network(&self, endpoints: &[EndpointGuard]) -> Guard {
        if let Err(why) = &self.hook {
            return Guard::unguarded(why.clone());
        }
        if !self.managed {
            return Guard::unguarded(self.agent.not_managed());
        }
        if let Some(guard) = self.parent_unguarded() {
            return guard;
        }
        if self.denied.is_some() && self.network.driver == "bridge" {
            // The bridge holds routed traffic network-wide, before any veth
            // is known; without it the network is not enforced, whatever its
            // veths.
            let bridge = self.network.bridge.as_deref().unwrap_or("?");
            match self.kernel.ifindex(bridge) {
                None => {
                    return Guard::unguarded(format!("bridge {bridge} not found on this host"));
                }
                Some(ifindex) if !self.kernel.attached(ifindex) => {
                    let key = attach_key(None, ifindex);
                    return Guard::unguarded(
                        self.agent.not_attached(&format!("bridge {bridge}"), &key),
                    );
                }
                Some(_) => {}
            }
        }
        let weak: Vec<&EndpointGuard> = endpoints
            .iter()
            .filter(|e| e.guard.mode == Mode::Unguarded)
            .collect();
        if let Some(first) = weak.first() {
            return Guard::unguarded(format!(
                "{} of {} endpoints unguarded ({}: {})",
                weak.len(),
                endpoints.len(),
                first.container,
                first.guard.why
            ));
        }
        let overlay = self.network.driver == "overlay";
        let nobody_attaches = endpoints.is_empty() && !self.agent.running;
        match self.denied {
            // Nothing of an overlay is on the host to hold a new container
            // until an agent attaches its veth.
            Some(_) if overlay && nobody_attaches => Guard::unguarded(
                "no endpoints, and no netwatch agent is running to attach to new ones (an \
                 overlay has no network-wide hook)",
            ),
            Some(why) if overlay && !self.network.internal => {
                Guard::enforced(format!("{why}; {OVERLAY_START_WINDOW}"))
            }
            Some(why) => Guard::enforced(why),
            None if nobody_attaches => Guard::unguarded(
                "no endpoints, and no netwatch agent is running to attach to new ones",
            ),
            None => Guard::observed(),
        }
    }
}

fn without_endpoint(container: &Container, why: &str) -> EndpointGuard {
    EndpointGuard {
        container: container.name.clone(),
        container_id: container.id.clone(),
        veth: None,
        macvlan: None,
        overlay: None,
        attached: false,
        guard: Guard::unguarded(why),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::docker::captured;
    use crate::host::interfaces::EndpointError;

    /// A kernel with these interfaces attached and these host interfaces.
    pub(crate) struct FakeKernel {
        attached: BTreeSet<u32>,
        interfaces: BTreeMap<String, u32>,
    }

    impl FakeKernel {
        pub(crate) fn new(attached: &[u32], interfaces: &[(&str, u32)]) -> FakeKernel {
            FakeKernel {
                attached: attached.iter().copied().collect(),
                interfaces: interfaces
                    .iter()
                    .map(|(name, i)| ((*name).to_owned(), *i))
                    .collect(),
            }
        }
    }

    impl KernelView for FakeKernel {
        fn attached(&self, ifindex: u32) -> bool {
            self.attached.contains(&ifindex)
        }

        fn parent_attached(&self, ifindex: u32) -> bool {
            self.attached.contains(&ifindex)
        }

        fn child_attached(&self, _netns: u64, ifindex: u32) -> bool {
            self.attached.contains(&ifindex)
        }

        fn sandbox_attached(&self, _netns: u64, ifindex: u32) -> bool {
            self.attached.contains(&ifindex)
        }

        fn ifindex(&self, ifname: &str) -> Option<u32> {
            self.interfaces.get(ifname).copied()
        }
    }

    fn network_named<'a>(assessment: &'a Assessment, name: &str) -> &'a NetworkGuard {
        let found = assessment.networks.iter().find(|n| n.name == name);
        found.unwrap_or_else(|| panic!("no network {name} in the assessment"))
    }

    fn endpoint_names(network: &NetworkGuard) -> Vec<&str> {
        network
            .endpoints
            .iter()
            .map(|e| e.container.as_str())
            .collect()
    }

    fn running() -> AgentView {
        AgentView {
            running: true,
            ..AgentView::default()
        }
    }

    /// The captured topology with `edit` applied to network `name`'s JSON.
    fn snapshot_with_network(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Snapshot {
        let mut networks: Vec<serde_json::Value> =
            serde_json::from_str(captured::NETWORKS).unwrap();
        let network = networks.iter_mut().find(|n| n["Name"] == name).unwrap();
        edit(network);
        let networks: Vec<bollard::models::Network> =
            serde_json::from_value(serde_json::Value::Array(networks)).unwrap();
        let containers: Vec<_> = ["app", "static", "hostnet"]
            .iter()
            .map(|c| captured::container(c))
            .collect();
        let inventory = crate::docker::Inventory::from_api(&networks, &containers);
        Snapshot::unresolved(inventory, EndpointError::NotRoot)
    }

    #[test]
    fn an_internal_network_of_a_driver_without_hook_is_an_alarm_with_its_endpoints() {
        // nwcap-back as Docker would describe an internal ipvlan network.
        let snapshot = snapshot_with_network("nwcap-back", |n| {
            n["Driver"] = "ipvlan".into();
            n["Options"] = serde_json::json!({"parent": "nwmv0"});
        });
        let assessment = assess(&snapshot, &FakeKernel::new(&[], &[]), &running());
        let back = network_named(&assessment, "nwcap-back");
        assert_eq!(back.guard.mode, Mode::Unguarded);
        assert!(back.guard.why.starts_with("ipvlan: "), "{}", back.guard.why);
        assert_eq!(back.endpoints.len(), 2, "ipvlan endpoints are listed");
        assert!(back.endpoints.iter().all(|e| e.veth.is_none()));
        let alarms: Vec<String> = assessment
            .alarms()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(alarms.len(), 3, "{alarms:?}");
        assert!(alarms[0].starts_with("network nwcap-back (ipvlan): ipvlan: "));
        assert!(alarms[1].starts_with("endpoint of nwcap-app on nwcap-back (ipvlan): "));
        assert!(alarms[2].starts_with("endpoint of nwcap-static on nwcap-back (ipvlan): "));
    }

    #[test]
    fn an_egress_denied_network_must_be_enforced_too() {
        let snapshot = snapshot_with_network("nwcap-front", |n| {
            n["Driver"] = "ipvlan".into();
            n["Labels"]["netwatch.egress"] = "deny".into();
        });
        let assessment = assess(&snapshot, &FakeKernel::new(&[], &[]), &running());
        let front = network_named(&assessment, "nwcap-front");
        assert_eq!(front.denied_by, Some("label netwatch.egress=deny"));
        assert!(
            front.guard.why.starts_with("ipvlan: "),
            "{}",
            front.guard.why
        );
        assert!(
            assessment
                .alarms()
                .iter()
                .any(|a| a.network == "nwcap-front" && a.container.is_none())
        );
    }

    #[test]
    fn a_container_audited_by_its_label_is_audited_where_a_label_denies_and_enforced_where_internal()
     {
        let mut networks: Vec<serde_json::Value> =
            serde_json::from_str(captured::NETWORKS).unwrap();
        for network in &mut networks {
            if network["Name"] == "nwcap-front" {
                network["Labels"]["netwatch.egress"] = "deny".into();
            }
            if network["Name"] == "nwcap-back" {
                network["Internal"] = true.into();
            }
        }
        let networks: Vec<bollard::models::Network> =
            serde_json::from_value(serde_json::Value::Array(networks)).unwrap();
        let containers: Vec<_> = ["app", "static"]
            .iter()
            .map(|c| captured::container(c))
            .collect();
        let mut inventory = crate::docker::Inventory::from_api(&networks, &containers);
        let app = inventory
            .containers
            .iter_mut()
            .find(|c| c.name == "nwcap-app")
            .unwrap();
        app.labels
            .insert("netwatch.egress".to_owned(), "audit".to_owned());
        let mut snapshot = Snapshot::unresolved(inventory, EndpointError::NotRoot);
        snapshot.set_veth_for_test("nwcap-app", "nwcap-front", "vethapp1", 61);
        snapshot.set_veth_for_test("nwcap-app", "nwcap-back", "vethapp2", 62);
        snapshot.set_veth_for_test("nwcap-static", "nwcap-back", "vethstatic", 63);
        let kernel = FakeKernel::new(
            &[61, 62, 63, 70, 71],
            &[("nwcap-br0", 70), ("br-5ff26285eaf7", 71)],
        );
        let assessment = assess(&snapshot, &kernel, &running());
        let mode_of = |network: &str, container: &str| {
            let guard = &network_named(&assessment, network)
                .endpoints
                .iter()
                .find(|e| e.container == container)
                .unwrap_or_else(|| panic!("{container} on {network}"))
                .guard;
            (guard.mode, guard.why.clone())
        };
        let (mode, why) = mode_of("nwcap-front", "nwcap-app");
        assert_eq!(mode, Mode::Audited, "{why}");
        assert!(
            why.starts_with(
                "label netwatch.egress=audit on container nwcap-app: nothing is dropped"
            ),
            "{why}"
        );
        assert_eq!(mode_of("nwcap-back", "nwcap-app").0, Mode::Enforced);
        assert_eq!(mode_of("nwcap-back", "nwcap-static").0, Mode::Enforced);
        assert!(assessment.alarms().is_empty(), "{:?}", assessment.alarms());
    }

    #[test]
    fn host_mode_is_unguarded_but_no_alarm() {
        let snapshot = snapshot_with_network("host", |_| {});
        let assessment = assess(&snapshot, &FakeKernel::new(&[], &[]), &running());
        let host = network_named(&assessment, "host");
        assert_eq!(host.endpoints.len(), 1);
        assert_eq!(host.endpoints[0].container, "nwcap-hostnet");
        assert_eq!(host.endpoints[0].guard.mode, Mode::Unguarded);
        assert!(
            assessment.alarms().iter().all(|a| a.network != "host"),
            "host networking is not internal: told, not alarmed"
        );
        assert!(
            assessment
                .unguarded_by_choice()
                .iter()
                .any(|a| a.container.as_deref() == Some("nwcap-hostnet"))
        );
    }

    #[test]
    fn a_bridge_that_is_gone_or_a_veth_not_found_is_named() {
        let snapshot = snapshot_with_network("nwcap-back", |_| {});
        let assessment = assess(&snapshot, &FakeKernel::new(&[], &[]), &running());
        let back = assessment.network(&snapshot.inventory.network("nwcap-back").unwrap().id);
        let back = back.unwrap();
        assert_eq!(back.guard.why, "bridge nwcap-br0 not found on this host");
        assert_eq!(
            back.endpoints[0].guard.why,
            "host veth not found: host veths are only looked up as root (entering a container's \
             network namespace)"
        );
    }

    /// nwcap-back as an internal macvlan network whose two children hang
    /// off parent ifindex 40, in namespaces 7001 and 7002.
    fn macvlan_snapshot() -> Snapshot {
        let mut snapshot = snapshot_with_network("nwcap-back", |n| {
            n["Driver"] = "macvlan".into();
            n["Options"] = serde_json::json!({"parent": "nwmv0"});
        });
        for (container, ifindex, netns) in [("nwcap-app", 51, 7001), ("nwcap-static", 52, 7002)] {
            let child = MacvlanChild {
                ifname: "eth0".into(),
                ifindex,
                parent_ifindex: 40,
                netns_cookie: netns,
            };
            snapshot.set_macvlan_child_for_test(container, "nwcap-back", child);
        }
        snapshot
    }

    fn back(assessment: &Assessment) -> &NetworkGuard {
        assessment
            .networks
            .iter()
            .find(|n| n.name == "nwcap-back")
            .unwrap()
    }

    #[test]
    fn a_macvlan_network_is_enforced_only_with_its_parent_and_every_child_attached() {
        let snapshot = macvlan_snapshot();
        let judge = |attached: &[u32]| {
            assess(
                &snapshot,
                &FakeKernel::new(attached, &[("nwmv0", 40)]),
                &running(),
            )
        };
        let all = judge(&[40, 51, 52]);
        assert_eq!(back(&all).guard.mode, Mode::Enforced, "{:?}", back(&all));
        assert!(all.alarms().is_empty(), "{:?}", all.alarms());
        assert_eq!(
            back(&all).endpoints[0].macvlan.as_ref().unwrap().ifindex,
            51
        );

        let no_parent = judge(&[51, 52]);
        assert_eq!(back(&no_parent).guard.mode, Mode::Unguarded);
        assert!(
            back(&no_parent).guard.why.starts_with("parent ")
                && back(&no_parent).guard.why.contains(" not attached yet"),
            "{}",
            back(&no_parent).guard.why
        );
        assert!(
            back(&no_parent)
                .endpoints
                .iter()
                .all(|e| e.guard.mode == Mode::Unguarded),
            "a child's egress is judged on the parent"
        );

        let one_child = judge(&[40, 51]);
        let static_child = &back(&one_child).endpoints[1];
        assert_eq!(
            static_child.guard.why,
            "macvlan eth0 not attached yet: the agent attaches it at its next sync"
        );
        assert_eq!(
            back(&one_child).guard.why,
            "1 of 2 endpoints unguarded (nwcap-static: macvlan eth0 not attached yet: the agent \
             attaches it at its next sync)"
        );
    }

    #[test]
    fn an_internal_macvlan_network_without_a_parent_names_dockers_dummy_parent() {
        // Docker gives an internal macvlan network without `-o parent` a
        // dummy link of its own, dm-<12 characters of the id> (on kernels
        // with the dummy driver; this machine's has none).
        let snapshot = snapshot_with_network("nwcap-back", |n| {
            n["Driver"] = "macvlan".into();
            n["Options"] = serde_json::json!({});
        });
        let network = snapshot.inventory.network("nwcap-back").unwrap();
        assert_eq!(
            macvlan_parent_name(network).as_deref(),
            Some("dm-3bc36a716f17")
        );
        let kernel = FakeKernel::new(&[7], &[("dm-3bc36a716f17", 7)]);
        let assessment = assess(&snapshot, &kernel, &running());
        assert_eq!(
            back(&assessment).guard.why,
            "2 of 2 endpoints unguarded (nwcap-app: macvlan interface not found: this \
             endpoint's interface was not looked up)",
            "the dummy parent is found and attached; the children were not looked up"
        );
        let gone = assess(&snapshot, &FakeKernel::new(&[], &[]), &running());
        assert_eq!(
            back(&gone).guard.why,
            "parent dm-3bc36a716f17 not found on this host"
        );
        assert!(gone.alarms().iter().any(|a| a.network == "nwcap-back"));
    }

    #[test]
    fn a_net_admin_container_on_macvlan_is_unguarded_however_attached() {
        let mut snapshot = macvlan_snapshot();
        let app = snapshot
            .inventory
            .containers
            .iter_mut()
            .find(|c| c.name == "nwcap-app")
            .unwrap();
        app.net_admin = true;
        let kernel = FakeKernel::new(&[40, 51, 52], &[("nwmv0", 40)]);
        let assessment = assess(&snapshot, &kernel, &running());
        let app = &back(&assessment).endpoints[0];
        assert_eq!(app.guard.mode, Mode::Unguarded);
        assert!(
            app.guard
                .why
                .starts_with("the container has CAP_NET_ADMIN: "),
            "{}",
            app.guard.why
        );
        assert_eq!(back(&assessment).endpoints[1].guard.mode, Mode::Enforced);
        assert_eq!(back(&assessment).guard.mode, Mode::Unguarded);
    }

    #[test]
    fn a_macvlan_child_off_another_parent_is_unguarded() {
        let snapshot = macvlan_snapshot();
        // The network's parent nwmv0 is ifindex 41 here; the children say 40.
        let kernel = FakeKernel::new(&[40, 41, 51, 52], &[("nwmv0", 41)]);
        let assessment = assess(&snapshot, &kernel, &running());
        assert_eq!(
            back(&assessment).endpoints[0].guard.why,
            "its macvlan eth0 hangs off ifindex 40, not the network's parent nwmv0"
        );
    }

    #[test]
    fn a_macvlan_childs_attach_failure_is_found_by_its_namespace_and_ifindex() {
        let snapshot = macvlan_snapshot();
        let agent = AgentView {
            running: true,
            managed: Vec::new(),
            attach_failures: [
                (
                    attach_key(Some(7002), 52),
                    "attaching failed: EPERM".to_owned(),
                ),
                // Host interface 52 is another interface: its failure is not the child's.
                (attach_key(None, 51), "attaching failed: ENODEV".to_owned()),
            ]
            .into(),
        };
        let assessment = assess(&snapshot, &FakeKernel::new(&[40], &[("nwmv0", 40)]), &agent);
        let endpoints = &back(&assessment).endpoints;
        assert_eq!(
            endpoints[0].guard.why,
            "macvlan eth0 not attached yet: the agent attaches it at its next sync"
        );
        assert_eq!(
            endpoints[1].guard.why,
            "macvlan eth0 not attached: attaching failed: EPERM"
        );
    }

    /// The captured macvlan/ipvlan/overlay/host/none topology, judged by a
    /// running agent against a kernel on which both bridges (`nwcap1b` of
    /// the default network, `docker_gwbridge`) exist with netwatch
    /// attached: whatever is not enforced there is the driver's doing.
    fn drivers_assessment() -> Assessment {
        let snapshot =
            Snapshot::unresolved(captured::drivers::full_inventory(), EndpointError::NotRoot);
        let kernel = FakeKernel::new(&[1, 2], &[("nwcap1b", 1), ("docker_gwbridge", 2)]);
        assess(&snapshot, &kernel, &running())
    }

    /// The captured drivers topology's network with this id.
    fn snapshot_network(id: &str) -> &'static Network {
        static INVENTORY: std::sync::OnceLock<crate::docker::Inventory> =
            std::sync::OnceLock::new();
        INVENTORY
            .get_or_init(captured::drivers::full_inventory)
            .network(id)
            .unwrap()
    }

    #[test]
    fn captured_internal_macvlan_and_overlay_networks_are_alarms_with_their_endpoints() {
        let assessment = drivers_assessment();
        let alarms: Vec<String> = assessment
            .alarms()
            .iter()
            .map(ToString::to_string)
            .collect();
        // Both drivers have a hook, but this kernel has no nwmi0 (the
        // macvlan network's parent) and the snapshot looked up no interface.
        let not_looked_up = "this endpoint's interface was not looked up";
        assert_eq!(
            alarms,
            [
                "network nwcap-mvint (macvlan): parent nwmi0 not found on this host".to_owned(),
                format!(
                    "network nwcap-ovl-int (overlay): 1 of 1 endpoints unguarded (nwcap-ovi: \
                     sandbox veth not found: {not_looked_up})"
                ),
                format!(
                    "endpoint of nwcap-mvi on nwcap-mvint (macvlan): macvlan interface not \
                     found: {not_looked_up}"
                ),
                format!(
                    "endpoint of nwcap-ovi on nwcap-ovl-int (overlay): sandbox veth not found: \
                     {not_looked_up}"
                ),
            ]
        );
        for (network, container) in [("nwcap-mvint", "nwcap-mvi"), ("nwcap-ovl-int", "nwcap-ovi")] {
            let guard = network_named(&assessment, network);
            assert_eq!(guard.denied_by, Some("internal: true"));
            assert_eq!(
                endpoint_names(guard),
                [container],
                "{network} lists its endpoint"
            );
            assert!(
                guard
                    .endpoints
                    .iter()
                    .all(|e| e.veth.is_none() && !e.attached)
            );
        }
    }

    #[test]
    fn nothing_on_captured_macvlan_ipvlan_overlay_host_or_none_networks_is_enforced() {
        let assessment = drivers_assessment();
        let drivers: BTreeSet<&str> = assessment
            .networks
            .iter()
            .map(|n| n.driver.as_str())
            .collect();
        assert_eq!(
            drivers,
            BTreeSet::from(["bridge", "host", "ipvlan", "macvlan", "null", "overlay"])
        );
        for network in assessment.networks.iter().filter(|n| n.driver != "bridge") {
            let expected = match (driver_hook(&network.driver), network.endpoints.first()) {
                // Its parents are not on this (fake) host.
                (Ok(_), _) if network.driver == "macvlan" => format!(
                    "parent {} not found on this host",
                    macvlan_parent_name(snapshot_network(&network.id)).unwrap()
                ),
                // `ingress` has no container endpoint here: nothing of it
                // is unguarded, and nothing is denied.
                (Ok(_), None) => NOTHING_DENIED.to_owned(),
                (Ok(_), Some(first)) => format!(
                    "{n} of {n} endpoints unguarded ({}: {})",
                    first.container,
                    first.guard.why,
                    n = network.endpoints.len()
                ),
                (Err(why), _) => why,
            };
            assert_eq!(network.guard.why, expected, "{}", network.name);
            for endpoint in &network.endpoints {
                assert_eq!(
                    endpoint.guard.mode,
                    Mode::Unguarded,
                    "{} on {}",
                    endpoint.container,
                    network.name
                );
            }
        }
        // The only enforced-capable networks here are bridges and deny nothing.
        assert!(
            assessment
                .networks
                .iter()
                .all(|n| n.guard.mode != Mode::Enforced)
        );
    }

    /// The captured drivers topology with every overlay endpoint's sandbox
    /// veth ([`captured::drivers::set_sandbox_veths`]) and the
    /// docker_gwbridge legs' host veths (ovc: 253, the task: 262, as
    /// measured) resolved, `edit` applied to the inventory first.
    fn overlay_snapshot(edit: impl FnOnce(&mut crate::docker::Inventory)) -> Snapshot {
        let mut inventory = captured::drivers::full_inventory();
        edit(&mut inventory);
        let mut snapshot = Snapshot::unresolved(inventory, EndpointError::NotRoot);
        captured::drivers::set_sandbox_veths(&mut snapshot);
        snapshot.set_veth_for_test("nwcap-ovc", "docker_gwbridge", "veth7bee27d", 253);
        let task = captured::drivers::TASK;
        snapshot.set_veth_for_test(task, "docker_gwbridge", "vetheb4d267", 262);
        snapshot
    }

    fn overlay_kernel(attached: &[u32]) -> FakeKernel {
        FakeKernel::new(attached, &[("nwcap1b", 1), ("docker_gwbridge", 2)])
    }

    #[test]
    fn an_internal_overlay_is_enforced_once_its_sandbox_veth_carries_both_programs() {
        let snapshot = overlay_snapshot(|_| {});
        let before = assess(&snapshot, &overlay_kernel(&[]), &running());
        let ovi = &network_named(&before, "nwcap-ovl-int").endpoints[0];
        assert_eq!(
            ovi.guard.why,
            "sandbox veth veth1 not attached yet: the agent attaches it at its next sync"
        );
        assert_eq!(ovi.overlay.as_ref().unwrap().ifindex, 258);
        let after = assess(&snapshot, &overlay_kernel(&[258]), &running());
        let int = network_named(&after, "nwcap-ovl-int");
        assert_eq!(int.guard, Guard::enforced("internal: true"), "{int:?}");
        assert_eq!(int.endpoints[0].guard, Guard::enforced("internal: true"));
        assert!(int.endpoints[0].attached);
        assert!(
            after.alarms().iter().all(|a| a.network != "nwcap-ovl-int"),
            "{:?}",
            after.alarms()
        );
        // Without an agent, and when its attachment failed.
        let gone = assess(&snapshot, &overlay_kernel(&[]), &AgentView::default());
        assert_eq!(
            network_named(&gone, "nwcap-ovl-int").endpoints[0].guard.why,
            "sandbox veth veth1 not attached: no netwatch agent is running"
        );
        let agent = AgentView {
            attach_failures: [(attach_key(Some(8002), 258), "EBUSY".to_owned())].into(),
            ..running()
        };
        let failed = assess(&snapshot, &overlay_kernel(&[]), &agent);
        assert_eq!(
            network_named(&failed, "nwcap-ovl-int").endpoints[0]
                .guard
                .why,
            "sandbox veth veth1 not attached: EBUSY"
        );
    }

    #[test]
    fn an_internal_overlay_without_endpoints_is_unguarded_when_no_agent_runs() {
        let snapshot = Snapshot::unresolved(
            captured::drivers::inventory(&["ovc"]),
            EndpointError::NotRoot,
        );
        let judged = |agent: &AgentView| {
            let assessment = assess(&snapshot, &overlay_kernel(&[]), agent);
            network_named(&assessment, "nwcap-ovl-int").guard.clone()
        };
        let without = judged(&AgentView::default());
        assert_eq!(without.mode, Mode::Unguarded);
        assert!(
            without
                .why
                .ends_with("(an overlay has no network-wide hook)"),
            "{}",
            without.why
        );
        assert_eq!(
            judged(&running()).mode,
            Mode::Enforced,
            "the agent attaches"
        );
    }

    #[test]
    fn an_observed_overlay_and_its_containers_gateway_legs_are_observed() {
        let snapshot = overlay_snapshot(|_| {});
        let all = assess(
            &snapshot,
            &overlay_kernel(&[2, 251, 253, 258, 260, 262]),
            &running(),
        );
        for name in ["nwcap-ovl", "docker_gwbridge"] {
            let network = network_named(&all, name);
            assert_eq!(network.guard, Guard::observed(), "{name}");
            assert_eq!(network.endpoints.len(), 2, "{name}: {network:?}");
            assert!(
                network
                    .endpoints
                    .iter()
                    .all(|e| e.guard == Guard::observed())
            );
        }
        let legs = network_named(&all, "docker_gwbridge");
        assert_eq!(
            legs.endpoints[0].veth.as_ref().map(|v| v.ifname.as_str()),
            Some("veth7bee27d"),
            "named by its container, nwcap-ovc"
        );
    }

    #[test]
    fn an_egress_denied_overlay_is_enforced_only_with_its_containers_way_out_held() {
        let snapshot = overlay_snapshot(|inventory| {
            let ovl = inventory
                .networks
                .iter_mut()
                .find(|n| n.name == "nwcap-ovl")
                .unwrap();
            ovl.labels
                .insert("netwatch.egress".to_owned(), "deny".to_owned());
        });
        let sandboxes_only = assess(&snapshot, &overlay_kernel(&[2, 251, 258, 260]), &running());
        let ovl = network_named(&sandboxes_only, "nwcap-ovl");
        assert_eq!(
            ovl.endpoints[0].guard.why,
            "its way out, the docker_gwbridge leg: veth veth7bee27d not attached yet: the agent \
             attaches it at its next sync"
        );
        assert!(!ovl.endpoints[0].attached);
        assert_eq!(ovl.guard.mode, Mode::Unguarded);
        let all = assess(
            &snapshot,
            &overlay_kernel(&[2, 251, 253, 258, 260, 262]),
            &running(),
        );
        let ovl = network_named(&all, "nwcap-ovl");
        assert_eq!(
            ovl.guard,
            Guard::enforced(format!("{EGRESS_DENY}; {OVERLAY_START_WINDOW}")),
            "{ovl:?}"
        );
        let legs = network_named(&all, "docker_gwbridge");
        assert_eq!(
            legs.endpoints[0].guard,
            Guard::enforced("the way out of overlay nwcap-ovl (label netwatch.egress=deny)")
        );
        assert_eq!(
            legs.guard,
            Guard::observed(),
            "docker_gwbridge itself denies nothing"
        );
        assert!(
            all.alarms().iter().all(|a| a.driver != "overlay"),
            "{:?}",
            all.alarms()
        );
        // An agent limited to the overlay manages its legs too; one limited
        // to a bridge network manages neither.
        let overlay_only = AgentView {
            managed: vec!["nwcap-ovl".into()],
            ..running()
        };
        let judged = assess(
            &snapshot,
            &overlay_kernel(&[2, 251, 253, 258, 260, 262]),
            &overlay_only,
        );
        assert_eq!(
            network_named(&judged, "nwcap-ovl").guard.mode,
            Mode::Enforced
        );
        assert_eq!(
            network_named(&judged, "docker_gwbridge").endpoints[0]
                .guard
                .mode,
            Mode::Enforced
        );
        let bridge_only = AgentView {
            managed: vec!["bridge".into()],
            ..running()
        };
        let judged = assess(&snapshot, &overlay_kernel(&[]), &bridge_only);
        assert!(
            network_named(&judged, "docker_gwbridge")
                .guard
                .why
                .starts_with("not managed: ")
        );
    }

    #[test]
    fn captured_host_and_none_containers_are_unguarded_but_no_alarm() {
        let assessment = drivers_assessment();
        for (network, container) in [("host", "nwcap-hostnet2"), ("none", "nwcap-none2")] {
            let guard = network_named(&assessment, network);
            assert_eq!(endpoint_names(guard), [container]);
            assert_eq!(guard.endpoints[0].guard.mode, Mode::Unguarded);
            assert!(assessment.alarms().iter().all(|a| a.network != network));
        }
        // Told, not alarmed: every unguarded network and endpoint that
        // denies nothing (an unguarded network is named only when it has no
        // endpoint to name).
        let told: Vec<String> = assessment
            .unguarded_by_choice()
            .into_iter()
            .map(|a| format!("{} {}", a.network, a.container.unwrap_or_default()))
            .collect();
        assert_eq!(
            told,
            [
                "docker_gwbridge nwcap-ovc",
                "docker_gwbridge nwcap-svc.1.yvjdvx7ds813857f66cmh9jwv",
                "host nwcap-hostnet2",
                "none nwcap-none2",
                "nwcap-ipvlan ",
                "nwcap-mvlan nwcap-mv",
                "nwcap-mvlan nwcap-mv2",
                "nwcap-mvpriv nwcap-mvp",
                "nwcap-ovl nwcap-ovc",
                "nwcap-ovl nwcap-svc.1.yvjdvx7ds813857f66cmh9jwv",
            ]
        );
    }

    #[test]
    fn every_driver_docker_ships_has_an_answer() {
        for driver in ["bridge", "macvlan", "overlay"] {
            assert!(driver_hook(driver).is_ok(), "{driver}");
        }
        for driver in ["ipvlan", "host", "null", "weave"] {
            let why = driver_hook(driver).unwrap_err();
            assert!(!why.is_empty() && !why.contains('\n'), "{driver}: {why}");
        }
    }
}
