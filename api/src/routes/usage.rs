//! The usage ledger, read: aggregates, raw pages for billing jobs, CSV export, and every
//! account's usage for the admin. Days are local dates in the account's timezone; `from` is
//! inclusive and `to` exclusive (`YYYY-MM-DD`).

use axum::body::Body as ResponseBody;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::store::{DayRange, UsageGroup, UsageRow};
use utoipa::IntoParams;
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

/// A ledger row as the API shows it (`openapi::LedgerRow`).
pub(crate) fn ledger_json(u: &UsageRow) -> Value {
    json!({
        "seq": u.seq, "id": u.id, "account_id": u.account_id, "workflow_id": u.workflow_id, "run_id": u.run_id,
        "step_id": u.step_id, "unit": u.unit, "quantity": u.quantity, "tokens_milli": u.tokens_milli,
        "cost_micros": u.cost_micros, "created_at": to_rfc3339(u.created_at), "day": u.day,
    })
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
        (status = 200, description = "One row per group", body = doc::UsageTotals),
        (status = 400, description = "`bad_request`: a date that does not parse, or an unknown `group_by`", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn totals(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<RangeQuery>) -> ApiResult<Json<Value>> {
    let group = match q.group_by.as_deref() {
        None | Some("unit") => UsageGroup::Unit,
        Some("day") => UsageGroup::Day,
        Some("workflow") => UsageGroup::Workflow,
        Some(other) => return Err(ApiError::bad_request(format!("group_by must be unit, day or workflow, not '{other}'"))),
    };
    let days = day_range(q.from, q.to)?;
    let rows = state.engine.store().usage_totals(&account.id, group, &days).await?;
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut row = json!({ "key": r.key, "quantity": r.quantity, "tokens_milli": r.tokens_milli, "cost_micros": r.cost_micros });
            match group {
                UsageGroup::Unit => {}
                UsageGroup::Day => {
                    row["day"] = json!(r.day);
                    row["unit"] = json!(r.unit);
                }
                UsageGroup::Workflow => row["name"] = json!(r.name),
            }
            row
        })
        .collect();
    Ok(Json(json!({ "rows": rows })))
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
        (status = 200, description = "A page of ledger rows", body = doc::LedgerPage),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn events(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(q): Query<EventsQuery>) -> ApiResult<Json<Value>> {
    let after = q.after.unwrap_or(0).max(0);
    let limit = q.limit.unwrap_or(100).clamp(1, 1_000);
    let rows = state.engine.store().usage_after(&account.id, after, limit).await?;
    let next_after = rows.last().and_then(|r| r.seq).unwrap_or(after);
    Ok(Json(json!({ "events": rows.iter().map(ledger_json).collect::<Vec<_>>(), "next_after": next_after })))
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
        (status = 200, description = "One row per account and unit", body = doc::AdminUsage),
        (status = 400, description = "`bad_request`: a date that does not parse", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn admin(State(state): State<AppState>, _: AdminAuth, Query(q): Query<RangeQuery>) -> ApiResult<Json<Value>> {
    let days = day_range(q.from, q.to)?;
    let rows = state.engine.store().usage_by_account(&days).await?;
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({ "account_id": r.account_id, "unit": r.unit, "quantity": r.quantity,
                    "tokens_milli": r.tokens_milli, "cost_micros": r.cost_micros })
        })
        .collect();
    Ok(Json(json!({ "rows": rows })))
}
