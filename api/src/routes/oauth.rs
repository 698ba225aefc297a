//! OAuth connections: `GET /v1/connections/{provider}/authorize` sends the person authorizing to
//! Google or Slack (authorization code + PKCE S256), and `GET /oauth/callback`, where the
//! provider sends them back, exchanges the code and stores the tokens sealed as a connection.
//!
//! The `state` parameter is 32 random bytes, stored only as its SHA-256 with the account that
//! asked, the connection name and the PKCE verifier (sealed): it expires after ten minutes and is
//! taken (deleted) by the first callback that names it, so a replay finds nothing. A callback
//! that carries an account key (a console finishing the flow in the account's session) must be
//! that state's account.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use switchboard_integrations::oauth::OAUTH_PROVIDERS;
use switchboard_runtime::engine::new_id;
use switchboard_runtime::store::{ConnectionRow, OAuthStateRow};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Query;
use crate::app::AppState;
use crate::auth::{AccountAuth, hash_key, random_secret};
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self as doc, built_once};

/// How long an authorization request may take, in ms (ten minutes).
pub const STATE_TTL_MS: i64 = 10 * 60 * 1000;

/// OAuth routes, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(authorize)).routes(routes!(callback))
}

/// OAuth routes.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

/// The query of `authorize`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuthorizeQuery {
    /// The connection's name (default: the provider's). Authorizing a name the account already
    /// uses for this provider replaces its tokens (and repairs a `broken` connection).
    #[serde(default)]
    name: Option<String>,
    /// `false` answers `200 {authorize_url}` instead of the `302` (for a browser console, which
    /// cannot read a redirect's `Location`, then sends the person there itself).
    #[serde(default)]
    redirect: Option<bool>,
}

/// Where to send the person authorizing.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizeUrl {
    /// The provider's consent page, with the client id, scope, `redirect_uri`, PKCE challenge
    /// and `state` (valid ten minutes, once).
    pub authorize_url: String,
}

/// Starts connecting Google or Slack
///
/// Answers `302` to the provider's consent page: the operator's client id
/// (`SWITCHBOARD_GOOGLE_CLIENT_ID`, `SWITCHBOARD_SLACK_CLIENT_ID`), the scope (Google Calendar
/// events; Slack `chat:write`), `redirect_uri` `{public_url}/oauth/callback`, a PKCE
/// `code_challenge` (S256) and a `state` bound to this account that expires in ten minutes.
/// With `redirect=false`, answers `200 {authorize_url}` instead.
#[utoipa::path(
    get,
    path = "/v1/connections/{provider}/authorize",
    tag = "connections",
    operation_id = "authorize_connection",
    security(("account_key" = [])),
    params(("provider" = String, Path, description = "`google` or `slack`"), AuthorizeQuery),
    responses(
        (status = 200, description = "With `redirect=false`: the consent page's URL", body = AuthorizeUrl),
        (status = 302, description = "To the provider's consent page (`Location`)"),
        (status = 400, description = "`bad_request`: a query string that does not parse (`redirect` not `true`/`false`), or a `name` that is empty, longer than 100 characters or not printable", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: not a provider that connects through OAuth", body = doc::ErrorBody),
        (status = 409, description = "`oauth_not_configured`: the operator set no client id and secret for this provider", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn authorize(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    Path(provider): Path<String>,
    Query(q): Query<AuthorizeQuery>,
) -> ApiResult<Response> {
    if !OAUTH_PROVIDERS.contains(&provider.as_str()) {
        return Err(ApiError::not_found("OAuth provider"));
    }
    let Some(app) = state.oauth.apps.get(&provider) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "oauth_not_configured",
            format!("no OAuth client is configured for {provider}: set SWITCHBOARD_{0}_CLIENT_ID and SWITCHBOARD_{0}_CLIENT_SECRET", provider.to_uppercase()),
        ));
    };
    let name = q.name.map(|n| n.trim().to_owned()).unwrap_or_else(|| provider.clone());
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("name: a connection name of 1 to 100 printable characters"));
    }
    let secret = random_secret("");
    let (url, verifier) = app.authorize_url(&redirect_uri(&state), &secret).map_err(|e| ApiError::internal(e.to_string()))?;
    let state_hash = hash_key(&secret);
    let now = state.engine.clock().now();
    let row = OAuthStateRow {
        verifier: hex::encode(state.vault.seal(&state_hash, &serde_json::Value::String(verifier.expose_secret().to_owned()))),
        state_hash,
        account_id: account.id,
        provider,
        name,
        expires_at: now + STATE_TTL_MS,
        created_at: now,
    };
    state.engine.store().create_oauth_state(&row).await?;
    if q.redirect == Some(false) {
        return Ok(([(header::CACHE_CONTROL, "no-store")], Json(AuthorizeUrl { authorize_url: url })).into_response());
    }
    Ok((StatusCode::FOUND, [(header::LOCATION, url), (header::CACHE_CONTROL, "no-store".to_owned())]).into_response())
}

