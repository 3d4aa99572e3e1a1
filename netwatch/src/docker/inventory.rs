//! The inventory: Docker's networks, its running containers, and each
//! container's endpoint on each network, typed.
//!
//! [`Inventory::load`] asks dockerd (`GET /networks`, `GET /containers/json`,
//! then `GET /containers/{id}/json` for each, and `GET
//! /networks/docker_gwbridge` when that network exists); [`Inventory::from_api`]
//! and [`Inventory::add_gateway_legs`] turn those answers into the types
//! below and are what the unit tests feed with answers captured from a real
//! dockerd (`testdata/`).
//!
//! Odd answers never stop the inventory: an object without an id, an address
//! that does not parse, an endpoint of a network that is gone, a running
//! container without a pid are skipped (or kept without that field) with a
//! logged warning. Containers that have no endpoint of their own — `host`
//! and `none` network modes, and `--network container:<other>`, which shares
//! `<other>`'s endpoints — are kept with no endpoint (their `network_mode`
//! says which). Endpoints of every driver are kept, with the driver: which
//! of them netwatch can guard is [`crate::guard`]'s to say, not the
//! inventory's.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bollard::models::{
    ContainerInspectResponse, EndpointSettings, Network as ApiNetwork, NetworkInspect,
};
use log::{debug, warn};

use super::{Client, DockerError};
use crate::host::interfaces::MacAddr;
use crate::policy::Cidr;

/// Labels as Docker stores them, sorted by key.
pub type Labels = BTreeMap<String, String>;

/// The compose project a network or container belongs to.
pub const COMPOSE_PROJECT_LABEL: &str = "com.docker.compose.project";
/// The key in the compose file of a network compose created (Docker names
/// it `<project>_<key>`).
pub const COMPOSE_NETWORK_LABEL: &str = "com.docker.compose.network";
/// The compose service a container runs.
pub const COMPOSE_SERVICE_LABEL: &str = "com.docker.compose.service";
/// The swarm service a container is a task of (Docker puts it on every
/// task's container, named `<service>.<slot>.<task id>`).
pub const SWARM_SERVICE_LABEL: &str = "com.docker.swarm.service.name";
/// The bridge driver option that names a network's bridge device.
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
/// The macvlan and ipvlan driver option that names the parent interface.
pub const PARENT_OPTION: &str = "parent";
/// The macvlan driver option that sets the macvlan mode.
pub const MACVLAN_MODE_OPTION: &str = "macvlan_mode";
/// The bridge network through which containers of non-internal overlay
/// networks reach the host and the outside: each gets a second leg on it
/// (`eth1`) that only `GET /networks/docker_gwbridge` lists, never the
/// container's own `NetworkSettings`.
pub const GATEWAY_BRIDGE: &str = "docker_gwbridge";

/// Everything netwatch needs to know of Docker at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inventory {
    /// Every network, sorted by name.
    pub networks: Vec<Network>,
    /// Every running container, sorted by name.
    pub containers: Vec<Container>,
}

/// A Docker network.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    pub id: String,
    pub name: String,
    /// `bridge`, `host`, `null`, `macvlan`, `overlay`, …
    pub driver: String,
    /// `local`, or `swarm` for networks the swarm manages (overlays,
    /// `ingress`): their ids are 25-character swarm ids, not 64 hex
    /// digits, and Docker tells of them in two kinds of events, the
    /// swarm's and this node's. `None` when dockerd did not say.
    pub scope: Option<String>,
    /// `docker network create --internal`: Docker promises no egress.
    pub internal: bool,
    /// `EnableIPv6`.
    pub ipv6: bool,
    /// The IPAM subnets, IPv4 first, each with its gateway when known.
    pub subnets: Vec<Subnet>,
    pub labels: Labels,
    /// `com.docker.compose.project`, when compose created the network.
    pub compose_project: Option<String>,
    /// The bridge device, for `bridge` networks only: the
    /// `com.docker.network.bridge.name` option, else `docker0` for the
    /// default `bridge` network, else `br-<first 12 characters of the id>`.
    pub bridge: Option<String>,
    /// For `macvlan` and `ipvlan` networks: the host interface their
    /// containers' interfaces hang off (the `parent` driver option, as
    /// given: it may name an 802.1q sub-interface such as `eth0.10` that
    /// Docker creates). All containers of the network share it, and it is
    /// the only host-side device of their traffic. `None` for other
    /// drivers, and when no parent was given (Docker then makes a dummy
    /// link of its own, `dm-<12 characters of the id>`, as the parent).
    pub parent: Option<String>,
    /// For `macvlan` networks: the `macvlan_mode` driver option
    /// (`private`, `vepa`, `passthru`, or `bridge` when given explicitly).
    /// `None` means Docker's default, `bridge` (siblings on the same
    /// parent reach each other inside the host, without leaving through
    /// the parent): Docker does not write the default mode into the
    /// options.
    pub macvlan_mode: Option<String>,
}

/// One IPAM subnet of a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub cidr: Cidr,
    /// The gateway address (the bridge's, on the host). Docker's default
    /// `bridge` network does not report it in its IPAM config; it is then
    /// taken from an endpoint's `Gateway`, if any container is attached.
    pub gateway: Option<IpAddr>,
}

/// A running container.
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// The service it runs, as a user names it: its compose service
    /// (`com.docker.compose.service`), or else the swarm service whose
    /// task it is (see [`service_of`]).
    pub service: Option<String>,
    /// `com.docker.swarm.service.name`: the swarm service whose task this
    /// container is; tells a swarm `service` from a compose one.
    pub swarm_service: Option<String>,
    /// `com.docker.compose.project`.
    pub compose_project: Option<String>,
    pub labels: Labels,
    /// The container's init process on the host (`State.Pid`); its network
    /// namespace is the container's. `None` when Docker reports none.
    pub pid: Option<u32>,
    /// `HostConfig.NetworkMode`: `default`, `bridge`, a network name, `host`,
    /// `none` or `container:<id>`.
    pub network_mode: String,
    /// The container holds CAP_NET_ADMIN: `HostConfig.Privileged`, or
    /// `HostConfig.CapAdd` naming `NET_ADMIN`, `CAP_NET_ADMIN` or `ALL` (in
    /// any case: Docker accepts both spellings). Such a container on a
    /// macvlan network can create more macvlan ports on the same parent
    /// (new MACs that no per-container hook sees), take another host's MAC
    /// (the LAN router's, and with it its siblings' traffic to the router)
    /// or switch its port's mode, so netwatch cannot guard it there
    /// (measured: docs/drivers.md). `CapDrop` is not
    /// subtracted: a wrong `true` only makes netwatch claim less.
    pub net_admin: bool,
    /// One per network the container is attached to (any driver), sorted
    /// by network name. Empty in `host`, `none` and `container:<id>` modes.
    pub endpoints: Vec<Endpoint>,
    /// Its published ports (`-p`, compose `ports:`) as Docker bound them
    /// (`NetworkSettings.Ports`), sorted. Docker publishes through the
    /// container's endpoint that gives it its default route, so never on
    /// an `internal` network.
    pub published: Vec<PublishedPort>,
}

/// A container port published on the host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublishedPort {
    /// The host address it is bound to (`0.0.0.0`, `::`, or one address).
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

impl PublishedPort {
    /// The container's side, as Docker writes it: `80/tcp`.
    pub fn container_side(&self) -> String {
        format!("{}/{}", self.container_port, self.protocol)
    }
}

impl std::fmt::Display for PublishedPort {
    /// The host's side, as `docker port` prints it: `0.0.0.0:8080/tcp`,
    /// `[::]:8080/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = std::net::SocketAddr::new(self.host_ip, self.host_port);
        write!(f, "{at}/{}", self.protocol)
    }
}

