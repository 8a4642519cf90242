//! Where every process of the demo listens and how each is started: the plan derived from the
//! base port, and each child's command line built from its command's typed arguments.

use super::processes::Processes;
use crate::server_cmd::ServerArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use trellis_example::{InventoryArgs, OrdersArgs, OtlpEndpoint, TracingArgs, UsersArgs};
use trellis_proxy::{GatewayArgs, SidecarArgs};
use trellis_server::{AclDefaultPolicy, DnsListen, HostPort};

/// One service instance: the app and its sidecar's three listeners.
#[derive(Debug, Clone)]
pub struct Instance {
    pub service: &'static str,
    pub name: String,
    pub app: SocketAddr,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
}

/// Where everything listens, derived from the base port.
#[derive(Debug, Clone)]
pub struct Plan {
    pub registry: SocketAddr,
    /// The registry's DNS interface (UDP and TCP).
    pub registry_dns: SocketAddr,
    /// The registry's OTLP/HTTP trace receiver, where every process exports its spans.
    pub registry_otlp: SocketAddr,
    /// The registry's OTLP/gRPC trace receiver (unused by the demo, but inside its port range
    /// rather than on the default 4317).
    pub registry_otlp_grpc: SocketAddr,
    pub gateway: SocketAddr,
    pub gateway_admin: SocketAddr,
    pub instances: Vec<Instance>,
    pub data_dir: PathBuf,
    /// `--secure`: the registry under ACL default deny with this initial management token's
    /// secret, sidecars and the gateway with mutual TLS.
    pub management: Option<String>,
}

/// Ports the demo uses above `--base-port` (registry, gateway, gateway admin, registry DNS,
/// registry OTLP/HTTP and OTLP/gRPC, then five instances of four, from `base + 10` in steps of ten).
const PORTS_USED: u16 = 54;

/// The gateway's routes: path prefix → service.
pub const ROUTES: [(&str, &str); 3] = [
    ("/users", "users"),
    ("/orders", "orders"),
    ("/stock", "inventory"),
];

/// The service the orders app calls through its sidecar (its `--users-url`).
pub const ORDERS_CALLS: &str = "users";

/// The registry's configuration file in the data directory under `--secure`: it holds the
/// initial management token, so the secret is in no command line.
pub const REGISTRY_CONFIG: &str = "registry.toml";

