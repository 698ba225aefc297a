//! `sms.send` against a local fake of Twilio's Messages API (wiremock) answering with Twilio's
//! real message resource and error JSON: the exact request, success and its segments, each class
//! of failure, the sandbox, and that the auth token never shows.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use switchboard_actions::sms_send::SmsSend;
use switchboard_integrations::HttpConfig;
use switchboard_integrations::connections::Vault;
use switchboard_runtime::action::{ActionError, ActionOutput, ConnectionRef, DynAction, FailureClass, RateLimit};
use switchboard_runtime::metering::Usage;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{connection, ctx, tls, vault};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-auth-token-do-not-leak";
const MESSAGES: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";
const PUBLIC_URL: &str = "https://switchboard.example.com";

/// The action, a live Twilio connection for it, and the fake.
struct Fixture {
    action: SmsSend,
    connection: Arc<ConnectionRef>,
    server: MockServer,
}

async fn fixture() -> Fixture {
    tls();
    let server = MockServer::start().await;
    let vault = vault();
    let connection = connection(&vault, "twilio", false, json!({"account_sid": SID, "auth_token": TOKEN}));
    Fixture { action: action(vault, &server.uri()), connection, server }
}

fn action(vault: Arc<Vault>, api_base: &str) -> SmsSend {
    let client = switchboard_integrations::client(&HttpConfig { allow_private: true, ..HttpConfig::default() }).unwrap();
    // A trailing slash on either base must not double up in URLs.
    SmsSend::new(client, vault, format!("{api_base}/"), format!("{PUBLIC_URL}/"))
}

impl Fixture {
    async fn send(&self, input: Value) -> Result<ActionOutput, ActionError> {
        self.send_within(Duration::from_secs(5), input).await
    }

    async fn send_within(&self, timeout: Duration, input: Value) -> Result<ActionOutput, ActionError> {
        self.action.execute(&ctx(timeout, Some(self.connection.clone())), input).await
    }

    async fn answering(&self, template: ResponseTemplate) {
        Mock::given(method("POST")).and(path(MESSAGES)).respond_with(template).mount(&self.server).await;
    }

    async fn requests(&self) -> usize {
        self.server.received_requests().await.unwrap().len()
    }
}

fn input() -> Value {
    json!({"to": "+15558675310", "from": "+15017122661", "body": "Your table for 2 is ready."})
}

/// Twilio's answer to a created message, as the API sends it (`num_segments` is a string).
fn message_resource(to: &str, from: Value, body: &str, status: &str, num_segments: &str) -> Value {
    json!({
        "account_sid": SID,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": "Thu, 24 Aug 2023 05:01:45 +0000",
        "date_sent": null,
        "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000",
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": from,
        "messaging_service_sid": null,
        "num_media": "0",
        "num_segments": num_segments,
        "price": null,
        "price_unit": "USD",
        "sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
        "status": status,
        "subresource_uris": {
            "media": format!("/2010-04-01/Accounts/{SID}/Messages/SM1f0e8ae6ade43cb3c0ce4525424e404f/Media.json")
        },
        "to": to,
        "uri": format!("/2010-04-01/Accounts/{SID}/Messages/SM1f0e8ae6ade43cb3c0ce4525424e404f.json"),
    })
}

/// Twilio's error JSON.
fn twilio_error(status: u16, code: u32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    }))
}

/// The auth token appears in no part of a failure, however it is printed.
fn assert_no_secret(err: &ActionError) {
    let printed = format!("{err:?} {err} {}", serde_json::to_string(err).unwrap());
    assert!(!printed.contains(TOKEN), "the auth token leaked: {printed}");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"));
    assert!(!printed.contains(&basic), "the basic-auth value leaked: {printed}");
}

#[tokio::test]
async fn sends_the_exact_request() {
    let f = fixture().await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"));
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(header("authorization", format!("Basic {basic}").as_str()))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(ResponseTemplate::new(201).set_body_json(message_resource("+15558675310", json!("+15017122661"), "Hi", "queued", "1")))
        .expect(1)
        .mount(&f.server)
        .await;

    f.send(input()).await.unwrap();

    let request = &f.server.received_requests().await.unwrap()[0];
    let form: Vec<(String, String)> =
        reqwest::Url::parse(&format!("http://form/?{}", String::from_utf8_lossy(&request.body))).unwrap().query_pairs().into_owned().collect();
    let callback = format!("{PUBLIC_URL}/callbacks/twilio/{}/sms", f.connection.id);
    let expected = [("To", "+15558675310"), ("From", "+15017122661"), ("Body", "Your table for 2 is ready."), ("StatusCallback", callback.as_str())];
    let expected: Vec<(String, String)> = expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(form, expected);
}

