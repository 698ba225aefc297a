//! `crm.create_task` and `crm.update_lead` against a fake host CRM (wiremock): the exact signed
//! request, the answers the protocol defines, failures (404, 503, a timeout after sending) and
//! the sandbox.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use switchboard_actions::crm::{CrmCreateTask, CrmUpdateLead, verify_signature};
use switchboard_integrations::HttpConfig;
use switchboard_integrations::connections::Vault;
use switchboard_runtime::action::{ActionContext, ActionError, ConnectionRef, Delivery, DynAction, FailureClass};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::{connection, ctx, tls, vault};

const API_KEY: &str = "crm-key-7f3a9c";

fn client() -> reqwest::Client {
    tls();
    switchboard_integrations::client(&HttpConfig { allow_private: true, ..HttpConfig::default() }).unwrap()
}

/// A vault, and a `crm` connection to `server` under `/api`.
fn crm_connection(server: &MockServer) -> (Arc<Vault>, Arc<ConnectionRef>) {
    let vault = vault();
    let conn = connection(&vault, "crm", false, json!({"base_url": format!("{}/api", server.uri()), "api_key": API_KEY}));
    (vault, conn)
}

fn step(conn: Arc<ConnectionRef>, timeout: Duration) -> ActionContext {
    ctx(timeout, Some(conn))
}

async fn create_task(server: &MockServer, input: Value) -> Result<Value, ActionError> {
    let (vault, conn) = crm_connection(server);
    let out = CrmCreateTask::new(client(), vault).execute(&step(conn, Duration::from_secs(5)), input).await?;
    assert!(out.usage.is_empty(), "the host CRM is not metered");
    Ok(out.output)
}

async fn update_lead(server: &MockServer, input: Value) -> Result<Value, ActionError> {
    let (vault, conn) = crm_connection(server);
    let out = CrmUpdateLead::new(client(), vault).execute(&step(conn, Duration::from_secs(5)), input).await?;
    assert!(out.usage.is_empty());
    Ok(out.output)
}

/// The request's signature verifies with the connection's key (and only with it), its timestamp
/// is now, and the key itself appears in no header and not in the body.
fn assert_signed(request: &Request) {
    let get = |name: &str| request.headers.get(name).unwrap_or_else(|| panic!("{name} header")).to_str().unwrap().to_owned();
    let timestamp = get("x-switchboard-timestamp");
    let signature = get("x-switchboard-signature");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(now.abs_diff(timestamp.parse::<u64>().unwrap()) <= 5, "unix seconds, now");
    assert!(verify_signature(API_KEY, &timestamp, &request.body, &signature));
    assert!(!verify_signature("another-key", &timestamp, &request.body, &signature));
    assert!(!verify_signature(API_KEY, &timestamp, b"{}", &signature), "the signature covers the body");
    for (name, value) in &request.headers {
        assert!(!value.to_str().unwrap_or_default().contains(API_KEY), "{name} carries the api key");
    }
    assert!(!String::from_utf8_lossy(&request.body).contains(API_KEY));
}

#[tokio::test]
async fn create_task_sends_the_exact_signed_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/tasks"))
        .and(header("content-type", "application/json"))
        .and(header("idempotency-key", "run_1:3"))
        .and(header("x-switchboard-account", "acc_1"))
        .and(body_json(json!({
            "title": "Call back Ada",
            "lead_id": "L-42",
            "due_at": "2025-03-01T09:00:00+01:00",
            "priority": "high",
            "notes": "Asked for a quote",
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "task_9", "state": "open"})))
        .expect(1)
        .mount(&server)
        .await;

    let output = create_task(
        &server,
        json!({
            "title": "Call back Ada",
            "lead_id": "L-42",
            "due_at": "2025-03-01T09:00:00+01:00",
            "priority": "high",
            "notes": "Asked for a quote",
            "assignee": "",
        }),
    )
    .await
    .unwrap();

    assert_eq!(output, json!({"task_id": "task_9", "status": 201}));
    let requests = server.received_requests().await.unwrap();
    assert_signed(&requests[0]);
}

