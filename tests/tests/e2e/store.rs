//! Store conformance: the same behaviour asked of SQLite and PostgreSQL.

use serde_json::json;
use switchboard_runtime::status::{RunStatus, StepStatus};
use switchboard_runtime::store::{Account, Completion, NewEvent, NewRun, NewUsage, NewWait, Next, Recorded, StepRow, Store, WorkflowWrite};

use crate::support::TestDb;
use crate::{on_both_backends, on_postgres};

const T0: i64 = 1_800_000_000_000;

async fn seed(store: &Store) {
    let account = Account { id: "acc".into(), name: "A".into(), plan: "trial".into(), timezone: "UTC".into(), created_at: T0, contact_rules: None };
    store.create_account(&account, "key", "hash").await.unwrap();
    let def = json!({ "name": "w", "trigger": { "manual": {} }, "steps": [{ "id": "a", "end": {} }] });
    store
        .create_workflow(&WorkflowWrite {
            id: "wf".into(),
            account_id: "acc".into(),
            name: "w".into(),
            enabled: true,
            trigger_kind: "manual".into(),
            event_type: None,
            webhook_token: None,
            definition: def.to_string(),
            template: None,
            now: T0,
        })
        .await
        .unwrap();
}

fn event(id: &str, key: Option<&str>) -> NewEvent {
    NewEvent {
        id: id.into(),
        account_id: "acc".into(),
        event_type: "manual".into(),
        data: Some("{}".into()),
        source: "api".into(),
        dedupe_key: key.map(str::to_string),
        dedupe_since: Some(T0 - 1_000),
        response: format!("{{\"event_id\":\"{id}\"}}"),
        now: T0,
    }
}

fn run(id: &str) -> NewRun {
    NewRun {
        id: id.into(),
        workflow_id: "wf".into(),
        version: 1,
        event: "{}".into(),
        is_test: false,
        usage: Some(NewUsage {
            id: format!("{id}:run"),
            step_id: None,
            unit: "workflow_run".into(),
            quantity: 1,
            tokens_milli: 500,
            cost_micros: 5_000,
            day: "2027-01-15".into(),
        }),
        lease: None,
    }
}

async fn a_claim_is_exclusive_until_its_lease_expires(db: TestDb) {
    let store = db.store().await;
    seed(&store).await;
    for i in 0..5 {
        store.record_event(&event(&format!("e{i}"), None), &[run(&format!("r{i}"))], &[], None).await.unwrap();
    }
    let first = store.claim("w1", T0, T0 + 30_000, 3).await.unwrap();
    let second = store.claim("w2", T0, T0 + 30_000, 10).await.unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(second.len(), 2);
    let mut all: Vec<_> = first.iter().chain(&second).map(|c| c.run_id.clone()).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 5, "no row claimed twice");
    assert!(store.claim("w3", T0 + 29_999, T0 + 60_000, 10).await.unwrap().is_empty());
    let reclaimed = store.claim("w3", T0 + 30_000, T0 + 60_000, 10).await.unwrap();
    assert_eq!(reclaimed.len(), 5, "expired leases are due again");
    assert_eq!(store.next_due_at().await.unwrap(), Some(T0 + 60_000));
}

