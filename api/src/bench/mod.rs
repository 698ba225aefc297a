//! `switchboard bench`: webhook ingest (requests/s, p50/p99 at 64 concurrent clients, 202 only
//! after commit) and step throughput (1,000 runs of a 10-step workflow), on SQLite and on
//! PostgreSQL, printed as a table. Figures, not assertions: nothing here fails on a slow machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::json;
use switchboard_runtime::clock::SystemClock;
use switchboard_runtime::engine::{Engine, EngineConfig, worker};
use switchboard_runtime::store::{Account, Store, StoreConfig, WorkflowWrite, dialect};
use tokio::net::TcpListener;

use crate::app::{AppState, router};
use crate::auth::random_secret;
use switchboard_runtime::action::{Action, ActionContext, ActionError, ActionOutput, Delivery, Field};
use switchboard_runtime::metering::Usage;

/// Options of `switchboard bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// PostgreSQL server to measure on (a fresh database is created, then dropped); `none` skips.
    #[arg(long, env = "SWITCHBOARD_BENCH_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres: String,
    /// Webhook requests sent in the ingest measurement.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Concurrent webhook clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Runs in the throughput measurement.
    #[arg(long, default_value_t = 1_000)]
    pub runs: usize,
    /// Steps of each run in the throughput measurement.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Ledger rows to fill before timing `GET /v1/usage` (0 skips the measurement).
    #[arg(long, default_value_t = 1_000_000)]
    pub ledger_rows: i64,
    /// Delays to schedule for the timer-lateness measurement (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub timers: usize,
    /// The window (seconds) the delays fall due in.
    #[arg(long, default_value_t = 10)]
    pub timer_window_secs: u64,
}

/// Latency figures, in ms: (p50, p99, max) of accept → first step, and of timer lateness, and
/// how many timers fired early.
struct Latency {
    first_step: (f64, f64, f64),
    timers: Option<((f64, f64, f64), usize)>,
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    (at(0.5), at(0.99), v[v.len() - 1])
}

/// A no-op action that is billed: the difference to `log` is the ledger's cost per step.
struct Billed;

#[async_trait::async_trait]
impl Action for Billed {
    const KIND: &'static str = "bench.billed";
    const INPUT: &'static [Field] = &[];
    const DELIVERY: Delivery = Delivery::Internal;

    async fn execute(&self, _ctx: &ActionContext, _input: serde_json::Value) -> Result<ActionOutput, ActionError> {
        Ok(ActionOutput { output: json!({}), usage: vec![Usage { unit: "http_request".into(), quantity: 1 }] })
    }
}

struct Figures {
    backend: &'static str,
    ingest_rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    steps_per_sec: f64,
    runs_elapsed: Duration,
    /// Steps/s of the same runs with every step billed.
    billed_steps_per_sec: f64,
    /// `GET /v1/usage` over the filled ledger: (p50, max) in ms, by unit and by day.
    usage_ms: Option<[(f64, f64); 2]>,
    /// Accept → first step, and timer lateness.
    latency: Latency,
}

