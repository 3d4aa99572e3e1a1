//! A snapshot: the inventory plus the interface netwatch attaches to for
//! every endpoint (a bridge endpoint's host veth, a macvlan endpoint's child,
//! an overlay endpoint's veth in the sandbox), resolved through each
//! container's network namespace.

use std::collections::HashMap;
use std::sync::Arc;

use log::warn;

use super::{Client, Container, DockerError, Endpoint, Inventory};
use crate::host::interfaces::{self, EndpointError, HostVeth, MacAddr, MacvlanChild, SandboxVeth};

/// By (container id, network id).
type ByEndpoint<T> = HashMap<(String, String), Result<T, Arc<EndpointError>>>;

/// [`Inventory`] plus each bridge endpoint's host veth, each macvlan
/// endpoint's child interface and each overlay endpoint's sandbox veth.
#[derive(Debug)]
pub struct Snapshot {
    pub inventory: Inventory,
    veths: ByEndpoint<HostVeth>,
    macvlan: ByEndpoint<MacvlanChild>,
    overlay: ByEndpoint<SandboxVeth>,
}

impl Snapshot {
    /// Takes the inventory from dockerd and, as root, resolves every
    /// endpoint's veth ([`Snapshot::resolve`]); otherwise logs one warning
    /// and leaves the veths unknown ([`EndpointError::NotRoot`]).
    ///
    /// # Errors
    ///
    /// [`DockerError`] when dockerd cannot be reached or refuses a request;
    /// a veth that cannot be resolved is not an error here (see
    /// [`Snapshot::veth`]).
    pub async fn take(client: &Client) -> Result<Snapshot, DockerError> {
        let inventory = Inventory::load(client).await?;
        if !crate::host::is_root() {
            warn!(
                "not root: host veths are not looked up (that needs entering containers' network namespaces)"
            );
            return Ok(Snapshot::unresolved(inventory, EndpointError::NotRoot));
        }
        Ok(Snapshot::resolve(inventory))
    }

    /// Resolves the host veth of every endpoint of `inventory`: one short
    /// visit to each container's network namespace (see [`crate::host::interfaces`]).
    /// Blocking; needs root.
    pub fn resolve(inventory: Inventory) -> Snapshot {
        let mut veths = resolve_endpoints(&inventory, "bridge", "host veth", |pid, mine| {
            interfaces::host_veths(pid, &macs(mine))
        });
        // Only bridge endpoints have a host veth; the others are answered
        // without visiting the container.
        for (key, endpoint) in endpoints(&inventory).filter(|(_, e)| e.driver != "bridge") {
            let error = EndpointError::NoHostVeth {
                driver: endpoint.driver.clone(),
            };
            veths.insert(key, Err(Arc::new(error)));
        }
        let macvlan = resolve_endpoints(&inventory, "macvlan", "macvlan interface", |pid, mine| {
            interfaces::macvlan_children(pid, &macs(mine))
        });
        let overlay = resolve_endpoints(&inventory, "overlay", "sandbox veth", |pid, mine| {
            let wanted: Vec<(MacAddr, &str, &str)> = mine
                .iter()
                .map(|e| (e.mac, e.network_id.as_str(), e.network.as_str()))
                .collect();
            interfaces::overlay_veths(pid, &wanted)
        });
        Snapshot {
            inventory,
            veths,
            macvlan,
            overlay,
        }
    }

    /// A snapshot whose veths were not looked up (netwatch is not root):
    /// every [`Snapshot::veth`] answers `err`.
    pub fn unresolved(inventory: Inventory, err: EndpointError) -> Snapshot {
        let err = Arc::new(err);
        let veths = endpoints(&inventory)
            .map(|(key, _)| (key, Err(Arc::clone(&err))))
            .collect();
        Snapshot {
            inventory,
            veths,
            macvlan: HashMap::new(),
            overlay: HashMap::new(),
        }
    }

    /// The macvlan child of `container`'s `endpoint`, or why it is unknown.
    pub fn macvlan_child(
        &self,
        container: &Container,
        endpoint: &Endpoint,
    ) -> Result<&MacvlanChild, &EndpointError> {
        lookup(&self.macvlan, container, endpoint)
    }

    /// The sandbox veth of `container`'s overlay `endpoint`, or why it is
    /// unknown.
    pub fn sandbox_veth(
        &self,
        container: &Container,
        endpoint: &Endpoint,
    ) -> Result<&SandboxVeth, &EndpointError> {
        lookup(&self.overlay, container, endpoint)
    }

    /// The host veth of `container`'s `endpoint`, or why it is unknown.
    pub fn veth(
        &self,
        container: &Container,
        endpoint: &Endpoint,
    ) -> Result<&HostVeth, &EndpointError> {
        lookup(&self.veths, container, endpoint)
    }

