//! `netwatch networks`: Docker's networks, their endpoints and host veths,
//! and how far netwatch guards each (see [`crate::guard`]).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use serde::Serialize;

use super::{OutputFormat, table};
use crate::docker::{Client, Network, Snapshot};
use crate::guard::{self, AgentView, Guard, KernelView, Mode};
use crate::host::interfaces::MacAddr;

/// One network, as `netwatch networks -o json` prints it (the shape is
/// documented in docs/observing.md and stable).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetworkReport {
    pub name: String,
    pub id: String,
    pub driver: String,
    pub internal: bool,
    /// CIDR strings, IPv4 first.
    pub subnets: Vec<String>,
    /// The bridge device; `null` for networks of other drivers.
    pub bridge: Option<String>,
    /// `mode` is `enforced`.
    pub enforced: bool,
    /// `enforced`, `observed` or `unguarded`, and the one line that says why.
    #[serde(flatten)]
    pub guard: Guard,
    /// Sorted by container name. The `host` and `none` networks list the
    /// containers in that network mode (no addresses, no MAC).
    pub endpoints: Vec<NetworkMember>,
}

/// One container's endpoint on a network.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetworkMember {
    pub container: String,
    pub container_id: String,
    /// The compose service, or swarm service, or `null`.
    pub service: Option<String>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// `null` for containers in `host` or `none` network mode.
    pub mac: Option<MacAddr>,
    /// The host end of the endpoint's veth; `null` when it could not be
    /// resolved (`why` says why) or the driver has none.
    pub host_ifname: Option<String>,
    pub host_ifindex: Option<u32>,
    /// For a macvlan endpoint: its interface in the container's namespace
    /// (`ifname`, `ifindex` there, `parent_ifindex` on the host,
    /// `netns_cookie`); `null` otherwise.
    pub macvlan: Option<crate::host::interfaces::MacvlanChild>,
    /// For an overlay endpoint: its veth's end in the network's sandbox
    /// namespace (`ifname`, `ifindex` there, the container's end,
    /// `sandbox`, `netns_cookie`); `null` otherwise.
    pub overlay: Option<crate::host::interfaces::SandboxVeth>,
    /// The container's published ports when Docker publishes them through
    /// this endpoint (its gateway endpoint), each `0.0.0.0:8080/tcp ->
    /// 80/tcp`; empty otherwise.
    pub published: Vec<String>,
    /// Every netwatch program the endpoint needs is pinned (both veth
    /// programs on `host_ifindex`; for a macvlan endpoint, the child's and
    /// its parent's; for an overlay endpoint, both on its sandbox veth and,
    /// when the overlay denies egress, on its container's docker_gwbridge
    /// leg).
    pub attached: bool,
    #[serde(flatten)]
    pub guard: Guard,
}

