//! `calendar.create_event`: one event in a Google Calendar through a `google` (OAuth)
//! connection, metered `calendar_event`.
//!
//! Input `{calendar_id? (primary), summary, description?, start, end, timezone, attendees?,
//! location?}`; output `{id, calendar_id, status, html_link, already_existed}`. The vendor
//! contract (Calendar API v3 `events.insert`):
//!
//! - `POST {api_base}/calendar/v3/calendars/{calendarId}/events` with
//!   `Authorization: Bearer <access token>` (refreshed before it expires, see
//!   [`switchboard_integrations::oauth::TokenKeeper`]) and the event as JSON: `id`, `summary`,
//!   `description`, `location`, `start`/`end` `{dateTime, timeZone}`, `attendees [{email}]`;
//!   `sendUpdates=all` when there are attendees, so they get the invitation.
//! - The event `id` is derived from the step: base32hex (`0-9a-v`) of SHA-256 of the account and
//!   the step's idempotency key, 52 characters (Google takes 5–1024). Google refuses a second
//!   event with an id it holds with `409` (`duplicate`): after a lost answer that 409 means the
//!   first attempt created it, so it is success (`already_existed: true`, the event read back
//!   with `events.get`), and a retry never creates a second event: delivery is idempotent.
//! - Failures are Google's error JSON `{error: {code, message, errors: [{reason}], status}}`:
//!   the status classifies (408, 429, 5xx retryable with `Retry-After`), and so do the
//!   `rateLimitExceeded` / `userRateLimitExceeded` reasons Google sends with a 403; other 4xx
//!   are permanent, code `google_<reason>`.

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use switchboard_integrations::http::read_limited;
use switchboard_integrations::oauth::TokenKeeper;
use switchboard_integrations::providers::{self, Provider};
use switchboard_integrations::{classify_response, classify_send_error};
use switchboard_runtime::action::{Action, ActionContext, ActionError, Delivery, Done, FailureClass, SandboxSend};
use switchboard_runtime::metering::{Unit, Usage};

/// The unit an event is metered in.
const UNIT: Unit = Unit::CalendarEvent;

/// The most of Google's answer read.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Google's reasons that mean "later" on a 403.
const RETRYABLE_REASONS: [&str; 3] = ["rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"];

/// The `calendar.create_event` action module.
#[derive(Debug, Clone)]
pub struct CalendarCreateEvent {
    client: reqwest::Client,
    tokens: Arc<TokenKeeper>,
    api_base: String,
}

impl CalendarCreateEvent {
    /// Sends with `client` to Google at `api_base` (`https://www.googleapis.com` in
    /// production), with access tokens from `tokens`.
    pub fn new(client: reqwest::Client, tokens: Arc<TokenKeeper>, api_base: String) -> Self {
        Self { client, tokens, api_base: api_base.trim_end_matches('/').to_owned() }
    }
}

/// The input of `calendar.create_event`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    /// The calendar (`primary`, the connected user's, when absent; or a calendar's id).
    #[serde(default)]
    pub calendar_id: Option<String>,
    /// The event's title.
    pub summary: String,
    /// Its description.
    #[serde(default)]
    pub description: Option<String>,
    /// The start, RFC 3339 (`2025-03-01T09:00:00`, with or without an offset).
    pub start: String,
    /// The end, RFC 3339.
    pub end: String,
    /// The IANA timezone the times are in (e.g. `Europe/Berlin`).
    pub timezone: String,
    /// Guests' email addresses (invited by Google).
    #[serde(default)]
    pub attendees: Vec<String>,
    /// Where.
    #[serde(default)]
    pub location: Option<String>,
}

/// The output of `calendar.create_event`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EventOutput {
    /// The event's id (derived from the step).
    pub id: String,
    /// The calendar it is in.
    pub calendar_id: String,
    /// Google's status, e.g. `confirmed`.
    pub status: String,
    /// The event's page in Google Calendar, when Google answered it.
    pub html_link: Option<String>,
    /// Whether an earlier attempt of this step had created it (its answer was lost).
    pub already_existed: bool,
}

/// Google's answer (the fields we use).
#[derive(Deserialize, Default)]
struct GoogleEvent {
    #[serde(default)]
    status: Option<String>,
    #[serde(default, rename = "htmlLink")]
    html_link: Option<String>,
}

