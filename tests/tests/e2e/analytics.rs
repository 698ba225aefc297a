//! Call analytics end to end: a known set of calls placed through a fake Twilio and driven with
//! signed callbacks (three completed, one of them premium; a no-answer, a busy, one Twilio
//! refused, one still ringing; across two workflows), a second account with a call of its own,
//! then the exact figures of the call history (filters, pages, costs), its CSV export, a
//! workflow's stats (runs, steps, script nodes) and the dashboard of the account's day.
//!
//! Calls and runs are stamped with the engine's clock, a manual one here, set to the wall clock
//! first; the account's timezone is picked so that its local time is about noon (runs are then
//! placed just before and just after its local midnight).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Timelike;
use serde_json::{Value, json};
use switchboard_runtime::engine::EngineConfig;
use tower::ServiceExt;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

use crate::on_both_backends;
use crate::openapi::{assert_conforms, fetch_document};
use crate::support::{ADMIN, TestApp, TestDb, actions_config};
use crate::voice::{PUBLIC, SID, connection, field, signed};

const CALLER: &str = "+15550001111";
/// Twilio refuses calls to this number (a geographic permission missing).
const REFUSED: &str = "+15559990000";
const DAY: i64 = 86_400_000;

/// A fake Twilio Calls API: every call gets its own `CallSid` (`CA` + the first 32 hex digits
/// of its callback token); calls to [`REFUSED`] are refused with a 400.
struct CreateCall;

impl Respond for CreateCall {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&request.body).unwrap();
        if field(&form, "To") == [REFUSED] {
            return ResponseTemplate::new(400).set_body_json(json!({
                "code": 21215, "message": format!("Geographic permission not enabled for {REFUSED}"), "status": 400
            }));
        }
        let token = field(&form, "Url")[0].rsplit('/').next().unwrap().to_owned();
        ResponseTemplate::new(201).set_body_json(json!({ "sid": sid_of(&token), "account_sid": SID, "status": "queued", "direction": "outbound-api" }))
    }
}

fn sid_of(token: &str) -> String {
    format!("CA{}", &token[..32])
}

async fn fake_twilio() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Calls\.json$")).respond_with(CreateCall).mount(&server).await;
    server
}

/// The forms of every Calls request Twilio received, in order.
async fn creates(twilio: &MockServer) -> Vec<Vec<(String, String)>> {
    let requests = twilio.received_requests().await.unwrap();
    requests.iter().filter(|r| r.url.path().ends_with("/Calls.json")).map(|r| serde_urlencoded::from_bytes(&r.body).unwrap()).collect()
}

/// The appointment script: a greeting, a one-key menu, and its two branches.
fn appointment() -> Value {
    json!([
        { "say": "Hi {{ event.first_name }}, this is Acme Studio." },
        { "id": "confirm", "menu": {
            "prompt": "Press 1 to keep your appointment, or 2 to move it.",
            "options": { "1": "kept", "2": "moved" },
            "invalid_prompt": "Sorry, that is not an option." } },
        { "id": "kept", "say": "Thank you, see you then.", "goto": "hangup" },
        { "id": "moved", "gather": { "input": "speech", "prompt": "Which day suits you?" } },
        { "hangup": "We will call you back." }
    ])
}

/// The premium offer: a greeting, a menu, the offer.
fn offer() -> Value {
    json!([
        { "say": "Hello from Acme Studio." },
        { "id": "offer", "menu": { "prompt": "Press 1 to hear this week's offer.", "options": { "1": "accept" } } },
        { "id": "accept", "say": "Fifteen percent off, this week only." }
    ])
}

/// A manual workflow that calls `event.phone` with `script`, then logs how the call ended.
fn calling(name: &str, tier: &str, script: Value) -> Value {
    json!({
        "name": name,
        "trigger": { "manual": {} },
        "steps": [
            { "id": "phone", "action": "voice.call", "input": { "to": "{{ event.phone }}", "from": CALLER, "tier": tier, "script": script } },
            { "id": "note", "action": "log", "input": { "message": "call ended {{ steps.phone.output.status }}" } }
        ]
    })
}

/// A call placed by a run: its callback path and its `CallSid`.
struct Placed {
    run_id: String,
    path: String,
    sid: String,
}

