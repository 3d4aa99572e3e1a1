//! DNS names against a real dockerd: a container on a bridge network of
//! the test's own, started with `--dns 203.0.113.7`, resolves test names
//! through Docker's embedded resolver, which forwards from the container's
//! namespace to a DNS server of the test's own in the outside namespace
//! (203.0.113.7); the forwarded query and its answer cross the
//! container's veth. The container then connects to the answered address
//! (203.0.113.8, on the outside namespace's loopback): its flow carries
//! the name (`dst_name`), `netwatch dns -o json` lists the query with its
//! answer, latency and resolver, and a name the server answers NXDOMAIN
//! is listed as such. Traffic goes only between the test's container and
//! its own outside namespace.

use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{TestContainer, TestNetwork, docker, require_dockerd},
    fixture::{require_root, tcx_program_counts},
    netns::run,
    outside::OutsideLink,
    reach::assert_route_via,
};
use serde_json::Value;
use simple_dns::{CLASS, Packet, PacketFlag, QTYPE, RCODE, ResourceRecord, TYPE, rdata::RData};

const AGENT: &str = env!("CARGO_BIN_EXE_netwatch-under-test");
const SETTLE: Duration = Duration::from_secs(60);

/// The name the test's server knows, and its address (on the outside
/// namespace's loopback).
const KNOWN: &str = "svc.netwatch.test";
const KNOWN_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 8);
const SERVICE_PORT: u16 = 8080;
/// A name the server answers NXDOMAIN.
const UNKNOWN: &str = "nope.netwatch.test";

/// The answer to one query: `KNOWN`'s A record, no AAAA record for it
/// (NOERROR, empty), NXDOMAIN for any other name.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let query = Packet::parse(query).ok()?;
    let question = query.questions.first()?.clone();
    let mut reply = Packet::new_reply(query.id());
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if query.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    let name = question.qname.to_string();
    let name = name.trim_end_matches('.');
    if name.eq_ignore_ascii_case(KNOWN) {
        if question.qtype == QTYPE::TYPE(TYPE::A) {
            reply.answers.push(ResourceRecord::new(
                question.qname.clone(),
                CLASS::IN,
                300,
                RData::A(KNOWN_ADDR.into()),
            ));
        }
    } else {
        *reply.rcode_mut() = RCODE::NameError;
    }
    reply.questions.push(question);
    reply.build_bytes_vec().ok()
}

