//! The fleet files in deploy/ against the real tools and a real agent:
//! promtool checks the scrape config and the alert rules, and lints a
//! live scrape of an agent under traffic (netwatch's own drops, the
//! kernel's, flows); every metric the dashboard and the alerts query, and
//! every label they select or group by, is one that scrape has; Vector's
//! config reads the flow log where the package writes it, takes only
//! fields a real flow-log line has, and labels Loki streams only by
//! bounded ones. Traffic goes only between the test's containers and the
//! gateway of its internal network.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use netwatch::agent::status_file::AgentStatus;
use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::{TestContainer, TestNetwork, docker, docker_ok, require_dockerd},
    fixture::require_root,
    prometheus::{self, Family},
};
use serde_json::Value;

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");

/// Labels Prometheus adds to every series of the job (the target's and
/// prometheus.yml's relabelling), not the agent.
const SCRAPE_LABELS: [&str; 3] = ["job", "instance", "host"];

/// Series Prometheus makes itself for every target.
const SYNTHETIC_METRICS: [&str; 1] = ["up"];

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

/// Runs promtool; its absence fails the test, never skips it.
fn promtool(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): run `cargo xtask setup`, which installs Debian's \
                 prometheus package for /usr/bin/promtool"
            )
        });
    let mut input = child.stdin.take().expect("promtool's stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("feed promtool");
    }
    drop(input);
    child.wait_with_output().expect("wait for promtool")
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The alert rules' expressions, and the labels (`$labels.x`) that their
/// annotations show.
fn alert_rules() -> Vec<(String, BTreeSet<String>)> {
    let rules = yaml("deploy/prometheus/netwatch-alerts.yml");
    let rules: Vec<(String, BTreeSet<String>)> = rules["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").iter())
        .map(|rule| {
            let expr = rule["expr"].as_str().expect("every rule has an expr");
            let mut shown = BTreeSet::new();
            for text in rule["annotations"]
                .as_object()
                .expect("annotations")
                .values()
            {
                let text = text.as_str().expect("an annotation");
                for (i, _) in text.match_indices("$labels.") {
                    let label: String = text[i + "$labels.".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    shown.insert(label);
                }
            }
            assert!(
                !shown.is_empty() && rule["labels"]["severity"].is_string(),
                "alert {} needs a severity and annotations naming its labels",
                rule["alert"]
            );
            (expr.to_string(), shown)
        })
        .collect();
    assert!(!rules.is_empty(), "no alert rules");
    rules
}

fn alert_expressions() -> Vec<String> {
    alert_rules().into_iter().map(|(expr, _)| expr).collect()
}

/// Every panel's (and nested row's) PromQL, and the metrics that the
/// template variables' `label_values(metric, label)` read.
fn dashboard_queries() -> (Vec<String>, Vec<(String, String)>) {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/netwatch-dashboard.json"))
        .expect("the dashboard is JSON");
    fn walk(panels: &Value, exprs: &mut Vec<String>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("every target has an expr");
                exprs.push(expr.to_string());
            }
            walk(&panel["panels"], exprs);
        }
    }
    let mut exprs = Vec::new();
    walk(&dashboard["panels"], &mut exprs);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("template variables")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let query = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .expect("a variable's query");
            let args = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable query {query:?} is not label_values(m, l)"));
            let (metric, label) = args.split_once(',').expect("label_values(metric, label)");
            (metric.trim().to_string(), label.trim().to_string())
        })
        .collect();
    (exprs, variables)
}

/// What a PromQL expression refers to: metric names with the labels their
/// selectors match on, and the labels of `by`/`without`/`on`/`ignoring`/
/// `group_*` clauses. Just enough of PromQL's lexis for the queries in
/// deploy/: strings, selectors, ranges, numbers with units, functions.
#[derive(Debug, Default)]
struct References {
    metrics: BTreeMap<String, BTreeSet<String>>,
    grouping_labels: BTreeSet<String>,
}

