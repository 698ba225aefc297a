//! Rows the store reads and writes.

use serde_json::{Value, json};
use sqlx::FromRow;

use crate::status::{RunStatus, StepStatus};

/// An account.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct Account {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its plan (`trial`, `starter`, …).
    pub plan: String,
    /// Its IANA timezone.
    pub timezone: String,
    /// Creation time (ms).
    pub created_at: i64,
    /// Its contact rules as JSON (`contact::ContactRules`); `None` is the defaults.
    pub contact_rules: Option<String>,
}

/// An API key's record: never the key, nor (outside the store) its hash.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct ApiKey {
    /// Its id (UUIDv7 text; derived from the hash for keys made before ids existed).
    pub id: String,
    /// The account it opens.
    pub account_id: String,
    /// Creation time (ms).
    pub created_at: i64,
    /// When it last authenticated a request (ms), to the minute; `None` if never since it was
    /// made (or since last-use times were recorded).
    pub last_used_at: Option<i64>,
}

/// The account behind an API key, and that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHolder {
    /// The account.
    pub account: Account,
    /// The key that was presented.
    pub key: ApiKey,
}

/// An account with its API keys (admin list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountKeys {
    /// The account.
    pub account: Account,
    /// Its keys, oldest first.
    pub keys: Vec<ApiKey>,
}

/// A workflow with its current version's definition.
#[derive(Debug, Clone, FromRow)]
pub struct WorkflowRow {
    /// Its id.
    pub id: String,
    /// Its account.
    pub account_id: String,
    /// Its name.
    pub name: String,
    /// 1 when its triggers are on.
    pub enabled: i64,
    /// The current version.
    pub version: i64,
    /// `manual`, `webhook` or `event`.
    pub trigger_kind: String,
    /// The event type of an `event` trigger.
    pub event_type: Option<String>,
    /// The secret token of a `webhook` trigger's URL.
    pub webhook_token: Option<String>,
    /// The current version's definition (JSON).
    pub definition: String,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
}

/// What a webhook needs to know about its workflow (a small row: the hot path of ingest).
#[derive(Debug, Clone, FromRow)]
pub struct HookTarget {
    /// The workflow.
    pub id: String,
    /// Its account.
    pub account_id: String,
    /// 1 when its triggers are on.
    pub enabled: i64,
    /// The current version.
    pub version: i64,
    /// The trigger kind of the current version.
    pub trigger_kind: String,
}

/// A new workflow or a new version of one.
#[derive(Debug, Clone)]
pub struct WorkflowWrite {
    /// Its id.
    pub id: String,
    /// Its account.
    pub account_id: String,
    /// Its name.
    pub name: String,
    /// Whether its triggers are on.
    pub enabled: bool,
    /// `manual`, `webhook` or `event`.
    pub trigger_kind: String,
    /// The event type of an `event` trigger.
    pub event_type: Option<String>,
    /// The token to use if the workflow gets a webhook URL and has none yet.
    pub webhook_token: Option<String>,
    /// The definition (JSON).
    pub definition: String,
    /// The template it was made from (kept from the first version).
    pub template: Option<String>,
    /// Now (ms).
    pub now: i64,
}

/// A run as stored.
#[derive(Debug, Clone, FromRow)]
pub struct RunRow {
    /// Its id.
    pub id: String,
    /// Its account.
    pub account_id: String,
    /// Its workflow.
    pub workflow_id: String,
    /// The workflow version it runs.
    pub version: i64,
    /// Its state.
    pub status: RunStatus,
    /// The event that started it.
    pub event_id: String,
    /// The trigger payload (JSON).
    pub event: String,
    /// `{steps: {<id>: {output}}, vars: {…}}` (JSON).
    pub context: String,
    /// The failure envelope when failed (JSON).
    pub error: Option<String>,
    /// 1 for test runs.
    pub is_test: i64,
    /// The index of the current (or last) step.
    pub step_index: i64,
    /// The sequence number of the current (or last) step execution.
    pub step_seq: i64,
    /// Creation time (ms).
    pub created_at: i64,
    /// When its first step started (ms).
    pub started_at: Option<i64>,
    /// When it ended (ms).
    pub finished_at: Option<i64>,
    /// A `for_each` child's parent run.
    pub parent_run_id: Option<String>,
    /// A `for_each` child's parent step execution (`seq`).
    pub parent_seq: Option<i64>,
    /// A `for_each` child's position in the list (from 0).
    pub item_index: Option<i64>,
}

