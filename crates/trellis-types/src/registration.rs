//! Service and check registrations: lenient Consul-compatible parsing, validation, and a
//! canonical PascalCase encoding (used by the SDK when sending and by the store when persisting).

use crate::InvalidInput;
use crate::fields::Fields;
use crate::meta::Meta;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Longest service name or ID accepted.
pub const MAX_NAME_LEN: usize = 128;
/// Most `Meta` pairs per service, as Consul enforces.
pub const MAX_META_PAIRS: usize = 64;

/// Health of a check, worst last so `max` aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Passing,
    Warning,
    Critical,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Result<Self, InvalidInput> {
        match text.to_ascii_lowercase().as_str() {
            "passing" => Ok(Self::Passing),
            "warning" => Ok(Self::Warning),
            "critical" => Ok(Self::Critical),
            other => Err(InvalidInput::new(format!(
                "status {other:?} is not one of passing, warning, critical"
            ))),
        }
    }
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Load-balancing weights of an instance by health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    pub passing: u32,
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            passing: 1,
            warning: 1,
        }
    }
}

/// A service's tagged address (`lan_ipv4`, `wan`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaggedAddress {
    pub address: String,
    pub port: u16,
}

/// An HTTP check's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    pub url: String,
    pub method: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: String,
    pub tls_skip_verify: bool,
    /// Name the server's certificate is verified against (and sent as SNI) instead of the URL's
    /// host; empty for the URL's host.
    pub tls_server_name: String,
}

/// A gRPC check: the standard health protocol (`grpc.health.v1.Health/Check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCheck {
    /// `host:port`, optionally followed by `/service` (the service asked about; empty asks about
    /// the server as a whole), as Consul's `GRPC` field.
    pub target: String,
    pub use_tls: bool,
    pub tls_skip_verify: bool,
    pub tls_server_name: String,
}

impl GrpcCheck {
    /// The `host:port` to connect to and the service to ask about.
    pub fn address_and_service(&self) -> (&str, &str) {
        self.target.split_once('/').unwrap_or((&self.target, ""))
    }
}

/// A check nothing runs: its status is the one it was registered with. Maintenance mode uses
/// them, and so do checks registered through `/v1/catalog/register` without a definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StaticCheck {
    pub status: CheckStatus,
    /// The check's `Type` as the API shows it (`maintenance` for maintenance mode).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub r#type: String,
}

/// What a check does to decide its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// The application reports status itself before `ttl` runs out.
    Ttl { ttl: Duration },
    /// The server sends an HTTP request every interval: 2xx passing, 429 warning, else critical.
    Http(Box<HttpCheck>),
    /// The server opens a TCP connection every interval.
    Tcp { address: String },
    /// The server asks a gRPC health service every interval: SERVING passing, else critical.
    Grpc(Box<GrpcCheck>),
    /// The server runs a command every interval (`Args`, or its alias `ScriptArgs`: the program
    /// and its arguments, no shell): exit 0 passing, 1 warning, anything else critical. Only
    /// accepted when the server enables script checks, as Consul's `enable_script_checks`.
    Script { args: Vec<String> },
    /// Nobody runs it; a registration sets its status (never parsed from an agent request).
    Static(StaticCheck),
}

impl CheckKind {
    pub fn type_name(&self) -> &str {
        match self {
            Self::Ttl { .. } => "ttl",
            Self::Http(_) => "http",
            Self::Tcp { .. } => "tcp",
            Self::Grpc(_) => "grpc",
            Self::Script { .. } => "script",
            Self::Static(s) => &s.r#type,
        }
    }

    /// Whether the server probes this check itself (HTTP, TCP, gRPC, script).
    pub fn is_probed(&self) -> bool {
        matches!(
            self,
            Self::Http(_) | Self::Tcp { .. } | Self::Grpc(_) | Self::Script { .. }
        )
    }

    /// Whether this is a script check (the server runs a command).
    pub fn is_script(&self) -> bool {
        matches!(self, Self::Script { .. })
    }
}

