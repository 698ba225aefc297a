//! Connections: the credentials a step sends with, and the vault that seals them at rest.
//!
//! Credentials are checked against their provider's shape when a connection is created, sealed
//! with AES-256-GCM (the `aes-gcm` crate; a random 96-bit nonce per seal, the connection's id as
//! additional data so a sealed blob moved to another row does not open) and stored sealed. Only
//! the action module that sends opens them, into [`secrecy`] types that never print.
//!
//! Sealed layout: `1` (format version) ‖ nonce (12 bytes) ‖ ciphertext with its tag.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use switchboard_runtime::action::{ActionError, ConnectionRef};

use crate::{Error, Result};

/// The format version byte of sealed credentials.
const SEALED_V1: u8 = 1;
/// AES-GCM's nonce length.
const NONCE_LEN: usize = 12;

/// Seals and opens credentials with the operator's key (`SWITCHBOARD_SECRET_KEY`).
#[derive(Clone)]
pub struct Vault {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

impl Vault {
    /// A vault over a 256-bit key.
    pub fn new(key: &[u8; 32]) -> Self {
        Self { cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)) }
    }

    /// A vault over a key written as 64 hex characters.
    pub fn from_hex(key: &str) -> Result<Self> {
        let bytes = hex::decode(key.trim()).map_err(|e| Error::Config(format!("the secret key is not hex: {e}")))?;
        let key: [u8; 32] =
            bytes.try_into().map_err(|b: Vec<u8>| Error::Config(format!("the secret key must be 32 bytes (64 hex characters), not {}", b.len())))?;
        Ok(Self::new(&key))
    }

    /// A new random key, as 64 hex characters (for the embedded default's generated key file).
    pub fn generate_hex() -> String {
        hex::encode(Aes256Gcm::generate_key(OsRng))
    }

    /// Seals `credentials` for the connection `id`.
    pub fn seal(&self, id: &str, credentials: &Value) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let plaintext = credentials.to_string();
        let ciphertext = self
            .cipher
            .encrypt(&nonce, Payload { msg: plaintext.as_bytes(), aad: id.as_bytes() })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(SEALED_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Opens the credentials of connection `id`.
    pub fn open_value(&self, id: &str, sealed: &[u8]) -> Result<Value> {
        let bad = || Error::Sealed("the stored credentials do not open with this secret key (was SWITCHBOARD_SECRET_KEY changed?)".into());
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEALED_V1 {
            return Err(bad());
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        let plaintext = self.cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: id.as_bytes() }).map_err(|_| bad())?;
        serde_json::from_slice(&plaintext).map_err(|_| bad())
    }

    /// Opens a step's connection into its provider's credentials type. Failures are permanent
    /// step failures (a wrong provider, or a key that does not open them) with a message that
    /// names the connection and never its contents.
    pub fn open<C: DeserializeOwned>(&self, connection: &ConnectionRef) -> std::result::Result<C, ActionError> {
        let value = self
            .open_value(&connection.id, &connection.sealed)
            .map_err(|e| ActionError::permanent("connection_unreadable", format!("connection '{}': {e}", connection.name)))?;
        serde_json::from_value(value).map_err(|_| {
            ActionError::permanent("connection_invalid", format!("connection '{}' does not hold {} credentials", connection.name, connection.provider))
        })
    }
}

/// Twilio: account SID and auth token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioCredentials {
    /// `AC…`.
    pub account_sid: String,
    /// The auth token (basic-auth password, and the key of Twilio's callback signatures).
    pub auth_token: SecretString,
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain text (local servers only).
    None,
    /// STARTTLS after connecting (usually port 587).
    Starttls,
    /// TLS from the first byte (usually port 465).
    Implicit,
}

/// SMTP: server, TLS mode and optional login.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpCredentials {
    /// The server's host name.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The TLS mode.
    pub tls: SmtpTls,
    /// Login name, if the server wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password, with `username`.
    #[serde(default)]
    pub password: Option<SecretString>,
}

/// Slack: a bot token (`chat.postMessage`) or an incoming-webhook URL.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SlackCredentials {
    /// `xoxb-…`.
    Bot {
        /// The bot token.
        bot_token: SecretString,
    },
    /// `https://hooks.slack.com/services/…` (the URL is the secret).
    Webhook {
        /// The incoming-webhook URL.
        webhook_url: SecretString,
    },
}

/// Stripe: a secret key, and the signing secret of the webhook endpoint that sends this
/// account's events to `/callbacks/stripe/{account}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeCredentials {
    /// `sk_…`.
    pub secret_key: SecretString,
    /// `whsec_…`: checks `Stripe-Signature` on webhook deliveries.
    #[serde(default)]
    pub webhook_secret: Option<SecretString>,
}

