//! The benchmarks' reference programs: an empty TC program, a counter-only
//! one, one that parses headers and counts, one that also counts each
//! packet into its flow, and a counter on `kfree_skb`. The `datapath` and
//! `throughput` benchmarks measure them beside netwatch's own, to tell what
//! netwatch costs beyond running any program, reading the headers, and
//! keeping per-flow state.
//!
//! They are built into an object of their own (`netwatch-bench`, from
//! netwatch-ebpf's `bench.rs`), not into the one [`Datapath`] loads: the
//! agent, `check` and a standalone session never load them, nothing pins
//! them, and no binary but the benchmark's refers to this module (so the
//! linker leaves the object out of the `netwatch` binary).
//!
//! [`Datapath`]: super::Datapath

use aya::{
    Btf, Ebpf, include_bytes_aligned,
    maps::PerCpuArray,
    programs::{BtfTracePoint, SchedClassifier, TcAttachType},
};
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
    /// `bench_headers`: netwatch's header parse and the counter, then
    /// "continue".
    Headers,
    /// `bench_flow`: the header parse, one LRU flow-table lookup (an insert
    /// for a new flow) and two atomic adds, then "continue".
    Flow,
}

impl Reference {
    pub const fn program_name(self) -> &'static str {
        match self {
            Reference::Empty => names::PROG_BENCH_BASELINE,
            Reference::Counter => names::PROG_BENCH_COUNTER,
            Reference::Headers => names::PROG_BENCH_HEADERS,
            Reference::Flow => names::PROG_BENCH_FLOW,
        }
    }
}

/// The reference programs, loaded (private to this process: nothing
/// pinned; what [`BenchPrograms::attach_both_ways`] attaches goes when this
/// is dropped).
pub struct BenchPrograms {
    ebpf: Ebpf,
}

impl BenchPrograms {
    /// Loads the benchmark's object and its programs.
    ///
    /// # Errors
    /// Without CAP_BPF, or when the verifier refuses a program.
    pub fn load() -> Result<BenchPrograms, DatapathError> {
        let mut ebpf = Ebpf::load(BENCH_OBJECT)?;
        for reference in [
            Reference::Empty,
            Reference::Counter,
            Reference::Headers,
            Reference::Flow,
        ] {
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

    /// Attaches `reference` to both TCX hooks of `ifname` (in the calling
    /// thread's namespace), as netwatch's veth programs sit: the live-cost
    /// benchmark's floor. The links go when this is dropped.
    ///
    /// Minimum kernel: 6.6 (TCX).
    ///
    /// # Errors
    /// The interface does not exist, or the kernel refuses.
    pub fn attach_both_ways(
        &mut self,
        reference: Reference,
        ifname: &str,
    ) -> Result<(), DatapathError> {
        let name = reference.program_name();
        let program: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram(name))?
            .try_into()
            .map_err(DatapathError::program(name))?;
        for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
            program
                .attach(ifname, hook)
                .map_err(DatapathError::program(name))?;
        }
        Ok(())
    }

    /// How often `reference` ran and for how long, by the kernel's
    /// run-time statistics (zero while `kernel.bpf_stats_enabled` is off).
    ///
    /// # Errors
    /// The kernel refuses the query.
    pub fn program_runs(
        &self,
        reference: Reference,
    ) -> Result<(u64, std::time::Duration), DatapathError> {
        super::load::program_runs(&self.ebpf, reference.program_name())
    }

    /// Loads and attaches `bench_kfree`, the counter on the kernel drop
    /// program's `kfree_skb` tracepoint: that hook's floor. It stays
    /// attached until this is dropped.
    ///
    /// Minimum kernel: 5.5 (BTF tracepoints).
    ///
    /// # Errors
    /// No kernel BTF, or the kernel refuses the program.
    pub fn attach_kfree_counter(&mut self) -> Result<(), DatapathError> {
        let name = names::PROG_BENCH_KFREE;
        let btf = Btf::from_sys_fs().map_err(|e| DatapathError::KernelDrops(e.to_string()))?;
        let program: &mut BtfTracePoint = self
            .ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram(name))?
            .try_into()
            .map_err(DatapathError::program(name))?;
        program
            .load(names::TRACEPOINT_KFREE_SKB, &btf)
            .map_err(DatapathError::program(name))?;
        program.attach().map_err(DatapathError::program(name))?;
        Ok(())
    }

    /// [`BenchPrograms::program_runs`] for `bench_kfree`.
    ///
    /// # Errors
    /// The program is not loaded, or the kernel refuses the query.
    pub fn kfree_counter_runs(&self) -> Result<(u64, std::time::Duration), DatapathError> {
        super::load::program_runs(&self.ebpf, names::PROG_BENCH_KFREE)
    }

    /// Packets (or frees) the reference programs have counted, summed over
    /// CPUs.
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

#[cfg(test)]
mod tests {
    use super::BENCH_OBJECT;
    use crate::datapath::load::tests::assert_no_byte_loop_calls;

    /// A reference program slowed by a byte-loop call would make a floor
    /// that netwatch's programs (which make none) beat unfairly.
    #[test]
    fn reference_programs_call_no_byte_loop_subprograms() {
        assert_no_byte_loop_calls(BENCH_OBJECT, "the benchmark's object");
    }
}
