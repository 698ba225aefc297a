//! Voice calls end to end against a local fake of Twilio that speaks Twilio's formats: the exact
//! Calls request, then the test drives the call as Twilio does — fetches the TwiML, posts the
//! caller's digits, posts status events repeated and out of order — each request signed with
//! the connection's auth token. TwiML answers are parsed as XML.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use switchboard_integrations::twilio::sign;
use switchboard_runtime::engine::EngineConfig;
use tower::ServiceExt;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::on_both_backends;
use crate::support::{TestApp, TestDb, actions_config, timeline};

pub(crate) const SID: &str = "AC0123456789abcdef0123456789abcdef";
pub(crate) const TOKEN: &str = "voice-auth-token-1c9e";
const CALL_SID: &str = "CA11112222333344445555666677778888";
pub(crate) const PUBLIC: &str = "http://sb.test";

/// A fake Twilio whose Calls API creates every call as `CALL_SID`.
async fn fake_twilio() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Calls\.json$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "sid": CALL_SID, "account_sid": SID, "status": "queued", "direction": "outbound-api",
            "to": "+15552223333", "from": "+15550001111", "duration": null, "answered_by": null
        })))
        .mount(&server)
        .await;
    server
}

async fn app_with(db: TestDb, twilio: &MockServer) -> TestApp {
    let mut config = actions_config();
    config.api_bases.set("twilio", twilio.uri());
    TestApp::build(db, EngineConfig::default(), config, None, None).await
}

pub(crate) async fn connection(app: &TestApp, key: &str, sandbox: bool) {
    let body = json!({ "provider": "twilio", "name": "main", "sandbox": sandbox, "credentials": { "account_sid": SID, "auth_token": TOKEN } });
    let (status, body) = app.post_json("/v1/connections", key, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// The appointment script: a greeting, a one-key menu, and its two branches.
fn script() -> Value {
    json!([
        { "say": "Hi {{ event.lead.first_name }}, this is Acme Studio." },
        { "id": "confirm", "menu": {
            "prompt": "Press 1 to keep your appointment, or 2 to move it.",
            "options": { "1": "kept", "2": "moved" },
            "invalid_prompt": "Sorry, that is not an option." } },
        { "id": "kept", "say": "Thank you, see you then.", "goto": "hangup" },
        { "id": "moved", "gather": { "input": "speech", "prompt": "Which day suits you?" } },
        { "hangup": "We will call you back." }
    ])
}

fn workflow(script: Value) -> Value {
    json!({
        "name": "confirm by phone",
        "trigger": { "webhook": {} },
        "steps": [
            { "id": "phone", "action": "voice.call", "input": {
                "to": "{{ event.lead.phone }}", "from": "+15550001111", "machine_detection": true, "script": script } },
            { "id": "note", "action": "log", "input": { "message": "call ended {{ steps.phone.output.status }}" } }
        ]
    })
}

fn lead() -> Value {
    json!({ "lead": { "first_name": "Ada", "phone": "+15552223333" } })
}

/// Posts a form the way Twilio does, signed with `token` over `signed_url` (the request's own
/// URL unless a test forges it). Returns the status and the body as text.
pub(crate) async fn twilio_post(app: &TestApp, path_and_query: &str, params: &[(&str, &str)], signature: Option<String>) -> (StatusCode, String) {
    let pairs: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut req = Request::builder().method("POST").uri(path_and_query).header("content-type", "application/x-www-form-urlencoded");
    if let Some(sig) = signature {
        req = req.header("x-twilio-signature", sig);
    }
    let body = serde_urlencoded::to_string(&pairs).unwrap();
    let res = switchboard_api::router(app.state.clone()).oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A correctly signed Twilio request.
pub(crate) async fn signed(app: &TestApp, path_and_query: &str, params: &[(&str, &str)]) -> (StatusCode, String) {
    let pairs: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let signature = sign(TOKEN, &format!("{PUBLIC}{path_and_query}"), &pairs);
    twilio_post(app, path_and_query, params, Some(signature)).await
}

/// The form fields of the Calls request Twilio received, and its basic-auth header.
async fn calls_request(twilio: &MockServer) -> (Vec<(String, String)>, String) {
    let requests = twilio.received_requests().await.unwrap();
    let creates: Vec<_> = requests.iter().filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/Calls.json")).collect();
    assert_eq!(creates.len(), 1, "one call placed");
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&creates[0].body).unwrap();
    let auth = creates[0].headers.get("authorization").unwrap().to_str().unwrap().to_owned();
    (form, auth)
}

pub(crate) fn field<'a>(form: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    form.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
}

/// A TwiML element: `(name, attributes, text)`.
pub(crate) type Element = (String, Vec<(String, String)>, String);

/// A TwiML document as `(verb, attributes, text)` of the `<Response>`'s children, nested
/// children of `<Gather>` flattened after it with a `Gather/` prefix.
pub(crate) fn verbs(twiml: &str) -> Vec<Element> {
    let doc = roxmltree::Document::parse(twiml).unwrap_or_else(|e| panic!("not XML ({e}): {twiml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "Response");
    let mut out = Vec::new();
    for node in root.children().filter(|n| n.is_element()) {
        let attrs = node.attributes().map(|a| (a.name().to_owned(), a.value().to_owned())).collect();
        out.push((node.tag_name().name().to_owned(), attrs, node.text().unwrap_or_default().to_owned()));
        for inner in node.children().filter(|n| n.is_element()) {
            let attrs = inner.attributes().map(|a| (a.name().to_owned(), a.value().to_owned())).collect();
            out.push((format!("{}/{}", node.tag_name().name(), inner.tag_name().name()), attrs, inner.text().unwrap_or_default().to_owned()));
        }
    }
    let last = &out.last().expect("an empty document").0;
    assert!(last == "Hangup" || last == "Redirect", "every document ends in Hangup or Redirect: {twiml}");
    out
}

fn attr<'a>(verb: &'a Element, name: &str) -> Option<&'a str> {
    verb.1.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

pub(crate) fn names(verbs: &[Element]) -> Vec<&str> {
    verbs.iter().map(|v| v.0.as_str()).collect()
}

async fn start_call(db: TestDb) -> (TestApp, MockServer, String, String, String) {
    let twilio = fake_twilio().await;
    let app = app_with(db, &twilio).await;
    let (_, key) = app.account("studio").await;
    connection(&app, &key, false).await;
    let wf = app.workflow(&key, &workflow(script())).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &lead()).await;
    app.drain().await;
    let (form, _) = calls_request(&twilio).await;
    let url = field(&form, "Url")[0].to_owned();
    let path = url.strip_prefix(PUBLIC).unwrap().to_owned();
    (app, twilio, key, run_id, path)
}

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no step {id}: {run}"))
}

