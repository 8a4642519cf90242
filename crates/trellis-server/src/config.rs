//! Server configuration: a TOML-loadable struct with documented defaults, validated before any
//! port is bound.

use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP API address, `HOST:PORT` with an IP address or a host name (resolved at start; the
    /// first address that binds is used). Default `127.0.0.1:8500`.
    pub http: HostPort,
    /// Where the durable store lives. Default `./trellis-data`.
    pub data_dir: PathBuf,
    /// Keep everything in memory; nothing is written to disk. Default false.
    pub dev: bool,
    /// Where the catalog (instances, checks, KV, sessions, config entries) is kept:
    /// `embedded` (redb in `data_dir`) or `etcd` (the cluster `[etcd]` names). Default
    /// `embedded`.
    pub store: StoreKind,
    /// The etcd cluster of `store = "etcd"`.
    pub etcd: EtcdConfig,
    /// Name of the synthesised node. Default: the machine's host name.
    pub node_name: String,
    /// Datacenter name. Default `dc1`.
    pub datacenter: String,
    /// Most blocking queries and watch streams held open at once; more get 429. Default 100000.
    pub max_waiters: usize,
    /// Most HTTP/TCP check probes in flight at once. Default 64.
    pub check_concurrency: usize,
    /// Most commands queued for the writer; more get 503. Default 65536.
    pub max_queue: usize,
    /// DNS interface (UDP and TCP): `HOST:PORT`, or `"off"`. Default `127.0.0.1:8600`; while
    /// unset and `http` asks for port 0 (any free port), DNS takes any free port too, so servers
    /// started side by side (tests) do not compete for 8600, and if the default address is
    /// taken the server runs without DNS (with a warning).
    pub dns: Option<DnsListen>,
    /// The DNS domain answered, as Consul's `domain`. Default `consul`.
    pub dns_domain: String,
    /// TTL of DNS answers (services and nodes), as Consul's `service_ttl`/`node_ttl`: a Go
    /// duration in whole seconds or a number of seconds. Default 0.
    pub dns_ttl: DnsTtl,
    /// Run script checks (`Args`/`ScriptArgs`: a command, no shell) registered through the HTTP
    /// API, as Consul's `enable_script_checks`. Default false: registering a service or check
    /// with a script check is refused with Consul's answer (500, "Scripts are disabled on this
    /// agent from remote calls; ..."), since anyone who can reach the API could run commands.
    pub enable_script_checks: bool,
    /// OTLP/HTTP trace receiver (`POST /v1/traces`): `HOST:PORT`, or `"off"`. Default
    /// `127.0.0.1:4318`; while unset and `http` asks for port 0, it takes any free port too,
    /// and if the default address is taken the server runs without it (with a warning).
    pub otlp: Option<DnsListen>,
    /// OTLP/gRPC trace receiver (`TraceService/Export`): `HOST:PORT`, or `"off"`. Default
    /// `127.0.0.1:4317`; like `otlp`, any free port while unset and `http` asks for port 0, and
    /// the default address taken is a warning and no gRPC receiver.
    pub otlp_grpc: Option<DnsListen>,
    /// Most payload bytes of OTLP requests (both receivers) worked on at once; beyond it they
    /// are answered 429 / RESOURCE_EXHAUSTED with a retry delay. Default 64 MiB.
    pub otlp_inflight_bytes: usize,
    /// Most bytes the in-memory span store holds; the oldest traces are evicted beyond it.
    /// Default 256 MiB.
    pub trace_store_bytes: usize,
    /// Serve the dashboard (`/ui/`) from this directory, read on every request, instead of the
    /// copy built into the binary, as Consul's `ui_config.dir`: for working on the dashboard.
    /// Default: unset (the built-in copy).
    pub ui_dir: Option<PathBuf>,
    /// Access control (Consul's `acl` block): the default policy and an initial management
    /// token.
    pub acl: AclConfig,
    /// The mesh's certificate authority (Consul's `connect` block).
    pub connect: ConnectConfig,
    /// TLS for the HTTP API (Consul's `tls` block): HTTPS with a certificate and key, and
    /// client certificates required when a client CA is given. Default: plain HTTP.
    pub tls: TlsConfig,
    /// The file this configuration was read from and the command-line flags laid over it, so
    /// `/v1/agent/reload` can read it again the same way. Not a TOML key; `None` when the
    /// server was started without a file.
    #[serde(skip)]
    pub config_file: Option<ConfigFile>,
}

/// A configuration file and the flags that override it: what `ConfigFile::load` reads into a
/// `ServerConfig`, at start and again on `/v1/agent/reload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub overrides: ConfigOverrides,
}

