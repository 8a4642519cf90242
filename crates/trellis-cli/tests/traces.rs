//! The trace collector of the real `trellis server` binary: spans exported over OTLP/HTTP
//! (protobuf, JSON, gzip) on the `--otlp` listener, read back through Jaeger's query API on the
//! HTTP API's port; back-pressure (429 / RESOURCE_EXHAUSTED) once the in-flight budget is spent.

#![allow(clippy::unwrap_used)]

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
use prost::Message;
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;
use support::{Collector, hex, now_ns, string_kv};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const GATEWAY_SERVER: &str = "00f067aa0ba902b7";
const GATEWAY_CLIENT: &str = "1111111111111111";
const ORDERS_SERVER: &str = "2222222222222222";
const OTHER_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4737";

/// The gateway's half of the trace: its server span and the client span calling orders.
fn gateway_batch(start: u64) -> Vec<u8> {
    let span = |id: &str, parent: &str, name: &str, kind: span::SpanKind, offset: u64| Span {
        trace_id: hex(TRACE),
        span_id: hex(id),
        parent_span_id: hex(parent),
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: start + offset,
        end_time_unix_nano: start + offset + 200_000_000 - 2 * offset,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string_kv("service.name", "gateway"),
                    string_kv("host.name", "edge-1"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(GATEWAY_SERVER, "", "GET /orders", span::SpanKind::Server, 0),
                    span(
                        GATEWAY_CLIENT,
                        GATEWAY_SERVER,
                        "orders.list",
                        span::SpanKind::Client,
                        10_000_000,
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// The orders service's server span (child of the gateway's client span), as OTLP JSON.
fn orders_batch(trace: &str, span_id: &str, parent: &str, start: u64, status: u16) -> Vec<u8> {
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "orders"}}]},
            "scopeSpans": [{
                "scope": {"name": "orders-http"},
                "spans": [{
                    "traceId": trace,
                    "spanId": span_id,
                    "parentSpanId": parent,
                    "name": "GET /orders",
                    "kind": 2,
                    "startTimeUnixNano": (start + 20_000_000).to_string(),
                    "endTimeUnixNano": (start + 170_000_000).to_string(),
                    "attributes": [
                        {"key": "http.status_code", "value": {"intValue": status.to_string()}}
                    ],
                    "events": [{"timeUnixNano": (start + 30_000_000).to_string(), "name": "cache miss"}],
                    "status": {"code": if status >= 500 { 2 } else { 0 }}
                }]
            }]
        }]
    })
    .to_string()
    .into_bytes()
}

/// POSTs an OTLP/HTTP body, gzip-compressed when `gzip`.
async fn post(
    server: &Collector,
    content_type: &str,
    gzip: bool,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = support::http()
        .post(&server.otlp)
        .header("content-type", content_type);
    let body = if gzip {
        request = request.header("content-encoding", "gzip");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&body).unwrap();
        encoder.finish().unwrap()
    } else {
        body
    };
    request.body(body).send().await.unwrap()
}

