//! `sms.send`: one text message through Twilio's Messages API, metered in segments.
//!
//! Input `{to, from, body}`; output `{sid, status, to, from, segments}`; usage
//! `sms_segment × segments`. The vendor contract:
//!
//! - `POST {api_base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, HTTP basic auth
//!   (account SID, auth token), form-encoded `To`, `From` (or `MessagingServiceSid` when `from`
//!   is a Messaging Service `MG…`), `Body` and `StatusCallback`
//!   (`{public_url}/callbacks/twilio/{connection_id}/sms`, whose requests the API checks with
//!   `switchboard_integrations::twilio::signature_is_valid`).
//! - Success is `201` with the Message resource: `sid` (`SM…`), `status` (`queued`, or
//!   `accepted` through a Messaging Service), and `num_segments` as a *string*, which is `"0"`
//!   through a Messaging Service until a sender is picked. The count billed is Twilio's when it
//!   is a positive number, else our own GSM-7/UCS-2 count.
//! - Failure is Twilio's error JSON `{code, message, more_info, status}`. The HTTP status
//!   classifies it (429, 408 and 5xx retryable with `Retry-After`, other 4xx permanent), except
//!   for the Twilio codes in [`RETRYABLE_CODES`], which say "later" on a 4xx. The code becomes
//!   `twilio_<code>` and Twilio's message is quoted. 21610 (unsubscribed recipient) is
//!   `recipient_opted_out`: the runtime records the opt-out and ends the step `skipped`.
//!
//! Twilio's Messages API takes no idempotency key, so delivery is at most once: a request that
//! may have left (a read timeout, a broken connection) ends `outcome_unknown`, never resent.
//! Long codes send one message a second, hence the rate limit per sender.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use switchboard_integrations::connections::{TwilioCredentials, Vault};
use switchboard_integrations::http::read_limited;
use switchboard_integrations::providers::{self, Provider};
use switchboard_integrations::{classify_response, classify_send_error};
use switchboard_runtime::action::{Action, ActionContext, ActionError, Delivery, Done, FailureClass, RateLimit, Recipient, SandboxSend};
use switchboard_runtime::contact::Channel;
use switchboard_runtime::metering::{Unit, Usage, sms_segments};

/// The unit an SMS is metered in.
const UNIT: Unit = Unit::SmsSegment;

/// Twilio refuses longer bodies (its documented maximum, in characters).
const MAX_BODY_CHARS: usize = 1600;

/// The most of Twilio's answer read; a message resource or an error is a few hundred bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Twilio error codes that mean "not now" even on a 4xx: 20429 too many concurrent requests,
/// 14107 the per-pair send rate, 30001 queue overflow, 21611 the sender's queue is full (more
/// than 10 hours of messages). Everything else on a 4xx (21211 invalid `To`, 20003
/// authentication, …) will fail the same way again.
const RETRYABLE_CODES: [i64; 4] = [20429, 14107, 30001, 21611];

/// Twilio's "Attempt to send to unsubscribed recipient": the number replied STOP to the sender.
/// The failure is [`ActionError::opted_out`]: the runtime records the opt-out and skips the step.
const UNSUBSCRIBED_RECIPIENT: i64 = 21610;

/// The `sms.send` action module.
#[derive(Debug, Clone)]
pub struct SmsSend {
    client: reqwest::Client,
    vault: Arc<Vault>,
    api_base: String,
    public_url: String,
}

impl SmsSend {
    /// Sends with `client` (from [`switchboard_integrations::client`]) to Twilio at `api_base`
    /// (`https://api.twilio.com` in production), opening connections with `vault`; status
    /// callbacks go to this service at `public_url`.
    pub fn new(client: reqwest::Client, vault: Arc<Vault>, api_base: String, public_url: String) -> Self {
        let api_base = api_base.trim_end_matches('/').to_owned();
        let public_url = public_url.trim_end_matches('/').to_owned();
        Self { client, vault, api_base, public_url }
    }
}

/// The input of `sms.send`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsInput {
    /// The recipient, E.164 (`+` and 8 to 15 digits).
    pub to: String,
    /// The sender: an E.164 number of the connection's account, or a Messaging Service SID
    /// (`MG…`).
    pub from: String,
    /// The text, 1 to 1,600 characters; sent as written.
    pub body: String,
}

