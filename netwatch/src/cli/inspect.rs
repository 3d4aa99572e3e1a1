//! `netwatch inspect <container>`: one container's endpoints, their host
//! veths, which netwatch programs are attached to them, and how far
//! netwatch guards each (see [`crate::guard`]).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::{OutputFormat, networks, table};
use crate::datapath::{Hook, pins};
use crate::docker::Snapshot;
use crate::guard::{self, AgentView, Guard, KernelView, Mode};
use crate::host::interfaces::{MacAddr, SandboxVeth};

/// What `netwatch inspect -o json` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContainerReport {
    pub container: String,
    pub container_id: String,
    /// The compose service, or swarm service, or `null`.
    pub service: Option<String>,
    /// The compose project, or `null`.
    pub compose_project: Option<String>,
    /// The container's init process on the host.
    pub pid: Option<u32>,
    /// Docker's `HostConfig.NetworkMode` (`default`, a network, `host`,
    /// `none`, `container:<id>`).
    pub network_mode: String,
    /// For `--network container:<other>`: `<other>`'s name. `endpoints` are
    /// then `<other>`'s, which this container shares.
    pub shares_network_of: Option<String>,
    /// The container's weakest endpoint's mode (`unguarded`, then
    /// `observed`, then `enforced`), with that endpoint's network and why;
    /// for `host` and `none` network modes, why they cannot be guarded.
    #[serde(flatten)]
    pub guard: Guard,
    /// Sorted by network name.
    pub endpoints: Vec<ContainerNetworkDetail>,
    /// Its published ports (for `container:<other>`, `<other>`'s, which it
    /// shares).
    pub published: Vec<PublishedReport>,
}

/// One published port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublishedReport {
    /// The host's side, as `docker port` prints it: `0.0.0.0:8080/tcp`.
    pub published: String,
    /// The container's side: `80/tcp`.
    pub container_port: String,
}

/// One endpoint of the container, with both ends of its veth.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContainerNetworkDetail {
    pub network: String,
    pub network_id: String,
    pub internal: bool,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub mac: MacAddr,
    pub aliases: Vec<String>,
    /// The interface inside the container (`eth0`, …).
    pub container_ifname: Option<String>,
    pub host_ifname: Option<String>,
    pub host_ifindex: Option<u32>,
    /// For an overlay endpoint: its veth's end in the network's sandbox
    /// namespace, which netwatch attaches to instead of a host veth.
    pub sandbox_veth: Option<SandboxVeth>,
    /// The netwatch programs pinned for the endpoint: on its host veth (or,
    /// for an overlay endpoint, its sandbox veth) `from_container` (TCX
    /// ingress) and `to_container` (TCX egress); for a macvlan endpoint
    /// `macvlan_child` (its interface's ingress) and `macvlan_parent` (its
    /// parent's egress).
    pub programs: Vec<&'static str>,
    /// Both programs are attached.
    pub attached: bool,
    /// Why the veth is unknown, when it is.
    pub error: Option<String>,
    #[serde(flatten)]
    pub guard: Guard,
}

