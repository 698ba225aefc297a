//! Stripe in and OAuth + Google Calendar end to end: Stripe webhooks as a trigger (signature on
//! the raw body, tolerance, redeliveries), the OAuth authorization-code flow with PKCE against a
//! fake Google (authorize, token and Calendar endpoints), refresh before expiry with one refresh
//! for many concurrent steps, `invalid_grant` marking the connection broken, and a 409 on the
//! step's event id taken as success.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchboard_integrations::oauth::{OAuthApp, TokenKeeper};
use switchboard_runtime::engine::EngineConfig;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request as WireRequest, ResponseTemplate};

use crate::on_both_backends;
use crate::support::{TestApp, TestDb, actions_config, timeline};

const WHSEC: &str = "whsec_test_secret_e2e";

fn sign(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn stripe_post(app: &TestApp, account: &str, signature: Option<String>, body: &str) -> (StatusCode, Value) {
    let mut req = Request::builder().method("POST").uri(format!("/callbacks/stripe/{account}")).header("content-type", "application/json");
    if let Some(s) = signature {
        req = req.header("stripe-signature", s);
    }
    app.send(req.body(Body::from(body.to_owned())).unwrap()).await
}

async fn runs_of(app: &TestApp, key: &str, workflow_id: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/v1/runs?workflow_id={workflow_id}"), key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["runs"].as_array().unwrap().clone()
}

async fn stripe_webhooks_start_matching_workflows_once(db: TestDb) {
    let app = TestApp::new(db).await;
    let (account, key) = app.account("studio").await;
    let (status, conn) = app
        .post_json(
            "/v1/connections",
            &key,
            &json!({"provider": "stripe", "name": "stripe", "credentials": {"secret_key": "sk_test_1", "webhook_secret": WHSEC}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{conn}");
    assert_eq!(conn["callback_url"], format!("http://sb.test/callbacks/stripe/{account}"));
    assert!(!conn.to_string().contains(WHSEC));
    let paid = app
        .workflow(
            &key,
            &json!({"name": "paid", "trigger": {"stripe": {"events": ["invoice.paid", "payment_intent.succeeded"]}},
            "steps": [{"id": "note", "action": "log", "input": {"message": "paid {{ event.data.object.id }}"}}]}),
        )
        .await;
    let other = app
        .workflow(
            &key,
            &json!({"name": "refunds", "trigger": {"stripe": {"events": ["charge.refunded"]}},
            "steps": [{"id": "note", "action": "log", "input": {"message": "refund"}}]}),
        )
        .await;
    let (status, bad) = app.post_json("/v1/workflows", &key, &json!({"name": "x", "trigger": {"stripe": {"events": []}}, "steps": []})).await;
    assert_eq!((status, bad["error"]["details"][0]["path"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("trigger.stripe.events")), "{bad}");

    // Bytes as Stripe sends them (pretty-printed): the signature is over these exact bytes.
    let body = "{\n  \"id\": \"evt_1NG8Du2eZvKYlo2CUI79vXWy\",\n  \"object\": \"event\",\n  \"type\": \"invoice.paid\",\n  \"data\": {\n    \"object\": {\"id\": \"in_1\", \"object\": \"invoice\", \"amount_paid\": 2500}\n  }\n}";
    let t = app.now() / 1000;
    let wf = paid["id"].as_str().unwrap();

    // Refused: nothing starts.
    let (status, err) = stripe_post(&app, &account, None, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "missing header: {err}");
    let forged = format!("t={t},v1={}", sign("whsec_forged", t, body));
    let (status, err) = stripe_post(&app, &account, Some(forged), body).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("invalid_signature")));
    let altered = format!("t={t},v1={}", sign(WHSEC, t, body));
    let (status, _) = stripe_post(&app, &account, Some(altered), &body.replace("2500", "9999")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the signature covers the raw body");
    let stale = format!("t={},v1={}", t - 301, sign(WHSEC, t - 301, body));
    let (status, err) = stripe_post(&app, &account, Some(stale), body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(err["error"]["message"].as_str().unwrap().contains("300 s tolerance"), "{err}");
    let (status, _) = stripe_post(&app, "acc_nope", Some(format!("t={t},v1={}", sign(WHSEC, t, body))), body).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (other_account, other_key) = app.account("no secret").await;
    let (status, _) =
        app.post_json("/v1/connections", &other_key, &json!({"provider": "stripe", "name": "s", "credentials": {"secret_key": "sk_test_2"}})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, err) = stripe_post(&app, &other_account, Some(format!("t={t},v1={}", sign(WHSEC, t, body))), body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another account's secret does not open this account's endpoint");
    assert!(err["error"]["message"].as_str().unwrap().contains("webhook_secret"), "{err}");
    assert!(runs_of(&app, &key, wf).await.is_empty(), "a refused delivery starts nothing");

    // Accepted with two v1 (a secret being rolled), then redelivered: one run.
    let header = format!("t={t},v1={},v1={}", sign("whsec_old", t, body), sign(WHSEC, t, body));
    let (status, _) = stripe_post(&app, &account, Some(header.clone()), body).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = stripe_post(&app, &account, Some(header), body).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "a redelivery is acknowledged");
    let runs = runs_of(&app, &key, wf).await;
    assert_eq!(runs.len(), 1, "a repeated event id starts nothing new");
    assert!(runs_of(&app, &key, other["id"].as_str().unwrap()).await.is_empty(), "other event types do not match");
    app.drain().await;
    let run = app.run(&key, runs[0]["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["event"]["type"], "invoice.paid");
    assert_eq!(run["steps"][0]["input"]["message"], "paid in_1");
}

/// A Stripe step that fails with a 500 and is retried sends the same `Idempotency-Key`, so
/// Stripe answers the retry with the object of the first request: one customer, billed once.
async fn a_retried_stripe_step_reuses_its_idempotency_key(db: TestDb) {
    let stripe = MockServer::start().await;
    let keys = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = keys.clone();
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .and(header("authorization", "Bearer sk_test_e2e"))
        .respond_with(move |req: &WireRequest| {
            let mut keys = seen.lock().unwrap();
            keys.push(req.headers["idempotency-key"].to_str().unwrap().to_owned());
            assert_eq!(form(req)["email"], "ada@example.com");
            if keys.len() == 1 {
                ResponseTemplate::new(500).set_body_json(json!({"error": {"type": "api_error", "message": "An unknown error occurred"}}))
            } else {
                ResponseTemplate::new(200)
                    .set_body_json(json!({"id": "cus_e2e", "object": "customer", "email": "ada@example.com", "name": "Ada", "livemode": false}))
            }
        })
        .mount(&stripe)
        .await;
    let mut config = actions_config();
    config.api_bases.set("stripe", stripe.uri());
    let app = TestApp::build(db, EngineConfig::default(), config, None, None).await;
    let (_, key) = app.account("studio").await;
    let (status, _) =
        app.post_json("/v1/connections", &key, &json!({"provider": "stripe", "name": "stripe", "credentials": {"secret_key": "sk_test_e2e"}})).await;
    assert_eq!(status, StatusCode::CREATED);
    let wf = app
        .workflow(
            &key,
            &json!({"name": "bill", "trigger": {"manual": {}}, "steps": [{"id": "customer", "action": "stripe.create_customer",
            "input": {"email": "{{ event.email }}", "name": "Ada", "metadata": {"lead_id": "L-1"}}}]}),
        )
        .await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({"email": "ada@example.com"})).await;
    app.drain().await;
    app.advance(60_000).await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["customer:succeeded"], "{run}");
    assert_eq!((run["steps"][0]["attempts"].as_i64(), run["steps"][0]["output"]["id"].as_str()), (Some(2), Some("cus_e2e")));
    assert_eq!(run["steps"][0]["usage"].as_array().unwrap().len(), 1, "billed once: {run}");
    assert_eq!(run["steps"][0]["usage"][0]["unit"], "stripe_request");
    let keys = keys.lock().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1], "the retry sends the step's key again");
    assert!(!keys[0].is_empty());
}

// ---------------------------------------------------------------------------------------------
// OAuth + Google Calendar

/// A fake Google: the token endpoint checks PKCE (S256 of the verifier is the challenge the
/// authorize URL carried) and answers tokens; refreshes are counted and answered by `refresh`.
struct FakeGoogle {
    server: MockServer,
    refreshes: Arc<AtomicUsize>,
}

type Challenges = Arc<std::sync::Mutex<HashMap<String, String>>>;

fn form(req: &WireRequest) -> HashMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(&req.body).unwrap().into_iter().collect()
}

async fn fake_google(challenges: Challenges, refresh: ResponseTemplate) -> FakeGoogle {
    let server = MockServer::start().await;
    let refreshes = Arc::new(AtomicUsize::new(0));
    let counter = refreshes.clone();
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(move |req: &WireRequest| {
            let f = form(req);
            assert_eq!(f["client_id"], "google-client-id");
            assert_eq!(f["client_secret"], "google-client-secret");
            match f["grant_type"].as_str() {
                "authorization_code" => {
                    assert_eq!(f["redirect_uri"], "http://sb.test/oauth/callback");
                    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(f["code_verifier"].as_bytes()));
                    if challenges.lock().unwrap().get(&f["code"]) != Some(&challenge) {
                        return ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant", "error_description": "Bad code verifier"}));
                    }
                    ResponseTemplate::new(200).set_body_json(json!({
                        "access_token": "ya29.first", "expires_in": 3599, "refresh_token": "1//refresh-token",
                        "scope": "https://www.googleapis.com/auth/calendar.events", "token_type": "Bearer"
                    }))
                }
                "refresh_token" => {
                    assert_eq!(f["refresh_token"], "1//refresh-token");
                    counter.fetch_add(1, Ordering::SeqCst);
                    refresh.clone()
                }
                other => panic!("unexpected grant {other}"),
            }
        })
        .mount(&server)
        .await;
    FakeGoogle { server, refreshes }
}

fn refreshed() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(
            json!({"access_token": "ya29.second", "expires_in": 3599, "scope": "https://www.googleapis.com/auth/calendar.events", "token_type": "Bearer"}),
        )
        // Many steps wait on one refresh.
        .set_delay(std::time::Duration::from_millis(200))
}

