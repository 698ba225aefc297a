//! Live run events over Server-Sent Events: the run stream (snapshot, changes, end), the account
//! stream (filters), isolation, shutdown, and events shared between processes through Redis.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use serde_json::{Value, json};
use switchboard_integrations::live_events::RedisEventBus;
use switchboard_runtime::clock::ManualClock;
use switchboard_runtime::engine::{Engine, EngineConfig};
use switchboard_runtime::events::{EventBus, RunEvent};
use switchboard_runtime::status::RunStatus;
use tower::ServiceExt;

use crate::support::{Proxy, TestApp, TestDb, actions_config, redis_url};
use crate::{on_both_backends, on_postgres};

/// How long a test waits for the next event before failing.
const PATIENCE: Duration = Duration::from_secs(10);

/// An open SSE response, read one event at a time.
struct SseReader {
    body: axum::body::BodyDataStream,
    buffer: String,
}

impl SseReader {
    async fn open(app: &TestApp, path: &str, key: &str) -> Result<Self, (StatusCode, Value)> {
        let req = Request::get(path).header("authorization", format!("Bearer {key}")).body(Body::empty()).unwrap();
        let res = switchboard_api::router(app.state.clone()).oneshot(req).await.unwrap();
        let status = res.status();
        if status != StatusCode::OK {
            let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
            return Err((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)));
        }
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Ok(Self { body: res.into_body().into_data_stream(), buffer: String::new() })
    }

    /// The next event as `(type, data, id)`, or `None` when the stream ended.
    async fn next(&mut self) -> Option<(String, Value, Option<String>)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut kind, mut data, mut id) = (String::from("message"), String::new(), None);
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((kind, serde_json::from_str(&data).unwrap(), id));
            }
            let chunk = tokio::time::timeout(PATIENCE, self.body.next()).await.expect("no event within the patience")?;
            self.buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    }

    /// The next event, which must exist.
    async fn expect(&mut self) -> (String, Value) {
        let (kind, data, _) = self.next().await.expect("the stream ended early");
        (kind, data)
    }
}

fn workflow(steps: Value) -> Value {
    json!({ "name": "live", "trigger": { "manual": {} }, "steps": steps })
}

/// `(type, step id, step status, run status)` of a change event.
fn change(event: &(String, Value)) -> (String, String, String, String) {
    let (kind, data) = event;
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (kind.clone(), s(&data["step"]["id"]), s(&data["step"]["status"]), s(&data["run_status"]))
}

fn c(kind: &str, step: &str, status: &str, run: &str) -> (String, String, String, String) {
    (kind.into(), step.into(), status.into(), run.into())
}

async fn run_stream_follows_a_run_to_its_end(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let wf = app
        .workflow(
            &key,
            &workflow(json!([
                { "id": "hello", "action": "log", "input": { "message": "hi {{ event.name }}" } },
                { "id": "wait", "delay": "1h" },
                { "id": "bye", "action": "log", "input": { "message": "bye" } },
            ])),
        )
        .await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({ "name": "Ada" })).await;
    let mut stream = SseReader::open(&app, &format!("/v1/runs/{run_id}/events"), &key).await.unwrap();
    let (kind, snapshot) = stream.expect().await;
    assert_eq!(kind, "snapshot");
    assert_eq!(snapshot["id"], run_id.as_str());
    assert_eq!(snapshot["status"], "queued");

    app.drain().await;
    let first = stream.next().await.unwrap();
    assert_eq!(change(&(first.0.clone(), first.1.clone())), c("step.updated", "hello", "succeeded", "running"));
    assert_eq!(first.1["step"]["output"]["message"], "hi Ada", "small outputs travel with the event");
    assert!(first.2.is_some_and(|id| !id.is_empty()), "every event has an SSE id");
    let waiting = stream.expect().await;
    assert_eq!(change(&waiting), c("step.updated", "wait", "waiting", "waiting"));
    assert!(waiting.1["step"]["due_at"].is_string(), "{}", waiting.1);

    app.advance(3_600_000).await;
    assert_eq!(change(&stream.expect().await), c("step.updated", "wait", "succeeded", "running"));
    assert_eq!(change(&stream.expect().await), c("step.updated", "bye", "succeeded", "succeeded"));
    assert_eq!(change(&stream.expect().await), c("run.finished", "", "", "succeeded"));
    assert!(stream.next().await.is_none(), "the run stream ends with the run");

    // A finished run: its snapshot, then the end.
    let mut again = SseReader::open(&app, &format!("/v1/runs/{run_id}/events"), &key).await.unwrap();
    let (kind, snapshot) = again.expect().await;
    assert_eq!((kind.as_str(), snapshot["status"].as_str()), ("snapshot", Some("succeeded")));
    assert_eq!(snapshot["steps"].as_array().unwrap().len(), 3);
    assert!(again.next().await.is_none());
}

