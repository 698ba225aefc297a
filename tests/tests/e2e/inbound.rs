//! Inbound calls: a number bound to a workflow answers with its IVR, driven the way Twilio
//! drives it (signed form posts: the incoming call, each key press, the dial's result, the
//! number's status callback); the same flow simulated without a phone.

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{Value, json};
use switchboard_integrations::twilio::sign;

use crate::on_both_backends;
use crate::support::{TestApp, TestDb, timeline};
use crate::voice::{Element, PUBLIC, SID, TOKEN, names, signed, twilio_post as post_form, verbs};
const NUMBER: &str = "+15550009999";
const CALLER: &str = "+15557654321";
const SUPPORT: &str = "+15550002222";

/// The studio's line: welcome, a menu (1 billing, 2 support, 3 general, 0 repeat), then a log
/// step after the call.
fn support_line() -> Value {
    json!({
        "name": "Studio line",
        "trigger": { "call": {} },
        "steps": [
            { "id": "answer", "action": "voice.answer", "input": { "voice": "alice", "script": [
                { "say": "Welcome to Studio Ada." },
                { "id": "menu", "menu": {
                    "prompt": "For billing press 1, for support press 2, for anything else press 3. To hear this again, press 0.",
                    "options": { "1": "billing", "2": "support", "3": "general", "0": "menu" },
                    "invalid_prompt": "Sorry, that is not an option." } },
                { "id": "billing", "say": "Billing is open weekdays.", "goto": "hangup" },
                { "id": "support", "dial": { "to": SUPPORT, "on_no_answer": "voicemail" }, "goto": "hangup" },
                { "id": "general", "say": "Thanks for calling.", "goto": "hangup" },
                { "id": "voicemail", "record": { "prompt": "Nobody could answer. Leave a message after the beep." } },
                { "hangup": "Thank you. Goodbye." }
            ] } },
            { "id": "after", "action": "log", "input": { "message": "call from {{ event[\"call\"].from }} took {{ steps.answer.output.path }}" } }
        ]
    })
}

/// The path part of the URL a document's last `<Redirect>` (or an action) posts to.
fn action_path(verbs: &[Element]) -> String {
    let redirect = verbs.iter().rev().find(|v| v.0 == "Redirect").expect("a Redirect");
    redirect.2.strip_prefix(PUBLIC).unwrap().to_owned()
}

