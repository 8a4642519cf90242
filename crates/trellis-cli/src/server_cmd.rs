//! `trellis server`: flags over an optional TOML file, logging, and the server's lifecycle.

use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use trellis_server::{
    AclDefaultPolicy, ConfigFile, ConfigOverrides, DnsListen, DnsTtl, HostPort, ServerConfig,
    StoreKind,
};

#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct ServerArgs {
    /// HTTP API address: HOST:PORT, the host an IP address ([::1] for IPv6) or a name
    /// resolved at start [default: 127.0.0.1:8500]
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<HostPort>,
    /// Directory of the durable store [default: ./trellis-data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep everything in memory; write nothing to disk.
    #[arg(long)]
    pub dev: bool,
    /// Where the catalog is kept: embedded (redb in --data-dir) or etcd (the cluster --etcd
    /// names) [default: embedded]
    #[arg(long, value_name = "embedded|etcd")]
    pub store: Option<StoreKind>,
    /// Client URLs of the etcd cluster's members, comma-separated (the configuration's
    /// [etcd] endpoints)
    #[arg(long = "etcd", value_name = "URL[,URL...]", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Prefix of every key Trellis writes in etcd [default: /trellis/]
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// User name for etcd's authentication
    #[arg(long, value_name = "NAME")]
    pub etcd_username: Option<String>,
    /// Password for etcd's authentication [default: $TRELLIS_ETCD_PASSWORD]
    #[arg(
        long,
        value_name = "SECRET",
        env = "TRELLIS_ETCD_PASSWORD",
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,
    /// CA certificate (PEM) the etcd members' certificates are checked against
    #[arg(long, value_name = "FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for an etcd cluster that requires one; with --etcd-key-file
    #[arg(long, value_name = "FILE")]
    pub etcd_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --etcd-cert-file
    #[arg(long, value_name = "FILE")]
    pub etcd_key_file: Option<PathBuf>,
    /// One server holds the store at a time; a standby takes over this long after the holder
    /// stops renewing its lease (at once after a clean stop), 2s to 5m [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub etcd_lease_ttl: Option<String>,
    /// Node name [default: the host name]
    #[arg(long)]
    pub node_name: Option<String>,
    /// Datacenter [default: dc1]
    #[arg(long)]
    pub datacenter: Option<String>,
    /// DNS interface (UDP and TCP): HOST:PORT, or `off` [default: 127.0.0.1:8600; a free
    /// port when --http has port 0]
    #[arg(long, value_name = "HOST:PORT|off")]
    pub dns: Option<DnsListen>,
    /// Domain the DNS interface answers [default: consul]
    #[arg(long, value_name = "DOMAIN")]
    pub dns_domain: Option<String>,
    /// TTL of DNS answers, e.g. 30s [default: 0s]
    #[arg(long, value_name = "DURATION")]
    pub dns_ttl: Option<DnsTtl>,
    /// Run script checks (`Args`) registered through the API, as Consul's
    /// `-enable-script-checks`; off, they are refused. Anyone who can reach the API can then
    /// run commands as this server's user.
    #[arg(long)]
    pub enable_script_checks: bool,
    /// OTLP/HTTP trace receiver (POST /v1/traces): HOST:PORT, or `off` [default:
    /// 127.0.0.1:4318; a free port when --http has port 0]
    #[arg(long, value_name = "HOST:PORT|off")]
    pub otlp: Option<DnsListen>,
    /// OTLP/gRPC trace receiver (TraceService/Export, no TLS): HOST:PORT, or `off` [default:
    /// 127.0.0.1:4317; a free port when --http has port 0]
    #[arg(long, value_name = "HOST:PORT|off")]
    pub otlp_grpc: Option<DnsListen>,
    /// Most payload bytes of OTLP requests worked on at once; more are answered 429 /
    /// RESOURCE_EXHAUSTED with a retry delay [default: 67108864 (64 MiB)]
    #[arg(long, value_name = "BYTES")]
    pub otlp_inflight_bytes: Option<usize>,
    /// Most bytes of spans kept in memory; the oldest traces are evicted beyond it [default:
    /// 268435456 (256 MiB)]
    #[arg(long, value_name = "BYTES")]
    pub trace_store_bytes: Option<usize>,
    /// Serve the dashboard (/ui/) from this directory, read on every request, instead of the
    /// copy built into the binary (for working on the dashboard)
    #[arg(long, value_name = "DIR")]
    pub ui_dir: Option<PathBuf>,
    /// What a request may do when no rule of its token decides: allow or deny (the
    /// configuration's [acl] default_policy) [default: allow]
    #[arg(long, value_name = "allow|deny")]
    pub acl_default_policy: Option<AclDefaultPolicy>,
    /// How long the leaf certificates the built-in CA issues are valid, 1m to 8760h (the
    /// configuration's [connect] leaf_cert_ttl) [default: 24h]
    #[arg(long, value_name = "DURATION")]
    pub leaf_cert_ttl: Option<String>,
    /// An operator's root CA certificate (PEM) to sign leaf certificates with instead of a
    /// root made by the server; needs --ca-key (the configuration's [connect] ca_cert_file)
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// The private key of --ca-cert (PEM, PKCS#8, unencrypted) (the configuration's
    /// [connect] ca_key_file)
    #[arg(long, value_name = "FILE")]
    pub ca_key: Option<PathBuf>,
    /// Serve the HTTP API over HTTPS with this certificate (PEM, its chain after it); needs
    /// --tls-key (the configuration's [tls] cert_file)
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1) (the configuration's [tls]
    /// key_file)
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require HTTPS clients to present a certificate signed by this CA (PEM), as Consul's
    /// verify_incoming (the configuration's [tls] client_ca_file)
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// The CA (PEM) that the other servers' certificates chain to, when servers sharing etcd
    /// forward to each other over HTTPS (the configuration's [tls] ca_file; default: the
    /// client CA)
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// TOML configuration file; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl ServerArgs {
    /// These arguments as a command line (without the subcommand name) that parses back into
    /// an equal value.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(http) = &self.http {
            args.push(format!("--http={http}"));
        }
        if let Some(dir) = &self.data_dir {
            args.push(format!("--data-dir={}", dir.display()));
        }
        if self.dev {
            args.push("--dev".to_owned());
        }
        if let Some(store) = self.store {
            args.push(format!("--store={store}"));
        }
        if !self.etcd_endpoints.is_empty() {
            args.push(format!("--etcd={}", self.etcd_endpoints.join(",")));
        }
        if let Some(prefix) = &self.etcd_prefix {
            args.push(format!("--etcd-prefix={prefix}"));
        }
        if let Some(user) = &self.etcd_username {
            args.push(format!("--etcd-username={user}"));
        }
        if let Some(password) = &self.etcd_password {
            args.push(format!("--etcd-password={password}"));
        }
        if let Some(ttl) = &self.etcd_lease_ttl {
            args.push(format!("--etcd-lease-ttl={ttl}"));
        }
        for (flag, path) in [
            ("--etcd-ca-file", &self.etcd_ca_file),
            ("--etcd-cert-file", &self.etcd_cert_file),
            ("--etcd-key-file", &self.etcd_key_file),
        ] {
            if let Some(path) = path {
                args.push(format!("{flag}={}", path.display()));
            }
        }
        if let Some(name) = &self.node_name {
            args.push(format!("--node-name={name}"));
        }
        if let Some(dc) = &self.datacenter {
            args.push(format!("--datacenter={dc}"));
        }
        if let Some(dns) = &self.dns {
            args.push(format!("--dns={dns}"));
        }
        if let Some(domain) = &self.dns_domain {
            args.push(format!("--dns-domain={domain}"));
        }
        if let Some(ttl) = &self.dns_ttl {
            args.push(format!("--dns-ttl={ttl}"));
        }
        if self.enable_script_checks {
            args.push("--enable-script-checks".to_owned());
        }
        if let Some(otlp) = &self.otlp {
            args.push(format!("--otlp={otlp}"));
        }
        if let Some(grpc) = &self.otlp_grpc {
            args.push(format!("--otlp-grpc={grpc}"));
        }
        if let Some(bytes) = self.otlp_inflight_bytes {
            args.push(format!("--otlp-inflight-bytes={bytes}"));
        }
        if let Some(bytes) = self.trace_store_bytes {
            args.push(format!("--trace-store-bytes={bytes}"));
        }
        if let Some(dir) = &self.ui_dir {
            args.push(format!("--ui-dir={}", dir.display()));
        }
        if let Some(policy) = self.acl_default_policy {
            args.push(format!("--acl-default-policy={policy}"));
        }
        if let Some(ttl) = &self.leaf_cert_ttl {
            args.push(format!("--leaf-cert-ttl={ttl}"));
        }
        if let Some(path) = &self.ca_cert {
            args.push(format!("--ca-cert={}", path.display()));
        }
        if let Some(path) = &self.ca_key {
            args.push(format!("--ca-key={}", path.display()));
        }
        for (flag, path) in [
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            ("--tls-client-ca", &self.tls_client_ca),
            ("--tls-ca", &self.tls_ca),
        ] {
            if let Some(path) = path {
                args.push(format!("{flag}={}", path.display()));
            }
        }
        if let Some(path) = &self.config {
            args.push(format!("--config={}", path.display()));
        }
        args
    }

    fn into_config(self) -> anyhow::Result<ServerConfig> {
        let overrides = ConfigOverrides {
            http: self.http,
            data_dir: self.data_dir,
            dev: self.dev,
            store: self.store,
            etcd_endpoints: self.etcd_endpoints,
            etcd_prefix: self.etcd_prefix,
            etcd_username: self.etcd_username,
            etcd_password: self.etcd_password,
            etcd_ca_file: self.etcd_ca_file,
            etcd_cert_file: self.etcd_cert_file,
            etcd_key_file: self.etcd_key_file,
            etcd_lease_ttl: self.etcd_lease_ttl,
            node_name: self.node_name,
            datacenter: self.datacenter,
            dns: self.dns,
            dns_domain: self.dns_domain,
            dns_ttl: self.dns_ttl,
            enable_script_checks: self.enable_script_checks,
            otlp: self.otlp,
            otlp_grpc: self.otlp_grpc,
            otlp_inflight_bytes: self.otlp_inflight_bytes,
            trace_store_bytes: self.trace_store_bytes,
            ui_dir: self.ui_dir,
            acl_default_policy: self.acl_default_policy,
            leaf_cert_ttl: self.leaf_cert_ttl,
            ca_cert_file: self.ca_cert,
            ca_key_file: self.ca_key,
            tls_cert_file: self.tls_cert,
            tls_key_file: self.tls_key,
            tls_client_ca_file: self.tls_client_ca,
            tls_ca_file: self.tls_ca,
        };
        // With a file, the server keeps its path and these flags, so `/v1/agent/reload` reads
        // it again the same way.
        if let Some(path) = self.config {
            return Ok(ConfigFile { path, overrides }.load()?);
        }
        let mut config = ServerConfig::default();
        overrides.apply(&mut config);
        config.validate()?;
        Ok(config)
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    if config.enable_script_checks {
        tracing::warn!("script checks are enabled: anyone who can reach the API can run commands");
    }
    let storage = if config.dev {
        "in memory (--dev)".to_owned()
    } else if config.store == StoreKind::Etcd {
        format!(
            "in etcd at {} under {}",
            config.etcd.endpoints.join(","),
            config.etcd.prefix
        )
    } else {
        config.data_dir.display().to_string()
    };
    let scheme = if config.tls.enabled() {
        "https"
    } else {
        "http"
    };
    let running = trellis_server::start(config, crate::shutdown::signal()).await?;
    println!(
        "trellis server: HTTP API listening on {scheme}://{}",
        running.local_addr
    );
    if let Some(dns) = running.dns_addr {
        println!("trellis server: DNS listening on {dns} (UDP and TCP)");
    }
    if let Some(otlp) = running.otlp_addr {
        println!("trellis server: OTLP listening on http://{otlp} (POST /v1/traces)");
    }
    if let Some(grpc) = running.otlp_grpc_addr {
        println!("trellis server: OTLP/gRPC listening on http://{grpc} (TraceService/Export)");
    }
    println!(
        "trellis server: data {storage}, {} instances restored",
        running.instances_restored
    );
    let _ = std::io::stdout().flush();
    running.wait().await?;
    tracing::info!("server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        args: ServerArgs,
    }

    fn parse(args: &[String]) -> ServerArgs {
        let argv = std::iter::once("server".to_owned()).chain(args.iter().cloned());
        Line::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn the_etcd_flags_round_trip_and_reach_the_config() {
        let args = ServerArgs {
            store: Some(StoreKind::Etcd),
            etcd_endpoints: vec!["http://10.0.0.1:2379".into(), "http://10.0.0.2:2379".into()],
            etcd_prefix: Some("/shop/".into()),
            etcd_username: Some("trellis".into()),
            etcd_password: Some("secret".into()),
            etcd_ca_file: Some("etcd-ca.pem".into()),
            etcd_cert_file: Some("etcd.pem".into()),
            etcd_key_file: Some("etcd.key".into()),
            etcd_lease_ttl: Some("3s".into()),
            ..ServerArgs::default()
        };
        assert_eq!(parse(&args.to_args()), args);
        let config = args.into_config().unwrap();
        assert_eq!(config.store, StoreKind::Etcd);
        assert_eq!(config.etcd.endpoints.len(), 2);
        assert_eq!(config.etcd.prefix, "/shop/");
        assert_eq!(config.etcd.password.as_deref(), Some("secret"));
        assert!(!format!("{:?}", config.etcd).contains("secret"));
    }

    #[test]
    fn to_args_round_trips_with_the_dns_flags() {
        let args = ServerArgs {
            http: Some("127.0.0.1:0".parse().unwrap()),
            dev: true,
            dns: Some("[::1]:8600".parse().unwrap()),
            dns_domain: Some("example".into()),
            dns_ttl: Some("30s".parse().unwrap()),
            enable_script_checks: true,
            otlp: Some("127.0.0.1:0".parse().unwrap()),
            otlp_grpc: Some(DnsListen::Off),
            otlp_inflight_bytes: Some(4096),
            trace_store_bytes: Some(1 << 20),
            tls_cert: Some("api.pem".into()),
            tls_key: Some("api.key".into()),
            tls_client_ca: Some("clients-ca.pem".into()),
            tls_ca: Some("servers-ca.pem".into()),
            ca_cert: Some("ca.pem".into()),
            ca_key: Some("ca.key".into()),
            ..ServerArgs::default()
        };
        assert_eq!(parse(&args.to_args()), args);
        assert_eq!(
            args.clone().into_config().unwrap().tls.ca_file.as_deref(),
            Some(std::path::Path::new("servers-ca.pem"))
        );
        assert_eq!(
            args.clone().into_config().unwrap().trace_store_bytes,
            1 << 20
        );
        assert!(args.clone().into_config().unwrap().enable_script_checks);
        let config = args.clone().into_config().unwrap();
        assert_eq!(config.otlp_grpc_listen(), None);
        assert_eq!(config.otlp_inflight_bytes, 4096);
        assert!(
            !ServerArgs::default()
                .into_config()
                .unwrap()
                .enable_script_checks
        );
        let off = ServerArgs {
            dns: Some(DnsListen::Off),
            ..ServerArgs::default()
        };
        assert_eq!(off.to_args(), ["--dns=off"]);
        assert_eq!(parse(&off.to_args()), off);
        assert_eq!(parse(&[]), ServerArgs::default());
    }

    #[test]
    fn dns_flags_override_the_config() {
        let args = parse(&["--dns=off".into(), "--dns-ttl=5".into()]);
        let config = args.into_config().unwrap();
        assert_eq!(config.dns_listen(), None);
        assert_eq!(config.dns_ttl, DnsTtl(5));
        let bad = Line::try_parse_from(["server", "--dns", "nowhere"]);
        assert!(bad.is_err());
    }
}
