//! `slack.post_message` against local fakes of Slack (wiremock): `chat.postMessage` with a bot
//! token (HTTP 200 with `ok: true` / `ok: false`, 429 with `Retry-After`, 5xx, a timeout) and an
//! incoming webhook (200 `ok`, plain-text errors), the sandbox, and that neither the token nor
//! the webhook URL ever shows.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_actions::slack_post_message::SlackPostMessage;
use switchboard_integrations::HttpConfig;
use switchboard_runtime::action::{ActionError, ActionOutput, ConnectionRef, DynAction, FailureClass, RateLimit};
use switchboard_runtime::metering::Usage;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{connection, ctx, tls, vault};

const TOKEN: &str = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy";
const WEBHOOK_PATH: &str = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX";

/// The action, a connection for it, and the fake.
struct Fixture {
    action: SlackPostMessage,
    connection: Arc<ConnectionRef>,
    server: MockServer,
}

impl Fixture {
    /// A bot-token connection, Slack's Web API faked at the server's root.
    async fn bot() -> Self {
        Self::new(|_| json!({"bot_token": TOKEN})).await
    }

    /// An incoming-webhook connection whose URL points at the fake.
    async fn webhook() -> Self {
        Self::new(|server| json!({"webhook_url": format!("{}{WEBHOOK_PATH}", server.uri())})).await
    }

    async fn new(credentials: impl FnOnce(&MockServer) -> Value) -> Self {
        tls();
        let server = MockServer::start().await;
        let vault = vault();
        let connection = connection(&vault, "slack", false, credentials(&server));
        let client = switchboard_integrations::client(&HttpConfig { allow_private: true, ..HttpConfig::default() }).unwrap();
        let action = SlackPostMessage::new(client, vault, format!("{}/", server.uri()));
        Self { action, connection, server }
    }

    async fn send(&self, input: Value) -> Result<ActionOutput, ActionError> {
        self.send_within(Duration::from_secs(5), input).await
    }

    async fn send_within(&self, timeout: Duration, input: Value) -> Result<ActionOutput, ActionError> {
        self.action.execute(&ctx(timeout, Some(self.connection.clone())), input).await
    }

    /// `chat.postMessage` answers with `template`.
    async fn api_answering(&self, template: ResponseTemplate) {
        Mock::given(method("POST")).and(path("/api/chat.postMessage")).respond_with(template).mount(&self.server).await;
    }

    /// The webhook answers with `template`.
    async fn webhook_answering(&self, template: ResponseTemplate) {
        Mock::given(method("POST")).and(path(WEBHOOK_PATH)).respond_with(template).mount(&self.server).await;
    }

    async fn requests(&self) -> usize {
        self.server.received_requests().await.unwrap().len()
    }
}

fn input() -> Value {
    json!({"channel": "C0123456789", "text": "New lead: Ada Lovelace (score 92)"})
}

/// Slack's answer to a posted message.
fn posted() -> Value {
    json!({
        "ok": true,
        "channel": "C0123456789",
        "ts": "1503435956.000247",
        "message": {
            "text": "New lead: Ada Lovelace (score 92)",
            "username": "switchboard",
            "bot_id": "B123ABC456",
            "type": "message",
            "subtype": "bot_message",
            "ts": "1503435956.000247",
        },
    })
}

/// Neither secret appears in any printing of a failure.
fn assert_no_secret(err: &ActionError) {
    let printed = format!("{err:?} {err} {}", serde_json::to_string(err).unwrap());
    assert!(!printed.contains(TOKEN), "the bot token leaked: {printed}");
    assert!(!printed.contains("XXXXXXXXXXXXXXXXXXXXXXXX") && !printed.contains("/services/"), "the webhook URL leaked: {printed}");
}