async fn concurrent_claims_never_share_a_row(db: TestDb) {
    let store = db.store().await;
    seed(&store).await;
    let runs: Vec<NewRun> = (0..200).map(|i| run(&format!("r{i:03}"))).collect();
    store.record_event(&event("e", None), &runs, &[], None).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let claims = store.claim(&format!("w{w}"), T0, T0 + 60_000, 7).await.unwrap();
                if claims.is_empty() {
                    return got;
                }
                got.extend(claims.into_iter().map(|c| c.run_id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!((total, all.len()), (200, 200));
}

async fn a_repeated_dedupe_key_answers_the_first_answer(db: TestDb) {
    let store = db.store().await;
    seed(&store).await;
    assert_eq!(store.record_event(&event("e1", Some("k")), &[run("r1")], &[], None).await.unwrap(), Recorded::New);
    let again = store.record_event(&event("e2", Some("k")), &[run("r2")], &[], None).await.unwrap();
    assert_eq!(again, Recorded::Repeat("{\"event_id\":\"e1\"}".into()));
    assert!(store.run_by_id("r2").await.unwrap().is_none(), "a repeat starts nothing");
    // Outside the window the key is free again.
    let mut late = event("e3", Some("k"));
    late.dedupe_since = Some(T0 + 1);
    assert_eq!(store.record_event(&late, &[run("r3")], &[], None).await.unwrap(), Recorded::New);
    let usage = store.usage_after("acc", 0, 100).await.unwrap();
    assert_eq!(usage.iter().map(|u| u.run_id.as_str()).collect::<Vec<_>>(), ["r1", "r3"]);
    assert!(usage[0].seq < usage[1].seq);
}

async fn versions_are_kept_and_other_accounts_see_nothing(db: TestDb) {
    let store = db.store().await;
    seed(&store).await;
    let mut w = WorkflowWrite {
        id: "wf".into(),
        account_id: "acc".into(),
        name: "w2".into(),
        enabled: true,
        trigger_kind: "manual".into(),
        event_type: None,
        webhook_token: None,
        definition: "{\"v\":2}".into(),
        template: None,
        now: T0 + 1,
    };
    assert_eq!(store.update_workflow(&w).await.unwrap(), Some(2));
    assert!(store.workflow_version("wf", 1).await.unwrap().unwrap().contains("\"w\""));
    assert_eq!(store.workflow_version("wf", 2).await.unwrap().unwrap(), "{\"v\":2}");
    w.account_id = "other".into();
    assert_eq!(store.update_workflow(&w).await.unwrap(), None);
    assert!(store.workflow("other", "wf").await.unwrap().is_none());
    assert!(!store.set_workflow_enabled("other", "wf", false, T0).await.unwrap());
    assert!(!store.delete_workflow("other", "wf", T0).await.unwrap());
    assert!(store.workflow("acc", "wf").await.unwrap().is_some());
}

/// A succeeded action step's completion (seq 1, an `http_request` charge, a context naming the
/// run), for the completion tests to vary.
fn completion(run_id: &str, token: &str, next: Next, run_status: RunStatus) -> Completion {
    Completion {
        run_id: run_id.into(),
        account_id: "acc".into(),
        workflow_id: "wf".into(),
        token: token.into(),
        step: StepRow {
            run_id: run_id.into(),
            seq: 1,
            step_id: "a".into(),
            status: StepStatus::Succeeded,
            attempts: 1,
            input: Some("{\"to\":\"x\"}".into()),
            output: Some(format!("{{\"run\":\"{run_id}\"}}")),
            error: None,
            started_at: Some(T0),
            finished_at: Some(T0 + 5),
            due_at: None,
            rate_slot_at: None,
            rate_slot_key: None,
            deferred_handle: None,
        },
        next,
        run_status,
        context: Some(format!("{{\"steps\":{{\"a\":{{\"output\":\"{run_id}\"}}}}}}")),
        run_error: None,
        usage: vec![NewUsage {
            id: format!("{run_id}:1:http_request"),
            step_id: Some("a".into()),
            unit: "http_request".into(),
            quantity: 1,
            tokens_milli: 100,
            cost_micros: 1_000,
            day: "2027-01-15".into(),
        }],
        wait: None,
        clear_wait: false,
        side_effect: true,
        quota: None,
        outbox: None,
        spawn: None,
        parent: None,
        now: T0 + 5,
    }
}

async fn a_replayed_completion_bills_once(db: TestDb) {
    let store = db.store().await;
    seed(&store).await;
    store.record_event(&event("e", None), &[run("r")], &[], None).await.unwrap();
    let claims = store.claim("w", T0, T0 + 60_000, 1).await.unwrap();
    // Keeping the lease lets the same completion pass the fence twice.
    let next = Next::Continue { step_index: 0, step_seq: 2, attempt: 0, due_at: T0, keep_lease: Some(T0 + 60_000) };
    let mut completion = completion("r", "w", next, RunStatus::Running);
    completion.step.seq = claims[0].step_seq;
    completion.context = None;
    assert!(store.complete(&completion).await.unwrap());
    assert!(store.complete(&completion).await.unwrap());
    let rows = store.usage_after("acc", 0, 100).await.unwrap();
    let mut units: Vec<&str> = rows.iter().map(|u| u.unit.as_str()).collect();
    units.sort();
    assert_eq!(units, ["http_request", "workflow_run"], "the second write of the same charge is refused");
}

/// Group commit: a batch of completions of different runs, each fenced by its own lease. One
/// whose lease was lost writes nothing, one whose run was cancelled records the action's step
/// and usage but moves nothing on, a second completion of a run already in the batch (another
/// token) is refused, and the others commit everything: step rows, run rows, queue rows, waits,
/// usage.
async fn a_batch_of_completions_fences_each_run_alone(db: TestDb) {
    let store = db.store().await;
    seed(&store).await;
    let runs: Vec<NewRun> = ["r1", "r2", "r3", "r4"].into_iter().map(run).collect();
    store.record_event(&event("e", None), &runs, &[], None).await.unwrap();
    assert_eq!(store.claim("w", T0, T0 + 60_000, 10).await.unwrap().len(), 4);
    assert_eq!(store.cancel_run("acc", "r4", T0).await.unwrap(), Some(true));
    let next = Next::Continue { step_index: 1, step_seq: 2, attempt: 0, due_at: T0 + 1_000, keep_lease: None };
    let mut waits = completion("r1", "w", next.clone(), RunStatus::Waiting);
    waits.wait = Some(NewWait { event_type: "lead.replied".into() });
    let lost = completion("r2", "stale", next.clone(), RunStatus::Running);
    let ends = completion("r3", "w", Next::Finish, RunStatus::Succeeded);
    let cancelled = completion("r4", "w", next.clone(), RunStatus::Running);
    let twice = completion("r1", "other", Next::Finish, RunStatus::Failed);
    let done: Vec<bool> = store.complete_batch(&[&waits, &lost, &ends, &cancelled, &twice]).await.unwrap().into_iter().map(Result::unwrap).collect();
    assert_eq!(done, [true, false, true, false, false]);

    let detail = |id: &'static str| {
        let store = store.clone();
        async move { store.run_detail("acc", id).await.unwrap().unwrap() }
    };
    let units = |usage: &[switchboard_runtime::store::UsageRow]| {
        let mut units: Vec<String> = usage.iter().map(|u| u.unit.clone()).collect();
        units.sort();
        units
    };
    let (r1, steps, usage) = detail("r1").await;
    assert_eq!((r1.status, r1.step_index, r1.step_seq, r1.finished_at), (RunStatus::Waiting, 1, 2, None));
    assert_eq!(r1.context, "{\"steps\":{\"a\":{\"output\":\"r1\"}}}");
    assert_eq!(steps.len(), 1);
    assert_eq!((steps[0].status, steps[0].output.as_deref()), (StepStatus::Succeeded, Some("{\"run\":\"r1\"}")));
    assert_eq!(units(&usage), ["http_request", "workflow_run"]);
    let waiting = store.waiting_runs("acc", "lead.replied").await.unwrap();
    assert_eq!(waiting.iter().map(|(r, seq)| (r.id.as_str(), *seq)).collect::<Vec<_>>(), [("r1", 1)]);

    let (r2, steps, usage) = detail("r2").await;
    assert_eq!((r2.status, r2.context.as_str()), (RunStatus::Queued, "{}"), "a lost lease writes nothing");
    assert!(steps.is_empty());
    assert_eq!(units(&usage), ["workflow_run"]);

    let (r3, steps, usage) = detail("r3").await;
    assert_eq!((r3.status, r3.finished_at, r3.step_seq), (RunStatus::Succeeded, Some(T0 + 5), 1));
    assert_eq!(steps.len(), 1);
    assert_eq!(units(&usage), ["http_request", "workflow_run"]);

    let (r4, steps, usage) = detail("r4").await;
    assert_eq!(r4.status, RunStatus::Cancelled, "the cancel stands");
    assert_eq!(steps.iter().map(|s| s.status).collect::<Vec<_>>(), [StepStatus::Succeeded], "the action that ran is recorded");
    assert_eq!(units(&usage), ["http_request", "workflow_run"], "and billed");

    // r1 waits for its due time with no lease; r2 keeps its (stale-token) claim; r3 and r4 left.
    assert_eq!(store.queue_depth().await.unwrap(), 2);
    let due = store.claim("again", T0 + 1_000, T0 + 61_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|c| (c.run_id.as_str(), c.step_index, c.step_seq)).collect::<Vec<_>>(), [("r1", 1, 2)]);
}

