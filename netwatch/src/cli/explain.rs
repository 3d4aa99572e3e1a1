//! `netwatch explain <container> <destination>[:port[/proto]]`: would a
//! packet from this container pass, and which rule decides — from the
//! reference model, and with `--from-kernel` from the loaded program too.

use std::{
    net::{IpAddr, Ipv6Addr},
    process::ExitCode,
};

use anyhow::{Context as _, Result, anyhow, bail};
use etherparse::PacketBuilder;
use netwatch_common::{
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    reason::{Direction, DropReason},
    verdict::Decision,
};
use serde::Serialize;

use super::{OutputFormat, networks};
use crate::{
    agent::{docker_state::host_state, plan},
    datapath::{Datapath, Hook, LoadOptions, TEST_RUN_IFINDEX},
    docker::{Container, Snapshot},
    host,
    policy::{EndpointSpec, ReferenceModel, compile, verdict_rule},
};

/// What the user asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// An address, or a container name to resolve.
    pub host: String,
    pub port: Option<u16>,
    /// IP protocol; 0 until resolved (TCP with a port, ICMP without).
    pub proto: u8,
}

/// Parses `HOST[:port[/proto]]`, with IPv6 addresses in brackets when a port
/// follows (`[fd00::5]:53/udp`).
///
/// # Errors
/// A port that is not 1-65535 or an unknown protocol.
pub fn parse_destination(text: &str) -> Result<Destination> {
    let (host, rest) = if let Some(inner) = text.strip_prefix('[') {
        let (host, rest) = inner.split_once(']').ok_or_else(|| {
            anyhow!("unclosed [ in {text:?}; write IPv6 with a port as [fd00::5]:53/udp")
        })?;
        (
            host.to_string(),
            rest.strip_prefix(':').unwrap_or(rest).to_string(),
        )
    } else if text.parse::<Ipv6Addr>().is_ok() {
        (text.to_string(), String::new())
    } else {
        match text.split_once(':') {
            Some((host, rest)) => (host.to_string(), rest.to_string()),
            None => (text.to_string(), String::new()),
        }
    };
    let (port, proto) = match rest.split_once('/') {
        Some((port, proto)) => (port.to_string(), Some(proto.to_ascii_lowercase())),
        None => (rest.clone(), None),
    };
    let port = if port.is_empty() {
        None
    } else {
        Some(
            port.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| anyhow!("invalid port {port:?} in {text:?}: expected 1-65535"))?,
        )
    };
    let proto = match proto.as_deref() {
        None | Some("") => {
            if port.is_some() {
                IPPROTO_TCP
            } else {
                0
            }
        }
        Some("tcp") => IPPROTO_TCP,
        Some("udp") => IPPROTO_UDP,
        Some("icmp") if port.is_none() => 0,
        Some(other) => bail!("unknown protocol {other:?} in {text:?}: expected tcp, udp or icmp"),
    };
    if host.is_empty() {
        bail!("no destination in {text:?}: give an address or a container name");
    }
    Ok(Destination { host, port, proto })
}

#[derive(Serialize)]
struct Explanation {
    container: String,
    network: String,
    host_ifname: String,
    src: IpAddr,
    dst: IpAddr,
    proto: &'static str,
    port: Option<u16>,
    verdict: &'static str,
    reason: Option<&'static str>,
    rule: String,
    kernel: Option<KernelCheck>,
}

#[derive(Serialize)]
struct KernelCheck {
    verdict: &'static str,
    reason: Option<&'static str>,
    agrees: bool,
}

fn proto_name(proto: u8) -> &'static str {
    match proto {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_ICMP => "icmp",
        IPPROTO_ICMPV6 => "icmpv6",
        _ => "ip",
    }
}

