//! Where netwatch pins its objects in bpffs.
//!
//! Pinned links keep enforcement in place when the agent exits (an unpinned
//! TCX link detaches when its last fd closes: fail-open). Pinned maps and
//! programs let a restarted agent adopt what is attached instead of loading
//! a second copy. Everything netwatch pins lives under one directory, so
//! `netwatch detach` knows exactly what to remove:
//!
//! ```text
//! /sys/fs/bpf/netwatch/
//!   maps/<MAP>                        every map of the object
//!   progs/<program>                   from_container, to_container, uplink
//!   links/tc-<ifindex>-<program>      one TCX link per container veth or
//!                                     bridge, and direction
//!   links/uplink-<ifindex>            one XDP link per uplink
//! ```

use std::path::{Path, PathBuf};

use super::Hook;

/// The bpffs mount netwatch expects.
pub const BPFFS: &str = "/sys/fs/bpf";

/// netwatch's own directory in bpffs.
pub fn root() -> PathBuf {
    Path::new(BPFFS).join("netwatch")
}

pub fn maps_dir(root: &Path) -> PathBuf {
    root.join("maps")
}

pub fn progs_dir(root: &Path) -> PathBuf {
    root.join("progs")
}

pub fn links_dir(root: &Path) -> PathBuf {
    root.join("links")
}

/// The pin of the link attaching `hook` to interface `ifindex`.
pub fn link_path(root: &Path, hook: Hook, ifindex: u32) -> PathBuf {
    let name = match hook {
        Hook::Uplink => format!("uplink-{ifindex}"),
        _ => format!("tc-{ifindex}-{}", hook.program_name()),
    };
    links_dir(root).join(name)
}

/// Whether both TC programs are pinned as attached to `ifindex` (a
/// container's veth or a network's bridge).
pub fn veth_attached(root: &Path, ifindex: u32) -> bool {
    [Hook::FromContainer, Hook::ToContainer]
        .iter()
        .all(|hook| link_path(root, *hook, ifindex).exists())
}

/// The ifindexes that have at least one pinned TC link under `root`.
pub fn attached_tc_ifindexes(root: &Path) -> std::collections::BTreeSet<u32> {
    let Ok(entries) = std::fs::read_dir(links_dir(root)) else {
        return Default::default();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let rest = name.to_str()?.strip_prefix("tc-")?;
            rest.split('-').next()?.parse().ok()
        })
        .collect()
}
