//! Accounts: created by the admin; each gets an API key shown once. The admin lists accounts
//! with their keys' ids, adds keys and revokes them (a way back to an account whose key is
//! lost, and key rotation: add a key, move clients to it, revoke the old one).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::definition::Problem;
use switchboard_runtime::engine::new_id;
use switchboard_runtime::metering;
use switchboard_runtime::store::{Account, AccountKeys, ApiKey, DayRange};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Body, PageQuery, Query, json_body};
use crate::app::AppState;
use crate::auth::{AccountAuth, AdminAuth, hash_key, random_secret};
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self as doc, built_once};

/// `/v1/accounts`, `/v1/account`, `/v1/admin/accounts/…`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(list))
        .routes(routes!(add_key))
        .routes(routes!(revoke_key))
        .routes(routes!(read))
        .routes(routes!(change_plan))
        .routes(routes!(set_stripe_customer))
}

/// `/v1/accounts`, `/v1/account`, `/v1/admin/accounts/…`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

/// `POST /v1/accounts`.
#[derive(Deserialize, ToSchema)]
struct NewAccount {
    /// Not empty.
    name: String,
    /// `trial` (default), `starter`, `professional` or `enterprise`.
    plan: Option<String>,
    /// IANA timezone (default `UTC`): usage days and periods are local dates in it.
    timezone: Option<String>,
}

/// Creates an account; its API key is in the answer, once.
#[utoipa::path(
    post,
    path = "/v1/accounts",
    tag = "accounts",
    operation_id = "create_account",
    security(("admin_token" = [])),
    request_body = NewAccount,
    responses(
        (status = 201, description = "The account and its first API key, with the key's id", body = doc::AccountCreated),
        (status = 422, description = "`invalid_account`, naming every problem (or `invalid_request`: missing or mistyped fields)", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn create(State(state): State<AppState>, _: AdminAuth, headers: HeaderMap, Body(body): Body) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: NewAccount = json_body(&headers, &body)?;
    let plan = req.plan.unwrap_or_else(|| "trial".into());
    let timezone = req.timezone.unwrap_or_else(|| "UTC".into());
    let mut problems = Vec::new();
    if req.name.trim().is_empty() {
        problems.push(Problem { path: "name".into(), message: "must not be empty".into() });
    }
    if metering::plan(&plan).is_none() {
        let names: Vec<&str> = metering::PLANS.iter().map(|p| p.name).collect();
        problems.push(Problem { path: "plan".into(), message: format!("must be one of {}", names.join(", ")) });
    }
    if timezone.parse::<chrono_tz::Tz>().is_err() {
        problems.push(Problem { path: "timezone".into(), message: format!("'{timezone}' is not an IANA timezone") });
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid("invalid_account", "the account is invalid", problems));
    }
    let account = Account { id: new_id(), name: req.name, plan, timezone, created_at: state.engine.clock().now() };
    let (key_id, api_key) = (new_id(), random_secret("sk_"));
    state.engine.store().create_account(&account, &key_id, &hash_key(&api_key)).await?;
    let mut body = account_json(&account);
    body["key_id"] = json!(key_id);
    body["api_key"] = json!(api_key);
    Ok((StatusCode::CREATED, Json(body)))
}

