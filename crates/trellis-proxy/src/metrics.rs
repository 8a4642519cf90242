//! Prometheus metrics of the data plane, named as the issue specifies.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Which listener handled a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound = 0,
    Outbound = 1,
    Gateway = 2,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
            Self::Gateway => "gateway",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    direction: &'static str,
    service: Arc<String>,
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
    service: Arc<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServiceLabels {
    service: Arc<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    service: Arc<String>,
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

type HistogramFamily = Family<DirectionLabels, Histogram, fn() -> Histogram>;

/// Every metric the proxy exports, cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    retries: Family<ServiceLabels, Counter>,
    ejections: Family<ServiceLabels, Counter>,
    endpoints: Family<EndpointLabels, Gauge>,
    spans: SpanMetrics,
}

/// Counters of the span exporter: spans sent to the collector, and spans dropped by reason
/// (`queue_full`: the export queue was full; `export_failed`: the collector could not be
/// reached or refused the batch; `rejected`: the collector accepted the batch but refused these
/// spans).
#[derive(Clone)]
pub struct SpanMetrics {
    exported: Counter,
    dropped: Family<ReasonLabels, Counter>,
}

impl SpanMetrics {
    fn count(counter: &Counter, n: usize) {
        if n > 0 {
            counter.inc_by(u64::try_from(n).unwrap_or(u64::MAX));
        }
    }

    pub fn exported(&self, n: usize) {
        Self::count(&self.exported, n);
    }

    fn dropped(&self, reason: &'static str, n: usize) {
        Self::count(&self.dropped.get_or_create(&ReasonLabels { reason }), n);
    }

    pub fn dropped_queue_full(&self, n: usize) {
        self.dropped("queue_full", n);
    }

    pub fn dropped_export_failed(&self, n: usize) {
        self.dropped("export_failed", n);
    }

    pub fn dropped_rejected(&self, n: usize) {
        self.dropped("rejected", n);
    }
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s: a proxy hop is sub-millisecond, slow upstreams take seconds.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Status codes whose counters a [`RequestMetrics`] keeps at hand; others are looked up.
const CACHED_CODES: usize = 8;

/// Pre-resolved request metrics of one (direction, service): the histogram, and the counters of
/// the first few status codes seen.
pub struct RequestMetrics {
    direction: &'static str,
    service: Arc<String>,
    duration: Histogram,
    codes: [OnceLock<(u16, Counter)>; CACHED_CODES],
    requests: Family<RequestLabels, Counter>,
}

impl RequestMetrics {
    /// Counts one request answered with `code` after `took`.
    pub fn record(&self, code: u16, took: Duration) {
        self.duration.observe(took.as_secs_f64());
        for slot in &self.codes {
            let (cached, counter) = slot.get_or_init(|| (code, self.counter(code)));
            if *cached == code {
                counter.inc();
                return;
            }
        }
        self.counter(code).inc();
    }

    fn counter(&self, code: u16) -> Counter {
        self.requests
            .get_or_create(&RequestLabels {
                direction: self.direction,
                service: self.service.clone(),
                code,
            })
            .clone()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let retries = Family::<ServiceLabels, Counter>::default();
        let ejections = Family::<ServiceLabels, Counter>::default();
        let endpoints = Family::<EndpointLabels, Gauge>::default();
        // The client library appends `_total` to counters.
        registry.register(
            "trellis_requests",
            "Requests handled, by direction, service and response status",
            requests.clone(),
        );
        registry.register(
            "trellis_request_duration_seconds",
            "Time from request to response head",
            duration.clone(),
        );
        registry.register(
            "trellis_retries",
            "Retries sent to upstreams",
            retries.clone(),
        );
        registry.register(
            "trellis_ejections",
            "Endpoints ejected by outlier detection",
            ejections.clone(),
        );
        registry.register(
            "trellis_endpoints",
            "Known endpoints per service and state (healthy, ejected)",
            endpoints.clone(),
        );
        let spans = SpanMetrics {
            exported: Counter::default(),
            dropped: Family::default(),
        };
        registry.register(
            "trellis_spans_exported",
            "Spans the collector accepted",
            spans.exported.clone(),
        );
        registry.register(
            "trellis_spans_dropped",
            "Spans not exported, by reason (queue_full, export_failed, rejected)",
            spans.dropped.clone(),
        );
        // Every reason shows from the start, so a rate over it exists before the first drop.
        for reason in ["queue_full", "export_failed", "rejected"] {
            drop(spans.dropped.get_or_create(&ReasonLabels { reason }));
        }
        Self {
            registry: Arc::new(registry),
            requests,
            duration,
            retries,
            ejections,
            endpoints,
            spans,
        }
    }

    /// The span exporter's counters.
    pub fn spans(&self) -> SpanMetrics {
        self.spans.clone()
    }

    /// Handles to the request counters and latency histogram of one (direction, service), so a
    /// request is counted without building labels or looking them up.
    pub fn request_metrics(&self, direction: Direction, service: &Arc<String>) -> RequestMetrics {
        let duration = self
            .duration
            .get_or_create(&DirectionLabels {
                direction: direction.as_str(),
                service: service.clone(),
            })
            .clone();
        RequestMetrics {
            direction: direction.as_str(),
            service: service.clone(),
            duration,
            codes: Default::default(),
            requests: self.requests.clone(),
        }
    }

    pub fn request(&self, direction: Direction, service: &Arc<String>, code: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                direction: direction.as_str(),
                service: service.clone(),
                code,
            })
            .inc();
        self.duration
            .get_or_create(&DirectionLabels {
                direction: direction.as_str(),
                service: service.clone(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn retry(&self, service: &Arc<String>) {
        self.retries
            .get_or_create(&ServiceLabels {
                service: service.clone(),
            })
            .inc();
    }

    pub fn ejection(&self, service: &Arc<String>) {
        self.ejections
            .get_or_create(&ServiceLabels {
                service: service.clone(),
            })
            .inc();
    }

    pub fn set_endpoints(&self, service: &Arc<String>, healthy: usize, ejected: usize) {
        for (state, n) in [("healthy", healthy), ("ejected", ejected)] {
            self.endpoints
                .get_or_create(&EndpointLabels {
                    service: service.clone(),
                    state,
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_spec() {
        let m = Metrics::new();
        let svc = Arc::new("orders".to_owned());
        m.request(Direction::Outbound, &svc, 200, Duration::from_millis(3));
        let handle = m.request_metrics(Direction::Gateway, &svc);
        for code in [200, 200, 201, 202, 203, 204, 205, 206, 207, 208, 503] {
            handle.record(code, Duration::from_millis(1));
        }
        m.retry(&svc);
        m.ejection(&svc);
        m.set_endpoints(&svc, 2, 1);
        let text = m.encode();
        for needle in [
            r#"trellis_requests_total{direction="outbound",service="orders",code="200"} 1"#,
            "trellis_request_duration_seconds_bucket{",
            r#"trellis_retries_total{service="orders"} 1"#,
            r#"trellis_requests_total{direction="gateway",service="orders",code="200"} 2"#,
            r#"trellis_requests_total{direction="gateway",service="orders",code="503"} 1"#,
            r#"trellis_request_duration_seconds_count{direction="gateway",service="orders"} 11"#,
            r#"trellis_ejections_total{service="orders"} 1"#,
            r#"trellis_endpoints{service="orders",state="ejected"} 1"#,
            "trellis_spans_exported_total 0",
            r#"trellis_spans_dropped_total{reason="queue_full"} 0"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
