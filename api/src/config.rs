//! Settings, loaded once at the binary's edge: defaults → `switchboard.toml` (or `--config`) →
//! `SWITCHBOARD_…` environment variables.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use switchboard_actions::ActionsConfig;
use switchboard_integrations::connections::Vault;
use switchboard_integrations::oauth::{OAuthApp, OAuthApps};
use switchboard_integrations::providers::{self, ApiBases};
use switchboard_runtime::engine::EngineConfig;
use switchboard_runtime::store::StoreConfig;

/// Every setting. Secrets (the admin token, the secret key, the Stripe key, database and Redis
/// URLs) are `SecretString`s: `Debug` shows `[REDACTED]`, and they are never serialized.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Where the embedded SQLite file and the generated admin token live.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default `sqlite://$DATA_DIR/switchboard.db`. Secret: it
    /// may hold a password.
    #[serde(skip_serializing)]
    pub database_url: Option<SecretString>,
    /// Redis, for vendor rate limits and live events shared by every process. Secret: it may
    /// hold a password.
    #[serde(skip_serializing)]
    pub redis_url: Option<SecretString>,
    /// HTTP listen address.
    pub listen: String,
    /// Base of webhook URLs; default `http://$LISTEN`.
    pub public_url: Option<String>,
    /// The admin bearer token; generated on first start and kept in the data dir.
    #[serde(skip_serializing)]
    pub admin_token: Option<SecretString>,
    /// The key credentials are encrypted with (64 hex characters); generated on first start
    /// and kept in the data dir.
    #[serde(skip_serializing)]
    pub secret_key: Option<SecretString>,
    /// Let `http.request` reach private, loopback and link-local addresses.
    pub http_allow_private: bool,
    /// Seconds a claimed step is leased before another worker may take it over.
    pub lease_secs: u64,
    /// Steps executed at once by this process.
    pub worker_concurrency: usize,
    /// Database connections of this process.
    pub max_connections: u32,
    /// Requests a second each webhook URL accepts before answering 429 (bursts up to twice
    /// that); 0 turns the limit off. Per process.
    pub webhook_rate_limit: u32,
    /// Each provider's API base URL: the vendor's production one, or the
    /// `SWITCHBOARD_<PROVIDER>_API_BASE` setting (`<provider>_api_base` in the file), for every
    /// provider of the registry that has one (`switchboard_integrations::providers`; tests
    /// point them at local fakes).
    #[serde(skip)]
    pub api_bases: ApiBases,
    /// Stripe secret key; when set, `serve` and `worker` push new ledger rows to Stripe meter
    /// events.
    #[serde(skip_serializing)]
    pub stripe_secret_key: Option<SecretString>,
    /// The `event_name` of the Stripe meter fed with `tokens_milli`.
    pub stripe_meter_event_name: String,
    /// Seconds between two passes of the Stripe sync.
    pub stripe_sync_interval_secs: u64,
    /// Price overrides by unit (`[prices.sms_segment] tokens_milli = …, cost_micros = …` in
    /// `switchboard.toml`); units not named keep the default prices (docs/metering.md). A change applies to new
    /// ledger rows only: each row keeps the price it was charged at.
    pub prices: std::collections::HashMap<String, switchboard_runtime::metering::Price>,
    /// Google's OAuth client id (`SWITCHBOARD_GOOGLE_CLIENT_ID`): connecting Google Calendar.
    pub google_client_id: Option<String>,
    /// Google's OAuth client secret (`SWITCHBOARD_GOOGLE_CLIENT_SECRET`).
    #[serde(skip_serializing)]
    pub google_client_secret: Option<SecretString>,
    /// Google's authorization endpoint (`SWITCHBOARD_GOOGLE_AUTHORIZE_URL`), default Google's.
    pub google_authorize_url: Option<String>,
    /// Google's token endpoint (`SWITCHBOARD_GOOGLE_TOKEN_URL`), default Google's.
    pub google_token_url: Option<String>,
    /// Slack's OAuth client id (`SWITCHBOARD_SLACK_CLIENT_ID`): installing the Slack app.
    pub slack_client_id: Option<String>,
    /// Slack's OAuth client secret (`SWITCHBOARD_SLACK_CLIENT_SECRET`).
    #[serde(skip_serializing)]
    pub slack_client_secret: Option<SecretString>,
    /// Slack's authorization endpoint (`SWITCHBOARD_SLACK_AUTHORIZE_URL`), default Slack's.
    pub slack_authorize_url: Option<String>,
    /// Slack's token endpoint (`SWITCHBOARD_SLACK_TOKEN_URL`), default `oauth.v2.access`.
    pub slack_token_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            database_url: None,
            redis_url: None,
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            admin_token: None,
            secret_key: None,
            http_allow_private: false,
            lease_secs: 60,
            worker_concurrency: 128,
            max_connections: 16,
            webhook_rate_limit: 200,
            api_bases: ApiBases::default(),
            stripe_secret_key: None,
            stripe_meter_event_name: crate::billing_sync::DEFAULT_EVENT_NAME.into(),
            stripe_sync_interval_secs: 60,
            prices: Default::default(),
            google_client_id: None,
            google_client_secret: None,
            google_authorize_url: None,
            google_token_url: None,
            slack_client_id: None,
            slack_client_secret: None,
            slack_authorize_url: None,
            slack_token_url: None,
        }
    }
}

