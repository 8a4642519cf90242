//! `trellis server`: flags over an optional TOML file, logging, and the server's lifecycle.

use anyhow::Context;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use trellis_server::{HostPort, ServerConfig};

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
    /// Node name [default: the host name]
    #[arg(long)]
    pub node_name: Option<String>,
    /// Datacenter [default: dc1]
    #[arg(long)]
    pub datacenter: Option<String>,
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
        if let Some(name) = &self.node_name {
            args.push(format!("--node-name={name}"));
        }
        if let Some(dc) = &self.datacenter {
            args.push(format!("--datacenter={dc}"));
        }
        if let Some(path) = &self.config {
            args.push(format!("--config={}", path.display()));
        }
        args
    }

    fn into_config(self) -> anyhow::Result<ServerConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                ServerConfig::from_toml(&text)
                    .with_context(|| format!("invalid configuration file {}", path.display()))?
            }
            None => ServerConfig::default(),
        };
        if let Some(http) = self.http {
            config.http = http;
        }
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        if self.dev {
            config.dev = true;
        }
        if let Some(name) = self.node_name {
            config.node_name = name;
        }
        if let Some(dc) = self.datacenter {
            config.datacenter = dc;
        }
        config.validate()?;
        Ok(config)
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let storage = if config.dev {
        "in memory (--dev)".to_owned()
    } else {
        config.data_dir.display().to_string()
    };
    let running = trellis_server::start(config, crate::shutdown::signal()).await?;
    println!(
        "trellis server: HTTP API listening on http://{}",
        running.local_addr
    );
    println!(
        "trellis server: data {storage}, {} instances restored",
        running.instances_restored
    );
    let _ = std::io::stdout().flush();
    running.wait().await?;
    tracing::info!("server stopped");
    Ok(())
}
