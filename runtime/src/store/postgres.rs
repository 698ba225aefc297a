//! PostgreSQL-only fast path: a step's completion as one statement. Data-modifying CTEs let the
//! queue fence, the step row, the run row, the wait and the usage rows commit in one round trip
//! (autocommit: the statement is its own transaction). SQLite has no data-modifying CTEs, and
//! its statements are in-process calls anyway, so it keeps the multi-statement transaction.

use sqlx::Row;

use super::runs::{bind_step, values};
use super::{Completion, NewEvent, NewRun, Next, Store};
use crate::Result;

impl Store {
    /// Completes a step in one statement. False when the lease fence did not hold (lost lease,
    /// or the run was cancelled meanwhile); the caller then takes the general path, which tells
    /// the two apart. Nothing is written in that case.
    pub(crate) async fn complete_in_one(&self, c: &Completion) -> Result<bool> {
        // $1 run, $2 token, $3 step_index, $4 step_seq, $5 attempt, $6 due_at, $7 keep lease,
        // $8..$20 the step row, $21 run status, $22 context, $23 run error, $24 started_at,
        // $25 finished_at, $26 account, $27 workflow, $28 now, $29 wait event type.
        let fence = match c.next {
            Next::Continue { .. } => {
                "UPDATE run_queue SET step_index = $3, step_seq = $4, attempt = $5, dispatching = 0, due_at = $6, \
                 lease_token = CASE WHEN $7 = 1 THEN lease_token ELSE NULL END, reserved_milli = 0, \
                 reserved_period = NULL WHERE run_id = $1 AND lease_token = $2 RETURNING run_id"
            }
            Next::Finish => "DELETE FROM run_queue WHERE run_id = $1 AND lease_token = $2 RETURNING run_id",
        };
        let wait = if c.wait.is_some() {
            ", w AS (INSERT INTO waits (run_id, account_id, event_type, step_seq, created_at) \
             SELECT run_id, $26, $29, $9, $28 FROM q \
             ON CONFLICT (run_id) DO UPDATE SET event_type = EXCLUDED.event_type, step_seq = EXCLUDED.step_seq, \
             created_at = EXCLUDED.created_at)"
        } else if c.clear_wait {
            ", w AS (DELETE FROM waits WHERE run_id IN (SELECT run_id FROM q))"
        } else {
            ""
        };
        let usage = if c.usage.is_empty() {
            String::new()
        } else {
            // Placeholders after the 29 fixed ones.
            let rows = values("(?, ?, ?, ?, ?, ?, ?)", c.usage.len());
            let rows = renumber(&rows, 29);
            format!(
                ", u AS (INSERT INTO usage_ledger (id, account_id, workflow_id, run_id, step_id, unit, quantity, \
                 tokens_milli, cost_micros, created_at, day) \
                 SELECT v.id, $26, $27, q.run_id, v.step_id, v.unit, v.quantity, v.tokens_milli, v.cost_micros, $28, v.day \
                 FROM q, (VALUES {rows}) AS v(id, step_id, unit, quantity, tokens_milli, cost_micros, day) \
                 ON CONFLICT (id) DO NOTHING)"
            )
        };
        let sql = format!(
            "WITH q AS ({fence}), \
             s AS (INSERT INTO step_runs (run_id, seq, step_id, status, attempts, input, output, error, started_at, \
             finished_at, due_at, rate_slot_at, rate_slot_key) \
             SELECT run_id, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20 FROM q \
             ON CONFLICT (run_id, seq) DO UPDATE SET status = EXCLUDED.status, attempts = EXCLUDED.attempts, \
             input = COALESCE(EXCLUDED.input, step_runs.input), output = EXCLUDED.output, error = EXCLUDED.error, \
             started_at = COALESCE(step_runs.started_at, EXCLUDED.started_at), finished_at = EXCLUDED.finished_at, \
             due_at = EXCLUDED.due_at, rate_slot_at = EXCLUDED.rate_slot_at, rate_slot_key = EXCLUDED.rate_slot_key), \
             r AS (UPDATE runs SET status = $21, context = COALESCE($22, context), error = $23, \
             step_index = CASE WHEN $3 < 0 THEN step_index ELSE $3 END, step_seq = $4, \
             started_at = COALESCE(started_at, $24), finished_at = $25 WHERE id IN (SELECT run_id FROM q))\
             {wait}{usage} SELECT COUNT(*) FROM q"
        );
        let (step_index, step_seq, attempt, due_at, keep) = match &c.next {
            Next::Continue { step_index, step_seq, attempt, due_at, keep_lease } => {
                (*step_index, *step_seq, *attempt, keep_lease.unwrap_or(*due_at), keep_lease.is_some() as i64)
            }
            // For the run row: keep its step index, and record the last step's seq.
            Next::Finish => (-1, c.step.seq, 0, 0, 0),
        };
        let finished = c.run_status.is_final().then_some(c.now);
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&c.run_id).bind(&c.token).bind(step_index).bind(step_seq).bind(attempt).bind(due_at).bind(keep);
        let mut q = bind_step(q, &c.step)
            .bind(c.run_status)
            .bind(&c.context)
            .bind(&c.run_error)
            .bind(c.step.started_at.unwrap_or(c.now))
            .bind(finished)
            .bind(&c.account_id)
            .bind(&c.workflow_id)
            .bind(c.now)
            .bind(c.wait.as_ref().map(|w| w.event_type.as_str()));
        for u in &c.usage {
            q = q.bind(&u.id).bind(&u.step_id).bind(&u.unit).bind(u.quantity).bind(u.tokens_milli).bind(u.cost_micros);
            q = q.bind(&u.day);
        }
        let count: i64 = q.fetch_one(&self.writer).await?.try_get(0)?;
        Ok(count == 1)
    }
}

