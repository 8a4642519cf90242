//! What readers see: one immutable, durable view per service, rendered to JSON at most once per
//! (change, filter) and shared by every reader and every waiter.

use crate::node::Node;
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::watch;
use trellis_catalog::{Check, InstanceView, ServiceView};
use trellis_types::{
    CatalogService, CheckStatus, HealthCheck, HealthEntry, ServiceInfo, WatchEvent, WatchInstance,
    format_go_duration,
};

/// Distinct renderings cached per view; filters beyond this are rendered per request.
const MAX_RENDERS: usize = 16;

/// A rendering of a service view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderKey {
    /// `/v1/health/service/:name`, optionally only passing instances and only with all `tags`.
    Health { passing: bool, tags: Vec<String> },
    /// `/v1/catalog/service/:name` with all `tags`.
    Catalog { tags: Vec<String> },
    /// `/v1/health/checks/:name`.
    Checks,
    /// One NDJSON line of the streaming watch.
    Watch,
}

/// An immutable view of one service at one index.
#[derive(Debug)]
pub struct Published {
    pub view: ServiceView,
    renders: Mutex<Vec<(RenderKey, Bytes)>>,
}

impl Published {
    pub fn new(view: ServiceView) -> Self {
        Self {
            view,
            renders: Mutex::new(Vec::new()),
        }
    }

    pub fn index(&self) -> u64 {
        self.view.index
    }

    /// The rendering for `key`, serialised once and then shared. Rendering happens under the
    /// lock on purpose: when thousands of waiters wake together, one renders and the rest reuse.
    pub fn render(&self, key: RenderKey, node: &Node) -> Bytes {
        let mut renders = self.renders.lock();
        if let Some((_, bytes)) = renders.iter().find(|(k, _)| *k == key) {
            return bytes.clone();
        }
        let bytes = Bytes::from(render(&self.view, &key, node));
        if renders.len() < MAX_RENDERS {
            renders.push((key, bytes.clone()));
        }
        bytes
    }
}

/// Whether the instance has every tag, compared without regard to case as Consul does.
fn has_tags(instance: &InstanceView, tags: &[String]) -> bool {
    if tags.is_empty() {
        return true;
    }
    let have: Vec<String> = instance
        .instance
        .registration
        .tags
        .iter()
        .map(|t| t.to_lowercase())
        .collect();
    tags.iter().all(|t| have.contains(&t.to_lowercase()))
}

fn render(view: &ServiceView, key: &RenderKey, node: &Node) -> Vec<u8> {
    let encoded = match key {
        RenderKey::Health { passing, tags } => {
            let node_info = node.info();
            let entries: Vec<HealthEntry> = view
                .instances
                .iter()
                .filter(|i| !passing || i.status == CheckStatus::Passing)
                .filter(|i| has_tags(i, tags))
                .map(|i| HealthEntry {
                    node: node_info.clone(),
                    service: service_info(i),
                    checks: std::iter::once(node.serf_health())
                        .chain(i.checks.iter().map(|c| health_check(c, i, node)))
                        .collect(),
                })
                .collect();
            serde_json::to_vec(&entries)
        }
        RenderKey::Catalog { tags } => {
            let info = node.info();
            let entries: Vec<CatalogService> = view
                .instances
                .iter()
                .filter(|i| has_tags(i, tags))
                .map(|i| {
                    let r = &i.instance.registration;
                    CatalogService {
                        id: info.id.clone(),
                        node: info.node.clone(),
                        address: info.address.clone(),
                        datacenter: info.datacenter.clone(),
                        tagged_addresses: info.tagged_addresses.clone(),
                        node_meta: info.meta.clone(),
                        service_kind: String::new(),
                        service_id: r.id.clone(),
                        service_name: r.name.clone(),
                        service_tags: r.tags.clone(),
                        service_address: r.address.clone(),
                        service_tagged_addresses: r.tagged_addresses.clone(),
                        service_weights: r.weights,
                        service_meta: r.meta.to_map(),
                        service_port: r.port,
                        service_enable_tag_override: r.enable_tag_override,
                        create_index: i.instance.create_index,
                        modify_index: i.instance.modify_index,
                    }
                })
                .collect();
            serde_json::to_vec(&entries)
        }
        RenderKey::Checks => {
            let checks: Vec<HealthCheck> = view
                .instances
                .iter()
                .flat_map(|i| {
                    i.checks
                        .iter()
                        .filter(|c| c.service_id() == Some(i.instance.registration.id.as_str()))
                        .map(move |c| health_check(c, i, node))
                })
                .collect();
            serde_json::to_vec(&checks)
        }
        RenderKey::Watch => {
            let event = watch_event(view);
            serde_json::to_vec(&event).map(|mut line| {
                line.push(b'\n');
                line
            })
        }
    };
    // Serialising these plain structs cannot fail; an empty array is the safe fallback.
    encoded.unwrap_or_else(|_| b"[]".to_vec())
}

