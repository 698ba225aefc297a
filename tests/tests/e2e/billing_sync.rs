//! The Stripe Billing meter-event sync against a local fake of Stripe (wiremock): the exact
//! request, one event per ledger row, a cursor that survives passes, resumption after a failure,
//! accounts without a customer, and Stripe's "identifier already exists" replay.

use serde_json::json;
use sqlx::Connection;
use std::sync::Arc;
use std::time::Duration;

use switchboard_api::billing_sync::{CURSOR, SyncConfig, SyncReport, run, sync_once};
use switchboard_integrations::HttpConfig;
use switchboard_integrations::stripe::{StripeClient, StripeConfig};
use switchboard_runtime::action::FailureClass;
use switchboard_runtime::clock::ManualClock;
use switchboard_runtime::store::{Account, Store};
use wiremock::matchers::{header, method, path};
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

use crate::on_both_backends;
use crate::support::TestDb;

const T0: i64 = 1_800_000_000_000;
const KEY: &str = "sk_test_switchboard";
const CUSTOMER: &str = "cus_Ada123";

/// A client of the fake Stripe at `server` (loopback, so private addresses are allowed).
fn stripe(server: &MockServer) -> StripeClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = switchboard_integrations::client(&HttpConfig { allow_private: true, ..HttpConfig::default() }).unwrap();
    StripeClient::new(http, StripeConfig { api_base: server.uri(), ..StripeConfig::new(KEY) })
}

/// Accounts `acc` (with a Stripe customer) and `other` (without).
async fn seed(store: &Store) {
    for id in ["acc", "other"] {
        let account = Account { id: id.into(), name: id.into(), plan: "starter".into(), timezone: "UTC".into(), created_at: T0, contact_rules: None };
        store.create_account(&account, &format!("key-{id}"), &format!("hash-{id}")).await.unwrap();
    }
    assert!(store.set_stripe_customer("acc", Some(CUSTOMER)).await.unwrap());
    assert!(!store.set_stripe_customer("nobody", Some(CUSTOMER)).await.unwrap());
    assert_eq!(store.stripe_customer("acc").await.unwrap().as_deref(), Some(CUSTOMER));
    assert_eq!(store.stripe_customer("other").await.unwrap(), None);
}

/// Commits one ledger row (`seq` NULL, as the engine writes them), charged at `at` (ms). The
/// store's writers (`record_event`, `complete`) insert with this same statement shape.
async fn charge(db: &TestDb, id: &str, account: &str, tokens_milli: i64, at: i64) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO usage_ledger (id, account_id, workflow_id, run_id, step_id, unit, quantity, tokens_milli, \
         cost_micros, created_at, day) VALUES ($1, $2, 'wf', $1, NULL, 'workflow_run', 1, $3, 5000, $4, '2027-01-15')",
    )
    .bind(id)
    .bind(account)
    .bind(tokens_milli)
    .bind(at)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
}

/// Matches a form-encoded body whose `identifier` is the given one.
struct Identifier(&'static str);

impl Match for Identifier {
    fn matches(&self, request: &Request) -> bool {
        form(request).iter().any(|(k, v)| k == "identifier" && v == self.0)
    }
}

fn form(request: &Request) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(&request.body).unwrap_or_default()
}

/// A mock of `POST /v1/billing/meter_events` that only answers a correctly authenticated,
/// form-encoded request.
fn meter_events() -> wiremock::MockBuilder {
    Mock::given(method("POST"))
        .and(path("/v1/billing/meter_events"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(header("content-type", "application/x-www-form-urlencoded"))
}

/// What Stripe answers to a created meter event.
fn created() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "object": "billing.meter_event", "livemode": false }))
}

/// The identifiers of the meter events Stripe received, in order.
async fn received(server: &MockServer) -> Vec<String> {
    let requests = server.received_requests().await.unwrap();
    requests.iter().map(|r| form(r).into_iter().find(|(k, _)| k == "identifier").map(|(_, v)| v).unwrap_or_default()).collect()
}

fn cfg() -> SyncConfig {
    SyncConfig { page_size: 2, ..SyncConfig::default() }
}