fn references(expr: &str) -> References {
    // Aggregations may put `by (…)` between their name and `(`.
    const KEYWORDS: [&str; 19] = [
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "limitk",
        "limit_ratio",
    ];
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut refs = References::default();
    let mut last_metric: Option<String> = None;
    let mut i = 0;
    let identifier = |i: &mut usize| -> String {
        let start = *i;
        while *i < chars.len() && (chars[*i].is_ascii_alphanumeric() || "_:".contains(chars[*i])) {
            *i += 1;
        }
        chars[start..*i].iter().collect()
    };
    let skip_blank = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // Label matchers: `name op "value"`, comma-separated.
            i += 1;
            loop {
                skip_blank(&mut i);
                if i >= chars.len() || chars[i] == '}' {
                    i += 1;
                    break;
                }
                if chars[i] == ',' {
                    i += 1;
                    continue;
                }
                let label = identifier(&mut i);
                assert!(!label.is_empty(), "cannot read the selector in {expr:?}");
                let metric = last_metric.clone().unwrap_or_default();
                refs.metrics.entry(metric).or_default().insert(label);
                while i < chars.len() && "=!~ ".contains(chars[i]) {
                    i += 1;
                }
                let quote = chars[i];
                assert!(
                    quote == '"' || quote == '\'',
                    "unquoted label value in {expr:?}"
                );
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            last_metric = None;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (5m, 1d, 1e3).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            last_metric = None;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let word = identifier(&mut i);
            skip_blank(&mut i);
            let call = chars.get(i) == Some(&'(');
            if GROUPING.contains(&word.as_str()) {
                if call {
                    i += 1;
                    while i < chars.len() && chars[i] != ')' {
                        skip_blank(&mut i);
                        let label = identifier(&mut i);
                        if !label.is_empty() {
                            refs.grouping_labels.insert(label);
                        }
                        skip_blank(&mut i);
                        if chars.get(i) == Some(&',') {
                            i += 1;
                        }
                    }
                    i += 1;
                }
                last_metric = None;
            } else if call || KEYWORDS.contains(&word.as_str()) {
                last_metric = None;
            } else {
                refs.metrics.entry(word.clone()).or_default();
                last_metric = Some(word);
            }
        } else {
            i += 1;
            last_metric = None;
        }
    }
    refs
}

#[test]
fn references_read_metrics_selectors_and_groupings_but_not_functions_strings_or_ranges() {
    let refs = references(
        "sum by (job, host) (rate(a_total{x=\"1\", y=~'b|c'}[5m] offset 1h)) > 5 * \
         avg without(z) (b) and on (host) c == 1 or vector(0) unless d{w!=\"}\"}",
    );
    let metrics: Vec<&str> = refs.metrics.keys().map(String::as_str).collect();
    assert_eq!(metrics, ["a_total", "b", "c", "d"]);
    assert_eq!(
        refs.metrics["a_total"].iter().collect::<Vec<_>>(),
        ["x", "y"]
    );
    assert_eq!(refs.metrics["d"].iter().collect::<Vec<_>>(), ["w"]);
    assert_eq!(
        refs.grouping_labels.iter().collect::<Vec<_>>(),
        ["host", "job", "z"]
    );
}

#[test]
fn promtool_accepts_the_scrape_config_and_the_alert_rules() {
    let config = repo_file("deploy/prometheus/prometheus.yml");
    let rules = repo_file("deploy/prometheus/netwatch-alerts.yml");
    let rule_tests = repo_file("deploy/prometheus/netwatch-alerts.test.yml");
    for args in [
        ["check", "config", config.to_str().unwrap()],
        ["check", "rules", rules.to_str().unwrap()],
        // Each alert fires on what it is for, with its text, and only then.
        ["test", "rules", rule_tests.to_str().unwrap()],
    ] {
        let out = promtool(&args, None);
        assert!(
            out.status.success() && said(&out).contains("SUCCESS"),
            "promtool {args:?}:\n{}",
            said(&out)
        );
    }
    // The scrape config's job is the one the alerts select.
    let config = yaml("deploy/prometheus/prometheus.yml");
    let jobs: Vec<&str> = config["scrape_configs"]
        .as_array()
        .expect("scrape configs")
        .iter()
        .filter_map(|c| c["job_name"].as_str())
        .collect();
    assert_eq!(jobs, ["netwatch"]);
    let targets = config["scrape_configs"][0]["static_configs"][0]["targets"].to_string();
    let default_port = netwatch::export::DEFAULT_METRICS_ADDR.port().to_string();
    assert!(
        targets.contains(&format!(":{default_port}\"")),
        "targets {targets} are not on the agent's default port {default_port}"
    );
    for expr in alert_expressions() {
        assert!(
            expr.contains("job=\"netwatch\""),
            "{expr:?} does not select job=\"netwatch\""
        );
    }
}

