//! OAuth2 connections (Google, Slack): the authorization-code flow with PKCE (S256), the code
//! exchange, and tokens refreshed before they expire, one refresh per connection at a time.
//!
//! The `oauth2` crate builds the requests and parses the answers; it sends them through
//! [`OAuthHttp`], its `AsyncHttpClient` over the project's reqwest client (the crate's own
//! `reqwest` feature pins another reqwest), with redirects off: a token endpoint that redirects
//! is an error, never followed with the code or a client secret.
//!
//! Tokens are stored sealed in the connection like every other credential: Google's as
//! `{access_token, refresh_token, expires_at}` (ms), Slack's bot token as `{bot_token}` (what
//! `slack.post_message` reads). [`TokenKeeper::access_token`] answers a Google connection's
//! access token, refreshing it when it expires within [`REFRESH_MARGIN_MS`]: under a mutex per
//! connection in this process and, on PostgreSQL, the connection's row held `FOR UPDATE` across
//! processes ([`switchboard_runtime::store::ConnectionLock`]); whoever waited reads the fresh
//! tokens instead of refreshing again. A refresh answered `invalid_grant` marks the connection
//! `broken`: steps fail `connection_revoked` (permanent) until it is authorized again.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardErrorResponse, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use switchboard_runtime::action::{ActionError, ConnectionRef};
use switchboard_runtime::store::Store;

use crate::connections::{GoogleCredentials, Vault};

/// A token is refreshed when it expires within this many milliseconds (five minutes): a step
/// never starts a call with a token that could expire on the way.
pub const REFRESH_MARGIN_MS: i64 = 5 * 60 * 1000;

/// How long one token request may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(20);

/// The most of a token endpoint's answer read.
const MAX_TOKEN_ANSWER: usize = 64 * 1024;

/// Google's Calendar scope: events only (create, change), not the calendars themselves.
pub const GOOGLE_CALENDAR_SCOPE: &str = "https://www.googleapis.com/auth/calendar.events";

/// The providers that connect through OAuth.
pub const OAUTH_PROVIDERS: [&str; 2] = ["google", "slack"];

type Configured = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// An OAuth client registered with a provider (the operator's: `SWITCHBOARD_GOOGLE_CLIENT_ID`,
/// `…_CLIENT_SECRET`, `…_AUTHORIZE_URL`, `…_TOKEN_URL`; likewise `SWITCHBOARD_SLACK_…`).
#[derive(Clone)]
pub struct OAuthApp {
    /// `google` or `slack`.
    pub provider: &'static str,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: SecretString,
    /// The authorization endpoint.
    pub authorize_url: String,
    /// The token endpoint.
    pub token_url: String,
}

impl std::fmt::Debug for OAuthApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthApp")
            .field("provider", &self.provider)
            .field("client_id", &self.client_id)
            .field("authorize_url", &self.authorize_url)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

impl OAuthApp {
    /// Google's production endpoints.
    pub fn google(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self {
            provider: "google",
            client_id: client_id.into(),
            client_secret: SecretString::from(client_secret.into()),
            authorize_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
            token_url: "https://oauth2.googleapis.com/token".into(),
        }
    }

    /// Slack's production endpoints (a bot token through `oauth.v2.access`).
    pub fn slack(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self {
            provider: "slack",
            client_id: client_id.into(),
            client_secret: SecretString::from(client_secret.into()),
            authorize_url: "https://slack.com/oauth/v2/authorize".into(),
            token_url: "https://slack.com/api/oauth.v2.access".into(),
        }
    }

