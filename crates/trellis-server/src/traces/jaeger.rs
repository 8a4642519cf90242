//! Jaeger's HTTP query API over the span store, in the JSON shapes Jaeger's UI reads:
//! `/api/services`, `/api/services/{service}/operations`, `/api/operations`, `/api/traces`
//! (search, or `traceID=` lookups), `/api/traces/{traceID}` and `/api/dependencies`.

use super::TraceStore;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use trellis_traces::{AttrValue, Resource, Span, SpanKind, StatusCode as SpanStatus, TraceId};

/// The query API's routes.
pub fn router(store: TraceStore) -> Router {
    Router::new()
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(find_traces))
        .route("/api/traces/{trace_id}", get(get_trace))
        .route("/api/dependencies", get(dependencies))
        .with_state(store)
}

type Params = Query<Vec<(String, String)>>;

/// Jaeger's `structuredResponse`.
fn respond(data: Value, total: usize) -> Response {
    axum::Json(json!({
        "data": data,
        "total": total,
        "limit": 0,
        "offset": 0,
        "errors": null,
    }))
    .into_response()
}

/// Jaeger's `structuredResponse` with one error, and that status.
fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let body = json!({
        "data": null,
        "total": 0,
        "limit": 0,
        "offset": 0,
        "errors": [{"code": status.as_u16(), "msg": msg.into()}],
    });
    (status, axum::Json(body)).into_response()
}

pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

async fn services(State(store): State<TraceStore>) -> Response {
    let services = store.lock().services();
    let total = services.len();
    respond(
        json!(services.iter().map(|s| &**s).collect::<Vec<_>>()),
        total,
    )
}

async fn service_operations(
    State(store): State<TraceStore>,
    Path(service): Path<String>,
) -> Response {
    let ops = store.lock().operations(&service, None);
    let mut names: Vec<&str> = ops.iter().map(|o| &*o.name).collect();
    names.dedup();
    let total = names.len();
    respond(json!(names), total)
}

/// `/api/operations?service=&spanKind=`: operations with their span kinds.
async fn operations(State(store): State<TraceStore>, Query(params): Params) -> Response {
    let Some(service) = param(&params, "service") else {
        return error(StatusCode::BAD_REQUEST, "parameter 'service' is required");
    };
    let kind = match param(&params, "spanKind") {
        None => None,
        Some(k) => match parse_kind(k) {
            Some(kind) => Some(kind),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unsupported span kind {k:?}"),
                );
            }
        },
    };
    let ops = store.lock().operations(service, kind);
    let data: Vec<Value> = ops
        .iter()
        .map(|o| json!({"name": &*o.name, "spanKind": o.span_kind.as_str()}))
        .collect();
    let total = data.len();
    respond(Value::Array(data), total)
}

fn parse_kind(k: &str) -> Option<SpanKind> {
    Some(match k {
        "internal" => SpanKind::Internal,
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        "unspecified" => SpanKind::Unspecified,
        _ => return None,
    })
}

/// A trace id as Jaeger takes it: up to 32 hex digits, leading zeros optional.
fn parse_trace_id(s: &str) -> Option<TraceId> {
    if s.is_empty() || s.len() > 32 {
        return None;
    }
    format!("{s:0>32}").parse().ok()
}

/// A Go duration (`1.2s`, `100ms`, `50us`) in nanoseconds.
fn parse_duration(name: &str, value: &str) -> Result<u64, String> {
    trellis_types::parse_go_duration(value)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .map_err(|e| format!("cannot parse {name}: {e}"))
}

fn parse_micros(name: &str, value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .map(|us| us.saturating_mul(1_000))
        .map_err(|_| format!("cannot parse {name}: expected microseconds since the epoch"))
}

