//! The proxy engine against real upstream sockets, without a registry: endpoints are set
//! directly on the upstreams the way the registry watch would set them.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use trellis_proxy::body::{Body, empty, full};
use trellis_proxy::client::{PoolConfig, UpstreamClient};
use trellis_proxy::config::ServicePolicy;
use trellis_proxy::discovery::Discovery;
use trellis_proxy::metrics::Metrics;
use trellis_proxy::routes::Routes;
use trellis_proxy::server::{Shutdown, ShutdownTrigger, serve, shutdown_pair};
use trellis_proxy::upstream::Upstream;
use trellis_proxy::{Mode, Proxy, config::PolicySource};
use trellis_types::{CheckStatus, WatchInstance, Weights};

/// A running HTTP server (HTTP/1.1 and h2c) that counts the requests it answers.
struct TestServer {
    port: u16,
    hits: Arc<AtomicUsize>,
    _stop: ShutdownTrigger,
}

async fn start<H, F>(handler: H) -> TestServer
where
    H: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let (stop, shutdown) = shutdown_pair();
    let counter = hits.clone();
    let counted = move |request: Request<Body>| {
        counter.fetch_add(1, Ordering::SeqCst);
        handler(request)
    };
    tokio::spawn(serve(listener, counted, shutdown, Duration::from_secs(1)));
    TestServer {
        port,
        hits,
        _stop: stop,
    }
}

/// An upstream answering `status` with a body naming its port and the path it got.
async fn upstream(status: u16) -> TestServer {
    let port = Arc::new(AtomicUsize::new(0));
    let p = port.clone();
    let server = start(move |request: Request<Body>| {
        let text = format!("{}:{}", p.load(Ordering::SeqCst), request.uri());
        async move {
            let mut response = Response::new(full(text));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            response
        }
    })
    .await;
    port.store(usize::from(server.port), Ordering::SeqCst);
    server
}

fn instance(port: u16) -> WatchInstance {
    WatchInstance {
        id: format!("i-{port}"),
        address: "127.0.0.1".into(),
        port,
        tags: vec![],
        meta: Default::default(),
        weights: Weights::default(),
        status: CheckStatus::Passing,
    }
}

/// A closed port: bound, then released.
async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

struct Harness {
    discovery: Arc<Discovery>,
    metrics: Metrics,
}

impl Harness {
    fn new() -> Self {
        let metrics = Metrics::new();
        // Port 1: nothing listens; these tests never ask the registry.
        let discovery = Discovery::new(
            "http://127.0.0.1:1",
            &trellis_client::ClientOptions::default(),
            PolicySource::default(),
            metrics.clone(),
        )
        .unwrap();
        Self {
            discovery: Arc::new(discovery),
            metrics,
        }
    }

    fn service(&self, name: &str, policy: ServicePolicy, ports: &[u16]) -> Arc<Upstream> {
        let upstream = Arc::new(Upstream::new(name, policy, self.metrics.clone()));
        upstream.set_endpoints(ports.iter().map(|p| instance(*p)).collect(), 1, None);
        self.discovery.add_static(upstream.clone());
        upstream
    }

    fn proxy(&self, mode: Mode) -> Arc<Proxy> {
        let client = UpstreamClient::new(PoolConfig::default());
        Arc::new(Proxy::new(
            mode,
            self.discovery.clone(),
            client,
            self.metrics.clone(),
        ))
    }

    /// Serves `proxy` on a socket and returns its port.
    async fn listen(&self, proxy: Arc<Proxy>) -> (u16, ShutdownTrigger, Shutdown) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, shutdown) = shutdown_pair();
        tokio::spawn(serve(
            listener,
            move |request: Request<Body>| {
                let proxy = proxy.clone();
                async move { proxy.handle(request).await }
            },
            shutdown.clone(),
            Duration::from_secs(1),
        ));
        (port, stop, shutdown)
    }
}

fn get(uri: &str, host: &str) -> Request<Body> {
    Request::get(uri)
        .header("host", host)
        .body(empty())
        .unwrap()
}

