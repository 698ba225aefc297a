//! Engine semantics, driven step by step on a manual clock: delays, retries, branches, waits,
//! cancellation, versions, crash mid-send.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

mod later;

use crate::on_both_backends;
use crate::support::{TestApp, TestDb, timeline};

const DAY: i64 = 86_400_000;

fn manual(steps: Value) -> Value {
    json!({ "name": "test", "trigger": { "manual": {} }, "steps": steps })
}

async fn delay_then_action_runs_at_its_time(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let wf = app
        .workflow(
            &key,
            &manual(json!([
                { "id": "hello", "action": "log", "input": { "message": "hi {{ event.lead.first_name }}" } },
                { "id": "wait", "delay": "1d" },
                { "id": "act", "action": "test.flaky", "input": { "label": "{{ event.lead.first_name }}" } },
            ])),
        )
        .await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({ "lead": { "first_name": "Ada" } })).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["hello:succeeded", "wait:waiting"]);
    assert_eq!(run["status"], "waiting");
    assert_eq!(run["steps"][0]["output"]["message"], "hi Ada");

    app.advance(DAY - 1_000).await;
    assert_eq!(app.flaky.calls.load(Ordering::SeqCst), 0, "a delay must never fire early");
    app.advance(1_000).await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["hello:succeeded", "wait:succeeded", "act:succeeded"]);
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["steps"][2]["input"]["label"], "Ada");
    assert_eq!(app.flaky.calls.load(Ordering::SeqCst), 1);
    let units: Vec<&str> = run["usage"].as_array().unwrap().iter().map(|u| u["unit"].as_str().unwrap()).collect();
    assert_eq!(units, ["workflow_run", "http_request"]);
}

async fn retries_back_off_and_bill_once(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    app.flaky.fail_first.store(3, Ordering::SeqCst);
    let wf = app
        .workflow(
            &key,
            &manual(json!([
                { "id": "act", "action": "test.flaky", "retry": { "max_attempts": 5, "backoff": "10s" } },
            ])),
        )
        .await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "waiting");
    assert_eq!(run["steps"][0]["status"], "pending");
    // Full jitter may (rarely) draw a zero delay, making the next attempt due at once.
    assert!(run["steps"][0]["attempts"].as_i64().unwrap() >= 1);
    assert_eq!(run["steps"][0]["error"]["code"], "flaky");
    // Backoff ceilings: 10 s, 20 s, 40 s (full jitter below each).
    for ceiling in [10_000, 20_000, 40_000] {
        app.advance(ceiling).await;
    }
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["steps"][0]["attempts"], 4);
    assert_eq!(app.flaky.calls.load(Ordering::SeqCst), 4);
    let billed: Vec<&Value> = run["usage"].as_array().unwrap().iter().filter(|u| u["unit"] == "http_request").collect();
    assert_eq!(billed.len(), 1, "a retried step bills once: {run}");
}

async fn exhausted_retries_fail_and_retry_resumes_from_the_failed_step(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    app.flaky.fail_first.store(100, Ordering::SeqCst);
    let wf = app
        .workflow(
            &key,
            &manual(json!([
                { "id": "first", "action": "log", "input": { "message": "once" } },
                { "id": "act", "action": "test.flaky", "retry": { "max_attempts": 2, "backoff": "1s" } },
            ])),
        )
        .await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    app.drain().await;
    app.advance(1_000).await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "flaky");
    assert_eq!(run["error"]["step_id"], "act");

    app.flaky.fail_first.store(0, Ordering::SeqCst);
    let (status, _) = app.post_json(&format!("/v1/runs/{run_id}/retry"), &key, &json!({})).await;
    assert_eq!(status, 202);
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(timeline(&run), ["first:succeeded", "act:failed", "act:succeeded"], "the log step is not re-run");
    let (status, _) = app.post_json(&format!("/v1/runs/{run_id}/retry"), &key, &json!({})).await;
    assert_eq!(status, 409, "only failed runs can be retried");
}

