use std::net::IpAddr;

use super::*;
use crate::{
    agent::{docker_state::host_state, plan},
    docker::Snapshot,
    host::interfaces::EndpointError,
    render::fixtures::egress,
};

/// The captured topology (docker/testdata/README.md): nwcap-app on
/// nwcap-front (observed, not internal) with its host veth `vethfront`.
fn snapshot() -> Snapshot {
    let inventory = crate::docker::captured::inventory(&["app"]);
    let mut snapshot = Snapshot::unresolved(inventory, EndpointError::NotRoot);
    snapshot.set_veth_for_test("nwcap-app", "nwcap-front", "vethfront", 11);
    snapshot
}

fn app_address(snapshot: &Snapshot) -> IpAddr {
    let app = snapshot
        .inventory
        .containers
        .iter()
        .find(|c| c.name == "nwcap-app")
        .expect("nwcap-app is captured");
    let endpoint = app
        .endpoints
        .iter()
        .find(|e| e.network == "nwcap-front")
        .expect("on nwcap-front");
    IpAddr::V4(endpoint.ipv4.expect("an IPv4 address"))
}

/// nwcap-app on nwcap-front sends to `dst`:`port` over TCP, seen on its
/// veth.
fn flow(src: IpAddr, dst: &str, port: u16, verdict: &str) -> FlowEntry {
    let src = src.to_string();
    let mut entry = egress("nwcap-app", "nwcap-front", (&src, 40000), (dst, port), 180);
    entry.verdict = verdict.parse().unwrap();
    entry.interface = Some("vethfront".into());
    entry.flows = 2;
    entry
}

fn ifindex_of(name: &str) -> Option<u32> {
    (name == "vethfront").then_some(11)
}

/// What `advise` would print for nwcap-app: deny on its network, one
/// destination allowed.
const ADVICE: &str = r#"
# netwatch advise: read from 4 dropped or audited flows
services:
  # container nwcap-app has no compose service: docker run --label netwatch.allow="203.0.113.7:443/tcp"
  nwcap-app:
    labels:
      netwatch.allow: "203.0.113.7:443/tcp"
networks:
  nwcap-front:
    labels:
      netwatch.egress: "deny"
"#;

#[test]
fn the_snippet_advise_prints_reads_back_as_its_labels() {
    let proposal = parse_proposal(ADVICE).unwrap();
    assert_eq!(
        proposal.services["nwcap-app"]["netwatch.allow"],
        "203.0.113.7:443/tcp"
    );
    assert_eq!(
        proposal.networks["nwcap-front"].labels["netwatch.egress"],
        "deny"
    );
    assert_eq!(proposal.networks["nwcap-front"].internal, None);
    let listed =
        parse_proposal("services:\n  api:\n    labels:\n      - netwatch.allow=10.0.0.0/8\n")
            .unwrap();
    assert_eq!(listed.services["api"]["netwatch.allow"], "10.0.0.0/8");
}

#[test]
fn files_that_propose_nothing_or_are_not_compose_are_refused() {
    let empty = parse_proposal("version: \"3.8\"\n").unwrap_err();
    assert!(format!("{empty:#}").contains("no services or networks"));
    let not_yaml = parse_proposal("services: [unclosed").unwrap_err();
    assert!(format!("{not_yaml:#}").contains("not a compose file"));
    let bad = parse_proposal("networks:\n  back:\n    internal: maybe\n").unwrap_err();
    assert!(format!("{bad:#}").contains("true or false"));
}