/// The query the provider sends back.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CallbackQuery {
    /// The authorization code.
    #[serde(default)]
    code: Option<String>,
    /// The `state` of `authorize`.
    #[serde(default)]
    state: Option<String>,
    /// Set instead of `code` when the person declined (e.g. `access_denied`).
    #[serde(default)]
    error: Option<String>,
}

/// Where the provider sends the person back
///
/// Give `{public_url}/oauth/callback` to Google and Slack as the redirect URI. Takes the
/// `state` (refused when unknown, already used, expired, or — when the request carries an
/// account key — another account's), exchanges `code` with the PKCE verifier, and stores the
/// tokens sealed as the connection (created, or replaced on the connection of that name).
/// Answers a short HTML page.
#[utoipa::path(
    get,
    path = "/oauth/callback",
    tag = "connections",
    operation_id = "oauth_callback",
    params(CallbackQuery),
    responses(
        (status = 200, description = "Connected: an HTML page saying so", content_type = "text/html", body = String),
        (status = 400, description = "`invalid_state` (unknown, used or expired), `authorization_denied`, or `bad_request` (no `state` or `code`, a query string that does not parse)", body = doc::ErrorBody),
        (status = 403, description = "`state_account_mismatch`: the state was issued to another account", body = doc::ErrorBody),
        (status = 409, description = "`connection_exists`: the name is used by a connection of another provider", body = doc::ErrorBody),
        (status = 502, description = "`oauth_exchange_failed`: the provider refused the code or could not be reached", body = doc::ErrorBody),
    ),
)]
async fn callback(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<CallbackQuery>) -> ApiResult<Response> {
    let Some(secret) = q.state.as_deref().filter(|s| !s.is_empty()) else {
        return Err(ApiError::bad_request("the callback carries no state"));
    };
    let store = state.engine.store();
    // Taken before anything else: whatever happens next, this state is spent.
    let Some(pending) = store.take_oauth_state(&hash_key(secret)).await? else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_state",
            "unknown or already used state; start again from /v1/connections/{provider}/authorize",
        ));
    };
    let now = state.engine.clock().now();
    if pending.expires_at < now {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_state", "the state expired (ten minutes); start again"));
    }
    if let Some(key) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) {
        let holder = store.account_by_key_hash(&hash_key(key.trim())).await?;
        if holder.is_none_or(|h| h.account.id != pending.account_id) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "state_account_mismatch", "this state was issued to another account"));
        }
    }
    if let Some(error) = q.error {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "authorization_denied", format!("the provider answered error={error}")));
    }
    let Some(code) = q.code.filter(|c| !c.is_empty()) else {
        return Err(ApiError::bad_request("the callback carries no code"));
    };
    let Some(app) = state.oauth.apps.get(&pending.provider) else {
        return Err(ApiError::new(StatusCode::CONFLICT, "oauth_not_configured", format!("no OAuth client is configured for {}", pending.provider)));
    };
    let verifier = hex::decode(&pending.verifier)
        .ok()
        .and_then(|sealed| state.vault.open_value(&pending.state_hash, &sealed).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or_else(|| ApiError::internal("the stored PKCE verifier does not open"))?;
    let http = state.oauth.http.as_ref().ok_or_else(|| ApiError::internal("the OAuth HTTP client could not be built"))?;
    let credentials = app
        .exchange(http, &redirect_uri(&state), &code, &verifier, now)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "oauth_exchange_failed", e.to_string()))?;
    let every: Vec<&str> = switchboard_integrations::providers::names().collect();
    let existing = store.connections_for(&pending.account_id, &every, Some(&pending.name)).await?.into_iter().next();
    match existing {
        Some(row) if row.provider == pending.provider => {
            let sealed = hex::encode(state.vault.seal(&row.id, &credentials));
            store.reauthorize_connection(&pending.account_id, &row.id, &sealed).await?;
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "connection_exists",
                format!("the account's connection '{}' is of another provider", pending.name),
            ));
        }
        None => {
            let id = new_id();
            let row = ConnectionRow {
                sealed: hex::encode(state.vault.seal(&id, &credentials)),
                id,
                account_id: pending.account_id.clone(),
                provider: pending.provider.clone(),
                name: pending.name.clone(),
                sandbox: 0,
                created_at: now,
                settings: "{}".into(),
                status: "ok".into(),
            };
            if !store.create_connection(&row).await? {
                return Err(ApiError::new(StatusCode::CONFLICT, "connection_exists", format!("the account has a connection named '{}'", pending.name)));
            }
        }
    }
    tracing::info!(account_id = %pending.account_id, provider = %pending.provider, name = %pending.name, "OAuth connection authorized");
    let page = format!(
        "<!doctype html><title>Connected</title><p>Switchboard: the {} connection <b>{}</b> is authorized. You can close this window.</p>",
        pending.provider,
        html_escape(&pending.name)
    );
    Ok((StatusCode::OK, Html(page)).into_response())
}

fn redirect_uri(state: &AppState) -> String {
    format!("{}/oauth/callback", state.public_url)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
