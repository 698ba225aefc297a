//! Messaging end to end: connections and their secrets, connection choice at save time and at
//! run time, sandbox sends into the outbox, a real send through a fake Twilio, vendor rate
//! limits (in-process and through Redis), a crash mid-send, and secrets kept out of API answers,
//! the run timeline and the logs of a real process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};
use switchboard_integrations::rate_limit::RedisRateLimiter;
use switchboard_runtime::engine::EngineConfig;
use switchboard_runtime::ratelimit::RateLimiter;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::crash::{free_port, server_log, start_with};
use crate::on_both_backends;
use crate::support::{TempDir, TestApp, TestDb, actions_config, redis_url, timeline};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-secret-token-7f3a9c";

/// The Messages resource Twilio answers a create with (201).
fn twilio_message(req: &Request) -> ResponseTemplate {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&req.body).unwrap();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    ResponseTemplate::new(201).set_body_json(json!({
        "account_sid": SID, "api_version": "2010-04-01", "body": field("Body"),
        "date_created": "Thu, 24 Aug 2023 05:01:45 +0000", "date_sent": null, "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000",
        "direction": "outbound-api", "error_code": null, "error_message": null, "from": field("From"),
        "messaging_service_sid": null, "num_media": "0", "num_segments": "1", "price": null, "price_unit": null,
        "sid": format!("SM{}", uuid::Uuid::new_v4().simple()), "status": "queued", "subresource_uris": {},
        "to": field("To"), "uri": format!("/2010-04-01/Accounts/{SID}/Messages/SM1.json")
    }))
}

/// A fake Twilio that accepts every message.
async fn fake_twilio() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Messages\.json$")).respond_with(twilio_message).mount(&server).await;
    server
}

async fn app_with_twilio(db: TestDb, twilio: &MockServer, limiter: Option<Arc<dyn RateLimiter>>) -> TestApp {
    let mut config = actions_config();
    config.api_bases.set("twilio", twilio.uri());
    TestApp::build(db, EngineConfig::default(), config, limiter, None).await
}

fn sms_workflow(connection: Option<&str>) -> Value {
    let mut step = json!({ "id": "welcome", "action": "sms.send",
        "input": { "to": "{{ event.lead.phone }}", "from": "{{ event.from }}", "body": "Hi {{ event.lead.first_name }}, thanks for reaching out!" } });
    if let Some(c) = connection {
        step["connection"] = json!(c);
    }
    json!({ "name": "welcome", "trigger": { "manual": {} }, "steps": [step] })
}

fn lead(phone: &str, from: &str) -> Value {
    json!({ "from": from, "lead": { "first_name": "Ada", "phone": phone } })
}

