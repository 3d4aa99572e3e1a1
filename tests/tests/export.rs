//! Export for fleets, end to end without a kernel: a flow pipeline fed with
//! synthetic ring buffer records and a fixed flow table, its metrics served
//! over HTTP and scraped with a plain HTTP/1.1 client, and its live events
//! written to a rotating JSON-lines flow log. Needs no root.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use netwatch::{
    agent::{ContainerInterface, HostState, NetworkState, Target},
    datapath::pinned::PinnedCounters,
    export::{
        AttachCounts, FlowLogOptions, FlowLogStats, MetricsSnapshot, MetricsSource, PipelineStats,
        flowlog::FlowLog,
        metrics::{flow_totals, render, serve_metrics},
        process::{BuildInfo, ProcessStats},
    },
    flows::{
        FlowEntry, FlowFilter, FlowNames, FlowTableReader, ObservedEvent, Pipeline,
        PipelineCounters,
    },
};
use netwatch_common::{
    event::{EventKind, FlowEvent},
    flow::{FlowKey, FlowStats, family},
    packet::{IPPROTO_TCP, IPPROTO_UDP},
    protocol::Protocol,
    reason::{DROP_REASON_COUNT, Direction, DropReason, Verdict},
};
use netwatch_tests::prometheus::{self, Family, Kind};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

const WEB_VETH: u32 = 31;
const API_VETH: u32 = 32;
const DB_VETH: u32 = 41;
const UPLINK: u32 = 2;

fn names() -> FlowNames {
    let network = |name: &str, bridge: u32, subnet: &str| NetworkState {
        name: name.into(),
        driver: "bridge".into(),
        internal: false,
        bridge: Some((format!("br-{name}"), bridge)),
        macvlan_parent: None,
        overlay_sandbox: None,
        subnets: vec![subnet.parse().unwrap()],
        gateways: vec![],
        labels: BTreeMap::new(),
    };
    let endpoint = |container: &str, network: &str, ifindex: u32, ip: &str, service: &str| {
        ContainerInterface {
            container: container.into(),
            container_id: String::new(),
            network: network.into(),
            host_ifname: format!("veth{ifindex}"),
            host_ifindex: ifindex,
            ipv4: Some(ip.parse().unwrap()),
            ipv6: None,
            mac: [2, 0x42, 0, 0, 0, ifindex as u8],
            container_labels: BTreeMap::from([(
                "com.docker.compose.service".to_string(),
                service.to_string(),
            )]),
            published: Vec::new(),
            macvlan: None,
            overlay: None,
        }
    };
    let state = HostState {
        networks: vec![
            network("front", 30, "172.30.0.0/16"),
            network("back", 40, "172.40.0.0/16"),
        ],
        endpoints: vec![
            endpoint("shop-web-1", "front", WEB_VETH, "172.30.0.2", "web"),
            endpoint("shop-api-1", "front", API_VETH, "172.30.0.3", "api"),
            endpoint("shop-db-1", "back", DB_VETH, "172.40.0.2", "db"),
        ],
        host_addrs: vec![],
        overlay_members: vec![],
        bridge_ports: vec![],
        ..HostState::default()
    };
    let uplink = Target {
        ifname: "eth0".into(),
        ifindex: UPLINK,
        what: "uplink eth0".into(),
    };
    FlowNames::new(&state, &[uplink])
}

fn key(ifindex: u32, direction: Direction, proto: u8, src: [u8; 4], dst: [u8; 4]) -> FlowKey {
    let mut key = FlowKey {
        ifindex,
        direction: direction as u8,
        family: family::IPV4,
        proto,
        src_port: 40000 + ifindex as u16,
        dst_port: 80,
        ..FlowKey::default()
    };
    key.src[..4].copy_from_slice(&src);
    key.dst[..4].copy_from_slice(&dst);
    key
}

fn stats(packets: u64, bytes: u64, reason: DropReason) -> FlowStats {
    FlowStats {
        packets,
        bytes,
        first_seen_ns: 1_000,
        last_seen_ns: 2_000 + packets,
        verdict: if reason == DropReason::None {
            Verdict::Forwarded as u8
        } else {
            Verdict::Dropped as u8
        },
        reason: reason as u8,
        ..FlowStats::default()
    }
}

