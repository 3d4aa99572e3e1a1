use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    programs::{SchedClassifier, Xdp},
};
use netwatch_common::names;

use super::{DatapathError, pins, upgrade};

/// The object built from netwatch-ebpf by build.rs.
static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netwatch"));

/// How many flows the kernel can hold at once: each flow table (IPv4, and
/// IPv6 and the rest) holds `flow_table_entries`.
pub fn kernel_flow_capacity(flow_table_entries: u32) -> usize {
    flow_table_entries as usize * names::FLOW_TABLES.len()
}

/// Settings fixed at load time.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Capacity of each flow table, `FLOWS4` (IPv4) and `FLOWS` (the rest)
    /// (LRU: when full, the least recently used flows are evicted; verdicts
    /// never depend on it).
    pub flow_table_entries: u32,
    /// Where to pin maps and links (normally [`super::pins::root`]). With a
    /// pin root, maps already pinned there are reused — so a restarted agent
    /// shares state with the programs a previous one left attached — and
    /// missing ones are created and pinned. Without one (tests, `check`)
    /// everything is private to this process and nothing can be attached.
    pub pin_root: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            flow_table_entries: names::FLOWS_MAX_ENTRIES,
            pin_root: None,
        }
    }
}

/// Loads `ebpf`'s TC program `name` into the kernel (the verifier runs).
pub(super) fn load_classifier(ebpf: &mut Ebpf, name: &'static str) -> Result<(), DatapathError> {
    let program: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or(DatapathError::MissingProgram(name))?
        .try_into()
        .map_err(DatapathError::program(name))?;
    program.load().map_err(DatapathError::program(name))
}

/// netwatch's programs and maps, loaded into the kernel (verified, not yet
/// attached anywhere).
pub struct Datapath {
    pub(super) ebpf: Ebpf,
    pub(super) pin_root: Option<PathBuf>,
    /// Whether the macvlan programs loaded, or why the kernel refused them
    /// (they call `bpf_get_netns_cookie` from TC, which kernels before 6.14
    /// refuse; the rest of netwatch does not need them).
    pub(super) macvlan: Result<(), String>,
    /// Pinned maps this build could not adopt, with why: created anew and
    /// pinned in their place by [`Datapath::take_over_links`].
    pub(super) replaced_maps: Vec<(&'static str, String)>,
    /// The kernel drop program's link, while attached (see `kdrops`).
    pub(super) kernel_drops: Option<aya::programs::tp_btf::BtfTracePointLinkId>,
}

impl Datapath {
    /// How often the loaded program `name` ran and for how long in all,
    /// as the kernel counts it: only while run-time statistics are on
    /// (`aya::sys::enable_stats`, or `kernel.bpf_stats_enabled`, Linux
    /// 5.8), else 0. The counts are the program's, over every link and
    /// interface it is attached to.
    ///
    /// # Errors
    /// The program is not loaded, or the kernel refuses its info.
    pub fn program_runs(
        &self,
        name: &'static str,
    ) -> Result<(u64, std::time::Duration), DatapathError> {
        program_runs(&self.ebpf, name)
    }

    /// Loads the object and its programs: the veth pair, the uplink, the
    /// macvlan pair (where the kernel allows them); the kernel drop program
    /// loads when it is attached.
    ///
    /// # Errors
    /// Fails without root (CAP_BPF + CAP_NET_ADMIN), on kernels older than
    /// 5.8 (the programs use the ring buffer), or
    /// when the verifier rejects a program (the error carries its log).
    pub fn load(options: &LoadOptions) -> Result<Datapath, DatapathError> {
        let mut loader = EbpfLoader::new();
        for table in names::FLOW_TABLES {
            loader.map_max_entries(table, options.flow_table_entries);
        }
        // Pinned maps that fit this build are adopted; the others are
        // replaced once this agent holds the policy (see `upgrade`).
        let mut replaced_maps = Vec::new();
        let map_pins: Vec<(&'static str, PathBuf)> = match &options.pin_root {
            Some(root) => {
                let dir = pins::maps_dir(root);
                pins::create_private_dir(&dir).map_err(DatapathError::pin(&dir))?;
                let object = aya_obj::Object::parse(OBJECT)
                    .map_err(|e| DatapathError::Object(e.to_string()))?;
                let stamps = upgrade::stamps(root);
                let mut adopted = Vec::new();
                for name in names::ALL_MAPS {
                    let path = dir.join(name);
                    if path.exists() {
                        let wanted =
                            upgrade::wanted_shape(&object, name, options.flow_table_entries)
                                .ok_or(DatapathError::MissingMap(name))?;
                        if let Err(why) = upgrade::judge_pinned_map(&path, wanted, &stamps) {
                            replaced_maps.push((name, why));
                            continue;
                        }
                    }
                    adopted.push((name, path));
                }
                // Nothing uses a retired map: its pin only hides what is live.
                for name in names::RETIRED_MAPS {
                    let _ = std::fs::remove_file(dir.join(name));
                }
                if stamps.is_empty() && replaced_maps.is_empty() {
                    upgrade::write_stamp(root).map_err(DatapathError::pin(root))?;
                }
                adopted
            }
            None => Vec::new(),
        };
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT)?;
        for name in [names::PROG_FROM_CONTAINER, names::PROG_TO_CONTAINER] {
            load_classifier(&mut ebpf, name)?;
        }
        let uplink: &mut Xdp = ebpf
            .program_mut(names::PROG_UPLINK)
            .ok_or(DatapathError::MissingProgram(names::PROG_UPLINK))?
            .try_into()
            .map_err(DatapathError::program(names::PROG_UPLINK))?;
        uplink
            .load()
            .map_err(DatapathError::program(names::PROG_UPLINK))?;
        let macvlan = [names::PROG_MACVLAN_PARENT, names::PROG_MACVLAN_CHILD]
            .into_iter()
            .try_for_each(|name| load_classifier(&mut ebpf, name))
            .map_err(|e| {
                format!(
                    "the kernel refused netwatch's macvlan programs ({e}); they need Linux ≥ 6.14 \
                     (bpf_get_netns_cookie in TC programs)"
                )
            });
        let mut datapath = Datapath {
            ebpf,
            pin_root: options.pin_root.clone(),
            macvlan,
            replaced_maps,
            kernel_drops: None,
        };
        datapath.set_host_netns_cookie()?;
        Ok(datapath)
    }

