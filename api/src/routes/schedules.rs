//! Schedules: an account's business hours, by name (opening hours per weekday, holidays, dated
//! overrides, in an IANA timezone), which IVR flows' `hours` node reads. Reading one answers
//! whether it is open at an instant and when that next changes. The rules (DST included) are
//! `switchboard_runtime::hours`'s; `docs/workflows.md` ("Business hours") describes them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::definition::Problem;
use switchboard_runtime::engine::new_id;
use switchboard_runtime::hours::{BusinessHours, TimeRange};
use switchboard_runtime::store::{BusinessHoursRow, HoursReplaced};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{JsonBody, PageQuery, Query};
use crate::app::AppState;
use crate::auth::AccountAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self as doc, built_once};

/// `/v1/schedules…`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(read, replace, remove))
}

/// `/v1/schedules…`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

/// The last instant RFC 3339 writes with a four-digit year; a `next_change` after it is `null`.
const LAST_RFC3339_MS: i64 = 253_402_300_799_999;

// ---- Requests (schemas only: bodies are read by `BusinessHours::parse`) ------------------------

/// A schedule of business hours, as `POST /v1/schedules` takes it. Times are local to
/// `timezone`; every problem is answered at once as a 422 `invalid_schedule` with its path.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "name": "Main line",
    "timezone": "America/New_York",
    "weekly": { "mon": ["09:00-12:00", "13:00-17:00"], "tue": ["09:00-17:00"], "sat": ["10:00-14:00"] },
    "holidays": [{ "date": "2026-12-25", "name": "Christmas" }],
    "overrides": [{ "date": "2026-12-24", "hours": ["10:00-14:00"] }],
}))]
#[allow(dead_code, reason = "a schema only: schedules are read by `hours::BusinessHours::parse`")]
struct NewSchedule {
    /// Unique in the account: 1 to 100 letters, digits, `_`, `-` and spaces.
    #[schema(min_length = 1, max_length = 100, example = "Main line")]
    name: String,
    /// An IANA timezone, e.g. `America/New_York`.
    #[schema(example = "America/New_York")]
    timezone: String,
    /// Opening hours per weekday; a weekday left out is closed.
    weekly: Option<NewWeekly>,
    /// Dates closed all day (they win over an override of the same date).
    holidays: Option<Vec<Holiday>>,
    /// Dates with other hours than their weekday's (`[]` closes the day).
    overrides: Option<Vec<Override>>,
}

/// A schedule's replacement (`PUT /v1/schedules/{name}`): a whole schedule, as created.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "timezone": "America/Chicago", "weekly": { "mon": ["08:00-16:00"], "sun": ["00:00-24:00"] }, "holidays": [{ "date": "2026-07-03" }] }))]
#[allow(dead_code, reason = "a schema only: schedules are read by `hours::BusinessHours::parse`")]
struct ScheduleReplacement {
    /// A new name renames the schedule (409 `schedule_exists` if the account has one of that
    /// name); left out, the name stays.
    #[schema(min_length = 1, max_length = 100)]
    name: Option<String>,
    /// An IANA timezone, e.g. `America/New_York`.
    timezone: String,
    /// Opening hours per weekday; a weekday left out is closed.
    weekly: Option<NewWeekly>,
    /// Dates closed all day (they win over an override of the same date).
    holidays: Option<Vec<Holiday>>,
    /// Dates with other hours than their weekday's (`[]` closes the day).
    overrides: Option<Vec<Override>>,
}

/// Opening hours per weekday: each a list of local ranges `HH:MM-HH:MM` (start included, end
/// excluded, within one day; `24:00` ends at midnight, `00:00-24:00` is the whole day), not
/// overlapping, at most 48. A weekday left out is closed.
#[derive(Serialize, ToSchema)]
#[allow(dead_code, reason = "a schema only: schedules are read by `hours::BusinessHours::parse`")]
struct NewWeekly {
    /// Monday, e.g. `["09:00-12:00", "13:00-17:00"]`.
    mon: Option<Vec<String>>,
    /// Tuesday.
    tue: Option<Vec<String>>,
    /// Wednesday.
    wed: Option<Vec<String>>,
    /// Thursday.
    thu: Option<Vec<String>>,
    /// Friday.
    fri: Option<Vec<String>>,
    /// Saturday.
    sat: Option<Vec<String>>,
    /// Sunday.
    sun: Option<Vec<String>>,
}

