//! Vendor callbacks: `POST /callbacks/twilio/{connection}/sms`, Twilio's message status
//! callbacks (the `StatusCallback` every `sms.send` asks for), and each call's
//! `POST /callbacks/twilio/voice/{call_token}` (TwiML turns) and `…/status` (status events).
//!
//! `POST /callbacks/stripe/{account}` takes Stripe's webhook deliveries: each verified event
//! starts the account's workflows triggered by its type (`trigger: {stripe: {events}}`).
//!
//! A callback carries no account key: it is trusted only when its `X-Twilio-Signature` verifies
//! with the auth token of the connection named in its URL. A verified status becomes an app
//! event `sms.status` in the connection's account (`{message_sid, status, to, from,
//! error_code}`), deduplicated by message and status, so a workflow can react to `delivered`,
//! `undelivered` or `failed` like to any other event.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::json;
use switchboard_actions::voice::CallbackError;
use switchboard_integrations::connections::{StripeCredentials, TwilioCredentials};
use switchboard_integrations::stripe;
use switchboard_integrations::twilio::{signature_is_valid, signature_is_valid_any_port};
use switchboard_runtime::contact::{self, Channel, Keyword};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Body;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self as doc, built_once};

/// `/callbacks/…`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(twilio_sms_status))
        .routes(routes!(twilio_inbound_message))
        .routes(routes!(twilio_voice_twiml))
        .routes(routes!(twilio_voice_status))
        .routes(routes!(twilio_inbound_call))
        .routes(routes!(twilio_inbound_status))
        .routes(routes!(stripe_webhook))
}

/// `/callbacks/…`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

