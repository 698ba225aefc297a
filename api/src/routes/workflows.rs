//! Workflows: create (JSON or YAML), list, read, new version, delete, enable/disable, start.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::definition::{self, Format, Trigger, Workflow};
use switchboard_runtime::engine::new_id;
use switchboard_runtime::store::{WorkflowRow, WorkflowWrite};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Body, PageQuery, Query, json_body, media_type};
use crate::app::AppState;
use crate::auth::{AccountAuth, random_secret};
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self as doc, built_once};

/// `/v1/workflows…`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, update, remove))
        .routes(routes!(enable))
        .routes(routes!(disable))
        .routes(routes!(start))
        .routes(routes!(test))
}

/// `/v1/workflows…`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

/// Parses and validates a definition body: 400 on syntax, 415 on media type, 422 with every
/// problem (including connection choices that do not fit the account).
async fn compile(state: &AppState, account_id: &str, headers: &HeaderMap, body: &[u8]) -> ApiResult<Workflow> {
    let format = match media_type(headers).as_deref() {
        None | Some("application/json") => Format::Json,
        Some("application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml") => Format::Yaml,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("send a workflow as application/json or application/yaml, not {other}"),
            ));
        }
    };
    let mut doc = definition::parse(body, format).map_err(ApiError::bad_request)?;
    state.engine.pin_connections(account_id, &mut doc).await?;
    compile_doc(state, account_id, &doc).await
}

/// Validates and compiles a definition document for an account: 422 with every problem.
pub(crate) async fn compile_doc(state: &AppState, account_id: &str, doc: &Value) -> ApiResult<Workflow> {
    let invalid = |problems| ApiError::invalid("invalid_workflow", "the workflow is invalid", problems);
    let workflow = state.engine.compile(doc).map_err(invalid)?;
    let problems = state.engine.connection_problems(account_id, &workflow).await?;
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    Ok(workflow)
}

fn write_of(state: &AppState, account_id: &str, id: &str, w: &Workflow, enabled: bool, now: i64) -> ApiResult<WorkflowWrite> {
    let (event_type, webhook_token) = match &w.trigger {
        Trigger::Event { event_type, .. } => (Some(event_type.clone()), None),
        Trigger::Webhook { .. } => (None, Some(random_secret("wh_"))),
        Trigger::Manual | Trigger::Schedule { .. } => (None, None),
    };
    let mut definition = w.source.clone();
    super::hooks::seal_secret(&state.vault, id, &mut definition)
        .map_err(|p| ApiError::invalid("invalid_workflow", "the workflow is invalid", vec![p]))?;
    Ok(WorkflowWrite {
        id: id.to_string(),
        account_id: account_id.to_string(),
        name: w.name.clone(),
        enabled,
        trigger_kind: w.trigger.kind().to_string(),
        event_type,
        webhook_token,
        definition: definition.to_string(),
        template: None,
        now,
    })
}

/// The API shape of a workflow.
pub(crate) fn workflow_json(state: &AppState, w: &WorkflowRow) -> Value {
    let source: Value = serde_json::from_str(&w.definition).unwrap_or_default();
    let mut out = json!({
        "id": w.id,
        "name": w.name,
        "version": w.version,
        "enabled": w.enabled == 1,
        "trigger": source.get("trigger"),
        "steps": source.get("steps"),
        "created_at": to_rfc3339(w.created_at),
        "updated_at": to_rfc3339(w.updated_at),
    });
    if let Some(params) = source.get("params") {
        out["params"] = params.clone();
    }
    if let (Some(token), "webhook") = (&w.webhook_token, w.trigger_kind.as_str()) {
        out["webhook_url"] = json!(state.webhook_url(token));
    }
    out
}

async fn load(state: &AppState, account_id: &str, id: &str) -> ApiResult<WorkflowRow> {
    state.engine.store().workflow(account_id, id).await?.ok_or_else(|| ApiError::not_found("workflow"))
}