/// The Vector source's file and the label templates of its Loki sink.
fn vector_config() -> (Vec<String>, BTreeMap<String, String>, String) {
    let config = yaml("deploy/vector/vector.yaml");
    let sources = config["sources"].as_object().expect("sources");
    let files: Vec<String> = sources
        .values()
        .filter(|s| s["type"] == "file")
        .flat_map(|s| s["include"].as_array().expect("include").iter())
        .map(|p| p.as_str().expect("a path").to_string())
        .collect();
    let sinks = config["sinks"].as_object().expect("sinks");
    let loki: Vec<&Value> = sinks.values().filter(|s| s["type"] == "loki").collect();
    assert_eq!(loki.len(), 1, "one Loki sink");
    let labels = loki[0]["labels"]
        .as_object()
        .expect("the Loki sink's labels")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("a label template").to_string()))
        .collect();
    let remaps: Vec<&str> = config["transforms"]
        .as_object()
        .expect("transforms")
        .values()
        .filter(|t| t["type"] == "remap")
        .map(|t| t["source"].as_str().expect("VRL source"))
        .collect();
    assert_eq!(remaps.len(), 1, "one remap transform");
    (files, labels, remaps[0].to_string())
}

/// Fields the VRL program reads from the parsed flow-log line (`line.x`)
/// and the event fields it sets (`.x = …`).
fn vrl_fields(source: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut read = BTreeSet::new();
    let mut set = BTreeSet::new();
    let field = |rest: &str| -> String {
        rest.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in source.match_indices("line.") {
        let before = source[..i].chars().last();
        if before.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_') {
            read.insert(field(&source[i + "line.".len()..]));
        }
    }
    for line in source.lines() {
        if let Some(rest) = line.trim_start().strip_prefix('.')
            && let Some((name, _)) = rest.split_once('=')
        {
            set.insert(name.trim().to_string());
        }
    }
    (read, set)
}

#[test]
fn vector_reads_the_packaged_flow_log_and_labels_loki_streams_by_bounded_fields_only() {
    let (files, labels, source) = vector_config();
    // Where the package points the agent (its default file and logrotate).
    let packaged = read("dist/default/netwatch")
        .lines()
        .find_map(|l| l.strip_prefix("#NETWATCH_FLOW_LOG="))
        .expect("dist/default/netwatch names the flow log")
        .to_string();
    assert!(
        read("dist/logrotate/netwatch")
            .lines()
            .any(|l| l == format!("{packaged} {{")),
        "logrotate rotates another file than {packaged}"
    );
    assert_eq!(files, [packaged]);

    let (_, set) = vrl_fields(&source);
    // Vector's file source stamps `host`; everything else a label uses
    // must be taken out of the line by the remap.
    let mut templated = BTreeSet::new();
    for (label, template) in &labels {
        if let Some(field) = template
            .strip_prefix("{{")
            .and_then(|t| t.strip_suffix("}}"))
        {
            let field = field.trim();
            assert!(
                field == "host" || set.contains(field),
                "label {label} uses {field}, which the remap does not set ({set:?})"
            );
            templated.insert(field.to_string());
        } else {
            assert!(!template.contains("{{"), "label {label}: {template}");
        }
    }
    let expected: BTreeSet<String> = [
        "host",
        "project",
        "network",
        "container",
        "event",
        "verdict",
    ]
    .map(String::from)
    .into();
    assert_eq!(templated, expected, "the Loki labels");
    for unbounded in [
        "src",
        "dst",
        "src_port",
        "dst_port",
        "peer",
        "interface",
        "published",
        "packets",
        "bytes",
    ] {
        assert!(
            !templated.contains(unbounded),
            "{unbounded} as a Loki label makes a stream per flow"
        );
    }
}