/// The test's DNS server and the service behind the name, in the outside
/// namespace; stopped on drop.
struct OutsideServers {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl OutsideServers {
    fn start(outside: &OutsideLink) -> OutsideServers {
        // Sockets keep the namespace they were made in.
        let (dns, service) = outside.netns().run(|| {
            (
                UdpSocket::bind((OutsideLink::OUTSIDE_IP, 53)).expect("bind the DNS server"),
                TcpListener::bind((KNOWN_ADDR, SERVICE_PORT)).expect("bind the service"),
            )
        });
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        dns.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        service.set_nonblocking(true).expect("nonblocking");
        let dns_thread = {
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut buffer = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, from)) = dns.recv_from(&mut buffer) else {
                        continue;
                    };
                    if let Some(reply) = answer(&buffer[..len]) {
                        let _ = dns.send_to(&reply, from);
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let service_thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match service.accept() {
                        Ok((mut stream, _)) => {
                            let _ = std::io::Write::write_all(&mut stream, b"hello\n");
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
        };
        OutsideServers {
            stop,
            answered,
            threads: vec![dns_thread, service_thread],
        }
    }
}

impl Drop for OutsideServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A file of the test's, removed however the test ends.
struct RemovedOnDrop(std::path::PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `netwatch dns --follow -o json --container NAME`, its lines sent to a
/// channel as they come; killed on drop.
struct Follower {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Follower {
    fn start(agent: &AgentProcess, container: &str) -> Follower {
        let mut child = Command::new(AGENT)
            .args([
                "dns",
                "--follow",
                "-o",
                "json",
                "--container",
                container,
                "--socket",
            ])
            .arg(agent.api_socket())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run netwatch dns --follow");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// The first entry `wanted` accepts, waiting at most `wait`.
    fn until(&self, wait: Duration, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            let entry: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("dns --follow printed {line:?}: {e}"));
            if wanted(&entry) {
                return Some(entry);
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `netwatch dns -o json --container NAME` asked of the agent.
fn dns_entries(agent: &AgentProcess, container: &str) -> Vec<Value> {
    let out = Command::new(AGENT)
        .args(["dns", "-o", "json", "--container", container, "--socket"])
        .arg(agent.api_socket())
        .output()
        .expect("run netwatch dns");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn entry_for<'a>(entries: &'a [Value], name: &str, rcode: &str) -> Option<&'a Value> {
    entries
        .iter()
        .find(|e| e["name"] == name && e["type"] == "A" && e["rcode"] == rcode)
}

#[test]
fn a_container_resolves_through_a_test_server_and_its_flow_and_dns_carry_the_name() {
    require_root();
    require_dockerd();
    let outside = OutsideLink::create();
    run(&[
        "ip",
        "-n",
        outside.name(),
        "addr",
        "add",
        &format!("{KNOWN_ADDR}/32"),
        "dev",
        "lo",
    ]);
    assert_route_via(outside.netns(), IpAddr::V4(OutsideLink::HOST_IP), &["eth0"]);
    let servers = OutsideServers::start(&outside);
    let network = TestNetwork::create("dns", &[]);
    outside.add_route_via_host(&network.ipam_field("Subnet"));
    let outside_ip = OutsideLink::OUTSIDE_IP.to_string();
    let alias = format!("{}-alias", network.name);
    let client = TestContainer::run(
        "dnsc",
        &[
            "--network",
            &network.name,
            "--network-alias",
            &alias,
            "--dns",
            &outside_ip,
        ],
    );
    // The container's packets to the test's addresses go out through the
    // outside link, nowhere else.
    let route = client.nsenter(&["ip", "route", "get", &KNOWN_ADDR.to_string()]);
    assert!(
        route.contains(&format!("via {}", network.ipam_field("Gateway"))),
        "the container's route to {KNOWN_ADDR} is not through its network's gateway: {route}"
    );

    let flow_log = RemovedOnDrop(std::env::temp_dir().join(format!("{}.flows.log", client.name)));
    let agent = AgentProcess::start_with_args(
        AGENT,
        &[&network.name],
        &[],
        &["--flow-log", flow_log.0.to_str().expect("UTF-8 path")],
    );
    wait_for("the agent's first sync", SETTLE, || agent.synced());
    let veth = nix::net::if_::if_indextoname(client.host_veth(&network)).expect("veth");
    let veth = veth.to_str().expect("UTF-8").to_string();
    wait_for("the container's veth attached", SETTLE, || {
        tcx_program_counts(&veth) == (1, 1)
    });
    assert!(
        agent
            .log()
            .contains("DNS queries and answers on guarded veths: recorded"),
        "the agent does not record DNS:\n{}",
        agent.log()
    );

    // A live follower sees the answer come: it is subscribed before the
    // query (the agent counts it as an observer from then on).
    let follower = Follower::start(&agent, &client.name);
    wait_for("the live DNS stream subscribed", SETTLE, || {
        let status = agent.netwatch(&["status", "-o", "json"]);
        serde_json::from_slice::<Value>(&status.stdout)
            .is_ok_and(|s| s["pipeline"]["api"]["observers"].as_u64() >= Some(1))
    });
    // Through the embedded resolver (127.0.0.11 in the container), which
    // forwards to the test's server from the container's namespace.
    let resolved =
        docker(&["exec", &client.name, "busybox", "nslookup", KNOWN]).unwrap_or_else(|e| {
            panic!(
                "the container cannot resolve {KNOWN} ({} queries answered): {e}",
                servers.answered.load(Ordering::Relaxed)
            )
        });
    assert!(
        resolved.contains(&KNOWN_ADDR.to_string()),
        "nslookup did not give {KNOWN_ADDR}: {resolved}"
    );
    let greeting = docker(&[
        "exec",
        &client.name,
        "nc",
        "-w",
        "5",
        &KNOWN_ADDR.to_string(),
        &SERVICE_PORT.to_string(),
    ])
    .expect("the container reaches the named service");
    assert!(greeting.contains("hello"), "{greeting}");
    // Busybox's exit status for an NXDOMAIN is not the point: what netwatch
    // lists of it is, below.
    let _ = docker(&["exec", &client.name, "busybox", "nslookup", UNKNOWN]);

    // The flow to the answered address carries the name, and so do its
    // answers, at their source.
    let mut flows = Vec::new();
    wait_for("the service flow named both ways", SETTLE, || {
        flows = agent.flows_json(&["--container", &client.name, "--port", "8080"]);
        let named = |direction: &str, end: &str, name_field: &str| {
            flows.iter().any(|f| {
                f["direction"] == direction
                    && f[end] == KNOWN_ADDR.to_string()
                    && f[name_field] == KNOWN
            })
        };
        named("egress", "dst", "dst_name") && named("ingress", "src", "src_name")
    });
    // The container's own end has no name.
    assert!(
        flows
            .iter()
            .all(|f| f.get("src_name").is_none() || f["direction"] == "ingress"),
        "{flows:#?}"
    );

    let live = follower
        .until(SETTLE, |e| e["name"] == KNOWN && e["rcode"] == "NOERROR")
        .expect("dns --follow showed the answer");
    assert!(live["latency_us"].as_u64().is_some(), "{live:#}");
    drop(follower);

    // The flow log's JSON lines carry it too.
    wait_for("the flow log naming the service", SETTLE, || {
        std::fs::read_to_string(&flow_log.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .any(|record| {
                record["dst"] == KNOWN_ADDR.to_string()
                    && record["dst_port"] == SERVICE_PORT
                    && record["dst_name"] == KNOWN
            })
    });

    // `dns` lists the query with its answer, latency and resolver, and the
    // NXDOMAIN as such.
    let mut entries = Vec::new();
    wait_for("the queries listed by `netwatch dns`", SETTLE, || {
        entries = dns_entries(&agent, &client.name);
        entry_for(&entries, KNOWN, "NOERROR").is_some()
            && entry_for(&entries, UNKNOWN, "NXDOMAIN").is_some()
    });
    let known = entry_for(&entries, KNOWN, "NOERROR").expect("listed");
    assert_eq!(known["resolver"], outside_ip, "{known:#}");
    assert_eq!(known["resolver_port"], 53, "{known:#}");
    assert_eq!(known["container"], client.name.as_str(), "{known:#}");
    assert_eq!(known["network"], network.name.as_str(), "{known:#}");
    assert!(known["latency_us"].as_u64().is_some(), "{known:#}");
    assert!(
        known["answers"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["data"] == KNOWN_ADDR.to_string())),
        "{known:#}"
    );
    let unknown = entry_for(&entries, UNKNOWN, "NXDOMAIN").expect("listed");
    assert!(unknown.get("answers").is_none(), "{unknown:#}");
    assert!(unknown["latency_us"].as_u64().is_some(), "{unknown:#}");

    // The table says what it cannot see.
    let table = Command::new(AGENT)
        .args(["dns", "--container", &client.name, "--socket"])
        .arg(agent.api_socket())
        .output()
        .expect("run netwatch dns");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(KNOWN) && table.contains("NXDOMAIN"),
        "{table}"
    );
    assert!(table.contains("127.0.0.11"), "{table}");
    println!("{table}");

    // `status` shows what the kernel recorded and the agent read of it.
    let status = agent.netwatch(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    let dns_line = status
        .lines()
        .find(|l| l.starts_with("dns "))
        .unwrap_or_else(|| panic!("no dns line in status:\n{status}"));
    assert!(
        !dns_line.contains(" 0 recorded") && dns_line.contains("0 lost (ring buffer full)"),
        "{dns_line}"
    );
    assert!(dns_line.contains("0 unreadable"), "{dns_line}");
    println!("{dns_line}");

    // `explain` takes the embedded resolver and the alias as ends.
    let explain = |source: &str, destination: &str| -> Value {
        let out = Command::new(AGENT)
            .args(["explain", source, destination, "-o", "json", "--pin-root"])
            .arg(agent.pin_root())
            .output()
            .expect("run netwatch explain");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "explain {source} {destination}: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    let resolver = explain(&client.name, "127.0.0.11:53/udp");
    assert_eq!(resolver["verdict"], "inside-container", "{resolver:#}");
    assert!(
        resolver["rule"]
            .as_str()
            .is_some_and(|r| r.contains("embedded DNS resolver")),
        "{resolver:#}"
    );
    let by_alias = explain("host", &format!("{alias}:80"));
    assert_eq!(
        by_alias["dst"],
        client.endpoint_field(&network, "IPAddress"),
        "{by_alias:#}"
    );
}
