//! The `arcanum` binary: everything lives in the library; this only calls the CLI.

// mimalloc rather than the system allocator: the request path allocates many small,
// short-lived buffers, and glibc's malloc showed up as a tenth of the CPU profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    arcanum::cli::main()
}
