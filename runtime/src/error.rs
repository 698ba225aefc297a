//! The runtime's error type.

/// Errors raised by the runtime (store, engine, definitions).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed or refused a statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored JSON document could not be read back.
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    /// The thing asked for does not exist (or belongs to another account).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with the current state (e.g. a disabled workflow).
    #[error("{0}")]
    Conflict(String),
    /// The workflow definition is invalid.
    #[error("invalid workflow definition")]
    Invalid(Vec<crate::definition::Problem>),
    /// A group-committed write failed (the message of the shared failure).
    #[error("batched write failed: {0}")]
    Batch(String),
    /// A configuration value is unusable.
    #[error("configuration error: {0}")]
    Config(String),
}

/// The runtime's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
