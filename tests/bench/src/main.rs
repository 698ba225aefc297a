//! `switchboard-bench`: the figures of docs/performance.md, printed as tables. Figures, not
//! assertions: nothing here fails on a slow machine.
//!
//! ```text
//! cargo build --release                                 # the server: target/release/switchboard
//! cargo run --release -p switchboard-bench -- [options] # --help lists them
//! ```
//!
//! It drives the runtime and the API as libraries, in this process; only `procs` and `memory`
//! start real `switchboard worker` processes, and `serve` a real `switchboard serve`, of the
//! server binary built first (`--server-bin`, by default the `switchboard` next to this
//! executable). Its own SQL (progress polls, result
//! reads, bulk copies, PostgreSQL statistics) is the store's, behind switchboard-runtime's
//! `bench` feature, which only this crate enables.
//!
//! One module per measurement, each selectable with `--only`:
//! - [`throughput`]: webhook ingest (requests/s, p50/p99 at 64 clients, 202 only after commit),
//!   steps/s of 10-step runs in process (`steps`, and `billed` with a ledger row per step), and
//!   `GET /v1/usage` over a million ledger rows (`usage`).
//! - [`latency`]: accept → first step, and the lateness of 100,000 delays falling due within a
//!   minute (`timers`).
//! - [`statements`]: SQL statements and commits per step (`statements`).
//! - [`procs`]: steps/s with 1, 2 and 4 real `switchboard worker` processes (`procs`,
//!   PostgreSQL only).
//! - [`fan_out`]: children started per second by one `for_each` over many items, workers
//!   running (`fan_out`).
//! - [`calls`]: the latency of Twilio's inbound-call requests (the first TwiML, a gather's
//!   result) under concurrent calls, with the workers running (`calls`).
//! - [`memory`]: a worker's resident memory with an empty queue and with 1,000,000 pending
//!   delays (`memory`, PostgreSQL only).
//! - [`serve`]: a real `switchboard serve` driven from outside over HTTP: webhook ingest with
//!   `wrk` while its workers run, and steps/s of runs posted as webhooks (`serve`); beside
//!   them the pgbench ceiling of one insert per transaction and graphile-worker's jobs/s
//!   (`tests/bench/graphile`), measured once.

mod calls;
mod fan_out;
mod latency;
mod memory;
mod procs;
mod serve;
mod statements;
mod throughput;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};
use switchboard_integrations::connections::Vault;
use switchboard_runtime::action::{Action, ActionContext, ActionError, Delivery, Done};
use switchboard_runtime::clock::SystemClock;
use switchboard_runtime::engine::{Engine, EngineConfig};
use switchboard_runtime::metering::Unit;
use switchboard_runtime::store::{Account, BenchProbe, Store, StoreConfig, WorkflowRow, WorkflowWrite, dialect};

/// Every measurement, in the order they run on a backend.
const MEASUREMENTS: [&str; 11] = ["ingest", "steps", "billed", "statements", "procs", "timers", "usage", "calls", "fan_out", "memory", "serve"];

/// Measurements that start processes of the server binary (`--server-bin`).
const SERVER_BIN: [&str; 3] = ["procs", "memory", "serve"];

/// Measurements that need PostgreSQL (several processes on one database; bulk SQL).
const POSTGRES_ONLY: [&str; 2] = ["procs", "memory"];

