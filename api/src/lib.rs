//! # switchboard-api
//!
//! The HTTP edge and the `switchboard` binary's commands.
//!
//! ## Layout
//! - [`config`]: layered settings (defaults → `switchboard.toml` → `SWITCHBOARD_…` env).
//! - [`app`]: the shared state and the router merged from each resource's own router.
//! - [`routes`]: one module per resource (accounts, workflows, action kinds, runs, events, hooks, connections,
//!   outbox, templates, vendor callbacks, health).
//! - [`templates`]: the template catalogue compiled from `templates/*.yaml`, and enabling one.
//! - [`error`]: `ApiError`, the one error format (`{error: {code, message, details}}`).
//! - [`auth`]: account API keys (stored hashed) and the admin token.
//! - [`console`]: the browser console at `/console`, its files built into the binary.
//! - [`openapi`]: `GET /openapi.json`, the OpenAPI 3.1 document gathered from the routers.
//! - [`cli`]: `serve`, `worker`, `migrate`. (The benchmark is a crate of its own,
//!   `switchboard-bench` in `tests/bench`.)
//! - [`billing_sync`]: pushes new usage-ledger rows to Stripe Billing as meter events.

pub mod app;
pub mod auth;
pub mod billing_sync;
pub mod cli;
pub mod config;
pub mod console;
pub mod error;
pub mod openapi;
pub mod routes;
pub mod templates;

pub use app::{AppState, router};
