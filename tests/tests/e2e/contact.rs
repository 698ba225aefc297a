//! Contact rules end to end: quiet hours in the lead's timezone (deferred durably, DST-correct,
//! ignored where a step says so, fast-forwarded in test runs, across a SIGKILL of a real
//! `serve`), local-time delays, and opt-outs — from Twilio's signed inbound STOP/START, from a
//! 21610 answer, and from the CRM — honoured by `sms.send` and `voice.call`, including against
//! sends racing the opt-out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use switchboard_integrations::twilio::sign;
use switchboard_runtime::engine::EngineConfig;
use wiremock::matchers::{body_string_contains, method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::on_both_backends;
use crate::support::{TempDir, TestApp, TestDb, actions_config, timeline};
use crate::voice::{PUBLIC, SID, TOKEN, signed, twilio_post};

/// The Messages resource Twilio answers a create with (201).
fn twilio_message(req: &Request) -> ResponseTemplate {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&req.body).unwrap();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    ResponseTemplate::new(201).set_body_json(json!({
        "account_sid": SID, "api_version": "2010-04-01", "body": field("Body"), "direction": "outbound-api",
        "error_code": null, "error_message": null, "from": field("From"), "messaging_service_sid": null, "num_media": "0",
        "num_segments": "1", "price": null, "sid": format!("SM{}", uuid::Uuid::new_v4().simple()), "status": "queued", "to": field("To")
    }))
}

/// A fake Twilio: messages to `+15559990000` answer 21610 (the number replied STOP to Twilio),
/// other messages are accepted, calls are created.
async fn fake_twilio(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Messages\.json$"))
        .and(body_string_contains("To=%2B15559990000"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21610, "message": "Attempt to send to unsubscribed recipient", "more_info": "https://www.twilio.com/docs/errors/21610", "status": 400
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Messages\.json$"))
        .respond_with(move |req: &Request| twilio_message(req).set_delay(delay))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Calls\.json$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "sid": "CA11112222333344445555666677778888", "account_sid": SID, "status": "queued", "direction": "outbound-api"
        })))
        .mount(&server)
        .await;
    server
}

/// How many messages and calls the fake Twilio was asked to create.
async fn sent(twilio: &MockServer) -> (usize, usize) {
    let requests = twilio.received_requests().await.unwrap();
    let count = |suffix: &str| requests.iter().filter(|r| r.url.path().ends_with(suffix)).count();
    (count("/Messages.json"), count("/Calls.json"))
}

async fn app_with(db: TestDb, twilio: &MockServer) -> TestApp {
    let mut config = actions_config();
    config.api_bases.set("twilio", twilio.uri());
    TestApp::build(db, EngineConfig::default(), config, None, None).await
}

