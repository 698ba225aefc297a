//! The action plug-in contract. An action module has a stable `KIND` (stored in workflows, part
//! of the durable contract), an input schema checked at save time, delivery semantics, usage
//! units and an error classification. Modules are type-erased into an [`ActionRegistry`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::metering::Usage;
use crate::retry::RetryPolicy;

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
    /// The attempt, starting at 1.
    pub attempt: u32,
    /// Stable across retries of this step execution: give it to vendors that dedupe.
    pub idempotency_key: String,
    /// How long the action may take.
    pub timeout: Duration,
    /// The connection the step sends through, for modules that name providers
    /// ([`Action::PROVIDERS`]); `None` for the others.
    pub connection: Option<Arc<ConnectionRef>>,
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

/// The type of one input field, checked at save time when the value is a literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A string (interpolation allowed).
    String,
    /// A JSON object.
    Object,
    /// Any JSON value.
    Any,
}

/// One field of an action's input.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The field's name.
    pub name: &'static str,
    /// Its type.
    pub ty: FieldType,
    /// Whether it must be present.
    pub required: bool,
}

/// An action module. Implement this, then register it with [`ActionRegistry::register`].
#[async_trait]
pub trait Action: Send + Sync + 'static {
    /// The durable name stored in workflows, e.g. `http.request`. Never derived from a type name.
    const KIND: &'static str;
    /// The input fields.
    const INPUT: &'static [Field];
    /// Whether repeating a send is safe.
    const DELIVERY: Delivery;
    /// The connection providers this module sends through (e.g. `["twilio"]`); empty for
    /// modules that need no connection. A step of a module with providers gets one in
    /// [`ActionContext::connection`], or fails `missing_connection`.
    const PROVIDERS: &'static [&'static str] = &[];

    /// Extra save-time checks of a literal input (beyond the field list); problems as
    /// `(path under input, message)`.
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

    /// The units a send with this rendered input is expected to consume, checked against the
    /// quota of plans without overage before anything is sent (e.g. an SMS's segments).
    fn estimate(&self, _input: &Value) -> Vec<Usage> {
        Vec::new()
    }

    /// The vendor rate limit this send falls under, if any (asked before every real send).
    fn rate_limit(&self, _ctx: &ActionContext, _input: &Value) -> Option<RateLimit> {
        None
    }

    /// What would be sent, for the outbox (sandbox connections and test runs). Must not do any
    /// I/O. The default records the rendered input as is.
    fn sandbox(&self, _ctx: &ActionContext, input: &Value) -> Result<SandboxSend, ActionError> {
        Ok(SandboxSend { to: None, rendered: input.clone(), output: serde_json::json!({ "sandbox": true }), usage: self.estimate(input) })
    }

    /// Runs the action with its rendered input.
    async fn execute(&self, ctx: &ActionContext, input: Value) -> Result<ActionOutput, ActionError>;
}

/// The object-safe face of an [`Action`].
#[async_trait]
pub trait DynAction: Send + Sync {
    /// See [`Action::KIND`].
    fn kind(&self) -> &'static str;
    /// See [`Action::INPUT`].
    fn input(&self) -> &'static [Field];
    /// See [`Action::DELIVERY`].
    fn delivery(&self) -> Delivery;
    /// See [`Action::validate`].
    fn validate(&self, input: &serde_json::Map<String, Value>) -> Vec<(String, String)>;
    /// See [`Action::retry_policy`].
    fn retry_policy(&self) -> RetryPolicy;
    /// See [`Action::timeout`].
    fn timeout(&self) -> Duration;
    /// See [`Action::estimate`].
    fn estimate(&self, input: &Value) -> Vec<Usage>;
    /// See [`Action::PROVIDERS`].
    fn providers(&self) -> &'static [&'static str];
    /// See [`Action::rate_limit`].
    fn rate_limit(&self, ctx: &ActionContext, input: &Value) -> Option<RateLimit>;
    /// See [`Action::sandbox`].
    fn sandbox(&self, ctx: &ActionContext, input: &Value) -> Result<SandboxSend, ActionError>;
    /// See [`Action::execute`].
    async fn execute(&self, ctx: &ActionContext, input: Value) -> Result<ActionOutput, ActionError>;
}

#[async_trait]
impl<A: Action> DynAction for A {
    fn kind(&self) -> &'static str {
        A::KIND
    }
    fn input(&self) -> &'static [Field] {
        A::INPUT
    }
    fn delivery(&self) -> Delivery {
        A::DELIVERY
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
        Action::estimate(self, input)
    }
    fn providers(&self) -> &'static [&'static str] {
        A::PROVIDERS
    }
    fn rate_limit(&self, ctx: &ActionContext, input: &Value) -> Option<RateLimit> {
        Action::rate_limit(self, ctx, input)
    }
    fn sandbox(&self, ctx: &ActionContext, input: &Value) -> Result<SandboxSend, ActionError> {
        Action::sandbox(self, ctx, input)
    }
    async fn execute(&self, ctx: &ActionContext, input: Value) -> Result<ActionOutput, ActionError> {
        Action::execute(self, ctx, input).await
    }
}

/// Every action module the runtime can run, by kind.
#[derive(Clone, Default)]
pub struct ActionRegistry {
    actions: BTreeMap<&'static str, Arc<dyn DynAction>>,
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
        self
    }

    /// The module of a kind.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn DynAction>> {
        self.actions.get(kind)
    }

    /// Every registered kind, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.actions.keys().copied()
    }
}
