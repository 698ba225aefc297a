//! `email.send`: one email over SMTP with lettre, through an `smtp` connection.
//!
//! Input `{to, from, subject, text?, html?, reply_to?}`, already rendered by the runtime. `to` is
//! one address or several separated by commas; every address may carry a display name
//! (`Ada Lovelace <ada@example.com>`). At least one of `text` and `html` is needed: text alone is
//! sent as `text/plain`, HTML alone as `text/html`, both as `multipart/alternative`.
//!
//! Output `{message_id, accepted, response}`: the `Message-ID` header, the recipients the server
//! accepted (all of them, or the send fails) and the server's final reply. Usage: one `email`
//! per message the server accepted, whatever the number of recipients.
//!
//! ## Delivery and failures
//! SMTP has no idempotency key, so delivery is at most once. The `Message-ID` is derived from the
//! step's idempotency key, so it is the same on every attempt of the step and receivers that
//! dedupe on it see one message. A send goes through two phases, and the phase decides what an
//! I/O failure means:
//! - **session** (TCP connect, implicit TLS or STARTTLS, EHLO, AUTH): nothing has been sent yet,
//!   so a refused connection, a TLS failure, a timeout or a broken connection is retryable;
//! - **transaction** (MAIL, RCPT, DATA): once the message may have been written, a timeout or a
//!   broken connection is `outcome_unknown`; the server may hold the message.
//!
//! In either phase a 4xx reply is retryable and a 5xx reply is permanent, both quoting the
//! server's text (code `smtp_<reply code>`); a configuration the client refuses by itself (no
//! STARTTLS offered, no AUTH mechanism in common) is permanent.
//!
//! This is why the module drives lettre's [`AsyncSmtpConnection`] rather than
//! `AsyncSmtpTransport::send`: the transport runs the same two phases but returns one error
//! whose kind (connection or network) is private, so a failure to connect could not be told
//! apart from a failure after the message was written. There is one connection per send (no
//! pool), and the password is never part of an error, the output or a log.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::Message;
use lettre::message::{Mailbox, Mailboxes, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use switchboard_integrations::connections::{SmtpCredentials, SmtpTls, Vault};
use switchboard_integrations::providers::{self, Provider};
use switchboard_runtime::action::{Action, ActionContext, ActionError, Delivery, Done, SandboxSend};
use switchboard_runtime::metering::{Unit, Usage};

type SmtpError = lettre::transport::smtp::Error;

/// The `email.send` action module.
#[derive(Debug, Clone)]
pub struct EmailSend {
    vault: Arc<Vault>,
    allow_private: bool,
}

impl EmailSend {
    /// Sends through the connections `vault` opens, to public SMTP servers only.
    pub fn new(vault: Arc<Vault>) -> Self {
        Self { vault, allow_private: false }
    }

    /// Lets connections reach private, loopback and link-local SMTP servers
    /// (`SWITCHBOARD_HTTP_ALLOW_PRIVATE`, the same operator switch as outbound HTTP).
    pub fn allow_private(mut self, allow: bool) -> Self {
        self.allow_private = allow;
        self
    }
}

/// The input of `email.send`. Give `text`, `html` or both; an empty one (a template that
/// rendered to nothing) counts as absent.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailInput {
    /// One or more comma-separated addresses (`ada@example.com, Bob <bob@example.com>`).
    pub to: String,
    /// The sender (`Ada <ada@example.com>`).
    pub from: String,
    /// The subject.
    pub subject: String,
    /// The plain-text body.
    pub text: Option<String>,
    /// The HTML body.
    pub html: Option<String>,
    /// Where replies go.
    pub reply_to: Option<String>,
}

/// The output of `email.send`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EmailOutput {
    /// The `Message-ID` sent (stable across attempts).
    pub message_id: String,
    /// The recipients the server accepted.
    pub accepted: Vec<String>,
    /// The server's reply line.
    pub response: String,
}

