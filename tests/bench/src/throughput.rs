//! Throughput in one process: webhook ingest, steps/s of 10-step runs (unbilled and billed), and
//! `GET /v1/usage` over a full ledger.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_runtime::engine::worker;
use switchboard_runtime::store::Account;
use tokio::net::TcpListener;

use switchboard_api::auth::random_secret;
use switchboard_api::{AppState, router};

use super::{Backend, BenchArgs, Figures};

/// Webhook ingest: requests/s, p50 and p99 in ms.
pub(super) struct Ingest {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Ingest: the API alone (no workers), so the figure is the accept path. The webhook runs are
/// drained afterwards so that they do not count in later measurements.
pub(super) async fn ingest(b: &Backend, args: &BenchArgs) -> anyhow::Result<Ingest> {
    let token = random_secret("wh_");
    let hook = json!({ "name": "bench hook", "trigger": { "webhook": {} }, "steps": [{ "id": "done", "end": {} }] });
    b.workflow("hook", &hook, "webhook", Some(token.clone())).await?;
    let state = AppState::new(b.engine.clone(), b.vault.clone(), "unused", "http://bench");
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(axum::serve(listener, router(state)).into_future());
    let figures = post_webhooks(&format!("http://{addr}/hooks/{token}"), args.requests, args.clients).await;
    server.abort();
    drain_with_workers(b, Duration::from_millis(5)).await?;
    figures
}

/// Queues `--runs` runs of a `--steps`-step workflow with no worker running, then times the
/// in-process workers draining them. `billed`: every step writes a ledger row.
pub(super) async fn steps(b: &Backend, args: &BenchArgs, billed: bool) -> anyhow::Result<Duration> {
    let row = if billed {
        let steps: Vec<_> = (0..args.steps).map(|i| json!({ "id": format!("s{i}"), "action": "bench.billed" })).collect();
        b.workflow("billed", &json!({ "name": "bench billed", "trigger": { "manual": {} }, "steps": steps }), "manual", None).await?
    } else {
        b.log_workflow("steps", args.steps).await?
    };
    b.queue_runs(&row, args.runs, |_| json!({ "lead": { "first_name": "Ada" } })).await?;
    Ok(drain_with_workers(b, Duration::from_millis(5)).await?.0)
}

/// Runs the in-process workers until the queue is empty, polling every `poll` through the
/// bench's own pool; returns how long that took and how many polls it made.
pub(super) async fn drain_with_workers(b: &Backend, poll: Duration) -> anyhow::Result<(Duration, i64)> {
    let started = Instant::now();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let workers = worker::run(b.engine.clone(), async move {
        let _ = stop_rx.changed().await;
    });
    let watch = async {
        let mut polls = 0;
        let drained = loop {
            polls += 1;
            match b.probe.queued().await {
                Ok(0) => break Ok((started.elapsed(), polls)),
                Ok(_) => tokio::time::sleep(poll).await,
                Err(e) => break Err(e.into()),
            }
        };
        // The workers stop either way.
        let _ = stop_tx.send(true);
        drained
    };
    let (worked, elapsed) = tokio::join!(workers, watch);
    worked.map_err(|e| anyhow::anyhow!(e))?;
    elapsed
}

/// Fills the ledger of a fresh account, then times `GET /v1/usage` by unit and by day.
pub(super) async fn usage_latency(b: &Backend, rows: i64) -> anyhow::Result<[(f64, f64); 2]> {
    let store = b.store();
    let now = b.now();
    let account =
        Account { id: "ledger".into(), name: "ledger".into(), plan: "enterprise".into(), timezone: "UTC".into(), created_at: now, contact_rules: None };
    let key = random_secret("sk_");
    store.create_account(&account, &switchboard_runtime::engine::new_id(), &switchboard_api::auth::hash_key(&key)).await?;
    store.fill_ledger_for_bench("ledger", rows, &switchboard_runtime::metering::local_day(now, "UTC"), now).await?;
    // Numbering (and rolling up) a million fresh rows is set-up, not what is timed.
    store.sequence_ledger().await?;
    let app = router(AppState::new(b.engine.clone(), b.vault.clone(), "unused", "http://bench"));
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

/// The webhook body of the ingest measurements: a lead of ~0.5 KB of compact JSON.
pub(super) fn lead_body() -> String {
    json!({
        "lead": { "id": "lead_123", "first_name": "Ada", "last_name": "Lovelace", "phone": "+15550001111",
                  "email": "ada@example.com", "source": "website", "notes": "x".repeat(300) }
    })
    .to_string()
}

/// `requests` webhook POSTs of a ~0.5 KB body from `clients` keep-alive clients.
async fn post_webhooks(url: &str, requests: usize, clients: usize) -> anyhow::Result<Ingest> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(clients).build()?;
    let body = lead_body();
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
    Ok(Ingest { rps: requests as f64 / elapsed.as_secs_f64(), p50_ms: pct(0.50), p99_ms: pct(0.99) })
}

pub(super) fn print(figures: &[Figures], args: &BenchArgs) {
    let dash = || "-".to_string();
    if figures.iter().any(|f| f.ingest.is_some() || f.steps.is_some()) {
        println!();
        println!("{:<10} {:>14} {:>9} {:>9} {:>12} {:>14}", "backend", "ingest req/s", "p50 ms", "p99 ms", "steps/s", "runs drained");
        for f in figures {
            let (rps, p50, p99) = match &f.ingest {
                Some(i) => (format!("{:.0}", i.rps), format!("{:.2}", i.p50_ms), format!("{:.2}", i.p99_ms)),
                None => (dash(), dash(), dash()),
            };
            let steps = f.steps.map(|d| format!("{:.0}", (args.runs * args.steps) as f64 / d.as_secs_f64())).unwrap_or_else(dash);
            let drained = f.steps.map(|d| format!("{:.2}s", d.as_secs_f64())).unwrap_or_else(dash);
            println!("{:<10} {rps:>14} {p50:>9} {p99:>9} {steps:>12} {drained:>14}", f.backend);
        }
        println!(
            "(ingest: {} webhook POSTs of ~0.5 KB from {} clients, each answered 202 after commit; \
             steps: {} runs x {} log steps, in-process workers)",
            args.requests, args.clients, args.runs, args.steps
        );
    }
    if figures.iter().any(|f| f.billed.is_some() || f.usage_ms.is_some()) {
        println!();
        println!("{:<10} {:>16} {:>18} {:>22} {:>22}", "backend", "billed steps/s", "ledger µs/step", "usage by unit p50/max", "usage by day p50/max");
        for f in figures {
            let steps = (args.runs * args.steps) as f64;
            let billed = f.billed.map(|d| format!("{:.0}", steps / d.as_secs_f64())).unwrap_or_else(dash);
            // The extra time a billed step takes over an unbilled one: its ledger row.
            let overhead = match (f.billed, f.steps) {
                (Some(b), Some(s)) => format!("{:.1}", (b.as_secs_f64() - s.as_secs_f64()) / steps * 1e6),
                _ => dash(),
            };
            let usage = |i: usize| f.usage_ms.map(|u| format!("{:.1} / {:.1} ms", u[i].0, u[i].1)).unwrap_or_else(dash);
            println!("{:<10} {billed:>16} {overhead:>18} {:>22} {:>22}", f.backend, usage(0), usage(1));
        }
        if args.ledger_rows > 0 {
            println!("(usage: GET /v1/usage over {} ledger rows of one account, 20 requests each)", args.ledger_rows);
        }
    }
}
