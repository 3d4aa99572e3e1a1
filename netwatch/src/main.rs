//! The `netwatch` binary; the command line lives in the library
//! (`netwatch::cli::command`).

fn main() -> std::process::ExitCode {
    netwatch::cli::command::main()
}
