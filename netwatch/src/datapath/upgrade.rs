//! Taking over what an earlier agent pinned — maybe an older netwatch —
//! without a moment unguarded.
//!
//! What an agent finds under its pin root was made by a previous agent:
//! maps that hold the policy and the flows, and links that keep programs
//! attached. aya reuses a pinned map whenever the pin exists, whatever its
//! layout (checked in aya 0.14: `map_pin_path` opens the pin and never
//! compares it with the object's definition), and a pinned link keeps
//! running the program it was made with. So before loading:
//!
//! - each pinned map is compared with this build's definition (type, key
//!   and value size, capacity, flags, read from the kernel) and with the
//!   layout stamp (a directory `layout-<N>` in the pin root, bumped by hand
//!   when a map's meaning changes without its sizes): a map that fits is
//!   adopted, one that does not is replaced by a new one of this build's
//!   layout, not pinned yet (the old programs keep using the old map and
//!   its policy meanwhile);
//! - once this agent has written its policy (the first reconcile),
//!   every pinned link is switched to this build's program in place
//!   (`BPF_LINK_UPDATE`: the link never detaches, the next packet runs the
//!   new program), and only then are the replaced maps' pins swapped for
//!   the new maps and the stamp written.
//!
//! Minimum kernel: 5.7 for `BPF_LINK_UPDATE` (TCX links: 6.6).

use std::{fs, io, path::Path};

use aya::{
    maps::{HashMap, MapData, MapError, MapInfo},
    programs::{SchedClassifier, Xdp, links::FdLink, links::PinnedLink as AyaPinnedLink},
};
use netwatch_common::{
    flow::{FlowKey, FlowKey4, FlowStats},
    names,
};

use super::{Datapath, DatapathError, pins};

/// The layout of netwatch's pinned maps beyond their sizes. Bump it when a
/// map keeps its sizes but changes meaning (a field reinterpreted): an
/// agent then replaces every pinned map instead of adopting it.
pub const LAYOUT: u32 = 1;

/// `BPF_NOEXIST` (include/uapi/linux/bpf.h): insert only where no entry is.
const BPF_NOEXIST: u64 = 1;

/// The stamp directory of `layout` under `root`.
fn stamp_dir(root: &Path, layout: u32) -> std::path::PathBuf {
    root.join(format!("layout-{layout}"))
}

/// The layout stamps under `root` (normally one; none before netwatch
/// stamped its pins).
pub fn stamps(root: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut stamps: Vec<u32> = entries
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("layout-")?
                .parse()
                .ok()
        })
        .collect();
    stamps.sort_unstable();
    stamps
}

/// Writes this build's stamp and removes any other.
pub(super) fn write_stamp(root: &Path) -> io::Result<()> {
    pins::create_private_dir(&stamp_dir(root, LAYOUT))?;
    for other in stamps(root).into_iter().filter(|s| *s != LAYOUT) {
        fs::remove_dir(stamp_dir(root, other))?;
    }
    Ok(())
}

/// Removes every stamp (with the rest of the pins, by `detach_all`).
pub(super) fn remove_stamps(root: &Path) {
    for stamp in stamps(root) {
        let _ = fs::remove_dir(stamp_dir(root, stamp));
    }
}

/// One map as the kernel or this build defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct MapShape {
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// This build's definition of map `name`, with the capacity the loader
/// will give the flow table.
pub(super) fn wanted_shape(
    object: &aya_obj::Object,
    name: &str,
    flow_table_entries: u32,
) -> Option<MapShape> {
    let map = object.maps.get(name)?;
    Some(MapShape {
        key_size: map.key_size(),
        value_size: map.value_size(),
        max_entries: if names::FLOW_TABLES.contains(&name) {
            flow_table_entries
        } else {
            map.max_entries()
        },
        flags: map.map_flags(),
    })
}

