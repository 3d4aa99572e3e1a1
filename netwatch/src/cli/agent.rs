//! `netwatch agent`: the host service.

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::{
    agent::{AgentOptions, UplinkChoice, run},
    datapath::pins,
    export::FlowLogOptions,
    host,
};

/// Runs the agent until SIGTERM/SIGINT.
///
/// # Errors
/// Not root, no bpffs, a kernel without TCX, another agent running, or the
/// programs cannot be loaded.
pub fn run_agent(options: AgentOptions) -> Result<ExitCode> {
    host::require_capabilities("netwatch agent", host::ATTACH_CAPABILITIES)
        .map_err(anyhow::Error::msg)?;
    if !host::bpffs_mounted() {
        bail!(
            "no bpffs at {}: mount it with `mount -t bpf bpf {}` so enforcement can outlive the agent",
            pins::BPFFS,
            pins::BPFFS
        );
    }
    match host::kernel_release() {
        Some(k) if !k.at_least(6, 6) => {
            bail!("Linux {k} is too old: netwatch needs 6.6 or newer (TCX attachments)")
        }
        _ => {}
    }
    if options.resync_interval.is_zero() {
        bail!("--resync-secs must be at least 1");
    }
    return_large_buffers_to_the_kernel();
    super::block_on(async {
        let shutdown = super::signals::install()?;
        crate::agent::service::install_hangup_handler()?;
        let shutdown = async {
            shutdown.await;
            crate::agent::service::stopping();
        };
        run(options, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Buffers of 256 KiB and more (a query's JSON, a sweep of the kernel's
/// flow table, the flow table's own growth) are mapped on their own and
/// unmapped when freed, and at most two malloc arenas serve the agent's
/// threads.
///
/// glibc raises its mmap threshold to the size of each mapped buffer that
/// is freed (up to 32 MiB): after the first sweep of a 100,000-flow table
/// (~10 MiB) or query (~50 MiB of JSON), buffers of that size came from the
/// heap, which kept what they freed, and each thread that allocated got an
/// arena of its own (the blocking pool's threads come and go). Measured
/// with bench-scale at ~90,700 flows: 108 MiB of RSS without these
/// settings (111 MiB ten idle seconds after a query), 85 MiB with them.
fn return_large_buffers_to_the_kernel() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's settings, and runs
    // before the agent starts any thread.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 256 * 1024);
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
}

/// Run the host agent: attach the datapath to every endpoint of every
/// Docker bridge network, enforce `internal: true` networks, and keep it
/// right through Docker events and a periodic resync. Enforcement is
/// pinned in bpffs, so it stays when the agent stops or is killed, and
/// a restarted agent adopts it. `netwatch detach` removes it.
///
/// Configuration: flags, then NETWATCH_* environment variables (each
/// flag's is shown below; the systemd unit reads them from
/// /etc/default/netwatch), then the defaults. A flag wins over its
/// variable, and a variable over the default. `--print-config` shows
/// the result and where each value came from.
///
/// Signals: SIGTERM or SIGINT stop it (enforcement stays pinned); SIGHUP
/// resyncs with Docker at once and reopens the flow log (logrotate).
/// Under systemd (Type=notify) it sends READY=1 after its first sync
/// with Docker (or, when Docker does not answer, once the datapath is
/// loaded, at most 5 s after start: dockerd starts after netwatch) and
/// STOPPING=1 when asked to stop.
///
/// Examples:
///   sudo netwatch agent
///   sudo netwatch agent --uplink eth0 --uplink eth1
///   sudo RUST_LOG=debug netwatch agent --resync-secs 10
///   sudo netwatch agent --api-group netwatch
///
/// The log says what was attached, detached and refused, and names
/// every drop record: `drop container=db network=app_db interface=veth1
/// direction=egress proto=tcp src=172.19.0.2:40312 dst=203.0.113.7:443
/// reason=not-in-network packets=1 peer=-`, and where the API is
/// served: `API: serving on /run/netwatch/api.sock (mode 0600, root
/// only)`.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct AgentArgs {
    /// Full resync with Docker at least this often, in seconds.
    #[arg(long, env = "NETWATCH_RESYNC_SECS", default_value_t = 30)]
    pub resync_secs: u64,
    /// Capacity of each of the kernel's two flow tables, IPv4 flows and the
    /// others (LRU; verdicts never depend on it).
    #[arg(long, env = "NETWATCH_FLOW_TABLE_ENTRIES", default_value_t = netwatch_common::names::FLOWS_MAX_ENTRIES)]
    pub flow_table_entries: u32,
    /// Flows the agent keeps one by one in memory (a few hundred bytes
    /// each); beyond that the longest idle are folded into one summary
    /// per container, network, direction and verdict.
    #[arg(long, env = "NETWATCH_FLOW_LIMIT", default_value_t = crate::flows::pipeline::DEFAULT_FLOW_LIMIT)]
    pub flow_limit: usize,
    /// How long the flows of a container that is gone (removed, or
    /// stopped) stay after its last packet: in `flows`, and as the
    /// container's metric series, which end then. Bounds the series of a
    /// host that runs many short-lived containers (CI with `--rm`). A
    /// duration: 30s, 15m, 1h.
    #[arg(
        long,
        value_name = "DURATION",
        env = "NETWATCH_FORGET_GONE_AFTER",
        default_value = "1h",
        value_parser = parse_duration
    )]
    pub forget_gone_after: std::time::Duration,
    /// Manage only these networks (by name; repeat the flag). By default
    /// the agent manages every bridge network. NETWATCH_NETWORKS takes
    /// a comma-separated list.
    #[arg(
        long = "network",
        value_name = "NAME",
        env = "NETWATCH_NETWORKS",
        value_delimiter = ','
    )]
    pub networks: Vec<String>,
    /// Put the uplink shield (XDP: drops inbound packets aimed at the
    /// subnets of internal networks) on this interface; repeat the flag
    /// for several. By default: every interface that holds a default
    /// route, re-read at each resync. `--uplink none` turns it off.
    /// NETWATCH_UPLINKS takes a comma-separated list.
    #[arg(
        long = "uplink",
        value_name = "IFACE",
        env = "NETWATCH_UPLINKS",
        value_delimiter = ','
    )]
    pub uplinks: Vec<String>,
    /// Where to pin links and maps (a directory in bpffs).
    #[arg(
        long,
        hide = true,
        env = "NETWATCH_PIN_ROOT",
        default_value = "/sys/fs/bpf/netwatch"
    )]
    pub pin_root: std::path::PathBuf,
    /// Where to keep the agent's lock and status file.
    #[arg(
        long,
        hide = true,
        env = "NETWATCH_RUN_DIR",
        default_value = "/run/netwatch"
    )]
    pub run_dir: std::path::PathBuf,
    /// Where the agent keeps what must outlive a reboot: its last plan
    /// (which bridge belongs to which network, with what policy). At
    /// start it guards those bridges and their veths as they appear,
    /// before Docker answers; a missing or unreadable plan is logged and
    /// guarding starts when Docker answers.
    #[arg(
        long,
        value_name = "DIR",
        env = "NETWATCH_STATE_DIR",
        default_value = "/var/lib/netwatch"
    )]
    pub state_dir: std::path::PathBuf,
    /// Serve the API (HTTP+JSON, what `netwatch flows`, `drops` and
    /// `observe` talk to; `curl --unix-socket` works too) on this unix
    /// socket. Default: api.sock in the run directory
    /// (/run/netwatch/api.sock).
    #[arg(long, value_name = "PATH", env = "NETWATCH_API_SOCKET")]
    pub api_socket: Option<std::path::PathBuf>,
    /// Let the members of this group use the API: its socket becomes
    /// mode 0660 with this group. Without it the socket is 0600, root
    /// only.
    #[arg(long, value_name = "GROUP", env = "NETWATCH_API_GROUP")]
    pub api_group: Option<String>,
    /// Serve Prometheus metrics (GET /metrics) on this address, or
    /// `off`. Loopback by default: put a scraper on this host, or give
    /// an address on purpose.
    #[arg(
        long,
        value_name = "ADDR|off",
        env = "NETWATCH_METRICS_ADDR",
        default_value = "127.0.0.1:9469"
    )]
    pub metrics_addr: String,
    /// Also write every flow and drop record as a JSON line to this file,
    /// rotated by size like Docker's json-file driver.
    #[arg(long, value_name = "PATH", env = "NETWATCH_FLOW_LOG")]
    pub flow_log: Option<std::path::PathBuf>,
    /// Rotate the flow log before it grows past this size (k, m, g).
    #[arg(long, value_name = "SIZE", env = "NETWATCH_MAX_SIZE", default_value = "10m", value_parser = crate::export::parse_size)]
    pub max_size: u64,
    /// Flow log files kept, the current one included.
    #[arg(long, value_name = "N", env = "NETWATCH_MAX_FILE", default_value_t = crate::export::DEFAULT_MAX_FILE, value_parser = crate::export::parse_max_file)]
    pub max_file: u32,
    /// Record the kernel's own drops of guarded containers' packets
    /// (a program on the kfree_skb tracepoint; `drops` shows them with
    /// kernel:… reasons, e.g. kernel:netfilter_drop for Docker's
    /// iptables rules). `off`: netwatch's own drops only.
    #[arg(long, value_name = "on|off", env = "NETWATCH_KERNEL_DROPS", default_value = "on", value_parser = ["on", "off"])]
    pub kernel_drops: String,
    /// Audit instead of enforce, on every network whose policy denies
    /// something (internal ones included): nothing is dropped; what
    /// enforcement would drop is forwarded and recorded with the verdict
    /// `audited` and its reason (`flows`, `drops`, `observe`, the flow
    /// log, metrics). For trying a policy on a running stack; per
    /// network, the label netwatch.egress=audit does the same. The
    /// uplink shield is off for audited networks.
    #[arg(long, env = "NETWATCH_AUDIT")]
    pub audit: bool,
    /// Attach faster on hosts with many containers: sets the host-wide
    /// /sys/kernel/rcu_expedited to 1 while attaches are pending and puts
    /// the old value back right after. Each TCX attach waits for an RCU
    /// grace period under the rtnl lock (12-25 ms; two per container),
    /// so 500 containers take about 12 s to guard at start or after a
    /// reboot, 0.1 s expedited. While set, every grace period on the host
    /// is expedited (an interrupt to each CPU): latency-sensitive hosts
    /// may notice. A value left set by an agent killed mid-attach is put
    /// back at the next start. Off by default; hosts booted with
    /// rcupdate.rcu_expedited=1 need no flag.
    #[arg(long, env = "NETWATCH_EXPEDITE_ATTACH")]
    pub expedite_attach: bool,
    /// DNS messages recorded per second per CPU (queries and answers
    /// crossing a guarded veth, UDP port 53; `netwatch dns` lists
    /// them and flows name their peers from the answers). Beyond it
    /// they are counted, not recorded, so a DNS flood cannot crowd
    /// out flow records. 0: DNS is not recorded.
    #[arg(long, value_name = "N", env = "NETWATCH_DNS_RATE", default_value_t = netwatch_common::dns::DEFAULT_DNS_RATE)]
    pub dns_rate: u64,
    /// Print the configuration the agent would run with, and where each
    /// value comes from (flag, environment, default), then exit.
    #[arg(long)]
    pub print_config: bool,
}