async fn set_and_branch_choose_the_path(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let wf = app
        .workflow(
            &key,
            &manual(json!([
                { "id": "score", "set": { "points": "event.lead.score * 2", "tier": "if event.lead.score > 50 { \"hot\" } else { \"cold\" }" } },
                { "id": "route", "branch": [
                    { "when": "vars.points > 100", "goto": "senior" },
                    { "else": "nurture" },
                ] },
                { "id": "senior", "action": "log", "input": { "message": "senior for {{ vars.tier }} {{ vars.points }}" } },
                { "id": "done", "end": {} },
                { "id": "nurture", "action": "log", "input": { "message": "nurture" } },
            ])),
        )
        .await;
    let id = wf["id"].as_str().unwrap();
    let hot = app.start(&key, id, &json!({ "lead": { "score": 90 } })).await;
    let cold = app.start(&key, id, &json!({ "lead": { "score": 30 } })).await;
    app.drain().await;
    let hot = app.run(&key, &hot).await;
    assert_eq!(timeline(&hot), ["score:succeeded", "route:succeeded", "senior:succeeded", "done:succeeded"]);
    assert_eq!(hot["steps"][2]["output"]["message"], "senior for hot 180");
    let cold = app.run(&key, &cold).await;
    assert_eq!(timeline(&cold), ["score:succeeded", "route:succeeded", "nurture:succeeded"]);
    assert_eq!(cold["status"], "succeeded");
}

async fn on_error_continue_and_goto(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let wf = app
        .workflow(
            &key,
            &manual(json!([
                { "id": "a", "action": "test.broken", "on_error": "continue" },
                { "id": "b", "action": "test.broken", "on_error": "goto d" },
                { "id": "c", "action": "log", "input": { "message": "skipped" } },
                { "id": "d", "action": "log", "input": { "message": "recovered" } },
                { "id": "e", "action": "test.broken" },
            ])),
        )
        .await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["a:failed", "b:failed", "d:succeeded", "e:failed"]);
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "vendor_rejected");
    assert_eq!(run["steps"][0]["attempts"], 1, "permanent failures are not retried");
}

async fn wait_for_resumes_on_its_event_and_times_out_otherwise(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    app.workflow(&key, &json!({
        "name": "survey",
        "trigger": { "event": "purchase.completed" },
        "steps": [
            { "id": "who", "set": { "lead_id": "event.lead.id" } },
            { "id": "answer", "wait_for": { "event": "survey.answered", "match": "event.lead_id == vars.lead_id", "timeout": "3d", "on_timeout": "no_answer" } },
            { "id": "thanks", "action": "log", "input": { "message": "rating {{ steps.answer.output.event.data.rating }}" } },
            { "id": "stop", "end": {} },
            { "id": "no_answer", "action": "log", "input": { "message": "no answer" } },
        ]
    }))
    .await;
    let (s, a) = app.post_json("/v1/events", &key, &json!({ "type": "purchase.completed", "data": { "lead": { "id": "L1" } } })).await;
    assert_eq!(s, 202, "{a}");
    let (_, b) = app.post_json("/v1/events", &key, &json!({ "type": "purchase.completed", "data": { "lead": { "id": "L2" } } })).await;
    app.drain().await;
    let (run_a, run_b) = (a["run_ids"][0].as_str().unwrap(), b["run_ids"][0].as_str().unwrap());
    assert_eq!(timeline(&app.run(&key, run_a).await), ["who:succeeded", "answer:waiting"]);

    let (s, answered) = app.post_json("/v1/events", &key, &json!({ "type": "survey.answered", "data": { "lead_id": "L1", "rating": 5 } })).await;
    assert_eq!(s, 202);
    assert_eq!(answered["run_ids"], json!([]), "no workflow is triggered by survey.answered");
    app.drain().await;
    let a = app.run(&key, run_a).await;
    assert_eq!(timeline(&a), ["who:succeeded", "answer:succeeded", "thanks:succeeded", "stop:succeeded"]);
    assert_eq!(a["steps"][2]["output"]["message"], "rating 5");
    assert_eq!(timeline(&app.run(&key, run_b).await), ["who:succeeded", "answer:waiting"], "L2's wait does not match L1's answer");

    app.advance(3 * DAY).await;
    let b = app.run(&key, run_b).await;
    assert_eq!(timeline(&b), ["who:succeeded", "answer:succeeded", "no_answer:succeeded"]);
    assert_eq!(b["steps"][1]["output"]["timed_out"], true);
    // A late answer resumes nothing.
    app.post_json("/v1/events", &key, &json!({ "type": "survey.answered", "data": { "lead_id": "L2", "rating": 1 } })).await;
    app.drain().await;
    assert_eq!(app.run(&key, run_b).await["steps"].as_array().unwrap().len(), 3);
}

