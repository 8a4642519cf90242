//! Consul config entries (`/v1/config`): the kinds Trellis keeps (`service-defaults`,
//! `proxy-defaults`, `service-intentions`), the strict decoding of a `PUT /v1/config` body as Consul's
//! `structs.DecodeConfigEntry` does it (keys in any case, the snake_case aliases Consul declares,
//! Go's weak typing, every unknown key refused with Consul's words), Consul's `Normalize` and
//! `Validate`, and the entry as Consul answers it (also its durable form).
//!
//! Consul decodes the body with mapstructure into its Go structs and answers them with
//! `encoding/json`. Here each kind is a schema of Go fields ([`Field`]: name, alias, type, and
//! whether `omitempty` leaves it out), so the decoded entry is already the answer: the fields in
//! Consul's order, structs Consul always prints (`TransparentProxy: {}`, `MeshGateway: {}`,
//! `Expose: {}`) present, empty `omitempty` ones absent. Values that configure Consul Connect in
//! depth (`Config`, `UpstreamConfig`, `RateLimits`, an extension's `Arguments`, ...) must be
//! JSON objects and are kept as sent.

use crate::intention::{Action, MAX_SOURCES, SOURCE_TYPE_CONSUL, check_name, precedence};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

pub const SERVICE_DEFAULTS: &str = "service-defaults";
pub const PROXY_DEFAULTS: &str = "proxy-defaults";
/// The only name a `proxy-defaults` entry may have.
pub const PROXY_CONFIG_GLOBAL: &str = "global";

/// Intentions (Consul 1.9+ keeps them as config entries: one per destination service, its
/// `Sources` the intentions to it). See [`crate::intention_entry`].
pub const SERVICE_INTENTIONS: &str = "service-intentions";

/// The kinds Trellis keeps.
pub const SUPPORTED_KINDS: [&str; 3] = [SERVICE_DEFAULTS, PROXY_DEFAULTS, SERVICE_INTENTIONS];

/// The other kinds a Consul (CE) server takes: they configure Connect (routing, gateways, the
/// mesh, peering) in ways Trellis does not build.
pub const CONNECT_KINDS: [&str; 15] = [
    "service-router",
    "service-splitter",
    "service-resolver",
    "ingress-gateway",
    "terminating-gateway",
    "mesh",
    "exported-services",
    "sameness-group",
    "api-gateway",
    "bound-api-gateway",
    "file-system-certificate",
    "inline-certificate",
    "http-route",
    "tcp-route",
    "jwt-provider",
];

/// What Trellis makes of a kind named in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindSupport {
    Supported,
    /// A kind Consul has and Trellis refuses to write (see [`CONNECT_KINDS`]).
    Connect,
    /// No such kind (Consul: `invalid config entry kind: X`).
    Unknown,
}

/// Whether Trellis keeps entries of `kind` (kinds are case-sensitive, as in Consul).
pub fn kind_support(kind: &str) -> KindSupport {
    if SUPPORTED_KINDS.contains(&kind) {
        KindSupport::Supported
    } else if CONNECT_KINDS.contains(&kind) {
        KindSupport::Connect
    } else {
        KindSupport::Unknown
    }
}

/// Why a config entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigEntryError {
    /// The body does not decode into an entry: Consul's 400 `Request decoding failed: ...`.
    #[error("Request decoding failed: {0}")]
    Decode(String),
    /// A kind Consul knows that Trellis does not keep (a 400 that says so).
    #[error(
        "config entry kind {0:?} is not supported by Trellis: it configures Consul Connect \
         (the service mesh), which Trellis does not build; supported kinds: service-defaults, \
         proxy-defaults, service-intentions"
    )]
    Unsupported(String),
    /// A field of a kind Trellis keeps that asks for something Trellis does not build (L7
    /// intention permissions, JWT requirements, peers): a 400 that says so, rather than an
    /// entry kept and silently not enforced.
    #[error("{0} is not supported by Trellis")]
    NotBuilt(String),
    /// The entry decoded but Consul's `Normalize` or `Validate` refuses it: Consul answers these
    /// with a 500 and the message as is.
    #[error("{0}")]
    Invalid(String),
}

/// Consul's words for a kind it does not have.
pub fn invalid_kind(kind: &str) -> String {
    format!("invalid config entry kind: {kind}")
}

/// A config entry as Consul answers it: `Kind`, `Name`, the kind's other fields in Consul's
/// order, `CreateIndex` and `ModifyIndex`. Also the durable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub kind: String,
    pub name: String,
    /// Every other field, with Consul's names, in Consul's order, empty `omitempty` fields left
    /// out.
    pub fields: Vec<(String, Value)>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl ConfigEntry {
    /// Whether two versions have the same content, whatever their indexes: writing what is
    /// there changes nothing and takes no index (Consul skips such an upsert).
    pub fn same_content(&self, other: &ConfigEntry) -> bool {
        self.kind == other.kind && self.name == other.name && self.fields == other.fields
    }

    /// A field's value, if the entry has it.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// The key a name is stored and looked up by: Consul indexes config entries by their lower-cased
/// kind and name, so `Web` and `web` are the same entry (answers keep the spelling written).
pub fn name_key(name: &str) -> Cow<'_, str> {
    if name.chars().any(char::is_uppercase) {
        Cow::Owned(name.to_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

impl Serialize for ConfigEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.fields.len() + 4))?;
        map.serialize_entry("Kind", &self.kind)?;
        map.serialize_entry("Name", &self.name)?;
        for (key, value) in &self.fields {
            map.serialize_entry(key, value)?;
        }
        map.serialize_entry("CreateIndex", &self.create_index)?;
        map.serialize_entry("ModifyIndex", &self.modify_index)?;
        map.end()
    }
}

/// Reads the form [`Serialize`] writes (the durable record), keeping the fields' order. It
/// trusts what it reads: requests go through [`decode_config_entry`].
impl<'de> Deserialize<'de> for ConfigEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;

        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = ConfigEntry;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a config entry object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ConfigEntry, A::Error> {
                let mut entry = ConfigEntry {
                    kind: String::new(),
                    name: String::new(),
                    fields: Vec::new(),
                    create_index: 0,
                    modify_index: 0,
                };
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "Kind" => entry.kind = map.next_value()?,
                        "Name" => entry.name = map.next_value()?,
                        "CreateIndex" => entry.create_index = map.next_value()?,
                        "ModifyIndex" => entry.modify_index = map.next_value()?,
                        _ => {
                            let value = map.next_value()?;
                            entry.fields.push((key, value));
                        }
                    }
                }
                if entry.kind.is_empty() {
                    return Err(serde::de::Error::missing_field("Kind"));
                }
                Ok(entry)
            }
        }

        d.deserialize_map(EntryVisitor)
    }
}

// --- Schemas: the Go structs, as mapstructure reads them and encoding/json prints them -------

