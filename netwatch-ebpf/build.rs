//! bpf-linker is a cargo linker for the BPF target; rebuild when it changes.
use which::which;

fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
