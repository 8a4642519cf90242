//! The `trellis` binary: control plane, data plane, demo and client commands in one executable.

mod client_cmds;
mod demo;
mod health_cmd;
mod logging;
mod server_cmd;
mod shell_cmds;
mod shutdown;
mod table;
mod traces_cmd;
mod txn_cmd;

use clap::{CommandFactory, Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the server and the proxies allocate per request on many
/// threads, where glibc's arenas spend their time in locks and consolidation (measured in
/// bench/README.md, "Transactions").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `trellis --version`: the package version and the git commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TRELLIS_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "trellis",
    version = VERSION,
    propagate_version = true,
    about = "A microservice platform: registry, discovery, proxy, demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at startup, so the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the control plane: registry, health checks, KV, sessions, watches, DNS.
    Server(server_cmd::ServerArgs),
    /// List registered services and their tags.
    Services(client_cmds::ListArgs),
    /// List the instances of a service with their health.
    Instances(client_cmds::InstancesArgs),
    /// Print the instance set of a service now and after each change.
    Watch(client_cmds::WatchArgs),
    /// Read and write the key/value store.
    Kv(client_cmds::KvArgs),
    /// Register a service from a JSON definition file.
    Register(client_cmds::RegisterArgs),
    /// Deregister a service instance by ID.
    Deregister(client_cmds::DeregisterArgs),
    /// List, show and abort two-phase-commit transactions.
    Txn(txn_cmd::TxnArgs),
    /// Search traces and show one as a waterfall, from the server's trace collector.
    Traces(traces_cmd::TracesArgs),
    /// Run a sidecar proxy for one service instance: register it, check it, proxy in and out.
    Sidecar(trellis_proxy::SidecarArgs),
    /// Run the edge gateway: route external requests to services by path prefix.
    Gateway(trellis_proxy::GatewayArgs),
    /// Run the example system (users, orders, inventory, sidecars, gateway) and its client flow.
    Demo(demo::DemoArgs),
    /// Run one instance of the example users service.
    Users(trellis_example::UsersArgs),
    /// Run one instance of the example orders service.
    Orders(trellis_example::OrdersArgs),
    /// Run one instance of the example inventory service.
    Inventory(trellis_example::InventoryArgs),
    /// GET a URL and exit 0 on a 2xx answer: the health check of containers and probes.
    Health(health_cmd::HealthArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions(shell_cmds::CompletionsArgs),
    /// Write the man pages (trellis.1, trellis-<command>.1) into a directory.
    Manpages(shell_cmds::ManpagesArgs),
    /// Run one participant of the bank example (the two-phase-commit chaos test).
    #[command(hide = true)]
    Bank(trellis_example::BankArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // These only print what the command line describes: no runtime, no logging.
    let printed = match cli.command {
        Command::Completions(args) => shell_cmds::completions(args, Cli::command()),
        Command::Manpages(args) => shell_cmds::manpages(args, Cli::command()),
        command => return run(Cli { command }),
    };
    exit_code(printed)
}

/// Runs a command that does its work in the runtime.
fn run(cli: Cli) -> std::process::ExitCode {
    // The example services install logging inside the runtime, with their span exporter.
    if !matches!(
        cli.command,
        Command::Users(_) | Command::Orders(_) | Command::Inventory(_)
    ) {
        logging::init(None);
    }
    let runtime = match runtime_for(&cli.command).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => server_cmd::run(args).await,
            Command::Services(args) => client_cmds::services(args).await,
            Command::Instances(args) => client_cmds::instances(args).await,
            Command::Watch(args) => client_cmds::watch(args).await,
            Command::Kv(args) => client_cmds::kv(args).await,
            Command::Register(args) => client_cmds::register(args).await,
            Command::Deregister(args) => client_cmds::deregister(args).await,
            Command::Txn(args) => txn_cmd::run(args).await,
            Command::Traces(args) => traces_cmd::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Health(args) => health_cmd::run(args).await,
            Command::Completions(_) | Command::Manpages(_) => unreachable!("handled above"),
            Command::Users(args) => {
                let telemetry = example_telemetry("users", &args.instance, &args.tracing)?;
                let result = trellis_example::run_users(args, shutdown::signal()).await;
                telemetry.shutdown().await;
                Ok(result?)
            }
            Command::Orders(args) => {
                let telemetry = example_telemetry("orders", &args.instance, &args.tracing)?;
                let result = trellis_example::run_orders(args, shutdown::signal()).await;
                telemetry.shutdown().await;
                Ok(result?)
            }
            Command::Inventory(args) => {
                let telemetry = example_telemetry("inventory", &args.instance, &args.tracing)?;
                let result = trellis_example::run_inventory(args, shutdown::signal()).await;
                telemetry.shutdown().await;
                Ok(result?)
            }
            Command::Bank(args) => Ok(trellis_example::run_bank(args, shutdown::signal()).await?),
            Command::Sidecar(args) => {
                Ok(trellis_proxy::run_sidecar(args, shutdown::signal()).await?)
            }
            Command::Gateway(args) => {
                Ok(trellis_proxy::run_gateway(args, shutdown::signal()).await?)
            }
        }
    });
    exit_code(result)
}

fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// An example service's span export (when its flags name a collector), with logging installed
/// around it; inside the runtime, whose threads carry the exports.
fn example_telemetry(
    service: &'static str,
    instance: &str,
    tracing: &trellis_example::TracingArgs,
) -> Result<trellis_example::Telemetry, trellis_example::Error> {
    let (telemetry, spans) = trellis_example::Telemetry::start(service, instance, tracing)?;
    logging::init(spans);
    if let Some(url) = tracing.otlp_endpoint.traces_url() {
        tracing::info!(service, endpoint = %url, "exporting spans over OTLP/HTTP");
    }
    Ok(telemetry)
}

/// The runtime for `command`: the proxies honour `--workers` (1 is a current-thread runtime,
/// which spares the multi-threaded scheduler's cross-thread wake-ups); everything else gets
/// the default multi-threaded runtime.
fn runtime_for(command: &Command) -> tokio::runtime::Builder {
    let workers = match command {
        Command::Sidecar(args) => args.workers(),
        Command::Gateway(args) => args.workers(),
        _ => None,
    };
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = workers.filter(|n| *n > 1) {
        builder.worker_threads(n);
    }
    builder.enable_all();
    builder
}
