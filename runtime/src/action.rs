//! The action plug-in contract. An action module has a stable `KIND` (stored in workflows, part
//! of the durable contract), a typed `Input` whose derived JSON Schema is checked at save time
//! ([`schema`]) and into which the rendered input is deserialized at run time, a typed `Output`,
//! delivery semantics, the usage units it bills in and the connection providers it sends
//! through. Modules are type-erased ([`DynAction`]) into an [`ActionRegistry`], which refuses
//! duplicate kinds and units without a price.

pub mod schema;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::expr::ScopeData;
use crate::metering::{PriceList, Unit, Usage};
use crate::retry::RetryPolicy;
pub use schema::InputSchema;

/// Whether repeating a send can duplicate a side effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// No effect outside Switchboard (e.g. `log`): runs without any extra bookkeeping.
    Internal,
    /// Safe to repeat: the vendor dedupes by the idempotency key. The runtime renews its lease
    /// (a fenced write) before sending, so a cancelled run or a lost lease sends nothing.
    Idempotent,
    /// Repeating could act twice: the runtime records that it is dispatching before it sends,
    /// and an attempt whose outcome is unknown ends `outcome_unknown` instead of being resent.
    AtMostOnce,
}

/// How a failure steers the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Will fail again: fail the step at once.
    Permanent,
    /// May succeed later: retry with backoff.
    Retryable,
    /// The request may have reached the vendor: do not resend blindly.
    OutcomeUnknown,
}

/// The stored failure envelope of a step `{code, message, class, retry_after}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ActionError {
    /// A stable snake_case code, e.g. `http_status`, `timeout`, `quota_exceeded`.
    pub code: String,
    /// Human-readable, from the vendor where there is one.
    pub message: String,
    /// Retryable, permanent or outcome unknown.
    pub class: FailureClass,
    /// The vendor's `Retry-After`, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ActionError {
    /// A permanent failure.
    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), class: FailureClass::Permanent, retry_after_ms: None }
    }
    /// A retryable failure.
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), class: FailureClass::Retryable, retry_after_ms: None }
    }
    /// A failure after the request may have left.
    pub fn outcome_unknown(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), class: FailureClass::OutcomeUnknown, retry_after_ms: None }
    }
    /// The vendor refused the send because the recipient opted out (Twilio's 21610): the
    /// runtime records the opt-out and ends the step `skipped`, as if it had known before.
    pub fn opted_out(message: impl Into<String>) -> Self {
        Self::permanent(Self::OPTED_OUT, message)
    }

    /// The code of [`ActionError::opted_out`].
    pub const OPTED_OUT: &'static str = "recipient_opted_out";

    /// Sets the vendor's `Retry-After`.
    pub fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after_ms = after.map(|d| d.as_millis() as u64);
        self
    }
}

/// What a successful action returns: its output (visible as `steps.<id>.output`) and the units
/// it consumed, written to the ledger in the same transaction that marks the step succeeded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionOutput {
    /// The step's output.
    pub output: Value,
    /// Units consumed.
    pub usage: Vec<Usage>,
}

/// What an action knows about the step it runs in.
#[derive(Debug, Clone)]
pub struct ActionContext {
    /// The account.
    pub account_id: String,
    /// The run.
    pub run_id: String,
    /// The step's id in the workflow.
    pub step_id: String,
    /// The step execution's sequence number in its run (`steps[].seq` in the API).
    pub step_seq: i64,
    /// The engine's clock when the attempt started (ms): what a module stamps its own records
    /// with, so they agree with the runs' times (processes sharing PostgreSQL follow its clock).
    pub now: i64,
    /// The attempt, starting at 1.
    pub attempt: u32,
    /// Stable across retries of this step execution: give it to vendors that dedupe.
    pub idempotency_key: String,
    /// How long the action may take.
    pub timeout: Duration,
    /// The connection the step sends through, for modules that name providers
    /// ([`Action::PROVIDERS`]); `None` for the others.
    pub connection: Option<Arc<ConnectionRef>>,
    /// The run's scope when the step started, for modules with [`Action::RAW_FIELDS`] (they
    /// render those fields themselves, later); `None` for the others.
    pub scope: Option<Arc<ScopeData>>,
}

