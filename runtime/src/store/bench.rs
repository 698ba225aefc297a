//! The benchmark's own SQL (`tests/bench`, the `switchboard-bench` crate), behind the `bench`
//! feature: the server never enables it, so none of this is in the `switchboard` binary.
//!
//! Two parts:
//! - [`Store::fill_ledger_for_bench`] writes synthetic ledger rows through the store's writer.
//! - [`BenchProbe`] reads progress and results on a pool of its own whose statements are not
//!   logged: the bench counts the runtime's statements from sqlx's log, and its own polls must
//!   not be among them. PostgreSQL statistics (`pg_stat_*`, `pg_database_size`) come back as
//!   plain numbers, `None` on SQLite.

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions};

use super::{Dialect, Store, dialect};
use crate::status::{RunStatus, StepStatus};
use crate::{Error, Result};

impl Store {
    /// Fills the ledger with `rows` synthetic rows of one account, all on `day`, spread over
    /// three units (the bench measures `/v1/usage` over them).
    pub async fn fill_ledger_for_bench(&self, account_id: &str, rows: i64, day: &str, now: i64) -> Result<()> {
        const CHUNK: i64 = 100_000;
        let mut start = 0;
        while start < rows {
            let end = (start + CHUNK).min(rows);
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT $2 UNION ALL SELECT i + 1 FROM n WHERE i < $3) \
                 INSERT INTO usage_ledger (id, seq, account_id, workflow_id, run_id, step_id, unit, quantity, \
                 tokens_milli, cost_micros, created_at, day) \
                 SELECT 'bench-' || i, NULL, $1, 'bench-workflow', 'bench-run-' || i, 'step', \
                 CASE i % 3 WHEN 0 THEN 'sms_segment' WHEN 1 THEN 'email' ELSE 'http_request' END, \
                 1, 100, 1000, $4 + i, $5 FROM n",
            )
            .bind(account_id)
            .bind(start + 1)
            .bind(end)
            .bind(now)
            .bind(day)
            .execute(&self.writer)
            .await?;
            start = end;
        }
        Ok(())
    }
}

/// The bench's read-side view of a store's database: a small pool with statement logging off.
#[derive(Debug, Clone)]
pub struct BenchProbe {
    db: AnyPool,
    dialect: Dialect,
}

/// Rows copied per run by [`BenchProbe::copy_runs`], by table.
pub type CopiedRows = Vec<(String, i64)>;