/// The most bind parameters one batch statement may carry (PostgreSQL allows 65,535).
const MAX_BATCH_BINDS: usize = 30_000;

impl Store {
    /// Records a group-commit batch (events, their runs, queue rows and charges) in one statement:
    /// one round trip and one commit for the whole batch. False (nothing written) when the batch
    /// is too large for one statement; the caller then uses the multi-statement transaction.
    pub(crate) async fn record_batch_in_one(&self, items: &[(NewEvent, Vec<NewRun>)]) -> Result<bool> {
        let runs: Vec<(&NewEvent, &NewRun)> = items.iter().flat_map(|(e, rs)| rs.iter().map(move |r| (e, r))).collect();
        let charged: Vec<(&NewEvent, &NewRun)> = runs.iter().copied().filter(|(_, r)| r.usage.is_some()).collect();
        if items.len() * 7 + runs.len() * 8 + charged.len() * 8 > MAX_BATCH_BINDS {
            return Ok(false);
        }
        let mut sql = format!(
            "WITH e AS (INSERT INTO events (id, account_id, type, data, source, dedupe_key, response, created_at) \
             VALUES {} ON CONFLICT DO NOTHING)",
            values("(?, ?, ?, ?, ?, NULL, ?, ?)", items.len())
        );
        let mut next = items.len() * 7;
        if !runs.is_empty() {
            // 'queued': `RunStatus::Queued`, as in `runs::insert_runs`.
            let rows = renumber(&values("(?, ?, ?, ?, 'queued', ?, ?, '{}', NULL, ?, 0, 1, ?, NULL, NULL)", runs.len()), next);
            next += runs.len() * 8;
            sql.push_str(&format!(
                ", r AS (INSERT INTO runs (id, account_id, workflow_id, version, status, event_id, event, context, error, \
                 is_test, step_index, step_seq, created_at, started_at, finished_at) VALUES {rows} \
                 RETURNING id, account_id, created_at), \
                 q AS (INSERT INTO run_queue (run_id, account_id, due_at, step_index, step_seq, attempt, lease_token, \
                 dispatching) SELECT id, account_id, created_at, 0, 1, 0, NULL, 0 FROM r)"
            ));
        }
        if !charged.is_empty() {
            let rows = renumber(&values("(?, ?, ?, ?, ?, ?, ?, ?)", charged.len()), next);
            // The ledger row references its run: join through `r` so it is written with it.
            sql.push_str(&format!(
                ", u AS (INSERT INTO usage_ledger (id, account_id, workflow_id, run_id, step_id, unit, quantity, \
                 tokens_milli, cost_micros, created_at, day) \
                 SELECT v.id, r.account_id, v.workflow_id, r.id, NULL, v.unit, v.quantity, v.tokens_milli, \
                 v.cost_micros, r.created_at, v.day FROM r JOIN (VALUES {rows}) \
                 AS v(id, run_id, workflow_id, unit, quantity, tokens_milli, cost_micros, day) ON v.run_id = r.id \
                 ON CONFLICT (id) DO NOTHING)"
            ));
        }
        sql.push_str(" SELECT 1");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (e, _) in items {
            q = q.bind(&e.id).bind(&e.account_id).bind(&e.event_type).bind(&e.data).bind(&e.source);
            q = q.bind(&e.response).bind(e.now);
        }
        for (e, r) in &runs {
            q = q.bind(&r.id).bind(&e.account_id).bind(&r.workflow_id).bind(r.version);
            q = q.bind(&e.id).bind(&r.event).bind(r.is_test as i64).bind(e.now);
        }
        for (_, r) in &charged {
            let u = r.usage.as_ref().expect("filtered on usage");
            q = q.bind(&u.id).bind(&r.id).bind(&r.workflow_id).bind(&u.unit).bind(u.quantity).bind(u.tokens_milli);
            q = q.bind(u.cost_micros).bind(&u.day);
        }
        q.execute(&self.writer).await?;
        Ok(true)
    }
}

/// Shifts `$n` placeholders by `offset`.
fn renumber(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch != '$' {
            out.push(ch);
            continue;
        }
        let mut n = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            n.push(*d);
            chars.next();
        }
        out.push('$');
        out.push_str(&(n.parse::<usize>().unwrap_or(0) + offset).to_string());
    }
    out
}
