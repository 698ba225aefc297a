//! Workflows: create (JSON or YAML), list, read, new version, delete, enable/disable, start.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::definition::{self, Format, Trigger, Workflow};
use switchboard_runtime::engine::new_id;
use switchboard_runtime::store::{WorkflowRow, WorkflowWrite};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::outbox::OutboxMessage;
use super::runs::RunDetail;
use super::{Body, JsonBodyOrDefault, PageQuery, Query, json_body, media_type};
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
        Trigger::Manual | Trigger::Schedule { .. } | Trigger::Call | Trigger::Stripe { .. } => (None, None),
    };
    let mut definition = w.source.clone();
    super::hooks::seal_secret(&state.vault, id, &mut definition).map_err(|p| ApiError::invalid("invalid_workflow", "the workflow is invalid", vec![p]))?;
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

// ---- Answers and the definition's schema ----------------------------------------------------

/// A workflow definition, as `POST /v1/workflows` and `PUT /v1/workflows/{id}` take it (JSON or
/// YAML). The definition language (triggers, step kinds, expressions) is in `docs/workflows.md`;
/// every problem is answered at once as a 422 with its path.
#[derive(Serialize, ToSchema)]
#[allow(dead_code, reason = "a schema only: definitions are read by `definition::parse`")]
struct WorkflowDefinition {
    /// Its name.
    name: String,
    /// What it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    description: Option<String>,
    /// Exactly one of `{"event": type, "when"?: expr}`, `{"webhook": {"secret"?}}`,
    /// `{"schedule": {"cron", "timezone"?}}` or `{"manual": {}}`.
    #[schema(value_type = Object)]
    trigger: Value,
    /// Values the steps' expressions read as `params.<name>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    params: Option<Value>,
    /// The steps, in order; each has an `id` and one kind (`action`, `branch`, `set`, `delay`,
    /// `wait_for`, `end`, …).
    #[schema(value_type = Vec<Object>, min_items = 1)]
    steps: Vec<Value>,
    /// A new workflow is enabled unless this says `false`; a new version keeps the current state
    /// unless it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    enabled: Option<bool>,
}

/// A stored workflow: its current version.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Workflow)]
pub struct WorkflowView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its version: 1, then one more each `PUT`.
    pub version: i64,
    /// Whether its trigger starts runs.
    pub enabled: bool,
    /// The trigger, as written.
    #[schema(value_type = Object)]
    pub trigger: Value,
    /// The steps, as written.
    #[schema(value_type = Vec<Object>)]
    pub steps: Value,
    /// The parameter values, when the definition has `params` (a workflow made from a template).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub params: Option<Value>,
    /// The URL to post to, for a webhook trigger.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub webhook_url: Option<String>,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A page of workflows.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowList {
    /// The workflows.
    pub workflows: Vec<WorkflowView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// What a test run shows.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestRunResult {
    /// The test run with its timeline (unfinished if it took longer than 10 s).
    pub run: RunDetail,
    /// What it would have sent, oldest first.
    pub outbox: Vec<OutboxMessage>,
}

impl WorkflowView {
    /// A stored workflow as the API shows it: the definition's trigger, steps and params, and
    /// the URL of a webhook trigger.
    pub(crate) fn from_row(state: &AppState, w: &WorkflowRow) -> Self {
        let mut source: Value = serde_json::from_str(&w.definition).unwrap_or_default();
        let mut take = |name: &str| source.get_mut(name).map(Value::take);
        WorkflowView {
            id: w.id.clone(),
            name: w.name.clone(),
            version: w.version,
            enabled: w.enabled == 1,
            trigger: take("trigger").unwrap_or_default(),
            steps: take("steps").unwrap_or_default(),
            params: take("params"),
            webhook_url: w.webhook_token.as_deref().filter(|_| w.trigger_kind == "webhook").map(|token| state.webhook_url(token)),
            created_at: to_rfc3339(w.created_at),
            updated_at: to_rfc3339(w.updated_at),
        }
    }
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
        content((WorkflowDefinition = "application/json"), (WorkflowDefinition = "application/yaml")),
    ),
    responses(
        (status = 201, description = "The workflow, version 1", body = WorkflowView),
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
) -> ApiResult<(StatusCode, Json<WorkflowView>)> {
    let workflow = compile(&state, &account.id, &headers, &body).await?;
    Ok((StatusCode::CREATED, Json(create_compiled(&state, &account.id, &workflow, None).await?)))
}

/// Stores a compiled workflow as a new workflow of the account (made from `template`, if
/// given); answers its API shape.
pub(crate) async fn create_compiled(state: &AppState, account_id: &str, workflow: &Workflow, template: Option<&str>) -> ApiResult<WorkflowView> {
    let id = new_id();
    let mut write = write_of(state, account_id, &id, workflow, workflow.enabled.unwrap_or(true), state.engine.clock().now())?;
    write.template = template.map(str::to_string);
    state.engine.store().create_workflow(&write).await?;
    state.engine.sync_schedule(account_id, &id).await?;
    let row = load(state, account_id, &id).await?;
    Ok(WorkflowView::from_row(state, &row))
}