/// Stripe's webhook deliveries
///
/// The endpoint to give Stripe (Developers → Webhooks → Add endpoint), shown as `callback_url`
/// on the account's Stripe connection. Trusted only when `Stripe-Signature` verifies on the raw
/// body with the `webhook_secret` of one of the account's Stripe connections (HMAC-SHA256 of
/// `t.body`, any `v1`, `t` within 300 s of now). A verified event starts every enabled workflow
/// of the account with `trigger: {stripe: {events: [...]}}` listing its type, with the event as
/// `event`; a redelivery of the same event id starts nothing new.
#[utoipa::path(
    post,
    path = "/callbacks/stripe/{account}",
    tag = "callbacks",
    operation_id = "stripe_webhook",
    params(
        ("account" = String, Path, description = "The account's id"),
        ("Stripe-Signature" = String, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…]`"),
    ),
    request_body(content_type = "application/json", content = Object, description = "A Stripe event object: `id` and `type` are required"),
    responses(
        (status = 204, description = "Accepted (or a repeat of an accepted event)"),
        (status = 400, description = "`bad_request`: no `Stripe-Signature`, or a body that is not an event with `id` and `type`", body = doc::ErrorBody),
        (status = 403, description = "`invalid_signature`: no connection's `webhook_secret` verifies the signature, or it is older than 300 s", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account", body = doc::ErrorBody),
    ),
)]
async fn stripe_webhook(State(state): State<AppState>, Path(account): Path<String>, headers: HeaderMap, Body(body): Body) -> ApiResult<StatusCode> {
    let store = state.engine.store();
    if store.account(&account).await?.is_none() {
        return Err(ApiError::not_found("account"));
    }
    let Some(signature) = headers.get("stripe-signature").and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::bad_request("a Stripe webhook carries a Stripe-Signature header"));
    };
    let now = state.engine.clock().now() / 1000;
    let mut refusal = None;
    let mut verified = false;
    for row in store.connections_for(&account, &["stripe"], None).await? {
        let Ok(credentials) = state.vault.open::<StripeCredentials>(&row.into_ref()) else { continue };
        let Some(secret) = credentials.webhook_secret else { continue };
        match stripe::verify_webhook(secret.expose_secret(), Some(signature), &body, now, stripe::WEBHOOK_TOLERANCE_SECS) {
            Ok(_) => {
                verified = true;
                break;
            }
            // A stale match says more than another secret's mismatch.
            Err(e) => refusal = Some(refusal.filter(|r| matches!(r, stripe::WebhookError::Stale { .. })).unwrap_or(e)),
        }
    }
    if !verified {
        let message = match refusal {
            Some(e) => format!("Stripe-Signature refused: {e}"),
            None => "no Stripe connection of this account holds a webhook_secret to check Stripe-Signature with".to_owned(),
        };
        return Err(ApiError::new(StatusCode::FORBIDDEN, "invalid_signature", message));
    }
    let event: serde_json::Value = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    if !(event.get("id").is_some_and(|v| v.is_string()) && event.get("type").is_some_and(|v| v.is_string())) {
        return Err(ApiError::bad_request("a Stripe event has a string id and type"));
    }
    state.engine.accept_stripe_event(&account, event).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Twilio's message status callback
///
/// The `StatusCallback` every `sms.send` asks for. Trusted only when `X-Twilio-Signature`
/// verifies with the auth token of the connection in the URL; a verified status becomes the app
/// event `sms.status` (`{message_sid, status, to, from, error_code, connection}`) in the
/// connection's account, once per message and status.
#[utoipa::path(
    post,
    path = "/callbacks/twilio/{connection}/sms",
    tag = "callbacks",
    operation_id = "twilio_sms_status",
    params(
        ("connection" = String, Path, description = "The Twilio connection's id"),
        ("X-Twilio-Signature" = String, Header, description = "Twilio's signature of the URL and the form parameters"),
    ),
    request_body(
        content_type = "application/x-www-form-urlencoded",
        content = Object,
        description = "Twilio's form: `MessageSid` and `MessageStatus` are required; `To`, `From`, `ErrorCode` are read when present",
    ),
    responses(
        (status = 204, description = "Recorded (or a repeat of a recorded status)"),
        (status = 400, description = "`bad_request`: a malformed form, or no `MessageSid`/`MessageStatus`", body = doc::ErrorBody),
        (status = 403, description = "`invalid_signature`: `X-Twilio-Signature` does not match", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such live Twilio connection", body = doc::ErrorBody),
    ),
)]
async fn twilio_sms_status(State(state): State<AppState>, Path(connection): Path<String>, headers: HeaderMap, Body(body): Body) -> ApiResult<StatusCode> {
    let row = state.engine.store().connection_by_id(&connection).await?;
    let Some(row) = row.filter(|r| r.provider == "twilio" && r.sandbox == 0) else {
        return Err(ApiError::not_found("connection"));
    };
    let (params, signature) = twilio_form(&headers, &body)?;
    let (account_id, name) = (row.account_id.clone(), row.name.clone());
    let credentials: TwilioCredentials = state
        .vault
        .open(&row.into_ref())
        .map_err(|_| ApiError::new(StatusCode::FORBIDDEN, "invalid_signature", "the connection's credentials cannot check this signature"))?;
    let url = format!("{}/callbacks/twilio/{connection}/sms", state.public_url);
    if !signature_is_valid(credentials.auth_token.expose_secret(), &url, &params, &signature) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "invalid_signature", "X-Twilio-Signature does not match this request"));
    }
    let field = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (Some(sid), Some(status)) = (field("MessageSid"), field("MessageStatus")) else {
        return Err(ApiError::bad_request("a message status callback has MessageSid and MessageStatus"));
    };
    let data = json!({
        "message_sid": sid,
        "status": status,
        "to": field("To"),
        "from": field("From"),
        "error_code": field("ErrorCode"),
        "connection": name,
    });
    let id = format!("twilio:{sid}:{status}");
    state.engine.accept_event(&account_id, "sms.status", data, Some(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Twilio's inbound message webhook
///
/// Set it as an account number's messaging webhook ("A message comes in", HTTP POST). Trusted
/// only when `X-Twilio-Signature` verifies with the auth token of one of the account's live
/// Twilio connections. A body that is one of Twilio's opt-out keywords (STOP, STOPALL,
/// UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT) opts the sender out of texts and calls from
/// this account; START, UNSTOP or YES clears that (a `voice`-only opt-out the CRM recorded
/// stays). Every verified message also becomes the app event `sms.received` (`{message_sid,
/// from, to, body, keyword, connection}`), once per message. Answers an empty TwiML
/// `<Response/>`: Twilio sends its own reply to STOP and START.
#[utoipa::path(
    post,
    path = "/callbacks/twilio/messages/{account}",
    tag = "callbacks",
    operation_id = "twilio_inbound_message",
    params(
        ("account" = String, Path, description = "The account's id"),
        ("X-Twilio-Signature" = String, Header, description = "Twilio's signature of the URL and the form parameters"),
    ),
    request_body(
        content_type = "application/x-www-form-urlencoded",
        content = Object,
        description = "Twilio's form: `MessageSid`, `From` and `Body` are required; `To` and `AccountSid` are read when present",
    ),
    responses(
        (status = 200, description = "Recorded; an empty TwiML `<Response/>`", content_type = "text/xml", body = String),
        (status = 400, description = "`bad_request`: a malformed form, or no `MessageSid`/`From`/`Body`", body = doc::ErrorBody),
        (status = 403, description = "`invalid_signature`: `X-Twilio-Signature` matches none of the account's Twilio connections", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account", body = doc::ErrorBody),
    ),
)]
async fn twilio_inbound_message(State(state): State<AppState>, Path(account): Path<String>, headers: HeaderMap, Body(body): Body) -> ApiResult<Response> {
    let store = state.engine.store();
    if store.account(&account).await?.is_none() {
        return Err(ApiError::not_found("account"));
    }
    let (params, signature) = twilio_form(&headers, &body)?;
    let url = format!("{}/callbacks/twilio/messages/{account}", state.public_url);
    let mut signed_by = None;
    for row in store.connections_for(&account, &["twilio"], None).await?.into_iter().filter(|r| r.sandbox == 0) {
        let name = row.name.clone();
        let Ok(credentials) = state.vault.open::<TwilioCredentials>(&row.into_ref()) else { continue };
        if signature_is_valid_any_port(credentials.auth_token.expose_secret(), &url, &params, &signature) {
            signed_by = Some(name);
            break;
        }
    }
    let Some(connection) = signed_by else {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "invalid_signature", "X-Twilio-Signature matches none of this account's Twilio connections"));
    };
    let field = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned());
    let (Some(sid), Some(from), Some(text)) = (field("MessageSid"), field("From"), params.iter().find(|(k, _)| k == "Body").map(|(_, v)| v.clone())) else {
        return Err(ApiError::bad_request("an inbound message has MessageSid, From and Body"));
    };
    let now = state.engine.clock().now();
    let keyword = contact::keyword(&text);
    match keyword {
        Some(Keyword::OptOut) => {
            store.add_opt_out(&account, &from, Channel::All, "inbound_sms", now).await?;
            tracing::info!(number = %from, "opt-out recorded from an inbound STOP");
        }
        Some(Keyword::OptIn) => {
            store.remove_opt_outs(&account, &from, &[Channel::All, Channel::Sms]).await?;
            tracing::info!(number = %from, "opt-out cleared by an inbound START");
        }
        None => {}
    }
    let data = json!({
        "message_sid": sid,
        "from": from,
        "to": field("To"),
        "body": text,
        "keyword": keyword.map(|k| match k { Keyword::OptOut => "opt_out", Keyword::OptIn => "opt_in" }),
        "connection": connection,
    });
    state.engine.accept_event(&account, "sms.received", data, Some(&format!("twilio:{sid}:received"))).await?;
    Ok(([(header::CONTENT_TYPE, "text/xml")], "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>").into_response())
}

