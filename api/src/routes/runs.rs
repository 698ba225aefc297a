//! Runs: list, read with the step timeline, cancel, retry.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::status::RunStatus;
use switchboard_runtime::store::{RunFilter, RunRow, StepRow, UsageRow};
use utoipa::{IntoParams, ToSchema};
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

// ---- Answers ---------------------------------------------------------------------------------

/// The documented values of a run's `status`. The store keeps statuses as text, so answers
/// carry the text ([`Run::status`]) and this enum only names the values in the document; the
/// e2e test `openapi` checks real answers against it.
#[derive(Serialize, ToSchema)]
#[schema(as = RunStatus)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code, reason = "a schema only: statuses are text in the store")]
enum RunStatusDoc {
    /// Waiting for a worker.
    Queued,
    /// A step is running.
    Running,
    /// A step waits (delay, retry backoff, `wait_for`, rate limit).
    Waiting,
    /// Every step has finished.
    Succeeded,
    /// A step failed for good.
    Failed,
    /// Cancelled by a person.
    Cancelled,
}

/// The documented values of a step's `status` (text in the store, like [`RunStatusDoc`]).
#[derive(Serialize, ToSchema)]
#[schema(as = StepStatus)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code, reason = "a schema only: statuses are text in the store")]
enum StepStatusDoc {
    /// Not started, or due again (retry).
    Pending,
    /// Running now.
    Running,
    /// Waiting for its due time or an event.
    Waiting,
    /// Done.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Cancelled with its run.
    Cancelled,
    /// Interrupted while sending with an at-most-once action: it may or may not have been sent.
    OutcomeUnknown,
    /// Not sent on purpose: the recipient opted out (`output.skipped` is `opted_out`); the run
    /// went on.
    Skipped,
}

/// A run (without its steps).
#[derive(Debug, Serialize, ToSchema)]
pub struct Run {
    /// Its id.
    pub id: String,
    /// Its workflow.
    pub workflow_id: String,
    /// The workflow version it runs.
    pub version: i64,
    /// Where it is.
    #[schema(value_type = RunStatusDoc)]
    pub status: String,
    /// The event that started it, as `event` in expressions: any JSON, as sent (a webhook's or
    /// a manual start's body may be an array, a string or `null`).
    pub event: Value,
    /// Whether it is a test run (sandbox transports, waits fast-forwarded, not billed).
    pub test: bool,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339; `null` until it starts.
    #[schema(required = true, format = DateTime)]
    pub started_at: Option<String>,
    /// RFC 3339; `null` until it finishes.
    #[schema(required = true, format = DateTime)]
    pub finished_at: Option<String>,
    /// Why it failed (the failed step's failure); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<Failure>,
    /// A `for_each` child's parent run; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub parent_run_id: Option<String>,
    /// A `for_each` child's position in its parent's list (from 0); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub item_index: Option<i64>,
}

impl From<&RunRow> for Run {
    fn from(r: &RunRow) -> Self {
        Run {
            id: r.id.clone(),
            workflow_id: r.workflow_id.clone(),
            version: r.version,
            status: r.status.as_str().to_string(),
            event: serde_json::from_str(&r.event).unwrap_or_default(),
            test: r.is_test == 1,
            created_at: to_rfc3339(r.created_at),
            started_at: r.started_at.map(to_rfc3339),
            finished_at: r.finished_at.map(to_rfc3339),
            error: Failure::parse(r.error.as_deref()),
            parent_run_id: r.parent_run_id.clone(),
            item_index: r.item_index,
        }
    }
}

/// A page of runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// The runs.
    pub runs: Vec<Run>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A run with its step timeline and usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: Run,
    /// Each step execution in order (a step run twice, e.g. in a loop, appears twice); the step
    /// about to run shows as `pending`.
    pub steps: Vec<Step>,
    /// Every ledger row of the run.
    pub usage: Vec<StepUsage>,
}

/// One step execution in a run's timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct Step {
    /// The step's id in the workflow.
    pub id: String,
    /// Its position in the timeline.
    pub seq: i64,
    /// Where it is.
    #[schema(value_type = StepStatusDoc)]
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// RFC 3339, or `null`.
    #[schema(required = true, format = DateTime)]
    pub started_at: Option<String>,
    /// RFC 3339, or `null`.
    #[schema(required = true, format = DateTime)]
    pub finished_at: Option<String>,
    /// When it is due again (waiting or retrying), RFC 3339, or `null`.
    #[schema(required = true, format = DateTime)]
    pub due_at: Option<String>,
    /// Its rendered input, or `null`.
    #[schema(required = true)]
    pub input: Value,
    /// Its output, or `null`.
    #[schema(required = true)]
    pub output: Value,
    /// Why its last attempt failed (also while it waits to retry); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<Failure>,
    /// This execution's ledger rows.
    pub usage: Vec<StepUsage>,
    /// What the contact rules did to it, when they did something: `{quiet_hours: "deferred",
    /// until, timezone}` (it waited for the end of the recipient's quiet hours; in a test run,
    /// `fast_forwarded: true`) or `{quiet_hours: "ignored", timezone, would_wait_until}` (the
    /// step says `contact_rules: ignore`). An opted-out recipient shows as `status: skipped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub contact_rules: Option<Value>,
}

