//! Executing one claimed step: rendering its input, running its action (or control step) under
//! the fences it needs (rate-limit slot, lease renewal, quota reservation, dispatching mark), and
//! saying how it ended as an [`Outcome`]. Nothing here writes the step's result: that is
//! [`super::commit`].

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::Engine;
use super::ingest::resolve;
use super::step::RunState;
use super::transition::{Outcome, Then};
use crate::Result;
use crate::action::{ActionContext, ActionError, Delivery, Recipient, Started};
use crate::contact::{self, Channel};
use crate::definition::{Delay, OnError, StepKind, Workflow};
use crate::metering;
use crate::status::StepStatus;
use crate::store::{Claim, Dispatch, FanOutSummary, NewChild, NewOutbox, NewWait, OptOutRow, Reservation, Spawn, StepRow};

/// Slack on top of an action's own timeout before the runtime gives up on it.
pub(super) const ACTION_GRACE: Duration = Duration::from_secs(2);

/// Executes the claimed step once.
pub(super) async fn execute(engine: &Engine, token: &str, state: &mut RunState, workflow: &Workflow, claim: &Claim, now: i64) -> Result<Outcome> {
    let step = &workflow.steps[claim.step_index as usize];
    let next = workflow.next_after(claim.step_index as usize);
    let script_failure = |e: String| Outcome::Failed { error: ActionError::permanent("script_error", e), then: Err(()), input: None };
    Ok(match &step.kind {
        StepKind::Action { kind, input, connection, retry, timeout, on_error, ignore_quiet_hours } => {
            let Some(action) = engine.actions.get(kind).cloned() else {
                return Ok(Outcome::Failed {
                    error: ActionError::permanent("unknown_action", format!("no action module '{kind}' in this build")),
                    then: Err(()),
                    input: None,
                });
            };
            let delivery = action.delivery();
            let failed_then = |on_error: &OnError| then_of(on_error, next);
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
            // Contact rules, before anything else is spent: a recipient who opted out is not
            // reached at all (read again when the send is marked, below); one in their quiet
            // hours is reached at the first minute they allow.
            let recipient = action.recipient(&rendered);
            if let Some(r) = &recipient
                && let Some(opt_out) = engine.store.opted_out(&state.run.account_id, &r.number, r.channel).await?
            {
                return Ok(skipped(r, &opt_out, next, rendered));
            }
            if let Some(deferred) = quiet_hours(state, kind, *ignore_quiet_hours, claim, now, &rendered) {
                return Ok(deferred);
            }
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
            let mut ctx = ActionContext {
                account_id: state.run.account_id.clone(),
                run_id: claim.run_id.clone(),
                step_id: step.id.clone(),
                step_seq: claim.step_seq,
                now,
                attempt: attempt as u32,
                idempotency_key: format!("{}:{}", claim.run_id, claim.step_seq),
                timeout: *timeout,
                connection,
                scope: None,
            };
            // Modules that render their own fields (voice scripts) get the run's scope, and the
            // account's business hours as they are now.
            if !action.raw_fields().is_empty() {
                let mut scope = state.scope(workflow);
                scope.hours = engine.store.hours_open(&state.run.account_id, now).await?;
                ctx.scope = Some(std::sync::Arc::new(scope));
            }
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
                    return Ok(Outcome::RateLimited { slot, key: limit.key, input: rendered });
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
                    status: StepStatus::Running,
                    attempts: claim.attempt,
                    input: Some(rendered.to_string()),
                    output: None,
                    error: None,
                    started_at: Some(now),
                    finished_at: None,
                    due_at: None,
                    rate_slot_at: None,
                    rate_slot_key: None,
                    deferred_handle: None,
                };
                let contact = recipient.as_ref().map(|r| (state.run.account_id.as_str(), r.number.as_str(), r.channel));
                match engine.store.mark_dispatching(token, &running, lease_until, contact).await? {
                    Dispatch::Marked => {}
                    Dispatch::LeaseLost => return Ok(Outcome::LeaseLost),
                    Dispatch::OptedOut(opt_out) => return Ok(skipped(recipient.as_ref().expect("checked a recipient"), &opt_out, next, rendered)),
                }
            }
            // The action enforces `timeout` itself and classifies what happened; this outer
            // bound only catches an action that ignores it.
            let result = match tokio::time::timeout(*timeout + ACTION_GRACE, action.start(&ctx, rendered.clone())).await {
                Ok(r) => r,
                Err(_) if delivery == Delivery::AtMostOnce => Err(ActionError::outcome_unknown(
                    "timeout",
                    format!("no answer within {}; the request may have been delivered", humantime::format_duration(*timeout)),
                )),
                Err(_) => Err(ActionError::retryable("timeout", format!("no answer within {}", humantime::format_duration(*timeout)))),
            };
            // The vendor says the recipient opted out (Twilio's 21610): remember it, as a STOP
            // reply would have told us, and skip the step.
            if let (Err(error), Some(r)) = (&result, &recipient)
                && error.code == ActionError::OPTED_OUT
            {
                let (opt_out, _) = engine.store.add_opt_out(&state.run.account_id, &r.number, Channel::All, OPTED_OUT_BY_VENDOR, now).await?;
                tracing::info!(number = %r.number, "the vendor refused a send to an opted-out recipient: opt-out recorded, step skipped");
                return Ok(skipped(r, &opt_out, next, rendered));
            }
            let input = Some(rendered);
            match result {
                Ok(Started::Done(out)) => Outcome::Succeeded { output: out.output, usage: out.usage, next, input },
                Ok(Started::Later(later)) => Outcome::Deferred { handle: later.handle, check_after: later.check_after, input },
                Err(error) => {
                    // The jittered backoff is drawn here, so that the transition stays pure; it
                    // decides whether there is a retry at all.
                    let backoff = retry.delay(attempt as u32, error.retry_after_ms.map(Duration::from_millis));
                    Outcome::ActionFailed { then: failed_then(on_error), input, max_attempts: retry.max_attempts, backoff, error }
                }
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
                let mut zone = None;
                let due_at = match delay {
                    Delay::For(d) => crate::clock::after(now, *d),
                    Delay::Until(t) => match t.render(&engine.expr, &state.scope(workflow)).and_then(|v| parse_time(&v)) {
                        Ok(at) if at > crate::clock::after(now, crate::definition::MAX_WAIT) => {
                            return Ok(Outcome::Failed {
                                error: ActionError::permanent(
                                    "invalid_time",
                                    format!(
                                        "'until' is more than 10 years ahead (the latest allowed now is {})",
                                        crate::clock::to_rfc3339(crate::clock::after(now, crate::definition::MAX_WAIT))
                                    ),
                                ),
                                then: Err(()),
                                input: None,
                            });
                        }
                        Ok(at) => at,
                        Err(e) => {
                            return Ok(Outcome::Failed { error: ActionError::permanent("invalid_time", e), then: Err(()), input: None });
                        }
                    },
                    Delay::At { minute, timezone } => {
                        // A zone that renders to nothing, or to a name that is not a zone (a
                        // lead without one), is the account's.
                        let name = match timezone.as_ref().map(|t| t.render(&engine.expr, &state.scope(workflow))) {
                            None => None,
                            Some(Ok(Value::String(s))) => Some(s),
                            Some(Ok(_)) => None,
                            Some(Err(e)) => {
                                return Ok(Outcome::Failed {
                                    error: ActionError::permanent("invalid_time", format!("timezone: {e}")),
                                    then: Err(()),
                                    input: None,
                                });
                            }
                        };
                        let (tz, _) = contact::zone(name.as_deref(), &state.account.timezone);
                        zone = Some(tz.name());
                        match contact::next_local_time(tz, *minute, now) {
                            Some(at) => at,
                            None => {
                                let error = ActionError::permanent("invalid_time", "no such local time ahead");
                                return Ok(Outcome::Failed { error, then: Err(()), input: None });
                            }
                        }
                    }
                };
                if due_at <= now {
                    Outcome::Succeeded { output: json!({ "waited_until": crate::clock::to_rfc3339(now) }), usage: vec![], next, input: None }
                } else {
                    let mut output = json!({ "until": crate::clock::to_rfc3339(due_at) });
                    if let Some(zone) = zone {
                        output["timezone"] = json!(zone);
                    }
                    Outcome::Waiting { until: due_at, wait: None, output: Some(output) }
                }
            }
        }
        StepKind::Branch(arms) => {
            let mut scope = state.scope(workflow);
            if arms.iter().any(|a| a.when.as_ref().is_some_and(|w| w.reads_hours())) {
                scope.hours = engine.store.hours_open(&state.run.account_id, now).await?;
            }
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
            let hours = if values.iter().any(|(_, s)| s.reads_hours()) { engine.store.hours_open(&state.run.account_id, now).await? } else { Value::Null };
            for (name, script) in values {
                let mut scope = state.scope(workflow);
                scope.hours = hours.clone();
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
                Outcome::Waiting { until: crate::clock::after(now, *timeout), wait: Some(NewWait { event_type: event_type.clone() }), output: None }
            }
        }
        StepKind::ForEach(f) => {
            if claim.attempt > 0 {
                // Woken by its last child's end, or at its re-check time.
                let summary = engine.store.fan_out_summary(&claim.run_id, claim.step_seq).await?;
                if summary.active > 0 {
                    Outcome::Children { until: crate::clock::after(now, FAN_OUT_RECHECK), spawn: None, output: fan_out_output(&summary) }
                } else {
                    Outcome::Succeeded { output: fan_out_output(&summary), usage: vec![], next, input: None }
                }
            } else {
                let invalid = |message: String| Outcome::Failed { error: ActionError::permanent("invalid_items", message), then: Err(()), input: None };
                let items = match f.items.render(&engine.expr, &state.scope(workflow)) {
                    Ok(Value::Array(items)) => items,
                    Ok(other) => return Ok(invalid(format!("items must be a list, and it is {}", json_type(&other)))),
                    Err(e) => return Ok(invalid(format!("rendering the items failed: {e}"))),
                };
                if items.len() > f.max_items as usize {
                    let error = ActionError::permanent(
                        "too_many_items",
                        format!("the list has {} items and this for_each takes at most {} (max_items); nothing was started", items.len(), f.max_items),
                    );
                    return Ok(Outcome::Failed { error, then: Err(()), input: None });
                }
                if items.is_empty() {
                    return Ok(Outcome::Succeeded { output: fan_out_output(&FanOutSummary::default()), usage: vec![], next, input: None });
                }
                let is_test = state.run.is_test == 1;
                let total = items.len();
                let children = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let id = super::new_id();
                        let usage = (!is_test).then(|| engine.start_charge(&id, &state.account.timezone, now));
                        let context = json!({ "each": { "as": f.as_name, "item": item, "step": claim.step_index } }).to_string();
                        NewChild { id, item_index: i as i64, context, usage }
                    })
                    .collect();
                let spawn = Spawn {
                    parent_seq: claim.step_seq,
                    event_id: state.run.event_id.clone(),
                    event: state.run.event.clone(),
                    version: state.run.version,
                    is_test,
                    admit: f.concurrency as usize,
                    children,
                };
                let output = json!({ "total": total, "concurrency": f.concurrency, "waiting_for_children": true });
                Outcome::Children { until: crate::clock::after(now, FAN_OUT_RECHECK), spawn: Some(spawn), output }
            }
        }
        StepKind::End => Outcome::Succeeded { output: json!({}), usage: vec![], next: None, input: None },
    })
}