/// The product whose commit crashes the inventory instance the demo starts (its fault
/// injection, `--crash-before-commit`); the demo restarts it without.
pub const CRASH_PRODUCT: &str = "Product B";

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Plan {
    pub fn new(base: u16, data_dir: PathBuf) -> anyhow::Result<Self> {
        let highest = u16::MAX - (PORTS_USED - 1);
        if base > highest || base == 0 {
            anyhow::bail!(
                "--base-port {base} is out of range: the demo uses {PORTS_USED} ports from it upwards; choose one up to {highest}"
            );
        }
        let mut instances = Vec::new();
        let services = [
            ("users", 1),
            ("users", 2),
            ("orders", 1),
            ("orders", 2),
            ("inventory", 1),
        ];
        for (k, (service, n)) in services.into_iter().enumerate() {
            let first = base + 10 + 10 * k as u16;
            instances.push(Instance {
                service,
                name: format!("{service}-{n}"),
                app: local(first),
                inbound: local(first + 1),
                outbound: local(first + 2),
                admin: local(first + 3),
            });
        }
        Ok(Self {
            registry: local(base),
            registry_dns: local(base + 3),
            registry_otlp: local(base + 4),
            registry_otlp_grpc: local(base + 5),
            gateway: local(base + 1),
            gateway_admin: local(base + 2),
            instances,
            data_dir,
            management: None,
        })
    }

    /// This plan secured (`--secure`), the registry's initial management token being
    /// `management`.
    pub fn secured(self, management: String) -> Self {
        Self {
            management: Some(management),
            ..self
        }
    }

    pub fn secure(&self) -> bool {
        self.management.is_some()
    }

    /// The registry's configuration file under `--secure`.
    pub fn registry_config(&self) -> PathBuf {
        self.data_dir.join(REGISTRY_CONFIG)
    }

    pub fn ports(&self) -> Vec<(String, SocketAddr)> {
        let mut ports = vec![
            ("registry".to_owned(), self.registry),
            ("registry DNS".to_owned(), self.registry_dns),
            ("registry OTLP".to_owned(), self.registry_otlp),
            ("registry OTLP/gRPC".to_owned(), self.registry_otlp_grpc),
            ("gateway".to_owned(), self.gateway),
            ("gateway admin".to_owned(), self.gateway_admin),
        ];
        for i in &self.instances {
            ports.push((format!("{} app", i.name), i.app));
            ports.push((format!("{} sidecar inbound", i.name), i.inbound));
            ports.push((format!("{} sidecar outbound", i.name), i.outbound));
            ports.push((format!("{} sidecar admin", i.name), i.admin));
        }
        ports
    }

    pub fn registry_url(&self) -> String {
        format!("http://{}", self.registry)
    }

    /// Where spans are exported: the registry's OTLP/HTTP traces URL.
    pub fn otlp_traces_url(&self) -> String {
        format!("http://{}/v1/traces", self.registry_otlp)
    }

    fn tracing(&self) -> TracingArgs {
        TracingArgs::export_to(
            self.otlp_traces_url()
                .parse::<OtlpEndpoint>()
                .expect("a valid URL"),
        )
    }

    /// The proxies' tracing: spans to the demo's collector (by default they would go to port
    /// 4318 of the registry's host, which is not the demo's).
    fn proxy_tracing(&self) -> trellis_proxy::TracingArgs {
        trellis_proxy::TracingArgs {
            otlp_endpoint: Some(self.otlp_traces_url()),
            ..trellis_proxy::TracingArgs::default()
        }
    }

    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway)
    }

    pub fn instance(&self, name: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.name == name)
    }

    /// How many instances of `service` the demo runs.
    pub fn count(&self, service: &str) -> usize {
        self.instances
            .iter()
            .filter(|i| i.service == service)
            .count()
    }

    /// `trellis server ...` for the registry. Every child's arguments are built as the typed
    /// arguments of its command, so a renamed flag is a compile error, not a failed demo.
    pub fn server_args(&self) -> Vec<String> {
        let server = ServerArgs {
            http: Some(HostPort::from(self.registry)),
            data_dir: Some(self.data_dir.join("registry")),
            node_name: Some("demo".to_owned()),
            dns: Some(DnsListen::At(HostPort::from(self.registry_dns))),
            otlp: Some(DnsListen::At(HostPort::from(self.registry_otlp))),
            otlp_grpc: Some(DnsListen::At(HostPort::from(self.registry_otlp_grpc))),
            acl_default_policy: self.secure().then_some(AclDefaultPolicy::Deny),
            config: self.secure().then(|| self.registry_config()),
            ..ServerArgs::default()
        };
        command("server", server.to_args())
    }

    /// The app of instance `i` as first started: the inventory with its fault injection.
    pub fn app_args(&self, i: &Instance) -> Vec<String> {
        self.app_args_with(i, true)
    }

    /// The app of instance `i` started again after a crash: without fault injection.
    pub fn restarted_app_args(&self, i: &Instance) -> Vec<String> {
        self.app_args_with(i, false)
    }

    fn app_args_with(&self, i: &Instance, faults: bool) -> Vec<String> {
        let db = self.data_dir.join(format!("{}.db", i.service));
        let users = UsersArgs {
            listen: i.app,
            db,
            instance: i.name.clone(),
            tracing: self.tracing(),
        };
        if i.service == "inventory" {
            let inventory = InventoryArgs {
                listen: users.listen,
                db: users.db,
                instance: users.instance,
                crash_before_commit: faults.then(|| CRASH_PRODUCT.to_owned()),
                tracing: users.tracing,
            };
            return command(i.service, inventory.to_args());
        }
        if i.service != "orders" {
            return command(i.service, users.to_args());
        }
        let orders = OrdersArgs {
            listen: users.listen,
            db: users.db,
            instance: users.instance,
            users_url: format!("http://{ORDERS_CALLS}")
                .parse()
                .expect("a valid URL"),
            proxy: Some(
                format!("http://{}", i.outbound)
                    .parse()
                    .expect("a valid URL"),
            ),
            users_timeout_ms: 2000,
            coordinator: self.registry_url().parse().expect("a valid URL"),
            // Under --secure its token comes in TRELLIS_HTTP_TOKEN, not on the command line.
            token: None,
            tracing: users.tracing,
        };
        command(i.service, orders.to_args())
    }

    pub fn sidecar_args(&self, i: &Instance) -> Vec<String> {
        let mut sidecar = SidecarArgs::new(i.service, &i.app.to_string());
        sidecar.registry = self.registry_url();
        sidecar.id = Some(i.name.clone());
        sidecar.inbound = i.inbound.to_string();
        sidecar.outbound = i.outbound.to_string();
        sidecar.admin = i.admin.to_string();
        sidecar.advertise = Some("127.0.0.1".to_owned());
        sidecar.health_path = Some("/health".to_owned());
        // Short timings so the demo shows a dead instance leaving within seconds.
        sidecar.check_interval = Duration::from_millis(500);
        sidecar.ttl = Duration::from_secs(2);
        sidecar.deregister_after = Duration::from_secs(3);
        sidecar.workers = Some(1);
        sidecar.tracing = self.proxy_tracing();
        // Its token, under --secure, comes in TRELLIS_HTTP_TOKEN (see `Processes::give_token`).
        sidecar.mtls = self.secure();
        command("sidecar", sidecar.to_args())
    }

    pub fn gateway_args(&self) -> Vec<String> {
        let gateway = GatewayArgs {
            registry: self.registry_url(),
            listen: self.gateway.to_string(),
            admin: self.gateway_admin.to_string(),
            routes: ROUTES
                .iter()
                .map(|(prefix, service)| format!("{prefix}={service}"))
                .collect(),
            keep_prefix: true,
            workers: Some(1),
            tracing: self.proxy_tracing(),
            mtls: self.secure(),
            ..GatewayArgs::default()
        };
        command("gateway", gateway.to_args())
    }
}