/// Starts a run of `workflow` that calls `phone`; returns the call Twilio was asked to place.
async fn place(app: &TestApp, twilio: &MockServer, key: &str, workflow: &str, phone: &str) -> Placed {
    app.advance(1_500).await; // one call a second per connection
    let before = creates(twilio).await.len();
    let run_id = app.start(key, workflow, &json!({ "first_name": "Ada", "phone": phone })).await;
    app.drain().await;
    let forms = creates(twilio).await;
    assert_eq!(forms.len(), before + 1, "one call placed");
    let path = field(&forms[before], "Url")[0].strip_prefix(PUBLIC).unwrap().to_owned();
    let sid = sid_of(path.rsplit('/').next().unwrap());
    Placed { run_id, path, sid }
}

/// Twilio fetching the first document of an answered call.
async fn answer(app: &TestApp, call: &Placed) {
    let params = [("CallSid", call.sid.as_str()), ("AccountSid", SID), ("CallStatus", "in-progress"), ("AnsweredBy", "human")];
    let (status, twiml) = signed(app, &call.path, &params).await;
    assert_eq!(status, StatusCode::OK, "{twiml}");
}

/// The caller answering `node` with `params` (`Digits`, `SpeechResult`, …).
async fn reply(app: &TestApp, call: &Placed, node: &str, params: &[(&str, &str)]) {
    let mut all = vec![("CallSid", call.sid.as_str())];
    all.extend_from_slice(params);
    let (status, twiml) = signed(app, &format!("{}?node={node}", call.path), &all).await;
    assert_eq!(status, StatusCode::OK, "{twiml}");
}

/// A status callback; a final status is followed by a drain (the run goes on).
async fn report(app: &TestApp, call: &Placed, seq: &str, status: &str, duration_s: &str) {
    let params = [("CallSid", call.sid.as_str()), ("AccountSid", SID), ("CallStatus", status), ("SequenceNumber", seq), ("CallDuration", duration_s)];
    let (code, body) = signed(app, &format!("{}/status", call.path), &params).await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    app.drain().await;
}