/// The query of a call's TwiML URL.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct TurnQuery {
    /// The node whose result the form carries (gather, menu, record, dial); absent on the
    /// call's first fetch.
    node: Option<String>,
}

/// A call callback as the signature check reads it.
struct CallRequest {
    /// The path and query Twilio requested (signed after the public URL).
    path_and_query: String,
    /// The form.
    params: Vec<(String, String)>,
    /// `X-Twilio-Signature`.
    signature: String,
}

fn call_request(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> ApiResult<CallRequest> {
    let (params, signature) = twilio_form(headers, body)?;
    let path_and_query = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| uri.path().to_owned());
    Ok(CallRequest { path_and_query, params, signature })
}

/// A Twilio callback's form (400 `bad_request` when it is not one) and its `X-Twilio-Signature`
/// (empty when absent, which no check accepts).
fn twilio_form(headers: &HeaderMap, body: &[u8]) -> ApiResult<(Vec<(String, String)>, String)> {
    let params = serde_urlencoded::from_bytes(body).map_err(|e| ApiError::bad_request(format!("malformed form body: {e}")))?;
    let signature = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    Ok((params, signature))
}

fn callback_error(e: CallbackError) -> ApiError {
    match e {
        CallbackError::NotFound => ApiError::not_found("call"),
        CallbackError::BadSignature => ApiError::new(StatusCode::FORBIDDEN, "invalid_signature", "X-Twilio-Signature does not match this request"),
        CallbackError::BadRequest(m) => ApiError::bad_request(m),
        CallbackError::Store(e) => e.into(),
    }
}

