//! Token bucket for local rate limiting (the proxy answers 429 when it is empty).
//!
//! Implemented as GCRA (the "generic cell rate algorithm"): instead of a token count that
//! must be refilled, it keeps the time at which the bucket would next be full. That is exact
//! integer arithmetic on `Instant`s, with no refill step and no rounding drift.

use std::time::{Duration, Instant};

/// `rate_per_sec` tokens per second, at most `burst` at once; starts full.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Time to earn one token.
    interval: Duration,
    /// How far ahead of `now` the schedule may run: `burst − 1` intervals.
    tolerance: Duration,
    /// When the next token would be due if requests had come exactly at the rate; `None`
    /// until the first request, which is a full bucket.
    due: Option<Instant>,
}

impl TokenBucket {
    /// Zero rate or burst counts as 1.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let interval = Duration::from_secs(1) / rate_per_sec.max(1);
        Self {
            interval,
            tolerance: interval * (burst.max(1) - 1),
            due: None,
        }
    }

    /// Takes one token if there is one.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        let due = self.due.map_or(now, |due| due.max(now));
        if due.saturating_duration_since(now) > self.tolerance {
            return false;
        }
        self.due = Some(due.checked_add(self.interval).unwrap_or(due));
        true
    }

    /// How long until a token is available: a `Retry-After` for a 429. Zero if one is now.
    pub fn retry_after(&self, now: Instant) -> Duration {
        self.due.map_or(Duration::ZERO, |due| {
            due.saturating_duration_since(now)
                .saturating_sub(self.tolerance)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn drain(bucket: &mut TokenBucket, now: Instant) -> usize {
        (0..10_000).take_while(|_| bucket.try_acquire(now)).count()
    }

    #[test]
    fn starts_full_with_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5);
        assert_eq!(b.retry_after(t0), Duration::ZERO);
        assert_eq!(drain(&mut b, t0), 5);
        assert_eq!(b.retry_after(t0), ms(100));
    }

    #[test]
    fn refills_at_the_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5);
        drain(&mut b, t0);
        assert!(!b.try_acquire(t0 + ms(99)));
        assert!(b.try_acquire(t0 + ms(100)));
        assert!(!b.try_acquire(t0 + ms(100)));
        assert_eq!(drain(&mut b, t0 + ms(350)), 2);
        // A long idle spell refills no more than the burst.
        assert_eq!(drain(&mut b, t0 + ms(60_000)), 5);
    }

    #[test]
    fn sustained_rate_is_exact() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 1);
        // Asking every millisecond for ten seconds gets exactly 100/s.
        let granted = (0..10_000).filter(|&i| b.try_acquire(t0 + ms(i))).count();
        assert_eq!(granted, 1000);
    }

    #[test]
    fn zero_config_is_clamped_and_time_going_back_is_harmless() {
        let t0 = Instant::now() + ms(10_000);
        let mut b = TokenBucket::new(0, 0);
        assert!(b.try_acquire(t0));
        assert!(!b.try_acquire(t0 - ms(5_000)));
        assert!(!b.try_acquire(t0 + ms(999)));
        assert!(b.try_acquire(t0 + ms(1000)));
    }
}