#[tokio::test]
async fn otlp_spans_are_found_through_jaegers_query_api() {
    let server = Collector::start();
    let start = now_ns() - 1_000_000_000;

    // Protobuf: the gateway's spans; answered in protobuf with no partial success.
    let r = post(
        &server,
        "application/x-protobuf",
        false,
        gateway_batch(start),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/x-protobuf"
    );
    let answer = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    assert_eq!(answer.partial_success, None);

    // JSON: the orders span of the same trace.
    let r = post(
        &server,
        "application/json",
        false,
        orders_batch(TRACE, ORDERS_SERVER, GATEWAY_CLIENT, start, 201),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(r.json::<Value>().await.unwrap(), json!({}));

    // Gzip: another orders trace, failing, plus a span with a bad id (refused, partially).
    let mut batch: Value =
        serde_json::from_slice(&orders_batch(OTHER_TRACE, ORDERS_SERVER, "", start, 503)).unwrap();
    let spans = batch["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array_mut()
        .unwrap();
    let mut bad = spans[0].clone();
    bad["spanId"] = json!("0102");
    spans.push(bad);
    let r = post(
        &server,
        "application/json",
        true,
        batch.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        answer["partialSuccess"]["rejectedSpans"],
        json!("1"),
        "{answer}"
    );
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("invalid"),
        "{answer}"
    );

    // Services and operations.
    let (status, services) = server.get("/api/services").await;
    assert_eq!(status, 200);
    assert_eq!(services["data"], json!(["gateway", "orders"]));
    assert_eq!(services["total"], json!(2));
    assert_eq!(services["errors"], Value::Null);
    let (_, ops) = server.get("/api/services/gateway/operations").await;
    assert_eq!(ops["data"], json!(["GET /orders", "orders.list"]));
    let (_, ops) = server.get("/api/services/orders/operations").await;
    assert_eq!(ops["data"], json!(["GET /orders"]));

    // Search by tag: the JSON form and the repeated `tag=` form.
    let tags = urlencode(r#"{"http.status_code":"201"}"#);
    let (status, found) = server
        .get(&format!(
            "/api/traces?service=orders&tags={tags}&lookback=1h"
        ))
        .await;
    assert_eq!(status, 200, "{found}");
    let traces = found["data"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "{found}");
    assert_eq!(traces[0]["traceID"], json!(TRACE));
    let (_, found) = server
        .get("/api/traces?service=orders&tag=http.status_code:503&minDuration=100ms")
        .await;
    assert_eq!(found["data"][0]["traceID"], json!(OTHER_TRACE), "{found}");
    let (_, found) = server
        .get("/api/traces?service=orders&tag=error:true")
        .await;
    assert_eq!(found["data"].as_array().unwrap().len(), 1, "{found}");
    let (_, found) = server
        .get("/api/traces?service=orders&maxDuration=1ms")
        .await;
    assert_eq!(found["data"], json!([]), "{found}");
    let (_, found) = server.get("/api/traces?service=orders").await;
    assert_eq!(found["data"].as_array().unwrap().len(), 2, "{found}");
    let (status, missing) = server.get("/api/traces").await;
    assert_eq!(status, 400);
    assert_eq!(missing["errors"][0]["code"], json!(400));

    // One trace: three spans, parents right, processes per service.
    let (status, trace) = server.get(&format!("/api/traces/{TRACE}")).await;
    assert_eq!(status, 200);
    let trace = &trace["data"][0];
    assert_eq!(trace["traceID"], json!(TRACE));
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 3);
    let by_id = |id: &str| spans.iter().find(|s| s["spanID"] == json!(id)).unwrap();
    assert_eq!(by_id(GATEWAY_SERVER)["references"], json!([]));
    assert_eq!(
        by_id(GATEWAY_CLIENT)["references"],
        json!([{"refType": "CHILD_OF", "traceID": TRACE, "spanID": GATEWAY_SERVER}])
    );
    let orders = by_id(ORDERS_SERVER);
    assert_eq!(
        orders["references"],
        json!([{"refType": "CHILD_OF", "traceID": TRACE, "spanID": GATEWAY_CLIENT}])
    );
    assert_eq!(orders["startTime"], json!((start + 20_000_000) / 1_000));
    assert_eq!(orders["duration"], json!(150_000));
    assert!(
        orders["tags"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "http.status_code", "type": "int64", "value": 201}))
    );
    assert!(
        orders["tags"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "span.kind", "type": "string", "value": "server"}))
    );
    assert_eq!(
        orders["logs"][0]["fields"][0],
        json!({"key": "event", "type": "string", "value": "cache miss"})
    );
    let process = &trace["processes"][orders["processID"].as_str().unwrap()];
    assert_eq!(process["serviceName"], json!("orders"));
    let gateway = &trace["processes"][by_id(GATEWAY_SERVER)["processID"].as_str().unwrap()];
    assert_eq!(gateway["serviceName"], json!("gateway"));
    assert_eq!(
        gateway["tags"],
        json!([{"key": "host.name", "type": "string", "value": "edge-1"}])
    );

    // An unknown trace: 404 in Jaeger's shape.
    let (status, missing) = server
        .get("/api/traces/0000000000000000000000000000abcd")
        .await;
    assert_eq!(status, 404);
    assert_eq!(missing["data"], Value::Null);
    assert_eq!(missing["errors"][0]["code"], json!(404));

    // Dependencies: the gateway calls orders once.
    let (status, deps) = server.get("/api/dependencies?lookback=3600000").await;
    assert_eq!(status, 200);
    assert_eq!(
        deps["data"],
        json!([{"parent": "gateway", "child": "orders", "callCount": 1}])
    );
    let end_ms = start / 1_000_000 - 60_000;
    let (_, deps) = server
        .get(&format!("/api/dependencies?endTs={end_ms}&lookback=1000"))
        .await;
    assert_eq!(deps["data"], json!([]));
}

