//! Policy: from Docker's view of an endpoint to the datapath's map entries,
//! and the reference model that says what the datapath should decide.
//!
//! - [`cidr`], [`rule`]: prefixes and allow-list rules as users write them.
//! - [`labels`]: policy asked for by Docker labels.
//! - [`spec`]: one endpoint's policy before compilation.
//! - [`compile`](mod@compile): the exact entries of the ENDPOINTS, NET, ALLOW and HOST maps.
//! - [`model`]: the reference verdict for a frame.
//!
//! The model calls the same [`decide`](netwatch_common::verdict::decide) as
//! the kernel, so the policy is written once. Everything around it is done
//! again independently: the model parses frames with its own parser, built
//! on etherparse, instead of sharing the kernel's bounds-checked loads, and
//! answers prefix lookups by scanning the rules as written instead of reading
//! the compiled tables. A test that runs frames through both the kernel
//! programs and the model therefore checks what kernel code most often gets
//! wrong — bounded parsing — together with the compiler and the map
//! encoding, rather than comparing a piece of code with itself.

pub mod cidr;
pub mod compile;
pub mod explain;
pub mod labels;
pub mod model;
pub mod rule;
pub mod spec;

pub use self::{
    cidr::{Cidr, CidrError},
    compile::{CompileError, CompiledTables, compile},
    explain::verdict_rule,
    model::{ReferenceModel, parse},
    rule::{AllowRule, RuleError},
    spec::{InterfacePolicy, PublishedRule},
};
