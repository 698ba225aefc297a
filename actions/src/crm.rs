//! `crm.create_task` and `crm.update_lead`: signed JSON requests to the host CRM's API, through
//! a `crm` connection `{base_url, api_key}`. The host CRM is ours, so this module
//! defines the wire protocol; a CRM implements the receiving side from this description.
//!
//! # Wire protocol (version 1)
//!
//! ## Requests
//! | action | request | JSON body |
//! |---|---|---|
//! | `crm.create_task` | `POST {base_url}/tasks` | `{title, lead_id?, due_at?, assignee?, priority?, notes?}` |
//! | `crm.update_lead` | `PATCH {base_url}/leads/{lead_id}` | `{fields: {name: value, …}}` |
//! | `crm.find_leads` | `POST {base_url}/leads/search` | `{filter: {birthday_today?, stage?, tag?, …}, limit, cursor}` |
//!
//! - `lead_id` in the path is one percent-encoded path segment (`a/b c` → `a%2Fb%20c`).
//! - In a task, absent fields are omitted (never `null`); `lead_id` is a string; `due_at` is
//!   RFC 3339 with an offset (`2025-03-01T09:00:00+01:00`); `priority` is one of `low`, `normal`,
//!   `high`, `urgent`.
//! - `fields` holds at least one field, with the JSON values the workflow gave.
//!
//! Every request carries these headers:
//! - `Content-Type: application/json`
//! - `Idempotency-Key: <key>`: the same on every attempt of one step. **The CRM must dedupe on
//!   it**: a request whose key it has already processed must not act again, and should answer
//!   as the first one did (keep keys for at least 24 hours). Switchboard retries failed attempts
//!   with this guarantee in mind, including attempts that timed out after the request left.
//! - `X-Switchboard-Account: <account id>`: the Switchboard account the workflow runs in.
//! - `X-Switchboard-Timestamp: <unix seconds>`
//! - `X-Switchboard-Signature: v1=<hex>`: lowercase hex of HMAC-SHA256 keyed with the
//!   connection's `api_key`, over the bytes `{timestamp}.{raw request body}`.
//!
//! The `api_key` itself is never sent. To verify a request the CRM recomputes the HMAC over the
//! raw body as received (before parsing it), compares in constant time ([`verify_signature`]
//! does exactly this), and rejects timestamps more than five minutes away from its clock so a
//! captured request cannot be replayed later.
//!
//! ## Answers
//! - `crm.create_task`: `201` with `{"id": "<task id>", …}` for a new task; a repeated
//!   `Idempotency-Key` answers `200` with the same body. The step's output is
//!   `{task_id, status}` with the HTTP status (`201` or `200`).
//! - `crm.update_lead`: any `2xx`, ideally with the lead as JSON. The step's output is
//!   `{lead_id, updated: [field names], response: <the JSON answer, or null>}`.
//! - `crm.find_leads`: `200` with `{"leads": [{…}, …], "next_cursor": "<opaque>" | null}`: one
//!   page of at most `limit` leads matching every field of `filter` (`birthday_today: true` is
//!   the leads whose birthday is today in their own timezone, else the account's; `stage` and
//!   `tag` match exactly; other fields are the CRM's to define). Switchboard asks for the next
//!   page with `cursor` set to `next_cursor` until it has `limit` leads or `next_cursor` is
//!   `null`. A lead is a JSON object; the birthday campaign reads `id`, `first_name`, `phone` and
//!   `timezone`. The step's output is `{leads: [...], count}`. The search changes nothing, and
//!   each page's request carries the step's `Idempotency-Key` with `:<page>` appended.
//! - `408`, `429` and `5xx` are retried later, honouring `Retry-After` (seconds or an HTTP
//!   date); any other status fails the step at once and its body (the first 300 characters) is
//!   shown to the user, so put a human-readable reason there (`404` for an unknown lead).
//!
//! Nothing here is metered (the host CRM is not billed per call).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use switchboard_integrations::connections::{CrmCredentials, Vault};
use switchboard_integrations::http::read_limited;
use switchboard_integrations::providers::{self, Provider};
use switchboard_integrations::{classify_response, classify_send_error};
use switchboard_runtime::action::{Action, ActionContext, ActionError, Delivery, Done, SandboxSend};

