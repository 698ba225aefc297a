//! Steps whose action finishes later (like a call): the step waits `awaiting_completion` (shown
//! as `waiting`) until a callback (`Engine::complete_later`) or a poll at its deadline completes
//! it, and the usage known only then is billed in that completion, once.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use switchboard_runtime::action::{ActionError, ActionOutput, Done, Poll};
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::engine::LaterCompletion;
use switchboard_runtime::metering::Unit;

use super::manual;
use crate::on_both_backends;
use crate::support::{Deferred, TestApp, TestDb, timeline};

/// A call, then a log step after it.
fn call_then_log() -> Value {
    manual(json!([
        { "id": "dial", "action": "test.later", "input": { "to": "+15550001111" } },
        { "id": "after", "action": "log", "input": { "message": "the call ended: {{ steps.dial.output.status }}" } },
    ]))
}

/// The call's ledger rows of a run: `(quantity)` of each voice-minute row.
fn minutes_billed(run: &Value) -> Vec<i64> {
    run["usage"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["unit"] == Unit::VoiceMinuteStandard.as_str())
        .map(|u| u["quantity"].as_f64().unwrap() as i64)
        .collect()
}

fn call_ended(minutes: i64) -> ActionOutput {
    ActionOutput { output: json!({ "status": "completed", "minutes": minutes }), usage: vec![Unit::VoiceMinuteStandard.times(minutes)] }
}

