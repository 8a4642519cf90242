//! Client commands: talk to the registry's HTTP API at `--addr`, else `TRELLIS_HTTP_ADDR`, else
//! `CONSUL_HTTP_ADDR`, else the default address; human-readable tables, or `--json` for scripts.

use crate::table::print_table;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use std::future::Future;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;
use trellis_client::{Client, ClientOptions};
use trellis_proxy::registry_tls::RegistryTlsArgs;
use trellis_types::ServiceRegistration;

/// Where the registry is; every client command takes it.
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryAddr {
    /// Registry HTTP API, HOST:PORT, http://HOST:PORT or https://HOST:PORT; several servers
    /// comma-separated, tried in turn [default: $TRELLIS_HTTP_ADDR, else $CONSUL_HTTP_ADDR,
    /// else 127.0.0.1:8500]
    #[arg(long, value_name = "ADDR", global = true)]
    addr: Option<String>,
    /// Access token sent as X-Consul-Token [default: $TRELLIS_HTTP_TOKEN, else
    /// $CONSUL_HTTP_TOKEN, else none (the anonymous token)]
    #[arg(long, value_name = "SECRET", global = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: RegistryTlsArgs,
}

impl RegistryAddr {
    /// The address to use: the flag, else the environment, else the default.
    fn resolve(&self) -> String {
        self.addr
            .clone()
            .unwrap_or_else(trellis_client::addr_from_env)
    }

    /// Runs `command` with a client for this registry, turning "cannot connect" into one line
    /// that says what to do.
    pub async fn run<F, Fut>(&self, command: F) -> anyhow::Result<()>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let addr = self.resolve();
        let options = ClientOptions {
            token: self.token.clone().or_else(trellis_client::token_from_env),
            tls: self.tls.options(),
        };
        let client = client_for(&addr, &options)?;
        // Every server it may have tried, for the one line that says none answered.
        let base = client.base_urls().join(",");
        command(client).await.map_err(|e| explain(e, &base))
    }
}

/// A client of the registry at `addr`, or why there cannot be one, in one line.
pub(crate) fn client_for(addr: &str, options: &ClientOptions) -> anyhow::Result<Client> {
    Client::with_options(addr, options).map_err(|e| match e {
        trellis_client::Error::Token => anyhow::anyhow!("invalid token: it must be printable ASCII"),
        trellis_client::Error::Tls(_) => anyhow::anyhow!("{e}"),
        _ => anyhow::anyhow!(
            "invalid registry address {addr:?}: give HOST:PORT, http://HOST:PORT or https://HOST:PORT (--addr or TRELLIS_HTTP_ADDR)"
        ),
    })
}

/// Rewrites a failure to reach the registry as one line naming the address and the fix; other
/// errors pass unchanged.
pub(crate) fn explain(error: anyhow::Error, base: &str) -> anyhow::Error {
    match error.downcast_ref::<trellis_client::Error>() {
        // What the registry answers plain HTTP on its HTTPS port.
        Some(trellis_client::Error::Status {
            status: 400, body, ..
        }) if body.starts_with("Client sent an HTTP request to an HTTPS server") => {
            let https = base.replacen("http://", "https://", 1);
            anyhow::anyhow!(
                "the registry at {base} serves HTTPS: use {https} (--addr or TRELLIS_HTTP_ADDR), with --ca-file if its CA is not in the system's trust store"
            )
        }
        Some(e) if e.is_unreachable() => anyhow::anyhow!(
            "no registry at {base} — start `trellis server`, or point --addr or TRELLIS_HTTP_ADDR at one"
        ),
        Some(e) if e.is_timeout() => {
            anyhow::anyhow!("the registry at {base} did not answer in time")
        }
        _ => error,
    }
}

#[derive(Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    registry: RegistryAddr,
}

#[derive(Args)]
pub struct InstancesArgs {
    /// Service name.
    name: String,
    /// Only instances whose checks all pass.
    #[arg(long)]
    passing: bool,
    /// Print JSON (Consul's /v1/health/service entries) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    registry: RegistryAddr,
}

#[derive(Args)]
pub struct WatchArgs {
    /// Service name.
    name: String,
    /// One JSON event per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    registry: RegistryAddr,
}

#[derive(Args)]
pub struct KvArgs {
    #[command(subcommand)]
    command: KvCommand,
    #[command(flatten)]
    registry: RegistryAddr,
}

#[derive(Subcommand)]
pub enum KvCommand {
    /// Print a value (raw bytes), or with --json the whole entry.
    Get {
        /// The key, e.g. app/db/host (with --recurse, a prefix).
        key: String,
        /// Print the entry as JSON (Key, Value in base64, Flags, indexes).
        #[arg(long)]
        json: bool,
        /// List every entry under KEY as a prefix.
        #[arg(long)]
        recurse: bool,
    },
    /// Write a value; `-` or no VALUE reads it from standard input.
    Put {
        /// The key, e.g. app/db/host.
        key: String,
        /// The value; `-` or none reads standard input.
        value: Option<String>,
        /// Only write if the entry's ModifyIndex equals this (0: only if absent).
        #[arg(long)]
        cas: Option<u64>,
    },
    /// Delete a key, or with --recurse every key under a prefix.
    Delete {
        /// The key (with --recurse, a prefix).
        key: String,
        /// Delete every key under KEY.
        #[arg(long)]
        recurse: bool,
    },
}