/// What the kernel's flow table holds in this test.
fn flow_table() -> Vec<(FlowKey, FlowStats)> {
    const WEB: [u8; 4] = [172, 30, 0, 2];
    const API: [u8; 4] = [172, 30, 0, 3];
    const DB: [u8; 4] = [172, 40, 0, 2];
    vec![
        // web → api and back, seen on both veths.
        (
            key(WEB_VETH, Direction::Egress, IPPROTO_TCP, WEB, API),
            stats(120, 98_000, DropReason::None),
        ),
        (
            key(API_VETH, Direction::Ingress, IPPROTO_TCP, WEB, API),
            stats(120, 98_000, DropReason::None),
        ),
        (
            key(API_VETH, Direction::Egress, IPPROTO_TCP, API, WEB),
            stats(80, 1_400_000, DropReason::None),
        ),
        (
            key(WEB_VETH, Direction::Ingress, IPPROTO_TCP, API, WEB),
            stats(80, 1_400_000, DropReason::None),
        ),
        // web tries the database on another network: dropped.
        (
            key(WEB_VETH, Direction::Egress, IPPROTO_TCP, WEB, DB),
            stats(3, 222, DropReason::NotInNetwork),
        ),
        // db exfiltration attempt over UDP.
        (
            key(
                DB_VETH,
                Direction::Egress,
                IPPROTO_UDP,
                DB,
                [203, 0, 113, 9],
            ),
            stats(5, 410, DropReason::NotInNetwork),
        ),
        // The uplink shield drops a probe aimed at an address no container
        // holds: no container.
        (
            key(
                UPLINK,
                Direction::Ingress,
                IPPROTO_TCP,
                [198, 51, 100, 4],
                [172, 40, 0, 99],
            ),
            stats(7, 420, DropReason::ProtectedPrefix),
        ),
    ]
}

fn pipeline() -> Arc<Pipeline> {
    let table: FlowTableReader = Box::new(|| Ok(flow_table()));
    let pipeline = Pipeline::new(1000, table);
    pipeline.set_names(names());
    Arc::new(pipeline)
}

/// A ring buffer record for an entry of the flow table.
fn record(kind: EventKind, (key, stats): &(FlowKey, FlowStats)) -> FlowEvent {
    FlowEvent {
        kind: kind as u8,
        verdict: stats.verdict,
        reason: stats.reason,
        key: *key,
        packets: stats.packets,
        bytes: stats.bytes,
        first_seen_ns: stats.first_seen_ns,
        last_seen_ns: stats.last_seen_ns,
        ..FlowEvent::default()
    }
}

fn datapath_counters() -> PinnedCounters {
    let mut verdicts = [0; DROP_REASON_COUNT as usize];
    let mut uplink = [0; DROP_REASON_COUNT as usize];
    verdicts[DropReason::None as usize] = 400;
    verdicts[DropReason::NotInNetwork as usize] = 8;
    uplink[DropReason::None as usize] = 1234;
    uplink[DropReason::ProtectedPrefix as usize] = 7;
    PinnedCounters {
        verdicts,
        uplink,
        audited: None,
        ringbuf_lost: 0,
        flows_inserted: Some(0),
        dns: None,
    }
}

/// Serves `source` on 127.0.0.1:0 from a runtime of its own (so the test
/// can use a blocking client); returns the address.
fn serve(source: MetricsSource) -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            serve_metrics(listener, source).await.unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// Sends one request on `stream` and reads its response (by Content-Length).
fn request(stream: &mut BufReader<TcpStream>, method: &str, path: &str, close: bool) -> Response {
    let connection = if close { "close" } else { "keep-alive" };
    write!(
        stream.get_mut(),
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n\r\n"
    )
    .unwrap();
    let mut status_line = String::new();
    stream.read_line(&mut status_line).unwrap();
    let mut parts = status_line.split_whitespace();
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line:?}");
    let status = parts.next().unwrap().parse().unwrap();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
    }
    let length: usize = headers
        .get("content-length")
        .map_or(0, |l| l.parse().unwrap());
    let mut body = vec![0; if method == "HEAD" { 0 } else { length }];
    stream.read_exact(&mut body).unwrap();
    Response {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    BufReader::new(stream)
}

