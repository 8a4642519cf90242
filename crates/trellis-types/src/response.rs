//! Response bodies of the Consul-compatible API, with PascalCase names and real JSON types.

use crate::registration::{CheckStatus, TaggedAddress, Weights};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The (single, synthesised) node, as in `/v1/catalog/nodes` and `Node` of health entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeInfo {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A service instance as `Service` of a health entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceInfo {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    pub address: String,
    /// `omitempty` in Consul's `structs.NodeService`, like `Port`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tagged_addresses: BTreeMap<String, TaggedAddress>,
    pub meta: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u16,
    pub weights: Weights,
    pub enable_tag_override: bool,
    /// Always present in Consul's `structs.NodeService` (not pointers): a plain service's.
    #[serde(default)]
    pub proxy: ProxyInfo,
    #[serde(default)]
    pub connect: EmptyObject,
    pub create_index: u64,
    pub modify_index: u64,
}

/// Consul's `ConnectProxyConfig` of a service that is no proxy, as Consul prints it:
/// `{"Mode": "", "MeshGateway": {}, "Expose": {}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProxyInfo {
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub mesh_gateway: EmptyObject,
    #[serde(default)]
    pub expose: EmptyObject,
}

/// A Go struct whose fields are all empty and `omitempty`: `{}` (and any object read back).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyObject {}

/// A value of `GET /v1/agent/services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub port: u16,
    pub address: String,
    /// `omitempty` in Consul's `api.AgentService`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tagged_addresses: BTreeMap<String, TaggedAddress>,
    pub weights: Weights,
    pub enable_tag_override: bool,
    pub datacenter: String,
}

/// A check as reported by health and agent endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    pub status: CheckStatus,
    pub notes: String,
    pub output: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    #[serde(rename = "Type")]
    pub check_type: String,
    /// Go duration text, "" when not applicable.
    pub interval: String,
    pub timeout: String,
    /// Always present in Consul's `structs.HealthCheck` (0 without Connect's exposed paths).
    #[serde(default)]
    pub exposed_port: u16,
    /// How the check runs (Consul's `HealthCheckDefinition`: every field `omitempty`, so a TTL
    /// check's definition is `{}`).
    #[serde(default)]
    pub definition: CheckDefinitionInfo,
    pub create_index: u64,
    pub modify_index: u64,
}

/// `Definition` of a check as Consul prints it: durations as Go duration text, empty fields
/// left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDefinitionInfo {
    #[serde(rename = "HTTP", default, skip_serializing_if = "String::is_empty")]
    pub http: String,
    #[serde(
        rename = "TLSServerName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub tls_server_name: String,
    #[serde(rename = "TLSSkipVerify", default, skip_serializing_if = "is_false")]
    pub tls_skip_verify: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub header: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    #[serde(rename = "TCP", default, skip_serializing_if = "String::is_empty")]
    pub tcp: String,
    #[serde(rename = "GRPC", default, skip_serializing_if = "String::is_empty")]
    pub grpc: String,
    #[serde(rename = "GRPCUseTLS", default, skip_serializing_if = "is_false")]
    pub grpc_use_tls: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interval: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timeout: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deregister_critical_service_after: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One entry of `GET /v1/health/service/:name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthEntry {
    pub node: NodeInfo,
    pub service: ServiceInfo,
    pub checks: Vec<HealthCheck>,
}

/// One entry of `GET /v1/catalog/service/:name` (node and service fields flattened).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogService {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub node_meta: BTreeMap<String, String>,
    pub service_kind: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub service_address: String,
    /// `omitempty` in Consul's `structs.ServiceNode`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_tagged_addresses: BTreeMap<String, TaggedAddress>,
    pub service_weights: Weights,
    pub service_meta: BTreeMap<String, String>,
    pub service_port: u16,
    /// Not `omitempty` in Consul's `structs.ServiceNode`, unlike `NodeService.SocketPath`.
    #[serde(default)]
    pub service_socket_path: String,
    pub service_enable_tag_override: bool,
    #[serde(default)]
    pub service_proxy: ProxyInfo,
    #[serde(default)]
    pub service_connect: EmptyObject,
    /// `null`: Trellis knows no localities.
    #[serde(default)]
    pub service_locality: Option<EmptyObject>,
    pub create_index: u64,
    pub modify_index: u64,
}

fn is_zero(port: &u16) -> bool {
    *port == 0
}

/// A key/value entry; `Value` is base64, `null` for an empty value. `Session` is the session
/// holding the key's lock, left out when nobody holds it (as Consul answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvPair {
    pub lock_index: u64,
    pub key: String,
    pub flags: u64,
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl KvPair {
    /// The decoded value bytes.
    pub fn decoded_value(&self) -> Result<Vec<u8>, base64::DecodeError> {
        use base64::Engine;
        match &self.value {
            None => Ok(Vec::new()),
            Some(v) => base64::engine::general_purpose::STANDARD.decode(v),
        }
    }
}
