//! `trellis demo`: the users/orders/inventory example system, end to end on this machine — a
//! registry (which is also the transaction coordinator), two users, two orders and one inventory
//! instance each with its own sidecar, and a gateway, every one its own OS process — then the
//! client flow through the gateway, step by step. With `--secure`, the same system under ACL
//! default deny, a least-privilege token for each component, mutual TLS and intentions.

mod flow;
mod plan;
mod processes;
mod report;
mod security;

use anyhow::Context;
use clap::Args;
use plan::Plan;
use processes::{Processes, ensure_free};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Exit after the flow: status 0 if every step passed.
    #[arg(long)]
    once: bool,
    /// First port of the range the demo uses (registry; the rest follow).
    #[arg(long, default_value_t = 8500)]
    base_port: u16,
    /// Keep the registry's data and the services' databases here instead of a temporary dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Secure the system: the registry denies what no token allows, each component gets a
    /// token that allows only what it does, sidecars and the gateway speak mutual TLS, and
    /// intentions allow exactly the calls the services make.
    #[arg(long)]
    secure: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let temp;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("trellis-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            temp.path().to_owned()
        }
    };
    let mut plan = Plan::new(args.base_port, data_dir)?;
    ensure_free(&plan.ports())?;
    if args.secure {
        let management = security::prepare_management(&plan.data_dir)?;
        plan = plan.secured(management);
    }
    let mut procs = Processes::new(&plan.data_dir.join("logs"))?;
    let mut report = report::Report::new();
    report.title(if plan.secure() {
        "Trellis demo, secured: users, orders and inventory behind mutual-TLS sidecars and a gateway"
    } else {
        "Trellis demo: users, orders and inventory behind sidecars and a gateway"
    });
    report.info(&format!("data and logs in {}", plan.data_dir.display()));

    let outcome = tokio::select! {
        outcome = flow::run(&plan, &mut procs, &mut report) => outcome,
        () = crate::shutdown::signal() => {
            println!("\ninterrupted; stopping every process");
            procs.stop_all();
            anyhow::bail!("interrupted");
        }
    };
    if let Err(error) = &outcome {
        report.fail(&format!("{error:#}"));
    }
    println!();
    if report.failures == 0 {
        report.ok("every step passed");
    } else {
        report.fail(&format!(
            "{} check(s) failed; logs in {}",
            report.failures,
            procs.log_dir().display()
        ));
    }
    if !args.once && outcome.is_ok() {
        println!();
        report.title("The system keeps running. Try:");
        if let Some(secret) = &plan.management {
            // The registry answers nothing without a token now; this one may do everything.
            report.table(&[(
                "management token",
                format!(
                    "export TRELLIS_HTTP_TOKEN={secret}   (the commands below read it; curl: -H \"X-Consul-Token: $TRELLIS_HTTP_TOKEN\"; the dashboard: its Token button)"
                ),
            )]);
        }
        report.table(&[
            (
                "gateway",
                format!(
                    "curl {}/users   |   curl {}/orders   |   curl {}/stock",
                    plan.gateway_url(),
                    plan.gateway_url(),
                    plan.gateway_url()
                ),
            ),
            (
                "place an order",
                format!(
                    "curl -i {}/orders -H 'content-type: application/json' -d '{{\"user_id\": 1, \"product\": \"Product A\", \"quantity\": 1}}'",
                    plan.gateway_url()
                ),
            ),
            ("dashboard", format!("{}/ui/", plan.registry_url())),
            (
                "registry API",
                format!("{}/v1/health/service/users", plan.registry_url()),
            ),
            (
                "services",
                format!("{} services --addr {}", processes::this_binary(), plan.registry),
            ),
            (
                "transactions",
                format!("{} txn list --addr {}", processes::this_binary(), plan.registry),
            ),
            (
                "traces",
                format!(
                    "{} traces search --service orders --addr {}   |   {} traces show TRACE_ID --addr {}",
                    processes::this_binary(),
                    plan.registry,
                    processes::this_binary(),
                    plan.registry
                ),
            ),
            (
                "gateway metrics",
                format!("http://{}/metrics", plan.gateway_admin),
            ),
        ]);
        for i in &plan.instances {
            report.table(&[(
                &format!("{} sidecar metrics", i.name),
                format!("http://{}/metrics", i.admin),
            )]);
        }

        println!();
        report.info("Ctrl-C stops everything.");
        crate::shutdown::signal().await;
        println!("stopping every process…");
    }
    procs.stop_all();
    if report.failures > 0 {
        anyhow::bail!("the demo flow failed");
    }
    Ok(())
}