/// What the kernel says of the map pinned at `path`.
fn pinned_shape(path: &Path) -> Result<MapShape, String> {
    let info = MapInfo::from_pin(path).map_err(|e| e.to_string())?;
    Ok(MapShape {
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
        flags: info.map_flags(),
    })
}

/// Whether the map pinned at `path` can be adopted by a build that wants
/// `wanted`, under pins stamped `stamps`; why not, otherwise.
pub(super) fn judge_pinned_map(
    path: &Path,
    wanted: MapShape,
    stamps: &[u32],
) -> Result<(), String> {
    if let Some(other) = stamps.iter().find(|s| **s != LAYOUT) {
        return Err(format!(
            "pinned by a netwatch of layout {other} (this one is layout {LAYOUT})"
        ));
    }
    let pinned = pinned_shape(path)?;
    if pinned == wanted {
        return Ok(());
    }
    let mut differences = Vec::new();
    for (what, had, wants) in [
        ("key size", pinned.key_size, wanted.key_size),
        ("value size", pinned.value_size, wanted.value_size),
        ("capacity", pinned.max_entries, wanted.max_entries),
        ("flags", pinned.flags, wanted.flags),
    ] {
        if had != wants {
            differences.push(format!("{what} {had}, this build {wants}"));
        }
    }
    Err(differences.join(", "))
}

/// What [`Datapath::take_over_links`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TakeOver {
    /// Links switched to this build's programs in place.
    pub switched: usize,
    /// Maps whose pins now name this build's maps.
    pub maps_replaced: Vec<&'static str>,
    /// IPv4 flows moved from `FLOWS`, where a netwatch before `FLOWS4`
    /// kept them, into `FLOWS4`.
    pub ipv4_flows_moved: usize,
}

impl Datapath {
    /// Maps found pinned that this build could not adopt, with why; they
    /// are swapped by [`Datapath::take_over_links`].
    pub fn maps_to_replace(&self) -> &[(&'static str, String)] {
        &self.replaced_maps
    }

    /// Switches every link pinned under the pin root that runs another
    /// program than this process's to this process's program of the same
    /// role, in place; then pins the maps this build replaced in the place
    /// of the old ones, and stamps the pins with this build's layout. Call
    /// it once this process's maps hold the policy.
    ///
    /// # Errors
    /// No pin root, or a link or pin the kernel refuses; links switched
    /// before the failure stay switched (each switch is atomic).
    pub fn take_over_links(&mut self) -> Result<TakeOver, DatapathError> {
        let root = self
            .pin_root()
            .ok_or(DatapathError::NotPinned)?
            .to_path_buf();
        let mut done = TakeOver::default();
        for link in pins::pinned_links(&root) {
            let path = pins::links_dir(&root).join(link.pin_name());
            if self.switch_link(&path, &link.program)? {
                done.switched += 1;
            }
        }
        let dir = pins::maps_dir(&root);
        for (name, _) in std::mem::take(&mut self.replaced_maps) {
            let path = dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(DatapathError::Pin { path, source }),
            }
            let map = self.ebpf.map(name).ok_or(DatapathError::MissingMap(name))?;
            map.pin(&path).map_err(|e| DatapathError::Pin {
                path: path.clone(),
                source: io::Error::other(e.to_string()),
            })?;
            done.maps_replaced.push(name);
        }
        write_stamp(&root).map_err(DatapathError::pin(&root))?;
        // Only now do no programs of the earlier agent run that would put
        // IPv4 flows into `FLOWS` again.
        done.ipv4_flows_moved = self.move_ipv4_flows()?;
        Ok(done)
    }

