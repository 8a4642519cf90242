//! Jittered exponential backoff: how long to wait before each retry.
//!
//! Jitter matters more than the exponent: without it, clients that failed together retry
//! together and hit the recovering upstream in synchronised waves.

use std::time::Duration;

use rand::Rng;

/// How the exponential ceiling is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// Exactly the ceiling. Only for tests and diagnostics.
    None,
    /// Uniform in `[0, ceiling]` ("full jitter"). The default: it spreads retries the most, and
    /// AWS's measurements show it finishes contended work soonest.
    #[default]
    Full,
    /// Uniform in `[ceiling / 2, ceiling]` ("equal jitter"): never retries almost at once.
    Equal,
}

/// Exponential backoff with a base, a cap and jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry's delay. Default 25 ms.
    pub base: Duration,
    /// Largest ceiling; the exponent stops growing here. Default 1 s.
    pub max: Duration,
    /// Default [`Jitter::Full`].
    pub jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            max: Duration::from_secs(1),
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (1 for the first retry): a random duration up
    /// to `min(max, base × 2^(attempt−1))`, shaped by the jitter. Attempt 0 is the original
    /// request and waits for nothing.
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let ceiling = self.ceiling(attempt);
        let ceiling_ns = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let nanos = match self.jitter {
            Jitter::None => ceiling_ns,
            Jitter::Full => rng.random_range(0..=ceiling_ns),
            Jitter::Equal => ceiling_ns - rng.random_range(0..=ceiling_ns / 2),
        };
        Duration::from_nanos(nanos)
    }

    /// The largest delay `attempt` can get.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let Some(doublings) = attempt.checked_sub(1) else {
            return Duration::ZERO;
        };
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ceiling_doubles_from_base_up_to_max() {
        let b = Backoff::default();
        let ceilings: Vec<_> = (0..8).map(|a| b.ceiling(a)).collect();
        assert_eq!(
            ceilings,
            [
                ms(0),
                ms(25),
                ms(50),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000)
            ]
        );
        // Huge attempt numbers saturate instead of overflowing.
        assert_eq!(b.ceiling(40), ms(1000));
        assert_eq!(b.ceiling(u32::MAX), ms(1000));
    }

    #[test]
    fn first_try_waits_for_nothing() {
        let mut rng = StdRng::seed_from_u64(1);
        for jitter in [Jitter::None, Jitter::Full, Jitter::Equal] {
            let b = Backoff {
                jitter,
                ..Backoff::default()
            };
            assert_eq!(b.delay(0, &mut rng), Duration::ZERO);
        }
    }

    #[test]
    fn full_jitter_covers_zero_to_ceiling() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(2);
        let delays: Vec<_> = (0..2000).map(|_| b.delay(3, &mut rng)).collect();
        assert!(delays.iter().all(|&d| d <= ms(100)));
        assert!(delays.iter().any(|&d| d < ms(10)), "never near 0");
        assert!(delays.iter().any(|&d| d > ms(90)), "never near the ceiling");
        let mean = delays.iter().sum::<Duration>() / 2000;
        assert!((ms(45)..ms(55)).contains(&mean), "{mean:?}");
    }

    #[test]
    fn equal_jitter_stays_in_the_upper_half() {
        let b = Backoff {
            jitter: Jitter::Equal,
            ..Backoff::default()
        };
        let mut rng = StdRng::seed_from_u64(3);
        for attempt in 1..12 {
            let ceiling = b.ceiling(attempt);
            for _ in 0..200 {
                let d = b.delay(attempt, &mut rng);
                assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn no_jitter_is_the_ceiling() {
        let b = Backoff {
            jitter: Jitter::None,
            base: ms(10),
            max: ms(35),
        };
        let mut rng = StdRng::seed_from_u64(4);
        let delays: Vec<_> = (1..5).map(|a| b.delay(a, &mut rng)).collect();
        assert_eq!(delays, [ms(10), ms(20), ms(35), ms(35)]);
    }
}
