//! A worker's memory with 1,000,000 pending delays (PostgreSQL, a database of its own): the
//! resident memory of a real `switchboard worker` process with an empty queue, and again with a
//! million runs parked on a delay due in 30 days. Delays live in the database, so the two
//! should match.
//!
//! A million runs through the engine would take many minutes, so they are bulk-inserted as
//! copies of a real run: one run of the workflow is started and parked on its delay by the
//! engine itself, then each of its rows — in every table that holds rows of a run (found from
//! the schema: `events`, `runs`, and every table with a `run_id` column) — is copied with
//! `INSERT … SELECT … FROM generate_series`, with fresh UUIDv7-shaped run and event ids put in
//! place of the originals wherever they appear (`BenchProbe::copy_runs`, in the store). The
//! copies are thus the rows the engine writes.
//! To show that they run like real ones, ten copies of a second run whose delay falls due at
//! once are inserted with them, and must be executed to completion by the worker.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::store::dialect;

use super::procs::WorkerProcess;
use super::{Backend, BenchArgs, Figures};

/// Copies of the run due at once, which the worker must finish.
const DUE_COPIES: i64 = 10;

/// One sampling of a worker process.
struct Sample {
    /// VmRSS in kB, read every second: (min, max, last).
    rss_kb: (u64, u64, u64),
    /// VmHWM in kB at the end (the peak).
    hwm_kb: u64,
    /// Statements a second the worker sent meanwhile (its idle polling).
    statements_per_sec: f64,
}

/// The memory figures.
pub(super) struct Memory {
    empty: Sample,
    pending: Sample,
    /// Runs parked on a delay while `pending` was sampled.
    parked: i64,
    /// Rows copied per run, by table.
    tables: Vec<(String, i64)>,
    insert: Duration,
    analyze: Duration,
    db_bytes: i64,
    /// Runs due at once that the worker finished (of `DUE_COPIES + 1`).
    finished: i64,
    secs: u64,
}

/// Makes a database of its own on `server`, measures, and drops it.
pub(super) async fn measure(server: &str, args: &BenchArgs) -> anyhow::Result<Memory> {
    let name = format!("switchboard_bench_memory_{}", std::process::id());
    let url = dialect::create_postgres_database(server, &name).await?;
    let result = match Backend::open("postgres", &url).await {
        Ok(b) => {
            let r = measure_on(&b, args).await;
            b.close().await;
            r
        }
        Err(e) => Err(e),
    };
    dialect::drop_postgres_database(server, &name).await?;
    result
}

async fn measure_on(b: &Backend, args: &BenchArgs) -> anyhow::Result<Memory> {
    let exe = args.server_bin()?;
    let dir = std::env::temp_dir().join(format!("switchboard-bench-memory-{}", std::process::id()));
    eprintln!("  worker with an empty queue, {} s", args.memory_secs);
    let empty = sample(b, &exe, &dir, args.memory_secs).await?;

    let doc = json!({
        "name": "parked",
        "trigger": { "manual": {} },
        "steps": [
            { "id": "wait", "delay": { "until": "{{ event.due }}" } },
            { "id": "after", "action": "log", "input": { "message": "waited for {{ event.lead.first_name }}" } }
        ]
    });
    let row = b.workflow("parked", &doc, "manual", None).await?;
    let event = |due: i64| json!({ "due": to_rfc3339(due), "lead": { "first_name": "Ada", "phone": "+15550001111" } });
    let far = b.engine.start_manual(&row, event(b.now() + 30 * 86_400_000)).await?;
    let soon = b.engine.start_manual(&row, event(b.now() + 2_000)).await?;
    // The engine runs both first steps: each run now waits on its delay.
    b.engine.drain().await?;
    let waiting = b.probe.waiting_steps("wait").await?;
    anyhow::ensure!(waiting == 2, "the template runs did not park on their delay ({waiting} waiting)");

    eprintln!("  bulk-inserting {} parked runs", args.pending_delays);
    let started = Instant::now();
    let mut copied = b.probe.copy_runs(&[(&far.run_id, &far.event_id, args.pending_delays), (&soon.run_id, &soon.event_id, DUE_COPIES)]).await?;
    let tables = copied.swap_remove(0);
    let insert = started.elapsed();
    // Autovacuum (where it is on) would vacuum and analyze the grown tables within a minute; do
    // it now, so that the claim query's plan is the one a running system would have.
    let started = Instant::now();
    b.probe.vacuum_analyze().await?;
    let analyze = started.elapsed();
    let db_bytes = b.probe.database_size().await?.context("pg_database_size")?;

    eprintln!("  worker with {} pending delays, {} s", args.pending_delays, args.memory_secs);
    let pending = sample(b, &exe, &dir, args.memory_secs).await?;
    let parked = b.probe.queued_of_account("bench").await?;
    let finished = b.probe.succeeded_runs("parked").await?;
    let steps = b.probe.succeeded_steps_of_succeeded_runs("parked").await?;
    anyhow::ensure!(
        finished == DUE_COPIES + 1 && steps == 2 * finished,
        "the worker finished {finished} of {} due runs ({steps} succeeded steps): the copies do not run like real runs",
        DUE_COPIES + 1
    );
    if std::env::var_os("SWITCHBOARD_BENCH_WORKER_LOG").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(Memory { empty, pending, parked, tables, insert, analyze, db_bytes, finished, secs: args.memory_secs })
}

