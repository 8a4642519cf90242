//! One command's listeners served together: the proxy listeners and the admin listener run
//! until shutdown; then readiness drops, a pre-drain step runs (the sidecar deregisters) and
//! in-flight requests drain within a bound. Shared by `trellis sidecar` and `trellis gateway`.

use crate::Result;
use crate::admin::Admin;
use crate::body::Body;
use crate::mesh_tls::MeshTls;
use crate::proxy::Proxy;
use crate::server::{Peer, local_addr, serve, serve_peers, shutdown_pair};
use hyper::Request;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;

/// A bound listener, the engine answering on it, and the name it is announced under.
pub struct ProxyListener {
    pub name: &'static str,
    pub listener: TcpListener,
    pub proxy: Arc<Proxy>,
    /// Mutual TLS required of every connection (the inbound listener of a mesh sidecar).
    pub mesh: Option<Arc<MeshTls>>,
}

/// The admin listener and its handler.
pub struct AdminListener {
    pub listener: TcpListener,
    pub admin: Arc<Admin>,
}

/// Announces and serves every listener until `shutdown` resolves; then marks the proxy not
/// ready, runs `before_drain`, stops accepting and waits up to `drain` for in-flight requests.
pub async fn serve_until(
    listeners: Vec<ProxyListener>,
    admin: AdminListener,
    shutdown: impl Future<Output = ()>,
    before_drain: impl Future<Output = ()>,
    drain: Duration,
) -> Result<()> {
    let (trigger, stop) = shutdown_pair();
    let mut tasks = Vec::with_capacity(listeners.len() + 1);
    for ProxyListener {
        name,
        listener,
        proxy,
        mesh,
    } in listeners
    {
        announce(name, local_addr(&listener)?);
        let handler = move |request: Request<Body>, peer: Peer| {
            let proxy = proxy.clone();
            async move { proxy.handle_from(request, Some(peer)).await }
        };
        tasks.push(tokio::spawn(serve_peers(
            listener,
            handler,
            mesh,
            stop.clone(),
            drain,
        )));
    }
    announce("admin", local_addr(&admin.listener)?);
    let ready = admin.admin.ready.clone();
    let handler = admin.admin;
    let handler = move |request: Request<Body>| {
        let admin = handler.clone();
        async move { admin.handle(&request) }
    };
    tasks.push(tokio::spawn(serve(admin.listener, handler, stop, drain)));

    shutdown.await;
    tracing::info!("shutting down");
    ready.store(false, Ordering::Relaxed);
    before_drain.await;
    tracing::info!(
        timeout_ms = drain.as_millis() as u64,
        "draining in-flight requests"
    );
    trigger.trigger();
    for task in tasks {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Prints where a listener is, on stdout (tests and scripts parse these lines).
pub fn announce(what: &str, addr: SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{what} listening on http://{addr}");
    let _ = out.flush();
}
