//! Executing one claimed step and committing its outcome.

use std::time::Duration;

use tracing::Instrument;

use serde_json::{Map, Value, json};

use super::Engine;
use super::ingest::resolve;
use crate::action::{ActionContext, ActionError, Delivery, FailureClass};
use crate::definition::{Delay, OnError, StepKind, Workflow};
use crate::events::{RunEvent, StepEvent};
use crate::expr::ScopeData;
use crate::metering::{self, Usage};
use crate::store::{Account, Claim, Completion, NewOutbox, NewUsage, NewWait, Next, QuotaSettle, Reservation, RunRow, StepRow};
use crate::{Error, Result};

/// More step executions than this in one run means something is wrong (cycles are refused at
/// save time, so only a pathological `on_error: goto` chain could get here).
const MAX_STEPS_PER_RUN: i64 = 10_000;

/// Slack on top of an action's own timeout before the runtime gives up on it.
const ACTION_GRACE: Duration = Duration::from_secs(2);

/// A run being executed: its row with the JSON parsed once.
pub(crate) struct RunState {
    pub(crate) run: RunRow,
    event: Value,
    pub(crate) context: Value,
    account: Account,
    /// The quota reservation the current step holds: (period, tokens in thousandths).
    reservation: Option<(String, i64)>,
}

impl RunState {
    pub(crate) async fn load(engine: &Engine, run: RunRow) -> Result<Self> {
        let event = serde_json::from_str(&run.event)?;
        let mut context: Value = serde_json::from_str(&run.context)?;
        if !context.is_object() {
            context = json!({});
        }
        let account = engine.account(&run.account_id).await?;
        Ok(Self { run, event, context, account, reservation: None })
    }

    /// What scripts see.
    pub(crate) fn scope(&self, workflow: &Workflow) -> ScopeData {
        ScopeData {
            event: self.event.clone(),
            steps: self.context.get("steps").cloned().unwrap_or_else(|| json!({})),
            vars: self.context.get("vars").cloned().unwrap_or_else(|| json!({})),
            params: workflow.params.clone(),
            run: json!({ "id": self.run.id, "started_at": self.run.started_at.or(Some(self.run.created_at)).map(crate::clock::to_rfc3339) }),
            account: json!({ "id": self.account.id, "timezone": self.account.timezone }),
        }
    }

    fn section(&mut self, name: &str) -> &mut Map<String, Value> {
        let ctx = self.context.as_object_mut().expect("context is an object");
        ctx.entry(name).or_insert_with(|| json!({})).as_object_mut().expect("context section is an object")
    }

    /// Makes a step's output visible as `steps.<id>.output`.
    pub(crate) fn record_output(&mut self, step_id: &str, output: &Value) {
        self.section("steps").insert(step_id.to_string(), json!({ "output": output }));
    }
}

/// How a step ended this time.
enum Outcome {
    /// Done; go on at `next` (`None`: the run succeeded).
    Succeeded { output: Value, usage: Vec<Usage>, next: Option<usize>, input: Option<Value> },
    /// Waiting until `due_at` (a delay, or a wait's timeout).
    Waiting { due_at: i64, wait: Option<NewWait>, output: Option<Value> },
    /// A retryable failure with attempts left.
    Retry { error: ActionError, due_at: i64, input: Option<Value> },
    /// Failed for good; `then` says where the run goes (`Err(())`: the run fails).
    Failed { error: ActionError, then: std::result::Result<Option<usize>, ()>, input: Option<Value> },
    /// The request may have reached the vendor: do not resend.
    Unknown { error: ActionError, input: Option<Value> },
    /// Recorded in the outbox instead of sent (a sandbox connection or a test run); go on at
    /// `next`. Not billed.
    Sandboxed { output: Value, outbox: NewOutbox, next: Option<usize>, input: Value },
    /// Held by a vendor rate limit: wait for the reserved slot at `due_at` (no attempt spent).
    RateLimited { due_at: i64, key: String, input: Value },
    /// The lease was lost while executing: write nothing.
    LeaseLost,
}