/// The frame the container would send: Ethernet from its MAC, then IP, then
/// a TCP SYN, a UDP datagram or an ICMP echo request.
fn frame(spec: &EndpointSpec, src: IpAddr, dst: IpAddr, proto: u8, port: u16) -> Result<Vec<u8>> {
    let eth = PacketBuilder::ethernet2(spec.policy.mac, [0x02, 0, 0, 0, 0, 1]);
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => bail!("source and destination are of different families"),
    };
    let mut out = Vec::new();
    match proto {
        IPPROTO_TCP => ip.tcp(40000, port, 1, 64240).syn().write(&mut out, &[]),
        IPPROTO_UDP => ip.udp(40000, port).write(&mut out, &[]),
        _ if dst.is_ipv4() => ip.icmpv4_echo_request(1, 1).write(&mut out, &[]),
        _ => ip.icmpv6_echo_request(1, 1).write(&mut out, &[]),
    }
    .context("building the packet")?;
    Ok(out)
}

/// Runs the frame through the loaded `from_container` program with the
/// endpoint's compiled policy (moved to the test-run ifindex).
fn kernel_decision(spec: &EndpointSpec, host_addrs: &[IpAddr], frame: &[u8]) -> Result<Decision> {
    let mut spec = spec.clone();
    spec.ifindex = TEST_RUN_IFINDEX;
    let mut datapath = Datapath::load(&LoadOptions::default())?;
    datapath.apply(&compile(&[spec], host_addrs)?)?;
    let before = datapath.verdict_counts()?;
    datapath.test_run(Hook::FromContainer, frame, 1)?;
    let after = datapath.verdict_counts()?;
    let reason = DropReason::ALL
        .into_iter()
        .find(|r| after[*r as usize] != before[*r as usize])
        .ok_or_else(|| anyhow!("the kernel program counted nothing"))?;
    Ok(Decision::from_reason(reason))
}

fn find<'a>(snapshot: &'a Snapshot, query: &str) -> Result<&'a Container> {
    let inventory = &snapshot.inventory;
    Ok(inventory.network_owner(inventory.find_container(query)?)?)
}

