//! The PostgreSQL participant, on the database's own two-phase commit: prepare runs the
//! service's work and `PREPARE TRANSACTION`, commit is `COMMIT PREPARED`, abort is `ROLLBACK
//! PREPARED` (or, before any prepare, a barrier row that makes a late prepare vote no), and
//! [`PgParticipant::resolve_in_doubt`] settles what a crash left prepared by asking the
//! coordinator.

mod barrier;
mod name;
mod pool;
mod recover;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Transaction};

use crate::Error;
use crate::protocol::{Answer, Branch, BranchError, Done, Participant, Phase};
use barrier::Marked;
use name::{XactName, literal, xact_name};
use pool::Pool;
pub use pool::{Connector, PooledClient};
pub use recover::{InDoubt, InDoubtReport};

/// A service's prepare work on PostgreSQL, run in the transaction the library opened (which
/// also holds the barrier row) before it is prepared with `PREPARE TRANSACTION`.
///
/// There is nothing to write for commit and abort: PostgreSQL commits or rolls back the
/// prepared transaction itself (`COMMIT PREPARED` / `ROLLBACK PREPARED`). Until then the
/// prepared transaction keeps its row locks, so prepare should touch only the rows it needs.
pub trait PgBranch: Send + Sync + 'static {
    /// Do the branch's work and vote yes (`Ok`) or no ([`BranchError::No`]). Statement errors
    /// should be returned (with `?`), not swallowed: the transaction is then rolled back and
    /// the coordinator retries.
    fn prepare(
        &self,
        tx: &Transaction<'_>,
        branch: &Branch,
    ) -> impl Future<Output = Result<(), BranchError>> + Send;
}

/// Settings of a [`PgParticipant`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Most connections open at once (each call holds one until it is done; prepares at most
    /// three quarters of them, so commits and aborts, which release the locks prepares wait
    /// for, always find one). Default 8.
    pub max_connections: usize,
    /// PostgreSQL's `lock_timeout` for every statement, the service's included: a call that
    /// waits longer for a row lock (held by another branch's prepared transaction, say) is
    /// answered 503 and retried by the coordinator, instead of holding a connection. Default
    /// 2 s.
    pub lock_timeout: Duration,
    /// How long a call waits for a free (or new) connection before answering 503. Default 5 s.
    pub acquire_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            lock_timeout: Duration::from_secs(2),
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// A [`Participant`] over a PostgreSQL database and a service's [`PgBranch`]. Cheap to clone;
/// clones share the connection pool.
pub struct PgParticipant<H> {
    inner: Arc<Inner<H>>,
}

impl<H> Clone for PgParticipant<H> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<H> {
    pool: Pool,
    handler: H,
}

type Failure = crate::protocol::Failure<tokio_postgres::Error>;

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Db(e)
    }
}

impl<H: PgBranch> PgParticipant<H> {
    /// Connects, checks that the server can prepare transactions (`max_prepared_transactions`
    /// above 0) and creates the barrier tables (`trellis_barrier`, `trellis_xact_names`, in the
    /// connection's schema) if they are missing.
    pub async fn connect(
        connector: Connector,
        options: PgOptions,
        handler: H,
    ) -> Result<Self, Error> {
        let lock_timeout = options.lock_timeout.as_millis().max(1);
        let pool = Pool::new(
            connector,
            format!("SET lock_timeout = '{lock_timeout}ms'"),
            options.max_connections,
            options.acquire_timeout,
        );
        {
            let mut conn = pool.get().await?;
            let max: String = conn
                .query_one("SELECT current_setting('max_prepared_transactions')", &[])
                .await?
                .get(0);
            if max.trim() == "0" {
                return Err(Error::PreparedTransactionsDisabled);
            }
            barrier::create(&mut conn).await?;
        }
        Ok(Self {
            inner: Arc::new(Inner { pool, handler }),
        })
    }

    /// The service's handler.
    pub fn handler(&self) -> &H {
        &self.inner.handler
    }

