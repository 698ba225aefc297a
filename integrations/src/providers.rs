//! The provider registry: every vendor a connection can be created for, with its credentials
//! type, the check of those credentials and its API base URL.
//!
//! A provider is a type implementing [`Provider`], listed once in [`PROVIDERS`]. Everything
//! that used to name vendors one by one reads this list: `POST /v1/connections` (which names
//! are known, how credentials are checked), the settings (each provider's
//! `SWITCHBOARD_<NAME>_API_BASE`) and the action modules' configuration ([`ApiBases`]).

use std::collections::BTreeMap;

use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::connections::{CrmCredentials, GoogleCredentials, SlackCredentials, SmtpCredentials, StripeCredentials, TwilioCredentials};

/// Problems with credentials, as `(path, message)` with paths under `credentials`; never quoting
/// a credential's value.
pub type Problems = Vec<(String, String)>;

/// A vendor a connection can be created for.
pub trait Provider: 'static {
    /// The durable name stored on connections and named by actions (`Action::PROVIDERS`).
    const NAME: &'static str;
    /// The credentials' shape, as the 422 of a wrong one describes it.
    const SHAPE: &'static str;
    /// The vendor's production API base URL, when the API reaches one (overridable by the
    /// `SWITCHBOARD_<NAME>_API_BASE` setting, e.g. to point tests at a fake).
    const API_BASE: Option<&'static str> = None;
    /// What a connection holds, as opened by the action modules.
    type Credentials: DeserializeOwned;
    /// Checks credentials that have the right shape.
    fn check(credentials: &Self::Credentials) -> Problems;
}

/// A provider, type-erased for the registry.
#[derive(Clone, Copy)]
pub struct ProviderSpec {
    /// See [`Provider::NAME`].
    pub name: &'static str,
    /// See [`Provider::API_BASE`].
    pub api_base: Option<&'static str>,
    check: fn(&Value) -> Problems,
}

impl std::fmt::Debug for ProviderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSpec").field("name", &self.name).field("api_base", &self.api_base).finish_non_exhaustive()
    }
}

impl ProviderSpec {
    /// The spec of `P`.
    pub const fn of<P: Provider>() -> Self {
        Self { name: P::NAME, api_base: P::API_BASE, check: check_as::<P> }
    }

    /// Checks `credentials` against the provider's shape and rules.
    pub fn check(&self, credentials: &Value) -> Result<(), Problems> {
        let problems = (self.check)(credentials);
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

fn check_as<P: Provider>(credentials: &Value) -> Problems {
    match serde_json::from_value::<P::Credentials>(credentials.clone()) {
        Ok(c) => P::check(&c),
        Err(e) => vec![("credentials".into(), format!("expected {}: {}", P::SHAPE, redact(&e)))],
    }
}

/// Every provider, in the order the API lists them. Adding a provider: its type and
/// [`Provider`] impl, and one line here.
pub const PROVIDERS: &[ProviderSpec] = &[
    ProviderSpec::of::<Twilio>(),
    ProviderSpec::of::<Smtp>(),
    ProviderSpec::of::<Slack>(),
    ProviderSpec::of::<Stripe>(),
    ProviderSpec::of::<Crm>(),
    ProviderSpec::of::<Google>(),
];

/// The provider named `name`.
pub fn provider(name: &str) -> Option<&'static ProviderSpec> {
    PROVIDERS.iter().find(|p| p.name == name)
}

/// Every provider's name, in order.
pub fn names() -> impl Iterator<Item = &'static str> {
    PROVIDERS.iter().map(|p| p.name)
}

/// The API base URL of each provider that has one: its default, or the operator's override.
#[derive(Debug, Clone)]
pub struct ApiBases(BTreeMap<&'static str, String>);

impl Default for ApiBases {
    fn default() -> Self {
        Self(PROVIDERS.iter().filter_map(|p| Some((p.name, p.api_base?.to_owned()))).collect())
    }
}

impl ApiBases {
    /// Overrides the base URL of `provider` (a trailing `/` is dropped). Panics on a provider
    /// without an API base: a programming error.
    pub fn set(&mut self, provider: &str, url: impl Into<String>) -> &mut Self {
        let url = url.into().trim_end_matches('/').to_owned();
        let Some(spec) = self::provider(provider).filter(|p| p.api_base.is_some()) else {
            panic!("provider {provider} has no API base URL");
        };
        self.0.insert(spec.name, url);
        self
    }

    /// The base URL of `provider`. Panics on a provider without an API base: a programming error.
    pub fn get(&self, provider: &str) -> &str {
        self.0.get(provider).map(String::as_str).unwrap_or_else(|| panic!("provider {provider} has no API base URL"))
    }
}

/// An http(s) URL with a host, or a problem at `path`.
fn url(path: &str, s: &str) -> Problems {
    match reqwest::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => vec![],
        _ => vec![(path.to_string(), "must be an http(s) URL".into())],
    }
}

/// serde's message without the offending value (which could be a secret): keep what precedes
/// any quoted or backquoted part.
fn redact(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let cut = message.find(['"', '`']).unwrap_or(message.len());
    message[..cut].trim_end_matches([' ', ':', ',']).to_string()
}

