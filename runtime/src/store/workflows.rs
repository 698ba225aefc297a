//! Workflows and their versions. An edit writes a new version; runs keep the version they began
//! with, because a run row names its version and versions are never changed.

use super::{Dialect, HookTarget, Page, Store, WorkflowRow, WorkflowWrite};
use crate::Result;

const SELECT: &str = "SELECT w.id, w.account_id, w.name, w.enabled, w.version, w.trigger_kind, w.event_type, \
     w.webhook_token, v.definition, w.created_at, w.updated_at FROM workflows w \
     JOIN workflow_versions v ON v.workflow_id = w.id AND v.version = w.version";

impl Store {
    /// Creates a workflow at version 1.
    pub async fn create_workflow(&self, w: &WorkflowWrite) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO workflows (id, account_id, name, enabled, version, trigger_kind, event_type, webhook_token, \
             deleted, created_at, updated_at, template) VALUES ($1, $2, $3, $4, 1, $5, $6, $7, 0, $8, $8, $9)",
        )
        .bind(&w.id)
        .bind(&w.account_id)
        .bind(&w.name)
        .bind(w.enabled as i64)
        .bind(&w.trigger_kind)
        .bind(&w.event_type)
        .bind(&w.webhook_token)
        .bind(w.now)
        .bind(&w.template)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO workflow_versions (workflow_id, version, definition, created_at) VALUES ($1, 1, $2, $3)")
            .bind(&w.id)
            .bind(&w.definition)
            .bind(w.now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes a new version of an existing workflow; `None` if there is no such workflow in the
    /// account. A workflow that had a webhook token keeps it.
    pub async fn update_workflow(&self, w: &WorkflowWrite) -> Result<Option<i64>> {
        let mut tx = self.writer.begin().await?;
        let version: Option<(i64,)> = sqlx::query_as(
            "UPDATE workflows SET name = $3, enabled = $4, version = version + 1, trigger_kind = $5, event_type = $6, \
             webhook_token = COALESCE(webhook_token, $7), updated_at = $8 \
             WHERE id = $1 AND account_id = $2 AND deleted = 0 RETURNING version",
        )
        .bind(&w.id)
        .bind(&w.account_id)
        .bind(&w.name)
        .bind(w.enabled as i64)
        .bind(&w.trigger_kind)
        .bind(&w.event_type)
        .bind(&w.webhook_token)
        .bind(w.now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((version,)) = version else { return Ok(None) };
        sqlx::query("INSERT INTO workflow_versions (workflow_id, version, definition, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&w.id)
            .bind(version)
            .bind(&w.definition)
            .bind(w.now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(version))
    }

    /// Switches a workflow's triggers on or off; false if there is no such workflow.
    pub async fn set_workflow_enabled(&self, account_id: &str, id: &str, enabled: bool, now: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE workflows SET enabled = $3, updated_at = $4 WHERE id = $1 AND account_id = $2 AND deleted = 0")
            .bind(id)
            .bind(account_id)
            .bind(enabled as i64)
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a workflow (its runs and versions stay readable); false if there is none.
    pub async fn delete_workflow(&self, account_id: &str, id: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE workflows SET deleted = 1, enabled = 0, webhook_token = NULL, updated_at = $3 \
             WHERE id = $1 AND account_id = $2 AND deleted = 0",
        )
        .bind(id)
        .bind(account_id)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A workflow of the account.
    pub async fn workflow(&self, account_id: &str, id: &str) -> Result<Option<WorkflowRow>> {
        let sql = format!("{SELECT} WHERE w.id = $1 AND w.account_id = $2 AND w.deleted = 0");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).bind(account_id).fetch_optional(&self.reader).await?)
    }

    /// The account's workflows, newest first.
    pub async fn list_workflows(&self, account_id: &str, cursor: Option<&str>, limit: i64) -> Result<Page<WorkflowRow>> {
        let sql = format!("{SELECT} WHERE w.account_id = $1 AND w.deleted = 0 AND ($2 IS NULL OR w.id < $2) ORDER BY w.id DESC LIMIT $3");
        let items: Vec<WorkflowRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(cursor).bind(limit + 1).fetch_all(&self.reader).await?;
        Ok(page(items, limit, |w| w.id.clone()))
    }

    /// The workflow behind a webhook token.
    pub async fn workflow_by_token(&self, token: &str) -> Result<Option<HookTarget>> {
        Ok(sqlx::query_as("SELECT id, account_id, enabled, version, trigger_kind FROM workflows WHERE webhook_token = $1 AND deleted = 0")
            .bind(token)
            .fetch_optional(&self.reader)
            .await?)
    }

    /// The account's enabled workflows triggered by an event type.
    pub async fn workflows_for_event(&self, account_id: &str, event_type: &str) -> Result<Vec<WorkflowRow>> {
        let sql = format!(
            "{SELECT} WHERE w.account_id = $1 AND w.event_type = $2 AND w.trigger_kind = 'event' \
             AND w.enabled = 1 AND w.deleted = 0"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(event_type).fetch_all(&self.reader).await?)
    }

    /// The enabled workflows of an account whose trigger is of `kind` (e.g. `stripe`); the
    /// caller matches each one's trigger.
    pub async fn workflows_with_trigger(&self, account_id: &str, kind: &str) -> Result<Vec<WorkflowRow>> {
        let sql = format!("{SELECT} WHERE w.account_id = $1 AND w.trigger_kind = $2 AND w.enabled = 1 AND w.deleted = 0");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(kind).fetch_all(&self.reader).await?)
    }

    /// One version's definition (JSON). Versions never change, so callers may cache it.
    pub async fn workflow_version(&self, workflow_id: &str, version: i64) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT definition FROM workflow_versions WHERE workflow_id = $1 AND version = $2")
            .bind(workflow_id)
            .bind(version)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| r.0))
    }

    /// The live (not deleted) workflow of the account made from a template, if any (the oldest).
    pub async fn workflow_from_template(&self, account_id: &str, template: &str) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT id FROM workflows WHERE account_id = $1 AND template = $2 AND deleted = 0 ORDER BY id LIMIT 1")
            .bind(account_id)
            .bind(template)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| r.0))
    }

    /// Versions whose definition holds a webhook secret as text (written before secrets were
    /// sealed): `(workflow_id, version, definition)`.
    pub async fn versions_with_plain_webhook_secrets(&self) -> Result<Vec<(String, i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT v.workflow_id, v.version, v.definition FROM workflow_versions v \
             JOIN workflows w ON w.id = v.workflow_id \
             WHERE w.trigger_kind = 'webhook' AND v.definition LIKE '%\"secret\":\"%'",
        )
        .fetch_all(&self.reader)
        .await?)
    }

    /// Rewrites a version's stored document in place. Only for changes that keep its meaning
    /// (sealing a secret): versions are otherwise immutable. On SQLite the old text is also
    /// scrubbed from the file: overwritten with zeros (`secure_delete`) and checkpointed out of
    /// the write-ahead log.
    pub async fn rewrite_version(&self, workflow_id: &str, version: i64, definition: &str) -> Result<()> {
        let mut conn = self.writer.acquire().await?;
        let sqlite = matches!(self.dialect, Dialect::Sqlite);
        if sqlite {
            sqlx::query("PRAGMA secure_delete = ON").execute(&mut *conn).await?;
        }
        let updated = sqlx::query("UPDATE workflow_versions SET definition = $1 WHERE workflow_id = $2 AND version = $3")
            .bind(definition)
            .bind(workflow_id)
            .bind(version)
            .execute(&mut *conn)
            .await;
        if sqlite {
            sqlx::query("PRAGMA secure_delete = OFF").execute(&mut *conn).await?;
            updated?;
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut *conn).await?;
        } else {
            updated?;
        }
        Ok(())
    }
}

/// Cuts a `limit + 1` fetch into a page and its next cursor.
pub(crate) fn page<T>(mut items: Vec<T>, limit: i64, cursor: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next_cursor }
}