// ---- Answers ----------------------------------------------------------------------------------

/// Opening hours per weekday, every weekday present (`[]`: closed), ranges in time order.
#[derive(Debug, Serialize, ToSchema)]
pub struct Weekly {
    /// Monday, e.g. `["09:00-12:00", "13:00-17:00"]`.
    pub mon: Vec<String>,
    /// Tuesday.
    pub tue: Vec<String>,
    /// Wednesday.
    pub wed: Vec<String>,
    /// Thursday.
    pub thu: Vec<String>,
    /// Friday.
    pub fri: Vec<String>,
    /// Saturday.
    pub sat: Vec<String>,
    /// Sunday.
    pub sun: Vec<String>,
}

/// A date closed all day.
#[derive(Debug, Serialize, ToSchema)]
pub struct Holiday {
    /// The local date, `YYYY-MM-DD`.
    #[schema(format = Date, example = "2026-12-25")]
    pub date: String,
    /// What it is, e.g. `Christmas` (`null` when not given).
    pub name: Option<String>,
}

/// A date with other hours than its weekday's.
#[derive(Debug, Serialize, ToSchema)]
pub struct Override {
    /// The local date, `YYYY-MM-DD`.
    #[schema(format = Date, example = "2026-12-24")]
    pub date: String,
    /// That day's ranges instead of its weekday's, e.g. `["10:00-14:00"]`; `[]` closes the day.
    pub hours: Vec<String>,
}

/// A schedule of business hours.
#[derive(Debug, Serialize, ToSchema)]
pub struct Schedule {
    /// Its id.
    pub id: String,
    /// Its name in the account (flows name it).
    pub name: String,
    /// The IANA timezone its times are local to.
    pub timezone: String,
    /// Opening hours per weekday.
    pub weekly: Weekly,
    /// Dates closed all day, by date.
    pub holidays: Vec<Holiday>,
    /// Dates with their own hours, by date.
    pub overrides: Vec<Override>,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A schedule, and whether it is open at an instant.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleStatus {
    /// Its name in the account.
    pub name: String,
    /// The IANA timezone its times are local to.
    pub timezone: String,
    /// Whether it is open at `at`.
    pub open: bool,
    /// The next instant after `at` where `open` flips (RFC 3339), looking at most 400 days
    /// ahead; `null` when it does not change in that time (e.g. always closed).
    #[schema(format = DateTime, required = true)]
    pub next_change: Option<String>,
    /// The instant asked about (RFC 3339): `?at=`, or now.
    #[schema(format = DateTime)]
    pub at: String,
    /// Its id.
    pub id: String,
    /// Opening hours per weekday.
    pub weekly: Weekly,
    /// Dates closed all day, by date.
    pub holidays: Vec<Holiday>,
    /// Dates with their own hours, by date.
    pub overrides: Vec<Override>,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A page of schedules.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    /// The schedules, oldest first.
    pub schedules: Vec<Schedule>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

fn ranges(ranges: &[TimeRange]) -> Vec<String> {
    ranges.iter().map(ToString::to_string).collect()
}

impl Schedule {
    /// A stored schedule's answer.
    fn new(row: &BusinessHoursRow, hours: &BusinessHours) -> Self {
        let [mon, tue, wed, thu, fri, sat, sun] = hours.weekly.each_ref().map(|day| ranges(day));
        Schedule {
            id: row.id.clone(),
            name: row.name.clone(),
            timezone: hours.timezone.name().to_string(),
            weekly: Weekly { mon, tue, wed, thu, fri, sat, sun },
            holidays: hours.holidays.iter().map(|(date, name)| Holiday { date: date.to_string(), name: name.clone() }).collect(),
            overrides: hours.overrides.iter().map(|(date, hours)| Override { date: date.to_string(), hours: ranges(hours) }).collect(),
            created_at: to_rfc3339(row.created_at),
        }
    }

    /// A stored row's answer; a definition that no longer parses is an internal error.
    fn from_row(row: &BusinessHoursRow) -> ApiResult<Self> {
        Ok(Self::new(row, &row.business_hours()?))
    }
}

fn problem(path: &str, message: impl Into<String>) -> Problem {
    Problem { path: path.to_string(), message: message.into() }
}

/// Whether a schedule's name is 1 to 100 letters, digits, `_`, `-` and spaces.
fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.chars().count()) && name.chars().all(|c| c.is_alphabetic() || c.is_ascii_digit() || matches!(c, '_' | '-' | ' '))
}

