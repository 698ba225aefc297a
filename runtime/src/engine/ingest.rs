//! Accepting work: manual runs, webhooks and app events. Each is one transaction that records
//! the event, its runs (queued, due now) and the waits it resumes; the caller answers 2xx only
//! after it commits.

use serde::Serialize;
use serde_json::{Value, json};

use super::{Engine, new_id};
use crate::Result;
use crate::action::ActionError;
use crate::definition::{StepKind, Target, Trigger};
use crate::events::{RunEvent, StepEvent};
use crate::status::{RunStatus, StepStatus};
use crate::store::{HookTarget, NewEvent, NewRun, NewUsage, QuotaCheck, Recorded, Resume, WorkflowRow};

/// How long an `Idempotency-Key` on a webhook protects against repeats.
const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// The answer to an accepted webhook or manual run.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct HookAccepted {
    /// The recorded event.
    pub event_id: String,
    /// The run it started.
    pub run_id: String,
}

/// The answer to an accepted app event.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct EventAccepted {
    /// The recorded event.
    pub event_id: String,
    /// The runs it started.
    pub run_ids: Vec<String>,
}

impl Engine {
    fn new_run(&self, workflow_id: &str, version: i64, event: &Value, is_test: bool, timezone: &str, now: i64) -> NewRun {
        let id = new_id();
        let usage = (!is_test).then(|| self.start_charge(&id, timezone, now));
        NewRun { id, workflow_id: workflow_id.to_string(), version, event: event.to_string(), is_test, usage, lease: None }
    }

    /// A run's `workflow_run` charge.
    pub(super) fn start_charge(&self, run_id: &str, timezone: &str, now: i64) -> NewUsage {
        let price = self.config.prices.charge("workflow_run", 1);
        NewUsage {
            id: format!("{run_id}:run"),
            step_id: None,
            unit: "workflow_run".into(),
            quantity: 1,
            tokens_milli: price.tokens_milli,
            cost_micros: price.cost_micros,
            day: crate::metering::local_day(now, timezone),
        }
    }

    /// Re-runs a failed run from its failed step (see [`crate::store::Store::retry_run`]); a run
    /// that never paid its start (refused for quota) pays it now, under the same quota.
    pub async fn retry_run(&self, account_id: &str, run_id: &str) -> Result<Option<bool>> {
        let now = self.clock.now();
        let account = self.account(account_id).await?;
        let charge = self.start_charge(run_id, &account.timezone, now);
        let quota = self.quota_check(account_id, now).await?;
        let answer = self.store.retry_run(account_id, run_id, now, Some((&charge, quota.as_ref()))).await?;
        if answer == Some(true) {
            self.notify();
            self.publish_run(account_id, run_id, "run.retried", now).await;
        }
        Ok(answer)
    }

    /// Cancels a run (see [`crate::store::Store::cancel_run`]) and tells live listeners.
    pub async fn cancel_run(&self, account_id: &str, run_id: &str) -> Result<Option<bool>> {
        let now = self.clock.now();
        let answer = self.store.cancel_run(account_id, run_id, now).await?;
        if answer == Some(true) {
            self.publish_run(account_id, run_id, "run.finished", now).await;
        }
        Ok(answer)
    }

    /// Tells live listeners about the waits an event resumed: the wait step succeeded (with the
    /// event as its output), and the run finished if the wait was its last step. A wait whose
    /// timeout won the race was not resumed: its run still waits at the same step.
    async fn publish_resumed(&self, account_id: &str, resumes: &[Resume], now: i64) {
        if resumes.is_empty() || !self.events.wants(account_id) {
            return;
        }
        for r in resumes {
            let Ok(Some(run)) = self.store.run_by_id(&r.run_id).await else { continue };
            if run.status == RunStatus::Waiting && run.step_seq == r.step_seq {
                continue;
            }
            let step = StepEvent {
                id: r.step_id.clone(),
                seq: r.step_seq,
                status: StepStatus::Succeeded,
                attempts: 1,
                due_at: None,
                output: serde_json::from_str(&r.output).ok(),
                error: None,
            };
            let event = |kind: &str| RunEvent::new(kind, account_id, &r.run_id, &run.workflow_id, run.status, now);
            self.events.publish(RunEvent { step: Some(step), ..event("step.updated") });
            if run.status.is_final() {
                self.events.publish(event("run.finished"));
            }
        }
    }

