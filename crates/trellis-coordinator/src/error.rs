//! Why the engine refused a request.

/// A request the engine refuses; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordinatorError {
    #[error("no transaction {0:?}")]
    UnknownTransaction(String),
    #[error("transaction {gid:?} is {state}: branches can only be added before commit")]
    NotOpen { gid: String, state: &'static str },
    #[error(
        "branch {branch:?} of transaction {gid:?} already exists with another participant or payload"
    )]
    BranchConflict { gid: String, branch: String },
    #[error("transaction {gid:?} already has {max} branches, the most allowed")]
    TooManyBranches { gid: String, max: usize },
    #[error("transaction {0:?} is already committing; it can no longer be aborted")]
    AlreadyCommitted(String),
    #[error("{0} transactions are in flight, the most allowed; retry later")]
    Overloaded(usize),
}
