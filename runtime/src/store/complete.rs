//! Group commit of step completions: the completions of many runs written with a handful of
//! statements, whatever the batch's size.
//!
//! The batch travels as parameters that the database reads back as rows — one typed array per
//! column on PostgreSQL, one JSON parameter on SQLite ([`super::batch_rows`]) — so each
//! statement's text, and its prepared plan, is the same for any batch. Each
//! run's queue row is fenced by its own lease token, exactly as a lone completion is: a
//! completion whose lease was lost writes nothing and does not hold the others back.
//!
//! - PostgreSQL: one statement (data-modifying CTEs: fence, step rows, run rows, waits, ledger
//!   rows), which is its own transaction.
//! - SQLite: one transaction of its single writer: the fences (`UPDATE … FROM`, `DELETE`, both
//!   `RETURNING` the runs that held), then one statement each for the step rows, the run rows,
//!   the waits and the ledger rows of the completions that held.
//!
//! Completions of other shapes (quota settlement, the outbox, a deferred handle, fan-out), and
//! those whose fence did not hold (a lost lease, or a cancel, which the general path tells apart
//! and records), take the general path, [`super::runs::complete_in`].

use std::collections::HashSet;
use std::sync::LazyLock;

use sqlx::{Any, Row, Transaction};

use super::batch_rows::unnest;
use super::runs::{UsageInsert, complete_in, insert_usage};
use super::{Completion, Next, Store};
use crate::Result;

batch_rows! {
    /// A batch row, one per completion. `q_*`: the queue row's next state (`fin`: the run ends
    /// and the row goes); the step row's columns; `r_*`: the run row's.
    BatchRow, BatchColumns {
        run_id: &'a str => "text",
        token: &'a str => "text",
        fin: i64 => "bigint",
        q_step_index: i64 => "bigint",
        q_step_seq: i64 => "bigint",
        q_attempt: i64 => "bigint",
        q_due_at: i64 => "bigint",
        keep: i64 => "bigint",
        seq: i64 => "bigint",
        step_id: &'a str => "text",
        status: &'a str => "text",
        attempts: i64 => "bigint",
        input: Option<&'a str> => "text",
        output: Option<&'a str> => "text",
        error: Option<&'a str> => "text",
        started_at: Option<i64> => "bigint",
        finished_at: Option<i64> => "bigint",
        due_at: Option<i64> => "bigint",
        rate_slot_at: Option<i64> => "bigint",
        rate_slot_key: Option<&'a str> => "text",
        run_status: &'a str => "text",
        context: Option<&'a str> => "text",
        run_error: Option<&'a str> => "text",
        r_step_index: i64 => "bigint",
        r_step_seq: i64 => "bigint",
        r_started_at: i64 => "bigint",
        r_finished_at: Option<i64> => "bigint",
        account_id: &'a str => "text",
        workflow_id: &'a str => "text",
        wait_event: Option<&'a str> => "text",
        clear_wait: i64 => "bigint",
        now: i64 => "bigint",
    }
}

batch_rows! {
    /// A batch's ledger row (joined to its completion by run and token).
    UsageRow, UsageColumns {
        run_id: &'a str => "text",
        token: &'a str => "text",
        id: &'a str => "text",
        step_id: Option<&'a str> => "text",
        unit: &'a str => "text",
        quantity: i64 => "bigint",
        tokens_milli: i64 => "bigint",
        cost_micros: i64 => "bigint",
        day: &'a str => "text",
    }
}

/// `$1` as rows of [`BatchColumns::COLUMNS`] (SQLite), to use as `FROM {rows} AS j`. `jsonb_each` parses the
/// parameter once and hands each element over as a JSONB blob, whose fields `->>` reads without
/// parsing the element again (with `json_each`, each of the 32 reads re-parsed it).
fn sqlite_rows() -> String {
    let select: Vec<String> = BatchColumns::COLUMNS.iter().map(|(name, _)| format!("value ->> '{name}' AS {name}")).collect();
    format!("(SELECT {} FROM jsonb_each($1))", select.join(", "))
}