#[tokio::test]
async fn bot_sends_the_exact_request() {
    let f = Fixture::bot().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("content-type", "application/json; charset=utf-8"))
        .and(body_json(json!({"channel": "C0123456789", "text": "New lead: Ada Lovelace (score 92)"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(posted()))
        .expect(1)
        .mount(&f.server)
        .await;
    f.send(input()).await.unwrap();
}

#[tokio::test]
async fn bot_post_gives_channel_and_ts() {
    let f = Fixture::bot().await;
    f.api_answering(ResponseTemplate::new(200).set_body_json(posted())).await;
    let out = f.send(input()).await.unwrap();
    assert_eq!(out.output, json!({"channel": "C0123456789", "ts": "1503435956.000247"}));
    assert_eq!(out.usage, vec![Usage { unit: "slack_message".into(), quantity: 1 }]);
}

#[tokio::test]
async fn an_unknown_channel_is_permanent_with_slacks_error() {
    let f = Fixture::bot().await;
    f.api_answering(ResponseTemplate::new(200).set_body_json(json!({"ok": false, "error": "channel_not_found"}))).await;
    let err = f.send(input()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert_eq!(err.code, "slack_channel_not_found");
    assert!(err.message.starts_with("slack error channel_not_found"), "{}", err.message);
    assert_no_secret(&err);
}

#[tokio::test]
async fn a_revoked_token_is_permanent_and_never_quoted() {
    let f = Fixture::bot().await;
    f.api_answering(ResponseTemplate::new(200).set_body_json(json!({"ok": false, "error": "invalid_auth"}))).await;
    let err = f.send(input()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, "slack_invalid_auth"));
    assert_no_secret(&err);
}

#[tokio::test]
async fn ok_false_ratelimited_is_retryable_after_slacks_delay() {
    let f = Fixture::bot().await;
    f.api_answering(ResponseTemplate::new(200).set_body_json(json!({"ok": false, "error": "ratelimited"})).insert_header("retry-after", "3")).await;
    let err = f.send(input()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str(), err.retry_after_ms), (FailureClass::Retryable, "slack_ratelimited", Some(3_000)));
}

#[tokio::test]
async fn http_429_is_retryable_after_slacks_delay() {
    let f = Fixture::bot().await;
    f.api_answering(ResponseTemplate::new(429).set_body_json(json!({"ok": false, "error": "ratelimited"})).insert_header("retry-after", "3")).await;
    let err = f.send(input()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str(), err.retry_after_ms), (FailureClass::Retryable, "slack_ratelimited", Some(3_000)));
    assert_no_secret(&err);
}

#[tokio::test]
async fn a_server_error_is_retryable() {
    let f = Fixture::bot().await;
    f.api_answering(ResponseTemplate::new(500).set_body_string("<html>Internal Server Error</html>")).await;
    let err = f.send(input()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Retryable, "http_500"));
}

#[tokio::test]
async fn an_internal_error_that_may_have_posted_is_not_resent() {
    let f = Fixture::bot().await;
    f.api_answering(ResponseTemplate::new(200).set_body_json(json!({"ok": false, "error": "internal_error"}))).await;
    let err = f.send(input()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::OutcomeUnknown, "slack_internal_error"));
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_outcome_unknown() {
    let f = Fixture::bot().await;
    f.api_answering(ResponseTemplate::new(200).set_body_json(posted()).set_delay(Duration::from_secs(5))).await;
    let err = f.send_within(Duration::from_millis(200), input()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::OutcomeUnknown, "timeout"));
    assert_eq!(f.requests().await, 1, "the request did reach Slack");
    assert_no_secret(&err);
}

#[tokio::test]
async fn a_bot_needs_a_channel() {
    let f = Fixture::bot().await;
    f.api_answering(ResponseTemplate::new(200).set_body_json(posted())).await;
    let err = f.send(json!({"text": "Hello"})).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, "invalid_input"));
    assert_eq!(f.requests().await, 0);
}

#[tokio::test]
async fn a_step_without_a_connection_fails_permanently_without_sending() {
    let f = Fixture::bot().await;
    f.api_answering(ResponseTemplate::new(200).set_body_json(posted())).await;
    let err = f.action.execute(&ctx(Duration::from_secs(5), None), input()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, "missing_connection"));
    assert_eq!(f.requests().await, 0);
}