    /// Publishes a run-level event with the run's status as committed.
    async fn publish_run(&self, account_id: &str, run_id: &str, kind: &str, now: i64) {
        if !self.events.wants(account_id) {
            return;
        }
        if let Ok(Some(run)) = self.store.run_by_id(run_id).await {
            self.events.publish(RunEvent::new(kind, account_id, run_id, &run.workflow_id, run.status, now));
        }
    }

    /// Starts a run of a workflow through the API, with `payload` as `event`.
    pub async fn start_manual(&self, workflow: &WorkflowRow, payload: Value) -> Result<HookAccepted> {
        let now = self.clock.now();
        self.start_one(&workflow.account_id, &workflow.id, workflow.version, payload, "manual", None, now).await
    }

    /// Starts a test run of a workflow: every send goes to the outbox, delays, retry
    /// backoffs and wait timeouts are fast-forwarded, nothing is billed. Drive it with
    /// [`Engine::drive_run`].
    pub async fn start_test(&self, workflow: &WorkflowRow, payload: Value) -> Result<HookAccepted> {
        let now = self.clock.now();
        self.start_one(&workflow.account_id, &workflow.id, workflow.version, payload, "test", None, now).await
    }

    /// Starts a run for an inbound call to a number bound to `workflow` (event type and source
    /// `call`). Twilio repeating the same call's webhook (its `CallSid`) within 24 h starts
    /// nothing and answers the first run.
    pub async fn start_call(&self, workflow: &WorkflowRow, payload: Value, call_sid: &str) -> Result<HookAccepted> {
        let now = self.clock.now();
        let dedupe = (format!("call:{call_sid}"), now - 24 * 3_600_000);
        self.start_one(&workflow.account_id, &workflow.id, workflow.version, payload, "call", Some(dedupe), now).await
    }

    /// Accepts a webhook for a workflow. A repeat of `idempotency_key` within 24 h answers the
    /// first answer and starts nothing.
    pub async fn accept_webhook(&self, workflow: &HookTarget, payload: Value, idempotency_key: Option<&str>) -> Result<HookAccepted> {
        let now = self.clock.now();
        let dedupe = idempotency_key.map(|k| (format!("hook:{}:{k}", workflow.id), now - IDEMPOTENCY_WINDOW_MS));
        self.start_one(&workflow.account_id, &workflow.id, workflow.version, payload, "webhook", dedupe, now).await
    }

