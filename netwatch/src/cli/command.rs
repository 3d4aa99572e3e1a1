//! The `netwatch` command line: argument parsing and dispatch only.

use std::process::ExitCode;

use crate::cli::{self, OutputFormat};
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// eBPF network isolation enforcer and traffic observer for Docker hosts.
///
/// netwatch loads TC(X) programs onto the host side of container veths and an
/// XDP program onto the uplink, enforces what Docker's `internal: true`
/// promises in the kernel datapath itself, and records per-container flows.
#[derive(Parser)]
#[command(name = "netwatch", version)]
struct Cli {
    /// How log lines are written to stderr: `text` (timestamped), `journal`
    /// (a `<N>` syslog priority on each line and no timestamp, for
    /// journald), `json` (one object per line, for log shippers), or `auto`:
    /// `journal` when stderr is systemd's journal stream (JOURNAL_STREAM),
    /// else `text`. The level comes from RUST_LOG (default `info`).
    #[arg(long, global = true, value_enum, env = "NETWATCH_LOG_FORMAT", default_value_t = crate::logging::LogFormat::Auto)]
    log_format: crate::logging::LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    #[command(verbatim_doc_comment)]
    Agent {
        /// Full resync with Docker at least this often, in seconds.
        #[arg(long, env = "NETWATCH_RESYNC_SECS", default_value_t = 30)]
        resync_secs: u64,
        /// Capacity of the kernel flow table (LRU; verdicts never depend on it).
        #[arg(long, env = "NETWATCH_FLOW_TABLE_ENTRIES", default_value_t = netwatch_common::names::FLOWS_MAX_ENTRIES)]
        flow_table_entries: u32,
        /// Flows the agent keeps one by one in memory (a few hundred bytes
        /// each); beyond that the longest idle are folded into one summary
        /// per container, network, direction and verdict.
        #[arg(long, env = "NETWATCH_FLOW_LIMIT", default_value_t = crate::flows::pipeline::DEFAULT_FLOW_LIMIT)]
        flow_limit: usize,
        /// Manage only these networks (by name; repeat the flag). By default
        /// the agent manages every bridge network. NETWATCH_NETWORKS takes
        /// a comma-separated list.
        #[arg(
            long = "network",
            value_name = "NAME",
            env = "NETWATCH_NETWORKS",
            value_delimiter = ','
        )]
        networks: Vec<String>,
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
        uplinks: Vec<String>,
        /// Where to pin links and maps (a directory in bpffs).
        #[arg(
            long,
            hide = true,
            env = "NETWATCH_PIN_ROOT",
            default_value = "/sys/fs/bpf/netwatch"
        )]
        pin_root: std::path::PathBuf,
        /// Where to keep the agent's lock and status file.
        #[arg(
            long,
            hide = true,
            env = "NETWATCH_RUN_DIR",
            default_value = "/run/netwatch"
        )]
        run_dir: std::path::PathBuf,
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
        state_dir: std::path::PathBuf,
        /// Serve the API (HTTP+JSON, what `netwatch flows`, `drops` and
        /// `observe` talk to; `curl --unix-socket` works too) on this unix
        /// socket. Default: api.sock in the run directory
        /// (/run/netwatch/api.sock).
        #[arg(long, value_name = "PATH", env = "NETWATCH_API_SOCKET")]
        api_socket: Option<std::path::PathBuf>,
        /// Let the members of this group use the API: its socket becomes
        /// mode 0660 with this group. Without it the socket is 0600, root
        /// only.
        #[arg(long, value_name = "GROUP", env = "NETWATCH_API_GROUP")]
        api_group: Option<String>,
        /// Serve Prometheus metrics (GET /metrics) on this address, or
        /// `off`. Loopback by default: put a scraper on this host, or give
        /// an address on purpose.
        #[arg(
            long,
            value_name = "ADDR|off",
            env = "NETWATCH_METRICS_ADDR",
            default_value = "127.0.0.1:9469"
        )]
        metrics_addr: String,
        /// Also write every flow and drop record as a JSON line to this file,
        /// rotated by size like Docker's json-file driver.
        #[arg(long, value_name = "PATH", env = "NETWATCH_FLOW_LOG")]
        flow_log: Option<std::path::PathBuf>,
        /// Rotate the flow log before it grows past this size (k, m, g).
        #[arg(long, value_name = "SIZE", env = "NETWATCH_MAX_SIZE", default_value = "10m", value_parser = crate::export::parse_size)]
        max_size: u64,
        /// Flow log files kept, the current one included.
        #[arg(long, value_name = "N", env = "NETWATCH_MAX_FILE", default_value_t = crate::export::DEFAULT_MAX_FILE, value_parser = crate::export::parse_max_file)]
        max_file: u32,
        /// Record the kernel's own drops of guarded containers' packets
        /// (a program on the kfree_skb tracepoint; `drops` shows them with
        /// kernel:… reasons, e.g. kernel:netfilter_drop for Docker's
        /// iptables rules). `off`: netwatch's own drops only.
        #[arg(long, value_name = "on|off", env = "NETWATCH_KERNEL_DROPS", default_value = "on", value_parser = ["on", "off"])]
        kernel_drops: String,
        /// Audit instead of enforce, on every network whose policy denies
        /// something (internal ones included): nothing is dropped; what
        /// enforcement would drop is forwarded and recorded with the verdict
        /// `audited` and its reason (`flows`, `drops`, `observe`, the flow
        /// log, metrics). For trying a policy on a running stack; per
        /// network, the label netwatch.egress=audit does the same. The
        /// uplink shield is off for audited networks.
        #[arg(long, env = "NETWATCH_AUDIT")]
        audit: bool,
        /// DNS messages recorded per second per CPU (queries and answers
        /// crossing a guarded veth, UDP port 53; `netwatch dns` lists
        /// them and flows name their peers from the answers). Beyond it
        /// they are counted, not recorded, so a DNS flood cannot crowd
        /// out flow records. 0: DNS is not recorded.
        #[arg(long, value_name = "N", env = "NETWATCH_DNS_RATE", default_value_t = netwatch_common::dns::DEFAULT_DNS_RATE)]
        dns_rate: u64,
        /// Print the configuration the agent would run with, and where each
        /// value comes from (flag, environment, default), then exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Check that this host can run netwatch: root, kernel version and
    /// features, bpffs, and that the kernel's verifier accepts every
    /// netwatch program. Loads the programs, attaches nothing, and unloads
    /// them on exit.
    Check {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Show whether the agent runs, what is unguarded, what is attached
    /// where, and what was dropped and why (read from the pinned maps, so it
    /// works whether or not the agent is up).
    ///
    /// Under UNGUARDED it lists every network and endpoint whose policy
    /// denies something (`internal: true`, `netwatch.egress=deny`) but that
    /// netwatch does not enforce, each with why: a driver netwatch has no
    /// hook for, a veth not found or not attached, a network the agent does
    /// not manage. It judges from Docker and the pins now; when Docker does
    /// not answer, it shows the running agent's last account.
    ///
    /// Exit status:
    ///   0  every internal or egress-denied network and endpoint is enforced
    ///   1  status could not be read (e.g. not root)
    ///   3  at least one of them is unguarded (listed under UNGUARDED)
    ///   4  cannot tell: Docker does not answer and no agent has synced
    ///
    /// Examples:
    ///   sudo netwatch status
    ///   sudo netwatch status --network shop_backend || alert
    #[command(verbatim_doc_comment)]
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// Judge only these networks (names or ids; repeat the flag) for
        /// UNGUARDED and the exit status.
        #[arg(long = "network", value_name = "NETWORK")]
        networks: Vec<String>,
        /// Where the agent pins its links and maps (a directory in bpffs).
        #[arg(long, hide = true, default_value = "/sys/fs/bpf/netwatch")]
        pin_root: std::path::PathBuf,
        /// Where the agent keeps its lock and status file.
        #[arg(long, hide = true, default_value = "/run/netwatch")]
        run_dir: std::path::PathBuf,
    },
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
    #[command(verbatim_doc_comment)]
    Explain {
        /// Who sends: a container, `host`, or an IP address.
        source: String,
        /// HOST[:port[/tcp|udp|icmp]]; bracket IPv6 addresses before a port.
        destination: String,
        /// Also run the packet through the kernel programs and compare.
        #[arg(long)]
        from_kernel: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// Where the agent pins its links (a directory in bpffs): an uplink
        /// link pinned there means the uplink shield is attached.
        #[arg(long, hide = true, default_value = "/sys/fs/bpf/netwatch")]
        pin_root: std::path::PathBuf,
    },
    /// Remove everything netwatch attached or pinned (/sys/fs/bpf/netwatch):
    /// links first, which detaches the programs from every interface, then
    /// programs and maps. Reports what it removed. Enforcement stops.
    Detach {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// List Docker's networks, their endpoints and host veths, and how far
    /// netwatch guards each.
    ///
    /// One line per network (driver, internal flag, subnets, bridge device,
    /// number of endpoints, mode, why), then one line per endpoint:
    /// container, service (compose, or swarm), addresses, MAC, the host side of its veth
    /// (found by entering the container's network namespace), mode, why.
    /// The host and none networks list the containers in that network mode.
    ///
    /// The mode of a network or endpoint is one of:
    ///   enforced   its policy denies something (internal: true,
    ///              netwatch.egress=deny) and netwatch's programs apply it
    ///              (on every endpoint's veth, and the network's bridge)
    ///   observed   netwatch's programs are attached and the policy denies
    ///              nothing: every packet passes and is recorded
    ///   unguarded  no netwatch program sees the traffic; WHY says why (a
    ///              driver without a hook, host networking, a veth not found
    ///              or not attached, no agent running, not managed…)
    /// A network is only as guarded as its weakest endpoint.
    ///
    /// Talks to dockerd at DOCKER_HOST (default unix:///var/run/docker.sock).
    /// Run as root to see host veths; without root they are left blank.
    ///
    /// Examples:
    ///   netwatch networks
    ///   netwatch networks backend frontend
    ///   netwatch networks -o json | jq '.[] | select(.internal)'
    #[command(verbatim_doc_comment)]
    Networks {
        /// Show only these networks (names or ids).
        #[arg(value_name = "NETWORK")]
        networks: Vec<String>,
        /// Output format; JSON is an array of networks, each with its
        /// endpoints (the shape is documented in docs/observing.md).
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// Where the agent pins its links and maps (a directory in bpffs).
        #[arg(long, hide = true, default_value = "/sys/fs/bpf/netwatch")]
        pin_root: std::path::PathBuf,
        /// Where the agent keeps its lock and status file.
        #[arg(long, hide = true, default_value = "/run/netwatch")]
        run_dir: std::path::PathBuf,
    },
    /// Draw who talks to whom on this host: containers grouped by network,
    /// the host, and the outside grouped by prefix, with edges weighted by
    /// bytes and dropped edges marked in red with their reason. Writes SVG
    /// (drawn by Graphviz's `dot` when installed, else by netwatch's own
    /// layout), Graphviz DOT, or the graph as JSON. Asks the running agent.
    ///
    /// Examples:
    ///   sudo netwatch map > host.svg
    ///   sudo netwatch map --network shop_backend --since 1h -o dot | dot -Tpng > backend.png
    ///   sudo netwatch map --builtin --out host.svg
    #[command(verbatim_doc_comment)]
    Map {
        #[command(flatten)]
        filter: cli::source::FilterArgs,
        #[command(flatten)]
        source: cli::source::SourceArgs,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = cli::map::MapFormat::Svg)]
        output: cli::map::MapFormat,
        /// Draw the SVG with netwatch's own layout even if Graphviz is installed.
        #[arg(long)]
        builtin: bool,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "PATH")]
        out: Option<std::path::PathBuf>,
    },
    /// Live top talkers, by container (bytes sent and received per second)
    /// or by flow, refreshing in place in a terminal (q or Ctrl-C quits; c
    /// and f switch the view); plain snapshots, one per interval, when the
    /// output is not a terminal. Asks the running agent.
    ///
    /// Examples:
    ///   sudo netwatch top
    ///   sudo netwatch top --by flow --network shop_backend
    ///   sudo netwatch top --once --interval 5 > snapshot.txt
    #[command(verbatim_doc_comment)]
    Top {
        #[command(flatten)]
        filter: cli::source::FilterArgs,
        #[command(flatten)]
        source: cli::source::SourceArgs,
        /// Rank containers or flows.
        #[arg(long, value_enum, default_value_t = crate::render::By::Container)]
        by: crate::render::By,
        /// Seconds between refreshes (rates are over this interval).
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Print one table (rates over one interval) and exit.
        #[arg(long)]
        once: bool,
        /// Rows at most.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Aggregated flows from the running agent: per container, direction
    /// and 5-tuple, who talked to whom, how much, and what was dropped and
    /// why; the busiest first.
    ///
    /// DIR is `egress` for what the container sent and `ingress` for what
    /// it received; traffic between two containers of this host shows at
    /// both ends. PEER names the container at the other end when it is one
    /// of this host's. VERDICT and REASON are those of the flow's latest
    /// packet. Flows the agent folded together to stay within its
    /// --flow-limit show as `(N idle flows)`.
    ///
    /// What is counted: PACKETS and BYTES are what netwatch's hooks on the
    /// container's host-side veth saw, whole Ethernet frames without FCS:
    /// per packet, 14 (Ethernet) + 20 (IPv4; 40 for IPv6, more with
    /// options or extension headers) + the L4 header + payload, where the
    /// L4 header is 8 for UDP and ICMP, and 20-60 for TCP (32 with the
    /// timestamps Linux sends by default, 40 on a SYN). So N UDP datagrams
    /// of S bytes over IPv4 count exactly N packets and N x (S + 42) bytes.
    /// TCP crosses a veth segmentation-offloaded: a "packet" is what the
    /// hook sees, and a GSO burst of up to 64 KiB is one packet with one
    /// set of headers; a transfer of B bytes counts B + 66 per packet
    /// (IPv4, timestamps) plus 8 for the SYN, and fewer packets than a
    /// physical wire would carry. A segment retransmitted after it
    /// crossed the hook counts again, as it would on a wire. The table
    /// shows bytes in binary units (KiB, MiB); JSON has them exact.
    ///
    /// Asks the running agent (`netwatch agent`) over its API socket.
    ///
    /// Examples:
    ///   sudo netwatch flows
    ///   sudo netwatch flows --container web --since 5m
    ///   sudo netwatch flows --verdict dropped --reason host-access
    ///   sudo netwatch flows --proto udp --port 53 -o json | jq '.[] | {container, dst, packets}'
    ///   sudo netwatch flows --service api -o jsonl >> flows.jsonl
    #[command(verbatim_doc_comment)]
    Flows {
        #[command(flatten)]
        filter: cli::source::FilterArgs,
        #[command(flatten)]
        source: cli::source::SourceArgs,
        /// Output format: table, a JSON array of flows, or one JSON
        /// object per line.
        #[arg(short, long, value_enum, default_value_t = cli::source::FlowOutput::Table)]
        output: cli::source::FlowOutput,
    },
    /// DNS queries the containers sent across their interfaces and the
    /// answers they got: time, container, name, type, rcode (NOERROR,
    /// NXDOMAIN, SERVFAIL…), answers (CNAMEs followed), latency from the
    /// query to its answer as the container's veth saw them, and the
    /// resolver asked. A query netwatch dropped says so. From the running
    /// agent: the last 10,000 queries, or with --follow, as they come.
    ///
    /// Docker's embedded resolver: containers on user-defined networks ask
    /// 127.0.0.11 inside their own namespace. That never crosses an
    /// interface, so netwatch cannot see it. The embedded resolver answers
    /// container names and network aliases itself (never listed here);
    /// other names it forwards to the upstream resolvers (the host's, or
    /// `--dns`) from the container's namespace, with the container's
    /// address: those forwarded queries are listed, with that upstream as
    /// the resolver. Containers on the default bridge ask the upstream
    /// directly. Flows name their outside peers (src_name/dst_name) from
    /// the answers listed here.
    ///
    /// Examples:
    ///   sudo netwatch dns
    ///   sudo netwatch dns --container web --since 5m
    ///   sudo netwatch dns --follow
    ///   sudo netwatch dns -o json | jq '.[] | select(.rcode == "NXDOMAIN") | .name'
    #[command(verbatim_doc_comment)]
    Dns {
        #[command(flatten)]
        filter: cli::dns::DnsFilterArgs,
        /// The running agent's API socket (`netwatch agent --api-socket`);
        /// default /run/netwatch/api.sock.
        #[arg(long, value_name = "PATH")]
        socket: Option<std::path::PathBuf>,
        /// Print queries and answers as they come (an answer as its
        /// query's line again, completed) until Ctrl-C.
        #[arg(short, long)]
        follow: bool,
        /// Output format: table, a JSON array of queries (one JSON object
        /// per line with --follow), or one JSON object per line.
        #[arg(short, long, value_enum, default_value_t = cli::source::FlowOutput::Table)]
        output: cli::source::FlowOutput,
    },
    /// What the running agent saw dropped, grouped by container, network
    /// and reason: how many flows, packets and bytes, when last, and the
    /// busiest remote ends (what the container tried to reach, or who
    /// tried to reach it).
    ///
    /// Reasons: not-in-network (outside the network's subnets),
    /// host-access (the host, gateway included), spoofed-source,
    /// spoofed-mac, invalid-header, unsupported-protocol,
    /// broadcast-multicast, extension-header-limit, protected-prefix (the
    /// uplink shield). Counts are Ethernet frames, as for `netwatch flows`.
    ///
    /// Examples:
    ///   sudo netwatch drops
    ///   sudo netwatch drops --since 10m
    ///   sudo netwatch drops --network app_db --reason host-access -o json
    #[command(verbatim_doc_comment)]
    Drops {
        #[command(flatten)]
        filter: cli::source::FilterArgs,
        #[command(flatten)]
        source: cli::source::SourceArgs,
        /// Output format: table, a JSON array of groups, or one JSON
        /// object per line.
        #[arg(short, long, value_enum, default_value_t = cli::source::FlowOutput::Table)]
        output: cli::source::FlowOutput,
    },
    /// Propose the labels that would let the traffic netwatch saw pass
    /// under enforcement, from the dropped and audited flows the agent
    /// holds: typically after running a stack with netwatch.egress=audit
    /// (or `agent --audit`).
    ///
    /// Each service gets one netwatch.allow rule per destination address,
    /// port and protocol it reached (never a wider prefix or another port),
    /// and each network netwatch.egress=deny. What it does not propose is
    /// listed with why: traffic to the host, connections opened from
    /// outside, forged or malformed packets, destinations seen in one flow
    /// only (one-offs), and the kernel's own drops.
    ///
    /// Output: a compose-file snippet to paste (what is not advised as
    /// comments), or -o json.
    ///
    /// With --check FILE it previews instead: each observed flow judged
    /// again as if FILE's labels were applied (the snippet, or your edited
    /// compose file), listing the flows whose verdict would change.
    ///
    /// Examples:
    ///   sudo netwatch advise --network app_back
    ///   sudo netwatch advise --service api --since 1h -o json
    ///   sudo netwatch advise > advised.yml; sudo netwatch advise --check advised.yml
    #[command(verbatim_doc_comment)]
    Advise {
        #[command(flatten)]
        filter: cli::source::FilterArgs,
        #[command(flatten)]
        source: cli::source::SourceArgs,
        /// Output format: a compose snippet (table), or JSON.
        #[arg(short, long, value_enum, default_value_t = cli::source::FlowOutput::Table)]
        output: cli::source::FlowOutput,
        /// Instead of advice: which of the observed flows would change
        /// verdict if this compose file's labels (services.*.labels,
        /// networks.*.labels and .internal) were applied to what runs now,
        /// each judged again by the reference model. Exits 1 when a flow
        /// that passes now (forwarded or audited) would be dropped.
        #[arg(long, value_name = "FILE")]
        check: Option<std::path::PathBuf>,
    },
    /// Flow and drop records live from the running agent, one line each,
    /// until Ctrl-C or --count, like `hubble observe`.
    ///
    /// Events: flow-open (a flow's first packet), flow-close (its first
    /// TCP FIN or RST), flow-export (an active flow, at most once per
    /// export interval), drop (rate-limited per flow). The counts on a
    /// line are the flow's totals so far. A record reaches you within
    /// about 250 ms (the agent reads the kernel's ring buffer 4 times a
    /// second). With --since, the flows seen since then are printed first
    /// (event `flow`). When this command cannot keep up, the agent skips
    /// records for it and says how many: `N events lost` (jsonl:
    /// {"event":"lost","count":N}).
    ///
    /// Examples:
    ///   sudo netwatch observe
    ///   sudo netwatch observe --container web --verdict dropped
    ///   sudo netwatch observe --proto tcp --port 5432 --count 10
    ///   sudo netwatch observe -o jsonl | jq -c 'select(.event == "drop")'
    #[command(verbatim_doc_comment)]
    Observe {
        #[command(flatten)]
        filter: cli::source::FilterArgs,
        #[command(flatten)]
        source: cli::source::SourceArgs,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Output format: one line per event for people, or one JSON
        /// object per line (json and jsonl are the same here).
        #[arg(short, long, value_enum, default_value_t = cli::source::FlowOutput::Table)]
        output: cli::source::FlowOutput,
    },
    /// Print a shell completion script for bash, zsh or fish.
    ///
    /// Examples:
    ///   netwatch completion bash > /etc/bash_completion.d/netwatch
    ///   netwatch completion zsh > "${fpath[1]}/_netwatch"
    ///   netwatch completion fish > ~/.config/fish/completions/netwatch.fish
    #[command(verbatim_doc_comment)]
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write netwatch's man pages (netwatch.1 and one per subcommand) into
    /// DIR (packaging).
    #[command(hide = true)]
    Man {
        /// The directory to write them to (it must exist).
        dir: std::path::PathBuf,
    },
    /// Write the command-line reference (Markdown, every command's help)
    /// to FILE: docs/cli.md, which `cargo xtask docs` regenerates.
    #[command(hide = true)]
    CliReference {
        /// The file to write.
        file: std::path::PathBuf,
    },
    /// Show one container's endpoints, veths and attached netwatch programs.
    ///
    /// For each network the container is attached to: its addresses, MAC and
    /// aliases, the interface inside the container, the host side of the veth
    /// (name and ifindex), which netwatch programs are pinned on it, and its
    /// mode (enforced, observed or unguarded, as `netwatch networks` says;
    /// GUARD is the weakest of them, or why a container in host or none
    /// network mode cannot be guarded). A container started with
    /// `--network container:<other>` shows <other>'s endpoints, which it
    /// shares.
    ///
    /// Talks to dockerd at DOCKER_HOST (default unix:///var/run/docker.sock);
    /// needs root to find host veths.
    ///
    /// Examples:
    ///   netwatch inspect web
    ///   netwatch inspect 3f2a1b -o json
    #[command(verbatim_doc_comment)]
    Inspect {
        /// A running container: its name, full id or a unique id prefix.
        container: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// Where the agent pins its links and maps (a directory in bpffs).
        #[arg(long, hide = true, default_value = "/sys/fs/bpf/netwatch")]
        pin_root: std::path::PathBuf,
        /// Where the agent keeps its lock and status file.
        #[arg(long, hide = true, default_value = "/run/netwatch")]
        run_dir: std::path::PathBuf,
    },
}