impl Settings {
    /// Loads settings: defaults, then the TOML file (if it exists), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let file = file.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("switchboard.toml"));
        let figment = Figment::from(Serialized::defaults(Settings::default())).merge(Toml::file(file)).merge(Env::prefixed("SWITCHBOARD_"));
        let mut settings: Settings = figment.extract().map_err(Box::new)?;
        // One `<provider>_api_base` setting per provider with an API, read from the registry
        // rather than listed here.
        for provider in providers::PROVIDERS.iter().filter(|p| p.api_base.is_some()) {
            let key = format!("{}_api_base", provider.name);
            if figment.contains(&key) {
                settings.api_bases.set(provider.name, figment.extract_inner::<String>(&key).map_err(Box::new)?);
            }
        }
        Ok(settings)
    }

    /// The database URL, with the embedded default filled in.
    pub fn database_url(&self) -> String {
        self.database_url
            .as_ref()
            .map(|u| u.expose_secret().to_string())
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("switchboard.db").display()))
    }

    /// The public base URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.listen)).trim_end_matches('/').to_string()
    }

    /// Store settings.
    pub fn store(&self) -> StoreConfig {
        StoreConfig { url: self.database_url(), max_connections: self.max_connections }
    }

    /// Engine settings.
    pub fn engine(&self) -> EngineConfig {
        let mut prices = switchboard_runtime::metering::PriceList::default();
        prices.0.extend(self.prices.clone());
        EngineConfig { lease: Duration::from_secs(self.lease_secs.max(1)), concurrency: self.worker_concurrency.max(1), prices, ..EngineConfig::default() }
    }

    /// The admin token: configured, or kept in `$DATA_DIR/admin_token`, or generated now (and
    /// then printed once). Returns the token and whether it was just generated.
    pub fn admin_token(&self) -> std::io::Result<(String, bool)> {
        if let Some(t) = &self.admin_token {
            return Ok((t.expose_secret().to_string(), false));
        }
        let path = self.data_dir.join("admin_token");
        if let Ok(t) = std::fs::read_to_string(&path) {
            return Ok((t.trim().to_string(), false));
        }
        std::fs::create_dir_all(&self.data_dir)?;
        let token = crate::auth::random_secret("adm_");
        write_private(&path, &token)?;
        Ok((token, true))
    }

    /// The vault credentials are sealed with: its key configured, or kept in
    /// `$DATA_DIR/secret_key`, or generated now. Losing the key makes stored credentials
    /// unreadable (steps using them fail `connection_unreadable`), so the file is never replaced.
    pub fn vault(&self) -> anyhow::Result<Vault> {
        let key = match &self.secret_key {
            Some(k) => k.expose_secret().to_string(),
            None => {
                let path = self.data_dir.join("secret_key");
                match std::fs::read_to_string(&path) {
                    Ok(k) => k,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        std::fs::create_dir_all(&self.data_dir)?;
                        let key = Vault::generate_hex();
                        match write_private(&path, &key) {
                            Ok(()) => key,
                            // Another process created it first: use theirs.
                            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(&path)?,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        Ok(Vault::from_hex(&key)?)
    }

    /// The action modules' settings.
    pub fn actions(&self) -> anyhow::Result<ActionsConfig> {
        Ok(ActionsConfig {
            http: switchboard_integrations::HttpConfig { allow_private: self.http_allow_private, ..Default::default() },
            vault: std::sync::Arc::new(self.vault()?),
            api_bases: self.api_bases.clone(),
            public_url: self.public_url(),
            prices: self.engine().prices,
            store: None,
            oauth: self.oauth(),
        })
    }

    /// The OAuth clients with both an id and a secret set, endpoints overridden where set.
    pub fn oauth(&self) -> OAuthApps {
        let mut apps = OAuthApps::default();
        type Make = fn(String, String) -> OAuthApp;
        let pairs: [(_, _, _, _, Make); 2] = [
            (&self.google_client_id, &self.google_client_secret, &self.google_authorize_url, &self.google_token_url, |i, s| OAuthApp::google(i, s)),
            (&self.slack_client_id, &self.slack_client_secret, &self.slack_authorize_url, &self.slack_token_url, |i, s| OAuthApp::slack(i, s)),
        ];
        for (id, secret, authorize, token, make) in pairs {
            let (Some(id), Some(secret)) = (id, secret) else { continue };
            let mut app = make(id.clone(), secret.expose_secret().to_owned());
            if let Some(url) = authorize {
                app.authorize_url = url.clone();
            }
            if let Some(url) = token {
                app.token_url = url.clone();
            }
            apps.insert(app);
        }
        apps
    }
}

/// Writes a secret file readable by its owner only.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_from_the_file_override_only_the_units_they_name() {
        let dir = std::env::temp_dir().join(format!("sb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("switchboard.toml");
        std::fs::write(&file, "[prices.sms_segment]\ntokens_milli = 2000\ncost_micros = 30000\n").unwrap();
        let settings = Settings::load(Some(&file)).unwrap();
        let prices = settings.engine().prices;
        assert_eq!(prices.charge("sms_segment", 2).tokens_milli, 4000);
        assert_eq!(prices.charge("email", 1).tokens_milli, 100, "other units keep their defaults");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn oauth_clients_need_an_id_and_a_secret_and_take_endpoint_overrides() {
        let dir = std::env::temp_dir().join(format!("sb-config-oauth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("switchboard.toml");
        std::fs::write(
            &file,
            "google_client_id = \"g-id\"\ngoogle_client_secret = \"g-secret-hidden\"\ngoogle_token_url = \"http://127.0.0.1:9/token\"\n\
             google_api_base = \"http://127.0.0.1:9/\"\nslack_client_id = \"s-id\"\n",
        )
        .unwrap();
        let settings = Settings::load(Some(&file)).unwrap();
        let apps = settings.oauth();
        let google = apps.get("google").expect("google configured");
        assert_eq!((google.client_id.as_str(), google.token_url.as_str()), ("g-id", "http://127.0.0.1:9/token"));
        assert_eq!(google.authorize_url, "https://accounts.google.com/o/oauth2/v2/auth");
        assert!(apps.get("slack").is_none(), "an id without a secret configures nothing");
        assert_eq!(settings.api_bases.get("google"), "http://127.0.0.1:9");
        assert!(!format!("{settings:?} {apps:?}").contains("g-secret-hidden"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn secrets_load_but_never_print() {
        let dir = std::env::temp_dir().join(format!("sb-config-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("switchboard.toml");
        std::fs::write(&file, "admin_token = \"adm_very_secret\"\nstripe_secret_key = \"sk_test_hidden\"\ndatabase_url = \"postgres://u:pw-hidden@db/x\"\n")
            .unwrap();
        let settings = Settings::load(Some(&file)).unwrap();
        assert_eq!(settings.admin_token().unwrap().0, "adm_very_secret");
        assert_eq!(settings.database_url(), "postgres://u:pw-hidden@db/x");
        let shown = format!("{settings:?}");
        for secret in ["adm_very_secret", "sk_test_hidden", "pw-hidden"] {
            assert!(!shown.contains(secret), "{secret} is printed by Debug: {shown}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn each_provider_api_base_is_a_setting_named_after_it() {
        let dir = std::env::temp_dir().join(format!("sb-config-bases-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("switchboard.toml");
        std::fs::write(&file, "twilio_api_base = \"http://127.0.0.1:9/\"\n").unwrap();
        let settings = Settings::load(Some(&file)).unwrap();
        assert_eq!(settings.api_bases.get("twilio"), "http://127.0.0.1:9");
        assert_eq!(settings.api_bases.get("slack"), "https://slack.com", "others keep the vendor's");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
