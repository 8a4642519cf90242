//! The canonical serde form of registrations: exact PascalCase keys and Go duration strings, as
//! `to_json` has always written them. Derived, so the store reads and writes records without the
//! lenient parser's detour through `serde_json::Value` (API input still goes through
//! `from_json`, which accepts any key case and the snake_case aliases).

use crate::duration::{format_go_duration, parse_go_duration};
use crate::meta::Meta;
use crate::registration::{
    CheckDefinition, CheckKind, CheckStatus, GrpcCheck, HttpCheck, ServiceRegistration,
    StaticCheck, TaggedAddress, Weights,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Registration {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    meta: Meta,
    #[serde(default)]
    tagged_addresses: BTreeMap<String, TaggedAddress>,
    #[serde(default)]
    weights: Weights,
    #[serde(default)]
    enable_tag_override: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    checks: Vec<Check>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Check {
    #[serde(rename = "CheckID", default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(rename = "ServiceID", default, skip_serializing_if = "Option::is_none")]
    service_id: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    notes: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<CheckStatus>,
    #[serde(
        rename = "TTL",
        default,
        with = "go_duration",
        skip_serializing_if = "Option::is_none"
    )]
    ttl: Option<Duration>,
    #[serde(rename = "HTTP", default, skip_serializing_if = "Option::is_none")]
    http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    header: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    body: String,
    #[serde(rename = "TLSSkipVerify", default, skip_serializing_if = "is_false")]
    tls_skip_verify: bool,
    #[serde(
        rename = "TLSServerName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    tls_server_name: String,
    #[serde(rename = "TCP", default, skip_serializing_if = "Option::is_none")]
    tcp: Option<String>,
    #[serde(rename = "GRPC", default, skip_serializing_if = "Option::is_none")]
    grpc: Option<String>,
    #[serde(rename = "GRPCUseTLS", default, skip_serializing_if = "is_false")]
    grpc_use_tls: bool,
    /// A script check's program and arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    /// A check nobody runs, with the status its registration gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r#static: Option<StaticCheck>,
    #[serde(default, with = "go_duration", skip_serializing_if = "Option::is_none")]
    interval: Option<Duration>,
    #[serde(default, with = "go_duration", skip_serializing_if = "Option::is_none")]
    timeout: Option<Duration>,
    #[serde(default, with = "go_duration", skip_serializing_if = "Option::is_none")]
    deregister_critical_service_after: Option<Duration>,
    #[serde(default, skip_serializing_if = "is_zero")]
    success_before_passing: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    failures_before_critical: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    failures_before_warning: u32,
}

fn is_false(b: &bool) -> bool {
    !b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `Option<Duration>` as a Go duration string.
mod go_duration {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_str(&format_go_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => parse_go_duration(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl From<&CheckDefinition> for Check {
    fn from(d: &CheckDefinition) -> Self {
        let mut c = Check {
            id: d.id.clone(),
            name: d.name.clone(),
            service_id: d.service_id.clone(),
            notes: d.notes.clone(),
            status: d.status,
            ttl: None,
            http: None,
            method: None,
            header: BTreeMap::new(),
            body: String::new(),
            tls_skip_verify: false,
            tls_server_name: String::new(),
            tcp: None,
            grpc: None,
            grpc_use_tls: false,
            args: Vec::new(),
            r#static: None,
            interval: d.interval,
            timeout: d.timeout,
            deregister_critical_service_after: d.deregister_critical_service_after,
            success_before_passing: d.success_before_passing,
            failures_before_critical: d.failures_before_critical,
            failures_before_warning: d.failures_before_warning,
        };
        match &d.kind {
            CheckKind::Ttl { ttl } => c.ttl = Some(*ttl),
            CheckKind::Http(h) => {
                c.http = Some(h.url.clone());
                c.method = Some(h.method.clone());
                c.header = h.headers.clone();
                c.body = h.body.clone();
                c.tls_skip_verify = h.tls_skip_verify;
                c.tls_server_name = h.tls_server_name.clone();
            }
            CheckKind::Tcp { address } => c.tcp = Some(address.clone()),
            CheckKind::Grpc(g) => {
                c.grpc = Some(g.target.clone());
                c.grpc_use_tls = g.use_tls;
                c.tls_skip_verify = g.tls_skip_verify;
                c.tls_server_name = g.tls_server_name.clone();
            }
            CheckKind::Script { args } => c.args = args.clone(),
            CheckKind::Static(s) => c.r#static = Some(s.clone()),
        }
        c
    }
}

impl TryFrom<Check> for CheckDefinition {
    type Error = String;

    fn try_from(c: Check) -> Result<Self, String> {
        let script = !c.args.is_empty();
        let kind = match (c.ttl, c.http, c.tcp, c.grpc, c.r#static) {
            (None, None, None, None, None) if script => CheckKind::Script { args: c.args },
            _ if script => return Err("a script check has Args and nothing else".into()),
            (Some(ttl), None, None, None, None) => CheckKind::Ttl { ttl },
            (None, Some(url), None, None, None) => CheckKind::Http(Box::new(HttpCheck {
                url,
                method: c.method.unwrap_or_else(|| "GET".into()),
                headers: c.header,
                body: c.body,
                tls_skip_verify: c.tls_skip_verify,
                tls_server_name: c.tls_server_name,
            })),
            (None, None, Some(address), None, None) => CheckKind::Tcp { address },
            (None, None, None, Some(target), None) => CheckKind::Grpc(Box::new(GrpcCheck {
                target,
                use_tls: c.grpc_use_tls,
                tls_skip_verify: c.tls_skip_verify,
                tls_server_name: c.tls_server_name,
            })),
            (None, None, None, None, Some(s)) => CheckKind::Static(s),
            _ => {
                return Err(
                    "a check needs exactly one of TTL, HTTP, TCP, GRPC, Args or Static".into(),
                );
            }
        };
        Ok(CheckDefinition {
            id: c.id,
            name: c.name,
            service_id: c.service_id,
            notes: c.notes,
            status: c.status,
            kind,
            interval: c.interval,
            timeout: c.timeout,
            deregister_critical_service_after: c.deregister_critical_service_after,
            success_before_passing: c.success_before_passing,
            failures_before_critical: c.failures_before_critical,
            failures_before_warning: c.failures_before_warning,
        })
    }
}

impl Serialize for CheckDefinition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Check::from(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CheckDefinition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Check::deserialize(deserializer)?
            .try_into()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for ServiceRegistration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Registration {
            id: self.id.clone(),
            name: self.name.clone(),
            tags: self.tags.clone(),
            address: self.address.clone(),
            port: self.port,
            meta: self.meta.clone(),
            tagged_addresses: self.tagged_addresses.clone(),
            weights: self.weights,
            enable_tag_override: self.enable_tag_override,
            checks: self.checks.iter().map(Check::from).collect(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ServiceRegistration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let r = Registration::deserialize(deserializer)?;
        Ok(ServiceRegistration {
            id: r.id,
            name: r.name,
            tags: r.tags,
            address: r.address,
            port: r.port,
            meta: r.meta,
            tagged_addresses: r.tagged_addresses,
            weights: r.weights,
            enable_tag_override: r.enable_tag_override,
            checks: r
                .checks
                .into_iter()
                .map(CheckDefinition::try_from)
                .collect::<Result<_, _>>()
                .map_err(serde::de::Error::custom)?,
        })
    }
}
