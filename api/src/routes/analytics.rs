//! Call analytics, read only: the call history (JSON pages and CSV), a workflow's figures over a
//! window, and the dashboard of the account's day. Times in queries are RFC 3339 instants;
//! windows are `[from, to)`. "Today" is the local day in the account's timezone.
//!
//! Everything is scoped to the calling account: another account's calls are never listed, and
//! another account's workflow is `404 not_found`.

use axum::body::Body as ResponseBody;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::metering::PriceList;
use switchboard_runtime::store::{CallCursor, CallFilter, CallRecord, NodeVisits, StepCounts, WorkflowRuns, local_day_window};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{PageQuery, Query};
use crate::app::AppState;
use crate::auth::AccountAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self as doc, built_once};

/// Rows a CSV export reads per query.
const EXPORT_PAGE: i64 = 5_000;

/// The most rows a CSV export holds (the newest; narrow `from`/`to` for older ones).
pub const EXPORT_MAX_ROWS: i64 = 100_000;

/// The CSV export's columns, in order: the fields of [`Call`].
pub const CSV_COLUMNS: [&str; 14] = [
    "call_sid",
    "direction",
    "from",
    "to",
    "status",
    "answered_by",
    "duration_s",
    "billable_minutes",
    "cost_micros",
    "workflow_id",
    "run_id",
    "step_id",
    "recording_url",
    "started_at",
];

/// `/v1/calls…`, `/v1/workflows/{id}/stats`, `/v1/dashboard`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_calls)).routes(routes!(export_calls)).routes(routes!(workflow_stats)).routes(routes!(dashboard))
}

/// `/v1/calls…`, `/v1/workflows/{id}/stats`, `/v1/dashboard`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

// ---- Queries ---------------------------------------------------------------------------------

/// A call's status: `dialing` until Twilio takes the call, then Twilio's call status; `refused`
/// when Twilio refused to place it.
// The store keeps the text, so answers carry the text (`Call::status`) and this enum only names
// the values in the document (and checks the `status` filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = CallStatus)]
#[serde(rename_all = "kebab-case")]
pub enum CallStatusDoc {
    /// Recorded, the request to Twilio not answered yet.
    Dialing,
    /// Twilio took it.
    Queued,
    /// Twilio started dialing.
    Initiated,
    /// The phone rings.
    Ringing,
    /// Answered, under way.
    InProgress,
    /// Answered and over: the only status that bills minutes.
    Completed,
    /// The line was busy.
    Busy,
    /// Nobody answered within the ring timeout.
    NoAnswer,
    /// Twilio could not place it.
    Failed,
    /// Cancelled before it was answered.
    Canceled,
    /// Twilio refused the request to place it (the step failed); never dialed.
    Refused,
}

impl CallStatusDoc {
    /// Every status.
    pub const ALL: [CallStatusDoc; 11] = [
        Self::Dialing,
        Self::Queued,
        Self::Initiated,
        Self::Ringing,
        Self::InProgress,
        Self::Completed,
        Self::Busy,
        Self::NoAnswer,
        Self::Failed,
        Self::Canceled,
        Self::Refused,
    ];

    /// Its text, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dialing => "dialing",
            Self::Queued => "queued",
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::NoAnswer => "no-answer",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Refused => "refused",
        }
    }
}

/// A call's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = CallDirection)]
#[serde(rename_all = "snake_case")]
pub enum CallDirectionDoc {
    /// Placed by a `voice.call` step.
    Outbound,
    /// Received on one of the account's numbers.
    Inbound,
}

/// `?from=&to=&workflow_id=&status=&number=&direction=`: which calls. An empty value filters
/// nothing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CallQuery {
    /// Calls placed at or after this instant (RFC 3339, e.g. `2026-12-01T00:00:00Z`; write a
    /// `+` of an offset as `%2B`).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Calls placed before this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// Only calls of this workflow's runs.
    workflow_id: Option<String>,
    /// Only calls in this status.
    #[param(value_type = Option<CallStatusDoc>, inline)]
    status: Option<String>,
    /// Only calls from or to this number (E.164, e.g. `%2B15552223333`; an unencoded `+`, which
    /// arrives as a space, is taken as `+`).
    number: Option<String>,
    /// Only calls in this direction.
    #[param(value_type = Option<CallDirectionDoc>, inline)]
    direction: Option<String>,
}

