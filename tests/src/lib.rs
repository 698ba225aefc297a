//! End-to-end tests live under `tests/e2e`; `src/bin/server.rs` is the `switchboard` binary's
//! code under a name the crash tests can find.