/// Runs the benchmark on SQLite, then on PostgreSQL if reachable, and prints the figures.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut figures = Vec::new();
    let dir = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
    let sqlite_url = format!("sqlite://{}", dir.join("bench.db").display());
    figures.push(measure("sqlite", &sqlite_url, &args).await?);
    let _ = std::fs::remove_dir_all(&dir);
    if args.postgres != "none" {
        let name = format!("switchboard_bench_{}", std::process::id());
        match dialect::create_postgres_database(&args.postgres, &name).await {
            Ok(url) => {
                let result = measure("postgres", &url, &args).await;
                dialect::drop_postgres_database(&args.postgres, &name).await?;
                figures.push(result?);
            }
            Err(e) => println!("PostgreSQL at {} unreachable ({e}); measured SQLite only", crate::cli::redact(&args.postgres)),
        }
    }
    println!();
    println!("machine: {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!(
        "{:<10} {:>14} {:>9} {:>9} {:>12} {:>14}",
        "backend", "ingest req/s", "p50 ms", "p99 ms", "steps/s", "runs drained"
    );
    for f in &figures {
        println!(
            "{:<10} {:>14.0} {:>9.2} {:>9.2} {:>12.0} {:>13.2}s",
            f.backend,
            f.ingest_rps,
            f.p50_ms,
            f.p99_ms,
            f.steps_per_sec,
            f.runs_elapsed.as_secs_f64()
        );
    }
    println!(
        "(ingest: {} webhook POSTs of ~0.5 KB from {} clients, each answered 202 after commit; \
         steps: {} runs x {} log steps)",
        args.requests, args.clients, args.runs, args.steps
    );
    println!();
    println!("{:<10} {:>16} {:>18} {:>22} {:>22}", "backend", "billed steps/s", "ledger µs/step", "usage by unit p50/max", "usage by day p50/max");
    for f in &figures {
        // The extra time a billed step takes over an unbilled one: its ledger row.
        let overhead_us = (1.0 / f.billed_steps_per_sec - 1.0 / f.steps_per_sec) * 1e6;
        let usage = |i: usize| f.usage_ms.map(|u| format!("{:.1} / {:.1} ms", u[i].0, u[i].1)).unwrap_or_else(|| "-".into());
        println!("{:<10} {:>16.0} {:>18.1} {:>22} {:>22}", f.backend, f.billed_steps_per_sec, overhead_us, usage(0), usage(1));
    }
    if args.ledger_rows > 0 {
        println!("(usage: GET /v1/usage over {} ledger rows of one account, 20 requests each)", args.ledger_rows);
    }
    println!();
    println!("{:<10} {:>30} {:>34} {:>8}", "backend", "accept→first step p50/p99/max", "timer lateness p50/p99/max", "early");
    for f in &figures {
        let (a, b, c) = f.latency.first_step;
        let timers = f.latency.timers.map(|((p50, p99, max), early)| (format!("{p50:.0} / {p99:.0} / {max:.0} ms"), early.to_string()));
        let (late, early) = timers.unwrap_or_else(|| ("-".into(), "-".into()));
        println!("{:<10} {:>30} {:>34} {:>8}", f.backend, format!("{a:.1} / {b:.1} / {c:.1} ms"), late, early);
    }
    println!(
        "(first step: 500 runs started 2 ms apart on an idle runtime; timers: {} delays falling due within {} s)",
        args.timers, args.timer_window_secs
    );
    Ok(())
}

async fn measure(backend: &'static str, url: &str, args: &BenchArgs) -> anyhow::Result<Figures> {
    let store = Store::connect(&StoreConfig { url: url.to_string(), max_connections: 16 }).await?;
    store.migrate().await?;
    let vault = Arc::new(switchboard_integrations::connections::Vault::from_hex(&switchboard_integrations::connections::Vault::generate_hex())?);
    let mut actions = switchboard_actions::registry(&switchboard_actions::ActionsConfig::new(vault.clone()))?;
    actions.register(Billed);
    let engine = Arc::new(Engine::new(store.clone(), actions, Arc::new(SystemClock), EngineConfig::default()));
    let now = engine.clock().now();
    let account = Account { id: "bench".into(), name: "bench".into(), plan: "enterprise".into(), timezone: "UTC".into(), created_at: now };
    store.create_account(&account, "bench-key-hash").await?;

    // Ingest: the API alone (no workers), so the figure is the accept path.
    let token = random_secret("wh_");
    let steps: Vec<_> = (0..args.steps).map(|i| json!({ "id": format!("s{i}"), "action": "log", "input": { "message": "step {{ run.id }}" } })).collect();
    let hook = json!({ "name": "bench hook", "trigger": { "webhook": {} }, "steps": [{ "id": "done", "end": {} }] });
    store.create_workflow(&write("hook", &hook, "webhook", Some(token.clone()), now)).await?;
    let state = AppState::new(engine.clone(), vault.clone(), "unused", "http://bench");
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(axum::serve(listener, router(state)).into_future());
    let (ingest_rps, p50_ms, p99_ms) = ingest(&format!("http://{addr}/hooks/{token}"), args.requests, args.clients).await?;
    server.abort();

    // Throughput: drain the webhook runs (one step each) first so they do not count, then
    // queue the 10-step runs with no worker running, then time the workers draining them.
    drain_with_workers(&engine).await?;
    let manual = json!({ "name": "bench steps", "trigger": { "manual": {} }, "steps": steps });
    store.create_workflow(&write("steps", &manual, "manual", None, now)).await?;
    let row = store.workflow("bench", "steps").await?.context("bench workflow")?;
    for _ in 0..args.runs {
        engine.start_manual(&row, json!({ "lead": { "first_name": "Ada" } })).await?;
    }
    let runs_elapsed = drain_with_workers(&engine).await?;

    // The same runs with every step billed: the difference is the ledger's cost.
    let billed: Vec<_> = (0..args.steps).map(|i| json!({ "id": format!("s{i}"), "action": "bench.billed" })).collect();
    let billed = json!({ "name": "bench billed", "trigger": { "manual": {} }, "steps": billed });
    store.create_workflow(&write("billed", &billed, "manual", None, now)).await?;
    let row = store.workflow("bench", "billed").await?.context("bench workflow")?;
    for _ in 0..args.runs {
        engine.start_manual(&row, json!({})).await?;
    }
    let billed_elapsed = drain_with_workers(&engine).await?;

    let latency = latency(&engine, args, now).await?;
    let usage_ms = if args.ledger_rows > 0 { Some(usage_latency(&engine, args.ledger_rows).await?) } else { None };
    store.close().await;
    Ok(Figures {
        backend,
        ingest_rps,
        p50_ms,
        p99_ms,
        steps_per_sec: (args.runs * args.steps) as f64 / runs_elapsed.as_secs_f64(),
        runs_elapsed,
        billed_steps_per_sec: (args.runs * args.steps) as f64 / billed_elapsed.as_secs_f64(),
        usage_ms,
        latency,
    })
}