/// A Go field type as Trellis decodes it.
#[derive(Debug, Clone, Copy)]
enum Ty {
    /// A string (of the named Go type, for messages: `structs.ProxyMode`, ...).
    Str(&'static str),
    /// Go `int`.
    Int,
    Bool,
    /// `map[string]string`.
    StrMap,
    /// A JSON object kept as sent: `map[string]interface{}` (`ptr: false`), or a pointer to a
    /// struct Trellis does not model (`ptr: true`: printed even when empty).
    Object {
        ptr: bool,
    },
    Struct(&'static [Field]),
    /// `*struct`: absent stays absent, `{}` is printed.
    Ptr(&'static [Field]),
    /// `[]T`.
    List(&'static Ty),
    /// Accepted and dropped (Consul's `Hash`, which Consul computes itself).
    Ignored,
}

/// How `encoding/json` prints a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emit {
    Always,
    OmitEmpty,
    /// `json:"-"`: decoded, never printed.
    Never,
}

#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    alias: Option<&'static str>,
    ty: Ty,
    emit: Emit,
}

const fn field(name: &'static str, ty: Ty, emit: Emit) -> Field {
    Field {
        name,
        alias: None,
        ty,
        emit,
    }
}

const fn aliased(name: &'static str, alias: &'static str, ty: Ty, emit: Emit) -> Field {
    Field {
        name,
        alias: Some(alias),
        ty,
        emit,
    }
}

const STRING: Ty = Ty::Str("string");

const TRANSPARENT_PROXY: &[Field] = &[
    aliased(
        "OutboundListenerPort",
        "outbound_listener_port",
        Ty::Int,
        Emit::OmitEmpty,
    ),
    aliased(
        "DialedDirectly",
        "dialed_directly",
        Ty::Bool,
        Emit::OmitEmpty,
    ),
];

const MESH_GATEWAY: &[Field] = &[field(
    "Mode",
    Ty::Str("structs.MeshGatewayMode"),
    Emit::OmitEmpty,
)];

const EXPOSE_PATH: &[Field] = &[
    aliased("ListenerPort", "listener_port", Ty::Int, Emit::OmitEmpty),
    field("Path", STRING, Emit::OmitEmpty),
    aliased("LocalPathPort", "local_path_port", Ty::Int, Emit::OmitEmpty),
    field("Protocol", STRING, Emit::OmitEmpty),
    aliased(
        "ParsedFromCheck",
        "parsed_from_check",
        Ty::Bool,
        Emit::OmitEmpty,
    ),
];

const EXPOSE: &[Field] = &[
    field("Checks", Ty::Bool, Emit::OmitEmpty),
    field("Paths", Ty::List(&Ty::Struct(EXPOSE_PATH)), Emit::OmitEmpty),
];

const DESTINATION: &[Field] = &[
    field("Addresses", Ty::List(&STRING), Emit::OmitEmpty),
    field("Port", Ty::Int, Emit::OmitEmpty),
];

const ENVOY_EXTENSION: &[Field] = &[
    field("Name", STRING, Emit::Always),
    field("Required", Ty::Bool, Emit::Always),
    field("Arguments", MAP_OF_ANY, Emit::Always),
    field("ConsulVersion", STRING, Emit::Always),
    field("EnvoyVersion", STRING, Emit::Always),
];

const ACCESS_LOGS: &[Field] = &[
    aliased("Enabled", "enabled", Ty::Bool, Emit::OmitEmpty),
    aliased(
        "DisableListenerLogs",
        "disable_listener_logs",
        Ty::Bool,
        Emit::OmitEmpty,
    ),
    aliased(
        "Type",
        "type",
        Ty::Str("structs.LogSinkType"),
        Emit::OmitEmpty,
    ),
    aliased("Path", "path", STRING, Emit::OmitEmpty),
    aliased("JSONFormat", "json_format", STRING, Emit::OmitEmpty),
    aliased("TextFormat", "text_format", STRING, Emit::OmitEmpty),
];

const EXTENSIONS: Ty = Ty::List(&Ty::Struct(ENVOY_EXTENSION));

/// `map[string]interface{}`, kept as sent.
const MAP_OF_ANY: Ty = Ty::Object { ptr: false };

/// A pointer to a struct Trellis keeps as sent (the Go type named for the reader).
const fn object_ptr(_go: &'static str) -> Ty {
    Ty::Object { ptr: true }
}

/// `structs.ServiceConfigEntry` (Consul 1.16+; `EnterpriseMeta` is empty in CE).
const SERVICE_DEFAULTS_FIELDS: &[Field] = &[
    field("Kind", STRING, Emit::Always),
    field("Name", STRING, Emit::Always),
    field("Protocol", STRING, Emit::Always),
    field("Mode", Ty::Str("structs.ProxyMode"), Emit::OmitEmpty),
    aliased(
        "TransparentProxy",
        "transparent_proxy",
        Ty::Struct(TRANSPARENT_PROXY),
        Emit::Always,
    ),
    aliased(
        "MutualTLSMode",
        "mutual_tls_mode",
        Ty::Str("structs.MutualTLSMode"),
        Emit::OmitEmpty,
    ),
    aliased(
        "MeshGateway",
        "mesh_gateway",
        Ty::Struct(MESH_GATEWAY),
        Emit::Always,
    ),
    field("Expose", Ty::Struct(EXPOSE), Emit::Always),
    aliased("ExternalSNI", "external_sni", STRING, Emit::OmitEmpty),
    aliased(
        "UpstreamConfig",
        "upstream_config",
        object_ptr("structs.UpstreamConfiguration"),
        Emit::OmitEmpty,
    ),
    field("Destination", Ty::Ptr(DESTINATION), Emit::OmitEmpty),
    aliased(
        "MaxInboundConnections",
        "max_inbound_connections",
        Ty::Int,
        Emit::OmitEmpty,
    ),
    aliased(
        "LocalConnectTimeoutMs",
        "local_connect_timeout_ms",
        Ty::Int,
        Emit::OmitEmpty,
    ),
    aliased(
        "LocalRequestTimeoutMs",
        "local_request_timeout_ms",
        Ty::Int,
        Emit::OmitEmpty,
    ),
    aliased(
        "BalanceInboundConnections",
        "balance_inbound_connections",
        STRING,
        Emit::OmitEmpty,
    ),
    aliased(
        "RateLimits",
        "rate_limits",
        object_ptr("structs.RateLimits"),
        Emit::OmitEmpty,
    ),
    aliased(
        "EnvoyExtensions",
        "envoy_extensions",
        EXTENSIONS,
        Emit::OmitEmpty,
    ),
    field("Meta", Ty::StrMap, Emit::OmitEmpty),
    field("Hash", Ty::Ignored, Emit::Never),
    // RaftIndex is embedded without `squash`: mapstructure takes it as a field of its own.
    field("RaftIndex", Ty::Ignored, Emit::Never),
];

/// `structs.ProxyConfigEntry` (Consul 1.16+).
const PROXY_DEFAULTS_FIELDS: &[Field] = &[
    field("Kind", STRING, Emit::Always),
    field("Name", STRING, Emit::Always),
    field("Config", MAP_OF_ANY, Emit::Always),
    // `json:"-"`: Consul derives it from `Config.protocol` and never prints it.
    field("Protocol", STRING, Emit::Never),
    field("Mode", Ty::Str("structs.ProxyMode"), Emit::OmitEmpty),
    aliased(
        "TransparentProxy",
        "transparent_proxy",
        Ty::Struct(TRANSPARENT_PROXY),
        Emit::Always,
    ),
    aliased(
        "MutualTLSMode",
        "mutual_tls_mode",
        Ty::Str("structs.MutualTLSMode"),
        Emit::OmitEmpty,
    ),
    aliased(
        "MeshGateway",
        "mesh_gateway",
        Ty::Struct(MESH_GATEWAY),
        Emit::Always,
    ),
    field("Expose", Ty::Struct(EXPOSE), Emit::Always),
    aliased(
        "AccessLogs",
        "access_logs",
        Ty::Struct(ACCESS_LOGS),
        Emit::Always,
    ),
    aliased(
        "EnvoyExtensions",
        "envoy_extensions",
        EXTENSIONS,
        Emit::OmitEmpty,
    ),
    aliased(
        "FailoverPolicy",
        "failover_policy",
        object_ptr("structs.ServiceResolverFailoverPolicy"),
        Emit::OmitEmpty,
    ),
    aliased(
        "PrioritizeByLocality",
        "prioritize_by_locality",
        object_ptr("structs.ServiceResolverPrioritizeByLocality"),
        Emit::OmitEmpty,
    ),
    field("Meta", Ty::StrMap, Emit::OmitEmpty),
    field("Hash", Ty::Ignored, Emit::Never),
    field("RaftIndex", Ty::Ignored, Emit::Never),
];

/// `structs.SourceIntention` (Consul 1.16+; `EnterpriseMeta` is empty in CE). `Permissions`
/// are decoded as objects only to be refused (L7 intentions are not built); the legacy times
/// are RFC 3339 strings, as Consul prints its `*time.Time`s.
const SOURCE_INTENTION: &[Field] = &[
    field("Name", STRING, Emit::Always),
    field(
        "Action",
        Ty::Str("structs.IntentionAction"),
        Emit::OmitEmpty,
    ),
    field(
        "Permissions",
        Ty::List(&object_ptr("structs.IntentionPermission")),
        Emit::OmitEmpty,
    ),
    field("Precedence", Ty::Int, Emit::Always),
    aliased("LegacyID", "legacy_id", STRING, Emit::OmitEmpty),
    field("Type", Ty::Str("structs.IntentionSourceType"), Emit::Always),
    field("Description", STRING, Emit::OmitEmpty),
    aliased("LegacyMeta", "legacy_meta", Ty::StrMap, Emit::OmitEmpty),
    aliased(
        "LegacyCreateTime",
        "legacy_create_time",
        Ty::Str("time.Time"),
        Emit::OmitEmpty,
    ),
    aliased(
        "LegacyUpdateTime",
        "legacy_update_time",
        Ty::Str("time.Time"),
        Emit::OmitEmpty,
    ),
    field("Peer", STRING, Emit::OmitEmpty),
    aliased("SamenessGroup", "sameness_group", STRING, Emit::OmitEmpty),
];

/// `structs.ServiceIntentionsConfigEntry` (Consul 1.16+): the entry's name is the destination.
const SERVICE_INTENTIONS_FIELDS: &[Field] = &[
    field("Kind", STRING, Emit::Always),
    field("Name", STRING, Emit::Always),
    field(
        "Sources",
        Ty::List(&Ty::Ptr(SOURCE_INTENTION)),
        Emit::Always,
    ),
    field(
        "JWT",
        object_ptr("structs.IntentionJWTRequirement"),
        Emit::OmitEmpty,
    ),
    field("Meta", Ty::StrMap, Emit::OmitEmpty),
    field("Hash", Ty::Ignored, Emit::Never),
    field("RaftIndex", Ty::Ignored, Emit::Never),
];

fn schema_of(kind: &str) -> Option<&'static [Field]> {
    match kind {
        SERVICE_DEFAULTS => Some(SERVICE_DEFAULTS_FIELDS),
        PROXY_DEFAULTS => Some(PROXY_DEFAULTS_FIELDS),
        SERVICE_INTENTIONS => Some(SERVICE_INTENTIONS_FIELDS),
        _ => None,
    }
}

// --- Decoding: mapstructure with WeaklyTypedInput, HookWeakDecodeFromSlice and
// HookTranslateKeys, as DecodeConfigEntry configures it ---------------------------------------

#[derive(Default)]
struct Decoder {
    /// mapstructure's decode errors (`'Name' expected type ...`).
    errors: Vec<String>,
    /// Keys no field took, with their path (`TransparentProxy.Foo`).
    unused: Vec<String>,
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

impl Decoder {
    /// Decodes `value` as `ty`; `None` leaves the field unset (a JSON `null`, as mapstructure
    /// sets nothing for a nil input, or a value that did not decode).
    fn decode(&mut self, name: &str, value: Value, ty: Ty) -> Option<Value> {
        // HookWeakDecodeFromSlice: a one-element list stands for its element, unless the target
        // is a list itself.
        let value = match (value, ty) {
            (Value::Array(mut items), ty) if items.len() == 1 && !matches!(ty, Ty::List(_)) => {
                items.pop().unwrap_or(Value::Null)
            }
            (value, _) => value,
        };
        if value.is_null() {
            return None;
        }
        match ty {
            Ty::Str(go) => self.string(name, value, go).map(Value::String),
            Ty::Int => self.int(name, value).map(Value::from),
            Ty::Bool => self.bool(name, value).map(Value::Bool),
            // Each value decodes as a field does (a null one is the zero value, "").
            Ty::StrMap => self.map(name, value, |d, key, v| {
                let path = format!("{name}[{key}]");
                d.decode(&path, v, STRING)
                    .or_else(|| Some(Value::String(String::new())))
            }),
            Ty::Object { .. } => self.map(name, value, |_, _, v| Some(v)),
            Ty::Struct(fields) | Ty::Ptr(fields) => match value {
                Value::Object(map) => Some(Value::Object(
                    self.decode_struct(name, map, fields).into_iter().collect(),
                )),
                other => {
                    self.errors.push(format!(
                        "'{name}' expected a map, got '{}'",
                        go_kind(&other)
                    ));
                    None
                }
            },
            Ty::List(elem) => {
                let items = match value {
                    Value::Array(items) => items,
                    // Weak typing: an empty map is an empty list, anything else a list of one.
                    Value::Object(map) if map.is_empty() => Vec::new(),
                    other => vec![other],
                };
                let decoded = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let path = format!("{name}[{i}]");
                        self.decode(&path, item, *elem)
                            .unwrap_or_else(|| zero_value(*elem))
                    })
                    .collect();
                Some(Value::Array(decoded))
            }
            Ty::Ignored => None,
        }
    }

