//! The HTTP API: bad input gets a clear error and stores nothing; webhooks; events; isolation.

use axum::body::Body;
use axum::http::Request;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::on_both_backends;
use crate::support::{ADMIN, TestApp, TestDb};

fn hook_workflow(secret: Option<&str>) -> Value {
    let webhook = match secret {
        Some(s) => json!({ "secret": s }),
        None => json!({}),
    };
    json!({
        "name": "Lead in",
        "trigger": { "webhook": webhook },
        "steps": [{ "id": "note", "action": "log", "input": { "message": "lead {{ event.name }}" } }]
    })
}

async fn workflow_count(app: &TestApp, key: &str) -> usize {
    app.get("/v1/workflows", key).await.1["workflows"].as_array().unwrap().len()
}

async fn bad_definitions_get_every_problem_and_store_nothing(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;

    let (s, body) = app.call("POST", "/v1/workflows", Some(&key), Some("application/json"), "{\"name\": ").await;
    assert_eq!(s, 400);
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(body["error"]["message"].as_str().unwrap().contains("malformed JSON"));

    let (s, body) = app.call("POST", "/v1/workflows", Some(&key), Some("application/yaml"), "name: [unclosed\nsteps: -").await;
    assert_eq!(s, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("malformed YAML"), "{body}");

    let (s, body) = app.call("POST", "/v1/workflows", Some(&key), Some("text/plain"), "hello").await;
    assert_eq!(s, 415, "{body}");

    let def = json!({
        "name": "broken",
        "trigger": { "event": "lead.created", "when": "event.call.status == \"x\"" },
        "steps": [
            { "id": "a", "action": "sms.teleport", "input": {} },
            { "id": "b", "branch": [{ "when": "true", "goto": "nowhere" }] },
            { "id": "c", "action": "http.request", "input": { "method": "POST" } },
            { "id": "d", "set": { "x": "let y = ;" } },
            { "id": "e", "delay": "soon" },
            { "id": "c", "end": {} },
        ]
    });
    let (s, body) = app.post_json("/v1/workflows", &key, &def).await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_workflow");
    let details = body["error"]["details"].as_array().unwrap();
    let at = |path: &str| -> String {
        details.iter().find(|d| d["path"] == path).map(|d| d["message"].as_str().unwrap().to_string()).unwrap_or_else(|| panic!("no problem at {path}: {body}"))
    };
    assert!(at("trigger.when").contains("event[\"call\"]"));
    assert!(at("steps[0].action").contains("unknown action kind 'sms.teleport'"));
    assert!(at("steps[1].branch[0].goto").contains("unknown step id 'nowhere'"));
    assert!(at("steps[2].input.url").contains("required"));
    let rhai = at("steps[3].set.x");
    assert!(rhai.contains("line 1") && rhai.contains("column"), "{rhai}");
    assert!(at("steps[4].delay").contains("duration"));
    assert!(at("steps[5].id").contains("duplicate"));
    assert_eq!(workflow_count(&app, &key).await, 0, "nothing is stored");

    let cycle = json!({ "name": "loop", "trigger": { "manual": {} }, "steps": [
        { "id": "a", "action": "log", "input": { "message": "x" } },
        { "id": "b", "branch": [{ "when": "true", "goto": "a" }] },
    ] });
    let (s, body) = app.post_json("/v1/workflows", &key, &cycle).await;
    assert_eq!(s, 422);
    assert!(body["error"]["details"][0]["message"].as_str().unwrap().contains("cycle"), "{body}");

    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let (s, body) = app.call("POST", "/v1/workflows", Some(&key), Some("application/json"), huge).await;
    assert_eq!(s, 413);
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(workflow_count(&app, &key).await, 0);
}

async fn yaml_definitions_are_accepted(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let yaml = "name: From YAML\ntrigger:\n  manual: {}\nsteps:\n  - id: wait\n    delay: 2h\n  - id: say\n    action: log\n    input:\n      message: \"hi {{ event.who }}\"\n";
    let (s, body) = app.call("POST", "/v1/workflows", Some(&key), Some("application/yaml"), yaml).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["enabled"], true);
    assert_eq!(body["steps"][0]["delay"], "2h");
}