async fn google_app(db: TestDb, google: &MockServer) -> TestApp {
    let mut config = actions_config();
    let mut app = OAuthApp::google("google-client-id", "google-client-secret");
    app.authorize_url = format!("{}/o/oauth2/v2/auth", google.uri());
    app.token_url = format!("{}/token", google.uri());
    config.oauth.insert(app);
    config.api_bases.set("google", google.uri());
    TestApp::build(db, EngineConfig::default(), config, None, None).await
}

/// `GET /v1/connections/google/authorize`: the Location's query.
async fn authorize(app: &TestApp, key: &str, name: &str) -> HashMap<String, String> {
    let req =
        Request::get(format!("/v1/connections/google/authorize?name={name}")).header("authorization", format!("Bearer {key}")).body(Body::empty()).unwrap();
    let res = tower::ServiceExt::oneshot(switchboard_api::router(app.state.clone()), req).await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let url = reqwest::Url::parse(&location).unwrap();
    assert_eq!(url.path(), "/o/oauth2/v2/auth");
    url.query_pairs().into_owned().collect()
}

async fn callback(app: &TestApp, query: &str, key: Option<&str>) -> (StatusCode, Value) {
    app.call("GET", &format!("/oauth/callback?{query}"), key, None, Body::empty()).await
}