/// Metric families of a scrape, by name.
fn by_name(families: &[Family]) -> BTreeMap<&str, &Family> {
    families.iter().map(|f| (f.name.as_str(), f)).collect()
}

/// Checks what `expr` refers to against the scrape; returns the labels
/// its result can have (what `by` keeps, or every label of its metrics).
fn check_references(
    expr: &str,
    families: &BTreeMap<&str, &Family>,
    whose: &str,
) -> BTreeSet<String> {
    let refs = references(expr);
    assert!(
        !refs.metrics.is_empty(),
        "{whose} {expr:?} queries no metric"
    );
    let mut known_labels: BTreeSet<String> = SCRAPE_LABELS.map(String::from).into();
    for (metric, labels) in &refs.metrics {
        if SYNTHETIC_METRICS.contains(&metric.as_str()) {
            continue;
        }
        let family = families.get(metric.as_str()).unwrap_or_else(|| {
            panic!(
                "{whose} {expr:?} queries {metric:?}, which the agent does not export; it \
                 exports {:?}",
                families.keys()
            )
        });
        let exported: BTreeSet<String> = family
            .samples
            .iter()
            .flat_map(|s| s.labels.keys().cloned())
            .collect();
        for label in labels {
            assert!(
                SCRAPE_LABELS.contains(&label.as_str()) || exported.contains(label),
                "{whose} {expr:?} selects {metric}{{{label}}}, a label the agent's {metric} \
                 lacks (it has {exported:?})"
            );
        }
        known_labels.extend(exported);
    }
    for label in &refs.grouping_labels {
        assert!(
            known_labels.contains(label),
            "{whose} {expr:?} groups by {label}, which none of its metrics has"
        );
    }
    if expr.contains(" by (") {
        refs.grouping_labels
    } else {
        known_labels
    }
}

fn ping(container: &TestContainer, ip: &str) -> bool {
    docker(&["exec", &container.name, "ping", "-c", "1", "-W", "1", ip]).is_ok()
}

/// The flow log, removed on drop.
struct FlowLogFile(PathBuf);

impl Drop for FlowLogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_live_agent_under_traffic_passes_promtool_and_backs_every_query_and_field() {
    require_root();
    require_dockerd();
    let left = TestNetwork::create("dpl", &[]);
    let right = TestNetwork::create("dpr", &[]);
    let internal = TestNetwork::create("dpi", &["--internal"]);
    let a = TestContainer::run("a", &["--network", &left.name]);
    let c = TestContainer::run("c", &["--network", &left.name]);
    let b = TestContainer::run("b", &["--network", &right.name]);
    let d = TestContainer::run("d", &["--network", &internal.name]);
    // Denies egress, and the agent is not told to manage it: an alarm,
    // so that netwatch_unguarded_alarm has samples to check the alert by.
    let unmanaged = TestNetwork::create("dpu", &["--label", "netwatch.egress=deny"]);
    let _e = TestContainer::run("e", &["--network", &unmanaged.name]);
    let flow_log = FlowLogFile(std::env::temp_dir().join(format!("{}.flows.log", a.name)));
    let agent = AgentProcess::start_with_args(
        NETWATCH,
        &[&left.name, &right.name, &internal.name],
        &[],
        &["--flow-log", flow_log.0.to_str().expect("UTF-8 path")],
    );
    wait_for("the agent's first sync", Duration::from_secs(30), || {
        agent.synced()
    });
    let addr = AgentStatus::read(&agent.run_dir)
        .and_then(|s| s.metrics_addr)
        .expect("the agent says where metrics are served");

