//! The usage ledger, read: aggregates, raw pages for billing jobs, CSV export, and every
//! account's usage for the admin. Days are local dates in the account's timezone; `from` is
//! inclusive and `to` exclusive (`YYYY-MM-DD`).

use axum::body::Body as ResponseBody;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::store::{self, DayRange, UsageGroup, UsageRow};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Query;
use crate::app::AppState;
use crate::auth::{AccountAuth, AdminAuth};
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self as doc, built_once};

/// Rows a CSV export reads per query.
const EXPORT_PAGE: i64 = 5_000;

/// `/v1/usage…`, `/v1/admin/usage`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(totals)).routes(routes!(events)).routes(routes!(export)).routes(routes!(admin))
}

/// `/v1/usage…`, `/v1/admin/usage`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

/// `?from=&to=` (and `group_by=` for totals). Documented as tuples on each operation, since only
/// totals reads `group_by`.
#[derive(Deserialize)]
struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
}

fn day_range(from: Option<String>, to: Option<String>) -> ApiResult<DayRange> {
    let check = |name: &str, v: &Option<String>| -> ApiResult<()> {
        match v {
            Some(d) if chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err() => {
                Err(ApiError::bad_request(format!("{name} must be a date like 2026-11-01, not '{d}'")))
            }
            _ => Ok(()),
        }
    };
    check("from", &from)?;
    check("to", &to)?;
    Ok(DayRange { from, to })
}

/// The account's usage, aggregated
///
/// Over all time unless `from`/`to` (local dates in the account's timezone) narrow it. Units
/// are never added together: `group_by=unit` gives a row per unit (`key`); `group_by=day` a row
/// per day and unit (`key` and `day` are the day, `unit` the unit), ordered by day then unit;
/// `group_by=workflow` a row per workflow (`key` is its id, `name` its name), whose `quantity`
/// counts every unit together: compare workflows by `tokens_milli` and `cost_micros`.
#[utoipa::path(
    get,
    path = "/v1/usage",
    tag = "usage",
    operation_id = "usage_totals",
    security(("account_key" = [])),
    params(
        ("from" = Option<String>, Query, format = Date, description = "First local day (`YYYY-MM-DD`), inclusive"),
        ("to" = Option<String>, Query, format = Date, description = "Local day (`YYYY-MM-DD`) to stop before, exclusive"),
        ("group_by" = Option<String>, Query, description = "`unit` (default), `day` (a row per day and unit) or `workflow`"),
    ),
    responses(
        (status = 200, description = "One row per group", body = UsageTotals),
        (status = 400, description = "`bad_request`: a date that does not parse, or an unknown `group_by`", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn totals(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<RangeQuery>) -> ApiResult<Json<UsageTotals>> {
    let group = match q.group_by.as_deref() {
        None | Some("unit") => UsageGroup::Unit,
        Some("day") => UsageGroup::Day,
        Some("workflow") => UsageGroup::Workflow,
        Some(other) => return Err(ApiError::bad_request(format!("group_by must be unit, day or workflow, not '{other}'"))),
    };
    let days = day_range(q.from, q.to)?;
    let rows = state.engine.store().usage_totals(&account.id, group, &days).await?;
    Ok(Json(UsageTotals { rows: rows.iter().map(|r| UsageTotal::new(r, group)).collect() }))
}

/// `?after=&limit=`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Rows with a `seq` above this (default 0: from the start).
    after: Option<i64>,
    /// Rows a page (default 100, at most 1000).
    limit: Option<i64>,
}

/// The raw ledger, by `seq`
///
/// A billing job stores `next_after` and asks again: every row comes exactly once.
#[utoipa::path(
    get,
    path = "/v1/usage/events",
    tag = "usage",
    operation_id = "usage_events",
    security(("account_key" = [])),
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of ledger rows", body = LedgerPage),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn events(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<EventsQuery>) -> ApiResult<Json<LedgerPage>> {
    let after = q.after.unwrap_or(0).max(0);
    let limit = q.limit.unwrap_or(100).clamp(1, 1_000);
    let rows = state.engine.store().usage_after(&account.id, after, limit).await?;
    let next_after = rows.last().and_then(|r| r.seq).unwrap_or(after);
    Ok(Json(LedgerPage { events: rows.iter().map(LedgerRow::from).collect(), next_after }))
}

