//! OTLP/gRPC into the real `trellis server` binary: spans exported with opentelemetry-proto's
//! generated tonic client (plain and gzip) on the `--otlp-grpc` listener are found through
//! Jaeger's query API; partial success for refused spans; a malformed message is
//! INVALID_ARGUMENT, another method UNIMPLEMENTED, nothing panics; the default port taken is a
//! warning, an explicit one an error.

#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use serde_json::{Value, json};
use support::{Collector, Proc, hex, now_ns, string_kv};
use tonic::codec::CompressionEncoding;

const TRACE: &str = "7af7651916cd43dd8448eb211c80319c";
const GZIP_TRACE: &str = "8af7651916cd43dd8448eb211c80319d";

/// A span of `trace`; `parent` empty for a root.
fn span(trace: &str, id: &str, parent: &str, name: &str, start: u64, millis: u64) -> Span {
    Span {
        trace_id: hex(trace),
        span_id: hex(id),
        parent_span_id: hex(parent),
        name: name.into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + millis * 1_000_000,
        ..Default::default()
    }
}

fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// `GET path` on the server's API, which must answer 200.
async fn get_ok(server: &Collector, path: &str) -> Value {
    let (status, value) = server.get(path).await;
    assert_eq!(status, 200, "{path}");
    value
}

