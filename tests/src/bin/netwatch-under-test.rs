//! The `netwatch` command under another name, so that this crate's
//! integration tests can run it as a process (`CARGO_BIN_EXE_*` only names
//! binaries of the crate under test).

fn main() -> std::process::ExitCode {
    netwatch::cli::command::main()
}
