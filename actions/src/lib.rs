//! # switchboard-actions
//!
//! The action modules: each implements the runtime's
//! [`Action`](switchboard_runtime::action::Action) trait in one file, with its
//! input schema, delivery semantics, usage units, sandbox rendering and tests against a local
//! fake of its vendor (`tests/vendors/`).
//!
//! ## Layout
//! - [`http_request`]: `http.request`, an outbound webhook (at most once).
//! - [`log`]: `log`, a message to the service's log (internal).
//! - [`sms_send`]: `sms.send` through Twilio's Messages API (at most once, segments metered).
//! - [`email_send`]: `email.send` over SMTP with lettre (at most once).
//! - [`slack_post_message`]: `slack.post_message`, a bot token's `chat.postMessage` or an
//!   incoming webhook (at most once).
//! - [`crm`]: `crm.create_task` and `crm.update_lead`, signed JSON to the host CRM (idempotent).
//! - [`voice`]: `voice.call`, a scripted call through Twilio that the step waits on (at most
//!   once, minutes metered when it ends), and the script engine Twilio's callbacks drive.
//! - [`registry`]: every module, ready for the runtime; its one line per module is all a new
//!   action adds outside its own file (and its provider's line in
//!   `switchboard_integrations::providers`, for a new vendor).
//! - [`reference`]: the action reference of `docs/actions.md`, generated from the modules' types.

pub mod crm;
pub mod email_send;
pub mod http_request;
pub mod log;
pub mod reference;
pub mod slack_post_message;
pub mod sms_send;
pub mod voice;

use std::sync::Arc;

use switchboard_integrations::HttpConfig;
use switchboard_integrations::connections::Vault;
use switchboard_integrations::providers::{self, ApiBases, Provider};
use switchboard_runtime::action::{ActionRegistry, RegistryError};
use switchboard_runtime::metering::PriceList;
use switchboard_runtime::store::Store;

pub use crm::{CrmCreateTask, CrmFindLeads, CrmUpdateLead};
pub use email_send::EmailSend;
pub use http_request::HttpRequest;
pub use log::Log;
pub use slack_post_message::SlackPostMessage;
pub use sms_send::SmsSend;
pub use voice::VoiceCall;

/// What the modules need from the operator's configuration.
#[derive(Debug, Clone)]
pub struct ActionsConfig {
    /// The outbound HTTP client's settings (address guard).
    pub http: HttpConfig,
    /// Opens connections' credentials.
    pub vault: Arc<Vault>,
    /// Each provider's API base URL (`SWITCHBOARD_<PROVIDER>_API_BASE`), defaulting to the
    /// vendor's production one.
    pub api_bases: ApiBases,
    /// This service's public base URL (`SWITCHBOARD_PUBLIC_URL`), for vendor callbacks.
    pub public_url: String,
    /// The price table the engine bills with: every unit a module declares must be in it.
    pub prices: PriceList,
    /// The store, where calls keep their place; without one, `voice.call` can be checked and
    /// simulated but not placed.
    pub store: Option<Store>,
}

/// Why the modules could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The outbound HTTP client could not be built (e.g. no rustls crypto provider installed).
    #[error(transparent)]
    Client(#[from] switchboard_integrations::Error),
    /// A module is inconsistent with the configuration (e.g. a unit without a price).
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl ActionsConfig {
    /// Production defaults with `vault`: vendors' real base URLs, private addresses refused.
    pub fn new(vault: Arc<Vault>) -> Self {
        Self {
            http: HttpConfig::default(),
            vault,
            api_bases: ApiBases::default(),
            public_url: "http://127.0.0.1:8080".into(),
            prices: PriceList::default(),
            store: None,
        }
    }
}

/// The registry of every action module.
///
/// Fails if the HTTP client cannot be built (e.g. no rustls crypto provider installed) or a
/// module bills in a unit `config.prices` does not price.
pub fn registry(config: &ActionsConfig) -> Result<ActionRegistry> {
    let client = switchboard_integrations::client(&config.http)?;
    let mut registry = ActionRegistry::new();
    let vault = &config.vault;
    let base = |provider: &str| config.api_bases.get(provider).to_owned();
    let calls = calls(config)?;
    registry
        .register(HttpRequest::new(client.clone()))
        .register(Log)
        .register(SmsSend::new(client.clone(), vault.clone(), base(providers::Twilio::NAME), config.public_url.clone()))
        .register(SlackPostMessage::new(client.clone(), vault.clone(), base(providers::Slack::NAME)))
        .register(EmailSend::new(vault.clone()).allow_private(config.http.allow_private))
        .register(CrmCreateTask::new(client.clone(), vault.clone()))
        .register(CrmUpdateLead::new(client.clone(), vault.clone()))
        .register(CrmFindLeads::new(client.clone(), vault.clone()))
        .register(VoiceCall::new(client, vault.clone(), base(providers::Twilio::NAME), config.public_url.clone(), calls.clone()))
        .register(voice::VoiceAnswer::new(config.public_url.clone(), calls));
    registry.check_prices(&config.prices)?;
    Ok(registry)
}

/// What answers Twilio's callbacks of calls (the callback routes hold one), over
/// `config.store`; `None` without a store.
pub fn calls(config: &ActionsConfig) -> Result<Option<Arc<voice::Calls>>> {
    let Some(store) = &config.store else { return Ok(None) };
    let client = switchboard_integrations::client(&config.http)?;
    let api_base = config.api_bases.get(providers::Twilio::NAME);
    Ok(Some(Arc::new(voice::Calls::new(store.clone(), config.vault.clone(), &config.public_url, api_base, client))))
}

#[cfg(test)]
mod tests {
    use switchboard_runtime::action::Action;

    use super::*;

    #[test]
    fn registry_holds_every_module() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let vault = Arc::new(Vault::from_hex(&Vault::generate_hex()).unwrap());
        let registry = registry(&ActionsConfig::new(vault)).unwrap();
        assert_eq!(
            registry.kinds().collect::<Vec<_>>(),
            [
                CrmCreateTask::KIND,
                CrmFindLeads::KIND,
                CrmUpdateLead::KIND,
                EmailSend::KIND,
                HttpRequest::KIND,
                Log::KIND,
                SlackPostMessage::KIND,
                SmsSend::KIND,
                voice::VoiceAnswer::KIND,
                VoiceCall::KIND
            ]
        );
    }

    #[test]
    fn a_unit_without_a_price_fails_the_registry() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let vault = Arc::new(Vault::from_hex(&Vault::generate_hex()).unwrap());
        let mut config = ActionsConfig::new(vault);
        config.prices.0.remove("sms_segment");
        let err = registry(&config).unwrap_err();
        assert_eq!(
            err.to_string(),
            "action sms.send declares the unit sms_segment, which has no price: add it to the price table \
             (runtime/src/metering.rs, docs/metering.md)"
        );
    }
}