/// The header carrying the request's signature, `v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-switchboard-signature";
/// The header carrying the signed timestamp, in unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-switchboard-timestamp";
/// The header naming the Switchboard account.
pub const ACCOUNT_HEADER: &str = "x-switchboard-account";
/// The header the CRM dedupes on.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The task priorities the CRM knows.
const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];

/// The most of an answer read; the CRM's answers are small JSON documents.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Whether `header` (`v1=<hex>`) is the signature of `body` sent at `timestamp` under
/// `api_key`. Compares in constant time; any malformed header is simply `false`. It does not
/// judge the timestamp's age: the caller rejects stale ones.
pub fn verify_signature(api_key: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(given) = header.trim().strip_prefix("v1=").and_then(|hex| hex::decode(hex).ok()) else {
        return false;
    };
    mac(api_key, timestamp, body).verify_slice(&given).is_ok()
}

/// `v1=<hex HMAC-SHA256(api_key, "{timestamp}.{body}")>`.
fn sign(api_key: &str, timestamp: &str, body: &[u8]) -> String {
    format!("v1={}", hex::encode(mac(api_key, timestamp, body).finalize().into_bytes()))
}

fn mac(api_key: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(api_key.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `crm.create_task` action module.
#[derive(Debug, Clone)]
pub struct CrmCreateTask {
    client: reqwest::Client,
    vault: Arc<Vault>,
}

impl CrmCreateTask {
    /// Sends with `client` (from [`switchboard_integrations::client`], so the operator's address
    /// policy applies) through the connections `vault` opens.
    pub fn new(client: reqwest::Client, vault: Arc<Vault>) -> Self {
        Self { client, vault }
    }
}

/// The `crm.update_lead` action module.
#[derive(Debug, Clone)]
pub struct CrmUpdateLead {
    client: reqwest::Client,
    vault: Arc<Vault>,
}

impl CrmUpdateLead {
    /// Sends with `client` (from [`switchboard_integrations::client`], so the operator's address
    /// policy applies) through the connections `vault` opens.
    pub fn new(client: reqwest::Client, vault: Arc<Vault>) -> Self {
        Self { client, vault }
    }
}

/// The `crm.find_leads` action module.
#[derive(Debug, Clone)]
pub struct CrmFindLeads {
    client: reqwest::Client,
    vault: Arc<Vault>,
}

impl CrmFindLeads {
    /// Sends with `client` (from [`switchboard_integrations::client`], so the operator's address
    /// policy applies) through the connections `vault` opens.
    pub fn new(client: reqwest::Client, vault: Arc<Vault>) -> Self {
        Self { client, vault }
    }
}

/// The most leads one `crm.find_leads` step gathers.
pub const MAX_FOUND: u32 = 100_000;

/// The leads a CRM page holds at most, as asked.
const PAGE_SIZE: u32 = 500;

/// The input of `crm.find_leads`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FindLeadsInput {
    /// What the leads match: `birthday_today`, `stage`, `tag`, or fields the CRM defines.
    #[serde(default)]
    pub filter: Map<String, Value>,
    /// At most this many leads (default 1,000, at most 100,000).
    pub limit: Option<u32>,
}

/// The output of `crm.find_leads`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FindLeadsOutput {
    /// The leads, as the CRM gave them.
    pub leads: Vec<Value>,
    /// How many.
    pub count: usize,
}

