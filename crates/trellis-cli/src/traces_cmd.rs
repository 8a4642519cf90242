//! `trellis traces search|show`: traces from the collector in `trellis server`, read through
//! its Jaeger query API — a table of the traces found, or one trace as a waterfall.

pub mod waterfall;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::time::Duration;
use trellis_client::{Client, TraceQuery};
use waterfall::Trace;

#[derive(Args)]
pub struct TracesArgs {
    #[command(subcommand)]
    command: TracesCommand,
    /// The server's HTTP API, HOST:PORT, http://HOST:PORT or https://HOST:PORT [default:
    /// $TRELLIS_HTTP_ADDR, else $CONSUL_HTTP_ADDR, else 127.0.0.1:8500]
    #[arg(long, visible_alias = "http-addr", value_name = "ADDR", global = true)]
    addr: Option<String>,
    /// Access token sent as X-Consul-Token [default: $TRELLIS_HTTP_TOKEN, else
    /// $CONSUL_HTTP_TOKEN, else none]
    #[arg(long, value_name = "SECRET", global = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: trellis_proxy::registry_tls::RegistryTlsArgs,
}

#[derive(Subcommand)]
enum TracesCommand {
    /// Search traces in which a service has a matching span: one row per trace.
    Search {
        /// The service (its `service.name`).
        #[arg(long)]
        service: String,
        /// The span name, e.g. "POST /orders".
        #[arg(long)]
        operation: Option<String>,
        /// Only spans lasting at least this long, e.g. 10ms or 1.5s.
        #[arg(long, value_name = "DURATION", value_parser = go_duration)]
        min_duration: Option<String>,
        /// Only traces with a span marked as an error.
        #[arg(long)]
        errors: bool,
        /// How far back to look, e.g. 15m, 1h or 2d [default: everything the server holds].
        #[arg(long, value_name = "DURATION")]
        lookback: Option<String>,
        /// Most traces listed.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the traces as the API answers them (Jaeger's JSON).
        #[arg(long)]
        json: bool,
    },
    /// Show one trace as a waterfall: spans under their parents, bars on the trace's time scale.
    Show {
        /// The trace id (32 hex digits).
        trace_id: String,
        /// Width of the bars, in characters.
        #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u16).range(4..=400))]
        width: u16,
        /// Print the trace as the API answers it (Jaeger's JSON).
        #[arg(long)]
        json: bool,
    },
}

fn go_duration(text: &str) -> Result<String, String> {
    trellis_types::parse_go_duration(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("{e} (e.g. 10ms, 1.5s, 2m)"))
}

pub async fn run(args: TracesArgs) -> anyhow::Result<()> {
    let addr = args
        .addr
        .clone()
        .unwrap_or_else(trellis_client::addr_from_env);
    let options = trellis_client::ClientOptions {
        token: args.token.clone().or_else(trellis_client::token_from_env),
        tls: args.tls.options(),
    };
    let client = crate::client_cmds::client_for(&addr, &options)?;
    let base = client.base_url().to_owned();
    command(&client, args.command).await.map_err(|e| {
        match e.downcast_ref::<trellis_client::Error>() {
            Some(c) if c.is_unreachable() => anyhow::anyhow!(
                "no server at {base} — start `trellis server`, or point --addr or TRELLIS_HTTP_ADDR at one"
            ),
            _ => crate::client_cmds::explain(e, &base),
        }
    })
}

async fn command(client: &Client, command: TracesCommand) -> anyhow::Result<()> {
    match command {
        TracesCommand::Search {
            service,
            operation,
            min_duration,
            errors,
            lookback,
            limit,
            json,
        } => {
            let query = TraceQuery {
                service,
                operation,
                min_duration,
                errors_only: errors,
                lookback,
                limit: Some(limit),
                ..TraceQuery::default()
            };
            let found = client.trace_search(&query).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
                return Ok(());
            }
            let traces = found
                .iter()
                .map(Trace::from_jaeger)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("unexpected answer from the server: {e}"))?;
            print!("{}", waterfall::search_table(&traces));
        }
        TracesCommand::Show {
            trace_id,
            width,
            json,
        } => {
            let Some(found) = client.trace_get(trace_id.trim()).await? else {
                bail!("trace {trace_id} not found (never received, or evicted)");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
                return Ok(());
            }
            let trace = Trace::from_jaeger(&found)
                .map_err(|e| anyhow::anyhow!("unexpected answer from the server: {e}"))?;
            print!("{}", waterfall::waterfall(&trace, usize::from(width)));
        }
    }
    Ok(())
}

/// Waits up to `timeout` for trace `trace_id` to hold a span of every one of `services`
/// (spans arrive in batches, from each process on its own schedule), then a little longer
/// while more spans keep arriving. The trace as it is then (check its services: it may lack
/// some when the time is up), or `None` if none of it arrived.
pub async fn wait_for_trace(
    client: &Client,
    trace_id: &str,
    services: &[&str],
    timeout: Duration,
) -> anyhow::Result<Option<Trace>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: Option<Trace> = None;
    loop {
        let found = client
            .trace_get(trace_id)
            .await
            .with_context(|| format!("cannot read trace {trace_id}"))?;
        let trace = found
            .as_ref()
            .map(Trace::from_jaeger)
            .transpose()
            .map_err(|e| anyhow::anyhow!("unexpected answer from the server: {e}"))?;
        if let Some(trace) = trace {
            let complete = services.iter().all(|s| trace.services().contains(s));
            let settled = last
                .as_ref()
                .is_some_and(|l| l.spans.len() == trace.spans.len());
            if complete && settled {
                return Ok(Some(trace));
            }
            last = Some(trace);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
