use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    programs::{SchedClassifier, Xdp},
};
use netwatch_common::names;

use super::DatapathError;

/// The object built from netwatch-ebpf by build.rs.
static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netwatch"));

/// Settings fixed at load time.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Capacity of the flow table (LRU: when full, the least recently used
    /// flows are evicted; verdicts never depend on it).
    pub flow_table_entries: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            flow_table_entries: names::FLOWS_MAX_ENTRIES,
        }
    }
}

/// netwatch's programs and maps, loaded into the kernel (verified, not yet
/// attached anywhere).
pub struct Datapath {
    pub(super) ebpf: Ebpf,
}

impl Datapath {
    /// Loads the object and all three programs.
    ///
    /// # Errors
    /// Fails without root (CAP_BPF + CAP_NET_ADMIN), on kernels older than
    /// 5.18 (the programs use `bpf_xdp_load_bytes` and the ring buffer), or
    /// when the verifier rejects a program (the error carries its log).
    pub fn load(options: &LoadOptions) -> Result<Datapath, DatapathError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::MAP_FLOWS, options.flow_table_entries)
            .load(OBJECT)?;
        for name in [
            names::PROG_FROM_CONTAINER,
            names::PROG_TO_CONTAINER,
            names::PROG_BENCH_BASELINE,
        ] {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DatapathError::MissingProgram(name))?
                .try_into()
                .map_err(DatapathError::program(name))?;
            program.load().map_err(DatapathError::program(name))?;
        }
        let uplink: &mut Xdp = ebpf
            .program_mut(names::PROG_UPLINK)
            .ok_or(DatapathError::MissingProgram(names::PROG_UPLINK))?
            .try_into()
            .map_err(DatapathError::program(names::PROG_UPLINK))?;
        uplink
            .load()
            .map_err(DatapathError::program(names::PROG_UPLINK))?;
        Ok(Datapath { ebpf })
    }
}
