//! The shapes of the API's answers, for the document: handlers build them as
//! `serde_json::Value`, so each type here mirrors a builder (named in each section's header) and
//! is never constructed. The e2e test `openapi` checks real answers against their fields.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

// ---- Shared answers ----------------------------------------------------------------------------

/// `{id, deleted: true}`: what a DELETE answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// The deleted resource.
    pub id: String,
    /// Always `true`.
    pub deleted: bool,
}

/// An accepted webhook or manual run (`engine::HookAccepted`).
#[derive(Debug, Serialize, ToSchema)]
pub struct HookAccepted {
    /// The recorded event.
    pub event_id: String,
    /// The run it started.
    pub run_id: String,
}

/// An accepted app event (`engine::EventAccepted`).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventAccepted {
    /// The recorded event (the same for a repeated `id`).
    pub event_id: String,
    /// The runs it started: one per enabled workflow whose trigger matched (none for a repeat).
    pub run_ids: Vec<String>,
}

// ---- Accounts (routes::accounts::account_json and read) ------------------------------------------

/// An account.
#[derive(Debug, Serialize, ToSchema)]
pub struct Account {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `trial`, `starter`, `professional` or `enterprise`.
    pub plan: String,
    /// IANA timezone: usage days and periods are local dates in it.
    pub timezone: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A new account, with its API key.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountCreated {
    /// The account.
    #[serde(flatten)]
    pub account: Account,
    /// The key's id: how the admin lists and revokes it.
    pub key_id: String,
    /// The account's API key (`sk_…`): shown only in this answer, stored hashed.
    pub api_key: String,
}

/// A new API key of an account (`routes::accounts::add_key`).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCreated {
    /// The key's id: how the admin lists and revokes it.
    pub key_id: String,
    /// The key (`sk_…`): shown only in this answer, stored hashed.
    pub api_key: String,
}

/// An API key as the admin sees it: never the key itself (`routes::accounts::key_json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyInfo {
    /// The key's id.
    pub key_id: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it last opened a request (RFC 3339), to the minute; `null` if not since it was made.
    #[schema(format = DateTime, required = true)]
    pub last_used_at: Option<String>,
}

/// An account with its live API keys (`routes::accounts::account_keys_json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountWithKeys {
    /// The account.
    #[serde(flatten)]
    pub account: Account,
    /// Its keys, oldest first; empty when every key was revoked.
    pub keys: Vec<ApiKeyInfo>,
}

/// A page of accounts (admin).
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountList {
    /// The accounts, newest first.
    pub accounts: Vec<AccountWithKeys>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The account with its plan and the current period's tokens.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountDetail {
    /// The account.
    #[serde(flatten)]
    pub account: Account,
    /// The current period: the calendar month in the account's timezone.
    pub period: Period,
    /// Tokens the plan includes a period, in thousandths.
    pub tokens_included_milli: i64,
    /// Tokens used this period, in thousandths.
    pub tokens_used_milli: i64,
    /// Tokens held by steps in flight (plans without overage), in thousandths.
    pub tokens_reserved_milli: i64,
    /// Tokens left this period, in thousandths (never below 0).
    pub tokens_left_milli: i64,
    /// Use beyond the included tokens.
    pub overage: Overage,
    /// The plan's monthly price, in millionths of a dollar.
    pub plan_price_micros: i64,
}

/// A period of local dates, `from` inclusive, `to` exclusive.
#[derive(Debug, Serialize, ToSchema)]
pub struct Period {
    /// First day (`YYYY-MM-DD`).
    #[schema(format = Date)]
    pub from: String,
    /// The day after the last (`YYYY-MM-DD`).
    #[schema(format = Date)]
    pub to: String,
}

/// Overage of the current period.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overage {
    /// Whether the plan bills overage (else work stops at the quota).
    pub allowed: bool,
    /// Tokens over the included ones, in thousandths.
    pub tokens_milli: i64,
    /// What they cost, in millionths of a dollar.
    pub cost_micros: i64,
}

/// An account's Stripe customer link.
#[derive(Debug, Serialize, ToSchema)]
pub struct StripeCustomerLink {
    /// The account.
    pub id: String,
    /// The Stripe customer its usage is pushed to; `null` when unlinked.
    #[schema(required = true)]
    pub stripe_customer_id: Option<String>,
}