/// The whole call: the exact Calls request, the TwiML turns, status events repeated and out of
/// order; the output, the path and the minutes (once).
async fn a_call_runs_its_script_and_bills_its_minutes_once(db: TestDb) {
    let (app, twilio, key, run_id, path) = start_call(db).await;

    let (form, auth) = calls_request(&twilio).await;
    assert_eq!(field(&form, "To"), ["+15552223333"]);
    assert_eq!(field(&form, "From"), ["+15550001111"]);
    assert!(path.starts_with("/callbacks/twilio/voice/") && path.len() > "/callbacks/twilio/voice/".len() + 40, "an unguessable token: {path}");
    assert_eq!(field(&form, "Method"), ["POST"]);
    assert_eq!(field(&form, "StatusCallback"), [format!("{PUBLIC}{path}/status").as_str()]);
    assert_eq!(field(&form, "StatusCallbackMethod"), ["POST"]);
    assert_eq!(field(&form, "StatusCallbackEvent"), ["initiated", "ringing", "answered", "completed"]);
    assert_eq!((field(&form, "Timeout"), field(&form, "TimeLimit")), (vec!["30"], vec!["3600"]));
    assert_eq!((field(&form, "MachineDetection"), field(&form, "AsyncAmd")), (vec!["Enable"], vec!["true"]));
    assert!(field(&form, "Record").is_empty());
    use base64::Engine as _;
    assert_eq!(auth, format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"))));
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["phone:waiting"], "{run}");

    let call = |status: &'static str, seq: &'static str| [("CallSid", CALL_SID), ("AccountSid", SID), ("CallStatus", status), ("SequenceNumber", seq)];
    let status_path = format!("{path}/status");
    assert_eq!(signed(&app, &status_path, &call("initiated", "0")).await.0, StatusCode::NO_CONTENT);
    assert_eq!(signed(&app, &status_path, &call("ringing", "1")).await.0, StatusCode::NO_CONTENT);

    // Answered: the first document.
    let answered =
        [("CallSid", CALL_SID), ("AccountSid", SID), ("CallStatus", "in-progress"), ("From", "+15550001111"), ("To", "+15552223333"), ("AnsweredBy", "human")];
    let (status, first) = signed(&app, &path, &answered).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let doc = verbs(&first);
    assert_eq!(names(&doc), ["Say", "Gather", "Gather/Say", "Redirect"], "{first}");
    assert_eq!(doc[0].2, "Hi Ada, this is Acme Studio.");
    let menu_url = format!("{PUBLIC}{path}?node=confirm");
    assert_eq!((attr(&doc[1], "action"), attr(&doc[1], "numDigits"), attr(&doc[1], "method")), (Some(menu_url.as_str()), Some("1"), Some("POST")));
    assert_eq!(doc[2].2, "Press 1 to keep your appointment, or 2 to move it.");
    assert_eq!((attr(&doc[3], "method"), doc[3].2.as_str()), (Some("POST"), menu_url.as_str()));
    // Twilio repeating the fetch gets the same document.
    assert_eq!(signed(&app, &path, &answered).await.1, first);

    // A key that is not an option re-prompts; 1 keeps the appointment.
    let menu_path = format!("{path}?node=confirm");
    let (_, again) = signed(&app, &menu_path, &[("CallSid", CALL_SID), ("Digits", "7")]).await;
    let doc = verbs(&again);
    assert_eq!(names(&doc), ["Gather", "Gather/Say", "Gather/Say", "Redirect"], "{again}");
    assert_eq!(doc[1].2, "Sorry, that is not an option.");
    let (_, last) = signed(&app, &menu_path, &[("CallSid", CALL_SID), ("Digits", "1")]).await;
    let doc = verbs(&last);
    assert_eq!(names(&doc), ["Say", "Hangup"], "{last}");
    assert_eq!(doc[0].2, "Thank you, see you then.");
    // A late repeat of the menu's answer gets the last document; nothing moves.
    assert_eq!(signed(&app, &menu_path, &[("CallSid", CALL_SID), ("Digits", "2")]).await.1, last);

    // Status events, repeated and out of order.
    assert_eq!(signed(&app, &status_path, &call("in-progress", "2")).await.0, StatusCode::NO_CONTENT);
    assert_eq!(signed(&app, &status_path, &call("ringing", "1")).await.0, StatusCode::NO_CONTENT);
    let completed = [("CallSid", CALL_SID), ("CallStatus", "completed"), ("SequenceNumber", "3"), ("CallDuration", "75"), ("AnsweredBy", "human")];
    assert_eq!(signed(&app, &status_path, &completed).await.0, StatusCode::NO_CONTENT);
    assert_eq!(signed(&app, &status_path, &completed).await.0, StatusCode::NO_CONTENT);
    let late = [("CallSid", CALL_SID), ("CallStatus", "completed"), ("SequenceNumber", "4"), ("CallDuration", "300")];
    assert_eq!(signed(&app, &status_path, &late).await.0, StatusCode::NO_CONTENT);
    assert_eq!(signed(&app, &status_path, &call("ringing", "1")).await.0, StatusCode::NO_CONTENT);
    app.drain().await;

    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(timeline(&run), ["phone:succeeded", "note:succeeded"]);
    let output = &step(&run, "phone")["output"];
    assert_eq!(output["status"], "completed");
    assert_eq!(output["call_sid"], CALL_SID);
    assert_eq!(output["direction"], "outbound-api");
    assert_eq!(output["answered_by"], "human");
    assert_eq!((output["duration_s"].as_i64(), output["billable_minutes"].as_i64()), (Some(75), Some(2)), "{output}");
    assert_eq!(output["inputs"], json!({ "confirm": { "digits": "1" } }));
    assert_eq!(output["path"], json!(["#0", "confirm", "confirm", "kept"]));
    assert_eq!(output["script_ended"], "hangup");
    assert_eq!(step(&run, "note")["output"]["message"], "call ended completed", "{run}");
    let minutes: Vec<&Value> = run["usage"].as_array().unwrap().iter().filter(|u| u["unit"] == "voice_minute_standard").collect();
    assert_eq!(minutes.len(), 1, "billed once: {run}");
    assert_eq!(minutes[0]["quantity"], 2);
    assert_eq!(calls_request(&twilio).await.0.len(), form.len(), "still one call placed");
}

