//! The `arcanum` binary: everything lives in the library; this only calls the CLI.

fn main() -> std::process::ExitCode {
    arcanum::cli::main()
}
