//! The PostgreSQL barrier: the tables (`trellis_barrier`, `trellis_xact_names`) and the
//! statements on them that make repeated calls no-ops and an early abort turn a late prepare
//! into a no vote.

use tokio_postgres::{Client, GenericClient};

use crate::protocol::Branch;

/// The `prepare` row is written inside the branch's own transaction, so it becomes visible
/// exactly when the prepared transaction commits; an abort writes `abort` and (when it is still
/// missing) `prepare` in a transaction of its own.
const DDL: &str = "
SELECT pg_advisory_xact_lock(hashtext('trellis_barrier'));
CREATE TABLE IF NOT EXISTS trellis_barrier (
    gid text NOT NULL,
    branch_id text NOT NULL,
    op text NOT NULL CHECK (op IN ('prepare', 'abort')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gid, branch_id, op)
);
CREATE TABLE IF NOT EXISTS trellis_xact_names (
    xact text PRIMARY KEY,
    gid text NOT NULL,
    branch_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);";

/// Creates the tables if they are missing. The advisory lock keeps two instances starting
/// together from racing on `CREATE TABLE IF NOT EXISTS` (which is not safe against that).
pub(crate) async fn create(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(DDL).await?;
    tx.commit().await
}

/// Inserts the barrier row for `op`; false if it was already there. Waits (up to the session's
/// `lock_timeout`) while another transaction holds an uncommitted or prepared row of the same
/// key.
pub(crate) async fn mark(
    client: &impl GenericClient,
    branch: &Branch,
    op: &str,
) -> Result<bool, tokio_postgres::Error> {
    let inserted = client
        .execute(
            "INSERT INTO trellis_barrier (gid, branch_id, op) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[&branch.gid, &branch.branch_id, &op],
        )
        .await?;
    Ok(inserted == 1)
}

/// Which barrier rows are visible: (prepare, abort).
pub(crate) async fn visible(
    client: &impl GenericClient,
    branch: &Branch,
) -> Result<(bool, bool), tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT op FROM trellis_barrier WHERE gid = $1 AND branch_id = $2",
            &[&branch.gid, &branch.branch_id],
        )
        .await?;
    let has = |op: &str| rows.iter().any(|row| row.get::<_, &str>(0) == op);
    Ok((has("prepare"), has("abort")))
}

/// Records which branch a hashed prepared-transaction name stands for, committed before the
/// transaction is prepared so that recovery can find it.
pub(crate) async fn record_name(
    client: &Client,
    xact: &str,
    branch: &Branch,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO trellis_xact_names (xact, gid, branch_id) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[&xact, &branch.gid, &branch.branch_id],
        )
        .await?;
    Ok(())
}

/// The (gid, branch) a hashed name stands for.
pub(crate) async fn lookup_name(
    client: &Client,
    xact: &str,
) -> Result<Option<(String, String)>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT gid, branch_id FROM trellis_xact_names WHERE xact = $1",
            &[&xact],
        )
        .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// What writing the abort markers found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marked {
    /// An earlier abort wrote them.
    AlreadyAborted,
    /// The prepared transaction was rolled back and the markers are written.
    Aborted,
    /// There was no prepare: the markers are written so that a late prepare votes no.
    AbortedBeforePrepare,
    /// A visible `prepare` row and no prepared transaction: the branch committed. Nothing is
    /// written.
    WasCommitted,
}

/// Writes the `abort` and `prepare` rows in one transaction, after the prepared transaction
/// (if any) is gone: `rolled_back` says whether this call rolled one back. A prepare of the
/// same branch still in flight holds its `prepare` row, so this waits for it at most the
/// session's `lock_timeout` and fails (the caller answers 503; on the retry the transaction is
/// prepared and rolled back).
pub(crate) async fn mark_aborted(
    client: &mut Client,
    branch: &Branch,
    rolled_back: bool,
) -> Result<Marked, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    if !mark(&tx, branch, "abort").await? {
        tx.rollback().await?;
        return Ok(Marked::AlreadyAborted);
    }
    let marked = match (mark(&tx, branch, "prepare").await?, rolled_back) {
        (true, true) => Marked::Aborted,
        (true, false) => Marked::AbortedBeforePrepare,
        (false, true) => Marked::Aborted,
        (false, false) => {
            tx.rollback().await?;
            return Ok(Marked::WasCommitted);
        }
    };
    tx.commit().await?;
    Ok(marked)
}