    /// A struct from a map: keys translated from their aliases, matched to fields exactly or
    /// without regard to case, the rest reported as unused. Answers the printed fields in order.
    fn decode_struct(
        &mut self,
        name: &str,
        map: Map<String, Value>,
        fields: &'static [Field],
    ) -> Vec<(String, Value)> {
        let mut source: Vec<(String, Value)> = map.into_iter().collect();
        translate_aliases(&mut source, fields);
        let mut out = Vec::new();
        for f in fields {
            let position = source
                .iter()
                .position(|(k, _)| k == f.name)
                .or_else(|| source.iter().position(|(k, _)| same_fold(k, f.name)));
            let decoded = match position {
                Some(pos) => {
                    let (_, value) = source.remove(pos);
                    self.decode(&join(name, f.name), value, f.ty)
                }
                None => None,
            };
            let printed = match (f.emit, decoded) {
                (Emit::Never, _) => None,
                (Emit::Always, None) => Some(zero_value(f.ty)),
                (Emit::Always, Some(v)) => Some(v),
                (Emit::OmitEmpty, Some(v)) if !is_empty(f.ty, &v) => Some(v),
                (Emit::OmitEmpty, _) => None,
            };
            if let Some(value) = printed {
                out.push((f.name.to_owned(), value));
            }
        }
        self.unused
            .extend(source.into_iter().map(|(key, _)| join(name, &key)));
        out
    }