/// How long a `for_each` waits before it looks at its children again if nothing woke it (the
/// last child's end wakes it at once; this only bounds a wake-up that was missed).
const FAN_OUT_RECHECK: Duration = Duration::from_secs(3600);

/// A fan-out's output: `{total, succeeded, failed, cancelled, children}` (the first 1,000 child
/// run ids; `children_truncated` past that: `GET /v1/runs?parent_run_id=` lists them all).
fn fan_out_output(s: &FanOutSummary) -> Value {
    let mut out = json!({ "total": s.total, "succeeded": s.succeeded, "failed": s.failed, "cancelled": s.cancelled, "children": s.children });
    if s.active > 0 {
        out["active"] = json!(s.active);
        out["waiting_for_children"] = json!(true);
    }
    if s.total > s.children.len() as i64 {
        out["children_truncated"] = json!(true);
    }
    out
}

/// A JSON value's type, for messages.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The source of an opt-out the vendor told us about by refusing a send.
const OPTED_OUT_BY_VENDOR: &str = "twilio_21610";

/// A send to an opted-out recipient: skipped, unsent and unbilled; the run goes on.
fn skipped(recipient: &Recipient, opt_out: &OptOutRow, next: Option<usize>, input: Value) -> Outcome {
    let output = json!({
        "skipped": "opted_out",
        "number": recipient.number,
        "channel": recipient.channel.as_str(),
        "opt_out": { "channel": opt_out.channel, "source": opt_out.source, "created_at": crate::clock::to_rfc3339(opt_out.created_at) },
    });
    Outcome::Skipped { output, next, input }
}

