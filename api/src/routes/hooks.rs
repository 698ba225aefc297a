//! Per-workflow webhook URLs: `POST /hooks/{token}`. The token is the secret; a trigger with a
//! `secret` also requires `X-Signature-256: sha256=<hex HMAC-SHA256 of the body>`. 202 only
//! after the event and its run are committed.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::Sha256;
use switchboard_integrations::connections::Vault;
use switchboard_runtime::definition::{Problem, Trigger, WebhookSecret};
use switchboard_runtime::engine;
use switchboard_runtime::store::Store;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Body, media_type};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self as doc, built_once};

/// An accepted webhook or manual run.
#[derive(Debug, Serialize, ToSchema)]
pub struct HookAccepted {
    /// The recorded event.
    pub event_id: String,
    /// The run it started.
    pub run_id: String,
}

impl From<engine::HookAccepted> for HookAccepted {
    fn from(a: engine::HookAccepted) -> Self {
        HookAccepted { event_id: a.event_id, run_id: a.run_id }
    }
}

/// `/hooks/{token}`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(accept))
}

/// `/hooks/{token}`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

/// The additional data a webhook secret is sealed with: a sealed secret opens only for the
/// workflow it was sealed for.
fn secret_aad(workflow_id: &str) -> String {
    format!("webhook:{workflow_id}")
}

/// Seals a definition's webhook secret in place before it is stored: `trigger.webhook.secret`
/// as text becomes `{sealed: "<hex>"}`. A secret already sealed (a document read back and sent
/// again) must open for this workflow: one copied from another workflow is refused, since its
/// text cannot be known here.
pub(crate) fn seal_secret(vault: &Vault, workflow_id: &str, doc: &mut Value) -> Result<(), Problem> {
    let Some(secret) = doc.pointer_mut("/trigger/webhook/secret") else { return Ok(()) };
    match secret {
        Value::String(text) => {
            let sealed = vault.seal(&secret_aad(workflow_id), &Value::String(std::mem::take(text)));
            *secret = json!({ "sealed": hex::encode(sealed) });
            Ok(())
        }
        other => match WebhookSecret::from_stored(other) {
            Some(WebhookSecret::Sealed(h)) if open_sealed(vault, workflow_id, &h).is_some() => Ok(()),
            _ => Err(Problem {
                path: "trigger.webhook.secret".into(),
                message: "this sealed secret belongs to another workflow: write the secret itself".into(),
            }),
        },
    }
}

/// Seals the webhook secrets of documents stored before secrets were sealed (run at start-up);
/// returns how many versions it rewrote.
pub async fn seal_stored_secrets(store: &Store, vault: &Vault) -> switchboard_runtime::Result<usize> {
    let versions = store.versions_with_plain_webhook_secrets().await?;
    let mut sealed = 0;
    for (workflow_id, version, definition) in versions {
        let mut doc: Value = serde_json::from_str(&definition)?;
        if doc.pointer("/trigger/webhook/secret").is_some_and(Value::is_string) && seal_secret(vault, &workflow_id, &mut doc).is_ok() {
            store.rewrite_version(&workflow_id, version, &doc.to_string()).await?;
            sealed += 1;
        }
    }
    Ok(sealed)
}

fn open_sealed(vault: &Vault, workflow_id: &str, sealed_hex: &str) -> Option<String> {
    let bytes = hex::decode(sealed_hex).ok()?;
    match vault.open_value(&secret_aad(workflow_id), &bytes) {
        Ok(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// The text of a trigger's secret, or `None` when a sealed one does not open (the secret key
/// changed): then no signature can match.
fn secret_text(vault: &Vault, workflow_id: &str, secret: &WebhookSecret) -> Option<String> {
    match secret {
        WebhookSecret::Plain(s) => Some(s.clone()),
        WebhookSecret::Sealed(h) => {
            let text = open_sealed(vault, workflow_id, h);
            if text.is_none() {
                tracing::error!(workflow_id, "a webhook secret does not open with this secret key (was SWITCHBOARD_SECRET_KEY changed?)");
            }
            text
        }
    }
}

/// Checks `X-Signature-256` against the body with the trigger's secret (constant time).
pub(crate) fn signature_ok(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(given) = headers.get("x-signature-256").and_then(|v| v.to_str().ok()) else { return false };
    let Some(hex_sig) = given.trim().strip_prefix("sha256=") else { return false };
    let Ok(sig) = hex::decode(hex_sig) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn payload(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    match media_type(headers).as_deref() {
        Some("application/json") => serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}"))),
        Some("application/x-www-form-urlencoded") => {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|e| ApiError::bad_request(format!("malformed form body: {e}")))?;
            let map: Map<String, Value> = pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            Ok(Value::Object(map))
        }
        None if body.is_empty() => Ok(json!({})),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send application/json or application/x-www-form-urlencoded, not {}", other.unwrap_or("a body without Content-Type")),
        )),
    }
}