/// The search `/api/traces` asks for. Time window: `start`/`end` in microseconds (default: the
/// last `lookback` before `end`, a duration such as `1h`, or everything stored).
pub fn parse_query(
    params: &[(String, String)],
    now_ns: u64,
) -> Result<trellis_traces::Query, String> {
    let service = param(params, "service").ok_or("parameter 'service' is required")?;
    let mut query = trellis_traces::Query::service(service);
    query.operation = param(params, "operation").map(str::to_owned);
    if let Some(tags) = param(params, "tags") {
        let map: Map<String, Value> = serde_json::from_str(tags)
            .map_err(|e| format!("malformed 'tags' parameter, expecting a JSON object: {e}"))?;
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            query.tags.push((k, v));
        }
    }
    for (k, v) in params {
        if k == "tag" {
            let (key, value) = v
                .split_once(':')
                .ok_or_else(|| format!("malformed 'tag' parameter {v:?}, expecting key:value"))?;
            query.tags.push((key.to_owned(), value.to_owned()));
        }
    }
    if let Some(v) = param(params, "minDuration") {
        query.min_duration_ns = Some(parse_duration("minDuration", v)?);
    }
    if let Some(v) = param(params, "maxDuration") {
        query.max_duration_ns = Some(parse_duration("maxDuration", v)?);
    }
    let end = match param(params, "end") {
        Some(v) => parse_micros("end", v)?,
        None => u64::MAX,
    };
    let start = match (param(params, "start"), param(params, "lookback")) {
        (Some(v), _) => parse_micros("start", v)?,
        (None, Some(lookback)) if lookback != "custom" => {
            let back = parse_lookback(lookback)?;
            end.min(now_ns).saturating_sub(back)
        }
        _ => 0,
    };
    query.start_ns = start;
    query.end_ns = end;
    if let Some(v) = param(params, "limit") {
        query.limit = v
            .parse()
            .map_err(|_| format!("cannot parse limit {v:?}: expected a number"))?;
    }
    Ok(query)
}

/// Jaeger UI's lookback: a Go duration, or a number of days as `2d`.
pub(crate) fn parse_lookback(v: &str) -> Result<u64, String> {
    if let Some(Ok(days)) = v.strip_suffix('d').map(str::parse::<u64>) {
        return Ok(days.saturating_mul(86_400_000_000_000));
    }
    parse_duration("lookback", v)
}

async fn find_traces(State(store): State<TraceStore>, Query(params): Params) -> Response {
    let ids: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "traceID")
        .map(|(_, v)| v.as_str())
        .collect();
    if !ids.is_empty() {
        let mut traces = Vec::new();
        for id in ids {
            let Some(trace_id) = parse_trace_id(id) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("malformed trace ID {id:?}"),
                );
            };
            if let Some(spans) = store.lock().trace(trace_id) {
                traces.push(render_trace(trace_id, &spans));
            }
        }
        if traces.is_empty() {
            return error(StatusCode::NOT_FOUND, "trace not found");
        }
        let total = traces.len();
        return respond(Value::Array(traces), total);
    }
    let query = match parse_query(&params, now_ns()) {
        Ok(q) => q,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let found: Vec<(TraceId, Vec<Span>)> = {
        let store = store.lock();
        store
            .find_traces(&query)
            .into_iter()
            .filter_map(|id| store.trace(id).map(|spans| (id, spans)))
            .collect()
    };
    let traces: Vec<Value> = found
        .iter()
        .map(|(id, spans)| render_trace(*id, spans))
        .collect();
    let total = traces.len();
    respond(Value::Array(traces), total)
}

async fn get_trace(State(store): State<TraceStore>, Path(id): Path<String>) -> Response {
    let Some(trace_id) = parse_trace_id(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("malformed trace ID {id:?}"),
        );
    };
    let spans = store.lock().trace(trace_id);
    match spans {
        Some(spans) => respond(json!([render_trace(trace_id, &spans)]), 1),
        None => error(StatusCode::NOT_FOUND, "trace not found"),
    }
}

