//! `trellis health URL`: one HTTP GET that exits 0 on a 2xx answer, for container health
//! checks and probes in images that carry no curl.

use anyhow::{Context, bail};
use clap::Args;
use std::time::Duration;
use trellis_proxy::registry_tls::RegistryTlsArgs;

/// What the server's own image checks when no URL is given: its HTTP API answers and knows
/// its leader.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8500/v1/status/leader";

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// The URL to GET: a server's /v1/status/leader, a sidecar's or gateway's admin /ready,
    /// an app's health path
    #[arg(
        env = "TRELLIS_HEALTH_URL",
        default_value = DEFAULT_URL,
        value_name = "URL"
    )]
    url: String,
    /// How long to wait for the whole answer, e.g. 3s or 500ms
    #[arg(long, value_parser = trellis_types::parse_go_duration, default_value = "5s")]
    timeout: Duration,
    #[command(flatten)]
    tls: RegistryTlsArgs,
}

/// Fails, with the status or the reason, unless the URL answers 2xx within the timeout.
pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(&args.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .with_context(|| format!("{}: not an http:// or https:// URL", args.url))?;
    let mut builder = reqwest::Client::builder().no_proxy().timeout(args.timeout);
    let tls = args.tls.options();
    if url.scheme() == "https" || !tls.is_empty() {
        let config = trellis_client::tls::client_config(&tls).map_err(anyhow::Error::msg)?;
        builder = builder.use_preconfigured_tls(config);
    }
    let response = builder
        .build()
        .context("cannot build the HTTP client")?
        .get(url.clone())
        .send()
        .await
        .map_err(|e| {
            let why = if e.is_timeout() {
                format!("no answer within {:?}", args.timeout)
            } else if e.is_connect() {
                "cannot connect".to_owned()
            } else {
                e.to_string()
            };
            anyhow::anyhow!("{url}: {why}")
        })?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let reason = body.lines().next().unwrap_or("").trim();
        bail!("{url}: {status} {reason}");
    }
    println!("{url}: {status}");
    Ok(())
}
