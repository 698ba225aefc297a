//! Phone numbers: an account's Twilio numbers bound to the workflows that answer them
//! (`trigger: {call: {}}`, first step `voice.answer`), and calls without a phone
//! (`POST /v1/numbers/{id}/simulate`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::definition::{Problem, Trigger};
use switchboard_runtime::engine::new_id;
use switchboard_runtime::store::NumberRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{JsonBody, PageQuery, Query};
use crate::app::AppState;
use crate::auth::AccountAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self as doc, built_once};

/// `/v1/numbers…`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(update, remove)).routes(routes!(simulate))
}

/// `/v1/numbers…`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

/// A number to bind (`POST /v1/numbers`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewNumber {
    /// The Twilio number, E.164 (e.g. `+15550001111`).
    number: String,
    /// The name of the account's Twilio connection the number belongs to.
    connection: String,
    /// The workflow that answers it: its trigger is `call: {}`.
    workflow_id: String,
}

/// Another workflow for a number (`PUT /v1/numbers/{id}`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NumberUpdate {
    /// The workflow that answers it from now on.
    workflow_id: String,
}

/// A bound number.
#[derive(Debug, Serialize, ToSchema)]
pub struct Number {
    /// Its id.
    pub id: String,
    /// The number, E.164.
    pub number: String,
    /// The Twilio connection's name.
    pub connection: String,
    /// The workflow that answers it.
    pub workflow_id: String,
    /// Set this as the number's voice webhook ("A call comes in", HTTP POST) in Twilio.
    pub voice_url: String,
    /// Set this as the number's status callback ("Call status changes") in Twilio, so the
    /// `voice.answer` step learns at once that the call ended.
    pub status_url: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A page of numbers.
#[derive(Debug, Serialize, ToSchema)]
pub struct NumberList {
    /// The numbers.
    pub numbers: Vec<Number>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A call without a phone (`POST /v1/numbers/{id}/simulate`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SimulateRequest {
    /// The caller, E.164.
    from: String,
    /// What the caller gives, by node id: `{digits}` or `{speech}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    inputs: Map<String, Value>,
    /// How long the simulated call lasts, seconds (60).
    #[serde(default)]
    duration_s: Option<i64>,
}

/// A simulated call's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SimulatedCall {
    /// The test run it made (not billed; its later steps ran too, fast-forwarded).
    pub run_id: String,
    /// The script's nodes run, in order.
    #[schema(value_type = Vec<String>)]
    pub path: Value,
    /// Every TwiML document the caller would have received, in order.
    #[schema(value_type = Vec<String>)]
    pub twiml: Value,
    /// `{status, duration_s, billable_minutes, path, inputs}`.
    #[schema(value_type = Object)]
    pub outcome: Value,
    /// The run's status once driven (`succeeded`, `failed`, or `waiting` if it took too long).
    pub run_status: String,
}

async fn view(state: &AppState, n: &NumberRow) -> ApiResult<Number> {
    let connection = state.engine.store().connection(&n.account_id, &n.connection_id).await?.map(|c| c.name).unwrap_or_default();
    let voice_url = format!("{}/callbacks/twilio/{}/voice", state.public_url, n.connection_id);
    Ok(Number {
        id: n.id.clone(),
        number: n.number.clone(),
        connection,
        status_url: format!("{voice_url}/status"),
        voice_url,
        workflow_id: n.workflow_id.clone(),
        created_at: to_rfc3339(n.created_at),
    })
}

/// The problem with `workflow_id` as a number's workflow, if any.
async fn workflow_problem(state: &AppState, account_id: &str, workflow_id: &str) -> ApiResult<Option<Problem>> {
    let Some(row) = state.engine.store().workflow(account_id, workflow_id).await? else {
        return Ok(Some(Problem { path: "workflow_id".into(), message: format!("no workflow '{workflow_id}' in this account") }));
    };
    let workflow = state.engine.workflow(&row.id, row.version).await?;
    Ok((!matches!(workflow.trigger, Trigger::Call))
        .then(|| Problem { path: "workflow_id".into(), message: "a number's workflow has the trigger call: {} (and voice.answer as its first step)".into() }))
}

fn is_e164(s: &str) -> bool {
    switchboard_actions::sms_send::is_e164(s)
}

/// Binds a number to a workflow
///
/// Calls to the number (through the named Twilio connection) start runs of the workflow, whose
/// `voice.answer` step answers them. A number belongs to one account.
#[utoipa::path(
    post,
    path = "/v1/numbers",
    tag = "numbers",
    operation_id = "create_number",
    security(("account_key" = [])),
    request_body = NewNumber,
    responses(
        (status = 201, description = "The bound number, with the URLs to set in Twilio", body = Number),
        (status = 409, description = "`number_taken`: the number is bound already", body = doc::ErrorBody),
        (status = 422, description = "`invalid_number`, naming every problem (or `invalid_request`)", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn create(State(state): State<AppState>, AccountAuth(account): AccountAuth, JsonBody(new): JsonBody<NewNumber>) -> ApiResult<(StatusCode, Json<Number>)> {
    let mut problems = Vec::new();
    let number = new.number.trim().to_owned();
    if !is_e164(&number) {
        problems.push(Problem { path: "number".into(), message: "must be a phone number in E.164 form, e.g. +15550001111".into() });
    }
    let connections = state.engine.store().connections_for(&account.id, &["twilio"], Some(&new.connection)).await?;
    let connection = connections.into_iter().next();
    if connection.is_none() {
        problems.push(Problem { path: "connection".into(), message: format!("no Twilio connection named '{}' in this account", new.connection) });
    }
    problems.extend(workflow_problem(&state, &account.id, &new.workflow_id).await?);
    let Some(connection) = connection.filter(|_| problems.is_empty()) else {
        return Err(ApiError::invalid("invalid_number", "the number cannot be bound", problems));
    };
    let row = NumberRow {
        id: new_id(),
        account_id: account.id.clone(),
        connection_id: connection.id,
        number,
        workflow_id: new.workflow_id,
        created_at: state.engine.clock().now(),
    };
    if !state.engine.store().create_number(&row).await? {
        return Err(ApiError::new(StatusCode::CONFLICT, "number_taken", format!("{} is bound already (a number belongs to one account)", row.number)));
    }
    Ok((StatusCode::CREATED, Json(view(&state, &row).await?)))
}

/// The account's numbers
#[utoipa::path(
    get,
    path = "/v1/numbers",
    tag = "numbers",
    operation_id = "list_numbers",
    security(("account_key" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of numbers", body = NumberList),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn list(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<PageQuery>) -> ApiResult<Json<NumberList>> {
    let page = state.engine.store().list_numbers(&account.id, q.cursor.as_deref(), q.limit()).await?;
    let mut numbers = Vec::with_capacity(page.items.len());
    for n in &page.items {
        numbers.push(view(&state, n).await?);
    }
    Ok(Json(NumberList { numbers, next_cursor: page.next_cursor }))
}

/// Binds a number to another workflow
#[utoipa::path(
    put,
    path = "/v1/numbers/{id}",
    tag = "numbers",
    operation_id = "update_number",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The number's id")),
    request_body = NumberUpdate,
    responses(
        (status = 200, description = "The number, bound to the workflow", body = Number),
        (status = 404, description = "`not_found`: no such number in this account", body = doc::ErrorBody),
        (status = 422, description = "`invalid_number`: the workflow cannot answer calls", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn update(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    Path(id): Path<String>,
    JsonBody(update): JsonBody<NumberUpdate>,
) -> ApiResult<Json<Number>> {
    let store = state.engine.store();
    let mut row = store.number(&account.id, &id).await?.ok_or_else(|| ApiError::not_found("number"))?;
    if let Some(problem) = workflow_problem(&state, &account.id, &update.workflow_id).await? {
        return Err(ApiError::invalid("invalid_number", "the number cannot be bound", vec![problem]));
    }
    if !store.rebind_number(&account.id, &id, &update.workflow_id).await? {
        return Err(ApiError::not_found("number"));
    }
    row.workflow_id = update.workflow_id;
    Ok(Json(view(&state, &row).await?))
}

/// Unbinds a number
///
/// Calls to it answer a short "not in service" message from then on.
#[utoipa::path(
    delete,
    path = "/v1/numbers/{id}",
    tag = "numbers",
    operation_id = "delete_number",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The number's id")),
    responses(
        (status = 200, description = "Unbound", body = super::Deleted),
        (status = 404, description = "`not_found`: no such number in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn remove(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<Json<super::Deleted>> {
    if state.engine.store().delete_number(&account.id, &id).await? {
        Ok(Json(super::Deleted { id, deleted: true }))
    } else {
        Err(ApiError::not_found("number"))
    }
}

/// Simulates a call to a number
///
/// Runs the bound workflow as a call from `from`, with the caller's key presses and speech
/// given by node id, through the same script engine and TwiML renderer as a real call: a test
/// run (sandbox sends, fast-forwarded waits, not billed). Answers the path, every TwiML
/// document and the outcome.
#[utoipa::path(
    post,
    path = "/v1/numbers/{id}/simulate",
    tag = "numbers",
    operation_id = "simulate_call",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The number's id")),
    request_body = SimulateRequest,
    responses(
        (status = 200, description = "The simulated call", body = SimulatedCall),
        (status = 404, description = "`not_found`: no such number in this account", body = doc::ErrorBody),
        (status = 422, description = "`invalid_simulation`: a bad `from`, or the workflow cannot answer calls", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn simulate(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<SimulateRequest>,
) -> ApiResult<Json<SimulatedCall>> {
    let store = state.engine.store();
    let number = store.number(&account.id, &id).await?.ok_or_else(|| ApiError::not_found("number"))?;
    let mut problems = Vec::new();
    if !is_e164(request.from.trim()) {
        problems.push(Problem { path: "from".into(), message: "must be a phone number in E.164 form".into() });
    }
    if request.duration_s.is_some_and(|d| !(0..=86_400).contains(&d)) {
        problems.push(Problem { path: "duration_s".into(), message: "whole seconds, 0 to 86400".into() });
    }
    problems.extend(workflow_problem(&state, &account.id, &number.workflow_id).await?);
    if !problems.is_empty() {
        return Err(ApiError::invalid("invalid_simulation", "the call cannot be simulated", problems));
    }
    let workflow = store.workflow(&account.id, &number.workflow_id).await?.ok_or_else(|| ApiError::not_found("workflow"))?;
    let sid = format!("CA{}", uuid::Uuid::new_v4().simple());
    let event = json!({
        "call": { "sid": sid, "from": request.from.trim(), "to": number.number, "direction": "inbound" },
        "simulate": { "inputs": request.inputs, "duration_s": request.duration_s.unwrap_or(60) },
    });
    let started = state.engine.start_test(&workflow, event).await?;
    state.engine.drive_run(&started.run_id, super::workflows::TEST_RUN_BUDGET).await?;
    let run = super::runs::run_detail(&state, &account.id, &started.run_id).await?;
    let outbox = store.outbox(&account.id, Some(&started.run_id), None, 200).await?;
    let answered = outbox.items.iter().find(|m| m.kind == "voice.answer");
    let rendered: Value = answered.and_then(|m| serde_json::from_str(&m.rendered).ok()).unwrap_or(Value::Null);
    let outcome = rendered.get("outcome").cloned().unwrap_or(Value::Null);
    Ok(Json(SimulatedCall {
        run_id: started.run_id,
        path: outcome.get("path").cloned().unwrap_or_else(|| json!([])),
        twiml: rendered.get("twiml").cloned().unwrap_or_else(|| json!([])),
        outcome,
        run_status: serde_json::to_value(&run.run).ok().and_then(|v| v["status"].as_str().map(str::to_owned)).unwrap_or_default(),
    }))
}
