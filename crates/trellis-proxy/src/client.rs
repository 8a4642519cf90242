//! Pooled upstream connections: an HTTP/1.1 pool of our own and an HTTP/2 (h2c, prior knowledge)
//! pool from hyper-util.
//!
//! A request leaves with the protocol it arrived with, so gRPC (always HTTP/2) stays HTTP/2 end
//! to end and HTTP/1.1 apps are never sent a protocol they may not speak.
//!
//! The HTTP/1.1 pool is the hot path, so it is kept lean: idle connections are kept per endpoint
//! (`host:port`, the [`EndpointKey`] the balancer picked) in a LIFO list behind one short-held
//! lock; a connection goes back to its list when the response body it carried has been read to
//! the end (nothing is spawned per request, unlike hyper-util's legacy pool), and a request that a
//! stale pooled connection could not take is sent again on a fresh one. A background sweep closes
//! connections idle longer than the idle timeout.

use crate::body::Body;
pub use crate::mesh_tls::Transport;
use crate::mesh_tls::{MeshTls, mesh_server_name};
use crate::upstream::EndpointKey;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::header::{HOST, HeaderValue};
use hyper::http::uri::{PathAndQuery, Scheme};
use hyper::{Request, Response, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use trellis_client::mesh::MeshConnector;

/// Connection pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Idle connections are closed after this long.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint.
    pub max_idle_per_host: usize,
    /// TCP connect timeout; a connect failure is retried on another endpoint.
    pub connect_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(90),
            max_idle_per_host: 256,
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// What went wrong with one attempt.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: nothing was sent, so any request may be retried.
    Connect,
    /// The connection failed after the request may have been sent.
    Reset,
}

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

/// Idle HTTP/1.1 connections per endpoint.
struct Pool {
    idle: Mutex<HashMap<EndpointKey, Vec<Idle>>>,
    config: PoolConfig,
    sweeping: AtomicBool,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointKey, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection to `endpoint`, preferring one that is ready now; a connection whose
    /// last response just ended may need a moment before it takes the next request.
    fn checkout(&self, endpoint: &EndpointKey) -> Option<http1::SendRequest<Body>> {
        let mut map = self.lock();
        let list = map.get_mut(endpoint)?;
        let now = Instant::now();
        list.retain(|idle| {
            !idle.sender.is_closed()
                && now.saturating_duration_since(idle.since) < self.config.idle_timeout
        });
        if let Some(i) = list.iter().rposition(|idle| idle.sender.is_ready()) {
            return Some(list.swap_remove(i).sender);
        }
        list.pop().map(|idle| idle.sender)
    }

    fn checkin(self: &Arc<Self>, endpoint: EndpointKey, sender: http1::SendRequest<Body>) {
        if sender.is_closed() || self.config.max_idle_per_host == 0 {
            return;
        }
        let idle = Idle {
            sender,
            since: Instant::now(),
        };
        {
            let mut map = self.lock();
            let list = map.entry(endpoint).or_default();
            if list.len() >= self.config.max_idle_per_host {
                return;
            }
            list.push(idle);
        }
        if !self.sweeping.swap(true, Ordering::Relaxed)
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(sweep(Arc::downgrade(self)));
        }
    }
}

