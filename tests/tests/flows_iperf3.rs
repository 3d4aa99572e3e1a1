//! netwatch's byte count against iperf3's own, on a real container-to-
//! container TCP transfer, through a standalone observing session.
//!
//! What the hooks count: every packet as the veth sees it, Ethernet header
//! included. TCP over a veth travels in GSO super-packets of up to 64 KiB,
//! so a "packet" here is one skb, and its headers (14 Ethernet + 20 IPv4 +
//! 20–60 TCP) are counted once per skb. So for a flow of P packets carrying
//! a payload of N bytes: 54·P ≤ bytes − N ≤ 94·P. N is what iperf3's client
//! wrote plus the 37-byte cookie its data connection starts with. The
//! client is paced (`-b`): unpaced, it ends the test with data still in its
//! socket buffer, which the server's close then discards, so part of what
//! iperf3 counts as sent never crosses the veth. (Its server's "received"
//! undercounts by its last read.)

use std::{process::Command, time::Duration};

use netwatch::{
    cli::block_on,
    flows::{FlowFilter, filter::Match},
    standalone::Session,
};
use netwatch_tests::{
    docker::{TestContainer, TestNetwork, require_dockerd},
    fixture::require_root,
    reach::{Netns, assert_route_via},
};
use serde_json::Value;

const PORT: &str = "5201";
const COOKIE: u64 = 37;

fn nsenter(pid: u32, args: &[&str]) -> Command {
    let mut command = Command::new("nsenter");
    command.args(["-t", &pid.to_string(), "-n"]).args(args);
    command
}

#[test]
fn flows_bytes_agree_with_iperf3_within_the_header_overhead() {
    require_root();
    require_dockerd();
    let network = TestNetwork::create("iperf", &["--internal"]);
    let client = TestContainer::run("client", &["--network", &network.name]);
    let server = TestContainer::run("server", &["--network", &network.name]);
    let server_ip = server.endpoint_field(&network, "IPAddress");
    assert_route_via(
        &Netns::of_pid(client.pid()),
        server_ip.parse().unwrap(),
        &["eth"],
    );
    let mut session = block_on(Session::start(std::slice::from_ref(&network.name), 1000)).unwrap();

    // A one-off server in the server container's namespace, the client in
    // the client's (iperf3 is the host's binary, run with nsenter -n).
    let mut iperf_server = nsenter(server.pid(), &["iperf3", "-s", "-1", "-p", PORT])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 is installed by `cargo xtask setup`");
    std::thread::sleep(Duration::from_millis(300));
    let out = nsenter(
        client.pid(),
        &[
            "iperf3", "-c", &server_ip, "-p", PORT, "-n", "20M", "-b", "400M", "-J",
        ],
    )
    .output()
    .unwrap();
    let _ = iperf_server.wait();
    assert!(
        out.status.success(),
        "iperf3 client: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sent = report["end"]["sum_sent"]["bytes"].as_u64().unwrap();
    let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap();
    assert!(received >= 10 * 1024 * 1024, "iperf3 moved only {received}");

    let pipeline = session.pipeline();
    let filter = FlowFilter::with(Match::Container(client.name.clone()))
        .and(Match::Proto("tcp".parse().unwrap()))
        .and(Match::Port(5201));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let flows = loop {
        session.take_records().unwrap();
        let flows = pipeline.flows(&filter);
        if flows
            .iter()
            .any(|f| f.direction.name() == "egress" && f.bytes > received)
        {
            break flows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no egress flow with more than {received} bytes: {:#?}",
            pipeline.flows(&FlowFilter::default())
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The data connection is the busiest egress flow to the server's port.
    let data = flows
        .iter()
        .filter(|f| f.direction.name() == "egress" && f.dst_port == 5201)
        .max_by_key(|f| f.bytes)
        .unwrap();
    let (low, high) = (
        sent + COOKIE + 54 * data.packets,
        sent + COOKIE + 94 * data.packets,
    );
    println!(
        "iperf3 wrote {sent} and read {received} bytes; netwatch counted {} bytes in {} packets \
         ({:.1} bytes of headers per packet); expected {low}..={high}",
        data.bytes,
        data.packets,
        data.bytes.saturating_sub(sent + COOKIE) as f64 / data.packets as f64
    );
    assert!(
        (low..=high).contains(&data.bytes),
        "{} bytes in {} packets, outside {low}..={high}",
        data.bytes,
        data.packets
    );
}