/// `?from=&to=` of a workflow's figures.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct WindowQuery {
    /// Runs started at or after this instant (RFC 3339); all time when absent.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Runs started before this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
}

/// A query value, `None` when absent or blank.
fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// An RFC 3339 instant (ms), or `None` when absent. A `+` of the offset sent unencoded arrives
/// as a space: read as the `+` it was.
fn instant(name: &str, value: Option<String>) -> ApiResult<Option<i64>> {
    let Some(text) = present(value) else { return Ok(None) };
    let text = text.trim();
    let parsed = chrono::DateTime::parse_from_rfc3339(text).ok().or_else(|| {
        let at = text.len().checked_sub(6)?;
        (text.as_bytes()[at] == b' ').then(|| format!("{}+{}", &text[..at], &text[at + 1..])).and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
    });
    match parsed {
        Some(t) => Ok(Some(t.timestamp_millis())),
        None => Err(ApiError::bad_request(format!("{name} must be an RFC 3339 date-time like 2026-12-01T00:00:00Z, not '{text}'"))),
    }
}

/// `from` and `to` as instants, `from` before `to`.
fn window(from: Option<String>, to: Option<String>) -> ApiResult<(Option<i64>, Option<i64>)> {
    let (from, to) = (instant("from", from)?, instant("to", to)?);
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    Ok((from, to))
}

impl CallQuery {
    /// The store's filter, each value checked.
    fn filter(self) -> ApiResult<CallFilter> {
        let (from, to) = window(self.from, self.to)?;
        let status = present(self.status);
        if let Some(s) = &status
            && !CallStatusDoc::ALL.iter().any(|known| known.as_str() == s)
        {
            let known: Vec<&str> = CallStatusDoc::ALL.iter().map(|k| k.as_str()).collect();
            return Err(ApiError::bad_request(format!("status must be one of {}, not '{s}'", known.join(", "))));
        }
        let direction = present(self.direction);
        if let Some(d) = &direction
            && d != "inbound"
            && d != "outbound"
        {
            return Err(ApiError::bad_request(format!("direction must be inbound or outbound, not '{d}'")));
        }
        let number = present(self.number).map(|n| match n.strip_prefix(' ') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => format!("+{}", rest.trim_end()),
            _ => n.trim().to_string(),
        });
        Ok(CallFilter { from, to, workflow_id: present(self.workflow_id), status, number, direction })
    }
}

// ---- Calls -----------------------------------------------------------------------------------