/// Starts a worker, reads its resident memory every second for `secs` s after 11 s of start-up,
/// and counts the statements it sends meanwhile (its log of `sqlx::query` events), then stops it.
/// A statement of an idle worker is a transaction of its own, so this is also its commit rate:
/// counted from its own log rather than `pg_stat_database`, whose counters lag by up to 10 s
/// and include every other session's work.
async fn sample(b: &Backend, exe: &std::path::Path, dir: &std::path::Path, secs: u64) -> anyhow::Result<Sample> {
    let mut worker = WorkerProcess::spawn(exe, &b.url, dir, "warn,sqlx::query=debug")?;
    tokio::time::sleep(Duration::from_secs(11)).await;
    worker.check_alive()?;
    let statements = |w: &WorkerProcess| w.log().lines().filter(|l| l.contains("sqlx::query")).count();
    let s0 = statements(&worker);
    let started = Instant::now();
    let mut rss = Vec::new();
    for _ in 0..secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        worker.check_alive()?;
        rss.extend(worker.status_kb("VmRSS"));
    }
    let statements_per_sec = (statements(&worker) - s0) as f64 / started.elapsed().as_secs_f64();
    let hwm_kb = worker.status_kb("VmHWM").context("VmHWM")?;
    worker.stop().await?;
    let rss_kb = (rss.iter().copied().min().unwrap_or(0), rss.iter().copied().max().unwrap_or(0), rss.last().copied().unwrap_or(0));
    Ok(Sample { rss_kb, hwm_kb, statements_per_sec })
}

pub(super) fn print(figures: &[Figures], args: &BenchArgs) {
    let Some((backend, m)) = figures.iter().find_map(|f| f.memory.as_ref().map(|m| (f.backend, m))) else { return };
    println!();
    println!("{:<10} {:>22} {:>30} {:>12} {:>14}", "backend", "pending delays", "worker VmRSS min/max/last", "VmHWM", "statements/s");
    let parked = m.parked.to_string();
    for (label, s) in [("0", &m.empty), (parked.as_str(), &m.pending)] {
        let mb = |kb: u64| kb as f64 / 1024.0;
        println!(
            "{backend:<10} {label:>22} {:>30} {:>12} {:>14.1}",
            format!("{:.1} / {:.1} / {:.1} MiB", mb(s.rss_kb.0), mb(s.rss_kb.1), mb(s.rss_kb.2)),
            format!("{:.1} MiB", mb(s.hwm_kb)),
            s.statements_per_sec
        );
    }
    let tables: Vec<String> = m.tables.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!(
        "(memory: a `switchboard worker` process read after 11 + {} s each time, statements/s (from its log) over the last {} s; {} runs parked on a delay due in 30 days, \
         bulk-inserted as copies of a real parked run (rows per run: {}) in {:.1} s, VACUUM (ANALYZE) {:.1} s, database {:.0} MiB; \
         {} of {} copies due at once ran to completion)",
        m.secs,
        m.secs,
        args.pending_delays,
        tables.join(", "),
        m.insert.as_secs_f64(),
        m.analyze.as_secs_f64(),
        m.db_bytes as f64 / 1048576.0,
        m.finished,
        DUE_COPIES + 1
    );
}
