//! PostgreSQL-only fast path: a batch of accepted events as one statement. Data-modifying CTEs
//! let the events, runs, queue rows and ledger rows of many requests commit in one round trip
//! (autocommit: the statement is its own transaction). SQLite has no data-modifying CTEs, and
//! its statements are in-process calls anyway, so it runs a batch as one multi-statement
//! transaction. (A batch of step completions has its own module, `complete.rs`.)
//!
//! As for completions, the batch travels as JSON parameters that the statement reads back as
//! rows, so the statement's text, and its prepared plan, is the same for any batch: with a
//! `VALUES` list per batch size, planning each size took about a sixth of the database's time
//! under load.

use std::sync::LazyLock;

use serde::Serialize;

use super::complete::{json_param, pg_rows};
use super::{NewEvent, NewRun, Store};
use crate::Result;

/// A batch's event rows.
const EVENT_COLUMNS: [(&str, &str); 7] =
    [("id", "text"), ("account_id", "text"), ("type", "text"), ("data", "text"), ("source", "text"), ("response", "text"), ("now", "bigint")];

/// A batch's run rows: the run, its first queue row (`due_at`, `token`: leased when handed to
/// this process's workers) and its `workflow_run` charge (`u_*`, absent when not billed).
const RUN_COLUMNS: [(&str, &str); 16] = [
    ("id", "text"),
    ("account_id", "text"),
    ("workflow_id", "text"),
    ("version", "bigint"),
    ("event_id", "text"),
    ("event", "text"),
    ("is_test", "bigint"),
    ("now", "bigint"),
    ("due_at", "bigint"),
    ("token", "text"),
    ("u_id", "text"),
    ("u_unit", "text"),
    ("u_quantity", "bigint"),
    ("u_tokens_milli", "bigint"),
    ("u_cost_micros", "bigint"),
    ("u_day", "text"),
];

/// The statement: events `$1`, runs `$2`. 'queued' is `RunStatus::Queued`, as in
/// `runs::insert_runs`; the queue and ledger rows join through the inserted runs. Plain
/// INSERTs, no `ON CONFLICT`: every id is new (the batch holds no dedupe keys, and a ledger
/// row's id is its new run's), and a speculative insert costs PostgreSQL an index probe and a
/// second WAL record per row.
static SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH e AS (INSERT INTO events (id, account_id, type, data, source, dedupe_key, response, created_at) \
         SELECT id, account_id, type, data, source, NULL, response, now FROM {events}), \
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
        events = pg_rows("$1", &EVENT_COLUMNS),
        runs = pg_rows("$2", &RUN_COLUMNS).replacen("AS x(", "AS y(", 1),
    )
});

/// A batch's event row ([`EVENT_COLUMNS`]).
#[derive(Serialize, Default)]
struct EventRow<'a> {
    id: &'a str,
    account_id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    data: Option<&'a str>,
    source: &'a str,
    response: &'a str,
    now: i64,
}

/// A batch's run row ([`RUN_COLUMNS`]).
#[derive(Serialize, Default)]
struct RunRow<'a> {
    id: &'a str,
    account_id: &'a str,
    workflow_id: &'a str,
    version: i64,
    event_id: &'a str,
    event: &'a str,
    is_test: i64,
    now: i64,
    due_at: i64,
    token: Option<&'a str>,
    u_id: Option<&'a str>,
    u_unit: Option<&'a str>,
    u_quantity: Option<i64>,
    u_tokens_milli: Option<i64>,
    u_cost_micros: Option<i64>,
    u_day: Option<&'a str>,
}

impl Store {
    /// Records a group-commit batch (events, their runs, queue rows and charges) in one
    /// statement: one round trip and one commit for the whole batch.
    pub(crate) async fn record_batch_in_one(&self, items: &[(NewEvent, Vec<NewRun>)]) -> Result<()> {
        let events: Vec<EventRow<'_>> = items
            .iter()
            .map(|(e, _)| EventRow {
                id: &e.id,
                account_id: &e.account_id,
                event_type: &e.event_type,
                data: e.data.as_deref(),
                source: &e.source,
                response: &e.response,
                now: e.now,
            })
            .collect();
        let runs: Vec<RunRow<'_>> = items
            .iter()
            .flat_map(|(e, runs)| runs.iter().map(move |r| (e, r)))
            .map(|(e, r)| {
                let (token, due_at) = r.first_due(e.now);
                let u = r.usage.as_ref();
                RunRow {
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
                }
            })
            .collect();
        sqlx::query(sqlx::AssertSqlSafe(SQL.as_str())).bind(json_param(&events)).bind(json_param(&runs)).execute(&self.writer).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::complete::tests::{column_names, field_names};

    #[test]
    fn accept_rows_carry_exactly_their_columns() {
        assert_eq!(field_names(&EventRow::default()), column_names(&EVENT_COLUMNS));
        assert_eq!(field_names(&RunRow::default()), column_names(&RUN_COLUMNS));
    }
}
