//! Inbound calls: a call to one of an account's numbers starts a run of the workflow bound to it,
//! whose first step, `voice.answer`, answers the caller with a voice script.
//!
//! Twilio's "a call comes in" webhook (`POST /callbacks/twilio/{connection_id}/voice`) is
//! answered by [`Calls::inbound`] in the same request: it finds the number's workflow, starts
//! the run (event `{call: {sid, from, to, caller_name, direction: "inbound"}}`), keeps the call
//! in `voice_calls` and answers the script's first document. The `voice.answer` step, when a
//! worker runs it, attaches itself to that call and waits until it has ended (from the
//! number's status callback, or by asking Twilio after `wait_timeout`); the steps after it run
//! after the call (e.g. a CRM task with the voicemail's URL).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchboard_runtime::action::{Action, ActionContext, ActionError, Delivery, Done, Later, Poll, SandboxSend, Started};
use switchboard_runtime::definition::{StepKind, Trigger};
use switchboard_runtime::engine::Engine;
use switchboard_runtime::expr::{ExprEngine, ScopeData};
use switchboard_runtime::metering::{Unit, Usage, voice_minutes};
use switchboard_runtime::store::CallRow;

use super::call::{CallOutput, CallbackError, Calls, StoredScope, Tier, outcome};
use super::machine::{CallState, Machine, param};
use super::script::{self, Script, seconds};
use super::twiml::{self, Verb};

/// How soon a `voice.answer` that ran before its call was recorded looks again.
const ATTACH_RETRY: Duration = Duration::from_secs(2);

/// What a number that answers nothing says.
const NOT_IN_SERVICE: &str = "Sorry, this number is not in service. Goodbye.";

/// The input of `voice.answer`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerInput {
    /// The voice script the caller hears (see docs/voice.md); rendered during the call.
    #[schemars(with = "Vec<Value>")]
    pub script: Value,
    /// `standard` (default) or `premium`: the minutes' price.
    #[serde(default)]
    pub tier: Tier,
    /// The default voice of `say` nodes.
    pub voice: Option<String>,
    /// The default language of `say` nodes.
    pub language: Option<String>,
    /// How long to wait for the call's final status before asking Twilio (2h).
    #[serde(default = "two_hours", deserialize_with = "seconds")]
    #[schemars(with = "Value")]
    pub wait_timeout: Duration,
}

fn two_hours() -> Duration {
    Duration::from_secs(7200)
}

/// The `voice.answer` action module.
pub struct VoiceAnswer {
    engine: ExprEngine,
    public_url: String,
    calls: Option<Arc<Calls>>,
}

impl std::fmt::Debug for VoiceAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceAnswer").finish_non_exhaustive()
    }
}

impl VoiceAnswer {
    /// Answers the calls kept in `calls`' store; callback URLs under `public_url`.
    pub fn new(public_url: String, calls: Option<Arc<Calls>>) -> Self {
        Self { engine: ExprEngine::for_voice(), public_url: public_url.trim_end_matches('/').to_owned(), calls }
    }

    /// The run's call, attached to this step execution; done if it has ended.
    async fn attach(&self, ctx: &ActionContext) -> Result<Option<Poll<CallOutput>>, ActionError> {
        let calls = self.calls.as_ref().ok_or_else(|| ActionError::permanent("misconfigured", "this process cannot answer calls: no call store"))?;
        let store = calls.store();
        let Some(row) = store.call_of_run(&ctx.run_id).await.map_err(|e| ActionError::retryable("store_unavailable", e.to_string()))? else {
            return Ok(None);
        };
        if row.step_seq != ctx.step_seq {
            store.attach_call_step(&row.token, ctx.step_seq).await.map_err(|e| ActionError::retryable("store_unavailable", e.to_string()))?;
        }
        if row.ended == 1 {
            let (output, usage) = outcome(&row);
            return Ok(Some(Poll::Done(Done { output, usage })));
        }
        Ok(Some(Poll::NotYet { check_after: Duration::ZERO }))
    }
}

