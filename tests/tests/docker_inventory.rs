//! The inventory and the endpoint → host veth resolution against a real
//! dockerd and the kernel (needs root and dockerd; `cargo xtask setup`
//! starts dockerd and builds the test image).
//!
//! Topology, created per test and removed even when the test fails:
//!
//! ```text
//!   internal  (--internal, IPv4 10.213.N.0/24 + IPv6 fd00:213:N::/64)
//!   public    (a normal bridge network, subnet chosen by Docker)
//!   multi     on public, then connected to internal  (multi-homed)
//!   fixed     on internal with --ip 10.213.N.50      (static ipv4_address)
//!   sidecar   --network container:multi              (shares multi's endpoints)
//! ```
//!
//! Containers only `sleep`: no traffic is sent.

use std::fs;
use std::net::IpAddr;

use netwatch::cli::networks::{self, NetworkReport};
use netwatch::docker::{Client, DockerError, Inventory, Snapshot};
use netwatch_tests::docker::{TestContainer, TestNetwork, docker_ok, require_dockerd};
use serde_json::Value;

struct Topology {
    // Field order is drop order: containers before the networks they use.
    sidecar: TestContainer,
    fixed: TestContainer,
    multi: TestContainer,
    internal: TestNetwork,
    public: TestNetwork,
    /// The third octet of the internal network's 10.213.N.0/24.
    n: u8,
}

impl Topology {
    fn create(seed: u32) -> Topology {
        require_dockerd();
        let n = ((std::process::id() + seed) % 250) as u8;
        let v4 = format!("10.213.{n}.0/24");
        let v6 = format!("fd00:213:{n}::/64");
        let internal = TestNetwork::create(
            "internal",
            &["--internal", "--ipv6", "--subnet", &v4, "--subnet", &v6],
        );
        let public = TestNetwork::create("public", &[]);
        let multi = TestContainer::run("multi", &["--network", &public.name]);
        multi.connect(&internal, &["--alias", "multi-alias"]);
        let fixed_ip = format!("10.213.{n}.50");
        let fixed = TestContainer::run("fixed", &["--network", &internal.name, "--ip", &fixed_ip]);
        let sidecar = TestContainer::run(
            "sidecar",
            &["--network", &format!("container:{}", multi.name)],
        );
        Topology {
            sidecar,
            fixed,
            multi,
            internal,
            public,
            n,
        }
    }

    fn containers(&self) -> [&TestContainer; 2] {
        [&self.multi, &self.fixed]
    }
}

fn snapshot() -> Snapshot {
    netwatch::cli::block_on(async {
        let client = Client::connect().await?;
        assert!(
            client.api_version().starts_with("1."),
            "negotiated API version {}",
            client.api_version()
        );
        Ok(Snapshot::take(&client).await?)
    })
    .expect("the inventory loads from dockerd")
}

