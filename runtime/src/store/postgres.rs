//! PostgreSQL-only fast paths: a batch of step completions, and a batch of accepted events,
//! each as one statement. Data-modifying CTEs let the queue fences, the step rows, the run rows,
//! the waits and the usage rows of many runs commit in one round trip (autocommit: the statement
//! is its own transaction). SQLite has no data-modifying CTEs, and its statements are
//! in-process calls anyway, so it runs a batch as one multi-statement transaction.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::runs::values;
use super::{Completion, NewEvent, NewRun, Next, Store};
use crate::Result;

/// A batch's completions as one statement: the batch travels as two JSON parameters (the
/// completions, their usage rows), read back as rows by `json_to_recordset`, so the statement's
/// text — and its prepared plan — is the same for any batch size and shape. Data-modifying CTEs
/// fence each run's queue row by its lease token, then write the step rows, run rows, waits and
/// ledger rows of the completions whose fence held; the statement is its own transaction.
const COMPLETE_BATCH_SQL: &str = "WITH j AS (SELECT * FROM json_to_recordset($1::json) AS x(\
    run_id text, token text, fin bigint, q_step_index bigint, q_step_seq bigint, q_attempt bigint, q_due_at bigint, \
    keep bigint, seq bigint, step_id text, status text, attempts bigint, input text, output text, error text, \
    started_at bigint, finished_at bigint, due_at bigint, rate_slot_at bigint, rate_slot_key text, \
    run_status text, context text, run_error text, r_step_index bigint, r_step_seq bigint, r_started_at bigint, \
    r_finished_at bigint, account_id text, workflow_id text, wait_event text, clear_wait bigint, now bigint)), \
 q1 AS (UPDATE run_queue SET step_index = j.q_step_index, step_seq = j.q_step_seq, attempt = j.q_attempt, \
    dispatching = 0, due_at = j.q_due_at, lease_token = CASE WHEN j.keep = 1 THEN run_queue.lease_token ELSE NULL END, \
    reserved_milli = 0, reserved_period = NULL FROM j \
    WHERE j.fin = 0 AND run_queue.run_id = j.run_id AND run_queue.lease_token = j.token RETURNING j.run_id, j.token), \
 q2 AS (DELETE FROM run_queue USING j WHERE j.fin = 1 AND run_queue.run_id = j.run_id \
    AND run_queue.lease_token = j.token RETURNING j.run_id, j.token), \
 q AS (SELECT run_id, token FROM q1 UNION ALL SELECT run_id, token FROM q2), \
 ok AS (SELECT j.* FROM j JOIN q ON q.run_id = j.run_id AND q.token = j.token), \
 s AS (INSERT INTO step_runs (run_id, seq, step_id, status, attempts, input, output, error, started_at, \
    finished_at, due_at, rate_slot_at, rate_slot_key) \
    SELECT run_id, seq, step_id, status, attempts, input, output, error, started_at, finished_at, due_at, \
    rate_slot_at, rate_slot_key FROM ok \
    ON CONFLICT (run_id, seq) DO UPDATE SET status = EXCLUDED.status, attempts = EXCLUDED.attempts, \
    input = COALESCE(EXCLUDED.input, step_runs.input), output = EXCLUDED.output, error = EXCLUDED.error, \
    started_at = COALESCE(step_runs.started_at, EXCLUDED.started_at), finished_at = EXCLUDED.finished_at, \
    due_at = EXCLUDED.due_at, rate_slot_at = EXCLUDED.rate_slot_at, rate_slot_key = EXCLUDED.rate_slot_key), \
 r AS (UPDATE runs SET status = ok.run_status, context = COALESCE(ok.context, runs.context), error = ok.run_error, \
    step_index = CASE WHEN ok.r_step_index < 0 THEN runs.step_index ELSE ok.r_step_index END, \
    step_seq = ok.r_step_seq, started_at = COALESCE(runs.started_at, ok.r_started_at), \
    finished_at = ok.r_finished_at FROM ok WHERE runs.id = ok.run_id), \
 w AS (INSERT INTO waits (run_id, account_id, event_type, step_seq, created_at) \
    SELECT run_id, account_id, wait_event, seq, now FROM ok WHERE wait_event IS NOT NULL \
    ON CONFLICT (run_id) DO UPDATE SET event_type = EXCLUDED.event_type, step_seq = EXCLUDED.step_seq, \
    created_at = EXCLUDED.created_at), \
 wd AS (DELETE FROM waits USING ok WHERE waits.run_id = ok.run_id AND ok.wait_event IS NULL AND ok.clear_wait = 1), \
 u AS (INSERT INTO usage_ledger (id, account_id, workflow_id, run_id, step_id, unit, quantity, tokens_milli, \
    cost_micros, created_at, day) \
    SELECT v.id, ok.account_id, ok.workflow_id, ok.run_id, v.step_id, v.unit, v.quantity, v.tokens_milli, \
    v.cost_micros, ok.now, v.day \
    FROM json_to_recordset($2::json) AS v(run_id text, token text, id text, step_id text, unit text, quantity bigint, \
    tokens_milli bigint, cost_micros bigint, day text) \
    JOIN ok ON ok.run_id = v.run_id AND ok.token = v.token \
    ON CONFLICT (id) DO NOTHING) \
 SELECT run_id, token FROM q";

