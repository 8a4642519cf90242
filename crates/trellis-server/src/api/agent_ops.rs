//! The agent's own operations: `/v1/agent/metrics` (Consul's in-memory sink summary, or
//! `?format=prometheus`), `/v1/agent/reload` and `/v1/agent/leave`.

use super::clock::now_utc;
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{add_index_headers, json_response, to_json_bytes};
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// `GET /v1/agent/metrics[?format=prometheus]`.
///
/// The JSON is go-metrics' `MetricsSummary` (what Consul's in-memory sink displays): gauges as
/// they are now, counters and samples from the server's Prometheus metrics. Consul's counters
/// and samples cover the last 10 s interval; these are cumulative since the server started
/// (`Rate` is 0: there is no interval), samples are histograms (`Min`/`Max` are the bounds of
/// the buckets that hold the observations, in the metric's unit, seconds for durations).
pub async fn metrics(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let text = state.refreshed_metrics().encode();
    match query.get("format") {
        None | Some("") => Ok(json_response(1, to_json_bytes(&summary(&text, now_utc())))),
        Some("prometheus") => {
            let mut response = text.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            add_index_headers(headers, 1);
            Ok(response)
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid format {other:?}: want prometheus, or none for JSON"
        ))),
    }
}

/// `PUT /v1/agent/leave`: answers 200, then the server shuts down gracefully as on SIGTERM
/// (stops accepting, releases blocking queries and watches, drains, exits 0), as Consul's agent
/// leaves its cluster and exits.
pub async fn leave(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    tracing::info!("/v1/agent/leave: shutting down");
    state.leave();
    Ok(empty_ok())
}

/// `PUT /v1/agent/reload`: reads the configuration file again the way the server read it at
/// start (the same parsing and validation, with the command-line flags it started with still
/// laid over it). A file that cannot be read, parsed or validated answers 500 with the reason,
/// as Consul answers a failed reload. Trellis applies configuration only at start, so a valid
/// file answers 200 and the settings that differ from the running ones are logged at warn as
/// needing a restart. Without a configuration file there is nothing to reload (200), as in
/// Consul without config files.
pub async fn reload(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let running = state.config();
    let Some(file) = running.config_file.clone() else {
        tracing::info!("/v1/agent/reload: no configuration file; nothing to reload");
        return Ok(empty_ok());
    };
    let path = file.path.display().to_string();
    let loaded = tokio::task::spawn_blocking(move || file.load())
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reload failed: {e}"),
            )
        })?;
    let reloaded = match loaded {
        Ok(config) => config,
        Err(error) => {
            let reason = error.to_string();
            tracing::warn!("/v1/agent/reload: {reason}; the running configuration is unchanged");
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, reason));
        }
    };
    let changed = running.differences(&reloaded);
    if changed.is_empty() {
        tracing::info!("/v1/agent/reload: {path} read again; no setting changed");
    } else {
        tracing::warn!(
            "/v1/agent/reload: {path} changes {}; Trellis applies no setting live: restart the \
             server to apply them",
            changed.join(", ")
        );
    }
    Ok(empty_ok())
}

/// An empty 200 with the Consul headers (Consul answers these writes with no body).
fn empty_ok() -> Response {
    let mut response = ().into_response();
    add_index_headers(response.headers_mut(), 1);
    response
}

/// One parsed sample line: `name{labels} value`.
struct Line<'a> {
    name: &'a str,
    labels: Vec<(String, String)>,
    value: f64,
}

fn parse_line(line: &str) -> Option<Line<'_>> {
    let (head, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match head.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)),
        None => (head, Vec::new()),
    };
    Some(Line {
        name,
        labels,
        value,
    })
}

/// `a="x",b="y"` (the server's label values hold no quotes or commas).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.to_owned(), v.trim_matches('"').to_owned()))
        })
        .collect()
}

/// `trellis_http_requests` → `trellis.http_requests`, as Consul's names are dotted.
fn dotted(name: &str) -> String {
    name.replacen('_', ".", 1)
}

fn labels_json(labels: &[(String, String)]) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

#[derive(Default)]
struct Histogram {
    sum: f64,
    count: f64,
    /// (upper bound, cumulative count)
    buckets: Vec<(f64, f64)>,
}