    /// Records an event that starts exactly one run of one workflow (manual starts, webhooks,
    /// test runs — `source` "test"); `dedupe` is the repeat key and the start of its window.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start_one(
        &self,
        account_id: &str,
        workflow_id: &str,
        version: i64,
        payload: Value,
        source: &str,
        dedupe: Option<(String, i64)>,
        now: i64,
    ) -> Result<HookAccepted> {
        let (dedupe_key, dedupe_since) = dedupe.map_or((None, None), |(k, since)| (Some(k), Some(since)));
        if let Some(first) = self.repeat_answer(account_id, dedupe_key.as_deref(), dedupe_since).await? {
            return Ok(first);
        }
        let timezone = self.account(account_id).await?.timezone;
        let run = self.new_run(workflow_id, version, &payload, source == "test", &timezone, now);
        let answer = HookAccepted { event_id: new_id(), run_id: run.id.clone() };
        let event = NewEvent {
            id: answer.event_id.clone(),
            account_id: account_id.to_string(),
            event_type: source.to_string(),
            // The run holds the payload.
            data: None,
            source: source.to_string(),
            dedupe_key,
            dedupe_since,
            response: serde_json::to_string(&answer)?,
            now,
        };
        self.record(event, vec![run], vec![], answer).await
    }

    /// The first answer to a repeat of `dedupe_key`, if one was recorded after `since`. Checked
    /// before any work; `record_event` checks again inside its transaction.
    async fn repeat_answer<T: serde::de::DeserializeOwned>(&self, account_id: &str, dedupe_key: Option<&str>, since: Option<i64>) -> Result<Option<T>> {
        let Some(key) = dedupe_key else { return Ok(None) };
        match self.store.recorded_response(account_id, key, since).await? {
            Some(first) => Ok(Some(serde_json::from_str(&first)?)),
            None => Ok(None),
        }
    }

    /// Accepts an app event: starts every enabled workflow of the account whose trigger matches
    /// (type and `when`), and resumes every waiting `wait_for` of the account whose `match` holds.
    /// The same `id` again answers the first answer and starts nothing.
    pub async fn accept_event(&self, account_id: &str, event_type: &str, data: Value, id: Option<&str>) -> Result<EventAccepted> {
        let now = self.clock.now();
        let dedupe_key = id.map(|i| format!("event:{i}"));
        if let Some(first) = self.repeat_answer(account_id, dedupe_key.as_deref(), None).await? {
            return Ok(first);
        }
        let event_id = new_id();
        let timezone = self.account(account_id).await?.timezone;
        let mut runs = Vec::new();
        for w in self.store.workflows_for_event(account_id, event_type).await? {
            let Some(compiled) = self.usable_workflow(&w.id, w.version).await? else { continue };
            if let Trigger::Event { when: Some(when), .. } = &compiled.trigger {
                let scope =
                    crate::expr::ScopeData { event: data.clone(), params: compiled.params.clone(), account: json!({ "id": account_id }), ..Default::default() };
                match self.expr.eval_bool(when, &scope) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(workflow_id = %w.id, error = %e, "trigger filter failed; workflow not started");
                        continue;
                    }
                }
            }
            runs.push(self.new_run(&w.id, w.version, &data, false, &timezone, now));
        }
        let resumes = self.matching_waits(account_id, event_type, &event_id, &data).await?;
        let answer = EventAccepted { event_id: event_id.clone(), run_ids: runs.iter().map(|r| r.id.clone()).collect() };
        let event = NewEvent {
            id: event_id,
            account_id: account_id.to_string(),
            event_type: event_type.to_string(),
            data: runs.is_empty().then(|| data.to_string()),
            source: "api".into(),
            dedupe_key,
            dedupe_since: None,
            response: serde_json::to_string(&answer)?,
            now,
        };
        self.record(event, runs, resumes, answer).await
    }

    /// Accepts a verified Stripe event (the whole event object Stripe delivered): starts every
    /// enabled workflow of the account whose `trigger.stripe.events` lists its `type` (or `*`),
    /// with the event as `event`. Stripe redelivers until it gets a 2xx: the same event `id`
    /// again answers the first answer and starts nothing. Waiting `wait_for` steps are not
    /// resumed by Stripe events.
    pub async fn accept_stripe_event(&self, account_id: &str, event: Value) -> Result<EventAccepted> {
        let now = self.clock.now();
        let event_type = event.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
        let dedupe_key = event.get("id").and_then(Value::as_str).map(|id| format!("stripe:{id}"));
        if let Some(first) = self.repeat_answer(account_id, dedupe_key.as_deref(), None).await? {
            return Ok(first);
        }
        let timezone = self.account(account_id).await?.timezone;
        let mut runs = Vec::new();
        for w in self.store.workflows_with_trigger(account_id, "stripe").await? {
            let Some(compiled) = self.usable_workflow(&w.id, w.version).await? else { continue };
            if compiled.trigger.wants_stripe(&event_type) {
                runs.push(self.new_run(&w.id, w.version, &event, false, &timezone, now));
            }
        }
        let event_id = new_id();
        let answer = EventAccepted { event_id: event_id.clone(), run_ids: runs.iter().map(|r| r.id.clone()).collect() };
        let event = NewEvent {
            id: event_id,
            account_id: account_id.to_string(),
            event_type,
            data: runs.is_empty().then(|| event.to_string()),
            source: "stripe".into(),
            dedupe_key,
            dedupe_since: None,
            response: serde_json::to_string(&answer)?,
            now,
        };
        self.record(event, runs, vec![], answer).await
    }

    /// Commits an event: through group commit when nothing can conflict (no dedupe key, no
    /// waits to resume), else in a transaction of its own that checks for repeats.
    async fn record<T: serde::de::DeserializeOwned>(&self, event: NewEvent, mut runs: Vec<NewRun>, resumes: Vec<Resume>, answer: T) -> Result<T> {
        let quota = self.quota_check(&event.account_id, event.now).await?;
        let created: Vec<(String, String)> = runs.iter().map(|r| (r.id.clone(), r.workflow_id.clone())).collect();
        let (account_id, now) = (event.account_id.clone(), event.now);
        if event.dedupe_key.is_none() && resumes.is_empty() && quota.is_none() {
            let handoffs = self.hand_off(&event, &mut runs);
            let all_handed = handoffs.len() == runs.len();
            self.record_accepted(event, runs, handoffs).await?;
            if !all_handed {
                self.notify();
            }
            self.publish_created(&account_id, created, false, now).await;
            return Ok(answer);
        }
        match self.store.record_event(&event, &runs, &resumes, quota.as_ref()).await? {
            Recorded::New => {
                self.notify();
                self.publish_created(&account_id, created, quota.is_some(), now).await;
                self.publish_resumed(&account_id, &resumes, now).await;
                Ok(answer)
            }
            Recorded::Repeat(first) => Ok(serde_json::from_str(&first)?),
        }
    }

    /// Tells live listeners about committed runs. Under a quota a run may have been recorded
    /// as refused (`failed`), so its status is read back rather than assumed.
    async fn publish_created(&self, account_id: &str, runs: Vec<(String, String)>, read_status: bool, now: i64) {
        if !self.events.wants(account_id) {
            return;
        }
        for (run_id, workflow_id) in runs {
            let status = match read_status {
                true => self.store.run_by_id(&run_id).await.ok().flatten().map_or(RunStatus::Queued, |r| r.status),
                false => RunStatus::Queued,
            };
            self.events.publish(RunEvent::new("run.created", account_id, &run_id, &workflow_id, status, now));
        }
    }

    /// The quota to enforce when an account's plan has no overage.
    async fn quota_check(&self, account_id: &str, now: i64) -> Result<Option<QuotaCheck>> {
        let account = self.account(account_id).await?;
        let Some(plan) = crate::metering::plan(&account.plan).filter(|p| p.overage_micros_per_token.is_none()) else {
            return Ok(None);
        };
        let error = ActionError::permanent(
            "quota_exceeded",
            format!("the {} plan's {} tokens this month are spent; upgrade the plan, then retry the run", plan.name, plan.included_tokens_milli / 1000),
        );
        Ok(Some(QuotaCheck {
            period: crate::metering::month_of(now, &account.timezone).0,
            limit_milli: plan.included_tokens_milli,
            error: serde_json::to_string(&error)?,
        }))
    }

    /// A workflow version, or `None` (logged) when the stored version no longer validates, so one
    /// broken workflow cannot block an account's events.
    async fn usable_workflow(&self, workflow_id: &str, version: i64) -> Result<Option<crate::definition::SharedWorkflow>> {
        usable(self.workflow(workflow_id, version).await, workflow_id, version)
    }

    /// [`Engine::usable_workflow`] of the steps a run executes (a `for_each` child's are its body).
    async fn usable_run_workflow(&self, run: &crate::store::RunRow) -> Result<Option<crate::definition::SharedWorkflow>> {
        usable(self.run_workflow(run).await, &run.workflow_id, run.version)
    }

    /// The waiting `wait_for` steps of the account this event resumes.
    async fn matching_waits(&self, account_id: &str, event_type: &str, event_id: &str, data: &Value) -> Result<Vec<Resume>> {
        let mut resumes = Vec::new();
        for (run, wait_seq) in self.store.waiting_runs(account_id, event_type).await? {
            let Some(workflow) = self.usable_run_workflow(&run).await? else { continue };
            let Some(step) = workflow.steps.get(run.step_index as usize) else { continue };
            let StepKind::WaitFor { matcher, .. } = &step.kind else { continue };
            let mut state = super::step::RunState::load(self, run).await?;
            if let Some(matcher) = matcher {
                let mut scope = state.scope(&workflow);
                scope.event = data.clone();
                match self.expr.eval_bool(matcher, &scope) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(run_id = %state.run.id, error = %e, "wait_for match failed; not resumed");
                        continue;
                    }
                }
            }
            let output = json!({ "matched": true, "event": { "id": event_id, "type": event_type, "data": data } });
            state.record_output(&step.id, &output);
            let next_index = workflow.next_after(state.run.step_index as usize).map(|i| i as i64);
            resumes.push(Resume {
                run_id: state.run.id.clone(),
                step_seq: wait_seq,
                step_id: step.id.clone(),
                output: output.to_string(),
                context: state.context.to_string(),
                next_index,
            });
        }
        Ok(resumes)
    }
}

/// A compiled workflow, or `None` (logged) when its stored version no longer validates.
fn usable(found: Result<crate::definition::SharedWorkflow>, workflow_id: &str, version: i64) -> Result<Option<crate::definition::SharedWorkflow>> {
    match found {
        Ok(w) => Ok(Some(w)),
        Err(crate::Error::Invalid(problems)) => {
            tracing::warn!(%workflow_id, version, ?problems, "stored workflow version no longer validates; skipped");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Where a target leads: a step index, or `None` for the end of the run.
pub(crate) fn resolve(target: &Target) -> Option<usize> {
    match target {
        Target::Step(i) => Some(*i),
        Target::End => None,
    }
}
