//! Schedule triggers: each tick fires exactly once however many processes run the scheduler,
//! missed ticks follow `catch_up`, and disabling stops the ticks. "Processes" here are engines
//! sharing one database and one manual clock; `fire_due_schedules` is the scheduler's single step.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};
use switchboard_runtime::engine::{Engine, EngineConfig};

use crate::on_both_backends;
use crate::support::{TestApp, TestDb, actions_config};

const MINUTE: i64 = 60_000;

fn every_minute(catch_up: &str) -> Value {
    json!({ "name": "tick", "trigger": { "schedule": { "cron": "* * * * *", "timezone": "UTC", "catch_up": catch_up } },
            "steps": [{ "id": "note", "action": "log", "input": { "message": "tick at {{ event.scheduled_at }}" } }] })
}

/// Two more engines on the app's database and clock, as other processes would be.
fn other_processes(app: &TestApp) -> Vec<Arc<Engine>> {
    (0..2)
        .map(|_| {
            let actions = switchboard_actions::registry(&actions_config()).unwrap();
            Arc::new(Engine::new(app.engine.store().clone(), actions, Arc::new(app.clock.clone()), EngineConfig::default()))
        })
        .collect()
}

async fn scheduled_at(app: &TestApp, key: &str, workflow_id: &str) -> Vec<String> {
    let (_, runs) = app.get(&format!("/v1/runs?workflow_id={workflow_id}&limit=200"), key).await;
    let mut at: Vec<String> = runs["runs"].as_array().unwrap().iter().map(|r| r["event"]["scheduled_at"].as_str().unwrap().to_string()).collect();
    at.sort();
    at
}

async fn a_schedule_ticks_once_a_minute_with_three_processes(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    let wf = app.workflow(&key, &every_minute("latest")).await;
    let id = wf["id"].as_str().unwrap();
    let mut engines = other_processes(&app);
    engines.push(app.engine.clone());
    let start = app.now();
    for minute in 1..=5 {
        app.clock.advance(MINUTE);
        // All three passes race for the tick.
        let (a, b, c) = tokio::join!(engines[0].fire_due_schedules(), engines[1].fire_due_schedules(), engines[2].fire_due_schedules());
        assert_eq!(a.unwrap() + b.unwrap() + c.unwrap(), 1, "minute {minute}: one run for the tick");
        // A pass a second later finds nothing due.
        app.clock.advance(1_000);
        assert_eq!(engines[1].fire_due_schedules().await.unwrap(), 0);
        app.clock.advance(-1_000);
    }
    app.drain().await;
    let ticks = scheduled_at(&app, &key, id).await;
    let expected: Vec<String> = (1..=5).map(|m| switchboard_runtime::clock::to_rfc3339(start + m * MINUTE)).collect();
    assert_eq!(ticks, expected, "every minute exactly once");
    let (_, runs) = app.get(&format!("/v1/runs?workflow_id={id}"), &key).await;
    assert!(runs["runs"].as_array().unwrap().iter().all(|r| r["status"] == "succeeded"), "{runs}");

    // Disabled: no more ticks; enabled again: ticks resume from now, without the missed ones.
    assert_eq!(app.post_json(&format!("/v1/workflows/{id}/disable"), &key, &json!({})).await.0, StatusCode::OK);
    app.clock.advance(3 * MINUTE);
    assert_eq!(app.engine.fire_due_schedules().await.unwrap(), 0);
    app.post_json(&format!("/v1/workflows/{id}/enable"), &key, &json!({})).await;
    assert_eq!(app.engine.fire_due_schedules().await.unwrap(), 0, "nothing was due while disabled");
    app.clock.advance(MINUTE);
    assert_eq!(app.engine.fire_due_schedules().await.unwrap(), 1);
}

/// A restart that spans missed ticks: `latest` fires the last one once, `all` every one,
/// `none` none (the next tick still fires).
async fn missed_ticks_follow_catch_up(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    let latest = app.workflow(&key, &every_minute("latest")).await;
    let all = app.workflow(&key, &every_minute("all")).await;
    let none = app.workflow(&key, &every_minute("none")).await;
    let start = app.now();
    // "Down" for ten minutes and a half: nothing ran the scheduler.
    app.clock.advance(10 * MINUTE + 30_000);
    assert_eq!(app.engine.fire_due_schedules().await.unwrap(), 1 + 10);
    let latest_ticks = scheduled_at(&app, &key, latest["id"].as_str().unwrap()).await;
    assert_eq!(latest_ticks, [switchboard_runtime::clock::to_rfc3339(start + 10 * MINUTE)]);
    assert_eq!(scheduled_at(&app, &key, all["id"].as_str().unwrap()).await.len(), 10);
    assert_eq!(scheduled_at(&app, &key, none["id"].as_str().unwrap()).await.len(), 0);
    // Back to normal: each fires the next tick.
    app.clock.advance(30_000);
    assert_eq!(app.engine.fire_due_schedules().await.unwrap(), 3);
    assert_eq!(scheduled_at(&app, &key, none["id"].as_str().unwrap()).await, [switchboard_runtime::clock::to_rfc3339(start + 11 * MINUTE)]);
}

