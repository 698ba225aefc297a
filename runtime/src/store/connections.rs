//! Connections: vendor credentials of an account, stored sealed.

use super::{ConnectionRow, Page, Store};
use crate::Result;

const SELECT: &str = "SELECT id, account_id, provider, name, sandbox, sealed, created_at, settings FROM connections";

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

    /// Deletes a connection. False when the account has none with that id.
    pub async fn delete_connection(&self, account_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM connections WHERE account_id = $1 AND id = $2").bind(account_id).bind(id).execute(&self.writer).await?;
        Ok(done.rows_affected() == 1)
    }
}
