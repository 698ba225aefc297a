//! `slack.post_message`: one message to a Slack channel, through a bot token or an
//! incoming webhook, whichever the connection holds.
//!
//! Input `{channel?, text}`; output `{channel, ts}`; usage `slack_message × 1`. The vendor
//! contracts:
//!
//! - **Bot token** (`xoxb-…`): `POST {api_base}/api/chat.postMessage` with
//!   `Authorization: Bearer <token>` and the JSON `{channel, text}` (`charset=utf-8` declared, as
//!   Slack asks). Slack answers HTTP 200 for its own failures too: `{"ok": true, "channel",
//!   "ts", "message"}` or `{"ok": false, "error": "channel_not_found"}`. The `error` names the
//!   failure (`slack_<error>`): throttling and outages (`ratelimited`, `service_unavailable`,
//!   `request_timeout`) are retryable; `internal_error` and `fatal_error`, which Slack documents
//!   as "some aspect of the operation may have succeeded", are `outcome_unknown`; every other
//!   error (`channel_not_found`, `not_in_channel`, `invalid_auth`, …) is permanent. A non-2xx
//!   status (429 with `Retry-After` in seconds, 5xx) is classified by its status.
//! - **Incoming webhook**: `POST <webhook_url>` with the JSON `{text}` (a webhook posts to the
//!   channel it was created for, so `channel` is not sent). Success is 200 `ok`; failures are a
//!   status with a plain-text error: 400 `invalid_payload`/`no_text`, 403 `action_prohibited`,
//!   404 `channel_not_found`/`no_service`, 410 `channel_is_archived` (permanent); 429 and 5xx are
//!   retryable. The URL is the secret and is never quoted.
//!
//! Slack takes no idempotency key for either, so delivery is at most once: a request that may
//! have left (a read timeout, a broken connection) ends `outcome_unknown`. Slack posts about one
//! message a second per channel, hence the rate limit per connection and channel.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use switchboard_integrations::connections::{SlackCredentials, Vault};
use switchboard_integrations::http::read_limited;
use switchboard_integrations::providers::{self, Provider};
use switchboard_integrations::{classify_response, classify_send_error};
use switchboard_runtime::action::{Action, ActionContext, ActionError, Delivery, Done, RateLimit, SandboxSend};
use switchboard_runtime::metering::{Unit, Usage};

/// The unit a post is metered in.
const UNIT: Unit = Unit::SlackMessage;

/// Slack refuses longer texts (`msg_too_long`).
const MAX_TEXT_CHARS: usize = 40_000;

/// The most of Slack's answer read; a posted message's echo is a few kilobytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// `ok: false` errors that mean "not now": nothing was posted.
const RETRYABLE_ERRORS: [&str; 4] = ["ratelimited", "rate_limited", "service_unavailable", "request_timeout"];

/// `ok: false` errors after which Slack says the post may have happened anyway.
const MAYBE_POSTED_ERRORS: [&str; 2] = ["internal_error", "fatal_error"];

/// The `slack.post_message` action module.
#[derive(Debug, Clone)]
pub struct SlackPostMessage {
    client: reqwest::Client,
    vault: Arc<Vault>,
    api_base: String,
}

impl SlackPostMessage {
    /// Sends with `client` (from [`switchboard_integrations::client`]) to Slack's Web API at
    /// `api_base` (`https://slack.com` in production), opening connections with `vault`.
    pub fn new(client: reqwest::Client, vault: Arc<Vault>, api_base: String) -> Self {
        Self { client, vault, api_base: api_base.trim_end_matches('/').to_owned() }
    }
}

/// The input of `slack.post_message`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostInput {
    /// The channel (an ID like `C…`, or `#name`). Required with a bot-token connection; an
    /// incoming webhook posts to its own channel when it is left out.
    pub channel: Option<String>,
    /// The message, at most 40,000 characters.
    pub text: String,
}

/// The output of `slack.post_message`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PostOutput {
    /// The channel posted to (`null` through a webhook without one).
    pub channel: Option<String>,
    /// The message's timestamp (`null` through a webhook).
    pub ts: Option<String>,
}

