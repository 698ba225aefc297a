//! Committing a step's outcome: the [`transition`] to its row, the run's status and what is due
//! next, priced usage, quota settlement, one fenced write through the store, then metrics, logs
//! and live events.

use std::sync::Arc;

use serde_json::Value;

use super::Engine;
use super::step::RunState;
use super::transition::{Outcome, Position, error_json, transition};
use crate::Result;
use crate::action::ActionError;
use crate::definition::{StepKind, Workflow};
use crate::events::{RunEvent, StepEvent};
use crate::metering::{self, Usage};
use crate::status::{RunStatus, StepStatus};
use crate::store::{Claim, Completion, NewUsage, Next, QuotaSettle, StepRow};

/// Prometheus metrics of a step's outcome (exported at `GET /metrics`).
fn record_metrics(workflow: &Workflow, claim: &Claim, c: &Completion) {
    let kind = match &workflow.steps[claim.step_index as usize].kind {
        StepKind::Action { kind, .. } => kind.clone(),
        StepKind::Delay(_) => "delay".into(),
        StepKind::Branch(_) => "branch".into(),
        StepKind::WaitFor { .. } => "wait_for".into(),
        StepKind::Set(_) => "set".into(),
        StepKind::ForEach(_) => "for_each".into(),
        StepKind::End => "end".into(),
    };
    metrics::counter!("switchboard_steps_total", "kind" => kind.clone(), "status" => c.step.status.as_str()).increment(1);
    if let Some(started) = c.step.started_at {
        let seconds = (c.now - started).max(0) as f64 / 1000.0;
        metrics::histogram!("switchboard_step_duration_seconds", "kind" => kind.clone()).record(seconds);
    }
    let code = || c.step.error.as_deref().and_then(|e| serde_json::from_str::<Value>(e).ok()).and_then(|e| e["code"].as_str().map(str::to_string));
    match c.step.status {
        StepStatus::Pending => metrics::counter!("switchboard_step_retries_total", "kind" => kind).increment(1),
        StepStatus::Failed | StepStatus::OutcomeUnknown => {
            metrics::counter!("switchboard_step_failures_total", "code" => code().unwrap_or_default()).increment(1)
        }
        _ => {}
    }
}

/// Writes the outcome. Returns the claim to go on with when the next step is due at once.
pub(super) async fn commit(
    engine: &Engine,
    token: &str,
    state: &mut RunState,
    workflow: &Workflow,
    claim: &Claim,
    outcome: Outcome,
    started: i64,
) -> Result<Option<Claim>> {
    let now = engine.clock.now();
    let definition = &workflow.steps[claim.step_index as usize];
    let step_id = definition.id.as_str();
    let is_action = matches!(definition.kind, StepKind::Action { .. });
    let at = Position {
        run_id: claim.run_id.clone(),
        step_id: step_id.to_string(),
        step_index: claim.step_index,
        step_seq: claim.step_seq,
        attempt: claim.attempt,
        is_action,
        // Test runs fast-forward every wait (delays, wait timeouts, retry backoff).
        fast_forward: state.run.is_test == 1,
        started,
        now,
        lease_until: crate::clock::after(now, engine.config.lease),
    };
    let Some(t) = transition(&at, outcome) else { return Ok(None) };
    if let Some(output) = &t.visible_output {
        state.record_output(step_id, output);
    }
    let usage = if state.run.is_test == 0 { price(engine, state, claim, step_id, t.usage, now) } else { Vec::new() };
    // Plans without overage keep period counters: release what the step reserved, count what
    // it spent.
    let no_overage = metering::plan(&state.account.plan).is_some_and(|p| p.overage_micros_per_token.is_none());
    let spent: i64 = usage.iter().map(|u| u.tokens_milli).sum();
    let spend = (no_overage && spent > 0).then(|| (metering::month_of(now, &state.account.timezone).0, spent));
    let release = state.reservation.take();
    let quota = (release.is_some() || spend.is_some()).then_some(QuotaSettle { release, spend });
    let completion = Arc::new(Completion {
        run_id: claim.run_id.clone(),
        account_id: state.run.account_id.clone(),
        workflow_id: state.run.workflow_id.clone(),
        token: token.to_string(),
        step: t.step,
        next: t.next.clone(),
        run_status: t.run_status,
        context: state.take_changed_context(),
        run_error: t.run_error,
        usage,
        wait: t.wait,
        clear_wait: matches!(definition.kind, StepKind::WaitFor { .. }),
        side_effect: is_action,
        quota,
        outbox: t.outbox,
        spawn: t.spawn,
        parent: state.parent(),
        now,
    });
    record_metrics(workflow, claim, &completion);
    if !engine.complete(completion.clone()).await? {
        tracing::info!(run_id = %claim.run_id, "stopping: the run was cancelled or another worker owns it now");
        return Ok(None);
    }
    after_commit(engine, &completion);
    // Children just queued (a fan-out started, or a child ended and the next was admitted, or
    // the last one woke its parent) are due now: wake this process's idle workers rather than
    // leave them to their poll interval.
    if completion.spawn.is_some() || (completion.parent.is_some() && completion.run_status.is_final()) {
        engine.notify();
    }
    state.run.status = t.run_status;
    state.run.started_at.get_or_insert(now);
    match t.next {
        Next::Continue { step_index, step_seq, attempt, keep_lease: Some(_), .. } => {
            state.run.step_index = step_index;
            state.run.step_seq = step_seq;
            Ok(Some(Claim { run_id: claim.run_id.clone(), step_index, step_seq, attempt, dispatching: 0, reserved_milli: 0, reserved_period: None }))
        }
        _ => Ok(None),
    }
}

