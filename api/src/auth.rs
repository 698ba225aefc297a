//! Authentication: account API keys (random, shown once, stored as SHA-256 hashes — a fast hash
//! is right for 256-bit random secrets, unlike passwords) and the admin token.
//!
//! An account may hold several keys, each with an id (listed, added and revoked by the admin,
//! `routes::accounts`); a key opens its account until it is revoked.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use switchboard_runtime::store::Account;

use crate::app::AppState;
use crate::error::ApiError;

/// A new random secret, hex-encoded, with a prefix (`sk_…` keys, webhook tokens).
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The stored form of an API key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// How stale a key's `last_used_at` may be: it is written at most once this often per key, so a
/// busy key costs one write a minute, not one a request.
const LAST_USED_PRECISION_MS: i64 = 60_000;

/// The account of the request's API key.
///
/// Keys are looked up on every request, never cached: a revoked key (its row deleted) is refused
/// by every process from the next request on.
#[derive(Debug, Clone)]
pub struct AccountAuth(pub Account);

impl FromRequestParts<AppState> for AccountAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = bearer(parts).ok_or_else(|| ApiError::unauthorized("missing 'Authorization: Bearer <api key>'"))?;
        let store = state.engine.store();
        let Some(holder) = store.account_by_key_hash(&hash_key(key)).await? else {
            if bool::from(key.as_bytes().ct_eq(state.admin_token.as_bytes())) {
                return Err(ApiError::unauthorized("this is the admin token; account routes take an account's API key (POST /v1/accounts answers one)"));
            }
            return Err(ApiError::unauthorized("unknown API key"));
        };
        let now = state.engine.clock().now();
        if holder.key.last_used_at.is_none_or(|at| at < now - LAST_USED_PRECISION_MS) {
            // Best effort: a failed bookkeeping write must not refuse a valid key.
            if let Err(e) = store.touch_api_key(&holder.key.id, now, now - LAST_USED_PRECISION_MS).await {
                tracing::warn!(error = %e, key_id = %holder.key.id, "could not record the API key's last use");
            }
        }
        Ok(AccountAuth(holder.account))
    }
}

/// Proof that the request carries the admin token.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| ApiError::unauthorized("missing 'Authorization: Bearer <admin token>'"))?;
        if bool::from(token.as_bytes().ct_eq(state.admin_token.as_bytes())) { Ok(AdminAuth) } else { Err(ApiError::unauthorized("not the admin token")) }
    }
}
