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
    /// p99 lateness (ms) of the delays due in each tenth of the window.
    p99_by_tenth: Vec<f64>,
    /// PostgreSQL checkpoints started between the window's opening and the last firing.
    checkpoints: Option<i64>,
    /// Meanwhile: the share of the machine's CPU time that was busy, and this process's CPU
    /// time in cores (the rest of the busy time is PostgreSQL's, or another process's).
    cpu: Option<(f64, f64)>,
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
    let drive = async {
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
            if b.is_postgres() {
                // Autovacuum would analyze the grown queue within a minute; this server runs
                // with it off. Without fresh statistics, a claim plan cached while run_queue was
                // nearly empty (a sequential scan) stays in use as it grows, and every claim
                // reads the whole queue (see docs/performance.md).
                b.probe.analyze().await?;
            }
            wait_parked(b).await?;
            let setup = started.elapsed();
            let slack = start_at - b.now();
            anyhow::ensure!(
                slack > 1_000,
                "creating and parking {n} delays took {:.0} s, past the window's start (the pilot's {pilot} took {:.1} ms each)",
                setup.as_secs_f64(),
                per_run * 1000.0
            );
            timers = Some((setup, Duration::from_millis(slack as u64), start_at));
        }
        // Accept → first step on an otherwise idle runtime, before the timers fall due.
        for _ in 0..FIRST_RUNS {
            b.engine.start_manual(&first_row, json!({})).await?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The window's figures (checkpoints, CPU) from its opening.
        if let Some((_, _, start_at)) = timers {
            tokio::time::sleep(Duration::from_millis((start_at - b.now()).max(0) as u64)).await;
        }
        let checkpoints_before = b.probe.checkpoints().await?;
        let cpu_before = (super::procs::machine_jiffies(), super::procs::cpu_secs(std::process::id()), Instant::now());
        // Until every timer has fired (and the first-step runs are done): the queue is empty.
        // Asked through the due-time index, 4 times a second, so that watching costs the
        // database next to nothing while the timers fire.
        let deadline = Instant::now() + Duration::from_secs(args.timer_window_secs + 600);
        loop {
            if b.probe.next_queued_due().await?.is_none() {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "timers still pending 10 minutes after the window closed");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let checkpoints = match (checkpoints_before, b.probe.checkpoints().await?) {
            (Some(before), Some(after)) => Some(after - before),
            _ => None,
        };
        let cpu = match (cpu_before, super::procs::machine_jiffies(), super::procs::cpu_secs(std::process::id())) {
            ((Some((b0, t0)), Some(c0), at), Some((b1, t1)), Some(c1)) if t1 > t0 => {
                Some(((b1 - b0) as f64 / (t1 - t0) as f64, (c1 - c0) / at.elapsed().as_secs_f64()))
            }
            _ => None,
        };
        anyhow::Ok(timers.map(|(setup, slack, start_at)| (setup, slack, start_at, checkpoints, cpu)))
    };
    // The workers stop when the driver is done, whether it succeeded or not.
    let driver = async {
        let driven = drive.await;
        let _ = stop_tx.send(true);
        driven
    };
    let (worked, driven) = tokio::join!(workers, driver);
    worked.map_err(|e| anyhow::anyhow!(e))?;
    let setup = driven?;

    let rows = b.probe.run_start_times("first").await?;
    let first_ms = rows.iter().map(|(created, started)| started.unwrap_or(*created).saturating_sub(*created) as f64).collect();
    let timers = match setup {
        Some((setup, slack, start_at, checkpoints, cpu)) => {
            let mut t = lateness(b, n, setup, slack, start_at, window_ms).await?;
            t.checkpoints = checkpoints;
            t.cpu = cpu;
            Some(t)
        }
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
async fn lateness(b: &Backend, n: usize, setup: Duration, slack: Duration, start_at: i64, window_ms: i64) -> anyhow::Result<Timers> {
    let rows = b.probe.succeeded_step_outputs("timers", "t").await?;
    let time = |v: &Value| v.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.timestamp_millis());
    let (mut late, mut early) = (Vec::with_capacity(n), 0);
    // Lateness by tenth of the window, to tell a steady lag from a stall.
    let mut tenths: Vec<Vec<f64>> = vec![Vec::new(); 10];
    for (event, output) in rows {
        let due = time(&serde_json::from_str::<Value>(&event)?["due"]).context("a timer run without its due time")?;
        let Some(fired) = output.and_then(|o| serde_json::from_str::<Value>(&o).ok()).and_then(|o| time(&o["waited_until"])) else { continue };
        if fired < due {
            early += 1;
        }
        late.push((fired - due) as f64);
        let tenth = ((due - start_at) * 10 / window_ms.max(1)).clamp(0, 9) as usize;
        tenths[tenth].push((fired - due) as f64);
    }
    let p99_by_tenth = tenths.into_iter().map(|v| percentiles(v).1).collect();
    Ok(Timers { fired: late.len(), lateness: percentiles(late), early, setup, slack, p99_by_tenth, checkpoints: None, cpu: None })
}

pub(super) fn print(figures: &[Figures], args: &BenchArgs) {
    if figures.iter().all(|f| f.latency.is_none()) {
        return;
    }
    println!();
    println!(
        "{:<10} {:>30} {:>30} {:>6} {:>9} {:>14}",
        "backend", "accept→first step p50/p99/max", "timer lateness p50/p99/max", "early", "fired", "set-up (slack)"
    );
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
    for f in figures {
        let Some(t) = f.latency.as_ref().and_then(|l| l.timers.as_ref()) else { continue };
        let checkpoints = t.checkpoints.map(|c| format!("; {c} checkpoint(s) began meanwhile")).unwrap_or_default();
        let tenths: Vec<String> = t.p99_by_tenth.iter().map(|p| format!("{p:.0}")).collect();
        println!("  {}: p99 by tenth of the window: {} ms{checkpoints}", f.backend, tenths.join(" / "));
        if let Some((busy, own)) = t.cpu {
            println!(
                "  {}: while the timers fired the machine was {:.0}% busy; this process (engine and workers) used {:.2} cores",
                f.backend,
                busy * 100.0,
                own
            );
        }
    }
    println!(
        "(first step: {FIRST_RUNS} runs started 2 ms apart on an idle runtime; timers: {} delays falling due within {} s, \
         all created and parked first; in-process workers)",
        args.timers, args.timer_window_secs
    );
}