/// Measures ingest, steps/s (in process and with worker processes), latency, timers, SQL
/// statements per step and worker memory, and prints the figures.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchboard-bench", version, about)]
struct BenchArgs {
    /// PostgreSQL server to measure on (a fresh database is created, then dropped); `none` skips.
    #[arg(long, env = "SWITCHBOARD_BENCH_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    /// Backends to measure, comma-separated: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    /// Measurements to run, comma-separated: ingest, steps, billed, statements, procs, timers,
    /// usage, calls, fan_out, memory, serve (procs and memory on PostgreSQL only), or all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    only: Vec<String>,
    /// Webhook requests sent in the ingest measurement.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent webhook clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Runs in the in-process throughput and statement measurements.
    #[arg(long, default_value_t = 1_000)]
    runs: usize,
    /// Steps of each run in the throughput, statement and process measurements.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Ledger rows to fill before timing `GET /v1/usage` (0 skips the measurement).
    #[arg(long, default_value_t = 1_000_000)]
    ledger_rows: i64,
    /// Delays to schedule for the timer-lateness measurement (0 skips the timers, keeping the
    /// accept → first step figure).
    #[arg(long, default_value_t = 100_000)]
    timers: usize,
    /// The window (seconds) the delays fall due in.
    #[arg(long, default_value_t = 60)]
    timer_window_secs: u64,
    /// Runs per worker count in the multi-process measurement.
    #[arg(long, default_value_t = 10_000)]
    proc_runs: usize,
    /// Worker process counts of the multi-process measurement, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    procs: Vec<usize>,
    /// Runs parked on a delay (due in 30 days) for the memory measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pending_delays: i64,
    /// Inbound calls in the calls measurement.
    #[arg(long, default_value_t = 1_000)]
    calls: usize,
    /// Items of the fan-out measurement's for_each.
    #[arg(long, default_value_t = 10_000)]
    fan_out_items: usize,
    /// Children active at once in the fan-out measurement.
    #[arg(long, default_value_t = 10)]
    fan_out_concurrency: u32,
    /// Calls in flight at once in the calls measurement.
    #[arg(long, default_value_t = 50)]
    call_concurrency: usize,
    /// Seconds the worker polls before its memory is read, in each memory measurement.
    #[arg(long, default_value_t = 15)]
    memory_secs: u64,
    /// Seconds wrk posts webhooks to the real server in the serve measurement.
    #[arg(long, default_value_t = 20)]
    serve_secs: u64,
    /// wrk's connections in the serve measurement, and the concurrent clients posting its
    /// steps/s runs (and pgbench's clients).
    #[arg(long, default_value_t = 64)]
    serve_connections: usize,
    /// wrk's (and pgbench's) threads in the serve measurement.
    #[arg(long, default_value_t = 2)]
    serve_threads: usize,
    /// Runs of the `--steps`-step workflow posted to the real server in the serve measurement.
    #[arg(long, default_value_t = 1_000)]
    serve_runs: usize,
    /// Runs of the one-step workflow posted to the real server in the serve measurement.
    #[arg(long, default_value_t = 10_000)]
    serve_single_runs: usize,
    /// The real server's webhook rate limit (requests/s per webhook URL), high enough not to
    /// answer 429 to the load.
    #[arg(long, default_value_t = 1_000_000)]
    serve_rate_limit: u32,
    /// Seconds of the pgbench reference (serve measurement).
    #[arg(long, default_value_t = 15)]
    pgbench_secs: u64,
    /// No-op jobs graphile-worker drains in the reference of the serve measurement.
    #[arg(long, default_value_t = 10_000)]
    graphile_jobs: usize,
    /// graphile-worker's concurrency in that reference.
    #[arg(long, default_value_t = 24)]
    graphile_concurrency: usize,
    /// The graphile-worker project (package.json, drain.js); default tests/bench/graphile of
    /// this source tree.
    #[arg(long)]
    graphile_dir: Option<PathBuf>,
    /// The `switchboard` server binary whose `worker` command the procs and memory
    /// measurements start, and whose `serve` command the serve measurement starts (build it
    /// first: `cargo build --release`). Default: the `switchboard` next to this executable,
    /// i.e. target/release/switchboard.
    #[arg(long, env = "SWITCHBOARD_BENCH_SERVER_BIN")]
    server_bin: Option<PathBuf>,
}

impl BenchArgs {
    /// The selected measurements, checked against the known names.
    fn selected(&self) -> anyhow::Result<Vec<&'static str>> {
        if self.only.iter().any(|o| o == "all") {
            return Ok(MEASUREMENTS.to_vec());
        }
        let mut out = Vec::new();
        for name in &self.only {
            let known = MEASUREMENTS.iter().find(|m| **m == name.trim());
            out.push(*known.with_context(|| format!("unknown measurement '{name}'; known: {}", MEASUREMENTS.join(", ")))?);
        }
        Ok(out)
    }

    /// The server binary to start workers of; fails, saying how to build it, if it is missing.
    fn server_bin(&self) -> anyhow::Result<PathBuf> {
        let path = match &self.server_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe().context("the bench's own executable")?.with_file_name("switchboard"),
        };
        anyhow::ensure!(
            path.is_file(),
            "no server binary at {} (the procs, memory and serve measurements start its `worker` and `serve` commands): \
             build it with `cargo build --release`, or give its path with --server-bin",
            path.display()
        );
        // Absolute: the workers run in a directory of their own.
        Ok(std::fs::canonicalize(&path)?)
    }
}