/// Creates an account in `timezone`; returns its API key.
async fn account(app: &TestApp, name: &str, timezone: &str) -> String {
    let body = json!({ "name": name, "plan": "starter", "timezone": timezone }).to_string();
    let (status, created) = app.call("POST", "/v1/accounts", Some(ADMIN), Some("application/json"), body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["api_key"].as_str().unwrap().to_owned()
}

/// Sets the manual clock to `at` (ms), backwards too.
fn set_clock(app: &TestApp, at: i64) {
    app.clock.advance(at - app.now());
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A GET whose answer is not JSON: the status, the content type and the body.
async fn get_raw(app: &TestApp, path: &str, key: &str) -> (StatusCode, String, String) {
    let req = Request::get(path).header("authorization", format!("Bearer {key}")).body(Body::empty()).unwrap();
    let res = switchboard_api::router(app.state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let content_type = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    (status, content_type, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn ok(app: &TestApp, path: &str, key: &str) -> Value {
    let (status, body) = app.get(path, key).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

fn ids(placed: &[&Placed]) -> Vec<String> {
    placed.iter().map(|c| c.run_id.clone()).collect()
}

fn calls(list: &Value) -> Vec<Value> {
    list["calls"].as_array().unwrap_or_else(|| panic!("{list}")).clone()
}

fn run_ids(list: &Value) -> Vec<String> {
    calls(list).iter().map(|c| c["run_id"].as_str().unwrap().to_owned()).collect()
}

/// A JSON value as its CSV field: `null` is empty.
fn csv_field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The CSV export's header and rows, checked to be the same calls as `list`, field by field.
fn assert_csv_is(text: &str, list: &[Value]) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, switchboard_api::routes::analytics::CSV_COLUMNS);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), list.len(), "{text}");
    for (row, call) in rows.iter().zip(list) {
        let expected: Vec<String> = header.iter().map(|column| csv_field(&call[column])).collect();
        assert_eq!(row.iter().collect::<Vec<_>>(), expected, "{text}");
    }
}

async fn calls_are_counted_filtered_exported_and_kept_apart(db: TestDb) {
    let twilio = fake_twilio().await;
    let mut config = actions_config();
    config.api_bases.set("twilio", twilio.uri());
    let app = TestApp::build(db, EngineConfig::default(), config, None, None).await;
    let doc = fetch_document(&switchboard_api::router(app.state.clone())).await;

    // The wall clock, in a timezone where it is about noon: the local day is around it.
    let wall = chrono::Utc::now();
    set_clock(&app, wall.timestamp_millis());
    let offset_h = 12 - i64::from(wall.hour());
    let timezone = match offset_h {
        0 => "Etc/GMT".to_owned(),
        h if h > 0 => format!("Etc/GMT-{h}"), // IANA's Etc signs are inverted: Etc/GMT-3 is UTC+3
        h => format!("Etc/GMT+{}", -h),
    };
    let offset = offset_h * 3_600_000;
    let midnight = (app.now() + offset).div_euclid(DAY) * DAY - offset;

    let key = account(&app, "studio", &timezone).await;
    let other = account(&app, "elsewhere", &timezone).await;
    connection(&app, &key, false).await;
    connection(&app, &other, false).await;
    let confirm = app.workflow(&key, &calling("confirm by phone", "standard", appointment())).await["id"].as_str().unwrap().to_owned();
    let premium = app.workflow(&key, &calling("premium offer", "premium", offer())).await["id"].as_str().unwrap().to_owned();
    let logging = json!({ "name": "log only", "trigger": { "manual": {} }, "steps": [{ "id": "note", "action": "log", "input": { "message": "hi" } }] });
    let logging = app.workflow(&key, &logging).await["id"].as_str().unwrap().to_owned();
    let theirs = app.workflow(&other, &calling("their calls", "standard", appointment())).await["id"].as_str().unwrap().to_owned();

    // A run a minute before local midnight (yesterday), one a minute after (today), a test run.
    for at in [midnight - 60_000, midnight + 60_000] {
        set_clock(&app, at);
        app.start(&key, &logging, &json!({})).await;
        app.drain().await;
    }
    set_clock(&app, wall.timestamp_millis());
    let (status, tested) = app.post_json(&format!("/v1/workflows/{logging}/test"), &key, &json!({ "event": {} })).await;
    assert_eq!(status, StatusCode::OK, "{tested}");

    // 1: answered, a wrong key then 1; 75 s (2 minutes); the run takes 80 s.
    let c1 = place(&app, &twilio, &key, &confirm, "+15552220001").await;
    answer(&app, &c1).await;
    reply(&app, &c1, "confirm", &[("Digits", "7")]).await;
    reply(&app, &c1, "confirm", &[("Digits", "1")]).await;
    app.advance(80_000).await;
    report(&app, &c1, "3", "completed", "75").await;
    // 2: answered, 2 then a day said; 130 s (3 minutes); the run takes 140 s.
    let c2 = place(&app, &twilio, &key, &confirm, "+15552220002").await;
    answer(&app, &c2).await;
    reply(&app, &c2, "confirm", &[("Digits", "2")]).await;
    reply(&app, &c2, "moved", &[("SpeechResult", "next Tuesday"), ("Confidence", "0.9")]).await;
    app.advance(140_000).await;
    report(&app, &c2, "3", "completed", "130").await;
    // 3: premium, answered, 1; 61 s (2 premium minutes).
    let c3 = place(&app, &twilio, &key, &premium, "+15552220003").await;
    answer(&app, &c3).await;
    reply(&app, &c3, "offer", &[("Digits", "1")]).await;
    app.advance(70_000).await;
    report(&app, &c3, "3", "completed", "61").await;

    // Calls are stamped with the engine's clock: the next ones are placed a second after `mid`.
    let mid = app.now();
    app.advance(1_000).await;

    // 4: nobody answers; the run takes 30 s. 5: busy. 6: refused by Twilio. 7: still ringing.
    let c4 = place(&app, &twilio, &key, &confirm, "+15552220004").await;
    report(&app, &c4, "1", "ringing", "0").await;
    app.advance(30_000).await;
    report(&app, &c4, "3", "no-answer", "0").await;
    let c5 = place(&app, &twilio, &key, &premium, "+15552220005").await;
    report(&app, &c5, "3", "busy", "0").await;
    let c6 = place(&app, &twilio, &key, &confirm, REFUSED).await;
    assert_eq!(app.run(&key, &c6.run_id).await["status"], "failed");
    let c7 = place(&app, &twilio, &key, &confirm, "+15552220007").await;
    report(&app, &c7, "0", "initiated", "0").await;
    report(&app, &c7, "1", "ringing", "0").await;
    // The other account's call: answered, 1; 30 s.
    let theirs_call = place(&app, &twilio, &other, &theirs, "+15553330001").await;
    answer(&app, &theirs_call).await;
    reply(&app, &theirs_call, "confirm", &[("Digits", "1")]).await;
    report(&app, &theirs_call, "3", "completed", "30").await;

    // ---- The call history ---------------------------------------------------------------------
    let all = ok(&app, "/v1/calls", &key).await;
    assert_conforms(&doc, "CallList", &all);
    let newest_first = ids(&[&c7, &c6, &c5, &c4, &c3, &c2, &c1]);
    assert_eq!(run_ids(&all), newest_first, "{all}");
    assert_eq!(all["next_cursor"], Value::Null);
    let list = calls(&all);
    let by_run = |c: &Placed| list.iter().find(|x| x["run_id"] == c.run_id.as_str()).unwrap().clone();
    let first = by_run(&c1);
    assert_eq!(
        first,
        json!({
            "call_sid": c1.sid, "direction": "outbound", "from": CALLER, "to": "+15552220001", "status": "completed", "answered_by": "human",
            "duration_s": 75, "billable_minutes": 2, "cost_micros": 160_000, "workflow_id": confirm, "run_id": c1.run_id, "step_id": "phone",
            "recording_url": null, "started_at": first["started_at"]
        })
    );
    let started = chrono::DateTime::parse_from_rfc3339(first["started_at"].as_str().unwrap()).unwrap().timestamp_millis();
    assert!((wall.timestamp_millis()..mid).contains(&started), "placed when it was placed: {first}");
    let figures = |c: &Placed| {
        let call = by_run(c);
        (
            call["status"].as_str().unwrap().to_owned(),
            call["duration_s"].as_i64(),
            call["billable_minutes"].as_i64().unwrap(),
            call["cost_micros"].as_i64().unwrap(),
        )
    };
    assert_eq!(figures(&c2), ("completed".into(), Some(130), 3, 240_000));
    assert_eq!(figures(&c3), ("completed".into(), Some(61), 2, 700_000), "premium minutes at $0.35");
    assert_eq!(figures(&c4), ("no-answer".into(), Some(0), 0, 0));
    assert_eq!(figures(&c5), ("busy".into(), Some(0), 0, 0));
    assert_eq!(figures(&c6), ("refused".into(), Some(0), 0, 0));
    assert_eq!(figures(&c7), ("ringing".into(), None, 0, 0));
    assert_eq!((by_run(&c6)["call_sid"].clone(), by_run(&c6)["to"].clone()), (Value::Null, json!(REFUSED)), "Twilio never named it");
    assert_eq!(by_run(&c3)["workflow_id"], premium.as_str());
    let total: i64 = list.iter().map(|c| c["cost_micros"].as_i64().unwrap()).sum();
    assert_eq!(total, 1_100_000);

    // Pages of 3, chained by cursor: the same calls, in the same order.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/v1/calls?limit=3&cursor={c}"),
            None => "/v1/calls?limit=3".to_owned(),
        };
        let page = ok(&app, &uri, &key).await;
        pages += 1;
        paged.extend(run_ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!((pages, paged), (3, newest_first.clone()));

    // Filters.
    let filtered = |query: &'static str| {
        let (app, key) = (&app, &key);
        async move { run_ids(&ok(app, &format!("/v1/calls?{query}"), key).await) }
    };
    assert_eq!(filtered("status=completed").await, ids(&[&c3, &c2, &c1]));
    assert_eq!(filtered("status=refused").await, ids(&[&c6]));
    assert_eq!(filtered("status=in-progress").await, Vec::<String>::new());
    assert_eq!(run_ids(&ok(&app, &format!("/v1/calls?workflow_id={premium}"), &key).await), ids(&[&c5, &c3]));
    assert_eq!(filtered("number=%2B15552220004").await, ids(&[&c4]));
    assert_eq!(filtered("number=+15552220004").await, ids(&[&c4]), "an unencoded + is taken as +");
    assert_eq!(filtered("number=%2B15550001111").await.len(), 7, "the caller is a party of every call");
    assert_eq!(filtered("direction=outbound").await.len(), 7);
    assert_eq!(filtered("direction=inbound").await, Vec::<String>::new());
    let to_mid = run_ids(&ok(&app, &format!("/v1/calls?to={}", rfc3339(mid)), &key).await);
    assert_eq!(to_mid, ids(&[&c3, &c2, &c1]));
    let from_mid = run_ids(&ok(&app, &format!("/v1/calls?from={}&status=completed", rfc3339(mid)), &key).await);
    assert_eq!(from_mid, Vec::<String>::new());
    let from_mid = run_ids(&ok(&app, &format!("/v1/calls?from={}&workflow_id={confirm}", rfc3339(mid)), &key).await);
    assert_eq!(from_mid, ids(&[&c7, &c6, &c4]));
    let later = rfc3339(mid + DAY).replace('Z', "+01:00"); // a + of an offset, encoded
    assert_eq!(run_ids(&ok(&app, &format!("/v1/calls?from={}", later.replace('+', "%2B")), &key).await), Vec::<String>::new());

    // Bad filters: 400 with what is wrong.
    for (query, says) in [
        ("from=yesterday", "from must be an RFC 3339 date-time"),
        ("to=2026-12-04", "to must be an RFC 3339 date-time"),
        ("from=2026-12-05T00:00:00Z&to=2026-12-04T00:00:00Z", "from must not be after to"),
        ("status=answered", "status must be one of dialing, queued"),
        ("direction=outbound-api", "direction must be inbound or outbound"),
        ("cursor=nonsense", "cursor 'nonsense' is not one this API gave"),
        ("limit=ten", "invalid query string"),
    ] {
        for path in ["/v1/calls", "/v1/calls/export.csv"] {
            if path.ends_with(".csv") && query.starts_with("cursor") {
                continue; // the export has no pages
            }
            let (status, body) = app.get(&format!("{path}?{query}"), &key).await;
            if path.ends_with(".csv") && query.starts_with("limit") {
                assert_eq!(status, StatusCode::OK, "the export ignores limit");
                continue;
            }
            assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{path}?{query}: {body}");
            assert!(body["error"]["message"].as_str().unwrap().contains(says), "{path}?{query}: {body}");
        }
    }

    // ---- CSV ----------------------------------------------------------------------------------
    let (status, content_type, text) = get_raw(&app, "/v1/calls/export.csv", &key).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "text/csv; charset=utf-8"));
    assert_csv_is(&text, &list);
    let (_, _, text) = get_raw(&app, "/v1/calls/export.csv?status=completed", &key).await;
    assert_csv_is(&text, &calls(&ok(&app, "/v1/calls?status=completed", &key).await));
    let (_, _, text) = get_raw(&app, &format!("/v1/calls/export.csv?workflow_id={premium}&number=%2B15552220005"), &key).await;
    assert_csv_is(&text, &[by_run(&c5)]);
    let (_, _, text) = get_raw(&app, "/v1/calls/export.csv?direction=inbound", &key).await;
    assert_eq!(text.lines().count(), 1, "a header line only: {text}");

    // ---- Workflow stats -----------------------------------------------------------------------
    let stats = ok(&app, &format!("/v1/workflows/{confirm}/stats"), &key).await;
    assert_conforms(&doc, "WorkflowStats", &stats);
    assert_eq!(stats["runs"], json!({ "total": 5, "succeeded": 3, "failed": 1, "cancelled": 0, "active": 1 }), "{stats}");
    assert_eq!(stats["success_rate"], 0.75);
    assert_eq!(stats["avg_duration_ms"], (80_000 + 140_000 + 30_000) / 4, "the refused call's run ended at once");
    assert_eq!(
        stats["steps"],
        json!([
            { "id": "phone", "runs": 5, "succeeded": 3, "failed": 1, "avg_ms": (80_000 + 140_000 + 30_000) / 4 },
            { "id": "note", "runs": 3, "succeeded": 3, "failed": 0, "avg_ms": 0 }
        ])
    );
    assert_eq!(
        stats["nodes"],
        json!([
            { "step_id": "phone", "node_id": "confirm", "visits": 3 },
            { "step_id": "phone", "node_id": "#0", "visits": 2 },
            { "step_id": "phone", "node_id": "#4", "visits": 1 },
            { "step_id": "phone", "node_id": "kept", "visits": 1 },
            { "step_id": "phone", "node_id": "moved", "visits": 1 }
        ])
    );
    let stats = ok(&app, &format!("/v1/workflows/{premium}/stats"), &key).await;
    assert_eq!((stats["runs"]["total"].as_i64(), stats["success_rate"].as_f64()), (Some(2), Some(1.0)), "{stats}");
    let visits: Vec<(String, i64)> =
        stats["nodes"].as_array().unwrap().iter().map(|n| (n["node_id"].as_str().unwrap().to_owned(), n["visits"].as_i64().unwrap())).collect();
    assert_eq!(visits, [("#0".to_owned(), 1), ("accept".to_owned(), 1), ("offer".to_owned(), 1)]);
    // The window: runs started in it; test runs never.
    let stats = ok(&app, &format!("/v1/workflows/{logging}/stats"), &key).await;
    assert_eq!(stats["runs"], json!({ "total": 2, "succeeded": 2, "failed": 0, "cancelled": 0, "active": 0 }), "the test run is left out: {stats}");
    assert_eq!((stats["avg_duration_ms"].as_i64(), &stats["nodes"]), (Some(0), &json!([])));
    let today = ok(&app, &format!("/v1/workflows/{logging}/stats?from={}", rfc3339(midnight)), &key).await;
    assert_eq!((today["runs"]["total"].as_i64(), today["steps"][0]["runs"].as_i64()), (Some(1), Some(1)), "{today}");
    let before = ok(&app, &format!("/v1/workflows/{confirm}/stats?to={}", rfc3339(midnight)), &key).await;
    assert_eq!(
        (&before["runs"]["total"], &before["success_rate"], &before["avg_duration_ms"], &before["nodes"]),
        (&json!(0), &Value::Null, &Value::Null, &json!([]))
    );
    assert_eq!(
        before["steps"],
        json!([{ "id": "phone", "runs": 0, "succeeded": 0, "failed": 0, "avg_ms": null }, { "id": "note", "runs": 0, "succeeded": 0, "failed": 0, "avg_ms": null }])
    );
    let (status, body) = app.get(&format!("/v1/workflows/{confirm}/stats?from=noon"), &key).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // ---- Dashboard ----------------------------------------------------------------------------
    let dashboard = ok(&app, "/v1/dashboard", &key).await;
    assert_conforms(&doc, "Dashboard", &dashboard);
    let mean = (75.0 + 130.0 + 61.0) / 3.0;
    assert!((dashboard["avg_call_duration_s"].as_f64().unwrap() - mean).abs() < 1e-9, "{dashboard}");
    assert!((dashboard["success_rate_today"].as_f64().unwrap() - 6.0 / 7.0).abs() < 1e-9, "yesterday's and the test run left out: {dashboard}");
    assert_eq!((&dashboard["active_calls"], &dashboard["calls_today"], &dashboard["runs_active"]), (&json!(1), &json!(7), &json!(1)), "{dashboard}");
    assert_eq!(
        dashboard["top_workflows"],
        json!([
            { "workflow_id": confirm, "name": "confirm by phone", "runs": 5 },
            { "workflow_id": premium, "name": "premium offer", "runs": 2 },
            { "workflow_id": logging, "name": "log only", "runs": 1 }
        ])
    );
    let theirs_today = ok(&app, "/v1/dashboard", &other).await;
    assert_eq!(
        theirs_today,
        json!({
            "active_calls": 0, "calls_today": 1, "avg_call_duration_s": 30.0, "success_rate_today": 1.0, "runs_active": 0,
            "top_workflows": [{ "workflow_id": theirs, "name": "their calls", "runs": 1 }]
        })
    );
    // A day later (nothing run meanwhile), today is empty; the ringing call is no longer
    // counted as live, its run still is.
    app.clock.advance(DAY);
    let tomorrow = ok(&app, "/v1/dashboard", &key).await;
    assert_eq!(
        tomorrow,
        json!({ "active_calls": 0, "calls_today": 0, "avg_call_duration_s": null, "success_rate_today": null, "runs_active": 1, "top_workflows": [] })
    );

    // ---- The other account ----------------------------------------------------------------------
    let mine = ok(&app, "/v1/calls", &other).await;
    assert_eq!(run_ids(&mine), ids(&[&theirs_call]));
    assert_eq!(calls(&mine)[0]["cost_micros"], 80_000);
    for path in [format!("/v1/calls?workflow_id={confirm}"), "/v1/calls?number=%2B15552220001".to_owned(), "/v1/calls?status=refused".to_owned()] {
        assert_eq!(run_ids(&ok(&app, &path, &other).await), Vec::<String>::new(), "{path}");
    }
    assert_eq!(run_ids(&ok(&app, "/v1/calls?number=%2B15553330001", &key).await), Vec::<String>::new(), "their call is not ours");
    let (_, _, text) = get_raw(&app, "/v1/calls/export.csv", &other).await;
    assert_csv_is(&text, &calls(&mine));
    for (workflow, key) in [(&confirm, &other), (&theirs, &key)] {
        let (status, body) = app.get(&format!("/v1/workflows/{workflow}/stats"), key).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{body}");
    }
    let stats = ok(&app, &format!("/v1/workflows/{theirs}/stats"), &other).await;
    assert_eq!((stats["runs"]["total"].as_i64(), stats["nodes"].as_array().unwrap().len()), (Some(1), 3), "{stats}");
}

on_both_backends!(calls_are_counted_filtered_exported_and_kept_apart);
