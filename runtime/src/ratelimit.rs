//! Vendor rate limits (one send per interval per key, e.g. one SMS a second per sender number).
//!
//! A limited step is not failed: it reserves the next free slot and is rescheduled to it, like
//! a delay (river's "snooze": no attempt spent). Reservations are kept by holder (the step
//! execution), so a step that wakes at its slot finds it still its own and does not queue again
//! behind the steps that reserved after it. The limiter holds nothing that cannot be lost: if it
//! forgets a reservation (a restart, Redis flushed), the step simply reserves again.
//!
//! [`LocalRateLimiter`] keeps the slots in this process (the embedded default). Processes that
//! share a database share limits through Redis (`switchboard_integrations::rate_limit`).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::action::RateLimit;

/// Hands out send slots.
#[async_trait]
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// Reserves the next free slot of `limit.key` for `holder` and returns its time (ms): the
    /// holder may send when that time has come. Asking again with the same holder returns the
    /// same slot (and, once it has come, gives it up: the holder is sending).
    async fn acquire(&self, limit: &RateLimit, holder: &str, now: i64) -> i64;

    /// Where limits are kept, for readiness reports: `in_process`, `redis`, or
    /// `in_process_fallback` while a shared backend is unreachable.
    fn status(&self) -> &'static str {
        "in_process"
    }
}

/// Slots older than this with nobody back for them are forgotten.
const FORGET_AFTER_MS: i64 = 10 * 60 * 1000;

/// Rate limits in this process's memory.
#[derive(Debug, Default)]
pub struct LocalRateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Default)]
struct Bucket {
    /// The first slot not yet handed out.
    next_free: i64,
    /// Reserved future slots by holder.
    held: HashMap<String, i64>,
}

impl LocalRateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`RateLimiter::acquire`], synchronously (also the fallback of shared limiters whose
    /// backend is unreachable).
    pub fn acquire_now(&self, limit: &RateLimit, holder: &str, now: i64) -> i64 {
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| {
                b.held.retain(|_, slot| *slot > now - FORGET_AFTER_MS);
                b.next_free > now || !b.held.is_empty()
            });
        }
        let bucket = buckets.entry(limit.key.clone()).or_default();
        if let Some(&slot) = bucket.held.get(holder) {
            if slot <= now {
                bucket.held.remove(holder);
            }
            return slot;
        }
        let slot = bucket.next_free.max(now);
        bucket.next_free = crate::clock::after(slot, limit.interval);
        if slot > now {
            bucket.held.insert(holder.to_string(), slot);
        }
        slot
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn acquire(&self, limit: &RateLimit, holder: &str, now: i64) -> i64 {
        self.acquire_now(limit, holder, now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sms() -> RateLimit {
        RateLimit { key: "twilio:+15550001111".into(), interval: Duration::from_secs(1) }
    }

    #[test]
    fn slots_are_spaced_by_the_interval_and_kept_by_their_holder() {
        let l = LocalRateLimiter::new();
        assert_eq!(l.acquire_now(&sms(), "a", 1_000), 1_000, "the first send goes at once");
        assert_eq!(l.acquire_now(&sms(), "b", 1_000), 2_000);
        assert_eq!(l.acquire_now(&sms(), "c", 1_100), 3_000);
        // b wakes at its slot: still its own, not queued behind c.
        assert_eq!(l.acquire_now(&sms(), "b", 2_000), 2_000);
        assert_eq!(l.acquire_now(&sms(), "d", 2_000), 4_000);
        let other = RateLimit { key: "twilio:+15550002222".into(), interval: Duration::from_secs(1) };
        assert_eq!(l.acquire_now(&other, "e", 2_000), 2_000, "another key is not held up");
        assert_eq!(l.acquire_now(&sms(), "f", 10_000), 10_000, "an idle key frees up");
    }
}