#[tokio::test]
async fn the_receiver_refuses_what_it_cannot_read() {
    let server = Collector::start();
    // A malformed body: 400 with a google.rpc.Status in the request's encoding.
    let r = post(
        &server,
        "application/json",
        false,
        b"{\"resourceSpans\": 7}".to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["code"], json!(3));
    assert!(
        status["message"].as_str().unwrap().contains("JSON"),
        "{status}"
    );
    let r = post(
        &server,
        "application/x-protobuf",
        false,
        vec![0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = post(&server, "application/x-protobuf", true, vec![0x0a, 0x00]).await;
    assert_eq!(r.status(), 200, "a gzip body with an empty resource spans");
    // Gzip claimed, but not gzip.
    let r = support::http()
        .post(&server.otlp)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Another content type: 415.
    let r = post(&server, "text/plain", false, b"hello".to_vec()).await;
    assert_eq!(r.status(), 415);
    // Nothing reached the store.
    let (_, services) = server.get("/api/services").await;
    assert_eq!(services["data"], json!([]));
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `google.rpc.Status` with its details, as the 429 body and gRPC's status details carry it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// The retry delay, in seconds, of a `google.rpc.Status` meaning RESOURCE_EXHAUSTED.
fn retry_seconds(status: &[u8]) -> i64 {
    let status = RpcStatus::decode(status).unwrap();
    assert_eq!(status.code, 8, "{status:?}");
    assert_eq!(
        status.details[0].type_url,
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    let info = RetryInfo::decode(status.details[0].value.as_slice()).unwrap();
    info.retry_delay.unwrap().seconds
}

async fn metrics_text(http: &str) -> String {
    support::get_text(&format!("{http}/metrics")).await
}

#[tokio::test]
async fn a_spent_inflight_budget_answers_429_and_resource_exhausted() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use tokio::io::AsyncWriteExt;

    // A budget of 1000 bytes; one request alone may still exceed it.
    let server = Collector::start_with(&["--otlp-inflight-bytes", "1000"]);
    let (http, otlp, grpc) = (
        server.http.clone(),
        server.otlp.clone(),
        server.grpc.clone(),
    );
    let proc = &server.proc;

    // A slow exporter: it declares 100000 bytes and sends a few. Its reservation is taken from
    // the declared length before the body is read, so it holds the whole budget.
    let mut slow = tokio::net::TcpStream::connect(proc.addr("OTLP"))
        .await
        .unwrap();
    slow.write_all(
        b"POST /v1/traces HTTP/1.1\r\nhost: trellis\r\ncontent-type: application/x-protobuf\r\n\
          content-length: 100000\r\n\r\n\x0a\x00",
    )
    .await
    .unwrap();
    support::eventually(
        Duration::from_secs(10),
        "the slow request's reservation",
        || async {
            metrics_text(&http)
                .await
                .lines()
                .any(|l| l == "trellis_otlp_inflight_bytes 100000")
        },
    )
    .await;

    let post = |content_type: &'static str, body: Vec<u8>| {
        support::http()
            .post(&otlp)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    // OTLP/HTTP protobuf: 429, Retry-After, a google.rpc.Status with a RetryInfo.
    let r = post(
        "application/x-protobuf",
        gateway_batch(now_ns() - 1_000_000_000),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(retry_seconds(&r.bytes().await.unwrap()), 1);
    // OTLP/HTTP JSON: the same in the JSON mapping.
    let r = post("application/json", b"{}".to_vec()).await.unwrap();
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], json!(8), "{body}");
    assert_eq!(
        body["details"][0]["@type"],
        json!("type.googleapis.com/google.rpc.RetryInfo")
    );
    assert_eq!(body["details"][0]["retryDelay"], json!("1s"));
    // OTLP/gRPC: RESOURCE_EXHAUSTED with a RetryInfo in its details.
    let mut client = TraceServiceClient::connect(grpc).await.unwrap();
    let request =
        ExportTraceServiceRequest::decode(gateway_batch(now_ns() - 1_000_000_000).as_slice())
            .unwrap();
    let refused = client.export(request.clone()).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert_eq!(retry_seconds(refused.details()), 1);

    // The slow exporter gives up: its reservation is returned, and spans are taken again.
    drop(slow);
    support::eventually(
        Duration::from_secs(10),
        "the reservation returned",
        || async {
            metrics_text(&http)
                .await
                .lines()
                .any(|l| l == "trellis_otlp_inflight_bytes 0")
        },
    )
    .await;
    let answer = client.export(request).await.unwrap().into_inner();
    assert_eq!(answer.partial_success, None);
    let r = post("application/json", b"{}".to_vec()).await.unwrap();
    assert_eq!(r.status(), 200);
    let metrics = metrics_text(&http).await;
    for line in [
        "trellis_otlp_requests_throttled_total{protocol=\"http\"} 2",
        "trellis_otlp_requests_throttled_total{protocol=\"grpc\"} 1",
        "trellis_otlp_spans_received_total{protocol=\"grpc\"} 2",
        "trellis_trace_store_max_bytes 268435456",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
}