#[async_trait]
impl Action for VoiceAnswer {
    const KIND: &'static str = "voice.answer";
    /// Answering sends nothing itself (the call came in); starting again only re-reads the call.
    const DELIVERY: Delivery = Delivery::Idempotent;
    const UNITS: &'static [Unit] = &[Unit::VoiceMinuteStandard, Unit::VoiceMinutePremium];
    const RAW_FIELDS: &'static [&'static str] = &["script"];
    type Input = AnswerInput;
    type Output = CallOutput;

    fn validate(&self, input: &Map<String, Value>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Some(v) = input.get("wait_timeout")
            && !v.as_str().is_some_and(|s| s.contains("{{"))
        {
            match seconds(v.clone()) {
                Ok(d) if d >= Duration::from_secs(60) => {}
                Ok(_) => problems.push(("wait_timeout".to_owned(), "must be at least 1m".to_owned())),
                Err(e) => problems.push(("wait_timeout".to_owned(), serde_json::Error::to_string(&e))),
            }
        }
        if let Some(s) = input.get("script") {
            problems.extend(script::check(s, "script", &self.engine));
        }
        problems
    }

    /// A test run (or a simulated call) answers without a phone: the caller's inputs come from
    /// the event's `simulate.inputs` (`POST /v1/numbers/{id}/simulate` puts them there).
    fn sandbox(&self, ctx: &ActionContext, input: &AnswerInput) -> Result<Option<SandboxSend>, ActionError> {
        let script = Script::parse(&input.script, "script").map_err(|p| ActionError::permanent("invalid_input", describe(&p)))?;
        let scope = ctx.scope.as_deref().cloned().unwrap_or_default();
        let simulate = scope.event.get("simulate").cloned().unwrap_or(Value::Null);
        let inputs = simulate.get("inputs").and_then(Value::as_object).cloned().unwrap_or_default();
        let duration = simulate.get("duration_s").and_then(Value::as_i64).unwrap_or(60);
        let call = scope.event.get("call").cloned().unwrap_or_else(|| json!({}));
        let machine = Machine {
            script: &script,
            engine: &self.engine,
            scope: &scope,
            call: json!({ "sid": call.get("sid"), "from": call.get("from"), "to": call.get("to"), "direction": "inbound" }),
            callback: Calls::twiml_url(&self.public_url, "sandbox"),
            voice: input.voice.clone(),
            language: input.language.clone(),
        };
        let mut state = CallState::default();
        let documents = machine.simulate(&mut state, &inputs);
        let minutes = voice_minutes(duration, true);
        let output = CallOutput {
            status: "completed".into(),
            call_sid: call.get("sid").and_then(Value::as_str).unwrap_or_default().to_owned(),
            direction: "inbound".into(),
            answered_by: None,
            duration_s: duration,
            billable_minutes: minutes,
            inputs: state.inputs,
            path: state.path,
            recording_url: None,
            sip_response_code: None,
            script_ended: state.ended,
            errors: state.errors,
        };
        let output = serde_json::to_value(&output).map_err(|e| ActionError::permanent("invalid_output", e.to_string()))?;
        let outcome = json!({ "status": "completed", "duration_s": duration, "billable_minutes": minutes, "path": output["path"], "inputs": output["inputs"] });
        let usage: Vec<Usage> = vec![input.tier.unit().times(minutes)];
        Ok(Some(SandboxSend {
            to: call.get("from").and_then(Value::as_str).map(str::to_owned),
            rendered: json!({ "from": call.get("from"), "to": call.get("to"), "tier": input.tier.as_str(), "twiml": documents, "outcome": outcome }),
            output,
            usage,
        }))
    }

    async fn execute(&self, _ctx: &ActionContext, _input: AnswerInput) -> Result<Done<CallOutput>, ActionError> {
        Err(ActionError::permanent("unsupported", "voice.answer answers the call that started its run; the runtime starts it"))
    }

    async fn start(&self, ctx: &ActionContext, input: AnswerInput) -> Result<Started<CallOutput>, ActionError> {
        // When the step started waiting and for how long before Twilio is asked.
        let handle = json!({ "run_id": ctx.run_id, "since": ctx.now, "wait_ms": input.wait_timeout.as_millis() as i64 });
        match self.attach(ctx).await? {
            Some(Poll::Done(done)) => Ok(Started::Done(done)),
            // Waits for the call to end; the deadline is the fallback that asks Twilio.
            Some(_) => Ok(Started::Later(Later { handle, check_after: input.wait_timeout })),
            // A run started by a call whose record is not written yet (the webhook writes it just
            // after starting the run): look again shortly.
            None if ctx.scope.as_ref().is_some_and(|s| s.event.get("call").is_some()) => Ok(Started::Later(Later { handle, check_after: ATTACH_RETRY })),
            // The run was not started by a call (e.g. through the API): nothing to answer.
            None => Err(ActionError::permanent("no_call", "this run was not started by a call to one of the account's numbers")),
        }
    }

    async fn poll(&self, ctx: &ActionContext, handle: Value) -> Poll<CallOutput> {
        match self.attach(ctx).await {
            Ok(Some(Poll::Done(done))) => Poll::Done(done),
            Ok(Some(_)) => {
                // A step that attached late waits out its wait_timeout before Twilio is asked.
                let field = |name: &str| handle.get(name).and_then(Value::as_i64);
                let deadline = field("since").zip(field("wait_ms")).map(|(since, wait)| since.saturating_add(wait));
                match (deadline, &self.calls) {
                    (Some(deadline), _) if ctx.now < deadline => Poll::NotYet { check_after: Duration::from_millis((deadline - ctx.now) as u64) },
                    (_, Some(calls)) => calls.ask_twilio(&ctx.run_id, ctx.now).await,
                    (_, None) => Poll::Failed(ActionError::outcome_unknown("misconfigured", "this process cannot read calls")),
                }
            }
            // Started before its call was recorded: the record comes within moments, or never.
            Ok(None) if handle.get("since").and_then(Value::as_i64).is_some_and(|since| ctx.now - since < 60_000) => Poll::NotYet { check_after: ATTACH_RETRY },
            Ok(None) => Poll::Failed(ActionError::outcome_unknown("call_not_found", "the call's record is gone")),
            Err(_) => Poll::NotYet { check_after: Duration::from_secs(60) },
        }
    }
}

