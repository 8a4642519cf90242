//! The participant protocol: what the coordinator sends ([`Branch`]), what a participant answers
//! ([`Answer`]), how a service author's code refuses ([`BranchError`]), and the [`Participant`]
//! trait the HTTP routes are served from.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Longest `gid` or `branch_id` accepted, in bytes; longer ones are a malformed request (400).
pub const MAX_ID_LEN: usize = 256;

/// One call of the coordinator: the body of `POST <base>/prepare|commit|abort`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Branch {
    /// The global transaction's ID, chosen by the coordinator.
    pub gid: String,
    /// This participant's branch of it; unique within the global transaction.
    pub branch_id: String,
    /// What the branch is about, as the service that started the transaction wrote it; the
    /// coordinator sends the same payload with every phase. `null` when absent.
    #[serde(default)]
    pub payload: serde_json::Value,
}

impl Branch {
    pub fn new(
        gid: impl Into<String>,
        branch_id: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            gid: gid.into(),
            branch_id: branch_id.into(),
            payload,
        }
    }

    /// The payload as the service's own type. A payload that does not fit is a no vote (in
    /// `prepare`): a branch the service cannot understand must not commit.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, BranchError> {
        T::deserialize(&self.payload).map_err(|e| BranchError::No(format!("invalid payload: {e}")))
    }

    /// Why this request is malformed, if it is.
    pub(crate) fn invalid(&self) -> Option<String> {
        for (field, value) in [("gid", &self.gid), ("branch_id", &self.branch_id)] {
            if value.is_empty() {
                return Some(format!("{field} must not be empty"));
            }
            if value.len() > MAX_ID_LEN {
                return Some(format!("{field} is longer than {MAX_ID_LEN} bytes"));
            }
            if value.contains('\0') {
                return Some(format!("{field} must not contain NUL"));
            }
        }
        None
    }
}

/// The three calls of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Prepare,
    Commit,
    Abort,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Commit => "commit",
            Phase::Abort => "abort",
        }
    }
}

/// What a successful call did (all are answered 200); the distinction is for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Done {
    /// The branch's work is done and durable, ready to commit or abort: a yes vote.
    Prepared,
    /// A repeated prepare of a branch that already voted yes.
    AlreadyPrepared,
    Committed,
    /// A repeated commit.
    AlreadyCommitted,
    /// The prepared work was undone (the service's compensation ran, or PostgreSQL rolled the
    /// prepared transaction back).
    Aborted,
    /// A repeated abort.
    AlreadyAborted,
    /// The abort came before (or without) the prepare: nothing to undo, and the barrier now
    /// makes any later prepare of this branch vote no.
    AbortedBeforePrepare,
}

/// A participant's answer to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: yes (prepare) or done (commit, abort).
    Done(Done),
    /// 409 with the reason: a no vote; the transaction aborts. Also the answer to a commit of a
    /// branch that never voted yes, or an abort of a committed one, which a correct coordinator
    /// never sends.
    No(String),
    /// 503 with a short reason: try again later (database busy, lock timeout, any failure
    /// that a retry may cure). The details are logged, never sent.
    Later(String),
}

impl Answer {
    /// The HTTP status this answer is sent with.
    pub fn status(&self) -> u16 {
        match self {
            Answer::Done(_) => 200,
            Answer::No(_) => 409,
            Answer::Later(_) => 503,
        }
    }
}

/// Why a call was not answered yes/done, whatever the database (`E`, its error type).
pub(crate) enum Failure<E> {
    /// The service voted no (or refused a commit/abort, which it must not).
    No(String),
    /// A call a correct coordinator never makes (a commit without a yes vote, say).
    Violation(String),
    Db(E),
    /// No database connection to be had.
    Unavailable(String),
    /// The service's own work failed otherwise (or its task panicked).
    Service(Box<dyn std::error::Error + Send + Sync>),
}

