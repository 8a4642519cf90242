//! Per-service resilience configuration as it appears in flags, TOML files and KV entries,
//! and the state machines built from it.
//!
//! Fields with a non-zero default take 0 to mean "off"; the rate limit is off unless set.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Backoff, Error, Jitter, OutlierConfig, RetryBudget, RetryBudgetConfig, TokenBucket};

/// Resilience settings of one upstream service. Every field is optional in a config file;
/// unknown fields are rejected so a typo does not silently fall back to a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Most retries of one request (not counting the original). Default 2; 0 disables
    /// retries. Only idempotent requests and connect failures are retried.
    pub retries: u32,
    /// Retries allowed as a share of recent requests. Default 0.2 (at most 20% extra load).
    pub retry_budget_ratio: f64,
    /// Retries per second allowed regardless of traffic. Default 10.
    pub retry_min_per_sec: u32,
    /// Window over which the retry budget counts, 1 000–60 000 ms. Default 10 000.
    pub retry_budget_window_ms: u64,
    /// Ceiling of the first retry's backoff; it doubles per retry. Default 25.
    pub backoff_base_ms: u64,
    /// Largest backoff ceiling. Default 1 000.
    pub backoff_max_ms: u64,
    /// Timeout of each try, so a hung try can be retried. Default 0: none, only the overall
    /// timeout applies (a per-try default would cut off legitimately slow requests).
    pub per_try_timeout_ms: u64,
    /// Timeout of the whole request, retries and backoff included; 504 when exceeded. Default
    /// 15 000; 0 disables it.
    pub timeout_ms: u64,
    /// Failures in a row that eject an endpoint. Default 5; 0 disables outlier ejection.
    pub consecutive_failures: u32,
    /// First ejection length; repeated ejections last longer. Default 30 000.
    pub base_ejection_ms: u64,
    /// Longest ejection. Default 300 000.
    pub max_ejection_ms: u64,
    /// Most endpoints ejected at once, in percent. Default 50.
    pub max_ejection_percent: u32,
    /// Most requests in flight to the service from this proxy; more wait. Default 1 024; 0 is
    /// unlimited.
    pub max_concurrency: u32,
    /// Requests per second admitted, the rest answered 429. Default: unset, no rate limit.
    pub rate_limit_per_sec: Option<u32>,
    /// Requests admitted at once after a quiet spell. Default: unset, one second's worth
    /// (`rate_limit_per_sec`).
    pub rate_limit_burst: Option<u32>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            retries: 2,
            retry_budget_ratio: 0.2,
            retry_min_per_sec: 10,
            retry_budget_window_ms: 10_000,
            backoff_base_ms: 25,
            backoff_max_ms: 1_000,
            per_try_timeout_ms: 0,
            timeout_ms: 15_000,
            consecutive_failures: 5,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_ejection_percent: 50,
            max_concurrency: 1_024,
            rate_limit_per_sec: None,
            rate_limit_burst: None,
        }
    }
}

impl Policy {
    /// Checks ranges and relations between fields. Call before using the policy; the
    /// builders below clamp instead of failing, which would hide a typo.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |field, reason: &str| {
            Err(Error::InvalidPolicy {
                field,
                reason: reason.to_owned(),
            })
        };
        if !(0.0..=10.0).contains(&self.retry_budget_ratio) {
            return invalid("retry_budget_ratio", "must be between 0.0 and 10.0");
        }
        if !(1_000..=60_000).contains(&self.retry_budget_window_ms) {
            return invalid("retry_budget_window_ms", "must be between 1000 and 60000");
        }
        if self.backoff_base_ms > self.backoff_max_ms {
            return invalid("backoff_base_ms", "must not exceed backoff_max_ms");
        }
        if self.consecutive_failures > 0 && self.base_ejection_ms == 0 {
            return invalid("base_ejection_ms", "must be positive while ejection is on");
        }
        if self.base_ejection_ms > self.max_ejection_ms {
            return invalid("base_ejection_ms", "must not exceed max_ejection_ms");
        }
        if self.max_ejection_percent > 100 {
            return invalid("max_ejection_percent", "must be between 0 and 100");
        }
        match (self.rate_limit_per_sec, self.rate_limit_burst) {
            (Some(0), _) => invalid(
                "rate_limit_per_sec",
                "must be positive (omit it to disable)",
            ),
            (_, Some(0)) => invalid("rate_limit_burst", "must be positive"),
            (None, Some(_)) => invalid("rate_limit_burst", "needs rate_limit_per_sec"),
            _ => Ok(()),
        }
    }

    pub fn retry_budget(&self) -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig {
            min_retries_per_sec: self.retry_min_per_sec,
            ratio: self.retry_budget_ratio,
            window: Duration::from_millis(self.retry_budget_window_ms),
        })
    }

    /// Full-jitter exponential backoff.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: Duration::from_millis(self.backoff_base_ms),
            max: Duration::from_millis(self.backoff_max_ms),
            jitter: Jitter::Full,
        }
    }

    /// The outlier detector's tuning. A probe is given up on after the overall timeout (or
    /// the default 15 s when there is none): no request legitimately takes longer.
    pub fn outlier(&self) -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: self.consecutive_failures,
            base_ejection: Duration::from_millis(self.base_ejection_ms),
            max_ejection: Duration::from_millis(self.max_ejection_ms),
            max_ejection_percent: self.max_ejection_percent,
            probe_timeout: self
                .timeout()
                .unwrap_or(OutlierConfig::default().probe_timeout),
        }
    }

    /// The rate limiter, if one is configured.
    pub fn token_bucket(&self) -> Option<TokenBucket> {
        let rate = self.rate_limit_per_sec?;
        Some(TokenBucket::new(
            rate,
            self.rate_limit_burst.unwrap_or(rate),
        ))
    }

    pub fn timeout(&self) -> Option<Duration> {
        non_zero_ms(self.timeout_ms)
    }

    pub fn per_try_timeout(&self) -> Option<Duration> {
        non_zero_ms(self.per_try_timeout_ms)
    }

    pub fn max_concurrency(&self) -> Option<usize> {
        (self.max_concurrency > 0).then_some(self.max_concurrency as usize)
    }
}

