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
//! - [`providers`]: the provider registry: each vendor's name, credentials type and check, and
//!   API base URL; adding a provider is its type and one line there.
//! - [`oauth`]: OAuth2 connections (Google, Slack): authorization code + PKCE, the code
//!   exchange, and tokens refreshed before expiry, one refresh per connection at a time.
//! - [`live_events`]: live run events shared by every process through Redis pub/sub, with an
//!   in-process fallback.
//! - [`rate_limit`]: vendor rate limits shared through Redis, with an in-process fallback.
//! - [`stripe`]: a small Stripe API client (Billing meter events) with a configurable base URL,
//!   and the check of `Stripe-Signature` on webhook deliveries (HMAC-SHA256).
//! - [`twilio`]: the check of Twilio's `X-Twilio-Signature` on callbacks (HMAC-SHA1).
//! - [`error`]: the crate's error type.

pub mod connections;
pub mod error;
pub mod http;
pub mod live_events;
pub mod oauth;
pub mod providers;
pub mod rate_limit;
pub mod stripe;
pub mod twilio;

pub use error::{Error, Result};
pub use http::{HttpConfig, classify_response, classify_send_error, client, client_without_redirects};