/// How long a test run may take before the answer shows it unfinished (a test run fast-forwards
/// its waits, so it normally ends within milliseconds).
pub(crate) const TEST_RUN_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

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
        (status = 200, description = "The test run and its outbox", body = TestRunResult),
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
    body: Result<JsonBodyOrDefault<TestRequest>, ApiError>,
) -> ApiResult<Json<TestRunResult>> {
    // The workflow is looked up before the body is read: an unknown one is a 404 whatever the body.
    let row = load(&state, &account.id, &id).await?;
    let JsonBodyOrDefault(request) = body?;
    let event = if request.event.is_null() { json!({}) } else { request.event };
    let started = state.engine.start_test(&row, event).await?;
    state.engine.drive_run(&started.run_id, TEST_RUN_BUDGET).await?;
    let run = super::runs::run_detail(&state, &account.id, &started.run_id).await?;
    let outbox = state.engine.store().outbox(&account.id, Some(&started.run_id), None, 200).await?;
    Ok(Json(TestRunResult { run, outbox: outbox.items.iter().map(OutboxMessage::from).collect() }))
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
        (status = 200, description = "A page of workflows", body = WorkflowList),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn list(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<PageQuery>) -> ApiResult<Json<WorkflowList>> {
    let page = state.engine.store().list_workflows(&account.id, q.cursor.as_deref(), q.limit()).await?;
    let workflows = page.items.iter().map(|w| WorkflowView::from_row(&state, w)).collect();
    Ok(Json(WorkflowList { workflows, next_cursor: page.next_cursor }))
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
        (status = 200, description = "The workflow's current version", body = WorkflowView),
        (status = 404, description = "`not_found`: no such workflow in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn read(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<Json<WorkflowView>> {
    let row = load(&state, &account.id, &id).await?;
    Ok(Json(WorkflowView::from_row(&state, &row)))
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
        content((WorkflowDefinition = "application/json"), (WorkflowDefinition = "application/yaml")),
    ),
    responses(
        (status = 200, description = "The workflow's new version", body = WorkflowView),
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
) -> ApiResult<Json<WorkflowView>> {
    let current = load(&state, &account.id, &id).await?;
    let workflow = compile(&state, &account.id, &headers, &body).await?;
    let enabled = workflow.enabled.unwrap_or(current.enabled == 1);
    let write = write_of(&state, &account.id, &id, &workflow, enabled, state.engine.clock().now())?;
    state.engine.store().update_workflow(&write).await?.ok_or_else(|| ApiError::not_found("workflow"))?;
    state.engine.sync_schedule(&account.id, &id).await?;
    state.hooks.clear();
    let row = load(&state, &account.id, &id).await?;
    Ok(Json(WorkflowView::from_row(&state, &row)))
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
        (status = 200, description = "Deleted", body = super::Deleted),
        (status = 404, description = "`not_found`: no such workflow in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn remove(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<Json<super::Deleted>> {
    if state.engine.store().delete_workflow(&account.id, &id, state.engine.clock().now()).await? {
        state.engine.sync_schedule(&account.id, &id).await?;
        state.hooks.clear();
        Ok(Json(super::Deleted { id, deleted: true }))
    } else {
        Err(ApiError::not_found("workflow"))
    }
}

async fn set_enabled(state: &AppState, account_id: &str, id: &str, enabled: bool) -> ApiResult<Json<WorkflowView>> {
    if !state.engine.store().set_workflow_enabled(account_id, id, enabled, state.engine.clock().now()).await? {
        return Err(ApiError::not_found("workflow"));
    }
    state.engine.sync_schedule(account_id, id).await?;
    state.hooks.clear();
    let row = load(state, account_id, id).await?;
    Ok(Json(WorkflowView::from_row(state, &row)))
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
        (status = 200, description = "The workflow, enabled", body = WorkflowView),
        (status = 404, description = "`not_found`: no such workflow in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn enable(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<Json<WorkflowView>> {
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
        (status = 200, description = "The workflow, disabled", body = WorkflowView),
        (status = 404, description = "`not_found`: no such workflow in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn disable(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<Json<WorkflowView>> {
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
        (status = 202, description = "The event and the run it started", body = super::hooks::HookAccepted),
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
) -> ApiResult<(StatusCode, Json<super::hooks::HookAccepted>)> {
    let row = load(&state, &account.id, &id).await?;
    let payload: Value = if body.is_empty() { json!({}) } else { json_body(&headers, &body)? };
    let accepted = state.engine.start_manual(&row, payload).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted.into())))
}
