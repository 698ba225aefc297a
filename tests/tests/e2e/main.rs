//! End-to-end tests, one binary. Every test that touches storage runs on SQLite and on
//! PostgreSQL (`on_both_backends!`); PostgreSQL tests skip with a notice when the server is
//! unreachable, and fail under `CI=true`.

#![allow(unreachable_pub)] // test support items are shared between this binary's modules

mod admin;
mod analytics;
mod api;
mod billing_sync;
mod console;
mod contact;
mod crash;
mod engine;
mod fan_out;
mod hardening;
mod hours;
mod inbound;
mod integrations;
mod live;
mod messaging;
mod openapi;
mod quota;
mod schedules;
mod schemathesis;
mod store;
mod support;
mod templates;
mod test_runs;
mod voice;