/// Creates a workflow from a definition
///
/// Enabled unless the definition says `"enabled": false`; a webhook trigger gets its URL.
#[utoipa::path(
    post,
    path = "/v1/workflows",
    tag = "workflows",
    operation_id = "create_workflow",
    security(("account_key" = [])),
    request_body(
        description = "The definition, as JSON (also without `Content-Type`) or YAML (`application/yaml`, `application/x-yaml`, `text/yaml`, `text/x-yaml`)",
        content((doc::WorkflowDefinition = "application/json"), (doc::WorkflowDefinition = "application/yaml")),
    ),
    responses(
        (status = 201, description = "The workflow, version 1", body = doc::Workflow),
        (status = 400, description = "`bad_request`: malformed JSON or YAML", body = doc::ErrorBody),
        (status = 413, description = "`payload_too_large`: over 1 MiB", body = doc::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: neither JSON nor YAML", body = doc::ErrorBody),
        (status = 422, description = "`invalid_workflow`, naming every problem with its path (including connection choices that do not fit the account)", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn create(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let workflow = compile(&state, &account.id, &headers, &body).await?;
    Ok((StatusCode::CREATED, Json(create_compiled(&state, &account.id, &workflow, None).await?)))
}

/// Stores a compiled workflow as a new workflow of the account (made from `template`, if
/// given); answers its API shape.
pub(crate) async fn create_compiled(state: &AppState, account_id: &str, workflow: &Workflow, template: Option<&str>) -> ApiResult<Value> {
    let id = new_id();
    let mut write = write_of(state, account_id, &id, workflow, workflow.enabled.unwrap_or(true), state.engine.clock().now())?;
    write.template = template.map(str::to_string);
    state.engine.store().create_workflow(&write).await?;
    state.engine.sync_schedule(account_id, &id).await?;
    let row = load(state, account_id, &id).await?;
    Ok(workflow_json(state, &row))
}

/// How long a test run may take before the answer shows it unfinished (a test run fast-forwards
/// its waits, so it normally ends within milliseconds).
const TEST_RUN_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// `POST /v1/workflows/{id}/test`; an empty body tests with the event `{}`.
#[derive(Default, Deserialize, ToSchema)]
#[schema(as = TestRunRequest)]
pub(crate) struct TestRequest {
    /// The event to start the test run with (default `{}`).
    #[serde(default)]
    event: Value,
}

/// A test run: the workflow on sandbox transports, every wait fast-forwarded
///
/// Runs the current version in the request (nothing is billed, nothing is sent: sends go to the
/// outbox) and answers the timeline and what it would have sent.
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/test",
    tag = "workflows",
    operation_id = "test_workflow",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The workflow")),
    // A `ref` keeps the body optional without making it nullable (JSON `null` is a 422).
    request_body(content = ref("#/components/schemas/TestRunRequest"), description = "Optional: an empty body tests with the event `{}`"),
    responses(
        (status = 200, description = "The test run and its outbox", body = doc::TestRunResult),
        (status = 404, description = "`not_found`: no such workflow in this account", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the body has the wrong fields", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn test(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let row = load(&state, &account.id, &id).await?;
    let request: TestRequest = super::json_body_or_default(&headers, &body)?;
    let event = if request.event.is_null() { json!({}) } else { request.event };
    let started = state.engine.start_test(&row, event).await?;
    state.engine.drive_run(&started.run_id, TEST_RUN_BUDGET).await?;
    let run = super::runs::run_detail_json(&state, &account.id, &started.run_id).await?;
    let outbox = state.engine.store().outbox(&account.id, Some(&started.run_id), None, 200).await?;
    let messages: Vec<Value> = outbox.items.iter().map(super::outbox::message_json).collect();
    Ok(Json(json!({ "run": run, "outbox": messages })))
}

/// The account's workflows
#[utoipa::path(
    get,
    path = "/v1/workflows",
    tag = "workflows",
    operation_id = "list_workflows",
    security(("account_key" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of workflows", body = doc::WorkflowList),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn list(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<PageQuery>) -> ApiResult<Json<Value>> {
    let page = state.engine.store().list_workflows(&account.id, q.cursor.as_deref(), q.limit()).await?;
    let workflows: Vec<Value> = page.items.iter().map(|w| workflow_json(&state, w)).collect();
    Ok(Json(json!({ "workflows": workflows, "next_cursor": page.next_cursor })))
}

/// One workflow
#[utoipa::path(
    get,
    path = "/v1/workflows/{id}",
    tag = "workflows",
    operation_id = "read_workflow",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The workflow")),
    responses(
        (status = 200, description = "The workflow's current version", body = doc::Workflow),
        (status = 404, description = "`not_found`: no such workflow in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn read(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let row = load(&state, &account.id, &id).await?;
    Ok(Json(workflow_json(&state, &row)))
}

/// Stores a new version of a workflow
///
/// Runs already started keep their version. `enabled` is kept unless the definition says.
#[utoipa::path(
    put,
    path = "/v1/workflows/{id}",
    tag = "workflows",
    operation_id = "update_workflow",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The workflow")),
    request_body(
        description = "The definition, as JSON (also without `Content-Type`) or YAML (`application/yaml`, `application/x-yaml`, `text/yaml`, `text/x-yaml`)",
        content((doc::WorkflowDefinition = "application/json"), (doc::WorkflowDefinition = "application/yaml")),
    ),
    responses(
        (status = 200, description = "The workflow's new version", body = doc::Workflow),
        (status = 404, description = "`not_found`: no such workflow in this account", body = doc::ErrorBody),
        (status = 400, description = "`bad_request`: malformed JSON or YAML", body = doc::ErrorBody),
        (status = 413, description = "`payload_too_large`: over 1 MiB", body = doc::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: neither JSON nor YAML", body = doc::ErrorBody),
        (status = 422, description = "`invalid_workflow`, naming every problem with its path (including connection choices that do not fit the account)", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn update(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let current = load(&state, &account.id, &id).await?;
    let workflow = compile(&state, &account.id, &headers, &body).await?;
    let enabled = workflow.enabled.unwrap_or(current.enabled == 1);
    let write = write_of(&state, &account.id, &id, &workflow, enabled, state.engine.clock().now())?;
    state.engine.store().update_workflow(&write).await?.ok_or_else(|| ApiError::not_found("workflow"))?;
    state.engine.sync_schedule(&account.id, &id).await?;
    state.hooks.clear();
    let row = load(&state, &account.id, &id).await?;
    Ok(Json(workflow_json(&state, &row)))
}

/// Deletes a workflow
#[utoipa::path(
    delete,
    path = "/v1/workflows/{id}",
    tag = "workflows",
    operation_id = "delete_workflow",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The workflow")),
    responses(
        (status = 200, description = "Deleted", body = doc::Deleted),
        (status = 404, description = "`not_found`: no such workflow in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn remove(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    if state.engine.store().delete_workflow(&account.id, &id, state.engine.clock().now()).await? {
        state.engine.sync_schedule(&account.id, &id).await?;
        state.hooks.clear();
        Ok(Json(json!({ "id": id, "deleted": true })))
    } else {
        Err(ApiError::not_found("workflow"))
    }
}

async fn set_enabled(state: &AppState, account_id: &str, id: &str, enabled: bool) -> ApiResult<Json<Value>> {
    if !state.engine.store().set_workflow_enabled(account_id, id, enabled, state.engine.clock().now()).await? {
        return Err(ApiError::not_found("workflow"));
    }
    state.engine.sync_schedule(account_id, id).await?;
    state.hooks.clear();
    let row = load(state, account_id, id).await?;
    Ok(Json(workflow_json(state, &row)))
}

/// Switches a workflow's trigger on
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/enable",
    tag = "workflows",
    operation_id = "enable_workflow",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The workflow")),
    responses(
        (status = 200, description = "The workflow, enabled", body = doc::Workflow),
        (status = 404, description = "`not_found`: no such workflow in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn enable(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    set_enabled(&state, &account.id, &id, true).await
}

/// Switches a workflow's trigger off
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/disable",
    tag = "workflows",
    operation_id = "disable_workflow",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The workflow")),
    responses(
        (status = 200, description = "The workflow, disabled", body = doc::Workflow),
        (status = 404, description = "`not_found`: no such workflow in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn disable(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    set_enabled(&state, &account.id, &id, false).await
}

/// Starts a run with the body as `event`
///
/// Any workflow can be started this way, enabled or not (it is how a workflow is tried by hand).
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/runs",
    tag = "workflows",
    operation_id = "start_run",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The workflow")),
    request_body(content = Option<Value>, content_type = "application/json", description = "The event: any JSON (an empty body is `{}`)"),
    responses(
        (status = 202, description = "The event and the run it started", body = doc::HookAccepted),
        (status = 404, description = "`not_found`: no such workflow in this account", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn start(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let row = load(&state, &account.id, &id).await?;
    let payload: Value = if body.is_empty() { json!({}) } else { json_body(&headers, &body)? };
    let accepted = state.engine.start_manual(&row, payload).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(accepted))))
}
