//! Liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::app::AppState;

/// `/healthz`, `/readyz`.
pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics_text))
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

/// `GET /metrics`: step counts, durations, retries and failures by code, webhook outcomes, and
/// the queue's depth and due-but-unclaimed rows (read at scrape time).
async fn metrics_text(State(state): State<AppState>) -> Result<([(axum::http::HeaderName, &'static str); 1], String), crate::error::ApiError> {
    let store = state.engine.store();
    let handle = prometheus();
    metrics::gauge!("switchboard_queue_depth").set(store.queue_depth().await? as f64);
    metrics::gauge!("switchboard_due_unclaimed").set(store.due_unclaimed(state.engine.clock().now()).await? as f64);
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the database answers. Rate limits falling back from Redis to this process do
/// not make it unready (Redis holds nothing that cannot be lost), but the answer says so.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let rate_limits = state.engine.rate_limit_status();
    let live_events = state.engine.events().status();
    if state.engine.store().ping().await {
        (StatusCode::OK, Json(json!({ "status": "ready", "database": "ok", "rate_limits": rate_limits, "live_events": live_events })))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "not_ready", "database": "unreachable", "rate_limits": rate_limits, "live_events": live_events })))
    }
}
