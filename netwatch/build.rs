//! Builds the kernel programs (netwatch-ebpf) for the BPF target with the
//! nightly toolchain and bpf-linker, so a plain `cargo build` builds
//! everything. `cargo xtask setup` installs what this needs.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // netwatch-ebpf is not a build-dependency (it only compiles for the BPF
    // target, with nightly features), so tell cargo which sources the
    // object depends on; aya-build adds the eBPF crate's own directory.
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../netwatch-common")
    );
    let ebpf = Package {
        name: "netwatch-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../netwatch-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], Toolchain::Nightly)
        .context("building the eBPF programs failed; run `cargo xtask setup` to install the nightly rust-src component and bpf-linker")
        .map_err(|e| anyhow!("{e:#}"))
}
