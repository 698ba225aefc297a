//! The outbox: what sandbox connections and test runs would have sent.

use sqlx::{Any, Transaction};

use super::{Completion, NewOutbox, OutboxRow, Page, Store};
use crate::Result;

/// Records a sandbox send with the completion of its step; a replayed completion adds nothing.
pub(super) async fn insert(tx: &mut Transaction<'static, Any>, c: &Completion, o: &NewOutbox) -> Result<()> {
    sqlx::query(
        "INSERT INTO outbox (id, account_id, run_id, step_seq, step_id, kind, connection_name, recipient, rendered, \
         usage, is_test, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (run_id, step_seq) DO NOTHING",
    )
    .bind(&o.id)
    .bind(&c.account_id)
    .bind(&c.run_id)
    .bind(c.step.seq)
    .bind(&c.step.step_id)
    .bind(&o.kind)
    .bind(&o.connection_name)
    .bind(&o.recipient)
    .bind(&o.rendered)
    .bind(&o.usage)
    .bind(o.is_test as i64)
    .bind(c.now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// The account's outbox, oldest first; only one run's messages when `run_id` is given.
    pub async fn outbox(&self, account_id: &str, run_id: Option<&str>, cursor: Option<&str>, limit: i64) -> Result<Page<OutboxRow>> {
        let items = sqlx::query_as(
            "SELECT id, run_id, step_seq, step_id, kind, connection_name, recipient, rendered, usage, is_test, created_at \
             FROM outbox WHERE account_id = $1 AND ($2 IS NULL OR run_id = $2) AND ($3 IS NULL OR id > $3) \
             ORDER BY id LIMIT $4",
        )
        .bind(account_id)
        .bind(run_id)
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(&self.reader)
        .await?;
        Ok(super::workflows::page(items, limit, |o: &OutboxRow| o.id.clone()))
    }
}
