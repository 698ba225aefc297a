//! `voice.call`: an outbound call through Twilio's Calls API, driven by a voice script, which
//! the step waits on until the call has ended.
//!
//! The call's life:
//! 1. The step starts: a row in `voice_calls` with an unguessable token, then
//!    `POST {api_base}/2010-04-01/Accounts/{AccountSid}/Calls.json` (form-encoded, basic auth):
//!    `To`, `From`, `Url` = `{public_url}/callbacks/twilio/voice/{token}`, `StatusCallback` =
//!    that URL + `/status` with the four `StatusCallbackEvent`s (`initiated`, `ringing`,
//!    `answered`, `completed`), `Timeout` (the ring timeout), `TimeLimit` (the longest call),
//!    `MachineDetection=Enable` + `AsyncAmd=true` when asked, `Record=true` when asked. At most
//!    once: Twilio takes no idempotency key, so a create whose answer was lost ends the step
//!    `outcome_unknown`, never a second call. Twilio's `201` makes the step wait
//!    (`awaiting_completion`, shown `waiting`) with the `CallSid` in its handle.
//! 2. Twilio fetches the TwiML: [`Calls::turn`] runs the script until a node waits on the
//!    caller and answers that as one document; gather, menu, record and dial results post back
//!    to the same URL with `?node=<id>`. The script's place is saved in the row after each turn.
//! 3. Status callbacks ([`Calls::status`]) move the row's status forward; the first final status
//!    (`completed`, `busy`, `no-answer`, `failed`, `canceled`) ends the call and completes the
//!    step with the output and the minutes, in one transaction, once.
//! 4. No final status by `wait_timeout`: [`Action::poll`] reads the row and, if the call has not
//!    ended there, asks Twilio (`GET …/Calls/{CallSid}.json`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use switchboard_integrations::classify_send_error;
use switchboard_integrations::connections::{TwilioCredentials, Vault};
use switchboard_integrations::http::read_limited;
use switchboard_integrations::providers::{self, Provider};
use switchboard_integrations::twilio::signature_is_valid_any_port;
use switchboard_runtime::action::{Action, ActionContext, ActionError, ActionOutput, Delivery, Done, Later, Poll, RateLimit, Recipient, SandboxSend, Started};
use switchboard_runtime::contact::Channel;
use switchboard_runtime::engine::{Engine, LaterCompletion};
use switchboard_runtime::expr::{ExprEngine, ScopeData};
use switchboard_runtime::metering::{Unit, Usage, voice_minutes};
use switchboard_runtime::status::StepStatus;
use switchboard_runtime::store::{CallEnd, CallRow, Store};

use super::machine::{CallState, Flow, Machine, param};
use super::script::{self, Script, seconds};
use super::twiml::{self, Verb};
use crate::sms_send::is_e164;

/// The most of an answer read (Twilio's, or a `request` node's).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The most time the `request` nodes of one turn may take together: Twilio waits 15 s for a
/// TwiML answer, and the rest of the turn needs some.
const TURN_BUDGET: Duration = Duration::from_secs(10);

/// Twilio's final call statuses.
pub const FINAL_STATUSES: [&str; 5] = ["completed", "busy", "no-answer", "failed", "canceled"];

/// Live statuses in the order a call goes through them.
const LIVE_ORDER: [&str; 5] = ["dialing", "queued", "initiated", "ringing", "in-progress"];

/// The voice tier, which prices the minutes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// `voice_minute_standard`.
    #[default]
    Standard,
    /// `voice_minute_premium`.
    Premium,
}

impl Tier {
    /// The unit its minutes are billed in.
    pub fn unit(self) -> Unit {
        match self {
            Tier::Standard => Unit::VoiceMinuteStandard,
            Tier::Premium => Unit::VoiceMinutePremium,
        }
    }
    fn parse(s: &str) -> Self {
        if s == "premium" { Tier::Premium } else { Tier::Standard }
    }
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Premium => "premium",
        }
    }
}

/// The input of `voice.call`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallInput {
    /// The number to call, E.164.
    pub to: String,
    /// The caller id: a number of the connection's Twilio account, E.164.
    pub from: String,
    /// The voice script: a list of nodes (`say`, `play`, `pause`, `gather`, `menu`, `branch`,
    /// `record`, `dial`, `request`, `set`, `hangup`; see docs/voice.md). Its strings are rendered
    /// during the call, with `inputs` and `call` besides the run's scope.
    #[schemars(with = "Vec<Value>")]
    pub script: Value,
    /// `standard` (default) or `premium`: the minutes' price.
    #[serde(default)]
    pub tier: Tier,
    /// The default voice of `say` nodes (e.g. `alice`, `Polly.Joanna`).
    pub voice: Option<String>,
    /// The default language of `say` nodes (e.g. `en-US`).
    pub language: Option<String>,
    /// How long to ring before giving up: 5s to 600s (30s).
    #[serde(default = "thirty_seconds", deserialize_with = "seconds")]
    #[schemars(with = "Value")]
    pub ring_timeout: Duration,
    /// The longest the call may last, at most 4h (1h).
    #[serde(default = "one_hour", deserialize_with = "seconds")]
    #[schemars(with = "Value")]
    pub max_duration: Duration,
    /// Detect answering machines (`call.answered_by`): Twilio's async AMD.
    #[serde(default)]
    pub machine_detection: bool,
    /// Record the whole call (`recording_url` in the output).
    #[serde(default)]
    pub record: bool,
    /// How long to wait for Twilio's final status before asking Twilio (2h).
    #[serde(default = "two_hours", deserialize_with = "seconds")]
    #[schemars(with = "Value")]
    pub wait_timeout: Duration,
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn one_hour() -> Duration {
    Duration::from_secs(3600)
}
fn two_hours() -> Duration {
    Duration::from_secs(7200)
}