async fn new_rows_are_sent_once_in_stripes_format(db: TestDb) {
    let store = db.store().await;
    seed(&store).await;
    let server = MockServer::start().await;
    meter_events().respond_with(created()).mount(&server).await;
    let stripe = stripe(&server);
    // Three rows: more than a page (2), so the pass goes on to the next page.
    charge(&db, "r1:run", "acc", 500, T0 + 1_999).await;
    charge(&db, "r2:run", "acc", 100, T0 + 2_000).await;
    charge(&db, "r3:run", "acc", 10_000, T0 + 3_000).await;

    let report = sync_once(&store, &stripe, &cfg(), T0 + 10_000).await.unwrap();
    assert_eq!(report, SyncReport { sent: 3, after_seq: 3, ..SyncReport::default() });
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 3);
    let expected = [("r1:run", "500", T0 / 1000 + 1), ("r2:run", "100", T0 / 1000 + 2), ("r3:run", "10000", T0 / 1000 + 3)];
    for (request, (id, value, ts)) in requests.iter().zip(expected) {
        let fields: Vec<(String, String)> = form(request);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            fields,
            [
                ("event_name", "switchboard_tokens_milli"),
                ("payload[stripe_customer_id]", CUSTOMER),
                ("payload[value]", value),
                ("identifier", id),
                ("timestamp", ts.to_string().as_str()),
            ]
        );
    }
    assert_eq!(store.sync_cursor(CURSOR).await.unwrap(), 3);

    // Nothing new: a second pass sends nothing.
    let again = sync_once(&store, &stripe, &cfg(), T0 + 20_000).await.unwrap();
    assert_eq!(again, SyncReport { after_seq: 3, ..SyncReport::default() });
    assert_eq!(server.received_requests().await.unwrap().len(), 3);

    // A later row: only it is sent, also by a new client (the cursor lives in the store).
    charge(&db, "r4:run", "acc", 500, T0 + 30_000).await;
    let later = sync_once(&store, &self::stripe(&server), &cfg(), T0 + 40_000).await.unwrap();
    assert_eq!(later, SyncReport { sent: 1, after_seq: 4, ..SyncReport::default() });
    assert_eq!(received(&server).await, ["r1:run", "r2:run", "r3:run", "r4:run"]);
}