pub(super) async fn process(engine: &Engine, token: &str, mut claim: Claim) -> Result<()> {
    let Some(run) = engine.store.run_by_id(&claim.run_id).await? else { return Ok(()) };
    let workflow = engine.workflow(&run.workflow_id, run.version).await;
    let mut state = RunState::load(engine, run).await?;
    // A claim taken over after a crash may hold the reservation its first worker made; load it
    // before anything can end the step, so it is always released.
    state.reservation = claim.reserved_period.clone().filter(|_| claim.reserved_milli > 0).map(|p| (p, claim.reserved_milli));
    let workflow = match workflow {
        Ok(w) => w,
        Err(Error::Invalid(problems)) => {
            // A stored version that no longer compiles (say, an action module was removed):
            // end the run with the reason instead of claiming it again forever.
            let message = problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect::<Vec<_>>().join("; ");
            let error = ActionError::permanent("invalid_definition", format!("this workflow version no longer validates: {message}"));
            let now = engine.clock.now();
            return finish_failed(engine, token, &mut state, &claim, "?", error, now).await;
        }
        Err(e) => return Err(e),
    };
    loop {
        let now = engine.clock.now();
        let index = claim.step_index as usize;
        if index >= workflow.steps.len() {
            // A version without this step cannot happen (versions are immutable); end cleanly.
            let error = ActionError::permanent("invalid_state", format!("the run points at step {index}, which does not exist"));
            return finish_failed(engine, token, &mut state, &claim, "?", error, now).await;
        }
        // Every log line of the step (and of the action it runs) carries the step's ids.
        let span = tracing::info_span!("step", step_id = %workflow.steps[index].id, seq = claim.step_seq, attempt = claim.attempt + 1);
        let step = async {
            let outcome = if claim.step_seq > MAX_STEPS_PER_RUN {
                Outcome::Failed {
                    error: ActionError::permanent("too_many_steps", format!("the run executed more than {MAX_STEPS_PER_RUN} steps")),
                    then: Err(()),
                    input: None,
                }
            } else {
                execute(engine, token, &mut state, &workflow, &claim, now).await?
            };
            commit(engine, token, &mut state, &workflow, &claim, outcome, now).await
        };
        let Some(next_claim) = step.instrument(span).await? else {
            return Ok(());
        };
        claim = next_claim;
    }
}