/// The quiet hours of the person an action step reaches, if they hold it now: the step waits
/// until the first minute they allow (`None`: go on). The lead's timezone (`event.lead.timezone`)
/// decides, else the account's. What happened is noted for the run's timeline. A test run is
/// fast-forwarded past them: its second look at the same attempt goes on.
fn quiet_hours(state: &mut RunState, kind: &str, ignore: bool, claim: &Claim, now: i64, input: &Value) -> Option<Outcome> {
    if !state.contact_rules().applies_to(kind) {
        return None;
    }
    let (tz, _) = contact::zone(state.lead_timezone(), &state.account.timezone);
    let until = state.contact_rules().deferral(tz, now)?;
    let until_text = crate::clock::to_rfc3339(until);
    if ignore {
        state.set_contact_note(claim.step_seq, json!({ "quiet_hours": "ignored", "timezone": tz.name(), "would_wait_until": until_text }));
        return None;
    }
    let fast_forward = state.run.is_test == 1;
    if fast_forward && state.contact_note(claim.step_seq).is_some_and(|n| n["quiet_hours"] == "deferred" && n["attempt"] == claim.attempt) {
        return None;
    }
    let mut note = json!({ "quiet_hours": "deferred", "until": until_text, "timezone": tz.name(), "attempt": claim.attempt });
    if fast_forward {
        note["fast_forwarded"] = json!(true);
    }
    state.set_contact_note(claim.step_seq, note);
    Some(Outcome::QuietHours { until, output: json!({ "deferred": "quiet_hours", "until": until_text, "timezone": tz.name() }), input: input.clone() })
}