/// Authorizes a `cal` Google connection through the whole flow.
async fn connect_google(app: &TestApp, key: &str, challenges: &Challenges) {
    let q = authorize(app, key, "cal").await;
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "google-client-id");
    assert_eq!(q["redirect_uri"], "http://sb.test/oauth/callback");
    assert_eq!(q["scope"], "https://www.googleapis.com/auth/calendar.events");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["access_type"], "offline");
    assert_eq!(q["code_challenge"].len(), 43, "base64url of a SHA-256");
    challenges.lock().unwrap().insert("code-1".into(), q["code_challenge"].clone());
    let (status, body) = callback(app, &format!("code=code-1&state={}", q["state"]), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A replayed state is refused.
    let (status, body) = callback(app, &format!("code=code-1&state={}", q["state"]), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_state")));
}

async fn connection(app: &TestApp, key: &str, name: &str) -> Value {
    let (_, list) = app.get("/v1/connections", key).await;
    list["connections"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap_or_else(|| panic!("no connection {name}: {list}"))
}

fn calendar_workflow(n: usize) -> Value {
    json!({"name": format!("book-{n}"), "trigger": {"manual": {}}, "steps": [{"id": "book", "action": "calendar.create_event", "connection": "cal",
        "input": {"summary": "Consultation with {{ event.name }}", "start": "2026-12-07T10:00:00", "end": "2026-12-07T10:30:00",
                  "timezone": "America/New_York", "attendees": ["{{ event.email }}"], "location": "Studio Ada"}}]})
}

async fn oauth_state_is_bound_single_use_and_expiring(db: TestDb) {
    let challenges = Challenges::default();
    let google = fake_google(challenges.clone(), refreshed()).await;
    let app = google_app(db, &google.server).await;
    let (_, key) = app.account("studio").await;
    let (_, other_key) = app.account("other").await;
    connect_google(&app, &key, &challenges).await;
    let cal = connection(&app, &key, "cal").await;
    assert_eq!((cal["provider"].as_str(), cal["status"].as_str()), (Some("google"), Some("ok")), "{cal}");
    assert!(!cal.to_string().contains("ya29"), "tokens are never shown");

    // Another account's key on the callback: refused.
    let q = authorize(&app, &key, "cal2").await;
    challenges.lock().unwrap().insert("code-2".into(), q["code_challenge"].clone());
    let (status, body) = callback(&app, &format!("code=code-2&state={}", q["state"]), Some(&other_key)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("state_account_mismatch")));
    // Expired after ten minutes.
    let q = authorize(&app, &key, "cal3").await;
    challenges.lock().unwrap().insert("code-3".into(), q["code_challenge"].clone());
    app.clock.advance(10 * 60 * 1000 + 1);
    let (status, body) = callback(&app, &format!("code=code-3&state={}", q["state"]), Some(&key)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_state")), "{body}");
    // A wrong verifier (the code was issued for another challenge) is refused by the provider.
    let q = authorize(&app, &key, "cal4").await;
    challenges.lock().unwrap().insert("code-4".into(), "not-this-challenge".into());
    let (status, body) = callback(&app, &format!("code=code-4&state={}", q["state"]), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_GATEWAY, Some("oauth_exchange_failed")), "{body}");
    let (_, list) = app.get("/v1/connections", &key).await;
    assert_eq!(list["connections"].as_array().unwrap().len(), 1, "only the completed flow made a connection: {list}");
    // The person declined: refused, and the state is spent.
    let q = authorize(&app, &key, "cal5").await;
    let (status, body) = callback(&app, &format!("error=access_denied&state={}", q["state"]), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("authorization_denied")), "{body}");
    let (status, body) = callback(&app, &format!("code=late&state={}", q["state"]), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_state")), "{body}");
    // For a browser console: the URL as JSON, with a state that works like the redirect's.
    let (status, json_answer) = app.get("/v1/connections/google/authorize?name=cal6&redirect=false", &key).await;
    assert_eq!(status, StatusCode::OK, "{json_answer}");
    let url = reqwest::Url::parse(json_answer["authorize_url"].as_str().unwrap()).unwrap();
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    challenges.lock().unwrap().insert("code-6".into(), q["code_challenge"].clone());
    let (status, body) = callback(&app, &format!("code=code-6&state={}", q["state"]), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Unknown provider, unconfigured provider.
    let (status, _) = app.get("/v1/connections/fax/authorize", &key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app.get("/v1/connections/slack/authorize", &key).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("oauth_not_configured")));
}

async fn calendar_events_use_fresh_tokens_and_refresh_once(db: TestDb) {
    let challenges = Challenges::default();
    let google = fake_google(challenges.clone(), refreshed()).await;
    let app = google_app(db, &google.server).await;
    let (account, key) = app.account("studio").await;
    connect_google(&app, &key, &challenges).await;
    let created = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let seen = created.clone();
    Mock::given(method("POST"))
        .and(path("/calendar/v3/calendars/primary/events"))
        .respond_with(move |req: &WireRequest| {
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            let bearer = req.headers["authorization"].to_str().unwrap().to_owned();
            assert_eq!(req.url.query(), Some("sendUpdates=all"));
            seen.lock().unwrap().push(json!({"bearer": bearer, "event": body}));
            ResponseTemplate::new(200).set_body_json(json!({"kind": "calendar#event", "id": body["id"], "status": "confirmed",
                "htmlLink": format!("https://www.google.com/calendar/event?eid={}", body["id"].as_str().unwrap())}))
        })
        .mount(&google.server)
        .await;

    let wf = app.workflow(&key, &calendar_workflow(0)).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({"name": "Ada", "email": "ada@example.com"})).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["book:succeeded"], "{run}");
    let output = &run["steps"][0]["output"];
    let event_id = output["id"].as_str().unwrap();
    assert_eq!(event_id.len(), 52);
    assert!(event_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)), "base32hex: {event_id}");
    assert_eq!((output["status"].as_str(), output["already_existed"].as_bool()), (Some("confirmed"), Some(false)));
    assert_eq!(run["steps"][0]["usage"][0]["unit"], "calendar_event", "{run}");
    {
        let sent = created.lock().unwrap();
        assert_eq!(sent[0]["bearer"], "Bearer ya29.first");
        assert_eq!(
            sent[0]["event"],
            json!({"id": event_id, "summary": "Consultation with Ada", "location": "Studio Ada",
                "start": {"dateTime": "2026-12-07T10:00:00", "timeZone": "America/New_York"},
                "end": {"dateTime": "2026-12-07T10:30:00", "timeZone": "America/New_York"},
                "attendees": [{"email": "ada@example.com"}]})
        );
    }
    assert_eq!(google.refreshes.load(Ordering::SeqCst), 0, "a valid token is not refreshed");

    // 56 minutes later the token expires within the margin: many steps at once, one refresh.
    app.clock.advance(56 * 60 * 1000);
    let store = app.engine.store().clone();
    let row = store.connections_for(&account, &["google"], Some("cal")).await.unwrap().remove(0);
    let conn = row.into_ref();
    let mut apps = switchboard_integrations::oauth::OAuthApps::default();
    let mut google_client = OAuthApp::google("google-client-id", "google-client-secret");
    google_client.token_url = format!("{}/token", google.server.uri());
    apps.insert(google_client);
    let http = switchboard_integrations::client_without_redirects(&switchboard_integrations::HttpConfig { allow_private: true, ..Default::default() }).unwrap();
    // On PostgreSQL a second keeper stands for a second process: it shares only the store
    // (the row held FOR UPDATE). SQLite is one process's store: one keeper, its mutex.
    let processes = if store.dialect() == switchboard_runtime::store::Dialect::Postgres { 2 } else { 1 };
    let keepers: Vec<_> =
        (0..processes).map(|_| Arc::new(TokenKeeper::new(Some(store.clone()), app.state.vault.clone(), http.clone(), apps.clone()))).collect();
    let now = app.now();
    let asks = (0..12).map(|i| {
        let (keeper, conn) = (keepers[i % processes].clone(), conn.clone());
        tokio::spawn(async move { keeper.access_token(&conn, now).await.map(|t| secrecy::ExposeSecret::expose_secret(&t).to_owned()) })
    });
    for token in futures::future::join_all(asks).await {
        assert_eq!(token.unwrap().unwrap(), "ya29.second");
    }
    assert_eq!(google.refreshes.load(Ordering::SeqCst), 1, "twelve concurrent asks, one refresh");

    // Steps now send the refreshed token, without refreshing again.
    let wf = app.workflow(&key, &calendar_workflow(1)).await;
    for n in 0..3 {
        app.start(&key, wf["id"].as_str().unwrap(), &json!({"name": format!("Lead {n}"), "email": "lead@example.com"})).await;
    }
    app.drain().await;
    assert_eq!(google.refreshes.load(Ordering::SeqCst), 1);
    let sent = created.lock().unwrap();
    assert_eq!(sent.len(), 4);
    assert!(sent[1..].iter().all(|s| s["bearer"] == "Bearer ya29.second"), "{sent:?}");
}

