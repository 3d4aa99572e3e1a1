//! netwatch's kernel programs: shared parsing, maps, policy lookups and flow
//! accounting. The entry points (one file per attach point) live in the
//! binary crate (`main.rs`) so that the object holds exactly those programs.
//!
//! Minimum kernel: 6.6 for TCX attachment (older kernels can attach the same
//! programs through netlink clsact), 5.8 for the ring buffer, 5.3 for the
//! bounded loops the parser uses. The uplink reads its frames straight
//! from packet memory and no longer needs `bpf_xdp_load_bytes` (5.18); the
//! veth programs read skbs straight from their linear data too (direct
//! packet access in TC programs: 4.7).
#![no_std]
// Atomic adds on flow counters (see flows.rs); the crate builds with nightly.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd is the only way to an atomic add on the BPF target"
)]

/// The object's `license` section, which the kernel reads to decide whether
/// a program may call GPL-only helpers. It states the eBPF crate's own
/// licence (`MIT OR GPL-2.0` in its Cargo.toml, as aya-template does):
/// `kernel_drops` calls `bpf_probe_read_kernel`, which the kernel refuses
/// to programs that are not GPL-compatible, and aya, given an object with
/// no such section, loads it as "GPL" without saying so. Every object
/// (`main.rs`, `bench.rs`) states it once.
#[macro_export]
macro_rules! license_section {
    () => {
        #[unsafe(link_section = "license")]
        #[unsafe(no_mangle)]
        static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
    };
}

pub mod bytes;
pub mod clock;
pub mod counters;
pub mod dns;
pub mod flows;
pub mod kdrop;
pub mod macvlan;
pub mod maps;
pub mod packet;
pub mod parse;
pub mod tables;
pub mod veth;
