//! Prometheus metrics of an example service, served at `/metrics`: requests by route, method and
//! status code, and how long they took; database queries by operation, and how long they took.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    /// The SQL verb: `SELECT`, `INSERT`, ...
    operation: &'static str,
    table: &'static str,
}

/// Database query latency of the whole process: the database handles are opened before the
/// router (and its [`Metrics`]) exists, so they record here and every [`Metrics`] exposes it.
static QUERY_SECONDS: LazyLock<Family<QueryLabels, Histogram>> = LazyLock::new(|| {
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_01, 2.5, 14)))
});

/// Records how long one query took (on its blocking thread, lock wait included).
pub(crate) fn observe_query(operation: &'static str, table: &'static str, took: Duration) {
    QUERY_SECONDS
        .get_or_create(&QueryLabels { operation, table })
        .observe(took.as_secs_f64());
}

/// The service's metrics; one per process, shared by every request.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    seconds: Family<RouteLabels, Histogram>,
}

impl Metrics {
    pub(crate) fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("trellis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status code",
            requests.clone(),
        );
        let seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.5, 14))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            seconds.clone(),
        );
        registry.register(
            "db_query_duration_seconds",
            "Time to run a database query, waiting for the connection included, by operation and table",
            QUERY_SECONDS.clone(),
        );
        Arc::new(Self {
            registry,
            requests,
            seconds,
        })
    }

    /// The OpenMetrics text of every metric.
    pub(crate) fn render(&self) -> Response {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        let mut response = text.into_response();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        response
    }
}

/// Counts and times every request. Routes are labelled by their pattern (`/users/{id}`), never
/// by the raw path, so clients cannot create label values at will.
pub(crate) async fn observe(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = match request.method().as_str() {
        known @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => known,
        _ => "other",
    }
    .to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let code = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            method,
            code,
        })
        .inc();
    metrics
        .seconds
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}
