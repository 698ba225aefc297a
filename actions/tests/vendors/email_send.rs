//! `email.send` against a real SMTP server process (`smtp_server.py`, aiosmtpd): the raw message
//! the server records, login, the server's 4xx/5xx replies, refused connections, TLS failures, a
//! connection lost after the message was written, and the sandbox.
//!
//! Needs `python3` with `aiosmtpd` (`pip install aiosmtpd`). Without it the tests are skipped
//! with a notice, except under `CI=true`, where they fail.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_actions::email_send::EmailSend;
use switchboard_integrations::connections::Vault;
use switchboard_runtime::action::{ActionError, ActionOutput, ConnectionRef, DynAction, FailureClass};
use switchboard_runtime::metering::Usage;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{connection, ctx, tls, vault};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vendors/smtp_server.py");

/// Whether `python3 -c "import aiosmtpd"` works; under `CI=true` a missing server panics, else
/// a notice is printed once and the calling test returns early.
fn aiosmtpd_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    let available = *AVAILABLE.get_or_init(|| {
        std::process::Command::new("python3").args(["-c", "import aiosmtpd"]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    });
    if !available {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("email.send tests need python3 with aiosmtpd under CI=true: pip install aiosmtpd");
        }
        // Straight to stderr (not `eprintln!`, which the harness captures), once.
        static NOTICE: std::sync::Once = std::sync::Once::new();
        NOTICE.call_once(|| {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "NOTICE: python3 with aiosmtpd is missing; email.send tests are skipped (pip install aiosmtpd; set CI=true to fail instead)"
            );
        });
    }
    available
}

/// A running `smtp_server.py`, killed when dropped.
struct SmtpServer {
    _child: Child,
    port: u16,
    dir: PathBuf,
}

impl SmtpServer {
    /// Starts a server with extra `args` and waits until it accepts connections; `None` when
    /// aiosmtpd is missing outside CI.
    async fn start(args: &[&str]) -> Option<Self> {
        if !aiosmtpd_available() {
            return None;
        }
        let dir = unique_dir();
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .args(["--port", "0", "--out"])
            .arg(dir.join("messages.jsonl"))
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 starts");
        // The server prints its port once it listens.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the SMTP server prints its port within 20 s")
            .unwrap()
            .expect("the SMTP server exited before listening");
        let port: u16 = line.trim().parse().expect("a port number");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Some(Self { _child: child, port, dir });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the SMTP server on port {port} does not accept connections");
    }

