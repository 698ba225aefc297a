//! `GET /v1/outbox`: what sandbox connections and test runs would have sent, oldest first
//! ("newest last"), optionally for one run.

use axum::extract::State;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::store::OutboxRow;
use utoipa::{IntoParams, ToSchema};
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

/// A message a sandbox connection or a test run would have sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxMessage {
    /// Its id.
    pub id: String,
    /// The run that sent it.
    pub run_id: String,
    /// The step that sent it.
    pub step_id: String,
    /// The action kind, e.g. `sms.send`, `email.send`.
    pub kind: String,
    /// The connection's name, or `null`.
    #[schema(required = true)]
    pub connection: Option<String>,
    /// The recipient, or `null`.
    #[schema(required = true)]
    pub to: Option<String>,
    /// What would have been sent (body, subject, …).
    #[schema(value_type = Object)]
    pub rendered: Value,
    /// What it would have cost.
    pub usage: Value,
    /// Whether a test run sent it.
    pub test: bool,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&OutboxRow> for OutboxMessage {
    fn from(m: &OutboxRow) -> Self {
        OutboxMessage {
            id: m.id.clone(),
            run_id: m.run_id.clone(),
            step_id: m.step_id.clone(),
            kind: m.kind.clone(),
            connection: m.connection_name.clone(),
            to: m.recipient.clone(),
            rendered: serde_json::from_str(&m.rendered).unwrap_or_default(),
            usage: serde_json::from_str(&m.usage).unwrap_or_default(),
            test: m.is_test == 1,
            created_at: to_rfc3339(m.created_at),
        }
    }
}

/// A page of the outbox, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxList {
    /// The messages.
    pub messages: Vec<OutboxMessage>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
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
        (status = 200, description = "A page of messages", body = OutboxList),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn list(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<OutboxQuery>) -> ApiResult<Json<OutboxList>> {
    let limit = super::page_limit(q.limit);
    let page = state.engine.store().outbox(&account.id, q.run_id.as_deref(), q.cursor.as_deref(), limit).await?;
    Ok(Json(OutboxList { messages: page.items.iter().map(OutboxMessage::from).collect(), next_cursor: page.next_cursor }))
}