    /// The scopes asked for.
    fn scopes(&self) -> &'static [&'static str] {
        match self.provider {
            "google" => &[GOOGLE_CALENDAR_SCOPE],
            _ => &["chat:write"],
        }
    }

    fn client(&self, redirect_uri: Option<&str>) -> Result<Configured, OAuthError> {
        let bad = |what: &str, e: oauth2::url::ParseError| OAuthError::Config(format!("the {} {what} is not a URL: {e}", self.provider));
        let mut client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.expose_secret().to_owned()))
            .set_auth_uri(AuthUrl::new(self.authorize_url.clone()).map_err(|e| bad("authorize URL", e))?)
            .set_token_uri(TokenUrl::new(self.token_url.clone()).map_err(|e| bad("token URL", e))?)
            // Google and Slack both document the client's id and secret as form fields.
            .set_auth_type(AuthType::RequestBody);
        if let Some(uri) = redirect_uri {
            client = client.set_redirect_uri(RedirectUrl::new(uri.to_owned()).map_err(|e| bad("redirect URL", e))?);
        }
        Ok(client)
    }

    /// The URL to send the person authorizing to, with `state` and a fresh PKCE challenge
    /// (S256); answers the URL and the verifier to keep for [`OAuthApp::exchange`].
    pub fn authorize_url(&self, redirect_uri: &str, state: &str) -> Result<(String, SecretString), OAuthError> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let client = self.client(Some(redirect_uri))?;
        let mut request = client.authorize_url(|| CsrfToken::new(state.to_owned())).set_pkce_challenge(challenge);
        for scope in self.scopes() {
            request = request.add_scope(Scope::new((*scope).to_owned()));
        }
        if self.provider == "google" {
            // A refresh token is only issued for offline access, and again only with consent.
            request = request.add_extra_param("access_type", "offline").add_extra_param("prompt", "consent");
        }
        let (url, _) = request.url();
        Ok((url.to_string(), SecretString::from(verifier.secret().clone())))
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens; answers the
    /// credentials to store, `now` being the time in ms.
    pub async fn exchange(&self, http: &reqwest::Client, redirect_uri: &str, code: &str, verifier: &str, now: i64) -> Result<Value, OAuthError> {
        let client = self.client(Some(redirect_uri))?;
        let answer = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&OAuthHttp(http.clone()))
            .await
            .map_err(token_error)?;
        let access_token = answer.access_token().secret().clone();
        Ok(match self.provider {
            "google" => json!({
                "access_token": access_token,
                "refresh_token": answer.refresh_token().map(|r| r.secret().clone()),
                "expires_at": answer.expires_in().map(|d| now + d.as_millis() as i64),
            }),
            _ => json!({ "bot_token": access_token }),
        })
    }

    /// Refreshes with `refresh_token`; answers the new access token, its expiry (ms) and a new
    /// refresh token when the provider rotated it.
    pub async fn refresh(&self, http: &reqwest::Client, refresh_token: &str, now: i64) -> Result<Refreshed, OAuthError> {
        let client = self.client(None)?;
        let token = RefreshToken::new(refresh_token.to_owned());
        let answer = client.exchange_refresh_token(&token).request_async(&OAuthHttp(http.clone())).await.map_err(token_error)?;
        Ok(Refreshed {
            access_token: answer.access_token().secret().clone(),
            refresh_token: answer.refresh_token().map(|r| r.secret().clone()),
            expires_at: answer.expires_in().map(|d| now + d.as_millis() as i64),
        })
    }
}

/// What a refresh answered.
#[derive(Debug, Clone)]
pub struct Refreshed {
    /// The new access token.
    pub access_token: String,
    /// A rotated refresh token, if the provider sent one.
    pub refresh_token: Option<String>,
    /// When the access token expires (ms).
    pub expires_at: Option<i64>,
}

/// Why an OAuth request failed.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The provider refused the grant (`invalid_grant`): an authorization code used, expired or
    /// not matching its verifier, or a refresh token revoked.
    #[error("the provider refused the grant (invalid_grant){}", .0.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    InvalidGrant(Option<String>),
    /// Another error answer of the provider (`invalid_client`, …).
    #[error("the provider answered {0}")]
    Refused(String),
    /// The request failed or the answer could not be read (maybe later).
    #[error("the token request failed: {0}")]
    Transport(String),
    /// The OAuth client is misconfigured.
    #[error("{0}")]
    Config(String),
}

