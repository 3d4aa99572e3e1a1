//! A standalone observing session against dockerd: it attaches to every
//! container veth of the network for its own lifetime, sees real traffic
//! between two test containers with exact packet counts, enforces nothing,
//! pins nothing, and leaves the veths exactly as it found them.

use std::time::Duration;

use netwatch::{
    cli::block_on,
    flows::{FlowFilter, filter::Match},
    host::interfaces::{MacAddr, host_veth},
    standalone::Session,
};
use netwatch_tests::{
    agent::wait_for,
    docker::{TestContainer, TestNetwork, docker_ok, require_dockerd},
    fixture::{require_root, tcx_program_counts},
};

fn veth_name(container: &TestContainer, network: &TestNetwork) -> String {
    let mac: MacAddr = container
        .endpoint_field(network, "MacAddress")
        .parse()
        .unwrap();
    host_veth(container.pid(), mac).unwrap().ifname
}

#[test]
fn a_session_observes_exact_counts_and_leaves_nothing_attached() {
    require_root();
    require_dockerd();
    let network = TestNetwork::create("solo", &["--internal"]);
    let a = TestContainer::run("a", &["--network", &network.name]);
    let b = TestContainer::run("b", &["--network", &network.name]);
    let (a_veth, b_veth) = (veth_name(&a, &network), veth_name(&b, &network));
    let before = (tcx_program_counts(&a_veth), tcx_program_counts(&b_veth));
    let pins_before = netwatch_tests::netns::bpffs_entries_but_other_tests();

    let mut session = block_on(Session::start(std::slice::from_ref(&network.name), 1000)).unwrap();
    assert_eq!(session.attached().len(), 2);
    assert_eq!(tcx_program_counts(&a_veth).0, before.0.0 + 1);
    assert_eq!(tcx_program_counts(&a_veth).1, before.0.1 + 1);

    // Five pings from a to b (peers on one network): five echo requests
    // egress at a, five replies ingress at a.
    let b_ip = b.endpoint_field(&network, "IPAddress");
    docker_ok(&[
        "exec", &a.name, "ping", "-c", "5", "-i", "0.2", "-W", "1", &b_ip,
    ]);
    let pipeline = session.pipeline();
    let filter = FlowFilter::with(Match::Container(a.name.clone()))
        .and(Match::Proto("icmp".parse().unwrap()));
    wait_for("the echo flows", Duration::from_secs(5), || {
        session.take_records().unwrap();
        pipeline.flows(&filter).len() >= 2
    });
    let flows = pipeline.flows(&filter);
    let requests = flows
        .iter()
        .find(|f| {
            f.direction.name() == "egress" && f.dst.map(|d| d.to_string()) == Some(b_ip.clone())
        })
        .unwrap_or_else(|| panic!("no echo request flow in {flows:#?}"));
    assert_eq!(requests.packets, 5);
    assert_eq!(requests.verdict.name(), "forwarded");
    assert_eq!(requests.peer.as_deref(), Some(b.name.as_str()));
    // 14 Ethernet + 20 IPv4 + 8 ICMP + 56 busybox ping payload.
    assert_eq!(requests.bytes, 5 * 98);

    drop(session);
    assert_eq!(
        (tcx_program_counts(&a_veth), tcx_program_counts(&b_veth)),
        before,
        "the session's links went with it"
    );
    assert_eq!(
        netwatch_tests::netns::bpffs_entries_but_other_tests(),
        pins_before,
        "nothing was pinned"
    );
}
