//! Test runs (`POST /v1/workflows/{id}/test`): the same engine path as real runs, on sandbox
//! transports, with delays, wait timeouts and retry backoff fast-forwarded, answered at once
//! with the timeline and the outbox; not billed, listed as tests, never resumed by real events.

use axum::http::StatusCode;
use serde_json::json;

use crate::on_both_backends;
use crate::support::{TestApp, TestDb, timeline};

async fn a_test_run_fast_forwards_two_weeks_and_answers_the_outbox(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    let (_, other) = app.account("someone else").await;
    // A real (non-sandbox) connection: a test run still sends nothing.
    let (status, body) = app
        .post_json(
            "/v1/connections",
            &key,
            &json!({ "provider": "twilio", "name": "main",
            "credentials": { "account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "secret" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let wf = app
        .workflow(
            &key,
            &json!({ "name": "survey", "trigger": { "event": "purchase.completed" }, "steps": [
                { "id": "hello", "action": "sms.send", "input": { "to": "{{ event.lead.phone }}", "from": "+15550001111", "body": "Hi {{ event.lead.first_name }}!" } },
                { "id": "week", "delay": "7d" },
                { "id": "remember", "set": { "lead_id": "event.lead.id" } },
                { "id": "answer", "wait_for": { "event": "survey.answered", "match": "event.lead.id == vars.lead_id", "timeout": "3d", "on_timeout": "nudge" } },
                { "id": "thanks", "action": "log", "input": { "message": "answered" } },
                { "id": "stop", "end": {} },
                { "id": "nudge", "action": "sms.send", "input": { "to": "{{ event.lead.phone }}", "from": "+15550001111", "body": "Still there, {{ event.lead.first_name }}?" } },
            ] }),
        )
        .await;
    let id = wf["id"].as_str().unwrap();
    let event = json!({ "lead": { "id": "L1", "first_name": "Ada", "phone": "+15557654321" } });
    let (status, answer) = app.post_json(&format!("/v1/workflows/{id}/test"), &key, &json!({ "event": event })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let run = &answer["run"];
    assert_eq!((run["status"].as_str(), run["test"].as_bool()), (Some("succeeded"), Some(true)), "{answer}");
    assert_eq!(timeline(run), ["hello:succeeded", "week:succeeded", "remember:succeeded", "answer:succeeded", "nudge:succeeded"], "the wait timed out at once");
    assert_eq!(run["steps"][1]["output"]["fast_forwarded"], true);
    let bodies: Vec<&str> = answer["outbox"].as_array().unwrap().iter().map(|m| m["rendered"]["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["Hi Ada!", "Still there, Ada?"]);
    assert!(answer["outbox"].as_array().unwrap().iter().all(|m| m["test"] == true));
    assert_eq!(run["usage"], json!([]), "a test run is not billed");
    let (_, usage) = app.get("/v1/usage", &key).await;
    assert_eq!(usage["rows"], json!([]), "{usage}");
    // Listed as a test; the awaited event posted for real afterwards resumes nothing (a test
    // run's wait is never registered).
    let (_, runs) = app.get(&format!("/v1/runs?workflow_id={id}"), &key).await;
    assert_eq!(runs["runs"][0]["test"], true);
    let (_, accepted) = app.post_json("/v1/events", &key, &json!({ "type": "survey.answered", "data": { "lead": { "id": "L1" } } })).await;
    assert_eq!(accepted["run_ids"], json!([]), "{accepted}");
    // Another account cannot test it; an unknown id is 404; malformed JSON is 400.
    assert_eq!(app.post_json(&format!("/v1/workflows/{id}/test"), &other, &json!({})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.post_json("/v1/workflows/nope/test", &key, &json!({})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.call("POST", &format!("/v1/workflows/{id}/test"), Some(&key), Some("application/json"), "{").await.0, StatusCode::BAD_REQUEST);
}

async fn the_catalogue_lists_every_template_and_enabling_checks_everything(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    let (status, catalogue) = app.get("/v1/templates", &key).await;
    assert_eq!(status, StatusCode::OK);
    let slugs: Vec<&str> = catalogue["templates"].as_array().unwrap().iter().map(|t| t["slug"].as_str().unwrap()).collect();
    for slug in ["lead-nurture", "payment-follow-up", "negative-feedback-alert", "referral-request", "lead-scoring", "feedback-survey"] {
        assert!(slugs.contains(&slug), "{slug} in {slugs:?}");
    }
    let first = &catalogue["templates"][0];
    assert!(first["params"].as_array().unwrap().iter().all(|p| p["name"].is_string() && p["type"].is_string() && p["help"].is_string()));
    let (status, one) = app.get("/v1/templates/lead-nurture", &key).await;
    assert_eq!(status, StatusCode::OK);
    assert!(one["workflow"]["steps"].is_array());
    assert_eq!(app.get("/v1/templates/nope", &key).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.call("GET", "/v1/templates", None, None, "").await.0, StatusCode::UNAUTHORIZED);

    // No params, no connections: 422 naming every required parameter and every connection.
    let (status, body) = app.post_json("/v1/templates/lead-nurture/enable", &key, &json!({ "params": { "bogus": 1 } })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let paths: Vec<&str> = body["error"]["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"params.bogus"), "{paths:?}");
    let required: Vec<&str> = one["params"].as_array().unwrap().iter().filter(|p| p["required"] == true).map(|p| p["name"].as_str().unwrap()).collect();
    assert!(!required.is_empty());
    for name in &required {
        assert!(paths.contains(&format!("params.{name}").as_str()), "{name} missing from {paths:?}");
    }
    for provider in one["connections"].as_array().unwrap() {
        assert!(paths.contains(&format!("connections.{}", provider.as_str().unwrap()).as_str()), "{provider} missing from {paths:?}");
    }
    assert_eq!(app.post_json("/v1/templates/nope/enable", &key, &json!({})).await.0, StatusCode::NOT_FOUND);
}

on_both_backends!(a_test_run_fast_forwards_two_weeks_and_answers_the_outbox, the_catalogue_lists_every_template_and_enabling_checks_everything);