impl Network {
    /// Docker's `docker_gwbridge`: the bridge network that carries the
    /// second leg of every container on a non-internal overlay network.
    pub fn is_gateway_bridge(&self) -> bool {
        self.name == GATEWAY_BRIDGE && self.driver == "bridge"
    }
}

impl Container {
    /// For `--network container:<id>`: the id (or name) of the container
    /// whose network namespace, endpoints and veths this one shares.
    pub fn shares_network_of(&self) -> Option<&str> {
        self.network_mode.strip_prefix("container:")
    }
}

/// A container's attachment to one network.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub network_id: String,
    pub network: String,
    /// The network's driver (`bridge`, `macvlan`, `overlay`, …).
    pub driver: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub mac: MacAddr,
    /// DNS aliases on this network (Docker adds the short container id).
    pub aliases: Vec<String>,
}

impl Inventory {
    /// Reads networks and running containers from dockerd.
    ///
    /// A container that stops between the listing and its inspection is
    /// left out.
    ///
    /// # Errors
    ///
    /// [`DockerError`] when dockerd cannot be reached or refuses a request.
    pub async fn load(client: &Client) -> Result<Inventory, DockerError> {
        let docker = client.docker();
        let networks = docker
            .list_networks(None)
            .await
            .map_err(|e| client.error("GET /networks", e))?;
        let summaries = docker
            .list_containers(None)
            .await
            .map_err(|e| client.error("GET /containers/json", e))?;
        let mut containers = Vec::with_capacity(summaries.len());
        for summary in summaries {
            let Some(id) = summary.id else {
                warn!("dockerd listed a container without an id; skipped");
                continue;
            };
            let answer = docker.inspect_container(&id, None).await;
            let request = format!("GET /containers/{id}/json");
            if let Some(container) = unless_gone(client, &request, answer)? {
                containers.push(container);
            }
        }
        let mut inventory = Inventory::from_api(&networks, &containers);
        // Asked after the containers: a leg of a container that started in
        // between is left for the next inventory, never one of a container
        // the inventory does not have.
        let gateway_bridge = inventory
            .networks
            .iter()
            .find(|n| n.is_gateway_bridge())
            .map(|n| n.id.clone());
        if let Some(id) = gateway_bridge {
            let answer = docker.inspect_network(&id, None).await;
            if let Some(answer) = unless_gone(client, &format!("GET /networks/{id}"), answer)? {
                inventory.add_gateway_legs(&answer);
            }
        }
        Ok(inventory)
    }

    /// Builds the inventory from dockerd's answers to `GET /networks` and
    /// `GET /containers/{id}/json`. Never fails: what cannot be used is
    /// skipped with a logged warning.
    pub fn from_api(networks: &[ApiNetwork], containers: &[ContainerInspectResponse]) -> Inventory {
        let mut networks: Vec<Network> = networks.iter().filter_map(network_from_api).collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        for (network_id, gateway) in containers.iter().flat_map(endpoint_gateways) {
            if let Some(network) = networks.iter_mut().find(|n| n.id == network_id) {
                for subnet in &mut network.subnets {
                    if subnet.gateway.is_none() && subnet.cidr.contains(&gateway) {
                        subnet.gateway = Some(gateway);
                    }
                }
            }
        }
        let mut containers: Vec<Container> = containers
            .iter()
            .filter_map(|c| container_from_api(c, &networks))
            .collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Inventory {
            networks,
            containers,
        }
    }

    /// Adds the legs that `answer` (`GET /networks/docker_gwbridge`) lists
    /// as endpoints of the containers they belong to: Docker keys them by
    /// container id (named `gateway_<sandbox id>`) and lists them nowhere
    /// else. Entries that are no container of the inventory (Docker's own
    /// `ingress-sbox`, a container that stopped meanwhile) are skipped, and
    /// so is a leg whose MAC does not parse (as any endpoint's would be).
    pub fn add_gateway_legs(&mut self, answer: &NetworkInspect) {
        let Some(network) = self
            .networks
            .iter()
            .find(|n| Some(&n.id) == answer.id.as_ref() && n.is_gateway_bridge())
            .cloned()
        else {
            return;
        };
        let Some(legs) = answer.containers.as_ref() else {
            return;
        };
        for (key, leg) in legs {
            let Some(container) = self.containers.iter_mut().find(|c| c.id == *key) else {
                debug!(
                    "{GATEWAY_BRIDGE} lists {key} ({:?}), which is no running container; skipped",
                    leg.name
                );
                continue;
            };
            if container.shares_network_of().is_some()
                || container
                    .endpoints
                    .iter()
                    .any(|e| e.network_id == network.id)
            {
                continue;
            }
            let settings = EndpointSettings {
                network_id: Some(network.id.clone()),
                mac_address: leg.mac_address.clone(),
                ip_address: leg.ipv4_address.as_deref().map(without_prefix),
                global_ipv6_address: leg.ipv6_address.as_deref().map(without_prefix),
                ..EndpointSettings::default()
            };
            let networks = std::slice::from_ref(&network);
            if let Some(endpoint) =
                endpoint_from_api(&container.name, &network.name, &settings, networks)
            {
                container.endpoints.push(endpoint);
                container
                    .endpoints
                    .sort_by(|a, b| a.network.cmp(&b.network));
            }
        }
    }

    /// The endpoint of `container` that Docker publishes its ports through:
    /// libnetwork publishes through a sandbox's gateway endpoint, the first
    /// of its endpoints (by priority, then network name; priorities are
    /// Docker's default here) on a network that is not internal, other than
    /// `docker_gwbridge`; only a bridge network's has port mappings.
    pub fn published_through<'c>(&self, container: &'c Container) -> Option<&'c Endpoint> {
        if container.published.is_empty() {
            return None;
        }
        let endpoint = container.endpoints.iter().find(|e| {
            self.network(&e.network_id)
                .is_some_and(|n| !n.internal && !n.is_gateway_bridge())
        })?;
        (endpoint.driver == "bridge").then_some(endpoint)
    }

    /// The network with this id, or else this name.
    pub fn network(&self, id_or_name: &str) -> Option<&Network> {
        self.networks
            .iter()
            .find(|n| n.id == id_or_name)
            .or_else(|| self.networks.iter().find(|n| n.name == id_or_name))
    }

    /// The endpoints on network `network_id`, with their containers, sorted
    /// by container name.
    pub fn endpoints_on<'a>(
        &'a self,
        network_id: &'a str,
    ) -> impl Iterator<Item = (&'a Container, &'a Endpoint)> + 'a {
        self.containers.iter().flat_map(move |container| {
            container
                .endpoints
                .iter()
                .filter(move |endpoint| endpoint.network_id == network_id)
                .map(move |endpoint| (container, endpoint))
        })
    }

    /// The container a user means by `query`, as `docker` resolves it: an
    /// exact id, then an exact name (with or without the leading `/`), then
    /// a unique id prefix.
    ///
    /// # Errors
    ///
    /// [`ContainerLookupError`] when nothing matches or a prefix is ambiguous.
    pub fn find_container(&self, query: &str) -> Result<&Container, ContainerLookupError> {
        let name = query.strip_prefix('/').unwrap_or(query);
        if let Some(container) = self
            .containers
            .iter()
            .find(|c| c.id == query)
            .or_else(|| self.containers.iter().find(|c| c.name == name))
        {
            return Ok(container);
        }
        let matches: Vec<&Container> = if query.is_empty() {
            Vec::new()
        } else {
            self.containers
                .iter()
                .filter(|c| c.id.starts_with(query))
                .collect()
        };
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(ContainerLookupError::NotFound(query.to_owned())),
            many => Err(ContainerLookupError::Ambiguous {
                query: query.to_owned(),
                count: many.len(),
            }),
        }
    }

    /// The container whose endpoints `container` uses: itself, or for
    /// `--network container:<other>` that other container.
    ///
    /// # Errors
    ///
    /// [`ContainerLookupError`] when the other container is not running.
    pub fn network_owner<'a>(
        &'a self,
        container: &'a Container,
    ) -> Result<&'a Container, ContainerLookupError> {
        match container.shares_network_of() {
            Some(owner) => self.find_container(owner),
            None => Ok(container),
        }
    }
}

