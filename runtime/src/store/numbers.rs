//! Phone numbers: which workflow answers a call to an account's Twilio number.

use sqlx::FromRow;

use super::{Page, Store};
use crate::Result;

/// A phone number bound to a workflow.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct NumberRow {
    /// Its id.
    pub id: String,
    /// Its account.
    pub account_id: String,
    /// The Twilio connection calls to it arrive through.
    pub connection_id: String,
    /// The number, E.164.
    pub number: String,
    /// The workflow that answers it.
    pub workflow_id: String,
    /// Creation time (ms).
    pub created_at: i64,
}

const SELECT: &str = "SELECT id, account_id, connection_id, number, workflow_id, created_at FROM phone_numbers";

impl Store {
    /// Binds a number. False when the number is bound already (in any account).
    pub async fn create_number(&self, n: &NumberRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO phone_numbers (id, account_id, connection_id, number, workflow_id, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (number) DO NOTHING",
        )
        .bind(&n.id)
        .bind(&n.account_id)
        .bind(&n.connection_id)
        .bind(&n.number)
        .bind(&n.workflow_id)
        .bind(n.created_at)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The account's numbers, oldest first.
    pub async fn list_numbers(&self, account_id: &str, cursor: Option<&str>, limit: i64) -> Result<Page<NumberRow>> {
        let sql = format!("{SELECT} WHERE account_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3");
        let items = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(cursor).bind(limit + 1).fetch_all(&self.reader).await?;
        Ok(super::workflows::page(items, limit, |n: &NumberRow| n.id.clone()))
    }

    /// One of the account's numbers.
    pub async fn number(&self, account_id: &str, id: &str) -> Result<Option<NumberRow>> {
        let sql = format!("{SELECT} WHERE account_id = $1 AND id = $2");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(id).fetch_optional(&self.reader).await?)
    }

    /// The number a call through `connection_id` was made to, for the inbound webhook.
    pub async fn number_called(&self, connection_id: &str, number: &str) -> Result<Option<NumberRow>> {
        let sql = format!("{SELECT} WHERE connection_id = $1 AND number = $2");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(connection_id).bind(number).fetch_optional(&self.reader).await?)
    }

    /// Binds a number to another workflow. False when the account has no such number.
    pub async fn rebind_number(&self, account_id: &str, id: &str, workflow_id: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE phone_numbers SET workflow_id = $3 WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .bind(workflow_id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Unbinds a number. False when the account has no such number.
    pub async fn delete_number(&self, account_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM phone_numbers WHERE account_id = $1 AND id = $2").bind(account_id).bind(id).execute(&self.writer).await?;
        Ok(done.rows_affected() == 1)
    }
}