/// The output of `sms.send`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SmsOutput {
    /// Twilio's message SID (`SM…`; empty if its answer could not be read).
    pub sid: String,
    /// Twilio's status, e.g. `queued` or `accepted`.
    pub status: String,
    /// The recipient.
    pub to: String,
    /// The sender as sent.
    pub from: String,
    /// The segments billed.
    pub segments: i64,
}

/// The rendered input, checked.
struct Message<'a> {
    to: &'a str,
    from: &'a str,
    body: &'a str,
}

impl<'a> Message<'a> {
    fn parse(input: &'a SmsInput) -> Result<Self, ActionError> {
        let (to, from) = (input.to.trim(), input.from.trim());
        // The body is sent as written: whitespace may be intended.
        let body = input.body.as_str();
        // The same checks as at save time, now that interpolation has run.
        let problems: Vec<String> = [("to", check_to(to)), ("from", check_from(from)), ("body", check_body(body))]
            .into_iter()
            .filter_map(|(name, result)| result.err().map(|e| format!("{name}: {e}")))
            .collect();
        if !problems.is_empty() {
            return Err(ActionError::permanent("invalid_input", problems.join("; ")));
        }
        Ok(Self { to, from, body })
    }

    fn segments(&self) -> i64 {
        sms_segments(self.body)
    }
}

/// Twilio's answer to a created message (the fields we use).
#[derive(Deserialize, Default)]
struct TwilioMessage {
    sid: String,
    status: Option<String>,
    to: Option<String>,
    from: Option<String>,
    num_segments: Option<String>,
}

/// Twilio's error JSON.
#[derive(Deserialize)]
struct TwilioError {
    code: i64,
    message: String,
    /// Present on some answers, e.g. 20003's "Your AccountSid or AuthToken was incorrect."
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    more_info: Option<String>,
}

