//! Prometheus metrics of the server: HTTP requests, blocking queries, catalog size, store commits.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
    pub store: StoreMetrics,
    pub coordinator: crate::coordinator::CoordinatorMetrics,
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
        Self {
            registry,
            coordinator,
            requests,
            request_seconds,
            services,
            instances,
            watchers,
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