/// An account with a Twilio connection, the support line bound to `NUMBER`; returns
/// `(key, connection id, workflow id, number id)`.
async fn setup(app: &TestApp) -> (String, String, String, String) {
    let (_, key) = app.account("studio").await;
    let (status, conn) = app
        .post_json("/v1/connections", &key, &json!({ "provider": "twilio", "name": "main", "credentials": { "account_sid": SID, "auth_token": TOKEN } }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{conn}");
    let wf = app.workflow(&key, &support_line()).await;
    let (status, number) = app.post_json("/v1/numbers", &key, &json!({ "number": NUMBER, "connection": "main", "workflow_id": wf["id"] })).await;
    assert_eq!(status, StatusCode::CREATED, "{number}");
    let conn_id = conn["id"].as_str().unwrap().to_owned();
    assert_eq!(number["voice_url"], format!("{PUBLIC}/callbacks/twilio/{conn_id}/voice"));
    assert_eq!(number["status_url"], format!("{PUBLIC}/callbacks/twilio/{conn_id}/voice/status"));
    (key, conn_id, wf["id"].as_str().unwrap().to_owned(), number["id"].as_str().unwrap().to_owned())
}

fn incoming(call_sid: &'static str) -> [(&'static str, &'static str); 7] {
    [
        ("CallSid", call_sid),
        ("AccountSid", SID),
        ("From", CALLER),
        ("To", NUMBER),
        ("CallerName", "ADA LOVELACE"),
        ("Direction", "inbound"),
        ("CallStatus", "ringing"),
    ]
}

/// A caller presses an invalid key, then 2, and reaches support's `<Dial>`; the number's status
/// callback ends the call; the run's next step runs; the minutes are billed once.
async fn a_caller_reaches_support_through_the_menu(db: TestDb) {
    let app = TestApp::new(db).await;
    let (key, conn, workflow_id, _) = setup(&app).await;
    let voice = format!("/callbacks/twilio/{conn}/voice");
    let call = "CA00000000000000000000000000000001";
    let (_, account) = app.get("/v1/account", &key).await;
    let mut live = app.engine.events().subscribe(account["id"].as_str().unwrap());

    let (status, first) = signed(&app, &voice, &incoming(call)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let doc = verbs(&first);
    assert_eq!(names(&doc), ["Say", "Gather", "Gather/Say", "Redirect"], "{first}");
    assert_eq!(doc[0].2, "Welcome to Studio Ada.");
    // Twilio repeating the webhook gets the same document and starts no second run.
    assert_eq!(signed(&app, &voice, &incoming(call)).await.1, first);
    let (_, runs) = app.get(&format!("/v1/runs?workflow_id={workflow_id}"), &key).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    let run_id = runs["runs"][0]["id"].as_str().unwrap().to_owned();
    app.drain().await;
    assert_eq!(timeline(&app.run(&key, &run_id).await), ["answer:waiting"]);

    let menu = action_path(&doc);
    assert!(menu.ends_with("?node=menu"), "{menu}");
    let (_, again) = signed(&app, &menu, &[("CallSid", call), ("Digits", "7")]).await;
    let doc = verbs(&again);
    assert_eq!(names(&doc), ["Gather", "Gather/Say", "Gather/Say", "Redirect"], "{again}");
    assert_eq!(doc[1].2, "Sorry, that is not an option.");
    let (_, dial) = signed(&app, &menu, &[("CallSid", call), ("Digits", "2")]).await;
    let doc = verbs(&dial);
    assert_eq!(names(&doc), ["Dial", "Dial/Number", "Redirect"], "{dial}");
    assert_eq!(doc[1].2, SUPPORT);
    let (_, bye) = signed(&app, &action_path(&doc), &[("CallSid", call), ("DialCallStatus", "completed"), ("DialCallDuration", "95")]).await;
    assert_eq!(names(&verbs(&bye)), ["Hangup"], "{bye}");

    let status_path = format!("{voice}/status");
    let completed = [("CallSid", call), ("CallStatus", "completed"), ("SequenceNumber", "4"), ("CallDuration", "130")];
    assert_eq!(signed(&app, &status_path, &completed).await.0, StatusCode::NO_CONTENT);
    assert_eq!(signed(&app, &status_path, &completed).await.0, StatusCode::NO_CONTENT);
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["answer:succeeded", "after:succeeded"], "{run}");
    let output = &run["steps"][0]["output"];
    assert_eq!(output["path"], json!(["#0", "menu", "menu", "support"]), "{output}");
    assert_eq!(output["inputs"]["support"], json!({ "status": "completed", "duration_s": 95 }));
    assert_eq!((output["direction"].as_str(), output["billable_minutes"].as_i64()), (Some("inbound"), Some(3)));
    let minutes: Vec<&Value> = run["usage"].as_array().unwrap().iter().filter(|u| u["unit"] == "voice_minute_standard").collect();
    assert_eq!((minutes.len(), minutes[0]["quantity"].as_i64()), (1, Some(3)), "billed once: {run}");
    assert_eq!(run["steps"][1]["output"]["message"], format!("call from {CALLER} took [\"#0\",\"menu\",\"menu\",\"support\"]"));

    // The account's live stream heard the call move: each node reached, then its end.
    let mut heard = Vec::new();
    while let Ok(Ok(event)) = tokio::time::timeout(std::time::Duration::from_millis(200), live.recv()).await {
        if let Some(call) = &event.call {
            heard.push(format!("{}:{}", call["status"].as_str().unwrap(), call["node"].as_str().unwrap_or("-")));
        }
    }
    assert_eq!(heard, ["in-progress:menu", "in-progress:menu", "in-progress:support", "in-progress:support", "completed:support"], "{heard:?}");
}

/// Nobody at support: the dial's no-answer takes the caller to voicemail, whose recording is
/// in the output.
async fn no_answer_at_support_records_a_voicemail(db: TestDb) {
    let app = TestApp::new(db).await;
    let (key, conn, workflow_id, _) = setup(&app).await;
    let voice = format!("/callbacks/twilio/{conn}/voice");
    let call = "CA00000000000000000000000000000002";
    let (_, first) = signed(&app, &voice, &incoming(call)).await;
    let (_, dial) = signed(&app, &action_path(&verbs(&first)), &[("CallSid", call), ("Digits", "2")]).await;
    let (_, record) = signed(&app, &action_path(&verbs(&dial)), &[("CallSid", call), ("DialCallStatus", "no-answer")]).await;
    let doc = verbs(&record);
    assert_eq!(names(&doc), ["Say", "Record", "Redirect"], "{record}");
    let recording = "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings/RE1";
    let (_, bye) = signed(&app, &action_path(&doc), &[("CallSid", call), ("RecordingUrl", recording), ("RecordingDuration", "12")]).await;
    assert_eq!(verbs(&bye)[0].2, "Thank you. Goodbye.");
    signed(&app, &format!("{voice}/status"), &[("CallSid", call), ("CallStatus", "completed"), ("SequenceNumber", "3"), ("CallDuration", "50")]).await;
    app.drain().await;
    let (_, runs) = app.get(&format!("/v1/runs?workflow_id={workflow_id}"), &key).await;
    let run = app.run(&key, runs["runs"][0]["id"].as_str().unwrap()).await;
    let output = &run["steps"][0]["output"];
    assert_eq!(output["inputs"]["voicemail"], json!({ "recording_url": recording, "duration_s": 12 }), "{output}");
    assert_eq!(output["path"], json!(["#0", "menu", "support", "voicemail", "#6"]));
}

/// An unbound number says it is not in service; bad signatures change nothing; binding rules.
async fn unbound_numbers_bad_signatures_and_binding_rules(db: TestDb) {
    let app = TestApp::new(db).await;
    let (key, conn, workflow_id, number_id) = setup(&app).await;
    let voice = format!("/callbacks/twilio/{conn}/voice");
    let unbound = [("CallSid", "CA9"), ("From", CALLER), ("To", "+15550001234")];
    let (status, answer) = signed(&app, &voice, &unbound).await;
    assert_eq!(status, StatusCode::OK);
    let doc = verbs(&answer);
    assert_eq!(names(&doc), ["Say", "Hangup"]);
    assert!(doc[0].2.contains("not in service"), "{answer}");

    let pairs: Vec<(String, String)> = incoming("CA3").iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    for signature in [None, Some(sign("wrong", &format!("{PUBLIC}{voice}"), &pairs)), Some(sign(TOKEN, &format!("{PUBLIC}/elsewhere"), &pairs))] {
        assert_eq!(post_form(&app, &voice, &incoming("CA3"), signature).await.0, StatusCode::FORBIDDEN);
    }
    let (_, runs) = app.get(&format!("/v1/runs?workflow_id={workflow_id}"), &key).await;
    assert_eq!(runs["runs"], json!([]), "a forged call starts nothing");
    assert_eq!(signed(&app, "/callbacks/twilio/nosuch/voice", &incoming("CA3")).await.0, StatusCode::NOT_FOUND);

    // A disabled workflow does not answer.
    let (status, _) = app.call("POST", &format!("/v1/workflows/{workflow_id}/disable"), Some(&key), None, Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(signed(&app, &voice, &incoming("CA4")).await.1.contains("not in service"));

    // Saving: a call workflow starts with voice.answer, and voice.answer is nowhere else.
    let mut bad = support_line();
    bad["steps"].as_array_mut().unwrap().reverse();
    let (status, body) = app.post_json("/v1/workflows", &key, &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let paths: Vec<&str> = body["error"]["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["steps[0]", "steps[1]"], "{body}");
    let hook = json!({ "name": "w", "trigger": { "webhook": {} }, "steps": [{ "id": "log", "action": "log", "input": { "message": "x" } }] });
    let hook = app.workflow(&key, &hook).await;
    let (status, body) = app.post_json("/v1/numbers", &key, &json!({ "number": "+15550001235", "connection": "main", "workflow_id": hook["id"] })).await;
    assert_eq!((status, body["error"]["details"][0]["path"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("workflow_id")), "{body}");
    let (status, body) = app.post_json("/v1/numbers", &key, &json!({ "number": "555", "connection": "nope", "workflow_id": "nope" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"].as_array().unwrap().len(), 3, "{body}");

    // A number belongs to one account.
    let (_, other) = app.account("other").await;
    app.post_json("/v1/connections", &other, &json!({ "provider": "twilio", "name": "main", "sandbox": true })).await;
    let theirs = app.workflow(&other, &support_line()).await;
    let (status, _) = app.post_json("/v1/numbers", &other, &json!({ "number": NUMBER, "connection": "main", "workflow_id": theirs["id"] })).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app.call("DELETE", &format!("/v1/numbers/{number_id}"), Some(&other), None, Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another account's number");
    let (_, list) = app.get("/v1/numbers", &other).await;
    assert_eq!(list["numbers"], json!([]));
    let (status, _) = app.call("DELETE", &format!("/v1/numbers/{number_id}"), Some(&key), None, Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(signed(&app, &voice, &incoming("CA5")).await.1.contains("not in service"), "unbound now");
}

/// The same flow without a phone: `POST /v1/numbers/{id}/simulate` answers the path, every
/// document and the outcome, as a test run.
async fn a_call_is_simulated_without_a_phone(db: TestDb) {
    let app = TestApp::new(db).await;
    let (key, _, _, number_id) = setup(&app).await;
    let body = json!({ "from": CALLER, "inputs": { "menu": { "digits": "2" }, "support": { "status": "no-answer" } } });
    let (status, answer) = app.post_json(&format!("/v1/numbers/{number_id}/simulate"), &key, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["path"], json!(["#0", "menu", "support", "voicemail", "#6"]), "{answer}");
    let documents = answer["twiml"].as_array().unwrap();
    assert_eq!(documents.len(), 4, "{answer}");
    assert_eq!(names(&verbs(documents[1].as_str().unwrap())), ["Dial", "Dial/Number", "Redirect"]);
    assert_eq!(names(&verbs(documents[2].as_str().unwrap())), ["Say", "Record", "Redirect"]);
    assert_eq!((answer["outcome"]["status"].as_str(), answer["run_status"].as_str()), (Some("completed"), Some("succeeded")));
    let run = app.run(&key, answer["run_id"].as_str().unwrap()).await;
    assert_eq!((run["test"].as_bool(), run["usage"].clone()), (Some(true), json!([])), "a test run, not billed: {run}");
    let (status, body) = app.post_json(&format!("/v1/numbers/{number_id}/simulate"), &key, &json!({ "from": "me" })).await;
    assert_eq!((status, body["error"]["details"][0]["path"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("from")));
    let (_, other) = app.account("other").await;
    let valid = json!({ "from": CALLER });
    assert_eq!(app.post_json(&format!("/v1/numbers/{number_id}/simulate"), &other, &valid).await.0, StatusCode::NOT_FOUND);
}

on_both_backends!(
    a_caller_reaches_support_through_the_menu,
    no_answer_at_support_records_a_voicemail,
    unbound_numbers_bad_signatures_and_binding_rules,
    a_call_is_simulated_without_a_phone,
);

/// A `request` node mid-call: its JSON answer is read by the script; a failing one takes its
/// `on_error` branch and the call goes on.
async fn a_request_mid_call_feeds_the_script_and_its_failure_takes_a_branch(db: TestDb) {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/accounts/+15557654321"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "balance": 42 })))
        .mount(&api)
        .await;
    Mock::given(method("GET")).and(path("/accounts/+15550000000")).respond_with(ResponseTemplate::new(500)).mount(&api).await;
    let app = TestApp::new(db).await;
    let (key, conn, _, number_id) = setup(&app).await;
    let lookup = json!({ "name": "Balance line", "trigger": { "call": {} }, "steps": [
        { "id": "answer", "action": "voice.answer", "input": { "script": [
            { "request": { "url": format!("{}/accounts/{{{{ call.from }}}}", api.uri()), "save_as": "account", "on_error": "sorry" } },
            { "say": "Your balance is {{ vars.account.balance }} dollars.", "goto": "hangup" },
            { "id": "sorry", "hangup": "Sorry, we cannot find your account." }
        ] } }
    ] });
    let wf = app.workflow(&key, &lookup).await;
    let (status, _) =
        app.call("PUT", &format!("/v1/numbers/{number_id}"), Some(&key), Some("application/json"), json!({ "workflow_id": wf["id"] }).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let voice = format!("/callbacks/twilio/{conn}/voice");
    let (_, found) = signed(&app, &voice, &incoming("CA00000000000000000000000000000010")).await;
    assert_eq!(verbs(&found)[0].2, "Your balance is 42 dollars.", "{found}");
    let unknown = [("CallSid", "CA00000000000000000000000000000011"), ("From", "+15550000000"), ("To", NUMBER)];
    let (_, sorry) = signed(&app, &voice, &unknown).await;
    assert_eq!(names(&verbs(&sorry)), ["Say", "Hangup"]);
    assert_eq!(verbs(&sorry)[0].2, "Sorry, we cannot find your account.", "{sorry}");
}

on_both_backends!(a_request_mid_call_feeds_the_script_and_its_failure_takes_a_branch);

/// The `support-line` template: during business hours the menu transfers the caller; after
/// hours the caller leaves a voicemail and the run makes a CRM task with the recording. The same
/// two calls simulated without a phone.
async fn support_line_answers_by_business_hours(db: TestDb) {
    let app = TestApp::new(db).await;
    let (key, conn, _, number_id) = setup(&app).await;
    let (status, body) = app.post_json("/v1/connections", &key, &json!({ "provider": "crm", "name": "crm", "sandbox": true })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Open 09:00–17:00 New York time on weekdays. The test clock starts on Friday 2027-01-15 at
    // 08:00 UTC (03:00 in New York): closed.
    let weekday = json!(["09:00-17:00"]);
    let schedule = json!({ "name": "office", "timezone": "America/New_York",
        "weekly": { "mon": weekday, "tue": weekday, "wed": weekday, "thu": weekday, "fri": weekday } });
    let (status, body) = app.post_json("/v1/schedules", &key, &schedule).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let params = json!({ "business_name": "Studio Ada", "billing_number": "+15550001111", "support_number": SUPPORT,
        "general_number": "+15550003333", "agent_number": "+15550004444" });
    let (status, wf) = app.post_json("/v1/templates/support-line/enable", &key, &json!({ "params": params })).await;
    assert_eq!(status, StatusCode::CREATED, "{wf}");
    let (status, _) =
        app.call("PUT", &format!("/v1/numbers/{number_id}"), Some(&key), Some("application/json"), json!({ "workflow_id": wf["id"] }).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let voice = format!("/callbacks/twilio/{conn}/voice");

    // After hours: straight to voicemail, then a task with the recording.
    let call = "CA00000000000000000000000000000020";
    let (_, closed) = signed(&app, &voice, &incoming(call)).await;
    let doc = verbs(&closed);
    assert_eq!(names(&doc), ["Say", "Say", "Say", "Record", "Redirect"], "{closed}");
    assert_eq!(doc[1].2, "We are closed right now.");
    let recording = "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings/RE20";
    signed(&app, &action_path(&doc), &[("CallSid", call), ("RecordingUrl", recording), ("RecordingDuration", "21")]).await;
    signed(&app, &format!("{voice}/status"), &[("CallSid", call), ("CallStatus", "completed"), ("SequenceNumber", "3"), ("CallDuration", "40")]).await;
    app.drain().await;
    let (_, runs) = app.get(&format!("/v1/runs?workflow_id={}", wf["id"].as_str().unwrap()), &key).await;
    let run_id = runs["runs"][0]["id"].as_str().unwrap().to_owned();
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["answer:succeeded", "left_a_message:succeeded", "voicemail_task:succeeded"], "{run}");
    let (_, outbox) = app.get(&format!("/v1/outbox?run_id={run_id}"), &key).await;
    let notes = outbox["messages"][0]["rendered"]["body"]["notes"].as_str().unwrap_or_default().to_owned();
    assert!(notes.contains(recording) && notes.contains("21-second"), "{outbox}");

    // During hours (10:00 in New York): the menu; 2 reaches support.
    app.clock.advance(7 * 3_600_000);
    let call = "CA00000000000000000000000000000021";
    let (_, open) = signed(&app, &voice, &incoming(call)).await;
    let doc = verbs(&open);
    assert_eq!(names(&doc), ["Say", "Gather", "Gather/Say", "Redirect"], "{open}");
    let (_, dial) = signed(&app, &action_path(&doc), &[("CallSid", call), ("Digits", "2")]).await;
    assert_eq!(verbs(&dial)[1].2, SUPPORT, "{dial}");

    // The same two calls without a phone.
    app.clock.advance(12 * 3_600_000); // 22:00 in New York: closed
    let (_, after) = app.post_json(&format!("/v1/numbers/{number_id}/simulate"), &key, &json!({ "from": CALLER })).await;
    assert_eq!(after["path"], json!(["#0", "open_check", "after_hours", "voicemail", "#10"]), "{after}");
    assert_eq!(after["run_status"], "succeeded");
    app.clock.advance(12 * 3_600_000); // Saturday 10:00: closed all day
    let (_, weekend) = app.post_json(&format!("/v1/numbers/{number_id}/simulate"), &key, &json!({ "from": CALLER })).await;
    assert_eq!(weekend["path"][2], "after_hours", "{weekend}");
    app.clock.advance(48 * 3_600_000); // Monday 10:00: open
    let body = json!({ "from": CALLER, "inputs": { "menu": { "digits": "2" } } });
    let (_, open) = app.post_json(&format!("/v1/numbers/{number_id}/simulate"), &key, &body).await;
    assert_eq!(open["path"], json!(["#0", "open_check", "menu", "support"]), "{open}");
}

on_both_backends!(support_line_answers_by_business_hours);

/// `hours("name")` reads the account's schedules in any workflow's Rhai too (a branch, a set).
async fn workflows_branch_on_business_hours(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    // Open on Fridays from 07:00 to 09:00 UTC; the test clock starts on a Friday at 08:00 UTC.
    let schedule = json!({ "name": "office", "timezone": "UTC", "weekly": { "fri": ["07:00-09:00"] } });
    assert_eq!(app.post_json("/v1/schedules", &key, &schedule).await.0, StatusCode::CREATED);
    let wf = app
        .workflow(
            &key,
            &json!({ "name": "hours", "trigger": { "manual": {} }, "steps": [
            { "id": "check", "set": { "open": "hours(\"office\")" } },
            { "id": "route", "branch": [{ "when": "hours(\"office\")", "goto": "open" }, { "else": "closed" }] },
            { "id": "open", "action": "log", "input": { "message": "open" } },
            { "id": "done", "end": {} },
            { "id": "closed", "action": "log", "input": { "message": "closed" } }
        ] }),
        )
        .await;
    let id = wf["id"].as_str().unwrap();
    let run = app.start(&key, id, &json!({})).await;
    app.drain().await;
    let run = app.run(&key, &run).await;
    assert_eq!(timeline(&run), ["check:succeeded", "route:succeeded", "open:succeeded", "done:succeeded"], "{run}");
    assert_eq!(run["steps"][0]["output"], json!({ "open": true }));
    app.clock.advance(2 * 3_600_000);
    let run = app.start(&key, id, &json!({})).await;
    app.drain().await;
    assert_eq!(timeline(&app.run(&key, &run).await), ["check:succeeded", "route:succeeded", "closed:succeeded"]);
}

on_both_backends!(workflows_branch_on_business_hours);