/// The account's calls, newest first
///
/// Every call a `voice.call` step placed, also the ones Twilio refused to place
/// (`status: refused`) and the ones still live. `billable_minutes` are the started minutes of a
/// `completed` call; `cost_micros` prices them at the tier's current price per minute.
#[utoipa::path(
    get,
    path = "/v1/calls",
    tag = "analytics",
    operation_id = "list_calls",
    security(("account_key" = [])),
    params(CallQuery, PageQuery),
    responses(
        (status = 200, description = "A page of calls", body = CallList),
        (status = 400, description = "`bad_request`: a filter that does not parse (a date-time, a status, a direction), a cursor this API did not give, or a query string that does not parse", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn list_calls(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    Query(q): Query<CallQuery>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<CallList>> {
    let filter = q.filter()?;
    let cursor = match present(page.cursor.clone()) {
        None => None,
        Some(text) => Some(CallCursor::decode(&text).ok_or_else(|| ApiError::bad_request(format!("cursor '{text}' is not one this API gave")))?),
    };
    let limit = page.limit();
    let mut rows = state.engine.store().list_calls(&account.id, &filter, cursor.as_ref(), limit + 1).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.cursor().encode())
    } else {
        None
    };
    let prices = &state.engine.config().prices;
    Ok(Json(CallList { calls: rows.iter().map(|r| Call::new(r, prices)).collect(), next_cursor }))
}

/// The account's calls as CSV
///
/// The calls `GET /v1/calls` lists with the same filters, every page, newest first, at most
/// 100,000 rows (narrow `from`/`to` for more). A header line, then one line per call with the
/// fields of a listed call in order:
/// `call_sid,direction,from,to,status,answered_by,duration_s,billable_minutes,cost_micros,workflow_id,run_id,step_id,recording_url,started_at`;
/// a `null` is an empty field.
#[utoipa::path(
    get,
    path = "/v1/calls/export.csv",
    tag = "analytics",
    operation_id = "export_calls_csv",
    security(("account_key" = [])),
    params(CallQuery),
    responses(
        (status = 200, description = "CSV with a header line", content_type = "text/csv; charset=utf-8", body = String),
        (status = 400, description = "`bad_request`: a filter that does not parse (a date-time, a status, a direction)", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn export_calls(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<CallQuery>) -> ApiResult<Response> {
    let filter = q.filter()?;
    let header_line = csv_bytes(|w| w.write_record(CSV_COLUMNS)).expect("CSV written to memory");
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(header_line) });
    // (where the last page ended, rows written so far); `None` once done.
    let pages = futures::stream::unfold(Some((None::<CallCursor>, 0i64)), move |progress| {
        let (state, filter, account_id) = (state.clone(), filter.clone(), account.id.clone());
        async move {
            let (cursor, written) = progress?;
            let want = EXPORT_PAGE.min(EXPORT_MAX_ROWS - written);
            if want <= 0 {
                return None;
            }
            match state.engine.store().list_calls(&account_id, &filter, cursor.as_ref(), want).await {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let prices = &state.engine.config().prices;
                    let text = csv_bytes(|w| rows.iter().try_for_each(|r| w.serialize(Call::new(r, prices))));
                    let more = (rows.len() as i64 == want).then(|| (rows.last().map(CallRecord::cursor), written + want));
                    match text {
                        Ok(text) => Some((Ok(text), more)),
                        Err(e) => {
                            tracing::error!(error = %e, "call export could not write CSV");
                            Some((Err(std::io::Error::other("call export failed")), None))
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "call export failed mid-stream");
                    Some((Err(std::io::Error::other("call export failed")), None))
                }
            }
        }
    });
    let body = ResponseBody::from_stream(futures::StreamExt::chain(first, pages));
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
}

/// CSV written by `write` (no header of its own), as bytes.
fn csv_bytes(write: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> csv::Result<()>) -> csv::Result<Vec<u8>> {
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    write(&mut writer)?;
    writer.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

// ---- Workflow stats --------------------------------------------------------------------------

/// A workflow's figures
///
/// Over the workflow's runs started in the window (all time without one); test runs are left
/// out. `success_rate` is `succeeded / (succeeded + failed)`, `null` while none of them ended so;
/// `avg_duration_ms` is the mean run time of the ended runs. `steps` counts each step's
/// executions (every step of the current definition, in its order, then steps only older
/// versions had); `nodes` counts the nodes of voice scripts its calls ran, every visit (a
/// re-prompted menu counts each time): where callers drop off.
#[utoipa::path(
    get,
    path = "/v1/workflows/{id}/stats",
    tag = "analytics",
    operation_id = "workflow_stats",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The workflow"), WindowQuery),
    responses(
        (status = 200, description = "The workflow's figures", body = WorkflowStats),
        (status = 400, description = "`bad_request`: a date-time that does not parse, or `from` after `to`", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such workflow in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn workflow_stats(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    Path(id): Path<String>,
    Query(q): Query<WindowQuery>,
) -> ApiResult<Json<WorkflowStats>> {
    let (from, to) = window(q.from, q.to)?;
    let workflow = state.engine.store().workflow(&account.id, &id).await?.ok_or_else(|| ApiError::not_found("workflow"))?;
    let counts = state.engine.store().workflow_counts(&account.id, &workflow.id, from, to).await?;
    // The current definition's steps, in order, then any others (from older versions) by id.
    let order: Vec<String> = match state.engine.workflow(&workflow.id, workflow.version).await {
        Ok(w) => w.steps.iter().map(|s| s.id.clone()).collect(),
        Err(e) => {
            tracing::warn!(error = %e, workflow_id = %workflow.id, "stats: the workflow's definition did not load; steps by id");
            Vec::new()
        }
    };
    let mut steps: Vec<StepStats> =
        order.iter().map(|id| counts.steps.iter().find(|s| &s.step_id == id).map(StepStats::from).unwrap_or_else(|| StepStats::unrun(id))).collect();
    steps.extend(counts.steps.iter().filter(|s| !order.contains(&s.step_id)).map(StepStats::from));
    let position = |step_id: &str| order.iter().position(|s| s == step_id).unwrap_or(order.len());
    let mut nodes: Vec<NodeStat> = counts.nodes.iter().map(NodeStat::from).collect();
    nodes.sort_by_key(|n| position(&n.step_id)); // stable: the store's order within a step
    let runs = &counts.runs;
    let ended = runs.succeeded + runs.failed;
    Ok(Json(WorkflowStats {
        runs: RunStats { total: runs.total, succeeded: runs.succeeded, failed: runs.failed, cancelled: runs.cancelled, active: runs.active },
        success_rate: (ended > 0).then(|| runs.succeeded as f64 / ended as f64),
        avg_duration_ms: runs.avg_duration_ms,
        steps,
        nodes,
    }))
}

// ---- Dashboard -------------------------------------------------------------------------------

/// The account's day at a glance
///
/// "Today" is the local day in the account's timezone, from midnight to midnight.
/// `active_calls`: calls without a final status (placed within the last 5 hours: none lasts
/// longer). `calls_today`: calls placed today, whatever their status. `avg_call_duration_s`: the
/// mean duration of today's `completed` calls. `success_rate_today`: `succeeded / (succeeded +
/// failed)` of the runs started today. `runs_active`: runs queued, running or waiting, whenever
/// they started. `top_workflows`: the five workflows with the most runs started today. Test runs
/// are left out.
#[utoipa::path(
    get,
    path = "/v1/dashboard",
    tag = "analytics",
    operation_id = "dashboard",
    security(("account_key" = [])),
    responses(
        (status = 200, description = "Today's figures", body = Dashboard),
        doc::Unauthorized,
    ),
)]
async fn dashboard(State(state): State<AppState>, AccountAuth(account): AccountAuth) -> ApiResult<Json<Dashboard>> {
    let now = state.engine.clock().now();
    let (from, to) = local_day_window(now, &account.timezone);
    let day = state.engine.store().day_counts(&account.id, from, to, now).await?;
    let ended = day.succeeded + day.failed;
    Ok(Json(Dashboard {
        active_calls: day.active_calls,
        calls_today: day.calls,
        avg_call_duration_s: (day.completed_calls > 0).then(|| day.completed_seconds as f64 / day.completed_calls as f64),
        success_rate_today: (ended > 0).then(|| day.succeeded as f64 / ended as f64),
        runs_active: day.runs_active,
        top_workflows: day.top_workflows.iter().map(TopWorkflow::from).collect(),
    }))
}

// ---- Answers ---------------------------------------------------------------------------------

/// A page of calls, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallList {
    /// The calls.
    pub calls: Vec<Call>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A call. The CSV export has these fields as its columns, in this order.
#[derive(Debug, Serialize, ToSchema)]
pub struct Call {
    /// Twilio's `CallSid`; `null` while dialing, and for a call Twilio refused.
    #[schema(required = true)]
    pub call_sid: Option<String>,
    /// `outbound` (placed by a `voice.call` step) or `inbound`.
    #[schema(value_type = CallDirectionDoc)]
    pub direction: String,
    /// The caller's number.
    pub from: String,
    /// The called number.
    pub to: String,
    /// The latest status.
    #[schema(value_type = CallStatusDoc)]
    pub status: String,
    /// Twilio's `AnsweredBy` (`human`, `machine_start`, …) when machine detection ran, else `null`.
    #[schema(required = true)]
    pub answered_by: Option<String>,
    /// The call's duration in seconds, as Twilio reported it with the final status; `null` while live.
    #[schema(required = true)]
    pub duration_s: Option<i64>,
    /// Started minutes of a `completed` call; 0 otherwise.
    pub billable_minutes: i64,
    /// `billable_minutes` at the tier's price per minute (`voice_minute_standard` or
    /// `voice_minute_premium`), in millionths of a dollar; 0 unless completed.
    pub cost_micros: i64,
    /// The workflow of the run that placed it.
    #[schema(required = true)]
    pub workflow_id: Option<String>,
    /// The run that placed it.
    pub run_id: String,
    /// The `voice.call` step that placed it.
    pub step_id: String,
    /// The recording of the whole call, when one was asked for.
    #[schema(required = true)]
    pub recording_url: Option<String>,
    /// When it was placed, RFC 3339.
    #[schema(format = DateTime)]
    pub started_at: String,
}

impl Call {
    /// A stored call, its minutes priced at `prices`.
    fn new(r: &CallRecord, prices: &PriceList) -> Self {
        Call {
            call_sid: r.call_sid.clone().filter(|s| !s.is_empty()),
            direction: r.direction.clone(),
            from: r.from_number.clone(),
            to: r.to_number.clone(),
            status: r.status.clone(),
            answered_by: r.answered_by.clone(),
            duration_s: r.duration_s,
            billable_minutes: r.billable_minutes(),
            cost_micros: r.cost_micros(prices),
            workflow_id: r.workflow_id.clone(),
            run_id: r.run_id.clone(),
            step_id: r.step_id.clone(),
            recording_url: r.recording_url.clone(),
            started_at: to_rfc3339(r.created_at),
        }
    }
}

/// A workflow's figures over a window.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowStats {
    /// Its runs started in the window, by status.
    pub runs: RunStats,
    /// `succeeded / (succeeded + failed)`, from 0 to 1; `null` when neither.
    #[schema(required = true)]
    pub success_rate: Option<f64>,
    /// The mean time from start to end of the ended runs (succeeded, failed or cancelled), in
    /// milliseconds; `null` when none ended.
    #[schema(required = true)]
    pub avg_duration_ms: Option<i64>,
    /// Each step's executions.
    pub steps: Vec<StepStats>,
    /// Visits of each voice-script node, by step (in the definition's order), most visited first.
    pub nodes: Vec<NodeStat>,
}

/// Runs by status.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunStats {
    /// Every run.
    pub total: i64,
    /// Ended well.
    pub succeeded: i64,
    /// Ended with an error.
    pub failed: i64,
    /// Cancelled by a person.
    pub cancelled: i64,
    /// Queued, running or waiting.
    pub active: i64,
}

