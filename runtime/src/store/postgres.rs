//! PostgreSQL-only fast path: a batch of accepted events as one statement. Data-modifying CTEs
//! let the events, runs, queue rows and ledger rows of many requests commit in one round trip
//! (autocommit: the statement is its own transaction). SQLite has no data-modifying CTEs, and
//! its statements are in-process calls anyway, so it runs a batch as one multi-statement
//! transaction. (A batch of step completions has its own module, `complete.rs`.)

use super::runs::values;
use super::{NewEvent, NewRun, Store};
use crate::Result;

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
