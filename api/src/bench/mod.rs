//! `switchboard bench`: the figures of docs/performance.md, printed as tables. Figures, not
//! assertions: nothing here fails on a slow machine.
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
//! - [`memory`]: a worker's resident memory with an empty queue and with 1,000,000 pending
//!   delays (`memory`, PostgreSQL only).

mod latency;
mod memory;
mod procs;
mod statements;
mod throughput;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions};
use switchboard_integrations::connections::Vault;
use switchboard_runtime::action::{Action, ActionContext, ActionError, Delivery, Done};
use switchboard_runtime::clock::SystemClock;
use switchboard_runtime::engine::{Engine, EngineConfig};
use switchboard_runtime::metering::Unit;
use switchboard_runtime::store::{Account, Store, StoreConfig, WorkflowRow, WorkflowWrite, dialect};

pub(crate) use statements::init_tracing;

/// Every measurement, in the order they run on a backend.
const MEASUREMENTS: [&str; 8] = ["ingest", "steps", "billed", "statements", "procs", "timers", "usage", "memory"];

/// Measurements that need PostgreSQL (several processes on one database; bulk SQL).
const POSTGRES_ONLY: [&str; 2] = ["procs", "memory"];

/// Options of `switchboard bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// PostgreSQL server to measure on (a fresh database is created, then dropped); `none` skips.
    #[arg(long, env = "SWITCHBOARD_BENCH_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres: String,
    /// Backends to measure, comma-separated: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    pub backends: Vec<String>,
    /// Measurements to run, comma-separated: ingest, steps, billed, statements, procs, timers,
    /// usage, memory (procs and memory on PostgreSQL only), or all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub only: Vec<String>,
    /// Webhook requests sent in the ingest measurement.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Concurrent webhook clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Runs in the in-process throughput and statement measurements.
    #[arg(long, default_value_t = 1_000)]
    pub runs: usize,
    /// Steps of each run in the throughput, statement and process measurements.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Ledger rows to fill before timing `GET /v1/usage` (0 skips the measurement).
    #[arg(long, default_value_t = 1_000_000)]
    pub ledger_rows: i64,
    /// Delays to schedule for the timer-lateness measurement (0 skips the timers, keeping the
    /// accept → first step figure).
    #[arg(long, default_value_t = 100_000)]
    pub timers: usize,
    /// The window (seconds) the delays fall due in.
    #[arg(long, default_value_t = 60)]
    pub timer_window_secs: u64,
    /// Runs per worker count in the multi-process measurement.
    #[arg(long, default_value_t = 10_000)]
    pub proc_runs: usize,
    /// Worker process counts of the multi-process measurement, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub procs: Vec<usize>,
    /// Runs parked on a delay (due in 30 days) for the memory measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub pending_delays: i64,
    /// Seconds the worker polls before its memory is read, in each memory measurement.
    #[arg(long, default_value_t = 15)]
    pub memory_secs: u64,
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
    /// The bench's own queries (progress polls, result reads, bulk inserts). Its statement
    /// logging is off, so the statement count sees only the runtime's statements.
    db: AnyPool,
}

impl Backend {
    /// Connects, migrates, and creates the `bench` account.
    async fn open(name: &'static str, url: &str) -> anyhow::Result<Self> {
        let store = Store::connect(&StoreConfig { url: url.to_string(), max_connections: 16 }).await?;
        store.migrate().await?;
        let vault = Arc::new(Vault::from_hex(&Vault::generate_hex())?);
        let mut actions = switchboard_actions::registry(&switchboard_actions::ActionsConfig::new(vault.clone()))?;
        actions.register(Billed);
        let engine = Arc::new(Engine::new(store.clone(), actions, Arc::new(SystemClock), EngineConfig::default()));
        let now = engine.clock().now();
        let account = Account { id: "bench".into(), name: "bench".into(), plan: "enterprise".into(), timezone: "UTC".into(), created_at: now };
        store.create_account(&account, "bench-key", "bench-key-hash").await?;
        // Store::connect installed the Any drivers; the file exists now on SQLite.
        let options = AnyConnectOptions::from_str(url)?.disable_statement_logging();
        let db = AnyPoolOptions::new().max_connections(2).connect_with(options).await?;
        Ok(Self { name, url: url.to_string(), engine, vault, db })
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

    /// One number from the bench's own pool.
    async fn count(&self, sql: &'static str, bind: &str) -> anyhow::Result<i64> {
        let row: (i64,) = sqlx::query_as(sql).bind(bind).fetch_one(&self.db).await?;
        Ok(row.0)
    }

    async fn close(&self) {
        self.db.close().await;
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
}

/// Runs the selected measurements on SQLite and on PostgreSQL (if reachable), then prints them.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    elapsed_secs();
    let selected = args.selected()?;
    let wants = |b: &str| args.backends.iter().any(|x| x.trim() == b);
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
            Err(e) => println!("PostgreSQL at {} unreachable ({e}); measured SQLite only", crate::cli::redact(&args.postgres)),
        }
    }
    print(&figures, &args);
    println!();
    println!("bench took {:.0} s ({} cores)", started.elapsed().as_secs_f64(), std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    Ok(())
}

/// The selected measurements on one backend; `server` is the PostgreSQL server URL (the memory
/// measurement makes a database of its own there).
async fn measure(b: Backend, args: &BenchArgs, selected: &[&str], server: Option<&str>) -> anyhow::Result<Figures> {
    let mut f =
        Figures { backend: b.name, ingest: None, steps: None, billed: None, statements: None, procs: Vec::new(), latency: None, usage_ms: None, memory: None };
    for m in selected {
        eprintln!("[{:>5.0} s] {} {m}", elapsed_secs(), b.name);
        match *m {
            "ingest" => f.ingest = Some(throughput::ingest(&b, args).await?),
            "steps" => f.steps = Some(throughput::steps(&b, args, false).await?),
            "billed" => f.billed = Some(throughput::steps(&b, args, true).await?),
            "statements" => f.statements = Some(statements::measure(&b, args).await?),
            "procs" if b.is_postgres() => f.procs = procs::measure(&b, args).await?,
            "timers" => f.latency = Some(latency::measure(&b, args).await?),
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

fn print(figures: &[Figures], args: &BenchArgs) {
    throughput::print(figures, args);
    statements::print(figures, args);
    procs::print(figures, args);
    latency::print(figures, args);
    memory::print(figures, args);
}
