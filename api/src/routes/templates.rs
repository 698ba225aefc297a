//! The template catalogue: `GET /v1/templates`, `GET /v1/templates/{slug}` and
//! `POST /v1/templates/{slug}/enable {params, connections?}`, which makes the account its own
//! workflow from a template.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use switchboard_runtime::definition::Problem;
use switchboard_runtime::engine::ConnectionChoice;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::JsonBodyOrDefault;
use super::workflows::WorkflowView;
use crate::app::AppState;
use crate::auth::AccountAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self as doc, built_once};
use crate::templates::{CATALOGUE, ParamType, Template};

/// `/v1/templates…`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(read)).routes(routes!(enable))
}

/// `/v1/templates…`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

/// The template catalogue
#[utoipa::path(
    get,
    path = "/v1/templates",
    tag = "templates",
    operation_id = "list_templates",
    security(("account_key" = [])),
    responses(
        (status = 200, description = "Every template: its trigger, its form and the providers it needs", body = TemplateList),
        doc::Unauthorized,
    ),
)]
async fn list(AccountAuth(_): AccountAuth) -> Json<TemplateList> {
    Json(TemplateList { templates: CATALOGUE.iter().map(TemplateSummary::of).collect() })
}

fn find(slug: &str) -> ApiResult<&'static Template> {
    Template::find(slug).ok_or_else(|| ApiError::not_found("template"))
}