async fn text(response: Response<Body>) -> String {
    String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn gateway_routes_by_longest_prefix_and_answers_404_json_for_unknown_routes() {
    let h = Harness::new();
    let api = upstream(200).await;
    let orders = upstream(200).await;
    h.service("api", ServicePolicy::default(), &[api.port]);
    h.service("orders", ServicePolicy::default(), &[orders.port]);
    let routes = Routes::parse(&["/api=api".into(), "/api/orders=orders".into()], false).unwrap();
    let proxy = h.proxy(Mode::Gateway(routes));

    let r = proxy.handle(get("/api/orders/42?x=1", "gw")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(text(r).await, format!("{}:/42?x=1", orders.port));
    let r = proxy.handle(get("/api/users", "gw")).await;
    assert_eq!(text(r).await, format!("{}:/users", api.port));

    let r = proxy.handle(get("/nowhere", "gw")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-trellis-error"], "no-route");
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(&text(r).await).unwrap();
    assert_eq!(body["error"], "no-route");

    let keep = h.proxy(Mode::Gateway(
        Routes::parse(&["/api=api".into()], true).unwrap(),
    ));
    let r = keep.handle(get("/api/users", "gw")).await;
    assert_eq!(text(r).await, format!("{}:/api/users", api.port));
}

#[tokio::test]
async fn outbound_routes_by_host_and_absolute_uri_and_says_why_it_fails() {
    let h = Harness::new();
    let users = upstream(200).await;
    h.service("users", ServicePolicy::default(), &[users.port]);
    h.service("empty", ServicePolicy::default(), &[]);
    let proxy = h.proxy(Mode::Outbound);

    let r = proxy.handle(get("/u/1", "users:80")).await;
    assert_eq!(text(r).await, format!("{}:/u/1", users.port));
    let r = proxy.handle(get("http://users/u/2", "users")).await;
    assert_eq!(text(r).await, format!("{}:/u/2", users.port));

    let r = proxy.handle(get("/x", "empty")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-trellis-error"], "no-endpoints");
    let r = proxy.handle(get("/x", "bad_name!")).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-trellis-error"], "bad-target");
}

#[tokio::test]
async fn connect_failures_are_retried_for_any_method_on_another_endpoint() {
    let h = Harness::new();
    let live = upstream(200).await;
    let dead = dead_port().await;
    let policy = ServicePolicy {
        load_balancer: trellis_balance::Policy::RoundRobin,
        ..ServicePolicy::default()
    };
    h.service("svc", policy, &[dead, live.port]);
    let proxy = h.proxy(Mode::Outbound);
    for i in 0..50 {
        let request = Request::post(format!("/p{i}"))
            .header("host", "svc")
            .header("content-length", "5")
            .body(full("hello"))
            .unwrap();
        let r = proxy.handle(request).await;
        assert_eq!(r.status(), 200, "request {i}: {:?}", r.headers());
    }
    assert_eq!(live.hits.load(Ordering::SeqCst), 50);
    let metrics = h.metrics.encode();
    assert!(
        metrics.contains("trellis_retries_total{service=\"svc\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn failed_posts_are_not_retried_but_failed_gets_are() {
    let h = Harness::new();
    let failing = upstream(503).await;
    let ok = upstream(200).await;
    let mut policy = ServicePolicy {
        load_balancer: trellis_balance::Policy::RoundRobin,
        ..ServicePolicy::default()
    };
    // Keep the failing endpoint in rotation: this test is about retries, not ejection.
    policy.outlier.consecutive_failures = 0;
    h.service("svc", policy, &[failing.port, ok.port]);
    let proxy = h.proxy(Mode::Outbound);
    for _ in 0..20 {
        let r = proxy.handle(get("/", "svc")).await;
        assert_eq!(r.status(), 200);
    }
    let mut failed_posts = 0;
    for _ in 0..20 {
        let post = Request::post("/")
            .header("host", "svc")
            .body(empty())
            .unwrap();
        let r = proxy.handle(post).await;
        failed_posts += usize::from(r.status() == 503);
        // An upstream's own answer is passed through: no x-trellis-error.
        assert!(r.headers().get("x-trellis-error").is_none());
    }
    assert!(
        failed_posts > 0,
        "round robin sends some POSTs to the failing endpoint"
    );
}

#[tokio::test]
async fn the_only_endpoint_is_retried_when_no_other_is_eligible() {
    // As Envoy and Linkerd do for a single-host cluster: a retry avoids the endpoint that just
    // failed only when another one is eligible.
    let h = Harness::new();
    let answered = Arc::new(AtomicUsize::new(0));
    let a = answered.clone();
    let flaky = start(move |_request: Request<Body>| {
        let first = a.fetch_add(1, Ordering::SeqCst).is_multiple_of(2);
        async move {
            let mut response = Response::new(full(if first { "busy" } else { "ok" }));
            if first {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            response
        }
    })
    .await;
    h.service("one", ServicePolicy::default(), &[flaky.port]);
    let proxy = h.proxy(Mode::Outbound);
    let r = proxy.handle(get("/", "one")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(text(r).await, "ok");
    assert_eq!(
        flaky.hits.load(Ordering::SeqCst),
        2,
        "retried on the same endpoint"
    );
    // A POST is still not retried.
    let post = Request::post("/")
        .header("host", "one")
        .body(empty())
        .unwrap();
    assert_eq!(proxy.handle(post).await.status(), 503);
    assert_eq!(flaky.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retry_budget_caps_extra_load_when_every_endpoint_fails() {
    let h = Harness::new();
    let servers = [
        upstream(503).await,
        upstream(503).await,
        upstream(503).await,
    ];
    let policy = ServicePolicy {
        max_retries: 2,
        backoff: trellis_proxy::config::BackoffConfig {
            base: Duration::from_micros(1),
            max: Duration::from_micros(1),
        },
        ..ServicePolicy::default()
    };
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    h.service("svc", policy, &ports);
    let proxy = h.proxy(Mode::Outbound);
    let requests = 1000;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let proxy = proxy.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..requests / 10 {
                let r = proxy.handle(get("/", "svc")).await;
                assert_eq!(r.status(), 503);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sent: usize = servers.iter().map(|s| s.hits.load(Ordering::SeqCst)).sum();
    // Without a budget every request would be tried 3 times (3000). The budget allows 20% of
    // requests plus a reserve of 10/s over the 10 s window.
    let allowed = requests + requests / 5 + 100;
    assert!(
        sent <= allowed,
        "{sent} upstream requests for {requests} client requests"
    );
    assert!(sent > requests, "some retries were allowed");
}

#[tokio::test]
async fn slow_upstreams_get_504_with_the_reason() {
    let h = Harness::new();
    let slow = start(|_request: Request<Body>| async {
        std::future::pending::<()>().await;
        Response::new(empty())
    })
    .await;
    let policy = ServicePolicy {
        timeout: Duration::from_millis(300),
        per_try_timeout: Duration::from_millis(100),
        ..ServicePolicy::default()
    };
    h.service("slow", policy, &[slow.port]);
    let proxy = h.proxy(Mode::Outbound);
    let r = proxy.handle(get("/", "slow")).await;
    assert_eq!(r.status(), 504);
    let reason = r.headers()["x-trellis-error"].to_str().unwrap().to_owned();
    assert!(
        ["timeout", "per-try-timeout"].contains(&reason.as_str()),
        "{reason}"
    );
    let post = Request::post("/")
        .header("host", "slow")
        .body(empty())
        .unwrap();
    let r = proxy.handle(post).await;
    assert_eq!(
        r.headers()["x-trellis-error"],
        "per-try-timeout",
        "a POST gets one try"
    );
}

#[tokio::test]
async fn concurrency_and_rate_limits_reject_with_503_and_429() {
    let h = Harness::new();
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let gate = start(move |_request: Request<Body>| {
        let mut rx = release_rx.clone();
        async move {
            let _ = rx.wait_for(|open| *open).await;
            Response::new(full("done"))
        }
    })
    .await;
    let policy = ServicePolicy {
        max_concurrent: 1,
        ..ServicePolicy::default()
    };
    h.service("one", policy, &[gate.port]);
    let proxy = h.proxy(Mode::Outbound);
    let p = proxy.clone();
    let first = tokio::spawn(async move { p.handle(get("/", "one")).await.status() });
    while gate.hits.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let r = proxy.handle(get("/", "one")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-trellis-error"], "concurrency-limit");
    release_tx.send_replace(true);
    assert_eq!(first.await.unwrap(), 200);

    let ok = upstream(200).await;
    let policy = ServicePolicy {
        rate_limit: Some(trellis_proxy::config::RateLimitConfig {
            per_second: 1,
            burst: Some(3),
        }),
        ..ServicePolicy::default()
    };
    h.service("limited", policy, &[ok.port]);
    let statuses: Vec<u16> =
        futures_util::future::join_all((0..5).map(|_| proxy.handle(get("/", "limited"))))
            .await
            .iter()
            .map(|r| r.status().as_u16())
            .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn trace_context_is_created_or_propagated() {
    let h = Harness::new();
    let echo = start(|request: Request<Body>| async move {
        let h = request.headers();
        let line = format!(
            "{}|{}",
            h.get("traceparent")
                .map(|v| v.to_str().unwrap())
                .unwrap_or(""),
            h.get("x-request-id")
                .map(|v| v.to_str().unwrap())
                .unwrap_or("")
        );
        Response::new(full(line))
    })
    .await;
    h.service("echo", ServicePolicy::default(), &[echo.port]);
    let proxy = h.proxy(Mode::Outbound);
    let r = proxy.handle(get("/", "echo")).await;
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let seen = text(r).await;
    let (tp, rid) = seen.split_once('|').unwrap();
    assert!(trellis_proxy::headers::is_valid_traceparent(tp), "{tp}");
    assert_eq!(rid, id);

    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = Request::get("/")
        .header("host", "echo")
        .header("traceparent", tp)
        .header("x-request-id", "req-1")
        .body(empty())
        .unwrap();
    assert_eq!(
        text(proxy.handle(request).await).await,
        format!("{tp}|req-1")
    );
}

#[tokio::test]
async fn a_traced_gateway_request_records_its_retries_and_parents_the_next_hop() {
    use trellis_proxy::exporter::{SpanQueue, Tracer};
    use trellis_proxy::spans::RetryReason;
    use trellis_proxy::trace_context::{Sampler, parse_traceparent};

    let h = Harness::new();
    let echo = start(|request: Request<Body>| async move {
        let tp = request.headers()["traceparent"]
            .to_str()
            .unwrap()
            .to_owned();
        Response::new(full(tp))
    })
    .await;
    let dead = dead_port().await;
    let policy = ServicePolicy {
        load_balancer: trellis_balance::Policy::RoundRobin,
        ..ServicePolicy::default()
    };
    h.service("orders", policy, &[dead, echo.port]);
    let queue = Arc::new(SpanQueue::new(100, 512, h.metrics.spans()));
    let tracer = Arc::new(Tracer::new(Sampler::new(1.0), Some(queue.clone())));
    let routes = Routes::parse(&["/orders=orders".into()], false).unwrap();
    let client = UpstreamClient::new(PoolConfig::default());
    let proxy = Proxy::new(
        Mode::Gateway(routes),
        h.discovery.clone(),
        client,
        h.metrics.clone(),
    )
    .with_tracer(tracer);

    let mut retried = 0;
    for _ in 0..4 {
        let request = Request::get("/orders/7")
            .header("host", "gw")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .header("tracestate", "a=1")
            .body(empty())
            .unwrap();
        let r = proxy.handle(request).await;
        assert_eq!(r.status(), 200);
        let sent = parse_traceparent(text(r).await.as_bytes()).unwrap();
        let records = queue.drain();
        let [record] = records.as_slice() else {
            panic!("one record per request: {records:?}")
        };
        // The upstream is the child of the gateway's CLIENT span, itself under the SERVER span.
        assert_eq!(sent.trace_id, 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        assert_eq!(sent.span_id, record.ids.client_id);
        assert_eq!(record.ids.parent_id, 0x00f0_67aa_0ba9_02b7);
        assert_ne!(record.ids.server_id, 0);
        assert_eq!(record.route.as_deref(), Some("/orders"));
        assert_eq!(record.status, 200);
        assert_eq!(record.tracestate.as_ref().unwrap(), "a=1");
        let live = format!("127.0.0.1:{}", echo.port);
        assert_eq!(record.log.endpoint.as_deref(), Some(live.as_str()));
        assert_eq!(
            record.log.instance.as_deref(),
            Some(format!("i-{}", echo.port).as_str())
        );
        if let [retry] = record.log.retries.as_slice() {
            retried += 1;
            assert_eq!(record.log.attempts, 2);
            assert_eq!(
                retry.reason,
                RetryReason::Failed(trellis_proxy::reject::Reject::ConnectFailed)
            );
            assert_eq!(&*retry.endpoint, format!("127.0.0.1:{dead}"));
        } else {
            assert_eq!(record.log.attempts, 1, "{record:?}");
        }
    }
    assert!(
        retried > 0,
        "round robin sends some first attempts to the dead endpoint"
    );
}

#[tokio::test]
async fn h2c_and_grpc_trailers_pass_through() {
    let h = Harness::new();
    // A gRPC-like upstream: HTTP/2 only in practice, answers data then trailers.
    let grpc = start(|request: Request<Body>| async move {
        assert_eq!(request.version(), hyper::Version::HTTP_2);
        let te = request
            .headers()
            .get("te")
            .map(|v| v.to_str().unwrap().to_owned());
        let payload = request.into_body().collect().await.unwrap().to_bytes();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert(
            "grpc-message",
            format!("te={}", te.unwrap_or_default()).parse().unwrap(),
        );
        let frames = vec![
            Ok::<_, hyper::Error>(Frame::data(payload)),
            Ok(Frame::trailers(trailers)),
        ];
        let mut response =
            Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
        response
            .headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        response
    })
    .await;
    h.service("grpc", ServicePolicy::default(), &[grpc.port]);
    let (port, _stop, _) = h.listen(h.proxy(Mode::Outbound)).await;

    // h2c with prior knowledge to the proxy; :authority names the service, as a gRPC client
    // with an authority override does.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut client, connection) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    // A streamed request body (no content-length), as gRPC sends.
    let frames = vec![Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(
        b"\0\0\0\0\x02hi",
    )))];
    let request = Request::post("http://grpc/pkg.Svc/Call")
        .version(hyper::Version::HTTP_2)
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .unwrap();
    let response = client.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.headers());
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"\0\0\0\0\x02hi"));
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "te=trailers");
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_the_idle_timeout() {
    // Count open connections on the upstream with a plain accept loop.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(tokio::sync::Notify::new());
    let (o, c) = (open.clone(), closed.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            o.fetch_add(1, Ordering::SeqCst);
            let (o, c) = (o.clone(), c.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(full("ok")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                o.fetch_sub(1, Ordering::SeqCst);
                c.notify_one();
            });
        }
    });
    let h = Harness::new();
    h.service("idle", ServicePolicy::default(), &[port]);
    let client = UpstreamClient::new(PoolConfig {
        idle_timeout: Duration::from_millis(200),
        ..PoolConfig::default()
    });
    let proxy = Arc::new(Proxy::new(
        Mode::Outbound,
        h.discovery.clone(),
        client,
        h.metrics.clone(),
    ));
    let r = proxy.handle(get("/", "idle")).await;
    assert_eq!(text(r).await, "ok");
    assert_eq!(open.load(Ordering::SeqCst), 1, "the connection is pooled");
    // The pool closes it on its own; bounded so a regression fails instead of hanging.
    tokio::time::timeout(Duration::from_secs(10), async {
        while open.load(Ordering::SeqCst) > 0 {
            closed.notified().await;
        }
    })
    .await
    .expect("idle connection closed by the pool");
    drop(proxy);
}