/// One execution of a step.
#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct StepRow {
    /// Its run.
    pub run_id: String,
    /// Its sequence number in the run (1, 2, …).
    pub seq: i64,
    /// The step's id in the workflow.
    pub step_id: String,
    /// Its state.
    pub status: StepStatus,
    /// Attempts made.
    pub attempts: i64,
    /// The rendered input (JSON).
    pub input: Option<String>,
    /// The output (JSON).
    pub output: Option<String>,
    /// The failure envelope (JSON).
    pub error: Option<String>,
    /// First attempt's start (ms).
    pub started_at: Option<i64>,
    /// End (ms).
    pub finished_at: Option<i64>,
    /// When it is due next (delay, retry, wait timeout, rate-limit slot), ms.
    pub due_at: Option<i64>,
    /// A throttled step's rate-limit slot (ms): the store, not the limiter, is its authority.
    pub rate_slot_at: Option<i64>,
    /// The rate limit it waits for (e.g. `twilio:+15550001111`).
    pub rate_slot_key: Option<String>,
    /// The handle (JSON) of an action that finishes later (e.g. `{"call_sid": …}`), given to
    /// its `poll`; set while `awaiting_completion` and kept after. Never shown in the output.
    pub deferred_handle: Option<String>,
}

impl StepRow {
    /// The row written when the run was cancelled before this completion committed: cancel
    /// wins (see [`StepStatus::after_cancel`]); an execution that would have gone on ends now,
    /// due never.
    pub fn after_cancel(&self, now: i64) -> StepRow {
        let mut step = self.clone();
        step.status = self.status.after_cancel();
        if step.status != self.status {
            step.finished_at = Some(now);
            step.due_at = None;
            step.rate_slot_at = None;
            step.rate_slot_key = None;
        }
        step
    }

    /// The output as the API and live events show it (JSON, `Null` when none). A throttled
    /// step shows why it waits, `{rate_limited: {key, until}}`, built from its slot columns.
    pub fn public_output(&self) -> Value {
        if self.status == StepStatus::Throttled
            && let Some(at) = self.rate_slot_at
        {
            return json!({ "rate_limited": { "key": self.rate_slot_key, "until": crate::clock::to_rfc3339(at) } });
        }
        self.output.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(Value::Null)
    }
}

/// One usage ledger row.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct UsageRow {
    /// Monotonic position in the ledger, assigned shortly after commit (`None` until then).
    pub seq: Option<i64>,
    /// Deterministic id (`<run>:<step seq>:<unit>`): a second write of the same charge is refused.
    pub id: String,
    /// The account.
    pub account_id: String,
    /// The workflow.
    pub workflow_id: String,
    /// The run.
    pub run_id: String,
    /// The step's id, none for `workflow_run`.
    pub step_id: Option<String>,
    /// The unit.
    pub unit: String,
    /// How many units.
    pub quantity: i64,
    /// Tokens, thousandths.
    pub tokens_milli: i64,
    /// Cost, millionths of a dollar.
    pub cost_micros: i64,
    /// When (ms).
    pub created_at: i64,
    /// The local date (account timezone) it is counted on.
    pub day: String,
}