#[async_trait]
impl Action for EmailSend {
    const KIND: &'static str = "email.send";
    const DELIVERY: Delivery = Delivery::AtMostOnce;
    const UNITS: &'static [Unit] = &[Unit::Email];
    const PROVIDERS: &'static [&'static str] = &[providers::Smtp::NAME];
    type Input = EmailInput;
    type Output = EmailOutput;

    /// Checks literal addresses (strings without `{{`) and that a body is given.
    fn validate(&self, input: &Map<String, Value>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let literal = |name: &str| match input.get(name) {
            Some(Value::String(s)) if !s.contains("{{") => Some(s.as_str()),
            _ => None,
        };
        if let Some(to) = literal("to")
            && let Err(e) = parse_recipients(to)
        {
            problems.push(("to".to_owned(), e));
        }
        for name in ["from", "reply_to"] {
            if let Some(value) = literal(name)
                && let Err(e) = parse_mailbox(value)
            {
                problems.push((name.to_owned(), e));
            }
        }
        // An interpolated body may render empty; only the run can tell, so it counts as given.
        let given = |name: &str| !matches!(input.get(name), None | Some(Value::Null)) && literal(name) != Some("");
        if !given("text") && !given("html") {
            problems.push(("text".to_owned(), "give text, html or both".to_owned()));
        }
        problems
    }

    fn estimate(&self, _input: &EmailInput) -> Vec<Usage> {
        one_email()
    }

    fn sandbox(&self, ctx: &ActionContext, input: &EmailInput) -> Result<Option<SandboxSend>, ActionError> {
        let email = Email::parse(input)?;
        Ok(Some(SandboxSend {
            to: Some(email.to_text.clone()),
            rendered: json!({
                "from": email.from.to_string(),
                "to": email.to_text,
                "subject": email.subject,
                "text": email.text,
                "html": email.html,
                "reply_to": email.reply_to.as_ref().map(ToString::to_string),
            }),
            output: json!({ "message_id": message_id(&ctx.idempotency_key), "sandbox": true }),
            usage: one_email(),
        }))
    }

    async fn execute(&self, ctx: &ActionContext, input: EmailInput) -> Result<Done<EmailOutput>, ActionError> {
        let connection =
            ctx.connection.as_deref().ok_or_else(|| ActionError::permanent("missing_connection", "email.send needs an smtp connection (none was given)"))?;
        let email = Email::parse(&input)?;
        let credentials: SmtpCredentials = self.vault.open(connection)?;
        let message_id = message_id(&ctx.idempotency_key);
        let message = email.message(&message_id)?;
        let scrub = Scrub(credentials.password.as_ref().map(|p| p.expose_secret()));

        // lettre bounds only the TCP connect; each phase gets its own bound here, so a server
        // that stalls before the message is written is a retryable timeout (nothing was sent),
        // and only a stall in the transaction is an unknown outcome.
        let started = tokio::time::Instant::now();
        let mut conn = match tokio::time::timeout(ctx.timeout, open_session(&credentials, ctx.timeout, self.allow_private)).await {
            Ok(session) => session.map_err(|(stage, e)| session_failure(stage, &e, &scrub))?,
            Err(_) => {
                return Err(ActionError::retryable("timeout", "the SMTP server did not complete the greeting, TLS or login in time; nothing was sent"));
            }
        };
        let left = ctx.timeout.saturating_sub(started.elapsed()).max(std::time::Duration::from_secs(1));
        let response = match tokio::time::timeout(left, conn.send(message.envelope(), &message.formatted())).await {
            Ok(sent) => sent.map_err(|e| transaction_failure(&e, &scrub))?,
            Err(_) => {
                return Err(ActionError::outcome_unknown(
                    "timeout",
                    "the SMTP server did not answer the message in time; it may have been delivered, so it is not resent automatically",
                ));
            }
        };
        // The server took responsibility for the message with its reply: the step has
        // succeeded. The connection is dropped rather than QUIT, because waiting for QUIT's
        // answer could outlast the step's timeout and turn a delivered email into a failure.
        drop(conn);

        let accepted: Vec<String> = message.envelope().to().iter().map(ToString::to_string).collect();
        Ok(Done { output: EmailOutput { message_id, accepted, response: reply_line(&response) }, usage: one_email() })
    }
}

