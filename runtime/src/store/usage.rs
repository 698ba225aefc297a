//! Reading the usage ledger: the sequencer that makes `seq` safe to page by, the raw pages,
//! aggregates and period totals.
//!
//! Why a sequencer: with a sequence assigned at insert, transaction A can take seq 9, B seq 10,
//! and B commit first; a reader that saw 10 and asks for `seq > 10` would never see 9. So rows
//! are inserted with `seq` NULL and [`Store::sequence_ledger`] numbers the committed ones,
//! serialised, above the highest number so far: a row that commits late gets a later number.

use sqlx::FromRow;

use super::runs::USAGE_COLUMNS;
use super::{Dialect, Store, UsageRow};
use crate::Result;

/// Rows numbered per sequencer pass.
const SEQUENCE_BATCH: u64 = 10_000;

/// An arbitrary, fixed key for the PostgreSQL advisory lock that serialises sequencer passes.
const SEQUENCER_LOCK: i64 = 0x5357_4c45_4447; // "SWLEDG"

/// How aggregates are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    /// By unit (`sms_segment`, …).
    Unit,
    /// By local day (`YYYY-MM-DD`, account timezone) and unit: units are never added together.
    Day,
    /// By workflow id (with the workflow's name).
    Workflow,
}

/// One aggregate row.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct UsageTotal {
    /// The group's key: the unit, the day or the workflow id. By day, one day has a row per
    /// unit, so `(key, unit)` identifies a row.
    pub key: String,
    /// The local day ([`UsageGroup::Day`] only).
    #[sqlx(default)]
    pub day: Option<String>,
    /// The unit ([`UsageGroup::Day`] only; by unit it is the key).
    #[sqlx(default)]
    pub unit: Option<String>,
    /// The workflow's name ([`UsageGroup::Workflow`] only): also a deleted workflow's, whose
    /// record stays; `None` when no workflow of the account has that id.
    #[sqlx(default)]
    pub name: Option<String>,
    /// Units consumed.
    pub quantity: i64,
    /// Tokens, thousandths.
    pub tokens_milli: i64,
    /// Cost, millionths of a dollar.
    pub cost_micros: i64,
}

/// One aggregate row of an account (admin view).
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct AccountUsage {
    /// The account.
    pub account_id: String,
    /// The unit.
    pub unit: String,
    /// Units consumed.
    pub quantity: i64,
    /// Tokens, thousandths.
    pub tokens_milli: i64,
    /// Cost, millionths of a dollar.
    pub cost_micros: i64,
}

/// A day range, `from` inclusive and `to` exclusive, as local dates (`YYYY-MM-DD`).
#[derive(Debug, Clone, Default)]
pub struct DayRange {
    /// First day counted.
    pub from: Option<String>,
    /// First day not counted.
    pub to: Option<String>,
}

