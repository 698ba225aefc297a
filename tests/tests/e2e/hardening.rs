//! Hardening: definitions that once overflowed the stack, durations that overflowed due times,
//! unknown webhook tokens that grew memory, the database going away, webhook secrets at rest,
//! templates enabled twice, and messages a user can act on.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use switchboard_api::AppState;
use switchboard_runtime::engine::{Engine, EngineConfig};
use switchboard_runtime::store::{Store, StoreConfig};

use crate::crash::{free_port, server_log, start_with};
use crate::support::{ADMIN, Proxy, TempDir, TestApp, TestDb, actions_config};
use crate::{on_both_backends, on_postgres};

/// `n` steps, each a branch whose `else` goes to the next; the last ends the run, or goes back
/// to the first (`cycle`).
fn goto_chain(n: usize, cycle: bool) -> Value {
    let steps: Vec<Value> = (0..n)
        .map(|i| {
            let next = if i + 1 < n {
                format!("s{}", i + 1)
            } else if cycle {
                "s0".into()
            } else {
                "end".into()
            };
            json!({ "id": format!("s{i}"), "branch": [{ "else": next }] })
        })
        .collect();
    json!({ "name": "chain", "trigger": { "manual": {} }, "steps": steps })
}

fn problems(body: &Value) -> Vec<(String, String)> {
    body["error"]["details"]
        .as_array()
        .map(|d| d.iter().map(|p| (p["path"].as_str().unwrap().to_string(), p["message"].as_str().unwrap().to_string())).collect())
        .unwrap_or_default()
}

/// A definition with a parameter `depth` objects deep (the document is level 1, `params` 2).
fn nested(depth: usize) -> Value {
    let mut value = json!("leaf");
    for _ in 0..depth {
        value = json!({ "a": value });
    }
    json!({ "name": "deep", "trigger": { "manual": {} }, "params": { "deep": value }, "steps": [{ "id": "log", "action": "log", "input": { "message": "x" } }] })
}