/// Eight steps claimed at once by eight concurrent workers when the token is about to expire:
/// one refresh, and every event sent with the new token.
async fn concurrent_steps_at_expiry_refresh_once(db: TestDb) {
    let challenges = Challenges::default();
    let google = fake_google(challenges.clone(), refreshed()).await;
    let app = google_app(db, &google.server).await;
    let (_, key) = app.account("studio").await;
    connect_google(&app, &key, &challenges).await;
    let bearers = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = bearers.clone();
    Mock::given(method("POST"))
        .and(path("/calendar/v3/calendars/primary/events"))
        .respond_with(move |req: &WireRequest| {
            seen.lock().unwrap().push(req.headers["authorization"].to_str().unwrap().to_owned());
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            ResponseTemplate::new(200).set_body_json(json!({"id": body["id"], "status": "confirmed"}))
        })
        .mount(&google.server)
        .await;
    let wf = app.workflow(&key, &calendar_workflow(0)).await;
    app.clock.advance(58 * 60 * 1000);
    let mut runs = Vec::new();
    for n in 0..8 {
        runs.push(app.start(&key, wf["id"].as_str().unwrap(), &json!({"name": format!("Lead {n}"), "email": "lead@example.com"})).await);
    }
    let workers = (0..8).map(|_| {
        let engine = app.engine.clone();
        tokio::spawn(async move { engine.process_due(1).await.unwrap() })
    });
    let claimed: usize = futures::future::join_all(workers).await.into_iter().map(Result::unwrap).sum();
    assert_eq!(claimed, 8, "each worker took one step");
    app.drain().await;
    for run_id in &runs {
        assert_eq!(timeline(&app.run(&key, run_id).await), ["book:succeeded"]);
    }
    assert_eq!(google.refreshes.load(Ordering::SeqCst), 1, "eight concurrent steps, one refresh");
    let bearers = bearers.lock().unwrap();
    assert_eq!(bearers.len(), 8);
    assert!(bearers.iter().all(|b| b == "Bearer ya29.second"), "{bearers:?}");
}

