//! What differs between SQLite and PostgreSQL: URLs, session settings, and the claim query.

use crate::{Error, Result};

/// The SQL dialect of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded default.
    Sqlite,
    /// The system of record at scale.
    Postgres,
}

impl Dialect {
    /// The dialect of a database URL.
    pub fn from_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Dialect::Postgres)
        } else {
            Err(Error::Config(format!("unsupported database URL '{url}': use sqlite://… or postgres://…")))
        }
    }

    /// Statements run on every new connection.
    pub(crate) fn session_setup(self) -> &'static [&'static str] {
        match self {
            // WAL with synchronous=NORMAL: a committed transaction survives a process crash
            // (SIGKILL); the last transactions may be lost on power loss. busy_timeout covers
            // readers racing the one writer connection during checkpoints.
            Dialect::Sqlite => &["PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL", "PRAGMA busy_timeout = 10000", "PRAGMA foreign_keys = ON"],
            Dialect::Postgres => &["SET application_name = 'switchboard'"],
        }
    }

    /// Claims up to `$3` due queue rows: moves their due time to the lease's expiry (`$2`) and
    /// stamps them with the claim's token (`$1`). `$4` is now. A crashed worker's rows are due
    /// again when their lease expires, so no separate reaper is needed.
    pub(crate) fn claim_sql(self) -> &'static str {
        match self {
            // SQLite has one writer at a time: the UPDATE is atomic without row locks.
            Dialect::Sqlite => {
                "UPDATE run_queue SET due_at = $2, lease_token = $1 \
                 WHERE run_id IN (SELECT run_id FROM run_queue WHERE due_at <= $4 ORDER BY due_at LIMIT $3) \
                 RETURNING run_id, step_index, step_seq, attempt, dispatching, reserved_milli, reserved_period"
            }
            // Many processes: SKIP LOCKED hands each row to exactly one claimer.
            Dialect::Postgres => {
                "UPDATE run_queue SET due_at = $2, lease_token = $1 \
                 WHERE run_id IN (SELECT run_id FROM run_queue WHERE due_at <= $4 ORDER BY due_at LIMIT $3 \
                 FOR UPDATE SKIP LOCKED) \
                 RETURNING run_id, step_index, step_seq, attempt, dispatching, reserved_milli, reserved_period"
            }
        }
    }
}

/// sqlx wants `sqlite://path?mode=rwc` to create the file; accept `sqlite://path` as well.
pub(crate) fn normalize_url(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_string()
    }
}

/// Creates the folder of a SQLite file.
pub(crate) fn ensure_sqlite_dir(url: &str) -> Result<()> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| Error::Config(format!("cannot create {}: {e}", parent.display())))?;
    }
    Ok(())
}

/// Creates a fresh PostgreSQL database on the server of `server_url` and returns its URL
/// (benchmarks and tests use one database each).
pub async fn create_postgres_database(server_url: &str, name: &str) -> Result<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut conn).await?;
    conn.close().await?;
    let (base, query) = match server_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (server_url, String::new()),
    };
    let prefix = match base.rfind('/') {
        Some(i) if i > base.find("://").map(|p| p + 2).unwrap_or(0) => &base[..i],
        _ => base,
    };
    Ok(format!("{prefix}/{name}{query}"))
}

/// Drops a database made by [`create_postgres_database`].
pub async fn drop_postgres_database(server_url: &str, name: &str) -> Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}
