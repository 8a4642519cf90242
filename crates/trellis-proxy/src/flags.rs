//! Command-line flags shared by `trellis sidecar` and `trellis gateway`.

use crate::client::PoolConfig;
use crate::config::{FileConfig, PolicySource};
use crate::{Error, Result};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Default traffic policy for every upstream; the config file's `[services.*]` and the KV keys
/// `trellis/config/<service>` refine it per service.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct PolicyArgs {
    /// Load balancer: random, round_robin, weighted, least_request, peak_ewma, ring_hash[:header]
    /// [default: peak_ewma]
    #[arg(long = "lb", value_name = "POLICY")]
    pub load_balancer: Option<trellis_balance::Policy>,
    /// Overall request timeout including retries, e.g. 15s [default: 15s]
    #[arg(long, value_parser = trellis_types::parse_go_duration)]
    pub timeout: Option<Duration>,
    /// Timeout of each attempt [default: 5s]
    #[arg(long, value_parser = trellis_types::parse_go_duration)]
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
    #[arg(long, value_parser = trellis_types::parse_go_duration, default_value = "90s")]
    pub pool_idle_timeout: Duration,
    /// Upstream TCP connect timeout
    #[arg(long, value_parser = trellis_types::parse_go_duration, default_value = "1s")]
    pub connect_timeout: Duration,
    /// How long shutdown waits for in-flight requests
    #[arg(long, value_parser = trellis_types::parse_go_duration, default_value = "10s")]
    pub drain_timeout: Duration,
}

impl Default for PolicyArgs {
    /// What the command line gives when no flag is passed.
    fn default() -> Self {
        parse_in_code(["policy"])
    }
}

/// `T` as the command line `argv` (the command's name first) gives it, without reading any
/// environment variable a flag falls back to: how arguments are built in code with the command
/// line's defaults. Panics if `argv` does not parse, which only a bug in the caller can cause.
pub(crate) fn parse_in_code<T: clap::Args>(argv: impl IntoIterator<Item = impl Into<String>>) -> T {
    let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
    let command = T::augment_args(clap::Command::new("trellis"))
        .mut_args(|arg| arg.env(None::<&'static str>));
    parse(command, &argv).unwrap_or_else(|e| panic!("{argv:?} does not parse: {e}"))
}

fn parse<T: clap::Args>(command: clap::Command, argv: &[String]) -> Result<T, clap::Error> {
    command
        .try_get_matches_from(argv)
        .and_then(|matches| T::from_arg_matches(&matches))
}

/// `T` from the command line `argv` (the command's name first), as the binary parses it.
#[cfg(test)]
pub(crate) fn parse_command_line<T: clap::Args>(argv: &[&str]) -> Result<T, clap::Error> {
    let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
    parse(T::augment_args(clap::Command::new("trellis")), &argv)
}

/// Asserts that `to_args` (what `args.to_args()` gave) parses back into `args`.
#[cfg(test)]
pub(crate) fn assert_round_trips<T>(args: &T, to_args: Vec<String>)
where
    T: clap::Args + PartialEq + std::fmt::Debug,
{
    let argv: Vec<String> = std::iter::once("trellis".to_owned())
        .chain(to_args)
        .collect();
    let parsed: T = parse(T::augment_args(clap::Command::new("trellis")), &argv)
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert_eq!(&parsed, args, "{argv:?}");
}

impl PolicyArgs {
    /// These flags as command-line arguments that parse back into an equal value.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(lb) = &self.load_balancer {
            push(&mut args, "--lb", lb);
        }
        if let Some(d) = self.timeout {
            push(&mut args, "--timeout", duration_arg(d));
        }
        if let Some(d) = self.per_try_timeout {
            push(&mut args, "--per-try-timeout", duration_arg(d));
        }
        if let Some(n) = self.max_retries {
            push(&mut args, "--max-retries", n);
        }
        if let Some(n) = self.max_concurrent {
            push(&mut args, "--max-concurrent", n);
        }
        if let Some(n) = self.rate_limit {
            push(&mut args, "--rate-limit", n);
        }
        push(
            &mut args,
            "--pool-idle-timeout",
            duration_arg(self.pool_idle_timeout),
        );
        push(
            &mut args,
            "--connect-timeout",
            duration_arg(self.connect_timeout),
        );
        push(
            &mut args,
            "--drain-timeout",
            duration_arg(self.drain_timeout),
        );
        args
    }

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

/// Appends `--flag=value`; the `=` form keeps a value starting with `-` from reading as a flag.
pub(crate) fn push(args: &mut Vec<String>, flag: &str, value: impl std::fmt::Display) {
    args.push(format!("{flag}={value}"));
}

/// A duration as a flag value that parses back exactly (the Go format rounds through a float).
pub(crate) fn duration_arg(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(policy: PolicyArgs) {
        assert_round_trips(&policy, policy.to_args());
    }

    #[test]
    fn defaults_are_the_command_lines() {
        let defaults = PolicyArgs::default();
        assert_eq!(defaults.pool_idle_timeout, Duration::from_secs(90));
        assert_eq!(defaults.connect_timeout, Duration::from_secs(1));
        assert_eq!(defaults.drain_timeout, Duration::from_secs(10));
        assert_eq!(defaults.max_retries, None);
        round_trip(defaults);
    }

    #[test]
    fn every_flag_round_trips() {
        round_trip(PolicyArgs {
            load_balancer: Some(trellis_balance::Policy::ring_hash("x-user").unwrap()),
            timeout: Some(Duration::from_millis(1500)),
            per_try_timeout: Some(Duration::from_nanos(1_000_000_001)),
            max_retries: Some(0),
            max_concurrent: Some(7),
            rate_limit: Some(100),
            pool_idle_timeout: Duration::from_secs(3600),
            connect_timeout: Duration::from_millis(250),
            drain_timeout: Duration::ZERO,
        });
    }

    #[test]
    fn durations_format_exactly() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(90),
            Duration::from_millis(1),
            Duration::from_micros(1500),
            Duration::from_nanos(7),
            Duration::new(3_600, 123_456_789),
        ] {
            assert_eq!(trellis_types::parse_go_duration(&duration_arg(d)), Ok(d));
        }
    }
}
