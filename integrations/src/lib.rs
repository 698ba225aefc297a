//! # switchboard-integrations
//!
//! Connections to the outside world, shared by the action modules. It depends on the runtime
//! only for the failure envelope ([`switchboard_runtime::action::ActionError`]).
//!
//! ## Layout
//! - [`http`]: the outbound HTTP client (redirect limit, and a guard that refuses private,
//!   loopback and link-local addresses unless the operator allows them) and the one function
//!   that maps an HTTP answer or a send failure to retryable / permanent / outcome unknown.
//! - [`connections`]: the vault that seals credentials at rest (AES-256-GCM) and each
//!   provider's credentials type.
//! - [`stripe`]: a small Stripe API client (Billing meter events) with a configurable base URL.
//! - [`error`]: the crate's error type.

pub mod connections;
pub mod error;
pub mod http;
pub mod stripe;

pub use error::{Error, Result};
pub use http::{HttpConfig, classify_response, classify_send_error, client};