/// The output of `voice.call`, once the call has ended. An unanswered call is a successful
/// step whose `status` says so.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CallOutput {
    /// `completed`, `busy`, `no-answer`, `failed` or `canceled`.
    pub status: String,
    /// Twilio's `CallSid`.
    pub call_sid: String,
    /// `outbound-api` for calls a workflow placed.
    pub direction: String,
    /// `human`, `machine_start`, `fax`, `unknown`, … when machine detection ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    /// The call's length in seconds (0 unanswered).
    pub duration_s: i64,
    /// ⌈duration / 60⌉ of a completed call, else 0: the minutes billed.
    pub billable_minutes: i64,
    /// What the caller gave, by node id.
    pub inputs: Map<String, Value>,
    /// The script's nodes run, in order (a node without an id as `#<index>`).
    pub path: Vec<String>,
    /// The recording of the whole call, when `record` was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_url: Option<String>,
    /// Twilio's SIP response code of the final status, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_response_code: Option<i64>,
    /// How the script ended: `hangup`, `end`, `no_option`, `loop_limit`, `node_limit`; absent
    /// when the caller hung up first (or the call was not answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_ended: Option<String>,
    /// Problems met during the call (`{node, message}`), which did not stop it.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<Value>,
}

/// The calls Switchboard has placed, as Twilio's callbacks see them: the TwiML turns and the
/// status events. Shared by the `voice.call` module and the callback routes.
pub struct Calls {
    store: Store,
    vault: Arc<Vault>,
    public_url: String,
    /// Twilio's REST base, for asking how a call ended.
    api_base: String,
    client: reqwest::Client,
    pub(super) engine: ExprEngine,
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls").field("public_url", &self.public_url).finish_non_exhaustive()
    }
}

/// Why a callback was refused.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// No call with that token.
    #[error("no such call")]
    NotFound,
    /// `X-Twilio-Signature` does not verify with the connection's auth token.
    #[error("X-Twilio-Signature does not match this request")]
    BadSignature,
    /// The form lacks what the callback needs.
    #[error("{0}")]
    BadRequest(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] switchboard_runtime::Error),
}

impl Calls {
    /// Calls answered from `store`, checking signatures with connections opened by `vault`;
    /// callback URLs under `public_url`; `request` nodes sent with `client` (the guarded one).
    /// Twilio is asked how a call ended at `api_base` (`https://api.twilio.com` in production).
    pub fn new(store: Store, vault: Arc<Vault>, public_url: &str, api_base: &str, client: reqwest::Client) -> Self {
        Self {
            store,
            vault,
            public_url: public_url.trim_end_matches('/').to_owned(),
            api_base: api_base.trim_end_matches('/').to_owned(),
            client,
            engine: ExprEngine::for_voice(),
        }
    }

    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// The TwiML URL of the call with `token`.
    pub fn twiml_url(public_url: &str, token: &str) -> String {
        format!("{}/callbacks/twilio/voice/{token}", public_url.trim_end_matches('/'))
    }

    async fn verified(&self, token: &str, path_and_query: &str, params: &[(String, String)], signature: &str) -> Result<CallRow, CallbackError> {
        let row = self.store.call_by_token(token).await?.ok_or(CallbackError::NotFound)?;
        let connection = self.store.connection_by_id(&row.connection_id).await?.ok_or(CallbackError::BadSignature)?;
        let credentials: TwilioCredentials = self.vault.open(&connection.into_ref()).map_err(|_| CallbackError::BadSignature)?;
        let url = format!("{}{path_and_query}", self.public_url);
        if !signature_is_valid_any_port(credentials.auth_token.expose_secret(), &url, params, signature) {
            return Err(CallbackError::BadSignature);
        }
        Ok(row)
    }

    /// One turn of a call: Twilio's request for TwiML (`node` is `None` on the first fetch, else
    /// the node whose result `params` carry). Answers the next document; a repeated or stale
    /// request gets the last document again. Nothing here calls a vendor (a `request` node
    /// calls the user's API, within its own budget of at most 8 s).
    pub async fn turn(
        &self,
        engine: &Engine,
        token: &str,
        path_and_query: &str,
        node: Option<&str>,
        params: &[(String, String)],
        signature: &str,
    ) -> Result<String, CallbackError> {
        let row = self.verified(token, path_and_query, params, signature).await?;
        self.turn_unsigned(engine, row, node, params).await
    }

