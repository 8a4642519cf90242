//! `trellis sidecar`: registers one service instance and keeps it registered (see
//! [`crate::registration`]), and proxies the app's traffic in (inbound) and out (outbound).

use crate::admin::Admin;
use crate::client::UpstreamClient;
use crate::config::ServicePolicy;
use crate::discovery::Discovery;
use crate::exporter::start_tracing;
use crate::flags::{PolicyArgs, TracingArgs, duration_arg, parse_in_code, push};
use crate::intentions::Intentions;
use crate::listeners::{AdminListener, ProxyListener, serve_until};
use crate::mesh_tls::{MESH_META, MeshTls};
use crate::metrics::Metrics;
use crate::proxy::{Mode, Proxy};
use crate::registration::{AppCheck, Registration, keep_registered};
use crate::registry_tls::RegistryTlsArgs;
use crate::server::{bind, local_addr, shutdown_pair};
use crate::upstream::Upstream;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use trellis_types::{CheckDefinition, CheckKind, CheckStatus, ServiceRegistration, Weights};

#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct SidecarArgs {
    /// Registry HTTP address; several servers of one registry comma-separated, failed over
    /// in turn when one cannot be reached
    #[arg(
        long,
        value_name = "URL[,URL...]",
        env = "TRELLIS_HTTP_ADDR",
        default_value = "http://127.0.0.1:8500"
    )]
    pub registry: String,
    /// Access token for the registry, sent as X-Consul-Token [default: $TRELLIS_HTTP_TOKEN,
    /// else $CONSUL_HTTP_TOKEN, else none]
    #[arg(
        long,
        env = "TRELLIS_HTTP_TOKEN",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub token: Option<String>,
    #[command(flatten)]
    pub registry_tls: RegistryTlsArgs,
    /// Service name to register
    #[arg(long)]
    pub service: String,
    /// The local application, HOST:PORT
    #[arg(long)]
    pub app: String,
    /// Instance ID [default: <service>-<advertise>-<inbound port>]
    #[arg(long)]
    pub id: Option<String>,
    /// Tag (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Metadata K=V (repeatable)
    #[arg(long = "meta", value_name = "K=V")]
    pub meta: Vec<String>,
    /// Listener for other services' calls to this instance
    #[arg(long, default_value = "0.0.0.0:15000")]
    pub inbound: String,
    /// Listener for the app's calls to other services (HTTP proxy or Host routing)
    #[arg(long, default_value = "127.0.0.1:15001")]
    pub outbound: String,
    /// Admin listener (/metrics, /ready, /live, /endpoints)
    #[arg(long, default_value = "127.0.0.1:15090")]
    pub admin: String,
    /// Address registered for the inbound listener: an IP address, or a host name resolved
    /// once at start (a container's or pod's own name) [default: the listener's IP, or
    /// 127.0.0.1 if it listens on all interfaces]
    #[arg(long)]
    pub advertise: Option<String>,
    /// HTTP path of the app's health check; without it the app is checked by TCP connect
    #[arg(long)]
    pub health_path: Option<String>,
    /// How often the app is checked
    #[arg(long, value_parser = trellis_types::parse_go_duration, default_value = "1s")]
    pub check_interval: Duration,
    /// TTL of the registered check: an instance whose sidecar stops reporting turns critical
    #[arg(long, value_parser = trellis_types::parse_go_duration, default_value = "10s")]
    pub ttl: Duration,
    /// The registry removes an instance critical for this long
    #[arg(long, value_parser = trellis_types::parse_go_duration, default_value = "1m")]
    pub deregister_after: Duration,
    /// Mutual TLS in the mesh: the inbound listener takes only callers with a certificate from
    /// the mesh CA that the intentions allow, and calls to other mesh sidecars use this
    /// service's certificate (issued by the registry, renewed automatically)
    #[arg(long)]
    pub mtls: bool,
    /// Runtime worker threads; 1 runs everything on one thread [default: number of cores]
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub workers: Option<usize>,
    /// TOML config file ([defaults], [services.<name>])
    #[arg(long)]
    pub config: Option<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub tracing: TracingArgs,
}

impl SidecarArgs {
    /// The arguments for `service` in front of `app` (`HOST:PORT`), every other field at the
    /// command line's default (without reading `TRELLIS_HTTP_ADDR`).
    pub fn new(service: &str, app: &str) -> Self {
        parse_in_code([
            "sidecar".to_owned(),
            format!("--service={service}"),
            format!("--app={app}"),
        ])
    }

    /// Runtime worker threads asked for (`None`: one per core).
    pub fn workers(&self) -> Option<usize> {
        self.workers
    }

