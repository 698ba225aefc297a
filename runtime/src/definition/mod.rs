//! The workflow format: parsing from JSON or YAML, validation that reports every
//! problem with its path, and the compiled form the engine runs.

mod validate;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

pub use validate::validate;

use crate::expr::{Script, Template, ValueTemplate};
use crate::retry::RetryPolicy;

/// One problem in a definition, at its path (e.g. `steps[2].input.to`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where, e.g. `steps[1].branch[0].when`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// The syntax a definition was sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`.
    Json,
    /// `application/yaml`.
    Yaml,
}

/// Parses a body into a JSON document. A syntax error is a 400, not a 422.
pub fn parse(body: &[u8], format: Format) -> Result<Value, String> {
    match format {
        Format::Json => serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}")),
        Format::Yaml => serde_yaml_ng::from_slice(body).map_err(|e| format!("malformed YAML: {e}")),
    }
}

/// What starts a workflow.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// Only through the API.
    Manual,
    /// A per-workflow URL, optionally HMAC-signed.
    Webhook {
        /// The HMAC-SHA256 secret, when signatures are required.
        secret: Option<WebhookSecret>,
    },
    /// Ticks of a cron schedule.
    Schedule {
        /// The parsed expression (boxed: it is much larger than the other triggers).
        cron: Box<crate::schedule::CronSpec>,
        /// The IANA timezone; the account's when `None`.
        timezone: Option<String>,
        /// What to do with missed ticks.
        catch_up: crate::schedule::CatchUp,
    },
    /// A call to one of the account's phone numbers bound to this workflow (the first step is
    /// `voice.answer`, which answers it).
    Call,
    /// An app event of a type, optionally filtered.
    Event {
        /// The event type, e.g. `lead.created`.
        event_type: String,
        /// A Rhai filter on `event`.
        when: Option<Script>,
    },
}

impl Trigger {
    /// The stored name of the trigger kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Webhook { .. } => "webhook",
            Trigger::Event { .. } => "event",
            Trigger::Schedule { .. } => "schedule",
            Trigger::Call => "call",
        }
    }
}

/// A webhook trigger's HMAC secret. Users write it as text; the API seals it before the document
/// is stored (`secret: {sealed: "<hex>"}`), so the database never holds it readable. The runtime
/// only carries it: opening it is the API's (it holds the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookSecret {
    /// As written in a request (or in a document stored before secrets were sealed).
    Plain(String),
    /// Hex of the sealed secret.
    Sealed(String),
}

impl WebhookSecret {
    /// Reads `trigger.webhook.secret` as written or stored: text, or `{sealed: "<hex>"}`.
    pub fn from_stored(value: &Value) -> Option<Self> {
        match value {
            Value::String(s) => Some(WebhookSecret::Plain(s.clone())),
            Value::Object(o) if o.len() == 1 => o.get("sealed").and_then(Value::as_str).map(|h| WebhookSecret::Sealed(h.to_string())),
            _ => None,
        }
    }
}

/// Where a `goto` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A step, by index.
    Step(usize),
    /// The end of the run (succeeded).
    End,
}

/// What an action step does when it fails for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnError {
    /// The run fails (default).
    Fail,
    /// The step is marked failed and the run goes on with the next step.
    Continue,
    /// The run goes on at another step.
    Goto(Target),
}

/// How long a delay lasts.
#[derive(Debug, Clone)]
pub enum Delay {
    /// A fixed duration.
    For(Duration),
    /// Until a time (RFC 3339, or epoch milliseconds), rendered from a template.
    Until(Template),
    /// Until the local clock next reads a time of day (`{at: "09:00", timezone}`).
    At {
        /// The time of day, minutes after midnight.
        minute: u16,
        /// The IANA timezone, rendered when the delay starts; the account's when `None`, or
        /// when it renders to nothing or to a name that is not a zone.
        timezone: Option<Template>,
    },
}

/// One arm of a branch.
#[derive(Debug, Clone)]
pub struct Arm {
    /// The condition; `None` for `else`.
    pub when: Option<Script>,
    /// Where to go when it holds.
    pub goto: Target,
}