    /// [`Calls::turn`] once the request is trusted; `row` is the call as just read (or written),
    /// not read again.
    pub(super) async fn turn_unsigned(
        &self,
        engine: &Engine,
        mut row: CallRow,
        node: Option<&str>,
        params: &[(String, String)],
    ) -> Result<String, CallbackError> {
        let token = row.token.clone();
        if let Some(answered_by) = param(params, "AnsweredBy") {
            self.store.set_call_answered_by(&token, answered_by).await?;
            row.answered_by.get_or_insert_with(|| answered_by.to_owned());
        }
        // Two requests of one call at once are not Twilio's way; if they happen, the one that
        // saves second answers what the first saved.
        for _ in 0..3 {
            let Some(twiml) = self.next_document(&row, node, params).await else {
                return Ok(row.twiml.clone().unwrap_or_else(|| twiml::render(&[Verb::Hangup])));
            };
            if self.store.save_call_state(&token, row.version, &twiml.0, &twiml.1).await? {
                publish_call(engine, &CallRow { state: twiml.0, ..row }).await;
                return Ok(twiml.1);
            }
            row = self.store.call_by_token(&token).await?.ok_or(CallbackError::NotFound)?;
        }
        Ok(row.twiml.unwrap_or_else(|| twiml::render(&[Verb::Hangup])))
    }

    /// The next state and document of a call, or `None` when the request is a repeat.
    async fn next_document(&self, row: &CallRow, node: Option<&str>, params: &[(String, String)]) -> Option<(String, String)> {
        let mut state: CallState = serde_json::from_str(&row.state).unwrap_or_default();
        let script = match Script::parse(&serde_json::from_str(&row.script).unwrap_or(Value::Null), "script") {
            Ok(s) => s,
            Err(problems) => {
                tracing::warn!(token = %row.token, ?problems, "a stored voice script does not parse; hanging up");
                state.ended = Some("hangup".into());
                let doc = twiml::render(&[Verb::Say { text: "Sorry, this call cannot continue.".into(), voice: None, language: None, repeat: 1 }]);
                return Some((serde_json::to_string(&state).unwrap_or_default(), doc));
            }
        };
        let stored: StoredScope = serde_json::from_str(&row.scope).unwrap_or_default();
        let scope = stored.data();
        let machine = Machine {
            script: &script,
            engine: &self.engine,
            scope: &scope,
            call: call_value(row),
            callback: Self::twiml_url(&self.public_url, &row.token),
            voice: stored.voice.clone(),
            language: stored.language.clone(),
        };
        match node {
            None if state.started => return None,
            None => {}
            Some(key) if !machine.answer(&mut state, key, params) => return None,
            Some(_) => {}
        }
        let mut verbs = Vec::new();
        // Twilio waits 15 s for a document: the requests of one turn share a budget below it.
        let deadline = tokio::time::Instant::now() + TURN_BUDGET;
        loop {
            match machine.run(&mut state, &mut verbs) {
                Flow::Document => break,
                Flow::Request { node, mut spec } => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let result = if left < Duration::from_millis(100) {
                        Err("no time left in this turn: Twilio waits 15 s for the call's next instructions".to_owned())
                    } else {
                        spec.timeout = spec.timeout.min(left);
                        self.perform(&spec).await
                    };
                    machine.request_done(&mut state, node, result);
                }
            }
        }
        Some((serde_json::to_string(&state).unwrap_or_default(), twiml::render(&verbs)))
    }

    /// Makes a `request` node's request: the JSON answer (or its text) of a 2xx, else an error.
    async fn perform(&self, spec: &super::machine::RequestSpec) -> Result<Value, String> {
        let method = reqwest::Method::from_bytes(spec.method.as_bytes()).map_err(|e| e.to_string())?;
        let mut request = self.client.request(method, &spec.url).timeout(spec.timeout);
        for (k, v) in &spec.headers {
            request = request.header(k, v);
        }
        if let Some(body) = &spec.body {
            request = request.json(body);
        }
        let mut response = request.send().await.map_err(|e| classify_send_error(&e, Delivery::Idempotent).message)?;
        let status = response.status();
        let (bytes, _) = read_limited(&mut response, MAX_ANSWER_BYTES).await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())))
    }

    /// A status callback of the call with `token`: repeated events (same `SequenceNumber`) and
    /// late ones (`ringing` after `in-progress`) change nothing; the first final status ends the
    /// call and completes its step, once.
    pub async fn status(&self, engine: &Engine, token: &str, path_and_query: &str, params: &[(String, String)], signature: &str) -> Result<(), CallbackError> {
        let row = self.verified(token, path_and_query, params, signature).await?;
        self.record_status(engine, &row, params).await
    }

    /// The status callback of an inbound call, which the number's connection signs and names by
    /// its `CallSid` (Twilio's "call status changes" webhook of the number).
    pub async fn inbound_status(
        &self,
        engine: &Engine,
        connection_id: &str,
        path_and_query: &str,
        params: &[(String, String)],
        signature: &str,
    ) -> Result<(), CallbackError> {
        self.verified_connection(connection_id, path_and_query, params, signature).await?;
        let sid = param(params, "CallSid").ok_or_else(|| CallbackError::BadRequest("a status callback has a CallSid".into()))?;
        // A call that started no run (an unbound number) has no row: nothing to record.
        match self.store.call_by_sid(sid).await? {
            Some(row) if row.connection_id == connection_id => self.record_status(engine, &row, params).await,
            _ => Ok(()),
        }
    }

    /// The Twilio connection a number's callback names, once its signature verifies with the
    /// connection's auth token.
    pub(super) async fn verified_connection(
        &self,
        connection_id: &str,
        path_and_query: &str,
        params: &[(String, String)],
        signature: &str,
    ) -> Result<switchboard_runtime::store::ConnectionRow, CallbackError> {
        let connection = self.store.connection_by_id(connection_id).await?.filter(|c| c.provider == "twilio").ok_or(CallbackError::NotFound)?;
        let credentials: TwilioCredentials = self.vault.open(&connection.clone().into_ref()).map_err(|_| CallbackError::BadSignature)?;
        let url = format!("{}{path_and_query}", self.public_url);
        if !signature_is_valid_any_port(credentials.auth_token.expose_secret(), &url, params, signature) {
            return Err(CallbackError::BadSignature);
        }
        Ok(connection)
    }

    /// Records a status event of a trusted callback.
    async fn record_status(&self, engine: &Engine, row: &CallRow, params: &[(String, String)]) -> Result<(), CallbackError> {
        let token = row.token.as_str();
        let now = engine.clock().now();
        if let Some(answered_by) = param(params, "AnsweredBy") {
            self.store.set_call_answered_by(token, answered_by).await?;
        }
        let status = param(params, "CallStatus");
        if let (Some(url), Some(_)) = (param(params, "RecordingUrl"), param(params, "RecordingStatus")) {
            self.store.set_call_recording(token, url).await?;
        }
        let Some(status) = status else {
            // A recording or machine-detection callback: recorded above.
            return Ok(());
        };
        let repeat = match param(params, "SequenceNumber").and_then(|s| s.parse::<i64>().ok()) {
            Some(seq) => !self.store.record_call_event(token, seq, status, now).await?,
            None => false,
        };
        if FINAL_STATUSES.contains(&status) {
            // Even a repeat of the final status tries to complete the step: the first may have
            // ended the call and then lost its completion to a crash. The step is fenced.
            let end = CallEnd {
                status: status.to_owned(),
                duration_s: param(params, "CallDuration").and_then(|d| d.parse().ok()).unwrap_or(0),
                answered_by: param(params, "AnsweredBy").map(str::to_owned),
                sip_response_code: param(params, "SipResponseCode").and_then(|d| d.parse().ok()),
                recording_url: param(params, "RecordingUrl").map(str::to_owned),
            };
            let first = self.store.end_call(token, &end, now).await?;
            let ended = self.store.call_by_token(token).await?.ok_or(CallbackError::NotFound)?;
            complete(engine, &ended).await?;
            if first {
                publish_call(engine, &ended).await;
            }
        } else if !repeat
            && let Some(position) = LIVE_ORDER.iter().position(|s| *s == status)
            && self.store.advance_call_status(token, status, &LIVE_ORDER[..position]).await?
            && let Some(moved) = self.store.call_by_token(token).await?
        {
            publish_call(engine, &moved).await;
        }
        Ok(())
    }
}