    /// These arguments as a command line (without the subcommand name) that parses back into
    /// an equal value.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        push(&mut args, "--registry", &self.registry);
        if let Some(token) = &self.token {
            push(&mut args, "--token", token);
        }
        args.extend(self.registry_tls.to_args());
        push(&mut args, "--service", &self.service);
        push(&mut args, "--app", &self.app);
        if let Some(id) = &self.id {
            push(&mut args, "--id", id);
        }
        for tag in &self.tags {
            push(&mut args, "--tag", tag);
        }
        for meta in &self.meta {
            push(&mut args, "--meta", meta);
        }
        push(&mut args, "--inbound", &self.inbound);
        push(&mut args, "--outbound", &self.outbound);
        push(&mut args, "--admin", &self.admin);
        if let Some(host) = &self.advertise {
            push(&mut args, "--advertise", host);
        }
        if let Some(path) = &self.health_path {
            push(&mut args, "--health-path", path);
        }
        push(
            &mut args,
            "--check-interval",
            duration_arg(self.check_interval),
        );
        push(&mut args, "--ttl", duration_arg(self.ttl));
        push(
            &mut args,
            "--deregister-after",
            duration_arg(self.deregister_after),
        );
        if self.mtls {
            args.push("--mtls".to_owned());
        }
        if let Some(n) = self.workers {
            push(&mut args, "--workers", n);
        }
        if let Some(path) = &self.config {
            push(&mut args, "--config", path);
        }
        args.extend(self.policy.to_args());
        args.extend(self.tracing.to_args());
        args
    }
}

/// How long the sidecar waits for the registry to issue its certificate at startup.
pub(crate) const MESH_PATIENCE: Duration = Duration::from_secs(30);

/// The inbound side forwards to one local app: retrying it or ejecting it would not help.
fn inbound_policy(policy: &mut ServicePolicy) {
    policy.max_retries = 0;
    policy.outlier.consecutive_failures = 0;
}

fn parse_meta(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(Error::config(format!("--meta {pair:?} is not K=V"))),
        })
        .collect()
}

/// A sidecar whose configuration has been read and validated, ready to bind its ports.
pub struct Sidecar {
    args: SidecarArgs,
    meta: BTreeMap<String, String>,
    metrics: Metrics,
    discovery: Arc<Discovery>,
    /// The policy of the inbound side (the local app).
    own: ServicePolicy,
    check: AppCheck,
    /// Where spans go (`None`: tracing off).
    otlp_endpoint: Option<String>,
}

