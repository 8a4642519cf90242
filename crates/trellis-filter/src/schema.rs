//! Which selectors each Consul endpoint accepts, and their types.
//!
//! The names are the Go field names of the structs Consul filters (with the fields tagged
//! `bexpr:"-"` left out, as go-bexpr does): `api.AgentService` for `/v1/agent/services`,
//! `structs.HealthCheck` for the check listings, `structs.ServiceNode` for the catalog's
//! service listings, `structs.Node` for `/v1/catalog/nodes` and `structs.CheckServiceNode` for
//! `/v1/health/service/:service`. A type decides which operators a selector supports, which
//! type a value is converted to, and what an absent field reads as (its Go zero value).

use crate::ast::Op;

/// The type of a selectable field (a Go field type as go-bexpr sees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// `string`: `==`, `!=`, `in` / `contains` (substring), `matches`, `is empty`.
    String,
    /// `bool`: `==`, `!=`; values as Go's `strconv.ParseBool` reads them.
    Bool,
    /// `int`: `==`, `!=`; values as Go's `strconv.ParseInt(s, 0, 64)` reads them.
    Int,
    /// `[]string`: `in` / `contains` (an element), `is empty`.
    StringList,
    /// `map[string]string`: `in` / `contains` (a key), `is empty`; `Map.key` / `Map["key"]`
    /// selects a value (a `String`).
    StringMap,
    /// A nested struct: no operators of its own, only its fields.
    Struct(&'static [FieldDef]),
    /// `[]struct`: `is empty`; `List.Field` matches when the comparison holds for *any*
    /// element (go-bexpr's implicit "any").
    StructList(&'static [FieldDef]),
    /// `map[string]struct`: like `StringMap`, with `Map.key.Field` selecting into a value.
    StructMap(&'static [FieldDef]),
}

impl FieldType {
    /// The operators a selector of this type supports (negated forms included).
    pub fn operators(self) -> &'static [Op] {
        use Op::*;
        match self {
            FieldType::String => &[
                Equal, NotEqual, In, NotIn, Matches, NotMatches, IsEmpty, IsNotEmpty,
            ],
            FieldType::Bool | FieldType::Int => &[Equal, NotEqual],
            FieldType::StringList | FieldType::StringMap | FieldType::StructMap(_) => {
                &[In, NotIn, IsEmpty, IsNotEmpty]
            }
            FieldType::StructList(_) => &[IsEmpty, IsNotEmpty],
            FieldType::Struct(_) => &[],
        }
    }

    /// A short name for messages and listings.
    pub fn describe(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Bool => "boolean",
            FieldType::Int => "integer",
            FieldType::StringList => "list of strings",
            FieldType::StringMap => "map of strings",
            FieldType::Struct(_) => "object",
            FieldType::StructList(_) => "list of objects",
            FieldType::StructMap(_) => "map of objects",
        }
    }
}

/// One named field of a struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDef {
    pub name: &'static str,
    pub ty: FieldType,
}

/// The selectors one kind of result entry offers: what a filter on an endpoint may name.
#[derive(Debug, PartialEq, Eq)]
pub struct Schema {
    /// The Consul type each entry is (for messages and docs), e.g. `CheckServiceNode`.
    pub name: &'static str,
    /// The endpoints whose entries have this shape.
    pub endpoints: &'static [&'static str],
    /// The top-level fields.
    pub fields: &'static [FieldDef],
}

/// Where a valid selector path leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// The selected field's type.
    pub ty: FieldType,
    /// How many lists of objects the path goes through (each one an implicit "any").
    pub fan_out: usize,
    /// Whether the path goes through a map key, so the field may be absent.
    pub via_map_key: bool,
}

impl Schema {
    /// Resolves a selector path. On failure, the error is the number of leading parts that
    /// make the first invalid selector (`Service.Foo.Bar` → 2, for `Service.Foo`).
    pub fn resolve<S: AsRef<str>>(&self, path: &[S]) -> Result<Resolved, usize> {
        let mut ty = FieldType::Struct(self.fields);
        let mut fan_out = 0;
        let mut via_map_key = false;
        for (i, part) in path.iter().enumerate() {
            let part = part.as_ref();
            let lookup = |fields: &[FieldDef]| {
                fields
                    .iter()
                    .find(|f| f.name == part)
                    .map(|f| f.ty)
                    .ok_or(i + 1)
            };
            ty = match ty {
                FieldType::Struct(fields) => lookup(fields)?,
                FieldType::StructList(fields) => {
                    fan_out += 1;
                    lookup(fields)?
                }
                FieldType::StringMap => {
                    via_map_key = true;
                    FieldType::String
                }
                FieldType::StructMap(fields) => {
                    via_map_key = true;
                    FieldType::Struct(fields)
                }
                _ => return Err(i + 1),
            };
        }
        if path.is_empty() {
            return Err(0);
        }
        Ok(Resolved {
            ty,
            fan_out,
            via_map_key,
        })
    }

