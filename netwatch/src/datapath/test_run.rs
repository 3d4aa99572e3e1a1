//! Running a frame through a loaded program with `BPF_PROG_TEST_RUN`.
//!
//! Kernel facts this relies on (net/bpf/test_run.c): an skb test run uses the
//! loopback device unless the context names another ifindex, so the
//! programs see `skb->ifindex == 1`; frames shorter than an Ethernet header
//! (14 bytes) are refused with EINVAL for both skb and XDP programs, before
//! the program runs.

use std::time::Duration;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use netwatch_common::names;

use super::{Datapath, DatapathError};

/// A program to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    FromContainer,
    ToContainer,
    Uplink,
    /// A macvlan parent's egress: what the network's children send out.
    MacvlanParent,
    /// A macvlan child's ingress, in its container's namespace.
    MacvlanChild,
}

impl Hook {
    pub const fn program_name(self) -> &'static str {
        match self {
            Hook::FromContainer => names::PROG_FROM_CONTAINER,
            Hook::ToContainer => names::PROG_TO_CONTAINER,
            Hook::Uplink => names::PROG_UPLINK,
            Hook::MacvlanParent => names::PROG_MACVLAN_PARENT,
            Hook::MacvlanChild => names::PROG_MACVLAN_CHILD,
        }
    }
}

/// What a test run returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    /// The program's return value: a TC action (-1 continue, 2 drop) or an
    /// XDP action (1 drop, 2 pass).
    pub action: i32,
    /// Average time per run as the kernel measured it.
    pub duration: Duration,
}

/// The ifindex the kernel gives an skb during a test run (loopback).
pub const TEST_RUN_IFINDEX: u32 = 1;

impl Datapath {
    /// Runs `frame` through `hook`'s program `repeat` times.
    ///
    /// # Errors
    /// EINVAL for frames shorter than 14 bytes, or kernel refusals.
    pub fn test_run(
        &self,
        hook: Hook,
        frame: &[u8],
        repeat: u32,
    ) -> Result<RunOutcome, DatapathError> {
        run_program(
            &self.ebpf,
            hook.program_name(),
            hook == Hook::Uplink,
            frame,
            repeat,
        )
    }
}

/// Runs `frame` through `ebpf`'s loaded program `name` (XDP when `xdp`,
/// else TC) `repeat` times.
pub(super) fn run_program(
    ebpf: &aya::Ebpf,
    name: &'static str,
    xdp: bool,
    frame: &[u8],
    repeat: u32,
) -> Result<RunOutcome, DatapathError> {
    let program = ebpf
        .program(name)
        .ok_or(DatapathError::MissingProgram(name))?;
    let options = TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::default()
    };
    let result = if xdp {
        let program: &Xdp = program.try_into().map_err(DatapathError::program(name))?;
        program.test_run(options)
    } else {
        let program: &SchedClassifier = program.try_into().map_err(DatapathError::program(name))?;
        program.test_run(options)
    }
    .map_err(DatapathError::program(name))?;
    Ok(RunOutcome {
        action: result.return_value as i32,
        duration: result.duration,
    })
}
