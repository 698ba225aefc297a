//! The `switchboard` binary, built inside the test package so crash tests can start and SIGKILL it.

fn main() -> anyhow::Result<()> {
    switchboard_api::cli::main()
}