/// Publishes `call.updated` for a call (best effort, like every live event): its status and
/// the node the caller reached.
pub(super) async fn publish_call(engine: &Engine, row: &CallRow) {
    let Ok(Some(run)) = engine.store().run_by_id(&row.run_id).await else { return };
    let state: CallState = serde_json::from_str(&row.state).unwrap_or_default();
    let mut event =
        switchboard_runtime::events::RunEvent::new("call.updated", &row.account_id, &row.run_id, &run.workflow_id, run.status, engine.clock().now());
    event.call = Some(json!({
        "call_sid": row.call_sid,
        "direction": if row.direction == "outbound" { "outbound" } else { row.direction.as_str() },
        "from": row.from_number,
        "to": row.to_number,
        "status": row.status,
        "node": state.path.last(),
    }));
    engine.events().publish(event);
}

/// Completes the step of an ended call from its row. A status callback can outrun the step's
/// own commit of "waiting" (Twilio answered the create, the call failed at once): while the
/// step is still `running`, this tries again for a few seconds; if the step still does not
/// wait, its poll at `wait_timeout` completes it from the row.
pub async fn complete(engine: &Engine, row: &CallRow) -> Result<(), switchboard_runtime::Error> {
    let (output, usage) = outcome(row);
    let output = serde_json::to_value(&output).unwrap_or(Value::Null);
    for _ in 0..50 {
        let result = Ok(ActionOutput { output: output.clone(), usage: usage.clone() });
        match engine.complete_later(&row.account_id, &row.run_id, row.step_seq, result).await? {
            LaterCompletion::Recorded => return Ok(()),
            LaterCompletion::NotWaiting => {
                let step = engine.store().step_row(&row.run_id, row.step_seq).await?;
                if !step.is_some_and(|s| s.status == StepStatus::Running) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(())
}

/// The step's output and usage of an ended call.
pub fn outcome(row: &CallRow) -> (CallOutput, Vec<Usage>) {
    let state: CallState = serde_json::from_str(&row.state).unwrap_or_default();
    let duration = row.duration_s.unwrap_or(0);
    let minutes = voice_minutes(duration, row.status == "completed");
    let usage = if minutes > 0 { vec![Tier::parse(&row.tier).unit().times(minutes)] } else { Vec::new() };
    let output = CallOutput {
        status: row.status.clone(),
        call_sid: row.call_sid.clone().unwrap_or_default(),
        direction: if row.direction == "outbound" { "outbound-api".into() } else { row.direction.clone() },
        answered_by: row.answered_by.clone(),
        duration_s: duration,
        billable_minutes: minutes,
        inputs: state.inputs,
        path: state.path,
        recording_url: row.recording_url.clone(),
        sip_response_code: row.sip_response_code,
        script_ended: state.ended,
        errors: state.errors,
    };
    (output, usage)
}

/// `call` as scripts read it.
fn call_value(row: &CallRow) -> Value {
    json!({
        "sid": row.call_sid,
        "from": row.from_number,
        "to": row.to_number,
        "direction": if row.direction == "outbound" { "outbound-api" } else { row.direction.as_str() },
        "answered_by": row.answered_by,
    })
}

/// The run's scope as kept with a call, and the step's voice defaults.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct StoredScope {
    event: Value,
    steps: Value,
    vars: Value,
    params: Value,
    run: Value,
    account: Value,
    /// Whether each business-hour schedule was open when the call started.
    #[serde(default)]
    hours: Value,
    voice: Option<String>,
    language: Option<String>,
}

impl StoredScope {
    /// The scope a call keeps, with the step's voice defaults.
    pub(super) fn new(scope: &ScopeData, voice: Option<String>, language: Option<String>) -> Self {
        Self {
            event: scope.event.clone(),
            steps: scope.steps.clone(),
            vars: scope.vars.clone(),
            params: scope.params.clone(),
            run: scope.run.clone(),
            account: scope.account.clone(),
            hours: scope.hours.clone(),
            voice,
            language,
        }
    }

    fn data(&self) -> ScopeData {
        ScopeData {
            event: self.event.clone(),
            steps: self.steps.clone(),
            vars: self.vars.clone(),
            params: self.params.clone(),
            run: self.run.clone(),
            account: self.account.clone(),
            hours: self.hours.clone(),
            ..ScopeData::default()
        }
    }
}

/// The `voice.call` action module.
pub struct VoiceCall {
    client: reqwest::Client,
    vault: Arc<Vault>,
    api_base: String,
    public_url: String,
    engine: ExprEngine,
    /// The store calls live in; `None` where calls cannot be placed (docs, save-time checks).
    calls: Option<Arc<Calls>>,
}

impl std::fmt::Debug for VoiceCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceCall").field("api_base", &self.api_base).finish_non_exhaustive()
    }
}