    /// A connection from the participant's pool, for the service's own queries.
    pub async fn client(&self) -> Result<PooledClient<'_>, Error> {
        self.inner.pool.get().await
    }

    /// Settles the branches a crash left prepared in this database: for each prepared
    /// transaction of ours, asks the coordinator at `coordinator` (`http://host:port`) with
    /// `GET /v1/trellis/txn/<gid>` and commits it (`committing`, `committed`), rolls it back
    /// (`aborting`, `aborted`, or 404: the coordinator forgot the gid, so it aborted) or leaves
    /// it to the coordinator's next call (`preparing`). Run it at start-up, before serving;
    /// branches that could not be settled (coordinator unreachable) are in the report's
    /// `failed` and stay prepared, holding their locks, until a later call or run.
    pub async fn resolve_in_doubt(&self, coordinator: &str) -> Result<InDoubtReport, Error> {
        recover::resolve(&self.inner.pool, coordinator).await
    }

    async fn run(&self, phase: Phase, branch: Branch) -> Answer {
        let xact = xact_name(&branch.gid, &branch.branch_id);
        let conn = match phase {
            Phase::Prepare => self.inner.pool.get_for_prepare().await,
            Phase::Commit | Phase::Abort => self.inner.pool.get().await,
        };
        let result = match conn {
            Err(e) => Err(Failure::Unavailable(e.to_string())),
            Ok(mut conn) => {
                let client: &mut Client = &mut conn;
                let result = match phase {
                    Phase::Prepare => self.prepare_on(client, &branch, &xact).await,
                    Phase::Commit => commit_on(client, &branch, &xact).await,
                    Phase::Abort => abort_on(client, &branch, &xact).await,
                };
                if matches!(result, Err(Failure::Db(_) | Failure::Service(_))) {
                    // The session may be mid-transaction or broken; start afresh next time.
                    conn.discard();
                }
                result
            }
        };
        let failure = match result {
            Ok(done) => return Answer::Done(done),
            Err(failure) => failure,
        };
        failure.answer(phase, (&branch.gid, &branch.branch_id), is_transient)
    }

    async fn prepare_on(
        &self,
        client: &mut Client,
        branch: &Branch,
        xact: &XactName,
    ) -> Result<Done, Failure> {
        // A repeated prepare of a prepared branch must not wait for its own barrier row, which
        // the prepared transaction holds until commit or abort.
        if is_prepared(client, &xact.name).await? {
            return Ok(Done::AlreadyPrepared);
        }
        if xact.hashed {
            barrier::record_name(client, &xact.name, branch).await?;
        }
        let tx = client.transaction().await?;
        if !barrier::mark(&tx, branch, "prepare").await? {
            // Committed already (the row became visible with COMMIT PREPARED), or an abort
            // came first and left the row so that this late prepare votes no.
            let (_, aborted) = barrier::visible(&tx, branch).await?;
            tx.rollback().await?;
            return if aborted {
                Err(Failure::No("transaction already aborted".into()))
            } else {
                Ok(Done::AlreadyPrepared)
            };
        }
        match self.inner.handler.prepare(&tx, branch).await {
            Ok(()) => {}
            Err(BranchError::No(reason)) => {
                tx.rollback().await?;
                return Err(Failure::No(reason));
            }
            Err(BranchError::Failed(e)) => return Err(service(e)),
        }
        tx.batch_execute(&format!("PREPARE TRANSACTION {}", literal(&xact.name)))
            .await?;
        // The session has no transaction any more; dropping `tx` would send a ROLLBACK that
        // PostgreSQL answers with a warning. Forgetting it leaks nothing (it only borrows the
        // client).
        std::mem::forget(tx);
        if !is_prepared(client, &xact.name).await? {
            // PREPARE TRANSACTION of a transaction in which a statement failed (an error the
            // service did not return) rolls it back instead.
            return Err(Failure::Service(
                "PREPARE TRANSACTION rolled back: a statement of the branch failed".into(),
            ));
        }
        Ok(Done::Prepared)
    }
}

async fn commit_on(client: &mut Client, branch: &Branch, xact: &XactName) -> Result<Done, Failure> {
    match client
        .batch_execute(&format!("COMMIT PREPARED {}", literal(&xact.name)))
        .await
    {
        Ok(()) => Ok(Done::Committed),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
            // No such prepared transaction: committed already if its barrier row is visible.
            match barrier::visible(client, branch).await? {
                (true, false) => Ok(Done::AlreadyCommitted),
                _ => Err(violation(
                    branch,
                    "commit of a branch that did not vote yes",
                )),
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn abort_on(client: &mut Client, branch: &Branch, xact: &XactName) -> Result<Done, Failure> {
    let rolled_back = rollback_prepared(client, &xact.name).await?;
    match barrier::mark_aborted(client, branch, rolled_back).await? {
        Marked::AlreadyAborted => Ok(Done::AlreadyAborted),
        Marked::Aborted => Ok(Done::Aborted),
        Marked::AbortedBeforePrepare => Ok(Done::AbortedBeforePrepare),
        Marked::WasCommitted => Err(violation(branch, "abort of a committed branch")),
    }
}

/// `ROLLBACK PREPARED`; false if there was no such prepared transaction.
async fn rollback_prepared(client: &Client, name: &str) -> Result<bool, tokio_postgres::Error> {
    match client
        .batch_execute(&format!("ROLLBACK PREPARED {}", literal(name)))
        .await
    {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn is_prepared(client: &Client, name: &str) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT 1 FROM pg_prepared_xacts WHERE gid = $1 AND database = current_database()",
            &[&name],
        )
        .await?;
    Ok(row.is_some())
}

impl<H: PgBranch> Participant for PgParticipant<H> {
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

fn service(e: Box<dyn std::error::Error + Send + Sync>) -> Failure {
    match e.downcast::<tokio_postgres::Error>() {
        Ok(db) => Failure::Db(*db),
        Err(other) => Failure::Service(other),
    }
}

/// A call a correct coordinator never makes; refused (409) rather than retried forever.
fn violation(branch: &Branch, what: &str) -> Failure {
    tracing::error!(gid = %branch.gid, branch_id = %branch.branch_id,
        "2pc protocol violation: {what}");
    Failure::Violation(what.into())
}

/// Errors a retry may well not meet again: lock and statement timeouts, serialization
/// failures, deadlocks, a prepared transaction another session is finishing, a server that is
/// restarting or full, a lost connection.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    let Some(code) = e.code() else {
        return e.is_closed();
    };
    [
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::QUERY_CANCELED,
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
    ]
    .contains(code)
}
