//! Prometheus metrics of the server: HTTP requests, blocking queries, catalog size, store commits,
//! and the trace collector's (spans received, rejected, throttled requests, the span store's size).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    pub health: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabels, Histogram>,
    pub services: Gauge,
    pub instances: Family<HealthLabels, Gauge>,
    pub watchers: Gauge,
    /// Active health probes this server ran (among servers sharing a store, its share).
    pub probes: Counter,
    /// Among servers sharing a store: the TTL checks this server owns whose TTL ran out and
    /// that it had the leader mark critical (a server alone expires TTLs in its catalog and
    /// counts none here).
    pub ttl_expired: Counter,
    pub store: StoreMetrics,
    pub coordinator: crate::coordinator::CoordinatorMetrics,
    pub traces: TraceMetrics,
}

/// What the writer records about group commits (handles to the registered metrics).
#[derive(Clone)]
pub struct StoreMetrics {
    pub commit_seconds: Histogram,
    pub batch_size: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("trellis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status code",
            requests.clone(),
        );
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.5, 14))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (blocking queries include the wait)",
            request_seconds.clone(),
        );
        let services = Gauge::default();
        registry.register("services", "Registered service names", services.clone());
        let instances = Family::<HealthLabels, Gauge>::default();
        registry.register(
            "instances",
            "Registered instances by aggregated health",
            instances.clone(),
        );
        let watchers = Gauge::default();
        registry.register(
            "watchers",
            "Blocking queries and watch streams held open",
            watchers.clone(),
        );
        let probes = Counter::default();
        registry.register(
            "check_probes",
            "Active health probes (HTTP, TCP, gRPC, script) this server ran",
            probes.clone(),
        );
        let ttl_expired = Counter::default();
        registry.register(
            "check_ttl_expired",
            "Among servers sharing a store: TTL checks this server owns that ran out and were marked critical",
            ttl_expired.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 14));
        registry.register(
            "store_commit_duration_seconds",
            "Time to make one batch durable (fsync included)",
            commit_seconds.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "store_batch_size",
            "Commands applied per group commit",
            batch_size.clone(),
        );
        let coordinator = crate::coordinator::CoordinatorMetrics::register(&mut registry);
        let traces = TraceMetrics::register(&mut registry);
        Self {
            registry,
            traces,
            coordinator,
            requests,
            request_seconds,
            services,
            instances,
            watchers,
            probes,
            ttl_expired,
            store: StoreMetrics {
                commit_seconds,
                batch_size,
            },
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Which OTLP transport a request came by.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: &'static str,
}

/// Why spans were refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub protocol: &'static str,
    /// `invalid_id` (a trace, span or parent id of the wrong size or all zeros) or `too_large`
    /// (a span bigger than the whole store).
    pub reason: &'static str,
}

/// The trace collector's metrics (handles to the registered metrics).
#[derive(Clone, Debug, Default)]
pub struct TraceMetrics {
    /// Spans in accepted requests, stored or rejected.
    pub spans_received: Family<ProtocolLabels, Counter>,
    pub spans_rejected: Family<RejectLabels, Counter>,
    /// Requests answered 429 / RESOURCE_EXHAUSTED by the back-pressure.
    pub requests_throttled: Family<ProtocolLabels, Counter>,
    /// Requests refused as unreadable (400 / INVALID_ARGUMENT).
    pub requests_malformed: Family<ProtocolLabels, Counter>,
    pub inflight_bytes: Gauge,
    pub store_bytes: Gauge,
    pub store_max_bytes: Gauge,
    pub store_spans: Gauge,
    pub store_traces: Gauge,
    pub evicted_traces: Counter,
}

impl TraceMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = TraceMetrics::default();
        registry.register(
            "otlp_spans_received",
            "Spans received over OTLP, by protocol (http or grpc), stored or rejected",
            m.spans_received.clone(),
        );
        registry.register(
            "otlp_spans_rejected",
            "Spans refused, by protocol and reason (invalid_id, too_large)",
            m.spans_rejected.clone(),
        );
        registry.register(
            "otlp_requests_throttled",
            "OTLP requests refused for back-pressure (HTTP 429, gRPC RESOURCE_EXHAUSTED)",
            m.requests_throttled.clone(),
        );
        registry.register(
            "otlp_requests_malformed",
            "OTLP requests refused as unreadable (HTTP 400, gRPC INVALID_ARGUMENT)",
            m.requests_malformed.clone(),
        );
        registry.register_with_unit(
            "otlp_inflight",
            "Payload bytes of OTLP requests being received, decoded and stored",
            Unit::Bytes,
            m.inflight_bytes.clone(),
        );
        registry.register_with_unit(
            "trace_store",
            "Estimated bytes held by the span store",
            Unit::Bytes,
            m.store_bytes.clone(),
        );
        registry.register_with_unit(
            "trace_store_max",
            "The span store's bound (--trace-store-bytes)",
            Unit::Bytes,
            m.store_max_bytes.clone(),
        );
        registry.register(
            "trace_store_spans",
            "Spans held by the span store",
            m.store_spans.clone(),
        );
        registry.register(
            "trace_store_traces",
            "Traces held by the span store",
            m.store_traces.clone(),
        );
        registry.register(
            "trace_store_evicted_traces",
            "Whole traces evicted from the span store to stay within its bound",
            m.evicted_traces.clone(),
        );
        m
    }
}
