//! Fan-out end to end: a `for_each` over 1,000 leads runs one child run each, never more than
//! its concurrency at once, each text sent once and the ledger exact; cancelling the parent
//! cancels its children; bad definitions and lists are refused with their paths; a real `serve`
//! SIGKILLed mid-fan-out starts no item twice and skips none; the birthday campaign.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::on_both_backends;
use crate::support::{TempDir, TestApp, TestDb, timeline};

fn leads(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({ "id": format!("L{i}"), "first_name": format!("Lead{i}"), "phone": format!("+1555{i:07}"), "sender": format!("+1666{i:07}") }))
        .collect()
}

fn blast(concurrency: u32, body: Value) -> Value {
    json!({ "name": "blast", "trigger": { "manual": {} }, "steps": [
        { "id": "each", "for_each": { "items": "{{ event.leads }}", "as": "lead", "concurrency": concurrency, "steps": body } },
        { "id": "after", "action": "log", "input": { "message": "{{ steps.each.output.succeeded }} of {{ steps.each.output.total }}" } }
    ] })
}

fn text() -> Value {
    json!([{ "id": "wish", "action": "sms.send", "input": { "to": "{{ lead.phone }}", "from": "{{ lead.sender }}", "body": "Hi {{ lead.first_name }} (#{{ item_index }})" } }])
}

