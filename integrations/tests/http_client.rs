//! The outbound client against a local fake server: the address guard refuses before any
//! connection, redirects are limited, and send failures are classified.

use std::time::Duration;

use reqwest::StatusCode;
use switchboard_integrations::{HttpConfig, classify_response, classify_send_error, client};
use switchboard_runtime::action::{ActionError, Delivery, FailureClass};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn http(allow_private: bool) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    client(&HttpConfig { allow_private, ..HttpConfig::default() }).unwrap()
}

async fn send(client: &reqwest::Client, url: &str) -> Result<reqwest::Response, ActionError> {
    client.get(url).timeout(Duration::from_secs(5)).send().await.map_err(|e| classify_send_error(&e, Delivery::AtMostOnce))
}

async fn server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    server
}

fn assert_refused(err: &ActionError) {
    assert_eq!(err.code, "address_not_allowed", "{err:?}");
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.message.contains("SWITCHBOARD_HTTP_ALLOW_PRIVATE"), "{}", err.message);
}

#[tokio::test]
async fn literal_loopback_is_refused_without_connecting() {
    let server = server().await;
    let err = send(&http(false), &format!("{}/hook", server.uri())).await.unwrap_err();
    assert_refused(&err);
    assert!(err.message.starts_with("127.0.0.1 is a private"), "{}", err.message);
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn literal_https_and_ipv6_addresses_are_refused() {
    let client = http(false);
    let urls = ["https://127.0.0.1:1/", "http://[::1]:1/", "http://169.254.169.254/latest/meta-data", "http://[::ffff:10.0.0.1]/"];
    for url in urls {
        let err = send(&client, url).await.unwrap_err();
        assert_refused(&err);
    }
}

#[tokio::test]
async fn host_name_resolving_to_loopback_is_refused_without_connecting() {
    let server = server().await;
    let port = server.address().port();
    let err = send(&http(false), &format!("http://localhost:{port}/hook")).await.unwrap_err();
    assert_refused(&err);
    assert!(err.message.starts_with("localhost resolves to"), "{}", err.message);
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn private_addresses_are_reachable_when_allowed() {
    let server = server().await;
    let port = server.address().port();
    let client = http(true);
    for url in [format!("{}/hook", server.uri()), format!("http://localhost:{port}/hook")] {
        let response = send(&client, &url).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn sends_the_configured_user_agent() {
    let server = server().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = client(&HttpConfig { allow_private: true, user_agent: "switchboard-test/1".into() }).unwrap();
    send(&client, &server.uri()).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[0].headers.get("user-agent").unwrap(), "switchboard-test/1");
}

#[tokio::test]
async fn follows_five_redirects_but_not_six() {
    let server = MockServer::start().await;
    for hop in 0..6 {
        Mock::given(path(format!("/r{hop}"))).respond_with(ResponseTemplate::new(302).insert_header("location", format!("/r{}", hop + 1))).mount(&server).await;
    }
    Mock::given(path("/r6")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    let client = http(true);

    let response = send(&client, &format!("{}/r1", server.uri())).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let err = send(&client, &format!("{}/r0", server.uri())).await.unwrap_err();
    assert_eq!(err.code, "too_many_redirects");
    assert_eq!(err.class, FailureClass::Permanent);
}

#[tokio::test]
async fn unfollowed_redirect_status_is_permanent() {
    let server = MockServer::start().await;
    Mock::given(path("/moved")).respond_with(ResponseTemplate::new(302).insert_header("location", "ftp://example.com/")).mount(&server).await;
    let err = send(&http(true), &format!("{}/moved", server.uri())).await.unwrap_err();
    assert_eq!(err.code, "redirect_not_allowed");
    assert_eq!(err.class, FailureClass::Permanent);

    let status = StatusCode::NOT_MODIFIED;
    let err = classify_response(status, &reqwest::header::HeaderMap::new(), "").unwrap();
    assert_eq!(err.class, FailureClass::Permanent);
}

#[tokio::test]
async fn refused_connection_is_retryable() {
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = send(&http(true), &format!("http://127.0.0.1:{port}/")).await.unwrap_err();
    assert_eq!(err.code, "connect_error", "{err:?}");
    assert_eq!(err.class, FailureClass::Retryable);
    assert!(err.message.starts_with("could not connect"), "{}", err.message);
}

#[tokio::test]
async fn timeout_after_sending_is_outcome_unknown_only_for_at_most_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5))).mount(&server).await;
    let client = http(true);
    let error = client.post(server.uri()).timeout(Duration::from_millis(200)).send().await.unwrap_err();

    let unknown = classify_send_error(&error, Delivery::AtMostOnce);
    assert_eq!(unknown.code, "timeout");
    assert_eq!(unknown.class, FailureClass::OutcomeUnknown);
    assert!(!unknown.message.contains(&server.uri()), "the URL may carry credentials: {}", unknown.message);

    let retryable = classify_send_error(&error, Delivery::Idempotent);
    assert_eq!(retryable.code, "timeout");
    assert_eq!(retryable.class, FailureClass::Retryable);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}