/// The settings given on the command line, which win over the file's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigOverrides {
    pub http: Option<HostPort>,
    pub data_dir: Option<PathBuf>,
    /// `--dev` (a flag can only turn it on).
    pub dev: bool,
    pub store: Option<StoreKind>,
    /// `--etcd URL[,URL...]` (empty: not given).
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: Option<String>,
    pub etcd_username: Option<String>,
    pub etcd_password: Option<String>,
    pub etcd_ca_file: Option<PathBuf>,
    pub etcd_cert_file: Option<PathBuf>,
    pub etcd_key_file: Option<PathBuf>,
    pub etcd_lease_ttl: Option<String>,
    pub node_name: Option<String>,
    pub datacenter: Option<String>,
    pub dns: Option<DnsListen>,
    pub dns_domain: Option<String>,
    pub dns_ttl: Option<DnsTtl>,
    /// `--enable-script-checks` (a flag can only turn it on).
    pub enable_script_checks: bool,
    pub otlp: Option<DnsListen>,
    pub otlp_grpc: Option<DnsListen>,
    pub otlp_inflight_bytes: Option<usize>,
    pub trace_store_bytes: Option<usize>,
    pub ui_dir: Option<PathBuf>,
    pub acl_default_policy: Option<AclDefaultPolicy>,
    pub leaf_cert_ttl: Option<String>,
    pub ca_cert_file: Option<PathBuf>,
    pub ca_key_file: Option<PathBuf>,
    /// `--tls-cert`, `--tls-key`, `--tls-client-ca`, `--tls-ca`.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_client_ca_file: Option<PathBuf>,
    pub tls_ca_file: Option<PathBuf>,
}

impl ConfigOverrides {
    /// `config` with these flags laid over it.
    pub fn apply(&self, config: &mut ServerConfig) {
        if let Some(http) = &self.http {
            config.http = http.clone();
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if self.dev {
            config.dev = true;
        }
        if let Some(store) = self.store {
            config.store = store;
        }
        if !self.etcd_endpoints.is_empty() {
            config.etcd.endpoints = self.etcd_endpoints.clone();
        }
        let etcd = &mut config.etcd;
        if let Some(prefix) = &self.etcd_prefix {
            etcd.prefix = prefix.clone();
        }
        if let Some(ttl) = &self.etcd_lease_ttl {
            etcd.lease_ttl = ttl.clone();
        }
        if let Some(user) = &self.etcd_username {
            etcd.username = Some(user.clone());
        }
        if let Some(password) = &self.etcd_password {
            etcd.password = Some(password.clone());
        }
        for (flag, setting) in [
            (&self.etcd_ca_file, &mut etcd.ca_file),
            (&self.etcd_cert_file, &mut etcd.cert_file),
            (&self.etcd_key_file, &mut etcd.key_file),
        ] {
            if let Some(path) = flag {
                *setting = Some(path.clone());
            }
        }
        if let Some(name) = &self.node_name {
            config.node_name = name.clone();
        }
        if let Some(dc) = &self.datacenter {
            config.datacenter = dc.clone();
        }
        if let Some(dns) = &self.dns {
            config.dns = Some(dns.clone());
        }
        if let Some(domain) = &self.dns_domain {
            config.dns_domain = domain.clone();
        }
        if let Some(ttl) = self.dns_ttl {
            config.dns_ttl = ttl;
        }
        if self.enable_script_checks {
            config.enable_script_checks = true;
        }
        if let Some(otlp) = &self.otlp {
            config.otlp = Some(otlp.clone());
        }
        if let Some(grpc) = &self.otlp_grpc {
            config.otlp_grpc = Some(grpc.clone());
        }
        if let Some(bytes) = self.otlp_inflight_bytes {
            config.otlp_inflight_bytes = bytes;
        }
        if let Some(bytes) = self.trace_store_bytes {
            config.trace_store_bytes = bytes;
        }
        if let Some(dir) = &self.ui_dir {
            config.ui_dir = Some(dir.clone());
        }
        if let Some(policy) = self.acl_default_policy {
            config.acl.default_policy = policy;
        }
        if let Some(ttl) = &self.leaf_cert_ttl {
            config.connect.leaf_cert_ttl = ttl.clone();
        }
        if let Some(file) = &self.ca_cert_file {
            config.connect.ca_cert_file = Some(file.clone());
        }
        if let Some(file) = &self.ca_key_file {
            config.connect.ca_key_file = Some(file.clone());
        }
        if let Some(file) = &self.tls_cert_file {
            config.tls.cert_file = Some(file.clone());
        }
        if let Some(file) = &self.tls_key_file {
            config.tls.key_file = Some(file.clone());
        }
        if let Some(file) = &self.tls_client_ca_file {
            config.tls.client_ca_file = Some(file.clone());
        }
        if let Some(file) = &self.tls_ca_file {
            config.tls.ca_file = Some(file.clone());
        }
    }
}

impl ConfigFile {
    /// Reads, parses and validates the file with the flags laid over it; the result remembers
    /// this `ConfigFile`. Errors are one line naming the file.
    pub fn load(&self) -> Result<ServerConfig, ConfigError> {
        let path = self.path.display();
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| ConfigError::File(format!("cannot read {path}: {e}")))?;
        let mut config = ServerConfig::from_toml(&text)
            .map_err(|e| ConfigError::File(format!("invalid configuration file {path}: {e}")))?;
        self.overrides.apply(&mut config);
        config.validate()?;
        config.config_file = Some(self.clone());
        Ok(config)
    }
}