/// Closes connections idle for longer than the idle timeout (and forgets closed ones), until
/// the pool is dropped.
async fn sweep(pool: Weak<Pool>) {
    let period = match pool.upgrade() {
        Some(pool) => (pool.config.idle_timeout / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(10)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        let timeout = pool.config.idle_timeout;
        pool.lock().retain(|_, list| {
            list.retain(|idle| {
                !idle.sender.is_closed() && now.saturating_duration_since(idle.since) < timeout
            });
            !list.is_empty()
        });
    }
}

/// Gives a pooled HTTP/1.1 connection back once its response has been read to the end.
struct Release {
    pool: Arc<Pool>,
    endpoint: EndpointKey,
    sender: http1::SendRequest<Body>,
}

/// A response body from an upstream. Returns its connection to the pool when read to the end
/// and holds the request's concurrency permit, if any, until it is finished or dropped.
pub struct UpstreamBody {
    inner: Incoming,
    release: Option<Release>,
    done: bool,
    permit: Option<OwnedSemaphorePermit>,
}

impl UpstreamBody {
    fn new(inner: Incoming, release: Option<Release>) -> Self {
        Self {
            inner,
            release,
            done: false,
            permit: None,
        }
    }

    /// Keeps `permit` until this body is finished or dropped.
    pub fn hold(&mut self, permit: Option<OwnedSemaphorePermit>) {
        self.permit = permit;
    }

    pub fn into_body(self) -> Body {
        self.boxed()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A connection whose response was not read to the end cannot carry another request.
        if let Some(release) = self.release.take()
            && (self.done || hyper::body::Body::is_end_stream(&self.inner))
        {
            release.pool.checkin(release.endpoint, release.sender);
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.done = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Clone)]
pub struct UpstreamClient {
    pool: Arc<Pool>,
    http2: Client<HttpConnector, Body>,
    /// This proxy's mesh identity, for connections to endpoints that take only mutual TLS.
    mesh: Option<Arc<MeshTls>>,
    /// HTTP/2 over mutual TLS: one pooled client per service (each accepts only that service's
    /// certificate), with the mesh generation it was made for.
    mesh_http2: Arc<Mutex<HashMap<String, (u64, MeshHttp2)>>>,
}

type MeshHttp2 = Client<MeshConnector, Body>;

impl UpstreamClient {
    pub fn new(config: PoolConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        let mut h2 = Client::builder(TokioExecutor::new());
        // Without a timer the pool never reaps idle connections, whatever the timeout says.
        h2.pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .http2_only(true)
            .timer(TokioTimer::new());
        let http2 = h2.build(connector);
        let pool = Arc::new(Pool {
            idle: Mutex::new(HashMap::new()),
            config,
            sweeping: AtomicBool::new(false),
        });
        Self {
            pool,
            http2,
            mesh: None,
            mesh_http2: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The HTTP/2 client for meshed instances of `service`, made again when the mesh's leaf or
    /// roots have changed.
    fn mesh_http2(&self, service: &str) -> Option<MeshHttp2> {
        let mesh = self.mesh.as_ref()?;
        let generation = mesh.generation();
        let mut clients = self.mesh_http2.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((made_for, client)) = clients.get(service)
            && *made_for == generation
        {
            return Some(client.clone());
        }
        let config = match mesh.client_config_for(service, vec![b"h2".to_vec()]) {
            Ok(config) => config,
            Err(e) => {
                tracing::warn!(error = %e, %service, "no mutual TLS configuration");
                return None;
            }
        };
        let config_pool = self.pool.config;
        let mut h2 = Client::builder(TokioExecutor::new());
        h2.pool_timer(TokioTimer::new())
            .pool_idle_timeout(config_pool.idle_timeout)
            .pool_max_idle_per_host(config_pool.max_idle_per_host)
            .http2_only(true)
            .timer(TokioTimer::new());
        let client = h2.build(MeshConnector::new(config, config_pool.connect_timeout));
        clients.insert(service.to_owned(), (generation, client.clone()));
        Some(client)
    }

    /// Speaks mutual TLS with `mesh`'s identity to endpoints that ask for it.
    pub fn with_mesh(mut self, mesh: Arc<MeshTls>) -> Self {
        self.mesh = Some(mesh);
        self
    }

    /// Sends a request whose URI is absolute (`http://host:port/path`).
    pub async fn send(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let Some(authority) = request.uri().authority() else {
            return Err(SendError::Connect);
        };
        let endpoint: EndpointKey = Arc::from(authority.as_str());
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(path);
        self.send_to(&endpoint, Transport::Plain, request).await
    }

    /// Sends a request with an origin-form URI (`/path?query`) to `endpoint` (`host:port`).
    pub async fn send_to(
        &self,
        endpoint: &EndpointKey,
        transport: Transport<'_>,
        mut request: Request<Body>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        if request.version() == Version::HTTP_2 {
            let mesh_client = match transport {
                Transport::Plain => None,
                Transport::Mesh { service } => match self.mesh_http2(service) {
                    Some(client) => Some(client),
                    None => {
                        tracing::warn!(%endpoint, %service, "the endpoint takes only mutual TLS, and this proxy has no mesh identity");
                        return Err(SendError::Connect);
                    }
                },
            };
            let mut parts = request.uri().clone().into_parts();
            parts.scheme = Some(if mesh_client.is_some() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            });
            parts.authority = Some(endpoint.parse().map_err(|_| SendError::Connect)?);
            if parts.path_and_query.is_none() {
                parts.path_and_query = Some(PathAndQuery::from_static("/"));
            }
            *request.uri_mut() = Uri::from_parts(parts).map_err(|_| SendError::Connect)?;
            let sent = match mesh_client {
                Some(client) => client.request(request).await,
                None => self.http2.request(request).await,
            };
            return match sent {
                Ok(response) => Ok(response.map(|body| UpstreamBody::new(body, None))),
                Err(e) => {
                    tracing::debug!(error = %e, "upstream request failed");
                    Err(if e.is_connect() {
                        SendError::Connect
                    } else {
                        SendError::Reset
                    })
                }
            };
        }
        *request.version_mut() = Version::HTTP_11;
        if !request.headers().contains_key(HOST)
            && let Ok(host) = HeaderValue::from_str(endpoint)
        {
            request.headers_mut().insert(HOST, host);
        }
        loop {
            let (mut sender, reused) = match self.pool.checkout(endpoint) {
                Some(sender) => (sender, true),
                None => (self.connect(endpoint, transport).await?, false),
            };
            if reused && sender.ready().await.is_err() {
                // Closed while idle: nothing was sent on it.
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let release = Release {
                        pool: self.pool.clone(),
                        endpoint: endpoint.clone(),
                        sender,
                    };
                    return Ok(response.map(|body| UpstreamBody::new(body, Some(release))));
                }
                Err(mut e) => {
                    tracing::debug!(error = %e.error(), %endpoint, reused, "upstream request failed");
                    match e.take_message() {
                        // The connection could not take the request (a pooled one closed just
                        // now): nothing was sent, so send it on another connection.
                        Some(unsent) if reused => request = unsent,
                        Some(_) => return Err(SendError::Connect),
                        None => return Err(SendError::Reset),
                    }
                }
            }
        }
    }

    async fn connect(
        &self,
        endpoint: &str,
        transport: Transport<'_>,
    ) -> Result<http1::SendRequest<Body>, SendError> {
        let connect = tokio::net::TcpStream::connect(endpoint);
        let stream = match tokio::time::timeout(self.pool.config.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, %endpoint, "upstream connect failed");
                return Err(SendError::Connect);
            }
            Err(_) => {
                tracing::debug!(%endpoint, "upstream connect timed out");
                return Err(SendError::Connect);
            }
        };
        let _ = stream.set_nodelay(true);
        match transport {
            Transport::Plain => handshake(endpoint, stream).await,
            Transport::Mesh { service } => {
                let (Some(mesh), Some(name)) = (&self.mesh, mesh_server_name(service)) else {
                    tracing::warn!(%endpoint, %service, "the endpoint takes only mutual TLS, and this proxy has no mesh identity");
                    return Err(SendError::Connect);
                };
                let connector = tokio_rustls::TlsConnector::from(mesh.client_config());
                let handshaken = tokio::time::timeout(
                    self.pool.config.connect_timeout,
                    connector.connect(name, stream),
                )
                .await;
                match handshaken {
                    Ok(Ok(stream)) => handshake(endpoint, stream).await,
                    Ok(Err(e)) => {
                        tracing::info!(error = %e, %endpoint, %service, "mutual TLS handshake failed");
                        Err(SendError::Connect)
                    }
                    Err(_) => {
                        tracing::debug!(%endpoint, "mutual TLS handshake timed out");
                        Err(SendError::Connect)
                    }
                }
            }
        }
    }
}

/// HTTP/1.1 on a connected stream, driven by a task of its own.
async fn handshake<S>(endpoint: &str, stream: S) -> Result<http1::SendRequest<Body>, SendError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| {
            tracing::debug!(error = %e, %endpoint, "upstream handshake failed");
            SendError::Connect
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}
