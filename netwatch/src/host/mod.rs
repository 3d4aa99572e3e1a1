//! The host-facing plumbing: facts about the host read from /proc (here),
//! which host interface carries a container's endpoint ([`interfaces`]),
//! interfaces as the kernel announces them ([`links`]), routing questions
//! ([`routes`]), the rtnetlink socket they share ([`rtnetlink`]) and the
//! host-wide RCU knob attaches wait on ([`rcu`]).

pub mod interfaces;
pub mod links;
pub mod rcu;
pub mod routes;
pub mod rtnetlink;

use std::{fmt, sync::OnceLock};

/// The host's name as the kernel has it (`uname -n`, which is also the
/// `Name` in `docker info`): what tells a fleet's flows apart. Read once,
/// so every record of one agent names the same host even if the hostname
/// changes while it runs; `unknown` if /proc cannot say.
pub fn host_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    })
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    effective_uid(&std::fs::read_to_string("/proc/self/status").unwrap_or_default()) == Some(0)
}

fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
}

/// Whether a bpffs is mounted at /sys/fs/bpf.
pub fn bpffs_mounted() -> bool {
    mounts_bpffs(&std::fs::read_to_string("/proc/mounts").unwrap_or_default())
}

fn mounts_bpffs(mounts: &str) -> bool {
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let _source = fields.next();
        fields.next() == Some("/sys/fs/bpf") && fields.next() == Some("bpf")
    })
}

/// A kernel release such as 6.18.44.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRelease {
    pub major: u32,
    pub minor: u32,
    pub text: String,
}