/// Forged, missing and wrong-URL signatures get 403 and change nothing; an unknown call is 404.
async fn bad_signatures_change_nothing(db: TestDb) {
    let (app, _twilio, key, run_id, path) = start_call(db).await;
    let params = [("CallSid", CALL_SID), ("CallStatus", "completed"), ("SequenceNumber", "3"), ("CallDuration", "75")];
    let pairs: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let status_path = format!("{path}/status");
    let forged = sign("not-the-token", &format!("{PUBLIC}{status_path}"), &pairs);
    let wrong_url = sign(TOKEN, &format!("{PUBLIC}/callbacks/twilio/voice/other/status"), &pairs);
    for signature in [Some(forged), None, Some(wrong_url), Some("garbage".into())] {
        let (status, body) = twilio_post(&app, &status_path, &params, signature.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{signature:?}: {body}");
        assert!(body.contains("invalid_signature"), "{body}");
        let (status, _) = twilio_post(&app, &path, &[("CallSid", CALL_SID)], signature).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    // Tampering with a signed form is caught too.
    let good = sign(TOKEN, &format!("{PUBLIC}{status_path}"), &pairs);
    let tampered = [("CallSid", CALL_SID), ("CallStatus", "completed"), ("SequenceNumber", "3"), ("CallDuration", "7500")];
    assert_eq!(twilio_post(&app, &status_path, &tampered, Some(good)).await.0, StatusCode::FORBIDDEN);
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["phone:waiting"], "nothing changed: {run}");
    // The first signed fetch still gets the first document: no forged request started it.
    let (status, first) = signed(&app, &path, &[("CallSid", CALL_SID), ("CallStatus", "in-progress")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&verbs(&first)), ["Say", "Gather", "Gather/Say", "Redirect"]);
    let (status, _) = signed(&app, "/callbacks/twilio/voice/nosuchcall", &[("CallSid", CALL_SID)]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// No status callback ever comes: after `wait_timeout` the runtime asks Twilio and completes
/// from its answer (unanswered: no minutes).
async fn without_callbacks_the_step_asks_twilio_after_wait_timeout(db: TestDb) {
    let (app, twilio, key, run_id, _path) = start_call(db).await;
    Mock::given(method("GET"))
        .and(path_regex(format!(r"^/2010-04-01/Accounts/{SID}/Calls/{CALL_SID}\.json$")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "sid": CALL_SID, "status": "no-answer", "duration": "0", "answered_by": null })))
        .mount(&twilio)
        .await;
    app.advance(60 * 60 * 1000).await;
    assert_eq!(timeline(&app.run(&key, &run_id).await), ["phone:waiting"], "still waiting before wait_timeout");
    app.advance(61 * 60 * 1000).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["phone:succeeded", "note:succeeded"], "{run}");
    let output = &step(&run, "phone")["output"];
    assert_eq!((output["status"].as_str(), output["billable_minutes"].as_i64()), (Some("no-answer"), Some(0)), "{output}");
    assert!(run["usage"].as_array().unwrap().iter().all(|u| u["unit"] != "voice_minute_standard"), "an unanswered call costs nothing");
    let asked = twilio.received_requests().await.unwrap().iter().filter(|r| r.method.as_str() == "GET").count();
    assert_eq!(asked, 1);
}