async fn bad_schedules_are_refused_when_saving(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;
    for (schedule, path) in [
        (json!({ "cron": "0 9 * *" }), "trigger.schedule.cron"),
        (json!({ "cron": "0 9 * * 8" }), "trigger.schedule.cron"),
        (json!({ "cron": "0 9 * * *", "timezone": "Mars/Olympus" }), "trigger.schedule.timezone"),
        (json!({ "cron": "0 9 * * *", "catch_up": "sometimes" }), "trigger.schedule.catch_up"),
        (json!({}), "trigger.schedule.cron"),
    ] {
        let def = json!({ "name": "bad", "trigger": { "schedule": schedule }, "steps": [{ "id": "s", "end": {} }] });
        let (status, body) = app.post_json("/v1/workflows", &key, &def).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{schedule}: {body}");
        assert_eq!(body["error"]["details"][0]["path"], path, "{body}");
    }
}

on_both_backends!(a_schedule_ticks_once_a_minute_with_three_processes, missed_ticks_follow_catch_up, bad_schedules_are_refused_when_saving);

/// Real processes: one `serve` and two `worker`s on one PostgreSQL, schedules ticking every
/// second (6-field cron, so the test takes seconds, not minutes). With `catch_up: all`, every
/// tick starts exactly one run, none skipped, none twice. Then all three are SIGKILLed; after
/// the downtime a restart fires the missed ticks: all of them once for `all`, none but the
/// latest for `latest`.
async fn real_processes_fire_each_tick_once_and_catch_up_after_a_restart(db: TestDb) {
    use std::time::{Duration, Instant};

    use crate::crash::{ADMIN, free_port, server_log, spawn_with, start_with};
    use crate::support::TempDir;

    let data = TempDir::new();
    let port = free_port();
    let mut server = start_with(&db.url, &data, port, &[]).await;
    let mut workers = [spawn_with("worker", &db.url, &data, free_port(), &[]), spawn_with("worker", &db.url, &data, free_port(), &[])];
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let account: Value =
        http.post(format!("{base}/v1/accounts")).bearer_auth(ADMIN).json(&json!({ "name": "cron" })).send().await.unwrap().json().await.unwrap();
    let key = account["api_key"].as_str().unwrap().to_string();
    let account_id = account["id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for catch_up in ["all", "latest"] {
        let def = json!({ "name": catch_up, "trigger": { "schedule": { "cron": "* * * * * *", "timezone": "UTC", "catch_up": catch_up } },
                          "steps": [{ "id": "note", "action": "log", "input": { "message": "{{ event.scheduled_at }}" } }] });
        let wf: Value = http.post(format!("{base}/v1/workflows")).bearer_auth(&key).json(&def).send().await.unwrap().json().await.unwrap();
        ids.push(wf["id"].as_str().unwrap_or_else(|| panic!("{wf}")).to_string());
    }
    // Read from the database itself: the processes may be down.
    let store = db.store().await;
    let ticks = |id: &str| {
        let (store, account_id, id) = (store.clone(), account_id.clone(), id.to_string());
        async move {
            let filter = switchboard_runtime::store::RunFilter { workflow_id: Some(id), limit: 500, ..Default::default() };
            let runs = store.list_runs(&account_id, &filter).await.unwrap();
            let mut at: Vec<i64> = runs
                .items
                .iter()
                .map(|r| {
                    let event: Value = serde_json::from_str(&r.event).unwrap();
                    chrono::DateTime::parse_from_rfc3339(event["scheduled_at"].as_str().unwrap()).unwrap().timestamp_millis()
                })
                .collect();
            at.sort();
            at
        }
    };
    let no_repeats = |at: &[i64]| at.windows(2).all(|w| w[0] != w[1]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    for child in workers.iter_mut().chain([&mut server.child]) {
        child.start_kill().unwrap(); // SIGKILL, all three
        child.wait().await.unwrap();
    }
    let (all_before, latest_before) = (ticks(&ids[0]).await, ticks(&ids[1]).await);
    assert!(all_before.len() >= 3, "ticks while three processes ran: {all_before:?}\n{}", server_log(&data));
    assert!(no_repeats(&all_before) && no_repeats(&latest_before), "no tick fired twice: {all_before:?} {latest_before:?}");
    assert!(all_before.windows(2).all(|w| w[1] - w[0] == 1_000), "catch_up all skips no tick: {all_before:?}");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarted_at = chrono::Utc::now().timestamp_millis();
    let mut server = start_with(&db.url, &data, port, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (all_after, latest_after) = loop {
        let (all, latest) = (ticks(&ids[0]).await, ticks(&ids[1]).await);
        if latest.len() >= latest_before.len() + 2 && all.last() > all_before.last() {
            break (all, latest);
        }
        assert!(Instant::now() < deadline, "ticks did not resume: {latest:?}\n{}", server_log(&data));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    server.child.start_kill().unwrap();
    let _ = server.child.wait().await;
    assert!(no_repeats(&all_after) && no_repeats(&latest_after), "no tick fired twice across the restart");
    assert!(all_after.windows(2).all(|w| w[1] - w[0] == 1_000), "catch_up all fired every missed tick: {all_after:?}");
    let last = *latest_before.last().unwrap();
    let during_downtime: Vec<i64> = latest_after.iter().copied().filter(|t| *t > last && *t < restarted_at - 1_000).collect();
    assert!(during_downtime.is_empty(), "catch_up latest fires only the latest missed tick: {during_downtime:?}");
    let first_after = latest_after.iter().copied().find(|t| *t > last).unwrap();
    assert!(first_after <= chrono::Utc::now().timestamp_millis() && first_after - last >= 3_000, "one catch-up tick after the downtime");
}

crate::on_postgres!(real_processes_fire_each_tick_once_and_catch_up_after_a_restart);