#[derive(Deserialize)]
struct GoogleErrorBody {
    error: GoogleError,
}

#[derive(Deserialize)]
struct GoogleError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<GoogleReason>,
}

#[derive(Deserialize)]
struct GoogleReason {
    #[serde(default)]
    reason: String,
}

/// The Google event id of a step: base32hex (lowercase, `0-9a-v`) of SHA-256 of the account and
/// the step's idempotency key, 52 characters.
pub fn event_id(account_id: &str, idempotency_key: &str) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let digest = Sha256::new().chain_update(account_id.as_bytes()).chain_update(b":").chain_update(idempotency_key.as_bytes()).finalize();
    let mut id = String::with_capacity(52);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in digest {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            id.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        id.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    id
}

impl EventInput {
    fn calendar(&self) -> &str {
        self.calendar_id.as_deref().map(str::trim).filter(|c| !c.is_empty()).unwrap_or("primary")
    }

    fn check(&self) -> Result<(), ActionError> {
        let problems: Vec<String> = [("summary", &self.summary), ("start", &self.start), ("end", &self.end), ("timezone", &self.timezone)]
            .into_iter()
            .filter(|(_, v)| v.trim().is_empty())
            .map(|(name, _)| format!("{name}: must not be empty"))
            .chain(self.attendees.iter().enumerate().filter(|(_, a)| !a.contains('@')).map(|(i, _)| format!("attendees[{i}]: must be an email address")))
            .collect();
        if problems.is_empty() { Ok(()) } else { Err(ActionError::permanent("invalid_input", problems.join("; "))) }
    }

    fn body(&self, id: &str) -> Value {
        let mut body = json!({
            "id": id,
            "summary": self.summary.trim(),
            "start": { "dateTime": self.start.trim(), "timeZone": self.timezone.trim() },
            "end": { "dateTime": self.end.trim(), "timeZone": self.timezone.trim() },
        });
        let map = body.as_object_mut().expect("an object");
        if let Some(d) = self.description.as_deref().filter(|d| !d.trim().is_empty()) {
            map.insert("description".into(), json!(d));
        }
        if let Some(l) = self.location.as_deref().filter(|l| !l.trim().is_empty()) {
            map.insert("location".into(), json!(l.trim()));
        }
        if !self.attendees.is_empty() {
            map.insert("attendees".into(), self.attendees.iter().map(|a| json!({ "email": a.trim() })).collect());
        }
        body
    }
}

/// A Google error answer as the failure envelope.
pub fn google_failure(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ActionError {
    let text = String::from_utf8_lossy(body);
    let mut failure =
        classify_response(status, headers, &text).unwrap_or_else(|| ActionError::permanent(format!("http_{}", status.as_u16()), format!("HTTP {status}")));
    let Ok(GoogleErrorBody { error }) = serde_json::from_slice::<GoogleErrorBody>(body) else { return failure };
    let reason = error.errors.first().map(|r| r.reason.clone()).filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()));
    if let Some(reason) = &reason {
        failure.code = format!("google_{reason}");
        if RETRYABLE_REASONS.contains(&reason.as_str()) {
            failure.class = FailureClass::Retryable;
        }
    }
    failure.message = format!("google calendar (HTTP {}): {}", status.as_u16(), error.message.trim());
    failure
}