async fn a_conflict_on_the_steps_event_id_is_success(db: TestDb) {
    let challenges = Challenges::default();
    let google = fake_google(challenges.clone(), refreshed()).await;
    let app = google_app(db, &google.server).await;
    let (_, key) = app.account("studio").await;
    connect_google(&app, &key, &challenges).await;
    // The first attempt's answer was lost: Google holds the event and refuses a second one.
    Mock::given(method("POST"))
        .and(path("/calendar/v3/calendars/primary/events"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({"error": {"code": 409, "message": "The requested identifier already exists.",
            "errors": [{"domain": "global", "reason": "duplicate", "message": "The requested identifier already exists."}]}})))
        .expect(1)
        .mount(&google.server)
        .await;
    Mock::given(method("GET"))
        .and(wiremock::matchers::path_regex(r"^/calendar/v3/calendars/primary/events/[0-9a-v]{52}$"))
        .and(header("authorization", "Bearer ya29.first"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "x", "status": "confirmed", "htmlLink": "https://www.google.com/calendar/event?eid=x"})),
        )
        .mount(&google.server)
        .await;
    let wf = app.workflow(&key, &calendar_workflow(0)).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({"name": "Ada", "email": "ada@example.com"})).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["book:succeeded"], "{run}");
    assert_eq!(run["steps"][0]["output"]["already_existed"], true);
    assert_eq!(run["steps"][0]["output"]["html_link"], "https://www.google.com/calendar/event?eid=x");
}

