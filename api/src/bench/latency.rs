//! Latency in one process: accept → first step on an idle runtime, and timer lateness — many
//! delays (`delay: {until: …}`) falling due over a window, every one created and parked on its
//! delay before the window opens. Lateness = when the delay step fired − its due time.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::engine::worker;

use super::{Backend, BenchArgs, Figures, percentiles};

/// Accept → first step, and the timers.
pub(super) struct Latency {
    /// (p50, p99, max) in ms.
    first_step: (f64, f64, f64),
    timers: Option<Timers>,
}

/// Timer lateness.
struct Timers {
    /// (p50, p99, max) in ms.
    lateness: (f64, f64, f64),
    /// Fired before their due time (must be 0).
    early: usize,
    /// Delays whose step fired (must be all of them).
    fired: usize,
    /// Time to create and park every delay.
    setup: Duration,
    /// How long before the window opened the set-up was done.
    slack: Duration,
}

/// Runs started one by one, 2 ms apart, for the accept → first step figure.
const FIRST_RUNS: usize = 500;

pub(super) async fn measure(b: &Backend, args: &BenchArgs) -> anyhow::Result<Latency> {
    let first = json!({ "name": "first", "trigger": { "manual": {} }, "steps": [{ "id": "go", "action": "log", "input": { "message": "x" } }] });
    let first_row = b.workflow("first", &first, "manual", None).await?;
    let timer = |name: &str| json!({ "name": name, "trigger": { "manual": {} }, "steps": [{ "id": "t", "delay": { "until": "{{ event.due }}" } }] });
    let timer_row = b.workflow("timers", &timer("timers"), "manual", None).await?;
    let pilot_row = b.workflow("timers-pilot", &timer("timers-pilot"), "manual", None).await?;
    let (n, window_ms) = (args.timers, (args.timer_window_secs * 1000) as i64);

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let workers = worker::run(b.engine.clone(), async move {
        let _ = stop_rx.changed().await;
    });
    let driver = async {
        let mut timers = None;
        if n > 0 {
            // The window must open after every delay is created and parked, and creating them
            // takes a while: time a pilot of 2% first (delays due in a day, cancelled after),
            // then give the real ones 1.3 times the estimate plus 5 s.
            let pilot = (n / 50).clamp(200, 2_000);
            let far = to_rfc3339(b.now() + 86_400_000);
            let started = Instant::now();
            let ids = b.queue_runs(&pilot_row, pilot, |_| json!({ "due": far })).await?;
            wait_parked(b).await?;
            let per_run = started.elapsed().as_secs_f64() / pilot as f64;
            futures::stream::iter(ids)
                .map(|id| async move { b.engine.cancel_run("bench", &id).await })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;

            let start_at = b.now() + (per_run * n as f64 * 1300.0) as i64 + 5_000;
            let due = |i: usize| start_at + window_ms * i as i64 / n as i64;
            let started = Instant::now();
            b.queue_runs(&timer_row, n, |i| json!({ "due": to_rfc3339(due(i)) })).await?;
            wait_parked(b).await?;
            let setup = started.elapsed();
            let slack = start_at - b.now();
            anyhow::ensure!(slack > 1_000, "creating and parking {n} delays took {setup:?}, past the window's start; the pilot misjudged it");
            timers = Some((setup, Duration::from_millis(slack as u64)));
        }
        // Accept → first step on an otherwise idle runtime, before the timers fall due.
        for _ in 0..FIRST_RUNS {
            b.engine.start_manual(&first_row, json!({})).await?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Until every timer has fired (and the first-step runs are done): the queue is empty.
        let deadline = Instant::now() + Duration::from_secs(args.timer_window_secs + 600);
        while b.count("SELECT COUNT(*) FROM run_queue WHERE account_id = $1", "bench").await? > 0 {
            anyhow::ensure!(Instant::now() < deadline, "timers still pending 10 minutes after the window closed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = stop_tx.send(true);
        anyhow::Ok(timers)
    };
    let (worked, driven) = tokio::join!(workers, driver);
    worked.map_err(|e| anyhow::anyhow!(e))?;
    let setup = driven?;

    let rows: Vec<(i64, Option<i64>)> =
        sqlx::query_as("SELECT created_at, started_at FROM runs WHERE workflow_id = 'first'").fetch_all(&b.db).await?;
    let first_ms = rows.iter().map(|(created, started)| started.unwrap_or(*created).saturating_sub(*created) as f64).collect();
    let timers = match setup {
        Some((setup, slack)) => Some(lateness(b, n, setup, slack).await?),
        None => None,
    };
    Ok(Latency { first_step: percentiles(first_ms), timers })
}

/// Waits until nothing is due: every created run has run its first step (the delay parked).
async fn wait_parked(b: &Backend) -> anyhow::Result<()> {
    while b.store().next_due_at().await?.is_some_and(|d| d <= b.now()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Reads every fired delay's due time (from its run's event) and firing time (the delay step's
/// `waited_until`: the engine's clock when it claimed the due step).
async fn lateness(b: &Backend, n: usize, setup: Duration, slack: Duration) -> anyhow::Result<Timers> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT r.event, s.output FROM runs r JOIN step_runs s ON s.run_id = r.id \
         WHERE r.workflow_id = 'timers' AND s.step_id = 't' AND s.status = 'succeeded'",
    )
    .fetch_all(&b.db)
    .await?;
    let time = |v: &Value| v.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.timestamp_millis());
    let (mut late, mut early) = (Vec::with_capacity(n), 0);
    for (event, output) in rows {
        let due = time(&serde_json::from_str::<Value>(&event)?["due"]).context("a timer run without its due time")?;
        let Some(fired) = output.and_then(|o| serde_json::from_str::<Value>(&o).ok()).and_then(|o| time(&o["waited_until"])) else { continue };
        if fired < due {
            early += 1;
        }
        late.push((fired - due) as f64);
    }
    Ok(Timers { fired: late.len(), lateness: percentiles(late), early, setup, slack })
}

pub(super) fn print(figures: &[Figures], args: &BenchArgs) {
    if figures.iter().all(|f| f.latency.is_none()) {
        return;
    }
    println!();
    println!("{:<10} {:>30} {:>30} {:>6} {:>9} {:>14}", "backend", "accept→first step p50/p99/max", "timer lateness p50/p99/max", "early", "fired", "set-up (slack)");
    for f in figures {
        let Some(l) = &f.latency else { continue };
        let (a, b, c) = l.first_step;
        let (late, early, fired, setup) = match &l.timers {
            Some(t) => {
                let (p50, p99, max) = t.lateness;
                (
                    format!("{p50:.0} / {p99:.0} / {max:.0} ms"),
                    t.early.to_string(),
                    t.fired.to_string(),
                    format!("{:.0} s ({:.0} s)", t.setup.as_secs_f64(), t.slack.as_secs_f64()),
                )
            }
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!("{:<10} {:>30} {late:>30} {early:>6} {fired:>9} {setup:>14}", f.backend, format!("{a:.1} / {b:.1} / {c:.1} ms"));
    }
    println!(
        "(first step: {FIRST_RUNS} runs started 2 ms apart on an idle runtime; timers: {} delays falling due within {} s, \
         all created and parked first; in-process workers)",
        args.timers, args.timer_window_secs
    );
}
