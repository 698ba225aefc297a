//! `http.request` against a local fake receiver (wiremock): the exact request, success, 4xx,
//! 5xx, 429 with `Retry-After`, a timeout after sending, and the address guard.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_actions::HttpRequest;
use switchboard_integrations::HttpConfig;
use switchboard_runtime::action::{ActionContext, ActionError, ActionOutput, DynAction, FailureClass};
use switchboard_runtime::metering::Usage;
use wiremock::matchers::{body_json, body_string, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn action(allow_private: bool) -> HttpRequest {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = switchboard_integrations::client(&HttpConfig { allow_private, ..HttpConfig::default() }).unwrap();
    HttpRequest::new(client)
}

fn ctx(timeout: Duration) -> ActionContext {
    crate::support::ctx(timeout, None)
}

async fn run(allow_private: bool, input: Value) -> Result<ActionOutput, ActionError> {
    action(allow_private).execute(&ctx(Duration::from_secs(5)), input).await
}

async fn answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/hook")).respond_with(template).mount(&server).await;
    server
}

#[tokio::test]
async fn sends_the_exact_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/lead"))
        .and(header("idempotency-key", "run_1:3"))
        .and(header("x-source", "switchboard"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"name": "Ada", "score": 3, "tags": ["hot"]})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    let input = json!({
        "method": "post",
        "url": format!("{}/hooks/lead", server.uri()),
        "headers": {"X-Source": "switchboard"},
        "body": {"name": "Ada", "score": 3, "tags": ["hot"]},
    });
    run(true, input).await.unwrap();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].headers.get_all("idempotency-key").iter().count(), 1);
}

#[tokio::test]
async fn keeps_the_authors_idempotency_key_and_sends_text_as_is() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/hook"))
        .and(header("idempotency-key", "mine"))
        .and(header("content-type", "text/plain; charset=utf-8"))
        .and(body_string("name=Ada&score=3"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;

    let input = json!({
        "method": "PUT",
        "url": format!("{}/hook", server.uri()),
        "headers": {"Idempotency-Key": "mine"},
        "body": "name=Ada&score=3",
    });
    run(true, input).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[0].headers.get_all("idempotency-key").iter().count(), 1);
}

#[tokio::test]
async fn ok_answer_is_success_with_output_and_usage() {
    let server = answering(ResponseTemplate::new(200).set_body_json(json!({"received": true, "id": 7})).insert_header("x-request-id", "abc")).await;
    let out = run(true, json!({"method": "GET", "url": format!("{}/hook", server.uri())})).await.unwrap();

    assert_eq!(out.output["status"], 200);
    assert_eq!(out.output["body"], json!({"received": true, "id": 7}));
    assert_eq!(out.output["headers"]["x-request-id"], "abc");
    assert_eq!(out.output["headers"]["content-type"], "application/json");
    assert_eq!(out.usage, vec![Usage { unit: "http_request".into(), quantity: 1 }]);
}

#[tokio::test]
async fn text_answer_is_kept_as_text_and_truncated_at_64_kib() {
    let server = answering(ResponseTemplate::new(200).set_body_string("a".repeat(100 * 1024))).await;
    let out = run(true, json!({"method": "GET", "url": format!("{}/hook", server.uri())})).await.unwrap();
    assert_eq!(out.output["body"].as_str().unwrap().len(), 64 * 1024);
}

#[tokio::test]
async fn server_error_is_retryable() {
    let server = answering(ResponseTemplate::new(500).set_body_string("database down")).await;
    let err = run(true, json!({"method": "POST", "url": format!("{}/hook", server.uri())})).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable);
    assert_eq!(err.code, "http_500");
    assert_eq!(err.message, "HTTP 500 Internal Server Error: database down");
    assert_eq!(err.retry_after_ms, None);
}

#[tokio::test]
async fn not_found_is_permanent() {
    let server = answering(ResponseTemplate::new(404).set_body_string("no such hook")).await;
    let err = run(true, json!({"method": "POST", "url": format!("{}/hook", server.uri())})).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert_eq!(err.code, "http_404");
    assert!(err.message.contains("no such hook"), "{}", err.message);
}

#[tokio::test]
async fn throttled_is_retryable_after_the_given_delay() {
    let server = answering(ResponseTemplate::new(429).insert_header("retry-after", "7")).await;
    let err = run(true, json!({"method": "POST", "url": format!("{}/hook", server.uri())})).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable);
    assert_eq!(err.code, "http_429");
    assert_eq!(err.retry_after_ms, Some(7_000));
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_outcome_unknown() {
    let server = answering(ResponseTemplate::new(200).set_delay(Duration::from_secs(5))).await;
    let input = json!({"method": "POST", "url": format!("{}/hook", server.uri()), "body": {"a": 1}});
    let err = action(true).execute(&ctx(Duration::from_millis(200)), input).await.unwrap_err();
    assert_eq!(err.class, FailureClass::OutcomeUnknown);
    assert_eq!(err.code, "timeout");
    // The request did leave: that is why it must not be resent blindly.
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn private_addresses_are_refused_without_reaching_the_server() {
    let server = answering(ResponseTemplate::new(200)).await;
    let port = server.address().port();
    for url in [format!("http://127.0.0.1:{port}/hook"), format!("http://localhost:{port}/hook")] {
        let err = run(false, json!({"method": "POST", "url": url, "body": {"a": 1}})).await.unwrap_err();
        assert_eq!(err.class, FailureClass::Permanent, "{url}");
        assert_eq!(err.code, "address_not_allowed", "{url}");
        assert!(err.message.contains("SWITCHBOARD_HTTP_ALLOW_PRIVATE"), "{}", err.message);
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 0);
}

#[tokio::test]
async fn invalid_rendered_input_is_permanent() {
    for input in [
        json!({"method": "TRACE", "url": "https://example.com"}),
        json!({"method": "GET", "url": "file:///etc/passwd"}),
        json!({"method": "GET", "url": "https://example.com", "headers": {"X-Bad": "a\nb"}}),
        json!({"url": "https://example.com"}),
    ] {
        let err = run(false, input.clone()).await.unwrap_err();
        assert_eq!(err.class, FailureClass::Permanent, "{input}");
        assert_eq!(err.code, "invalid_input", "{input}");
    }
}