/// Accept → first step (runs started one by one while workers run), and timer lateness (delays
/// falling due over a window; lateness = when the delay step fired − its due time).
async fn latency(engine: &Arc<Engine>, args: &BenchArgs, now: i64) -> anyhow::Result<Latency> {
    let store = engine.store();
    let first = json!({ "name": "first", "trigger": { "manual": {} }, "steps": [{ "id": "go", "action": "log", "input": { "message": "x" } }] });
    store.create_workflow(&write("first", &first, "manual", None, now)).await?;
    let timer = json!({ "name": "timers", "trigger": { "manual": {} }, "steps": [{ "id": "t", "delay": { "until": "{{ event.due }}" } }] });
    store.create_workflow(&write("timers", &timer, "manual", None, now)).await?;
    let first_row = store.workflow("bench", "first").await?.context("bench workflow")?;
    let timer_row = store.workflow("bench", "timers").await?.context("bench workflow")?;

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let workers = worker::run(engine.clone(), async move {
        let _ = stop_rx.changed().await;
    });
    let driver = async {
        // Timers, queued 64 at a time (group commit), due from 15 s from now over the window.
        // Their first step (the delay starting) runs at once; wait for those to settle.
        let start_at = engine.clock().now() + 15_000;
        let window_ms = (args.timer_window_secs * 1000) as i64;
        let due: Vec<(String, i64)> = futures::stream::iter(0..args.timers)
            .map(|i| {
                let at = start_at + window_ms * i as i64 / args.timers.max(1) as i64;
                let event = json!({ "due": switchboard_runtime::clock::to_rfc3339(at) });
                let (engine, row) = (engine.clone(), timer_row.clone());
                async move { engine.start_manual(&row, event).await.map(|a| (a.run_id, at)) }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        while store.next_due_at().await?.is_some_and(|d| d <= engine.clock().now()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::ensure!(engine.clock().now() + 2_000 < start_at, "setting up the timers took too long; use fewer --timers");
        // Accept → first step on an otherwise idle runtime, before the timers fall due.
        let mut first_runs = Vec::new();
        for _ in 0..500 {
            first_runs.push(engine.start_manual(&first_row, json!({})).await?.run_id);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        while store.queue_depth().await? > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop_tx.send(true);
        anyhow::Ok((first_runs, due))
    };
    let (worked, driven) = tokio::join!(workers, driver);
    worked.map_err(|e| anyhow::anyhow!(e))?;
    let (first_runs, due) = driven?;
    let mut first_ms = Vec::new();
    for id in first_runs {
        if let Some((run, _, _)) = store.run_detail("bench", &id).await? {
            first_ms.push(run.started_at.unwrap_or(run.created_at).saturating_sub(run.created_at) as f64);
        }
    }
    let timers = if args.timers > 0 {
        let (mut late, mut early) = (Vec::new(), 0);
        for (id, at) in due {
            let Some((_, steps, _)) = store.run_detail("bench", &id).await? else { continue };
            let fired = steps
                .iter()
                .find(|s| s.status == "succeeded")
                .and_then(|s| s.output.as_deref())
                .and_then(|o| serde_json::from_str::<serde_json::Value>(o).ok())
                .and_then(|o| o["waited_until"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()))
                .map(|t| t.timestamp_millis());
            if let Some(fired) = fired {
                if fired < at {
                    early += 1;
                }
                late.push((fired - at) as f64);
            }
        }
        Some((percentiles(late), early))
    } else {
        None
    };
    Ok(Latency { first_step: percentiles(first_ms), timers })
}

/// Fills the ledger of a fresh account, then times `GET /v1/usage` by unit and by day.
async fn usage_latency(engine: &Arc<Engine>, rows: i64) -> anyhow::Result<[(f64, f64); 2]> {
    let store = engine.store();
    let now = engine.clock().now();
    let account = Account { id: "ledger".into(), name: "ledger".into(), plan: "enterprise".into(), timezone: "UTC".into(), created_at: now };
    let key = random_secret("sk_");
    store.create_account(&account, &crate::auth::hash_key(&key)).await?;
    store.fill_ledger_for_bench("ledger", rows, &switchboard_runtime::metering::local_day(now, "UTC"), now).await?;
    // Numbering (and rolling up) a million fresh rows is set-up, not what is timed.
    store.sequence_ledger().await?;
    let app = router(AppState::new(engine.clone(), Arc::new(switchboard_integrations::connections::Vault::from_hex(&switchboard_integrations::connections::Vault::generate_hex())?), "unused", "http://bench"));
    let mut out = [(0.0, 0.0); 2];
    for (i, group) in ["unit", "day"].iter().enumerate() {
        let mut times = Vec::new();
        for _ in 0..20 {
            let req = axum::http::Request::get(format!("/v1/usage?group_by={group}"))
                .header("authorization", format!("Bearer {key}"))
                .body(axum::body::Body::empty())?;
            let started = Instant::now();
            let res = tower::ServiceExt::oneshot(app.clone(), req).await?;
            anyhow::ensure!(res.status() == 200, "GET /v1/usage answered {}", res.status());
            let _ = axum::body::to_bytes(res.into_body(), usize::MAX).await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        out[i] = (times[times.len() / 2], times[times.len() - 1]);
    }
    Ok(out)
}

fn write(id: &str, doc: &serde_json::Value, kind: &str, token: Option<String>, now: i64) -> WorkflowWrite {
    WorkflowWrite {
        id: id.into(),
        account_id: "bench".into(),
        name: id.into(),
        enabled: true,
        trigger_kind: kind.into(),
        event_type: None,
        webhook_token: token,
        definition: doc.to_string(),
        now,
    }
}

/// Runs the workers until the queue is empty; returns how long that took.
async fn drain_with_workers(engine: &Arc<Engine>) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let workers = worker::run(engine.clone(), async move {
        let _ = stop_rx.changed().await;
    });
    let watch = async {
        while engine.store().queue_depth().await? > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed();
        let _ = stop_tx.send(true);
        anyhow::Ok(elapsed)
    };
    let (worked, elapsed) = tokio::join!(workers, watch);
    worked.map_err(|e| anyhow::anyhow!(e))?;
    elapsed
}

async fn ingest(url: &str, requests: usize, clients: usize) -> anyhow::Result<(f64, f64, f64)> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(clients).build()?;
    let body = json!({
        "lead": { "id": "lead_123", "first_name": "Ada", "last_name": "Lovelace", "phone": "+15550001111",
                  "email": "ada@example.com", "source": "website", "notes": "x".repeat(300) }
    })
    .to_string();
    let remaining = Arc::new(AtomicUsize::new(requests));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, body, remaining) = (client.clone(), url.to_string(), body.clone(), remaining.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                let t = Instant::now();
                let res = client.post(&url).header("content-type", "application/json").body(body.clone()).send().await?;
                anyhow::ensure!(res.status() == 202, "webhook answered {}", res.status());
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    Ok((requests as f64 / elapsed.as_secs_f64(), pct(0.50), pct(0.99)))
}