/// A usage row to write.
#[derive(Debug, Clone)]
pub struct NewUsage {
    /// Deterministic id.
    pub id: String,
    /// The step's id, none for `workflow_run`.
    pub step_id: Option<String>,
    /// The unit.
    pub unit: String,
    /// How many.
    pub quantity: i64,
    /// Tokens, thousandths.
    pub tokens_milli: i64,
    /// Cost, millionths of a dollar.
    pub cost_micros: i64,
    /// The local date (account timezone) it is counted on.
    pub day: String,
}

/// The child runs of a `for_each` step execution, written in the transaction that makes the
/// step wait for them.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// The parent's step execution.
    pub parent_seq: i64,
    /// The event that started the parent (children share it).
    pub event_id: String,
    /// The parent's event (JSON), copied to each child.
    pub event: String,
    /// The workflow version the children run (the body of the parent's step).
    pub version: i64,
    /// Whether they are test runs.
    pub is_test: bool,
    /// How many to admit at once (the step's concurrency).
    pub admit: usize,
    /// The children, in item order.
    pub children: Vec<NewChild>,
}

/// One child run of a `for_each`.
#[derive(Debug, Clone)]
pub struct NewChild {
    /// Its id.
    pub id: String,
    /// Its position in the list.
    pub item_index: i64,
    /// Its initial context (JSON): the item and where its steps are.
    pub context: String,
    /// Its `workflow_run` charge, none when not billed.
    pub usage: Option<NewUsage>,
}

/// How a fan-out's children stand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanOutSummary {
    /// Children started.
    pub total: i64,
    /// Ended well.
    pub succeeded: i64,
    /// Ended failed.
    pub failed: i64,
    /// Cancelled.
    pub cancelled: i64,
    /// Not ended yet.
    pub active: i64,
    /// The first children's run ids, in item order.
    pub children: Vec<String>,
}

/// An event to record.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Its id.
    pub id: String,
    /// The account.
    pub account_id: String,
    /// Its type (`webhook`, `manual`, or the app event's type).
    pub event_type: String,
    /// Its payload (JSON); `None` when it starts runs, whose `event` holds it.
    pub data: Option<String>,
    /// `webhook`, `api` or `manual`.
    pub source: String,
    /// Repeat protection (`Idempotency-Key`, event `id`), scoped to the account.
    pub dedupe_key: Option<String>,
    /// Repeats of `dedupe_key` older than this (ms) start afresh; `None`: never.
    pub dedupe_since: Option<i64>,
    /// The answer to give to a repeat (JSON).
    pub response: String,
    /// Now (ms).
    pub now: i64,
}

impl NewEvent {
    /// Whether the group commit (events without a dedupe key) writes this event's row: only
    /// when the event started no run, for the row is then its only record. An event that
    /// started runs is recorded in them — each holds the event's id, payload and time, and its
    /// workflow's trigger says what kind of event it was — and nothing would read its row, which
    /// is there to answer repeats of a dedupe key.
    pub(crate) fn needs_batch_row(&self, runs: &[NewRun]) -> bool {
        debug_assert!(self.dedupe_key.is_none(), "the group commit takes no dedupe key");
        runs.is_empty()
    }
}

/// A run to start.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Its id.
    pub id: String,
    /// The workflow.
    pub workflow_id: String,
    /// The version.
    pub version: i64,
    /// The trigger payload (JSON).
    pub event: String,
    /// Whether it is a test run.
    pub is_test: bool,
    /// Its `workflow_run` charge, none when not billed.
    pub usage: Option<NewUsage>,
    /// A lease on its first step taken as it is recorded (token, until): the accepting process
    /// hands the run to its own workers in memory instead of their claiming it. `None`: due now,
    /// for any worker to claim.
    pub lease: Option<(String, i64)>,
}

impl NewRun {
    /// Its first queue row's lease token and due time, for an event recorded at `now`: leased
    /// until the lease's end when handed off, else unleased and due at once.
    pub(crate) fn first_due(&self, now: i64) -> (Option<&str>, i64) {
        self.lease.as_ref().map_or((None, now), |(token, until)| (Some(token.as_str()), *until))
    }
}