/// Ledger rows of a step's usage: one row per unit (an action reporting a unit twice is
/// summed), priced, on the account's local day.
fn price(engine: &Engine, state: &RunState, claim: &Claim, step_id: &str, used: Vec<Usage>, now: i64) -> Vec<NewUsage> {
    let mut by_unit: Vec<Usage> = Vec::new();
    for u in used {
        match by_unit.iter_mut().find(|b| b.unit == u.unit) {
            Some(b) => b.quantity += u.quantity,
            None => by_unit.push(u),
        }
    }
    by_unit
        .into_iter()
        .map(|u| {
            let price = engine.config.prices.charge(&u.unit, u.quantity);
            NewUsage {
                id: format!("{}:{}:{}", claim.run_id, claim.step_seq, u.unit),
                step_id: Some(step_id.to_string()),
                unit: u.unit,
                quantity: u.quantity,
                tokens_milli: price.tokens_milli,
                cost_micros: price.cost_micros,
                day: crate::metering::local_day(now, &state.account.timezone),
            }
        })
        .collect()
}

pub(super) async fn finish_failed(
    engine: &Engine,
    token: &str,
    state: &mut RunState,
    claim: &Claim,
    step_id: &str,
    error: ActionError,
    now: i64,
) -> Result<()> {
    let err = error_json(&error, step_id);
    let completion = Arc::new(Completion {
        run_id: claim.run_id.clone(),
        account_id: state.run.account_id.clone(),
        workflow_id: state.run.workflow_id.clone(),
        token: token.to_string(),
        step: StepRow {
            run_id: claim.run_id.clone(),
            seq: claim.step_seq,
            step_id: step_id.to_string(),
            status: StepStatus::Failed,
            attempts: 0,
            input: None,
            output: None,
            error: Some(err.clone()),
            started_at: Some(now),
            finished_at: Some(now),
            due_at: None,
            rate_slot_at: None,
            rate_slot_key: None,
            deferred_handle: None,
        },
        next: Next::Finish,
        run_status: RunStatus::Failed,
        context: None,
        run_error: Some(err),
        usage: vec![],
        wait: None,
        clear_wait: true,
        side_effect: false,
        quota: state.reservation.take().map(|r| QuotaSettle { release: Some(r), spend: None }),
        outbox: None,
        spawn: None,
        parent: state.parent(),
        now,
    });
    if engine.complete(completion.clone()).await? {
        after_commit(engine, &completion);
    }
    Ok(())
}

/// Logs a committed completion (inside the run's and step's spans) and tells live listeners
/// what changed: the step, and the run's end.
fn after_commit(engine: &Engine, c: &Completion) {
    let error = || c.step.error.as_deref().and_then(|e| serde_json::from_str::<Value>(e).ok()).unwrap_or_default();
    match c.step.status {
        StepStatus::Failed | StepStatus::OutcomeUnknown => {
            let e = error();
            tracing::warn!(status = %c.step.status, code = %e["code"].as_str().unwrap_or_default(), error = %e["message"].as_str().unwrap_or_default(), run_status = %c.run_status, "step ended without success");
        }
        StepStatus::Pending => {
            let e = error();
            tracing::info!(code = %e["code"].as_str().unwrap_or_default(), due_at = c.step.due_at, "step will be retried");
        }
        status => tracing::debug!(%status, run_status = %c.run_status, "step committed"),
    }
    if !engine.events.wants(&c.account_id) {
        return;
    }
    let event = |kind: &str| RunEvent::new(kind, &c.account_id, &c.run_id, &c.workflow_id, c.run_status, c.now);
    engine.events.publish(RunEvent { step: Some(StepEvent::from_row(&c.step)), ..event("step.updated") });
    if c.run_status.is_final() {
        engine.events.publish(event("run.finished"));
    }
}
