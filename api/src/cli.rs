//! The `switchboard` commands. `main.rs` only calls [`main`], so tests can start the very same
//! code as a separate process.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use switchboard_integrations::providers;
use switchboard_runtime::clock::DatabaseClock;
use switchboard_runtime::engine::{Engine, worker};
use switchboard_runtime::store::Store;
use tokio::net::TcpListener;

use crate::app::{AppState, router};
use crate::config::Settings;

/// Switchboard: durable workflow automation.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
pub struct Cli {
    /// Settings file (default: ./switchboard.toml if it exists).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log lines as text (for people) or JSON (one object a line, with the run and step ids
    /// of the spans as fields, for log pipelines).
    #[arg(long, global = true, env = "SWITCHBOARD_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-11-21T10:00:00Z  INFO run{run_id=…}:step{step_id=… seq=2 attempt=1}: message`.
    Text,
    /// One JSON object a line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the workers in one process (migrates first).
    Serve,
    /// Run workers only.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
}

/// The binary's entry point.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into());
    if cli.log_format == LogFormat::Json {
        tracing_subscriber::fmt().json().with_current_span(false).with_span_list(true).with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref()).context("loading settings")?;
    // Install the metrics recorder before anything is counted.
    crate::routes::health::prometheus();
    match cli.command {
        Command::Migrate => {
            let store = connect(&settings).await?;
            store.close().await;
            println!("migrations applied to {}", redact(&settings.database_url()));
            Ok(())
        }
        Command::Worker => {
            let engine = engine(&settings).await?;
            tracing::info!(database = %redact(&settings.database_url()), "worker started");
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let sync = billing_sync(&settings, &engine, stopped(stop_rx.clone()))?;
            let signal = async move {
                shutdown_signal().await;
                stop_tx.send_replace(true);
            };
            let (worked, (), ()) = tokio::join!(worker::run(engine, stopped(stop_rx)), sync, signal);
            worked.map_err(|e| anyhow::anyhow!(e))
        }
        Command::Serve => serve(settings).await,
    }
}

/// How long start-up waits for the database (a PostgreSQL still starting, say).
const CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

async fn connect(settings: &Settings) -> anyhow::Result<Store> {
    let url = settings.database_url();
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let store = loop {
        match Store::connect(&settings.store()).await {
            Ok(store) => break store,
            Err(e) if e.is_unavailable() && tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "database unreachable; trying again");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {}", redact(&url))),
        }
    };
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// Connects, migrates and builds the engine with every action module.
pub async fn engine(settings: &Settings) -> anyhow::Result<Arc<Engine>> {
    let store = connect(settings).await?;
    let mut config = settings.actions().context("reading or creating the secret key")?;
    config.store = Some(store.clone());
    let actions = switchboard_actions::registry(&config).context("building action modules")?;
    // Processes sharing PostgreSQL follow its clock, so they agree on what is due.
    let clock = DatabaseClock::for_store(&store).await.context("reading the database's clock")?;
    let mut engine = Engine::new(store, actions, clock, settings.engine());
    if let Some(url) = settings.redis_url.as_ref().map(|u| u.expose_secret()) {
        let limiter = switchboard_integrations::rate_limit::RedisRateLimiter::new(url).with_context(|| format!("SWITCHBOARD_REDIS_URL {}", redact(url)))?;
        engine = engine.with_rate_limiter(Arc::new(limiter));
        let events = switchboard_integrations::live_events::RedisEventBus::start(url).with_context(|| format!("SWITCHBOARD_REDIS_URL {}", redact(url)))?;
        engine = engine.with_events(Arc::new(events));
    }
    Ok(Arc::new(engine))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let engine = engine(&settings).await?;
    let (admin_token, generated) = settings.admin_token().context("reading or creating the admin token")?;
    if generated {
        println!("Generated the admin token (kept in {}):\n  {admin_token}", settings.data_dir.join("admin_token").display());
    }
    let vault = Arc::new(settings.vault().context("reading or creating the secret key")?);
    let sealed = crate::routes::hooks::seal_stored_secrets(engine.store(), &vault).await.context("sealing stored webhook secrets")?;
    if sealed > 0 {
        tracing::info!(versions = sealed, "sealed webhook secrets stored as text");
    }
    let mut state = AppState::new(engine.clone(), vault, &admin_token, &settings.public_url()).with_webhook_limit(settings.webhook_rate_limit);
    let mut actions = settings.actions().context("reading or creating the secret key")?;
    actions.store = Some(engine.store().clone());
    if let Some(calls) = switchboard_actions::calls(&actions).context("building the call handler")? {
        state = state.with_calls(calls);
    }
    state = state.with_oauth(actions.oauth.clone(), &actions.http).context("building the OAuth client")?;
    let listener = TcpListener::bind(&settings.listen).await.with_context(|| format!("binding {}", settings.listen))?;
    tracing::info!(listen = %settings.listen, database = %redact(&settings.database_url()), "switchboard serving");
    println!("Switchboard listening on http://{}", listener.local_addr()?);
    // One signal stops all: the server stops accepting, live event streams end, the workers
    // finish in-flight steps.
    let stop_tx = state.shutdown.clone();
    let stop_rx = stop_tx.subscribe();
    let sync = billing_sync(&settings, &engine, stopped(stop_rx.clone()))?;
    let workers = worker::run(engine, stopped(stop_rx.clone()));
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(stopped(stop_rx)).into_future();
    let signal = async move {
        shutdown_signal().await;
        stop_tx.send_replace(true);
    };
    let (served, worked, (), ()) = tokio::join!(server, workers, sync, signal);
    if let Err(e) = worked {
        tracing::error!(error = %e, "workers stopped with an error");
    }
    served.context("HTTP server")
}

/// Resolves when the stop signal is sent.
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.changed().await;
}

/// The Stripe meter-event sync when a Stripe key is configured, else nothing.
fn billing_sync(
    settings: &Settings,
    engine: &Arc<Engine>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<futures::future::BoxFuture<'static, ()>> {
    use futures::FutureExt;
    let Some(key) = settings.stripe_secret_key.as_ref().map(|k| k.expose_secret().to_string()) else {
        return Ok(futures::future::ready(()).boxed());
    };
    // The Stripe URL is the operator's, not a workflow author's: no private-address guard.
    let http = switchboard_integrations::client(&switchboard_integrations::HttpConfig { allow_private: true, ..Default::default() })?;
    let config = switchboard_integrations::stripe::StripeConfig {
        api_base: settings.api_bases.get(<providers::Stripe as providers::Provider>::NAME).to_owned(),
        ..switchboard_integrations::stripe::StripeConfig::new(key)
    };
    let stripe = switchboard_integrations::stripe::StripeClient::new(http, config);
    let cfg = crate::billing_sync::SyncConfig {
        event_name: settings.stripe_meter_event_name.clone(),
        interval: std::time::Duration::from_secs(settings.stripe_sync_interval_secs.max(1)),
        ..Default::default()
    };
    let store = engine.store().clone();
    Ok(crate::billing_sync::run(store, stripe, cfg, engine.clock().clone(), shutdown).boxed())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing in-flight steps");
}

/// A database URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((creds, host)) if creds.contains("://") => {
            let (scheme, user) = creds.split_once("://").unwrap_or((creds, ""));
            let user = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}