fn one_email() -> Vec<Usage> {
    vec![Unit::Email.times(1)]
}

/// The step's `Message-ID`: stable across attempts, so receivers can dedupe a resend. The key
/// (`run:seq`) is kept to characters that are valid in a message id's left part.
fn message_id(idempotency_key: &str) -> String {
    let mut left = String::with_capacity(idempotency_key.len());
    for c in idempotency_key.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') { c } else { '.' };
        // A dot-atom has no empty parts: no leading, trailing or doubled dots.
        if c != '.' || !(left.is_empty() || left.ends_with('.')) {
            left.push(c);
        }
    }
    format!("<{}@switchboard>", left.trim_end_matches('.'))
}

/// A rendered `email.send` input, checked.
struct Email {
    from: Mailbox,
    to: Mailboxes,
    /// `to` as the author wrote it (for the outbox).
    to_text: String,
    subject: String,
    text: Option<String>,
    html: Option<String>,
    reply_to: Option<Mailbox>,
}

impl Email {
    fn parse(input: &EmailInput) -> Result<Self, ActionError> {
        let invalid = |field: &str, message: String| ActionError::permanent("invalid_input", format!("{field}: {message}"));
        let to_text = input.to.clone();
        let to = parse_recipients(&to_text).map_err(|e| invalid("to", e))?;
        let from = parse_mailbox(&input.from).map_err(|e| invalid("from", e))?;
        let reply_to = input.reply_to.as_deref().map(parse_mailbox).transpose().map_err(|e| invalid("reply_to", e))?;
        // An empty body part (e.g. a template that rendered to nothing) counts as absent.
        let text = input.text.clone().filter(|s| !s.is_empty());
        let html = input.html.clone().filter(|s| !s.is_empty());
        if text.is_none() && html.is_none() {
            return Err(invalid("text", "give text, html or both (both are empty)".into()));
        }
        Ok(Self { from, to, to_text, subject: input.subject.clone(), text, html, reply_to })
    }

    /// The MIME message with `message_id`.
    fn message(&self, message_id: &str) -> Result<Message, ActionError> {
        let mut builder = Message::builder().from(self.from.clone()).subject(self.subject.clone()).message_id(Some(message_id.to_owned()));
        for mailbox in self.to.iter() {
            builder = builder.to(mailbox.clone());
        }
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        let built = match (&self.text, &self.html) {
            (Some(text), Some(html)) => builder.multipart(MultiPart::alternative_plain_html(text.clone(), html.clone())),
            (Some(text), None) => builder.singlepart(SinglePart::plain(text.clone())),
            (None, Some(html)) => builder.singlepart(SinglePart::html(html.clone())),
            (None, None) => unreachable!("Email::parse requires a body"),
        };
        built.map_err(|e| ActionError::permanent("invalid_input", format!("the message could not be built: {e}")))
    }
}

/// One or more comma-separated mailboxes.
fn parse_recipients(to: &str) -> Result<Mailboxes, String> {
    let mailboxes: Mailboxes =
        to.trim().parse().map_err(|_| format!("{to:?} is not a list of email addresses (e.g. `ada@example.com, Bob <bob@example.com>`)"))?;
    if mailboxes.iter().next().is_none() {
        return Err("no recipient".into());
    }
    Ok(mailboxes)
}

fn parse_mailbox(value: &str) -> Result<Mailbox, String> {
    value.trim().parse().map_err(|_| format!("{value:?} is not an email address (e.g. `Ada <ada@example.com>`)"))
}

