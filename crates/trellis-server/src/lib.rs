//! The Trellis control plane: a Consul-compatible registry with health checks, KV, blocking
//! queries and a streaming watch, backed by a durable store with group commit.

pub mod api;
mod checker;
pub mod config;
mod metrics;
pub mod node;
mod published;
mod state;
mod writer;

pub use config::{ConfigError, ServerConfig};

use crate::metrics::Metrics;
use crate::node::Node;
use crate::state::{AppState, Inner};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{Semaphore, mpsc, watch};
use trellis_catalog::Catalog;
use trellis_store::{MemoryStore, RedbStore, Store};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the store: {0}")]
    Store(#[from] trellis_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("cannot start the writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A started server.
pub struct Running {
    pub local_addr: SocketAddr,
    pub instances_restored: usize,
    serve: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl Running {
    /// Waits until the server has shut down (after `shutdown` resolved and requests drained).
    pub async fn wait(self) -> Result<(), ServerError> {
        match self.serve.await {
            Ok(result) => result,
            Err(e) => Err(ServerError::Serve(std::io::Error::other(e))),
        }
    }
}

/// Opens the store, restores the catalog, binds the HTTP listener and serves until `shutdown`.
pub async fn start(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, ServerError> {
    config.validate()?;
    let store: Box<dyn Store> = if config.dev {
        Box::new(MemoryStore::new())
    } else {
        Box::new(RedbStore::open(&config.data_dir)?)
    };
    let clock = Instant::now();
    let snapshot = store.load()?;
    let loaded = clock.elapsed();
    let catalog = Catalog::restore(
        snapshot.index,
        snapshot.instances,
        snapshot.checks,
        snapshot.kv,
        clock.elapsed(),
    );
    let instances_restored = catalog.instance_count();
    tracing::info!(
        instances = instances_restored,
        load_ms = loaded.as_millis() as u64,
        restore_ms = (clock.elapsed() - loaded).as_millis() as u64,
        "catalog restored"
    );
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.http,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(ServerError::Serve)?;
    let (writer_tx, writer_rx) = std::sync::mpsc::sync_channel(config.max_queue);
    let (services_changed, _) = watch::channel(catalog.services_index());
    let (kv_changed, _) = watch::channel(catalog.kv_store_index());
    let (closing, _) = watch::channel(false);
    let state = AppState::new(Inner {
        node: Node::new(&config.node_name, &config.datacenter, local_addr),
        catalog: parking_lot::RwLock::new(catalog),
        slots: dashmap::DashMap::new(),
        services_changed,
        kv_changed,
        writer: writer_tx,
        waiters: Arc::new(Semaphore::new(config.max_waiters)),
        max_waiters: config.max_waiters,
        metrics: Metrics::new(),
        closing,
        services_render: parking_lot::Mutex::new(None),
    });
    let (checks_tx, checks_rx) = mpsc::unbounded_channel();
    let writer_state = state.clone();
    std::thread::Builder::new()
        .name("trellis-writer".into())
        .spawn(move || writer::run(writer_state, store, writer_rx, clock, checks_tx))
        .map_err(ServerError::Thread)?;
    let checker = tokio::spawn(checker::run(
        state.clone(),
        checks_rx,
        config.check_concurrency,
    ));
    let router = api::router(state.clone());
    let serve = tokio::spawn(async move {
        let closing = state.closing.clone();
        // into_make_service: axum 0.8 would otherwise rebuild the route table per connection.
        let result = axum::serve(listener, router.into_make_service())
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Release blocking queries and watch streams so the drain finishes promptly.
                closing.send_replace(true);
            })
            .await
            .map_err(ServerError::Serve);
        checker.abort();
        result
    });
    Ok(Running {
        local_addr,
        instances_restored,
        serve,
    })
}
