//! Per-service traffic policy and where it comes from.
//!
//! Layers, least to most specific: built-in defaults < the config file's `[defaults]` < command
//! line flags < the file's `[services.<name>]` < the registry KV key `trellis/config/<name>`
//! (JSON, watched live). Each layer only names the fields it changes; the merged result is
//! validated as a whole, so a typo in any layer is reported instead of silently ignored.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::{Error, Result};

/// The KV prefix under which per-service policy is read.
pub const KV_PREFIX: &str = "trellis/config/";

/// How the proxy treats requests to one upstream service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServicePolicy {
    /// Load balancer: `random`, `round_robin`, `weighted`, `least_request`, `peak_ewma` or
    /// `ring_hash[:header]`. Default `peak_ewma`.
    pub load_balancer: trellis_balance::Policy,
    /// Overall deadline of a request, retries and back-off included; 504 when it passes.
    /// Default `15s`.
    #[serde(with = "go_duration")]
    pub timeout: Duration,
    /// Deadline of each attempt until the response head arrives. Default `5s`.
    #[serde(with = "go_duration")]
    pub per_try_timeout: Duration,
    /// Most retries of one request (attempts = 1 + this). Default 2.
    pub max_retries: u32,
    /// Response statuses after which an idempotent request is retried. Default 502, 503, 504.
    pub retry_statuses: Vec<u16>,
    /// Retries allowed beyond the first attempts. Default 20% plus 10 per second.
    pub retry_budget: RetryBudgetConfig,
    /// Pause before each retry. Default 25 ms doubling up to 250 ms, jittered.
    pub backoff: BackoffConfig,
    /// Ejection of endpoints that keep failing.
    pub outlier: OutlierConfig,
    /// Most requests in flight to the service; more are answered 503. 0 = unlimited.
    /// Default 10000.
    pub max_concurrent: u32,
    /// Token-bucket rate limit (429 when empty). Default none.
    pub rate_limit: Option<RateLimitConfig>,
}

impl Default for ServicePolicy {
    fn default() -> Self {
        Self {
            load_balancer: trellis_balance::Policy::default(),
            timeout: Duration::from_secs(15),
            per_try_timeout: Duration::from_secs(5),
            max_retries: 2,
            retry_statuses: vec![502, 503, 504],
            retry_budget: RetryBudgetConfig::default(),
            backoff: BackoffConfig::default(),
            outlier: OutlierConfig::default(),
            max_concurrent: 10_000,
            rate_limit: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudgetConfig {
    /// Retries allowed as a share of requests. Default 0.2.
    pub ratio: f64,
    /// Retries per second always allowed, so quiet services can still retry. Default 10.
    pub min_per_second: u32,
    /// How long a request counts towards the budget. Default `10s`.
    #[serde(with = "go_duration")]
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    /// First back-off. Default `25ms`.
    #[serde(with = "go_duration")]
    pub base: Duration,
    /// Largest back-off. Default `250ms`.
    #[serde(with = "go_duration")]
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// Consecutive failures (connect errors, resets, 5xx) that eject an endpoint. Default 5;
    /// 0 disables ejection.
    pub consecutive_failures: u32,
    /// First ejection; each further one doubles it. Default `1s`.
    #[serde(with = "go_duration")]
    pub base_ejection: Duration,
    /// Longest ejection. Default `30s`.
    #[serde(with = "go_duration")]
    pub max_ejection: Duration,
    /// Largest share of a service's endpoints ejected at once. Default 0.5.
    pub max_ejected_share: f64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
            max_ejected_share: 0.5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Burst size; default equal to one second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl ServicePolicy {
    /// Rejects values that cannot work, before any port is bound.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: &str| Err(Error::config(m.to_owned()));
        if self.timeout.is_zero() || self.per_try_timeout.is_zero() {
            return fail("timeouts must be positive");
        }
        if !(0.0..=100.0).contains(&self.retry_budget.ratio) {
            return fail("retry_budget.ratio must be between 0 and 100");
        }
        if self.retry_budget.window.is_zero() {
            return fail("retry_budget.window must be positive");
        }
        if self.backoff.max < self.backoff.base {
            return fail("backoff.max must not be below backoff.base");
        }
        if !(0.0..=1.0).contains(&self.outlier.max_ejected_share) {
            return fail("outlier.max_ejected_share must be between 0 and 1");
        }
        if self.outlier.base_ejection.is_zero()
            || self.outlier.max_ejection < self.outlier.base_ejection
        {
            return fail("outlier ejection times must be positive, max ≥ base");
        }
        if let Some(rate) = &self.rate_limit
            && rate.per_second == 0
        {
            return fail("rate_limit.per_second must be positive");
        }
        if self.retry_statuses.iter().any(|s| !(100..=599).contains(s)) {
            return fail("retry_statuses must be HTTP statuses");
        }
        Ok(())
    }
}

/// The config file (`--config FILE`, TOML).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Policy fields applied to every service.
    pub defaults: toml::Table,
    /// Policy fields per service name.
    pub services: BTreeMap<String, toml::Table>,
    /// Gateway routes, `"/prefix" = "service"` (added to `--route`).
    pub routes: BTreeMap<String, String>,
}

impl FileConfig {
    /// Parses the file's text (kept apart from reading it, so it is testable).
    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::config(format!("config file: {e}")))
    }

