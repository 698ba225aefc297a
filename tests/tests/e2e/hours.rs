//! Business-hour schedules (`/v1/schedules`): created, listed, read open or closed at an instant
//! with the next change (across a holiday, an override and both DST changes), replaced,
//! renamed, deleted; every problem of an invalid one named by its path; accounts kept apart;
//! and the store's `business_hours`, which IVR flows read.

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{TestApp, TestDb};

/// The office of the tests: weekdays 09:00-12:00 and 13:00-17:00, Saturday mornings, a
/// Sunday range in the small hours (where DST changes), Christmas off, a short Christmas Eve.
fn office() -> Value {
    let day = json!(["09:00-12:00", "13:00-17:00"]);
    json!({
        "name": "Main line",
        "timezone": "America/New_York",
        "weekly": { "mon": day, "tue": day, "wed": day, "thu": day, "fri": day, "sat": ["10:00-14:00"], "sun": ["01:30-03:00"] },
        "holidays": [{ "date": "2026-12-25", "name": "Christmas" }],
        "overrides": [{ "date": "2026-12-24", "hours": ["10:00-14:00"] }, { "date": "2026-12-26", "hours": [] }],
    })
}

async fn put_json(app: &TestApp, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
    app.call("PUT", path, Some(key), Some("application/json"), body.to_string()).await
}

async fn delete(app: &TestApp, path: &str, key: &str) -> (StatusCode, Value) {
    app.call("DELETE", path, Some(key), None, Body::empty()).await
}

/// `GET /v1/schedules/Main%20line?at=…`: `(open, next_change)`.
async fn state_at(app: &TestApp, key: &str, at: &str) -> (bool, Value) {
    let (status, body) = app.get(&format!("/v1/schedules/Main%20line?at={at}"), key).await;
    assert_eq!(status, StatusCode::OK, "{at}: {body}");
    (body["open"].as_bool().unwrap(), body["next_change"].clone())
}

