//! The programs attached to a real veth in namespaces the test creates, with
//! real traffic: enforcement, pinning that outlives the process that
//! attached, adoption without duplicate attachments, and a clean detach.

use std::net::IpAddr;

use netwatch::{
    datapath::{Attachment, Datapath, LoadOptions, detach_all, pins},
    policy::{Cidr, InterfacePolicy, compile},
};
use netwatch_common::{
    endpoint::{EndpointPolicy, policy_flags},
    reason::DropReason,
};
use netwatch_tests::{
    fixture::{require_root, tcx_program_counts},
    netns::{PinDir, TestHost},
};

fn internal_endpoint(host: &TestHost, ifindex: u32) -> InterfacePolicy {
    InterfacePolicy {
        ifindex,
        policy: EndpointPolicy {
            flags: policy_flags::ENFORCE | policy_flags::HAS_IPV4,
            scope: 1,
            ipv4: host.container_ip().octets(),
            gateway_v4: host.gateway().octets(),
            mac: host.mac(&host.container_ns()),
            ..EndpointPolicy::default()
        },
        networks: vec![Cidr::new(IpAddr::V4(host.gateway()), 24).unwrap()],
        published: Vec::new(),
        allow: Vec::new(),
    }
}

fn programs_on(host: &TestHost, ifname: &str) -> (usize, usize) {
    host.in_ns(&host.host_ns(), || tcx_program_counts(ifname))
}

#[test]
fn internal_endpoint_is_enforced_on_a_real_veth_and_stays_enforced_after_the_process_lets_go() {
    require_root();
    let host = TestHost::create();
    let pin_dir = PinDir::create();
    let (c, gw, peer, outside) = (
        host.container_ns(),
        host.gateway(),
        host.peer_ip(),
        TestHost::OUTSIDE_IP,
    );

    // Without netwatch everything is reachable: the test can see a difference.
    assert!(
        host.ping(&c, peer),
        "container cannot reach its peer before attach"
    );
    assert!(
        host.ping(&c, gw),
        "container cannot reach the gateway before attach"
    );
    assert!(
        host.ping(&c, outside),
        "container cannot reach the outside before attach"
    );

    let ifindex = host.in_ns(&host.host_ns(), || {
        nix::net::if_::if_nametoindex(TestHost::CONTAINER_VETH).expect("vc exists")
    });
    let options = LoadOptions {
        pin_root: Some(pin_dir.0.clone()),
        ..LoadOptions::default()
    };
    let mut datapath = Datapath::load(&options).expect("programs load");
    let tables = compile(&[internal_endpoint(&host, ifindex)], &[]).unwrap();
    datapath.apply(&tables).unwrap();
    let attached = host.in_ns(&host.host_ns(), || {
        datapath.attach_veth(TestHost::CONTAINER_VETH, ifindex)
    });
    assert_eq!(attached.unwrap(), Attachment::Attached);
    assert!(pins::veth_attached(&pin_dir.0, ifindex));

    assert!(host.ping(&c, peer), "intra-network traffic must pass");
    assert!(
        !host.ping(&c, gw),
        "the gateway (the host) must be unreachable"
    );
    assert!(!host.ping(&c, outside), "the outside must be unreachable");
    let counts = datapath.verdict_counts().unwrap();
    assert!(counts[DropReason::HostAccess as usize] >= 1, "{counts:?}");
    assert!(counts[DropReason::NotInNetwork as usize] >= 1, "{counts:?}");
    assert!(counts[DropReason::None as usize] >= 1, "{counts:?}");

    // Every fd this process held goes away, as when the agent is killed.
    drop(datapath);
    let pinned = netwatch::datapath::pinned::read_counters(&pin_dir.0)
        .unwrap()
        .expect("counters are pinned");
    assert_eq!(
        pinned.verdicts, counts,
        "status reads the counters the programs write"
    );
    assert!(
        !host.ping(&c, outside),
        "enforcement must outlive the process"
    );
    assert!(host.ping(&c, peer));
    assert_eq!(programs_on(&host, TestHost::CONTAINER_VETH), (1, 1));

    // A new load adopts the pinned maps and does not attach twice.
    let mut adopted = Datapath::load(&options).expect("programs load again");
    let again = host.in_ns(&host.host_ns(), || {
        adopted.attach_veth(TestHost::CONTAINER_VETH, ifindex)
    });
    assert_eq!(again.unwrap(), Attachment::AlreadyAttached);
    assert_eq!(programs_on(&host, TestHost::CONTAINER_VETH), (1, 1));
    let counts = adopted.verdict_counts().unwrap();
    assert!(
        counts[DropReason::NotInNetwork as usize] >= 2,
        "the adopted counters are the ones the attached programs write: {counts:?}"
    );
    drop(adopted);

    // Detach removes every pin and the programs with them.
    let removed = detach_all(&pin_dir.0).unwrap();
    assert!(
        removed
            .iter()
            .any(|p| p.starts_with(pins::links_dir(&pin_dir.0)))
    );
    assert!(!pin_dir.0.exists());
    assert_eq!(programs_on(&host, TestHost::CONTAINER_VETH), (0, 0));
    assert!(host.ping(&c, outside), "traffic flows again after detach");
}

