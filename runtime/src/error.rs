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
    /// The database cannot be reached (a group-committed write that failed for that reason).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A configuration value is unusable.
    #[error("configuration error: {0}")]
    Config(String),
}

impl Error {
    /// Whether the database could not be reached — no connection within the pool's acquire
    /// timeout, a broken connection, a server shutting down — rather than refusing a statement.
    /// Callers answer these "try again shortly" instead of "internal error".
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Database(e) => match e {
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
                // PostgreSQL's class 08 (connection exception) and 57P0x (shutting down, starting
                // up, crash recovery).
                sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
                _ => false,
            },
            _ => false,
        }
    }
}

/// The runtime's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