/// Reads a schedule's body: its name (`current` when a replacement leaves it out) and the
/// schedule, or a 422 `invalid_schedule` naming every problem.
fn read_schedule(mut body: Value, current: Option<&str>) -> ApiResult<(String, BusinessHours)> {
    let mut problems = Vec::new();
    let name = match body.as_object_mut().map(|fields| fields.remove("name")) {
        Some(Some(Value::String(name))) if valid_name(&name) => Some(name),
        Some(None | Some(Value::Null)) if current.is_some() => current.map(str::to_string),
        Some(None | Some(Value::Null)) => {
            problems.push(problem("name", "required: 1 to 100 letters, digits, _, - and spaces"));
            None
        }
        Some(Some(_)) => {
            problems.push(problem("name", "must be 1 to 100 letters, digits, _, - and spaces"));
            None
        }
        // Not an object: the schedule's own problem says so.
        None => None,
    };
    let hours = match BusinessHours::parse(&body) {
        Ok(hours) => Some(hours),
        Err(found) => {
            problems.extend(found.into_iter().map(|(path, message)| Problem { path, message }));
            None
        }
    };
    match (name, hours) {
        (Some(name), Some(hours)) if problems.is_empty() => Ok((name, hours)),
        _ => Err(ApiError::invalid("invalid_schedule", "the schedule is invalid", problems)),
    }
}

fn exists(name: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "schedule_exists", format!("this account already has a schedule named '{name}'"))
}

