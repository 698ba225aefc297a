//! The Stripe Billing sync: pushes new usage-ledger rows to Stripe as Billing meter events.
//!
//! The ledger is read in `seq` order after a cursor kept in the store (`sync_cursors`, name
//! [`CURSOR`]). Each row of an account with a Stripe customer becomes one meter event: value
//! `tokens_milli`, identifier the row's id, timestamp the row's `created_at` in seconds. The
//! cursor moves past each row once Stripe has it, and past rows there is nothing to send for (no
//! customer, zero tokens), so a restart resumes where the last pass stopped.
//!
//! Exactly once, by construction: the cursor is written after Stripe answered, so a crash
//! between the two resends at most that one row, and Stripe refuses a second event with the same
//! identifier (which the client reports as already recorded). A pass stops at the first failure
//! with the cursor after the last success. A retryable failure (429, 5xx, timeout) clears by
//! itself; a permanent one (a revoked key, an unknown customer, a row older than Stripe's 35-day
//! window) stops the sync at that row until an operator fixes it: a charge is never dropped
//! silently.
//!
//! Rows are billed to the customer an account has when the row is synced; rows synced while an
//! account had none are not sent later.
//!
//! [`sync_once`] is one pass, driven directly by tests; [`run`] repeats it every
//! [`SyncConfig::interval`] until shutdown.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use switchboard_integrations::stripe::{MeterEvent, MeterEventOutcome, StripeClient};
use switchboard_runtime::Result;
use switchboard_runtime::action::{ActionError, FailureClass};
use switchboard_runtime::clock::Clock;
use switchboard_runtime::store::{DayRange, Store};

/// The name of this job's ledger cursor.
pub const CURSOR: &str = "stripe_meter_events";

/// The default meter `event_name`.
pub const DEFAULT_EVENT_NAME: &str = "switchboard_tokens_milli";

/// Settings of the sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// The `event_name` of the Stripe meter the events feed (default [`DEFAULT_EVENT_NAME`]).
    pub event_name: String,
    /// Ledger rows read per page.
    pub page_size: i64,
    /// Time between passes of [`run`].
    pub interval: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self { event_name: DEFAULT_EVENT_NAME.to_owned(), page_size: 100, interval: Duration::from_secs(60) }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Events Stripe recorded.
    pub sent: u64,
    /// Events Stripe already had (same identifier): a replay, counted as delivered.
    pub replayed: u64,
    /// Rows passed over: their account has no Stripe customer, or they carry no tokens.
    pub skipped: u64,
    /// The cursor after the pass: every row up to this `seq` is handled.
    pub after_seq: i64,
    /// The failure the pass stopped at, if any.
    pub failure: Option<SyncFailure>,
}

/// The row a pass stopped at, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFailure {
    /// The row's `seq`.
    pub seq: i64,
    /// The row's id (the event's identifier).
    pub row_id: String,
    /// Stripe's answer or the transport failure.
    pub error: ActionError,
}

/// One pass: numbers committed ledger rows, then sends every row after the cursor, in `seq`
/// order, until the ledger is exhausted or a send fails.
///
/// `now` (ms) is recorded as the cursor's update time. Store failures are errors; a Stripe
/// failure ends the pass normally, reported in [`SyncReport::failure`].
pub async fn sync_once(store: &Store, stripe: &StripeClient, cfg: &SyncConfig, now: i64) -> Result<SyncReport> {
    store.sequence_ledger().await?;
    let mut stored = store.sync_cursor(CURSOR).await?;
    let mut report = SyncReport { after_seq: stored, ..SyncReport::default() };
    let limit = cfg.page_size.max(1);
    loop {
        let page = store.usage_page(None, report.after_seq, limit, &DayRange::default()).await?;
        let accounts: BTreeSet<&str> = page.iter().map(|row| row.account_id.as_str()).collect();
        let customers = store.stripe_customers(&accounts.into_iter().collect::<Vec<_>>()).await?;
        for row in &page {
            // `usage_page` answers numbered rows only.
            let Some(seq) = row.seq else { continue };
            let customer = customers.get(&row.account_id).filter(|_| row.tokens_milli > 0);
            let Some(customer) = customer else {
                report.skipped += 1;
                report.after_seq = seq;
                continue;
            };
            let event = MeterEvent {
                event_name: &cfg.event_name,
                customer_id: customer,
                value: row.tokens_milli,
                identifier: &row.id,
                timestamp: row.created_at.div_euclid(1000),
            };
            match stripe.create_meter_event(&event).await {
                Ok(MeterEventOutcome::Created) => report.sent += 1,
                Ok(MeterEventOutcome::AlreadyRecorded) => report.replayed += 1,
                Err(error) => {
                    report.failure = Some(SyncFailure { seq, row_id: row.id.clone(), error });
                    break;
                }
            }
            // Persisted before the next send: a restart resends at most the row in flight.
            report.after_seq = seq;
            store.set_sync_cursor(CURSOR, seq, now).await?;
            stored = seq;
        }
        // Skipped rows are recorded once per page rather than one write each.
        if report.after_seq > stored {
            store.set_sync_cursor(CURSOR, report.after_seq, now).await?;
            stored = report.after_seq;
        }
        if report.failure.is_some() || (page.len() as i64) < limit {
            return Ok(report);
        }
    }
}

/// Runs [`sync_once`] every `cfg.interval` until `shutdown` resolves (a pass in progress is
/// abandoned; the cursor makes that harmless). Failures are logged; a retryable one waits for
/// Stripe's `Retry-After` when that is longer than the interval.
pub async fn run(store: Store, stripe: StripeClient, cfg: SyncConfig, clock: Arc<dyn Clock>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    tracing::info!(event_name = %cfg.event_name, interval = ?cfg.interval, "Stripe meter-event sync started");
    loop {
        let pass = tokio::select! {
            () = &mut shutdown => break,
            pass = sync_once(&store, &stripe, &cfg, clock.now()) => pass,
        };
        let wait = match pass {
            Ok(report) => {
                if report.sent + report.replayed > 0 {
                    tracing::info!(
                        sent = report.sent,
                        replayed = report.replayed,
                        skipped = report.skipped,
                        after_seq = report.after_seq,
                        "usage sent to Stripe"
                    );
                }
                match report.failure {
                    None => cfg.interval,
                    Some(f) if f.error.class == FailureClass::Permanent => {
                        tracing::error!(
                            seq = f.seq, row = %f.row_id, error = %f.error,
                            "Stripe refused a meter event; the sync is stopped at this row until the cause is fixed"
                        );
                        cfg.interval
                    }
                    Some(f) => {
                        tracing::warn!(seq = f.seq, row = %f.row_id, error = %f.error, "Stripe meter-event sync will retry");
                        let asked = Duration::from_millis(f.error.retry_after_ms.unwrap_or(0));
                        cfg.interval.max(asked)
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "Stripe meter-event sync failed to read or write the store");
                cfg.interval
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!("Stripe meter-event sync stopped");
}