    /// Whether the macvlan programs are loaded, or why not.
    ///
    /// # Errors
    /// Why the kernel refused them.
    pub fn macvlan_support(&self) -> Result<(), &str> {
        self.macvlan.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// Pins again every map whose pin is gone (removed behind the agent's
    /// back: the maps live on, held by this process and the attached
    /// programs, but a restarted agent would create new, empty ones beside
    /// the programs still using the old). Returns the maps pinned again.
    ///
    /// # Errors
    /// No pin root, or bpffs refuses the pin.
    pub fn repin_missing_maps(&self) -> Result<Vec<&'static str>, DatapathError> {
        let root = self.pin_root.as_ref().ok_or(DatapathError::NotPinned)?;
        let dir = pins::maps_dir(root);
        let mut repinned = Vec::new();
        for name in names::ALL_MAPS {
            let path = dir.join(name);
            if path.exists() {
                continue;
            }
            pins::create_private_dir(&dir).map_err(DatapathError::pin(&dir))?;
            let map = self.ebpf.map(name).ok_or(DatapathError::MissingMap(name))?;
            map.pin(&path).map_err(|e| DatapathError::Pin {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            repinned.push(name);
        }
        Ok(repinned)
    }

    /// How many instructions the verifier walked for each loaded program
    /// (`verified_insns` in `bpftool prog show`; Linux ≥ 5.16), the
    /// measure of what loading them costs.
    pub fn verified_instructions(&self) -> Vec<(String, Option<u32>)> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some((name.to_string(), info.verified_instruction_count()))
            })
            .collect()
    }

    /// Names of the maps in the loaded object.
    pub fn map_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.ebpf.maps().map(|(name, _)| name.to_string()).collect();
        names.sort();
        names
    }
}

/// [`Datapath::program_runs`] for any loaded object.
pub(super) fn program_runs(
    ebpf: &Ebpf,
    name: &'static str,
) -> Result<(u64, std::time::Duration), DatapathError> {
    let program = ebpf
        .program(name)
        .ok_or(DatapathError::MissingProgram(name))?;
    let info = program.info().map_err(DatapathError::program(name))?;
    Ok((info.run_count(), info.run_time()))
}

#[cfg(test)]
pub(super) mod tests {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget};

    use super::OBJECT;

    /// The compiler's byte-wise memory routines, which the BPF target
    /// builds as subprograms storing or copying one byte per loop
    /// iteration.
    const BYTE_LOOPS: [&str; 5] = ["memset", "memcpy", "memmove", "memcmp", "bcmp"];

    /// Fails naming every call in `object` (`which` says whose) to one of
    /// [`BYTE_LOOPS`], as "function (+offset) calls memset".
    pub(in crate::datapath) fn assert_no_byte_loop_calls(object: &[u8], which: &str) {
        let file = object::File::parse(object).expect("the built object parses as ELF");
        let mut calls = Vec::new();
        for section in file.sections() {
            // The function that holds an offset of this section.
            let function_at = |offset: u64| {
                file.symbols()
                    .filter(|s| {
                        s.section_index() == Some(section.index())
                            && s.kind() == object::SymbolKind::Text
                            && (s.address()..s.address() + s.size()).contains(&offset)
                    })
                    .find_map(|s| s.name().ok())
                    .unwrap_or("?")
            };
            for (offset, relocation) in section.relocations() {
                let RelocationTarget::Symbol(index) = relocation.target() else {
                    continue;
                };
                let Ok(symbol) = file.symbol_by_index(index) else {
                    continue;
                };
                let name = symbol.name().unwrap_or("");
                if BYTE_LOOPS.contains(&name) {
                    let function = function_at(offset);
                    calls.push(format!("{function} (+{offset:#x}) calls {name}"));
                }
            }
        }
        assert!(
            calls.is_empty(),
            "{which} calls byte-loop subprograms:\n{}",
            calls.join("\n")
        );
    }

    /// Learned the hard way: on the BPF target, zeroing or copying a byte
    /// array of a few bytes (`_pad: [0; 6]`, `a = b` for `[u8; 6]`, a
    /// struct built with `..Default::default()`) becomes a call to a
    /// `memset`/`memmove` subprogram with a byte loop, which costs every
    /// packet that takes the path a call, a stack frame and a loop
    /// (`kernel_drops` made four such calls per dropped IP packet). No
    /// program may call one: padding is zeroed with whole-word fields and
    /// byte arrays are copied with word or volatile stores (netwatch-ebpf's
    /// `bytes`).
    #[test]
    fn shipped_programs_call_no_byte_loop_subprograms() {
        assert_no_byte_loop_calls(OBJECT, "the kernel object");
    }
}
