//! What readers see: one immutable, durable view per service, rendered to JSON at most once per
//! (change, filter) and shared by every reader and every waiter; and what a `?filter=`
//! expression reads from each kind of entry the API answers (`*Fields`, thin borrowed wrappers
//! over the catalog's own structs, so filtering builds nothing per entry).

use crate::node::{CONSUL_API_VERSION, Node, SERVER_RPC_PORT};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;
use trellis_catalog::{Catalog, Check, InstanceRecord, InstanceView, ServiceView};
use trellis_filter::{Field, Filter, MAX_SELECTOR_PARTS, Selectable};
use trellis_types::registration::service_key;
use trellis_types::response::{CheckDefinitionInfo, EmptyObject, ProxyInfo};
use trellis_types::{
    CatalogService, CheckStatus, HealthCheck, HealthEntry, NodeInfo, ServiceInfo,
    ServiceRegistration, WatchEvent, WatchInstance, Weights, format_go_duration,
};

/// Distinct renderings cached per view; filters beyond this are rendered per request.
const MAX_RENDERS: usize = 16;

/// A rendering of a service view. `filter` is the canonical text of the request's `?filter=`
/// (`Filter::to_string()`, the same for every spelling of one expression), so that every reader
/// and waiter with the same filter shares one rendering; `None` is no filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderKey {
    /// `/v1/health/service/:name`, optionally only passing instances and only with all `tags`.
    Health {
        passing: bool,
        tags: Vec<String>,
        filter: Option<String>,
    },
    /// `/v1/catalog/service/:name` with all `tags`.
    Catalog {
        tags: Vec<String>,
        filter: Option<String>,
    },
    /// `/v1/health/checks/:name`.
    Checks { filter: Option<String> },
    /// One NDJSON line of the streaming watch.
    Watch,
}

impl RenderKey {
    fn filter_text(&self) -> Option<&str> {
        match self {
            RenderKey::Health { filter, .. }
            | RenderKey::Catalog { filter, .. }
            | RenderKey::Checks { filter } => filter.as_deref(),
            RenderKey::Watch => None,
        }
    }
}

/// The key text of a request's filter: its canonical form, or `None` without a filter (no
/// allocation then).
pub fn filter_key(filter: Option<&Filter>) -> Option<String> {
    filter.map(ToString::to_string)
}

/// An immutable view of one service at one index.
#[derive(Debug)]
pub struct Published {
    pub view: ServiceView,
    renders: Mutex<Vec<(RenderKey, Bytes)>>,
}

/// The service every Consul server registers for itself (agent/consul/leader.go
/// `handleAliveMember`): ID and name `consul`, the server RPC port, no tags, the Raft and Serf
/// versions as meta, and no check of its own (the node's `serfHealth` covers it). Synthesised
/// in the read path, like the node, and never stored.
pub const CONSUL_SERVICE: &str = "consul";

