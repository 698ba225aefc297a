//! The six workflow templates (`templates/*.yaml`), end to end: each is enabled
//! through `POST /v1/templates/{slug}/enable` on sandbox connections, triggered by its CRM event,
//! driven through its delays and waits on a manual clock, and judged by exactly what lands in
//! the outbox (kind, recipient, rendered text) and which branch it took. Then test runs of all
//! six are compared with real runs of the same events, on a manual clock and in a real
//! `switchboard serve` process with one-second delays.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::crash::{free_port, server_log, start_with};
use crate::on_both_backends;
use crate::support::{TempDir, TestApp, TestDb, timeline};

const SECOND: i64 = 1_000;
const DAY: i64 = 86_400_000;

const BUSINESS: &str = "Studio Ada";
const SENDER: &str = "+15550001111";
const FROM_EMAIL: &str = "hello@studio-ada.example";

/// A lead as the CRM sends it in event payloads.
fn lead(id: &str, first_name: &str, last_name: &str, phone: &str) -> Value {
    json!({
        "id": id, "first_name": first_name, "last_name": last_name, "phone": phone,
        "email": format!("{}@example.com", first_name.to_lowercase()), "timezone": "Europe/Berlin",
    })
}

fn ada() -> Value {
    lead("L-ada", "Ada", "Lovelace", "+15557654321")
}