async fn twilio_connection(app: &TestApp, key: &str, name: &str, sandbox: bool) -> Value {
    let credentials = if sandbox { Value::Null } else { json!({ "account_sid": SID, "auth_token": TOKEN }) };
    let (status, body) =
        app.post_json("/v1/connections", key, &json!({ "provider": "twilio", "name": name, "sandbox": sandbox, "credentials": credentials })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn connections_keep_their_secrets(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    let (_, other) = app.account("someone else").await;
    let created = twilio_connection(&app, &key, "main", false).await;
    assert_eq!((created["provider"].as_str(), created["name"].as_str(), created["sandbox"].as_bool()), (Some("twilio"), Some("main"), Some(false)));
    assert!(created.get("credentials").is_none());
    let id = created["id"].as_str().unwrap();
    let (_, listed) = app.get("/v1/connections", &key).await;
    let (_, one) = app.get(&format!("/v1/connections/{id}"), &key).await;
    for answer in [&created, &listed, &one] {
        assert!(!answer.to_string().contains(TOKEN), "no secret in {answer}");
    }
    assert_eq!(listed["connections"].as_array().unwrap().len(), 1);

    // Bad credentials: 422 naming the field, without echoing the secret.
    let (status, body) = app
        .post_json("/v1/connections", &key, &json!({ "provider": "twilio", "name": "bad", "credentials": { "account_sid": "nope", "auth_token": TOKEN } }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"][0]["path"], "credentials.account_sid");
    assert!(!body.to_string().contains(TOKEN));
    let (status, body) = app.post_json("/v1/connections", &key, &json!({ "provider": "twilio", "name": "nocreds" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a real connection needs credentials: {body}");
    let (status, _) = app.post_json("/v1/connections", &key, &json!({ "provider": "fax", "name": "x", "sandbox": true })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = app.post_json("/v1/connections", &key, &json!({ "provider": "smtp", "name": "main", "sandbox": true })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("connection_exists")));
    let (status, _) = app.call("POST", "/v1/connections", Some(&key), Some("application/json"), "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Another account sees nothing and deletes nothing.
    assert_eq!(app.get(&format!("/v1/connections/{id}"), &other).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.call("DELETE", &format!("/v1/connections/{id}"), Some(&other), None, "").await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/v1/connections", &other).await.1["connections"], json!([]));
    assert_eq!(app.call("DELETE", &format!("/v1/connections/{id}"), Some(&key), None, "").await.0, StatusCode::OK);
    assert_eq!(app.get(&format!("/v1/connections/{id}"), &key).await.0, StatusCode::NOT_FOUND);
}

async fn connection_choice_is_checked_when_saving(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    // No connection yet: saving is allowed (it can be added before the step runs).
    app.workflow(&key, &sms_workflow(None)).await;
    let (status, body) = app.post_json("/v1/workflows", &key, &sms_workflow(Some("nope"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"][0]["path"], "steps[0].connection");
    twilio_connection(&app, &key, "main", false).await;
    // With one candidate, saving pins it: a second connection added later changes nothing.
    let pinned = app.workflow(&key, &sms_workflow(None)).await;
    assert_eq!(pinned["steps"][0]["connection"], "main", "{pinned}");
    twilio_connection(&app, &key, "trial", true).await;
    let (status, body) = app.post_json("/v1/workflows", &key, &sms_workflow(None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "two candidates need a name: {body}");
    assert!(body["error"]["details"][0]["message"].as_str().unwrap().contains("main, trial"), "{body}");
    app.workflow(&key, &sms_workflow(Some("trial"))).await;
}

async fn a_step_without_its_connection_fails_permanently(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    let wf = app.workflow(&key, &sms_workflow(None)).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &lead("+15557654321", "+15550001111")).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "missing_connection", "{run}");
}

async fn a_sandbox_connection_fills_the_outbox_and_bills_nothing(db: TestDb) {
    let twilio = fake_twilio().await;
    let app = app_with_twilio(db, &twilio, None).await;
    let (_, key) = app.account("studio").await;
    let (_, other) = app.account("someone else").await;
    twilio_connection(&app, &key, "trial", true).await;
    let wf = app.workflow(&key, &sms_workflow(None)).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &lead("+15557654321", "+15550001111")).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!((run["status"].as_str(), timeline(&run)), (Some("succeeded"), vec!["welcome:succeeded".to_string()]), "{run}");
    assert_eq!(run["steps"][0]["output"]["status"], "sandbox", "{run}");
    assert_eq!(twilio.received_requests().await.unwrap().len(), 0, "nothing reached Twilio");

    let (status, outbox) = app.get("/v1/outbox", &key).await;
    assert_eq!(status, StatusCode::OK);
    let messages = outbox["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{outbox}");
    let m = &messages[0];
    assert_eq!((m["run_id"].as_str(), m["step_id"].as_str(), m["kind"].as_str()), (Some(run_id.as_str()), Some("welcome"), Some("sms.send")));
    assert_eq!(m["to"], "+15557654321");
    assert_eq!(m["rendered"]["body"], "Hi Ada, thanks for reaching out!");
    assert_eq!(m["usage"], json!([{ "unit": "sms_segment", "quantity": 1 }]));
    assert_eq!(m["test"], false);
    assert_eq!(app.get(&format!("/v1/outbox?run_id={run_id}"), &key).await.1["messages"].as_array().unwrap().len(), 1);
    assert_eq!(app.get("/v1/outbox", &other).await.1["messages"], json!([]), "isolation");

    // Only the run start is billed: the sandbox sent nothing.
    let (_, usage) = app.get("/v1/usage?group_by=unit", &key).await;
    let units: Vec<&str> = usage["rows"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(units, ["workflow_run"], "{usage}");
}

async fn an_sms_goes_through_twilio_and_is_billed_by_segment(db: TestDb) {
    let twilio = fake_twilio().await;
    let app = app_with_twilio(db, &twilio, None).await;
    let (_, key) = app.account("studio").await;
    let conn = twilio_connection(&app, &key, "main", false).await;
    let wf = app.workflow(&key, &sms_workflow(None)).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &lead("+15557654321", "+15550001111")).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run["steps"][0]["output"]["sid"].as_str().unwrap().starts_with("SM"), "{run}");
    let requests = twilio.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&requests[0].body).unwrap();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!((field("To"), field("From"), field("Body")), (Some("+15557654321"), Some("+15550001111"), Some("Hi Ada, thanks for reaching out!")));
    assert_eq!(field("StatusCallback"), Some(format!("http://sb.test/callbacks/twilio/{}/sms", conn["id"].as_str().unwrap()).as_str()));
    let units: Vec<(String, i64)> =
        run["usage"].as_array().unwrap().iter().map(|u| (u["unit"].as_str().unwrap().to_string(), u["quantity"].as_i64().unwrap())).collect();
    assert!(units.contains(&("sms_segment".into(), 1)), "{run}");
    assert!(!run.to_string().contains(TOKEN), "no secret in the timeline");
}

/// 30 messages from one sender number: one a second (Twilio's long-code limit), none lost.
async fn thirty_sms_from_one_number_are_spaced_by_the_rate_limit(app: TestApp, twilio: &MockServer) {
    let (_, key) = app.account("studio").await;
    twilio_connection(&app, &key, "main", false).await;
    let wf = app.workflow(&key, &sms_workflow(None)).await;
    // A sender number of this test's own: Redis limits are shared by every test using it.
    let from = format!("+1555{:07}", rand_digits());
    let mut runs = Vec::new();
    for i in 0..30 {
        runs.push(app.start(&key, wf["id"].as_str().unwrap(), &lead(&format!("+1666000{i:04}"), &from)).await);
    }
    app.drain().await;
    assert_eq!(twilio.received_requests().await.unwrap().len(), 1, "one message at once, the rest wait for their slots");
    // A step throttled by the limit shows `waiting` (as its run does), why in its output, and
    // its slot as its due time.
    let last = app.run(&key, &runs[29]).await;
    assert_eq!(last["status"], "waiting", "{last}");
    let step = &last["steps"][0];
    assert_eq!(step["status"], "waiting", "{last}");
    assert_eq!(step["attempts"], 0, "{last}");
    let limit = step["output"]["rate_limited"]["key"].as_str().unwrap_or_default();
    assert!(limit.starts_with("twilio:") && limit.ends_with(&from), "{last}");
    assert_eq!(step["output"]["rate_limited"]["until"], step["due_at"], "{last}");
    assert!(step.get("error").is_none(), "{last}");
    for second in 1..30 {
        app.advance(999).await;
        assert_eq!(twilio.received_requests().await.unwrap().len(), second, "nothing before its slot");
        app.advance(1).await;
        assert_eq!(twilio.received_requests().await.unwrap().len(), second + 1, "one more each second");
    }
    let mut recipients = Vec::new();
    for id in &runs {
        let run = app.run(&key, id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["steps"][0]["attempts"], 1, "waiting for a slot spends no attempt: {run}");
        recipients.push(run["steps"][0]["output"]["to"].as_str().unwrap().to_string());
    }
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 30, "every message arrived once");
}

fn rand_digits() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32 % 10_000_000
}

async fn sms_rate_limit_in_process(db: TestDb) {
    let twilio = fake_twilio().await;
    let app = app_with_twilio(db, &twilio, None).await;
    thirty_sms_from_one_number_are_spaced_by_the_rate_limit(app, &twilio).await;
}

async fn sms_rate_limit_through_redis(db: TestDb) {
    let Some(url) = redis_url().await else { return };
    let twilio = fake_twilio().await;
    let limiter = Arc::new(RedisRateLimiter::new(&url).unwrap());
    let app = app_with_twilio(db, &twilio, Some(limiter.clone())).await;
    thirty_sms_from_one_number_are_spaced_by_the_rate_limit(app, &twilio).await;
    assert!(!limiter.is_degraded(), "the slots came from Redis");
}

/// Two processes' limiters on one Redis hand out one sequence of slots; an unreachable Redis
/// falls back to in-process slots instead of failing.
#[tokio::test]
async fn redis_rate_limits_are_shared_and_fall_back_when_redis_is_away() {
    use switchboard_runtime::action::RateLimit;
    let Some(url) = redis_url().await else { return };
    let limit = RateLimit { key: format!("test:{}", uuid::Uuid::new_v4()), interval: Duration::from_secs(1) };
    let (a, b) = (RedisRateLimiter::new(&url).unwrap(), RedisRateLimiter::new(&url).unwrap());
    let now = 1_000_000;
    assert_eq!(a.acquire(&limit, "h1", now).await, now);
    assert_eq!(b.acquire(&limit, "h2", now).await, now + 1_000);
    assert_eq!(a.acquire(&limit, "h3", now).await, now + 2_000);
    assert_eq!(b.acquire(&limit, "h2", now + 1_000).await, now + 1_000, "a holder keeps its slot across processes");

    let away = RedisRateLimiter::new("redis://127.0.0.1:1").unwrap();
    assert_eq!(away.acquire(&limit, "h1", now).await, now);
    assert_eq!(away.acquire(&limit, "h2", now).await, now + 1_000, "still limited, in process");
    assert!(away.is_degraded());
    assert_eq!(away.status(), "in_process_fallback", "readiness reports the fallback");
    assert_eq!(a.status(), "redis");
}

/// A real `switchboard serve` SIGKILLed while Twilio holds an SMS request open: after the
/// restart the step ends `outcome_unknown` and the message is never sent again.
async fn a_crash_mid_send_never_resends_an_sms(db: TestDb) {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(|req: &Request| twilio_message(req).set_delay(Duration::from_secs(60)))
        .mount(&twilio)
        .await;
    let data = TempDir::new();
    let port = free_port();
    let env = [("SWITCHBOARD_TWILIO_API_BASE", twilio.uri())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = start_with(&db.url, &data, port, &env).await;
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let post = |path: &str, token: &str, body: Value| {
        let req = http.post(format!("{base}{path}")).bearer_auth(token).json(&body);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let key = server.account_key(&http, "crash").await;
    post("/v1/connections", &key, json!({ "provider": "twilio", "name": "main", "credentials": { "account_sid": SID, "auth_token": TOKEN } })).await;
    // A short timeout keeps the lease short: the restarted process may take the step over
    // once the lease (timeout + grace + SWITCHBOARD_LEASE_SECS) has expired.
    let mut def = sms_workflow(None);
    def["steps"][0]["timeout"] = json!("3s");
    let wf = post("/v1/workflows", &key, def).await;
    let run_id = post(&format!("/v1/workflows/{}/runs", wf["id"].as_str().unwrap()), &key, lead("+15557654321", "+15550001111")).await["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while twilio.received_requests().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the SMS never reached Twilio: {}", server_log(&data));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.start_kill().unwrap(); // SIGKILL while Twilio has not answered
    server.child.wait().await.unwrap();

    let mut server = start_with(&db.url, &data, port, &env).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run: Value = http.get(format!("{}/v1/runs/{run_id}", server.base)).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        if run["status"] == "failed" || run["status"] == "succeeded" {
            break run;
        }
        assert!(Instant::now() < deadline, "the run did not end after the restart: {run}\n{}", server_log(&data));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    server.child.start_kill().unwrap();
    let _ = server.child.wait().await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["steps"][0]["status"], "outcome_unknown", "{run}");
    assert_eq!(run["error"]["code"], "interrupted", "{run}");
    assert_eq!(twilio.received_requests().await.unwrap().len(), 1, "the SMS was not sent again");
    assert!(!run["usage"].as_array().unwrap().iter().any(|u| u["unit"] == "sms_segment"), "an unknown outcome is not billed");
}

/// Secrets never appear in API answers, the run timeline or the logs of a real process (at
/// debug level), whether the vendor accepts or refuses.
async fn secrets_stay_out_of_answers_timelines_and_logs(db: TestDb) {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(|req: &Request| {
            let body = String::from_utf8_lossy(&req.body).to_string();
            if body.contains("%2B15550000000") {
                ResponseTemplate::new(401)
                    .set_body_json(json!({ "code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401 }))
            } else {
                twilio_message(req)
            }
        })
        .mount(&twilio)
        .await;
    let data = TempDir::new();
    let twilio_base = twilio.uri();
    let env = [("SWITCHBOARD_TWILIO_API_BASE", twilio_base.as_str()), ("RUST_LOG", "debug")];
    let mut server = start_with(&db.url, &data, free_port(), &env).await;
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let mut answers = String::new();
    let key = server.account_key(&http, "secrets").await;
    for body in [
        json!({ "provider": "twilio", "name": "main", "credentials": { "account_sid": SID, "auth_token": TOKEN } }),
        json!({ "provider": "smtp", "name": "mail", "credentials": { "host": "127.0.0.1", "port": 1, "tls": "none", "username": "u", "password": TOKEN } }),
        json!({ "provider": "twilio", "name": "bad", "credentials": { "account_sid": 7, "auth_token": TOKEN } }),
    ] {
        let res = http.post(format!("{base}/v1/connections")).bearer_auth(&key).json(&body).send().await.unwrap();
        answers.push_str(&res.text().await.unwrap());
    }
    let wf: Value = http.post(format!("{base}/v1/workflows")).bearer_auth(&key).json(&sms_workflow(Some("main"))).send().await.unwrap().json().await.unwrap();
    let mut runs = Vec::new();
    for from in ["+15550001111", "+15550000000"] {
        let res = http
            .post(format!("{base}/v1/workflows/{}/runs", wf["id"].as_str().unwrap()))
            .bearer_auth(&key)
            .json(&lead("+15557654321", from))
            .send()
            .await
            .unwrap();
        runs.push(res.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut statuses = Vec::new();
    for id in &runs {
        let run = loop {
            let text = http.get(format!("{base}/v1/runs/{id}")).bearer_auth(&key).send().await.unwrap().text().await.unwrap();
            let run: Value = serde_json::from_str(&text).unwrap();
            if run["status"] == "succeeded" || run["status"] == "failed" {
                answers.push_str(&text);
                break run;
            }
            assert!(Instant::now() < deadline, "run did not end: {run}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        statuses.push(run["status"].as_str().unwrap().to_string());
    }
    assert_eq!(statuses, ["succeeded", "failed"], "one accepted, one refused by Twilio");
    for path in ["/v1/connections", "/v1/outbox", "/v1/runs"] {
        answers.push_str(&http.get(format!("{base}{path}")).bearer_auth(&key).send().await.unwrap().text().await.unwrap());
    }
    server.child.start_kill().unwrap();
    let _ = server.child.wait().await;
    let log = server_log(&data);
    assert!(log.contains("DEBUG") || log.contains("debug"), "the process logged at debug level");
    let basic = base64_basic(SID, TOKEN);
    for (what, text) in [("API answers", &answers), ("logs", &log)] {
        assert!(!text.contains(TOKEN), "the secret appears in the {what}");
        assert!(!text.contains(&basic), "the basic-auth header appears in the {what}");
    }
}

/// Twilio's status callback for a message: signed with the connection's auth token, it becomes
/// an `sms.status` event that starts matching workflows (once per message and status); a bad
/// signature or another account's connection changes nothing.
async fn twilio_status_callbacks_become_events(db: TestDb) {
    use hmac::Mac;
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    let conn = twilio_connection(&app, &key, "main", false).await;
    let on_failure = json!({ "name": "undelivered", "trigger": { "event": "sms.status", "when": "event.status == \"undelivered\"" },
        "steps": [{ "id": "note", "action": "log", "input": { "message": "{{ event.to }} did not get {{ event.message_sid }}" } }] });
    let wf = app.workflow(&key, &on_failure).await;
    let path = format!("/callbacks/twilio/{}/sms", conn["id"].as_str().unwrap());
    let form = [("MessageSid", "SM123"), ("MessageStatus", "undelivered"), ("To", "+15557654321"), ("From", "+15550001111"), ("ErrorCode", "30003")];
    let body = serde_urlencoded::to_string(form).unwrap();
    let sign = |token: &str| {
        let mut sorted = form.to_vec();
        sorted.sort();
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
        mac.update(format!("http://sb.test{path}").as_bytes());
        for (k, v) in sorted {
            mac.update(k.as_bytes());
            mac.update(v.as_bytes());
        }
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    let post = |signature: String| {
        let req = axum::http::Request::post(path.as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(axum::body::Body::from(body.clone()))
            .unwrap();
        app.send(req)
    };
    assert_eq!(post(sign("not-the-token")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(post(sign(TOKEN)).await.0, StatusCode::NO_CONTENT);
    assert_eq!(post(sign(TOKEN)).await.0, StatusCode::NO_CONTENT, "Twilio retrying is fine");
    app.drain().await;
    let (_, runs) = app.get(&format!("/v1/runs?workflow_id={}", wf["id"].as_str().unwrap()), &key).await;
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "one run per message and status: {runs:?}");
    assert_eq!(runs[0]["event"]["error_code"], "30003");
    let unknown = axum::http::Request::post("/callbacks/twilio/nope/sms").body(axum::body::Body::from(body.clone())).unwrap();
    assert_eq!(app.send(unknown).await.0, StatusCode::NOT_FOUND);
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

on_both_backends!(
    connections_keep_their_secrets,
    connection_choice_is_checked_when_saving,
    a_step_without_its_connection_fails_permanently,
    a_sandbox_connection_fills_the_outbox_and_bills_nothing,
    an_sms_goes_through_twilio_and_is_billed_by_segment,
    sms_rate_limit_in_process,
    sms_rate_limit_through_redis,
    a_crash_mid_send_never_resends_an_sms,
    secrets_stay_out_of_answers_timelines_and_logs,
    twilio_status_callbacks_become_events,
);
