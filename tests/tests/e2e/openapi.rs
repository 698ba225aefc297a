//! `GET /openapi.json`: the document parses, is OpenAPI 3.x, describes every route the router
//! serves (and only those) with the right security, and real answers fit their schemas.
//!
//! Coverage is derived, not listed: the candidate paths are every path in the document plus
//! every route path written in `api/src` (`.route("…"` or `path = "…"`), and each is probed on
//! the real router with every method. A method that the router does not answer with its 404 or
//! 405 fallback is served, and must be documented; a documented one must be served. So a route
//! added without documentation fails here, whether it is a plain axum `.route` or a
//! `#[utoipa::path]` router left out of `openapi::document`.

use std::collections::BTreeSet;
use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use switchboard_runtime::store::CallRow;
use tower::ServiceExt;

use crate::on_both_backends;
use crate::support::{ADMIN, TestApp, TestDb};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

/// Sends a bodiless request; the status and, for an error, its `code` and `message`. Other
/// bodies are not read: a live event stream never ends.
async fn probe(router: &Router, method: &str, path: &str, token: Option<&str>) -> (StatusCode, String, String) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = router.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = res.status();
    if !matches!(status, StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED) {
        return (status, String::new(), String::new());
    }
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let text = |k: &str| body["error"][k].as_str().unwrap_or_default().to_string();
    (status, text("code"), text("message"))
}

pub(crate) async fn fetch_document(router: &Router) -> Value {
    let res = router.clone().oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    serde_json::from_slice(&bytes).expect("/openapi.json is JSON")
}

/// Every route path written in the API crate's source.
fn source_paths() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut sources = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/src"), &mut sources);
    assert!(sources.len() > 10, "the API crate's source was not found");
    let mut paths = BTreeSet::new();
    for source in &sources {
        for nesting in [".nest(", ".nest_service(", ".route_service("] {
            assert!(!source.contains(nesting), "{nesting} found in api/src: teach this test to follow nested routes");
        }
        for marker in [".route(\"", "path = \""] {
            for (at, _) in source.match_indices(marker) {
                let rest = &source[at + marker.len()..];
                let literal = &rest[..rest.find('"').unwrap()];
                if literal.starts_with('/') {
                    paths.insert(literal.to_string());
                }
            }
        }
    }
    paths
}

/// `/v1/runs/{id}/cancel` → `/v1/runs/probe/cancel`.
fn concrete(path: &str) -> String {
    path.split('/').map(|seg| if seg.starts_with('{') { "probe" } else { seg }).collect::<Vec<_>>().join("/")
}

/// Every `$ref` in a JSON value.
fn references<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            out.extend(map.get("$ref").and_then(Value::as_str));
            map.values().for_each(|v| references(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

/// The security scheme names an operation takes.
fn schemes(op: &Value) -> BTreeSet<String> {
    op["security"].as_array().into_iter().flatten().filter_map(Value::as_object).flat_map(|r| r.keys().cloned()).collect()
}

async fn document_covers_every_served_route(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let router = switchboard_api::router(app.state.clone());
    let doc = fetch_document(&router).await;

    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let security_schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(security_schemes.keys().collect::<Vec<_>>(), ["account_key", "admin_token"]);
    for scheme in security_schemes.values() {
        assert_eq!((scheme["type"].as_str(), scheme["scheme"].as_str()), (Some("http"), Some("bearer")));
    }

    let mut refs = Vec::new();
    references(&doc, &mut refs);
    for reference in refs {
        let name = reference.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {reference}"));
        assert!(doc["components"]["schemas"][name].is_object(), "$ref {reference} does not resolve");
    }

    let paths = doc["paths"].as_object().unwrap();
    let mut documented = BTreeSet::new();
    let mut operation_ids = BTreeSet::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.to_uppercase().as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
                let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                assert!(operation_ids.insert(id.to_string()), "operationId {id} is used twice");
                assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has no responses");
            }
        }
    }

    let candidates: BTreeSet<String> = source_paths().into_iter().chain(paths.keys().cloned()).collect();
    let mut served = BTreeSet::new();
    for path in &candidates {
        for method in METHODS {
            let (status, code, message) = probe(&router, method, &concrete(path), None).await;
            let fallback =
                (status == StatusCode::NOT_FOUND && message == "route not found") || (status == StatusCode::METHOD_NOT_ALLOWED && code == "method_not_allowed");
            if !fallback {
                served.insert((method.to_string(), path.clone()));
            }
        }
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "served but not in /openapi.json: {undocumented:?}");
    assert!(unserved.is_empty(), "in /openapi.json but not served: {unserved:?}");

    // The documented security is what the router checks: without a token an operation that
    // takes one answers 401 `unauthorized`, with its own kind of token it does not, and with the
    // other kind it does.
    for (method, path) in &documented {
        let takes = schemes(&paths[path][method.to_lowercase()]);
        let uri = concrete(path);
        let anonymous = probe(&router, method, &uri, None).await;
        assert_eq!(anonymous.1 == "unauthorized", !takes.is_empty(), "{method} {path} without a token: {anonymous:?}; documented {takes:?}");
        if !takes.is_empty() {
            let admin = probe(&router, method, &uri, Some(ADMIN)).await;
            assert_eq!(admin.1 != "unauthorized", takes.contains("admin_token"), "{method} {path} with the admin token: {admin:?}; documented {takes:?}");
            let account = probe(&router, method, &uri, Some(&key)).await;
            assert_eq!(account.1 != "unauthorized", takes.contains("account_key"), "{method} {path} with an API key: {account:?}; documented {takes:?}");
        }
    }
    for route in [
        ("POST", "/hooks/{token}"),
        ("POST", "/callbacks/twilio/{connection}/sms"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/v1/events/stream"),
    ] {
        assert!(documented.contains(&(route.0.to_string(), route.1.to_string())), "{route:?} is not documented");
    }
    assert_eq!(paths["/metrics"]["get"]["responses"]["200"]["content"].as_object().unwrap().keys().collect::<Vec<_>>(), ["text/plain; version=0.0.4"]);
}

