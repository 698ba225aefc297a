//! Retry policy as data: exponential backoff with full jitter, capped; a vendor's
//! `Retry-After` wins.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How a failing step is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The ceiling of the first retry's delay; doubled for each later retry.
    #[serde(with = "crate::definition::duration_serde")]
    pub backoff: Duration,
    /// No delay exceeds this.
    #[serde(with = "crate::definition::duration_serde")]
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// First retry after 10 s, factor 2, cap 1 h, 8 attempts.
    fn default() -> Self {
        Self { max_attempts: 8, backoff: Duration::from_secs(10), cap: Duration::from_secs(3600) }
    }
}

impl RetryPolicy {
    /// The upper bound of the delay before retry number `retry` (1 = first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.backoff.saturating_mul(factor).min(self.cap)
    }

    /// The delay before retry number `retry`: full jitter, i.e. uniform in `[0, ceiling]`
    /// (AWS's "full jitter"), unless the vendor said `Retry-After`, which wins.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            // A vendor's wait wins, up to the longest wait a workflow may ask for.
            return after.min(crate::definition::MAX_WAIT);
        }
        let ceiling = self.ceiling(retry).as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }

    /// The ceilings of every retry this policy allows, in order.
    pub fn ceilings(&self) -> impl Iterator<Item = Duration> + '_ {
        (1..self.max_attempts).map(|n| self.ceiling(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ceilings_double_up_to_the_cap() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = p.ceilings().map(|d| d.as_secs()).collect();
        assert_eq!(secs, vec![10, 20, 40, 80, 160, 320, 640]);
        let long = RetryPolicy { max_attempts: 20, ..p };
        assert_eq!(long.ceilings().last().unwrap(), Duration::from_secs(3600));
    }

    #[test]
    fn jittered_delay_stays_within_ceiling_and_retry_after_wins() {
        let p = RetryPolicy::default();
        for retry in 1..8 {
            for _ in 0..50 {
                assert!(p.delay(retry, None) <= p.ceiling(retry));
            }
        }
        assert_eq!(p.delay(3, Some(Duration::from_secs(7))), Duration::from_secs(7));
    }
}
