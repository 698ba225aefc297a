//! `GET /v1/outbox`: what sandbox connections and test runs would have sent, oldest first
//! ("newest last"), optionally for one run.

use axum::extract::State;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::store::OutboxRow;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Query;
use crate::app::AppState;
use crate::auth::AccountAuth;
use crate::error::ApiResult;
use crate::openapi::{self as doc, built_once};

/// `/v1/outbox`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// `/v1/outbox`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

/// `?run_id=&cursor=&limit=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct OutboxQuery {
    /// Only what this run sent.
    run_id: Option<String>,
    /// Where the previous page ended.
    cursor: Option<String>,
    /// Items a page (default 50, at most 200).
    limit: Option<i64>,
}

/// The API shape of an outbox message.
pub(crate) fn message_json(m: &OutboxRow) -> Value {
    json!({
        "id": m.id,
        "run_id": m.run_id,
        "step_id": m.step_id,
        "kind": m.kind,
        "connection": m.connection_name,
        "to": m.recipient,
        "rendered": serde_json::from_str::<Value>(&m.rendered).unwrap_or_default(),
        "usage": serde_json::from_str::<Value>(&m.usage).unwrap_or_default(),
        "test": m.is_test == 1,
        "created_at": to_rfc3339(m.created_at),
    })
}

/// What sandbox connections and test runs would have sent, oldest first
#[utoipa::path(
    get,
    path = "/v1/outbox",
    tag = "outbox",
    operation_id = "list_outbox",
    security(("account_key" = [])),
    params(OutboxQuery),
    responses(
        (status = 200, description = "A page of messages", body = doc::OutboxList),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn list(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<OutboxQuery>) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let page = state.engine.store().outbox(&account.id, q.run_id.as_deref(), q.cursor.as_deref(), limit).await?;
    let messages: Vec<Value> = page.items.iter().map(message_json).collect();
    Ok(Json(json!({ "messages": messages, "next_cursor": page.next_cursor })))
}
