//! The `switchboard` binary: everything lives in `switchboard_api::cli`.

/// mimalloc rather than the system allocator: a webhook allocates and frees many small objects
/// across the runtime's threads, where glibc's malloc spent about a quarter of the process's
/// CPU under load (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    switchboard_api::cli::main()
}
