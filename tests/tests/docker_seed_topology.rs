//! The seed's compose topology (frontend; backend and db internal; an
//! api-gateway on frontend+backend, an auth-service on backend+db) through
//! the real command line: `netwatch networks -o json` lists every endpoint
//! with its compose service and the veth the kernel says it has, and with
//! the agent running the internal networks read as enforced.

use std::{process::Command, time::Duration};

use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    compose::{Project, SEED},
    docker::{docker_ok, require_dockerd},
    fixture::require_root,
    reach::Netns,
};
use serde_json::Value;

/// The host end of a container's veth as the kernel describes it.
#[derive(Debug)]
struct KernelVeth {
    ifname: String,
    ifindex: u64,
    /// The bridge it is enslaved to.
    master: String,
}

/// `ip -json -details link show` in `netns` (the calling thread's if
/// none): the kernel's answer to RTM_GETLINK, through iproute2's netlink
/// client rather than netwatch's, so that a mistake in netwatch's lookup
/// cannot be repeated here.
fn kernel_links(netns: Option<&Netns>) -> Vec<Value> {
    let args = ["-json", "-details", "link", "show"];
    let out = match netns {
        Some(netns) => netns.run_ok("ip", &args),
        None => {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        }
    };
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The host end of the veth whose container end carries `mac` in process
/// `pid`'s namespace: the container end's peer ifindex (IFLA_LINK), an
/// interface of the host's with that index that is a veth whose own peer
/// is the container end, and its master (IFLA_MASTER).
fn kernel_veth(pid: u32, mac: &str) -> KernelVeth {
    let inside = kernel_links(Some(&Netns::of_pid(pid)));
    let end = inside
        .iter()
        .find(|l| l["address"].as_str() == Some(mac))
        .unwrap_or_else(|| panic!("no interface with {mac} in pid {pid}'s netns: {inside:#?}"));
    assert_eq!(end["linkinfo"]["info_kind"], "veth", "{end:#}");
    assert!(
        end["link_netnsid"].is_u64(),
        "its peer is in another netns: {end:#}"
    );
    let peer = end["link_index"].as_u64().expect("a veth names its peer");
    let host = kernel_links(None);
    let veth = host
        .iter()
        .find(|l| l["ifindex"].as_u64() == Some(peer))
        .unwrap_or_else(|| panic!("the host has no interface {peer}, {mac}'s peer"));
    assert_eq!(veth["linkinfo"]["info_kind"], "veth", "{veth:#}");
    assert_eq!(
        veth["link_index"], end["ifindex"],
        "host interface {peer} is the peer of {mac}'s interface: {veth:#}"
    );
    KernelVeth {
        ifname: veth["ifname"].as_str().unwrap().to_owned(),
        ifindex: peer,
        master: veth["master"]
            .as_str()
            .unwrap_or_else(|| panic!("{peer} is on no bridge: {veth:#}"))
            .to_owned(),
    }
}

/// The IPv4 addresses the kernel has on `ifname` (of the host).
fn kernel_addresses(ifname: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-json", "-4", "addr", "show", "dev", ifname])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let links: Value = serde_json::from_slice(&out.stdout).unwrap();
    links[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["local"].as_str().unwrap().to_owned())
        .collect()
}

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");

fn networks_json(networks: &[String]) -> Vec<Value> {
    let mut args = vec!["networks", "-o", "json"];
    args.extend(networks.iter().map(String::as_str));
    let out = Command::new(NETWATCH).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn networks_json_lists_the_seed_topology_with_the_right_veths() {
    require_root();
    require_dockerd();
    let project = Project::up("seed", &[SEED]);
    // The compose project name carries the `nwtest` prefix without dashes.
    assert!(
        project.name.starts_with("nwtest-"),
        "leftover checks find it"
    );
    let names: Vec<String> = ["frontend", "backend", "db"]
        .iter()
        .map(|n| project.network(n))
        .collect();
    let expected = [
        ("frontend", vec!["api-gateway", "frontend"]),
        ("backend", vec!["api-gateway", "auth-service"]),
        ("db", vec!["auth-service", "db"]),
    ];

    let json = networks_json(&names);
    assert_eq!(json.len(), 3);
    for (short, services) in &expected {
        let network = json
            .iter()
            .find(|n| n["name"] == project.network(short).as_str())
            .unwrap();
        assert_eq!(network["internal"], *short != "frontend", "{short}");
        let endpoints = network["endpoints"].as_array().unwrap();
        let mut got: Vec<&str> = endpoints
            .iter()
            .map(|e| e["service"].as_str().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(&got, services, "services on {short}");
        // Docker's own word on the network's gateway, which its bridge
        // carries.
        let gateway = docker_ok(&[
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
            &project.network(short),
        ]);
        for endpoint in endpoints {
            let container = endpoint["container"].as_str().unwrap();
            let pid: u32 = docker_ok(&["inspect", "--format", "{{.State.Pid}}", container])
                .parse()
                .unwrap();
            // The MAC by Docker, the veth by the kernel: nothing here comes
            // from netwatch but what is checked.
            let mac = docker_ok(&[
                "inspect",
                "--format",
                &format!(
                    "{{{{(index .NetworkSettings.Networks \"{}\").MacAddress}}}}",
                    project.network(short)
                ),
                container,
            ])
            .to_lowercase();
            assert_eq!(endpoint["mac"], mac.as_str(), "{container} on {short}");
            let veth = kernel_veth(pid, &mac);
            assert_eq!(
                (&endpoint["host_ifname"], &endpoint["host_ifindex"]),
                (
                    &Value::from(veth.ifname.as_str()),
                    &Value::from(veth.ifindex)
                ),
                "{container} on {short}: the kernel says {veth:?}"
            );
            assert!(
                kernel_addresses(&veth.master).contains(&gateway),
                "{container} on {short}: its veth's bridge {} does not carry the network's \
                 gateway {gateway}",
                veth.master
            );
        }
    }

    // With the agent running, the internal networks are enforced.
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let agent = AgentProcess::start(NETWATCH, &name_refs);
    wait_for("the agent's first sync", Duration::from_secs(10), || {
        agent.synced()
    });
    // `networks` reads the default pin root; the agent pins elsewhere, so
    // ask about its pins directly.
    let attached = netwatch::datapath::pins::attached_tc_ifindexes(agent.pin_root());
    let json = networks_json(&names);
    for network in &json {
        for endpoint in network["endpoints"].as_array().unwrap() {
            let ifindex = endpoint["host_ifindex"].as_u64().unwrap() as u32;
            assert!(
                attached.contains(&ifindex),
                "{} not attached",
                endpoint["container"]
            );
        }
    }
}