pub fn consul_service() -> ServiceRegistration {
    let meta = [
        ("non_voter", "false"),
        ("raft_version", "3"),
        ("read_replica", "false"),
        ("serf_protocol_current", "2"),
        ("serf_protocol_max", "5"),
        ("serf_protocol_min", "1"),
        ("version", CONSUL_API_VERSION),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    ServiceRegistration {
        id: CONSUL_SERVICE.to_owned(),
        name: CONSUL_SERVICE.to_owned(),
        tags: Vec::new(),
        address: String::new(),
        port: SERVER_RPC_PORT,
        meta,
        tagged_addresses: BTreeMap::new(),
        weights: Weights::default(),
        enable_tag_override: false,
        checks: Vec::new(),
    }
}

/// Whether this server's own `consul` instance is shown: unless an instance was registered
/// with the ID `consul` (IDs are unique on a node, so a registered one takes its place). Every
/// read that shows it (catalog, health, node and DNS reads) follows this one rule.
pub fn shows_consul_instance(catalog: &Catalog) -> bool {
    catalog.instance(CONSUL_SERVICE).is_none()
}

/// The view of service `name` as readers see it: the catalog's, with this server's `consul`
/// instance added to the `consul` service (in ID order) when [`shows_consul_instance`].
pub fn service_view(catalog: &Catalog, name: &str) -> ServiceView {
    let mut view = catalog.service_view(name);
    if service_key(name) != CONSUL_SERVICE || !shows_consul_instance(catalog) {
        return view;
    }
    let at = view
        .instances
        .partition_point(|i| i.instance.registration.id.as_str() < CONSUL_SERVICE);
    view.instances.insert(
        at,
        InstanceView {
            instance: Arc::new(consul_instance()),
            checks: Vec::new(),
            status: CheckStatus::Passing,
        },
    );
    view
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
    ///
    /// `filter` is the request's parsed filter, and `key` carries its [`filter_key`]: the cache
    /// keeps the text, never the compiled filter, so a cached rendering holds no regexes.
    pub fn render(&self, key: RenderKey, filter: Option<&Filter>, node: &Node) -> Bytes {
        debug_assert_eq!(
            key.filter_text().map(str::to_owned),
            filter_key(filter),
            "the key must carry the filter's canonical text"
        );
        let mut renders = self.renders.lock();
        if let Some((_, bytes)) = renders.iter().find(|(k, _)| *k == key) {
            return bytes.clone();
        }
        let bytes = Bytes::from(render(&self.view, &key, filter, node));
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

/// Whether `entry` passes `filter` (every entry passes no filter).
fn passes<S: Selectable>(filter: Option<&Filter>, entry: &S) -> bool {
    filter.is_none_or(|f| f.matches(entry))
}

fn render(view: &ServiceView, key: &RenderKey, filter: Option<&Filter>, node: &Node) -> Vec<u8> {
    let encoded = match key {
        RenderKey::Health { passing, tags, .. } => {
            let node_info = node.info();
            // What a filter's `Checks` reads first, as each entry answers it.
            let filter = filter.map(|f| (f, node.serf_health()));
            let entries: Vec<HealthEntry> = view
                .instances
                .iter()
                .filter(|i| !passing || i.status == CheckStatus::Passing)
                .filter(|i| has_tags(i, tags))
                .filter(|i| {
                    filter.as_ref().is_none_or(|(f, serf)| {
                        f.matches(&HealthEntryFields {
                            node: node_info,
                            serf,
                            instance: i,
                        })
                    })
                })
                .map(|i| HealthEntry {
                    node: node_info.clone(),
                    service: service_info(i),
                    checks: std::iter::once(node.serf_health().clone())
                        .chain(i.checks.iter().map(|c| health_check(c, i, node)))
                        .collect(),
                })
                .collect();
            serde_json::to_vec(&entries)
        }
        RenderKey::Catalog { tags, .. } => {
            let info = node.info();
            let entries: Vec<CatalogService> = view
                .instances
                .iter()
                .filter(|i| has_tags(i, tags))
                .filter(|i| {
                    passes(
                        filter,
                        &ServiceNodeFields {
                            node: info,
                            service: &i.instance.registration,
                        },
                    )
                })
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
                        service_socket_path: String::new(),
                        service_enable_tag_override: r.enable_tag_override,
                        service_proxy: ProxyInfo::default(),
                        service_connect: EmptyObject::default(),
                        service_locality: None,
                        create_index: i.instance.create_index,
                        modify_index: i.instance.modify_index,
                    }
                })
                .collect();
            serde_json::to_vec(&entries)
        }
        RenderKey::Checks { .. } => {
            let checks: Vec<HealthCheck> = view
                .instances
                .iter()
                .flat_map(|i| {
                    i.checks
                        .iter()
                        .filter(|c| c.service_id() == Some(i.instance.registration.id.as_str()))
                        .filter(|c| passes(filter, &CheckFields::of(c, &i.instance, &node.name)))
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
    node_service(&i.instance)
}

/// An instance as Consul prints a `structs.NodeService`: the `Service` of a health entry and
/// the services of the node endpoints (empty `TaggedAddresses` and zero `Port` omitted, `Proxy`
/// and `Connect` always present).
pub fn node_service(instance: &InstanceRecord) -> ServiceInfo {
    let r = &instance.registration;
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
        proxy: ProxyInfo::default(),
        connect: EmptyObject::default(),
        create_index: instance.create_index,
        modify_index: instance.modify_index,
    }
}

/// This server's `consul` instance (see `consul_service`), as the catalog would hold it.
pub fn consul_instance() -> InstanceRecord {
    InstanceRecord {
        registration: consul_service(),
        create_index: 1,
        modify_index: 1,
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

/// A check of the catalog as the API shows it, if `filter` (Consul's `HealthCheck` selectors)
/// keeps it; a service check carries its owner's ID, name and tags.
pub fn catalog_check_json(
    catalog: &trellis_catalog::Catalog,
    check: &Check,
    node: &Node,
    filter: Option<&Filter>,
) -> Option<HealthCheck> {
    let owner = check.service_id().and_then(|sid| catalog.instance(sid));
    let service = owner.map(|i| {
        let r = &i.registration;
        (r.id.as_str(), r.name.as_str(), r.tags.as_slice())
    });
    let fields = CheckFields::Catalog {
        check,
        node: &node.name,
        service,
    };
    filter
        .is_none_or(|f| f.matches(&fields))
        .then(|| check_json(check, node, service))
}

/// A check as the API shows it; `service` is (ID, name, tags) for service checks.
pub fn check_json(
    check: &Check,
    node: &Node,
    service: Option<(&str, &str, &[String])>,
) -> HealthCheck {
    let (service_id, service_name, service_tags) = service.unwrap_or(("", "", &[]));
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
        interval: interval_text(check),
        timeout: timeout_text(check),
        exposed_port: 0,
        // Consul fills `Definition` only for checks registered through the catalog with one;
        // an agent's checks (all of Trellis's probed and TTL checks) print `{}`.
        definition: CheckDefinitionInfo::default(),
        create_index: check.create_index,
        modify_index: check.modify_index,
    }
}

/// A check's `Interval` as the API shows it: `""` without one.
fn interval_text(check: &Check) -> String {
    check
        .definition
        .interval
        .map(format_go_duration)
        .unwrap_or_default()
}

/// A check's `Timeout` as the API shows it: only checks the server probes (HTTP, TCP, gRPC,
/// script) have one (10 s unless set, 30 s for scripts); TTL and static (maintenance, catalog-registered) checks answer
/// `""`, as Consul does for checks nobody probes.
fn timeout_text(check: &Check) -> String {
    if check.definition.kind.is_probed() {
        format_go_duration(check.timeout())
    } else {
        String::new()
    }
}

/// `path` with its first part replaced by `head` (`ServiceMeta.env` → `Meta.env`), for the
/// flattened `ServiceNode` selectors; `Missing` for a path longer than a filter allows.
fn renamed<'a>(head: &str, rest: &[&str], select: impl FnOnce(&[&str]) -> Field<'a>) -> Field<'a> {
    if rest.len() >= MAX_SELECTOR_PARTS {
        return Field::Missing;
    }
    let mut parts = [""; MAX_SELECTOR_PARTS];
    parts[0] = head;
    parts[1..=rest.len()].copy_from_slice(rest);
    select(&parts[..=rest.len()])
}

/// A node as filters see it (Consul's `structs.Node`): the `NodeInfo` the endpoint answers.
/// `Partition` and `PeerName` are not carried (they read as `""`).
#[derive(Debug, Clone, Copy)]
pub struct NodeFields<'a>(pub &'a NodeInfo);

impl<'a> NodeFields<'a> {
    fn field(self, path: &[&str]) -> Field<'a> {
        let n = self.0;
        match path {
            ["ID"] => Field::Str(&n.id),
            ["Node"] => Field::Str(&n.node),
            ["Address"] => Field::Str(&n.address),
            ["Datacenter"] => Field::Str(&n.datacenter),
            ["TaggedAddresses"] => Field::keys(n.tagged_addresses.keys()),
            ["TaggedAddresses", key] => Field::lookup(n.tagged_addresses.get(*key)),
            ["Meta"] => Field::keys(n.meta.keys()),
            ["Meta", key] => Field::lookup(n.meta.get(*key)),
            _ => Field::Missing,
        }
    }
}

