//! Command-line flags shared by `trellis sidecar` and `trellis gateway`.

use crate::client::PoolConfig;
use crate::config::{FileConfig, PolicySource};
use crate::{Error, Result};
use serde_json::{Map, Value, json};
use std::time::Duration;

fn duration(text: &str) -> std::result::Result<Duration, String> {
    trellis_types::parse_go_duration(text)
}

/// Default traffic policy for every upstream; the config file's `[services.*]` and the KV keys
/// `trellis/config/<service>` refine it per service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PolicyArgs {
    /// Load balancer: random, round_robin, weighted, least_request, peak_ewma, ring_hash[:header]
    /// [default: peak_ewma]
    #[arg(long = "lb", value_name = "POLICY")]
    pub load_balancer: Option<trellis_balance::Policy>,
    /// Overall request timeout including retries, e.g. 15s [default: 15s]
    #[arg(long, value_parser = duration)]
    pub timeout: Option<Duration>,
    /// Timeout of each attempt [default: 5s]
    #[arg(long, value_parser = duration)]
    pub per_try_timeout: Option<Duration>,
    /// Most retries per request [default: 2]
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Most requests in flight per upstream service; 0 = unlimited [default: 10000]
    #[arg(long)]
    pub max_concurrent: Option<u32>,
    /// Token-bucket rate limit per upstream service, requests per second [default: none]
    #[arg(long, value_name = "RPS")]
    pub rate_limit: Option<u32>,
    /// Idle upstream connections are closed after this long
    #[arg(long, value_parser = duration, default_value = "90s")]
    pub pool_idle_timeout: Duration,
    /// Upstream TCP connect timeout
    #[arg(long, value_parser = duration, default_value = "1s")]
    pub connect_timeout: Duration,
    /// How long shutdown waits for in-flight requests
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub drain_timeout: Duration,
}

impl PolicyArgs {
    /// The flags that were given, as a policy layer.
    pub fn layer(&self) -> Value {
        let mut layer = Map::new();
        if let Some(lb) = &self.load_balancer {
            layer.insert("load_balancer".into(), json!(lb));
        }
        let go = |d: Duration| json!(trellis_types::format_go_duration(d));
        if let Some(d) = self.timeout {
            layer.insert("timeout".into(), go(d));
        }
        if let Some(d) = self.per_try_timeout {
            layer.insert("per_try_timeout".into(), go(d));
        }
        if let Some(n) = self.max_retries {
            layer.insert("max_retries".into(), json!(n));
        }
        if let Some(n) = self.max_concurrent {
            layer.insert("max_concurrent".into(), json!(n));
        }
        if let Some(n) = self.rate_limit {
            layer.insert("rate_limit".into(), json!({ "per_second": n }));
        }
        Value::Object(layer)
    }

    pub fn pool(&self) -> PoolConfig {
        PoolConfig {
            idle_timeout: self.pool_idle_timeout,
            connect_timeout: self.connect_timeout,
            ..PoolConfig::default()
        }
    }

    /// Reads the config file (if any) and validates every layer.
    pub fn load(&self, config: Option<&str>) -> Result<(FileConfig, PolicySource)> {
        let file = match config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let source = PolicySource::new(file.clone(), self.layer())?;
        if self.connect_timeout.is_zero() {
            return Err(Error::config("--connect-timeout must be positive"));
        }
        Ok((file, source))
    }
}
