//! Listeners: HTTP/1.1 and h2c on one port (hyper-util's auto builder), with graceful drain.

use crate::body::Body;
use crate::mesh_tls::{MeshTls, PeerIdentity};
use crate::reject::{ERROR_HEADER, Reject};
use crate::{Error, Result};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Binds `addr` (validated before anything else runs).
pub async fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        addr: addr.to_owned(),
        source,
    })
}

/// A signal every listener waits on; `true` means stop accepting and drain.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending side of [`Shutdown`].
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

pub fn shutdown_pair() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl Shutdown {
    pub async fn wait(&mut self) {
        // An error means the trigger is gone, which also means shut down.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Serves `handler` on `listener` until `shutdown`, then stops accepting and waits up to `drain`
/// for in-flight requests (idle keep-alive connections are closed at once).
pub async fn serve<H, F>(listener: TcpListener, handler: H, shutdown: Shutdown, drain: Duration)
where
    H: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve_with_peer(
        listener,
        move |request, _peer| handler(request),
        shutdown,
        drain,
    )
    .await;
}

/// Who is on the other end of a connection: its address, and with mutual TLS the identity its
/// certificate proves.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub identity: Option<Arc<PeerIdentity>>,
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Like [`serve`], giving the handler the client's address too.
pub async fn serve_with_peer<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: Shutdown,
    drain: Duration,
) where
    H: Fn(Request<Body>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve_peers(
        listener,
        move |request, peer: Peer| handler(request, peer.addr),
        None,
        shutdown,
        drain,
    )
    .await;
}

/// Like [`serve`], giving the handler the [`Peer`]; with `mesh`, every connection must be
/// mutual TLS with a mesh certificate (a plaintext request gets a 403 saying so).
pub async fn serve_peers<H, F>(
    listener: TcpListener,
    handler: H,
    mesh: Option<Arc<MeshTls>>,
    mut shutdown: Shutdown,
    drain: Duration,
) where
    H: Fn(Request<Body>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let local = listener.local_addr().ok();
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Running out of file descriptors is transient: back off instead of spinning.
                    tracing::warn!(error = %e, ?local, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let Some(mesh) = &mesh else {
            let peer = Peer {
                addr,
                identity: None,
            };
            let connection = builder
                .serve_connection(TokioIo::new(stream), service(handler, peer))
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
            continue;
        };
        // The handshake runs in the connection's task, so a slow client holds up no one else.
        let mesh = mesh.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some(stream) = accept_mesh(&mesh, stream, addr).await else {
                return;
            };
            let identity = mesh.peer_of(stream.get_ref().1).map(Arc::new);
            let peer = Peer { addr, identity };
            let connection = builder
                .serve_connection(TokioIo::new(stream), service(handler, peer))
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::debug!(?local, "listener closed, draining");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?local, "drain timed out with requests still in flight");
    }
}

/// hyper's service for one connection's requests.
fn service<H, F>(
    handler: H,
    peer: Peer,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
> + Clone
+ Send
+ 'static
where
    H: Fn(Request<Body>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    hyper::service::service_fn(move |request: Request<Incoming>| {
        // A request without a body (most of them) gets the zero-sized empty body, which
        // needs no allocation.
        let request = if request.body().is_end_stream() {
            request.map(|_| crate::body::empty())
        } else {
            request.map(BodyExt::boxed)
        };
        let response = handler(request, peer.clone());
        async move { Ok::<_, Infallible>(response.await) }
    })
}

/// The mutual-TLS handshake of an accepted connection. A client speaking plaintext HTTP is
/// told why it is refused instead of seeing the connection drop.
async fn accept_mesh(
    mesh: &MeshTls,
    stream: TcpStream,
    addr: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    /// A TLS record carrying a handshake message starts with this byte.
    const TLS_HANDSHAKE: u8 = 0x16;
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return None;
    }
    if first[0] != TLS_HANDSHAKE {
        refuse_plaintext(stream).await;
        return None;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(mesh.server_config());
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::info!(error = %e, %addr, "mutual TLS handshake refused");
            None
        }
        Err(_) => {
            tracing::debug!(%addr, "mutual TLS handshake timed out");
            None
        }
    }
}

async fn refuse_plaintext(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Read what the client sent first: closing with unread data would reset the connection
    // before the client reads the answer.
    let mut request = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut request)).await;
    let reject = Reject::MtlsRequired;
    let body = serde_json::json!({"error": reject.code(), "message": reject.message()});
    let body = format!("{body}\n");
    let answer = format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n{ERROR_HEADER}: {}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        reject.code(),
        body.len()
    );
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// The address a listener actually got (for `:0` ports).
pub fn local_addr(listener: &TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(|source| Error::Bind {
        addr: "listener".to_owned(),
        source,
    })
}