/// Consul's `MetricsSummary` from the Prometheus text encoding of the server's metrics.
fn summary(text: &str, timestamp: String) -> Value {
    let mut kinds: BTreeMap<&str, &str> = BTreeMap::new();
    let mut gauges = Vec::new();
    let mut counters = Vec::new();
    let mut histograms: BTreeMap<(String, Vec<(String, String)>), Histogram> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                kinds.insert(name, kind);
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some(mut sample) = parse_line(line) else {
            continue;
        };
        if kinds.get(sample.name) == Some(&"gauge") {
            gauges.push(json!({
                "Name": dotted(sample.name),
                "Value": sample.value,
                "Labels": labels_json(&sample.labels),
            }));
        } else if let Some(base) = sample.name.strip_suffix("_total")
            && kinds.get(base) == Some(&"counter")
        {
            counters.push(json!({
                "Name": dotted(base),
                "Count": sample.value,
                "Rate": 0.0,
                "Sum": sample.value,
                "Min": 1.0,
                "Max": 1.0,
                "Mean": 1.0,
                "Stddev": 0.0,
                "Labels": labels_json(&sample.labels),
            }));
        } else {
            for suffix in ["_bucket", "_sum", "_count"] {
                let Some(base) = sample.name.strip_suffix(suffix) else {
                    continue;
                };
                if kinds.get(base) != Some(&"histogram") {
                    continue;
                }
                let le = sample
                    .labels
                    .iter()
                    .position(|(k, _)| k == "le")
                    .map(|i| sample.labels.remove(i).1);
                let entry = histograms
                    .entry((base.to_owned(), sample.labels.clone()))
                    .or_default();
                match (suffix, le) {
                    ("_sum", _) => entry.sum = sample.value,
                    ("_count", _) => entry.count = sample.value,
                    (_, Some(le)) => {
                        let bound = if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().unwrap_or(f64::INFINITY)
                        };
                        entry.buckets.push((bound, sample.value));
                    }
                    _ => {}
                }
                break;
            }
        }
    }
    let samples: Vec<Value> = histograms
        .iter()
        .filter(|(_, h)| h.count > 0.0)
        .map(|((name, labels), h)| {
            let mean = h.sum / h.count;
            let mut lower = 0.0;
            let mut min = 0.0;
            let mut max = mean;
            let mut seen_first = false;
            for &(bound, cumulative) in &h.buckets {
                if !seen_first && cumulative > 0.0 {
                    min = lower;
                    seen_first = true;
                }
                if cumulative >= h.count {
                    max = if bound.is_finite() { bound } else { h.sum };
                    break;
                }
                lower = bound;
            }
            json!({
                "Name": dotted(name),
                "Count": h.count,
                "Rate": 0.0,
                "Sum": h.sum,
                "Min": min,
                "Max": max,
                "Mean": mean,
                "Stddev": 0.0,
                "Labels": labels_json(labels),
            })
        })
        .collect();
    json!({
        "Timestamp": timestamp,
        "Gauges": gauges,
        "Points": [],
        "Counters": counters,
        "Samples": samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_maps_gauges_counters_and_histograms() {
        let text = "# TYPE trellis_services gauge\n\
                    trellis_services 3\n\
                    # TYPE trellis_http_requests counter\n\
                    trellis_http_requests_total{route=\"/v1/kv\",method=\"GET\",code=\"200\"} 5\n\
                    # TYPE trellis_batch histogram\n\
                    trellis_batch_sum 6.0\n\
                    trellis_batch_count 3\n\
                    trellis_batch_bucket{le=\"1.0\"} 1\n\
                    trellis_batch_bucket{le=\"2.0\"} 2\n\
                    trellis_batch_bucket{le=\"4.0\"} 3\n\
                    trellis_batch_bucket{le=\"+Inf\"} 3\n\
                    # EOF\n";
        let s = summary(text, "t".into());
        assert_eq!(
            s["Gauges"],
            json!([{"Name": "trellis.services", "Value": 3.0, "Labels": {}}])
        );
        assert_eq!(s["Counters"][0]["Name"], "trellis.http_requests");
        assert_eq!(s["Counters"][0]["Count"], 5.0);
        assert_eq!(s["Counters"][0]["Labels"]["route"], "/v1/kv");
        let sample = &s["Samples"][0];
        assert_eq!(sample["Name"], "trellis.batch");
        assert_eq!(sample["Count"], 3.0);
        assert_eq!(sample["Mean"], 2.0);
        assert_eq!(sample["Min"], 0.0);
        assert_eq!(sample["Max"], 4.0);
        assert_eq!(s["Points"], json!([]));
    }
}
