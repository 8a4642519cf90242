//! `GET /v1/trellis/traces/dependencies?lookback=&endTs=`: the service dependency graph with
//! call statistics per edge, the form the dashboard reads (Jaeger's `/api/dependencies` keeps
//! its own shape: parent, child, callCount); and `GET /v1/trellis/traces/services` with the same
//! parameters: requests per service (`callCount`, `errorCount`, `errorRate`, `ratePerSec`,
//! `p50Ms`, `p99Ms`), a request being a span that enters its service (no parent, a parent not
//! stored, or a parent in another service).
//!
//! ```json
//! {"endTs": 1750000000000, "lookback": 3600000, "dependencies": [
//!   {"parent": "gateway", "child": "orders", "callCount": 120, "errorCount": 3,
//!    "errorRate": 0.025, "p50Ms": 4.2, "p99Ms": 38.0}]}
//! ```
//!
//! `endTs` is milliseconds since the epoch (default now); `lookback` milliseconds or a
//! duration such as `15m` or `1h` (default one hour). An edge counts the spans of `child` whose
//! parent span belongs to `parent` and that started in the window; latency is those child
//! spans' durations (the callee's side), errors those with an error status.

use super::TraceStore;
use super::jaeger;
use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use trellis_traces::SpanStore;

pub const PATH: &str = "/v1/trellis/traces/dependencies";
pub const SERVICES_PATH: &str = "/v1/trellis/traces/services";

/// The default window: one hour.
const DEFAULT_LOOKBACK_MS: u64 = 3_600_000;

pub fn router(store: TraceStore) -> Router {
    Router::new()
        .route(PATH, get(dependencies))
        .route(SERVICES_PATH, get(services))
        .with_state(store)
}

/// Milliseconds: a bare number, or a duration as Jaeger UI's lookback takes it (`15m`, `2d`).
fn parse_millis(value: &str) -> Option<u64> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(ms) => Some(ms),
        Err(_) => jaeger::parse_lookback(value).ok().map(|ns| ns / 1_000_000),
    }
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

fn ms(ns: u64) -> f64 {
    // Microsecond resolution is plenty for a graph's labels.
    (ns / 1_000) as f64 / 1_000.0
}

/// The window asked for: (end, lookback), in milliseconds.
fn window(params: &[(String, String)]) -> Result<(u64, u64), String> {
    let get = |name: &str| jaeger::param(params, name);
    let end_ms = match get("endTs") {
        None => jaeger::now_ns() / 1_000_000,
        Some(v) => v.parse::<u64>().map_err(|_| {
            format!("cannot parse endTs {v:?}: expected milliseconds since the epoch")
        })?,
    };
    let lookback_ms = match get("lookback") {
        None => DEFAULT_LOOKBACK_MS,
        Some(v) => parse_millis(v).ok_or_else(|| {
            format!("cannot parse lookback {v:?}: expected milliseconds or a duration such as 15m")
        })?,
    };
    Ok((end_ms, lookback_ms))
}

/// The answer of either endpoint: `{"endTs", "lookback", <key>: rows}`, the rows made by `rows`
/// from the store, the window in nanoseconds and its length in seconds.
fn windowed(
    store: &TraceStore,
    params: &[(String, String)],
    key: &str,
    rows: impl FnOnce(&SpanStore, u64, u64, f64) -> Vec<Value>,
) -> Response {
    let (end_ms, lookback_ms) = match window(params) {
        Ok(window) => window,
        Err(message) => return bad_request(message),
    };
    let seconds = (lookback_ms as f64 / 1_000.0).max(0.001);
    let rows = rows(
        &store.lock(),
        end_ms.saturating_mul(1_000_000),
        lookback_ms.saturating_mul(1_000_000),
        seconds,
    );
    Json(json!({"endTs": end_ms, "lookback": lookback_ms, key: rows})).into_response()
}

async fn dependencies(
    State(store): State<TraceStore>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    windowed(
        &store,
        &params,
        "dependencies",
        |spans, end, lookback, _| {
            let edges = spans.dependencies(end, lookback);
            edges
                .iter()
                .map(|d| {
                    json!({
                        "parent": &*d.parent,
                        "child": &*d.child,
                        "callCount": d.call_count,
                        "errorCount": d.error_count,
                        "errorRate": d.error_rate(),
                        "p50Ms": ms(d.p50_ns),
                        "p99Ms": ms(d.p99_ns),
                    })
                })
                .collect()
        },
    )
}

async fn services(
    State(store): State<TraceStore>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    windowed(
        &store,
        &params,
        "services",
        |spans, end, lookback, seconds| {
            let stats = spans.service_stats(end, lookback);
            stats
                .iter()
                .map(|s| {
                    json!({
                        "service": &*s.service,
                        "callCount": s.call_count,
                        "errorCount": s.error_count,
                        "errorRate": s.error_rate(),
                        "ratePerSec": s.call_count as f64 / seconds,
                        "p50Ms": ms(s.p50_ns),
                        "p99Ms": ms(s.p99_ns),
                    })
                })
                .collect()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::parse_millis;

    #[test]
    fn lookbacks_parse() {
        assert_eq!(parse_millis("1500"), Some(1500));
        assert_eq!(parse_millis("250ms"), Some(250));
        assert_eq!(parse_millis("30s"), Some(30_000));
        assert_eq!(parse_millis("15m"), Some(900_000));
        assert_eq!(parse_millis("2h"), Some(7_200_000));
        assert_eq!(parse_millis("1d"), Some(86_400_000));
        assert_eq!(parse_millis("h"), None);
        assert_eq!(parse_millis("5y"), None);
        assert_eq!(parse_millis("-5"), None);
    }
}