impl BenchProbe {
    /// Connects to `url` (after [`Store::connect`], which installs the drivers and creates a
    /// SQLite file).
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url)?;
        let options = AnyConnectOptions::from_str(&dialect::normalize_url(url))?.disable_statement_logging();
        let db = AnyPoolOptions::new().max_connections(2).connect_with(options).await?;
        Ok(Self { db, dialect })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.db.close().await;
    }

    fn postgres(&self) -> bool {
        matches!(self.dialect, Dialect::Postgres)
    }

    fn postgres_only(&self, what: &str) -> Result<()> {
        if self.postgres() { Ok(()) } else { Err(Error::Config(format!("{what} needs PostgreSQL"))) }
    }

    async fn count(&self, sql: &'static str, bind: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(sql).bind(bind).fetch_one(&self.db).await?)
    }

    async fn count_in_status<S>(&self, sql: &'static str, bind: &str, status: S) -> Result<i64>
    where
        S: for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any> + Send,
    {
        Ok(sqlx::query_scalar(sql).bind(bind).bind(status).fetch_one(&self.db).await?)
    }

    /// Rows in the run queue (due or not).
    pub async fn queued(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM run_queue").fetch_one(&self.db).await?)
    }

    /// Rows in the run queue of one account.
    pub async fn queued_of_account(&self, account_id: &str) -> Result<i64> {
        self.count("SELECT COUNT(*) FROM run_queue WHERE account_id = $1", account_id).await
    }

    /// The earliest due time in the run queue; `None` when it is empty.
    pub async fn next_queued_due(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MIN(due_at) FROM run_queue").fetch_one(&self.db).await?)
    }

    /// Finished runs (any final status) of a workflow.
    pub async fn finished_runs(&self, workflow_id: &str) -> Result<i64> {
        self.count("SELECT COUNT(*) FROM runs WHERE workflow_id = $1 AND finished_at IS NOT NULL", workflow_id).await
    }

    /// Succeeded runs of a workflow.
    pub async fn succeeded_runs(&self, workflow_id: &str) -> Result<i64> {
        self.count_in_status("SELECT COUNT(*) FROM runs WHERE workflow_id = $1 AND status = $2", workflow_id, RunStatus::Succeeded).await
    }

    /// Succeeded steps of the succeeded runs of a workflow.
    pub async fn succeeded_steps_of_succeeded_runs(&self, workflow_id: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM step_runs s JOIN runs r ON r.id = s.run_id \
             WHERE r.workflow_id = $1 AND r.status = $2 AND s.status = $3",
        )
        .bind(workflow_id)
        .bind(RunStatus::Succeeded)
        .bind(StepStatus::Succeeded)
        .fetch_one(&self.db)
        .await?)
    }

    /// Steps with id `step_id` (any run) waiting on a delay.
    pub async fn waiting_steps(&self, step_id: &str) -> Result<i64> {
        self.count_in_status("SELECT COUNT(*) FROM step_runs WHERE step_id = $1 AND status = $2", step_id, StepStatus::Waiting).await
    }

    /// `(created_at, started_at)` of every run of a workflow.
    pub async fn run_start_times(&self, workflow_id: &str) -> Result<Vec<(i64, Option<i64>)>> {
        Ok(sqlx::query_as("SELECT created_at, started_at FROM runs WHERE workflow_id = $1").bind(workflow_id).fetch_all(&self.db).await?)
    }

    /// `(run event, step output)` of every succeeded step `step_id` of a workflow's runs, as
    /// stored JSON text.
    pub async fn succeeded_step_outputs(&self, workflow_id: &str, step_id: &str) -> Result<Vec<(String, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT r.event, s.output FROM runs r JOIN step_runs s ON s.run_id = r.id \
             WHERE r.workflow_id = $1 AND s.step_id = $2 AND s.status = $3",
        )
        .bind(workflow_id)
        .bind(step_id)
        .bind(StepStatus::Succeeded)
        .fetch_all(&self.db)
        .await?)
    }

    /// PostgreSQL: committed and rolled-back transactions of this database so far (each call is
    /// a transaction of its own, counted by the next).
    pub async fn transactions(&self) -> Result<Option<(i64, i64)>> {
        if !self.postgres() {
            return Ok(None);
        }
        let sql = "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()";
        Ok(Some(sqlx::query_as(sql).fetch_one(&self.db).await?))
    }

    /// PostgreSQL: checkpoints the server has started so far (timed and requested).
    pub async fn checkpoints(&self) -> Result<Option<i64>> {
        if !self.postgres() {
            return Ok(None);
        }
        let sql = "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter";
        Ok(Some(sqlx::query_scalar(sql).fetch_one(&self.db).await?))
    }

    /// PostgreSQL: the database's size in bytes.
    pub async fn database_size(&self) -> Result<Option<i64>> {
        if !self.postgres() {
            return Ok(None);
        }
        Ok(Some(sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(&self.db).await?))
    }

    /// Refreshes the planner's statistics of every table (`ANALYZE`).
    pub async fn analyze(&self) -> Result<()> {
        sqlx::query("ANALYZE").execute(&self.db).await?;
        Ok(())
    }

    /// PostgreSQL: `VACUUM (ANALYZE)` of every table.
    pub async fn vacuum_analyze(&self) -> Result<()> {
        self.postgres_only("VACUUM (ANALYZE)")?;
        sqlx::query("VACUUM (ANALYZE)").execute(&self.db).await?;
        Ok(())
    }

    /// PostgreSQL: copies every row of each `(run_id, event_id, n)` — the run, its event, and
    /// every row of a table with a `run_id` column (found from the schema) — `n` times, in one
    /// transaction, with fresh UUIDv7-shaped run and event ids put in place of the originals
    /// wherever they appear in a text column. Returns the rows copied per run, by table, of each.
    pub async fn copy_runs(&self, runs: &[(&str, &str, i64)]) -> Result<Vec<CopiedRows>> {
        self.postgres_only("copying runs")?;
        let mut tx = self.db.begin().await?;
        let columns: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut tables: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for (table, column, ty) in columns {
            match tables.last_mut() {
                Some((t, cols)) if *t == table => cols.push((column, ty)),
                _ => tables.push((table, vec![(column, ty)])),
            }
        }
        let mut out = Vec::new();
        for &(run_id, event_id, n) in runs {
            out.push(copy_run(&mut tx, &tables, run_id, event_id, n).await?);
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// One run of [`BenchProbe::copy_runs`].
async fn copy_run(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tables: &[(String, Vec<(String, String)>)],
    run_id: &str,
    event_id: &str,
    n: i64,
) -> Result<CopiedRows> {
    // Fresh ids shaped like the engine's (UUIDv7): the template's time prefix, random bits that
    // differ per copy set, and the copy's number in the last 12 hex digits.
    let prefix = |id: &str| {
        let r = uuid::Uuid::new_v4().simple().to_string();
        format!("{}7{}-8{}-", &id[..14], &r[..3], &r[3..6])
    };
    let (run_prefix, event_prefix) = (prefix(run_id), prefix(event_id));
    let new_run = "($1 || lpad(to_hex(g), 12, '0'))";
    let new_event = "($2 || lpad(to_hex(g), 12, '0'))";
    let mut copied = Vec::new();
    for (table, cols) in tables {
        // The rows of this run: its event, itself, and whatever is keyed by its id.
        let key = match table.as_str() {
            "events" => ("id", event_id),
            "runs" => ("id", run_id),
            _ if cols.iter().any(|(c, _)| c == "run_id") => ("run_id", run_id),
            _ => continue,
        };
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {} = $1", key.0);
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(key.1).fetch_one(&mut **tx).await?;
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
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&run_prefix).bind(&event_prefix).bind(run_id).bind(event_id).bind(n).bind(key.1).execute(&mut **tx).await?;
        copied.push((table.clone(), rows));
    }
    Ok(copied)
}