fn non_zero_ms(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Whether a request with this method may be retried after it reached the upstream: the
/// methods RFC 9110 defines as idempotent. Methods are case-sensitive, so `get` is not `GET`
/// (and an unknown method is never retried).
pub fn is_idempotent_method(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_documented_defaults() {
        let from_toml: Policy = toml::from_str("").expect("empty toml");
        let from_json: Policy = serde_json::from_str("{}").expect("empty json");
        assert_eq!(from_toml, Policy::default());
        assert_eq!(from_json, Policy::default());
        let p = Policy::default();
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.timeout(), Some(Duration::from_secs(15)));
        assert_eq!(p.per_try_timeout(), None);
        assert_eq!(p.max_concurrency(), Some(1024));
        assert!(p.token_bucket().is_none());
        assert_eq!(p.backoff(), Backoff::default());
        assert_eq!(
            p.outlier(),
            OutlierConfig::default(),
            "policy and detector defaults agree"
        );
    }

    #[test]
    fn fields_parse_and_zero_means_off() {
        let p: Policy = toml::from_str(
            "retries = 3\nper_try_timeout_ms = 500\ntimeout_ms = 0\nmax_concurrency = 0\n\
             rate_limit_per_sec = 100\n",
        )
        .expect("valid toml");
        assert_eq!(p.retries, 3);
        assert_eq!(p.per_try_timeout(), Some(Duration::from_millis(500)));
        assert_eq!(p.timeout(), None);
        assert_eq!(p.max_concurrency(), None);
        assert_eq!(p.outlier().probe_timeout, Duration::from_secs(15));
        assert_eq!(p.validate(), Ok(()));
        // The burst defaults to one second's worth.
        let t0 = std::time::Instant::now();
        let mut bucket = p.token_bucket().expect("configured");
        assert_eq!(
            (0..1000).take_while(|_| bucket.try_acquire(t0)).count(),
            100
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<Policy>("retrys = 3").expect_err("typo");
        assert!(err.to_string().contains("retrys"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let cases: [(&str, Policy); 9] = [
            (
                "retry_budget_ratio",
                Policy {
                    retry_budget_ratio: f64::NAN,
                    ..Policy::default()
                },
            ),
            (
                "retry_budget_ratio",
                Policy {
                    retry_budget_ratio: -0.1,
                    ..Policy::default()
                },
            ),
            (
                "retry_budget_window_ms",
                Policy {
                    retry_budget_window_ms: 0,
                    ..Policy::default()
                },
            ),
            (
                "backoff_base_ms",
                Policy {
                    backoff_base_ms: 2000,
                    ..Policy::default()
                },
            ),
            (
                "base_ejection_ms",
                Policy {
                    base_ejection_ms: 0,
                    ..Policy::default()
                },
            ),
            (
                "base_ejection_ms",
                Policy {
                    max_ejection_ms: 1000,
                    ..Policy::default()
                },
            ),
            (
                "max_ejection_percent",
                Policy {
                    max_ejection_percent: 101,
                    ..Policy::default()
                },
            ),
            (
                "rate_limit_per_sec",
                Policy {
                    rate_limit_per_sec: Some(0),
                    ..Policy::default()
                },
            ),
            (
                "rate_limit_burst",
                Policy {
                    rate_limit_burst: Some(5),
                    ..Policy::default()
                },
            ),
        ];
        for (field, policy) in cases {
            match policy.validate() {
                Err(Error::InvalidPolicy { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let off = Policy {
            consecutive_failures: 0,
            base_ejection_ms: 0,
            ..Policy::default()
        };
        assert_eq!(off.validate(), Ok(()));
        let err = Policy {
            max_ejection_percent: 200,
            ..Policy::default()
        }
        .validate()
        .expect_err("out of range");
        assert_eq!(
            err.to_string(),
            "invalid resilience policy: max_ejection_percent: must be between 0 and 100"
        );
    }

    #[test]
    fn builders_carry_the_values() {
        let p = Policy {
            retry_min_per_sec: 0,
            retry_budget_ratio: 0.5,
            backoff_base_ms: 10,
            backoff_max_ms: 40,
            rate_limit_per_sec: Some(10),
            rate_limit_burst: Some(3),
            ..Policy::default()
        };
        let t0 = std::time::Instant::now();
        let mut budget = p.retry_budget();
        budget.deposit(t0);
        budget.deposit(t0);
        assert_eq!(budget.available(t0), 1);
        assert_eq!(p.backoff().ceiling(5), Duration::from_millis(40));
        let mut bucket = p.token_bucket().expect("configured");
        assert_eq!((0..100).take_while(|_| bucket.try_acquire(t0)).count(), 3);
    }

    #[test]
    fn idempotent_methods() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent_method(m), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "get", "PROPFIND", ""] {
            assert!(!is_idempotent_method(m), "{m}");
        }
    }
}
