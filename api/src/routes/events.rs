//! App events: `POST /v1/events {type, data, id?}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_runtime::definition::Problem;
use switchboard_runtime::engine;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::JsonBody;
use crate::app::AppState;
use crate::auth::AccountAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self as doc, built_once};

/// An accepted app event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventAccepted {
    /// The recorded event (the same for a repeated `id`).
    pub event_id: String,
    /// The runs it started: one per enabled workflow whose trigger matched (none for a repeat).
    pub run_ids: Vec<String>,
}

impl From<engine::EventAccepted> for EventAccepted {
    fn from(a: engine::EventAccepted) -> Self {
        EventAccepted { event_id: a.event_id, run_ids: a.run_ids }
    }
}

/// `/v1/events`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(accept))
}

/// `/v1/events`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

/// `POST /v1/events`.
#[derive(Deserialize, ToSchema)]
struct NewEvent {
    /// What happened, e.g. `lead.created`: workflows with `trigger: {event: <type>}` start.
    #[serde(rename = "type")]
    event_type: String,
    /// The event's data, as `event` in expressions (default `{}`).
    #[serde(default)]
    data: Value,
    /// The sender's id for it: the same `id` again answers the first answer and starts nothing.
    id: Option<String>,
}

/// Records an app event
///
/// Starts every enabled workflow of the account whose trigger matches (and resumes runs waiting
/// for it). 202 only once the event and its runs are committed.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    operation_id = "create_event",
    security(("account_key" = [])),
    request_body = NewEvent,
    responses(
        (status = 202, description = "Accepted (or the first answer to this `id`)", body = EventAccepted),
        (status = 422, description = "`invalid_event`: an empty `type` (or `invalid_request`)", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn accept(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    JsonBody(event): JsonBody<NewEvent>,
) -> ApiResult<(StatusCode, Json<EventAccepted>)> {
    if event.event_type.trim().is_empty() {
        let problem = Problem { path: "type".into(), message: "must not be empty".into() };
        return Err(ApiError::invalid("invalid_event", "the event is invalid", vec![problem]));
    }
    let data = if event.data.is_null() { json!({}) } else { event.data };
    let accepted = state.engine.accept_event(&account.id, &event.event_type, data, event.id.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted.into())))
}