async fn cancel_drops_pending_delays(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let wf = app
        .workflow(
            &key,
            &manual(json!([
                { "id": "wait", "delay": "2h" },
                { "id": "act", "action": "test.flaky" },
            ])),
        )
        .await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    app.drain().await;
    let (status, _) = app.post_json(&format!("/v1/runs/{run_id}/cancel"), &key, &json!({})).await;
    assert_eq!(status, 202);
    app.advance(3 * 3_600_000).await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(timeline(&run), ["wait:cancelled"]);
    assert_eq!(app.flaky.calls.load(Ordering::SeqCst), 0);
    let (status, _) = app.post_json(&format!("/v1/runs/{run_id}/cancel"), &key, &json!({})).await;
    assert_eq!(status, 409);
}

async fn endless_loop_in_a_condition_fails_only_that_run(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let bad = app
        .workflow(
            &key,
            &manual(json!([
                { "id": "spin", "branch": [{ "when": "let n = 0; loop { n += 1; } true", "goto": "end" }] },
            ])),
        )
        .await;
    let good = app.workflow(&key, &manual(json!([{ "id": "ok", "action": "log", "input": { "message": "fine" } }]))).await;
    let bad_run = app.start(&key, bad["id"].as_str().unwrap(), &json!({})).await;
    let good_run = app.start(&key, good["id"].as_str().unwrap(), &json!({})).await;
    app.drain().await;
    let bad = app.run(&key, &bad_run).await;
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["error"]["code"], "script_error");
    assert!(bad["error"]["message"].as_str().unwrap().contains("operation limit"), "{bad}");
    assert_eq!(app.run(&key, &good_run).await["status"], "succeeded");
}

async fn editing_makes_a_version_and_running_runs_keep_theirs(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let v1 = manual(json!([{ "id": "wait", "delay": "1h" }, { "id": "say", "action": "log", "input": { "message": "v1" } }]));
    let wf = app.workflow(&key, &v1).await;
    let id = wf["id"].as_str().unwrap();
    let old_run = app.start(&key, id, &json!({})).await;
    app.drain().await;
    let v2 = manual(json!([{ "id": "say", "action": "log", "input": { "message": "v2" } }]));
    let (status, body) = app.call("PUT", &format!("/v1/workflows/{id}"), Some(&key), Some("application/json"), v2.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);
    let new_run = app.start(&key, id, &json!({})).await;
    app.advance(3_600_000).await;
    let old = app.run(&key, &old_run).await;
    assert_eq!(old["version"], 1);
    assert_eq!(old["steps"][1]["output"]["message"], "v1");
    let new = app.run(&key, &new_run).await;
    assert_eq!(new["version"], 2);
    assert_eq!(new["steps"][0]["output"]["message"], "v2");
}

async fn a_send_interrupted_by_a_crash_is_never_resent(db: TestDb) {
    use switchboard_runtime::store::StepRow;
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let wf = app.workflow(&key, &manual(json!([{ "id": "send", "action": "test.broken" }]))).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    // A worker claims the step and records that it is dispatching, then dies before any answer.
    let store = app.engine.store();
    let lease = app.engine.config().lease.as_millis() as i64;
    let claims = store.claim("dead-worker", app.now(), app.now() + lease, 10).await.unwrap();
    assert_eq!(claims.len(), 1);
    let row = StepRow {
        run_id: run_id.clone(),
        seq: claims[0].step_seq,
        step_id: "send".into(),
        status: switchboard_runtime::status::StepStatus::Running,
        attempts: 0,
        input: Some("{}".into()),
        output: None,
        error: None,
        started_at: Some(app.now()),
        finished_at: None,
        due_at: None,
        rate_slot_at: None,
        rate_slot_key: None,
        deferred_handle: None,
    };
    assert_eq!(store.mark_dispatching("dead-worker", &row, app.now() + lease, None).await.unwrap(), switchboard_runtime::store::Dispatch::Marked);
    assert_eq!(app.drain().await, 0, "a leased step is not claimed again before its lease expires");
    assert_eq!(timeline(&app.run(&key, &run_id).await), ["send:running"]);
    app.advance(lease).await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["send:outcome_unknown"]);
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "interrupted");
    // The dead worker's late completion is refused: its lease is gone.
    let late = switchboard_runtime::store::Completion {
        run_id: run_id.clone(),
        account_id: String::new(),
        workflow_id: String::new(),
        token: "dead-worker".into(),
        step: row,
        next: switchboard_runtime::store::Next::Finish,
        run_status: switchboard_runtime::status::RunStatus::Succeeded,
        context: None,
        run_error: None,
        usage: vec![],
        wait: None,
        clear_wait: false,
        side_effect: true,
        quota: None,
        outbox: None,
        spawn: None,
        parent: None,
        now: app.now(),
    };
    assert!(!store.complete(&late).await.unwrap());
}