fn describe(problems: &[(String, String)]) -> String {
    problems.iter().map(|(p, m)| format!("{p}: {m}")).collect::<Vec<_>>().join("; ")
}

impl Calls {
    /// Twilio's "a call comes in" webhook of a number of connection `connection_id`: starts a
    /// run of the workflow bound to the called number and answers the first document of its
    /// `voice.answer` script. A number bound to nothing (or to a disabled workflow) answers a
    /// short message and hangs up. Twilio repeating the webhook gets the same document.
    pub async fn inbound(
        &self,
        engine: &Engine,
        connection_id: &str,
        path_and_query: &str,
        params: &[(String, String)],
        signature: &str,
    ) -> Result<String, CallbackError> {
        let connection = self.verified_connection(connection_id, path_and_query, params, signature).await?;
        let (Some(sid), Some(from), Some(to)) = (param(params, "CallSid"), param(params, "From"), param(params, "To")) else {
            return Err(CallbackError::BadRequest("an incoming call's form has CallSid, From and To".into()));
        };
        if let Some(row) = self.store().call_by_sid(sid).await? {
            return Ok(row.twiml.unwrap_or_else(not_in_service));
        }
        let Some(number) = self.store().number_called(connection_id, to).await? else {
            tracing::info!(%to, "a call to a number bound to no workflow");
            return Ok(not_in_service());
        };
        let workflow_row = match self.store().workflow(&number.account_id, &number.workflow_id).await? {
            Some(w) if w.enabled == 1 => w,
            _ => return Ok(not_in_service()),
        };
        let workflow = engine.workflow(&workflow_row.id, workflow_row.version).await?;
        let Some(StepKind::Action { kind, input, .. }) = workflow.steps.first().map(|s| &s.kind) else { return Ok(not_in_service()) };
        if !matches!(workflow.trigger, Trigger::Call) || kind != VoiceAnswer::KIND {
            return Ok(not_in_service());
        }
        let mut call = json!({ "sid": sid, "from": from, "to": to, "direction": "inbound" });
        if let Some(name) = param(params, "CallerName") {
            call["caller_name"] = json!(name);
        }
        let started = engine.start_call(&workflow_row, json!({ "call": call }), sid).await?;
        let account = self.store().account(&number.account_id).await?;
        let now = engine.clock().now();
        let scope = ScopeData {
            event: json!({ "call": call }),
            steps: json!({}),
            vars: json!({}),
            params: workflow.params.clone(),
            run: json!({ "id": started.run_id, "started_at": switchboard_runtime::clock::to_rfc3339(now) }),
            account: json!({ "id": number.account_id, "timezone": account.as_ref().map(|a| a.timezone.clone()) }),
            hours: self.store().hours_open(&number.account_id, now).await?,
            ..ScopeData::default()
        };
        let rendered = input.render(&self.engine, &scope).map_err(|e| CallbackError::BadRequest(format!("the voice.answer step's input: {e}")))?;
        let Ok(answer) = switchboard_runtime::action::parse_input::<AnswerInput>(&rendered) else { return Ok(not_in_service()) };
        let row = CallRow {
            token: hex::encode(rand::random::<[u8; 24]>()),
            account_id: number.account_id.clone(),
            connection_id: connection.id.clone(),
            run_id: started.run_id.clone(),
            step_seq: 0,
            step_id: workflow.steps[0].id.clone(),
            direction: "inbound".into(),
            from_number: from.to_owned(),
            to_number: to.to_owned(),
            tier: answer.tier.as_str().into(),
            call_sid: Some(sid.to_owned()),
            status: "in-progress".into(),
            ended: 0,
            answered_by: None,
            duration_s: None,
            sip_response_code: None,
            recording_url: None,
            script: answer.script.to_string(),
            scope: serde_json::to_string(&StoredScope::new(&scope, answer.voice.clone(), answer.language.clone())).unwrap_or_else(|_| "{}".into()),
            state: serde_json::to_string(&CallState::default()).unwrap_or_else(|_| "{}".into()),
            twiml: None,
            version: 0,
            created_at: now,
            ended_at: None,
        };
        self.store().insert_call(&row).await?;
        self.turn_unsigned(engine, row, None, params).await
    }
}

fn not_in_service() -> String {
    twiml::render(&[Verb::Say { text: NOT_IN_SERVICE.into(), voice: None, language: None, repeat: 1 }, Verb::Hangup])
}