impl Step {
    /// A stored step execution with its own rows of the run's ledger.
    fn from_row(s: &StepRow, usage: &[UsageRow]) -> Self {
        let prefix = format!("{}:{}:", s.run_id, s.seq);
        let json = |text: &Option<String>| text.as_deref().and_then(|t| serde_json::from_str(t).ok()).unwrap_or(Value::Null);
        Step {
            id: s.step_id.clone(),
            seq: s.seq,
            status: s.status.public().to_string(),
            attempts: s.attempts,
            started_at: s.started_at.map(to_rfc3339),
            finished_at: s.finished_at.map(to_rfc3339),
            due_at: s.due_at.map(to_rfc3339),
            input: json(&s.input),
            output: s.public_output(),
            error: Failure::parse(s.error.as_deref()),
            usage: usage.iter().filter(|u| u.step_id.as_deref() == Some(&s.step_id) && u.id.starts_with(&prefix)).map(StepUsage::from).collect(),
            contact_rules: None,
        }
    }

    /// The step a run is about to execute, which has no row until it finishes.
    fn pending(id: &str, seq: i64) -> Self {
        Step {
            id: id.to_string(),
            seq,
            status: "pending".into(),
            attempts: 0,
            started_at: None,
            finished_at: None,
            due_at: None,
            input: Value::Null,
            output: Value::Null,
            error: None,
            usage: Vec::new(),
            contact_rules: None,
        }
    }
}

/// How a failure steers the runtime (`action::FailureClass`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Will fail again: the step failed at once.
    Permanent,
    /// May succeed later: retried with backoff while attempts are left.
    Retryable,
    /// The request may have reached the vendor: not resent (a person may retry the run).
    OutcomeUnknown,
}

/// The stored failure of a step or run: `action::ActionError` with the step it happened in.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Failure {
    /// A stable snake_case code, e.g. `http_status`, `timeout`, `quota_exceeded`.
    #[schema(example = "http_status")]
    pub code: String,
    /// For a person, from the vendor where there is one.
    pub message: String,
    /// Retryable, permanent or outcome unknown.
    pub class: FailureClass,
    /// The vendor's `Retry-After`, in milliseconds, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub retry_after_ms: Option<u64>,
    /// The step that failed (`?` when the run's definition no longer compiles); absent when the
    /// run was refused before its first step (`quota_exceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub step_id: Option<String>,
}

impl Failure {
    /// A stored failure envelope. One that does not read as a failure is logged and left out
    /// (the runtime writes every one from `ActionError`, so that is a bug, not a user's input).
    fn parse(stored: Option<&str>) -> Option<Self> {
        let stored = stored?;
        serde_json::from_str(stored).inspect_err(|e| tracing::error!(error = %e, stored, "a stored failure does not read as a failure envelope")).ok()
    }
}

/// A ledger row as a run shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepUsage {
    /// The ledger's monotonic sequence number; `null` until the ledger is sequenced.
    #[schema(required = true)]
    pub seq: Option<i64>,
    /// What was used, e.g. `workflow_run`, `sms_segment`, `email`.
    pub unit: String,
    /// How many.
    pub quantity: i64,
    /// Tokens charged, in thousandths.
    pub tokens_milli: i64,
    /// Vendor cost, in millionths of a dollar.
    pub cost_micros: i64,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&UsageRow> for StepUsage {
    fn from(u: &UsageRow) -> Self {
        StepUsage {
            seq: u.seq,
            unit: u.unit.clone(),
            quantity: u.quantity,
            tokens_milli: u.tokens_milli,
            cost_micros: u.cost_micros,
            created_at: to_rfc3339(u.created_at),
        }
    }
}

/// A cancel or retry, accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunChange {
    /// The run.
    pub run_id: String,
    /// `cancelled` after a cancel, `queued` after a retry.
    #[schema(example = "queued")]
    pub status: String,
}