    // Forwarded flows, a drop of netwatch's own (the internal network's
    // gateway is the host) and one of the kernel's (Docker's isolation
    // between two bridge networks), so that every family has samples.
    docker_ok(&[
        "exec",
        &a.name,
        "ping",
        "-c",
        "2",
        "-W",
        "1",
        &c.endpoint_field(&left, "IPAddress"),
    ]);
    let gateway = internal.ipam_field("Gateway");
    wait_for("d's veth enforced", Duration::from_secs(20), || {
        !ping(&d, &gateway)
    });
    let b_ip = b.endpoint_field(&right, "IPAddress");
    let mut families = Vec::new();
    wait_for(
        "flows, netwatch's and the kernel's drops in the metrics",
        Duration::from_secs(20),
        || {
            let _ = ping(&a, &b_ip);
            families = prometheus::parse(&prometheus::scrape(&addr))
                .expect("the exposition parses strictly");
            let has_samples = |name: &str| {
                families
                    .iter()
                    .any(|f| f.name == name && !f.samples.is_empty())
            };
            has_samples("netwatch_kernel_drop_packets_total")
                && has_samples("netwatch_flow_packets_total")
                && has_samples("netwatch_unguarded_alarm")
                && families.iter().any(|f| {
                    f.name == "netwatch_flow_packets_total"
                        && f.samples.iter().any(|s| s.labels["verdict"] == "dropped")
                })
        },
    );

    // promtool's lint: names, units, _total on counters, help texts.
    let body = prometheus::scrape(&addr);
    let lint = promtool(&["check", "metrics"], Some(&body));
    assert!(
        lint.status.success() && said(&lint).trim().is_empty(),
        "promtool check metrics on the agent's scrape:\n{}\n--- scrape ---\n{body}",
        said(&lint)
    );
    let families = prometheus::parse(&body).expect("the exposition parses strictly");
    let families = by_name(&families);
    for family in [
        "netwatch_build_info",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
    ] {
        assert!(families.contains_key(family), "no {family} in\n{body}");
    }
    let build = &families["netwatch_build_info"].samples;
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(build[0].labels["version"], env!("CARGO_PKG_VERSION"));

    for (expr, shown) in alert_rules() {
        let labels = check_references(&expr, &families, "alert");
        assert!(
            shown.is_subset(&labels),
            "alert {expr:?} shows labels {shown:?}; its result has {labels:?}"
        );
    }
    // The alert rules' unit tests feed series the agent really exports.
    let rule_tests = yaml("deploy/prometheus/netwatch-alerts.test.yml");
    for test in rule_tests["tests"].as_array().expect("rule tests") {
        for input in test["input_series"].as_array().expect("input series") {
            let series = input["series"].as_str().expect("a series");
            let metric = series.split('{').next().unwrap_or_default();
            assert!(
                SYNTHETIC_METRICS.contains(&metric) || families.contains_key(metric),
                "the alerts' unit tests feed {metric}, which the agent does not export"
            );
        }
    }
    let (panel_exprs, variables) = dashboard_queries();
    assert!(panel_exprs.len() >= 10, "{panel_exprs:?}");
    for expr in &panel_exprs {
        check_references(expr, &families, "panel");
    }
    for (metric, label) in variables {
        assert!(
            families.contains_key(metric.as_str()) && SCRAPE_LABELS.contains(&label.as_str()),
            "variable label_values({metric}, {label}): not a metric of the agent's with a \
             label every target has"
        );
    }

    // Vector reads only fields real flow-log lines have.
    let mut fields: BTreeSet<String> = BTreeSet::new();
    wait_for("lines in the flow log", Duration::from_secs(10), || {
        std::fs::read_to_string(&flow_log.0).is_ok_and(|text| text.lines().count() >= 2)
    });
    for line in std::fs::read_to_string(&flow_log.0).unwrap().lines() {
        let line: Value = serde_json::from_str(line).expect("a flow-log line is JSON");
        fields.extend(line.as_object().expect("an object").keys().cloned());
    }
    let (_, _, source) = vector_config();
    let (read_fields, _) = vrl_fields(&source);
    assert!(
        !read_fields.is_empty(),
        "the remap reads no field of the line"
    );
    for field in &read_fields {
        assert!(
            fields.contains(field),
            "vector.yaml reads `{field}`, which no flow-log line has ({fields:?})"
        );
    }
}
