//! Any netwatch labels on a network or a container: read without a panic,
//! and a value that is not understood never opens anything — a bad
//! `netwatch.egress` denies egress, a bad `netwatch.gateway` keeps the
//! gateway closed, and bad allow-list entries are left out and reported; a
//! container is audited only by `netwatch.egress=audit`, and never on an
//! internal network.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use netwatch::policy::labels::{container_labels, network_labels};

const KEYS: [&str; 4] = [
    "netwatch.egress",
    "netwatch.gateway",
    "netwatch.allow",
    "netwatch.other",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // The selector picks the labels and whether the network is internal;
    // the text is split among their values.
    let internal = selector & 0x80 != 0;
    let mut labels = BTreeMap::new();
    let mut values = text.split('\u{1f}');
    for (bit, key) in KEYS.iter().enumerate() {
        if selector & (1 << bit) != 0 {
            labels.insert(key.to_string(), values.next().unwrap_or("").to_string());
        }
    }
    let mut problems = Vec::new();
    let network = network_labels("fuzzed", internal, &labels, &mut problems);
    if internal {
        assert!(
            network.deny_egress,
            "an internal network always denies egress"
        );
    }
    if let Some(egress) = labels.get("netwatch.egress") {
        if egress.trim() != "allow" {
            assert!(network.deny_egress, "egress={egress:?} must deny");
        }
    }
    if let Some(gateway) = labels.get("netwatch.gateway") {
        if gateway.trim() != "allow" {
            assert!(!network.gateway_access, "gateway={gateway:?} must not open");
        }
    }
    for problem in &problems {
        let _ = problem.to_string();
    }
    let mut problems = Vec::new();
    let container = container_labels("fuzzed", &labels, &mut problems);
    let asked_audit = labels.get("netwatch.egress").is_some_and(|v| v.trim() == "audit");
    assert_eq!(
        container.audit, asked_audit,
        "only netwatch.egress=audit audits a container"
    );
    assert!(
        !container.audits_on(&network, true),
        "no container label audits an internal network"
    );
});