/// One step's executions in the window's runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepStats {
    /// The step's id.
    pub id: String,
    /// Its executions (a step run twice in one run counts twice).
    pub runs: i64,
    /// Executions that succeeded.
    pub succeeded: i64,
    /// Executions that failed (also those whose outcome is unknown).
    pub failed: i64,
    /// Their mean time from start to end, in milliseconds, over those that succeeded or failed;
    /// `null` when none did.
    #[schema(required = true)]
    pub avg_ms: Option<i64>,
}

impl StepStats {
    /// A step of the definition that no run of the window reached.
    fn unrun(id: &str) -> Self {
        StepStats { id: id.to_string(), runs: 0, succeeded: 0, failed: 0, avg_ms: None }
    }
}

impl From<&StepCounts> for StepStats {
    fn from(s: &StepCounts) -> Self {
        StepStats { id: s.step_id.clone(), runs: s.executions, succeeded: s.succeeded, failed: s.failed, avg_ms: s.avg_ms }
    }
}

/// How often the window's calls ran one node of a voice script.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeStat {
    /// The `voice.call` step.
    pub step_id: String,
    /// The node's `id`, or `#<index>` for a node without one (as in a call's `path`).
    pub node_id: String,
    /// Every time a call ran it.
    pub visits: i64,
}

