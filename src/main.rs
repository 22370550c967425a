//! The `hoard` binary: parses the command line and runs the chosen subcommand.

/// mimalloc instead of glibc malloc: the request paths allocate many small, short-lived
/// buffers, and malloc/free were ~7% of CPU under load (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hoard::cli::main()
}