// ---- Workflows (routes::workflows::workflow_json) ------------------------------------------------

/// A workflow definition, as `POST /v1/workflows` and `PUT /v1/workflows/{id}` take it (JSON or
/// YAML). The definition language (triggers, step kinds, expressions) is in `docs/workflows.md`;
/// every problem is answered at once as a 422 with its path.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowDefinition {
    /// Its name.
    pub name: String,
    /// What it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub description: Option<String>,
    /// Exactly one of `{"event": type, "when"?: expr}`, `{"webhook": {"secret"?}}`,
    /// `{"schedule": {"cron", "timezone"?}}` or `{"manual": {}}`.
    #[schema(value_type = Object)]
    pub trigger: Value,
    /// Values the steps' expressions read as `params.<name>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub params: Option<Value>,
    /// The steps, in order; each has an `id` and one kind (`action`, `branch`, `set`, `delay`,
    /// `wait_for`, `end`, …).
    #[schema(value_type = Vec<Object>, min_items = 1)]
    pub steps: Vec<Value>,
    /// A new workflow is enabled unless this says `false`; a new version keeps the current state
    /// unless it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
}

/// A stored workflow: its current version.
#[derive(Debug, Serialize, ToSchema)]
pub struct Workflow {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its version: 1, then one more each `PUT`.
    pub version: i64,
    /// Whether its trigger starts runs.
    pub enabled: bool,
    /// The trigger, as written.
    #[schema(value_type = Object)]
    pub trigger: Value,
    /// The steps, as written.
    #[schema(value_type = Vec<Object>)]
    pub steps: Value,
    /// The parameter values, when the definition has `params` (a workflow made from a template).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub params: Option<Value>,
    /// The URL to post to, for a webhook trigger.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub webhook_url: Option<String>,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A page of workflows.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowList {
    /// The workflows.
    pub workflows: Vec<Workflow>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// What a test run shows.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestRunResult {
    /// The test run with its timeline (unfinished if it took longer than 10 s).
    pub run: RunDetail,
    /// What it would have sent, oldest first.
    pub outbox: Vec<OutboxMessage>,
}

// ---- Runs (routes::runs::run_json, step_json, usage_json) ----------------------------------------

/// A run's status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for a worker.
    Queued,
    /// A step is running.
    Running,
    /// A step waits (delay, retry backoff, `wait_for`, rate limit).
    Waiting,
    /// Every step has finished.
    Succeeded,
    /// A step failed for good.
    Failed,
    /// Cancelled by a person.
    Cancelled,
}

/// A step's status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started, or due again (retry).
    Pending,
    /// Running now.
    Running,
    /// Waiting for its due time or an event.
    Waiting,
    /// Done.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Passed over by a branch.
    Skipped,
    /// Cancelled with its run.
    Cancelled,
    /// Interrupted while sending with an at-most-once action: it may or may not have been sent.
    OutcomeUnknown,
}

/// A run (without its steps).
#[derive(Debug, Serialize, ToSchema)]
pub struct Run {
    /// Its id.
    pub id: String,
    /// Its workflow.
    pub workflow_id: String,
    /// The workflow version it runs.
    pub version: i64,
    /// Where it is.
    pub status: RunStatus,
    /// The event that started it, as `event` in expressions: any JSON, as sent (a webhook's or
    /// a manual start's body may be an array, a string or `null`).
    pub event: Value,
    /// Whether it is a test run (sandbox transports, waits fast-forwarded, not billed).
    pub test: bool,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339; `null` until it starts.
    #[schema(required = true, format = DateTime)]
    pub started_at: Option<String>,
    /// RFC 3339; `null` until it finishes.
    #[schema(required = true, format = DateTime)]
    pub finished_at: Option<String>,
    /// Why it failed (the failed step's failure); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<Failure>,
}

/// A page of runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// The runs.
    pub runs: Vec<Run>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A run with its step timeline and usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: Run,
    /// Each step execution in order (a step run twice, e.g. in a loop, appears twice); the step
    /// about to run shows as `pending`.
    pub steps: Vec<Step>,
    /// Every ledger row of the run.
    pub usage: Vec<StepUsage>,
}

