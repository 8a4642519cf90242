//! What the HTTP handlers share: the node, read access to the catalog, the published views, the
//! writer handle, the waiter bound, metrics and the shutdown signal.

use crate::config::ServerConfig;
use crate::coordinator::Coordinator;
use crate::metrics::{HealthLabels, Metrics};
use crate::node::Node;
use crate::published::Slot;
use crate::publisher::Publisher;
use crate::queue::{WriteError, WriterHandle};
use crate::shared::{CatalogRead, Retired, SharedCatalog};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use trellis_catalog::{Catalog, Command, Reply};

/// `/v1/catalog/services` as JSON: the whole object, and each service's `"name":[tags]` member
/// on its own, in name order, so a token that may read only some services gets its answer
/// by joining theirs (no catalog walk, no lock).
#[derive(Clone)]
pub struct ServicesRendering {
    pub body: Bytes,
    pub members: Arc<[(String, Bytes)]>,
}

impl ServicesRendering {
    /// From each service's name and tags, in name order.
    pub fn new(services: impl IntoIterator<Item = (String, Vec<String>)>) -> Self {
        let members: Arc<[(String, Bytes)]> = services
            .into_iter()
            .map(|(name, tags)| {
                let member = format!(
                    "{}:{}",
                    serde_json::Value::from(name.as_str()),
                    serde_json::Value::from(tags)
                );
                (name, Bytes::from(member))
            })
            .collect();
        let body = Self::join(members.iter().map(|(_, member)| member));
        Self { body, members }
    }

    /// The object of the members `keep` says yes to.
    pub fn only(&self, mut keep: impl FnMut(&str) -> bool) -> Bytes {
        Self::join(
            self.members
                .iter()
                .filter(|(name, _)| keep(name))
                .map(|(_, member)| member),
        )
    }

    fn join<'a>(members: impl Iterator<Item = &'a Bytes>) -> Bytes {
        let mut out = Vec::with_capacity(256);
        out.push(b'{');
        for (i, member) in members.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(member);
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

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
    services_render: Mutex<Option<(u64, ServicesRendering)>>,
    /// The most recent user events (`/v1/event/*`), memory-only as in Consul.
    events: Mutex<EventRing>,
    /// Events received so far: what `/v1/event/list` waiters wait on.
    events_changed: watch::Sender<u64>,
    /// This node's LAN coordinate per network segment, as `/v1/coordinate/update` last set it
    /// (memory-only); the default segment starts at Serf's origin.
    coordinates: Mutex<BTreeMap<String, serde_json::Value>>,
    /// The coordinates index: 1, then one more per change (what coordinate reads answer and
    /// wait on). Sent under the `coordinates` lock, so a reader sees a list and its index.
    coordinates_changed: watch::Sender<u64>,
    /// When the server started (autopilot's `StableSince`).
    started: std::time::SystemTime,
    /// Set by `/v1/agent/leave`: the server shuts down as on SIGTERM.
    leave: watch::Sender<bool>,
    scripts_enabled: bool,
    /// The configuration the server runs with (what `/v1/agent/reload` compares a re-read
    /// file with).
    config: ServerConfig,
    /// The two-phase-commit coordinator.
    coordinator: Coordinator,
    /// Tokens and policies.
    acl: Arc<crate::acl::Acl>,
    /// The mesh's certificate authority.
    ca: Arc<crate::ca::Ca>,
    /// Alone, or leading or following the servers that share the store.
    cluster: Arc<crate::cluster::Cluster>,
}

/// Most network segments this node keeps a LAN coordinate for; an update for another one is
/// dropped, as Consul drops coordinate updates beyond its limit.
pub const MAX_COORDINATE_SEGMENTS: usize = 64;

/// How many user events the agent keeps (Consul's ring of 256).
pub const EVENT_RING: usize = 256;

/// A user event as Consul's agent keeps it (`agent.UserEvent`).
#[derive(Debug, Clone)]
pub struct UserEvent {
    pub id: String,
    pub name: String,
    pub payload: Option<Bytes>,
    pub node_filter: String,
    pub service_filter: String,
    pub tag_filter: String,
    pub version: u32,
    /// The Lamport time it was received at; 0 in the answer to the fire request, as in Consul.
    pub ltime: u64,
}

#[derive(Default)]
struct EventRing {
    events: std::collections::VecDeque<Arc<UserEvent>>,
    ltime: u64,
}

