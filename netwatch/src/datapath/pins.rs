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
//!                                     bridge, and direction; one per
//!                                     macvlan parent (`macvlan_parent`)
//!   links/mvchild-<netns>-<ifindex>   one TCX link per macvlan child, on
//!                                     its ingress in the container's
//!                                     namespace (cookie `<netns>`): its
//!                                     ifindex is only unique there
//!   links/sbx-<netns>-<ifindex>-<program>
//!                                     one TCX link per overlay endpoint's
//!                                     veth in its network's sandbox
//!                                     namespace (cookie `<netns>`), and
//!                                     direction
//!   links/mvnew-<parent>-<ifindex>    one TCX link per macvlan child
//!                                     attached as it appeared, in the host
//!                                     namespace (ifindex `<ifindex>` there,
//!                                     of parent `<parent>`), until the
//!                                     reconcile adopts it as `mvchild-…`
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

/// Creates `dir` and any missing parents with mode 0700: pinned objects are
/// root's alone (the pins themselves are created 0600 by the kernel).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
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

/// The pin of the link attaching `macvlan_child` to interface `ifindex` of
/// the network namespace whose cookie is `netns`.
pub fn child_link_path(root: &Path, netns: u64, ifindex: u32) -> PathBuf {
    links_dir(root).join(format!("mvchild-{netns}-{ifindex}"))
}

/// Whether `macvlan_child` is pinned as attached to interface `ifindex` of
/// namespace `netns`.
pub fn child_attached(root: &Path, netns: u64, ifindex: u32) -> bool {
    child_link_path(root, netns, ifindex).exists()
}

/// The pin of a provisional link: `macvlan_child` attached to macvlan child
/// `ifindex` of parent `parent` while the child was still in the host
/// namespace, before Docker moved it into its container's.
pub fn provisional_child_path(root: &Path, parent: u32, ifindex: u32) -> PathBuf {
    links_dir(root).join(format!("mvnew-{parent}-{ifindex}"))
}

/// A provisional child link's pin, parsed from its name: the parent's
/// ifindex and the child's host ifindex when it was attached.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProvisionalPin {
    pub parent: u32,
    pub ifindex: u32,
    pub path: PathBuf,
}

/// Every provisional child link pinned under `root`.
pub fn provisional_children(root: &Path) -> Vec<ProvisionalPin> {
    let Ok(entries) = std::fs::read_dir(links_dir(root)) else {
        return Vec::new();
    };
    let mut found: Vec<ProvisionalPin> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let (parent, ifindex) = parse_provisional_name(e.file_name().to_str()?)?;
            Some(ProvisionalPin {
                parent,
                ifindex,
                path: e.path(),
            })
        })
        .collect();
    found.sort();
    found
}

fn parse_provisional_name(name: &str) -> Option<(u32, u32)> {
    let (parent, ifindex) = name.strip_prefix("mvnew-")?.split_once('-')?;
    Some((parent.parse().ok()?, ifindex.parse().ok()?))
}

/// Whether `macvlan_parent` is pinned as attached to host interface
/// `ifindex`.
pub fn parent_attached(root: &Path, ifindex: u32) -> bool {
    link_path(root, Hook::MacvlanParent, ifindex).exists()
}

/// The macvlan children with a pinned link under `root`: (netns cookie,
/// ifindex).
pub fn attached_children(root: &Path) -> std::collections::BTreeSet<(u64, u32)> {
    pinned_links(root)
        .into_iter()
        .filter(|link| link.program == Hook::MacvlanChild.program_name())
        .filter_map(|link| Some((link.netns?, link.ifindex)))
        .collect()
}

/// The pin of the link attaching `hook` to veth `ifindex` of the overlay
/// sandbox namespace whose cookie is `netns`.
pub fn sandbox_link_path(root: &Path, hook: Hook, netns: u64, ifindex: u32) -> PathBuf {
    links_dir(root).join(format!("sbx-{netns}-{ifindex}-{}", hook.program_name()))
}