/// Creates a sandbox connection named `<provider>-sandbox` for each provider.
async fn sandbox_connections(app: &TestApp, key: &str, providers: &[&str]) {
    for provider in providers {
        let (status, body) =
            app.post_json("/v1/connections", key, &json!({ "provider": provider, "name": format!("{provider}-sandbox"), "sandbox": true })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

/// Enables a template; returns the created workflow.
async fn enable(app: &TestApp, key: &str, slug: &str, params: Value) -> Value {
    let (status, body) = app.post_json(&format!("/v1/templates/{slug}/enable"), key, &json!({ "params": params })).await;
    assert_eq!(status, StatusCode::CREATED, "{slug}: {body}");
    assert_eq!(body["enabled"], true, "{body}");
    body
}

/// The paths of a 422 answer's details, as a set.
fn problem_paths(body: &Value) -> BTreeSet<String> {
    body["error"]["details"].as_array().unwrap_or_else(|| panic!("no details in {body}")).iter().map(|d| d["path"].as_str().unwrap().to_string()).collect()
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| p.to_string()).collect()
}

/// Posts an app event; returns the runs it started.
async fn post_event(app: &TestApp, key: &str, event_type: &str, id: &str, data: Value) -> Vec<String> {
    let (status, body) = app.post_json("/v1/events", key, &json!({ "type": event_type, "id": id, "data": data })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["run_ids"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect()
}

/// Posts an event that must start exactly one run; returns it.
async fn start_one(app: &TestApp, key: &str, event_type: &str, id: &str, data: Value) -> String {
    let runs = post_event(app, key, event_type, id, data).await;
    assert_eq!(runs.len(), 1, "{event_type} {id} starts one run: {runs:?}");
    runs[0].clone()
}

/// The run's outbox messages, oldest first.
async fn outbox(app: &TestApp, key: &str, run_id: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/v1/outbox?run_id={run_id}&limit=200"), key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["messages"].as_array().unwrap().clone()
}

/// What a message is, without ids and times: `{kind, to, rendered}`.
fn essence(message: &Value) -> Value {
    json!({ "kind": message["kind"], "to": message["to"], "rendered": message["rendered"] })
}

fn kinds(messages: &[Value]) -> Vec<&str> {
    messages.iter().map(|m| m["kind"].as_str().unwrap()).collect()
}

fn text<'a>(message: &'a Value, field: &str) -> &'a str {
    message["rendered"][field].as_str().unwrap_or_else(|| panic!("no rendered.{field} in {message}"))
}

/// Asserts `haystack` contains every needle.
#[track_caller]
fn contains_all(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(haystack.contains(needle), "{needle:?} not in {haystack:?}");
    }
}

async fn run_status(app: &TestApp, key: &str, run_id: &str) -> String {
    app.run(key, run_id).await["status"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------------
// One test per template
// ---------------------------------------------------------------------------------------------

/// lead-nurture: every missing parameter and connection is named at once; then welcome SMS at
/// once, email after `first_wait` (default 1d, never early), CRM task after `second_wait` (2d).
async fn lead_nurture_texts_emails_then_tasks(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;

    // The catalogue shows the form: three required fields, two waits with defaults.
    let (status, template) = app.get("/v1/templates/lead-nurture", &key).await;
    assert_eq!(status, StatusCode::OK, "{template}");
    assert_eq!(template["trigger"]["event"], "lead.created");
    let form: Vec<(String, bool, Value)> = template["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["required"].as_bool().unwrap(), p.get("default").cloned().unwrap_or(Value::Null)))
        .collect();
    assert_eq!(
        form,
        [
            ("business_name".into(), true, Value::Null),
            ("sender".into(), true, Value::Null),
            ("from_email".into(), true, Value::Null),
            ("first_wait".into(), false, json!("1d")),
            ("second_wait".into(), false, json!("2d")),
        ]
    );
    assert_eq!(template["connections"], json!(["twilio", "smtp", "crm"]));

    // Nothing given, no connections: every required parameter and every provider is named
    // (the waits have defaults, so they are not).
    let (status, body) = app.post_json("/v1/templates/lead-nurture/enable", &key, &json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_template_params")), "{body}");
    assert_eq!(
        problem_paths(&body),
        set(&["params.business_name", "params.sender", "params.from_email", "connections.twilio", "connections.smtp", "connections.crm"])
    );
    // Wrong values are named too, each one; nothing was created.
    sandbox_connections(&app, &key, &["twilio", "smtp", "crm"]).await;
    let (status, body) = app
        .post_json(
            "/v1/templates/lead-nurture/enable",
            &key,
            &json!({ "params": { "business_name": BUSINESS, "sender": "555-1234", "from_email": "studio", "first_wait": "tomorrow" } }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(problem_paths(&body), set(&["params.sender", "params.from_email", "params.first_wait"]));
    assert_eq!(app.get("/v1/workflows", &key).await.1["workflows"], json!([]));

    let wf = enable(&app, &key, "lead-nurture", json!({ "business_name": BUSINESS, "sender": SENDER, "from_email": FROM_EMAIL })).await;
    assert_eq!(wf["trigger"]["event"], "lead.created");
    // The waits became literal durations (the defaults); each sending step got its connection.
    let delays: Vec<&Value> = wf["steps"].as_array().unwrap().iter().filter_map(|s| s.get("delay")).collect();
    assert_eq!(delays, [&json!("1d"), &json!("2d")], "{wf}");
    let connections: Vec<&str> = wf["steps"].as_array().unwrap().iter().filter_map(|s| s["connection"].as_str()).collect();
    assert_eq!(connections, ["twilio-sandbox", "smtp-sandbox", "crm-sandbox"], "{wf}");

    let run_id = start_one(&app, &key, "lead.created", "evt-lead-1", json!({ "lead": ada() })).await;
    app.drain().await;
    let messages = outbox(&app, &key, &run_id).await;
    assert_eq!(kinds(&messages), ["sms.send"], "only the welcome text goes out at once");
    let welcome = &messages[0];
    assert_eq!((welcome["to"].as_str(), text(welcome, "from")), (Some("+15557654321"), SENDER));
    assert_eq!(text(welcome, "body"), "Hi Ada, thanks for reaching out to Studio Ada! Any questions, just reply to this text. We'd love to hear from you.");
    assert_eq!(run_status(&app, &key, &run_id).await, "waiting");

    app.advance(DAY - SECOND).await;
    assert_eq!(outbox(&app, &key, &run_id).await.len(), 1, "the email never goes out early");
    app.advance(SECOND).await;
    let messages = outbox(&app, &key, &run_id).await;
    assert_eq!(kinds(&messages), ["sms.send", "email.send"]);
    let email = &messages[1];
    assert_eq!((email["to"].as_str(), text(email, "from"), text(email, "reply_to")), (Some("ada@example.com"), FROM_EMAIL, FROM_EMAIL));
    assert_eq!(text(email, "subject"), "Great to meet you, Ada");
    contains_all(text(email, "text"), &["Hi Ada,", "interest in Studio Ada", "The team at Studio Ada"]);
    assert!(!text(email, "text").contains("{{"), "every expression rendered: {email}");

    app.advance(2 * DAY - SECOND).await;
    assert_eq!(outbox(&app, &key, &run_id).await.len(), 2, "the task never comes early");
    app.advance(SECOND).await;
    let messages = outbox(&app, &key, &run_id).await;
    assert_eq!(kinds(&messages), ["sms.send", "email.send", "crm.create_task"]);
    let task = &messages[2];
    assert_eq!(task["to"], "L-ada");
    assert_eq!((task["rendered"]["method"].as_str(), task["rendered"]["path"].as_str()), (Some("POST"), Some("/tasks")));
    let body = &task["rendered"]["body"];
    assert_eq!(
        (body["title"].as_str(), body["lead_id"].as_str(), body["priority"].as_str()),
        (Some("Call Ada Lovelace (new lead)"), Some("L-ada"), Some("normal"))
    );
    contains_all(body["notes"].as_str().unwrap(), &["Ada", "+15557654321"]);
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        timeline(&run),
        ["welcome_text:succeeded", "wait_before_email:succeeded", "intro_email:succeeded", "wait_before_call:succeeded", "follow_up_task:succeeded"]
    );
}

/// payment-follow-up: thank-you email and "customer" stage at once; the upsell task after
/// `upsell_wait` (default 30d), not a second before.
async fn payment_follow_up_thanks_marks_customer_then_upsells(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    let (status, body) = app.post_json("/v1/templates/payment-follow-up/enable", &key, &json!({ "params": { "upsell_wait": "a month" } })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(problem_paths(&body), set(&["params.business_name", "params.from_email", "params.upsell_wait", "connections.smtp", "connections.crm"]));

    sandbox_connections(&app, &key, &["smtp", "crm"]).await;
    let wf = enable(&app, &key, "payment-follow-up", json!({ "business_name": BUSINESS, "from_email": FROM_EMAIL })).await;
    assert_eq!(wf["trigger"]["event"], "payment.received");
    let run_id =
        start_one(&app, &key, "payment.received", "pay-1", json!({ "lead": ada(), "payment": { "id": "P-1", "amount": 120, "currency": "USD" } })).await;
    app.drain().await;
    let messages = outbox(&app, &key, &run_id).await;
    assert_eq!(kinds(&messages), ["email.send", "crm.update_lead"]);
    let thanks = &messages[0];
    assert_eq!((thanks["to"].as_str(), text(thanks, "from")), (Some("ada@example.com"), FROM_EMAIL));
    assert_eq!(text(thanks, "subject"), "Thank you, Ada!");
    contains_all(text(thanks, "text"), &["Hi Ada,", "received your payment", "Studio Ada"]);
    assert_eq!(
        essence(&messages[1]),
        json!({ "kind": "crm.update_lead", "to": "L-ada",
        "rendered": { "method": "PATCH", "path": "/leads/L-ada", "body": { "fields": { "stage": "customer" } } } })
    );

    app.advance(30 * DAY - SECOND).await;
    assert_eq!(outbox(&app, &key, &run_id).await.len(), 2, "no upsell before 30 days");
    assert_eq!(run_status(&app, &key, &run_id).await, "waiting");
    app.advance(SECOND).await;
    let messages = outbox(&app, &key, &run_id).await;
    assert_eq!(kinds(&messages), ["email.send", "crm.update_lead", "crm.create_task"]);
    let task = &messages[2]["rendered"]["body"];
    assert_eq!((task["title"].as_str(), task["lead_id"].as_str()), (Some("Check in with Ada Lovelace about what's next"), Some("L-ada")));
    assert_eq!(run_status(&app, &key, &run_id).await, "succeeded");
}

/// appointment-confirmation: the confirmation text at once, the calendar event with the lead
/// invited, then the email with the details.
async fn appointment_confirmation_texts_books_and_emails(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    let (status, body) = app.post_json("/v1/templates/appointment-confirmation/enable", &key, &json!({ "params": {} })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        problem_paths(&body),
        set(&["params.business_name", "params.sender", "params.from_email", "params.address", "connections.twilio", "connections.google", "connections.smtp"])
    );
    sandbox_connections(&app, &key, &["twilio", "google", "smtp"]).await;
    let wf = enable(
        &app,
        &key,
        "appointment-confirmation",
        json!({ "business_name": BUSINESS, "sender": SENDER, "from_email": FROM_EMAIL, "address": "12 Loom Street" }),
    )
    .await;
    assert_eq!(wf["trigger"]["event"], "appointment.booked");
    let run_id = start_one(&app, &key, "appointment.booked", "appt-1", appointment()).await;
    app.drain().await;
    assert_eq!(run_status(&app, &key, &run_id).await, "succeeded");
    let messages = outbox(&app, &key, &run_id).await;
    assert_eq!(kinds(&messages), ["sms.send", "calendar.create_event", "email.send"]);
    assert_eq!(messages[0]["to"], "+15557654321");
    contains_all(text(&messages[0], "body"), &["Hi Ada", "Studio Ada", "2026-12-07T10:00:00", "America/New_York"]);
    assert_eq!(
        essence(&messages[1]),
        json!({ "kind": "calendar.create_event", "to": "primary", "rendered": { "calendar_id": "primary", "event": {
            "summary": "Studio Ada: Ada Lovelace", "description": "Booked through Switchboard. Lead L-ada, phone +15557654321.",
            "location": "12 Loom Street", "attendees": [{ "email": "ada@example.com" }],
            "start": { "dateTime": "2026-12-07T10:00:00", "timeZone": "America/New_York" },
            "end": { "dateTime": "2026-12-07T10:45:00", "timeZone": "America/New_York" } } } })
    );
    let email = &messages[2];
    assert_eq!((email["to"].as_str(), text(email, "subject")), (Some("ada@example.com"), "Your appointment with Studio Ada"));
    contains_all(text(email, "text"), &["Hi Ada,", "2026-12-07T10:00:00 to 2026-12-07T10:45:00 (America/New_York)", "Where: 12 Loom Street"]);
    let run = app.run(&key, &run_id).await;
    assert!(run["steps"][1]["output"]["id"].as_str().unwrap().len() == 52, "the sandbox answers the step's event id: {run}");
}

fn appointment() -> Value {
    json!({ "lead": ada(), "appointment": { "id": "A-1", "start": "2026-12-07T10:00:00", "end": "2026-12-07T10:45:00", "timezone": "America/New_York" } })
}

/// negative-feedback-alert: only a negative call starts it; Slack alert to the manager
/// channel, urgent task, apology email, in that order.
async fn negative_feedback_alerts_tasks_and_apologises(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    sandbox_connections(&app, &key, &["slack", "crm", "smtp"]).await;
    let (status, body) = app.post_json("/v1/templates/negative-feedback-alert/enable", &key, &json!({ "params": { "business_name": BUSINESS } })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(problem_paths(&body), set(&["params.manager_channel", "params.from_email"]));
    enable(&app, &key, "negative-feedback-alert", json!({ "business_name": BUSINESS, "manager_channel": "#managers", "from_email": FROM_EMAIL })).await;

    // A positive call, and one not analysed for sentiment, start nothing.
    let call = |sentiment: &str| json!({ "lead": ada(), "call": { "id": "C-1", "sentiment": sentiment, "duration": 312 } });
    assert_eq!(post_event(&app, &key, "call.analyzed", "call-positive", call("positive")).await, Vec::<String>::new());
    assert_eq!(post_event(&app, &key, "call.analyzed", "call-no-sentiment", json!({ "lead": ada(), "call": { "id": "C-0" } })).await, Vec::<String>::new());
    let run_id = start_one(&app, &key, "call.analyzed", "call-negative", call("negative")).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(timeline(&run), ["alert_manager:succeeded", "urgent_task:succeeded", "apology_email:succeeded"]);

    let messages = outbox(&app, &key, &run_id).await;
    assert_eq!(kinds(&messages), ["slack.post_message", "crm.create_task", "email.send"]);
    let alert = &messages[0];
    assert_eq!((alert["to"].as_str(), text(alert, "channel")), (Some("#managers"), "#managers"));
    contains_all(text(alert, "text"), &["Ada Lovelace", "unhappy", "+15557654321"]);
    let task = &messages[1]["rendered"]["body"];
    assert_eq!((task["priority"].as_str(), task["lead_id"].as_str()), (Some("urgent"), Some("L-ada")), "{task}");
    contains_all(task["title"].as_str().unwrap(), &["Ada Lovelace", "today"]);
    let apology = &messages[2];
    assert_eq!((apology["to"].as_str(), text(apology, "from")), (Some("ada@example.com"), FROM_EMAIL));
    assert_eq!(text(apology, "subject"), "We're sorry, Ada");
    contains_all(text(apology, "text"), &["Hi Ada,", "I'm sorry", "Someone from Studio Ada will call you"]);
    // The whole account's outbox holds nothing from the events that did not match.
    assert_eq!(app.get("/v1/outbox", &key).await.1["messages"].as_array().unwrap().len(), 3);
}

/// referral-request: only a payment from a lead whose sentiment is positive starts it; the
/// email with the credit goes out after `referral_wait` (default 7d).
async fn referral_request_waits_a_week_for_happy_payers(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    sandbox_connections(&app, &key, &["smtp"]).await;
    let (status, body) =
        app.post_json("/v1/templates/referral-request/enable", &key, &json!({ "params": { "business_name": BUSINESS, "from_email": FROM_EMAIL } })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(problem_paths(&body), set(&["params.referral_credit"]));
    let wf = enable(&app, &key, "referral-request", json!({ "business_name": BUSINESS, "from_email": FROM_EMAIL, "referral_credit": "$25" })).await;
    assert_eq!(wf["steps"][0]["delay"], "7d", "{wf}");

    let payment = |sentiment: Option<&str>| {
        let mut lead = ada();
        if let Some(s) = sentiment {
            lead["sentiment"] = json!(s);
        }
        json!({ "lead": lead, "payment": { "id": "P-1", "amount": 120, "currency": "USD" } })
    };
    assert_eq!(post_event(&app, &key, "payment.received", "pay-negative", payment(Some("negative"))).await, Vec::<String>::new());
    assert_eq!(post_event(&app, &key, "payment.received", "pay-unknown", payment(None)).await, Vec::<String>::new());
    let run_id = start_one(&app, &key, "payment.received", "pay-positive", payment(Some("positive"))).await;
    app.drain().await;
    assert_eq!(outbox(&app, &key, &run_id).await, Vec::<Value>::new(), "nothing before the week is out");
    app.advance(7 * DAY - SECOND).await;
    assert_eq!(outbox(&app, &key, &run_id).await, Vec::<Value>::new(), "nothing a second early");
    app.advance(SECOND).await;
    let messages = outbox(&app, &key, &run_id).await;
    assert_eq!(kinds(&messages), ["email.send"]);
    let email = &messages[0];
    assert_eq!((email["to"].as_str(), text(email, "from")), (Some("ada@example.com"), FROM_EMAIL));
    assert_eq!(text(email, "subject"), "Ada, know someone who'd love Studio Ada?");
    contains_all(text(email, "text"), &["Hi Ada,", "you both get $25 off", "The team at Studio Ada"]);
    assert_eq!(run_status(&app, &key, &run_id).await, "succeeded");
    assert_eq!(app.get("/v1/outbox", &key).await.1["messages"].as_array().unwrap().len(), 1);
}

/// lead-scoring: the score (the lead's, +10 for a referral, +10 for a budget) routes each lead:
/// above 80 to the senior rep, below 50 back to nurture, else to the standard rep.
async fn lead_scoring_routes_by_score(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    sandbox_connections(&app, &key, &["crm"]).await;
    enable(&app, &key, "lead-scoring", json!({ "senior_rep": "maria", "standard_rep": "sam" })).await;

    let qualified = |id: &str, extra: Value| {
        let mut lead = lead(id, "Ada", "Lovelace", "+15557654321");
        lead.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({ "lead": lead })
    };
    let senior = |score: i64| ("assign_senior", json!({ "assignee": "maria", "score": score }));
    let standard = |score: i64| ("assign_standard", json!({ "assignee": "sam", "score": score }));
    let nurture = |score: i64| ("start_nurture", json!({ "stage": "nurture", "score": score }));
    let cases = [
        ("L-90", json!({ "score": 90 }), senior(90)),
        ("L-65", json!({ "score": 65 }), standard(65)),
        ("L-30", json!({ "score": 30 }), nurture(30)),
        // Edges: exactly 80 and exactly 50 are the standard rep's.
        ("L-80", json!({ "score": 80 }), standard(80)),
        ("L-50", json!({ "score": 50 }), standard(50)),
        // Bonus points: a referral lifts 75 to 85; a budget lifts 45 to 55; no score counts 0.
        ("L-ref", json!({ "score": 75, "source": "referral" }), senior(85)),
        ("L-budget", json!({ "score": 45, "budget": 5000 }), standard(55)),
        ("L-none", json!({}), nurture(0)),
    ];
    let mut runs = Vec::new();
    for (id, extra, _) in &cases {
        runs.push(start_one(&app, &key, "lead.qualified", &format!("q-{id}"), qualified(id, extra.clone())).await);
    }
    app.drain().await;
    for ((id, _, (step, fields)), run_id) in cases.iter().zip(&runs) {
        let run = app.run(&key, run_id).await;
        assert_eq!(run["status"], "succeeded", "{id}: {run}");
        let end = match *step {
            "assign_senior" => vec!["senior_done:succeeded"],
            "start_nurture" => vec!["nurture_done:succeeded"],
            _ => vec![],
        };
        let expected: Vec<String> = ["score:succeeded".to_string(), "route:succeeded".into(), format!("{step}:succeeded")]
            .into_iter()
            .chain(end.into_iter().map(String::from))
            .collect();
        assert_eq!(timeline(&run), expected, "{id}");
        let messages = outbox(&app, &key, run_id).await;
        assert_eq!(messages.len(), 1, "{id}: exactly one CRM update: {messages:?}");
        assert_eq!(messages[0]["step_id"], *step, "{id}");
        assert_eq!(
            essence(&messages[0]),
            json!({ "kind": "crm.update_lead", "to": id, "rendered": { "method": "PATCH", "path": format!("/leads/{id}"), "body": { "fields": fields } } }),
            "{id}"
        );
    }
}

/// feedback-survey: a week after the purchase the survey text goes out; the answer (matched to
/// its lead) routes it: 2 alerts the manager, 3 ends quietly, 5 asks for a review; no answer in
/// 3 days ends it.
async fn feedback_survey_routes_by_rating(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    sandbox_connections(&app, &key, &["twilio", "slack"]).await;
    let review_url = "https://g.page/r/studio-ada/review";
    enable(&app, &key, "feedback-survey", json!({ "business_name": BUSINESS, "sender": SENDER, "manager_channel": "#managers", "review_url": review_url }))
        .await;

    let buyers = [
        ("L-ada", "Ada", "Lovelace", "+15557654321"),
        ("L-grace", "Grace", "Hopper", "+15557654322"),
        ("L-alan", "Alan", "Turing", "+15557654323"),
        ("L-edsger", "Edsger", "Dijkstra", "+15557654324"),
    ];
    let mut runs = Vec::new();
    for (id, first, last, phone) in buyers {
        let data = json!({ "lead": lead(id, first, last, phone), "purchase": { "id": format!("O-{id}"), "total": 89 } });
        runs.push(start_one(&app, &key, "purchase.completed", &format!("buy-{id}"), data).await);
    }
    app.drain().await;
    app.advance(7 * DAY - SECOND).await;
    for run in &runs {
        assert_eq!(outbox(&app, &key, run).await, Vec::<Value>::new(), "no survey before the week is out");
    }
    app.advance(SECOND).await;
    for (run, (_, first, _, phone)) in runs.iter().zip(buyers) {
        let messages = outbox(&app, &key, run).await;
        assert_eq!(kinds(&messages), ["sms.send"], "{first}");
        assert_eq!((messages[0]["to"].as_str(), text(&messages[0], "from")), (Some(phone), SENDER));
        assert_eq!(text(&messages[0], "body"), format!("Hi {first}, it's Studio Ada. How did we do? Reply with a number from 1 (not great) to 5 (loved it)."));
        let detail = app.run(&key, run).await;
        assert_eq!((detail["status"].as_str(), timeline(&detail).last().map(String::as_str)), (Some("waiting"), Some("answer:waiting")), "{detail}");
    }

    // An answer from someone else resumes nothing; then Ada rates 2, Grace "3" (as text), Alan 5.
    assert_eq!(
        post_event(&app, &key, "survey.answered", "ans-stranger", json!({ "lead": { "id": "L-stranger" }, "survey": { "rating": 1 } })).await,
        Vec::<String>::new()
    );
    app.drain().await;
    for run in &runs {
        assert_eq!(run_status(&app, &key, run).await, "waiting");
    }
    for (id, rating) in [("L-ada", json!(2)), ("L-grace", json!("3")), ("L-alan", json!(5))] {
        post_event(&app, &key, "survey.answered", &format!("ans-{id}"), json!({ "lead": { "id": id }, "survey": { "rating": rating } })).await;
    }
    app.drain().await;

    // Ada (2): the manager hears about it.
    let messages = outbox(&app, &key, &runs[0]).await;
    assert_eq!(kinds(&messages), ["sms.send", "slack.post_message"]);
    assert_eq!(messages[1]["to"], "#managers");
    contains_all(text(&messages[1], "text"), &["Ada Lovelace", "2/5", "+15557654321"]);
    let run = app.run(&key, &runs[0]).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(timeline(&run).ends_with(&["route:succeeded".into(), "alert_manager:succeeded".into(), "alert_done:succeeded".into()]), "{run}");
    assert_eq!(run["steps"].as_array().unwrap().iter().find(|s| s["id"] == "read_rating").unwrap()["output"]["rating"], 2);

    // Grace (3): nothing more; the run ends at the branch.
    let messages = outbox(&app, &key, &runs[1]).await;
    assert_eq!(kinds(&messages), ["sms.send"]);
    let run = app.run(&key, &runs[1]).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(timeline(&run)[3..], ["answer:succeeded", "read_rating:succeeded", "route:succeeded"]);
    assert_eq!(run["steps"][3]["output"]["event"]["data"]["survey"]["rating"], "3");

    // Alan (5): a review request with the link.
    let messages = outbox(&app, &key, &runs[2]).await;
    assert_eq!(kinds(&messages), ["sms.send", "sms.send"]);
    assert_eq!((messages[1]["to"].as_str(), text(&messages[1], "from")), (Some("+15557654323"), SENDER));
    assert_eq!(text(&messages[1], "body"), format!("Thank you, Alan! We're so glad you loved it. Would you leave Studio Ada a quick review? {review_url}"));
    assert_eq!(timeline(&app.run(&key, &runs[2]).await).last().map(String::as_str), Some("review_request:succeeded"));

    // Edsger never answers: after 3 days the run ends with only the survey sent.
    app.advance(3 * DAY - SECOND).await;
    assert_eq!(run_status(&app, &key, &runs[3]).await, "waiting");
    app.advance(SECOND).await;
    let run = app.run(&key, &runs[3]).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(timeline(&run)[3..], ["answer:succeeded"], "{run}");
    assert_eq!(run["steps"][3]["output"]["timed_out"], true, "{run}");
    assert_eq!(kinds(&outbox(&app, &key, &runs[3]).await), ["sms.send"]);
    // A late answer changes nothing.
    post_event(&app, &key, "survey.answered", "ans-late", json!({ "lead": { "id": "L-edsger" }, "survey": { "rating": 1 } })).await;
    app.drain().await;
    assert_eq!(kinds(&outbox(&app, &key, &runs[3]).await), ["sms.send"]);
}

on_both_backends!(
    appointment_confirmation_texts_books_and_emails,
    lead_nurture_texts_emails_then_tasks,
    payment_follow_up_thanks_marks_customer_then_upsells,
    negative_feedback_alerts_tasks_and_apologises,
    referral_request_waits_a_week_for_happy_payers,
    lead_scoring_routes_by_score,
    feedback_survey_routes_by_rating,
);

// ---------------------------------------------------------------------------------------------
// Test runs and real runs take the same path
// ---------------------------------------------------------------------------------------------

/// One case: a template, its parameters (one-second delays), the event that triggers it.
struct Case {
    slug: &'static str,
    params: Value,
    event_type: &'static str,
    event: Value,
}

/// The six templates with short delays, and for lead-scoring one event per branch.
fn cases() -> Vec<Case> {
    let a = ada();
    let with = |extra: Value| {
        let mut l = ada();
        l.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        l
    };
    let scoring = |score: i64| Case {
        slug: "lead-scoring",
        params: json!({ "senior_rep": "maria", "standard_rep": "sam" }),
        event_type: "lead.qualified",
        event: json!({ "lead": with(json!({ "score": score })) }),
    };
    vec![
        Case {
            slug: "lead-nurture",
            params: json!({ "business_name": BUSINESS, "sender": SENDER, "from_email": FROM_EMAIL, "first_wait": "1s", "second_wait": "1s" }),
            event_type: "lead.created",
            event: json!({ "lead": a }),
        },
        Case {
            slug: "appointment-confirmation",
            params: json!({ "business_name": BUSINESS, "sender": SENDER, "from_email": FROM_EMAIL, "address": "12 Loom Street" }),
            event_type: "appointment.booked",
            event: appointment(),
        },
        Case {
            slug: "payment-follow-up",
            params: json!({ "business_name": BUSINESS, "from_email": FROM_EMAIL, "upsell_wait": "1s" }),
            event_type: "payment.received",
            event: json!({ "lead": with(json!({ "sentiment": "neutral" })), "payment": { "id": "P-1", "amount": 120, "currency": "USD" } }),
        },
        Case {
            slug: "negative-feedback-alert",
            params: json!({ "business_name": BUSINESS, "manager_channel": "#managers", "from_email": FROM_EMAIL }),
            event_type: "call.analyzed",
            event: json!({ "lead": a, "call": { "id": "C-1", "sentiment": "negative" } }),
        },
        Case {
            slug: "referral-request",
            params: json!({ "business_name": BUSINESS, "from_email": FROM_EMAIL, "referral_credit": "$25", "referral_wait": "1s" }),
            event_type: "payment.received",
            event: json!({ "lead": with(json!({ "sentiment": "positive" })), "payment": { "id": "P-2", "amount": 80, "currency": "USD" } }),
        },
        scoring(90),
        scoring(65),
        scoring(30),
        Case {
            slug: "feedback-survey",
            params: json!({ "business_name": BUSINESS, "sender": SENDER, "manager_channel": "#managers",
                "review_url": "https://g.page/r/studio-ada/review", "survey_wait": "1s", "answer_window": "1s" }),
            event_type: "purchase.completed",
            event: json!({ "lead": a, "purchase": { "id": "O-1", "total": 89 } }),
        },
    ]
}

/// The providers each template sends through, from the catalogue.
async fn providers(app: &TestApp, key: &str, slug: &str) -> Vec<String> {
    let (status, t) = app.get(&format!("/v1/templates/{slug}"), key).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    t["connections"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
}

/// For every template (and every lead-scoring branch): a test run's answer holds exactly what
/// the real run of the same event puts in the outbox, in the same order, and both runs take the
/// same steps. Each case gets its own account, so one event starts exactly one real run.
async fn six_templates_test_runs_match_real_runs(db: TestDb) {
    let app = TestApp::new(db).await;
    for (n, case) in cases().into_iter().enumerate() {
        let (_, key) = app.account(&format!("studio {n}")).await;
        let providers = providers(&app, &key, case.slug).await;
        sandbox_connections(&app, &key, &providers.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let wf = enable(&app, &key, case.slug, case.params.clone()).await;
        let id = wf["id"].as_str().unwrap();

        let (status, answer) = app.post_json(&format!("/v1/workflows/{id}/test"), &key, &json!({ "event": case.event })).await;
        assert_eq!(status, StatusCode::OK, "{}: {answer}", case.slug);
        let test_run = &answer["run"];
        assert_eq!((test_run["status"].as_str(), test_run["test"].as_bool()), (Some("succeeded"), Some(true)), "{}: {answer}", case.slug);
        let test_outbox: Vec<Value> = answer["outbox"].as_array().unwrap().iter().map(essence).collect();
        assert!(!test_outbox.is_empty(), "{}: the test run sends something", case.slug);
        assert!(answer["outbox"].as_array().unwrap().iter().all(|m| m["test"] == true && m["run_id"] == test_run["id"]), "{answer}");

        let run_id = start_one(&app, &key, case.event_type, &format!("real-{n}"), case.event.clone()).await;
        // Real time: every delay and the survey's answer window are a second long.
        app.drain().await;
        for _ in 0..10 {
            app.advance(SECOND).await;
        }
        let real_run = app.run(&key, &run_id).await;
        assert_eq!((real_run["status"].as_str(), real_run["test"].as_bool()), (Some("succeeded"), Some(false)), "{}: {real_run}", case.slug);
        let real_outbox: Vec<Value> = outbox(&app, &key, &run_id).await.iter().map(essence).collect();
        assert_eq!(test_outbox, real_outbox, "{}: the test run previews exactly the real run's messages", case.slug);
        assert_eq!(timeline(test_run), timeline(&real_run), "{}: the same path", case.slug);
        // Only the real run is billed (its start; sandbox sends are free).
        assert_eq!(test_run["usage"], json!([]), "{}", case.slug);
    }
}

on_both_backends!(six_templates_test_runs_match_real_runs);

// ---------------------------------------------------------------------------------------------
// The same six in a real process, with real one-second delays
// ---------------------------------------------------------------------------------------------

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// Milliseconds since the epoch of an API time (`2027-01-15T08:00:00.123Z`, always UTC with
/// milliseconds).
fn epoch_ms(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    let n = |range: std::ops::Range<usize>| -> i64 { s[range].parse().unwrap_or_else(|_| panic!("not a time: {s}")) };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + n(11..13)) * 60 + n(14..16)) * 60_000 + n(17..19) * 1000 + n(20..23)
}

/// All six templates in one account of a real `switchboard serve` (one payment starts both
/// payment templates): each real run, with its one-second delays really waited, sends exactly
/// what the test run of the same event previewed, and takes at least as long as its delays.
async fn six_templates_run_for_real_with_one_second_delays(db: TestDb) {
    let t = 1_800_000_123_456;
    assert_eq!(epoch_ms(&json!(switchboard_runtime::clock::to_rfc3339(t))), t);
    let data = TempDir::new();
    let server = start_with(&db.url, &data, free_port(), &[]).await;
    let http = reqwest::Client::new();
    let key = server.account_key(&http, "studio").await;
    let c = Client { http, base: server.base.clone(), key };
    for provider in ["twilio", "smtp", "slack", "crm", "google"] {
        let (status, body) = c.post("/v1/connections", &json!({ "provider": provider, "name": format!("{provider}-sandbox"), "sandbox": true })).await;
        assert_eq!(status, 201, "{body}");
    }
    let mut workflows = std::collections::BTreeMap::new();
    for case in cases() {
        if workflows.contains_key(case.slug) {
            continue;
        }
        let (status, wf) = c.post(&format!("/v1/templates/{}/enable", case.slug), &json!({ "params": case.params })).await;
        assert_eq!(status, 201, "{}: {wf}", case.slug);
        workflows.insert(case.slug, wf["id"].as_str().unwrap().to_string());
    }

    // Start every real run first (they wait in parallel), then compare each with a test run.
    let mut started = Vec::new();
    for (n, case) in cases().into_iter().enumerate() {
        let (status, body) = c.post("/v1/events", &json!({ "type": case.event_type, "id": format!("real-{n}"), "data": case.event })).await;
        assert_eq!(status, 202, "{body}");
        let workflow_id = &workflows[case.slug];
        // The run of this case's workflow (a payment also starts the other payment template).
        let mut mine = Vec::new();
        for run_id in body["run_ids"].as_array().unwrap() {
            let run = c.get(&format!("/v1/runs/{}", run_id.as_str().unwrap())).await;
            if &run["workflow_id"] == workflow_id {
                mine.push(run_id.as_str().unwrap().to_string());
            }
        }
        assert_eq!(mine.len(), 1, "{}: one run of its workflow: {body}", case.slug);
        started.push((case, mine.remove(0)));
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    for (case, run_id) in &started {
        let run = loop {
            let run = c.get(&format!("/v1/runs/{run_id}")).await;
            if ["succeeded", "failed", "cancelled"].contains(&run["status"].as_str().unwrap()) {
                break run;
            }
            assert!(Instant::now() < deadline, "{}: run did not finish: {run}\n{}", case.slug, server_log(&data));
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(run["status"], "succeeded", "{}: {run}", case.slug);
        // The delays were really waited: a run lasts at least the sum of its one-second waits.
        let waits = run["steps"].as_array().unwrap().iter().filter(|s| s["id"].as_str().unwrap().starts_with("wait") || s["id"] == "answer").count() as i64;
        let took = epoch_ms(&run["finished_at"]) - epoch_ms(&run["started_at"]);
        assert!(took >= waits * 1000 - 10, "{}: {waits} one-second waits took {took} ms: {run}", case.slug);
        let real_outbox: Vec<Value> =
            c.get(&format!("/v1/outbox?run_id={run_id}&limit=200")).await["messages"].as_array().unwrap().iter().map(essence).collect();
        assert!(!real_outbox.is_empty(), "{}", case.slug);

        let (status, answer) = c.post(&format!("/v1/workflows/{}/test", workflows[case.slug]), &json!({ "event": case.event })).await;
        assert_eq!(status, 200, "{}: {answer}", case.slug);
        assert_eq!(answer["run"]["status"], "succeeded", "{}: {answer}", case.slug);
        // The test run's delays were fast-forwarded; the real run's were not.
        let fast = |run: &Value| -> Vec<bool> {
            run["steps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["output"].get("waited_until").is_some())
                .map(|s| s["output"]["fast_forwarded"] == true)
                .collect()
        };
        assert!(fast(&answer["run"]).iter().all(|f| *f) && fast(&run).iter().all(|f| !*f), "{}: {answer} {run}", case.slug);
        assert_eq!(fast(&answer["run"]).len(), fast(&run).len(), "{}", case.slug);
        let test_outbox: Vec<Value> = answer["outbox"].as_array().unwrap().iter().map(essence).collect();
        assert_eq!(test_outbox, real_outbox, "{}: the test run previews exactly what the real run sent", case.slug);
        assert_eq!(timeline(&answer["run"]), timeline(&run), "{}: the same path", case.slug);
    }
    let mut server = server;
    server.child.start_kill().unwrap();
    let _ = server.child.wait().await;
}

on_both_backends!(six_templates_run_for_real_with_one_second_delays);
