use std::path::{Path, PathBuf};

use aya::{EbpfError, maps::MapError, programs::ProgramError};

/// What can go wrong between netwatch and its kernel programs.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object failed: {0} (netwatch needs root and Linux ≥ 6.6)")]
    Load(#[from] EbpfError),
    #[error("the eBPF object has no program `{0}` (the build is inconsistent; rebuild netwatch)")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map `{0}` (the build is inconsistent; rebuild netwatch)")]
    MissingMap(&'static str),
    #[error("program `{name}`: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("pin {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "this datapath was loaded without a bpffs pin directory, so its links would die with the process"
    )]
    NotPinned,
    #[error(
        "the kernel attached through netlink instead of a bpf link, which cannot be pinned; netwatch needs Linux ≥ 6.6 (TCX)"
    )]
    NotALink,
    #[error(
        "interface {ifname} is no longer ifindex {ifindex} (it was deleted or renamed); nothing attached"
    )]
    InterfaceGone { ifname: String, ifindex: u32 },
    #[error("reading map `{name}`: {source}")]
    MapRead {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("duplicating the fd of map `{name}`: {source}")]
    DuplicateFd {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    MacvlanUnsupported(String),
    #[error("the embedded eBPF object does not parse ({0}); rebuild netwatch")]
    Object(String),
    #[error(transparent)]
    Namespace(crate::host::interfaces::EndpointError),
    #[error(
        "the network namespace of pid {pid} is no longer the container's (cookie {netns}); nothing attached"
    )]
    NamespaceChanged { pid: u32, netns: u64 },
    #[error(
        "{} is no longer the overlay sandbox namespace netwatch looked at (cookie {netns}); \
         nothing attached",
        path.display()
    )]
    SandboxChanged { path: PathBuf, netns: u64 },
    #[error(
        "the kernel drop program cannot run here: {0} (it needs Linux ≥ 5.17 with BTF, /sys/kernel/btf/vmlinux)"
    )]
    KernelDrops(String),
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

impl DatapathError {
    pub(crate) fn map(name: &'static str) -> impl FnOnce(MapError) -> DatapathError {
        move |source| DatapathError::Map { name, source }
    }

    pub(crate) fn pin(path: &Path) -> impl FnOnce(std::io::Error) -> DatapathError + '_ {
        move |source| DatapathError::Pin {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn program(name: &'static str) -> impl FnOnce(ProgramError) -> DatapathError {
        move |source| DatapathError::Program { name, source }
    }
}