impl AgentArgs {
    /// What the agent runs with, from these flags.
    ///
    /// # Errors
    /// An `--uplink` or `--metrics-addr` that does not parse.
    pub fn options(self) -> Result<AgentOptions> {
        let uplinks = UplinkChoice::from_flags(&self.uplinks)?;
        let metrics_addr = parse_metrics_addr(&self.metrics_addr)?;
        Ok(AgentOptions {
            metrics_addr,
            flow_log: self.flow_log.map(|path| FlowLogOptions {
                path,
                max_size: self.max_size,
                max_file: self.max_file,
            }),
            resync_interval: std::time::Duration::from_secs(self.resync_secs),
            flow_table_entries: self.flow_table_entries,
            flow_limit: self.flow_limit,
            forget_gone_after: self.forget_gone_after,
            networks: self.networks,
            uplinks,
            pin_root: self.pin_root,
            api_socket: self
                .api_socket
                .unwrap_or_else(|| self.run_dir.join("api.sock")),
            api_group: self.api_group,
            run_dir: self.run_dir,
            state_dir: self.state_dir,
            kernel_drops: self.kernel_drops == "on",
            audit: self.audit,
            expedite_attach: self.expedite_attach,
            dns_rate: self.dns_rate,
        })
    }
}

/// A positive duration as people write it: `30s`, `15m`, `1h30m`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    text.trim()
        .parse::<jiff::SignedDuration>()
        .ok()
        .filter(|d| d.is_positive())
        .and_then(|d| std::time::Duration::try_from(d).ok())
        .ok_or_else(|| format!("`{text}` is not a duration: give one such as 30s, 15m or 1h"))
}

/// `--metrics-addr`: an address, or `off`.
fn parse_metrics_addr(text: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        anyhow::anyhow!("--metrics-addr {text:?}: give IP:PORT (e.g. 127.0.0.1:9469) or off")
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_duration;

    #[test]
    fn forget_gone_after_takes_a_positive_duration_and_says_what_to_give() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        for bad in ["", "0s", "-5m", "soon", "5 parsecs"] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains("such as 30s, 15m or 1h"), "{bad}: {error}");
        }
    }
}