/// The account's ledger rows as CSV
///
/// One line per ledger row after a header line
/// (`seq,id,account_id,workflow_id,run_id,step_id,unit,quantity,tokens_milli,cost_micros,created_at,day`),
/// streamed page by page.
#[utoipa::path(
    get,
    path = "/v1/usage/export.csv",
    tag = "usage",
    operation_id = "usage_export_csv",
    security(("account_key" = [])),
    params(
        ("from" = Option<String>, Query, format = Date, description = "First local day (`YYYY-MM-DD`), inclusive"),
        ("to" = Option<String>, Query, format = Date, description = "Local day (`YYYY-MM-DD`) to stop before, exclusive"),
    ),
    responses(
        (status = 200, description = "CSV with a header line", content_type = "text/csv; charset=utf-8", body = String),
        (status = 400, description = "`bad_request`: a date that does not parse", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn export(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<RangeQuery>) -> ApiResult<Response> {
    let days = day_range(q.from, q.to)?;
    let store = state.engine.store().clone();
    store.sequence_ledger().await?;
    let header_line = "seq,id,account_id,workflow_id,run_id,step_id,unit,quantity,tokens_milli,cost_micros,created_at,day\n";
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(header_line.to_string()) });
    let pages = futures::stream::unfold(Some(0i64), move |after| {
        let (store, days, account_id) = (store.clone(), days.clone(), account.id.clone());
        async move {
            let after = after?;
            match store.usage_page(Some(&account_id), after, EXPORT_PAGE, &days).await {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let next = rows.last().and_then(|r| r.seq);
                    let text: String = rows.iter().map(csv_line).collect();
                    let more = (rows.len() as i64 == EXPORT_PAGE).then_some(next).flatten();
                    Some((Ok(text), more))
                }
                Err(e) => {
                    tracing::error!(error = %e, "usage export failed mid-stream");
                    Some((Err(std::io::Error::other("usage export failed")), None))
                }
            }
        }
    });
    let body = ResponseBody::from_stream(futures::StreamExt::chain(first, pages));
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
}

/// One CSV line. Every field is an id, a unit, a number or a date we generate: none holds a
/// comma, a quote or a newline, so no quoting is needed.
fn csv_line(u: &UsageRow) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{}\n",
        u.seq.unwrap_or_default(),
        u.id,
        u.account_id,
        u.workflow_id,
        u.run_id,
        u.step_id.as_deref().unwrap_or(""),
        u.unit,
        u.quantity,
        u.tokens_milli,
        u.cost_micros,
        to_rfc3339(u.created_at),
        u.day
    )
}

/// Every account's usage by unit, for billing
#[utoipa::path(
    get,
    path = "/v1/admin/usage",
    tag = "usage",
    operation_id = "admin_usage",
    security(("admin_token" = [])),
    params(
        ("from" = Option<String>, Query, format = Date, description = "First local day (`YYYY-MM-DD`), inclusive"),
        ("to" = Option<String>, Query, format = Date, description = "Local day (`YYYY-MM-DD`) to stop before, exclusive"),
    ),
    responses(
        (status = 200, description = "One row per account and unit", body = AdminUsage),
        (status = 400, description = "`bad_request`: a date that does not parse", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn admin(State(state): State<AppState>, _: AdminAuth, Query(q): Query<RangeQuery>) -> ApiResult<Json<AdminUsage>> {
    let days = day_range(q.from, q.to)?;
    let rows = state.engine.store().usage_by_account(&days).await?;
    Ok(Json(AdminUsage { rows: rows.iter().map(AccountUsage::from).collect() }))
}

// ---- Answers ---------------------------------------------------------------------------------

/// Aggregated usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageTotals {
    /// One row per group.
    pub rows: Vec<UsageTotal>,
}

/// One group of usage. Units are never added together: `group_by=day` gives one row per day
/// and unit.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageTotal {
    /// After `group_by`: the unit, the local day (`YYYY-MM-DD`; a day has a row per unit, so
    /// `(key, unit)` identifies a row) or the workflow id.
    pub key: String,
    /// `group_by=day` only: the local day, the same as `key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Date)]
    pub day: Option<String>,
    /// `group_by=day` only: the unit of this row (`sms_segment`, `workflow_run`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// `group_by=workflow` only, and then always present: the workflow's name (also a deleted
    /// workflow's); `null` if no workflow of the account has that id. (`Some(None)` is that
    /// `null`; `None` leaves the field out.)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    /// How many.
    pub quantity: i64,
    /// Tokens, in thousandths.
    pub tokens_milli: i64,
    /// Vendor cost, in millionths of a dollar.
    pub cost_micros: i64,
}