/// Explains one packet.
///
/// # Errors
/// Not root, Docker unreachable, unknown container, a destination that
/// cannot be resolved, or no endpoint of the right family.
pub fn run(
    container: &str,
    destination: &str,
    from_kernel: bool,
    output: OutputFormat,
) -> Result<ExitCode> {
    if !host::is_root() {
        bail!(
            "explain reads container namespaces and the policy: run it as root (sudo netwatch explain …)"
        );
    }
    let wanted = parse_destination(destination)?;
    let snapshot = networks::snapshot()?;
    let source = find(&snapshot, container)?;
    let dst: IpAddr = match wanted.host.parse() {
        Ok(ip) => ip,
        Err(_) => {
            let peer = find(&snapshot, &wanted.host)?;
            let shared = peer
                .endpoints
                .iter()
                .find(|e| {
                    source
                        .endpoints
                        .iter()
                        .any(|s| s.network_id == e.network_id)
                })
                .or(peer.endpoints.first())
                .ok_or_else(|| {
                    anyhow!("container {} has no address on a bridge network", peer.name)
                })?;
            shared
                .ipv4
                .map(IpAddr::V4)
                .or(shared.ipv6.map(IpAddr::V6))
                .ok_or_else(|| {
                    anyhow!(
                        "container {} has no address on {}",
                        peer.name,
                        shared.network
                    )
                })?
        }
    };
    let state = host_state(&snapshot, host::addresses());
    let plan = plan(&state);
    // The endpoint whose network holds the destination carries the packet;
    // otherwise each endpoint is shown (the container's default route picks).
    let mut candidates: Vec<_> = source
        .endpoints
        .iter()
        .filter(|e| {
            state
                .networks
                .iter()
                .any(|n| n.name == e.network && n.subnets.iter().any(|c| c.contains(&dst)))
        })
        .collect();
    if candidates.is_empty() {
        candidates = source.endpoints.iter().collect();
    }
    let proto = match (wanted.proto, dst) {
        (0, IpAddr::V4(_)) => IPPROTO_ICMP,
        (0, IpAddr::V6(_)) => IPPROTO_ICMPV6,
        (p, _) => p,
    };
    let mut explanations = Vec::new();
    for endpoint in candidates {
        let veth = snapshot
            .veth(source, endpoint)
            .map_err(|e| anyhow!("{} on {}: {e}", source.name, endpoint.network))?;
        let spec = plan
            .specs
            .iter()
            .find(|s| s.ifindex == veth.ifindex)
            .ok_or_else(|| {
                anyhow!(
                    "network {} is not a bridge network netwatch manages",
                    endpoint.network
                )
            })?;
        let src = match dst {
            IpAddr::V4(_) => endpoint.ipv4.map(IpAddr::V4),
            IpAddr::V6(_) => endpoint.ipv6.map(IpAddr::V6),
        };
        let Some(src) = src else {
            bail!(
                "{} has no {} address on {}",
                source.name,
                if dst.is_ipv4() { "IPv4" } else { "IPv6" },
                endpoint.network
            );
        };
        let packet = frame(spec, src, dst, proto, wanted.port.unwrap_or(0))?;
        let model = ReferenceModel::new([spec.clone()], plan.host_addrs.clone());
        let decision = model
            .decide(spec.ifindex, Direction::Egress, &packet)
            .ok_or_else(|| anyhow!("no policy for {}", veth.ifname))?;
        let rule = verdict_rule(
            spec,
            &endpoint.network,
            &plan.host_addrs,
            dst,
            proto,
            wanted.port,
            decision,
        );
        let kernel = if from_kernel {
            let k = kernel_decision(spec, &plan.host_addrs, &packet)?;
            Some(KernelCheck {
                verdict: k.verdict.name(),
                reason: (k.reason != DropReason::None).then(|| k.reason.name()),
                agrees: k == decision,
            })
        } else {
            None
        };
        explanations.push(Explanation {
            container: source.name.clone(),
            network: endpoint.network.clone(),
            host_ifname: veth.ifname.clone(),
            src,
            dst,
            proto: proto_name(proto),
            port: wanted.port,
            verdict: decision.verdict.name(),
            reason: (decision.reason != DropReason::None).then(|| decision.reason.name()),
            rule,
            kernel,
        });
    }
    let disagreement = explanations
        .iter()
        .any(|e| e.kernel.as_ref().is_some_and(|k| !k.agrees));
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&explanations)?),
        OutputFormat::Table => {
            for e in &explanations {
                let port = e.port.map(|p| format!(":{p}")).unwrap_or_default();
                let reason = e.reason.map(|r| format!(" ({r})")).unwrap_or_default();
                println!(
                    "{} -> {}{port}/{} via {} ({}): {}{reason}",
                    e.src, e.dst, e.proto, e.network, e.host_ifname, e.verdict
                );
                println!("  rule: {}", e.rule);
                if let Some(k) = &e.kernel {
                    let reason = k.reason.map(|r| format!(" ({r})")).unwrap_or_default();
                    let agree = if k.agrees { "agrees" } else { "DISAGREES" };
                    println!("  kernel: {}{reason} — {agree}", k.verdict);
                }
            }
        }
    }
    Ok(if disagreement {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_with_and_without_ports() {
        let d = parse_destination("10.0.0.5:5432/tcp").unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.proto),
            ("10.0.0.5", Some(5432), IPPROTO_TCP)
        );
        let d = parse_destination("db:53/udp").unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.proto),
            ("db", Some(53), IPPROTO_UDP)
        );
        let d = parse_destination("[fd00::5]:443").unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.proto),
            ("fd00::5", Some(443), IPPROTO_TCP)
        );
        let d = parse_destination("fd00::5").unwrap();
        assert_eq!((d.host.as_str(), d.port, d.proto), ("fd00::5", None, 0));
        let d = parse_destination("203.0.113.7").unwrap();
        assert_eq!((d.port, d.proto), (None, 0));
    }

    #[test]
    fn bad_destinations_say_what_is_expected() {
        assert!(
            parse_destination("10.0.0.5:0")
                .unwrap_err()
                .to_string()
                .contains("1-65535")
        );
        assert!(
            parse_destination("10.0.0.5:80/sctp")
                .unwrap_err()
                .to_string()
                .contains("tcp, udp or icmp")
        );
        assert!(
            parse_destination("[fd00::5:80")
                .unwrap_err()
                .to_string()
                .contains("unclosed")
        );
        assert!(
            parse_destination(":80")
                .unwrap_err()
                .to_string()
                .contains("no destination")
        );
    }
}
