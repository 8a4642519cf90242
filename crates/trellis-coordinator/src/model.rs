//! What a transaction is: its branches, their participants and states, and the form in which
//! both are written to the decision log (serde) and shown by the API.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Wall-clock time in milliseconds since the UNIX epoch, passed in by the runtime. Wall time
/// rather than a monotonic clock because records outlive the process.
pub type Millis = u64;

/// Where a branch's participant is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A service name resolved through the registry (a healthy instance, load-balanced), and the
    /// path prefix under which it serves `/prepare`, `/commit` and `/abort`.
    Service { name: String, path: String },
    /// An explicit URL prefix.
    Url(String),
}

/// A phase message to a branch's participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Prepare,
    Commit,
    Abort,
}

impl Phase {
    /// The path segment the participant serves this phase under.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepare => "prepare",
            Self::Commit => "commit",
            Self::Abort => "abort",
        }
    }
}

/// What a participant answered to a phase message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Voted yes (prepare) or done (commit, abort).
    Ok,
    /// Voted no (prepare only): the transaction aborts. In phase 2 it is treated as a failure
    /// to retry, since a participant may not refuse a decision.
    Refused(String),
    /// No answer that counts (unreachable, timed out, 425/503, 5xx): try again later.
    Failed(String),
}

/// A transaction's state. Presumed abort: anything not durably `Committing` ends `Aborted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnState {
    /// Begun; branches may still be added.
    Open,
    /// Commit requested; prepare sent to every branch, votes being collected.
    Preparing,
    /// Decided commit (durably); commit being sent until every branch acknowledges.
    Committing,
    /// Decided abort; abort being sent until every branch acknowledges.
    Aborting,
    Committed,
    Aborted,
}

impl TxnState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Preparing => "preparing",
            Self::Committing => "committing",
            Self::Aborting => "aborting",
            Self::Committed => "committed",
            Self::Aborted => "aborted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Open,
            Self::Preparing,
            Self::Committing,
            Self::Aborting,
            Self::Committed,
            Self::Aborted,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }

    /// The outcome is fixed (commit or abort).
    pub fn is_decided(self) -> bool {
        !matches!(self, Self::Open | Self::Preparing)
    }

    /// Every branch acknowledged phase 2.
    pub fn is_done(self) -> bool {
        matches!(self, Self::Committed | Self::Aborted)
    }
}

/// A branch's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BranchState {
    /// Registered; nothing sent yet.
    Registered,
    Preparing,
    Prepared,
    /// Voted no.
    Refused,
    Committing,
    Committed,
    Aborting,
    Aborted,
}

impl BranchState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Preparing => "preparing",
            Self::Prepared => "prepared",
            Self::Refused => "refused",
            Self::Committing => "committing",
            Self::Committed => "committed",
            Self::Aborting => "aborting",
            Self::Aborted => "aborted",
        }
    }

    /// The phase message this branch is waiting to have answered, if any.
    pub fn pending_phase(self) -> Option<Phase> {
        match self {
            Self::Preparing => Some(Phase::Prepare),
            Self::Committing => Some(Phase::Commit),
            Self::Aborting => Some(Phase::Abort),
            _ => None,
        }
    }
}

/// Why a transaction aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortCause {
    /// The branch that caused it (voted no, or had not voted when the timeout came), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    pub reason: String,
}

/// One participant's part of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    pub id: String,
    pub target: Target,
    /// Opaque JSON text handed to the participant unchanged.
    pub payload: Arc<str>,
    pub state: BranchState,
    /// Messages sent in the current phase (1 is the first try).
    #[serde(default)]
    pub attempts: u32,
    /// The last failure or refusal in the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A transaction: what the decision log holds and the API shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub gid: String,
    pub state: TxnState,
    pub branches: Vec<Branch>,
    /// Time allowed from begin to the decision; after it the transaction aborts.
    pub timeout_ms: u64,
    pub created_at: Millis,
    /// When commit was requested (phase 1 started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_started_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<AbortCause>,
    /// The engine's index when the transaction was begun and last changed (for blocking reads).
    pub create_index: u64,
    pub modify_index: u64,
    /// The W3C trace the transaction was begun in, if its caller was traced: the trace its
    /// branches' phase messages join (32 lowercase hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl Txn {
    /// When an undecided transaction aborts.
    pub fn deadline(&self) -> Millis {
        self.created_at.saturating_add(self.timeout_ms)
    }

    pub fn branch(&self, id: &str) -> Option<&Branch> {
        self.branches.iter().find(|branch| branch.id == id)
    }
}