impl VoiceCall {
    /// Calls through Twilio at `api_base` with `client`, opening connections with `vault`;
    /// Twilio's callbacks come to `public_url`; calls are kept in `calls`' store.
    pub fn new(client: reqwest::Client, vault: Arc<Vault>, api_base: String, public_url: String, calls: Option<Arc<Calls>>) -> Self {
        let api_base = api_base.trim_end_matches('/').to_owned();
        let public_url = public_url.trim_end_matches('/').to_owned();
        Self { client, vault, api_base, public_url, engine: ExprEngine::for_voice(), calls }
    }

    fn credentials(&self, ctx: &ActionContext) -> Result<(TwilioCredentials, String), ActionError> {
        let connection = ctx.connection.as_ref().ok_or_else(|| ActionError::permanent("missing_connection", "voice.call needs a twilio connection"))?;
        let credentials: TwilioCredentials = self.vault.open(connection)?;
        if credentials.account_sid.is_empty() || !credentials.account_sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ActionError::permanent(
                "connection_invalid",
                format!("connection '{}' holds an account SID that is not 'AC' and 32 hex characters", connection.name),
            ));
        }
        Ok((credentials, connection.id.clone()))
    }
}

/// Checks of the rendered input (the same as at save time, now that interpolation has run).
fn check_input(input: &CallInput) -> Result<Script, ActionError> {
    let mut problems: Vec<String> = Vec::new();
    if !is_e164(input.to.trim()) {
        problems.push("to: must be a phone number in E.164 form, e.g. +15551234567".into());
    }
    if !is_e164(input.from.trim()) {
        problems.push("from: must be a phone number of the Twilio account in E.164 form".into());
    }
    problems.extend(duration_problems(input.ring_timeout, input.max_duration, input.wait_timeout).into_iter().map(|(p, m)| format!("{p}: {m}")));
    let script = Script::parse(&input.script, "script");
    if let Err(found) = &script {
        problems.extend(found.iter().map(|(p, m)| format!("{p}: {m}")));
    }
    match script {
        Ok(s) if problems.is_empty() => Ok(s),
        _ => Err(ActionError::permanent("invalid_input", problems.join("; "))),
    }
}