/// A schema's properties and required names, following `$ref` and `allOf` (serde `flatten`).
fn shape(doc: &Value, schema: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.strip_prefix("#/components/schemas/").unwrap();
        return shape(doc, &doc["components"]["schemas"][name]);
    }
    let (mut properties, mut required) = (BTreeSet::new(), BTreeSet::new());
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let (p, r) = shape(doc, part);
        properties.extend(p);
        required.extend(r);
    }
    properties.extend(schema["properties"].as_object().into_iter().flatten().map(|(k, _)| k.clone()));
    required.extend(schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from));
    (properties, required)
}

/// An answer has every required field of its documented schema and no undocumented one.
fn assert_fits(doc: &Value, schema: &str, answer: &Value) {
    let (properties, required) = shape(doc, &json!({ "$ref": format!("#/components/schemas/{schema}") }));
    assert!(!properties.is_empty(), "schema {schema} has no properties");
    let keys: BTreeSet<String> = answer.as_object().unwrap_or_else(|| panic!("{schema}: {answer}")).keys().cloned().collect();
    let missing: Vec<_> = required.difference(&keys).collect();
    let extra: Vec<_> = keys.difference(&properties).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{schema}: missing {missing:?}, undocumented {extra:?} in {answer}");
}

/// Why a value does not fit a schema of the document, or `None`: the subset utoipa writes
/// (`$ref`, `allOf`, `oneOf`, `enum`, `type`, `required`, `properties`, `items`). An empty schema
/// takes any value.
///
/// An object whose schema names properties may hold no others (utoipa writes no
/// `additionalProperties` for a struct, and serde writes only the struct's fields): a renamed or
/// added field fails at any depth.
fn misfit(doc: &Value, schema: &Value, value: &Value, at: &str) -> Option<String> {
    misfit_part(doc, schema, value, at, true)
}

/// [`misfit`]; `whole` is false for one part of an `allOf`, whose siblings hold other properties.
fn misfit_part(doc: &Value, schema: &Value, value: &Value, at: &str, whole: bool) -> Option<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.strip_prefix("#/components/schemas/").unwrap();
        return misfit_part(doc, &doc["components"]["schemas"][name], value, at, whole);
    }
    if let Value::Object(fields) = value
        && whole
        && schema.get("additionalProperties").is_none()
    {
        let (properties, _) = shape(doc, schema);
        if !properties.is_empty()
            && let Some(extra) = fields.keys().find(|k| !properties.contains(*k))
        {
            return Some(format!("{at}: `{extra}` is not documented (documented: {properties:?})"));
        }
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        if let Some(why) = misfit_part(doc, part, value, at, false) {
            return Some(why);
        }
    }
    if let Some(options) = schema["oneOf"].as_array().or(schema["anyOf"].as_array())
        && options.iter().all(|o| misfit(doc, o, value, at).is_some())
    {
        return Some(format!("{at}: {value} fits none of {}", Value::Array(options.clone())));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Some(format!("{at}: {value} is not one of {}", Value::Array(allowed.clone())));
    }
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let allowed = types.is_empty() || types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
    if !allowed {
        return Some(format!("{at}: {value} is not of type {}", schema["type"]));
    }
    if let Value::Object(fields) = value {
        for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !fields.contains_key(name) {
                return Some(format!("{at}: `{name}` is required"));
            }
        }
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            if let Some(why) = fields.get(name).and_then(|v| misfit(doc, property, v, &format!("{at}.{name}"))) {
                return Some(why);
            }
        }
    }
    if let (Value::Array(items), Some(item)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            if let Some(why) = misfit(doc, item, v, &format!("{at}[{i}]")) {
                return Some(why);
            }
        }
    }
    None
}