/// Every account with its API keys (ids only), newest account first
///
/// Keys themselves are never shown again: they are stored hashed. A lost key is replaced by
/// adding a new one and revoking the old one.
#[utoipa::path(
    get,
    path = "/v1/admin/accounts",
    tag = "accounts",
    operation_id = "list_accounts",
    security(("admin_token" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of accounts with their keys", body = doc::AccountList),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn list(State(state): State<AppState>, _: AdminAuth, Query(q): Query<PageQuery>) -> ApiResult<Json<Value>> {
    let page = state.engine.store().list_accounts(q.cursor.as_deref(), q.limit()).await?;
    let accounts: Vec<Value> = page.items.iter().map(account_keys_json).collect();
    Ok(Json(json!({ "accounts": accounts, "next_cursor": page.next_cursor })))
}

/// Adds an API key to an account; the key is in the answer, once
///
/// The account's other keys keep working until they are revoked.
#[utoipa::path(
    post,
    path = "/v1/admin/accounts/{id}/keys",
    tag = "accounts",
    operation_id = "add_api_key",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The account")),
    responses(
        (status = 201, description = "The new key", body = doc::KeyCreated),
        (status = 404, description = "`not_found`: no such account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn add_key(State(state): State<AppState>, _: AdminAuth, Path(id): Path<String>) -> ApiResult<(StatusCode, Json<Value>)> {
    let (key_id, api_key) = (new_id(), random_secret("sk_"));
    let now = state.engine.clock().now();
    if !state.engine.store().add_api_key(&id, &key_id, &hash_key(&api_key), now).await? {
        return Err(ApiError::not_found("account"));
    }
    Ok((StatusCode::CREATED, Json(json!({ "key_id": key_id, "api_key": api_key }))))
}

/// Revokes an API key
///
/// The key is refused (401) from the next request on, by every process: keys are not cached.
/// Revoking an account's last key is allowed; the account then has no way in until the admin
/// adds a key.
#[utoipa::path(
    delete,
    path = "/v1/admin/accounts/{id}/keys/{key_id}",
    tag = "accounts",
    operation_id = "revoke_api_key",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The account"),
        ("key_id" = String, Path, description = "The key's id, as listed"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "`not_found`: no such account, or no key with that id in it", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn revoke_key(State(state): State<AppState>, _: AdminAuth, Path((id, key_id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let store = state.engine.store();
    if store.revoke_api_key(&id, &key_id).await? {
        return Ok(StatusCode::NO_CONTENT);
    }
    // Only to say which of the two is missing.
    Err(ApiError::not_found(if store.account(&id).await?.is_some() { "API key" } else { "account" }))
}

/// `PUT /v1/admin/accounts/{id}/plan`.
#[derive(Deserialize, ToSchema)]
struct PlanChange {
    /// `trial`, `starter`, `professional` or `enterprise`.
    plan: String,
}

/// Moves an account to another plan.
///
/// Quotas follow at once; a run that failed with `quota_exceeded` can then be retried.
#[utoipa::path(
    put,
    path = "/v1/admin/accounts/{id}/plan",
    tag = "accounts",
    operation_id = "change_plan",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The account")),
    request_body = PlanChange,
    responses(
        (status = 200, description = "The account on its new plan", body = doc::Account),
        (status = 404, description = "`not_found`: no such account", body = doc::ErrorBody),
        (status = 422, description = "`invalid_plan`: no such plan", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn change_plan(
    State(state): State<AppState>,
    _: AdminAuth,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let req: PlanChange = json_body(&headers, &body)?;
    if metering::plan(&req.plan).is_none() {
        let names: Vec<&str> = metering::PLANS.iter().map(|p| p.name).collect();
        let problem = Problem { path: "plan".into(), message: format!("must be one of {}", names.join(", ")) };
        return Err(ApiError::invalid("invalid_plan", "no such plan", vec![problem]));
    }
    if !state.engine.store().set_account_plan(&id, &req.plan).await? {
        return Err(ApiError::not_found("account"));
    }
    state.engine.forget_account(&id);
    let account = state.engine.store().account(&id).await?.ok_or_else(|| ApiError::not_found("account"))?;
    Ok(Json(account_json(&account)))
}

/// `PUT /v1/admin/accounts/{id}/stripe_customer`.
#[derive(Deserialize, ToSchema)]
struct StripeCustomer {
    /// `cus_…`, or `null` to unlink.
    #[schema(required = true)]
    stripe_customer_id: Option<String>,
}

/// Links an account to its Stripe customer.
///
/// Its ledger rows are then pushed to Stripe meter events by the sync. `null` unlinks it.
#[utoipa::path(
    put,
    path = "/v1/admin/accounts/{id}/stripe_customer",
    tag = "accounts",
    operation_id = "set_stripe_customer",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The account")),
    request_body = StripeCustomer,
    responses(
        (status = 200, description = "The link", body = doc::StripeCustomerLink),
        (status = 404, description = "`not_found`: no such account", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: missing or mistyped fields", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn set_stripe_customer(
    State(state): State<AppState>,
    _: AdminAuth,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let req: StripeCustomer = json_body(&headers, &body)?;
    if !state.engine.store().set_stripe_customer(&id, req.stripe_customer_id.as_deref()).await? {
        return Err(ApiError::not_found("account"));
    }
    Ok(Json(json!({ "id": id, "stripe_customer_id": req.stripe_customer_id })))
}

/// The account with its plan and the current period's tokens
///
/// The period is the calendar month in the account's timezone.
#[utoipa::path(
    get,
    path = "/v1/account",
    tag = "accounts",
    operation_id = "read_account",
    security(("account_key" = [])),
    responses(
        (status = 200, description = "The account", body = doc::AccountDetail),
        doc::Unauthorized,
    ),
)]
async fn read(State(state): State<AppState>, AccountAuth(account): AccountAuth) -> ApiResult<Json<Value>> {
    let (from, to) = metering::month_of(state.engine.clock().now(), &account.timezone);
    let days = DayRange { from: Some(from.clone()), to: Some(to.clone()) };
    let plan = metering::plan(&account.plan).unwrap_or(metering::PLANS[0]);
    // Plans without overage are enforced by the period counters: show those (with what steps
    // in flight hold reserved); others are summed from the ledger.
    let (used, reserved) = if plan.overage_micros_per_token.is_none() {
        state.engine.store().period_counters(&account.id, &from).await?
    } else {
        (state.engine.store().tokens_spent(&account.id, &days).await?, 0)
    };
    let over = (used - plan.included_tokens_milli).max(0);
    let mut body = account_json(&account);
    body["period"] = json!({ "from": from, "to": to });
    body["tokens_included_milli"] = json!(plan.included_tokens_milli);
    body["tokens_used_milli"] = json!(used);
    body["tokens_reserved_milli"] = json!(reserved);
    body["tokens_left_milli"] = json!((plan.included_tokens_milli - used - reserved).max(0));
    body["overage"] = json!({
        "allowed": plan.overage_micros_per_token.is_some(),
        "tokens_milli": over,
        // Rounded down to whole micro-dollars: price per token × thousandths / 1000.
        "cost_micros": plan.overage_micros_per_token.map_or(0, |p| p * over / 1000),
    });
    body["plan_price_micros"] = json!(plan.monthly_price_micros);
    Ok(Json(body))
}

fn account_keys_json(a: &AccountKeys) -> Value {
    let mut body = account_json(&a.account);
    body["keys"] = a.keys.iter().map(key_json).collect();
    body
}

fn key_json(k: &ApiKey) -> Value {
    json!({ "key_id": k.id, "created_at": to_rfc3339(k.created_at), "last_used_at": k.last_used_at.map(to_rfc3339) })
}

fn account_json(a: &Account) -> Value {
    json!({ "id": a.id, "name": a.name, "plan": a.plan, "timezone": a.timezone, "created_at": to_rfc3339(a.created_at) })
}