fn main() -> anyhow::Result<()> {
    let args = BenchArgs::parse();
    // Only warnings are logged, so that logging is not what is measured; the bulk fills are slow
    // statements by design, so sqlx's warnings about them are left out.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,sqlx::query=error".into());
    // The log, plus a layer that counts the store's SQL statements when asked to.
    statements::init_tracing(filter);
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The server's metrics recorder, so that recording costs what it costs in production.
    switchboard_api::routes::health::prometheus();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

/// A no-op action that is billed: the difference to `log` is the ledger's cost per step.
struct Billed;

#[async_trait::async_trait]
impl Action for Billed {
    const KIND: &'static str = "bench.billed";
    const DELIVERY: Delivery = Delivery::Internal;
    const UNITS: &'static [Unit] = &[Unit::HttpRequest];
    type Input = serde_json::Value;
    type Output = serde_json::Value;

    async fn execute(&self, _ctx: &ActionContext, _input: serde_json::Value) -> Result<Done<serde_json::Value>, ActionError> {
        Ok(Done { output: json!({}), usage: vec![Unit::HttpRequest.times(1)] })
    }
}

/// One backend under measurement: a migrated store with the `bench` account, an engine over it
/// (no workers run unless a measurement starts them), and a pool of the bench's own.
struct Backend {
    name: &'static str,
    url: String,
    engine: Arc<Engine>,
    vault: Arc<Vault>,
    /// The bench's own queries (progress polls, result reads, bulk copies). Its statement
    /// logging is off, so the statement count sees only the runtime's statements.
    probe: BenchProbe,
}

impl Backend {
    /// Connects, migrates, and creates the `bench` account.
    async fn open(name: &'static str, url: &str) -> anyhow::Result<Self> {
        let store = Store::connect(&StoreConfig { url: url.to_string(), max_connections: 16 }).await?;
        store.migrate().await?;
        let vault = Arc::new(Vault::from_hex(&Vault::generate_hex())?);
        let mut config = switchboard_actions::ActionsConfig::new(vault.clone());
        config.store = Some(store.clone());
        let mut actions = switchboard_actions::registry(&config)?;
        actions.register(Billed);
        let engine = Arc::new(Engine::new(store.clone(), actions, Arc::new(SystemClock), EngineConfig::default()));
        let now = engine.clock().now();
        let account =
            Account { id: "bench".into(), name: "bench".into(), plan: "enterprise".into(), timezone: "UTC".into(), created_at: now, contact_rules: None };
        store.create_account(&account, "bench-key", "bench-key-hash").await?;
        let probe = BenchProbe::connect(url).await?;
        Ok(Self { name, url: url.to_string(), engine, vault, probe })
    }

    fn store(&self) -> &Store {
        self.engine.store()
    }

    fn now(&self) -> i64 {
        self.engine.clock().now()
    }

    fn is_postgres(&self) -> bool {
        self.name == "postgres"
    }

    /// Creates a workflow of the `bench` account and returns its row.
    async fn workflow(&self, id: &str, doc: &Value, kind: &str, token: Option<String>) -> anyhow::Result<WorkflowRow> {
        let write = WorkflowWrite {
            id: id.into(),
            account_id: "bench".into(),
            name: id.into(),
            enabled: true,
            trigger_kind: kind.into(),
            event_type: None,
            webhook_token: token,
            definition: doc.to_string(),
            template: None,
            now: self.now(),
        };
        self.store().create_workflow(&write).await?;
        self.store().workflow("bench", id).await?.context("bench workflow")
    }

    /// A manual workflow of `steps` `log` steps.
    async fn log_workflow(&self, id: &str, steps: usize) -> anyhow::Result<WorkflowRow> {
        let steps: Vec<_> = (0..steps).map(|i| json!({ "id": format!("s{i}"), "action": "log", "input": { "message": "step {{ run.id }}" } })).collect();
        self.workflow(id, &json!({ "name": id, "trigger": { "manual": {} }, "steps": steps }), "manual", None).await
    }

    /// Queues `n` runs of `row` through the engine's own ingest (`start_manual`), 64 at a time
    /// so that group commit batches them; returns their ids in order.
    async fn queue_runs(&self, row: &WorkflowRow, n: usize, event: impl Fn(usize) -> Value) -> anyhow::Result<Vec<String>> {
        let started: Vec<_> = futures::stream::iter(0..n)
            .map(|i| {
                let (engine, row, event) = (self.engine.clone(), row.clone(), event(i));
                async move { engine.start_manual(&row, event).await.map(|a| a.run_id) }
            })
            .buffered(64)
            .collect()
            .await;
        Ok(started.into_iter().collect::<Result<_, _>>()?)
    }

    async fn close(&self) {
        self.probe.close().await;
        self.store().close().await;
    }
}

/// (p50, p99, max) of samples.
fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    (at(0.5), at(0.99), v[v.len() - 1])
}

