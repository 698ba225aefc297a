//! Crash recovery with real processes: a `switchboard serve` is SIGKILLed while runs sit in
//! delays and in retry backoff; after a restart every run finishes, each action ran exactly once
//! per successful attempt, and the ledger holds exactly one row per successful action.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::support::{TempDir, TestDb};
use crate::{on_both_backends, on_postgres};

const RUNS: usize = 30;
pub(crate) const ADMIN: &str = "crash-test-admin";

/// Per run: (attempts seen, successful answers given).
type Hits = Arc<Mutex<HashMap<String, (u32, u32)>>>;

/// The vendor: answers 503 to each run's first attempt (so runs sit in retry backoff), then 200.
async fn target(State(hits): State<Hits>, Json(body): Json<Value>) -> StatusCode {
    let run = body["run"].as_str().unwrap_or_default().to_string();
    let mut hits = hits.lock().unwrap();
    let entry = hits.entry(run).or_default();
    entry.0 += 1;
    if entry.0 == 1 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        entry.1 += 1;
        StatusCode::OK
    }
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Server {
    /// Creates an account through the server's API (admin token); returns its API key. Its
    /// quiet hours are off: these tests run on the real clock, at any hour (the contact tests
    /// set their own).
    pub(crate) async fn account_key(&self, http: &reqwest::Client, name: &str) -> String {
        self.account_key_on(http, name, "trial").await
    }

    /// Creates a webhook-triggered workflow of `steps`; returns its webhook URL.
    pub(crate) async fn webhook_workflow(&self, http: &reqwest::Client, key: &str, name: &str, steps: Value) -> String {
        let req = http.post(format!("{}/v1/workflows", self.base)).bearer_auth(key);
        let workflow: Value = req.json(&json!({ "name": name, "trigger": { "webhook": {} }, "steps": steps })).send().await.unwrap().json().await.unwrap();
        workflow["webhook_url"].as_str().unwrap_or_else(|| panic!("{workflow}")).to_string()
    }

    /// [`Server::account_key`] on a plan of choice.
    pub(crate) async fn account_key_on(&self, http: &reqwest::Client, name: &str, plan: &str) -> String {
        let req = http.post(format!("{}/v1/accounts", self.base)).bearer_auth(ADMIN).json(&json!({ "name": name, "plan": plan }));
        let account: Value = req.send().await.unwrap().json().await.unwrap();
        let key = account["api_key"].as_str().unwrap_or_else(|| panic!("{account}")).to_string();
        let res = http.put(format!("{}/v1/contact-rules", self.base)).bearer_auth(&key).json(&json!({ "quiet_hours": null })).send().await.unwrap();
        assert_eq!(res.status(), 200, "quiet hours off");
        key
    }
}

/// Starts `switchboard <command>` on the database; its output (logs included) goes to
/// `server.log` in the data dir.
fn spawn(command: &str, db_url: &str, data: &TempDir, port: u16) -> Child {
    spawn_with(command, db_url, data, port, &[])
}

/// [`spawn`] with more (or overriding) environment variables, e.g. vendor base URLs.
pub(crate) fn spawn_with(command: &str, db_url: &str, data: &TempDir, port: u16, env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(data.0.join("server.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_switchboard-under-test"))
        .arg(command)
        .env("SWITCHBOARD_DATA_DIR", &data.0)
        .env("SWITCHBOARD_DATABASE_URL", db_url)
        .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD_ADMIN_TOKEN", ADMIN)
        .env("SWITCHBOARD_HTTP_ALLOW_PRIVATE", "true")
        .env("SWITCHBOARD_LEASE_SECS", "3")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start switchboard")
}

async fn start(db_url: &str, data: &TempDir, port: u16) -> Server {
    start_with(db_url, data, port, &[]).await
}

/// [`start`] with more environment variables.
pub(crate) async fn start_with(db_url: &str, data: &TempDir, port: u16, env: &[(&str, &str)]) -> Server {
    let child = spawn_with("serve", db_url, data, port, env);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "switchboard did not start: {}", server_log(data));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server { child, base }
}