#[async_trait]
impl Action for CalendarCreateEvent {
    const KIND: &'static str = "calendar.create_event";
    const DELIVERY: Delivery = Delivery::Idempotent;
    const UNITS: &'static [Unit] = &[UNIT];
    const PROVIDERS: &'static [&'static str] = &[providers::Google::NAME];
    type Input = EventInput;
    type Output = EventOutput;

    /// Literal attendees look like email addresses.
    fn validate(&self, input: &Map<String, Value>) -> Vec<(String, String)> {
        let Some(Value::Array(attendees)) = input.get("attendees") else { return vec![] };
        attendees
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Value::String(s) if !s.contains("{{") && !s.contains('@') => Some((format!("attendees[{i}]"), "must be an email address".to_owned())),
                _ => None,
            })
            .collect()
    }

    fn estimate(&self, _input: &EventInput) -> Vec<Usage> {
        vec![UNIT.times(1)]
    }

    fn sandbox(&self, ctx: &ActionContext, input: &EventInput) -> Result<Option<SandboxSend>, ActionError> {
        input.check()?;
        let id = event_id(&ctx.account_id, &ctx.idempotency_key);
        // The preview leaves the id out: it is the step's, and a test run is another run.
        let mut event = input.body(&id);
        event.as_object_mut().expect("an object").remove("id");
        Ok(Some(SandboxSend {
            to: Some(input.calendar().to_owned()),
            rendered: json!({ "calendar_id": input.calendar(), "event": event }),
            output: json!({ "id": id, "calendar_id": input.calendar(), "status": "sandbox", "html_link": null, "already_existed": false }),
            usage: vec![UNIT.times(1)],
        }))
    }

    async fn execute(&self, ctx: &ActionContext, input: EventInput) -> Result<Done<EventOutput>, ActionError> {
        input.check()?;
        let connection =
            ctx.connection.as_ref().ok_or_else(|| ActionError::permanent("missing_connection", "calendar.create_event needs a google connection"))?;
        let token = self.tokens.access_token(connection, ctx.now).await?;
        let id = event_id(&ctx.account_id, &ctx.idempotency_key);
        let calendar = input.calendar();
        let events_url = format!("{}/calendar/v3/calendars/{}/events", self.api_base, encode_segment(calendar));
        // Attendees get Google's invitation.
        let insert_url = if input.attendees.is_empty() { events_url.clone() } else { format!("{events_url}?sendUpdates=all") };
        let request = self.client.post(&insert_url).bearer_auth(token.expose_secret()).timeout(ctx.timeout).json(&input.body(&id));
        let mut response = request.send().await.map_err(|e| classify_send_error(&e, Self::DELIVERY))?;
        let status = response.status();
        let headers = response.headers().clone();
        let answer = read_limited(&mut response, MAX_ANSWER_BYTES).await.map(|(bytes, _)| bytes).unwrap_or_default();
        let (event, already_existed) = if status == StatusCode::CONFLICT {
            // Our id is taken: an earlier attempt of this very step created the event.
            let existing = self.client.get(format!("{events_url}/{id}")).bearer_auth(token.expose_secret()).timeout(ctx.timeout).send().await;
            let event = match existing {
                Ok(r) if r.status().is_success() => r.json::<GoogleEvent>().await.unwrap_or_default(),
                _ => GoogleEvent::default(),
            };
            (event, true)
        } else if status.is_success() {
            (serde_json::from_slice(&answer).unwrap_or_default(), false)
        } else {
            return Err(google_failure(status, &headers, &answer));
        };
        Ok(Done {
            output: EventOutput {
                id,
                calendar_id: calendar.to_owned(),
                status: event.status.unwrap_or_else(|| "confirmed".to_owned()),
                html_link: event.html_link,
                already_existed,
            },
            usage: vec![UNIT.times(1)],
        })
    }
}

/// A calendar id as one path segment (ids are email-like: `@` stays, `/` and `#` do not).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_base32hex_stable_and_per_step() {
        let id = event_id("acc_1", "run_1:3");
        assert_eq!(id.len(), 52);
        assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)));
        assert_eq!(id, event_id("acc_1", "run_1:3"));
        assert_ne!(id, event_id("acc_1", "run_1:4"));
        assert_ne!(id, event_id("acc_2", "run_1:3"));
    }

    #[test]
    fn rate_limit_reasons_are_retryable() {
        let body = br#"{"error": {"code": 403, "message": "Rate Limit Exceeded", "errors": [{"domain": "usageLimits", "reason": "rateLimitExceeded"}]}}"#;
        let err = google_failure(StatusCode::FORBIDDEN, &HeaderMap::new(), body);
        assert_eq!((err.code.as_str(), err.class), ("google_rateLimitExceeded", FailureClass::Retryable));
        let body = br#"{"error": {"code": 403, "message": "Forbidden", "errors": [{"domain": "global", "reason": "forbidden"}]}}"#;
        let err = google_failure(StatusCode::FORBIDDEN, &HeaderMap::new(), body);
        assert_eq!((err.code.as_str(), err.class), ("google_forbidden", FailureClass::Permanent));
    }

    #[test]
    fn calendar_ids_become_one_segment() {
        assert_eq!(encode_segment("primary"), "primary");
        assert_eq!(encode_segment("c_abc@group.calendar.google.com"), "c_abc@group.calendar.google.com");
        assert_eq!(encode_segment("a/b#c"), "a%2Fb%23c");
    }
}
