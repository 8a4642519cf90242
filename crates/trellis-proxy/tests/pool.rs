//! The upstream connection pool against test upstreams that count the connections they accept:
//! these tests fail if connections are not reused, or reused when they must not be.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use trellis_proxy::body::{Body, empty, full};
use trellis_proxy::client::{PoolConfig, Transport, UpstreamBody, UpstreamClient};
use trellis_proxy::upstream::EndpointKey;

/// A test upstream: its address and the number of TCP connections it accepted.
struct Upstream {
    endpoint: EndpointKey,
    accepted: Arc<AtomicUsize>,
}

/// An HTTP/1.1 + h2c upstream: `/big` streams 4 MiB slowly enough to be cut off mid-body,
/// anything else answers `ok`.
async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint: EndpointKey = Arc::from(listener.local_addr().unwrap().to_string().as_str());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let body = if request.uri().path() == "/big" {
                        let chunks = (0..64).map(|_| {
                            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; 64 * 1024])))
                        });
                        StreamBody::new(futures_util::stream::iter(chunks)).boxed()
                    } else {
                        http_body_util::Full::new(Bytes::from_static(b"ok")).boxed()
                    };
                    Ok::<_, Infallible>(Response::new(body))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream { endpoint, accepted }
}

/// An HTTP/1.1 upstream that answers one request per connection and then, when the test says
/// so, closes the connection without having said it would (no `Connection: close`): the client
/// learns it only from the closed socket, after the connection went back to its pool.
struct ClosingUpstream {
    upstream: Upstream,
    /// Tells the connection that answered to close now.
    close: Arc<tokio::sync::Notify>,
    /// Notified once it is closed.
    closed: Arc<tokio::sync::Notify>,
}

async fn closing_upstream() -> ClosingUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint: EndpointKey = Arc::from(listener.local_addr().unwrap().to_string().as_str());
    let accepted = Arc::new(AtomicUsize::new(0));
    let close = Arc::new(tokio::sync::Notify::new());
    let closed = Arc::new(tokio::sync::Notify::new());
    let (count, close_rx, closed_tx) = (accepted.clone(), close.clone(), closed.clone());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let (close, closed) = (close_rx.clone(), closed_tx.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                stream.write_all(response).await.unwrap();
                close.notified().await;
                drop(stream);
                closed.notify_one();
            });
        }
    });
    ClosingUpstream {
        upstream: Upstream { endpoint, accepted },
        close,
        closed,
    }
}

fn client() -> UpstreamClient {
    UpstreamClient::new(PoolConfig::default())
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(empty()).unwrap()
}

async fn text(response: Response<UpstreamBody>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let up = upstream().await;
    let client = client();
    for _ in 0..5 {
        let response = client
            .send_to(&up.endpoint, Transport::Plain, get("/"))
            .await
            .unwrap();
        assert_eq!(text(response).await, "ok");
    }
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        1,
        "one connection for all"
    );

    // A request with a body, too.
    let post = Request::post("/").body(full("payload")).unwrap();
    let response = client
        .send_to(&up.endpoint, Transport::Plain, post)
        .await
        .unwrap();
    assert_eq!(text(response).await, "ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn sequential_h2c_requests_share_one_connection() {
    let up = upstream().await;
    let client = client();
    for _ in 0..5 {
        let request = Request::get("/")
            .version(Version::HTTP_2)
            .body(empty())
            .unwrap();
        let response = client
            .send_to(&up.endpoint, Transport::Plain, request)
            .await
            .unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(text(response).await, "ok");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_pooled_connection_closed_while_idle_is_replaced_without_error() {
    let up = closing_upstream().await;
    let client = client();
    for round in 1..=5 {
        let response = client
            .send_to(&up.upstream.endpoint, Transport::Plain, get("/"))
            .await
            .unwrap();
        assert_eq!(text(response).await, "ok", "request {round}");
        // The connection is back in the pool; now the upstream closes it.
        let closed = up.closed.notified();
        up.close.notify_one();
        closed.await;
    }
    assert_eq!(
        up.upstream.accepted.load(Ordering::SeqCst),
        5,
        "a fresh connection each time"
    );
}

#[tokio::test]
async fn a_response_dropped_unread_does_not_return_its_connection() {
    let up = upstream().await;
    let client = client();
    let response = client
        .send_to(&up.endpoint, Transport::Plain, get("/big"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // Read a little, then give up on the rest.
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);

    // The half-read connection cannot carry another request: a new one is opened.
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        client.send_to(&up.endpoint, Transport::Plain, get("/")),
    )
    .await
    .expect("the next request does not hang on the abandoned connection")
    .unwrap();
    assert_eq!(text(response).await, "ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);

    // A response read to the end does give its connection back.
    let response = client
        .send_to(&up.endpoint, Transport::Plain, get("/"))
        .await
        .unwrap();
    assert_eq!(text(response).await, "ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);

    // So does a fully read large one.
    let response = client
        .send_to(&up.endpoint, Transport::Plain, get("/big"))
        .await
        .unwrap();
    assert_eq!(text(response).await.len(), 4 * 1024 * 1024);
    let response = client
        .send_to(&up.endpoint, Transport::Plain, get("/"))
        .await
        .unwrap();
    assert_eq!(text(response).await, "ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_response_without_body_returns_its_connection_unread() {
    let up = upstream().await;
    let client = client();
    for _ in 0..3 {
        let head = Request::head("/").body(empty()).unwrap();
        let response = client
            .send_to(&up.endpoint, Transport::Plain, head)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        // Dropped without polling: there is nothing to read.
        drop(response);
    }
    let response = client
        .send_to(&up.endpoint, Transport::Plain, get("/"))
        .await
        .unwrap();
    assert_eq!(text(response).await, "ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}