/// The step row's columns, and their upsert (`EXCLUDED` is the row proposed for insertion).
const STEP_COLUMNS: &str = "run_id, seq, step_id, status, attempts, input, output, error, started_at, finished_at, due_at, rate_slot_at, rate_slot_key";
const STEP_UPSERT: &str = "ON CONFLICT (run_id, seq) DO UPDATE SET status = EXCLUDED.status, attempts = EXCLUDED.attempts, \
     input = COALESCE(EXCLUDED.input, step_runs.input), output = EXCLUDED.output, error = EXCLUDED.error, \
     started_at = COALESCE(step_runs.started_at, EXCLUDED.started_at), finished_at = EXCLUDED.finished_at, \
     due_at = EXCLUDED.due_at, rate_slot_at = EXCLUDED.rate_slot_at, rate_slot_key = EXCLUDED.rate_slot_key";
/// The run row's new state, from a batch row `j`.
const RUN_SET: &str = "status = j.run_status, context = COALESCE(j.context, runs.context), error = j.run_error, \
     step_index = CASE WHEN j.r_step_index < 0 THEN runs.step_index ELSE j.r_step_index END, step_seq = j.r_step_seq, \
     started_at = COALESCE(runs.started_at, j.r_started_at), finished_at = j.r_finished_at";
/// The queue row's next state, from a batch row `j` (the lease is kept when the next step runs
/// at once under it).
const QUEUE_SET: &str = "step_index = j.q_step_index, step_seq = j.q_step_seq, attempt = j.q_attempt, dispatching = 0, \
     due_at = j.q_due_at, lease_token = CASE WHEN j.keep = 1 THEN run_queue.lease_token ELSE NULL END, \
     reserved_milli = 0, reserved_period = NULL";
const WAIT_UPSERT: &str = "ON CONFLICT (run_id) DO UPDATE SET event_type = EXCLUDED.event_type, step_seq = EXCLUDED.step_seq, \
     created_at = EXCLUDED.created_at";

/// The whole batch as one PostgreSQL statement; answers the (run, token) pairs whose fence held.
static PG_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH j AS (SELECT * FROM {rows}), \
         q1 AS (UPDATE run_queue SET {QUEUE_SET} FROM j \
            WHERE j.fin = 0 AND run_queue.run_id = j.run_id AND run_queue.lease_token = j.token RETURNING j.run_id, j.token), \
         q2 AS (DELETE FROM run_queue USING j WHERE j.fin = 1 AND run_queue.run_id = j.run_id \
            AND run_queue.lease_token = j.token RETURNING j.run_id, j.token), \
         q AS (SELECT run_id, token FROM q1 UNION ALL SELECT run_id, token FROM q2), \
         ok AS (SELECT j.* FROM j JOIN q ON q.run_id = j.run_id AND q.token = j.token), \
         s AS (INSERT INTO step_runs ({STEP_COLUMNS}) SELECT {STEP_COLUMNS} FROM ok {STEP_UPSERT}), \
         r AS (UPDATE runs SET {RUN_SET} FROM ok AS j WHERE runs.id = j.run_id), \
         w AS (INSERT INTO waits (run_id, account_id, event_type, step_seq, created_at) \
            SELECT run_id, account_id, wait_event, seq, now FROM ok WHERE wait_event IS NOT NULL {WAIT_UPSERT}), \
         wd AS (DELETE FROM waits USING ok WHERE waits.run_id = ok.run_id AND ok.wait_event IS NULL AND ok.clear_wait = 1), \
         u AS (INSERT INTO usage_ledger (id, account_id, workflow_id, run_id, step_id, unit, quantity, tokens_milli, \
            cost_micros, created_at, day) \
            SELECT v.id, ok.account_id, ok.workflow_id, ok.run_id, v.step_id, v.unit, v.quantity, v.tokens_milli, \
            v.cost_micros, ok.now, v.day FROM {usage} JOIN ok ON ok.run_id = v.run_id AND ok.token = v.token \
            ON CONFLICT (id) DO NOTHING) \
         SELECT run_id, token FROM q",
        rows = unnest(1, BatchColumns::COLUMNS, "x"),
        usage = unnest(1 + BatchColumns::COLUMNS.len(), UsageColumns::COLUMNS, "v"),
    )
});

/// SQLite's statements, each over the batch rows in `$1`.
struct SqliteSql {
    /// Fences of completions whose run goes on; answers the runs that held.
    fence_continue: String,
    /// Fences of completions that end their run; answers the runs that held.
    fence_finish: String,
    steps: String,
    runs: String,
    waits: String,
    clear_waits: String,
}