async fn a_billing_reader_sees_every_row_once_while_8_writers_commit(db: TestDb) {
    let store = db.store().await;
    seed(&store).await;
    const PER_WRITER: usize = 40;
    let mut writers = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let id = format!("w{w}-r{i}");
                store.record_event(&event(&format!("e-{id}"), None), &[run(&id)], &[], None).await.unwrap();
            }
        }));
    }
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        let page = store.usage_after("acc", after, 7).await.unwrap();
        for row in &page {
            let seq = row.seq.expect("read rows are numbered");
            assert!(seq > after, "seq goes up: {seq} after {after}");
            after = seq;
            seen.push(row.run_id.clone());
        }
        if page.is_empty() && done {
            break;
        }
    }
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!((total, seen.len()), (8 * PER_WRITER, 8 * PER_WRITER), "every row exactly once");
}

/// The case a sequence assigned at insert gets wrong: a transaction that took an earlier number
/// commits after a later one was read. PostgreSQL only (SQLite has one writer at a time).
async fn a_row_that_commits_late_is_not_skipped(db: TestDb) {
    use sqlx::Connection;
    let store = db.store().await;
    seed(&store).await;
    let insert = "INSERT INTO usage_ledger (id, account_id, workflow_id, run_id, step_id, unit, quantity, tokens_milli, \
                  cost_micros, created_at, day) VALUES ($1, 'acc', 'wf', $1, NULL, 'http_request', 1, 100, 1000, $2, '2027-01-15')";
    let mut slow = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut fast = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut late = slow.begin().await.unwrap();
    sqlx::query(insert).bind("late").bind(T0).execute(&mut *late).await.unwrap();
    sqlx::query(insert).bind("early").bind(T0 + 1).execute(&mut fast).await.unwrap();
    let first = store.usage_after("acc", 0, 100).await.unwrap();
    assert_eq!(first.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), ["early"]);
    late.commit().await.unwrap();
    let next = store.usage_after("acc", first[0].seq.unwrap(), 100).await.unwrap();
    assert_eq!(next.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), ["late"], "the late row comes after, not lost");
}