/// Builds the report of `snapshot`'s networks — all of them, or those named
/// in `only` (names or ids) — judged against what `kernel` holds and what
/// the agent says of itself.
///
/// # Errors
///
/// When a name in `only` is no network's.
pub fn report(
    snapshot: &Snapshot,
    kernel: &dyn KernelView,
    agent: &AgentView,
    only: &[String],
) -> Result<Vec<NetworkReport>> {
    let inventory = &snapshot.inventory;
    for wanted in only {
        if inventory.network(wanted).is_none() {
            bail!("no network named {wanted:?}; `docker network ls` lists them");
        }
    }
    let selected = |network: &Network| {
        only.is_empty() || only.iter().any(|w| *w == network.name || *w == network.id)
    };
    let assessment = guard::assess(snapshot, kernel, agent);
    Ok(inventory
        .networks
        .iter()
        .filter(|network| selected(network))
        .filter_map(|network| {
            let judged = assessment.network(&network.id)?;
            let endpoints: Vec<NetworkMember> = judged
                .endpoints
                .iter()
                .filter_map(|e| {
                    let container = inventory.find_container(&e.container_id).ok()?;
                    let endpoint = container
                        .endpoints
                        .iter()
                        .find(|mine| mine.network_id == network.id);
                    Some(NetworkMember {
                        container: container.name.clone(),
                        container_id: container.id.clone(),
                        service: container.service.clone(),
                        ipv4: endpoint.and_then(|e| e.ipv4),
                        ipv6: endpoint.and_then(|e| e.ipv6),
                        mac: endpoint.map(|e| e.mac),
                        host_ifname: e.veth.as_ref().map(|v| v.ifname.clone()),
                        host_ifindex: e.veth.as_ref().map(|v| v.ifindex),
                        macvlan: e.macvlan.clone(),
                        overlay: e.overlay.clone(),
                        published: inventory
                            .published_through(container)
                            .filter(|through| through.network_id == network.id)
                            .map(|_| {
                                container
                                    .published
                                    .iter()
                                    .map(|p| format!("{p} -> {}", p.container_side()))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        attached: e.attached,
                        guard: e.guard.clone(),
                    })
                })
                .collect();
            Some(NetworkReport {
                name: network.name.clone(),
                id: network.id.clone(),
                driver: network.driver.clone(),
                internal: network.internal,
                subnets: network.subnets.iter().map(|s| s.cidr.to_string()).collect(),
                bridge: network.bridge.clone(),
                enforced: judged.guard.mode == Mode::Enforced,
                guard: judged.guard.clone(),
                endpoints,
            })
        })
        .collect())
}

/// Connects to dockerd and takes a [`Snapshot`] (veths are resolved when
/// running as root).
///
/// # Errors
///
/// When dockerd cannot be reached or refuses a request.
pub fn snapshot() -> Result<Snapshot> {
    super::block_on(async {
        let client = Client::connect().await?;
        Ok(Snapshot::take(&client).await?)
    })
}

/// The two tables of `netwatch networks`: networks, then endpoints; each
/// row ends with its mode and why.
pub fn render_table(reports: &[NetworkReport]) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let networks: Vec<Vec<String>> = reports
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.driver.clone(),
                yes_no(n.internal),
                n.subnets.join(","),
                n.bridge.clone().unwrap_or_default(),
                n.endpoints.len().to_string(),
                n.guard.mode.to_string(),
                n.guard.why.clone(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "NETWORK",
            "DRIVER",
            "INTERNAL",
            "SUBNETS",
            "BRIDGE",
            "ENDPOINTS",
            "MODE",
            "WHY",
        ],
        &networks,
    );
    let endpoints: Vec<Vec<String>> = reports
        .iter()
        .flat_map(|n| {
            n.endpoints.iter().map(move |e| {
                vec![
                    e.container.clone(),
                    e.service.clone().unwrap_or_default(),
                    n.name.clone(),
                    e.ipv4.map(|a| a.to_string()).unwrap_or_default(),
                    e.ipv6.map(|a| a.to_string()).unwrap_or_default(),
                    e.mac.map(|m| m.to_string()).unwrap_or_default(),
                    e.host_ifname
                        .clone()
                        .or_else(|| {
                            e.macvlan
                                .as_ref()
                                .map(|m| format!("{} (in container)", m.ifname))
                        })
                        .or_else(|| {
                            e.overlay
                                .as_ref()
                                .map(|v| format!("{} (in sandbox)", v.ifname))
                        })
                        .unwrap_or_default(),
                    e.host_ifindex
                        .or(e.macvlan.as_ref().map(|m| m.ifindex))
                        .or(e.overlay.as_ref().map(|v| v.ifindex))
                        .map(|i| i.to_string())
                        .unwrap_or_default(),
                    e.guard.mode.to_string(),
                    e.guard.why.clone(),
                    e.published.join(", "),
                ]
            })
        })
        .collect();
    if !endpoints.is_empty() {
        let mut columns = vec![
            "CONTAINER",
            "SERVICE",
            "NETWORK",
            "IPV4",
            "IPV6",
            "MAC",
            "INTERFACE",
            "IFINDEX",
            "MODE",
            "WHY",
            "PUBLISHED",
        ];
        // The column only when something is published.
        let mut endpoints = endpoints;
        if endpoints
            .iter()
            .all(|row| row.last().is_some_and(String::is_empty))
        {
            columns.pop();
            for row in &mut endpoints {
                row.pop();
            }
        }
        out.push('\n');
        out.push_str(&table(&columns, &endpoints));
    }
    out
}