    /// Every selector that supports at least one operator, in declaration order, as Consul's
    /// documentation lists them (`Meta`, `Meta.<any>`, `Checks.Status`, ...), with its type.
    pub fn selectors(&self) -> Vec<(String, FieldType)> {
        fn walk(prefix: &str, fields: &[FieldDef], out: &mut Vec<(String, FieldType)>) {
            for f in fields {
                let name = if prefix.is_empty() {
                    f.name.to_string()
                } else {
                    format!("{prefix}.{}", f.name)
                };
                if !f.ty.operators().is_empty() {
                    out.push((name.clone(), f.ty));
                }
                match f.ty {
                    FieldType::StringMap => {
                        out.push((format!("{name}.<any>"), FieldType::String));
                    }
                    FieldType::Struct(sub) | FieldType::StructList(sub) => walk(&name, sub, out),
                    FieldType::StructMap(sub) => walk(&format!("{name}.<any>"), sub, out),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk("", self.fields, &mut out);
        out
    }
}

use FieldType::{Bool, Int, String as Str, StringList, StringMap, Struct, StructList, StructMap};

const fn f(name: &'static str, ty: FieldType) -> FieldDef {
    FieldDef { name, ty }
}

/// `structs.Weights` / `api.AgentWeights`.
const WEIGHTS: &[FieldDef] = &[f("Passing", Int), f("Warning", Int)];

/// `structs.ServiceAddress`, the value type of a service's `TaggedAddresses`.
const SERVICE_ADDRESS: &[FieldDef] = &[f("Address", Str), f("Port", Int)];

/// `structs.ServiceConnect` (its `SidecarService` and `PeerMeta` are `bexpr:"-"`).
const CONNECT: &[FieldDef] = &[f("Native", Bool)];

/// `structs.MeshGatewayConfig`.
const MESH_GATEWAY: &[FieldDef] = &[f("Mode", Str)];

/// `structs.TransparentProxyConfig`.
const TRANSPARENT_PROXY: &[FieldDef] = &[f("OutboundListenerPort", Int), f("DialedDirectly", Bool)];

/// `structs.ExposePath`.
const EXPOSE_PATH: &[FieldDef] = &[
    f("ListenerPort", Int),
    f("Path", Str),
    f("LocalPathPort", Int),
    f("Protocol", Str),
    f("ParsedFromCheck", Bool),
];

/// `structs.ExposeConfig`.
const EXPOSE: &[FieldDef] = &[f("Checks", Bool), f("Paths", StructList(EXPOSE_PATH))];

/// `structs.AccessLogsConfig`.
const ACCESS_LOGS: &[FieldDef] = &[
    f("Enabled", Bool),
    f("DisableListenerLogs", Bool),
    f("Type", Str),
    f("Path", Str),
    f("JSONFormat", Str),
    f("TextFormat", Str),
];

/// `structs.EnvoyExtension` (`Arguments` is `bexpr:"-"`).
const ENVOY_EXTENSION: &[FieldDef] = &[
    f("Name", Str),
    f("Required", Bool),
    f("ConsulVersion", Str),
    f("EnvoyVersion", Str),
];

/// `structs.Upstream` (`Config`, `IngressHosts`, `CentrallyConfigured` are `bexpr:"-"`).
const UPSTREAM: &[FieldDef] = &[
    f("DestinationType", Str),
    f("DestinationNamespace", Str),
    f("DestinationPartition", Str),
    f("DestinationPeer", Str),
    f("DestinationName", Str),
    f("Datacenter", Str),
    f("LocalBindAddress", Str),
    f("LocalBindPort", Int),
    f("LocalBindSocketPath", Str),
    f("LocalBindSocketMode", Str),
    f("MeshGateway", Struct(MESH_GATEWAY)),
];

/// `structs.ConnectProxyConfig` / `api.AgentServiceConnectProxyConfig` (`Config` and
/// `MutualTLSMode` are `bexpr:"-"`). Trellis has no service mesh: these read as zero values.
const PROXY: &[FieldDef] = &[
    f("EnvoyExtensions", StructList(ENVOY_EXTENSION)),
    f("DestinationServiceName", Str),
    f("DestinationServiceID", Str),
    f("LocalServiceAddress", Str),
    f("LocalServicePort", Int),
    f("LocalServiceSocketPath", Str),
    f("Mode", Str),
    f("Upstreams", StructList(UPSTREAM)),
    f("MeshGateway", Struct(MESH_GATEWAY)),
    f("Expose", Struct(EXPOSE)),
    f("TransparentProxy", Struct(TRANSPARENT_PROXY)),
    f("AccessLogs", Struct(ACCESS_LOGS)),
];

/// `structs.Node` (`Locality` and `RaftIndex` are `bexpr:"-"`).
const NODE: &[FieldDef] = &[
    f("ID", Str),
    f("Node", Str),
    f("Address", Str),
    f("Datacenter", Str),
    f("Partition", Str),
    f("PeerName", Str),
    f("TaggedAddresses", StringMap),
    f("Meta", StringMap),
];

/// `structs.NodeService` (`Locality`, `LocallyRegisteredAsSidecar`, `EnterpriseMeta` and
/// `RaftIndex` are `bexpr:"-"`).
const NODE_SERVICE: &[FieldDef] = &[
    f("Kind", Str),
    f("ID", Str),
    f("Service", Str),
    f("Tags", StringList),
    f("Address", Str),
    f("TaggedAddresses", StructMap(SERVICE_ADDRESS)),
    f("Meta", StringMap),
    f("Port", Int),
    f("SocketPath", Str),
    f("Weights", Struct(WEIGHTS)),
    f("EnableTagOverride", Bool),
    f("Proxy", Struct(PROXY)),
    f("Connect", Struct(CONNECT)),
    f("PeerName", Str),
];

/// `api.AgentService` (`CreateIndex`, `ModifyIndex`, `ContentHash`, `Namespace`,
/// `Partition`, `Datacenter` and `Locality` are `bexpr:"-"`).
const AGENT_SERVICE: &[FieldDef] = &[
    f("Kind", Str),
    f("ID", Str),
    f("Service", Str),
    f("Tags", StringList),
    f("Meta", StringMap),
    f("Port", Int),
    f("Address", Str),
    f("SocketPath", Str),
    f("TaggedAddresses", StructMap(SERVICE_ADDRESS)),
    f("Weights", Struct(WEIGHTS)),
    f("EnableTagOverride", Bool),
    f("Proxy", Struct(PROXY)),
    f("Connect", Struct(CONNECT)),
    f("PeerName", Str),
];

/// `structs.HealthCheck` (`Definition`, `EnterpriseMeta` and `RaftIndex` are `bexpr:"-"`).
const HEALTH_CHECK: &[FieldDef] = &[
    f("Node", Str),
    f("CheckID", Str),
    f("Name", Str),
    f("Status", Str),
    f("Notes", Str),
    f("Output", Str),
    f("ServiceID", Str),
    f("ServiceName", Str),
    f("ServiceTags", StringList),
    f("Type", Str),
    f("Interval", Str),
    f("Timeout", Str),
    f("ExposedPort", Int),
    f("PeerName", Str),
];

/// `structs.ServiceNode` (`ServiceLocality`, `EnterpriseMeta` and `RaftIndex` are
/// `bexpr:"-"`).
const SERVICE_NODE: &[FieldDef] = &[
    f("ID", Str),
    f("Node", Str),
    f("Address", Str),
    f("Datacenter", Str),
    f("TaggedAddresses", StringMap),
    f("NodeMeta", StringMap),
    f("ServiceKind", Str),
    f("ServiceID", Str),
    f("ServiceName", Str),
    f("ServiceTags", StringList),
    f("ServiceAddress", Str),
    f("ServiceTaggedAddresses", StructMap(SERVICE_ADDRESS)),
    f("ServiceWeights", Struct(WEIGHTS)),
    f("ServiceMeta", StringMap),
    f("ServicePort", Int),
    f("ServiceSocketPath", Str),
    f("ServiceEnableTagOverride", Bool),
    f("ServiceProxy", Struct(PROXY)),
    f("ServiceConnect", Struct(CONNECT)),
    f("PeerName", Str),
];

/// `structs.CheckServiceNode`: one entry of `/v1/health/service/:service`.
const CHECK_SERVICE_NODE: &[FieldDef] = &[
    f("Node", Struct(NODE)),
    f("Service", Struct(NODE_SERVICE)),
    f("Checks", StructList(HEALTH_CHECK)),
];

/// `structs.UpstreamLimits`.
const UPSTREAM_LIMITS: &[FieldDef] = &[
    f("MaxConnections", Int),
    f("MaxPendingRequests", Int),
    f("MaxConcurrentRequests", Int),
];

/// `structs.PassiveHealthCheck` (its durations, `Interval` and `BaseEjectionTime`, are left
/// out: Trellis keeps them as sent, a string or nanoseconds).
const PASSIVE_HEALTH_CHECK: &[FieldDef] = &[
    f("MaxFailures", Int),
    f("EnforcingConsecutive5xx", Int),
    f("MaxEjectionPercent", Int),
];

/// `structs.UpstreamConfig` (Consul CE: no namespace or partition).
const UPSTREAM_CONFIG: &[FieldDef] = &[
    f("Name", Str),
    f("Peer", Str),
    f("EnvoyListenerJSON", Str),
    f("EnvoyClusterJSON", Str),
    f("Protocol", Str),
    f("ConnectTimeoutMs", Int),
    f("Limits", Struct(UPSTREAM_LIMITS)),
    f("PassiveHealthCheck", Struct(PASSIVE_HEALTH_CHECK)),
    f("MeshGateway", Struct(MESH_GATEWAY)),
    f("BalanceOutboundConnections", Str),
];

/// `structs.UpstreamConfiguration`.
const UPSTREAM_CONFIGURATION: &[FieldDef] = &[
    f("Overrides", StructList(UPSTREAM_CONFIG)),
    f("Defaults", Struct(UPSTREAM_CONFIG)),
];

/// `structs.DestinationConfig`.
const DESTINATION: &[FieldDef] = &[f("Addresses", StringList), f("Port", Int)];

/// `structs.InstanceLevelRouteRateLimits`.
const ROUTE_RATE_LIMITS: &[FieldDef] = &[
    f("PathExact", Str),
    f("PathPrefix", Str),
    f("PathRegex", Str),
    f("RequestsPerSecond", Int),
    f("RequestsMaxBurst", Int),
];

/// `structs.InstanceLevelRateLimits`.
const INSTANCE_RATE_LIMITS: &[FieldDef] = &[
    f("RequestsPerSecond", Int),
    f("RequestsMaxBurst", Int),
    f("Routes", StructList(ROUTE_RATE_LIMITS)),
];

/// `structs.RateLimits`.
const RATE_LIMITS: &[FieldDef] = &[f("InstanceLevel", Struct(INSTANCE_RATE_LIMITS))];

/// `structs.ServiceConfigEntry`, a `service-defaults` config entry (its computed `Hash` and the
/// embedded `RaftIndex` are left out).
const SERVICE_CONFIG_ENTRY: &[FieldDef] = &[
    f("Kind", Str),
    f("Name", Str),
    f("Protocol", Str),
    f("Mode", Str),
    f("TransparentProxy", Struct(TRANSPARENT_PROXY)),
    f("MutualTLSMode", Str),
    f("MeshGateway", Struct(MESH_GATEWAY)),
    f("Expose", Struct(EXPOSE)),
    f("ExternalSNI", Str),
    f("UpstreamConfig", Struct(UPSTREAM_CONFIGURATION)),
    f("Destination", Struct(DESTINATION)),
    f("MaxInboundConnections", Int),
    f("LocalConnectTimeoutMs", Int),
    f("LocalRequestTimeoutMs", Int),
    f("BalanceInboundConnections", Str),
    f("RateLimits", Struct(RATE_LIMITS)),
    f("EnvoyExtensions", StructList(ENVOY_EXTENSION)),
    f("Meta", StringMap),
];

/// Each entry of `GET /v1/config/service-defaults` (a `structs.ServiceConfigEntry`): Consul
/// filters the config entries of that kind only.
pub static SERVICE_DEFAULTS: Schema = Schema {
    name: "ServiceConfigEntry",
    endpoints: &["/v1/config/service-defaults"],
    fields: SERVICE_CONFIG_ENTRY,
};

/// Each value of `GET /v1/agent/services` (an `api.AgentService`).
pub static AGENT_SERVICES: Schema = Schema {
    name: "AgentService",
    endpoints: &["/v1/agent/services"],
    fields: AGENT_SERVICE,
};

/// Each value of `GET /v1/agent/checks` (a `structs.HealthCheck`).
pub static AGENT_CHECKS: Schema = Schema {
    name: "HealthCheck",
    endpoints: &["/v1/agent/checks"],
    fields: HEALTH_CHECK,
};

/// Each check of `GET /v1/health/checks/:service`, `/v1/health/state/:state` and
/// `/v1/health/node/:node` (a `structs.HealthCheck`).
pub static HEALTH_CHECKS: Schema = Schema {
    name: "HealthCheck",
    endpoints: &[
        "/v1/health/checks/:service",
        "/v1/health/state/:state",
        "/v1/health/node/:node",
    ],
    fields: HEALTH_CHECK,
};

/// Each entry of `GET /v1/health/service/:service` (a `structs.CheckServiceNode`).
pub static HEALTH_SERVICE: Schema = Schema {
    name: "CheckServiceNode",
    endpoints: &[
        "/v1/health/service/:service",
        "/v1/health/connect/:service",
        "/v1/health/ingress/:service",
    ],
    fields: CHECK_SERVICE_NODE,
};

/// Each entry of `GET /v1/catalog/service/:service` (a `structs.ServiceNode`).
pub static CATALOG_SERVICE: Schema = Schema {
    name: "ServiceNode",
    endpoints: &[
        "/v1/catalog/service/:service",
        "/v1/catalog/connect/:service",
    ],
    fields: SERVICE_NODE,
};

/// `GET /v1/catalog/services`: Consul filters the service *instances* (`structs.ServiceNode`)
/// and lists the names (with their tags) of those that match.
pub static CATALOG_SERVICES: Schema = Schema {
    name: "ServiceNode",
    endpoints: &["/v1/catalog/services"],
    fields: SERVICE_NODE,
};

/// Each entry of `GET /v1/catalog/nodes` (a `structs.Node`).
pub static CATALOG_NODES: Schema = Schema {
    name: "Node",
    endpoints: &["/v1/catalog/nodes"],
    fields: NODE,
};

/// Each service of `GET /v1/catalog/node-services/:node` and the `Services` of
/// `/v1/catalog/node/:node` (a `structs.NodeService`).
pub static CATALOG_NODE_SERVICES: Schema = Schema {
    name: "NodeService",
    endpoints: &["/v1/catalog/node/:node", "/v1/catalog/node-services/:node"],
    fields: NODE_SERVICE,
};

/// Every schema above.
pub static ALL: &[&Schema] = &[
    &AGENT_SERVICES,
    &AGENT_CHECKS,
    &HEALTH_CHECKS,
    &HEALTH_SERVICE,
    &CATALOG_SERVICE,
    &CATALOG_SERVICES,
    &CATALOG_NODES,
    &CATALOG_NODE_SERVICES,
    &SERVICE_DEFAULTS,
];

/// The schema of the endpoint `route` (as listed in [`Schema::endpoints`], e.g.
/// `/v1/health/service/:service`), if it supports filtering.
pub fn for_endpoint(route: &str) -> Option<&'static Schema> {
    ALL.iter().copied().find(|s| s.endpoints.contains(&route))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths() {
        let r = HEALTH_SERVICE.resolve(&["Service", "Meta", "env"]).unwrap();
        assert_eq!((r.ty, r.fan_out, r.via_map_key), (Str, 0, true));
        let r = HEALTH_SERVICE.resolve(&["Checks", "Status"]).unwrap();
        assert_eq!((r.ty, r.fan_out, r.via_map_key), (Str, 1, false));
        let r = HEALTH_SERVICE
            .resolve(&["Service", "Proxy", "Upstreams", "MeshGateway", "Mode"])
            .unwrap();
        assert_eq!((r.ty, r.fan_out), (Str, 1));
        let r = AGENT_SERVICES
            .resolve(&["TaggedAddresses", "lan", "Port"])
            .unwrap();
        assert_eq!((r.ty, r.via_map_key), (Int, true));
        assert_eq!(HEALTH_SERVICE.resolve(&["Foo"]), Err(1));
        assert_eq!(HEALTH_SERVICE.resolve(&["Service", "Foo", "Bar"]), Err(2));
        assert_eq!(
            HEALTH_SERVICE.resolve(&["Service", "Meta", "a", "b"]),
            Err(4)
        );
        assert_eq!(AGENT_SERVICES.resolve(&["Port", "x"]), Err(2));
        assert_eq!(
            AGENT_SERVICES.resolve(&["service"]),
            Err(1),
            "names are case-sensitive"
        );
        assert_eq!(AGENT_SERVICES.resolve::<&str>(&[]), Err(0));
    }

    #[test]
    fn lookup_by_endpoint() {
        assert_eq!(
            for_endpoint("/v1/health/state/:state"),
            Some(&HEALTH_CHECKS)
        );
        assert_eq!(
            for_endpoint("/v1/catalog/services"),
            Some(&CATALOG_SERVICES)
        );
        assert_eq!(for_endpoint("/v1/kv/:key"), None);
    }
}