impl Completion {
    /// Whether the one-statement batch covers this completion; quota settlement, the outbox,
    /// a deferred handle and fan-out take the general transaction.
    fn fits_one_statement(&self) -> bool {
        self.quota.is_none() && self.outbox.is_none() && self.step.deferred_handle.is_none() && self.spawn.is_none() && self.parent.is_none()
    }

    /// This completion as a row of [`COMPLETE_BATCH_SQL`]'s `j`.
    fn batch_row(&self) -> Value {
        let (q_step_index, q_step_seq, q_attempt, q_due_at, keep, fin) = match &self.next {
            Next::Continue { step_index, step_seq, attempt, due_at, keep_lease } => {
                (*step_index, *step_seq, *attempt, keep_lease.unwrap_or(*due_at), keep_lease.is_some() as i64, 0)
            }
            Next::Finish => (0, 0, 0, 0, 0, 1),
        };
        // The run row keeps its step index when the run ends, and records the last step's seq.
        let (r_step_index, r_step_seq) = match &self.next {
            Next::Continue { step_index, step_seq, .. } => (*step_index, *step_seq),
            Next::Finish => (-1, self.step.seq),
        };
        let s = &self.step;
        json!({
            "run_id": self.run_id, "token": self.token, "fin": fin, "q_step_index": q_step_index, "q_step_seq": q_step_seq,
            "q_attempt": q_attempt, "q_due_at": q_due_at, "keep": keep,
            "seq": s.seq, "step_id": s.step_id, "status": s.status.as_str(), "attempts": s.attempts, "input": s.input,
            "output": s.output, "error": s.error, "started_at": s.started_at, "finished_at": s.finished_at, "due_at": s.due_at,
            "rate_slot_at": s.rate_slot_at, "rate_slot_key": s.rate_slot_key,
            "run_status": self.run_status.as_str(), "context": self.context, "run_error": self.run_error,
            "r_step_index": r_step_index, "r_step_seq": r_step_seq, "r_started_at": s.started_at.unwrap_or(self.now),
            "r_finished_at": self.run_status.is_final().then_some(self.now),
            "account_id": self.account_id, "workflow_id": self.workflow_id,
            "wait_event": self.wait.as_ref().map(|w| w.event_type.as_str()), "clear_wait": self.clear_wait as i64, "now": self.now,
        })
    }
}

impl Store {
    /// [`Store::complete_batch`] on PostgreSQL: every completion that fits in one statement
    /// ([`COMPLETE_BATCH_SQL`]); the rest, and those whose fence did not hold (a lost lease
    /// or a cancel, which the general path tells apart), each in a transaction of its own.
    pub(super) async fn complete_batch_postgres(&self, batch: &[&Completion]) -> Result<Vec<bool>> {
        let simple: Vec<&Completion> = batch.iter().copied().filter(|c| c.fits_one_statement()).collect();
        let mut fenced: HashSet<(String, String)> = HashSet::new();
        if !simple.is_empty() {
            let rows: Vec<Value> = simple.iter().map(|c| c.batch_row()).collect();
            let usage: Vec<Value> = simple
                .iter()
                .flat_map(|c| {
                    c.usage.iter().map(|u| {
                        json!({
                            "run_id": c.run_id, "token": c.token, "id": u.id, "step_id": u.step_id, "unit": u.unit,
                            "quantity": u.quantity, "tokens_milli": u.tokens_milli, "cost_micros": u.cost_micros, "day": u.day,
                        })
                    })
                })
                .collect();
            let held: Vec<(String, String)> =
                sqlx::query_as(COMPLETE_BATCH_SQL).bind(Value::Array(rows).to_string()).bind(Value::Array(usage).to_string()).fetch_all(&self.writer).await?;
            fenced.extend(held);
        }
        let rest = batch.iter().enumerate().filter(|(_, c)| !fenced.contains(&(c.run_id.clone(), c.token.clone())));
        let mut done: Vec<bool> = batch.iter().map(|c| fenced.contains(&(c.run_id.clone(), c.token.clone()))).collect();
        let alone = futures::future::join_all(rest.map(|(i, c)| async move { (i, self.complete_alone(c).await) })).await;
        for (i, result) in alone {
            done[i] = result?;
        }
        Ok(done)
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