#[async_trait]
impl Action for CrmFindLeads {
    const KIND: &'static str = "crm.find_leads";
    const DELIVERY: Delivery = Delivery::Idempotent;
    const PROVIDERS: &'static [&'static str] = &[providers::Crm::NAME];
    type Input = FindLeadsInput;
    type Output = FindLeadsOutput;

    fn validate(&self, input: &Map<String, Value>) -> Vec<(String, String)> {
        match input.get("limit") {
            Some(Value::Number(n)) if !n.as_u64().is_some_and(|n| (1..=u64::from(MAX_FOUND)).contains(&n)) => {
                vec![("limit".to_owned(), format!("must be a whole number from 1 to {MAX_FOUND}"))]
            }
            _ => Vec::new(),
        }
    }

    /// A sandbox search answers the connection's `settings.sample_leads` (a list), or three
    /// sample leads: what a test run fans out over.
    fn sandbox(&self, ctx: &ActionContext, input: &FindLeadsInput) -> Result<Option<SandboxSend>, ActionError> {
        let limit = limit_of(input)? as usize;
        let sample = ctx.connection.as_ref().and_then(|c| c.settings.get("sample_leads")).and_then(Value::as_array).cloned().unwrap_or_else(sample_leads);
        let leads: Vec<Value> = sample.into_iter().take(limit).collect();
        let request = CrmRequest {
            method: Method::POST,
            segments: vec!["leads".into(), "search".into()],
            body: json!({ "filter": input.filter, "limit": limit.min(PAGE_SIZE as usize), "cursor": null }),
        };
        Ok(Some(SandboxSend {
            to: None,
            rendered: request.rendered(),
            output: json!({ "count": leads.len(), "leads": leads, "sandbox": true }),
            usage: vec![],
        }))
    }

    async fn execute(&self, ctx: &ActionContext, input: FindLeadsInput) -> Result<Done<FindLeadsOutput>, ActionError> {
        let limit = limit_of(&input)? as usize;
        let mut leads = Vec::new();
        let mut cursor = Value::Null;
        for page in 0.. {
            let want = (limit - leads.len()).min(PAGE_SIZE as usize);
            let request = CrmRequest {
                method: Method::POST,
                segments: vec!["leads".into(), "search".into()],
                body: json!({ "filter": input.filter, "limit": want, "cursor": cursor }),
            };
            let page_ctx = ActionContext { idempotency_key: format!("{}:{page}", ctx.idempotency_key), ..ctx.clone() };
            let (_, answer) = request.send(&self.client, &self.vault, &page_ctx, Self::DELIVERY).await?;
            let Some(found) = answer.get("leads").and_then(Value::as_array) else {
                return Err(ActionError::permanent("invalid_answer", "the CRM's search answer has no \"leads\" list"));
            };
            leads.extend(found.iter().take(limit - leads.len()).cloned());
            cursor = answer.get("next_cursor").cloned().unwrap_or(Value::Null);
            if leads.len() >= limit || cursor.is_null() || found.is_empty() {
                break;
            }
        }
        Ok(Done { output: FindLeadsOutput { count: leads.len(), leads }, usage: vec![] })
    }
}

fn limit_of(input: &FindLeadsInput) -> Result<u32, ActionError> {
    match input.limit {
        None => Ok(1_000),
        Some(n) if (1..=MAX_FOUND).contains(&n) => Ok(n),
        Some(_) => Err(invalid("limit", format!("must be a whole number from 1 to {MAX_FOUND}"))),
    }
}

/// What a sandbox search finds without `sample_leads`.
fn sample_leads() -> Vec<Value> {
    vec![
        json!({ "id": "sample-1", "first_name": "Ada", "last_name": "Lovelace", "phone": "+15550100001", "timezone": "Europe/London" }),
        json!({ "id": "sample-2", "first_name": "Grace", "last_name": "Hopper", "phone": "+15550100002", "timezone": "America/New_York" }),
        json!({ "id": "sample-3", "first_name": "Alan", "last_name": "Turing", "phone": "+15550100003", "timezone": "America/Los_Angeles" }),
    ]
}

/// A lead id: a string on the wire, whatever type the trigger carried (a number is written as
/// text). Save time asks for a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum LeadId {
    /// As given.
    Text(String),
    /// A number, written as text.
    Number(serde_json::Number),
}

impl LeadId {
    fn into_string(self) -> String {
        match self {
            LeadId::Text(s) => s,
            LeadId::Number(n) => n.to_string(),
        }
    }
}

