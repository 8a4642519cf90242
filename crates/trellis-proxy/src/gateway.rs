//! `trellis gateway`: the edge proxy, routing by longest path prefix to registry services.

use crate::admin::Admin;
use crate::client::UpstreamClient;
use crate::discovery::Discovery;
use crate::exporter::start_tracing;
use crate::flags::{PolicyArgs, TracingArgs, parse_in_code, push};
use crate::listeners::{AdminListener, ProxyListener, serve_until};
use crate::mesh_tls::MeshTls;
use crate::metrics::Metrics;
use crate::proxy::{Mode, Proxy};
use crate::registry_tls::RegistryTlsArgs;
use crate::routes::Routes;
use crate::server::bind;
use crate::sidecar::MESH_PATIENCE;
use crate::{Error, Result};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// `service.name` of the gateway's spans unless `--trace-service` names another.
pub const GATEWAY_SERVICE: &str = "gateway";

#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct GatewayArgs {
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
    /// Address to accept client requests on
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Admin listener (/metrics, /ready, /live, /endpoints)
    #[arg(long, default_value = "127.0.0.1:15091")]
    pub admin: String,
    /// Route PREFIX=SERVICE (repeatable; the longest matching prefix wins)
    #[arg(long = "route", value_name = "PREFIX=SERVICE")]
    pub routes: Vec<String>,
    /// Forward the path unchanged instead of removing the matched prefix
    #[arg(long)]
    pub keep_prefix: bool,
    /// Speak mutual TLS to mesh sidecars, with a certificate for the --identity service
    #[arg(long)]
    pub mtls: bool,
    /// The service name the gateway's mesh certificate is issued for (its token needs
    /// service:write on it)
    #[arg(long, default_value = GATEWAY_SERVICE)]
    pub identity: String,
    /// Runtime worker threads; 1 runs everything on one thread [default: number of cores]
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub workers: Option<usize>,
    /// TOML config file ([defaults], [services.<name>], [routes])
    #[arg(long)]
    pub config: Option<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub tracing: TracingArgs,
}

impl Default for GatewayArgs {
    /// The command line's defaults (without reading `TRELLIS_HTTP_ADDR`), for building the
    /// arguments in code.
    fn default() -> Self {
        parse_in_code(["gateway"])
    }
}

impl GatewayArgs {
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
        push(&mut args, "--listen", &self.listen);
        push(&mut args, "--admin", &self.admin);
        for route in &self.routes {
            push(&mut args, "--route", route);
        }
        if self.keep_prefix {
            args.push("--keep-prefix".to_owned());
        }
        if self.mtls {
            args.push("--mtls".to_owned());
        }
        push(&mut args, "--identity", &self.identity);
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

/// A gateway whose configuration has been read and validated, ready to bind its ports.
pub struct Gateway {
    args: GatewayArgs,
    routes: Routes,
    metrics: Metrics,
    discovery: Arc<Discovery>,
    /// Where spans go (`None`: tracing off).
    otlp_endpoint: Option<String>,
}

impl Gateway {
    /// Reads the config file and validates everything (the registry address too), before any
    /// port is bound.
    pub fn new(args: GatewayArgs) -> Result<Self> {
        trellis_types::registration::validate_service_name(&args.identity)
            .map_err(|e| Error::config(format!("--identity: {e}")))?;
        let (file, policies) = args.policy.load(args.config.as_deref())?;
        let mut specs: Vec<String> = file
            .routes
            .iter()
            .map(|(p, s)| format!("{p}={s}"))
            .collect();
        specs.extend(args.routes.iter().cloned());
        let routes = Routes::parse(&specs, args.keep_prefix)?;
        if routes.is_empty() {
            return Err(Error::config("no routes: give --route PREFIX=SERVICE"));
        }
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
            routes,
            metrics,
            discovery,
            otlp_endpoint,
        })
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Self {
            args,
            routes,
            metrics,
            discovery,
            otlp_endpoint,
        } = self;
        let listener = bind(&args.listen).await?;
        let admin_listener = bind(&args.admin).await?;
        let (exporter, tracer) = start_tracing(
            &args.tracing,
            otlp_endpoint.as_deref(),
            GATEWAY_SERVICE,
            None,
            metrics.spans(),
        )?;
        let mut client = UpstreamClient::new(args.policy.pool());
        if args.mtls {
            let mesh =
                MeshTls::fetch(discovery.client().clone(), &args.identity, MESH_PATIENCE).await?;
            mesh.spawn_maintenance();
            client = client.with_mesh(mesh);
        }
        let proxy = Arc::new(
            Proxy::new(
                Mode::Gateway(routes),
                discovery.clone(),
                client,
                metrics.clone(),
            )
            .with_tracer(tracer),
        );
        let admin = Arc::new(Admin {
            metrics,
            discovery,
            inbound: None,
            // Listening is all a gateway needs to be ready: it waits for discovery per request.
            ready: Arc::new(AtomicBool::new(true)),
        });
        serve_until(
            vec![ProxyListener {
                name: "gateway",
                listener,
                proxy,
                mesh: None,
            }],
            AdminListener {
                listener: admin_listener,
                admin,
            },
            shutdown,
            async {},
            args.policy.drain_timeout,
        )
        .await?;
        if let Some(exporter) = exporter {
            exporter.shutdown(Duration::from_secs(3)).await;
        }
        Ok(())
    }
}

/// Runs the gateway until `shutdown` resolves (the binary passes SIGINT/SIGTERM), then drains.
pub async fn run_gateway(
    args: GatewayArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    Gateway::new(args)?.run(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::assert_round_trips;

    fn round_trip(args: GatewayArgs) {
        assert_round_trips(&args, args.to_args());
    }

    #[test]
    fn defaults_round_trip() {
        let defaults = GatewayArgs::default();
        assert_eq!(defaults.listen, "0.0.0.0:8080");
        assert_eq!(defaults.registry, "http://127.0.0.1:8500");
        assert!(defaults.routes.is_empty());
        round_trip(defaults);
    }

    #[test]
    fn every_flag_round_trips() {
        let mut args = GatewayArgs {
            registry: "http://10.0.0.1:8500".into(),
            token: Some("s3cret".into()),
            listen: "127.0.0.1:0".into(),
            admin: "127.0.0.1:1".into(),
            routes: vec!["/users=users".into(), "/=web".into()],
            keep_prefix: true,
            workers: Some(3),
            config: Some("-odd name.toml".into()),
            ..GatewayArgs::default()
        };
        args.policy.max_retries = Some(1);
        args.policy.load_balancer = Some(trellis_balance::Policy::RoundRobin);
        args.registry_tls.ca_file = Some("/etc/trellis/ca.pem".into());
        args.registry_tls.tls_server_name = Some("registry.internal".into());
        round_trip(args);
    }

    #[test]
    fn zero_workers_is_refused() {
        let zero = crate::flags::parse_command_line::<GatewayArgs>(&["gateway", "--workers", "0"]);
        assert!(zero.is_err());
    }
}