async fn oversized_definitions_are_refused_with_their_limit(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("big").await;
    for def in [goto_chain(15_000, false), goto_chain(20_000, true), goto_chain(1_001, false)] {
        let (status, body) = app.post_json("/v1/workflows", &key, &def).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let found = problems(&body);
        assert_eq!(found.len(), 1, "{body}");
        assert_eq!(found[0].0, "steps");
        assert!(found[0].1.contains("at most 1000"), "{body}");
    }
    // At the limit the cycle check walks 1,000 steps without recursion: the chain is saved, the
    // cycle refused as one.
    let (status, body) = app.post_json("/v1/workflows", &key, &goto_chain(1_000, false)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.post_json("/v1/workflows", &key, &goto_chain(1_000, true)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(problems(&body)[0].1.contains("cycle"), "{body}");

    // Nesting: 32 levels in all are fine, 33 are not, and the answer says where.
    let (status, body) = app.post_json("/v1/workflows", &key, &nested(26)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.post_json("/v1/workflows", &key, &nested(40)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let found = problems(&body);
    assert!(found[0].0.starts_with("params.deep.a.a"), "{body}");
    assert!(found[0].1.contains("32"), "{body}");
}

async fn overflowing_durations_are_refused_and_long_ones_never_fire_early(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("time").await;
    let delay = |d: Value| json!({ "name": "d", "trigger": { "manual": {} }, "steps": [{ "id": "wait", "delay": d }] });
    let refused = [
        ("steps[0].delay", delay(json!("106751991167d"))),
        ("steps[0].delay", delay(json!("9223372036854775s"))),
        ("steps[0].delay", delay(json!("2562047788015h"))),
        ("steps[0].delay", delay(json!("11y"))),
        ("steps[0].delay.for", delay(json!({ "for": "3653d" }))),
        ("steps[0].delay.until", delay(json!({ "until": "2199-01-01T00:00:00Z" }))),
        (
            "steps[0].wait_for.timeout",
            json!({ "name": "w", "trigger": { "manual": {} }, "steps": [{ "id": "w", "wait_for": { "event": "x", "timeout": "9223372036854775s" } }] }),
        ),
        (
            "steps[0].retry.backoff",
            json!({ "name": "r", "trigger": { "manual": {} }, "steps": [{ "id": "f", "action": "test.flaky", "retry": { "max_attempts": 3, "backoff": "2562047788015h" } }] }),
        ),
    ];
    for (path, def) in refused {
        let (status, body) = app.post_json("/v1/workflows", &key, &def).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        let found = problems(&body);
        assert_eq!(found.len(), 1, "{body}");
        assert_eq!(found[0].0, path, "{body}");
        assert!(found[0].1.contains("10 years"), "{body}");
    }

    // Nine years is allowed, and waits: its due time is nine years ahead, not now.
    let wf = app.workflow(&key, &delay(json!("3285d"))).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    app.drain().await;
    app.advance(86_400_000).await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "waiting", "{run}");
    let until = chrono::DateTime::parse_from_rfc3339(run["steps"][0]["output"]["until"].as_str().unwrap()).unwrap().timestamp_millis();
    assert!(until > app.now() + 3_000 * 86_400_000, "{run}");

    // An `until` rendered from the event fifty years ahead fails the step; it never fires.
    let wf = app.workflow(&key, &delay(json!({ "until": "{{ event.at }}" }))).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({ "at": "2076-01-01T00:00:00Z" })).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["steps"][0]["error"]["code"], "invalid_time", "{run}");
    assert!(run["steps"][0]["error"]["message"].as_str().unwrap().contains("10 years"), "{run}");
}

/// The process's resident memory, from `/proc`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A real `serve`: a 15,000-step definition is a 422 and the process goes on; 5,000 requests to
/// unknown 60 kB webhook tokens are 404s that leave its memory flat.
async fn a_real_server_survives_hostile_input(db: TestDb) {
    let data = TempDir::new();
    let server = start_with(&db.url, &data, free_port(), &[]).await;
    let pid = server.child.id().unwrap();
    let http = reqwest::Client::new();
    let key = server.account_key(&http, "hostile").await;
    for def in [goto_chain(15_000, false), goto_chain(20_000, true)] {
        let res = http.post(format!("{}/v1/workflows", server.base)).bearer_auth(&key).json(&def).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let health = http.get(format!("{}/healthz", server.base)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "{}", server_log(&data));

    let unknown = |i: usize| format!("{}/hooks/{}{i}", server.base, "x".repeat(60_000));
    let flood = |range: std::ops::Range<usize>| {
        let http = http.clone();
        futures::stream::iter(range.map(move |i| {
            let req = http.post(unknown(i)).json(&json!({ "lead": {} }));
            async move { req.send().await.unwrap().status() }
        }))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
    };
    // Warm up (allocator arenas, connection buffers), then measure.
    assert!(flood(0..500).await.iter().all(|s| *s == StatusCode::NOT_FOUND));
    let before = rss_kib(pid);
    assert!(flood(500..5_500).await.iter().all(|s| *s == StatusCode::NOT_FOUND));
    let after = rss_kib(pid);
    // Before the fix each request kept its 60 kB token (≈ 300 MB for 5,000).
    assert!(after < before + 30 * 1024, "RSS grew from {before} KiB to {after} KiB");
}

/// PostgreSQL through a TCP proxy that is cut and restored: while it is away, requests that
/// need it answer `503 database_unavailable` with `Retry-After` within a second and `/readyz`
/// says not ready; afterwards everything works again.
async fn database_outage_answers_503_promptly(db: TestDb) {
    let upstream = "127.0.0.1:5432";
    let mut proxy = Proxy::start(upstream).await;
    let url = db.url.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    assert_ne!(url, db.url, "the test database URL should name 127.0.0.1:5432");
    let store = Store::connect(&StoreConfig { url, max_connections: 4 }).await.unwrap();
    store.migrate().await.unwrap();
    let config = actions_config();
    let vault = config.vault.clone();
    let actions = switchboard_actions::registry(&config).unwrap();
    let clock = std::sync::Arc::new(switchboard_runtime::clock::SystemClock);
    let engine = std::sync::Arc::new(Engine::new(store, actions, clock, EngineConfig::default()));
    let state = AppState::new(engine, vault, ADMIN, "http://sb.test");
    let call = |method: &str, path: &str, key: Option<&str>, body: Option<Value>| {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                axum::body::Body::from(b.to_string())
            }
            None => axum::body::Body::empty(),
        };
        let router = switchboard_api::router(state.clone());
        let req = req.body(body).unwrap();
        async move {
            use tower::ServiceExt;
            let res = router.oneshot(req).await.unwrap();
            let status = res.status();
            let retry_after = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
            (status, retry_after, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
        }
    };
    let (status, _, account) = call("POST", "/v1/accounts", Some(ADMIN), Some(json!({ "name": "outage" }))).await;
    assert_eq!(status, StatusCode::CREATED);
    let key = account["api_key"].as_str().unwrap().to_string();
    let def = json!({ "name": "hook", "trigger": { "webhook": {} }, "steps": [{ "id": "log", "action": "log", "input": { "message": "hi" } }] });
    let (status, _, wf) = call("POST", "/v1/workflows", Some(&key), Some(def)).await;
    assert_eq!(status, StatusCode::CREATED, "{wf}");
    let hook = wf["webhook_url"].as_str().unwrap().trim_start_matches("http://sb.test").to_string();
    let (status, _, _) = call("POST", &hook, None, Some(json!({ "n": 0 }))).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    proxy.stop();
    for (method, path, auth) in [("POST", hook.as_str(), None), ("GET", "/v1/runs", Some(key.as_str())), ("GET", "/v1/workflows", Some(key.as_str()))] {
        let started = Instant::now();
        let (status, retry_after, body) = call(method, path, auth, (method == "POST").then(|| json!({ "n": 1 }))).await;
        let took = started.elapsed();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
        assert!(retry_after.is_some(), "{method} {path}: no Retry-After");
        assert!(took < Duration::from_secs(1), "{method} {path} took {took:?}");
    }
    let started = Instant::now();
    let (status, _, body) = call("GET", "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["database"], "unreachable");
    assert!(started.elapsed() < Duration::from_secs(1), "readyz took {:?}", started.elapsed());

    proxy.resume().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body) = call("POST", &hook, None, Some(json!({ "n": 2 }))).await;
        if status == StatusCode::ACCEPTED {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(Instant::now() < deadline, "the database did not come back: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, body) = call("GET", "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Every stored workflow document, read from the database itself (the SQLite files as bytes,
/// PostgreSQL's rows).
async fn stored_bytes(db: &TestDb) -> Vec<u8> {
    match db.url.strip_prefix("sqlite://") {
        Some(path) => {
            let mut bytes = std::fs::read(path).unwrap();
            bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
            bytes
        }
        None => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            let rows: Vec<(String,)> = sqlx::query_as("SELECT definition FROM workflow_versions").fetch_all(&pool).await.unwrap();
            rows.into_iter().flat_map(|r| r.0.into_bytes()).collect()
        }
    }
}

async fn webhook_secrets_are_sealed_at_rest(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("sealed").await;
    let secret = format!("hush-{}", uuid::Uuid::new_v4().simple());
    let def =
        json!({ "name": "signed", "trigger": { "webhook": { "secret": secret } }, "steps": [{ "id": "log", "action": "log", "input": { "message": "hi" } }] });
    let wf = app.workflow(&key, &def).await;
    let id = wf["id"].as_str().unwrap().to_string();
    let hook = wf["webhook_url"].as_str().unwrap().trim_start_matches("http://sb.test").to_string();
    assert!(wf["trigger"]["webhook"]["secret"]["sealed"].is_string(), "{wf}");
    assert!(!wf.to_string().contains(&secret), "{wf}");

    let post = |sig: String, body: &'static str| {
        let req = axum::http::Request::post(hook.clone())
            .header("content-type", "application/json")
            .header("x-signature-256", sig)
            .body(axum::body::Body::from(body))
            .unwrap();
        app.send(req)
    };
    let body = r#"{"lead": {"first_name": "Ada"}}"#;
    assert_eq!(post(sign(&secret, body.as_bytes()), body).await.0, StatusCode::ACCEPTED);
    assert_eq!(post(sign("wrong", body.as_bytes()), body).await.0, StatusCode::UNAUTHORIZED);

    // A document read back and sent again keeps its secret.
    let (_, current) = app.get(&format!("/v1/workflows/{id}"), &key).await;
    let again = json!({ "name": "signed v2", "trigger": current["trigger"], "steps": current["steps"] });
    let (status, body2) = app.call("PUT", &format!("/v1/workflows/{id}"), Some(&key), Some("application/json"), again.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body2}");
    assert_eq!(post(sign(&secret, body.as_bytes()), body).await.0, StatusCode::ACCEPTED);
    // Another workflow cannot borrow a sealed secret it cannot read.
    let (status, body2) = app.post_json("/v1/workflows", &key, &again).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body2}");
    assert_eq!(problems(&body2)[0].0, "trigger.webhook.secret");

    let bytes = stored_bytes(&app._db).await;
    assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "the webhook secret is readable in the database");

    // A version stored before secrets were sealed is sealed at start-up and still verifies.
    let legacy = json!({ "name": "signed", "trigger": { "webhook": { "secret": secret } }, "steps": def["steps"] });
    app.engine.store().rewrite_version(&id, 2, &legacy.to_string()).await.unwrap();
    let sealed = switchboard_api::routes::hooks::seal_stored_secrets(app.engine.store(), &app.state.vault).await.unwrap();
    assert_eq!(sealed, 1);
    let bytes = stored_bytes(&app._db).await;
    let stored = String::from_utf8_lossy(&bytes).contains(&format!("\"secret\":\"{secret}\""));
    assert!(!stored, "the legacy secret is still stored as text");
    assert_eq!(post(sign(&secret, body.as_bytes()), body).await.0, StatusCode::ACCEPTED);
}

async fn enabling_a_template_twice_answers_409_unless_named(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    let (status, _) = app.post_json("/v1/connections", &key, &json!({ "provider": "crm", "name": "crm", "sandbox": true })).await;
    assert_eq!(status, StatusCode::CREATED);
    let params = json!({ "params": { "senior_rep": "maria", "standard_rep": "sam" } });
    let (status, first) = app.post_json("/v1/templates/lead-scoring/enable", &key, &params).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, body) = app.post_json("/v1/templates/lead-scoring/enable", &key, &params).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "already_enabled");
    assert_eq!(body["error"]["workflow_id"], first["id"]);
    // Another copy with a name of its own.
    let mut named = params.clone();
    named["name"] = json!("Lead scoring (west)");
    let (status, second) = app.post_json("/v1/templates/lead-scoring/enable", &key, &named).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["name"], "Lead scoring (west)");
    // Once the first copy is deleted, the next one points at the named copy.
    let (status, _) = app.call("DELETE", &format!("/v1/workflows/{}", first["id"].as_str().unwrap()), Some(&key), None, axum::body::Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.post_json("/v1/templates/lead-scoring/enable", &key, &params).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["workflow_id"], second["id"]);
}

async fn messages_say_what_to_fix(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("words").await;
    // The admin token on an account route.
    let (status, body) = app.get("/v1/workflows", crate::support::ADMIN).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"]["message"].as_str().unwrap().contains("admin token"), "{body}");
    // A field missing from the event is named by its path.
    let def = json!({ "name": "greet", "trigger": { "manual": {} }, "steps": [{ "id": "log", "action": "log", "input": { "message": "Hi {{ event.lead.first_name }}" } }] });
    let wf = app.workflow(&key, &def).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({ "contact": {} })).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "failed", "{run}");
    let message = run["steps"][0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("event.lead.first_name is not in the event"), "{message}");
}

on_both_backends!(
    oversized_definitions_are_refused_with_their_limit,
    overflowing_durations_are_refused_and_long_ones_never_fire_early,
    webhook_secrets_are_sealed_at_rest,
    enabling_a_template_twice_answers_409_unless_named,
    messages_say_what_to_fix,
);
on_postgres!(database_outage_answers_503_promptly);

mod a_real_server_survives_hostile_input {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        if let Some(db) = crate::support::TestDb::new(crate::support::Backend::Sqlite).await {
            super::a_real_server_survives_hostile_input(db).await;
        }
    }
}
