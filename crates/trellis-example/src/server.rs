//! A bound listener plus router, split from serving so that callers learn the real port
//! (tests bind `127.0.0.1:0`) before traffic starts.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

use crate::Error;

/// Parses a `--listen` value: `HOST:PORT` with an IP address or a host name (`localhost:8081`),
/// resolved once, here, to the first address it names.
pub(crate) fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    if text
        .rsplit_once(':')
        .is_none_or(|(host, _)| host.is_empty())
    {
        return Err("expected HOST:PORT, e.g. 127.0.0.1:8081 or localhost:8081".to_owned());
    }
    std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("cannot resolve {text}: {e}"))?
        .next()
        .ok_or_else(|| format!("{text} resolves to no address"))
}

/// A service whose port is bound but which does not accept requests until [`Server::serve`].
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
}

impl Server {
    /// Binds `addr`; port 0 picks a free port, see [`Server::local_addr`].
    pub async fn bind(addr: SocketAddr, router: Router) -> Result<Self, Error> {
        let bind_err = |source| Error::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        Ok(Self {
            listener,
            addr,
            router,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then stops accepting and waits for in-flight
    /// requests to finish.
    pub async fn serve<F>(self, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve)
    }

    /// What the binary does: announce the address on stdout (the demo and scripts wait for
    /// this line), then serve.
    pub(crate) async fn announce_and_serve<F>(self, service: &str, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        println!("listening on {}", self.addr);
        tracing::info!(service, addr = %self.addr, "listening");
        let result = self.serve(shutdown).await;
        tracing::info!(service, "stopped");
        result
    }
}