async fn execute(
    engine: &Engine,
    token: &str,
    state: &mut RunState,
    workflow: &Workflow,
    claim: &Claim,
    now: i64,
) -> Result<Outcome> {
    let step = &workflow.steps[claim.step_index as usize];
    let next = workflow.next_after(claim.step_index as usize);
    let script_failure = |e: String| Outcome::Failed {
        error: ActionError::permanent("script_error", e),
        then: Err(()),
        input: None,
    };
    Ok(match &step.kind {
        StepKind::Action { kind, input, connection, retry, timeout, on_error } => {
            let Some(action) = engine.actions.get(kind).cloned() else {
                return Ok(Outcome::Failed {
                    error: ActionError::permanent("unknown_action", format!("no action module '{kind}' in this build")),
                    then: Err(()),
                    input: None,
                });
            };
            let delivery = action.delivery();
            let failed_then = |on_error: &OnError| match on_error {
                OnError::Fail => Err(()),
                OnError::Continue => Ok(next),
                OnError::Goto(t) => Ok(resolve(t)),
            };
            if claim.dispatching == 1 && delivery == Delivery::AtMostOnce {
                return Ok(Outcome::Unknown {
                    error: ActionError::outcome_unknown(
                        "interrupted",
                        "the worker stopped while this step was sending; it was not sent again. Check the recipient, then retry the run if needed",
                    ),
                    input: None,
                });
            }
            let rendered = match input.render(&engine.expr, &state.scope(workflow)) {
                Ok(v) => v,
                Err(e) => {
                    return Ok(Outcome::Failed {
                        error: ActionError::permanent("input_error", format!("rendering the input failed: {e}")),
                        then: failed_then(on_error),
                        input: None,
                    });
                }
            };
            let attempt = claim.attempt + 1;
            let is_test = state.run.is_test == 1;
            let connection = if action.providers().is_empty() {
                None
            } else {
                match engine.step_connection(&state.run.account_id, action.providers(), connection.as_deref()).await? {
                    Ok(c) => Some(c),
                    // A test run previews without a connection: it sends nothing anyway.
                    Err(_) if is_test => None,
                    Err(error) => return Ok(Outcome::Failed { error, then: failed_then(on_error), input: Some(rendered) }),
                }
            };
            let ctx = ActionContext {
                account_id: state.run.account_id.clone(),
                run_id: claim.run_id.clone(),
                step_id: step.id.clone(),
                attempt: attempt as u32,
                idempotency_key: format!("{}:{}", claim.run_id, claim.step_seq),
                timeout: *timeout,
                connection,
            };
            // Sandbox connections and test runs record what would be sent instead of sending.
            let sandboxed = ctx.connection.as_ref().is_some_and(|c| c.sandbox) || (is_test && delivery != Delivery::Internal);
            if sandboxed {
                return Ok(match action.sandbox(&ctx, &rendered) {
                    Ok(send) => {
                        let outbox = NewOutbox {
                            id: super::new_id(),
                            kind: kind.clone(),
                            connection_name: ctx.connection.as_ref().map(|c| c.name.clone()),
                            recipient: send.to,
                            rendered: send.rendered.to_string(),
                            usage: serde_json::to_string(&send.usage).unwrap_or_else(|_| "[]".into()),
                            is_test,
                        };
                        Outcome::Sandboxed { output: send.output, outbox, next, input: rendered }
                    }
                    Err(error) => Outcome::Failed { error, then: failed_then(on_error), input: Some(rendered) },
                });
            }
            if let Some(limit) = action.rate_limit(&ctx, &rendered)
                && !holds_rate_slot(engine, claim, now).await?
            {
                let slot = engine.limiter.acquire(&limit, &ctx.idempotency_key, now).await;
                if slot > now {
                    return Ok(Outcome::RateLimited { due_at: slot, key: limit.key, input: rendered });
                }
            }
            // Before an action starts, renew the lease past its timeout with a fenced write: a
            // claim that waited in a worker's buffer, a run cancelled since its last step, or a
            // lease another worker took over all stop here, before anything is sent.
            let lease_until = crate::clock::after(now, *timeout + ACTION_GRACE + engine.config.lease);
            if delivery == Delivery::Idempotent && !engine.store.extend_lease(&claim.run_id, token, lease_until).await? {
                return Ok(Outcome::LeaseLost);
            }
            if let Some(refused) = reserve_quota(engine, token, state, claim, action.as_ref(), &rendered, now).await? {
                return Ok(refused);
            }
            if delivery == Delivery::AtMostOnce {
                let running = StepRow {
                    run_id: claim.run_id.clone(),
                    seq: claim.step_seq,
                    step_id: step.id.clone(),
                    status: "running".into(),
                    attempts: claim.attempt,
                    input: Some(rendered.to_string()),
                    output: None,
                    error: None,
                    started_at: Some(now),
                    finished_at: None,
                    due_at: None,
                };
                if !engine.store.mark_dispatching(token, &running, lease_until).await? {
                    return Ok(Outcome::LeaseLost);
                }
            }
            // The action enforces `timeout` itself and classifies what happened; this outer
            // bound only catches an action that ignores it.
            let result = match tokio::time::timeout(*timeout + ACTION_GRACE, action.execute(&ctx, rendered.clone())).await {
                Ok(r) => r,
                Err(_) if delivery == Delivery::AtMostOnce => Err(ActionError::outcome_unknown(
                    "timeout",
                    format!("no answer within {}; the request may have been delivered", humantime::format_duration(*timeout)),
                )),
                Err(_) => Err(ActionError::retryable("timeout", format!("no answer within {}", humantime::format_duration(*timeout)))),
            };
            let input = Some(rendered);
            match result {
                Ok(out) => Outcome::Succeeded { output: out.output, usage: out.usage, next, input },
                Err(error) => match error.class {
                    FailureClass::Retryable if (attempt as u32) < retry.max_attempts => {
                        let delay = retry.delay(attempt as u32, error.retry_after_ms.map(Duration::from_millis));
                        Outcome::Retry { due_at: crate::clock::after(engine.clock.now(), delay), error, input }
                    }
                    FailureClass::OutcomeUnknown => Outcome::Unknown { error, input },
                    _ => Outcome::Failed { error, then: failed_then(on_error), input },
                },
            }
        }
        StepKind::Delay(delay) => {
            if claim.attempt > 0 {
                // Claimed again: the delay's due time has passed (claims only take due rows), or
                // it was fast-forwarded (a test run).
                let mut output = json!({ "waited_until": crate::clock::to_rfc3339(now) });
                if state.run.is_test == 1 {
                    output["fast_forwarded"] = json!(true);
                }
                Outcome::Succeeded { output, usage: vec![], next, input: None }
            } else {
                let due_at = match delay {
                    Delay::For(d) => crate::clock::after(now, *d),
                    Delay::Until(t) => match t.render(&engine.expr, &state.scope(workflow)).and_then(|v| parse_time(&v)) {
                        Ok(at) if at > crate::clock::after(now, crate::definition::MAX_WAIT) => {
                            return Ok(Outcome::Failed {
                                error: ActionError::permanent(
                                    "invalid_time",
                                    format!("'until' is more than 10 years ahead (the latest allowed now is {})", crate::clock::to_rfc3339(crate::clock::after(now, crate::definition::MAX_WAIT))),
                                ),
                                then: Err(()),
                                input: None,
                            });
                        }
                        Ok(at) => at,
                        Err(e) => {
                            return Ok(Outcome::Failed {
                                error: ActionError::permanent("invalid_time", e),
                                then: Err(()),
                                input: None,
                            });
                        }
                    },
                };
                if due_at <= now {
                    Outcome::Succeeded { output: json!({ "waited_until": crate::clock::to_rfc3339(now) }), usage: vec![], next, input: None }
                } else {
                    Outcome::Waiting { due_at, wait: None, output: Some(json!({ "until": crate::clock::to_rfc3339(due_at) })) }
                }
            }
        }
        StepKind::Branch(arms) => {
            let scope = state.scope(workflow);
            let mut chosen = None;
            for arm in arms {
                let holds = match &arm.when {
                    None => true,
                    Some(when) => match engine.expr.eval_bool(when, &scope) {
                        Ok(b) => b,
                        Err(e) => return Ok(script_failure(e)),
                    },
                };
                if holds {
                    chosen = Some(resolve(&arm.goto));
                    break;
                }
            }
            let target = chosen.unwrap_or(next);
            let name = target.map(|i| workflow.steps[i].id.clone()).unwrap_or_else(|| "end".into());
            Outcome::Succeeded { output: json!({ "goto": name }), usage: vec![], next: target, input: None }
        }
        StepKind::Set(values) => {
            let mut out = Map::new();
            for (name, script) in values {
                let mut scope = state.scope(workflow);
                if let Some(vars) = scope.vars.as_object_mut() {
                    vars.extend(out.clone());
                }
                match engine.expr.eval(script, &scope) {
                    Ok(v) => {
                        out.insert(name.clone(), v);
                    }
                    Err(e) => return Ok(script_failure(format!("{name}: {e}"))),
                }
            }
            state.section("vars").extend(out.clone());
            Outcome::Succeeded { output: Value::Object(out), usage: vec![], next, input: None }
        }
        StepKind::WaitFor { event_type, timeout, on_timeout, .. } => {
            if claim.attempt > 0 {
                let target = on_timeout.as_ref().map(resolve).unwrap_or(next);
                Outcome::Succeeded { output: json!({ "matched": false, "timed_out": true }), usage: vec![], next: target, input: None }
            } else {
                Outcome::Waiting {
                    due_at: crate::clock::after(now, *timeout),
                    wait: Some(NewWait { event_type: event_type.clone() }),
                    output: None,
                }
            }
        }
        StepKind::End => Outcome::Succeeded { output: json!({}), usage: vec![], next: None, input: None },
    })
}

