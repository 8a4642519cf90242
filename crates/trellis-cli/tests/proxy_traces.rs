//! Spans from the real gateway and sidecars, exported over OTLP to the real `trellis server`
//! and read back through its Jaeger query API: a request through gateway → sidecar → app A →
//! sidecar → app B is one trace with the parent/child structure the proxy documents, B3 input
//! continues the caller's trace, and a gateway sampling nothing still propagates the context.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use support::{Collector, Proc, http};
use trellis_proxy::body::{Body, full};
use trellis_proxy::hyper::{Request, Response, StatusCode};
use trellis_proxy::server::{ShutdownTrigger, serve, shutdown_pair};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";
const B3_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4737";
const B3_CALLER: &str = "1111111111111111";
const MARKER_TRACE: &str = "6bf92f3577b34da6a3ce929d0e0e4738";

/// What an app saw of one request: its `traceparent` and `tracestate`.
#[derive(Debug, Clone, Default)]
struct Seen {
    traceparent: String,
    tracestate: Option<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn seen(request: &Request<Body>) -> Seen {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Seen {
        traceparent: header("traceparent").unwrap_or_default(),
        tracestate: header("tracestate"),
    }
}

/// App B: answers "b", logging the context of each request.
async fn app_b() -> (u16, Log, ShutdownTrigger) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Log = Arc::default();
    let (stop, shutdown) = shutdown_pair();
    let l = log.clone();
    tokio::spawn(serve(
        listener,
        move |request: Request<Body>| {
            l.lock().unwrap().push(seen(&request));
            async move { Response::new(full("b")) }
        },
        shutdown,
        Duration::from_secs(1),
    ));
    (port, log, stop)
}

/// App A: calls service `svc-b` through its sidecar's outbound listener (known once the
/// sidecar runs), copying the incoming `traceparent` and `tracestate` onto that call, as an
/// instrumented app would; answers with B's answer.
async fn app_a(outbound: Arc<OnceLock<String>>) -> (u16, Log, ShutdownTrigger) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Log = Arc::default();
    let (stop, shutdown) = shutdown_pair();
    let l = log.clone();
    let client = http();
    tokio::spawn(serve(
        listener,
        move |request: Request<Body>| {
            let context = seen(&request);
            let outbound = outbound.get().cloned();
            let client = client.clone();
            let l = l.clone();
            let health = request.uri().path() == "/health";
            async move {
                if health {
                    return Response::new(full("ok"));
                }
                l.lock().unwrap().push(context.clone());
                let Some(outbound) = outbound else {
                    let mut r = Response::new(full("no sidecar yet"));
                    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    return r;
                };
                let mut call = client
                    .get(format!("http://{outbound}/from-a"))
                    .header("host", "svc-b")
                    .header("traceparent", &context.traceparent);
                if let Some(state) = &context.tracestate {
                    call = call.header("tracestate", state);
                }
                match call.send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body = r.text().await.unwrap_or_default();
                        let mut response = Response::new(full(format!("a+{body}")));
                        *response.status_mut() = StatusCode::from_u16(status).unwrap();
                        response
                    }
                    Err(e) => {
                        let mut r = Response::new(full(format!("call to B failed: {e}")));
                        *r.status_mut() = StatusCode::BAD_GATEWAY;
                        r
                    }
                }
            }
        },
        shutdown,
        Duration::from_secs(1),
    ));
    (port, log, stop)
}

/// One span of a Jaeger trace, with what the assertions need.
#[derive(Debug)]
struct JSpan {
    id: String,
    parent: Option<String>,
    service: String,
    operation: String,
    tags: Vec<Value>,
}

impl JSpan {
    fn tag(&self, key: &str) -> Value {
        self.tags
            .iter()
            .find(|t| t["key"] == key)
            .map(|t| t["value"].clone())
            .unwrap_or(Value::Null)
    }
}