    pub fn load(path: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigFile {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }
}

/// Resolves the policy of any service from the static layers plus an optional KV override.
#[derive(Debug, Clone)]
pub struct PolicySource {
    defaults: Value,
    services: BTreeMap<String, Value>,
}

impl PolicySource {
    /// Builds the static layers and validates every one of them.
    pub fn new(file: FileConfig, flags: Value) -> Result<Self> {
        let mut defaults = to_json(&ServicePolicy::default())?;
        merge(&mut defaults, to_json(&file.defaults)?);
        merge(&mut defaults, flags);
        let source = Self {
            defaults,
            services: file
                .services
                .iter()
                .map(|(name, table)| Ok((name.clone(), to_json(table)?)))
                .collect::<Result<_>>()?,
        };
        source.resolve("", None)?;
        for name in source.services.keys() {
            source
                .resolve(name, None)
                .map_err(|e| Error::config(format!("[services.{name}]: {e}")))?;
        }
        Ok(source)
    }

    /// The policy of `service`, with the KV layer `kv` (JSON object) on top when given.
    pub fn resolve(&self, service: &str, kv: Option<&Value>) -> Result<ServicePolicy> {
        let mut value = self.defaults.clone();
        if let Some(layer) = self.services.get(service) {
            merge(&mut value, layer.clone());
        }
        // Kept only to name the offending field if the KV layer turns out invalid.
        let below_kv = kv.map(|_| value.clone());
        if let Some(layer) = kv {
            if !layer.is_object() {
                return Err(Error::config("policy must be a JSON object"));
            }
            merge(&mut value, layer.clone());
        }
        let policy: ServicePolicy = serde_json::from_value(value).map_err(|e| {
            let field = kv
                .zip(below_kv.as_ref())
                .and_then(|(layer, base)| offending_field(base, layer));
            Error::config(match field {
                Some(field) => format!("{field}: {e}"),
                None => e.to_string(),
            })
        })?;
        policy.validate()?;
        Ok(policy)
    }
}

impl Default for PolicySource {
    fn default() -> Self {
        Self {
            defaults: to_json(&ServicePolicy::default()).unwrap_or(Value::Null),
            services: BTreeMap::new(),
        }
    }
}

/// The first top-level field of `layer` that alone makes `base` fail to parse: serde's type
/// errors do not say which field they are about.
fn offending_field<'a>(base: &Value, layer: &'a Value) -> Option<&'a str> {
    layer.as_object()?.iter().find_map(|(key, field)| {
        let mut value = base.clone();
        merge(&mut value, serde_json::json!({ key: field }));
        serde_json::from_value::<ServicePolicy>(value)
            .is_err()
            .then_some(key.as_str())
    })
}

