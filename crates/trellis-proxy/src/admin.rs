//! The admin listener: `/metrics`, `/ready`, `/live`, `/endpoints`.

use crate::body::{Body, full};
use crate::discovery::Discovery;
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub struct Admin {
    pub metrics: Metrics,
    pub discovery: Arc<Discovery>,
    /// The sidecar's local app, shown under `inbound`.
    pub inbound: Option<Arc<Upstream>>,
    /// Set once the proxy is registered and its app healthy (sidecar) or listening (gateway);
    /// cleared when shutdown starts.
    pub ready: Arc<AtomicBool>,
}

impl Admin {
    pub fn handle(&self, request: &Request<Body>) -> Response<Body> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        }
        match request.uri().path() {
            "/metrics" => {
                let now = Instant::now();
                for upstream in self.discovery.upstreams().iter().chain(self.inbound.iter()) {
                    let (healthy, ejected) = upstream.counts(now);
                    self.metrics
                        .set_endpoints(upstream.name(), healthy, ejected);
                }
                let mut response = Response::new(full(self.metrics.encode()));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            "/live" => text(StatusCode::OK, "live\n"),
            "/ready" if self.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready\n"),
            "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            "/endpoints" => {
                let now = Instant::now();
                let services: Map<String, Value> = self
                    .discovery
                    .upstreams()
                    .iter()
                    .map(|u| (u.name().to_string(), u.view(now)))
                    .collect();
                let mut body = json!({ "services": services });
                if let Some(inbound) = &self.inbound {
                    body["inbound"] = inbound.view(now);
                }
                let mut response = Response::new(full(format!("{body:#}\n")));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /ready, /live, /endpoints\n",
            ),
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