/// Creates a schedule of business hours
#[utoipa::path(
    post,
    path = "/v1/schedules",
    tag = "schedules",
    operation_id = "create_schedule",
    security(("account_key" = [])),
    request_body = NewSchedule,
    responses(
        (status = 201, description = "The schedule", body = Schedule),
        (status = 409, description = "`schedule_exists`: the account has a schedule of that name", body = doc::ErrorBody),
        (status = 422, description = "`invalid_schedule`, naming every problem with its path (e.g. `weekly.mon[0]`)", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn create(State(state): State<AppState>, AccountAuth(account): AccountAuth, JsonBody(body): JsonBody<Value>) -> ApiResult<(StatusCode, Json<Schedule>)> {
    let (name, hours) = read_schedule(body, None)?;
    let now = state.engine.clock().now();
    let row =
        BusinessHoursRow { id: new_id(), account_id: account.id.clone(), name, definition: hours.to_json().to_string(), created_at: now, updated_at: now };
    if !state.engine.store().create_business_hours(&row).await? {
        return Err(exists(&row.name));
    }
    Ok((StatusCode::CREATED, Json(Schedule::new(&row, &hours))))
}

/// The account's schedules of business hours
#[utoipa::path(
    get,
    path = "/v1/schedules",
    tag = "schedules",
    operation_id = "list_schedules",
    security(("account_key" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of schedules", body = ScheduleList),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn list(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<PageQuery>) -> ApiResult<Json<ScheduleList>> {
    let page = state.engine.store().list_business_hours(&account.id, q.cursor.as_deref(), q.limit()).await?;
    let schedules = page.items.iter().map(Schedule::from_row).collect::<ApiResult<_>>()?;
    Ok(Json(ScheduleList { schedules, next_cursor: page.next_cursor }))
}

/// `?at=`.
#[derive(Debug, Deserialize)]
struct AtQuery {
    at: Option<String>,
}

/// An RFC 3339 time in ms. A `+` of an offset that was not percent-encoded arrives as a space
/// (`2026-03-08T09:00:00 05:30`), and is read as the `+` it was.
fn parse_at(text: &str) -> ApiResult<i64> {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok().map(|t| t.timestamp_millis());
    let unplussed = text.rfind(' ').filter(|i| text.len() - i == 6).map(|i| format!("{}+{}", &text[..i], &text[i + 1..]));
    parse(text).or_else(|| unplussed.as_deref().and_then(parse)).ok_or_else(|| {
        ApiError::bad_request(format!("at must be an RFC 3339 time like 2026-03-08T09:00:00-05:00 (a + in an offset written %2B), not '{text}'"))
    })
}

/// One schedule, and whether it is open
///
/// Whether the schedule is open at `at` (default: now) and when that next changes.
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}",
    tag = "schedules",
    operation_id = "read_schedule",
    security(("account_key" = [])),
    params(
        ("name" = String, Path, description = "The schedule's name", example = "Main line"),
        ("at" = Option<String>, Query, format = DateTime, description = "The instant asked about, RFC 3339 (a `+` in its offset written `%2B`); default now"),
    ),
    responses(
        (status = 200, description = "The schedule, open or not at `at`, and its next change", body = ScheduleStatus),
        (status = 400, description = "`bad_request`: `at` is not an RFC 3339 time", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such schedule in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn read(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    Path(name): Path<String>,
    Query(q): Query<AtQuery>,
) -> ApiResult<Json<ScheduleStatus>> {
    let at = match q.at.as_deref() {
        Some(text) => parse_at(text)?,
        None => state.engine.clock().now(),
    };
    let row = state.engine.store().business_hours_row(&account.id, &name).await?.ok_or_else(|| ApiError::not_found("schedule"))?;
    let hours = row.business_hours()?;
    let schedule = Schedule::new(&row, &hours);
    Ok(Json(ScheduleStatus {
        name: schedule.name,
        timezone: schedule.timezone,
        open: hours.is_open(at),
        next_change: hours.next_change(at).filter(|t| *t <= LAST_RFC3339_MS).map(to_rfc3339),
        at: to_rfc3339(at),
        id: schedule.id,
        weekly: schedule.weekly,
        holidays: schedule.holidays,
        overrides: schedule.overrides,
        created_at: schedule.created_at,
    }))
}

/// Replaces a schedule
///
/// The body is a whole schedule, as created; a different `name` renames it.
#[utoipa::path(
    put,
    path = "/v1/schedules/{name}",
    tag = "schedules",
    operation_id = "replace_schedule",
    security(("account_key" = [])),
    params(("name" = String, Path, description = "The schedule's name", example = "Main line")),
    request_body = ScheduleReplacement,
    responses(
        (status = 200, description = "The schedule, replaced", body = Schedule),
        (status = 404, description = "`not_found`: no such schedule in this account", body = doc::ErrorBody),
        (status = 409, description = "`schedule_exists`: the new name is another schedule's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_schedule`, naming every problem with its path (e.g. `weekly.mon[0]`)", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn replace(
    State(state): State<AppState>,
    AccountAuth(account): AccountAuth,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Schedule>> {
    let (new_name, hours) = read_schedule(body, Some(&name))?;
    let now = state.engine.clock().now();
    match state.engine.store().replace_business_hours(&account.id, &name, &new_name, &hours.to_json().to_string(), now).await? {
        HoursReplaced::Replaced(row) => Ok(Json(Schedule::new(&row, &hours))),
        HoursReplaced::NotFound => Err(ApiError::not_found("schedule")),
        HoursReplaced::NameTaken => Err(exists(&new_name)),
    }
}

/// Deletes a schedule
#[utoipa::path(
    delete,
    path = "/v1/schedules/{name}",
    tag = "schedules",
    operation_id = "delete_schedule",
    security(("account_key" = [])),
    params(("name" = String, Path, description = "The schedule's name", example = "Main line")),
    responses(
        (status = 200, description = "Deleted", body = super::Deleted),
        (status = 404, description = "`not_found`: no such schedule in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn remove(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(name): Path<String>) -> ApiResult<Json<super::Deleted>> {
    match state.engine.store().delete_business_hours(&account.id, &name).await? {
        Some(id) => Ok(Json(super::Deleted { id, deleted: true })),
        None => Err(ApiError::not_found("schedule")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_instants_read_as_documented() {
        for good in ["Main line", "after_hours-2", "Café", &"x".repeat(100)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "a/b", "tab\there", "dot.ted", &"x".repeat(101)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(parse_at("2026-03-08T09:00:00-05:00").unwrap(), parse_at("2026-03-08T14:00:00Z").unwrap());
        assert_eq!(parse_at("2026-03-08T19:30:00 05:30").unwrap(), parse_at("2026-03-08T14:00:00Z").unwrap(), "a + lost to form decoding");
        assert_eq!(parse_at("tomorrow").unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}
