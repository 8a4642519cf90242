//! `trellis txn list|show|abort`: the two-phase-commit coordinator's transactions, as a table or
//! with `--json` as the API answers them.

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use trellis_client::Client;

use crate::client_cmds::RegistryAddr;
use crate::table::print_table;

#[derive(Args)]
pub struct TxnArgs {
    #[command(subcommand)]
    command: TxnCommand,
    #[command(flatten)]
    registry: RegistryAddr,
}

#[derive(Subcommand)]
pub enum TxnCommand {
    /// List transactions, oldest first.
    List {
        /// Only those in this state: open, preparing, committing, aborting, committed, aborted.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one transaction with each branch's state and last error.
    Show {
        gid: String,
        #[arg(long)]
        json: bool,
    },
    /// Abort a transaction that is not decided yet.
    Abort { gid: String },
}

pub async fn run(args: TxnArgs) -> anyhow::Result<()> {
    args.registry
        .run(|client| command(client, args.command))
        .await
}

async fn command(client: Client, command: TxnCommand) -> anyhow::Result<()> {
    match command {
        TxnCommand::List { state, json } => {
            let txns = client.txn_list(state.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&txns)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = txns
                .iter()
                .map(|t| {
                    vec![
                        text(&t["gid"]),
                        text(&t["state"]),
                        t["branches"].as_array().map_or(0, Vec::len).to_string(),
                        age(&t["created_at"]),
                        cause(t),
                    ]
                })
                .collect();
            print_table(&["GID", "STATE", "BRANCHES", "AGE", "CAUSE"], &rows);
        }
        TxnCommand::Show { gid, json } => {
            let Some(txn) = client.txn_get(&gid).await? else {
                bail!("no transaction {gid:?} (never begun, or finished and forgotten)");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&txn)?);
                return Ok(());
            }
            println!("gid:      {}", text(&txn["gid"]));
            println!("state:    {}", text(&txn["state"]));
            println!("age:      {}", age(&txn["created_at"]));
            if let Some(ms) = span(&txn["prepare_started_at"], &txn["decided_at"]) {
                println!("phase 1:  {ms} ms");
            }
            if let Some(ms) = span(&txn["decided_at"], &txn["finished_at"]) {
                println!("phase 2:  {ms} ms");
            }
            let cause = cause(&txn);
            if !cause.is_empty() {
                println!("cause:    {cause}");
            }
            println!();
            let rows: Vec<Vec<String>> = txn["branches"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    let target = match b["url"].as_str() {
                        Some(url) => url.to_string(),
                        None => format!("{}{}", text(&b["service"]), text(&b["path"])),
                    };
                    vec![
                        text(&b["branch_id"]),
                        target,
                        text(&b["state"]),
                        b["attempts"].to_string(),
                        text(&b["last_error"]),
                    ]
                })
                .collect();
            print_table(
                &["BRANCH", "PARTICIPANT", "STATE", "ATTEMPTS", "LAST ERROR"],
                &rows,
            );
        }
        TxnCommand::Abort { gid } => {
            let txn = client.txn_abort(&gid).await?;
            println!("{gid}: {}", text(&txn["state"]));
        }
    }
    Ok(())
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn cause(txn: &Value) -> String {
    let cause = &txn["cause"];
    match (cause["branch"].as_str(), cause["reason"].as_str()) {
        (Some(branch), Some(reason)) => format!("{branch}: {reason}"),
        (None, Some(reason)) => reason.to_string(),
        _ => String::new(),
    }
}

fn span(from: &Value, to: &Value) -> Option<u64> {
    Some(to.as_u64()?.saturating_sub(from.as_u64()?))
}

/// How long ago a time in milliseconds since the epoch was, roughly.
fn age(created_ms: &Value) -> String {
    let Some(created) = created_ms.as_u64() else {
        return String::new();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let age = now.saturating_sub(Duration::from_millis(created));
    match age.as_secs() {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