fn calls(state: &AppState) -> ApiResult<&switchboard_actions::voice::Calls> {
    state.calls.as_deref().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "calls_unavailable", "this process cannot answer calls"))
}

/// A call's TwiML
///
/// Twilio's request for the next instructions of a call Switchboard placed: the first fetch
/// (the call's `Url`), then every gather, menu, record and dial result, posted back with
/// `?node=<id>`. Answers one TwiML document, computed from the stored call (no vendor is
/// called), ending in `<Hangup/>` or `<Redirect>`. A repeated request gets the same document.
/// Trusted only when `X-Twilio-Signature` verifies with the auth token of the call's
/// connection.
#[utoipa::path(
    post,
    path = "/callbacks/twilio/voice/{call_token}",
    tag = "callbacks",
    operation_id = "twilio_voice_twiml",
    params(
        ("call_token" = String, Path, description = "The call's unguessable token"),
        TurnQuery,
        ("X-Twilio-Signature" = String, Header, description = "Twilio's signature of the URL and the form parameters"),
    ),
    request_body(
        content_type = "application/x-www-form-urlencoded",
        content = Object,
        description = "Twilio's form: `CallSid`, `CallStatus`, and the node's result (`Digits`, `SpeechResult`, `Confidence`, `RecordingUrl`, `RecordingDuration`, `DialCallStatus`, `AnsweredBy`)",
    ),
    responses(
        (status = 200, description = "The TwiML document", content_type = "text/xml", body = String),
        (status = 400, description = "`bad_request`: a malformed form", body = doc::ErrorBody),
        (status = 403, description = "`invalid_signature`: `X-Twilio-Signature` does not match", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such call", body = doc::ErrorBody),
    ),
)]
async fn twilio_voice_twiml(
    State(state): State<AppState>,
    Path(token): Path<String>,
    axum::extract::Query(query): axum::extract::Query<TurnQuery>,
    uri: Uri,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    let r = call_request(&uri, &headers, &body)?;
    let twiml = calls(&state)?.turn(&state.engine, &token, &r.path_and_query, query.node.as_deref(), &r.params, &r.signature).await.map_err(callback_error)?;
    Ok(([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], twiml).into_response())
}

