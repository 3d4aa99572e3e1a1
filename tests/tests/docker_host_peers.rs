//! The host's end of a flow, named: a `--network host` container that
//! connects to a guarded container (through the container's address, from
//! the host's stack), or that the container connects to (through the
//! bridge's address), is the peer of that flow by its own name, and a plain
//! host process connecting the same way is `host`. Against the real
//! dockerd, with the agent on one test network (`--uplink none`, private
//! pins). Traffic goes only from the host to a container of the test's.

use std::{
    net::{IpAddr, TcpListener, TcpStream},
    time::Duration,
};

use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{TestContainer, TestNetwork, docker_ok, require_dockerd},
    fixture::require_root,
    reach::Netns,
};
use serde_json::Value;

const AGENT: &str = env!("CARGO_BIN_EXE_netwatch-under-test");
const SETTLE: Duration = Duration::from_secs(20);
/// The host-mode container's connection goes to this port, the host
/// process's to the next.
const PORT: u16 = 8080;

/// A listener on `ip:port` inside `server`'s network namespace. The
/// kernel completes each connection's handshake and holds it (nothing
/// accepts, nothing closes) for as long as the listener lives.
fn serve(server: &TestContainer, ip: IpAddr, port: u16) -> TcpListener {
    Netns::of_pid(server.pid())
        .run(|| TcpListener::bind((ip, port)))
        .unwrap_or_else(|e| panic!("cannot listen on {ip}:{port} in {}: {e}", server.name))
}

/// Runs `script` with `sh -c` in `container`, in the background.
fn in_background(container: &TestContainer, script: &str) {
    docker_ok(&["exec", "-d", &container.name, "sh", "-c", script]);
}

/// Whether a socket of the host's namespace listens on TCP `port` (IPv4
/// or IPv6; state 0A in /proc/net/tcp or tcp6, which this test process,
/// in the host's namespace, sees).
fn host_listens(port: u16) -> bool {
    let local = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        let table = std::fs::read_to_string(table).unwrap_or_default();
        table.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "0A"
        })
    })
}

/// The server's flows with `port` at either end (both directions), as the
/// API answers.
fn flows_on(agent: &AgentProcess, server: &TestContainer, port: u16) -> Vec<Value> {
    agent
        .flows_json(&["--proto", "tcp", "--container", &server.name])
        .into_iter()
        .filter(|f| f["dst_port"] == port || f["src_port"] == port)
        .collect()
}

#[test]
fn a_host_mode_containers_connections_are_named_after_it_and_a_host_processs_is_host() {
    require_root();
    require_dockerd();
    let network = TestNetwork::create("hostpeer", &[]);
    let server = TestContainer::run("server", &["--network", &network.name]);
    let client = TestContainer::run(
        "hostmode",
        &[
            "--network",
            "host",
            "--label",
            "com.docker.compose.service=exporter",
        ],
    );
    let server_ip: IpAddr = server
        .endpoint_field(&network, "IPAddress")
        .parse()
        .expect("the server's address");
    let gateway = network.ipam_field("Gateway");
    let mut agent = AgentProcess::start(AGENT, &[&network.name]);
    wait_for("the agent's first sync", SETTLE, || agent.synced());

    // 1. The host-mode container connects through the container's
    // address: its packets leave the host's stack from the bridge's
    // address.
    let _listener = serve(&server, server_ip, PORT);
    in_background(
        &client,
        &format!("(echo hello; sleep 3600) | nc {server_ip} {PORT}"),
    );
    // 2. A process of the host itself (this test), the same way.
    let _host_listener = serve(&server, server_ip, PORT + 1);
    let _host_connection =
        TcpStream::connect((server_ip, PORT + 1)).expect("the host reaches the server container");
    // 3. The other way: the container connects to the bridge's address,
    // where the host-mode container listens (busybox nc: a dual-stack
    // [::] socket, so the accepted socket is an IPv6 one with mapped
    // addresses), on a port free on the host.
    let host_port = TcpListener::bind("[::]:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    in_background(&client, &format!("sleep 3600 | nc -l -p {host_port}"));
    wait_for("the host-mode container's listener", SETTLE, || {
        host_listens(host_port)
    });
    in_background(
        &server,
        &format!("(echo hello; sleep 3600) | nc {gateway} {host_port}"),
    );

    let mut seen = Vec::new();
    wait_for("the three connections' flows, named", SETTLE, || {
        seen = [PORT, PORT + 1, host_port]
            .iter()
            .flat_map(|&port| flows_on(&agent, &server, port))
            .collect();
        seen.len() == 6 && seen.iter().all(|f| f["peer"] != Value::Null)
    });
    for flow in &seen {
        let from_host_side = if flow["direction"] == "ingress" {
            &flow["src"]
        } else {
            &flow["dst"]
        };
        assert_eq!(
            from_host_side,
            gateway.as_str(),
            "the host end is the bridge's address: {flow}"
        );
        let by_host_process = flow["dst_port"] == PORT + 1 || flow["src_port"] == PORT + 1;
        if by_host_process {
            assert_eq!(flow["peer"], "host", "a host process: {flow}");
            assert_eq!(flow["peer_kind"], "host", "{flow}");
            assert_eq!(flow["peer_service"], Value::Null, "{flow}");
        } else {
            assert_eq!(flow["peer"], client.name.as_str(), "{flow}");
            assert_eq!(flow["peer_kind"], "host-mode", "{flow}");
            assert_eq!(flow["peer_service"], "exporter", "{flow}");
        }
    }

    // The table says so too.
    let table = agent.flows(&["--proto", "tcp", "--container", &server.name]);
    let table = String::from_utf8_lossy(&table.stdout);
    eprintln!("{table}");
    assert!(
        table.contains(&format!("{} (host mode)", client.name)),
        "{table}"
    );
    assert!(agent.stop(), "the agent exits cleanly: {}", agent.log());
}