#[tokio::test]
async fn created_message_gives_output_and_twilios_segment_count() {
    let f = fixture().await;
    // 200 GSM-7 characters: two segments, as Twilio counts them.
    let body = "Hello from Switchboard! ".repeat(8) + "Bye.";
    assert_eq!(body.chars().count(), 196);
    f.answering(ResponseTemplate::new(201).set_body_json(message_resource("+15558675310", json!("+15017122661"), &body, "queued", "2"))).await;

    let out = f.send(json!({"to": "+15558675310", "from": "+15017122661", "body": body})).await.unwrap();

    assert_eq!(
        out.output,
        json!({
            "sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
            "status": "queued",
            "to": "+15558675310",
            "from": "+15017122661",
            "segments": 2,
        })
    );
    assert_eq!(out.usage, vec![Usage { unit: "sms_segment".into(), quantity: 2 }]);
}

#[tokio::test]
async fn a_messaging_service_sends_its_sid_and_segments_are_counted_locally() {
    let f = fixture().await;
    let service = "MG9752274e9e519418a7406176694466fa";
    // Through a Messaging Service Twilio answers `accepted`, `from: null` and "0" segments.
    let mut answer = message_resource("+15558675310", Value::Null, "ł", "accepted", "0");
    answer["messaging_service_sid"] = json!(service);
    f.answering(ResponseTemplate::new(201).set_body_json(answer)).await;

    // 80 characters outside GSM-7 (UCS-2): two segments of 67.
    let body = "ł".repeat(80);
    let out = f.send(json!({"to": "+15558675310", "from": service, "body": body})).await.unwrap();

    let request = &f.server.received_requests().await.unwrap()[0];
    let form = String::from_utf8_lossy(&request.body).into_owned();
    assert!(form.contains(&format!("MessagingServiceSid={service}")), "{form}");
    assert!(!form.contains("From="), "{form}");
    assert_eq!(out.output["from"], service);
    assert_eq!(out.output["status"], "accepted");
    assert_eq!(out.usage, vec![Usage { unit: "sms_segment".into(), quantity: 2 }]);
}

#[tokio::test]
async fn an_invalid_number_is_permanent_with_twilios_message() {
    let f = fixture().await;
    f.answering(twilio_error(400, 21211, "The 'To' number +15005550001 is not a valid phone number.")).await;

    let err = f.send(json!({"to": "+15005550001", "from": "+15017122661", "body": "Hi"})).await.unwrap_err();

    assert_eq!(err.class, FailureClass::Permanent);
    assert_eq!(err.code, "twilio_21211");
    assert_eq!(
        err.message,
        "twilio error 21211: The 'To' number +15005550001 is not a valid phone number. \
         (see https://www.twilio.com/docs/errors/21211)"
    );
    assert_no_secret(&err);
}

#[tokio::test]
async fn an_unsubscribed_recipient_is_an_opt_out() {
    let f = fixture().await;
    f.answering(twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")).await;
    let err = f.send(input()).await.unwrap_err();
    // The runtime records the opt-out and ends the step skipped.
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, switchboard_runtime::action::ActionError::OPTED_OUT));
    assert!(err.message.contains("21610"), "{}", err.message);
}

#[tokio::test]
async fn wrong_credentials_are_permanent_and_never_quoted() {
    let f = fixture().await;
    f.answering(ResponseTemplate::new(401).set_body_json(json!({
        "code": 20003,
        "detail": "Your AccountSid or AuthToken was incorrect.",
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    })))
    .await;

    let err = f.send(input()).await.unwrap_err();

    assert_eq!(err.class, FailureClass::Permanent);
    assert_eq!(err.code, "twilio_20003");
    assert_eq!(
        err.message,
        "twilio error 20003: Authenticate: Your AccountSid or AuthToken was incorrect. \
         (see https://www.twilio.com/docs/errors/20003)"
    );
    assert_no_secret(&err);
}

#[tokio::test]
async fn throttling_is_retryable_after_twilios_delay() {
    let f = fixture().await;
    f.answering(twilio_error(429, 20429, "Too Many Requests").insert_header("retry-after", "5")).await;

    let err = f.send(input()).await.unwrap_err();

    assert_eq!(err.class, FailureClass::Retryable);
    assert_eq!(err.code, "twilio_20429");
    assert_eq!(err.retry_after_ms, Some(5_000));
    assert_no_secret(&err);
}

#[tokio::test]
async fn a_full_sender_queue_is_retryable_though_it_is_a_400() {
    let f = fixture().await;
    f.answering(twilio_error(400, 21611, "This 'From' number has exceeded the maximum number of queued messages")).await;
    let err = f.send(input()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Retryable, "twilio_21611"));
}