/// Twilio refusing to create the call fails the step with Twilio's code; nothing is billed.
async fn a_refused_call_fails_the_step(db: TestDb) {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21215, "message": "Geographic permission not enabled for +15552223333", "more_info": "https://www.twilio.com/docs/errors/21215", "status": 400
        })))
        .mount(&twilio)
        .await;
    let app = app_with(db, &twilio).await;
    let (_, key) = app.account("studio").await;
    connection(&app, &key, false).await;
    let wf = app.workflow(&key, &workflow(script())).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &lead()).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "twilio_21215", "{run}");
    assert_eq!(twilio.received_requests().await.unwrap().len(), 1, "not retried: a permanent refusal");
}

/// Saving checks scripts like steps, with paths.
async fn scripts_are_checked_when_saved(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    let bad = json!([
        { "say": "Hi" },
        { "id": "ask", "menu": { "prompt": "Press 1", "options": { "1": "yes", "3": "nowhere" } } },
        { "id": "yes", "branch": [{ "when": "inputs.ask.digits ==", "goto": "ask" }, { "else": "hangup" }] },
        { "gathr": {} }
    ]);
    let (status, body) = app.post_json("/v1/workflows", &key, &workflow(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let paths: Vec<&str> = body["error"]["details"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["steps[0].input.script[3].gathr", "steps[0].input.script[3]"], "{body}");
    let bad = json!([
        { "id": "ask", "menu": { "prompt": "Press 1", "options": { "1": "ask", "3": "nowhere" } } },
    ]);
    let (_, body) = app.post_json("/v1/workflows", &key, &workflow(bad)).await;
    let paths: Vec<&str> = body["error"]["details"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["steps[0].input.script[0].menu.options.3"], "{body}");
    let mut wf = workflow(script());
    wf["steps"][0]["input"]["ring_timeout"] = json!("2s");
    let (status, body) = app.post_json("/v1/workflows", &key, &wf).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"][0]["path"], "steps[0].input.ring_timeout", "{body}");
}

/// A sandbox connection simulates the call through the same engine: the outbox shows every
/// TwiML document and the outcome; nothing reaches Twilio and nothing is billed.
async fn a_sandbox_call_runs_the_script_without_a_phone(db: TestDb) {
    let twilio = fake_twilio().await;
    let app = app_with(db, &twilio).await;
    let (_, key) = app.account("studio").await;
    connection(&app, &key, true).await;
    let wf = app.workflow(&key, &workflow(script())).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &lead()).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["phone:succeeded", "note:succeeded"], "{run}");
    let output = &step(&run, "phone")["output"];
    // No input given: the menu re-prompts twice, then the call hangs up.
    assert_eq!(output["path"], json!(["#0", "confirm", "confirm", "confirm"]), "{output}");
    assert_eq!((output["status"].as_str(), output["duration_s"].as_i64(), output["billable_minutes"].as_i64()), (Some("completed"), Some(60), Some(1)));
    assert!(run["usage"].as_array().unwrap().iter().all(|u| u["unit"] != "voice_minute_standard"), "sandbox calls are not billed");
    let (_, outbox) = app.get("/v1/outbox", &key).await;
    let item = &outbox["messages"][0];
    assert_eq!((item["kind"].as_str(), item["to"].as_str()), (Some("voice.call"), Some("+15552223333")), "{outbox}");
    let documents = item["rendered"]["twiml"].as_array().unwrap();
    assert_eq!(documents.len(), 4, "{item}");
    for doc in documents {
        verbs(doc.as_str().unwrap());
    }
    assert_eq!(item["rendered"]["outcome"]["status"], "completed");
    assert!(twilio.received_requests().await.unwrap().is_empty(), "nothing reached Twilio");
}