async fn webhooks_answer_after_commit_with_the_specified_errors(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let wf = app.workflow(&key, &hook_workflow(None)).await;
    let url = wf["webhook_url"].as_str().unwrap();
    let path = url.strip_prefix("http://sb.test").unwrap().to_string();

    let post = |body: &'static str, ct: Option<&'static str>, idem: Option<&'static str>| {
        let mut req = Request::builder().method("POST").uri(path.clone());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        if let Some(k) = idem {
            req = req.header("idempotency-key", k);
        }
        req.body(Body::from(body)).unwrap()
    };
    let (s, first) = app.send(post("{\"name\":\"Ada\"}", Some("application/json"), Some("k1"))).await;
    assert_eq!(s, 202, "{first}");
    let (s, again) = app.send(post("{\"name\":\"Ada\"}", Some("application/json"), Some("k1"))).await;
    assert_eq!(s, 202);
    assert_eq!(first, again, "a repeated Idempotency-Key answers the first answer");
    let (s, form) = app.send(post("name=Grace", Some("application/x-www-form-urlencoded"), None)).await;
    assert_eq!(s, 202);
    app.drain().await;
    let run = app.run(&key, form["run_id"].as_str().unwrap()).await;
    assert_eq!(run["steps"][0]["output"]["message"], "lead Grace");
    let (_, runs) = app.get("/v1/runs", &key).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2, "the repeat started nothing");

    assert_eq!(app.send(post("{", Some("application/json"), None)).await.0, 400);
    assert_eq!(app.send(post("hi", Some("text/plain"), None)).await.0, 415);
    let (s, body) = app.send(Request::post("/hooks/wh_nope").header("content-type", "application/json").body(Body::from("{}")).unwrap()).await;
    assert_eq!((s.as_u16(), body["error"]["code"].as_str()), (404, Some("not_found")));
    let big = Box::leak(format!("{{\"x\":\"{}\"}}", "y".repeat(1024 * 1024)).into_boxed_str());
    assert_eq!(app.send(post(big, Some("application/json"), None)).await.0, 413);

    let id = wf["id"].as_str().unwrap();
    app.post_json(&format!("/v1/workflows/{id}/disable"), &key, &json!({})).await;
    let (s, body) = app.send(post("{}", Some("application/json"), None)).await;
    assert_eq!(s, 409);
    assert_eq!(body["error"]["code"], "workflow_disabled");
    let (_, runs) = app.get("/v1/runs", &key).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2, "rejected webhooks store nothing");
}

async fn signed_webhooks_check_the_hmac(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let wf = app.workflow(&key, &hook_workflow(Some("s3cret"))).await;
    let path = wf["webhook_url"].as_str().unwrap().strip_prefix("http://sb.test").unwrap().to_string();
    let body = "{\"name\":\"Ada\"}";
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(body.as_bytes());
    let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let req = |sig: Option<&str>| {
        let mut r = Request::post(path.clone()).header("content-type", "application/json");
        if let Some(sig) = sig {
            r = r.header("x-signature-256", sig);
        }
        r.body(Body::from(body)).unwrap()
    };
    let (s, err) = app.send(req(None)).await;
    assert_eq!((s.as_u16(), err["error"]["code"].as_str()), (401, Some("invalid_signature")));
    assert_eq!(app.send(req(Some("sha256=00ff"))).await.0, 401);
    assert_eq!(app.send(req(Some(&good))).await.0, 202);
}