/// The report on the container a user means by `query` (name, id or id
/// prefix), reading programs from the pins under `pins_root` and judging
/// its guard against `kernel` and `agent`.
///
/// # Errors
///
/// When no running container, or more than one, matches `query`.
pub fn report(
    snapshot: &Snapshot,
    pins_root: &Path,
    kernel: &dyn KernelView,
    agent: &AgentView,
    query: &str,
) -> Result<ContainerReport> {
    let assessment = guard::assess(snapshot, kernel, agent);
    let inventory = &snapshot.inventory;
    let container = inventory.find_container(query)?;
    let endpoints_of = inventory.network_owner(container).map_err(|e| {
        anyhow::anyhow!(
            "{} shares the network of a container that is not running: {e}",
            container.name
        )
    })?;
    let owner = (!std::ptr::eq(endpoints_of, container)).then_some(endpoints_of);
    let endpoints = endpoints_of
        .endpoints
        .iter()
        .map(|endpoint| {
            let veth = snapshot.veth(endpoints_of, endpoint);
            let ifindex = veth.as_ref().ok().map(|v| v.ifindex);
            let child = snapshot.macvlan_child(endpoints_of, endpoint).ok();
            let sandbox = (endpoint.driver == "overlay")
                .then(|| snapshot.sandbox_veth(endpoints_of, endpoint));
            let tc_pair = |pinned: &dyn Fn(Hook) -> bool| -> Vec<&'static str> {
                [Hook::FromContainer, Hook::ToContainer]
                    .into_iter()
                    .filter(|hook| pinned(*hook))
                    .map(Hook::program_name)
                    .collect()
            };
            let programs: Vec<&'static str> = match (child, &sandbox) {
                // A macvlan endpoint: its child's program, and its parent's.
                (Some(child), _) => [
                    (
                        Hook::MacvlanChild,
                        pins::child_attached(pins_root, child.netns_cookie, child.ifindex),
                    ),
                    (
                        Hook::MacvlanParent,
                        pins::parent_attached(pins_root, child.parent_ifindex),
                    ),
                ]
                .into_iter()
                .filter(|(_, pinned)| *pinned)
                .map(|(hook, _)| hook.program_name())
                .collect(),
                (None, Some(Ok(v))) => tc_pair(&|hook| {
                    pins::sandbox_link_path(pins_root, hook, v.netns_cookie, v.ifindex).exists()
                }),
                (None, Some(Err(_))) => Vec::new(),
                (None, None) => tc_pair(&|hook| {
                    ifindex.is_some_and(|i| pins::link_path(pins_root, hook, i).exists())
                }),
            };
            let (container_ifname, error) = match &sandbox {
                Some(Ok(v)) => (Some(v.container_ifname.clone()), None),
                Some(Err(e)) => (None, Some(e.to_string())),
                None => (
                    veth.as_ref()
                        .ok()
                        .map(|v| v.container_ifname.clone())
                        .or_else(|| child.map(|c| c.ifname.clone())),
                    veth.as_ref().err().map(ToString::to_string),
                ),
            };
            ContainerNetworkDetail {
                network: endpoint.network.clone(),
                network_id: endpoint.network_id.clone(),
                internal: inventory
                    .network(&endpoint.network_id)
                    .is_some_and(|n| n.internal),
                ipv4: endpoint.ipv4,
                ipv6: endpoint.ipv6,
                mac: endpoint.mac,
                aliases: endpoint.aliases.clone(),
                container_ifname,
                host_ifname: veth.as_ref().ok().map(|v| v.ifname.clone()),
                host_ifindex: ifindex,
                sandbox_veth: sandbox.and_then(|v| v.ok().cloned()),
                attached: programs.len() == 2,
                programs,
                error,
                guard: assessment
                    .endpoint(&endpoint.network_id, &endpoints_of.id)
                    .map(|e| e.guard.clone())
                    .unwrap_or_else(|| Guard {
                        mode: Mode::Unguarded,
                        why: "its network is not in Docker's answer".to_owned(),
                    }),
            }
        })
        .collect::<Vec<ContainerNetworkDetail>>();
    let weakest = endpoints
        .iter()
        .max_by_key(|e| badness(e.guard.mode))
        .map(|e| Guard {
            mode: e.guard.mode,
            why: format!("on {}: {}", e.network, e.guard.why),
        });
    let guard = weakest.unwrap_or_else(|| {
        let driver = match endpoints_of.network_mode.as_str() {
            "host" => "host",
            _ => "null",
        };
        Guard {
            mode: Mode::Unguarded,
            why: guard::driver_hook(driver)
                .err()
                .unwrap_or_else(|| "no endpoint".to_owned()),
        }
    });
    Ok(ContainerReport {
        container: container.name.clone(),
        container_id: container.id.clone(),
        service: container.service.clone(),
        compose_project: container.compose_project.clone(),
        pid: container.pid,
        network_mode: container.network_mode.clone(),
        shares_network_of: owner.map(|o| o.name.clone()),
        guard,
        endpoints,
        published: owner
            .unwrap_or(container)
            .published
            .iter()
            .map(|p| PublishedReport {
                published: p.to_string(),
                container_port: p.container_side(),
            })
            .collect(),
    })
}

/// Orders modes from best to worst guarded.
fn badness(mode: Mode) -> u8 {
    match mode {
        Mode::Enforced => 0,
        Mode::Audited => 1,
        Mode::Observed => 2,
        Mode::Unguarded => 3,
    }
}

