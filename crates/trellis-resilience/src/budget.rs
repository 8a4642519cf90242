//! Retry budget (Finagle/Linkerd style): caps retries at a share of recent traffic plus a
//! small floor, so retries help with scattered failures but cannot multiply the load on an
//! upstream that is failing everywhere (a retry storm).

use std::time::{Duration, Instant};

/// Fixed-point unit: one retry is 1000 milli-retries, so a ratio of 0.2 earns exactly 200 per
/// request and no floating-point error accumulates.
const UNIT: i64 = 1000;

/// The window is a ring of buckets; an entry expires between 9/10 and all of the window
/// after it was made.
const BUCKETS: usize = 10;

/// Tuning of a [`RetryBudget`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries per second allowed even without traffic, so a low-traffic service can still
    /// retry. Default 10.
    pub min_retries_per_sec: u32,
    /// Retries earned per original request. Default 0.2 (20% extra load at most). Clamped to
    /// `0.0..=1000.0`; NaN counts as 0.
    pub ratio: f64,
    /// How long requests and retries are remembered. Default 10 s. Clamped to at least 10 ns.
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            min_retries_per_sec: 10,
            ratio: 0.2,
            window: Duration::from_secs(10),
        }
    }
}

/// Retries allowed over the last `window` = `min_retries_per_sec × window` + `ratio` ×
/// requests deposited in it − retries already withdrawn in it.
///
/// Like Finagle's, the floor is a reserve for the whole window, not a per-second rate: a quiet
/// service may spend it in one burst, then sustains `min_retries_per_sec` on average.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    /// Milli-retries earned by one deposit.
    earn: i64,
    /// Milli-retries always available in a window.
    reserve: i64,
    bucket_ns: u128,
    buckets: [i64; BUCKETS],
    /// The first `now` seen; bucket numbers count from it.
    origin: Option<Instant>,
    /// Absolute number of the bucket that `buckets[current % BUCKETS]` holds.
    current: u64,
}

impl RetryBudget {
    pub fn new(config: RetryBudgetConfig) -> Self {
        let ratio = if config.ratio.is_nan() {
            0.0
        } else {
            config.ratio.clamp(0.0, 1000.0)
        };
        let window = config.window.max(Duration::from_nanos(BUCKETS as u64));
        let reserve = f64::from(config.min_retries_per_sec) * window.as_secs_f64() * UNIT as f64;
        Self {
            earn: (ratio * UNIT as f64).round() as i64,
            reserve: reserve.round() as i64,
            bucket_ns: (window / BUCKETS as u32).as_nanos(),
            buckets: [0; BUCKETS],
            origin: None,
            current: 0,
        }
    }

    /// Records an original request (not a retry): it earns `ratio` retries for the window.
    pub fn deposit(&mut self, now: Instant) {
        let i = self.advance(now);
        self.buckets[i] += self.earn;
    }

