//! What the HTTP handlers share: the node, read access to the catalog, the published views, the
//! writer handle, the waiter bound, metrics and the shutdown signal.

use crate::metrics::Metrics;
use crate::node::Node;
use crate::published::Slot;
use crate::publisher::Publisher;
use crate::queue::{WriteError, WriterHandle};
use crate::shared::{CatalogRead, Retired, SharedCatalog};
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use trellis_catalog::{Catalog, Command, Reply};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    node: Node,
    catalog: Arc<SharedCatalog>,
    publisher: Arc<Publisher>,
    writer: WriterHandle,
    /// Permits for blocking queries and watch streams.
    waiters: Arc<Semaphore>,
    max_waiters: usize,
    metrics: Arc<Metrics>,
    /// Set on shutdown: blocking queries answer at once and watch streams end.
    closing: watch::Sender<bool>,
    /// `/v1/catalog/services` rendered for an index.
    services_render: Mutex<Option<(u64, Bytes)>>,
}

/// The parts the server is built from (see `AppState::new`).
pub struct Parts {
    pub node: Node,
    pub catalog: Arc<SharedCatalog>,
    pub publisher: Arc<Publisher>,
    pub writer: WriterHandle,
    pub max_waiters: usize,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            node,
            catalog,
            publisher,
            writer,
            max_waiters,
            metrics,
        } = parts;
        Self(Arc::new(Inner {
            node,
            catalog,
            publisher,
            writer,
            waiters: Arc::new(Semaphore::new(max_waiters)),
            max_waiters,
            metrics,
            closing: watch::channel(false).0,
            services_render: Mutex::new(None),
        }))
    }

    pub fn node(&self) -> &Node {
        &self.0.node
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The catalog as of the last durable batch (the writer holds the lock until it is durable).
    pub fn catalog(&self) -> Result<CatalogRead<'_>, Retired> {
        self.0.catalog.read()
    }

    /// Queues a command for the writer and waits until it is applied (and durable, if it is a
    /// durable command).
    pub async fn submit(&self, command: Command) -> Result<Reply, WriteError> {
        self.0.writer.submit(command).await
    }

    /// The slot of a service, created from the catalog for a name seen for the first time (also
    /// an unknown one, so a waiter can subscribe).
    pub fn slot(&self, name: &str) -> Result<Arc<Slot>, Retired> {
        if let Some(slot) = self.0.publisher.slot(name) {
            return Ok(slot);
        }
        // The catalog read lock orders this against the writer's publishing.
        let catalog = self.catalog()?;
        Ok(self
            .0
            .publisher
            .slot_or_insert_with(name, || catalog.service_view(name)))
    }

    /// Changes of the list of services, as the services index.
    pub fn services_changed(&self) -> watch::Receiver<u64> {
        self.0.publisher.services_changed()
    }

    /// Changes of the KV store, as the KV store index.
    pub fn kv_changed(&self) -> watch::Receiver<u64> {
        self.0.publisher.kv_changed()
    }

    /// The global index, sent after every published change.
    pub fn catalog_changed(&self) -> watch::Receiver<u64> {
        self.0.publisher.catalog_changed()
    }

    /// Changes to `true` when the server starts shutting down.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.0.closing.subscribe()
    }

    /// Releases blocking queries and watch streams so a shutdown drains promptly.
    pub fn close(&self) {
        self.0.closing.send_replace(true);
    }

    /// A permit to hold a blocking query or watch stream open, if one is left.
    pub fn waiter_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.0.waiters.clone().try_acquire_owned().ok()
    }

    /// Blocking queries and watch streams held open now.
    pub fn waiters_in_use(&self) -> usize {
        self.0.max_waiters - self.0.waiters.available_permits()
    }

    /// `/v1/catalog/services` for the services index `index`: rendered once per index and
    /// shared. Answers the index of the rendering, which may be newer than `index`.
    pub fn services_rendering(
        &self,
        index: u64,
        render: impl FnOnce(&Catalog) -> Bytes,
    ) -> Result<(u64, Bytes), Retired> {
        let mut cache = self.0.services_render.lock();
        if let Some((cached_index, body)) = cache.as_ref()
            && *cached_index == index
        {
            return Ok((index, body.clone()));
        }
        let catalog = self.catalog()?;
        let index = catalog.services_index();
        let body = render(&catalog);
        drop(catalog);
        *cache = Some((index, body.clone()));
        Ok((index, body))
    }
}
