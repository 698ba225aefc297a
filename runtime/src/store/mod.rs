//! The store: the system of record for accounts, workflows, events, runs, steps, due times and
//! the usage ledger. Nothing else holds a delay, a retry or a wait.
//!
//! One `Store` speaks two dialects through `sqlx::Any`: the schema keeps to types both databases
//! share (BIGINT epoch milliseconds, TEXT ids and JSON, 0/1 flags), so every DML statement is
//! written once, in the module that owns it. What differs — DDL (`migrations/{sqlite,postgres}`),
//! connection set-up and the claim query — lives in [`dialect`]. The same conformance suite
//! (`tests/`) runs against both.
//!
//! Behind the `bench` feature, `bench` adds the benchmark's own queries (`BenchProbe`, the ledger
//! fill); only the `switchboard-bench` crate enables it.

#[macro_use]
mod batch_rows;
mod accounts;
mod analytics;
#[cfg(feature = "bench")]
mod bench;
mod billing;
mod calls;
mod complete;
mod connections;
mod contact;
pub mod dialect;
mod fan_out;
mod hours;
mod numbers;
mod outbox;
mod postgres;
mod quota;
mod records;
mod runs;
mod schedules;
mod usage;
mod workflows;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

pub use analytics::{
    CallCursor, CallFilter, CallRecord, DayCounts, LONGEST_CALL_MS, NodeVisits, RunCounts, StepCounts, TOP_WORKFLOWS, WorkflowCounts, WorkflowRuns,
    local_day_window,
};
#[cfg(feature = "bench")]
pub use bench::{BenchProbe, CopiedRows};
pub use calls::{CallEnd, CallRow};
pub use connections::ConnectionLock;
pub use contact::OptOutRow;
pub use dialect::Dialect;
pub use hours::{BusinessHoursRow, HoursReplaced};
pub use numbers::NumberRow;
pub use records::*;
pub use runs::Dispatch;
pub use schedules::DueSchedule;
pub use usage::{AccountUsage, DayRange, UsageGroup, UsageTotal};

use crate::Result;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Connection settings of a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://path` or `postgres://…`.
    pub url: String,
    /// Pool size for PostgreSQL and for SQLite readers.
    pub max_connections: u32,
}

/// The store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    /// Serialises writes on SQLite (one writer connection); the shared pool on PostgreSQL.
    writer: AnyPool,
    /// Reads.
    reader: AnyPool,
    /// PostgreSQL only: the same database through sqlx's own PostgreSQL driver, for the group
    /// commit statements ([`postgres`], [`complete`]), which send their rows as typed arrays in
    /// the binary protocol (`sqlx::Any` has no array types). Its connections open on demand:
    /// one per group-commit writer.
    batches: Option<PgPool>,
    dialect: Dialect,
}

/// Statements slower than this are logged as warnings (both pools).
const SLOW_STATEMENT: Duration = Duration::from_secs(1);

/// How long a PostgreSQL statement waits for a connection before the database counts as
/// unavailable.
pub const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(750);

impl Store {
    /// Connects (creating a SQLite file and its folder if needed). Does not migrate.
    pub async fn connect(config: &StoreConfig) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(&config.url)?;
        if let Dialect::Sqlite = dialect {
            dialect::ensure_sqlite_dir(&config.url)?;
        }
        let options = AnyConnectOptions::from_str(&dialect::normalize_url(&config.url))?.log_slow_statements(tracing::log::LevelFilter::Warn, SLOW_STATEMENT);
        // PostgreSQL can go away: a request then gets no connection within the acquire timeout
        // and answers 503 promptly instead of hanging (sqlx retries a refused connect until
        // the deadline). SQLite is a file in this process and only waits for its one writer.
        let acquire_timeout = match dialect {
            Dialect::Sqlite => Duration::from_secs(30),
            Dialect::Postgres => POSTGRES_ACQUIRE_TIMEOUT,
        };
        let pool = |max: u32| {
            AnyPoolOptions::new().max_connections(max).acquire_timeout(acquire_timeout).after_connect(move |conn, _| {
                Box::pin(async move {
                    for pragma in dialect.session_setup() {
                        conn.execute(*pragma).await?;
                    }
                    Ok(())
                })
            })
        };
        let (writer, reader, batches) = match dialect {
            Dialect::Sqlite => {
                let writer = pool(1).connect_with(options.clone()).await?;
                let reader = pool(config.max_connections.max(2)).connect_with(options).await?;
                (writer, reader, None)
            }
            Dialect::Postgres => {
                let p = pool(config.max_connections).connect_with(options).await?;
                let pg_options = PgConnectOptions::from_str(&config.url)?.application_name("switchboard");
                let batches = PgPoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(acquire_timeout)
                    .connect_lazy_with(pg_options.log_slow_statements(tracing::log::LevelFilter::Warn, SLOW_STATEMENT));
                (p.clone(), p, Some(batches))
            }
        };
        Ok(Self { writer, reader, batches, dialect })
    }

    /// Applies pending migrations of this dialect.
    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.writer).await?;
        Ok(())
    }

    /// The dialect spoken.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The database server's clock (ms since the Unix epoch) on PostgreSQL, which many processes
    /// share; `None` on SQLite, whose only process's clock is the database's.
    pub async fn database_now(&self) -> Result<Option<i64>> {
        match self.dialect {
            Dialect::Sqlite => Ok(None),
            Dialect::Postgres => {
                let sql = "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
                Ok(Some(sqlx::query_scalar(sql).fetch_one(&self.reader).await?))
            }
        }
    }

    /// True when the database answers within a second.
    pub async fn ping(&self) -> bool {
        let ping = sqlx::query("SELECT 1").execute(&self.reader);
        matches!(tokio::time::timeout(Duration::from_secs(1), ping).await, Ok(Ok(_)))
    }

    /// Closes the pools.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
        if let Some(batches) = &self.batches {
            batches.close().await;
        }
    }

    /// The PostgreSQL pool of the group-commit statements (PostgreSQL only).
    fn batches(&self) -> &PgPool {
        self.batches.as_ref().expect("group-commit statements run on PostgreSQL only")
    }
}