async fn cancelling_ends_the_run_stream(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let wf = app.workflow(&key, &workflow(json!([{ "id": "wait", "delay": "1d" }, { "id": "bye", "action": "log", "input": { "message": "bye" } }]))).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    app.drain().await;
    let mut stream = SseReader::open(&app, &format!("/v1/runs/{run_id}/events"), &key).await.unwrap();
    assert_eq!(stream.expect().await.1["status"], "waiting");
    let (status, _) = app.post_json(&format!("/v1/runs/{run_id}/cancel"), &key, &json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(change(&stream.expect().await), c("run.finished", "", "", "cancelled"));
    assert!(stream.next().await.is_none());
}

async fn account_stream_filters_and_isolates(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let (_, other_key) = app.account("b").await;
    let steps = json!([{ "id": "only", "action": "log", "input": { "message": "x" } }]);
    let watched = app.workflow(&key, &workflow(steps.clone())).await;
    let ignored = app.workflow(&key, &workflow(steps.clone())).await;
    let foreign = app.workflow(&other_key, &workflow(steps)).await;
    let watched_id = watched["id"].as_str().unwrap();

    let mut all = SseReader::open(&app, "/v1/events/stream", &key).await.unwrap();
    let mut filtered = SseReader::open(&app, &format!("/v1/events/stream?workflow_id={watched_id}"), &key).await.unwrap();
    let foreign_run = app.start(&other_key, foreign["id"].as_str().unwrap(), &json!({})).await;
    let ignored_run = app.start(&key, ignored["id"].as_str().unwrap(), &json!({})).await;
    let watched_run = app.start(&key, watched_id, &json!({})).await;
    app.drain().await;

    // The account stream: both of its runs created, then executed; nothing of the other account.
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (kind, data) = all.expect().await;
        assert_ne!(data["run_id"], foreign_run.as_str(), "another account's event leaked");
        seen.push((kind, data["run_id"].as_str().unwrap().to_string()));
    }
    for run in [&ignored_run, &watched_run] {
        for kind in ["run.created", "step.updated", "run.finished"] {
            assert!(seen.contains(&(kind.to_string(), run.to_string())), "missing {kind} of {run} in {seen:?}");
        }
    }
    // The filtered stream: the watched workflow's run only.
    for kind in ["run.created", "step.updated", "run.finished"] {
        let (k, data) = filtered.expect().await;
        assert_eq!((k.as_str(), data["run_id"].as_str().unwrap()), (kind, watched_run.as_str()));
        assert_eq!(data["workflow_id"], watched_id);
    }

    // Another account's run, an unknown run, no key.
    let (status, body) = SseReader::open(&app, &format!("/v1/runs/{foreign_run}/events"), &key).await.err().unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, _) = SseReader::open(&app, "/v1/runs/nope/events", &key).await.err().unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = SseReader::open(&app, "/v1/events/stream", "sk_wrong").await.err().unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Stopping the process ends open streams (graceful shutdown must not wait on them).
    app.state.shutdown.send_replace(true);
    assert!(tokio::time::timeout(PATIENCE, all.next()).await.unwrap().is_none());
    assert!(tokio::time::timeout(PATIENCE, filtered.next()).await.unwrap().is_none());
}

/// A wait resumed by an app event is a change like any other: the stream sees the wait succeed
/// and, as it was the last step, the run finish.
async fn a_resumed_wait_reaches_the_run_stream(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let wf = app.workflow(&key, &workflow(json!([{ "id": "paid", "wait_for": { "event": "payment.received", "timeout": "1h" } }]))).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    app.drain().await;
    let mut stream = SseReader::open(&app, &format!("/v1/runs/{run_id}/events"), &key).await.unwrap();
    assert_eq!(stream.expect().await.1["status"], "waiting");
    let (status, _) = app.post_json("/v1/events", &key, &json!({ "type": "payment.received", "data": { "amount": 5 } })).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let resumed = stream.expect().await;
    assert_eq!(change(&resumed), c("step.updated", "paid", "succeeded", "succeeded"));
    assert_eq!(resumed.1["step"]["output"]["event"]["data"]["amount"], 5, "{}", resumed.1);
    assert_eq!(change(&stream.expect().await), c("run.finished", "", "", "succeeded"));
    assert!(stream.next().await.is_none());
}

on_both_backends!(
    run_stream_follows_a_run_to_its_end,
    cancelling_ends_the_run_stream,
    account_stream_filters_and_isolates,
    a_resumed_wait_reaches_the_run_stream,
);

