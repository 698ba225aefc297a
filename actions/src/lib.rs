//! # switchboard-actions
//!
//! The action modules: each implements the runtime's
//! [`Action`](switchboard_runtime::action::Action) trait in one file, with its
//! input schema, delivery semantics, usage units and tests against a local fake of its vendor.
//!
//! ## Layout
//! - [`http_request`]: `http.request`, an outbound webhook (at most once).
//! - [`log`]: `log`, a message to the service's log (idempotent).
//! - [`registry`]: every module, ready for the runtime.

pub mod http_request;
pub mod log;

use switchboard_integrations::HttpConfig;
use switchboard_runtime::action::ActionRegistry;

pub use http_request::HttpRequest;
pub use log::Log;

/// The registry of every action module, sending HTTP through a client built from `http`.
///
/// Fails only if the HTTP client cannot be built (e.g. no rustls crypto provider installed).
pub fn registry(http: &HttpConfig) -> switchboard_integrations::Result<ActionRegistry> {
    let client = switchboard_integrations::client(http)?;
    let mut registry = ActionRegistry::new();
    registry.register(HttpRequest::new(client)).register(Log);
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use switchboard_runtime::action::Action;

    use super::*;

    #[test]
    fn registry_holds_every_module() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let registry = registry(&HttpConfig::default()).unwrap();
        assert_eq!(registry.kinds().collect::<Vec<_>>(), [HttpRequest::KIND, Log::KIND]);
    }
}
