//! Accounts and API keys.
//!
//! A key is stored as its hash under an id; revoking a key deletes its row, so a lookup by hash
//! can only find live keys. Nothing caches keys: a revoked key is refused by every process from
//! the next request on.

use sqlx::FromRow;

use super::workflows::page;
use super::{Account, AccountKeys, ApiKey, KeyHolder, Page, Store};
use crate::Result;

/// A key lookup's row: the account's columns and the key's.
#[derive(FromRow)]
struct KeyHolderRow {
    id: String,
    name: String,
    plan: String,
    timezone: String,
    created_at: i64,
    contact_rules: Option<String>,
    key_id: String,
    key_created_at: i64,
    key_last_used_at: Option<i64>,
}

const KEY_COLUMNS: &str = "id, account_id, created_at, last_used_at";

impl Store {
    /// Creates an account and its first API key (stored as a hash, under `key_id`).
    pub async fn create_account(&self, account: &Account, key_id: &str, key_hash: &str) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("INSERT INTO accounts (id, name, plan, timezone, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&account.id)
            .bind(&account.name)
            .bind(&account.plan)
            .bind(&account.timezone)
            .bind(account.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO api_keys (id, key_hash, account_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(key_id)
            .bind(key_hash)
            .bind(&account.id)
            .bind(account.created_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds an API key to an account; false if there is no such account (nothing is written).
    pub async fn add_api_key(&self, account_id: &str, key_id: &str, key_hash: &str, now: i64) -> Result<bool> {
        // One statement, so an account cannot vanish between a check and the insert.
        let done = sqlx::query("INSERT INTO api_keys (id, key_hash, account_id, created_at) SELECT $1, $2, id, $4 FROM accounts WHERE id = $3")
            .bind(key_id)
            .bind(key_hash)
            .bind(account_id)
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes (deletes) an account's API key; false if the account has no key with that id.
    /// Revoking an account's last key is allowed: the admin can add a new one.
    pub async fn revoke_api_key(&self, account_id: &str, key_id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM api_keys WHERE id = $1 AND account_id = $2").bind(key_id).bind(account_id).execute(&self.writer).await?;
        Ok(done.rows_affected() == 1)
    }

    /// The account a live API key (by hash) belongs to, with the key's record.
    pub async fn account_by_key_hash(&self, key_hash: &str) -> Result<Option<KeyHolder>> {
        let row: Option<KeyHolderRow> = sqlx::query_as(
            "SELECT a.id, a.name, a.plan, a.timezone, a.created_at, a.contact_rules, k.id AS key_id, k.created_at AS key_created_at, \
             k.last_used_at AS key_last_used_at FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.key_hash = $1",
        )
        .bind(key_hash)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|r| KeyHolder {
            key: ApiKey { id: r.key_id, account_id: r.id.clone(), created_at: r.key_created_at, last_used_at: r.key_last_used_at },
            account: Account { id: r.id, name: r.name, plan: r.plan, timezone: r.timezone, created_at: r.created_at, contact_rules: r.contact_rules },
        }))
    }

    /// Records that a key was used at `now`, unless it was recorded at or after `stale_before`
    /// (so a busy key costs one write a period, not one a request).
    pub async fn touch_api_key(&self, key_id: &str, now: i64, stale_before: i64) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)")
            .bind(key_id)
            .bind(now)
            .bind(stale_before)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// An account by id.
    pub async fn account(&self, id: &str) -> Result<Option<Account>> {
        Ok(sqlx::query_as("SELECT id, name, plan, timezone, created_at, contact_rules FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?)
    }

    /// Every account with its keys, newest account first (admin).
    pub async fn list_accounts(&self, cursor: Option<&str>, limit: i64) -> Result<Page<AccountKeys>> {
        let accounts: Vec<Account> =
            sqlx::query_as("SELECT id, name, plan, timezone, created_at, contact_rules FROM accounts WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2")
                .bind(cursor)
                .bind(limit + 1)
                .fetch_all(&self.reader)
                .await?;
        let accounts = page(accounts, limit, |a| a.id.clone());
        let (Some(newest), Some(oldest)) = (accounts.items.first(), accounts.items.last()) else {
            return Ok(Page { items: Vec::new(), next_cursor: None });
        };
        // A page is a contiguous range of account ids: its keys are the keys in that range.
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id >= $1 AND account_id <= $2 ORDER BY account_id, created_at, id");
        let keys: Vec<ApiKey> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(&oldest.id).bind(&newest.id).fetch_all(&self.reader).await?;
        let items = accounts
            .items
            .into_iter()
            .map(|account| {
                let keys = keys.iter().filter(|k| k.account_id == account.id).cloned().collect();
                AccountKeys { account, keys }
            })
            .collect();
        Ok(Page { items, next_cursor: accounts.next_cursor })
    }
}
