//! Saying which rule decides a verdict, in words, for `netwatch explain`.

use std::net::IpAddr;

use netwatch_common::{
    endpoint::{policy_flags, port_rule_matches},
    reason::DropReason,
    verdict::Decision,
};

use super::EndpointSpec;

/// The rule or label that decided `decision` for a packet from the endpoint
/// of `spec` (on network `network`) to `dst`.
pub fn verdict_rule(
    spec: &EndpointSpec,
    network: &str,
    host_addrs: &[IpAddr],
    dst: IpAddr,
    proto: u8,
    port: Option<u16>,
    decision: Decision,
) -> String {
    let policy = &spec.policy;
    if !policy.has(policy_flags::ENFORCE) {
        return format!(
            "network {network} is observed, not enforced (not internal, no netwatch.egress=deny label): everything passes"
        );
    }
    let subnets: Vec<String> = spec.networks.iter().map(ToString::to_string).collect();
    let subnets = subnets.join(", ");
    let is_gateway = match dst {
        IpAddr::V4(v4) => policy.has(policy_flags::HAS_IPV4) && v4.octets() == policy.gateway_v4,
        IpAddr::V6(v6) => policy.has(policy_flags::HAS_IPV6) && v6.octets() == policy.gateway_v6,
    };
    let allow_rule = spec.allow.iter().find(|rule| {
        rule.cidr.contains(&dst) && port_rule_matches(&rule.to_port_rule(), proto, port)
    });
    match decision.reason {
        DropReason::None => {
            if let Some(rule) = allow_rule {
                format!("allowed by the netwatch.allow rule {rule}")
            } else if is_gateway {
                format!("{dst} is the gateway of {network}, opened by netwatch.gateway=allow")
            } else if spec.networks.iter().any(|c| c.contains(&dst)) {
                format!("{dst} is inside {network} ({subnets})")
            } else {
                "forwarded".to_string()
            }
        }
        DropReason::HostAccess if is_gateway => format!(
            "{dst} is the gateway of {network}, that is the host; netwatch.gateway=allow on the network would open it"
        ),
        DropReason::HostAccess => {
            let listed = if host_addrs.contains(&dst) {
                "an address of this host"
            } else {
                "the host"
            };
            format!(
                "{dst} is {listed}; host access is closed on {network} (a netwatch.allow rule would open it)"
            )
        }
        DropReason::NotInNetwork => format!(
            "{dst} is outside {network} ({subnets}) and no netwatch.allow rule covers it{}",
            match port {
                Some(p) => format!(" on port {p}"),
                None => String::new(),
            }
        ),
        DropReason::BroadcastMulticast => format!(
            "{dst} is broadcast or multicast; only ARP and neighbour discovery leave {network}"
        ),
        other => format!("dropped as {}", other.name()),
    }
}