async fn schedules_answer_open_and_next_change(db: TestDb) {
    let app = TestApp::new(db).await;
    let (account_id, key) = app.account("studio").await;

    let (status, created) = app.post_json("/v1/schedules", &key, &office()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "Main line");
    assert_eq!(created["timezone"], "America/New_York");
    assert_eq!(created["weekly"]["mon"], json!(["09:00-12:00", "13:00-17:00"]));
    assert_eq!(created["weekly"]["sun"], json!(["01:30-03:00"]));
    assert_eq!(created["holidays"], json!([{ "date": "2026-12-25", "name": "Christmas" }]));
    assert_eq!(created["overrides"][1], json!({ "date": "2026-12-26", "hours": [] }));
    let id = created["id"].as_str().unwrap().to_string();
    assert!(created["created_at"].as_str().unwrap().starts_with("2027-01-15T"), "the engine's clock: {created}");

    // Weekly hours (Monday 2026-03-02), in local time with an offset and in UTC.
    assert_eq!(state_at(&app, &key, "2026-03-02T08:00:00-05:00").await, (false, json!("2026-03-02T14:00:00.000Z")));
    assert_eq!(state_at(&app, &key, "2026-03-02T14:00:00Z").await, (true, json!("2026-03-02T17:00:00.000Z")));
    assert_eq!(state_at(&app, &key, "2026-03-02T17:30:00Z").await, (false, json!("2026-03-02T18:00:00.000Z")), "the lunch break");
    // An override: Christmas Eve (Thursday) 10:00-14:00 with no lunch break.
    assert_eq!(state_at(&app, &key, "2026-12-24T09:00:00-05:00").await, (false, json!("2026-12-24T15:00:00.000Z")));
    assert_eq!(state_at(&app, &key, "2026-12-24T12:30:00-05:00").await, (true, json!("2026-12-24T19:00:00.000Z")));
    // The holiday (Friday) and the closed Saturday: next open on Sunday's 01:30.
    assert_eq!(state_at(&app, &key, "2026-12-24T14:00:00-05:00").await, (false, json!("2026-12-27T06:30:00.000Z")));
    assert!(!state_at(&app, &key, "2026-12-25T10:00:00-05:00").await.0, "the holiday");
    // Spring forward (Sunday 2026-03-08, 02:00 EST → 03:00 EDT): 01:30-03:00 is open one half hour.
    assert_eq!(state_at(&app, &key, "2026-03-08T06:00:00Z").await, (false, json!("2026-03-08T06:30:00.000Z")));
    assert_eq!(state_at(&app, &key, "2026-03-08T06:30:00Z").await, (true, json!("2026-03-08T07:00:00.000Z")));
    // Fall back (Sunday 2026-11-01, 02:00 EDT → 01:00 EST): from the first 01:30 to 03:00 EST.
    assert_eq!(state_at(&app, &key, "2026-11-01T05:00:00Z").await, (false, json!("2026-11-01T05:30:00.000Z")));
    assert_eq!(state_at(&app, &key, "2026-11-01T06:45:00Z").await, (true, json!("2026-11-01T08:00:00.000Z")), "the second 01:45 is open");
    // A `+` offset, percent-encoded.
    assert_eq!(state_at(&app, &key, "2026-03-02T19:30:00%2B05:30").await.1, json!("2026-03-02T17:00:00.000Z"));

    // Without `at`: the engine's clock (2027-01-15T08:00Z is a Friday, 03:00 in New York).
    let (status, now) = app.get("/v1/schedules/Main%20line", &key).await;
    assert_eq!(status, StatusCode::OK, "{now}");
    assert_eq!((now["open"].as_bool(), now["next_change"].as_str()), (Some(false), Some("2027-01-15T14:00:00.000Z")), "{now}");
    assert_eq!(now["at"], "2027-01-15T08:00:00.000Z");
    assert_eq!((now["id"].as_str(), now["name"].as_str(), now["timezone"].as_str()), (Some(id.as_str()), Some("Main line"), Some("America/New_York")));
    assert_eq!(now["weekly"], created["weekly"]);
    assert_eq!(now["holidays"], created["holidays"]);
    assert_eq!(now["overrides"], created["overrides"]);
    app.clock.advance(6 * 3_600_000 + 30 * 60_000);
    let (_, later) = app.get("/v1/schedules/Main%20line", &key).await;
    assert_eq!((later["open"].as_bool(), later["next_change"].as_str()), (Some(true), Some("2027-01-15T17:00:00.000Z")), "{later}");

    // Never open: `next_change` is null.
    let closed = json!({ "name": "closed", "timezone": "Asia/Kathmandu" });
    assert_eq!(app.post_json("/v1/schedules", &key, &closed).await.0, StatusCode::CREATED);
    let (_, never) = app.get("/v1/schedules/closed?at=2026-03-02T00:00:00Z", &key).await;
    assert_eq!((never["open"].as_bool(), &never["next_change"]), (Some(false), &Value::Null), "{never}");
    assert_eq!(never["weekly"]["mon"], json!([]));

    // A 45-minute offset: 09:00 in Kathmandu (+05:45) is 03:15Z.
    let nepal = json!({ "name": "kathmandu_desk", "timezone": "Asia/Kathmandu", "weekly": { "mon": ["09:00-17:00"] } });
    assert_eq!(app.post_json("/v1/schedules", &key, &nepal).await.0, StatusCode::CREATED);
    let (_, desk) = app.get("/v1/schedules/kathmandu_desk?at=2026-03-02T00:00:00Z", &key).await;
    assert_eq!(desk["next_change"], "2026-03-02T03:15:00.000Z");

    // The list, a page at a time, oldest first.
    let (status, page) = app.get("/v1/schedules?limit=2", &key).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = page["schedules"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Main line", "closed"]);
    assert_eq!(page["schedules"][0], created);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = app.get(&format!("/v1/schedules?limit=2&cursor={cursor}"), &key).await;
    assert_eq!(rest["schedules"].as_array().unwrap().len(), 1);
    assert_eq!(rest["schedules"][0]["name"], "kathmandu_desk");
    assert_eq!(rest["next_cursor"], Value::Null);

    // What an IVR flow's `hours` node reads.
    let store = app.engine.store();
    let hours = store.business_hours(&account_id, "Main line").await.unwrap().expect("stored");
    let monday_10 = chrono::DateTime::parse_from_rfc3339("2026-03-02T10:00:00-05:00").unwrap().timestamp_millis();
    assert!(hours.is_open(monday_10));
    assert_eq!(hours.timezone.name(), "America/New_York");
    assert!(store.business_hours(&account_id, "main line").await.unwrap().is_none(), "names are exact");
    assert!(store.business_hours("someone-else", "Main line").await.unwrap().is_none());
}

async fn schedules_are_replaced_renamed_and_deleted(db: TestDb) {
    let app = TestApp::new(db).await;
    let (account_id, key) = app.account("studio").await;
    let (_, created) = app.post_json("/v1/schedules", &key, &office()).await;
    let other = json!({ "name": "Support", "timezone": "Europe/Berlin", "weekly": { "mon": ["08:00-16:00"] } });
    assert_eq!(app.post_json("/v1/schedules", &key, &other).await.0, StatusCode::CREATED);

    // Replace: the whole schedule (no name: it keeps its own).
    app.clock.advance(60_000);
    let summer = json!({ "timezone": "America/Chicago", "weekly": { "mon": ["08:00-16:00"] }, "holidays": [{ "date": "2026-07-03" }] });
    let (status, replaced) = put_json(&app, "/v1/schedules/Main%20line", &key, &summer).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!((&replaced["id"], &replaced["created_at"]), (&created["id"], &created["created_at"]));
    assert_eq!(replaced["name"], "Main line");
    assert_eq!(replaced["timezone"], "America/Chicago");
    assert_eq!(replaced["weekly"]["tue"], json!([]), "what the replacement leaves out is closed");
    assert_eq!(replaced["holidays"], json!([{ "date": "2026-07-03", "name": null }]));
    assert_eq!(replaced["overrides"], json!([]));
    let (_, read) = app.get("/v1/schedules/Main%20line?at=2026-03-02T13:00:00Z", &key).await;
    assert_eq!((read["open"].as_bool(), read["next_change"].as_str()), (Some(false), Some("2026-03-02T14:00:00.000Z")), "08:00 CST: {read}");

    // Rename through PUT; onto another schedule's name is a 409 and changes nothing.
    let mut renamed = summer.clone();
    renamed["name"] = json!("Support");
    let (status, body) = put_json(&app, "/v1/schedules/Main%20line", &key, &renamed).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("schedule_exists")), "{body}");
    assert_eq!(app.get("/v1/schedules/Support", &key).await.1["timezone"], "Europe/Berlin");
    renamed["name"] = json!("Front desk");
    let (status, body) = put_json(&app, "/v1/schedules/Main%20line", &key, &renamed).await;
    assert_eq!((status, body["name"].as_str()), (StatusCode::OK, Some("Front desk")), "{body}");
    assert_eq!(app.get("/v1/schedules/Main%20line", &key).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/v1/schedules/Front%20desk", &key).await.1["id"], created["id"]);
    let row = app.engine.store().business_hours_row(&account_id, "Front desk").await.unwrap().unwrap();
    assert_eq!(row.updated_at, app.now());
    assert!(row.updated_at > row.created_at);

    // An unknown name: 404 for PUT and DELETE.
    let (status, body) = put_json(&app, "/v1/schedules/nothing", &key, &summer).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{body}");

    // Delete: `{id, deleted: true}`, then it is gone and its name is free again.
    let (status, deleted) = delete(&app, "/v1/schedules/Front%20desk", &key).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted, json!({ "id": created["id"], "deleted": true }));
    assert_eq!(delete(&app, "/v1/schedules/Front%20desk", &key).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/v1/schedules/Front%20desk", &key).await.0, StatusCode::NOT_FOUND);
    let (_, list) = app.get("/v1/schedules", &key).await;
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);
    let (status, again) = put_json(&app, "/v1/schedules/Support", &key, &json!({ "name": "Front desk", "timezone": "UTC" })).await;
    assert_eq!((status, again["name"].as_str()), (StatusCode::OK, Some("Front desk")), "{again}");
}