fn duration_problems(ring: Duration, max: Duration, wait: Duration) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if !(5..=600).contains(&ring.as_secs()) {
        problems.push(("ring_timeout".into(), "must be 5s to 600s".into()));
    }
    if max.is_zero() || max > Duration::from_secs(4 * 3600) {
        problems.push(("max_duration".into(), "must be 1s to 4h (Twilio's TimeLimit)".into()));
    }
    if wait < Duration::from_secs(60) {
        problems.push(("wait_timeout".into(), "must be at least 1m".into()));
    }
    problems
}

/// The settings of the step's connection (`{}` without one).
fn connection_settings(ctx: &ActionContext) -> Value {
    ctx.connection.as_ref().map_or_else(|| Value::Object(Map::new()), |c| c.settings.clone())
}

/// A stable, Twilio-shaped call SID for a sandbox call.
fn sandbox_sid(idempotency_key: &str) -> String {
    let digest = Sha256::digest(idempotency_key.as_bytes());
    format!("CA{}", &hex::encode(digest)[..32])
}

/// Twilio's answer to a created or fetched call (the fields used).
#[derive(Deserialize, Default)]
struct TwilioCall {
    sid: String,
    status: Option<String>,
    duration: Option<String>,
    answered_by: Option<String>,
}

#[async_trait]
impl Action for VoiceCall {
    const KIND: &'static str = "voice.call";
    const DELIVERY: Delivery = Delivery::AtMostOnce;
    const UNITS: &'static [Unit] = &[Unit::VoiceMinuteStandard, Unit::VoiceMinutePremium];
    const PROVIDERS: &'static [&'static str] = &[providers::Twilio::NAME];
    const RAW_FIELDS: &'static [&'static str] = &["script"];
    type Input = CallInput;
    type Output = CallOutput;

    fn validate(&self, input: &Map<String, Value>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for name in ["to", "from"] {
            if let Some(Value::String(s)) = input.get(name)
                && !s.contains("{{")
                && !is_e164(s.trim())
            {
                problems.push((name.to_owned(), "must be a phone number in E.164 form, e.g. +15551234567".to_owned()));
            }
        }
        let duration = |name: &str, default: Duration| -> Result<Duration, ()> {
            match input.get(name) {
                None => Ok(default),
                Some(Value::String(s)) if s.contains("{{") => Ok(default),
                Some(v) => seconds(v.clone()).map_err(|_: serde_json::Error| ()),
            }
        };
        let mut durations = Vec::new();
        for (name, default) in [("ring_timeout", thirty_seconds()), ("max_duration", one_hour()), ("wait_timeout", two_hours())] {
            match duration(name, default) {
                Ok(d) => durations.push(d),
                Err(()) => {
                    problems.push((name.to_owned(), "must be a duration like 30s or 2h, or whole seconds".to_owned()));
                    durations.push(default);
                }
            }
        }
        let ranges: Vec<(String, String)> =
            duration_problems(durations[0], durations[1], durations[2]).into_iter().filter(|(p, _)| !problems.iter().any(|(q, _)| q == p)).collect();
        problems.extend(ranges);
        if let Some(s) = input.get("script") {
            problems.extend(script::check(s, "script", &self.engine));
        }
        problems
    }

    /// One minute: what an answered call costs at least (the rest is billed when it ends).
    fn estimate(&self, input: &CallInput) -> Vec<Usage> {
        vec![input.tier.unit().times(1)]
    }

    fn recipient(&self, input: &CallInput) -> Option<Recipient> {
        Some(Recipient { number: input.to.trim().to_owned(), channel: Channel::Voice })
    }

    /// One call a second per connection (Twilio's default calls-per-second).
    fn rate_limit(&self, ctx: &ActionContext, _input: &CallInput) -> Option<RateLimit> {
        let connection = ctx.connection.as_ref().map_or("none", |c| c.id.as_str());
        Some(RateLimit { key: format!("twilio-calls:{connection}"), interval: Duration::from_secs(1) })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }

    /// A call without a phone: the outcome and the caller's inputs come from the connection's
    /// `settings.simulate` for the number called (default: answered by a human, 60 s, no
    /// input); the script runs through the same engine and renderer as a real call.
    fn sandbox(&self, ctx: &ActionContext, input: &CallInput) -> Result<Option<SandboxSend>, ActionError> {
        let script = check_input(input)?;
        let to = input.to.trim();
        let settings = connection_settings(ctx);
        let simulate = settings.get("simulate").and_then(|s| s.get(to)).cloned().unwrap_or(Value::Null);
        let status = simulate.get("status").and_then(Value::as_str).unwrap_or("completed").to_owned();
        let answered_by = simulate.get("answered_by").and_then(Value::as_str).unwrap_or("human").to_owned();
        let answered = status == "completed";
        let duration = if answered { simulate.get("duration_s").and_then(Value::as_i64).unwrap_or(60) } else { 0 };
        let inputs = simulate.get("inputs").and_then(Value::as_object).cloned().unwrap_or_default();
        let sid = sandbox_sid(&ctx.idempotency_key);
        let scope = ctx.scope.as_deref().cloned().unwrap_or_default();
        let mut state = CallState::default();
        let documents = if answered {
            let machine = Machine {
                script: &script,
                engine: &self.engine,
                scope: &scope,
                call: json!({ "sid": sid, "from": input.from.trim(), "to": to, "direction": "outbound-api", "answered_by": answered_by }),
                callback: Calls::twiml_url(&self.public_url, "sandbox"),
                voice: input.voice.clone(),
                language: input.language.clone(),
            };
            machine.simulate(&mut state, &inputs)
        } else {
            Vec::new()
        };
        let minutes = voice_minutes(duration, answered);
        let output = CallOutput {
            status: status.clone(),
            call_sid: sid,
            direction: "outbound-api".into(),
            answered_by: answered.then_some(answered_by),
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
        let usage = if minutes > 0 { vec![input.tier.unit().times(minutes)] } else { Vec::new() };
        let outcome = json!({
            "status": output["status"],
            "answered_by": output.get("answered_by"),
            "duration_s": duration,
            "billable_minutes": minutes,
            "path": output["path"],
            "inputs": output["inputs"],
        });
        Ok(Some(SandboxSend {
            to: Some(to.to_owned()),
            rendered: json!({ "from": input.from.trim(), "to": to, "tier": input.tier.as_str(), "twiml": documents, "outcome": outcome }),
            output,
            usage,
        }))
    }

    /// A call ends later: the runtime calls [`Action::start`]. Alone, this has nothing to do.
    async fn execute(&self, _ctx: &ActionContext, _input: CallInput) -> Result<Done<CallOutput>, ActionError> {
        Err(ActionError::permanent("unsupported", "voice.call finishes later: the runtime starts it and waits for the call to end"))
    }

    async fn start(&self, ctx: &ActionContext, input: CallInput) -> Result<Started<CallOutput>, ActionError> {
        check_input(&input)?;
        let calls = self.calls.as_ref().ok_or_else(|| ActionError::permanent("misconfigured", "this process cannot place calls: no call store"))?;
        let (credentials, connection_id) = self.credentials(ctx)?;
        let token = hex::encode(rand::random::<[u8; 24]>());
        let scope = ctx.scope.as_deref().cloned().unwrap_or_default();
        let now = ctx.now;
        let row = CallRow {
            token: token.clone(),
            account_id: ctx.account_id.clone(),
            connection_id,
            run_id: ctx.run_id.clone(),
            step_seq: ctx.step_seq,
            step_id: ctx.step_id.clone(),
            direction: "outbound".into(),
            from_number: input.from.trim().to_owned(),
            to_number: input.to.trim().to_owned(),
            tier: input.tier.as_str().into(),
            call_sid: None,
            status: "dialing".into(),
            ended: 0,
            answered_by: None,
            duration_s: None,
            sip_response_code: None,
            recording_url: None,
            script: input.script.to_string(),
            scope: serde_json::to_string(&StoredScope::new(&scope, input.voice.clone(), input.language.clone())).unwrap_or_else(|_| "{}".into()),
            state: serde_json::to_string(&CallState::default()).unwrap_or_else(|_| "{}".into()),
            twiml: None,
            version: 0,
            created_at: now,
            ended_at: None,
        };
        calls.store.insert_call(&row).await.map_err(|e| ActionError::retryable("store_unavailable", format!("the call could not be recorded: {e}")))?;

        let url = Calls::twiml_url(&self.public_url, &token);
        let status_url = format!("{url}/status");
        let ring = input.ring_timeout.as_secs().to_string();
        let limit = input.max_duration.as_secs().to_string();
        let mut form: Vec<(&str, &str)> = vec![
            ("To", input.to.trim()),
            ("From", input.from.trim()),
            ("Url", &url),
            ("Method", "POST"),
            ("StatusCallback", &status_url),
            ("StatusCallbackMethod", "POST"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
            ("Timeout", &ring),
            ("TimeLimit", &limit),
        ];
        if input.machine_detection {
            form.extend([
                ("MachineDetection", "Enable"),
                ("AsyncAmd", "true"),
                ("AsyncAmdStatusCallback", &status_url),
                ("AsyncAmdStatusCallbackMethod", "POST"),
            ]);
        }
        if input.record {
            form.extend([("Record", "true"), ("RecordingStatusCallback", &status_url), ("RecordingStatusCallbackMethod", "POST")]);
        }
        let sent = self
            .client
            .post(format!("{}/2010-04-01/Accounts/{}/Calls.json", self.api_base, credentials.account_sid))
            .basic_auth(&credentials.account_sid, Some(credentials.auth_token.expose_secret()))
            .timeout(ctx.timeout)
            .form(&form)
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => return Err(classify_send_error(&e, Self::DELIVERY)),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let answer = read_limited(&mut response, MAX_ANSWER_BYTES).await.map(|(bytes, _)| bytes);
        if !status.is_success() {
            let refused = CallEnd { status: "refused".into(), duration_s: 0, answered_by: None, sip_response_code: None, recording_url: None };
            let _ = calls.store.end_call(&token, &refused, now).await;
            return Err(crate::sms_send::twilio_failure(status, &headers, &answer.unwrap_or_default()));
        }
        let created: TwilioCall = answer.ok().and_then(|a| serde_json::from_slice(&a).ok()).unwrap_or_default();
        if created.sid.is_empty() {
            // Twilio placed a call we cannot name: its callbacks still find the row by token.
            tracing::warn!(%status, "Twilio accepted a call with an unreadable answer");
        } else {
            calls.store.set_call_sid(&token, &created.sid).await.map_err(|e| ActionError::outcome_unknown("store_unavailable", e.to_string()))?;
        }
        // The call may have ended already (a callback outran this answer).
        if let Ok(Some(row)) = calls.store.call_by_token(&token).await
            && row.ended == 1
        {
            let (output, usage) = outcome(&row);
            return Ok(Started::Done(Done { output, usage }));
        }
        Ok(Started::Later(Later { handle: json!({ "call_sid": created.sid, "token": token }), check_after: input.wait_timeout }))
    }

    async fn poll(&self, ctx: &ActionContext, handle: Value) -> Poll<CallOutput> {
        let Some(calls) = &self.calls else {
            return Poll::Failed(ActionError::outcome_unknown("misconfigured", "this process cannot read calls"));
        };
        let token = handle.get("token").and_then(Value::as_str).unwrap_or_default();
        match calls.store.call_by_token(token).await {
            Ok(Some(row)) => calls.ask_twilio_about(&row, ctx.now).await,
            Ok(None) => Poll::Failed(ActionError::outcome_unknown("call_not_found", "the call's record is gone")),
            Err(_) => Poll::NotYet { check_after: Duration::from_secs(60) },
        }
    }
}

impl Calls {
    /// How the call a run answered ended (`voice.answer`'s deadline passed).
    pub(super) async fn ask_twilio(&self, run_id: &str, now: i64) -> Poll<CallOutput> {
        match self.store.call_of_run(run_id).await {
            Ok(Some(row)) => self.ask_twilio_about(&row, now).await,
            Ok(None) => Poll::Failed(ActionError::outcome_unknown("call_not_found", "the call's record is gone")),
            Err(_) => Poll::NotYet { check_after: Duration::from_secs(60) },
        }
    }

    /// How a call ended: from its row if a final status was recorded, else Twilio's answer to
    /// `GET …/Calls/{CallSid}.json` (recorded in the row, first final status wins).
    async fn ask_twilio_about(&self, row: &CallRow, now: i64) -> Poll<CallOutput> {
        if row.ended == 1 {
            let (output, usage) = outcome(row);
            return Poll::Done(Done { output, usage });
        }
        let Some(sid) = row.call_sid.clone().filter(|s| !s.is_empty()) else {
            return Poll::Failed(ActionError::outcome_unknown("no_completion", "Twilio never said how the call ended, and its sid is unknown"));
        };
        let credentials: TwilioCredentials = match self.store.connection_by_id(&row.connection_id).await {
            Ok(Some(c)) => match self.vault.open(&c.into_ref()) {
                Ok(c) => c,
                Err(e) => return Poll::Failed(ActionError::outcome_unknown(e.code, e.message)),
            },
            Ok(None) => return Poll::Failed(ActionError::outcome_unknown("missing_connection", "the call's Twilio connection is gone")),
            Err(_) => return Poll::NotYet { check_after: Duration::from_secs(60) },
        };
        let sent = self
            .client
            .get(format!("{}/2010-04-01/Accounts/{}/Calls/{sid}.json", self.api_base, credentials.account_sid))
            .basic_auth(&credentials.account_sid, Some(credentials.auth_token.expose_secret()))
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        let Ok(mut response) = sent else { return Poll::NotYet { check_after: Duration::from_secs(60) } };
        let status = response.status();
        let answer = read_limited(&mut response, MAX_ANSWER_BYTES).await.map(|(bytes, _)| bytes).unwrap_or_default();
        if status.is_server_error() || status.as_u16() == 429 {
            return Poll::NotYet { check_after: Duration::from_secs(60) };
        }
        if !status.is_success() {
            return Poll::Failed(ActionError::outcome_unknown(
                format!("http_{}", status.as_u16()),
                format!("Twilio answered {status} when asked how call {sid} ended"),
            ));
        }
        let call: TwilioCall = serde_json::from_slice(&answer).unwrap_or_default();
        let call_status = call.status.unwrap_or_default();
        if !FINAL_STATUSES.contains(&call_status.as_str()) {
            return Poll::NotYet { check_after: Duration::from_secs(300) };
        }
        let end = CallEnd {
            status: call_status,
            duration_s: call.duration.and_then(|d| d.parse().ok()).unwrap_or(0),
            answered_by: call.answered_by,
            sip_response_code: None,
            recording_url: None,
        };
        if self.store.end_call(&row.token, &end, now).await.is_err() {
            return Poll::NotYet { check_after: Duration::from_secs(60) };
        }
        match self.store.call_by_token(&row.token).await {
            Ok(Some(row)) => {
                let (output, usage) = outcome(&row);
                Poll::Done(Done { output, usage })
            }
            _ => Poll::NotYet { check_after: Duration::from_secs(60) },
        }
    }
}
