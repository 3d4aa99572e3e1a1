//! A snapshot: the inventory plus the host veth of every endpoint, resolved
//! through each container's network namespace.

use std::collections::HashMap;
use std::sync::Arc;

use log::warn;

use super::{Client, Container, DockerError, Endpoint, Inventory};
use crate::endpoint::{self, EndpointError, HostVeth};

/// [`Inventory`] plus each endpoint's host veth.
#[derive(Debug)]
pub struct Snapshot {
    pub inventory: Inventory,
    /// By (container id, network id).
    veths: HashMap<(String, String), Result<HostVeth, Arc<EndpointError>>>,
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
    /// visit to each container's network namespace (see [`crate::endpoint`]).
    /// Blocking; needs root.
    pub fn resolve(inventory: Inventory) -> Snapshot {
        let mut veths = HashMap::new();
        for container in &inventory.containers {
            // Only bridge endpoints have a host veth; the others are
            // answered without visiting the container.
            let (bridged, others): (Vec<&Endpoint>, Vec<&Endpoint>) = container
                .endpoints
                .iter()
                .partition(|e| e.driver == "bridge");
            for endpoint in others {
                let error = EndpointError::NoHostVeth {
                    driver: endpoint.driver.clone(),
                };
                veths.insert(
                    (container.id.clone(), endpoint.network_id.clone()),
                    Err(Arc::new(error)),
                );
            }
            if bridged.is_empty() {
                continue;
            }
            let macs: Vec<_> = bridged.iter().map(|e| e.mac).collect();
            let results = match container.pid {
                Some(pid) => endpoint::host_veths(pid, &macs),
                None => Err(EndpointError::NoPid {
                    container: container.name.clone(),
                }),
            };
            let results: Vec<Result<HostVeth, Arc<EndpointError>>> = match results {
                Ok(results) => results.into_iter().map(|r| r.map_err(Arc::new)).collect(),
                Err(error) => {
                    let error = Arc::new(error);
                    macs.iter().map(|_| Err(Arc::clone(&error))).collect()
                }
            };
            for (endpoint, result) in bridged.into_iter().zip(results) {
                if let Err(error) = &result {
                    warn!(
                        "container {} on network {}: host veth not found: {error}",
                        container.name, endpoint.network
                    );
                }
                veths.insert((container.id.clone(), endpoint.network_id.clone()), result);
            }
        }
        Snapshot { inventory, veths }
    }

    /// A snapshot whose veths were not looked up (netwatch is not root):
    /// every [`Snapshot::veth`] answers `err`.
    pub fn unresolved(inventory: Inventory, err: EndpointError) -> Snapshot {
        let err = Arc::new(err);
        let veths = endpoints(&inventory)
            .map(|(key, _)| (key, Err(Arc::clone(&err))))
            .collect();
        Snapshot { inventory, veths }
    }

    /// The host veth of `container`'s `endpoint`, or why it is unknown.
    pub fn veth(
        &self,
        container: &Container,
        endpoint: &Endpoint,
    ) -> Result<&HostVeth, &EndpointError> {
        match self
            .veths
            .get(&(container.id.clone(), endpoint.network_id.clone()))
        {
            Some(Ok(veth)) => Ok(veth),
            Some(Err(error)) => Err(error),
            None => Err(&EndpointError::NotResolved),
        }
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
        Snapshot { inventory, veths }
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
        let container = self.inventory.find_container(container).unwrap();
        let endpoint = container
            .endpoints
            .iter()
            .find(|e| e.network == network)
            .unwrap();
        let veth = HostVeth {
            ifname: ifname.to_owned(),
            ifindex,
            container_ifname: "eth0".to_owned(),
            container_ifindex: 2,
        };
        self.veths.insert(
            (container.id.clone(), endpoint.network_id.clone()),
            Ok(veth),
        );
    }
}

/// Every endpoint with its key: (container id, network id).
fn endpoints(inventory: &Inventory) -> impl Iterator<Item = ((String, String), &Endpoint)> + '_ {
    inventory.containers.iter().flat_map(|c| {
        c.endpoints
            .iter()
            .map(move |e| ((c.id.clone(), e.network_id.clone()), e))
    })
}
