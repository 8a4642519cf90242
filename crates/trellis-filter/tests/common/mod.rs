//! Test entries shaped like Consul's: a node, a service instance, checks, and the entry types
//! of the endpoints built from them, each implementing `Selectable` the way the server would.
#![allow(dead_code)]

use std::collections::BTreeMap;
use trellis_filter::{Field, Selectable};

pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[derive(Debug, Clone, Default)]
pub struct Node {
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: BTreeMap<String, String>,
}

impl Selectable for Node {
    fn select(&self, path: &[&str]) -> Field<'_> {
        match path {
            ["ID"] => Field::from(&self.id),
            ["Node"] => Field::from(&self.node),
            ["Address"] => Field::from(&self.address),
            ["Datacenter"] => Field::from(&self.datacenter),
            ["TaggedAddresses"] => Field::keys(self.tagged_addresses.keys()),
            ["TaggedAddresses", key] => Field::lookup(self.tagged_addresses.get(*key)),
            ["Meta"] => Field::keys(self.meta.keys()),
            ["Meta", key] => Field::lookup(self.meta.get(*key)),
            _ => Field::Missing,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    pub id: String,
    pub service: String,
    pub kind: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: BTreeMap<String, String>,
    pub tagged_addresses: BTreeMap<String, (String, u16)>,
    pub weights: (u32, u32),
    pub enable_tag_override: bool,
}

impl Default for Service {
    fn default() -> Self {
        Service {
            id: String::new(),
            service: String::new(),
            kind: String::new(),
            tags: Vec::new(),
            address: String::new(),
            port: 0,
            meta: BTreeMap::new(),
            tagged_addresses: BTreeMap::new(),
            weights: (1, 1),
            enable_tag_override: false,
        }
    }
}

/// The fields of a service instance under the names `structs.NodeService` / `api.AgentService`
/// use (`Service`, `Tags`, `Meta`, ...).
impl Selectable for Service {
    fn select(&self, path: &[&str]) -> Field<'_> {
        match path {
            ["ID"] => Field::from(&self.id),
            ["Service"] => Field::from(&self.service),
            ["Kind"] => Field::from(&self.kind),
            ["Tags"] => Field::list(&self.tags),
            ["Address"] => Field::from(&self.address),
            ["Port"] => Field::from(self.port),
            ["Meta"] => Field::keys(self.meta.keys()),
            ["Meta", key] => Field::lookup(self.meta.get(*key)),
            ["TaggedAddresses"] => Field::keys(self.tagged_addresses.keys()),
            ["TaggedAddresses", key, field] => match (self.tagged_addresses.get(*key), *field) {
                (None, _) => Field::Missing,
                (Some((address, _)), "Address") => Field::from(address),
                (Some((_, port)), "Port") => Field::from(*port),
                _ => Field::Missing,
            },
            ["Weights", "Passing"] => Field::from(self.weights.0),
            ["Weights", "Warning"] => Field::from(self.weights.1),
            ["EnableTagOverride"] => Field::from(self.enable_tag_override),
            _ => Field::Missing,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Check {
    pub node: String,
    pub check_id: String,
    pub name: String,
    pub status: String,
    pub notes: String,
    pub output: String,
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub check_type: String,
}

impl Selectable for Check {
    fn select(&self, path: &[&str]) -> Field<'_> {
        match path {
            ["Node"] => Field::from(&self.node),
            ["CheckID"] => Field::from(&self.check_id),
            ["Name"] => Field::from(&self.name),
            ["Status"] => Field::from(&self.status),
            ["Notes"] => Field::from(&self.notes),
            ["Output"] => Field::from(&self.output),
            ["ServiceID"] => Field::from(&self.service_id),
            ["ServiceName"] => Field::from(&self.service_name),
            ["ServiceTags"] => Field::list(&self.service_tags),
            ["Type"] => Field::from(&self.check_type),
            _ => Field::Missing,
        }
    }
}

/// One entry of `/v1/health/service/:service`.
#[derive(Debug, Clone, Default)]
pub struct HealthEntry {
    pub node: Node,
    pub service: Service,
    pub checks: Vec<Check>,
}

impl Selectable for HealthEntry {
    fn select(&self, path: &[&str]) -> Field<'_> {
        match path {
            ["Node", rest @ ..] => self.node.select(rest),
            ["Service", rest @ ..] => self.service.select(rest),
            ["Checks", rest @ ..] => Field::each(self.checks.iter().map(|c| c.select(rest))),
            _ => Field::Missing,
        }
    }
}

/// One entry of `/v1/catalog/service/:service`: node and service flattened, service fields
/// prefixed.
#[derive(Debug, Clone, Copy)]
pub struct CatalogEntry<'a> {
    pub node: &'a Node,
    pub service: &'a Service,
}

impl Selectable for CatalogEntry<'_> {
    fn select(&self, path: &[&str]) -> Field<'_> {
        match path {
            ["NodeMeta", rest @ ..] => self.node.select(&[&["Meta"][..], rest].concat()),
            ["ServiceName"] => self.service.select(&["Service"]),
            ["ServiceID"] => self.service.select(&["ID"]),
            ["ServiceKind"] => self.service.select(&["Kind"]),
            [first, rest @ ..] if first.starts_with("Service") => {
                let inner = &first["Service".len()..];
                self.service.select(&[&[inner][..], rest].concat())
            }
            _ => self.node.select(path),
        }
    }
}