/// A workflow's webhook
///
/// No bearer: the token in the URL is the secret. The body becomes the event (`event` in
/// expressions): a JSON value, or a form as an object of strings; an empty body is `{}`.
/// 202 only after the event and its run are committed.
#[utoipa::path(
    post,
    path = "/hooks/{token}",
    tag = "hooks",
    operation_id = "post_webhook",
    params(
        ("token" = String, Path, description = "The webhook token, from the workflow's `webhook_url`"),
        ("X-Signature-256" = Option<String>, Header, description = "`sha256=<hex HMAC-SHA256 of the body>` with the trigger's `secret`; required when the trigger has one"),
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat within 24 h answers the first answer and starts nothing"),
    ),
    request_body(
        description = "The event: any JSON, or a form",
        content((Value = "application/json"), (Object = "application/x-www-form-urlencoded")),
    ),
    responses(
        (status = 202, description = "Accepted: the event and the run it started (or the first answer to this `Idempotency-Key`)", body = HookAccepted),
        (status = 400, description = "`bad_request`: malformed JSON or form", body = doc::ErrorBody),
        (status = 401, description = "`invalid_signature`: missing or wrong `X-Signature-256`", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no webhook with this token", body = doc::ErrorBody),
        (status = 409, description = "`workflow_disabled`", body = doc::ErrorBody),
        (status = 413, description = "`payload_too_large`: over 1 MiB", body = doc::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: neither JSON nor a form", body = doc::ErrorBody),
        (status = 429, description = "`rate_limited`: too many requests to this webhook", body = doc::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
)]
async fn accept(State(state): State<AppState>, Path(token): Path<String>, headers: HeaderMap, Body(body): Body) -> ApiResult<(StatusCode, Json<HookAccepted>)> {
    let answer = accept_inner(&state, &token, &headers, &body).await;
    let outcome = match &answer {
        Ok(_) => "accepted",
        Err(e) => e.code,
    };
    metrics::counter!("switchboard_webhooks_total", "outcome" => outcome).increment(1);
    answer
}

/// The longest token looked up. Minted tokens are `wh_` and 64 hex digits; anything longer, or
/// with other characters, is answered 404 before it reaches a cache, a limiter or the database.
const MAX_TOKEN_LEN: usize = 128;

fn plausible_token(token: &str) -> bool {
    token.len() <= MAX_TOKEN_LEN && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

async fn accept_inner(state: &AppState, token: &str, headers: &HeaderMap, body: &[u8]) -> ApiResult<(StatusCode, Json<HookAccepted>)> {
    if !plausible_token(token) {
        return Err(ApiError::not_found("webhook"));
    }
    let engine = &state.engine;
    let row = state.hooks.get(engine.store(), token).await?.filter(|w| w.trigger_kind == "webhook").ok_or_else(|| ApiError::not_found("webhook"))?;
    // Limited per workflow, after the lookup: unknown tokens never become limiter keys, so
    // the limiter holds at most one small key per live webhook.
    if let Some(limiter) = &state.hook_limiter {
        if let Err(not_until) = limiter.check_key(&row.id) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests to this webhook; retry later");
            error.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
            return Err(error);
        }
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
    }
    if row.enabled != 1 {
        return Err(ApiError::new(StatusCode::CONFLICT, "workflow_disabled", "this workflow is disabled"));
    }
    let workflow = engine.workflow(&row.id, row.version).await?;
    if let Trigger::Webhook { secret: Some(secret) } = &workflow.trigger
        && !secret_text(&state.vault, &row.id, secret).is_some_and(|s| signature_ok(&s, headers, body))
    {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", "missing or wrong X-Signature-256 (sha256=<hex HMAC-SHA256 of the body>)"));
    }
    let data = payload(headers, body)?;
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty());
    let accepted = engine.accept_webhook(&row, data, key).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted.into())))
}
