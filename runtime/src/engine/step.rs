//! Driving a claimed run: loading its state, then executing one step after another
//! ([`super::execute`]) and committing each outcome ([`super::commit`]) while the next step is
//! due at once.

use serde_json::{Map, Value, json};
use tracing::Instrument;

use super::Engine;
use super::commit::{commit, finish_failed};
use super::execute::execute;
use super::later;
use super::transition::Outcome;
use crate::action::ActionError;
use crate::contact::ContactRules;
use crate::definition::Workflow;
use crate::expr::{Item, ScopeData};
use crate::store::{Account, Claim, RunRow};
use crate::{Error, Result};

/// More step executions than this in one run means something is wrong (cycles are refused at
/// save time, so only a pathological `on_error: goto` chain could get here).
const MAX_STEPS_PER_RUN: i64 = 10_000;

/// A run being executed: its row with the JSON parsed once.
pub(crate) struct RunState {
    pub(crate) run: RunRow,
    event: Value,
    pub(crate) context: Value,
    pub(crate) account: Account,
    /// The quota reservation the current step holds: (period, tokens in thousandths).
    pub(crate) reservation: Option<(String, i64)>,
    /// The account's contact rules, parsed when a step first asks for them.
    contact_rules: Option<ContactRules>,
    /// Whether `context` changed since it was loaded or last committed: a step that changed
    /// nothing in it (a delay, a branch, a wait starting) does not rewrite the document.
    context_changed: bool,
}

impl RunState {
    pub(crate) async fn load(engine: &Engine, run: RunRow) -> Result<Self> {
        let event = serde_json::from_str(&run.event)?;
        let mut context: Value = serde_json::from_str(&run.context)?;
        if !context.is_object() {
            context = json!({});
        }
        let account = engine.account(&run.account_id).await?;
        Ok(Self { run, event, context, account, reservation: None, contact_rules: None, context_changed: false })
    }

    /// The account's contact rules (parsed once per claim, not once per step).
    pub(crate) fn contact_rules(&mut self) -> &ContactRules {
        self.contact_rules.get_or_insert_with(|| ContactRules::from_stored(self.account.contact_rules.as_deref()))
    }

    /// A `for_each` child's parent: (run, step execution).
    pub(crate) fn parent(&self) -> Option<(String, i64)> {
        Some((self.run.parent_run_id.clone()?, self.run.parent_seq?))
    }

    /// A `for_each` child's item (`context.each`), as its scripts read it.
    fn item(&self) -> Option<Item> {
        let each = self.context.get("each")?;
        Some(Item {
            name: each.get("as")?.as_str()?.to_string(),
            value: each.get("item").cloned().unwrap_or_default(),
            index: self.run.item_index.unwrap_or(0),
        })
    }

    /// What scripts see.
    pub(crate) fn scope(&self, workflow: &Workflow) -> ScopeData {
        ScopeData {
            item: self.item(),
            event: self.event.clone(),
            steps: self.context.get("steps").cloned().unwrap_or_else(|| json!({})),
            vars: self.context.get("vars").cloned().unwrap_or_else(|| json!({})),
            params: workflow.params.clone(),
            run: json!({ "id": self.run.id, "started_at": self.run.started_at.or(Some(self.run.created_at)).map(crate::clock::to_rfc3339) }),
            account: json!({ "id": self.account.id, "timezone": self.account.timezone }),
            ..ScopeData::default()
        }
    }

    /// The lead's timezone as the event gives it (`event.lead.timezone`), for the contact rules.
    pub(crate) fn lead_timezone(&self) -> Option<&str> {
        // A `for_each` child reaches its item: the item's timezone first.
        let item = self.context.pointer("/each/item/timezone").and_then(Value::as_str);
        item.or_else(|| self.event.pointer("/lead/timezone").and_then(Value::as_str))
    }

    /// What the contact rules did to a step execution (`context.contact["<seq>"]`, shown in
    /// the run's timeline as the step's `contact_rules`).
    pub(crate) fn contact_note(&self, seq: i64) -> Option<&Value> {
        self.context.get("contact")?.get(seq.to_string())
    }

    /// Records what the contact rules did to a step execution; committed with its outcome.
    pub(crate) fn set_contact_note(&mut self, seq: i64, note: Value) {
        self.section("contact").insert(seq.to_string(), note);
    }

    pub(crate) fn section(&mut self, name: &str) -> &mut Map<String, Value> {
        self.context_changed = true;
        let ctx = self.context.as_object_mut().expect("context is an object");
        ctx.entry(name).or_insert_with(|| json!({})).as_object_mut().expect("context section is an object")
    }

    /// The context document to commit with a step's outcome: `None` when the step left it as
    /// it was (the stored one stays). Counts as committed from here on.
    pub(crate) fn take_changed_context(&mut self) -> Option<String> {
        std::mem::take(&mut self.context_changed).then(|| self.context.to_string())
    }

    /// Makes a step's output visible as `steps.<id>.output`.
    pub(crate) fn record_output(&mut self, step_id: &str, output: &Value) {
        self.section("steps").insert(step_id.to_string(), json!({ "output": output }));
    }
}

pub(super) async fn process(engine: &Engine, token: &str, mut claim: Claim, run: Option<RunRow>) -> Result<()> {
    let run = match run {
        Some(run) => run,
        None => match engine.store.run_by_id(&claim.run_id).await? {
            Some(run) => run,
            None => return Ok(()),
        },
    };
    let workflow = engine.run_workflow(&run).await;
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
            if claim.step_seq > MAX_STEPS_PER_RUN {
                let outcome = Outcome::Failed {
                    error: ActionError::permanent("too_many_steps", format!("the run executed more than {MAX_STEPS_PER_RUN} steps")),
                    then: Err(()),
                    input: None,
                };
                return commit(engine, token, &mut state, &workflow, &claim, outcome, now).await;
            }
            if let Some(row) = later::awaiting(engine, &claim).await? {
                // The deadline of a step that finishes later passed without a completion: poll.
                let outcome = later::poll(engine, &state, &workflow, &claim, row).await?;
                return commit(engine, token, &mut state, &workflow, &later::completing(&claim), outcome, now).await;
            }
            let outcome = execute(engine, token, &mut state, &workflow, &claim, now).await?;
            commit(engine, token, &mut state, &workflow, &claim, outcome, now).await
        };
        let Some(next_claim) = step.instrument(span).await? else {
            return Ok(());
        };
        claim = next_claim;
    }
}