impl<E: std::fmt::Display> Failure<E> {
    /// The answer to the coordinator, with what it should not see logged: a no vote for a
    /// refused prepare and for a violation, 503 for everything a retry may cure.
    /// `transient` says which database errors are only "busy".
    pub(crate) fn answer(
        self,
        phase: Phase,
        (gid, branch_id): (&str, &str),
        transient: impl Fn(&E) -> bool,
    ) -> Answer {
        let phase_name = phase.as_str();
        match self {
            Failure::No(reason) if phase == Phase::Prepare => Answer::No(reason),
            Failure::Violation(reason) => Answer::No(reason),
            Failure::No(reason) => {
                tracing::error!(phase = phase_name, %gid, %branch_id, %reason,
                    "2pc: the service refused a {phase_name}, which it must not do; answering 503");
                Answer::Later(format!("{phase_name} failed"))
            }
            Failure::Db(e) if transient(&e) => {
                tracing::warn!(phase = phase_name, %gid, %branch_id, error = %e,
                    "2pc: database busy");
                Answer::Later("database busy".into())
            }
            Failure::Db(e) => {
                tracing::error!(phase = phase_name, %gid, %branch_id, error = %e,
                    "2pc: database error");
                Answer::Later("database error".into())
            }
            Failure::Unavailable(e) => {
                tracing::warn!(phase = phase_name, %gid, %branch_id, error = %e,
                    "2pc: no database connection");
                Answer::Later("database unavailable".into())
            }
            Failure::Service(e) => {
                tracing::error!(phase = phase_name, %gid, %branch_id, error = %e,
                    "2pc: the service's {phase_name} failed");
                Answer::Later(format!("{phase_name} failed"))
            }
        }
    }
}

/// How a service's prepare (commit, abort) work fails.
#[derive(Debug, thiserror::Error)]
pub enum BranchError {
    /// Vote no, with a reason for the coordinator (insufficient funds, item sold out). Only
    /// meaningful in prepare: from commit or abort it is a bug in the service, logged and
    /// answered 503 so the coordinator keeps retrying.
    #[error("vote no: {0}")]
    No(String),
    /// Anything else: the local transaction is rolled back and the coordinator is told to
    /// try again later (503).
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl BranchError {
    /// A no vote with this reason.
    pub fn no(reason: impl Into<String>) -> Self {
        BranchError::No(reason.into())
    }

    /// A failure that a retry may cure.
    pub fn failed(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        BranchError::Failed(error.into())
    }
}

impl From<rusqlite::Error> for BranchError {
    fn from(e: rusqlite::Error) -> Self {
        BranchError::Failed(Box::new(e))
    }
}

impl From<tokio_postgres::Error> for BranchError {
    fn from(e: tokio_postgres::Error) -> Self {
        BranchError::Failed(Box::new(e))
    }
}

impl From<serde_json::Error> for BranchError {
    fn from(e: serde_json::Error) -> Self {
        BranchError::Failed(Box::new(e))
    }
}

impl From<std::io::Error> for BranchError {
    fn from(e: std::io::Error) -> Self {
        BranchError::Failed(Box::new(e))
    }
}

/// A participant in the protocol: answers the three calls for any branch, idempotently, with
/// the barrier's guarantees (an abort before its prepare makes the prepare vote no; repeated
/// calls change nothing). [`crate::SqliteParticipant`] and [`crate::PgParticipant`] implement
/// it; [`crate::router`] serves one over HTTP.
pub trait Participant: Send + Sync + 'static {
    fn prepare(&self, branch: Branch) -> impl Future<Output = Answer> + Send;
    fn commit(&self, branch: Branch) -> impl Future<Output = Answer> + Send;
    fn abort(&self, branch: Branch) -> impl Future<Output = Answer> + Send;

    /// The call for `phase`.
    fn call(&self, phase: Phase, branch: Branch) -> impl Future<Output = Answer> + Send {
        async move {
            match phase {
                Phase::Prepare => self.prepare(branch).await,
                Phase::Commit => self.commit(branch).await,
                Phase::Abort => self.abort(branch).await,
            }
        }
    }
}
