//! Per-workflow webhook URLs: `POST /hooks/{token}`. The token is the secret; a trigger with a
//! `secret` also requires `X-Signature-256: sha256=<hex HMAC-SHA256 of the body>`. 202 only
//! after the event and its run are committed.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use switchboard_runtime::definition::Trigger;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Body, media_type};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self as doc, built_once};

/// `/hooks/{token}`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(accept))
}

/// `/hooks/{token}`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
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
        (status = 202, description = "Accepted: the event and the run it started (or the first answer to this `Idempotency-Key`)", body = doc::HookAccepted),
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
