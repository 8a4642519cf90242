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

/// Tracing: where spans go and how many new traces are recorded.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct TracingArgs {
    /// OTLP/HTTP collector spans are exported to (protobuf, in batches): a base URL, to which
    /// /v1/traces is added, or the full traces URL; or `off` to record no spans (trace context
    /// still propagates) [default: the registry's collector, http://<registry host>:4318]
    #[arg(long, value_name = "URL|off")]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces recorded, 0 to 1; a request that carries a sampling decision
    /// (traceparent flags, B3) keeps it
    #[arg(long, value_name = "RATIO", default_value = "1", value_parser = parse_ratio)]
    pub trace_sample: f64,
    /// service.name of the spans [default: the sidecar's --service; "gateway" for the gateway]
    #[arg(long, value_name = "NAME")]
    pub trace_service: Option<String>,
}

impl Default for TracingArgs {
    fn default() -> Self {
        parse_in_code(["tracing"])
    }
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{text:?} is not a ratio from 0 to 1")),
    }
}

/// The OTLP/HTTP path of traces.
const TRACES_PATH: &str = "/v1/traces";

/// The collector spans go to when `--otlp-endpoint` is not given: port 4318 of the registry's
/// host (`trellis server`'s OTLP listener).
pub fn default_otlp_endpoint(registry: &str) -> Result<String> {
    // The registry may be given as HOST:PORT, as Consul's CONSUL_HTTP_ADDR may, and as a list
    // of its servers: the first one's collector.
    let first = registry.split(',').next().unwrap_or(registry);
    let normalised = trellis_client::normalise_addr(first)
        .map_err(|e| Error::config(format!("--registry {registry:?}: {e}")))?;
    let mut url = reqwest::Url::parse(&normalised)
        .map_err(|e| Error::config(format!("--registry {registry:?}: {e}")))?;
    if url.host_str().is_none() {
        return Err(Error::config(format!(
            "--registry {registry:?} has no host"
        )));
    }
    url.set_scheme("http")
        .map_err(|()| Error::config(format!("--registry {registry:?} is not an HTTP URL")))?;
    url.set_port(Some(4318))
        .map_err(|()| Error::config(format!("--registry {registry:?} cannot take a port")))?;
    url.set_path(TRACES_PATH);
    url.set_query(None);
    Ok(url.to_string())
}

impl TracingArgs {
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(endpoint) = &self.otlp_endpoint {
            push(&mut args, "--otlp-endpoint", endpoint);
        }
        push(&mut args, "--trace-sample", self.trace_sample);
        if let Some(name) = &self.trace_service {
            push(&mut args, "--trace-service", name);
        }
        args
    }

    /// The export URL, `None` when tracing is off; validated.
    pub fn endpoint(&self, registry: &str) -> Result<Option<String>> {
        match self.otlp_endpoint.as_deref() {
            Some("off") => Ok(None),
            None => default_otlp_endpoint(registry).map(Some),
            Some(url) => {
                let mut parsed = reqwest::Url::parse(url)
                    .map_err(|e| Error::config(format!("--otlp-endpoint {url:?}: {e}")))?;
                if parsed.scheme() != "http" || parsed.host_str().is_none() {
                    return Err(Error::config(format!(
                        "--otlp-endpoint {url:?} must be an http:// URL or off"
                    )));
                }
                // A collector's base URL gets the traces path, as OpenTelemetry's
                // OTEL_EXPORTER_OTLP_ENDPOINT does (and the example services' flag).
                if !parsed.path().ends_with(TRACES_PATH) {
                    let path = format!("{}{TRACES_PATH}", parsed.path().trim_end_matches('/'));
                    parsed.set_path(&path);
                }
                Ok(Some(parsed.to_string()))
            }
        }
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
    fn tracing_flags_default_round_trip_and_validate() {
        let defaults = TracingArgs::default();
        assert_eq!(defaults.trace_sample, 1.0);
        assert_eq!(defaults.otlp_endpoint, None);
        assert_round_trips(&defaults, defaults.to_args());
        let set = TracingArgs {
            otlp_endpoint: Some("http://collector:4318/v1/traces".into()),
            trace_sample: 0.25,
            trace_service: Some("edge".into()),
        };
        assert_round_trips(&set, set.to_args());
        assert!(parse_command_line::<TracingArgs>(&["t", "--trace-sample", "1.5"]).is_err());
        assert!(parse_command_line::<TracingArgs>(&["t", "--trace-sample", "-0.1"]).is_err());
        assert_eq!(
            defaults
                .endpoint("http://10.1.2.3:8500")
                .unwrap()
                .as_deref(),
            Some("http://10.1.2.3:4318/v1/traces")
        );
        assert_eq!(
            default_otlp_endpoint("https://[::1]:8501/").unwrap(),
            "http://[::1]:4318/v1/traces"
        );
        assert_eq!(
            default_otlp_endpoint("registry.internal:8500").unwrap(),
            "http://registry.internal:4318/v1/traces"
        );
        let off = TracingArgs {
            otlp_endpoint: Some("off".into()),
            ..TracingArgs::default()
        };
        assert_eq!(off.endpoint("http://x:8500").unwrap(), None);
        let bad = TracingArgs {
            otlp_endpoint: Some("collector:4318".into()),
            ..TracingArgs::default()
        };
        assert!(bad.endpoint("http://x:8500").is_err());
        let base = |url: &str| TracingArgs {
            otlp_endpoint: Some(url.into()),
            ..TracingArgs::default()
        };
        for (given, used) in [
            ("http://c:4318", "http://c:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            ("http://c:4318/v1/traces", "http://c:4318/v1/traces"),
            ("http://c:4318/otel", "http://c:4318/otel/v1/traces"),
        ] {
            let endpoint = base(given).endpoint("http://x:8500").unwrap();
            assert_eq!(endpoint.as_deref(), Some(used), "{given}");
        }
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
