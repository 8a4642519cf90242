//! Tracing of the example services with `tracing` + OpenTelemetry: the layer that exports their
//! spans in batches over OTLP/HTTP protobuf (the binary installs it in its subscriber), W3C
//! trace context in and out, and the span helpers the services use for their requests,
//! outgoing calls and database queries.
//!
//! Where spans go comes from `--otlp-endpoint URL|off`, or else `OTEL_EXPORTER_OTLP_ENDPOINT`;
//! with neither, nothing is exported (a service started by hand does not assume a collector
//! exists). `trellis demo` points its services at its registry's collector.

use std::fmt;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use reqwest::Url;
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::{Layer, Registry};

use crate::Error;

/// The OTLP path of traces, added to an endpoint given without it (as the OpenTelemetry spec
/// says for `OTEL_EXPORTER_OTLP_ENDPOINT`).
const TRACES_PATH: &str = "/v1/traces";
/// How long spans wait to be batched when `OTEL_BSP_SCHEDULE_DELAY` does not say: shorter
/// than the SDK's 5 s so that a trace is searchable about a second after its request.
const SCHEDULE_DELAY: Duration = Duration::from_secs(1);
/// Longest an export may take, and longest the flush at shutdown waits.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where spans are exported: an OTLP/HTTP traces URL, or nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint(Option<Url>);

impl OtlpEndpoint {
    /// Nothing is exported.
    pub const OFF: Self = Self(None);

    /// The full URL spans are POSTed to, `.../v1/traces`.
    pub fn traces_url(&self) -> Option<&Url> {
        self.0.as_ref()
    }
}

impl fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(url) => write!(f, "{url}"),
            None => f.write_str("off"),
        }
    }
}

impl std::str::FromStr for OtlpEndpoint {
    type Err = String;

    /// `off` (or an empty value), or an `http://` URL: a collector's base URL
    /// (`http://127.0.0.1:4318`, to which `/v1/traces` is added) or the full traces URL.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("off") {
            return Ok(Self::OFF);
        }
        let mut url: Url = text
            .parse()
            .map_err(|e| format!("{text:?} is not a URL or off: {e}"))?;
        if url.scheme() != "http" || url.host().is_none() {
            return Err(format!(
                "{text:?} must be an http:// URL with a host (TLS is not built in), or off"
            ));
        }
        if !url.path().ends_with(TRACES_PATH) {
            let path = format!("{}{TRACES_PATH}", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        Ok(Self(Some(url)))
    }
}

/// The tracing flags every example service takes.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct TracingArgs {
    /// OTLP/HTTP collector to export spans to: a base URL such as http://127.0.0.1:4318
    /// (`trellis server`'s receiver; /v1/traces is added) or `off` [default: off, unless
    /// OTEL_EXPORTER_OTLP_ENDPOINT is set]
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "URL|off",
        default_value = "off"
    )]
    pub otlp_endpoint: OtlpEndpoint,
}

impl Default for TracingArgs {
    fn default() -> Self {
        Self {
            otlp_endpoint: OtlpEndpoint::OFF,
        }
    }
}

impl TracingArgs {
    /// Exports to `endpoint`.
    pub fn export_to(endpoint: OtlpEndpoint) -> Self {
        Self {
            otlp_endpoint: endpoint,
        }
    }

    pub(crate) fn to_args(&self) -> Vec<String> {
        vec![format!("--otlp-endpoint={}", self.otlp_endpoint)]
    }
}

/// The tracing layer that records this crate's spans for export, to install in the process's
/// subscriber (the binary owns the subscriber, its log output and filters).
pub type OtelLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// A service's span export, from [`Telemetry::start`] to [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sets up W3C trace context and, when `args` name a collector, a batch exporter of
    /// `service`'s spans (`service.name` = `service`) and the layer that feeds it. Must run
    /// inside the Tokio runtime, whose threads carry the exports.
    pub fn start(
        service: &'static str,
        instance: &str,
        args: &TracingArgs,
    ) -> Result<(Self, Option<OtelLayer>), Error> {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let Some(url) = args.otlp_endpoint.traces_url() else {
            return Ok((Self { provider: None }, None));
        };
        let provider = provider(service, instance, url)?;
        // Only this crate's spans (requests, calls, queries) and what is logged inside them;
        // the participant library's log lines become events of the branch's request span.
        let targets = Targets::new()
            .with_target("trellis_example", tracing::Level::TRACE)
            .with_target("trellis_participant", tracing::Level::INFO);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(targets)
            .boxed();
        Ok((
            Self {
                provider: Some(provider),
            },
            Some(layer),
        ))
    }

    /// Flushes the spans not exported yet (bounded by [`EXPORT_TIMEOUT`]).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The flush blocks until the exporter, which runs its HTTP calls on this runtime, is
        // done: off the runtime's threads.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(EXPORT_TIMEOUT))
                .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "spans not flushed at shutdown"),
            Err(e) => tracing::warn!(error = %e, "spans not flushed at shutdown"),
        }
    }
}