#[tokio::test]
async fn a_server_error_is_retryable() {
    let f = fixture().await;
    f.answering(twilio_error(500, 20500, "Internal Server Error")).await;
    let err = f.send(input()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Retryable, "twilio_20500"));
    assert_eq!(err.retry_after_ms, None);

    // A proxy's HTML page instead of Twilio's JSON is classified by its status alone.
    let f = fixture().await;
    f.answering(ResponseTemplate::new(503).set_body_string("<html>unavailable</html>").insert_header("retry-after", "2")).await;
    let err = f.send(input()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str(), err.retry_after_ms), (FailureClass::Retryable, "http_503", Some(2_000)));
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_outcome_unknown() {
    let f = fixture().await;
    f.answering(
        ResponseTemplate::new(201)
            .set_body_json(message_resource("+15558675310", json!("+15017122661"), "Hi", "queued", "1"))
            .set_delay(Duration::from_secs(5)),
    )
    .await;

    let err = f.send_within(Duration::from_millis(200), input()).await.unwrap_err();

    assert_eq!(err.class, FailureClass::OutcomeUnknown);
    assert_eq!(err.code, "timeout");
    // The request did reach Twilio: that is why it must not be resent blindly.
    assert_eq!(f.requests().await, 1);
    assert_no_secret(&err);
}

#[tokio::test]
async fn a_step_without_a_connection_fails_permanently_without_sending() {
    let f = fixture().await;
    f.answering(ResponseTemplate::new(201)).await;
    let err = f.action.execute(&ctx(Duration::from_secs(5), None), input()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, "missing_connection"));
    assert_eq!(f.requests().await, 0);
}

#[tokio::test]
async fn another_providers_connection_is_refused_without_sending() {
    let f = fixture().await;
    f.answering(ResponseTemplate::new(201)).await;
    let vault = vault();
    let slack = connection(&vault, "slack", false, json!({"bot_token": "xoxb-1"}));
    let action = action(vault, &f.server.uri());
    let err = action.execute(&ctx(Duration::from_secs(5), Some(slack)), input()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, "connection_invalid"));
    assert_eq!(f.requests().await, 0);
}

#[tokio::test]
async fn invalid_rendered_input_fails_permanently_without_sending() {
    let f = fixture().await;
    f.answering(ResponseTemplate::new(201)).await;
    for bad in [
        json!({"to": "(555) 867-5310", "from": "+15017122661", "body": "Hi"}),
        json!({"to": "+15558675310", "from": "+15017122661", "body": ""}),
        json!({"to": "+15558675310", "from": "+15017122661", "body": "x".repeat(1601)}),
        json!({"to": "+15558675310", "body": "Hi"}),
    ] {
        let err = f.send(bad.clone()).await.unwrap_err();
        assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, "invalid_input"), "{bad}");
    }
    assert_eq!(f.requests().await, 0);
}

#[tokio::test]
async fn sandbox_renders_without_credentials_or_requests() {
    let f = fixture().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(201)).expect(0).mount(&f.server).await;
    // A sandbox connection may hold no credentials at all.
    let sandbox = connection(&vault(), "twilio", true, json!({}));
    let body = "a".repeat(161);

    let send = f
        .action
        .sandbox(
            &ctx(Duration::from_secs(5), Some(sandbox)),
            &json!({
                "to": "+15558675310", "from": "+15017122661", "body": body,
            }),
        )
        .unwrap();

    assert_eq!(send.to.as_deref(), Some("+15558675310"));
    assert_eq!(send.rendered, json!({"from": "+15017122661", "to": "+15558675310", "body": body, "segments": 2}));
    let sid = send.output["sid"].as_str().unwrap();
    assert!(sid.starts_with("SBX") && sid.len() == 34, "{sid}");
    assert_eq!(send.output["status"], "sandbox");
    assert_eq!(send.output["segments"], 2);
    assert_eq!((send.output["to"].as_str(), send.output["from"].as_str()), (Some("+15558675310"), Some("+15017122661")));
    assert_eq!(send.usage, vec![Usage { unit: "sms_segment".into(), quantity: 2 }]);
    assert_eq!(f.requests().await, 0);
}

#[tokio::test]
async fn estimate_and_rate_limit_follow_the_message() {
    let f = fixture().await;
    let input = json!({"to": "+15558675310", "from": "+15017122661", "body": "a".repeat(307)});
    assert_eq!(f.action.estimate(&input), vec![Usage { unit: "sms_segment".into(), quantity: 3 }]);
    let limit = f.action.rate_limit(&ctx(Duration::from_secs(5), Some(f.connection.clone())), &input);
    let key = format!("twilio:{}:+15017122661", f.connection.id);
    assert_eq!(limit, Some(RateLimit { key, interval: Duration::from_secs(1) }), "per connection and sender number");
}