/// Two "processes" on one PostgreSQL and one Redis: the API of one streams what the other's
/// worker executes.
async fn events_cross_processes_through_redis(db: TestDb) {
    let Some(url) = redis_url().await else { return };
    let api_bus: Arc<dyn EventBus> = Arc::new(RedisEventBus::start(&url).unwrap());
    let app = TestApp::build(db, EngineConfig::default(), actions_config(), None, Some(api_bus.clone())).await;
    let store = app._db.store().await;
    let actions = switchboard_actions::registry(&actions_config()).unwrap();
    let worker_bus = Arc::new(RedisEventBus::start(&url).unwrap());
    let worker = Engine::new(store, actions, Arc::new(ManualClock::new(app.now())), EngineConfig::default()).with_events(worker_bus.clone());
    let (account_id, key) = app.account("a").await;
    let wf = app.workflow(&key, &workflow(json!([{ "id": "only", "action": "log", "input": { "message": "x" } }]))).await;
    let mut stream = SseReader::open(&app, "/v1/events/stream", &key).await.unwrap();

    // The subscription is made in the background: publish a probe until it comes through.
    let probe = |n: u32| RunEvent::new("run.created", &account_id, &format!("probe-{n}"), "w", RunStatus::Queued, 0);
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut n = 0;
    // (The SSE stream hears the probes too; it is read below for the run's events only.)
    let mut probe_stream = api_bus.subscribe(&account_id);
    loop {
        assert!(std::time::Instant::now() < deadline, "the API process never heard the worker's events through Redis");
        n += 1;
        worker_bus.publish(probe(n));
        if let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(200), probe_stream.recv()).await {
            assert!(e.run_id.starts_with("probe-"));
            break;
        }
    }
    drop(probe_stream);
    assert_eq!(api_bus.status(), "redis");

    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    worker.drain().await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let (kind, data) = stream.expect().await;
        if data["run_id"] == run_id.as_str() {
            kinds.push(kind);
        }
    }
    // `run.created` comes from the API's process and the rest from the worker's, over two
    // connections: their relative order is not promised, the worker's own order is.
    let worker_events: Vec<_> = kinds.iter().filter(|k| *k != "run.created").collect();
    assert_eq!(worker_events, ["step.updated", "run.finished"], "the worker's events reached the API's listener in order");
    assert!(kinds.contains(&"run.created".to_string()));
}

on_postgres!(events_cross_processes_through_redis);

/// With Redis unreachable, a process still delivers its own events to its own listeners, and
/// says so.
#[tokio::test]
async fn without_redis_events_stay_in_process() {
    let bus = RedisEventBus::start("redis://127.0.0.1:9").unwrap();
    let mut listener = bus.subscribe("acct");
    bus.publish(RunEvent::new("run.created", "acct", "r1", "w", RunStatus::Queued, 0));
    let got = tokio::time::timeout(PATIENCE, listener.recv()).await.unwrap().unwrap();
    assert_eq!(got.run_id, "r1");
    assert_eq!(bus.status(), "in_process_fallback");
}