/// The `[acl]` table, as Consul's `acl` block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclConfig {
    /// What a request may do when no rule of its token decides: `allow` (default, so a registry
    /// without tokens keeps working) or `deny`. ACL management always needs a token with `acl`
    /// rights.
    pub default_policy: AclDefaultPolicy,
    pub tokens: AclTokens,
}

/// The `[connect]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectConfig {
    /// How long a service's leaf certificate is valid, a Go duration from 1m to 8760h. Default
    /// `24h`; clients renew at about 70 % of it. Once a lifetime is set through
    /// `PUT /v1/connect/ca/configuration`, that one is kept and this no longer applies.
    pub leaf_cert_ttl: String,
    /// An operator's root certificate (PEM, a CA: basicConstraints CA) to sign leaves with
    /// instead of a root made by the server; with `ca_key_file`. At start it becomes the
    /// active root if the CA has not had it yet (the previous root stays trusted until its
    /// leaves expire). Default: unset (the server makes its own root).
    pub ca_cert_file: Option<PathBuf>,
    /// The private key of `ca_cert_file` (PEM, PKCS#8 `BEGIN PRIVATE KEY`, unencrypted).
    pub ca_key_file: Option<PathBuf>,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        Self {
            leaf_cert_ttl: "24h".into(),
            ca_cert_file: None,
            ca_key_file: None,
        }
    }
}

impl ConnectConfig {
    /// The leaf lifetime, checked.
    pub fn leaf_ttl(&self) -> Result<std::time::Duration, ConfigError> {
        parse_leaf_ttl(&self.leaf_cert_ttl).map_err(|e| {
            ConfigError::Invalid(format!(
                "connect.leaf_cert_ttl {:?}: {e}",
                self.leaf_cert_ttl
            ))
        })
    }

    /// The table checked: a valid lifetime, and a CA certificate and key given together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.leaf_ttl()?;
        match (&self.ca_cert_file, &self.ca_key_file) {
            (Some(_), None) => Err(ConfigError::Invalid(
                "connect.ca_cert_file (--ca-cert) needs connect.ca_key_file (--ca-key)".into(),
            )),
            (None, Some(_)) => Err(ConfigError::Invalid(
                "connect.ca_key_file (--ca-key) needs connect.ca_cert_file (--ca-cert)".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// A leaf certificate lifetime: a Go duration from 1m to 8760h (the configuration's and the
/// CA configuration API's `LeafCertTTL`).
pub fn parse_leaf_ttl(text: &str) -> Result<std::time::Duration, String> {
    let ttl = trellis_types::parse_go_duration(text).map_err(|e| e.to_string())?;
    let (min, max) = (
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(8760 * 3600),
    );
    if ttl < min || ttl > max {
        return Err("must be between 1m and 8760h".into());
    }
    Ok(ttl)
}

/// The `[tls]` table: HTTPS for the HTTP API. The files are read (and checked: a certificate
/// in the file, the key matching it) when the server starts, before any port is bound.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate, PEM, its chain after it (`--tls-cert`); with `key_file`.
    /// Default: unset (plain HTTP).
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key, PEM: PKCS#8, PKCS#1 or SEC1 (`--tls-key`).
    pub key_file: Option<PathBuf>,
    /// CA certificate(s), PEM: clients must present a certificate one of them signed
    /// (`--tls-client-ca`; Consul's `verify_incoming`). Default: unset (no client
    /// certificate asked for).
    pub client_ca_file: Option<PathBuf>,
    /// CA certificate(s), PEM, that the other servers' certificates chain to: servers sharing
    /// etcd forward requests to each other over HTTPS, check the other's certificate against
    /// them (for its IP address) and show their own (`--tls-ca`; Consul's `ca_file`).
    /// Default: `client_ca_file`.
    pub ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// The HTTP API serves HTTPS.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// The table checked without reading the files: a certificate and key given together,
    /// and a client CA only with them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(ConfigError::Invalid(
                "tls.cert_file (--tls-cert) needs tls.key_file (--tls-key)".into(),
            )),
            (None, Some(_)) => Err(ConfigError::Invalid(
                "tls.key_file (--tls-key) needs tls.cert_file (--tls-cert)".into(),
            )),
            (None, None) if self.ca_file.is_some() => Err(ConfigError::Invalid(
                "tls.ca_file (--tls-ca) needs TLS: give tls.cert_file (--tls-cert) and \
                 tls.key_file (--tls-key) too"
                    .into(),
            )),
            (None, None) if self.client_ca_file.is_some() => Err(ConfigError::Invalid(
                "tls.client_ca_file (--tls-client-ca) needs TLS: give tls.cert_file \
                 (--tls-cert) and tls.key_file (--tls-key) too"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Where the catalog is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// redb in the data directory: one server.
    #[default]
    Embedded,
    /// An etcd cluster (`[etcd]`).
    Etcd,
}

impl FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "embedded" => Ok(Self::Embedded),
            "etcd" => Ok(Self::Etcd),
            other => Err(format!("{other:?}: want embedded or etcd")),
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Embedded => "embedded",
            Self::Etcd => "etcd",
        })
    }
}