    /// A map (`map[string]string` or an object kept as sent). Weak typing reads a list as its
    /// elements' maps merged (an empty list as an empty map), stopping at the first element
    /// that is not a map, as mapstructure's `decodeMapFromSlice` does.
    fn map(
        &mut self,
        name: &str,
        value: Value,
        mut each: impl FnMut(&mut Self, &str, Value) -> Option<Value>,
    ) -> Option<Value> {
        let maps = match value {
            Value::Object(map) => vec![map],
            Value::Array(items) => {
                let mut maps = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    let item = match item {
                        Value::Array(mut one) if one.len() == 1 => one.pop().unwrap_or_default(),
                        other => other,
                    };
                    match item {
                        Value::Null => {}
                        Value::Object(map) => maps.push(map),
                        other => {
                            self.errors.push(format!(
                                "'{name}[{i}]' expected a map, got '{}'",
                                go_kind(&other)
                            ));
                            return None;
                        }
                    }
                }
                maps
            }
            other => {
                self.errors.push(format!(
                    "'{name}' expected a map, got '{}'",
                    go_kind(&other)
                ));
                return None;
            }
        };
        let mut out = Map::new();
        for map in maps {
            for (key, v) in map {
                if let Some(decoded) = each(self, &key, v) {
                    out.insert(key, decoded);
                }
            }
        }
        Some(Value::Object(out))
    }

    fn unconvertible(&mut self, name: &str, go: &str, value: &Value) {
        self.errors.push(format!(
            "'{name}' expected type '{go}', got unconvertible type '{}', value: '{}'",
            go_type(value),
            go_format(value)
        ));
    }

    /// mapstructure's `decodeString` with weak typing.
    fn string(&mut self, name: &str, value: Value, go: &str) -> Option<String> {
        match value {
            Value::String(s) => Some(s),
            Value::Bool(b) => Some(if b { "1" } else { "0" }.to_owned()),
            Value::Number(n) => Some(format_number(&n)),
            other => {
                self.unconvertible(name, go, &other);
                None
            }
        }
    }

    /// mapstructure's `decodeInt` with weak typing (JSON numbers are Go `float64`s, truncated).
    fn int(&mut self, name: &str, value: Value) -> Option<i64> {
        match value {
            Value::Number(n) => Some(
                n.as_i64()
                    .or_else(|| n.as_u64().map(|u| u as i64))
                    .unwrap_or_else(|| n.as_f64().unwrap_or(0.0) as i64),
            ),
            Value::Bool(b) => Some(i64::from(b)),
            Value::String(s) => match parse_go_int(&s) {
                Ok(i) => Some(i),
                Err(reason) => {
                    self.errors.push(format!(
                        "cannot parse '{name}' as int: strconv.ParseInt: parsing {}: {reason}",
                        go_quote(&s)
                    ));
                    None
                }
            },
            other => {
                self.unconvertible(name, "int", &other);
                None
            }
        }
    }

    /// mapstructure's `decodeBool` with weak typing.
    fn bool(&mut self, name: &str, value: Value) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(b),
            Value::Number(n) => Some(n.as_f64().is_some_and(|f| f != 0.0)),
            Value::String(s) => match s.as_str() {
                "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
                "0" | "f" | "F" | "FALSE" | "false" | "False" | "" => Some(false),
                _ => {
                    self.errors.push(format!(
                        "cannot parse '{name}' as bool: strconv.ParseBool: parsing {}: invalid syntax",
                        go_quote(&s)
                    ));
                    None
                }
            },
            other => {
                self.unconvertible(name, "bool", &other);
                None
            }
        }
    }
}

/// `HookTranslateKeys`: a key that is a field's alias (compared lower-cased) is renamed to the
/// field's lower-cased name, unless that key is there already (then the alias is dropped).
fn translate_aliases(source: &mut Vec<(String, Value)>, fields: &[Field]) {
    for f in fields {
        let Some(alias) = f.alias else { continue };
        let canonical = f.name.to_lowercase();
        let mut renamed = Vec::new();
        let mut i = 0;
        while i < source.len() {
            if source[i].0.to_lowercase() == alias {
                renamed.push(source.remove(i).1);
            } else {
                i += 1;
            }
        }
        for value in renamed {
            if !source.iter().any(|(k, _)| *k == canonical) {
                source.push((canonical.clone(), value));
            }
        }
    }
}

