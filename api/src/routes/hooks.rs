//! Per-workflow webhook URLs: `POST /hooks/{token}`. The token is the secret; a trigger with a
//! `secret` also requires `X-Signature-256: sha256=<hex HMAC-SHA256 of the body>`. 202 only
//! after the event and its run are committed.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use switchboard_runtime::definition::Trigger;

use super::{Body, media_type};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// `/hooks/{token}`.
pub fn router() -> Router<AppState> {
    Router::new().route("/hooks/{token}", post(accept))
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
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(body).map_err(|e| ApiError::bad_request(format!("malformed form body: {e}")))?;
            let map: Map<String, Value> = pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            Ok(Value::Object(map))
        }
        None if body.is_empty() => Ok(json!({})),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "send application/json or application/x-www-form-urlencoded, not {}",
                other.unwrap_or("a body without Content-Type")
            ),
        )),
    }
}

async fn accept(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let answer = accept_inner(&state, &token, &headers, &body).await;
    let outcome = match &answer {
        Ok(_) => "accepted",
        Err(e) => e.code,
    };
    metrics::counter!("switchboard_webhooks_total", "outcome" => outcome).increment(1);
    answer
}

async fn accept_inner(state: &AppState, token: &str, headers: &HeaderMap, body: &[u8]) -> ApiResult<(StatusCode, Json<Value>)> {
    let token = token.to_string();
    let engine = &state.engine;
    if let Some(limiter) = &state.hook_limiter {
        if let Err(not_until) = limiter.check_key(&token) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests to this webhook; retry later");
            error.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
            return Err(error);
        }
        if limiter.len() > 100_000 {
            limiter.retain_recent();
        }
    }
    let row = state
        .hooks
        .get(engine.store(), &token)
        .await?
        .filter(|w| w.trigger_kind == "webhook")
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    if row.enabled != 1 {
        return Err(ApiError::new(StatusCode::CONFLICT, "workflow_disabled", "this workflow is disabled"));
    }
    let workflow = engine.workflow(&row.id, row.version).await?;
    if let Trigger::Webhook { secret: Some(secret) } = &workflow.trigger
        && !signature_ok(secret, headers, body) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                "missing or wrong X-Signature-256 (sha256=<hex HMAC-SHA256 of the body>)",
            ));
        }
    let data = payload(headers, body)?;
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty());
    let accepted = engine.accept_webhook(&row, data, key).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(accepted))))
}