/// The `[etcd]` table: the cluster of `store = "etcd"`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Client URLs of the members, `http://HOST:PORT` or `https://HOST:PORT` (`--etcd`).
    pub endpoints: Vec<String>,
    /// Every key Trellis writes starts with it (`--etcd-prefix`). Default `/trellis/`.
    pub prefix: String,
    /// etcd's authentication (`--etcd-username`, `--etcd-password` or
    /// `TRELLIS_ETCD_PASSWORD`). Default: none.
    pub username: Option<String>,
    pub password: Option<String>,
    /// CA certificate (PEM) of the members' certificates (`--etcd-ca-file`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) (`--etcd-cert-file`, `--etcd-key-file`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Most operations per etcd transaction: the cluster's `--max-txn-ops`. Default 128.
    pub max_txn_ops: usize,
    /// One server holds the store at a time, through a lock bound to a lease it renews; a
    /// standby server takes over this long after the holder stopped renewing it (killed or
    /// cut off), at once when it stops cleanly (`--etcd-lease-ttl`). 2s to 5m. Default `5s`.
    pub lease_ttl: String,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            prefix: "/trellis/".into(),
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            max_txn_ops: 128,
            lease_ttl: "5s".into(),
        }
    }
}

// The password never reaches a log line.
impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("max_txn_ops", &self.max_txn_ops)
            .field("lease_ttl", &self.lease_ttl)
            .finish()
    }
}

impl EtcdConfig {
    /// `lease_ttl` as a duration, or why it is not one in range.
    pub fn lease(&self) -> Result<std::time::Duration, ConfigError> {
        let ttl = trellis_types::parse_go_duration(&self.lease_ttl).map_err(|e| {
            ConfigError::Invalid(format!(
                "etcd.lease_ttl (--etcd-lease-ttl) {:?}: {e}",
                self.lease_ttl
            ))
        })?;
        if !(std::time::Duration::from_secs(2)..=std::time::Duration::from_secs(300)).contains(&ttl)
        {
            return Err(ConfigError::Invalid(format!(
                "etcd.lease_ttl (--etcd-lease-ttl) {:?} must be from 2s to 5m",
                self.lease_ttl
            )));
        }
        Ok(ttl)
    }

    fn validate(&self, store: StoreKind, dev: bool) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        match store {
            StoreKind::Embedded if !self.endpoints.is_empty() => invalid(
                "etcd endpoints are given but the store is embedded: add --store etcd (store = \"etcd\")",
            ),
            StoreKind::Embedded => Ok(()),
            StoreKind::Etcd if dev => {
                invalid("--dev keeps everything in memory: it cannot use --store etcd")
            }
            StoreKind::Etcd if self.endpoints.is_empty() => {
                invalid("--store etcd needs the cluster: --etcd URL[,URL...] (etcd.endpoints)")
            }
            StoreKind::Etcd => {
                for url in &self.endpoints {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(ConfigError::Invalid(format!(
                            "etcd endpoint {url:?} must be http://HOST:PORT or https://HOST:PORT"
                        )));
                    }
                }
                if self.max_txn_ops < 2 {
                    return invalid("etcd.max_txn_ops must be at least 2");
                }
                if self.username.is_some() != self.password.is_some() {
                    return invalid(
                        "etcd authentication needs both --etcd-username and --etcd-password",
                    );
                }
                if self.cert_file.is_some() != self.key_file.is_some() {
                    return invalid("--etcd-cert-file and --etcd-key-file go together");
                }
                self.lease().map(drop)
            }
        }
    }
}

/// `[acl.tokens]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclTokens {
    /// The secret of a management token created at start if the ACL system was never
    /// bootstrapped (Consul's `initial_management`); `PUT /v1/acl/bootstrap` is then refused.
    pub initial_management: Option<String>,
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclDefaultPolicy {
    #[default]
    Allow,
    Deny,
}

