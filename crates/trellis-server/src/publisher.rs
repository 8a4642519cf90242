//! Makes durable changes visible: republishes the slots of changed services, signals changes of
//! the service list, of KV, of the sessions, of the config entries and of the catalog as a
//! whole, and hands changed checks to the checker.

use crate::checker::CheckChange;
use crate::history::CheckHistory;
use crate::published::{CONSUL_SERVICE, Published, Slot, service_view};
use crate::ttl::TtlDeadlines;
use dashmap::DashMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use trellis_catalog::{Catalog, Effects, ServiceView, Write};
use trellis_types::registration::service_key;

pub struct Publisher {
    /// Per-service published views by service key (`service_key`: names match without regard
    /// to case): the hot read path, no global lock.
    slots: DashMap<String, Arc<Slot>>,
    /// The services index, sent after every change of the list of services.
    services_changed: watch::Sender<u64>,
    /// The KV store index, sent after every KV change (locks a destroyed session held
    /// included).
    kv_changed: watch::Sender<u64>,
    /// The sessions index, sent after every session created or destroyed.
    sessions_changed: watch::Sender<u64>,
    /// The config entries index, sent after every config entry written or deleted.
    config_changed: watch::Sender<u64>,
    /// The global index, sent after every batch that changed anything (a probe result or a TTL
    /// running out included): what reads of the whole catalog (`/v1/health/state`, ...) wait on.
    catalog_changed: watch::Sender<u64>,
    checks_changed: mpsc::UnboundedSender<CheckChange>,
    /// Recent check status changes, for the dashboard.
    history: CheckHistory,
    /// The TTL checks this server owns, among servers sharing a store.
    ttl: Option<Arc<TtlDeadlines>>,
}

impl Publisher {
    pub fn new(
        catalog: &Catalog,
        checks_changed: mpsc::UnboundedSender<CheckChange>,
        ttl: Option<Arc<TtlDeadlines>>,
    ) -> Self {
        Self {
            slots: DashMap::new(),
            services_changed: watch::channel(catalog.services_index()).0,
            kv_changed: watch::channel(catalog.kv_store_index()).0,
            sessions_changed: watch::channel(catalog.sessions_index()).0,
            config_changed: watch::channel(catalog.config_index()).0,
            catalog_changed: watch::channel(catalog.index()).0,
            checks_changed,
            history: CheckHistory::default(),
            ttl,
        }
    }

    /// Recent check status changes.
    pub fn history(&self) -> &CheckHistory {
        &self.history
    }

    /// The TTL checks this server owns, among servers sharing a store.
    pub fn ttl(&self) -> Option<&Arc<TtlDeadlines>> {
        self.ttl.as_ref()
    }

    /// The slot of a service, if it has one.
    pub fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots
            .get(service_key(name).as_ref())
            .map(|s| s.clone())
    }

    /// The slot of a service, created from `view` if it has none. The caller holds the catalog
    /// read lock while building the view, which orders the creation against publishing.
    pub fn slot_or_insert_with(&self, name: &str, view: impl FnOnce() -> ServiceView) -> Arc<Slot> {
        self.slots
            .entry(service_key(name).into_owned())
            .or_insert_with(|| Arc::new(Slot::new(view())))
            .clone()
    }

    /// The slot of a service, created from `catalog` for a name seen for the first time (also
    /// an unknown one, so a waiter can subscribe).
    pub fn slot_in(
        &self,
        catalog: &crate::shared::SharedCatalog,
        name: &str,
    ) -> Result<Arc<Slot>, crate::shared::Retired> {
        if let Some(slot) = self.slot(name) {
            return Ok(slot);
        }
        // The catalog read lock orders this against the writer's publishing.
        let catalog = catalog.read()?;
        Ok(self.slot_or_insert_with(name, || crate::published::service_view(&catalog, name)))
    }

    pub fn services_changed(&self) -> watch::Receiver<u64> {
        self.services_changed.subscribe()
    }

    pub fn kv_changed(&self) -> watch::Receiver<u64> {
        self.kv_changed.subscribe()
    }

    pub fn sessions_changed(&self) -> watch::Receiver<u64> {
        self.sessions_changed.subscribe()
    }

    pub fn config_changed(&self) -> watch::Receiver<u64> {
        self.config_changed.subscribe()
    }

    pub fn catalog_changed(&self) -> watch::Receiver<u64> {
        self.catalog_changed.subscribe()
    }

    /// Publishes what a durable batch changed: new views per changed service, then the list,
    /// KV, sessions, config entries and catalog signals, then the changed checks.
    pub fn publish(&self, catalog: &Catalog, fx: &Effects) {
        // Only services somebody has read or watched have a slot; the others get one, built from
        // the catalog, on their first read. Registrations nobody looks at cost no view and no
        // memory.
        // Registering or removing an instance with the ID `consul` decides whether the `consul`
        // service shows this server's own instance, whatever service that instance is in.
        let consul_changed = fx
            .writes
            .contains(&Write::Instance(CONSUL_SERVICE.to_owned()));
        let names = fx
            .services
            .iter()
            .map(String::as_str)
            .chain(consul_changed.then_some(CONSUL_SERVICE));
        for name in names {
            if let Some(slot) = self.slots.get(service_key(name).as_ref()) {
                slot.tx
                    .send_replace(Arc::new(Published::new(service_view(catalog, name))));
            }
        }
        if !fx.transitions.is_empty() {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.history.record(&fx.transitions, now_ms);
        }
        if fx.services_list {
            self.services_changed.send_replace(catalog.services_index());
        }
        if fx.kv {
            self.kv_changed.send_replace(catalog.kv_store_index());
        }
        if fx.sessions {
            self.sessions_changed.send_replace(catalog.sessions_index());
        }
        if fx.config {
            self.config_changed.send_replace(catalog.config_index());
        }
        let index = catalog.index();
        self.catalog_changed.send_if_modified(|seen| {
            let moved = *seen != index;
            *seen = index;
            moved
        });
        for check_id in &fx.checks {
            // The checker gets the check itself: it must not take the catalog lock, which the
            // writer holds through every commit, from a runtime worker thread.
            let check = catalog.check(check_id);
            let active = check.filter(|c| c.is_active()).cloned();
            let _ = self.checks_changed.send((check_id.clone(), active));
            if let Some(ttl) = &self.ttl {
                ttl.changed(check_id, check.map(|c| &**c));
            }
        }
    }

    /// Publishes everything again after the catalog was reloaded: every held slot, every signal,
    /// and `checks` (every check that may be probed, before or after the reload).
    pub fn republish_all(&self, catalog: &Catalog, checks: BTreeSet<String>) {
        let everything = Effects {
            services: self.slots.iter().map(|slot| slot.key().clone()).collect(),
            services_list: true,
            kv: true,
            sessions: true,
            config: true,
            checks,
            ..Effects::default()
        };
        self.publish(catalog, &everything);
    }

    /// Drops slots nobody holds or watches and that have no instances: they carry nothing a
    /// reader could not recompute, and dropping them bounds memory against many distinct names.
    pub fn drop_idle_slots(&self) {
        self.slots.retain(|_, slot| {
            !(slot.current().view.instances.is_empty()
                && Arc::strong_count(slot) == 1
                && slot.tx.receiver_count() == 0)
        });
    }
}
