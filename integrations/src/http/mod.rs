//! The shared outbound HTTP client for vendor calls and `http.request`, and the one mapping of
//! HTTP answers and send failures to the failure envelope.
//!
//! - [`client`]: builds the `reqwest::Client` with its redirect limit and address guard.
//! - [`read_limited`]: at most so many bytes of an answer.
//! - [`is_allowed`]: which addresses the guard lets through.
//! - [`classify_response`] and [`classify_send_error`]: status, `Retry-After` and transport
//!   failures to retryable / permanent / outcome unknown.

mod address;
mod body;
mod classify;
mod client;

pub use address::is_allowed;
pub use body::read_limited;
pub use classify::{classify_response, classify_send_error};
pub use client::{HttpConfig, MAX_REDIRECTS, client, client_without_redirects};
