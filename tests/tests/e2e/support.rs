//! Test support: a fresh database per test on each backend, a `TestApp` with a manual clock and
//! test action modules, and typed request helpers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use switchboard_actions::ActionsConfig;
use switchboard_api::AppState;
use switchboard_integrations::connections::Vault;
use switchboard_runtime::action::{Action, ActionContext, ActionError, ActionRegistry, Delivery, Done, Later, Poll, Started};
use switchboard_runtime::clock::{Clock, ManualClock};
use switchboard_runtime::engine::{Engine, EngineConfig};
use switchboard_runtime::events::EventBus;
use switchboard_runtime::metering::{Unit, Usage};
use switchboard_runtime::ratelimit::RateLimiter;
use switchboard_runtime::store::{Store, StoreConfig, dialect};
use tower::ServiceExt;

pub const ADMIN: &str = "test-admin-token";

/// Action-module settings for tests: a fresh vault, local addresses allowed (vendor fakes listen
/// on loopback), vendor base URLs that nothing answers until a test points them at a fake.
pub fn actions_config() -> ActionsConfig {
    let vault = Arc::new(Vault::from_hex(&Vault::generate_hex()).unwrap());
    let mut config = ActionsConfig::new(vault);
    config.http.allow_private = true;
    config.api_bases.set("twilio", "http://127.0.0.1:9").set("slack", "http://127.0.0.1:9");
    config.public_url = "http://sb.test".into();
    config
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests use (a fresh database per test is created on it).
pub fn postgres_server() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database. SQLite: a temp file. PostgreSQL: a new database, dropped on drop.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<TempDir>,
}

pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("switchboard-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestDb {
    /// A fresh database, or `None` (with a printed notice) when PostgreSQL is unreachable
    /// outside CI. Under `CI=true` an unreachable PostgreSQL fails the test.
    pub async fn new(backend: Backend) -> Option<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        match backend {
            Backend::Sqlite => {
                let dir = TempDir::new();
                let url = format!("sqlite://{}", dir.0.join("test.db").display());
                Some(TestDb { url, pg_name: None, _dir: Some(dir) })
            }
            Backend::Postgres => {
                let name = format!("sb_test_{}", uuid::Uuid::new_v4().simple());
                match dialect::create_postgres_database(&postgres_server(), &name).await {
                    Ok(url) => Some(TestDb { url, pg_name: Some(name), _dir: None }),
                    Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                        panic!("PostgreSQL is required under CI=true but unreachable at {}: {e}", postgres_server())
                    }
                    Err(e) => {
                        // Straight to stderr (not `eprintln!`, which the harness captures), once.
                        static NOTICE: std::sync::Once = std::sync::Once::new();
                        NOTICE.call_once(|| {
                            use std::io::Write;
                            let _ = writeln!(
                                std::io::stderr(),
                                "NOTICE: PostgreSQL at {} is unreachable ({e}); PostgreSQL tests are skipped (set CI=true to fail instead)",
                                postgres_server()
                            );
                        });
                        None
                    }
                }
            }
        }
    }

    pub async fn store(&self) -> Store {
        let store = Store::connect(&StoreConfig { url: self.url.clone(), max_connections: 8 }).await.unwrap();
        store.migrate().await.unwrap();
        store
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Best effort, on a thread of its own: Drop cannot await.
            let server = postgres_server();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let _ = rt.block_on(dialect::drop_postgres_database(&server, &name));
            })
            .join();
        }
    }
}

/// The Redis tests use (`SWITCHBOARD_TEST_REDIS_URL`, default the local server), or `None` with
/// a printed notice when it is unreachable outside CI. Under `CI=true` an unreachable Redis
/// fails the test.
pub async fn redis_url() -> Option<String> {
    let url = std::env::var("SWITCHBOARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let reachable = async {
        let client = redis::Client::open(url.as_str())?;
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), reachable).await {
        Ok(Ok(_)) => Some(url),
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("Redis is required under CI=true but unreachable at {url}: {why}");
            }
            static NOTICE: std::sync::Once = std::sync::Once::new();
            NOTICE.call_once(|| {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "NOTICE: Redis at {url} is unreachable ({why}); Redis tests are skipped (set CI=true to fail instead)");
            });
            None
        }
    }
}

/// Generates one `#[tokio::test]` per backend from an `async fn(TestDb)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    if let Some(db) = $crate::support::TestDb::new($crate::support::Backend::Sqlite).await {
                        super::$name(db).await;
                    }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(db) = $crate::support::TestDb::new($crate::support::Backend::Postgres).await {
                        super::$name(db).await;
                    }
                }
            }
        )*
    };
}

/// Generates one `#[tokio::test]` on PostgreSQL only, for behaviour SQLite does not have (many
/// processes, concurrent writers).
#[macro_export]
macro_rules! on_postgres {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(db) = $crate::support::TestDb::new($crate::support::Backend::Postgres).await {
                        super::$name(db).await;
                    }
                }
            }
        )*
    };
}