/// The input of `crm.create_task`. An optional field that is missing, `null` or an empty string
/// (a template that rendered to nothing) is left out of the request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskInput {
    /// The task's title.
    pub title: String,
    /// The lead the task is about.
    #[schemars(with = "Option<String>")]
    pub lead_id: Option<LeadId>,
    /// When it is due, RFC 3339 (e.g. `2025-03-01T09:00:00Z`).
    pub due_at: Option<String>,
    /// Who does it, as the CRM names its users.
    pub assignee: Option<String>,
    /// `low`, `normal`, `high` or `urgent`.
    pub priority: Option<String>,
    /// Free text.
    pub notes: Option<String>,
}

/// The output of `crm.create_task`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CreateTaskOutput {
    /// The CRM's id of the task (`null` if its answer had none).
    pub task_id: Value,
    /// The CRM's HTTP status.
    pub status: u16,
}

/// The input of `crm.update_lead`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateLeadInput {
    /// The lead.
    #[schemars(with = "String")]
    pub lead_id: LeadId,
    /// The fields to set, by name.
    pub fields: Map<String, Value>,
}

/// The output of `crm.update_lead`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UpdateLeadOutput {
    /// The lead.
    pub lead_id: String,
    /// The names of the fields set.
    pub updated: Vec<String>,
    /// The CRM's JSON answer (`null` when empty, a string when it is not JSON).
    pub response: Value,
}

#[async_trait]
impl Action for CrmCreateTask {
    const KIND: &'static str = "crm.create_task";
    const DELIVERY: Delivery = Delivery::Idempotent;
    const PROVIDERS: &'static [&'static str] = &[providers::Crm::NAME];
    type Input = CreateTaskInput;
    type Output = CreateTaskOutput;

    /// Checks the literal title, due date and priority.
    fn validate(&self, input: &Map<String, Value>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for field in ["title", "due_at", "priority"] {
            if let Some(Value::String(s)) = input.get(field)
                && !s.contains("{{")
                && let Err(e) = check_task_field(field, s)
            {
                problems.push((field.to_owned(), e));
            }
        }
        problems
    }

    fn sandbox(&self, _ctx: &ActionContext, input: &CreateTaskInput) -> Result<Option<SandboxSend>, ActionError> {
        let task = task_body(input)?;
        let request = CrmRequest { method: Method::POST, segments: vec!["tasks".into()], body: Value::Object(task) };
        let to = request.body.get("lead_id").or_else(|| request.body.get("title")).and_then(Value::as_str).map(str::to_owned);
        Ok(Some(SandboxSend { to, rendered: request.rendered(), output: json!({ "task_id": null, "sandbox": true }), usage: vec![] }))
    }

    async fn execute(&self, ctx: &ActionContext, input: CreateTaskInput) -> Result<Done<CreateTaskOutput>, ActionError> {
        let task = task_body(&input)?;
        let request = CrmRequest { method: Method::POST, segments: vec!["tasks".into()], body: Value::Object(task) };
        let (status, answer) = request.send(&self.client, &self.vault, ctx, Self::DELIVERY).await?;
        // A 2xx means the task exists; an answer without its id still is a success (failing
        // would invite a retry, which gets a new Idempotency-Key and a second task).
        let task_id = match answer.get("id") {
            Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
            _ => {
                tracing::warn!(%status, "the CRM created a task without answering its id");
                Value::Null
            }
        };
        Ok(Done { output: CreateTaskOutput { task_id, status: status.as_u16() }, usage: vec![] })
    }
}