#[test]
fn attach_is_refused_without_a_pin_root_and_for_a_vanished_interface() {
    require_root();
    let host = TestHost::create();
    let pin_dir = PinDir::create();
    let mut unpinned = Datapath::load(&LoadOptions::default()).unwrap();
    let err = host
        .in_ns(&host.host_ns(), || {
            unpinned.attach_veth(TestHost::CONTAINER_VETH, 1)
        })
        .unwrap_err();
    assert!(
        err.to_string().contains("without a bpffs pin directory"),
        "{err}"
    );

    let mut pinned = Datapath::load(&LoadOptions {
        pin_root: Some(pin_dir.0.clone()),
        ..LoadOptions::default()
    })
    .unwrap();
    let err = host
        .in_ns(&host.host_ns(), || pinned.attach_veth("nosuchveth0", 4242))
        .unwrap_err();
    assert!(err.to_string().contains("no longer ifindex 4242"), "{err}");
    assert!(!pins::veth_attached(&pin_dir.0, 4242));
}

#[test]
fn every_map_of_the_object_is_named_in_the_contract() {
    require_root();
    let datapath = Datapath::load(&LoadOptions::default()).unwrap();
    let mut expected: Vec<String> = netwatch_common::names::ALL_MAPS
        .iter()
        .map(|s| s.to_string())
        .collect();
    expected.sort();
    assert_eq!(datapath.map_names(), expected);
}

#[test]
fn uplink_shield_drops_inbound_packets_for_protected_subnets_on_a_real_interface() {
    require_root();
    let host = TestHost::create();
    let pin_dir = PinDir::create();
    let o = host.outside_ns();
    assert!(
        host.ping(&o, host.container_ip()),
        "outside cannot reach the container before attach"
    );

    // In ns H, `vo` plays the host's uplink.
    let uplink = "vo";
    let ifindex = host.in_ns(&host.host_ns(), || {
        nix::net::if_::if_nametoindex(uplink).expect("vo exists")
    });
    let mut datapath = Datapath::load(&LoadOptions {
        pin_root: Some(pin_dir.0.clone()),
        ..LoadOptions::default()
    })
    .unwrap();
    datapath
        .protect(&[Cidr::new(IpAddr::V4(host.gateway()), 24).unwrap()])
        .unwrap();
    let attached = host.in_ns(&host.host_ns(), || datapath.attach_uplink(uplink, ifindex));
    assert_eq!(attached.unwrap(), Attachment::Attached);

    assert!(
        !host.ping(&o, host.container_ip()),
        "inbound to the protected subnet must drop"
    );
    assert!(
        !host.ping(&o, host.gateway()),
        "the protected gateway address too"
    );
    assert!(
        host.ping(&o, std::net::Ipv4Addr::new(203, 0, 113, 1)),
        "the host's own uplink address stays reachable"
    );
    let counts = datapath.uplink_counts().unwrap();
    assert!(
        counts[DropReason::ProtectedPrefix as usize] >= 2,
        "{counts:?}"
    );
    assert!(counts[DropReason::None as usize] >= 1, "{counts:?}");

    drop(datapath);
    assert!(
        !host.ping(&o, host.container_ip()),
        "the shield outlives the process"
    );
    detach_all(&pin_dir.0).unwrap();
    assert!(
        host.ping(&o, host.container_ip()),
        "traffic flows again after detach"
    );
}

#[test]
fn network_wide_policy_on_the_bridge_holds_routed_paths_before_any_veth_is_attached() {
    require_root();
    let host = TestHost::create();
    let pin_dir = PinDir::create();
    let (c, o) = (host.container_ns(), host.outside_ns());
    assert!(
        host.ping(&c, TestHost::OUTSIDE_IP),
        "no route out before attach"
    );

    let bridge = "br0";
    let ifindex = host.in_ns(&host.host_ns(), || {
        nix::net::if_::if_nametoindex(bridge).expect("br0 exists")
    });
    let mut spec = internal_endpoint(&host, ifindex);
    spec.policy.flags |= policy_flags::NETWORK_WIDE;
    spec.policy.ipv4 = [0; 4];
    spec.policy.mac = [0; 6];
    let mut datapath = Datapath::load(&LoadOptions {
        pin_root: Some(pin_dir.0.clone()),
        ..LoadOptions::default()
    })
    .unwrap();
    datapath.apply(&compile(&[spec], &[]).unwrap()).unwrap();
    let attached = host.in_ns(&host.host_ns(), || datapath.attach_bridge(bridge, ifindex));
    assert_eq!(attached.unwrap(), Attachment::Attached);

    // The container's own veth carries nothing of netwatch's.
    assert_eq!(programs_on(&host, TestHost::CONTAINER_VETH), (0, 0));
    assert!(
        host.ping(&c, host.peer_ip()),
        "bridged traffic inside the network passes"
    );
    assert!(!host.ping(&c, host.gateway()), "the host is unreachable");
    assert!(
        !host.ping(&c, TestHost::OUTSIDE_IP),
        "routed egress is held"
    );
    assert!(
        !host.ping(&o, host.container_ip()),
        "routed ingress from outside is held"
    );
    let counts = datapath.verdict_counts().unwrap();
    assert!(counts[DropReason::HostAccess as usize] >= 1, "{counts:?}");
    assert!(counts[DropReason::NotInNetwork as usize] >= 2, "{counts:?}");
}