impl Selectable for NodeFields<'_> {
    fn select(&self, path: &[&str]) -> Field<'_> {
        self.field(path)
    }
}

/// A service instance as filters see it: Consul's `api.AgentService` (`/v1/agent/services`)
/// and `structs.NodeService` (`/v1/catalog/node*`, `Service` of `/v1/health/service`) have the
/// same selectors. `Kind`, `SocketPath`, `Proxy`, `Connect` and `PeerName` are not carried
/// (zero values, as Consul answers for a plain service).
#[derive(Debug, Clone, Copy)]
pub struct ServiceFields<'a>(pub &'a ServiceRegistration);

impl<'a> ServiceFields<'a> {
    fn field(self, path: &[&str]) -> Field<'a> {
        let r = self.0;
        match path {
            ["ID"] => Field::Str(&r.id),
            ["Service"] => Field::Str(&r.name),
            ["Tags"] => Field::list(&r.tags),
            ["Address"] => Field::Str(&r.address),
            ["Port"] => Field::from(r.port),
            ["Meta"] => Field::Map(r.meta.keys().collect()),
            ["Meta", key] => Field::lookup(r.meta.get(key)),
            ["TaggedAddresses"] => Field::keys(r.tagged_addresses.keys()),
            ["TaggedAddresses", key, rest @ ..] => match (r.tagged_addresses.get(*key), rest) {
                (Some(a), ["Address"]) => Field::Str(&a.address),
                (Some(a), ["Port"]) => Field::from(a.port),
                _ => Field::Missing,
            },
            ["Weights", "Passing"] => Field::from(r.weights.passing),
            ["Weights", "Warning"] => Field::from(r.weights.warning),
            ["EnableTagOverride"] => Field::Bool(r.enable_tag_override),
            _ => Field::Missing,
        }
    }
}