impl KernelRelease {
    pub fn parse(text: &str) -> Option<KernelRelease> {
        let text = text.trim();
        let mut parts = text.split(['.', '-']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(KernelRelease {
            major,
            minor,
            text: text.to_string(),
        })
    }

    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for KernelRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The cookie of this process's network namespace (see
/// [`crate::host::rtnetlink::RtNetlink::netns_cookie`]); `None` when the kernel
/// cannot tell (older than 5.14).
pub fn netns_cookie() -> Option<u64> {
    crate::host::rtnetlink::RtNetlink::open()
        .and_then(|socket| socket.netns_cookie())
        .ok()
}

/// Every address of the host's own interfaces (in this network namespace),
/// loopback included: traffic from a container to any of them is host access.
pub fn addresses() -> Vec<std::net::IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<std::net::IpAddr> = addrs
        .filter_map(|ifaddr| {
            let address = ifaddr.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                Some(std::net::IpAddr::V4(v4.ip()))
            } else {
                address
                    .as_sockaddr_in6()
                    .map(|v6| std::net::IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The running kernel's release.
pub fn kernel_release() -> Option<KernelRelease> {
    KernelRelease::parse(&std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?)
}

/// A Linux capability netwatch needs, with its bit number in
/// `/proc/self/status` (linux/capability.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Entering containers' network namespaces (setns).
    SysAdmin = 21,
    /// Attaching programs to interfaces, netlink changes.
    NetAdmin = 12,
    /// Loading programs, creating and reading maps, BPF_PROG_TEST_RUN.
    Bpf = 39,
    /// Programs that read packet data with pointer arithmetic (Linux 5.8
    /// split it from CAP_SYS_ADMIN; without it the verifier refuses them).
    Perfmon = 38,
    /// Opening `/proc/<pid>/ns/net` of a container's process: the kernel's
    /// ptrace access check passes for the same user only when our permitted
    /// set holds all of the target's, which a process with just the
    /// capabilities above lacks against a container's (CHOWN, KILL, …).
    /// Without it every container's host veth is "not found".
    SysPtrace = 19,
}

impl Capability {
    pub fn name(self) -> &'static str {
        match self {
            Capability::SysAdmin => "CAP_SYS_ADMIN",
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::Bpf => "CAP_BPF",
            Capability::Perfmon => "CAP_PERFMON",
            Capability::SysPtrace => "CAP_SYS_PTRACE",
        }
    }
}

/// What loading and attaching the programs needs: the agent and standalone
/// sessions.
pub const ATTACH_CAPABILITIES: &[Capability] = &[
    Capability::Bpf,
    Capability::Perfmon,
    Capability::NetAdmin,
    Capability::SysAdmin,
    Capability::SysPtrace,
];

/// Which of `needed` this process does not have in its effective set.
pub fn missing_capabilities(needed: &[Capability]) -> Vec<Capability> {
    let effective =
        effective_capabilities(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
            .unwrap_or(0);
    missing_from(effective, needed)
}

/// Which of `needed` the capability set `effective` lacks. CAP_SYS_ADMIN
/// stands in for CAP_BPF and CAP_PERFMON, as it does in the kernel
/// (`bpf_capable()`, `perfmon_capable()`): Docker 20.10 does not know
/// those two and cannot `--cap-add` them, and a container with
/// CAP_SYS_ADMIN loads the programs all the same.
fn missing_from(effective: u64, needed: &[Capability]) -> Vec<Capability> {
    let has = |cap: Capability| effective & (1 << cap as u32) != 0;
    needed
        .iter()
        .copied()
        .filter(|cap| {
            let implied =
                matches!(cap, Capability::Bpf | Capability::Perfmon) && has(Capability::SysAdmin);
            !has(*cap) && !implied
        })
        .collect()
}

/// A one-line refusal when capabilities are missing: which, and how to get
/// them. `what` names the command (`netwatch agent`).
pub fn require_capabilities(what: &str, needed: &[Capability]) -> Result<(), String> {
    let missing = missing_capabilities(needed);
    if missing.is_empty() {
        return Ok(());
    }
    let names = |caps: &[Capability]| caps.iter().map(|c| c.name()).collect::<Vec<_>>();
    Err(format!(
        "{what} needs {}, and this process lacks {}: run netwatch as root, or in a container with --cap-add {}",
        names(needed).join(", "),
        names(&missing).join(", "),
        missing
            .iter()
            .map(|c| c.name().trim_start_matches("CAP_"))
            .collect::<Vec<_>>()
            .join(" --cap-add ")
    ))
}

fn effective_capabilities(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_capabilities_are_read_from_proc_status() {
        let status = "Name:\tnetwatch\nCapInh:\t0000000000000000\nCapEff:\t000001fffedfefff\n";
        let caps = effective_capabilities(status).unwrap();
        assert_eq!(caps & (1 << Capability::NetAdmin as u32), 0);
        assert_eq!(caps & (1 << Capability::SysAdmin as u32), 0);
        assert_ne!(caps & (1 << Capability::Bpf as u32), 0);
        assert_eq!(effective_capabilities("Name:\tx\n"), None);
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon_as_in_the_kernel() {
        let bit = |cap: Capability| 1u64 << cap as u32;
        let sys_admin = bit(Capability::SysAdmin) | bit(Capability::NetAdmin);
        assert_eq!(
            missing_from(sys_admin, ATTACH_CAPABILITIES),
            [Capability::SysPtrace]
        );
        let bpf_only = bit(Capability::Bpf) | bit(Capability::NetAdmin);
        assert_eq!(
            missing_from(bpf_only, ATTACH_CAPABILITIES),
            [
                Capability::Perfmon,
                Capability::SysAdmin,
                Capability::SysPtrace
            ]
        );
    }

    #[test]
    fn kernel_release_reads_distribution_suffixes() {
        let k = KernelRelease::parse("6.18.44-fc-v595\n").unwrap();
        assert_eq!((k.major, k.minor), (6, 18));
        assert!(k.at_least(6, 6));
        assert!(
            !KernelRelease::parse("6.1.0-13-amd64")
                .unwrap()
                .at_least(6, 6)
        );
        assert_eq!(KernelRelease::parse("garbage"), None);
    }

    #[test]
    fn effective_uid_is_the_second_uid_field() {
        assert_eq!(effective_uid("Name:\tx\nUid:\t1000\t0\t0\t0\n"), Some(0));
        assert_eq!(effective_uid("Uid:\t0\t1000\t0\t0\n"), Some(1000));
        assert_eq!(effective_uid(""), None);
    }

    #[test]
    fn host_addresses_include_loopback() {
        let addrs = addresses();
        assert!(
            addrs.contains(&std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
    }

    #[test]
    fn bpffs_is_recognised_only_at_its_mount_point() {
        assert!(mounts_bpffs("bpf /sys/fs/bpf bpf rw,nosuid 0 0\n"));
        assert!(!mounts_bpffs("none /sys/fs/bpf tmpfs rw 0 0\n"));
        assert!(!mounts_bpffs("bpf /mnt/bpf bpf rw 0 0\n"));
    }
}