/// `/api/dependencies?endTs=&lookback=` (milliseconds; defaults now and one day).
async fn dependencies(State(store): State<TraceStore>, Query(params): Params) -> Response {
    let millis = |name: &str, default: u64| match param(&params, name) {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .map(|ms| ms.saturating_mul(1_000_000))
            .map_err(|_| format!("cannot parse {name}: expected milliseconds")),
    };
    let (end, lookback) = match (
        millis("endTs", now_ns()),
        millis("lookback", 86_400_000_000_000),
    ) {
        (Ok(end), Ok(lookback)) => (end, lookback),
        (Err(msg), _) | (_, Err(msg)) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let deps = store.lock().dependencies(end, lookback);
    let data: Vec<Value> = deps
        .iter()
        .map(|d| json!({"parent": &*d.parent, "child": &*d.child, "callCount": d.call_count}))
        .collect();
    let total = data.len();
    respond(Value::Array(data), total)
}

fn kv(key: &str, value: &AttrValue) -> Value {
    let (kind, value) = match value {
        AttrValue::Str(s) | AttrValue::Array(s) => ("string", json!(&**s)),
        AttrValue::Bool(b) => ("bool", json!(b)),
        AttrValue::Int(i) => ("int64", json!(i)),
        AttrValue::Double(d) => ("float64", json!(d)),
    };
    json!({"key": key, "type": kind, "value": value})
}

fn string_kv(key: &str, value: &str) -> Value {
    json!({"key": key, "type": "string", "value": value})
}

/// A trace in Jaeger's UI model: spans with `processID`s into `processes` (one per service and
/// resource), span kind and status as the tags Jaeger's OTLP translation adds.
pub fn render_trace(trace_id: TraceId, spans: &[Span]) -> Value {
    let trace = trace_id.to_string();
    let mut processes: Vec<(Arc<str>, Resource)> = Vec::new();
    let mut rendered = Vec::with_capacity(spans.len());
    for span in spans {
        let index = match processes.iter().position(|(s, r)| {
            *s == span.service && (Arc::ptr_eq(r, &span.resource) || *r == span.resource)
        }) {
            Some(i) => i,
            None => {
                processes.push((span.service.clone(), span.resource.clone()));
                processes.len() - 1
            }
        };
        let mut tags: Vec<Value> = span.attributes.iter().map(|(k, v)| kv(k, v)).collect();
        if span.kind != SpanKind::Unspecified {
            tags.push(string_kv("span.kind", span.kind.as_str()));
        }
        match span.status.code {
            SpanStatus::Unset => {}
            SpanStatus::Ok => tags.push(string_kv("otel.status_code", "OK")),
            SpanStatus::Error => {
                tags.push(string_kv("otel.status_code", "ERROR"));
                tags.push(json!({"key": "error", "type": "bool", "value": true}));
            }
        }
        if let Some(message) = &span.status.message {
            tags.push(string_kv("otel.status_description", message));
        }
        let logs: Vec<Value> = span
            .events
            .iter()
            .map(|e| {
                let mut fields = vec![string_kv("event", &e.name)];
                fields.extend(e.attributes.iter().map(|(k, v)| kv(k, v)));
                json!({"timestamp": e.time_ns / 1_000, "fields": fields})
            })
            .collect();
        let references: Vec<Value> = span
            .parent_span_id
            .iter()
            .map(|p| json!({"refType": "CHILD_OF", "traceID": trace, "spanID": p.to_string()}))
            .collect();
        rendered.push(json!({
            "traceID": trace,
            "spanID": span.span_id.to_string(),
            "operationName": &*span.operation,
            "references": references,
            "startTime": span.start_ns / 1_000,
            "duration": span.duration_ns / 1_000,
            "tags": tags,
            "logs": logs,
            "processID": format!("p{}", index + 1),
            "warnings": null,
        }));
    }
    let processes: Map<String, Value> = processes
        .iter()
        .enumerate()
        .map(|(i, (service, resource))| {
            let tags: Vec<Value> = resource.iter().map(|(k, v)| kv(k, v)).collect();
            (
                format!("p{}", i + 1),
                json!({"serviceName": &**service, "tags": tags}),
            )
        })
        .collect();
    json!({
        "traceID": trace,
        "spans": rendered,
        "processes": processes,
        "warnings": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn search_parameters_parse_as_jaeger_writes_them() {
        let q = parse_query(
            &params(&[
                ("service", "orders"),
                ("operation", "GET /"),
                ("tags", r#"{"http.status_code":"200","error":true}"#),
                ("tag", "host:h1"),
                ("minDuration", "1.2s"),
                ("maxDuration", "50us"),
                ("start", "1000"),
                ("end", "2000"),
                ("limit", "5"),
            ]),
            0,
        )
        .unwrap();
        assert_eq!(q.service, "orders");
        assert_eq!(q.operation.as_deref(), Some("GET /"));
        assert_eq!(
            q.tags,
            [
                ("error".to_owned(), "true".to_owned()),
                ("http.status_code".to_owned(), "200".to_owned()),
                ("host".to_owned(), "h1".to_owned()),
            ]
        );
        assert_eq!(q.min_duration_ns, Some(1_200_000_000));
        assert_eq!(q.max_duration_ns, Some(50_000));
        assert_eq!((q.start_ns, q.end_ns, q.limit), (1_000_000, 2_000_000, 5));
        let q = parse_query(
            &params(&[("service", "a"), ("lookback", "1h")]),
            7_200_000_000_000,
        )
        .unwrap();
        assert_eq!((q.start_ns, q.end_ns), (3_600_000_000_000, u64::MAX));
        assert!(parse_query(&params(&[]), 0).is_err());
        assert!(parse_query(&params(&[("service", "a"), ("tags", "[1]")]), 0).is_err());
        assert!(parse_query(&params(&[("service", "a"), ("tag", "nocolon")]), 0).is_err());
        assert!(parse_query(&params(&[("service", "a"), ("minDuration", "5")]), 0).is_err());
        assert_eq!(
            parse_trace_id("1").unwrap().to_string(),
            format!("{:0>32}", "1")
        );
        assert!(parse_trace_id("xyz").is_none());
    }
}
