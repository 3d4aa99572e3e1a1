//! The kernel side seen from user space: loading the programs, writing the
//! policy maps, reading counters, flows and records, and running packets
//! through the loaded programs with `BPF_PROG_TEST_RUN`.

mod attach;
pub mod bench;
mod dns;
mod error;
mod kdrops;
pub mod kernel_btf;
mod load;
mod maps;
pub mod pinned;
pub mod pins;
pub mod provisional;
pub mod records;
mod test_run;
mod upgrade;

pub use attach::{
    Attachment, detach_all, detach_interface, detach_macvlan_child, detach_sandbox_veth,
    detach_uplink,
};
pub use dns::{CapturedDns, DnsKernelCounts};
pub use error::DatapathError;
pub use kdrops::{DropReasonNames, read_kernel_layout};
pub use load::{Datapath, LoadOptions, kernel_flow_capacity};
pub use maps::{FlowTableHandle, ReasonCounts};
pub use records::{Drained, RecordRings};
pub use test_run::{Hook, RunOutcome, TEST_RUN_IFINDEX};
pub use upgrade::{LAYOUT, TakeOver, stamps};
