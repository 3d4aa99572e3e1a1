//! `netwatch networks`: Docker's networks, their endpoints and host veths,
//! and whether netwatch enforces them.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use serde::Serialize;

use super::{OutputFormat, table};
use crate::datapath::pins;
use crate::docker::{Client, Network, Snapshot};
use crate::endpoint::MacAddr;

/// One network, as `netwatch networks -o json` prints it (the shape is
/// documented in the README and stable).
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
    /// The network has endpoints and both veth programs are pinned on
    /// every one of them.
    pub enforced: bool,
    /// Sorted by container name.
    pub endpoints: Vec<EndpointReport>,
}

/// One container's endpoint on a network.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EndpointReport {
    pub container: String,
    pub container_id: String,
    /// The compose service, or `null`.
    pub service: Option<String>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub mac: MacAddr,
    /// The host end of the endpoint's veth; `null` when it could not be
    /// resolved (a warning says why).
    pub host_ifname: Option<String>,
    pub host_ifindex: Option<u32>,
    /// Both netwatch veth programs are pinned on `host_ifindex`.
    pub attached: bool,
}

/// Builds the report of `snapshot`'s networks — all of them, or those named
/// in `only` (names or ids) — reading attachments from the bpffs pins under
/// `pins_root` (normally [`pins::root`]).
///
/// # Errors
///
/// When a name in `only` is no network's.
pub fn report(
    snapshot: &Snapshot,
    pins_root: &Path,
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
    Ok(inventory
        .networks
        .iter()
        .filter(|network| selected(network))
        .map(|network| {
            let endpoints: Vec<EndpointReport> = inventory
                .endpoints_on(&network.id)
                .map(|(container, endpoint)| {
                    let veth = snapshot.veth(container, endpoint).ok();
                    EndpointReport {
                        container: container.name.clone(),
                        container_id: container.id.clone(),
                        service: container.service.clone(),
                        ipv4: endpoint.ipv4,
                        ipv6: endpoint.ipv6,
                        mac: endpoint.mac,
                        host_ifname: veth.map(|v| v.ifname.clone()),
                        host_ifindex: veth.map(|v| v.ifindex),
                        attached: veth.is_some_and(|v| pins::veth_attached(pins_root, v.ifindex)),
                    }
                })
                .collect();
            NetworkReport {
                name: network.name.clone(),
                id: network.id.clone(),
                driver: network.driver.clone(),
                internal: network.internal,
                subnets: network.subnets.iter().map(|s| s.cidr.to_string()).collect(),
                bridge: network.bridge.clone(),
                enforced: !endpoints.is_empty() && endpoints.iter().all(|e| e.attached),
                endpoints,
            }
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

/// The two tables of `netwatch networks`: networks, then endpoints.
pub fn render_table(reports: &[NetworkReport]) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let networks: Vec<Vec<String>> = reports
        .iter()
        .map(|n| {
            let attached = n.endpoints.iter().filter(|e| e.attached).count();
            let enforced = match (n.endpoints.len(), attached) {
                (0, _) => String::new(),
                (_, 0) => "no".to_owned(),
                (all, some) if all == some => "yes".to_owned(),
                (all, some) => format!("partly ({some}/{all})"),
            };
            vec![
                n.name.clone(),
                n.driver.clone(),
                yes_no(n.internal),
                n.subnets.join(","),
                n.bridge.clone().unwrap_or_default(),
                enforced,
                n.endpoints.len().to_string(),
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
            "ENFORCED",
            "ENDPOINTS",
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
                    e.mac.to_string(),
                    e.host_ifname.clone().unwrap_or_default(),
                    e.host_ifindex.map(|i| i.to_string()).unwrap_or_default(),
                    yes_no(e.attached),
                ]
            })
        })
        .collect();
    if !endpoints.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &[
                "CONTAINER",
                "SERVICE",
                "NETWORK",
                "IPV4",
                "IPV6",
                "MAC",
                "HOST VETH",
                "IFINDEX",
                "ATTACHED",
            ],
            &endpoints,
        ));
    }
    out
}