/// A connection as the runtime hands it to an action: who it is, and its credentials still
/// sealed. The runtime never sees plaintext credentials; the module opens them with the vault it
/// was built with (`switchboard_integrations::connections::Vault`).
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionRef {
    /// The connection's id (also the additional data its credentials are sealed with).
    pub id: String,
    /// Its name in the account, as steps name it (`connection: <name>`).
    pub name: String,
    /// The provider, e.g. `twilio`, `smtp`, `slack`, `crm`.
    pub provider: String,
    /// A sandbox connection records what would be sent in the outbox instead of sending.
    pub sandbox: bool,
    /// Non-secret settings (a JSON object), e.g. a sandbox Twilio connection's `simulate`.
    pub settings: Value,
    /// The sealed credentials.
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for ConnectionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionRef")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("sandbox", &self.sandbox)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A vendor rate limit a send must respect: at most one send per `interval` for `key` (e.g. one
/// SMS a second per sender number). A limited step waits for its slot; it does not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// What is limited, e.g. `twilio:+15550001111` or `slack:<connection id>:#sales`.
    pub key: String,
    /// The spacing between two sends.
    pub interval: Duration,
}

/// Whom a send reaches: a phone number (E.164) on a channel, whose opt-outs stop the send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The number, E.164.
    pub number: String,
    /// Texts or calls.
    pub channel: crate::contact::Channel,
}

/// What a send would have been, recorded in the outbox instead of being sent: on a sandbox
/// connection, and in test runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSend {
    /// The recipient as a person reads it (a phone number, an address, a channel).
    pub to: Option<String>,
    /// The message as it would have gone out (e.g. `{from, to, body}`).
    pub rendered: Value,
    /// The step's output, shaped like a real send's so later steps can read it.
    pub output: Value,
    /// The units the send would have consumed (shown in the outbox; not billed).
    pub usage: Vec<Usage>,
}

/// What a successful typed action returns: its output and the units it consumed.
#[derive(Debug, Clone, PartialEq)]
pub struct Done<O> {
    /// The step's output (serialized into `steps.<id>.output`).
    pub output: O,
    /// Units consumed, each one of the action's [`Action::UNITS`].
    pub usage: Vec<Usage>,
}

/// How an action's start ended well: done at once, or accepted by the vendor and finishing
/// later (a call ends minutes after it was placed).
#[derive(Debug, Clone, PartialEq)]
pub enum Started<O> {
    /// Done: the output and the units consumed.
    Done(Done<O>),
    /// Accepted; the outcome, and the usage, come later: through
    /// `Engine::complete_later` (a vendor callback) or, if none arrived by `check_after`, through
    /// [`Action::poll`].
    Later(Later),
}

impl<O> From<Done<O>> for Started<O> {
    fn from(done: Done<O>) -> Self {
        Started::Done(done)
    }
}

/// A pending operation of an action that finishes later.
#[derive(Debug, Clone, PartialEq)]
pub struct Later {
    /// What identifies the operation at the vendor (e.g. `{"call_sid": "CA…"}`): stored with the
    /// step (never in its output) and given back to [`Action::poll`].
    pub handle: Value,
    /// How long to wait for a completion before polling. The step's due time is set to it, so
    /// a crash loses nothing: the queue row is the timer.
    pub check_after: Duration,
}

/// What a poll of a pending operation found.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll<O> {
    /// It ended well: the output and the units consumed (billed now, once).
    Done(Done<O>),
    /// It ended badly; the failure steers the step as a failed send does (a retryable one is
    /// retried under the step's retry policy, which starts the action again).
    Failed(ActionError),
    /// Still going: poll again after `check_after` (a callback may complete it before).
    NotYet {
        /// When to poll again.
        check_after: Duration,
    },
}

/// The permanent `invalid_input` failure of a rendered input that does not deserialize into an
/// action's `Input`, naming the field (e.g. `to: invalid type: integer `5`, expected a string`).
pub fn parse_input<I: DeserializeOwned>(input: &Value) -> Result<I, ActionError> {
    serde_path_to_error::deserialize(input).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path == "." { inner.to_string() } else { format!("{path}: {inner}") };
        ActionError::permanent("invalid_input", message)
    })
}