impl Sidecar {
    /// Reads the config file and validates everything (the registry address too), before any
    /// port is bound.
    pub fn new(args: SidecarArgs) -> Result<Self> {
        trellis_types::registration::validate_service_name(&args.service)
            .map_err(|e| Error::config(e.to_string()))?;
        let meta = parse_meta(&args.meta)?;
        if args
            .app
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(Error::config(format!(
                "--app {:?} is not HOST:PORT",
                args.app
            )));
        }
        if let Some(path) = &args.health_path
            && !path.starts_with('/')
        {
            return Err(Error::config("--health-path must start with '/'"));
        }
        if args.check_interval.is_zero() || args.ttl <= args.check_interval {
            return Err(Error::config("--ttl must be longer than --check-interval"));
        }
        let (_, policies) = args.policy.load(args.config.as_deref())?;
        let mut own = policies.resolve(&args.service, None)?;
        inbound_policy(&mut own);
        let check = AppCheck::new(&args.app, args.health_path.as_deref())?;
        let otlp_endpoint = args.tracing.endpoint(&args.registry)?;
        let metrics = Metrics::new();
        let registry = trellis_client::ClientOptions {
            token: args.token.clone().or_else(trellis_client::token_from_env),
            tls: args.registry_tls.options(),
        };
        let discovery = Arc::new(Discovery::new(
            &args.registry,
            &registry,
            policies,
            metrics.clone(),
        )?);
        Ok(Self {
            args,
            meta,
            metrics,
            discovery,
            own,
            check,
            otlp_endpoint,
        })
    }

    /// Serves until `shutdown` resolves; then deregisters, drains and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Self {
            mut args,
            meta,
            metrics,
            discovery,
            own,
            check,
            otlp_endpoint,
        } = self;
        let inbound = bind(&args.inbound).await?;
        let outbound = bind(&args.outbound).await?;
        let admin_listener = bind(&args.admin).await?;
        let inbound_addr = local_addr(&inbound)?;
        if let Some(host) = &args.advertise {
            args.advertise = Some(advertised_ip(host).await?);
        }
        let mut meta = meta;
        let mut client = UpstreamClient::new(args.policy.pool());
        let mut intentions = None;
        let mesh = if args.mtls {
            // Advertised so that callers in the mesh speak mutual TLS to this instance.
            meta.insert(MESH_META.to_owned(), "true".to_owned());
            let registry = discovery.client();
            let mesh = MeshTls::fetch(registry.clone(), &args.service, MESH_PATIENCE).await?;
            mesh.spawn_maintenance();
            let watched = Intentions::fetch(registry.clone(), &args.service, MESH_PATIENCE).await?;
            watched.spawn_watch();
            client = client.with_mesh(mesh.clone());
            intentions = Some(watched);
            Some(mesh)
        } else {
            None
        };
        let registration = registration(&args, meta, inbound_addr);
        let (exporter, tracer) = start_tracing(
            &args.tracing,
            otlp_endpoint.as_deref(),
            &args.service,
            Some(registration.id.clone()),
            metrics.spans(),
        )?;
        let app = Arc::new(Upstream::fixed(
            &args.service,
            &args.app,
            own,
            metrics.clone(),
        ));
        discovery.watch_policy_of(app.clone(), inbound_policy);
        let proxy = |mode| {
            Proxy::new(mode, discovery.clone(), client.clone(), metrics.clone())
                .with_tracer(tracer.clone())
        };
        let mut inbound_proxy = proxy(Mode::Inbound(app.clone()));
        if let Some(intentions) = intentions {
            inbound_proxy = inbound_proxy.with_intentions(intentions);
        }
        let listeners = vec![
            ProxyListener {
                name: "inbound",
                listener: inbound,
                proxy: Arc::new(inbound_proxy),
                mesh,
            },
            ProxyListener {
                name: "outbound",
                listener: outbound,
                proxy: Arc::new(proxy(Mode::Outbound)),
                mesh: None,
            },
        ];
        let ready = Arc::new(AtomicBool::new(false));
        let admin = Arc::new(Admin {
            metrics,
            discovery: discovery.clone(),
            inbound: Some(app),
            ready: ready.clone(),
        });

        let instance = registration.id.clone();
        let (stop_keeper, keeper_stop) = shutdown_pair();
        let mut keeper = tokio::spawn(keep_registered(
            Registration {
                client: discovery.client().clone(),
                registration,
                check,
                interval: args.check_interval,
                ttl: args.ttl,
                ready: ready.clone(),
            },
            keeper_stop,
        ));
        // Deregister before draining, so callers stop choosing this instance while it still
        // serves what is in flight.
        let deregister = async move {
            stop_keeper.trigger();
            // The keeper finishes a registry call in flight, so a registration cannot land
            // after the deregistration; a registry that hangs does not hold shutdown up.
            if tokio::time::timeout(Duration::from_secs(5), &mut keeper)
                .await
                .is_err()
            {
                keeper.abort();
            }
            ready.store(false, Ordering::Relaxed);
            let client = discovery.client();
            match tokio::time::timeout(Duration::from_secs(5), client.deregister(&instance)).await {
                Ok(Ok(())) => tracing::info!(%instance, "deregistered"),
                Ok(Err(e)) => tracing::warn!(%instance, error = %e, "deregistration failed"),
                Err(_) => tracing::warn!(%instance, "deregistration timed out"),
            }
        };
        serve_until(
            listeners,
            AdminListener {
                listener: admin_listener,
                admin,
            },
            shutdown,
            deregister,
            args.policy.drain_timeout,
        )
        .await?;
        if let Some(exporter) = exporter {
            exporter.shutdown(Duration::from_secs(3)).await;
        }
        Ok(())
    }
}

/// Runs the sidecar until `shutdown` resolves (the binary passes SIGINT/SIGTERM); then
/// deregisters, drains and returns.
pub async fn run_sidecar(
    args: SidecarArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    Sidecar::new(args)?.run(shutdown).await
}

/// `host` as the IP address to register: itself if it is one, else its first address (IPv4
/// first), so the catalog and DNS answers hold an address every caller can dial.
async fn advertised_ip(host: &str) -> Result<String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(host.to_owned());
    }
    let unresolved = |why: String| Error::config(format!("--advertise {host}: {why}"));
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| unresolved(format!("cannot resolve it: {e}")))?
        .collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(addresses.first())
        .map(|a| a.ip().to_string())
        .ok_or_else(|| unresolved("it resolves to no address".to_owned()))
}