pub(crate) fn server_log(data: &TempDir) -> String {
    std::fs::read_to_string(data.0.join("server.log")).unwrap_or_default()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn sigkill_mid_delays_and_backoff_loses_nothing(db: TestDb) {
    let hits: Hits = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_url = format!("http://{}/hit", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/hit", axum::routing::post(target)).with_state(hits.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let data = TempDir::new();
    let port = free_port();
    let mut server = start(&db.url, &data, port).await;
    let http = reqwest::Client::new();
    let post = |path: String, token: String, body: Value| {
        let req = http.post(format!("{}{path}", server.base)).bearer_auth(token).json(&body);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let account = post("/v1/accounts".into(), ADMIN.into(), json!({ "name": "crash" })).await;
    let key = account["api_key"].as_str().unwrap().to_string();
    let workflow = post(
        "/v1/workflows".into(),
        key.clone(),
        json!({
            "name": "crash",
            "trigger": { "webhook": {} },
            "steps": [
                { "id": "start", "action": "log", "input": { "message": "start" } },
                { "id": "pause", "delay": "2s" },
                { "id": "call", "action": "http.request", "timeout": "5s",
                  "retry": { "max_attempts": 6, "backoff": "2s" },
                  "input": { "method": "POST", "url": target_url, "body": { "run": "{{ run.id }}" } } },
                { "id": "settle", "delay": "1s" },
                { "id": "finish", "action": "log", "input": { "message": "end" } },
            ]
        }),
    )
    .await;
    let hook = workflow["webhook_url"].as_str().unwrap_or_else(|| panic!("{workflow}")).to_string();
    let mut run_ids = Vec::new();
    for i in 0..RUNS {
        let res = http.post(&hook).json(&json!({ "n": i })).send().await.unwrap();
        assert_eq!(res.status(), 202);
        let body: Value = res.json().await.unwrap();
        run_ids.push(body["run_id"].as_str().unwrap().to_string());
    }
    // Runs are now in their 2 s delay; soon after, in retry backoff after the 503.
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    server.child.start_kill().unwrap(); // SIGKILL
    server.child.wait().await.unwrap();
    let attempts_before: u32 = hits.lock().unwrap().values().map(|h| h.0).sum();

    let mut server = start(&db.url, &data, port).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut runs = Vec::new();
    for id in &run_ids {
        loop {
            let run: Value = http.get(format!("{}/v1/runs/{id}", server.base)).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
            if ["succeeded", "failed", "cancelled"].contains(&run["status"].as_str().unwrap_or_default()) {
                runs.push(run);
                break;
            }
            assert!(Instant::now() < deadline, "run {id} did not finish after restart: {run}\n{}", server_log(&data));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    server.child.start_kill().unwrap();
    let _ = server.child.wait().await;

    let hits = hits.lock().unwrap();
    let mut succeeded = 0;
    for run in &runs {
        let id = run["id"].as_str().unwrap();
        let (_, oks) = hits.get(id).copied().unwrap_or_default();
        let http_rows = run["usage"].as_array().unwrap().iter().filter(|u| u["unit"] == "http_request").count();
        let run_rows = run["usage"].as_array().unwrap().iter().filter(|u| u["unit"] == "workflow_run").count();
        assert_eq!(run_rows, 1, "one workflow_run row: {run}");
        match run["status"].as_str().unwrap() {
            "succeeded" => {
                succeeded += 1;
                assert_eq!(oks, 1, "the action succeeded exactly once for {id}");
                assert_eq!(http_rows, 1, "exactly one ledger row for the successful action: {run}");
                let steps: Vec<&str> = run["steps"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
                assert_eq!(steps, ["start", "pause", "call", "settle", "finish"], "{run}");
            }
            // Only a send cut off by the kill may end this way; it is never resent.
            "failed" => {
                assert_eq!(run["error"]["code"], "interrupted", "{run}");
                assert!(oks <= 1);
                assert_eq!(http_rows, 0, "an unknown outcome is not billed");
            }
            other => panic!("unexpected status {other}: {run}"),
        }
    }
    assert!(attempts_before > 0, "the kill came after some first attempts");
    assert!(succeeded >= RUNS - 3, "nearly every run succeeds ({succeeded}/{RUNS})");
}

/// Requests counted by `"<run>/<step>"` (the request body's `run` and `step`).
type Counted = Arc<Mutex<HashMap<String, u32>>>;

/// A vendor that answers 200 to every POST to its `/hit` and counts them by run and step;
/// returns the counts and its URL.
async fn counting_vendor() -> (Counted, String) {
    let hits: Counted = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_url = format!("http://{}/hit", listener.local_addr().unwrap());
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/hit",
        axum::routing::post(move |Json(body): Json<Value>| {
            let counted = counted.clone();
            async move {
                let key = format!("{}/{}", body["run"].as_str().unwrap_or_default(), body["step"].as_str().unwrap_or_default());
                *counted.lock().unwrap().entry(key).or_default() += 1;
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (hits, target_url)
}

/// Three processes on one PostgreSQL (one `serve`, two `worker`s); one worker is SIGKILLed
/// mid-load. Every run completes, no step's request succeeds twice, the ledger is exact.
async fn three_processes_one_killed_every_step_once(db: TestDb) {
    const LOAD: usize = 60;
    let (hits, target_url) = counting_vendor().await;

    let data = TempDir::new();
    let mut server = start(&db.url, &data, free_port()).await;
    let mut doomed = spawn("worker", &db.url, &data, free_port());
    let mut survivor = spawn("worker", &db.url, &data, free_port());
    let http = reqwest::Client::new();
    let post = |path: String, token: String, body: Value| {
        let req = http.post(format!("{}{path}", server.base)).bearer_auth(token).json(&body);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let key = post("/v1/accounts".into(), ADMIN.into(), json!({ "name": "multi" })).await["api_key"].as_str().unwrap().to_string();
    let call = |step: &str| {
        json!({ "id": step, "action": "http.request", "timeout": "5s",
        "input": { "method": "POST", "url": target_url, "body": { "run": "{{ run.id }}", "step": step } } })
    };
    let workflow = post(
        "/v1/workflows".into(),
        key.clone(),
        json!({ "name": "multi", "trigger": { "webhook": {} },
                "steps": [call("first"), { "id": "pause", "delay": "1s" }, call("second")] }),
    )
    .await;
    let hook = workflow["webhook_url"].as_str().unwrap().to_string();
    let mut run_ids = Vec::new();
    for i in 0..LOAD {
        let body: Value = http.post(&hook).json(&json!({ "n": i })).send().await.unwrap().json().await.unwrap();
        run_ids.push(body["run_id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    doomed.start_kill().unwrap(); // SIGKILL one worker mid-load
    doomed.wait().await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut succeeded = 0;
    for id in &run_ids {
        let run = loop {
            let run: Value = http.get(format!("{}/v1/runs/{id}", server.base)).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
            if ["succeeded", "failed", "cancelled"].contains(&run["status"].as_str().unwrap_or_default()) {
                break run;
            }
            assert!(Instant::now() < deadline, "run {id} did not finish: {run}\n{}", server_log(&data));
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let billed = run["usage"].as_array().unwrap().iter().filter(|u| u["unit"] == "http_request").count();
        let hits = hits.lock().unwrap();
        let count = |step: &str| hits.get(&format!("{id}/{step}")).copied().unwrap_or(0);
        match run["status"].as_str().unwrap() {
            "succeeded" => {
                succeeded += 1;
                assert_eq!((count("first"), count("second")), (1, 1), "each step's request exactly once: {run}");
                assert_eq!(billed, 2, "one ledger row per successful action: {run}");
            }
            // A send cut off by the kill ends outcome_unknown and is never resent.
            "failed" => {
                assert_eq!(run["error"]["code"], "interrupted", "{run}");
                assert!(count("first") <= 1 && count("second") <= 1);
            }
            other => panic!("unexpected status {other}: {run}"),
        }
    }
    for child in [&mut server.child, &mut survivor] {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    assert!(succeeded >= LOAD - 5, "nearly every run succeeds ({succeeded}/{LOAD})");
}

/// A `serve` is SIGKILLed while completions of many runs are being committed together (group
/// commit): 200 runs of eight steps — `log` steps and at-most-once `http.request`s to a fast
/// local vendor — run concurrently, and the kill lands mid-stream. After a restart every run
/// ends; no request was sent twice; a run that succeeded sent each of its requests exactly
/// once; a request cut off by the kill ended `outcome_unknown` (the run failed `interrupted`)
/// and was never resent; and the ledger is exact — one `workflow_run` row per run and one
/// `http_request` row per request step that succeeded, none for the others.
async fn sigkill_while_a_batch_of_completions_is_in_flight(db: TestDb) {
    const LOAD: usize = 200;
    const CALLS: [&str; 4] = ["c1", "c2", "c3", "c4"];
    let (hits, target_url) = counting_vendor().await;

    let data = TempDir::new();
    let port = free_port();
    let mut server = start(&db.url, &data, port).await;
    let http = reqwest::Client::new();
    // 200 runs of four requests each are more than the trial plan's tokens.
    let key = server.account_key_on(&http, "batch", "enterprise").await;
    let mut steps = Vec::new();
    for (i, call) in CALLS.iter().enumerate() {
        steps.push(json!({ "id": format!("log{i}"), "action": "log", "input": { "message": "{{ run.id }}" } }));
        steps.push(json!({ "id": call, "action": "http.request", "timeout": "5s",
            "input": { "method": "POST", "url": target_url, "body": { "run": "{{ run.id }}", "step": call } } }));
    }
    let hook = server.webhook_workflow(&http, &key, "batch", json!(steps)).await;
    let posts = (0..LOAD).map(|i| {
        let req = http.post(&hook).json(&json!({ "n": i }));
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 202);
            res.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_string()
        }
    });
    let run_ids: Vec<String> = futures::future::join_all(posts).await;
    // Kill once a fair share of the requests went out: steps of many runs are completing then.
    let total = LOAD * CALLS.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sent: u32 = hits.lock().unwrap().values().sum();
        if sent as usize >= total / 4 {
            break;
        }
        assert!(Instant::now() < deadline, "requests did not start: {}", server_log(&data));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.child.start_kill().unwrap(); // SIGKILL
    server.child.wait().await.unwrap();
    let sent_at_kill: u32 = hits.lock().unwrap().values().sum();
    assert!((sent_at_kill as usize) < total, "the kill came before the work was done ({sent_at_kill}/{total})");

    let mut server = start(&db.url, &data, port).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut succeeded, mut interrupted) = (0, 0);
    for id in &run_ids {
        let run = loop {
            let run: Value = http.get(format!("{}/v1/runs/{id}", server.base)).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
            if ["succeeded", "failed", "cancelled"].contains(&run["status"].as_str().unwrap_or_default()) {
                break run;
            }
            assert!(Instant::now() < deadline, "run {id} did not finish after the restart: {run}\n{}", server_log(&data));
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let usage = run["usage"].as_array().unwrap();
        let rows = |unit: &str| usage.iter().filter(|u| u["unit"] == unit).count();
        assert_eq!(rows("workflow_run"), 1, "one workflow_run row: {run}");
        let hits = hits.lock().unwrap();
        let count = |step: &str| hits.get(&format!("{id}/{step}")).copied().unwrap_or(0);
        let succeeded_calls: Vec<&str> = run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"] == "succeeded" && CALLS.contains(&s["id"].as_str().unwrap_or_default()))
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        for call in CALLS {
            assert!(count(call) <= 1, "{call} of {id} was sent {} times: {run}", count(call));
        }
        for call in &succeeded_calls {
            assert_eq!(count(call), 1, "{call} succeeded, so it was sent once: {run}");
        }
        assert_eq!(rows("http_request"), succeeded_calls.len(), "one ledger row per request step that succeeded: {run}");
        match run["status"].as_str().unwrap() {
            "succeeded" => {
                succeeded += 1;
                assert_eq!(succeeded_calls.len(), CALLS.len(), "{run}");
            }
            "failed" => {
                interrupted += 1;
                assert_eq!(run["error"]["code"], "interrupted", "only a send cut off by the kill fails: {run}");
            }
            other => panic!("unexpected status {other}: {run}"),
        }
    }
    server.child.start_kill().unwrap();
    let _ = server.child.wait().await;
    assert_eq!(succeeded + interrupted, LOAD);
    eprintln!("requests sent before the kill: {sent_at_kill}/{total}; runs interrupted: {interrupted}");
    // At most the sends in flight at the kill are cut off (the worker runs 128 steps at once).
    assert!(interrupted <= 128, "{interrupted} runs interrupted");
}

/// Clients that hang up while their webhook is being accepted: a run that was committed runs
/// at once, whether or not its client heard the 202. (A run handed to the local workers is
/// leased to them as it is recorded; were its hand-off dropped with the request, it would wait
/// for the lease, 60 s here, to expire.)
async fn webhooks_whose_clients_hang_up_still_run_at_once(db: TestDb) {
    const LOAD: u64 = 400;
    let data = TempDir::new();
    let port = free_port();
    let server = start_with(&db.url, &data, port, &[("SWITCHBOARD_LEASE_SECS", "60")]).await;
    let http = reqwest::Client::new();
    let key = server.account_key_on(&http, "hangups", "enterprise").await;
    let steps = json!([{ "id": "log", "action": "log", "input": { "message": "{{ run.id }}" } }]);
    let hook = server.webhook_workflow(&http, &key, "hangups", steps).await;
    // Each client gives up after 0.5–8 ms: many hang up around the commit, some hear the 202.
    let posts = (0..LOAD).map(|i| {
        let req = http.post(&hook).timeout(Duration::from_micros(500 + (i % 16) * 500)).json(&json!({ "n": i }));
        async move {
            let res = req.send().await.ok().filter(|r| r.status() == 202)?;
            res.json::<Value>().await.ok().and_then(|body| body["run_id"].as_str().map(str::to_string))
        }
    });
    let answered: Vec<String> = futures::future::join_all(posts).await.into_iter().flatten().collect();
    let runs = |status: &'static str| {
        let req = http.get(format!("{}/v1/runs?status={status}&limit=200", server.base)).bearer_auth(&key);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap()["runs"].as_array().unwrap().len() }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (queued, running) = (runs("queued").await, runs("running").await);
        if queued + running == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{queued} runs still queued and {running} running 20 s after their webhooks\n{}", server_log(&data));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &answered {
        let run: Value = http.get(format!("{}/v1/runs/{id}", server.base)).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        assert_eq!(run["status"], "succeeded", "{run}");
    }
}

on_both_backends!(webhooks_whose_clients_hang_up_still_run_at_once);
on_both_backends!(sigkill_mid_delays_and_backoff_loses_nothing);
on_both_backends!(sigkill_while_a_batch_of_completions_is_in_flight);
// Many processes share one PostgreSQL; SQLite is the single-process default.
on_postgres!(three_processes_one_killed_every_step_once);
