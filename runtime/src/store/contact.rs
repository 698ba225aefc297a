//! Contact rules and opt-outs: an account's rules (a column of `accounts`, read with the account)
//! and its opted-out numbers (`opt_outs`, one row per number and channel).
//!
//! An opt-out and a send to the same number are ordered: the send reads the opt-outs in the
//! transaction that marks it dispatching ([`Store::mark_dispatching`]), and on PostgreSQL both
//! take an advisory lock on the (account, number) pair — shared by sends, exclusive by opt-out
//! writes — so a send whose mark commits after an opt-out's commit always sees it. On SQLite the
//! one writer connection orders the two transactions already.

use sqlx::{Any, FromRow, Transaction};

use super::{Page, Store};
use crate::Result;
use crate::contact::Channel;

/// A number that must not be texted or called (on `channel`).
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct OptOutRow {
    /// The number, E.164.
    pub number: String,
    /// `sms`, `voice` or `all`.
    pub channel: String,
    /// Who recorded it: `inbound_sms` (a STOP reply), `twilio_21610` (Twilio refused a send),
    /// `api`, or what the CRM said.
    pub source: String,
    /// When (ms).
    pub created_at: i64,
}

const SELECT: &str = "SELECT number, channel, source, created_at FROM opt_outs";

/// The query of the opt-out that stops a send to `number` on `channel` (its own, or `all`).
fn stopping<'q>(account_id: &'q str, number: &'q str, channel: Channel) -> sqlx::query::QueryAs<'q, Any, OptOutRow, sqlx::any::AnyArguments> {
    let sql = format!("{SELECT} WHERE account_id = $1 AND number = $2 AND (channel = $3 OR channel = 'all') ORDER BY created_at LIMIT 1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(number).bind(channel.as_str())
}

/// The advisory-lock key of an (account, number) pair on PostgreSQL.
fn lock_key(account_id: &str, number: &str) -> String {
    format!("opt_out:{account_id}:{number}")
}

impl Store {
    /// Takes the (account, number) lock of this transaction on PostgreSQL: shared for a send,
    /// exclusive for an opt-out write (see the module documentation). Nothing on SQLite.
    pub(super) async fn lock_number(&self, tx: &mut Transaction<'static, Any>, account_id: &str, number: &str, exclusive: bool) -> Result<()> {
        if self.dialect == super::Dialect::Postgres {
            let sql = if exclusive {
                "SELECT CAST(1 AS BIGINT) FROM (SELECT pg_advisory_xact_lock(hashtextextended($1, 0))) l"
            } else {
                "SELECT CAST(1 AS BIGINT) FROM (SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))) l"
            };
            sqlx::query_as::<_, (i64,)>(sql).bind(lock_key(account_id, number)).fetch_one(&mut **tx).await?;
        }
        Ok(())
    }

    /// The opt-out that stops a send to `number` on `channel` (its own, or `all`), read inside
    /// a transaction.
    pub(super) async fn opt_out_in(tx: &mut Transaction<'static, Any>, account_id: &str, number: &str, channel: Channel) -> Result<Option<OptOutRow>> {
        Ok(stopping(account_id, number, channel).fetch_optional(&mut **tx).await?)
    }

    /// The opt-out that stops a send to `number` on `channel`, if there is one.
    pub async fn opted_out(&self, account_id: &str, number: &str, channel: Channel) -> Result<Option<OptOutRow>> {
        Ok(stopping(account_id, number, channel).fetch_optional(&self.reader).await?)
    }

    /// Records an opt-out. Returns the row as stored and whether it is new (an existing one for
    /// the same number and channel is kept, with its source and time).
    pub async fn add_opt_out(&self, account_id: &str, number: &str, channel: Channel, source: &str, now: i64) -> Result<(OptOutRow, bool)> {
        let mut tx = self.writer.begin().await?;
        self.lock_number(&mut tx, account_id, number, true).await?;
        let done = sqlx::query(
            "INSERT INTO opt_outs (account_id, number, channel, source, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (account_id, number, channel) DO NOTHING",
        )
        .bind(account_id)
        .bind(number)
        .bind(channel.as_str())
        .bind(source)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let sql = format!("{SELECT} WHERE account_id = $1 AND number = $2 AND channel = $3");
        let row: OptOutRow = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(number).bind(channel.as_str()).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok((row, done.rows_affected() == 1))
    }

    /// Clears a number's opt-outs on the channels given (every channel when empty). Returns how
    /// many were removed.
    pub async fn remove_opt_outs(&self, account_id: &str, number: &str, channels: &[Channel]) -> Result<u64> {
        let mut tx = self.writer.begin().await?;
        self.lock_number(&mut tx, account_id, number, true).await?;
        let mut removed = 0;
        let all = Channel::ALL;
        for channel in if channels.is_empty() { &all[..] } else { channels } {
            let done = sqlx::query("DELETE FROM opt_outs WHERE account_id = $1 AND number = $2 AND channel = $3")
                .bind(account_id)
                .bind(number)
                .bind(channel.as_str())
                .execute(&mut *tx)
                .await?;
            removed += done.rows_affected();
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// The account's opt-outs by number then channel, optionally of one number; `cursor` is the
    /// last `number channel` of the previous page.
    pub async fn list_opt_outs(&self, account_id: &str, number: Option<&str>, cursor: Option<&str>, limit: i64) -> Result<Page<OptOutRow>> {
        let (after_number, after_channel) = match cursor.and_then(|c| c.split_once(' ')) {
            Some((n, c)) => (Some(n), Some(c)),
            None => (None, None),
        };
        let sql = format!(
            "{SELECT} WHERE account_id = $1 AND ($2 IS NULL OR number = $2) \
             AND ($3 IS NULL OR number > $3 OR (number = $3 AND channel > $4)) ORDER BY number, channel LIMIT $5"
        );
        let items = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(account_id)
            .bind(number)
            .bind(after_number)
            .bind(after_channel.unwrap_or(""))
            .bind(limit + 1)
            .fetch_all(&self.reader)
            .await?;
        Ok(super::workflows::page(items, limit, |o: &OptOutRow| format!("{} {}", o.number, o.channel)))
    }

    /// Replaces an account's contact rules (JSON as `contact::ContactRules::to_json` writes it;
    /// `None` goes back to the defaults). False when there is no such account.
    pub async fn set_contact_rules(&self, account_id: &str, rules: Option<&str>) -> Result<bool> {
        let done = sqlx::query("UPDATE accounts SET contact_rules = $2 WHERE id = $1").bind(account_id).bind(rules).execute(&self.writer).await?;
        Ok(done.rows_affected() == 1)
    }
}