async fn invalid_grant_marks_the_connection_broken(db: TestDb) {
    let challenges = Challenges::default();
    let revoked = ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}));
    let google = fake_google(challenges.clone(), revoked).await;
    let app = google_app(db, &google.server).await;
    let (_, key) = app.account("studio").await;
    connect_google(&app, &key, &challenges).await;
    Mock::given(method("POST"))
        .and(path("/calendar/v3/calendars/primary/events"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&google.server)
        .await;
    app.clock.advance(60 * 60 * 1000);
    let wf = app.workflow(&key, &calendar_workflow(0)).await;
    let first = app.start(&key, wf["id"].as_str().unwrap(), &json!({"name": "Ada", "email": "ada@example.com"})).await;
    app.drain().await;
    let run = app.run(&key, &first).await;
    assert_eq!(timeline(&run), ["book:failed"], "{run}");
    assert_eq!(run["steps"][0]["error"]["code"], "connection_revoked", "{run}");
    assert_eq!(run["steps"][0]["attempts"], 1, "permanent: not retried");
    assert_eq!(connection(&app, &key, "cal").await["status"], "broken");
    // Later steps fail at once, without asking Google again.
    let second = app.start(&key, wf["id"].as_str().unwrap(), &json!({"name": "Bo", "email": "bo@example.com"})).await;
    app.drain().await;
    assert_eq!(app.run(&key, &second).await["steps"][0]["error"]["code"], "connection_revoked");
    assert_eq!(google.refreshes.load(Ordering::SeqCst), 1);
    // Authorizing again repairs it.
    let q = authorize(&app, &key, "cal").await;
    challenges.lock().unwrap().insert("code-9".into(), q["code_challenge"].clone());
    let (status, body) = callback(&app, &format!("code=code-9&state={}", q["state"]), Some(&key)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(connection(&app, &key, "cal").await["status"], "ok");
}

/// Slack through OAuth: the bot token from `oauth.v2.access` lands where `slack.post_message`
/// reads it (beside pasted tokens).
async fn slack_installs_through_oauth(db: TestDb) {
    let slack = MockServer::start().await;
    let challenge = Arc::new(std::sync::Mutex::new(String::new()));
    let expected = challenge.clone();
    Mock::given(method("POST"))
        .and(path("/api/oauth.v2.access"))
        .respond_with(move |req: &WireRequest| {
            let f = form(req);
            assert_eq!((f["client_id"].as_str(), f["client_secret"].as_str(), f["code"].as_str()), ("slack-client", "slack-secret", "slack-code"));
            let verified = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(f["code_verifier"].as_bytes()));
            assert_eq!(verified, *expected.lock().unwrap(), "PKCE verifier matches the challenge");
            ResponseTemplate::new(200).set_body_json(json!({
                "ok": true, "access_token": "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy", "token_type": "bot",
                "scope": "chat:write", "bot_user_id": "U0KRQLJ9H", "app_id": "A0KRD7HC3",
                "team": {"name": "Studio Ada", "id": "T9TK3CUKW"}, "enterprise": null, "authed_user": {"id": "U1234"}
            }))
        })
        .expect(1)
        .mount(&slack)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .and(header("authorization", "Bearer xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true, "channel": "C0123", "ts": "1700000000.000100"})))
        .expect(1)
        .mount(&slack)
        .await;
    let mut config = actions_config();
    let mut app = OAuthApp::slack("slack-client", "slack-secret");
    app.authorize_url = format!("{}/oauth/v2/authorize", slack.uri());
    app.token_url = format!("{}/api/oauth.v2.access", slack.uri());
    config.oauth.insert(app);
    config.api_bases.set("slack", slack.uri());
    let app = TestApp::build(db, EngineConfig::default(), config, None, None).await;
    let (_, key) = app.account("studio").await;
    let req = Request::get("/v1/connections/slack/authorize?name=team").header("authorization", format!("Bearer {key}")).body(Body::empty()).unwrap();
    let res = tower::ServiceExt::oneshot(switchboard_api::router(app.state.clone()), req).await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let url = reqwest::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(url.path(), "/oauth/v2/authorize");
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!((q["scope"].as_str(), q["code_challenge_method"].as_str(), q["client_id"].as_str()), ("chat:write", "S256", "slack-client"));
    *challenge.lock().unwrap() = q["code_challenge"].clone();
    let (status, body) = callback(&app, &format!("code=slack-code&state={}", q["state"]), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(connection(&app, &key, "team").await["provider"], "slack");
    let wf = app
        .workflow(
            &key,
            &json!({"name": "ping", "trigger": {"manual": {}}, "steps": [{"id": "post", "action": "slack.post_message", "connection": "team",
            "input": {"channel": "#general", "text": "Hello"}}]}),
        )
        .await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["post:succeeded"], "{run}");
}

on_both_backends!(
    stripe_webhooks_start_matching_workflows_once,
    a_retried_stripe_step_reuses_its_idempotency_key,
    oauth_state_is_bound_single_use_and_expiring,
    calendar_events_use_fresh_tokens_and_refresh_once,
    concurrent_steps_at_expiry_refresh_once,
    a_conflict_on_the_steps_event_id_is_success,
    invalid_grant_marks_the_connection_broken,
    slack_installs_through_oauth,
);