/// Whether this step execution already waited for a rate-limit slot that has now come. The
/// store is the authority, not the limiter: the slot was granted when the step was rescheduled,
/// so whichever process claims the wake-up sends (a limiter in another process, or one that
/// lost its memory, would otherwise queue the step again at the back).
async fn holds_rate_slot(engine: &Engine, claim: &Claim, now: i64) -> Result<bool> {
    let Some(row) = engine.store.step_row(&claim.run_id, claim.step_seq).await? else { return Ok(false) };
    let until = row
        .output
        .as_deref()
        .filter(|_| row.status == "pending")
        .and_then(|o| serde_json::from_str::<Value>(o).ok())
        .and_then(|o| o["rate_limited"]["until_ms"].as_i64());
    Ok(until.is_some_and(|t| t <= now))
}

/// For plans without overage: reserves the tokens the action expects to spend before anything is
/// sent. Returns the outcome to end the step with when it cannot go on (quota exceeded, lease
/// lost), or `None` to send.
async fn reserve_quota(
    engine: &Engine,
    token: &str,
    state: &mut RunState,
    claim: &Claim,
    action: &dyn crate::action::DynAction,
    input: &Value,
    now: i64,
) -> Result<Option<Outcome>> {
    let Some(plan) = metering::plan(&state.account.plan).filter(|p| p.overage_micros_per_token.is_none()) else {
        return Ok(None);
    };
    if state.reservation.is_some() {
        return Ok(None);
    }
    let need: i64 = action.estimate(input).iter().map(|u| engine.config.prices.charge(&u.unit, u.quantity).tokens_milli).sum();
    if need <= 0 {
        return Ok(None);
    }
    let period = metering::month_of(now, &state.account.timezone).0;
    let limit = plan.included_tokens_milli;
    match engine.store.reserve_tokens(&claim.run_id, token, &state.run.account_id, &period, need, limit).await? {
        Reservation::Held => {
            state.reservation = Some((period, need));
            Ok(None)
        }
        Reservation::LeaseLost => Ok(Some(Outcome::LeaseLost)),
        Reservation::Exceeded => Ok(Some(Outcome::Failed {
            error: ActionError::permanent(
                "quota_exceeded",
                format!(
                    "this step needs {} tokens and the {} plan's {} tokens this month are spent; nothing was sent. \
                     Upgrade the plan, then retry the run",
                    need as f64 / 1000.0,
                    plan.name,
                    limit / 1000
                ),
            ),
            then: Err(()),
            input: Some(input.clone()),
        })),
    }
}