/// `?workflow_id=&status=&parent_run_id=&cursor=&limit=`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunQuery {
    /// Only this workflow's runs.
    workflow_id: Option<String>,
    /// Only the `for_each` children of this run.
    parent_run_id: Option<String>,
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
        (status = 200, description = "A page of runs (without steps)", body = RunList),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn list(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<RunQuery>) -> ApiResult<Json<RunList>> {
    let filter =
        RunFilter { workflow_id: q.workflow_id, parent_run_id: q.parent_run_id, status: q.status, cursor: q.cursor, limit: super::page_limit(q.limit) };
    let page = state.engine.store().list_runs(&account.id, &filter).await?;
    Ok(Json(RunList { runs: page.items.iter().map(Run::from).collect(), next_cursor: page.next_cursor }))
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
        (status = 200, description = "The run", body = RunDetail),
        (status = 404, description = "`not_found`: no such run in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn read(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<Json<RunDetail>> {
    Ok(Json(run_detail(&state, &account.id, &id).await?))
}

/// A run with its step timeline and usage; 404 for another account's.
pub(crate) async fn run_detail(state: &AppState, account_id: &str, id: &str) -> ApiResult<RunDetail> {
    let (run, steps, usage) = state.engine.store().run_detail(account_id, id).await?.ok_or_else(|| ApiError::not_found("run"))?;
    let mut timeline: Vec<Step> = steps.iter().map(|s| Step::from_row(s, &usage)).collect();
    // What the contact rules did, by step execution (kept in the run's context by the engine).
    let context: Value = serde_json::from_str(&run.context).unwrap_or(Value::Null);
    for step in &mut timeline {
        if let Some(Value::Object(mut note)) = context.pointer(&format!("/contact/{}", step.seq)).cloned() {
            note.remove("attempt");
            step.contact_rules = Some(Value::Object(note));
        }
    }
    // The step the run is about to execute has no row until it finishes: show it as pending.
    if !run.status.is_final()
        && !steps.iter().any(|s| s.seq == run.step_seq)
        && let Ok(workflow) = state.engine.run_workflow(&run).await
        && let Some(step) = workflow.steps.get(run.step_index as usize)
    {
        timeline.push(Step::pending(&step.id, run.step_seq));
    }
    Ok(RunDetail { run: Run::from(&run), steps: timeline, usage: usage.iter().map(StepUsage::from).collect() })
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
        (status = 202, description = "Cancelled (`status: cancelled`)", body = RunChange),
        (status = 404, description = "`not_found`: no such run in this account", body = doc::ErrorBody),
        (status = 409, description = "`run_finished`: the run has already finished", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn cancel(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<(StatusCode, Json<RunChange>)> {
    match state.engine.cancel_run(&account.id, &id).await? {
        None => Err(ApiError::not_found("run")),
        Some(false) => Err(ApiError::new(StatusCode::CONFLICT, "run_finished", "the run has already finished")),
        Some(true) => Ok((StatusCode::ACCEPTED, Json(RunChange { run_id: id, status: RunStatus::Cancelled.as_str().into() }))),
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
        (status = 202, description = "Queued again (`status: queued`)", body = RunChange),
        (status = 404, description = "`not_found`: no such run in this account", body = doc::ErrorBody),
        (status = 409, description = "`run_not_failed`: only a failed run can be retried; or `quota_exceeded`: the plan's tokens are used up", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn retry(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<(StatusCode, Json<RunChange>)> {
    match state.engine.retry_run(&account.id, &id).await {
        Ok(None) => Err(ApiError::not_found("run")),
        Ok(Some(false)) => Err(ApiError::new(StatusCode::CONFLICT, "run_not_failed", "only a failed run can be retried")),
        Ok(Some(true)) => Ok((StatusCode::ACCEPTED, Json(RunChange { run_id: id, status: RunStatus::Queued.as_str().into() }))),
        Err(switchboard_runtime::Error::Conflict(message)) => Err(ApiError::new(StatusCode::CONFLICT, "quota_exceeded", message)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use switchboard_runtime::status::StepStatus;

    use super::*;

    /// The documented status values are exactly the ones the runtime shows: a status added to
    /// the enums without its documentation (or the reverse) fails here.
    #[test]
    fn documented_statuses_are_the_runtime_ones() {
        let documented = |schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>| -> BTreeSet<String> {
            let value = serde_json::to_value(schema).unwrap();
            value["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
        };
        let runs: BTreeSet<String> = RunStatus::ALL.iter().map(|s| s.as_str().to_string()).collect();
        assert_eq!(documented(<RunStatusDoc as utoipa::PartialSchema>::schema()), runs);
        let steps: BTreeSet<String> = StepStatus::ALL.iter().map(|s| s.public().as_str().to_string()).collect();
        assert_eq!(documented(<StepStatusDoc as utoipa::PartialSchema>::schema()), steps);
    }
}
