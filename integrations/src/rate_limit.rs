//! Rate limits shared by every process through Redis (`SWITCHBOARD_REDIS_URL`).
//!
//! The same slot reservation as the runtime's in-process limiter
//! ([`switchboard_runtime::ratelimit`]), done by one Lua script so that reserving is atomic
//! across processes: a key holds the first free slot, a hash holds the slots reserved by
//! holders still waiting for them. Both expire on their own, so Redis keeps nothing that
//! matters beyond a few minutes.
//!
//! Redis holds only what may be lost: when it cannot be reached, each process falls back to its
//! own in-process limiter (a warning is logged once per outage) and goes back to Redis when it
//! answers again. During an outage, limits hold per process rather than across processes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use switchboard_runtime::action::RateLimit;
use switchboard_runtime::ratelimit::{LocalRateLimiter, RateLimiter};
use tokio::sync::Mutex;

/// The longest a slot request waits for Redis before falling back.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a process without a Redis connection tries to connect again.
const RECONNECT_EVERY: Duration = Duration::from_secs(5);

/// KEYS[1]: the key's first free slot; KEYS[2]: reserved slots by holder.
/// ARGV: now (ms), interval (ms), holder. Returns the holder's slot (ms).
const RESERVE: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local held = redis.call('HGET', KEYS[2], ARGV[3])
if held then
  held = tonumber(held)
  if held <= now then redis.call('HDEL', KEYS[2], ARGV[3]) end
  return held
end
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
redis.call('SET', KEYS[1], slot + interval, 'PX', slot + interval - now + 60000)
if slot > now then
  redis.call('HSET', KEYS[2], ARGV[3], slot)
  redis.call('PEXPIRE', KEYS[2], slot - now + 600000)
end
return slot
";

/// A [`RateLimiter`] in Redis, with an in-process fallback.
pub struct RedisRateLimiter {
    client: redis::Client,
    connection: Mutex<(Option<ConnectionManager>, Option<Instant>)>,
    script: redis::Script,
    fallback: LocalRateLimiter,
    degraded: AtomicBool,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter").field("degraded", &self.degraded.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// A limiter on the Redis at `url`. Connects lazily: an unreachable Redis is not an error
    /// here (limits fall back to in-process until it answers).
    pub fn new(url: &str) -> redis::RedisResult<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connection: Mutex::new((None, None)),
            script: redis::Script::new(RESERVE),
            fallback: LocalRateLimiter::new(),
            degraded: AtomicBool::new(false),
        })
    }

    /// Whether the last request fell back to in-process limits (for readiness reports).
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        let mut guard = self.connection.lock().await;
        if let Some(c) = &guard.0 {
            return Some(c.clone());
        }
        if guard.1.is_some_and(|at| at.elapsed() < RECONNECT_EVERY) {
            return None;
        }
        guard.1 = Some(Instant::now());
        match tokio::time::timeout(REDIS_TIMEOUT, ConnectionManager::new(self.client.clone())).await {
            Ok(Ok(c)) => {
                guard.0 = Some(c.clone());
                Some(c)
            }
            Ok(Err(e)) => {
                self.warn(&e.to_string());
                None
            }
            Err(_) => {
                self.warn("connecting timed out");
                None
            }
        }
    }

    async fn reserve(&self, limit: &RateLimit, holder: &str, now: i64) -> Result<i64, String> {
        let mut connection = self.connection().await.ok_or_else(|| "not connected".to_string())?;
        // One hash tag for both keys, so the script also runs on Redis Cluster (same slot).
        let key = format!("switchboard:rl:{{{}}}", limit.key);
        let mut call = self.script.key(&key);
        call.key(format!("{key}:held")).arg(now).arg(limit.interval.as_millis() as i64).arg(holder);
        match tokio::time::timeout(REDIS_TIMEOUT, call.invoke_async::<i64>(&mut connection)).await {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    fn warn(&self, why: &str) {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %why, "Redis is unreachable: rate limits fall back to this process until it answers");
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn acquire(&self, limit: &RateLimit, holder: &str, now: i64) -> i64 {
        match self.reserve(limit, holder, now).await {
            Ok(slot) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: rate limits are shared again");
                }
                slot
            }
            Err(e) => {
                self.warn(&e);
                self.fallback.acquire_now(limit, holder, now)
            }
        }
    }

    fn status(&self) -> &'static str {
        if self.is_degraded() { "in_process_fallback" } else { "redis" }
    }
}