#[test]
fn reconcile_attaches_the_plan_idempotently_and_detaches_what_leaves_it() {
    use netwatch::agent::{ContainerInterface, HostState, NetworkState, plan, reconcile};
    require_root();
    let host = TestHost::create();
    let pin_dir = PinDir::create();
    let (h, c) = (host.host_ns(), host.container_ns());
    let index = |name: &str| {
        host.in_ns(&h, || {
            nix::net::if_::if_nametoindex(name).expect("interface exists")
        })
    };
    let network = NetworkState {
        name: "nwtest-internal".into(),
        driver: "bridge".into(),
        internal: true,
        bridge: Some(("br0".into(), index("br0"))),
        macvlan_parent: None,
        overlay_sandbox: None,
        subnets: vec![Cidr::new(IpAddr::V4(host.gateway()), 24).unwrap()],
        gateways: vec![IpAddr::V4(host.gateway())],
        labels: Default::default(),
    };
    let endpoint = |container: &str, ns: &str, veth: &str, ip| ContainerInterface {
        container: container.into(),
        container_id: String::new(),
        network: network.name.clone(),
        host_ifname: veth.into(),
        host_ifindex: index(veth),
        ipv4: Some(ip),
        ipv6: None,
        mac: host.mac(ns),
        container_labels: Default::default(),
        published: Vec::new(),
        macvlan: None,
        overlay: None,
    };
    let mut state = HostState {
        networks: vec![network.clone()],
        endpoints: vec![
            endpoint("c", &c, "vc", host.container_ip()),
            endpoint("p", &host.peer_ns(), "vp", host.peer_ip()),
        ],
        host_addrs: vec![IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 1))],
        overlay_members: Vec::new(),
        bridge_ports: Vec::new(),
        ..HostState::default()
    };
    // Baseline, nothing of netwatch's in the path: all three answer, so
    // the drops below are the plan's.
    assert!(host.ping(&c, host.peer_ip()), "baseline: the neighbour");
    assert!(host.ping(&c, host.gateway()), "baseline: the gateway");
    assert!(host.ping(&c, TestHost::OUTSIDE_IP), "baseline: the outside");
    let mut datapath = Datapath::load(&LoadOptions {
        pin_root: Some(pin_dir.0.clone()),
        ..LoadOptions::default()
    })
    .unwrap();

    let first = host
        .in_ns(&h, || reconcile(&mut datapath, &plan(&state)))
        .unwrap();
    assert_eq!(first.attached.len(), 3, "{first:?}");
    assert!(first.failed.is_empty(), "{first:?}");
    assert!(host.ping(&c, host.peer_ip()));
    assert!(!host.ping(&c, host.gateway()));
    assert!(!host.ping(&c, TestHost::OUTSIDE_IP));

    let second = host
        .in_ns(&h, || reconcile(&mut datapath, &plan(&state)))
        .unwrap();
    assert_eq!(second, Default::default(), "a second run changes nothing");
    assert_eq!(programs_on(&host, "vc"), (1, 1));
    assert_pins_are_roots_alone(&pin_dir.0);

    state.endpoints.retain(|e| e.container != "p");
    let third = host
        .in_ns(&h, || reconcile(&mut datapath, &plan(&state)))
        .unwrap();
    assert_eq!(third.detached, vec![index("vp")]);
    assert_eq!(programs_on(&host, "vp"), (0, 0));
    assert!(!pins::veth_attached(&pin_dir.0, index("vp")));

    let last = host
        .in_ns(&h, || {
            reconcile(&mut datapath, &plan(&HostState::default()))
        })
        .unwrap();
    assert_eq!(last.detached.len(), 2, "{last:?}");
    assert!(
        host.ping(&c, TestHost::OUTSIDE_IP),
        "nothing of netwatch's is left in the path"
    );
}

/// Every directory under the pin root is 0700 and every pin 0600 or
/// stricter: pinned objects are root's alone.
fn assert_pins_are_roots_alone(root: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mut pending = vec![root.to_path_buf()];
    let mut seen = 0;
    while let Some(path) = pending.pop() {
        let meta = std::fs::metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:o}", path.display());
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
            seen += 1;
        }
    }
    assert!(seen > 10, "maps and links are pinned: {seen}");
}