/// A waiting step an event resumes.
#[derive(Debug, Clone)]
pub struct Resume {
    /// The run.
    pub run_id: String,
    /// The waiting step's sequence number (guards against a timeout that won the race).
    pub step_seq: i64,
    /// Its step id.
    pub step_id: String,
    /// The wait step's output.
    pub output: String,
    /// The run's new context (JSON).
    pub context: String,
    /// The index of the step to go on with, none to finish the run.
    pub next_index: Option<i64>,
}

/// What recording an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Newly recorded.
    New,
    /// A repeat: the first answer (JSON).
    Repeat(String),
}

/// A claimed queue row.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct Claim {
    /// The run.
    pub run_id: String,
    /// The step to execute.
    pub step_index: i64,
    /// Its execution sequence number.
    pub step_seq: i64,
    /// Attempts already made of this step execution.
    pub attempt: i64,
    /// 1 when a previous attempt was dispatching and never finished.
    pub dispatching: i64,
    /// Tokens (thousandths) this step holds reserved (plans without overage).
    pub reserved_milli: i64,
    /// The period the reservation was taken in.
    pub reserved_period: Option<String>,
}

/// A quota to enforce while recording an event's runs (plans without overage).
#[derive(Debug, Clone)]
pub struct QuotaCheck {
    /// The current period (first day of the month, account timezone).
    pub period: String,
    /// Tokens (thousandths) included in the plan.
    pub limit_milli: i64,
    /// The failure envelope (JSON) of a run refused for quota.
    pub error: String,
}

/// What a completion settles with the account's period counters.
#[derive(Debug, Clone)]
pub struct QuotaSettle {
    /// The reservation to release (period, tokens), if the step held one.
    pub release: Option<(String, i64)>,
    /// The period the spent tokens count in, and how many.
    pub spend: Option<(String, i64)>,
}

/// The answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved.
    Held,
    /// The account does not have the tokens left.
    Exceeded,
    /// The claim's lease was lost (or the run cancelled): stop.
    LeaseLost,
}

/// What comes after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The run continues at a step, due at a time.
    Continue {
        /// The step index.
        step_index: i64,
        /// Its sequence number.
        step_seq: i64,
        /// Attempts already made.
        attempt: i64,
        /// When it is due (ms).
        due_at: i64,
        /// Keep the claim's lease (the worker goes on with the step at once).
        keep_lease: Option<i64>,
    },
    /// The run is over.
    Finish,
}

/// A wait to register (a `wait_for` step that started waiting).
#[derive(Debug, Clone)]
pub struct NewWait {
    /// The event type awaited.
    pub event_type: String,
}

/// Everything a step's completion writes, in one transaction.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The run.
    pub run_id: String,
    /// The run's account.
    pub account_id: String,
    /// The run's workflow.
    pub workflow_id: String,
    /// The claim's token: the write is refused if the lease was lost.
    pub token: String,
    /// The step execution's record.
    pub step: StepRow,
    /// What comes next.
    pub next: Next,
    /// The run's new status.
    pub run_status: RunStatus,
    /// The run's new context (JSON), if it changed.
    pub context: Option<String>,
    /// The run's failure envelope (JSON).
    pub run_error: Option<String>,
    /// Usage rows to write.
    pub usage: Vec<NewUsage>,
    /// A wait to register.
    pub wait: Option<NewWait>,
    /// Whether the step ended a wait (its row goes).
    pub clear_wait: bool,
    /// Whether the step ran an action: if the run was cancelled meanwhile, an action's outcome
    /// and usage are still recorded (it happened); anything else is dropped.
    pub side_effect: bool,
    /// Quota counters to settle (accounts on plans without overage).
    pub quota: Option<QuotaSettle>,
    /// What a sandbox send would have sent, for the outbox.
    pub outbox: Option<NewOutbox>,
    /// The child runs a `for_each` step starts (with the step's waiting transition).
    pub spawn: Option<Spawn>,
    /// For a `for_each` child: its parent (run, step seq), told when the child ends.
    pub parent: Option<(String, i64)>,
    /// Now (ms).
    pub now: i64,
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The cursor of the next page.
    pub next_cursor: Option<String>,
}

