//! Export for fleets, end to end without a kernel: a flow pipeline fed with
//! synthetic ring buffer records and a fixed flow table, its metrics served
//! over HTTP and scraped with a plain HTTP/1.1 client, and its live events
//! written to a rotating JSON-lines flow log. Needs no root.

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use netwatch::{
    agent::{EndpointState, HostState, NetworkState, Target},
    datapath::pinned::PinnedCounters,
    export::{
        AttachCounts, FlowLogOptions, MetricsSource, flowlog::FlowLog, metrics::serve_metrics,
    },
    flows::{FlowFilter, FlowNames, FlowTableReader, ObservedEvent, Pipeline},
};
use netwatch_common::{
    event::{EventKind, FlowEvent},
    flow::{FlowKey, FlowStats, family},
    packet::{IPPROTO_TCP, IPPROTO_UDP},
    reason::{DROP_REASON_COUNT, Direction, DropReason, Verdict},
};
use openmetrics_parser::{PrometheusValue, prometheus};

const WEB_VETH: u32 = 31;
const API_VETH: u32 = 32;
const DB_VETH: u32 = 41;
const UPLINK: u32 = 2;

fn names() -> FlowNames {
    let network = |name: &str, bridge: u32, subnet: &str| NetworkState {
        name: name.into(),
        internal: false,
        bridge: Some((format!("br-{name}"), bridge)),
        subnets: vec![subnet.parse().unwrap()],
        gateways: vec![],
        labels: BTreeMap::new(),
    };
    let endpoint =
        |container: &str, network: &str, ifindex: u32, ip: &str, service: &str| EndpointState {
            container: container.into(),
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
        ringbuf_lost: 0,
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

/// Per family: label sets (as sorted pairs) → value.
type Families = HashMap<String, BTreeMap<Vec<(String, String)>, f64>>;

fn parse(text: &str) -> Families {
    let exposition =
        prometheus::parse_prometheus(text).unwrap_or_else(|e| panic!("{e:?} in:\n{text}"));
    exposition
        .families
        .into_iter()
        .map(|(name, family)| {
            let samples = family
                .iter_samples()
                .map(|s| {
                    let mut labels: Vec<(String, String)> = s
                        .get_labelset()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    labels.sort();
                    let value = match &s.value {
                        PrometheusValue::Counter(c) => c.value.as_f64(),
                        PrometheusValue::Gauge(g) => g.as_f64(),
                        other => panic!("{name}: unexpected {other:?}"),
                    };
                    (labels, value)
                })
                .collect();
            (name, samples)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    labels
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
    let total = |name: &str| families[name].values().sum::<f64>();
    assert_eq!(
        total("netwatch_flow_bytes_total"),
        flows.iter().map(|f| f.bytes).sum::<u64>() as f64
    );
    assert_eq!(
        total("netwatch_flow_packets_total"),
        flows.iter().map(|f| f.packets).sum::<u64>() as f64
    );
    // Per series: the flows of one container, network, direction, verdict.
    let mut expected: BTreeMap<Vec<(String, String)>, (u64, u64)> = BTreeMap::new();
    for f in &flows {
        let series = labels(&[
            ("container", f.container.as_deref().unwrap_or("")),
            ("service", f.service.as_deref().unwrap_or("")),
            ("network", f.network.as_deref().unwrap_or("")),
            ("direction", &f.direction),
            ("verdict", &f.verdict),
        ]);
        let e = expected.entry(series).or_default();
        e.0 += f.packets;
        e.1 += f.bytes;
    }
    assert_eq!(families["netwatch_flow_bytes_total"].len(), expected.len());
    for (series, (packets, bytes)) in &expected {
        assert_eq!(
            families["netwatch_flow_bytes_total"][series], *bytes as f64,
            "{series:?}"
        );
        assert_eq!(
            families["netwatch_flow_packets_total"][series], *packets as f64,
            "{series:?}"
        );
    }
    let web_egress = labels(&[
        ("container", "shop-web-1"),
        ("service", "web"),
        ("network", "front"),
        ("direction", "egress"),
        ("verdict", "forwarded"),
    ]);
    assert_eq!(families["netwatch_flow_bytes_total"][&web_egress], 98_000.0);
    let unknown = labels(&[
        ("container", ""),
        ("service", ""),
        ("network", ""),
        ("direction", "ingress"),
        ("verdict", "dropped"),
    ]);
    assert_eq!(families["netwatch_flow_packets_total"][&unknown], 7.0);

    let drops = &families["netwatch_drops_total"];
    assert_eq!(
        drops[&labels(&[("hook", "tc"), ("reason", "not-in-network")])],
        8.0
    );
    assert_eq!(
        drops[&labels(&[("hook", "uplink"), ("reason", "protected-prefix")])],
        7.0
    );
    assert_eq!(
        families["netwatch_forwarded_packets_total"][&labels(&[("hook", "uplink")])],
        1234.0
    );
    let single = |name: &str| families[name][&Vec::new()];
    assert_eq!(single("netwatch_pipeline_records_total"), 4.0);
    assert_eq!(single("netwatch_pipeline_malformed_total"), 0.0);
    assert_eq!(single("netwatch_tracked_flows"), table.len() as f64);
    assert_eq!(single("netwatch_ringbuf_lost_total"), 0.0);
    assert_eq!(
        families["netwatch_attached_interfaces"][&labels(&[("hook", "tc")])],
        5.0
    );
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
    assert_eq!(last.flow.reason.as_deref(), Some("protected-prefix"));
    let stats = counters.stats();
    assert_eq!(
        (stats.lines, stats.lost_events, stats.write_errors),
        (sent, 0, 0)
    );
    assert!(stats.rotations >= 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