/// A call's status events
///
/// The `StatusCallback` of every call Switchboard places (`initiated`, `ringing`, `answered`,
/// `completed`), and its machine-detection and recording callbacks. Repeated events (same
/// `SequenceNumber`) and late ones change nothing; the first final status (`completed`,
/// `busy`, `no-answer`, `failed`, `canceled`) ends the call and completes its step, with the
/// minutes billed, once. Trusted only when `X-Twilio-Signature` verifies with the auth token of
/// the call's connection.
#[utoipa::path(
    post,
    path = "/callbacks/twilio/voice/{call_token}/status",
    tag = "callbacks",
    operation_id = "twilio_voice_status",
    params(
        ("call_token" = String, Path, description = "The call's unguessable token"),
        ("X-Twilio-Signature" = String, Header, description = "Twilio's signature of the URL and the form parameters"),
    ),
    request_body(
        content_type = "application/x-www-form-urlencoded",
        content = Object,
        description = "Twilio's form: `CallSid`, `CallStatus`, `SequenceNumber`, `CallDuration`, `AnsweredBy`, `SipResponseCode`, `RecordingUrl`",
    ),
    responses(
        (status = 204, description = "Recorded (or a repeat of a recorded event)"),
        (status = 400, description = "`bad_request`: a malformed form", body = doc::ErrorBody),
        (status = 403, description = "`invalid_signature`: `X-Twilio-Signature` does not match", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such call", body = doc::ErrorBody),
    ),
)]
async fn twilio_voice_status(
    State(state): State<AppState>,
    Path(token): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    let r = call_request(&uri, &headers, &body)?;
    calls(&state)?.status(&state.engine, &token, &r.path_and_query, &r.params, &r.signature).await.map_err(callback_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A call comes in
///
/// The voice webhook of a number bound with `POST /v1/numbers` (set it in Twilio as the
/// number's "A call comes in" webhook, HTTP POST): starts a run of the bound workflow and
/// answers the first TwiML document of its `voice.answer` script in the same request. A number
/// bound to nothing (or to a disabled workflow) answers a short message and hangs up. Trusted
/// only when `X-Twilio-Signature` verifies with the connection's auth token.
#[utoipa::path(
    post,
    path = "/callbacks/twilio/{connection}/voice",
    tag = "callbacks",
    operation_id = "twilio_inbound_call",
    params(
        ("connection" = String, Path, description = "The Twilio connection's id"),
        ("X-Twilio-Signature" = String, Header, description = "Twilio's signature of the URL and the form parameters"),
    ),
    request_body(
        content_type = "application/x-www-form-urlencoded",
        content = Object,
        description = "Twilio's form: `CallSid`, `From`, `To` are required; `CallerName` is read when present",
    ),
    responses(
        (status = 200, description = "The TwiML document", content_type = "text/xml", body = String),
        (status = 400, description = "`bad_request`: a malformed form, or no `CallSid`/`From`/`To`", body = doc::ErrorBody),
        (status = 403, description = "`invalid_signature`: `X-Twilio-Signature` does not match", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such Twilio connection", body = doc::ErrorBody),
    ),
)]
async fn twilio_inbound_call(
    State(state): State<AppState>,
    Path(connection): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    let r = call_request(&uri, &headers, &body)?;
    let twiml = calls(&state)?.inbound(&state.engine, &connection, &r.path_and_query, &r.params, &r.signature).await.map_err(callback_error)?;
    Ok(([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], twiml).into_response())
}

/// An incoming call's status events
///
/// The "call status changes" webhook of a bound number: the first final status ends the call
/// and completes its `voice.answer` step with the minutes billed, once. Without it, the step
/// asks Twilio after its `wait_timeout`. Trusted only when `X-Twilio-Signature` verifies with
/// the connection's auth token.
#[utoipa::path(
    post,
    path = "/callbacks/twilio/{connection}/voice/status",
    tag = "callbacks",
    operation_id = "twilio_inbound_status",
    params(
        ("connection" = String, Path, description = "The Twilio connection's id"),
        ("X-Twilio-Signature" = String, Header, description = "Twilio's signature of the URL and the form parameters"),
    ),
    request_body(
        content_type = "application/x-www-form-urlencoded",
        content = Object,
        description = "Twilio's form: `CallSid`, `CallStatus`, `SequenceNumber`, `CallDuration`",
    ),
    responses(
        (status = 204, description = "Recorded (or a repeat, or a call that started no run)"),
        (status = 400, description = "`bad_request`: a malformed form, or no `CallSid`", body = doc::ErrorBody),
        (status = 403, description = "`invalid_signature`: `X-Twilio-Signature` does not match", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such Twilio connection", body = doc::ErrorBody),
    ),
)]
async fn twilio_inbound_status(
    State(state): State<AppState>,
    Path(connection): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    let r = call_request(&uri, &headers, &body)?;
    calls(&state)?.inbound_status(&state.engine, &connection, &r.path_and_query, &r.params, &r.signature).await.map_err(callback_error)?;
    Ok(StatusCode::NO_CONTENT)
}
