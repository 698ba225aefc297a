//! PostgreSQL-only fast path: a batch of accepted events as one statement. Data-modifying CTEs
//! let the events, runs, queue rows and ledger rows of many requests commit in one round trip
//! (autocommit: the statement is its own transaction). SQLite has no data-modifying CTEs, and
//! its statements are in-process calls anyway, so it runs a batch as one multi-statement
//! transaction. (A batch of step completions has its own module, `complete.rs`.)
//!
//! As for completions, the batch travels as one typed array per column ([`super::batch_rows`]),
//! so the statement's text, and its prepared plan, is the same for any batch: with a `VALUES`
//! list per batch size, planning each size took about a sixth of the database's time under load.

use std::sync::LazyLock;

use super::batch_rows::unnest;
use super::{NewEvent, NewRun, Store};
use crate::Result;

batch_rows! {
    /// A batch's event row.
    EventRow, EventColumns {
        id: &'a str => "text",
        account_id: &'a str => "text",
        event_type: &'a str => "text",
        data: Option<&'a str> => "text",
        source: &'a str => "text",
        response: &'a str => "text",
        now: i64 => "bigint",
    }
}

batch_rows! {
    /// A batch's run row: the run, its first queue row (`due_at`, `token`: leased when handed
    /// to this process's workers) and its `workflow_run` charge (`u_*`, absent when not billed).
    RunRow, RunColumns {
        id: &'a str => "text",
        account_id: &'a str => "text",
        workflow_id: &'a str => "text",
        version: i64 => "bigint",
        event_id: &'a str => "text",
        event: &'a str => "text",
        is_test: i64 => "bigint",
        now: i64 => "bigint",
        due_at: i64 => "bigint",
        token: Option<&'a str> => "text",
        u_id: Option<&'a str> => "text",
        u_unit: Option<&'a str> => "text",
        u_quantity: Option<i64> => "bigint",
        u_tokens_milli: Option<i64> => "bigint",
        u_cost_micros: Option<i64> => "bigint",
        u_day: Option<&'a str> => "text",
    }
}

/// The statement: events' columns first, then runs'. 'queued' is `RunStatus::Queued`, as in
/// `runs::insert_runs`; the queue and ledger rows join through the inserted runs. Plain
/// INSERTs, no `ON CONFLICT`: every id is new (the batch holds no dedupe keys, and a ledger
/// row's id is its new run's), and a speculative insert costs PostgreSQL an index probe and a
/// second WAL record per row.
static SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH e AS (INSERT INTO events (id, account_id, type, data, source, dedupe_key, response, created_at) \
         SELECT id, account_id, event_type, data, source, NULL, response, now FROM {events}), \
         v AS (SELECT * FROM {runs}), \
         r AS (INSERT INTO runs (id, account_id, workflow_id, version, status, event_id, event, context, error, \
            is_test, step_index, step_seq, created_at, started_at, finished_at) \
            SELECT id, account_id, workflow_id, version, 'queued', event_id, event, '{{}}', NULL, is_test, 0, 1, now, NULL, NULL \
            FROM v RETURNING id), \
         q AS (INSERT INTO run_queue (run_id, account_id, due_at, step_index, step_seq, attempt, lease_token, dispatching) \
            SELECT v.id, v.account_id, v.due_at, 0, 1, 0, v.token, 0 FROM v JOIN r ON r.id = v.id), \
         u AS (INSERT INTO usage_ledger (id, account_id, workflow_id, run_id, step_id, unit, quantity, tokens_milli, \
            cost_micros, created_at, day) \
            SELECT v.u_id, v.account_id, v.workflow_id, v.id, NULL, v.u_unit, v.u_quantity, v.u_tokens_milli, \
            v.u_cost_micros, v.now, v.u_day FROM v JOIN r ON r.id = v.id WHERE v.u_id IS NOT NULL) \
         SELECT 1",
        events = unnest(1, EventColumns::COLUMNS, "x"),
        runs = unnest(1 + EventColumns::COLUMNS.len(), RunColumns::COLUMNS, "y"),
    )
});

impl Store {
    /// Records a group-commit batch (events, their runs, queue rows and charges) in one
    /// statement: one round trip and one commit for the whole batch.
    pub(crate) async fn record_batch_in_one(&self, items: &[(NewEvent, Vec<NewRun>)]) -> Result<()> {
        let mut events = EventColumns::default();
        let mut runs = RunColumns::default();
        for (e, new_runs) in items {
            if e.needs_batch_row(new_runs) {
                events.push(EventRow {
                    id: &e.id,
                    account_id: &e.account_id,
                    event_type: &e.event_type,
                    data: e.data.as_deref(),
                    source: &e.source,
                    response: &e.response,
                    now: e.now,
                });
            }
            for r in new_runs {
                let (token, due_at) = r.first_due(e.now);
                let u = r.usage.as_ref();
                runs.push(RunRow {
                    id: &r.id,
                    account_id: &e.account_id,
                    workflow_id: &r.workflow_id,
                    version: r.version,
                    event_id: &e.id,
                    event: &r.event,
                    is_test: r.is_test as i64,
                    now: e.now,
                    due_at,
                    token,
                    u_id: u.map(|u| u.id.as_str()),
                    u_unit: u.map(|u| u.unit.as_str()),
                    u_quantity: u.map(|u| u.quantity),
                    u_tokens_milli: u.map(|u| u.tokens_milli),
                    u_cost_micros: u.map(|u| u.cost_micros),
                    u_day: u.map(|u| u.day.as_str()),
                });
            }
        }
        runs.bind(events.bind(sqlx::query(sqlx::AssertSqlSafe(SQL.as_str())))).execute(self.batches()).await?;
        Ok(())
    }
}