/// Prometheus metrics of a step's outcome (exported at `GET /metrics`).
fn record_metrics(workflow: &Workflow, claim: &Claim, c: &Completion) {
    let kind = match &workflow.steps[claim.step_index as usize].kind {
        StepKind::Action { kind, .. } => kind.clone(),
        StepKind::Delay(_) => "delay".into(),
        StepKind::Branch(_) => "branch".into(),
        StepKind::WaitFor { .. } => "wait_for".into(),
        StepKind::Set(_) => "set".into(),
        StepKind::End => "end".into(),
    };
    metrics::counter!("switchboard_steps_total", "kind" => kind.clone(), "status" => c.step.status.clone()).increment(1);
    if let Some(started) = c.step.started_at {
        let seconds = (c.now - started).max(0) as f64 / 1000.0;
        metrics::histogram!("switchboard_step_duration_seconds", "kind" => kind.clone()).record(seconds);
    }
    let code = || {
        c.step.error.as_deref().and_then(|e| serde_json::from_str::<Value>(e).ok()).and_then(|e| e["code"].as_str().map(str::to_string))
    };
    match c.step.status.as_str() {
        // A pending step without an error is waiting for a rate-limit slot, not retrying.
        "pending" if c.step.error.is_some() => {
            metrics::counter!("switchboard_step_retries_total", "kind" => kind).increment(1)
        }
        "failed" | "outcome_unknown" => {
            metrics::counter!("switchboard_step_failures_total", "code" => code().unwrap_or_default()).increment(1)
        }
        _ => {}
    }
}

/// Parses a delay's `until`: RFC 3339 text or epoch milliseconds.
fn parse_time(v: &Value) -> std::result::Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("{n} is not a time")),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
            .map(|t| t.timestamp_millis())
            .map_err(|e| format!("'{s}' is not an RFC 3339 time: {e}")),
        other => Err(format!("{other} is not a time (use RFC 3339 text)")),
    }
}

fn error_json(error: &ActionError, step_id: &str) -> String {
    let mut v = serde_json::to_value(error).unwrap_or_default();
    v["step_id"] = json!(step_id);
    v.to_string()
}

