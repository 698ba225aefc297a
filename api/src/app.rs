//! The shared state and the router.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use switchboard_integrations::connections::Vault;
use switchboard_runtime::engine::Engine;
use switchboard_runtime::store::{HookTarget, Store};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::routes;

/// The largest request body accepted (larger ones are answered 413).
pub const MAX_BODY: usize = 1024 * 1024;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The engine (and through it the store).
    pub engine: Arc<Engine>,
    /// Seals connections' credentials.
    pub vault: Arc<Vault>,
    /// The admin bearer token.
    pub admin_token: Arc<str>,
    /// The base of webhook URLs, without a trailing slash.
    pub public_url: Arc<str>,
    /// Webhook token → workflow, briefly cached (the hot path of ingest).
    pub hooks: Arc<HookCache>,
    /// Requests a second each webhook URL accepts (429 beyond), if limited.
    pub hook_limiter: Option<Arc<HookLimiter>>,
    /// Set to `true` when the process is stopping: long-lived responses (live event streams)
    /// end, so that graceful shutdown does not wait on them forever.
    pub shutdown: Arc<tokio::sync::watch::Sender<bool>>,
    /// Answers Twilio's callbacks of calls (TwiML turns, status events).
    pub calls: Option<Arc<switchboard_actions::voice::Calls>>,
    /// The OAuth clients and the client their token requests go through.
    pub oauth: Arc<OAuthSetup>,
}

/// The OAuth clients the operator configured, and an outbound client without redirects for
/// their token requests.
#[derive(Debug, Clone)]
pub struct OAuthSetup {
    /// By provider.
    pub apps: switchboard_integrations::oauth::OAuthApps,
    /// Sends code exchanges (redirects off); `None` when it could not be built.
    pub http: Option<reqwest::Client>,
}

/// A per-webhook-URL rate limiter (GCRA, keyed by token).
pub type HookLimiter = governor::DefaultKeyedRateLimiter<String>;

impl AppState {
    /// State over an engine, with an empty webhook cache.
    /// Calls' `request` nodes use the default outbound client (private addresses refused);
    /// [`AppState::with_calls`] sets another.
    pub fn new(engine: Arc<Engine>, vault: Arc<Vault>, admin_token: &str, public_url: &str) -> Self {
        let calls = switchboard_integrations::client(&switchboard_integrations::HttpConfig::default()).ok().map(|client| {
            let bases = switchboard_integrations::providers::ApiBases::default();
            Arc::new(switchboard_actions::voice::Calls::new(engine.store().clone(), vault.clone(), public_url, bases.get("twilio"), client))
        });
        Self {
            calls,
            engine,
            vault,
            admin_token: admin_token.into(),
            public_url: public_url.into(),
            hooks: Arc::default(),
            hook_limiter: None,
            shutdown: Arc::new(tokio::sync::watch::Sender::new(false)),
            oauth: Arc::new(OAuthSetup {
                apps: Default::default(),
                http: switchboard_integrations::client_without_redirects(&switchboard_integrations::HttpConfig::default()).ok(),
            }),
        }
    }

    /// Connects providers through OAuth with `apps`, token requests sent per `http` (its
    /// address guard) with redirects off.
    pub fn with_oauth(mut self, apps: switchboard_integrations::oauth::OAuthApps, http: &switchboard_integrations::HttpConfig) -> anyhow::Result<Self> {
        self.oauth = Arc::new(OAuthSetup { apps, http: Some(switchboard_integrations::client_without_redirects(http)?) });
        Ok(self)
    }

    /// Limits each webhook URL to `per_second` requests a second (bursts up to twice that);
    /// 0 leaves them unlimited.
    pub fn with_webhook_limit(mut self, per_second: u32) -> Self {
        self.hook_limiter = std::num::NonZeroU32::new(per_second).map(|rate| {
            let burst = rate.saturating_mul(std::num::NonZeroU32::new(2).expect("2 is not zero"));
            Arc::new(governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst)))
        });
        self
    }

    /// Answers calls' callbacks with `calls`.
    pub fn with_calls(mut self, calls: Arc<switchboard_actions::voice::Calls>) -> Self {
        self.calls = Some(calls);
        self
    }

    /// The public URL of a webhook token.
    pub fn webhook_url(&self, token: &str) -> String {
        format!("{}/hooks/{token}", self.public_url)
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::accounts::router())
        .merge(routes::workflows::router())
        .merge(routes::actions::router())
        .merge(routes::connections::router())
        .merge(routes::oauth::router())
        .merge(routes::numbers::router())
        .merge(routes::contact::router())
        .merge(routes::schedules::router())
        .merge(routes::outbox::router())
        .merge(routes::callbacks::router())
        .merge(routes::templates::router())
        .merge(routes::runs::router())
        .merge(routes::live::router())
        .merge(routes::usage::router())
        .merge(routes::analytics::router())
        .merge(routes::events::router())
        .merge(routes::hooks::router())
        .merge(routes::health::router())
        .merge(crate::openapi::router())
        .merge(crate::console::router())
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async { ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// How long a webhook's routing (its workflow, enabled flag and version) may be served from
/// memory. Writes through this process clear the cache at once; another process's writes are
/// seen within this time.
const HOOK_TTL: Duration = Duration::from_secs(1);

/// Webhook token → workflow, cached for [`HOOK_TTL`]: one indexed read per token a second
/// instead of one per request.
#[derive(Debug, Default)]
pub struct HookCache {
    entries: Mutex<HashMap<String, (HookTarget, Instant)>>,
}

impl HookCache {
    /// The workflow behind a token, from the cache or the store.
    pub async fn get(&self, store: &Store, token: &str) -> switchboard_runtime::Result<Option<HookTarget>> {
        if let Some((target, at)) = self.entries.lock().expect("hook cache lock").get(token)
            && at.elapsed() < HOOK_TTL
        {
            return Ok(Some(target.clone()));
        }
        let found = store.workflow_by_token(token).await?;
        if let Some(target) = &found {
            let mut entries = self.entries.lock().expect("hook cache lock");
            if entries.len() >= 100_000 {
                entries.clear();
            }
            entries.insert(token.to_string(), (target.clone(), Instant::now()));
        }
        Ok(found)
    }

    /// Forgets everything (a workflow changed through this process).
    pub fn clear(&self) {
        self.entries.lock().expect("hook cache lock").clear();
    }
}
