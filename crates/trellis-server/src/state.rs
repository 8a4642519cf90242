//! Shared server state: the catalog (owned for writing by the writer thread), the published
//! per-service views, change notifications, the writer queue and the waiter bound.

use crate::metrics::Metrics;
use crate::node::Node;
use crate::published::Slot;
use crate::writer::Submission;
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use tokio::sync::{Semaphore, watch};
use trellis_catalog::Catalog;
use trellis_types::registration::service_key;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub node: Node,
    /// Written only by the writer thread, which holds the lock until the batch is durable, so
    /// readers never see an unacknowledged write.
    pub catalog: RwLock<Catalog>,
    /// Per-service published views by service key (`service_key`: names match without regard
    /// to case): the hot read path, no global lock.
    pub slots: DashMap<String, Arc<Slot>>,
    /// The services index, sent after every change of the list of services.
    pub services_changed: watch::Sender<u64>,
    /// The KV store index, sent after every KV change.
    pub kv_changed: watch::Sender<u64>,
    pub writer: SyncSender<Submission>,
    /// Permits for blocking queries and watch streams.
    pub waiters: Arc<Semaphore>,
    pub max_waiters: usize,
    pub metrics: Metrics,
    /// Set on shutdown: blocking queries answer at once and watch streams end.
    pub closing: watch::Sender<bool>,
    /// `/v1/catalog/services` rendered for an index.
    pub services_render: Mutex<Option<(u64, bytes::Bytes)>>,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// The slot of a service, if it has one.
    pub fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots
            .get(service_key(name).as_ref())
            .map(|s| s.clone())
    }

    /// The slot of a service, created empty for an unknown name so a waiter can subscribe.
    pub fn slot_or_create(&self, name: &str) -> Arc<Slot> {
        if let Some(slot) = self.slot(name) {
            return slot;
        }
        // The catalog read lock orders this against the writer's publishing.
        let catalog = self.catalog.read();
        self.slots
            .entry(service_key(name).into_owned())
            .or_insert_with(|| Arc::new(Slot::new(catalog.service_view(name))))
            .clone()
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
