//! Liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::openapi::{self as doc, built_once};

/// `/healthz`, `/readyz`, `/metrics`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics_text))
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

/// The process's Prometheus recorder, installed on first use (one per process).
pub fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program's): then ours only
        // renders what it is given.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Prometheus metrics
///
/// Step counts, durations, retries and failures by code, webhook outcomes, and the queue's depth
/// and due-but-unclaimed rows (read at scrape time). No token: expose it to monitoring only.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain; version=0.0.4", body = String),
        (status = 500, description = "`internal`: the queue could not be read", body = doc::ErrorBody),
    ),
)]
async fn metrics_text(State(state): State<AppState>) -> Result<([(axum::http::HeaderName, &'static str); 1], String), crate::error::ApiError> {
    let store = state.engine.store();
    let handle = prometheus();
    metrics::gauge!("switchboard_queue_depth").set(store.queue_depth().await? as f64);
    metrics::gauge!("switchboard_due_unclaimed").set(store.due_unclaimed(state.engine.clock().now()).await? as f64);
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()))
}

/// Liveness: the process answers
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    responses((status = 200, description = "Alive", body = Health)),
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers
///
/// Rate limits falling back from Redis to this process do not make it unready (Redis holds
/// nothing that cannot be lost), but the answer says so.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "The database is unreachable (`status: not_ready`)", body = Readiness),
    ),
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let rate_limits = state.engine.rate_limit_status();
    let live_events = state.engine.events().status();
    if state.engine.store().ping().await {
        (StatusCode::OK, Json(Readiness { status: "ready", database: "ok", rate_limits, live_events }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness { status: "not_ready", database: "unreachable", rate_limits, live_events }))
    }
}

// ---- Answers ---------------------------------------------------------------------------------

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(example = "ready")]
    pub status: &'static str,
    /// `ok` or `unreachable`.
    pub database: &'static str,
    /// Where vendor rate limits live: `in_process`, `redis`, or `in_process_fallback` while
    /// Redis is unreachable (that does not make the process unready).
    pub rate_limits: &'static str,
    /// Where live run events travel, like `rate_limits`.
    pub live_events: &'static str,
}
