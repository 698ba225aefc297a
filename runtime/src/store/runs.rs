//! Events, runs, the queue and the ledger: every state change of a run is one transaction.

use sqlx::{Any, Transaction};

use super::workflows::page;
use super::{Claim, Completion, NewEvent, NewRun, NewUsage, Next, OptOutRow, Page, QuotaCheck, Recorded, Resume, RunFilter, RunRow, StepRow, Store, UsageRow};
use crate::contact::Channel;
use crate::status::{RunStatus, StepStatus};
use crate::{Error, Result};

const RUN_COLUMNS: &str = "id, account_id, workflow_id, version, status, event_id, event, context, error, is_test, \
     step_index, step_seq, created_at, started_at, finished_at, parent_run_id, parent_seq, item_index";
const STEP_COLUMNS: &str = "run_id, seq, step_id, status, attempts, input, output, error, started_at, finished_at, due_at, rate_slot_at, rate_slot_key, \
     deferred_handle";
pub(super) const USAGE_COLUMNS: &str = "seq, id, account_id, workflow_id, run_id, step_id, unit, quantity, tokens_milli, cost_micros, created_at, day";

impl Store {
    /// The first answer to a repeat of `dedupe_key`, if there was one after `since`.
    pub async fn recorded_response(&self, account_id: &str, dedupe_key: &str, since: Option<i64>) -> Result<Option<String>> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT response FROM events WHERE account_id = $1 AND dedupe_key = $2 AND ($3 IS NULL OR created_at >= $3)")
                .bind(account_id)
                .bind(dedupe_key)
                .bind(since)
                .fetch_optional(&self.reader)
                .await?;
        Ok(row.map(|r| r.0.unwrap_or_default()))
    }

    /// Records an event, the runs it starts (each with its queue row, due now) and the waits it
    /// resumes, in one transaction: when this returns `New`, none of it can be lost.
    ///
    /// With `quota` (plans without overage), each run's `workflow_run` charge is taken from the
    /// period's counter only if the tokens are there; a run that does not fit is still recorded
    /// (nothing is lost) but `failed` with `quota_exceeded`, uncharged and unqueued.
    pub async fn record_event(&self, event: &NewEvent, runs: &[NewRun], resumes: &[Resume], quota: Option<&QuotaCheck>) -> Result<Recorded> {
        let mut tx = self.writer.begin().await?;
        if let Some(key) = &event.dedupe_key {
            let existing: Option<(i64, Option<String>)> = sqlx::query_as("SELECT created_at, response FROM events WHERE account_id = $1 AND dedupe_key = $2")
                .bind(&event.account_id)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((created_at, response)) = existing {
                if event.dedupe_since.is_none_or(|since| created_at >= since) {
                    return Ok(Recorded::Repeat(response.unwrap_or_default()));
                }
                // Older than the window: the key is free again.
                sqlx::query("UPDATE events SET dedupe_key = NULL WHERE account_id = $1 AND dedupe_key = $2")
                    .bind(&event.account_id)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let inserted = insert_events(&mut tx, &[event]).await?;
        if inserted == 0 {
            // A concurrent request with the same key committed first (PostgreSQL): answer as it did.
            drop(tx);
            let key = event.dedupe_key.as_deref().unwrap_or_default();
            return match self.recorded_response(&event.account_id, key, None).await? {
                Some(r) => Ok(Recorded::Repeat(r)),
                None => Err(Error::Conflict("event id already recorded".into())),
            };
        }
        // Waits first: every writer takes run_queue rows before account_periods rows.
        for resume in resumes {
            resume_wait(&mut tx, resume, event.now).await?;
        }
        let mut admitted: Vec<(&NewEvent, &NewRun)> = Vec::with_capacity(runs.len());
        for run in runs {
            match (quota, &run.usage) {
                (Some(q), Some(usage)) if !charge_run(&mut tx, &event.account_id, q, usage.tokens_milli).await? => {
                    refuse_run(&mut tx, event, run, &q.error).await?;
                }
                _ => admitted.push((event, run)),
            }
        }
        insert_runs(&mut tx, &admitted).await?;
        tx.commit().await?;
        Ok(Recorded::New)
    }

    /// Records many events with their runs in one transaction and a few multi-row statements
    /// (group commit: one fsync for all). For events without a dedupe key or resumptions; the
    /// caller answers each only after this returns. An event's own row is written only when it
    /// started no run ([`NewEvent::needs_batch_row`]).
    pub async fn record_batch(&self, items: &[(NewEvent, Vec<NewRun>)]) -> Result<()> {
        if self.dialect == super::Dialect::Postgres {
            return self.record_batch_in_one(items).await;
        }
        let mut tx = self.writer.begin().await?;
        let events: Vec<&NewEvent> = items.iter().filter(|(e, runs)| e.needs_batch_row(runs)).map(|(e, _)| e).collect();
        insert_events(&mut tx, &events).await?;
        let runs: Vec<(&NewEvent, &NewRun)> = items.iter().flat_map(|(e, runs)| runs.iter().map(move |r| (e, r))).collect();
        insert_runs(&mut tx, &runs).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` due steps for a lease ending at `lease_until`.
    ///
    /// On PostgreSQL the claim is planned at each execution (an unnamed statement), against the
    /// queue's size at that moment. The queue table churns — a row per run, inserted, updated,
    /// deleted — and between autovacuum passes holds mostly dead rows; a plan cached while it
    /// looked small (a hash join over a sequential scan of `run_queue`) went on scanning every
    /// dead row at every claim once it had grown. Planning it costs far less than that scan.
    pub async fn claim(&self, token: &str, now: i64, lease_until: i64, limit: i64) -> Result<Vec<Claim>> {
        let query = sqlx::query_as(self.dialect.claim_sql()).persistent(self.dialect == super::Dialect::Sqlite);
        Ok(query.bind(token).bind(lease_until).bind(limit).bind(now).fetch_all(&self.writer).await?)
    }

    /// Claims one run's row if it is due (a test run being driven by its request). Concurrent
    /// claimers of the row serialise on it; the loser finds it no longer due.
    pub async fn claim_run(&self, token: &str, run_id: &str, now: i64, lease_until: i64) -> Result<Option<Claim>> {
        Ok(sqlx::query_as(
            "UPDATE run_queue SET due_at = $2, lease_token = $1 WHERE run_id = $3 AND due_at <= $4 \
             RETURNING run_id, step_index, step_seq, attempt, dispatching, reserved_milli, reserved_period",
        )
        .bind(token)
        .bind(lease_until)
        .bind(run_id)
        .bind(now)
        .fetch_optional(&self.writer)
        .await?)
    }

    /// One step execution's row, if it was written.
    pub async fn step_row(&self, run_id: &str, seq: i64) -> Result<Option<StepRow>> {
        let sql = format!("SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = $1 AND seq = $2");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(run_id).bind(seq).fetch_optional(&self.reader).await?)
    }

    /// Takes the queue row of a step execution `awaiting_completion` for a callback that
    /// completes it: the row gets `token` and is held until `lease_until`, which fences out a
    /// worker polling it meanwhile (its completion then writes nothing). `None`, and nothing
    /// changed, when that execution no longer waits: completed (by a poll or an earlier
    /// callback), retried, cancelled, or not this account's.
    ///
    /// The queue row is locked first (one lock order with completions and cancels); a
    /// completion that held it has committed by then, so the step's state read after it is the
    /// latest.
    pub async fn take_awaiting(&self, account_id: &str, run_id: &str, seq: i64, token: &str, lease_until: i64) -> Result<Option<Claim>> {
        let mut tx = self.writer.begin().await?;
        let claim: Option<Claim> = sqlx::query_as(
            "UPDATE run_queue SET lease_token = $1, due_at = $2 WHERE run_id = $3 AND account_id = $4 AND step_seq = $5 \
             RETURNING run_id, step_index, step_seq, attempt, dispatching, reserved_milli, reserved_period",
        )
        .bind(token)
        .bind(lease_until)
        .bind(run_id)
        .bind(account_id)
        .bind(seq)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(claim) = claim else { return Ok(None) };
        let status: Option<(StepStatus,)> =
            sqlx::query_as("SELECT status FROM step_runs WHERE run_id = $1 AND seq = $2").bind(run_id).bind(seq).fetch_optional(&mut *tx).await?;
        if status.map(|s| s.0) != Some(StepStatus::AwaitingCompletion) {
            // Dropping the transaction gives the row back untouched.
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(claim))
    }

    /// Gives claimed rows back (shutdown): they are due again at once.
    pub async fn release(&self, run_id: &str, token: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE run_queue SET due_at = $3, lease_token = NULL WHERE run_id = $1 AND lease_token = $2")
            .bind(run_id)
            .bind(token)
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Gives back every queue row leased under one of `tokens` (a process's workers stopping,
    /// with no step in flight): due at once, for any worker. Answers how many.
    pub async fn release_leases(&self, tokens: &[String], now: i64) -> Result<u64> {
        let mut released = 0;
        for chunk in tokens.chunks(CHUNK) {
            let sql = format!("UPDATE run_queue SET due_at = ${}, lease_token = NULL WHERE lease_token IN ({})", chunk.len() + 1, values("?", chunk.len()));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for token in chunk {
                q = q.bind(token);
            }
            q = q.bind(now);
            released += q.execute(&self.writer).await?.rows_affected();
        }
        Ok(released)
    }

    /// Moves a held lease's expiry (long actions).
    pub async fn extend_lease(&self, run_id: &str, token: &str, until: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE run_queue SET due_at = $3 WHERE run_id = $1 AND lease_token = $2")
            .bind(run_id)
            .bind(token)
            .bind(until)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records, before an at-most-once action sends, that it is dispatching: if the process dies
    /// now, the next claim sees `dispatching = 1` and ends the step `outcome_unknown` instead of
    /// sending again. Also shows the step as running in the timeline.
    /// The lease is renewed to `lease_until` in the same fenced write.
    ///
    /// A send that reaches a person (`recipient`: the account, the number and the channel) reads
    /// the opt-outs in the same transaction, after taking the number's lock (see
    /// `store/contact.rs`): an opt-out committed before this moment stops it, and nothing is
    /// marked.
    pub async fn mark_dispatching(&self, token: &str, step: &StepRow, lease_until: i64, recipient: Option<(&str, &str, Channel)>) -> Result<Dispatch> {
        let mut tx = self.writer.begin().await?;
        if let Some((account_id, number, channel)) = recipient {
            self.lock_number(&mut tx, account_id, number, false).await?;
            if let Some(opt_out) = Store::opt_out_in(&mut tx, account_id, number, channel).await? {
                return Ok(Dispatch::OptedOut(opt_out));
            }
        }
        let done = sqlx::query("UPDATE run_queue SET dispatching = 1, due_at = $4 WHERE run_id = $1 AND lease_token = $2 AND step_seq = $3")
            .bind(&step.run_id)
            .bind(token)
            .bind(step.seq)
            .bind(lease_until)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(Dispatch::LeaseLost);
        }
        upsert_step(&mut tx, step).await?;
        tx.commit().await?;
        Ok(Dispatch::Marked)
    }

    /// Runs by id (a worker's claimed batch: one read for all of them).
    pub async fn runs_by_ids(&self, ids: &[&str]) -> Result<Vec<RunRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id IN ({})", values("?", ids.len()));
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(*id);
        }
        Ok(q.fetch_all(&self.reader).await?)
    }

    /// A run, by id alone (workers).
    pub async fn run_by_id(&self, run_id: &str) -> Result<Option<RunRow>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(run_id).fetch_optional(&self.reader).await?)
    }

    /// Writes a step's outcome, the run's new state, the next due time and the usage rows in one
    /// transaction. False when the caller must stop: the claim's lease was lost to another worker
    /// (nothing written), or the run was cancelled meanwhile — then an action's outcome and usage
    /// are still recorded (it did run), but nothing after it is scheduled.
    pub async fn complete(&self, c: &Completion) -> Result<bool> {
        self.complete_batch(&[c]).await?.pop().unwrap_or(Ok(false))
    }

    /// Group commit: the completions of many runs in one transaction, each fenced by its own
    /// lease token exactly as [`Store::complete`] fences one (a run twice in a batch writes at
    /// most its current lease holder's completion): a completion
    /// whose lease was lost writes nothing and does not hold the others back. Answers
    /// [`Store::complete`]'s flag for each, in order. The common shape takes a handful of
    /// statements for the whole batch: one on PostgreSQL, one transaction of a few on SQLite
    /// (`complete.rs`).
    ///
    /// The outer error fails the whole batch and writes nothing; the caller may then complete
    /// each alone, so that one bad completion fails only itself. An inner error is one
    /// completion's that took a transaction of its own (PostgreSQL), after the others committed.
    pub async fn complete_batch(&self, batch: &[&Completion]) -> Result<Vec<Result<bool>>> {
        if self.dialect == super::Dialect::Postgres {
            return self.complete_batch_postgres(batch).await;
        }
        let mut tx = self.writer.begin().await?;
        let done = super::complete::complete_batch_sqlite(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(done.into_iter().map(Ok).collect())
    }

    /// One completion in a transaction of its own (the general path: quota, outbox, fan-out,
    /// and telling a lost lease from a cancel).
    pub(super) async fn complete_alone(&self, c: &Completion) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = complete_in(&mut tx, c).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Runs of an account waiting for an event type: `(run, waiting step seq)`.
    pub async fn waiting_runs(&self, account_id: &str, event_type: &str) -> Result<Vec<(RunRow, i64)>> {
        let rows: Vec<WaitingRun> = sqlx::query_as(
            "SELECT r.id, r.account_id, r.workflow_id, r.version, r.status, r.event_id, r.event, r.context, r.error, \
             r.is_test, r.step_index, r.step_seq, r.created_at, r.started_at, r.finished_at, r.parent_run_id, r.parent_seq, \
             r.item_index, w.step_seq AS wait_seq \
             FROM runs r JOIN waits w ON w.run_id = r.id WHERE w.account_id = $1 AND w.event_type = $2",
        )
        .bind(account_id)
        .bind(event_type)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(|w| (w.run, w.wait_seq)).collect())
    }

    /// Cancels a run: its queue row and wait go, so nothing after a running step starts.
    /// `None` if there is no such run; `Some(false)` if it had already ended.
    pub async fn cancel_run(&self, account_id: &str, run_id: &str, now: i64) -> Result<Option<bool>> {
        let mut tx = self.writer.begin().await?;
        // The queue row first, as every other writer does: one lock order, no deadlocks. A
        // completion holding it finishes first; its next step then finds no row and stops.
        let held: Option<(i64, Option<String>)> =
            sqlx::query_as("DELETE FROM run_queue WHERE run_id = $1 AND account_id = $2 RETURNING reserved_milli, reserved_period")
                .bind(run_id)
                .bind(account_id)
                .fetch_optional(&mut *tx)
                .await?;
        // Only a run that has not ended: the final states, as `RunStatus::is_final` lists them.
        let done = sqlx::query(
            "UPDATE runs SET status = $4, finished_at = $3 WHERE id = $1 AND account_id = $2 \
             AND status NOT IN ($5, $6, $7)",
        )
        .bind(run_id)
        .bind(account_id)
        .bind(now)
        .bind(RunStatus::Cancelled)
        .bind(RunStatus::Succeeded)
        .bind(RunStatus::Failed)
        .bind(RunStatus::Cancelled)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            drop(tx);
            return Ok(self.run_exists(account_id, run_id).await?.then_some(false));
        }
        let had_slot = held.is_some();
        if let Some((reserved, Some(period))) = held.filter(|h| h.0 > 0) {
            let release = super::QuotaSettle { release: Some((period, reserved)), spend: None };
            super::quota::settle(&mut tx, account_id, &release).await?;
        }
        sqlx::query("DELETE FROM waits WHERE run_id = $1").bind(run_id).execute(&mut *tx).await?;
        // A fan-out's children are cancelled with it; a child cancelled alone frees its slot
        // (if it held one) and counts as ended for its parent.
        super::fan_out::cancel_children(&mut tx, run_id, now).await?;
        let parent: Option<(Option<String>, Option<i64>)> =
            sqlx::query_as("SELECT parent_run_id, parent_seq FROM runs WHERE id = $1").bind(run_id).fetch_optional(&mut *tx).await?;
        if let Some((Some(parent), Some(parent_seq))) = parent {
            super::fan_out::child_ended(&mut tx, &parent, parent_seq, had_slot, now).await?;
        }
        // The executions that would go on (`StepStatus::after_cancel`): a retry, a wait, a slot,
        // an action that finishes later (a callback after this finds no queue row: it writes nothing).
        sqlx::query(
            "UPDATE step_runs SET status = $3, finished_at = $2, due_at = NULL, rate_slot_at = NULL, rate_slot_key = NULL \
             WHERE run_id = $1 AND status IN ($4, $5, $6, $7)",
        )
        .bind(run_id)
        .bind(now)
        .bind(StepStatus::Cancelled)
        .bind(StepStatus::Pending)
        .bind(StepStatus::Waiting)
        .bind(StepStatus::Throttled)
        .bind(StepStatus::AwaitingCompletion)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(true))
    }

    /// Re-runs a failed run from its failed (or outcome-unknown) step: a new execution of that
    /// step, due now. `None` if there is no such run; `Some(false)` if it is not failed.
    ///
    /// `start` is the run's start charge, taken if the run never paid it (a run refused for
    /// quota when its event came in), under `quota` for plans without overage; if it does not
    /// fit, nothing changes and the answer is [`Error::Conflict`].
    pub async fn retry_run(&self, account_id: &str, run_id: &str, now: i64, start: Option<(&NewUsage, Option<&QuotaCheck>)>) -> Result<Option<bool>> {
        let mut tx = self.writer.begin().await?;
        // Conditional on `failed`, so two concurrent retries cannot both pass.
        let row: Option<(i64, i64)> = sqlx::query_as(
            "UPDATE runs SET status = $3, error = NULL, finished_at = NULL, step_seq = step_seq + 1 \
             WHERE id = $1 AND account_id = $2 AND status = $4 RETURNING step_index, step_seq",
        )
        .bind(run_id)
        .bind(account_id)
        .bind(RunStatus::Queued)
        .bind(RunStatus::Failed)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((step_index, seq)) = row else {
            drop(tx);
            return Ok(self.run_exists(account_id, run_id).await?.then_some(false));
        };
        if let Some((usage, quota)) = start {
            let paid: Option<(String,)> = sqlx::query_as("SELECT id FROM usage_ledger WHERE id = $1").bind(&usage.id).fetch_optional(&mut *tx).await?;
            if paid.is_none() {
                if let Some(q) = quota
                    && !charge_run(&mut tx, account_id, q, usage.tokens_milli).await?
                {
                    return Err(Error::Conflict("the account has no tokens left to start this run; upgrade the plan".into()));
                }
                let workflow: (String,) = sqlx::query_as("SELECT workflow_id FROM runs WHERE id = $1").bind(run_id).fetch_one(&mut *tx).await?;
                insert_usage(&mut tx, &[(account_id, workflow.0.as_str(), run_id, usage, now)]).await?;
            }
        }
        sqlx::query(
            "INSERT INTO run_queue (run_id, account_id, due_at, step_index, step_seq, attempt, lease_token, dispatching) \
             VALUES ($1, $2, $3, $4, $5, 0, NULL, 0)",
        )
        .bind(run_id)
        .bind(account_id)
        .bind(now)
        .bind(step_index)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(true))
    }

    /// Whether the account has this run (to tell "no such run" from "not in that state").
    async fn run_exists(&self, account_id: &str, run_id: &str) -> Result<bool> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT id FROM runs WHERE id = $1 AND account_id = $2").bind(run_id).bind(account_id).fetch_optional(&self.reader).await?;
        Ok(row.is_some())
    }

    /// A run of the account with its step timeline and usage rows.
    pub async fn run_detail(&self, account_id: &str, run_id: &str) -> Result<Option<(RunRow, Vec<StepRow>, Vec<UsageRow>)>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND account_id = $2");
        let run: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(run_id).bind(account_id).fetch_optional(&self.reader).await?;
        let Some(run) = run else { return Ok(None) };
        let sql = format!("SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = $1 ORDER BY seq");
        let steps = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(run_id).fetch_all(&self.reader).await?;
        let sql = format!("SELECT {USAGE_COLUMNS} FROM usage_ledger WHERE run_id = $1 ORDER BY seq");
        let usage = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(run_id).fetch_all(&self.reader).await?;
        Ok(Some((run, steps, usage)))
    }

    /// The account's runs, newest first.
    pub async fn list_runs(&self, account_id: &str, f: &RunFilter) -> Result<Page<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE account_id = $1 AND ($2 IS NULL OR workflow_id = $2) \
             AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR id < $4) AND ($6 IS NULL OR parent_run_id = $6) ORDER BY id DESC LIMIT $5"
        );
        let items: Vec<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(account_id)
            .bind(&f.workflow_id)
            .bind(&f.status)
            .bind(&f.cursor)
            .bind(f.limit + 1)
            .bind(&f.parent_run_id)
            .fetch_all(&self.reader)
            .await?;
        Ok(page(items, f.limit, |r| r.id.clone()))
    }

    /// The earliest due time in the queue (for sleeping until then).
    pub async fn next_due_at(&self) -> Result<Option<i64>> {
        let row: (Option<i64>,) = sqlx::query_as("SELECT MIN(due_at) FROM run_queue").fetch_one(&self.reader).await?;
        Ok(row.0)
    }

    /// Queue rows due now that no worker holds: work waiting for a worker.
    pub async fn due_unclaimed(&self, now: i64) -> Result<i64> {
        let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM run_queue WHERE due_at <= $1 AND lease_token IS NULL").bind(now).fetch_one(&self.reader).await?;
        Ok(row.0)
    }

    /// Rows in the queue (runs with something left to do).
    pub async fn queue_depth(&self) -> Result<i64> {
        let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM run_queue").fetch_one(&self.reader).await?;
        Ok(row.0)
    }
}

/// `rows` copies of a `(?, …)` row template, with the `?`s numbered `$1, $2, …` in order.
pub(super) fn values(template: &str, rows: usize) -> String {
    let mut out = String::with_capacity((template.len() + 8) * rows);
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        for ch in template.chars() {
            if ch == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(ch);
            }
        }
    }
    out
}

#[derive(sqlx::FromRow)]
struct WaitingRun {
    #[sqlx(flatten)]
    run: RunRow,
    wait_seq: i64,
}

/// Takes a run's start charge from the period counter if it fits; false if it does not.
async fn charge_run(tx: &mut Transaction<'static, Any>, account_id: &str, q: &QuotaCheck, tokens_milli: i64) -> Result<bool> {
    super::quota::ensure_period(tx, account_id, &q.period).await?;
    let done = sqlx::query(
        "UPDATE account_periods SET spent_milli = spent_milli + $3 \
         WHERE account_id = $1 AND period = $2 AND spent_milli + reserved_milli + $3 <= $4",
    )
    .bind(account_id)
    .bind(&q.period)
    .bind(tokens_milli)
    .bind(q.limit_milli)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a run refused for quota: failed at once, never queued, never charged.
async fn refuse_run(tx: &mut Transaction<'static, Any>, event: &NewEvent, run: &NewRun, error: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO runs (id, account_id, workflow_id, version, status, event_id, event, context, error, is_test, \
         step_index, step_seq, created_at, started_at, finished_at) \
         VALUES ($1, $2, $3, $4, $10, $5, $6, '{}', $7, $8, 0, 0, $9, NULL, $9)",
    )
    .bind(&run.id)
    .bind(&event.account_id)
    .bind(&run.workflow_id)
    .bind(run.version)
    .bind(&event.id)
    .bind(&run.event)
    .bind(error)
    .bind(run.is_test as i64)
    .bind(event.now)
    .bind(RunStatus::Failed)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Rows a multi-row INSERT takes at most (well under both databases' bind limits).
const CHUNK: usize = 200;

/// Inserts events; returns how many were new (a repeated id is skipped).
async fn insert_events(tx: &mut Transaction<'static, Any>, events: &[&NewEvent]) -> Result<u64> {
    let mut inserted = 0;
    for chunk in events.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO events (id, account_id, type, data, source, dedupe_key, response, created_at) VALUES {} \
             ON CONFLICT DO NOTHING",
            values("(?, ?, ?, ?, ?, ?, ?, ?)", chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            q = q.bind(&e.id).bind(&e.account_id).bind(&e.event_type).bind(&e.data).bind(&e.source);
            q = q.bind(&e.dedupe_key).bind(&e.response).bind(e.now);
        }
        inserted += q.execute(&mut **tx).await?.rows_affected();
    }
    Ok(inserted)
}

/// Inserts runs (queued), their queue rows (due at the event's time) and their `workflow_run`
/// charges. The hot path of ingest writes `'queued'` as a literal (`RunStatus::Queued`) rather
/// than bind it once per row.
async fn insert_runs(tx: &mut Transaction<'static, Any>, runs: &[(&NewEvent, &NewRun)]) -> Result<()> {
    for chunk in runs.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO runs (id, account_id, workflow_id, version, status, event_id, event, context, error, is_test, \
             step_index, step_seq, created_at, started_at, finished_at) VALUES {}",
            values("(?, ?, ?, ?, 'queued', ?, ?, '{}', NULL, ?, 0, 1, ?, NULL, NULL)", chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (e, r) in chunk {
            q = q.bind(&r.id).bind(&e.account_id).bind(&r.workflow_id).bind(r.version);
            q = q.bind(&e.id).bind(&r.event).bind(r.is_test as i64).bind(e.now);
        }
        q.execute(&mut **tx).await?;
        let sql = format!(
            "INSERT INTO run_queue (run_id, account_id, due_at, step_index, step_seq, attempt, lease_token, dispatching) VALUES {}",
            values("(?, ?, ?, 0, 1, 0, ?, 0)", chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (e, r) in chunk {
            let (token, due_at) = r.first_due(e.now);
            q = q.bind(&r.id).bind(&e.account_id).bind(due_at).bind(token);
        }
        q.execute(&mut **tx).await?;
        let charges: Vec<UsageInsert<'_>> =
            chunk.iter().filter_map(|(e, r)| r.usage.as_ref().map(|u| (e.account_id.as_str(), r.workflow_id.as_str(), r.id.as_str(), u, e.now))).collect();
        insert_usage(tx, &charges).await?;
    }
    Ok(())
}

async fn resume_wait(tx: &mut Transaction<'static, Any>, r: &Resume, now: i64) -> Result<()> {
    // The queue row first (one lock order with completions and cancels), guarded by the wait's
    // step seq: a timeout that completed first moved the seq on (or removed the row), and then
    // this resumes nothing. Clearing the token fences out a worker holding the timeout's claim.
    let moved = match r.next_index {
        Some(next) => {
            sqlx::query(
                "UPDATE run_queue SET step_index = $3, step_seq = $4, attempt = 0, dispatching = 0, due_at = $5, \
                 lease_token = NULL WHERE run_id = $1 AND step_seq = $2",
            )
            .bind(&r.run_id)
            .bind(r.step_seq)
            .bind(next)
            .bind(r.step_seq + 1)
            .bind(now)
            .execute(&mut **tx)
            .await?
        }
        None => sqlx::query("DELETE FROM run_queue WHERE run_id = $1 AND step_seq = $2").bind(&r.run_id).bind(r.step_seq).execute(&mut **tx).await?,
    };
    if moved.rows_affected() != 1 {
        return Ok(());
    }
    sqlx::query("DELETE FROM waits WHERE run_id = $1").bind(&r.run_id).execute(&mut **tx).await?;
    sqlx::query(
        "UPDATE step_runs SET status = $5, output = $3, finished_at = $4, due_at = NULL \
         WHERE run_id = $1 AND seq = $2",
    )
    .bind(&r.run_id)
    .bind(r.step_seq)
    .bind(&r.output)
    .bind(now)
    .bind(StepStatus::Succeeded)
    .execute(&mut **tx)
    .await?;
    let (status, step_index, step_seq, finished) = match r.next_index {
        Some(next) => (RunStatus::Running, next, r.step_seq + 1, None),
        None => (RunStatus::Succeeded, -1, r.step_seq, Some(now)),
    };
    sqlx::query(
        "UPDATE runs SET status = $2, context = $3, step_index = CASE WHEN $4 < 0 THEN step_index ELSE $4 END, \
         step_seq = $5, finished_at = $6 WHERE id = $1",
    )
    .bind(&r.run_id)
    .bind(status)
    .bind(&r.context)
    .bind(step_index)
    .bind(step_seq)
    .bind(finished)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One completion's writes inside `tx` (see [`Store::complete`]): the fence first, then the
/// step row, the run, waits, fan-out, usage, outbox and quota. A lost lease writes nothing.
pub(super) async fn complete_in(tx: &mut Transaction<'static, Any>, c: &Completion) -> Result<bool> {
    let fenced = match &c.next {
        Next::Continue { step_index, step_seq, attempt, due_at, keep_lease } => {
            sqlx::query(
                "UPDATE run_queue SET step_index = $3, step_seq = $4, attempt = $5, dispatching = 0, \
                 due_at = $6, lease_token = CASE WHEN $7 = 1 THEN lease_token ELSE NULL END, \
                 reserved_milli = 0, reserved_period = NULL WHERE run_id = $1 AND lease_token = $2",
            )
            .bind(&c.run_id)
            .bind(&c.token)
            .bind(step_index)
            .bind(step_seq)
            .bind(attempt)
            .bind(keep_lease.unwrap_or(*due_at))
            .bind(keep_lease.is_some() as i64)
            .execute(&mut **tx)
            .await?
        }
        Next::Finish => sqlx::query("DELETE FROM run_queue WHERE run_id = $1 AND lease_token = $2").bind(&c.run_id).bind(&c.token).execute(&mut **tx).await?,
    };
    let cancelled = if fenced.rows_affected() == 1 {
        false
    } else {
        let status: Option<(RunStatus,)> = sqlx::query_as("SELECT status FROM runs WHERE id = $1").bind(&c.run_id).fetch_optional(&mut **tx).await?;
        if !c.side_effect || status.map(|s| s.0) != Some(RunStatus::Cancelled) {
            return Ok(false);
        }
        true
    };
    if cancelled {
        // Cancel wins: a retry or a wait that will not happen ends with the run.
        upsert_step(tx, &c.step.after_cancel(c.now)).await?;
    } else {
        upsert_step(tx, &c.step).await?;
    }
    if !cancelled {
        let (step_index, step_seq) = match &c.next {
            Next::Continue { step_index, step_seq, .. } => (*step_index, *step_seq),
            Next::Finish => (-1, c.step.seq),
        };
        let finished = c.run_status.is_final().then_some(c.now);
        sqlx::query(
            "UPDATE runs SET status = $2, context = COALESCE($3, context), error = $4, \
             step_index = CASE WHEN $5 < 0 THEN step_index ELSE $5 END, step_seq = $6, \
             started_at = COALESCE(started_at, $7), finished_at = $8 WHERE id = $1",
        )
        .bind(&c.run_id)
        .bind(c.run_status)
        .bind(&c.context)
        .bind(&c.run_error)
        .bind(step_index)
        .bind(step_seq)
        .bind(c.step.started_at.unwrap_or(c.now))
        .bind(finished)
        .execute(&mut **tx)
        .await?;
        if let Some(wait) = &c.wait {
            sqlx::query(
                "INSERT INTO waits (run_id, account_id, event_type, step_seq, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (run_id) DO UPDATE SET event_type = $3, step_seq = $4, created_at = $5",
            )
            .bind(&c.run_id)
            .bind(&c.account_id)
            .bind(&wait.event_type)
            .bind(c.step.seq)
            .bind(c.now)
            .execute(&mut **tx)
            .await?;
        } else if c.clear_wait {
            sqlx::query("DELETE FROM waits WHERE run_id = $1").bind(&c.run_id).execute(&mut **tx).await?;
        }
        if let Some(spawn) = &c.spawn {
            super::fan_out::spawn(tx, c, spawn).await?;
        }
        if let (true, Some((parent, parent_seq))) = (c.run_status.is_final(), &c.parent) {
            super::fan_out::child_ended(tx, parent, *parent_seq, true, c.now).await?;
        }
    }
    let mut inserted_tokens = 0;
    if !c.usage.is_empty() {
        let rows: Vec<UsageInsert<'_>> = c.usage.iter().map(|u| (c.account_id.as_str(), c.workflow_id.as_str(), c.run_id.as_str(), u, c.now)).collect();
        inserted_tokens = insert_usage(tx, &rows).await?;
    }
    if let Some(o) = &c.outbox {
        super::outbox::insert(tx, c, o).await?;
    }
    if let Some(q) = &c.quota {
        // A cancel already released the reservation with the queue row; and only rows this
        // completion really inserted count as spent (a replay inserts none).
        let release = if cancelled { None } else { q.release.clone() };
        let spend = q.spend.clone().map(|(period, _)| (period, inserted_tokens)).filter(|s| s.1 > 0);
        super::quota::settle(tx, &c.account_id, &super::QuotaSettle { release, spend }).await?;
    }
    // After a cancel the step is recorded, but the caller must not go on.
    Ok(!cancelled)
}

async fn upsert_step(tx: &mut Transaction<'static, Any>, s: &StepRow) -> Result<()> {
    let q = sqlx::query(
        "INSERT INTO step_runs (run_id, seq, step_id, status, attempts, input, output, error, started_at, finished_at, due_at, \
         rate_slot_at, rate_slot_key, deferred_handle) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (run_id, seq) DO UPDATE SET status = $4, attempts = $5, input = COALESCE($6, step_runs.input), \
         output = $7, error = $8, started_at = COALESCE(step_runs.started_at, $9), finished_at = $10, due_at = $11, \
         rate_slot_at = $12, rate_slot_key = $13, deferred_handle = COALESCE($14, step_runs.deferred_handle)",
    );
    // The handle is kept once set (the one-statement PostgreSQL path, which binds the first
    // thirteen columns only, never writes it and so keeps it too).
    bind_step(q, s).bind(&s.deferred_handle).execute(&mut **tx).await?;
    Ok(())
}

/// What [`Store::mark_dispatching`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// Marked: send.
    Marked,
    /// The claim's lease was lost (or the run cancelled): send nothing, write nothing.
    LeaseLost,
    /// The recipient opted out (this row): send nothing; the step ends `skipped`.
    OptedOut(OptOutRow),
}

/// A query with binds so far.
pub(super) type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

/// Binds a step row's thirteen columns, in `step_runs` column order.
fn bind_step<'q>(q: AnyQuery<'q>, s: &'q StepRow) -> AnyQuery<'q> {
    q.bind(&s.run_id)
        .bind(s.seq)
        .bind(&s.step_id)
        .bind(s.status)
        .bind(s.attempts)
        .bind(&s.input)
        .bind(&s.output)
        .bind(&s.error)
        .bind(s.started_at)
        .bind(s.finished_at)
        .bind(s.due_at)
        .bind(s.rate_slot_at)
        .bind(&s.rate_slot_key)
}

/// A ledger row to insert: `(account, workflow, run, usage, now)`.
pub(super) type UsageInsert<'a> = (&'a str, &'a str, &'a str, &'a NewUsage, i64);

/// Inserts ledger rows; returns the tokens (thousandths) of the rows actually inserted. Their ids
/// are deterministic per (run, step execution, unit) and unique: a replayed completion cannot
/// charge twice.
pub(super) async fn insert_usage(tx: &mut Transaction<'static, Any>, rows: &[UsageInsert<'_>]) -> Result<i64> {
    let mut inserted = 0;
    for chunk in rows.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO usage_ledger (id, account_id, workflow_id, run_id, step_id, unit, quantity, tokens_milli, \
             cost_micros, created_at, day) VALUES {} ON CONFLICT (id) DO NOTHING RETURNING tokens_milli",
            values("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", chunk.len())
        );
        let mut q = sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(sql));
        for (account_id, workflow_id, run_id, u, now) in chunk {
            q = q.bind(&u.id).bind(*account_id).bind(*workflow_id).bind(*run_id).bind(&u.step_id);
            q = q.bind(&u.unit).bind(u.quantity).bind(u.tokens_milli).bind(u.cost_micros).bind(*now).bind(&u.day);
        }
        inserted += q.fetch_all(&mut **tx).await?.iter().map(|r| r.0).sum::<i64>();
    }
    Ok(inserted)
}
