//! Fan-out: the child runs of a `for_each` step. All children are written when the step starts
//! (in the transaction that makes it wait), each with its item in its context; the first
//! `concurrency` get a queue row. The transaction that ends a child admits the next one (a
//! queue row for the child at `fan_outs.next_index`) and, when none is left, wakes the parent.
//! Admission rides on commits that happen anyway, so a crash can neither admit a child twice
//! (its queue row is inserted once, in one transaction with the counter) nor lose one.

use sqlx::{Any, Transaction};

use super::runs::{UsageInsert, insert_usage, values};
use super::{Completion, FanOutSummary, Spawn, Store};
use crate::Result;
use crate::status::RunStatus;

/// Children written a statement at a time.
const CHUNK: usize = 100;

/// How many child ids a summary names.
pub(super) const SUMMARY_IDS: i64 = 1_000;

/// Writes a fan-out's children, their charges and its counter, and admits the first
/// `spawn.admit` of them.
pub(super) async fn spawn(tx: &mut Transaction<'static, Any>, c: &Completion, s: &Spawn) -> Result<()> {
    for chunk in s.children.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO runs (id, account_id, workflow_id, version, status, event_id, event, context, error, is_test, \
             step_index, step_seq, created_at, started_at, finished_at, parent_run_id, parent_seq, item_index) VALUES {}",
            values("(?, ?, ?, ?, 'queued', ?, ?, ?, NULL, ?, 0, 1, ?, NULL, NULL, ?, ?, ?)", chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for child in chunk {
            q = q.bind(&child.id).bind(&c.account_id).bind(&c.workflow_id).bind(s.version).bind(&s.event_id).bind(&s.event);
            q = q.bind(&child.context).bind(s.is_test as i64).bind(c.now).bind(&c.run_id).bind(s.parent_seq).bind(child.item_index);
        }
        q.execute(&mut **tx).await?;
        let charges: Vec<UsageInsert<'_>> =
            chunk.iter().filter_map(|ch| ch.usage.as_ref().map(|u| (c.account_id.as_str(), c.workflow_id.as_str(), ch.id.as_str(), u, c.now))).collect();
        insert_usage(tx, &charges).await?;
    }
    let admitted = &s.children[..s.admit.min(s.children.len())];
    for chunk in admitted.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO run_queue (run_id, account_id, due_at, step_index, step_seq, attempt, lease_token, dispatching) VALUES {}",
            values("(?, ?, ?, 0, 1, 0, NULL, 0)", chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for child in chunk {
            q = q.bind(&child.id).bind(&c.account_id).bind(c.now);
        }
        q.execute(&mut **tx).await?;
    }
    sqlx::query(
        "INSERT INTO fan_outs (parent_run_id, parent_seq, account_id, total, next_index, remaining) VALUES ($1, $2, $3, $4, $5, $4) \
         ON CONFLICT (parent_run_id, parent_seq) DO NOTHING",
    )
    .bind(&c.run_id)
    .bind(s.parent_seq)
    .bind(&c.account_id)
    .bind(s.children.len() as i64)
    .bind(admitted.len() as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A child of `(parent, parent_seq)` ended (in this transaction): one fewer remains; when it held
/// a slot (`admit`), the next child not ended is admitted in its place; when none remains, the
/// parent is due now. The counter's row is updated first, so siblings ending at once queue up
/// behind each other here.
pub(super) async fn child_ended(tx: &mut Transaction<'static, Any>, parent: &str, parent_seq: i64, admit: bool, now: i64) -> Result<()> {
    sqlx::query("UPDATE fan_outs SET remaining = remaining - 1 WHERE parent_run_id = $1 AND parent_seq = $2 AND remaining > 0")
        .bind(parent)
        .bind(parent_seq)
        .execute(&mut **tx)
        .await?;
    let Some((total, mut next, remaining)): Option<(i64, i64, i64)> =
        sqlx::query_as("SELECT total, next_index, remaining FROM fan_outs WHERE parent_run_id = $1 AND parent_seq = $2")
            .bind(parent)
            .bind(parent_seq)
            .fetch_optional(&mut **tx)
            .await?
    else {
        return Ok(());
    };
    // A child cancelled before its turn has no queue row to take: the next one is tried.
    while admit && next < total {
        next += 1;
        sqlx::query("UPDATE fan_outs SET next_index = $3 WHERE parent_run_id = $1 AND parent_seq = $2")
            .bind(parent)
            .bind(parent_seq)
            .bind(next)
            .execute(&mut **tx)
            .await?;
        let admitted = sqlx::query(
            "INSERT INTO run_queue (run_id, account_id, due_at, step_index, step_seq, attempt, lease_token, dispatching) \
             SELECT id, account_id, $4, 0, 1, 0, NULL, 0 FROM runs WHERE parent_run_id = $1 AND parent_seq = $2 AND item_index = $3 AND status = $5 \
             ON CONFLICT (run_id) DO NOTHING",
        )
        .bind(parent)
        .bind(parent_seq)
        .bind(next - 1)
        .bind(now)
        .bind(RunStatus::Queued)
        .execute(&mut **tx)
        .await?;
        if admitted.rows_affected() == 1 {
            break;
        }
    }
    if remaining == 0 {
        sqlx::query("UPDATE run_queue SET due_at = $2 WHERE run_id = $1 AND lease_token IS NULL").bind(parent).bind(now).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Cancels the children of a run that have not ended (its cancel cascades), in the cancel's
/// transaction: their queue rows go (a child in the middle of a step finishes that step only,
/// its completion then finds no row), their waits and pending executions end.
pub(super) async fn cancel_children(tx: &mut Transaction<'static, Any>, parent: &str, now: i64) -> Result<()> {
    sqlx::query("DELETE FROM run_queue WHERE run_id IN (SELECT id FROM runs WHERE parent_run_id = $1)").bind(parent).execute(&mut **tx).await?;
    sqlx::query("DELETE FROM waits WHERE run_id IN (SELECT id FROM runs WHERE parent_run_id = $1)").bind(parent).execute(&mut **tx).await?;
    sqlx::query("UPDATE runs SET status = $3, finished_at = $2 WHERE parent_run_id = $1 AND status NOT IN ($4, $5, $3)")
        .bind(parent)
        .bind(now)
        .bind(RunStatus::Cancelled)
        .bind(RunStatus::Succeeded)
        .bind(RunStatus::Failed)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE fan_outs SET remaining = 0, next_index = total WHERE parent_run_id = $1").bind(parent).execute(&mut **tx).await?;
    Ok(())
}

impl Store {
    /// How the children of a fan-out stand, with the first [`SUMMARY_IDS`] ids.
    pub async fn fan_out_summary(&self, parent: &str, parent_seq: i64) -> Result<FanOutSummary> {
        let rows: Vec<(RunStatus, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM runs WHERE parent_run_id = $1 AND parent_seq = $2 GROUP BY status")
            .bind(parent)
            .bind(parent_seq)
            .fetch_all(&self.reader)
            .await?;
        let mut s = FanOutSummary::default();
        for (status, n) in rows {
            s.total += n;
            match status {
                RunStatus::Succeeded => s.succeeded += n,
                RunStatus::Failed => s.failed += n,
                RunStatus::Cancelled => s.cancelled += n,
                _ => s.active += n,
            }
        }
        let ids: Vec<(String,)> = sqlx::query_as("SELECT id FROM runs WHERE parent_run_id = $1 AND parent_seq = $2 ORDER BY item_index LIMIT $3")
            .bind(parent)
            .bind(parent_seq)
            .bind(SUMMARY_IDS)
            .fetch_all(&self.reader)
            .await?;
        s.children = ids.into_iter().map(|r| r.0).collect();
        Ok(s)
    }

    /// The children of a run that are in the queue (admitted, not ended), for driving a test run.
    pub async fn queued_children(&self, parent: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT q.run_id FROM run_queue q JOIN runs r ON r.id = q.run_id WHERE r.parent_run_id = $1 ORDER BY r.item_index")
                .bind(parent)
                .fetch_all(&self.reader)
                .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}
