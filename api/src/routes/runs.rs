//! Runs: list, read with the step timeline, cancel, retry.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::status::{RunStatus, StepStatus};
use switchboard_runtime::store::{RunFilter, RunRow, StepRow, UsageRow};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Query;
use crate::app::AppState;
use crate::auth::AccountAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self as doc, built_once};

/// `/v1/runs…`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(read)).routes(routes!(cancel)).routes(routes!(retry))
}

/// `/v1/runs…`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

fn parse(s: &Option<String>) -> Value {
    s.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(Value::Null)
}

fn time(t: Option<i64>) -> Value {
    t.map(to_rfc3339).map(Value::String).unwrap_or(Value::Null)
}

/// The API shape of a run (without steps).
pub(crate) fn run_json(r: &RunRow) -> Value {
    let mut out = json!({
        "id": r.id,
        "workflow_id": r.workflow_id,
        "version": r.version,
        "status": r.status,
        "event": serde_json::from_str::<Value>(&r.event).unwrap_or_default(),
        "test": r.is_test == 1,
        "created_at": to_rfc3339(r.created_at),
        "started_at": time(r.started_at),
        "finished_at": time(r.finished_at),
    });
    if r.error.is_some() {
        out["error"] = parse(&r.error);
    }
    out
}

fn usage_json(u: &UsageRow) -> Value {
    json!({
        "seq": u.seq, "unit": u.unit, "quantity": u.quantity,
        "tokens_milli": u.tokens_milli, "cost_micros": u.cost_micros, "created_at": to_rfc3339(u.created_at),
    })
}

fn step_json(s: &StepRow, usage: &[UsageRow]) -> Value {
    let mut out = json!({
        "id": s.step_id,
        "seq": s.seq,
        "status": s.status.public(),
        "attempts": s.attempts,
        "started_at": time(s.started_at),
        "finished_at": time(s.finished_at),
        "due_at": time(s.due_at),
        "input": parse(&s.input),
        "output": s.public_output(),
        "usage": usage.iter().filter(|u| u.step_id.as_deref() == Some(&s.step_id) && u.id.starts_with(&format!("{}:{}:", s.run_id, s.seq))).map(usage_json).collect::<Vec<_>>(),
    });
    if s.error.is_some() {
        out["error"] = parse(&s.error);
    }
    out
}

/// `?workflow_id=&status=&cursor=&limit=`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunQuery {
    /// Only this workflow's runs.
    workflow_id: Option<String>,
    /// Only runs in this status (`queued`, `running`, `waiting`, `succeeded`, `failed`, `cancelled`).
    status: Option<String>,
    /// Where the previous page ended.
    cursor: Option<String>,
    /// Items a page (default 50, at most 200).
    limit: Option<i64>,
}

/// The account's runs, newest first
#[utoipa::path(
    get,
    path = "/v1/runs",
    tag = "runs",
    operation_id = "list_runs",
    security(("account_key" = [])),
    params(RunQuery),
    responses(
        (status = 200, description = "A page of runs (without steps)", body = doc::RunList),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn list(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<RunQuery>) -> ApiResult<Json<Value>> {
    let filter = RunFilter {
        workflow_id: q.workflow_id,
        status: q.status,
        cursor: q.cursor,
        limit: q.limit.unwrap_or(50).clamp(1, 200),
    };
    let page = state.engine.store().list_runs(&account.id, &filter).await?;
    let runs: Vec<Value> = page.items.iter().map(run_json).collect();
    Ok(Json(json!({ "runs": runs, "next_cursor": page.next_cursor })))
}

/// One run with its step timeline
///
/// Each step's status, attempts, times, input, output, error and usage.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}",
    tag = "runs",
    operation_id = "read_run",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The run")),
    responses(
        (status = 200, description = "The run", body = doc::RunDetail),
        (status = 404, description = "`not_found`: no such run in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn read(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(run_detail_json(&state, &account.id, &id).await?))
}

/// A run with its step timeline and usage (the documented run shape); 404 for another account's.
pub(crate) async fn run_detail_json(state: &AppState, account_id: &str, id: &str) -> ApiResult<Value> {
    let (run, steps, usage) = state.engine.store().run_detail(account_id, id).await?.ok_or_else(|| ApiError::not_found("run"))?;
    let mut timeline: Vec<Value> = steps.iter().map(|s| step_json(s, &usage)).collect();
    // The step the run is about to execute has no row until it finishes: show it as pending.
    if !run.status.is_final() && !steps.iter().any(|s| s.seq == run.step_seq)
        && let Ok(workflow) = state.engine.workflow(&run.workflow_id, run.version).await
            && let Some(step) = workflow.steps.get(run.step_index as usize) {
                timeline.push(json!({
                    "id": step.id, "seq": run.step_seq, "status": StepStatus::Pending, "attempts": 0, "started_at": null,
                    "finished_at": null, "due_at": null, "input": null, "output": null, "usage": [],
                }));
            }
    let mut out = run_json(&run);
    out["steps"] = json!(timeline);
    out["usage"] = json!(usage.iter().map(usage_json).collect::<Vec<_>>());
    Ok(out)
}

/// Cancels a run
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/cancel",
    tag = "runs",
    operation_id = "cancel_run",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The run")),
    responses(
        (status = 202, description = "Cancelled (`status: cancelled`)", body = doc::RunChange),
        (status = 404, description = "`not_found`: no such run in this account", body = doc::ErrorBody),
        (status = 409, description = "`run_finished`: the run has already finished", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn cancel(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<(StatusCode, Json<Value>)> {
    match state.engine.cancel_run(&account.id, &id).await? {
        None => Err(ApiError::not_found("run")),
        Some(false) => Err(ApiError::new(StatusCode::CONFLICT, "run_finished", "the run has already finished")),
        Some(true) => Ok((StatusCode::ACCEPTED, Json(json!({ "run_id": id, "status": RunStatus::Cancelled })))),
    }
}

/// Re-runs a failed run from its failed (or unknown-outcome) step
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/retry",
    tag = "runs",
    operation_id = "retry_run",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The run")),
    responses(
        (status = 202, description = "Queued again (`status: queued`)", body = doc::RunChange),
        (status = 404, description = "`not_found`: no such run in this account", body = doc::ErrorBody),
        (status = 409, description = "`run_not_failed`: only a failed run can be retried; or `quota_exceeded`: the plan's tokens are used up", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn retry(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<(StatusCode, Json<Value>)> {
    match state.engine.retry_run(&account.id, &id).await {
        Ok(None) => Err(ApiError::not_found("run")),
        Ok(Some(false)) => Err(ApiError::new(StatusCode::CONFLICT, "run_not_failed", "only a failed run can be retried")),
        Ok(Some(true)) => Ok((StatusCode::ACCEPTED, Json(json!({ "run_id": id, "status": RunStatus::Queued })))),
        Err(switchboard_runtime::Error::Conflict(message)) => Err(ApiError::new(StatusCode::CONFLICT, "quota_exceeded", message)),
        Err(e) => Err(e.into()),
    }
}