/// Go's `strings.EqualFold`, which mapstructure matches field names with.
fn same_fold(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

/// A field's Go zero value as `encoding/json` prints it.
fn zero_value(ty: Ty) -> Value {
    match ty {
        Ty::Str(_) => Value::String(String::new()),
        Ty::Int => Value::from(0),
        Ty::Bool => Value::Bool(false),
        Ty::Struct(fields) => Value::Object(
            fields
                .iter()
                .filter(|f| f.emit == Emit::Always)
                .map(|f| (f.name.to_owned(), zero_value(f.ty)))
                .collect(),
        ),
        Ty::StrMap | Ty::Object { .. } | Ty::Ptr(_) | Ty::List(_) | Ty::Ignored => Value::Null,
    }
}

/// Whether `omitempty` leaves a value out: false, 0, "", a nil pointer, an empty map, list or
/// string. A struct is never empty.
fn is_empty(ty: Ty, value: &Value) -> bool {
    match (ty, value) {
        (_, Value::Null) => true,
        (Ty::Struct(_) | Ty::Ptr(_) | Ty::Object { ptr: true, .. }, _) => false,
        (_, Value::Bool(b)) => !b,
        (_, Value::Number(n)) => n.as_f64() == Some(0.0),
        (_, Value::String(s)) => s.is_empty(),
        (_, Value::Array(items)) => items.is_empty(),
        (_, Value::Object(map)) => map.is_empty(),
    }
}

/// A number as Go's `strconv.FormatFloat(f, 'f', -1, 64)` writes it (weak string decoding).
fn format_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        n.as_f64().map(|f| f.to_string()).unwrap_or_default()
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)` ("" reads as 0, as mapstructure has it).
fn parse_go_int(s: &str) -> Result<i64, &'static str> {
    if s.is_empty() {
        return Ok(0);
    }
    let (negative, digits) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, body, prefixed) = if let Some(rest) = lower.strip_prefix("0x") {
        (16, rest.to_owned(), true)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (2, rest.to_owned(), true)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (8, rest.to_owned(), true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_owned(), true)
    } else {
        (10, lower, false)
    };
    // Underscores may separate digits only after a base prefix.
    let body = if prefixed {
        body.replace('_', "")
    } else {
        body
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return Err("invalid syntax");
    }
    let magnitude = u128::from_str_radix(&body, radix).map_err(|_| "value out of range")?;
    let value = if negative {
        -(i128::try_from(magnitude).map_err(|_| "value out of range")?)
    } else {
        i128::try_from(magnitude).map_err(|_| "value out of range")?
    };
    i64::try_from(value).map_err(|_| "value out of range")
}

/// Go's `%q` of a string, near enough (Rust's escapes agree for the usual characters).
fn go_quote(s: &str) -> String {
    format!("{s:?}")
}

/// The Go type `encoding/json` decodes a JSON value into.
fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// The `reflect.Kind` of that Go value.
fn go_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "invalid",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

/// Go's `%v` of that Go value.
fn go_format(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f != 0.0 && (f.abs() >= 1e21 || f.abs() < 1e-4) {
                // %v switches to %e notation there, with a signed two-digit exponent.
                let text = format!("{f:e}");
                match text.split_once('e') {
                    Some((mantissa, exp)) => {
                        let (sign, digits) = match exp.strip_prefix('-') {
                            Some(d) => ('-', d),
                            None => ('+', exp),
                        };
                        format!("{mantissa}e{sign}{digits:0>2}")
                    }
                    None => text,
                }
            } else {
                format_number(n)
            }
        }
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_format).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}:{}", go_format(v)))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

/// go-multierror's text for a list of errors.
pub(crate) fn multierror(errors: &[String]) -> String {
    match errors {
        [one] => format!("1 error occurred:\n\t* {one}\n\n"),
        many => {
            let points: Vec<String> = many.iter().map(|e| format!("* {e}")).collect();
            format!(
                "{} errors occurred:\n\t{}\n\n",
                many.len(),
                points.join("\n\t")
            )
        }
    }
}

/// mapstructure's `Error` text: the errors sorted, one per line.
fn mapstructure_error(errors: &mut [String]) -> String {
    errors.sort();
    let points: Vec<String> = errors.iter().map(|e| format!("* {e}")).collect();
    format!(
        "{} error(s) decoding:\n\n{}",
        errors.len(),
        points.join("\n")
    )
}

/// Consul CE's `validateUnusedKeys`: the indexes and `Kind` may be sent and are ignored; any
/// other key nothing took is an error.
fn unused_keys_error(mut unused: Vec<String>) -> Option<String> {
    unused.sort();
    let errors: Vec<String> = unused
        .into_iter()
        .filter(|k| !matches!(k.as_str(), "CreateIndex" | "ModifyIndex" | "kind" | "Kind"))
        .map(|k| {
            let lower = k.to_lowercase();
            if lower.ends_with("namespace") {
                format!("invalid config key {k:?}, namespaces are a consul enterprise feature")
            } else if lower.contains("jwt") {
                format!(
                    "invalid config key {k:?}, api-gateway jwt validation is a consul enterprise feature"
                )
            } else {
                format!("invalid config key {k:?}")
            }
        })
        .collect();
    (!errors.is_empty()).then(|| multierror(&errors))
}

/// Decodes a `PUT /v1/config` body (already parsed as JSON) into a normalised, validated entry,
/// its indexes left at 0 for the catalog to number. Consul's checks, in Consul's order:
/// the kind (`Kind`, else `kind`), the decode (types, unknown keys), then `Normalize` (the kind
/// set, `Protocol` lower-cased, a `proxy-defaults` name made `global`) and `Validate`.
pub fn decode_config_entry(raw: Value) -> Result<ConfigEntry, ConfigEntryError> {
    decode(raw, false)
}

/// Decodes a `service-intentions` entry the legacy (ID-based) intention endpoints built: as
/// Consul's `LegacyNormalize`/`LegacyValidate`, its sources keep (and must have) their
/// `LegacyID`, times and `LegacyMeta`.
pub fn decode_legacy_intentions(raw: Value) -> Result<ConfigEntry, ConfigEntryError> {
    let entry = decode(raw, true)?;
    if entry.kind != SERVICE_INTENTIONS {
        return Err(ConfigEntryError::Decode(invalid_kind(&entry.kind)));
    }
    Ok(entry)
}

fn decode(raw: Value, legacy: bool) -> Result<ConfigEntry, ConfigEntryError> {
    let Value::Object(map) = raw else {
        return Err(ConfigEntryError::Decode(match raw {
            // `null` decodes into a nil map, which has no kind.
            Value::Null => "Payload does not contain a kind/Kind key at the top level".to_owned(),
            other => format!("'' expected a map, got '{}'", go_kind(&other)),
        }));
    };
    let kind = match map.get("Kind").or_else(|| map.get("kind")) {
        None => {
            return Err(ConfigEntryError::Decode(
                "Payload does not contain a kind/Kind key at the top level".into(),
            ));
        }
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => {
            return Err(ConfigEntryError::Decode(
                "Kind value in payload is not a string".into(),
            ));
        }
    };
    let fields = match (kind_support(&kind), schema_of(&kind)) {
        (KindSupport::Supported, Some(fields)) => fields,
        (KindSupport::Connect, _) => return Err(ConfigEntryError::Unsupported(kind)),
        _ => return Err(ConfigEntryError::Decode(invalid_kind(&kind))),
    };
    let mut decoder = Decoder::default();
    let mut decoded = decoder.decode_struct("", map, fields);
    if !decoder.errors.is_empty() {
        return Err(ConfigEntryError::Decode(mapstructure_error(
            &mut decoder.errors,
        )));
    }
    if let Some(error) = unused_keys_error(decoder.unused) {
        return Err(ConfigEntryError::Decode(error.trim_end().to_owned()));
    }
    let name = take_string(&mut decoded, "Name");
    take_string(&mut decoded, "Kind");
    let mut entry = ConfigEntry {
        name,
        kind,
        fields: decoded,
        create_index: 0,
        modify_index: 0,
    };
    normalize(&mut entry, legacy)?;
    validate(&entry, legacy)?;
    Ok(entry)
}

fn take_string(fields: &mut Vec<(String, Value)>, name: &str) -> String {
    match fields.iter().position(|(k, _)| k == name) {
        Some(pos) => match fields.remove(pos).1 {
            Value::String(s) => s,
            _ => String::new(),
        },
        None => String::new(),
    }
}

/// The name an entry of `kind` is stored under, as Consul's `Normalize` makes it: a
/// `proxy-defaults` entry is always `global` (an empty name becomes it, any other is refused).
/// Also applied to the name of a `DELETE`, as Consul normalises the entry it deletes.
pub fn normalize_name(kind: &str, name: &str) -> Result<String, ConfigEntryError> {
    if kind == PROXY_DEFAULTS {
        if !name.is_empty() && name != PROXY_CONFIG_GLOBAL {
            return Err(ConfigEntryError::Invalid(format!(
                "invalid name ({name:?}), only {PROXY_CONFIG_GLOBAL:?} is supported"
            )));
        }
        return Ok(PROXY_CONFIG_GLOBAL.to_owned());
    }
    Ok(name.to_owned())
}

/// Consul's `Normalize`: the name (see [`normalize_name`]); for `service-defaults`,
/// `Protocol` in lower case; for `service-intentions`, the sources' types, precedences and
/// order (and, unless `legacy`, their legacy fields dropped).
fn normalize(entry: &mut ConfigEntry, legacy: bool) -> Result<(), ConfigEntryError> {
    entry.name = normalize_name(&entry.kind, &entry.name)?;
    if entry.kind == SERVICE_INTENTIONS {
        let destination = entry.name.clone();
        for (key, value) in &mut entry.fields {
            if key == "Sources"
                && let Value::Array(sources) = value
            {
                normalize_intention_sources(&destination, sources, legacy);
            }
        }
    }
    if entry.kind == SERVICE_DEFAULTS {
        for (key, value) in &mut entry.fields {
            if key == "Protocol"
                && let Value::String(protocol) = value
            {
                *protocol = protocol.to_lowercase();
            }
        }
    }
    Ok(())
}

/// Consul's limits on `Meta` (`metaMaxKeyPairs`, `metaKeyMaxLength`, `metaValueMaxLength`).
pub(crate) const META_MAX_PAIRS: usize = 64;
pub(crate) const META_KEY_MAX: usize = 128;
pub(crate) const META_VALUE_MAX: usize = 512;

fn meta_errors(entry: &ConfigEntry) -> Vec<String> {
    let Some(Value::Object(meta)) = entry.field("Meta") else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    if meta.len() > META_MAX_PAIRS {
        errors.push(format!(
            "Meta exceeds maximum element count {META_MAX_PAIRS}"
        ));
    }
    for (key, value) in meta {
        if key.len() > META_KEY_MAX {
            errors.push(format!(
                "Meta key {key:?} exceeds maximum length {META_KEY_MAX}"
            ));
        }
        if value.as_str().is_some_and(|v| v.len() > META_VALUE_MAX) {
            errors.push(format!(
                "Meta value for key {key:?} exceeds maximum length {META_VALUE_MAX}"
            ));
        }
    }
    errors
}

fn str_field<'a>(entry: &'a ConfigEntry, name: &str) -> &'a str {
    entry
        .field(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn mutual_tls_error(entry: &ConfigEntry) -> Option<String> {
    let mode = str_field(entry, "MutualTLSMode");
    (!matches!(mode, "" | "strict" | "permissive")).then(|| {
        format!(
            "Invalid MutualTLSMode {mode:?}. Must be one of \"\", \"strict\", or \"permissive\"."
        )
    })
}

/// Consul's `Validate` (its checks of fields Trellis keeps as sent, such as upstream overrides,
/// rate limits and Envoy extensions, are not made).
fn validate(entry: &ConfigEntry, legacy: bool) -> Result<(), ConfigEntryError> {
    let invalid = |text: String| Err(ConfigEntryError::Invalid(text.trim_end().to_owned()));
    match entry.kind.as_str() {
        SERVICE_INTENTIONS => validate_intentions(
            &entry.name,
            entry
                .field("Sources")
                .and_then(Value::as_array)
                .map_or(&[], Vec::as_slice),
            entry.field("JWT").is_some(),
            meta_errors(entry),
            legacy,
        ),
        SERVICE_DEFAULTS => {
            if entry.name.is_empty() {
                return invalid("Name is required".into());
            }
            if entry.name == "*" {
                return invalid(
                    "service-defaults name must be the name of a service, and not a wildcard"
                        .into(),
                );
            }
            let mut errors = meta_errors(entry);
            let balance = str_field(entry, "BalanceInboundConnections");
            if !matches!(balance, "" | "exact_balance") {
                errors.push(format!(
                    "invalid value for balance_inbound_connections: {balance}"
                ));
            }
            if entry.field("UpstreamConfig").is_some() && entry.field("Destination").is_some() {
                errors.push(
                    "UpstreamConfig and Destination are mutually exclusive for service defaults"
                        .into(),
                );
                return invalid(multierror(&errors));
            }
            if let Some(destination) = entry.field("Destination") {
                errors.extend(destination_errors(destination));
            }
            if let Some(error) = mutual_tls_error(entry) {
                return invalid(error);
            }
            if !errors.is_empty() {
                return invalid(multierror(&errors));
            }
            Ok(())
        }
        PROXY_DEFAULTS => {
            if let Some(Value::Object(logs)) = entry.field("AccessLogs")
                && let Some(error) = access_logs_error(logs)
            {
                return invalid(error);
            }
            let meta = meta_errors(entry);
            if !meta.is_empty() {
                return invalid(multierror(&meta));
            }
            if let Some(Value::Object(config)) = entry.field("Config")
                && let Some(Value::String(dir)) = config.get("envoy_hcp_metrics_bind_socket_dir")
                && dir.len() > 70
            {
                return invalid(format!(
                    "Config: envoy_hcp_metrics_bind_socket_dir length {} exceeds max 70",
                    dir.len()
                ));
            }
            if let Some(error) = mutual_tls_error(entry) {
                return invalid(error);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `service-intentions` `Normalize` for one entry's sources: the source type defaults to
/// `consul`, each precedence is computed, legacy fields are dropped unless this is a legacy
/// write, and sources are ordered by precedence (stable).
fn normalize_intention_sources(destination: &str, sources: &mut [Value], legacy: bool) {
    for source in sources.iter_mut() {
        let Value::Object(src) = source else { continue };
        if src
            .get("Type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            src.insert("Type".into(), Value::from(SOURCE_TYPE_CONSUL));
        }
        let name = src.get("Name").and_then(Value::as_str).unwrap_or_default();
        let p = precedence(name, destination);
        src.insert("Precedence".into(), Value::from(p));
        if !legacy {
            // LegacyMeta stays, so that validation can refuse it instead of losing it.
            for key in ["LegacyID", "LegacyCreateTime", "LegacyUpdateTime"] {
                src.remove(key);
            }
        }
    }
    let key = |v: &Value| v.get("Precedence").and_then(Value::as_u64).unwrap_or(0);
    sources.sort_by_key(|s| std::cmp::Reverse(key(s)));
}

/// `service-intentions` `Validate`, in Consul's order; what Trellis does not build (L7
/// permissions, JWT, peers, sameness groups) is refused as such.
fn validate_intentions(
    name: &str,
    sources: &[Value],
    jwt: bool,
    meta_errors: Vec<String>,
    legacy: bool,
) -> Result<(), ConfigEntryError> {
    let invalid = |m: String| Err(ConfigEntryError::Invalid(m));
    let not_built = |m: &str| Err(ConfigEntryError::NotBuilt(m.to_owned()));
    if name.is_empty() {
        return invalid("Name is required".into());
    }
    if let Err(e) = check_name(name) {
        return invalid(format!("Name: {e}"));
    }
    if jwt {
        return not_built("JWT (intention JWT requirements)");
    }
    if legacy {
        // Legacy writes never carry entry Meta (the body is built without it).
    } else if !meta_errors.is_empty() {
        return invalid(multierror(&meta_errors).trim_end().to_owned());
    }
    if sources.is_empty() {
        return invalid("At least one source is required".into());
    }
    if sources.len() > MAX_SOURCES {
        return invalid(format!(
            "Sources: at most {MAX_SOURCES} sources per destination"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, source) in sources.iter().enumerate() {
        let empty = Map::new();
        let src = source.as_object().unwrap_or(&empty);
        let text = |key: &str| src.get(key).and_then(Value::as_str).unwrap_or_default();
        let src_name = text("Name");
        if src_name.is_empty() {
            return invalid(format!("Sources[{i}].Name is required"));
        }
        if let Err(e) = check_name(src_name) {
            return invalid(format!("Sources[{i}].Name: {e}"));
        }
        if !text("Peer").is_empty() {
            return not_built(&format!("Sources[{i}].Peer (cluster peering)"));
        }
        if !text("SamenessGroup").is_empty() {
            return not_built(&format!("Sources[{i}].SamenessGroup"));
        }
        if text("Description").len() > META_VALUE_MAX {
            return invalid(format!(
                "Sources[{i}].Description exceeds maximum length {META_VALUE_MAX}"
            ));
        }
        let legacy_meta = src.get("LegacyMeta").and_then(Value::as_object);
        if legacy {
            let meta = legacy_meta.cloned().unwrap_or_default();
            if meta.len() > META_MAX_PAIRS {
                return invalid(format!(
                    "Sources[{i}].Meta exceeds maximum element count {META_MAX_PAIRS}"
                ));
            }
            for (key, value) in &meta {
                if key.len() > META_KEY_MAX {
                    return invalid(format!(
                        "Sources[{i}].Meta key {key:?} exceeds maximum length {META_KEY_MAX}"
                    ));
                }
                if value.as_str().is_some_and(|v| v.len() > META_VALUE_MAX) {
                    return invalid(format!(
                        "Sources[{i}].Meta value for key {key:?} exceeds maximum length {META_VALUE_MAX}"
                    ));
                }
            }
            for key in ["LegacyCreateTime", "LegacyUpdateTime"] {
                if text(key).is_empty() {
                    return invalid(format!("Sources[{i}].{key} must be set"));
                }
            }
            if text("LegacyID").is_empty() {
                return invalid(format!("Sources[{i}].LegacyID must be set"));
            }
        } else if legacy_meta.is_some_and(|m| !m.is_empty()) {
            return invalid(format!("Sources[{i}].LegacyMeta must be omitted"));
        }
        let permissions = src
            .get("Permissions")
            .and_then(Value::as_array)
            .is_some_and(|p| !p.is_empty());
        if permissions {
            return not_built(&format!(
                "Sources[{i}].Permissions (L7 intentions: only allow/deny actions are enforced)"
            ));
        }
        if Action::parse(text("Action")).is_none() {
            return invalid(format!(
                "Sources[{i}].Action must be set to 'allow' or 'deny'"
            ));
        }
        if text("Type") != SOURCE_TYPE_CONSUL {
            return invalid(format!("Sources[{i}].Type must be set to 'consul'"));
        }
        // Consul CE's `ServiceName.String()` is the bare name.
        if !seen.insert(src_name.to_owned()) {
            return invalid(format!("Sources[{i}] defines {src_name:?} more than once"));
        }
    }
    Ok(())
}

fn destination_errors(destination: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let addresses: Vec<&str> = destination
        .get("Addresses")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if addresses.is_empty() {
        errors.push("Destination must contain at least one valid address".to_owned());
    }
    let mut seen = std::collections::BTreeSet::new();
    for address in addresses {
        if !seen.insert(address) {
            errors.push(format!("Duplicate address '{address}' is not allowed"));
            continue;
        }
        let valid = address.parse::<std::net::IpAddr>().is_ok()
            || (is_domain_name(address) && !address.contains('*'));
        if !valid {
            errors.push(format!(
                "Destination address '{address}' is invalid Could not validate address {address} as an IP or Hostname"
            ));
        }
    }
    let port = destination.get("Port").and_then(Value::as_i64).unwrap_or(0);
    if !(1..=65535).contains(&port) {
        errors.push(format!("Invalid Port number {port}"));
    }
    errors
}

/// miekg/dns `IsDomainName`, which Consul checks destination addresses with: labels of 1 to 63
/// bytes (a trailing dot allowed), at most 255 bytes on the wire.
fn is_domain_name(name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    if name == "." {
        return true;
    }
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = trimmed.split('.').collect();
    let wire: usize = labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    wire <= 255 && labels.iter().all(|l| !l.is_empty() && l.len() <= 63)
}

/// `AccessLogsConfig.Validate`.
fn access_logs_error(logs: &Map<String, Value>) -> Option<String> {
    let text = |key: &str| logs.get(key).and_then(Value::as_str).unwrap_or_default();
    let (kind, path) = (text("Type"), text("Path"));
    match kind {
        "" | "stderr" | "stdout" => {}
        "file" if path.is_empty() => {
            return Some("path must be specified when using file type access logs".into());
        }
        "file" => {}
        other => return Some(format!("invalid access log type: {other}")),
    }
    let (json_format, text_format) = (text("JSONFormat"), text("TextFormat"));
    if !json_format.is_empty() && !text_format.is_empty() {
        return Some("cannot specify both access log JSONFormat and TextFormat".into());
    }
    if kind != "file" && !path.is_empty() {
        return Some("path is only valid for file type access logs".into());
    }
    if !json_format.is_empty()
        && let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(json_format)
    {
        return Some(format!("invalid access log json for JSON format: {e}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(body: Value) -> Result<ConfigEntry, ConfigEntryError> {
        decode_config_entry(body)
    }

    fn rendered(entry: &ConfigEntry) -> Value {
        serde_json::to_value(entry).unwrap()
    }

    #[test]
    fn service_defaults_as_consul_answers_it() {
        let entry =
            decode(json!({"Kind": "service-defaults", "Name": "web", "Protocol": "HTTP"})).unwrap();
        assert_eq!(
            rendered(&entry),
            json!({
                "Kind": "service-defaults", "Name": "web", "Protocol": "http",
                "TransparentProxy": {}, "MeshGateway": {}, "Expose": {},
                "CreateIndex": 0, "ModifyIndex": 0
            })
        );
        // Consul's field order, not the alphabet's.
        let keys: Vec<&str> = entry.fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["Protocol", "TransparentProxy", "MeshGateway", "Expose"]
        );
    }

    #[test]
    fn keys_in_any_case_and_snake_case_aliases() {
        let entry = decode(json!({
            "kind": "service-defaults", "name": "api", "protocol": "grpc",
            "transparent_proxy": {"outbound_listener_port": 15001, "DialedDirectly": true},
            "mesh_gateway": {"mode": "local"},
            "expose": {"checks": true, "paths": [{"listener_port": 21500, "path": "/health"}]},
            "max_inbound_connections": "10",
            "meta": {"team": "core", "tier": 1, "none": null},
            "CreateIndex": 99, "ModifyIndex": 99
        }))
        .unwrap();
        assert_eq!(entry.name, "api");
        let v = rendered(&entry);
        assert_eq!(
            v["TransparentProxy"],
            json!({"OutboundListenerPort": 15001, "DialedDirectly": true})
        );
        assert_eq!(v["MeshGateway"], json!({"Mode": "local"}));
        assert_eq!(
            v["Expose"],
            json!({"Checks": true, "Paths": [{"ListenerPort": 21500, "Path": "/health"}]})
        );
        assert_eq!(v["MaxInboundConnections"], 10, "weakly typed, as Consul");
        assert_eq!(v["Meta"], json!({"team": "core", "tier": "1", "none": ""}));
        assert_eq!(v["CreateIndex"], 0, "indexes in the body are ignored");
    }

    #[test]
    fn proxy_defaults_is_always_global() {
        let entry =
            decode(json!({"Kind": "proxy-defaults", "Config": {"protocol": "http"}})).unwrap();
        assert_eq!(entry.name, "global");
        assert_eq!(
            rendered(&entry),
            json!({
                "Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"},
                "TransparentProxy": {}, "MeshGateway": {}, "Expose": {}, "AccessLogs": {},
                "CreateIndex": 0, "ModifyIndex": 0
            })
        );
        let bare = decode(json!({"Kind": "proxy-defaults", "Name": "global"})).unwrap();
        assert_eq!(bare.field("Config"), Some(&Value::Null));
        assert_eq!(
            decode(json!({"Kind": "proxy-defaults", "Name": "web"})).unwrap_err(),
            ConfigEntryError::Invalid(r#"invalid name ("web"), only "global" is supported"#.into())
        );
    }

    #[test]
    fn kinds() {
        let missing = decode(json!({"Name": "web"})).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "Request decoding failed: Payload does not contain a kind/Kind key at the top level"
        );
        assert_eq!(
            decode(json!({"Kind": 5})).unwrap_err().to_string(),
            "Request decoding failed: Kind value in payload is not a string"
        );
        assert_eq!(
            decode(json!({"Kind": "nope", "Name": "x"}))
                .unwrap_err()
                .to_string(),
            "Request decoding failed: invalid config entry kind: nope"
        );
        assert!(matches!(
            decode(json!({"Kind": "service-router", "Name": "x"})).unwrap_err(),
            ConfigEntryError::Unsupported(k) if k == "service-router"
        ));
        assert!(
            decode(json!({"Kind": "Service-Defaults", "Name": "x"})).is_err(),
            "kinds are case-sensitive"
        );
        assert_eq!(kind_support("mesh"), KindSupport::Connect);
    }

    #[test]
    fn unknown_keys_are_refused_with_consuls_words() {
        let e = decode(json!({"Kind": "service-defaults", "Name": "web", "Foo": 1})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Request decoding failed: 1 error occurred:\n\t* invalid config key \"Foo\""
        );
        let e = decode(json!({
            "Kind": "service-defaults", "Name": "web",
            "TransparentProxy": {"Bar": true}, "Namespace": "ns", "Partition": "p"
        }))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Request decoding failed: 3 errors occurred:\n\
             \t* invalid config key \"Namespace\", namespaces are a consul enterprise feature\n\
             \t* invalid config key \"Partition\"\n\
             \t* invalid config key \"TransparentProxy.Bar\""
        );
    }

    #[test]
    fn wrong_types_are_refused_with_mapstructures_words() {
        let e = decode(json!({
            "Kind": "service-defaults", "Name": "web",
            "Protocol": {"a": 1}, "MaxInboundConnections": "lots",
            "TransparentProxy": "yes", "Expose": {"Checks": "maybe"}, "Meta": ["x", "y"]
        }))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Request decoding failed: 5 error(s) decoding:\n\n\
             * 'Meta[0]' expected a map, got 'string'\n\
             * 'Protocol' expected type 'string', got unconvertible type 'map[string]interface {}', value: 'map[a:1]'\n\
             * 'TransparentProxy' expected a map, got 'string'\n\
             * cannot parse 'Expose.Checks' as bool: strconv.ParseBool: parsing \"maybe\": invalid syntax\n\
             * cannot parse 'MaxInboundConnections' as int: strconv.ParseInt: parsing \"lots\": invalid syntax"
        );
        // A one-element list stands for its element (HookWeakDecodeFromSlice).
        let entry = decode(json!({
            "Kind": "service-defaults", "Name": ["web"], "TransparentProxy": [{"DialedDirectly": 1}]
        }))
        .unwrap();
        assert_eq!(entry.name, "web");
        assert_eq!(
            entry.field("TransparentProxy"),
            Some(&json!({"DialedDirectly": true}))
        );
    }

    #[test]
    fn validation_is_consuls() {
        let e = decode(json!({"Kind": "service-defaults"})).unwrap_err();
        assert_eq!(e, ConfigEntryError::Invalid("Name is required".into()));
        let e = decode(json!({
            "Kind": "service-defaults", "Name": "ext",
            "Destination": {"Addresses": ["10.0.0.1", "10.0.0.1", "bad..name"], "Port": 0},
            "BalanceInboundConnections": "round_robin"
        }))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "4 errors occurred:\n\
             \t* invalid value for balance_inbound_connections: round_robin\n\
             \t* Duplicate address '10.0.0.1' is not allowed\n\
             \t* Destination address 'bad..name' is invalid Could not validate address bad..name as an IP or Hostname\n\
             \t* Invalid Port number 0"
        );
        let e = decode(json!({"Kind": "service-defaults", "Name": "w", "MutualTLSMode": "x"}))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"Invalid MutualTLSMode "x". Must be one of "", "strict", or "permissive"."#
        );
        let e = decode(json!({
            "Kind": "proxy-defaults", "AccessLogs": {"Enabled": true, "Type": "file"}
        }))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "path must be specified when using file type access logs"
        );
        assert!(
            decode(json!({
                "Kind": "service-defaults", "Name": "ext",
                "Destination": {"Addresses": ["api.example.com", "::1"], "Port": 443}
            }))
            .is_ok()
        );
    }

    #[test]
    fn service_intentions_as_consul_answers_them() {
        let entry = decode(json!({
            "Kind": "service-intentions", "Name": "db",
            "Sources": [
                {"Name": "*", "Action": "deny", "Precedence": 1},
                {"name": "web", "action": "allow", "legacy_id": "x", "Description": "ok"}
            ],
            "Meta": {"team": "core"}
        }))
        .unwrap();
        assert_eq!(
            rendered(&entry),
            json!({
                "Kind": "service-intentions", "Name": "db",
                "Sources": [
                    {"Name": "web", "Action": "allow", "Precedence": 9, "Type": "consul",
                     "Description": "ok"},
                    {"Name": "*", "Action": "deny", "Precedence": 8, "Type": "consul"}
                ],
                "Meta": {"team": "core"},
                "CreateIndex": 0, "ModifyIndex": 0
            }),
            "precedence computed, sorted, legacy fields dropped, the type defaulted"
        );
        let refused = |body: Value| decode(body).unwrap_err();
        assert_eq!(
            refused(json!({"Kind": "service-intentions", "Name": "db", "Sources": []})),
            ConfigEntryError::Invalid("At least one source is required".into())
        );
        assert_eq!(
            refused(json!({"Kind": "service-intentions", "Name": "d*",
                           "Sources": [{"Name": "web", "Action": "allow"}]}))
            .to_string(),
            "Name: wildcard character '*' cannot be used with partial values"
        );
        assert_eq!(
            refused(
                json!({"Kind": "service-intentions", "Name": "db", "Sources": [
                {"Name": "web", "Action": "allow"}, {"Name": "web", "Action": "deny"}]})
            )
            .to_string(),
            r#"Sources[1] defines "web" more than once"#
        );
        let l7 = refused(
            json!({"Kind": "service-intentions", "Name": "db", "Sources": [
            {"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]}]}),
        );
        assert!(matches!(l7, ConfigEntryError::NotBuilt(_)), "{l7:?}");
        assert!(l7.to_string().ends_with("is not supported by Trellis"));
        let jwt = refused(
            json!({"Kind": "service-intentions", "Name": "db", "JWT": {},
            "Sources": [{"Name": "web", "Action": "allow"}]}),
        );
        assert!(matches!(jwt, ConfigEntryError::NotBuilt(_)), "{jwt:?}");
        assert_eq!(kind_support("service-intentions"), KindSupport::Supported);
    }

    #[test]
    fn durable_form_round_trips_in_order() {
        let mut entry = decode(json!({
            "Kind": "service-defaults", "Name": "Web", "Protocol": "http",
            "UpstreamConfig": {"Defaults": {"ConnectTimeoutMs": 5000}}, "Meta": {"a": "b"}
        }))
        .unwrap();
        entry.create_index = 3;
        entry.modify_index = 7;
        let text = serde_json::to_string(&entry).unwrap();
        let back: ConfigEntry = serde_json::from_str(&text).unwrap();
        assert_eq!(back, entry);
        assert_eq!(name_key(&entry.name), "web");
    }

    #[test]
    fn go_number_forms() {
        assert_eq!(parse_go_int("0x10"), Ok(16));
        assert_eq!(parse_go_int("-017"), Ok(-15));
        assert_eq!(parse_go_int("1_000"), Err("invalid syntax"));
        assert_eq!(
            parse_go_int("99999999999999999999"),
            Err("value out of range")
        );
        assert_eq!(go_format(&json!(1e21)), "1e+21");
        assert_eq!(go_format(&json!(1.5)), "1.5");
        assert_eq!(go_format(&json!(["a", 2, true])), "[a 2 true]");
    }
}