/// The agent's settings as `name = value  (source)` lines, one per flag,
/// in the order of `--help`: what `--print-config` shows. The source is
/// `flag`, `env NETWATCH_…`, `default`, or `unset`.
pub fn effective_config(agent: &clap::ArgMatches) -> String {
    let command = Cli::command();
    let Some(definition) = command.find_subcommand("agent") else {
        return String::new();
    };
    let mut out = String::new();
    for arg in definition.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "print_config" | "help" | "log_format") || arg.get_long().is_none() {
            continue;
        }
        let name = arg.get_long().unwrap_or(id);
        let values: Vec<String> = agent
            .get_raw(id)
            .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let source = match agent.value_source(id) {
            Some(clap::parser::ValueSource::CommandLine) => "flag".to_owned(),
            Some(clap::parser::ValueSource::EnvVariable) => format!(
                "env {}",
                arg.get_env()
                    .map(|e| e.to_string_lossy())
                    .unwrap_or_default()
            ),
            Some(clap::parser::ValueSource::DefaultValue) => "default".to_owned(),
            _ => "unset".to_owned(),
        };
        out.push_str(&format!("{name} = {}  ({source})\n", values.join(",")));
    }
    out
}

/// docs/cli.md: every visible command's help, from these definitions.
pub fn cli_reference() -> String {
    cli::reference::markdown(Cli::command())
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

/// Parses the command line and runs the subcommand: the whole `netwatch`
/// binary (the test suite runs the same code under another binary name).
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    crate::logging::init(cli.log_format);
    let result = match cli.command {
        Command::Agent {
            print_config: true, ..
        } => {
            let agent = matches.subcommand_matches("agent").unwrap_or(&matches);
            print!("{}", effective_config(agent));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completion { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "netwatch", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => clap_mangen::generate_to(Cli::command(), &dir)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| anyhow::anyhow!("writing man pages to {}: {e}", dir.display())),
        Command::CliReference { file } => std::fs::write(&file, cli_reference())
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display())),
        Command::Agent {
            resync_secs,
            flow_table_entries,
            flow_limit,
            networks,
            uplinks,
            pin_root,
            run_dir,
            state_dir,
            api_socket,
            api_group,
            metrics_addr,
            flow_log,
            max_size,
            max_file,
            kernel_drops,
            audit,
            dns_rate,
            print_config: false,
        } => crate::agent::UplinkChoice::from_flags(&uplinks)
            .map_err(anyhow::Error::from)
            .and_then(|uplinks| Ok((uplinks, parse_metrics_addr(&metrics_addr)?)))
            .and_then(|(uplinks, metrics_addr)| {
                cli::agent::run_agent(crate::agent::AgentOptions {
                    metrics_addr,
                    flow_log: flow_log.map(|path| crate::export::FlowLogOptions {
                        path,
                        max_size,
                        max_file,
                    }),
                    resync_interval: std::time::Duration::from_secs(resync_secs),
                    flow_table_entries,
                    flow_limit,
                    networks,
                    uplinks,
                    pin_root,
                    api_socket: api_socket.unwrap_or_else(|| run_dir.join("api.sock")),
                    api_group,
                    run_dir,
                    state_dir,
                    kernel_drops: kernel_drops == "on",
                    audit,
                    dns_rate,
                })
            }),
        Command::Check { output } => cli::check::run(output),
        Command::Detach { output } => cli::detach::run(output),
        Command::Explain {
            source,
            destination,
            from_kernel,
            output,
            pin_root,
        } => cli::explain::run(&source, &destination, from_kernel, output, &pin_root),
        Command::Status {
            output,
            networks,
            pin_root,
            run_dir,
        } => cli::status::run(output, &networks, &pin_root, &run_dir),
        Command::Networks {
            networks,
            output,
            pin_root,
            run_dir,
        } => cli::networks::run(&networks, output, &pin_root, &run_dir),
        Command::Inspect {
            container,
            output,
            pin_root,
            run_dir,
        } => cli::inspect::run(&container, output, &pin_root, &run_dir),
        Command::Flows {
            filter,
            source,
            output,
        } => cli::flows::run(&filter, &source, output),
        Command::Dns {
            filter,
            socket,
            follow,
            output,
        } => cli::dns::run(&filter, socket, follow, output),
        Command::Drops {
            filter,
            source,
            output,
        } => cli::drops::run(&filter, &source, output),
        Command::Advise {
            filter,
            source,
            output,
            check,
        } => cli::advise::run(&filter, &source, output, check.as_deref()),
        Command::Map {
            filter,
            source,
            output,
            builtin,
            out,
        } => cli::map::run(&filter, &source, output, builtin, out.as_deref()),
        Command::Top {
            filter,
            source,
            by,
            interval,
            once,
            limit,
        } => cli::top::run(&filter, &source, by, interval, once, limit),
        Command::Observe {
            filter,
            source,
            count,
            output,
        } => cli::observe::run(&filter, &source, output, count),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("netwatch: {}", cli::one_line(&error));
            ExitCode::FAILURE
        }
    }
}
