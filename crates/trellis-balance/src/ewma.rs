//! Peak-EWMA latency estimate per endpoint, the load signal of the `peak_ewma` policy.
//!
//! Finagle/Linkerd style: a response slower than the estimate replaces it at once (the
//! "peak"), so a degrading endpoint is avoided after a single slow answer; faster responses pull
//! it down with an exponential moving average whose weight depends on the time since the last
//! update, not on the number of samples. While no response arrives the estimate decays toward
//! zero, so an endpoint that was slow once is eventually tried again and can prove it recovered.

use std::time::{Duration, Instant};

/// Tuning of the peak-EWMA estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeakEwmaConfig {
    /// Estimate for an endpoint that has not answered yet. Default 30 ms (Linkerd's value): low
    /// enough that new endpoints get traffic, high enough that they do not get all of it.
    pub default_rtt: Duration,
    /// Time constant of the exponential decay. Default 10 s.
    pub decay: Duration,
}

impl Default for PeakEwmaConfig {
    fn default() -> Self {
        Self {
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
        }
    }
}

/// The estimate of one endpoint, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeakEwma {
    rtt_ns: f64,
    /// When `rtt_ns` was last set. The default estimate of a new endpoint decays from the
    /// moment it was added, like any other: otherwise, under light load, an endpoint nobody
    /// has tried would look slower than the measured ones forever and never be tried.
    updated: Instant,
    /// False while `rtt_ns` is still the default guess.
    measured: bool,
}

impl PeakEwma {
    pub(crate) fn new(config: &PeakEwmaConfig, now: Instant) -> Self {
        Self {
            rtt_ns: nanos(config.default_rtt),
            updated: now,
            measured: false,
        }
    }

    pub(crate) fn is_measured(&self) -> bool {
        self.measured
    }

    /// The estimate as seen at `now`, in nanoseconds.
    ///
    /// Reading does not change state: decaying toward zero since the last update is the same as
    /// Finagle observing a zero sample on every read, but independent of how often we read.
    pub(crate) fn estimate(&self, now: Instant, config: &PeakEwmaConfig) -> f64 {
        self.rtt_ns * keep(now.saturating_duration_since(self.updated), config.decay)
    }

    /// Takes a response into account.
    ///
    /// A failed response counts as at least as slow as the current estimate (before idle
    /// decay): an endpoint that fails fast (connection refused, immediate 503) must not look
    /// like the fastest one and attract traffic. Avoiding failing endpoints is the outlier
    /// detector's job, which sees the failures themselves.
    pub(crate) fn observe(
        &mut self,
        latency: Duration,
        success: bool,
        now: Instant,
        config: &PeakEwmaConfig,
    ) {
        let mut sample = nanos(latency);
        if !success {
            sample = sample.max(self.rtt_ns);
        }
        self.rtt_ns = if !self.measured || sample >= self.rtt_ns {
            // The first real measurement replaces the guess entirely; a peak replaces the
            // estimate at once.
            sample
        } else {
            let w = keep(now.saturating_duration_since(self.updated), config.decay);
            self.rtt_ns * w + sample * (1.0 - w)
        };
        self.updated = self.updated.max(now);
        self.measured = true;
    }
}

/// The share of the old value that survives `elapsed` of decay with time constant `decay`.
fn keep(elapsed: Duration, decay: Duration) -> f64 {
    if decay.is_zero() {
        return 0.0;
    }
    (-elapsed.as_secs_f64() / decay.as_secs_f64()).exp()
}

fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starts_at_the_default_and_first_sample_replaces_it() {
        let cfg = PeakEwmaConfig::default();
        let t0 = Instant::now();
        let mut e = PeakEwma::new(&cfg, t0);
        assert_eq!(e.estimate(t0, &cfg), 30.0 * MS);
        // Even the guess decays, so an endpoint nobody tried yet gets tried eventually.
        let later = e.estimate(t0 + cfg.decay, &cfg) / MS;
        assert!((later - 30.0 * (-1f64).exp()).abs() < 0.01, "{later}");
        e.observe(ms(5), true, t0 + ms(1), &cfg);
        assert!((e.estimate(t0 + ms(1), &cfg) - 5.0 * MS).abs() < 1.0);
    }

    #[test]
    fn peaks_jump_up_and_fast_samples_blend_down_over_the_time_constant() {
        let cfg = PeakEwmaConfig::default();
        let t0 = Instant::now();
        let mut e = PeakEwma::new(&cfg, t0);
        e.observe(ms(10), true, t0, &cfg);
        e.observe(ms(500), true, t0 + ms(1), &cfg);
        assert!((e.estimate(t0 + ms(1), &cfg) - 500.0 * MS).abs() < 1.0);
        // One time constant later a 10 ms sample keeps e^-1 of the old value.
        let t1 = t0 + ms(1) + cfg.decay;
        e.observe(ms(10), true, t1, &cfg);
        let expected = 500.0 * (-1f64).exp() + 10.0 * (1.0 - (-1f64).exp());
        assert!((e.estimate(t1, &cfg) / MS - expected).abs() < 0.01);
    }

    #[test]
    fn idle_estimate_decays_toward_zero() {
        let cfg = PeakEwmaConfig::default();
        let t0 = Instant::now();
        let mut e = PeakEwma::new(&cfg, t0);
        e.observe(ms(500), true, t0, &cfg);
        let later = e.estimate(t0 + cfg.decay * 4, &cfg) / MS;
        assert!((later - 500.0 * (-4f64).exp()).abs() < 0.01, "{later}");
        // Reading never changed the state.
        assert!((e.estimate(t0, &cfg) - 500.0 * MS).abs() < 1.0);
    }

    #[test]
    fn fast_failures_never_lower_the_estimate() {
        let cfg = PeakEwmaConfig::default();
        let t0 = Instant::now();
        let mut e = PeakEwma::new(&cfg, t0);
        e.observe(ms(100), true, t0, &cfg);
        e.observe(ms(1), false, t0 + ms(10), &cfg);
        assert!(e.estimate(t0 + ms(10), &cfg) >= 99.0 * MS);
        // Not even after a long quiet spell, when the estimate has decayed.
        e.observe(ms(1), false, t0 + ms(60_000), &cfg);
        assert!((e.estimate(t0 + ms(60_000), &cfg) - 100.0 * MS).abs() < 1.0);
        e.observe(ms(300), false, t0 + ms(60_010), &cfg);
        assert!((e.estimate(t0 + ms(60_010), &cfg) - 300.0 * MS).abs() < 1.0);
    }
}
