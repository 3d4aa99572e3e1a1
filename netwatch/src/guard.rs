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
//! endpoint is enforced, and `unguarded` (naming the part) otherwise. A
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
use crate::docker::{Container, Network, Snapshot};
use crate::endpoint::HostVeth;
use crate::policy::labels::network_labels;

/// How far netwatch guards a network or an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The policy denies something and the programs applying it are attached.
    Enforced,
    /// The programs are attached; the policy denies nothing.
    Observed,
    /// No netwatch program sees this traffic.
    Unguarded,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Enforced, Mode::Observed, Mode::Unguarded];

    pub const fn name(self) -> &'static str {
        match self {
            Mode::Enforced => "enforced",
            Mode::Observed => "observed",
            Mode::Unguarded => "unguarded",
        }
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
    fn enforced(why: impl Into<String>) -> Guard {
        Guard {
            mode: Mode::Enforced,
            why: why.into(),
        }
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

/// Where netwatch can attach for endpoints of networks of `driver`, or why
/// it cannot. The `Ok` text names the hook (for `check` and the README's
/// drivers table).
pub fn driver_hook(driver: &str) -> Result<&'static str, String> {
    match driver {
        "bridge" => Ok("each container's host veth, and the bridge for network-wide policy (TCX)"),
        "macvlan" | "ipvlan" => Err(format!(
            "{driver}: containers' interfaces have no host-side veth, and netwatch has no \
             {driver} hook yet"
        )),
        "overlay" => Err(
            "overlay: containers' veths end in the overlay's sandbox namespace, not the host's, \
             and netwatch has no overlay hook yet"
                .to_owned(),
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
    /// Interfaces its last reconciliation could not attach, with why.
    pub attach_failures: BTreeMap<u32, String>,
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

    fn not_managed(&self) -> String {
        format!(
            "not managed: the agent runs with --network {}",
            self.managed.join(" --network ")
        )
    }

    /// Why `what` (e.g. `veth vethab12`) at `ifindex` carries no programs.
    fn not_attached(&self, what: &str, ifindex: u32) -> String {
        match self.attach_failures.get(&ifindex) {
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
    /// Both TC programs are pinned on `veth`.
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
            if network.guard.mode != Mode::Enforced {
                networks.insert(Alarm {
                    network: network.name.clone(),
                    driver: network.driver.clone(),
                    container: None,
                    why: network.guard.why.clone(),
                });
            }
            for endpoint in &network.endpoints {
                if endpoint.guard.mode != Mode::Enforced {
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
        return Some("internal: true");
    }
    let asked = network_labels(&network.name, false, &network.labels, &mut Vec::new());
    asked.deny_egress.then_some(EGRESS_DENY)
}

const EGRESS_DENY: &str = "label netwatch.egress=deny";

/// Judges every network of `snapshot` against what `kernel` holds and what
/// `agent` said of itself.
pub fn assess(snapshot: &Snapshot, kernel: &dyn KernelView, agent: &AgentView) -> Assessment {
    let inventory = &snapshot.inventory;
    let networks = inventory
        .networks
        .iter()
        .map(|network| {
            let denied = denied_by(network);
            let hook = driver_hook(&network.driver);
            let managed = agent.manages(&network.name);
            let endpoints: Vec<EndpointGuard> = match network.driver.as_str() {
                "host" | "null" => {
                    let mode = if network.driver == "host" {
                        "host"
                    } else {
                        "none"
                    };
                    let why = hook.clone().err().unwrap_or_default();
                    inventory
                        .containers
                        .iter()
                        .filter(|c| c.network_mode == mode)
                        .map(|c| without_endpoint(c, &why))
                        .collect()
                }
                _ => inventory
                    .endpoints_on(&network.id)
                    .map(|(container, endpoint)| {
                        let veth = snapshot.veth(container, endpoint).ok().cloned();
                        let is_attached = veth.as_ref().is_some_and(|v| kernel.attached(v.ifindex));
                        let guard = match (&hook, &veth) {
                            (Err(why), _) => Guard::unguarded(why.clone()),
                            _ if !managed => Guard::unguarded(agent.not_managed()),
                            (Ok(_), None) => {
                                let why = snapshot
                                    .veth(container, endpoint)
                                    .err()
                                    .map(ToString::to_string)
                                    .unwrap_or_default();
                                Guard::unguarded(format!("host veth not found: {why}"))
                            }
                            (Ok(_), Some(v)) if !is_attached => Guard::unguarded(
                                agent.not_attached(&format!("veth {}", v.ifname), v.ifindex),
                            ),
                            (Ok(_), Some(_)) => match denied {
                                Some(why) => Guard::enforced(why),
                                None => Guard::observed(),
                            },
                        };
                        EndpointGuard {
                            container: container.name.clone(),
                            container_id: container.id.clone(),
                            veth,
                            attached: is_attached,
                            guard,
                        }
                    })
                    .collect(),
            };
            let guard = network_guard(network, denied, &hook, managed, &endpoints, kernel, agent);
            NetworkGuard {
                id: network.id.clone(),
                name: network.name.clone(),
                driver: network.driver.clone(),
                denied_by: denied,
                guard,
                endpoints,
            }
        })
        .collect();
    Assessment { networks }
}

fn without_endpoint(container: &Container, why: &str) -> EndpointGuard {
    EndpointGuard {
        container: container.name.clone(),
        container_id: container.id.clone(),
        veth: None,
        attached: false,
        guard: Guard::unguarded(why),
    }
}

fn network_guard(
    network: &Network,
    denied: Option<&'static str>,
    hook: &Result<&'static str, String>,
    managed: bool,
    endpoints: &[EndpointGuard],
    kernel: &dyn KernelView,
    agent: &AgentView,
) -> Guard {
    if let Err(why) = hook {
        return Guard::unguarded(why.clone());
    }
    if !managed {
        return Guard::unguarded(agent.not_managed());
    }
    if denied.is_some() {
        // The bridge holds routed traffic network-wide, before any veth is
        // known; without it the network is not enforced, whatever its veths.
        let bridge = network.bridge.as_deref().unwrap_or("?");
        match kernel.ifindex(bridge) {
            None => {
                return Guard::unguarded(format!("bridge {bridge} not found on this host"));
            }
            Some(ifindex) if !kernel.attached(ifindex) => {
                return Guard::unguarded(agent.not_attached(&format!("bridge {bridge}"), ifindex));
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
    match denied {
        Some(why) => Guard::enforced(why),
        None if endpoints.is_empty() && !agent.running => {
            Guard::unguarded("no endpoints, and no netwatch agent is running to attach to new ones")
        }
        None => Guard::observed(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::docker::captured;
    use crate::endpoint::EndpointError;

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
        // nwcap-back as Docker would describe an internal macvlan network.
        let snapshot = snapshot_with_network("nwcap-back", |n| {
            n["Driver"] = "macvlan".into();
            n["Options"] = serde_json::json!({"parent": "nwmv0"});
        });
        let assessment = assess(&snapshot, &FakeKernel::new(&[], &[]), &running());
        let back = network_named(&assessment, "nwcap-back");
        assert_eq!(back.guard.mode, Mode::Unguarded);
        assert!(
            back.guard.why.starts_with("macvlan: "),
            "{}",
            back.guard.why
        );
        assert_eq!(back.endpoints.len(), 2, "macvlan endpoints are listed");
        assert!(back.endpoints.iter().all(|e| e.veth.is_none()));
        let alarms: Vec<String> = assessment
            .alarms()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(alarms.len(), 3, "{alarms:?}");
        assert!(alarms[0].starts_with("network nwcap-back (macvlan): macvlan: "));
        assert!(alarms[1].starts_with("endpoint of nwcap-app on nwcap-back (macvlan): "));
        assert!(alarms[2].starts_with("endpoint of nwcap-static on nwcap-back (macvlan): "));
    }

    #[test]
    fn an_egress_denied_network_must_be_enforced_too() {
        let snapshot = snapshot_with_network("nwcap-front", |n| {
            n["Driver"] = "overlay".into();
            n["Labels"]["netwatch.egress"] = "deny".into();
        });
        let assessment = assess(&snapshot, &FakeKernel::new(&[], &[]), &running());
        let front = network_named(&assessment, "nwcap-front");
        assert_eq!(front.denied_by, Some("label netwatch.egress=deny"));
        assert!(
            front.guard.why.starts_with("overlay: "),
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

    #[test]
    fn captured_internal_macvlan_and_overlay_networks_are_alarms_with_their_endpoints() {
        let assessment = drivers_assessment();
        let alarms: Vec<String> = assessment
            .alarms()
            .iter()
            .map(ToString::to_string)
            .collect();
        let macvlan = driver_hook("macvlan").unwrap_err();
        let overlay = driver_hook("overlay").unwrap_err();
        assert!(macvlan.starts_with("macvlan: ") && overlay.starts_with("overlay: "));
        assert_eq!(
            alarms,
            [
                format!("network nwcap-mvint (macvlan): {macvlan}"),
                format!("network nwcap-ovl-int (overlay): {overlay}"),
                format!("endpoint of nwcap-mvi on nwcap-mvint (macvlan): {macvlan}"),
                format!("endpoint of nwcap-ovi on nwcap-ovl-int (overlay): {overlay}"),
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
            assert_eq!(network.guard.mode, Mode::Unguarded, "{}", network.name);
            assert_eq!(
                Err(network.guard.why.clone()),
                driver_hook(&network.driver),
                "{}",
                network.name
            );
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
                "host nwcap-hostnet2",
                "ingress ",
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
        assert!(driver_hook("bridge").is_ok());
        for driver in ["macvlan", "ipvlan", "overlay", "host", "null", "weave"] {
            let why = driver_hook(driver).unwrap_err();
            assert!(!why.is_empty() && !why.contains('\n'), "{driver}: {why}");
        }
    }
}