static SQLITE_SQL: LazyLock<SqliteSql> = LazyLock::new(|| {
    let rows = sqlite_rows();
    SqliteSql {
        fence_continue: format!(
            "UPDATE run_queue SET {QUEUE_SET} FROM {rows} AS j \
             WHERE j.fin = 0 AND run_queue.run_id = j.run_id AND run_queue.lease_token = j.token RETURNING run_queue.run_id"
        ),
        fence_finish: format!("DELETE FROM run_queue WHERE (run_id, lease_token) IN (SELECT run_id, token FROM {rows} WHERE fin = 1) RETURNING run_id"),
        // `WHERE true` tells SQLite's parser that ON CONFLICT belongs to the INSERT.
        steps: format!("INSERT INTO step_runs ({STEP_COLUMNS}) SELECT {STEP_COLUMNS} FROM {rows} WHERE true {STEP_UPSERT}"),
        runs: format!("UPDATE runs SET {RUN_SET} FROM {rows} AS j WHERE runs.id = j.run_id"),
        waits: format!(
            "INSERT INTO waits (run_id, account_id, event_type, step_seq, created_at) \
             SELECT run_id, account_id, wait_event, seq, now FROM {rows} WHERE wait_event IS NOT NULL {WAIT_UPSERT}"
        ),
        clear_waits: format!("DELETE FROM waits WHERE run_id IN (SELECT run_id FROM {rows} WHERE wait_event IS NULL AND clear_wait = 1)"),
    }
});

impl Completion {
    /// Whether the batch statements cover this completion; quota settlement, the outbox, a
    /// deferred handle and fan-out take the general path.
    fn fits_batch(&self) -> bool {
        self.quota.is_none() && self.outbox.is_none() && self.step.deferred_handle.is_none() && self.spawn.is_none() && self.parent.is_none()
    }

    /// This completion as a batch row.
    fn batch_row(&self) -> BatchRow<'_> {
        // When the run ends its queue row goes (`fin`), and its run row keeps its step index and
        // records the last step's seq.
        let ((q_step_index, q_step_seq, q_attempt, q_due_at, keep, fin), (r_step_index, r_step_seq)) = match &self.next {
            Next::Continue { step_index, step_seq, attempt, due_at, keep_lease } => {
                ((*step_index, *step_seq, *attempt, keep_lease.unwrap_or(*due_at), keep_lease.is_some() as i64, 0), (*step_index, *step_seq))
            }
            Next::Finish => ((0, 0, 0, 0, 0, 1), (-1, self.step.seq)),
        };
        let s = &self.step;
        BatchRow {
            run_id: &self.run_id,
            token: &self.token,
            fin,
            q_step_index,
            q_step_seq,
            q_attempt,
            q_due_at,
            keep,
            seq: s.seq,
            step_id: &s.step_id,
            status: s.status.as_str(),
            attempts: s.attempts,
            input: s.input.as_deref(),
            output: s.output.as_deref(),
            error: s.error.as_deref(),
            started_at: s.started_at,
            finished_at: s.finished_at,
            due_at: s.due_at,
            rate_slot_at: s.rate_slot_at,
            rate_slot_key: s.rate_slot_key.as_deref(),
            run_status: self.run_status.as_str(),
            context: self.context.as_deref(),
            run_error: self.run_error.as_deref(),
            r_step_index,
            r_step_seq,
            r_started_at: s.started_at.unwrap_or(self.now),
            r_finished_at: self.run_status.is_final().then_some(self.now),
            account_id: &self.account_id,
            workflow_id: &self.workflow_id,
            wait_event: self.wait.as_ref().map(|w| w.event_type.as_str()),
            clear_wait: self.clear_wait as i64,
            now: self.now,
        }
    }
}

/// Rows as one JSON array parameter (SQLite; serialising plain rows cannot fail).
fn rows_param<'a>(batch: impl Iterator<Item = &'a &'a Completion>) -> String {
    serde_json::to_string(&batch.map(|c| c.batch_row()).collect::<Vec<_>>()).expect("rows serialise")
}