/// Google: OAuth tokens, stored by `GET /oauth/callback` and refreshed by
/// [`crate::oauth::TokenKeeper`].
#[derive(Debug, Clone, Deserialize)]
pub struct GoogleCredentials {
    /// The bearer token of Calendar calls.
    pub access_token: SecretString,
    /// Exchanged for a new access token before this one expires.
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    /// When `access_token` expires (ms); never, when absent.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// The host CRM: its API base URL and the key requests are signed with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrmCredentials {
    /// e.g. `https://crm.example.com/api`.
    pub base_url: String,
    /// The shared key (HMAC key of the request signature).
    pub api_key: SecretString,
}

/// Checks `credentials` against `provider`'s shape and rules (see [`crate::providers`]).
/// Problems are `(path, message)` with paths under `credentials`, and never quote a credential's
/// value.
pub fn check(provider: &str, credentials: &Value) -> std::result::Result<(), Vec<(String, String)>> {
    match crate::providers::provider(provider) {
        Some(spec) => spec.check(credentials),
        None => {
            let names: Vec<&str> = crate::providers::names().collect();
            Err(vec![("provider".into(), format!("unknown provider '{provider}'; one of {}", names.join(", ")))])
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;

    fn vault() -> Vault {
        Vault::from_hex(&Vault::generate_hex()).unwrap()
    }

    #[test]
    fn sealed_credentials_open_only_for_their_connection_and_key() {
        let v = vault();
        let creds = json!({"account_sid": "AC00000000000000000000000000000000", "auth_token": "tok-secret"});
        let sealed = v.seal("con_1", &creds);
        assert!(!String::from_utf8_lossy(&sealed).contains("tok-secret"), "sealed bytes hold no plaintext");
        assert_eq!(v.open_value("con_1", &sealed).unwrap(), creds);
        assert!(v.open_value("con_2", &sealed).is_err(), "another row's id does not open it");
        assert!(vault().open_value("con_1", &sealed).is_err(), "another key does not open it");
        assert_ne!(v.seal("con_1", &creds), sealed, "a fresh nonce each time");
    }

    #[test]
    fn opened_credentials_do_not_print_secrets() {
        let v = vault();
        let conn = ConnectionRef {
            id: "con_1".into(),
            name: "main".into(),
            provider: "twilio".into(),
            sandbox: false,
            settings: json!({}),
            sealed: v.seal("con_1", &json!({"account_sid": "AC00000000000000000000000000000000", "auth_token": "tok-secret"})),
        };
        let c: TwilioCredentials = v.open(&conn).unwrap();
        assert_eq!(c.auth_token.expose_secret(), "tok-secret");
        assert!(!format!("{c:?} {conn:?}").contains("tok-secret"));
        let wrong = v.open::<SmtpCredentials>(&conn).unwrap_err();
        assert_eq!(wrong.code, "connection_invalid");
    }

    #[test]
    fn credentials_are_checked_per_provider_without_quoting_them() {
        assert!(check("twilio", &json!({"account_sid": "AC00000000000000000000000000000000", "auth_token": "x"})).is_ok());
        let p = check("twilio", &json!({"account_sid": "nope", "auth_token": "x"})).unwrap_err();
        assert_eq!(p[0].0, "credentials.account_sid");
        let p = check("twilio", &json!({"account_sid": 5, "auth_token": "hunter2"})).unwrap_err();
        assert!(!p[0].1.contains("hunter2"));
        assert!(check("smtp", &json!({"host": "localhost", "port": 2525, "tls": "none"})).is_ok());
        assert!(check("smtp", &json!({"host": "localhost", "port": 2525, "tls": "sometimes"})).is_err());
        assert!(check("slack", &json!({"bot_token": "xoxb-1"})).is_ok());
        assert!(check("slack", &json!({"webhook_url": "https://hooks.slack.com/services/T/B/x"})).is_ok());
        assert!(check("slack", &json!({"webhook_url": "not a url"})).is_err());
        assert!(check("crm", &json!({"base_url": "https://crm.example.com/api", "api_key": "k"})).is_ok());
        assert!(check("stripe", &json!({"secret_key": "sk_test_1"})).is_ok());
        assert!(check("stripe", &json!({"secret_key": "sk_test_1", "webhook_secret": "whsec_1"})).is_ok());
        let p = check("stripe", &json!({"secret_key": "sk_test_1", "webhook_secret": "hunter2"})).unwrap_err();
        assert_eq!(p[0].0, "credentials.webhook_secret");
        assert!(!p[0].1.contains("hunter2"));
        assert!(check("google", &json!({"access_token": "ya29.x", "refresh_token": "1//r", "expires_at": 1})).is_ok());
        assert_eq!(check("fax", &json!({})).unwrap_err()[0].0, "provider");
    }
}
