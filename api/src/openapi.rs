//! `GET /openapi.json`: the OpenAPI 3.1 document of the whole HTTP API, built once per process.
//!
//! Each resource module has a `documented()` utoipa-axum [`OpenApiRouter`]: a handler is mounted
//! by `routes!` from its own `#[utoipa::path]`, so its method and path in the document are the
//! ones it is served at. The module's `router()`, which `app::router` merges, is that router's
//! axum half (built once: see `built_once!`); [`document`] merges their documents. Two things
//! are added here by hand:
//! - the security schemes (`account_key`, `admin_token`);
//! - the error envelope below (`ErrorBody`), which `error::ApiError` serialises.
//!
//! Everything else is derived from the handlers' own types: request bodies and query parameters
//! from their `Deserialize` types, answers from the `Serialize` types they return (each resource
//! module defines its answers, built from the store's rows), so the document cannot drift from
//! what is served. The e2e test `openapi` checks a real answer of every operation against it.
//!
//! The same test fails when a route the router serves is missing from the document
//! (it probes every method of every path declared in `api/src`), so the list in [`document`]
//! stays in step with `app::router`.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::routes;

/// The document's root: what is not per operation.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard",
        description = "Durable workflow automation: workflows, runs, events, webhooks, connections, phone numbers and voice calls, business-hour schedules, templates, metered usage and call analytics.\n\n\
            Requests and answers are JSON unless an operation says otherwise. Every error is the envelope \
            `{\"error\": {\"code\", \"message\", \"details\": [{\"path\", \"message\"}]}}` (`ErrorBody`); `code` is a \
            stable snake_case string. Any operation may also answer 500 `internal` (the cause is in the server log), \
            503 `database_unavailable` with `Retry-After` (seconds) when it needs the database and the database cannot \
            be reached (answered within a second; nothing was accepted, so retry), \
            400 `bad_request` for a query string that does not parse, and 413 `payload_too_large` above 1 MiB. \
            An unknown path answers 404 `not_found`, a known path with another method 405 `method_not_allowed`.\n\n\
            Lists are cursor-paginated: `?cursor=&limit=` (default 50, at most 200); the answer's `next_cursor` \
            is `null` on the last page.",
    ),
    // Optional request bodies are `ref`s (see their operations), which routes! does not collect.
    components(schemas(ErrorBody, ErrorDetail, Problem, routes::templates::Enable, routes::workflows::TestRequest)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "accounts", description = "Accounts and their API keys; plan changes (admin)"),
        (name = "workflows", description = "Workflow definitions (JSON or YAML), enabling, manual and test runs"),
        (name = "runs", description = "Runs and their step timelines; cancel and retry"),
        (name = "live", description = "Live run events as Server-Sent Events"),
        (name = "events", description = "App events that start every matching workflow"),
        (name = "hooks", description = "Per-workflow webhook URLs: the token in the URL is the secret"),
        (name = "connections", description = "Vendor credentials, sealed; never returned"),
        (name = "numbers", description = "Phone numbers bound to the workflows that answer them; simulated calls"),
        (name = "contact", description = "Contact rules: quiet hours in the recipient's timezone, and opted-out numbers"),
        (name = "schedules", description = "Business hours by name (weekly hours, holidays, overrides): open at an instant, and the next change"),
        (name = "templates", description = "The template catalogue, and enabling a template as a workflow"),
        (name = "outbox", description = "What sandbox connections and test runs would have sent"),
        (name = "usage", description = "The usage ledger: totals, raw pages, CSV; every account's usage (admin)"),
        (name = "analytics", description = "Call history (JSON and CSV), a workflow's figures, the account's day"),
        (name = "callbacks", description = "Vendor callbacks, trusted by their signature"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
        (name = "console", description = "The browser console (HTML, scripts and styles built into the binary); it speaks only this API"),
    ),
)]
struct Root;