/// Whether both veth programs are pinned as attached to veth `ifindex` of
/// sandbox namespace `netns`.
pub fn sandbox_veth_attached(root: &Path, netns: u64, ifindex: u32) -> bool {
    [Hook::FromContainer, Hook::ToContainer]
        .iter()
        .all(|hook| sandbox_link_path(root, *hook, netns, ifindex).exists())
}

/// The overlay sandbox veths with at least one pinned link under `root`:
/// (netns cookie, ifindex).
pub fn attached_sandbox_veths(root: &Path) -> std::collections::BTreeSet<(u64, u32)> {
    pinned_links(root)
        .into_iter()
        .filter(|link| link.program != Hook::MacvlanChild.program_name())
        .filter_map(|link| Some((link.netns?, link.ifindex)))
        .collect()
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

/// The host interfaces (ifindexes) that have at least one pinned TC link
/// under `root`; macvlan children and sandbox veths, whose ifindexes are
/// their namespaces', are not among them.
pub fn attached_tc_ifindexes(root: &Path) -> std::collections::BTreeSet<u32> {
    pinned_links(root)
        .into_iter()
        .filter(|link| link.program != Hook::Uplink.program_name() && link.netns.is_none())
        .map(|link| link.ifindex)
        .collect()
}

/// The ifindexes with a pinned uplink (XDP) link under `root`.
pub fn attached_uplink_ifindexes(root: &Path) -> std::collections::BTreeSet<u32> {
    pinned_links(root)
        .into_iter()
        .filter(|link| link.program == Hook::Uplink.program_name())
        .map(|link| link.ifindex)
        .collect()
}

/// One pinned link: which interface and which program.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PinnedLink {
    pub ifindex: u32,
    pub program: String,
    /// For a macvlan child: the cookie of the container's network
    /// namespace, where `ifindex` is; for an overlay endpoint's veth: its
    /// sandbox's; `None`: a host interface.
    pub netns: Option<u64>,
}

impl PinnedLink {
    /// The pin's file name under [`links_dir`].
    pub fn pin_name(&self) -> String {
        match self.netns {
            None if self.program == Hook::Uplink.program_name() => {
                format!("uplink-{}", self.ifindex)
            }
            None => format!("tc-{}-{}", self.ifindex, self.program),
            Some(netns) if self.program == Hook::MacvlanChild.program_name() => {
                format!("mvchild-{netns}-{}", self.ifindex)
            }
            Some(netns) => format!("sbx-{netns}-{}-{}", self.ifindex, self.program),
        }
    }
}

/// Every link pinned under `root`, sorted by interface.
pub fn pinned_links(root: &Path) -> Vec<PinnedLink> {
    let Ok(entries) = std::fs::read_dir(links_dir(root)) else {
        return Vec::new();
    };
    let mut links: Vec<PinnedLink> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| parse_link_name(e.file_name().to_str()?))
        .collect();
    links.sort();
    links
}