#[tokio::test]
async fn a_repeated_key_answered_200_is_success_too() {
    let server = MockServer::start().await;
    Mock::given(path("/api/tasks")).respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 77}))).mount(&server).await;
    let output = create_task(&server, json!({"title": "Follow up", "lead_id": 42})).await.unwrap();
    assert_eq!(output, json!({"task_id": 77, "status": 200}));
    let sent: Value = serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(sent, json!({"title": "Follow up", "lead_id": "42"}), "lead ids are strings on the wire");
}

#[tokio::test]
async fn an_answer_without_an_id_is_still_a_created_task() {
    let server = MockServer::start().await;
    Mock::given(path("/api/tasks")).respond_with(ResponseTemplate::new(201).set_body_string("created")).mount(&server).await;
    // Failing would invite a retry with a new Idempotency-Key, and a second task.
    let output = create_task(&server, json!({"title": "Follow up"})).await.unwrap();
    assert_eq!(output, json!({"task_id": null, "status": 201}));
}

#[tokio::test]
async fn update_lead_encodes_the_lead_id_and_sends_the_fields() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/api/leads/lead%2F42%20b"))
        .and(header("idempotency-key", "run_1:3"))
        .and(body_json(json!({"fields": {"stage": "qualified", "score": 87}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "lead/42 b", "stage": "qualified"})))
        .expect(1)
        .mount(&server)
        .await;

    let output = update_lead(&server, json!({"lead_id": "lead/42 b", "fields": {"stage": "qualified", "score": 87}})).await.unwrap();

    assert_eq!(output, json!({"lead_id": "lead/42 b", "updated": ["score", "stage"], "response": {"id": "lead/42 b", "stage": "qualified"}}));
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[0].url.path(), "/api/leads/lead%2F42%20b");
    assert_signed(&requests[0]);
}

#[tokio::test]
async fn an_empty_answer_is_a_null_response() {
    let server = MockServer::start().await;
    Mock::given(path("/api/leads/7")).respond_with(ResponseTemplate::new(204)).mount(&server).await;
    let output = update_lead(&server, json!({"lead_id": 7, "fields": {"owner": "sam"}})).await.unwrap();
    assert_eq!(output, json!({"lead_id": "7", "updated": ["owner"], "response": null}));
}

#[tokio::test]
async fn not_found_is_permanent_with_the_crms_reason() {
    let server = MockServer::start().await;
    Mock::given(path("/api/leads/L-404")).respond_with(ResponseTemplate::new(404).set_body_string("no lead L-404")).mount(&server).await;
    let err = update_lead(&server, json!({"lead_id": "L-404", "fields": {"stage": "won"}})).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, "http_404"));
    assert!(err.message.contains("no lead L-404"), "{}", err.message);
}

#[tokio::test]
async fn unavailable_is_retryable_with_retry_after() {
    let server = MockServer::start().await;
    Mock::given(path("/api/tasks")).respond_with(ResponseTemplate::new(503).insert_header("retry-after", "30")).mount(&server).await;
    let err = create_task(&server, json!({"title": "x"})).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Retryable, "http_503"));
    assert_eq!(err.retry_after_ms, Some(30_000));
}

#[tokio::test]
async fn a_timeout_after_sending_is_retryable_because_the_crm_dedupes() {
    let server = MockServer::start().await;
    Mock::given(path("/api/tasks"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "t"})).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let (vault, conn) = crm_connection(&server);
    let action = CrmCreateTask::new(client(), vault);
    assert_eq!(<CrmCreateTask as switchboard_runtime::action::Action>::DELIVERY, Delivery::Idempotent);
    let err = action.execute(&step(conn, Duration::from_millis(300)), json!({"title": "x"})).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Retryable, "timeout"));
    assert_eq!(server.received_requests().await.unwrap().len(), 1, "the request had left");
}

#[tokio::test]
async fn failures_never_quote_the_api_key() {
    let vault = vault();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conn = connection(&vault, "crm", false, json!({"base_url": format!("http://127.0.0.1:{closed}/api"), "api_key": API_KEY}));
    let err = CrmCreateTask::new(client(), vault.clone()).execute(&step(conn, Duration::from_secs(5)), json!({"title": "x"})).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Retryable, "connect_error"));
    assert!(!format!("{err:?}").contains(API_KEY));

    let twilio = connection(&vault, "twilio", false, json!({"account_sid": "AC00000000000000000000000000000000", "auth_token": API_KEY}));
    let err =
        CrmUpdateLead::new(client(), vault).execute(&step(twilio, Duration::from_secs(5)), json!({"lead_id": "1", "fields": {"a": 1}})).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, "connection_invalid"));
    assert!(!format!("{err:?}").contains(API_KEY));
}

