//! Quotas of plans without overage: two steps racing for the last tokens, runs started without
//! tokens, and retry after an upgrade.

use std::sync::atomic::Ordering;

use serde_json::json;
use switchboard_runtime::engine::EngineConfig;
use switchboard_runtime::metering::{Price, PriceList};

use crate::on_both_backends;
use crate::support::{ADMIN, TestApp, TestDb, timeline};

/// Prices that make the trial plan's 100 tokens run out fast.
fn config(workflow_run: i64, http_request: i64) -> EngineConfig {
    let mut prices = PriceList::default();
    prices.0.insert("workflow_run".into(), Price { tokens_milli: workflow_run, cost_micros: 0 });
    prices.0.insert("http_request".into(), Price { tokens_milli: http_request, cost_micros: 1_000 });
    EngineConfig { prices, ..EngineConfig::default() }
}

async fn two_steps_racing_for_the_last_tokens_exactly_one_sends(db: TestDb) {
    // 100 tokens included; each send needs 60: only one of two fits.
    let app = TestApp::with_config(db, config(0, 60_000)).await;
    let (account_id, key) = app.account_on("trial", "trial").await;
    let wf = app.workflow(&key, &json!({ "name": "w", "trigger": { "manual": {} }, "steps": [{ "id": "send", "action": "test.flaky" }] })).await;
    let id = wf["id"].as_str().unwrap();
    let runs = [app.start(&key, id, &json!({})).await, app.start(&key, id, &json!({})).await];
    let store = app.engine.store();
    let lease = app.engine.config().lease.as_millis() as i64;
    let a = store.claim("worker-a", app.now(), app.now() + lease, 1).await.unwrap();
    let b = store.claim("worker-b", app.now(), app.now() + lease, 1).await.unwrap();
    let (ea, eb) = (app.engine.clone(), app.engine.clone());
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { ea.process("worker-a", a[0].clone()).await }),
        tokio::spawn(async move { eb.process("worker-b", b[0].clone()).await }),
    );
    ra.unwrap().unwrap();
    rb.unwrap().unwrap();
    assert_eq!(app.flaky.calls.load(Ordering::SeqCst), 1, "exactly one sends");
    let mut statuses = Vec::new();
    let mut refused = None;
    for run_id in &runs {
        let run = app.run(&key, run_id).await;
        statuses.push(run["status"].as_str().unwrap().to_string());
        if run["status"] == "failed" {
            assert_eq!(run["error"]["code"], "quota_exceeded", "{run}");
            assert_eq!(timeline(&run), ["send:failed"]);
            assert_eq!(run["usage"].as_array().unwrap().iter().filter(|u| u["unit"] == "http_request").count(), 0);
            refused = Some(run_id.clone());
        }
    }
    statuses.sort();
    assert_eq!(statuses, ["failed", "succeeded"]);
    let (_, account) = app.get("/v1/account", &key).await;
    assert_eq!(account["tokens_used_milli"], 60_000);
    let period = account["period"]["from"].as_str().unwrap().to_string();
    assert_eq!(store.period_counters(&account_id, &period).await.unwrap(), (60_000, 0), "spent 60, nothing left reserved");

    // After an upgrade the refused run can be retried.
    let (s, body) = app.call("PUT", &format!("/v1/admin/accounts/{account_id}/plan"), Some(ADMIN), Some("application/json"), "{\"plan\":\"starter\"}").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["plan"], "starter");
    let refused = refused.unwrap();
    assert_eq!(app.post_json(&format!("/v1/runs/{refused}/retry"), &key, &json!({})).await.0, 202);
    app.drain().await;
    assert_eq!(app.run(&key, &refused).await["status"], "succeeded");
    assert_eq!(app.flaky.calls.load(Ordering::SeqCst), 2);
}