#[tokio::test]
async fn otlp_grpc_spans_are_found_through_jaegers_query_api() {
    let server = Collector::start();
    let start = now_ns() - 1_000_000_000;
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();

    // The gateway's root span and, in a second call, the users span it called (failing).
    let root = span(TRACE, "00f067aa0ba902b7", "", "GET /profile", start, 40);
    let answer = client
        .export(request("gateway", vec![root]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.partial_success, None);
    let mut call = span(
        TRACE,
        "1111111111111111",
        "00f067aa0ba902b7",
        "GET /users/{id}",
        start + 1_000_000,
        30,
    );
    call.status = Some(Status {
        code: 2,
        message: "db down".into(),
    });
    // A span with a 3-byte id is refused: a partial success saying so.
    let bad = Span {
        span_id: vec![1, 2, 3],
        ..call.clone()
    };
    let answer = client
        .export(request("users", vec![call, bad]))
        .await
        .unwrap()
        .into_inner();
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("invalid"), "{partial:?}");

    // gzip-compressed requests are accepted.
    let mut gzip = client.clone().send_compressed(CompressionEncoding::Gzip);
    let lone = span(GZIP_TRACE, "2222222222222222", "", "GET /health", start, 1);
    let answer = gzip
        .export(request("users", vec![lone]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.partial_success, None);

    // Found through Jaeger's query API, parent and child in one trace.
    let services = get_ok(&server, "/api/services").await;
    assert_eq!(services["data"], json!(["gateway", "users"]));
    let trace = get_ok(&server, &format!("/api/traces/{TRACE}")).await;
    let spans = trace["data"][0]["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2, "{trace}");
    let child = spans
        .iter()
        .find(|s| s["operationName"] == "GET /users/{id}")
        .unwrap();
    assert_eq!(
        child["references"][0]["spanID"],
        json!("00f067aa0ba902b7"),
        "{child}"
    );
    let found = get_ok(
        &server,
        "/api/traces?service=users&operation=GET%20%2Fhealth",
    )
    .await;
    assert_eq!(found["data"][0]["traceID"], json!(GZIP_TRACE), "{found}");

    // The dependency graph with its statistics.
    let deps = get_ok(&server, "/v1/trellis/traces/dependencies?lookback=1h").await;
    assert_eq!(
        deps["dependencies"],
        json!([{
            "parent": "gateway", "child": "users", "callCount": 1, "errorCount": 1,
            "errorRate": 1.0, "p50Ms": 30.0, "p99Ms": 30.0
        }]),
        "{deps}"
    );
    assert_eq!(deps["lookback"], json!(3_600_000));
    // Requests per service: the spans that enter each (the gateway's root; the users call and
    // the lone root of the other trace).
    let stats = get_ok(&server, "/v1/trellis/traces/services?lookback=1h").await;
    assert_eq!(
        stats["services"],
        json!([
            {"service": "gateway", "callCount": 1, "errorCount": 0, "errorRate": 0.0,
             "ratePerSec": 1.0 / 3600.0, "p50Ms": 40.0, "p99Ms": 40.0},
            {"service": "users", "callCount": 2, "errorCount": 1, "errorRate": 0.5,
             "ratePerSec": 2.0 / 3600.0, "p50Ms": 1.0, "p99Ms": 30.0},
        ]),
        "{stats}"
    );
    let (status, _) = server
        .get("/v1/trellis/traces/services?lookback=soon")
        .await;
    assert_eq!(status, 400);

    // The collector's metrics count them by protocol.
    let metrics = support::get_text(&format!("{}/metrics", server.http)).await;
    for line in [
        "trellis_otlp_spans_received_total{protocol=\"grpc\"} 4",
        "trellis_otlp_spans_rejected_total{protocol=\"grpc\",reason=\"invalid_id\"} 1",
        "trellis_trace_store_spans 3",
        "trellis_trace_store_traces 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
}

/// One raw gRPC call over HTTP/2: the `grpc-status` (from the headers of a trailers-only
/// answer or from the trailers) and its message.
async fn raw_call(server: &Collector, path: &str, frame: Vec<u8>) -> (String, String) {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = hyper::Request::post(format!("{}{path}", server.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(frame)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let get = |name: &str| {
        trailers
            .get(name)
            .or_else(|| headers.get(name))
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (get("grpc-status"), get("grpc-message"))
}

/// A gRPC message frame: uncompressed flag, big-endian length, the bytes.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[tokio::test]
async fn malformed_grpc_messages_are_invalid_argument() {
    let server = Collector::start();
    let export = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    // Not a protobuf message: INVALID_ARGUMENT (3) naming the problem.
    let (status, message) = raw_call(&server, export, frame(&[0xff, 0xff, 0xff])).await;
    assert_eq!(status, "3", "{message}");
    assert!(message.contains("ExportTraceServiceRequest"), "{message}");
    // A frame claiming more bytes than it carries is refused too, without a panic.
    let mut short = frame(b"\x0a\x00");
    short[4] = 50;
    let (status, _) = raw_call(&server, export, short).await;
    assert_ne!(status, "0");
    // Another method: UNIMPLEMENTED (12).
    let (status, _) = raw_call(
        &server,
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        frame(b""),
    )
    .await;
    assert_eq!(status, "12");
    // An empty request is fine, and the server still serves.
    let (status, _) = raw_call(&server, export, frame(b"")).await;
    assert_eq!(status, "0");
    let services = get_ok(&server, "/api/services").await;
    assert_eq!(services["data"], json!([]));
    let metrics = support::get_text(&format!("{}/metrics", server.http)).await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "trellis_otlp_requests_malformed_total{protocol=\"grpc\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_default_grpc_port_taken_is_a_warning_an_explicit_one_an_error() {
    // Hold 4317 if nothing else does (if something does, the server must cope all the same).
    let _held = std::net::TcpListener::bind("127.0.0.1:4317");
    // A fixed HTTP port, so that the gRPC receiver wants its default address.
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let args = [
        "server", "--dev", "--http", &http, "--dns", "off", "--otlp", "off",
    ];
    let proc = Proc::start(&args, 1, Some("warn"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !proc.log().contains("the OTLP/gRPC receiver is off") {
        assert!(
            std::time::Instant::now() < deadline,
            "no warning in {:?}",
            proc.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(proc.log().contains("--otlp-grpc"), "{}", proc.log());
    drop(proc);

    // An address asked for that is taken: the server does not start, and says which flag.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let args = [
        "server",
        "--dev",
        "--http",
        "127.0.0.1:0",
        "--dns",
        "off",
        "--otlp-grpc",
        &taken_addr,
    ];
    let started = Proc::try_start(&args, 1, Some("warn"));
    assert!(
        started.is_none(),
        "the server started on a taken --otlp-grpc"
    );
}