fn spans(trace: &Value) -> Vec<JSpan> {
    let trace_id = trace["traceID"].as_str().unwrap();
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let references = s["references"].as_array().unwrap();
            assert!(references.len() <= 1, "{s}");
            let parent = references.first().map(|r| {
                assert_eq!(r["refType"], "CHILD_OF");
                assert_eq!(r["traceID"], trace_id);
                r["spanID"].as_str().unwrap().to_owned()
            });
            let process = s["processID"].as_str().unwrap();
            JSpan {
                id: s["spanID"].as_str().unwrap().to_owned(),
                parent,
                service: trace["processes"][process]["serviceName"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                operation: s["operationName"].as_str().unwrap().to_owned(),
                tags: s["tags"].as_array().unwrap().clone(),
            }
        })
        .collect()
}

/// The span of `service` of `kind` whose parent is `parent`.
fn child<'a>(spans: &'a [JSpan], parent: &str, service: &str, kind: &str) -> &'a JSpan {
    let found: Vec<&JSpan> = spans
        .iter()
        .filter(|s| {
            s.parent.as_deref() == Some(parent)
                && s.service == service
                && s.tag("span.kind") == kind
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind} span of {service} under {parent} in {spans:#?}"
    );
    found[0]
}

/// The parent id a `traceparent` names.
fn parent_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(2).unwrap()
}