/// A step kind with its compiled parts.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// Run an action module.
    Action {
        /// The module's kind, e.g. `http.request`.
        kind: String,
        /// The input, compiled.
        input: ValueTemplate,
        /// The connection's name, when given.
        connection: Option<String>,
        /// Retry policy (the step's, else the action's default).
        retry: RetryPolicy,
        /// Timeout of one attempt.
        timeout: Duration,
        /// What a final failure does.
        on_error: OnError,
        /// `contact_rules: ignore`: quiet hours do not hold this step (a message the lead just
        /// asked for). Opt-outs still do.
        ignore_quiet_hours: bool,
    },
    /// Wait, durably.
    Delay(Delay),
    /// Go to the first arm whose condition holds.
    Branch(Vec<Arm>),
    /// Wait for an event of a type whose `match` holds, up to a timeout.
    WaitFor {
        /// The event type.
        event_type: String,
        /// A Rhai filter; `event` is the awaited event's data, the rest is the run's scope.
        matcher: Option<Script>,
        /// How long to wait.
        timeout: Duration,
        /// Where to go on timeout (default: the next step).
        on_timeout: Option<Target>,
    },
    /// Compute named values (`vars.<name>`).
    Set(Vec<(String, Script)>),
    /// Run steps once per item of a list, each item in a child run.
    ForEach(Box<ForEach>),
    /// End the run, succeeded.
    End,
}

/// A `for_each` step: one child run per item of `items`, at most `concurrency` active at once;
/// the step waits until every child has ended.
#[derive(Debug, Clone)]
pub struct ForEach {
    /// The list (rendered when the step starts; it must be a JSON list).
    pub items: ValueTemplate,
    /// The name the children's scripts read their item by (and `item_index` its position).
    pub as_name: String,
    /// The steps each child runs, compiled as a workflow of their own.
    pub body: SharedWorkflow,
    /// At most this many children active at once.
    pub concurrency: u32,
    /// A list longer than this fails the step.
    pub max_items: u32,
}

/// `for_each.concurrency` when not given.
pub const DEFAULT_CONCURRENCY: u32 = 10;
/// The highest `for_each.concurrency`.
pub const MAX_CONCURRENCY: u32 = 100;
/// `for_each.max_items` when not given.
pub const DEFAULT_MAX_ITEMS: u32 = 10_000;
/// The highest `for_each.max_items`.
pub const MAX_ITEMS: u32 = 100_000;

/// One step of a workflow.
#[derive(Debug, Clone)]
pub struct Step {
    /// The step's id.
    pub id: String,
    /// What it does.
    pub kind: StepKind,
}

/// A validated, compiled workflow: what the engine runs. Immutable per version, so it is cached.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// Its name.
    pub name: String,
    /// Its trigger.
    pub trigger: Trigger,
    /// Parameter values (defaults filled), as `params`.
    pub params: Value,
    /// Its steps, in order.
    pub steps: Vec<Step>,
    /// Step index by id.
    pub index: HashMap<String, usize>,
    /// `enabled` as written, if it was.
    pub enabled: Option<bool>,
    /// The document it was compiled from.
    pub source: Value,
}

impl Workflow {
    /// The index of the step after `i` in list order, or `None` at the end.
    pub fn next_after(&self, i: usize) -> Option<usize> {
        (i + 1 < self.steps.len()).then_some(i + 1)
    }
}

/// A shared compiled workflow.
pub type SharedWorkflow = Arc<Workflow>;

/// The most steps a workflow may have.
pub const MAX_STEPS: usize = 1_000;

/// How deeply a definition's objects and lists may nest (the document itself is depth 1).
pub const MAX_NESTING: usize = 32;

/// The longest delay, timeout or backoff, and how far ahead an `until` may be: ten years of
/// 365.25 days. Longer ones are refused at save time, so no due time can overflow.
pub const MAX_WAIT: Duration = Duration::from_secs(10 * 36_525 * 24 * 3600 / 100);

/// Parses a duration such as `30s`, `15m`, `2h`, `1d` or `1w`, at most [`MAX_WAIT`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("'{s}' is not a duration like 30s, 15m, 2h, 1d or 1w: {e}"))?;
    if d > MAX_WAIT {
        return Err(format!("'{s}' is longer than the maximum of 10 years"));
    }
    Ok(d)
}

/// Serde support for durations written as `30s`, `2h`, ….
pub mod duration_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes a duration as `humantime` text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads a duration from text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}