fn watch_event(view: &ServiceView) -> WatchEvent {
    WatchEvent {
        index: view.index,
        service: view.name.clone(),
        instances: view
            .instances
            .iter()
            .filter(|i| i.status != CheckStatus::Critical)
            .map(|i| {
                let r = &i.instance.registration;
                WatchInstance {
                    id: r.id.clone(),
                    address: r.address.clone(),
                    port: r.port,
                    tags: r.tags.clone(),
                    meta: r.meta.to_map(),
                    weights: r.weights,
                    status: i.status,
                }
            })
            .collect(),
    }
}

fn service_info(i: &InstanceView) -> ServiceInfo {
    let r = &i.instance.registration;
    ServiceInfo {
        id: r.id.clone(),
        service: r.name.clone(),
        tags: r.tags.clone(),
        address: r.address.clone(),
        tagged_addresses: r.tagged_addresses.clone(),
        meta: r.meta.to_map(),
        port: r.port,
        weights: r.weights,
        enable_tag_override: r.enable_tag_override,
        create_index: i.instance.create_index,
        modify_index: i.instance.modify_index,
    }
}

fn health_check(check: &Check, owner: &InstanceView, node: &Node) -> HealthCheck {
    let is_service_check = check.service_id().is_some();
    let r = &owner.instance.registration;
    check_json(
        check,
        node,
        is_service_check.then_some((r.id.as_str(), r.name.as_str(), r.tags.as_slice())),
    )
}

/// A check as the API shows it; `service` is (ID, name, tags) for service checks.
pub fn check_json(
    check: &Check,
    node: &Node,
    service: Option<(&str, &str, &[String])>,
) -> HealthCheck {
    let (service_id, service_name, service_tags) = service.unwrap_or(("", "", &[]));
    let active = check.is_active();
    HealthCheck {
        node: node.name.clone(),
        check_id: check.id().to_owned(),
        name: check.name().to_owned(),
        status: check.status,
        notes: check.definition.notes.clone(),
        output: check.output.clone(),
        service_id: service_id.to_owned(),
        service_name: service_name.to_owned(),
        service_tags: service_tags.to_vec(),
        check_type: check.definition.kind.type_name().to_owned(),
        interval: check
            .definition
            .interval
            .map(format_go_duration)
            .unwrap_or_default(),
        timeout: if active {
            format_go_duration(check.timeout())
        } else {
            String::new()
        },
        create_index: check.create_index,
        modify_index: check.modify_index,
    }
}

/// One service's slot: the current view and everyone waiting for the next one.
#[derive(Debug)]
pub struct Slot {
    pub tx: watch::Sender<Arc<Published>>,
}

impl Slot {
    pub fn new(view: ServiceView) -> Self {
        let (tx, _) = watch::channel(Arc::new(Published::new(view)));
        Self { tx }
    }

    pub fn current(&self) -> Arc<Published> {
        self.tx.borrow().clone()
    }
}
