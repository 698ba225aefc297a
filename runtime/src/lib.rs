//! # switchboard-runtime
//!
//! The durable heart of Switchboard. It depends on no other workspace crate and on no vendor SDK.
//!
//! ## Layout
//! - [`definition`]: the workflow format (JSON or YAML), parsed and validated into a
//!   [`definition::Workflow`] with every problem reported at its path.
//! - [`expr`]: the sandboxed Rhai engine: conditions, `set` values and `{{ … }}` interpolation.
//! - [`action`]: the plug-in trait every action module implements, its failure envelope and the
//!   registry that refuses duplicate kinds.
//! - [`retry`]: retry policy as data, turned into delays (exponential, full jitter, `Retry-After`).
//! - [`store`]: the `Store` driver seam (runs, steps, due times, ledger, accounts) with a SQLite
//!   and a PostgreSQL driver. The store is the only holder of a delay, a retry or a wait.
//! - [`engine`]: starts runs from events and executes one claimed step at a time; [`engine::worker`]
//!   runs it on apalis workers fed from the store.
//! - [`events`]: live run events, published after each commit (in process, or shared through
//!   Redis by `switchboard-integrations`); lossy by design, the store stays the truth.
//! - [`ratelimit`]: vendor rate limits: a limited step reserves a slot and waits for it.
//! - [`schedule`]: cron schedules (POSIX crontab, IANA timezones, DST, catch-up).
//! - [`hours`]: business hours (weekly ranges, holidays, overrides in an IANA timezone): open
//!   at an instant, and when that next changes.
//! - [`contact`]: contact rules: quiet hours in the lead's timezone, local-time delays, opt-out
//!   keywords.
//! - [`status`]: the states of a run and of a step ([`status::RunStatus`], [`status::StepStatus`]).
//! - [`clock`]: time, injected so tests can move it.
//! - [`metering`]: units and prices of the usage ledger.

pub mod action;
pub mod clock;
pub mod contact;
pub mod definition;
pub mod engine;
pub mod error;
pub mod events;
pub mod expr;
pub mod hours;
pub mod metering;
pub mod ratelimit;
pub mod retry;
pub mod schedule;
pub mod status;
pub mod store;

pub use error::{Error, Result};