async fn a_server_error_stops_the_pass_and_the_next_pass_resumes_there(db: TestDb) {
    let store = db.store().await;
    seed(&store).await;
    let server = MockServer::start().await;
    meter_events()
        .and(Identifier("r2:run"))
        .respond_with(ResponseTemplate::new(500).insert_header("retry-after", "7"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    meter_events().respond_with(created()).mount(&server).await;
    let stripe = stripe(&server);
    for (i, id) in ["r1:run", "r2:run", "r3:run"].into_iter().enumerate() {
        charge(&db, id, "acc", 500, T0 + i as i64).await;
    }

    let first = sync_once(&store, &stripe, &cfg(), T0 + 10_000).await.unwrap();
    assert_eq!((first.sent, first.after_seq), (1, 1));
    let failure = first.failure.expect("the pass stops at the 500");
    assert_eq!((failure.seq, failure.row_id.as_str()), (2, "r2:run"));
    assert_eq!((failure.error.class, failure.error.code.as_str()), (FailureClass::Retryable, "http_500"));
    assert_eq!(failure.error.retry_after_ms, Some(7_000));
    assert_eq!(store.sync_cursor(CURSOR).await.unwrap(), 1, "the cursor stays after the last success");
    assert_eq!(received(&server).await, ["r1:run", "r2:run"], "nothing after the failed row was sent");

    let second = sync_once(&store, &stripe, &cfg(), T0 + 20_000).await.unwrap();
    assert_eq!(second, SyncReport { sent: 2, after_seq: 3, ..SyncReport::default() });
    assert_eq!(received(&server).await, ["r1:run", "r2:run", "r2:run", "r3:run"]);
    assert_eq!(store.sync_cursor(CURSOR).await.unwrap(), 3);
}

async fn rows_of_accounts_without_a_customer_are_skipped(db: TestDb) {
    let store = db.store().await;
    seed(&store).await;
    let server = MockServer::start().await;
    meter_events().respond_with(created()).mount(&server).await;
    let stripe = stripe(&server);
    charge(&db, "a1", "acc", 500, T0 + 1).await;
    charge(&db, "o1", "other", 500, T0 + 2).await;
    charge(&db, "a2", "acc", 100, T0 + 3).await;
    charge(&db, "o2", "other", 500, T0 + 4).await;
    charge(&db, "o3", "other", 500, T0 + 5).await;

    let report = sync_once(&store, &stripe, &cfg(), T0 + 10_000).await.unwrap();
    assert_eq!(report, SyncReport { sent: 2, skipped: 3, after_seq: 5, ..SyncReport::default() });
    assert_eq!(received(&server).await, ["a1", "a2"]);
    assert_eq!(store.sync_cursor(CURSOR).await.unwrap(), 5, "the cursor moves past trailing skipped rows too");

    // A customer set later applies to rows synced from then on.
    store.set_stripe_customer("other", Some("cus_Other")).await.unwrap();
    charge(&db, "o4", "other", 500, T0 + 20_000).await;
    let later = sync_once(&store, &stripe, &cfg(), T0 + 30_000).await.unwrap();
    assert_eq!(later, SyncReport { sent: 1, after_seq: 6, ..SyncReport::default() });
    let last = server.received_requests().await.unwrap().pop().unwrap();
    assert!(form(&last).contains(&("payload[stripe_customer_id]".into(), "cus_Other".into())));
}

async fn an_identifier_stripe_already_has_counts_as_delivered(db: TestDb) {
    let store = db.store().await;
    seed(&store).await;
    let server = MockServer::start().await;
    // Stripe's answer to a repeated identifier (observed: 400 invalid_request_error).
    meter_events()
        .and(Identifier("r1:run"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": {
                "message": "An event already exists with identifier r1:run.",
                "type": "invalid_request_error",
            }
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    // Any other 400 is a permanent failure: the sync stops at that row and does not skip it.
    meter_events()
        .and(Identifier("r3:run"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": {
                "message": "No such customer: 'cus_Ada123'",
                "param": "payload[stripe_customer_id]",
                "type": "invalid_request_error",
            }
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    meter_events().respond_with(created()).mount(&server).await;
    let stripe = stripe(&server);
    for (i, id) in ["r1:run", "r2:run", "r3:run", "r4:run"].into_iter().enumerate() {
        charge(&db, id, "acc", 500, T0 + i as i64).await;
    }

    let report = sync_once(&store, &stripe, &cfg(), T0 + 10_000).await.unwrap();
    assert_eq!((report.sent, report.replayed, report.after_seq), (1, 1, 2));
    let failure = report.failure.expect("the refused row stops the pass");
    assert_eq!((failure.row_id.as_str(), failure.error.class), ("r3:run", FailureClass::Permanent));
    assert_eq!(failure.error.code, "http_400");
    assert!(failure.error.message.contains("No such customer"), "{}", failure.error.message);
    assert_eq!(store.sync_cursor(CURSOR).await.unwrap(), 2);

    // Still refused next time: the row is retried, never dropped.
    let again = sync_once(&store, &stripe, &cfg(), T0 + 20_000).await.unwrap();
    assert_eq!((again.sent, again.after_seq), (0, 2));
    assert_eq!(again.failure.map(|f| f.row_id), Some("r3:run".to_owned()));
    assert_eq!(received(&server).await, ["r1:run", "r2:run", "r3:run", "r3:run"]);
}

async fn the_cursor_never_moves_back(db: TestDb) {
    let store = db.store().await;
    assert_eq!(store.sync_cursor("job").await.unwrap(), 0);
    store.set_sync_cursor("job", 5, T0).await.unwrap();
    store.set_sync_cursor("job", 3, T0 + 1).await.unwrap();
    assert_eq!(store.sync_cursor("job").await.unwrap(), 5, "an overlapping pass that is behind cannot rewind it");
    store.set_sync_cursor("job", 9, T0 + 2).await.unwrap();
    assert_eq!(store.sync_cursor("job").await.unwrap(), 9);
    assert_eq!(store.sync_cursor("another").await.unwrap(), 0);
}

async fn run_repeats_passes_until_shutdown(db: TestDb) {
    let store = db.store().await;
    seed(&store).await;
    let server = MockServer::start().await;
    meter_events().respond_with(created()).mount(&server).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cfg = SyncConfig { interval: Duration::from_millis(10), ..SyncConfig::default() };
    let job = tokio::spawn(run(store.clone(), stripe(&server), cfg, Arc::new(ManualClock::new(T0)), async {
        let _ = stopped.await;
    }));
    // Rows committed while the job runs are picked up by a later pass.
    charge(&db, "r1:run", "acc", 500, T0).await;
    charge(&db, "r2:run", "acc", 500, T0 + 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.sync_cursor(CURSOR).await.unwrap() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the job did not sync both rows");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), job).await.expect("the job stops on shutdown").unwrap();
    assert_eq!(received(&server).await, ["r1:run", "r2:run"]);
}

on_both_backends!(
    run_repeats_passes_until_shutdown,
    new_rows_are_sent_once_in_stripes_format,
    a_server_error_stops_the_pass_and_the_next_pass_resumes_there,
    rows_of_accounts_without_a_customer_are_skipped,
    an_identifier_stripe_already_has_counts_as_delivered,
    the_cursor_never_moves_back,
);