/// The table form: a few facts, then one line per endpoint.
pub fn render_table(report: &ContainerReport) -> String {
    let mut facts = vec![
        vec!["CONTAINER".to_owned(), report.container.clone()],
        vec!["ID".to_owned(), report.container_id.clone()],
    ];
    if let Some(service) = &report.service {
        let project = report
            .compose_project
            .as_ref()
            .map(|p| format!(" (compose project {p})"))
            .unwrap_or_default();
        facts.push(vec!["SERVICE".to_owned(), format!("{service}{project}")]);
    }
    facts.push(vec![
        "PID".to_owned(),
        report.pid.map(|p| p.to_string()).unwrap_or_default(),
    ]);
    let mode = match (&report.shares_network_of, report.network_mode.as_str()) {
        (Some(owner), _) => {
            format!("container:{owner} (shares its network namespace and endpoints)")
        }
        (None, "host") => "host (the host's network namespace: no endpoint)".to_owned(),
        (None, "none") => "none (no network)".to_owned(),
        (None, mode) => mode.to_owned(),
    };
    facts.push(vec!["NETWORK MODE".to_owned(), mode]);
    if !report.published.is_empty() {
        let ports: Vec<String> = report
            .published
            .iter()
            .map(|p| format!("{} -> {}", p.published, p.container_port))
            .collect();
        facts.push(vec!["PUBLISHED".to_owned(), ports.join(", ")]);
    }
    facts.push(vec![
        "GUARD".to_owned(),
        format!("{}: {}", report.guard.mode, report.guard.why),
    ]);
    // The facts are a two-column table without a header line.
    let mut out: String = table(&["", ""], &facts)
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect();
    if report.endpoints.is_empty() {
        return out;
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let rows: Vec<Vec<String>> = report
        .endpoints
        .iter()
        .map(|e| {
            vec![
                e.network.clone(),
                yes_no(e.internal),
                e.ipv4.map(|a| a.to_string()).unwrap_or_default(),
                e.ipv6.map(|a| a.to_string()).unwrap_or_default(),
                e.mac.to_string(),
                e.container_ifname.clone().unwrap_or_default(),
                e.host_ifname
                    .clone()
                    .or_else(|| {
                        let v = e.sandbox_veth.as_ref()?;
                        Some(format!("{} (in sandbox)", v.ifname))
                    })
                    .unwrap_or_default(),
                e.host_ifindex
                    .or(e.sandbox_veth.as_ref().map(|v| v.ifindex))
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
                if e.programs.is_empty() {
                    "none".to_owned()
                } else {
                    e.programs.join(",")
                },
                e.guard.mode.to_string(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &[
            "NETWORK",
            "INTERNAL",
            "IPV4",
            "IPV6",
            "MAC",
            "IFACE",
            "HOST VETH",
            "IFINDEX",
            "PROGRAMS",
            "MODE",
        ],
        &rows,
    ));
    for e in &report.endpoints {
        if e.guard.mode == Mode::Unguarded {
            out.push_str(&format!("{}: unguarded: {}\n", e.network, e.guard.why));
        }
    }
    out
}

/// `netwatch inspect <container> [-o table|json]`.
///
/// # Errors
///
/// When dockerd cannot be reached, or no single running container matches.
pub fn run(
    container: &str,
    output: OutputFormat,
    pin_root: &Path,
    run_dir: &Path,
) -> Result<ExitCode> {
    let snapshot = networks::snapshot()?;
    let agent = AgentView::read(run_dir);
    let report = report(
        &snapshot,
        pin_root,
        &guard::Pins(pin_root),
        &agent,
        container,
    )?;
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Table => print!("{}", render_table(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Show one container's endpoints, veths and attached netwatch programs.
///
/// For each network the container is attached to: its addresses, MAC and
/// aliases, the interface inside the container, the host side of the veth
/// (name and ifindex), which netwatch programs are pinned on it, and its
/// mode (enforced, observed or unguarded, as `netwatch networks` says;
/// GUARD is the weakest of them, or why a container in host or none
/// network mode cannot be guarded). A container started with
/// `--network container:<other>` shows <other>'s endpoints, which it
/// shares.
///
/// Talks to dockerd at DOCKER_HOST (default unix:///var/run/docker.sock);
/// needs root to find host veths.
///
/// Examples:
///   netwatch inspect web
///   netwatch inspect 3f2a1b -o json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct InspectArgs {
    /// A running container: its name, full id or a unique id prefix.
    pub container: String,
    /// Output format.
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
    use std::fs;

    use super::*;
    use crate::guard::tests::FakeKernel;
    use crate::host::interfaces::EndpointError;

    /// Judges with nothing attached and no agent: programs are read from
    /// the pins, guards from this.
    fn report(snapshot: &Snapshot, root: &Path, query: &str) -> Result<ContainerReport> {
        let kernel = FakeKernel::new(&[], &[("nwcap-br0", 5)]);
        super::report(snapshot, root, &kernel, &AgentView::default(), query)
    }

    fn snapshot() -> Snapshot {
        let inventory =
            crate::docker::captured::inventory(&["app", "static", "sidecar", "hostnet"]);
        let mut snapshot = Snapshot::unresolved(inventory, EndpointError::NotRoot);
        snapshot.set_veth_for_test("nwcap-app", "nwcap-back", "vethaaa", 13);
        snapshot.set_veth_for_test("nwcap-app", "nwcap-front", "vethbbb", 11);
        snapshot
    }

    /// A stand-in pin root with `from_container` pinned on ifindex 13.
    fn pins() -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("netwatch-inspect-{}", std::process::id()));
        fs::create_dir_all(pins::links_dir(&root)).unwrap();
        fs::write(pins::link_path(&root, Hook::FromContainer, 13), b"").unwrap();
        root
    }

    #[test]
    fn multi_homed_container() {
        let root = pins();
        let report = report(&snapshot(), &root, "d17ecc").unwrap();
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(report.container, "nwcap-app");
        assert_eq!(report.service.as_deref(), Some("app"));
        assert_eq!(report.shares_network_of, None);
        let json = serde_json::to_value(&report.endpoints).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {
                    "network": "nwcap-back",
                    "network_id": "3bc36a716f17e68d3e4a69b2fb9230c0eaecb8dcc796f6b967f0dc4e4a67c363",
                    "internal": true,
                    "ipv4": "172.29.0.10",
                    "ipv6": "fd00:29::2",
                    "mac": "02:42:ac:1d:00:0a",
                    "aliases": ["db-client", "d17ecc39df5d"],
                    "container_ifname": "eth0",
                    "host_ifname": "vethaaa",
                    "host_ifindex": 13,
                    "sandbox_veth": null,
                    "programs": ["from_container"],
                    "attached": false,
                    "error": null,
                    "mode": "unguarded",
                    "why": "veth vethaaa not attached: no netwatch agent is running"
                },
                {
                    "network": "nwcap-front",
                    "network_id": "5ff26285eaf7b6697fd9fa1d771048a8e26b79919032d9d7fdee478de2f989ad",
                    "internal": false,
                    "ipv4": "172.18.0.2",
                    "ipv6": null,
                    "mac": "02:42:ac:12:00:02",
                    "aliases": ["app", "d17ecc39df5d"],
                    "container_ifname": "eth0",
                    "host_ifname": "vethbbb",
                    "host_ifindex": 11,
                    "sandbox_veth": null,
                    "programs": [],
                    "attached": false,
                    "error": null,
                    "mode": "unguarded",
                    "why": "veth vethbbb not attached: no netwatch agent is running"
                }
            ])
        );
    }

    #[test]
    fn unresolved_veths_say_why() {
        let report = report(&snapshot(), Path::new("/nonexistent"), "nwcap-static").unwrap();
        assert_eq!(report.endpoints.len(), 1);
        assert_eq!(report.endpoints[0].host_ifindex, None);
        assert_eq!(
            report.endpoints[0].error.as_deref(),
            Some(
                "host veths are only looked up as root (entering a container's network namespace)"
            )
        );
        assert!(render_table(&report).ends_with(
            "nwcap-back: unguarded: host veth not found: host veths are only looked up as root \
             (entering a container's network namespace)\n"
        ));
        assert_eq!(report.guard.mode, Mode::Unguarded);
        assert!(
            report
                .guard
                .why
                .starts_with("on nwcap-back: host veth not found: ")
        );
    }

    #[test]
    fn sidecar_shows_its_owners_endpoints() {
        let report = report(&snapshot(), Path::new("/nonexistent"), "nwcap-sidecar").unwrap();
        assert_eq!(report.shares_network_of.as_deref(), Some("nwcap-app"));
        let networks: Vec<&str> = report
            .endpoints
            .iter()
            .map(|e| e.network.as_str())
            .collect();
        assert_eq!(networks, ["nwcap-back", "nwcap-front"]);
        assert_eq!(report.endpoints[1].host_ifname.as_deref(), Some("vethbbb"));
        assert!(render_table(&report).contains(
            "NETWORK MODE   container:nwcap-app (shares its network namespace and endpoints)\n"
        ));
    }

    #[test]
    fn host_network_has_no_endpoint() {
        let report = report(&snapshot(), Path::new("/nonexistent"), "nwcap-hostnet").unwrap();
        assert!(report.endpoints.is_empty());
        assert_eq!(
            render_table(&report),
            "\
CONTAINER      nwcap-hostnet
ID             7dd5d6e1122d77cae46b752503aa1def75bba7c7aeac97ba429fa34acb01b8b1
PID            23110
NETWORK MODE   host (the host's network namespace: no endpoint)
GUARD          unguarded: host networking: the container shares the host's network stack; there is no interface of its own to attach to
"
        );
    }

    #[test]
    fn unknown_container_is_one_line() {
        let error = report(&snapshot(), Path::new("/nonexistent"), "web").unwrap_err();
        assert_eq!(
            error.to_string(),
            "no running container named \"web\" (or with an id starting with it); `docker ps` lists them"
        );
    }
}
