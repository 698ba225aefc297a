//! SQL statements per step. sqlx logs every statement it executes (BEGIN and COMMIT included)
//! as a DEBUG event with target `sqlx::query`, through the `Any` driver too (it hands its log
//! settings to the PostgreSQL and SQLite connections). A tracing layer of the bench counts those
//! events by their summary (the statement's first words), but only while a measurement asks it
//! to: otherwise the filter refuses them, and sqlx does not even format them. On PostgreSQL,
//! `pg_stat_database.xact_commit` gives an independent count of commits.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing_subscriber::filter::{DynFilterFn, EnvFilter, LevelFilter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, registry::LookupSpan};

use super::{Backend, BenchArgs, Figures};

/// The target sqlx logs statements under.
const TARGET: &str = "sqlx::query";

/// Whether statements are being counted now.
static COUNTING: AtomicBool = AtomicBool::new(false);

/// Statements counted, by summary.
static COUNTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Installs the bench's global subscriber: `fmt` filtered by `filter` (the printed log), and the
/// statement counter, which sees `sqlx::query` events only while counting.
pub(super) fn init_tracing(filter: EnvFilter) {
    let counting = DynFilterFn::new(|meta, _| COUNTING.load(Ordering::Relaxed) && meta.target() == TARGET)
        // Decided per event for sqlx's statements (the flag changes), never for anything else.
        .with_callsite_filter(|meta| if meta.target() == TARGET { Interest::sometimes() } else { Interest::never() })
        .with_max_level_hint(LevelFilter::DEBUG);
    tracing_subscriber::registry().with(tracing_subscriber::fmt::layer().with_filter(filter)).with(Counter.with_filter(counting)).init();
}

/// Counts `sqlx::query` events by their `summary` field.
struct Counter;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Counter {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut summary = Summary(String::new());
        event.record(&mut summary);
        *COUNTS.lock().expect("counts lock").entry(summary.0).or_default() += 1;
    }
}

/// The `summary` field of a sqlx statement event.
struct Summary(String);

impl Visit for Summary {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "summary" {
            self.0 = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" && self.0.is_empty() {
            self.0 = format!("{value:?}").trim_matches('"').to_string();
        }
    }
}

/// Counts statements while `f` runs.
async fn counted<T>(f: impl Future<Output = T>) -> (T, BTreeMap<String, u64>) {
    COUNTS.lock().expect("counts lock").clear();
    COUNTING.store(true, Ordering::SeqCst);
    let out = f.await;
    COUNTING.store(false, Ordering::SeqCst);
    (out, std::mem::take(&mut *COUNTS.lock().expect("counts lock")))
}

/// Statements the runtime sent for `runs` runs of `steps` steps.
pub(super) struct Statements {
    steps: usize,
    runs: usize,
    /// Statements to accept the runs (group commit), and to execute their steps (by summary).
    ingest: BTreeMap<String, u64>,
    execute: BTreeMap<String, u64>,
    /// PostgreSQL: (commits, rollbacks) while the steps executed, the bench's own polls taken out.
    xacts: Option<(i64, i64)>,
}

/// Queues `--runs` runs of `--steps` log steps counting the ingest's statements, then drains
/// them with the in-process workers counting the execution's.
pub(super) async fn measure(b: &Backend, args: &BenchArgs) -> anyhow::Result<Statements> {
    let row = b.log_workflow("statements", args.steps).await?;
    let (queued, ingest) = counted(b.queue_runs(&row, args.runs, |_| json!({ "lead": { "first_name": "Ada" } }))).await;
    queued?;
    // A backend reports its counters when idle, but at most once a second; counters held back
    // by that are reported after 10 s of idleness (PostgreSQL 15). Let what came before land
    // before the first read, and the execution's own before the second.
    if b.is_postgres() {
        tokio::time::sleep(Duration::from_secs(11)).await;
    }
    let before = b.probe.transactions().await?;
    // Polls every 20 ms: each is a transaction of the bench's own, taken out below.
    let (drained, execute) = counted(super::throughput::drain_with_workers(b, Duration::from_millis(20))).await;
    let (_, polls) = drained?;
    let xacts = match before {
        Some((c0, r0)) => {
            tokio::time::sleep(Duration::from_secs(11)).await;
            let (c1, r1) = b.probe.transactions().await?.expect("postgres");
            // The first read's own transaction is counted by the second read.
            Some((c1 - c0 - polls - 1, r1 - r0))
        }
        None => None,
    };
    anyhow::ensure!(execute.values().sum::<u64>() > 0, "no sqlx::query events were counted: is the bench's subscriber installed?");
    Ok(Statements { steps: args.steps, runs: args.runs, ingest, execute, xacts })
}

pub(super) fn print(figures: &[Figures], _args: &BenchArgs) {
    if figures.iter().all(|f| f.statements.is_none()) {
        return;
    }
    println!();
    println!("{:<10} {:>18} {:>18} {:>16} {:>16}", "backend", "statements/step", "commits/step", "BEGINs/step", "ingest stmts/run");
    for f in figures {
        let Some(s) = &f.statements else { continue };
        let steps = (s.runs * s.steps) as f64;
        let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>() as f64;
        let commits = s.xacts.map(|(c, _)| format!("{:.2}", c as f64 / steps)).unwrap_or_else(|| "-".into());
        // sqlx-sqlite runs BEGIN and COMMIT as commands of its connection thread, unlogged.
        let begins = match s.xacts {
            Some(_) => {
                let n = s.execute.iter().filter(|(k, _)| k.to_ascii_uppercase().starts_with("BEGIN")).map(|(_, v)| *v).sum::<u64>();
                format!("{:.2}", n as f64 / steps)
            }
            None => "-".into(),
        };
        println!("{:<10} {:>18.2} {:>18} {:>16} {:>16.3}", f.backend, total(&s.execute) / steps, commits, begins, total(&s.ingest) / s.runs as f64);
    }
    for f in figures {
        let Some(s) = &f.statements else { continue };
        let steps = (s.runs * s.steps) as f64;
        println!("  {} statements while {} runs x {} steps executed, by first words (per step):", f.backend, s.runs, s.steps);
        let mut by_count: Vec<_> = s.execute.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1));
        for (summary, n) in by_count {
            println!("    {:>8} {:>7.3}  {summary}", n, *n as f64 / steps);
        }
        if let Some((_, rollbacks)) = s.xacts {
            println!("    (pg_stat_database: {rollbacks} rollbacks)");
        }
    }
    println!(
        "(statements: sqlx::query events while in-process workers drained the runs, the bench's own polls excluded; \
         commits: pg_stat_database.xact_commit delta, the bench's own polls taken out; SQLite: sqlx does not log \
         BEGIN/COMMIT there, and there is no commit counter)"
    );
}