/// One template, with the workflow it makes
#[utoipa::path(
    get,
    path = "/v1/templates/{slug}",
    tag = "templates",
    operation_id = "read_template",
    security(("account_key" = [])),
    params(("slug" = String, Path, description = "The template")),
    responses(
        (status = 200, description = "The template", body = TemplateDetail),
        (status = 404, description = "`not_found`: no such template", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn read(AccountAuth(_): AccountAuth, Path(slug): Path<String>) -> ApiResult<Json<TemplateDetail>> {
    let template = find(&slug)?;
    Ok(Json(TemplateDetail { summary: TemplateSummary::of(template), workflow: template.workflow.clone() }))
}

/// `POST /v1/templates/{slug}/enable`; an empty body enables with every default.
#[derive(Default, Deserialize, ToSchema)]
#[schema(as = EnableTemplate)]
pub(crate) struct Enable {
    /// Values of the template's parameters, by name.
    #[serde(default)]
    #[schema(value_type = Object)]
    params: Map<String, Value>,
    /// Provider → the name of the account's connection to send through; needed only when the
    /// account has several of that provider.
    #[serde(default)]
    connections: BTreeMap<String, String>,
    /// A name of its own for the workflow. Without one, enabling a template the account already
    /// has answers `409 already_enabled`; with one, it makes another copy.
    name: Option<String>,
}

/// Enables a template: the account gets its own workflow
///
/// The workflow is an ordinary one: later template changes do not touch it.
#[utoipa::path(
    post,
    path = "/v1/templates/{slug}/enable",
    tag = "templates",
    operation_id = "enable_template",
    security(("account_key" = [])),
    params(("slug" = String, Path, description = "The template")),
    // A `ref` keeps the body optional without making it nullable (JSON `null` is a 422).
    request_body(content = ref("#/components/schemas/EnableTemplate"), description = "Optional: an empty body takes every default"),
    responses(
        (status = 201, description = "The new workflow", body = WorkflowView),
        (status = 404, description = "`not_found`: no such template", body = doc::ErrorBody),
        (status = 409, description = "`already_enabled`: the account has a workflow from this template (its id in `error.workflow_id`); send a `name` to make another copy", body = doc::ErrorBody),
        (status = 422, description = "`invalid_template_params`, naming every bad or missing parameter and connection (or `invalid_request`)", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn enable(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    Path(slug): Path<String>,
    body: Result<JsonBodyOrDefault<Enable>, ApiError>,
) -> ApiResult<(StatusCode, Json<WorkflowView>)> {
    // The template is looked up before the body is read: an unknown one is a 404 whatever the body.
    let template = find(&slug)?;
    let JsonBodyOrDefault(request) = body?;
    let name = request.name.as_deref().map(str::trim);
    if name.is_none()
        && let Some(existing) = state.engine.store().workflow_from_template(&account.id, &template.slug).await?
    {
        let mut error = ApiError::new(
            StatusCode::CONFLICT,
            "already_enabled",
            format!(
                "this account already has the {} template as workflow {existing}; change or enable that one, or send a \"name\" of its own to make another copy",
                template.slug
            ),
        );
        error.extra = Some(Box::new(("workflow_id", json!(existing))));
        return Err(error);
    }
    let mut problems = Vec::new();
    if name.is_some_and(str::is_empty) {
        problems.push(Problem { path: "name".into(), message: "must not be empty".into() });
    }
    let values = template.values(&request.params).unwrap_or_else(|found| {
        problems.extend(found);
        Map::new()
    });
    // Every provider the template sends through needs a connection: the one named, else the
    // account's only one of that provider.
    let mut chosen = BTreeMap::new();
    for provider in &request.connections {
        if !template.connections.contains(provider.0) {
            problems.push(Problem { path: format!("connections.{}", provider.0), message: "this template sends through no such provider".into() });
        }
    }
    for provider in &template.connections {
        let path = format!("connections.{provider}");
        let name = request.connections.get(provider).map(String::as_str);
        match (state.engine.choose_connection(&account.id, &[provider.as_str()], name).await?, name) {
            (ConnectionChoice::Chosen(row), _) => {
                chosen.insert(provider.clone(), row.name);
            }
            (ConnectionChoice::Missing, Some(name)) => problems.push(Problem { path, message: format!("no {provider} connection named '{name}'") }),
            (ConnectionChoice::Missing, None) => problems
                .push(Problem { path, message: format!("this template needs a {provider} connection; create one (a sandbox connection works for trying it)") }),
            (ConnectionChoice::Ambiguous(names), _) => {
                problems.push(Problem { path, message: format!("the account has {} {provider} connections; choose one", names.len()) })
            }
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid("invalid_template_params", "the template cannot be enabled with these values", problems));
    }
    let actions = state.engine.actions();
    let providers_of = |kind: &str| actions.get(kind).map(|a| a.providers().iter().map(|p| p.to_string()).collect()).unwrap_or_default();
    let mut doc = template.instantiate(&values, &chosen, providers_of);
    if let Some(name) = name {
        doc["name"] = json!(name);
    }
    let workflow = super::workflows::compile_doc(&state, &account.id, &doc).await?;
    let created = super::workflows::create_compiled(&state, &account.id, &workflow, Some(&template.slug)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

// ---- Answers ---------------------------------------------------------------------------------

/// One field of a template's form.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateParam {
    /// Its name (`params.<name>` when enabling).
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// Whether enabling must give it (false when it has a default).
    pub required: bool,
    /// The value used when none is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub default: Option<Value>,
    /// Help for the form.
    pub help: String,
}

/// A template of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateSummary {
    /// Its slug.
    pub slug: String,
    /// Its title.
    pub title: String,
    /// What it does.
    pub description: String,
    /// The trigger of the workflow it makes.
    #[schema(value_type = Object)]
    pub trigger: Value,
    /// Its form.
    pub params: Vec<TemplateParam>,
    /// The providers it sends through: each needs a connection.
    pub connections: Vec<String>,
}

/// The catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    /// Every template.
    pub templates: Vec<TemplateSummary>,
}

/// A template with the workflow it makes.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateDetail {
    /// The template.
    #[serde(flatten)]
    pub summary: TemplateSummary,
    /// The workflow definition, with `{{ params.x }}` placeholders.
    #[schema(value_type = Object)]
    pub workflow: Value,
}

impl TemplateSummary {
    /// The catalogue entry: everything but the workflow's steps. A parameter with a default is
    /// never required.
    fn of(t: &Template) -> Self {
        TemplateSummary {
            slug: t.slug.clone(),
            title: t.title.clone(),
            description: t.description.clone(),
            trigger: t.workflow.get("trigger").cloned().unwrap_or_default(),
            params: t
                .params
                .iter()
                .map(|p| TemplateParam {
                    name: p.name.clone(),
                    ty: p.ty,
                    required: p.required && p.default.is_none(),
                    default: p.default.clone(),
                    help: p.help.clone(),
                })
                .collect(),
            connections: t.connections.clone(),
        }
    }
}