/// The instance as registered: the inbound listener's address, with a TTL check that the
/// sidecar keeps passing, and automatic removal if the sidecar dies.
fn registration(
    args: &SidecarArgs,
    meta: BTreeMap<String, String>,
    inbound: SocketAddr,
) -> ServiceRegistration {
    let address = match &args.advertise {
        Some(host) => host.clone(),
        None if inbound.ip().is_unspecified() => "127.0.0.1".to_owned(),
        None => inbound.ip().to_string(),
    };
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("{}-{}-{}", args.service, address, inbound.port()));
    let check = CheckDefinition {
        id: Some(format!("service:{id}")),
        name: Some(format!("sidecar of {}", args.service)),
        service_id: Some(id.clone()),
        notes: "kept passing by trellis sidecar while the app is healthy".to_owned(),
        status: Some(CheckStatus::Critical),
        kind: CheckKind::Ttl { ttl: args.ttl },
        interval: None,
        timeout: None,
        deregister_critical_service_after: Some(args.deregister_after),
        success_before_passing: 0,
        failures_before_critical: 0,
        failures_before_warning: 0,
    };
    ServiceRegistration {
        id,
        name: args.service.clone(),
        tags: args.tags.clone(),
        address,
        port: inbound.port(),
        meta: meta.into(),
        tagged_addresses: BTreeMap::new(),
        weights: Weights::default(),
        enable_tag_override: false,
        checks: vec![check],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::assert_round_trips;

    fn round_trip(args: SidecarArgs) {
        assert_round_trips(&args, args.to_args());
    }

    #[test]
    fn new_fills_the_command_line_defaults_and_round_trips() {
        let args = SidecarArgs::new("users", "127.0.0.1:8081");
        assert_eq!(args.service, "users");
        assert_eq!(args.app, "127.0.0.1:8081");
        assert_eq!(args.registry, "http://127.0.0.1:8500");
        assert_eq!(args.inbound, "0.0.0.0:15000");
        assert_eq!(args.ttl, Duration::from_secs(10));
        assert_eq!(args.policy, PolicyArgs::default());
        round_trip(args);
    }

    #[test]
    fn every_flag_round_trips() {
        let mut args = SidecarArgs {
            token: Some("s3cret".into()),
            id: Some("users-1".into()),
            tags: vec!["v1".into(), "-dash".into()],
            meta: vec!["zone=a".into(), "k=v=w".into()],
            advertise: Some("10.0.0.7".into()),
            health_path: Some("/health".into()),
            check_interval: Duration::from_millis(100),
            ttl: Duration::from_millis(2500),
            deregister_after: Duration::from_secs(90),
            workers: Some(1),
            config: Some("sidecar.toml".into()),
            ..SidecarArgs::new("users", "127.0.0.1:8081")
        };
        args.policy.timeout = Some(Duration::from_secs(2));
        args.policy.rate_limit = Some(50);
        args.registry_tls.client_cert = Some("client.pem".into());
        args.registry_tls.client_key = Some("client.key".into());
        round_trip(args);
    }

    #[tokio::test]
    async fn an_advertised_name_is_registered_as_its_address() {
        assert_eq!(advertised_ip("10.1.2.3").await.unwrap(), "10.1.2.3");
        assert_eq!(advertised_ip("::1").await.unwrap(), "::1");
        // From /etc/hosts: a test sends no DNS query off the machine.
        assert_eq!(advertised_ip("localhost").await.unwrap(), "127.0.0.1");
    }

    #[test]
    fn registration_uses_the_inbound_address_and_a_ttl_check() {
        let args = SidecarArgs::new("users", "127.0.0.1:8081");
        let inbound: SocketAddr = "0.0.0.0:15000".parse().unwrap();
        let r = registration(&args, BTreeMap::new(), inbound);
        assert_eq!(r.id, "users-127.0.0.1-15000");
        assert_eq!((r.address.as_str(), r.port), ("127.0.0.1", 15000));
        assert_eq!(
            r.checks[0].id.as_deref(),
            Some("service:users-127.0.0.1-15000")
        );
        assert!(matches!(r.checks[0].kind, CheckKind::Ttl { .. }));
    }

    #[test]
    fn invalid_arguments_are_refused_before_binding() {
        let bad = |f: fn(&mut SidecarArgs)| {
            let mut args = SidecarArgs::new("users", "127.0.0.1:8081");
            f(&mut args);
            Sidecar::new(args).is_err()
        };
        assert!(bad(|a| a.app = "nowhere".into()));
        assert!(bad(|a| a.service = "bad name".into()));
        assert!(bad(|a| a.meta = vec!["novalue".into()]));
        assert!(bad(|a| a.health_path = Some("health".into())));
        assert!(bad(|a| a.ttl = a.check_interval));
        assert!(bad(|a| a.registry = "ftp://registry".into()));
        assert!(!bad(|_| {}));
    }
}
