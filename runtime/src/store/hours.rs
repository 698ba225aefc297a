//! Business hours: an account's named schedules of opening hours ([`crate::hours`]), stored as
//! their JSON definition and read back parsed.

use sqlx::FromRow;

use super::{Page, Store};
use crate::Result;
use crate::hours::BusinessHours;

const SELECT: &str = "SELECT id, account_id, name, definition, created_at, updated_at FROM business_hours";

/// A schedule of business hours as stored.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct BusinessHoursRow {
    /// Its id (time-ordered).
    pub id: String,
    /// Its account.
    pub account_id: String,
    /// Its name, unique in the account.
    pub name: String,
    /// The schedule as JSON (`BusinessHours::to_json`), valid when it was stored.
    pub definition: String,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last replaced (ms); the creation time until then.
    pub updated_at: i64,
}

impl BusinessHoursRow {
    /// The schedule, parsed. An error only if the stored JSON no longer parses (e.g. a timezone
    /// a newer time zone database dropped).
    pub fn business_hours(&self) -> Result<BusinessHours> {
        let json: serde_json::Value = serde_json::from_str(&self.definition)?;
        BusinessHours::parse(&json).map_err(|problems| {
            let found: Vec<String> = problems.into_iter().map(|(path, message)| format!("{path}: {message}")).collect();
            crate::Error::Json(serde::de::Error::custom(format!("business hours '{}' ({}): {}", self.name, self.id, found.join("; "))))
        })
    }
}

/// What replacing a schedule did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoursReplaced {
    /// Replaced: the row as it is now.
    Replaced(BusinessHoursRow),
    /// The account has no schedule of that name.
    NotFound,
    /// The new name is another schedule's in the account.
    NameTaken,
}

impl Store {
    /// Creates a schedule of business hours. False when the account already has one of that
    /// name.
    pub async fn create_business_hours(&self, row: &BusinessHoursRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO business_hours (id, account_id, name, definition, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, name) DO NOTHING",
        )
        .bind(&row.id)
        .bind(&row.account_id)
        .bind(&row.name)
        .bind(&row.definition)
        .bind(row.created_at)
        .bind(row.updated_at)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The account's schedules of business hours, oldest first.
    pub async fn list_business_hours(&self, account_id: &str, cursor: Option<&str>, limit: i64) -> Result<Page<BusinessHoursRow>> {
        let sql = format!("{SELECT} WHERE account_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3");
        let items = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(cursor).bind(limit + 1).fetch_all(&self.reader).await?;
        Ok(super::workflows::page(items, limit, |h: &BusinessHoursRow| h.id.clone()))
    }

    /// One of the account's schedules of business hours, by name, as stored.
    pub async fn business_hours_row(&self, account_id: &str, name: &str) -> Result<Option<BusinessHoursRow>> {
        let sql = format!("{SELECT} WHERE account_id = $1 AND name = $2");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(name).fetch_optional(&self.reader).await?)
    }

    /// One of the account's schedules of business hours, by name, parsed: what an IVR flow's
    /// `hours` node asks `is_open` and `next_change`.
    pub async fn business_hours(&self, account_id: &str, name: &str) -> Result<Option<BusinessHours>> {
        self.business_hours_row(account_id, name).await?.map(|row| row.business_hours()).transpose()
    }

    /// Replaces a schedule's definition and name (`new_name`, which may be its name).
    pub async fn replace_business_hours(&self, account_id: &str, name: &str, new_name: &str, definition: &str, now: i64) -> Result<HoursReplaced> {
        let replaced = sqlx::query_as(
            "UPDATE business_hours SET name = $3, definition = $4, updated_at = $5 WHERE account_id = $1 AND name = $2 \
             RETURNING id, account_id, name, definition, created_at, updated_at",
        )
        .bind(account_id)
        .bind(name)
        .bind(new_name)
        .bind(definition)
        .bind(now)
        .fetch_optional(&self.writer)
        .await;
        match replaced {
            Ok(Some(row)) => Ok(HoursReplaced::Replaced(row)),
            Ok(None) => Ok(HoursReplaced::NotFound),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(HoursReplaced::NameTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a schedule of business hours by name; its id, or `None` when the account has
    /// none of that name.
    pub async fn delete_business_hours(&self, account_id: &str, name: &str) -> Result<Option<String>> {
        let deleted = sqlx::query_scalar("DELETE FROM business_hours WHERE account_id = $1 AND name = $2 RETURNING id")
            .bind(account_id)
            .bind(name)
            .fetch_optional(&self.writer)
            .await?;
        Ok(deleted)
    }
}