/// A check as registered, with a service or on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckDefinition {
    /// `CheckID` (or `ID`); defaulted by the catalog when absent.
    pub id: Option<String>,
    pub name: Option<String>,
    pub service_id: Option<String>,
    pub notes: String,
    /// Initial status; critical when absent.
    pub status: Option<CheckStatus>,
    pub kind: CheckKind,
    /// Required for probed checks (HTTP, TCP, gRPC, script), forbidden with TTL.
    pub interval: Option<Duration>,
    /// Per-probe timeout; the catalog defaults it to 10 s (30 s for a script check).
    pub timeout: Option<Duration>,
    pub deregister_critical_service_after: Option<Duration>,
    pub success_before_passing: u32,
    pub failures_before_critical: u32,
    pub failures_before_warning: u32,
}

/// A service instance registration (`PUT /v1/agent/service/register`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRegistration {
    /// Instance ID; defaults to the name.
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: Meta,
    pub tagged_addresses: BTreeMap<String, TaggedAddress>,
    pub weights: Weights,
    pub enable_tag_override: bool,
    pub checks: Vec<CheckDefinition>,
}

/// The names the registry accepts, as Consul does: any non-empty name (`app#10.0.0.1#3000`
/// included; Consul only warns that such a name is not discoverable through DNS), bounded in
/// length and without control characters. DNS simply finds no name that is not a DNS label.
pub fn validate_registered_name(name: &str) -> Result<(), InvalidInput> {
    if name.is_empty() {
        return Err(InvalidInput::new("missing service Name"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidInput::new(format!(
            "service name longer than {MAX_NAME_LEN} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(InvalidInput::new(format!(
            "invalid service name {name:?}: no control characters"
        )));
    }
    Ok(())
}

/// Stricter names for the proxies' own flags (sidecar service, gateway routes, outbound
/// targets): letters, digits, `-`, `_`, `.`, starting with a letter or digit, so that they are
/// usable in DNS labels, `Host` headers, URLs and metrics. The registry itself accepts any name
/// [`validate_registered_name`] accepts.
pub fn validate_service_name(name: &str) -> Result<(), InvalidInput> {
    validate_registered_name(name)?;
    let valid_start = name.starts_with(|c: char| c.is_ascii_alphanumeric());
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid_start || !valid_chars {
        return Err(InvalidInput::new(format!(
            "invalid service name {name:?}: use letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

/// The key a service is looked up by. Consul matches service names without regard to case (its
/// catalog indexes the lower-cased name), so `Billing-API` and `billing-api` are one service;
/// answers keep each instance's registered spelling.
pub fn service_key(name: &str) -> Cow<'_, str> {
    if name.chars().any(char::is_uppercase) {
        Cow::Owned(name.to_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// IDs (of instances and checks) appear in URL paths: no '/', no whitespace or control characters.
pub fn validate_id(what: &str, id: &str) -> Result<(), InvalidInput> {
    if id.is_empty() {
        return Err(InvalidInput::new(format!("{what} must not be empty")));
    }
    if id.len() > 2 * MAX_NAME_LEN {
        return Err(InvalidInput::new(format!("{what} is too long")));
    }
    if id
        .chars()
        .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(InvalidInput::new(format!(
            "invalid {what} {id:?}: no '/', spaces or control characters"
        )));
    }
    Ok(())
}

impl ServiceRegistration {
    /// Parses a request body the way Consul does (keys in any case, snake_case aliases); its
    /// checks cannot be script checks (`Args` is refused as not supported), as
    /// `/v1/catalog/register` takes it.
    pub fn from_json(value: Value) -> Result<Self, InvalidInput> {
        Self::parse(value, Scripts::Refuse)
    }

    /// Parses a registration as the agent endpoint takes it: script checks (`Args`) are
    /// accepted, and the endpoint decides whether the server runs them.
    pub fn from_agent_json(value: Value) -> Result<Self, InvalidInput> {
        Self::parse(value, Scripts::Accept)
    }

    fn parse(value: Value, scripts: Scripts) -> Result<Self, InvalidInput> {
        let mut f = Fields::from_value(value, "service registration")?;
        let name = f
            .string(&["Name", "Service"])?
            .ok_or_else(|| InvalidInput::new("missing service Name"))?;
        validate_registered_name(&name)?;
        let id = f
            .string(&["ID"])?
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| name.clone());
        validate_id("service ID", &id)?;
        if let Some(kind) = f.string(&["Kind"])?
            && !kind.is_empty()
        {
            return Err(InvalidInput::new(format!(
                "service Kind {kind:?} is not supported"
            )));
        }
        let port = match f.u64(&["Port"])? {
            None => 0,
            Some(p) => u16::try_from(p)
                .map_err(|_| InvalidInput::new(format!("Port {p} is out of range")))?,
        };
        let meta = Meta::from(f.string_map(&["Meta"])?);
        if meta.len() > MAX_META_PAIRS {
            return Err(InvalidInput::new(format!(
                "Meta has more than {MAX_META_PAIRS} pairs"
            )));
        }
        if let Some(key) = meta.keys().find(|k| k.is_empty() || k.len() > MAX_NAME_LEN) {
            return Err(InvalidInput::new(format!("invalid Meta key {key:?}")));
        }
        let weights = match f.object(&["Weights"])? {
            None => Weights::default(),
            Some(mut w) => Weights {
                passing: weight(w.u64(&["Passing"])?, 1)?,
                warning: weight(w.u64(&["Warning"])?, 1)?,
            },
        };
        if weights.passing == 0 {
            return Err(InvalidInput::new("Weights.Passing must be at least 1"));
        }
        let mut tagged_addresses = BTreeMap::new();
        if let Some(map) = f.raw_map(&["TaggedAddresses"])? {
            for (tag, value) in map {
                let mut t = Fields::from_value(value, "TaggedAddresses entry")?;
                let address = t.string(&["Address"])?.unwrap_or_default();
                let port = t.u64(&["Port"])?.unwrap_or(0);
                let port = u16::try_from(port)
                    .map_err(|_| InvalidInput::new("TaggedAddresses port out of range"))?;
                tagged_addresses.insert(tag, TaggedAddress { address, port });
            }
        }
        let mut checks = Vec::new();
        // As in Consul, a `Check` with every field empty is no check (some clients always send
        // the field); entries of `Checks` must each be a real check.
        if let Some(check) = f.take(&["Check"]).filter(|c| !is_zero_object(c)) {
            checks.push(CheckDefinition::parse(check, scripts)?);
        }
        match f.take(&["Checks"]) {
            None => {}
            Some(Value::Array(items)) => {
                for item in items {
                    checks.push(CheckDefinition::parse(item, scripts)?);
                }
            }
            Some(_) => return Err(InvalidInput::new("Checks must be a list")),
        }
        Ok(Self {
            id,
            name,
            tags: f.string_list(&["Tags"])?,
            address: f.string(&["Address"])?.unwrap_or_default(),
            port,
            meta,
            tagged_addresses,
            weights,
            enable_tag_override: f.bool(&["EnableTagOverride"])?.unwrap_or(false),
            checks,
        })
    }

    /// The canonical PascalCase JSON form.
    pub fn to_json(&self) -> Value {
        // Serialising plain data into a Value cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

fn weight(value: Option<u64>, default: u32) -> Result<u32, InvalidInput> {
    match value {
        None => Ok(default),
        Some(w) => u32::try_from(w).map_err(|_| InvalidInput::new("weight out of range")),
    }
}

fn small_count(value: Option<u64>, what: &str) -> Result<u32, InvalidInput> {
    match value {
        None => Ok(0),
        Some(n) if n <= 1_000 => Ok(n as u32),
        Some(_) => Err(InvalidInput::new(format!("{what} must be at most 1000"))),
    }
}

/// A gRPC check target: `host:port` with a numeric port, optionally `/service`.
fn validate_grpc_target(target: &str) -> Result<(), InvalidInput> {
    let (address, _service) = target.split_once('/').unwrap_or((target, ""));
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        Ok(())
    } else {
        Err(InvalidInput::new(format!(
            "GRPC check target {target:?} must be host:port or host:port/service"
        )))
    }
}

/// Whether a parser accepts script checks (`Args`/`ScriptArgs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scripts {
    Accept,
    Refuse,
}

impl CheckDefinition {
    /// Parses a check that cannot be a script check (`Args` is refused as not supported).
    pub fn from_json(value: Value) -> Result<Self, InvalidInput> {
        Self::parse(value, Scripts::Refuse)
    }

    /// Parses a check as the agent endpoint takes it, script checks (`Args`) included.
    pub fn from_agent_json(value: Value) -> Result<Self, InvalidInput> {
        Self::parse(value, Scripts::Accept)
    }

    fn parse(value: Value, scripts: Scripts) -> Result<Self, InvalidInput> {
        let mut f = Fields::from_value(value, "check")?;
        let script_keys: &[&str] = match scripts {
            Scripts::Accept => &[],
            Scripts::Refuse => &["Args", "ScriptArgs"],
        };
        for unsupported in script_keys.iter().copied().chain([
            "Script",
            "H2PING",
            "DockerContainerID",
            "AliasService",
            "UDP",
            "OSService",
        ]) {
            if f.take(&[unsupported]).is_some_and(|v| !is_empty_value(&v)) {
                return Err(InvalidInput::new(format!(
                    "{unsupported} checks are not supported; use TTL, HTTP, TCP or GRPC"
                )));
            }
        }
        let id = f.string(&["CheckID", "ID"])?.filter(|s| !s.is_empty());
        if let Some(id) = &id {
            validate_id("CheckID", id)?;
        }
        let ttl = f.duration(&["TTL"])?;
        let http = f.string(&["HTTP"])?.filter(|s| !s.is_empty());
        let tcp = f.string(&["TCP"])?.filter(|s| !s.is_empty());
        let grpc = f.string(&["GRPC"])?.filter(|s| !s.is_empty());
        let args = f.string_list(&["Args", "ScriptArgs"])?;
        let interval = f.duration(&["Interval"])?;
        let timeout = f.duration(&["Timeout"])?;
        let tls_skip_verify = f.bool(&["TLSSkipVerify"])?.unwrap_or(false);
        let tls_server_name = f.string(&["TLSServerName"])?.unwrap_or_default();
        let kinds = [
            ttl.is_some(),
            http.is_some(),
            tcp.is_some(),
            grpc.is_some(),
            !args.is_empty(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(InvalidInput::new(
                "a check can have only one of TTL, HTTP, TCP, GRPC or Args",
            ));
        }
        let kind = match (ttl, http, tcp) {
            (None, None, None) if !args.is_empty() => {
                if args[0].is_empty() {
                    return Err(InvalidInput::new("Args must start with a program"));
                }
                CheckKind::Script { args }
            }
            (Some(ttl), None, None) => {
                if interval.is_some() {
                    return Err(InvalidInput::new(
                        "a check cannot have both TTL and Interval",
                    ));
                }
                CheckKind::Ttl { ttl }
            }
            (None, Some(url), None) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(InvalidInput::new(format!(
                        "HTTP check URL {url:?} must start with http:// or https://"
                    )));
                }
                let headers = match f.raw_map(&["Header"])? {
                    None => BTreeMap::new(),
                    Some(h) => h
                        .into_iter()
                        .map(|(k, v)| match v {
                            Value::Array(items) => Ok((
                                k,
                                items
                                    .into_iter()
                                    .map(|i| i.as_str().map(str::to_owned))
                                    .collect::<Option<Vec<_>>>()
                                    .ok_or_else(|| {
                                        InvalidInput::new("Header values must be strings")
                                    })?,
                            )),
                            Value::String(s) => Ok((k, vec![s])),
                            _ => Err(InvalidInput::new("Header values must be lists of strings")),
                        })
                        .collect::<Result<_, _>>()?,
                };
                CheckKind::Http(Box::new(HttpCheck {
                    url,
                    method: f
                        .string(&["Method"])?
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| "GET".into())
                        .to_ascii_uppercase(),
                    headers,
                    body: f.string(&["Body"])?.unwrap_or_default(),
                    tls_skip_verify,
                    tls_server_name,
                }))
            }
            (None, None, Some(address)) => CheckKind::Tcp { address },
            _ => match grpc {
                Some(target) => {
                    validate_grpc_target(&target)?;
                    CheckKind::Grpc(Box::new(GrpcCheck {
                        target,
                        use_tls: f.bool(&["GRPCUseTLS"])?.unwrap_or(false),
                        tls_skip_verify,
                        tls_server_name,
                    }))
                }
                None => {
                    return Err(InvalidInput::new(
                        "a check needs one of TTL, HTTP, TCP, GRPC or Args",
                    ));
                }
            },
        };
        if !matches!(kind, CheckKind::Ttl { .. }) && interval.is_none() {
            return Err(InvalidInput::new(format!(
                "{} check needs an Interval",
                kind.type_name().to_ascii_uppercase()
            )));
        }
        if let Some(interval) = interval
            && interval < Duration::from_millis(10)
        {
            return Err(InvalidInput::new("Interval must be at least 10ms"));
        }
        let status = f
            .string(&["Status"])?
            .filter(|s| !s.is_empty())
            .map(|s| CheckStatus::parse(&s))
            .transpose()?;
        Ok(Self {
            id,
            name: f.string(&["Name"])?.filter(|s| !s.is_empty()),
            service_id: f.string(&["ServiceID"])?.filter(|s| !s.is_empty()),
            notes: f.string(&["Notes"])?.unwrap_or_default(),
            status,
            kind,
            interval,
            timeout,
            deregister_critical_service_after: f.duration(&["DeregisterCriticalServiceAfter"])?,
            success_before_passing: small_count(
                f.u64(&["SuccessBeforePassing"])?,
                "SuccessBeforePassing",
            )?,
            failures_before_critical: small_count(
                f.u64(&["FailuresBeforeCritical"])?,
                "FailuresBeforeCritical",
            )?,
            failures_before_warning: small_count(
                f.u64(&["FailuresBeforeWarning"])?,
                "FailuresBeforeWarning",
            )?,
        })
    }

    /// The canonical PascalCase JSON form (durations as Go strings).
    pub fn to_json(&self) -> Value {
        // Serialising plain data into a Value cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(b) => !b,
        _ => false,
    }
}

/// An object whose fields are all null, empty, false or zero (Consul's `CheckType.Empty()`).
fn is_zero_object(v: &Value) -> bool {
    match v {
        Value::Object(fields) => fields
            .values()
            .all(|f| f.is_null() || is_empty_value(f) || f.as_f64() == Some(0.0)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lowercase_keys_from_popular_clients() {
        let reg = ServiceRegistration::from_json(json!({
            "name": "web", "id": "web-1", "address": "10.0.0.1", "port": 8080,
            "tags": ["v1"], "meta": {"Version": "1"},
            "checks": [{"ttl": "15s"}, {"http": "http://10.0.0.1:8080/health", "interval": "5s"}],
            "check": {"tcp": "10.0.0.1:8080", "interval": "10s", "deregister_critical_service_after": "1m"}
        }))
        .unwrap();
        assert_eq!(reg.id, "web-1");
        assert_eq!(reg.port, 8080);
        assert_eq!(reg.meta.get("Version"), Some("1"));
        assert_eq!(reg.checks.len(), 3);
        assert_eq!(
            reg.checks[0].kind,
            CheckKind::Tcp {
                address: "10.0.0.1:8080".into()
            }
        );
        assert_eq!(
            reg.checks[0].deregister_critical_service_after,
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            reg.checks[1].kind,
            CheckKind::Ttl {
                ttl: Duration::from_secs(15)
            }
        );
    }

    #[test]
    fn id_defaults_to_name() {
        let reg = ServiceRegistration::from_json(json!({"Name": "db"})).unwrap();
        assert_eq!(reg.id, "db");
        assert_eq!(reg.weights, Weights::default());
    }

    #[test]
    fn accepts_any_printable_name_as_consul_does() {
        for name in ["app#127.0.0.1#3000", "Billing API", "a/b", "ünïcode"] {
            let reg = ServiceRegistration::from_json(json!({"Name": name, "ID": "x"})).unwrap();
            assert_eq!(reg.name, name);
        }
        let reg = ServiceRegistration::from_json(json!({"Name": "app#127.0.0.1#3000"})).unwrap();
        assert_eq!(reg.id, "app#127.0.0.1#3000");
        assert!(
            validate_service_name("app#1").is_err(),
            "proxies stay strict"
        );
    }

    #[test]
    fn rejects_bad_input() {
        let cases = [
            json!({}),
            json!({"Name": ""}),
            json!({"Name": "bad name"}),
            json!({"Name": "a/b"}),
            json!({"Name": "bad\u{1}name", "ID": "x"}),
            json!({"Name": "x".repeat(MAX_NAME_LEN + 1), "ID": "x"}),
            json!({"Name": "x", "Port": 70000}),
            json!({"Name": "x", "Port": "80"}),
            json!({"Name": "x", "Check": {"TTL": "10s", "Interval": "10s"}}),
            json!({"Name": "x", "Check": {"TTL": "ten seconds"}}),
            json!({"Name": "x", "Check": {"HTTP": "http://a"}}),
            json!({"Name": "x", "Check": {"Args": ["/bin/true"]}}),
            json!({"Name": "x", "Check": {"Args": ["/bin/true"], "TTL": "1s"}}),
            json!({"Name": "x", "Check": {"Args": "/bin/true", "Interval": "1s"}}),
            json!({"Name": "x", "Check": {"Script": "true", "Interval": "1s"}}),
            json!({"Name": "x", "Check": {"TTL": "1s", "Status": "sleepy"}}),
            json!([1, 2]),
        ];
        for case in cases {
            assert!(
                ServiceRegistration::from_json(case.clone()).is_err(),
                "{case} accepted"
            );
        }
    }

    #[test]
    fn canonical_json_round_trips() {
        let reg = ServiceRegistration::from_json(json!({
            "Name": "api", "ID": "api-1", "Port": 80, "Weights": {"Passing": 3, "Warning": 1},
            "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 80}},
            "Checks": [{"CheckID": "c1", "HTTP": "http://x/h", "Interval": "1m30s",
                        "Header": {"A": ["b"]}, "SuccessBeforePassing": 2, "Status": "passing"}]
        }))
        .unwrap();
        let back: ServiceRegistration =
            serde_json::from_value(serde_json::to_value(&reg).unwrap()).unwrap();
        assert_eq!(back, reg);
    }
}

#[cfg(test)]
mod canonical_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_form_is_the_canonical_json_and_reads_back() {
        let reg = ServiceRegistration::from_json(json!({
            "name": "api", "id": "api-1", "port": 80, "meta": {"k": "v"},
            "checks": [{"http": "http://x/h", "interval": "1m30s", "timeout": "500ms",
                        "header": {"A": ["b"]}, "tls_skip_verify": true},
                       {"tcp": "x:1", "interval": "10s", "status": "warning"},
                       {"ttl": "5s", "deregister_critical_service_after": "1h"}]
        }))
        .unwrap();
        let value = serde_json::to_value(&reg).unwrap();
        assert_eq!(value["Checks"][0]["Interval"], "1m30s");
        assert_eq!(value["Checks"][0]["TLSSkipVerify"], true);
        assert_eq!(value["Checks"][2]["TTL"], "5s");
        assert_eq!(value["Port"], 80);
        // The lenient parser and the derived one agree on the canonical form.
        assert_eq!(ServiceRegistration::from_json(value.clone()).unwrap(), reg);
        assert_eq!(
            serde_json::from_value::<ServiceRegistration>(value).unwrap(),
            reg
        );
    }

    #[test]
    fn grpc_and_tls_fields_parse_and_round_trip() {
        let reg = ServiceRegistration::from_json(json!({
            "name": "api",
            "checks": [
                {"grpc": "127.0.0.1:50051/health.v1", "grpc_use_tls": true, "tls_skip_verify": true,
                 "tls_server_name": "api.internal", "interval": "5s"},
                {"http": "https://127.0.0.1:8443/health", "TLSServerName": "api.internal",
                 "interval": "5s"}
            ]
        }))
        .unwrap();
        let CheckKind::Grpc(g) = &reg.checks[0].kind else {
            panic!("not a gRPC check: {:?}", reg.checks[0].kind)
        };
        assert_eq!(g.address_and_service(), ("127.0.0.1:50051", "health.v1"));
        assert!(g.use_tls && g.tls_skip_verify);
        assert_eq!(g.tls_server_name, "api.internal");
        assert_eq!(reg.checks[0].kind.type_name(), "grpc");
        let CheckKind::Http(h) = &reg.checks[1].kind else {
            panic!("not an HTTP check")
        };
        assert_eq!(h.tls_server_name, "api.internal");
        let value = serde_json::to_value(&reg).unwrap();
        assert_eq!(value["Checks"][0]["GRPC"], "127.0.0.1:50051/health.v1");
        assert_eq!(value["Checks"][0]["GRPCUseTLS"], true);
        assert_eq!(
            serde_json::from_value::<ServiceRegistration>(value.clone()).unwrap(),
            reg
        );
        assert_eq!(ServiceRegistration::from_json(value).unwrap(), reg);
    }

    #[test]
    fn bad_grpc_targets_are_refused() {
        for target in ["localhost", "localhost:http", ":50051", "host:99999/svc"] {
            let check = json!({"GRPC": target, "Interval": "1s"});
            assert!(
                CheckDefinition::from_json(check).is_err(),
                "{target} accepted"
            );
        }
        let both = json!({"GRPC": "h:1", "TCP": "h:1", "Interval": "1s"});
        assert!(CheckDefinition::from_json(both).is_err());
        let no_interval = json!({"GRPC": "h:1"});
        assert!(CheckDefinition::from_json(no_interval).is_err());
    }

    #[test]
    fn static_checks_are_stored_but_never_parsed_from_requests() {
        let check = CheckDefinition {
            id: Some("_node_maintenance".into()),
            name: Some("Node Maintenance Mode".into()),
            service_id: None,
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
        };
        assert_eq!(check.kind.type_name(), "maintenance");
        assert!(!check.kind.is_probed());
        let value = serde_json::to_value(&check).unwrap();
        assert_eq!(value["Static"]["Status"], "critical");
        assert_eq!(
            serde_json::from_value::<CheckDefinition>(value.clone()).unwrap(),
            check
        );
        // An agent request cannot register one: it has no TTL, HTTP, TCP or GRPC.
        assert!(CheckDefinition::from_json(value).is_err());
    }

    #[test]
    fn script_checks_parse_from_args_or_script_args_and_round_trip() {
        for key in ["Args", "ScriptArgs", "args", "script_args"] {
            let check = CheckDefinition::from_agent_json(
                json!({key: ["/usr/bin/check", "-v"], "Interval": "10s", "Timeout": "2s"}),
            )
            .unwrap();
            assert_eq!(
                check.kind,
                CheckKind::Script {
                    args: vec!["/usr/bin/check".into(), "-v".into()]
                },
                "{key}"
            );
            assert_eq!(check.kind.type_name(), "script");
            assert!(check.kind.is_probed() && check.kind.is_script());
            let value = serde_json::to_value(&check).unwrap();
            assert_eq!(value["Args"], json!(["/usr/bin/check", "-v"]));
            assert_eq!(
                serde_json::from_value::<CheckDefinition>(value.clone()).unwrap(),
                check
            );
            assert_eq!(
                CheckDefinition::from_agent_json(value.clone()).unwrap(),
                check
            );
            // Where script checks are not taken (the catalog endpoint), they are refused.
            let refused = CheckDefinition::from_json(value).unwrap_err().to_string();
            assert!(refused.contains("not supported"), "{refused}");
        }
        // An empty list is no script, as Consul's `IsScript`.
        assert!(CheckDefinition::from_agent_json(json!({"Args": [], "TTL": "5s"})).is_ok());
        let service = json!({"Name": "web", "Check": {"Args": ["/bin/true"], "Interval": "1s"}});
        assert!(ServiceRegistration::from_json(service.clone()).is_err());
        let service = ServiceRegistration::from_agent_json(service).unwrap();
        assert!(service.checks[0].kind.is_script());
        for bad in [
            json!({"Args": ["x"], "HTTP": "http://a", "Interval": "1s"}),
            json!({"Args": [""], "Interval": "1s"}),
            json!({"Args": [1], "Interval": "1s"}),
        ] {
            assert!(
                CheckDefinition::from_agent_json(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let stored = json!({"Args": ["x"], "TCP": "h:1", "Interval": "1s"});
        assert!(serde_json::from_value::<CheckDefinition>(stored).is_err());
    }

    #[test]
    fn stored_check_without_a_kind_is_an_error() {
        let bad = json!({"ID": "x", "Name": "x", "Checks": [{"CheckID": "c"}]});
        assert!(serde_json::from_value::<ServiceRegistration>(bad).is_err());
    }
}
