//! What billing jobs keep in the store: the Stripe customer each account's usage is reported to,
//! and named cursors recording how far a job has read the ledger (by `seq`).
//!
//! A job pages the ledger with [`Store::usage_page`] after its cursor, looks up the customers of
//! the page's accounts with [`Store::stripe_customers`], and moves its cursor with
//! [`Store::set_sync_cursor`] as it goes, so a restart resumes where it stopped.

use std::collections::HashMap;

use super::Store;
use crate::Result;

impl Store {
    /// Sets (or, with `None`, clears) the Stripe customer an account's usage is reported to.
    /// Returns false when the account does not exist.
    pub async fn set_stripe_customer(&self, account_id: &str, customer_id: Option<&str>) -> Result<bool> {
        let done = sqlx::query("UPDATE accounts SET stripe_customer_id = $2 WHERE id = $1").bind(account_id).bind(customer_id).execute(&self.writer).await?;
        Ok(done.rows_affected() > 0)
    }

    /// The Stripe customer of an account, if it has one (`None` too for an unknown account).
    pub async fn stripe_customer(&self, account_id: &str) -> Result<Option<String>> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT stripe_customer_id FROM accounts WHERE id = $1").bind(account_id).fetch_optional(&self.reader).await?;
        Ok(row.and_then(|(customer,)| customer))
    }

    /// The Stripe customers of those of `account_ids` that have one, by account id. Accounts
    /// without a customer (or unknown) are absent from the map.
    pub async fn stripe_customers(&self, account_ids: &[&str]) -> Result<HashMap<String, String>> {
        let mut customers = HashMap::new();
        // Bounded chunks keep the statement's parameter count well under both databases' limits.
        for chunk in account_ids.chunks(500) {
            let placeholders = (1..=chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "SELECT id, stripe_customer_id FROM accounts \
                 WHERE id IN ({placeholders}) AND stripe_customer_id IS NOT NULL"
            );
            let mut query = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            customers.extend(query.fetch_all(&self.reader).await?);
        }
        Ok(customers)
    }

    /// The ledger `seq` the job `name` has handled up to (0 when it has not started).
    pub async fn sync_cursor(&self, name: &str) -> Result<i64> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT after_seq FROM sync_cursors WHERE name = $1").bind(name).fetch_optional(&self.reader).await?;
        Ok(row.map_or(0, |(after,)| after))
    }

    /// Records that the job `name` has handled the ledger up to `after_seq`.
    ///
    /// The cursor only moves forward: should two passes of the same job overlap (two processes
    /// on one PostgreSQL), the one that is behind cannot move it back.
    pub async fn set_sync_cursor(&self, name: &str, after_seq: i64, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO sync_cursors (name, after_seq, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET after_seq = excluded.after_seq, updated_at = excluded.updated_at \
             WHERE sync_cursors.after_seq < excluded.after_seq",
        )
        .bind(name)
        .bind(after_seq)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}
