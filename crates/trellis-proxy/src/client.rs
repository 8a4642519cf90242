//! Pooled upstream connections: one HTTP/1.1 pool and one HTTP/2 (h2c, prior knowledge) pool.
//!
//! A request leaves with the protocol it arrived with, so gRPC (always HTTP/2) stays HTTP/2 end
//! to end and HTTP/1.1 apps are never sent a protocol they may not speak.

use crate::body::Body;
use hyper::{Request, Response, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

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

#[derive(Clone)]
pub struct UpstreamClient {
    http1: Client<HttpConnector, Body>,
    http2: Client<HttpConnector, Body>,
}

impl UpstreamClient {
    pub fn new(config: PoolConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            // Without a timer the pool never reaps idle connections, whatever the timeout says.
            b.pool_timer(TokioTimer::new())
                .pool_idle_timeout(config.idle_timeout)
                .pool_max_idle_per_host(config.max_idle_per_host);
            b
        };
        let http1 = builder().build(connector.clone());
        let mut h2 = builder();
        h2.http2_only(true).timer(TokioTimer::new());
        let http2 = h2.build(connector);
        Self { http1, http2 }
    }

    /// Sends a request whose URI is absolute (`http://host:port/path`).
    pub async fn send(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, SendError> {
        let client = if request.version() == Version::HTTP_2 {
            &self.http2
        } else {
            *request.version_mut() = Version::HTTP_11;
            &self.http1
        };
        client.request(request).await.map_err(|e| {
            tracing::debug!(error = %e, "upstream request failed");
            if e.is_connect() {
                SendError::Connect
            } else {
                SendError::Reset
            }
        })
    }
}