/// dockerd's answer to `request`, or `None` when what it asked for went
/// away meanwhile (a 404: the inventory is a moment's, and the next one
/// will not have it).
///
/// # Errors
/// Any other failure, as a [`DockerError`].
fn unless_gone<T>(
    client: &Client,
    request: &str,
    answer: Result<T, bollard::errors::Error>,
) -> Result<Option<T>, DockerError> {
    match answer {
        Ok(value) => Ok(Some(value)),
        Err(e) => {
            let error = client.error(request, e);
            if error.is_not_found() {
                debug!("{request}: gone while taking the inventory");
                Ok(None)
            } else {
                Err(error)
            }
        }
    }
}

/// Why [`Inventory::find_container`] found no single container.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContainerLookupError {
    #[error(
        "no running container named {0:?} (or with an id starting with it); `docker ps` lists them"
    )]
    NotFound(String),
    #[error(
        "{count} running containers have an id starting with {query:?}; give more of it (`docker ps --no-trunc`)"
    )]
    Ambiguous { query: String, count: usize },
}

/// The service a container with these labels runs: its compose service,
/// or else its swarm service. A swarm task's container name
/// (`<service>.<slot>.<task id>`) changes with every task, so the service
/// is the name that stays.
pub fn service_of(labels: &Labels) -> Option<&str> {
    labels
        .get(COMPOSE_SERVICE_LABEL)
        .or_else(|| labels.get(SWARM_SERVICE_LABEL))
        .map(String::as_str)
}

/// The compose project a container belongs to, if compose made it.
pub fn project_of(labels: &Labels) -> Option<&str> {
    labels.get(COMPOSE_PROJECT_LABEL).map(String::as_str)
}

/// `198.18.80.3/24` → `198.18.80.3`: a network's `Containers` map writes
/// addresses with their prefix length, a container's endpoint without.
fn without_prefix(address: &str) -> String {
    address.split('/').next().unwrap_or(address).to_owned()
}

fn labels_of(labels: Option<&HashMap<String, String>>) -> Labels {
    labels
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn non_empty(text: Option<&String>) -> Option<&str> {
    text.map(String::as_str).filter(|t| !t.is_empty())
}

fn network_from_api(api: &ApiNetwork) -> Option<Network> {
    let Some(id) = non_empty(api.id.as_ref()) else {
        warn!(
            "dockerd listed a network without an id ({:?}); skipped",
            api.name
        );
        return None;
    };
    let name = non_empty(api.name.as_ref()).unwrap_or(id);
    let driver = non_empty(api.driver.as_ref()).unwrap_or_else(|| {
        warn!("network {name} has no driver in dockerd's answer; treated as unknown");
        "unknown"
    });
    let mut subnets = Vec::new();
    for config in api
        .ipam
        .as_ref()
        .and_then(|ipam| ipam.config.as_ref())
        .into_iter()
        .flatten()
    {
        let Some(text) = non_empty(config.subnet.as_ref()) else {
            continue;
        };
        let cidr = match text.parse::<Cidr>() {
            Ok(cidr) => cidr,
            Err(e) => {
                warn!("network {name}: subnet skipped: {e}");
                continue;
            }
        };
        // Some dockerd versions write the gateway with a prefix length.
        let gateway = non_empty(config.gateway.as_ref()).and_then(|g| {
            let address = g.split('/').next().unwrap_or(g);
            address
                .parse::<IpAddr>()
                .map_err(|_| {
                    warn!("network {name}: gateway {g:?} of {cidr} is not an address; ignored")
                })
                .ok()
        });
        subnets.push(Subnet { cidr, gateway });
    }
    subnets.sort_by_key(|s| (!s.cidr.is_ipv4(), s.cidr));
    let labels = labels_of(api.labels.as_ref());
    let option = |key: &str| {
        api.options
            .as_ref()
            .and_then(|o| non_empty(o.get(key)))
            .map(str::to_owned)
    };
    let bridge = (driver == "bridge").then(|| {
        option(BRIDGE_NAME_OPTION).unwrap_or_else(|| {
            if name == "bridge" {
                "docker0".to_owned()
            } else {
                format!("br-{}", id.get(..12).unwrap_or(id))
            }
        })
    });
    let parent = if matches!(driver, "macvlan" | "ipvlan") {
        option(PARENT_OPTION)
    } else {
        None
    };
    let macvlan_mode = if driver == "macvlan" {
        option(MACVLAN_MODE_OPTION)
    } else {
        None
    };
    Some(Network {
        id: id.to_owned(),
        name: name.to_owned(),
        driver: driver.to_owned(),
        scope: non_empty(api.scope.as_ref()).map(str::to_owned),
        internal: api.internal.unwrap_or(false),
        ipv6: api.enable_ipv6.unwrap_or(false),
        subnets,
        compose_project: labels.get(COMPOSE_PROJECT_LABEL).cloned(),
        labels,
        bridge,
        parent,
        macvlan_mode,
    })
}

fn endpoint_settings(
    api: &ContainerInspectResponse,
) -> impl Iterator<Item = (&String, &EndpointSettings)> {
    api.network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .into_iter()
        .flatten()
}

/// The gateways each endpoint reports, by network id.
fn endpoint_gateways(api: &ContainerInspectResponse) -> Vec<(String, IpAddr)> {
    endpoint_settings(api)
        .filter_map(|(_, settings)| Some((non_empty(settings.network_id.as_ref())?, settings)))
        .flat_map(|(network_id, settings)| {
            [settings.gateway.as_ref(), settings.ipv6_gateway.as_ref()]
                .into_iter()
                .filter_map(|g| non_empty(g)?.parse::<IpAddr>().ok())
                .map(move |g| (network_id.to_owned(), g))
        })
        .collect()
}

fn container_from_api(api: &ContainerInspectResponse, networks: &[Network]) -> Option<Container> {
    let Some(id) = non_empty(api.id.as_ref()) else {
        warn!("dockerd described a container without an id; skipped");
        return None;
    };
    let short_id = id.get(..12).unwrap_or(id);
    let name = non_empty(api.name.as_ref())
        .map(|n| n.strip_prefix('/').unwrap_or(n))
        .unwrap_or(short_id)
        .to_owned();
    let labels = labels_of(api.config.as_ref().and_then(|c| c.labels.as_ref()));
    let pid = match api.state.as_ref().and_then(|s| s.pid) {
        Some(pid) if pid > 0 => u32::try_from(pid).ok(),
        _ => {
            warn!("container {name} has no pid in dockerd's answer; its veths cannot be found");
            None
        }
    };
    let host_config = api.host_config.as_ref();
    let network_mode = host_config
        .and_then(|h| non_empty(h.network_mode.as_ref()))
        .unwrap_or("default")
        .to_owned();
    let net_admin = host_config.is_some_and(|h| {
        h.privileged.unwrap_or(false) || h.cap_add.iter().flatten().any(|c| grants_net_admin(c))
    });
    let mut endpoints = Vec::new();
    if let Some(owner) = network_mode.strip_prefix("container:") {
        debug!(
            "container {name} shares the network namespace of container {owner}: no endpoint of its own"
        );
    } else {
        for (network_name, settings) in endpoint_settings(api) {
            if let Some(endpoint) = endpoint_from_api(&name, network_name, settings, networks) {
                endpoints.push(endpoint);
            }
        }
    }
    endpoints.sort_by(|a, b| a.network.cmp(&b.network));
    let published = published_ports(&name, api);
    Some(Container {
        id: id.to_owned(),
        name,
        service: service_of(&labels).map(str::to_owned),
        swarm_service: labels.get(SWARM_SERVICE_LABEL).cloned(),
        compose_project: labels.get(COMPOSE_PROJECT_LABEL).cloned(),
        labels,
        pid,
        network_mode,
        net_admin,
        endpoints,
        published,
    })
}

/// `NetworkSettings.Ports`: `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort":
/// "8080"}], "443/tcp": null}` (null: exposed, not published). An entry
/// that does not parse is left out with a warning.
fn published_ports(container: &str, api: &ContainerInspectResponse) -> Vec<PublishedPort> {
    let Some(ports) = api.network_settings.as_ref().and_then(|n| n.ports.as_ref()) else {
        return Vec::new();
    };
    let mut published = Vec::new();
    for (port, bindings) in ports {
        let Some(bindings) = bindings else { continue };
        let (number, protocol) = port.split_once('/').unwrap_or((port.as_str(), "tcp"));
        let Ok(container_port) = number.parse::<u16>() else {
            warn!("container {container} publishes port {port:?}, which is no port; left out");
            continue;
        };
        for binding in bindings {
            let host_ip = match non_empty(binding.host_ip.as_ref()) {
                None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                Some(text) => match text.parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => {
                        warn!(
                            "container {container} publishes {port} on host address {text:?}, \
                             which is no address; left out"
                        );
                        continue;
                    }
                },
            };
            let Some(Ok(host_port)) = non_empty(binding.host_port.as_ref()).map(str::parse::<u16>)
            else {
                warn!(
                    "container {container} publishes {port} with no host port in dockerd's \
                     answer; left out"
                );
                continue;
            };
            published.push(PublishedPort {
                host_ip,
                host_port,
                container_port,
                protocol: protocol.to_ascii_lowercase(),
            });
        }
    }
    published.sort();
    published.dedup();
    published
}

