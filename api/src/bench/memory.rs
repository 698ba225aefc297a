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
//! place of the originals wherever they appear. The copies are thus the rows the engine writes.
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
    let dir = std::env::temp_dir().join(format!("switchboard-bench-memory-{}", std::process::id()));
    eprintln!("  worker with an empty queue, {} s", args.memory_secs);
    let empty = sample(b, &dir, args.memory_secs).await?;

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
    let waiting = b.count("SELECT COUNT(*) FROM step_runs WHERE status = 'waiting' AND step_id = $1", "wait").await?;
    anyhow::ensure!(waiting == 2, "the template runs did not park on their delay ({waiting} waiting)");

    eprintln!("  bulk-inserting {} parked runs", args.pending_delays);
    let started = Instant::now();
    let mut tx = b.db.begin().await?;
    let tables = copy_run(&mut tx, &far.run_id, &far.event_id, args.pending_delays).await?;
    copy_run(&mut tx, &soon.run_id, &soon.event_id, DUE_COPIES).await?;
    tx.commit().await?;
    let insert = started.elapsed();
    // Autovacuum (where it is on) would vacuum and analyze the grown tables within a minute; do
    // it now, so that the claim query's plan is the one a running system would have.
    let started = Instant::now();
    sqlx::query("VACUUM (ANALYZE)").execute(&b.db).await?;
    let analyze = started.elapsed();
    let (db_bytes,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())").fetch_one(&b.db).await?;

    eprintln!("  worker with {} pending delays, {} s", args.pending_delays, args.memory_secs);
    let pending = sample(b, &dir, args.memory_secs).await?;
    let parked = b.count("SELECT COUNT(*) FROM run_queue WHERE account_id = $1", "bench").await?;
    let finished = b.count("SELECT COUNT(*) FROM runs WHERE workflow_id = $1 AND status = 'succeeded'", "parked").await?;
    let steps = b
        .count(
            "SELECT COUNT(*) FROM step_runs s JOIN runs r ON r.id = s.run_id \
             WHERE r.workflow_id = $1 AND r.status = 'succeeded' AND s.status = 'succeeded'",
            "parked",
        )
        .await?;
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

/// Copies every row of run `run_id` (and of its event) `n` times inside `tx`; returns the rows
/// copied per run, by table.
async fn copy_run(tx: &mut sqlx::Transaction<'static, sqlx::Any>, run_id: &str, event_id: &str, n: i64) -> anyhow::Result<Vec<(String, i64)>> {
    // Fresh ids shaped like the engine's (UUIDv7): the template's time prefix, random bits that
    // differ per copy set, and the copy's number in the last 12 hex digits.
    let prefix = |id: &str| {
        let r = uuid::Uuid::new_v4().simple().to_string();
        format!("{}7{}-8{}-", &id[..14], &r[..3], &r[3..6])
    };
    let (run_prefix, event_prefix) = (prefix(run_id), prefix(event_id));
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut tables: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for (table, column, ty) in columns {
        match tables.last_mut() {
            Some((t, cols)) if *t == table => cols.push((column, ty)),
            _ => tables.push((table, vec![(column, ty)])),
        }
    }
    let new_run = "($1 || lpad(to_hex(g), 12, '0'))";
    let new_event = "($2 || lpad(to_hex(g), 12, '0'))";
    let mut copied = Vec::new();
    for (table, cols) in &tables {
        // The rows of this run: its event, itself, and whatever is keyed by its id.
        let key = match table.as_str() {
            "events" => ("id", event_id),
            "runs" => ("id", run_id),
            _ if cols.iter().any(|(c, _)| c == "run_id") => ("run_id", run_id),
            _ => continue,
        };
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {} = $1", key.0);
        let (rows,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(key.1).fetch_one(&mut **tx).await?;
        if rows == 0 {
            continue;
        }
        let names: Vec<&str> = cols.iter().map(|(c, _)| c.as_str()).collect();
        let values: Vec<String> = cols
            .iter()
            .map(|(c, ty)| match (table.as_str(), c.as_str(), ty.as_str()) {
                // The sequencer numbers ledger rows after commit; new rows have none.
                ("usage_ledger", "seq", _) => "NULL".to_string(),
                // The ids may appear inside any text (the event's answer, ledger row ids).
                (_, _, "text") => format!("replace(replace(src.{c}, $3, {new_run}), $4, {new_event})"),
                _ => format!("src.{c}"),
            })
            .collect();
        let sql = format!(
            "INSERT INTO {table} ({}) SELECT {} FROM {table} AS src, generate_series(1, $5::bigint) AS g WHERE src.{} = $6",
            names.join(", "),
            values.join(", "),
            key.0
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&run_prefix)
            .bind(&event_prefix)
            .bind(run_id)
            .bind(event_id)
            .bind(n)
            .bind(key.1)
            .execute(&mut **tx)
            .await
            .with_context(|| format!("copying {table}"))?;
        copied.push((table.clone(), rows));
    }
    Ok(copied)
}

/// Starts a worker, reads its resident memory every second for `secs` s after 11 s of start-up,
/// and counts the statements it sends meanwhile (its log of `sqlx::query` events), then stops it.
/// A statement of an idle worker is a transaction of its own, so this is also its commit rate:
/// counted from its own log rather than `pg_stat_database`, whose counters lag by up to 10 s
/// and include every other session's work.
async fn sample(b: &Backend, dir: &std::path::Path, secs: u64) -> anyhow::Result<Sample> {
    let mut worker = WorkerProcess::spawn(&b.url, dir, "warn,sqlx::query=debug")?;
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