/// Adds the two bearer schemes, `account_key` and `admin_token`, that operations name in their
/// `security`. Both are HTTP bearer: what tells them apart is which
/// secret the server compares the token with, so each operation names the one it takes.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(description)).build());
        components.add_security_scheme("account_key", bearer("An account's API key (`sk_…`), shown once when the admin creates the account; stored hashed."));
        components.add_security_scheme("admin_token", bearer("The admin token from the server's configuration (`SWITCHBOARD_ADMIN_TOKEN`)."));
    }
}

/// The whole document: the root merged with every resource router's operations.
///
/// Lists the same resource modules as `app::router` (the e2e test `openapi` catches one missing).
/// It builds their axum routers too, only to drop them: a few milliseconds, once a process.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Root::openapi();
    let documented = OpenApiRouter::<AppState>::new()
        .merge(routes::accounts::documented())
        .merge(routes::workflows::documented())
        .merge(routes::actions::documented())
        .merge(routes::connections::documented())
        .merge(routes::oauth::documented())
        .merge(routes::numbers::documented())
        .merge(routes::contact::documented())
        .merge(routes::schedules::documented())
        .merge(routes::outbox::documented())
        .merge(routes::callbacks::documented())
        .merge(routes::templates::documented())
        .merge(routes::runs::documented())
        .merge(routes::live::documented())
        .merge(routes::usage::documented())
        .merge(routes::analytics::documented())
        .merge(routes::events::documented())
        .merge(routes::hooks::documented())
        .merge(routes::health::documented())
        .merge(crate::console::documented())
        .merge(documented());
    doc.merge(documented.into_openapi());
    doc
}

/// The axum half of a module's `documented()` router, built on first use and cloned after.
///
/// `routes!` builds each operation's documentation along with its route (≈7 ms for the whole
/// API in a debug build). A process builds the app router once, but the e2e tests build it for
/// every request (≈1,600 a run); cloning a built axum router is cloning an `Arc`.
macro_rules! built_once {
    ($documented:path) => {{
        static ROUTER: std::sync::LazyLock<axum::Router<crate::app::AppState>> = std::sync::LazyLock::new(|| $documented().into());
        ROUTER.clone()
    }};
}
pub(crate) use built_once;

/// The document as JSON, serialised on first request.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| document().to_json().expect("the OpenAPI document serialises"));

/// `/openapi.json`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// `/openapi.json`.
pub fn router() -> axum::Router<AppState> {
    built_once!(documented)
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)),
)]
async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}

// ---- Errors ------------------------------------------------------------------------------------

/// Every error: `{"error": {"code", "message", "details"}}` (`error::ApiError`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code, e.g. `not_found`, `invalid_workflow`, `workflow_disabled`.
    #[schema(example = "not_found")]
    pub code: String,
    /// For a person; may change between versions.
    pub message: String,
    /// Every problem with its path (422); empty otherwise.
    pub details: Vec<Problem>,
}

/// One problem in a request, at its path (e.g. `steps[2].input.to`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Where, e.g. `steps[1].branch[0].when`; empty for the whole body.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// 401 on an endpoint that takes a bearer token.
#[derive(Debug, IntoResponses)]
#[response(status = 401, description = "`unauthorized`: no `Authorization: Bearer …`, or not a valid key for this endpoint")]
pub struct Unauthorized(pub ErrorBody);

/// 400 on an operation that reads query parameters.
#[derive(Debug, IntoResponses)]
#[response(status = 400, description = "`bad_request`: a query string that does not parse, e.g. a `limit` that is not a 64-bit integer")]
pub struct BadQuery(pub ErrorBody);

/// What reading a JSON request body can answer, besides the operation's own 422.
#[derive(Debug, IntoResponses)]
pub enum BodyErrors {
    /// `bad_request`: malformed JSON, or a body that could not be read.
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// `payload_too_large`: the body is over 1 MiB.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// `unsupported_media_type`: a `Content-Type` other than `application/json` (none is taken as JSON).
    #[response(status = 415)]
    MediaType(ErrorBody),
}