/// The parts the server is built from (see `AppState::new`).
pub struct Parts {
    pub node: Node,
    pub catalog: Arc<SharedCatalog>,
    pub publisher: Arc<Publisher>,
    pub writer: WriterHandle,
    pub max_waiters: usize,
    pub metrics: Arc<Metrics>,
    /// `enable_script_checks`: whether the API accepts script checks.
    pub scripts_enabled: bool,
    /// The configuration the server was started with.
    pub config: ServerConfig,
    pub coordinator: Coordinator,
    pub acl: Arc<crate::acl::Acl>,
    pub ca: Arc<crate::ca::Ca>,
    pub cluster: Arc<crate::cluster::Cluster>,
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
            scripts_enabled,
            config,
            coordinator,
            acl,
            ca,
            cluster,
        } = parts;
        let origin = BTreeMap::from([(String::new(), node.coordinate())]);
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
            events: Mutex::new(EventRing::default()),
            events_changed: watch::channel(0).0,
            coordinates: Mutex::new(origin),
            coordinates_changed: watch::channel(1).0,
            started: std::time::SystemTime::now(),
            leave: watch::channel(false).0,
            scripts_enabled,
            config,
            coordinator,
            acl,
            ca,
            cluster,
        }))
    }

    /// The TTL checks this server owns, among servers sharing a store (`None` alone).
    pub fn ttl_deadlines(&self) -> Option<&Arc<crate::ttl::TtlDeadlines>> {
        self.0.publisher.ttl()
    }

    /// Waits (a bounded time) until this server's replica has reached `index`, the leader's
    /// after a write this server handed it: a client reads its writes on the server it wrote to.
    pub async fn catch_up(&self, index: u64) {
        crate::cluster::catch_up(&mut self.catalog_changed(), index).await;
    }

    /// Alone, or leading or following the servers that share the store.
    pub fn cluster(&self) -> &crate::cluster::Cluster {
        &self.0.cluster
    }

    /// The mesh's certificate authority.
    pub fn ca(&self) -> &crate::ca::Ca {
        &self.0.ca
    }

    /// Tokens and policies.
    pub fn acl(&self) -> &crate::acl::Acl {
        &self.0.acl
    }

    /// The same, to move into a blocking task (ACL writes fsync).
    pub fn acl_handle(&self) -> Arc<crate::acl::Acl> {
        Arc::clone(&self.0.acl)
    }

    /// The two-phase-commit coordinator.
    pub fn coordinator(&self) -> &Coordinator {
        &self.0.coordinator
    }

    /// Whether script checks may be registered (`enable_script_checks`).
    pub fn scripts_enabled(&self) -> bool {
        self.0.scripts_enabled
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }

    pub fn node(&self) -> &Node {
        &self.0.node
    }

    /// When the server started.
    pub fn started(&self) -> std::time::SystemTime {
        self.0.started
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

    /// [`crate::queue::WriterHandle::submit_all`].
    pub async fn submit_all(&self, commands: Vec<Command>) -> Result<(), WriteError> {
        self.0.writer.submit_all(commands).await
    }

    /// The slot of a service, created from the catalog for a name seen for the first time (also
    /// an unknown one, so a waiter can subscribe).
    pub fn slot(&self, name: &str) -> Result<Arc<Slot>, Retired> {
        self.0.publisher.slot_in(&self.0.catalog, name)
    }

    /// Recent check status changes.
    pub fn check_history(&self) -> &crate::history::CheckHistory {
        self.0.publisher.history()
    }

    /// Changes of the list of services, as the services index.
    pub fn services_changed(&self) -> watch::Receiver<u64> {
        self.0.publisher.services_changed()
    }

    /// Changes of the KV store, as the KV store index.
    pub fn kv_changed(&self) -> watch::Receiver<u64> {
        self.0.publisher.kv_changed()
    }

    /// Sessions created or destroyed, as the sessions index.
    pub fn sessions_changed(&self) -> watch::Receiver<u64> {
        self.0.publisher.sessions_changed()
    }

    /// Config entries written or deleted, as the config entries index.
    pub fn config_changed(&self) -> watch::Receiver<u64> {
        self.0.publisher.config_changed()
    }

    /// The global index, sent after every published change.
    pub fn catalog_changed(&self) -> watch::Receiver<u64> {
        self.0.publisher.catalog_changed()
    }

    /// Changes to `true` when the server starts shutting down.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.0.closing.subscribe()
    }

    /// Asks the server to shut down gracefully (`/v1/agent/leave`), as a SIGTERM does.
    pub fn leave(&self) {
        self.0.leave.send_replace(true);
    }

    /// Resolves once `leave` was called.
    pub async fn left(&self) {
        let mut leave = self.0.leave.subscribe();
        // The sender lives as long as the state; an error cannot happen while we hold it.
        let _ = leave.wait_for(|left| *left).await;
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
        render: impl FnOnce(&Catalog) -> ServicesRendering,
    ) -> Result<(u64, ServicesRendering), Retired> {
        let mut cache = self.0.services_render.lock();
        if let Some((cached_index, rendering)) = cache.as_ref()
            && *cached_index == index
        {
            return Ok((index, rendering.clone()));
        }
        let catalog = self.catalog()?;
        let index = catalog.services_index();
        let rendering = render(&catalog);
        drop(catalog);
        *cache = Some((index, rendering.clone()));
        Ok((index, rendering))
    }

    /// Keeps a user event (stamped with the next Lamport time) in the ring of the last
    /// `EVENT_RING`, and wakes `/v1/event/list` waiters.
    pub fn ingest_event(&self, mut event: UserEvent) {
        {
            let mut ring = self.0.events.lock();
            ring.ltime += 1;
            event.ltime = ring.ltime;
            if ring.events.len() == EVENT_RING {
                ring.events.pop_front();
            }
            ring.events.push_back(Arc::new(event));
        }
        self.0.events_changed.send_modify(|n| *n += 1);
    }

    /// The kept user events, oldest first.
    pub fn events(&self) -> Vec<Arc<UserEvent>> {
        self.0.events.lock().events.iter().cloned().collect()
    }

    /// Counts the user events received; changes with each one.
    pub fn events_changed(&self) -> watch::Receiver<u64> {
        self.0.events_changed.subscribe()
    }

    /// This node's LAN coordinates by segment, with their index.
    pub fn coordinates(&self) -> (u64, Vec<(String, serde_json::Value)>) {
        let coordinates = self.0.coordinates.lock();
        let index = *self.0.coordinates_changed.borrow();
        let listed = coordinates
            .iter()
            .map(|(segment, coord)| (segment.clone(), coord.clone()))
            .collect();
        (index, listed)
    }

    /// Sets this node's coordinate in `segment`; a change moves the coordinates index and wakes
    /// their waiters, the same coordinate again changes nothing, and a segment beyond
    /// [`MAX_COORDINATE_SEGMENTS`] is dropped.
    pub fn set_coordinate(&self, segment: String, coord: serde_json::Value) {
        let mut coordinates = self.0.coordinates.lock();
        let known = coordinates.contains_key(&segment);
        if !known && coordinates.len() >= MAX_COORDINATE_SEGMENTS {
            return;
        }
        if coordinates.get(&segment) != Some(&coord) {
            coordinates.insert(segment, coord);
            self.0.coordinates_changed.send_modify(|index| *index += 1);
        }
    }

    /// Coordinate changes, as the coordinates index.
    pub fn coordinates_changed(&self) -> watch::Receiver<u64> {
        self.0.coordinates_changed.subscribe()
    }

    /// The metrics with the gauges read now (catalog size, instances by health, waiters); a
    /// retired catalog (the server is stopping) leaves the last values.
    pub fn refreshed_metrics(&self) -> &Metrics {
        let metrics = self.metrics();
        if let Ok(catalog) = self.catalog() {
            metrics.services.set(catalog.service_count() as i64);
            for (status, count) in catalog.health_counts() {
                let labels = HealthLabels {
                    health: status.as_str().to_owned(),
                };
                metrics.instances.get_or_create(&labels).set(count as i64);
            }
        }
        metrics.watchers.set(self.waiters_in_use() as i64);
        metrics
    }
}

#[cfg(test)]
mod services_rendering_tests {
    use super::ServicesRendering;
    use std::collections::BTreeMap;

    #[test]
    fn the_whole_body_is_serdes_and_a_part_keeps_only_what_is_asked() {
        let services: BTreeMap<String, Vec<String>> = [
            (
                "api".to_owned(),
                vec!["v1".to_owned(), "q\"uote".to_owned()],
            ),
            ("consul".to_owned(), vec![]),
            ("db".to_owned(), vec!["primary".to_owned()]),
        ]
        .into();
        let rendering = ServicesRendering::new(services.clone());
        assert_eq!(rendering.body, serde_json::to_vec(&services).unwrap());
        assert_eq!(
            rendering.only(|name| name != "db").as_ref(),
            br#"{"api":["v1","q\"uote"],"consul":[]}"#
        );
        assert_eq!(rendering.only(|_| false).as_ref(), b"{}");
        assert_eq!(ServicesRendering::new([]).body.as_ref(), b"{}");
    }
}