/// Where the session was when it failed (for the message).
#[derive(Debug, Clone, Copy)]
enum Stage {
    Connect,
    Starttls,
    Login,
}

/// Connects, secures and logs in: everything before the message's transaction.
async fn open_session(credentials: &SmtpCredentials, timeout: Duration, allow_private: bool) -> Result<AsyncSmtpConnection, (Stage, SessionError)> {
    // Resolved once and checked like outbound HTTP (an account must not reach internal
    // services through its SMTP connection); the checked address is the one connected to.
    let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host((credentials.host.as_str(), credentials.port))
        .await
        .map_err(|e| (Stage::Connect, SessionError::Resolve(e.to_string())))?
        .collect();
    if let Some(refused) = addresses.iter().find(|a| !allow_private && !switchboard_integrations::http::is_allowed(a.ip())) {
        return Err((Stage::Connect, SessionError::NotAllowed(refused.ip())));
    }
    let Some(address) = addresses.first().copied() else {
        return Err((Stage::Connect, SessionError::Resolve(format!("{} has no address", credentials.host))));
    };
    let hello = ClientId::default();
    // Certificates are checked against webpki's roots and the connection's host name.
    let tls = || TlsParameters::new(credentials.host.clone());
    let implicit = match credentials.tls {
        SmtpTls::Implicit => Some(tls().map_err(|e| (Stage::Connect, SessionError::Smtp(e)))?),
        SmtpTls::None | SmtpTls::Starttls => None,
    };
    // lettre bounds the TCP connect with `timeout`; the runtime bounds the whole attempt.
    let mut conn =
        AsyncSmtpConnection::connect_tokio1(address, Some(timeout), &hello, implicit, None).await.map_err(|e| (Stage::Connect, SessionError::Smtp(e)))?;
    if credentials.tls == SmtpTls::Starttls {
        // Required, not opportunistic: a server that does not offer STARTTLS fails the send.
        let params = tls().map_err(|e| (Stage::Starttls, SessionError::Smtp(e)))?;
        conn.starttls(params, &hello).await.map_err(|e| (Stage::Starttls, SessionError::Smtp(e)))?;
    }
    if let (Some(username), Some(password)) = (&credentials.username, &credentials.password) {
        let login = Credentials::new(username.clone(), password.expose_secret().to_owned());
        conn.auth(&[Mechanism::Plain, Mechanism::Login], &login).await.map_err(|e| (Stage::Login, SessionError::Smtp(e)))?;
    }
    Ok(conn)
}

/// Why a session could not be opened.
enum SessionError {
    /// The host name did not resolve.
    Resolve(String),
    /// The server's address is private and the operator does not allow those.
    NotAllowed(std::net::IpAddr),
    /// lettre's error.
    Smtp(SmtpError),
}

/// A failure before the message's transaction began: nothing was sent.
fn session_failure(stage: Stage, err: &SessionError, scrub: &Scrub<'_>) -> ActionError {
    match err {
        SessionError::Resolve(why) => ActionError::retryable("connect_error", format!("could not resolve the SMTP server, before anything was sent: {why}")),
        SessionError::NotAllowed(ip) => ActionError::permanent(
            "address_not_allowed",
            format!(
                "the SMTP server is at {ip}, a private, loopback or link-local address, which connections may not reach; \
                 the operator can allow such addresses with SWITCHBOARD_HTTP_ALLOW_PRIVATE=true"
            ),
        ),
        SessionError::Smtp(e) => smtp_session_failure(stage, e, scrub),
    }
}

fn smtp_session_failure(stage: Stage, err: &SmtpError, scrub: &Scrub<'_>) -> ActionError {
    let during = match stage {
        Stage::Connect => "while connecting",
        Stage::Starttls => "during STARTTLS",
        Stage::Login => "during login",
    };
    if let Some(refusal) = refusal(err, during, scrub) {
        return refusal;
    }
    let cause = scrub.apply(describe(err));
    if err.is_client() {
        return ActionError::permanent("smtp_unsupported", format!("the SMTP session failed {during}: {cause}"));
    }
    let code = if err.is_timeout() {
        "timeout"
    } else if err.is_tls() {
        "tls_error"
    } else {
        "connect_error"
    };
    ActionError::retryable(code, format!("the SMTP session failed {during}, before anything was sent: {cause}"))
}

