//! Accounts: created by the admin; each gets an API key shown once.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_runtime::clock::to_rfc3339;
use switchboard_runtime::definition::Problem;
use switchboard_runtime::engine::new_id;
use switchboard_runtime::store::Account;

use super::{Body, json_body};
use crate::app::AppState;
use crate::auth::{AccountAuth, AdminAuth, hash_key, random_secret};
use crate::error::{ApiError, ApiResult};

/// The plans an account can be on (SPEC §5).
pub const PLANS: [&str; 4] = ["trial", "starter", "professional", "enterprise"];

/// `/v1/accounts`, `/v1/account`.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/accounts", post(create)).route("/v1/account", get(read))
}

#[derive(Deserialize)]
struct NewAccount {
    name: String,
    plan: Option<String>,
    timezone: Option<String>,
}

async fn create(State(state): State<AppState>, _: AdminAuth, headers: HeaderMap, Body(body): Body) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: NewAccount = json_body(&headers, &body)?;
    let plan = req.plan.unwrap_or_else(|| "trial".into());
    let timezone = req.timezone.unwrap_or_else(|| "UTC".into());
    let mut problems = Vec::new();
    if req.name.trim().is_empty() {
        problems.push(Problem { path: "name".into(), message: "must not be empty".into() });
    }
    if !PLANS.contains(&plan.as_str()) {
        problems.push(Problem { path: "plan".into(), message: format!("must be one of {}", PLANS.join(", ")) });
    }
    if timezone.parse::<chrono_tz::Tz>().is_err() {
        problems.push(Problem { path: "timezone".into(), message: format!("'{timezone}' is not an IANA timezone") });
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid("invalid_account", "the account is invalid", problems));
    }
    let account = Account { id: new_id(), name: req.name, plan, timezone, created_at: state.engine.clock().now() };
    let api_key = random_secret("sk_");
    state.engine.store().create_account(&account, &hash_key(&api_key)).await?;
    let mut body = account_json(&account);
    body["api_key"] = json!(api_key);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn read(AccountAuth(account): AccountAuth) -> Json<Value> {
    Json(account_json(&account))
}

fn account_json(a: &Account) -> Value {
    json!({ "id": a.id, "name": a.name, "plan": a.plan, "timezone": a.timezone, "created_at": to_rfc3339(a.created_at) })
}