/// Filters of a run list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this workflow's runs.
    pub workflow_id: Option<String>,
    /// Only the `for_each` children of this run.
    pub parent_run_id: Option<String>,
    /// Only runs in this status.
    pub status: Option<String>,
    /// Runs with ids below this.
    pub cursor: Option<String>,
    /// At most this many.
    pub limit: i64,
}

/// A connection as stored: its credentials sealed (hex).
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct ConnectionRow {
    /// Its id.
    pub id: String,
    /// Its account.
    pub account_id: String,
    /// `twilio`, `smtp`, `slack`, `stripe` or `crm`.
    pub provider: String,
    /// Its name, unique in the account.
    pub name: String,
    /// 1 for a sandbox connection.
    pub sandbox: i64,
    /// The sealed credentials, hex-encoded.
    pub sealed: String,
    /// Creation time (ms).
    pub created_at: i64,
    /// Non-secret settings (a JSON object), e.g. a sandbox Twilio connection's `simulate`.
    pub settings: String,
    /// `ok`, or `broken` once an OAuth provider refused to refresh its tokens.
    pub status: String,
}

impl ConnectionRow {
    /// The connection as an action module receives it, credentials still sealed. A row whose
    /// hex does not decode gives empty bytes, which the vault refuses to open with a clear error.
    pub fn into_ref(self) -> crate::action::ConnectionRef {
        crate::action::ConnectionRef {
            sealed: hex::decode(&self.sealed).unwrap_or_default(),
            sandbox: self.sandbox == 1,
            settings: serde_json::from_str(&self.settings).unwrap_or_else(|_| json!({})),
            id: self.id,
            name: self.name,
            provider: self.provider,
        }
    }
}

/// An OAuth authorization request in flight (`oauth_states`).
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct OAuthStateRow {
    /// SHA-256 of the `state` parameter, hex.
    pub state_hash: String,
    /// The account that asked.
    pub account_id: String,
    /// `google` or `slack`.
    pub provider: String,
    /// The connection name to create (or authorize again).
    pub name: String,
    /// The PKCE verifier, sealed, hex.
    pub verifier: String,
    /// When it expires (ms).
    pub expires_at: i64,
    /// When it was created (ms).
    pub created_at: i64,
}

/// An outbox message to record with a step's completion.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutbox {
    /// Its id (time-ordered).
    pub id: String,
    /// The action kind, e.g. `sms.send`.
    pub kind: String,
    /// The connection's name, if the action used one.
    pub connection_name: Option<String>,
    /// The recipient, as a person reads it.
    pub recipient: Option<String>,
    /// The message as it would have gone out (JSON).
    pub rendered: String,
    /// The units it would have consumed (JSON list of `{unit, quantity}`).
    pub usage: String,
    /// Whether it comes from a test run.
    pub is_test: bool,
}

/// An outbox message as stored.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct OutboxRow {
    /// Its id.
    pub id: String,
    /// The run that would have sent it.
    pub run_id: String,
    /// The step execution's sequence number in the run.
    pub step_seq: i64,
    /// The step's id.
    pub step_id: String,
    /// The action kind.
    pub kind: String,
    /// The connection's name.
    pub connection_name: Option<String>,
    /// The recipient.
    pub recipient: Option<String>,
    /// The rendered message (JSON).
    pub rendered: String,
    /// The units (JSON).
    pub usage: String,
    /// 1 when from a test run.
    pub is_test: i64,
    /// When it was recorded (ms).
    pub created_at: i64,
}
