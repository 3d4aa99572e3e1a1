//! `netwatch explain <source> <destination>[:port[/proto]]`: the path of
//! one packet through netwatch's hooks on this host (the source container's
//! veth, the uplink shield, the destination container's veth), what each
//! decides and which rule or label decides it — from the reference model,
//! and with `--from-kernel` from the loaded programs too.

mod ends;
mod kernel;
mod path;
/// Would a packet from SOURCE to DESTINATION get there, and which rule
/// or label decides? Follows the packet through every netwatch hook on
/// its path on this host, in order, and judges it at each with
/// netwatch's reference model on Docker's current state and labels:
///
///   from-container  the host veth of the source container's endpoint
///                   that its own routing picks (asked inside the
///                   container, like `ip route get`)
///   uplink          the uplink shield, for a packet from outside
///                   (when one is attached)
///   to-container    the host veth of the destination container's
///                   endpoint
///
/// The verdict is that of the first hop that drops the packet (the hops
/// after it are still judged, and shown as not reached), else
/// forwarded; a source container without a route to the destination
/// gives `unroutable`.
/// `--from-kernel` also runs the same packet through each hop's kernel
/// program (BPF_PROG_TEST_RUN: nothing is sent, nothing attached) and
/// says whether they agree (exit status 1 if any hop does not).
///
/// SOURCE is a container (name, id or unique id prefix), `host` (the
/// host opening a connection; it sends from the gateway of the
/// destination's network), or an IP address: a container's address
/// stands for that container, one of the host's for the host, any
/// other for the outside world. From the host or from outside, the
/// destination must be a container. (A container named `host` is
/// given by its id.) A container's DNS alias on one of its networks
/// (`--network-alias`, a compose service name) stands for it too.
///
/// DESTINATION is an address or a container name, with an optional
/// port and protocol (tcp by default with a port, ICMP echo without).
/// A container name picks its endpoint on a network it shares with the
/// source, else its first one. A DNS alias names the container that
/// has it on a network the source is on, as Docker's resolver answers
/// it. 127.0.0.11 is Docker's embedded resolver inside the source
/// container itself: the packet never leaves it (`inside-container`),
/// and what the resolver forwards is `explain SOURCE UPSTREAM:53/udp`.
///
/// Only netwatch's own hooks are judged, and the packet is modelled as
/// it is sent: Docker's NAT (published ports, masquerading) and its
/// iptables rules are not modelled.
///
/// Examples:
///   netwatch explain web 203.0.113.7:443
///   netwatch explain api-gateway db:5432/tcp --from-kernel
///   netwatch explain web [fd00::5]:53/udp -o json
///   netwatch explain 203.0.113.7 db:5432
///   netwatch explain host db:5432
///   netwatch explain web 127.0.0.11:53/udp
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct ExplainArgs {
    /// Who sends: a container, `host`, or an IP address.
    pub source: String,
    /// HOST[:port[/tcp|udp|icmp]]; bracket IPv6 addresses before a port.
    pub destination: String,
    /// Also run the packet through the kernel programs and compare.
    #[arg(long)]
    pub from_kernel: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = super::OutputFormat::Table)]
    pub output: super::OutputFormat,
    /// Where the agent pins its links (a directory in bpffs): an uplink
    /// link pinned there means the uplink shield is attached.
    #[arg(long, hide = true, default_value = "/sys/fs/bpf/netwatch")]
    pub pin_root: std::path::PathBuf,
}

#[cfg(test)]
mod tests;

use std::{
    net::{IpAddr, Ipv6Addr},
    path::Path,
    process::ExitCode,
};

use anyhow::{Result, anyhow, bail};
use netwatch_common::{
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    reason::{DropReason, Verdict},
    verdict::Decision,
};
use serde::Serialize;

