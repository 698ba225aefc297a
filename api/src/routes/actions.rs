//! `GET /v1/actions`: the action kinds this server runs, each with the JSON Schema of its
//! input, read from the engine's action registry. The console builds its palette of blocks and
//! its properties panel from it; anyone writing a workflow by hand can read it too.

use axum::extract::State;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AccountAuth;
use crate::openapi::{self as doc, built_once};

/// `/v1/actions`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// `/v1/actions`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

/// One action kind a step can name in `action:`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionKind {
    /// Its durable name, e.g. `sms.send`.
    pub kind: String,
    /// The providers whose connections it sends through (`connection:` picks one); empty when
    /// it needs none.
    pub providers: Vec<String>,
    /// The JSON Schema of its `input`, as the server checks it at save time.
    #[schema(value_type = Object)]
    pub input_schema: Value,
}

/// Every action kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionList {
    /// Sorted by kind.
    pub actions: Vec<ActionKind>,
}

/// The action kinds this server runs, with their input schemas
///
/// Read-only, the same for every account: what `action:` in a step may name and what its
/// `input` must look like.
#[utoipa::path(
    get,
    path = "/v1/actions",
    tag = "workflows",
    operation_id = "list_actions",
    security(("account_key" = [])),
    responses(
        (status = 200, description = "Every action kind, sorted, with its input's JSON Schema", body = ActionList),
        doc::Unauthorized,
    ),
)]
async fn list(State(state): State<AppState>, AccountAuth(_): AccountAuth) -> Json<ActionList> {
    let registry = state.engine.actions();
    let actions = registry
        .kinds()
        .filter_map(|kind| {
            let action = registry.get(kind)?;
            Some(ActionKind {
                kind: kind.to_string(),
                providers: action.providers().iter().map(|p| p.to_string()).collect(),
                input_schema: registry.input_schema(kind)?.json.clone(),
            })
        })
        .collect();
    Json(ActionList { actions })
}
