//! `trellis sidecar`: registers one service instance, keeps its TTL check in step with the
//! app's health, and proxies the app's traffic in (inbound) and out (outbound).

use crate::admin::Admin;
use crate::body::Body;
use crate::client::UpstreamClient;
use crate::config::ServicePolicy;
use crate::discovery::{Discovery, delay};
use crate::flags::PolicyArgs;
use crate::metrics::Metrics;
use crate::proxy::{Mode, Proxy};
use crate::runtime::{announce, block_on, signal};
use crate::server::{bind, local_addr, serve, shutdown_pair};
use crate::upstream::Upstream;
use crate::{Error, Result};
use hyper::Request;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use trellis_client::{Client, probe};
use trellis_resilience::{Backoff, Jitter};
use trellis_types::{CheckDefinition, CheckKind, CheckStatus, ServiceRegistration, Weights};

fn duration(text: &str) -> std::result::Result<Duration, String> {
    trellis_types::parse_go_duration(text)
}

#[derive(Debug, Clone, clap::Args)]
pub struct SidecarArgs {
    /// Registry HTTP address
    #[arg(
        long,
        env = "TRELLIS_HTTP_ADDR",
        default_value = "http://127.0.0.1:8500"
    )]
    pub registry: String,
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
    /// Address registered for the inbound listener [default: its IP, or 127.0.0.1 if it
    /// listens on all interfaces]
    #[arg(long)]
    pub advertise: Option<String>,
    /// HTTP path of the app's health check; without it the app is checked by TCP connect
    #[arg(long)]
    pub health_path: Option<String>,
    /// How often the app is checked
    #[arg(long, value_parser = duration, default_value = "1s")]
    pub check_interval: Duration,
    /// TTL of the registered check: an instance whose sidecar stops reporting turns critical
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub ttl: Duration,
    /// The registry removes an instance critical for this long
    #[arg(long, value_parser = duration, default_value = "1m")]
    pub deregister_after: Duration,
    /// Runtime worker threads [default: number of cores]
    #[arg(long)]
    pub workers: Option<usize>,
    /// TOML config file ([defaults], [services.<name>])
    #[arg(long)]
    pub config: Option<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

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