impl Store {
    /// Numbers committed, unnumbered ledger rows in `(created_at, id)` order above the highest
    /// `seq` so far; returns how many. Passes are serialised (an advisory lock on PostgreSQL;
    /// SQLite's single writer), so a reader paging with `seq > after` sees every row exactly once.
    pub async fn sequence_ledger(&self) -> Result<u64> {
        // Most reads find nothing to number: check without taking the writer. A row that
        // commits just after this check is numbered by a later pass, after anything read now.
        let pending: Option<(String,)> = sqlx::query_as("SELECT id FROM usage_ledger WHERE seq IS NULL LIMIT 1").fetch_optional(&self.reader).await?;
        if pending.is_none() {
            return Ok(0);
        }
        let mut total = 0;
        loop {
            let mut tx = self.writer.begin().await?;
            if self.dialect == Dialect::Postgres {
                // The UPDATE below must take its snapshot after the lock, to see the previous
                // pass: READ COMMITTED, whatever the server's default.
                sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").execute(&mut *tx).await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SEQUENCER_LOCK).execute(&mut *tx).await?;
            }
            let (before,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM usage_ledger").fetch_one(&mut *tx).await?;
            let done = sqlx::query(
                "UPDATE usage_ledger SET seq = ranked.n FROM (\
                 SELECT id, (SELECT COALESCE(MAX(seq), 0) FROM usage_ledger) + ROW_NUMBER() OVER (ORDER BY created_at, id) AS n \
                 FROM usage_ledger WHERE seq IS NULL ORDER BY created_at, id LIMIT $1) AS ranked \
                 WHERE usage_ledger.id = ranked.id",
            )
            .bind(SEQUENCE_BATCH as i64)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() > 0 {
                // Fold the rows just numbered into the rollup, in the same transaction: the
                // rollup always equals the numbered ledger.
                sqlx::query(
                    "INSERT INTO usage_rollup (account_id, day, unit, workflow_id, quantity, tokens_milli, cost_micros) \
                     SELECT account_id, day, unit, workflow_id, SUM(quantity), SUM(tokens_milli), SUM(cost_micros) \
                     FROM usage_ledger WHERE seq > $1 GROUP BY account_id, day, unit, workflow_id \
                     ON CONFLICT (account_id, day, unit, workflow_id) DO UPDATE SET \
                     quantity = usage_rollup.quantity + EXCLUDED.quantity, \
                     tokens_milli = usage_rollup.tokens_milli + EXCLUDED.tokens_milli, \
                     cost_micros = usage_rollup.cost_micros + EXCLUDED.cost_micros",
                )
                .bind(before)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            total += done.rows_affected();
            if done.rows_affected() < SEQUENCE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Ledger rows of an account after `after`, in `seq` order (numbering pending rows first).
    pub async fn usage_after(&self, account_id: &str, after: i64, limit: i64) -> Result<Vec<UsageRow>> {
        self.sequence_ledger().await?;
        self.usage_page(Some(account_id), after, limit, &DayRange::default()).await
    }

    /// A page of numbered ledger rows (of one account, or all), after `after`, within `days`.
    pub async fn usage_page(&self, account_id: Option<&str>, after: i64, limit: i64, days: &DayRange) -> Result<Vec<UsageRow>> {
        let sql = format!(
            "SELECT {USAGE_COLUMNS} FROM usage_ledger WHERE seq > $2 AND ($1 IS NULL OR account_id = $1) \
             AND ($3 IS NULL OR day >= $3) AND ($4 IS NULL OR day < $4) ORDER BY seq LIMIT $5"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(after).bind(&days.from).bind(&days.to).bind(limit).fetch_all(&self.reader).await?)
    }

    /// An account's usage, aggregated (from the rollup, after numbering pending rows).
    pub async fn usage_totals(&self, account_id: &str, group: UsageGroup, days: &DayRange) -> Result<Vec<UsageTotal>> {
        self.sequence_ledger().await?;
        // SUM of BIGINT is NUMERIC on PostgreSQL: cast back so both databases answer integers.
        const SUMS: &str = "CAST(SUM(quantity) AS BIGINT) AS quantity, CAST(SUM(tokens_milli) AS BIGINT) AS tokens_milli, \
             CAST(SUM(cost_micros) AS BIGINT) AS cost_micros";
        const RANGE: &str = "account_id = $1 AND ($2 IS NULL OR day >= $2) AND ($3 IS NULL OR day < $3)";
        let sql = match group {
            UsageGroup::Unit => format!("SELECT unit AS key, {SUMS} FROM usage_rollup WHERE {RANGE} GROUP BY unit ORDER BY unit"),
            UsageGroup::Day => format!("SELECT day AS key, day, unit, {SUMS} FROM usage_rollup WHERE {RANGE} GROUP BY day, unit ORDER BY day, unit"),
            // Sum first, then name the few groups (workflows are soft-deleted: names stay).
            UsageGroup::Workflow => format!(
                "SELECT t.key, w.name, t.quantity, t.tokens_milli, t.cost_micros FROM \
                 (SELECT workflow_id AS key, {SUMS} FROM usage_rollup WHERE {RANGE} GROUP BY workflow_id) t \
                 LEFT JOIN workflows w ON w.id = t.key AND w.account_id = $1 ORDER BY t.key"
            ),
        };
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(&days.from).bind(&days.to).fetch_all(&self.reader).await?)
    }

    /// Every account's usage by unit (billing).
    pub async fn usage_by_account(&self, days: &DayRange) -> Result<Vec<AccountUsage>> {
        self.sequence_ledger().await?;
        Ok(sqlx::query_as(
            "SELECT account_id, unit, CAST(SUM(quantity) AS BIGINT) AS quantity, \
             CAST(SUM(tokens_milli) AS BIGINT) AS tokens_milli, CAST(SUM(cost_micros) AS BIGINT) AS cost_micros \
             FROM usage_rollup WHERE ($1 IS NULL OR day >= $1) AND ($2 IS NULL OR day < $2) \
             GROUP BY account_id, unit ORDER BY account_id, unit",
        )
        .bind(&days.from)
        .bind(&days.to)
        .fetch_all(&self.reader)
        .await?)
    }

    /// Tokens (thousandths) an account spent within `days`.
    pub async fn tokens_spent(&self, account_id: &str, days: &DayRange) -> Result<i64> {
        self.sequence_ledger().await?;
        let row: (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(tokens_milli), 0) AS BIGINT) FROM usage_rollup \
             WHERE account_id = $1 AND ($2 IS NULL OR day >= $2) AND ($3 IS NULL OR day < $3)",
        )
        .bind(account_id)
        .bind(&days.from)
        .bind(&days.to)
        .fetch_one(&self.reader)
        .await?;
        Ok(row.0)
    }
}
