//! The SQLite participant: every call runs in one local transaction (`BEGIN IMMEDIATE`) together
//! with a row in the barrier table `trellis_barrier`, which makes repeated calls no-ops and an
//! abort that comes before its prepare turn that prepare into a no vote. All SQLite work runs on
//! blocking threads, never on the async runtime's workers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::Error;
use crate::protocol::{Answer, Branch, BranchError, Done, Participant, Phase};

/// How long a call waits for the database (another connection's write lock, or this
/// participant's own connection) before answering 503.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const BARRIER_DDL: &str = "CREATE TABLE IF NOT EXISTS trellis_barrier (
    gid TEXT NOT NULL,
    branch_id TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('prepare', 'commit', 'abort')),
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    PRIMARY KEY (gid, branch_id, op)
) WITHOUT ROWID";

/// A service's own work for one branch, run inside the local transaction the library opened
/// (which also holds the barrier row): return `Ok` and it commits, return an error and it rolls
/// back. The methods run on a blocking thread and may block.
///
/// `prepare` does the work and keeps what is needed to undo it (reserve, freeze, write
/// pending rows); `commit` makes it final; `abort` undoes what `prepare` did. The library calls
/// each at most once per branch, `commit` and `abort` only after a successful `prepare` (never
/// both), so none of them needs to be idempotent or check for a missing prepare.
pub trait SqliteBranch: Send + Sync + 'static {
    /// Vote yes (`Ok`) or no ([`BranchError::No`]).
    fn prepare(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError>;
    fn commit(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError>;
    fn abort(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError>;
}

/// A [`Participant`] over one SQLite connection and a service's [`SqliteBranch`]. Cheap to
/// clone; clones share the connection.
pub struct SqliteParticipant<H> {
    inner: Arc<Inner<H>>,
}

impl<H> Clone for SqliteParticipant<H> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<H> {
    /// One connection: SQLite has one writer at a time anyway. A call waits for it at most
    /// `busy_timeout`, like for another process's lock.
    conn: Mutex<Connection>,
    busy_timeout: Duration,
    handler: H,
}

type Failure = crate::protocol::Failure<rusqlite::Error>;

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Db(e)
    }
}

impl<H: SqliteBranch> SqliteParticipant<H> {
    /// Opens (or creates) the database at `path` in WAL mode with `synchronous = FULL` (a yes
    /// vote must survive a power loss) and [`DEFAULT_BUSY_TIMEOUT`], and creates the barrier
    /// table if it is missing.
    pub async fn open(path: impl AsRef<Path>, handler: H) -> Result<Self, Error> {
        let path = path.as_ref().to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, Error> {
            let conn = Connection::open(&path)?;
            conn.busy_timeout(DEFAULT_BUSY_TIMEOUT)?;
            let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            Ok(conn)
        })
        .await??;
        Self::with_connection(conn, DEFAULT_BUSY_TIMEOUT, handler).await
    }

    /// Uses a connection the service opened itself (its own pragmas and schema), setting its
    /// busy timeout to `busy_timeout` and creating the barrier table if it is missing.
    pub async fn with_connection(
        conn: Connection,
        busy_timeout: Duration,
        handler: H,
    ) -> Result<Self, Error> {
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, Error> {
            conn.busy_timeout(busy_timeout)?;
            conn.execute_batch(BARRIER_DDL)?;
            Ok(conn)
        })
        .await??;
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                busy_timeout,
                handler,
            }),
        })
    }

    /// The service's handler.
    pub fn handler(&self) -> &H {
        &self.inner.handler
    }

    /// Runs `f` on the participant's connection on a blocking thread (for the service's own
    /// reads and writes outside the protocol).
    pub async fn with_db<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let result = tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock();
            f(&mut conn)
        })
        .await?;
        Ok(result?)
    }

    async fn run(&self, phase: Phase, branch: Branch) -> Answer {
        let inner = Arc::clone(&self.inner);
        let (gid, branch_id) = (branch.gid.clone(), branch.branch_id.clone());
        let outcome = tokio::task::spawn_blocking(move || inner.run_blocking(phase, &branch)).await;
        let failure = match outcome {
            Ok(Ok(done)) => return Answer::Done(done),
            Ok(Err(failure)) => failure,
            Err(e) => Failure::Service(Box::new(e)),
        };
        failure.answer(phase, (&gid, &branch_id), is_busy)
    }
}