/// An action module. Implement this, then register it with [`ActionRegistry::register`].
///
/// The input arrives rendered (templates evaluated) and deserialized into [`Action::Input`]; a
/// value that does not fit fails the step with a permanent `invalid_input` naming the field,
/// before anything is sent. The same type's JSON Schema (derived with `schemars`) checks the
/// literal parts of a step's input when a workflow is saved, and documents the action.
#[async_trait]
pub trait Action: Send + Sync + 'static {
    /// The durable name stored in workflows, e.g. `http.request`. Never derived from a type name.
    const KIND: &'static str;
    /// Whether repeating a send is safe. Give it to the shared classifier
    /// (`switchboard_integrations::classify_send_error(&e, Self::DELIVERY)`).
    const DELIVERY: Delivery;
    /// The units this action bills in; every one must have a price
    /// ([`ActionRegistry::check_prices`]), and usage in any other unit is a programming error.
    const UNITS: &'static [Unit] = &[];
    /// The connection providers this module sends through (e.g. `["twilio"]`); empty for
    /// modules that need no connection. A step of a module with providers gets one in
    /// [`ActionContext::connection`], or fails `missing_connection`.
    const PROVIDERS: &'static [&'static str] = &[];
    /// Input fields passed to the module as written rather than rendered when the step starts:
    /// the module renders their strings itself, later, with [`ActionContext::scope`] and what
    /// it learns meanwhile (a voice script's text is rendered at each turn of the call, seeing
    /// what the caller pressed). Save time leaves their checks, `{{ … }}` included, to
    /// [`Action::validate`].
    const RAW_FIELDS: &'static [&'static str] = &[];

    /// The input, as the rendered step input deserializes into it. Use
    /// `#[serde(deny_unknown_fields)]` so that unknown inputs are refused at save time.
    type Input: DeserializeOwned + JsonSchema + Send + Sync;
    /// The output, serialized into the step's output.
    type Output: Serialize + JsonSchema + Send;

    /// Save-time checks of the literal input beyond its schema (e.g. a phone number's form);
    /// problems as `(path under input, message)`. Strings holding `{{ … }}` are checked at run
    /// time only.
    fn validate(&self, _input: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The default retry policy of this action.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// The default timeout of one attempt.
    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }

    /// The units a send with this input is expected to consume, checked against the quota of
    /// plans without overage before anything is sent (e.g. an SMS's segments).
    fn estimate(&self, _input: &Self::Input) -> Vec<Usage> {
        Vec::new()
    }

    /// The vendor rate limit this send falls under, if any (asked before every real send).
    fn rate_limit(&self, _ctx: &ActionContext, _input: &Self::Input) -> Option<RateLimit> {
        None
    }

    /// The person this send reaches, for the contact rules: the phone number and the channel
    /// its opt-outs are read on. The default, `None`, is a send that reaches no phone (opt-outs
    /// do not apply; quiet hours still do when the account lists the kind).
    fn recipient(&self, _input: &Self::Input) -> Option<Recipient> {
        None
    }

    /// What would be sent, for the outbox (sandbox connections and test runs). Must not do any
    /// I/O. `None` (the default) records the rendered input as is, with `{"sandbox": true}` as
    /// the output and [`Action::estimate`] as the usage.
    fn sandbox(&self, _ctx: &ActionContext, _input: &Self::Input) -> Result<Option<SandboxSend>, ActionError> {
        Ok(None)
    }

    /// Runs the action.
    async fn execute(&self, ctx: &ActionContext, input: Self::Input) -> Result<Done<Self::Output>, ActionError>;

    /// Starts the action; what the runtime calls. The default runs [`Action::execute`], done at
    /// once. An action that finishes later (a call) overrides it to answer
    /// [`Started::Later`] once the vendor accepted the work, and overrides [`Action::poll`];
    /// its `execute` then has nothing to do alone and may refuse (see `docs/actions.md`).
    async fn start(&self, ctx: &ActionContext, input: Self::Input) -> Result<Started<Self::Output>, ActionError> {
        self.execute(ctx, input).await.map(Started::Done)
    }

    /// Asks the vendor how a pending operation ([`Started::Later`]) ended, when no completion
    /// arrived by its `check_after`. The default, for actions that never finish later or cannot
    /// ask, ends the step `outcome_unknown` (`no_completion`): the vendor accepted the work and
    /// never said how it went.
    async fn poll(&self, _ctx: &ActionContext, _handle: Value) -> Poll<Self::Output> {
        Poll::Failed(ActionError::outcome_unknown(
            "no_completion",
            "the vendor accepted the work but no completion arrived by the deadline, and this action cannot ask",
        ))
    }
}