async fn a_callback_completes_a_later_step_and_bills_once(db: TestDb) {
    let app = TestApp::new(db).await;
    let (account, key) = app.account("a").await;
    let wf = app.workflow(&key, &call_then_log()).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    let started = app.now();
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "waiting", "{run}");
    assert_eq!(timeline(&run), ["dial:waiting"]);
    let call = &run["steps"][0];
    assert_eq!(call["output"], Value::Null, "the handle is not in the output: {call}");
    assert_eq!(call["due_at"], to_rfc3339(started + Deferred::CHECK_AFTER_MS), "due at the poll deadline");
    assert_eq!(call["attempts"], 1);
    assert!(minutes_billed(&run).is_empty(), "nothing billed before the call ends");
    let row = app.engine.store().step_row(&run_id, call["seq"].as_i64().unwrap()).await.unwrap().unwrap();
    assert_eq!(row.deferred_handle.as_deref(), Some(r#"{"call_sid":"CA1"}"#));
    let seq = call["seq"].as_i64().unwrap();

    app.clock.advance(125_000);
    let done = app.engine.complete_later(&account, &run_id, seq, Ok(call_ended(3))).await.unwrap();
    assert_eq!(done, LaterCompletion::Recorded);
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(timeline(&run), ["dial:succeeded", "after:succeeded"]);
    assert_eq!(run["steps"][0]["output"], json!({ "status": "completed", "minutes": 3 }));
    assert_eq!(run["steps"][0]["attempts"], 1, "a completion spends no attempt");
    assert_eq!(run["steps"][1]["output"]["message"], "the call ended: completed");
    assert_eq!(minutes_billed(&run), [3]);

    // Twilio repeats callbacks: a duplicate changes nothing and bills nothing.
    let again = app.engine.complete_later(&account, &run_id, seq, Ok(call_ended(9))).await.unwrap();
    assert_eq!(again, LaterCompletion::NotWaiting);
    let failed = app.engine.complete_later(&account, &run_id, seq, Err(ActionError::permanent("no_answer", "no answer"))).await.unwrap();
    assert_eq!(failed, LaterCompletion::NotWaiting);
    // Another account cannot complete it either (checked before the duplicate would be).
    let (other, _) = app.account("b").await;
    assert_eq!(app.engine.complete_later(&other, &run_id, seq, Ok(call_ended(1))).await.unwrap(), LaterCompletion::NotWaiting);
    app.advance(Deferred::CHECK_AFTER_MS).await;
    let after = app.run(&key, &run_id).await;
    assert_eq!(after, run, "nothing changed");
    assert!(app.later.polled.lock().unwrap().is_empty(), "a completed step is never polled");
    assert_eq!(app.later.starts.load(Ordering::SeqCst), 1);
}

async fn without_a_callback_the_engine_polls_at_the_deadline(db: TestDb) {
    let app = TestApp::new(db).await;
    let (account, key) = app.account("a").await;
    let wf = app.workflow(&key, &call_then_log()).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    app.drain().await;
    let seq = app.run(&key, &run_id).await["steps"][0]["seq"].as_i64().unwrap();

    app.advance(Deferred::CHECK_AFTER_MS - 1).await;
    assert!(app.later.polled.lock().unwrap().is_empty(), "no poll before the deadline");
    // The deadline passes: the poll answers "not yet", which re-arms it.
    app.advance(1).await;
    assert_eq!(*app.later.polled.lock().unwrap(), [json!({ "call_sid": "CA1" })]);
    let run = app.run(&key, &run_id).await;
    assert_eq!(timeline(&run), ["dial:waiting"], "{run}");
    assert_eq!(run["status"], "waiting");
    assert_eq!(run["steps"][0]["due_at"], to_rfc3339(app.now() + Deferred::NOT_YET_MS));
    assert_eq!(run["steps"][0]["attempts"], 1, "a poll spends no attempt");

    app.later
        .polls
        .lock()
        .unwrap()
        .push_back(Poll::Done(Done { output: json!({ "status": "completed", "minutes": 2 }), usage: vec![Unit::VoiceMinuteStandard.times(2)] }));
    app.advance(Deferred::NOT_YET_MS - 1).await;
    assert_eq!(app.later.polled.lock().unwrap().len(), 1);
    app.advance(1).await;
    assert_eq!(app.later.polled.lock().unwrap().len(), 2);
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(timeline(&run), ["dial:succeeded", "after:succeeded"]);
    assert_eq!(run["steps"][0]["attempts"], 1);
    assert_eq!(minutes_billed(&run), [2]);
    assert_eq!(app.later.starts.load(Ordering::SeqCst), 1, "the call is placed once");

    // The vendor's callback arriving after the poll completed the step writes nothing.
    assert_eq!(app.engine.complete_later(&account, &run_id, seq, Ok(call_ended(2))).await.unwrap(), LaterCompletion::NotWaiting);
    assert_eq!(minutes_billed(&app.run(&key, &run_id).await), [2]);
}

async fn a_callback_during_a_poll_wins_and_the_poll_writes_nothing(db: TestDb) {
    let app = TestApp::new(db).await;
    let (account, key) = app.account("a").await;
    let wf = app.workflow(&key, &call_then_log()).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    app.drain().await;
    let seq = app.run(&key, &run_id).await["steps"][0]["seq"].as_i64().unwrap();
    app.later.hold_polls.store(true, Ordering::SeqCst);
    app.later.polls.lock().unwrap().push_back(Poll::Done(Done { output: json!({ "status": "polled" }), usage: vec![Unit::VoiceMinuteStandard.times(7)] }));
    app.clock.advance(Deferred::CHECK_AFTER_MS);
    let engine = app.engine.clone();
    let polling = tokio::spawn(async move { engine.process_due(10).await });
    app.later.poll_entered.notified().await;

    // The callback arrives while the poll is in flight: it takes the step's queue row.
    assert_eq!(app.engine.complete_later(&account, &run_id, seq, Ok(call_ended(3))).await.unwrap(), LaterCompletion::Recorded);
    app.later.poll_release.notify_one();
    polling.await.unwrap().unwrap();
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(timeline(&run), ["dial:succeeded", "after:succeeded"]);
    assert_eq!(run["steps"][0]["output"]["status"], "completed", "the callback's outcome, not the poll's");
    assert_eq!(minutes_billed(&run), [3]);
}

async fn a_failed_call_fails_the_step_like_a_failed_send(db: TestDb) {
    let app = TestApp::new(db).await;
    let (account, key) = app.account("a").await;
    let wf = app.workflow(&key, &call_then_log()).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    app.drain().await;
    let seq = app.run(&key, &run_id).await["steps"][0]["seq"].as_i64().unwrap();
    let error = ActionError::permanent("no_answer", "the callee did not answer");
    assert_eq!(app.engine.complete_later(&account, &run_id, seq, Err(error)).await.unwrap(), LaterCompletion::Recorded);
    app.drain().await;
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(timeline(&run), ["dial:failed"]);
    assert_eq!(run["error"]["code"], "no_answer");
    assert!(minutes_billed(&run).is_empty());
}

async fn cancel_while_waiting_drops_a_later_callback(db: TestDb) {
    let app = TestApp::new(db).await;
    let (account, key) = app.account("a").await;
    let wf = app.workflow(&key, &call_then_log()).await;
    let run_id = app.start(&key, wf["id"].as_str().unwrap(), &json!({})).await;
    app.drain().await;
    let seq = app.run(&key, &run_id).await["steps"][0]["seq"].as_i64().unwrap();
    let (status, _) = app.post_json(&format!("/v1/runs/{run_id}/cancel"), &key, &json!({})).await;
    assert_eq!(status, 202);
    let run = app.run(&key, &run_id).await;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(timeline(&run), ["dial:cancelled"]);

    assert_eq!(app.engine.complete_later(&account, &run_id, seq, Ok(call_ended(4))).await.unwrap(), LaterCompletion::NotWaiting);
    app.advance(Deferred::CHECK_AFTER_MS).await;
    let after = app.run(&key, &run_id).await;
    assert_eq!(after, run, "the callback wrote nothing");
    assert!(minutes_billed(&after).is_empty());
    assert!(app.later.polled.lock().unwrap().is_empty(), "a cancelled step is never polled");
}

on_both_backends!(
    a_callback_completes_a_later_step_and_bills_once,
    without_a_callback_the_engine_polls_at_the_deadline,
    a_callback_during_a_poll_wins_and_the_poll_writes_nothing,
    a_failed_call_fails_the_step_like_a_failed_send,
    cancel_while_waiting_drops_a_later_callback,
);
