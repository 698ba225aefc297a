//! Shared helpers: a step context, a vault and sealed connections.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchboard_integrations::connections::Vault;
use switchboard_runtime::action::{ActionContext, ConnectionRef};

/// Installs the TLS provider (idempotent).
pub(crate) fn tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A fresh vault with a random key.
pub(crate) fn vault() -> Arc<Vault> {
    Arc::new(Vault::from_hex(&Vault::generate_hex()).unwrap())
}

/// A connection of `provider` holding `credentials`, sealed with `vault`.
pub(crate) fn connection(vault: &Vault, provider: &str, sandbox: bool, credentials: Value) -> Arc<ConnectionRef> {
    let id = format!("con_{}", uuid_like());
    Arc::new(ConnectionRef {
        sealed: vault.seal(&id, &credentials),
        id,
        name: format!("{provider}-main"),
        provider: provider.into(),
        sandbox,
        settings: serde_json::json!({}),
    })
}

fn uuid_like() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A step context with `connection`.
pub(crate) fn ctx(timeout: Duration, connection: Option<Arc<ConnectionRef>>) -> ActionContext {
    ActionContext {
        account_id: "acc_1".into(),
        run_id: "run_1".into(),
        step_id: "notify".into(),
        step_seq: 3,
        now: 0,
        attempt: 1,
        idempotency_key: "run_1:3".into(),
        timeout,
        connection,
        scope: None,
    }
}