fn get(addr: SocketAddr, path: &str) -> Response {
    request(&mut connect(addr), "GET", path, true)
}

/// Per family, by name. Panics on anything the strict parser refuses.
fn parse(text: &str) -> HashMap<String, Family> {
    prometheus::parse(text)
        .unwrap_or_else(|e| panic!("{e} in:\n{text}"))
        .into_iter()
        .map(|family| (family.name.clone(), family))
        .collect()
}

/// The value of the one sample of `name` that has `labels` (and maybe
/// others).
fn value(families: &HashMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let family = families
        .get(name)
        .unwrap_or_else(|| panic!("no family {name}"));
    let matching: Vec<f64> = family
        .samples
        .iter()
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| s.value)
        .collect();
    assert_eq!(matching.len(), 1, "{name}{labels:?}: {matching:?}");
    matching[0]
}

/// Packets dropped at `hook` for `reason`.
fn drops(families: &HashMap<String, Family>, hook: &str, reason: &str) -> f64 {
    let labels = [("hook", hook), ("reason", reason)];
    value(families, "netwatch_dropped_packets_total", &labels)
}

/// The sum of `name`'s samples.
fn total(families: &HashMap<String, Family>, name: &str) -> f64 {
    families[name].samples.iter().map(|s| s.value).sum()
}

