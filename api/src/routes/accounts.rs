//! Accounts: created by the admin; each gets an API key shown once. The admin lists accounts
//! with their keys' ids, adds keys and revokes them (a way back to an account whose key is
//! lost, and key rotation: add a key, move clients to it, revoke the old one).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::definition::Problem;
use switchboard_runtime::engine::new_id;
use switchboard_runtime::metering;
use switchboard_runtime::store::{Account, AccountKeys, ApiKey, DayRange};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{JsonBody, PageQuery, Query};
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
        (status = 201, description = "The account and its first API key, with the key's id", body = AccountCreated),
        (status = 422, description = "`invalid_account`, naming every problem (or `invalid_request`: missing or mistyped fields)", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn create(State(state): State<AppState>, _: AdminAuth, JsonBody(req): JsonBody<NewAccount>) -> ApiResult<(StatusCode, Json<AccountCreated>)> {
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
    let account = Account { id: new_id(), name: req.name, plan, timezone, created_at: state.engine.clock().now(), contact_rules: None };
    let (key_id, api_key) = (new_id(), random_secret("sk_"));
    state.engine.store().create_account(&account, &key_id, &hash_key(&api_key)).await?;
    Ok((StatusCode::CREATED, Json(AccountCreated { account: AccountView::from(&account), key_id, api_key })))
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
        (status = 200, description = "A page of accounts with their keys", body = AccountList),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn list(State(state): State<AppState>, _: AdminAuth, Query(q): Query<PageQuery>) -> ApiResult<Json<AccountList>> {
    let page = state.engine.store().list_accounts(q.cursor.as_deref(), q.limit()).await?;
    Ok(Json(AccountList { accounts: page.items.iter().map(AccountWithKeys::from).collect(), next_cursor: page.next_cursor }))
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
        (status = 201, description = "The new key", body = KeyCreated),
        (status = 404, description = "`not_found`: no such account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn add_key(State(state): State<AppState>, _: AdminAuth, Path(id): Path<String>) -> ApiResult<(StatusCode, Json<KeyCreated>)> {
    let (key_id, api_key) = (new_id(), random_secret("sk_"));
    let now = state.engine.clock().now();
    if !state.engine.store().add_api_key(&id, &key_id, &hash_key(&api_key), now).await? {
        return Err(ApiError::not_found("account"));
    }
    Ok((StatusCode::CREATED, Json(KeyCreated { key_id, api_key })))
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
        (status = 200, description = "The account on its new plan", body = AccountView),
        (status = 404, description = "`not_found`: no such account", body = doc::ErrorBody),
        (status = 422, description = "`invalid_plan`: no such plan", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn change_plan(State(state): State<AppState>, _: AdminAuth, Path(id): Path<String>, JsonBody(req): JsonBody<PlanChange>) -> ApiResult<Json<AccountView>> {
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
    Ok(Json(AccountView::from(&account)))
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
        (status = 200, description = "The link", body = StripeCustomerLink),
        (status = 404, description = "`not_found`: no such account", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: missing or mistyped fields", body = doc::ErrorBody),
        doc::BodyErrors,
        doc::Unauthorized,
    ),
)]
async fn set_stripe_customer(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<StripeCustomer>,
) -> ApiResult<Json<StripeCustomerLink>> {
    if !state.engine.store().set_stripe_customer(&id, req.stripe_customer_id.as_deref()).await? {
        return Err(ApiError::not_found("account"));
    }
    Ok(Json(StripeCustomerLink { id, stripe_customer_id: req.stripe_customer_id }))
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
        (status = 200, description = "The account", body = AccountDetail),
        doc::Unauthorized,
    ),
)]
async fn read(State(state): State<AppState>, AccountAuth(account): AccountAuth) -> ApiResult<Json<AccountDetail>> {
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
    Ok(Json(AccountDetail {
        account: AccountView::from(&account),
        period: Period { from, to },
        tokens_included_milli: plan.included_tokens_milli,
        tokens_used_milli: used,
        tokens_reserved_milli: reserved,
        tokens_left_milli: (plan.included_tokens_milli - used - reserved).max(0),
        overage: Overage {
            allowed: plan.overage_micros_per_token.is_some(),
            tokens_milli: over,
            // Rounded down to whole micro-dollars: price per token × thousandths / 1000.
            cost_micros: plan.overage_micros_per_token.map_or(0, |p| p * over / 1000),
        },
        plan_price_micros: plan.monthly_price_micros,
    }))
}

// ---- Answers ---------------------------------------------------------------------------------

/// An account.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Account)]
pub struct AccountView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `trial`, `starter`, `professional` or `enterprise`.
    pub plan: String,
    /// IANA timezone: usage days and periods are local dates in it.
    pub timezone: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A new account, with its API key.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountCreated {
    /// The account.
    #[serde(flatten)]
    pub account: AccountView,
    /// The key's id: how the admin lists and revokes it.
    pub key_id: String,
    /// The account's API key (`sk_…`): shown only in this answer, stored hashed.
    pub api_key: String,
}

/// A new API key of an account.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCreated {
    /// The key's id: how the admin lists and revokes it.
    pub key_id: String,
    /// The key (`sk_…`): shown only in this answer, stored hashed.
    pub api_key: String,
}

/// An API key as the admin sees it: never the key itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyInfo {
    /// The key's id.
    pub key_id: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it last opened a request (RFC 3339), to the minute; `null` if not since it was made.
    #[schema(format = DateTime, required = true)]
    pub last_used_at: Option<String>,
}