#[test]
fn applying_the_advice_passes_the_advised_flow_and_drops_what_was_not_advised() {
    let mut snapshot = snapshot();
    let app = app_address(&snapshot);
    let entries = vec![
        flow(app, "203.0.113.7", 443, "forwarded"),
        flow(app, "203.0.113.7", 25, "forwarded"),
    ];
    // As the network is: nothing would change.
    let state = host_state(&snapshot, vec!["10.99.0.1".parse().unwrap()]);
    let unchanged = check(&entries, &plan(&state), ifindex_of);
    assert_eq!(unchanged.flows_read, 4);
    assert!(unchanged.changes.is_empty(), "{:?}", unchanged.changes);

    let unmatched = apply(&parse_proposal(ADVICE).unwrap(), &mut snapshot.inventory);
    assert!(unmatched.is_empty(), "{unmatched:?}");
    let state = host_state(&snapshot, vec!["10.99.0.1".parse().unwrap()]);
    let report = check(&entries, &plan(&state), ifindex_of);
    assert_eq!(report.flows_read, 4);
    assert_eq!(report.changes.len(), 1, "{:?}", report.changes);
    let change = &report.changes[0];
    assert_eq!(change.remote, "203.0.113.7:25/tcp");
    assert_eq!(
        (change.now.name(), change.then.name()),
        ("forwarded", "dropped")
    );
    assert_eq!(change.then_reason, Some("not-in-network".parse().unwrap()));
    assert!(
        change
            .rule
            .contains("no netwatch.allow rule covers it on port 25"),
        "{}",
        change.rule
    );
    assert_eq!(report.breaking(), 2);
    let table = render(&report, "advised.yml");
    assert!(
        table.contains("4 flows judged again, 2 would change verdict, 2 would be dropped"),
        "{table}"
    );
    assert!(table.contains("dropped (not-in-network)"), "{table}");
}

#[test]
fn audited_flows_the_file_allows_change_to_forwarded_and_gone_interfaces_are_named() {
    let mut snapshot = snapshot();
    let app = app_address(&snapshot);
    let mut audited = flow(app, "203.0.113.7", 443, "audited");
    audited.reason = Some("not-in-network".parse().unwrap());
    let mut gone = flow(app, "203.0.113.7", 443, "audited");
    gone.interface = Some("vethgone".into());
    gone.src_port += 1;
    apply(&parse_proposal(ADVICE).unwrap(), &mut snapshot.inventory);
    let state = host_state(&snapshot, vec!["10.99.0.1".parse().unwrap()]);
    let report = check(&[audited, gone], &plan(&state), ifindex_of);
    assert_eq!(report.changes.len(), 1, "{:?}", report.changes);
    assert_eq!(
        (report.changes[0].now.name(), report.changes[0].then.name()),
        ("audited", "forwarded")
    );
    assert!(
        report.changes[0].rule.contains("netwatch.allow"),
        "{}",
        report.changes[0].rule
    );
    assert_eq!(report.breaking(), 0);
    assert_eq!(report.not_judged.len(), 1);
    assert!(report.not_judged[0].contains("vethgone is gone"));
}

#[test]
fn names_that_match_nothing_running_are_listed() {
    let mut snapshot = snapshot();
    let proposal = parse_proposal(
        "name: other\nservices:\n  nwcap-app:\n    labels: {a: b}\nnetworks:\n  nowhere: {}\n",
    )
    .unwrap();
    let unmatched = apply(&proposal, &mut snapshot.inventory);
    assert_eq!(unmatched, ["network nowhere", "service nwcap-app"]);
}

#[test]
fn icmp_flows_are_judged_as_their_own_type_not_as_an_echo() {
    let mut snapshot = snapshot();
    let app = app_address(&snapshot);
    // An echo request to the gateway: host access, dropped under deny.
    let mut ping = flow(app, "172.18.0.1", 0, "forwarded");
    ping.proto = "icmp".parse().unwrap();
    ping.src_port = 8;
    // A neighbour solicitation from the bridge's link-local address: let
    // through whatever the policy, as neighbour discovery.
    let mut solicit = flow(app, "ff02::1:ff00:2", 0, "forwarded");
    solicit.direction = "ingress".parse().unwrap();
    solicit.src = Some("fe80::42:acff:fe12:1".parse().unwrap());
    solicit.proto = "icmpv6".parse().unwrap();
    solicit.src_port = 135;
    apply(&parse_proposal(ADVICE).unwrap(), &mut snapshot.inventory);
    let state = host_state(&snapshot, vec!["10.99.0.1".parse().unwrap()]);
    let report = check(&[ping, solicit], &plan(&state), ifindex_of);
    let changed: Vec<(&str, &str)> = report
        .changes
        .iter()
        .map(|c| (c.remote.as_str(), c.then.name()))
        .collect();
    assert_eq!(
        changed,
        [("172.18.0.1/icmp", "dropped")],
        "{:?}",
        report.changes
    );
}