#[tokio::test]
async fn webhook_posts_only_the_text() {
    let f = Fixture::webhook().await;
    Mock::given(method("POST"))
        .and(path(WEBHOOK_PATH))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"text": "Deal won"})))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(2)
        .mount(&f.server)
        .await;

    let out = f.send(json!({"channel": "#sales", "text": "Deal won"})).await.unwrap();
    assert_eq!(out.output, json!({"channel": "#sales", "ts": null}));
    assert_eq!(out.usage, vec![Usage { unit: "slack_message".into(), quantity: 1 }]);

    let out = f.send(json!({"text": "Deal won"})).await.unwrap();
    assert_eq!(out.output, json!({"channel": null, "ts": null}));
    // No Authorization header: the URL is the credential.
    let requests = f.server.received_requests().await.unwrap();
    assert!(requests.iter().all(|r| !r.headers.contains_key("authorization")));
}

#[tokio::test]
async fn webhook_channel_not_found_is_permanent_without_quoting_the_url() {
    let f = Fixture::webhook().await;
    f.webhook_answering(ResponseTemplate::new(404).set_body_string("channel_not_found")).await;
    let err = f.send(json!({"text": "Deal won"})).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, "slack_channel_not_found"));
    assert!(err.message.contains("HTTP 404"), "{}", err.message);
    assert_no_secret(&err);
}

#[tokio::test]
async fn webhook_errors_follow_their_status() {
    for (status, body, class) in [
        (400, "invalid_payload", FailureClass::Permanent),
        (403, "action_prohibited", FailureClass::Permanent),
        (410, "channel_is_archived", FailureClass::Permanent),
        (500, "rollup_error", FailureClass::Retryable),
    ] {
        let f = Fixture::webhook().await;
        f.webhook_answering(ResponseTemplate::new(status).set_body_string(body)).await;
        let err = f.send(json!({"text": "Deal won"})).await.unwrap_err();
        assert_eq!((err.class, err.code), (class, format!("slack_{body}")), "{status}");
    }
    let f = Fixture::webhook().await;
    f.webhook_answering(ResponseTemplate::new(429).set_body_string("rate_limited").insert_header("retry-after", "30")).await;
    let err = f.send(json!({"text": "Deal won"})).await.unwrap_err();
    assert_eq!((err.class, err.retry_after_ms), (FailureClass::Retryable, Some(30_000)));
}

#[tokio::test]
async fn webhook_timeout_is_outcome_unknown_without_quoting_the_url() {
    let f = Fixture::webhook().await;
    f.webhook_answering(ResponseTemplate::new(200).set_body_string("ok").set_delay(Duration::from_secs(5))).await;
    let err = f.send_within(Duration::from_millis(200), json!({"text": "Deal won"})).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::OutcomeUnknown, "timeout"));
    assert_no_secret(&err);
}

#[tokio::test]
async fn sandbox_renders_without_credentials_or_requests() {
    let f = Fixture::bot().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).expect(0).mount(&f.server).await;
    let sandbox = connection(&vault(), "slack", true, json!({}));
    let ctx = ctx(Duration::from_secs(5), Some(sandbox));

    let send = f.action.sandbox(&ctx, &input()).unwrap();
    assert_eq!(send.to.as_deref(), Some("C0123456789"));
    assert_eq!(send.rendered, json!({"channel": "C0123456789", "text": "New lead: Ada Lovelace (score 92)"}));
    assert_eq!(send.output, json!({"channel": "C0123456789", "ts": null, "sandbox": true}));
    assert_eq!(send.usage, vec![Usage { unit: "slack_message".into(), quantity: 1 }]);

    let send = f.action.sandbox(&ctx, &json!({"text": "Hi"})).unwrap();
    assert_eq!(send.to.as_deref(), Some("webhook"));
    assert_eq!(send.output, json!({"channel": null, "ts": null, "sandbox": true}));
    assert_eq!(f.requests().await, 0);
}

#[tokio::test]
async fn estimate_and_rate_limit_are_per_connection_and_channel() {
    let f = Fixture::bot().await;
    assert_eq!(f.action.estimate(&input()), vec![Usage { unit: "slack_message".into(), quantity: 1 }]);
    let ctx = ctx(Duration::from_secs(5), Some(f.connection.clone()));
    let key = format!("slack:{}:C0123456789", f.connection.id);
    assert_eq!(f.action.rate_limit(&ctx, &input()), Some(RateLimit { key, interval: Duration::from_secs(1) }));
}