/// The rendered input, checked.
struct Post<'a> {
    /// `None` when absent, null or blank.
    channel: Option<&'a str>,
    text: &'a str,
}

impl<'a> Post<'a> {
    fn parse(input: &'a PostInput) -> Result<Self, ActionError> {
        let invalid = |message: String| ActionError::permanent("invalid_input", message);
        let channel = input.channel.as_deref().map(str::trim).filter(|s| !s.is_empty());
        let text = input.text.as_str();
        check_text(text).map_err(|e| invalid(format!("text: {e}")))?;
        Ok(Self { channel, text })
    }
}

/// `chat.postMessage`'s answer (the fields we use).
#[derive(Deserialize)]
struct ApiAnswer {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    ts: Option<String>,
    /// With `missing_scope`: the scope the token lacks.
    #[serde(default)]
    needed: Option<String>,
}

#[async_trait]
impl Action for SlackPostMessage {
    const KIND: &'static str = "slack.post_message";
    const DELIVERY: Delivery = Delivery::AtMostOnce;
    const UNITS: &'static [Unit] = &[UNIT];
    const PROVIDERS: &'static [&'static str] = &[providers::Slack::NAME];
    // `channel` is required for bot tokens only; which kind a connection holds is known when it
    // is opened.
    type Input = PostInput;
    type Output = PostOutput;

    /// Checks the literal parts (no `{{`): a non-blank text of at most 40,000 characters, a
    /// non-blank channel.
    fn validate(&self, input: &Map<String, Value>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Some(Value::String(text)) = input.get("text")
            && !text.contains("{{")
            && let Err(e) = check_text(text)
        {
            problems.push(("text".to_owned(), e));
        }
        if let Some(Value::String(channel)) = input.get("channel")
            && channel.trim().is_empty()
        {
            problems.push(("channel".to_owned(), "must not be empty (leave it out for a webhook connection)".to_owned()));
        }
        problems
    }

    fn estimate(&self, _input: &PostInput) -> Vec<Usage> {
        vec![UNIT.times(1)]
    }

    fn rate_limit(&self, ctx: &ActionContext, input: &PostInput) -> Option<RateLimit> {
        let connection = ctx.connection.as_ref()?;
        // A webhook without a channel posts to its own one channel.
        let channel = input.channel.as_deref().map(str::trim).filter(|c| !c.is_empty());
        Some(RateLimit { key: format!("slack:{}:{}", connection.id, channel.unwrap_or("default")), interval: Duration::from_secs(1) })
    }

    fn sandbox(&self, _ctx: &ActionContext, input: &PostInput) -> Result<Option<SandboxSend>, ActionError> {
        let post = Post::parse(input)?;
        Ok(Some(SandboxSend {
            to: Some(post.channel.unwrap_or("webhook").to_owned()),
            rendered: json!({ "channel": post.channel, "text": post.text }),
            output: json!({ "channel": post.channel, "ts": null, "sandbox": true }),
            usage: vec![UNIT.times(1)],
        }))
    }

    async fn execute(&self, ctx: &ActionContext, input: PostInput) -> Result<Done<PostOutput>, ActionError> {
        let post = Post::parse(&input)?;
        let connection = ctx.connection.as_ref().ok_or_else(|| ActionError::permanent("missing_connection", "slack.post_message needs a slack connection"))?;
        let output = match self.vault.open::<SlackCredentials>(connection)? {
            SlackCredentials::Bot { bot_token } => self.post_as_bot(ctx, &bot_token, &post).await?,
            SlackCredentials::Webhook { webhook_url } => self.post_to_webhook(ctx, &webhook_url, &post).await?,
        };
        Ok(Done { output, usage: vec![UNIT.times(1)] })
    }
}