    /// Every message the server accepted: `{mail_from, rcpt_tos, data}`.
    fn messages(&self) -> Vec<Value> {
        match std::fs::read_to_string(self.dir.join("messages.jsonl")) {
            Ok(text) => text.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Plain-text credentials for this server.
    fn credentials(&self) -> Value {
        json!({"host": "127.0.0.1", "port": self.port, "tls": "none"})
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unique_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("switchboard-smtp-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn input(to: &str) -> Value {
    json!({"to": to, "from": "Switchboard <noreply@example.com>", "subject": "Welcome", "text": "Hello"})
}

async fn send_with(vault: &Arc<Vault>, conn: Arc<ConnectionRef>, input: Value) -> Result<ActionOutput, ActionError> {
    tls();
    EmailSend::new(vault.clone()).allow_private(true).execute(&ctx(Duration::from_secs(10), Some(conn)), input).await
}

async fn send(credentials: Value, input: Value) -> Result<ActionOutput, ActionError> {
    let vault = vault();
    let conn = connection(&vault, "smtp", false, credentials);
    send_with(&vault, conn, input).await
}

/// The unfolded value of the first header `name` in a raw message's header section.
fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next()?;
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}

#[tokio::test]
async fn sends_text_and_html_as_alternatives_with_reply_to_and_a_stable_message_id() {
    let Some(server) = SmtpServer::start(&[]).await else {
        return;
    };
    let out = send(
        server.credentials(),
        json!({
            "to": "Ada Lovelace <ada@example.com>, \"Doe, Jane\" <jane@example.com>",
            "from": "Switchboard <noreply@example.com>",
            "subject": "Your quote",
            "text": "Plain words",
            "html": "<p>Rich words</p>",
            "reply_to": "Sales <sales@example.com>",
        }),
    )
    .await
    .unwrap();

    assert_eq!(out.output["message_id"], "<run_1.3@switchboard>");
    assert_eq!(out.output["accepted"], json!(["ada@example.com", "jane@example.com"]));
    assert_eq!(out.output["response"], "250 2.0.0 Ok: queued as 4242");
    assert_eq!(out.usage, vec![Usage { unit: "email".into(), quantity: 1 }]);

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m["mail_from"], "noreply@example.com");
    assert_eq!(m["rcpt_tos"], json!(["ada@example.com", "jane@example.com"]));
    let raw = m["data"].as_str().unwrap();
    assert_eq!(header(raw, "From").unwrap(), "Switchboard <noreply@example.com>");
    // lettre quotes display names with spaces and encodes one with a comma (RFC 2047).
    assert_eq!(header(raw, "To").unwrap(), "\"Ada Lovelace\" <ada@example.com>, =?utf-8?b?RG9lLCBKYW5l?= <jane@example.com>");
    assert_eq!(header(raw, "Subject").unwrap(), "Your quote");
    assert_eq!(header(raw, "Reply-To").unwrap(), "Sales <sales@example.com>");
    assert_eq!(header(raw, "Message-ID").unwrap(), "<run_1.3@switchboard>");
    assert!(header(raw, "Content-Type").unwrap().starts_with("multipart/alternative; boundary="), "{raw}");
    let plain = raw.find("Content-Type: text/plain; charset=utf-8").expect("a text/plain part");
    let html = raw.find("Content-Type: text/html; charset=utf-8").expect("a text/html part");
    assert!(plain < html, "plain text first, the preferred HTML last");
    assert!(raw.contains("Plain words") && raw.contains("<p>Rich words</p>"));
}

#[tokio::test]
async fn text_alone_is_text_plain_and_html_alone_is_text_html() {
    let Some(server) = SmtpServer::start(&[]).await else {
        return;
    };
    send(server.credentials(), input("ada@example.com")).await.unwrap();
    let html_only = json!({"to": "ada@example.com", "from": "noreply@example.com", "subject": "Hi", "text": "", "html": "<b>Hi</b>"});
    send(server.credentials(), html_only).await.unwrap();

    let messages = server.messages();
    let content_type = |i: usize| header(messages[i]["data"].as_str().unwrap(), "Content-Type").unwrap();
    assert_eq!(content_type(0), "text/plain; charset=utf-8");
    assert_eq!(content_type(1), "text/html; charset=utf-8", "an empty text counts as absent");
    assert!(header(messages[0]["data"].as_str().unwrap(), "Reply-To").is_none());
}

#[tokio::test]
async fn logs_in_with_username_and_password() {
    let Some(server) = SmtpServer::start(&["--user", "mailer", "--password", "s3cret-pw"]).await else {
        return;
    };
    let mut credentials = server.credentials();
    credentials["username"] = json!("mailer");
    credentials["password"] = json!("s3cret-pw");
    send(credentials, input("ada@example.com")).await.unwrap();
    assert_eq!(server.messages().len(), 1);

    // Without a login the server refuses the message: permanent, with its reply.
    let err = send(server.credentials(), input("ada@example.com")).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert_eq!(err.code, "smtp_530");
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn wrong_password_is_permanent_and_never_quoted() {
    let Some(server) = SmtpServer::start(&["--user", "mailer", "--password", "s3cret-pw"]).await else {
        return;
    };
    let mut credentials = server.credentials();
    credentials["username"] = json!("mailer");
    credentials["password"] = json!("wrong-hunter2");
    let err = send(credentials, input("ada@example.com")).await.unwrap_err();

    assert_eq!(err.class, FailureClass::Permanent);
    assert_eq!(err.code, "smtp_535");
    assert!(err.message.contains("during login") && err.message.contains("Authentication credentials invalid"), "{}", err.message);
    assert!(!format!("{err:?} {err}").contains("hunter2"));
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn a_busy_recipient_is_retryable() {
    let Some(server) = SmtpServer::start(&[]).await else {
        return;
    };
    let err = send(server.credentials(), input("busy@example.com")).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable);
    assert_eq!(err.code, "smtp_451");
    assert!(err.message.contains("4.3.0 Try again later"), "{}", err.message);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn an_unknown_recipient_is_permanent_with_the_servers_text() {
    let Some(server) = SmtpServer::start(&[]).await else {
        return;
    };
    let err = send(server.credentials(), input("ada@example.com, nobody@example.com")).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert_eq!(err.code, "smtp_550");
    assert!(err.message.contains("5.1.1 No such user"), "{}", err.message);
    assert!(server.messages().is_empty(), "one refused recipient fails the whole send");
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let err = send(json!({"host": "127.0.0.1", "port": closed_port(), "tls": "none"}), input("ada@example.com")).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable);
    assert_eq!(err.code, "connect_error");
    assert!(err.message.contains("before anything was sent"), "{}", err.message);
}

#[tokio::test]
async fn private_smtp_servers_are_refused_unless_the_operator_allows_them() {
    tls();
    let vault = vault();
    let conn = connection(&vault, "smtp", false, json!({"host": "127.0.0.1", "port": closed_port(), "tls": "none"}));
    let err = EmailSend::new(vault.clone()).execute(&ctx(Duration::from_secs(2), Some(conn.clone())), input("ada@example.com")).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, "address_not_allowed"), "{err:?}");
    // Allowed, the same connection gets as far as the (closed) port.
    let err = EmailSend::new(vault.clone()).allow_private(true).execute(&ctx(Duration::from_secs(2), Some(conn)), input("ada@example.com")).await.unwrap_err();
    assert_eq!(err.code, "connect_error");
}

#[tokio::test]
async fn a_server_that_never_greets_is_a_retryable_timeout() {
    // Accepts the TCP connection and then says nothing: nothing can have been sent.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(socket);
    });
    tls();
    let vault = vault();
    let conn = connection(&vault, "smtp", false, json!({"host": "127.0.0.1", "port": port, "tls": "none"}));
    let started = std::time::Instant::now();
    let err = EmailSend::new(vault.clone()).allow_private(true).execute(&ctx(Duration::from_secs(1), Some(conn)), input("ada@example.com")).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Retryable, "timeout"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the step's timeout");
    held.abort();
}

