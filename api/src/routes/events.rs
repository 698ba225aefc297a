//! App events: `POST /v1/events {type, data, id?}`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_runtime::definition::Problem;

use super::{Body, json_body};
use crate::app::AppState;
use crate::auth::AccountAuth;
use crate::error::{ApiError, ApiResult};

/// `/v1/events`.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/events", post(accept))
}

#[derive(Deserialize)]
struct NewEvent {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    data: Value,
    id: Option<String>,
}

async fn accept(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let event: NewEvent = json_body(&headers, &body)?;
    if event.event_type.trim().is_empty() {
        let problem = Problem { path: "type".into(), message: "must not be empty".into() };
        return Err(ApiError::invalid("invalid_event", "the event is invalid", vec![problem]));
    }
    let data = if event.data.is_null() { json!({}) } else { event.data };
    let accepted = state.engine.accept_event(&account.id, &event.event_type, data, event.id.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(accepted))))
}