/// What one backend measured (`None`: not selected).
struct Figures {
    backend: &'static str,
    ingest: Option<throughput::Ingest>,
    /// Time to drain the 10-step runs, unbilled and billed.
    steps: Option<Duration>,
    billed: Option<Duration>,
    statements: Option<statements::Statements>,
    procs: Vec<procs::ProcFigure>,
    latency: Option<latency::Latency>,
    /// `GET /v1/usage` over the filled ledger: (p50, max) in ms, by unit and by day.
    usage_ms: Option<[(f64, f64); 2]>,
    memory: Option<memory::Memory>,
    calls: Option<calls::CallLatency>,
    fan_out: Option<fan_out::FanOut>,
    serve: Option<serve::Serve>,
}

/// Runs the selected measurements on SQLite and on PostgreSQL (if reachable), then prints them.
async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    elapsed_secs();
    let selected = args.selected()?;
    let wants = |b: &str| args.backends.iter().any(|x| x.trim() == b);
    let postgres = wants("postgres") && args.postgres != "none";
    if selected.iter().any(|m| SERVER_BIN.contains(m) && (postgres || !POSTGRES_ONLY.contains(m))) {
        // Before anything is measured, not after half an hour.
        args.server_bin()?;
    }
    let mut figures = Vec::new();
    if wants("sqlite") && selected.iter().any(|m| !POSTGRES_ONLY.contains(m)) {
        let dir = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        let result = measure(Backend::open("sqlite", &url).await?, &args, &selected, None).await;
        let _ = std::fs::remove_dir_all(&dir);
        figures.push(result?);
    }
    if wants("postgres") && args.postgres != "none" {
        let name = format!("switchboard_bench_{}", std::process::id());
        match dialect::create_postgres_database(&args.postgres, &name).await {
            Ok(url) => {
                let result = match Backend::open("postgres", &url).await {
                    Ok(backend) => measure(backend, &args, &selected, Some(&args.postgres)).await,
                    Err(e) => Err(e),
                };
                dialect::drop_postgres_database(&args.postgres, &name).await?;
                figures.push(result?);
            }
            Err(e) => println!("PostgreSQL at {} unreachable ({e}); measured SQLite only", switchboard_api::cli::redact(&args.postgres)),
        }
    }
    // The references of the serve measurement: once, with no server running.
    let references = if selected.contains(&"serve") { Some(serve::references(&args).await) } else { None };
    print(&figures, references.as_ref(), &args);
    println!();
    println!("bench took {:.0} s ({} cores)", started.elapsed().as_secs_f64(), std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    Ok(())
}

/// The selected measurements on one backend; `server` is the PostgreSQL server URL (the memory
/// measurement makes a database of its own there).
async fn measure(b: Backend, args: &BenchArgs, selected: &[&str], server: Option<&str>) -> anyhow::Result<Figures> {
    let mut f = Figures {
        backend: b.name,
        ingest: None,
        steps: None,
        billed: None,
        statements: None,
        procs: Vec::new(),
        latency: None,
        usage_ms: None,
        memory: None,
        calls: None,
        fan_out: None,
        serve: None,
    };
    for m in selected {
        eprintln!("[{:>5.0} s] {} {m}", elapsed_secs(), b.name);
        match *m {
            "ingest" => f.ingest = Some(throughput::ingest(&b, args).await?),
            "steps" => f.steps = Some(throughput::steps(&b, args, false).await?),
            "billed" => f.billed = Some(throughput::steps(&b, args, true).await?),
            "statements" => f.statements = Some(statements::measure(&b, args).await?),
            "procs" if b.is_postgres() => f.procs = procs::measure(&b, args).await?,
            "timers" => f.latency = Some(latency::measure(&b, args).await?),
            "calls" => f.calls = Some(calls::measure(&b, args).await?),
            "fan_out" => f.fan_out = Some(fan_out::measure(&b, args).await?),
            "serve" => f.serve = Some(serve::measure(&b, args).await?),
            "usage" if args.ledger_rows > 0 => f.usage_ms = Some(throughput::usage_latency(&b, args.ledger_rows).await?),
            "memory" => {
                if let Some(server) = server {
                    f.memory = Some(memory::measure(server, args).await?);
                }
            }
            _ => {}
        }
    }
    b.close().await;
    Ok(f)
}

/// Seconds since the bench started (progress lines on stderr).
fn elapsed_secs() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

fn print(figures: &[Figures], references: Option<&serve::References>, args: &BenchArgs) {
    throughput::print(figures, args);
    statements::print(figures, args);
    procs::print(figures, args);
    latency::print(figures, args);
    calls::print(figures, args);
    fan_out::print(figures, args);
    memory::print(figures, args);
    serve::print(figures, references, args);
}