impl SlackPostMessage {
    /// `chat.postMessage` with a bot token.
    async fn post_as_bot(&self, ctx: &ActionContext, token: &SecretString, post: &Post<'_>) -> Result<PostOutput, ActionError> {
        let channel = post.channel.ok_or_else(|| {
            ActionError::permanent("invalid_input", "channel: required with a bot-token connection (only an incoming webhook has a channel of its own)")
        })?;
        let body = json!({ "channel": channel, "text": post.text }).to_string();
        let mut response = self
            .client
            .post(format!("{}/api/chat.postMessage", self.api_base))
            .bearer_auth(token.expose_secret())
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .timeout(ctx.timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| classify_send_error(&e, Self::DELIVERY))?;

        let status = response.status();
        let headers = response.headers().clone();
        let answer = read_limited(&mut response, MAX_ANSWER_BYTES).await.map(|(bytes, _)| bytes);
        let parsed = answer.as_deref().ok().and_then(|a| serde_json::from_slice::<ApiAnswer>(a).ok());
        if !status.is_success() {
            // The status classifies (a 429's Retry-After included); Slack's error names it.
            let snippet = String::from_utf8_lossy(answer.as_deref().unwrap_or_default()).into_owned();
            let by_status = classify_response(status, &headers, &snippet).unwrap_or_else(|| http_error(status));
            return Err(match parsed.and_then(|p| p.error.map(|e| (e, p.needed))) {
                Some((error, needed)) => ActionError { code: code(&error), message: describe(&error, needed.as_deref()), ..by_status },
                None => by_status,
            });
        }
        answer.map_err(|e| classify_send_error(&e, Self::DELIVERY))?;
        let answer = parsed.ok_or_else(|| {
            ActionError::outcome_unknown(
                "invalid_response",
                format!("Slack answered HTTP {status} with a body that is not its JSON; the message may have been posted"),
            )
        })?;
        if !answer.ok {
            let error = answer.error.unwrap_or_else(|| "unknown_error".to_owned());
            return Err(api_failure(&error, answer.needed.as_deref(), &headers));
        }
        Ok(PostOutput { channel: Some(answer.channel.unwrap_or_else(|| channel.to_owned())), ts: answer.ts })
    }

    /// An incoming webhook. Nothing about the URL reaches a message: `classify_send_error`
    /// leaves URLs out, and Slack's answers do not echo it.
    async fn post_to_webhook(&self, ctx: &ActionContext, url: &SecretString, post: &Post<'_>) -> Result<PostOutput, ActionError> {
        let mut response = self
            .client
            .post(url.expose_secret())
            .timeout(ctx.timeout)
            .json(&json!({ "text": post.text }))
            .send()
            .await
            .map_err(|e| classify_send_error(&e, Self::DELIVERY))?;
        let status = response.status();
        if status.is_success() {
            // The body is `ok`; there is nothing else to read, and no `ts` to report.
            return Ok(PostOutput { channel: post.channel.map(str::to_owned), ts: None });
        }
        let headers = response.headers().clone();
        let text = String::from_utf8_lossy(&read_limited(&mut response, MAX_ANSWER_BYTES).await.map(|(bytes, _)| bytes).unwrap_or_default()).trim().to_owned();
        let by_status = classify_response(status, &headers, &text).unwrap_or_else(|| http_error(status));
        let is_error_name = !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !is_error_name {
            return Err(by_status);
        }
        Err(ActionError { code: code(&text), message: format!("{} (HTTP {status})", describe(&text, None)), ..by_status })
    }
}

/// An `ok: false` answer (HTTP 200) as the failure envelope.
fn api_failure(error: &str, needed: Option<&str>, headers: &HeaderMap) -> ActionError {
    let (code, message) = (code(error), describe(error, needed));
    if RETRYABLE_ERRORS.contains(&error) {
        ActionError::retryable(code, message).with_retry_after(retry_after(headers))
    } else if MAYBE_POSTED_ERRORS.contains(&error) {
        ActionError::outcome_unknown(code, format!("{message}; Slack says it may have been posted, so it is not resent automatically"))
    } else {
        ActionError::permanent(code, message)
    }
}

/// `slack_<error>`, keeping the code snake_case whatever Slack sends.
fn code(error: &str) -> String {
    let clean: String = error.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).take(64).collect();
    format!("slack_{clean}")
}

