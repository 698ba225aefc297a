//! Schedule rows: when each scheduled workflow ticks next.

use super::Store;
use crate::Result;

/// A schedule taken by a scheduler pass.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq, Eq)]
pub struct DueSchedule {
    /// The workflow.
    pub workflow_id: String,
    /// Its account.
    pub account_id: String,
    /// The first tick not yet fired (ms).
    pub next_tick: i64,
}

impl Store {
    /// Sets a workflow's next tick (creating its schedule row), due at that tick.
    pub async fn upsert_schedule(&self, workflow_id: &str, account_id: &str, next_tick: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO schedules (workflow_id, account_id, next_tick, due_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (workflow_id) DO UPDATE SET next_tick = $3, due_at = $3",
        )
        .bind(workflow_id)
        .bind(account_id)
        .bind(next_tick)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Removes a workflow's schedule (disabled, deleted, or no longer scheduled).
    pub async fn delete_schedule(&self, workflow_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM schedules WHERE workflow_id = $1").bind(workflow_id).execute(&self.writer).await?;
        Ok(())
    }

    /// Takes up to `limit` schedules due at `now`, holding them until `lease_until`. Two passes
    /// (two processes) never take the same row at once; a pass that dies leaves its rows due
    /// again at `lease_until`.
    pub async fn claim_schedules(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<DueSchedule>> {
        let lock = match self.dialect {
            super::Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            super::Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE schedules SET due_at = $1 WHERE workflow_id IN \
             (SELECT workflow_id FROM schedules WHERE due_at <= $2 ORDER BY due_at LIMIT $3{lock}) \
             RETURNING workflow_id, account_id, next_tick"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(lease_until).bind(now).bind(limit).fetch_all(&self.writer).await?)
    }

    /// Moves a claimed schedule on to its next tick, if the claim still holds (`leased_until`).
    pub async fn advance_schedule(&self, workflow_id: &str, leased_until: i64, next_tick: i64) -> Result<()> {
        sqlx::query("UPDATE schedules SET next_tick = $3, due_at = $3 WHERE workflow_id = $1 AND due_at = $2")
            .bind(workflow_id)
            .bind(leased_until)
            .bind(next_tick)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