#[async_trait]
impl Action for CrmUpdateLead {
    const KIND: &'static str = "crm.update_lead";
    const DELIVERY: Delivery = Delivery::Idempotent;
    const PROVIDERS: &'static [&'static str] = &[providers::Crm::NAME];
    type Input = UpdateLeadInput;
    type Output = UpdateLeadOutput;

    /// Checks a literal lead id and that literal `fields` is not empty.
    fn validate(&self, input: &Map<String, Value>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Some(Value::String(id)) = input.get("lead_id")
            && id.trim().is_empty()
        {
            problems.push(("lead_id".to_owned(), "must not be empty".to_owned()));
        }
        if let Some(Value::Object(fields)) = input.get("fields")
            && fields.is_empty()
        {
            problems.push(("fields".to_owned(), "name at least one field to update".to_owned()));
        }
        problems
    }

    fn sandbox(&self, _ctx: &ActionContext, input: &UpdateLeadInput) -> Result<Option<SandboxSend>, ActionError> {
        let update = LeadUpdate::parse(input)?;
        let request = update.request();
        Ok(Some(SandboxSend {
            to: Some(update.lead_id.clone()),
            rendered: request.rendered(),
            output: json!({ "lead_id": update.lead_id, "updated": update.names(), "sandbox": true }),
            usage: vec![],
        }))
    }

    async fn execute(&self, ctx: &ActionContext, input: UpdateLeadInput) -> Result<Done<UpdateLeadOutput>, ActionError> {
        let update = LeadUpdate::parse(&input)?;
        let (_, response) = update.request().send(&self.client, &self.vault, ctx, Self::DELIVERY).await?;
        let updated = update.names().into_iter().map(str::to_owned).collect();
        Ok(Done { output: UpdateLeadOutput { lead_id: update.lead_id, updated, response }, usage: vec![] })
    }
}

fn invalid(field: &str, message: impl std::fmt::Display) -> ActionError {
    ActionError::permanent("invalid_input", format!("{field}: {message}"))
}

/// Checks one task field's value; `Err` says why it is wrong.
fn check_task_field(field: &str, value: &str) -> Result<(), String> {
    match field {
        "title" if value.trim().is_empty() => Err("must not be empty".into()),
        "due_at" => chrono::DateTime::parse_from_rfc3339(value.trim())
            .map(drop)
            .map_err(|_| format!("{value:?} is not an RFC 3339 date-time (e.g. 2025-03-01T09:00:00Z)")),
        "priority" if !PRIORITIES.contains(&value) => Err(format!("{value:?} is not one of {}", PRIORITIES.join(", "))),
        _ => Ok(()),
    }
}

/// The task as the CRM receives it. An optional field that is missing, `null` or an empty
/// string (a template that rendered to nothing) is left out.
fn task_body(input: &CreateTaskInput) -> Result<Map<String, Value>, ActionError> {
    let mut task = Map::new();
    let fields = [
        ("title", Some(input.title.clone())),
        ("lead_id", input.lead_id.clone().map(LeadId::into_string)),
        ("due_at", input.due_at.clone()),
        ("assignee", input.assignee.clone()),
        ("priority", input.priority.clone()),
        ("notes", input.notes.clone()),
    ];
    for (field, value) in fields {
        let Some(value) = value.filter(|s| !s.is_empty() || field == "title") else { continue };
        check_task_field(field, &value).map_err(|e| invalid(field, e))?;
        task.insert(field.to_owned(), Value::String(value));
    }
    Ok(task)
}

/// A rendered `crm.update_lead` input, checked.
struct LeadUpdate {
    lead_id: String,
    fields: Map<String, Value>,
}

impl LeadUpdate {
    fn parse(input: &UpdateLeadInput) -> Result<Self, ActionError> {
        let lead_id = input.lead_id.clone().into_string();
        if lead_id.trim().is_empty() {
            return Err(invalid("lead_id", "must not be empty"));
        }
        if input.fields.is_empty() {
            return Err(invalid("fields", "name at least one field to update"));
        }
        Ok(Self { lead_id, fields: input.fields.clone() })
    }

    fn names(&self) -> Vec<&str> {
        self.fields.keys().map(String::as_str).collect()
    }

    fn request(&self) -> CrmRequest {
        CrmRequest { method: Method::PATCH, segments: vec!["leads".into(), self.lead_id.clone()], body: json!({ "fields": self.fields }) }
    }
}

/// One request to the CRM: a method, path segments under the base URL and a JSON body.
struct CrmRequest {
    method: Method,
    segments: Vec<String>,
    body: Value,
}

impl CrmRequest {
    /// `{method, path, body}` for the outbox; the path is relative to the connection's base URL
    /// (which a sandbox send does not open).
    fn rendered(&self) -> Value {
        let mut url = Url::parse("http://crm.invalid/").expect("a valid URL");
        push_segments(&mut url, &self.segments);
        json!({ "method": self.method.as_str(), "path": url.path(), "body": self.body })
    }