use self::{
    kernel::Kernel,
    path::{PacketPath, Topology},
};
use super::{OutputFormat, networks};
use crate::{
    agent::{docker_state::host_state, plan},
    datapath::{Hook, pins},
    host,
    host::interfaces::{self, EndpointError},
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
        Some("icmp") => bail!("ICMP has no ports: leave the port out of {text:?}"),
        Some(other) => bail!("unknown protocol {other:?} in {text:?}: expected tcp, udp or icmp"),
    };
    if host.is_empty() {
        bail!("no destination in {text:?}: give an address or a container name");
    }
    Ok(Destination { host, port, proto })
}

/// `explain -o json`: the packet, the overall verdict and every hop.
#[derive(Debug, Serialize)]
struct Explanation {
    source: String,
    destination: String,
    src: Option<IpAddr>,
    dst: IpAddr,
    proto: &'static str,
    port: Option<u16>,
    verdict: &'static str,
    reason: Option<&'static str>,
    rule: String,
    hops: Vec<HopReport>,
    kernel_agrees: Option<bool>,
}

#[derive(Debug, Serialize)]
struct HopReport {
    hook: &'static str,
    interface: Option<String>,
    container: Option<String>,
    network: Option<String>,
    /// `forwarded` or `dropped`, or `skipped` for a hook that is not there.
    verdict: &'static str,
    reason: Option<&'static str>,
    rule: String,
    kernel: Option<KernelCheck>,
}

#[derive(Debug, Serialize)]
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

fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::FromContainer => "from-container",
        Hook::ToContainer => "to-container",
        Hook::Uplink => "uplink",
        Hook::MacvlanParent => "macvlan-parent",
        Hook::MacvlanChild => "macvlan-child",
    }
}

fn reason_name(decision: Decision) -> Option<&'static str> {
    (decision.reason != DropReason::None).then(|| decision.reason.name())
}

/// The report of `path`, with the kernel's decision for each hop that was
/// run through it (same order as the hops).
fn explanation(destination: &str, path: &PacketPath, kernel: &[Option<Decision>]) -> Explanation {
    let hops: Vec<HopReport> = path
        .hops
        .iter()
        .zip(kernel.iter().chain(std::iter::repeat(&None)))
        .map(|(hop, kernel)| HopReport {
            hook: hook_name(hop.hook),
            interface: hop.interface.clone(),
            container: hop.container.clone(),
            network: hop.network.clone(),
            verdict: hop.decision.map_or("skipped", |d| d.verdict.name()),
            reason: hop.decision.and_then(reason_name),
            rule: hop.rule.clone(),
            kernel: kernel.map(|k| KernelCheck {
                verdict: k.verdict.name(),
                reason: reason_name(k),
                agrees: Some(k) == hop.decision,
            }),
        })
        .collect();
    let checked: Vec<bool> = hops
        .iter()
        .filter_map(|h| h.kernel.as_ref().map(|k| k.agrees))
        .collect();
    let (verdict, reason, rule) = match (&path.unroutable, path.deciding_hop()) {
        (Some(why), _) => ("unroutable", None, why.clone()),
        (None, _) if let Some(inside) = &path.inside => ("inside-container", None, inside.clone()),
        (None, Some(hop)) => {
            let decision = hop.decision.unwrap_or(Decision::FORWARD);
            (
                decision.verdict.name(),
                reason_name(decision),
                hop.rule.clone(),
            )
        }
        (None, None) => (
            Verdict::Forwarded.name(),
            None,
            "no netwatch hook is on this path".to_string(),
        ),
    };
    Explanation {
        source: path.source.clone(),
        destination: destination.to_string(),
        src: path.src,
        dst: path.dst,
        proto: proto_name(path.proto),
        port: path.port,
        verdict,
        reason,
        rule,
        hops,
        kernel_agrees: (!checked.is_empty()).then(|| checked.iter().all(|a| *a)),
    }
}

fn with_reason(verdict: &str, reason: Option<&str>) -> String {
    match reason {
        Some(reason) => format!("{verdict} ({reason})"),
        None => verdict.to_string(),
    }
}