impl Store {
    /// [`Store::complete_batch`] on PostgreSQL: the completions that fit in one statement
    /// ([`PG_SQL`]); the others, and those whose fence did not hold, each in a transaction of
    /// its own (whose errors are theirs alone: the batch statement has committed).
    pub(super) async fn complete_batch_postgres(&self, batch: &[&Completion]) -> Result<Vec<Result<bool>>> {
        let simple: Vec<&Completion> = batch.iter().copied().filter(|c| c.fits_batch()).collect();
        let mut held: HashSet<(String, String)> = HashSet::new();
        if !simple.is_empty() {
            let mut rows = BatchColumns::default();
            let mut usage = UsageColumns::default();
            for c in &simple {
                rows.push(c.batch_row());
                for u in &c.usage {
                    usage.push(UsageRow {
                        run_id: &c.run_id,
                        token: &c.token,
                        id: &u.id,
                        step_id: u.step_id.as_deref(),
                        unit: &u.unit,
                        quantity: u.quantity,
                        tokens_milli: u.tokens_milli,
                        cost_micros: u.cost_micros,
                        day: &u.day,
                    });
                }
            }
            let query = usage.bind(rows.bind(sqlx::query(sqlx::AssertSqlSafe(PG_SQL.as_str()))));
            for row in query.fetch_all(self.batches()).await? {
                held.insert((row.try_get(0)?, row.try_get(1)?));
            }
        }
        let is_held: Vec<bool> = batch.iter().map(|c| held.contains(&(c.run_id.clone(), c.token.clone()))).collect();
        let mut done: Vec<Result<bool>> = is_held.iter().map(|&h| Ok(h)).collect();
        let rest = batch.iter().enumerate().filter(|&(i, _)| !is_held[i]);
        let alone = futures::future::join_all(rest.map(|(i, c)| async move { (i, self.complete_alone(c).await) })).await;
        for (i, result) in alone {
            done[i] = result;
        }
        Ok(done)
    }
}

/// [`Store::complete_batch`] on SQLite, inside `tx` (the single writer's transaction).
pub(super) async fn complete_batch_sqlite(tx: &mut Transaction<'static, Any>, batch: &[&Completion]) -> Result<Vec<bool>> {
    // The batch statements answer runs by id: a run twice in one batch (a lease taken over
    // while its first holder was still committing) takes the general path after them.
    let mut seen = HashSet::new();
    let simple: Vec<usize> = (0..batch.len()).filter(|&i| batch[i].fits_batch() && seen.insert(batch[i].run_id.as_str())).collect();
    let mut done = vec![false; batch.len()];
    let mut general: Vec<usize> = (0..batch.len()).filter(|i| !simple.contains(i)).collect();
    if !simple.is_empty() {
        let sql = &*SQLITE_SQL;
        let rows = rows_param(simple.iter().map(|&i| &batch[i]));
        let mut held: HashSet<String> = HashSet::new();
        for fence in [&sql.fence_continue, &sql.fence_finish] {
            let ids: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(fence.as_str())).bind(&rows).fetch_all(&mut **tx).await?;
            held.extend(ids.into_iter().map(|r| r.0));
        }
        let ok: Vec<&&Completion> = simple.iter().map(|&i| &batch[i]).filter(|c| held.contains(&c.run_id)).collect();
        for &i in &simple {
            if held.contains(&batch[i].run_id) {
                done[i] = true;
            } else {
                general.push(i);
            }
        }
        if !ok.is_empty() {
            // Usually every fence held: the rows already serialised are the rows to write.
            let rows = if ok.len() == simple.len() { rows } else { rows_param(ok.iter().copied()) };
            for statement in [&sql.steps, &sql.runs] {
                sqlx::query(sqlx::AssertSqlSafe(statement.as_str())).bind(&rows).execute(&mut **tx).await?;
            }
            if ok.iter().any(|c| c.wait.is_some()) {
                sqlx::query(sqlx::AssertSqlSafe(sql.waits.as_str())).bind(&rows).execute(&mut **tx).await?;
            }
            if ok.iter().any(|c| c.wait.is_none() && c.clear_wait) {
                sqlx::query(sqlx::AssertSqlSafe(sql.clear_waits.as_str())).bind(&rows).execute(&mut **tx).await?;
            }
            let usage: Vec<UsageInsert<'_>> =
                ok.iter().flat_map(|c| c.usage.iter().map(|u| (c.account_id.as_str(), c.workflow_id.as_str(), c.run_id.as_str(), u, c.now))).collect();
            if !usage.is_empty() {
                insert_usage(tx, &usage).await?;
            }
        }
    }
    // In batch order, after the batch statements: a fence that failed there fails here too
    // (nothing changed it), and the general path then tells a cancel from a lost lease.
    general.sort_unstable();
    for i in general {
        done[i] = complete_in(tx, batch[i]).await?;
    }
    Ok(done)
}