/// Writes the outcome. Returns the claim to go on with when the next step is due at once.
async fn commit(
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
    let attempts = if is_action { claim.attempt + 1 } else { 1 };
    let mut step = StepRow {
        run_id: claim.run_id.clone(),
        seq: claim.step_seq,
        step_id: step_id.to_string(),
        status: String::new(),
        attempts,
        input: None,
        output: None,
        error: None,
        started_at: Some(started),
        finished_at: None,
        due_at: None,
    };
    let lease_until = crate::clock::after(now, engine.config.lease);
    let continue_at = |index: usize| Next::Continue {
        step_index: index as i64,
        step_seq: claim.step_seq + 1,
        attempt: 0,
        due_at: now,
        keep_lease: Some(lease_until),
    };
    // Test runs fast-forward every wait (delays, wait timeouts, retry backoff).
    let fast_forward = state.run.is_test == 1;
    let mut usage = Vec::new();
    let mut outbox = None;
    let mut wait = None;
    let clear_wait = matches!(definition.kind, StepKind::WaitFor { .. });
    let mut run_error = None;
    let (next, run_status) = match outcome {
        Outcome::LeaseLost => return Ok(None),
        Outcome::Succeeded { output, usage: used, next, input } => {
            step.status = "succeeded".into();
            step.finished_at = Some(now);
            step.output = Some(output.to_string());
            step.input = input.map(|v| v.to_string());
            state.record_output(step_id, &output);
            if state.run.is_test == 0 {
                // One ledger row per unit: an action reporting a unit twice is summed.
                let mut by_unit: Vec<Usage> = Vec::new();
                for u in used {
                    match by_unit.iter_mut().find(|b| b.unit == u.unit) {
                        Some(b) => b.quantity += u.quantity,
                        None => by_unit.push(u),
                    }
                }
                for u in by_unit {
                    let price = engine.config.prices.charge(&u.unit, u.quantity);
                    usage.push(NewUsage {
                        id: format!("{}:{}:{}", claim.run_id, claim.step_seq, u.unit),
                        step_id: Some(step_id.to_string()),
                        unit: u.unit,
                        quantity: u.quantity,
                        tokens_milli: price.tokens_milli,
                        cost_micros: price.cost_micros,
                        day: crate::metering::local_day(now, &state.account.timezone),
                    });
                }
            }
            match next {
                Some(i) => (continue_at(i), "running"),
                None => (Next::Finish, "succeeded"),
            }
        }
        Outcome::Sandboxed { output, outbox: o, next, input } => {
            step.status = "succeeded".into();
            step.finished_at = Some(now);
            step.output = Some(output.to_string());
            step.input = Some(input.to_string());
            state.record_output(step_id, &output);
            outbox = Some(o);
            match next {
                Some(i) => (continue_at(i), "running"),
                None => (Next::Finish, "succeeded"),
            }
        }
        Outcome::RateLimited { due_at, key, input } => {
            step.status = "pending".into();
            step.attempts = claim.attempt;
            step.due_at = Some(due_at);
            step.input = Some(input.to_string());
            step.output = Some(
                json!({ "rate_limited": { "key": key, "until": crate::clock::to_rfc3339(due_at), "until_ms": due_at } }).to_string(),
            );
            let next =
                Next::Continue { step_index: claim.step_index, step_seq: claim.step_seq, attempt: claim.attempt, due_at, keep_lease: None };
            (next, "waiting")
        }
        Outcome::Waiting { due_at, wait: w, output } => {
            step.status = "waiting".into();
            step.due_at = Some(due_at);
            step.output = output.map(|v| v.to_string());
            let next = if fast_forward {
                // A test run: the delay is over and the wait timed out at once; no real event
                // can resume it (its wait is not registered).
                Next::Continue { step_index: claim.step_index, step_seq: claim.step_seq, attempt: 1, due_at: now, keep_lease: Some(lease_until) }
            } else {
                wait = w;
                Next::Continue { step_index: claim.step_index, step_seq: claim.step_seq, attempt: 1, due_at, keep_lease: None }
            };
            (next, "waiting")
        }
        Outcome::Retry { error, due_at, input } => {
            step.status = "pending".into();
            step.due_at = Some(due_at);
            step.error = Some(error_json(&error, step_id));
            step.input = input.map(|v| v.to_string());
            let next = Next::Continue {
                step_index: claim.step_index,
                step_seq: claim.step_seq,
                attempt: claim.attempt + 1,
                due_at: if fast_forward { now } else { due_at },
                keep_lease: fast_forward.then_some(lease_until),
            };
            (next, "waiting")
        }
        Outcome::Failed { error, then, input } => {
            step.status = "failed".into();
            step.finished_at = Some(now);
            step.error = Some(error_json(&error, step_id));
            step.input = input.map(|v| v.to_string());
            match then {
                Ok(Some(i)) => (continue_at(i), "running"),
                Ok(None) => (Next::Finish, "succeeded"),
                Err(()) => {
                    run_error = step.error.clone();
                    (Next::Finish, "failed")
                }
            }
        }
        Outcome::Unknown { error, input } => {
            step.status = "outcome_unknown".into();
            step.finished_at = Some(now);
            step.error = Some(error_json(&error, step_id));
            step.input = input.map(|v| v.to_string());
            run_error = step.error.clone();
            (Next::Finish, "failed")
        }
    };
    // Plans without overage keep period counters: release what the step reserved, count what
    // it spent.
    let no_overage = metering::plan(&state.account.plan).is_some_and(|p| p.overage_micros_per_token.is_none());
    let spent: i64 = usage.iter().map(|u| u.tokens_milli).sum();
    let spend = (no_overage && spent > 0).then(|| (metering::month_of(now, &state.account.timezone).0, spent));
    let release = state.reservation.take();
    let quota = (release.is_some() || spend.is_some()).then_some(QuotaSettle { release, spend });
    let completion = Completion {
        run_id: claim.run_id.clone(),
        account_id: state.run.account_id.clone(),
        workflow_id: state.run.workflow_id.clone(),
        token: token.to_string(),
        step,
        next: next.clone(),
        run_status: run_status.to_string(),
        context: Some(state.context.to_string()),
        run_error,
        usage,
        wait,
        clear_wait,
        side_effect: is_action,
        quota,
        outbox,
        now,
    };
    record_metrics(workflow, claim, &completion);
    if !engine.store.complete(&completion).await? {
        tracing::info!(run_id = %claim.run_id, "stopping: the run was cancelled or another worker owns it now");
        return Ok(None);
    }
    after_commit(engine, &completion);
    state.run.status = run_status.to_string();
    state.run.started_at.get_or_insert(now);
    match next {
        Next::Continue { step_index, step_seq, attempt, keep_lease: Some(_), .. } => {
            state.run.step_index = step_index;
            state.run.step_seq = step_seq;
            Ok(Some(Claim {
                run_id: claim.run_id.clone(),
                step_index,
                step_seq,
                attempt,
                dispatching: 0,
                reserved_milli: 0,
                reserved_period: None,
            }))
        }
        _ => Ok(None),
    }
}