async fn events_fan_out_filter_and_dedupe(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let log = json!([{ "id": "n", "action": "log", "input": { "message": "x" } }]);
    app.workflow(&key, &json!({ "name": "all", "trigger": { "event": "call.completed" }, "steps": log })).await;
    app.workflow(
        &key,
        &json!({ "name": "missed", "trigger": { "event": "call.completed", "when": "event[\"call\"][\"status\"] == \"no-answer\"" }, "steps": log }),
    )
    .await;
    let off = app.workflow(&key, &json!({ "name": "off", "enabled": false, "trigger": { "event": "call.completed" }, "steps": log })).await;
    assert_eq!(off["enabled"], false);
    let (_, other_key) = app.account("b").await;
    app.workflow(&other_key, &json!({ "name": "other", "trigger": { "event": "call.completed" }, "steps": log })).await;

    let answered = json!({ "type": "call.completed", "id": "evt-1", "data": { "call": { "status": "completed" } } });
    let (s, body) = app.post_json("/v1/events", &key, &answered).await;
    assert_eq!(s, 202);
    assert_eq!(body["run_ids"].as_array().unwrap().len(), 1);
    let (_, again) = app.post_json("/v1/events", &key, &answered).await;
    assert_eq!(again, body, "the same id answers the same answer");
    assert_eq!(app.get("/v1/runs", &key).await.1["runs"].as_array().unwrap().len(), 1, "and starts nothing");
    let missed = json!({ "type": "call.completed", "data": { "call": { "status": "no-answer" } } });
    let (_, body) = app.post_json("/v1/events", &key, &missed).await;
    assert_eq!(body["run_ids"].as_array().unwrap().len(), 2);
    let (_, runs) = app.get("/v1/runs", &other_key).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 0, "another account's workflows are not triggered");
    let (s, _) = app.call("POST", "/v1/events", Some(&key), Some("application/json"), "{\"type\":").await;
    assert_eq!(s, 400);
    let (s, body) = app.post_json("/v1/events", &key, &json!({ "data": {} })).await;
    assert_eq!((s.as_u16(), body["error"]["code"].as_str()), (422, Some("invalid_request")), "a missing field: {body}");
    assert_eq!(body["error"]["details"][0]["path"], "type", "the missing field is named: {body}");
    let (s, body) = app.post_json("/v1/events", &key, &json!({ "type": "x", "id": 7 })).await;
    assert_eq!((s.as_u16(), body["error"]["code"].as_str()), (422, Some("invalid_request")), "a mistyped field: {body}");
    assert_eq!(body["error"]["details"][0]["path"], "id", "the mistyped field is named: {body}");
    let (s, body) = app.call("POST", "/v1/events", Some(&key), Some("application/json"), "{\"type\": \"x\"} {}").await;
    assert_eq!((s.as_u16(), body["error"]["code"].as_str()), (400, Some("bad_request")), "trailing characters: {body}");
}

