//! A small Stripe API client: what Switchboard itself sends to Stripe, starting with Billing
//! meter events for usage-based billing.
//!
//! `POST {base}/v1/billing/meter_events`, form-encoded (Stripe's v1 API): `event_name`,
//! `payload[stripe_customer_id]`, `payload[value]` (a whole number), `identifier` and
//! `timestamp` (Unix seconds), authenticated with `Authorization: Bearer <secret key>`. See
//! <https://docs.stripe.com/api/billing/meter-event/create>.
//!
//! Stripe enforces the uniqueness of `identifier` for at least 24 hours and answers a repeat with
//! a 400 `invalid_request_error` whose message reads "An event already exists with identifier
//! …" instead of a 200. For a caller whose identifiers name a fact (a ledger row), that answer
//! proves the event was recorded, so it is [`MeterEventOutcome::AlreadyRecorded`], not an error.
//! Every other answer goes through [`crate::classify_response`]; since the identifier makes a
//! resend harmless, a request that may have left (a timeout) is retryable.
//!
//! The base URL is configurable (`SWITCHBOARD_STRIPE_API_BASE`), so tests run against a local
//! fake.
//!
//! Webhooks the other way: [`verify_webhook`] checks a delivery's `Stripe-Signature` header
//! (`t=<unix seconds>,v1=<hex>[,v1=<hex>…]`) on the raw body with the endpoint's signing
//! secret, Stripe's documented recipe: HMAC-SHA256 of `t + "." + body`, compared in constant
//! time with every `v1` (Stripe sends two while a secret is being rolled), the timestamp within a
//! tolerance of now. See <https://docs.stripe.com/webhooks#verify-manually>.

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::header::AUTHORIZATION;
use sha2::Sha256;
use switchboard_runtime::action::{ActionError, Delivery};

use crate::{classify_response, classify_send_error};

/// Stripe's production API.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// How long one request may take, by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The most of an error body read for the failure message.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Settings of a [`StripeClient`].
#[derive(Clone)]
pub struct StripeConfig {
    /// The API base URL without a trailing slash (`SWITCHBOARD_STRIPE_API_BASE`, default
    /// [`DEFAULT_API_BASE`]).
    pub api_base: String,
    /// The secret (or restricted) API key, `sk_…` / `rk_…`.
    pub secret_key: String,
    /// How long one request may take.
    pub timeout: Duration,
}

impl StripeConfig {
    /// The production base URL and default timeout, with `secret_key`.
    pub fn new(secret_key: impl Into<String>) -> Self {
        Self { api_base: DEFAULT_API_BASE.to_owned(), secret_key: secret_key.into(), timeout: DEFAULT_TIMEOUT }
    }
}

impl fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeConfig").field("api_base", &self.api_base).field("secret_key", &"<redacted>").field("timeout", &self.timeout).finish()
    }
}

/// One Billing meter event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterEvent<'a> {
    /// The meter's `event_name`.
    pub event_name: &'a str,
    /// The Stripe customer (`cus_…`), sent as `payload[stripe_customer_id]`.
    pub customer_id: &'a str,
    /// The amount, sent as `payload[value]`.
    pub value: i64,
    /// Stripe dedupes on it (at most 100 characters).
    pub identifier: &'a str,
    /// When it happened, Unix seconds (Stripe accepts the past 35 days up to 5 minutes ahead).
    pub timestamp: i64,
}

/// How Stripe took a meter event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterEventOutcome {
    /// Recorded now.
    Created,
    /// Stripe already had an event with this identifier (a replay): nothing new was recorded.
    AlreadyRecorded,
}

/// A Stripe API client. Cheap to clone.
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    config: StripeConfig,
}

impl fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeClient").field("config", &self.config).finish_non_exhaustive()
    }
}

impl StripeClient {
    /// A client sending with `http` (from [`crate::client`]).
    pub fn new(http: reqwest::Client, mut config: StripeConfig) -> Self {
        config.api_base = config.api_base.trim_end_matches('/').to_owned();
        Self { http, config }
    }

    /// The settings in use (the key is redacted in `Debug`).
    pub fn config(&self) -> &StripeConfig {
        &self.config
    }