    /// Moves the IPv4 flows a netwatch without `FLOWS4` kept in `FLOWS`
    /// into `FLOWS4`, counts and all, so that this build's programs go on
    /// counting them (and answers from a published port find the inbound
    /// flow they answer) instead of starting them over. An entry this
    /// build's programs made meanwhile in `FLOWS4` is kept, the old one
    /// dropped. Returns how many moved.
    ///
    /// # Errors
    /// The kernel refuses a read, an insert or a delete.
    pub fn move_ipv4_flows(&mut self) -> Result<usize, DatapathError> {
        let name = names::MAP_FLOWS;
        let strays: Vec<(FlowKey, FlowKey4, FlowStats)> = {
            let map: HashMap<&MapData, FlowKey, FlowStats> = self
                .map(name)?
                .try_into()
                .map_err(DatapathError::map(name))?;
            map.iter()
                .filter_map(|entry| match entry {
                    Ok((key, stats)) => key.narrow().map(|short| Ok((key, short, stats))),
                    // Removed (evicted) while iterating: skip it.
                    Err(MapError::KeyNotFound) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, _>>()
                .map_err(DatapathError::map(name))?
        };
        let mut moved = 0;
        for (key, short, stats) in strays {
            let mut v4: HashMap<&mut MapData, FlowKey4, FlowStats> = self
                .map_mut(names::MAP_FLOWS4)?
                .try_into()
                .map_err(DatapathError::map(names::MAP_FLOWS4))?;
            match v4.insert(short, stats, BPF_NOEXIST) {
                Ok(()) => moved += 1,
                // Already there: this build's programs saw the flow since.
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(nix::libc::EEXIST) => {}
                Err(e) => return Err(DatapathError::map(names::MAP_FLOWS4)(e)),
            }
            let mut full: HashMap<&mut MapData, FlowKey, FlowStats> = self
                .map_mut(name)?
                .try_into()
                .map_err(DatapathError::map(name))?;
            match full.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(DatapathError::map(name)(e)),
            }
        }
        Ok(moved)
    }

    /// Points the link pinned at `path` at this process's `program`, unless
    /// it already runs it. Returns whether it switched.
    fn switch_link(&mut self, path: &Path, program: &str) -> Result<bool, DatapathError> {
        let link_error = |e: &dyn std::fmt::Display| DatapathError::Pin {
            path: path.to_path_buf(),
            source: io::Error::other(e.to_string()),
        };
        let fd_link: FdLink = match AyaPinnedLink::from_pin(path) {
            Ok(pinned) => pinned.into(),
            // Removed meanwhile (its interface went away): nothing to do.
            Err(_) if !path.exists() => return Ok(false),
            Err(e) => return Err(link_error(&e)),
        };
        let running = fd_link.info().map_err(|e| link_error(&e))?.program_id();
        // The programs a link pin can name (bench programs are never
        // attached).
        let name = [
            names::PROG_FROM_CONTAINER,
            names::PROG_TO_CONTAINER,
            names::PROG_UPLINK,
            names::PROG_MACVLAN_PARENT,
            names::PROG_MACVLAN_CHILD,
        ]
        .into_iter()
        .find(|p| *p == program)
        .ok_or(DatapathError::MissingProgram(
            "(unknown program in a link pin)",
        ))?;
        let ours = self
            .ebpf
            .program(name)
            .ok_or(DatapathError::MissingProgram(name))?
            .info()
            .map_err(DatapathError::program(name))?
            .id();
        if running == ours {
            return Ok(false);
        }
        // The link moves into the program's own list; taking it back and
        // dropping it closes only this process's fd: the pin keeps the
        // link, now running `name`.
        // The same steps for either kind of program; only the types differ.
        macro_rules! switch_to {
            ($kind:ty) => {{
                let program: &mut $kind = self
                    .ebpf
                    .program_mut(name)
                    .ok_or(DatapathError::MissingProgram(name))?
                    .try_into()
                    .map_err(DatapathError::program(name))?;
                let link = fd_link.try_into().map_err(|e| link_error(&e))?;
                let id = program
                    .attach_to_link(link)
                    .map_err(DatapathError::program(name))?;
                drop(program.take_link(id));
            }};
        }
        if name == names::PROG_UPLINK {
            switch_to!(Xdp);
        } else {
            switch_to!(SchedClassifier);
        }
        Ok(true)
    }
}