impl FromStr for AclDefaultPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            other => Err(format!("{other:?}: want allow or deny")),
        }
    }
}

impl fmt::Display for AclDefaultPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

/// Consul's answer (with status 500) to a script check registered through the HTTP API while
/// script checks are disabled (`agent.go`, for a remote source).
pub const SCRIPTS_DISABLED: &str = "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true";

/// The span store's default bound: 256 MiB.
pub const DEFAULT_TRACE_STORE_BYTES: usize = 256 << 20;

/// The smallest span store bound accepted: 1 MiB.
pub const MIN_TRACE_STORE_BYTES: usize = 1 << 20;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http: HostPort {
                host: "127.0.0.1".into(),
                port: 8500,
            },
            data_dir: PathBuf::from("./trellis-data"),
            dev: false,
            store: StoreKind::Embedded,
            etcd: EtcdConfig::default(),
            node_name: default_node_name(),
            datacenter: "dc1".into(),
            max_waiters: 100_000,
            check_concurrency: 64,
            max_queue: 65_536,
            dns: None,
            dns_domain: "consul".into(),
            dns_ttl: DnsTtl::default(),
            enable_script_checks: false,
            otlp: None,
            otlp_grpc: None,
            otlp_inflight_bytes: crate::traces::pressure::DEFAULT_INFLIGHT_BYTES,
            trace_store_bytes: DEFAULT_TRACE_STORE_BYTES,
            ui_dir: None,
            acl: AclConfig::default(),
            connect: ConnectConfig::default(),
            tls: TlsConfig::default(),
            config_file: None,
        }
    }
}

fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "trellis".into())
}

/// A listen address as given: a host (IP address or name) and a port. Names are resolved when
/// the server starts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HostPort {
    /// An IP address (IPv6 without brackets) or a host name.
    pub host: String,
    pub port: u16,
}

/// Why a `HOST:PORT` value is not one. The message leaves the value out: whoever shows it
/// (a flag parser, a config file position) already points at the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}; expected HOST:PORT, e.g. 127.0.0.1:8500, localhost:8500 or [::1]:8500")]
pub struct InvalidHostPort {
    reason: &'static str,
}