#[async_trait]
impl Action for SmsSend {
    const KIND: &'static str = "sms.send";
    const DELIVERY: Delivery = Delivery::AtMostOnce;
    const UNITS: &'static [Unit] = &[UNIT];
    const PROVIDERS: &'static [&'static str] = &[providers::Twilio::NAME];
    type Input = SmsInput;
    type Output = SmsOutput;

    /// Checks the literal parts (no `{{`): numbers look like E.164, the body is 1–1600 characters.
    fn validate(&self, input: &Map<String, Value>) -> Vec<(String, String)> {
        let literal = |name: &str| match input.get(name) {
            Some(Value::String(s)) if !s.contains("{{") => Some(s.as_str()),
            _ => None,
        };
        [("to", literal("to").map(|s| check_to(s.trim()))), ("from", literal("from").map(|s| check_from(s.trim()))), ("body", literal("body").map(check_body))]
            .into_iter()
            .filter_map(|(name, result)| Some((name.to_owned(), result?.err()?)))
            .collect()
    }

    fn estimate(&self, input: &SmsInput) -> Vec<Usage> {
        vec![UNIT.times(sms_segments(&input.body))]
    }

    /// One message a second per sender number, counted per connection: another account naming
    /// the same number in its own steps cannot hold this one's messages up.
    fn rate_limit(&self, ctx: &ActionContext, input: &SmsInput) -> Option<RateLimit> {
        let from = input.from.trim();
        let connection = ctx.connection.as_ref().map_or("none", |c| c.id.as_str());
        Some(RateLimit { key: format!("twilio:{connection}:{from}"), interval: Duration::from_secs(1) })
    }

    fn recipient(&self, input: &SmsInput) -> Option<Recipient> {
        Some(Recipient { number: input.to.trim().to_owned(), channel: Channel::Sms })
    }

    fn sandbox(&self, ctx: &ActionContext, input: &SmsInput) -> Result<Option<SandboxSend>, ActionError> {
        let message = Message::parse(input)?;
        let segments = message.segments();
        Ok(Some(SandboxSend {
            to: Some(message.to.to_owned()),
            rendered: json!({ "from": message.from, "to": message.to, "body": message.body, "segments": segments }),
            output: json!({
                "sid": sandbox_sid(&ctx.idempotency_key),
                "status": "sandbox",
                "to": message.to,
                "from": message.from,
                "segments": segments,
            }),
            usage: vec![UNIT.times(segments)],
        }))
    }

    async fn execute(&self, ctx: &ActionContext, input: SmsInput) -> Result<Done<SmsOutput>, ActionError> {
        let message = Message::parse(&input)?;
        let connection = ctx.connection.as_ref().ok_or_else(|| ActionError::permanent("missing_connection", "sms.send needs a twilio connection"))?;
        let credentials: TwilioCredentials = self.vault.open(connection)?;
        // It becomes a path segment; the connection check holds it to `AC` + hex already.
        if credentials.account_sid.is_empty() || !credentials.account_sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ActionError::permanent(
                "connection_invalid",
                format!("connection '{}' holds an account SID that is not 'AC' and 32 hex characters", connection.name),
            ));
        }

        let sender = if is_messaging_service_sid(message.from) { "MessagingServiceSid" } else { "From" };
        let callback = format!("{}/callbacks/twilio/{}/sms", self.public_url, connection.id);
        let form = [("To", message.to), (sender, message.from), ("Body", message.body), ("StatusCallback", callback.as_str())];
        let mut response = self
            .client
            .post(format!("{}/2010-04-01/Accounts/{}/Messages.json", self.api_base, credentials.account_sid))
            .basic_auth(&credentials.account_sid, Some(credentials.auth_token.expose_secret()))
            .timeout(ctx.timeout)
            .form(&form)
            .send()
            .await
            .map_err(|e| classify_send_error(&e, Self::DELIVERY))?;

        let status = response.status();
        let headers = response.headers().clone();
        let answer = read_limited(&mut response, MAX_ANSWER_BYTES).await.map(|(bytes, _)| bytes);
        if !status.is_success() {
            // The status decides; an unreadable body only costs the vendor's explanation.
            return Err(twilio_failure(status, &headers, &answer.unwrap_or_default()));
        }
        // A 2xx means Twilio created the message: it is sent, even if its answer cannot be read
        // (failing the step would invite a person to send it again). Without the resource the
        // output has no sid and the segments are our own count.
        let created: TwilioMessage = match answer.ok().and_then(|a| serde_json::from_slice(&a).ok()) {
            Some(created) => created,
            None => {
                tracing::warn!(%status, "Twilio accepted a message with an unreadable answer; recorded as sent without its sid");
                TwilioMessage::default()
            }
        };
        let segments = created.num_segments.as_deref().and_then(|n| n.trim().parse::<i64>().ok()).filter(|n| *n > 0).unwrap_or_else(|| message.segments());
        Ok(Done {
            output: SmsOutput {
                sid: created.sid,
                status: created.status.unwrap_or_else(|| "queued".to_owned()),
                to: created.to.unwrap_or_else(|| message.to.to_owned()),
                // Null through a Messaging Service until Twilio picks a sender: report what we sent.
                from: created.from.unwrap_or_else(|| message.from.to_owned()),
                segments,
            },
            usage: vec![UNIT.times(segments)],
        })
    }
}

/// A Twilio failure answer as the failure envelope: the HTTP status classifies (with
/// `Retry-After`), [`RETRYABLE_CODES`] turn a 4xx into a retry, and Twilio's code and message
/// name it.
pub(crate) fn twilio_failure(status: StatusCode, headers: &reqwest::header::HeaderMap, body: &[u8]) -> ActionError {
    let text = String::from_utf8_lossy(body);
    let by_status =
        classify_response(status, headers, &text).unwrap_or_else(|| ActionError::permanent(format!("http_{}", status.as_u16()), format!("HTTP {status}")));
    let Ok(error) = serde_json::from_slice::<TwilioError>(body) else {
        return by_status;
    };
    let mut message = format!("twilio error {}: {}", error.code, error.message.trim());
    if let Some(detail) = error.detail.filter(|d| !d.trim().is_empty()) {
        message.push_str(&format!(": {}", detail.trim()));
    }
    if let Some(more) = error.more_info.filter(|m| !m.is_empty()) {
        message.push_str(&format!(" (see {more})"));
    }
    if error.code == UNSUBSCRIBED_RECIPIENT {
        return ActionError::opted_out(message);
    }
    let class = if RETRYABLE_CODES.contains(&error.code) { FailureClass::Retryable } else { by_status.class };
    ActionError { code: format!("twilio_{}", error.code), message, class, retry_after_ms: by_status.retry_after_ms }
}

/// A stable, Twilio-shaped SID (34 characters) for a sandbox send: the same step gets the same.
fn sandbox_sid(idempotency_key: &str) -> String {
    let digest = Sha256::digest(idempotency_key.as_bytes());
    let mut sid = String::from("SBX");
    sid.push_str(&hex::encode(digest)[..31]);
    sid
}