/// An answer fits its documented schema: field names ([`assert_fits`]) and values ([`misfit`]).
pub(crate) fn assert_conforms(doc: &Value, schema: &str, answer: &Value) {
    assert_fits(doc, schema, answer);
    if let Some(why) = misfit(doc, &json!({ "$ref": format!("#/components/schemas/{schema}") }), answer, schema) {
        panic!("{why}\nin {answer}");
    }
}

/// The schema a response refers to.
fn response_schema(doc: &Value, method: &str, path: &str, status: &str) -> String {
    let schema = &doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]["$ref"];
    schema.as_str().unwrap_or_else(|| panic!("{method} {path} {status} has no JSON schema")).rsplit('/').next().unwrap().to_string()
}

async fn answers_fit_their_documented_schemas(db: TestDb) {
    let app = TestApp::new(db).await;
    let router = switchboard_api::router(app.state.clone());
    let doc = fetch_document(&router).await;

    // The webhook's 202 and the error envelope, as written.
    let accepted = &doc["components"]["schemas"]["HookAccepted"];
    assert_eq!(accepted["properties"]["event_id"]["type"], "string");
    assert_eq!(accepted["properties"]["run_id"]["type"], "string");
    assert_eq!(response_schema(&doc, "post", "/hooks/{token}", "202"), "HookAccepted");
    assert_eq!(response_schema(&doc, "post", "/hooks/{token}", "404"), "ErrorBody");
    assert!(doc["paths"]["/hooks/{token}"]["post"]["security"].is_null(), "webhooks take no bearer");
    assert_eq!(doc["components"]["schemas"]["ErrorBody"]["properties"]["error"]["$ref"], "#/components/schemas/ErrorDetail");
    let (detail, required) = shape(&doc, &doc["components"]["schemas"]["ErrorDetail"]);
    assert_eq!(detail, required);
    assert_eq!(detail, BTreeSet::from(["code", "details", "message"].map(String::from)));
    assert_eq!(doc["components"]["schemas"]["ErrorDetail"]["properties"]["details"]["items"]["$ref"], "#/components/schemas/Problem");

    // Real answers fit the schemas their operations name.
    let (status, created) =
        app.call("POST", "/v1/accounts", Some(ADMIN), Some("application/json"), json!({ "name": "a", "plan": "starter" }).to_string()).await;
    assert_eq!(status, 201);
    assert_conforms(&doc, &response_schema(&doc, "post", "/v1/accounts", "201"), &created);
    let key = created["api_key"].as_str().unwrap();
    assert_conforms(&doc, &response_schema(&doc, "get", "/v1/account", "200"), &app.get("/v1/account", key).await.1);

    let def = json!({
        "name": "Lead in",
        "trigger": { "webhook": {} },
        "steps": [{ "id": "note", "action": "log", "input": { "message": "lead {{ event.name }}" } }]
    });
    let workflow = app.workflow(key, &def).await;
    assert_conforms(&doc, &response_schema(&doc, "post", "/v1/workflows", "201"), &workflow);
    let hook = workflow["webhook_url"].as_str().unwrap().strip_prefix("http://sb.test").unwrap().to_string();
    let (status, accepted) = app.call("POST", &hook, None, Some("application/json"), r#"{"name": "Ada"}"#).await;
    assert_eq!(status, 202);
    assert_conforms(&doc, "HookAccepted", &accepted);
    let (status, missing) = app.call("POST", "/hooks/wh_nothing", None, Some("application/json"), "{}").await;
    assert_eq!(status, 404);
    assert_conforms(&doc, "ErrorBody", &missing);
    assert_conforms(&doc, "ErrorDetail", &missing["error"]);

    app.drain().await;
    let run = app.run(key, accepted["run_id"].as_str().unwrap()).await;
    assert_conforms(&doc, &response_schema(&doc, "get", "/v1/runs/{id}", "200"), &run);
    assert_conforms(&doc, "Step", &run["steps"][0]);
    let (_, runs) = app.get("/v1/runs", key).await;
    assert_conforms(&doc, &response_schema(&doc, "get", "/v1/runs", "200"), &runs);
    assert_conforms(&doc, "Run", &runs["runs"][0]);
    let (_, events) = app.call("POST", "/v1/events", Some(key), Some("application/json"), json!({ "type": "x" }).to_string()).await;
    assert_conforms(&doc, &response_schema(&doc, "post", "/v1/events", "202"), &events);
    for group_by in ["unit", "day", "workflow"] {
        let (_, usage) = app.get(&format!("/v1/usage?group_by={group_by}"), key).await;
        assert_conforms(&doc, &response_schema(&doc, "get", "/v1/usage", "200"), &usage);
        assert_conforms(&doc, "UsageTotal", &usage["rows"][0]);
    }
    let account_id = created["id"].as_str().unwrap();
    let (status, added) = app.call("POST", &format!("/v1/admin/accounts/{account_id}/keys"), Some(ADMIN), None, Body::empty()).await;
    assert_eq!(status, 201);
    assert_conforms(&doc, &response_schema(&doc, "post", "/v1/admin/accounts/{id}/keys", "201"), &added);
    assert_eq!(app.get("/v1/account", added["api_key"].as_str().unwrap()).await.0, 200);
    let (_, accounts) = app.get("/v1/admin/accounts", ADMIN).await;
    assert_conforms(&doc, &response_schema(&doc, "get", "/v1/admin/accounts", "200"), &accounts);
    assert_conforms(&doc, "AccountWithKeys", &accounts["accounts"][0]);
    assert_conforms(&doc, "ApiKeyInfo", &accounts["accounts"][0]["keys"][1]);
    let (_, templates) = app.get("/v1/templates", key).await;
    assert_conforms(&doc, "TemplateSummary", &templates["templates"][0]);
    let (status, ready) = app.call("GET", "/readyz", None, None, Body::empty()).await;
    assert_eq!(status, 200);
    assert_conforms(&doc, &response_schema(&doc, "get", "/readyz", "200"), &ready);
}

/// A failed run started with an event that is not an object: its `event`, its `error` and its
/// step's `error` fit the documented schemas, in the run, the list and a test run.
async fn failed_run_fits_its_schema(db: TestDb) {
    let app = TestApp::new(db).await;
    let router = switchboard_api::router(app.state.clone());
    let doc = fetch_document(&router).await;
    let (_, key) = app.account("a").await;
    let def = json!({ "name": "Broken", "trigger": { "manual": {} }, "steps": [{ "id": "send", "action": "test.broken" }] });
    let workflow = app.workflow(&key, &def).await;
    let id = workflow["id"].as_str().unwrap();
    let run_id = app.start(&key, id, &json!(["lead", 42])).await;
    app.drain().await;

    let run = app.run(&key, &run_id).await;
    assert_eq!((run["status"].as_str(), &run["event"]), (Some("failed"), &json!(["lead", 42])), "{run}");
    assert_eq!(run["error"]["class"], "permanent", "{run}");
    assert_eq!(run["error"]["step_id"], "send", "{run}");
    assert_conforms(&doc, &response_schema(&doc, "get", "/v1/runs/{id}", "200"), &run);
    assert_fits(&doc, "Failure", &run["error"]);
    assert_fits(&doc, "Failure", &run["steps"][0]["error"]);
    let (_, runs) = app.get("/v1/runs?status=failed", &key).await;
    assert_conforms(&doc, &response_schema(&doc, "get", "/v1/runs", "200"), &runs);
    assert_eq!(runs["runs"][0]["id"], run_id.as_str());

    let (status, tested) = app.post_json(&format!("/v1/workflows/{id}/test"), &key, &json!({ "event": "text" })).await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(tested["run"]["event"], "text");
    assert_conforms(&doc, &response_schema(&doc, "post", "/v1/workflows/{id}/test", "200"), &tested);
}

/// Every operation with an integer query parameter answers a value that is not one (here: one
/// past `i64::MAX`) with 400 `bad_request`, and documents that 400.
async fn unparsable_query_is_a_documented_400(db: TestDb) {
    let app = TestApp::new(db).await;
    let router = switchboard_api::router(app.state.clone());
    let doc = fetch_document(&router).await;
    let (_, key) = app.account("a").await;
    let mut checked = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(op) = item.get("get") else { continue };
        let integers = op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "query" && p["schema"]["type"] == "integer");
        for parameter in integers {
            let name = parameter["name"].as_str().unwrap();
            let token = if path.starts_with("/v1/admin/") { ADMIN } else { key.as_str() };
            let (status, body) = app.get(&format!("{path}?{name}=9223372036854775808"), token).await;
            assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "GET {path}?{name}=…: {body}");
            assert_eq!(response_schema(&doc, "get", path, "400"), "ErrorBody", "GET {path} does not document its 400");
            checked.push(format!("{path}?{name}"));
        }
    }
    for listed in [
        "/v1/runs?limit",
        "/v1/workflows?limit",
        "/v1/connections?limit",
        "/v1/schedules?limit",
        "/v1/opt-outs?limit",
        "/v1/outbox?limit",
        "/v1/usage/events?after",
        "/v1/calls?limit",
    ] {
        assert!(checked.iter().any(|c| c == listed), "{listed} was not checked: {checked:?}");
    }
}