impl FromStr for HostPort {
    type Err = InvalidHostPort;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidHostPort { reason };
        let (host, port) = if let Some(rest) = value.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| invalid("missing ']'"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(invalid("not an IPv6 address in brackets"));
            }
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| invalid("missing port"))?;
            (host, port)
        } else {
            let (host, port) = value
                .rsplit_once(':')
                .ok_or_else(|| invalid("missing port"))?;
            if host.contains(':') {
                return Err(invalid("IPv6 addresses go in brackets"));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        let host_ok = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
        if !host_ok || host.len() > 253 {
            return Err(invalid("invalid host name"));
        }
        if port.is_empty() {
            return Err(invalid("missing port"));
        }
        let port = port
            .parse()
            .map_err(|_| invalid("the port must be a number from 0 to 65535"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl TryFrom<String> for HostPort {
    type Error = InvalidHostPort;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<std::net::SocketAddr> for HostPort {
    fn from(addr: std::net::SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where a listener (the DNS interface, the OTLP receiver) listens, or that it is off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum DnsListen {
    Off,
    At(HostPort),
}

impl FromStr for DnsListen {
    type Err = InvalidHostPort;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        value.parse().map(Self::At)
    }
}

impl TryFrom<String> for DnsListen {
    type Error = InvalidHostPort;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl fmt::Display for DnsListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::At(addr) => addr.fmt(f),
        }
    }
}

/// A DNS TTL in whole seconds, written as a Go duration (`"30s"`, `"1m"`) or a number of seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "TtlText")]
pub struct DnsTtl(pub u32);

/// How a TTL may be written in TOML: a number or a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum TtlText {
    Seconds(u32),
    Text(String),
}

impl TryFrom<TtlText> for DnsTtl {
    type Error = String;

    fn try_from(value: TtlText) -> Result<Self, Self::Error> {
        match value {
            TtlText::Seconds(seconds) => Ok(Self(seconds)),
            TtlText::Text(text) => text.parse(),
        }
    }
}

impl FromStr for DnsTtl {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if let Ok(seconds) = value.trim().parse::<u32>() {
            return Ok(Self(seconds));
        }
        let duration = trellis_types::parse_go_duration(value)
            .map_err(|e| format!("{e}; expected seconds or a duration such as 30s or 5m"))?;
        if duration.subsec_nanos() != 0 {
            return Err("a DNS TTL is whole seconds".into());
        }
        u32::try_from(duration.as_secs())
            .map(Self)
            .map_err(|_| "a DNS TTL must fit in 32 bits of seconds".into())
    }
}

impl fmt::Display for DnsTtl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// TOML that does not parse or does not fit: one line with where and what.
    #[error("{at}{message}")]
    Parse { at: String, message: String },
    /// A configuration file that cannot be read or does not parse: one line naming it.
    #[error("{0}")]
    File(String),
}

impl ConfigError {
    fn parse(text: &str, error: &toml::de::Error) -> Self {
        let at = match error.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                format!("line {line}, column {column}: ")
            }
            None => String::new(),
        };
        // toml's messages are one line, but keep the answer one line whatever they become.
        let message = error
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Self::Parse { at, message }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

impl ServerConfig {
    /// Parses TOML text (file IO stays with the caller).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::parse(text, &e))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.connect.validate()?;
        self.tls.validate()?;
        self.etcd.validate(self.store, self.dev)?;
        let label_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !label_ok(&self.datacenter) {
            return Err(ConfigError::Invalid(format!(
                "datacenter {:?} must be 1-63 letters, digits, '-' or '_'",
                self.datacenter
            )));
        }
        if self.node_name.is_empty() || self.node_name.len() > 128 || self.node_name.contains('/') {
            return Err(ConfigError::Invalid(format!(
                "invalid node name {:?}",
                self.node_name
            )));
        }
        if !dns_domain_ok(&self.dns_domain) {
            return Err(ConfigError::Invalid(format!(
                "DNS domain {:?} must be DNS labels of letters, digits and '-' joined by '.'",
                self.dns_domain
            )));
        }
        if self.max_waiters == 0 || self.check_concurrency == 0 || self.max_queue == 0 {
            return Err(ConfigError::Invalid(
                "max_waiters, check_concurrency and max_queue must be positive".into(),
            ));
        }
        if self.otlp_inflight_bytes == 0 {
            return Err(ConfigError::Invalid(
                "otlp_inflight_bytes must be positive".into(),
            ));
        }
        if self.trace_store_bytes < MIN_TRACE_STORE_BYTES {
            return Err(ConfigError::Invalid(format!(
                "trace_store_bytes {} is below the minimum of {MIN_TRACE_STORE_BYTES} (1 MiB)",
                self.trace_store_bytes
            )));
        }
        Ok(())
    }

    /// The settings (TOML key names) in which `other` differs from this configuration; the
    /// file it came from is not a setting.
    pub fn differences(&self, other: &ServerConfig) -> Vec<&'static str> {
        let mut names = Vec::new();
        let mut differs = |name, changed| {
            if changed {
                names.push(name);
            }
        };
        differs("http", self.http != other.http);
        differs("data_dir", self.data_dir != other.data_dir);
        differs("dev", self.dev != other.dev);
        differs("store", self.store != other.store);
        differs("etcd", self.etcd != other.etcd);
        differs("node_name", self.node_name != other.node_name);
        differs("datacenter", self.datacenter != other.datacenter);
        differs("max_waiters", self.max_waiters != other.max_waiters);
        differs(
            "check_concurrency",
            self.check_concurrency != other.check_concurrency,
        );
        differs("max_queue", self.max_queue != other.max_queue);
        differs("dns", self.dns != other.dns);
        differs("dns_domain", self.dns_domain != other.dns_domain);
        differs("dns_ttl", self.dns_ttl != other.dns_ttl);
        differs(
            "enable_script_checks",
            self.enable_script_checks != other.enable_script_checks,
        );
        differs("otlp", self.otlp != other.otlp);
        differs("otlp_grpc", self.otlp_grpc != other.otlp_grpc);
        differs(
            "otlp_inflight_bytes",
            self.otlp_inflight_bytes != other.otlp_inflight_bytes,
        );
        differs(
            "trace_store_bytes",
            self.trace_store_bytes != other.trace_store_bytes,
        );
        differs("tls", self.tls != other.tls);
        names
    }

    /// Where the DNS interface listens, if it is on (see `dns`).
    pub fn dns_listen(&self) -> Option<HostPort> {
        match &self.dns {
            Some(DnsListen::Off) => None,
            Some(DnsListen::At(addr)) => Some(addr.clone()),
            None => Some(HostPort {
                host: "127.0.0.1".into(),
                port: if self.http.port == 0 { 0 } else { 8600 },
            }),
        }
    }
}

impl ServerConfig {
    /// Where the OTLP/HTTP receiver listens, if it is on (see `otlp`).
    pub fn otlp_listen(&self) -> Option<HostPort> {
        match &self.otlp {
            Some(DnsListen::Off) => None,
            Some(DnsListen::At(addr)) => Some(addr.clone()),
            None => Some(HostPort {
                host: "127.0.0.1".into(),
                port: if self.http.port == 0 { 0 } else { 4318 },
            }),
        }
    }

