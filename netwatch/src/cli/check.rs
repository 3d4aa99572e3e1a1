//! `netwatch check`: can this host run netwatch?

use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::OutputFormat;
use crate::{
    datapath::{Datapath, LoadOptions},
    host,
};

/// One line of the report.
#[derive(Serialize)]
struct Finding {
    check: &'static str,
    ok: bool,
    detail: String,
}

/// Runs every check; exits non-zero when one fails.
///
/// # Errors
/// Only when the report cannot be printed.
pub fn run(output: OutputFormat) -> Result<ExitCode> {
    let mut findings = Vec::new();
    let root = host::is_root();
    findings.push(Finding {
        check: "root",
        ok: root,
        detail: if root {
            "running as root".into()
        } else {
            "netwatch loads BPF programs: run it as root (sudo netwatch check)".into()
        },
    });
    let kernel = host::kernel_release();
    let tcx = kernel.as_ref().is_some_and(|k| k.at_least(6, 6));
    findings.push(Finding {
        check: "kernel",
        ok: tcx,
        detail: match &kernel {
            Some(k) if tcx => format!("Linux {k}: TCX attachments available"),
            Some(k) => format!("Linux {k}: netwatch needs Linux 6.6 or newer (TCX)"),
            None => "cannot read /proc/sys/kernel/osrelease".into(),
        },
    });
    let btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    findings.push(Finding {
        check: "btf",
        ok: btf,
        detail: if btf {
            "/sys/kernel/btf/vmlinux present".into()
        } else {
            "no kernel BTF at /sys/kernel/btf/vmlinux: use a kernel built with CONFIG_DEBUG_INFO_BTF".into()
        },
    });
    let bpffs = host::bpffs_mounted();
    findings.push(Finding {
        check: "bpffs",
        ok: bpffs,
        detail: if bpffs {
            "mounted at /sys/fs/bpf (pins survive the agent)".into()
        } else {
            "not mounted: run `mount -t bpf bpf /sys/fs/bpf`".into()
        },
    });
    if root {
        let (ok, detail) = match Datapath::load(&LoadOptions::default()) {
            Ok(_) => (
                true,
                "the verifier accepted from_container, to_container and uplink".to_string(),
            ),
            Err(e) => (false, e.to_string()),
        };
        findings.push(Finding {
            check: "programs",
            ok,
            detail,
        });
    }
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&findings)?),
        OutputFormat::Table => {
            println!("{:<10} {:<6} DETAIL", "CHECK", "RESULT");
            for f in &findings {
                let result = if f.ok { "ok" } else { "FAIL" };
                println!("{:<10} {:<6} {}", f.check, result, f.detail);
            }
        }
    }
    Ok(if findings.iter().all(|f| f.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