/// A failure once MAIL, RCPT or DATA may have been written.
fn transaction_failure(err: &SmtpError, scrub: &Scrub<'_>) -> ActionError {
    if let Some(refusal) = refusal(err, "to the message", scrub) {
        return refusal;
    }
    let cause = scrub.apply(describe(err));
    if err.is_client() {
        // lettre's own checks (e.g. non-ASCII addresses without SMTPUTF8) run before MAIL.
        return ActionError::permanent("smtp_unsupported", format!("the message cannot be sent to this server: {cause}"));
    }
    let code = if err.is_timeout() { "timeout" } else { "transport_error" };
    ActionError::outcome_unknown(code, format!("the SMTP connection failed after the message may have been sent ({cause}); it is not resent automatically"))
}

/// A 4xx (retryable) or 5xx (permanent) reply, quoting the server.
fn refusal(err: &SmtpError, during: &str, scrub: &Scrub<'_>) -> Option<ActionError> {
    let code = u16::from(err.status()?);
    let text = scrub.apply(std::error::Error::source(err).map(ToString::to_string).unwrap_or_default());
    let message = format!("the SMTP server answered {code} {during}: {text}");
    if err.is_transient() {
        Some(ActionError::retryable(format!("smtp_{code}"), message))
    } else if err.is_permanent() {
        Some(ActionError::permanent(format!("smtp_{code}"), message))
    } else {
        None
    }
}

/// The error and its causes, each said once.
fn describe(err: &SmtpError) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    // lettre nests its kind in its causes ("Connection error: Connection error: …"): say it once.
    let mut parts: Vec<&str> = message.split(": ").collect();
    parts.dedup();
    parts.join(": ")
}

/// `250 2.0.0 Ok: queued as …`.
fn reply_line(response: &Response) -> String {
    let text: Vec<&str> = response.message().collect();
    format!("{} {}", response.code(), text.join(" ")).trim_end().to_owned()
}

/// Removes the connection's password from text that leaves the module: a server may echo what
/// it was sent, and no error must ever carry it.
struct Scrub<'a>(Option<&'a str>);

impl Scrub<'_> {
    fn apply(&self, text: String) -> String {
        match self.0 {
            Some(secret) if !secret.is_empty() && text.contains(secret) => text.replace(secret, "[redacted]"),
            _ => text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_is_stable_and_well_formed() {
        assert_eq!(message_id("run_1:3"), "<run_1.3@switchboard>");
        assert_eq!(message_id("run_1:3"), message_id("run_1:3"));
        assert_eq!(message_id("a b<c>:1"), "<a.b.c.1@switchboard>");
        assert_eq!(message_id(":x::"), "<x@switchboard>");
    }

    #[test]
    fn recipients_are_one_or_more_mailboxes() {
        assert_eq!(parse_recipients(" ada@example.com ").unwrap().iter().count(), 1);
        let list = parse_recipients("Ada <ada@example.com>, \"Doe, Jane\" <jane@example.com>,bob@example.com").unwrap();
        assert_eq!(list.iter().count(), 3);
        for bad in ["", "ada", "ada@example.com;bob@example.com", "ada@example.com,", "Ada <ada@example.com> x"] {
            assert!(parse_recipients(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scrub_removes_the_password() {
        assert_eq!(Scrub(Some("hunter2")).apply("bad hunter2 x".into()), "bad [redacted] x");
        assert_eq!(Scrub(Some("")).apply("x".into()), "x");
        assert_eq!(Scrub(None).apply("x".into()), "x");
    }
}