fn token_error(e: RequestTokenError<HttpError, StandardErrorResponse<BasicErrorResponseType>>) -> OAuthError {
    match e {
        RequestTokenError::ServerResponse(r) if *r.error() == BasicErrorResponseType::InvalidGrant => OAuthError::InvalidGrant(r.error_description().cloned()),
        RequestTokenError::ServerResponse(r) => OAuthError::Refused(r.to_string()),
        RequestTokenError::Request(e) => OAuthError::Transport(e.to_string()),
        RequestTokenError::Parse(e, body) => {
            let body = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            OAuthError::Refused(format!("an answer that is not a token ({e}): {body}"))
        }
        RequestTokenError::Other(e) => OAuthError::Refused(e),
    }
}

/// The failure of an OAuth HTTP request.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// `oauth2`'s HTTP client over the project's reqwest client, built with
/// [`crate::http::client_without_redirects`]: a 3xx is an error, never followed.
#[derive(Debug, Clone)]
pub struct OAuthHttp(pub reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for OAuthHttp {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let mut builder = self.0.request(parts.method, parts.uri.to_string()).timeout(TOKEN_TIMEOUT).body(body);
            for (name, value) in &parts.headers {
                builder = builder.header(name, value);
            }
            let mut response = builder.send().await.map_err(|e| HttpError(format!("could not reach the token endpoint: {e}")))?;
            let status = response.status();
            if status.is_redirection() {
                return Err(HttpError(format!("the token endpoint answered a redirect ({status}), which is not followed")));
            }
            let headers = response.headers().clone();
            let (body, _) = crate::http::read_limited(&mut response, MAX_TOKEN_ANSWER).await.map_err(|e| HttpError(format!("reading the answer: {e}")))?;
            let mut answer = http::Response::builder().status(status);
            for (name, value) in &headers {
                answer = answer.header(name, value);
            }
            answer.body(body).map_err(|e| HttpError(e.to_string()))
        })
    }
}

/// The OAuth clients the operator configured, by provider.
#[derive(Debug, Clone, Default)]
pub struct OAuthApps(pub HashMap<&'static str, OAuthApp>);

impl OAuthApps {
    /// The client of `provider`, if configured.
    pub fn get(&self, provider: &str) -> Option<&OAuthApp> {
        self.0.get(provider)
    }

    /// Adds (or replaces) a client.
    pub fn insert(&mut self, app: OAuthApp) -> &mut Self {
        self.0.insert(app.provider, app);
        self
    }
}

/// Answers OAuth connections' access tokens, refreshing them before they expire (see the
/// module's documentation). Cheap to share in an `Arc`.
pub struct TokenKeeper {
    store: Option<Store>,
    vault: Arc<Vault>,
    http: reqwest::Client,
    apps: OAuthApps,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for TokenKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeeper").field("apps", &self.apps).finish_non_exhaustive()
    }
}

/// The failure of a step whose connection is broken.
pub fn connection_revoked(name: &str) -> ActionError {
    ActionError::permanent(
        "connection_revoked",
        format!("connection '{name}' was revoked at its provider (invalid_grant); authorize it again with GET /v1/connections/{{provider}}/authorize"),
    )
}

impl TokenKeeper {
    /// A keeper over `store` (where refreshed tokens are written and rows locked; without one,
    /// tokens are used as stored and never refreshed), opening credentials with `vault`.
    pub fn new(store: Option<Store>, vault: Arc<Vault>, http: reqwest::Client, apps: OAuthApps) -> Self {
        Self { store, vault, http, apps, locks: Mutex::new(HashMap::new()) }
    }