async fn invalid_schedules_name_every_problem(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, key) = app.account("studio").await;

    let bad = json!({
        "name": "no/slashes",
        "timezone": "America/Atlantis",
        "weekly": { "mon": ["09:00-25:00"], "tue": ["17:00-09:00"], "wed": ["09:00-12:00", "11:30-13:00"], "funday": ["09:00-10:00"] },
        "holidays": [{ "date": "2026-13-01", "name": "Smarch" }],
        "overrides": [{ "date": "12/24/2026", "hours": ["10:00-14:00"] }, { "date": "2026-12-31", "hours": "10:00-14:00" }],
    });
    let (status, body) = app.post_json("/v1/schedules", &key, &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_schedule");
    let details = body["error"]["details"].as_array().unwrap();
    let at = |path: &str| -> String {
        details.iter().find(|d| d["path"] == path).map(|d| d["message"].as_str().unwrap().to_string()).unwrap_or_else(|| panic!("no problem at {path}: {body}"))
    };
    assert!(at("name").contains("letters, digits, _, - and spaces"));
    assert!(at("timezone").contains("'America/Atlantis' is not an IANA timezone"));
    assert_eq!(at("weekly.mon[0]"), "09:00-25:00 is not a range like 09:00-17:00");
    assert!(at("weekly.tue[0]").contains("ends before it starts"));
    assert_eq!(at("weekly.wed[1]"), "11:30-13:00 overlaps 09:00-12:00 (weekly.wed[0])");
    assert!(at("weekly.funday").contains("unknown weekday"));
    assert!(at("holidays[0].date").contains("not a date like 2026-12-25"));
    assert!(at("overrides[0].date").contains("not a date like 2026-12-25"));
    assert!(at("overrides[1].hours").contains("must be a list of ranges"));
    assert_eq!(details.len(), 9, "{body}");

    // Missing fields, a body that is not an object, a name too long.
    let (status, body) = app.post_json("/v1/schedules", &key, &json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let paths: Vec<&str> = body["error"]["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["name", "timezone"]);
    let (status, body) = app.post_json("/v1/schedules", &key, &json!(["09:00-17:00"])).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_schedule")));
    let (status, body) = app.post_json("/v1/schedules", &key, &json!({ "name": "x".repeat(101), "timezone": "UTC" })).await;
    assert_eq!((status, body["error"]["details"][0]["path"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("name")));
    assert_eq!(app.call("POST", "/v1/schedules", Some(&key), Some("application/json"), "{\"name\":").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(app.get("/v1/schedules", &key).await.1["schedules"], json!([]), "nothing is stored");

    // A name taken in the account: 409.
    assert_eq!(app.post_json("/v1/schedules", &key, &office()).await.0, StatusCode::CREATED);
    let (status, body) = app.post_json("/v1/schedules", &key, &office()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("schedule_exists")), "{body}");

    // A replacement is checked the same way and changes nothing.
    let (status, body) =
        put_json(&app, "/v1/schedules/Main%20line", &key, &json!({ "timezone": "UTC", "weekly": { "sun": ["00:00-24:00", "23:00-24:00"] } })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"][0]["path"], "weekly.sun[1]");
    assert_eq!(app.get("/v1/schedules/Main%20line", &key).await.1["timezone"], "America/New_York");

    // `at` that is not RFC 3339: 400.
    let (status, body) = app.get("/v1/schedules/Main%20line?at=next%20tuesday", &key).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
}

async fn another_accounts_schedule_is_not_found(db: TestDb) {
    let app = TestApp::new(db).await;
    let (_, mine) = app.account("mine").await;
    let (_, theirs) = app.account("theirs").await;
    assert_eq!(app.post_json("/v1/schedules", &mine, &office()).await.0, StatusCode::CREATED);

    for (status, body) in [
        app.get("/v1/schedules/Main%20line", &theirs).await,
        put_json(&app, "/v1/schedules/Main%20line", &theirs, &json!({ "timezone": "UTC" })).await,
        delete(&app, "/v1/schedules/Main%20line", &theirs).await,
    ] {
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{body}");
    }
    assert_eq!(app.get("/v1/schedules", &theirs).await.1["schedules"], json!([]));
    // Names are unique per account: the other account may use the same one.
    assert_eq!(app.post_json("/v1/schedules", &theirs, &office()).await.0, StatusCode::CREATED);
    assert_eq!(app.get("/v1/schedules/Main%20line", &mine).await.1["timezone"], "America/New_York");
    assert_eq!(app.get("/v1/schedules", &mine).await.1["schedules"].as_array().unwrap().len(), 1);
    let (status, _) = app.call("GET", "/v1/schedules", None, None, Body::empty()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

on_both_backends!(
    schedules_answer_open_and_next_change,
    schedules_are_replaced_renamed_and_deleted,
    invalid_schedules_name_every_problem,
    another_accounts_schedule_is_not_found,
);