impl<H: SqliteBranch> Inner<H> {
    fn run_blocking(&self, phase: Phase, branch: &Branch) -> Result<Done, Failure> {
        let Some(mut conn) = self.conn.try_lock_for(self.busy_timeout) else {
            return Err(Failure::Db(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some("participant connection busy".into()),
            )));
        };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done = match phase {
            Phase::Prepare => self.prepare(&tx, branch)?,
            Phase::Commit => self.commit(&tx, branch)?,
            Phase::Abort => self.abort(&tx, branch)?,
        };
        tx.commit()?;
        Ok(done)
    }

    /// Every early return (an error, a repeated call) drops `tx`, which rolls it back.
    fn prepare(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<Done, Failure> {
        if !mark(tx, branch, "prepare")? {
            // The row is there: this branch prepared already, or an abort came first and left
            // it so that this late prepare votes no.
            return if has(tx, branch, "abort")? {
                Err(Failure::No("transaction already aborted".into()))
            } else {
                Ok(Done::AlreadyPrepared)
            };
        }
        self.handler.prepare(tx, branch).map_err(service)?;
        Ok(Done::Prepared)
    }

    fn commit(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<Done, Failure> {
        if !mark(tx, branch, "commit")? {
            return Ok(Done::AlreadyCommitted);
        }
        if has(tx, branch, "abort")? || !has(tx, branch, "prepare")? {
            return Err(violation(
                branch,
                "commit of a branch that did not vote yes",
            ));
        }
        self.handler.commit(tx, branch).map_err(service)?;
        Ok(Done::Committed)
    }

    fn abort(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<Done, Failure> {
        if !mark(tx, branch, "abort")? {
            return Ok(Done::AlreadyAborted);
        }
        if has(tx, branch, "commit")? {
            return Err(violation(branch, "abort of a committed branch"));
        }
        if mark(tx, branch, "prepare")? {
            // Prepare never ran (or voted no, which rolled its row back): nothing to undo, and
            // the row makes a prepare that arrives later vote no.
            return Ok(Done::AbortedBeforePrepare);
        }
        self.handler.abort(tx, branch).map_err(service)?;
        Ok(Done::Aborted)
    }
}

impl<H: SqliteBranch> Participant for SqliteParticipant<H> {
    async fn prepare(&self, branch: Branch) -> Answer {
        self.run(Phase::Prepare, branch).await
    }

    async fn commit(&self, branch: Branch) -> Answer {
        self.run(Phase::Commit, branch).await
    }

    async fn abort(&self, branch: Branch) -> Answer {
        self.run(Phase::Abort, branch).await
    }
}

/// Inserts the barrier row for `op`; false if it was already there.
fn mark(tx: &Transaction<'_>, branch: &Branch, op: &str) -> rusqlite::Result<bool> {
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO trellis_barrier (gid, branch_id, op) VALUES (?1, ?2, ?3)",
        params![branch.gid, branch.branch_id, op],
    )?;
    Ok(inserted == 1)
}

fn has(tx: &Transaction<'_>, branch: &Branch, op: &str) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT 1 FROM trellis_barrier WHERE gid = ?1 AND branch_id = ?2 AND op = ?3",
        params![branch.gid, branch.branch_id, op],
        |_| Ok(()),
    )
    .optional()
    .map(|row| row.is_some())
}

fn service(e: BranchError) -> Failure {
    match e {
        BranchError::No(reason) => Failure::No(reason),
        BranchError::Failed(e) => match e.downcast::<rusqlite::Error>() {
            Ok(db) => Failure::Db(*db),
            Err(other) => Failure::Service(other),
        },
    }
}

/// A call a correct coordinator never makes; refused (409) rather than retried forever.
fn violation(branch: &Branch, what: &str) -> Failure {
    tracing::error!(gid = %branch.gid, branch_id = %branch.branch_id,
        "2pc protocol violation: {what}");
    Failure::Violation(what.into())
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