/// Asserts the documented structure of one trace through gateway → A → B and answers the
/// span ids of (sidecar A's SERVER span, sidecar B's SERVER span).
fn assert_structure(trace: &Value, caller: &str, gateway: &str) -> (String, String) {
    let spans = spans(trace);
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let gw_server = child(&spans, caller, gateway, "server");
    assert_eq!(gw_server.operation, "GET /a");
    assert_eq!(gw_server.tag("http.route"), "/a");
    assert_eq!(gw_server.tag("http.request.method"), "GET");
    assert_eq!(gw_server.tag("url.path"), "/a/hello");
    assert_eq!(gw_server.tag("http.response.status_code"), 200);
    assert_eq!(gw_server.tag("network.peer.address"), "127.0.0.1");
    let gw_client = child(&spans, &gw_server.id, gateway, "client");
    assert_eq!(gw_client.operation, "GET");
    assert_eq!(gw_client.tag("peer.service"), "svc-a");
    assert_eq!(gw_client.tag("trellis.attempts"), 1);
    assert_eq!(gw_client.tag("server.address"), "127.0.0.1");
    assert!(gw_client.tag("server.port").as_i64().unwrap() > 0);
    assert!(
        gw_client
            .tag("trellis.endpoint.instance")
            .as_str()
            .unwrap()
            .starts_with("svc-a-")
    );
    assert!(
        gw_client
            .tag("url.full")
            .as_str()
            .unwrap()
            .ends_with("/hello")
    );
    let a_server = child(&spans, &gw_client.id, "svc-a", "server");
    assert_eq!(a_server.operation, "GET");
    assert_eq!(a_server.tag("url.path"), "/hello");
    assert_eq!(a_server.tag("trellis.endpoint.instance"), "local-app");
    let a_client = child(&spans, &a_server.id, "svc-a", "client");
    assert_eq!(a_client.tag("peer.service"), "svc-b");
    assert_eq!(a_client.tag("http.response.status_code"), 200);
    let b_server = child(&spans, &a_client.id, "svc-b", "server");
    assert_eq!(b_server.tag("url.path"), "/from-a");
    for span in &spans {
        assert_ne!(span.tag("error"), true, "{span:?}");
    }
    (a_server.id.clone(), b_server.id.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_through_gateway_and_two_sidecars_is_one_trace() {
    let collector = Collector::start();
    let (_registry, registry) = {
        let p = Proc::start(
            &[
                "server",
                "--dev",
                "--http",
                "127.0.0.1:0",
                "--dns",
                "off",
                "--otlp",
                "off",
            ],
            1,
            None,
        );
        let url = format!("http://{}", p.addrs[0].1);
        (p, url)
    };
    let export = ["--otlp-endpoint", collector.otlp.as_str()];

    let (b_port, b_log, _b_stop) = app_b().await;
    let outbound_a = Arc::new(OnceLock::new());
    let (a_port, a_log, _a_stop) = app_a(outbound_a.clone()).await;
    let _car_b = support::sidecar(&registry, "svc-b", b_port, &export, None);
    let car_a = support::sidecar(&registry, "svc-a", a_port, &export, None);
    outbound_a.set(car_a.addr("outbound")).unwrap();
    let gateway = |extra: &[&str]| {
        let mut args = vec![
            "gateway",
            "--registry",
            &registry,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--route",
            "/a=svc-a",
            "--workers",
            "1",
        ];
        args.extend_from_slice(extra);
        Proc::start(&args, 2, None)
    };
    let gw = gateway(&export);
    let gw_url = format!("http://{}/a/hello", gw.addr("gateway"));
    // Until both instances are registered and healthy.
    support::eventually(
        Duration::from_secs(30),
        "a 200 through gateway, A and B",
        || {
            let request = http().get(&gw_url).send();
            async move {
                match request.await {
                    Ok(r) => r.status() == 200 && r.text().await.unwrap_or_default() == "a+b",
                    Err(_) => false,
                }
            }
        },
    )
    .await;

    // W3C context in: the trace continues the caller's.
    let r = http()
        .get(&gw_url)
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .header("tracestate", "vendor=x,other=y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let trace = collector.trace(TRACE, 5).await;
    let (a_server, b_server) = assert_structure(&trace, CALLER, "gateway");
    // Each app is the child of its sidecar's SERVER span; tracestate passes unchanged.
    let a_seen = a_log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(a_seen.traceparent, format!("00-{TRACE}-{a_server}-01"));
    assert_eq!(a_seen.tracestate.as_deref(), Some("vendor=x,other=y"));
    let b_seen = b_log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(b_seen.traceparent, format!("00-{TRACE}-{b_server}-01"));
    assert_eq!(b_seen.tracestate.as_deref(), Some("vendor=x,other=y"));
    // The process of each service names it.
    let services: Vec<&str> = trace["processes"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p["serviceName"].as_str().unwrap())
        .collect();
    for name in ["gateway", "svc-a", "svc-b"] {
        assert!(services.contains(&name), "{services:?}");
    }

    // B3 (single header) in, no traceparent: the same structure under the B3 caller.
    let r = http()
        .get(&gw_url)
        .header("b3", format!("{B3_TRACE}-{B3_CALLER}-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let trace = collector.trace(B3_TRACE, 5).await;
    assert_structure(&trace, B3_CALLER, "gateway");

    // The gateway's counters.
    let metrics = support::get_text(&format!("http://{}/metrics", gw.addr("admin"))).await;
    let exported: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("trellis_spans_exported_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(exported >= 4, "{metrics}");
    assert!(
        metrics.contains(r#"trellis_spans_dropped_total{reason="queue_full"} 0"#),
        "{metrics}"
    );

    // A gateway sampling no new trace (under another service name): nothing is recorded
    // anywhere, and the context still reaches both apps, flagged unsampled.
    let quiet = gateway(&[
        "--otlp-endpoint",
        &collector.otlp,
        "--trace-sample",
        "0",
        "--trace-service",
        "edge",
    ]);
    let quiet_url = format!("http://{}/a/hello", quiet.addr("gateway"));
    let r = http().get(&quiet_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let a_seen = a_log.lock().unwrap().last().cloned().unwrap();
    let b_seen = b_log.lock().unwrap().last().cloned().unwrap();
    assert!(a_seen.traceparent.ends_with("-00"), "{a_seen:?}");
    assert_eq!(
        b_seen.traceparent, a_seen.traceparent,
        "passed on untouched"
    );
    let unsampled_trace = a_seen.traceparent.split('-').nth(1).unwrap().to_owned();
    assert_ne!(parent_id(&a_seen.traceparent), "0000000000000000");
    // A caller's sampled decision is still followed by that gateway: once this marker trace is
    // complete, every hop has exported what it handled before it.
    let r = http()
        .get(&quiet_url)
        .header("traceparent", format!("00-{MARKER_TRACE}-{CALLER}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let marker = collector.trace(MARKER_TRACE, 5).await;
    assert_structure(&marker, CALLER, "edge");
    let r = http()
        .get(format!("{}/api/traces/{unsampled_trace}", collector.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the unsampled trace has no span");
}