#[test]
fn scraped_metrics_parse_and_their_totals_match_the_flows() {
    let pipeline = pipeline();
    // Records for some flows; the sweep a query makes brings in the rest
    // with the kernel's exact counts.
    let table = flow_table();
    let records: Vec<FlowEvent> = [
        (EventKind::FlowOpen, 0),
        (EventKind::FlowExport, 2),
        (EventKind::Drop, 4),
        (EventKind::Drop, 6),
    ]
    .iter()
    .map(|(kind, i)| record(*kind, &table[*i]))
    .collect();
    pipeline.ingest(&records);
    let source = MetricsSource::new()
        .with_pipeline(Arc::clone(&pipeline))
        .with_datapath_counters(|| Some(datapath_counters()))
        .with_attachments(|| AttachCounts { tc: 5, uplink: 1 });
    let addr = serve(source);

    let response = get(addr, "/metrics");
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let families = parse(&response.body);

    let flows = pipeline.flows(&FlowFilter::default());
    assert_eq!(flows.len(), table.len());
    assert_eq!(
        total(&families, "netwatch_flow_bytes_total"),
        flows.iter().map(|f| f.bytes).sum::<u64>() as f64
    );
    assert_eq!(
        total(&families, "netwatch_flow_packets_total"),
        flows.iter().map(|f| f.packets).sum::<u64>() as f64
    );
    // Per series: the flows of one container, service, network, direction
    // and verdict; nothing else.
    type Series = BTreeMap<String, String>;
    let mut expected: BTreeMap<Series, (f64, f64)> = BTreeMap::new();
    for f in &flows {
        let series = [
            ("container", f.container.as_deref().unwrap_or("")),
            ("service", f.service.as_deref().unwrap_or("")),
            ("network", f.network.as_deref().unwrap_or("")),
            ("direction", f.direction.name()),
            ("verdict", f.verdict.name()),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let e = expected.entry(Series::from(series)).or_default();
        e.0 += f.packets as f64;
        e.1 += f.bytes as f64;
    }
    let series = |name: &str| -> BTreeMap<Series, f64> {
        let samples = &families[name].samples;
        samples
            .iter()
            .map(|s| (s.labels.clone(), s.value))
            .collect()
    };
    let expected_of = |pick: fn(&(f64, f64)) -> f64| -> BTreeMap<Series, f64> {
        expected.iter().map(|(l, e)| (l.clone(), pick(e))).collect()
    };
    assert_eq!(series("netwatch_flow_packets_total"), expected_of(|e| e.0));
    assert_eq!(series("netwatch_flow_bytes_total"), expected_of(|e| e.1));
    let web_egress = [
        ("container", "shop-web-1"),
        ("service", "web"),
        ("network", "front"),
        ("direction", "egress"),
        ("verdict", "forwarded"),
    ];
    assert_eq!(
        value(&families, "netwatch_flow_bytes_total", &web_egress),
        98_000.0
    );
    let unknown = [
        ("container", ""),
        ("service", ""),
        ("network", ""),
        ("direction", "ingress"),
        ("verdict", "dropped"),
    ];
    assert_eq!(
        value(&families, "netwatch_flow_packets_total", &unknown),
        7.0
    );

    assert_eq!(drops(&families, "tc", "not-in-network"), 8.0);
    assert_eq!(drops(&families, "uplink", "protected-prefix"), 7.0);
    for (name, labels, expected) in [
        (
            "netwatch_forwarded_packets_total",
            &[("hook", "uplink")][..],
            1234.0,
        ),
        ("netwatch_attached_interfaces", &[("hook", "tc")], 5.0),
        ("netwatch_pipeline_records_total", &[], 4.0),
        ("netwatch_pipeline_malformed_records_total", &[], 0.0),
        ("netwatch_tracked_flows", &[], table.len() as f64),
        ("netwatch_ringbuf_lost_records_total", &[], 0.0),
    ] {
        assert_eq!(value(&families, name, labels), expected, "{name}");
    }
}

#[test]
fn only_get_and_head_of_metrics_are_served_and_connections_are_kept_alive() {
    let addr = serve(MetricsSource::new().with_pipeline(pipeline()));
    assert_eq!(get(addr, "/").status, 404);
    assert_eq!(get(addr, "/metrics/extra").status, 404);
    assert_eq!(get(addr, "/metrics?x=1").status, 200);

    let mut connection = connect(addr);
    let post = request(&mut connection, "POST", "/metrics", false);
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET, HEAD");
    let head = request(&mut connection, "HEAD", "/metrics", false);
    assert_eq!(head.status, 200);
    let first = request(&mut connection, "GET", "/metrics", false);
    let second = request(&mut connection, "GET", "/metrics", true);
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(first.body, second.body, "nothing changed between scrapes");
    assert!(
        first
            .body
            .contains("# TYPE netwatch_flow_bytes_total counter")
    );
    let mut rest = Vec::new();
    connection.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed after `Connection: close`");
}

#[test]
fn the_flow_log_gets_every_pipeline_event_as_a_json_line_and_rotates() {
    let dir = std::env::temp_dir().join(format!("netwatch-export-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let options = FlowLogOptions {
        path: dir.join("flows.log"),
        max_size: 2048,
        max_file: 3,
    };
    let pipeline = pipeline();
    let events = pipeline.subscribe();
    let log = FlowLog::open(options.clone()).unwrap();
    let counters = log.counters();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let writer = runtime.spawn(log.run(events));

    let table = flow_table();
    let mut sent = 0;
    for round in 0..6u64 {
        let records: Vec<FlowEvent> = table
            .iter()
            .map(|entry| {
                let mut r = record(EventKind::FlowExport, entry);
                r.last_seen_ns += round;
                r
            })
            .collect();
        pipeline.ingest(&records);
        sent += records.len() as u64;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    runtime.block_on(async {
        while counters.stats().lines < sent {
            assert!(Instant::now() < deadline, "{:?}", counters.stats());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    drop(pipeline);
    runtime.block_on(writer).unwrap();

    let mut kept = Vec::new();
    for n in [2, 1, 0] {
        let path = options.rotated_path(n);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() as u64 <= options.max_size, "{path:?}");
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            let event: ObservedEvent = serde_json::from_str(line).unwrap();
            assert_eq!(event.event, "flow-export");
            kept.push(event);
        }
    }
    assert!(!options.rotated_path(3).exists());
    assert!((kept.len() as u64) < sent, "the oldest file was dropped");
    let last = kept.last().unwrap();
    assert_eq!(last.flow.container, None, "the uplink flow came last");
    assert_eq!(
        last.flow
            .reason
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("protected-prefix")
    );
    let stats = counters.stats();
    assert_eq!(
        (stats.lines, stats.lost_events, stats.write_errors),
        (sent, 0, 0)
    );
    assert!(stats.rotations >= 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------
// What `render` writes for a snapshot, parsed strictly

fn flow(
    container: Option<&str>,
    network: Option<&str>,
    direction: &str,
    verdict: &str,
    packets: u64,
    bytes: u64,
) -> FlowEntry {
    let t = "2027-01-15T08:00:00Z".parse().unwrap();
    FlowEntry {
        schema_version: netwatch::flows::SCHEMA_VERSION,
        host: String::new(),
        rule: None,
        container: container.map(String::from),
        container_id: None,
        project: None,
        service: container.map(|c| format!("{c}-svc")),
        network: network.map(String::from),
        direction: direction.parse().unwrap(),
        src: None,
        dst: None,
        src_port: 0,
        dst_port: 0,
        proto: Protocol::Tcp,
        packets,
        bytes,
        verdict: verdict.parse().unwrap(),
        reason: (verdict == "dropped").then(|| DropReason::NotInNetwork.into()),
        dropped_by: None,
        peer: None,
        peer_service: None,
        peer_kind: None,
        published: None,
        src_name: None,
        dst_name: None,
        first_seen: t,
        last_seen: t,
        interface: None,
        flows: 1,
    }
}

/// A snapshot with every part.
fn full_snapshot() -> MetricsSnapshot {
    let mut verdicts = [0u64; DROP_REASON_COUNT as usize];
    let mut uplink = [0u64; DROP_REASON_COUNT as usize];
    verdicts[DropReason::None as usize] = 1000;
    verdicts[DropReason::HostAccess as usize] = 7;
    uplink[DropReason::None as usize] = 50;
    uplink[DropReason::ProtectedPrefix as usize] = 3;
    MetricsSnapshot {
        flows: Some(
            vec![
                flow(Some("web"), Some("front"), "egress", "forwarded", 10, 1000),
                flow(Some("web"), Some("front"), "egress", "forwarded", 5, 700),
                flow(Some("web"), Some("front"), "ingress", "forwarded", 4, 400),
                flow(Some("db"), Some("back"), "egress", "dropped", 2, 148),
                flow(None, None, "ingress", "dropped", 3, 222),
            ]
            .into(),
        ),
        pipeline: Some(PipelineStats {
            counters: PipelineCounters {
                records: 42,
                malformed: 1,
                kernel_evictions: 2,
                summarised: 3,
                host_mode_peers: 7,
                host_peer_lookup_failures: 8,
            },
            tracked_flows: 5,
        }),
        datapath: Some(PinnedCounters {
            verdicts,
            uplink,
            audited: None,
            ringbuf_lost: 9,
            flows_inserted: Some(6),
            dns: Some(netwatch::datapath::DnsKernelCounts {
                submitted: 12,
                rate_limited: 3,
                lost: 1,
                truncated: 2,
            }),
        }),
        attachments: Some(AttachCounts { tc: 4, uplink: 1 }),
        flow_log: Some(FlowLogStats {
            lines: 11,
            lost_events: 2,
            write_errors: 1,
            unwritten_lines: 3,
            rotations: 4,
        }),
        guard: Some(guard_assessment()),
        build: Some(BuildInfo {
            version: "1.2.3",
            commit: "0a1b2c",
        }),
        process: Some(ProcessStats {
            cpu_seconds: 1.25,
            resident_memory_bytes: 40 << 20,
            virtual_memory_bytes: 900 << 20,
            start_time_seconds: 1_764_900_000.5,
            open_fds: 21,
            max_fds: Some(1024),
        }),
    }
}

/// An internal network with one endpoint enforced and one unguarded, whose
/// names need escaping in label values.
fn guard_assessment() -> netwatch::guard::Assessment {
    use netwatch::guard::{Assessment, EndpointGuard, Guard, Mode, NetworkGuard};
    let guard = |mode| Guard {
        mode,
        why: "why".into(),
    };
    let endpoint = |container: &str, mode| EndpointGuard {
        container: container.into(),
        container_id: container.into(),
        veth: None,
        macvlan: None,
        overlay: None,
        attached: mode == Mode::Enforced,
        guard: guard(mode),
    };
    Assessment {
        networks: vec![NetworkGuard {
            id: "1".into(),
            name: "back\"end".into(),
            driver: "bridge".into(),
            denied_by: Some("internal: true"),
            guard: guard(Mode::Unguarded),
            endpoints: vec![
                endpoint("db", Mode::Enforced),
                endpoint("odd\\name", Mode::Unguarded),
            ],
        }],
    }
}

#[test]
fn every_family_comes_with_its_type_and_help() {
    let text = render(&full_snapshot());
    let families = prometheus::parse(&text).unwrap_or_else(|e| panic!("{e} in:\n{text}"));
    let kinds: Vec<(&str, Kind)> = families.iter().map(|f| (f.name.as_str(), f.kind)).collect();
    use Kind::{Counter, Gauge};
    assert_eq!(
        kinds,
        [
            ("netwatch_flow_bytes_total", Counter),
            ("netwatch_flow_packets_total", Counter),
            ("netwatch_dropped_packets_total", Counter),
            ("netwatch_audited_packets_total", Counter),
            ("netwatch_forwarded_packets_total", Counter),
            ("netwatch_ringbuf_lost_records_total", Counter),
            ("netwatch_dns_records_total", Counter),
            ("netwatch_flow_table_inserts_total", Counter),
            ("netwatch_pipeline_records_total", Counter),
            ("netwatch_pipeline_malformed_records_total", Counter),
            ("netwatch_flow_evictions_total", Counter),
            ("netwatch_flows_summarised_total", Counter),
            ("netwatch_host_mode_peers_total", Counter),
            ("netwatch_host_peer_lookup_failures_total", Counter),
            ("netwatch_tracked_flows", Gauge),
            ("netwatch_attached_interfaces", Gauge),
            ("netwatch_flow_log_lines_total", Counter),
            ("netwatch_flow_log_lost_events_total", Counter),
            ("netwatch_flow_log_write_errors_total", Counter),
            ("netwatch_flow_log_unwritten_lines_total", Counter),
            ("netwatch_flow_log_rotations_total", Counter),
            ("netwatch_network_mode", Gauge),
            ("netwatch_endpoint_mode", Gauge),
            ("netwatch_unguarded_denied", Gauge),
            ("netwatch_unguarded_alarm", Gauge),
            ("netwatch_build_info", Gauge),
            ("process_cpu_seconds_total", Counter),
            ("process_resident_memory_bytes", Gauge),
            ("process_virtual_memory_bytes", Gauge),
            ("process_open_fds", Gauge),
            ("process_max_fds", Gauge),
            ("process_start_time_seconds", Gauge),
        ]
    );
    let started = families
        .iter()
        .find(|f| f.name == "process_start_time_seconds")
        .unwrap();
    assert_eq!(started.samples[0].value, 1_764_900_000.5);
    let unguarded = families
        .iter()
        .find(|f| f.name == "netwatch_unguarded_denied")
        .unwrap();
    let values: Vec<(String, f64)> = unguarded
        .samples
        .iter()
        .map(|s| (s.labels["kind"].clone(), s.value))
        .collect();
    assert_eq!(
        values,
        [("network".to_owned(), 1.0), ("endpoint".to_owned(), 1.0)]
    );
    let endpoints = families
        .iter()
        .find(|f| f.name == "netwatch_endpoint_mode")
        .unwrap();
    assert_eq!(endpoints.samples[1].labels["container"], "odd\\name");
    assert_eq!(endpoints.samples[1].labels["mode"], "unguarded");
    for family in &families {
        let help = family.help.as_deref().unwrap_or_default();
        assert!(!help.is_empty(), "{} has no help", family.name);
        // HELP first, then TYPE (the parser checks that TYPE comes before
        // the samples and that a family's lines are together).
        let type_line = format!("\n# TYPE {} ", family.name);
        let help_line = format!("# HELP {} ", family.name);
        assert!(text.find(&help_line) < text.find(&type_line), "{text}");
    }
    assert!(text.lines().all(|line| !line.is_empty()), "{text}");
}

#[test]
fn the_datapath_and_pipeline_counters_are_exported_as_read() {
    let families = parse(&render(&full_snapshot()));
    assert_eq!(drops(&families, "tc", "host-access"), 7.0);
    assert_eq!(drops(&families, "tc", "not-in-network"), 0.0);
    assert_eq!(drops(&families, "uplink", "protected-prefix"), 3.0);
    let all_drops = &families["netwatch_dropped_packets_total"].samples;
    assert_eq!(
        all_drops.len(),
        2 * (DROP_REASON_COUNT as usize - 1),
        "every reason but `none`, for both hooks"
    );
    assert!(all_drops.iter().all(|s| s.labels["reason"] != "none"));
    for (name, labels, expected) in [
        (
            "netwatch_forwarded_packets_total",
            &[("hook", "tc")][..],
            1000.0,
        ),
        (
            "netwatch_forwarded_packets_total",
            &[("hook", "uplink")],
            50.0,
        ),
        ("netwatch_attached_interfaces", &[("hook", "tc")], 4.0),
        ("netwatch_attached_interfaces", &[("hook", "uplink")], 1.0),
        ("netwatch_ringbuf_lost_records_total", &[], 9.0),
        (
            "netwatch_dns_records_total",
            &[("outcome", "recorded")],
            12.0,
        ),
        (
            "netwatch_dns_records_total",
            &[("outcome", "rate_limited")],
            3.0,
        ),
        ("netwatch_dns_records_total", &[("outcome", "lost")], 1.0),
        (
            "netwatch_dns_records_total",
            &[("outcome", "truncated")],
            2.0,
        ),
        ("netwatch_flow_table_inserts_total", &[], 6.0),
        ("netwatch_pipeline_records_total", &[], 42.0),
        ("netwatch_pipeline_malformed_records_total", &[], 1.0),
        ("netwatch_flow_evictions_total", &[], 2.0),
        ("netwatch_flows_summarised_total", &[], 3.0),
        ("netwatch_host_mode_peers_total", &[], 7.0),
        ("netwatch_host_peer_lookup_failures_total", &[], 8.0),
        ("netwatch_tracked_flows", &[], 5.0),
        ("netwatch_flow_log_lines_total", &[], 11.0),
        ("netwatch_flow_log_lost_events_total", &[], 2.0),
        ("netwatch_flow_log_write_errors_total", &[], 1.0),
        ("netwatch_flow_log_unwritten_lines_total", &[], 3.0),
        ("netwatch_flow_log_rotations_total", &[], 4.0),
    ] {
        assert_eq!(value(&families, name, labels), expected, "{name}{labels:?}");
    }
}

#[test]
fn flow_totals_are_sums_per_label_set_with_empty_labels_for_no_container() {
    let families = parse(&render(&full_snapshot()));
    let bytes = |container, network, direction, verdict| {
        value(
            &families,
            "netwatch_flow_bytes_total",
            &[
                ("container", container),
                ("network", network),
                ("direction", direction),
                ("verdict", verdict),
            ],
        )
    };
    assert_eq!(bytes("web", "front", "egress", "forwarded"), 1700.0);
    assert_eq!(bytes("web", "front", "ingress", "forwarded"), 400.0);
    assert_eq!(bytes("db", "back", "egress", "dropped"), 148.0);
    assert_eq!(bytes("", "", "ingress", "dropped"), 222.0);
    let packets = &families["netwatch_flow_packets_total"].samples;
    assert_eq!(packets.len(), 4);
    let web = packets
        .iter()
        .find(|s| s.labels["container"] == "web" && s.labels["direction"] == "egress")
        .unwrap();
    assert_eq!(web.value, 15.0);
    assert_eq!(web.labels["service"], "web-svc");
    assert_eq!(
        web.labels
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["container", "service", "network", "direction", "verdict"]),
        "no per-port or per-address labels"
    );
}

#[test]
fn totals_match_the_sum_of_many_random_flows() {
    let mut rng = StdRng::seed_from_u64(7);
    let containers = [Some("a"), Some("b"), Some("c"), None];
    let networks = [Some("n1"), Some("n2"), None];
    let flows: Vec<FlowEntry> = (0..2000)
        .map(|_| {
            flow(
                containers[rng.random_range(0..containers.len())],
                networks[rng.random_range(0..networks.len())],
                ["egress", "ingress"][rng.random_range(0..2)],
                ["forwarded", "dropped"][rng.random_range(0..2)],
                rng.random_range(0..1_000_000),
                rng.random_range(0..1_000_000_000),
            )
        })
        .collect();
    let families = parse(&render(&MetricsSnapshot {
        flows: Some(flows.clone().into()),
        ..MetricsSnapshot::default()
    }));
    let packets: u64 = flows.iter().map(|f| f.packets).sum();
    let bytes: u64 = flows.iter().map(|f| f.bytes).sum();
    // Below 2^53: exact as f64.
    assert_eq!(
        total(&families, "netwatch_flow_packets_total"),
        packets as f64
    );
    assert_eq!(total(&families, "netwatch_flow_bytes_total"), bytes as f64);
    // Per series too.
    for ((container, _, network, direction, verdict), (p, b)) in flow_totals(&flows) {
        let labels = [
            ("container", container),
            ("network", network),
            ("direction", direction),
            ("verdict", verdict),
        ];
        assert_eq!(
            value(&families, "netwatch_flow_packets_total", &labels),
            p as f64
        );
        assert_eq!(
            value(&families, "netwatch_flow_bytes_total", &labels),
            b as f64
        );
    }
    assert!(families["netwatch_flow_bytes_total"].samples.len() <= 4 * 3 * 2 * 2);
}

#[test]
fn label_values_survive_escaping() {
    let odd = [
        "quote\"d",
        "back\\slash",
        "new\nline",
        "comma,=equals{}",
        "trailing\\",
        "ünïcode ✓",
        "",
    ];
    let flows: Vec<FlowEntry> = odd
        .iter()
        .map(|name| flow(Some(name), Some(name), "egress", "forwarded", 1, 1))
        .collect();
    let text = render(&MetricsSnapshot {
        flows: Some(flows.into()),
        ..MetricsSnapshot::default()
    });
    assert!(text.contains(r#"container="quote\"d""#), "{text}");
    assert!(text.contains(r#"container="back\\slash""#), "{text}");
    assert!(text.contains(r#"container="new\nline""#), "{text}");
    assert_eq!(
        text.lines().count(),
        4 + 2 * odd.len(),
        "no raw line feed: {text}"
    );
    let families = parse(&text);
    let samples = &families["netwatch_flow_bytes_total"].samples;
    let parsed: BTreeSet<&str> = samples
        .iter()
        .map(|s| s.labels["container"].as_str())
        .collect();
    assert_eq!(parsed, odd.into_iter().collect::<BTreeSet<_>>());
    for sample in samples {
        assert_eq!(sample.labels["container"], sample.labels["network"]);
    }
}

#[test]
fn parts_left_out_of_the_source_are_left_out_of_the_text() {
    let text = MetricsSource::new()
        .with_flows(Vec::new)
        .with_attachments(|| AttachCounts { tc: 2, uplink: 0 })
        .with_datapath_counters(|| None)
        .render();
    let families = parse(&text);
    let names: BTreeSet<&str> = families.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "netwatch_flow_bytes_total",
            "netwatch_flow_packets_total",
            "netwatch_attached_interfaces"
        ]),
        "no flows yet, nothing pinned"
    );
    assert!(families["netwatch_flow_bytes_total"].samples.is_empty());
    assert_eq!(
        value(
            &families,
            "netwatch_attached_interfaces",
            &[("hook", "uplink")]
        ),
        0.0
    );
}