/// A `CapAdd` entry that gives CAP_NET_ADMIN.
fn grants_net_admin(capability: &str) -> bool {
    let capability = capability.trim().to_ascii_uppercase();
    let name = capability.strip_prefix("CAP_").unwrap_or(&capability);
    matches!(name, "NET_ADMIN" | "ALL")
}

fn endpoint_from_api(
    container: &str,
    network_name: &str,
    settings: &EndpointSettings,
    networks: &[Network],
) -> Option<Endpoint> {
    let network = non_empty(settings.network_id.as_ref())
        .and_then(|id| networks.iter().find(|n| n.id == id))
        .or_else(|| networks.iter().find(|n| n.name == network_name));
    let Some(network) = network else {
        warn!(
            "container {container} is attached to network {network_name}, which dockerd did not list; endpoint skipped"
        );
        return None;
    };
    if matches!(network.driver.as_str(), "host" | "null") {
        // The container has no interface of its own on these: its
        // `network_mode` (`host`, `none`) says all there is.
        debug!(
            "container {container} is on the {} network: no endpoint of its own",
            network.name
        );
        return None;
    }
    let mac = match non_empty(settings.mac_address.as_ref()).map(str::parse::<MacAddr>) {
        Some(Ok(mac)) => mac,
        Some(Err(e)) => {
            warn!(
                "container {container} on network {}: {e}; endpoint skipped",
                network.name
            );
            return None;
        }
        None => {
            warn!(
                "container {container} on network {} has no MAC address in dockerd's answer; endpoint skipped",
                network.name
            );
            return None;
        }
    };
    let address = |text: Option<&String>, family: &str| {
        let text = non_empty(text)?;
        text.parse::<IpAddr>()
            .map_err(|_| warn!("container {container} on network {}: {family} address {text:?} does not parse; ignored", network.name))
            .ok()
    };
    let ipv4 = match address(settings.ip_address.as_ref(), "IPv4") {
        Some(IpAddr::V4(a)) => Some(a),
        _ => None,
    };
    let ipv6 = match address(settings.global_ipv6_address.as_ref(), "IPv6") {
        Some(IpAddr::V6(a)) => Some(a),
        _ => None,
    };
    Some(Endpoint {
        network_id: network.id.clone(),
        network: network.name.clone(),
        driver: network.driver.clone(),
        ipv4,
        ipv6,
        mac,
        aliases: settings.aliases.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    //! Answers captured from Debian's Docker 20.10.24 (API 1.41) on this
    //! project's test machine, for a topology of: the default `bridge`,
    //! `nwcap-front` (compose labels), `nwcap-back` (internal, IPv6, bridge
    //! named `nwcap-br0`); containers `app` (on front and back, static IPv4 on
    //! back), `static` (static IPv4 on back), `default` (default bridge),
    //! `sidecar` (`--network container:app`), `hostnet` (host network) and
    //! `none` (no network); and, as `captured::drivers`, the macvlan
    //! (bridge, private and internal), ipvlan, overlay (attachable, internal,
    //! a swarm service's task), `host` and `none` topology of a private
    //! dockerd in a single-node swarm. See `testdata/README.md`.

    use super::*;
    use serde_json::Value;

    use crate::docker::captured::{self, CONTAINERS, NETWORKS};

    fn captured() -> (Vec<ApiNetwork>, Vec<ContainerInspectResponse>) {
        let containers = CONTAINERS
            .iter()
            .map(|(name, _)| captured::container(name))
            .collect();
        (captured::networks(), containers)
    }

    fn inventory() -> Inventory {
        let names: Vec<&str> = CONTAINERS.iter().map(|(name, _)| *name).collect();
        captured::inventory(&names)
    }

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn subnet(cidr_text: &str, gateway: &str) -> Subnet {
        Subnet {
            cidr: cidr(cidr_text),
            gateway: Some(ip(gateway)),
        }
    }

    #[test]
    fn captured_answers_still_parse() {
        // Every capture, including the list of running containers and the
        // version answer, reads as bollard's models.
        let (networks, containers) = captured();
        assert_eq!(networks.len(), 5);
        assert_eq!(containers.len(), 6);
        let summaries: Vec<bollard::models::ContainerSummary> =
            serde_json::from_str(include_str!("testdata/containers.json")).unwrap();
        assert_eq!(summaries.len(), 6);
        let version: bollard::models::SystemVersion =
            serde_json::from_str(include_str!("testdata/version.json")).unwrap();
        assert_eq!(version.api_version.as_deref(), Some("1.41"));
    }

    #[test]
    fn driver_captures_still_parse() {
        assert_eq!(
            captured::drivers::networks().len(),
            11,
            "10 listed + ipvlan"
        );
        assert_eq!(captured::drivers::inspected_networks().len(), 11);
        // As `GET /networks/{id}` answers (bollard's list model has no
        // `Containers`), the inspected overlays keep their non-containers.
        for (name, json) in captured::drivers::INSPECTED_NETWORKS {
            let inspected: bollard::models::NetworkInspect = serde_json::from_str(json).unwrap();
            assert!(
                !inspected.containers.unwrap_or_default().is_empty(),
                "{name}"
            );
        }
        let summaries: Vec<bollard::models::ContainerSummary> =
            serde_json::from_str(include_str!("testdata/drivers/containers.json")).unwrap();
        assert_eq!(summaries.len(), captured::drivers::CONTAINERS.len());
        assert_eq!(captured::drivers::full_inventory().containers.len(), 9);
        assert_eq!(
            captured::drivers::container("svc").name.as_deref(),
            Some("/nwcap-svc.1.yvjdvx7ds813857f66cmh9jwv"),
            "a swarm task is named <service>.<slot>.<task id>"
        );
    }

    #[test]
    fn networks_are_typed() {
        let inventory = inventory();
        let names: Vec<&str> = inventory.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            ["bridge", "host", "none", "nwcap-back", "nwcap-front"]
        );

        let back = inventory.network("nwcap-back").unwrap();
        assert_eq!(
            back.id,
            "3bc36a716f17e68d3e4a69b2fb9230c0eaecb8dcc796f6b967f0dc4e4a67c363"
        );
        assert_eq!(back.driver, "bridge");
        assert!(back.internal && back.ipv6);
        assert_eq!(
            back.bridge.as_deref(),
            Some("nwcap-br0"),
            "the bridge.name option wins"
        );
        assert_eq!(
            back.subnets,
            [
                subnet("172.29.0.0/24", "172.29.0.1"),
                // Not in the IPAM config: taken from the endpoints' IPv6Gateway.
                subnet("fd00:29::/64", "fd00:29::1"),
            ]
        );
        assert_eq!(back.compose_project, None);

        let front = inventory.network("nwcap-front").unwrap();
        assert!(!front.internal && !front.ipv6);
        assert_eq!(
            front.bridge.as_deref(),
            Some("br-5ff26285eaf7"),
            "br- and 12 characters of the id"
        );
        assert_eq!(front.compose_project.as_deref(), Some("capture"));
        assert_eq!(
            front
                .labels
                .get("com.docker.compose.network")
                .map(String::as_str),
            Some("front")
        );
        assert_eq!(front.subnets, [subnet("172.18.0.0/16", "172.18.0.1")]);

        let bridge = inventory.network("bridge").unwrap();
        assert_eq!(bridge.bridge.as_deref(), Some("docker0"));
        assert_eq!(
            bridge.subnets,
            [subnet("172.17.0.0/16", "172.17.0.1")],
            "the default bridge reports no gateway; the attached container's Gateway fills it"
        );

        for name in ["host", "none"] {
            let network = inventory.network(name).unwrap();
            assert_eq!(network.bridge, None, "{name} has no bridge device");
            assert!(network.subnets.is_empty());
        }
        assert_eq!(
            inventory
                .network("bf78ce1cdb95da387cd6f801d06d37c2d4a847413bc258eb3a3626f27354c8cc")
                .unwrap()
                .name,
            "host"
        );
    }

    #[test]
    fn macvlan_and_ipvlan_networks_name_their_parent_and_macvlan_its_mode() {
        let inventory = captured::drivers::full_inventory();
        let parent_and_mode = |name: &str| {
            let network = inventory.network(name).unwrap();
            (network.parent.as_deref(), network.macvlan_mode.as_deref())
        };
        assert_eq!(
            parent_and_mode("nwcap-mvlan"),
            (Some("nwmv0"), None),
            "Docker does not list the default mode, bridge"
        );
        assert_eq!(
            parent_and_mode("nwcap-mvpriv"),
            (Some("nwmp0"), Some("private"))
        );
        assert_eq!(parent_and_mode("nwcap-mvint"), (Some("nwmi0"), None));
        assert_eq!(parent_and_mode("nwcap-ipvlan"), (Some("nwiv0"), None));
        for name in [
            "bridge",
            "docker_gwbridge",
            "nwcap-ovl",
            "ingress",
            "host",
            "none",
        ] {
            assert_eq!(parent_and_mode(name), (None, None), "{name}");
        }
        let mvlan = inventory.network("nwcap-mvlan").unwrap();
        assert_eq!(mvlan.driver, "macvlan");
        assert!(mvlan.ipv6 && !mvlan.internal);
        assert_eq!(
            mvlan.subnets,
            [
                subnet("198.18.60.0/24", "198.18.60.1"),
                subnet("fd00:60::/64", "fd00:60::1"),
            ],
            "the gateway is the LAN router's: nothing on this host holds it"
        );
        assert_eq!(mvlan.bridge, None);
        assert_eq!(
            mvlan.labels.get("netwatch.capture").map(String::as_str),
            Some("macvlan")
        );
        assert!(inventory.network("nwcap-mvint").unwrap().internal);
    }

    #[test]
    fn driver_options_are_read_only_for_the_drivers_that_have_them() {
        let mut networks: Vec<Value> = serde_json::from_str(captured::drivers::NETWORKS).unwrap();
        for network in &mut networks {
            if network["Name"] == "docker_gwbridge" {
                network["Options"]["parent"] = "eth0".into();
                network["Options"]["macvlan_mode"] = "vepa".into();
            }
        }
        let networks: Vec<ApiNetwork> = serde_json::from_value(Value::Array(networks)).unwrap();
        let inventory = Inventory::from_api(&networks, &[]);
        let gwbridge = inventory.network("docker_gwbridge").unwrap();
        assert_eq!(
            (gwbridge.parent.as_deref(), gwbridge.macvlan_mode.as_deref()),
            (None, None)
        );
    }

    #[test]
    fn swarm_networks_have_swarm_scope_and_25_character_ids() {
        let inventory = captured::drivers::full_inventory();
        for name in ["nwcap-ovl", "nwcap-ovl-int", "ingress"] {
            let network = inventory.network(name).unwrap();
            assert_eq!(network.scope.as_deref(), Some("swarm"), "{name}");
            assert_eq!(network.id.len(), 25, "{name}: {}", network.id);
            assert_eq!(network.driver, "overlay");
        }
        let ovl = inventory.network("4w3tamq7me8rpukn6gcvur260").unwrap();
        assert_eq!(ovl.name, "nwcap-ovl");
        assert_eq!(ovl.subnets, [subnet("198.18.70.0/24", "198.18.70.1")]);
        for name in [
            "nwcap-mvlan",
            "docker_gwbridge",
            "host",
            "none",
            "nwcap-ipvlan",
        ] {
            let network = inventory.network(name).unwrap();
            assert_eq!(network.scope.as_deref(), Some("local"), "{name}");
            assert_eq!(network.id.len(), 64, "{name}");
        }
        assert_eq!(
            inventory
                .network("docker_gwbridge")
                .unwrap()
                .bridge
                .as_deref(),
            Some("docker_gwbridge")
        );
    }

    #[test]
    fn multi_homed_container_has_one_endpoint_per_network() {
        let inventory = inventory();
        let app = inventory.find_container("nwcap-app").unwrap();
        assert_eq!(
            app.id,
            "d17ecc39df5d148dde9399a5358e4b93551bf6923e08941580487407b81e7255"
        );
        assert_eq!(app.service.as_deref(), Some("app"));
        assert_eq!(app.compose_project.as_deref(), Some("capture"));
        assert_eq!(app.pid, Some(22825));
        assert_eq!(app.network_mode, "nwcap-front");
        assert_eq!(
            app.endpoints,
            [
                Endpoint {
                    network_id: inventory.network("nwcap-back").unwrap().id.clone(),
                    network: "nwcap-back".into(),
                    driver: "bridge".into(),
                    ipv4: Some(Ipv4Addr::new(172, 29, 0, 10)),
                    ipv6: Some("fd00:29::2".parse().unwrap()),
                    mac: "02:42:ac:1d:00:0a".parse().unwrap(),
                    aliases: vec!["db-client".into(), "d17ecc39df5d".into()],
                },
                Endpoint {
                    network_id: inventory.network("nwcap-front").unwrap().id.clone(),
                    network: "nwcap-front".into(),
                    driver: "bridge".into(),
                    ipv4: Some(Ipv4Addr::new(172, 18, 0, 2)),
                    ipv6: None,
                    mac: "02:42:ac:12:00:02".parse().unwrap(),
                    aliases: vec!["app".into(), "d17ecc39df5d".into()],
                },
            ]
        );
        let on_back: Vec<&str> = inventory
            .endpoints_on(&app.endpoints[0].network_id)
            .map(|(c, _)| c.name.as_str())
            .collect();
        assert_eq!(on_back, ["nwcap-app", "nwcap-static"]);
    }

    #[test]
    fn static_address_and_default_bridge() {
        let inventory = inventory();
        let fixed = inventory.find_container("nwcap-static").unwrap();
        assert_eq!(fixed.service, None);
        assert_eq!(fixed.endpoints.len(), 1);
        assert_eq!(fixed.endpoints[0].ipv4, Some(Ipv4Addr::new(172, 29, 0, 20)));
        assert_eq!(fixed.endpoints[0].mac.to_string(), "02:42:ac:1d:00:14");
        let default = inventory.find_container("nwcap-default").unwrap();
        assert_eq!(default.endpoints.len(), 1);
        assert_eq!(default.endpoints[0].network, "bridge");
        assert_eq!(default.endpoints[0].aliases, Vec::<String>::new());
    }

    #[test]
    fn containers_without_their_own_endpoint() {
        let inventory = inventory();
        let sidecar = inventory.find_container("nwcap-sidecar").unwrap();
        assert!(sidecar.endpoints.is_empty());
        assert_eq!(
            sidecar.shares_network_of(),
            Some("d17ecc39df5d148dde9399a5358e4b93551bf6923e08941580487407b81e7255")
        );
        for name in ["nwcap-hostnet", "nwcap-none"] {
            let container = inventory.find_container(name).unwrap();
            assert!(container.endpoints.is_empty(), "{name}");
            assert_eq!(container.shares_network_of(), None);
        }
        assert_eq!(inventory.containers.len(), 6);
    }

    #[test]
    fn containers_are_found_like_docker_finds_them() {
        let inventory = inventory();
        assert_eq!(
            inventory.find_container("/nwcap-app").unwrap().name,
            "nwcap-app"
        );
        assert_eq!(
            inventory.find_container("d17ecc").unwrap().name,
            "nwcap-app"
        );
        assert_eq!(
            inventory.find_container("nope"),
            Err(ContainerLookupError::NotFound("nope".into()))
        );
        assert_eq!(
            inventory.find_container("nope").unwrap_err().to_string(),
            "no running container named \"nope\" (or with an id starting with it); `docker ps` lists them"
        );
        // f1114914e082 (sidecar) and f2b768ddfc9a (none) both start with f.
        assert_eq!(
            inventory.find_container("f"),
            Err(ContainerLookupError::Ambiguous {
                query: "f".into(),
                count: 2
            })
        );
        assert!(inventory.find_container("").is_err());
    }

    /// The inventory of `networks` and one container: `json` with `edit`
    /// applied.
    fn edited(networks: &[ApiNetwork], json: &str, edit: impl FnOnce(&mut Value)) -> Inventory {
        let mut container: Value = serde_json::from_str(json).unwrap();
        edit(&mut container);
        let container: ContainerInspectResponse = serde_json::from_value(container).unwrap();
        Inventory::from_api(networks, &[container])
    }

    /// Applies `edit` to the captured JSON of `app` and returns the result.
    fn edited_app(edit: impl FnOnce(&mut Value)) -> Inventory {
        edited(&captured::networks(), CONTAINERS[0].1, edit)
    }

    /// Applies `edit` to the captured JSON of driver-topology container
    /// `name` (`mv`, `svc`, …) and returns the result.
    fn edited_driver_container(name: &str, edit: impl FnOnce(&mut Value)) -> Inventory {
        let (_, json) = captured::drivers::CONTAINERS
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap();
        edited(&captured::drivers::networks(), json, edit)
    }

    /// The one endpoint of driver-topology container `name`.
    fn only_endpoint<'a>(inventory: &'a Inventory, name: &str) -> &'a Endpoint {
        let container = inventory.find_container(name).unwrap();
        match container.endpoints.as_slice() {
            [endpoint] => endpoint,
            other => panic!("{name}: one endpoint expected, got {other:?}"),
        }
    }

    /// An endpoint on one line: network, driver, IPv4, IPv6, MAC.
    fn summary(endpoint: &Endpoint) -> String {
        let or_dash = |a: Option<String>| a.unwrap_or_else(|| "-".to_owned());
        format!(
            "{} {} {} {} {}",
            endpoint.network,
            endpoint.driver,
            or_dash(endpoint.ipv4.map(|a| a.to_string())),
            or_dash(endpoint.ipv6.map(|a| a.to_string())),
            endpoint.mac
        )
    }

    #[test]
    fn macvlan_endpoints_are_kept_with_driver_mac_and_addresses() {
        let inventory = captured::drivers::full_inventory();
        let mvlan = inventory.network("nwcap-mvlan").unwrap();
        assert_eq!(
            only_endpoint(&inventory, "nwcap-mv"),
            &Endpoint {
                network_id: mvlan.id.clone(),
                network: "nwcap-mvlan".into(),
                driver: "macvlan".into(),
                ipv4: Some(Ipv4Addr::new(198, 18, 60, 2)),
                ipv6: Some("fd00:60::2".parse().unwrap()),
                mac: "02:42:c6:12:3c:02".parse().unwrap(),
                aliases: vec!["2562c9346418".into()],
            }
        );
        for (name, line) in [
            (
                "nwcap-mv2",
                "nwcap-mvlan macvlan 198.18.60.3 fd00:60::3 02:42:c6:12:3c:03",
            ),
            (
                "nwcap-mvp",
                "nwcap-mvpriv macvlan 198.18.61.2 - 02:42:c6:12:3d:02",
            ),
            // Internal: its Gateway is empty (no default route); still an endpoint.
            (
                "nwcap-mvi",
                "nwcap-mvint macvlan 198.18.63.2 - 02:42:c6:12:3f:02",
            ),
        ] {
            assert_eq!(summary(only_endpoint(&inventory, name)), line);
        }
        let on_mvlan: Vec<&str> = inventory
            .endpoints_on(&mvlan.id)
            .map(|(c, _)| c.name.as_str())
            .collect();
        assert_eq!(on_mvlan, ["nwcap-mv", "nwcap-mv2"]);
        let mv = inventory.find_container("nwcap-mv").unwrap();
        assert_eq!(
            mv.labels.get("netwatch.allow").map(String::as_str),
            Some("198.18.60.1:53/udp")
        );
    }

    #[test]
    fn overlay_endpoints_are_kept_with_driver_mac_and_addresses() {
        let inventory = captured::drivers::full_inventory();
        let overlay_endpoint = |name: &str| {
            let container = inventory.find_container(name).unwrap();
            let found = container.endpoints.iter().find(|e| e.driver == "overlay");
            summary(found.unwrap_or_else(|| panic!("{name} has no overlay endpoint")))
        };
        assert_eq!(
            overlay_endpoint("nwcap-ovc"),
            "nwcap-ovl overlay 198.18.70.2 - 02:42:c6:12:46:02"
        );
        assert_eq!(
            summary(only_endpoint(&inventory, "nwcap-ovi")),
            "nwcap-ovl-int overlay 198.18.71.2 - 02:42:c6:12:47:02",
            "an internal overlay gives no gateway leg"
        );
        assert_eq!(
            only_endpoint(&inventory, "nwcap-ovi").network_id,
            "gkey06s19os1ohldcgsxq7rwz",
            "a swarm network id"
        );
        // Overlay endpoints report no Gateway; the IPAM config has it.
        assert_eq!(
            inventory.network("nwcap-ovl-int").unwrap().subnets,
            [subnet("198.18.71.0/24", "198.18.71.1")]
        );
    }

    #[test]
    fn docker_gwbridge_legs_are_endpoints_of_their_containers() {
        let inventory = captured::drivers::full_inventory();
        let gwbridge = inventory.network("docker_gwbridge").unwrap();
        assert!(gwbridge.is_gateway_bridge());
        let legs: Vec<(&str, String)> = inventory
            .endpoints_on(&gwbridge.id)
            .map(|(c, e)| (c.name.as_str(), summary(e)))
            .collect();
        // Keyed by container id in Docker's answer; `ingress-sbox` is
        // Docker's own and no container.
        assert_eq!(
            legs,
            [
                (
                    "nwcap-ovc",
                    "docker_gwbridge bridge 198.18.80.3 - 02:42:c6:12:50:03".to_owned()
                ),
                (
                    "nwcap-svc.1.yvjdvx7ds813857f66cmh9jwv",
                    "docker_gwbridge bridge 198.18.80.4 - 02:42:c6:12:50:04".to_owned()
                ),
            ]
        );
        let ovc = inventory.find_container("nwcap-ovc").unwrap();
        let networks: Vec<&str> = ovc.endpoints.iter().map(|e| e.network.as_str()).collect();
        assert_eq!(
            networks,
            ["docker_gwbridge", "nwcap-ovl"],
            "sorted by network"
        );
        // Without the docker_gwbridge answer (its list entry has no
        // Containers), no container has a leg.
        let names: Vec<&str> = captured::drivers::CONTAINERS
            .iter()
            .map(|(name, _)| *name)
            .collect();
        let listed = Inventory::from_api(
            &captured::drivers::networks(),
            &names
                .iter()
                .map(|n| captured::drivers::container(n))
                .collect::<Vec<_>>(),
        );
        assert_eq!(listed.endpoints_on(&gwbridge.id).count(), 0);
    }

    #[test]
    fn odd_gateway_legs_are_skipped_not_fatal() {
        let mut answer: Value = serde_json::from_str(
            captured::drivers::INSPECTED_NETWORKS
                .iter()
                .find(|(n, _)| *n == GATEWAY_BRIDGE)
                .unwrap()
                .1,
        )
        .unwrap();
        let ovc = "82c081e22fc1fab9ab510a7b08133c7a56b100dc4b1531dae743747c8c2fac9e";
        let svc = "7902ef8b456f6f5045448d563ea5962faed9e7aa5db7c2223cbc5d5f6e7fd34e";
        answer["Containers"][ovc]["MacAddress"] = "bogus".into();
        answer["Containers"][svc]["IPv4Address"] = "not-an-address/24".into();
        answer["Containers"]["f00d"] = answer["Containers"][svc].clone();
        let answer: NetworkInspect = serde_json::from_value(answer).unwrap();
        let mut inventory = captured::drivers::inventory(&["ovc", "svc"]);
        for container in &mut inventory.containers {
            container.endpoints.retain(|e| e.network != GATEWAY_BRIDGE);
        }
        inventory.add_gateway_legs(&answer);
        let gwbridge = inventory.network(GATEWAY_BRIDGE).unwrap().id.clone();
        let legs: Vec<(&str, Option<Ipv4Addr>)> = inventory
            .endpoints_on(&gwbridge)
            .map(|(c, e)| (c.name.as_str(), e.ipv4))
            .collect();
        assert_eq!(
            legs,
            [("nwcap-svc.1.yvjdvx7ds813857f66cmh9jwv", None)],
            "a bad MAC skips the leg, a bad address only the address, an unknown key nothing"
        );
        // Another network's answer adds nothing.
        let mut other: Value =
            serde_json::from_str(captured::drivers::INSPECTED_NETWORKS[0].1).unwrap();
        other["Containers"] = serde_json::json!({svc: {"MacAddress": "02:42:c6:12:50:09"}});
        let other: NetworkInspect = serde_json::from_value(other).unwrap();
        let before = inventory.clone();
        inventory.add_gateway_legs(&other);
        assert_eq!(inventory, before);
    }

    #[test]
    fn host_and_none_containers_have_no_endpoint_and_say_their_mode() {
        let inventory = captured::drivers::full_inventory();
        for (name, mode) in [("nwcap-hostnet2", "host"), ("nwcap-none2", "none")] {
            let container = inventory.find_container(name).unwrap();
            assert!(container.endpoints.is_empty(), "{name}");
            assert_eq!(container.network_mode, mode);
            assert_eq!(container.shares_network_of(), None);
            assert!(container.pid.is_some(), "{name} runs");
        }
        for network in ["host", "none"] {
            let id = &inventory.network(network).unwrap().id;
            assert_eq!(inventory.endpoints_on(id).count(), 0, "{network}");
        }
    }

    #[test]
    fn load_balancer_and_ingress_sandbox_entries_never_become_containers() {
        let containers: Vec<ContainerInspectResponse> = captured::drivers::CONTAINERS
            .iter()
            .map(|(name, _)| captured::drivers::container(name))
            .collect();
        // The inspected overlays, ingress and docker_gwbridge list
        // `lb-nwcap-ovl`, `lb-nwcap-ovl-int`, `ingress-sbox` and the
        // `gateway_…` legs in their Containers: the inventory is the same
        // as from the list, which has none of them.
        let inspected = Inventory::from_api(&captured::drivers::inspected_networks(), &containers);
        let listed = Inventory::from_api(&captured::drivers::networks(), &containers);
        assert_eq!(inspected, listed);
        let container_names: Vec<&str> = inspected
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            container_names,
            [
                "nwcap-hostnet2",
                "nwcap-mv",
                "nwcap-mv2",
                "nwcap-mvi",
                "nwcap-mvp",
                "nwcap-none2",
                "nwcap-ovc",
                "nwcap-ovi",
                "nwcap-svc.1.yvjdvx7ds813857f66cmh9jwv",
            ]
        );
        let on_ovl: Vec<&str> = inspected
            .endpoints_on("4w3tamq7me8rpukn6gcvur260")
            .map(|(c, _)| c.name.as_str())
            .collect();
        assert_eq!(
            on_ovl,
            ["nwcap-ovc", "nwcap-svc.1.yvjdvx7ds813857f66cmh9jwv"]
        );
        let ingress = inspected.network("ingress").unwrap();
        assert_eq!(inspected.endpoints_on(&ingress.id).count(), 0);
    }

    #[test]
    fn the_ipvlan_network_is_in_the_inventory() {
        let inventory = captured::drivers::full_inventory();
        let ipvlan = inventory.network("nwcap-ipvlan").unwrap();
        assert_eq!(ipvlan.driver, "ipvlan");
        assert_eq!(ipvlan.parent.as_deref(), Some("nwiv0"));
        assert_eq!(ipvlan.bridge, None);
        assert!(!ipvlan.internal);
        assert_eq!(ipvlan.subnets, [subnet("198.18.62.0/24", "198.18.62.1")]);
        assert_eq!(
            inventory.endpoints_on(&ipvlan.id).count(),
            0,
            "its container could not start here"
        );
    }

    #[test]
    fn a_swarm_task_is_named_by_its_service() {
        let inventory = captured::drivers::full_inventory();
        let task = inventory
            .find_container("nwcap-svc.1.yvjdvx7ds813857f66cmh9jwv")
            .unwrap();
        assert_eq!(task.service.as_deref(), Some("nwcap-svc"));
        assert_eq!(task.swarm_service.as_deref(), Some("nwcap-svc"));
        assert_eq!(task.compose_project, None);
        assert_eq!(
            task.network_mode, "default",
            "a task says `default` although it is on an overlay only"
        );
        let endpoint = task
            .endpoints
            .iter()
            .find(|e| e.driver == "overlay")
            .unwrap();
        assert_eq!(
            summary(endpoint),
            "nwcap-ovl overlay 198.18.70.5 - 02:42:c6:12:46:05"
        );
        assert_eq!(endpoint.network_id, "4w3tamq7me8rpukn6gcvur260");
        // Every other container of the topology runs no service.
        for container in inventory.containers.iter().filter(|c| c.id != task.id) {
            assert_eq!(
                (&container.service, &container.swarm_service),
                (&None, &None)
            );
        }
    }

    #[test]
    fn a_compose_service_is_named_before_a_swarm_service() {
        let edited = edited_driver_container("svc", |svc| {
            svc["Config"]["Labels"][COMPOSE_SERVICE_LABEL] = "web".into();
        });
        let task = &edited.containers[0];
        assert_eq!(task.service.as_deref(), Some("web"));
        assert_eq!(
            task.swarm_service.as_deref(),
            Some("nwcap-svc"),
            "still known for what it is"
        );
        let inventory = inventory();
        let app = inventory.find_container("nwcap-app").unwrap();
        assert_eq!(app.service.as_deref(), Some("app"));
        assert_eq!(app.swarm_service, None, "a compose container is no task");
    }

    #[test]
    fn published_ports_are_read_as_docker_port_prints_them_and_bad_entries_are_left_out() {
        let edited = edited_driver_container("mv", |mv| {
            mv["NetworkSettings"]["Ports"] = serde_json::json!({
                "80/tcp": [
                    {"HostIp": "0.0.0.0", "HostPort": "8080"},
                    {"HostIp": "::", "HostPort": "8080"}
                ],
                "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
                // exposed, not published
                "443/tcp": null,
                "http/tcp": [{"HostIp": "0.0.0.0", "HostPort": "1"}],
                "81/tcp": [{"HostIp": "not-an-ip", "HostPort": "8081"}],
                "82/tcp": [{"HostIp": "", "HostPort": ""}],
                "83/tcp": [{"HostIp": "", "HostPort": "8083"}]
            });
        });
        let published: Vec<(String, String)> = edited.containers[0]
            .published
            .iter()
            .map(|p| (p.to_string(), p.container_side()))
            .collect();
        assert_eq!(
            published,
            [
                ("0.0.0.0:8080/tcp".to_owned(), "80/tcp".to_owned()),
                ("0.0.0.0:8083/tcp".to_owned(), "83/tcp".to_owned()),
                ("127.0.0.1:5353/udp".to_owned(), "53/udp".to_owned()),
                ("[::]:8080/tcp".to_owned(), "80/tcp".to_owned()),
            ]
        );
        assert!(
            inventory()
                .containers
                .iter()
                .all(|c| c.published.is_empty()),
            "the captured containers publish nothing"
        );
    }

    #[test]
    fn ports_are_published_through_the_first_network_that_is_not_internal() {
        let mut inventory = inventory();
        let app = inventory
            .containers
            .iter_mut()
            .find(|c| c.name == "nwcap-app")
            .unwrap();
        assert_eq!(app.endpoints.len(), 2, "nwcap-back (internal), nwcap-front");
        let id = app.id.clone();
        assert!(
            inventory
                .published_through(inventory.find_container(&id).unwrap())
                .is_none(),
            "nothing published"
        );
        let app = inventory
            .containers
            .iter_mut()
            .find(|c| c.name == "nwcap-app")
            .unwrap();
        app.published = vec![PublishedPort {
            host_ip: Ipv4Addr::UNSPECIFIED.into(),
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
        }];
        let app = inventory.find_container(&id).unwrap();
        let through = inventory.published_through(app).expect("an endpoint");
        assert_eq!(
            through.network, "nwcap-front",
            "nwcap-back comes first by name but is internal"
        );
    }

    #[test]
    fn no_captured_container_holds_net_admin() {
        // Their HostConfig has `CapAdd: null` and `Privileged: false`.
        let drivers = captured::drivers::full_inventory();
        for container in inventory().containers.iter().chain(&drivers.containers) {
            assert!(!container.net_admin, "{}", container.name);
        }
    }

    #[test]
    fn privileged_or_an_added_net_admin_or_all_capability_is_net_admin() {
        let net_admin =
            |edit: fn(&mut Value)| edited_driver_container("mv", edit).containers[0].net_admin;
        assert!(net_admin(|mv| mv["HostConfig"]["Privileged"] = true.into()));
        for spelling in [
            "NET_ADMIN",
            "CAP_NET_ADMIN",
            "net_admin",
            "cap_net_admin",
            "ALL",
            "all",
        ] {
            let inventory = edited_driver_container("mv", |mv| {
                mv["HostConfig"]["CapAdd"] = serde_json::json!(["NET_RAW", spelling]);
            });
            assert!(inventory.containers[0].net_admin, "{spelling}");
        }
        assert!(!net_admin(|mv| {
            mv["HostConfig"]["CapAdd"] =
                serde_json::json!(["NET_RAW", "SYS_PTRACE", "NET_BIND_SERVICE"]);
        }));
        assert!(!net_admin(|mv| {
            mv.as_object_mut().unwrap().remove("HostConfig");
        }));
    }

    #[test]
    fn odd_answers_are_skipped_not_fatal() {
        // No pid: kept, without one.
        let inventory = edited_app(|app| app["State"]["Pid"] = 0.into());
        assert_eq!(inventory.containers[0].pid, None);
        // No MAC on one endpoint, an unparsable one on the other: both skipped.
        let inventory = edited_app(|app| {
            app["NetworkSettings"]["Networks"]["nwcap-back"]["MacAddress"] = "".into();
            app["NetworkSettings"]["Networks"]["nwcap-front"]["MacAddress"] = "bogus".into();
        });
        assert!(inventory.containers[0].endpoints.is_empty());
        // An endpoint of a network dockerd did not list: skipped.
        let inventory = edited_app(|app| {
            let networks = app["NetworkSettings"]["Networks"].as_object_mut().unwrap();
            let mut gone = networks["nwcap-front"].clone();
            gone["NetworkID"] = "0123456789ab".into();
            networks.insert("gone".into(), gone);
        });
        assert_eq!(inventory.containers[0].endpoints.len(), 2);
        // No id, no name: the container is skipped; the name falls back to the short id.
        assert!(
            edited_app(|app| app.as_object_mut().unwrap().retain(|k, _| k != "Id"))
                .containers
                .is_empty()
        );
        let inventory = edited_app(|app| app.as_object_mut().unwrap().retain(|k, _| k != "Name"));
        assert_eq!(inventory.containers[0].name, "d17ecc39df5d");
        // Nothing but an id: an empty container, no panic.
        let inventory = edited_app(|app| *app = serde_json::json!({"Id": "abc"}));
        assert_eq!(inventory.containers[0].name, "abc");
        assert_eq!(inventory.containers[0].network_mode, "default");
        // Bad addresses are dropped field by field.
        let inventory = edited_app(|app| {
            app["NetworkSettings"]["Networks"]["nwcap-back"]["IPAddress"] = "not-an-ip".into();
            app["NetworkSettings"]["Networks"]["nwcap-back"]["GlobalIPv6Address"] =
                "172.29.0.99".into();
        });
        let back = &inventory.containers[0].endpoints[0];
        assert_eq!(
            (back.network.as_str(), back.ipv4, back.ipv6),
            ("nwcap-back", None, None)
        );
    }

    #[test]
    fn odd_networks_are_skipped_not_fatal() {
        let mut networks: Vec<Value> = serde_json::from_str(NETWORKS).unwrap();
        // [3] is nwcap-front, [4] nwcap-back.
        networks[4]["IPAM"]["Config"][0]["Subnet"] = "172.29.0.0/99".into();
        networks[4]["IPAM"]["Config"][1]["Gateway"] = "fd00:29::1/64".into();
        networks[4].as_object_mut().unwrap().remove("Driver");
        networks[3].as_object_mut().unwrap().remove("Id");
        networks.push(serde_json::json!({"Id": "f00d", "Name": "bare"}));
        let networks: Vec<ApiNetwork> = serde_json::from_value(Value::Array(networks)).unwrap();
        let inventory = Inventory::from_api(&networks, &[]);
        let names: Vec<&str> = inventory.networks.iter().map(|n| n.name.as_str()).collect();
        assert!(!names.contains(&"nwcap-front"), "no id: skipped");
        let back = inventory.network("nwcap-back").unwrap();
        assert_eq!(back.driver, "unknown");
        assert_eq!(
            back.bridge, None,
            "only bridge networks have a bridge device"
        );
        assert_eq!(
            back.subnets,
            [subnet("fd00:29::/64", "fd00:29::1")],
            "the bad subnet is dropped; a gateway with a prefix length is read"
        );
        let bare = inventory.network("bare").unwrap();
        assert!(!bare.internal && bare.subnets.is_empty() && bare.labels.is_empty());
    }
}