/// `netwatch networks [NETWORK…] [-o table|json]`.
///
/// # Errors
///
/// When dockerd cannot be reached or a named network does not exist.
pub fn run(networks: &[String], output: OutputFormat) -> Result<ExitCode> {
    let snapshot = snapshot()?;
    let reports = report(&snapshot, &pins::root(), networks)?;
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        OutputFormat::Table => print!("{}", render_table(&reports)),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::datapath::Hook;
    use crate::endpoint::EndpointError;

    /// The captured topology (see `docker/testdata`), with veths made up.
    fn snapshot() -> Snapshot {
        let inventory = crate::docker::captured::inventory(&["app", "static", "sidecar"]);
        let mut snapshot = Snapshot::unresolved(inventory, EndpointError::NotRoot);
        snapshot.set_veth_for_test("nwcap-app", "nwcap-back", "vethaaa", 13);
        snapshot.set_veth_for_test("nwcap-app", "nwcap-front", "vethbbb", 11);
        snapshot.set_veth_for_test("nwcap-static", "nwcap-back", "vethccc", 15);
        snapshot
    }

    /// A directory standing in for netwatch's bpffs root, removed on drop.
    struct PinRoot(std::path::PathBuf);

    impl PinRoot {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for PinRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn pin_root(attached: &[u32]) -> PinRoot {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = PinRoot(std::env::temp_dir().join(format!(
            "netwatch-pins-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )));
        fs::create_dir_all(pins::links_dir(dir.path())).unwrap();
        for &ifindex in attached {
            for hook in [Hook::FromContainer, Hook::ToContainer] {
                fs::write(pins::link_path(dir.path(), hook, ifindex), b"").unwrap();
            }
        }
        dir
    }

    #[test]
    fn json_has_the_documented_shape() {
        let pins = pin_root(&[]);
        let reports = report(&snapshot(), pins.path(), &["nwcap-back".into()]).unwrap();
        let json = serde_json::to_value(&reports).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "name": "nwcap-back",
                "id": "3bc36a716f17e68d3e4a69b2fb9230c0eaecb8dcc796f6b967f0dc4e4a67c363",
                "driver": "bridge",
                "internal": true,
                "subnets": ["172.29.0.0/24", "fd00:29::/64"],
                "bridge": "nwcap-br0",
                "enforced": false,
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
                        "attached": false
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
                        "attached": false
                    }
                ]
            }])
        );
    }

    #[test]
    fn enforced_needs_both_programs_on_every_endpoint() {
        let snapshot = snapshot();
        let enforced = |attached: &[u32]| -> Vec<(String, bool)> {
            let pins = pin_root(attached);
            report(&snapshot, pins.path(), &[])
                .unwrap()
                .into_iter()
                .map(|n| (n.name, n.enforced))
                .collect()
        };
        let names_enforced = |names: &[&str]| -> Vec<(String, bool)> {
            ["bridge", "host", "none", "nwcap-back", "nwcap-front"]
                .iter()
                .map(|n| (n.to_string(), names.contains(n)))
                .collect()
        };
        assert_eq!(enforced(&[]), names_enforced(&[]));
        assert_eq!(
            enforced(&[13]),
            names_enforced(&[]),
            "one of two endpoints is not enough"
        );
        assert_eq!(enforced(&[13, 15]), names_enforced(&["nwcap-back"]));
        assert_eq!(
            enforced(&[11, 13, 15]),
            names_enforced(&["nwcap-back", "nwcap-front"])
        );
        // One program of two is not attached.
        let pins = pin_root(&[11]);
        fs::remove_file(pins::link_path(pins.path(), Hook::ToContainer, 11)).unwrap();
        let front = report(&snapshot, pins.path(), &["nwcap-front".into()]).unwrap();
        assert!(!front[0].enforced && !front[0].endpoints[0].attached);
    }

    #[test]
    fn unknown_network_is_one_line() {
        let pins = pin_root(&[]);
        let error = report(&snapshot(), pins.path(), &["nope".into()]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no network named \"nope\"; `docker network ls` lists them"
        );
    }

    #[test]
    fn table_is_aligned() {
        let pins = pin_root(&[13]);
        let reports = report(
            &snapshot(),
            pins.path(),
            &["nwcap-back".into(), "host".into()],
        )
        .unwrap();
        assert_eq!(
            render_table(&reports),
            "\
NETWORK      DRIVER   INTERNAL   SUBNETS                      BRIDGE      ENFORCED       ENDPOINTS
host         host     no         -                            -           -              0
nwcap-back   bridge   yes        172.29.0.0/24,fd00:29::/64   nwcap-br0   partly (1/2)   2

CONTAINER      SERVICE   NETWORK      IPV4          IPV6         MAC                 HOST VETH   IFINDEX   ATTACHED
nwcap-app      app       nwcap-back   172.29.0.10   fd00:29::2   02:42:ac:1d:00:0a   vethaaa     13        yes
nwcap-static   -         nwcap-back   172.29.0.20   fd00:29::3   02:42:ac:1d:00:14   vethccc     15        no
"
        );
    }
}