async fn sandbox_twilio(app: &TestApp, key: &str) {
    let (status, body) = app.post_json("/v1/connections", key, &json!({ "provider": "twilio", "name": "trial", "sandbox": true })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn children(app: &TestApp, key: &str, parent: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = app.get(&format!("/v1/runs?parent_run_id={parent}&limit=200{cursor}"), key).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        out.extend(page["runs"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

/// 1,000 items at concurrency 10: at most 10 children in the queue at any sample, all 1,000
/// done, each text sent once (the outbox), and one `workflow_run` charge per run.
async fn a_thousand_items_ten_at_a_time(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account_on("studio", "enterprise").await;
    sandbox_twilio(&app, &key).await;
    let wf = app.workflow(&key, &blast(10, text())).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({ "leads": leads(1000) })).await;
    let mut most = 0;
    let mut steps = 0;
    loop {
        let done = app.engine.process_due(3).await.unwrap();
        let active = app.engine.store().queued_children(&run_id).await.unwrap().len();
        most = most.max(active);
        assert!(active <= 10, "{active} children in the queue at once");
        steps += done;
        if done == 0 {
            break;
        }
    }
    assert!(most >= 9, "the fan-out ran ten at a time (at most {most} seen)");
    assert!(steps > 1000);
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["each:succeeded", "after:succeeded"], "{run}");
    let output = &run["steps"][0]["output"];
    assert_eq!((output["total"].as_i64(), output["succeeded"].as_i64(), output["failed"].as_i64()), (Some(1000), Some(1000), Some(0)));
    assert_eq!(output["children"].as_array().unwrap().len(), 1000);
    assert_eq!(run["steps"][1]["output"]["message"], "1000 of 1000");

    let kids = children(&app, &key, &run_id).await;
    assert_eq!(kids.len(), 1000);
    assert!(kids.iter().all(|k| k["status"] == "succeeded" && k["parent_run_id"] == run_id.as_str()));
    let mut indexes: Vec<i64> = kids.iter().map(|k| k["item_index"].as_i64().unwrap()).collect();
    indexes.sort();
    assert_eq!(indexes, (0..1000).collect::<Vec<_>>());
    // A child's own timeline, with its item in scope.
    let child = app.run(&key, kids[0]["id"].as_str().unwrap()).await;
    let i = child["item_index"].as_i64().unwrap();
    assert_eq!(child["steps"][0]["input"]["body"], format!("Hi Lead{i} (#{i})"));

    // Each text once: 1,000 outbox rows, 1,000 different recipients.
    let mut recipients = HashMap::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = app.get(&format!("/v1/outbox?limit=200{cursor}"), &key).await;
        for m in page["messages"].as_array().unwrap() {
            *recipients.entry(m["to"].as_str().unwrap_or_else(|| panic!("{m}")).to_owned()).or_insert(0) += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(recipients.len(), 1000);
    assert!(recipients.values().all(|n| *n == 1));
    let (_, usage) = app.get("/v1/usage", &key).await;
    let runs = usage["rows"].as_array().unwrap().iter().find(|t| t["key"] == "workflow_run").unwrap_or_else(|| panic!("{usage}"));
    assert_eq!(runs["quantity"], 1001, "the parent and each child: {usage}");
}

/// Cancelling the parent cancels its children: the ones waiting and the ones not admitted yet;
/// nothing starts afterwards.
async fn cancel_mid_fan_out(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    sandbox_twilio(&app, &key).await;
    let body = json!([{ "id": "pause", "delay": "1h" }, text()[0].clone()]);
    let wf = app.workflow(&key, &blast(5, body)).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({ "leads": leads(50) })).await;
    app.drain().await;
    let kids = children(&app, &key, &run_id).await;
    assert_eq!(kids.len(), 50);
    assert_eq!(kids.iter().filter(|k| k["status"] == "waiting").count(), 5, "five admitted, waiting on their delay");
    let (status, body) = app.call("POST", &format!("/v1/runs/{run_id}/cancel"), Some(&key), None, "").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.advance(2 * 3_600_000).await;
    let kids = children(&app, &key, &run_id).await;
    assert!(kids.iter().all(|k| k["status"] == "cancelled"), "{kids:?}");
    assert_eq!(app.run(&key, &run_id).await["status"], "cancelled");
    let (_, outbox) = app.get("/v1/outbox", &key).await;
    assert_eq!(outbox["messages"], json!([]), "no child sent anything after the cancel");
}

/// Bad definitions are refused with their paths; a list over `max_items`, or not a list, fails
/// the step before any child starts.
async fn bounds_and_bad_lists(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    sandbox_twilio(&app, &key).await;
    let problems = |body: Value| body["error"]["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let bad = json!({ "name": "x", "trigger": { "manual": {} }, "steps": [
        { "id": "a", "for_each": { "items": "{{ event.leads }}", "as": "event", "steps": text(), "max_items": 100_001, "concurrency": 0 } },
        { "id": "b", "for_each": { "items": "{{ event.leads }}", "as": "lead", "steps": [
            { "id": "inner", "for_each": { "items": "{{ lead.kids }}", "as": "kid", "steps": text() } },
            { "id": "oops", "action": "sms.send", "input": { "to": "{{ leed.phone }}", "from": "+15550001111", "body": "x" }, "on_error": { "goto": "nowhere" } }
        ] } },
        { "id": "c", "for_each": { "items": "{{ event.leads }}", "as": "lead" } }
    ] });
    let (status, body) = app.post_json("/v1/workflows", &key, &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let paths = problems(body.clone());
    for expected in [
        "steps[0].for_each.as",
        "steps[0].for_each.max_items",
        "steps[0].for_each.concurrency",
        "steps[1].for_each.steps[0].for_each",
        "steps[1].for_each.steps[1].input.to",
        "steps[2].for_each.steps",
    ] {
        assert!(paths.iter().any(|p| p == expected), "{expected} not in {paths:?}: {body}");
    }

    let mut wf = blast(10, text());
    wf["steps"][0]["for_each"]["max_items"] = json!(3);
    let wf = app.workflow(&key, &wf).await;
    let id = wf["id"].as_str().unwrap();
    let run_id = app.start(&key, id, &json!({ "leads": leads(4) })).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "too_many_items", "{run}");
    assert!(run["error"]["message"].as_str().unwrap().contains("4 items"), "{run}");
    assert_eq!(children(&app, &key, &run_id).await.len(), 0, "nothing started");
    let run_id = app.start(&key, id, &json!({ "leads": "not a list" })).await;
    app.drain().await;
    assert_eq!(app.run(&key, &run_id).await["error"]["code"], "invalid_items");
    // An empty list: done at once.
    let run_id = app.start(&key, id, &json!({ "leads": [] })).await;
    app.drain().await;
    assert_eq!(app.run(&key, &run_id).await["steps"][0]["output"]["total"], 0);
}

/// A real `serve` SIGKILLed in the middle of a 300-item fan-out texting through a fake Twilio:
/// after the restart every item is texted at most once, every child ends, and the parent's
/// summary counts them all.
async fn sigkill_mid_fan_out_starts_nothing_twice(db: TestDb) {
    use crate::crash::{free_port, server_log, start_with};

    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Messages\.json$"))
        .respond_with(|req: &Request| {
            let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&req.body).unwrap();
            let to = form.iter().find(|(k, _)| k == "To").map(|(_, v)| v.clone()).unwrap_or_default();
            ResponseTemplate::new(201)
                .set_body_json(json!({ "sid": format!("SM{}", uuid::Uuid::new_v4().simple()), "status": "queued", "to": to, "num_segments": "1" }))
                .set_delay(Duration::from_millis(5))
        })
        .mount(&twilio)
        .await;
    let data = TempDir::new();
    let port = free_port();
    let env = [("SWITCHBOARD_TWILIO_API_BASE", twilio.uri())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = start_with(&db.url, &data, port, &env).await;
    let base = server.base.clone();
    let http = reqwest::Client::new();
    // An enterprise account (300 runs and texts are past the trial's tokens), quiet hours off:
    // this runs on the real clock, at any hour.
    let key = server.account_key_on(&http, "studio", "enterprise").await;
    let connection =
        json!({ "provider": "twilio", "name": "main", "credentials": { "account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "t0ken" } });
    assert_eq!(http.post(format!("{base}/v1/connections")).bearer_auth(&key).json(&connection).send().await.unwrap().status(), 201);
    let wf: Value = http.post(format!("{base}/v1/workflows")).bearer_auth(&key).json(&blast(10, text())).send().await.unwrap().json().await.unwrap();
    let started: Value = http
        .post(format!("{base}/v1/workflows/{}/runs", wf["id"].as_str().unwrap()))
        .bearer_auth(&key)
        .json(&json!({ "leads": leads(300) }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = started["run_id"].as_str().unwrap_or_else(|| panic!("{started}")).to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while twilio.received_requests().await.unwrap().len() < 60 {
        assert!(Instant::now() < deadline, "the fan-out did not get going: {}", server_log(&data));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut server = server;
    server.child.start_kill().unwrap(); // SIGKILL mid-fan-out
    server.child.wait().await.unwrap();
    let mut server = start_with(&db.url, &data, port, &env).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let run = loop {
        let run: Value = http.get(format!("{base}/v1/runs/{run_id}")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        if run["status"] == "succeeded" || run["status"] == "failed" {
            break run;
        }
        assert!(Instant::now() < deadline, "the fan-out did not finish: {run}\n{}", server_log(&data));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["status"], "succeeded", "{run}");
    let output = &run["steps"][0]["output"];
    assert_eq!(output["total"], 300, "{output}");
    let mut texts: HashMap<String, usize> = HashMap::new();
    for r in twilio.received_requests().await.unwrap() {
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&r.body).unwrap();
        let to = form.iter().find(|(k, _)| k == "To").map(|(_, v)| v.clone()).unwrap();
        *texts.entry(to).or_default() += 1;
    }
    assert!(texts.values().all(|n| *n == 1), "a lead texted twice");
    // A text in flight at the kill ends outcome_unknown (never resent): the only way a child
    // fails here. Every other child's text went out once.
    let failed = output["failed"].as_i64().unwrap();
    assert_eq!(output["succeeded"].as_i64().unwrap() + failed, 300, "{output}");
    if failed > 10 {
        let page: Value =
            http.get(format!("{base}/v1/runs?parent_run_id={run_id}&status=failed&limit=1")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        let one = page["runs"][0]["id"].as_str().unwrap_or_default();
        let child: Value = http.get(format!("{base}/v1/runs/{one}")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        panic!("{failed} children failed, e.g. {child}");
    }
    let sent = texts.len() as i64;
    assert!(sent >= 300 - failed && sent <= 300, "{sent} leads texted, {output}");
    server.child.start_kill().unwrap();
    let _ = server.child.wait().await;
}

/// The birthday campaign: enabled from the catalogue, test-run over the sandbox's sample leads,
/// and run for real against a CRM and Twilio that answer like the real ones.
async fn birthday_campaign_texts_each_lead(db: TestDb) {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/leads/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "leads": [
            { "id": "L1", "first_name": "Ada", "phone": "+15552220001", "timezone": "Europe/London" },
            { "id": "L2", "first_name": "Grace", "phone": "+15552220002", "timezone": "Asia/Tokyo" }
        ], "next_cursor": null })))
        .mount(&crm)
        .await;
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    for c in [
        json!({ "provider": "twilio", "name": "trial", "sandbox": true }),
        json!({ "provider": "crm", "name": "crm", "credentials": { "base_url": format!("{}/api", crm.uri()), "api_key": "k" } }),
    ] {
        let (status, body) = app.post_json("/v1/connections", &key, &c).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let params = json!({ "params": { "business_name": "Studio Ada", "sender": "+15550001111" } });
    let (status, wf) = app.post_json("/v1/templates/birthday-campaign/enable", &key, &params).await;
    assert_eq!(status, StatusCode::CREATED, "{wf}");
    let id = wf["id"].as_str().unwrap();

    // A test run asks no CRM: the search answers sample leads, and the fan-out previews a text
    // to each.
    let (status, answer) = app.post_json(&format!("/v1/workflows/{id}/test"), &key, &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(timeline(&answer["run"]), ["find:succeeded", "each:succeeded"], "{answer}");
    assert_eq!(answer["run"]["steps"][1]["output"]["total"], 3, "the sample leads: {answer}");

    // For real (started through the API; the schedule does the same at 09:00). 2027-01-15
    // 08:00 UTC is 08:00 in London and 17:00 in Tokyo: both texted at once.
    let run_id = app.start(&key, id, &json!({})).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["find:succeeded", "each:succeeded"], "{run}");
    assert_eq!(run["steps"][1]["output"]["succeeded"], 2);
    let search = &crm.received_requests().await.unwrap()[0];
    let body: Value = serde_json::from_slice(&search.body).unwrap();
    assert_eq!(body["filter"], json!({ "birthday_today": true }));
    let kids = children(&app, &key, &run_id).await;
    let mut bodies: Vec<String> = Vec::new();
    for k in &kids {
        let child = app.run(&key, k["id"].as_str().unwrap()).await;
        bodies.push(child["steps"][0]["input"]["body"].as_str().unwrap().to_owned());
    }
    bodies.sort();
    assert_eq!(bodies[0], "Happy birthday, Ada! From all of us at Studio Ada: 10% off your next visit this month. Reply STOP to opt out.");
    assert!(bodies[1].starts_with("Happy birthday, Grace!"));
}

on_both_backends!(
    a_thousand_items_ten_at_a_time,
    cancel_mid_fan_out,
    bounds_and_bad_lists,
    sigkill_mid_fan_out_starts_nothing_twice,
    birthday_campaign_texts_each_lead,
);
