//! The bank: one participant of the two-phase-commit chaos test. It owns some accounts in
//! SQLite or PostgreSQL, serves the participant protocol for transfers at `/txn/transfer`
//! (branch payload `{"account": "a1", "delta": -5}`: a debit never overdraws) and lets a test
//! read what it holds: `GET /accounts`, `GET /transfers` (every committed branch, written in the
//! same local transaction as its change) and `GET /in-doubt` (branches prepared and not yet
//! committed or aborted).

mod postgres;
mod sqlite;
mod transfer;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::api::ApiError;
use crate::{Error, Server};
use postgres::PgBankParticipant;
use sqlite::SqliteBankParticipant;

/// Where the coordinator sends a transfer's branches: `http://HOST:PORT/txn/transfer`.
pub const TRANSFER_PATH: &str = "/txn/transfer";

/// Command-line arguments of one bank participant.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct BankArgs {
    /// Address to listen on, HOST:PORT (a host name is resolved at start).
    #[arg(long, value_parser = crate::server::listen_addr, default_value = "127.0.0.1:8083")]
    pub listen: SocketAddr,
    /// Keep the accounts in this SQLite file (created if missing).
    #[arg(
        long,
        required_unless_present = "postgres",
        conflicts_with = "postgres"
    )]
    pub sqlite: Option<PathBuf>,
    /// Keep the accounts in PostgreSQL: a tokio-postgres connection string, e.g.
    /// `host=/run/postgresql dbname=bank user=bank`. The server needs
    /// `max_prepared_transactions > 0`.
    #[arg(long, requires = "coordinator")]
    pub postgres: Option<String>,
    /// The coordinator (`trellis server`), asked at start about branches a crash left prepared
    /// in PostgreSQL.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// The accounts, created only together with the accounts table: `a1,a2,...`.
    #[arg(long, value_delimiter = ',', required = true, value_parser = account_name)]
    pub accounts: Vec<String>,
    /// Each new account's balance.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..=transfer::MAX_AMOUNT))]
    pub initial: i64,
}

fn account_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(text.to_owned())
    } else {
        Err("an account is 1 to 64 of A-Z a-z 0-9 - _ .".to_owned())
    }
}

/// One bank's participant, on either database.
#[derive(Clone)]
enum Bank {
    Sqlite(SqliteBankParticipant),
    Postgres(PgBankParticipant),
}

impl Bank {
    async fn open(args: &BankArgs) -> Result<Self, Error> {
        let accounts = args.accounts.clone();
        match (&args.sqlite, &args.postgres, &args.coordinator) {
            (Some(path), None, _) => Ok(Bank::Sqlite(
                sqlite::open(path, accounts, args.initial).await?,
            )),
            (None, Some(config), Some(coordinator)) => Ok(Bank::Postgres(
                postgres::open(config, coordinator, accounts, args.initial).await?,
            )),
            _ => Err(Error::Config(
                "give either --sqlite PATH, or --postgres CONNSTR with --coordinator URL".into(),
            )),
        }
    }

    fn routes(&self) -> Router {
        let participant = match self {
            Bank::Sqlite(p) => trellis_participant::router(p.clone()),
            Bank::Postgres(p) => trellis_participant::router(p.clone()),
        };
        Router::new()
            .route("/accounts", get(accounts))
            .route("/transfers", get(transfers))
            .route("/in-doubt", get(in_doubt))
            .with_state(self.clone())
            .nest(TRANSFER_PATH, participant)
    }
}

/// Opens the database (creating and seeding it if new; on PostgreSQL also settling the
/// branches in doubt) and binds the listener; nothing is served yet.
pub async fn bank_server(args: &BankArgs) -> Result<Server, Error> {
    let bank = Bank::open(args).await?;
    let router = crate::api::service_router(bank.routes(), HeaderValue::from_static("bank"), ());
    Server::bind(args.listen, router).await
}

/// Runs one bank participant until `shutdown` resolves, printing `bank listening on ADDR` once
/// bound.
pub async fn run_bank<F>(args: BankArgs, shutdown: F) -> Result<(), Error>
where
    F: Future<Output = ()> + Send + 'static,
{
    let server = bank_server(&args).await?;
    let addr = server.local_addr();
    println!("bank listening on {addr}");
    tracing::info!(service = "bank", %addr, "listening");
    let result = server.serve(shutdown).await;
    tracing::info!(service = "bank", "stopped");
    result
}

async fn accounts(State(bank): State<Bank>) -> Result<Json<Value>, ApiError> {
    Ok(Json(match &bank {
        Bank::Sqlite(p) => sqlite::accounts(p).await?,
        Bank::Postgres(p) => postgres::accounts(p).await?,
    }))
}

async fn transfers(State(bank): State<Bank>) -> Result<Json<Value>, ApiError> {
    Ok(Json(match &bank {
        Bank::Sqlite(p) => sqlite::transfers(p).await?,
        Bank::Postgres(p) => postgres::transfers(p).await?,
    }))
}

/// `{"count": N, "branches": [...]}`: on SQLite `gid/branch_id` of every branch prepared and
/// neither committed nor aborted; on PostgreSQL the names of this database's prepared
/// transactions.
async fn in_doubt(State(bank): State<Bank>) -> Result<Json<Value>, ApiError> {
    let branches = match &bank {
        Bank::Sqlite(p) => sqlite::in_doubt(p).await?,
        Bank::Postgres(p) => postgres::in_doubt(p).await?,
    };
    Ok(Json(
        json!({ "count": branches.len(), "branches": branches }),
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Bank {
        #[command(flatten)]
        args: BankArgs,
    }

    fn parse(argv: &[&str]) -> Result<BankArgs, clap::Error> {
        Bank::try_parse_from(std::iter::once("bank").chain(argv.iter().copied())).map(|b| b.args)
    }

    #[test]
    fn exactly_one_database() {
        let args = parse(&["--sqlite", "b.db", "--accounts", "a1,a2", "--initial", "10"]).unwrap();
        assert_eq!(args.accounts, ["a1", "a2"]);
        assert_eq!(args.initial, 10);
        assert_eq!(args.listen.to_string(), "127.0.0.1:8083");
        let pg = [
            "--postgres",
            "host=/tmp dbname=postgres",
            "--coordinator",
            "http://127.0.0.1:8500",
            "--accounts",
            "p1",
        ];
        assert_eq!(
            parse(&pg).unwrap().postgres.as_deref(),
            Some("host=/tmp dbname=postgres")
        );
        for bad in [
            &["--accounts", "a1"][..],
            &[
                "--sqlite",
                "b.db",
                "--postgres",
                "host=/tmp",
                "--accounts",
                "a1",
            ],
            &["--postgres", "host=/tmp", "--accounts", "a1"],
            &["--sqlite", "b.db"],
            &["--sqlite", "b.db", "--accounts", "a b"],
            &["--sqlite", "b.db", "--accounts", "a1,"],
            &["--sqlite", "b.db", "--accounts", "a1", "--initial", "-1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
