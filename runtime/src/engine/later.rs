//! Steps whose action finishes later (a call ends minutes after it was placed). The action's
//! start answers [`Started::Later`](crate::action::Started::Later): the step is committed
//! `awaiting_completion` with the vendor's handle in its row and its due time at the poll
//! deadline, so the queue row is the timer and a crash loses nothing. Then one of two ways
//! completes it, both through [`super::commit`] (usage rows in the transaction that marks the
//! step succeeded, with the ledger ids of that step execution, so billed once):
//!
//! - a callback: [`Engine::complete_later`] takes the step's queue row (fencing out a poll in
//!   flight) if, and only if, that execution still awaits its completion;
//! - a poll: the deadline passes, a worker claims the row, and [`poll`] asks the action
//!   ([`crate::action::Action::poll`]); "not yet" re-arms the deadline.

use serde_json::Value;
use tracing::Instrument;

use super::commit::commit;
use super::execute::{ACTION_GRACE, then_of};
use super::step::RunState;
use super::transition::Outcome;
use super::{Engine, new_token};
use crate::Result;
use crate::action::{ActionContext, ActionError, ActionOutput, Poll};
use crate::definition::{Step, StepKind, Workflow};
use crate::status::StepStatus;
use crate::store::{Claim, StepRow};

/// What [`Engine::complete_later`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaterCompletion {
    /// The completion was committed: the step's outcome, its usage, and what comes next.
    Recorded,
    /// Nothing was written: that step execution no longer awaits a completion (a poll or an
    /// earlier callback completed it, its run was cancelled or has ended), or there is no such
    /// step in this account. A duplicate callback gets this.
    NotWaiting,
}

impl Engine {
    /// Completes a step that awaits the completion of an action that finishes later (e.g. from
    /// a vendor's status callback): `Ok` with the output and the usage known only now, or the
    /// failure (which steers the step as a failed send does). The step is named by its run and
    /// execution sequence number (`step_runs.seq`, `steps[].seq` in the API).
    ///
    /// Fenced: a completion of a step execution that no longer waits writes nothing and answers
    /// [`LaterCompletion::NotWaiting`]. If the run goes on at once, its next step is left due
    /// now for any worker.
    pub async fn complete_later(
        &self,
        account_id: &str,
        run_id: &str,
        step_seq: i64,
        result: std::result::Result<ActionOutput, ActionError>,
    ) -> Result<LaterCompletion> {
        let span = tracing::info_span!("run", run_id = %run_id);
        async {
            let token = new_token();
            let now = self.clock.now();
            let lease_until = crate::clock::after(now, self.config.lease);
            let Some(claim) = self.store.take_awaiting(account_id, run_id, step_seq, &token, lease_until).await? else {
                tracing::info!(step_seq, "completion ignored: the step no longer awaits one");
                return Ok(LaterCompletion::NotWaiting);
            };
            let release = async || {
                let _ = self.store.release(run_id, &token, self.clock.now()).await;
            };
            let Some(run) = self.store.run_by_id(run_id).await? else { return Ok(LaterCompletion::NotWaiting) };
            let (workflow, mut state) = match self.run_workflow(&run).await {
                Ok(w) => match RunState::load(self, run).await {
                    Ok(state) => (w, state),
                    Err(e) => {
                        release().await;
                        return Err(e);
                    }
                },
                Err(e) => {
                    // Give the row back to its deadline's poll (now), rather than hold it for a lease.
                    release().await;
                    return Err(e);
                }
            };
            state.reservation = claim.reserved_period.clone().filter(|_| claim.reserved_milli > 0).map(|p| (p, claim.reserved_milli));
            let index = claim.step_index as usize;
            let Some(step) = workflow.steps.get(index) else {
                release().await;
                return Ok(LaterCompletion::NotWaiting);
            };
            let outcome = completed(step, workflow.next_after(index), claim.attempt, result);
            let next = commit(self, &token, &mut state, &workflow, &completing(&claim), outcome, now).await?;
            if next.is_some() {
                // The next step is due at once: leave it to any worker rather than run it on the
                // caller's (a callback request's) time.
                self.store.release(run_id, &token, self.clock.now()).await?;
                self.notify();
                return Ok(LaterCompletion::Recorded);
            }
            // `commit` also answers nothing when it was fenced out; the row tells.
            let row = self.store.step_row(run_id, step_seq).await?;
            Ok(match row {
                Some(r) if r.status == StepStatus::AwaitingCompletion => LaterCompletion::NotWaiting,
                _ => LaterCompletion::Recorded,
            })
        }
        .instrument(span)
        .await
    }
}