/// `SRC -> DST:PORT/PROTO: VERDICT (reason)`, then one line per hop. Hops
/// after the first drop are still judged, and marked as not reached.
fn render_table(e: &Explanation) -> String {
    let src = e.src.map_or_else(|| e.source.clone(), |ip| ip.to_string());
    let dst = match (e.dst, e.port) {
        (IpAddr::V6(v6), Some(port)) => format!("[{v6}]:{port}"),
        (dst, Some(port)) => format!("{dst}:{port}"),
        (dst, None) => dst.to_string(),
    };
    let mut out = format!(
        "{src} -> {dst}/{}: {}\n",
        e.proto,
        with_reason(e.verdict, e.reason)
    );
    if e.hops.is_empty() {
        out.push_str(&format!("  {}\n", e.rule));
    }
    let mut dropped = false;
    for hop in &e.hops {
        let mut line = format!("  {}", hop.hook);
        if let Some(interface) = &hop.interface {
            line.push_str(&format!(" {interface}"));
        }
        if let (Some(container), Some(network)) = (&hop.container, &hop.network) {
            line.push_str(&format!(" ({container} on {network})"));
        }
        let verdict = with_reason(hop.verdict, hop.reason);
        if dropped && hop.verdict != "skipped" {
            line.push_str(&format!(": not reached, would be {verdict}"));
        } else {
            line.push_str(&format!(": {verdict}"));
        }
        line.push_str(&format!(" — {}", hop.rule));
        if let Some(k) = &hop.kernel {
            let agree = if k.agrees { "agrees" } else { "DISAGREES" };
            line.push_str(&format!(
                " [kernel: {} {agree}]",
                with_reason(k.verdict, k.reason)
            ));
        }
        out.push_str(&line);
        out.push('\n');
        dropped |= hop.verdict == Verdict::Dropped.name();
    }
    out
}

/// The interface the uplink shield is pinned as attached to under
/// `pin_root`; a pin whose interface is gone does not count.
fn attached_uplink(pin_root: &Path) -> Option<String> {
    pins::pinned_links(pin_root)
        .into_iter()
        .filter(|link| link.program == Hook::Uplink.program_name())
        .find_map(|link| {
            nix::net::if_::if_indextoname(link.ifindex)
                .ok()?
                .into_string()
                .ok()
        })
}

/// Explains one packet.
///
/// # Errors
/// Not root, Docker unreachable, an unknown container, a destination that
/// cannot be resolved or is of another family than the source, an endpoint
/// whose host veth is unknown, or the kernel refusing a check.
pub fn run(
    source: &str,
    destination: &str,
    from_kernel: bool,
    output: OutputFormat,
    pin_root: &Path,
) -> Result<ExitCode> {
    // Container namespaces (the source's route) and, for --from-kernel,
    // BPF_PROG_TEST_RUN.
    host::require_capabilities(
        "netwatch explain",
        &[host::Capability::SysAdmin, host::Capability::Bpf],
    )
    .map_err(anyhow::Error::msg)?;
    let wanted = parse_destination(destination)?;
    let snapshot = networks::snapshot()?;
    let state = host_state(&snapshot, host::addresses());
    let plan = plan(&state);
    let topology = Topology {
        snapshot: &snapshot,
        state: &state,
        plan: &plan,
        uplink: attached_uplink(pin_root),
        pin_root,
    };
    let from = ends::source(&topology, source)?;
    let path = path::trace(&topology, from, &wanted, |container, dst| {
        let pid = container.pid.ok_or_else(|| EndpointError::NoPid {
            container: container.name.clone(),
        })?;
        interfaces::route_to(pid, dst)
    })?;
    let mut kernel_decisions = Vec::new();
    if from_kernel {
        let mut kernel: Option<Kernel> = None;
        for hop in &path.hops {
            let decision = match &hop.probe {
                Some(probe) => {
                    let kernel = match &mut kernel {
                        Some(kernel) => kernel,
                        None => kernel.insert(Kernel::load(&plan.host_addrs)?),
                    };
                    Some(kernel.decide(probe)?)
                }
                None => None,
            };
            kernel_decisions.push(decision);
        }
    }
    let explanation = explanation(destination, &path, &kernel_decisions);
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
        OutputFormat::Table => print!("{}", render_table(&explanation)),
    }
    Ok(if explanation.kernel_agrees == Some(false) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