/// A test action: fails with a retryable error `fail_first` times, then succeeds; counts calls.
#[derive(Clone, Default)]
pub struct Flaky {
    pub calls: Arc<AtomicU32>,
    pub fail_first: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl Action for Flaky {
    const KIND: &'static str = "test.flaky";
    const DELIVERY: Delivery = Delivery::Idempotent;
    const UNITS: &'static [Unit] = &[Unit::HttpRequest];
    // Test actions take any input (e.g. a `label`) and echo it.
    type Input = Value;
    type Output = Value;

    fn estimate(&self, _input: &Value) -> Vec<Usage> {
        vec![Unit::HttpRequest.times(1)]
    }

    async fn execute(&self, _ctx: &ActionContext, input: Value) -> Result<Done<Value>, ActionError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= self.fail_first.load(Ordering::SeqCst) {
            return Err(ActionError::retryable("flaky", format!("failure {n}")));
        }
        Ok(Done { output: json!({ "call": n, "input": input }), usage: vec![Unit::HttpRequest.times(1)] })
    }
}

/// A test action that always fails permanently.
#[derive(Clone, Default)]
pub struct Broken;

#[async_trait::async_trait]
impl Action for Broken {
    const KIND: &'static str = "test.broken";
    const DELIVERY: Delivery = Delivery::AtMostOnce;
    type Input = Value;
    type Output = Value;

    async fn execute(&self, _ctx: &ActionContext, _input: Value) -> Result<Done<Value>, ActionError> {
        Err(ActionError::permanent("vendor_rejected", "the vendor said no"))
    }
}

/// A test action that signals when it starts and waits to be released (a step "running").
#[derive(Clone, Default)]
pub struct Gate {
    pub entered: Arc<tokio::sync::Notify>,
    pub release: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl Action for Gate {
    const KIND: &'static str = "test.gate";
    const DELIVERY: Delivery = Delivery::Idempotent;
    const UNITS: &'static [Unit] = &[Unit::HttpRequest];
    type Input = Value;
    type Output = Value;

    async fn execute(&self, _ctx: &ActionContext, _input: Value) -> Result<Done<Value>, ActionError> {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(Done { output: json!({ "released": true }), usage: vec![Unit::HttpRequest.times(1)] })
    }
}

/// A test action that finishes later, like a call: its start is accepted with a handle
/// `{"call_sid": "CA<n>"}` and a 10-minute poll deadline; its polls answer what a test queued in
/// `polls` (nothing queued: not yet, 5 minutes more). Bills standard voice minutes.
#[derive(Clone, Default)]
pub struct Deferred {
    pub starts: Arc<AtomicU32>,
    /// The handles its polls were given.
    pub polled: Arc<std::sync::Mutex<Vec<Value>>>,
    pub polls: Arc<std::sync::Mutex<std::collections::VecDeque<Poll<Value>>>>,
    /// While set, a poll signals `poll_entered` and waits for `poll_release` (a poll in flight).
    pub hold_polls: Arc<std::sync::atomic::AtomicBool>,
    pub poll_entered: Arc<tokio::sync::Notify>,
    pub poll_release: Arc<tokio::sync::Notify>,
}

impl Deferred {
    pub const CHECK_AFTER_MS: i64 = 600_000;
    pub const NOT_YET_MS: i64 = 300_000;
}

#[async_trait::async_trait]
impl Action for Deferred {
    const KIND: &'static str = "test.later";
    const DELIVERY: Delivery = Delivery::AtMostOnce;
    const UNITS: &'static [Unit] = &[Unit::VoiceMinuteStandard];
    type Input = Value;
    type Output = Value;

    async fn execute(&self, _ctx: &ActionContext, _input: Value) -> Result<Done<Value>, ActionError> {
        Err(ActionError::permanent("finishes_later", "this action only starts (Action::start)"))
    }

    async fn start(&self, _ctx: &ActionContext, _input: Value) -> Result<Started<Value>, ActionError> {
        let n = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Started::Later(Later {
            handle: json!({ "call_sid": format!("CA{n}") }),
            check_after: std::time::Duration::from_millis(Self::CHECK_AFTER_MS as u64),
        }))
    }

    async fn poll(&self, _ctx: &ActionContext, handle: Value) -> Poll<Value> {
        self.polled.lock().unwrap().push(handle);
        if self.hold_polls.load(Ordering::SeqCst) {
            self.poll_entered.notify_one();
            self.poll_release.notified().await;
        }
        self.polls.lock().unwrap().pop_front().unwrap_or(Poll::NotYet { check_after: std::time::Duration::from_millis(Self::NOT_YET_MS as u64) })
    }
}

/// A store, an engine on a manual clock, the API router, and the test actions.
pub struct TestApp {
    /// Kept alive for the test's length (PostgreSQL databases are dropped on drop).
    pub _db: TestDb,
    pub engine: Arc<Engine>,
    pub clock: ManualClock,
    pub flaky: Flaky,
    pub gate: Gate,
    pub later: Deferred,
    pub state: AppState,
}