fn provider(service: &'static str, instance: &str, url: &Url) -> Result<SdkTracerProvider, Error> {
    let http = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        // The collector is reached directly, never through an inherited HTTP_PROXY.
        .no_proxy()
        .build()
        .map_err(Error::Client)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(RuntimeClient {
            http,
            runtime: tokio::runtime::Handle::current(),
        })
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| Error::Config(format!("cannot export spans to {url}: {e}")))?;
    let mut batch = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        batch = batch.with_scheduled_delay(SCHEDULE_DELAY);
    }
    // The batch processor's queue is bounded (2048 spans, OTEL_BSP_MAX_QUEUE_SIZE): a span
    // that finds it full is dropped, so a slow or absent collector never slows a request.
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch.build())
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            instance.to_owned(),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// The exporter's HTTP client: the workspace's async reqwest, run on the service's Tokio
/// runtime (the SDK's batch thread has no reactor of its own; it only awaits the result).
#[derive(Debug)]
struct RuntimeClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(
        &self,
        request: axum::http::Request<Bytes>,
    ) -> Result<axum::http::Response<Bytes>, HttpError> {
        let http = self.http.clone();
        let call = async move {
            let (parts, body) = request.into_parts();
            let request = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .build()?;
            let response = http.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let mut answer = axum::http::Response::new(response.bytes().await?);
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            Ok::<_, reqwest::Error>(answer)
        };
        Ok(self.runtime.spawn(call).await??)
    }
}

/// Routes not traced: probes and scrapes, which would otherwise make most of the traces.
fn untraced(path: &str) -> bool {
    matches!(path, "/health" | "/metrics")
}

/// Middleware: each request is a SERVER span, child of the caller's span when the request
/// carries a W3C `traceparent`, named `METHOD /route` after the matched route pattern.
pub(crate) async fn trace_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    if untraced(&route) {
        return next.run(request).await;
    }
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %request.uri().path(),
        http.response.status_code = Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", i64::from(status));
    // A server's 4xx is the client's mistake, not the server's error (OpenTelemetry's HTTP
    // conventions).
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// A CLIENT span for an outgoing HTTP call of the current request.
pub(crate) fn client_span(method: &str, name: &str, peer: &str, url: &str) -> Span {
    tracing::info_span!(
        "call",
        otel.name = %format!("{method} {name}"),
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = %method,
        url.full = %url,
        server.address = %peer,
        peer.service = %peer,
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

/// Records a call's answer on its CLIENT span, an error if `error` (for a client, normally
/// every 4xx and 5xx).
pub(crate) fn record_status(span: &Span, status: u16, error: bool) {
    span.record("http.response.status_code", i64::from(status));
    if error {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.to_string());
    }
}

/// Records a call that got no answer on its CLIENT span.
pub(crate) fn record_failure(span: &Span, error: &reqwest::Error) {
    span.record("otel.status_code", "ERROR");
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "request"
    };
    span.record("error.type", kind);
}

/// Request headers copied from the incoming request onto every outgoing call.
const FORWARDED: [&str; 3] = ["traceparent", "tracestate", "x-request-id"];

/// The headers of an outgoing call made inside `span`: its W3C trace context when spans are
/// recorded (so the callee's span is the child of this CLIENT span), otherwise the incoming
/// request's `traceparent`/`tracestate` as they came (so the proxies' spans still join one
/// trace); `x-request-id` always.
pub(crate) fn outgoing_headers(span: &Span, incoming: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let context = span.context();
    let traced = context.span().span_context().is_valid();
    if traced {
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(&mut headers));
        });
    }
    for name in FORWARDED {
        if traced && name != "x-request-id" {
            continue;
        }
        for value in incoming.get_all(name) {
            headers.append(name, value.clone());
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_traces_path_once() {
        let parse = |s: &str| s.parse::<OtlpEndpoint>().map(|e| e.to_string());
        assert_eq!(
            parse("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            parse("http://collector:4318/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            parse("http://c:4318/v1/traces").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            parse("http://c:4318/otel").unwrap(),
            "http://c:4318/otel/v1/traces"
        );
        assert_eq!(parse("off").unwrap(), "off");
        assert_eq!(parse("").unwrap(), "off");
        for bad in ["https://c:4318", "c:4318", "nonsense"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let round: OtlpEndpoint = parse("http://c:4318").unwrap().parse().unwrap();
        assert_eq!(round.to_string(), "http://c:4318/v1/traces");
    }

    #[test]
    fn without_spans_the_incoming_trace_context_is_forwarded() {
        let mut incoming = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        incoming.insert("traceparent", tp.parse().unwrap());
        incoming.insert("x-request-id", "r-1".parse().unwrap());
        incoming.insert("authorization", "secret".parse().unwrap());
        let out = outgoing_headers(&Span::none(), &incoming);
        assert_eq!(out["traceparent"], tp);
        assert_eq!(out["x-request-id"], "r-1");
        assert!(!out.contains_key("authorization"));
    }

    #[test]
    fn health_and_metrics_are_not_traced() {
        assert!(untraced("/health") && untraced("/metrics"));
        assert!(!untraced("/users/{id}"));
    }
}
