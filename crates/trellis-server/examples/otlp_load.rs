//! A small OTLP load generator for `bench/otlp.sh`: N connections each sending protobuf
//! `ExportTraceServiceRequest`s of typical HTTP spans as fast as they are answered, over
//! OTLP/HTTP (`POST /v1/traces`) or OTLP/gRPC (`TraceService/Export`, hand-framed over HTTP/2
//! so no gRPC client stack is needed), for a fixed time; prints one line of counts.
//!
//! ```text
//! cargo run --release -p trellis-server --example otlp_load -- \
//!     http://127.0.0.1:4318 http 8 10 512
//! ```
//! Arguments: base URL, `http` or `grpc`, connections, seconds, spans per request.
//!
//! Each request is one pre-encoded batch (64 spans per trace: a server span and its children)
//! with its trace ids patched in place to fresh ones, so that the store sees new traces and
//! the generator spends its CPU on sending, not on encoding.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SPANS_PER_TRACE: usize = 8;
/// The template's trace id for trace `i` of a batch: a marker the patcher finds again.
fn template_trace_id(i: usize) -> [u8; 16] {
    let mut id = *b"TRELLIS-LOADGEN-";
    id[14] = (i >> 8) as u8;
    id[15] = i as u8;
    id
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// A batch of `spans` typical HTTP spans: service, operation, 8 attributes, status.
fn template(spans: usize) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let routes = ["/orders/{id}", "/users/{id}", "/cart", "/checkout"];
    let out: Vec<Span> = (0..spans)
        .map(|i| {
            let trace = i / SPANS_PER_TRACE;
            let within = i % SPANS_PER_TRACE;
            let route = routes[i % routes.len()];
            let start = now + (i as u64) * 1_000;
            let span_id = ((i as u64 + 1) | (1 << 62)).to_be_bytes().to_vec();
            let parent = if within == 0 {
                Vec::new()
            } else {
                (((i - within) as u64 + 1) | (1 << 62))
                    .to_be_bytes()
                    .to_vec()
            };
            Span {
                trace_id: template_trace_id(trace).to_vec(),
                span_id,
                parent_span_id: parent,
                name: format!("GET {route}"),
                kind: if within == 0 {
                    span::SpanKind::Server
                } else {
                    span::SpanKind::Client
                } as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 1_500_000 + (i as u64 % 97) * 10_000,
                attributes: vec![
                    kv("http.request.method", s("GET")),
                    kv("http.route", s(route)),
                    kv(
                        "url.path",
                        s(&route.replace("{id}", &(i % 1000).to_string())),
                    ),
                    kv(
                        "http.response.status_code",
                        any_value::Value::IntValue(if i % 50 == 0 { 500 } else { 200 }),
                    ),
                    kv("server.address", s("orders.service.consul")),
                    kv("server.port", any_value::Value::IntValue(8080)),
                    kv("network.protocol.version", s("1.1")),
                    kv("user_agent.original", s("trellis-loadgen/1.0")),
                ],
                status: Some(Status {
                    code: if i % 50 == 0 { 2 } else { 0 },
                    message: String::new(),
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("orders")),
                    kv("service.instance.id", s("orders-1")),
                    kv("host.name", s("node-1")),
                    kv("telemetry.sdk.language", s("rust")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: out,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Where each trace's id sits in the encoded template: (offset, trace index).
fn trace_id_offsets(body: &[u8], traces: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for t in 0..traces {
        let id = template_trace_id(t);
        let mut from = 0;
        while let Some(pos) = body[from..].windows(16).position(|w| w == id) {
            out.push((from + pos, t));
            from += pos + 16;
        }
    }
    out
}

struct Counts {
    ok_requests: AtomicU64,
    throttled: AtomicU64,
    errors: AtomicU64,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 {
        eprintln!("usage: otlp_load BASE_URL http|grpc CONNECTIONS SECONDS SPANS_PER_REQUEST");
        std::process::exit(2);
    }
    let base = args[0].trim_end_matches('/').to_owned();
    let grpc = match args[1].as_str() {
        "http" => false,
        "grpc" => true,
        other => {
            eprintln!("protocol must be http or grpc, not {other}");
            std::process::exit(2);
        }
    };
    let parse = |i: usize| -> u64 {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!("argument {} must be a number", i + 1);
            std::process::exit(2)
        })
    };
    let (connections, seconds, spans) = (parse(2), parse(3), parse(4) as usize);
    let traces = spans.div_ceil(SPANS_PER_TRACE);
    let mut body = template(spans);
    if grpc {
        // The gRPC message frame: not compressed, big-endian length.
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        body = framed;
    }
    let offsets = Arc::new(trace_id_offsets(&body, traces));
    let body = Arc::new(body);
    let url = if grpc {
        format!("{base}/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    } else {
        format!("{base}/v1/traces")
    };
    let counts = Arc::new(Counts {
        ok_requests: AtomicU64::new(0),
        throttled: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let next_trace = Arc::new(AtomicU64::new(1));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        // One client each: one connection each, for HTTP/1.1 and HTTP/2 alike.
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(grpc)
            .build_http();
        let (url, body, offsets, counts, next_trace) = (
            url.clone(),
            body.clone(),
            offsets.clone(),
            counts.clone(),
            next_trace.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let mut request_body = body.as_ref().clone();
                let first = next_trace.fetch_add(traces as u64, Ordering::Relaxed);
                for &(offset, t) in offsets.iter() {
                    let n = first + t as u64;
                    request_body[offset..offset + 8].copy_from_slice(&n.to_be_bytes());
                    request_body[offset + 8..offset + 16]
                        .copy_from_slice(&(n ^ 0x5bd1_e995).to_be_bytes());
                }
                let mut request = hyper::Request::post(&url);
                request = if grpc {
                    request
                        .header("content-type", "application/grpc")
                        .header("te", "trailers")
                } else {
                    request.header("content-type", "application/x-protobuf")
                };
                let request = match request.body(Full::new(Bytes::from(request_body))) {
                    Ok(r) => r,
                    Err(_) => return,
                };
                match client.request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let headers = response.headers().clone();
                        let collected = response.into_body().collect().await;
                        let grpc_status = collected
                            .ok()
                            .and_then(|c| c.trailers().cloned())
                            .and_then(|t| t.get("grpc-status").cloned())
                            .or_else(|| headers.get("grpc-status").cloned());
                        let ok = if grpc {
                            status == 200 && grpc_status.as_ref().is_some_and(|s| s == "0")
                        } else {
                            status == 200
                        };
                        let throttled =
                            status == 429 || grpc_status.as_ref().is_some_and(|s| s == "8");
                        let counter = if ok {
                            &counts.ok_requests
                        } else if throttled {
                            &counts.throttled
                        } else {
                            &counts.errors
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok = counts.ok_requests.load(Ordering::Relaxed);
    let accepted_spans = ok * spans as u64;
    println!(
        "protocol={} connections={connections} seconds={elapsed:.2} requests={ok} spans={accepted_spans} \
         spans_per_s={:.0} throttled={} errors={} request_bytes={}",
        if grpc { "grpc" } else { "http" },
        accepted_spans as f64 / elapsed,
        counts.throttled.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed),
        body.len(),
    );
}
