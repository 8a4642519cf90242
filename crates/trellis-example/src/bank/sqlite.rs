//! The bank on SQLite, in the style of TCC: prepare freezes a debit's amount (or votes no),
//! commit applies the delta, unfreezes and records the transfer, abort unfreezes; each in the
//! local transaction that also holds the participant library's barrier row.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::{Value, json};
use trellis_participant::{Branch, BranchError, SqliteBranch, SqliteParticipant};

use crate::Error;
use crate::bank::transfer::Transfer;

/// `frozen` is what prepared debits hold back: `balance - frozen` is what may still be spent.
const ACCOUNTS_DDL: &str = "CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    balance INTEGER NOT NULL CHECK (balance >= 0),
    frozen INTEGER NOT NULL DEFAULT 0 CHECK (frozen >= 0 AND frozen <= balance)
) WITHOUT ROWID";

/// Every committed branch, written in the same local transaction as its change.
const TRANSFERS_DDL: &str = "CREATE TABLE IF NOT EXISTS transfers (
    gid TEXT NOT NULL,
    branch_id TEXT NOT NULL,
    account TEXT NOT NULL,
    delta INTEGER NOT NULL,
    PRIMARY KEY (gid, branch_id)
) WITHOUT ROWID";

/// The service's side of the protocol (see the module docs).
pub(crate) struct SqliteBank;

pub(crate) type SqliteBankParticipant = SqliteParticipant<SqliteBank>;

/// Opens (or creates) the database; the accounts are created with `initial` each only when the
/// `accounts` table is.
pub(crate) async fn open(
    path: &Path,
    accounts: Vec<String>,
    initial: i64,
) -> Result<SqliteBankParticipant, Error> {
    let participant = SqliteParticipant::open(path, SqliteBank).await?;
    participant
        .with_db(move |conn| create(conn, &accounts, initial))
        .await?;
    Ok(participant)
}

fn create(conn: &mut Connection, accounts: &[String], initial: i64) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let exists = tx
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'accounts'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !exists {
        tx.execute_batch(ACCOUNTS_DDL)?;
        for account in accounts {
            tx.execute(
                "INSERT INTO accounts (id, balance) VALUES (?1, ?2)",
                params![account, initial],
            )?;
        }
    }
    tx.execute_batch(TRANSFERS_DDL)?;
    tx.commit()
}

fn account_exists(tx: &Transaction<'_>, account: &str) -> rusqlite::Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM accounts WHERE id = ?1",
            params![account],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Fails (503, the coordinator retries) unless exactly one row changed.
fn one_row(changed: usize, transfer: &Transfer) -> Result<(), BranchError> {
    if changed == 1 {
        Ok(())
    } else {
        Err(BranchError::failed(format!(
            "account {} changed {changed} rows",
            transfer.account
        )))
    }
}

impl SqliteBranch for SqliteBank {
    fn prepare(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
        let transfer = Transfer::of(branch)?;
        let frozen = match transfer.debit() {
            Some(amount) => tx.execute(
                "UPDATE accounts SET frozen = frozen + ?2 WHERE id = ?1 AND balance - frozen >= ?2",
                params![transfer.account, amount],
            )?,
            None => usize::from(account_exists(tx, &transfer.account)?),
        };
        if frozen == 0 {
            return Err(if account_exists(tx, &transfer.account)? {
                BranchError::no("insufficient funds")
            } else {
                BranchError::no(format!("no account {}", transfer.account))
            });
        }
        Ok(())
    }

    fn commit(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
        let transfer = Transfer::of(branch)?;
        let changed = match transfer.debit() {
            Some(amount) => tx.execute(
                "UPDATE accounts SET balance = balance - ?2, frozen = frozen - ?2 WHERE id = ?1",
                params![transfer.account, amount],
            )?,
            None => tx.execute(
                "UPDATE accounts SET balance = balance + ?2 WHERE id = ?1",
                params![transfer.account, transfer.delta],
            )?,
        };
        one_row(changed, &transfer)?;
        tx.execute(
            "INSERT INTO transfers (gid, branch_id, account, delta) VALUES (?1, ?2, ?3, ?4)",
            params![
                branch.gid,
                branch.branch_id,
                transfer.account,
                transfer.delta
            ],
        )?;
        Ok(())
    }

    fn abort(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
        let transfer = Transfer::of(branch)?;
        if let Some(amount) = transfer.debit() {
            let changed = tx.execute(
                "UPDATE accounts SET frozen = frozen - ?2 WHERE id = ?1",
                params![transfer.account, amount],
            )?;
            one_row(changed, &transfer)?;
        }
        Ok(())
    }
}

/// `GET /accounts`: every account with its balance and frozen amount.
pub(crate) async fn accounts(participant: &SqliteBankParticipant) -> Result<Value, Error> {
    let rows = participant
        .with_db(|conn| {
            let mut stmt = conn.prepare("SELECT id, balance, frozen FROM accounts ORDER BY id")?;
            let rows = stmt.query_map([], |row| {
                Ok(json!({
                    "id": row.get::<_, String>(0)?,
                    "balance": row.get::<_, i64>(1)?,
                    "frozen": row.get::<_, i64>(2)?,
                }))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await?;
    Ok(Value::Array(rows))
}

/// `GET /transfers`: every committed branch.
pub(crate) async fn transfers(participant: &SqliteBankParticipant) -> Result<Value, Error> {
    let rows = participant
        .with_db(|conn| {
            let mut stmt = conn.prepare(
                "SELECT gid, branch_id, account, delta FROM transfers ORDER BY gid, branch_id",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok(json!({
                    "gid": row.get::<_, String>(0)?,
                    "branch_id": row.get::<_, String>(1)?,
                    "account": row.get::<_, String>(2)?,
                    "delta": row.get::<_, i64>(3)?,
                }))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await?;
    Ok(Value::Array(rows))
}

/// `GET /in-doubt`: branches that prepared and neither committed nor aborted, as
/// `gid/branch_id`.
pub(crate) async fn in_doubt(participant: &SqliteBankParticipant) -> Result<Vec<String>, Error> {
    Ok(participant
        .with_db(|conn| {
            let mut stmt = conn.prepare(
                "SELECT p.gid, p.branch_id FROM trellis_barrier p
                 WHERE p.op = 'prepare' AND NOT EXISTS (
                     SELECT 1 FROM trellis_barrier o
                     WHERE o.gid = p.gid AND o.branch_id = p.branch_id
                       AND o.op IN ('commit', 'abort'))
                 ORDER BY p.gid, p.branch_id",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok(format!(
                    "{}/{}",
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await?)
}
