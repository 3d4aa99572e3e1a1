//! `cargo xtask bench <what>`: run one of the benchmark binaries (release).

use anyhow::{Result, bail};

use crate::cmd::Cmd;
use crate::host;
use crate::setup::{self, Scope};

/// A benchmark: its name, the package and binary that run it, what it measures.
pub struct Bench {
    pub name: &'static str,
    pub package: &'static str,
    pub bin: &'static str,
    pub what: &'static str,
}

pub const BENCHES: &[Bench] = &[
    Bench {
        name: "datapath",
        package: "netwatch-tests",
        bin: "bench-datapath",
        what: "ns/packet of the kernel programs through BPF_PROG_TEST_RUN",
    },
    Bench {
        name: "pipeline",
        package: "netwatch-tests",
        bin: "bench-pipeline",
        what: "flow records/s the agent's ring buffer pipeline takes in without loss, and loss accounting above",
    },
    Bench {
        name: "scale",
        package: "netwatch-tests",
        bin: "bench-scale",
        what: "attach time and memory for 10/100/500 endpoints, reconcile after a dockerd restart, agent RSS/CPU at 100k flows, start-to-enforced window",
    },
];

/// # Errors
///
/// For an unknown benchmark, without root, or when the benchmark fails.
pub fn run(name: &str, args: &[String]) -> Result<()> {
    let Some(bench) = BENCHES.iter().find(|b| b.name == name) else {
        let known: Vec<&str> = BENCHES.iter().map(|b| b.name).collect();
        bail!("unknown benchmark `{name}`; known: {}", known.join(", "));
    };
    host::require_root(&format!("cargo xtask bench {name}"), "load BPF programs")?;
    setup::run(Scope::Full, true)?;
    eprintln!("bench {}: {}", bench.name, bench.what);
    Cmd::new("cargo")
        .dir(host::workspace_root())
        .args([
            "run",
            "--release",
            "-p",
            bench.package,
            "--bin",
            bench.bin,
            "--",
        ])
        .args(args)
        .run()
}