#[tokio::test]
async fn bad_input_or_no_connection_fails_permanently_without_a_request() {
    let server = MockServer::start().await;
    let (vault, conn) = crm_connection(&server);
    let create = CrmCreateTask::new(client(), vault.clone());
    let update = CrmUpdateLead::new(client(), vault);
    let ctx_with = step(conn, Duration::from_secs(5));

    for input in [json!({"title": ""}), json!({"title": "x", "priority": "asap"}), json!({"title": "x", "due_at": "tomorrow"}), json!({"lead_id": "1"})] {
        let err = create.execute(&ctx_with, input.clone()).await.unwrap_err();
        assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, "invalid_input"), "{input}");
    }
    for input in [json!({"lead_id": "1", "fields": {}}), json!({"lead_id": " ", "fields": {"a": 1}}), json!({"fields": {"a": 1}})] {
        let err = update.execute(&ctx_with, input.clone()).await.unwrap_err();
        assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, "invalid_input"), "{input}");
    }
    let err = create.execute(&ctx(Duration::from_secs(5), None), json!({"title": "x"})).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, "missing_connection"));
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn sandbox_renders_without_credentials_or_a_request() {
    let server = MockServer::start().await;
    let vault = vault();
    // Sandbox connections may hold no credentials at all.
    let conn = connection(&vault, "crm", true, json!({}));
    let ctx = step(conn, Duration::from_secs(5));

    let sent =
        CrmCreateTask::new(client(), vault.clone()).sandbox(&ctx, &json!({"title": "Call Ada", "lead_id": "L 1", "priority": "low", "notes": null})).unwrap();
    assert_eq!(sent.to.as_deref(), Some("L 1"));
    assert_eq!(sent.rendered, json!({"method": "POST", "path": "/tasks", "body": {"title": "Call Ada", "lead_id": "L 1", "priority": "low"}}));
    assert_eq!(sent.output, json!({"task_id": null, "sandbox": true}));
    assert!(sent.usage.is_empty());
    let titled = CrmCreateTask::new(client(), vault.clone()).sandbox(&ctx, &json!({"title": "Call Ada"})).unwrap();
    assert_eq!(titled.to.as_deref(), Some("Call Ada"));

    let sent = CrmUpdateLead::new(client(), vault).sandbox(&ctx, &json!({"lead_id": "L/1", "fields": {"stage": "won"}})).unwrap();
    assert_eq!(sent.to.as_deref(), Some("L/1"));
    assert_eq!(sent.rendered, json!({"method": "PATCH", "path": "/leads/L%2F1", "body": {"fields": {"stage": "won"}}}));
    assert_eq!(sent.output, json!({"lead_id": "L/1", "updated": ["stage"], "sandbox": true}));
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[test]
fn literal_inputs_are_checked_at_save_time() {
    let vault = vault();
    let create = CrmCreateTask::new(reqwest::Client::new(), vault.clone());
    let update = CrmUpdateLead::new(reqwest::Client::new(), vault);
    let paths = |problems: Vec<(String, String)>| problems.into_iter().map(|(p, _)| p).collect::<Vec<_>>();
    let check_create = |input: Value| paths(DynAction::validate(&create, input.as_object().unwrap()));
    let check_update = |input: Value| paths(DynAction::validate(&update, input.as_object().unwrap()));

    assert!(check_create(json!({"title": "x", "due_at": "2025-03-01T09:00:00Z", "priority": "urgent"})).is_empty());
    assert!(check_create(json!({"title": "{{ trigger.title }}", "due_at": "{{ vars.due }}", "priority": "{{ vars.p }}"})).is_empty());
    assert_eq!(check_create(json!({"title": " ", "due_at": "2025-03-01", "priority": "Urgent"})), ["title", "due_at", "priority"]);
    assert!(check_update(json!({"lead_id": "{{ trigger.lead }}", "fields": {"stage": "won"}})).is_empty());
    assert_eq!(check_update(json!({"lead_id": "", "fields": {}})), ["lead_id", "fields"]);
}