/// One step execution in a run's timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct Step {
    /// The step's id in the workflow.
    pub id: String,
    /// Its position in the timeline.
    pub seq: i64,
    /// Where it is.
    pub status: StepStatus,
    /// Attempts made.
    pub attempts: i64,
    /// RFC 3339, or `null`.
    #[schema(required = true, format = DateTime)]
    pub started_at: Option<String>,
    /// RFC 3339, or `null`.
    #[schema(required = true, format = DateTime)]
    pub finished_at: Option<String>,
    /// When it is due again (waiting or retrying), RFC 3339, or `null`.
    #[schema(required = true, format = DateTime)]
    pub due_at: Option<String>,
    /// Its rendered input, or `null`.
    #[schema(required = true)]
    pub input: Value,
    /// Its output, or `null`.
    #[schema(required = true)]
    pub output: Value,
    /// Why its last attempt failed (also while it waits to retry); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<Failure>,
    /// This execution's ledger rows.
    pub usage: Vec<StepUsage>,
}

/// How a failure steers the runtime (`action::FailureClass`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Will fail again: the step failed at once.
    Permanent,
    /// May succeed later: retried with backoff while attempts are left.
    Retryable,
    /// The request may have reached the vendor: not resent (a person may retry the run).
    OutcomeUnknown,
}

/// The stored failure of a step or run: `action::ActionError` with the step it happened in
/// (`engine::step::error_json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Failure {
    /// A stable snake_case code, e.g. `http_status`, `timeout`, `quota_exceeded`.
    #[schema(example = "http_status")]
    pub code: String,
    /// For a person, from the vendor where there is one.
    pub message: String,
    /// Retryable, permanent or outcome unknown.
    pub class: FailureClass,
    /// The vendor's `Retry-After`, in milliseconds, when it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub retry_after_ms: Option<u64>,
    /// The step that failed (`?` when the run's definition no longer compiles); absent when the
    /// run was refused before its first step (`quota_exceeded`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub step_id: Option<String>,
}

/// A ledger row as a run shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepUsage {
    /// The ledger's monotonic sequence number; `null` until the ledger is sequenced.
    #[schema(required = true)]
    pub seq: Option<i64>,
    /// What was used, e.g. `workflow_run`, `sms_segment`, `email`.
    pub unit: String,
    /// How many.
    pub quantity: i64,
    /// Tokens charged, in thousandths.
    pub tokens_milli: i64,
    /// Vendor cost, in millionths of a dollar.
    pub cost_micros: i64,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A cancel or retry, accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunChange {
    /// The run.
    pub run_id: String,
    /// `cancelled` after a cancel, `queued` after a retry.
    #[schema(example = "queued")]
    pub status: String,
}

// ---- Connections (routes::connections::connection_json) ------------------------------------------

/// A connection: never its credentials.
#[derive(Debug, Serialize, ToSchema)]
pub struct Connection {
    /// Its id.
    pub id: String,
    /// `twilio`, `smtp`, `slack`, `crm`, …
    pub provider: String,
    /// Its name in the account (steps pick it with `connection: <name>`).
    pub name: String,
    /// Whether sends go to the outbox instead of the vendor.
    pub sandbox: bool,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A page of connections.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionList {
    /// The connections.
    pub connections: Vec<Connection>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

// ---- Outbox (routes::outbox::message_json) -------------------------------------------------------

/// A message a sandbox connection or a test run would have sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxMessage {
    /// Its id.
    pub id: String,
    /// The run that sent it.
    pub run_id: String,
    /// The step that sent it.
    pub step_id: String,
    /// The action kind, e.g. `sms.send`, `email.send`.
    pub kind: String,
    /// The connection's name, or `null`.
    #[schema(required = true)]
    pub connection: Option<String>,
    /// The recipient, or `null`.
    #[schema(required = true)]
    pub to: Option<String>,
    /// What would have been sent (body, subject, …).
    #[schema(value_type = Object)]
    pub rendered: Value,
    /// What it would have cost.
    pub usage: Value,
    /// Whether a test run sent it.
    pub test: bool,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A page of the outbox, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxList {
    /// The messages.
    pub messages: Vec<OutboxMessage>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

// ---- Templates (templates::Template::summary) ----------------------------------------------------

/// A template parameter's type.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateParamType {
    /// Any text.
    String,
    /// A JSON number.
    Number,
    /// `30s`, `15m`, `2h`, `1d`, `1w`.
    Duration,
    /// An E.164 phone number.
    Phone,
    /// An email address.
    Email,
    /// The name of one of the account's connections.
    Connection,
}

/// One field of a template's form.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateParam {
    /// Its name (`params.<name>` when enabling).
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: TemplateParamType,
    /// Whether enabling must give it (false when it has a default).
    pub required: bool,
    /// The value used when none is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub default: Option<Value>,
    /// Help for the form.
    pub help: String,
}

/// A template of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateSummary {
    /// Its slug.
    pub slug: String,
    /// Its title.
    pub title: String,
    /// What it does.
    pub description: String,
    /// The trigger of the workflow it makes.
    #[schema(value_type = Object)]
    pub trigger: Value,
    /// Its form.
    pub params: Vec<TemplateParam>,
    /// The providers it sends through: each needs a connection.
    pub connections: Vec<String>,
}