    /// The access token of a Google connection at `now` (ms): the stored one while it is valid
    /// for more than [`REFRESH_MARGIN_MS`], else a refreshed one.
    pub async fn access_token(&self, connection: &ConnectionRef, now: i64) -> Result<SecretString, ActionError> {
        let Some(store) = &self.store else {
            let credentials: GoogleCredentials = self.vault.open(connection)?;
            return Ok(credentials.access_token);
        };
        // The step's copy may be older than a refresh another step made: read the row.
        let row = store.connection_by_id(&connection.id).await.map_err(|e| ActionError::retryable("store_error", e.to_string()))?;
        let Some(row) = row else { return Err(ActionError::permanent("connection_missing", format!("connection '{}' was deleted", connection.name))) };
        if row.status == "broken" {
            return Err(connection_revoked(&connection.name));
        }
        let current = self.open(connection, &row.sealed)?;
        if !needs_refresh(&current, now) {
            return Ok(current.access_token);
        }
        let lock = {
            let mut locks = self.locks.lock().expect("token locks poisoned");
            locks.entry(connection.id.clone()).or_default().clone()
        };
        let _held = lock.lock().await;
        let store_error = |e: switchboard_runtime::Error| ActionError::retryable("store_error", e.to_string());
        let Some(row_lock) = store.lock_connection(&connection.id).await.map_err(store_error)? else {
            return Err(ActionError::permanent("connection_missing", format!("connection '{}' was deleted", connection.name)));
        };
        if row_lock.status == "broken" {
            row_lock.release().await.map_err(store_error)?;
            return Err(connection_revoked(&connection.name));
        }
        let current = self.open(connection, &row_lock.sealed)?;
        if !needs_refresh(&current, now) {
            // Refreshed by whoever held the lock before.
            row_lock.release().await.map_err(store_error)?;
            return Ok(current.access_token);
        }
        let (Some(refresh_token), Some(app)) = (current.refresh_token.as_ref(), self.apps.get(&connection.provider)) else {
            row_lock.release().await.map_err(store_error)?;
            return Err(ActionError::permanent(
                "token_expired",
                format!(
                    "connection '{}' holds an expired access token and no way to refresh it (no refresh token, or no OAuth client configured)",
                    connection.name
                ),
            ));
        };
        match app.refresh(&self.http, refresh_token.expose_secret(), now).await {
            Ok(fresh) => {
                let credentials = json!({
                    "access_token": fresh.access_token,
                    "refresh_token": fresh.refresh_token.as_deref().unwrap_or(refresh_token.expose_secret()),
                    "expires_at": fresh.expires_at,
                });
                let sealed = hex::encode(self.vault.seal(&connection.id, &credentials));
                row_lock.finish(store, &sealed, "ok").await.map_err(store_error)?;
                tracing::info!(connection = %connection.id, "OAuth access token refreshed");
                Ok(SecretString::from(fresh.access_token))
            }
            Err(OAuthError::InvalidGrant(detail)) => {
                let sealed = row_lock.sealed.clone();
                row_lock.finish(store, &sealed, "broken").await.map_err(store_error)?;
                tracing::warn!(connection = %connection.id, ?detail, "OAuth refresh refused (invalid_grant): connection marked broken");
                Err(connection_revoked(&connection.name))
            }
            Err(e) => {
                row_lock.release().await.map_err(store_error)?;
                Err(ActionError::retryable("token_refresh_failed", format!("connection '{}': {e}", connection.name)))
            }
        }
    }

    fn open(&self, connection: &ConnectionRef, sealed_hex: &str) -> Result<GoogleCredentials, ActionError> {
        let current = ConnectionRef { sealed: hex::decode(sealed_hex).unwrap_or_default(), ..connection.clone() };
        self.vault.open(&current)
    }
}

fn needs_refresh(credentials: &GoogleCredentials, now: i64) -> bool {
    credentials.expires_at.is_some_and(|at| at - now <= REFRESH_MARGIN_MS)
}
