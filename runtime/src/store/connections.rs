//! Connections: vendor credentials of an account, stored sealed.

use sqlx::{Any, Transaction};

use super::{ConnectionRow, Dialect, OAuthStateRow, Page, Store};
use crate::Result;

const SELECT: &str = "SELECT id, account_id, provider, name, sandbox, sealed, created_at, settings, status FROM connections";

/// A connection's row held while its OAuth tokens are refreshed, so that one process at a time
/// refreshes it: on PostgreSQL a transaction holding the row `FOR UPDATE` (other processes wait,
/// then read the fresh tokens); on SQLite, the store of one process, nothing is held (the
/// caller's per-connection mutex is the lock, and holding SQLite's one writer connection across
/// an HTTP call would stall every write).
#[derive(Debug)]
pub struct ConnectionLock {
    tx: Option<Transaction<'static, Any>>,
    id: String,
    /// The sealed credentials as they are now, hex.
    pub sealed: String,
    /// The status as it is now.
    pub status: String,
}

impl ConnectionLock {
    /// Stores new sealed credentials (hex) and the status, and releases the row.
    pub async fn finish(mut self, store: &Store, sealed: &str, status: &str) -> Result<()> {
        let sql = "UPDATE connections SET sealed = $2, status = $3 WHERE id = $1";
        match self.tx.take() {
            Some(mut tx) => {
                sqlx::query(sql).bind(&self.id).bind(sealed).bind(status).execute(&mut *tx).await?;
                tx.commit().await?;
            }
            None => {
                sqlx::query(sql).bind(&self.id).bind(sealed).bind(status).execute(&store.writer).await?;
            }
        }
        Ok(())
    }

    /// Releases the row unchanged.
    pub async fn release(mut self) -> Result<()> {
        if let Some(tx) = self.tx.take() {
            tx.commit().await?;
        }
        Ok(())
    }
}

impl Store {
    /// Creates a connection. False when the account already has one of that name.
    pub async fn create_connection(&self, c: &ConnectionRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO connections (id, account_id, provider, name, sandbox, sealed, created_at, settings) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (account_id, name) DO NOTHING",
        )
        .bind(&c.id)
        .bind(&c.account_id)
        .bind(&c.provider)
        .bind(&c.name)
        .bind(c.sandbox)
        .bind(&c.sealed)
        .bind(c.created_at)
        .bind(&c.settings)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The account's connections, oldest first.
    pub async fn list_connections(&self, account_id: &str, cursor: Option<&str>, limit: i64) -> Result<Page<ConnectionRow>> {
        let sql = format!("{SELECT} WHERE account_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3");
        let items = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(cursor).bind(limit + 1).fetch_all(&self.reader).await?;
        Ok(super::workflows::page(items, limit, |c: &ConnectionRow| c.id.clone()))
    }

    /// One of the account's connections, by id.
    pub async fn connection(&self, account_id: &str, id: &str) -> Result<Option<ConnectionRow>> {
        let sql = format!("{SELECT} WHERE account_id = $1 AND id = $2");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(id).fetch_optional(&self.reader).await?)
    }

    /// A connection by id alone, for vendor callbacks (which carry no account key: the caller
    /// must verify the vendor's signature with the connection's credentials before trusting it).
    pub async fn connection_by_id(&self, id: &str) -> Result<Option<ConnectionRow>> {
        let sql = format!("{SELECT} WHERE id = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.reader).await?)
    }

    /// The account's connections of these providers (all of them when `name` is `None`, else
    /// the one of that name): what a step chooses from.
    pub async fn connections_for(&self, account_id: &str, providers: &[&str], name: Option<&str>) -> Result<Vec<ConnectionRow>> {
        let sql = format!("{SELECT} WHERE account_id = $1 AND ($2 IS NULL OR name = $2) ORDER BY id");
        let rows: Vec<ConnectionRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(name).fetch_all(&self.reader).await?;
        Ok(rows.into_iter().filter(|c| providers.contains(&c.provider.as_str())).collect())
    }

    /// Changes a connection's settings and sandbox flag. False when the account has none with
    /// that id.
    pub async fn update_connection(&self, account_id: &str, id: &str, settings: &str, sandbox: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE connections SET settings = $3, sandbox = $4 WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .bind(settings)
            .bind(sandbox)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Holds connection `id` for a token refresh (see [`ConnectionLock`]); `None` when it is gone.
    pub async fn lock_connection(&self, id: &str) -> Result<Option<ConnectionLock>> {
        match self.dialect {
            Dialect::Postgres => {
                let mut tx = self.writer.begin().await?;
                let row: Option<(String, String)> =
                    sqlx::query_as("SELECT sealed, status FROM connections WHERE id = $1 FOR UPDATE").bind(id).fetch_optional(&mut *tx).await?;
                Ok(row.map(|(sealed, status)| ConnectionLock { tx: Some(tx), id: id.to_owned(), sealed, status }))
            }
            Dialect::Sqlite => {
                let row: Option<(String, String)> =
                    sqlx::query_as("SELECT sealed, status FROM connections WHERE id = $1").bind(id).fetch_optional(&self.writer).await?;
                Ok(row.map(|(sealed, status)| ConnectionLock { tx: None, id: id.to_owned(), sealed, status }))
            }
        }
    }

    /// Stores credentials authorized again (OAuth) on an existing connection, marking it `ok`.
    pub async fn reauthorize_connection(&self, account_id: &str, id: &str, sealed: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE connections SET sealed = $3, status = 'ok' WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .bind(sealed)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records an OAuth authorization request in flight; expired ones are swept on the way.
    pub async fn create_oauth_state(&self, row: &OAuthStateRow) -> Result<()> {
        sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1").bind(row.created_at).execute(&self.writer).await?;
        sqlx::query("INSERT INTO oauth_states (state_hash, account_id, provider, name, verifier, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&row.state_hash)
            .bind(&row.account_id)
            .bind(&row.provider)
            .bind(&row.name)
            .bind(&row.verifier)
            .bind(row.expires_at)
            .bind(row.created_at)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Takes (deletes and answers) the authorization request of `state_hash`: each is used at
    /// most once, however many callbacks race for it. The caller checks expiry and account.
    pub async fn take_oauth_state(&self, state_hash: &str) -> Result<Option<OAuthStateRow>> {
        Ok(sqlx::query_as(
            "DELETE FROM oauth_states WHERE state_hash = $1 \
             RETURNING state_hash, account_id, provider, name, verifier, expires_at, created_at",
        )
        .bind(state_hash)
        .fetch_optional(&self.writer)
        .await?)
    }

    /// Deletes a connection. False when the account has none with that id.
    pub async fn delete_connection(&self, account_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM connections WHERE account_id = $1 AND id = $2").bind(account_id).bind(id).execute(&self.writer).await?;
        Ok(done.rows_affected() == 1)
    }
}