async fn connection(app: &TestApp, key: &str, sandbox: bool) {
    let body = json!({ "provider": "twilio", "name": "main", "sandbox": sandbox, "credentials": { "account_sid": SID, "auth_token": TOKEN } });
    let (status, body) = app.post_json("/v1/connections", key, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn ms(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
}

/// Moves the test clock to `text` (RFC 3339; never backwards), running what falls due.
async fn advance_to(app: &TestApp, text: &str) {
    let delta = ms(text) - app.now();
    assert!(delta >= 0, "the clock only moves forward");
    app.advance(delta).await;
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A text, then a log line.
fn text_workflow(contact_rules: Option<&str>) -> Value {
    let mut sms = json!({ "id": "sms", "action": "sms.send",
        "input": { "to": "{{ event.lead.phone }}", "from": "+15550001111", "body": "Hi {{ event.lead.first_name }}!" } });
    if let Some(rule) = contact_rules {
        sms["contact_rules"] = json!(rule);
    }
    json!({ "name": "welcome", "trigger": { "manual": {} }, "steps": [sms, { "id": "after", "action": "log", "input": { "message": "done" } }] })
}

fn lead(phone: &str, timezone: Option<&str>) -> Value {
    let mut lead = json!({ "first_name": "Anna", "phone": phone });
    if let Some(tz) = timezone {
        lead["timezone"] = json!(tz);
    }
    json!({ "lead": lead })
}

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no step {id} in {run}"))
}

async fn outbox_len(app: &TestApp, key: &str) -> usize {
    app.get("/v1/outbox", key).await.1["messages"].as_array().map_or(0, Vec::len)
}

/// A lead in Los Angeles who came in at 6 a.m. New York time is texted at 8 a.m. Pacific, not
/// at 3; the deferral is durable, shown in the output and the timeline, and never early. A lead
/// without a timezone is read in the account's; `contact_rules: ignore` sends at once and says
/// so; a test run shows the deferral, fast-forwarded.
async fn quiet_hours_wait_for_the_leads_morning(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    connection(&app, &key, true).await;
    // 2027-01-15 11:00 UTC: 06:00 in New York, 03:00 in Los Angeles.
    advance_to(&app, "2027-01-15T11:00:00Z").await;
    let (status, rules) = app.get("/v1/contact-rules", &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rules, json!({ "quiet_hours": { "start": "21:00", "end": "08:00", "days_off": [] }, "applies_to": ["sms.send", "voice.call"] }));

    let wf = app.workflow(&key, &text_workflow(None)).await;
    let id = wf["id"].as_str().unwrap();
    let run_id = app.start(&key, id, &lead("+15552223333", Some("America/Los_Angeles"))).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "waiting", "{run}");
    let sms = step(&run, "sms");
    assert_eq!(sms["status"], "waiting");
    assert_eq!(sms["output"], json!({ "deferred": "quiet_hours", "until": "2027-01-15T16:00:00.000Z", "timezone": "America/Los_Angeles" }));
    assert_eq!(sms["due_at"], "2027-01-15T16:00:00.000Z", "08:00 PST");
    assert_eq!(sms["contact_rules"]["quiet_hours"], "deferred");
    assert_eq!(outbox_len(&app, &key).await, 0, "nothing sent at 3 a.m.");

    advance_to(&app, "2027-01-15T15:59:59.999Z").await;
    assert_eq!(outbox_len(&app, &key).await, 0, "never early");
    app.advance(1).await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["sms:succeeded", "after:succeeded"], "{run}");
    assert_eq!(step(&run, "sms")["finished_at"], "2027-01-15T16:00:00.000Z");
    assert_eq!(
        step(&run, "sms")["contact_rules"],
        json!({ "quiet_hours": "deferred", "until": "2027-01-15T16:00:00.000Z", "timezone": "America/Los_Angeles" })
    );
    assert_eq!(outbox_len(&app, &key).await, 1, "sent once");

    // 16:00 UTC is 08:00 in LA and 11:00 in New York: a New York lead, and one without a
    // timezone (the account's, UTC: 16:00) are texted at once.
    for zone in [Some("America/New_York"), None, Some("Not/AZone")] {
        let run_id = app.start(&key, id, &lead("+15552223333", zone)).await;
        app.drain().await;
        assert_eq!(timeline(&app.run(&key, &run_id).await), ["sms:succeeded", "after:succeeded"], "{zone:?}");
    }

    // 2027-01-16 05:00 UTC: 21:00 in LA. `contact_rules: ignore` sends and says so.
    advance_to(&app, "2027-01-16T05:00:00Z").await;
    let asked = app.workflow(&key, &text_workflow(Some("ignore"))).await;
    let run_id = app.start(&key, asked["id"].as_str().unwrap(), &lead("+15552223333", Some("America/Los_Angeles"))).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["sms:succeeded", "after:succeeded"]);
    assert_eq!(
        step(&run, "sms")["contact_rules"],
        json!({ "quiet_hours": "ignored", "timezone": "America/Los_Angeles", "would_wait_until": "2027-01-16T16:00:00.000Z" })
    );

    // A test run shows the deferral in its fast-forwarded timeline, and sends (to the outbox).
    let (status, answer) =
        app.post_json(&format!("/v1/workflows/{id}/test"), &key, &json!({ "event": lead("+15552223333", Some("America/Los_Angeles")) })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(timeline(&answer["run"]), ["sms:succeeded", "after:succeeded"], "{answer}");
    assert_eq!(
        step(&answer["run"], "sms")["contact_rules"],
        json!({ "quiet_hours": "deferred", "until": "2027-01-16T16:00:00.000Z", "timezone": "America/Los_Angeles", "fast_forwarded": true })
    );
    assert_eq!(answer["outbox"].as_array().unwrap().len(), 1);

    // The account's own rules: texts only, a later evening, Sundays off. 2027-01-16 is a
    // Saturday; 05:00 UTC is Friday 21:00 in LA: allowed now.
    let body = json!({ "quiet_hours": { "start": "22:00", "end": "09:00", "days_off": ["sun"] }, "applies_to": ["sms.send"] });
    let (status, rules) = app.call("PUT", "/v1/contact-rules", Some(&key), Some("application/json"), body.to_string()).await;
    assert_eq!((status, &rules), (StatusCode::OK, &body));
    let run_id = app.start(&key, id, &lead("+15552223333", Some("America/Los_Angeles"))).await;
    app.drain().await;
    assert_eq!(timeline(&app.run(&key, &run_id).await), ["sms:succeeded", "after:succeeded"]);
    // Saturday 23:00 in LA → Monday 09:00 (Sunday is off).
    advance_to(&app, "2027-01-17T07:00:00Z").await;
    let run_id = app.start(&key, id, &lead("+15552223333", Some("America/Los_Angeles"))).await;
    app.drain().await;
    assert_eq!(step(&app.run(&key, &run_id).await, "sms")["due_at"], "2027-01-18T17:00:00.000Z");

    // Bad rules: 422 naming each problem, nothing changed; another account keeps the defaults.
    let bad = json!({ "quiet_hours": { "start": "9pm", "end": "08:00", "days_off": ["funday"] }, "applies_to": ["fax.send"], "x": 1 });
    let (status, body) = app.call("PUT", "/v1/contact-rules", Some(&key), Some("application/json"), bad.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let paths: Vec<&str> = body["error"]["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["x", "quiet_hours.start", "quiet_hours.days_off[0]"], "{body}");
    let unknown = json!({ "applies_to": ["fax.send"] });
    let (status, body) = app.call("PUT", "/v1/contact-rules", Some(&key), Some("application/json"), unknown.to_string()).await;
    assert_eq!((status, body["error"]["details"][0]["path"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("applies_to[0]")), "{body}");
    assert_eq!(app.get("/v1/contact-rules", &key).await.1, rules);
    let (_, other) = app.account("other").await;
    assert_eq!(app.get("/v1/contact-rules", &other).await.1["quiet_hours"]["start"], "21:00");
}

/// America/New_York across both DST changes of 2027: a step due at "02:10" on the
/// spring-forward night (a time that does not exist) is deferred to 08:00 EDT; a
/// `delay: {at: "01:30"}` on the fall-back night (a time that happens twice) fires once.
async fn new_york_daylight_saving_nights(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    connection(&app, &key, true).await;
    let wf = app.workflow(&key, &text_workflow(None)).await;
    let id = wf["id"].as_str().unwrap().to_owned();

    // 2027-03-14 07:10 UTC: the clocks jumped from 02:00 EST to 03:00 EDT at 07:00 UTC, so
    // this is what "02:10" became (03:10 EDT).
    advance_to(&app, "2027-03-14T07:10:00Z").await;
    let run_id = app.start(&key, &id, &lead("+15552223333", Some("America/New_York"))).await;
    app.drain().await;
    let sms = step(&app.run(&key, &run_id).await, "sms").clone();
    assert_eq!(sms["output"]["until"], "2027-03-14T12:00:00.000Z", "08:00 EDT: {sms}");
    advance_to(&app, "2027-03-14T12:00:00Z").await;
    assert_eq!(timeline(&app.run(&key, &run_id).await), ["sms:succeeded", "after:succeeded"]);

    // The fall-back night, 2027-11-07: 01:30 EDT is 05:30 UTC, 01:30 EST is 06:30 UTC.
    let at = json!({ "name": "at half past one", "trigger": { "manual": {} }, "steps": [
        { "id": "wait", "delay": { "at": "01:30", "timezone": "{{ event.lead.timezone }}" } },
        { "id": "after", "action": "log", "input": { "message": "fired" } }
    ] });
    let at = app.workflow(&key, &at).await;
    let at_id = at["id"].as_str().unwrap();
    advance_to(&app, "2027-11-07T04:00:00Z").await; // 00:00 EDT
    let first = app.start(&key, at_id, &lead("+15552223333", Some("America/New_York"))).await;
    app.drain().await;
    let wait = step(&app.run(&key, &first).await, "wait").clone();
    assert_eq!(wait["output"], json!({ "until": "2027-11-07T05:30:00.000Z", "timezone": "America/New_York" }));
    advance_to(&app, "2027-11-07T05:30:00Z").await; // 01:30 EDT
    advance_to(&app, "2027-11-07T05:45:00Z").await; // 01:45 EDT, after the first 01:30
    let run = app.run(&key, &first).await;
    assert_eq!(timeline(&run), ["wait:succeeded", "after:succeeded"], "fired at the first 01:30: {run}");
    assert_eq!(step(&run, "wait")["finished_at"], "2027-11-07T05:30:00.000Z");
    // Started between the two 01:30s, a delay waits for tomorrow's, not tonight's second one.
    let second = app.start(&key, at_id, &lead("+15552223333", Some("America/New_York"))).await;
    app.drain().await;
    assert_eq!(step(&app.run(&key, &second).await, "wait")["output"]["until"], "2027-11-08T06:30:00.000Z");
    advance_to(&app, "2027-11-07T07:00:00Z").await; // past the second 01:30 (06:30 UTC)
    assert_eq!(timeline(&app.run(&key, &first).await), ["wait:succeeded", "after:succeeded"], "fired once");
    assert_eq!(app.run(&key, &second).await["status"], "waiting");
    // A literal zone is checked when saving; without one, the account's.
    let bad = json!({ "name": "x", "trigger": { "manual": {} }, "steps": [{ "id": "w", "delay": { "at": "25:00", "timezone": "Mars/Base" } }] });
    let (status, body) = app.post_json("/v1/workflows", &key, &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let paths: Vec<&str> = body["error"]["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["steps[0].delay.at", "steps[0].delay.timezone"], "{body}");
    let bad =
        json!({ "name": "x", "trigger": { "manual": {} }, "steps": [{ "id": "s", "action": "log", "input": { "message": "m" }, "contact_rules": "never" }] });
    let (status, body) = app.post_json("/v1/workflows", &key, &bad).await;
    assert_eq!((status, body["error"]["details"][0]["path"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("steps[0].contact_rules")), "{body}");
}

/// A text, a call, then a log line.
fn text_and_call_workflow() -> Value {
    json!({ "name": "reach out", "trigger": { "manual": {} }, "steps": [
        { "id": "sms", "action": "sms.send", "input": { "to": "{{ event.lead.phone }}", "from": "+15550001111", "body": "Hi!" } },
        { "id": "call", "action": "voice.call", "input": { "to": "{{ event.lead.phone }}", "from": "+15550001111", "script": [{ "say": "Hello" }] } },
        { "id": "after", "action": "log", "input": { "message": "{{ if \"skipped\" in steps.sms.output { steps.sms.output.skipped } else { \"sent\" } }}" } }
    ] })
}

fn inbound(account: &str, from: &str, body: &str) -> (String, Vec<(&'static str, String)>) {
    let path = format!("/callbacks/twilio/messages/{account}");
    let form = vec![
        ("AccountSid", SID.to_owned()),
        ("MessageSid", format!("SM{}", uuid::Uuid::new_v4().simple())),
        ("From", from.to_owned()),
        ("To", "+15550001111".to_owned()),
        ("Body", body.to_owned()),
        ("NumMedia", "0".to_owned()),
    ];
    (path, form)
}

async fn reply(app: &TestApp, account: &str, from: &str, body: &str) -> (StatusCode, String) {
    let (path, form) = inbound(account, from, body);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    signed(app, &path, &form).await
}

/// Runs what is due, past the vendor rate limits (one text a second per sender, one call a
/// second per connection).
async fn settle(app: &TestApp) {
    for _ in 0..3 {
        app.advance(1_100).await;
    }
}

/// A run's ledger rows for sends (its `workflow_run` fee aside).
fn sends_billed(run: &Value) -> usize {
    run["usage"].as_array().unwrap().iter().filter(|u| u["unit"] != "workflow_run").count()
}

async fn opt_outs(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, body) = app.get("/v1/opt-outs", key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["opt_outs"].as_array().unwrap().clone()
}

/// An inbound signed STOP opts the number out: the workflow's SMS and call are skipped, nothing
/// reaches Twilio, nothing is billed, the run goes on. START resumes texting. A forged signature
/// changes nothing. Twilio's 21610 records the opt-out and skips the step. The CRM manages
/// opt-outs per channel; another account's are its own.
async fn stop_start_and_21610(db: TestDb) {
    let twilio = fake_twilio(Duration::ZERO).await;
    let app = app_with(db, &twilio).await;
    let (account, key) = app.account("studio").await;
    connection(&app, &key, false).await;
    advance_to(&app, "2027-01-15T15:00:00Z").await; // 15:00 UTC: no quiet hours in the way
    let wf = app.workflow(&key, &text_and_call_workflow()).await;
    let id = wf["id"].as_str().unwrap().to_owned();
    let phone = "+15552223333";

    // A forged STOP: 403, nothing recorded. A STOP to an unknown account: 404.
    let (path, form) = inbound(&account, phone, "STOP");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let pairs: Vec<(String, String)> = form.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let forged = sign("not-the-token", &format!("{PUBLIC}{path}"), &pairs);
    assert_eq!(twilio_post(&app, &path, &form, Some(forged)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(twilio_post(&app, &path, &form, None).await.0, StatusCode::FORBIDDEN);
    let other_url = sign(TOKEN, &format!("{PUBLIC}/callbacks/twilio/messages/someone-else"), &pairs);
    assert_eq!(twilio_post(&app, &path, &form, Some(other_url)).await.0, StatusCode::FORBIDDEN, "signed for another URL");
    assert_eq!(signed(&app, "/callbacks/twilio/messages/nope", &form).await.0, StatusCode::NOT_FOUND);
    assert_eq!(opt_outs(&app, &key).await, Vec::<Value>::new());

    // A workflow that reacts to inbound texts.
    let replies = json!({ "name": "replies", "trigger": { "event": "sms.received" }, "steps": [
        { "id": "note", "action": "log", "input": { "message": "{{ event.from }} said {{ event.body }} ({{ event.keyword }})" } }
    ] });
    let replies = app.workflow(&key, &replies).await;
    let replies = replies["id"].as_str().unwrap().to_owned();

    // The real STOP (as people type it).
    let (status, twiml) = reply(&app, &account, phone, " Stop ").await;
    assert_eq!(status, StatusCode::OK, "{twiml}");
    assert!(twiml.ends_with("<Response/>"), "{twiml}");
    let listed = opt_outs(&app, &key).await;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0]["number"].as_str(), listed[0]["channel"].as_str(), listed[0]["source"].as_str()), (Some(phone), Some("all"), Some("inbound_sms")));

    let run_id = app.start(&key, &id, &lead(phone, None)).await;
    settle(&app).await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["sms:skipped", "call:skipped", "after:succeeded"], "{run}");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(step(&run, "sms")["output"]["skipped"], "opted_out");
    assert_eq!(step(&run, "call")["output"]["opt_out"]["source"], "inbound_sms");
    assert_eq!(step(&run, "after")["output"]["message"], "opted_out", "later steps read why");
    assert_eq!(sends_billed(&run), 0, "nothing billed: {run}");
    assert_eq!(sent(&twilio).await, (0, 0), "nothing sent to Twilio");
    let (_, usage) = app.get("/v1/usage", &key).await;
    assert!(!usage.to_string().contains("sms_segment"), "no ledger rows: {usage}");

    // The reply became the event `sms.received`, once; the forged ones did not.
    let (_, runs) = app.get(&format!("/v1/runs?workflow_id={replies}"), &key).await;
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let first = app.run(&key, runs[0]["id"].as_str().unwrap()).await;
    assert_eq!(step(&first, "note")["output"]["message"], format!("{phone} said  Stop  (opt_out)"), "{first}");
    // START clears it: the next text goes out.
    assert_eq!(reply(&app, &account, phone, "start").await.0, StatusCode::OK);
    assert_eq!(opt_outs(&app, &key).await, Vec::<Value>::new());
    let run_id = app.start(&key, &id, &lead(phone, None)).await;
    settle(&app).await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(step(&run, "sms")["status"], "succeeded", "{run}");
    assert_eq!(sent(&twilio).await, (1, 1));
    // Other words are not keywords.
    assert_eq!(reply(&app, &account, phone, "stop calling at dinner time please").await.0, StatusCode::OK);
    assert_eq!(opt_outs(&app, &key).await, Vec::<Value>::new());

    // Twilio answers 21610: the opt-out is recorded, the step skipped, the call not placed.
    let refused = "+15559990000";
    let run_id = app.start(&key, &id, &lead(refused, None)).await;
    settle(&app).await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["sms:skipped", "call:skipped", "after:succeeded"], "{run}");
    assert_eq!(step(&run, "sms")["output"]["opt_out"]["source"], "twilio_21610");
    assert_eq!(sends_billed(&run), 0, "{run}");
    assert_eq!(sent(&twilio).await, (2, 1), "one refused message, no call");
    let listed = opt_outs(&app, &key).await;
    assert_eq!(listed.iter().map(|o| o["number"].as_str().unwrap()).collect::<Vec<_>>(), [refused]);

    // The CRM: a do-not-call (voice only) lets texts through and stops calls.
    let crm = "+15554445555";
    let (status, created) = app.post_json("/v1/opt-outs", &key, &json!({ "number": crm, "channel": "voice", "source": "crm:dnc" })).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!((created["channel"].as_str(), created["source"].as_str()), (Some("voice"), Some("crm:dnc")));
    let (status, again) = app.post_json("/v1/opt-outs", &key, &json!({ "number": crm, "channel": "voice" })).await;
    assert_eq!((status, &again), (StatusCode::OK, &created), "the first one is kept");
    let run_id = app.start(&key, &id, &lead(crm, None)).await;
    settle(&app).await;
    assert_eq!(timeline(&app.run(&key, &run_id).await), ["sms:succeeded", "call:skipped", "after:succeeded"]);
    let (status, bad) = app.post_json("/v1/opt-outs", &key, &json!({ "number": "555-1234", "channel": "fax" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let paths: Vec<&str> = bad["error"]["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["number", "channel"]);
    assert_eq!(app.get(&format!("/v1/opt-outs?number=%2B{}", &crm[1..]), &key).await.1["opt_outs"].as_array().unwrap().len(), 1);

    // Another account sees none of them and clears none of them.
    let (_, other) = app.account("other").await;
    assert_eq!(opt_outs(&app, &other).await, Vec::<Value>::new());
    let path = format!("/v1/opt-outs/%2B{}", &crm[1..]);
    assert_eq!(app.call("DELETE", &path, Some(&other), None, "").await.1["removed"], 0);
    assert_eq!(app.call("DELETE", &path, Some(&key), None, "").await.1, json!({ "number": crm, "removed": 1 }));
    assert_eq!(app.call("DELETE", "/v1/opt-outs/12345", Some(&key), None, "").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(opt_outs(&app, &key).await.len(), 1, "the 21610 one is left");
}

/// An opt-out posted while 100 runs are texting the same number: every text either had its
/// dispatch committed before the opt-out did, or is skipped. The sends are spread out (Twilio
/// answers after 20 ms, four workers) and the opt-out is posted once five have arrived; then at
/// most the four in flight can still be sent.
async fn an_opt_out_racing_a_hundred_texts(db: TestDb) {
    let twilio = fake_twilio(Duration::from_millis(20)).await;
    let app = Arc::new(app_with(db, &twilio).await);
    let (_, key) = app.account_on("studio", "enterprise").await;
    connection(&app, &key, false).await;
    advance_to(&app, "2027-01-15T15:00:00Z").await;
    let phone = "+15552223333";
    // A sender per run: the per-sender rate limit does not spread them further.
    let wf = json!({ "name": "blast", "trigger": { "manual": {} }, "steps": [
        { "id": "sms", "action": "sms.send", "input": { "to": "{{ event.lead.phone }}", "from": "{{ event.from }}", "body": "Offer" } }
    ] });
    let wf = app.workflow(&key, &wf).await;
    let id = wf["id"].as_str().unwrap().to_owned();
    let mut runs = Vec::new();
    for i in 0..100 {
        let mut event = lead(phone, None);
        event["from"] = json!(format!("+1555000{i:04}"));
        runs.push(app.start(&key, &id, &event).await);
    }
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { while app.engine.drain().await.unwrap() > 0 {} })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent(&twilio).await.0 < 5 {
        assert!(Instant::now() < deadline, "the texts did not start");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (status, body) = app.post_json("/v1/opt-outs", &key, &json!({ "number": phone })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let arrived_by_then = sent(&twilio).await.0;
    for w in workers {
        w.await.unwrap();
    }
    app.drain().await;
    let (mut succeeded, mut skipped) = (0, 0);
    for run_id in &runs {
        let run = app.run(&key, run_id).await;
        match step(&run, "sms")["status"].as_str() {
            Some("succeeded") => succeeded += 1,
            Some("skipped") => skipped += 1,
            other => panic!("a text ended {other:?}: {run}"),
        }
    }
    let delivered = sent(&twilio).await.0;
    assert_eq!(succeeded + skipped, 100);
    assert_eq!(delivered, succeeded, "every text sent is a succeeded step, and no skipped step sent one");
    assert!(succeeded >= 5, "{succeeded}");
    assert!(succeeded <= arrived_by_then + 4, "sent after the opt-out committed: {succeeded} sent, {arrived_by_then} had arrived, 4 workers");
    assert!(skipped > 0);
}

/// A real `serve` is SIGKILLed while a text waits for the end of quiet hours: after the restart
/// it is sent once, at the window's end, not before.
async fn sigkill_while_deferred_sends_once_at_the_windows_end(db: TestDb) {
    use crate::crash::{free_port, server_log, start_with};

    let twilio = fake_twilio(Duration::ZERO).await;
    let data = TempDir::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = [("SWITCHBOARD_TWILIO_API_BASE", twilio.uri()), ("SWITCHBOARD_PUBLIC_URL", base.clone())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = start_with(&db.url, &data, port, &env).await;
    let http = reqwest::Client::new();
    let key = server.account_key(&http, "studio").await;
    let connection = json!({ "provider": "twilio", "name": "main", "credentials": { "account_sid": SID, "auth_token": TOKEN } });
    assert_eq!(http.post(format!("{base}/v1/connections")).bearer_auth(&key).json(&connection).send().await.unwrap().status(), 201);
    // Quiet hours (UTC, the account's zone) that end on the first whole minute at least 20 s away.
    let now = Utc::now().timestamp_millis();
    let end = (now + 20_000).div_euclid(60_000) * 60_000 + 60_000;
    let minute = |t: i64| DateTime::<Utc>::from_timestamp_millis(t).unwrap().format("%H:%M").to_string();
    let rules = json!({ "quiet_hours": { "start": minute(end - 3_600_000), "end": minute(end) } });
    let res = http.put(format!("{base}/v1/contact-rules")).bearer_auth(&key).json(&rules).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let wf: Value = http.post(format!("{base}/v1/workflows")).bearer_auth(&key).json(&text_workflow(None)).send().await.unwrap().json().await.unwrap();
    let id = wf["id"].as_str().unwrap_or_else(|| panic!("{wf}"));
    let accepted: Value =
        http.post(format!("{base}/v1/workflows/{id}/runs")).bearer_auth(&key).json(&lead("+15552223333", None)).send().await.unwrap().json().await.unwrap();
    let run_id = accepted["run_id"].as_str().unwrap_or_else(|| panic!("{accepted}")).to_owned();
    let get_run = async || -> Value { http.get(format!("{base}/v1/runs/{run_id}")).bearer_auth(&key).send().await.unwrap().json().await.unwrap() };

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let run = get_run().await;
        if run["steps"][0]["output"]["deferred"] == "quiet_hours" {
            assert_eq!(run["steps"][0]["output"]["until"], rfc3339(end), "{run}");
            break;
        }
        assert!(Instant::now() < deadline, "not deferred: {run}\n{}", server_log(&data));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut server = server;
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    let mut server = start_with(&db.url, &data, port, &env).await;
    let deadline = Instant::now() + Duration::from_millis((end - now).max(0) as u64) + Duration::from_secs(30);
    let run = loop {
        let run = get_run().await;
        if run["status"] == "succeeded" || run["status"] == "failed" {
            break run;
        }
        assert!(Instant::now() < deadline, "the run did not finish: {run}\n{}", server_log(&data));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    server.child.start_kill().unwrap();
    let _ = server.child.wait().await;
    assert_eq!(timeline(&run), ["sms:succeeded", "after:succeeded"], "{run}");
    let finished = ms(run["steps"][0]["finished_at"].as_str().unwrap());
    assert!(finished >= end, "sent at {} before the window's end {}", rfc3339(finished), rfc3339(end));
    assert_eq!(sent(&twilio).await, (1, 0), "sent once");
}

on_both_backends!(
    quiet_hours_wait_for_the_leads_morning,
    new_york_daylight_saving_nights,
    stop_start_and_21610,
    an_opt_out_racing_a_hundred_texts,
    sigkill_while_deferred_sends_once_at_the_windows_end,
);
