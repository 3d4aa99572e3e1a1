//! The benchmark's reference programs: an empty TC program and a
//! counter-only one, which `cargo xtask bench datapath` measures beside
//! netwatch's own to tell what netwatch costs beyond running any program.
//!
//! They are built into an object of their own (`netwatch-bench`, from
//! netwatch-ebpf's `bench.rs`), not into the one [`Datapath`] loads: the
//! agent, `check` and a standalone session never load them, nothing pins
//! them, and no binary but the benchmark's refers to this module (so the
//! linker leaves the object out of the `netwatch` binary).
//!
//! [`Datapath`]: super::Datapath

use aya::{Ebpf, include_bytes_aligned, maps::PerCpuArray};
use netwatch_common::names;

use super::{DatapathError, RunOutcome, load::load_classifier, test_run::run_program};

/// The object built from netwatch-ebpf's `netwatch-bench` binary by build.rs.
static BENCH_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netwatch-bench"));

/// Which reference program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    /// `bench_baseline`: returns "continue" and does nothing else.
    Empty,
    /// `bench_counter`: one per-CPU counter increment, then "continue".
    Counter,
}

impl Reference {
    pub const fn program_name(self) -> &'static str {
        match self {
            Reference::Empty => names::PROG_BENCH_BASELINE,
            Reference::Counter => names::PROG_BENCH_COUNTER,
        }
    }
}

/// The reference programs, loaded (private to this process: nothing pinned,
/// nothing attached).
pub struct BenchPrograms {
    ebpf: Ebpf,
}

impl BenchPrograms {
    /// Loads the benchmark's object and both of its programs.
    ///
    /// # Errors
    /// Without CAP_BPF, or when the verifier refuses a program.
    pub fn load() -> Result<BenchPrograms, DatapathError> {
        let mut ebpf = Ebpf::load(BENCH_OBJECT)?;
        for reference in [Reference::Empty, Reference::Counter] {
            load_classifier(&mut ebpf, reference.program_name())?;
        }
        Ok(BenchPrograms { ebpf })
    }

    /// Runs `frame` through `reference` `repeat` times with
    /// `BPF_PROG_TEST_RUN`.
    ///
    /// # Errors
    /// EINVAL for frames shorter than 14 bytes, or kernel refusals.
    pub fn test_run(
        &self,
        reference: Reference,
        frame: &[u8],
        repeat: u32,
    ) -> Result<RunOutcome, DatapathError> {
        run_program(&self.ebpf, reference.program_name(), false, frame, repeat)
    }

    /// Packets `bench_counter` has counted, summed over CPUs.
    ///
    /// # Errors
    /// The kernel refuses the lookup.
    pub fn counted(&self) -> Result<u64, DatapathError> {
        let name = names::MAP_BENCH_COUNTER;
        let map = self.ebpf.map(name).ok_or(DatapathError::MissingMap(name))?;
        let map: PerCpuArray<_, u64> = map.try_into().map_err(DatapathError::map(name))?;
        let values = map.get(&0, 0).map_err(DatapathError::map(name))?;
        Ok(values.iter().sum())
    }
}
