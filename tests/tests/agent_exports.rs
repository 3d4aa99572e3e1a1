//! The agent's outputs besides the API, against dockerd with real traffic:
//! Prometheus metrics whose flow totals match `netwatch flows`, the
//! JSON-lines flow log, `netwatch map` (DOT and SVG) and `netwatch top`.

use std::{process::Command, time::Duration};

use netwatch::agent::status_file::AgentStatus;
use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{TestContainer, TestNetwork, docker_ok, require_dockerd},
    fixture::require_root,
    prometheus::{self, Family},
    schema,
};
use serde_json::Value;

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");

fn netwatch(agent: &AgentProcess, args: &[&str]) -> String {
    let out = Command::new(NETWATCH)
        .args(args)
        .arg("--socket")
        .arg(agent.api_socket())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "netwatch {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of the one sample of `family` whose labels include `labels`,
/// from the strictly parsed exposition.
fn sample(families: &[Family], family: &str, labels: &[(&str, &str)]) -> u64 {
    let family = families
        .iter()
        .find(|f| f.name == family)
        .unwrap_or_else(|| panic!("no family {family}"));
    let matching: Vec<_> = family
        .samples
        .iter()
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(matching.len(), 1, "{} {labels:?}", family.name);
    matching[0].value as u64
}

/// The flow log and its rotated files, removed on drop.
struct FlowLogFile(std::path::PathBuf);

impl Drop for FlowLogFile {
    fn drop(&mut self) {
        for n in ["", ".1", ".2"] {
            let mut path = self.0.clone().into_os_string();
            path.push(n);
            let _ = std::fs::remove_file(path);
        }
    }
}

#[test]
fn metrics_flow_log_map_and_top_agree_with_flows() {
    require_root();
    require_dockerd();
    let network = TestNetwork::create("exports", &[]);
    // As compose labels the containers it makes: flows name the project.
    let a = TestContainer::run(
        "a",
        &[
            "--network",
            &network.name,
            "--label",
            "com.docker.compose.project=nwexports",
        ],
    );
    let b = TestContainer::run("b", &["--network", &network.name]);
    let log = FlowLogFile(
        std::env::temp_dir().join(format!("netwatch-test-flows-{}.jsonl", std::process::id())),
    );
    let log_path = log.0.clone();
    let agent = AgentProcess::start_with_args(
        NETWATCH,
        &[&network.name],
        &[],
        &[
            "--flow-log",
            log_path.to_str().unwrap(),
            "--max-size",
            "64k",
        ],
    );
    wait_for("the agent's first sync", Duration::from_secs(10), || {
        agent.synced()
    });

    let b_ip = b.endpoint_field(&network, "IPAddress");
    docker_ok(&[
        "exec", &a.name, "ping", "-c", "3", "-i", "0.2", "-W", "1", &b_ip,
    ]);
    let flows_of_a = || -> Vec<Value> {
        serde_json::from_str(&netwatch(
            &agent,
            &[
                "flows",
                "--container",
                &a.name,
                "--proto",
                "icmp",
                "-o",
                "json",
            ],
        ))
        .unwrap()
    };
    wait_for("a's echo flows", Duration::from_secs(5), || {
        flows_of_a().iter().any(|f| f["packets"] == 3)
    });
    // Each flow says whose it is, on which host, in which layout.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for flow in flows_of_a() {
        schema::assert_valid(schema::Record::Flow, &flow);
        assert_eq!(flow["container_id"], a.id.as_str(), "{flow}");
        assert_eq!(flow["project"], "nwexports", "{flow}");
        assert_eq!(flow["host"], host.trim(), "{flow}");
        assert_eq!(flow["schema_version"], netwatch::flows::SCHEMA_VERSION);
    }

    // Metrics: the series of a's egress equals the sum of its flows.
    let addr = AgentStatus::read(&agent.run_dir)
        .and_then(|s| s.metrics_addr)
        .expect("the agent says where metrics are served");
    let inserted = || {
        netwatch::datapath::pinned::read_counters(agent.pin_root())
            .unwrap()
            .and_then(|c| c.flows_inserted)
            .expect("the flow table's insert counter is pinned")
    };
    let inserted_before = inserted();
    let body = prometheus::scrape(&addr);
    let inserted_after = inserted();
    let families = prometheus::parse(&body).expect("the exposition parses strictly");
    let exported = sample(&families, "netwatch_flow_table_inserts_total", &[]);
    assert!(
        inserted_before > 0 && (inserted_before..=inserted_after).contains(&exported),
        "flow-table inserts: {exported} exported, the kernel counted {inserted_before} before \
         the scrape and {inserted_after} after"
    );
    let egress: Vec<Value> = serde_json::from_str(&netwatch(
        &agent,
        &["flows", "--container", &a.name, "-o", "json"],
    ))
    .unwrap();
    let (packets, bytes) = egress
        .iter()
        .filter(|f| f["direction"] == "egress" && f["verdict"] == "forwarded")
        .fold((0, 0), |(p, b), f| {
            (
                p + f["packets"].as_u64().unwrap(),
                b + f["bytes"].as_u64().unwrap(),
            )
        });
    let labels = [
        ("container", a.name.as_str()),
        ("direction", "egress"),
        ("verdict", "forwarded"),
    ];
    assert_eq!(
        sample(&families, "netwatch_flow_packets_total", &labels),
        packets
    );
    assert_eq!(
        sample(&families, "netwatch_flow_bytes_total", &labels),
        bytes
    );

    // The flow log has a's records as JSON lines.
    let log_lines = || -> Vec<Value> {
        // Whole lines only: the agent may be writing the next one.
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    wait_for(
        "a's records in the flow log",
        Duration::from_secs(5),
        || {
            log_lines()
                .iter()
                .any(|l| l["container"] == a.name.as_str() && l["proto"] == "icmp")
        },
    );
    // Every line meets the schema, and the deltas of a flow's lines sum to
    // the running total its latest line carries (one verdict throughout).
    let mut flows_in_log: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for line in log_lines() {
        schema::assert_valid(schema::Record::FlowLogLine, &line);
        if line["event"] == "lost" {
            continue;
        }
        let flow = [
            "container",
            "interface",
            "direction",
            "proto",
            "src",
            "dst",
            "src_port",
            "dst_port",
        ]
        .map(|field| line[field].to_string())
        .join(" ");
        let (deltas, latest) = flows_in_log.entry(flow).or_default();
        *deltas += line["delta_packets"].as_u64().unwrap();
        *latest = line["packets"].as_u64().unwrap();
    }
    assert!(!flows_in_log.is_empty());
    for (flow, (deltas, latest)) in &flows_in_log {
        assert_eq!(deltas, latest, "{flow}: deltas against the running total");
    }

    // map: both containers, in DOT and in netwatch's own SVG.
    let dot = netwatch(&agent, &["map", "-o", "dot", "--network", &network.name]);
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.contains(&a.name) && dot.contains(&b.name), "{dot}");
    let svg = netwatch(&agent, &["map", "--builtin"]);
    assert!(svg.contains("<svg") && svg.contains(&a.name), "{svg}");

    // status: the pipeline's counters, from the agent's API, beside the
    // kernel's ring buffer loss counter.
    let status = |format: &str| -> String {
        let out = Command::new(NETWATCH)
            .args([
                "status",
                "-o",
                format,
                "--network",
                &network.name,
                "--pin-root",
            ])
            .arg(agent.pin_root())
            .arg("--run-dir")
            .arg(&agent.run_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "netwatch status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let json: Value = serde_json::from_str(&status("json")).unwrap();
    let pipeline = &json["pipeline"];
    assert!(
        pipeline["counters"]["records"].as_u64().unwrap() >= 1,
        "{json}"
    );
    assert_eq!(pipeline["counters"]["malformed"], 0, "{json}");
    assert!(
        pipeline["tracked_flows"].as_u64().unwrap() >= egress.len() as u64,
        "{json}"
    );
    assert_eq!(json["ringbuf_lost"], 0, "{json}");
    let table = status("table");
    let records_line = table
        .lines()
        .find(|l| l.starts_with("records"))
        .unwrap_or_else(|| panic!("no records line in:\n{table}"));
    assert!(
        records_line.contains("read")
            && records_line.contains("0 lost")
            && records_line.contains("0 malformed"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("flows") && l.contains("tracked one by one")),
        "{table}"
    );

    // top, not on a terminal: one plain snapshot naming a.
    let top = netwatch(&agent, &["top", "--once", "--interval", "0.2"]);
    assert!(top.contains(&a.name), "{top}");
    assert!(
        !top.contains('\u{1b}'),
        "no escape sequences off a terminal"
    );
    // As `docker stats --no-stream`, for scripts: one JSON snapshot.
    let top_json: Value = serde_json::from_str(&netwatch(
        &agent,
        &["top", "--no-stream", "-o", "json", "--interval", "0.2"],
    ))
    .expect("one JSON object");
    assert_eq!(top_json["by"], "container", "{top_json}");
    let row = top_json["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["container"] == a.name.as_str()))
        .unwrap_or_else(|| panic!("no row of {} in {top_json}", a.name));
    assert!(row["bytes"].as_u64().unwrap() > 0, "{row}");
    assert!(row["rates"]["tx_bytes"].is_number(), "{row}");
}

/// The containers that have a flow-packets series in a scrape of `agent`.
fn containers_with_series(agent: &AgentProcess) -> std::collections::BTreeSet<String> {
    let addr = AgentStatus::read(&agent.run_dir)
        .and_then(|s| s.metrics_addr)
        .expect("the agent says where metrics are served");
    let families = prometheus::parse(&prometheus::scrape(&addr)).expect("the exposition parses");
    families
        .iter()
        .filter(|f| f.name == "netwatch_flow_packets_total")
        .flat_map(|f| &f.samples)
        .filter_map(|s| s.labels.get("container").cloned())
        .collect()
}

#[test]
fn the_series_of_a_container_that_is_gone_expire_but_an_idle_ones_stay() {
    require_root();
    require_dockerd();
    let network = TestNetwork::create("expiry", &[]);
    let stays = TestContainer::run("stays", &["--network", &network.name]);
    let goes = TestContainer::run("goes", &["--network", &network.name]);
    let agent = AgentProcess::start_with_args(
        NETWATCH,
        &[&network.name],
        &[],
        &["--forget-gone-after", "1s"],
    );
    wait_for("the agent's first sync", Duration::from_secs(10), || {
        agent.synced()
    });
    let stays_ip = stays.endpoint_field(&network, "IPAddress");
    docker_ok(&["exec", &goes.name, "ping", "-c", "1", "-W", "1", &stays_ip]);
    wait_for("series of both containers", Duration::from_secs(5), || {
        let named = containers_with_series(&agent);
        named.contains(&stays.name) && named.contains(&goes.name)
    });

    // Gone (the agent hears of it from Docker's events) and idle for more
    // than 1 s: its series end. The container that stays has been idle as
    // long, and keeps its series.
    let gone_name = goes.name.clone();
    drop(goes);
    wait_for(
        "the series of the container that went",
        Duration::from_secs(15),
        || !containers_with_series(&agent).contains(&gone_name),
    );
    assert!(
        containers_with_series(&agent).contains(&stays.name),
        "an idle container that is still there keeps its series"
    );
    // Its own flows are forgotten too (a flow of the container that stays
    // still names it as the peer it talked to).
    let flows: Vec<Value> =
        serde_json::from_str(&netwatch(&agent, &["flows", "-o", "json"])).unwrap();
    assert!(
        flows.iter().all(|f| f["container"] != gone_name.as_str()),
        "its flows are forgotten too: {flows:#?}"
    );
    assert!(
        flows.iter().any(|f| f["container"] == stays.name.as_str()),
        "{flows:#?}"
    );
}