fn to_json(value: &impl Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::config(e.to_string()))
}

/// Object keys merge recursively; anything else replaces. `null` resets a field to the layer
/// below only for optional fields (e.g. `"rate_limit": null` turns rate limiting off).
fn merge(base: &mut Value, layer: Value) {
    match (base, layer) {
        (Value::Object(base), Value::Object(layer)) => {
            for (key, value) in layer {
                match base.get_mut(&key) {
                    Some(slot) if slot.is_object() && value.is_object() => merge(slot, value),
                    _ => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, layer) => *base = layer,
    }
}

/// Durations as Go strings (`"250ms"`, `"1m30s"`) or integer nanoseconds, as the registry API.
pub mod go_duration {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&trellis_types::format_go_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Nanos(u64),
        }
        match Repr::deserialize(d)? {
            Repr::Text(text) => trellis_types::parse_go_duration(&text).map_err(D::Error::custom),
            Repr::Nanos(n) => Ok(Duration::from_nanos(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn layers_apply_in_order() {
        let file = FileConfig::parse(
            r#"
            [defaults]
            timeout = "3s"
            max_retries = 1
            [services.orders]
            load_balancer = "round_robin"
            outlier = { consecutive_failures = 2 }
            "#,
        )
        .unwrap();
        let source = PolicySource::new(file, json!({"max_retries": 4})).unwrap();
        let orders = source.resolve("orders", None).unwrap();
        assert_eq!(orders.timeout, Duration::from_secs(3));
        assert_eq!(orders.max_retries, 4);
        assert_eq!(orders.load_balancer, trellis_balance::Policy::RoundRobin);
        assert_eq!(orders.outlier.consecutive_failures, 2);
        assert_eq!(
            orders.outlier.max_ejected_share, 0.5,
            "siblings keep their defaults"
        );
        let users = source.resolve("users", None).unwrap();
        assert_eq!(users.load_balancer, trellis_balance::Policy::PeakEwma);

        let kv = json!({"rate_limit": {"per_second": 5}, "timeout": "750ms"});
        let live = source.resolve("orders", Some(&kv)).unwrap();
        assert_eq!(live.timeout, Duration::from_millis(750));
        assert_eq!(live.rate_limit.unwrap().per_second, 5);
        assert_eq!(live.load_balancer, trellis_balance::Policy::RoundRobin);
    }

    #[test]
    fn typos_and_bad_values_are_rejected() {
        assert!(FileConfig::parse("[defaults]\n").is_ok());
        assert!(FileConfig::parse("[default]\n").is_err());
        let file = FileConfig::parse("[services.orders]\ntimeuot = \"1s\"\n").unwrap();
        assert!(PolicySource::new(file, json!({})).is_err());
        let source = PolicySource::default();
        assert!(
            source
                .resolve("x", Some(&json!({"timeout": "soon"})))
                .is_err()
        );
        assert!(
            source
                .resolve("x", Some(&json!({"load_balancer": "fastest"})))
                .is_err()
        );
        assert!(
            source
                .resolve("x", Some(&json!({"outlier": {"max_ejected_share": 2.0}})))
                .is_err()
        );
        assert!(source.resolve("x", Some(&json!([1]))).is_err());
        let named = source
            .resolve("x", Some(&json!({"timeout": "1s", "max_retries": "lots"})))
            .unwrap_err()
            .to_string();
        assert!(named.contains("max_retries: invalid type"), "{named}");
        let nanos = source
            .resolve("x", Some(&json!({"timeout": 2_000_000_000u64})))
            .unwrap();
        assert_eq!(nanos.timeout, Duration::from_secs(2));
    }
}