fn parse_link_name(name: &str) -> Option<PinnedLink> {
    if let Some(ifindex) = name.strip_prefix("uplink-") {
        return Some(PinnedLink {
            ifindex: ifindex.parse().ok()?,
            program: Hook::Uplink.program_name().to_string(),
            netns: None,
        });
    }
    if let Some(child) = name.strip_prefix("mvchild-") {
        let (netns, ifindex) = child.split_once('-')?;
        return Some(PinnedLink {
            ifindex: ifindex.parse().ok()?,
            program: Hook::MacvlanChild.program_name().to_string(),
            netns: Some(netns.parse().ok()?),
        });
    }
    if let Some(veth) = name.strip_prefix("sbx-") {
        let mut parts = veth.splitn(3, '-');
        let (netns, ifindex, program) = (parts.next()?, parts.next()?, parts.next()?);
        return Some(PinnedLink {
            ifindex: ifindex.parse().ok()?,
            program: program.to_string(),
            netns: Some(netns.parse().ok()?),
        });
    }
    let (ifindex, program) = name.strip_prefix("tc-")?.split_once('-')?;
    Some(PinnedLink {
        ifindex: ifindex.parse().ok()?,
        program: program.to_string(),
        netns: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisional_child_pins_are_their_own_kind() {
        let path = provisional_child_path(Path::new("/x"), 60, 61);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_provisional_name(name), Some((60, 61)));
        // Not a child's, a sandbox veth's nor a host interface's: the
        // reconcile's diff of namespaced links never detaches it as one.
        assert_eq!(parse_link_name(name), None);
        for bad in ["mvnew-60", "mvnew-x-61", "mvnew-60-", "mvchild-1-61"] {
            assert_eq!(parse_provisional_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn link_pin_names_round_trip() {
        let root = Path::new("/x");
        for (hook, ifindex) in [
            (Hook::FromContainer, 12),
            (Hook::ToContainer, 7),
            (Hook::Uplink, 2),
        ] {
            let path = link_path(root, hook, ifindex);
            let name = path.file_name().unwrap().to_str().unwrap();
            let parsed = parse_link_name(name).unwrap();
            assert_eq!(parsed.ifindex, ifindex);
            assert_eq!(parsed.program, hook.program_name());
            assert_eq!(parsed.pin_name(), name);
        }
        let child = child_link_path(root, 4096, 3);
        let sandbox = sandbox_link_path(root, Hook::FromContainer, 4097, 258);
        for path in [&child, &sandbox] {
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(parse_link_name(name).unwrap().pin_name(), name);
        }
        assert_eq!(
            parse_link_name(child.file_name().unwrap().to_str().unwrap()),
            Some(PinnedLink {
                ifindex: 3,
                program: Hook::MacvlanChild.program_name().to_string(),
                netns: Some(4096),
            })
        );
        let sandbox = sandbox_link_path(root, Hook::ToContainer, 4097, 258);
        assert_eq!(
            parse_link_name(sandbox.file_name().unwrap().to_str().unwrap()),
            Some(PinnedLink {
                ifindex: 258,
                program: "to_container".to_string(),
                netns: Some(4097),
            })
        );
        assert_eq!(parse_link_name("mvchild-x-3"), None);
        assert_eq!(parse_link_name("sbx-1-2"), None);
        assert_eq!(parse_link_name("sbx-x-2-from_container"), None);
        assert_eq!(parse_link_name("tc-x-from_container"), None);
        assert_eq!(parse_link_name("random"), None);
    }

    #[test]
    fn macvlan_children_sandbox_veths_and_host_interfaces_are_told_apart() {
        let root = std::env::temp_dir().join(format!("netwatch-pins-test-{}", std::process::id()));
        create_private_dir(&links_dir(&root)).unwrap();
        for path in [
            link_path(&root, Hook::FromContainer, 7),
            link_path(&root, Hook::ToContainer, 7),
            child_link_path(&root, 4096, 7),
            sandbox_link_path(&root, Hook::FromContainer, 4097, 7),
            sandbox_link_path(&root, Hook::ToContainer, 4097, 7),
            sandbox_link_path(&root, Hook::ToContainer, 4098, 9),
        ] {
            std::fs::write(path, b"").unwrap();
        }
        let attached = (
            attached_tc_ifindexes(&root),
            attached_children(&root),
            attached_sandbox_veths(&root),
        );
        let both = (
            sandbox_veth_attached(&root, 4097, 7),
            sandbox_veth_attached(&root, 4098, 9),
        );
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(attached.0, [7].into());
        assert_eq!(attached.1, [(4096, 7)].into());
        assert_eq!(attached.2, [(4097, 7), (4098, 9)].into());
        assert_eq!(both, (true, false), "one link of two is not attached");
    }
}