    /// A snapshot whose veths are made up, not looked up: the n-th endpoint
    /// gets `nwfake<n>` with ifindex 1,000,000 + n. For fuzzing and tests
    /// whose inventory has no containers behind it.
    pub fn with_made_up_veths(inventory: Inventory) -> Snapshot {
        let mut bridged = 0u32..;
        let veths = endpoints(&inventory)
            .map(|(key, endpoint)| {
                if endpoint.driver != "bridge" {
                    let error = EndpointError::NoHostVeth {
                        driver: endpoint.driver.clone(),
                    };
                    return (key, Err(Arc::new(error)));
                }
                let n = bridged.next().unwrap_or(0);
                let veth = HostVeth {
                    ifname: format!("nwfake{n}"),
                    ifindex: 1_000_000 + n,
                    container_ifname: "eth0".to_owned(),
                    container_ifindex: 2,
                };
                (key, Ok(veth))
            })
            .collect();
        Snapshot {
            inventory,
            veths,
            macvlan: HashMap::new(),
            overlay: HashMap::new(),
        }
    }

    /// The key of `container`'s endpoint on `network` (names).
    #[cfg(test)]
    fn key_for_test(&self, container: &str, network: &str) -> (String, String) {
        let container = self.inventory.find_container(container).unwrap();
        let endpoint = container
            .endpoints
            .iter()
            .find(|e| e.network == network)
            .unwrap();
        (container.id.clone(), endpoint.network_id.clone())
    }

    /// Sets the macvlan child of `container`'s endpoint on `network` (names).
    #[cfg(test)]
    pub(crate) fn set_macvlan_child_for_test(
        &mut self,
        container: &str,
        network: &str,
        child: MacvlanChild,
    ) {
        let key = self.key_for_test(container, network);
        self.macvlan.insert(key, Ok(child));
    }

    /// Sets the sandbox veth of `container`'s endpoint on `network` (names).
    #[cfg(test)]
    pub(crate) fn set_sandbox_veth_for_test(
        &mut self,
        container: &str,
        network: &str,
        veth: SandboxVeth,
    ) {
        let key = self.key_for_test(container, network);
        self.overlay.insert(key, Ok(veth));
    }

    /// Replaces the veth of `container`'s endpoint on `network` (names).
    #[cfg(test)]
    pub(crate) fn set_veth_for_test(
        &mut self,
        container: &str,
        network: &str,
        ifname: &str,
        ifindex: u32,
    ) {
        let key = self.key_for_test(container, network);
        let veth = HostVeth {
            ifname: ifname.to_owned(),
            ifindex,
            container_ifname: "eth0".to_owned(),
            container_ifindex: 2,
        };
        self.veths.insert(key, Ok(veth));
    }
}

/// The answer `found` holds for `container`'s `endpoint`.
fn lookup<'a, T>(
    found: &'a ByEndpoint<T>,
    container: &Container,
    endpoint: &Endpoint,
) -> Result<&'a T, &'a EndpointError> {
    match found.get(&(container.id.clone(), endpoint.network_id.clone())) {
        Some(Ok(value)) => Ok(value),
        Some(Err(error)) => Err(error),
        None => Err(&EndpointError::NotResolved),
    }
}

/// The MACs of `endpoints`, in order.
fn macs(endpoints: &[&Endpoint]) -> Vec<MacAddr> {
    endpoints.iter().map(|e| e.mac).collect()
}

/// Looks up, with `lookup` (one short visit to each container's namespace),
/// the interface of every endpoint of a `driver` network; `what` names it in
/// the warning logged for each one not found.
fn resolve_endpoints<T>(
    inventory: &Inventory,
    driver: &str,
    what: &str,
    lookup: impl Fn(u32, &[&Endpoint]) -> Result<Vec<Result<T, EndpointError>>, EndpointError>,
) -> ByEndpoint<T> {
    let mut found = HashMap::new();
    for container in &inventory.containers {
        let mine: Vec<&Endpoint> = container
            .endpoints
            .iter()
            .filter(|e| e.driver == driver)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let results = match container.pid {
            Some(pid) => lookup(pid, &mine),
            None => Err(EndpointError::NoPid {
                container: container.name.clone(),
            }),
        };
        let results: Vec<Result<T, Arc<EndpointError>>> = match results {
            Ok(results) => results.into_iter().map(|r| r.map_err(Arc::new)).collect(),
            Err(error) => {
                let error = Arc::new(error);
                mine.iter().map(|_| Err(Arc::clone(&error))).collect()
            }
        };
        for (endpoint, result) in mine.into_iter().zip(results) {
            if let Err(error) = &result {
                warn!(
                    "container {} on network {}: {what} not found: {error}",
                    container.name, endpoint.network
                );
            }
            found.insert((container.id.clone(), endpoint.network_id.clone()), result);
        }
    }
    found
}

/// Every endpoint with its key: (container id, network id).
fn endpoints(inventory: &Inventory) -> impl Iterator<Item = ((String, String), &Endpoint)> + '_ {
    inventory.containers.iter().flat_map(|c| {
        c.endpoints
            .iter()
            .map(move |e| ((c.id.clone(), e.network_id.clone()), e))
    })
}