/// A sandbox Twilio connection whose calls to `+15552223333` go as `simulate` says, and sandbox
/// connections of the other providers.
async fn sandbox_with(app: &TestApp, key: &str, simulate: Value, others: &[&str]) -> String {
    let body = json!({ "provider": "twilio", "name": "phone", "sandbox": true, "settings": { "simulate": { "+15552223333": simulate } } });
    let (status, twilio) = app.post_json("/v1/connections", key, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{twilio}");
    assert_eq!(twilio["settings"]["simulate"]["+15552223333"], simulate);
    for provider in others {
        let (status, body) = app.post_json("/v1/connections", key, &json!({ "provider": provider, "name": provider, "sandbox": true })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    twilio["id"].as_str().unwrap().to_owned()
}

async fn enable(app: &TestApp, key: &str, slug: &str, params: Value) -> String {
    let (status, body) = app.post_json(&format!("/v1/templates/{slug}/enable"), key, &json!({ "params": params })).await;
    assert_eq!(status, StatusCode::CREATED, "{slug}: {body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn event(app: &TestApp, key: &str, kind: &str, id: &str, data: Value) -> Vec<String> {
    let (status, body) = app.post_json("/v1/events", key, &json!({ "type": kind, "id": id, "data": data })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["run_ids"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect()
}

async fn outbox_of(app: &TestApp, key: &str, run_id: &str) -> Vec<Value> {
    let (_, body) = app.get(&format!("/v1/outbox?run_id={run_id}&limit=50"), key).await;
    body["messages"].as_array().unwrap().clone()
}

fn kinds(messages: &[Value]) -> Vec<&str> {
    messages.iter().map(|m| m["kind"].as_str().unwrap()).collect()
}

const HOUR: i64 = 3_600_000;

/// no-show-recovery in sandbox: call → no answer → SMS → wait → call again → still no answer →
/// manual task; and when the second call is answered and 1 pressed, the caller is connected and
/// no task is made. Its test run shows the same in one answer.
async fn no_show_recovery_texts_calls_again_then_tasks(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    let twilio = sandbox_with(&app, &key, json!({ "status": "no-answer" }), &["crm"]).await;
    let params = json!({ "business_name": "Studio Ada", "caller_id": "+15550001111", "studio_number": "+15550002222" });
    let workflow = enable(&app, &key, "no-show-recovery", params).await;
    let missed = json!({ "lead": { "id": "L1", "first_name": "Ada", "last_name": "Lovelace", "phone": "+15552223333" }, "call": { "status": "no-answer" } });
    assert!(event(&app, &key, "call.completed", "c0", json!({ "lead": missed["lead"], "call": { "status": "completed" } })).await.is_empty());
    let run = event(&app, &key, "call.completed", "c1", missed.clone()).await.remove(0);
    app.drain().await;
    assert!(outbox_of(&app, &key, &run).await.is_empty(), "nothing before 2 hours");
    app.advance(2 * HOUR).await;
    assert_eq!(kinds(&outbox_of(&app, &key, &run).await), ["sms.send"]);
    app.advance(4 * HOUR).await;
    app.drain().await;
    let messages = outbox_of(&app, &key, &run).await;
    assert_eq!(kinds(&messages), ["sms.send", "voice.call", "crm.create_task"], "{messages:#?}");
    assert_eq!(messages[1]["rendered"]["outcome"]["status"], "no-answer");
    assert_eq!(messages[1]["rendered"]["twiml"], json!([]), "an unanswered call runs no script");
    assert!(
        messages[2]["rendered"]["body"].to_string().contains("two calls unanswered") || messages[2]["rendered"].to_string().contains("two calls unanswered")
    );
    assert_eq!(app.run(&key, &run).await["status"], "succeeded");

    // Answered this time, and 1 pressed: connected to the studio, no task.
    let simulate = json!({ "simulate": { "+15552223333": { "status": "completed", "duration_s": 130, "inputs": { "choice": { "digits": "1" } } } } });
    let (status, body) =
        app.call("PATCH", &format!("/v1/connections/{twilio}"), Some(&key), Some("application/json"), json!({ "settings": simulate }).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let run = event(&app, &key, "call.completed", "c2", missed.clone()).await.remove(0);
    app.drain().await;
    app.advance(2 * HOUR).await;
    app.advance(4 * HOUR).await;
    app.drain().await;
    let messages = outbox_of(&app, &key, &run).await;
    assert_eq!(kinds(&messages), ["sms.send", "voice.call"], "{messages:#?}");
    let call = app.run(&key, &run).await;
    let output = &step(&call, "second_call")["output"];
    assert_eq!(output["path"], json!(["#0", "choice", "connect", "transfer"]), "{output}");
    assert_eq!((output["status"].as_str(), output["billable_minutes"].as_i64()), (Some("completed"), Some(3)));
    let documents = messages[1]["rendered"]["twiml"].as_array().unwrap();
    assert_eq!(documents.len(), 3, "greeting and menu, the transfer, the hang-up after it: {documents:?}");
    let transfer = verbs(documents[1].as_str().unwrap());
    assert_eq!(names(&transfer), ["Say", "Dial", "Dial/Number", "Redirect"], "{documents:?}");
    assert_eq!((attr(&transfer[1], "callerId"), transfer[2].2.as_str()), (Some("+15550001111"), "+15550002222"));
    assert_eq!(names(&verbs(documents[2].as_str().unwrap())), ["Hangup"]);

    // The test run shows it all at once, not billed.
    let (status, answer) = app.post_json(&format!("/v1/workflows/{workflow}/test"), &key, &json!({ "event": missed })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(kinds(answer["outbox"].as_array().unwrap()), ["sms.send", "voice.call"], "{answer}");
    assert_eq!(answer["run"]["usage"], json!([]));

    // In the lead's timezone: a call missed at 05:00 in Tokyo (20:00 UTC) is followed by a text
    // at 08:00 Tokyo time, not at 07:00 (quiet hours end at 08:00 where the lead is).
    let day = 24 * HOUR;
    app.advance((20 * HOUR - app.now().rem_euclid(day)).rem_euclid(day)).await;
    let tokyo = json!({ "lead": { "id": "L2", "first_name": "Aiko", "last_name": "Sato", "phone": "+815012345678", "timezone": "Asia/Tokyo" },
        "call": { "status": "no-answer" } });
    let run = event(&app, &key, "call.completed", "c3", tokyo).await.remove(0);
    app.drain().await;
    app.advance(2 * HOUR).await;
    assert!(outbox_of(&app, &key, &run).await.is_empty(), "not at 07:00 in Tokyo");
    let text = step(&app.run(&key, &run).await, "missed_you_text").clone();
    assert_eq!((text["output"]["deferred"].as_str(), text["output"]["timezone"].as_str()), (Some("quiet_hours"), Some("Asia/Tokyo")), "{text}");
    app.advance(HOUR).await;
    assert_eq!(kinds(&outbox_of(&app, &key, &run).await), ["sms.send"], "at 08:00 in Tokyo");
}

/// quote-follow-up in sandbox: no payment within a day → reminder email → 2 days → a call that
/// offers the discount (1 pressed) → the offer by email. A payment in time ends it quietly.
async fn quote_follow_up_reminds_calls_then_offers(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    sandbox_with(&app, &key, json!({ "inputs": { "offer": { "digits": "1" } } }), &["smtp"]).await;
    let params = json!({ "business_name": "Studio Ada", "caller_id": "+15550001111", "from_email": "hello@studio.test", "discount": "15%" });
    enable(&app, &key, "quote-follow-up", params).await;
    let lead = json!({ "id": "L1", "first_name": "Ada", "last_name": "Lovelace", "phone": "+15552223333", "email": "ada@example.test" });

    let paid = event(&app, &key, "quote.sent", "q1", json!({ "lead": lead, "quote": { "id": "Q1" } })).await.remove(0);
    let unpaid = event(&app, &key, "quote.sent", "q2", json!({ "lead": lead, "quote": { "id": "Q2" } })).await.remove(0);
    app.drain().await;
    event(&app, &key, "payment.received", "p1", json!({ "lead": lead, "payment": { "quote_id": "Q1", "amount": 100 } })).await;
    app.drain().await;
    assert_eq!(app.run(&key, &paid).await["status"], "succeeded");
    assert!(outbox_of(&app, &key, &paid).await.is_empty(), "a paid quote gets nothing");

    app.advance(24 * HOUR).await;
    assert_eq!(kinds(&outbox_of(&app, &key, &unpaid).await), ["email.send"]);
    app.advance(48 * HOUR).await;
    app.drain().await;
    let messages = outbox_of(&app, &key, &unpaid).await;
    assert_eq!(kinds(&messages), ["email.send", "voice.call", "email.send"], "{messages:#?}");
    let documents = messages[1]["rendered"]["twiml"].as_array().unwrap();
    let first = verbs(documents[0].as_str().unwrap());
    assert!(first[2].2.contains("we will take 15% off"), "{first:?}");
    assert_eq!(messages[1]["rendered"]["outcome"]["path"], json!(["#0", "offer", "accept"]));
    assert!(messages[2]["rendered"]["subject"].as_str().unwrap().starts_with("15% off your quote"), "{}", messages[2]);

    // Its test run: the day's wait and the two days fast-forwarded, the same three messages.
    let (_, workflows) = app.get("/v1/workflows", &key).await;
    let id = workflows["workflows"][0]["id"].as_str().unwrap();
    let (status, answer) = app.post_json(&format!("/v1/workflows/{id}/test"), &key, &json!({ "event": { "lead": lead, "quote": { "id": "Q3" } } })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(kinds(answer["outbox"].as_array().unwrap()), ["email.send", "voice.call", "email.send"], "{answer}");
    assert_eq!(answer["run"]["usage"], json!([]));
}

/// The caller who wants to move the appointment says when: speech and its confidence reach the
/// output.
async fn speech_is_gathered(db: TestDb) {
    let (app, _twilio, key, run_id, path) = start_call(db).await;
    signed(&app, &path, &[("CallSid", CALL_SID), ("CallStatus", "in-progress")]).await;
    let (_, ask) = signed(&app, &format!("{path}?node=confirm"), &[("CallSid", CALL_SID), ("Digits", "2")]).await;
    let doc = verbs(&ask);
    assert_eq!(names(&doc), ["Gather", "Gather/Say", "Redirect"], "{ask}");
    assert_eq!((attr(&doc[0], "input"), attr(&doc[0], "speechTimeout")), (Some("speech"), Some("auto")));
    let (_, bye) =
        signed(&app, &format!("{path}?node=moved"), &[("CallSid", CALL_SID), ("SpeechResult", "next Tuesday morning"), ("Confidence", "0.87")]).await;
    let doc = verbs(&bye);
    assert_eq!((names(&doc), doc[0].2.as_str()), (vec!["Say", "Hangup"], "We will call you back."), "{bye}");
    let completed = [("CallSid", CALL_SID), ("CallStatus", "completed"), ("SequenceNumber", "3"), ("CallDuration", "42")];
    signed(&app, &format!("{path}/status"), &completed).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    let output = &step(&run, "phone")["output"];
    assert_eq!(output["inputs"], json!({ "confirm": { "digits": "2" }, "moved": { "speech": "next Tuesday morning", "confidence": 0.87 } }), "{output}");
    assert_eq!(output["path"], json!(["#0", "confirm", "moved", "#4"]));
    assert_eq!(output["billable_minutes"], 1);
}

/// Posts a signed Twilio form to a real server.
async fn signed_http(http: &reqwest::Client, base: &str, path_and_query: &str, params: &[(&str, &str)]) -> (u16, String) {
    let pairs: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let signature = sign(TOKEN, &format!("{base}{path_and_query}"), &pairs);
    let res = http.post(format!("{base}{path_and_query}")).header("x-twilio-signature", signature).form(&pairs).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// A real `switchboard serve` is SIGKILLed while a call is live (between two of Twilio's
/// requests): after the restart the next callbacks continue the script and complete the step;
/// one call was placed and its minutes are billed once.
async fn sigkill_while_a_call_is_live_loses_nothing(db: TestDb) {
    use std::time::{Duration, Instant};

    use crate::crash::{free_port, server_log, start_with};
    use crate::support::TempDir;

    let twilio = fake_twilio().await;
    let data = TempDir::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = [("SWITCHBOARD_TWILIO_API_BASE", twilio.uri()), ("SWITCHBOARD_PUBLIC_URL", base.clone())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = start_with(&db.url, &data, port, &env).await;
    let http = reqwest::Client::new();
    let key = server.account_key(&http, "studio").await;
    let connection = json!({ "provider": "twilio", "name": "main", "credentials": { "account_sid": SID, "auth_token": TOKEN } });
    let res = http.post(format!("{base}/v1/connections")).bearer_auth(&key).json(&connection).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let wf: Value = http.post(format!("{base}/v1/workflows")).bearer_auth(&key).json(&workflow(script())).send().await.unwrap().json().await.unwrap();
    let hook = wf["webhook_url"].as_str().unwrap_or_else(|| panic!("{wf}"));
    let accepted: Value = http.post(hook).json(&lead()).send().await.unwrap().json().await.unwrap();
    let run_id = accepted["run_id"].as_str().unwrap().to_owned();

    let deadline = Instant::now() + Duration::from_secs(30);
    while twilio.received_requests().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no call placed: {}", server_log(&data));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (form, _) = calls_request(&twilio).await;
    let path = field(&form, "Url")[0].strip_prefix(&base).unwrap().to_owned();
    let (status, first) = signed_http(&http, &base, &path, &[("CallSid", CALL_SID), ("CallStatus", "in-progress")]).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(names(&verbs(&first)), ["Say", "Gather", "Gather/Say", "Redirect"]);

    let mut server = server;
    server.child.start_kill().unwrap(); // SIGKILL while the caller hears the menu
    server.child.wait().await.unwrap();
    let mut server = start_with(&db.url, &data, port, &env).await;

    let (status, last) = signed_http(&http, &base, &format!("{path}?node=confirm"), &[("CallSid", CALL_SID), ("Digits", "1")]).await;
    assert_eq!(status, 200, "{last}");
    assert_eq!(names(&verbs(&last)), ["Say", "Hangup"], "{last}");
    let completed = [("CallSid", CALL_SID), ("CallStatus", "completed"), ("SequenceNumber", "3"), ("CallDuration", "61")];
    assert_eq!(signed_http(&http, &base, &format!("{path}/status"), &completed).await.0, 204);
    assert_eq!(signed_http(&http, &base, &format!("{path}/status"), &completed).await.0, 204);

    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run: Value = http.get(format!("{base}/v1/runs/{run_id}")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        if run["status"] == "succeeded" || run["status"] == "failed" {
            break run;
        }
        assert!(Instant::now() < deadline, "the run did not finish: {run}\n{}", server_log(&data));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    server.child.start_kill().unwrap();
    let _ = server.child.wait().await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let output = &step(&run, "phone")["output"];
    assert_eq!(output["path"], json!(["#0", "confirm", "kept"]), "{output}");
    assert_eq!(output["billable_minutes"], 2);
    let minutes: Vec<&Value> = run["usage"].as_array().unwrap().iter().filter(|u| u["unit"] == "voice_minute_standard").collect();
    assert_eq!((minutes.len(), minutes[0]["quantity"].as_i64()), (1, Some(2)), "{run}");
    calls_request(&twilio).await; // asserts that one call was placed
}

on_both_backends!(sigkill_while_a_call_is_live_loses_nothing, speech_is_gathered);

on_both_backends!(no_show_recovery_texts_calls_again_then_tasks, quote_follow_up_reminds_calls_then_offers,);

on_both_backends!(
    a_call_runs_its_script_and_bills_its_minutes_once,
    bad_signatures_change_nothing,
    without_callbacks_the_step_asks_twilio_after_wait_timeout,
    a_refused_call_fails_the_step,
    scripts_are_checked_when_saved,
    a_sandbox_call_runs_the_script_without_a_phone,
);