    /// Signs and sends the request; the answer's status and JSON body (`null` when empty, a
    /// string when it is not JSON).
    async fn send(&self, client: &reqwest::Client, vault: &Vault, ctx: &ActionContext, delivery: Delivery) -> Result<(StatusCode, Value), ActionError> {
        let connection =
            ctx.connection.as_deref().ok_or_else(|| ActionError::permanent("missing_connection", "this step needs a crm connection (none was given)"))?;
        let credentials: CrmCredentials = vault.open(connection)?;
        let mut url = Url::parse(credentials.base_url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| ActionError::permanent("connection_invalid", format!("connection '{}': base_url is not an http(s) URL", connection.name)))?;
        push_segments(&mut url, &self.segments);

        let body = serde_json::to_vec(&self.body).expect("JSON values serialize");
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default().to_string();
        let signature = sign(credentials.api_key.expose_secret(), &timestamp, &body);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(IDEMPOTENCY_HEADER, header_value("the step's idempotency key", &ctx.idempotency_key)?);
        headers.insert(ACCOUNT_HEADER, header_value("the account id", &ctx.account_id)?);
        headers.insert(TIMESTAMP_HEADER, header_value("the timestamp", &timestamp)?);
        headers.insert(SIGNATURE_HEADER, header_value("the signature", &signature)?);

        let request = client.request(self.method.clone(), url).timeout(ctx.timeout).headers(headers).body(body);
        // Idempotent: a failure after the request left is retried, and the CRM dedupes it.
        let mut response = request.send().await.map_err(|e| classify_send_error(&e, delivery))?;
        let status = response.status();
        let response_headers = response.headers().clone();
        let bytes = read_limited(&mut response, MAX_BODY_BYTES).await.map(|(bytes, _)| bytes).map_err(|e| classify_send_error(&e, delivery))?;
        let text = String::from_utf8_lossy(&bytes);
        if let Some(error) = classify_response(status, &response_headers, &text) {
            return Err(error);
        }
        let answer = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.into_owned())) };
        Ok((status, answer))
    }
}

/// Appends `segments` to `url`'s path, each percent-encoded as one segment.
fn push_segments(url: &mut Url, segments: &[String]) {
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
}

fn header_value(what: &str, value: &str) -> Result<HeaderValue, ActionError> {
    HeaderValue::from_str(value).map_err(|_| ActionError::permanent("invalid_request", format!("{what} is not a valid header value")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_its_key_timestamp_and_body() {
        let header = sign("key-1", "1700000000", b"{\"a\":1}");
        assert!(header.starts_with("v1=") && header.len() == 3 + 64);
        assert!(verify_signature("key-1", "1700000000", b"{\"a\":1}", &header));
        assert!(!verify_signature("key-2", "1700000000", b"{\"a\":1}", &header));
        assert!(!verify_signature("key-1", "1700000001", b"{\"a\":1}", &header));
        assert!(!verify_signature("key-1", "1700000000", b"{\"a\":2}", &header));
        for malformed in ["", "v1=", "v1=zz", &header[3..], &header.replace("v1=", "v2=")] {
            assert!(!verify_signature("key-1", "1700000000", b"{\"a\":1}", malformed), "{malformed:?}");
        }
    }

    #[test]
    fn a_known_vector() {
        // HMAC-SHA256(key = "secret", "1700000000.{}"), computed independently with Python's hmac.
        let expected = "v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163";
        assert_eq!(sign("secret", "1700000000", b"{}"), expected);
    }

    #[test]
    fn lead_ids_are_one_encoded_path_segment() {
        let input = switchboard_runtime::action::parse_input(&json!({"lead_id": "a/b c?d", "fields": {"x": 1}})).unwrap();
        let update = LeadUpdate::parse(&input).unwrap();
        assert_eq!(update.request().rendered()["path"], "/leads/a%2Fb%20c%3Fd");
        let mut url = Url::parse("https://crm.example.com/api/").unwrap();
        push_segments(&mut url, &["leads".into(), "7".into()]);
        assert_eq!(url.as_str(), "https://crm.example.com/api/leads/7");
    }
}