fn sys_net(ifname: &str, attribute: &str) -> u32 {
    let path = format!("/sys/class/net/{ifname}/{attribute}");
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Checks every endpoint of `container` in `inventory` against `docker
/// inspect` (addresses, MAC, aliases) and the kernel (both ends of the
/// veth, and the bridge it is enslaved to).
fn check_endpoints(snapshot: &Snapshot, container: &TestContainer, networks: &[&TestNetwork]) {
    let inventory = &snapshot.inventory;
    let found = inventory
        .find_container(&container.name)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.id, container.id);
    assert_eq!(found.pid, Some(container.pid()));
    let docker_says: Value = serde_json::from_str(&container.networks_json()).unwrap();
    let mut names: Vec<&str> = found.endpoints.iter().map(|e| e.network.as_str()).collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = networks.iter().map(|n| n.name.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(names, expected, "{}'s endpoints", container.name);

    for endpoint in &found.endpoints {
        let theirs = &docker_says[&endpoint.network];
        let network = networks
            .iter()
            .find(|n| n.name == endpoint.network)
            .unwrap();
        assert_eq!(endpoint.network_id, network.id);
        assert_eq!(
            endpoint.mac.to_string(),
            theirs["MacAddress"].as_str().unwrap()
        );
        assert_eq!(
            endpoint.ipv4.map(|a| a.to_string()).unwrap_or_default(),
            theirs["IPAddress"].as_str().unwrap()
        );
        assert_eq!(
            endpoint.ipv6.map(|a| a.to_string()).unwrap_or_default(),
            theirs["GlobalIPv6Address"].as_str().unwrap()
        );
        let aliases: Vec<&str> = theirs["Aliases"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(endpoint.aliases, aliases);

        let veth = snapshot
            .veth(found, endpoint)
            .unwrap_or_else(|e| panic!("{} on {}: {e}", container.name, endpoint.network));
        // The host end, as sysfs in the host namespace tells it.
        assert_eq!(sys_net(&veth.ifname, "ifindex"), veth.ifindex, "{veth:?}");
        assert_eq!(
            sys_net(&veth.ifname, "iflink"),
            veth.container_ifindex,
            "{veth:?}"
        );
        let master = fs::read_link(format!("/sys/class/net/{}/master", veth.ifname)).unwrap();
        assert_eq!(
            master.file_name().unwrap().to_str().unwrap(),
            network.bridge(),
            "{} is enslaved to the network's bridge",
            veth.ifname
        );
        // The container end, as sysfs inside the container tells it.
        let inside = |attribute: &str| -> u32 {
            container
                .nsenter(&[
                    "cat",
                    &format!("/sys/class/net/{}/{attribute}", veth.container_ifname),
                ])
                .parse()
                .unwrap()
        };
        assert_eq!(inside("iflink"), veth.ifindex, "{veth:?}");
        assert_eq!(inside("ifindex"), veth.container_ifindex, "{veth:?}");
        let mac = container.nsenter(&[
            "cat",
            &format!("/sys/class/net/{}/address", veth.container_ifname),
        ]);
        assert_eq!(mac, endpoint.mac.to_string());
    }
}

#[test]
fn inventory_matches_docker_and_the_kernel() {
    let topology = Topology::create(0);
    let snapshot = snapshot();
    let inventory: &Inventory = &snapshot.inventory;

    let internal = inventory
        .network(&topology.internal.id)
        .expect("internal network listed");
    assert_eq!(internal.name, topology.internal.name);
    assert_eq!(internal.driver, "bridge");
    assert!(internal.internal && internal.ipv6);
    let subnets: Vec<String> = internal
        .subnets
        .iter()
        .map(|s| s.cidr.to_string())
        .collect();
    assert_eq!(
        subnets,
        [
            format!("10.213.{}.0/24", topology.n),
            format!("fd00:213:{}::/64", topology.n)
        ]
    );
    let gateway: IpAddr = format!("10.213.{}.1", topology.n).parse().unwrap();
    assert_eq!(internal.subnets[0].gateway, Some(gateway));
    assert_eq!(
        internal.bridge.as_deref(),
        Some(topology.internal.bridge().as_str())
    );

    let public = inventory
        .network(&topology.public.id)
        .expect("public network listed");
    assert!(!public.internal && !public.ipv6);
    assert_eq!(
        public.bridge.as_deref(),
        Some(topology.public.bridge().as_str())
    );
    let docker_subnet = docker_ok(&[
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        &topology.public.id,
    ]);
    assert_eq!(public.subnets.len(), 1);
    assert_eq!(public.subnets[0].cidr.to_string(), docker_subnet);
    for network in [internal, public] {
        let bridge = network.bridge.as_deref().unwrap();
        assert!(
            fs::metadata(format!("/sys/class/net/{bridge}/bridge")).is_ok(),
            "{bridge} is a bridge device on this host"
        );
    }

    check_endpoints(
        &snapshot,
        &topology.multi,
        &[&topology.internal, &topology.public],
    );
    check_endpoints(&snapshot, &topology.fixed, &[&topology.internal]);

    let fixed = inventory.find_container(&topology.fixed.name).unwrap();
    assert_eq!(
        fixed.endpoints[0].ipv4.unwrap().to_string(),
        format!("10.213.{}.50", topology.n),
        "the static address"
    );
    for container in [&topology.fixed, &topology.multi] {
        let found = inventory.find_container(&container.name).unwrap();
        let on_internal = found
            .endpoints
            .iter()
            .find(|e| e.network_id == topology.internal.id)
            .unwrap();
        let v6 = on_internal
            .ipv6
            .expect("an IPv6 address on the IPv6 network");
        assert!(internal.subnets[1].cidr.contains(&IpAddr::V6(v6)), "{v6}");
    }

    let sidecar = inventory.find_container(&topology.sidecar.name).unwrap();
    assert!(sidecar.endpoints.is_empty());
    assert_eq!(
        sidecar.shares_network_of(),
        Some(topology.multi.id.as_str())
    );
}

#[test]
fn networks_json_lists_every_endpoint_with_its_veth() {
    let topology = Topology::create(100);
    let snapshot = snapshot();
    let names = [topology.internal.name.clone(), topology.public.name.clone()];
    let pins = netwatch::datapath::pins::root();
    let reports: Vec<NetworkReport> = networks::report(
        &snapshot,
        &netwatch::guard::Pins(&pins),
        &netwatch::guard::AgentView::default(),
        &names,
    )
    .unwrap();
    let json = serde_json::to_value(&reports).unwrap();
    let json = json.as_array().unwrap();
    assert_eq!(json.len(), 2);

    let mut seen = 0;
    for network in json {
        let name = network["name"].as_str().unwrap();
        assert_eq!(network["driver"], "bridge");
        assert_eq!(network["internal"], name == topology.internal.name);
        assert_eq!(network["enforced"], false, "nothing attached them");
        let expected: Vec<&TestContainer> = if name == topology.internal.name {
            vec![&topology.fixed, &topology.multi]
        } else {
            vec![&topology.multi]
        };
        let endpoints = network["endpoints"].as_array().unwrap();
        let containers: Vec<&str> = endpoints
            .iter()
            .map(|e| e["container"].as_str().unwrap())
            .collect();
        let mut want: Vec<&str> = expected.iter().map(|c| c.name.as_str()).collect();
        want.sort_unstable();
        assert_eq!(containers, want, "endpoints of {name}");
        for endpoint in endpoints {
            let container = topology
                .containers()
                .into_iter()
                .find(|c| c.name == endpoint["container"])
                .unwrap();
            assert_eq!(endpoint["container_id"], container.id.as_str());
            assert_eq!(endpoint["service"], Value::Null);
            let ifname = endpoint["host_ifname"]
                .as_str()
                .expect("host_ifname resolved");
            let ifindex = endpoint["host_ifindex"]
                .as_u64()
                .expect("host_ifindex resolved");
            assert_eq!(u64::from(sys_net(ifname, "ifindex")), ifindex);
            // The veth's container end carries the endpoint's MAC, and its
            // iflink is our host_ifindex.
            let mac = endpoint["mac"].as_str().unwrap();
            let inside = container.nsenter(&[
                "sh",
                "-c",
                &format!(
                    "for i in /sys/class/net/*; do [ \"$(cat $i/address)\" = {mac} ] && cat $i/iflink; done; true"
                ),
            ]);
            assert_eq!(inside, ifindex.to_string(), "{name}/{}", container.name);
            seen += 1;
        }
    }
    assert_eq!(seen, 3);

    // `netwatch inspect` of the sidecar shows the endpoints it shares.
    let kernel = netwatch::guard::Pins(&pins);
    let agent = netwatch::guard::AgentView::default();
    let report =
        netwatch::cli::inspect::report(&snapshot, &pins, &kernel, &agent, &topology.sidecar.name)
            .unwrap();
    assert_eq!(
        report.shares_network_of.as_deref(),
        Some(topology.multi.name.as_str())
    );
    assert_eq!(report.endpoints.len(), 2);
    assert!(
        report
            .endpoints
            .iter()
            .all(|e| e.host_ifindex.is_some() && !e.attached)
    );
    let unknown = netwatch::cli::inspect::report(
        &snapshot,
        &pins,
        &kernel,
        &agent,
        "nwtest-no-such-container",
    )
    .unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "no running container named \"nwtest-no-such-container\" (or with an id starting with \
         it); `docker ps` lists them"
    );
}

#[test]
fn missing_socket_is_one_clear_line() {
    let error = netwatch::cli::block_on(async {
        Ok(Client::connect_to("unix:///nonexistent/docker.sock").await)
    })
    .unwrap()
    .unwrap_err();
    assert!(
        matches!(error, DockerError::SocketMissing { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "cannot reach Docker at unix:///nonexistent/docker.sock: no such file; is dockerd running?"
    );
}