/// The claim as a completion's commit sees it: one attempt back, because the attempt it
/// completes was counted when the step started waiting (see `transition::Position::attempt`).
pub(super) fn completing(claim: &Claim) -> Claim {
    Claim { attempt: (claim.attempt - 1).max(0), ..claim.clone() }
}

/// The row of a claimed step execution that awaits a completion (its poll deadline came), or
/// `None` for any other claim. Only a claim with an attempt made can be one.
pub(super) async fn awaiting(engine: &Engine, claim: &Claim) -> Result<Option<StepRow>> {
    if claim.attempt == 0 {
        return Ok(None);
    }
    let row = engine.store.step_row(&claim.run_id, claim.step_seq).await?;
    Ok(row.filter(|r| r.status == StepStatus::AwaitingCompletion))
}

/// Polls the action of a step whose deadline passed without a completion.
pub(super) async fn poll(engine: &Engine, state: &RunState, workflow: &Workflow, claim: &Claim, row: StepRow) -> Result<Outcome> {
    let index = claim.step_index as usize;
    let step = &workflow.steps[index];
    let next = workflow.next_after(index);
    let StepKind::Action { kind, connection, timeout, .. } = &step.kind else {
        let error = ActionError::permanent("invalid_state", "a step that is not an action awaits a completion");
        return Ok(Outcome::Failed { error, then: Err(()), input: None });
    };
    let Some(action) = engine.actions.get(kind).cloned() else {
        let error = ActionError::permanent("unknown_action", format!("no action module '{kind}' in this build"));
        return Ok(Outcome::Failed { error, then: Err(()), input: None });
    };
    let connection = if action.providers().is_empty() {
        None
    } else {
        match engine.step_connection(&state.run.account_id, action.providers(), connection.as_deref()).await? {
            Ok(c) => Some(c),
            Err(error) => return Ok(completed(step, next, claim.attempt, Err(error))),
        }
    };
    let ctx = ActionContext {
        account_id: state.run.account_id.clone(),
        run_id: claim.run_id.clone(),
        step_id: step.id.clone(),
        step_seq: claim.step_seq,
        now: engine.clock.now(),
        attempt: claim.attempt as u32,
        idempotency_key: format!("{}:{}", claim.run_id, claim.step_seq),
        timeout: *timeout,
        connection,
        scope: None,
    };
    let handle: Value = row.deferred_handle.as_deref().and_then(|h| serde_json::from_str(h).ok()).unwrap_or(Value::Null);
    let result = match tokio::time::timeout(*timeout + ACTION_GRACE, action.poll(&ctx, handle.clone())).await {
        Ok(Poll::Done(done)) => Ok(ActionOutput { output: done.output, usage: done.usage }),
        Ok(Poll::Failed(error)) => Err(error),
        Ok(Poll::NotYet { check_after }) => return Ok(Outcome::Deferred { handle, check_after, input: None }),
        // A poll that hangs learns nothing: ask again after as long.
        Err(_) => return Ok(Outcome::Deferred { handle, check_after: *timeout, input: None }),
    };
    Ok(completed(step, next, claim.attempt, result))
}

/// The outcome of a completion of attempt `attempt` (1-based) of an action step.
fn completed(step: &Step, next: Option<usize>, attempt: i64, result: std::result::Result<ActionOutput, ActionError>) -> Outcome {
    match result {
        Ok(out) => Outcome::Succeeded { output: out.output, usage: out.usage, next, input: None },
        Err(error) => match &step.kind {
            StepKind::Action { retry, on_error, .. } => {
                let backoff = retry.delay(attempt as u32, error.retry_after_ms.map(std::time::Duration::from_millis));
                Outcome::ActionFailed { then: then_of(on_error, next), input: None, max_attempts: retry.max_attempts, backoff, error }
            }
            _ => Outcome::Failed { error, then: Err(()), input: None },
        },
    }
}