async fn cancel_lets_the_running_step_finish_and_starts_nothing_after(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let wf = app.workflow(&key, &manual(json!([{ "id": "a", "action": "test.gate" }, { "id": "b", "action": "test.flaky" }]))).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    let lease = app.engine.config().lease.as_millis() as i64;
    let claims = app.engine.store().claim("w", app.now(), app.now() + lease, 10).await.unwrap();
    let engine = app.engine.clone();
    let claim = claims[0].clone();
    let worker = tokio::spawn(async move { engine.process("w", claim).await });
    app.gate.entered.notified().await; // step `a` is running
    let (status, _) = app.post_json(&format!("/v1/runs/{run_id}/cancel"), &key, &json!({})).await;
    assert_eq!(status, 202);
    app.gate.release.notify_one();
    worker.await.unwrap().unwrap();
    app.advance(lease).await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(timeline(&run), ["a:succeeded"], "the running step finished; nothing after it started");
    assert_eq!(app.flaky.calls.load(Ordering::SeqCst), 0);
    let billed = run["usage"].as_array().unwrap().iter().filter(|u| u["unit"] == "http_request").count();
    assert_eq!(billed, 1, "the step that ran is billed: {run}");
}

async fn an_event_racing_a_wait_timeout_resumes_exactly_once(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    app.workflow(
        &key,
        &json!({
            "name": "race",
            "trigger": { "event": "quote.sent" },
            "steps": [
                { "id": "paid", "wait_for": { "event": "payment.received", "timeout": "1h" } },
                { "id": "after", "action": "test.flaky" },
            ]
        }),
    )
    .await;
    let (_, started) = app.post_json("/v1/events", &key, &json!({ "type": "quote.sent", "data": {} })).await;
    let run_id = started["run_ids"][0].as_str().unwrap().to_string();
    app.drain().await;
    // The timeout falls due and a worker claims it; before it completes, the event arrives.
    app.clock.advance(3_600_000);
    let lease = app.engine.config().lease.as_millis() as i64;
    let claims = app.engine.store().claim("timeout-worker", app.now(), app.now() + lease, 10).await.unwrap();
    assert_eq!(claims.len(), 1);
    let (s, _) = app.post_json("/v1/events", &key, &json!({ "type": "payment.received", "data": { "amount": 10 } })).await;
    assert_eq!(s, 202);
    app.engine.process("timeout-worker", claims[0].clone()).await.unwrap();
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["paid:succeeded", "after:succeeded"], "{run}");
    assert_eq!(run["steps"][0]["output"]["matched"], true, "the event won; the timeout's completion was fenced out");
    assert_eq!(app.flaky.calls.load(Ordering::SeqCst), 1);
}