/// The object-safe face of an [`Action`]: inputs and outputs as JSON. Implemented for every
/// [`Action`]; the runtime, and tests that drive a module with JSON, use this.
#[async_trait]
pub trait DynAction: Send + Sync {
    /// See [`Action::KIND`].
    fn kind(&self) -> &'static str;
    /// The JSON Schema of [`Action::Input`], read for save-time checks and docs.
    fn input_schema(&self) -> InputSchema;
    /// The JSON Schema of [`Action::Output`].
    fn output_schema(&self) -> Value;
    /// See [`Action::DELIVERY`].
    fn delivery(&self) -> Delivery;
    /// See [`Action::UNITS`].
    fn units(&self) -> &'static [Unit];
    /// See [`Action::validate`].
    fn validate(&self, input: &serde_json::Map<String, Value>) -> Vec<(String, String)>;
    /// See [`Action::retry_policy`].
    fn retry_policy(&self) -> RetryPolicy;
    /// See [`Action::timeout`].
    fn timeout(&self) -> Duration;
    /// See [`Action::estimate`]; nothing for an input that does not deserialize (the send will
    /// fail `invalid_input` without sending).
    fn estimate(&self, input: &Value) -> Vec<Usage>;
    /// See [`Action::PROVIDERS`].
    fn providers(&self) -> &'static [&'static str];
    /// See [`Action::RAW_FIELDS`].
    fn raw_fields(&self) -> &'static [&'static str];
    /// See [`Action::rate_limit`]; none for an input that does not deserialize.
    fn rate_limit(&self, ctx: &ActionContext, input: &Value) -> Option<RateLimit>;
    /// See [`Action::recipient`]; none for an input that does not deserialize.
    fn recipient(&self, input: &Value) -> Option<Recipient>;
    /// See [`Action::sandbox`].
    fn sandbox(&self, ctx: &ActionContext, input: &Value) -> Result<SandboxSend, ActionError>;
    /// Deserializes the input and runs [`Action::execute`].
    async fn execute(&self, ctx: &ActionContext, input: Value) -> Result<ActionOutput, ActionError>;
    /// Deserializes the input and runs [`Action::start`] (what the runtime calls).
    async fn start(&self, ctx: &ActionContext, input: Value) -> Result<Started<Value>, ActionError>;
    /// See [`Action::poll`]; the output as JSON.
    async fn poll(&self, ctx: &ActionContext, handle: Value) -> Poll<Value>;
}

/// A typed [`Done`] as JSON, checked against the action's declared units.
fn done_json<A: Action>(done: Done<A::Output>) -> Result<Done<Value>, ActionError> {
    debug_assert!(
        done.usage.iter().all(|u| A::UNITS.iter().any(|unit| unit.as_str() == u.unit)),
        "{} reported usage in a unit it does not declare: {:?}",
        A::KIND,
        done.usage
    );
    let output =
        serde_json::to_value(&done.output).map_err(|e| ActionError::permanent("invalid_output", format!("the output could not be serialized: {e}")))?;
    Ok(Done { output, usage: done.usage })
}