/// `slack error <error>`, with what to do about the common ones.
fn describe(error: &str, needed: Option<&str>) -> String {
    let hint = match error {
        "channel_not_found" => "the channel does not exist or the bot cannot see it (use its ID, C…)",
        "not_in_channel" => "the bot is not a member of the channel; invite it first",
        "is_archived" | "channel_is_archived" => "the channel is archived",
        "invalid_auth" | "not_authed" | "token_revoked" | "token_expired" | "account_inactive" => {
            "the connection's credentials are no longer valid; reconnect Slack"
        }
        "missing_scope" => "the token lacks a scope it needs",
        "msg_too_long" => "the text is too long",
        "no_text" => "the text is empty",
        "ratelimited" | "rate_limited" => "Slack asks to slow down",
        "no_service" => "the incoming webhook was disabled or removed",
        "action_prohibited" => "the workspace does not let this webhook post here",
        "invalid_payload" => "Slack could not read the message",
        _ => "",
    };
    let mut message = format!("slack error {error}");
    if !hint.is_empty() {
        message.push_str(": ");
        message.push_str(hint);
    }
    if let Some(needed) = needed {
        message.push_str(&format!(" (needs {needed})"));
    }
    message
}

/// A failure for a status `classify_response` did not classify (it only skips 2xx).
fn http_error(status: StatusCode) -> ActionError {
    ActionError::permanent(format!("http_{}", status.as_u16()), format!("HTTP {status}"))
}

/// The `Retry-After` of an answer whose status is not itself a failure (Slack's `ok: false`
/// comes with 200). The shared parser (delta-seconds or an HTTP date) is reached through
/// `classify_response`, which reads the header for throttled answers.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    classify_response(StatusCode::TOO_MANY_REQUESTS, headers, "")?.retry_after_ms.map(Duration::from_millis)
}

fn check_text(text: &str) -> Result<(), String> {
    let chars = text.chars().count();
    if text.trim().is_empty() {
        Err("must not be empty".into())
    } else if chars > MAX_TEXT_CHARS {
        Err(format!("is {chars} characters; Slack takes at most {MAX_TEXT_CHARS}"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use switchboard_runtime::action::FailureClass;

    use super::*;

    fn paths(input: Value) -> Vec<String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let vault = Arc::new(Vault::from_hex(&Vault::generate_hex()).unwrap());
        let action = SlackPostMessage::new(reqwest::Client::new(), vault, "http://slack.test".into());
        Action::validate(&action, input.as_object().unwrap()).into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn literal_text_and_channel_are_checked() {
        assert!(paths(json!({"channel": "C0123456789", "text": "New lead"})).is_empty());
        assert!(paths(json!({"text": "New lead"})).is_empty(), "a webhook needs no channel");
        assert_eq!(paths(json!({"channel": " ", "text": ""})), ["text", "channel"]);
        assert_eq!(paths(json!({"channel": "#sales", "text": "x".repeat(40_001)})), ["text"]);
        assert!(paths(json!({"channel": "{{ vars.channel }}", "text": "{{ trigger.summary }}"})).is_empty());
    }

    #[test]
    fn ok_false_errors_are_classified() {
        let headers = HeaderMap::new();
        let cases = [
            ("ratelimited", FailureClass::Retryable),
            ("service_unavailable", FailureClass::Retryable),
            ("request_timeout", FailureClass::Retryable),
            ("internal_error", FailureClass::OutcomeUnknown),
            ("fatal_error", FailureClass::OutcomeUnknown),
            ("not_in_channel", FailureClass::Permanent),
            ("invalid_auth", FailureClass::Permanent),
            ("token_revoked", FailureClass::Permanent),
            ("msg_too_long", FailureClass::Permanent),
            ("some_future_error", FailureClass::Permanent),
        ];
        for (error, class) in cases {
            let err = api_failure(error, None, &headers);
            assert_eq!((err.code, err.class), (format!("slack_{error}"), class), "{error}");
        }
        let err = api_failure("missing_scope", Some("chat:write"), &headers);
        assert_eq!(err.message, "slack error missing_scope: the token lacks a scope it needs (needs chat:write)");
        assert_eq!(code("Weird-Error!"), "slack_weird_error_");
    }
}