async fn apalis_workers_run_due_steps(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("a").await;
    let steps: Vec<Value> = (0..5).map(|i| json!({ "id": format!("s{i}"), "action": "log", "input": { "message": "x" } })).collect();
    let wf = app.workflow(&key, &manual(json!(steps))).await;
    let mut runs = Vec::new();
    for _ in 0..20 {
        runs.push(app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await);
    }
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let workers = switchboard_runtime::engine::worker::run(app.engine.clone(), async move {
        let _ = stopped.changed().await;
    });
    let check = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        for id in &runs {
            while app.run(&key, id).await["status"] != "succeeded" {
                assert!(std::time::Instant::now() < deadline, "run {id} not done by the workers");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        let _ = stop.send(true);
    };
    let (worked, ()) = tokio::join!(workers, check);
    worked.unwrap();
    assert_eq!(app.engine.store().queue_depth().await.unwrap(), 0, "finished runs leave the queue");
}

/// Runs accepted while this process's workers run are handed to them already leased (no claim),
/// past the hand-off queue's room they wait in the store, and at shutdown whatever the workers
/// held but had not started is given back due at once, not left leased until its lease expires.
async fn accepted_runs_go_to_the_local_workers_and_back_to_the_store_at_shutdown(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account_on("a", "enterprise").await;
    let steps: Vec<Value> = (0..3).map(|i| json!({ "id": format!("s{i}"), "action": "log", "input": { "message": "x" } })).collect();
    let wf = app.workflow(&key, &manual(json!(steps))).await;
    let wf_id = wf["id"].as_str().unwrap().to_string();
    let empty = json!({});
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let workers = switchboard_runtime::engine::worker::run(app.engine.clone(), async move {
        let _ = stopped.changed().await;
    });
    let check = async {
        // More at once than the hand-off queue holds (the concurrency, 128): some runs are
        // handed off, the rest claimed from the store.
        let first: Vec<String> = futures::future::join_all((0..300).map(|_| app.start(&key, &wf_id, &empty))).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for id in &first {
            while app.run(&key, id).await["status"] != "succeeded" {
                assert!(std::time::Instant::now() < deadline, "run {id} not done by the workers");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        assert_eq!(app.engine.store().queue_depth().await.unwrap(), 0, "finished runs leave the queue");
        // A burst, then a stop straight away.
        let burst: Vec<String> = futures::future::join_all((0..300).map(|_| app.start(&key, &wf_id, &empty))).await;
        let _ = stop.send(true);
        burst
    };
    let (worked, burst) = tokio::join!(workers, check);
    worked.unwrap();
    // What was not finished is due now (the give-back runs on its own task): a claim at this
    // instant takes every such run; none waits for a lease to expire.
    let lease = app.engine.config().lease.as_millis() as i64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut unfinished = Vec::new();
        for id in &burst {
            if app.run(&key, id).await["status"] != "succeeded" {
                unfinished.push(id.clone());
            }
        }
        let depth = app.engine.store().queue_depth().await.unwrap();
        assert_eq!(depth as usize, unfinished.len(), "every unfinished run keeps its queue row");
        let claims = app.engine.store().claim("after-stop", app.now(), app.now() + lease, 1_000).await.unwrap();
        if claims.len() == unfinished.len() {
            let mut claimed: Vec<String> = claims.into_iter().map(|c| c.run_id).collect();
            claimed.sort();
            unfinished.sort();
            assert_eq!(claimed, unfinished);
            break;
        }
        // Give back what this look took, and look again.
        for c in &claims {
            app.engine.store().release(&c.run_id, "after-stop", app.now()).await.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} unfinished runs still leased after shutdown",
            unfinished.len() - claims.len(),
            unfinished.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Accepted with no workers running: due now for any worker, not leased.
    let late = app.start(&key, &wf_id, &json!({})).await;
    let claims = app.engine.store().claim("late", app.now(), app.now() + lease, 1_000).await.unwrap();
    assert!(claims.iter().any(|c| c.run_id == late), "a run accepted after the workers stopped is due now");
}

on_both_backends!(
    accepted_runs_go_to_the_local_workers_and_back_to_the_store_at_shutdown,
    apalis_workers_run_due_steps,
    delay_then_action_runs_at_its_time,
    retries_back_off_and_bill_once,
    exhausted_retries_fail_and_retry_resumes_from_the_failed_step,
    set_and_branch_choose_the_path,
    on_error_continue_and_goto,
    wait_for_resumes_on_its_event_and_times_out_otherwise,
    cancel_drops_pending_delays,
    endless_loop_in_a_condition_fails_only_that_run,
    editing_makes_a_version_and_running_runs_keep_theirs,
    a_send_interrupted_by_a_crash_is_never_resent,
    cancel_lets_the_running_step_finish_and_starts_nothing_after,
    an_event_racing_a_wait_timeout_resumes_exactly_once,
);