async fn a_run_started_without_tokens_is_kept_failed_and_uncharged(db: TestDb) {
    // Starting a run costs 60 of the trial's 100 tokens: the second start does not fit.
    let app = TestApp::with_config(db, config(60_000, 0)).await;
    let (_, key) = app.account_on("trial", "trial").await;
    let wf =
        app.workflow(&key, &json!({ "name": "w", "trigger": { "manual": {} }, "steps": [{ "id": "n", "action": "log", "input": { "message": "x" } }] })).await;
    let id = wf["id"].as_str().unwrap();
    let first = app.start(&key, id, &json!({})).await;
    let second = app.start(&key, id, &json!({ "kept": true })).await;
    app.drain().await;
    assert_eq!(app.run(&key, &first).await["status"], "succeeded");
    let run = app.run(&key, &second).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "quota_exceeded");
    assert_eq!(run["event"]["kept"], true, "the event is kept with the run");
    assert_eq!(run["usage"], json!([]), "a refused run is charged nothing");
    let (_, usage) = app.get("/v1/usage", &key).await;
    assert_eq!(usage["rows"], json!([{ "key": "workflow_run", "quantity": 1, "tokens_milli": 60_000, "cost_micros": 0 }]));
    let (_, account) = app.get("/v1/account", &key).await;
    assert_eq!((account["tokens_used_milli"].as_i64(), account["tokens_left_milli"].as_i64()), (Some(60_000), Some(40_000)));
    // Retrying it on the same plan is refused (it still does not fit) and changes nothing...
    let (s, body) = app.post_json(&format!("/v1/runs/{second}/retry"), &key, &json!({})).await;
    assert_eq!((s.as_u16(), body["error"]["code"].as_str()), (409, Some("quota_exceeded")), "{body}");
    assert_eq!(app.run(&key, &second).await["status"], "failed");
    // ...and after an upgrade it pays its start and runs.
    let account_id = account["id"].as_str().unwrap();
    let (s, _) = app.call("PUT", &format!("/v1/admin/accounts/{account_id}/plan"), Some(ADMIN), Some("application/json"), "{\"plan\":\"starter\"}").await;
    assert_eq!(s, 200);
    assert_eq!(app.post_json(&format!("/v1/runs/{second}/retry"), &key, &json!({})).await.0, 202);
    app.drain().await;
    let run = app.run(&key, &second).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["usage"].as_array().unwrap().iter().filter(|u| u["unit"] == "workflow_run").count(), 1, "the start is paid once");
    // Plans with overage are not stopped.
    let (_, paid) = app.account_on("paid", "starter").await;
    let wf =
        app.workflow(&paid, &json!({ "name": "w", "trigger": { "manual": {} }, "steps": [{ "id": "n", "action": "log", "input": { "message": "x" } }] })).await;
    for _ in 0..3 {
        app.start(&paid, wf["id"].as_str().unwrap(), &json!({})).await;
    }
    app.drain().await;
    assert_eq!(app.get("/v1/runs?status=succeeded", &paid).await.1["runs"].as_array().unwrap().len(), 3);
}

async fn cancelling_a_run_releases_its_reservation(db: TestDb) {
    let app = TestApp::with_config(db, config(0, 60_000)).await;
    let (account_id, key) = app.account_on("trial", "trial").await;
    let wf = app.workflow(&key, &json!({ "name": "w", "trigger": { "manual": {} }, "steps": [{ "id": "a", "action": "test.gate" }] })).await;
    let gated = app.workflow(&key, &json!({ "name": "g", "trigger": { "manual": {} }, "steps": [{ "id": "send", "action": "test.flaky" }] })).await;
    let _ = wf;
    let run_id = app.start(&key, gated["id"].as_str().unwrap(), &json!({})).await;
    // A worker reserves the tokens, then dies before sending; the run is cancelled.
    let store = app.engine.store();
    let lease = app.engine.config().lease.as_millis() as i64;
    let claim = store.claim("dead", app.now(), app.now() + lease, 1).await.unwrap().remove(0);
    let (_, account) = app.get("/v1/account", &key).await;
    let period = account["period"]["from"].as_str().unwrap().to_string();
    let held = store.reserve_tokens(&run_id, "dead", &account_id, &period, 60_000, 100_000).await.unwrap();
    assert_eq!(held, switchboard_runtime::store::Reservation::Held);
    assert_eq!(store.period_counters(&account_id, &period).await.unwrap(), (0, 60_000));
    let _ = claim;
    assert_eq!(app.post_json(&format!("/v1/runs/{run_id}/cancel"), &key, &json!({})).await.0, 202);
    assert_eq!(store.period_counters(&account_id, &period).await.unwrap(), (0, 0), "the reservation is released");
}

on_both_backends!(
    two_steps_racing_for_the_last_tokens_exactly_one_sends,
    a_run_started_without_tokens_is_kept_failed_and_uncharged,
    cancelling_a_run_releases_its_reservation,
);