    /// Where the OTLP/gRPC receiver listens, if it is on (see `otlp_grpc`).
    pub fn otlp_grpc_listen(&self) -> Option<HostPort> {
        match &self.otlp_grpc {
            Some(DnsListen::Off) => None,
            Some(DnsListen::At(addr)) => Some(addr.clone()),
            None => Some(HostPort {
                host: "127.0.0.1".into(),
                port: if self.http.port == 0 { 0 } else { 4317 },
            }),
        }
    }
}

/// A domain such as `consul` or `service.example.` (a trailing dot is allowed).
fn dns_domain_ok(domain: &str) -> bool {
    let name = domain.strip_suffix('.').unwrap_or(domain);
    !name.is_empty()
        && name.len() <= 200
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml_with_defaults() {
        let c =
            ServerConfig::from_toml("http = \"0.0.0.0:9500\"\ndatacenter = \"east\"\n").unwrap();
        assert_eq!(c.http.port, 9500);
        assert_eq!(c.datacenter, "east");
        assert_eq!(c.max_waiters, 100_000);
        c.validate().unwrap();
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        assert!(ServerConfig::from_toml("htp = \"x\"").is_err());
        assert!(!ServerConfig::default().enable_script_checks);
        let scripts = ServerConfig::from_toml("enable_script_checks = true").unwrap();
        assert!(scripts.enable_script_checks);
        let c = ServerConfig {
            datacenter: "a b".into(),
            ..ServerConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_parse_error_is_one_line_with_line_and_column() {
        let e = ServerConfig::from_toml("dev = true\n  htp = \"x\"\n").unwrap_err();
        let text = e.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(
            text.starts_with("line 2, column 3: unknown field `htp`"),
            "{text}"
        );
        let e = ServerConfig::from_toml("http = 8500")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 1, column 8: "), "{e}");
        let e = ServerConfig::from_toml("http = \"localhost\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing port"), "{e}");
    }

    #[test]
    fn dns_settings_parse_and_default() {
        let c = ServerConfig::from_toml(
            "dns = \"127.0.0.1:53\"\ndns_domain = \"example.\"\ndns_ttl = \"1m\"\n",
        )
        .unwrap();
        assert_eq!(c.dns_listen().unwrap().to_string(), "127.0.0.1:53");
        assert_eq!(c.dns_ttl, DnsTtl(60));
        c.validate().unwrap();
        let off = ServerConfig::from_toml("dns = \"off\"\ndns_ttl = 5").unwrap();
        assert_eq!(off.dns_listen(), None);
        assert_eq!(off.dns_ttl, DnsTtl(5));
        assert_eq!(
            ServerConfig::default().dns_listen().unwrap().to_string(),
            "127.0.0.1:8600"
        );
        let any_port = ServerConfig {
            http: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        };
        assert_eq!(any_port.dns_listen().unwrap().port, 0);
        assert!(ServerConfig::from_toml("dns_ttl = \"1.5s\"").is_err());
        for bad in ["", ".", "a..b", "a b"] {
            let c = ServerConfig {
                dns_domain: bad.into(),
                ..ServerConfig::default()
            };
            assert!(c.validate().is_err(), "{bad:?}");
        }
        for text in ["off", "[::1]:53", "localhost:8600"] {
            assert_eq!(text.parse::<DnsListen>().unwrap().to_string(), text);
        }
        assert_eq!("30s".parse::<DnsTtl>().unwrap().to_string(), "30s");
    }

    #[test]
    fn host_port_accepts_names_and_bracketed_ipv6() {
        let hp = |s: &str| s.parse::<HostPort>();
        assert_eq!(
            hp("localhost:8500").unwrap(),
            HostPort {
                host: "localhost".into(),
                port: 8500
            }
        );
        assert_eq!(hp("[::1]:0").unwrap().host, "::1");
        assert_eq!(hp("[::1]:8500").unwrap().to_string(), "[::1]:8500");
        assert_eq!(hp("10.0.0.1:1").unwrap().to_string(), "10.0.0.1:1");
        for (bad, why) in [
            ("localhost", "missing port"),
            ("localhost:", "missing port"),
            (":8500", "missing host"),
            ("localhost:http", "port must be a number"),
            ("localhost:70000", "port must be a number"),
            ("::1:8500", "brackets"),
            ("[::1]", "missing port"),
            ("[nope]:1", "IPv6"),
            ("a b:1", "invalid host"),
        ] {
            let e = hp(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains("HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn otlp_and_trace_store_settings_parse_default_and_validate() {
        let c = ServerConfig::from_toml("otlp = \"0.0.0.0:4318\"\ntrace_store_bytes = 2097152\n")
            .unwrap();
        assert_eq!(c.otlp_listen().unwrap().to_string(), "0.0.0.0:4318");
        assert_eq!(c.trace_store_bytes, 2 << 20);
        c.validate().unwrap();
        let off = ServerConfig::from_toml("otlp = \"off\"").unwrap();
        assert_eq!(off.otlp_listen(), None);
        let default = ServerConfig::default();
        assert_eq!(default.otlp_listen().unwrap().to_string(), "127.0.0.1:4318");
        assert_eq!(default.trace_store_bytes, DEFAULT_TRACE_STORE_BYTES);
        let any_port = ServerConfig::from_toml("http = \"127.0.0.1:0\"").unwrap();
        assert_eq!(any_port.otlp_listen().unwrap().port, 0);
        let small = ServerConfig::from_toml("trace_store_bytes = 1000").unwrap();
        assert!(small.validate().is_err());
        let mut other = default.clone();
        other.trace_store_bytes = 5 << 20;
        other.otlp = Some(DnsListen::Off);
        assert_eq!(default.differences(&other), ["otlp", "trace_store_bytes"]);
    }

    #[test]
    fn otlp_grpc_and_inflight_settings_parse_default_and_validate() {
        let c = ServerConfig::from_toml(
            "otlp_grpc = \"0.0.0.0:4317\"\notlp_inflight_bytes = 1048576\n",
        )
        .unwrap();
        assert_eq!(c.otlp_grpc_listen().unwrap().to_string(), "0.0.0.0:4317");
        assert_eq!(c.otlp_inflight_bytes, 1 << 20);
        let off = ServerConfig::from_toml("otlp_grpc = \"off\"").unwrap();
        assert_eq!(off.otlp_grpc_listen(), None);
        let default = ServerConfig::default();
        assert_eq!(
            default.otlp_grpc_listen().unwrap().to_string(),
            "127.0.0.1:4317"
        );
        assert_eq!(
            default.otlp_inflight_bytes,
            crate::traces::pressure::DEFAULT_INFLIGHT_BYTES
        );
        let any_port = ServerConfig::from_toml("http = \"127.0.0.1:0\"").unwrap();
        assert_eq!(any_port.otlp_grpc_listen().unwrap().port, 0);
        let zero = ServerConfig::from_toml("otlp_inflight_bytes = 0").unwrap();
        assert!(zero.validate().is_err());
        let mut other = default.clone();
        other.otlp_grpc = Some(DnsListen::Off);
        other.otlp_inflight_bytes = 1;
        assert_eq!(
            default.differences(&other),
            ["otlp_grpc", "otlp_inflight_bytes"]
        );
    }

    #[test]
    fn an_operator_ca_needs_its_certificate_and_its_key() {
        let both = ServerConfig::from_toml(
            "[connect]\nca_cert_file = \"/ca.pem\"\nca_key_file = \"/ca.key\"\n",
        )
        .unwrap();
        both.validate().unwrap();
        assert_eq!(both.connect.ca_cert_file, Some(PathBuf::from("/ca.pem")));
        let alone = ServerConfig::from_toml("[connect]\nca_cert_file = \"/ca.pem\"\n").unwrap();
        let error = alone.validate().unwrap_err().to_string();
        assert!(error.contains("needs connect.ca_key_file"), "{error}");
        assert_eq!(
            parse_leaf_ttl("30s").unwrap_err(),
            "must be between 1m and 8760h"
        );
        assert_eq!(
            parse_leaf_ttl("1h").unwrap(),
            std::time::Duration::from_secs(3600)
        );
    }

    #[test]
    fn a_config_file_loads_with_its_flags_over_it_and_names_its_differences() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(&path, "datacenter = \"not a dc!\"\nmax_queue = 9\n").unwrap();
        let file = ConfigFile {
            path: path.clone(),
            overrides: ConfigOverrides {
                datacenter: Some("dc7".into()),
                dev: true,
                ..ConfigOverrides::default()
            },
        };
        let loaded = file.load().unwrap();
        assert_eq!(loaded.datacenter, "dc7");
        assert_eq!(loaded.max_queue, 9);
        assert!(loaded.dev);
        assert_eq!(loaded.config_file.as_ref(), Some(&file));
        let mut other = loaded.clone();
        assert!(loaded.differences(&other).is_empty());
        other.max_queue = 10;
        other.dns_ttl = DnsTtl(5);
        other.config_file = None;
        assert_eq!(loaded.differences(&other), ["max_queue", "dns_ttl"]);

        std::fs::write(&path, "max_queue = 0\n").unwrap();
        let e = file.load().unwrap_err().to_string();
        assert!(e.contains("max_queue must be positive"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = file.load().unwrap_err().to_string();
        assert!(e.starts_with("cannot read "), "{e}");
    }
}