#[async_trait]
impl<A: Action> DynAction for A {
    fn kind(&self) -> &'static str {
        A::KIND
    }
    fn input_schema(&self) -> InputSchema {
        InputSchema::of::<A::Input>()
    }
    fn output_schema(&self) -> Value {
        schemars::schema_for!(A::Output).to_value()
    }
    fn delivery(&self) -> Delivery {
        A::DELIVERY
    }
    fn units(&self) -> &'static [Unit] {
        A::UNITS
    }
    fn validate(&self, input: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
        Action::validate(self, input)
    }
    fn retry_policy(&self) -> RetryPolicy {
        Action::retry_policy(self)
    }
    fn timeout(&self) -> Duration {
        Action::timeout(self)
    }
    fn estimate(&self, input: &Value) -> Vec<Usage> {
        parse_input(input).map(|input| Action::estimate(self, &input)).unwrap_or_default()
    }
    fn providers(&self) -> &'static [&'static str] {
        A::PROVIDERS
    }
    fn raw_fields(&self) -> &'static [&'static str] {
        A::RAW_FIELDS
    }
    fn rate_limit(&self, ctx: &ActionContext, input: &Value) -> Option<RateLimit> {
        Action::rate_limit(self, ctx, &parse_input(input).ok()?)
    }
    fn recipient(&self, input: &Value) -> Option<Recipient> {
        Action::recipient(self, &parse_input(input).ok()?)
    }
    fn sandbox(&self, ctx: &ActionContext, input: &Value) -> Result<SandboxSend, ActionError> {
        let typed: A::Input = parse_input(input)?;
        match Action::sandbox(self, ctx, &typed)? {
            Some(send) => Ok(send),
            None => {
                Ok(SandboxSend { to: None, rendered: input.clone(), output: serde_json::json!({ "sandbox": true }), usage: Action::estimate(self, &typed) })
            }
        }
    }
    async fn execute(&self, ctx: &ActionContext, input: Value) -> Result<ActionOutput, ActionError> {
        let input: A::Input = parse_input(&input)?;
        let done = done_json::<A>(Action::execute(self, ctx, input).await?)?;
        Ok(ActionOutput { output: done.output, usage: done.usage })
    }
    async fn start(&self, ctx: &ActionContext, input: Value) -> Result<Started<Value>, ActionError> {
        let input: A::Input = parse_input(&input)?;
        Ok(match Action::start(self, ctx, input).await? {
            Started::Done(done) => Started::Done(done_json::<A>(done)?),
            Started::Later(later) => Started::Later(later),
        })
    }
    async fn poll(&self, ctx: &ActionContext, handle: Value) -> Poll<Value> {
        match Action::poll(self, ctx, handle).await {
            Poll::Done(done) => match done_json::<A>(done) {
                Ok(done) => Poll::Done(done),
                Err(e) => Poll::Failed(e),
            },
            Poll::Failed(e) => Poll::Failed(e),
            Poll::NotYet { check_after } => Poll::NotYet { check_after },
        }
    }
}

/// Why a set of modules cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A module bills in a unit the price table does not price.
    #[error("action {kind} declares the unit {unit}, which has no price: add it to the price table (runtime/src/metering.rs, docs/metering.md)")]
    UnpricedUnit {
        /// The module's kind.
        kind: &'static str,
        /// The unit.
        unit: Unit,
    },
}

/// Every action module the runtime can run, by kind.
#[derive(Clone, Default)]
pub struct ActionRegistry {
    actions: BTreeMap<&'static str, Arc<dyn DynAction>>,
    /// Each module's input schema, derived once at registration.
    schemas: BTreeMap<&'static str, Arc<InputSchema>>,
}

impl std::fmt::Debug for ActionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.actions.keys()).finish()
    }
}

impl ActionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a module. Panics on a duplicate kind: two modules claiming one durable name is a
    /// programming error that must not reach production.
    pub fn register<A: Action>(&mut self, action: A) -> &mut Self {
        let previous = self.actions.insert(A::KIND, Arc::new(action));
        assert!(previous.is_none(), "action kind {} registered twice", A::KIND);
        self.schemas.insert(A::KIND, Arc::new(InputSchema::of::<A::Input>()));
        self
    }

    /// The input schema of a kind (derived once, at registration).
    pub fn input_schema(&self, kind: &str) -> Option<&InputSchema> {
        self.schemas.get(kind).map(|s| &**s)
    }

    /// The module of a kind.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn DynAction>> {
        self.actions.get(kind)
    }

    /// Every registered kind, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.actions.keys().copied()
    }

    /// Checks that every unit a module declares has a price in `prices` (at start-up, so that
    /// no step bills at zero by mistake).
    pub fn check_prices(&self, prices: &PriceList) -> Result<(), RegistryError> {
        for (kind, action) in &self.actions {
            if let Some(unit) = action.units().iter().find(|u| !prices.prices(**u)) {
                return Err(RegistryError::UnpricedUnit { kind, unit: *unit });
            }
        }
        Ok(())
    }
}