    /// Asks to send one retry; true means go ahead, and it is charged to the budget.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        let i = self.advance(now);
        if self.balance() < UNIT {
            return false;
        }
        self.buckets[i] -= UNIT;
        true
    }

    /// Retries that would be allowed right now, for metrics.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.advance(now);
        u64::try_from(self.balance() / UNIT).unwrap_or(0)
    }

    fn balance(&self) -> i64 {
        self.reserve + self.buckets.iter().sum::<i64>()
    }

    /// Moves the window up to `now`, clearing buckets that fell out of it, and returns the
    /// index of the current bucket.
    fn advance(&mut self, now: Instant) -> usize {
        let origin = *self.origin.get_or_insert(now);
        let elapsed = now.saturating_duration_since(origin).as_nanos();
        let bucket = u64::try_from(elapsed / self.bucket_ns).unwrap_or(u64::MAX);
        if bucket > self.current {
            let stale = (bucket - self.current).min(BUCKETS as u64);
            for k in 1..=stale {
                self.buckets[((self.current + k) % BUCKETS as u64) as usize] = 0;
            }
            self.current = bucket;
        }
        (self.current % BUCKETS as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn withdraw_all(budget: &mut RetryBudget, now: Instant) -> usize {
        (0..100_000)
            .take_while(|_| budget.try_withdraw(now))
            .count()
    }

    #[test]
    fn floor_alone_allows_min_per_sec_times_window() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig::default());
        assert_eq!(b.available(t0), 100);
        assert_eq!(withdraw_all(&mut b, t0), 100);
        assert!(!b.try_withdraw(t0 + ms(5000)), "exhausted for the window");
    }

    #[test]
    fn ratio_of_recent_requests_is_added() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig {
            min_retries_per_sec: 0,
            ..RetryBudgetConfig::default()
        });
        assert!(!b.try_withdraw(t0), "nothing earned yet");
        for _ in 0..1000 {
            b.deposit(t0);
        }
        assert_eq!(withdraw_all(&mut b, t0), 200);

        let mut both = RetryBudget::new(RetryBudgetConfig::default());
        for _ in 0..1000 {
            both.deposit(t0);
        }
        assert_eq!(withdraw_all(&mut both, t0), 300);
    }

    #[test]
    fn withdrawals_expire_and_the_budget_refills() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig::default());
        assert_eq!(withdraw_all(&mut b, t0), 100);
        assert!(!b.try_withdraw(t0 + ms(9_000)));
        // A full window later the spent retries have aged out.
        assert_eq!(withdraw_all(&mut b, t0 + ms(10_000)), 100);
    }

    #[test]
    fn deposits_expire_with_the_window() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig {
            min_retries_per_sec: 0,
            ..RetryBudgetConfig::default()
        });
        for _ in 0..50 {
            b.deposit(t0);
        }
        assert_eq!(b.available(t0 + ms(8_999)), 10);
        assert_eq!(b.available(t0 + ms(10_000)), 0);
    }

    #[test]
    fn window_slides_bucket_by_bucket() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig {
            min_retries_per_sec: 0,
            ratio: 1.0,
            window: ms(10_000),
        });
        for s in 0..10 {
            b.deposit(t0 + ms(1000 * s));
        }
        assert_eq!(b.available(t0 + ms(9_999)), 10);
        assert_eq!(b.available(t0 + ms(10_000)), 9);
        assert_eq!(b.available(t0 + ms(15_500)), 4);
        assert_eq!(b.available(t0 + ms(60_000)), 0);
    }

    #[test]
    fn floor_sustains_min_per_sec_but_not_more() {
        let t0 = Instant::now();
        let mut steady = RetryBudget::new(RetryBudgetConfig::default());
        // 10 retries every second for a minute, all allowed.
        for s in 0..60 {
            for _ in 0..10 {
                assert!(steady.try_withdraw(t0 + ms(1000 * s)), "second {s}");
            }
        }
        let mut greedy = RetryBudget::new(RetryBudgetConfig::default());
        let granted: usize = (0..60)
            .map(|s| {
                (0..20)
                    .filter(|_| greedy.try_withdraw(t0 + ms(1000 * s)))
                    .count()
            })
            .sum();
        // 20/s asked; about 10/s granted (the first window's reserve is spent early).
        assert!((600..=700).contains(&granted), "{granted}");
    }

    #[test]
    fn retry_storm_is_capped_at_ratio_of_traffic() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig::default());
        let mut granted = 0;
        // 100 req/s for a minute, every request wants a retry.
        for tick in 0..6000u64 {
            let now = t0 + ms(10 * tick);
            b.deposit(now);
            granted += usize::from(b.try_withdraw(now));
        }
        // 20% of 6000 plus 10/s over 60 s, with the first window's reserve as slack.
        assert!((1700..=1900).contains(&granted), "{granted}");
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let t0 = Instant::now() + ms(60_000);
        let mut b = RetryBudget::new(RetryBudgetConfig::default());
        b.deposit(t0);
        assert!(b.try_withdraw(t0 - ms(30_000)));
        assert_eq!(b.available(t0), 99);
    }

    #[test]
    fn silly_config_is_clamped() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig {
            min_retries_per_sec: 0,
            ratio: f64::NAN,
            window: Duration::ZERO,
        });
        b.deposit(t0);
        assert!(!b.try_withdraw(t0));
        let mut b = RetryBudget::new(RetryBudgetConfig {
            min_retries_per_sec: 0,
            ratio: -3.0,
            window: ms(1000),
        });
        b.deposit(t0);
        assert_eq!(b.available(t0), 0);
    }
}