impl From<&NodeVisits> for NodeStat {
    fn from(n: &NodeVisits) -> Self {
        NodeStat { step_id: n.step_id.clone(), node_id: n.node_id.clone(), visits: n.visits }
    }
}

/// The account's day.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dashboard {
    /// Calls under way: no final status yet.
    pub active_calls: i64,
    /// Calls placed today.
    pub calls_today: i64,
    /// The mean duration of today's completed calls, in seconds; `null` when none.
    #[schema(required = true)]
    pub avg_call_duration_s: Option<f64>,
    /// `succeeded / (succeeded + failed)` of the runs started today, from 0 to 1; `null` when neither.
    #[schema(required = true)]
    pub success_rate_today: Option<f64>,
    /// Runs queued, running or waiting.
    pub runs_active: i64,
    /// The workflows with the most runs started today (at most five), most first.
    pub top_workflows: Vec<TopWorkflow>,
}

/// A workflow's runs today.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopWorkflow {
    /// The workflow.
    pub workflow_id: String,
    /// Its name (also a deleted workflow's).
    #[schema(required = true)]
    pub name: Option<String>,
    /// Runs started today.
    pub runs: i64,
}

impl From<&WorkflowRuns> for TopWorkflow {
    fn from(w: &WorkflowRuns) -> Self {
        TopWorkflow { workflow_id: w.workflow_id.clone(), name: w.name.clone(), runs: w.runs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSV header is the field list of a call, in the order the rows are written.
    #[test]
    fn csv_columns_are_the_fields_of_a_call() {
        let call = Call {
            call_sid: None,
            direction: "outbound".into(),
            from: "+15550001111".into(),
            to: "+15552223333".into(),
            status: "completed".into(),
            answered_by: None,
            duration_s: Some(75),
            billable_minutes: 2,
            cost_micros: 160_000,
            workflow_id: Some("w".into()),
            run_id: "r".into(),
            step_id: "phone".into(),
            recording_url: None,
            started_at: "2026-12-04T10:00:00.000Z".into(),
        };
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.serialize(&call).unwrap();
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        assert_eq!(text.lines().next().unwrap(), CSV_COLUMNS.join(","));
        let header = String::from_utf8(csv_bytes(|w| w.write_record(CSV_COLUMNS)).unwrap()).unwrap();
        assert_eq!(header.trim_end(), CSV_COLUMNS.join(","));
    }

    #[test]
    fn instants_are_rfc3339_with_a_forgiven_unencoded_plus() {
        assert_eq!(instant("from", Some("2026-12-04T10:00:00Z".into())).unwrap(), Some(1_796_378_400_000));
        assert_eq!(instant("from", Some("2026-12-04T11:00:00+01:00".into())).unwrap(), Some(1_796_378_400_000));
        assert_eq!(instant("from", Some("2026-12-04T11:00:00 01:00".into())).unwrap(), Some(1_796_378_400_000));
        assert_eq!(instant("from", Some("".into())).unwrap(), None);
        assert_eq!(instant("from", None).unwrap(), None);
        for bad in ["yesterday", "2026-12-04", "2026-12-04T10:00:00", "1796378400000"] {
            let e = instant("from", Some(bad.into())).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(e.message.contains(bad), "{}", e.message);
        }
    }

    #[test]
    fn call_filters_are_checked() {
        let query = |status: Option<&str>, direction: Option<&str>, number: Option<&str>| CallQuery {
            from: None,
            to: None,
            workflow_id: None,
            status: status.map(String::from),
            number: number.map(String::from),
            direction: direction.map(String::from),
        };
        let f = query(Some("no-answer"), Some("outbound"), Some(" 15552223333")).filter().unwrap();
        assert_eq!((f.status.as_deref(), f.direction.as_deref(), f.number.as_deref()), (Some("no-answer"), Some("outbound"), Some("+15552223333")));
        assert_eq!(query(None, None, Some("+15552223333")).filter().unwrap().number.as_deref(), Some("+15552223333"));
        assert!(query(Some("answered"), None, None).filter().unwrap_err().message.contains("status must be one of"));
        assert!(query(None, Some("outbound-api"), None).filter().unwrap_err().message.contains("direction must be inbound or outbound"));
        let backwards = CallQuery { from: Some("2026-12-05T00:00:00Z".into()), to: Some("2026-12-04T00:00:00Z".into()), ..query(None, None, None) };
        assert!(backwards.filter().unwrap_err().message.contains("from must not be after to"));
    }

    #[test]
    fn documented_call_statuses_serialise_as_their_text() {
        for s in CallStatusDoc::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for fin in switchboard_actions::voice::call::FINAL_STATUSES {
            assert!(CallStatusDoc::ALL.iter().any(|s| s.as_str() == fin), "{fin} is not documented");
        }
    }
}
