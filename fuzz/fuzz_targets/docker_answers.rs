//! Whatever dockerd answers to `GET /networks` and `GET /containers/{id}/json`:
//! read without a panic all the way to the agent's plan, the guard
//! assessment and the `networks` report; an `internal` network's endpoints
//! are always enforced by the plan, and an internal network is never judged
//! anything but enforced or an alarm.
//!
//! The input is the networks answer, then each container's answer, split at
//! lines holding only `---` (the seeds are captured answers of a real
//! Docker 20.10, see `netwatch/src/docker/testdata`).

#![no_main]

use bollard::models::{ContainerInspectResponse, Network};
use libfuzzer_sys::fuzz_target;
use netwatch::{
    agent::{docker_state::host_state, plan},
    docker::{Inventory, Snapshot},
    guard::{self, AgentView, Mode, Pins},
};
use netwatch_common::endpoint::policy_flags;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split("\n---\n");
    let Some(Ok(networks)) = parts.next().map(serde_json::from_str::<Vec<Network>>) else {
        return;
    };
    let containers: Vec<ContainerInspectResponse> = parts
        .filter_map(|part| serde_json::from_str(part).ok())
        .collect();
    let inventory = Inventory::from_api(&networks, &containers);
    let snapshot = Snapshot::with_made_up_veths(inventory);
    let kernel = Pins(std::path::Path::new("/nonexistent"));
    let agent = AgentView {
        running: true,
        ..AgentView::default()
    };
    if let Ok(reports) = netwatch::cli::networks::report(&snapshot, &kernel, &agent, &[]) {
        let _ = netwatch::cli::networks::render_table(&reports);
        for report in &reports {
            assert_eq!(report.enforced, report.guard.mode == Mode::Enforced);
        }
    }
    let assessment = guard::assess(&snapshot, &kernel, &agent);
    let alarms = assessment.alarms();
    // The assessment judges the inventory's networks in order (ids are not
    // looked up: an answer may repeat one).
    assert_eq!(assessment.networks.len(), snapshot.inventory.networks.len());
    for (network, judged) in snapshot.inventory.networks.iter().zip(&assessment.networks) {
        assert!(
            judged.guard.mode != Mode::Enforced || judged.denied_by.is_some(),
            "network {} is called enforced while nothing is denied",
            judged.name
        );
        if network.internal {
            assert!(
                judged.denied_by.is_some(),
                "internal network {} denies nothing",
                judged.name
            );
        }
        if judged.denied_by.is_some() && judged.guard.mode != Mode::Enforced {
            assert!(
                alarms
                    .iter()
                    .any(|a| a.network == judged.name && a.container.is_none()),
                "internal network {} is unguarded without an alarm",
                judged.name
            );
        }
    }
    let state = host_state(&snapshot, Vec::new());
    let plan = plan(&state);
    for problem in &plan.label_problems {
        let _ = problem.to_string();
    }
    for endpoint in &state.endpoints {
        let internal = state
            .networks
            .iter()
            .any(|n| n.name == endpoint.network && n.internal);
        let spec = plan
            .specs
            .iter()
            .find(|s| s.ifindex == endpoint.host_ifindex);
        if internal {
            let spec = spec.expect("every endpoint of an internal network gets a policy");
            assert!(
                spec.policy.has(policy_flags::ENFORCE),
                "an endpoint of internal network {} is not enforced",
                endpoint.network
            );
        }
    }
});
