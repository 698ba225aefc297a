//! The shared state and the router.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use switchboard_runtime::engine::Engine;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::routes;

/// The largest request body accepted (SPEC §4: 413 above 1 MiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The engine (and through it the store).
    pub engine: Arc<Engine>,
    /// The admin bearer token.
    pub admin_token: Arc<str>,
    /// The base of webhook URLs, without a trailing slash.
    pub public_url: Arc<str>,
}

impl AppState {
    /// The public URL of a webhook token.
    pub fn webhook_url(&self, token: &str) -> String {
        format!("{}/hooks/{token}", self.public_url)
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::accounts::router())
        .merge(routes::workflows::router())
        .merge(routes::runs::router())
        .merge(routes::events::router())
        .merge(routes::hooks::router())
        .merge(routes::health::router())
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