impl Selectable for ServiceFields<'_> {
    fn select(&self, path: &[&str]) -> Field<'_> {
        self.field(path)
    }
}

/// An instance on the node, flattened (Consul's `structs.ServiceNode`): each entry of
/// `/v1/catalog/service/:name`, and what `/v1/catalog/services` filters before grouping.
#[derive(Debug, Clone, Copy)]
pub struct ServiceNodeFields<'a> {
    pub node: &'a NodeInfo,
    pub service: &'a ServiceRegistration,
}

impl<'a> ServiceNodeFields<'a> {
    fn field(self, path: &[&str]) -> Field<'a> {
        let node = NodeFields(self.node);
        let service = ServiceFields(self.service);
        let Some((first, rest)) = path.split_first() else {
            return Field::Missing;
        };
        match *first {
            "ID" | "Node" | "Address" | "Datacenter" | "TaggedAddresses" => node.field(path),
            "NodeMeta" => renamed("Meta", rest, |p| node.field(p)),
            "ServiceName" => renamed("Service", rest, |p| service.field(p)),
            other => match other.strip_prefix("Service") {
                // ServiceID, ServiceTags, ServiceMeta, ServiceWeights, ServicePort, ...
                Some(field) if !field.is_empty() => renamed(field, rest, |p| service.field(p)),
                _ => Field::Missing,
            },
        }
    }
}

impl Selectable for ServiceNodeFields<'_> {
    fn select(&self, path: &[&str]) -> Field<'_> {
        self.field(path)
    }
}

