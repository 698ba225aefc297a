//! Quotas of plans without overage: reservations before an action spends tokens, settled when
//! the step completes. See `migrations/*/0003_quotas.sql`.

use sqlx::{Any, Transaction};

use super::{QuotaSettle, Reservation, Store};
use crate::Result;

impl Store {
    /// Reserves `tokens_milli` for the claimed step of `run_id` if the account's period still has
    /// them (`spent + reserved + tokens <= limit`): one conditional update of the period row, so
    /// concurrent reservations serialise on it and never overspend. The reservation is written on
    /// the step's queue row (fenced by the lease), where the step's completion — or a cancel —
    /// releases it.
    pub async fn reserve_tokens(&self, run_id: &str, token: &str, account_id: &str, period: &str, tokens_milli: i64, limit_milli: i64) -> Result<Reservation> {
        let mut tx = self.writer.begin().await?;
        let fenced = sqlx::query("UPDATE run_queue SET reserved_milli = $3, reserved_period = $4 WHERE run_id = $1 AND lease_token = $2")
            .bind(run_id)
            .bind(token)
            .bind(tokens_milli)
            .bind(period)
            .execute(&mut *tx)
            .await?;
        if fenced.rows_affected() != 1 {
            return Ok(Reservation::LeaseLost);
        }
        ensure_period(&mut tx, account_id, period).await?;
        let held = sqlx::query(
            "UPDATE account_periods SET reserved_milli = reserved_milli + $3 \
             WHERE account_id = $1 AND period = $2 AND spent_milli + reserved_milli + $3 <= $4",
        )
        .bind(account_id)
        .bind(period)
        .bind(tokens_milli)
        .bind(limit_milli)
        .execute(&mut *tx)
        .await?;
        if held.rows_affected() != 1 {
            // Rolled back on drop: the queue row keeps no reservation.
            return Ok(Reservation::Exceeded);
        }
        tx.commit().await?;
        Ok(Reservation::Held)
    }

    /// Moves an account to another plan; false if there is no such account.
    pub async fn set_account_plan(&self, account_id: &str, plan: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE accounts SET plan = $2 WHERE id = $1").bind(account_id).bind(plan).execute(&self.writer).await?;
        Ok(done.rows_affected() == 1)
    }

    /// The tokens (thousandths) spent and reserved in a period, from the counters.
    pub async fn period_counters(&self, account_id: &str, period: &str) -> Result<(i64, i64)> {
        let row: Option<(i64, i64)> = sqlx::query_as("SELECT spent_milli, reserved_milli FROM account_periods WHERE account_id = $1 AND period = $2")
            .bind(account_id)
            .bind(period)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.unwrap_or((0, 0)))
    }
}

/// Creates the period row if it is missing.
pub(super) async fn ensure_period(tx: &mut Transaction<'static, Any>, account_id: &str, period: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO account_periods (account_id, period, spent_milli, reserved_milli) VALUES ($1, $2, 0, 0) \
         ON CONFLICT (account_id, period) DO NOTHING",
    )
    .bind(account_id)
    .bind(period)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Releases a step's reservation and counts what it spent.
pub(super) async fn settle(tx: &mut Transaction<'static, Any>, account_id: &str, q: &QuotaSettle) -> Result<()> {
    if let Some((period, reserved)) = &q.release {
        sqlx::query("UPDATE account_periods SET reserved_milli = reserved_milli - $3 WHERE account_id = $1 AND period = $2")
            .bind(account_id)
            .bind(period)
            .bind(reserved)
            .execute(&mut **tx)
            .await?;
    }
    if let Some((period, spent)) = &q.spend {
        ensure_period(tx, account_id, period).await?;
        sqlx::query("UPDATE account_periods SET spent_milli = spent_milli + $3 WHERE account_id = $1 AND period = $2")
            .bind(account_id)
            .bind(period)
            .bind(spent)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
