//! `GET /v1/outbox`: what sandbox connections and test runs would have sent, oldest first
//! ("newest last", SPEC §4), optionally for one run.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::store::OutboxRow;

use super::Query;
use crate::app::AppState;
use crate::auth::AccountAuth;
use crate::error::ApiResult;

/// `/v1/outbox`.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/outbox", get(list))
}

#[derive(Debug, Deserialize)]
struct OutboxQuery {
    run_id: Option<String>,
    cursor: Option<String>,
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

async fn list(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<OutboxQuery>) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let page = state.engine.store().outbox(&account.id, q.run_id.as_deref(), q.cursor.as_deref(), limit).await?;
    let messages: Vec<Value> = page.items.iter().map(message_json).collect();
    Ok(Json(json!({ "messages": messages, "next_cursor": page.next_cursor })))
}