/// Real answers checked against the operation that gave them, with a record of which
/// operations were seen.
struct Answers<'a> {
    doc: &'a Value,
    seen: BTreeSet<(String, String)>,
}

impl<'a> Answers<'a> {
    fn new(doc: &'a Value) -> Self {
        Self { doc, seen: BTreeSet::new() }
    }

    /// `answer`, the body of `method path` (the documented path, e.g. `/v1/runs/{id}`) with
    /// `status`, fits the schema the document gives that status: every field documented, every
    /// required one present, every value of its type and enum.
    fn check(&mut self, method: &str, path: &str, status: StatusCode, answer: &Value) {
        let op = &self.doc["paths"][path][method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} is not in the document");
        let schema = &op["responses"][status.as_str()]["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{method} {path} answered {status}, which it does not document as JSON: {answer}");
        if let Some(name) = schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
            assert_fits(self.doc, name, answer);
        }
        if let Some(why) = misfit(self.doc, schema, answer, &format!("{method} {path} {status}")) {
            panic!("{why}\nin {answer}");
        }
        self.seen.insert((method.to_uppercase(), path.to_string()));
    }

    /// Sends a request to the router and checks its answer; returns it.
    async fn call(&mut self, app: &TestApp, method: &str, path: &str, uri: &str, token: Option<&str>, body: Option<Value>) -> Value {
        let (content_type, body) = match body {
            Some(b) => (Some("application/json"), Body::from(b.to_string())),
            None => (None, Body::empty()),
        };
        let (status, answer) = app.call(method, uri, token, content_type, body).await;
        assert!(status.is_success(), "{method} {uri}: {status} {answer}");
        self.check(method, path, status, &answer);
        answer
    }

    /// Every operation with a 2xx JSON answer in the document was checked at least once.
    fn assert_every_operation_seen(&self) {
        let mut missed = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let json_2xx = op["responses"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .any(|(status, response)| status.starts_with('2') && response["content"].get("application/json").is_some());
                if json_2xx && !self.seen.contains(&(method.to_uppercase(), path.clone())) {
                    missed.push(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        assert!(missed.is_empty(), "no real answer of these operations was checked against the document: {missed:?}");
    }
}

/// A real answer of every operation the document gives a JSON success answer, checked against
/// the served document; the list of operations comes from the document, so a new one fails here
/// until this test exercises it.
async fn every_operation_answers_its_documented_schema(db: TestDb) {
    let mut app = TestApp::new(db).await;
    // A Google OAuth client, so that the authorize URL can be asked for (nothing is sent to it).
    let mut google = switchboard_integrations::oauth::OAuthApps::default();
    google.insert(switchboard_integrations::oauth::OAuthApp::google("client-id", "client-secret"));
    app.state = app.state.clone().with_oauth(google, &switchboard_integrations::HttpConfig::default()).unwrap();
    let router = switchboard_api::router(app.state.clone());
    let doc = fetch_document(&router).await;
    let mut answers = Answers::new(&doc);
    let admin = Some(ADMIN);

    // Operations.
    answers.call(&app, "GET", "/healthz", "/healthz", None, None).await;
    answers.call(&app, "GET", "/readyz", "/readyz", None, None).await;
    answers.check("GET", "/openapi.json", StatusCode::OK, &doc);

    // Accounts (admin and self).
    let created = answers.call(&app, "POST", "/v1/accounts", "/v1/accounts", admin, Some(json!({ "name": "Studio", "plan": "starter" }))).await;
    let (account_id, api_key) = (created["id"].as_str().unwrap().to_string(), created["api_key"].as_str().unwrap().to_string());
    let key = Some(api_key.as_str());
    answers.call(&app, "POST", "/v1/admin/accounts/{id}/keys", &format!("/v1/admin/accounts/{account_id}/keys"), admin, None).await;
    answers
        .call(&app, "PUT", "/v1/admin/accounts/{id}/plan", &format!("/v1/admin/accounts/{account_id}/plan"), admin, Some(json!({ "plan": "professional" })))
        .await;
    let link = json!({ "stripe_customer_id": "cus_1" });
    answers.call(&app, "PUT", "/v1/admin/accounts/{id}/stripe_customer", &format!("/v1/admin/accounts/{account_id}/stripe_customer"), admin, Some(link)).await;
    answers
        .call(
            &app,
            "PUT",
            "/v1/admin/accounts/{id}/stripe_customer",
            &format!("/v1/admin/accounts/{account_id}/stripe_customer"),
            admin,
            Some(json!({ "stripe_customer_id": null })),
        )
        .await;

    // Connections.
    for provider in ["twilio", "smtp", "crm"] {
        let new = json!({ "provider": provider, "name": format!("{provider}-sandbox"), "sandbox": true });
        answers.call(&app, "POST", "/v1/connections", "/v1/connections", key, Some(new)).await;
    }
    let spare =
        answers.call(&app, "POST", "/v1/connections", "/v1/connections", key, Some(json!({ "provider": "slack", "name": "spare", "sandbox": true }))).await;
    let spare = spare["id"].as_str().unwrap();
    answers.call(&app, "GET", "/v1/connections/{id}", &format!("/v1/connections/{spare}"), key, None).await;
    answers.call(&app, "PATCH", "/v1/connections/{id}", &format!("/v1/connections/{spare}"), key, Some(json!({ "settings": { "note": "x" } }))).await;
    answers.call(&app, "DELETE", "/v1/connections/{id}", &format!("/v1/connections/{spare}"), key, None).await;
    answers.call(&app, "GET", "/v1/connections", "/v1/connections", key, None).await;
    let authorize =
        answers.call(&app, "GET", "/v1/connections/{provider}/authorize", "/v1/connections/google/authorize?name=calendar&redirect=false", key, None).await;
    assert!(authorize["authorize_url"].as_str().unwrap().starts_with("https://accounts.google.com/o/oauth2/v2/auth?"), "{authorize}");

    // Numbers: a call workflow bound to a number, rebound, simulated, unbound.
    let answering = json!({ "name": "Line", "trigger": { "call": {} }, "steps": [
        { "id": "answer", "action": "voice.answer", "input": { "script": [{ "id": "menu", "menu": { "prompt": "Press 1", "options": { "1": "hangup" } } }] } }
    ] });
    let line = answers.call(&app, "POST", "/v1/workflows", "/v1/workflows", key, Some(answering)).await;
    let line = line["id"].as_str().unwrap();
    let bound = json!({ "number": "+15550009999", "connection": "twilio-sandbox", "workflow_id": line });
    let number = answers.call(&app, "POST", "/v1/numbers", "/v1/numbers", key, Some(bound)).await;
    let number = number["id"].as_str().unwrap();
    answers.call(&app, "GET", "/v1/numbers", "/v1/numbers", key, None).await;
    answers.call(&app, "PUT", "/v1/numbers/{id}", &format!("/v1/numbers/{number}"), key, Some(json!({ "workflow_id": line }))).await;
    let simulated = json!({ "from": "+15557654321", "inputs": { "menu": { "digits": "1" } } });
    answers.call(&app, "POST", "/v1/numbers/{id}/simulate", &format!("/v1/numbers/{number}/simulate"), key, Some(simulated)).await;
    answers.call(&app, "DELETE", "/v1/numbers/{id}", &format!("/v1/numbers/{number}"), key, None).await;
    // Schedules (business hours): open with a next change, and never open (`next_change` null).
    let office = json!({
        "name": "Main line",
        "timezone": "America/New_York",
        "weekly": { "mon": ["09:00-12:00", "13:00-17:00"] },
        "holidays": [{ "date": "2026-12-25", "name": "Christmas" }, { "date": "2027-01-01" }],
        "overrides": [{ "date": "2026-12-24", "hours": ["10:00-14:00"] }],
    });
    answers.call(&app, "POST", "/v1/schedules", "/v1/schedules", key, Some(office)).await;
    answers.call(&app, "POST", "/v1/schedules", "/v1/schedules", key, Some(json!({ "name": "spare", "timezone": "UTC" }))).await;
    let open = answers.call(&app, "GET", "/v1/schedules/{name}", "/v1/schedules/Main%20line?at=2026-03-02T15:00:00Z", key, None).await;
    assert_eq!((open["open"].as_bool(), open["next_change"].as_str()), (Some(true), Some("2026-03-02T17:00:00.000Z")), "{open}");
    let never = answers.call(&app, "GET", "/v1/schedules/{name}", "/v1/schedules/spare", key, None).await;
    assert!(never["next_change"].is_null(), "a null next_change is checked: {never}");
    let weekend = json!({ "timezone": "Europe/Berlin", "weekly": { "sat": ["10:00-12:00"] } });
    answers.call(&app, "PUT", "/v1/schedules/{name}", "/v1/schedules/spare", key, Some(weekend)).await;
    answers.call(&app, "DELETE", "/v1/schedules/{name}", "/v1/schedules/spare", key, None).await;
    answers.call(&app, "GET", "/v1/schedules", "/v1/schedules", key, None).await;

    // Contact rules and opt-outs.
    answers.call(&app, "GET", "/v1/contact-rules", "/v1/contact-rules", key, None).await;
    let rules = json!({ "quiet_hours": { "start": "23:00", "end": "06:00" }, "applies_to": ["sms.send"] });
    answers.call(&app, "PUT", "/v1/contact-rules", "/v1/contact-rules", key, Some(rules)).await;
    answers.call(&app, "POST", "/v1/opt-outs", "/v1/opt-outs", key, Some(json!({ "number": "+15557770000", "channel": "sms" }))).await;
    answers.call(&app, "GET", "/v1/opt-outs", "/v1/opt-outs?number=%2B15557770000", key, None).await;
    answers.call(&app, "DELETE", "/v1/opt-outs/{number}", "/v1/opt-outs/%2B15557770000?channel=sms", key, None).await;

    // Action kinds, with their input schemas (the console's palette).
    let kinds = answers.call(&app, "GET", "/v1/actions", "/v1/actions", key, None).await;
    let sms = kinds["actions"].as_array().unwrap().iter().find(|a| a["kind"] == "sms.send").unwrap_or_else(|| panic!("{kinds}"));
    assert_eq!(sms["providers"], json!(["twilio"]), "{sms}");
    assert!(sms["input_schema"]["properties"]["to"].is_object(), "{sms}");

    // Templates: the catalogue, one template, and a workflow made from it.
    let templates = answers.call(&app, "GET", "/v1/templates", "/v1/templates", key, None).await;
    assert!(
        templates["templates"].as_array().unwrap().iter().any(|t| t["params"].as_array().unwrap().iter().any(|p| p.get("default").is_some())),
        "a default is checked"
    );
    answers.call(&app, "GET", "/v1/templates/{slug}", "/v1/templates/lead-nurture", key, None).await;
    let params = json!({ "params": { "business_name": "Studio Ada", "sender": "+15550001111", "from_email": "hello@studio.example" } });
    let nurture = answers.call(&app, "POST", "/v1/templates/{slug}/enable", "/v1/templates/lead-nurture/enable", key, Some(params)).await;
    let nurture = nurture["id"].as_str().unwrap();

    // Workflows: a webhook one through its life, and a test run with an outbox.
    let def = json!({
        "name": "Lead in",
        "trigger": { "webhook": {} },
        "steps": [{ "id": "note", "action": "log", "input": { "message": "lead {{ event.name }}" } }]
    });
    let workflow = answers.call(&app, "POST", "/v1/workflows", "/v1/workflows", key, Some(def.clone())).await;
    let id = workflow["id"].as_str().unwrap().to_string();
    let one = format!("/v1/workflows/{id}");
    answers.call(&app, "GET", "/v1/workflows/{id}", &one, key, None).await;
    answers.call(&app, "PUT", "/v1/workflows/{id}", &one, key, Some(def)).await;
    answers.call(&app, "POST", "/v1/workflows/{id}/disable", &format!("{one}/disable"), key, None).await;
    answers.call(&app, "POST", "/v1/workflows/{id}/enable", &format!("{one}/enable"), key, None).await;
    answers.call(&app, "GET", "/v1/workflows", "/v1/workflows", key, None).await;
    let hook = workflow["webhook_url"].as_str().unwrap().strip_prefix("http://sb.test").unwrap().to_string();
    answers.call(&app, "POST", "/hooks/{token}", &hook, None, Some(json!({ "name": "Ada" }))).await;
    answers.call(&app, "POST", "/v1/workflows/{id}/runs", &format!("{one}/runs"), key, Some(json!({ "name": "Grace" }))).await;
    let lead = json!({ "lead": { "id": "L1", "first_name": "Ada", "email": "ada@example.com", "phone": "+15557654321" } });
    let tested = answers.call(&app, "POST", "/v1/workflows/{id}/test", &format!("/v1/workflows/{nurture}/test"), key, Some(json!({ "event": lead }))).await;
    assert!(!tested["outbox"].as_array().unwrap().is_empty(), "an outbox message is checked: {tested}");
    answers.call(&app, "POST", "/v1/events", "/v1/events", key, Some(json!({ "type": "lead.created", "data": lead }))).await;

    // Runs: finished, failed (with its error) and retried, waiting and cancelled.
    let broken = app.workflow(&api_key, &json!({ "name": "Broken", "trigger": { "manual": {} }, "steps": [{ "id": "send", "action": "test.broken" }] })).await;
    let failed = app.start(&api_key, broken["id"].as_str().unwrap(), &json!({})).await;
    let slow = app.workflow(&api_key, &json!({ "name": "Slow", "trigger": { "manual": {} }, "steps": [{ "id": "later", "delay": "1h" }] })).await;
    let waiting = app.start(&api_key, slow["id"].as_str().unwrap(), &json!({})).await;
    app.drain().await;
    let run = answers.call(&app, "GET", "/v1/runs/{id}", &format!("/v1/runs/{failed}"), key, None).await;
    assert!(run["error"].is_object() && run["steps"][0]["error"].is_object(), "a failure is checked: {run}");
    answers.call(&app, "POST", "/v1/runs/{id}/retry", &format!("/v1/runs/{failed}/retry"), key, None).await;
    answers.call(&app, "GET", "/v1/runs/{id}", &format!("/v1/runs/{waiting}"), key, None).await;
    answers.call(&app, "POST", "/v1/runs/{id}/cancel", &format!("/v1/runs/{waiting}/cancel"), key, None).await;
    app.drain().await;
    let runs = answers.call(&app, "GET", "/v1/runs", "/v1/runs", key, None).await;
    assert!(runs["runs"].as_array().unwrap().len() >= 4, "{runs}");
    answers.call(&app, "GET", "/v1/outbox", "/v1/outbox", key, None).await;

    // Analytics, over two calls of the failed run (sandbox calls keep no rows): one completed,
    // one Twilio refused (its sid, and more, `null`).
    for (token, status, sid, duration, answered_by) in [("t1", "completed", Some("CA1"), Some(75), Some("human")), ("t2", "refused", None, None, None)] {
        let call = CallRow {
            token: token.into(),
            account_id: account_id.clone(),
            connection_id: "c".into(),
            run_id: failed.clone(),
            step_seq: 1,
            step_id: "send".into(),
            direction: "outbound".into(),
            from_number: "+15550001111".into(),
            to_number: "+15552223333".into(),
            tier: "premium".into(),
            call_sid: sid.map(String::from),
            status: status.into(),
            ended: 1,
            answered_by: answered_by.map(String::from),
            duration_s: duration,
            sip_response_code: None,
            recording_url: sid.map(|s| format!("https://api.twilio.com/recordings/{s}")),
            script: "[]".into(),
            scope: "{}".into(),
            state: json!({ "path": ["#0", "menu", "menu"] }).to_string(),
            twiml: None,
            version: 0,
            created_at: app.now(),
            ended_at: Some(app.now()),
        };
        app.engine.store().insert_call(&call).await.unwrap();
    }
    let calls = answers.call(&app, "GET", "/v1/calls", "/v1/calls", key, None).await;
    assert_eq!(calls["calls"].as_array().unwrap().len(), 2, "{calls}");
    let broken = broken["id"].as_str().unwrap();
    let stats = answers.call(&app, "GET", "/v1/workflows/{id}/stats", &format!("/v1/workflows/{broken}/stats"), key, None).await;
    assert!(stats["success_rate"].is_number() && !stats["nodes"].as_array().unwrap().is_empty(), "{stats}");
    answers.call(&app, "GET", "/v1/dashboard", "/v1/dashboard", key, None).await;
    answers.call(&app, "DELETE", "/v1/workflows/{id}", &one, key, None).await;

    // The account and usage, with something used.
    answers.call(&app, "GET", "/v1/account", "/v1/account", key, None).await;
    for group_by in ["unit", "day", "workflow"] {
        let usage = answers.call(&app, "GET", "/v1/usage", &format!("/v1/usage?group_by={group_by}"), key, None).await;
        assert!(!usage["rows"].as_array().unwrap().is_empty(), "{usage}");
    }
    let ledger = answers.call(&app, "GET", "/v1/usage/events", "/v1/usage/events", key, None).await;
    assert!(!ledger["events"].as_array().unwrap().is_empty(), "{ledger}");
    answers.call(&app, "GET", "/v1/admin/usage", "/v1/admin/usage", admin, None).await;
    let accounts = answers.call(&app, "GET", "/v1/admin/accounts", "/v1/admin/accounts", admin, None).await;
    assert!(accounts["accounts"][0]["keys"].as_array().unwrap().len() == 2, "{accounts}");

    answers.assert_every_operation_seen();
}

on_both_backends!(
    every_operation_answers_its_documented_schema,
    document_covers_every_served_route,
    answers_fit_their_documented_schemas,
    failed_run_fits_its_schema,
    unparsable_query_is_a_documented_400,
);