/// A ledger row.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerRow {
    /// Monotonic, from 1: page with `after`.
    #[schema(required = true)]
    pub seq: Option<i64>,
    /// Its idempotency id.
    pub id: String,
    /// The account.
    pub account_id: String,
    /// The workflow.
    pub workflow_id: String,
    /// The run.
    pub run_id: String,
    /// The step, or `null` for a run's own charge.
    #[schema(required = true)]
    pub step_id: Option<String>,
    /// What was used.
    pub unit: String,
    /// How many.
    pub quantity: i64,
    /// Tokens, in thousandths.
    pub tokens_milli: i64,
    /// Vendor cost, in millionths of a dollar.
    pub cost_micros: i64,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The local date in the account's timezone (`YYYY-MM-DD`).
    #[schema(format = Date)]
    pub day: String,
}

/// A page of the raw ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerPage {
    /// Rows after `after`, by `seq`.
    pub events: Vec<LedgerRow>,
    /// Pass as `after` for the next page (unchanged when nothing is new).
    pub next_after: i64,
}

/// Every account's usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUsage {
    /// One row per account and unit.
    pub rows: Vec<AccountUsage>,
}

/// One account's use of one unit.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountUsage {
    /// The account.
    pub account_id: String,
    /// The unit.
    pub unit: String,
    /// How many.
    pub quantity: i64,
    /// Tokens, in thousandths.
    pub tokens_milli: i64,
    /// Vendor cost, in millionths of a dollar.
    pub cost_micros: i64,
}

impl UsageTotal {
    /// A store aggregate, with the fields of its grouping.
    fn new(r: &store::UsageTotal, group: UsageGroup) -> Self {
        let (by_day, by_workflow) = (matches!(group, UsageGroup::Day), matches!(group, UsageGroup::Workflow));
        UsageTotal {
            key: r.key.clone(),
            day: r.day.clone().filter(|_| by_day),
            unit: r.unit.clone().filter(|_| by_day),
            name: by_workflow.then(|| r.name.clone()),
            quantity: r.quantity,
            tokens_milli: r.tokens_milli,
            cost_micros: r.cost_micros,
        }
    }
}

impl From<&UsageRow> for LedgerRow {
    fn from(u: &UsageRow) -> Self {
        LedgerRow {
            seq: u.seq,
            id: u.id.clone(),
            account_id: u.account_id.clone(),
            workflow_id: u.workflow_id.clone(),
            run_id: u.run_id.clone(),
            step_id: u.step_id.clone(),
            unit: u.unit.clone(),
            quantity: u.quantity,
            tokens_milli: u.tokens_milli,
            cost_micros: u.cost_micros,
            created_at: to_rfc3339(u.created_at),
            day: u.day.clone(),
        }
    }
}

impl From<&store::AccountUsage> for AccountUsage {
    fn from(r: &store::AccountUsage) -> Self {
        AccountUsage { account_id: r.account_id.clone(), unit: r.unit.clone(), quantity: r.quantity, tokens_milli: r.tokens_milli, cost_micros: r.cost_micros }
    }
}