/// Runs the sidecar until SIGINT/SIGTERM, then deregisters, drains and returns.
pub fn run_sidecar(args: SidecarArgs) -> Result<()> {
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
    let metrics = Metrics::new();
    let discovery = Discovery::new(&args.registry, policies, metrics.clone())?;
    block_on(args.workers, async move {
        let inbound = bind(&args.inbound).await?;
        let outbound = bind(&args.outbound).await?;
        let admin_listener = bind(&args.admin).await?;
        let inbound_addr = local_addr(&inbound)?;
        let outbound_addr = local_addr(&outbound)?;
        let discovery = Arc::new(discovery);
        let client = UpstreamClient::new(args.policy.pool());
        let app = Arc::new(Upstream::fixed(
            &args.service,
            &args.app,
            own,
            metrics.clone(),
        ));
        discovery.watch_policy_of(app.clone(), inbound_policy);
        let ready = Arc::new(AtomicBool::new(false));
        let (trigger, shutdown) = shutdown_pair();
        let drain = args.policy.drain_timeout;
        let mut tasks = Vec::new();
        for (listener, mode) in [
            (inbound, Mode::Inbound(app.clone())),
            (outbound, Mode::Outbound),
        ] {
            let proxy = Arc::new(Proxy::new(
                mode,
                discovery.clone(),
                client.clone(),
                metrics.clone(),
            ));
            tasks.push(tokio::spawn(serve(
                listener,
                move |request: Request<Body>| {
                    let proxy = proxy.clone();
                    async move { proxy.handle(request).await }
                },
                shutdown.clone(),
                drain,
            )));
        }
        let admin = Arc::new(Admin {
            metrics,
            discovery: discovery.clone(),
            inbound: Some(app),
            ready: ready.clone(),
        });
        let admin_addr = local_addr(&admin_listener)?;
        tasks.push(tokio::spawn(serve(
            admin_listener,
            move |request: Request<Body>| {
                let admin = admin.clone();
                async move { admin.handle(&request) }
            },
            shutdown.clone(),
            drain,
        )));
        announce("inbound", inbound_addr);
        announce("outbound", outbound_addr);
        announce("admin", admin_addr);

        let registration = registration(&args, meta, inbound_addr);
        let instance = registration.id.clone();
        let health = tokio::spawn(keep_registered(
            discovery.client().clone(),
            registration,
            AppCheck::new(&args)?,
            args.check_interval,
            ready.clone(),
        ));
        signal().await;
        tracing::info!(%instance, "shutting down: deregistering, then draining");
        ready.store(false, Ordering::Relaxed);
        health.abort();
        // Deregister first so callers stop choosing this instance while it still serves.
        match tokio::time::timeout(
            Duration::from_secs(5),
            discovery.client().deregister(&instance),
        )
        .await
        {
            Ok(Ok(())) => tracing::info!(%instance, "deregistered"),
            Ok(Err(e)) => tracing::warn!(%instance, error = %e, "deregistration failed"),
            Err(_) => tracing::warn!(%instance, "deregistration timed out"),
        }
        trigger.trigger();
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    })
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

/// How the app's health is probed.
enum AppCheck {
    Http { http: reqwest::Client, url: String },
    Tcp { addr: String },
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl AppCheck {
    fn new(args: &SidecarArgs) -> Result<Self> {
        Ok(match &args.health_path {
            Some(path) => Self::Http {
                http: reqwest::Client::builder()
                    .no_proxy()
                    .timeout(PROBE_TIMEOUT)
                    .build()
                    .map_err(|e| Error::config(format!("http client: {e}")))?,
                url: format!("http://{}{}", args.app, path),
            },
            None => Self::Tcp {
                addr: args.app.clone(),
            },
        })
    }

    /// The app's status and a line saying why.
    async fn probe(&self) -> (CheckStatus, String) {
        match self {
            Self::Http { http, url } => {
                probe::http(http.get(url), &format!("HTTP GET {url}")).await
            }
            Self::Tcp { addr } => probe::tcp(addr, PROBE_TIMEOUT).await,
        }
    }
}

/// Registers the instance (retrying until the registry answers), then reports the app's health
/// to the TTL check every interval. Re-registers if the registry reaped the instance while it
/// was critical.
async fn keep_registered(
    client: Client,
    registration: ServiceRegistration,
    check: AppCheck,
    interval: Duration,
    ready: Arc<AtomicBool>,
) {
    let check_id = format!("service:{}", registration.id);
    let backoff = Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_secs(5),
        jitter: Jitter::Equal,
    };
    let mut registered = false;
    let mut failures = 0u32;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<CheckStatus> = None;
    loop {
        let (status, output) = check.probe().await;
        if !registered {
            match client.register(&registration).await {
                Ok(()) => {
                    registered = true;
                    failures = 0;
                    tracing::info!(id = %registration.id, address = %registration.address, port = registration.port, "registered");
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "cannot register; retrying");
                    tokio::time::sleep(delay(&backoff, failures.min(16))).await;
                    continue;
                }
            }
        }
        match client.update_check(&check_id, status, &output).await {
            Ok(()) => {
                if last != Some(status) {
                    tracing::info!(%status, %output, "app health reported");
                }
                last = Some(status);
                ready.store(status != CheckStatus::Critical, Ordering::Relaxed);
            }
            Err(trellis_client::Error::Status { status: 404, .. }) => {
                // Reaped after being critical too long: come back once the app is healthy.
                // Deregistered while healthy: someone removed it on purpose; respect that.
                if last == Some(CheckStatus::Critical) {
                    tracing::warn!("registry removed this critical instance; registering again");
                    registered = false;
                    continue;
                }
                tracing::warn!(
                    "instance was deregistered through the registry; not re-registering"
                );
                ready.store(false, Ordering::Relaxed);
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot report health"),
        }
        ticker.tick().await;
    }
}