    /// Sends one meter event.
    ///
    /// Errors are the failure envelope: 408, 429 and 5xx (with `Retry-After`), connect failures
    /// and timeouts are retryable; other statuses are permanent, quoting Stripe's message.
    pub async fn create_meter_event(&self, event: &MeterEvent<'_>) -> Result<MeterEventOutcome, ActionError> {
        let value = event.value.to_string();
        let timestamp = event.timestamp.to_string();
        let form = [
            ("event_name", event.event_name),
            ("payload[stripe_customer_id]", event.customer_id),
            ("payload[value]", value.as_str()),
            ("identifier", event.identifier),
            ("timestamp", timestamp.as_str()),
        ];
        let response = self
            .http
            .post(format!("{}/v1/billing/meter_events", self.config.api_base))
            .header(AUTHORIZATION, format!("Bearer {}", self.config.secret_key))
            .timeout(self.config.timeout)
            .form(&form)
            .send()
            .await
            // The identifier makes a resend harmless: a request that may have left is retryable.
            .map_err(|e| classify_send_error(&e, Delivery::Idempotent))?;
        let status = response.status();
        if status.is_success() {
            return Ok(MeterEventOutcome::Created);
        }
        let headers = response.headers().clone();
        let body = read_error_body(response).await;
        if status == reqwest::StatusCode::BAD_REQUEST && is_duplicate_identifier(&body) {
            return Ok(MeterEventOutcome::AlreadyRecorded);
        }
        let message = stripe_message(&body).unwrap_or(body);
        Err(classify_response(status, &headers, &message).unwrap_or_else(|| ActionError::permanent("stripe_error", format!("HTTP {status}"))))
    }
}

/// Up to [`MAX_ERROR_BODY`] bytes of an error answer, lossily decoded.
async fn read_error_body(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    String::from_utf8_lossy(&body).into_owned()
}

/// Stripe's `error.message`, when the body is Stripe's error JSON.
fn stripe_message(body: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    json.get("error")?.get("message")?.as_str().map(str::to_owned)
}

/// Whether a 400's body is Stripe refusing a meter event whose identifier it already holds
/// ("An event already exists with identifier …").
fn is_duplicate_identifier(body: &str) -> bool {
    stripe_message(body).is_some_and(|m| {
        let m = m.to_ascii_lowercase();
        m.contains("already exists") && m.contains("identifier")
    })
}

/// How far a webhook's signed timestamp may be from now, by default (Stripe's libraries' own).
pub const WEBHOOK_TOLERANCE_SECS: i64 = 300;

/// Why a webhook's `Stripe-Signature` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// No `Stripe-Signature` header.
    #[error("no Stripe-Signature header")]
    Missing,
    /// The header has no `t=` or no `v1=` (or a non-numeric `t`).
    #[error("Stripe-Signature has no timestamp (t=) or no v1 signature")]
    Malformed,
    /// No `v1` matches the body with this secret.
    #[error("no v1 signature in Stripe-Signature matches this body")]
    Mismatch,
    /// The signed timestamp is further from now than the tolerance (a replay, or a clock off).
    #[error("the signed timestamp is {age_secs} s from now, beyond the {tolerance_secs} s tolerance")]
    Stale {
        /// How far from now, in seconds (positive: in the past).
        age_secs: i64,
        /// The tolerance it exceeds.
        tolerance_secs: i64,
    },
}