/// Where the run goes when an action step fails for good, by its `on_error`.
pub(super) fn then_of(on_error: &OnError, next: Option<usize>) -> Then {
    match on_error {
        OnError::Fail => Err(()),
        OnError::Continue => Ok(next),
        OnError::Goto(t) => Ok(resolve(t)),
    }
}

/// Whether this step execution already waited for a rate-limit slot that has now come. The
/// store is the authority, not the limiter: the slot was granted when the step was rescheduled,
/// so whichever process claims the wake-up sends (a limiter in another process, or one that
/// lost its memory, would otherwise queue the step again at the back).
async fn holds_rate_slot(engine: &Engine, claim: &Claim, now: i64) -> Result<bool> {
    let Some(row) = engine.store.step_row(&claim.run_id, claim.step_seq).await? else { return Ok(false) };
    Ok(row.status == StepStatus::Throttled && row.rate_slot_at.is_some_and(|t| t <= now))
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

/// Parses a delay's `until`: RFC 3339 text or epoch milliseconds.
fn parse_time(v: &Value) -> std::result::Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("{n} is not a time")),
        Value::String(s) => {
            chrono::DateTime::parse_from_rfc3339(s.trim()).map(|t| t.timestamp_millis()).map_err(|e| format!("'{s}' is not an RFC 3339 time: {e}"))
        }
        other => Err(format!("{other} is not a time (use RFC 3339 text)")),
    }
}