/// A check as filters see it (Consul's `structs.HealthCheck`): a catalog check with the
/// service it belongs to, exactly as [`check_json`] shows it, or one the server makes up
/// (`serfHealth`). `ExposedPort` and `PeerName` are not carried (zero values).
#[derive(Debug, Clone, Copy)]
pub enum CheckFields<'a> {
    Catalog {
        check: &'a Check,
        node: &'a str,
        /// (ID, name, tags) for a service check.
        service: Option<(&'a str, &'a str, &'a [String])>,
    },
    Rendered(&'a HealthCheck),
}

impl<'a> CheckFields<'a> {
    /// A check of `owner` (or a node check, which names no service) as [`health_check`] shows it.
    pub fn of(check: &'a Check, owner: &'a InstanceRecord, node: &'a str) -> Self {
        let r = &owner.registration;
        CheckFields::Catalog {
            check,
            node,
            service: check
                .service_id()
                .map(|_| (r.id.as_str(), r.name.as_str(), r.tags.as_slice())),
        }
    }

    fn field(self, path: &[&str]) -> Field<'a> {
        let (check, node, service) = match self {
            CheckFields::Rendered(c) => return rendered_check_field(c, path),
            CheckFields::Catalog {
                check,
                node,
                service,
            } => (check, node, service),
        };
        let (service_id, service_name, service_tags) = service.unwrap_or(("", "", &[]));
        match path {
            ["Node"] => Field::Str(node),
            ["CheckID"] => Field::Str(check.id()),
            ["Name"] => Field::Str(check.name()),
            ["Status"] => Field::Str(check.status.as_str()),
            ["Notes"] => Field::Str(&check.definition.notes),
            ["Output"] => Field::Str(&check.output),
            ["ServiceID"] => Field::Str(service_id),
            ["ServiceName"] => Field::Str(service_name),
            ["ServiceTags"] => Field::list(service_tags),
            ["Type"] => Field::Str(check.definition.kind.type_name()),
            ["Interval"] => Field::String(interval_text(check)),
            ["Timeout"] => Field::String(timeout_text(check)),
            _ => Field::Missing,
        }
    }
}

fn rendered_check_field<'a>(c: &'a HealthCheck, path: &[&str]) -> Field<'a> {
    match path {
        ["Node"] => Field::Str(&c.node),
        ["CheckID"] => Field::Str(&c.check_id),
        ["Name"] => Field::Str(&c.name),
        ["Status"] => Field::Str(c.status.as_str()),
        ["Notes"] => Field::Str(&c.notes),
        ["Output"] => Field::Str(&c.output),
        ["ServiceID"] => Field::Str(&c.service_id),
        ["ServiceName"] => Field::Str(&c.service_name),
        ["ServiceTags"] => Field::list(&c.service_tags),
        ["Type"] => Field::Str(&c.check_type),
        ["Interval"] => Field::Str(&c.interval),
        ["Timeout"] => Field::Str(&c.timeout),
        _ => Field::Missing,
    }
}

impl Selectable for CheckFields<'_> {
    fn select(&self, path: &[&str]) -> Field<'_> {
        self.field(path)
    }
}

/// One entry of `/v1/health/service/:name` (Consul's `structs.CheckServiceNode`): the node,
/// the instance, and its checks with `serfHealth` first, as the entry answers them.
#[derive(Debug, Clone, Copy)]
pub struct HealthEntryFields<'a> {
    pub node: &'a NodeInfo,
    pub serf: &'a HealthCheck,
    pub instance: &'a InstanceView,
}

