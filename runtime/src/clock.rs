//! Time, injected. Every due time is an absolute instant computed from a [`Clock`], so tests can
//! move time instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch: the one time unit stored in the database.
pub type Millis = i64;

/// `at` plus `d`, saturating: a due time computed from a duration never wraps into the past (a
/// delay must never fire early), whatever the duration.
pub fn after(at: Millis, d: std::time::Duration) -> Millis {
    at.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now(&self) -> Millis;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A manual clock starting at `start`.
    pub fn new(start: Millis) -> Self {
        Self(Arc::new(AtomicI64::new(start)))
    }
    /// Moves the clock forward by `ms` milliseconds.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// The database's clock, followed from this process: a base clock plus the offset to the
/// database server's clock, measured at start and every [`RESYNC`].
///
/// Processes sharing a PostgreSQL write due times and compare them with "now" (claims, leases,
/// schedule ticks). With each process on its own clock, a process running ahead claims delays
/// early and takes over leases that have not expired. Following the database's clock gives every
/// process one time, to within half a round trip, without a clock read in every statement.
#[derive(Debug)]
pub struct DatabaseClock {
    base: Arc<dyn Clock>,
    offset: AtomicI64,
}

/// How often the offset to the database's clock is measured again.
pub const RESYNC: std::time::Duration = std::time::Duration::from_secs(60);

/// Offsets larger than this are logged: the machine's clock is off.
const WARN_OFFSET_MS: i64 = 500;

impl DatabaseClock {
    /// The clock processes on `store` should use: the database's on PostgreSQL (kept in sync
    /// by a background task), the wall clock on SQLite.
    pub async fn for_store(store: &crate::store::Store) -> crate::Result<Arc<dyn Clock>> {
        match store.dialect() {
            crate::store::Dialect::Sqlite => Ok(Arc::new(SystemClock)),
            crate::store::Dialect::Postgres => Ok(Self::follow(store.clone(), Arc::new(SystemClock)).await?),
        }
    }

    /// Follows the database's clock from `base`; measures once now, then every [`RESYNC`] for
    /// as long as the clock is in use.
    pub async fn follow(store: crate::store::Store, base: Arc<dyn Clock>) -> crate::Result<Arc<Self>> {
        let clock = Arc::new(Self { base, offset: AtomicI64::new(0) });
        clock.sync(&store).await?;
        let weak = Arc::downgrade(&clock);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESYNC).await;
                let Some(clock) = weak.upgrade() else { return };
                if let Err(e) = clock.sync(&store).await {
                    tracing::warn!(error = %e, "could not read the database's clock; keeping the last offset");
                }
            }
        });
        Ok(clock)
    }

    /// Measures the offset: the best of three reads (the shortest round trip), taking the
    /// database's time as read half-way through.
    async fn sync(&self, store: &crate::store::Store) -> crate::Result<()> {
        let mut best: Option<(i64, i64)> = None; // (round trip, offset)
        for _ in 0..3 {
            let before = self.base.now();
            let Some(db) = store.database_now().await? else { return Ok(()) };
            let after = self.base.now();
            let sample = (after - before, db - (before + after) / 2);
            best = Some(best.map_or(sample, |b| if sample.0 < b.0 { sample } else { b }));
        }
        let (round_trip, offset) = best.expect("three samples");
        let previous = self.offset.swap(offset, Ordering::Relaxed);
        if offset.abs() > WARN_OFFSET_MS && (previous - offset).abs() > WARN_OFFSET_MS / 2 {
            tracing::warn!(
                offset_ms = offset,
                round_trip_ms = round_trip,
                "this machine's clock differs from the database's; due times follow the database's clock"
            );
        }
        Ok(())
    }

    /// The current offset to the database's clock (ms; positive: the database is ahead).
    pub fn offset(&self) -> i64 {
        self.offset.load(Ordering::Relaxed)
    }
}

impl Clock for DatabaseClock {
    fn now(&self) -> Millis {
        self.base.now() + self.offset.load(Ordering::Relaxed)
    }
}

/// Formats stored milliseconds as RFC 3339 for the API.
pub fn to_rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