impl TestApp {
    pub async fn new(db: TestDb) -> Self {
        Self::with_config(db, EngineConfig::default()).await
    }

    /// A test app whose engine has these settings (prices, lease, …).
    pub async fn with_config(db: TestDb, config: EngineConfig) -> Self {
        Self::build(db, config, actions_config(), None, None).await
    }

    /// A test app with these engine settings, action-module settings (vendor base URLs) and,
    /// if given, a shared rate limiter and live-event bus (else the in-process ones).
    pub async fn build(
        db: TestDb,
        config: EngineConfig,
        actions_config: ActionsConfig,
        limiter: Option<Arc<dyn RateLimiter>>,
        events: Option<Arc<dyn EventBus>>,
    ) -> Self {
        let store = db.store().await;
        let clock = ManualClock::new(1_800_000_000_000);
        let flaky = Flaky::default();
        let vault = actions_config.vault.clone();
        let mut actions_config = actions_config;
        actions_config.store = Some(store.clone());
        let mut actions: ActionRegistry = switchboard_actions::registry(&actions_config).unwrap();
        let gate = Gate::default();
        let later = Deferred::default();
        actions.register(flaky.clone()).register(Broken).register(gate.clone()).register(later.clone());
        let mut engine = Engine::new(store, actions, Arc::new(clock.clone()), config);
        if let Some(limiter) = limiter {
            engine = engine.with_rate_limiter(limiter);
        }
        if let Some(events) = events {
            engine = engine.with_events(events);
        }
        let engine = Arc::new(engine);
        let mut state = AppState::new(engine.clone(), vault, ADMIN, "http://sb.test");
        if let Some(calls) = switchboard_actions::calls(&actions_config).unwrap() {
            state = state.with_calls(calls);
        }
        let state = state.with_oauth(actions_config.oauth.clone(), &actions_config.http).unwrap();
        TestApp { _db: db, engine, clock, flaky, gate, later, state }
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Sends a request to the API; returns the status and the JSON body (Null if not JSON).
    pub async fn call(&self, method: &str, path: &str, auth: Option<&str>, content_type: Option<&str>, body: impl Into<Body>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            req = req.header("authorization", format!("Bearer {a}"));
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        self.send(req.body(body.into()).unwrap()).await
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let res = switchboard_api::router(self.state.clone()).oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call("GET", path, Some(key), None, Body::empty()).await
    }

    pub async fn post_json(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(key), Some("application/json"), body.to_string()).await
    }

    /// Creates an account on the starter plan; returns `(id, api key)`.
    pub async fn account(&self, name: &str) -> (String, String) {
        self.account_on(name, "starter").await
    }

    /// Creates an account on a plan; returns `(id, api key)`.
    pub async fn account_on(&self, name: &str, plan: &str) -> (String, String) {
        let (status, body) = self.call("POST", "/v1/accounts", Some(ADMIN), Some("application/json"), json!({ "name": name, "plan": plan }).to_string()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (body["id"].as_str().unwrap().to_string(), body["api_key"].as_str().unwrap().to_string())
    }

    /// Creates a workflow; returns its JSON.
    pub async fn workflow(&self, key: &str, def: &Value) -> Value {
        let (status, body) = self.post_json("/v1/workflows", key, def).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Runs every due step now.
    pub async fn drain(&self) -> usize {
        self.engine.drain().await.unwrap()
    }

    /// Moves time forward, then runs what fell due.
    pub async fn advance(&self, ms: i64) -> usize {
        self.clock.advance(ms);
        self.drain().await
    }

    pub async fn run(&self, key: &str, run_id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/runs/{run_id}"), key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn start(&self, key: &str, workflow_id: &str, event: &Value) -> String {
        let (status, body) = self.post_json(&format!("/v1/workflows/{workflow_id}/runs"), key, event).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["run_id"].as_str().unwrap().to_string()
    }
}

/// The statuses of a run's steps, in order, as `id:status`.
pub fn timeline(run: &Value) -> Vec<String> {
    run["steps"].as_array().unwrap().iter().map(|s| format!("{}:{}", s["id"].as_str().unwrap(), s["status"].as_str().unwrap())).collect()
}

/// A TCP proxy to a server (Redis) that can be taken away and brought back on the same port,
/// to test outages: stopping it closes every connection through it and refuses new ones.
pub struct Proxy {
    pub port: u16,
    upstream: String,
    accepting: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// A proxy on a free local port to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let mut proxy = Proxy { port: 0, upstream: upstream.to_string(), accepting: None };
        proxy.resume().await;
        proxy
    }

    /// Closes every connection and stops listening.
    pub fn stop(&mut self) {
        if let Some(task) = self.accepting.take() {
            task.abort(); // drops the JoinSet: every connection task is aborted with it
        }
    }

    /// Listens again (on the same port).
    pub async fn resume(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.port = listener.local_addr().unwrap().port();
        let upstream = self.upstream.clone();
        self.accepting = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}