/// The catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    /// Every template.
    pub templates: Vec<TemplateSummary>,
}

/// A template with the workflow it makes.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateDetail {
    /// The template.
    #[serde(flatten)]
    pub summary: TemplateSummary,
    /// The workflow definition, with `{{ params.x }}` placeholders.
    #[schema(value_type = Object)]
    pub workflow: Value,
}

// ---- Usage (routes::usage) -----------------------------------------------------------------------

/// Aggregated usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageTotals {
    /// One row per group.
    pub rows: Vec<UsageTotal>,
}

/// One group of usage. Units are never added together: `group_by=day` gives one row per day
/// and unit.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageTotal {
    /// After `group_by`: the unit, the local day (`YYYY-MM-DD`; a day has a row per unit, so
    /// `(key, unit)` identifies a row) or the workflow id.
    pub key: String,
    /// `group_by=day` only: the local day, the same as `key`.
    #[schema(format = Date)]
    pub day: Option<String>,
    /// `group_by=day` only: the unit of this row (`sms_segment`, `workflow_run`, …).
    pub unit: Option<String>,
    /// `group_by=workflow` only, and then always present: the workflow's name (also a deleted
    /// workflow's); `null` if no workflow of the account has that id.
    pub name: Option<String>,
    /// How many.
    pub quantity: i64,
    /// Tokens, in thousandths.
    pub tokens_milli: i64,
    /// Vendor cost, in millionths of a dollar.
    pub cost_micros: i64,
}

/// A ledger row (`routes::usage::ledger_json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerRow {
    /// Monotonic, from 1: page with `after`.
    #[schema(required = true)]
    pub seq: Option<i64>,
    /// Its idempotency id.
    pub id: String,
    /// The account.
    pub account_id: String,
    /// The workflow.
    pub workflow_id: String,
    /// The run.
    pub run_id: String,
    /// The step, or `null` for a run's own charge.
    #[schema(required = true)]
    pub step_id: Option<String>,
    /// What was used.
    pub unit: String,
    /// How many.
    pub quantity: i64,
    /// Tokens, in thousandths.
    pub tokens_milli: i64,
    /// Vendor cost, in millionths of a dollar.
    pub cost_micros: i64,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The local date in the account's timezone (`YYYY-MM-DD`).
    #[schema(format = Date)]
    pub day: String,
}

/// A page of the raw ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerPage {
    /// Rows after `after`, by `seq`.
    pub events: Vec<LedgerRow>,
    /// Pass as `after` for the next page (unchanged when nothing is new).
    pub next_after: i64,
}

/// Every account's usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUsage {
    /// One row per account and unit.
    pub rows: Vec<AccountUsage>,
}

/// One account's use of one unit.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountUsage {
    /// The account.
    pub account_id: String,
    /// The unit.
    pub unit: String,
    /// How many.
    pub quantity: i64,
    /// Tokens, in thousandths.
    pub tokens_milli: i64,
    /// Vendor cost, in millionths of a dollar.
    pub cost_micros: i64,
}

// ---- Operations (routes::health) -----------------------------------------------------------------

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

/// Readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(example = "ready")]
    pub status: String,
    /// `ok` or `unreachable`.
    pub database: String,
    /// Where vendor rate limits live: `in_process`, `redis`, or `in_process_fallback` while
    /// Redis is unreachable (that does not make the process unready).
    pub rate_limits: String,
    /// Where live run events travel, like `rate_limits`.
    pub live_events: String,
}
