//! Hostile or broken Docker API answers end in a one-line error or a
//! skipped object, never a panic: for the CLI (`netwatch networks`, which
//! takes the same snapshot as the agent) and for the agent, which keeps
//! running, reports the error in `netwatch status` and recovers when
//! dockerd makes sense again.
//!
//! The answers come from [`FakeDockerd`]: the captured answers of a real
//! Docker 20.10, edited, or garbage.

use std::{process::Output, time::Duration};

use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    docker::override_host,
    fake_dockerd::{Answer, FakeDockerd, captured},
    fixture::require_root,
};
use serde_json::{Value, json};

const NETWATCH: &str = env!("CARGO_BIN_EXE_netwatch-under-test");

fn networks(fake: &FakeDockerd) -> Output {
    std::process::Command::new(NETWATCH)
        .args(["networks", "-o", "json"])
        .env("DOCKER_HOST", fake.host())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run netwatch networks")
}

fn stderr_without_panic(case: &str, output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "{case}: netwatch panicked:\n{stderr}"
    );
    stderr
}

/// Fails unless `output` is netwatch's error exit (1, not a panic's 101)
/// with one `netwatch: ` error line that contains `expected`.
fn assert_error(case: &str, output: &Output, expected: &str) {
    let stderr = stderr_without_panic(case, output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{case}: expected an error exit:\n{stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("netwatch: "))
        .collect();
    assert_eq!(errors.len(), 1, "{case}: one error line:\n{stderr}");
    assert!(
        errors[0].contains(expected),
        "{case}: the error should say {expected:?}:\n{stderr}"
    );
}

/// Fails unless `output` succeeded without a panic; returns its JSON.
fn assert_success(case: &str, output: &Output) -> Value {
    let stderr = stderr_without_panic(case, output);
    assert!(
        output.status.success(),
        "{case}: expected success:\n{stderr}"
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{case}: not JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn captured_json(name: &str) -> Value {
    serde_json::from_str(captured(name)).expect("captured answers are JSON")
}

/// The captured `nwcap-app` container (two endpoints), answered as the only
/// running container, after `edit`.
fn serve_app(fake: &FakeDockerd, edit: impl FnOnce(&mut Value)) {
    let mut app = captured_json("container-app");
    // The captured pid belongs to another machine: on this one it may be
    // anything. No such pid here (pid_max is at most 2^22).
    app["State"]["Pid"] = json!(8_000_000);
    edit(&mut app);
    let id = app["Id"].as_str().unwrap_or("app").to_owned();
    fake.answer(
        "/containers/json",
        Answer::json(json!([{ "Id": id, "Names": ["/nwcap-app"] }]).to_string()),
    );
    fake.answer(
        &format!("/containers/{id}/json"),
        Answer::json(app.to_string()),
    );
}

#[test]
fn broken_docker_answers_end_in_one_error_line_naming_the_request() {
    require_root();
    let networks_json = captured("networks").as_bytes().to_vec();
    let half = networks_json[..networks_json.len() / 2].to_vec();
    let cases: Vec<(&str, &str, Answer, &str)> = vec![
        (
            "version is not JSON",
            "/version",
            Answer::json("<html>upgrade in progress</html>"),
            "GET /version",
        ),
        (
            "version without an API version",
            "/version",
            Answer::json(r#"{"Version": "99.0"}"#),
            "GET /version",
        ),
        (
            "networks truncated",
            "/networks",
            Answer::json(half.clone()),
            "GET /networks",
        ),
        (
            "networks cut mid-answer",
            "/networks",
            Answer::Cut {
                promised: networks_json.len(),
                body: half,
            },
            "GET /networks",
        ),
        (
            "networks hang up",
            "/networks",
            Answer::Hangup,
            "GET /networks",
        ),
        (
            "networks of the wrong types",
            "/networks",
            Answer::json(r#"[{"Name": 5, "Id": [], "IPAM": "none"}]"#),
            "GET /networks",
        ),
        (
            "networks not a list",
            "/networks",
            Answer::json(r#"{"Name": "bridge"}"#),
            "GET /networks",
        ),
        (
            "networks nested beyond any sense",
            "/networks",
            Answer::json("[".repeat(100_000)),
            "GET /networks",
        ),
        (
            "networks with invalid UTF-8",
            "/networks",
            Answer::json(b"[{\"Name\": \"br\xff\xfe\", \"Id\": \"x\"}]".to_vec()),
            "GET /networks",
        ),
        (
            "networks answered by an HTML error page",
            "/networks",
            Answer::Body {
                status: 502,
                content_type: "text/html",
                body: b"<html><body>Bad Gateway\n</body></html>".to_vec(),
            },
            "GET /networks",
        ),
        (
            "container list of the wrong shape",
            "/containers/json",
            Answer::json(r#"{"Id": "abc"}"#),
            "GET /containers/json",
        ),
    ];
    for (case, path, answer, expected) in cases {
        let fake = FakeDockerd::start();
        fake.answer(path, answer);
        assert_error(case, &networks(&fake), expected);
        assert!(fake.served(path) > 0, "{case}: {path}'s answer was served");
    }

    // A container that cannot be inspected for another reason than being
    // gone fails the snapshot, naming it.
    let fake = FakeDockerd::start();
    serve_app(&fake, |_| {});
    let id = captured_json("container-app")["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    fake.answer(
        &format!("/containers/{id}/json"),
        Answer::error(500, "driver failed\nwith a second line"),
    );
    assert_error(
        "inspect fails",
        &networks(&fake),
        &format!("GET /containers/{id}/json"),
    );
    assert!(fake.served(&format!("/containers/{id}/json")) > 0);
}

#[test]
fn odd_but_well_formed_answers_are_skipped_or_reported_not_fatal() {
    require_root();
    let fake = FakeDockerd::start();
    let mut answer = captured_json("networks");
    let list = answer.as_array_mut().expect("a list of networks");
    let back = list
        .iter_mut()
        .find(|n| n["Name"] == "nwcap-back")
        .expect("nwcap-back captured");
    back["IPAM"]["Config"] = json!([
        { "Subnet": "not-a-cidr", "Gateway": "999.1.1.1" },
        { "Subnet": "172.29.0.0/99" },
        { "Subnet": "172.29.0.0/24", "Gateway": "fd00::1" },
    ]);
    back["Labels"] = json!({
        "netwatch.egress": "maybe",
        "netwatch.gateway": "allow\nnetwatch.egress=allow",
        "netwatch.allow": "garbage, 0.0.0.0/0:99999/tcp, ::/0:0/sctp",
        "huge": "x".repeat(1 << 20),
    });
    // A second network with a name no shell would like, no IPAM at all and
    // no id.
    list.push(json!({
        "Name": "we;rd $(name)\n\u{202e}",
        "Driver": "bridge",
        "Internal": true,
    }));
    fake.answer("/networks", Answer::json(answer.to_string()));
    serve_app(&fake, |app| {
        // Odd endpoint data: a MAC that is not one, an address that is not
        // one; and the pid of a host process (this test), which is no container's.
        app["State"]["Pid"] = json!(std::process::id());
        let endpoints = &mut app["NetworkSettings"]["Networks"];
        endpoints["nwcap-front"]["MacAddress"] = json!("zz:zz");
        endpoints["nwcap-back"]["IPAddress"] = json!("172.29.0.300");
    });
    let output = networks(&fake);
    let shown = assert_success("odd answers", &output);
    for path in ["/networks", "/containers/json"] {
        assert!(fake.served(path) > 0, "{path}'s odd answer was served");
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = shown.to_string();
    assert!(
        text.contains("nwcap-back"),
        "the network with bad subnets and labels is still listed: {text}"
    );
    assert!(
        stderr.contains("not-a-cidr"),
        "the bad subnet is reported:\n{stderr}"
    );
    assert!(
        stderr.contains("is in netwatch's own network namespace"),
        "a host pid is refused as a container's namespace:\n{stderr}"
    );
}

#[test]
fn an_agent_fed_garbage_by_dockerd_keeps_running_reports_it_and_recovers() {
    require_root();
    let fake = FakeDockerd::start();
    fake.answer(
        "/networks",
        Answer::json(b"[{\"Name\": \"x\", \"IPAM\": 12}]".to_vec()),
    );
    let _host = override_host(&fake.host());
    // Only a captured network whose bridge does not exist here: the agent
    // must not touch this host's real bridges (the captured `bridge` is
    // docker0).
    let agent = AgentProcess::start(NETWATCH, &["nwcap-back"]);
    let status =
        || netwatch::agent::status_file::AgentStatus::read(&agent.run_dir).unwrap_or_default();
    wait_for(
        "the agent reports dockerd's bad answer",
        Duration::from_secs(20),
        || {
            status()
                .docker_error
                .is_some_and(|e| e.contains("GET /networks"))
        },
    );
    assert!(!agent.synced(), "nothing was synced from a bad answer");
    let shown = std::process::Command::new(NETWATCH)
        .args(["status", "--run-dir"])
        .arg(&agent.run_dir)
        .arg("--pin-root")
        .arg(agent.pin_root())
        .output()
        .expect("netwatch status");
    let text = String::from_utf8_lossy(&shown.stdout);
    // Exit status 3 only says that some internal network on this host (another
    // test's) is not guarded by this test's agent: status still ran.
    assert!(
        matches!(shown.status.code(), Some(0 | 3))
            && text.contains("failing: ")
            && text.contains("GET /networks"),
        "status shows what dockerd got wrong:\n{text}{}",
        String::from_utf8_lossy(&shown.stderr)
    );

    // Worse: a stream cut mid-answer, then a daemon that hangs up.
    fake.answer(
        "/networks",
        Answer::Cut {
            promised: 4096,
            body: b"[{\"Name\"".to_vec(),
        },
    );
    fake.answer("/events", Answer::Hangup);
    wait_for(
        "the agent to meet the cut answer and the hang-up",
        Duration::from_secs(45),
        || fake.served("/networks") > 0 && fake.served("/events") > 0,
    );

    // dockerd makes sense again: the agent syncs within its backoff.
    fake.answer("/networks", Answer::json(captured("networks")));
    fake.answer("/events", Answer::Endless);
    wait_for(
        "the agent syncs once dockerd answers well",
        Duration::from_secs(45),
        || agent.synced(),
    );
    assert!(fake.served("/networks") > 0, "the good answer was served");
    let log = agent.log();
    assert!(!log.contains("panicked"), "the agent panicked:\n{log}");
    assert!(
        log.contains("lost Docker") && log.contains("GET /networks"),
        "the agent's log says what dockerd got wrong:\n{log}"
    );
    assert_eq!(
        status().docker_error,
        None,
        "the error is cleared on recovery"
    );
}