async fn another_accounts_ids_answer_404(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, alice) = app.account("alice").await;
    let (_, bob) = app.account("bob").await;
    let wf = app.workflow(&alice, &json!({ "name": "w", "trigger": { "manual": {} }, "steps": [{ "id": "d", "delay": "1h" }] })).await;
    let id = wf["id"].as_str().unwrap();
    let run_id = app.start(&alice, id, &json!({})).await;
    for (method, path) in [
        ("GET", format!("/v1/workflows/{id}")),
        ("DELETE", format!("/v1/workflows/{id}")),
        ("POST", format!("/v1/workflows/{id}/disable")),
        ("POST", format!("/v1/workflows/{id}/runs")),
        ("GET", format!("/v1/runs/{run_id}")),
        ("POST", format!("/v1/runs/{run_id}/cancel")),
        ("POST", format!("/v1/runs/{run_id}/retry")),
    ] {
        let (s, body) = app.call(method, &path, Some(&bob), Some("application/json"), "{}").await;
        assert_eq!(s, 404, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (s, _) = app.call("PUT", &format!("/v1/workflows/{id}"), Some(&bob), Some("application/json"), wf.to_string()).await;
    assert_eq!(s, 404);
    assert_eq!(app.get("/v1/runs", &bob).await.1["runs"], json!([]));
    assert_eq!(app.get(&format!("/v1/workflows/{id}"), &alice).await.0, 200, "alice still has it");
    assert_eq!(app.get("/v1/workflows", "sk_wrong").await.0, 401);
    let (s, _) = app.call("POST", "/v1/accounts", Some(&alice), Some("application/json"), "{\"name\":\"x\"}").await;
    assert_eq!(s, 401, "an account key is not the admin token");
    let (s, body) =
        app.call("POST", "/v1/accounts", Some(ADMIN), Some("application/json"), "{\"name\":\"x\",\"plan\":\"gold\",\"timezone\":\"Mars/Base\"}").await;
    assert_eq!(s, 422);
    assert_eq!(body["error"]["details"].as_array().unwrap().len(), 2);
}

async fn runs_list_and_paginate(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let wf =
        app.workflow(&key, &json!({ "name": "w", "trigger": { "manual": {} }, "steps": [{ "id": "n", "action": "log", "input": { "message": "x" } }] })).await;
    let id = wf["id"].as_str().unwrap();
    for _ in 0..5 {
        app.start(&key, id, &json!({})).await;
    }
    let (s, body) = app.get("/v1/runs?limit=abc", &key).await;
    assert_eq!((s.as_u16(), body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    let (s, body) = app.get("/v1/nowhere", &key).await;
    assert_eq!((s.as_u16(), body["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, body) = app.call("PATCH", "/v1/runs", Some(&key), None, Body::empty()).await;
    assert_eq!((s.as_u16(), body["error"]["code"].as_str()), (405, Some("method_not_allowed")));
    let (_, page1) = app.get("/v1/runs?limit=3", &key).await;
    assert_eq!(page1["runs"].as_array().unwrap().len(), 3);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = app.get(&format!("/v1/runs?limit=3&cursor={cursor}"), &key).await;
    assert_eq!(page2["runs"].as_array().unwrap().len(), 2);
    assert!(page2["next_cursor"].is_null());
    app.drain().await;
    let (_, done) = app.get(&format!("/v1/runs?status=succeeded&workflow_id={id}"), &key).await;
    assert_eq!(done["runs"].as_array().unwrap().len(), 5);
}

on_both_backends!(
    bad_definitions_get_every_problem_and_store_nothing,
    yaml_definitions_are_accepted,
    webhooks_answer_after_commit_with_the_specified_errors,
    signed_webhooks_check_the_hmac,
    events_fan_out_filter_and_dedupe,
    another_accounts_ids_answer_404,
    runs_list_and_paginate,
);

async fn usage_reads_by_unit_day_workflow_page_and_csv(db: TestDb) {
    let app = TestApp::new(db).await;
    let (account_id, key) = app.account("a").await;
    let (_, other) = app.account("b").await;
    let wf = app.workflow(&key, &json!({ "name": "w", "trigger": { "manual": {} }, "steps": [{ "id": "call", "action": "test.flaky" }] })).await;
    let id = wf["id"].as_str().unwrap();
    for _ in 0..3 {
        app.start(&key, id, &json!({})).await;
    }
    app.drain().await;

    let (s, by_unit) = app.get("/v1/usage", &key).await;
    assert_eq!(s, 200, "{by_unit}");
    assert_eq!(
        by_unit["rows"],
        json!([
            { "key": "http_request", "quantity": 3, "tokens_milli": 300, "cost_micros": 3000 },
            { "key": "workflow_run", "quantity": 3, "tokens_milli": 1500, "cost_micros": 15000 },
        ])
    );
    let (_, by_workflow) = app.get("/v1/usage?group_by=workflow", &key).await;
    assert_eq!(by_workflow["rows"][0]["key"], id);
    assert_eq!(by_workflow["rows"][0]["name"], "w");
    assert_eq!(by_workflow["rows"][0]["tokens_milli"], 1800);
    let (_, by_day) = app.get("/v1/usage?group_by=day", &key).await;
    let today = switchboard_runtime::metering::local_day(app.now(), "UTC");
    assert_eq!(
        by_day["rows"],
        json!([
            { "key": today, "day": today, "unit": "http_request", "quantity": 3, "tokens_milli": 300, "cost_micros": 3000 },
            { "key": today, "day": today, "unit": "workflow_run", "quantity": 3, "tokens_milli": 1500, "cost_micros": 15000 },
        ])
    );
    let (_, none) = app.get(&format!("/v1/usage?from=2000-01-01&to={today}"), &key).await;
    assert_eq!(none["rows"], json!([]), "`to` is exclusive");
    assert_eq!(app.get("/v1/usage?group_by=month", &key).await.0, 400);
    assert_eq!(app.get("/v1/usage?from=yesterday", &key).await.0, 400);

    let (_, page1) = app.get("/v1/usage/events?limit=4", &key).await;
    let events = page1["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    let next = page1["next_after"].as_i64().unwrap();
    assert_eq!(next, events[3]["seq"].as_i64().unwrap());
    let (_, page2) = app.get(&format!("/v1/usage/events?after={next}&limit=4"), &key).await;
    assert_eq!(page2["events"].as_array().unwrap().len(), 2);
    let (_, page3) = app.get(&format!("/v1/usage/events?after={}", page2["next_after"]), &key).await;
    assert_eq!(page3["events"], json!([]));

    let req = axum::http::Request::get("/v1/usage/export.csv").header("authorization", format!("Bearer {key}")).body(Body::empty()).unwrap();
    let res = tower::ServiceExt::oneshot(switchboard_api::router(app.state.clone()), req).await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = String::from_utf8(axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "seq,id,account_id,workflow_id,run_id,step_id,unit,quantity,tokens_milli,cost_micros,created_at,day");
    assert_eq!(lines.len(), 7, "a header and one line per ledger row:\n{csv}");
    assert!(lines[1..].iter().all(|l| l.split(',').count() == 12 && l.contains(&account_id)));

    let (s, account) = app.get("/v1/account", &key).await;
    assert_eq!(s, 200);
    assert_eq!(account["plan"], "starter");
    assert_eq!(account["tokens_included_milli"], 1_000_000);
    assert_eq!(account["tokens_used_milli"], 1800);
    assert_eq!(account["tokens_left_milli"], 1_000_000 - 1800);
    assert_eq!(account["overage"]["tokens_milli"], 0);

    assert_eq!(app.get("/v1/usage", &other).await.1["rows"], json!([]), "another account sees none of it");
    assert_eq!(app.get("/v1/usage/events", &other).await.1["events"], json!([]));
    assert_eq!(app.get("/v1/admin/usage", &key).await.0, 401, "an account key is not the admin token");
    let (s, admin) = app.get("/v1/admin/usage", ADMIN).await;
    assert_eq!(s, 200);
    let rows = admin["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["account_id"] == account_id.as_str()));
}

/// Units are never added together by day; by workflow, rows carry the workflow's name.
async fn usage_by_day_keeps_units_apart_and_by_workflow_names_the_workflow(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let steps = json!([{ "id": "one", "action": "test.flaky" }, { "id": "two", "action": "test.flaky" }]);
    let calls = app.workflow(&key, &json!({ "name": "Two calls", "trigger": { "manual": {} }, "steps": steps })).await;
    let calls = calls["id"].as_str().unwrap().to_string();
    let note = json!([{ "id": "note", "action": "log", "input": { "message": "hi" } }]);
    let logs = app.workflow(&key, &json!({ "name": "Just a note", "trigger": { "manual": {} }, "steps": note })).await;
    let logs = logs["id"].as_str().unwrap().to_string();

    // Day 1: one run metering two units (1 workflow_run, 2 http_request). Day 2: two runs.
    app.start(&key, &calls, &json!({})).await;
    app.drain().await;
    let day1 = switchboard_runtime::metering::local_day(app.now(), "UTC");
    app.clock.advance(24 * 3_600_000);
    app.start(&key, &calls, &json!({})).await;
    app.start(&key, &logs, &json!({})).await;
    app.drain().await;
    let day2 = switchboard_runtime::metering::local_day(app.now(), "UTC");
    assert_ne!(day1, day2);

    let (status, by_day) = app.get("/v1/usage?group_by=day", &key).await;
    assert_eq!(status, 200, "{by_day}");
    let rows: Vec<(String, String, String, i64)> = by_day["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["key"], r["day"], "{r}");
            let text = |k: &str| r[k].as_str().unwrap().to_string();
            (text("key"), text("day"), text("unit"), r["quantity"].as_i64().unwrap())
        })
        .collect();
    let row = |day: &str, unit: &str, quantity: i64| (day.to_string(), day.to_string(), unit.to_string(), quantity);
    assert_eq!(
        rows,
        [row(&day1, "http_request", 2), row(&day1, "workflow_run", 1), row(&day2, "http_request", 2), row(&day2, "workflow_run", 2)],
        "a row per day and unit, by day then unit"
    );
    let (_, day2_only) = app.get(&format!("/v1/usage?group_by=day&from={day2}"), &key).await;
    assert_eq!(day2_only["rows"].as_array().unwrap().len(), 2, "{day2_only}");
    let (_, by_unit) = app.get("/v1/usage", &key).await;
    assert!(by_unit["rows"].as_array().unwrap().iter().all(|r| r.get("unit").is_none() && r.get("day").is_none()), "{by_unit}");

    // Deleting a workflow keeps its name on its usage.
    assert_eq!(app.call("DELETE", &format!("/v1/workflows/{logs}"), Some(&key), None, Body::empty()).await.0, 200);
    let (_, by_workflow) = app.get("/v1/usage?group_by=workflow", &key).await;
    let mut named: Vec<(String, String)> = by_workflow["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_string(), r["name"].as_str().unwrap_or_else(|| panic!("{r}")).to_string()))
        .collect();
    named.sort();
    let mut expected = vec![(calls, "Two calls".to_string()), (logs, "Just a note".to_string())];
    expected.sort();
    assert_eq!(named, expected);
}

async fn a_webhook_over_its_rate_limit_answers_429_and_stores_nothing(db: TestDb) {
    let mut app = TestApp::new(db).await;
    app.state = app.state.clone().with_webhook_limit(1); // 1 a second, bursts of 2
    let (_, key) = app.account("a").await;
    let wf = app.workflow(&key, &hook_workflow(None)).await;
    let path = wf["webhook_url"].as_str().unwrap().strip_prefix("http://sb.test").unwrap().to_string();
    let post = || Request::post(path.clone()).header("content-type", "application/json").body(Body::from("{}")).unwrap();
    assert_eq!(app.send(post()).await.0, 202);
    assert_eq!(app.send(post()).await.0, 202);
    let req = post();
    let res = tower::ServiceExt::oneshot(switchboard_api::router(app.state.clone()), req).await.unwrap();
    assert_eq!(res.status(), 429);
    let after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&after), "Retry-After {after}");
    assert_eq!(app.get("/v1/runs", &key).await.1["runs"].as_array().unwrap().len(), 2, "the refused request started nothing");
}

async fn metrics_count_steps_webhooks_and_the_queue(db: TestDb) {
    let app = TestApp::new(db).await;
    switchboard_api::routes::health::prometheus(); // the recorder, before anything is counted
    let (_, key) = app.account("a").await;
    let wf = app.workflow(&key, &hook_workflow(None)).await;
    let path = wf["webhook_url"].as_str().unwrap().strip_prefix("http://sb.test").unwrap().to_string();
    let hook = Request::post(path).header("content-type", "application/json").body(Body::from("{\"name\":\"Ada\"}")).unwrap();
    assert_eq!(app.send(hook).await.0, 202);
    assert_eq!(app.send(Request::post("/hooks/wh_nope").body(Body::empty()).unwrap()).await.0, 404);
    let delayed = app.workflow(&key, &json!({ "name": "d", "trigger": { "manual": {} }, "steps": [{ "id": "w", "delay": "1h" }] })).await;
    app.start(&key, delayed["id"].as_str().unwrap(), &json!({})).await;
    app.drain().await;
    let res = tower::ServiceExt::oneshot(switchboard_api::router(app.state.clone()), Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), 200);
    let text = String::from_utf8(axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    for expected in [
        "switchboard_steps_total{kind=\"log\",status=\"succeeded\"}",
        "switchboard_steps_total{kind=\"delay\",status=\"waiting\"}",
        "switchboard_webhooks_total{outcome=\"accepted\"}",
        "switchboard_webhooks_total{outcome=\"not_found\"}",
        "switchboard_step_duration_seconds",
        "switchboard_queue_depth 1",
        "switchboard_due_unclaimed 0",
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
}

on_both_backends!(
    usage_reads_by_unit_day_workflow_page_and_csv,
    usage_by_day_keeps_units_apart_and_by_workflow_names_the_workflow,
    a_webhook_over_its_rate_limit_answers_429_and_stores_nothing,
    metrics_count_steps_webhooks_and_the_queue,
);