/// Checks a webhook delivery: `header` is its `Stripe-Signature`, `body` the raw bytes received,
/// `secret` the endpoint's signing secret (`whsec_…`, used as written), `now` Unix seconds.
/// Succeeds when any `v1` is the HMAC-SHA256 of `t + "." + body` and `t` is within
/// `tolerance_secs` of `now` (either way); answers the signed timestamp.
pub fn verify_webhook(secret: &str, header: Option<&str>, body: &[u8], now: i64, tolerance_secs: i64) -> Result<i64, WebhookError> {
    let header = header.ok_or(WebhookError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for (key, value) in header.split(',').filter_map(|part| part.trim().split_once('=')) {
        match key {
            "t" if timestamp.is_none() => timestamp = Some(value),
            // A v1 that is not hex cannot match; other schemes (v0, the test-mode one) are ignored.
            "v1" => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let (Some(t), false) = (timestamp, signatures.is_empty()) else { return Err(WebhookError::Malformed) };
    let signed_at: i64 = t.parse().map_err(|_| WebhookError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts a key of any length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    // `verify_slice` compares in constant time.
    if !signatures.iter().any(|signature| mac.clone().verify_slice(signature).is_ok()) {
        return Err(WebhookError::Mismatch);
    }
    let age_secs = now.saturating_sub(signed_at);
    if age_secs.abs() > tolerance_secs {
        return Err(WebhookError::Stale { age_secs, tolerance_secs });
    }
    Ok(signed_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// stripe-node's webhook test fixture: the secret `whsec_test_secret`, the timestamp
    /// `1533204620` and the event `{"id": "evt_test_webhook", "object": "event"}` pretty-printed
    /// with two spaces; the signature computed with Stripe's documented recipe (HMAC-SHA256 of
    /// `t.body`, here by Python's `hmac` module).
    const SECRET: &str = "whsec_test_secret";
    const T: i64 = 1_533_204_620;
    const BODY: &[u8] = b"{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\"\n}";
    const V1: &str = "b211a6d90b230f214d40f639a5547af1198a989ecb45d03e3db0ab7bdcfe15d6";

    #[test]
    fn the_fixed_vector_verifies() {
        let header = format!("t={T},v1={V1}");
        assert_eq!(verify_webhook(SECRET, Some(&header), BODY, T + 10, WEBHOOK_TOLERANCE_SECS), Ok(T));
    }

    #[test]
    fn forged_altered_stale_and_missing_signatures_are_refused() {
        let header = format!("t={T},v1={V1}");
        let forged = format!("t={T},v1={}", "0".repeat(64));
        assert_eq!(verify_webhook(SECRET, Some(&forged), BODY, T, 300), Err(WebhookError::Mismatch));
        assert_eq!(verify_webhook("whsec_other", Some(&header), BODY, T, 300), Err(WebhookError::Mismatch));
        assert_eq!(verify_webhook(SECRET, Some(&header), b"{}", T, 300), Err(WebhookError::Mismatch), "the signature covers the body");
        let moved = format!("t={},v1={V1}", T + 1);
        assert_eq!(verify_webhook(SECRET, Some(&moved), BODY, T, 300), Err(WebhookError::Mismatch), "and the timestamp");
        assert_eq!(verify_webhook(SECRET, Some(&header), BODY, T + 301, 300), Err(WebhookError::Stale { age_secs: 301, tolerance_secs: 300 }));
        assert_eq!(verify_webhook(SECRET, Some(&header), BODY, T - 301, 300), Err(WebhookError::Stale { age_secs: -301, tolerance_secs: 300 }));
        assert_eq!(verify_webhook(SECRET, Some(&header), BODY, T + 300, 300), Ok(T), "300 s is still within");
        assert_eq!(verify_webhook(SECRET, None, BODY, T, 300), Err(WebhookError::Missing));
        assert_eq!(verify_webhook(SECRET, Some(&format!("v1={V1}")), BODY, T, 300), Err(WebhookError::Malformed));
        assert_eq!(verify_webhook(SECRET, Some(&format!("t={T}")), BODY, T, 300), Err(WebhookError::Malformed));
        assert_eq!(verify_webhook(SECRET, Some(&format!("t={T},v0={V1}")), BODY, T, 300), Err(WebhookError::Malformed), "v0 is not checked");
    }

    #[test]
    fn any_v1_may_match_while_a_secret_is_rolled() {
        let old = "5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd";
        let header = format!("t={T},v1={old},v1={V1},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39");
        assert_eq!(verify_webhook(SECRET, Some(&header), BODY, T, 300), Ok(T));
        let header = format!("t={T},v1=not-hex,v1={V1}");
        assert_eq!(verify_webhook(SECRET, Some(&header), BODY, T, 300), Ok(T));
    }

    #[test]
    fn duplicate_identifier_is_recognised_from_stripes_error() {
        let body = r#"{"error":{"message":"An event already exists with identifier r1:0:workflow_run.","type":"invalid_request_error"}}"#;
        assert!(is_duplicate_identifier(body));
        let other = r#"{"error":{"message":"No such customer: 'cus_x'","param":"payload[stripe_customer_id]","type":"invalid_request_error"}}"#;
        assert!(!is_duplicate_identifier(other));
        assert!(!is_duplicate_identifier("already exists with identifier, but not JSON"));
    }

    #[test]
    fn debug_hides_the_secret_key() {
        let config = StripeConfig::new("sk_test_secret");
        assert!(!format!("{config:?}").contains("sk_test_secret"));
    }
}
