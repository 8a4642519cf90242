//! The bank on PostgreSQL's own two-phase commit: prepare applies the delta (a debit only if
//! the balance covers it) and records the transfer inside the transaction that the participant
//! library then prepares; `COMMIT PREPARED` makes both visible at once, `ROLLBACK PREPARED`
//! undoes both.

use serde_json::{Value, json};
use tokio_postgres::Transaction;
use trellis_participant::{Branch, BranchError, Connector, PgBranch, PgOptions, PgParticipant};

use crate::Error;
use crate::bank::transfer::Transfer;

/// Creates the tables (and the accounts, only when the `accounts` table is new) under an
/// advisory lock, so that two instances starting together do not race.
const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('trellis_bank'))";
const ACCOUNTS_DDL: &str = "CREATE TABLE accounts (
    id text PRIMARY KEY,
    balance bigint NOT NULL CHECK (balance >= 0)
)";
const TRANSFERS_DDL: &str = "CREATE TABLE IF NOT EXISTS transfers (
    gid text NOT NULL,
    branch_id text NOT NULL,
    account text NOT NULL,
    delta bigint NOT NULL,
    PRIMARY KEY (gid, branch_id)
)";

/// The service's side of the protocol (see the module docs).
pub(crate) struct PgBank;

pub(crate) type PgBankParticipant = PgParticipant<PgBank>;

/// Connects with `config` (a `tokio_postgres` connection string), creates the tables and, when
/// the `accounts` table is new, the accounts with `initial` each; then settles the branches a
/// crash left prepared by asking the coordinator at `coordinator`.
pub(crate) async fn open(
    config: &str,
    coordinator: &str,
    accounts: Vec<String>,
    initial: i64,
) -> Result<PgBankParticipant, Error> {
    let config: tokio_postgres::Config = config
        .parse()
        .map_err(|e| Error::Config(format!("--postgres {config:?}: {e}")))?;
    let connector = Connector::new(config, tokio_postgres::NoTls);
    let participant = PgParticipant::connect(connector, PgOptions::default(), PgBank).await?;
    create(&participant, &accounts, initial).await?;
    let report = participant.resolve_in_doubt(coordinator).await?;
    tracing::info!(
        committed = report.committed.len(),
        aborted = report.aborted.len(),
        left = report.left.len(),
        failed = report.failed.len(),
        "bank: branches in doubt at start settled"
    );
    for (branch, reason) in &report.failed {
        tracing::warn!(gid = %branch.gid, branch_id = %branch.branch_id, %reason,
            "bank: a branch in doubt is left for the coordinator's next call");
    }
    Ok(participant)
}

async fn create(
    participant: &PgBankParticipant,
    accounts: &[String],
    initial: i64,
) -> Result<(), Error> {
    let mut client = participant.client().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(LOCK).await?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('accounts') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        tx.batch_execute(ACCOUNTS_DDL).await?;
        for account in accounts {
            tx.execute(
                "INSERT INTO accounts (id, balance) VALUES ($1, $2)",
                &[account, &initial],
            )
            .await?;
        }
    }
    tx.batch_execute(TRANSFERS_DDL).await?;
    tx.commit().await?;
    Ok(())
}

impl PgBranch for PgBank {
    async fn prepare(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
        let transfer = Transfer::of(branch)?;
        let updated = tx
            .execute(
                "UPDATE accounts SET balance = balance + $2 WHERE id = $1 AND balance + $2 >= 0",
                &[&transfer.account, &transfer.delta],
            )
            .await?;
        if updated == 0 {
            let exists = tx
                .query_opt("SELECT 1 FROM accounts WHERE id = $1", &[&transfer.account])
                .await?
                .is_some();
            return Err(if exists {
                BranchError::no("insufficient funds")
            } else {
                BranchError::no(format!("no account {}", transfer.account))
            });
        }
        tx.execute(
            "INSERT INTO transfers (gid, branch_id, account, delta) VALUES ($1, $2, $3, $4)",
            &[
                &branch.gid,
                &branch.branch_id,
                &transfer.account,
                &transfer.delta,
            ],
        )
        .await?;
        Ok(())
    }
}

/// `GET /accounts`: every account with its committed balance (`frozen` is always 0: a
/// prepared debit is in its own prepared transaction, not visible until it commits).
pub(crate) async fn accounts(participant: &PgBankParticipant) -> Result<Value, Error> {
    let client = participant.client().await?;
    let rows = client
        .query("SELECT id, balance FROM accounts ORDER BY id", &[])
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            json!({
                "id": row.get::<_, String>(0),
                "balance": row.get::<_, i64>(1),
                "frozen": 0,
            })
        })
        .collect())
}

/// `GET /transfers`: every committed branch.
pub(crate) async fn transfers(participant: &PgBankParticipant) -> Result<Value, Error> {
    let client = participant.client().await?;
    let rows = client
        .query(
            "SELECT gid, branch_id, account, delta FROM transfers ORDER BY gid, branch_id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            json!({
                "gid": row.get::<_, String>(0),
                "branch_id": row.get::<_, String>(1),
                "account": row.get::<_, String>(2),
                "delta": row.get::<_, i64>(3),
            })
        })
        .collect())
}

/// `GET /in-doubt`: the prepared transactions of this database (every one, not only the
/// library's), by name.
pub(crate) async fn in_doubt(participant: &PgBankParticipant) -> Result<Vec<String>, Error> {
    let client = participant.client().await?;
    let rows = client
        .query(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}