async fn finish_failed(
    engine: &Engine,
    token: &str,
    state: &mut RunState,
    claim: &Claim,
    step_id: &str,
    error: ActionError,
    now: i64,
) -> Result<()> {
    let err = error_json(&error, step_id);
    let completion = Completion {
        run_id: claim.run_id.clone(),
        account_id: state.run.account_id.clone(),
        workflow_id: state.run.workflow_id.clone(),
        token: token.to_string(),
        step: StepRow {
            run_id: claim.run_id.clone(),
            seq: claim.step_seq,
            step_id: step_id.to_string(),
            status: "failed".into(),
            attempts: 0,
            input: None,
            output: None,
            error: Some(err.clone()),
            started_at: Some(now),
            finished_at: Some(now),
            due_at: None,
        },
        next: Next::Finish,
        run_status: "failed".into(),
        context: None,
        run_error: Some(err),
        usage: vec![],
        wait: None,
        clear_wait: true,
        side_effect: false,
        quota: state.reservation.take().map(|r| QuotaSettle { release: Some(r), spend: None }),
        outbox: None,
        now,
    };
    if engine.store.complete(&completion).await? {
        after_commit(engine, &completion);
    }
    Ok(())
}

/// Logs a committed completion (inside the run's and step's spans) and tells live listeners
/// what changed: the step, and the run's end.
fn after_commit(engine: &Engine, c: &Completion) {
    let error = || c.step.error.as_deref().and_then(|e| serde_json::from_str::<Value>(e).ok()).unwrap_or_default();
    match c.step.status.as_str() {
        "failed" | "outcome_unknown" => {
            let e = error();
            tracing::warn!(status = %c.step.status, code = %e["code"].as_str().unwrap_or_default(), error = %e["message"].as_str().unwrap_or_default(), run_status = %c.run_status, "step ended without success");
        }
        "pending" if c.step.error.is_some() => {
            let e = error();
            tracing::info!(code = %e["code"].as_str().unwrap_or_default(), due_at = c.step.due_at, "step will be retried");
        }
        status => tracing::debug!(%status, run_status = %c.run_status, "step committed"),
    }
    if !engine.events.wants(&c.account_id) {
        return;
    }
    let event = |kind: &str| RunEvent::new(kind, &c.account_id, &c.run_id, &c.workflow_id, &c.run_status, c.now);
    engine.events.publish(RunEvent { step: Some(StepEvent::from_row(&c.step)), ..event("step.updated") });
    if crate::store::FINAL_RUN_STATUSES.contains(&c.run_status.as_str()) {
        engine.events.publish(event("run.finished"));
    }
}
