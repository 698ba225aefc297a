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
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(read, update, remove))
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
    /// Non-secret settings, returned as given. For a sandbox Twilio connection, `simulate`
    /// scripts its calls: `{"+15551234567": {status, answered_by, duration_s, inputs: {<node
    /// id>: {digits | speech}}}}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    settings: Option<Value>,
}

/// Changes to a connection (`PATCH /v1/connections/{id}`); what is absent stays.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ConnectionPatch {
    /// Replaces the settings.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    settings: Option<Value>,
    /// Turns the sandbox on or off.
    #[serde(default)]
    sandbox: Option<bool>,
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
    /// Non-secret settings (`{}` when none).
    #[schema(value_type = Object)]
    pub settings: Value,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Stripe connections: the URL to give Stripe as the webhook endpoint
    /// (`{public_url}/callbacks/stripe/{account}`), whose deliveries are checked with the
    /// connection's `webhook_secret`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// `ok`, or `broken`: its OAuth provider refused to refresh its tokens (`invalid_grant`:
    /// consent revoked or expired); steps using it fail `connection_revoked` until it is
    /// authorized again (`GET /v1/connections/{provider}/authorize`).
    pub status: String,
}

impl Connection {
    /// The connection as shown, `public_url` being this service's.
    pub fn of(c: &ConnectionRow, public_url: &str) -> Self {
        Connection {
            id: c.id.clone(),
            provider: c.provider.clone(),
            name: c.name.clone(),
            sandbox: c.sandbox == 1,
            settings: serde_json::from_str(&c.settings).unwrap_or_else(|_| json!({})),
            created_at: to_rfc3339(c.created_at),
            status: c.status.clone(),
            callback_url: (c.provider == "stripe").then(|| format!("{public_url}/callbacks/stripe/{}", c.account_id)),
        }
    }
}

/// The most settings a connection keeps (serialized).
const MAX_SETTINGS_BYTES: usize = 64 * 1024;

/// The problems of a connection's settings: an object, not too large; for Twilio, `simulate`
/// keyed by E.164 numbers, each `{status?, answered_by?, duration_s?, inputs?}`.
fn settings_problems(provider: &str, settings: &Value) -> Vec<Problem> {
    let Some(map) = settings.as_object() else { return vec![problem("settings", "must be an object")] };
    if settings.to_string().len() > MAX_SETTINGS_BYTES {
        return vec![problem("settings", "at most 64 KiB")];
    }
    let mut problems = Vec::new();
    let Some(simulate) = map.get("simulate").filter(|_| provider == "twilio") else { return problems };
    let Some(numbers) = simulate.as_object() else { return vec![problem("settings.simulate", "must be an object keyed by the number called")] };
    for (number, outcome) in numbers {
        let at = format!("settings.simulate.{number}");
        if !switchboard_actions::sms_send::is_e164(number) {
            problems.push(problem(&at, "must be keyed by a phone number in E.164 form, e.g. +15551234567"));
        }
        let Some(outcome) = outcome.as_object() else {
            problems.push(problem(&at, "must be an object {status, answered_by, duration_s, inputs}"));
            continue;
        };
        for (key, value) in outcome {
            let ok = match key.as_str() {
                "status" => value.as_str().is_some_and(|s| switchboard_actions::voice::call::FINAL_STATUSES.contains(&s)),
                "answered_by" => value.is_string(),
                "duration_s" => value.as_i64().is_some_and(|d| (0..=86_400).contains(&d)),
                "inputs" => value.as_object().is_some_and(|inputs| {
                    inputs.values().all(|given| {
                        given.as_object().is_some_and(|g| g.iter().all(|(k, v)| matches!(k.as_str(), "digits" | "speech" | "status") && v.is_string()))
                    })
                }),
                _ => {
                    problems.push(problem(&format!("{at}.{key}"), "unknown; one of status, answered_by, duration_s, inputs"));
                    continue;
                }
            };
            if !ok {
                let want = match key.as_str() {
                    "status" => "one of completed, busy, no-answer, failed, canceled",
                    "answered_by" => "a string, e.g. human or machine_start",
                    "duration_s" => "whole seconds, 0 to 86400",
                    _ => "an object keyed by node id, each {digits?, speech?} as strings",
                };
                problems.push(problem(&format!("{at}.{key}"), format!("must be {want}")));
            }
        }
    }
    problems
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
    let settings = new.settings.filter(|s| !s.is_null()).unwrap_or_else(|| json!({}));
    problems.extend(settings_problems(&new.provider, &settings));
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
        settings: settings.to_string(),
        status: "ok".into(),
    };
    if !state.engine.store().create_connection(&row).await? {
        return Err(ApiError::new(StatusCode::CONFLICT, "connection_exists", format!("this account already has a connection named '{}'", row.name)));
    }
    Ok((StatusCode::CREATED, Json(Connection::of(&row, &state.public_url))))
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
    Ok(Json(ConnectionList { connections: page.items.iter().map(|c| Connection::of(c, &state.public_url)).collect(), next_cursor: page.next_cursor }))
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
    Ok(Json(Connection::of(&row, &state.public_url)))
}

/// Changes a connection
///
/// Replaces its settings and turns its sandbox on or off; its credentials stay as they are.
#[utoipa::path(
    patch,
    path = "/v1/connections/{id}",
    tag = "connections",
    operation_id = "update_connection",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The connection")),
    request_body = ConnectionPatch,
    responses(
        (status = 200, description = "The connection, changed", body = Connection),
        (status = 404, description = "`not_found`: no such connection in this account", body = doc::ErrorBody),
        (status = 422, description = "`invalid_connection`, naming every problem (or `invalid_request`)", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn update(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<ConnectionPatch>,
) -> ApiResult<Json<Connection>> {
    let store = state.engine.store();
    let mut row = store.connection(&account.id, &id).await?.ok_or_else(|| ApiError::not_found("connection"))?;
    if let Some(settings) = patch.settings {
        let problems = settings_problems(&row.provider, &settings);
        if !problems.is_empty() {
            return Err(ApiError::invalid("invalid_connection", "the connection is invalid", problems));
        }
        row.settings = settings.to_string();
    }
    if let Some(sandbox) = patch.sandbox {
        row.sandbox = sandbox as i64;
    }
    if !store.update_connection(&account.id, &id, &row.settings, row.sandbox).await? {
        return Err(ApiError::not_found("connection"));
    }
    Ok(Json(Connection::of(&row, &state.public_url)))
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
