//! Accounts and API keys.

use super::{Account, Store};
use crate::Result;

impl Store {
    /// Creates an account and its first API key (stored as a hash).
    pub async fn create_account(&self, account: &Account, key_hash: &str) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("INSERT INTO accounts (id, name, plan, timezone, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&account.id)
            .bind(&account.name)
            .bind(&account.plan)
            .bind(&account.timezone)
            .bind(account.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO api_keys (key_hash, account_id, created_at) VALUES ($1, $2, $3)")
            .bind(key_hash)
            .bind(&account.id)
            .bind(account.created_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The account an API key (by hash) belongs to.
    pub async fn account_by_key_hash(&self, key_hash: &str) -> Result<Option<Account>> {
        Ok(sqlx::query_as(
            "SELECT a.id, a.name, a.plan, a.timezone, a.created_at FROM api_keys k \
             JOIN accounts a ON a.id = k.account_id WHERE k.key_hash = $1",
        )
        .bind(key_hash)
        .fetch_optional(&self.reader)
        .await?)
    }

    /// An account by id.
    pub async fn account(&self, id: &str) -> Result<Option<Account>> {
        Ok(sqlx::query_as("SELECT id, name, plan, timezone, created_at FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?)
    }
}