on_postgres!(a_row_that_commits_late_is_not_skipped);

on_both_backends!(
    a_billing_reader_sees_every_row_once_while_8_writers_commit,
    a_replayed_completion_bills_once,
    a_claim_is_exclusive_until_its_lease_expires,
    concurrent_claims_never_share_a_row,
    a_repeated_dedupe_key_answers_the_first_answer,
    versions_are_kept_and_other_accounts_see_nothing,
);

/// Processes on PostgreSQL follow the database's clock: a process whose own clock is an hour
/// behind still tells the database's time (so it never claims a delay early or a lease late).
async fn processes_follow_the_database_clock(db: TestDb) {
    use std::sync::Arc;
    use switchboard_runtime::clock::{Clock, DatabaseClock, ManualClock};
    let store = db.store().await;
    let database = store.database_now().await.unwrap().expect("PostgreSQL has a clock");
    let behind = ManualClock::new(database - 3_600_000);
    let clock = DatabaseClock::follow(store.clone(), Arc::new(behind)).await.unwrap();
    assert!((clock.offset() - 3_600_000).abs() < 1_000, "offset {} ms", clock.offset());
    let now = store.database_now().await.unwrap().unwrap();
    assert!((clock.now() - now).abs() < 1_000, "the clock says {} but the database {now}", clock.now());
}

on_postgres!(processes_follow_the_database_clock);
on_both_backends!(a_batch_of_completions_fences_each_run_alone);