/// `netwatch networks [NETWORK…] [-o table|json]`.
///
/// # Errors
///
/// When dockerd cannot be reached or a named network does not exist.
pub fn run(
    networks: &[String],
    output: OutputFormat,
    pin_root: &Path,
    run_dir: &Path,
) -> Result<ExitCode> {
    let snapshot = snapshot()?;
    let agent = AgentView::read(run_dir);
    let reports = report(&snapshot, &guard::Pins(pin_root), &agent, networks)?;
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        OutputFormat::Table => print!("{}", render_table(&reports)),
    }
    Ok(ExitCode::SUCCESS)
}

/// List Docker's networks, their endpoints and host veths, and how far
/// netwatch guards each.
///
/// One line per network (driver, internal flag, subnets, bridge device,
/// number of endpoints, mode, why), then one line per endpoint:
/// container, service (compose, or swarm), addresses, MAC, the host side of its veth
/// (found by entering the container's network namespace), mode, why.
/// The host and none networks list the containers in that network mode.
///
/// The mode of a network or endpoint is one of:
///   enforced   its policy denies something (internal: true,
///              netwatch.egress=deny) and netwatch's programs apply it
///              (on every endpoint's veth, and the network's bridge)
///   observed   netwatch's programs are attached and the policy denies
///              nothing: every packet passes and is recorded
///   unguarded  no netwatch program sees the traffic; WHY says why (a
///              driver without a hook, host networking, a veth not found
///              or not attached, no agent running, not managed…)
/// A network is only as guarded as its weakest endpoint.
///
/// Talks to dockerd at DOCKER_HOST (default unix:///var/run/docker.sock).
/// Run as root to see host veths; without root they are left blank.
///
/// Examples:
///   netwatch networks
///   netwatch networks backend frontend
///   netwatch networks -o json | jq '.[] | select(.internal)'
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct NetworksArgs {
    /// Show only these networks (names or ids).
    #[arg(value_name = "NETWORK")]
    pub networks: Vec<String>,
    /// Output format; JSON is an array of networks, each with its
    /// endpoints (the shape is documented in docs/observing.md).
    #[arg(short, long, value_enum, default_value_t = super::OutputFormat::Table)]
    pub output: super::OutputFormat,
    /// Where the agent pins its links and maps (a directory in bpffs).
    #[arg(long, hide = true, default_value = "/sys/fs/bpf/netwatch")]
    pub pin_root: std::path::PathBuf,
    /// Where the agent keeps its lock and status file.
    #[arg(long, hide = true, default_value = "/run/netwatch")]
    pub run_dir: std::path::PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::tests::FakeKernel;
    use crate::host::interfaces::EndpointError;

    /// The captured topology (see `docker/testdata`), with veths made up.
    fn snapshot() -> Snapshot {
        let inventory =
            crate::docker::captured::inventory(&["app", "static", "sidecar", "hostnet", "none"]);
        let mut snapshot = Snapshot::unresolved(inventory, EndpointError::NotRoot);
        snapshot.set_veth_for_test("nwcap-app", "nwcap-back", "vethaaa", 13);
        snapshot.set_veth_for_test("nwcap-app", "nwcap-front", "vethbbb", 11);
        snapshot.set_veth_for_test("nwcap-static", "nwcap-back", "vethccc", 15);
        snapshot
    }

    /// The captured bridges exist (nwcap-back's is `nwcap-br0`, ifindex 5;
    /// nwcap-front's 4), with `attached` interfaces carrying both programs.
    fn kernel(attached: &[u32]) -> FakeKernel {
        FakeKernel::new(
            attached,
            &[("nwcap-br0", 5), ("br-5ff26285eaf7", 4), ("docker0", 3)],
        )
    }

    fn running() -> AgentView {
        AgentView {
            running: true,
            ..AgentView::default()
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let reports = report(
            &snapshot(),
            &kernel(&[5, 13]),
            &running(),
            &["nwcap-back".into(), "host".into()],
        )
        .unwrap();
        let json = serde_json::to_value(&reports).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "name": "host",
                "id": "bf78ce1cdb95da387cd6f801d06d37c2d4a847413bc258eb3a3626f27354c8cc",
                "driver": "host",
                "internal": false,
                "subnets": [],
                "bridge": null,
                "enforced": false,
                "mode": "unguarded",
                "why": "host networking: the container shares the host's network stack; there is no interface of its own to attach to",
                "endpoints": [
                    {
                        "container": "nwcap-hostnet",
                        "container_id": "7dd5d6e1122d77cae46b752503aa1def75bba7c7aeac97ba429fa34acb01b8b1",
                        "service": null,
                        "ipv4": null,
                        "ipv6": null,
                        "mac": null,
                        "host_ifname": null,
                        "host_ifindex": null,
                        "macvlan": null,
                        "overlay": null,
                        "published": [],
                        "attached": false,
                        "mode": "unguarded",
                        "why": "host networking: the container shares the host's network stack; there is no interface of its own to attach to"
                    }
                ]
            }, {
                "name": "nwcap-back",
                "id": "3bc36a716f17e68d3e4a69b2fb9230c0eaecb8dcc796f6b967f0dc4e4a67c363",
                "driver": "bridge",
                "internal": true,
                "subnets": ["172.29.0.0/24", "fd00:29::/64"],
                "bridge": "nwcap-br0",
                "enforced": false,
                "mode": "unguarded",
                "why": "1 of 2 endpoints unguarded (nwcap-static: veth vethccc not attached yet: the agent attaches it at its next sync)",
                "endpoints": [
                    {
                        "container": "nwcap-app",
                        "container_id": "d17ecc39df5d148dde9399a5358e4b93551bf6923e08941580487407b81e7255",
                        "service": "app",
                        "ipv4": "172.29.0.10",
                        "ipv6": "fd00:29::2",
                        "mac": "02:42:ac:1d:00:0a",
                        "host_ifname": "vethaaa",
                        "host_ifindex": 13,
                        "macvlan": null,
                        "overlay": null,
                        "published": [],
                        "attached": true,
                        "mode": "enforced",
                        "why": "internal: true"
                    },
                    {
                        "container": "nwcap-static",
                        "container_id": "25774957305c71e511c9005948b6c29507275e0f55f53ad036cdc4ae19b8655b",
                        "service": null,
                        "ipv4": "172.29.0.20",
                        "ipv6": "fd00:29::3",
                        "mac": "02:42:ac:1d:00:14",
                        "host_ifname": "vethccc",
                        "host_ifindex": 15,
                        "macvlan": null,
                        "overlay": null,
                        "published": [],
                        "attached": false,
                        "mode": "unguarded",
                        "why": "veth vethccc not attached yet: the agent attaches it at its next sync"
                    }
                ]
            }])
        );
    }

    fn modes(kernel: &FakeKernel, agent: &AgentView) -> Vec<(String, Mode)> {
        report(&snapshot(), kernel, agent, &[])
            .unwrap()
            .into_iter()
            .map(|n| (n.name, n.guard.mode))
            .collect()
    }

    #[test]
    fn enforced_needs_the_bridge_and_every_endpoint_and_observed_is_never_called_enforced() {
        use Mode::{Enforced, Observed, Unguarded};
        let named = |modes: [Mode; 5]| -> Vec<(String, Mode)> {
            ["bridge", "host", "none", "nwcap-back", "nwcap-front"]
                .iter()
                .map(|n| n.to_string())
                .zip(modes)
                .collect()
        };
        // Nothing attached: nothing guarded. The default bridge has no
        // endpoint in this snapshot: observed while an agent runs (it
        // attaches new ones), unguarded when none does.
        assert_eq!(
            modes(&kernel(&[]), &running()),
            named([Observed, Unguarded, Unguarded, Unguarded, Unguarded])
        );
        assert_eq!(
            modes(&kernel(&[]), &AgentView::default())[0].1,
            Unguarded,
            "no agent: an empty network is not observed"
        );
        assert_eq!(
            modes(&kernel(&[13, 15]), &running())[3].1,
            Unguarded,
            "every veth, but not the bridge"
        );
        assert_eq!(
            modes(&kernel(&[5, 13]), &running())[3].1,
            Unguarded,
            "the bridge, but one veth of two"
        );
        assert_eq!(
            modes(&kernel(&[5, 11, 13, 15]), &running()),
            named([Observed, Unguarded, Unguarded, Enforced, Observed]),
            "front has both programs and denies nothing: observed, not enforced"
        );
        let front = report(
            &snapshot(),
            &kernel(&[5, 11, 13, 15]),
            &running(),
            &["nwcap-front".into()],
        )
        .unwrap();
        assert!(
            !front[0].enforced,
            "enforced is true only where the mode is"
        );
        assert_eq!(
            front[0].guard.why,
            "nothing denied: not internal, no netwatch.egress=deny"
        );
    }

    #[test]
    fn unguarded_says_why_from_the_agents_account() {
        let failed = AgentView {
            running: true,
            managed: Vec::new(),
            attach_failures: [(
                "15".to_string(),
                "the kernel refused: File exists (os error 17)".to_string(),
            )]
            .into(),
        };
        let back = report(
            &snapshot(),
            &kernel(&[5, 13]),
            &failed,
            &["nwcap-back".into()],
        )
        .unwrap();
        assert_eq!(
            back[0].endpoints[1].guard.why,
            "veth vethccc not attached: the kernel refused: File exists (os error 17)"
        );
        let stopped = report(
            &snapshot(),
            &kernel(&[]),
            &AgentView::default(),
            &["nwcap-back".into()],
        )
        .unwrap();
        assert_eq!(
            stopped[0].guard.why,
            "bridge nwcap-br0 not attached: no netwatch agent is running"
        );
        let filtered = AgentView {
            running: true,
            managed: vec!["nwcap-front".into()],
            attach_failures: Default::default(),
        };
        let back = report(
            &snapshot(),
            &kernel(&[5, 13, 15]),
            &filtered,
            &["nwcap-back".into()],
        )
        .unwrap();
        assert_eq!(
            back[0].guard.why,
            "not managed: the agent runs with --network nwcap-front"
        );
        assert!(
            back[0]
                .endpoints
                .iter()
                .all(|e| e.guard.mode == Mode::Unguarded),
            "attached by someone else, but not this agent's to keep"
        );
    }

    #[test]
    fn unknown_network_is_one_line() {
        let error = report(&snapshot(), &kernel(&[]), &running(), &["nope".into()]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no network named \"nope\"; `docker network ls` lists them"
        );
    }

    #[test]
    fn table_is_aligned_and_says_the_mode_in_words() {
        let reports = report(
            &snapshot(),
            &kernel(&[5, 13]),
            &running(),
            &["nwcap-back".into(), "none".into()],
        )
        .unwrap();
        assert_eq!(
            render_table(&reports),
            "\
NETWORK      DRIVER   INTERNAL   SUBNETS                      BRIDGE      ENDPOINTS   MODE        WHY
none         null     no         -                            -           1           unguarded   no networking (--network none): only loopback, so nothing leaves the container, and there is no interface to attach to
nwcap-back   bridge   yes        172.29.0.0/24,fd00:29::/64   nwcap-br0   2           unguarded   1 of 2 endpoints unguarded (nwcap-static: veth vethccc not attached yet: the agent attaches it at its next sync)

CONTAINER      SERVICE   NETWORK      IPV4          IPV6         MAC                 INTERFACE   IFINDEX   MODE        WHY
nwcap-none     -         none         -             -            -                   -           -         unguarded   no networking (--network none): only loopback, so nothing leaves the container, and there is no interface to attach to
nwcap-app      app       nwcap-back   172.29.0.10   fd00:29::2   02:42:ac:1d:00:0a   vethaaa     13        enforced    internal: true
nwcap-static   -         nwcap-back   172.29.0.20   fd00:29::3   02:42:ac:1d:00:14   vethccc     15        unguarded   veth vethccc not attached yet: the agent attaches it at its next sync
"
        );
    }
}