#[tokio::test]
async fn a_connection_lost_after_the_message_was_written_is_outcome_unknown() {
    let Some(server) = SmtpServer::start(&[]).await else {
        return;
    };
    let err = send(server.credentials(), input("drop@example.com")).await.unwrap_err();
    assert_eq!(err.class, FailureClass::OutcomeUnknown);
    assert_eq!(err.code, "transport_error");
}

#[tokio::test]
async fn implicit_tls_to_a_plain_server_is_retryable_and_sends_nothing() {
    let Some(server) = SmtpServer::start(&[]).await else {
        return;
    };
    let credentials = json!({"host": "127.0.0.1", "port": server.port, "tls": "implicit"});
    let err = send(credentials, input("ada@example.com")).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable, "{err:?}");
    assert!(!err.message.contains("Connection error: Connection error"), "each cause said once: {}", err.message);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn starttls_is_required_and_its_certificate_checked() {
    let Some(plain) = SmtpServer::start(&[]).await else {
        return;
    };
    let credentials = json!({"host": "localhost", "port": plain.port, "tls": "starttls"});
    let err = send(credentials, input("ada@example.com")).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent, "a server without STARTTLS is not used in clear: {err:?}");
    assert!(err.message.contains("STARTTLS"), "{}", err.message);
    assert!(plain.messages().is_empty());

    // A self-signed certificate (openssl generates it) is refused before anything is sent.
    let dir = unique_dir();
    let Some(tls_server) = SmtpServer::start(&["--starttls", dir.to_str().unwrap()]).await else {
        return;
    };
    let credentials = json!({"host": "localhost", "port": tls_server.port, "tls": "starttls"});
    let err = send(credentials, input("ada@example.com")).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable, "{err:?}");
    assert!(err.message.contains("during STARTTLS") && err.message.contains("certificate"), "{}", err.message);
    assert!(tls_server.messages().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sandbox_renders_without_opening_credentials_or_connecting() {
    let Some(server) = SmtpServer::start(&[]).await else {
        return;
    };
    let vault = vault();
    // Sandbox connections may hold no credentials at all.
    let conn = connection(&vault, "smtp", true, json!({}));
    let action = EmailSend::new(vault);
    let input = json!({
        "to": "Ada <ada@example.com>", "from": "noreply@example.com", "subject": "Hi",
        "html": "<b>Hi</b>", "reply_to": "sales@example.com",
    });
    let sent = action.sandbox(&ctx(Duration::from_secs(10), Some(conn)), &input).unwrap();

    assert_eq!(sent.to.as_deref(), Some("Ada <ada@example.com>"));
    assert_eq!(
        sent.rendered,
        json!({"from": "noreply@example.com", "to": "Ada <ada@example.com>", "subject": "Hi", "text": null, "html": "<b>Hi</b>", "reply_to": "sales@example.com"})
    );
    assert_eq!(sent.output, json!({"message_id": "<run_1.3@switchboard>", "sandbox": true}));
    assert_eq!(sent.usage, vec![Usage { unit: "email".into(), quantity: 1 }]);
    assert!(server.messages().is_empty());

    let err = action.sandbox(&ctx(Duration::from_secs(10), None), &json!({"to": "not an address", "from": "a@b.c", "subject": "x", "text": "x"}));
    assert_eq!(err.unwrap_err().code, "invalid_input");
}

#[tokio::test]
async fn no_connection_or_a_bad_rendered_address_is_permanent() {
    let action = EmailSend::new(vault());
    let err = action.execute(&ctx(Duration::from_secs(5), None), input("ada@example.com")).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, "missing_connection"));

    let err = send(json!({"host": "127.0.0.1", "port": closed_port(), "tls": "none"}), input("ada@@example.com")).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (FailureClass::Permanent, "invalid_input"));
    assert!(err.message.starts_with("to: "), "{}", err.message);
}

#[test]
fn literal_addresses_and_a_body_are_checked_at_save_time() {
    let action = EmailSend::new(vault());
    let problems = |input: Value| -> Vec<String> { DynAction::validate(&action, input.as_object().unwrap()).into_iter().map(|(path, _)| path).collect() };
    assert!(problems(input("Ada <ada@example.com>, bob@example.com")).is_empty());
    assert!(problems(json!({"to": "{{ trigger.email }}", "from": "{{ vars.sender }}", "subject": "x", "html": "{{ vars.body }}"})).is_empty());
    assert_eq!(problems(json!({"to": "ada@", "from": "Switchboard", "subject": "x", "reply_to": "a b", "text": "x"})), ["to", "from", "reply_to"]);
    assert_eq!(problems(json!({"to": "ada@example.com", "from": "a@b.c", "subject": "x"})), ["text"]);
    assert_eq!(problems(json!({"to": "ada@example.com", "from": "a@b.c", "subject": "x", "text": "", "html": null})), ["text"]);
}
