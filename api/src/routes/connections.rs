//! Connections: vendor credentials an account's steps send with. Credentials are
//! checked against the provider's shape, sealed with the vault before they reach the store, and
//! never returned, logged or shown in a run.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_integrations::{connections, providers};
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::definition::Problem;
use switchboard_runtime::engine::new_id;
use switchboard_runtime::store::ConnectionRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{JsonBody, PageQuery, Query};
use crate::app::AppState;
use crate::auth::AccountAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self as doc, built_once};

/// `/v1/connections…`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(read, remove))
}

/// `/v1/connections…`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

/// A new connection (`POST /v1/connections`).
// Deliberately no `Debug`: it holds credentials.
#[derive(Deserialize, ToSchema)]
struct NewConnection {
    /// `twilio`, `smtp`, `slack`, `crm`, … (the 422 lists them).
    provider: String,
    /// Unique in the account; 1 to 100 printable characters.
    name: String,
    /// Sends go to the outbox instead of the vendor; needs no credentials.
    #[serde(default)]
    sandbox: bool,
    /// The provider's credentials (e.g. Twilio `{account_sid, auth_token}`), checked against its
    /// shape and sealed; required unless `sandbox`. Never returned.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    credentials: Option<Value>,
}

/// A connection: never its credentials.
#[derive(Debug, Serialize, ToSchema)]
pub struct Connection {
    /// Its id.
    pub id: String,
    /// `twilio`, `smtp`, `slack`, `crm`, …
    pub provider: String,
    /// Its name in the account (steps pick it with `connection: <name>`).
    pub name: String,
    /// Whether sends go to the outbox instead of the vendor.
    pub sandbox: bool,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&ConnectionRow> for Connection {
    fn from(c: &ConnectionRow) -> Self {
        Connection { id: c.id.clone(), provider: c.provider.clone(), name: c.name.clone(), sandbox: c.sandbox == 1, created_at: to_rfc3339(c.created_at) }
    }
}

/// A page of connections.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionList {
    /// The connections.
    pub connections: Vec<Connection>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

fn problem(path: &str, message: impl Into<String>) -> Problem {
    Problem { path: path.to_string(), message: message.into() }
}

/// Creates a connection
///
/// The credentials are sealed before they are stored and are never returned, logged or shown.
#[utoipa::path(
    post,
    path = "/v1/connections",
    tag = "connections",
    operation_id = "create_connection",
    security(("account_key" = [])),
    request_body = NewConnection,
    responses(
        (status = 201, description = "The connection (without its credentials)", body = Connection),
        (status = 409, description = "`connection_exists`: the account has a connection of that name", body = doc::ErrorBody),
        (status = 422, description = "`invalid_connection`, naming every problem (or `invalid_request`)", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn create(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    JsonBody(new): JsonBody<NewConnection>,
) -> ApiResult<(StatusCode, Json<Connection>)> {
    let mut problems = Vec::new();
    let name = new.name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        problems.push(problem("name", "a name of 1 to 100 printable characters"));
    }
    if providers::provider(&new.provider).is_none() {
        let names: Vec<&str> = providers::names().collect();
        problems.push(problem("provider", format!("unknown provider '{}'; one of {}", new.provider, names.join(", "))));
    }
    // A sandbox connection sends nothing, so it needs no credentials (a user trying a template
    // has no vendor account yet); credentials given to one are still checked and sealed.
    let credentials = match new.credentials {
        Some(c) if !c.is_null() => Some(c),
        _ if new.sandbox => None,
        _ => {
            problems.push(problem("credentials", format!("required for a {} connection (or create it with \"sandbox\": true)", new.provider)));
            None
        }
    };
    if let Some(c) = &credentials
        && problems.is_empty()
        && let Err(found) = connections::check(&new.provider, c)
    {
        problems.extend(found.into_iter().map(|(path, message)| Problem { path, message }));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid("invalid_connection", "the connection is invalid", problems));
    }
    let id = new_id();
    let row = ConnectionRow {
        sealed: hex::encode(state.vault.seal(&id, &credentials.unwrap_or_else(|| json!({})))),
        id,
        account_id: account.id.clone(),
        provider: new.provider,
        name: name.to_string(),
        sandbox: new.sandbox as i64,
        created_at: state.engine.clock().now(),
    };
    if !state.engine.store().create_connection(&row).await? {
        return Err(ApiError::new(StatusCode::CONFLICT, "connection_exists", format!("this account already has a connection named '{}'", row.name)));
    }
    Ok((StatusCode::CREATED, Json(Connection::from(&row))))
}

/// The account's connections
#[utoipa::path(
    get,
    path = "/v1/connections",
    tag = "connections",
    operation_id = "list_connections",
    security(("account_key" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of connections", body = ConnectionList),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn list(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<PageQuery>) -> ApiResult<Json<ConnectionList>> {
    let page = state.engine.store().list_connections(&account.id, q.cursor.as_deref(), q.limit()).await?;
    Ok(Json(ConnectionList { connections: page.items.iter().map(Connection::from).collect(), next_cursor: page.next_cursor }))
}

/// One connection
#[utoipa::path(
    get,
    path = "/v1/connections/{id}",
    tag = "connections",
    operation_id = "read_connection",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The connection")),
    responses(
        (status = 200, description = "The connection", body = Connection),
        (status = 404, description = "`not_found`: no such connection in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn read(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<Json<Connection>> {
    let row = state.engine.store().connection(&account.id, &id).await?.ok_or_else(|| ApiError::not_found("connection"))?;
    Ok(Json(Connection::from(&row)))
}

/// Deletes a connection
#[utoipa::path(
    delete,
    path = "/v1/connections/{id}",
    tag = "connections",
    operation_id = "delete_connection",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The connection")),
    responses(
        (status = 200, description = "Deleted", body = super::Deleted),
        (status = 404, description = "`not_found`: no such connection in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn remove(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<Json<super::Deleted>> {
    if state.engine.store().delete_connection(&account.id, &id).await? {
        Ok(Json(super::Deleted { id, deleted: true }))
    } else {
        Err(ApiError::not_found("connection"))
    }
}
