//! The console: a browser UI for the API, served at `/console` by the same process.
//!
//! Its files (`api/console/`: one HTML page, plain ES modules and hand-written CSS, no build
//! step, no Node.js) are compiled into the binary with `include_str!`, so `switchboard serve`
//! serves them with nothing else installed. The console speaks only the public API, with an API
//! key the user pastes (kept in the tab's `sessionStorage`); it adds no route of its own beyond
//! these files. Every answer here carries a strict Content-Security-Policy (scripts, styles and
//! requests from this origin only; no inline script or style, no framing), so a value that
//! slipped past the console's escaping still could not run. See `docs/console.md`.

use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;
use crate::openapi::{self as doc, built_once};

/// The Content-Security-Policy of every console answer: everything from this origin only,
/// nothing inline (`'unsafe-inline'` is absent for scripts and styles), no plugins, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The page: the shell the modules fill.
const INDEX: &str = include_str!("../console/index.html");

/// Every other file, by name: (name, media type, contents). Flat: modules import `./x.js`.
const ASSETS: [(&str, &str, &str); 15] = [
    ("style.css", "text/css; charset=utf-8", include_str!("../console/style.css")),
    ("app.js", JS, include_str!("../console/app.js")),
    ("api.js", JS, include_str!("../console/api.js")),
    ("dom.js", JS, include_str!("../console/dom.js")),
    ("templates.js", JS, include_str!("../console/templates.js")),
    ("workflows.js", JS, include_str!("../console/workflows.js")),
    ("editor.js", JS, include_str!("../console/editor.js")),
    ("graph.js", JS, include_str!("../console/graph.js")),
    ("props.js", JS, include_str!("../console/props.js")),
    ("runs.js", JS, include_str!("../console/runs.js")),
    ("outbox.js", JS, include_str!("../console/outbox.js")),
    ("connections.js", JS, include_str!("../console/connections.js")),
    ("usage.js", JS, include_str!("../console/usage.js")),
    ("calls.js", JS, include_str!("../console/calls.js")),
    ("yaml.js", JS, include_str!("../console/yaml.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// `/`, `/console`, `/console/{file}`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(root)).routes(routes!(index)).routes(routes!(asset))
}

/// `/`, `/console`, `/console/{file}`.
pub fn router() -> axum::Router<AppState> {
    built_once!(documented)
}

/// A console file with its media type and the security headers.
fn respond(media_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(media_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        // The files change with the binary: always revalidate rather than serve an old console.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin")),
    ];
    (headers, body).into_response()
}

/// To the console
#[utoipa::path(
    get,
    path = "/",
    tag = "console",
    operation_id = "root",
    responses((status = 307, description = "Redirects to `/console`", headers(("Location" = String, description = "`/console`")))),
)]
async fn root() -> Redirect {
    Redirect::temporary("/console")
}

/// The console's page
///
/// An HTML shell that loads the console's modules; everything it shows comes from this API,
/// with the key the user pastes.
#[utoipa::path(
    get,
    path = "/console",
    tag = "console",
    operation_id = "console",
    responses((status = 200, description = "The console (HTML), with a strict Content-Security-Policy", content_type = "text/html", body = String)),
)]
async fn index() -> Response {
    respond("text/html; charset=utf-8", INDEX)
}

/// One of the console's scripts or styles
#[utoipa::path(
    get,
    path = "/console/{file}",
    tag = "console",
    operation_id = "console_asset",
    params(("file" = String, Path, description = "A file name, e.g. `app.js`")),
    responses(
        (status = 200, description = "The file", content((String = "text/javascript"), (String = "text/css"))),
        (status = 404, description = "`not_found`: the console has no such file", body = doc::ErrorBody),
    ),
)]
async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (_, media_type, body) = ASSETS.iter().find(|(name, _, _)| *name == file).ok_or_else(|| ApiError::not_found("console file"))?;
    Ok(respond(media_type, body))
}

/// The names of the console's files, for tests that fetch each one.
pub fn files() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|(name, _, _)| *name)
}