/// Whether `s` is an E.164 phone number: `+` and 8–15 digits (also how template phone
/// parameters are checked).
pub fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// `MG` and 32 hex characters.
fn is_messaging_service_sid(s: &str) -> bool {
    s.strip_prefix("MG").is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn check_to(to: &str) -> Result<(), String> {
    if is_e164(to) { Ok(()) } else { Err("must be a phone number in E.164 form: '+' and 8 to 15 digits, e.g. +15551234567".into()) }
}

fn check_from(from: &str) -> Result<(), String> {
    if is_e164(from) || is_messaging_service_sid(from) {
        Ok(())
    } else {
        Err("must be a phone number in E.164 form ('+' and 8 to 15 digits) or a Messaging Service SID ('MG…')".into())
    }
}

fn check_body(body: &str) -> Result<(), String> {
    let chars = body.chars().count();
    if body.trim().is_empty() {
        Err("must not be empty".into())
    } else if chars > MAX_BODY_CHARS {
        Err(format!("is {chars} characters; Twilio takes at most {MAX_BODY_CHARS}"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(input: Value) -> Vec<(String, String)> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let vault = Arc::new(Vault::from_hex(&Vault::generate_hex()).unwrap());
        let action = SmsSend::new(reqwest::Client::new(), vault, "http://twilio.test".into(), "http://sb.test".into());
        let mut found: Vec<(String, String)> = Action::validate(&action, input.as_object().unwrap());
        found.sort();
        found
    }

    fn paths(input: Value) -> Vec<String> {
        problems(input).into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn literal_numbers_and_body_are_checked() {
        assert!(paths(json!({"to": "+15551234567", "from": "+15557654321", "body": "Hi"})).is_empty());
        assert!(paths(json!({"to": "+447911123456", "from": "MG0123456789abcdef0123456789abcdef", "body": "Hi"})).is_empty());
        assert_eq!(paths(json!({"to": "555-1234", "from": "Acme", "body": " "})), ["body", "from", "to"]);
        assert_eq!(paths(json!({"to": "+1234567", "from": "+1234567890123456", "body": "x"})), ["from", "to"]);
        assert_eq!(paths(json!({"to": "+15551234567", "from": "MG123", "body": "x".repeat(1601)})), ["body", "from"]);
        assert!(paths(json!({"to": "+15551234567", "from": "+15557654321", "body": "é".repeat(1600)})).is_empty());
    }

    #[test]
    fn interpolated_parts_wait_for_run_time() {
        let input = json!({"to": "{{ trigger.phone }}", "from": "{{ vars.sender }}", "body": "{{ vars.text }}"});
        assert!(paths(input).is_empty());
    }

    #[test]
    fn twilio_codes_steer_the_class_and_name_the_failure() {
        let headers = reqwest::header::HeaderMap::new();
        let body = br#"{"code": 21610, "message": "Attempt to send to unsubscribed recipient", "more_info": "https://www.twilio.com/docs/errors/21610", "status": 400}"#;
        let err = twilio_failure(StatusCode::BAD_REQUEST, &headers, body);
        assert_eq!((err.code.as_str(), err.class), (ActionError::OPTED_OUT, FailureClass::Permanent), "the runtime records the opt-out");
        assert_eq!(err.message, "twilio error 21610: Attempt to send to unsubscribed recipient (see https://www.twilio.com/docs/errors/21610)");
        let body = br#"{"code": 21611, "message": "This 'From' number has exceeded the maximum number of queued messages", "status": 400}"#;
        let err = twilio_failure(StatusCode::BAD_REQUEST, &headers, body);
        assert_eq!((err.code.as_str(), err.class), ("twilio_21611", FailureClass::Retryable));
        let err = twilio_failure(StatusCode::BAD_GATEWAY, &headers, b"<html>bad gateway</html>");
        assert_eq!((err.code.as_str(), err.class), ("http_502", FailureClass::Retryable));
    }

    #[test]
    fn sandbox_sids_are_stable_and_twilio_shaped() {
        let sid = sandbox_sid("run_1:3");
        assert_eq!(sid.len(), 34);
        assert!(sid.starts_with("SBX"));
        assert_eq!(sid, sandbox_sid("run_1:3"));
        assert_ne!(sid, sandbox_sid("run_1:4"));
    }
}
