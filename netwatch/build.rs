//! Builds the kernel programs (netwatch-ebpf) for the BPF target with the
//! nightly toolchain and bpf-linker, so a plain `cargo build` builds
//! everything. `cargo xtask setup` installs what this needs.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let ebpf = Package {
        name: "netwatch-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../netwatch-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], Toolchain::Nightly)
        .context("building the eBPF programs failed; run `cargo xtask setup` to install the nightly rust-src component and bpf-linker")
        .map_err(|e| anyhow!("{e:#}"))
}