/// Twilio (`sms.send`, status callbacks).
#[derive(Debug)]
pub struct Twilio;

impl Provider for Twilio {
    const NAME: &'static str = "twilio";
    const SHAPE: &'static str = "{account_sid, auth_token}";
    const API_BASE: Option<&'static str> = Some("https://api.twilio.com");
    type Credentials = TwilioCredentials;

    fn check(c: &TwilioCredentials) -> Problems {
        let mut p = vec![];
        if !c.account_sid.starts_with("AC") || c.account_sid.len() != 34 {
            p.push(("credentials.account_sid".into(), "a Twilio account SID is 'AC' and 32 hex characters".into()));
        }
        if c.auth_token.expose_secret().is_empty() {
            p.push(("credentials.auth_token".into(), "must not be empty".into()));
        }
        p
    }
}

/// An SMTP server (`email.send`).
#[derive(Debug)]
pub struct Smtp;

impl Provider for Smtp {
    const NAME: &'static str = "smtp";
    const SHAPE: &'static str = "{host, port, tls: none|starttls|implicit, username?, password?}";
    type Credentials = SmtpCredentials;

    fn check(c: &SmtpCredentials) -> Problems {
        let mut p = vec![];
        if c.host.trim().is_empty() {
            p.push(("credentials.host".into(), "must not be empty".into()));
        }
        if c.password.is_some() != c.username.is_some() {
            p.push(("credentials.username".into(), "username and password go together".into()));
        }
        p
    }
}

/// Slack (`slack.post_message`): a bot token or an incoming webhook.
#[derive(Debug)]
pub struct Slack;

impl Provider for Slack {
    const NAME: &'static str = "slack";
    const SHAPE: &'static str = "{bot_token} or {webhook_url}";
    const API_BASE: Option<&'static str> = Some("https://slack.com");
    type Credentials = SlackCredentials;

    fn check(c: &SlackCredentials) -> Problems {
        match c {
            SlackCredentials::Bot { bot_token } if !bot_token.expose_secret().starts_with("xox") => {
                vec![("credentials.bot_token".into(), "a Slack bot token starts with 'xoxb-'".into())]
            }
            SlackCredentials::Bot { .. } => vec![],
            SlackCredentials::Webhook { webhook_url } => url("credentials.webhook_url", webhook_url.expose_secret()),
        }
    }
}

/// Stripe (usage sync, `stripe.*` actions, webhooks as a trigger).
#[derive(Debug)]
pub struct Stripe;

impl Provider for Stripe {
    const NAME: &'static str = "stripe";
    const SHAPE: &'static str = "{secret_key, webhook_secret?}";
    const API_BASE: Option<&'static str> = Some(crate::stripe::DEFAULT_API_BASE);
    type Credentials = StripeCredentials;

    fn check(c: &StripeCredentials) -> Problems {
        let key = c.secret_key.expose_secret();
        let mut p = Problems::new();
        if !(key.starts_with("sk_") || key.starts_with("rk_")) {
            p.push(("credentials.secret_key".into(), "a Stripe secret key starts with 'sk_' (or 'rk_')".into()));
        }
        if c.webhook_secret.as_ref().is_some_and(|s| !s.expose_secret().starts_with("whsec_")) {
            p.push(("credentials.webhook_secret".into(), "a Stripe webhook signing secret starts with 'whsec_'".into()));
        }
        p
    }
}

/// Google (`calendar.create_event`), connected through OAuth
/// (`GET /v1/connections/google/authorize`).
#[derive(Debug)]
pub struct Google;

impl Provider for Google {
    const NAME: &'static str = "google";
    const SHAPE: &'static str = "{access_token, refresh_token?, expires_at?}";
    const API_BASE: Option<&'static str> = Some("https://www.googleapis.com");
    type Credentials = GoogleCredentials;

    fn check(c: &GoogleCredentials) -> Problems {
        if c.access_token.expose_secret().is_empty() { vec![("credentials.access_token".into(), "must not be empty".into())] } else { vec![] }
    }
}

/// The host CRM (`crm.*`); its base URL is part of each connection.
#[derive(Debug)]
pub struct Crm;

impl Provider for Crm {
    const NAME: &'static str = "crm";
    const SHAPE: &'static str = "{base_url, api_key}";
    type Credentials = CrmCredentials;

    fn check(c: &CrmCredentials) -> Problems {
        let mut p = url("credentials.base_url", &c.base_url);
        if c.api_key.expose_secret().is_empty() {
            p.push(("credentials.api_key".into(), "must not be empty".into()));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_in_the_api_order() {
        assert_eq!(names().collect::<Vec<_>>(), ["twilio", "smtp", "slack", "stripe", "crm", "google"]);
    }

    #[test]
    fn api_bases_default_per_provider_and_can_be_overridden() {
        let mut bases = ApiBases::default();
        assert_eq!(bases.get("twilio"), "https://api.twilio.com");
        assert_eq!(bases.get("slack"), "https://slack.com");
        bases.set("twilio", "http://127.0.0.1:9/");
        assert_eq!(bases.get("twilio"), "http://127.0.0.1:9");
    }
}
