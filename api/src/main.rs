//! The `switchboard` binary: everything lives in `switchboard_api::cli`.

fn main() -> anyhow::Result<()> {
    switchboard_api::cli::main()
}