/// An account with its live API keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountWithKeys {
    /// The account.
    #[serde(flatten)]
    pub account: AccountView,
    /// Its keys, oldest first; empty when every key was revoked.
    pub keys: Vec<ApiKeyInfo>,
}

/// A page of accounts (admin).
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountList {
    /// The accounts, newest first.
    pub accounts: Vec<AccountWithKeys>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The account with its plan and the current period's tokens.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountDetail {
    /// The account.
    #[serde(flatten)]
    pub account: AccountView,
    /// The current period: the calendar month in the account's timezone.
    pub period: Period,
    /// Tokens the plan includes a period, in thousandths.
    pub tokens_included_milli: i64,
    /// Tokens used this period, in thousandths.
    pub tokens_used_milli: i64,
    /// Tokens held by steps in flight (plans without overage), in thousandths.
    pub tokens_reserved_milli: i64,
    /// Tokens left this period, in thousandths (never below 0).
    pub tokens_left_milli: i64,
    /// Use beyond the included tokens.
    pub overage: Overage,
    /// The plan's monthly price, in millionths of a dollar.
    pub plan_price_micros: i64,
}

/// A period of local dates, `from` inclusive, `to` exclusive.
#[derive(Debug, Serialize, ToSchema)]
pub struct Period {
    /// First day (`YYYY-MM-DD`).
    #[schema(format = Date)]
    pub from: String,
    /// The day after the last (`YYYY-MM-DD`).
    #[schema(format = Date)]
    pub to: String,
}

/// Overage of the current period.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overage {
    /// Whether the plan bills overage (else work stops at the quota).
    pub allowed: bool,
    /// Tokens over the included ones, in thousandths.
    pub tokens_milli: i64,
    /// What they cost, in millionths of a dollar.
    pub cost_micros: i64,
}

/// An account's Stripe customer link.
#[derive(Debug, Serialize, ToSchema)]
pub struct StripeCustomerLink {
    /// The account.
    pub id: String,
    /// The Stripe customer its usage is pushed to; `null` when unlinked.
    #[schema(required = true)]
    pub stripe_customer_id: Option<String>,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        AccountView { id: a.id.clone(), name: a.name.clone(), plan: a.plan.clone(), timezone: a.timezone.clone(), created_at: to_rfc3339(a.created_at) }
    }
}

impl From<&ApiKey> for ApiKeyInfo {
    fn from(k: &ApiKey) -> Self {
        ApiKeyInfo { key_id: k.id.clone(), created_at: to_rfc3339(k.created_at), last_used_at: k.last_used_at.map(to_rfc3339) }
    }
}

impl From<&AccountKeys> for AccountWithKeys {
    fn from(a: &AccountKeys) -> Self {
        AccountWithKeys { account: AccountView::from(&a.account), keys: a.keys.iter().map(ApiKeyInfo::from).collect() }
    }
}