/// Redis goes away and comes back: live events and rate limits fall back to this process
/// (readiness says so), keep working, and are shared again once Redis answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_falls_back_and_recovers() {
    use switchboard_integrations::rate_limit::RedisRateLimiter;
    use switchboard_runtime::action::RateLimit;
    use switchboard_runtime::ratelimit::RateLimiter;

    let Some(url) = redis_url().await else { return };
    let upstream = url.trim_start_matches("redis://").trim_end_matches('/').to_string();
    let mut proxy = Proxy::start(&upstream).await;
    let through_proxy = format!("redis://127.0.0.1:{}", proxy.port);
    let bus = RedisEventBus::start(&through_proxy).unwrap();
    let limiter = RedisRateLimiter::new(&through_proxy).unwrap();
    let other = RedisEventBus::start(&url).unwrap();
    let account = format!("acct-{}", uuid::Uuid::new_v4());
    let mut listener = bus.subscribe(&account);
    let limit = RateLimit { key: format!("outage:{}", uuid::Uuid::new_v4()), interval: Duration::from_secs(1) };
    let event = |run: &str| RunEvent::new("run.created", &account, run, "w", RunStatus::Queued, 0);

    // Shared: another process's events arrive.
    let heard_from_other = async |listener: &mut switchboard_runtime::events::Subscription, tag: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            assert!(std::time::Instant::now() < deadline, "never heard the other process ({tag})");
            other.publish(event(tag));
            if let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(200), listener.recv()).await
                && e.run_id == tag
            {
                return;
            }
        }
    };
    heard_from_other(&mut listener, "before").await;
    assert_eq!(bus.status(), "redis");
    limiter.acquire(&limit, "h1", 1_000).await;
    assert_eq!(limiter.status(), "redis");

    // Away: this process's own events still reach its listeners; limits hold in process.
    proxy.stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        bus.publish(event("during"));
        let got = tokio::time::timeout(PATIENCE, listener.recv()).await.unwrap().unwrap();
        if got.run_id == "during" && bus.status() == "in_process_fallback" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the outage was never noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(limiter.acquire(&limit, "h2", 10_000).await, 10_000);
    assert_eq!(limiter.acquire(&limit, "h3", 10_000).await, 11_000, "still limited, in process");
    assert_eq!(limiter.status(), "in_process_fallback");

    // Back: shared again, without a restart.
    proxy.resume().await;
    heard_from_other(&mut listener, "after").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while bus.status() != "redis" {
        assert!(std::time::Instant::now() < deadline, "live events never went back to Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        limiter.acquire(&limit, &format!("h-{}", uuid::Uuid::new_v4()), 100_000).await;
        if limiter.status() == "redis" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "rate limits never went back to Redis");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A real `switchboard serve`: JSON log lines carry the run and step ids of their spans, and
/// SIGTERM stops the process promptly although a live stream is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_process_logs_run_ids_and_stops_on_sigterm_with_a_stream_open() {
    use crate::crash::{ADMIN, free_port, server_log, start_with};
    use crate::support::TempDir;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let _ = rustls::crypto::ring::default_provider().install_default();
    let vendor = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(400).set_body_string("no such lead")).mount(&vendor).await;
    let data = TempDir::new();
    let db = format!("sqlite://{}", data.0.join("sb.db").display());
    let env = [("SWITCHBOARD_LOG_FORMAT", "json"), ("RUST_LOG", "info")];
    let mut server = start_with(&db, &data, free_port(), &env).await;
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let account: Value =
        http.post(format!("{base}/v1/accounts")).bearer_auth(ADMIN).json(&json!({ "name": "ops" })).send().await.unwrap().json().await.unwrap();
    let key = account["api_key"].as_str().unwrap().to_string();
    let def = workflow(json!([{ "id": "call", "action": "http.request", "input": { "method": "POST", "url": format!("{}/leads", vendor.uri()) } }]));
    let wf: Value = http.post(format!("{base}/v1/workflows")).bearer_auth(&key).json(&def).send().await.unwrap().json().await.unwrap();

    let mut stream = http.get(format!("{base}/v1/events/stream")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let started: Value = http
        .post(format!("{base}/v1/workflows/{}/runs", wf["id"].as_str().unwrap()))
        .bearer_auth(&key)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = started["run_id"].as_str().unwrap().to_string();
    let mut seen = String::new();
    while !seen.contains("event: run.finished") {
        let chunk = tokio::time::timeout(PATIENCE, stream.chunk()).await.expect("no event in time").unwrap().expect("stream ended early");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(seen.contains(&run_id), "{seen}");

    // The failure was logged as JSON, inside the run's and the step's spans.
    let log = server_log(&data);
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "step ended without success")
        .unwrap_or_else(|| panic!("no JSON failure line in:\n{log}"));
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["fields"]["status"], "failed");
    assert_eq!(line["fields"]["code"], "http_400");
    assert!(line["fields"]["error"].as_str().unwrap().contains("no such lead"), "{line}");
    let spans = line["spans"].as_array().unwrap();
    assert!(spans.iter().any(|s| s["name"] == "run" && s["run_id"] == run_id.as_str()), "{line}");
    assert!(spans.iter().any(|s| s["name"] == "step" && s["step_id"] == "call" && s["seq"] == 1), "{line}");

    // SIGTERM with the stream still open: the stream ends and the process exits cleanly.
    let pid = server.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = tokio::time::timeout(PATIENCE, server.child.wait()).await.expect("still running 10 s after SIGTERM").unwrap();
    assert!(exit.success(), "{exit:?}\n{}", server_log(&data));
}

/// A process subscribes in Redis to exactly the accounts someone watches through it: the
/// channel appears with the first listener and goes with the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_subscriptions_follow_the_listeners() {
    let Some(url) = redis_url().await else { return };
    let bus = RedisEventBus::start(&url).unwrap();
    let account = format!("acct-{}", uuid::Uuid::new_v4());
    let channel = format!("switchboard:events:{account}");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let subscribers = async |redis: &mut redis::aio::MultiplexedConnection| {
        let (_, n): (String, i64) = redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(redis).await.unwrap();
        n
    };
    assert_eq!(subscribers(&mut redis).await, 0);
    let mut first = bus.subscribe(&account);
    first.ready().await;
    let second = bus.subscribe(&account);
    assert_eq!(subscribers(&mut redis).await, 1, "one subscription per process, however many listeners");
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(subscribers(&mut redis).await, 1, "a listener is left");
    drop(second);
    let deadline = std::time::Instant::now() + PATIENCE;
    while subscribers(&mut redis).await != 0 {
        assert!(std::time::Instant::now() < deadline, "the channel was never unsubscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