/// `trellis <subcommand> <args>...`.
fn command(subcommand: &str, args: Vec<String>) -> Vec<String> {
    std::iter::once(subcommand.to_owned()).chain(args).collect()
}

/// Starts an instance: its app, then its sidecar.
pub fn start_instance(procs: &mut Processes, plan: &Plan, i: &Instance) -> anyhow::Result<()> {
    procs.spawn(&i.name, &plan.app_args(i))?;
    procs.spawn(&format!("{}-sidecar", i.name), &plan.sidecar_args(i))
}

/// Starts the app of an instance again (its sidecar kept running), without fault injection.
pub fn restart_app(procs: &mut Processes, plan: &Plan, i: &Instance) -> anyhow::Result<()> {
    procs.spawn(&i.name, &plan.restarted_app_args(i))
}

/// SIGKILLs an instance: its app and its sidecar, as when its machine dies.
pub fn kill_instance(procs: &mut Processes, i: &Instance) -> anyhow::Result<()> {
    procs.kill(&format!("{}-sidecar", i.name))?;
    procs.kill(&i.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Every child's command line parses with the real `trellis` parser.
    /// Every child's command line, secured or not.
    fn every_line(plan: &Plan) -> Vec<Vec<String>> {
        let mut lines = vec![plan.server_args(), plan.gateway_args()];
        for i in &plan.instances {
            lines.push(plan.app_args(i));
            lines.push(plan.restarted_app_args(i));
            lines.push(plan.sidecar_args(i));
        }
        lines
    }

    /// Every child's command line parses with the real `trellis` parser.
    #[test]
    fn every_child_command_line_parses() {
        let plan = Plan::new(9500, PathBuf::from("/tmp/demo data")).unwrap();
        let secured = plan.clone().secured("management-secret".into());
        for line in every_line(&plan).into_iter().chain(every_line(&secured)) {
            let argv = std::iter::once("trellis".to_owned()).chain(line.iter().cloned());
            if let Err(e) = crate::Cli::try_parse_from(argv) {
                panic!("{line:?}: {e}");
            }
        }
    }

    /// `--secure` turns on default deny and mutual TLS, and no secret is on a command line.
    #[test]
    fn secured_children_speak_mtls_and_carry_no_secret_in_their_arguments() {
        let plain = Plan::new(9500, PathBuf::from("/tmp")).unwrap();
        let secured = plain.clone().secured("management-secret".into());
        let server = secured.server_args();
        assert!(server.contains(&"--acl-default-policy=deny".to_owned()));
        assert!(server.contains(&"--config=/tmp/registry.toml".to_owned()));
        assert!(secured.gateway_args().contains(&"--mtls".to_owned()));
        for i in &secured.instances {
            assert!(secured.sidecar_args(i).contains(&"--mtls".to_owned()));
        }
        for line in every_line(&secured) {
            assert!(
                !line
                    .iter()
                    .any(|a| a.contains("secret") || a.contains("--token")),
                "{line:?}"
            );
        }
        for line in every_line(&plain) {
            assert!(
                !line
                    .iter()
                    .any(|a| a == "--mtls" || a.starts_with("--acl") || a.starts_with("--config")),
                "{line:?}"
            );
        }
    }

    #[test]
    fn ports_stay_below_65536() {
        assert!(Plan::new(65482, PathBuf::from("/tmp")).is_ok());
        let error = Plan::new(65483, PathBuf::from("/tmp"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("up to 65482"), "{error}");
        let plan = Plan::new(65482, PathBuf::from("/tmp")).unwrap();
        let highest = plan.ports().iter().map(|(_, a)| a.port()).max();
        assert_eq!(highest, Some(u16::MAX));
    }

    #[test]
    fn only_the_first_inventory_start_injects_the_crash() {
        let plan = Plan::new(9500, PathBuf::from("/tmp")).unwrap();
        let inventory = plan.instance("inventory-1").unwrap();
        let flag = format!("--crash-before-commit={CRASH_PRODUCT}");
        assert!(plan.app_args(inventory).contains(&flag));
        assert!(!plan.restarted_app_args(inventory).contains(&flag));
        let orders = plan.instance("orders-1").unwrap();
        assert!(
            plan.app_args(orders)
                .contains(&"--coordinator=http://127.0.0.1:9500/".to_owned())
        );
    }

    #[test]
    fn every_process_exports_spans_to_the_demo_registry() {
        let plan = Plan::new(9500, PathBuf::from("/tmp")).unwrap();
        assert!(
            plan.server_args()
                .contains(&"--otlp=127.0.0.1:9504".to_owned())
        );
        let to_collector = "--otlp-endpoint=http://127.0.0.1:9504/v1/traces".to_owned();
        for i in &plan.instances {
            assert!(plan.app_args(i).contains(&to_collector), "{}", i.name);
            assert!(
                plan.restarted_app_args(i).contains(&to_collector),
                "{}",
                i.name
            );
            assert!(plan.sidecar_args(i).contains(&to_collector), "{}", i.name);
        }
        assert!(plan.gateway_args().contains(&to_collector));
    }
}