#[derive(Args)]
pub struct RegisterArgs {
    /// JSON service definition (a registration body, or `{"service": {...}}` as Consul's files).
    file: PathBuf,
    #[command(flatten)]
    registry: RegistryAddr,
}

#[derive(Args)]
pub struct DeregisterArgs {
    /// The instance (service) ID to remove.
    id: String,
    #[command(flatten)]
    registry: RegistryAddr,
}

pub async fn services(args: ListArgs) -> anyhow::Result<()> {
    args.registry
        .run(|client| list_services(client, args.json))
        .await
}

async fn list_services(client: Client, json: bool) -> anyhow::Result<()> {
    let services = client.services().await?.value;
    if json {
        println!("{}", serde_json::to_string_pretty(&services)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = services
        .into_iter()
        .map(|(name, tags)| vec![name, tags.join(",")])
        .collect();
    print_table(&["SERVICE", "TAGS"], &rows);
    Ok(())
}

pub async fn instances(args: InstancesArgs) -> anyhow::Result<()> {
    args.registry
        .run(|client| list_instances(client, &args))
        .await
}

async fn list_instances(client: Client, args: &InstancesArgs) -> anyhow::Result<()> {
    let entries = client
        .health_service(&args.name, args.passing, None)
        .await?
        .value;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let status = e
                .checks
                .iter()
                .map(|c| c.status)
                .max()
                .map(|s| s.to_string())
                .unwrap_or_default();
            vec![
                e.service.id.clone(),
                format!("{}:{}", e.service.address, e.service.port),
                status,
                e.service.tags.join(","),
            ]
        })
        .collect();
    print_table(&["ID", "ADDRESS", "HEALTH", "TAGS"], &rows);
    Ok(())
}

pub async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    args.registry.run(|client| follow(client, &args)).await
}

async fn follow(client: Client, args: &WatchArgs) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match client.watch(&args.name).await {
            Ok(mut events) => {
                backoff = Duration::from_millis(200);
                while let Some(event) = events.next().await {
                    let event = event?;
                    if args.json {
                        println!("{}", serde_json::to_string(&event)?);
                    } else {
                        let list: Vec<String> = event
                            .instances
                            .iter()
                            .map(|i| format!("{}@{}:{} ({})", i.id, i.address, i.port, i.status))
                            .collect();
                        println!(
                            "index {}: {} has {} instance(s): {}",
                            event.index,
                            event.service,
                            list.len(),
                            list.join(", ")
                        );
                    }
                    let _ = std::io::stdout().flush();
                }
                eprintln!("watch: connection closed; reconnecting");
            }
            Err(e) => eprintln!(
                "watch: {:#}; retrying in {backoff:?}",
                explain(e.into(), client.base_url())
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = crate::shutdown::signal() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

pub async fn kv(args: KvArgs) -> anyhow::Result<()> {
    args.registry
        .run(|client| kv_command(client, args.command))
        .await
}

async fn kv_command(client: Client, command: KvCommand) -> anyhow::Result<()> {
    match command {
        KvCommand::Get { key, json, recurse } if recurse => {
            let pairs = client.kv_list(&key).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&pairs)?);
            } else {
                for pair in pairs {
                    let value = pair.decoded_value().context("value is not valid base64")?;
                    println!("{}:{}", pair.key, String::from_utf8_lossy(&value));
                }
            }
        }
        KvCommand::Get { key, json, .. } => {
            let Some(pair) = client.kv_get(&key, None).await?.value else {
                bail!("no key {key:?}");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&pair)?);
            } else {
                let value = pair.decoded_value().context("value is not valid base64")?;
                std::io::stdout().write_all(&value)?;
                if !value.ends_with(b"\n") {
                    println!();
                }
            }
        }
        KvCommand::Put { key, value, cas } => {
            let bytes = match value.as_deref() {
                None | Some("-") => {
                    let mut buffer = Vec::new();
                    std::io::stdin().read_to_end(&mut buffer)?;
                    buffer
                }
                Some(v) => v.as_bytes().to_vec(),
            };
            if !client.kv_put(&key, &bytes, cas).await? {
                bail!("not written: the check-and-set index did not match");
            }
            println!("Success! Data written to: {key}");
        }
        KvCommand::Delete { key, recurse } => {
            client.kv_delete(&key, recurse).await?;
            println!("Success! Deleted key: {key}");
        }
    }
    Ok(())
}

pub async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", args.file.display()))?;
    // Consul service definition files wrap the registration in {"service": {...}}.
    if let Some(inner) = value
        .as_object_mut()
        .filter(|o| o.len() == 1)
        .and_then(|o| {
            o.iter_mut()
                .find(|(k, _)| k.eq_ignore_ascii_case("service"))
                .map(|(_, v)| v.take())
        })
    {
        value = inner;
    }
    let registration = ServiceRegistration::from_json(value)
        .with_context(|| format!("invalid definition in {}", args.file.display()))?;
    let definition = &registration;
    args.registry
        .run(|client| async move { Ok(client.register(definition).await?) })
        .await?;
    println!(
        "Registered service: {} (ID {})",
        registration.name, registration.id
    );
    Ok(())
}

pub async fn deregister(args: DeregisterArgs) -> anyhow::Result<()> {
    let id = &args.id;
    args.registry
        .run(|client| async move { Ok(client.deregister(id).await?) })
        .await?;
    println!("Deregistered service: {}", args.id);
    Ok(())
}