impl Selectable for HealthEntryFields<'_> {
    fn select(&self, path: &[&str]) -> Field<'_> {
        match path {
            ["Node", rest @ ..] => NodeFields(self.node).field(rest),
            ["Service", rest @ ..] => {
                ServiceFields(&self.instance.instance.registration).field(rest)
            }
            ["Checks", rest @ ..] => {
                let owner = &self.instance.instance;
                Field::each(
                    std::iter::once(CheckFields::Rendered(self.serf))
                        .chain(
                            self.instance
                                .checks
                                .iter()
                                .map(|c| CheckFields::of(c, owner, &self.node.node)),
                        )
                        .map(|c| c.field(rest)),
                )
            }
            _ => Field::Missing,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::collections::BTreeMap;
    use std::time::Duration;
    use trellis_catalog::{Catalog, Command, Effects};
    use trellis_filter::schema::{self, FieldType, Schema};
    use trellis_types::registration::StaticCheck;
    use trellis_types::{CheckDefinition, CheckKind};

    fn node() -> Node {
        Node::new("node-1", "dc1", "127.0.0.1:8500".parse().unwrap())
    }

    fn apply(catalog: &mut Catalog, command: Command) {
        catalog
            .apply(command, Duration::ZERO, &mut Effects::default())
            .unwrap();
    }

    fn register(catalog: &mut Catalog, body: Value) {
        apply(
            catalog,
            Command::Register {
                registration: ServiceRegistration::from_json(body).unwrap(),
                replace_existing_checks: false,
            },
        );
    }

    /// `web` with two instances and every kind of check: TTL, HTTP, a maintenance (static)
    /// check, and a node check that counts for every instance.
    fn catalog() -> Catalog {
        let mut catalog = Catalog::new();
        register(
            &mut catalog,
            json!({"Name": "web", "ID": "web-1", "Address": "10.0.0.1", "Port": 8080,
                   "Tags": ["v1", "primary"], "Meta": {"env": "prod", "team": "a"},
                   "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 8080}},
                   "Weights": {"Passing": 3, "Warning": 2},
                   "Checks": [{"TTL": "30s", "Status": "passing"},
                              {"HTTP": "http://127.0.0.1:1/health", "Interval": "5s"}]}),
        );
        register(
            &mut catalog,
            json!({"Name": "web", "ID": "web-2", "Port": 8081, "Meta": {"env": "dev"},
                   "EnableTagOverride": true}),
        );
        apply(
            &mut catalog,
            Command::RegisterCheck {
                check: CheckDefinition {
                    id: Some("_service_maintenance:web-2".into()),
                    name: Some("Service Maintenance Mode".into()),
                    service_id: Some("web-2".into()),
                    notes: "upgrading".into(),
                    status: Some(CheckStatus::Critical),
                    kind: CheckKind::Static(StaticCheck {
                        status: CheckStatus::Critical,
                        r#type: "maintenance".into(),
                    }),
                    interval: None,
                    timeout: None,
                    deregister_critical_service_after: None,
                    success_before_passing: 0,
                    failures_before_critical: 0,
                    failures_before_warning: 0,
                },
            },
        );
        apply(
            &mut catalog,
            Command::RegisterCheck {
                check: CheckDefinition::from_json(
                    json!({"CheckID": "disk", "Name": "disk", "TTL": "1m", "Status": "warning"}),
                )
                .unwrap(),
            },
        );
        catalog
    }

    fn published() -> Published {
        Published::new(service_view(&catalog(), "web"))
    }

    fn rendered(published: &Published, key: RenderKey, filter: Option<&Filter>) -> Value {
        serde_json::from_slice(&published.render(key, filter, &node())).unwrap()
    }

    #[test]
    fn only_probed_checks_have_a_timeout() {
        let node = node();
        let catalog = catalog();
        let timeouts: BTreeMap<String, (String, String)> = catalog
            .checks()
            .map(|c| {
                let json = check_json(c, &node, None);
                (json.check_id, (json.check_type, json.timeout))
            })
            .collect();
        let want = |t: &str, timeout: &str| (t.to_owned(), timeout.to_owned());
        assert_eq!(
            timeouts,
            BTreeMap::from([
                (
                    "_service_maintenance:web-2".to_owned(),
                    want("maintenance", "")
                ),
                ("disk".to_owned(), want("ttl", "")),
                ("service:web-1:1".to_owned(), want("ttl", "")),
                ("service:web-1:2".to_owned(), want("http", "10s")),
            ])
        );
    }

    /// What a selector path reads from an entry's JSON answer, as go-bexpr would read it from
    /// the struct the JSON was made from.
    fn from_json<'a>(value: Option<&'a Value>, path: &[&str], fan_out: usize) -> Field<'a> {
        let Some(value) = value else {
            return Field::Missing;
        };
        if fan_out > 0 && !path.is_empty() {
            // a list of objects on the way: one field per element
            if let Value::Array(items) = value {
                return Field::Each(
                    items
                        .iter()
                        .map(|item| from_json(Some(item), path, fan_out - 1))
                        .collect(),
                );
            }
        }
        match path.split_first() {
            Some((first, rest)) => from_json(value.get(*first), rest, fan_out),
            None => match value {
                Value::String(s) => Field::Str(s),
                Value::Bool(b) => Field::Bool(*b),
                Value::Number(n) => Field::Int(n.as_i64().unwrap()),
                Value::Array(items) if items.iter().all(Value::is_string) => {
                    Field::List(items.iter().filter_map(Value::as_str).collect())
                }
                Value::Array(items) => Field::Each(vec![Field::Missing; items.len()]),
                Value::Object(map) => Field::Map(map.keys().map(String::as_str).collect()),
                Value::Null => Field::Missing,
            },
        }
    }

    /// `field` with what filters cannot tell apart made equal: an absent field (not a map
    /// key) reads as its zero value, an owned string as a borrowed one.
    fn normal(field: Field<'_>, ty: FieldType, via_map_key: bool) -> Field<'_> {
        match field {
            Field::Missing if !via_map_key => match ty {
                FieldType::String => Field::String(String::new()),
                FieldType::Int => Field::Int(0),
                FieldType::Bool => Field::Bool(false),
                FieldType::StringList => Field::List(Vec::new()),
                FieldType::StringMap | FieldType::StructMap(_) => Field::Map(Vec::new()),
                _ => Field::Each(Vec::new()),
            },
            Field::String(s) => Field::String(s),
            Field::Str(s) => Field::String(s.to_owned()),
            Field::Each(items) => Field::Each(
                items
                    .into_iter()
                    .map(|f| normal(f, ty, via_map_key))
                    .collect(),
            ),
            other => other,
        }
    }

    /// Every selector of `schema` (map keys: some present, one not) reads the same from
    /// `entry` as from `json`, the entry's answer.
    fn same_as_answer(schema: &Schema, entry: &dyn Selectable, json: &Value) {
        let keys = [
            "env",
            "team",
            "lan",
            "wan",
            "consul-network-segment",
            "nope",
        ];
        let mut paths: Vec<Vec<String>> = Vec::new();
        for (selector, _) in schema.selectors() {
            let parts: Vec<&str> = selector.split('.').collect();
            let mut expanded: Vec<Vec<String>> = vec![Vec::new()];
            for part in parts {
                let options: Vec<&str> = if part == "<any>" {
                    keys.to_vec()
                } else {
                    vec![part]
                };
                expanded = expanded
                    .into_iter()
                    .flat_map(|p| {
                        options.iter().map(move |o| {
                            let mut p = p.clone();
                            p.push((*o).to_owned());
                            p
                        })
                    })
                    .collect();
            }
            paths.extend(expanded);
        }
        assert!(paths.len() > 10);
        for path in paths {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            let resolved = schema.resolve(&path).unwrap();
            let ours = normal(entry.select(&path), resolved.ty, resolved.via_map_key);
            let answered = normal(
                from_json(Some(json), &path, resolved.fan_out),
                resolved.ty,
                resolved.via_map_key,
            );
            assert_eq!(ours, answered, "{} on {}", path.join("."), schema.name);
        }
    }

    #[test]
    fn selectors_read_what_the_endpoints_answer() {
        let node = node();
        let info = node.info();
        let published = published();
        let view = &published.view;
        assert_eq!(view.instances.len(), 2);

        let health = rendered(
            &published,
            RenderKey::Health {
                passing: false,
                tags: Vec::new(),
                filter: None,
            },
            None,
        );
        let serf = node.serf_health();
        for (instance, json) in view.instances.iter().zip(health.as_array().unwrap()) {
            let entry = HealthEntryFields {
                node: info,
                serf,
                instance,
            };
            same_as_answer(&schema::HEALTH_SERVICE, &entry, json);
            let service = ServiceFields(&instance.instance.registration);
            same_as_answer(&schema::CATALOG_NODE_SERVICES, &service, &json["Service"]);
            same_as_answer(&schema::AGENT_SERVICES, &service, &json["Service"]);
            let checks = json["Checks"].as_array().unwrap();
            same_as_answer(
                &schema::HEALTH_CHECKS,
                &CheckFields::Rendered(serf),
                &checks[0],
            );
            for (check, json) in instance.checks.iter().zip(&checks[1..]) {
                let fields = CheckFields::of(check, &instance.instance, &node.name);
                same_as_answer(&schema::HEALTH_CHECKS, &fields, json);
            }
        }
        same_as_answer(
            &schema::CATALOG_NODES,
            &NodeFields(info),
            &health[0]["Node"],
        );

        let catalog = rendered(
            &published,
            RenderKey::Catalog {
                tags: Vec::new(),
                filter: None,
            },
            None,
        );
        for (instance, json) in view.instances.iter().zip(catalog.as_array().unwrap()) {
            let entry = ServiceNodeFields {
                node: info,
                service: &instance.instance.registration,
            };
            same_as_answer(&schema::CATALOG_SERVICE, &entry, json);
        }
    }

    fn parse(text: &str, schema: &Schema) -> Filter {
        Filter::parse(text, schema).unwrap()
    }

    fn ids(answer: &Value, key: &str) -> Vec<String> {
        answer
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let id = match key {
                    "Service" => &e["Service"]["ID"],
                    other => &e[other],
                };
                id.as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn filtered_renderings() {
        let published = published();
        let health = |text: &str| {
            let f = parse(text, &schema::HEALTH_SERVICE);
            let key = RenderKey::Health {
                passing: false,
                tags: Vec::new(),
                filter: filter_key(Some(&f)),
            };
            ids(&rendered(&published, key, Some(&f)), "Service")
        };
        assert_eq!(health("Service.Meta.env == prod"), ["web-1"]);
        assert_eq!(health(r#"Checks.Type == "maintenance""#), ["web-2"]);
        assert_eq!(
            health(r#"Checks.CheckID == "serfHealth""#),
            ["web-1", "web-2"]
        );
        assert_eq!(
            health(r#"Service.Port == 8081 and Node.Node == "node-1""#),
            ["web-2"]
        );
        assert!(health("Service.Meta.env == staging").is_empty());

        let f = parse("ServiceWeights.Passing == 3", &schema::CATALOG_SERVICE);
        let key = RenderKey::Catalog {
            tags: Vec::new(),
            filter: filter_key(Some(&f)),
        };
        assert_eq!(
            ids(&rendered(&published, key, Some(&f)), "ServiceID"),
            ["web-1"]
        );

        let f = parse("Timeout is not empty", &schema::HEALTH_CHECKS);
        let key = RenderKey::Checks {
            filter: filter_key(Some(&f)),
        };
        assert_eq!(
            ids(&rendered(&published, key, Some(&f)), "CheckID"),
            ["service:web-1:2"]
        );
    }

    #[test]
    fn one_rendering_per_filter_however_spelled() {
        let published = published();
        let node = node();
        let render = |text: &str| {
            let f = parse(text, &schema::HEALTH_SERVICE);
            let key = RenderKey::Health {
                passing: false,
                tags: Vec::new(),
                filter: filter_key(Some(&f)),
            };
            published.render(key, Some(&f), &node)
        };
        let a = render("Service.Meta.env == prod");
        let b = render(r#"(Service.Meta["env"] == "prod")"#);
        assert_eq!(a.as_ptr(), b.as_ptr(), "one rendering shared");
        let unfiltered = published.render(
            RenderKey::Health {
                passing: false,
                tags: Vec::new(),
                filter: None,
            },
            None,
            &node,
        );
        assert_ne!(unfiltered, a);
        let c = render("Service.Meta.env != prod");
        assert_ne!(c, a);

        // The cache is bounded: beyond MAX_RENDERS distinct renderings, each request renders
        // its own (same bytes, not shared), and the cached ones stay shared.
        for port in 0..MAX_RENDERS {
            render(&format!("Service.Port == {port}"));
        }
        let late = "Service.Port == 9999";
        let (x, y) = (render(late), render(late));
        assert_eq!(x, y);
        assert_ne!(x.as_ptr(), y.as_ptr(), "not cached beyond the bound");
        assert_eq!(published.renders.lock().len(), MAX_RENDERS);
        assert_eq!(render("Service.Meta.env == prod").as_ptr(), a.as_ptr());
    }
}
